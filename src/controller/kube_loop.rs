//! The Kubernetes side of the controller: a kube-runtime `Controller` per watched namespace
//! (or one for all), the finalizer, the status patch and the Events around the
//! Kubernetes-independent reconcile ([`crate::controller::reconcile`]).
//!
//! - Watch events pass a generation + finalizers predicate, so the controller's own status
//!   patches do not trigger reconciles; drift made in AWS is caught by the requeue instead.
//! - Status is written by one server-side-apply patch of `/status` (field manager
//!   `msf-cmk-controller`, forced: the controller owns the status).
//! - Requeue: short while waiting, the resync period when converged or terminal (stretched so
//!   that resyncs stay under a share of the reconcile capacity, [`resync`]), per-object
//!   backoff with jitter on transient errors.

use compact_str::CompactString;
use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use futures::channel::mpsc::UnboundedSender;
use futures::{StreamExt, TryStreamExt};
use kube::api::{Patch, PatchParams};
use kube::runtime::controller::{Action, Config as ControllerConfig, Controller};
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use kube::runtime::finalizer::{Event as FinalizerEvent, finalizer};
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::{Predicate, WatchStreamExt, predicates, watcher};
use kube::{Api, Client, Resource, ResourceExt};
use tracing::Instrument;

use crate::api::{ApplicationEncryption, FINALIZER, RETRY_UPDATE_ANNOTATION, UpdateOutcome};
use crate::controller::arrivals::Arrivals;
use crate::controller::claims;
use crate::controller::context::Core;
use crate::controller::finalizer as cleanup;
use crate::controller::lifecycle;
use crate::controller::metrics::Timer;
use crate::controller::reconcile::{self, Mode, Next, Note, Peer, Subject};
use crate::controller::resync::{self, Pacer, ResyncConfig};
use crate::controller::update_watch::UpdateWatch;
use crate::controller::{restart_budget, restart_seed, run_watch};
use crate::domain::ErrorCategory;

