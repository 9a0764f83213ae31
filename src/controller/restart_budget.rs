//! The rollout budget (`--max-concurrent-restarts`): how many of our UpdateApplication calls on
//! RUNNING applications may be in progress at once, per account and region. Updating a RUNNING
//! application restarts its job; that, not the request rate, is what a rollout must bound.
//!
//! - A slot is taken just before UpdateApplication of a RUNNING application and held while the
//!   application is UPDATING (or ROLLING_BACK) after our call. READY applications do not
//!   restart: their updates take no slot and never wait.
//! - A slot is freed when the resource's reconcile observes the application out of UPDATING
//!   (RUNNING, READY, rolled back, gone), or at once when MSF refused the call (terminal or
//!   conflict: nothing started). A transient failure (timeout: the update may have started)
//!   keeps the slot until the application is observed.
//! - A resource that finds the budget full waits (requeue, reason `WaitingForRestartBudget`)
//!   without calling UpdateApplication, so waiting never costs an extra update.
//! - After a restart of the controller, the new process counts an update of ours in progress
//!   (`status.lastUpdate` InProgress and the application last seen UPDATING or ROLLING_BACK) as
//!   holding a slot, even above the budget: `run` reads every status from its cache before its
//!   first reconcile ([`crate::controller::lifecycle::seed_restart_budget`]), and every
//!   reconcile that observes such an update counts it too (`apply`). It cannot tell whether the
//!   application was RUNNING or READY before, so it counts both (conservative); the resource's
//!   next reconcile frees the slot once the application is out of UPDATING.
//! - An UpdateApplication answered with the application already out of UPDATING frees its slot
//!   at once (nothing left to wait for).
//! - A slot counted for a previous process's update is *seeded*: a leader started after a
//!   SIGKILL finds the statuses its predecessor last wrote, and the updates they show UPDATING
//!   have often ended while no process ran. Waiting for each resource's reconcile to come round
//!   (minutes at a thousand resources, longer than a leader may live under failover) would
//!   stall every restart, so `run` asks MSF about the seeded ones once, right after seeding
//!   ([`crate::controller::restart_seed`]), and frees those that ended
//!   ([`RestartBudget::release_seeded`]; not a slot this process has since taken itself).
//! - A resource deleted while its restart is in progress keeps its finalizer until the restart
//!   ends, then frees the slot ([`crate::controller::finalizer`]); the cleanup's revert to the
//!   AWS owned key takes a slot like any update, and waits for one when the budget is full.
//! - Resources waiting for a slot are requeued further apart the more of them wait
//!   ([`waiting_requeue`]): polling every 10 s each, hundreds of waiters would take the pacing
//!   the restarts in progress need to be observed and freed.
//!
//! No I/O, no clock: a map behind a mutex, shared by every client set of one account.

use std::collections::{BTreeSet, HashMap};
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};

use crate::domain::ApplicationStatus;
use crate::planner::{ConditionReport, ConditionStatus, Plan, Step};

/// The reason a resource reports while it waits for a slot.
pub const WAITING_FOR_RESTART_BUDGET: &str = "WaitingForRestartBudget";

/// The default of `--max-concurrent-restarts`.
pub const DEFAULT_MAX_CONCURRENT_RESTARTS: u32 = 10;

/// What [`RestartBudget::admit`] decided.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Admission {
    /// The update restarts nothing (the application is not RUNNING): no slot needed.
    NoRestart,
    /// A slot is held for the application.
    Granted,
    /// Every slot is taken: wait.
    Full { in_use: usize, limit: u32 },
}

#[derive(Debug, Default)]
struct Region {
    /// Applications whose restart (our update) is in progress: the slots in use.
    restarting: BTreeSet<String>,
    /// Applications updated while READY and still UPDATING: no slot, but known to be ours, so
    /// the observation does not mistake them for a previous process's restart.
    updating_without_restart: BTreeSet<String>,
    /// The slots of `restarting` counted for a previous process's update (seeded from a
    /// status, or observed), not taken by this process.
    seeded: BTreeSet<String>,
    /// Applications whose update found every slot taken and has not had one since.
    waiting: BTreeSet<String>,
}

/// The slots of one account, per region.
#[derive(Debug)]
pub struct RestartBudget {
    /// 0 = no budget (slots are still counted, for the metric).
    limit: u32,
    regions: Mutex<HashMap<String, Region>>,
    seeded: AtomicBool,
}

