//! Observe: the reads of one reconcile (I/O). DescribeApplication, DescribeKey of the desired
//! key and of the key in use, GetKeyPolicy of the desired key. DescribeKey and GetKeyPolicy are
//! shared by every resource of a key within a window (see `key_locks`): a pass costs one of
//! each per key plus one DescribeApplication per application. Every failure becomes an
//! [`Observed`] value for the planner; nothing here decides anything.

use std::time::Instant;

use crate::api::{ApplicationEncryptionSpec, KeyPolicyMode, KeyType};
use crate::arn::{Arn, KeyRef};
use crate::aws::AwsError;
use crate::controller::context::Core;
use crate::controller::key_locks::KeyGuard;
use crate::domain::{
    ApplicationDescription, ApplicationLifecycle, AppliedKeyType, KeyManager, Observed,
    ObservedApplication, ObservedKey,
};

/// Turns a call result into an observation.
pub fn observed<T>(r: Result<T, AwsError>) -> Observed<T> {
    match r {
        Ok(t) => Observed::Found(t),
        Err(e) if e.is_not_found() => Observed::NotFound(e.message),
        Err(e) => Observed::Failed {
            category: e.category,
            code: e.code,
            message: e.message,
        },
    }
}

/// The region for KMS calls about `key_id`: the region in its ARN when it is one (a key in
/// another region must be described there to be reported as such), else the application's.
pub fn kms_region(key_id: &str, app_region: &str) -> String {
    match KeyRef::parse(key_id) {
        Ok(KeyRef::KeyArn(a) | KeyRef::AliasArn(a)) if !a.region.is_empty() => a.region,
        _ => app_region.to_string(),
    }
}

/// DescribeKey, shared by the resources of the key within the window, remembering the
/// resolved ARN for co-tenant matching and tenancy checks (a shared answer carries it too).
pub async fn describe_key(core: &Core, region: &str, key_id: &str) -> Observed<ObservedKey> {
    let shared = || {
        core.key_locks
            .shared_description(region, key_id, Instant::now())
    };
    if let Some(k) = shared() {
        return Observed::Found(k);
    }
    // Not shared at all (zero window): no point queueing behind another reconcile's call.
    let _one_at_a_time = match core.key_locks.share_window.is_zero() {
        true => None,
        false => Some(core.key_locks.describing(region, key_id).await),
    };
    if let Some(k) = shared() {
        return Observed::Found(k);
    }
    let r = observed(core.kms.describe_key(region, key_id).await);
    if let Observed::Found(k) = &r {
        let now = Instant::now();
        core.resolved_keys.put(region, key_id, &k.arn, now);
        core.key_locks.remember_description(region, key_id, k, now);
    }
    r
}

/// The application and both keys. `desired_key` may already have been described (tenancy).
/// The application's lifecycle markers (rollback, snapshots) come from the same
/// DescribeApplication, or from `hint`: an exact observation the caller already holds
/// (`apply`: our UpdateApplication's answer, confirmed by ListApplications, see
/// [`crate::controller::update_watch`]), which replaces the call.
pub async fn application_and_keys(
    core: &Core,
    spec: &ApplicationEncryptionSpec,
    region: &str,
    desired_key: Option<Observed<ObservedKey>>,
    hint: Option<ApplicationDescription>,
) -> (
    Observed<ObservedApplication>,
    Observed<ObservedKey>,
    Observed<ObservedKey>,
    ApplicationLifecycle,
) {
    let described = match hint {
        Some(d) => Ok(d),
        None => {
            core.msf
                .describe_application_detail(region, &spec.application_name)
                .await
        }
    };
    let (application, lifecycle) = match observed(described) {
        Observed::Found(d) => (Observed::Found(d.application), d.lifecycle),
        Observed::NotFound(m) => (Observed::NotFound(m), ApplicationLifecycle::default()),
        Observed::Failed {
            category,
            code,
            message,
        } => (
            Observed::Failed {
                category,
                code,
                message,
            },
            ApplicationLifecycle::default(),
        ),
        Observed::Skipped => (Observed::Skipped, ApplicationLifecycle::default()),
    };
    let desired_key = match (desired_key, spec.key_type, spec.key_id.as_deref()) {
        (Some(k), _, _) => k,
        (None, KeyType::CustomerManagedKey, Some(id)) if !id.is_empty() => {
            describe_key(core, &kms_region(id, region), id).await
        }
        _ => Observed::Skipped,
    };
    let current_key = current_key(core, &application, &desired_key, spec, region).await;
    (application, desired_key, current_key, lifecycle)
}

