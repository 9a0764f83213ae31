//! Per-key state shared by every reconcile in the process.
//!
//! - **Write serialisation**: `PutKeyPolicy` has no optimistic concurrency, so two reconciles
//!   writing one key's policy at once would lose one another's statements. Every read-modify-
//!   write of a key policy happens under that key's async lock ([`KeyLocks::lock`]).
//! - **Shared reads**: many applications may share one key; within a window (a resync wave) the
//!   policy text read or verified by one reconcile is reused by the others, so N applications
//!   cost one `GetKeyPolicy`, not N. A write is never based on a shared read alone: the caller
//!   re-reads first (see `reconcile`), so a human's edit inside the window is not overwritten.
//! - **Shared descriptions**: likewise one `DescribeKey` per key and window, whatever the number
//!   of applications on it (the call floor: a resync costs about one call per resource plus two
//!   per key). Only successful answers are shared; a failure is asked again by the next reconcile.
//!   A description never decides a write alone: KMS and MSF check the key again on every write.
//! - **Resolved key ids**: `spec.keyId` may be an alias; co-tenants of a key are found by
//!   resolved ARN, remembered here for a while.
//!
//! Memory: an entry older than the window is useless, so every insert sweeps them out; what
//! stays is one policy text and one description per key touched within the last window.

use std::collections::HashMap;
use std::hash::Hash;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::OwnedMutexGuard;

use crate::domain::ObservedKey;

/// Proof that the caller holds a key's lock.
pub struct KeyGuard {
    pub key_arn: String,
    _guard: OwnedMutexGuard<()>,
}

/// One async lock, shared by whoever asks for it by the same name.
type AsyncLock = Arc<tokio::sync::Mutex<()>>;

/// Values remembered for one window, swept on insert.
#[derive(Debug)]
struct Windowed<K, V> {
    map: Mutex<HashMap<K, (V, Instant)>>,
}

impl<K: Eq + Hash, V: Clone> Windowed<K, V> {
    fn new() -> Self {
        Self {
            map: Mutex::default(),
        }
    }

    fn get(&self, k: &K, now: Instant, window: Duration) -> Option<V> {
        let map = self.map.lock().unwrap_or_else(|e| e.into_inner());
        map.get(k)
            .filter(|(_, at)| now.saturating_duration_since(*at) < window)
            .map(|(v, _)| v.clone())
    }

    fn put(&self, k: K, v: V, now: Instant, window: Duration) {
        if window.is_zero() {
            return;
        }
        let mut map = self.map.lock().unwrap_or_else(|e| e.into_inner());
        map.retain(|_, (_, at)| now.saturating_duration_since(*at) < window);
        map.insert(k, (v, now));
    }

    fn remove(&self, k: &K) {
        self.map.lock().unwrap_or_else(|e| e.into_inner()).remove(k);
    }

    fn len(&self) -> usize {
        self.map.lock().unwrap_or_else(|e| e.into_inner()).len()
    }
}

#[derive(Debug)]
pub struct KeyLocks {
    locks: Mutex<HashMap<String, AsyncLock>>,
    /// One DescribeKey in flight per `(region, keyId as written)`: the reconciles of one key
    /// start together (a resync wave) and would otherwise all miss the shared answer.
    describing: Mutex<HashMap<(String, String), AsyncLock>>,
    /// Key ARN -> policy text.
    policies: Windowed<String, Arc<str>>,
    /// `(region, keyId as written)` and `(region, key ARN)` -> DescribeKey's answer.
    descriptions: Windowed<(String, String), Arc<ObservedKey>>,
    /// How long a policy text or key description read by one reconcile may be reused by
    /// another.
    pub share_window: Duration,
}

