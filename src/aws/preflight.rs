//! The up-front check of `plan`, `apply` and `run` (I/O): before any resource is read, make
//! sure the process can talk to AWS at all, and if it cannot, say in one line what to set.
//! Without it a missing credential shows up late and under another name: every resource
//! `ApplicationNotObserved` in `plan`, `apply` retrying until its timeout.
//!
//! Three checks, each bounded by [`CHECK_TIMEOUT`]:
//! 1. a region is known;
//! 2. the credential chain yields credentials (resolved once; with dummy credentials for an
//!    emulator there is nothing to resolve);
//! 3. `sts:GetCallerIdentity`, the call the controller makes anyway to learn who it is
//!    (`controller::identity`), is answered.
//!
//! AWS refusing the credentials (a `Configuration`-class code) is fatal. STS not answering is
//! fatal only when an endpoint override sends every service to one place (an emulator, a
//! proxy), because then nothing else can answer either; against AWS itself STS may be out of
//! reach where MSF and KMS are not (VPC endpoints), so there it stays a warning.

use std::time::Duration;

use aws_config::SdkConfig;
use aws_credential_types::provider::ProvideCredentials;
use aws_credential_types::provider::error::CredentialsError;

use super::classify::chain;
use super::connect::{clients_from, load_sdk_config};
use super::{AwsClients, AwsError, ConnectOptions, StsApi};
use crate::domain::ErrorCategory;
use crate::identity::CallerIdentity;

/// The longest each check may take: the SDK's own timeouts and retries end sooner (three
/// attempts of at most 10 s each would not), so this only catches a chain that hangs.
pub const CHECK_TIMEOUT: Duration = Duration::from_secs(20);

/// The process's AWS set-up is wrong: what is missing and what to set, on one line.
/// `main` maps it to exit code 2, as bad input.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct AwsConfigError(pub String);

impl AwsConfigError {
    pub fn no_region() -> Self {
        Self("no AWS region: set AWS_REGION (or pass --region)".into())
    }

    fn no_credentials() -> Self {
        Self::no_credentials_for(std::env::var("AWS_PROFILE").ok().filter(|p| !p.is_empty()))
    }

    /// With a profile named, the profile is what to fix; else, what to set.
    fn no_credentials_for(profile: Option<String>) -> Self {
        let what = match profile {
            Some(p) => format!(
                "no AWS credentials for profile {p:?} (AWS_PROFILE): add it to ~/.aws/config or \
                 ~/.aws/credentials (aws configure --profile {p}), or unset AWS_PROFILE and set \
                 AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY"
            ),
            None => "no AWS credentials: set AWS_PROFILE, or AWS_ACCESS_KEY_ID and \
                     AWS_SECRET_ACCESS_KEY (in EKS: IRSA or Pod Identity)"
                .to_string(),
        };
        Self(format!(
            "{what}; for the emulator, eval the export lines `msf-cmk-controller emulator` prints"
        ))
    }
}

/// [`super::connect`], then the three checks. Returns who the process is in AWS when STS
/// answered.
pub async fn connect_checked(
    opts: &ConnectOptions,
) -> anyhow::Result<(AwsClients, Option<CallerIdentity>)> {
    let config = load_sdk_config(opts).await?;
    if config.region().is_none() {
        return Err(AwsConfigError::no_region().into());
    }
    if !opts.static_credentials {
        check_credentials(&config).await?;
    }
    let endpoint = endpoint_override(opts, |k| std::env::var(k).ok());
    let clients = clients_from(opts, config)?;
    let me = check_identity(clients.sts.as_ref(), endpoint.as_deref()).await?;
    Ok((clients, me))
}

async fn check_credentials(config: &SdkConfig) -> Result<(), AwsConfigError> {
    let Some(provider) = config.credentials_provider() else {
        return Err(AwsConfigError::no_credentials());
    };
    match tokio::time::timeout(CHECK_TIMEOUT, provider.provide_credentials()).await {
        Ok(Ok(_)) => Ok(()),
        Ok(Err(CredentialsError::CredentialsNotLoaded(_))) => Err(AwsConfigError::no_credentials()),
        // The instance metadata is the chain's last resort: its failure off EC2 (refused,
        // disabled, forbidden) means that nothing else was configured.
        Ok(Err(e)) if chain(&e).contains("IMDS") => Err(AwsConfigError::no_credentials()),
        Ok(Err(e)) => Err(AwsConfigError(format!(
            "cannot load AWS credentials: {}",
            chain(&e)
        ))),
        Err(_) => Err(AwsConfigError(format!(
            "cannot load AWS credentials: the credential chain did not answer within {}s",
            CHECK_TIMEOUT.as_secs()
        ))),
    }
}

async fn check_identity(
    sts: &dyn StsApi,
    endpoint: Option<&str>,
) -> Result<Option<CallerIdentity>, AwsConfigError> {
    let result = tokio::time::timeout(CHECK_TIMEOUT, sts.get_caller_identity()).await;
    let err = match result {
        Ok(Ok(me)) => {
            tracing::info!(caller = %me.arn, account = %me.account, "AWS caller identity");
            return Ok(Some(me));
        }
        Ok(Err(e)) => e,
        Err(_) => AwsError {
            category: ErrorCategory::Transient,
            operation: "GetCallerIdentity",
            code: "Timeout".into(),
            message: format!("no answer within {}s", CHECK_TIMEOUT.as_secs()),
        },
    };
    match verdict(&err, endpoint) {
        Some(fatal) => Err(fatal),
        None => {
            tracing::warn!(error = %err, "cannot ask AWS who the controller is (sts:GetCallerIdentity): the operator role check is off");
            Ok(None)
        }
    }
}

