//! The KMS subset (`TrentService.*`) the controller, its tests and the demo use. Key
//! policies are written with KMS's checks (size, characters, JSON, principals that exist,
//! the lock-out safety check) and become visible after the configured propagation delay.

use std::collections::BTreeSet;
use std::time::{Duration, Instant, SystemTime};

use serde_json::{Value, json};

use super::access::keeps_put_key_policy;
use super::identity::{Identity, aws_principals};
use super::policy_check::{self, MAX_POLICY_BYTES, PolicyProblem};
use super::state::{Alias, Key, KeyLookup, Scope, World, new_key};
use super::wire::{ApiError, Body, OpResult, epoch_seconds};
use crate::domain::KeyState;

/// Per-request context.
pub struct Ctx {
    pub scope: Scope,
    pub caller: Identity,
    /// How long a policy write takes to be seen.
    pub propagation: Duration,
    /// The principals that exist, when PutKeyPolicy must check them (`strict_principals`).
    pub known_principals: Option<BTreeSet<String>>,
    /// Refuse statements without Action or Resource (KMS since 2025-08-18).
    pub reject_incomplete: bool,
    /// A person's policy write to apply just before this PutKeyPolicy (issue 13's hook).
    pub interleave: Option<String>,
    pub now: Instant,
}

pub const TARGET_PREFIX: &str = "TrentService.";

pub const OPERATIONS: &[&str] = &[
    "CreateKey",
    "DescribeKey",
    "CreateAlias",
    "ListAliases",
    "GetKeyPolicy",
    "PutKeyPolicy",
    "EnableKey",
    "DisableKey",
    "ScheduleKeyDeletion",
    "CancelKeyDeletion",
];

const KEY_SPECS: &[&str] = &[
    "SYMMETRIC_DEFAULT",
    "RSA_2048",
    "RSA_3072",
    "RSA_4096",
    "ECC_NIST_P256",
    "ECC_NIST_P384",
    "ECC_NIST_P521",
    "ECC_SECG_P256K1",
    "HMAC_224",
    "HMAC_256",
    "HMAC_384",
    "HMAC_512",
];

const KEY_USAGES: &[&str] = &["ENCRYPT_DECRYPT", "SIGN_VERIFY", "GENERATE_VERIFY_MAC"];

fn not_found(message: String) -> ApiError {
    ApiError::client("NotFoundException", message)
}

fn invalid_state(message: String) -> ApiError {
    ApiError::client("KMSInvalidStateException", message)
}

pub fn handle(op: &str, body: &Body, ctx: &Ctx, world: &mut World) -> OpResult {
    let scope = &ctx.scope;
    match op {
        "CreateKey" => create_key(body, ctx, world),
        "DescribeKey" => {
            let key = resolve(body, scope, world, true)?;
            Ok(json!({ "KeyMetadata": metadata(key) }))
        }
        "CreateAlias" => create_alias(body, scope, world),
        "ListAliases" => list_aliases(body, scope, world),
        "GetKeyPolicy" => {
            check_policy_name(body)?;
            let key = resolve(body, scope, world, false)?;
            same_account(key, &ctx.caller, "kms:GetKeyPolicy")?;
            Ok(json!({ "Policy": key.visible_policy(ctx.now), "PolicyName": "default" }))
        }
        "PutKeyPolicy" => put_key_policy(body, ctx, world),
        "EnableKey" => set_enabled(body, scope, world, true),
        "DisableKey" => set_enabled(body, scope, world, false),
        "ScheduleKeyDeletion" => schedule_deletion(body, scope, world),
        "CancelKeyDeletion" => cancel_deletion(body, scope, world),
        _ => Err(ApiError::client(
            "UnsupportedOperationException",
            format!("operation {op} is not supported by the emulator"),
        )),
    }
}

fn lookup(
    body: &Body,
    scope: &Scope,
    world: &World,
    aliases: bool,
) -> Result<(Scope, String), ApiError> {
    let key_ref = body.required_str("KeyId", "ValidationException")?;
    match world.lookup_key(scope, key_ref, aliases) {
        KeyLookup::Found(s, id) => Ok((s, id)),
        KeyLookup::Missing(why) => Err(not_found(why)),
    }
}

fn resolve<'w>(
    body: &Body,
    scope: &Scope,
    world: &'w World,
    aliases: bool,
) -> Result<&'w Key, ApiError> {
    let (s, id) = lookup(body, scope, world, aliases)?;
    world
        .key(&s, &id)
        .ok_or_else(|| not_found(format!("Key '{id}' does not exist")))
}

