//! `apply`'s wait for the updates it made (I/O): one ListApplications per account and region
//! every poll interval while anyone waits, instead of one reconcile (DescribeApplication and
//! more) per waiting resource. A list costs ceil(applications in the region / 50) calls
//! whatever the number of waiters.
//!
//! - A resource whose application is UPDATING waits in [`UpdateWatch::until_settled`]; it is
//!   woken once its summary is out of UPDATING / ROLLING_BACK, or the application is gone, and
//!   the restart slot its update held is freed then (the list is an observation of it).
//! - A resource waiting for a restart slot (`--max-concurrent-restarts`) waits in
//!   [`UpdateWatch::until_slot`]: woken, first come first served, as slots free up, so a full
//!   budget costs no call per waiter and poll.
//!
//! Nothing here decides about the resource: the woken resource's next reconcile does. The
//! watch runs inside `apply`'s own future ([`UpdateWatch::run`]), polled beside the resources
//! and dropped with them.

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;
use std::time::Duration;

use tokio::sync::{Notify, oneshot};

use crate::controller::context::Core;
use crate::controller::{lifecycle, restart_budget};
use crate::domain::{ApplicationSummary, ErrorCategory};

/// What the watch saw of an application it was asked to wait for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Seen {
    /// Out of UPDATING: its summary (name, status, version).
    Settled(ApplicationSummary),
    /// No longer listed.
    Gone,
    /// The list failed: the next reconcile describes the application itself.
    Unknown,
}

/// One account (its Core) and region.
type LaneKey = (usize, String);

struct Lane<'a> {
    core: &'a Core,
    region: String,
    /// Per application, its waiters and the poll count when each registered.
    updating: HashMap<String, Vec<(oneshot::Sender<Seen>, u64)>>,
    /// Polls started: a list sent before a waiter registered may predate its update, so it
    /// settles only the waiters registered before it.
    polls: u64,
    slots: VecDeque<oneshot::Sender<()>>,
    /// ListApplications was refused (e.g. an IAM policy without it): waiters of this lane
    /// poll by themselves, as before.
    refused: bool,
}

impl<'a> Lane<'a> {
    fn idle(&self) -> bool {
        self.updating.is_empty() && self.slots.is_empty()
    }

    /// Wakes as many slot waiters as the budget has free slots (all when it has no limit).
    fn wake_slot_waiters(&mut self) {
        let budget = &self.core.restart_budget;
        let limit = budget.limit() as usize;
        let mut free = match limit {
            0 => usize::MAX,
            l => l.saturating_sub(budget.in_use(&self.region)),
        };
        while free > 0 {
            let Some(tx) = self.slots.pop_front() else {
                break;
            };
            // A waiter that went away (timed out) takes no slot.
            if tx.send(()).is_ok() {
                free -= 1;
            }
        }
    }

    /// Wakes the waiters whose application the list (poll number `poll`) shows out of
    /// UPDATING, or not at all.
    fn settle(&mut self, listed: Vec<ApplicationSummary>, poll: u64) {
        let by_name: HashMap<String, ApplicationSummary> =
            listed.into_iter().map(|a| (a.name.clone(), a)).collect();
        let core = self.core;
        let region = self.region.clone();
        self.updating.retain(|name, waiters| {
            let seen = match by_name.get(name) {
                None => Seen::Gone,
                Some(a) if restart_budget::in_progress(&a.status) => return true,
                Some(a) => Seen::Settled(a.clone()),
            };
            let (before, after): (Vec<_>, Vec<_>) = waiters
                .drain(..)
                .partition(|(_, registered)| *registered < poll);
            if before.is_empty() {
                *waiters = after;
                return true;
            }
            // Out of UPDATING frees the slot its restart held, before a slot waiter looks.
            core.restart_budget.release(&region, name);
            for (tx, _) in before {
                let _ = tx.send(seen.clone());
            }
            *waiters = after;
            !waiters.is_empty()
        });
        lifecycle::report_slots(core, &region);
    }

    fn fail_all(&mut self) {
        for (_, waiters) in self.updating.drain() {
            for (tx, _) in waiters {
                let _ = tx.send(Seen::Unknown);
            }
        }
    }
}

/// The watch of one `apply` run.
pub struct UpdateWatch<'a> {
    interval: Duration,
    lanes: Mutex<HashMap<LaneKey, Lane<'a>>>,
    wake: Notify,
}

