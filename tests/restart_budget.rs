//! The rollout budget (`--max-concurrent-restarts`, issue 10 item 2) against the embedded
//! emulator, through the reconcile that `run` and `apply` share: never more of our updates of
//! RUNNING applications in progress than the budget, exactly one UpdateApplication per
//! application, READY applications never held back, waiting costs no call, and a new process
//! counts the updates a previous one left running. Every count is the emulator's.

use std::collections::BTreeMap;
use std::time::Duration;

use chrono::Utc;
use msf_cmk_controller::api::{
    ApplicationEncryptionSpec, ApplicationEncryptionStatus, DeletionPolicy, KeyPolicySpec, KeyType,
};
use msf_cmk_controller::aws::{ConnectOptions, connect};
use msf_cmk_controller::cli::plan_cmd::batch_core;
use msf_cmk_controller::controller::batch::{self, ApplyOptions};
use msf_cmk_controller::controller::context::{Core, Settings};
use msf_cmk_controller::controller::finalizer;
use msf_cmk_controller::controller::manifests::Manifest;
use msf_cmk_controller::controller::reconcile::{self, Mode, Next, Outcome, Peer, Subject};
use msf_cmk_controller::controller::restart_budget::WAITING_FOR_RESTART_BUDGET;
use msf_cmk_controller::controller::status;
use msf_cmk_controller::controller::tenancy::Tenancy;
use msf_cmk_controller::domain::ApplicationStatus;
use msf_cmk_controller::emulator::{CallRecord, Emulator, EmulatorConfig, EmulatorHandle};
use msf_cmk_controller::planner::Defaults;

const REGION: &str = "us-east-1";

async fn emulator(update_delay: Duration) -> EmulatorHandle {
    Emulator::start(EmulatorConfig {
        update_delay,
        ..EmulatorConfig::default()
    })
    .await
    .unwrap()
}

fn operator(emu: &EmulatorHandle) -> String {
    format!("arn:aws:iam::{}:role/msf-cmk-operator", emu.account_id())
}

