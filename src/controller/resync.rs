//! How often `run` resyncs converged resources, and how resyncs share the reconcile slots with
//! new work. The arithmetic is PURE (time and randomness are inputs); [`Pacer`] holds the
//! little shared state (a mean reconcile time, resyncs in flight per controller), no I/O.
//!
//! Why this exists: kube-runtime's scheduler keeps the requests that are due in a `HashSet`
//! and starts them in hash order, not in due order (kube-runtime 5, `scheduler.rs`, `pending`).
//! While more requests are due than `--concurrency` can serve, the same ones win every time:
//! at 10,000 resources and a 5-minute resync (about 33 reconciles/s asked, about 24 served),
//! 2,703 resources were never reconciled in 30 minutes while the converged ones were resynced
//! again and again (BENCHMARKS.md, "Controller footprint"). Two rules keep that from happening:
//!
//! 1. **Demand**: resyncs may ask for at most `--resync-share` (default half) of the reconcile
//!    capacity. Capacity is `--concurrency` slots divided by the mean reconcile time (measured,
//!    so slow AWS answers stretch it too), so a controller's effective period is
//!    `max(--resync-period, resources x mean reconcile / (share x concurrency))`, and each
//!    resource's next resync is that plus 0-20 % jitter, so that resources which converged
//!    together do not come due together. The jitter only lengthens: demand stays under the
//!    bound.
//! 2. **Priority**: at most `concurrency - 1` resyncs run at once (one with `--concurrency 1`).
//!    A resync started beyond that is deferred without calling AWS (a few microseconds of a
//!    slot), so whatever the hash order, a new resource, a spec change, a retry annotation or
//!    a resource whose work is in flight always finds a slot. Deferred resyncs get turns, in
//!    the order they were deferred, spaced by the time the resync slots take to serve one
//!    (mean reconcile / resync slots): a first-come-first-served queue on top of the
//!    unordered one. A crowd of due resyncs (everything a restarted controller finds
//!    converged) is so served at the pace of the slots, each deferred about once, and is
//!    through about as soon as without the rule (so a key's policy read is still shared).
//!
//! A "resync" is a reconcile of a resource whose last reconcile left nothing in flight
//! (`Reconciling=False`: converged, blocked or refused) and whose spec and retry annotation it
//! has already seen ([`is_resync`]): the cached object tells, no bookkeeping per resource.

use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use kube::{Resource, ResourceExt};

use crate::api::{ApplicationEncryption, RETRY_UPDATE_ANNOTATION, condition_types};

/// The default `--resync-share`: resyncs leave at least half the reconcile capacity to new
/// work, so a burst of new resources converges at half speed or better in steady state.
pub const DEFAULT_SHARE: f64 = 0.5;
/// The largest extra delay added to a resync, as a share of the period.
pub const JITTER: f64 = 0.2;
/// The mean reconcile time assumed before one is measured: what spaces the turns of the
/// resyncs a restarted controller defers in its first moments (a period is only computed after
/// a reconcile was measured). Short on purpose: a turn given too early is given again (a
/// deferral costs microseconds), a turn given too late would leave resync slots idle.
pub const ASSUMED_RECONCILE: Duration = Duration::from_millis(100);
/// The weight of the latest reconcile in the mean (about the last 20 count).
const SMOOTHING: f64 = 0.05;
/// The shortest spacing of deferred resyncs' turns.
const MIN_SPACING: Duration = Duration::from_millis(1);

/// The period that keeps the resyncs of `resources` under `share` of the capacity of
/// `concurrency` slots whose reconciles take `reconcile` on average, never shorter than
/// `configured`.
pub fn effective_period(
    configured: Duration,
    resources: usize,
    concurrency: u16,
    reconcile: Duration,
    share: f64,
) -> Duration {
    let slots = f64::from(concurrency.max(1)) * share.clamp(f64::MIN_POSITIVE, 1.0);
    // Slot-seconds the resyncs of one period need, spread over the slots they may use.
    let needed = resources as f64 * reconcile.as_secs_f64() / slots;
    // Saturates at Duration::MAX rather than panicking on absurd inputs.
    Duration::try_from_secs_f64(needed)
        .unwrap_or(Duration::MAX)
        .max(configured)
}

