//! The MSF (`kinesisanalyticsv2`) operations, on the emulated world. Faithful where the
//! controller depends on it: version ids and conditional tokens, status transitions, and the
//! checks MSF makes before it switches an application to a customer managed key.

use std::time::{Duration, SystemTime};

use serde_json::{Value, json};

use super::policy_check;
use super::state::{App, KeyLookup, Scope, World, new_app};
use super::wire::{ApiError, Body, OpResult, epoch_seconds};
use crate::domain::{ApplicationStatus, AppliedEncryption, AppliedKeyType, KeyState};

pub const TARGET_PREFIX: &str = "KinesisAnalytics_20180523.";

pub const OPERATIONS: &[&str] = &[
    "CreateApplication",
    "DescribeApplication",
    "UpdateApplication",
    "ListApplications",
    "DeleteApplication",
    "StartApplication",
    "StopApplication",
];

/// Per-request context.
pub struct Ctx {
    pub scope: Scope,
    pub update_delay: Duration,
}

fn invalid_argument(message: impl Into<String>) -> ApiError {
    ApiError::client("InvalidArgumentException", message)
}

fn invalid_request(message: impl Into<String>) -> ApiError {
    ApiError::client("InvalidRequestException", message)
}

fn not_found(name: &str) -> ApiError {
    ApiError::client(
        "ResourceNotFoundException",
        format!("Application {name} is not found"),
    )
}

pub fn handle(op: &str, body: &Body, ctx: &Ctx, world: &mut World) -> OpResult {
    match op {
        "CreateApplication" => create(body, ctx, world),
        "DescribeApplication" => describe(body, ctx, world),
        "UpdateApplication" => update(body, ctx, world),
        "ListApplications" => list(body, ctx, world),
        "DeleteApplication" => delete(body, ctx, world),
        "StartApplication" => start_stop(body, ctx, world, true),
        "StopApplication" => start_stop(body, ctx, world, false),
        _ => Err(ApiError::client(
            "UnknownOperationException",
            format!("unknown operation {op}"),
        )),
    }
}

fn name_of(body: &Body) -> Result<&str, ApiError> {
    let name = body.required_str("ApplicationName", "InvalidArgumentException")?;
    if !crate::arn::is_valid_application_name(name) {
        return Err(invalid_argument(format!(
            "1 validation error detected: Value '{name}' at 'applicationName' failed to satisfy constraint: Member must satisfy regular expression pattern: [a-zA-Z0-9_.-]+"
        )));
    }
    Ok(name)
}

fn create(body: &Body, ctx: &Ctx, world: &mut World) -> OpResult {
    let name = name_of(body)?;
    let runtime = body.required_str("RuntimeEnvironment", "InvalidArgumentException")?;
    let role = body.required_str("ServiceExecutionRole", "InvalidArgumentException")?;
    let requested = body
        .get("ApplicationConfiguration")
        .and_then(|c| c.get("ApplicationEncryptionConfiguration"));
    let encryption = match requested {
        None => AppliedEncryption::default(),
        Some(e) => {
            let key_type = e.get("KeyType").and_then(Value::as_str).unwrap_or_default();
            let key_id = e.get("KeyId").and_then(Value::as_str).map(str::to_string);
            check_encryption(world, ctx, runtime, key_type, key_id.as_deref())?
        }
    };
    let region = world.scope_mut(&ctx.scope);
    if region.apps.contains_key(name) {
        return Err(ApiError::client(
            "ResourceInUseException",
            format!("Application {name} already exists"),
        ));
    }
    let mut app = new_app(&ctx.scope, name, runtime, ApplicationStatus::Ready);
    app.service_execution_role = role.to_string();
    app.encryption = encryption;
    let detail = detail(&app);
    region.apps.insert(name.to_string(), app);
    Ok(json!({ "ApplicationDetail": detail }))
}

fn describe(body: &Body, ctx: &Ctx, world: &mut World) -> OpResult {
    let name = name_of(body)?;
    let app = world
        .app_mut(&ctx.scope, name)
        .ok_or_else(|| not_found(name))?;
    Ok(json!({ "ApplicationDetail": detail(app) }))
}

