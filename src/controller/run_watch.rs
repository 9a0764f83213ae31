//! `run`'s follow-up of what it waits for (I/O), on [`UpdateWatch`]: the updates it made
//! (per account and region and poll, one ListApplications however many wait, or one
//! DescribeApplication per update awaited when that is fewer calls) and the restart slots
//! resources wait for (`--max-concurrent-restarts`). A resource whose reconcile ends
//! waiting on one of them is reconciled again as soon as the poll shows its application out of
//! UPDATING, or a slot frees, instead of at its requeue time: MSF updates end at any moment,
//! and a budget of 10 slots released only by 10 s requeues would hold 1,000 updates back for
//! minutes. The requeue stays as the fallback (a watch that missed).
//!
//! Nothing here decides: the triggered reconcile does, from what it reads itself.

use std::collections::HashSet;
use std::time::Duration;

use futures::StreamExt;
use futures::channel::mpsc::{UnboundedReceiver, UnboundedSender};
use futures::stream::FuturesUnordered;
use kube::runtime::reflector::ObjectRef;

use crate::api::{ApplicationEncryption, ApplicationEncryptionSpec, UpdateOutcome};
use crate::controller::context::Core;
use crate::controller::update_watch::UpdateWatch;

/// What a resource waits for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Awaited {
    /// The end of the update it made (its application out of UPDATING).
    UpdateEnd,
    /// A restart slot, for at most this long (its requeue time).
    RestartSlot(Duration),
}

impl Awaited {
    /// The metric label (`update_watch_wakeups_total{awaited}`).
    pub fn label(self) -> &'static str {
        match self {
            Awaited::UpdateEnd => "update_end",
            Awaited::RestartSlot(_) => "restart_slot",
        }
    }
}

/// One resource to reconcile again when what it waits for happens.
#[derive(Clone, Debug)]
pub struct Follow {
    /// Which controller (watched namespace, or 0 for all) reconciles it.
    pub controller: usize,
    pub object: ObjectRef<ApplicationEncryption>,
    pub namespace: String,
    pub region: String,
    pub application: String,
    pub awaited: Awaited,
}

/// What a finished reconcile waits for, from the status it wrote: None when it waits for
/// nothing the watch can see (settle time, backoff, converged).
pub fn awaited(
    status: &crate::api::ApplicationEncryptionStatus,
    waits_for_slot: bool,
    requeue: Duration,
) -> Option<Awaited> {
    if waits_for_slot {
        return Some(Awaited::RestartSlot(requeue));
    }
    let ours_running = status
        .last_update
        .as_ref()
        .is_some_and(|u| u.outcome == UpdateOutcome::InProgress);
    ours_running.then_some(Awaited::UpdateEnd)
}

/// The region a resource's application is in: its spec's, else the namespace's account's
/// default.
pub fn region_of(core: &Core, namespace: &str, spec: &ApplicationEncryptionSpec) -> String {
    spec.region
        .clone()
        .filter(|r| !r.is_empty())
        .unwrap_or_else(|| core.for_namespace(namespace).defaults.region.clone())
}

/// Serves follow requests until their channel closes: one waiter per resource at a time (a
/// resource asking again while it waits is already covered), each woken resource sent to its
/// controller's trigger stream.
pub async fn drive<'a>(
    core: &'a Core,
    watch: &UpdateWatch<'a>,
    mut requests: UnboundedReceiver<Follow>,
    triggers: Vec<UnboundedSender<ObjectRef<ApplicationEncryption>>>,
) {
    let mut waiting: HashSet<ObjectRef<ApplicationEncryption>> = HashSet::new();
    let mut waits = FuturesUnordered::new();
    loop {
        tokio::select! {
            request = requests.next() => {
                let Some(f) = request else { break };
                if !waiting.insert(f.object.clone()) {
                    continue;
                }
                waits.push(wait(core, watch, f));
            }
            Some((f, woke)) = waits.next(), if !waits.is_empty() => {
                waiting.remove(&f.object);
                if woke && let Some(tx) = triggers.get(f.controller) {
                    core.metrics.update_watch_wakeup(f.awaited.label());
                    let _ = tx.unbounded_send(f.object);
                }
            }
        }
    }
}

/// Waits for one resource; `true` when it should be reconciled now (false: the watch let it go
/// without a word; its requeue brings it back). The reconcile it
/// triggers describes the application itself, so `run`'s slot waiters name none: the watch
/// lists for them no more than for its awaited updates.
async fn wait<'a>(core: &'a Core, watch: &UpdateWatch<'a>, f: Follow) -> (Follow, bool) {
    let core = core.for_namespace(&f.namespace);
    let woke = match f.awaited {
        Awaited::UpdateEnd => watch
            .until_settled(core, &f.region, &f.application)
            .await
            .is_some(),
        Awaited::RestartSlot(limit) => {
            watch.until_slot(core, &f.region, limit).await;
            true
        }
    };
    (f, woke)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::{ApplicationEncryptionStatus, LastUpdate};

    fn status(outcome: Option<UpdateOutcome>) -> ApplicationEncryptionStatus {
        ApplicationEncryptionStatus {
            last_update: outcome.map(|outcome| LastUpdate {
                generation: Some(1),
                key_type: crate::api::KeyType::CustomerManagedKey,
                key_arn: None,
                operation_id: None,
                version_id: Some(2),
                time: "2026-11-26T00:00:00Z".into(),
                outcome,
                message: None,
                retry: None,
            }),
            ..ApplicationEncryptionStatus::default()
        }
    }

    #[test]
    fn a_resource_waits_for_its_own_update_or_a_slot_only() {
        let requeue = Duration::from_secs(7);
        assert_eq!(
            awaited(&status(Some(UpdateOutcome::InProgress)), false, requeue),
            Some(Awaited::UpdateEnd)
        );
        assert_eq!(
            awaited(&status(None), true, requeue),
            Some(Awaited::RestartSlot(requeue))
        );
        // Settled, rolled back or never updated: nothing for the watch to see.
        for outcome in [
            None,
            Some(UpdateOutcome::Successful),
            Some(UpdateOutcome::RolledBack),
        ] {
            assert_eq!(awaited(&status(outcome), false, requeue), None);
        }
    }
}
