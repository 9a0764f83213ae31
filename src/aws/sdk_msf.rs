//! `MsfApi` on `aws-sdk-kinesisanalyticsv2`: DescribeApplication, UpdateApplication (encryption
//! only), ListApplications (`apply`'s wait for many updates), and the operation history (ListApplicationOperations, DescribeApplicationOperation)
//! that the update lifecycle follows.

use std::error::Error as StdError;
use std::sync::Arc;

use async_trait::async_trait;
use aws_config::Region;
use aws_sdk_kinesisanalyticsv2 as msf;
use aws_smithy_types::error::metadata::ProvideErrorMetadata;
use chrono::{DateTime, Utc};
use msf::client::customize::CustomizableOperation;
use msf::operation::describe_application::DescribeApplicationError;
use msf::operation::describe_application_operation::DescribeApplicationOperationError;
use msf::operation::list_application_operations::ListApplicationOperationsError;
use msf::operation::list_applications::ListApplicationsError;
use msf::operation::update_application::UpdateApplicationError;
use msf::types::{
    ApplicationConfigurationUpdate, ApplicationDetail, ApplicationEncryptionConfigurationUpdate,
    ApplicationOperationInfo, KeyType,
};

use super::classify::{NoRetryOnThrottle, classify};
use super::connect::{PerRegion, Shared, attempts_of};
use super::ratelimit::{AccountLimiters, Paced, RateLimits};
use super::{AwsError, MsfApi};
use crate::domain::{
    ApplicationDescription, ApplicationLifecycle, ApplicationOperation, ApplicationStatus,
    ApplicationSummary, AppliedEncryption, AppliedKeyType, EncryptionUpdate, ErrorCategory,
    ObservedApplication, OperationStatus, UpdateAccepted,
};

pub struct SdkMsf {
    clients: PerRegion<msf::Client>,
    /// Paces every call, per region and operation (shared with the account's other clients).
    pacing: AccountLimiters,
    /// Attempts per call (the SDK's setting): a paced call retries throttles itself.
    attempts: u32,
}

impl SdkMsf {
    pub(crate) fn new(shared: Arc<Shared>, limits: &RateLimits) -> Self {
        Self::with_limiters(shared, &AccountLimiters::new(limits))
    }

    /// Paced by `limiters`, shared with the account's other clients.
    pub(crate) fn with_limiters(shared: Arc<Shared>, limiters: &AccountLimiters) -> Self {
        Self {
            attempts: attempts_of(&shared),
            clients: PerRegion::new(shared, build_client),
            pacing: limiters.clone(),
        }
    }
}

/// The call with its lane's observer; a paced call also tells the SDK not to retry throttled
/// attempts, which [`AccountLimiters::send`] retries through the lane.
fn paced_call<T, E, B>(
    call: CustomizableOperation<T, E, B>,
    paced: &Paced,
) -> CustomizableOperation<T, E, B>
where
    E: ProvideErrorMetadata + StdError + Send + Sync + 'static,
{
    let call = call.interceptor(paced.observer::<E>());
    if paced.is_paced() {
        call.config_override(
            msf::config::Builder::default().retry_classifier(NoRetryOnThrottle::<E>::new()),
        )
    } else {
        call
    }
}

fn build_client(shared: &Shared, region: &str) -> msf::Client {
    let mut b = msf::config::Builder::from(&shared.config).region(Region::new(region.to_string()));
    if let Some(url) = &shared.endpoint_url {
        b = b.endpoint_url(url);
    }
    msf::Client::from_conf(b.build())
}

#[async_trait]
impl MsfApi for SdkMsf {
    async fn describe_application_detail(
        &self,
        region: &str,
        application_name: &str,
    ) -> Result<ApplicationDescription, AwsError> {
        const OP: &str = "DescribeApplication";
        let client = self.clients.get(region);
        let out = self
            .pacing
            .send(region, OP, self.attempts, None, |paced| {
                let call = client
                    .describe_application()
                    .application_name(application_name)
                    .customize();
                paced_call::<_, DescribeApplicationError, _>(call, &paced).send()
            })
            .await
            .map_err(|e| classify(OP, e))?;
        let detail = out.application_detail();
        Ok(ApplicationDescription {
            application: observed(OP, detail)?,
            lifecycle: detail.map(lifecycle).unwrap_or_default(),
        })
    }

