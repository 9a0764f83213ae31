//! Reconcile flows against the embedded emulator, through the same `reconcile` core that `run`
//! and `apply` use (no Kubernetes API server needed). API-call budgets are asserted from the
//! emulator's own call counts.

use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use msf_cmk_controller::api::{
    ApplicationEncryptionSpec, ApplicationEncryptionStatus, DeletionPolicy, KeyPolicyMode,
    KeyPolicySpec, KeyType,
};
use msf_cmk_controller::aws::{ConnectOptions, connect};
use msf_cmk_controller::controller::batch::{self, ApplyOptions};
use msf_cmk_controller::controller::context::{Core, Settings};
use msf_cmk_controller::controller::finalizer;
use msf_cmk_controller::controller::manifests::Manifest;
use msf_cmk_controller::controller::metrics::Metrics;
use msf_cmk_controller::controller::reconcile::{self, Mode, Next, Outcome, Peer, Subject};
use msf_cmk_controller::controller::status;
use msf_cmk_controller::controller::tenancy::{Tenancy, TenancyConfig};
use msf_cmk_controller::domain::{ApplicationStatus, AppliedEncryption, AppliedKeyType};
use msf_cmk_controller::emulator::{Emulator, EmulatorConfig, EmulatorHandle, Fault, KeyOptions};
use msf_cmk_controller::planner::Defaults;

const REGION: &str = "us-east-1";

struct Env {
    emu: EmulatorHandle,
    core: Core,
}

async fn env_with(tenancy: Tenancy) -> Env {
    let emu = Emulator::start(EmulatorConfig {
        update_delay: Duration::from_millis(40),
        ..EmulatorConfig::default()
    })
    .await
    .unwrap();
    let mut opts = ConnectOptions::local(emu.endpoint());
    opts.max_attempts = 1;
    let aws = connect(&opts).await.unwrap();
    let core = Core::new(
        aws.msf,
        aws.kms,
        Defaults {
            region: REGION.into(),
            operator_role_arn: Some(format!("arn:aws:iam::{}:role/operator", emu.account_id())),
        },
        tenancy,
        Settings {
            // Every reconcile reads the policy itself unless a test says otherwise: a resync
            // in these tests stands for one a resync period later.
            policy_share_window: Duration::ZERO,
            // These flows switch in the pass that writes the policy; the settle time and the
            // update lifecycle have their own tests (controller_lifecycle.rs).
            policy_settle: Duration::ZERO,
            ..Settings::default()
        },
        Arc::new(Metrics::new()),
    );
    Env { emu, core }
}

async fn env() -> Env {
    env_with(Tenancy(None)).await
}

fn cmk(app: &str, key: &str) -> ApplicationEncryptionSpec {
    ApplicationEncryptionSpec {
        application_name: app.into(),
        region: Some(REGION.into()),
        key_type: KeyType::CustomerManagedKey,
        key_id: Some(key.into()),
        key_policy: KeyPolicySpec::default(),
        deletion_policy: DeletionPolicy::Retain,
        suspend: false,
        allow_stateless_restart: false,
    }
}

fn aok(app: &str) -> ApplicationEncryptionSpec {
    ApplicationEncryptionSpec {
        key_type: KeyType::AwsOwnedKey,
        key_id: None,
        ..cmk(app, "x")
    }
}

impl Env {
    fn app(&self, name: &str, status: ApplicationStatus) {
        self.emu
            .create_application(REGION, name, "FLINK-1_20", status)
            .unwrap();
    }

    async fn once(
        &self,
        name: &str,
        spec: &ApplicationEncryptionSpec,
        previous: Option<&ApplicationEncryptionStatus>,
        peers: &[Peer],
    ) -> Outcome {
        let subject = Subject {
            namespace: "ns",
            name,
            spec,
            generation: Some(1),
            previous,
            conflict: None,
            retry_update: None,
        };
        reconcile::reconcile(&self.core, &subject, peers, Mode::Execute, Utc::now()).await
    }

    /// Reconciles until the resource is no longer waiting (as the requeue would).
    async fn converge(&self, name: &str, spec: &ApplicationEncryptionSpec) -> Outcome {
        let mut previous: Option<ApplicationEncryptionStatus> = None;
        for _ in 0..100 {
            let o = self.once(name, spec, previous.as_ref(), &[]).await;
            match o.next {
                Next::Waiting(_) | Next::Failed(_) => {
                    previous = Some(o.status.clone());
                    tokio::time::sleep(Duration::from_millis(30)).await;
                }
                _ => return o,
            }
        }
        panic!("{name} did not converge");
    }

