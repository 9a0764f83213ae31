//! `msf-cmk-controller run` on a real kube-apiserver (RBAC on, the deploy bundle's
//! ServiceAccount) against the embedded emulator: status and events as the Kubernetes API
//! sees them, the finalizer, leader election with two replicas. Needs
//! `eval "$(tests/e2e/setup.sh)"` first (see docs/e2e.md).

mod support;

use std::time::Duration;

use k8s_openapi::api::events::v1::Event;
use kube::api::{Api, ListParams};
use msf_cmk_controller::api::ApplicationEncryption;
use msf_cmk_controller::domain::{ApplicationStatus, AppliedKeyType};
use msf_cmk_controller::emulator::{Emulator, EmulatorConfig, EmulatorHandle, Fault};
use support::cluster::TestCluster;
use support::controller::{ControllerOptions, RunningController, start_controller};
use support::wait::{wait_until, wait_until_async};

const REGION: &str = "us-east-1";

async fn emulator() -> EmulatorHandle {
    Emulator::start(EmulatorConfig {
        update_delay: Duration::from_millis(100),
        ..EmulatorConfig::default()
    })
    .await
    .expect("emulator")
}

fn controller(
    c: &TestCluster,
    emu: &EmulatorHandle,
    identity: &str,
    namespace: &str,
    leader_election: bool,
) -> RunningController {
    start_controller(
        c,
        ControllerOptions {
            identity: identity.into(),
            resync_period: "5m".into(),
            leader_election,
            env: vec![],
        }
        .env("MSF_CMK_AWS_ENDPOINT_URL", &emu.endpoint())
        .env("MSF_CMK_NAMESPACES", namespace)
        .env("MSF_CMK_LEASE_DURATION", "4s")
        .env(
            "MSF_CMK_OPERATOR_ROLE_ARN",
            // The identity the emulator answers as (sts:GetCallerIdentity): key policies must
            // name the caller, or the resource reports OperatorMismatch.
            &format!("arn:aws:iam::{}:role/msf-cmk-operator", emu.account_id()),
        ),
    )
}

fn manifest(name: &str, key: &str) -> String {
    format!(
        "apiVersion: msfcmk.dev/v1alpha1\nkind: ApplicationEncryption\nmetadata:\n  name: {name}\nspec:\n  applicationName: {name}\n  region: {REGION}\n  keyType: CustomerManagedKey\n  keyId: {key}\n  deletionPolicy: RevertToAwsOwnedKey\n"
    )
}

async fn wait_ready(
    api: &Api<ApplicationEncryption>,
    name: &str,
    log: impl Fn() -> String,
) -> ApplicationEncryption {
    wait_until_async(
        &format!("{name} Ready=True"),
        Duration::from_secs(60),
        Duration::from_millis(300),
        || async {
            let o = api.get(name).await.map_err(|e| e.to_string())?;
            let ready = o
                .status
                .as_ref()
                .and_then(|s| s.conditions.iter().find(|c| c.type_ == "Ready"))
                .map(|c| c.status.clone());
            if ready.as_deref() == Some("True") {
                Ok(o)
            } else {
                Err(format!("status {:?}\nlog:\n{}", o.status, log()))
            }
        },
    )
    .await
}

