//! `/metrics` (Prometheus text format), `/livez` and `/readyz`: on one port by default, or
//! the probes on a port of their own (`--probe-addr`) so that `/metrics` can be bound to
//! localhost only (for a kube-rbac-proxy sidecar, or no network scrape at all) while the
//! kubelet still reaches the probes.
//!
//! `/livez` answers as long as the process serves HTTP (a standby replica is alive too).
//! `/readyz` answers 200 once the controller is set up (AWS clients, Kubernetes client) in
//! either role, and says which role: a standby replica is ready to take over, so it should not
//! be restarted or taken out of a rollout for not being the leader.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU8, Ordering};

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;

use crate::controller::metrics::Metrics;

/// What `/readyz` reports.
#[derive(Debug, Default)]
pub struct Health(AtomicU8);

impl Health {
    pub const STARTING: u8 = 0;
    pub const STANDBY: u8 = 1;
    pub const LEADER: u8 = 2;

    pub fn set(&self, state: u8) {
        self.0.store(state, Ordering::SeqCst);
    }

    pub fn get(&self) -> u8 {
        self.0.load(Ordering::SeqCst)
    }
}

#[derive(Clone)]
struct AppState {
    metrics: Arc<Metrics>,
    health: Arc<Health>,
}

/// Which endpoints one listener serves.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Serves {
    /// `/metrics`, `/livez` and `/readyz`.
    All,
    /// `/metrics` only (the probes have their own listener).
    Metrics,
    /// `/livez` and `/readyz` only.
    Probes,
}

pub fn router(metrics: Arc<Metrics>, health: Arc<Health>) -> Router {
    routes(Serves::All, metrics, health)
}

fn routes(serves: Serves, metrics: Arc<Metrics>, health: Arc<Health>) -> Router {
    let mut r = Router::new();
    if serves != Serves::Probes {
        r = r.route("/metrics", get(metrics_handler));
    }
    if serves != Serves::Metrics {
        r = r
            .route("/livez", get(|| async { "ok\n" }))
            .route("/readyz", get(readyz));
    }
    r.with_state(AppState { metrics, health })
}

async fn metrics_handler(State(s): State<AppState>) -> impl IntoResponse {
    // `msf_cmk_leader` is what `/readyz` says, read at scrape time: one source of truth.
    s.metrics.set_leader(s.health.get() == Health::LEADER);
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        s.metrics.encode(),
    )
}

async fn readyz(State(s): State<AppState>) -> impl IntoResponse {
    match s.health.get() {
        Health::LEADER => (StatusCode::OK, "ok: leader\n"),
        Health::STANDBY => (StatusCode::OK, "ok: standby\n"),
        _ => (StatusCode::SERVICE_UNAVAILABLE, "starting\n"),
    }
}

/// Binds `addr` (errors early, e.g. port in use) and serves every endpoint in the background.
pub async fn serve(
    addr: SocketAddr,
    metrics: Arc<Metrics>,
    health: Arc<Health>,
) -> anyhow::Result<(SocketAddr, tokio::task::JoinHandle<()>)> {
    serve_only(Serves::All, addr, metrics, health).await
}

/// Binds `addr` and serves the endpoints `serves` names in the background.
pub async fn serve_only(
    serves: Serves,
    addr: SocketAddr,
    metrics: Arc<Metrics>,
    health: Arc<Health>,
) -> anyhow::Result<(SocketAddr, tokio::task::JoinHandle<()>)> {
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|e| anyhow::anyhow!("cannot listen on {addr}: {e}"))?;
    let local = listener.local_addr()?;
    let app = routes(serves, metrics, health);
    let handle = tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, app).await {
            tracing::error!(error = %e, "metrics/health server stopped");
        }
    });
    Ok((local, handle))
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    async fn get(addr: SocketAddr, path: &str) -> String {
        let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
        let req = format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
        s.write_all(req.as_bytes()).await.unwrap();
        let mut out = String::new();
        s.read_to_string(&mut out).await.unwrap();
        out
    }

    #[tokio::test]
    async fn endpoints() {
        let metrics = Arc::new(Metrics::new());
        metrics.reconciled("converged", 0.1);
        let health = Arc::new(Health::default());
        let (addr, _h) = serve("127.0.0.1:0".parse().unwrap(), metrics, health.clone())
            .await
            .unwrap();
        assert!(get(addr, "/livez").await.starts_with("HTTP/1.1 200"));
        assert!(get(addr, "/readyz").await.starts_with("HTTP/1.1 503"));
        health.set(Health::STANDBY);
        let r = get(addr, "/readyz").await;
        assert!(
            r.starts_with("HTTP/1.1 200") && r.contains("standby"),
            "{r}"
        );
        let m = get(addr, "/metrics").await;
        assert!(m.contains("msf_cmk_reconciles_total"), "{m}");
    }

    #[tokio::test]
    async fn metrics_and_probes_on_separate_listeners() {
        let metrics = Arc::new(Metrics::new());
        let health = Arc::new(Health::default());
        health.set(Health::LEADER);
        let any = "127.0.0.1:0".parse().unwrap();
        let (m, _a) = serve_only(Serves::Metrics, any, metrics.clone(), health.clone())
            .await
            .unwrap();
        let (p, _b) = serve_only(Serves::Probes, any, metrics, health)
            .await
            .unwrap();
        assert!(get(m, "/metrics").await.contains("msf_cmk_leader 1"));
        assert!(get(m, "/readyz").await.starts_with("HTTP/1.1 404"));
        assert!(get(m, "/livez").await.starts_with("HTTP/1.1 404"));
        assert!(get(p, "/metrics").await.starts_with("HTTP/1.1 404"));
        assert!(get(p, "/readyz").await.starts_with("HTTP/1.1 200"));
        assert!(get(p, "/livez").await.starts_with("HTTP/1.1 200"));
    }
}
