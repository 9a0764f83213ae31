//! `msf-cmk-controller run` starting on resources that already exist, on a real kube-apiserver
//! against the embedded emulator (issue 10, items 3 and 4; issue 13, conflicts across
//! namespaces). Call counts are exact, by operation:
//! - a cold start writes each key's policy once, whatever the number of its resources, because
//!   no reconcile starts before every watched namespace's cache is synced;
//! - a restart on the converged state (a resync of everything) reads each application once and
//!   each key twice (DescribeKey, GetKeyPolicy), and writes nothing;
//! - resources applied together later cost one more write per key they touch;
//! - two resources claiming one application from two namespaces: the rule picks the winner
//!   with both claims in view, however the caches fill.
//!
//! Needs `eval "$(tests/e2e/setup.sh)"` first (see docs/e2e.md).

mod support;

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::time::Duration;

use kube::api::{Api, ListParams};
use msf_cmk_controller::api::ApplicationEncryption;
use msf_cmk_controller::domain::ApplicationStatus;
use msf_cmk_controller::emulator::{Emulator, EmulatorConfig, EmulatorHandle};
use support::cluster::TestCluster;
use support::controller::{ControllerOptions, RunningController, start_controller};
use support::wait::{wait_until, wait_until_async};

const REGION: &str = "us-east-1";

async fn emulator() -> EmulatorHandle {
    Emulator::start(EmulatorConfig {
        update_delay: Duration::from_millis(50),
        ..EmulatorConfig::default()
    })
    .await
    .expect("emulator")
}

fn controller(
    c: &TestCluster,
    emu: &EmulatorHandle,
    identity: &str,
    namespaces: &[&str],
) -> RunningController {
    start_controller(
        c,
        ControllerOptions {
            identity: identity.into(),
            resync_period: "5m".into(),
            leader_election: false,
            env: vec![],
        }
        .env("MSF_CMK_AWS_ENDPOINT_URL", &emu.endpoint())
        .env("MSF_CMK_NAMESPACES", &namespaces.join(","))
        .env("MSF_CMK_POLICY_SETTLE", "0s")
        // Pacing is not what these tests count: start MSF's lanes high.
        .env("MSF_CMK_AWS_RATE_START", "msf=500")
        // Generous, so that a loaded machine never splits one `kubectl apply` into two bursts.
        .env("MSF_CMK_COALESCE_WINDOW", "3s")
        .env(
            "MSF_CMK_OPERATOR_ROLE_ARN",
            &format!("arn:aws:iam::{}:role/msf-cmk-operator", emu.account_id()),
        ),
    )
}

fn manifest(name: &str, app: &str, key: &str, with_finalizer: bool) -> String {
    let finalizers = if with_finalizer {
        "  finalizers: [msfcmk.dev/cleanup]\n"
    } else {
        ""
    };
    format!(
        "apiVersion: msfcmk.dev/v1alpha1\nkind: ApplicationEncryption\nmetadata:\n  name: {name}\n{finalizers}spec:\n  applicationName: {app}\n  region: {REGION}\n  keyType: CustomerManagedKey\n  keyId: {key}\n"
    )
}

fn aws_owned(name: &str) -> String {
    format!(
        "apiVersion: msfcmk.dev/v1alpha1\nkind: ApplicationEncryption\nmetadata:\n  name: {name}\nspec:\n  applicationName: {name}\n  region: {REGION}\n  keyType: AwsOwnedKey\n"
    )
}

/// MSF and KMS calls by operation (not the test's set-up calls, not STS).
fn calls(emu: &EmulatorHandle) -> BTreeMap<String, u64> {
    emu.call_counts()
        .into_iter()
        .filter(|(op, n)| *n > 0 && !op.starts_with("Create") && op != "GetCallerIdentity")
        .collect()
}

fn expect(pairs: &[(&str, u64)]) -> BTreeMap<String, u64> {
    pairs.iter().map(|(op, n)| (op.to_string(), *n)).collect()
}