fn update(body: &Body, ctx: &Ctx, world: &mut World) -> OpResult {
    let name = name_of(body)?;
    let token = body.str("ConditionalToken")?;
    let version = body.i64("CurrentApplicationVersionId")?;
    let enc_update = body
        .get("ApplicationConfigurationUpdate")
        .and_then(|c| c.get("ApplicationEncryptionConfigurationUpdate"))
        .cloned();

    // Read-only checks first, so that a refused update changes nothing.
    let app = world
        .app_mut(&ctx.scope, name)
        .ok_or_else(|| not_found(name))?;
    match (token, version) {
        (Some(_), Some(_)) => {
            return Err(invalid_argument(
                "Provide either CurrentApplicationVersionId or ConditionalToken, not both",
            ));
        }
        (None, None) => {
            return Err(invalid_argument(
                "Either CurrentApplicationVersionId or ConditionalToken must be provided",
            ));
        }
        (Some(t), None) if t != app.conditional_token => {
            return Err(ApiError::client(
                "ConcurrentModificationException",
                format!(
                    "Conditional token {t} does not match the application's current token; the application was modified"
                ),
            ));
        }
        (None, Some(v)) if v != app.version_id => {
            return Err(ApiError::client(
                "ConcurrentModificationException",
                format!(
                    "Provided application version id ({v}) does not match the current application version id ({})",
                    app.version_id
                ),
            ));
        }
        _ => {}
    }
    if !app.status.is_updatable() {
        return Err(ApiError::client(
            "ResourceInUseException",
            format!(
                "Application {name} is in {} status. Application must be in READY or RUNNING status to be updated",
                app.status.as_wire()
            ),
        ));
    }
    let runtime = app.runtime.clone();
    let new_encryption = match &enc_update {
        None => None,
        Some(e) => {
            let key_type = e
                .get("KeyTypeUpdate")
                .and_then(Value::as_str)
                .unwrap_or_default();
            let key_id = e.get("KeyIdUpdate").and_then(Value::as_str);
            Some(check_encryption(world, ctx, &runtime, key_type, key_id)?)
        }
    };

    let delay = ctx.update_delay;
    let app = world
        .app_mut(&ctx.scope, name)
        .ok_or_else(|| not_found(name))?;
    if let Some(e) = new_encryption {
        app.encryption = e;
    }
    app.bump_version();
    // An update restarts a running application; a READY one stays READY once done.
    let settled = app.status.clone();
    app.begin(ApplicationStatus::Updating, settled, delay);
    Ok(json!({
        "ApplicationDetail": detail(app),
        "OperationId": uuid::Uuid::new_v4().simple().to_string(),
    }))
}

