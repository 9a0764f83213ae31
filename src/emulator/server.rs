//! The HTTP side: one axum router serving both services on `POST /` (routed on the
//! `x-amz-target` header, region from the SigV4 scope) and the admin API under `/_emulator/`.

use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde_json::{Value, json};

use super::faults::{Fault, Injected};
use super::state::Scope;
use super::wire::{ApiError, Body, region_from_authorization};
use super::{Inner, kms, msf};

pub fn router(inner: Arc<Inner>) -> Router {
    Router::new()
        .route("/", post(aws))
        .route("/_emulator/health", get(|| async { "ok" }))
        .route("/_emulator/counts", get(counts).delete(reset_counts))
        .route("/_emulator/faults", get(faults).delete(clear_faults))
        .route(
            "/_emulator/faults/{op}",
            axum::routing::put(set_fault).post(set_fault),
        )
        .route("/_emulator/state", get(state))
        .with_state(inner)
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Service {
    Msf,
    Kms,
}

fn json_response(status: u16, body: &Value) -> Response {
    let status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let mut resp = (status, body.to_string()).into_response();
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/x-amz-json-1.1"),
    );
    if let Ok(id) = HeaderValue::from_str(&uuid::Uuid::new_v4().to_string()) {
        h.insert("x-amzn-requestid", id);
    }
    resp
}

async fn aws(State(inner): State<Arc<Inner>>, headers: HeaderMap, body: Bytes) -> Response {
    let target = headers
        .get("x-amz-target")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    let (service, op) = if let Some(op) = target.strip_prefix(msf::TARGET_PREFIX) {
        (Service::Msf, op)
    } else if let Some(op) = target.strip_prefix(kms::TARGET_PREFIX) {
        (Service::Kms, op)
    } else {
        let e = ApiError::client(
            "UnknownOperationException",
            format!("unknown x-amz-target {target:?}"),
        );
        inner.record("Unknown", e.code);
        return json_response(e.status, &e.body());
    };
    let region = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(region_from_authorization)
        .unwrap_or(&inner.default_region)
        .to_string();
    let scope = Scope {
        account: inner.account.clone(),
        region,
    };

    let (latency, injected) = inner.lock_faults().decide(op);
    if !latency.is_zero() {
        tokio::time::sleep(latency).await;
    }
    let result = match injected {
        Injected::Deny => Err(access_denied(service, op, &scope)),
        Injected::Throttle => Err(ApiError::client("ThrottlingException", "Rate exceeded")),
        Injected::ServerError => Err(server_error(service)),
        Injected::None => Body::parse(&body).and_then(|b| {
            let mut world = inner.lock_world();
            match service {
                Service::Msf => {
                    let ctx = msf::Ctx {
                        scope: scope.clone(),
                        update_delay: inner.update_delay(),
                    };
                    msf::handle(op, &b, &ctx, &mut world)
                }
                Service::Kms => kms::handle(op, &b, &scope, &mut world),
            }
        }),
    };
    match result {
        Ok(v) => {
            inner.record(op, "ok");
            json_response(200, &v)
        }
        Err(e) => {
            inner.record(op, e.code);
            json_response(e.status, &e.body())
        }
    }
}

fn server_error(service: Service) -> ApiError {
    match service {
        Service::Kms => ApiError {
            status: 500,
            code: "KMSInternalException",
            message: "The request was rejected because an internal exception occurred (injected)"
                .into(),
        },
        Service::Msf => ApiError {
            status: 503,
            code: "ServiceUnavailable",
            message: "Service is unavailable (injected)".into(),
        },
    }
}

fn access_denied(service: Service, op: &str, scope: &Scope) -> ApiError {
    let action = match service {
        Service::Kms => format!("kms:{op}"),
        Service::Msf => format!("kinesisanalytics:{op}"),
    };
    ApiError::client(
        "AccessDeniedException",
        format!(
            "User: arn:aws:sts::{}:assumed-role/msf-cmk-controller/session is not authorized to perform: {action} in region {} (injected)",
            scope.account, scope.region
        ),
    )
}

fn admin_json(v: Value) -> Response {
    let mut r = v.to_string().into_response();
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    r
}

async fn counts(State(inner): State<Arc<Inner>>) -> Response {
    let c = inner.lock_counts();
    admin_json(json!({ "calls": c.calls, "outcomes": c.outcomes }))
}

async fn reset_counts(State(inner): State<Arc<Inner>>) -> Response {
    *inner.lock_counts() = Default::default();
    admin_json(json!({}))
}

async fn faults(State(inner): State<Arc<Inner>>) -> Response {
    admin_json(json!(inner.lock_faults().table()))
}

async fn clear_faults(State(inner): State<Arc<Inner>>) -> Response {
    inner.lock_faults().clear();
    admin_json(json!({}))
}

async fn set_fault(
    State(inner): State<Arc<Inner>>,
    Path(op): Path<String>,
    body: Bytes,
) -> Response {
    match serde_json::from_slice::<Fault>(&body) {
        Ok(f) if (0.0..=1.0).contains(&f.throttle_rate) && (0.0..=1.0).contains(&f.error_rate) => {
            inner.lock_faults().set(&op, f);
            admin_json(json!(inner.lock_faults().table()))
        }
        Ok(_) => (StatusCode::BAD_REQUEST, "rates must be between 0 and 1\n").into_response(),
        Err(e) => (StatusCode::BAD_REQUEST, format!("invalid fault: {e}\n")).into_response(),
    }
}

async fn state(State(inner): State<Arc<Inner>>) -> Response {
    admin_json(inner.state_json())
}