    /// Waits until MSF would accept an update again (READY or RUNNING).
    async fn settle(&self, name: &str) {
        for _ in 0..200 {
            if self
                .emu
                .application(REGION, name)
                .is_some_and(|a| a.status.is_updatable())
            {
                return;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        panic!("{name} stayed in a transient status");
    }

    fn count(&self, op: &str) -> u64 {
        self.emu.call_count(op)
    }

    fn writes(&self) -> u64 {
        self.count("PutKeyPolicy") + self.count("UpdateApplication")
    }

    fn encryption(&self, app: &str) -> AppliedEncryption {
        self.emu.application(REGION, app).unwrap().encryption
    }
}

fn subject(spec: &ApplicationEncryptionSpec) -> Subject<'_> {
    Subject {
        namespace: "ns",
        name: "orders",
        spec,
        generation: Some(2),
        previous: None,
        conflict: None,
        retry_update: None,
    }
}

fn ready(o: &Outcome) -> (String, String) {
    let c = status::ready(&o.status).expect("a Ready condition");
    (c.status.to_string(), c.reason.to_string())
}

fn condition<'a>(o: &'a Outcome, t: &str) -> &'a msf_cmk_controller::api::Condition {
    o.status.conditions.iter().find(|c| c.type_ == t).unwrap()
}

#[tokio::test]
async fn aws_owned_to_customer_managed_then_resync_reads_only() {
    let e = env().await;
    e.app("orders", ApplicationStatus::Running);
    let key = e.emu.create_key(REGION, None).unwrap();
    let spec = cmk("orders", &key);

    let o = e.converge("orders", &spec).await;
    assert_eq!(o.next, Next::Converged, "{:#?}", o.status);
    assert_eq!(ready(&o).0, "True");
    assert_eq!(
        e.encryption("orders").key_type,
        AppliedKeyType::CustomerManagedKey
    );
    assert_eq!(e.encryption("orders").key_id.as_deref(), Some(key.as_str()));
    assert_eq!(e.count("PutKeyPolicy"), 1);
    assert_eq!(
        e.count("UpdateApplication"),
        1,
        "a switch costs exactly one update"
    );
    let kp = o.status.key_policy.as_ref().unwrap();
    assert!(kp.compliant && kp.missing_accesses.is_empty());
    assert!(!kp.owned_sids.is_empty());
    let app = o.status.application.as_ref().unwrap();
    assert_eq!(app.key_arn.as_deref(), Some(key.as_str()));
    assert_eq!(app.key_type, Some(KeyType::CustomerManagedKey));

    // A resync of a converged resource: reads only, no write, same transition times.
    e.emu.reset_counts();
    let again = e.once("orders", &spec, Some(&o.status), &[]).await;
    assert_eq!(again.next, Next::Converged);
    assert_eq!(e.writes(), 0);
    assert_eq!(e.count("DescribeApplication"), 1);
    assert_eq!(
        e.count("DescribeKey"),
        1,
        "the key in use is the desired key: described once"
    );
    assert_eq!(e.count("GetKeyPolicy"), 1);
    assert_eq!(
        status::ready(&again.status).unwrap().last_transition_time,
        status::ready(&o.status).unwrap().last_transition_time
    );
    assert!(again.events.is_empty());
}

#[tokio::test]
async fn first_switch_emits_normal_events_for_each_change() {
    let e = env().await;
    e.app("orders", ApplicationStatus::Ready);
    let key = e.emu.create_key(REGION, None).unwrap();
    let o = e.once("orders", &cmk("orders", &key), None, &[]).await;
    let reasons: Vec<_> = o
        .events
        .iter()
        .map(|n| (n.warning, n.reason.as_str()))
        .collect();
    assert_eq!(
        reasons,
        [(false, "KeyPolicyUpdated"), (false, "EncryptionUpdated")]
    );
    assert_eq!(o.key_policy_writes, 1);
    assert_eq!(o.application_updates, 1);
}

