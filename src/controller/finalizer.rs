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

use crate::api::{DeletionPolicy, KeyPolicyMode, KeyType};
use crate::aws::AwsError;
use crate::controller::context::Core;
use crate::controller::lifecycle;
use crate::controller::observe::{self, kms_region};
use crate::controller::reconcile::{Note, Subject};
use crate::controller::tenancy::KeyVerdict;
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
}

/// Does what the deletion policy says; returns the Events to publish.
pub async fn cleanup(core: &Core, subject: &Subject<'_>) -> Result<Vec<Note>, CleanupError> {
    // The namespace's account (accounts file), else the pod's own identity.
    let core = core.for_namespace(subject.namespace);
    let spec = subject.spec;
    let mut notes = Vec::new();
    let region = spec
        .region
        .clone()
        .filter(|r| !r.is_empty())
        .unwrap_or_else(|| core.defaults.region.clone());
    let refused = subject.conflict.is_some()
        || core
            .tenancy
            .check_application(subject.namespace, &spec.application_name)
            .is_err()
        || core.account.as_ref().is_some_and(|scope| {
            scope
                .check(subject.namespace, &region, spec.key_id.as_deref())
                .is_err()
        });
    if refused || spec.suspend {
        return Ok(notes);
    }

    if spec.deletion_policy == DeletionPolicy::RevertToAwsOwnedKey {
        match core
            .msf
            .describe_application_detail(&region, &spec.application_name)
            .await
        {
            Ok(described)
                if described.application.encryption.key_type
                    == AppliedKeyType::CustomerManagedKey =>
            {
                let app = &described.application;
                if !app.status.is_updatable() {
                    return Err(CleanupError::NotUpdatable(
                        app.name.clone(),
                        app.status.as_wire().to_string(),
                    ));
                }
                let update = EncryptionUpdate {
                    region: region.clone(),
                    application_name: app.name.clone(),
                    current_version_id: app.version_id,
                    conditional_token: app.conditional_token.clone(),
                    key_type: AppliedKeyType::AwsOwnedKey,
                    key_id: None,
                };
                lifecycle::revert_allowed(core, spec, &region, &described, &update)
                    .await
                    .map_err(|(reason, message)| CleanupError::Blocked { reason, message })?;
                core.msf.update_application_encryption(&update).await?;
                notes.push(Note {
                    warning: false,
                    reason: "EncryptionUpdated".into(),
                    action: "UpdateApplication".into(),
                    message: format!(
                        "Switched application {} back to the AWS owned key (deletionPolicy RevertToAwsOwnedKey).",
                        app.name
                    ),
                });
            }
            Ok(_) => {}
            Err(e) if e.is_not_found() => {}
            Err(e) => return Err(e.into()),
        }
    }

    if spec.key_policy.remove_statements_on_delete
        && spec.key_policy.mode == KeyPolicyMode::Enforce
        && spec.key_type == KeyType::CustomerManagedKey
        && let Some(key_id) = spec.key_id.as_deref()
        && let Some(note) = remove_statements(core, subject, key_id, &region).await?
    {
        notes.push(note);
    }
    Ok(notes)
}

/// Removes this application's values from the owned statements of its key's policy.
async fn remove_statements(
    core: &Core,
    subject: &Subject<'_>,
    key_id: &str,
    region: &str,
) -> Result<Option<Note>, CleanupError> {
    let described = observe::describe_key(core, &kms_region(key_id, region), key_id).await;
    let Some(key) = found_or_gone(described, "DescribeKey")? else {
        return Ok(None);
    };
    if core
        .tenancy
        .check_key(subject.namespace, key_id, Some(&key.arn))
        != KeyVerdict::Permitted
    {
        return Ok(None);
    }
    let Some(app_arn) = observe::application_arn_for_key(&key.arn, &subject.spec.application_name)
    else {
        return Ok(None);
    };
    let guard = core.key_locks.lock(&key.arn).await;
    let (policy, _) = observe::fresh_key_policy(core, &guard, &key.region).await;
    let Some(text) = found_or_gone(policy, "GetKeyPolicy")? else {
        return Ok(None);
    };
    let policy_err = |why: String| CleanupError::Policy {
        key: key.arn.clone(),
        why,
    };
    let doc = PolicyDocument::parse(&text).map_err(|e| policy_err(e.to_string()))?;
    let merged =
        crate::policy::merge::merge_for(&doc, &core.instance, &[], std::slice::from_ref(&app_arn))
            .map_err(|e| policy_err(e.to_string()))?;
    if merged.to_value() == doc.to_value() {
        return Ok(None);
    }
    let new_text = merged.to_compact_json();
    if let Err(e) = core
        .kms
        .put_key_policy(&key.region, &key.arn, &new_text)
        .await
    {
        core.key_locks.forget_policy(&key.arn);
        return Err(e.into());
    }
    core.key_locks.forget_policy(&key.arn);
    Ok(Some(Note {
        warning: false,
        reason: "KeyPolicyUpdated".into(),
        action: "PutKeyPolicy".into(),
        message: format!(
            "Removed {app_arn} from the controller's statements in the policy of {} (removeStatementsOnDelete).",
            key.arn
        ),
    }))
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
