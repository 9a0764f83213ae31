//! Reconciling many manifests at once, without a cluster (`plan` / `apply`, the demo, the
//! benchmarks). Every resource sees as peers the others that may share its key or claim its
//! application, so the applications sharing a key are written in one PutKeyPolicy (the key
//! lock and the shared read do the rest).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::Utc;
use futures::StreamExt;

use crate::api::ApplicationEncryptionStatus;
use crate::controller::claims;
use crate::controller::context::Core;
use crate::controller::manifests::Manifest;
use crate::controller::reconcile::{self, Mode, Next, Outcome, Peer, Subject};
use crate::controller::update_watch::{Seen, UpdateWatch};
use crate::controller::{restart_budget, status};
use crate::domain::{ApplicationDescription, ApplicationStatus, ApplicationSummary, ErrorCategory};
use tokio::sync::Semaphore;

/// How `apply` waits for resources in transient states.
#[derive(Clone, Copy, Debug)]
pub struct ApplyOptions {
    /// Reconcile passes in flight (not resources: a waiting resource holds none).
    pub concurrency: usize,
    /// Give up on one resource after this long (it is reported as not converged).
    pub timeout: Duration,
    /// How often the applications of a region are listed while any is UPDATING (and a
    /// transient wait is looked at again).
    pub poll: Duration,
}

impl Default for ApplyOptions {
    fn default() -> Self {
        Self {
            concurrency: DEFAULT_CONCURRENCY,
            timeout: Duration::from_secs(900),
            poll: DEFAULT_POLL,
        }
    }
}

/// Reconcile passes in flight: enough to keep the pacing lanes busy (a pass is a few calls of
/// tens of milliseconds), few enough that a run of thousands does not burst at once.
pub const DEFAULT_CONCURRENCY: usize = 64;

/// A poll is one ListApplications page per 50 applications of the region, whatever the number
/// of resources waiting, so it can be frequent.
pub const DEFAULT_POLL: Duration = Duration::from_secs(1);

/// One resource's result.
#[derive(Clone, Debug)]
pub struct Done {
    pub index: usize,
    pub outcome: Outcome,
    pub passes: u32,
}

fn peers(manifests: &[Manifest]) -> Vec<Peer> {
    manifests
        .iter()
        .map(|m| Peer {
            namespace: m.namespace.clone(),
            name: m.name.clone(),
            spec: m.spec.clone(),
            incumbent: false,
            deleting: false,
        })
        .collect()
}

/// The conflict message of each manifest: the same rule as `run` (files have no status, so
/// every claim is new and namespace/name decides).
fn conflicts(peers: &[Peer], core: &Core) -> Vec<Option<String>> {
    let losers = claims::losers(core, peers);
    peers
        .iter()
        .zip(losers)
        .map(|(me, w)| w.map(|w| claims::conflict_message(core, me, &peers[w])))
        .collect()
}

/// Each manifest's peers: the ones its reconcile can need ([`claims::relevant`]), so that a
/// pass walks its key's co-tenants and its application's claims, not all N manifests.
///
/// A manifest with a key is one of the manifests that may share that key, so its relevant set
/// depends on the key alone: the manifests of one key share one list instead of each cloning
/// the same 50 peers (at N = 1,000, 50,000 clones before the first call).
fn relevant_peers(peers: &[Peer]) -> Vec<Arc<[Peer]>> {
    let keys: Vec<(Option<&str>, &str)> = peers
        .iter()
        .map(|p| (p.spec.key_id.as_deref(), p.spec.application_name.as_str()))
        .collect();
    // By key, or by application for a manifest without one.
    type Memo<'a> = (Option<&'a str>, Option<&'a str>);
    let mut shared: HashMap<Memo<'_>, Arc<[Peer]>> = HashMap::new();
    keys.iter()
        .map(|me| {
            let memo = match me.0.filter(|k| !k.is_empty()) {
                Some(key) => (Some(key), None),
                None => (None, Some(me.1)),
            };
            shared
                .entry(memo)
                .or_insert_with(|| {
                    claims::relevant(&keys, *me)
                        .into_iter()
                        .map(|i| peers[i].clone())
                        .collect()
                })
                .clone()
        })
        .collect()
}

/// Plans every manifest (reads only). Results in input order.
pub async fn plan_all(core: &Core, manifests: &[Manifest], concurrency: usize) -> Vec<Outcome> {
    let all = peers(manifests);
    let conflicts = conflicts(&all, core);
    let peers = relevant_peers(&all);
    let mut out: Vec<(usize, Outcome)> = futures::stream::iter(manifests.iter().enumerate())
        .map(|(i, m)| {
            let subject = Subject {
                namespace: &m.namespace,
                name: &m.name,
                spec: &m.spec,
                generation: Some(1),
                previous: None,
                conflict: conflicts[i].clone(),
                retry_update: m.retry_update.as_deref(),
            };
            let peers = &peers[i];
            async move {
                let o = reconcile::reconcile(core, &subject, peers, Mode::DryRun, Utc::now()).await;
                (i, o)
            }
        })
        .buffer_unordered(concurrency.max(1))
        .collect()
        .await;
    out.sort_by_key(|(i, _)| *i);
    out.into_iter().map(|(_, o)| o).collect()
}

