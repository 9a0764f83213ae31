//! ListApplicationOperations and DescribeApplicationOperation: the history of the
//! operations MSF ran on an application (UpdateApplication, StartApplication,
//! StopApplication, and the RollbackApplication an automatic rollback runs), newest first.

use serde_json::{Value, json};

use super::msf::{Ctx, name_of, not_found};
use super::state::{Operation, World};
use super::wire::{ApiError, Body, OpResult, epoch_seconds};

/// MSF's page size limit for ListApplicationOperations.
const MAX_LIMIT: i64 = 50;

fn invalid_argument(message: impl Into<String>) -> ApiError {
    ApiError::client("InvalidArgumentException", message)
}

pub fn list(body: &Body, ctx: &Ctx, world: &mut World) -> OpResult {
    let name = name_of(body)?;
    let limit = body.i64("Limit")?.unwrap_or(MAX_LIMIT);
    if !(1..=MAX_LIMIT).contains(&limit) {
        return Err(invalid_argument(format!(
            "1 validation error detected: Value '{limit}' at 'limit' failed to satisfy constraint: Member must have value between 1 and {MAX_LIMIT}"
        )));
    }
    // The token is the number of matching entries already returned.
    let skip = match body.str("NextToken")? {
        None => 0,
        Some(t) => t
            .parse::<usize>()
            .map_err(|_| invalid_argument(format!("Invalid NextToken {t}")))?,
    };
    let operation = body.str("Operation")?;
    let status = body.str("OperationStatus")?;
    let app = world
        .app_mut(&ctx.scope, name)
        .ok_or_else(|| not_found(name))?;
    let matching: Vec<&Operation> = app
        .operations
        .iter()
        .rev()
        .filter(|o| operation.is_none_or(|w| o.operation == w))
        .filter(|o| status.is_none_or(|w| o.status.as_wire() == w))
        .collect();
    let page: Vec<Value> = matching
        .iter()
        .skip(skip)
        .take(limit as usize)
        .map(|o| summary(o))
        .collect();
    let mut out = json!({ "ApplicationOperationInfoList": page });
    let next = skip + page.len();
    if next < matching.len() {
        out["NextToken"] = next.to_string().into();
    }
    Ok(out)
}

pub fn describe(body: &Body, ctx: &Ctx, world: &mut World) -> OpResult {
    let name = name_of(body)?;
    let id = body.required_str("OperationId", "InvalidArgumentException")?;
    let app = world
        .app_mut(&ctx.scope, name)
        .ok_or_else(|| not_found(name))?;
    let op = app.operations.iter().find(|o| o.id == id).ok_or_else(|| {
        ApiError::client(
            "ResourceNotFoundException",
            format!("Operation {id} is not found for application {name}"),
        )
    })?;
    Ok(json!({ "ApplicationOperationInfoDetails": details(op) }))
}

/// `ApplicationOperationInfo`.
fn summary(op: &Operation) -> Value {
    let mut v = json!({
        "Operation": op.operation,
        "OperationId": op.id,
        "StartTime": epoch_seconds(op.start),
        "OperationStatus": op.status.as_wire(),
    });
    if let Some(end) = op.end {
        v["EndTime"] = epoch_seconds(end).into();
    }
    v
}

/// `ApplicationOperationInfoDetails`.
fn details(op: &Operation) -> Value {
    let mut v = json!({
        "Operation": op.operation,
        "StartTime": epoch_seconds(op.start),
        "OperationStatus": op.status.as_wire(),
    });
    if let Some(end) = op.end {
        v["EndTime"] = epoch_seconds(end).into();
    }
    if let Some((from, to)) = op.version_change {
        v["ApplicationVersionChangeDetails"] = json!({
            "ApplicationVersionUpdatedFrom": from,
            "ApplicationVersionUpdatedTo": to,
        });
    }
    if let Some(f) = &op.failure {
        let mut failure = json!({ "ErrorInfo": { "ErrorString": f.error } });
        if let Some(id) = &f.rollback_operation_id {
            failure["RollbackOperationId"] = id.clone().into();
        }
        v["OperationFailureDetails"] = failure;
    }
    v
}
