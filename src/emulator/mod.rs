//! An embedded AWS emulator: MSF (`kinesisanalyticsv2`), the KMS subset the controller
//! uses and STS's GetCallerIdentity and AssumeRole, on one HTTP server on 127.0.0.1, so that the demo, the
//! tests and the benchmarks need no cloud. Point the SDK at [`EmulatorHandle::endpoint`]
//! (e.g. with [`crate::aws::ConnectOptions::local`]).
//!
//! Faithful where the controller depends on it, and failing the way AWS fails (each fact and
//! its AWS source in docs/emulator.md): MSF versions, operations and rollbacks
//! (`msf.rs`, `msf_operations.rs`), MSF's key checks evaluated with the policy engine for the
//! caller and the service principals (`msf_keycheck.rs`, `access.rs`), eventually consistent
//! key policies, KMS's policy rules (`kms.rs`), request quotas (`quotas.rs`), the caller's
//! identity (`identity.rs`), several accounts and AssumeRole (`sts.rs`). Signatures are not
//! checked; SigV4's `Credential=` gives the region and the access key id. A key id AssumeRole
//! issued acts in the role's account as `arn:aws:sts::ACCOUNT:assumed-role/ROLE/SESSION`
//! (what GetCallerIdentity answers, MSF's key checks and KMS's cross-account refusal and
//! lock-out check evaluate, the call log records), until it expires (then
//! `ExpiredTokenException`); any other key id, or none, acts in the first account as the
//! configured `caller_arn`. AssumeRole succeeds only for a role in the principal registry,
//! in a served account (`EmulatorConfig::extra_accounts`), with its external id when one
//! was registered; else `AccessDenied` (HTTP 403), as STS answers.
//!
//! Admin API for scripts (JSON), next to the AWS API on the same port:
//! - `GET /_emulator/counts` -> `{"calls": {OP: n}, "outcomes": {OP: {"ok"|CODE: n}}}`;
//!   `DELETE /_emulator/counts` resets them.
//! - `GET /_emulator/calls[?since=SEQ&access_key_id=AKID&operation=OP]` ->
//!   `{"calls": [{"seq", "time_ms" (arrival),
//!   "answered_ms", "operation",
//!   "region", "account", "access_key_id", "caller_arn", "target", "outcome"}], "last_seq"}`
//!   (the last [`CALL_LOG_CAPACITY`] calls); `DELETE /_emulator/calls` empties it.
//! - `GET /_emulator/faults`; `PUT /_emulator/faults/{OP or *}` with `{"latency_ms",
//!   "throttle_rate", "error_rate", "deny", "invalid_credentials", "rollback" (UpdateApplication),
//!   "interleave_policy" (a person's write, once: just before the next PutKeyPolicy, or just
//!   after it with "interleave_after"; just after the next GetKeyPolicy is answered),
//!   "application" | "key_id" (scope)}`; a scoped entry's effects come before the
//!   operation's, which come before `*`'s; `DELETE /_emulator/faults`.
//! - `GET /_emulator/config`; `PUT /_emulator/config` with any of `{"policy_propagation_ms",
//!   "caller_arn", "strict_principals", "reject_incomplete_statements", "quotas": bool,
//!   "msf_quota", "update_delay_ms", "min_session_seconds"}`.
//! - `GET /_emulator/principals` -> `{"arns": [...], "external_ids": {ROLE: ID}}`;
//!   `PUT /_emulator/principals {"arns": [...], "external_id": optional}` adds to the
//!   registry `strict_principals` checks and AssumeRole looks roles up in (any account); with
//!   `external_id`, AssumeRole of those roles must carry it.
//! - `PUT /_emulator/applications/{region}/{name}/snapshots[?account=ID] {"enabled": bool}`.
//! - `GET /_emulator/state`: the accounts served, every application, key (with policy) and
//!   alias per account and region, and the sessions AssumeRole issued (no secrets).
//! - `GET /_emulator/health`.
//!
//! The server runs until [`EmulatorHandle::shutdown`] or until its tokio runtime ends.
//!
//! ```no_run
//! # async fn demo() -> anyhow::Result<()> {
//! use msf_cmk_controller::domain::ApplicationStatus;
//! use msf_cmk_controller::emulator::{Emulator, EmulatorConfig, Fault};
//! let emu = Emulator::start(EmulatorConfig {
//!     extra_accounts: vec!["222222222222".into()],
//!     ..EmulatorConfig::default()
//! })
//! .await?;
//! emu.create_application("us-east-1", "orders", "FLINK-1_20", ApplicationStatus::Running)?;
//! let key = emu.create_key("us-east-1", None)?;
//! // In the second account, entered with AssumeRole of a registered role.
//! emu.create_application_in("222222222222", "us-east-1", "billing", "FLINK-1_20",
//!     ApplicationStatus::Ready)?;
//! emu.add_roles_with_external_id(["arn:aws:iam::222222222222:role/msf-cmk-operator"], "team-b")?;
//! emu.set_fault("PutKeyPolicy", Fault::throttle(0.5));
//! println!("{} {key}", emu.endpoint());
//! emu.shutdown().await;
//! # Ok(()) }
//! ```

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use serde_json::json;

