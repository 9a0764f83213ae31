//! `apply`'s wait for MSF (`controller::update_watch`), on the embedded emulator: the updates
//! are waited for with ListApplications, a resource waiting for a restart slot is woken when
//! one frees, and without the ListApplications permission every resource still converges,
//! describing its application by itself. Counts are the emulator's; nothing is timed.

use std::time::Duration;

use msf_cmk_controller::api::{ApplicationEncryptionSpec, DeletionPolicy, KeyPolicySpec, KeyType};
use msf_cmk_controller::aws::{ConnectOptions, connect};
use msf_cmk_controller::cli::plan_cmd::batch_core;
use msf_cmk_controller::controller::batch::{self, ApplyOptions, Done};
use msf_cmk_controller::controller::context::Core;
use msf_cmk_controller::controller::manifests::Manifest;
use msf_cmk_controller::controller::tenancy::Tenancy;
use msf_cmk_controller::domain::{ApplicationStatus, AppliedEncryption};
use msf_cmk_controller::emulator::{Emulator, EmulatorConfig, EmulatorHandle, Fault};
use msf_cmk_controller::planner::Defaults;

const REGION: &str = "us-east-1";

async fn emulator() -> EmulatorHandle {
    Emulator::start(EmulatorConfig {
        update_delay: Duration::from_millis(100),
        ..EmulatorConfig::default()
    })
    .await
    .unwrap()
}

async fn core(emu: &EmulatorHandle, max_concurrent_restarts: u32) -> Core {
    core_settling(emu, max_concurrent_restarts, Duration::ZERO).await
}

async fn core_settling(
    emu: &EmulatorHandle,
    max_concurrent_restarts: u32,
    settle: Duration,
) -> Core {
    let mut opts = ConnectOptions::local(emu.endpoint());
    opts.max_attempts = 1;
    let aws = connect(&opts).await.unwrap();
    let mut core = batch_core(
        aws.msf,
        aws.kms,
        Defaults {
            region: REGION.into(),
            operator_role_arn: Some(format!(
                "arn:aws:iam::{}:role/msf-cmk-operator",
                emu.account_id()
            )),
        },
        Tenancy(None),
        settle,
    );
    core.set_max_concurrent_restarts(max_concurrent_restarts);
    core
}

/// `n` RUNNING applications on one new key.
fn fleet(emu: &EmulatorHandle, n: usize) -> Vec<Manifest> {
    let key = emu.create_key(REGION, None).unwrap();
    (0..n)
        .map(|i| {
            let name = format!("watched-{i:02}");
            emu.create_application(REGION, &name, "FLINK-1_20", ApplicationStatus::Running)
                .unwrap();
            Manifest {
                namespace: "ns".into(),
                name: name.clone(),
                spec: ApplicationEncryptionSpec {
                    application_name: name,
                    region: Some(REGION.into()),
                    key_type: KeyType::CustomerManagedKey,
                    key_id: Some(key.clone()),
                    key_policy: KeyPolicySpec::default(),
                    deletion_policy: DeletionPolicy::Retain,
                    suspend: false,
                    allow_stateless_restart: false,
                },
                source: "test".into(),
                retry_update: None,
            }
        })
        .collect()
}

fn opts() -> ApplyOptions {
    ApplyOptions {
        concurrency: 4,
        timeout: Duration::from_secs(60),
        poll: Duration::from_millis(20),
    }
}

fn assert_converged(done: &[Done]) {
    for d in done {
        assert_eq!(d.outcome.ready(), "True", "{:#?}", d.outcome.status);
    }
}

#[tokio::test]
async fn resources_waiting_for_a_restart_slot_are_woken_as_slots_free() {
    let emu = emulator().await;
    let n = 8;
    let manifests = fleet(&emu, n);
    emu.reset_counts();
    let done = batch::apply_all(&core(&emu, 2).await, &manifests, opts(), |_| {}).await;
    assert_converged(&done);
    assert_eq!(emu.call_count("UpdateApplication"), n as u64, "one each");
    assert!(emu.call_count("ListApplications") >= 1);
    for d in &done {
        let app = &manifests[d.index].spec.application_name;
        assert!(
            emu.application(REGION, app).unwrap().status.is_updatable(),
            "{app}: apply returned before MSF finished"
        );
    }
}

#[tokio::test]
async fn without_list_applications_each_resource_describes_its_application() {
    let emu = emulator().await;
    let n = 6;
    let manifests = fleet(&emu, n);
    emu.set_fault("ListApplications", Fault::deny());
    emu.reset_counts();
    let done = batch::apply_all(&core(&emu, 0).await, &manifests, opts(), |_| {}).await;
    assert_converged(&done);
    assert_eq!(emu.call_count("UpdateApplication"), n as u64);
    // Refused once, then never asked again in this run.
    assert_eq!(emu.call_count("ListApplications"), 1);
    // Each application described before its update and at least once after it.
    assert!(emu.call_count("DescribeApplication") >= 2 * n as u64);
}