/// A Core as `apply` builds it, with `budget` restarts at once and no settle time.
async fn core(emu: &EmulatorHandle, budget: u32) -> Core {
    let aws = connect(&ConnectOptions::local(emu.endpoint()))
        .await
        .unwrap();
    let mut core = batch_core(
        aws.msf,
        aws.kms,
        Defaults {
            region: REGION.into(),
            operator_role_arn: Some(operator(emu)),
        },
        Tenancy(None),
        Duration::ZERO,
    );
    core.set_max_concurrent_restarts(budget);
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

/// Applications `prefix-NN` in `status`, all on `key`.
fn fleet(
    emu: &EmulatorHandle,
    prefix: &str,
    n: usize,
    status: ApplicationStatus,
    key: &str,
) -> Vec<Manifest> {
    (0..n)
        .map(|i| {
            let name = format!("{prefix}-{i:02}");
            emu.create_application(REGION, &name, "FLINK-1_20", status.clone())
                .unwrap();
            Manifest {
                namespace: "ns".into(),
                name: name.clone(),
                spec: spec(&name, key),
                source: "test".into(),
                retry_update: None,
            }
        })
        .collect()
}

fn updates(records: &[CallRecord]) -> Vec<&CallRecord> {
    records
        .iter()
        .filter(|r| r.operation == "UpdateApplication" && r.outcome == "ok")
        .collect()
}

/// The most updates in progress at once among `names`, from the emulator's log: an update of
/// an application keeps it UPDATING for `delay` after the call arrived.
fn most_at_once(records: &[CallRecord], names: &[String], delay: Duration) -> usize {
    let delay = delay.as_millis() as u64;
    let mut edges: Vec<(u64, i64)> = Vec::new();
    for r in updates(records) {
        if names.iter().any(|n| Some(n) == r.target.as_ref()) {
            edges.push((r.time_ms, 1));
            edges.push((r.time_ms + delay, -1));
        }
    }
    // An interval is half-open: one that ends at t does not overlap one that starts at t.
    edges.sort();
    let (mut now, mut most) = (0i64, 0i64);
    for (_, d) in edges {
        now += d;
        most = most.max(now);
    }
    most as usize
}

#[tokio::test]
async fn thirty_running_applications_with_a_budget_of_five_restart_at_most_five_at_once() {
    // Long enough that the first five are still UPDATING when the others ask.
    const DELAY: Duration = Duration::from_millis(600);
    let emu = emulator(DELAY).await;
    let key = emu.create_key(REGION, None).unwrap();
    let mut manifests = fleet(&emu, "running", 30, ApplicationStatus::Running, &key);
    manifests.extend(fleet(&emu, "stopped", 5, ApplicationStatus::Ready, &key));
    let core = core(&emu, 5).await;
    emu.clear_calls();
    let done = batch::apply_all(
        &core,
        &manifests,
        ApplyOptions {
            concurrency: 40,
            timeout: Duration::from_secs(120),
            poll: Duration::from_millis(25),
        },
        |_| {},
    )
    .await;
    for d in &done {
        assert_eq!(d.outcome.ready(), "True", "{:#?}", d.outcome.status);
    }
    let log = emu.calls(0);
    // Exactly one UpdateApplication per application, whatever the waiting.
    let mut per_app: BTreeMap<String, usize> = BTreeMap::new();
    for r in log.iter().filter(|r| r.operation == "UpdateApplication") {
        *per_app
            .entry(r.target.clone().unwrap_or_default())
            .or_default() += 1;
    }
    assert_eq!(per_app.len(), 35);
    assert!(per_app.values().all(|n| *n == 1), "{per_app:?}");
    let running: Vec<String> = (0..30).map(|i| format!("running-{i:02}")).collect();
    let most = most_at_once(&log, &running, DELAY);
    assert!((2..=5).contains(&most), "{most} restarts at once");
    // READY applications are not held back: theirs are made while RUNNING ones still wait
    // (six waves of five).
    let last = |prefix: &str| {
        updates(&log)
            .iter()
            .filter(|r| r.target.as_deref().is_some_and(|t| t.starts_with(prefix)))
            .map(|r| r.time_ms)
            .max()
            .unwrap()
    };
    assert!(last("stopped") < last("running"));
    // All slots are free again at the end.
    assert_eq!(core.restart_budget.in_use(REGION), 0);
    let metrics = core.metrics.encode();
    assert!(
        metrics.contains(r#"msf_cmk_restart_slots_in_use{region="us-east-1",account="#),
        "{metrics}"
    );
}

/// One reconcile as `run` makes it: the previous status carried over.
async fn pass(
    core: &Core,
    spec: &ApplicationEncryptionSpec,
    previous: Option<&ApplicationEncryptionStatus>,
) -> Outcome {
    let subject = Subject {
        namespace: "ns",
        name: &spec.application_name,
        spec,
        generation: Some(1),
        previous,
        conflict: None,
        retry_update: None,
    };
    let peers: [Peer; 0] = [];
    reconcile::reconcile(core, &subject, &peers, Mode::Execute, Utc::now()).await
}

fn ready(o: &Outcome) -> (String, String) {
    let c = status::ready(&o.status).expect("a Ready condition");
    (c.status.to_string(), c.reason.to_string())
}

#[tokio::test]
async fn a_full_budget_makes_running_applications_wait_without_a_call_and_ready_ones_pass() {
    // Updates stay in progress until the test ends them: no timing involved.
    let emu = emulator(Duration::from_secs(3600)).await;
    let key = emu.create_key(REGION, None).unwrap();
    for name in ["a", "b", "c"] {
        emu.create_application(REGION, name, "FLINK-1_20", ApplicationStatus::Running)
            .unwrap();
    }
    emu.create_application(REGION, "stopped", "FLINK-1_20", ApplicationStatus::Ready)
        .unwrap();
    let core = core(&emu, 2).await;
    let (a, b, c, stopped) = (
        spec("a", &key),
        spec("b", &key),
        spec("c", &key),
        spec("stopped", &key),
    );
    // Two restarts take both slots (the policy is written by the first).
    let oa = pass(&core, &a, None).await;
    let ob = pass(&core, &b, None).await;
    assert_eq!(emu.call_count("UpdateApplication"), 2);
    assert_eq!(core.restart_budget.in_use(REGION), 2);
    // The third waits: no UpdateApplication, a requeue, and the reason says why.
    let oc = pass(&core, &c, None).await;
    assert_eq!(emu.call_count("UpdateApplication"), 2);
    assert_eq!(
        ready(&oc),
        ("False".into(), WAITING_FOR_RESTART_BUDGET.into())
    );
    assert!(matches!(oc.next, Next::Waiting(_)), "{:?}", oc.next);
    let reconciling = oc
        .status
        .conditions
        .iter()
        .find(|c| c.type_ == "Reconciling")
        .expect("Reconciling");
    assert_eq!(reconciling.status, "True");
    // Waiting again costs no call either.
    let oc = pass(&core, &c, Some(&oc.status)).await;
    assert_eq!(emu.call_count("UpdateApplication"), 2);
    // A READY application does not restart: it is not held back, and takes no slot.
    let os = pass(&core, &stopped, None).await;
    assert_eq!(emu.call_count("UpdateApplication"), 3);
    assert_eq!(os.application_updates, 1);
    assert_eq!(core.restart_budget.in_use(REGION), 2);
    // a's restart ends; b is still UPDATING. a's reconcile frees its slot, c gets it.
    emu.set_application_status(REGION, "a", ApplicationStatus::Running)
        .unwrap();
    let _ = pass(&core, &b, Some(&ob.status)).await;
    assert_eq!(
        core.restart_budget.in_use(REGION),
        2,
        "b is still restarting"
    );
    let _ = pass(&core, &a, Some(&oa.status)).await;
    assert_eq!(core.restart_budget.in_use(REGION), 1);
    let oc = pass(&core, &c, Some(&oc.status)).await;
    assert_eq!(oc.application_updates, 1);
    assert_eq!(emu.call_count("UpdateApplication"), 4);
    assert_eq!(core.restart_budget.in_use(REGION), 2);
}

#[tokio::test]
async fn a_new_process_counts_the_updates_the_previous_one_left_running() {
    let emu = emulator(Duration::from_secs(3600)).await;
    let key = emu.create_key(REGION, None).unwrap();
    for name in ["a", "b"] {
        emu.create_application(REGION, name, "FLINK-1_20", ApplicationStatus::Running)
            .unwrap();
    }
    let (a, b) = (spec("a", &key), spec("b", &key));
    let before = core(&emu, 1).await;
    let oa = pass(&before, &a, None).await;
    assert_eq!(oa.application_updates, 1);
    drop(before);
    // The controller restarts: a new process, an empty budget. Its first reconcile of `a`
    // sees our update recorded in progress and the application UPDATING: a slot is taken.
    let after = core(&emu, 1).await;
    assert_eq!(after.restart_budget.in_use(REGION), 0);
    let oa = pass(&after, &a, Some(&oa.status)).await;
    assert_eq!(after.restart_budget.in_use(REGION), 1);
    let ob = pass(&after, &b, None).await;
    assert_eq!(ready(&ob).1, WAITING_FOR_RESTART_BUDGET);
    assert_eq!(emu.call_count("UpdateApplication"), 1);
    // Someone else's update (no record of ours) is not counted.
    let other = core(&emu, 1).await;
    let _ = pass(&other, &a, None).await;
    assert_eq!(other.restart_budget.in_use(REGION), 0);
    emu.set_application_status(REGION, "a", ApplicationStatus::Running)
        .unwrap();
    let _ = pass(&after, &a, Some(&oa.status)).await;
    let ob = pass(&after, &b, Some(&ob.status)).await;
    assert_eq!(ob.application_updates, 1);
}

#[tokio::test]
async fn no_budget_restarts_everything_at_once() {
    let emu = emulator(Duration::from_secs(3600)).await;
    let key = emu.create_key(REGION, None).unwrap();
    let core = core(&emu, 0).await;
    for i in 0..12 {
        let name = format!("app-{i:02}");
        emu.create_application(REGION, &name, "FLINK-1_20", ApplicationStatus::Running)
            .unwrap();
        let o = pass(&core, &spec(&name, &key), None).await;
        assert_eq!(o.application_updates, 1, "{:#?}", o.status);
    }
    assert_eq!(emu.call_count("UpdateApplication"), 12);
    assert_eq!(core.restart_budget.in_use(REGION), 12);
    // The default is 10.
    assert_eq!(Settings::default().max_concurrent_restarts, 10);
}

/// `run` after a restart: before its first reconcile it reads every status in its cache, and an
/// update of ours recorded in progress on an application last seen UPDATING holds a slot. The
/// objects are as run's cache holds them (`kube_loop::strip_unused`, which drops most of the
/// status' observations).
#[tokio::test]
async fn run_seeds_the_budget_from_the_statuses_once() {
    use msf_cmk_controller::api::{
        ApplicationEncryption, ApplicationObservation, LastUpdate, UpdateOutcome,
    };
    use msf_cmk_controller::controller::{kube_loop, lifecycle};
    let emu = emulator(Duration::from_secs(3600)).await;
    let key = emu.create_key(REGION, None).unwrap();
    let core = core(&emu, 1).await;
    let object = |app: &str, outcome: UpdateOutcome, seen: &str| {
        let mut o = ApplicationEncryption::new(app, spec(app, &key));
        o.metadata.namespace = Some("ns".into());
        o.status = Some(ApplicationEncryptionStatus {
            application: Some(ApplicationObservation {
                status: Some(seen.into()),
                ..ApplicationObservation::default()
            }),
            last_update: Some(LastUpdate {
                generation: Some(1),
                key_type: KeyType::CustomerManagedKey,
                key_arn: Some(key.clone()),
                operation_id: None,
                version_id: Some(2),
                time: "2026-01-01T00:00:00Z".into(),
                outcome,
                message: None,
                retry: None,
            }),
            ..ApplicationEncryptionStatus::default()
        });
        kube_loop::strip_unused(&mut o);
        std::sync::Arc::new(o)
    };
    let objects = vec![
        object("restarting", UpdateOutcome::InProgress, "UPDATING"),
        object("done", UpdateOutcome::Successful, "RUNNING"),
        object("theirs", UpdateOutcome::Successful, "UPDATING"),
    ];
    lifecycle::seed_restart_budget(&core, &objects);
    assert_eq!(core.restart_budget.in_use(REGION), 1);
    // Once per process: a later call (another reconcile) adds nothing.
    core.restart_budget.release(REGION, "restarting");
    lifecycle::seed_restart_budget(&core, &objects);
    assert_eq!(core.restart_budget.in_use(REGION), 0);
}

/// The resource as the finalizer sees it (deleted), with the status its last reconcile wrote.
fn deleting<'a>(
    spec: &'a ApplicationEncryptionSpec,
    previous: &'a ApplicationEncryptionStatus,
) -> Subject<'a> {
    Subject {
        namespace: "ns",
        name: &spec.application_name,
        spec,
        generation: Some(1),
        previous: Some(previous),
        conflict: None,
        retry_update: None,
    }
}