fn resolve_mut<'w>(
    body: &Body,
    scope: &Scope,
    world: &'w mut World,
) -> Result<&'w mut Key, ApiError> {
    let (s, id) = lookup(body, scope, world, false)?;
    world
        .key_mut(&s, &id)
        .ok_or_else(|| not_found(format!("Key '{id}' does not exist")))
}

fn check_policy_name(body: &Body) -> Result<(), ApiError> {
    match body.str("PolicyName")? {
        None | Some("default") => Ok(()),
        Some(other) => Err(not_found(format!("Policy '{other}' does not exist"))),
    }
}

/// KMS's answer to a policy it will not store.
pub fn policy_error(problem: PolicyProblem) -> ApiError {
    match problem {
        PolicyProblem::TooLarge(n) => ApiError::client(
            "LimitExceededException",
            format!(
                "Policy document of {n} bytes exceeds the maximum key policy size of {MAX_POLICY_BYTES} bytes"
            ),
        ),
        PolicyProblem::Malformed(why) => ApiError::client(
            "MalformedPolicyDocumentException",
            format!("Malformed policy document: {why}"),
        ),
    }
}

/// Get/PutKeyPolicy do not work across accounts ("Cross-account use: No" in the KMS API
/// reference); KMS answers a key ARN of another account with AccessDenied.
fn same_account(key: &Key, caller: &Identity, action: &str) -> Result<(), ApiError> {
    if key.account == caller.account {
        return Ok(());
    }
    Err(ApiError::client(
        "AccessDeniedException",
        format!(
            "User: {} is not authorized to perform: {action} on resource: {} because {action} does not support cross-account access",
            caller.arn, key.arn
        ),
    ))
}

/// The Policy parameter's pattern in the KMS API: `[\u0009\u000A\u000D\u0020-\u00FF]+`,
/// checked on the decoded string (a JSON escape such as `\u00e9` in the request body is the
/// character it stands for; the text `\u2028` inside the policy is six ASCII characters).
pub fn check_policy_characters(policy: &str) -> Result<(), ApiError> {
    let allowed = |c: char| matches!(c, '\t' | '\n' | '\r' | '\u{20}'..='\u{ff}');
    match policy.chars().find(|c| !allowed(*c)) {
        None if !policy.is_empty() => Ok(()),
        found => {
            let what = found.map_or("an empty policy".to_string(), |c| {
                format!("character U+{:04X}", c as u32)
            });
            Err(ApiError::client(
                "ValidationException",
                format!(
                    "1 validation error detected: Value at 'policy' failed to satisfy constraint: Member must satisfy regular expression pattern: [\\u0009\\u000A\\u000D\\u0020-\\u00FF]+ ({what})"
                ),
            ))
        }
    }
}

/// With strict principals: every AWS principal must exist (accounts and `*` always do; a
/// role session exists when its role does).
fn check_principals(statements: &[Value], known: &BTreeSet<String>) -> Result<(), ApiError> {
    let exists = |p: &str| {
        p == "*"
            || crate::arn::is_account_id(p)
            || p.ends_with(":root") && !p.contains('*')
            || known.contains(p)
            || Identity::parse(p).is_ok_and(|id| id.arn == p && known.contains(&id.principal_arn))
    };
    let invalid = statements
        .iter()
        .flat_map(aws_principals)
        .find(|p| !exists(p));
    match invalid {
        None => Ok(()),
        Some(p) => Err(ApiError::client(
            "MalformedPolicyDocumentException",
            format!("Policy contains a statement with one or more invalid principals. ({p})"),
        )),
    }
}

/// KMS's checks of a policy a caller writes (PutKeyPolicy, CreateKey with a Policy):
/// characters, size and form, complete statements (when on), principals that exist (when
/// strict), and the lock-out safety check unless bypassed.
fn check_new_policy(policy: &str, key_arn: &str, ctx: &Ctx, bypass: bool) -> Result<(), ApiError> {
    check_policy_characters(policy)?;
    let statements = policy_check::parse(policy).map_err(policy_error)?;
    if ctx.reject_incomplete {
        policy_check::check_complete(&statements).map_err(policy_error)?;
    }
    if let Some(known) = &ctx.known_principals {
        check_principals(&statements, known)?;
    }
    if !bypass && !keeps_put_key_policy(policy, key_arn, &ctx.caller) {
        return Err(ApiError::client(
            "MalformedPolicyDocumentException",
            "The new key policy will not allow you to update the key policy in the future.",
        ));
    }
    Ok(())
}

