//! Building the AWS clients: one shared `SdkConfig` from the standard configuration chain
//! (`AWS_REGION`, `AWS_ENDPOINT_URL`, `AWS_ENDPOINT_URL_KMS`, `AWS_ENDPOINT_URL_KINESISANALYTICSV2`,
//! web-identity credentials for IRSA / Pod Identity, ...), and per region one SDK client per
//! service, built lazily because most controllers only ever see one or two regions.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use aws_config::{BehaviorVersion, Region, SdkConfig};
use aws_credential_types::Credentials;
use aws_smithy_types::retry::RetryConfig;
use aws_smithy_types::timeout::TimeoutConfig;

use super::ratelimit::RateLimits;
use super::sdk_kms::SdkKms;
use super::sdk_msf::SdkMsf;
use super::sts::SdkSts;
use super::{KmsApi, MsfApi, StsApi};

/// How to reach AWS. `Default` = the standard chain, default rate limits, 3 attempts.
#[derive(Clone, Debug)]
pub struct ConnectOptions {
    /// One endpoint for both services (e.g. the emulator); overrides every endpoint variable.
    pub endpoint_url: Option<String>,
    /// Default region; else `AWS_REGION` / the shared config / the instance metadata.
    pub region: Option<String>,
    pub rate_limits: RateLimits,
    /// SDK attempts per call, first one included (1 = no SDK retries).
    pub max_attempts: u32,
    /// Fixed dummy credentials and no metadata probing: for tests and the demo.
    pub static_credentials: bool,
}

impl Default for ConnectOptions {
    fn default() -> Self {
        Self {
            endpoint_url: None,
            region: None,
            rate_limits: RateLimits::default(),
            max_attempts: 3,
            static_credentials: false,
        }
    }
}

/// Variables by which the standard chain finds credentials of the environment's own: access
/// keys, a web identity token (IRSA), container credentials (EKS Pod Identity, ECS), a profile.
const CREDENTIAL_VARIABLES: &[&str] = &[
    "AWS_ACCESS_KEY_ID",
    "AWS_WEB_IDENTITY_TOKEN_FILE",
    "AWS_CONTAINER_CREDENTIALS_FULL_URI",
    "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI",
    "AWS_PROFILE",
];

fn names_credentials(var: impl Fn(&str) -> Option<std::ffi::OsString>) -> bool {
    CREDENTIAL_VARIABLES
        .iter()
        .any(|k| var(k).is_some_and(|v| !v.is_empty()))
}

impl ConnectOptions {
    /// Whether `run` / `plan` with `--aws-endpoint-url` use dummy credentials: only when the
    /// environment names none. An endpoint override (an emulator, but also a VPC endpoint or a
    /// proxy) must not replace a pod's IRSA or Pod Identity credentials.
    pub fn dummy_credentials_for(endpoint_url: Option<&str>) -> bool {
        endpoint_url.is_some() && !names_credentials(|k| std::env::var_os(k))
    }

    /// Options for talking to a local emulator (or moto) at `endpoint`: dummy credentials,
    /// no client-side rate limits.
    pub fn local(endpoint: impl Into<String>) -> Self {
        Self {
            endpoint_url: Some(endpoint.into()),
            region: Some("us-east-1".to_string()),
            rate_limits: RateLimits::unlimited(),
            max_attempts: 3,
            static_credentials: true,
        }
    }
}

/// The adapters, ready to use.
#[derive(Clone)]
pub struct AwsClients {
    pub msf: Arc<dyn MsfApi>,
    pub kms: Arc<dyn KmsApi>,
    /// Who we are (`GetCallerIdentity`), at the same endpoint override as the others.
    pub sts: Arc<dyn StsApi>,
    /// Used when a resource has no `spec.region`.
    pub default_region: String,
}

impl std::fmt::Debug for AwsClients {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AwsClients")
            .field("default_region", &self.default_region)
            .finish_non_exhaustive()
    }
}

/// Loads the AWS configuration and builds the adapters.
pub async fn connect(opts: &ConnectOptions) -> anyhow::Result<AwsClients> {
    let config = load_sdk_config(opts).await?;
    Ok(clients_from(opts, config)?)
}

