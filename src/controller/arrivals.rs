//! When `run` may start writing: after every watched cache is synced, and after a burst of new
//! resources has arrived (I/O: timers only).
//!
//! Why: a key policy write covers the co-tenants the reconcile can see. Before the initial
//! lists of every watched namespace are in, a reconcile sees only part of them (extra writes)
//! and decides conflicts across namespaces without every claim (a wrong winner). And resources
//! applied together (`kubectl apply -f dir/`) arrive one by one over the watch: a reconcile
//! started on the first would write the key for it alone, the next for two, and so on.
//!
//! So: no reconcile starts before all caches are synced ([`Arrivals::wait_synced`]; the
//! watch streams report each initial list's end with [`Arrivals::store_synced`]. Not the
//! stores' own `wait_until_ready`: it wakes only its latest waiter, and the kube-runtime
//! Controller already waits on it), and a
//! reconcile of new work (a resource not yet reconciled at its generation) waits until no new
//! resource arrived for [`Arrivals::window`], at most [`Arrivals::max_wait`]
//! ([`Arrivals::settle`]). The first reconcile of a key then sees the whole burst and writes
//! the key once; the others find the shared policy compliant. Resources present at start do not
//! wait: arrivals are counted only after the caches are synced. Converged resources (resyncs)
//! never wait.
//!
//! Also measures the cold start: the log says when the caches were synced and how long after
//! that the first reconcile started (`first_reconcile_after_sync_ms`), both also as
//! `after_watch_start_ms` (since this loop started its watches).

use std::collections::BTreeSet;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use tokio::sync::watch;
use tokio::time::Instant;

/// The default quiet time that ends a burst of arrivals.
pub const DEFAULT_WINDOW: Duration = Duration::from_secs(1);

/// A burst that never goes quiet is cut after this many windows, so continuous churn delays
/// new work by at most this much. Long enough for one `kubectl apply` of a thousand
/// resources (about 10-20 s against a local API server) to be one burst.
const MAX_WINDOWS: u32 = 30;

#[derive(Debug)]
pub struct Arrivals {
    window: Duration,
    /// When the watches started (this Kubernetes loop, e.g. after becoming the leader).
    started: Instant,
    /// How many caches there are, and which have had their initial list.
    stores: usize,
    stores_synced: Mutex<BTreeSet<usize>>,
    all_synced: watch::Sender<bool>,
    synced: Mutex<Option<Instant>>,
    last_arrival: Mutex<Option<Instant>>,
    first_reconcile: AtomicBool,
}

impl Arrivals {
    /// `window`: the quiet time that ends a burst; zero turns coalescing off. `stores`: how
    /// many caches must be synced before any reconcile.
    pub fn new(window: Duration, stores: usize) -> Self {
        Self {
            window,
            started: Instant::now(),
            stores,
            stores_synced: Mutex::default(),
            all_synced: watch::Sender::new(stores == 0),
            synced: Mutex::new(None),
            last_arrival: Mutex::new(None),
            first_reconcile: AtomicBool::new(false),
        }
    }

    pub fn window(&self) -> Duration {
        self.window
    }

    /// The longest a reconcile of new work waits for a burst to end.
    pub fn max_wait(&self) -> Duration {
        self.window * MAX_WINDOWS
    }

    /// Cache `index` (0..stores) has its initial list (a relist after a watch error says it
    /// again; only the first time counts).
    pub fn store_synced(&self, index: usize) {
        let all = {
            let mut done = self.stores_synced.lock().unwrap_or_else(|e| e.into_inner());
            done.insert(index);
            done.len() >= self.stores
        };
        if !all {
            return;
        }
        let mut synced = self.synced.lock().unwrap_or_else(|e| e.into_inner());
        if synced.is_none() {
            let now = Instant::now();
            *synced = Some(now);
            tracing::info!(
                caches = self.stores,
                after_watch_start_ms = now.duration_since(self.started).as_millis() as u64,
                "caches synced: reconciles may start"
            );
        }
        self.all_synced.send_replace(true);
    }

    /// Waits until every cache is synced.
    pub async fn wait_synced(&self) {
        let mut rx = self.all_synced.subscribe();
        // Err: the sender is gone with `self`, which cannot happen while borrowed.
        let _ = rx.wait_for(|all| *all).await;
    }

