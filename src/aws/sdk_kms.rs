//! `KmsApi` on `aws-sdk-kms`.

use std::collections::HashMap;
use std::error::Error as StdError;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use aws_config::Region;
use aws_sdk_kms as kms;
use aws_smithy_types::error::metadata::ProvideErrorMetadata;
use kms::client::customize::CustomizableOperation;
use kms::operation::describe_key::DescribeKeyError;
use kms::operation::get_key_policy::GetKeyPolicyError;
use kms::operation::put_key_policy::PutKeyPolicyError;
use kms::types::{KeyManagerType, KeyMetadata};

use super::classify::{NoRetryOnQuota, NoRetryOnThrottle, classify};
use super::connect::{PerRegion, Shared, attempts_of};
use super::ratelimit::{AccountLimiters, Limiter, Paced, RateLimits};
use super::{AwsError, KmsApi};
use crate::arn::Arn;
use crate::domain::{ErrorCategory, KeyManager, KeyState, ObservedKey};

/// KMS has exactly one key policy per key, named `default`.
const POLICY_NAME: &str = "default";

pub struct SdkKms {
    clients: PerRegion<kms::Client>,
    /// Paces every call, per region and operation (shared with the account's other clients).
    pacing: AccountLimiters,
    /// Attempts per call (the SDK's setting): a paced call retries throttles itself.
    attempts: u32,
    put_policy_per_key: Limiter,
    /// Keys whose next PutKeyPolicy permit was taken ahead (`reserve_put_key_policy`), when.
    reserved: Mutex<HashMap<String, (Instant, Paced)>>,
}

/// A permit taken ahead and not used within this long is void (the write was not made).
const RESERVATION_TTL: Duration = Duration::from_secs(30);

impl SdkKms {
    pub(crate) fn new(shared: Arc<Shared>, limits: &RateLimits) -> Self {
        Self::with_limiters(shared, &AccountLimiters::new(limits))
    }

    /// Paced by `limiters`, shared with the account's other clients.
    pub(crate) fn with_limiters(shared: Arc<Shared>, limiters: &AccountLimiters) -> Self {
        Self {
            attempts: attempts_of(&shared),
            clients: PerRegion::new(shared, build_client),
            pacing: limiters.clone(),
            put_policy_per_key: limiters.put_key_policy_per_key.clone(),
            reserved: Mutex::default(),
        }
    }

    /// Uses the permit taken ahead for `key_arn`, if a fresh one is there.
    fn take_reserved(&self, key_arn: &str) -> Option<Paced> {
        let mut map = self.reserved.lock().unwrap_or_else(|e| e.into_inner());
        map.remove(key_arn)
            .filter(|(at, _)| at.elapsed() < RESERVATION_TTL)
            .map(|(_, paced)| paced)
    }
}

/// The region to ask about `key_ref`: an ARN's own region, else the caller's. KMS refuses a
/// key ARN of another region as "not found"; asking the key's region instead lets the
/// controller report the real problem (a key in the wrong region).
fn region_of<'a>(region: &'a str, key_ref: &'a str) -> &'a str {
    match key_ref.strip_prefix("arn:").map(|r| r.split(':').nth(2)) {
        Some(Some(r)) if !r.is_empty() => r,
        _ => region,
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
            kms::config::Builder::default().retry_classifier(NoRetryOnThrottle::<E>::new()),
        )
    } else {
        call
    }
}

fn build_client(shared: &Shared, region: &str) -> kms::Client {
    let mut b = kms::config::Builder::from(&shared.config)
        .region(Region::new(region.to_string()))
        // The SDK retries LimitExceededException as throttling; from PutKeyPolicy it means
        // "policy too large", which would then be retried until the attempts run out.
        .retry_classifier(NoRetryOnQuota::<PutKeyPolicyError>::new());
    if let Some(url) = &shared.endpoint_url {
        b = b.endpoint_url(url);
    }
    kms::Client::from_conf(b.build())
}

#[async_trait]
impl KmsApi for SdkKms {
    async fn describe_key(&self, region: &str, key_id: &str) -> Result<ObservedKey, AwsError> {
        const OP: &str = "DescribeKey";
        let region = region_of(region, key_id);
        let client = self.clients.get(region);
        let out = self
            .pacing
            .send(region, OP, self.attempts, None, |paced| {
                let call = client.describe_key().key_id(key_id).customize();
                paced_call::<_, DescribeKeyError, _>(call, &paced).send()
            })
            .await
            .map_err(|e| classify(OP, e))?;
        let meta = out
            .key_metadata()
            .ok_or_else(|| incomplete(OP, "no KeyMetadata"))?;
        observed_key(meta, region)
    }