impl RestartBudget {
    pub fn new(limit: u32) -> Self {
        Self {
            limit,
            regions: Mutex::default(),
            seeded: AtomicBool::new(false),
        }
    }

    /// True the first time only: `run` seeds the budget from the statuses once per process.
    pub fn first_seeding(&self) -> bool {
        !self.seeded.swap(true, Ordering::SeqCst)
    }

    pub fn limit(&self) -> u32 {
        self.limit
    }

    fn with<T>(&self, region: &str, f: impl FnOnce(&mut Region) -> T) -> T {
        // A poisoned lock only means another thread panicked mid-update; the sets stay valid.
        let mut regions = self.regions.lock().unwrap_or_else(|p| p.into_inner());
        f(regions.entry(region.to_string()).or_default())
    }

    /// Asks for a slot for an update of `application`, now in `status`.
    pub fn admit(&self, region: &str, application: &str, status: &ApplicationStatus) -> Admission {
        self.with(region, |r| {
            if *status != ApplicationStatus::Running {
                r.waiting.remove(application);
                r.updating_without_restart.insert(application.to_string());
                return Admission::NoRestart;
            }
            let in_use = r.restarting.len();
            if r.restarting.contains(application) || self.limit == 0 || in_use < self.limit as usize
            {
                r.waiting.remove(application);
                // This process's own update from now on: no longer a previous one's.
                r.seeded.remove(application);
                r.restarting.insert(application.to_string());
                Admission::Granted
            } else {
                r.waiting.insert(application.to_string());
                Admission::Full {
                    in_use,
                    limit: self.limit,
                }
            }
        })
    }

    /// Frees whatever `application` holds (MSF refused the update, or it is over).
    pub fn release(&self, region: &str, application: &str) {
        self.with(region, |r| {
            r.restarting.remove(application);
            r.updating_without_restart.remove(application);
            r.seeded.remove(application);
            r.waiting.remove(application);
        });
    }

    /// Frees the slot of `application` if it is still one counted for a previous process's
    /// update (MSF says that update has ended); a slot this process has taken since is kept.
    /// True if freed.
    pub fn release_seeded(&self, region: &str, application: &str) -> bool {
        self.with(region, |r| {
            let freed = r.seeded.remove(application);
            if freed {
                r.restarting.remove(application);
            }
            freed
        })
    }

    /// The seeded slots, as (region, application): see [`RestartBudget::release_seeded`].
    pub fn seeded(&self) -> Vec<(String, String)> {
        let regions = self.regions.lock().unwrap_or_else(|p| p.into_inner());
        let mut out: Vec<(String, String)> = regions
            .iter()
            .flat_map(|(region, r)| r.seeded.iter().map(|a| (region.clone(), a.clone())))
            .collect();
        out.sort();
        out
    }

    /// Whether `application` holds a slot (a restart of ours in progress).
    pub fn holds(&self, region: &str, application: &str) -> bool {
        self.with(region, |r| r.restarting.contains(application))
    }

    /// How many applications wait for a slot in `region`.
    pub fn waiters(&self, region: &str) -> usize {
        self.with(region, |r| r.waiting.len())
    }

    /// What a reconcile observed: `in_progress` = the application is UPDATING or ROLLING_BACK;
    /// `ours_in_progress` = the resource's status records our update as InProgress. Out of
    /// UPDATING frees the slot; an update of ours in progress that this process did not start
    /// (a previous process's) takes one.
    pub fn observe(
        &self,
        region: &str,
        application: &str,
        in_progress: bool,
        ours_in_progress: bool,
    ) {
        if !in_progress {
            return self.release(region, application);
        }
        if ours_in_progress {
            self.with(region, |r| {
                if !r.updating_without_restart.contains(application)
                    && r.restarting.insert(application.to_string())
                {
                    r.seeded.insert(application.to_string());
                }
            });
        }
    }

    /// Slots in use in `region`.
    pub fn in_use(&self, region: &str) -> usize {
        self.with(region, |r| r.restarting.len())
    }
}

/// Whether MSF is applying a change to the application (a restart may be running).
pub fn in_progress(status: &ApplicationStatus) -> bool {
    matches!(
        status,
        ApplicationStatus::Updating | ApplicationStatus::RollingBack
    )
}