fn create_key(body: &Body, ctx: &Ctx, world: &mut World) -> OpResult {
    let scope = &ctx.scope;
    let spec = body
        .str("KeySpec")?
        .or(body.str("CustomerMasterKeySpec")?)
        .unwrap_or("SYMMETRIC_DEFAULT");
    let usage = body.str("KeyUsage")?.unwrap_or("ENCRYPT_DECRYPT");
    if !KEY_SPECS.contains(&spec) || !KEY_USAGES.contains(&usage) {
        return Err(ApiError::client(
            "ValidationException",
            format!("unsupported KeySpec {spec} or KeyUsage {usage}"),
        ));
    }
    let symmetric = spec == "SYMMETRIC_DEFAULT";
    if symmetric != (usage == "ENCRYPT_DECRYPT") && !spec.starts_with("RSA") {
        return Err(ApiError::client(
            "ValidationException",
            format!("KeyUsage {usage} is not compatible with KeySpec {spec}"),
        ));
    }
    let given = body.str("Policy")?;
    let bypass = body
        .bool("BypassPolicyLockoutSafetyCheck")?
        .unwrap_or(false);
    let policy = given.map_or_else(
        || policy_check::default_policy(&scope.account),
        str::to_string,
    );
    let description = body.str("Description")?.unwrap_or_default();
    let key = new_key(scope, policy, spec, usage, description);
    if let Some(p) = given {
        check_new_policy(p, &key.arn, ctx, bypass)?;
    }
    let meta = metadata(&key);
    world.scope_mut(scope).keys.insert(key.id.clone(), key);
    Ok(json!({ "KeyMetadata": meta }))
}

fn create_alias(body: &Body, scope: &Scope, world: &mut World) -> OpResult {
    let name = body.required_str("AliasName", "ValidationException")?;
    let valid = name.len() > 6
        && name.len() <= 256
        && name.starts_with("alias/")
        && name[6..]
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'/' | b'_' | b'-'));
    if !valid {
        return Err(ApiError::client(
            "ValidationException",
            format!("Alias name {name} must begin with alias/ and contain only [a-zA-Z0-9/_-]"),
        ));
    }
    if name.starts_with("alias/aws/") {
        return Err(ApiError::client(
            "InvalidAliasNameException",
            "Alias names beginning with alias/aws/ are reserved",
        ));
    }
    let target = body.required_str("TargetKeyId", "ValidationException")?;
    let (key_scope, key_id) = match world.lookup_key(scope, target, false) {
        KeyLookup::Found(s, id) => (s, id),
        KeyLookup::Missing(why) => return Err(not_found(why)),
    };
    if key_scope != *scope {
        return Err(ApiError::client(
            "ValidationException",
            "An alias must be in the same account and region as its key",
        ));
    }
    let region = world.scope_mut(scope);
    if region.aliases.contains_key(name) {
        return Err(ApiError::client(
            "AlreadyExistsException",
            format!(
                "An alias with the name arn:aws:kms:{}:{}:{name} already exists",
                scope.region, scope.account
            ),
        ));
    }
    region.aliases.insert(
        name.to_string(),
        Alias {
            name: name.to_string(),
            arn: format!("arn:aws:kms:{}:{}:{name}", scope.region, scope.account),
            target_key_id: key_id,
            created: SystemTime::now(),
        },
    );
    Ok(json!({}))
}

fn list_aliases(body: &Body, scope: &Scope, world: &mut World) -> OpResult {
    let filter = match body.str("KeyId")? {
        None => None,
        Some(_) => Some(lookup(body, scope, world, false)?.1),
    };
    let aliases: Vec<Value> = world
        .scope_mut(scope)
        .aliases
        .values()
        .filter(|a| filter.as_ref().is_none_or(|id| *id == a.target_key_id))
        .map(|a| {
            json!({
                "AliasName": a.name,
                "AliasArn": a.arn,
                "TargetKeyId": a.target_key_id,
                "CreationDate": epoch_seconds(a.created),
                "LastUpdatedDate": epoch_seconds(a.created),
            })
        })
        .collect();
    Ok(json!({ "Aliases": aliases, "Truncated": false }))
}