/// Converges every manifest once: each is reconciled until converged, blocked or out of time.
/// `on_done` is called as each finishes (progress output). Results in input order.
///
/// Every resource's loop runs at once (a waiting future costs nothing); `opts.concurrency`
/// bounds the reconcile passes in flight, and the AWS pacing lanes and the restart budget
/// are the real limits. A resource waiting for MSF holds no pass: it waits in the
/// [`UpdateWatch`], which lists the applications of a region once per poll for all of them.
pub async fn apply_all(
    core: &Core,
    manifests: &[Manifest],
    opts: ApplyOptions,
    on_done: impl Fn(&Done) + Sync,
) -> Vec<Done> {
    let all = peers(manifests);
    let conflicts = conflicts(&all, core);
    let peers = relevant_peers(&all);
    let watch = UpdateWatch::new(opts.poll);
    let run = Run {
        core,
        peers: &peers,
        opts,
        watch: &watch,
        passes: Semaphore::new(opts.concurrency.max(1)),
    };
    let on_done = &on_done;
    let run = &run;
    let all = futures::future::join_all(manifests.iter().enumerate().map(|(i, m)| {
        let conflict = conflicts[i].clone();
        async move {
            let done = converge(run, i, m, conflict).await;
            on_done(&done);
            done
        }
    }));
    let mut out = tokio::select! {
        out = all => out,
        () = watch.run() => unreachable!("the watch polls until apply drops it"),
    };
    out.sort_by_key(|d| d.index);
    out
}

/// What every resource's loop of one `apply` shares.
struct Run<'a> {
    core: &'a Core,
    /// Each manifest's peers ([`relevant_peers`]), by index.
    peers: &'a [Arc<[Peer]>],
    opts: ApplyOptions,
    watch: &'a UpdateWatch<'a>,
    /// Reconcile passes in flight (`--concurrency`).
    passes: Semaphore,
}

/// How a resource waits before its next pass.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Wait {
    /// Its application is UPDATING: until the watch sees it out of it.
    Updating,
    /// For a restart slot: until the watch sees one free.
    Slot,
    /// The settle time of a key policy write: a known deadline, nothing to poll for.
    Settle(Duration),
    /// A known time (a backoff, a poll).
    For(Duration),
}

/// A slot waiter looks by itself at least this often: a slot may be held by an update this
/// run does not watch (a previous run's).
const SLOT_FALLBACK: Duration = Duration::from_secs(60);

fn wait_of(core: &Core, key: &str, outcome: &Outcome, opts: ApplyOptions) -> Option<Wait> {
    let reason = status::ready(&outcome.status).map(|c| c.reason.as_str());
    let updating = outcome
        .status
        .application
        .as_ref()
        .and_then(|a| a.status.as_deref())
        .is_some_and(|s| restart_budget::in_progress(&ApplicationStatus::from_wire(s)));
    match outcome.next {
        Next::Waiting(_) if reason == Some(restart_budget::WAITING_FOR_RESTART_BUDGET) => {
            Some(Wait::Slot)
        }
        Next::Waiting(_) if updating => Some(Wait::Updating),
        // The settle time is a known deadline: nothing to poll for before it.
        Next::Waiting(d) if reason == Some("WaitingForKeyPolicyPropagation") => {
            Some(Wait::Settle(d))
        }
        Next::Waiting(d) => Some(Wait::For(d.min(opts.poll))),
        Next::Failed(ErrorCategory::Transient | ErrorCategory::Conflict) => Some(Wait::For(
            core.backoff
                .failed(key)
                .min(opts.poll.max(Duration::from_millis(100)) * 4),
        )),
        _ => None,
    }
}

/// The observation the watch makes exact: the poll's own DescribeApplication, or our
/// UpdateApplication's answer (it described the new version) when ListApplications shows the
/// application settled at that very version. A version's configuration is immutable (any
/// change, a rollback included, makes a new version), so that answer with the listed status
/// is what DescribeApplication would say.
fn hint(accepted: Option<&ApplicationDescription>, seen: &Seen) -> Option<ApplicationDescription> {
    let summary = match seen {
        Seen::Described(d) => return Some(d.clone()),
        Seen::Settled(summary) => summary,
        Seen::Gone | Seen::Unknown => return None,
    };
    let a = accepted.filter(|a| a.application.version_id == summary.version_id)?;
    let mut d = a.clone();
    d.application.status = summary.status.clone();
    Some(d)
}

