//! The reconcile of one `ApplicationEncryption`, independent of Kubernetes:
//!
//! ```text
//! admit (tenancy, conflict; pure) -> observe (reads) -> plan (pure) -> apply one write step
//!        -> re-plan from what AWS now says ... -> status (pure) + events + what to do next
//! ```
//!
//! Used by `run` (the kube-runtime controller wraps it with finalizer, status patch and events)
//! and by `plan` / `apply` (manifests on disk). Only `observe` and `apply` do I/O.
//!
//! Why re-plan after each write instead of executing the whole plan blindly: the status must
//! tell the truth, and the truth after a write is what AWS answers (the key policy re-read to
//! verify, the application as MSF describes it after UpdateApplication, e.g. UPDATING). It also
//! makes a crash between PutKeyPolicy and UpdateApplication harmless: the next reconcile reads
//! a compliant policy and plans only the update.

use std::time::Duration;

use chrono::{DateTime, Utc};

use crate::api::{
    ApplicationEncryptionSpec, ApplicationEncryptionStatus, KeyPolicyMode, KeyPolicyWrite, KeyType,
    condition_types,
};
use crate::controller::claims;
use crate::controller::context::Core;
use crate::controller::key_locks::KeyGuard;
use crate::controller::key_write::{self, Attempt};
use crate::controller::observe::{self, kms_region};
use crate::controller::status::{self, StatusInput};
use crate::controller::tenancy::KeyVerdict;
use crate::controller::{apply, lifecycle, restart_budget};
use crate::domain::{
    ApplicationDescription, AppliedKeyType, ErrorCategory, Observed, ObservedApplication,
    ObservedKey,
};
use crate::planner::operator::{self, OperatorInput};
use crate::planner::{self, CoTenant, ConditionReport, ConditionStatus, Plan, PlanInput, Step};

/// Requeue while a write just happened but another is still wanted (e.g. MSF still reports
/// the old key right after the update): short, the application is changing.
const SHORT_REQUEUE: Duration = Duration::from_secs(15);

/// Guards against a plan that keeps asking for writes; a real reconcile needs at most 4 passes
/// (re-read, put, update, final), plus one per key policy write another writer overtook
/// (`key_write::MAX_OVERTAKEN`).
const MAX_PASSES: usize = 8;

/// The resource being reconciled.
#[derive(Clone, Debug)]
pub struct Subject<'a> {
    pub namespace: &'a str,
    pub name: &'a str,
    pub spec: &'a ApplicationEncryptionSpec,
    pub generation: Option<i64>,
    pub previous: Option<&'a ApplicationEncryptionStatus>,
    /// Set by the caller when another resource keeps the same application and region
    /// (`claims::conflict_of`).
    pub conflict: Option<String>,
    /// The `msfcmk.dev/retry-update` annotation: a new value allows one more update after MSF
    /// rolled one back.
    pub retry_update: Option<&'a str>,
}

/// Another resource of the same controller, a possible co-tenant of the key.
#[derive(Clone, Debug)]
pub struct Peer {
    pub namespace: String,
    pub name: String,
    pub spec: ApplicationEncryptionSpec,
    /// Already acts on its application (a status that is not a Conflict or a refusal); wins
    /// a conflict over a new claim. Always false in `plan`/`apply` (files have no status).
    pub incumbent: bool,
    /// Being deleted: still holds its application (cleanup may revert it) but is nobody's
    /// co-tenant any more.
    pub deleting: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// Make the planned changes.
    Execute,
    /// Plan only (the `plan` command): reads, no write.
    DryRun,
}

/// What the reconcile concluded about when to look again.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Next {
    /// Nothing to do: steady-state resync.
    Converged,
    /// A transient state (application UPDATING, ...): look again soon.
    Waiting(Duration),
    /// Terminal: needs a spec change or a fix made in AWS.
    Blocked,
    /// A call failed; transient and conflict errors back off, terminal ones wait.
    Failed(ErrorCategory),
    /// Tenancy guard or conflict: nothing in AWS was touched.
    Refused,
    /// Dry run: writes are pending.
    Pending,
}