mod access;
mod admin;
mod calls;
mod faults;
mod handle;
mod identity;
mod kms;
mod msf;
mod msf_keycheck;
mod msf_operations;
mod policy_check;
mod quotas;
mod server;
mod settings;
mod state;
mod sts;
mod wire;

pub use calls::{CALL_LOG_CAPACITY, CallRecord};
pub use faults::Fault;
pub use handle::{EmulatorHandle, KeyOptions};
pub use identity::SESSION_NAME;
pub use policy_check::{MAX_POLICY_BYTES, MSF_PRINCIPALS};
pub use quotas::{DEFAULT_MSF_PER_SECOND, Quotas, kms_rate};
pub use sts::{DEFAULT_SESSION_SECONDS, MIN_SESSION_SECONDS};

use calls::CallLog;
use faults::{Counts, Faults};
use quotas::Buckets;
use settings::Settings;
use state::World;
use sts::StsState;

/// The account requests act in unless signed with credentials AssumeRole issued.
pub const DEFAULT_ACCOUNT: &str = "123456789012";

#[derive(Clone, Debug)]
pub struct EmulatorConfig {
    /// Where to listen; port 0 picks a free port.
    pub bind: SocketAddr,
    /// The first account: requests signed with plain credentials act in it.
    pub account_id: String,
    /// Further accounts served: resources live in them and AssumeRole enters them.
    pub extra_accounts: Vec<String>,
    /// The shortest AssumeRole `DurationSeconds` accepted: STS's 900 by default; tests lower
    /// it to see credentials expire.
    pub min_session_seconds: u64,
    /// Region of requests without a SigV4 `Authorization` header.
    pub default_region: String,
    /// How long UPDATING / STARTING / STOPPING last.
    pub update_delay: Duration,
    /// Seed of the fault-injection dice, for reproducible runs.
    pub seed: u64,
    /// How long a key policy write takes to be seen by GetKeyPolicy and by MSF's checks.
    pub policy_propagation: Duration,
    /// Who calls (a role, user, root or assumed-role ARN); `None` =
    /// `arn:aws:iam::<account>:role/msf-cmk-operator`. A role is answered and evaluated as
    /// its session `arn:aws:sts::<account>:assumed-role/<name>/msf-cmk-controller`.
    pub caller_arn: Option<String>,
    /// PutKeyPolicy refuses AWS principals missing from the principal registry.
    pub strict_principals: bool,
    /// KMS's rule since 2025-08-18 (AWS Health notice): CreateKey / PutKeyPolicy refuse a
    /// statement without Action/NotAction or Resource/NotResource, or with a Resource other
    /// than `*`. Off by default: the KMS API reference still says such statements are stored
    /// without effect, which is what the emulator does then.
    pub reject_incomplete_statements: bool,
    /// Request quotas (token buckets per account, region and operation); `None` = no quotas.
    /// Off in `EmulatorConfig::default()` (unit tests burst freely); on in the `emulator`
    /// command and the benchmarks.
    pub quotas: Option<Quotas>,
}