/// MSF's validation of a requested encryption configuration.
fn check_encryption(
    world: &World,
    ctx: &Ctx,
    runtime: &str,
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
            if !runtime_supports_cmk(runtime) {
                return Err(invalid_argument(format!(
                    "Customer managed keys are supported only for Apache Flink 1.20 and later; the application runs {runtime}"
                )));
            }
            check_key(world, ctx, key_id)?;
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
fn runtime_supports_cmk(runtime: &str) -> bool {
    let Some(version) = runtime.strip_prefix("FLINK-") else {
        return false;
    };
    let mut parts = version.split('_').map(|p| p.parse::<u32>().ok());
    match (parts.next().flatten(), parts.next().flatten()) {
        (Some(major), Some(minor)) => (major, minor) >= (1, 20),
        _ => false,
    }
}

fn check_key(world: &World, ctx: &Ctx, key_ref: &str) -> Result<(), ApiError> {
    let (scope, id) = match world.lookup_key(&ctx.scope, key_ref, true) {
        KeyLookup::Found(scope, id) => (scope, id),
        KeyLookup::Missing(why) => {
            return Err(invalid_request(format!(
                "The provided KMS key {key_ref} could not be found or is not accessible: {why}"
            )));
        }
    };
    let key = world.key(&scope, &id).ok_or_else(|| {
        invalid_request(format!("The provided KMS key {key_ref} could not be found"))
    })?;
    if key.account != ctx.scope.account || key.region != ctx.scope.region {
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
    let statements = policy_check::parse(&key.policy).unwrap_or_default();
    let missing = policy_check::missing_msf_principals(&statements);
    if !missing.is_empty() {
        return Err(invalid_request(format!(
            "The key policy of KMS key {} does not grant access to the service principals: {}",
            key.arn,
            missing.join(", ")
        )));
    }
    Ok(())
}

fn list(body: &Body, ctx: &Ctx, world: &mut World) -> OpResult {
    let limit = body.i64("Limit")?.unwrap_or(50).clamp(1, 50) as usize;
    let after = body.str("NextToken")?.map(str::to_string);
    let region = world.scope_mut(&ctx.scope);
    let now = std::time::Instant::now();
    let mut page = Vec::new();
    let mut next = None;
    for app in region.apps.values_mut() {
        if after.as_deref().is_some_and(|a| app.name.as_str() <= a) {
            continue;
        }
        if page.len() == limit {
            next = page
                .last()
                .and_then(|v: &Value| v["ApplicationName"].as_str().map(str::to_string));
            break;
        }
        app.settle(now);
        page.push(json!({
            "ApplicationName": app.name,
            "ApplicationARN": app.arn,
            "ApplicationStatus": app.status.as_wire(),
            "ApplicationVersionId": app.version_id,
            "RuntimeEnvironment": app.runtime,
            "ApplicationMode": "STREAMING",
        }));
    }
    let mut out = json!({ "ApplicationSummaries": page });
    if let Some(n) = next {
        out["NextToken"] = n.into();
    }
    Ok(out)
}

fn delete(body: &Body, ctx: &Ctx, world: &mut World) -> OpResult {
    let name = name_of(body)?;
    let created = body.f64("CreateTimestamp")?;
    let app = world
        .app_mut(&ctx.scope, name)
        .ok_or_else(|| not_found(name))?;
    // MSF refuses a delete whose CreateTimestamp does not match: it guards against deleting a
    // re-created application by mistake.
    if let Some(ts) = created
        && (ts - epoch_seconds(app.created)).abs() >= 1.0
    {
        return Err(invalid_argument(
            "CreateTimestamp does not match the application's creation time",
        ));
    }
    world.scope_mut(&ctx.scope).apps.remove(name);
    Ok(json!({}))
}

fn start_stop(body: &Body, ctx: &Ctx, world: &mut World, start: bool) -> OpResult {
    let name = name_of(body)?;
    let delay = ctx.update_delay;
    let app = world
        .app_mut(&ctx.scope, name)
        .ok_or_else(|| not_found(name))?;
    let (from, via, to) = if start {
        (
            ApplicationStatus::Ready,
            ApplicationStatus::Starting,
            ApplicationStatus::Running,
        )
    } else {
        (
            ApplicationStatus::Running,
            ApplicationStatus::Stopping,
            ApplicationStatus::Ready,
        )
    };
    if app.status != from {
        return Err(ApiError::client(
            "ResourceInUseException",
            format!(
                "Application {name} is in {} status; it must be in {} status",
                app.status.as_wire(),
                from.as_wire()
            ),
        ));
    }
    app.begin(via, to, delay);
    Ok(json!({ "OperationId": uuid::Uuid::new_v4().simple().to_string() }))
}

/// `ApplicationDetail` as MSF sends it (timestamps in epoch seconds).
pub fn detail(app: &App) -> Value {
    let mut enc = json!({ "KeyType": app.encryption.key_type.as_wire() });
    if let Some(k) = &app.encryption.key_id {
        enc["KeyId"] = k.clone().into();
    }
    let ts = |t: SystemTime| epoch_seconds(t);
    json!({
        "ApplicationARN": app.arn,
        "ApplicationName": app.name,
        "RuntimeEnvironment": app.runtime,
        "ServiceExecutionRole": app.service_execution_role,
        "ApplicationStatus": app.status.as_wire(),
        "ApplicationVersionId": app.version_id,
        "CreateTimestamp": ts(app.created),
        "LastUpdateTimestamp": ts(app.last_updated),
        "ApplicationMode": "STREAMING",
        "ConditionalToken": app.conditional_token,
        "ApplicationConfigurationDescription": {
            "ApplicationEncryptionConfigurationDescription": enc,
        },
    })
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
