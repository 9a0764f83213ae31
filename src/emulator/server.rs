//! The HTTP side: one axum router serving the three services on `POST /` (MSF and KMS routed
//! on the `x-amz-target` header, STS on the awsQuery `Action` of a form body; the region from
//! the SigV4 scope) and the admin API under `/_emulator/` (see `admin.rs`).
//!
//! Every AWS call goes through the same steps: identify (operation, target, caller and its
//! account: credentials AssumeRole issued act as the role's session in its account, see
//! `sts.rs`), refuse expired credentials, inject faults, apply quotas, handle, then count and
//! log the outcome.

use std::sync::Arc;
use std::time::{Instant, SystemTime};

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use serde_json::Value;

use super::calls::{CallInfo, access_key_from_authorization, now_ms};
use super::faults::{Decision, Injected};
use super::identity::{self, Identity};
use super::quotas::kms_rate;
use super::state::Scope;
use super::sts::{self, Resolved};
use super::wire::{ApiError, Body, region_from_authorization};
use super::{Inner, admin, kms, msf};

pub fn router(inner: Arc<Inner>) -> Router {
    admin::routes(Router::new().route("/", post(aws))).with_state(inner)
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Service {
    Msf,
    Kms,
    Sts,
}

fn request_id() -> String {
    uuid::Uuid::new_v4().to_string()
}

fn json_response(status: u16, body: &Value, request_id: &str) -> Response {
    let status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let mut resp = (status, body.to_string()).into_response();
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/x-amz-json-1.1"),
    );
    if let Ok(id) = HeaderValue::from_str(request_id) {
        h.insert("x-amzn-requestid", id);
    }
    resp
}

fn xml_response(status: u16, body: String) -> Response {
    let status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let mut resp = (status, body).into_response();
    resp.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static("text/xml"));
    resp
}

/// A service's answer: awsJson for MSF and KMS, awsQuery XML for STS.
enum Reply {
    Json(Value),
    Xml(String),
}

/// Who a request acts as, and in which account.
struct Caller {
    identity: Identity,
    account: String,
    /// Signed with credentials AssumeRole issued (a further AssumeRole is role chaining).
    session: bool,
    /// Those credentials have expired.
    expired: bool,
}

/// Credentials AssumeRole issued act in the role's account as its session; any other access
/// key id (or none) acts in the first account as the configured caller.
fn identify(inner: &Inner, access_key_id: &str) -> Caller {
    let session = |identity: Identity, expired: bool| Caller {
        account: identity.account.clone(),
        identity,
        session: true,
        expired,
    };
    match inner.lock_sts().resolve(access_key_id, SystemTime::now()) {
        Resolved::Plain => Caller {
            identity: inner.caller(),
            account: inner.account.clone(),
            session: false,
            expired: false,
        },
        Resolved::Session(id) => session(id, false),
        Resolved::Expired(id) => session(id, true),
    }
}

/// The service and operation a request asks for.
fn route(headers: &HeaderMap, body: &[u8]) -> Result<(Service, String), ApiError> {
    let target = headers
        .get("x-amz-target")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    if let Some(op) = target.strip_prefix(msf::TARGET_PREFIX) {
        return Ok((Service::Msf, op.to_string()));
    }
    if let Some(op) = target.strip_prefix(kms::TARGET_PREFIX) {
        return Ok((Service::Kms, op.to_string()));
    }
    if target.is_empty()
        && let Some(action) = identity::query_action(body)
    {
        return Ok((Service::Sts, action));
    }
    Err(ApiError::client(
        "UnknownOperationException",
        format!("unknown x-amz-target {target:?}"),
    ))
}

/// What the request names: an application, a key or a role, as sent.
fn target_of(body: &Body) -> Option<String> {
    ["ApplicationName", "KeyId", "TargetKeyId", "RoleArn"]
        .into_iter()
        .find_map(|f| body.str(f).ok().flatten())
        .map(str::to_string)
}

