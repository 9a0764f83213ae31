//! Per-object exponential backoff with jitter (kube-runtime's controller has none of its own
//! for reconcile errors).
//!
//! Why per object: one throttled key or a broken application must not slow the others, and
//! must not hammer AWS either. The delay doubles with each consecutive failure of the same
//! object, up to a cap, and is spread by "equal jitter" (half fixed, half random) so that many
//! objects failing together do not retry in lockstep. A success resets the object.
//!
//! Terminal errors do not use this: they wait for a spec change (or the long resync).

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

#[derive(Clone, Copy, Debug)]
pub struct BackoffPolicy {
    pub base: Duration,
    pub max: Duration,
}

impl Default for BackoffPolicy {
    fn default() -> Self {
        Self {
            base: Duration::from_secs(5),
            max: Duration::from_secs(300),
        }
    }
}

impl BackoffPolicy {
    /// The delay after `failures` consecutive failures (1 = first failure), with `jitter` in
    /// [0, 1] (an input so tests are deterministic). Result lies in [d/2, d] where d doubles.
    pub fn delay(&self, failures: u32, jitter: f64) -> Duration {
        let exp = failures.saturating_sub(1).min(20);
        let full = self.base.saturating_mul(1u32 << exp).min(self.max);
        let jitter = jitter.clamp(0.0, 1.0);
        full / 2 + full.mul_f64(jitter / 2.0)
    }
}

/// Consecutive failures per object (key: "namespace/name" or any stable id).
#[derive(Debug, Default)]
pub struct Backoff {
    policy: BackoffPolicy,
    failures: Mutex<HashMap<String, u32>>,
}

impl Backoff {
    pub fn new(policy: BackoffPolicy) -> Self {
        Self {
            policy,
            failures: Mutex::default(),
        }
    }

    /// Records one more failure and returns how long to wait before trying again.
    pub fn failed(&self, key: &str) -> Duration {
        let n = {
            let mut map = self.failures.lock().unwrap_or_else(|e| e.into_inner());
            let n = map.entry(key.to_string()).or_insert(0);
            *n = n.saturating_add(1);
            *n
        };
        self.policy.delay(n, rand::random::<f64>())
    }

    /// The object succeeded (or is gone): start from scratch next time.
    pub fn reset(&self, key: &str) {
        self.failures
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(key);
    }

    pub fn failures(&self, key: &str) -> u32 {
        self.failures
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(key)
            .copied()
            .unwrap_or(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn doubles_with_jitter_and_caps() {
        let p = BackoffPolicy {
            base: Duration::from_secs(4),
            max: Duration::from_secs(60),
        };
        assert_eq!(p.delay(1, 0.0), Duration::from_secs(2));
        assert_eq!(p.delay(1, 1.0), Duration::from_secs(4));
        assert_eq!(p.delay(2, 1.0), Duration::from_secs(8));
        assert_eq!(p.delay(3, 0.5), Duration::from_secs(12));
        assert_eq!(p.delay(10, 1.0), Duration::from_secs(60));
        assert_eq!(p.delay(u32::MAX, 0.0), Duration::from_secs(30));
        // Out-of-range jitter is clamped rather than producing a surprising delay.
        assert_eq!(p.delay(1, 7.0), Duration::from_secs(4));
    }

    #[test]
    fn per_object_and_reset() {
        let b = Backoff::new(BackoffPolicy {
            base: Duration::from_secs(10),
            max: Duration::from_secs(1000),
        });
        let d1 = b.failed("ns/a");
        let d2 = b.failed("ns/a");
        let d3 = b.failed("ns/a");
        assert!(d1 <= Duration::from_secs(10) && d1 >= Duration::from_secs(5));
        assert!(d2 >= Duration::from_secs(10) && d2 <= Duration::from_secs(20));
        assert!(d3 >= Duration::from_secs(20) && d3 <= Duration::from_secs(40));
        assert_eq!(b.failures("ns/b"), 0);
        assert!(b.failed("ns/b") <= Duration::from_secs(10));
        b.reset("ns/a");
        assert_eq!(b.failures("ns/a"), 0);
        assert_eq!(b.failures("ns/b"), 1);
    }
}