impl Next {
    /// The kstatus reading of where the reconcile stopped: what `Reconciling`/`Stalled` say.
    pub fn progress(&self) -> status::Progress {
        match self {
            Next::Converged => status::Progress::Current,
            // Dry run: the writes are pending, so work is still in flight.
            Next::Waiting(_) | Next::Pending => status::Progress::InProgress,
            Next::Failed(ErrorCategory::Transient | ErrorCategory::Conflict) => {
                status::Progress::InProgress
            }
            Next::Blocked
            | Next::Refused
            | Next::Failed(ErrorCategory::Terminal | ErrorCategory::Configuration) => {
                status::Progress::Stalled
            }
        }
    }
}

/// A Kubernetes Event to publish (data; `run` publishes, `apply` prints).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Note {
    pub warning: bool,
    pub reason: String,
    pub action: String,
    pub message: String,
}

#[derive(Clone, Debug)]
pub struct Outcome {
    pub status: ApplicationEncryptionStatus,
    pub events: Vec<Note>,
    pub next: Next,
    /// The plan made from the first observation (what `plan` shows).
    pub first_plan: Option<Plan>,
    pub key_policy_writes: u32,
    pub application_updates: u32,
    /// The resolved ARN of the desired key, when known.
    pub desired_key_arn: Option<String>,
    /// The application as our UpdateApplication's answer described it (the new version, with
    /// its lifecycle markers), when this reconcile updated it.
    pub accepted: Option<ApplicationDescription>,
    /// What this reconcile's own DescribeApplication said (none when it used a hint).
    pub described: Option<ApplicationDescription>,
    /// The reads that failed, whose last observations the status keeps
    /// ([`keep_last_observed`]).
    pub failed_reads: FailedReads,
}

/// Which of a reconcile's reads failed (the status keeps their last observations).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FailedReads {
    pub application: bool,
    pub key_policy: bool,
}

impl FailedReads {
    /// Whether the status needs a previous observation that the read could not renew.
    pub fn any(self) -> bool {
        self.application || self.key_policy
    }
}

impl Outcome {
    /// The status' Ready condition status ("True", "False", "Unknown").
    pub fn ready(&self) -> &str {
        status::ready(&self.status).map_or("Unknown", |c| c.status.as_str())
    }
}

/// What was read, updated as writes happen.
struct Observation {
    application: Observed<ObservedApplication>,
    desired_key: Observed<ObservedKey>,
    current_key: Observed<ObservedKey>,
    /// The policy of the key being left, while a switch away from a CMK is pending.
    current_key_policy: Observed<String>,
    key_policy: Observed<String>,
    policy_fresh: bool,
}

pub async fn reconcile(
    core: &Core,
    subject: &Subject<'_>,
    peers: &[Peer],
    mode: Mode,
    now: DateTime<Utc>,
) -> Outcome {
    reconcile_observed(core, subject, peers, mode, now, None).await
}