#[tokio::test]
async fn without_list_applications_the_watch_describes_and_still_wakes_slot_waiters() {
    let emu = emulator().await;
    let n = 6;
    let manifests = fleet(&emu, n);
    emu.set_fault("ListApplications", Fault::deny());
    emu.reset_counts();
    // 2 restart slots for 6 restarts: 4 resources wait for one, the last two for 2 rounds of
    // 100 ms updates at least.
    let done = batch::apply_all(&core(&emu, 2).await, &manifests, opts(), |_| {}).await;
    assert_converged(&done);
    assert_eq!(emu.call_count("UpdateApplication"), n as u64, "one each");
    assert_eq!(emu.call_count("ListApplications"), 1, "refused once");
    // The watch describes the updates awaited at each poll instead of listing, so a slot
    // waiter is woken as a slot frees, not left to look by itself every 20 ms poll (a pass
    // each: about 10 passes for a waiter of 2 rounds). A resource's passes: found the budget
    // full, updated, woken once by the refused list (it describes itself), converged on the
    // watch's description; one more if it found the budget full again.
    let passes: Vec<u32> = done.iter().map(|d| d.passes).collect();
    println!("passes per resource: {passes:?}");
    assert!(passes.iter().all(|p| *p <= 5), "{passes:?}");
}

#[tokio::test]
async fn the_settle_time_is_waited_out_on_the_description_already_made() {
    let emu = emulator().await;
    let n = 8;
    let manifests = fleet(&emu, n);
    emu.reset_counts();
    let core = core_settling(&emu, 0, Duration::from_millis(300)).await;
    let done = batch::apply_all(&core, &manifests, opts(), |_| {}).await;
    assert_converged(&done);
    // Describe, write the key, wait for the settle time, update (on the same description),
    // wait for MSF (the list), converged (on the update's answer): one description each.
    assert_eq!(emu.call_count("DescribeApplication"), n as u64);
    assert_eq!(emu.call_count("UpdateApplication"), n as u64);
    assert_eq!(emu.call_count("PutKeyPolicy"), 1);
}

#[tokio::test]
async fn an_application_changed_during_the_settle_time_is_described_again() {
    let emu = emulator().await;
    let manifests = fleet(&emu, 1);
    let app = manifests[0].spec.application_name.clone();
    emu.reset_counts();
    let core = core_settling(&emu, 0, Duration::from_secs(1)).await;
    let apply = batch::apply_all(&core, &manifests, opts(), |_| {});
    let console = async {
        // Once the policy is written, the settle time runs: a change in the console now
        // makes a new version (and conditional token).
        for _ in 0..500 {
            if emu.call_count("PutKeyPolicy") == 1 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        emu.set_application_encryption(REGION, &app, AppliedEncryption::default())
            .unwrap();
    };
    let (done, ()) = tokio::join!(apply, console);
    assert_converged(&done);
    // The update made on the description from before the change is refused by MSF (its
    // token is stale); the next pass describes the application again and updates it.
    let updates = emu.outcome_counts().remove("UpdateApplication").unwrap();
    assert_eq!(
        updates.into_iter().collect::<Vec<_>>(),
        vec![
            ("ConcurrentModificationException".to_string(), 1),
            ("ok".to_string(), 1)
        ]
    );
    assert_eq!(emu.call_count("DescribeApplication"), 2);
}

#[tokio::test]
async fn an_application_changed_while_waiting_for_a_restart_slot_is_described_again() {
    let emu = emulator().await;
    // Long updates: the one restart slot stays taken while the others wait for it.
    emu.set_update_delay(Duration::from_millis(400));
    let n = 3;
    let manifests = fleet(&emu, n);
    emu.reset_counts();
    let core = core(&emu, 1).await;
    let apply = batch::apply_all(&core, &manifests, opts(), |_| {});
    let console = async {
        // Every application described, one updated: the other two found the budget full.
        for _ in 0..400 {
            if emu.call_count("DescribeApplication") >= n as u64
                && emu.call_count("UpdateApplication") == 1
            {
                break;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let waiting = manifests
            .iter()
            .map(|m| m.spec.application_name.clone())
            .find(|a| emu.application(REGION, a).unwrap().status == ApplicationStatus::Running)
            .expect("an application waits for the slot");
        // A change in the console: a new version.
        emu.set_application_encryption(REGION, &waiting, AppliedEncryption::default())
            .unwrap();
    };
    let (done, ()) = tokio::join!(apply, console);
    assert_converged(&done);
    // The changed application is described again before its update: either the list that
    // woke its resource showed the new version, or (a list from before the change) the update
    // made on the old description was refused by MSF and the pass after described it. The
    // others' woken passes use the description they had (the list shows it unchanged).
    assert_eq!(emu.call_count("DescribeApplication"), n as u64 + 1);
    let updates = emu.outcome_counts().remove("UpdateApplication").unwrap();
    assert_eq!(updates.get("ok"), Some(&(n as u64)), "{updates:?}");
}
