//! The update lifecycle against the embedded emulator (issue 9, items 1, 2, 3 and 6), through
//! the same `reconcile` core that `run` and `apply` use: MSF rolling an update back, the
//! operation followed until it ends, the key policy given time to propagate, a job's state.
//! Every claim about "no second UpdateApplication" is counted by the emulator itself.

use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use msf_cmk_controller::api::{
    ApplicationEncryptionSpec, ApplicationEncryptionStatus, DeletionPolicy, KeyPolicySpec, KeyType,
    UpdateOutcome,
};
use msf_cmk_controller::aws::{ConnectOptions, connect};
use msf_cmk_controller::cli::plan_cmd::{self, Output};
use msf_cmk_controller::controller::batch::{self, ApplyOptions};
use msf_cmk_controller::controller::context::{Core, Settings};
use msf_cmk_controller::controller::manifests::Manifest;
use msf_cmk_controller::controller::metrics::Metrics;
use msf_cmk_controller::controller::reconcile::{self, Mode, Next, Outcome, Subject};
use msf_cmk_controller::controller::status;
use msf_cmk_controller::controller::tenancy::Tenancy;
use msf_cmk_controller::domain::{ApplicationStatus, AppliedKeyType, ErrorCategory};
use msf_cmk_controller::emulator::{Emulator, EmulatorConfig, EmulatorHandle, Fault};
use msf_cmk_controller::planner::Defaults;

const REGION: &str = "us-east-1";
const UPDATE_DELAY: Duration = Duration::from_millis(150);

struct Env {
    emu: EmulatorHandle,
    core: Core,
}

/// The emulator and a core whose settle time is `settle`.
async fn env_with(settle: Duration, settings: impl FnOnce(&mut Settings)) -> Env {
    let emu = Emulator::start(EmulatorConfig {
        update_delay: UPDATE_DELAY,
        ..EmulatorConfig::default()
    })
    .await
    .unwrap();
    let mut opts = ConnectOptions::local(emu.endpoint());
    opts.max_attempts = 1;
    let aws = connect(&opts).await.unwrap();
    let mut s = Settings {
        policy_share_window: Duration::ZERO,
        policy_settle: settle,
        verify_attempts: 10,
        verify_interval: Duration::from_millis(50),
        ..Settings::default()
    };
    settings(&mut s);
    let core = Core::new(
        aws.msf,
        aws.kms,
        Defaults {
            region: REGION.into(),
            // The identity the emulator's MSF checks the key policy for.
            operator_role_arn: Some(format!(
                "arn:aws:iam::{}:role/msf-cmk-operator",
                emu.account_id()
            )),
        },
        Tenancy(None),
        s,
        Arc::new(Metrics::new()),
    );
    Env { emu, core }
}

async fn env() -> Env {
    env_with(Duration::ZERO, |_| {}).await
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

/// One reconcile as the controller makes it: generation, previous status, retry annotation.
struct Pass<'a> {
    spec: &'a ApplicationEncryptionSpec,
    generation: i64,
    previous: Option<&'a ApplicationEncryptionStatus>,
    retry: Option<&'a str>,
}

impl Env {
    fn app(&self, name: &str, status: ApplicationStatus) {
        self.emu
            .create_application(REGION, name, "FLINK-1_20", status)
            .unwrap();
    }

    async fn pass(&self, p: Pass<'_>) -> Outcome {
        let subject = Subject {
            namespace: "ns",
            name: "orders",
            spec: p.spec,
            generation: Some(p.generation),
            previous: p.previous,
            conflict: None,
            retry_update: p.retry,
        };
        reconcile::reconcile(&self.core, &subject, &[], Mode::Execute, Utc::now()).await
    }

    /// Reconciles as the requeue would (status carried over) until nothing is pending.
    async fn settle_down(
        &self,
        spec: &ApplicationEncryptionSpec,
        generation: i64,
        previous: Option<ApplicationEncryptionStatus>,
        retry: Option<&str>,
    ) -> Outcome {
        let mut previous = previous;
        for _ in 0..200 {
            let o = self
                .pass(Pass {
                    spec,
                    generation,
                    previous: previous.as_ref(),
                    retry,
                })
                .await;
            match o.next {
                Next::Waiting(_) | Next::Failed(ErrorCategory::Transient) => {
                    previous = Some(o.status.clone());
                    tokio::time::sleep(Duration::from_millis(30)).await;
                }
                _ => return o,
            }
        }
        panic!("the resource never settled");
    }