fn waiting_reason(r: Result<Vec<reconcile::Note>, finalizer::CleanupError>) -> String {
    match r {
        Err(finalizer::CleanupError::Waiting { reason, .. }) => reason,
        other => panic!("expected the cleanup to wait, got {other:?}"),
    }
}

/// Issue 13 (the long soak stuck on `WaitingForRestartBudget`): a resource deleted while its
/// restart was in progress kept its slot for the life of the process. Now its finalizer stays
/// until the restart ends, and the slot is freed then.
#[tokio::test]
async fn a_resource_deleted_mid_restart_frees_its_slot_once_the_restart_ends() {
    let emu = emulator(Duration::from_secs(3600)).await;
    let key = emu.create_key(REGION, None).unwrap();
    for name in ["a", "b"] {
        emu.create_application(REGION, name, "FLINK-1_20", ApplicationStatus::Running)
            .unwrap();
    }
    let core = core(&emu, 1).await;
    let (a, b) = (spec("a", &key), spec("b", &key));
    let oa = pass(&core, &a, None).await;
    assert_eq!(oa.application_updates, 1);
    // `a` is deleted (Retain) while MSF still restarts it: the cleanup waits, the slot stays.
    let r = finalizer::cleanup(&core, &deleting(&a, &oa.status)).await;
    assert_eq!(waiting_reason(r), finalizer::RESTART_IN_PROGRESS);
    assert_eq!(core.restart_budget.in_use(REGION), 1);
    let ob = pass(&core, &b, None).await;
    assert_eq!(ready(&ob).1, WAITING_FOR_RESTART_BUDGET);
    // The restart ends: the next pass of the cleanup finishes and frees the slot.
    emu.set_application_status(REGION, "a", ApplicationStatus::Running)
        .unwrap();
    let notes = finalizer::cleanup(&core, &deleting(&a, &oa.status))
        .await
        .unwrap();
    assert!(notes.is_empty(), "{notes:?}");
    assert_eq!(core.restart_budget.in_use(REGION), 0);
    let ob = pass(&core, &b, Some(&ob.status)).await;
    assert_eq!(ob.application_updates, 1);
    assert_eq!(emu.call_count("UpdateApplication"), 2);
}

