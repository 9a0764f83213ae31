//! The update lifecycle, PURE (no I/O, `now` is an input): whether the UpdateApplication a
//! plan wants may be made now, and whether an update already made has really ended.
//!
//! The planner says what AWS should look like; this gate adds what MSF's own history says
//! (issue 9, items 1, 2, 3, 6):
//! - **Rollbacks**: an update that MSF rolled back is not repeated for the same generation.
//!   The decision is also derived from AWS alone (the latest UpdateApplication operation,
//!   `ApplicationVersionRolledBackFrom`), so `apply` and a controller whose status was lost
//!   behave alike. A spec change (generation) after our own failed try, or a new value of
//!   the `msfcmk.dev/retry-update` annotation, allows exactly one more try.
//! - **Converged means done**: while MSF applies an update (UPDATING, operation in progress)
//!   the resource is `Updating`, not converged.
//! - **Eventual consistency**: after a key policy write, the update waits for the settle time.
//! - **State**: a RUNNING application with snapshots disabled is not restarted unless the spec
//!   says `allowStatelessRestart`.

use std::time::Duration;

use chrono::{DateTime, Utc};

use crate::api::condition_types::{ENCRYPTION_APPLIED, READY};
use crate::api::{ApplicationEncryptionSpec, LastUpdate, UpdateOutcome};
use crate::domain::{
    ApplicationLifecycle, ApplicationOperation, ApplicationStatus, AppliedKeyType,
    EncryptionUpdate, ObservedApplication, OperationStatus,
};
use crate::planner::{ConditionReport, ConditionStatus, Plan, Step, WAIT_FOR_STATUS};

/// How often to look while MSF applies an update.
pub const WAIT_FOR_UPDATE: Duration = Duration::from_secs(10);

/// What is known about past updates of the application.
#[derive(Clone, Copy, Debug)]
pub struct History<'a> {
    /// `status.lastUpdate`, already brought up to date with its operation ([`follow`]).
    pub recorded: Option<&'a LastUpdate>,
    /// The most recent UpdateApplication operation MSF lists (described when it failed);
    /// None when there is none or the history could not be read.
    pub latest: Option<&'a ApplicationOperation>,
    /// DescribeApplication's rollback markers and snapshot setting.
    pub lifecycle: &'a ApplicationLifecycle,
}

/// Everything the gate looks at besides the plan.
#[derive(Clone, Debug)]
pub struct GateInput<'a> {
    pub spec: &'a ApplicationEncryptionSpec,
    pub generation: Option<i64>,
    /// The value of the `msfcmk.dev/retry-update` annotation, if set.
    pub retry: Option<&'a str>,
    pub application: &'a ObservedApplication,
    pub history: History<'a>,
    /// When the policy of the desired key was last written by this controller, if known.
    pub policy_written_at: Option<DateTime<Utc>>,
    /// How long a written key policy is given to propagate before UpdateApplication.
    pub settle: Duration,
    pub now: DateTime<Utc>,
}

/// Applies the lifecycle rules to a plan: the planned UpdateApplication may become a wait or a
/// block, and a plan that looks converged may still be `Updating`.
pub fn gate(mut plan: Plan, input: &GateInput<'_>) -> Plan {
    let Some(index) = plan
        .steps
        .iter()
        .position(|s| matches!(s, Step::UpdateApplication(_)))
    else {
        return gate_applied(plan, input);
    };
    let Step::UpdateApplication(update) = &plan.steps[index] else {
        return plan;
    };
    // Settling comes before the history: the controller reads MSF's operations only for the
    // pass that may update.
    let verdict = stateless_restart(input)
        .or_else(|| settling(input, update))
        .or_else(|| rolled_back(input, target_of(update)))
        .or_else(|| operation_in_progress(input));
    if let Some(v) = verdict {
        plan.steps[index] = v.step();
        set(&mut plan, ENCRYPTION_APPLIED, &v);
        set(&mut plan, READY, &v);
    }
    plan
}

/// What replaces a planned update.
#[derive(Clone, Debug, PartialEq)]
struct Verdict {
    reason: &'static str,
    message: String,
    /// None: blocked (terminal); Some: look again after.
    wait: Option<Duration>,
}

impl Verdict {
    fn step(&self) -> Step {
        match self.wait {
            Some(after) => Step::Requeue {
                after,
                reason: self.reason.to_string(),
            },
            None => Step::Blocked {
                reason: self.reason.to_string(),
                message: self.message.clone(),
            },
        }
    }
}