impl Default for EmulatorConfig {
    fn default() -> Self {
        Self {
            bind: SocketAddr::from(([127, 0, 0, 1], 0)),
            account_id: DEFAULT_ACCOUNT.to_string(),
            extra_accounts: Vec::new(),
            min_session_seconds: sts::MIN_SESSION_SECONDS,
            default_region: "us-east-1".to_string(),
            update_delay: Duration::from_millis(200),
            seed: 0x5eed,
            policy_propagation: Duration::ZERO,
            caller_arn: None,
            strict_principals: false,
            reject_incomplete_statements: false,
            quotas: None,
        }
    }
}

/// Starts emulators.
pub struct Emulator;

impl Emulator {
    /// Binds, starts serving in a background task and returns its handle.
    pub async fn start(config: EmulatorConfig) -> anyhow::Result<EmulatorHandle> {
        let caller = config
            .caller_arn
            .clone()
            .unwrap_or_else(|| settings::default_caller(&config.account_id));
        identity::Identity::parse(&caller).map_err(|e| anyhow::anyhow!(e))?;
        let listener = tokio::net::TcpListener::bind(config.bind)
            .await
            .map_err(|e| anyhow::anyhow!("cannot listen on {}: {e}", config.bind))?;
        let addr = listener.local_addr()?;
        let accounts = served_accounts(&config)?;
        let mut principals = initial_principals(&config.account_id, &caller);
        for extra in &accounts[1..] {
            principals.extend(initial_principals(extra, &settings::default_caller(extra)));
        }
        let inner = Arc::new(Inner {
            world: Mutex::new(World::default()),
            faults: Mutex::new(Faults::new(config.seed)),
            counts: Mutex::new(Counts::default()),
            calls: Mutex::new(CallLog::default()),
            settings: Mutex::new(Settings {
                caller_arn: caller,
                policy_propagation: config.policy_propagation,
                strict_principals: config.strict_principals,
                reject_incomplete_statements: config.reject_incomplete_statements,
                quotas: config.quotas,
                update_delay: config.update_delay,
                min_session_seconds: config.min_session_seconds,
            }),
            principals: Mutex::new(principals),
            buckets: Mutex::new(Buckets::default()),
            sts: Mutex::new(StsState::default()),
            accounts,
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

/// The first account, then the extra ones; each a 12-digit id, none twice.
fn served_accounts(config: &EmulatorConfig) -> anyhow::Result<Vec<String>> {
    let mut accounts = vec![config.account_id.clone()];
    for a in &config.extra_accounts {
        if !crate::arn::is_account_id(a) {
            anyhow::bail!("account {a:?} is not a 12-digit account id");
        }
        if !accounts.contains(a) {
            accounts.push(a.clone());
        }
    }
    Ok(accounts)
}

/// The principals that exist from the start (for `strict_principals`): the account root,
/// the caller, and the roles the demo, the docs and deploy/examples/ name.
fn initial_principals(account: &str, caller: &str) -> BTreeSet<String> {
    let mut set: BTreeSet<String> = [
        format!("arn:aws:iam::{account}:root"),
        settings::default_caller(account),
        format!("arn:aws:iam::{account}:role/msf-cmk-controller"),
        format!("arn:aws:iam::{account}:role/Operator"),
        format!("arn:aws:iam::{account}:role/KeyAdmin"),
        "arn:aws:iam::111122223333:root".to_string(),
        "arn:aws:iam::111122223333:role/msf-cmk-controller".to_string(),
    ]
    .into_iter()
    .collect();
    set.insert(caller.to_string());
    if let Ok(id) = identity::Identity::parse(caller) {
        set.insert(id.principal_arn);
    }
    set
}

/// State shared by the server and the handle.
pub(crate) struct Inner {
    world: Mutex<World>,
    faults: Mutex<Faults>,
    counts: Mutex<Counts>,
    calls: Mutex<CallLog>,
    settings: Mutex<Settings>,
    /// IAM principals that exist, for `strict_principals`.
    principals: Mutex<BTreeSet<String>>,
    buckets: Mutex<Buckets>,
    /// Credentials AssumeRole issued, and the external ids roles require.
    sts: Mutex<StsState>,
    /// Every account served, the first one first.
    accounts: Vec<String>,
    /// The first account.
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

    fn lock_calls(&self) -> MutexGuard<'_, CallLog> {
        lock(&self.calls)
    }

    fn lock_settings(&self) -> MutexGuard<'_, Settings> {
        lock(&self.settings)
    }

    fn lock_principals(&self) -> MutexGuard<'_, BTreeSet<String>> {
        lock(&self.principals)
    }

    fn lock_buckets(&self) -> MutexGuard<'_, Buckets> {
        lock(&self.buckets)
    }

