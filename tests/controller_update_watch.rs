//! `run` is woken by the application list, not by its requeues (issue 10: `run` converges
//! within 1.5x of `apply`): while its updates run, one ListApplications per account and region
//! and `--poll-interval` (or, when fewer calls, one DescribeApplication per update awaited)
//! tells which ended; their resources are reconciled at once, and the resources waiting for a
//! restart slot are woken as slots free up (`run_watch`). On a real kube-apiserver against the
//! embedded emulator.
//!
//! Without the watch, each resource would come back only at its requeue (10 s after an update,
//! later the more wait for a slot): the counter `msf_cmk_update_watch_wakeups_total` would stay
//! at 0 and ListApplications would never be called. The counts are exact where they can be.
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
use support::wait::wait_until_async;

const REGION: &str = "us-east-1";

fn manifest(name: &str, key: &str) -> String {
    format!(
        "apiVersion: msfcmk.dev/v1alpha1\nkind: ApplicationEncryption\nmetadata:\n  name: {name}\nspec:\n  applicationName: {name}\n  region: {REGION}\n  keyType: CustomerManagedKey\n  keyId: {key}\n"
    )
}

fn controller(c: &TestCluster, emu: &EmulatorHandle, ns: &str) -> RunningController {
    start_controller(
        c,
        ControllerOptions {
            identity: "update-watch".into(),
            resync_period: "5m".into(),
            leader_election: false,
            env: vec![],
        }
        .env("MSF_CMK_AWS_ENDPOINT_URL", &emu.endpoint())
        .env("MSF_CMK_NAMESPACES", ns)
        .env("MSF_CMK_POLICY_SETTLE", "0s")
        .env("MSF_CMK_MAX_CONCURRENT_RESTARTS", "4")
        .env("MSF_CMK_POLL_INTERVAL", "200ms")
        .env("MSF_CMK_COALESCE_WINDOW", "3s")
        .env(
            "MSF_CMK_OPERATOR_ROLE_ARN",
            &format!("arn:aws:iam::{}:role/msf-cmk-operator", emu.account_id()),
        ),
    )
}

async fn ready_count(c: &TestCluster, ns: &str) -> usize {
    let api: Api<ApplicationEncryption> = Api::namespaced(c.client().await, ns);
    let Ok(list) = api.list(&ListParams::default()).await else {
        return 0;
    };
    list.items
        .iter()
        .filter(|o| {
            o.status.as_ref().is_some_and(|s| {
                s.conditions
                    .iter()
                    .any(|c| c.type_ == "Ready" && c.status == "True")
            })
        })
        .count()
}

/// Waits (bounded) until all `n` resources of `ns` are Ready; the controller's log on failure.
async fn all_ready(c: &TestCluster, ns: &str, n: usize, ctl: &RunningController) {
    wait_until_async(
        &format!("{n} resources Ready"),
        Duration::from_secs(240),
        Duration::from_millis(300),
        || async {
            match ready_count(c, ns).await {
                r if r == n => Ok(()),
                r => Err(format!("{r}/{n} Ready\n{}", ctl.process.log())),
            }
        },
    )
    .await;
}