    fn updates(&self) -> u64 {
        self.emu.call_count("UpdateApplication")
    }
}

fn ready(o: &Outcome) -> (String, String) {
    let c = status::ready(&o.status).expect("a Ready condition");
    (c.status.to_string(), c.reason.to_string())
}

fn condition<'a>(o: &'a Outcome, t: &str) -> &'a msf_cmk_controller::api::Condition {
    o.status.conditions.iter().find(|c| c.type_ == t).unwrap()
}

/// A RUNNING application whose key switch MSF rolls back, reconciled until it stops.
async fn rolled_back_once(e: &Env) -> (ApplicationEncryptionSpec, Outcome) {
    e.app("orders", ApplicationStatus::Running);
    let key = e.emu.create_key(REGION, None).unwrap();
    e.emu.set_fault(
        "UpdateApplication",
        Fault::rollback().for_application("orders"),
    );
    let spec = cmk("orders", &key);
    let o = e.settle_down(&spec, 1, None, None).await;
    (spec, o)
}

#[tokio::test]
async fn a_rolled_back_update_is_reported_and_never_repeated() {
    let e = env().await;
    let (spec, o) = rolled_back_once(&e).await;
    assert_eq!(e.updates(), 1, "{:#?}", o.status);
    assert_eq!(o.next, Next::Blocked);
    assert_eq!(ready(&o), ("False".into(), "UpdateRolledBack".into()));
    let applied = condition(&o, "EncryptionApplied");
    assert_eq!(
        (applied.status.as_str(), applied.reason.as_str()),
        ("False", "UpdateRolledBack")
    );
    assert!(
        applied.message.contains("rolled back"),
        "MSF's failure message: {}",
        applied.message
    );
    assert!(
        o.events
            .iter()
            .any(|n| n.warning && n.reason == "UpdateRolledBack"),
        "{:?}",
        o.events
    );
    let last = o.status.last_update.as_ref().expect("status.lastUpdate");
    assert_eq!(last.outcome, UpdateOutcome::RolledBack);
    assert_eq!(last.generation, Some(1));
    assert!(last.operation_id.is_some() && last.version_id.is_some());
    assert!(last.message.is_some());
    assert_eq!(
        e.emu
            .application(REGION, "orders")
            .unwrap()
            .encryption
            .key_type,
        AppliedKeyType::AwsOwnedKey,
        "MSF undid the switch"
    );

    // Resyncs, even once the cause is gone: no second restart for this generation.
    e.emu.clear_faults();
    let mut previous = o.status.clone();
    for _ in 0..3 {
        let again = e
            .pass(Pass {
                spec: &spec,
                generation: 1,
                previous: Some(&previous),
                retry: None,
            })
            .await;
        assert_eq!(ready(&again).1, "UpdateRolledBack");
        previous = again.status;
    }
    assert_eq!(e.updates(), 1);
}

#[tokio::test]
async fn without_a_status_the_rollback_is_read_from_aws() {
    let e = env().await;
    let (spec, _) = rolled_back_once(&e).await;
    e.emu.clear_faults();
    // A controller whose status was lost.
    let lost = e
        .pass(Pass {
            spec: &spec,
            generation: 1,
            previous: None,
            retry: None,
        })
        .await;
    assert_eq!(ready(&lost), ("False".into(), "UpdateRolledBack".into()));
    // The rollback marker (ApplicationVersionRolledBackFrom) is why the history is read.
    assert!(e.emu.call_count("ListApplicationOperations") >= 1);
    assert!(
        condition(&lost, "EncryptionApplied")
            .message
            .contains("rolled back")
    );
    // `apply`, which keeps no status between runs: same answer, exit code 1.
    let manifests = vec![Manifest {
        namespace: "ns".into(),
        name: "orders".into(),
        spec: spec.clone(),
        source: "test".into(),
        retry_update: None,
    }];
    let opts = ApplyOptions {
        concurrency: 1,
        timeout: Duration::from_secs(20),
        poll: Duration::from_millis(50),
    };
    let done = batch::apply_all(&e.core, &manifests, opts, |_| {}).await;
    assert_eq!(ready(&done[0].outcome).1, "UpdateRolledBack");
    let mut out = Vec::new();
    let code = plan_cmd::print_apply(&mut out, &e.core, &manifests, &done, Output::Text).unwrap();
    assert_eq!(code, plan_cmd::EXIT_FAILED);
    assert_eq!(e.updates(), 1, "neither made a second UpdateApplication");
}