/// The observation a pass that waited for a restart slot lends to the next one: still what
/// DescribeApplication would say when a list made since shows the application at the same
/// version and status (a version's configuration is immutable). Had it changed after that
/// list, MSF would refuse the update's stale conditional token or version
/// (ConcurrentModificationException), and the pass after describes it again.
fn unchanged(
    observed: Option<ApplicationDescription>,
    listed: Option<&ApplicationSummary>,
) -> Option<ApplicationDescription> {
    let (d, s) = (observed?, listed?);
    let a = &d.application;
    (a.version_id == s.version_id && a.status == s.status).then_some(d)
}

async fn converge(run: &Run<'_>, index: usize, m: &Manifest, conflict: Option<String>) -> Done {
    let (core, opts) = (run.core, run.opts);
    let start = Instant::now();
    let key = format!("{}/{}", m.namespace, m.name);
    // The account and region the resource acts in (as reconcile resolves them).
    let account = core.for_namespace(&m.namespace);
    let region = m
        .spec
        .region
        .clone()
        .filter(|r| !r.is_empty())
        .unwrap_or_else(|| account.defaults.region.clone());
    let mut previous: Option<ApplicationEncryptionStatus> = None;
    let mut hint_next: Option<ApplicationDescription> = None;
    let mut confirmed_by: Option<ApplicationSummary> = None;
    let mut accepted: Option<ApplicationDescription> = None;
    let mut passes = 0u32;
    // A change takes several passes (write the policy, let it settle, update, wait for MSF):
    // the result counts the writes of all of them.
    let (mut puts, mut updates) = (0u32, 0u32);
    loop {
        passes += 1;
        let subject = Subject {
            namespace: &m.namespace,
            name: &m.name,
            spec: &m.spec,
            generation: Some(1),
            previous: previous.as_ref(),
            conflict: conflict.clone(),
            retry_update: m.retry_update.as_deref(),
        };
        let given = hint_next.take();
        // The observation this pass is lent instead of describing.
        let lent = given.clone();
        // The list that confirmed it, when a slot waiter's list did.
        let confirmed = confirmed_by.take();
        let mut outcome = {
            // Closed only if dropped, which this function never does.
            let _pass = run.passes.acquire().await.ok();
            reconcile::reconcile_observed(
                core,
                &subject,
                &run.peers[index],
                Mode::Execute,
                Utc::now(),
                given,
            )
            .await
        };
        puts += outcome.key_policy_writes;
        updates += outcome.application_updates;
        outcome.key_policy_writes = puts;
        outcome.application_updates = updates;
        let updated_now = outcome.accepted.is_some();
        if let Some(a) = outcome.accepted.take() {
            accepted = Some(a);
        }
        let described = outcome.described.take();
        let Some(wait) = wait_of(core, &key, &outcome, opts) else {
            return Done {
                index,
                outcome,
                passes,
            };
        };
        let bound = match wait {
            Wait::For(d) | Wait::Settle(d) => d,
            Wait::Updating | Wait::Slot => opts.poll,
        };
        let left = opts.timeout.saturating_sub(start.elapsed());
        if bound > left {
            return Done {
                index,
                outcome,
                passes,
            };
        }
        previous = Some(outcome.status);
        match wait {
            Wait::For(d) => tokio::time::sleep(d).await,
            Wait::Settle(d) => {
                // Nothing but the settle time stood in the way: this pass's description is
                // the next pass's observation. If the application changed meanwhile, its
                // version and conditional token did too, and MSF refuses the update
                // (ConcurrentModificationException): a conflict, retried after a backoff by a
                // pass that describes it again.
                if !updated_now {
                    hint_next = described;
                }
                tokio::time::sleep(d).await;
            }
            Wait::Slot => {
                // The pass stopped before UpdateApplication: it changed nothing, so what it
                // observed (described or lent) is the application still, if a list says so.
                // Lent again (its slot went to another, or the wait reached its limit), the
                // list that confirmed it still does.
                let known = confirmed.filter(|_| described.is_none());
                let observed = described.or(lent);
                let listed = run
                    .watch
                    .until_slot_seeing(
                        account,
                        &region,
                        &m.spec.application_name,
                        known,
                        SLOT_FALLBACK.min(left),
                    )
                    .await;
                hint_next = unchanged(observed, listed.as_ref());
                confirmed_by = listed.filter(|_| hint_next.is_some());
            }
            Wait::Updating => {
                let settled = run
                    .watch
                    .until_settled(account, &region, &m.spec.application_name);
                match tokio::time::timeout(left, settled).await {
                    Ok(Some(seen)) => hint_next = hint(accepted.as_ref(), &seen),
                    // Let go without a word (not expected): poll by describing, as any wait.
                    Ok(None) => tokio::time::sleep(opts.poll).await,
                    Err(_) => {}
                }
            }
        }
    }
}
