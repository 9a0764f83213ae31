//! Per-key state shared by every reconcile in the process.
//!
//! - **Write serialisation**: `PutKeyPolicy` has no optimistic concurrency, so two reconciles
//!   writing one key's policy at once would lose one another's statements. Every read-modify-
//!   write of a key policy happens under that key's async lock ([`KeyLocks::lock`]).
//! - **Shared reads**: many applications may share one key; within a window (a resync wave) the
//!   policy text read or verified by one reconcile is reused by the others, so N applications
//!   cost one `GetKeyPolicy`, not N. A write is never based on a shared read alone: the caller
//!   re-reads first (see `reconcile`), so a human's edit inside the window is not overwritten.
//! - **Resolved key ids**: `spec.keyId` may be an alias; co-tenants of a key are found by
//!   resolved ARN, remembered here for a while.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::OwnedMutexGuard;

/// Proof that the caller holds a key's lock.
pub struct KeyGuard {
    pub key_arn: String,
    _guard: OwnedMutexGuard<()>,
}

#[derive(Debug)]
struct Cached {
    text: String,
    at: Instant,
}

#[derive(Debug)]
pub struct KeyLocks {
    locks: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
    policies: Mutex<HashMap<String, Cached>>,
    /// How long a policy text read by one reconcile may be reused by another.
    pub share_window: Duration,
}

impl KeyLocks {
    pub fn new(share_window: Duration) -> Self {
        Self {
            locks: Mutex::default(),
            policies: Mutex::default(),
            share_window,
        }
    }

    /// Waits for, then holds, the lock of `key_arn` until the guard is dropped.
    pub async fn lock(&self, key_arn: &str) -> KeyGuard {
        let lock = {
            let mut map = self.locks.lock().unwrap_or_else(|e| e.into_inner());
            map.entry(key_arn.to_string()).or_default().clone()
        };
        KeyGuard {
            key_arn: key_arn.to_string(),
            _guard: lock.lock_owned().await,
        }
    }

    /// The policy text of the guarded key if one was read within the share window.
    pub fn shared_policy(&self, guard: &KeyGuard, now: Instant) -> Option<String> {
        let map = self.policies.lock().unwrap_or_else(|e| e.into_inner());
        map.get(&guard.key_arn)
            .filter(|c| now.saturating_duration_since(c.at) < self.share_window)
            .map(|c| c.text.clone())
    }

    /// Remembers what was just read (or written and verified) for the guarded key.
    pub fn remember_policy(&self, guard: &KeyGuard, text: &str, now: Instant) {
        if self.share_window.is_zero() {
            return;
        }
        self.policies
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(
                guard.key_arn.clone(),
                Cached {
                    text: text.to_string(),
                    at: now,
                },
            );
    }

    /// Drops a remembered policy (e.g. after a failed write whose effect is unknown).
    pub fn forget_policy(&self, key_arn: &str) {
        self.policies
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(key_arn);
    }
}

/// `(region, keyId as written)` -> resolved key ARN, for a while (aliases can be re-pointed).
#[derive(Debug)]
pub struct ResolvedKeys {
    map: Mutex<HashMap<(String, String), (String, Instant)>>,
    ttl: Duration,
}

impl ResolvedKeys {
    pub fn new(ttl: Duration) -> Self {
        Self {
            map: Mutex::default(),
            ttl,
        }
    }

    pub fn get(&self, region: &str, key_id: &str, now: Instant) -> Option<String> {
        // A key ARN resolves to itself: no lookup, no call.
        if key_id.starts_with("arn:") && key_id.contains(":key/") {
            return Some(key_id.to_string());
        }
        let map = self.map.lock().unwrap_or_else(|e| e.into_inner());
        map.get(&(region.to_string(), key_id.to_string()))
            .filter(|(_, at)| now.saturating_duration_since(*at) < self.ttl)
            .map(|(arn, _)| arn.clone())
    }

    pub fn put(&self, region: &str, key_id: &str, arn: &str, now: Instant) {
        self.map.lock().unwrap_or_else(|e| e.into_inner()).insert(
            (region.to_string(), key_id.to_string()),
            (arn.to_string(), now),
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn one_writer_per_key_and_other_keys_independent() {
        let locks = Arc::new(KeyLocks::new(Duration::from_secs(30)));
        let g1 = locks.lock("k1").await;
        // Another key is not blocked.
        let g2 = tokio::time::timeout(Duration::from_millis(100), locks.lock("k2")).await;
        assert!(g2.is_ok());
        // The same key waits until the first guard is dropped.
        let l = locks.clone();
        let waiter = tokio::spawn(async move { l.lock("k1").await.key_arn });
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(!waiter.is_finished());
        drop(g1);
        assert_eq!(waiter.await.unwrap(), "k1");
    }

    #[tokio::test]
    async fn shared_reads_expire_with_the_window() {
        let locks = KeyLocks::new(Duration::from_secs(30));
        let g = locks.lock("k").await;
        let t0 = Instant::now();
        assert_eq!(locks.shared_policy(&g, t0), None);
        locks.remember_policy(&g, "{}", t0);
        assert_eq!(
            locks
                .shared_policy(&g, t0 + Duration::from_secs(29))
                .as_deref(),
            Some("{}")
        );
        assert_eq!(locks.shared_policy(&g, t0 + Duration::from_secs(31)), None);
        locks.forget_policy("k");
        assert_eq!(locks.shared_policy(&g, t0), None);
        // A zero window shares nothing.
        let none = KeyLocks::new(Duration::ZERO);
        let g = none.lock("k").await;
        none.remember_policy(&g, "{}", t0);
        assert_eq!(none.shared_policy(&g, t0), None);
    }

    #[test]
    fn resolved_keys() {
        let r = ResolvedKeys::new(Duration::from_secs(60));
        let t0 = Instant::now();
        let arn = "arn:aws:kms:us-east-1:111122223333:key/k";
        assert_eq!(r.get("us-east-1", arn, t0).as_deref(), Some(arn));
        assert_eq!(r.get("us-east-1", "alias/a", t0), None);
        r.put("us-east-1", "alias/a", arn, t0);
        assert_eq!(r.get("us-east-1", "alias/a", t0).as_deref(), Some(arn));
        assert_eq!(r.get("eu-west-1", "alias/a", t0), None);
        assert_eq!(
            r.get("us-east-1", "alias/a", t0 + Duration::from_secs(61)),
            None
        );
    }
}
