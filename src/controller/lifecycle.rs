//! Following MSF's update operations (I/O): the reads the update lifecycle needs, and this
//! process's memory of its key policy writes. The decisions are pure and live in
//! [`crate::planner::lifecycle`]; this module only fetches what they look at.
//!
//! Reads are lazy, so a converged resource costs no extra call:
//! - DescribeApplicationOperation of the recorded update while it is in progress (follow it),
//!   unless the application already shows it ended: settled at its version, not rolled back;
//! - ListApplicationOperations (and DescribeApplicationOperation of the latest one when it
//!   failed) only when a plan wants to call UpdateApplication and a marker says the history
//!   may stop it (a rollback, an update of ours that did not succeed, a status that allows no
//!   update): the decision not to repeat a rolled back update must hold without any status
//!   (`apply`, a lost status), and the rollback marker carries it there.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use chrono::{DateTime, Utc};

use crate::api::{
    ApplicationEncryption, ApplicationEncryptionStatus, KeyPolicyWrite, LastUpdate, UpdateOutcome,
};
use crate::aws::AwsError;
use crate::controller::context::Core;
use crate::controller::restart_budget::{self, Admission};
use crate::domain::{
    ApplicationLifecycle, ApplicationOperation, ApplicationStatus, EncryptionUpdate, ErrorCategory,
    Observed, ObservedApplication, OperationStatus,
};
use crate::planner::lifecycle::{self as rules, GateInput, History};
use crate::planner::{Plan, Step};

/// When this process last wrote each key's policy. A restarted controller does not know what
/// it wrote just before; its start time stands in for that write where a refusal is judged.
pub struct PolicyWrites {
    started: DateTime<Utc>,
    writes: Mutex<HashMap<String, DateTime<Utc>>>,
}

impl PolicyWrites {
    pub fn new(started: DateTime<Utc>) -> Self {
        Self {
            started,
            writes: Mutex::new(HashMap::new()),
        }
    }

    pub fn record(&self, key_arn: &str, at: DateTime<Utc>) {
        if let Ok(mut w) = self.writes.lock() {
            w.insert(key_arn.to_string(), at);
        }
    }

    pub fn last(&self, key_arn: &str) -> Option<DateTime<Utc>> {
        self.writes.lock().ok()?.get(key_arn).copied()
    }

    pub fn started(&self) -> DateTime<Utc> {
        self.started
    }
}

/// The last write of `key_arn`'s policy known to this process or to the resource's status.
pub fn policy_written_at(
    core: &Core,
    previous: Option<&ApplicationEncryptionStatus>,
    key_arn: &str,
) -> Option<DateTime<Utc>> {
    let from_status = previous
        .and_then(|p| p.last_key_policy_write.as_ref())
        .filter(|w| w.key_arn == key_arn)
        .and_then(|w| DateTime::parse_from_rfc3339(&w.time).ok())
        .map(|t| t.with_timezone(&Utc));
    core.policy_writes.last(key_arn).max(from_status)
}

/// The status record of a key policy write. Milliseconds: the settle time is seconds long,
/// and a time rounded down would shorten it after a restart.
pub fn policy_write(key_arn: &str, at: DateTime<Utc>) -> KeyPolicyWrite {
    KeyPolicyWrite {
        key_arn: key_arn.to_string(),
        time: at.to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
    }
}

/// Where the update lifecycle of one reconcile stands.
pub struct Tracker {
    pub lifecycle: ApplicationLifecycle,
    /// `status.lastUpdate`, followed; replaced when this reconcile updates.
    pub recorded: Option<LastUpdate>,
    /// The most recent UpdateApplication operation, once the history was read.
    pub latest: Option<ApplicationOperation>,
    history_read: bool,
    /// A transient failure reading the history: no update is made blind.
    pub history_error: Option<AwsError>,
}