fn set(plan: &mut Plan, type_: &'static str, v: &Verdict) {
    let report = ConditionReport {
        type_,
        status: ConditionStatus::False,
        reason: v.reason.to_string(),
        message: v.message.clone(),
    };
    match plan.conditions.iter_mut().find(|c| c.type_ == type_) {
        Some(c) => *c = report,
        None => plan.conditions.push(report),
    }
}

/// Item 6: a RUNNING application without snapshots would restart without its state.
fn stateless_restart(input: &GateInput<'_>) -> Option<Verdict> {
    let running = input.application.status == ApplicationStatus::Running;
    let no_snapshots = input.history.lifecycle.snapshots_enabled == Some(false);
    (running && no_snapshots && !input.spec.allow_stateless_restart).then(|| Verdict {
        reason: "WouldRestartWithoutState",
        message: format!(
            "switching the key restarts the RUNNING application {} and its snapshots are disabled, so it would restart without its state: enable snapshots (ApplicationSnapshotConfiguration), stop the application, or set spec.allowStatelessRestart: true",
            input.application.name
        ),
        wait: None,
    })
}

/// Item 1: the last try failed and nothing has authorised another one.
fn rolled_back(input: &GateInput<'_>, target: &str) -> Option<Verdict> {
    let failure = last_failure(&input.history)?;
    if retry_authorised(input, &failure) {
        return None;
    }
    let what = match &failure.operation_id {
        Some(id) => format!("UpdateApplication (operation {id})"),
        None => "the last UpdateApplication".to_string(),
    };
    let version = failure
        .version
        .map(|v| format!(" from version {v}"))
        .unwrap_or_default();
    let why = failure
        .message
        .clone()
        .unwrap_or_else(|| "MSF gave no reason".to_string());
    Some(Verdict {
        reason: "UpdateRolledBack",
        message: format!(
            "{what} failed and MSF rolled the application back{version}: {why}. The switch to {target} is not tried again for this generation: fix the cause, then change the spec or set the annotation msfcmk.dev/retry-update to a new value to try once more"
        ),
        wait: None,
    })
}

fn target_of(update: &EncryptionUpdate) -> &str {
    update.key_id.as_deref().unwrap_or("the AWS owned key")
}

/// A failed update, as the status record or AWS tells it.
#[derive(Clone, Debug, PartialEq)]
struct Failure {
    operation_id: Option<String>,
    version: Option<i64>,
    message: Option<String>,
    /// The status record describes this failure (our own try, of a known generation).
    recorded: bool,
}

fn last_failure(h: &History<'_>) -> Option<Failure> {
    let recorded = h
        .recorded
        .filter(|r| r.outcome == UpdateOutcome::RolledBack);
    // AWS alone: the latest UpdateApplication failed; with no readable history, the current
    // version being the result of a rollback says the same.
    let aws = match h.latest {
        Some(op) => (op.status == OperationStatus::Failed).then(|| Failure {
            operation_id: Some(op.operation_id.clone()),
            version: op.version_to.or(h.lifecycle.rolled_back_from),
            message: op.failure_message.clone(),
            recorded: false,
        }),
        None => h.lifecycle.rolled_back_from.map(|v| Failure {
            operation_id: None,
            version: Some(v),
            message: None,
            recorded: false,
        }),
    };
    let from_record = |r: &LastUpdate| Failure {
        operation_id: r.operation_id.clone(),
        version: r.version_id,
        message: r.message.clone(),
        recorded: true,
    };
    match (recorded, aws) {
        // The latest failure is ours when the operation ids agree (or AWS cannot say which).
        (Some(r), Some(a)) if a.operation_id.is_none() || a.operation_id == r.operation_id => {
            Some(from_record(r))
        }
        (_, Some(a)) => Some(a),
        (Some(r), None) => Some(from_record(r)),
        (None, None) => None,
    }
}

/// A spec change after our own failed try, or a retry annotation value not tried yet.
fn retry_authorised(input: &GateInput<'_>, failure: &Failure) -> bool {
    let tried = input.history.recorded.and_then(|r| r.retry.as_deref());
    let new_retry = input.retry.is_some_and(|v| Some(v) != tried);
    let new_generation = failure.recorded
        && input
            .history
            .recorded
            .is_some_and(|r| r.generation != input.generation);
    new_retry || new_generation
}