/// The field manager of every write the controller makes.
pub const FIELD_MANAGER: &str = "msf-cmk-controller";

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("writing status: {0}")]
    Status(#[source] kube::Error),
    #[error("finalizer: {0}")]
    Finalizer(#[source] Box<kube::runtime::finalizer::Error<Error>>),
    #[error("cleanup: {0}")]
    Cleanup(String),
    #[error("resource has no namespace")]
    NoNamespace,
    /// Not a failure: the cleanup waits (a restart of ours in progress, or the rollout budget);
    /// retried with the object's backoff, the finalizer kept.
    #[error("waiting: {0}")]
    Waiting(String),
}

impl Error {
    /// Whether this is a wait rather than a failure (no error counted, no warning).
    fn is_waiting(&self) -> bool {
        match self {
            Error::Waiting(_) => true,
            Error::Finalizer(e) => matches!(
                e.as_ref(),
                kube::runtime::finalizer::Error::CleanupFailed(Error::Waiting(_))
            ),
            _ => false,
        }
    }
}

/// What every reconcile of the Kubernetes loop shares.
pub struct KubeContext {
    pub core: Arc<Core>,
    pub client: Client,
    /// Who publishes the events. A `Recorder` is made per reconcile (`publish`), not kept here:
    /// kube-runtime's keeps every event it published for 6 minutes to merge repeats, in a map
    /// that never shrinks (4.2 of the 13.4 MiB heap peak of a 1,000-resource cold start,
    /// BENCHMARKS.md), while ours hardly ever merge: its key compares the reference with its
    /// resourceVersion, which every status write moves. (A cleanup failing again, which writes
    /// no status, now makes one Event per attempt, at the backoff's pace, instead of a count.)
    pub reporter: Reporter,
    /// The reflector stores of every watched namespace: co-tenants and conflicts are looked up
    /// across all of them.
    pub stores: Vec<Store<ApplicationEncryption>>,
    /// No reconcile before every store is synced; new work waits for a burst to end.
    pub arrivals: Arc<Arrivals>,
    /// Set once the seeded restart slots have been checked against MSF (`restart_seed`).
    pub seeds_checked: std::sync::atomic::AtomicBool,
    /// The watched namespaces (empty: all, one controller): which controller a resource is
    /// triggered on.
    pub namespaces: Vec<String>,
    /// Resources to reconcile again when their update ends or a restart slot frees
    /// (`run_watch`).
    pub follow: UnboundedSender<run_watch::Follow>,
    /// How often converged resources are resynced, and how many resyncs run at once.
    pub resync: Pacer,
}

impl KubeContext {
    fn all_objects(&self) -> Vec<Arc<ApplicationEncryption>> {
        self.stores.iter().flat_map(|s| s.state()).collect()
    }

    /// The index of the controller that reconciles `namespace`'s resources.
    fn controller_of(&self, namespace: &str) -> usize {
        self.namespaces
            .iter()
            .position(|n| n == namespace)
            .unwrap_or(0)
    }

    /// How many resources controller `controller` caches: its resync demand.
    fn resources_of(&self, controller: usize) -> usize {
        self.stores.get(controller).map_or(0, Store::len)
    }

    /// When a resource of `controller` that converged (or is blocked) is resynced
    /// ([`Pacer::next_resync`]); keeps the gauge of the period current.
    fn next_resync(&self, controller: usize) -> Duration {
        let resources = self.resources_of(controller);
        let after = self
            .resync
            .next_resync(controller, resources, rand::random::<f64>());
        self.core
            .metrics
            .set_resync_period(self.resync.longest_period());
        after
    }

    /// Asks the watch to reconcile `obj` again as soon as what it waits for happens.
    fn follow_up(&self, obj: &ApplicationEncryption, awaited: run_watch::Awaited) {
        let namespace = obj.namespace().unwrap_or_default();
        let _ = self.follow.unbounded_send(run_watch::Follow {
            controller: self.controller_of(&namespace),
            object: ObjectRef::from_obj(obj),
            region: run_watch::region_of(&self.core, &namespace, &obj.spec),
            application: obj.spec.application_name.clone(),
            namespace,
            awaited,
        });
    }
}

/// The Recorder's identity.
pub fn reporter() -> Reporter {
    Reporter {
        controller: FIELD_MANAGER.into(),
        instance: std::env::var("POD_NAME").ok(),
    }
}

fn object_key(obj: &ApplicationEncryption) -> String {
    format!("{}/{}", obj.namespace().unwrap_or_default(), obj.name_any())
}

/// How `run` drives its controllers.
#[derive(Clone, Copy, Debug)]
pub struct LoopSettings {
    /// Reconciles at once, per controller.
    pub concurrency: u16,
    /// The quiet time that ends a burst of new resources (see `arrivals`).
    pub coalesce_window: Duration,
    /// How often the watch lists applications while updates of ours run (`run_watch`).
    pub poll: Duration,
    /// The share of the reconcile capacity resyncs may use (`resync`).
    pub resync_share: f64,
}

/// Runs the controllers over `namespaces` (empty: all namespaces) until they stop.
pub async fn run_controllers(
    client: Client,
    core: Arc<Core>,
    namespaces: Vec<String>,
    settings: LoopSettings,
) {
    let LoopSettings {
        concurrency,
        coalesce_window,
        poll,
        resync_share,
    } = settings;
    let apis: Vec<Api<ApplicationEncryption>> = if namespaces.is_empty() {
        vec![Api::all(client.clone())]
    } else {
        namespaces
            .iter()
            .map(|ns| Api::namespaced(client.clone(), ns))
            .collect()
    };
    let arrivals = Arc::new(Arrivals::new(coalesce_window, apis.len()));
    let mut streams = Vec::new();
    let mut stores = Vec::new();
    for (index, api) in apis.iter().enumerate() {
        let (reader, writer) = reflector::store();
        let (synced, seen) = (arrivals.clone(), arrivals.clone());
        let stream = watcher(api.clone(), watcher::Config::default().any_semantic())
            .default_backoff()
            .modify(strip_unused)
            .reflect(writer)
            // After `reflect`: the store holds the whole initial list when this is seen.
            .inspect_ok(move |event| {
                if matches!(event, watcher::Event::InitDone) {
                    synced.store_synced(index);
                }
            })
            .applied_objects()
            .predicate_filter(
                predicates::generation
                    .combine(predicates::finalizers)
                    .combine(retry_annotation_hash),
                Default::default(),
            )
            .inspect_ok(move |o| {
                if is_arrival(o) {
                    seen.saw();
                }
            });
        streams.push((stream, reader.clone()));
        stores.push(reader);
    }
    let (follow, requests) = futures::channel::mpsc::unbounded();
    let (triggers, trigger_streams): (Vec<_>, Vec<_>) = (0..streams.len())
        .map(|_| futures::channel::mpsc::unbounded())
        .unzip();
    let resync = Pacer::new(
        ResyncConfig {
            configured: core.settings.resync,
            share: resync_share,
            concurrency,
        },
        streams.len(),
    );
    core.metrics.set_resync_period(core.settings.resync);
    let ctx = Arc::new(KubeContext {
        core: core.clone(),
        reporter: reporter(),
        client,
        stores,
        arrivals,
        seeds_checked: std::sync::atomic::AtomicBool::new(false),
        namespaces,
        follow,
        resync,
    });
    let runs = streams
        .into_iter()
        .zip(trigger_streams)
        .map(|((stream, reader), triggered)| {
            Controller::for_stream(stream, reader)
                .reconcile_on(triggered)
                .with_config(ControllerConfig::default().concurrency(concurrency))
                .run(reconcile_object, error_policy, ctx.clone())
                .for_each(|r| async move {
                    if let Err(e) = r {
                        tracing::debug!(error = %e, "reconcile request failed");
                    }
                })
        });
    // The watch lives as long as the controllers; they end, it ends.
    let watch = UpdateWatch::new(poll);
    tokio::select! {
        _ = futures::future::join_all(runs) => {}
        _ = watch.run() => {}
        _ = run_watch::drive(&core, &watch, requests, triggers) => {}
    }
}

async fn reconcile_object(
    obj: Arc<ApplicationEncryption>,
    ctx: Arc<KubeContext>,
) -> Result<Action, Error> {
    let ns = obj.namespace().ok_or(Error::NoNamespace)?;
    let span = tracing::info_span!(
        "reconcile",
        resource = %format!("{ns}/{}", obj.name_any()),
        application = %obj.spec.application_name,
    );
    let api: Api<ApplicationEncryption> = Api::namespaced(ctx.client.clone(), &ns);
    async move {
        ctx.arrivals.wait_synced().await;
        ctx.arrivals.reconcile_started();
        finalizer(&api, FINALIZER, obj, |event| async {
            match event {
                FinalizerEvent::Apply(o) => apply(o, &api, &ctx).await,
                FinalizerEvent::Cleanup(o) => clean(o, &ctx).await,
            }
        })
        .await
        .map_err(|e| Error::Finalizer(Box::new(e)))
    }
    .instrument(span)
    .await
}

fn error_policy(obj: Arc<ApplicationEncryption>, err: &Error, ctx: Arc<KubeContext>) -> Action {
    let delay = ctx.core.backoff.failed(&object_key(&obj));
    if err.is_waiting() {
        tracing::info!(resource = %object_key(&obj), %err, retry_in = ?delay, "cleanup waiting");
        return Action::requeue(delay);
    }
    tracing::warn!(resource = %object_key(&obj), error = %err, retry_in = ?delay, "reconcile failed");
    ctx.core.metrics.reconcile_errored();
    Action::requeue(delay)
}

async fn apply(
    obj: Arc<ApplicationEncryption>,
    api: &Api<ApplicationEncryption>,
    ctx: &KubeContext,
) -> Result<Action, Error> {
    let controller = ctx.controller_of(&obj.namespace().unwrap_or_default());
    // Held until this reconcile ends: resyncs never take every slot (`resync`).
    let _resync_slot = match resync_slot(&obj, ctx, controller) {
        Ok(slot) => slot,
        Err(later) => return Ok(Action::requeue(later)),
    };
    if is_new_work(&obj) {
        // Resources applied together are written in one PutKeyPolicy per key (`arrivals`).
        let waited = ctx.arrivals.settle().await;
        if !waited.is_zero() {
            tracing::debug!(
                waited_ms = waited.as_millis() as u64,
                "waited for a burst of new resources to end"
            );
        }
    }
    let timer = Timer::start();
    let key = object_key(&obj);
    let ns = obj.namespace().unwrap_or_default();
    let name = obj.name_any();
    let all = ctx.all_objects();
    // Once, with the whole cache: the updates a previous process left running hold their
    // restart slots before this process starts any (the rollout budget).
    lifecycle::seed_restart_budget(&ctx.core, &all);
    if !ctx
        .seeds_checked
        .swap(true, std::sync::atomic::Ordering::SeqCst)
    {
        // Frees the seeded slots of updates that ended while no process ran (`restart_seed`).
        let (core, objects) = (ctx.core.clone(), all.clone());
        tokio::spawn(async move { restart_seed::free_ended(&core, &objects).await });
    }
    let peers = peers_of(&relevant(&all, &obj));
    let conflict = claims::conflict_of(&ctx.core, &peers, &ns, &name);
    let subject = Subject {
        namespace: &ns,
        name: &name,
        spec: &obj.spec,
        generation: obj.meta().generation,
        previous: obj.status.as_ref(),
        conflict,
        retry_update: retry_annotation(&obj),
    };
    let mut outcome =
        reconcile::reconcile(&ctx.core, &subject, &peers, Mode::Execute, Utc::now()).await;
    if outcome.failed_reads.any() {
        // The cache keeps no observations (`strip_unused`): the stored status has them.
        let stored = api.get(&name).await.map_err(Error::Status)?;
        reconcile::keep_last_observed(
            &mut outcome.status,
            stored.status.as_ref(),
            outcome.failed_reads,
        );
    }

    // Status last, so it tells what this reconcile found and did.
    let patch = serde_json::json!({
        "apiVersion": "msfcmk.dev/v1alpha1",
        "kind": "ApplicationEncryption",
        "status": outcome.status,
    });
    api.patch_status(
        &name,
        &PatchParams::apply(FIELD_MANAGER).force(),
        &Patch::Apply(&patch),
    )
    .await
    .map_err(Error::Status)?;
    publish(ctx, &obj, &outcome.events).await;

    let result = match outcome.next {
        Next::Converged => "converged",
        Next::Waiting(_) => "waiting",
        Next::Blocked => "blocked",
        Next::Failed(_) => "error",
        Next::Refused => "refused",
        Next::Pending => "pending",
    };
    ctx.core.metrics.reconciled(result, timer.seconds());
    ctx.resync.measured(timer.seconds());
    ctx.core
        .metrics
        .set_resource(&ns, &name, &obj.spec, Some(&outcome.status));
    let after = match outcome.next {
        Next::Waiting(_) if waits_for_restart_budget(&outcome.status) => {
            ctx.core.backoff.reset(&key);
            budget_requeue(&ctx.core, &ns, &obj.spec)
        }
        next => requeue_or_resync(&ctx.core, &key, next, ctx.next_resync(controller)),
    };
    if let Next::Waiting(_) = outcome.next
        && let Some(awaited) = run_watch::awaited(
            &outcome.status,
            waits_for_restart_budget(&outcome.status),
            after,
        )
    {
        ctx.follow_up(&obj, awaited);
    }
    tracing::info!(result, ready = outcome.ready(), requeue_in = ?after, "reconciled");
    Ok(Action::requeue(after))
}

/// For a resync ([`resync::is_resync`]), a resync slot of `controller`; `Err(delay)` when every
/// resync slot is taken: the resync is deferred, untouched ([`Pacer::deferred`]), so that new
/// work, spec changes and resources in progress find a slot whatever order kube-runtime's
/// scheduler starts due requests in. `Ok(None)`: not a resync.
fn resync_slot<'a>(
    obj: &ApplicationEncryption,
    ctx: &'a KubeContext,
    controller: usize,
) -> Result<Option<resync::ResyncSlot<'a>>, Duration> {
    if !resync::is_resync(obj) {
        return Ok(None);
    }
    if let Some(slot) = ctx.resync.try_start(controller) {
        return Ok(Some(slot));
    }
    let later = ctx.resync.deferred(controller, std::time::Instant::now());
    tracing::debug!(resource = %object_key(obj), retry_in = ?later, "resync deferred: every resync slot is taken");
    Err(later)
}