    fn synced_at(&self) -> Option<Instant> {
        *self.synced.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A watch event that asks for a reconcile of new work (a new resource or a spec change).
    /// Before the caches are synced it is part of the initial list, not an arrival.
    pub fn saw(&self) {
        if self.synced_at().is_some() {
            *self.last_arrival.lock().unwrap_or_else(|e| e.into_inner()) = Some(Instant::now());
        }
    }

    /// Waits until no resource arrived for the window (at most [`Arrivals::max_wait`]); returns
    /// how long it waited.
    pub async fn settle(&self) -> Duration {
        let start = Instant::now();
        if self.window.is_zero() {
            return Duration::ZERO;
        }
        let deadline = start + self.max_wait();
        let mut waited = Duration::ZERO;
        loop {
            let last = *self.last_arrival.lock().unwrap_or_else(|e| e.into_inner());
            let now = Instant::now();
            match last.map(|l| l + self.window) {
                Some(quiet_at) if quiet_at > now && now < deadline => {
                    tokio::time::sleep_until(quiet_at.min(deadline)).await;
                    waited = start.elapsed();
                }
                _ => return waited,
            }
        }
    }

    /// Logs, once, how long after the caches were synced the first reconcile started: the
    /// cold-start figure (target: under a second).
    pub fn reconcile_started(&self) {
        if self.first_reconcile.swap(true, Ordering::Relaxed) {
            return;
        }
        if let Some(synced) = self.synced_at() {
            let now = Instant::now();
            tracing::info!(
                first_reconcile_after_sync_ms = now.duration_since(synced).as_millis() as u64,
                after_watch_start_ms = now.duration_since(self.started).as_millis() as u64,
                "first reconcile started"
            );
        }
    }
}

#[cfg(test)]
mod tests {
    //! Real time with short windows; only lower bounds are asserted (a loaded machine can only
    //! make a wait longer).
    use super::*;
    use std::sync::Arc;

    const W: Duration = Duration::from_millis(50);

    #[tokio::test]
    async fn many_wait_for_the_caches_and_all_are_woken() {
        let a = Arc::new(Arrivals::new(W, 1));
        let waiters: Vec<_> = (0..8)
            .map(|_| {
                let a = a.clone();
                tokio::spawn(async move { a.wait_synced().await })
            })
            .collect();
        tokio::task::yield_now().await;
        a.store_synced(0);
        for w in waiters {
            tokio::time::timeout(Duration::from_secs(10), w)
                .await
                .expect("every waiter woken")
                .unwrap();
        }
    }

    #[tokio::test]
    async fn nothing_waits_for_what_was_there_at_start() {
        let a = Arrivals::new(W, 2);
        // Events of the initial lists: not arrivals, even once one of two caches is synced.
        a.saw();
        a.store_synced(1);
        a.saw();
        a.store_synced(1);
        let waiting = tokio::time::timeout(W, a.wait_synced()).await;
        assert!(waiting.is_err(), "one of two caches is not synced yet");
        a.store_synced(0);
        a.wait_synced().await;
        assert_eq!(a.settle().await, Duration::ZERO);
    }

    #[tokio::test]
    async fn new_work_waits_for_the_burst_to_end() {
        let a = Arc::new(Arrivals::new(W, 1));
        a.store_synced(0);
        a.saw();
        let b = a.clone();
        let waiter = tokio::spawn(async move { b.settle().await });
        // Two more arrivals, 30 ms apart (under the window): one burst.
        let start = Instant::now();
        for _ in 0..2 {
            tokio::time::sleep(Duration::from_millis(30)).await;
            a.saw();
        }
        let last = start.elapsed();
        let waited = waiter.await.unwrap();
        assert!(waited >= last + W, "{waited:?} < {last:?} + {W:?}");
        // Once quiet, nothing waits.
        assert_eq!(a.settle().await, Duration::ZERO);
    }

    #[tokio::test]
    async fn a_burst_that_never_ends_is_cut() {
        let a = Arc::new(Arrivals::new(W, 1));
        a.store_synced(0);
        a.saw();
        let b = a.clone();
        let churn = tokio::spawn(async move {
            loop {
                tokio::time::sleep(W / 5).await;
                b.saw();
            }
        });
        let waited = a.settle().await;
        assert!(waited >= a.max_wait(), "{waited:?}");
        churn.abort();
        // Off: never waits.
        let off = Arrivals::new(Duration::ZERO, 1);
        off.store_synced(0);
        off.saw();
        assert_eq!(off.settle().await, Duration::ZERO);
    }
}
