//! The Kubernetes side of the controller: a kube-runtime `Controller` per watched namespace
//! (or one for all), the finalizer, the status patch and the Events around the
//! Kubernetes-independent reconcile ([`crate::controller::reconcile`]).
//!
//! - Watch events pass a generation + finalizers predicate, so the controller's own status
//!   patches do not trigger reconciles; drift made in AWS is caught by the requeue instead.
//! - Status is written by one server-side-apply patch of `/status` (field manager
//!   `msf-cmk-controller`, forced: the controller owns the status).
//! - Requeue: short while waiting, the resync period when converged or terminal, per-object
//!   backoff with jitter on transient errors.

use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use futures::StreamExt;
use kube::api::{Patch, PatchParams};
use kube::runtime::controller::{Action, Config as ControllerConfig, Controller};
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use kube::runtime::finalizer::{Event as FinalizerEvent, finalizer};
use kube::runtime::reflector::{self, Store};
use kube::runtime::{Predicate, WatchStreamExt, predicates, watcher};
use kube::{Api, Client, Resource, ResourceExt};
use tracing::Instrument;

use crate::api::{ApplicationEncryption, FINALIZER, RETRY_UPDATE_ANNOTATION};
use crate::controller::context::Core;
use crate::controller::finalizer as cleanup;
use crate::controller::fleet;
use crate::controller::metrics::Timer;
use crate::controller::reconcile::{self, Mode, Next, Note, Peer, Subject};
use crate::controller::tenancy::{Claim, conflicting_owner};
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
}

/// What every reconcile of the Kubernetes loop shares.
pub struct KubeContext {
    pub core: Arc<Core>,
    pub client: Client,
    pub recorder: Recorder,
    /// The reflector stores of every watched namespace: co-tenants and conflicts are looked up
    /// across all of them.
    pub stores: Vec<Store<ApplicationEncryption>>,
}

