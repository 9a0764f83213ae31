//! Request quotas: one token bucket per (account, region, operation), shared by every caller,
//! as KMS and MSF count them. A bucket holds one second of its rate and refills continuously,
//! so a burst of N calls above the rate sees about N - rate throttled.
//!
//! KMS rates are the documented request quotas (AWS KMS Developer Guide, "Request quotas"):
//! DescribeKey 2,000/s, GetKeyPolicy 1,000/s, PutKeyPolicy 15/s; the other operations the
//! emulator serves are 5/s (CreateKey, CreateAlias, EnableKey, DisableKey, key deletion) and
//! ListAliases 100/s. MSF does not document per-operation rates; its control-plane quota is a
//! setting ([`Quotas::msf_per_second`]). Only signed requests count (see `server.rs`):
//! unsigned ones are scripts seeding state.

use std::collections::HashMap;
use std::time::Instant;

/// Which quotas apply; `None` in [`super::EmulatorConfig::quotas`] means no quotas at all.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Quotas {
    /// Requests per second of each MSF operation, per account and region.
    pub msf_per_second: u32,
}

/// MSF's rate when none is given. MSF documents none, so this is an invented figure: above the
/// controller's default start (400/s) so that a test sees MSF throttling only when it sets a
/// lower quota or injects throttles as a fault (`PUT /_emulator/faults/...`).
pub const DEFAULT_MSF_PER_SECOND: u32 = 1_000;

impl Default for Quotas {
    fn default() -> Self {
        Self {
            msf_per_second: DEFAULT_MSF_PER_SECOND,
        }
    }
}

/// KMS's documented rate for an operation, per second.
pub fn kms_rate(op: &str) -> u32 {
    match op {
        "DescribeKey" => 2_000,
        "GetKeyPolicy" => 1_000,
        "PutKeyPolicy" => 15,
        "ListAliases" => 100,
        // CreateKey, CreateAlias, EnableKey, DisableKey, ScheduleKeyDeletion,
        // CancelKeyDeletion: the 5/s quotas of key management operations.
        _ => 5,
    }
}

#[derive(Debug)]
struct Bucket {
    tokens: f64,
    last: Instant,
}

#[derive(Debug, Default)]
pub struct Buckets {
    buckets: HashMap<(String, String, String), Bucket>,
}

impl Buckets {
    /// Takes one token for a call of `op` at `rate` per second; false = throttle it.
    pub fn take(&mut self, account: &str, region: &str, op: &str, rate: u32, now: Instant) -> bool {
        let rate = f64::from(rate.max(1));
        let key = (account.to_string(), region.to_string(), op.to_string());
        let b = self.buckets.entry(key).or_insert(Bucket {
            tokens: rate,
            last: now,
        });
        let elapsed = now.saturating_duration_since(b.last).as_secs_f64();
        b.tokens = (b.tokens + elapsed * rate).min(rate);
        b.last = now;
        if b.tokens >= 1.0 {
            b.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn burst_then_refill() {
        let mut b = Buckets::default();
        let t0 = Instant::now();
        let passed = (0..40)
            .filter(|_| b.take("a", "r", "PutKeyPolicy", 15, t0))
            .count();
        assert_eq!(passed, 15);
        // Another region and another account have their own buckets.
        assert!(b.take("a", "r2", "PutKeyPolicy", 15, t0));
        assert!(b.take("b", "r", "PutKeyPolicy", 15, t0));
        // A second later the bucket is full again (but no fuller).
        let t1 = t0 + Duration::from_secs(2);
        let passed = (0..40)
            .filter(|_| b.take("a", "r", "PutKeyPolicy", 15, t1))
            .count();
        assert_eq!(passed, 15);
        assert_eq!(kms_rate("DescribeKey"), 2_000);
    }
}