impl KeyLocks {
    pub fn new(share_window: Duration) -> Self {
        Self {
            locks: Mutex::default(),
            describing: Mutex::default(),
            policies: Windowed::new(),
            descriptions: Windowed::new(),
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

    /// Waits for, then holds, the right to describe `key_id` in `region`: whoever waited
    /// finds the answer of the one before it shared ([`KeyLocks::shared_description`]).
    pub async fn describing(&self, region: &str, key_id: &str) -> OwnedMutexGuard<()> {
        let lock = {
            let mut map = self.describing.lock().unwrap_or_else(|e| e.into_inner());
            map.entry((region.to_string(), key_id.to_string()))
                .or_default()
                .clone()
        };
        lock.lock_owned().await
    }

    /// The policy text of the guarded key if one was read within the share window.
    pub fn shared_policy(&self, guard: &KeyGuard, now: Instant) -> Option<String> {
        self.policies
            .get(&guard.key_arn, now, self.share_window)
            .map(|t| t.to_string())
    }

    /// Remembers what was just read (or written and verified) for the guarded key.
    pub fn remember_policy(&self, guard: &KeyGuard, text: &str, now: Instant) {
        self.policies
            .put(guard.key_arn.clone(), text.into(), now, self.share_window);
    }

    /// Drops a remembered policy (e.g. after a failed write whose effect is unknown).
    pub fn forget_policy(&self, key_arn: &str) {
        self.policies.remove(&key_arn.to_string());
    }

    /// DescribeKey's answer for `key_id` (as written, or the resolved ARN) in `region`, if one
    /// was read within the share window.
    pub fn shared_description(
        &self,
        region: &str,
        key_id: &str,
        now: Instant,
    ) -> Option<ObservedKey> {
        self.descriptions
            .get(
                &(region.to_string(), key_id.to_string()),
                now,
                self.share_window,
            )
            .map(|k| (*k).clone())
    }

    /// Remembers a successful DescribeKey under the id asked and under the resolved ARN, so a
    /// resource naming the key by alias and one naming it by ARN share one call.
    pub fn remember_description(
        &self,
        region: &str,
        key_id: &str,
        key: &ObservedKey,
        now: Instant,
    ) {
        let key = Arc::new(key.clone());
        let w = self.share_window;
        if key_id != key.arn {
            self.descriptions
                .put((region.to_string(), key.arn.clone()), key.clone(), now, w);
        }
        self.descriptions
            .put((region.to_string(), key_id.to_string()), key, now, w);
    }

    /// How many policy texts and key descriptions are remembered (memory checks in tests).
    pub fn remembered(&self) -> (usize, usize) {
        (self.policies.len(), self.descriptions.len())
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

    fn key(arn: &str) -> ObservedKey {
        ObservedKey {
            arn: arn.into(),
            key_id: "k".into(),
            account: "111122223333".into(),
            region: "us-east-1".into(),
            state: crate::domain::KeyState::Enabled,
            spec: "SYMMETRIC_DEFAULT".into(),
            usage: "ENCRYPT_DECRYPT".into(),
            manager: crate::domain::KeyManager::Customer,
        }
    }

    #[test]
    fn descriptions_are_shared_by_alias_and_arn_within_the_window() {
        let locks = KeyLocks::new(Duration::from_secs(30));
        let arn = "arn:aws:kms:us-east-1:111122223333:key/k";
        let t0 = Instant::now();
        assert_eq!(locks.shared_description("us-east-1", "alias/a", t0), None);
        locks.remember_description("us-east-1", "alias/a", &key(arn), t0);
        let later = t0 + Duration::from_secs(29);
        for id in ["alias/a", arn] {
            assert_eq!(
                locks.shared_description("us-east-1", id, later),
                Some(key(arn)),
                "{id}"
            );
        }
        assert_eq!(locks.shared_description("eu-west-1", arn, later), None);
        assert_eq!(
            locks.shared_description("us-east-1", arn, t0 + Duration::from_secs(31)),
            None
        );
        // An insert after the window sweeps what expired: one key's entries stay.
        let t1 = t0 + Duration::from_secs(60);
        locks.remember_description("us-east-1", arn, &key(arn), t1);
        assert_eq!(locks.remembered(), (0, 1));
        // A zero window shares nothing.
        let none = KeyLocks::new(Duration::ZERO);
        none.remember_description("us-east-1", arn, &key(arn), t0);
        assert_eq!(none.shared_description("us-east-1", arn, t0), None);
    }

    #[test]
    fn expired_policies_are_swept_on_insert() {
        let locks = KeyLocks::new(Duration::from_secs(30));
        let t0 = Instant::now();
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        let (g1, g2) = rt.block_on(async { (locks.lock("k1").await, locks.lock("k2").await) });
        locks.remember_policy(&g1, "{}", t0);
        locks.remember_policy(&g2, "{}", t0 + Duration::from_secs(31));
        assert_eq!(locks.remembered(), (1, 0));
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