/// The Ready reason of every resource in `namespaces`, by `namespace/name`.
async fn ready_reasons(c: &TestCluster, namespaces: &[&str]) -> BTreeMap<String, String> {
    let client = c.client().await;
    let mut out = BTreeMap::new();
    for ns in namespaces {
        let api: Api<ApplicationEncryption> = Api::namespaced(client.clone(), ns);
        let Ok(list) = api.list(&ListParams::default()).await else {
            continue;
        };
        for o in list.items {
            let reason = o
                .status
                .as_ref()
                .and_then(|s| s.conditions.iter().find(|c| c.type_ == "Ready"))
                .map(|c| format!("{}/{}", c.status, c.reason))
                .unwrap_or_default();
            out.insert(
                format!("{ns}/{}", o.metadata.name.unwrap_or_default()),
                reason,
            );
        }
    }
    out
}

async fn wait_all_ready(c: &TestCluster, namespaces: &[&str], n: usize, ctl: &RunningController) {
    wait_until_async(
        &format!("{n} resources Ready=True"),
        Duration::from_secs(240),
        Duration::from_millis(500),
        || async {
            let r = ready_reasons(c, namespaces).await;
            let ready = r.values().filter(|v| v.starts_with("True/")).count();
            if ready == n {
                Ok(())
            } else {
                let not: Vec<_> = r
                    .iter()
                    .filter(|(_, v)| !v.starts_with("True/"))
                    .take(5)
                    .collect();
                Err(format!(
                    "{ready}/{n} Ready; e.g. {not:?}\n{}",
                    tail(&ctl.process.log(), 30)
                ))
            }
        },
    )
    .await;
}

