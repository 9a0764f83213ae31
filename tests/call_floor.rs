//! The AWS call floor of `apply` (issue 10, item 3), counted by the embedded emulator: per
//! pass, DescribeKey and GetKeyPolicy once per key whatever the number of applications on it,
//! DescribeApplication once per application; a key policy is re-read to verify only after a
//! write. The counts are exact, by operation.

use std::collections::BTreeMap;
use std::time::Duration;

use msf_cmk_controller::api::{ApplicationEncryptionSpec, DeletionPolicy, KeyPolicySpec, KeyType};
use msf_cmk_controller::aws::{ConnectOptions, connect};
use msf_cmk_controller::cli::plan_cmd::batch_core;
use msf_cmk_controller::controller::batch::{self, ApplyOptions};
use msf_cmk_controller::controller::context::Core;
use msf_cmk_controller::controller::manifests::Manifest;
use msf_cmk_controller::controller::status;
use msf_cmk_controller::controller::tenancy::Tenancy;
use msf_cmk_controller::domain::ApplicationStatus;
use msf_cmk_controller::emulator::{Emulator, EmulatorConfig, EmulatorHandle, Fault};
use msf_cmk_controller::planner::Defaults;

const REGION: &str = "us-east-1";

async fn emulator() -> EmulatorHandle {
    Emulator::start(EmulatorConfig {
        // Updates take a while, as on MSF (UPDATING in UpdateApplication's answer): the
        // resources wait for them in `apply`'s watch (ListApplications), not in a reconcile.
        update_delay: Duration::from_millis(100),
        ..EmulatorConfig::default()
    })
    .await
    .unwrap()
}

/// A Core as `apply --policy-settle 0s --max-concurrent-restarts 0` builds it (shared reads for
/// the run), switching in the pass that writes the policy (the settle time only adds passes of
/// the same reads).
async fn apply_core(emu: &EmulatorHandle) -> Core {
    // `--max-concurrent-restarts 0`: no rollout budget, so no resource waits for a slot.
    budget_core(emu, 0).await
}

/// [`apply_core`] with a rollout budget of `max_concurrent_restarts` (0: none).
async fn budget_core(emu: &EmulatorHandle, max_concurrent_restarts: u32) -> Core {
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
        Duration::ZERO,
    );
    core.set_max_concurrent_restarts(max_concurrent_restarts);
    core
}

