//! `MsfApi` on `aws-sdk-kinesisanalyticsv2`.

use std::sync::Arc;

use async_trait::async_trait;
use aws_config::Region;
use aws_sdk_kinesisanalyticsv2 as msf;
use msf::types::{
    ApplicationConfigurationUpdate, ApplicationDetail, ApplicationEncryptionConfigurationUpdate,
    KeyType,
};

use super::classify::classify;
use super::connect::{PerRegion, Shared};
use super::ratelimit::{Limiter, RateLimits};
use super::{AwsError, MsfApi};
use crate::domain::{
    ApplicationStatus, AppliedEncryption, AppliedKeyType, EncryptionUpdate, ErrorCategory,
    ObservedApplication,
};

pub struct SdkMsf {
    clients: PerRegion<msf::Client>,
    describe_limit: Limiter,
    update_limit: Limiter,
}

impl SdkMsf {
    pub(crate) fn new(shared: Arc<Shared>, limits: &RateLimits) -> Self {
        Self {
            clients: PerRegion::new(shared, build_client),
            describe_limit: Limiter::new(limits.describe_application),
            update_limit: Limiter::new(limits.update_application),
        }
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
    async fn describe_application(
        &self,
        region: &str,
        application_name: &str,
    ) -> Result<ObservedApplication, AwsError> {
        const OP: &str = "DescribeApplication";
        self.describe_limit.wait(region).await;
        let out = self
            .clients
            .get(region)
            .describe_application()
            .application_name(application_name)
            .send()
            .await
            .map_err(|e| classify(OP, e))?;
        observed(OP, out.application_detail())
    }

    async fn update_application_encryption(
        &self,
        update: &EncryptionUpdate,
    ) -> Result<ObservedApplication, AwsError> {
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
        self.update_limit.wait(&update.region).await;
        let out = req.send().await.map_err(|e| classify(OP, e))?;
        observed(OP, out.application_detail())
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
    let d = detail.ok_or_else(|| AwsError {
        category: ErrorCategory::Transient,
        operation,
        code: "IncompleteResponse".into(),
        message: "response has no ApplicationDetail".into(),
    })?;
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