/// Whether a failed GetCallerIdentity stops the command, and with which line.
fn verdict(err: &AwsError, endpoint: Option<&str>) -> Option<AwsConfigError> {
    let AwsError { code, message, .. } = err;
    if err.category == ErrorCategory::Configuration {
        return Some(AwsConfigError(format!(
            "AWS refused the credentials ({code}: {message}): check AWS_PROFILE or \
             AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY (in EKS: the IRSA or Pod Identity role)"
        )));
    }
    let unreachable = matches!(code.as_str(), "DispatchFailure" | "Timeout");
    match endpoint {
        Some(url) if unreachable => Some(AwsConfigError(format!(
            "cannot reach AWS at {url} ({code}: {message}): check --aws-endpoint-url / \
             AWS_ENDPOINT_URL, or start the emulator (`msf-cmk-controller emulator`)"
        ))),
        _ => None,
    }
}

/// The one endpoint every service is sent to, when there is one: the flag, else the SDK's
/// own variables (STS's, or the global one).
fn endpoint_override(
    opts: &ConnectOptions,
    var: impl Fn(&str) -> Option<String>,
) -> Option<String> {
    let set = |k: &str| var(k).filter(|v| !v.is_empty());
    opts.endpoint_url
        .clone()
        .or_else(|| set("AWS_ENDPOINT_URL_STS"))
        .or_else(|| set("AWS_ENDPOINT_URL"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err(category: ErrorCategory, code: &str) -> AwsError {
        AwsError {
            category,
            operation: "GetCallerIdentity",
            code: code.into(),
            message: "m".into(),
        }
    }

    #[test]
    fn refused_credentials_always_stop_the_command() {
        let e = err(ErrorCategory::Configuration, "InvalidClientTokenId");
        assert!(
            verdict(&e, None)
                .unwrap()
                .0
                .contains("AWS refused the credentials")
        );
        assert!(verdict(&e, Some("http://127.0.0.1:1")).is_some());
    }

    #[test]
    fn an_unreachable_sts_stops_the_command_only_behind_an_endpoint_override() {
        let e = err(ErrorCategory::Transient, "DispatchFailure");
        let line = verdict(&e, Some("http://127.0.0.1:9")).unwrap().0;
        assert!(
            line.starts_with("cannot reach AWS at http://127.0.0.1:9 "),
            "{line}"
        );
        assert!(
            verdict(&e, None).is_none(),
            "real AWS: STS may be blocked alone"
        );
        let throttled = err(ErrorCategory::Transient, "ThrottlingException");
        assert!(verdict(&throttled, Some("http://127.0.0.1:9")).is_none());
    }

    /// A credential chain that finds nothing, as on a laptop with no AWS set-up.
    #[derive(Debug)]
    struct NoCredentials;

    impl ProvideCredentials for NoCredentials {
        fn provide_credentials<'a>(
            &'a self,
        ) -> aws_credential_types::provider::future::ProvideCredentials<'a>
        where
            Self: 'a,
        {
            aws_credential_types::provider::future::ProvideCredentials::ready(Err(
                CredentialsError::not_loaded("no source configured"),
            ))
        }
    }

    #[tokio::test]
    async fn an_sdk_call_without_credentials_is_a_configuration_error_before_any_request() {
        // A closed port: had the SDK sent anything, this would be a dispatch failure instead.
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map(|a| a.port())
            .unwrap();
        let conf = aws_sdk_sts::Config::builder()
            .behavior_version(aws_config::BehaviorVersion::latest())
            .region(aws_config::Region::new("us-east-1"))
            .endpoint_url(format!("http://127.0.0.1:{port}"))
            .credentials_provider(NoCredentials)
            .build();
        let err = aws_sdk_sts::Client::from_conf(conf)
            .get_caller_identity()
            .send()
            .await
            .unwrap_err();
        let e = crate::aws::classify("GetCallerIdentity", err);
        assert_eq!(e.category, ErrorCategory::Configuration, "{e}");
        assert_eq!(e.code, "NoCredentials");
        assert!(
            verdict(&e, None).is_some(),
            "the start-up check stops on it"
        );
    }

    #[test]
    fn a_named_profile_without_credentials_is_named() {
        let line = AwsConfigError::no_credentials_for(Some("dev".into())).0;
        assert!(
            line.starts_with("no AWS credentials for profile \"dev\" (AWS_PROFILE)"),
            "{line}"
        );
        let line = AwsConfigError::no_credentials_for(None).0;
        assert!(
            line.starts_with("no AWS credentials: set AWS_PROFILE"),
            "{line}"
        );
    }

    #[test]
    fn the_override_is_the_flag_else_the_sdk_variables() {
        let mut opts = ConnectOptions::default();
        let env = |k: &str| (k == "AWS_ENDPOINT_URL").then(|| "http://env".to_string());
        assert_eq!(endpoint_override(&opts, env).as_deref(), Some("http://env"));
        assert_eq!(endpoint_override(&opts, |_| Some(String::new())), None);
        opts.endpoint_url = Some("http://flag".into());
        assert_eq!(
            endpoint_override(&opts, env).as_deref(),
            Some("http://flag")
        );
    }
}