/// When a resource that found the budget full looks again: [`WAIT_FOR_UPDATE`] while few wait,
/// once per "round" of the budget when many do (`waiters / limit` rounds ahead of it), spread by
/// `jitter` in [0, 1] (up to +50 %) so the waiters do not come back together. At most
/// [`MAX_WAITING_REQUEUE`]: a slot freed meanwhile is taken by whichever waiter comes first.
///
/// [`WAIT_FOR_UPDATE`]: crate::planner::lifecycle::WAIT_FOR_UPDATE
pub fn waiting_requeue(waiters: usize, limit: u32, jitter: f64) -> std::time::Duration {
    let base = crate::planner::lifecycle::WAIT_FOR_UPDATE;
    let rounds = waiters.div_ceil(limit.max(1) as usize).max(1) as u32;
    let spread = 1.0 + jitter.clamp(0.0, 1.0) / 2.0;
    (base * rounds).mul_f64(spread).min(MAX_WAITING_REQUEUE)
}

/// The longest a waiter waits before it looks again (see [`waiting_requeue`]).
pub const MAX_WAITING_REQUEUE: std::time::Duration = std::time::Duration::from_secs(120);

/// The plan of a resource that waits for a slot: its UpdateApplication becomes a requeue, and
/// EncryptionApplied and Ready say why.
pub fn waiting(mut plan: Plan, in_use: usize, limit: u32, region: &str) -> Plan {
    let message = format!(
        "{in_use} of {limit} restarts allowed at once in {region} are in progress (--max-concurrent-restarts); the update of this RUNNING application waits for one to finish"
    );
    for step in &mut plan.steps {
        if matches!(step, Step::UpdateApplication(_)) {
            *step = Step::Requeue {
                after: crate::planner::lifecycle::WAIT_FOR_UPDATE,
                reason: WAITING_FOR_RESTART_BUDGET.to_string(),
            };
        }
    }
    for type_ in [
        crate::api::condition_types::ENCRYPTION_APPLIED,
        crate::api::condition_types::READY,
    ] {
        let report = ConditionReport {
            type_,
            status: ConditionStatus::False,
            reason: WAITING_FOR_RESTART_BUDGET.to_string(),
            message: message.clone(),
        };
        match plan.conditions.iter_mut().find(|c| c.type_ == type_) {
            Some(c) => *c = report,
            None => plan.conditions.push(report),
        }
    }
    plan
}

#[cfg(test)]
mod tests {
    use super::*;

    const R: &str = "us-east-1";

    #[test]
    fn running_applications_take_slots_up_to_the_limit() {
        let b = RestartBudget::new(2);
        let running = ApplicationStatus::Running;
        assert_eq!(b.admit(R, "a", &running), Admission::Granted);
        assert_eq!(b.admit(R, "b", &running), Admission::Granted);
        // Asking again for a slot already held is not a second slot.
        assert_eq!(b.admit(R, "a", &running), Admission::Granted);
        assert_eq!(
            b.admit(R, "c", &running),
            Admission::Full {
                in_use: 2,
                limit: 2
            }
        );
        // Another region has its own slots; READY applications need none.
        assert_eq!(b.admit("eu-west-1", "c", &running), Admission::Granted);
        assert_eq!(
            b.admit(R, "d", &ApplicationStatus::Ready),
            Admission::NoRestart
        );
        // Still UPDATING: held. Out of UPDATING: freed, and the next one gets in.
        b.observe(R, "a", true, true);
        assert_eq!(b.in_use(R), 2);
        b.observe(R, "a", false, false);
        assert_eq!(b.in_use(R), 1);
        assert_eq!(b.admit(R, "c", &running), Admission::Granted);
    }

    #[test]
    fn a_previous_process_updates_are_counted_when_observed() {
        let b = RestartBudget::new(1);
        // An application UPDATING after an update of ours that this process did not make.
        b.observe(R, "old", true, true);
        assert_eq!(b.in_use(R), 1);
        assert!(matches!(
            b.admit(R, "new", &ApplicationStatus::Running),
            Admission::Full { .. }
        ));
        // Someone else's update (no record of ours) takes no slot.
        b.observe(R, "theirs", true, false);
        assert_eq!(b.in_use(R), 1);
        // Our own update of a READY application is known and takes none either.
        assert_eq!(
            b.admit(R, "stopped", &ApplicationStatus::Ready),
            Admission::NoRestart
        );
        b.observe(R, "stopped", true, true);
        assert_eq!(b.in_use(R), 1);
        b.observe(R, "old", false, true);
        assert_eq!(b.in_use(R), 0);
    }