/// [`reconcile`], observing the application through `hint` instead of DescribeApplication
/// when the caller holds an exact observation of it (`apply`'s wait for an update:
/// [`crate::controller::update_watch`]).
pub async fn reconcile_observed(
    core: &Core,
    subject: &Subject<'_>,
    peers: &[Peer],
    mode: Mode,
    now: DateTime<Utc>,
    hint: Option<ApplicationDescription>,
) -> Outcome {
    // The namespace's account (accounts file), else the pod's own identity.
    let core = core.for_namespace(subject.namespace);
    let spec = subject.spec;
    let region = spec
        .region
        .clone()
        .filter(|r| !r.is_empty())
        .unwrap_or_else(|| core.defaults.region.clone());
    if region.is_empty() {
        return refused(
            subject,
            "RegionUnknown",
            "spec.region is not set and the controller has no default region (--region / AWS_REGION).",
            now,
        );
    }

    // Admission: the account guard, tenancy (application, then key) and conflicts, before
    // anything in AWS.
    if let Some(scope) = &core.account
        && let Err(msg) = scope.check(subject.namespace, &region, spec.key_id.as_deref())
    {
        return refused(subject, "NotPermitted", &msg, now);
    }
    if let Err(msg) = core
        .tenancy
        .check_application(subject.namespace, &spec.application_name)
    {
        return refused(subject, "NotPermitted", &msg, now);
    }
    if let Some(role) = spec.key_policy.operator_role_arn.as_deref()
        && let Err(msg) = core.tenancy.check_operator_role(
            subject.namespace,
            role,
            application_account(core).as_deref(),
        )
    {
        return refused(subject, "NotPermitted", &msg, now);
    }
    if let Some(msg) = &subject.conflict {
        return refused(subject, "Conflict", msg, now);
    }
    let mut desired_key = None;
    if let (KeyType::CustomerManagedKey, Some(key_id)) = (spec.key_type, spec.key_id.as_deref()) {
        match core.tenancy.check_key(subject.namespace, key_id, None) {
            KeyVerdict::Permitted => {}
            KeyVerdict::NotPermitted(msg) => return refused(subject, "NotPermitted", &msg, now),
            KeyVerdict::NeedsResolvedArn => {
                // A read-only DescribeKey: an alias may point at a permitted key.
                let k = observe::describe_key(core, &kms_region(key_id, &region), key_id).await;
                if let Observed::Found(found) = &k
                    && let KeyVerdict::NotPermitted(msg) =
                        core.tenancy
                            .check_key(subject.namespace, key_id, Some(&found.arn))
                {
                    return refused(subject, "NotPermitted", &msg, now);
                }
                match &k {
                    Observed::Found(_) => {}
                    Observed::Failed {
                        category: ErrorCategory::Transient,
                        message,
                        ..
                    } => {
                        let msg = format!(
                            "Key {key_id} could not be resolved to check it against the tenancy configuration, because AWS did not answer ({message}); retrying."
                        );
                        return undecided(subject, &msg, now);
                    }
                    _ => {
                        let msg = format!(
                            "Key {key_id} could not be resolved to check it against the tenancy configuration."
                        );
                        return refused(subject, "NotPermitted", &msg, now);
                    }
                }
                desired_key = Some(k);
            }
        }
    }

    // Observe.
    let observed_itself = hint.is_none();
    let (application, desired_key, current_key, app_lifecycle) =
        observe::application_and_keys(core, spec, &region, desired_key, hint).await;
    let described = match (&application, observed_itself) {
        (Observed::Found(a), true) => Some(ApplicationDescription {
            application: a.clone(),
            lifecycle: app_lifecycle.clone(),
        }),
        _ => None,
    };
    let desired_key_arn = desired_key.found().map(|k| k.arn.clone());
    let current_key_policy =
        observe::leaving_key_policy(core, spec, &desired_key, &current_key).await;
    let caller = core.caller.get();
    let mut obs = Observation {
        application,
        desired_key,
        current_key,
        current_key_policy,
        key_policy: Observed::Skipped,
        policy_fresh: false,
    };
    let mut tracker = lifecycle::Tracker::start(
        core,
        &region,
        subject.previous.and_then(|p| p.last_update.as_ref()),
        &obs.application,
        app_lifecycle,
    )
    .await;
    let mut policy_written: Option<KeyPolicyWrite> = None;
    let co_tenants = match obs.desired_key.found() {
        Some(k) if spec.key_policy.mode == KeyPolicyMode::Enforce => {
            co_tenants(core, subject, &region, k, peers).await
        }
        _ => Vec::new(),
    };

    // The key's lock is held from the policy read through the write and its verification, so
    // two applications of one key never write from the same stale read.
    let mut guard: Option<KeyGuard> = None;
    if observe::reads_policy(spec, &obs.desired_key)
        && let Some(k) = obs.desired_key.found()
    {
        let g = core.key_locks.lock(&k.arn).await;
        let (policy, fresh) = observe::key_policy(core, &g, &k.region).await;
        obs.key_policy = policy;
        obs.policy_fresh = fresh;
        if mode == Mode::Execute && spec.key_policy.mode == KeyPolicyMode::Enforce {
            guard = Some(g);
        }
    }

    let mut first_plan: Option<Plan> = None;
    let mut events = Vec::new();
    let mut failure: Option<(String, String, ErrorCategory)> = None;
    let mut puts = 0u32;
    let mut overtaken = 0u32;
    let mut updates = 0u32;
    let mut updated: Option<ApplicationDescription> = None;
    let mut passes = 0usize;
    let final_plan = loop {
        passes += 1;
        let plan = plan_within_capacity(&PlanInput {
            spec,
            generation: subject.generation,
            defaults: &core.defaults,
            application: &obs.application,
            desired_key: &obs.desired_key,
            current_key: &obs.current_key,
            key_policy: &obs.key_policy,
            co_tenants: &co_tenants,
            instance: &core.instance,
            now,
        });
        // Who calls, and the key being left: drops the writes the operator may not make.
        let plan = operator::gate(
            plan,
            &OperatorInput {
                spec,
                defaults: &core.defaults,
                caller: caller.as_ref(),
                application: &obs.application,
                current_key: &obs.current_key,
                current_key_policy: &obs.current_key_policy,
            },
        );
        let written_at = desired_key_arn
            .as_deref()
            .and_then(|k| lifecycle::policy_written_at(core, subject.previous, k));
        let gate = lifecycle::GateContext {
            spec,
            generation: subject.generation,
            retry: subject.retry_update,
            region: &region,
            policy_written_at: written_at,
            settle: core.settings.policy_settle,
            now,
        };
        let plan = lifecycle::gate(core, &mut tracker, &gate, &obs.application, plan).await;
        if let Some(e) = tracker.history_error.take() {
            failure = Some(("AwsUnavailable".into(), e.to_string(), e.category));
            break plan;
        }
        if first_plan.is_none() {
            first_plan = Some(plan.clone());
        }
        if mode == Mode::DryRun || passes >= MAX_PASSES {
            break plan;
        }
        match plan.steps.first() {
            Some(Step::PutKeyPolicy {
                region: key_region,
                key_arn,
                policy,
                applications,
                changed_sids,
            }) => {
                let Some(g) = guard.as_ref().filter(|g| &g.key_arn == key_arn) else {
                    failure = Some((
                        "KeyPolicyUpdateFailed".into(),
                        format!(
                            "The plan wants to write the policy of {key_arn}, which this reconcile did not lock; retrying."
                        ),
                        ErrorCategory::Transient,
                    ));
                    break plan;
                };
                // A write overtaken by another writer's may be made again (key_write).
                if puts > overtaken {
                    failure = Some((
                        "KeyPolicyNotVerified".into(),
                        format!(
                            "The policy of {key_arn} still lacks the required statements after PutKeyPolicy (re-read to verify); another writer may be changing it."
                        ),
                        ErrorCategory::Conflict,
                    ));
                    break plan;
                }
                // Permit, re-read, write, re-read: see key_write for what each step guards.
                let (reread, raced) = match key_write::write(
                    core,
                    g,
                    key_region,
                    &obs.key_policy,
                    obs.policy_fresh,
                    policy,
                )
                .await
                {
                    Attempt::Replan { policy, concurrent } => {
                        obs.key_policy = policy;
                        obs.policy_fresh = true;
                        events.extend(concurrent);
                        continue;
                    }
                    Attempt::Failed(e) => {
                        failure = Some(("KeyPolicyUpdateFailed".into(), e.to_string(), e.category));
                        break plan;
                    }
                    Attempt::Written { reread } => (reread, None),
                    Attempt::Overtaken { reread, note } => (reread, Some(note)),
                };
                puts += 1;
                let at = Utc::now();
                core.policy_writes.record(key_arn, at);
                policy_written = Some(lifecycle::policy_write(key_arn, at));
                obs.key_policy = reread;
                obs.policy_fresh = true;
                events.push(Note {
                    warning: false,
                    reason: "KeyPolicyUpdated".into(),
                    action: "PutKeyPolicy".into(),
                    message: format!(
                        "Added or repaired statements {} for {} in the policy of {key_arn}.",
                        list(changed_sids),
                        list(applications)
                    ),
                });
                if let Some(note) = raced {
                    // Theirs is kept: the next pass plans from it and re-adds only ours.
                    events.push(note);
                    overtaken += 1;
                    if overtaken > key_write::MAX_OVERTAKEN {
                        failure = Some((
                            key_write::REASON.into(),
                            format!(
                                "The policy of {key_arn} kept being changed by another writer right after PutKeyPolicy ({overtaken} times in this reconcile); retrying later."
                            ),
                            ErrorCategory::Conflict,
                        ));
                        break plan;
                    }
                    tokio::time::sleep(key_write::overtaken_backoff(overtaken - 1)).await;
                }
            }
            Some(Step::UpdateApplication(update)) => {
                // The policy is settled: do not hold the key while MSF works.
                guard = None;
                if updates > 0 {
                    break plan;
                }
                // The rollout budget: a restart waits for a slot (a requeue, no call).
                if let Some((in_use, limit)) =
                    lifecycle::take_restart_slot(core, update, &obs.application)
                {
                    break restart_budget::waiting(plan, in_use, limit, &region);
                }
                match apply::update_application(core, update).await {
                    Ok(accepted) => {
                        updates += 1;
                        let app = accepted.application;
                        updated = Some(ApplicationDescription {
                            application: app.clone(),
                            lifecycle: accepted.lifecycle,
                        });
                        tracker.updated(update, &gate, accepted.operation_id, app.version_id);
                        events.push(Note {
                            warning: false,
                            reason: "EncryptionUpdated".into(),
                            action: "UpdateApplication".into(),
                            message: format!(
                                "Switched application {} to {} (UpdateApplication; the application restarts if it was running).",
                                update.application_name,
                                update.key_id.as_deref().unwrap_or("the AWS owned key")
                            ),
                        });
                        obs.current_key = match app.encryption.key_type {
                            AppliedKeyType::CustomerManagedKey => match &obs.desired_key {
                                Observed::Found(_) => obs.desired_key.clone(),
                                _ => Observed::Skipped,
                            },
                            AppliedKeyType::AwsOwnedKey => Observed::Skipped,
                        };
                        obs.application = Observed::Found(app);
                    }
                    Err(e) => {
                        failure = Some(lifecycle::update_failure(core, &e, written_at, now));
                        break plan;
                    }
                }
            }
            _ => break plan,
        }
    };
    drop(guard);

    let next = next_action(
        &final_plan,
        &obs,
        failure.as_ref().map(|f| f.2),
        mode,
        updates,
    );
    let conditions: Vec<ConditionReport> = match &failure {
        Some((reason, message, _)) => {
            status::with_failed_ready(&final_plan.conditions, reason, message)
        }
        None => final_plan.conditions.clone(),
    };
    let mut status = status::build(&StatusInput {
        previous: subject.previous,
        generation: subject.generation,
        conditions: &conditions,
        application: obs.application.found(),
        current_key: obs.current_key.found(),
        key_policy: final_plan.key_policy.as_ref(),
        progress: next.progress(),
        now,
    });
    status.last_update = tracker.recorded.clone();
    if policy_written.is_some() {
        status.last_key_policy_write = policy_written;
    }
    let failed_reads = FailedReads {
        application: matches!(obs.application, Observed::Failed { .. }),
        key_policy: matches!(obs.key_policy, Observed::Failed { .. }),
    };
    keep_last_observed(&mut status, subject.previous, failed_reads);
    if matches!(next, Next::Blocked | Next::Failed(_))
        && let Some(ready) = conditions
            .iter()
            .find(|c| c.type_ == condition_types::READY && c.status != ConditionStatus::True)
    {
        events.push(Note {
            warning: true,
            reason: ready.reason.clone(),
            action: "Reconcile".into(),
            message: ready.message.clone(),
        });
    }
    if was_converged(subject) {
        if puts > 0 {
            core.metrics.drift_corrected("key_policy");
        }
        if updates > 0 {
            core.metrics.drift_corrected("encryption");
        }
    }
    Outcome {
        status,
        events,
        next,
        first_plan,
        key_policy_writes: puts,
        application_updates: updates,
        desired_key_arn,
        accepted: updated,
        described,
        failed_reads,
    }
}