fn spec(app: &str, key: &str) -> ApplicationEncryptionSpec {
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

/// `n` applications (half RUNNING, half READY) spread over `keys` new keys; keys named by
/// alias when `by_alias`.
fn fleet(emu: &EmulatorHandle, n: usize, keys: usize, by_alias: bool) -> Vec<Manifest> {
    let key_ids: Vec<String> = (0..keys)
        .map(|k| {
            let arn = emu.create_key(REGION, None).unwrap();
            if by_alias {
                let alias = format!("alias/floor-{k}");
                emu.create_alias(REGION, &alias, &arn).unwrap();
                alias
            } else {
                arn
            }
        })
        .collect();
    (0..n)
        .map(|i| {
            let name = format!("floor-{i:03}");
            let status = if i % 2 == 0 {
                ApplicationStatus::Running
            } else {
                ApplicationStatus::Ready
            };
            emu.create_application(REGION, &name, "FLINK-1_20", status)
                .unwrap();
            Manifest {
                namespace: "ns".into(),
                name: name.clone(),
                spec: spec(&name, &key_ids[i % keys]),
                source: "test".into(),
                retry_update: None,
            }
        })
        .collect()
}

fn opts() -> ApplyOptions {
    ApplyOptions {
        concurrency: 16,
        timeout: Duration::from_secs(60),
        poll: Duration::from_millis(20),
    }
}

/// The calls made, by operation, without the test's own set-up calls.
fn calls(emu: &EmulatorHandle) -> BTreeMap<String, u64> {
    emu.call_counts()
        .into_iter()
        .filter(|(op, n)| *n > 0 && !op.starts_with("Create"))
        .collect()
}

fn expect(pairs: &[(&str, usize)]) -> BTreeMap<String, u64> {
    pairs
        .iter()
        .filter(|(_, n)| *n > 0)
        .map(|(op, n)| (op.to_string(), *n as u64))
        .collect()
}

/// Takes the ListApplications calls out of `made`: how many polls the wait took depends on
/// how fast the updates were made, not on the number of resources (one page per 50
/// applications and poll; the fleets here fit in one page).
fn list_pages(made: &mut BTreeMap<String, u64>) -> u64 {
    made.remove("ListApplications").unwrap_or(0)
}

async fn apply(core: &Core, manifests: &[Manifest]) {
    let done = batch::apply_all(core, manifests, opts(), |_| {}).await;
    for d in &done {
        assert_eq!(d.outcome.ready(), "True", "{:#?}", d.outcome.status);
    }
}

#[tokio::test]
async fn apply_costs_the_floor_and_a_second_apply_reads_once_per_application_and_twice_per_key() {
    let emu = emulator().await;
    let (n, keys) = (40, 4);
    let manifests = fleet(&emu, n, keys, false);
    emu.reset_counts();

    apply(&apply_core(&emu).await, &manifests).await;
    // Per key: one DescribeKey; the read, the re-read right before the write (lost-update
    // protection, `key_write`), the write, the re-read that verifies it. Per application:
    // DescribeApplication and the update, nothing more: no history read (no rollback marker,
    // nothing of ours that failed), and the wait for MSF is ListApplications for all of them,
    // after which the update's own answer is the observation (same version), so neither a
    // second DescribeApplication nor the operation is read.
    let mut made = calls(&emu);
    let lists = list_pages(&mut made);
    assert_eq!(
        made,
        expect(&[
            ("DescribeKey", keys),
            ("GetKeyPolicy", 3 * keys),
            ("PutKeyPolicy", keys),
            ("DescribeApplication", n),
            ("UpdateApplication", n),
        ])
    );
    assert!(
        lists >= 1,
        "the updates were waited for with ListApplications"
    );
    println!("ListApplications calls (one page each): {lists}");

    // Steady state: a new run (nothing shared from the first) reads each application once
    // and each key twice, and writes nothing.
    emu.reset_counts();
    apply(&apply_core(&emu).await, &manifests).await;
    assert_eq!(
        calls(&emu),
        expect(&[
            ("DescribeKey", keys),
            ("GetKeyPolicy", keys),
            ("DescribeApplication", n),
        ])
    );
}

#[tokio::test]
async fn keys_named_by_alias_are_described_once_per_key_too() {
    let emu = emulator().await;
    let (n, keys) = (12, 3);
    let manifests = fleet(&emu, n, keys, true);
    apply(&apply_core(&emu).await, &manifests).await;
    emu.reset_counts();
    apply(&apply_core(&emu).await, &manifests).await;
    // The alias is described once; the application, which MSF reports with the key's ARN,
    // finds the same description under the resolved ARN.
    assert_eq!(
        calls(&emu),
        expect(&[
            ("DescribeKey", keys),
            ("GetKeyPolicy", keys),
            ("DescribeApplication", n),
        ])
    );
}

#[tokio::test]
async fn a_rolled_back_update_is_followed_reported_and_not_repeated_by_a_second_apply() {
    let emu = emulator().await;
    let (n, keys) = (40, 4);
    let manifests = fleet(&emu, n, keys, false);
    let failing = "floor-007";
    emu.set_fault(
        "UpdateApplication",
        Fault::rollback().for_application(failing),
    );
    emu.reset_counts();

    let done = batch::apply_all(&apply_core(&emu).await, &manifests, opts(), |_| {}).await;
    for d in &done {
        let expected = match manifests[d.index].name.as_str() {
            name if name == failing => "UpdateRolledBack",
            _ => "Converged",
        };
        assert_eq!(
            status::ready(&d.outcome.status).map(|c| c.reason.as_str()),
            Some(expected),
            "{:#?}",
            d.outcome.status
        );
    }
    // As the floor, plus for the rolled back application: the listed version is not the
    // update's (the rollback made a new one), so it is described again, its operation is
    // followed (FAILED), and the history is read before the update the plan still wants
    // (the rollback marker): blocked, not updated twice.
    let mut made = calls(&emu);
    assert!(list_pages(&mut made) >= 1);
    assert_eq!(
        made,
        expect(&[
            ("DescribeKey", keys),
            ("GetKeyPolicy", 3 * keys),
            ("PutKeyPolicy", keys),
            ("DescribeApplication", n + 1),
            ("UpdateApplication", n),
            ("DescribeApplicationOperation", 1),
            ("ListApplicationOperations", 1),
        ])
    );

    // A second run keeps no status: the rollback marker makes it read the history of that
    // application only, and the repeat is blocked again (the cause is gone: no fault).
    emu.clear_faults();
    emu.reset_counts();
    let done = batch::apply_all(&apply_core(&emu).await, &manifests, opts(), |_| {}).await;
    let failed = done
        .iter()
        .find(|d| manifests[d.index].name == failing)
        .unwrap();
    assert_eq!(
        status::ready(&failed.outcome.status).map(|c| c.reason.as_str()),
        Some("UpdateRolledBack")
    );
    assert_eq!(
        calls(&emu),
        expect(&[
            ("DescribeKey", keys),
            ("GetKeyPolicy", keys),
            ("DescribeApplication", n),
            ("ListApplicationOperations", 1),
            ("DescribeApplicationOperation", 1),
        ])
    );
}

#[tokio::test]
async fn list_applications_reads_every_page_of_fifty() {
    let emu = emulator().await;
    for i in 0..120 {
        emu.create_application(
            REGION,
            &format!("listed-{i:03}"),
            "FLINK-1_20",
            ApplicationStatus::Ready,
        )
        .unwrap();
    }
    emu.reset_counts();
    let core = apply_core(&emu).await;
    let listed = core.msf.list_applications(REGION).await.unwrap();
    assert_eq!(listed.len(), 120);
    assert!(listed.iter().all(|a| a.status == ApplicationStatus::Ready));
    assert_eq!(calls(&emu), expect(&[("ListApplications", 3)]));
}

#[tokio::test]
async fn with_the_restart_budget_a_resource_woken_for_a_slot_is_not_described_again() {
    let emu = emulator().await;
    // 20 RUNNING applications for 4 restart slots: most wait for one.
    let (n, keys, slots) = (40, 4, 4);
    let manifests = fleet(&emu, n, keys, false);
    emu.reset_counts();

    let done = batch::apply_all(&budget_core(&emu, slots).await, &manifests, opts(), |_| {}).await;
    for d in &done {
        assert_eq!(d.outcome.ready(), "True", "{:#?}", d.outcome.status);
    }
    // A resource that waited for a slot took a pass more (found the budget full, updated,
    // converged). With 4 slots for 20 restarts, at least one did.
    let waited = done.iter().filter(|d| d.passes > 2).count();
    assert!(waited >= 1, "no resource waited for a restart slot");
    // The floor, as without a budget: a waiter's pass stopped before UpdateApplication, and
    // the list that woke it (one made since it began to wait) shows its application at the
    // version and status that pass described, so that description is the next pass's
    // observation. Before, each waiter described its application again: n + waited.
    let mut made = calls(&emu);
    let lists = list_pages(&mut made);
    assert_eq!(
        made,
        expect(&[
            ("DescribeKey", keys),
            ("GetKeyPolicy", 3 * keys),
            ("PutKeyPolicy", keys),
            ("DescribeApplication", n),
            ("UpdateApplication", n),
        ])
    );
    assert!(lists >= 1);
    println!("{waited} resources waited for a slot; ListApplications calls: {lists}");
}

#[tokio::test]
async fn a_few_updates_in_a_large_region_are_described_not_listed() {
    let emu = emulator().await;
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
    let (n, keys) = (2, 1);
    let manifests = fleet(&emu, n, keys, false);
    emu.reset_counts();

    apply(&apply_core(&emu).await, &manifests).await;
    for m in &manifests {
        let app = emu.application(REGION, &m.spec.application_name).unwrap();
        assert!(
            app.status.is_updatable(),
            "apply returned before MSF finished"
        );
    }
    let mut made = calls(&emu);
    // The first look lists (3 pages: it learns the region's size); every later poll describes
    // the 2 updates still awaited instead (2 calls, not 3), and a description that shows the
    // update ended is the resource's next observation. The updates stay UPDATING for 100 ms
    // and the watch looks every 20 ms, so the wait takes several polls: listing each of them,
    // as before, made a multiple of 3 pages above 3.
    assert_eq!(list_pages(&mut made), 3, "{made:?}");
    let described = made.remove("DescribeApplication").unwrap_or(0);
    assert!(described >= n as u64, "{described}");
    assert_eq!(
        made,
        expect(&[
            ("DescribeKey", keys),
            ("GetKeyPolicy", 3 * keys),
            ("PutKeyPolicy", keys),
            ("UpdateApplication", n),
        ])
    );
    println!("DescribeApplication calls: {described} (n = {n}, the rest are polls)");
}