/// MSF refuses a second update while one is in progress; wait for it rather than fail.
fn operation_in_progress(input: &GateInput<'_>) -> Option<Verdict> {
    let op = input
        .history
        .latest
        .filter(|op| op.status == OperationStatus::InProgress)?;
    Some(Verdict {
        reason: "Updating",
        message: format!(
            "MSF is still applying UpdateApplication operation {}; looking again in {}s",
            op.operation_id,
            WAIT_FOR_UPDATE.as_secs()
        ),
        wait: Some(WAIT_FOR_UPDATE),
    })
}

/// Item 3: KMS is eventually consistent; MSF checks the key policy at UpdateApplication.
fn settling(input: &GateInput<'_>, update: &EncryptionUpdate) -> Option<Verdict> {
    if update.key_type != AppliedKeyType::CustomerManagedKey || input.settle.is_zero() {
        return None;
    }
    let written = input.policy_written_at?;
    let elapsed = (input.now - written).to_std().unwrap_or_default();
    let remaining = input.settle.checked_sub(elapsed)?;
    if remaining.is_zero() {
        return None;
    }
    Some(Verdict {
        reason: "WaitingForKeyPolicyPropagation",
        message: format!(
            "the key policy of {} was written {}s ago; KMS is eventually consistent, so the application is switched after the settle time ({}s), in {}s",
            update.key_id.as_deref().unwrap_or_default(),
            elapsed.as_secs(),
            input.settle.as_secs(),
            remaining.as_secs().max(1)
        ),
        wait: Some(remaining),
    })
}

/// Item 2: the application shows the desired key; is the change done?
fn gate_applied(mut plan: Plan, input: &GateInput<'_>) -> Plan {
    let applied = plan
        .conditions
        .iter()
        .any(|c| c.type_ == ENCRYPTION_APPLIED && c.status == ConditionStatus::True);
    if !applied {
        return rolled_back_while_waiting(plan, input);
    }
    if let Some(v) = still_updating(input) {
        if !plan.steps.iter().any(|s| matches!(s, Step::Requeue { .. })) {
            plan.steps.push(v.step());
        }
        set(&mut plan, ENCRYPTION_APPLIED, &v);
        set(&mut plan, READY, &v);
        return plan;
    }
    // A stopped application runs on nothing yet: say when the key starts to matter, where
    // `kubectl get` shows it (Ready) and on the condition itself.
    if input.application.status == ApplicationStatus::Ready
        && input.application.encryption.key_type == AppliedKeyType::CustomerManagedKey
    {
        for c in plan
            .conditions
            .iter_mut()
            .filter(|c| c.type_ == ENCRYPTION_APPLIED || c.type_ == READY)
        {
            c.message.push_str(
                "; the application is READY (not running): the key takes effect when it next starts",
            );
        }
    }
    plan
}

/// Our update for this generation was rolled back and MSF left the application in a status
/// that allows no update (e.g. ROLLED_BACK): that is the news, not "waiting for a status", and
/// nothing more will be tried, so it is blocked (a retry authorisation keeps the wait).
fn rolled_back_while_waiting(mut plan: Plan, input: &GateInput<'_>) -> Plan {
    let waiting = plan.steps.iter().position(
        |s| matches!(s, Step::Requeue { reason, .. } if reason == "WaitingForApplicationStatus"),
    );
    let ours = input
        .history
        .recorded
        .filter(|r| r.outcome == UpdateOutcome::RolledBack && r.generation == input.generation);
    let (Some(index), Some(r)) = (waiting, ours) else {
        return plan;
    };
    let target = r.key_arn.as_deref().unwrap_or("the AWS owned key");
    if let Some(v) = rolled_back(input, target) {
        plan.steps[index] = v.step();
        set(&mut plan, ENCRYPTION_APPLIED, &v);
        set(&mut plan, READY, &v);
    }
    plan
}

