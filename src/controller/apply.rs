//! Apply: the writes of one reconcile (I/O), one planned step at a time.
//!
//! - `PutKeyPolicy` only under the key's lock (the [`KeyGuard`] proves it), called from
//!   [`crate::controller::key_write`] (lost-update protection), then the policy is re-read so
//!   that the next plan is made from what KMS actually holds (verification; a read that does
//!   not show the write yet is retried a few times, KMS being eventually consistent).
//! - `UpdateApplication` at most once per reconcile (the caller counts; MSF restarts a RUNNING
//!   application on every update).
//!
//! Requeue and Blocked steps need no I/O; the reconcile loop handles them.

use crate::aws::AwsError;
use crate::controller::context::Core;
use crate::controller::key_locks::KeyGuard;
use crate::controller::key_write::same_policy;
use crate::controller::{lifecycle, observe, restart_budget};
use crate::domain::{EncryptionUpdate, ErrorCategory, Observed, UpdateAccepted};

/// Writes the policy and re-reads it until the read shows the write. KMS is eventually
/// consistent: a read right after PutKeyPolicy may still return the old policy, so it is
/// retried a few times (`verify_attempts`, `verify_interval`) before the caller's re-plan
/// concludes `KeyPolicyNotVerified`. A read that is neither the write nor `base` (the policy
/// the write was computed from) is another writer's, newer than ours: returned at once, no
/// more waiting. A failed write forgets any shared read of the key, because whether it took
/// effect is unknown.
pub async fn put_key_policy(
    core: &Core,
    guard: &KeyGuard,
    region: &str,
    policy: &str,
    base: &str,
) -> Result<Observed<String>, AwsError> {
    if let Err(e) = core
        .kms
        .put_key_policy(region, &guard.key_arn, policy)
        .await
    {
        core.key_locks.forget_policy(&guard.key_arn);
        return Err(e);
    }
    let mut attempt = 0;
    loop {
        let (reread, _) = observe::fresh_key_policy(core, guard, region).await;
        attempt += 1;
        let shows_write = matches!(&reread, Observed::Found(text) if same_policy(text, policy));
        let other_writer =
            matches!(&reread, Observed::Found(text) if !shows_write && !same_policy(text, base));
        if shows_write || other_writer || attempt >= core.settings.verify_attempts.max(1) {
            if !shows_write {
                // Other reconciles of the key must not write from this stale read.
                core.key_locks.forget_policy(&guard.key_arn);
            }
            return Ok(reread);
        }
        tokio::time::sleep(core.settings.verify_interval).await;
    }
}

/// Switches the application's encryption; returns the application as MSF describes it after
/// and the operation to follow. The caller took a restart slot for it
/// ([`lifecycle::take_restart_slot`]); a refusal frees the slot (nothing restarts), and so does
/// an answer that shows the application already out of UPDATING; a transient failure keeps it
/// (the update may have started) until the application is observed.
pub async fn update_application(
    core: &Core,
    update: &EncryptionUpdate,
) -> Result<UpdateAccepted, AwsError> {
    let result = core.msf.start_encryption_update(update).await;
    let over = match &result {
        // MSF may answer an update it has already finished (nothing left to wait for).
        Ok(accepted) => !restart_budget::in_progress(&accepted.application.status),
        Err(e) => e.category != ErrorCategory::Transient,
    };
    if over {
        core.restart_budget
            .release(&update.region, &update.application_name);
        lifecycle::report_slots(core, &update.region);
    }
    result
}
