//! `apply`'s and `run`'s wait for the updates they made (I/O): one look per account and
//! region every poll interval while anyone waits, instead of one reconcile (DescribeApplication
//! and more) per waiting resource. A poll costs whichever is cheaper ([`cheaper_to_list`]):
//! ListApplications, ceil(applications in the region / 50) pages whatever the number of
//! waiters, or one DescribeApplication per update awaited (a few updates in a large region),
//! whose answer is then the next observation of its resource.
//!
//! - A resource whose application is UPDATING waits in [`UpdateWatch::until_settled`]; it is
//!   woken once its application is out of UPDATING / ROLLING_BACK, or gone, and the restart
//!   slot its update held is freed then (the list or description is an observation of it).
//! - A resource waiting for a restart slot (`--max-concurrent-restarts`) waits in
//!   [`UpdateWatch::until_slot`]: woken, first come first served, as slots free up, so a full
//!   budget costs no call per waiter and poll. `apply`'s waiters name their application
//!   ([`UpdateWatch::until_slot_seeing`]) and are handed its summary from the latest list made
//!   since they began to wait: when it shows the version and status their last pass observed,
//!   that observation still holds and the next pass needs no DescribeApplication.
//! - Without the ListApplications permission, a lane describes the updates awaited at every
//!   poll, and still wakes the slot waiters as slots free (they describe their applications).
//!
//! Nothing here decides about the resource: the woken resource's next reconcile does. The
//! watch runs inside `apply`'s own future ([`UpdateWatch::run`]), polled beside the resources
//! and dropped with them (`run`: beside its controllers, `run_watch`).

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;
use std::time::Duration;

use tokio::sync::{Notify, oneshot};

use crate::aws::AwsError;
use crate::controller::context::Core;
use crate::controller::{lifecycle, restart_budget};
use crate::domain::{ApplicationDescription, ApplicationSummary, ErrorCategory};

/// Applications per ListApplications page (the MSF adapter asks for 50, MSF's maximum).
const PAGE: usize = 50;

/// What the watch saw of an application it was asked to wait for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Seen {
    /// Out of UPDATING in a list: its summary (name, status, version).
    Settled(ApplicationSummary),
    /// Out of UPDATING in the poll's own DescribeApplication: an exact observation.
    Described(ApplicationDescription),
    /// No longer listed, or described as not found.
    Gone,
    /// The poll failed: the next reconcile describes the application itself.
    Unknown,
}

/// One account (its Core) and region.
type LaneKey = (usize, String);

struct SlotWaiter {
    id: u64,
    tx: oneshot::Sender<Option<ApplicationSummary>>,
    /// `apply`'s waiters name their application; `run`'s reconcile describes it anyway.
    application: Option<String>,
    /// The poll count when it registered: only a later list is news to it.
    registered: u64,
    /// Its application as the latest list since it registered showed it (or as the list that
    /// confirmed the observation it waits on again, `until_slot_seeing`'s `known`).
    listed: Option<ApplicationSummary>,
}

impl SlotWaiter {
    fn wants_summary(&self) -> bool {
        self.application.is_some() && self.listed.is_none()
    }
}

/// What a poll of one lane asks AWS.
enum Poll {
    List,
    /// DescribeApplication of each of these (none: no call, only slot waiters to look at).
    Describe(Vec<String>),
}

/// What a poll of one lane got.
enum Polled {
    Listed(Result<Vec<ApplicationSummary>, AwsError>),
    Described(Vec<(String, Result<ApplicationDescription, AwsError>)>),
}

struct Lane<'a> {
    core: &'a Core,
    region: String,
    /// Per application, its waiters and the poll count when each registered.
    updating: HashMap<String, Vec<(oneshot::Sender<Seen>, u64)>>,
    /// Polls started: a list sent before a waiter registered may predate its update, so it
    /// settles only the waiters registered before it.
    polls: u64,
    slots: VecDeque<SlotWaiter>,
    next_waiter: u64,
    /// Pages the region's last list took (None: not listed yet).
    pages: Option<usize>,
    /// ListApplications was refused (e.g. an IAM policy without it): this lane's polls
    /// describe the updates awaited, whatever the cost.
    refused: bool,
}