#[tokio::test]
async fn customer_managed_back_to_aws_owned_keeps_the_statements() {
    let e = env().await;
    e.app("orders", ApplicationStatus::Running);
    let key = e.emu.create_key(REGION, None).unwrap();
    e.converge("orders", &cmk("orders", &key)).await;
    let policy_before = e.emu.key_policy(&key).unwrap();
    e.emu.reset_counts();

    let o = e.converge("orders", &aok("orders")).await;
    assert_eq!(ready(&o).0, "True", "{:#?}", o.status);
    assert_eq!(e.encryption("orders").key_type, AppliedKeyType::AwsOwnedKey);
    assert_eq!(e.count("UpdateApplication"), 1);
    assert_eq!(e.count("PutKeyPolicy"), 0);
    assert_eq!(
        e.emu.key_policy(&key).unwrap(),
        policy_before,
        "snapshots still need the key"
    );
}

#[tokio::test]
async fn customer_managed_to_another_customer_managed_key() {
    let e = env().await;
    e.app("orders", ApplicationStatus::Running);
    let k1 = e.emu.create_key(REGION, None).unwrap();
    let k2 = e.emu.create_key(REGION, None).unwrap();
    e.converge("orders", &cmk("orders", &k1)).await;
    e.emu.reset_counts();
    let o = e.converge("orders", &cmk("orders", &k2)).await;
    assert_eq!(ready(&o).0, "True", "{:#?}", o.status);
    assert_eq!(e.encryption("orders").key_id.as_deref(), Some(k2.as_str()));
    assert_eq!(e.count("UpdateApplication"), 1);
    assert_eq!(
        e.count("PutKeyPolicy"),
        1,
        "only the new key's policy is written"
    );
}

#[tokio::test]
async fn alias_resolves_to_the_key_arn() {
    let e = env().await;
    e.app("orders", ApplicationStatus::Ready);
    let key = e.emu.create_key(REGION, None).unwrap();
    e.emu.create_alias(REGION, "alias/orders", &key).unwrap();
    let o = e.converge("orders", &cmk("orders", "alias/orders")).await;
    assert_eq!(ready(&o).0, "True", "{:#?}", o.status);
    assert_eq!(e.encryption("orders").key_id.as_deref(), Some(key.as_str()));
    assert_eq!(o.desired_key_arn.as_deref(), Some(key.as_str()));
}

#[tokio::test]
async fn applications_sharing_a_key_share_one_policy_write() {
    let e = env().await;
    let key = e.emu.create_key(REGION, None).unwrap();
    let n = 12;
    let manifests: Vec<Manifest> = (0..n)
        .map(|i| {
            let name = format!("app-{i:02}");
            let status = if i % 2 == 0 {
                ApplicationStatus::Running
            } else {
                ApplicationStatus::Ready
            };
            e.app(&name, status);
            Manifest {
                namespace: "ns".into(),
                name: name.clone(),
                spec: cmk(&name, &key),
                source: "test".into(),
                retry_update: None,
            }
        })
        .collect();
    let opts = ApplyOptions {
        concurrency: 4,
        timeout: Duration::from_secs(30),
        poll: Duration::from_millis(30),
    };
    let done = batch::apply_all(&e.core, &manifests, opts, |_| {}).await;
    for d in &done {
        assert_eq!(d.outcome.ready(), "True", "{:#?}", d.outcome.status);
    }
    assert_eq!(e.count("UpdateApplication"), n);
    assert!(
        e.count("PutKeyPolicy") <= 2,
        "{n} applications cost {} PutKeyPolicy",
        e.count("PutKeyPolicy")
    );
}

#[tokio::test]
async fn disabled_key_blocks_without_writes() {
    let e = env().await;
    e.app("orders", ApplicationStatus::Running);
    let key = e.emu.create_key(REGION, None).unwrap();
    e.emu.disable_key(&key).unwrap();
    let o = e.once("orders", &cmk("orders", &key), None, &[]).await;
    assert_eq!(o.next, Next::Blocked);
    assert_eq!(ready(&o).0, "False");
    assert_eq!(condition(&o, "KeyUsable").reason, "KeyDisabled");
    assert_eq!(e.writes(), 0);
    assert!(
        o.events.iter().any(|n| n.warning),
        "a Warning event for the failure"
    );
}

