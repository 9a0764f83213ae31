//! Who the controller is in AWS, kept current (I/O: `sts:GetCallerIdentity`).
//!
//! Asked once at start (`run`, `plan`, `apply`, `demo`); `run` asks again every
//! [`REFRESH`], because the identity can change under a long-running process: the credential
//! chain (IRSA, Pod Identity, an assumed role) refreshes credentials about hourly and a
//! re-deployed ServiceAccount annotation points the pod at another role. A fixed period is
//! simpler than following each provider's expiry and is cheap (one call per period; the call
//! needs no IAM permission). A failed ask keeps the last answer: credentials that fail to
//! refresh are a transient problem, reported by the calls that need them.
//!
//! The answer is read by every reconcile (`planner::operator` compares it with the operator
//! role); `None` (never answered) turns that check off rather than blocking every resource.

use std::sync::{Arc, RwLock};
use std::time::Duration;

use crate::aws::{AwsError, StsApi};
use crate::identity::CallerIdentity;

/// How often `run` asks again.
pub const REFRESH: Duration = Duration::from_secs(15 * 60);
/// How soon to ask again after a failed ask.
pub const RETRY: Duration = Duration::from_secs(30);

/// The last known caller identity, shared by every reconcile of the process.
#[derive(Clone, Debug, Default)]
pub struct CallerCell(Arc<RwLock<Option<CallerIdentity>>>);

impl CallerCell {
    pub fn get(&self) -> Option<CallerIdentity> {
        // A poisoned lock only means a writer panicked; the value is still a whole identity.
        self.0.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    pub fn set(&self, identity: CallerIdentity) {
        *self.0.write().unwrap_or_else(|p| p.into_inner()) = Some(identity);
    }
}

/// Asks STS once and records the answer; logs a change of identity.
pub async fn ask(sts: &dyn StsApi, cell: &CallerCell) -> Result<CallerIdentity, AwsError> {
    let me = sts.get_caller_identity().await?;
    let before = cell.get();
    if before.as_ref().map(|b| &b.arn) != Some(&me.arn) {
        match before {
            None => tracing::info!(caller = %me.arn, account = %me.account, "AWS caller identity"),
            Some(b) => {
                tracing::warn!(caller = %me.arn, previous = %b.arn, "the AWS caller identity changed")
            }
        }
    }
    cell.set(me.clone());
    Ok(me)
}

/// Asks again every [`REFRESH`] ([`RETRY`] after a failure, or while never answered),
/// forever. The first ask is the caller's ([`ask_once`]), before the controllers start.
pub async fn keep_current(sts: Arc<dyn StsApi>, cell: CallerCell) {
    let mut next = if cell.get().is_some() { REFRESH } else { RETRY };
    loop {
        tokio::time::sleep(next).await;
        next = match ask(sts.as_ref(), &cell).await {
            Ok(_) => REFRESH,
            Err(e) => {
                tracing::warn!(error = %e, known = cell.get().is_some(), "cannot ask AWS who the controller is (sts:GetCallerIdentity); the operator role check uses the last answer, or is off until one comes");
                RETRY
            }
        };
    }
}

/// The one-shot ask of `plan`, `apply` and `demo`: a failure is a warning, not an error (the
/// check is then off), because STS may be unreachable where MSF and KMS are not (an
/// emulator without STS).
pub async fn ask_once(sts: &dyn StsApi, cell: &CallerCell) {
    if let Err(e) = ask(sts, cell).await {
        tracing::warn!(error = %e, "cannot ask AWS who the controller is (sts:GetCallerIdentity): the operator role check is off");
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use async_trait::async_trait;

    use super::*;
    use crate::domain::ErrorCategory;

    struct FakeSts(Mutex<Vec<Result<&'static str, ()>>>);

    #[async_trait]
    impl StsApi for FakeSts {
        async fn get_caller_identity(&self) -> Result<CallerIdentity, AwsError> {
            let next = self.0.lock().unwrap().remove(0);
            next.map(|arn| CallerIdentity {
                arn: arn.into(),
                account: "111122223333".into(),
                user_id: "AROA:s".into(),
            })
            .map_err(|_| AwsError {
                category: ErrorCategory::Transient,
                operation: "GetCallerIdentity",
                code: "ExpiredToken".into(),
                message: "expired".into(),
            })
        }
    }

    #[tokio::test]
    async fn a_failed_ask_keeps_the_last_answer() {
        let a = "arn:aws:sts::111122223333:assumed-role/a/s";
        let b = "arn:aws:sts::111122223333:assumed-role/b/s";
        let sts = FakeSts(Mutex::new(vec![Err(()), Ok(a), Err(()), Ok(b)]));
        let cell = CallerCell::default();
        ask_once(&sts, &cell).await;
        assert_eq!(cell.get(), None, "never answered: unknown");
        ask(&sts, &cell).await.unwrap();
        assert_eq!(cell.get().unwrap().arn, a);
        assert!(ask(&sts, &cell).await.is_err());
        assert_eq!(cell.get().unwrap().arn, a, "kept");
        ask(&sts, &cell).await.unwrap();
        assert_eq!(
            cell.get().unwrap().arn,
            b,
            "a new identity replaces the old"
        );
    }
}