#[tokio::test]
async fn a_new_retry_annotation_value_allows_exactly_one_more_try() {
    let e = env().await;
    let (spec, o) = rolled_back_once(&e).await;
    // Still failing: the retry is made once, and rolled back again.
    let again = e.settle_down(&spec, 1, Some(o.status), Some("1")).await;
    assert_eq!(e.updates(), 2);
    assert_eq!(ready(&again).1, "UpdateRolledBack");
    let last = again.status.last_update.clone().unwrap();
    assert_eq!(
        last.retry.as_deref(),
        Some("1"),
        "the value tried is recorded"
    );
    let same = e.settle_down(&spec, 1, Some(again.status), Some("1")).await;
    assert_eq!(e.updates(), 2, "the same value allows nothing more");
    // The cause is fixed and a new value is set: one try, which succeeds.
    e.emu.clear_faults();
    let fixed = e.settle_down(&spec, 1, Some(same.status), Some("2")).await;
    assert_eq!(e.updates(), 3);
    assert_eq!(ready(&fixed), ("True".into(), "Converged".into()));
    assert_eq!(
        fixed.status.last_update.unwrap().outcome,
        UpdateOutcome::Successful
    );
}

#[tokio::test]
async fn a_spec_change_allows_one_more_try() {
    let e = env().await;
    let (spec, o) = rolled_back_once(&e).await;
    e.emu.clear_faults();
    let o = e.settle_down(&spec, 2, Some(o.status), None).await;
    assert_eq!(e.updates(), 2);
    assert_eq!(
        ready(&o),
        ("True".into(), "Converged".into()),
        "{:#?}",
        o.status
    );
}

#[tokio::test]
async fn converged_only_once_msf_has_finished_the_update() {
    let e = env().await;
    e.app("orders", ApplicationStatus::Running);
    let key = e.emu.create_key(REGION, None).unwrap();
    let spec = cmk("orders", &key);
    let first = e
        .pass(Pass {
            spec: &spec,
            generation: 1,
            previous: None,
            retry: None,
        })
        .await;
    assert_eq!(first.application_updates, 1);
    // MSF already shows the new key, but it is UPDATING: not done.
    assert_eq!(ready(&first), ("False".into(), "Updating".into()));
    assert!(matches!(first.next, Next::Waiting(_)), "{:?}", first.next);
    let last = first.status.last_update.as_ref().unwrap();
    assert_eq!(last.outcome, UpdateOutcome::InProgress);
    assert_eq!(last.key_arn.as_deref(), Some(key.as_str()));
    assert!(last.operation_id.is_some());

    let done = e.settle_down(&spec, 1, Some(first.status), None).await;
    assert_eq!(ready(&done), ("True".into(), "Converged".into()));
    assert_eq!(
        done.status.last_update.as_ref().unwrap().outcome,
        UpdateOutcome::Successful
    );
    assert!(e.emu.call_count("DescribeApplicationOperation") >= 1);
    assert_eq!(e.updates(), 1);
}

#[tokio::test]
async fn a_first_switch_reads_no_history_and_ends_by_the_version() {
    let e = env().await;
    e.app("orders", ApplicationStatus::Ready);
    let key = e.emu.create_key(REGION, None).unwrap();
    let spec = cmk("orders", &key);
    let first = e
        .pass(Pass {
            spec: &spec,
            generation: 1,
            previous: None,
            retry: None,
        })
        .await;
    assert_eq!(first.application_updates, 1);
    // No rollback marker, no update of ours that failed, a settled status: nothing in MSF's
    // history could have stopped the update, so it was not read.
    assert_eq!(e.emu.call_count("ListApplicationOperations"), 0);
    // Once MSF is done, the application at the version the update made says it succeeded.
    tokio::time::sleep(UPDATE_DELAY * 2).await;
    let done = e
        .pass(Pass {
            spec: &spec,
            generation: 1,
            previous: Some(&first.status),
            retry: None,
        })
        .await;
    assert_eq!(ready(&done).0, "True", "{:#?}", done.status);
    assert_eq!(
        done.status.last_update.as_ref().unwrap().outcome,
        UpdateOutcome::Successful
    );
    assert_eq!(e.emu.call_count("DescribeApplicationOperation"), 0);
    assert_eq!(e.emu.call_count("ListApplicationOperations"), 0);
    assert_eq!(e.updates(), 1);
}