    fn lock_sts(&self) -> MutexGuard<'_, StsState> {
        lock(&self.sts)
    }

    /// Counts the call and appends it to the call log.
    fn record(&self, info: calls::CallInfo, outcome: &str) {
        self.lock_counts().record(&info.operation, outcome);
        self.lock_calls().push(info, outcome);
    }

    /// Adds principals to the registry; with `external_id`, each must be a role and
    /// AssumeRole of it must carry that id. Refuses (changing nothing) a bad external id.
    fn register_principals(
        &self,
        arns: &[String],
        external_id: Option<&str>,
    ) -> Result<(), String> {
        if let Some(id) = external_id {
            sts::check_external_id(id)?;
            if let Some(bad) = arns
                .iter()
                .find(|a| identity::Identity::role_session(a, "x").is_err())
            {
                return Err(format!(
                    "{bad:?} is not a role ARN: only roles take an external id"
                ));
            }
        }
        self.lock_principals().extend(arns.iter().cloned());
        if let Some(id) = external_id {
            let mut sts = self.lock_sts();
            for arn in arns {
                sts.set_external_id(arn, id);
            }
        }
        Ok(())
    }

    fn settings(&self) -> Settings {
        self.lock_settings().clone()
    }

    fn update_delay(&self) -> Duration {
        self.lock_settings().update_delay
    }

    /// The caller as configured now (validated when set, so the fallback is never used).
    fn caller(&self) -> identity::Identity {
        let arn = self.lock_settings().caller_arn.clone();
        identity::Identity::parse(&arn).unwrap_or_else(|_| identity::Identity {
            partition: "aws".into(),
            account: self.account.clone(),
            principal_arn: arn.clone(),
            user_id: arn.clone(),
            arn,
        })
    }

    /// A console change of `ApplicationSnapshotConfiguration`: a new version, no restart.
    /// Returns the application detail, or `None` when there is no such application.
    fn set_snapshots_enabled(
        &self,
        scope: &state::Scope,
        name: &str,
        enabled: bool,
    ) -> Option<serde_json::Value> {
        let mut world = self.lock_world();
        let app = world.app_mut(scope, name)?;
        if app.config.snapshots_enabled != enabled {
            app.config.snapshots_enabled = enabled;
            app.bump_version();
        }
        Some(msf::detail(app))
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
                    .values_mut()
                    .map(|k| {
                        k.settle_policy(now);
                        json!({
                            "KeyMetadata": kms::metadata(k),
                            "Policy": k.policy,
                            "PendingPolicies": k.pending_policies.len(),
                        })
                    })
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
        drop(world);
        let sessions = self.lock_sts().to_json(std::time::SystemTime::now());
        json!({
            "accounts": self.accounts,
            "scopes": scopes,
            "sessions": sessions,
            "update_delay_ms": self.update_delay().as_millis() as u64,
        })
    }
}

/// Checks a caller ARN the way `EmulatorConfig::caller_arn` and `PUT /_emulator/config` do.
pub fn validate_caller_arn(arn: &str) -> Result<(), String> {
    identity::Identity::parse(arn).map(|_| ())
}

/// Every operation the emulator serves, MSF first, then KMS, then STS.
pub fn operations() -> impl Iterator<Item = &'static str> {
    msf::OPERATIONS
        .iter()
        .chain(kms::OPERATIONS)
        .chain(sts::OPERATIONS)
        .copied()
}
