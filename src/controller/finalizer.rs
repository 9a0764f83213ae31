//! Cleanup when an `ApplicationEncryption` is deleted (finalizer `msfcmk.dev/cleanup`; the
//! kube-runtime `finalizer()` helper calls this from `kube_loop`). I/O, Kubernetes-independent.
//!
//! - `deletionPolicy: Retain` (default) changes nothing in AWS.
//! - `RevertToAwsOwnedKey` switches the application back to the AWS owned key first; while the
//!   application is in a status where MSF refuses updates, cleanup fails and is retried (the
//!   finalizer stays).
//! - Key policy statements are kept (snapshots taken under the key still need it) unless
//!   `spec.keyPolicy.removeStatementsOnDelete`, in Enforce mode only; then only this
//!   application's values are removed from the owned statements.
//! - The revert follows the update lifecycle ([`lifecycle::revert_allowed`]): not for a RUNNING
//!   application without snapshots unless `allowStatelessRestart`, never again after MSF rolled
//!   it back (`deletionPolicy: Retain` then lets the deletion finish).
//! - Idempotent; an application or key that is already gone counts as done. A resource the
//!   controller refused to act on (tenancy, conflict) or a suspended one touches nothing.
//! - The rollout budget ([`crate::controller::restart_budget`]): a restart of ours still in
//!   progress (this resource's last update, or the revert) keeps the finalizer until MSF shows
//!   it ended, then its slot is freed; the revert of a RUNNING application takes a slot and
//!   waits for one when every slot is taken ([`CleanupError::Waiting`], retried). Without this
//!   a resource deleted mid-restart kept its slot for the life of the process, and the revert
//!   restarted applications beyond the budget.
//! - `removeStatementsOnDelete` writes through the lost-update protection of the reconcile
//!   ([`crate::controller::key_write`]): re-read before the write, re-planned when the policy
//!   changed, and after the write a person's edit that landed meanwhile is kept (the removal is
//!   made again from the newer policy), with the Warning event `ConcurrentKeyPolicyEdit`.

use crate::api::{DeletionPolicy, KeyPolicyMode, KeyType};
use crate::aws::AwsError;
use crate::controller::context::Core;
use crate::controller::key_write::{self, Attempt};
use crate::controller::observe::{self, kms_region};
use crate::controller::reconcile::{Note, Subject};
use crate::controller::restart_budget::{self, Admission};
use crate::controller::tenancy::KeyVerdict;
use crate::controller::{apply, lifecycle};
use crate::domain::{AppliedKeyType, EncryptionUpdate, Observed};
use crate::policy::PolicyDocument;