#[tokio::test]
async fn a_stopped_application_is_told_when_the_key_takes_effect() {
    let e = env().await;
    e.app("orders", ApplicationStatus::Ready);
    let key = e.emu.create_key(REGION, None).unwrap();
    let o = e.settle_down(&cmk("orders", &key), 1, None, None).await;
    assert_eq!(ready(&o).0, "True");
    assert!(
        condition(&o, "EncryptionApplied")
            .message
            .contains("next start"),
        "{:#?}",
        o.status
    );
}

#[tokio::test]
async fn apply_waits_for_the_update_to_finish() {
    let e = env().await;
    e.app("orders", ApplicationStatus::Running);
    let key = e.emu.create_key(REGION, None).unwrap();
    let manifests = vec![Manifest {
        namespace: "ns".into(),
        name: "orders".into(),
        spec: cmk("orders", &key),
        source: "test".into(),
        retry_update: None,
    }];
    let opts = ApplyOptions {
        concurrency: 1,
        timeout: Duration::from_secs(20),
        poll: Duration::from_millis(50),
    };
    let done = batch::apply_all(&e.core, &manifests, opts, |_| {}).await;
    assert_eq!(ready(&done[0].outcome), ("True".into(), "Converged".into()));
    assert!(
        e.emu
            .application(REGION, "orders")
            .unwrap()
            .status
            .is_updatable(),
        "apply returned before MSF finished"
    );
    let mut out = Vec::new();
    let code = plan_cmd::print_apply(&mut out, &e.core, &manifests, &done, Output::Text).unwrap();
    assert_eq!(code, plan_cmd::EXIT_OK);
}

#[tokio::test]
async fn the_update_waits_for_a_written_policy_to_settle() {
    let settle = Duration::from_millis(400);
    let e = env_with(settle, |_| {}).await;
    e.app("orders", ApplicationStatus::Running);
    let key = e.emu.create_key(REGION, None).unwrap();
    let spec = cmk("orders", &key);
    let first = e
        .pass(Pass {
            spec: &spec,
            generation: 1,
            previous: None,
            retry: None,
        })
        .await;
    assert_eq!(e.emu.call_count("PutKeyPolicy"), 1);
    assert_eq!(
        e.updates(),
        0,
        "no UpdateApplication in the pass that wrote"
    );
    assert!(
        matches!(first.next, Next::Waiting(d) if d <= settle && !d.is_zero()),
        "{:?}",
        first.next
    );
    assert_eq!(
        ready(&first),
        ("False".into(), "WaitingForKeyPolicyPropagation".into())
    );
    let write = first.status.last_key_policy_write.as_ref().unwrap();
    assert_eq!(write.key_arn, key);

    // Looked at again too early: still waiting, still no update.
    let early = e
        .pass(Pass {
            spec: &spec,
            generation: 1,
            previous: Some(&first.status),
            retry: None,
        })
        .await;
    assert_eq!(e.updates(), 0);
    assert_eq!(ready(&early).1, "WaitingForKeyPolicyPropagation");

    let done = e.settle_down(&spec, 1, Some(early.status), None).await;
    assert_eq!(ready(&done).0, "True", "{:#?}", done.status);
    assert_eq!(e.updates(), 1);
    assert_eq!(e.emu.call_count("PutKeyPolicy"), 1);
}

#[tokio::test]
async fn the_settle_time_survives_a_controller_restart() {
    let settle = Duration::from_millis(600);
    let e = env_with(settle, |_| {}).await;
    e.app("orders", ApplicationStatus::Running);
    let key = e.emu.create_key(REGION, None).unwrap();
    let spec = cmk("orders", &key);
    let first = e
        .pass(Pass {
            spec: &spec,
            generation: 1,
            previous: None,
            retry: None,
        })
        .await;
    assert_eq!(ready(&first).1, "WaitingForKeyPolicyPropagation");
    // A new process: nothing in memory, only the status it reads back.
    let mut opts = ConnectOptions::local(e.emu.endpoint());
    opts.max_attempts = 1;
    let aws = connect(&opts).await.unwrap();
    let core = Core::new(
        aws.msf,
        aws.kms,
        e.core.defaults.clone(),
        Tenancy(None),
        e.core.settings,
        Arc::new(Metrics::new()),
    );
    let subject = Subject {
        namespace: "ns",
        name: "orders",
        spec: &spec,
        generation: Some(1),
        previous: Some(&first.status),
        conflict: None,
        retry_update: None,
    };
    let o = reconcile::reconcile(&core, &subject, &[], Mode::Execute, Utc::now()).await;
    assert_eq!(ready(&o).1, "WaitingForKeyPolicyPropagation");
    assert_eq!(e.updates(), 0);
}