/// MSF still applying an update: UPDATING (or rolling back), or our operation not ended.
fn still_updating(input: &GateInput<'_>) -> Option<Verdict> {
    let status = &input.application.status;
    if matches!(
        status,
        ApplicationStatus::Updating | ApplicationStatus::RollingBack
    ) {
        return Some(Verdict {
            reason: "Updating",
            message: format!(
                "the application shows the desired key but MSF is still applying the update ({}); converged once it is READY or RUNNING and the operation SUCCESSFUL",
                status.as_wire()
            ),
            wait: Some(WAIT_FOR_UPDATE.min(WAIT_FOR_STATUS)),
        });
    }
    let ours = input
        .history
        .recorded
        .filter(|r| r.outcome == UpdateOutcome::InProgress)?;
    Some(Verdict {
        reason: "Updating",
        message: format!(
            "MSF has not yet reported operation {} as SUCCESSFUL",
            ours.operation_id.as_deref().unwrap_or("(no id)")
        ),
        wait: Some(WAIT_FOR_UPDATE),
    })
}

/// Brings a recorded update up to date with what MSF says about its operation (or, without
/// an operation id, about the application's version).
pub fn follow(
    recorded: &LastUpdate,
    operation: Option<&ApplicationOperation>,
    application: &ObservedApplication,
    lifecycle: &ApplicationLifecycle,
) -> LastUpdate {
    let mut r = recorded.clone();
    if r.outcome != UpdateOutcome::InProgress {
        return r;
    }
    match operation.map(|op| &op.status) {
        Some(OperationStatus::Successful) => r.outcome = UpdateOutcome::Successful,
        Some(OperationStatus::Failed) => {
            r.outcome = UpdateOutcome::RolledBack;
            r.message = operation.and_then(|op| op.failure_message.clone());
        }
        Some(OperationStatus::Cancelled) => r.outcome = UpdateOutcome::Cancelled,
        Some(_) => {}
        // No operation to follow: the version tells. Rolled back from ours is a failure; a
        // settled application at our version (or later) is done.
        None if r.version_id.is_some() && lifecycle.rolled_back_from == r.version_id => {
            r.outcome = UpdateOutcome::RolledBack;
        }
        None if application.status.is_updatable()
            && r.version_id.is_some_and(|v| application.version_id >= v) =>
        {
            r.outcome = UpdateOutcome::Successful;
        }
        None => {}
    }
    r
}

/// Whether MSF's operation history may hold anything that stops the update a plan wants, so
/// that it is worth a ListApplicationOperations call (issue 10: the call floor). A failed
/// update on MSF is rolled back, and the rollback marks the application's version
/// (`ApplicationVersionRolledBackFrom`); an update in progress shows UPDATING (or another
/// status that allows no update). With neither marker, and no update of ours recorded as
/// anything but a success, the latest UpdateApplication operation is SUCCESSFUL or there is
/// none: [`gate`] decides the same with or without it, and the rollback protection (item 1)
/// holds for `apply` and a lost status alike, from the marker.
pub fn needs_history(
    recorded: Option<&LastUpdate>,
    application: &ObservedApplication,
    lifecycle: &ApplicationLifecycle,
) -> bool {
    lifecycle.rolled_back_from.is_some()
        || recorded.is_some_and(|r| r.outcome != UpdateOutcome::Successful)
        || !application.status.is_updatable()
}

/// Whether a recorded update still in progress has ended, as the application alone shows it:
/// settled (READY or RUNNING) at the very version our UpdateApplication created, and not
/// rolled back. A rollback makes a new version and marks the application, so neither can be
/// missed; then no DescribeApplicationOperation is needed to know the update SUCCEEDED
/// (`follow(recorded, None, ..)` concludes it).
pub fn ended_at_its_version(
    recorded: &LastUpdate,
    application: &ObservedApplication,
    lifecycle: &ApplicationLifecycle,
) -> bool {
    recorded.outcome == UpdateOutcome::InProgress
        && application.status.is_updatable()
        && recorded.version_id == Some(application.version_id)
        && lifecycle.rolled_back_from.is_none()
}

/// The record of an update just accepted by MSF.
pub fn record(
    update: &EncryptionUpdate,
    generation: Option<i64>,
    retry: Option<&str>,
    operation_id: Option<String>,
    version_id: i64,
    now: DateTime<Utc>,
) -> LastUpdate {
    LastUpdate {
        generation,
        key_type: match update.key_type {
            AppliedKeyType::AwsOwnedKey => crate::api::KeyType::AwsOwnedKey,
            AppliedKeyType::CustomerManagedKey => crate::api::KeyType::CustomerManagedKey,
        },
        key_arn: update.key_id.clone(),
        operation_id,
        version_id: Some(version_id),
        time: now.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        outcome: UpdateOutcome::InProgress,
        message: None,
        retry: retry.map(str::to_string),
    }
}

