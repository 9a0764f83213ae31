//! MSF's validation of an encryption change at CreateApplication / UpdateApplication: the
//! key type, the runtime, the key itself (found, same account and region, enabled,
//! symmetric), its policy for the caller and for MSF's service principals (evaluated with
//! the policy engine, with the conditions of the AWS reference key policy), and, when the
//! update leaves a customer managed key, the caller's access to that key.
//!
//! Refusals (the wording is the emulator's, the codes are MSF's documented ones; see
//! docs/emulator.md):
//! - a key that cannot be found, is not enabled, or that the service principals may not use:
//!   `InvalidRequestException`;
//! - a malformed request (wrong key type, other account, asymmetric key, old runtime):
//!   `InvalidArgumentException`;
//! - the caller refused by the key policy, on the new or the old key:
//!   `AccessDeniedException`, with KMS's message shape (MSF calls KMS with the caller's
//!   credentials and passes KMS's answer on).

use std::time::Instant;

use super::access::{Refusal, refusals_on_new_key, refusals_on_old_key};
use super::identity::Identity;
use super::state::{Key, KeyLookup, Scope, World};
use super::wire::ApiError;
use crate::domain::{AppliedEncryption, AppliedKeyType, KeyState};

/// What the check needs to know of the request.
pub struct KeyCheck<'a> {
    pub scope: &'a Scope,
    pub caller: &'a Identity,
    pub application_arn: &'a str,
    pub runtime: &'a str,
    /// When key policies are read (policy writes become visible over time).
    pub now: Instant,
}

fn invalid_argument(message: impl Into<String>) -> ApiError {
    ApiError::client("InvalidArgumentException", message)
}

fn invalid_request(message: impl Into<String>) -> ApiError {
    ApiError::client("InvalidRequestException", message)
}

/// The encryption a request asks for, validated.
pub fn check_encryption(
    world: &World,
    check: &KeyCheck<'_>,
    key_type: &str,
    key_id: Option<&str>,
) -> Result<AppliedEncryption, ApiError> {
    match AppliedKeyType::from_wire(key_type) {
        Some(AppliedKeyType::AwsOwnedKey) => {
            if key_id.is_some() {
                return Err(invalid_argument(
                    "KeyId must not be provided when KeyType is AWS_OWNED_KEY",
                ));
            }
            Ok(AppliedEncryption::default())
        }
        Some(AppliedKeyType::CustomerManagedKey) => {
            let key_id = key_id.ok_or_else(|| {
                invalid_argument("KeyId is required when KeyType is CUSTOMER_MANAGED_KEY")
            })?;
            if !runtime_supports_cmk(check.runtime) {
                return Err(invalid_argument(format!(
                    "Customer managed keys are supported only for Apache Flink 1.20 and later; the application runs {}",
                    check.runtime
                )));
            }
            check_new_key(world, check, key_id)?;
            Ok(AppliedEncryption {
                key_type: AppliedKeyType::CustomerManagedKey,
                key_id: Some(key_id.to_string()),
            })
        }
        None => Err(invalid_argument(format!(
            "1 validation error detected: Value '{key_type}' at 'keyType' failed to satisfy constraint: Member must satisfy enum value set: [AWS_OWNED_KEY, CUSTOMER_MANAGED_KEY]"
        ))),
    }
}

/// `FLINK-1_20` and later.
pub fn runtime_supports_cmk(runtime: &str) -> bool {
    let Some(version) = runtime.strip_prefix("FLINK-") else {
        return false;
    };
    let mut parts = version.split('_').map(|p| p.parse::<u32>().ok());
    match (parts.next().flatten(), parts.next().flatten()) {
        (Some(major), Some(minor)) => (major, minor) >= (1, 20),
        _ => false,
    }
}

fn find_key<'w>(world: &'w World, scope: &Scope, key_ref: &str) -> Result<&'w Key, ApiError> {
    let (found, id) = match world.lookup_key(scope, key_ref, true) {
        KeyLookup::Found(s, id) => (s, id),
        KeyLookup::Missing(why) => {
            return Err(invalid_request(format!(
                "The provided KMS key {key_ref} could not be found or is not accessible: {why}"
            )));
        }
    };
    world.key(&found, &id).ok_or_else(|| {
        invalid_request(format!("The provided KMS key {key_ref} could not be found"))
    })
}

