//! Clients that act as an assumed role in another account (issue 11): the pod's own
//! credentials (IRSA, Pod Identity, ...) call `sts:AssumeRole`, and the SDK's identity cache
//! keeps the role's credentials, refreshing them before they expire.
//!
//! One [`RoleClients`] per (account, roles): per region clients inside are built lazily like
//! the pod's own ([`super::connect`]); the caller passes one [`AccountLimiters`] per account,
//! so pacing is per account and region whichever role calls. With a separate key administrator, KMS policy calls go through
//! [`SplitKms`], everything else as the operator.

use std::sync::Arc;

use async_trait::async_trait;
use aws_config::SdkConfig;
use aws_config::sts::AssumeRoleProvider;
use aws_credential_types::provider::SharedCredentialsProvider;

use super::connect::{ConnectOptions, Shared, load_sdk_config};
use super::ratelimit::AccountLimiters;
use super::sdk_kms::SdkKms;
use super::sdk_msf::SdkMsf;
use super::sts::SdkSts;
use super::{AwsError, KmsApi, MsfApi, StsApi};
use crate::domain::ObservedKey;

/// The session name every assumed role session carries (CloudTrail shows it).
pub const SESSION_NAME: &str = "msf-cmk-controller";

/// Which roles to assume in one account.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RoleSet {
    pub operator_role_arn: String,
    pub key_admin_role_arn: Option<String>,
    pub external_id: Option<String>,
}

/// The adapters of one account.
#[derive(Clone)]
pub struct RoleClients {
    pub msf: Arc<dyn MsfApi>,
    /// DescribeKey as the operator; GetKeyPolicy / PutKeyPolicy as the key administrator when
    /// one is set.
    pub kms: Arc<dyn KmsApi>,
    /// `GetCallerIdentity` as the operator (the `OperatorMismatch` check).
    pub sts: Arc<dyn StsApi>,
}

/// Builds the clients of one account. No call is made yet: the first AWS call assumes the role.
/// `limiters` pace the calls; pass the same ones for every client set of one account (AWS
/// quotas are per account and region, whichever role calls).
pub async fn connect_roles(
    opts: &ConnectOptions,
    roles: &RoleSet,
    limiters: &AccountLimiters,
) -> anyhow::Result<RoleClients> {
    let base = load_sdk_config(opts).await?;
    let operator = shared_as(&base, opts, &roles.operator_role_arn, roles).await;
    let op_kms: Arc<dyn KmsApi> = Arc::new(SdkKms::with_limiters(operator.clone(), limiters));
    let kms: Arc<dyn KmsApi> = match &roles.key_admin_role_arn {
        None => op_kms,
        Some(admin_arn) => {
            let admin = shared_as(&base, opts, admin_arn, roles).await;
            Arc::new(SplitKms {
                operator: op_kms,
                admin: Arc::new(SdkKms::with_limiters(admin, limiters)),
            })
        }
    };
    Ok(RoleClients {
        msf: Arc::new(SdkMsf::with_limiters(operator.clone(), limiters)),
        kms,
        sts: Arc::new(SdkSts::new(operator)),
    })
}

/// A `Shared` whose credentials are `role_arn`'s, assumed with the base configuration's.
async fn shared_as(
    base: &SdkConfig,
    opts: &ConnectOptions,
    role_arn: &str,
    roles: &RoleSet,
) -> Arc<Shared> {
    // The STS client of the provider must reach the same endpoint override as the others
    // (an emulator, a VPC endpoint).
    let mut sts_base = base.to_builder();
    if let Some(url) = &opts.endpoint_url {
        sts_base = sts_base.endpoint_url(url);
    }
    let mut provider = AssumeRoleProvider::builder(role_arn).session_name(SESSION_NAME);
    if let Some(x) = &roles.external_id {
        provider = provider.external_id(x);
    }
    let provider = provider.configure(&sts_base.build()).build().await;
    // The config's identity cache (lazy, refreshes before expiry) wraps this provider.
    let config = base
        .to_builder()
        .credentials_provider(SharedCredentialsProvider::new(provider))
        .build();
    Arc::new(Shared {
        config,
        endpoint_url: opts.endpoint_url.clone(),
    })
}

/// KMS as two identities: the key administrator reads and writes key policies, the operator
/// does the rest.
pub struct SplitKms {
    pub operator: Arc<dyn KmsApi>,
    pub admin: Arc<dyn KmsApi>,
}

#[async_trait]
impl KmsApi for SplitKms {
    async fn describe_key(&self, region: &str, key_id: &str) -> Result<ObservedKey, AwsError> {
        self.operator.describe_key(region, key_id).await
    }

    async fn get_key_policy(&self, region: &str, key_arn: &str) -> Result<String, AwsError> {
        self.admin.get_key_policy(region, key_arn).await
    }

    async fn put_key_policy(
        &self,
        region: &str,
        key_arn: &str,
        policy: &str,
    ) -> Result<(), AwsError> {
        self.admin.put_key_policy(region, key_arn, policy).await
    }

    async fn reserve_put_key_policy(&self, region: &str, key_arn: &str) {
        self.admin.reserve_put_key_policy(region, key_arn).await
    }

    // Both identities are of one account and share its lanes.
    fn pacing(&self) -> Option<crate::aws::AccountLimiters> {
        self.operator.pacing()
    }
}