/// A resource's next resync: the period plus up to [`JITTER`] of it (`u` uniform in [0, 1)).
pub fn jittered(period: Duration, u: f64) -> Duration {
    scale(period, 1.0 + JITTER * u.clamp(0.0, 1.0))
}

/// How far apart deferred resyncs get their turns: the time [`resync_slots`] slots take to
/// serve one more at `reconcile` each.
pub fn spacing(concurrency: u16, reconcile: Duration) -> Duration {
    let slots = u32::try_from(resync_slots(concurrency)).unwrap_or(u32::MAX);
    (reconcile / slots).max(MIN_SPACING)
}

/// A deferred resync's turn: one spacing after the last turn given, or after `now` when the
/// queue of turns is behind it.
pub fn next_turn(now: Instant, last_turn: Instant, spacing: Duration) -> Instant {
    let after = now.max(last_turn);
    after.checked_add(spacing).unwrap_or(after)
}

/// `d x factor`, saturating instead of panicking like `Duration::mul_f64`.
fn scale(d: Duration, factor: f64) -> Duration {
    Duration::try_from_secs_f64(d.as_secs_f64() * factor).unwrap_or(Duration::MAX)
}

/// How many resyncs may run at once: all slots but one, so new work always finds one.
pub fn resync_slots(concurrency: u16) -> usize {
    usize::from(concurrency).saturating_sub(1).max(1)
}

/// Whether reconciling `o` now is a resync: its last reconcile left nothing in flight
/// (`Reconciling=False`), at its current generation, and no retry annotation it has not
/// acted on. Everything else (a new resource, a spec change, a wait, a backoff) is not.
pub fn is_resync(o: &ApplicationEncryption) -> bool {
    let Some(status) = o.status.as_ref() else {
        return false;
    };
    let seen_generation = status.observed_generation == o.meta().generation;
    let settled = status
        .conditions
        .iter()
        .any(|c| c.type_ == condition_types::RECONCILING && c.status == "False");
    let retry = o.annotations().get(RETRY_UPDATE_ANNOTATION);
    let retry_seen = retry.is_none_or(|v| {
        status
            .last_update
            .as_ref()
            .is_some_and(|u| u.retry.as_ref() == Some(v))
    });
    seen_generation && settled && retry_seen && o.meta().deletion_timestamp.is_none()
}

/// What `run` was configured with.
#[derive(Clone, Copy, Debug)]
pub struct ResyncConfig {
    /// `--resync-period`: the shortest period.
    pub configured: Duration,
    /// `--resync-share`: in (0, 1].
    pub share: f64,
    /// `--concurrency`, per controller.
    pub concurrency: u16,
}

/// The shared state of the resync rules, for `controllers` controllers (one per watched
/// namespace, or one for all).
pub struct Pacer {
    config: ResyncConfig,
    /// The mean reconcile time in seconds (None before the first).
    mean: Mutex<Option<f64>>,
    in_flight: Vec<AtomicUsize>,
    /// The last effective period of each controller, in milliseconds (gauge and log).
    periods: Vec<AtomicU64>,
    /// The last turn given to a deferred resync, per controller ([`next_turn`]).
    last_turn: Vec<Mutex<Instant>>,
    /// The period last logged per controller, in milliseconds: a change of a fifth or more is
    /// logged again.
    logged: Vec<AtomicU64>,
}

/// A resync slot, freed when dropped.
pub struct ResyncSlot<'a>(&'a AtomicUsize);

impl Drop for ResyncSlot<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