/// Not yet reconciled at its generation: a new resource or a spec change, which may need a
/// write. Resyncs of converged resources are not.
fn is_new_work(o: &ApplicationEncryption) -> bool {
    o.status.as_ref().and_then(|s| s.observed_generation) != o.meta().generation
}

/// A watch event that brings work from outside: a resource new to the controller (no
/// finalizer yet) or a spec change of one it reconciled. The event of our own finalizer patch
/// (finalizer, no status yet) is not one: counting it would stretch every burst by our writes.
fn is_arrival(o: &ApplicationEncryption) -> bool {
    let ours = o.finalizers().iter().any(|f| f == FINALIZER);
    let observed = o.status.as_ref().and_then(|s| s.observed_generation);
    o.meta().deletion_timestamp.is_none()
        && (!ours || observed.is_some_and(|g| Some(g) != o.meta().generation))
}

/// Drops what no reconcile reads before the object enters the cache: `managedFields`, the
/// `resourceVersion`, every annotation but ours (`kubectl apply` keeps a full copy of the object in one), labels, owner
/// references, the conditions' messages and the status' observations (`application`,
/// `keyPolicy`, `lastSyncTime`). The cache holds every resource for the life of the process, so
/// this is most of its memory.
pub fn strip_unused(o: &mut ApplicationEncryption) {
    let meta = o.meta_mut();
    meta.managed_fields = None;
    // The watcher resumes from the versions of its own events, before this; an object's
    // version would be copied into every reference kube-runtime makes to it (store key,
    // scheduled reconcile), and nothing here writes with a version precondition.
    meta.resource_version = None;
    meta.labels = None;
    meta.owner_references = None;
    if let Some(annotations) = meta.annotations.as_mut() {
        annotations.retain(|k, _| k == RETRY_UPDATE_ANNOTATION);
        if annotations.is_empty() {
            meta.annotations = None;
        }
    }
    // Every reconcile writes the whole status with messages built from what it observed; of
    // the previous conditions it reads type, status, reason and lastTransitionTime only
    // (`status::build_conditions`, `is_incumbent`). The six messages, most quoting the key
    // ARN, are about a quarter of a converged resource's cached bytes (BENCHMARKS.md).
    if let Some(status) = o.status.as_mut() {
        for c in &mut status.conditions {
            c.message = CompactString::default();
        }
        // Written afresh by every reconcile from what it reads; a failed read keeps the last
        // observation by reading the stored status again (`reconcile::keep_last_observed`).
        // `keyPolicy.ownedSids` alone repeats every Sid of the key's policy in each of its
        // resources. The application's stays while our update is in progress: a new process
        // seeds the rollout budget from it (`lifecycle::seed_restart_budget`), and those are
        // few (the updates in flight).
        let in_progress = status
            .last_update
            .as_ref()
            .is_some_and(|u| u.outcome == UpdateOutcome::InProgress);
        if !in_progress {
            status.application = None;
        }
        status.key_policy = None;
        status.last_sync_time = None;
    }
}