async fn aws(State(inner): State<Arc<Inner>>, headers: HeaderMap, body: Bytes) -> Response {
    let auth = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    let request_id = request_id();
    let access_key_id = access_key_from_authorization(auth).unwrap_or_default();
    let caller = identify(&inner, access_key_id);
    let mut info = CallInfo {
        received_ms: now_ms(),
        operation: "Unknown".into(),
        region: region_from_authorization(auth)
            .unwrap_or(&inner.default_region)
            .to_string(),
        account: caller.account.clone(),
        access_key_id: access_key_id.to_string(),
        caller_arn: caller.identity.arn.clone(),
        target: None,
    };
    let (service, op) = match route(&headers, &body) {
        Ok(r) => r,
        Err(e) => {
            inner.record(info, e.code);
            return json_response(e.status, &e.body(), &request_id);
        }
    };
    info.operation = op.clone();
    let parsed = match service {
        Service::Sts => Ok(Body::from_form(&body)),
        _ => Body::parse(&body),
    };
    info.target = parsed.as_ref().ok().and_then(target_of);
    let scope = Scope {
        account: caller.account.clone(),
        region: info.region.clone(),
    };
    // The front door refuses expired credentials before any service sees the request.
    let result = if caller.expired {
        Err(sts::expired_token())
    } else {
        let req = Request {
            service,
            op: &op,
            scope: &scope,
            caller: &caller,
            info: &info,
            request_id: &request_id,
        };
        call(&inner, &req, parsed).await
    };
    let outcome = match &result {
        Ok(_) => "ok",
        Err(e) => e.code,
    };
    inner.record(info, outcome);
    respond(service, result, &request_id)
}

fn respond(service: Service, result: Result<Reply, ApiError>, request_id: &str) -> Response {
    match (service, result) {
        (_, Ok(Reply::Xml(xml))) => xml_response(200, xml),
        (_, Ok(Reply::Json(v))) => json_response(200, &v, request_id),
        (Service::Sts, Err(e)) => {
            let (status, xml) = sts::answer(Err(e), request_id);
            xml_response(status, xml)
        }
        (_, Err(e)) => json_response(e.status, &e.body(), request_id),
    }
}

/// One request, identified.
struct Request<'a> {
    service: Service,
    op: &'a str,
    scope: &'a Scope,
    caller: &'a Caller,
    info: &'a CallInfo,
    request_id: &'a str,
}

/// Faults, quotas, then the service's handler.
async fn call(
    inner: &Inner,
    req: &Request<'_>,
    body: Result<Body, ApiError>,
) -> Result<Reply, ApiError> {
    let (service, op, scope) = (req.service, req.op, req.scope);
    let caller = &req.caller.identity;
    let decision = inner.lock_faults().decide(op, req.info.target.as_deref());
    if !decision.latency.is_zero() {
        tokio::time::sleep(decision.latency).await;
    }
    // Unsigned requests are scripts seeding state (every SDK signs): no quota for them.
    let signed = !req.info.access_key_id.is_empty();
    if signed && !within_quota(inner, service, op, scope) {
        return Err(throttled());
    }
    match decision.injected {
        Injected::Deny => return Err(access_denied(service, op, scope, caller)),
        Injected::InvalidCredentials => return Err(invalid_credentials(service)),
        Injected::Throttle => return Err(throttled()),
        Injected::ServerError => return Err(server_error(service)),
        Injected::None => {}
    }
    let body = body?;
    match service {
        Service::Msf => handle_msf(inner, op, &body, scope, caller, &decision).map(Reply::Json),
        Service::Kms => handle_kms(inner, op, &body, scope, caller).map(Reply::Json),
        Service::Sts => handle_sts(inner, op, &body, req.caller, req.info, req.request_id),
    }
}

fn handle_sts(
    inner: &Inner,
    op: &str,
    body: &Body,
    caller: &Caller,
    info: &CallInfo,
    request_id: &str,
) -> Result<Reply, ApiError> {
    match op {
        "GetCallerIdentity" => Ok(Reply::Xml(identity::get_caller_identity_xml(
            &caller.identity,
            request_id,
        ))),
        "AssumeRole" => {
            // Copied first: locks are taken one at a time, never nested.
            let known = inner.lock_principals().clone();
            let min_seconds = inner.lock_settings().min_session_seconds;
            let ctx = sts::AssumeCtx {
                caller: &caller.identity,
                chained: caller.session,
                source_access_key_id: &info.access_key_id,
                known: &known,
                accounts: &inner.accounts,
                min_seconds,
                now: SystemTime::now(),
            };
            sts::assume_role(body, &ctx, &mut inner.lock_sts(), request_id).map(Reply::Xml)
        }
        _ => Err(ApiError::client(
            "InvalidAction",
            format!("Could not find operation {op} for version 2011-06-15"),
        )),
    }
}

