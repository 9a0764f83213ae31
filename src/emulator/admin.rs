//! The admin API under `/_emulator/` (JSON): counts, faults, state, the call log, runtime
//! settings, the principal registry and per-application settings. The list with bodies is
//! in the module docs of `emulator` and in docs/emulator.md.

use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, put};
use serde::Deserialize;
use serde_json::{Value, json};

use super::Inner;
use super::faults::Fault;
use super::settings::SettingsPatch;
use super::state::Scope;

pub fn routes(router: Router<Arc<Inner>>) -> Router<Arc<Inner>> {
    router
        .route("/_emulator/health", get(|| async { "ok" }))
        .route("/_emulator/counts", get(counts).delete(reset_counts))
        .route("/_emulator/faults", get(faults).delete(clear_faults))
        .route("/_emulator/faults/{op}", put(set_fault).post(set_fault))
        .route("/_emulator/state", get(state))
        .route("/_emulator/calls", get(calls).delete(clear_calls))
        .route("/_emulator/config", get(config).put(set_config))
        .route("/_emulator/principals", get(principals).put(add_principals))
        .route(
            "/_emulator/applications/{region}/{name}/snapshots",
            put(set_snapshots),
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

fn bad_request(message: String) -> Response {
    (StatusCode::BAD_REQUEST, format!("{message}\n")).into_response()
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
            if f.rollback && op != "UpdateApplication" && op != "*" {
                return bad_request("rollback applies to UpdateApplication only".into());
            }
            if f.interleave_policy.is_some()
                && !matches!(op.as_str(), "PutKeyPolicy" | "GetKeyPolicy")
            {
                return bad_request(
                    "interleave_policy applies to PutKeyPolicy and GetKeyPolicy only".into(),
                );
            }
            if f.interleave_after && op != "PutKeyPolicy" {
                return bad_request("interleave_after applies to PutKeyPolicy only".into());
            }
            let mut faults = inner.lock_faults();
            faults.set(&op, f);
            admin_json(json!(faults.table()))
        }
        Ok(_) => bad_request("rates must be between 0 and 1".into()),
        Err(e) => bad_request(format!("invalid fault: {e}")),
    }
}

async fn state(State(inner): State<Arc<Inner>>) -> Response {
    admin_json(inner.state_json())
}

#[derive(Deserialize)]
struct CallQuery {
    #[serde(default)]
    since: u64,
    access_key_id: Option<String>,
    operation: Option<String>,
}

async fn calls(State(inner): State<Arc<Inner>>, Query(q): Query<CallQuery>) -> Response {
    let log = inner.lock_calls();
    let calls: Vec<_> = log
        .since(q.since)
        .into_iter()
        .filter(|c| {
            q.access_key_id
                .as_ref()
                .is_none_or(|k| *k == c.access_key_id)
        })
        .filter(|c| q.operation.as_ref().is_none_or(|o| *o == c.operation))
        .collect();
    admin_json(json!({ "calls": calls, "last_seq": log.last_seq() }))
}

async fn clear_calls(State(inner): State<Arc<Inner>>) -> Response {
    inner.lock_calls().clear();
    admin_json(json!({}))
}

async fn config(State(inner): State<Arc<Inner>>) -> Response {
    admin_json(
        inner
            .lock_settings()
            .to_json(&inner.account, &inner.accounts),
    )
}

async fn set_config(State(inner): State<Arc<Inner>>, body: Bytes) -> Response {
    let patch = match serde_json::from_slice::<SettingsPatch>(&body) {
        Ok(p) => p,
        Err(e) => return bad_request(format!("invalid config: {e}")),
    };
    let mut settings = inner.lock_settings();
    match settings.apply(patch) {
        Ok(()) => admin_json(settings.to_json(&inner.account, &inner.accounts)),
        Err(e) => bad_request(e),
    }
}

/// The registry: `{"arns": [...], "external_ids": {ROLE_ARN: ID}}`.
fn registry_json(inner: &Inner) -> Value {
    let arns = inner.lock_principals().clone();
    let external_ids = inner.lock_sts().external_ids().clone();
    json!({ "arns": arns, "external_ids": external_ids })
}

async fn principals(State(inner): State<Arc<Inner>>) -> Response {
    admin_json(registry_json(&inner))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Arns {
    arns: Vec<String>,
    /// The external id AssumeRole must carry for each of these roles.
    external_id: Option<String>,
}

/// Adds principals to the registry (never removes: IAM principals are not deleted here);
/// with `external_id`, AssumeRole of those roles must carry it from now on.
async fn add_principals(State(inner): State<Arc<Inner>>, body: Bytes) -> Response {
    let Arns { arns, external_id } = match serde_json::from_slice::<Arns>(&body) {
        Ok(a) => a,
        Err(e) => {
            return bad_request(format!(
                "expected {{\"arns\": [...], \"external_id\": optional}}: {e}"
            ));
        }
    };
    if let Some(bad) = arns.iter().find(|a| !a.starts_with("arn:")) {
        return bad_request(format!("{bad:?} is not an ARN"));
    }
    if let Err(e) = inner.register_principals(&arns, external_id.as_deref()) {
        return bad_request(e);
    }
    admin_json(registry_json(&inner))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Enabled {
    enabled: bool,
}

#[derive(Deserialize)]
struct AccountQuery {
    account: Option<String>,
}

async fn set_snapshots(
    State(inner): State<Arc<Inner>>,
    Path((region, name)): Path<(String, String)>,
    Query(q): Query<AccountQuery>,
    body: Bytes,
) -> Response {
    let enabled = match serde_json::from_slice::<Enabled>(&body) {
        Ok(e) => e.enabled,
        Err(e) => return bad_request(format!("expected {{\"enabled\": true|false}}: {e}")),
    };
    let scope = Scope {
        account: q.account.unwrap_or_else(|| inner.account.clone()),
        region,
    };
    match inner.set_snapshots_enabled(&scope, &name, enabled) {
        Some(detail) => admin_json(detail),
        None => (StatusCode::NOT_FOUND, format!("no application {name}\n")).into_response(),
    }
}