#[derive(Debug, thiserror::Error)]
pub enum CleanupError {
    #[error("application {0} is {1}; MSF accepts an update only in READY or RUNNING: retrying")]
    NotUpdatable(String, String),
    #[error(transparent)]
    Aws(#[from] AwsError),
    #[error("key policy of {key}: {why}")]
    Policy { key: String, why: String },
    /// The revert may not be made (update lifecycle): retried, the message says what unblocks.
    #[error("{reason}: {message}")]
    Blocked { reason: String, message: String },
    /// Not a failure: a restart of ours is in progress, or the revert waits for a restart slot.
    /// Retried; the finalizer stays meanwhile.
    #[error("{reason}: {message}")]
    Waiting { reason: String, message: String },
}

/// The reason of [`CleanupError::Waiting`] while a restart of ours is in progress.
pub const RESTART_IN_PROGRESS: &str = "RestartInProgress";

/// Does what the deletion policy says; returns the Events to publish.
pub async fn cleanup(core: &Core, subject: &Subject<'_>) -> Result<Vec<Note>, CleanupError> {
    // The namespace's account (accounts file), else the pod's own identity.
    let core = core.for_namespace(subject.namespace);
    let spec = subject.spec;
    let mut notes = Vec::new();
    let region = region_of(core, spec);
    if !acts(core, subject, &region) {
        return Ok(notes);
    }

    let budget = &core.restart_budget;
    let holds_slot = budget.holds(&region, &spec.application_name);
    if holds_slot || spec.deletion_policy == DeletionPolicy::RevertToAwsOwnedKey {
        match core
            .msf
            .describe_application_detail(&region, &spec.application_name)
            .await
        {
            Ok(described) => {
                let app = &described.application;
                if holds_slot {
                    restart_over(core, &region, app)?;
                }
                if spec.deletion_policy == DeletionPolicy::RevertToAwsOwnedKey
                    && app.encryption.key_type == AppliedKeyType::CustomerManagedKey
                {
                    notes.push(revert(core, spec, &region, &described).await?);
                }
            }
            Err(e) if e.is_not_found() => {
                budget.release(&region, &spec.application_name);
                lifecycle::report_slots(core, &region);
            }
            Err(e) => return Err(e.into()),
        }
    }

    if spec.key_policy.remove_statements_on_delete
        && spec.key_policy.mode == KeyPolicyMode::Enforce
        && spec.key_type == KeyType::CustomerManagedKey
        && let Some(key_id) = spec.key_id.as_deref()
    {
        notes.extend(remove_statements(core, subject, key_id, &region).await?);
    }
    Ok(notes)
}

/// A restart of ours on `app` holds a slot: still in progress -> wait; over -> free the slot.
fn restart_over(
    core: &Core,
    region: &str,
    app: &crate::domain::ObservedApplication,
) -> Result<(), CleanupError> {
    if restart_budget::in_progress(&app.status) {
        return Err(CleanupError::Waiting {
            reason: RESTART_IN_PROGRESS.into(),
            message: format!(
                "application {} is {} after an update of ours; its restart holds a slot of the rollout budget until it ends",
                app.name,
                app.status.as_wire()
            ),
        });
    }
    core.restart_budget.release(region, &app.name);
    lifecycle::report_slots(core, region);
    Ok(())
}

/// Switches the application back to the AWS owned key (deletionPolicy RevertToAwsOwnedKey),
/// within the rollout budget: a RUNNING application's revert takes a slot, which this cleanup
/// frees once MSF shows the restart over (the finalizer stays until then).
async fn revert(
    core: &Core,
    spec: &crate::api::ApplicationEncryptionSpec,
    region: &str,
    described: &crate::domain::ApplicationDescription,
) -> Result<Note, CleanupError> {
    let app = &described.application;
    if !app.status.is_updatable() {
        return Err(CleanupError::NotUpdatable(
            app.name.clone(),
            app.status.as_wire().to_string(),
        ));
    }
    let update = EncryptionUpdate {
        region: region.to_string(),
        application_name: app.name.clone(),
        current_version_id: app.version_id,
        conditional_token: app.conditional_token.clone(),
        key_type: AppliedKeyType::AwsOwnedKey,
        key_id: None,
    };
    lifecycle::revert_allowed(core, spec, region, described, &update)
        .await
        .map_err(|(reason, message)| CleanupError::Blocked { reason, message })?;
    let admission = core.restart_budget.admit(region, &app.name, &app.status);
    lifecycle::report_slots(core, region);
    if let Admission::Full { in_use, limit } = admission {
        return Err(CleanupError::Waiting {
            reason: restart_budget::WAITING_FOR_RESTART_BUDGET.into(),
            message: format!(
                "{in_use} of {limit} restarts allowed at once in {region} are in progress (--max-concurrent-restarts); the revert of this RUNNING application to the AWS owned key waits for one to finish"
            ),
        });
    }
    // Frees the slot at once if MSF refused (nothing restarts) or already finished.
    apply::update_application(core, &update).await?;
    Ok(Note {
        warning: false,
        reason: "EncryptionUpdated".into(),
        action: "UpdateApplication".into(),
        message: format!(
            "Switched application {} back to the AWS owned key (deletionPolicy RevertToAwsOwnedKey).",
            app.name
        ),
    })
}

/// Whether the cleanup acts for `subject` at all: not refused (conflict, tenancy, account
/// scope), not suspended.
fn acts(core: &Core, subject: &Subject<'_>, region: &str) -> bool {
    let spec = subject.spec;
    let refused = subject.conflict.is_some()
        || core
            .tenancy
            .check_application(subject.namespace, &spec.application_name)
            .is_err()
        || core.account.as_ref().is_some_and(|scope| {
            scope
                .check(subject.namespace, region, spec.key_id.as_deref())
                .is_err()
        });
    !refused && !spec.suspend
}

/// The cleanup is over: whatever the rollout budget still knows of the application (an update
/// of a READY application, a wait) is dropped with the resource. Not for a resource in
/// conflict: the application's slot, if any, is the winner's.
pub fn forget(core: &Core, subject: &Subject<'_>) {
    if subject.conflict.is_some() {
        return;
    }
    let core = core.for_namespace(subject.namespace);
    let region = region_of(core, subject.spec);
    core.restart_budget
        .release(&region, &subject.spec.application_name);
    lifecycle::report_slots(core, &region);
}

/// Whether the cleanup of `subject` left a restart of ours in progress (the revert just made):
/// the finalizer must stay until it ends, so that its slot is freed.
pub fn restart_pending(core: &Core, subject: &Subject<'_>) -> bool {
    let core = core.for_namespace(subject.namespace);
    let region = region_of(core, subject.spec);
    // A cleanup that does not act made no revert (a slot held is another resource's, or is
    // dropped with this one by `forget`).
    acts(core, subject, &region)
        && core
            .restart_budget
            .holds(&region, &subject.spec.application_name)
}

fn region_of(core: &Core, spec: &crate::api::ApplicationEncryptionSpec) -> String {
    spec.region
        .clone()
        .filter(|r| !r.is_empty())
        .unwrap_or_else(|| core.defaults.region.clone())
}

/// Removes this application's values from the owned statements of its key's policy, through
/// the lost-update protection ([`key_write::write`]): planned again from a newer policy read
/// before the write, and written again (bounded) when another writer overtook it just after.
/// Returns the Events: `KeyPolicyUpdated` once written, `ConcurrentKeyPolicyEdit` per edit seen.
async fn remove_statements(
    core: &Core,
    subject: &Subject<'_>,
    key_id: &str,
    region: &str,
) -> Result<Vec<Note>, CleanupError> {
    let described = observe::describe_key(core, &kms_region(key_id, region), key_id).await;
    let Some(key) = found_or_gone(described, "DescribeKey")? else {
        return Ok(Vec::new());
    };
    if core
        .tenancy
        .check_key(subject.namespace, key_id, Some(&key.arn))
        != KeyVerdict::Permitted
    {
        return Ok(Vec::new());
    }
    let Some(app_arn) = observe::application_arn_for_key(&key.arn, &subject.spec.application_name)
    else {
        return Ok(Vec::new());
    };
    let guard = core.key_locks.lock(&key.arn).await;
    let (mut policy, _) = observe::fresh_key_policy(core, &guard, &key.region).await;
    let mut notes = Vec::new();
    let mut written = false;
    let mut overtaken = 0;
    loop {
        let Some(text) = found_or_gone(policy.clone(), "GetKeyPolicy")? else {
            return Ok(notes);
        };
        let Some(new_text) = without_application(core, &key.arn, &text, &app_arn)? else {
            if written {
                notes.push(removed_note(&app_arn, &key.arn));
            }
            return Ok(notes);
        };
        match key_write::write(core, &guard, &key.region, &policy, true, &new_text).await {
            Attempt::Replan {
                policy: newer,
                concurrent,
            } => {
                policy = newer;
                notes.extend(concurrent);
            }
            Attempt::Failed(e) => return Err(e.into()),
            Attempt::Written { .. } => {
                notes.push(removed_note(&app_arn, &key.arn));
                return Ok(notes);
            }
            Attempt::Overtaken { reread, note } => {
                // Theirs is kept: the removal is made again from their policy.
                written = true;
                notes.push(note);
                overtaken += 1;
                if overtaken > key_write::MAX_OVERTAKEN {
                    return Err(CleanupError::Policy {
                        key: key.arn.clone(),
                        why: format!(
                            "kept being changed by another writer right after PutKeyPolicy ({overtaken} times); retrying later"
                        ),
                    });
                }
                policy = reread;
                tokio::time::sleep(key_write::overtaken_backoff(overtaken - 1)).await;
            }
        }
    }
}

/// The policy `text` without `app_arn` in the controller's own statements; `None` when it
/// names it nowhere (nothing to write).
fn without_application(
    core: &Core,
    key_arn: &str,
    text: &str,
    app_arn: &str,
) -> Result<Option<String>, CleanupError> {
    let policy_err = |why: String| CleanupError::Policy {
        key: key_arn.to_string(),
        why,
    };
    let doc = PolicyDocument::parse(text).map_err(|e| policy_err(e.to_string()))?;
    let merged = crate::policy::merge::merge_for(
        &doc,
        &core.instance,
        &[],
        std::slice::from_ref(&app_arn.to_string()),
    )
    .map_err(|e| policy_err(e.to_string()))?;
    Ok((merged.to_value() != doc.to_value()).then(|| merged.to_compact_json()))
}

fn removed_note(app_arn: &str, key_arn: &str) -> Note {
    Note {
        warning: false,
        reason: "KeyPolicyUpdated".into(),
        action: "PutKeyPolicy".into(),
        message: format!(
            "Removed {app_arn} from the controller's statements in the policy of {key_arn} (removeStatementsOnDelete)."
        ),
    }
}

/// A read during cleanup: found -> `Some`; already gone (or not read) -> `None`, nothing to
/// clean; failed -> the error, classified as the adapter classified it.
fn found_or_gone<T>(
    observed: Observed<T>,
    operation: &'static str,
) -> Result<Option<T>, CleanupError> {
    match observed {
        Observed::Found(t) => Ok(Some(t)),
        Observed::NotFound(_) | Observed::Skipped => Ok(None),
        Observed::Failed {
            category,
            code,
            message,
        } => Err(CleanupError::Aws(AwsError {
            category,
            operation,
            code,
            message,
        })),
    }
}
