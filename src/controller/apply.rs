//! Apply: the writes of one reconcile (I/O), one planned step at a time.
//!
//! - `PutKeyPolicy` only under the key's lock (the [`KeyGuard`] proves it), then the policy is
//!   re-read so that the next plan is made from what KMS actually holds (verification).
//! - `UpdateApplication` at most once per reconcile (the caller counts; MSF restarts a RUNNING
//!   application on every update).
//!
//! Requeue and Blocked steps need no I/O; the reconcile loop handles them.

use crate::aws::AwsError;
use crate::controller::context::Core;
use crate::controller::key_locks::KeyGuard;
use crate::controller::observe;
use crate::domain::{EncryptionUpdate, Observed, ObservedApplication};

/// Writes the policy and re-reads it. A failed write forgets any shared read of the key,
/// because whether it took effect is unknown.
pub async fn put_key_policy(
    core: &Core,
    guard: &KeyGuard,
    region: &str,
    policy: &str,
) -> Result<Observed<String>, AwsError> {
    if let Err(e) = core
        .kms
        .put_key_policy(region, &guard.key_arn, policy)
        .await
    {
        core.key_locks.forget_policy(&guard.key_arn);
        return Err(e);
    }
    let (reread, _) = observe::fresh_key_policy(core, guard, region).await;
    Ok(reread)
}

/// Switches the application's encryption; returns the application as MSF describes it after.
pub async fn update_application(
    core: &Core,
    update: &EncryptionUpdate,
) -> Result<ObservedApplication, AwsError> {
    core.msf.update_application_encryption(update).await
}