impl<'a> UpdateWatch<'a> {
    pub fn new(interval: Duration) -> Self {
        Self {
            interval: interval.max(Duration::from_millis(1)),
            lanes: Mutex::new(HashMap::new()),
            wake: Notify::new(),
        }
    }

    fn lanes(&self) -> std::sync::MutexGuard<'_, HashMap<LaneKey, Lane<'a>>> {
        // A poisoned lock only means a panic elsewhere mid-update; the maps stay valid.
        self.lanes.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Registers with the lane of `core` and `region`; None when the lane cannot watch.
    fn register<T>(
        &self,
        core: &'a Core,
        region: &str,
        add: impl FnOnce(&mut Lane<'a>, oneshot::Sender<T>),
    ) -> Option<oneshot::Receiver<T>> {
        let key = (std::ptr::from_ref(core) as usize, region.to_string());
        let rx = {
            let mut lanes = self.lanes();
            let lane = lanes.entry(key).or_insert_with(|| Lane {
                core,
                region: region.to_string(),
                updating: HashMap::new(),
                slots: VecDeque::new(),
                polls: 0,
                refused: false,
            });
            if lane.refused {
                return None;
            }
            let (tx, rx) = oneshot::channel();
            add(lane, tx);
            rx
        };
        self.wake.notify_one();
        Some(rx)
    }

    /// Waits until `application` (in `region`, acting as `core`, the namespace's account) is
    /// out of UPDATING. None: this watch cannot tell (the caller polls by itself).
    pub async fn until_settled(
        &self,
        core: &'a Core,
        region: &str,
        application: &str,
    ) -> Option<Seen> {
        let rx = self.register(core, region, |lane, tx| {
            let registered = lane.polls;
            lane.updating
                .entry(application.to_string())
                .or_default()
                .push((tx, registered))
        })?;
        rx.await.ok()
    }

    /// Waits until a restart slot of `core`'s account in `region` is free (first come, first
    /// served), at most `limit` long (a slot held by something this run does not watch).
    /// False: this watch cannot tell (the caller polls by itself).
    pub async fn until_slot(&self, core: &'a Core, region: &str, limit: Duration) -> bool {
        let Some(rx) = self.register(core, region, |lane, tx| lane.slots.push_back(tx)) else {
            return false;
        };
        let _ = tokio::time::timeout(limit, rx).await;
        true
    }

    /// Polls while anyone waits. Never returns: `apply` drops it once every resource is done.
    pub async fn run(&self) {
        loop {
            if self.lanes().values().all(Lane::idle) {
                self.wake.notified().await;
                continue;
            }
            tokio::time::sleep(self.interval).await;
            let polls =
                self.start_polls()
                    .into_iter()
                    .map(|(key, core, region, list, poll)| async move {
                        let listed = match list {
                            true => Some(core.msf.list_applications(&region).await),
                            false => None,
                        };
                        self.apply_poll(&key, listed, poll);
                    });
            futures::future::join_all(polls).await;
        }
    }

    /// The lanes someone waits in, each with the number of the poll starting now.
    fn start_polls(&self) -> Vec<(LaneKey, &'a Core, String, bool, u64)> {
        let mut lanes = self.lanes();
        lanes
            .iter_mut()
            .filter(|(_, l)| !l.idle())
            .map(|(k, l)| {
                l.polls += 1;
                let list = !l.updating.is_empty();
                (k.clone(), l.core, l.region.clone(), list, l.polls)
            })
            .collect()
    }

    fn apply_poll(
        &self,
        key: &LaneKey,
        listed: Option<Result<Vec<ApplicationSummary>, crate::aws::AwsError>>,
        poll: u64,
    ) {
        let mut lanes = self.lanes();
        let Some(lane) = lanes.get_mut(key) else {
            return;
        };
        match listed {
            None => {}
            Some(Ok(apps)) => lane.settle(apps, poll),
            Some(Err(e)) => {
                if e.category == ErrorCategory::Terminal {
                    tracing::warn!(error = %e, region = %lane.region, "cannot list applications; each waiting resource polls by itself");
                    lane.refused = true;
                }
                lane.fail_all();
            }
        }
        lane.wake_slot_waiters();
        if lane.refused {
            // Nobody is left to wake them: they look by themselves.
            for tx in lane.slots.drain(..) {
                let _ = tx.send(());
            }
        }
    }
}