    #[test]
    fn seeded_slots_are_freed_only_while_still_a_previous_process_s() {
        let b = RestartBudget::new(2);
        b.observe(R, "old", true, true);
        b.observe(R, "older", true, true);
        assert_eq!(
            b.seeded(),
            vec![(R.into(), "old".into()), (R.into(), "older".into())]
        );
        // "older" ended, then this process updates it again before the check frees it: the
        // slot is now this process's own and stays.
        assert_eq!(
            b.admit(R, "older", &ApplicationStatus::Running),
            Admission::Granted
        );
        assert!(!b.release_seeded(R, "older"));
        assert!(b.holds(R, "older"));
        assert!(b.release_seeded(R, "old"));
        assert!(!b.holds(R, "old"));
        assert_eq!(b.in_use(R), 1);
        // An update of this process observed in progress is not a previous process's.
        assert_eq!(
            b.admit(R, "new", &ApplicationStatus::Running),
            Admission::Granted
        );
        b.observe(R, "new", true, true);
        assert!(b.seeded().is_empty());
    }

    #[test]
    fn waiters_are_counted_until_they_get_a_slot_or_leave() {
        let b = RestartBudget::new(1);
        let running = ApplicationStatus::Running;
        assert_eq!(b.admit(R, "a", &running), Admission::Granted);
        assert!(matches!(b.admit(R, "b", &running), Admission::Full { .. }));
        assert!(matches!(b.admit(R, "c", &running), Admission::Full { .. }));
        assert!(matches!(b.admit(R, "c", &running), Admission::Full { .. }));
        assert_eq!(b.waiters(R), 2);
        b.release(R, "a");
        assert_eq!(b.admit(R, "b", &running), Admission::Granted);
        assert_eq!(b.waiters(R), 1);
        // A deleted waiter leaves the queue.
        b.release(R, "c");
        assert_eq!(b.waiters(R), 0);
    }

    #[test]
    fn many_waiters_look_again_less_often() {
        use std::time::Duration;
        let base = crate::planner::lifecycle::WAIT_FOR_UPDATE;
        assert_eq!(waiting_requeue(3, 10, 0.0), base);
        assert_eq!(waiting_requeue(0, 0, 0.0), base);
        assert_eq!(waiting_requeue(30, 10, 0.0), base * 3);
        assert_eq!(waiting_requeue(30, 10, 1.0), (base * 3).mul_f64(1.5));
        assert_eq!(waiting_requeue(558, 10, 0.5), MAX_WAITING_REQUEUE);
        assert!(MAX_WAITING_REQUEUE <= Duration::from_secs(120));
    }

    #[test]
    fn no_budget_counts_but_never_waits() {
        let b = RestartBudget::new(0);
        for i in 0..50 {
            assert_eq!(
                b.admit(R, &format!("a{i}"), &ApplicationStatus::Running),
                Admission::Granted
            );
        }
        assert_eq!(b.in_use(R), 50);
        b.release(R, "a0");
        assert_eq!(b.in_use(R), 49);
    }

    #[test]
    fn the_waiting_plan_requeues_and_says_why() {
        let plan = Plan {
            steps: vec![Step::UpdateApplication(crate::domain::EncryptionUpdate {
                region: R.into(),
                application_name: "a".into(),
                current_version_id: 1,
                conditional_token: None,
                key_type: crate::domain::AppliedKeyType::AwsOwnedKey,
                key_id: None,
            })],
            conditions: Vec::new(),
            key_policy: None,
        };
        let p = waiting(plan, 5, 5, R);
        assert!(
            matches!(&p.steps[..], [Step::Requeue { reason, .. }] if reason == WAITING_FOR_RESTART_BUDGET)
        );
        assert_eq!(p.conditions.len(), 2);
        assert!(
            p.conditions
                .iter()
                .all(|c| c.reason == WAITING_FOR_RESTART_BUDGET
                    && c.status == ConditionStatus::False
                    && c.message.starts_with("5 of 5 restarts"))
        );
    }
}