#[tokio::test]
async fn key_in_another_region_blocks() {
    let e = env().await;
    e.app("orders", ApplicationStatus::Running);
    let key = e.emu.create_key_with(KeyOptions::new("eu-west-1")).unwrap();
    let o = e.once("orders", &cmk("orders", &key), None, &[]).await;
    assert_eq!(o.next, Next::Blocked, "{:#?}", o.status);
    assert_eq!(condition(&o, "KeyUsable").reason, "KeyInWrongRegion");
    assert_eq!(e.writes(), 0);
}

#[tokio::test]
async fn application_not_found_blocks() {
    let e = env().await;
    let key = e.emu.create_key(REGION, None).unwrap();
    let o = e.once("ghost", &cmk("ghost", &key), None, &[]).await;
    assert_eq!(o.next, Next::Blocked);
    assert_eq!(ready(&o), ("False".into(), "ApplicationNotFound".into()));
    assert!(o.status.application.is_none());
    assert_eq!(e.writes(), 0);
}

#[tokio::test]
async fn updating_application_waits_then_switches() {
    let e = env().await;
    e.app("orders", ApplicationStatus::Updating);
    let key = e.emu.create_key(REGION, None).unwrap();
    let spec = cmk("orders", &key);
    let o = e.once("orders", &spec, None, &[]).await;
    assert!(
        matches!(o.next, Next::Waiting(d) if d <= Duration::from_secs(30)),
        "{:?}",
        o.next
    );
    assert_eq!(ready(&o).1, "WaitingForApplicationStatus");
    assert_eq!(e.count("UpdateApplication"), 0);
    e.emu
        .set_application_status(REGION, "orders", ApplicationStatus::Running)
        .unwrap();
    let o = e.converge("orders", &spec).await;
    assert_eq!(ready(&o).0, "True");
    assert_eq!(e.count("UpdateApplication"), 1);
}

#[tokio::test]
async fn suspend_observes_and_changes_nothing() {
    let e = env().await;
    e.app("orders", ApplicationStatus::Running);
    let key = e.emu.create_key(REGION, None).unwrap();
    let mut spec = cmk("orders", &key);
    spec.suspend = true;
    let o = e.once("orders", &spec, None, &[]).await;
    assert_eq!(e.writes(), 0);
    assert_eq!(ready(&o).0, "False", "{:#?}", o.status);
    assert!(
        o.status.application.is_some(),
        "still observed and reported"
    );
}

#[tokio::test]
async fn audit_mode_reports_and_switches_once_the_admin_adds_the_statements() {
    let e = env().await;
    e.app("orders", ApplicationStatus::Running);
    let key = e.emu.create_key(REGION, None).unwrap();
    let mut spec = cmk("orders", &key);
    spec.key_policy.mode = KeyPolicyMode::Audit;
    let o = e.once("orders", &spec, None, &[]).await;
    assert_eq!(o.next, Next::Blocked);
    assert_eq!(e.writes(), 0);
    let kp = o.status.key_policy.as_ref().unwrap();
    assert!(!kp.compliant && !kp.missing_accesses.is_empty());
    assert_eq!(condition(&o, "KeyPolicyCompliant").status, "False");

    // The key administrator adds the statements (here: what Enforce would have written).
    let enforce = cmk("orders", &key);
    let subject = Subject {
        namespace: "ns",
        name: "orders",
        spec: &enforce,
        generation: Some(1),
        previous: None,
        conflict: None,
        retry_update: None,
    };
    let planned = reconcile::reconcile(&e.core, &subject, &[], Mode::DryRun, Utc::now()).await;
    let policy = planned
        .first_plan
        .unwrap()
        .steps
        .iter()
        .find_map(|s| match s {
            msf_cmk_controller::planner::Step::PutKeyPolicy { policy, .. } => Some(policy.clone()),
            _ => None,
        })
        .unwrap();
    e.emu.put_key_policy_direct(&key, &policy).unwrap();
    e.emu.reset_counts();
    let o = e.converge("orders", &spec).await;
    assert_eq!(ready(&o).0, "True", "{:#?}", o.status);
    assert_eq!(e.count("PutKeyPolicy"), 0, "Audit never writes the policy");
    assert_eq!(e.count("UpdateApplication"), 1);
}