/// A failed read says nothing new: the status keeps what was last observed rather than blank
/// it (the conditions say the read failed). `previous` must hold the observations: `run`'s
/// cache drops them (`kube_loop::strip_unused`), so it reads the stored status again when
/// [`Outcome::failed_reads`] says one is needed, which is rare, instead of keeping every
/// resource's observations in memory for it.
pub fn keep_last_observed(
    status: &mut ApplicationEncryptionStatus,
    previous: Option<&ApplicationEncryptionStatus>,
    failed: FailedReads,
) {
    let Some(prev) = previous else { return };
    if failed.application && status.application.is_none() {
        status.application = prev.application.clone();
    }
    if failed.key_policy && status.key_policy.is_none() {
        status.key_policy = prev.key_policy.clone();
    }
}

/// Plans with as many co-tenants as fit in KMS's 32 KB: all of them when they fit (one write
/// for the whole key), else the largest prefix that does (found by bisection, pure), so a key
/// fills up to its capacity in few writes and only the applications beyond it report
/// `KeyPolicyTooLarge`.
fn plan_within_capacity(input: &PlanInput<'_>) -> Plan {
    let too_large = |p: &Plan| {
        p.conditions.iter().any(|c| {
            c.type_ == condition_types::KEY_POLICY_COMPLIANT && c.reason == "KeyPolicyTooLarge"
        })
    };
    let full = planner::plan(input);
    if input.co_tenants.is_empty() || !too_large(&full) {
        return full;
    }
    let with = |k: usize| {
        planner::plan(&PlanInput {
            co_tenants: &input.co_tenants[..k],
            ..input.clone()
        })
    };
    // Invariant: `lo` co-tenants fit (or lo == 0), `hi` do not.
    let (mut lo, mut hi) = (0usize, input.co_tenants.len());
    let mut best = with(0);
    if too_large(&best) {
        return best;
    }
    while hi - lo > 1 {
        let mid = lo + (hi - lo) / 2;
        let p = with(mid);
        if too_large(&p) {
            hi = mid;
        } else {
            lo = mid;
            best = p;
        }
    }
    best
}