fn handle_msf(
    inner: &Inner,
    op: &str,
    body: &Body,
    scope: &Scope,
    caller: &Identity,
    decision: &Decision,
) -> Result<Value, ApiError> {
    let ctx = msf::Ctx {
        scope: scope.clone(),
        update_delay: inner.update_delay(),
        caller: caller.clone(),
        rollback: decision.rollback,
        now: Instant::now(),
    };
    msf::handle(op, body, &ctx, &mut inner.lock_world())
}

fn handle_kms(
    inner: &Inner,
    op: &str,
    body: &Body,
    scope: &Scope,
    caller: &Identity,
) -> Result<Value, ApiError> {
    let settings = inner.settings();
    let mut ctx = kms::Ctx {
        scope: scope.clone(),
        caller: caller.clone(),
        propagation: settings.policy_propagation,
        known_principals: None,
        reject_incomplete: settings.reject_incomplete_statements,
        interleave: None,
        now: Instant::now(),
    };
    if settings.strict_principals && matches!(op, "PutKeyPolicy" | "CreateKey") {
        ctx.known_principals = Some(inner.lock_principals().clone());
    }
    // A person's write before or after this call (interleave hook).
    let mut after = None;
    if matches!(op, "PutKeyPolicy" | "GetKeyPolicy") {
        // Locks are taken one at a time (world, then faults), never nested.
        let key_id = kms::key_id_of(body, scope, &inner.lock_world());
        if let Some(i) = key_id.and_then(|id| inner.lock_faults().take_interleave(op, &id)) {
            let text = match i.policy {
                Value::String(s) => s,
                other => other.to_string(),
            };
            if i.after {
                after = Some(text);
            } else {
                ctx.interleave = Some(text);
            }
        }
    }
    let mut world = inner.lock_world();
    let result = kms::handle(op, body, &ctx, &mut world);
    if let Some(theirs) = after {
        kms::write_as_person(body, &ctx, &mut world, theirs);
    }
    result
}

/// Takes a token from the operation's bucket when quotas are on.
fn within_quota(inner: &Inner, service: Service, op: &str, scope: &Scope) -> bool {
    let Some(quotas) = inner.lock_settings().quotas else {
        return true;
    };
    let rate = match service {
        Service::Kms => kms_rate(op),
        Service::Msf => quotas.msf_per_second,
        // STS's quotas are far above what a controller calls.
        Service::Sts => return true,
    };
    inner
        .lock_buckets()
        .take(&scope.account, &scope.region, op, rate, Instant::now())
}

/// Both services answer a rate above quota with `ThrottlingException` (HTTP 400), which the
/// SDK's retry classifier treats as throttling.
fn throttled() -> ApiError {
    ApiError::client("ThrottlingException", "Rate exceeded")
}

fn server_error(service: Service) -> ApiError {
    match service {
        Service::Kms => ApiError {
            status: 500,
            code: "KMSInternalException",
            message: "The request was rejected because an internal exception occurred (injected)"
                .into(),
        },
        Service::Msf | Service::Sts => ApiError {
            status: 503,
            code: "ServiceUnavailable",
            message: "Service is unavailable (injected)".into(),
        },
    }
}

/// What AWS answers for an access key it does not know (the same words in all three).
fn invalid_credentials(service: Service) -> ApiError {
    let message = "The security token included in the request is invalid. (injected)".into();
    match service {
        Service::Sts => ApiError {
            status: 403,
            code: "InvalidClientTokenId",
            message,
        },
        Service::Msf | Service::Kms => ApiError {
            status: 400,
            code: "UnrecognizedClientException",
            message,
        },
    }
}

fn access_denied(service: Service, op: &str, scope: &Scope, caller: &Identity) -> ApiError {
    let action = match service {
        Service::Kms => format!("kms:{op}"),
        Service::Msf => format!("kinesisanalytics:{op}"),
        Service::Sts => format!("sts:{op}"),
    };
    ApiError::client(
        "AccessDeniedException",
        format!(
            "User: {} is not authorized to perform: {action} in region {} (injected)",
            caller.arn, scope.region
        ),
    )
}