#[tokio::test(flavor = "multi_thread")]
async fn run_converges_reports_status_and_events_and_reverts_on_delete() {
    let c = TestCluster::shared();
    let emu = emulator().await;
    emu.create_application(REGION, "orders", "FLINK-1_20", ApplicationStatus::Running)
        .unwrap();
    let key = emu.create_key(REGION, None).unwrap();
    let ns = c.create_namespace("ctl-flow");
    let ctl = controller(c, &emu, "flow-0", &ns, false);
    c.apply_yaml(&manifest("orders", &key), &ns).expect("apply");

    let client = c.client().await;
    let api: Api<ApplicationEncryption> = Api::namespaced(client.clone(), &ns);
    let obj = wait_ready(&api, "orders", || ctl.process.log()).await;
    let status = obj.status.clone().unwrap();
    assert_eq!(status.observed_generation, obj.metadata.generation);
    assert_eq!(status.conditions.len(), 6);
    assert!(
        status
            .conditions
            .iter()
            .all(|c| c.observed_generation == obj.metadata.generation)
    );
    assert!(
        obj.metadata
            .finalizers
            .unwrap_or_default()
            .contains(&"msfcmk.dev/cleanup".to_string())
    );
    assert_eq!(
        status.application.unwrap().key_arn.as_deref(),
        Some(key.as_str())
    );
    assert_eq!(
        emu.application(REGION, "orders")
            .unwrap()
            .encryption
            .key_type,
        AppliedKeyType::CustomerManagedKey
    );
    assert_eq!(emu.call_count("UpdateApplication"), 1);

    // Normal events for each change made in AWS, as `kubectl describe` shows them.
    let events: Api<Event> = Api::namespaced(client.clone(), &ns);
    let reasons = wait_until_async(
        "the controller's events",
        Duration::from_secs(20),
        Duration::from_millis(300),
        || async {
            let list = events
                .list(&ListParams::default())
                .await
                .map_err(|e| e.to_string())?;
            let reasons: Vec<String> = list.items.iter().filter_map(|e| e.reason.clone()).collect();
            if reasons.iter().any(|r| r == "EncryptionUpdated") {
                Ok(reasons)
            } else {
                Err(format!("{reasons:?}"))
            }
        },
    )
    .await;
    assert!(
        reasons.iter().any(|r| r == "KeyPolicyUpdated"),
        "{reasons:?}"
    );

    // Metrics and health on the controller's port.
    let (code, body) = ctl.get("/metrics").expect("metrics");
    assert_eq!(code, 200);
    assert!(body.contains("msf_cmk_reconciles_total"), "{body}");
    assert!(
        body.contains(r#"operation="UpdateApplication",outcome="ok",account="123456789012"} 1"#),
        "{body}"
    );
    assert_eq!(ctl.get("/livez").map(|r| r.0), Some(200));
    assert_eq!(ctl.get("/readyz").map(|r| r.0), Some(200));

    // Delete with RevertToAwsOwnedKey: the application is switched back, then the finalizer
    // goes (retried while the application is still UPDATING from the first switch).
    c.kubectl(&["delete", "appenc", "orders", "-n", &ns, "--wait=false"])
        .ok();
    wait_until_async(
        "the resource to be gone",
        Duration::from_secs(60),
        Duration::from_millis(300),
        || async {
            match api.get_opt("orders").await {
                Ok(None) => Ok(()),
                other => Err(format!("{other:?}\n{}", ctl.process.log())),
            }
        },
    )
    .await;
    assert_eq!(
        emu.application(REGION, "orders")
            .unwrap()
            .encryption
            .key_type,
        AppliedKeyType::AwsOwnedKey
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn with_two_replicas_one_acts_and_the_other_takes_over() {
    let c = TestCluster::shared();
    let emu = emulator().await;
    for name in ["first", "second"] {
        emu.create_application(REGION, name, "FLINK-1_20", ApplicationStatus::Ready)
            .unwrap();
    }
    let key = emu.create_key(REGION, None).unwrap();
    let ns = c.create_namespace("ctl-ha");
    let mut a = controller(c, &emu, "replica-a", &ns, true);
    let mut b = controller(c, &emu, "replica-b", &ns, true);

    let role = |r: &RunningController| r.get("/readyz").map(|(_, body)| body).unwrap_or_default();
    let leader_is_a = wait_until(
        "one leader",
        Duration::from_secs(40),
        Duration::from_millis(200),
        || match (role(&a).contains("leader"), role(&b).contains("leader")) {
            (true, false) => Ok(true),
            (false, true) => Ok(false),
            other => Err(format!("{other:?}")),
        },
    );
    let standby = if leader_is_a { &b } else { &a };
    wait_until(
        "the other replica to stand by",
        Duration::from_secs(20),
        Duration::from_millis(200),
        || {
            let r = role(standby);
            if r.contains("standby") {
                Ok(())
            } else {
                Err(format!("{r:?}\n{}", standby.process.log()))
            }
        },
    );
    assert_eq!(standby.get("/livez").map(|r| r.0), Some(200));

    let client = c.client().await;
    let api: Api<ApplicationEncryption> = Api::namespaced(client, &ns);
    c.apply_yaml(&manifest("first", &key), &ns).expect("apply");
    wait_ready(&api, "first", || {
        format!("{}\n{}", a.process.log(), b.process.log())
    })
    .await;

    // The leader dies without releasing the lease; the standby takes over after it expires.
    let (dead, survivor) = if leader_is_a {
        (&mut a, &mut b)
    } else {
        (&mut b, &mut a)
    };
    dead.process.kill();
    wait_until(
        "the standby to take over",
        Duration::from_secs(40),
        Duration::from_millis(300),
        || {
            let r = survivor.get("/readyz").map(|(_, b)| b).unwrap_or_default();
            if r.contains("leader") { Ok(()) } else { Err(r) }
        },
    );
    c.apply_yaml(&manifest("second", &key), &ns).expect("apply");
    wait_ready(&api, "second", || survivor.process.log()).await;
    // Two applications, one switch each: nobody acted twice.
    assert_eq!(emu.call_count("UpdateApplication"), 2);
}

#[tokio::test(flavor = "multi_thread")]
async fn tenancy_and_conflicts_across_watched_namespaces() {
    let c = TestCluster::shared();
    let emu = emulator().await;
    for name in ["orders", "payments"] {
        emu.create_application(REGION, name, "FLINK-1_20", ApplicationStatus::Running)
            .unwrap();
    }
    let key = emu.create_key(REGION, None).unwrap();
    let team = c.create_namespace("ctl-team");
    let other = c.create_namespace("ctl-other");
    let tenancy = c.dir().join(format!("tenancy-{team}.yaml"));
    std::fs::write(
        &tenancy,
        format!("namespaces:\n  {team}:\n    applications: [\"orders\"]\n    keys: [\"arn:aws:kms:*\"]\n  {other}:\n    applications: [\"*\"]\n    keys: [\"*\"]\n"),
    )
    .unwrap();
    let ctl = start_controller(
        c,
        ControllerOptions {
            identity: "tenancy-0".into(),
            resync_period: "5m".into(),
            leader_election: false,
            env: vec![],
        }
        .env("MSF_CMK_AWS_ENDPOINT_URL", &emu.endpoint())
        .env("MSF_CMK_NAMESPACES", &format!("{team},{other}"))
        .env("MSF_CMK_TENANCY_CONFIG", tenancy.to_str().unwrap())
        .env(
            "MSF_CMK_OPERATOR_ROLE_ARN",
            // The identity the emulator answers as (sts:GetCallerIdentity): key policies must
            // name the caller, or the resource reports OperatorMismatch.
            &format!("arn:aws:iam::{}:role/msf-cmk-operator", emu.account_id()),
        ),
    );
    let client = c.client().await;
    let team_api: Api<ApplicationEncryption> = Api::namespaced(client.clone(), &team);
    let other_api: Api<ApplicationEncryption> = Api::namespaced(client.clone(), &other);

    // Outside the namespace's allowance: NotPermitted, nothing touched in AWS.
    c.apply_yaml(&manifest("payments", &key), &team)
        .expect("apply");
    let reason = |api: Api<ApplicationEncryption>, name: &'static str, want: &'static str| async move {
        wait_until_async(
            &format!("{name}: Ready reason {want}"),
            Duration::from_secs(60),
            Duration::from_millis(300),
            || async {
                let o = api.get(name).await.map_err(|e| e.to_string())?;
                let r = o
                    .status
                    .as_ref()
                    .and_then(|s| s.conditions.iter().find(|c| c.type_ == "Ready"))
                    .map(|c| c.reason.clone());
                if r.as_deref() == Some(want) {
                    Ok(())
                } else {
                    Err(format!("{r:?}"))
                }
            },
        )
        .await
    };
    reason(team_api.clone(), "payments", "NotPermitted").await;
    assert_eq!(
        emu.call_count("DescribeApplication"),
        0,
        "{}",
        ctl.process.log()
    );

    // Allowed: converges. A newer claim on the same application from another namespace: Conflict.
    c.apply_yaml(&manifest("orders", &key), &team)
        .expect("apply");
    wait_ready(&team_api, "orders", || ctl.process.log()).await;
    c.apply_yaml(&manifest("orders", &key), &other)
        .expect("apply");
    reason(other_api.clone(), "orders", "Conflict").await;
    assert_eq!(emu.call_count("UpdateApplication"), 1);
    // Deleting the loser touches nothing (its RevertToAwsOwnedKey is not honoured).
    c.kubectl(&[
        "delete",
        "appenc",
        "orders",
        "-n",
        &other,
        "--wait=true",
        "--timeout=30s",
    ])
    .ok();
    assert_eq!(
        emu.application(REGION, "orders")
            .unwrap()
            .encryption
            .key_type,
        AppliedKeyType::CustomerManagedKey
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn drift_made_in_aws_is_corrected_at_the_next_resync() {
    let c = TestCluster::shared();
    let emu = emulator().await;
    emu.create_application(REGION, "drifty", "FLINK-1_20", ApplicationStatus::Running)
        .unwrap();
    let key = emu.create_key(REGION, None).unwrap();
    let ns = c.create_namespace("ctl-drift");
    let ctl = start_controller(
        c,
        ControllerOptions {
            identity: "drift-0".into(),
            resync_period: "2s".into(),
            leader_election: false,
            env: vec![],
        }
        .env("MSF_CMK_AWS_ENDPOINT_URL", &emu.endpoint())
        .env("MSF_CMK_NAMESPACES", &ns)
        .env(
            "MSF_CMK_OPERATOR_ROLE_ARN",
            // The identity the emulator answers as (sts:GetCallerIdentity): key policies must
            // name the caller, or the resource reports OperatorMismatch.
            &format!("arn:aws:iam::{}:role/msf-cmk-operator", emu.account_id()),
        ),
    );
    let client = c.client().await;
    let api: Api<ApplicationEncryption> = Api::namespaced(client, &ns);
    c.apply_yaml(&manifest("drifty", &key), &ns).expect("apply");
    wait_ready(&api, "drifty", || ctl.process.log()).await;

    // Behind the controller's back: the key policy reset to KMS's default (no watch event).
    let before = emu.call_count("PutKeyPolicy");
    let default_policy = format!(
        r#"{{"Version":"2012-10-17","Statement":[{{"Sid":"Enable IAM User Permissions","Effect":"Allow","Principal":{{"AWS":"arn:aws:iam::{}:root"}},"Action":"kms:*","Resource":"*"}}]}}"#,
        emu.account_id()
    );
    emu.put_key_policy_direct(&key, &default_policy).unwrap();
    wait_until(
        "the policy to be repaired by a resync",
        Duration::from_secs(30),
        Duration::from_millis(200),
        || {
            let p = emu.key_policy(&key).unwrap_or_default();
            if p.contains("kinesisanalytics.amazonaws.com") {
                Ok(())
            } else {
                Err(ctl.process.log())
            }
        },
    );
    // The reconcile that wrote counts the correction when it ends (after the verifying re-read).
    wait_until(
        "the correction to be counted",
        Duration::from_secs(30),
        Duration::from_millis(200),
        || {
            let (_, metrics) = ctl.get("/metrics").unwrap_or_default();
            if metrics.contains(r#"msf_cmk_drift_corrections_total{kind="key_policy"} 1"#) {
                Ok(())
            } else {
                Err(metrics)
            }
        },
    );
    assert_eq!(emu.call_count("PutKeyPolicy"), before + 1);
}

/// `run`'s cache keeps no observations (`status.application`, `status.keyPolicy`): when a read
/// fails, the status written still carries the last ones, read back from the stored status,
/// rather than dropping them (a server-side apply without a field removes it).
#[tokio::test(flavor = "multi_thread")]
async fn a_failed_read_keeps_the_last_observations() {
    let c = TestCluster::shared();
    let emu = emulator().await;
    emu.create_application(REGION, "blind", "FLINK-1_20", ApplicationStatus::Ready)
        .unwrap();
    let key = emu.create_key(REGION, None).unwrap();
    let ns = c.create_namespace("ctl-blind");
    let ctl = start_controller(
        c,
        ControllerOptions {
            identity: "blind-0".into(),
            resync_period: "2s".into(),
            leader_election: false,
            env: vec![],
        }
        .env("MSF_CMK_AWS_ENDPOINT_URL", &emu.endpoint())
        .env("MSF_CMK_NAMESPACES", &ns)
        .env(
            "MSF_CMK_OPERATOR_ROLE_ARN",
            &format!("arn:aws:iam::{}:role/msf-cmk-operator", emu.account_id()),
        ),
    );
    let client = c.client().await;
    let api: Api<ApplicationEncryption> = Api::namespaced(client, &ns);
    c.apply_yaml(&manifest("blind", &key), &ns).expect("apply");
    let converged = wait_ready(&api, "blind", || ctl.process.log()).await;
    let before = converged.status.unwrap();
    assert!(before.application.is_some() && before.key_policy.is_some());

    // Every read of the application and of the key policy now fails (an IAM change, say).
    let reads = |op| emu.call_count(op);
    let (describes, gets) = (reads("DescribeApplication"), reads("GetKeyPolicy"));
    for op in ["DescribeApplication", "GetKeyPolicy"] {
        emu.set_fault(
            op,
            Fault {
                deny: true,
                ..Fault::default()
            },
        );
    }
    let failed = wait_until_async(
        "a resync to report the failed reads",
        Duration::from_secs(30),
        Duration::from_millis(200),
        || async {
            let o = api.get("blind").await.map_err(|e| e.to_string())?;
            let status = o.status.clone().unwrap_or_default();
            match status.conditions.iter().find(|c| c.type_ == "Ready") {
                Some(r) if r.status == "False" => Ok(status),
                other => Err(format!("{other:?}\n{}", ctl.process.log())),
            }
        },
    )
    .await;
    assert!(
        reads("DescribeApplication") > describes && reads("GetKeyPolicy") > gets,
        "both reads were made and failed"
    );
    assert_eq!(failed.application, before.application, "{failed:#?}");
    assert_eq!(failed.key_policy, before.key_policy, "{failed:#?}");
}