fn next_action(
    plan: &Plan,
    obs: &Observation,
    failure: Option<ErrorCategory>,
    mode: Mode,
    updates: u32,
) -> Next {
    if let Some(category) = failure {
        return match category {
            ErrorCategory::Terminal => Next::Blocked,
            c => Next::Failed(c),
        };
    }
    let read_failure = [
        failed_category(&obs.application),
        failed_category(&obs.desired_key),
        failed_category(&obs.current_key),
        failed_category(&obs.key_policy),
    ]
    .into_iter()
    .flatten()
    .find(|c| *c != ErrorCategory::Terminal);
    if let Some(c) = read_failure {
        return Next::Failed(c);
    }
    if plan.steps.is_empty() {
        return Next::Converged;
    }
    for step in &plan.steps {
        match step {
            Step::Blocked { .. } => return Next::Blocked,
            Step::Requeue { after, .. } => return Next::Waiting(*after),
            _ => {}
        }
    }
    match mode {
        Mode::DryRun => Next::Pending,
        // A write is still wanted after this reconcile's writes: MSF is catching up.
        Mode::Execute if updates > 0 => Next::Waiting(SHORT_REQUEUE),
        Mode::Execute => Next::Failed(ErrorCategory::Transient),
    }
}

fn failed_category<T>(o: &Observed<T>) -> Option<ErrorCategory> {
    match o {
        Observed::Failed { category, .. } => Some(*category),
        _ => None,
    }
}

