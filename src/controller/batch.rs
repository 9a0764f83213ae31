//! Reconciling many manifests at once, without a cluster (`plan` / `apply`, the demo, the
//! benchmarks). Every resource sees all the others as peers, so the applications sharing a key
//! are written in one PutKeyPolicy (the key lock and the shared read do the rest).

use std::time::{Duration, Instant};

use chrono::Utc;
use futures::StreamExt;

use crate::api::ApplicationEncryptionStatus;
use crate::controller::claims;
use crate::controller::context::Core;
use crate::controller::manifests::Manifest;
use crate::controller::reconcile::{self, Mode, Next, Outcome, Peer, Subject};
use crate::domain::ErrorCategory;

/// How `apply` waits for resources in transient states.
#[derive(Clone, Copy, Debug)]
pub struct ApplyOptions {
    pub concurrency: usize,
    /// Give up on one resource after this long (it is reported as not converged).
    pub timeout: Duration,
    /// Poll at most this far apart while an application is UPDATING.
    pub poll: Duration,
}

impl Default for ApplyOptions {
    fn default() -> Self {
        Self {
            concurrency: 16,
            timeout: Duration::from_secs(900),
            poll: Duration::from_secs(5),
        }
    }
}

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

/// Plans every manifest (reads only). Results in input order.
pub async fn plan_all(core: &Core, manifests: &[Manifest], concurrency: usize) -> Vec<Outcome> {
    let peers = peers(manifests);
    let conflicts = conflicts(&peers, core);
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
            let peers = &peers;
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
pub async fn apply_all(
    core: &Core,
    manifests: &[Manifest],
    opts: ApplyOptions,
    on_done: impl Fn(&Done) + Sync,
) -> Vec<Done> {
    let peers = peers(manifests);
    let conflicts = conflicts(&peers, core);
    let on_done = &on_done;
    let mut out: Vec<Done> = futures::stream::iter(manifests.iter().enumerate())
        .map(|(i, m)| {
            let peers = &peers;
            let conflict = conflicts[i].clone();
            async move {
                let done = converge(core, i, m, peers, conflict, opts).await;
                on_done(&done);
                done
            }
        })
        .buffer_unordered(opts.concurrency.max(1))
        .collect()
        .await;
    out.sort_by_key(|d| d.index);
    out
}

async fn converge(
    core: &Core,
    index: usize,
    m: &Manifest,
    peers: &[Peer],
    conflict: Option<String>,
    opts: ApplyOptions,
) -> Done {
    let start = Instant::now();
    let key = format!("{}/{}", m.namespace, m.name);
    let mut previous: Option<ApplicationEncryptionStatus> = None;
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
        let mut outcome =
            reconcile::reconcile(core, &subject, peers, Mode::Execute, Utc::now()).await;
        puts += outcome.key_policy_writes;
        updates += outcome.application_updates;
        outcome.key_policy_writes = puts;
        outcome.application_updates = updates;
        let wait = match outcome.next {
            Next::Waiting(d) => d.min(opts.poll),
            Next::Failed(ErrorCategory::Transient | ErrorCategory::Conflict) => core
                .backoff
                .failed(&key)
                .min(opts.poll.max(Duration::from_millis(100)) * 4),
            _ => {
                return Done {
                    index,
                    outcome,
                    passes,
                };
            }
        };
        if start.elapsed() + wait > opts.timeout {
            return Done {
                index,
                outcome,
                passes,
            };
        }
        previous = Some(outcome.status.clone());
        tokio::time::sleep(wait).await;
    }
}