/// The last lines of a controller log that say more than "reconciled".
fn tail(log: &str, lines: usize) -> String {
    let all: Vec<&str> = log
        .lines()
        .filter(|l| !l.contains("reconciled") && !l.contains("waited for a burst"))
        .collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

/// Waits until the controller has finished `n` reconciles that ended converged.
fn wait_converged_reconciles(ctl: &RunningController, n: usize) {
    let want = format!(r#"msf_cmk_reconciles_total{{result="converged"}} {n}"#);
    wait_until(
        &format!("{n} converged reconciles"),
        Duration::from_secs(120),
        Duration::from_millis(300),
        || {
            let (_, body) = ctl.get("/metrics").unwrap_or_default();
            if body.lines().any(|l| l == want) {
                Ok(())
            } else {
                let seen: Vec<&str> = body
                    .lines()
                    .filter(|l| l.starts_with("msf_cmk_reconciles_total"))
                    .collect();
                Err(format!("{seen:?}"))
            }
        },
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_cold_start_writes_each_key_once_a_restart_only_reads_and_a_later_burst_writes_once_more()
{
    let c = TestCluster::shared();
    c.install_crds();
    let emu = emulator().await;
    let (n, keys) = (200usize, 5usize);
    let key_arns: Vec<String> = (0..keys)
        .map(|_| emu.create_key(REGION, None).unwrap())
        .collect();
    // Two watched namespaces sharing the keys: a key's first write must see both.
    let namespaces = [c.create_namespace("cold-a"), c.create_namespace("cold-b")];
    let ns: Vec<&str> = namespaces.iter().map(String::as_str).collect();
    let mut docs: [String; 2] = Default::default();
    for i in 0..n {
        let name = format!("cold-{i:03}");
        emu.create_application(REGION, &name, "FLINK-1_20", ApplicationStatus::Ready)
            .unwrap();
        let _ = write!(
            docs[i % 2],
            "---\n{}",
            manifest(&name, &name, &key_arns[i % keys], false)
        );
    }
    for (doc, ns) in docs.iter().zip(&ns) {
        c.apply_yaml(doc, ns).expect("apply");
    }

    // Cold start: every resource was there before the controller.
    let mut ctl = controller(c, &emu, "cold-0", &ns);
    wait_all_ready(c, &ns, n, &ctl).await;
    let counts = calls(&emu);
    assert_eq!(
        counts.get("PutKeyPolicy"),
        Some(&(keys as u64)),
        "{counts:?}"
    );
    assert_eq!(
        counts.get("UpdateApplication"),
        Some(&(n as u64)),
        "{counts:?}"
    );
    let log = ctl.process.log();
    assert!(log.contains("caches synced"), "{}", tail(&log, 40));
    assert!(
        log.contains("first_reconcile_after_sync_ms"),
        "{}",
        tail(&log, 40)
    );

    // A restart on the converged state: a resync of everything.
    ctl.process.stop(Duration::from_secs(5));
    emu.reset_counts();
    let ctl = controller(c, &emu, "cold-1", &ns);
    wait_converged_reconciles(&ctl, n);
    assert_eq!(
        calls(&emu),
        expect(&[
            ("DescribeApplication", n as u64),
            ("DescribeKey", keys as u64),
            ("GetKeyPolicy", keys as u64),
        ]),
        "{}",
        tail(&ctl.process.log(), 40)
    );

    // Twenty more in one `kubectl apply`, on two of the keys: one write per key.
    emu.reset_counts();
    let mut burst = String::new();
    for i in 0..20 {
        let name = format!("late-{i:03}");
        emu.create_application(REGION, &name, "FLINK-1_20", ApplicationStatus::Ready)
            .unwrap();
        let _ = write!(
            burst,
            "---\n{}",
            manifest(&name, &name, &key_arns[i % 2], false)
        );
    }
    c.apply_yaml(&burst, ns[0]).expect("apply");
    wait_all_ready(c, &ns, n + 20, &ctl).await;
    let counts = calls(&emu);
    assert_eq!(counts.get("PutKeyPolicy"), Some(&2), "{counts:?}");
    assert_eq!(counts.get("UpdateApplication"), Some(&20), "{counts:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_conflict_across_namespaces_is_decided_with_every_namespace_in_view() {
    let c = TestCluster::shared();
    c.install_crds();
    let emu = emulator().await;
    let key_a = emu.create_key(REGION, None).unwrap();
    let key_b = emu.create_key(REGION, None).unwrap();
    emu.create_application(REGION, "contested", "FLINK-1_20", ApplicationStatus::Ready)
        .unwrap();
    // The rule: neither claim acts yet, so the first by namespace/name keeps the application.
    let first = c.create_namespace("claim-a");
    let second = c.create_namespace("claim-b");
    // The winner's namespace holds many resources (its initial list is the slower one); the
    // loser's claim already carries the finalizer, so its first reconcile would go straight to
    // AWS if it did not wait for every cache.
    let mut docs = format!("---\n{}", manifest("a-claim", "contested", &key_a, false));
    for i in 0..150 {
        let name = format!("filler-{i:03}");
        emu.create_application(REGION, &name, "FLINK-1_20", ApplicationStatus::Ready)
            .unwrap();
        let _ = write!(docs, "---\n{}", aws_owned(&name));
    }
    c.apply_yaml(&docs, &first).expect("apply");
    c.apply_yaml(&manifest("b-claim", "contested", &key_b, true), &second)
        .expect("apply");

    let ns = [first.as_str(), second.as_str()];
    let ctl = controller(c, &emu, "claims-0", &ns);
    let want_loser = format!("{second}/b-claim");
    let want_winner = format!("{first}/a-claim");
    wait_until_async(
        "the winner Ready and the loser Conflict",
        Duration::from_secs(120),
        Duration::from_millis(300),
        || async {
            let r = ready_reasons(c, &ns).await;
            let (w, l) = (r.get(&want_winner), r.get(&want_loser));
            if w.is_some_and(|w| w.starts_with("True/")) && l.is_some_and(|l| l == "False/Conflict")
            {
                Ok(())
            } else {
                Err(format!("{w:?} {l:?}\n{}", tail(&ctl.process.log(), 30)))
            }
        },
    )
    .await;
    assert_eq!(emu.call_count("UpdateApplication"), 1);
    assert_eq!(
        emu.application(REGION, "contested")
            .unwrap()
            .encryption
            .key_id
            .as_deref(),
        Some(key_a.as_str())
    );
}