/// Whether an UpdateApplication refusal reads like MSF checking a key policy it cannot see
/// yet (KMS propagation): AccessDenied, or an invalid argument / request naming the key or
/// permissions. Inside the propagation window after our write such a refusal is transient.
pub fn is_key_permission_refusal(code: &str, message: &str) -> bool {
    let m = message.to_ascii_lowercase();
    let names_key = ["kms", "key", "permission", "not authorized", "access"]
        .iter()
        .any(|w| m.contains(w));
    match code {
        "AccessDeniedException" | "AccessDenied" => true,
        "InvalidArgumentException" | "InvalidRequestException" => names_key,
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn app(status: ApplicationStatus, version_id: i64) -> ObservedApplication {
        ObservedApplication {
            name: "orders".into(),
            arn: "arn:aws:kinesisanalytics:us-east-1:111122223333:application/orders".into(),
            version_id,
            conditional_token: None,
            status,
            runtime_environment: "FLINK-1_20".into(),
            encryption: Default::default(),
        }
    }

    fn ours(outcome: UpdateOutcome, version_id: i64) -> LastUpdate {
        LastUpdate {
            generation: Some(1),
            key_type: crate::api::KeyType::CustomerManagedKey,
            key_arn: Some("arn:aws:kms:us-east-1:111122223333:key/k".into()),
            operation_id: Some("op-1".into()),
            version_id: Some(version_id),
            time: "2026-11-23T11:00:00Z".into(),
            outcome,
            message: None,
            retry: None,
        }
    }

    fn rolled_back_from(v: i64) -> ApplicationLifecycle {
        ApplicationLifecycle {
            rolled_back_from: Some(v),
            ..ApplicationLifecycle::default()
        }
    }

    #[test]
    fn the_history_is_read_only_when_a_marker_says_it_may_block() {
        let none = ApplicationLifecycle::default();
        let running = app(ApplicationStatus::Running, 3);
        // Nothing recorded, settled, no rollback marker: nothing to find.
        assert!(!needs_history(None, &running, &none));
        let done = ours(UpdateOutcome::Successful, 3);
        assert!(!needs_history(Some(&done), &running, &none));
        // A rollback happened (whoever made the update).
        assert!(needs_history(None, &running, &rolled_back_from(2)));
        // An update of ours that failed, was cancelled or has not ended.
        for outcome in [
            UpdateOutcome::RolledBack,
            UpdateOutcome::Cancelled,
            UpdateOutcome::InProgress,
        ] {
            assert!(needs_history(Some(&ours(outcome, 3)), &running, &none));
        }
        // MSF is applying someone's update, or the status allows none.
        for status in [
            ApplicationStatus::Updating,
            ApplicationStatus::RollingBack,
            ApplicationStatus::RolledBack,
            ApplicationStatus::Starting,
        ] {
            assert!(needs_history(None, &app(status, 3), &none));
        }
    }

    #[test]
    fn an_update_ends_by_its_version_only_settled_and_not_rolled_back() {
        let none = ApplicationLifecycle::default();
        let r = ours(UpdateOutcome::InProgress, 4);
        assert!(ended_at_its_version(
            &r,
            &app(ApplicationStatus::Running, 4),
            &none
        ));
        assert!(ended_at_its_version(
            &r,
            &app(ApplicationStatus::Ready, 4),
            &none
        ));
        // Still applying it.
        assert!(!ended_at_its_version(
            &r,
            &app(ApplicationStatus::Updating, 4),
            &none
        ));
        // A rollback makes a new version: the operation tells why.
        assert!(!ended_at_its_version(
            &r,
            &app(ApplicationStatus::Running, 5),
            &none
        ));
        assert!(!ended_at_its_version(
            &r,
            &app(ApplicationStatus::Running, 4),
            &rolled_back_from(4)
        ));
        // Already concluded.
        let done = ours(UpdateOutcome::Successful, 4);
        assert!(!ended_at_its_version(
            &done,
            &app(ApplicationStatus::Running, 4),
            &none
        ));
        // What follow() then concludes from the version alone.
        let followed = follow(&r, None, &app(ApplicationStatus::Running, 4), &none);
        assert_eq!(followed.outcome, UpdateOutcome::Successful);
    }
}