impl Pacer {
    pub fn new(config: ResyncConfig, controllers: usize) -> Self {
        let controllers = controllers.max(1);
        Self {
            config,
            mean: Mutex::new(None),
            in_flight: (0..controllers).map(|_| AtomicUsize::new(0)).collect(),
            periods: (0..controllers)
                .map(|_| AtomicU64::new(config.configured.as_millis() as u64))
                .collect(),
            last_turn: (0..controllers)
                .map(|_| Mutex::new(Instant::now()))
                .collect(),
            logged: (0..controllers)
                .map(|_| AtomicU64::new(config.configured.as_millis() as u64))
                .collect(),
        }
    }

    /// One reconcile took `seconds` (deferred resyncs are not measured).
    pub fn measured(&self, seconds: f64) {
        if !seconds.is_finite() || seconds < 0.0 {
            return;
        }
        let mut mean = self.mean.lock().unwrap_or_else(|e| e.into_inner());
        *mean = Some(match *mean {
            None => seconds,
            Some(m) => m + SMOOTHING * (seconds - m),
        });
    }

    /// The mean reconcile time, or [`ASSUMED_RECONCILE`] before the first was measured.
    pub fn mean_reconcile(&self) -> Duration {
        let mean = *self.mean.lock().unwrap_or_else(|e| e.into_inner());
        mean.and_then(|s| Duration::try_from_secs_f64(s).ok())
            .unwrap_or(ASSUMED_RECONCILE)
    }

    /// Controller `controller`'s effective period with `resources` cached; remembered for
    /// [`Pacer::longest_period`].
    pub fn period(&self, controller: usize, resources: usize) -> Duration {
        let ResyncConfig {
            configured,
            share,
            concurrency,
        } = self.config;
        let mean = self.mean_reconcile();
        let period = effective_period(configured, resources, concurrency, mean, share);
        let millis = u64::try_from(period.as_millis()).unwrap_or(u64::MAX);
        if let Some(p) = self.periods.get(controller) {
            p.store(millis, Ordering::Relaxed);
        }
        let Some(logged) = self.logged.get(controller) else {
            return period;
        };
        let last = logged.load(Ordering::Relaxed);
        if millis.abs_diff(last) > last / 5 {
            logged.store(millis, Ordering::Relaxed);
            tracing::info!(
                period = ?period,
                resources,
                controller,
                mean_reconcile_ms = mean.as_millis() as u64,
                concurrency,
                share,
                "resync period: resyncs stay under the share of reconcile capacity"
            );
        }
        period
    }

    /// The longest effective period of any controller (the gauge).
    pub fn longest_period(&self) -> Duration {
        let ms = self
            .periods
            .iter()
            .map(|p| p.load(Ordering::Relaxed))
            .max()
            .unwrap_or(0);
        Duration::from_millis(ms)
    }

    /// A converged resource's next resync (`u` uniform in [0, 1)).
    pub fn next_resync(&self, controller: usize, resources: usize, u: f64) -> Duration {
        jittered(self.period(controller, resources), u)
    }

    /// How long from `now` a resync of `controller` that found no free resync slot waits for
    /// its turn.
    pub fn deferred(&self, controller: usize, now: Instant) -> Duration {
        let spacing = spacing(self.config.concurrency, self.mean_reconcile());
        let Some(last) = self.last_turn.get(controller) else {
            return spacing;
        };
        let mut last = last.lock().unwrap_or_else(|e| e.into_inner());
        *last = next_turn(now, *last, spacing);
        last.saturating_duration_since(now)
    }