/// Issue 13 (e): the revert to the AWS owned key on deletion restarts a RUNNING application,
/// so it takes a slot like any update: it waits (no call) while the budget is full, and the
/// finalizer stays until its restart ends.
#[tokio::test]
async fn the_revert_on_deletion_takes_a_restart_slot() {
    let emu = emulator(Duration::from_secs(3600)).await;
    let key = emu.create_key(REGION, None).unwrap();
    for name in ["a", "c"] {
        emu.create_application(REGION, name, "FLINK-1_20", ApplicationStatus::Running)
            .unwrap();
    }
    let core = core(&emu, 1).await;
    let mut a = spec("a", &key);
    a.deletion_policy = DeletionPolicy::RevertToAwsOwnedKey;
    let c = spec("c", &key);
    let oa = pass(&core, &a, None).await;
    emu.set_application_status(REGION, "a", ApplicationStatus::Running)
        .unwrap();
    let oa = pass(&core, &a, Some(&oa.status)).await;
    assert_eq!(ready(&oa).0, "True", "{:#?}", oa.status);
    // c's restart takes the only slot; a's revert must wait for it, without a call.
    let oc = pass(&core, &c, None).await;
    assert_eq!(oc.application_updates, 1);
    let r = finalizer::cleanup(&core, &deleting(&a, &oa.status)).await;
    assert_eq!(waiting_reason(r), WAITING_FOR_RESTART_BUDGET);
    assert_eq!(emu.call_count("UpdateApplication"), 2);
    assert!(!finalizer::restart_pending(
        &core,
        &deleting(&a, &oa.status)
    ));
    // c's restart ends and is observed: a's revert goes, and holds the slot while it restarts.
    emu.set_application_status(REGION, "c", ApplicationStatus::Running)
        .unwrap();
    let _ = pass(&core, &c, Some(&oc.status)).await;
    let notes = finalizer::cleanup(&core, &deleting(&a, &oa.status))
        .await
        .unwrap();
    assert_eq!(notes.len(), 1, "{notes:?}");
    assert_eq!(emu.call_count("UpdateApplication"), 3);
    assert!(finalizer::restart_pending(&core, &deleting(&a, &oa.status)));
    assert_eq!(core.restart_budget.in_use(REGION), 1);
    let r = finalizer::cleanup(&core, &deleting(&a, &oa.status)).await;
    assert_eq!(waiting_reason(r), finalizer::RESTART_IN_PROGRESS);
    // Over: done, slot free, one revert in all.
    emu.set_application_status(REGION, "a", ApplicationStatus::Running)
        .unwrap();
    finalizer::cleanup(&core, &deleting(&a, &oa.status))
        .await
        .unwrap();
    assert!(!finalizer::restart_pending(
        &core,
        &deleting(&a, &oa.status)
    ));
    assert_eq!(core.restart_budget.in_use(REGION), 0);
    assert_eq!(emu.call_count("UpdateApplication"), 3);
}