/// The `msfcmk.dev/retry-update` annotation of a resource.
fn retry_annotation(obj: &ApplicationEncryption) -> Option<&str> {
    obj.annotations()
        .get(RETRY_UPDATE_ANNOTATION)
        .map(String::as_str)
}

/// A new value of the retry annotation must trigger a reconcile although the generation does
/// not move (metadata changes do not bump it).
fn retry_annotation_hash(obj: &ApplicationEncryption) -> Option<u64> {
    use std::hash::{Hash, Hasher};
    let value = retry_annotation(obj)?;
    let mut h = std::collections::hash_map::DefaultHasher::new();
    value.hash(&mut h);
    Some(h.finish())
}

fn waits_for_restart_budget(status: &crate::api::ApplicationEncryptionStatus) -> bool {
    crate::controller::status::ready(status)
        .is_some_and(|c| c.reason == restart_budget::WAITING_FOR_RESTART_BUDGET)
}

/// When a resource waiting for a restart slot looks again: later the more resources wait
/// ([`restart_budget::waiting_requeue`]).
fn budget_requeue(
    core: &Core,
    namespace: &str,
    spec: &crate::api::ApplicationEncryptionSpec,
) -> Duration {
    let region = run_watch::region_of(core, namespace, spec);
    let core = core.for_namespace(namespace);
    restart_budget::waiting_requeue(
        core.restart_budget.waiters(&region),
        core.restart_budget.limit(),
        rand::random::<f64>(),
    )
}