/// The adapters on a loaded configuration; no region is a configuration error.
pub(super) fn clients_from(
    opts: &ConnectOptions,
    config: SdkConfig,
) -> Result<AwsClients, super::preflight::AwsConfigError> {
    let default_region = config
        .region()
        .map(|r| r.as_ref().to_string())
        .ok_or_else(super::preflight::AwsConfigError::no_region)?;
    let shared = Arc::new(Shared {
        config,
        endpoint_url: opts.endpoint_url.clone(),
    });
    Ok(AwsClients {
        msf: Arc::new(SdkMsf::new(shared.clone(), &opts.rate_limits)),
        kms: Arc::new(SdkKms::new(shared.clone(), &opts.rate_limits)),
        sts: Arc::new(SdkSts::new(shared)),
        default_region,
    })
}

pub(super) async fn load_sdk_config(opts: &ConnectOptions) -> anyhow::Result<SdkConfig> {
    let mut loader = aws_config::defaults(BehaviorVersion::latest())
        .retry_config(RetryConfig::standard().with_max_attempts(opts.max_attempts.max(1)))
        // Bounded calls: a hung connection must become a transient error, not a stuck reconcile.
        .timeout_config(
            TimeoutConfig::builder()
                .connect_timeout(Duration::from_secs(3))
                .operation_attempt_timeout(Duration::from_secs(10))
                .operation_timeout(Duration::from_secs(30))
                .build(),
        );
    let mut region = opts.region.clone();
    if opts.static_credentials {
        loader = loader.credentials_provider(Credentials::new(
            "AKIDEMULATOR",
            "emulator-secret",
            None,
            None,
            "msf-cmk-static",
        ));
        // The region chain would otherwise ask the instance metadata service.
        if region.is_none() {
            region = Some(std::env::var("AWS_REGION").unwrap_or_else(|_| "us-east-1".into()));
        }
    }
    if let Some(r) = region {
        loader = loader.region(Region::new(r));
    }
    Ok(loader.load().await)
}

/// What every per-region client is built from.
pub(crate) struct Shared {
    pub(crate) config: SdkConfig,
    /// Explicit override; set on each service config so it beats service-specific variables.
    pub(crate) endpoint_url: Option<String>,
}

/// Attempts per call the SDK configuration allows (first one included).
pub(crate) fn attempts_of(shared: &Shared) -> u32 {
    shared
        .config
        .retry_config()
        .map_or(3, |r| r.max_attempts())
        .max(1)
}

/// Per-region SDK clients of one service, built on first use.
pub(crate) struct PerRegion<C> {
    shared: Arc<Shared>,
    build: fn(&Shared, &str) -> C,
    clients: Mutex<HashMap<String, C>>,
}

impl<C: Clone> PerRegion<C> {
    pub(crate) fn new(shared: Arc<Shared>, build: fn(&Shared, &str) -> C) -> Self {
        Self {
            shared,
            build,
            clients: Mutex::new(HashMap::new()),
        }
    }

    pub(crate) fn get(&self, region: &str) -> C {
        // A poisoned lock only means another thread panicked mid-insert; the map is still valid.
        let mut map = self.clients.lock().unwrap_or_else(|p| p.into_inner());
        map.entry(region.to_string())
            .or_insert_with(|| (self.build)(&self.shared, region))
            .clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pod_credentials_are_never_replaced_by_dummy_ones() {
        let env = |vars: &'static [(&'static str, &'static str)]| {
            move |k: &str| {
                vars.iter()
                    .find(|(name, _)| *name == k)
                    .map(|(_, v)| std::ffi::OsString::from(v))
            }
        };
        // IRSA, EKS Pod Identity, static keys, a profile: the environment's own credentials.
        assert!(names_credentials(env(&[(
            "AWS_WEB_IDENTITY_TOKEN_FILE",
            "/var/run/secrets/eks.amazonaws.com/serviceaccount/token"
        )])));
        assert!(names_credentials(env(&[(
            "AWS_CONTAINER_CREDENTIALS_FULL_URI",
            "http://169.254.170.23/v1/credentials"
        )])));
        assert!(names_credentials(env(&[("AWS_ACCESS_KEY_ID", "AKID")])));
        assert!(names_credentials(env(&[("AWS_PROFILE", "dev")])));
        // Nothing (or empty values): dummy credentials for an emulator are fine.
        assert!(!names_credentials(env(&[])));
        assert!(!names_credentials(env(&[("AWS_ACCESS_KEY_ID", "")])));
        assert!(!ConnectOptions::dummy_credentials_for(None));
    }
}
