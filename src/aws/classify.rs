//! Error classification, in one place: every SDK error becomes an [`AwsError`] with a
//! category (transient / conflict / terminal), AWS's code and AWS's own message.
//!
//! Credential problems (none found, or keys AWS does not know) are their own category,
//! `Configuration`: a person must fix the environment, and AWS is not "unavailable".
//!
//! Also the retry classifier that stops the SDK from retrying `LimitExceededException`
//! forever: the SDK treats that code as throttling, but for KMS it means a quota (an
//! oversize key policy for `PutKeyPolicy`), which no retry can fix.

use std::error::Error as StdError;
use std::fmt;
use std::marker::PhantomData;

use aws_smithy_runtime_api::client::interceptors::context::InterceptorContext;
use aws_smithy_runtime_api::client::orchestrator::HttpResponse;
use aws_smithy_runtime_api::client::result::SdkError;
use aws_smithy_runtime_api::client::retries::classifiers::{
    ClassifyRetry, RetryAction, RetryClassifierPriority,
};
use aws_smithy_types::error::metadata::ProvideErrorMetadata;

use super::AwsError;
use crate::domain::ErrorCategory;

/// Codes that mean "slow down": the pacing halves its rate (`ratelimit.rs`). Not
/// `LimitExceededException`: a quota on size or count, not on rate.
const THROTTLING_CODES: &[&str] = &[
    "ThrottlingException",
    "Throttling",
    "ThrottledException",
    "TooManyRequestsException",
    "RequestLimitExceeded",
    "RequestThrottled",
    "RequestThrottledException",
    "SlowDown",
    "ProvisionedThroughputExceededException",
    // A bare HTTP 429, as `classify` names an error without a code.
    "Http429",
];

/// Whether `code` is AWS saying "slow down".
pub fn is_throttling(code: &str) -> bool {
    THROTTLING_CODES.contains(&code)
}

/// Codes that mean "the service hiccuped" (besides throttling): retry with backoff.
const TRANSIENT_CODES: &[&str] = &[
    "InternalFailure",
    "InternalServerError",
    "InternalServerException",
    "ServiceUnavailable",
    "ServiceUnavailableException",
    "KMSInternalException",
    "DependencyTimeoutException",
    "RequestTimeout",
    "RequestTimeoutException",
    // Expired credentials: the credentials cache fetches fresh ones (IRSA / Pod Identity
    // tokens rotate) on the next attempt, so waiting for a spec change would be wrong.
    "ExpiredToken",
    "ExpiredTokenException",
    "RequestExpired",
    "IDPCommunicationError",
];

/// Codes that mean "someone else changed it, or it is busy": re-observe and requeue.
const CONFLICT_CODES: &[&str] = &["ConcurrentModificationException", "ResourceInUseException"];

/// Codes that mean "these credentials are not credentials AWS knows" (a wrong or deleted
/// access key, a secret that does not match, an unsigned request): the process's set-up,
/// not the resource and not AWS's availability.
const CONFIGURATION_CODES: &[&str] = &[
    "UnrecognizedClientException",
    "InvalidClientTokenId",
    "InvalidAccessKeyId",
    "SignatureDoesNotMatch",
    "InvalidSignatureException",
    "IncompleteSignature",
    "IncompleteSignatureException",
    "MissingAuthenticationToken",
    "MissingAuthenticationTokenException",
    "AuthFailure",
    // Ours, for a request that could not be signed (see `credentials_error`).
    "NoCredentials",
    "InvalidCredentialsConfiguration",
];

/// The category of an AWS error code. `status` is the HTTP status when there was a response.
///
/// Unknown codes fall back on the status: 5xx and 429 are transient, anything else terminal
/// (a 4xx that we do not know will not get better by retrying the same request).
pub fn category_of(code: &str, status: Option<u16>) -> ErrorCategory {
    if CONFLICT_CODES.contains(&code) {
        return ErrorCategory::Conflict;
    }
    if CONFIGURATION_CODES.contains(&code) {
        return ErrorCategory::Configuration;
    }
    if is_throttling(code) || TRANSIENT_CODES.contains(&code) {
        return ErrorCategory::Transient;
    }
    // Known terminal codes are listed implicitly: NotFoundException, ResourceNotFoundException,
    // AccessDeniedException, InvalidArgumentException, InvalidRequestException,
    // KMSInvalidStateException, DisabledException, LimitExceededException (a quota, e.g. an
    // oversize key policy), MalformedPolicyDocumentException, UnsupportedOperationException...
    match status {
        Some(s) if s >= 500 || s == 429 => ErrorCategory::Transient,
        _ if code.is_empty() => ErrorCategory::Transient,
        _ => ErrorCategory::Terminal,
    }
}

