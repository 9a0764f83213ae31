//! An embedded AWS emulator: MSF (`kinesisanalyticsv2`) and the KMS subset the controller
//! uses, on one HTTP server on 127.0.0.1, so that the demo, the tests and the benchmarks need
//! no cloud. Point the SDK at [`EmulatorHandle::endpoint`] (e.g. with
//! [`crate::aws::ConnectOptions::local`]).
//!
//! Faithful where the controller depends on it (see `msf.rs` and `kms.rs`); not an IAM
//! evaluator: requests are not authenticated, and "access denied" is a fault to inject.
//!
//! Admin API for scripts (JSON), next to the AWS API on the same port:
//! - `GET /_emulator/counts` -> `{"calls": {OP: n}, "outcomes": {OP: {"ok"|CODE: n}}}`;
//!   `DELETE /_emulator/counts` resets them.
//! - `GET /_emulator/faults`; `PUT /_emulator/faults/{OP or *}` with
//!   `{"latency_ms", "throttle_rate", "error_rate", "deny"}`; `DELETE /_emulator/faults`.
//! - `GET /_emulator/state`: every application, key (with policy) and alias.
//! - `GET /_emulator/health`.
//!
//! The server runs until [`EmulatorHandle::shutdown`] or until its tokio runtime ends.
//!
//! ```no_run
//! # async fn demo() -> anyhow::Result<()> {
//! use msf_cmk_controller::domain::ApplicationStatus;
//! use msf_cmk_controller::emulator::{Emulator, EmulatorConfig, Fault};
//! let emu = Emulator::start(EmulatorConfig::default()).await?;
//! emu.create_application("us-east-1", "orders", "FLINK-1_20", ApplicationStatus::Running)?;
//! let key = emu.create_key("us-east-1", None)?;
//! emu.set_fault("PutKeyPolicy", Fault::throttle(0.5));
//! println!("{} {key}", emu.endpoint());
//! emu.shutdown().await;
//! # Ok(()) }
//! ```

use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use serde_json::json;

mod faults;
mod handle;
mod kms;
mod msf;
mod policy_check;
mod server;
mod state;
mod wire;

pub use faults::Fault;
pub use handle::{EmulatorHandle, KeyOptions};
pub use policy_check::{MAX_POLICY_BYTES, MSF_PRINCIPALS};

use faults::{Counts, Faults};
use state::World;

/// The account every request acts in (requests are not authenticated).
pub const DEFAULT_ACCOUNT: &str = "123456789012";

#[derive(Clone, Debug)]
pub struct EmulatorConfig {
    /// Where to listen; port 0 picks a free port.
    pub bind: SocketAddr,
    pub account_id: String,
    /// Region of requests without a SigV4 `Authorization` header.
    pub default_region: String,
    /// How long UPDATING / STARTING / STOPPING last.
    pub update_delay: Duration,
    /// Seed of the fault-injection dice, for reproducible runs.
    pub seed: u64,
}

impl Default for EmulatorConfig {
    fn default() -> Self {
        Self {
            bind: SocketAddr::from(([127, 0, 0, 1], 0)),
            account_id: DEFAULT_ACCOUNT.to_string(),
            default_region: "us-east-1".to_string(),
            update_delay: Duration::from_millis(200),
            seed: 0x5eed,
        }
    }
}

/// Starts emulators.
pub struct Emulator;

impl Emulator {
    /// Binds, starts serving in a background task and returns its handle.
    pub async fn start(config: EmulatorConfig) -> anyhow::Result<EmulatorHandle> {
        let listener = tokio::net::TcpListener::bind(config.bind)
            .await
            .map_err(|e| anyhow::anyhow!("cannot listen on {}: {e}", config.bind))?;
        let addr = listener.local_addr()?;
        let inner = Arc::new(Inner {
            world: Mutex::new(World::default()),
            faults: Mutex::new(Faults::new(config.seed)),
            counts: Mutex::new(Counts::default()),
            update_delay_ms: std::sync::atomic::AtomicU64::new(
                config.update_delay.as_millis() as u64
            ),
            account: config.account_id,
            default_region: config.default_region,
        });
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let app = server::router(inner.clone());
        let task = tokio::spawn(async move {
            let serve = axum::serve(listener, app).with_graceful_shutdown(async {
                let _ = stop_rx.await;
            });
            if let Err(e) = serve.await {
                tracing::error!(error = %e, "emulator server stopped");
            }
        });
        Ok(EmulatorHandle::new(inner, addr, stop_tx, task))
    }
}

/// State shared by the server and the handle.
pub(crate) struct Inner {
    world: Mutex<World>,
    faults: Mutex<Faults>,
    counts: Mutex<Counts>,
    update_delay_ms: std::sync::atomic::AtomicU64,
    account: String,
    default_region: String,
}

// A poisoned lock means a handler panicked mid-change; the emulator keeps serving what is
// there rather than failing every later call.
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Inner {
    fn lock_world(&self) -> MutexGuard<'_, World> {
        lock(&self.world)
    }

    fn lock_faults(&self) -> MutexGuard<'_, Faults> {
        lock(&self.faults)
    }

    fn lock_counts(&self) -> MutexGuard<'_, Counts> {
        lock(&self.counts)
    }

    fn record(&self, op: &str, outcome: &str) {
        self.lock_counts().record(op, outcome);
    }

    fn update_delay(&self) -> Duration {
        Duration::from_millis(
            self.update_delay_ms
                .load(std::sync::atomic::Ordering::Relaxed),
        )
    }

    /// Everything, for `/_emulator/state` and debugging.
    fn state_json(&self) -> serde_json::Value {
        let mut world = self.lock_world();
        let now = std::time::Instant::now();
        let scopes: Vec<_> = world
            .scopes
            .iter_mut()
            .map(|(scope, rs)| {
                let apps: Vec<_> = rs
                    .apps
                    .values_mut()
                    .map(|a| {
                        a.settle(now);
                        msf::detail(a)
                    })
                    .collect();
                let keys: Vec<_> = rs
                    .keys
                    .values()
                    .map(|k| json!({ "KeyMetadata": kms::metadata(k), "Policy": k.policy }))
                    .collect();
                let aliases: Vec<_> = rs
                    .aliases
                    .values()
                    .map(|a| json!({ "AliasName": a.name, "TargetKeyId": a.target_key_id }))
                    .collect();
                json!({
                    "account": scope.account,
                    "region": scope.region,
                    "applications": apps,
                    "keys": keys,
                    "aliases": aliases,
                })
            })
            .collect();
        json!({ "scopes": scopes, "update_delay_ms": self.update_delay().as_millis() as u64 })
    }
}

/// Every operation the emulator serves, MSF first.
pub fn operations() -> impl Iterator<Item = &'static str> {
    msf::OPERATIONS.iter().chain(kms::OPERATIONS).copied()
}