/// When to look at an object again, resyncing after `--resync-period` as configured (`run`
/// stretches it with [`requeue_or_resync`]).
pub fn requeue_after(core: &Core, key: &str, next: Next) -> Duration {
    requeue_or_resync(core, key, next, core.settings.resync)
}

/// When to look at an object again; `resync`: this resource's next resync ([`Pacer`]).
pub fn requeue_or_resync(core: &Core, key: &str, next: Next, resync: Duration) -> Duration {
    match next {
        Next::Failed(ErrorCategory::Transient | ErrorCategory::Conflict) => {
            core.backoff.failed(key)
        }
        Next::Waiting(d) => {
            core.backoff.reset(key);
            d
        }
        // Terminal, converged or refused: a spec change triggers a reconcile by itself; the
        // resync still catches fixes and drift made in AWS.
        Next::Converged | Next::Blocked | Next::Refused | Next::Pending | Next::Failed(_) => {
            core.backoff.reset(key);
            resync
        }
    }
}

async fn clean(obj: Arc<ApplicationEncryption>, ctx: &KubeContext) -> Result<Action, Error> {
    let key = object_key(&obj);
    let ns = obj.namespace().unwrap_or_default();
    let name = obj.name_any();
    let peers = peers_of(&relevant(&ctx.all_objects(), &obj));
    let subject = Subject {
        namespace: &ns,
        name: &name,
        spec: &obj.spec,
        generation: obj.meta().generation,
        previous: obj.status.as_ref(),
        conflict: claims::conflict_of(&ctx.core, &peers, &ns, &name),
        retry_update: retry_annotation(&obj),
    };
    match cleanup::cleanup(&ctx.core, &subject).await {
        Ok(notes) if cleanup::restart_pending(&ctx.core, &subject) => {
            // The revert started a restart: its slot is freed by the next pass, once it ended.
            publish(ctx, &obj, &notes).await;
            Err(Error::Waiting(format!(
                "the revert of {} restarts it; the finalizer stays until the restart ends",
                obj.spec.application_name
            )))
        }
        Err(cleanup::CleanupError::Waiting { reason, message }) => {
            Err(Error::Waiting(format!("{reason}: {message}")))
        }
        Ok(notes) => {
            cleanup::forget(&ctx.core, &subject);
            publish(ctx, &obj, &notes).await;
            ctx.core.backoff.reset(&key);
            ctx.core.metrics.set_resource(&ns, &name, &obj.spec, None);
            Ok(Action::await_change())
        }
        Err(e) => {
            let note = Note {
                warning: true,
                reason: "CleanupFailed".into(),
                action: "Cleanup".into(),
                message: e.to_string(),
            };
            publish(ctx, &obj, std::slice::from_ref(&note)).await;
            Err(Error::Cleanup(e.to_string()))
        }
    }
}