impl KubeContext {
    fn all_objects(&self) -> Vec<Arc<ApplicationEncryption>> {
        self.stores.iter().flat_map(|s| s.state()).collect()
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

/// Runs the controllers over `namespaces` (empty: all namespaces) until they stop.
pub async fn run_controllers(
    client: Client,
    core: Arc<Core>,
    namespaces: Vec<String>,
    concurrency: u16,
) {
    let apis: Vec<Api<ApplicationEncryption>> = if namespaces.is_empty() {
        vec![Api::all(client.clone())]
    } else {
        namespaces
            .iter()
            .map(|ns| Api::namespaced(client.clone(), ns))
            .collect()
    };
    let mut streams = Vec::new();
    let mut stores = Vec::new();
    for api in &apis {
        let (reader, writer) = reflector::store();
        let stream = watcher(api.clone(), watcher::Config::default().any_semantic())
            .default_backoff()
            .reflect(writer)
            .applied_objects()
            .predicate_filter(
                predicates::generation
                    .combine(predicates::finalizers)
                    .combine(retry_annotation_hash),
                Default::default(),
            );
        streams.push((stream, reader.clone()));
        stores.push(reader);
    }
    let ctx = Arc::new(KubeContext {
        core,
        recorder: Recorder::new(client.clone(), reporter()),
        client,
        stores,
    });
    let runs = streams.into_iter().map(|(stream, reader)| {
        Controller::for_stream(stream, reader)
            .with_config(ControllerConfig::default().concurrency(concurrency))
            .run(reconcile_object, error_policy, ctx.clone())
            .for_each(|r| async move {
                if let Err(e) = r {
                    tracing::debug!(error = %e, "reconcile request failed");
                }
            })
    });
    futures::future::join_all(runs).await;
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
    tracing::warn!(resource = %object_key(&obj), error = %err, retry_in = ?delay, "reconcile failed");
    ctx.core.metrics.reconcile_errored();
    Action::requeue(delay)
}

async fn apply(
    obj: Arc<ApplicationEncryption>,
    api: &Api<ApplicationEncryption>,
    ctx: &KubeContext,
) -> Result<Action, Error> {
    let timer = Timer::start();
    let key = object_key(&obj);
    let ns = obj.namespace().unwrap_or_default();
    let name = obj.name_any();
    let all = ctx.all_objects();
    let peers: Vec<Peer> = all
        .iter()
        .filter(|o| o.meta().deletion_timestamp.is_none())
        .map(|o| Peer {
            namespace: o.namespace().unwrap_or_default(),
            name: o.name_any(),
            spec: o.spec.clone(),
        })
        .collect();
    let conflict = conflict_message(&obj, &all, &ctx.core);
    let subject = Subject {
        namespace: &ns,
        name: &name,
        spec: &obj.spec,
        generation: obj.meta().generation,
        previous: obj.status.as_ref(),
        conflict,
        retry_update: retry_annotation(&obj),
    };
    let outcome =
        reconcile::reconcile(&ctx.core, &subject, &peers, Mode::Execute, Utc::now()).await;

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
    ctx.core.metrics.set_ready(&key, Some(outcome.ready()));
    ctx.core
        .metrics
        .set_resource(&ns, &name, &obj.spec, Some(&outcome.status));
    let after = requeue_after(&ctx.core, &key, outcome.next);
    tracing::info!(result, ready = outcome.ready(), requeue_in = ?after, "reconciled");
    Ok(Action::requeue(after))
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

/// When to look at an object again.
pub fn requeue_after(core: &Core, key: &str, next: Next) -> Duration {
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
            core.settings.resync
        }
    }
}

async fn clean(obj: Arc<ApplicationEncryption>, ctx: &KubeContext) -> Result<Action, Error> {
    let key = object_key(&obj);
    let ns = obj.namespace().unwrap_or_default();
    let name = obj.name_any();
    let all = ctx.all_objects();
    let subject = Subject {
        namespace: &ns,
        name: &name,
        spec: &obj.spec,
        generation: obj.meta().generation,
        previous: obj.status.as_ref(),
        conflict: conflict_message(&obj, &all, &ctx.core),
        retry_update: retry_annotation(&obj),
    };
    match cleanup::cleanup(&ctx.core, &subject).await {
        Ok(notes) => {
            publish(ctx, &obj, &notes).await;
            ctx.core.backoff.reset(&key);
            ctx.core.metrics.set_ready(&key, None);
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

/// The message for `obj` if an older resource claims the same application and region.
fn conflict_message(
    obj: &ApplicationEncryption,
    all: &[Arc<ApplicationEncryption>],
    core: &Core,
) -> Option<String> {
    // With an accounts file, the region is qualified by the namespace's account.
    let region_of = |o: &ApplicationEncryption| {
        let region = o
            .spec
            .region
            .clone()
            .unwrap_or_else(|| core.defaults.region.clone());
        fleet::claim_region(core, &o.namespace().unwrap_or_default(), &region)
    };
    let owned: Vec<(String, String, String)> = all
        .iter()
        .map(|o| {
            (
                o.namespace().unwrap_or_default(),
                o.name_any(),
                region_of(o),
            )
        })
        .collect();
    let claims: Vec<Claim<'_>> = all
        .iter()
        .zip(&owned)
        .map(|(o, (ns, name, region))| Claim {
            namespace: ns,
            name,
            created: o
                .meta()
                .creation_timestamp
                .as_ref()
                .map(|t| chrono_time(&t.0)),
            region,
            application_name: &o.spec.application_name,
            incumbent: is_incumbent(o),
        })
        .collect();
    let my_ns = obj.namespace().unwrap_or_default();
    let my_name = obj.name_any();
    let my_region = region_of(obj);
    let me = Claim {
        namespace: &my_ns,
        name: &my_name,
        created: obj
            .meta()
            .creation_timestamp
            .as_ref()
            .map(|t| chrono_time(&t.0)),
        region: &my_region,
        application_name: &obj.spec.application_name,
        incumbent: is_incumbent(obj),
    };
    conflicting_owner(&core.tenancy, &me, &claims).map(|owner| {
        format!(
            "Application {} in {} is already claimed by ApplicationEncryption {}/{} (older); delete one of the two.",
            obj.spec.application_name, my_region, owner.namespace, owner.name
        )
    })
}

/// Whether the resource already acts on its application: it has a Ready condition that is not
/// a refusal.
fn is_incumbent(o: &ApplicationEncryption) -> bool {
    o.status
        .as_ref()
        .and_then(crate::controller::status::ready)
        .is_some_and(|c| c.reason != "Conflict" && c.reason != "NotPermitted")
}

fn chrono_time(t: &k8s_openapi::jiff::Timestamp) -> chrono::DateTime<Utc> {
    chrono::DateTime::from_timestamp(t.as_second(), t.subsec_nanosecond().max(0) as u32)
        .unwrap_or_default()
}

async fn publish(ctx: &KubeContext, obj: &ApplicationEncryption, notes: &[Note]) {
    let reference = obj.object_ref(&());
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
        if let Err(e) = ctx.recorder.publish(&ev, &reference).await {
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
}