/// The key the application uses; the desired key's description is reused when it is the same
/// key, so a converged resource costs one DescribeKey, not two.
pub async fn current_key(
    core: &Core,
    application: &Observed<ObservedApplication>,
    desired_key: &Observed<ObservedKey>,
    spec: &ApplicationEncryptionSpec,
    region: &str,
) -> Observed<ObservedKey> {
    let Some(app) = application.found() else {
        return Observed::Skipped;
    };
    if app.encryption.key_type != AppliedKeyType::CustomerManagedKey {
        return Observed::Skipped;
    }
    let Some(in_use) = app.encryption.key_id.as_deref() else {
        return Observed::Skipped;
    };
    if let Observed::Found(d) = desired_key {
        let same = in_use == d.arn
            || in_use == d.key_id
            || spec.key_id.as_deref() == Some(in_use)
            || core
                .resolved_keys
                .get(region, in_use, Instant::now())
                .as_deref()
                == Some(&d.arn);
        if same {
            return desired_key.clone();
        }
    }
    describe_key(core, &kms_region(in_use, region), in_use).await
}

/// Whether the key policy of this key is read at all.
pub fn reads_policy(spec: &ApplicationEncryptionSpec, desired_key: &Observed<ObservedKey>) -> bool {
    spec.key_type == KeyType::CustomerManagedKey
        && spec.key_policy.mode != KeyPolicyMode::Ignore
        && matches!(desired_key, Observed::Found(k) if k.manager == KeyManager::Customer)
}

/// GetKeyPolicy under the key's lock, reusing a read of the same window. Returns the
/// observation and whether it is fresh (read by this call) rather than shared.
pub async fn key_policy(core: &Core, guard: &KeyGuard, region: &str) -> (Observed<String>, bool) {
    let now = Instant::now();
    if let Some(text) = core.key_locks.shared_policy(guard, now) {
        return (Observed::Found(text), false);
    }
    fresh_key_policy(core, guard, region).await
}

/// GetKeyPolicy, always from KMS (before any write), remembered for the window.
pub async fn fresh_key_policy(
    core: &Core,
    guard: &KeyGuard,
    region: &str,
) -> (Observed<String>, bool) {
    let r = observed(core.kms.get_key_policy(region, &guard.key_arn).await);
    if let Observed::Found(text) = &r {
        core.key_locks.remember_policy(guard, text, Instant::now());
    }
    (r, true)
}

/// The ARN of the application `name` next to key `key_arn` (same partition, region, account:
/// MSF requires the key in the application's account and region).
pub fn application_arn_for_key(key_arn: &str, name: &str) -> Option<String> {
    let k = Arn::parse(key_arn).ok()?;
    Some(Arn::application(&k.partition, &k.region, &k.account, name).to_string())
}

/// GetKeyPolicy of the key the application uses while a switch away from it is pending
/// (`planner::operator` checks the operator may still use it): only when the application uses
/// a customer managed key other than the desired one, not suspended, not in `Ignore` mode.
/// Not shared or cached: that key is never written, and the read is rare (once per reconcile
/// while a switch is pending; none in steady state).
pub async fn leaving_key_policy(
    core: &Core,
    spec: &ApplicationEncryptionSpec,
    desired_key: &Observed<ObservedKey>,
    current_key: &Observed<ObservedKey>,
) -> Observed<String> {
    let Some(current) = current_key.found() else {
        return Observed::Skipped;
    };
    let staying = desired_key.found().is_some_and(|d| d.arn == current.arn);
    if staying || spec.suspend || spec.key_policy.mode == KeyPolicyMode::Ignore {
        return Observed::Skipped;
    }
    observed(core.kms.get_key_policy(&current.region, &current.arn).await)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kms_region_follows_arns() {
        assert_eq!(
            kms_region("arn:aws:kms:eu-west-1:111122223333:key/k", "us-east-1"),
            "eu-west-1"
        );
        assert_eq!(
            kms_region("arn:aws:kms:eu-west-1:111122223333:alias/a", "us-east-1"),
            "eu-west-1"
        );
        assert_eq!(kms_region("alias/a", "us-east-1"), "us-east-1");
        assert_eq!(kms_region("not valid", "us-east-1"), "us-east-1");
    }

    #[test]
    fn application_arns_next_to_keys() {
        assert_eq!(
            application_arn_for_key("arn:aws:kms:us-east-1:111122223333:key/k", "app").as_deref(),
            Some("arn:aws:kinesisanalytics:us-east-1:111122223333:application/app")
        );
        assert_eq!(application_arn_for_key("alias/x", "app"), None);
    }
}
