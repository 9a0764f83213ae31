//! Client-side rate limits per AWS operation, so that a thousand resources reconciling at once
//! cannot throttle the account (throttling there also hurts every other client of the account).
//!
//! AWS quotas are per account and region, so each operation's limiter is keyed by region, and
//! one set of limiters ([`AccountLimiters`]) serves every client of one account: the accounts
//! file's client sets of one account (operator, key administrator, several roles) share it.
//! The pod's own clients have their own set.
//! `PutKeyPolicy` has a second, per-key limiter because KMS also throttles "hot" keys.

use std::num::NonZeroU32;
use std::sync::Arc;

use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};

/// Requests per second allowed per operation (per region). `None` = unlimited.
///
/// Defaults are well under AWS's default quotas: KMS DescribeKey 2000/s, GetKeyPolicy 1000/s,
/// PutKeyPolicy 15/s per account and region; MSF control-plane calls are low-rate APIs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RateLimits {
    pub describe_application: Option<NonZeroU32>,
    pub update_application: Option<NonZeroU32>,
    pub describe_key: Option<NonZeroU32>,
    pub get_key_policy: Option<NonZeroU32>,
    pub put_key_policy: Option<NonZeroU32>,
    /// Writes to one key's policy; KMS throttles hot keys below the account quota.
    pub put_key_policy_per_key: Option<NonZeroU32>,
}

const fn nz(n: u32) -> Option<NonZeroU32> {
    NonZeroU32::new(n)
}

impl Default for RateLimits {
    fn default() -> Self {
        Self {
            describe_application: nz(20),
            update_application: nz(5),
            describe_key: nz(200),
            get_key_policy: nz(100),
            put_key_policy: nz(5),
            put_key_policy_per_key: nz(1),
        }
    }
}

impl RateLimits {
    /// No client-side limit at all: for benchmarks and tests of the server side.
    pub fn unlimited() -> Self {
        Self {
            describe_application: None,
            update_application: None,
            describe_key: None,
            get_key_policy: None,
            put_key_policy: None,
            put_key_policy_per_key: None,
        }
    }
}

/// One keyed limiter; `None` when the operation is unlimited. Clones share the limiter.
#[derive(Clone)]
pub(crate) struct Limiter(Option<Arc<DefaultKeyedRateLimiter<String>>>);

impl Limiter {
    pub(crate) fn new(per_second: Option<NonZeroU32>) -> Self {
        // Burst = the per-second rate: a quiet controller may catch up at once, then paces.
        Self(per_second.map(|r| Arc::new(RateLimiter::keyed(Quota::per_second(r)))))
    }

    /// Waits until one more request for `key` is allowed.
    pub(crate) async fn wait(&self, key: &str) {
        if let Some(l) = &self.0 {
            l.until_key_ready(&key.to_string()).await;
            // Forget keys that have been idle long enough to be back at full burst,
            // so the per-key map does not grow with every key ever touched.
            if l.len() > 1024 {
                l.retain_recent();
            }
        }
    }
}

/// Every operation's limiter for one AWS account (keyed by region inside): clones share them.
#[derive(Clone)]
pub struct AccountLimiters {
    pub(crate) describe_application: Limiter,
    pub(crate) update_application: Limiter,
    pub(crate) describe_key: Limiter,
    pub(crate) get_key_policy: Limiter,
    pub(crate) put_key_policy: Limiter,
    pub(crate) put_key_policy_per_key: Limiter,
}

impl AccountLimiters {
    pub fn new(limits: &RateLimits) -> Self {
        Self {
            describe_application: Limiter::new(limits.describe_application),
            update_application: Limiter::new(limits.update_application),
            describe_key: Limiter::new(limits.describe_key),
            get_key_policy: Limiter::new(limits.get_key_policy),
            put_key_policy: Limiter::new(limits.put_key_policy),
            put_key_policy_per_key: Limiter::new(limits.put_key_policy_per_key),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn clones_share_the_budget_of_one_account() {
        let one = NonZeroU32::new(1);
        let a = AccountLimiters::new(&RateLimits {
            put_key_policy: one,
            ..RateLimits::unlimited()
        });
        let b = a.clone();
        let other_account = AccountLimiters::new(&RateLimits {
            put_key_policy: one,
            ..RateLimits::unlimited()
        });
        a.put_key_policy.wait("us-east-1").await;
        // Another region, and another account, still have their burst.
        let quick = std::time::Duration::from_millis(200);
        tokio::time::timeout(quick, b.put_key_policy.wait("eu-west-1"))
            .await
            .expect("another region is not paced by this one");
        tokio::time::timeout(quick, other_account.put_key_policy.wait("us-east-1"))
            .await
            .expect("another account is not paced by this one");
        // The same account and region through a clone (another role's clients) waits.
        assert!(
            tokio::time::timeout(quick, b.put_key_policy.wait("us-east-1"))
                .await
                .is_err(),
            "a clone shares the account's budget"
        );
    }
}