fn put_key_policy(body: &Body, ctx: &Ctx, world: &mut World) -> OpResult {
    if let Some(theirs) = &ctx.interleave
        && let Ok(key) = resolve_mut(body, &ctx.scope, world)
    {
        // A person's write lands first, whatever becomes of ours (it was taken for this call).
        key.write_policy(theirs.clone(), ctx.propagation);
    }
    check_policy_name(body)?;
    let policy = body.required_str("Policy", "ValidationException")?;
    check_policy_characters(policy)?;
    let bypass = body
        .bool("BypassPolicyLockoutSafetyCheck")?
        .unwrap_or(false);
    let key = resolve_mut(body, &ctx.scope, world)?;
    same_account(key, &ctx.caller, "kms:PutKeyPolicy")?;
    check_new_policy(policy, &key.arn, ctx, bypass)?;
    key.write_policy(policy.to_string(), ctx.propagation);
    Ok(json!({}))
}

/// A person's write of `policy` to the key the request names (the interleave hook): no
/// checks, as `put_key_policy_direct`; nothing when the key does not exist.
pub fn write_as_person(body: &Body, ctx: &Ctx, world: &mut World, policy: String) {
    if let Ok(key) = resolve_mut(body, &ctx.scope, world) {
        key.write_policy(policy, ctx.propagation);
    }
}

/// The key id a request's `KeyId` names (no aliases), if it exists: what the interleave
/// hook is scoped by.
pub fn key_id_of(body: &Body, scope: &Scope, world: &World) -> Option<String> {
    lookup(body, scope, world, false).ok().map(|(_, id)| id)
}

fn set_enabled(body: &Body, scope: &Scope, world: &mut World, enabled: bool) -> OpResult {
    let key = resolve_mut(body, scope, world)?;
    if key.state == KeyState::PendingDeletion {
        return Err(invalid_state(format!("{} is pending deletion.", key.arn)));
    }
    key.state = if enabled {
        KeyState::Enabled
    } else {
        KeyState::Disabled
    };
    Ok(json!({}))
}

fn schedule_deletion(body: &Body, scope: &Scope, world: &mut World) -> OpResult {
    let days = body.i64("PendingWindowInDays")?.unwrap_or(30);
    if !(7..=30).contains(&days) {
        return Err(ApiError::client(
            "ValidationException",
            format!("PendingWindowInDays {days} must be between 7 and 30"),
        ));
    }
    let key = resolve_mut(body, scope, world)?;
    if key.state == KeyState::PendingDeletion {
        return Err(invalid_state(format!("{} is pending deletion.", key.arn)));
    }
    schedule(key, days);
    Ok(json!({
        "KeyId": key.arn,
        "DeletionDate": key.deletion_date.map(epoch_seconds),
        "KeyState": "PendingDeletion",
        "PendingWindowInDays": days,
    }))
}

pub fn schedule(key: &mut Key, days: i64) {
    key.state = KeyState::PendingDeletion;
    key.pending_window_days = Some(days);
    key.deletion_date = Some(SystemTime::now() + Duration::from_secs(days as u64 * 86_400));
}

fn cancel_deletion(body: &Body, scope: &Scope, world: &mut World) -> OpResult {
    let key = resolve_mut(body, scope, world)?;
    if key.state != KeyState::PendingDeletion {
        return Err(invalid_state(format!(
            "{} is not pending deletion.",
            key.arn
        )));
    }
    // KMS leaves a key whose deletion was cancelled disabled.
    key.state = KeyState::Disabled;
    key.deletion_date = None;
    key.pending_window_days = None;
    Ok(json!({ "KeyId": key.arn }))
}

/// `KeyMetadata` as KMS sends it.
pub fn metadata(key: &Key) -> Value {
    let mut m = json!({
        "AWSAccountId": key.account,
        "KeyId": key.id,
        "Arn": key.arn,
        "CreationDate": epoch_seconds(key.created),
        "Enabled": key.state == KeyState::Enabled,
        "Description": key.description,
        "KeyUsage": key.usage,
        "KeyState": key.state.as_wire(),
        "Origin": "AWS_KMS",
        "KeyManager": "CUSTOMER",
        "CustomerMasterKeySpec": key.spec,
        "KeySpec": key.spec,
        "MultiRegion": false,
    });
    if key.spec == "SYMMETRIC_DEFAULT" {
        m["EncryptionAlgorithms"] = json!(["SYMMETRIC_DEFAULT"]);
    }
    if let Some(d) = key.deletion_date {
        m["DeletionDate"] = epoch_seconds(d).into();
    }
    if let Some(days) = key.pending_window_days {
        m["PendingDeletionWindowInDays"] = days.into();
    }
    m
}