#[tokio::test]
async fn tenancy_violation_touches_nothing_in_aws() {
    let cfg = TenancyConfig::parse(
        "namespaces:\n  ns:\n    applications: ['team-a-*']\n    keys: ['arn:aws:kms:us-east-1:123456789012:key/*']\n",
    )
    .unwrap();
    let e = env_with(Tenancy(Some(cfg))).await;
    e.app("payments", ApplicationStatus::Running);
    e.app("team-a-orders", ApplicationStatus::Running);
    let key = e.emu.create_key(REGION, None).unwrap();
    let other = e
        .emu
        .create_key_with(KeyOptions {
            account: Some("999999999999".into()),
            ..KeyOptions::new(REGION)
        })
        .unwrap();
    e.emu.reset_counts();

    let o = e.once("payments", &cmk("payments", &key), None, &[]).await;
    assert_eq!(o.next, Next::Refused);
    assert_eq!(ready(&o), ("False".into(), "NotPermitted".into()));
    let o = e
        .once("team-a-orders", &cmk("team-a-orders", &other), None, &[])
        .await;
    assert_eq!(ready(&o), ("False".into(), "NotPermitted".into()));
    assert!(
        e.emu.call_counts().values().all(|n| *n == 0),
        "{:?}",
        e.emu.call_counts()
    );

    // Inside the allowance it converges.
    let o = e
        .converge("team-a-orders", &cmk("team-a-orders", &key))
        .await;
    assert_eq!(ready(&o).0, "True", "{:#?}", o.status);
}

#[tokio::test]
async fn the_newer_claim_on_an_application_is_a_conflict() {
    let e = env().await;
    e.app("orders", ApplicationStatus::Running);
    let key = e.emu.create_key(REGION, None).unwrap();
    let manifests = vec![
        Manifest {
            namespace: "a".into(),
            name: "orders".into(),
            spec: cmk("orders", &key),
            source: "t".into(),
            retry_update: None,
        },
        Manifest {
            namespace: "b".into(),
            name: "orders".into(),
            spec: aok("orders"),
            source: "t".into(),
            retry_update: None,
        },
    ];
    let opts = ApplyOptions {
        concurrency: 2,
        timeout: Duration::from_secs(30),
        poll: Duration::from_millis(30),
    };
    let done = batch::apply_all(&e.core, &manifests, opts, |_| {}).await;
    assert_eq!(done[0].outcome.ready(), "True");
    assert_eq!(ready(&done[1].outcome), ("False".into(), "Conflict".into()));
    assert_eq!(e.count("UpdateApplication"), 1);
    assert_eq!(
        e.encryption("orders").key_type,
        AppliedKeyType::CustomerManagedKey
    );
}