fn check_new_key(world: &World, check: &KeyCheck<'_>, key_ref: &str) -> Result<(), ApiError> {
    let key = find_key(world, check.scope, key_ref)?;
    if key.account != check.scope.account || key.region != check.scope.region {
        return Err(invalid_argument(format!(
            "The KMS key {} must be in the same account and region as the application",
            key.arn
        )));
    }
    if key.state != KeyState::Enabled {
        return Err(invalid_request(format!(
            "The KMS key {} is not in a valid state (KeyState: {}); it must be Enabled",
            key.arn,
            key.state.as_wire()
        )));
    }
    if key.spec != "SYMMETRIC_DEFAULT" || key.usage != "ENCRYPT_DECRYPT" {
        return Err(invalid_argument(format!(
            "The KMS key {} must be a symmetric encryption key (KeySpec SYMMETRIC_DEFAULT, KeyUsage ENCRYPT_DECRYPT); it is {} {}",
            key.arn, key.spec, key.usage
        )));
    }
    let policy = key.visible_policy(check.now);
    let refused = refusals_on_new_key(policy, &key.arn, check.application_arn, check.caller);
    let (caller, services): (Vec<_>, Vec<_>) = refused
        .into_iter()
        .partition(|r| r.principal.starts_with("arn:"));
    if let Some(first) = caller.first() {
        return Err(access_denied(first, &key.arn));
    }
    if !services.is_empty() {
        return Err(invalid_request(format!(
            "The key policy of KMS key {} does not grant access to the service principals: {}",
            key.arn,
            describe(&services)
        )));
    }
    Ok(())
}

/// When an update leaves a customer managed key, MSF needs the caller's access to it.
pub fn check_old_key(
    world: &World,
    check: &KeyCheck<'_>,
    current: &AppliedEncryption,
    next: &AppliedEncryption,
) -> Result<(), ApiError> {
    let Some(old_ref) = current.key_id.as_deref() else {
        return Ok(());
    };
    if current.key_type != AppliedKeyType::CustomerManagedKey || current == next {
        return Ok(());
    }
    let key = find_key(world, check.scope, old_ref).map_err(|e| {
        invalid_request(format!(
            "The KMS key {old_ref} the application currently uses is not accessible: {}",
            e.message
        ))
    })?;
    if key.state != KeyState::Enabled {
        return Err(invalid_request(format!(
            "The KMS key {} the application currently uses is not in a valid state (KeyState: {}); it must be Enabled to change the application's key",
            key.arn,
            key.state.as_wire()
        )));
    }
    let policy = key.visible_policy(check.now);
    let refused = refusals_on_old_key(policy, &key.arn, check.application_arn, check.caller);
    match refused.first() {
        Some(first) => Err(access_denied(first, &key.arn)),
        None => Ok(()),
    }
}

/// KMS's AccessDenied wording, as MSF passes it on.
fn access_denied(r: &Refusal, key_arn: &str) -> ApiError {
    let why = if r.explicit_deny {
        "with an explicit deny in a resource-based policy".to_string()
    } else {
        format!(
            "because no resource-based policy allows the {} action",
            r.action
        )
    };
    ApiError::client(
        "AccessDeniedException",
        format!(
            "User: {} is not authorized to perform: {} on resource: {key_arn} {why}",
            r.principal, r.action
        ),
    )
}

fn describe(refused: &[Refusal]) -> String {
    refused
        .iter()
        .map(|r| {
            let deny = if r.explicit_deny {
                " (explicit deny)"
            } else {
                ""
            };
            format!("{} {}{deny}", r.principal, r.action)
        })
        .collect::<Vec<_>>()
        .join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn runtimes() {
        assert!(runtime_supports_cmk("FLINK-1_20"));
        assert!(runtime_supports_cmk("FLINK-2_0"));
        assert!(!runtime_supports_cmk("FLINK-1_19"));
        assert!(!runtime_supports_cmk("FLINK-1_6"));
        assert!(!runtime_supports_cmk("SQL-1_0"));
        assert!(!runtime_supports_cmk("ZEPPELIN-FLINK-3_0"));
    }
}