/// Whether the previous status said Ready=True for the current generation: a write now is a
/// drift correction, not a first convergence.
fn was_converged(subject: &Subject<'_>) -> bool {
    subject.previous.is_some_and(|p| {
        p.observed_generation == subject.generation
            && status::ready(p).is_some_and(|c| c.status == "True")
    })
}

fn refused(subject: &Subject<'_>, reason: &str, message: &str, now: DateTime<Utc>) -> Outcome {
    not_admitted(subject, reason, message, Next::Refused, now)
}

/// Admission could not be decided because AWS did not answer (e.g. resolving an alias for the
/// tenancy guard): a transient failure retried with backoff, never a refusal.
fn undecided(subject: &Subject<'_>, message: &str, now: DateTime<Utc>) -> Outcome {
    let next = Next::Failed(ErrorCategory::Transient);
    not_admitted(subject, "AwsUnavailable", message, next, now)
}

fn not_admitted(
    subject: &Subject<'_>,
    reason: &str,
    message: &str,
    next: Next,
    now: DateTime<Utc>,
) -> Outcome {
    let conditions = status::refused(reason, message);
    let status = status::build(&StatusInput {
        previous: subject.previous,
        generation: subject.generation,
        conditions: &conditions,
        application: None,
        current_key: None,
        key_policy: None,
        progress: next.progress(),
        now,
    });
    Outcome {
        status,
        events: vec![Note {
            warning: true,
            reason: reason.to_string(),
            action: "Admit".into(),
            message: message.to_string(),
        }],
        next,
        first_plan: None,
        key_policy_writes: 0,
        application_updates: 0,
        desired_key_arn: None,
        accepted: None,
        described: None,
        failed_reads: FailedReads::default(),
    }
}