    async fn get_key_policy(&self, region: &str, key_arn: &str) -> Result<String, AwsError> {
        const OP: &str = "GetKeyPolicy";
        let region = region_of(region, key_arn);
        let client = self.clients.get(region);
        let out = self
            .pacing
            .send(region, OP, self.attempts, None, |paced| {
                let call = client
                    .get_key_policy()
                    .key_id(key_arn)
                    .policy_name(POLICY_NAME)
                    .customize();
                paced_call::<_, GetKeyPolicyError, _>(call, &paced).send()
            })
            .await
            .map_err(|e| classify(OP, e))?;
        out.policy()
            .map(str::to_string)
            .ok_or_else(|| incomplete(OP, "no Policy"))
    }

    async fn put_key_policy(
        &self,
        region: &str,
        key_arn: &str,
        policy: &str,
    ) -> Result<(), AwsError> {
        const OP: &str = "PutKeyPolicy";
        let region = region_of(region, key_arn);
        let paced = match self.take_reserved(key_arn) {
            Some(paced) => paced,
            None => {
                let paced = self.pacing.pace(region, OP).await;
                self.put_policy_per_key.wait(key_arn).await;
                paced
            }
        };
        let client = self.clients.get(region);
        self.pacing
            .send(region, OP, self.attempts, Some(paced), |paced| {
                let call = client
                    .put_key_policy()
                    .key_id(key_arn)
                    .policy_name(POLICY_NAME)
                    .policy(policy)
                    .customize();
                paced_call::<_, PutKeyPolicyError, _>(call, &paced).send()
            })
            .await
            .map_err(|e| classify(OP, e))?;
        Ok(())
    }

    async fn reserve_put_key_policy(&self, region: &str, key_arn: &str) {
        let region = region_of(region, key_arn);
        {
            let mut map = self.reserved.lock().unwrap_or_else(|e| e.into_inner());
            map.retain(|_, (at, _)| at.elapsed() < RESERVATION_TTL);
            if map.contains_key(key_arn) {
                return;
            }
        }
        let paced = self.pacing.pace(region, "PutKeyPolicy").await;
        self.put_policy_per_key.wait(key_arn).await;
        self.reserved
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(key_arn.to_string(), (Instant::now(), paced));
    }

    fn pacing(&self) -> Option<AccountLimiters> {
        Some(self.pacing.clone())
    }
}

fn incomplete(operation: &'static str, what: &str) -> AwsError {
    AwsError {
        category: ErrorCategory::Transient,
        operation,
        code: "IncompleteResponse".into(),
        message: format!("response has {what}"),
    }
}

/// `KeyMetadata` in domain terms. Account and region come from the key ARN (authoritative:
/// an alias may be resolved to a key ARN), falling back on the metadata and the call's region.
fn observed_key(meta: &KeyMetadata, region: &str) -> Result<ObservedKey, AwsError> {
    let arn = meta
        .arn()
        .ok_or_else(|| incomplete("DescribeKey", "no key Arn"))?
        .to_string();
    let parsed = Arn::parse_key(&arn).ok();
    Ok(ObservedKey {
        key_id: meta.key_id().to_string(),
        account: parsed
            .as_ref()
            .map(|a| a.account.clone())
            .or_else(|| meta.aws_account_id().map(str::to_string))
            .unwrap_or_default(),
        region: parsed
            .as_ref()
            .map(|a| a.region.clone())
            .unwrap_or_else(|| region.to_string()),
        state: KeyState::from_wire(
            meta.key_state()
                .map(|s| s.as_str())
                .unwrap_or("Unavailable"),
        ),
        spec: meta
            .key_spec()
            .map(|s| s.as_str().to_string())
            .unwrap_or_else(|| "SYMMETRIC_DEFAULT".into()),
        usage: meta
            .key_usage()
            .map(|s| s.as_str().to_string())
            .unwrap_or_else(|| "ENCRYPT_DECRYPT".into()),
        manager: match meta.key_manager() {
            Some(KeyManagerType::Aws) => KeyManager::Aws,
            _ => KeyManager::Customer,
        },
        arn,
    })
}

#[cfg(test)]
mod tests {
    #[test]
    fn region_of() {
        assert_eq!(
            super::region_of("us-east-1", "arn:aws:kms:eu-west-1:123456789012:key/x"),
            "eu-west-1"
        );
        assert_eq!(super::region_of("us-east-1", "alias/x"), "us-east-1");
        assert_eq!(super::region_of("us-east-1", "1234"), "us-east-1");
        assert_eq!(super::region_of("us-east-1", "arn:aws:kms"), "us-east-1");
    }
}