/// The cached resources that can matter to `me`: those that may share its key (co-tenants)
/// and everyone claiming the application of `me` or of one of those (conflicts are decided
/// among the claims of one application, so each of these groups is complete). Copying every
/// spec for every reconcile would cost memory and time in proportion to the whole cache.
fn relevant(
    all: &[Arc<ApplicationEncryption>],
    me: &ApplicationEncryption,
) -> Vec<Arc<ApplicationEncryption>> {
    let claims: Vec<(Option<&str>, &str)> = all
        .iter()
        .map(|o| (o.spec.key_id.as_deref(), o.spec.application_name.as_str()))
        .collect();
    let mine = (me.spec.key_id.as_deref(), me.spec.application_name.as_str());
    claims::relevant(&claims, mine)
        .into_iter()
        .map(|i| all[i].clone())
        .collect()
}

/// Every cached resource as a peer: deleted ones too, because they keep their application
/// until cleanup has run.
fn peers_of(all: &[Arc<ApplicationEncryption>]) -> Vec<Peer> {
    all.iter()
        .map(|o| Peer {
            namespace: o.namespace().unwrap_or_default(),
            name: o.name_any(),
            spec: o.spec.clone(),
            incumbent: is_incumbent(o),
            deleting: o.meta().deletion_timestamp.is_some(),
        })
        .collect()
}