impl Tracker {
    /// Starts from the status record and follows its operation if it has not ended.
    pub async fn start(
        core: &Core,
        region: &str,
        previous: Option<&LastUpdate>,
        application: &Observed<ObservedApplication>,
        lifecycle: ApplicationLifecycle,
    ) -> Self {
        let mut recorded = previous.cloned();
        if let (Some(r), Some(app)) = (recorded.as_mut(), application.found())
            && rules::ended_at_its_version(r, app, &lifecycle)
        {
            // Settled at the version our update made, not rolled back: it succeeded, no
            // DescribeApplicationOperation needed.
            *r = rules::follow(r, None, app, &lifecycle);
        } else if let (Some(r), Some(app)) = (recorded.as_mut(), application.found())
            && r.outcome == UpdateOutcome::InProgress
        {
            let op = match &r.operation_id {
                Some(id) => {
                    core.msf
                        .describe_application_operation(region, &app.name, id)
                        .await
                }
                None => Err(no_operation_id()),
            };
            match op {
                Ok(op) => *r = rules::follow(r, Some(&op), app, &lifecycle),
                // Asked again at the next pass.
                Err(e) if e.category != ErrorCategory::Terminal => {}
                // The operation cannot be read (no id, forgotten by MSF, not permitted): the
                // application's version tells, so a record never stays in progress forever.
                Err(_) => *r = rules::follow(r, None, app, &lifecycle),
            }
        }
        if let Some(app) = application.found() {
            let ours = recorded
                .as_ref()
                .is_some_and(|r| r.outcome == UpdateOutcome::InProgress);
            let in_progress = restart_budget::in_progress(&app.status);
            core.restart_budget
                .observe(region, &app.name, in_progress, ours);
            report_slots(core, region);
        }
        Self {
            lifecycle,
            recorded,
            latest: None,
            history_read: false,
            history_error: None,
        }
    }

    /// Reads the operation history once per reconcile (only needed before an update).
    pub async fn read_history(&mut self, core: &Core, region: &str, application_name: &str) {
        if self.history_read {
            return;
        }
        self.history_read = true;
        let ops = match core
            .msf
            .list_application_operations(region, application_name, "UpdateApplication")
            .await
        {
            Ok(ops) => ops,
            Err(e) if e.category == ErrorCategory::Terminal => {
                // E.g. an IAM policy from before ListApplicationOperations was granted: decide
                // from ApplicationVersionRolledBackFrom alone, and say so in the log.
                tracing::warn!(error = %e, "cannot read the operation history; relying on ApplicationVersionRolledBackFrom");
                return;
            }
            Err(e) => {
                self.history_error = Some(e);
                return;
            }
        };
        let Some(mut latest) = ops.into_iter().next() else {
            return;
        };
        if latest.status == OperationStatus::Failed && latest.failure_message.is_none() {
            latest = self
                .failure_details(core, region, application_name, latest)
                .await;
        }
        self.latest = Some(latest);
    }

    /// MSF's failure message of a failed operation: from the record if it is ours, else read.
    async fn failure_details(
        &self,
        core: &Core,
        region: &str,
        application_name: &str,
        summary: ApplicationOperation,
    ) -> ApplicationOperation {
        let known = self
            .recorded
            .as_ref()
            .filter(|r| r.operation_id.as_deref() == Some(summary.operation_id.as_str()))
            .and_then(|r| r.message.clone());
        if let Some(message) = known {
            return ApplicationOperation {
                failure_message: Some(message),
                ..summary
            };
        }
        core.msf
            .describe_application_operation(region, application_name, &summary.operation_id)
            .await
            .unwrap_or(summary)
    }

    /// Records an update MSF just accepted.
    pub fn updated(
        &mut self,
        update: &EncryptionUpdate,
        gate: &GateContext<'_>,
        operation_id: Option<String>,
        version_id: i64,
    ) {
        let record = rules::record(
            update,
            gate.generation,
            gate.retry,
            operation_id.clone(),
            version_id,
            gate.now,
        );
        self.latest = operation_id.map(|id| ApplicationOperation {
            operation_id: id,
            operation: "UpdateApplication".into(),
            status: OperationStatus::InProgress,
            start_time: Some(gate.now),
            end_time: None,
            version_from: None,
            version_to: Some(version_id),
            failure_message: None,
            rollback_operation_id: None,
        });
        self.history_read = true;
        self.recorded = Some(record);
    }