#[tokio::test]
async fn drift_is_corrected_and_a_humans_statement_survives() {
    let e = env().await;
    e.app("orders", ApplicationStatus::Running);
    let key = e.emu.create_key(REGION, None).unwrap();
    let spec = cmk("orders", &key);
    let converged = e.converge("orders", &spec).await;
    e.settle("orders").await;

    // A human replaces the policy: the controller's statements deleted, one of theirs added.
    let human = serde_json::json!({
        "Version": "2012-10-17",
        "Statement": [
            {"Sid": "Enable IAM User Permissions", "Effect": "Allow",
             "Principal": {"AWS": "arn:aws:iam::123456789012:root"}, "Action": "kms:*", "Resource": "*"},
            {"Sid": "AuditorsDescribe", "Effect": "Allow",
             "Principal": {"AWS": "arn:aws:iam::123456789012:role/auditor"},
             "Action": "kms:DescribeKey", "Resource": "*"}
        ]
    })
    .to_string();
    e.emu.put_key_policy_direct(&key, &human).unwrap();
    // And someone switched the application back in the console.
    e.emu
        .set_application_encryption(REGION, "orders", AppliedEncryption::default())
        .unwrap();
    e.emu.reset_counts();

    // The next resync (the previous status said Ready for this generation).
    let o = e.once("orders", &spec, Some(&converged.status), &[]).await;
    assert_eq!(o.key_policy_writes, 1);
    assert_eq!(o.application_updates, 1);
    let text = e.core.metrics.encode();
    assert!(
        text.contains(r#"msf_cmk_drift_corrections_total{kind="key_policy"} 1"#),
        "{text}"
    );
    assert!(
        text.contains(r#"msf_cmk_drift_corrections_total{kind="encryption"} 1"#),
        "{text}"
    );
    let o = e.converge("orders", &spec).await;
    assert_eq!(ready(&o).0, "True", "{:#?}", o.status);
    assert_eq!(e.count("PutKeyPolicy"), 1);
    assert_eq!(e.count("UpdateApplication"), 1);
    let policy = e.emu.key_policy(&key).unwrap();
    assert!(
        policy.contains("AuditorsDescribe"),
        "the human's statement is kept: {policy}"
    );
    assert!(o.status.key_policy.as_ref().unwrap().compliant);
    assert!(e.core.metrics.encode().contains("msf_cmk_aws_calls_total"));
}

#[tokio::test]
async fn a_crash_between_the_policy_write_and_the_update_resumes_without_a_second_write() {
    let e = env().await;
    e.app("orders", ApplicationStatus::Running);
    let key = e.emu.create_key(REGION, None).unwrap();
    let spec = cmk("orders", &key);
    // The update never lands (as if the process died right after PutKeyPolicy).
    e.emu
        .set_fault("UpdateApplication", Fault::server_error(1.0));
    let o = e.once("orders", &spec, None, &[]).await;
    assert_eq!(e.count("PutKeyPolicy"), 1);
    assert!(matches!(o.next, Next::Failed(_)), "{:?}", o.next);
    assert_eq!(ready(&o), ("False".into(), "EncryptionUpdateFailed".into()));
    assert_eq!(e.encryption("orders").key_type, AppliedKeyType::AwsOwnedKey);

    e.emu.clear_faults();
    let o = e.converge("orders", &spec).await;
    assert_eq!(ready(&o).0, "True", "{:#?}", o.status);
    assert_eq!(e.count("PutKeyPolicy"), 1, "no second PutKeyPolicy");
    assert_eq!(
        e.encryption("orders").key_type,
        AppliedKeyType::CustomerManagedKey
    );
}

#[tokio::test]
async fn throttling_is_transient_and_backs_off() {
    let e = env().await;
    e.app("orders", ApplicationStatus::Running);
    let key = e.emu.create_key(REGION, None).unwrap();
    let first = e.once("orders", &aok("orders"), None, &[]).await;
    assert!(first.status.application.is_some());
    e.emu.set_fault("DescribeApplication", Fault::throttle(1.0));
    let o = e
        .once("orders", &cmk("orders", &key), Some(&first.status), &[])
        .await;
    assert_eq!(
        o.status.application, first.status.application,
        "a failed read keeps the last observation"
    );
    assert_eq!(
        o.next,
        Next::Failed(msf_cmk_controller::domain::ErrorCategory::Transient)
    );
    assert_eq!(e.writes(), 0);
    let d1 = msf_cmk_controller::controller::kube_loop::requeue_after(&e.core, "ns/orders", o.next);
    let d2 = msf_cmk_controller::controller::kube_loop::requeue_after(&e.core, "ns/orders", o.next);
    assert!(d2 > d1 / 2 && d2 >= Duration::from_secs(5), "{d1:?} {d2:?}");
    let conv = msf_cmk_controller::controller::kube_loop::requeue_after(
        &e.core,
        "ns/orders",
        Next::Converged,
    );
    assert_eq!(conv, Duration::from_secs(300));
}

#[tokio::test]
async fn cleanup_reverts_and_is_idempotent() {
    let e = env().await;
    e.app("orders", ApplicationStatus::Running);
    let key = e.emu.create_key(REGION, None).unwrap();
    let mut spec = cmk("orders", &key);
    e.converge("orders", &spec).await;
    // MSF takes no update while the switch's UPDATING lasts.
    e.settle("orders").await;

    // Retain: nothing in AWS.
    e.emu.reset_counts();
    finalizer::cleanup(&e.core, &subject(&spec)).await.unwrap();
    assert_eq!(e.writes(), 0);

    // Revert, keeping the statements; the application restarts into UPDATING.
    spec.deletion_policy = DeletionPolicy::RevertToAwsOwnedKey;
    let policy_before = e.emu.key_policy(&key).unwrap();
    let notes = finalizer::cleanup(&e.core, &subject(&spec)).await.unwrap();
    assert_eq!(notes.len(), 1);
    assert_eq!(e.encryption("orders").key_type, AppliedKeyType::AwsOwnedKey);
    assert_eq!(e.emu.key_policy(&key).unwrap(), policy_before);
    e.settle("orders").await;
    // Again: already reverted, nothing to do.
    finalizer::cleanup(&e.core, &subject(&spec)).await.unwrap();
    assert_eq!(e.count("UpdateApplication"), 1);

    // Statement removal on request.
    spec.key_policy.remove_statements_on_delete = true;
    finalizer::cleanup(&e.core, &subject(&spec)).await.unwrap();
    let after = e.emu.key_policy(&key).unwrap();
    assert!(!after.contains("application/orders"), "{after}");
    assert_eq!(e.count("PutKeyPolicy"), 1);
    finalizer::cleanup(&e.core, &subject(&spec)).await.unwrap();
    assert_eq!(e.count("PutKeyPolicy"), 1, "idempotent");

    // The application is gone: done.
    assert!(e.emu.delete_application(REGION, "orders"));
    finalizer::cleanup(&e.core, &subject(&spec)).await.unwrap();
}

#[tokio::test]
async fn a_full_key_takes_what_fits_in_few_writes_and_reports_the_rest() {
    let e = env().await;
    let key = e.emu.create_key(REGION, None).unwrap();
    let n = 70;
    let manifests: Vec<Manifest> = (0..n)
        .map(|i| {
            let name = format!("streaming-application-{i:03}");
            e.app(&name, ApplicationStatus::Ready);
            Manifest {
                namespace: "ns".into(),
                name: name.clone(),
                spec: cmk(&name, &key),
                source: "test".into(),
                retry_update: None,
            }
        })
        .collect();
    let opts = ApplyOptions {
        concurrency: 8,
        timeout: Duration::from_secs(30),
        poll: Duration::from_millis(30),
    };
    let done = batch::apply_all(&e.core, &manifests, opts, |_| {}).await;
    let converged = done.iter().filter(|d| d.outcome.ready() == "True").count();
    let too_large = done
        .iter()
        .filter(|d| condition(&d.outcome, "KeyPolicyCompliant").reason == "KeyPolicyTooLarge")
        .count();
    assert_eq!(
        converged + too_large,
        n,
        "every resource either fits or says why"
    );
    assert!(
        converged >= 30 && too_large > 0,
        "{converged} converged, {too_large} too large"
    );
    assert!(
        e.count("PutKeyPolicy") <= 3,
        "{} writes",
        e.count("PutKeyPolicy")
    );
    assert!(e.emu.key_policy(&key).unwrap().len() <= 32_768);
    eprintln!(
        "capacity: {converged} applications on one key, {} PutKeyPolicy",
        e.count("PutKeyPolicy")
    );
}

#[tokio::test]
async fn kstatus_conditions_say_in_flight_converged_or_stalled() {
    let e = env().await;
    e.app("orders", ApplicationStatus::Updating);
    let key = e.emu.create_key(REGION, None).unwrap();
    let spec = cmk("orders", &key);
    let kstatus = |o: &Outcome| {
        let (r, s) = (condition(o, "Reconciling"), condition(o, "Stalled"));
        assert_eq!(r.reason, ready(o).1, "kstatus pair carries Ready's reason");
        assert_eq!(s.reason, ready(o).1);
        (r.status.clone(), s.status.clone())
    };

    // Waiting for MSF: in flight.
    let o = e.once("orders", &spec, None, &[]).await;
    assert_eq!(
        kstatus(&o),
        ("True".into(), "False".into()),
        "{:#?}",
        o.status
    );

    // Converged: neither.
    e.emu
        .set_application_status(REGION, "orders", ApplicationStatus::Running)
        .unwrap();
    let o = e.converge("orders", &spec).await;
    assert_eq!(o.next, Next::Converged);
    assert_eq!(kstatus(&o), ("False".into(), "False".into()));
    assert_eq!(condition(&o, "Reconciling").observed_generation, Some(1));

    // Blocked on a disabled key: stalled until a person acts.
    e.emu.disable_key(&key).unwrap();
    let o = e.once("orders", &spec, Some(&o.status), &[]).await;
    assert_eq!(o.next, Next::Blocked, "{:#?}", o.status);
    assert_eq!(kstatus(&o), ("False".into(), "True".into()));
    assert_eq!(
        condition(&o, "Stalled").message,
        condition(&o, "Ready").message
    );
}