/// The controller's counters whose name starts with `prefix`, by their whole series line.
fn series(ctl: &RunningController, prefix: &str) -> BTreeMap<String, f64> {
    let (_, body) = ctl.get("/metrics").unwrap_or_default();
    body.lines()
        .filter(|l| l.starts_with(prefix))
        .filter_map(|l| {
            let (k, v) = l.rsplit_once(' ')?;
            Some((k.to_string(), v.parse().ok()?))
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn run_reconciles_a_resource_when_the_list_shows_its_update_ended_or_a_slot_freed() {
    let c = TestCluster::shared();
    c.install_crds();
    // Long enough that 4 slots are taken and 8 of the 12 resources wait for one.
    let emu = Emulator::start(EmulatorConfig {
        update_delay: Duration::from_millis(600),
        ..EmulatorConfig::default()
    })
    .await
    .expect("emulator");
    let n = 12usize;
    let keys: Vec<String> = (0..2)
        .map(|_| emu.create_key(REGION, None).unwrap())
        .collect();
    let ns = c.create_namespace("update-watch");
    let mut docs = String::new();
    for i in 0..n {
        let name = format!("watched-{i:02}");
        // RUNNING: every update restarts the job and takes a restart slot.
        emu.create_application(REGION, &name, "FLINK-1_20", ApplicationStatus::Running)
            .unwrap();
        let _ = write!(docs, "---\n{}", manifest(&name, &keys[i % 2]));
    }
    c.apply_yaml(&docs, &ns).expect("apply");
    let ctl = controller(c, &emu, &ns);

    all_ready(c, &ns, n, &ctl).await;

    let calls = emu.call_counts();
    // One update per application: waking early never repeats one.
    assert_eq!(
        calls.get("UpdateApplication"),
        Some(&(n as u64)),
        "{calls:?}"
    );
    assert!(
        calls.get("ListApplications").copied().unwrap_or(0) > 0,
        "the watch lists applications while updates run: {calls:?}"
    );
    let wakeups = series(&ctl, "msf_cmk_update_watch_wakeups_total");
    // Every update's end woke its resource exactly once (one waiter per resource).
    assert_eq!(
        wakeups.get(r#"msf_cmk_update_watch_wakeups_total{awaited="update_end"}"#),
        Some(&(n as f64)),
        "{wakeups:?}"
    );
    // With 4 slots for 12 restarts, resources waited for a slot and were woken for it.
    assert!(
        wakeups
            .get(r#"msf_cmk_update_watch_wakeups_total{awaited="restart_slot"}"#)
            .is_some_and(|v| *v > 0.0),
        "{wakeups:?}"
    );
    emu.shutdown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn run_describes_a_few_updates_in_a_large_region_instead_of_listing_it() {
    let c = TestCluster::shared();
    c.install_crds();
    let emu = Emulator::start(EmulatorConfig {
        update_delay: Duration::from_millis(600),
        ..EmulatorConfig::default()
    })
    .await
    .expect("emulator");
    // 120 applications of someone else's: the region's list is 3 pages.
    for i in 0..120 {
        emu.create_application(
            REGION,
            &format!("other-{i:03}"),
            "FLINK-1_20",
            ApplicationStatus::Ready,
        )
        .unwrap();
    }
    let n = 2usize;
    let key = emu.create_key(REGION, None).unwrap();
    let ns = c.create_namespace("update-watch-few");
    let mut docs = String::new();
    for i in 0..n {
        let name = format!("few-{i:02}");
        emu.create_application(REGION, &name, "FLINK-1_20", ApplicationStatus::Running)
            .unwrap();
        let _ = write!(docs, "---\n{}", manifest(&name, &key));
    }
    c.apply_yaml(&docs, &ns).expect("apply");
    let ctl = controller(c, &emu, &ns);

    all_ready(c, &ns, n, &ctl).await;

    let calls = emu.call_counts();
    assert_eq!(
        calls.get("UpdateApplication"),
        Some(&(n as u64)),
        "{calls:?}"
    );
    // The first look lists the region (3 pages) and learns its size; every later poll
    // describes the 2 updates awaited (2 calls, not 3). The updates stay UPDATING for 600 ms
    // and the watch looks every 200 ms: listing every poll, as before, made 3 pages a poll.
    assert_eq!(calls.get("ListApplications"), Some(&3), "{calls:?}");
    let wakeups = series(&ctl, "msf_cmk_update_watch_wakeups_total");
    assert_eq!(
        wakeups.get(r#"msf_cmk_update_watch_wakeups_total{awaited="update_end"}"#),
        Some(&(n as f64)),
        "{wakeups:?}"
    );
    emu.shutdown().await;
}