    fn history(&self) -> History<'_> {
        History {
            recorded: self.recorded.as_ref(),
            latest: self.latest.as_ref(),
            lifecycle: &self.lifecycle,
        }
    }
}

/// Takes a restart slot (rollout budget) for `update` of `application`, just before the call;
/// `Some((in_use, limit))` when every slot is taken and the update must wait.
pub fn take_restart_slot(
    core: &Core,
    update: &EncryptionUpdate,
    application: &Observed<ObservedApplication>,
) -> Option<(usize, u32)> {
    let app = application.found()?;
    let admission =
        core.restart_budget
            .admit(&update.region, &update.application_name, &app.status);
    report_slots(core, &update.region);
    match admission {
        Admission::Full { in_use, limit } => Some((in_use, limit)),
        Admission::Granted | Admission::NoRestart => None,
    }
}

/// Once per process (`run`, before its first reconcile, with every status of its cache): the
/// updates of ours a previous process left in progress hold their restart slots, in the
/// account each namespace acts in. See [`restart_budget`].
pub fn seed_restart_budget(core: &Core, objects: &[std::sync::Arc<ApplicationEncryption>]) {
    if !core.restart_budget.first_seeding() {
        return;
    }
    for o in objects {
        let Some(status) = &o.status else { continue };
        let ours = status
            .last_update
            .as_ref()
            .is_some_and(|u| u.outcome == UpdateOutcome::InProgress);
        let updating = status
            .application
            .as_ref()
            .and_then(|a| a.status.as_deref())
            .is_some_and(|s| restart_budget::in_progress(&ApplicationStatus::from_wire(s)));
        if !(ours && updating) {
            continue;
        }
        let namespace = o.metadata.namespace.as_deref().unwrap_or_default();
        let core = core.for_namespace(namespace);
        let region = o
            .spec
            .region
            .clone()
            .filter(|r| !r.is_empty())
            .unwrap_or_else(|| core.defaults.region.clone());
        core.restart_budget
            .observe(&region, &o.spec.application_name, true, true);
        report_slots(core, &region);
    }
}

/// The rollout budget's gauge for `region`.
pub fn report_slots(core: &Core, region: &str) {
    core.metrics
        .set_restart_slots(&core.caller, region, core.restart_budget.in_use(region));
}

fn no_operation_id() -> AwsError {
    AwsError {
        category: ErrorCategory::Terminal,
        operation: "DescribeApplicationOperation",
        code: "NoOperationId".into(),
        message: "UpdateApplication returned no OperationId".into(),
    }
}

/// What the gate needs from the reconcile besides the tracker.
#[derive(Clone, Debug)]
pub struct GateContext<'a> {
    pub spec: &'a crate::api::ApplicationEncryptionSpec,
    pub generation: Option<i64>,
    pub retry: Option<&'a str>,
    pub region: &'a str,
    pub policy_written_at: Option<DateTime<Utc>>,
    pub settle: Duration,
    pub now: DateTime<Utc>,
}

/// Applies the lifecycle rules to a plan, reading the operation history first when the plan
/// wants to update the application.
pub async fn gate(
    core: &Core,
    tracker: &mut Tracker,
    ctx: &GateContext<'_>,
    application: &Observed<ObservedApplication>,
    plan: Plan,
) -> Plan {
    let Some(app) = application.found() else {
        return plan;
    };
    let wants_update = plan
        .steps
        .iter()
        .any(|s| matches!(s, Step::UpdateApplication(_)));
    // While a written policy settles no update is made: the history can wait for the pass
    // that would make one. And it is read only when something says it may stop the update: a
    // failed update on MSF is rolled back and marks the version (ApplicationVersionRolledBackFrom),
    // one in progress shows UPDATING; with neither marker (and no update of ours that did not
    // succeed) the history holds no failure that could block it (`rules::needs_history`).
    if wants_update
        && !settling(ctx)
        && rules::needs_history(tracker.recorded.as_ref(), app, &tracker.lifecycle)
    {
        tracker.read_history(core, ctx.region, &app.name).await;
    }
    rules::gate(
        plan,
        &GateInput {
            spec: ctx.spec,
            generation: ctx.generation,
            retry: ctx.retry,
            application: app,
            history: tracker.history(),
            policy_written_at: ctx.policy_written_at,
            settle: ctx.settle,
            now: ctx.now,
        },
    )
}