    async fn start_encryption_update(
        &self,
        update: &EncryptionUpdate,
    ) -> Result<UpdateAccepted, AwsError> {
        const OP: &str = "UpdateApplication";
        let key_type = match update.key_type {
            AppliedKeyType::AwsOwnedKey => KeyType::AwsOwnedKey,
            AppliedKeyType::CustomerManagedKey => KeyType::CustomerManagedKey,
        };
        let enc = ApplicationEncryptionConfigurationUpdate::builder()
            .key_type_update(key_type)
            .set_key_id_update(update.key_id.clone())
            .build()
            .map_err(|e| local_invalid(OP, e.to_string()))?;
        let mut req = self
            .clients
            .get(&update.region)
            .update_application()
            .application_name(&update.application_name)
            .application_configuration_update(
                ApplicationConfigurationUpdate::builder()
                    .application_encryption_configuration_update(enc)
                    .build(),
            );
        // MSF prefers the conditional token; the version id is the fallback for applications
        // that do not report one. Sending both is refused.
        req = match &update.conditional_token {
            Some(token) => req.conditional_token(token),
            None => req.current_application_version_id(update.current_version_id),
        };
        let out = self
            .pacing
            .send(&update.region, OP, self.attempts, None, |paced| {
                let call = req.clone().customize();
                paced_call::<_, UpdateApplicationError, _>(call, &paced).send()
            })
            .await
            .map_err(|e| classify(OP, e))?;
        let detail = out.application_detail();
        Ok(UpdateAccepted {
            application: observed(OP, detail)?,
            operation_id: out.operation_id().map(str::to_string),
            lifecycle: detail.map(lifecycle).unwrap_or_default(),
        })
    }

    async fn list_applications(&self, region: &str) -> Result<Vec<ApplicationSummary>, AwsError> {
        const OP: &str = "ListApplications";
        let client = self.clients.get(region);
        let mut out = Vec::new();
        let mut token: Option<String> = None;
        // Bounded: a token that never ends the list would otherwise loop forever.
        for _ in 0..MAX_LIST_PAGES {
            let page = self
                .pacing
                .send(region, OP, self.attempts, None, |paced| {
                    let call = client
                        .list_applications()
                        .limit(APPLICATIONS_PER_PAGE)
                        .set_next_token(token.clone())
                        .customize();
                    paced_call::<_, ListApplicationsError, _>(call, &paced).send()
                })
                .await
                .map_err(|e| classify(OP, e))?;
            out.extend(
                page.application_summaries()
                    .iter()
                    .map(|a| ApplicationSummary {
                        name: a.application_name().to_string(),
                        status: ApplicationStatus::from_wire(a.application_status().as_str()),
                        version_id: a.application_version_id(),
                    }),
            );
            token = page.next_token().map(str::to_string);
            if token.is_none() {
                return Ok(out);
            }
        }
        Err(incomplete(OP, "the list did not end within the page limit"))
    }

    async fn list_application_operations(
        &self,
        region: &str,
        application_name: &str,
        operation: &str,
    ) -> Result<Vec<ApplicationOperation>, AwsError> {
        const OP: &str = "ListApplicationOperations";
        let client = self.clients.get(region);
        // One page: the most recent operations are all the lifecycle needs.
        let out = self
            .pacing
            .send(region, OP, self.attempts, None, |paced| {
                let call = client
                    .list_application_operations()
                    .application_name(application_name)
                    .operation(operation)
                    .limit(LIST_LIMIT)
                    .customize();
                paced_call::<_, ListApplicationOperationsError, _>(call, &paced).send()
            })
            .await
            .map_err(|e| classify(OP, e))?;
        let mut ops: Vec<ApplicationOperation> = out
            .application_operation_info_list()
            .iter()
            .filter(|o| o.operation().is_none_or(|name| name == operation))
            .filter_map(summary)
            .collect();
        // Most recent first, whatever order the service used (stable for equal times).
        ops.sort_by_key(|o| std::cmp::Reverse(o.start_time));
        Ok(ops)
    }

