//! AWS adapters: the only code that talks to AWS. Small traits in domain terms; SDK types
//! never leak past this module. Every error is classified once ([`AwsError::category`]).
//!
//! Region is a per-call argument because one controller serves applications in several
//! regions (`spec.region`); implementations keep one SDK client per region.
//!
//! - [`connect`] builds both adapters from the standard AWS configuration chain;
//!   [`connect_checked`] (`preflight.rs`) first checks region, credentials and endpoint, so
//!   a wrong set-up is one clear line ([`AwsConfigError`]) instead of failing resources.
//! - `classify.rs`: the one place where SDK errors become [`AwsError`]s:
//!   transient = throttling, 5xx, timeouts, dispatch failures, expired credentials;
//!   conflict = `ConcurrentModificationException`, `ResourceInUseException`;
//!   terminal = everything else (not found, access denied, invalid argument or request,
//!   key disabled or pending deletion, `LimitExceededException`, malformed policy).
//! - `assume.rs`: clients acting as an assumed role of another account (accounts file), with
//!   the key administrator's KMS policy calls split off ([`SplitKms`]).
//! - `ratelimit.rs`: adaptive client-side pacing per account, region and operation
//!   ([`RateLimits`], [`AccountLimiters`]; why ours and not the SDK's adaptive retry mode:
//!   its module doc).

use async_trait::async_trait;

mod assume;
mod classify;
mod connect;
mod preflight;
mod ratelimit;
mod sdk_kms;
mod sdk_msf;
mod sts;

pub use assume::{RoleClients, RoleSet, SESSION_NAME, SplitKms, connect_roles};
pub use classify::{category_of, classify, is_throttling};
pub use connect::{AwsClients, ConnectOptions, connect};
pub use preflight::{AwsConfigError, connect_checked};
pub use ratelimit::{
    AccountLimiters, Aimd, FLOOR_PER_SECOND, OPERATIONS, Rate, RateLimits, RateSetting, Ticket,
};
pub use sdk_kms::SdkKms;
pub use sdk_msf::SdkMsf;
pub use sts::{SdkSts, StsApi};

use crate::domain::{
    ApplicationDescription, ApplicationOperation, ApplicationSummary, EncryptionUpdate,
    ErrorCategory, ObservedApplication, ObservedKey, UpdateAccepted,
};

/// An AWS call that failed, classified once.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{operation}: {code}: {message}")]
pub struct AwsError {
    pub category: ErrorCategory,
    /// The AWS operation, e.g. `PutKeyPolicy`.
    pub operation: &'static str,
    /// AWS's error code, e.g. `NotFoundException`, or a local code such as `Timeout`.
    pub code: String,
    /// AWS's own message, kept for the status condition.
    pub message: String,
}

impl AwsError {
    pub fn is_not_found(&self) -> bool {
        matches!(
            self.code.as_str(),
            "ResourceNotFoundException" | "NotFoundException"
        )
    }

    pub fn is_access_denied(&self) -> bool {
        matches!(
            self.code.as_str(),
            "AccessDeniedException" | "AccessDenied" | "UnauthorizedOperation"
        )
    }
}

/// Managed Service for Apache Flink (`kinesisanalyticsv2`).
///
/// Implementations provide the five calls that carry everything; `describe_application` and
/// `update_application_encryption` are the short forms most callers need.
#[async_trait]
pub trait MsfApi: Send + Sync {
    /// `DescribeApplication`, with the lifecycle markers (rollback, snapshots).
    async fn describe_application_detail(
        &self,
        region: &str,
        application_name: &str,
    ) -> Result<ApplicationDescription, AwsError>;

    /// `UpdateApplication` with only `ApplicationEncryptionConfigurationUpdate`.
    /// Returns the application as MSF describes it right after the call and the operation id.
    async fn start_encryption_update(
        &self,
        update: &EncryptionUpdate,
    ) -> Result<UpdateAccepted, AwsError>;

    /// `ListApplicationOperations` filtered to `operation` (e.g. `UpdateApplication`): the
    /// summaries (id, status, times), most recent first.
    async fn list_application_operations(
        &self,
        region: &str,
        application_name: &str,
        operation: &str,
    ) -> Result<Vec<ApplicationOperation>, AwsError>;

    /// `DescribeApplicationOperation`: the version change and MSF's failure message.
    async fn describe_application_operation(
        &self,
        region: &str,
        application_name: &str,
        operation_id: &str,
    ) -> Result<ApplicationOperation, AwsError>;

    /// `ListApplications`, every page (50 applications a page): name, status and version of
    /// each application in the region. `apply` watches the updates it waits for with it.
    async fn list_applications(&self, region: &str) -> Result<Vec<ApplicationSummary>, AwsError>;

    async fn describe_application(
        &self,
        region: &str,
        application_name: &str,
    ) -> Result<ObservedApplication, AwsError> {
        self.describe_application_detail(region, application_name)
            .await
            .map(|d| d.application)
    }

    /// The client-side pacing of these calls, when the implementation paces (metrics).
    fn pacing(&self) -> Option<AccountLimiters> {
        None
    }

    /// Returns the application as MSF describes it right after the call.
    async fn update_application_encryption(
        &self,
        update: &EncryptionUpdate,
    ) -> Result<ObservedApplication, AwsError> {
        self.start_encryption_update(update)
            .await
            .map(|u| u.application)
    }
}

/// KMS.
#[async_trait]
pub trait KmsApi: Send + Sync {
    /// Resolves a key ARN, key id, alias name or alias ARN to the key.
    async fn describe_key(&self, region: &str, key_id: &str) -> Result<ObservedKey, AwsError>;

    /// The key policy named `default`, as text.
    async fn get_key_policy(&self, region: &str, key_arn: &str) -> Result<String, AwsError>;

    /// Replaces the key policy named `default`.
    async fn put_key_policy(
        &self,
        region: &str,
        key_arn: &str,
        policy: &str,
    ) -> Result<(), AwsError>;

    /// The client-side pacing of these calls, when the implementation paces (metrics).
    fn pacing(&self) -> Option<AccountLimiters> {
        None
    }

    /// Takes the client-side pacing permit of the next `put_key_policy` of `key_arn` now, so
    /// that call does not wait for it: the caller takes it before the read its write is
    /// computed from, and no pacing wait falls between that read and the write
    /// (`controller::key_write`). Idempotent until the write uses it. Unpaced clients: nothing.
    async fn reserve_put_key_policy(&self, _region: &str, _key_arn: &str) {}
}