#[tokio::test]
async fn a_policy_read_that_lags_the_write_is_read_again_not_rewritten() {
    let e = env_with(Duration::from_millis(100), |_| {}).await;
    e.emu.set_policy_propagation(Duration::from_millis(300));
    e.app("orders", ApplicationStatus::Running);
    let key = e.emu.create_key(REGION, None).unwrap();
    let spec = cmk("orders", &key);
    let first = e
        .pass(Pass {
            spec: &spec,
            generation: 1,
            previous: None,
            retry: None,
        })
        .await;
    assert_ne!(
        ready(&first).1,
        "KeyPolicyNotVerified",
        "{:#?}",
        first.status
    );
    assert!(
        e.emu.call_count("GetKeyPolicy") >= 2,
        "re-read until it shows the write"
    );
    let done = e.settle_down(&spec, 1, Some(first.status), None).await;
    assert_eq!(ready(&done).0, "True", "{:#?}", done.status);
    assert_eq!(e.emu.call_count("PutKeyPolicy"), 1, "written once");
    assert_eq!(e.updates(), 1);
}

#[tokio::test]
async fn a_refusal_for_key_permissions_right_after_the_write_is_transient() {
    let e = env_with(Duration::ZERO, |s| {
        s.propagation_window = Duration::from_millis(700);
    })
    .await;
    e.app("orders", ApplicationStatus::Running);
    let key = e.emu.create_key(REGION, None).unwrap();
    let spec = cmk("orders", &key);
    // MSF says AccessDenied, as it does while it cannot see the new statements yet.
    e.emu.set_fault("UpdateApplication", Fault::deny());
    let first = e
        .pass(Pass {
            spec: &spec,
            generation: 1,
            previous: None,
            retry: None,
        })
        .await;
    assert_eq!(first.key_policy_writes, 1);
    assert_eq!(first.next, Next::Failed(ErrorCategory::Transient));
    assert_eq!(ready(&first).1, "WaitingForKeyPolicyPropagation");
    // After the window the same refusal is what it says: terminal.
    tokio::time::sleep(Duration::from_millis(800)).await;
    let later = e
        .pass(Pass {
            spec: &spec,
            generation: 1,
            previous: Some(&first.status),
            retry: None,
        })
        .await;
    assert_eq!(later.next, Next::Blocked, "{:#?}", later.status);
    assert_eq!(ready(&later).1, "EncryptionUpdateFailed");
    // Once MSF accepts, the switch goes through.
    e.emu.clear_faults();
    let done = e.settle_down(&spec, 1, Some(later.status), None).await;
    assert_eq!(ready(&done).0, "True");
}

#[tokio::test]
async fn a_running_application_without_snapshots_is_not_restarted() {
    let e = env().await;
    e.app("orders", ApplicationStatus::Running);
    e.emu
        .set_snapshots_enabled(REGION, "orders", false)
        .unwrap();
    let key = e.emu.create_key(REGION, None).unwrap();
    let mut spec = cmk("orders", &key);
    let o = e.settle_down(&spec, 1, None, None).await;
    assert_eq!(o.next, Next::Blocked);
    assert_eq!(
        ready(&o),
        ("False".into(), "WouldRestartWithoutState".into())
    );
    assert_eq!(e.updates(), 0);
    // The user accepts the restart without state.
    spec.allow_stateless_restart = true;
    let o = e.settle_down(&spec, 2, Some(o.status), None).await;
    assert_eq!(ready(&o).0, "True", "{:#?}", o.status);
    assert_eq!(e.updates(), 1);
}