/// Issue 13 (the long soak stuck on `WaitingForRestartBudget`): a leader started after a
/// SIGKILL seeds the slots its predecessor's statuses show in progress. Those whose update
/// ended while no process ran are freed by one DescribeApplication each, not when their
/// resource's reconcile comes round.
#[tokio::test]
async fn a_new_leader_frees_the_seeded_slots_of_updates_that_ended_while_none_ran() {
    use msf_cmk_controller::api::ApplicationEncryption;
    use msf_cmk_controller::controller::{lifecycle, restart_seed};
    let emu = emulator(Duration::from_secs(3600)).await;
    let key = emu.create_key(REGION, None).unwrap();
    for name in ["a", "b", "c"] {
        emu.create_application(REGION, name, "FLINK-1_20", ApplicationStatus::Running)
            .unwrap();
    }
    let (a, b, c) = (spec("a", &key), spec("b", &key), spec("c", &key));
    let before = core(&emu, 2).await;
    let oa = pass(&before, &a, None).await;
    let ob = pass(&before, &b, None).await;
    assert_eq!(before.restart_budget.in_use(REGION), 2);
    drop(before);
    // a's restart ends while no process runs; b's does not.
    emu.set_application_status(REGION, "a", ApplicationStatus::Running)
        .unwrap();
    let object = |spec: &ApplicationEncryptionSpec, status: &ApplicationEncryptionStatus| {
        let mut o = ApplicationEncryption::new(&spec.application_name, spec.clone());
        o.metadata.namespace = Some("ns".into());
        o.status = Some(status.clone());
        std::sync::Arc::new(o)
    };
    let objects = vec![object(&a, &oa.status), object(&b, &ob.status)];
    let after = core(&emu, 2).await;
    lifecycle::seed_restart_budget(&after, &objects);
    assert_eq!(after.restart_budget.in_use(REGION), 2);
    let described = emu.call_count("DescribeApplication");
    assert_eq!(restart_seed::free_ended(&after, &objects).await, 1);
    assert_eq!(emu.call_count("DescribeApplication"), described + 2);
    assert!(!after.restart_budget.holds(REGION, "a"));
    assert!(after.restart_budget.holds(REGION, "b"));
    // The freed slot is c's at once; b's is kept until b's restart ends.
    let oc = pass(&after, &c, None).await;
    assert_eq!(oc.application_updates, 1);
    assert_eq!(after.restart_budget.in_use(REGION), 2);
    assert_eq!(restart_seed::free_ended(&after, &objects).await, 0);
    assert_eq!(emu.call_count("UpdateApplication"), 3);
}

/// The deletion of a resource that lost a conflict over the application touches nothing: it
/// neither waits for the winner's restart nor frees the winner's slot.
#[tokio::test]
async fn deleting_a_conflict_loser_leaves_the_winner_s_slot_alone() {
    let emu = emulator(Duration::from_secs(3600)).await;
    let key = emu.create_key(REGION, None).unwrap();
    emu.create_application(REGION, "a", "FLINK-1_20", ApplicationStatus::Running)
        .unwrap();
    let core = core(&emu, 1).await;
    let a = spec("a", &key);
    let oa = pass(&core, &a, None).await;
    assert_eq!(oa.application_updates, 1);
    let mut loser = deleting(&a, &oa.status);
    loser.name = "loser";
    loser.conflict = Some("ns/a keeps application a".into());
    let described = emu.call_count("DescribeApplication");
    let notes = finalizer::cleanup(&core, &loser).await.unwrap();
    assert!(notes.is_empty());
    assert!(!finalizer::restart_pending(&core, &loser));
    finalizer::forget(&core, &loser);
    assert!(core.restart_budget.holds(REGION, "a"));
    assert_eq!(emu.call_count("DescribeApplication"), described);
}
