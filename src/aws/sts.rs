//! `sts:GetCallerIdentity` on `aws-sdk-sts`: who the controller is.
//!
//! GetCallerIdentity needs no IAM permission: AWS answers it even when a policy explicitly
//! denies `sts:GetCallerIdentity` (AWS STS API reference, "No permissions are required to
//! perform this operation"), so the operator's IAM policy does not list it.

use std::sync::Arc;

use async_trait::async_trait;
use aws_sdk_sts as sts;

use super::AwsError;
use super::classify::classify;
use super::connect::Shared;
use crate::domain::ErrorCategory;
use crate::identity::CallerIdentity;

/// AWS Security Token Service, as far as the controller needs it.
#[async_trait]
pub trait StsApi: Send + Sync {
    async fn get_caller_identity(&self) -> Result<CallerIdentity, AwsError>;
}

pub struct SdkSts {
    client: sts::Client,
}

impl SdkSts {
    /// STS in the default region (regional endpoint), or at the one endpoint override.
    pub(crate) fn new(shared: Arc<Shared>) -> Self {
        let mut b = sts::config::Builder::from(&shared.config);
        if let Some(url) = &shared.endpoint_url {
            b = b.endpoint_url(url);
        }
        Self {
            client: sts::Client::from_conf(b.build()),
        }
    }
}

#[async_trait]
impl StsApi for SdkSts {
    async fn get_caller_identity(&self) -> Result<CallerIdentity, AwsError> {
        const OP: &str = "GetCallerIdentity";
        let out = self
            .client
            .get_caller_identity()
            .send()
            .await
            .map_err(|e| classify(OP, e))?;
        let missing = |what: &str| AwsError {
            category: ErrorCategory::Transient,
            operation: OP,
            code: "IncompleteResponse".into(),
            message: format!("GetCallerIdentity answered without {what}"),
        };
        Ok(CallerIdentity {
            arn: out.arn().ok_or_else(|| missing("Arn"))?.to_string(),
            account: out.account().ok_or_else(|| missing("Account"))?.to_string(),
            user_id: out.user_id().unwrap_or_default().to_string(),
        })
    }
}
