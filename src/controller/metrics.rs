//! Prometheus metrics (prometheus-client) and the metering decorators for the AWS traits.
//!
//! Metric names (all prefixed `msf_cmk_`):
//! - `reconciles_total{result}`: result = converged | waiting | blocked | error | refused
//! - `reconcile_duration_seconds`: histogram of one reconcile, AWS calls included
//! - `aws_calls_total{service,operation,outcome,account}`: outcome = ok | transient | conflict |
//!   terminal; account = the AWS account the call was made in ([`account_label`])
//! - `drift_corrections_total{kind}`: kind = key_policy | encryption; a change made in AWS for a
//!   resource that had already converged for its current generation
//! - `resources{ready}`: resources by their Ready condition (True | False | Unknown)
//! - `resource_ready{namespace,name,application,key_type,reason}`: 1 when the resource is Ready,
//!   else 0; `reason` is Ready's reason (a CamelCase word from the code, so a bounded set),
//!   `key_type` the desired one. One series per resource: a new reason replaces the old series.
//! - `aws_call_duration_seconds{service,operation,account}`: histogram of one AWS call, SDK retries
//!   included
//! - `aws_throttles_total{service,operation,account}`: calls that ended in a throttling error after the
//!   SDK's own retries (what the SDK retried away is not seen here)
//! - `concurrent_key_policy_edits_total{stage}`: another writer changed a key policy inside
//!   one of our read-modify-writes ([`crate::controller::key_write`]); stage = before_write (seen
//!   by the re-read just before PutKeyPolicy: the write was made again from it) | after_write
//!   (seen by the re-read after it: the newer policy kept, our statements re-added)
//! - `aws_rate_limit{service,operation,region,account}`: the requests per second the adaptive
//!   pacing allows now (`aws::ratelimit`): halved on throttling, grows back up to the ceiling;
//!   read from the lanes when scraped, one series per lane used so far
//! - `restart_slots_in_use{region,account}`: our updates of RUNNING applications in progress
//!   (the rollout budget, `--max-concurrent-restarts`)
//! - `update_watch_wakeups_total{awaited}`: resources `run` reconciled at once because the
//!   application list showed what they waited for (`controller::run_watch`); awaited =
//!   update_end (our update ended) | restart_slot (a restart slot freed, or the wait's limit)
//! - `resync_period_seconds`: the resync period `run` uses now for converged resources (the
//!   longest of its controllers', before jitter): `--resync-period`, or longer once resyncs of
//!   every cached resource would ask for more than `--resync-share` of the reconcile capacity
//!   ([`crate::controller::resync`])
//! - `leader`: 1 while this replica runs the controllers (also without leader election), else 0;
//!   set from `/readyz`'s state when scraped
//! - `build_info{version,git_revision}`: always 1; `git_revision` as `--version` prints it
//!   ([`crate::build_info`]: `MSF_CMK_GIT_REVISION` at build time, else the checkout's HEAD)
//!
//! AWS calls are counted and timed by wrapping `MsfApi` / `KmsApi` ([`MeteredMsf`],
//! [`MeteredKms`]) so that no call site can forget to count.

use std::collections::HashMap;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