    /// A resync slot of `controller`, or None when [`resync_slots`] resyncs run already.
    pub fn try_start(&self, controller: usize) -> Option<ResyncSlot<'_>> {
        let counter = self.in_flight.get(controller)?;
        let limit = resync_slots(self.config.concurrency);
        counter
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < limit).then_some(n + 1)
            })
            .ok()
            .map(|_| ResyncSlot(counter))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::{ApplicationEncryptionSpec, ApplicationEncryptionStatus, Condition};

    const MIN5: Duration = Duration::from_secs(300);

    #[test]
    fn the_period_grows_with_the_resources_once_resyncs_would_pass_their_share() {
        let ms = Duration::from_millis;
        // 1,000 resources at 0.33 s on 8 slots, half for resyncs: 82.5 s < 5 min.
        assert_eq!(effective_period(MIN5, 1_000, 8, ms(330), 0.5), MIN5);
        // The benchmark's 10,000: 10,000 x 0.33 / 4 = 825 s (about 12 resyncs/s of 24).
        assert_eq!(
            effective_period(MIN5, 10_000, 8, ms(330), 0.5),
            Duration::from_secs(825)
        );
        // All the capacity: half as long. Twice the slots: half as long.
        assert_eq!(
            effective_period(MIN5, 10_000, 8, ms(330), 1.0),
            Duration::from_secs(412) + ms(500)
        );
        assert_eq!(
            effective_period(MIN5, 10_000, 16, ms(330), 0.5),
            Duration::from_secs(412) + ms(500)
        );
        // The demand it leaves: resources / period <= share x concurrency / reconcile.
        let p = effective_period(Duration::from_secs(1), 60, 2, ms(250), 0.5);
        assert_eq!(p, Duration::from_secs(15));
        assert!(60.0 / p.as_secs_f64() <= 0.5 * 2.0 / 0.25 + 1e-9);
        // Degenerate inputs neither panic nor shorten the configured period.
        assert_eq!(effective_period(MIN5, 0, 8, ms(330), 0.5), MIN5);
        assert_eq!(effective_period(MIN5, 10, 0, ms(330), 0.5), MIN5);
        assert_eq!(
            effective_period(MIN5, usize::MAX, 1, Duration::MAX, 1e-300),
            Duration::MAX
        );
    }

    #[test]
    fn jitter_only_lengthens() {
        let p = Duration::from_secs(100);
        assert_eq!(jittered(p, 0.0), p);
        assert_eq!(jittered(p, 0.5), Duration::from_secs(110));
        assert_eq!(jittered(p, 1.0), Duration::from_secs(120));
        assert_eq!(jittered(p, 7.0), Duration::from_secs(120), "u is clamped");
        assert_eq!(jittered(Duration::MAX, 0.9), Duration::MAX);
    }

    #[test]
    fn deferred_resyncs_get_turns_in_order_at_the_pace_of_the_resync_slots() {
        let ms = Duration::from_millis;
        // 7 of 8 slots at 0.35 s: one more served every 50 ms. 10,000 deferred at once are
        // through in 500 s, as without deferrals.
        assert_eq!(spacing(8, ms(350)), ms(50));
        assert_eq!(spacing(2, ms(250)), ms(250));
        assert_eq!(spacing(8, Duration::ZERO), MIN_SPACING, "never spins");
        let t0 = Instant::now();
        // Behind: the next turn is one spacing from now; ahead: one after the last.
        assert_eq!(next_turn(t0 + ms(100), t0, ms(50)), t0 + ms(150));
        assert_eq!(next_turn(t0, t0 + ms(100), ms(50)), t0 + ms(150));
        let pacer = Pacer::new(
            ResyncConfig {
                configured: MIN5,
                share: 0.5,
                concurrency: 3,
            },
            2,
        );
        pacer.measured(0.4);
        // 2 resync slots at 0.4 s: turns every 200 ms, first come first served.
        let now = Instant::now() + ms(10);
        let turns: Vec<Duration> = (0..3).map(|_| pacer.deferred(0, now)).collect();
        assert_eq!(turns, [ms(200), ms(400), ms(600)]);
        // Each controller has its own queue; later, the queue has moved on.
        assert_eq!(pacer.deferred(1, now), ms(200));
        assert_eq!(pacer.deferred(0, now + ms(500)), ms(300));
        assert_eq!(pacer.deferred(0, now + Duration::from_secs(5)), ms(200));
        assert_eq!(pacer.deferred(9, now), ms(200), "no such controller");
    }

    #[test]
    fn resyncs_leave_one_slot_to_new_work() {
        assert_eq!(resync_slots(8), 7);
        assert_eq!(resync_slots(2), 1);
        assert_eq!(resync_slots(1), 1);
        assert_eq!(resync_slots(0), 1);
        let pacer = Pacer::new(
            ResyncConfig {
                configured: MIN5,
                share: 0.5,
                concurrency: 3,
            },
            2,
        );
        let a = pacer.try_start(0).expect("first");
        let b = pacer.try_start(0).expect("second");
        assert!(pacer.try_start(0).is_none(), "3 slots, 2 for resyncs");
        assert!(pacer.try_start(1).is_some(), "each controller has its own");
        assert!(pacer.try_start(2).is_none(), "no such controller");
        drop(a);
        assert!(pacer.try_start(0).is_some());
        drop(b);
    }

    #[test]
    fn the_pacer_measures_and_remembers_the_period() {
        let pacer = Pacer::new(
            ResyncConfig {
                configured: Duration::from_secs(1),
                share: 0.5,
                concurrency: 2,
            },
            2,
        );
        assert_eq!(pacer.mean_reconcile(), ASSUMED_RECONCILE);
        pacer.measured(0.25);
        pacer.measured(f64::NAN);
        pacer.measured(-1.0);
        assert_eq!(pacer.mean_reconcile(), Duration::from_millis(250));
        pacer.measured(1.25);
        assert_eq!(pacer.mean_reconcile(), Duration::from_millis(300));
        assert_eq!(pacer.period(0, 10), Duration::from_secs(3));
        assert_eq!(pacer.period(1, 2), Duration::from_secs(1));
        assert_eq!(pacer.longest_period(), Duration::from_secs(3));
        assert_eq!(pacer.next_resync(0, 10, 0.5), Duration::from_millis(3_300));
    }

    fn object(generation: i64, reconciling: Option<&str>) -> ApplicationEncryption {
        let spec: ApplicationEncryptionSpec = serde_json::from_value(serde_json::json!({
            "applicationName": "app",
            "keyType": "AwsOwnedKey"
        }))
        .unwrap();
        let mut o = ApplicationEncryption::new("r", spec);
        o.metadata.generation = Some(generation);
        o.status = reconciling.map(|s| ApplicationEncryptionStatus {
            observed_generation: Some(1),
            conditions: vec![Condition {
                type_: condition_types::RECONCILING.into(),
                status: s.into(),
                reason: "Converged".into(),
                message: Default::default(),
                last_transition_time: "2026-01-01T00:00:00Z".into(),
                observed_generation: Some(1),
            }],
            ..Default::default()
        });
        o
    }

    #[test]
    fn only_a_settled_resource_seen_at_its_generation_is_resynced() {
        assert!(is_resync(&object(1, Some("False"))));
        assert!(!is_resync(&object(1, None)), "never reconciled");
        assert!(!is_resync(&object(2, Some("False"))), "spec changed");
        assert!(!is_resync(&object(1, Some("True"))), "work in flight");
        let mut retried = object(1, Some("False"));
        retried.metadata.annotations =
            Some([(RETRY_UPDATE_ANNOTATION.to_string(), "2".to_string())].into());
        assert!(!is_resync(&retried), "a retry annotation not acted on");
        let record: crate::api::LastUpdate = serde_json::from_value(serde_json::json!({
            "keyType": "AwsOwnedKey",
            "time": "2026-01-01T00:00:00Z",
            "outcome": "RolledBack",
            "retry": "2",
        }))
        .unwrap();
        retried.status.as_mut().unwrap().last_update = Some(record);
        assert!(is_resync(&retried), "the retry was acted on");
    }
}