/// Classifies an SDK error of `operation`.
pub fn classify<E>(operation: &'static str, err: SdkError<E, HttpResponse>) -> AwsError
where
    E: ProvideErrorMetadata + StdError + Send + Sync + 'static,
{
    let local = |code: &str, category, message: String| AwsError {
        category,
        operation,
        code: code.to_string(),
        message,
    };
    if let Some(e) = credentials_error(&err) {
        return e.into_aws_error(operation, chain(&err));
    }
    match &err {
        SdkError::ServiceError(se) => {
            let status = se.raw().status().as_u16();
            let e = se.err();
            let code = e.code().unwrap_or_default().to_string();
            let message = e
                .message()
                .map(str::to_string)
                .unwrap_or_else(|| format!("HTTP {status}"));
            let category = category_of(&code, Some(status));
            let code = if code.is_empty() {
                format!("Http{status}")
            } else {
                code
            };
            AwsError {
                category,
                operation,
                code,
                message,
            }
        }
        SdkError::TimeoutError(_) => local(
            "Timeout",
            ErrorCategory::Transient,
            format!("request timed out: {}", chain(&err)),
        ),
        SdkError::DispatchFailure(_) => local(
            "DispatchFailure",
            ErrorCategory::Transient,
            format!("could not send the request: {}", chain(&err)),
        ),
        SdkError::ResponseError(r) => {
            // A response that could not be parsed: usually a truncated body or a proxy's page.
            let status = r.raw().status().as_u16();
            local(
                "ResponseError",
                category_of("", Some(status)),
                format!("unreadable response (HTTP {status}): {}", chain(&err)),
            )
        }
        // A request that could not even be built (e.g. no region, no credentials): terminal
        // until the configuration changes.
        _ => local(
            "ConstructionFailure",
            ErrorCategory::Terminal,
            format!("could not build the request: {}", chain(&err)),
        ),
    }
}

/// Why the SDK found no credentials to sign with, when that is why the call failed.
enum CredentialsProblem {
    /// No source in the chain has any: nothing is configured.
    None,
    /// A source is configured wrongly (e.g. a profile without keys).
    Invalid,
}

impl CredentialsProblem {
    fn into_aws_error(self, operation: &'static str, detail: String) -> AwsError {
        let code = match self {
            Self::None => "NoCredentials",
            Self::Invalid => "InvalidCredentialsConfiguration",
        };
        AwsError {
            category: ErrorCategory::Configuration,
            operation,
            code: code.to_string(),
            message: detail,
        }
    }
}

/// Looks for the credentials provider's own error among the sources. A provider that timed
/// out or failed to reach its source (STS for IRSA, the Pod Identity agent) is left to the
/// other arms: that can get better by itself.
fn credentials_error(err: &(dyn StdError + 'static)) -> Option<CredentialsProblem> {
    use aws_credential_types::provider::error::CredentialsError;
    let mut cur: Option<&(dyn StdError + 'static)> = Some(err);
    while let Some(e) = cur {
        match e.downcast_ref::<CredentialsError>() {
            Some(CredentialsError::CredentialsNotLoaded(_)) => {
                return Some(CredentialsProblem::None);
            }
            Some(CredentialsError::InvalidConfiguration(_)) => {
                return Some(CredentialsProblem::Invalid);
            }
            Some(_) => return None,
            None => cur = e.source(),
        }
    }
    None
}

/// The error and its sources on one line: SDK errors hide the useful part in `source()`.
pub(super) fn chain(err: &dyn StdError) -> String {
    let mut out = err.to_string();
    let mut cur = err.source();
    while let Some(s) = cur {
        out.push_str(": ");
        out.push_str(&s.to_string());
        cur = s.source();
    }
    out
}

/// Which failed attempts a [`NoRetry`] classifier keeps the SDK from retrying.
pub trait RetryVeto: 'static {
    const NAME: &'static str;
    /// `code`: the operation error's AWS code; `status`: the HTTP status of the response.
    fn forbids(code: Option<&str>, status: Option<u16>) -> bool;
}

/// A quota error (`LimitExceededException`): retrying cannot help (an oversized policy, a
/// resource count), it only spends the account's quota.
pub struct Quota;

impl RetryVeto for Quota {
    const NAME: &'static str = "NoRetryOnQuota";
    fn forbids(code: Option<&str>, _status: Option<u16>) -> bool {
        code == Some("LimitExceededException")
    }
}

/// A throttled attempt: a paced call retries it itself, through its lane (`ratelimit.rs`), so
/// that the retry is paced at the lowered rate instead of the SDK's backoff alone. Set per call,
/// only on paced calls; other transient errors keep the SDK's retries.
pub struct Throttle;

impl RetryVeto for Throttle {
    const NAME: &'static str = "NoRetryOnThrottle";
    fn forbids(code: Option<&str>, status: Option<u16>) -> bool {
        code.is_some_and(is_throttling) || status == Some(429)
    }
}

/// Forbids SDK retries of the failed attempts `V` names, for the operation whose error type is
/// `E`. Other operations' errors do not downcast to `E` and are left to the SDK's classifiers.
pub struct NoRetry<E, V>(PhantomData<fn() -> (E, V)>);

/// Registered on the KMS client for PutKeyPolicy.
pub type NoRetryOnQuota<E> = NoRetry<E, Quota>;
/// Set per paced call.
pub type NoRetryOnThrottle<E> = NoRetry<E, Throttle>;

impl<E, V> NoRetry<E, V> {
    pub fn new() -> Self {
        Self(PhantomData)
    }
}

impl<E, V> Default for NoRetry<E, V> {
    fn default() -> Self {
        Self::new()
    }
}

impl<E, V: RetryVeto> fmt::Debug for NoRetry<E, V> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(V::NAME)
    }
}