    async fn describe_application_operation(
        &self,
        region: &str,
        application_name: &str,
        operation_id: &str,
    ) -> Result<ApplicationOperation, AwsError> {
        const OP: &str = "DescribeApplicationOperation";
        let client = self.clients.get(region);
        let out = self
            .pacing
            .send(region, OP, self.attempts, None, |paced| {
                let call = client
                    .describe_application_operation()
                    .application_name(application_name)
                    .operation_id(operation_id)
                    .customize();
                paced_call::<_, DescribeApplicationOperationError, _>(call, &paced).send()
            })
            .await
            .map_err(|e| classify(OP, e))?;
        let d = out
            .application_operation_info_details()
            .ok_or_else(|| incomplete(OP, "response has no ApplicationOperationInfoDetails"))?;
        let change = d.application_version_change_details();
        let failure = d.operation_failure_details();
        let status = OperationStatus::from_wire(d.operation_status().as_str());
        // The SDK fills a missing (required) EndTime with the epoch: no end while in progress.
        let end_time = status.is_final().then(|| time(d.end_time()));
        Ok(ApplicationOperation {
            operation_id: operation_id.to_string(),
            operation: d.operation().to_string(),
            status,
            start_time: Some(time(d.start_time())),
            end_time,
            version_from: change.map(|c| c.application_version_updated_from()),
            version_to: change.map(|c| c.application_version_updated_to()),
            failure_message: failure
                .and_then(|f| f.error_info())
                .and_then(|e| e.error_string())
                .map(str::to_string),
            rollback_operation_id: failure
                .and_then(|f| f.rollback_operation_id())
                .map(str::to_string),
        })
    }

    fn pacing(&self) -> Option<AccountLimiters> {
        Some(self.pacing.clone())
    }
}

/// Operations read per ListApplicationOperations call.
const LIST_LIMIT: i32 = 10;

/// ListApplications' largest page.
const APPLICATIONS_PER_PAGE: i32 = 50;

/// 50,000 applications: far beyond MSF's per-region application quota.
const MAX_LIST_PAGES: usize = 1_000;

fn incomplete(operation: &'static str, message: &str) -> AwsError {
    AwsError {
        category: ErrorCategory::Transient,
        operation,
        code: "IncompleteResponse".into(),
        message: message.into(),
    }
}

fn time(t: &aws_smithy_types::DateTime) -> DateTime<Utc> {
    DateTime::from_timestamp(t.secs(), t.subsec_nanos()).unwrap_or_default()
}

/// A list entry in domain terms; entries without an id cannot be followed and are skipped.
fn summary(o: &ApplicationOperationInfo) -> Option<ApplicationOperation> {
    Some(ApplicationOperation {
        operation_id: o.operation_id()?.to_string(),
        operation: o.operation().unwrap_or_default().to_string(),
        status: o
            .operation_status()
            .map(|s| OperationStatus::from_wire(s.as_str()))
            .unwrap_or_else(|| OperationStatus::Other(String::new())),
        start_time: o.start_time().map(time),
        end_time: o.end_time().map(time),
        version_from: None,
        version_to: None,
        failure_message: None,
        rollback_operation_id: None,
    })
}

/// The rollback markers and the snapshot setting of an `ApplicationDetail`.
fn lifecycle(d: &ApplicationDetail) -> ApplicationLifecycle {
    ApplicationLifecycle {
        rolled_back_from: d.application_version_rolled_back_from(),
        rolled_back_to: d.application_version_rolled_back_to(),
        snapshots_enabled: d
            .application_configuration_description()
            .and_then(|c| c.application_snapshot_configuration_description())
            .map(|s| s.snapshots_enabled()),
    }
}

fn local_invalid(operation: &'static str, message: String) -> AwsError {
    AwsError {
        category: ErrorCategory::Terminal,
        operation,
        code: "InvalidRequest".into(),
        message,
    }
}

/// `ApplicationDetail` in domain terms.
fn observed(
    operation: &'static str,
    detail: Option<&ApplicationDetail>,
) -> Result<ObservedApplication, AwsError> {
    let d = detail.ok_or_else(|| incomplete(operation, "response has no ApplicationDetail"))?;
    let encryption = d
        .application_configuration_description()
        .and_then(|c| c.application_encryption_configuration_description())
        .map(|e| AppliedEncryption {
            key_type: AppliedKeyType::from_wire(e.key_type().as_str())
                .unwrap_or(AppliedKeyType::AwsOwnedKey),
            key_id: e.key_id().map(str::to_string),
        })
        // No encryption description: MSF's default, the AWS owned key.
        .unwrap_or_default();
    Ok(ObservedApplication {
        name: d.application_name().to_string(),
        arn: d.application_arn().to_string(),
        version_id: d.application_version_id(),
        conditional_token: d.conditional_token().map(str::to_string),
        status: ApplicationStatus::from_wire(d.application_status().as_str()),
        runtime_environment: d.runtime_environment().as_str().to_string(),
        encryption,
    })
}
