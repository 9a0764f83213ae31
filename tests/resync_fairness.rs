//! `run` converges every resource when resyncing all of them every `--resync-period` would ask
//! for more reconciles than `--concurrency` can serve (issue 10: at 10,000 resources and the
//! default 5-minute resync, 2,703 were never reconciled in 30 minutes). kube-runtime starts the
//! requests that are due in hash order, not in due order, so without `controller::resync` the
//! same few converged resources are resynced again and again and the rest wait forever.
//!
//! Here: 60 resources, 2 reconciles at once, a 1 s resync, and 250 ms of latency on every AWS
//! call, so that a reconcile takes at least 250 ms: resyncs would ask for 60 reconciles per
//! second where at most 8 can be served. With the fix, resyncs keep to half the capacity (the
//! period stretches to at least 60 x 0.25 / (0.5 x 2) = 15 s) and every resource becomes
//! Ready. Then a restart finds the 60 converged (all due for a resync at once) and 10 new
//! ones: resyncs may hold only one of the two slots, the others are deferred to their turn, and
//! both the new resources and every deferred resync get done. On a real kube-apiserver against
//! the embedded emulator.
//!
//! Needs `eval "$(tests/e2e/setup.sh)"` first (see docs/e2e.md).

mod support;

use std::fmt::Write as _;
use std::time::Duration;

use kube::api::{Api, ListParams};
use msf_cmk_controller::api::ApplicationEncryption;
use msf_cmk_controller::domain::ApplicationStatus;
use msf_cmk_controller::emulator::{Emulator, EmulatorConfig, EmulatorHandle, Fault};
use support::cluster::TestCluster;
use support::controller::{ControllerOptions, RunningController, start_controller};
use support::wait::wait_until_async;

const REGION: &str = "us-east-1";
const RESOURCES: usize = 60;
/// Resources created while the controller is down, found beside the converged ones.
const LATE: usize = 10;
const CONCURRENCY: u16 = 2;
const LATENCY: Duration = Duration::from_millis(250);
const RESYNC: &str = "1s";

fn manifest(name: &str) -> String {
    format!(
        "apiVersion: msfcmk.dev/v1alpha1\nkind: ApplicationEncryption\nmetadata:\n  name: {name}\nspec:\n  applicationName: {name}\n  region: {REGION}\n  keyType: AwsOwnedKey\n"
    )
}

/// Creates `count` applications on the AWS owned key and applies their resources in one
/// `kubectl apply`, named `{prefix}-NN`.
fn create(c: &TestCluster, emu: &EmulatorHandle, ns: &str, prefix: &str, count: usize) {
    let mut docs = String::new();
    for i in 0..count {
        let name = format!("{prefix}-{i:02}");
        // Already on the AWS owned key: each reconcile only reads.
        emu.create_application(REGION, &name, "FLINK-1_20", ApplicationStatus::Ready)
            .expect("application");
        let _ = write!(docs, "---\n{}", manifest(&name));
    }
    c.apply_yaml(&docs, ns).expect("apply");
}

fn controller(
    c: &TestCluster,
    emu: &EmulatorHandle,
    ns: &str,
    identity: &str,
) -> RunningController {
    start_controller(
        c,
        ControllerOptions {
            identity: identity.into(),
            resync_period: RESYNC.into(),
            leader_election: false,
            env: vec![],
        }
        .env("MSF_CMK_AWS_ENDPOINT_URL", &emu.endpoint())
        .env("MSF_CMK_NAMESPACES", ns)
        .env("MSF_CMK_CONCURRENCY", &CONCURRENCY.to_string())
        .env("MSF_CMK_COALESCE_WINDOW", "0s")
        .env("MSF_CMK_POLICY_SETTLE", "0s")
        .env(
            "MSF_CMK_OPERATOR_ROLE_ARN",
            &format!("arn:aws:iam::{}:role/msf-cmk-operator", emu.account_id()),
        ),
    )
}

