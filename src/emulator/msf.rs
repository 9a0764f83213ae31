//! The MSF (`kinesisanalyticsv2`) operations, on the emulated world. Faithful where the
//! controller depends on it: version ids and conditional tokens, status transitions,
//! operations and rollbacks (`msf_operations.rs`), and the checks MSF makes before it
//! switches an application to a customer managed key (`msf_keycheck.rs`).

use std::time::{Duration, Instant, SystemTime};

use serde_json::{Value, json};

use super::identity::Identity;
use super::msf_keycheck::{KeyCheck, check_encryption, check_old_key};
use super::msf_operations;
use super::state::{App, AppConfig, Rollback, Scope, World, new_app};
use super::wire::{ApiError, Body, OpResult, epoch_seconds};
use crate::domain::{ApplicationStatus, AppliedEncryption};

pub const TARGET_PREFIX: &str = "KinesisAnalytics_20180523.";

pub const OPERATIONS: &[&str] = &[
    "CreateApplication",
    "DescribeApplication",
    "UpdateApplication",
    "ListApplications",
    "DeleteApplication",
    "StartApplication",
    "StopApplication",
    "ListApplicationOperations",
    "DescribeApplicationOperation",
];

/// Per-request context.
pub struct Ctx {
    pub scope: Scope,
    pub update_delay: Duration,
    pub caller: Identity,
    /// Injected: the update is accepted, then rolled back.
    pub rollback: bool,
    pub now: Instant,
}

impl Ctx {
    fn key_check<'a>(&'a self, application_arn: &'a str, runtime: &'a str) -> KeyCheck<'a> {
        KeyCheck {
            scope: &self.scope,
            caller: &self.caller,
            application_arn,
            runtime,
            now: self.now,
        }
    }
}

fn invalid_argument(message: impl Into<String>) -> ApiError {
    ApiError::client("InvalidArgumentException", message)
}

pub(super) fn not_found(name: &str) -> ApiError {
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
        "ListApplicationOperations" => msf_operations::list(body, ctx, world),
        "DescribeApplicationOperation" => msf_operations::describe(body, ctx, world),
        _ => Err(ApiError::client(
            "UnknownOperationException",
            format!("unknown operation {op}"),
        )),
    }
}

pub(super) fn name_of(body: &Body) -> Result<&str, ApiError> {
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
    let configuration = body.get("ApplicationConfiguration");
    let requested = configuration.and_then(|c| c.get("ApplicationEncryptionConfiguration"));
    let snapshots = configuration
        .and_then(|c| c.get("ApplicationSnapshotConfiguration"))
        .and_then(|c| c.get("SnapshotsEnabled"))
        .and_then(Value::as_bool);
    let arn = new_app(&ctx.scope, name, runtime, ApplicationStatus::Ready).arn;
    let encryption = match requested {
        None => AppliedEncryption::default(),
        Some(e) => {
            let key_type = e.get("KeyType").and_then(Value::as_str).unwrap_or_default();
            let key_id = e.get("KeyId").and_then(Value::as_str).map(str::to_string);
            let check = ctx.key_check(&arn, runtime);
            check_encryption(world, &check, key_type, key_id.as_deref())?
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
    app.config.encryption = encryption;
    app.config.snapshots_enabled = snapshots.unwrap_or(true);
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
    let (runtime, arn, current) = (app.runtime.clone(), app.arn.clone(), app.config.clone());
    let next = requested_config(body, world, ctx, &arn, &runtime, &current)?;

    let app = world
        .app_mut(&ctx.scope, name)
        .ok_or_else(|| not_found(name))?;
    Ok(apply_update(app, next, ctx))
}

/// The configuration an update asks for, validated against the current one.
fn requested_config(
    body: &Body,
    world: &World,
    ctx: &Ctx,
    arn: &str,
    runtime: &str,
    current: &AppConfig,
) -> Result<AppConfig, ApiError> {
    let update = body.get("ApplicationConfigurationUpdate");
    let mut next = current.clone();
    if let Some(e) = update.and_then(|c| c.get("ApplicationEncryptionConfigurationUpdate")) {
        let key_type = e
            .get("KeyTypeUpdate")
            .and_then(Value::as_str)
            .unwrap_or_default();
        let key_id = e.get("KeyIdUpdate").and_then(Value::as_str);
        let check = ctx.key_check(arn, runtime);
        next.encryption = check_encryption(world, &check, key_type, key_id)?;
        check_old_key(world, &check, &current.encryption, &next.encryption)?;
    }
    if let Some(enabled) = update
        .and_then(|c| c.get("ApplicationSnapshotConfigurationUpdate"))
        .and_then(|c| c.get("SnapshotsEnabledUpdate"))
    {
        next.snapshots_enabled = enabled.as_bool().ok_or_else(|| {
            ApiError::client(
                "InvalidArgumentException",
                "SnapshotsEnabledUpdate must be a boolean",
            )
        })?;
    }
    Ok(next)
}

/// Accepts an update: a new version, UPDATING for the update delay, an operation that ends
/// SUCCESSFUL, or FAILED with a rollback when one is injected.
fn apply_update(app: &mut App, next: AppConfig, ctx: &Ctx) -> Value {
    let previous = (app.config.clone(), app.version_id);
    app.config = next;
    app.bump_version();
    app.updated_from = Some(previous.1);
    // A new version supersedes an earlier rollback.
    app.rolled_back_from = None;
    app.rolled_back_to = None;
    let op = app.start_operation("UpdateApplication", Some((previous.1, app.version_id)));
    let rollback = ctx.rollback.then(|| Rollback {
        config: previous.0,
        version_id: previous.1,
        error: format!(
            "The application failed to start with the updated configuration (version {}) and was rolled back to version {} (injected rollback)",
            app.version_id, previous.1
        ),
    });
    // An update restarts a running application; a READY one stays READY once done.
    let settled = app.status.clone();
    app.begin(
        ApplicationStatus::Updating,
        settled,
        ctx.update_delay,
        Some(op.clone()),
        rollback,
    );
    json!({
        "ApplicationDetail": detail(app),
        "OperationId": op,
    })
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
    let op = app.start_operation(
        if start {
            "StartApplication"
        } else {
            "StopApplication"
        },
        None,
    );
    app.begin(via, to, delay, Some(op.clone()), None);
    Ok(json!({ "OperationId": op }))
}

/// `ApplicationDetail` as MSF sends it (timestamps in epoch seconds).
pub fn detail(app: &App) -> Value {
    let encryption = &app.config.encryption;
    let mut enc = json!({ "KeyType": encryption.key_type.as_wire() });
    if let Some(k) = &encryption.key_id {
        enc["KeyId"] = k.clone().into();
    }
    let ts = |t: SystemTime| epoch_seconds(t);
    let mut out = json!({
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
            "ApplicationSnapshotConfigurationDescription": {
                "SnapshotsEnabled": app.config.snapshots_enabled,
            },
        },
    });
    for (field, value) in [
        ("ApplicationVersionUpdatedFrom", app.updated_from),
        ("ApplicationVersionRolledBackFrom", app.rolled_back_from),
        ("ApplicationVersionRolledBackTo", app.rolled_back_to),
    ] {
        if let Some(v) = value {
            out[field] = v.into();
        }
    }
    out
}