#[tokio::test]
async fn an_update_whose_operation_cannot_be_read_ends_by_the_version() {
    let e = env().await;
    e.app("orders", ApplicationStatus::Running);
    let key = e.emu.create_key(REGION, None).unwrap();
    let spec = cmk("orders", &key);
    let done = e.settle_down(&spec, 1, None, None).await;
    assert_eq!(ready(&done).0, "True");
    // A status that still says in progress, for an operation MSF does not know (forgotten).
    let mut stale = done.status.clone();
    let last = stale.last_update.as_mut().unwrap();
    last.outcome = UpdateOutcome::InProgress;
    last.operation_id = Some("no-such-operation".into());
    let o = e
        .pass(Pass {
            spec: &spec,
            generation: 1,
            previous: Some(&stale),
            retry: None,
        })
        .await;
    assert_eq!(
        ready(&o),
        ("True".into(), "Converged".into()),
        "{:#?}",
        o.status
    );
    assert_eq!(
        o.status.last_update.unwrap().outcome,
        UpdateOutcome::Successful
    );
}

#[tokio::test]
async fn after_a_restart_a_refusal_may_be_an_unknown_write_but_not_in_apply() {
    // keyPolicy.mode Ignore: no policy write in this process, MSF refuses the update.
    for (unknown_writes, expected) in [
        (true, Next::Failed(ErrorCategory::Transient)),
        (false, Next::Blocked),
    ] {
        let e = env_with(Duration::ZERO, |s| {
            s.writes_before_start_unknown = unknown_writes;
        })
        .await;
        e.app("orders", ApplicationStatus::Running);
        let key = e.emu.create_key(REGION, None).unwrap();
        let mut spec = cmk("orders", &key);
        spec.key_policy.mode = msf_cmk_controller::api::KeyPolicyMode::Ignore;
        e.emu.set_fault("UpdateApplication", Fault::deny());
        let o = e
            .pass(Pass {
                spec: &spec,
                generation: 1,
                previous: None,
                retry: None,
            })
            .await;
        assert_eq!(o.next, expected, "{unknown_writes}: {:#?}", o.status);
    }
}

#[tokio::test]
async fn the_revert_on_deletion_follows_the_same_rules() {
    use msf_cmk_controller::controller::finalizer;
    let e = env().await;
    e.app("orders", ApplicationStatus::Running);
    let key = e.emu.create_key(REGION, None).unwrap();
    let mut spec = cmk("orders", &key);
    spec.deletion_policy = DeletionPolicy::RevertToAwsOwnedKey;
    let done = e.settle_down(&spec, 1, None, None).await;
    assert_eq!(ready(&done).0, "True");

    // Snapshots disabled: the revert would restart the job without its state.
    e.emu
        .set_snapshots_enabled(REGION, "orders", false)
        .unwrap();
    let err = finalizer::cleanup(&e.core, &deleted(&spec, &done.status))
        .await
        .unwrap_err();
    assert!(
        err.to_string().starts_with("WouldRestartWithoutState"),
        "{err}"
    );
    assert_eq!(e.updates(), 1, "no revert");
    e.emu.set_snapshots_enabled(REGION, "orders", true).unwrap();

    // MSF rolls the revert back: the next cleanup does not try again.
    e.emu.set_fault("UpdateApplication", Fault::rollback());
    finalizer::cleanup(&e.core, &deleted(&spec, &done.status))
        .await
        .unwrap();
    assert_eq!(e.updates(), 2);
    tokio::time::sleep(UPDATE_DELAY * 3).await;
    e.emu.clear_faults();
    for _ in 0..3 {
        let err = finalizer::cleanup(&e.core, &deleted(&spec, &done.status))
            .await
            .unwrap_err();
        assert!(err.to_string().starts_with("UpdateRolledBack"), "{err}");
    }
    assert_eq!(e.updates(), 2, "one revert, not one per retry");
    // Retain lets the deletion finish without touching the application.
    spec.deletion_policy = DeletionPolicy::Retain;
    finalizer::cleanup(&e.core, &deleted(&spec, &done.status))
        .await
        .unwrap();
    assert_eq!(e.updates(), 2);
}

/// The resource as the finalizer sees it.
fn deleted<'a>(
    spec: &'a ApplicationEncryptionSpec,
    previous: &'a ApplicationEncryptionStatus,
) -> Subject<'a> {
    Subject {
        namespace: "ns",
        name: "orders",
        spec,
        generation: Some(1),
        previous: Some(previous),
        conflict: None,
        retry_update: None,
    }
}
