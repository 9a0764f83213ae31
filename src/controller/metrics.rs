//! Prometheus metrics (prometheus-client) and the metering decorators for the AWS traits.
//!
//! Metric names (all prefixed `msfcmk_`):
//! - `reconciles_total{result}`: result = converged | waiting | blocked | error | refused
//! - `reconcile_duration_seconds`: histogram of one reconcile, AWS calls included
//! - `aws_calls_total{service,operation,outcome}`: outcome = ok | transient | conflict | terminal
//! - `drift_corrections_total{kind}`: kind = key_policy | encryption; a change made in AWS for a
//!   resource that had already converged for its current generation
//! - `resources{ready}`: resources by their Ready condition (True | False | Unknown)
//!
//! AWS calls are counted by wrapping `MsfApi` / `KmsApi` ([`MeteredMsf`], [`MeteredKms`]) so
//! that no call site can forget to count.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use async_trait::async_trait;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

use crate::aws::{AwsError, KmsApi, MsfApi};
use crate::domain::{
    ApplicationDescription, ApplicationOperation, EncryptionUpdate, ObservedKey, UpdateAccepted,
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
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct KindLabels {
    pub kind: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReadyLabels {
    pub ready: String,
}

pub struct Metrics {
    registry: Registry,
    reconciles: Family<ResultLabels, Counter>,
    duration: Histogram,
    aws_calls: Family<AwsCallLabels, Counter>,
    drift: Family<KindLabels, Counter>,
    resources: Family<ReadyLabels, Gauge>,
    /// Ready state per object, so the gauge can be recomputed when an object changes state.
    ready_by_object: Mutex<HashMap<String, String>>,
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
        let mut registry = Registry::with_prefix("msfcmk");
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
        Self {
            registry,
            reconciles,
            duration,
            aws_calls,
            drift,
            resources,
            ready_by_object: Mutex::default(),
            call_totals: Mutex::default(),
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

    pub fn aws_call(&self, service: &str, operation: &str, outcome: &str) {
        self.aws_calls
            .get_or_create(&AwsCallLabels {
                service: service.to_string(),
                operation: operation.to_string(),
                outcome: outcome.to_string(),
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

    pub fn drift_corrected(&self, kind: &str) {
        self.drift
            .get_or_create(&KindLabels {
                kind: kind.to_string(),
            })
            .inc();
    }

    /// Records the Ready state of one object (`None`: the object is gone).
    pub fn set_ready(&self, object: &str, ready: Option<&str>) {
        let mut map = self
            .ready_by_object
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        match ready {
            Some(r) => map.insert(object.to_string(), r.to_string()),
            None => map.remove(object),
        };
        for state in ["True", "False", "Unknown"] {
            let n = map.values().filter(|v| v.as_str() == state).count();
            self.resources
                .get_or_create(&ReadyLabels {
                    ready: state.to_string(),
                })
                .set(i64::try_from(n).unwrap_or(i64::MAX));
        }
    }

    /// The text exposition format.
    pub fn encode(&self) -> String {
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

/// Counts every MSF call.
pub struct MeteredMsf {
    pub inner: Arc<dyn MsfApi>,
    pub metrics: Arc<Metrics>,
}

#[async_trait]
impl MsfApi for MeteredMsf {
    async fn describe_application_detail(
        &self,
        region: &str,
        application_name: &str,
    ) -> Result<ApplicationDescription, AwsError> {
        let r = self
            .inner
            .describe_application_detail(region, application_name)
            .await;
        self.metrics
            .aws_call("kinesisanalytics", "DescribeApplication", outcome(&r));
        r
    }

    async fn start_encryption_update(
        &self,
        update: &EncryptionUpdate,
    ) -> Result<UpdateAccepted, AwsError> {
        let r = self.inner.start_encryption_update(update).await;
        self.metrics
            .aws_call("kinesisanalytics", "UpdateApplication", outcome(&r));
        r
    }

    async fn list_application_operations(
        &self,
        region: &str,
        application_name: &str,
        operation: &str,
    ) -> Result<Vec<ApplicationOperation>, AwsError> {
        let r = self
            .inner
            .list_application_operations(region, application_name, operation)
            .await;
        self.metrics
            .aws_call("kinesisanalytics", "ListApplicationOperations", outcome(&r));
        r
    }

    async fn describe_application_operation(
        &self,
        region: &str,
        application_name: &str,
        operation_id: &str,
    ) -> Result<ApplicationOperation, AwsError> {
        let r = self
            .inner
            .describe_application_operation(region, application_name, operation_id)
            .await;
        self.metrics.aws_call(
            "kinesisanalytics",
            "DescribeApplicationOperation",
            outcome(&r),
        );
        r
    }
}

/// Counts every KMS call.
pub struct MeteredKms {
    pub inner: Arc<dyn KmsApi>,
    pub metrics: Arc<Metrics>,
}

#[async_trait]
impl KmsApi for MeteredKms {
    async fn describe_key(&self, region: &str, key_id: &str) -> Result<ObservedKey, AwsError> {
        let r = self.inner.describe_key(region, key_id).await;
        self.metrics.aws_call("kms", "DescribeKey", outcome(&r));
        r
    }

    async fn get_key_policy(&self, region: &str, key_arn: &str) -> Result<String, AwsError> {
        let r = self.inner.get_key_policy(region, key_arn).await;
        self.metrics.aws_call("kms", "GetKeyPolicy", outcome(&r));
        r
    }

    async fn put_key_policy(
        &self,
        region: &str,
        key_arn: &str,
        policy: &str,
    ) -> Result<(), AwsError> {
        let r = self.inner.put_key_policy(region, key_arn, policy).await;
        self.metrics.aws_call("kms", "PutKeyPolicy", outcome(&r));
        r
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

    #[test]
    fn exposition_has_every_family() {
        let m = Metrics::new();
        m.reconciled("converged", 0.05);
        m.aws_call("kms", "PutKeyPolicy", "ok");
        m.drift_corrected("key_policy");
        m.set_ready("ns/a", Some("True"));
        m.set_ready("ns/b", Some("False"));
        m.set_ready("ns/c", Some("True"));
        m.set_ready("ns/c", None);
        let text = m.encode();
        for needle in [
            r#"msfcmk_reconciles_total{result="converged"} 1"#,
            "msfcmk_reconcile_duration_seconds_bucket",
            r#"msfcmk_aws_calls_total{service="kms",operation="PutKeyPolicy",outcome="ok"} 1"#,
            r#"msfcmk_drift_corrections_total{kind="key_policy"} 1"#,
            r#"msfcmk_resources{ready="True"} 1"#,
            r#"msfcmk_resources{ready="False"} 1"#,
        ] {
            assert!(text.contains(needle), "missing {needle}:\n{text}");
        }
    }
}