use crate::api::{ApplicationEncryptionSpec, ApplicationEncryptionStatus, KeyType};
use crate::aws::{AccountLimiters, AwsError, KmsApi, MsfApi};
use crate::controller::identity::CallerCell;
use crate::domain::{
    ApplicationDescription, ApplicationOperation, ApplicationSummary, EncryptionUpdate,
    ObservedKey, UpdateAccepted,
};

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ResultLabels {
    pub result: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct AwsCallLabels {
    pub service: String,
    pub operation: String,
    pub outcome: String,
    /// The AWS account the call was made in (see [`account_label`]).
    pub account: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct KindLabels {
    pub kind: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReadyLabels {
    pub ready: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct AwsOperationLabels {
    pub service: String,
    pub operation: String,
    pub account: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RateLabels {
    pub service: String,
    pub operation: String,
    pub region: String,
    pub account: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RegionLabels {
    pub region: String,
    pub account: String,
}

/// One resource's `resource_ready` series. Kept for every resource for the life of the process,
/// twice (the family's key and [`Metrics::objects`], to remove the series when its labels
/// change), so the texts are shared rather than copied: at 10,000 resources `String`s cost
/// about 5 MiB more (BENCHMARKS.md, "Controller footprint").
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ResourceLabels {
    pub namespace: Arc<str>,
    pub name: Arc<str>,
    pub application: Arc<str>,
    pub key_type: &'static str,
    pub reason: Arc<str>,
}

/// What the metrics remember of one resource.
#[derive(Debug)]
struct ObjectSeries {
    ready: ReadyState,
    labels: ResourceLabels,
}

/// The Ready condition's status, as `msf_cmk_resources` counts it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum ReadyState {
    True,
    False,
    Unknown,
}

impl ReadyState {
    const ALL: [ReadyState; 3] = [ReadyState::True, ReadyState::False, ReadyState::Unknown];

    fn of(status: Option<&str>) -> ReadyState {
        match status {
            Some("True") => ReadyState::True,
            Some("False") => ReadyState::False,
            _ => ReadyState::Unknown,
        }
    }

    fn label(self) -> &'static str {
        match self {
            ReadyState::True => "True",
            ReadyState::False => "False",
            ReadyState::Unknown => "Unknown",
        }
    }
}

/// The text of `new`, reusing `old`'s allocation when it is the same.
fn shared(old: Option<&Arc<str>>, new: &str) -> Arc<str> {
    match old {
        Some(o) if &**o == new => o.clone(),
        _ => Arc::from(new),
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StageLabels {
    pub stage: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct AwaitedLabels {
    pub awaited: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct BuildLabels {
    pub version: String,
    pub git_revision: String,
}

type HistogramFamily<L> = Family<L, Histogram, fn() -> Histogram>;

pub struct Metrics {
    registry: Registry,
    reconciles: Family<ResultLabels, Counter>,
    duration: Histogram,
    aws_calls: Family<AwsCallLabels, Counter>,
    drift: Family<KindLabels, Counter>,
    resources: Family<ReadyLabels, Gauge>,
    resource_ready: Family<ResourceLabels, Gauge>,
    aws_latency: HistogramFamily<AwsOperationLabels>,
    throttles: Family<AwsOperationLabels, Counter>,
    concurrent_edits: Family<StageLabels, Counter>,
    wakeups: Family<AwaitedLabels, Counter>,
    leader: Gauge,
    /// `aws_rate_limit`, refreshed from `pacing` when scraped.
    rates: Family<RateLabels, Gauge<f64, AtomicU64>>,
    /// Every account's lanes, with the identity that names the account.
    pacing: Mutex<Vec<(CallerCell, AccountLimiters)>>,
    restart_slots: Family<RegionLabels, Gauge>,
    resync_period: Gauge<f64, AtomicU64>,
    /// Each object's Ready state (counted in `resources`) and `resource_ready` series (removed
    /// when its labels change), by `namespace/name`.
    objects: Mutex<HashMap<String, ObjectSeries>>,
    /// Calls per operation, all outcomes: for the summaries `apply` and `demo` print.
    call_totals: Mutex<std::collections::BTreeMap<String, u64>>,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Metrics")
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("msf_cmk");
        let reconciles = Family::<ResultLabels, Counter>::default();
        // 10 ms .. ~80 s: AWS calls dominate; a switch with a policy write takes a few calls.
        let duration = Histogram::new(exponential_buckets(0.01, 2.0, 14));
        let aws_calls = Family::<AwsCallLabels, Counter>::default();
        let drift = Family::<KindLabels, Counter>::default();
        let resources = Family::<ReadyLabels, Gauge>::default();
        registry.register("reconciles", "Reconciles by result", reconciles.clone());
        registry.register(
            "reconcile_duration_seconds",
            "Duration of one reconcile, AWS calls included",
            duration.clone(),
        );
        registry.register(
            "aws_calls",
            "AWS API calls by service, operation and outcome",
            aws_calls.clone(),
        );
        registry.register(
            "drift_corrections",
            "Changes made in AWS to a resource that had already converged",
            drift.clone(),
        );
        registry.register(
            "resources",
            "Resources by Ready condition",
            resources.clone(),
        );
        let resource_ready = Family::<ResourceLabels, Gauge>::default();
        registry.register(
            "resource_ready",
            "1 when the resource is Ready, else 0, with Ready's reason",
            resource_ready.clone(),
        );
        // 5 ms .. ~80 s: one call, the SDK's retries and backoff included.
        let aws_latency: HistogramFamily<AwsOperationLabels> =
            Family::new_with_constructor(|| Histogram::new(exponential_buckets(0.005, 2.0, 15)));
        registry.register(
            "aws_call_duration_seconds",
            "Duration of one AWS API call by service and operation, SDK retries included",
            aws_latency.clone(),
        );
        let throttles = Family::<AwsOperationLabels, Counter>::default();
        registry.register(
            "aws_throttles",
            "AWS API calls that ended in a throttling error after the SDK's retries",
            throttles.clone(),
        );
        let concurrent_edits = Family::<StageLabels, Counter>::default();
        registry.register(
            "concurrent_key_policy_edits",
            "Key policy changes by another writer inside one of our read-modify-writes",
            concurrent_edits.clone(),
        );
        let wakeups = Family::<AwaitedLabels, Counter>::default();
        registry.register(
            "update_watch_wakeups",
            "Resources reconciled at once because the application list showed what they waited for (update_end | restart_slot)",
            wakeups.clone(),
        );
        let rates = Family::<RateLabels, Gauge<f64, AtomicU64>>::default();
        registry.register(
            "aws_rate_limit",
            "Requests per second the adaptive client-side pacing allows now, per AWS operation, region and account",
            rates.clone(),
        );
        let restart_slots = Family::<RegionLabels, Gauge>::default();
        registry.register(
            "restart_slots_in_use",
            "Our updates of RUNNING applications in progress (rollout budget), per region and account",
            restart_slots.clone(),
        );
        let resync_period = Gauge::<f64, AtomicU64>::default();
        registry.register(
            "resync_period_seconds",
            "The resync period of converged resources now: --resync-period, stretched to keep resyncs under --resync-share of the reconcile capacity",
            resync_period.clone(),
        );
        let leader = Gauge::default();
        registry.register(
            "leader",
            "1 while this replica runs the controllers, else 0",
            leader.clone(),
        );
        let build = Family::<BuildLabels, Gauge>::default();
        build
            .get_or_create(&BuildLabels {
                version: crate::build_info::VERSION.to_string(),
                git_revision: crate::build_info::GIT_REVISION.to_string(),
            })
            .set(1);
        registry.register("build_info", "The controller's version; always 1", build);
        Self {
            registry,
            reconciles,
            duration,
            aws_calls,
            drift,
            resources,
            resource_ready,
            aws_latency,
            throttles,
            concurrent_edits,
            wakeups,
            leader,
            rates,
            pacing: Mutex::default(),
            restart_slots,
            resync_period,
            objects: Mutex::default(),
            call_totals: Mutex::default(),
        }
    }

    /// The resync period in use (`controller::resync`).
    pub fn set_resync_period(&self, period: Duration) {
        self.resync_period.set(period.as_secs_f64());
    }

    /// Whether this replica runs the controllers.
    pub fn set_leader(&self, leading: bool) {
        self.leader.set(i64::from(leading));
    }

    /// One AWS call's outcome, duration and throttling.
    pub fn aws_call_done(
        &self,
        account: &str,
        service: &str,
        operation: &str,
        outcome: &str,
        took: Duration,
        throttled: bool,
    ) {
        self.aws_call(account, service, operation, outcome);
        let labels = AwsOperationLabels {
            service: service.to_string(),
            operation: operation.to_string(),
            account: account.to_string(),
        };
        self.aws_latency
            .get_or_create(&labels)
            .observe(took.as_secs_f64());
        if throttled {
            self.throttles.get_or_create(&labels).inc();
        }
    }

    /// Records one resource's readiness (`status: None`: the resource is gone): its
    /// `resource_ready` series and its count in `resources`.
    pub fn set_resource(
        &self,
        namespace: &str,
        name: &str,
        spec: &ApplicationEncryptionSpec,
        status: Option<&ApplicationEncryptionStatus>,
    ) {
        let object = format!("{namespace}/{name}");
        let mut objects = self.objects.lock().unwrap_or_else(|e| e.into_inner());
        let Some(status) = status else {
            if let Some(old) = objects.remove(&object) {
                self.resource_ready.remove(&old.labels);
                self.count_ready(&objects);
            }
            return;
        };
        let ready = status.conditions.iter().find(|c| c.type_ == "Ready");
        let state = ReadyState::of(ready.map(|c| c.status.as_str()));
        let reason = ready.map_or("Unknown", |c| c.reason.as_str());
        // Reasons are CamelCase words from the code; anything else would be unbounded.
        let reason = if !reason.is_empty()
            && reason.len() <= 64
            && reason.chars().all(|c| c.is_ascii_alphanumeric())
        {
            reason
        } else {
            "Other"
        };
        let old = objects.get(&object).map(|o| &o.labels);
        let labels = ResourceLabels {
            namespace: shared(old.map(|l| &l.namespace), namespace),
            name: shared(old.map(|l| &l.name), name),
            application: shared(old.map(|l| &l.application), &spec.application_name),
            key_type: match spec.key_type {
                KeyType::AwsOwnedKey => "AwsOwnedKey",
                KeyType::CustomerManagedKey => "CustomerManagedKey",
            },
            reason: shared(old.map(|l| &l.reason), reason),
        };
        let entry = ObjectSeries {
            ready: state,
            labels: labels.clone(),
        };
        let previous = objects.insert(object, entry);
        if let Some(old) = &previous
            && old.labels != labels
        {
            self.resource_ready.remove(&old.labels);
        }
        self.resource_ready
            .get_or_create(&labels)
            .set(i64::from(state == ReadyState::True));
        if previous.is_none_or(|p| p.ready != state) {
            self.count_ready(&objects);
        }
    }

    /// `resources{ready}`: counted again only when an object's state changes (a resync that
    /// finds it converged again does not scan every object).
    fn count_ready(&self, objects: &HashMap<String, ObjectSeries>) {
        for state in ReadyState::ALL {
            let n = objects.values().filter(|o| o.ready == state).count();
            self.resources
                .get_or_create(&ReadyLabels {
                    ready: state.label().to_string(),
                })
                .set(i64::try_from(n).unwrap_or(i64::MAX));
        }
    }

    pub fn reconciled(&self, result: &str, seconds: f64) {
        self.reconciles
            .get_or_create(&ResultLabels {
                result: result.to_string(),
            })
            .inc();
        self.duration.observe(seconds);
    }

    /// A reconcile that failed outside the pipeline (Kubernetes API errors): counted, not timed.
    pub fn reconcile_errored(&self) {
        self.reconciles
            .get_or_create(&ResultLabels {
                result: "error".to_string(),
            })
            .inc();
    }

    pub fn aws_call(&self, account: &str, service: &str, operation: &str, outcome: &str) {
        self.aws_calls
            .get_or_create(&AwsCallLabels {
                service: service.to_string(),
                operation: operation.to_string(),
                outcome: outcome.to_string(),
                account: account.to_string(),
            })
            .inc();
        *self
            .call_totals
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry(operation.to_string())
            .or_default() += 1;
    }

    /// AWS calls made so far, per operation.
    pub fn aws_call_totals(&self) -> std::collections::BTreeMap<String, u64> {
        self.call_totals
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Another writer changed a key policy inside one of our read-modify-writes; `stage`:
    /// `before_write` | `after_write`.
    pub fn concurrent_key_policy_edit(&self, stage: &str) {
        self.concurrent_edits
            .get_or_create(&StageLabels {
                stage: stage.to_string(),
            })
            .inc();
    }

    /// `run` woke a waiting resource (`run_watch`); `awaited`: `update_end` | `restart_slot`.
    pub fn update_watch_wakeup(&self, awaited: &str) {
        self.wakeups
            .get_or_create(&AwaitedLabels {
                awaited: awaited.to_string(),
            })
            .inc();
    }

    pub fn drift_corrected(&self, kind: &str) {
        self.drift
            .get_or_create(&KindLabels {
                kind: kind.to_string(),
            })
            .inc();
    }

    /// Reports the lanes of `pacing` (one account's) under `caller`'s account when scraped.
    pub fn watch_pacing(&self, caller: &CallerCell, pacing: AccountLimiters) {
        let mut watched = self.pacing.lock().unwrap_or_else(|p| p.into_inner());
        if !watched.iter().any(|(_, p)| p.same_as(&pacing)) {
            watched.push((caller.clone(), pacing));
        }
    }

    /// The rollout budget's slots in use in one account and region.
    pub fn set_restart_slots(&self, caller: &CallerCell, region: &str, in_use: usize) {
        let labels = RegionLabels {
            region: region.to_string(),
            account: account_label(caller),
        };
        self.restart_slots
            .get_or_create(&labels)
            .set(i64::try_from(in_use).unwrap_or(i64::MAX));
    }

    /// Copies every watched lane's rate into `aws_rate_limit`.
    fn refresh_rates(&self) {
        let watched = self.pacing.lock().unwrap_or_else(|p| p.into_inner());
        for (caller, pacing) in watched.iter() {
            let account = account_label(caller);
            for (region, operation, rate) in pacing.rates() {
                let service = crate::aws::OPERATIONS
                    .iter()
                    .find(|(_, op, _)| *op == operation)
                    .map_or("unknown", |(svc, _, _)| svc);
                let labels = RateLabels {
                    service: service.to_string(),
                    operation: operation.to_string(),
                    region,
                    account: account.clone(),
                };
                self.rates.get_or_create(&labels).set(rate);
            }
        }
    }

    /// The text exposition format.
    pub fn encode(&self) -> String {
        self.refresh_rates();
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}

fn outcome<T>(r: &Result<T, AwsError>) -> &'static str {
    match r {
        Ok(_) => "ok",
        Err(e) => e.category.as_str(),
    }
}

/// AWS's throttling codes (and a bare HTTP 429), as `aws::classify` names them.
fn is_throttle(code: &str) -> bool {
    matches!(
        code,
        "ThrottlingException"
            | "Throttling"
            | "ThrottledException"
            | "TooManyRequestsException"
            | "RequestLimitExceeded"
            | "RequestThrottled"
            | "RequestThrottledException"
            | "SlowDown"
            | "Http429"
    )
}

impl Metrics {
    fn done<T>(
        &self,
        account: &CallerCell,
        service: &str,
        operation: &str,
        started: Instant,
        r: &Result<T, AwsError>,
    ) {
        let throttled = r.as_ref().is_err_and(|e| is_throttle(&e.code));
        let account = account_label(account);
        self.aws_call_done(
            &account,
            service,
            operation,
            outcome(r),
            started.elapsed(),
            throttled,
        );
    }
}

/// The `account` label: the account of the identity the calls are made as, as
/// `sts:GetCallerIdentity` last said (per account of the accounts file, the assumed role's);
/// `unknown` until it has answered.
pub fn account_label(caller: &CallerCell) -> String {
    caller
        .get()
        .map_or_else(|| "unknown".to_string(), |c| c.account)
}

/// Counts every MSF call.
pub struct MeteredMsf {
    pub inner: Arc<dyn MsfApi>,
    pub metrics: Arc<Metrics>,
    /// Whose calls these are (the `account` label).
    pub caller: CallerCell,
}

#[async_trait]
impl MsfApi for MeteredMsf {
    async fn describe_application_detail(
        &self,
        region: &str,
        application_name: &str,
    ) -> Result<ApplicationDescription, AwsError> {
        let started = Instant::now();
        let r = self
            .inner
            .describe_application_detail(region, application_name)
            .await;
        self.metrics.done(
            &self.caller,
            "kinesisanalytics",
            "DescribeApplication",
            started,
            &r,
        );
        r
    }

    async fn start_encryption_update(
        &self,
        update: &EncryptionUpdate,
    ) -> Result<UpdateAccepted, AwsError> {
        let started = Instant::now();
        let r = self.inner.start_encryption_update(update).await;
        self.metrics.done(
            &self.caller,
            "kinesisanalytics",
            "UpdateApplication",
            started,
            &r,
        );
        r
    }

    async fn list_applications(&self, region: &str) -> Result<Vec<ApplicationSummary>, AwsError> {
        let started = Instant::now();
        let r = self.inner.list_applications(region).await;
        self.metrics.done(
            &self.caller,
            "kinesisanalytics",
            "ListApplications",
            started,
            &r,
        );
        r
    }

    async fn list_application_operations(
        &self,
        region: &str,
        application_name: &str,
        operation: &str,
    ) -> Result<Vec<ApplicationOperation>, AwsError> {
        let started = Instant::now();
        let r = self
            .inner
            .list_application_operations(region, application_name, operation)
            .await;
        self.metrics.done(
            &self.caller,
            "kinesisanalytics",
            "ListApplicationOperations",
            started,
            &r,
        );
        r
    }

    async fn describe_application_operation(
        &self,
        region: &str,
        application_name: &str,
        operation_id: &str,
    ) -> Result<ApplicationOperation, AwsError> {
        let started = Instant::now();
        let r = self
            .inner
            .describe_application_operation(region, application_name, operation_id)
            .await;
        self.metrics.done(
            &self.caller,
            "kinesisanalytics",
            "DescribeApplicationOperation",
            started,
            &r,
        );
        r
    }
}

/// Counts every KMS call.
pub struct MeteredKms {
    pub inner: Arc<dyn KmsApi>,
    pub metrics: Arc<Metrics>,
    /// Whose calls these are (the `account` label).
    pub caller: CallerCell,
}

#[async_trait]
impl KmsApi for MeteredKms {
    async fn describe_key(&self, region: &str, key_id: &str) -> Result<ObservedKey, AwsError> {
        let started = Instant::now();
        let r = self.inner.describe_key(region, key_id).await;
        self.metrics
            .done(&self.caller, "kms", "DescribeKey", started, &r);
        r
    }

    async fn get_key_policy(&self, region: &str, key_arn: &str) -> Result<String, AwsError> {
        let started = Instant::now();
        let r = self.inner.get_key_policy(region, key_arn).await;
        self.metrics
            .done(&self.caller, "kms", "GetKeyPolicy", started, &r);
        r
    }

    async fn put_key_policy(
        &self,
        region: &str,
        key_arn: &str,
        policy: &str,
    ) -> Result<(), AwsError> {
        let started = Instant::now();
        let r = self.inner.put_key_policy(region, key_arn, policy).await;
        self.metrics
            .done(&self.caller, "kms", "PutKeyPolicy", started, &r);
        r
    }

    async fn reserve_put_key_policy(&self, region: &str, key_arn: &str) {
        self.inner.reserve_put_key_policy(region, key_arn).await
    }
}

/// Times a reconcile.
pub struct Timer(Instant);

impl Timer {
    pub fn start() -> Self {
        Self(Instant::now())
    }

    pub fn seconds(&self) -> f64 {
        self.0.elapsed().as_secs_f64()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ready_status(ready: &str, reason: &str) -> ApplicationEncryptionStatus {
        serde_json::from_value(serde_json::json!({
            "conditions": [{
                "type": "Ready", "status": ready, "reason": reason, "message": "",
                "lastTransitionTime": "2026-11-26T12:00:00Z"
            }]
        }))
        .unwrap()
    }

    #[test]
    fn exposition_has_every_family() {
        let m = Metrics::new();
        m.reconciled("converged", 0.05);
        m.aws_call("111122223333", "kms", "PutKeyPolicy", "ok");
        m.drift_corrected("key_policy");
        let spec: ApplicationEncryptionSpec = serde_json::from_value(serde_json::json!({
            "applicationName": "orders",
            "keyType": "AwsOwnedKey"
        }))
        .unwrap();
        m.set_resource("ns", "a", &spec, Some(&ready_status("True", "Converged")));
        m.set_resource("ns", "b", &spec, Some(&ready_status("False", "Updating")));
        m.set_resource("ns", "c", &spec, Some(&ready_status("True", "Converged")));
        m.set_resource("ns", "c", &spec, None);
        let text = m.encode();
        for needle in [
            r#"msf_cmk_reconciles_total{result="converged"} 1"#,
            "msf_cmk_reconcile_duration_seconds_bucket",
            r#"msf_cmk_aws_calls_total{service="kms",operation="PutKeyPolicy",outcome="ok",account="111122223333"} 1"#,
            r#"msf_cmk_drift_corrections_total{kind="key_policy"} 1"#,
            r#"msf_cmk_resources{ready="True"} 1"#,
            r#"msf_cmk_resources{ready="False"} 1"#,
            r#"msf_cmk_build_info{version=""#,
            "msf_cmk_leader 0",
        ] {
            assert!(text.contains(needle), "missing {needle}:\n{text}");
        }
    }

    #[test]
    fn calls_are_timed_and_throttles_counted() {
        let m = Metrics::new();
        let throttled: Result<(), AwsError> = Err(AwsError {
            category: crate::domain::ErrorCategory::Transient,
            operation: "PutKeyPolicy",
            code: "ThrottlingException".into(),
            message: "Rate exceeded".into(),
        });
        let caller = CallerCell::default();
        m.done(&caller, "kms", "PutKeyPolicy", Instant::now(), &throttled);
        m.done(
            &caller,
            "kms",
            "GetKeyPolicy",
            Instant::now(),
            &Ok::<(), AwsError>(()),
        );
        m.set_leader(true);
        let text = m.encode();
        for needle in [
            r#"msf_cmk_aws_throttles_total{service="kms",operation="PutKeyPolicy",account="unknown"} 1"#,
            r#"msf_cmk_aws_call_duration_seconds_count{service="kms",operation="GetKeyPolicy",account="unknown"} 1"#,
            r#"msf_cmk_aws_calls_total{service="kms",operation="PutKeyPolicy",outcome="transient",account="unknown"} 1"#,
            "msf_cmk_leader 1",
        ] {
            assert!(text.contains(needle), "missing {needle}:\n{text}");
        }
        assert!(
            !text
                .contains(r#"msf_cmk_aws_throttles_total{service="kms",operation="GetKeyPolicy"}"#)
        );
    }

    #[test]
    fn one_readiness_series_per_resource() {
        let m = Metrics::new();
        let spec: ApplicationEncryptionSpec = serde_json::from_value(serde_json::json!({
            "applicationName": "orders",
            "keyType": "AwsOwnedKey"
        }))
        .unwrap();
        let status = ready_status;
        m.set_resource(
            "team-a",
            "orders",
            &spec,
            Some(&status("False", "Updating")),
        );
        m.set_resource(
            "team-a",
            "orders",
            &spec,
            Some(&status("True", "Converged")),
        );
        let text = m.encode();
        assert!(
            text.contains(r#"msf_cmk_resource_ready{namespace="team-a",name="orders",application="orders",key_type="AwsOwnedKey",reason="Converged"} 1"#),
            "{text}"
        );
        assert!(
            !text.contains("Updating"),
            "the old series is gone:\n{text}"
        );
        m.set_resource(
            "team-a",
            "orders",
            &spec,
            Some(&status("False", "not a reason!")),
        );
        let text = m.encode();
        assert!(text.contains(r#"reason="Other"} 0"#));
        assert!(
            text.contains(r#"msf_cmk_resources{ready="False"} 1"#),
            "{text}"
        );
        assert!(
            text.contains(r#"msf_cmk_resources{ready="True"} 0"#),
            "{text}"
        );
        m.set_resource("team-a", "orders", &spec, None);
        let text = m.encode();
        assert!(!text.contains("msf_cmk_resource_ready{"));
        assert!(
            text.contains(r#"msf_cmk_resources{ready="False"} 0"#),
            "{text}"
        );
    }
}