fn settling(ctx: &GateContext<'_>) -> bool {
    !ctx.settle.is_zero()
        && ctx.policy_written_at.is_some_and(|at| {
            (ctx.now - at)
                .to_std()
                .map_or(true, |elapsed| elapsed < ctx.settle)
        })
}

/// The reason, message and category of a refused UpdateApplication. A refusal for key
/// permissions shortly after our key policy write is KMS propagation: transient, retried with
/// backoff; after the window it is what it says.
pub fn update_failure(
    core: &Core,
    error: &AwsError,
    written_at: Option<DateTime<Utc>>,
    now: DateTime<Utc>,
) -> (String, String, ErrorCategory) {
    let start = core
        .settings
        .writes_before_start_unknown
        .then(|| core.policy_writes.started());
    let within = written_at.max(start).is_some_and(|since| {
        now < since
            || (now - since)
                .to_std()
                .is_ok_and(|d| d < core.settings.propagation_window)
    });
    if error.category == ErrorCategory::Terminal
        && within
        && rules::is_key_permission_refusal(&error.code, &error.message)
    {
        return (
            "WaitingForKeyPolicyPropagation".into(),
            format!(
                "{error} (within {}s of a key policy write KMS may not have propagated it yet: retrying with backoff)",
                core.settings.propagation_window.as_secs()
            ),
            ErrorCategory::Transient,
        );
    }
    (
        "EncryptionUpdateFailed".into(),
        error.to_string(),
        error.category,
    )
}

/// Whether the cleanup's revert to the AWS owned key (`deletionPolicy: RevertToAwsOwnedKey`)
/// may be made now, by the same rules as any update: not without the job's state, not again
/// after MSF rolled it back (a cleanup writes no status, so only MSF's history counts and no
/// annotation authorises a retry: `deletionPolicy: Retain` lets the deletion finish), not while
/// an update runs. `Err((reason, message))` when it may not.
pub async fn revert_allowed(
    core: &Core,
    spec: &crate::api::ApplicationEncryptionSpec,
    region: &str,
    description: &crate::domain::ApplicationDescription,
    update: &EncryptionUpdate,
) -> Result<(), (String, String)> {
    let app = &description.application;
    let mut tracker = Tracker {
        lifecycle: description.lifecycle.clone(),
        recorded: None,
        latest: None,
        history_read: false,
        history_error: None,
    };
    // The same rule as `gate`: without a rollback marker or a status that allows no update,
    // the history has nothing that could stop the revert.
    if rules::needs_history(None, app, &tracker.lifecycle) {
        tracker.read_history(core, region, &app.name).await;
    }
    if let Some(e) = tracker.history_error.take() {
        return Err(("AwsUnavailable".into(), e.to_string()));
    }
    let plan = Plan {
        steps: vec![Step::UpdateApplication(update.clone())],
        conditions: Vec::new(),
        key_policy: None,
    };
    let gated = rules::gate(
        plan,
        &GateInput {
            spec,
            generation: None,
            retry: None,
            application: app,
            history: tracker.history(),
            policy_written_at: None,
            settle: Duration::ZERO,
            now: Utc::now(),
        },
    );
    match gated.steps.first() {
        Some(Step::Blocked { reason, message }) => Err((reason.clone(), message.clone())),
        Some(Step::Requeue { reason, .. }) => Err((
            reason.clone(),
            "MSF is still applying an update; the revert waits for it".into(),
        )),
        _ => Ok(()),
    }
}