/// Whether a poll should list the region rather than describe: `pages` of the last list (None:
/// never listed: the first look lists, and learns the region's size), `awaited` updates in
/// flight (one DescribeApplication each), `to_wake` slot waiters the poll may wake that have
/// no summary yet (each would describe its application itself after a poll that did not list
/// it). A tie lists: it tells more. Pure.
pub fn cheaper_to_list(pages: Option<usize>, awaited: usize, to_wake: usize) -> bool {
    pages.is_none_or(|p| p <= awaited + to_wake)
}

impl<'a> Lane<'a> {
    fn idle(&self) -> bool {
        self.updating.is_empty() && self.slots.is_empty()
    }

    fn free_slots(&self) -> usize {
        let budget = &self.core.restart_budget;
        match budget.limit() as usize {
            0 => usize::MAX,
            l => l.saturating_sub(budget.in_use(&self.region)),
        }
    }

    /// What this poll asks: the cheaper of one list and the descriptions it would replace.
    fn choose(&self) -> Poll {
        let awaited = self.updating.len();
        let wanting = self.slots.iter().filter(|w| w.wants_summary()).count();
        // Slots free now, or freed by the updates this poll may see ended.
        let to_wake = wanting.min(self.free_slots().saturating_add(awaited));
        if !self.refused && awaited + to_wake > 0 && cheaper_to_list(self.pages, awaited, to_wake) {
            return Poll::List;
        }
        Poll::Describe(self.updating.keys().cloned().collect())
    }

    /// Wakes as many slot waiters as the budget has free slots (all when it has no limit).
    /// After a list (`listed`: its poll number), a waiter that registered while the list was
    /// in flight is left for the next poll rather than woken without a summary.
    fn wake_slot_waiters(&mut self, listed: Option<u64>) {
        let mut free = self.free_slots();
        while free > 0 {
            let Some(front) = self.slots.front() else {
                break;
            };
            if listed.is_some_and(|p| front.wants_summary() && front.registered >= p) {
                break;
            }
            let Some(w) = self.slots.pop_front() else {
                break;
            };
            // A waiter that went away takes no slot.
            if w.tx.send(w.listed).is_ok() {
                free -= 1;
            }
        }
    }

    /// Removes slot waiter `id` (its wait reached its limit): its latest summary.
    fn leave_slots(&mut self, id: u64) -> Option<ApplicationSummary> {
        let at = self.slots.iter().position(|w| w.id == id)?;
        self.slots.remove(at)?.listed
    }

    /// A list (poll number `poll`): wakes the waiters whose application it shows out of
    /// UPDATING or not at all, and hands the slot waiters their applications' summaries.
    fn settle_listed(&mut self, listed: Vec<ApplicationSummary>, poll: u64) {
        self.pages = Some(listed.len().div_ceil(PAGE).max(1));
        let by_name: HashMap<String, ApplicationSummary> =
            listed.into_iter().map(|a| (a.name.clone(), a)).collect();
        for w in self.slots.iter_mut().filter(|w| w.registered < poll) {
            if let Some(app) = &w.application {
                w.listed = by_name.get(app).cloned();
            }
        }
        let seen: Vec<(String, Seen)> = self
            .updating
            .keys()
            .filter_map(|name| match by_name.get(name) {
                None => Some((name.clone(), Seen::Gone)),
                Some(a) if restart_budget::in_progress(&a.status) => None,
                Some(a) => Some((name.clone(), Seen::Settled(a.clone()))),
            })
            .collect();
        self.settle(seen, poll);
    }

    /// The poll's descriptions: an application out of UPDATING wakes its waiters with the
    /// description itself; a failed call lets them describe it themselves.
    fn settle_described(
        &mut self,
        described: Vec<(String, Result<ApplicationDescription, AwsError>)>,
        poll: u64,
    ) {
        let seen = described
            .into_iter()
            .filter_map(|(name, r)| match r {
                Ok(d) if restart_budget::in_progress(&d.application.status) => None,
                Ok(d) => Some((name, Seen::Described(d))),
                Err(e) if e.is_not_found() => Some((name, Seen::Gone)),
                Err(e) => {
                    tracing::debug!(error = %e, application = %name, "describing an awaited application failed; its resource describes it itself");
                    Some((name, Seen::Unknown))
                }
            })
            .collect();
        self.settle(seen, poll);
    }