/// Whether the resource already acts on its application: it has a Ready condition that is not
/// a refusal.
fn is_incumbent(o: &ApplicationEncryption) -> bool {
    o.status
        .as_ref()
        .and_then(crate::controller::status::ready)
        .is_some_and(|c| c.reason != "Conflict" && c.reason != "NotPermitted")
}

async fn publish(ctx: &KubeContext, obj: &ApplicationEncryption, notes: &[Note]) {
    let reference = obj.object_ref(&());
    let recorder = Recorder::new(ctx.client.clone(), ctx.reporter.clone());
    for n in notes {
        let ev = Event {
            type_: if n.warning {
                EventType::Warning
            } else {
                EventType::Normal
            },
            reason: n.reason.clone(),
            note: Some(truncate(&n.message, 1000)),
            action: n.action.clone(),
            secondary: None,
        };
        // An event that cannot be written must not fail the reconcile: AWS is already changed.
        if let Err(e) = recorder.publish(&ev, &reference).await {
            tracing::warn!(error = %e, reason = %n.reason, "cannot publish event");
        }
    }
}

fn truncate(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_string();
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &s[..end])
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::ApplicationEncryptionSpec;

    fn object(generation: i64, retry: Option<&str>) -> ApplicationEncryption {
        let spec: ApplicationEncryptionSpec = serde_json::from_value(serde_json::json!({
            "applicationName": "app",
            "keyType": "AwsOwnedKey"
        }))
        .unwrap();
        let mut o = ApplicationEncryption::new("r", spec);
        o.metadata.generation = Some(generation);
        if let Some(v) = retry {
            o.metadata.annotations = Some(
                [(RETRY_UPDATE_ANNOTATION.to_string(), v.to_string())]
                    .into_iter()
                    .collect(),
            );
        }
        o
    }

    #[test]
    fn a_new_retry_annotation_value_passes_the_watch_filter() {
        let filter = predicates::generation.combine(retry_annotation_hash);
        let hash = |o: &ApplicationEncryption| filter.hash_property(o);
        assert_eq!(retry_annotation(&object(1, Some("a"))), Some("a"));
        assert_eq!(retry_annotation_hash(&object(1, None)), None);
        // Same generation: only the annotation moves the hash, so only it triggers.
        assert_ne!(hash(&object(1, None)), hash(&object(1, Some("a"))));
        assert_ne!(hash(&object(1, Some("a"))), hash(&object(1, Some("b"))));
        assert_eq!(hash(&object(1, Some("a"))), hash(&object(1, Some("a"))));
    }

    #[test]
    fn the_cache_keeps_only_what_reconciles_read() {
        let mut o = object(1, Some("a"));
        let meta = &mut o.metadata;
        meta.annotations.as_mut().unwrap().insert(
            "kubectl.kubernetes.io/last-applied-configuration".into(),
            "{...}".into(),
        );
        meta.labels = Some([("team".to_string(), "a".to_string())].into());
        meta.managed_fields = Some(vec![Default::default()]);
        meta.resource_version = Some("42".into());
        meta.finalizers = Some(vec![FINALIZER.into()]);
        let ready = crate::api::Condition {
            type_: "Ready".into(),
            status: "True".into(),
            reason: "Converged".into(),
            message: "AWS matches the spec".into(),
            last_transition_time: "2026-01-01T00:00:00Z".into(),
            observed_generation: Some(1),
        };
        let record: crate::api::LastUpdate = serde_json::from_value(serde_json::json!({
            "keyType": "AwsOwnedKey",
            "operationId": "op-1",
            "time": "2026-01-01T00:00:00Z",
            "outcome": "RolledBack",
            "message": "kept: a failed update's message is read back",
        }))
        .unwrap();
        o.status = Some(crate::api::ApplicationEncryptionStatus {
            observed_generation: Some(1),
            conditions: vec![ready.clone()],
            last_update: Some(record.clone()),
            application: Some(crate::api::ApplicationObservation {
                arn: Some("arn:aws:kinesisanalytics:us-east-1:123456789012:application/a".into()),
                ..Default::default()
            }),
            key_policy: Some(crate::api::KeyPolicyObservation {
                owned_sids: vec!["MsfCmkOperatorUseKey-op".into()],
                ..Default::default()
            }),
            last_sync_time: Some("2026-01-01T00:00:00Z".into()),
            ..Default::default()
        });
        strip_unused(&mut o);
        assert_eq!(retry_annotation(&o), Some("a"));
        assert_eq!(o.metadata.annotations.as_ref().map(|a| a.len()), Some(1));
        assert_eq!(o.metadata.labels, None);
        assert_eq!(o.metadata.managed_fields, None);
        assert_eq!(o.metadata.resource_version, None);
        assert_eq!(o.metadata.finalizers, Some(vec![FINALIZER.to_string()]));
        let status = o.status.as_ref().unwrap();
        // Only the message goes: reconciles read the rest of the previous conditions.
        let stripped = crate::api::Condition {
            message: Default::default(),
            ..ready
        };
        assert_eq!(status.conditions, vec![stripped]);
        assert!(is_incumbent(&o));
        assert_eq!(status.last_update, Some(record));
        assert_eq!(status.application, None);
        assert_eq!(status.key_policy, None);
        assert_eq!(status.last_sync_time, None);
        // While our update is in progress, the application's observation stays (the rollout
        // budget is seeded from it after a restart).
        let mut updating = object(1, None);
        let record: crate::api::LastUpdate = serde_json::from_value(serde_json::json!({
            "keyType": "AwsOwnedKey",
            "time": "2026-01-01T00:00:00Z",
            "outcome": "InProgress",
        }))
        .unwrap();
        let seen = crate::api::ApplicationObservation {
            status: Some("UPDATING".into()),
            ..Default::default()
        };
        updating.status = Some(crate::api::ApplicationEncryptionStatus {
            application: Some(seen.clone()),
            last_update: Some(record),
            ..Default::default()
        });
        strip_unused(&mut updating);
        assert_eq!(updating.status.unwrap().application, Some(seen));
        let mut plain = object(1, None);
        plain.metadata.annotations = Some([("x".to_string(), "y".to_string())].into());
        strip_unused(&mut plain);
        assert_eq!(plain.metadata.annotations, None);
    }

    #[test]
    fn arrivals_are_new_resources_and_spec_changes_not_our_finalizer() {
        let mut o = object(1, None);
        assert!(is_arrival(&o), "new: no finalizer yet");
        o.metadata.finalizers = Some(vec![FINALIZER.into()]);
        assert!(!is_arrival(&o), "our finalizer patch");
        o.status = Some(crate::api::ApplicationEncryptionStatus {
            observed_generation: Some(1),
            ..Default::default()
        });
        assert!(!is_arrival(&o), "reconciled at its generation");
        assert!(!is_new_work(&o));
        o.metadata.generation = Some(2);
        assert!(is_arrival(&o), "spec change");
        assert!(is_new_work(&o));
    }

    fn claim(name: &str, app: &str, key: &str) -> Arc<ApplicationEncryption> {
        let spec: ApplicationEncryptionSpec = serde_json::from_value(serde_json::json!({
            "applicationName": app,
            "keyType": "CustomerManagedKey",
            "keyId": key,
        }))
        .unwrap();
        let mut o = ApplicationEncryption::new(name, spec);
        o.metadata.namespace = Some("ns".into());
        Arc::new(o)
    }

    #[test]
    fn relevant_peers_are_the_key_candidates_and_the_claims_of_their_applications() {
        let k1 = "arn:aws:kms:us-east-1:111122223333:key/1";
        let k2 = "arn:aws:kms:us-east-1:111122223333:key/2";
        let all = vec![
            claim("me", "a", k1),
            claim("same-key", "b", k1),
            claim("alias", "c", "alias/x"),
            claim("other-key", "d", k2),
            // Claims b's application on another key: decides whether b is a co-tenant.
            claim("rival-of-b", "b", k2),
            claim("rival-of-me", "a", k2),
        ];
        let names: Vec<String> = relevant(&all, &all[0])
            .iter()
            .map(|o| o.name_any())
            .collect();
        assert_eq!(
            names,
            ["me", "same-key", "alias", "rival-of-b", "rival-of-me"]
        );
    }
}