/// What is not done yet: the resources whose Ready condition is not True, and those named
/// `{prefix}-*` not reconciled since `since` (an RFC 3339 time in whole seconds, as
/// `lastSyncTime`); `expected`: how many resources there are.
async fn not_done(
    c: &TestCluster,
    ns: &str,
    expected: usize,
    since: Option<(&str, &str)>,
) -> Vec<String> {
    let api: Api<ApplicationEncryption> = Api::namespaced(c.client().await, ns);
    let Ok(list) = api.list(&ListParams::default()).await else {
        return vec!["(the list failed)".into()];
    };
    let mut missing = Vec::new();
    for o in &list.items {
        let name = o.metadata.name.clone().unwrap_or_default();
        let status = o.status.as_ref();
        let ready = status.is_some_and(|s| {
            s.conditions
                .iter()
                .any(|c| c.type_ == "Ready" && c.status == "True")
        });
        if !ready {
            missing.push(format!("{name} not Ready"));
        }
        if let Some((prefix, since)) = since
            && name.starts_with(prefix)
        {
            let synced = status.and_then(|s| s.last_sync_time.as_deref());
            if synced.is_none_or(|t| t < since) {
                missing.push(format!("{name} synced {synced:?}"));
            }
        }
    }
    if list.items.len() < expected {
        missing.push(format!("({} of {expected} listed)", list.items.len()));
    }
    missing
}

/// A gauge or counter of the controller's `/metrics`, by its whole series name.
fn metric(ctl: &RunningController, series: &str) -> Option<f64> {
    let (_, body) = ctl.get("/metrics")?;
    body.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
}

fn tail(text: &str, lines: usize) -> String {
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

#[tokio::test(flavor = "multi_thread")]
async fn every_resource_is_reconciled_when_resyncs_would_ask_for_more_than_the_capacity() {
    let c = TestCluster::shared();
    c.install_crds();
    let emu = Emulator::start(EmulatorConfig::default())
        .await
        .expect("emulator");
    // Every AWS call (MSF, KMS, STS) answers after LATENCY: a reconcile holds its slot at least
    // that long.
    emu.set_fault("*", Fault::latency(LATENCY));
    let ns = c.create_namespace("resync-fair");
    create(c, &emu, &ns, "fair", RESOURCES);
    let mut ctl = controller(c, &emu, &ns, "resync-fairness");

    // With the fix this takes about 60 x (2 x 250 ms) / 2 slots, 15 s; without it most
    // resources are never reconciled, however long one waits.
    wait_until_async(
        &format!("all {RESOURCES} resources Ready"),
        Duration::from_secs(60),
        Duration::from_millis(500),
        || async {
            match not_done(c, &ns, RESOURCES, None).await {
                missing if missing.is_empty() => Ok(()),
                missing => Err(format!(
                    "{} left: {missing:?}\n{}",
                    missing.len(),
                    tail(&ctl.process.log(), 40)
                )),
            }
        },
    )
    .await;

    // Every reconcile took at least LATENCY, so the period the controller chose is at least
    // RESOURCES x LATENCY / (0.5 x CONCURRENCY), far above the 1 s asked for.
    let floor = RESOURCES as f64 * LATENCY.as_secs_f64() / (0.5 * f64::from(CONCURRENCY));
    let period = metric(&ctl, "msf_cmk_resync_period_seconds");
    assert!(
        period.is_some_and(|p| p >= floor),
        "msf_cmk_resync_period_seconds = {period:?}, expected at least {floor} s"
    );
    // Each application was read at least once (its first reconcile) and nothing was written.
    let calls = emu.call_counts();
    assert!(
        calls.get("DescribeApplication").copied().unwrap_or(0) >= RESOURCES as u64,
        "{calls:?}"
    );
    assert_eq!(calls.get("UpdateApplication"), None, "{calls:?}");
    let log = ctl.process.log();
    assert!(!log.contains("panicked at"), "{}", tail(&log, 60));

    // A restart that finds the 60 converged, all due for a resync, and LATE new ones.
    ctl.process.stop(Duration::from_secs(5));
    create(c, &emu, &ns, "late", LATE);
    // Past the second of the old process's last status write: a lastSyncTime from this second
    // on was written by the new process.
    tokio::time::sleep(Duration::from_millis(1_100)).await;
    let restart = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    let ctl = controller(c, &emu, &ns, "resync-fairness-restarted");
    let all = RESOURCES + LATE;
    wait_until_async(
        &format!("all {all} Ready and every converged one resynced since {restart}"),
        Duration::from_secs(60),
        Duration::from_millis(500),
        || async {
            match not_done(c, &ns, all, Some(("fair-", &restart))).await {
                missing if missing.is_empty() => Ok(()),
                missing => Err(format!(
                    "{} left: {missing:?}\n{}",
                    missing.len(),
                    tail(&ctl.process.log(), 40)
                )),
            }
        },
    )
    .await;
    // Two slots, 60 resyncs due at once: one resync at a time ran, the rest were deferred.
    let log = ctl.process.log();
    assert!(log.contains("resync deferred"), "{}", tail(&log, 60));
    assert!(!log.contains("panicked at"), "{}", tail(&log, 60));
    assert_eq!(emu.call_count("UpdateApplication"), 0);
    emu.shutdown().await;
}