    /// Wakes the waiters registered before poll `poll` of each application seen; an
    /// application seen out of UPDATING frees its slot first, before a slot waiter looks.
    fn settle(&mut self, seen: Vec<(String, Seen)>, poll: u64) {
        for (name, seen) in seen {
            let Some(waiters) = self.updating.get_mut(&name) else {
                continue;
            };
            let (before, after): (Vec<_>, Vec<_>) = waiters
                .drain(..)
                .partition(|(_, registered)| *registered < poll);
            *waiters = after;
            if waiters.is_empty() {
                self.updating.remove(&name);
            }
            if before.is_empty() {
                continue;
            }
            if !matches!(seen, Seen::Unknown) {
                self.core.restart_budget.release(&self.region, &name);
            }
            for (tx, _) in before {
                let _ = tx.send(seen.clone());
            }
        }
        lifecycle::report_slots(self.core, &self.region);
    }

    fn fail_all(&mut self) {
        for (_, waiters) in self.updating.drain() {
            for (tx, _) in waiters {
                let _ = tx.send(Seen::Unknown);
            }
        }
    }
}

/// The watch of one `apply` run, or of `run`'s controllers.
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

    fn key(core: &Core, region: &str) -> LaneKey {
        (std::ptr::from_ref(core) as usize, region.to_string())
    }

    /// Registers with the lane of `core` and `region`.
    fn register<T, R>(
        &self,
        core: &'a Core,
        region: &str,
        add: impl FnOnce(&mut Lane<'a>, oneshot::Sender<T>) -> R,
    ) -> (oneshot::Receiver<T>, R) {
        let registered = {
            let mut lanes = self.lanes();
            let lane = lanes
                .entry(Self::key(core, region))
                .or_insert_with(|| Lane {
                    core,
                    region: region.to_string(),
                    updating: HashMap::new(),
                    slots: VecDeque::new(),
                    next_waiter: 0,
                    polls: 0,
                    pages: None,
                    refused: false,
                });
            let (tx, rx) = oneshot::channel();
            let r = add(lane, tx);
            (rx, r)
        };
        self.wake.notify_one();
        registered
    }

    /// Waits until `application` (in `region`, acting as `core`, the namespace's account) is
    /// out of UPDATING. None: the watch let the waiter go without a word (not expected; the
    /// caller polls by itself).
    pub async fn until_settled(
        &self,
        core: &'a Core,
        region: &str,
        application: &str,
    ) -> Option<Seen> {
        let (rx, ()) = self.register(core, region, |lane, tx| {
            let registered = lane.polls;
            lane.updating
                .entry(application.to_string())
                .or_default()
                .push((tx, registered))
        });
        rx.await.ok()
    }

    /// Waits until a restart slot of `core`'s account in `region` is free (first come, first
    /// served), at most `limit` long (a slot held by something this run does not watch).
    pub async fn until_slot(&self, core: &'a Core, region: &str, limit: Duration) {
        self.wait_for_slot(core, region, None, limit).await;
    }

    /// [`Self::until_slot`] for a waiter that will act on its last observation of
    /// `application`: it is handed the application's summary from the latest list made since
    /// that observation, `known` (a list that already confirmed it: a waiter that waits again
    /// on the same observation, its slot having been taken by another) or one made since it
    /// began to wait, if any.
    pub async fn until_slot_seeing(
        &self,
        core: &'a Core,
        region: &str,
        application: &str,
        known: Option<ApplicationSummary>,
        limit: Duration,
    ) -> Option<ApplicationSummary> {
        self.wait_for_slot(core, region, Some((application, known)), limit)
            .await
    }

    async fn wait_for_slot(
        &self,
        core: &'a Core,
        region: &str,
        application: Option<(&str, Option<ApplicationSummary>)>,
        limit: Duration,
    ) -> Option<ApplicationSummary> {
        let (application, known) = application.unzip();
        let known = known.flatten();
        let (rx, id) = self.register(core, region, |lane, tx| {
            let id = lane.next_waiter;
            lane.next_waiter += 1;
            lane.slots.push_back(SlotWaiter {
                id,
                tx,
                application: application.map(str::to_string),
                registered: lane.polls,
                listed: known,
            });
            id
        });
        match tokio::time::timeout(limit, rx).await {
            Ok(Ok(listed)) => listed,
            // The limit: whatever was listed meanwhile.
            _ => {
                let mut lanes = self.lanes();
                lanes
                    .get_mut(&Self::key(core, region))
                    .and_then(|l| l.leave_slots(id))
            }
        }
    }

    /// Polls while anyone waits. Never returns: `apply` drops it once every resource is done.
    pub async fn run(&self) {
        loop {
            if self.lanes().values().all(Lane::idle) {
                self.wake.notified().await;
                continue;
            }
            tokio::time::sleep(self.interval).await;
            let polls = self
                .start_polls()
                .into_iter()
                .map(|(key, core, ask, poll)| async move {
                    let region = &key.1;
                    let polled = match ask {
                        Poll::List => Polled::Listed(core.msf.list_applications(region).await),
                        Poll::Describe(names) => {
                            Polled::Described(describe_all(core, region, names).await)
                        }
                    };
                    self.apply_poll(&key, polled, poll);
                });
            futures::future::join_all(polls).await;
        }
    }

    /// The lanes someone waits in, each with what to ask and the number of the poll starting
    /// now.
    fn start_polls(&self) -> Vec<(LaneKey, &'a Core, Poll, u64)> {
        let mut lanes = self.lanes();
        lanes
            .iter_mut()
            .filter(|(_, l)| !l.idle())
            .map(|(k, l)| {
                l.polls += 1;
                (k.clone(), l.core, l.choose(), l.polls)
            })
            .collect()
    }

    fn apply_poll(&self, key: &LaneKey, polled: Polled, poll: u64) {
        let mut lanes = self.lanes();
        let Some(lane) = lanes.get_mut(key) else {
            return;
        };
        let listed = match polled {
            Polled::Listed(Ok(apps)) => {
                lane.settle_listed(apps, poll);
                Some(poll)
            }
            Polled::Listed(Err(e)) => {
                if e.category == ErrorCategory::Terminal {
                    tracing::warn!(error = %e, region = %lane.region, "cannot list applications; the updates awaited are described instead");
                    lane.refused = true;
                }
                lane.fail_all();
                None
            }
            Polled::Described(described) => {
                lane.settle_described(described, poll);
                None
            }
        };
        lane.wake_slot_waiters(listed);
    }
}

/// DescribeApplication of each awaited application, at once (the pacing lanes pace them).
async fn describe_all(
    core: &Core,
    region: &str,
    names: Vec<String>,
) -> Vec<(String, Result<ApplicationDescription, AwsError>)> {
    let calls = names.into_iter().map(|name| async move {
        let r = core.msf.describe_application_detail(region, &name).await;
        (name, r)
    });
    futures::future::join_all(calls).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_poll_lists_when_the_pages_cost_no_more_than_the_descriptions() {
        // 1,000 applications (20 pages): a handful of updates are described...
        assert!(!cheaper_to_list(Some(20), 5, 0));
        assert!(!cheaper_to_list(Some(20), 10, 9));
        // ...hundreds, or a tie, are listed.
        assert!(cheaper_to_list(Some(20), 10, 10));
        assert!(cheaper_to_list(Some(20), 300, 0));
        // Slot waiters without a summary count: each would describe itself after a
        // poll that did not list its application.
        assert!(cheaper_to_list(Some(4), 2, 2));
        // A region of one page is always listed, and so is one never listed yet.
        assert!(cheaper_to_list(Some(1), 1, 0));
        assert!(cheaper_to_list(None, 1, 0));
    }
}