/// The other resources that want the same key in Enforce mode, so one PutKeyPolicy covers
/// them all. Peers the tenancy guard would refuse, those that lose their application to
/// another resource (a `Conflict`: granting the loser's application on the loser's key would
/// act for it), suspended or deleted ones and those whose key cannot be resolved are left out
/// (their own reconcile reports why).
async fn co_tenants(
    core: &Core,
    subject: &Subject<'_>,
    region: &str,
    key: &ObservedKey,
    peers: &[Peer],
) -> Vec<CoTenant> {
    let mut out: Vec<CoTenant> = Vec::new();
    let losers = claims::losers(core, peers);
    // Parsed once, not per peer: a key shared by 50 applications has 50 peers per reconcile.
    let key_arn = crate::arn::Arn::parse(&key.arn).ok();
    for (p, loses) in peers.iter().zip(&losers) {
        if (p.namespace == subject.namespace && p.name == subject.name)
            || p.deleting
            || loses.is_some()
        {
            continue;
        }
        let s = &p.spec;
        let Some(key_id) = s.key_id.as_deref() else {
            continue;
        };
        if s.key_type != KeyType::CustomerManagedKey
            || s.key_policy.mode != KeyPolicyMode::Enforce
            || s.suspend
        {
            continue;
        }
        let peer_region = s
            .region
            .clone()
            .filter(|r| !r.is_empty())
            .unwrap_or_else(|| core.defaults.region.clone());
        let same_literal = Some(key_id) == subject.spec.key_id.as_deref() && peer_region == region;
        let same_key = same_literal || {
            let kr = kms_region(key_id, &peer_region);
            let arn = match core
                .resolved_keys
                .get(&kr, key_id, std::time::Instant::now())
            {
                Some(arn) => Some(arn),
                None => observe::describe_key(core, &kr, key_id)
                    .await
                    .found()
                    .map(|k| k.arn.clone()),
            };
            arn.as_deref() == Some(key.arn.as_str())
        };
        if !same_key
            || !core.serves(&p.namespace)
            || core
                .tenancy
                .check_application(&p.namespace, &s.application_name)
                .is_err()
            || core.tenancy.check_key(&p.namespace, key_id, Some(&key.arn)) != KeyVerdict::Permitted
        {
            continue;
        }
        let Some(k) = &key_arn else {
            continue;
        };
        let application_arn =
            crate::arn::Arn::application(&k.partition, &k.region, &k.account, &s.application_name)
                .to_string();
        // A peer's own role is granted only if the guard admits it (its reconcile refuses it).
        if let Some(role) = s.key_policy.operator_role_arn.as_deref()
            && core
                .tenancy
                .check_operator_role(&p.namespace, role, application_account(core).as_deref())
                .is_err()
        {
            continue;
        }
        let Some(operator_role_arn) = s
            .key_policy
            .operator_role_arn
            .clone()
            .or_else(|| core.defaults.operator_role_arn.clone())
        else {
            continue;
        };
        let t = CoTenant {
            application_arn,
            operator_role_arn,
        };
        out.push(t);
    }
    out.sort_by(|a, b| {
        (&a.application_arn, &a.operator_role_arn).cmp(&(&b.application_arn, &b.operator_role_arn))
    });
    // Two resources naming one application (a conflict) or one peer listed twice give one
    // co-tenant.
    out.dedup();
    out
}

/// The account the applications of this Core are in: the accounts file's, else the caller's
/// (None until `sts:GetCallerIdentity` has answered).
fn application_account(core: &Core) -> Option<String> {
    match &core.account {
        Some(scope) => Some(scope.account_id.clone()),
        None => core.caller.get().map(|c| c.account),
    }
}

fn list(items: &[String]) -> String {
    if items.is_empty() {
        "-".to_string()
    } else {
        items.join(", ")
    }
}