impl<E, V> ClassifyRetry for NoRetry<E, V>
where
    E: ProvideErrorMetadata + StdError + Send + Sync + 'static,
    V: RetryVeto,
{
    fn classify_retry(&self, ctx: &InterceptorContext) -> RetryAction {
        let Some(Err(err)) = ctx.output_or_error() else {
            return RetryAction::NoActionIndicated;
        };
        let code = err
            .as_operation_error()
            .and_then(|e| e.downcast_ref::<E>())
            .and_then(|e| e.code());
        let status = ctx.response().map(|r| r.status().as_u16());
        if V::forbids(code, status) {
            // RetryForbidden wins over every other classifier's verdict.
            RetryAction::RetryForbidden
        } else {
            RetryAction::NoActionIndicated
        }
    }

    fn name(&self) -> &'static str {
        V::NAME
    }

    fn priority(&self) -> RetryClassifierPriority {
        RetryClassifierPriority::run_after(
            RetryClassifierPriority::modeled_as_retryable_classifier(),
        )
    }
}

/// Whether an SDK error is AWS saying "slow down".
pub fn sdk_error_is_throttling<E>(err: &SdkError<E, HttpResponse>) -> bool
where
    E: ProvideErrorMetadata,
{
    match err {
        SdkError::ServiceError(se) => {
            se.err().code().is_some_and(is_throttling) || se.raw().status().as_u16() == 429
        }
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn categories() {
        use ErrorCategory::*;
        assert_eq!(category_of("ThrottlingException", Some(400)), Transient);
        assert_eq!(category_of("KMSInternalException", Some(500)), Transient);
        assert_eq!(category_of("Whatever", Some(503)), Transient);
        assert_eq!(
            category_of("ConcurrentModificationException", Some(400)),
            Conflict
        );
        assert_eq!(category_of("ResourceInUseException", Some(400)), Conflict);
        assert_eq!(category_of("LimitExceededException", Some(400)), Terminal);
        assert_eq!(
            category_of("MalformedPolicyDocumentException", Some(400)),
            Terminal
        );
        assert_eq!(category_of("NotFoundException", Some(400)), Terminal);
        assert_eq!(category_of("KMSInvalidStateException", Some(400)), Terminal);
        assert_eq!(category_of("AccessDeniedException", Some(400)), Terminal);
        assert_eq!(
            category_of("UnrecognizedClientException", Some(400)),
            Configuration
        );
        assert_eq!(
            category_of("InvalidClientTokenId", Some(403)),
            Configuration
        );
        assert_eq!(
            category_of("SignatureDoesNotMatch", Some(403)),
            Configuration
        );
    }
}
