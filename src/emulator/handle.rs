//! The in-process API of a running emulator: set up state, inject faults, read counts.
//! Direct changes here are not counted as calls: they stand for what a human or another
//! system does to AWS behind the controller's back.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context, bail};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use super::calls::CallRecord;
use super::faults::Fault;
use super::settings::SettingsPatch;
use super::state::{Alias, Scope, new_app, new_key};
use super::{Inner, lock, policy_check};
use crate::domain::{
    ApplicationStatus, AppliedEncryption, KeyState, ObservedApplication, ObservedKey,
};

/// How to stop the server: the signal and the task to wait for.
type Stopper = (oneshot::Sender<()>, JoinHandle<()>);

/// A running emulator. Cheap to clone; every clone controls the same server.
#[derive(Clone)]
pub struct EmulatorHandle {
    inner: Arc<Inner>,
    addr: SocketAddr,
    stop: Arc<Mutex<Option<Stopper>>>,
}

/// A key to create with [`EmulatorHandle::create_key_with`].
#[derive(Clone, Debug)]
pub struct KeyOptions {
    pub region: String,
    /// Defaults to the emulator's account; another account models a cross-account key.
    pub account: Option<String>,
    /// Defaults to KMS's default key policy (the account may do everything).
    pub policy: Option<String>,
    pub spec: String,
    pub usage: String,
    pub description: String,
}

impl KeyOptions {
    /// A symmetric encrypt/decrypt key with the default policy.
    pub fn new(region: &str) -> Self {
        Self {
            region: region.to_string(),
            account: None,
            policy: None,
            spec: "SYMMETRIC_DEFAULT".into(),
            usage: "ENCRYPT_DECRYPT".into(),
            description: String::new(),
        }
    }
}

impl EmulatorHandle {
    pub(super) fn new(
        inner: Arc<Inner>,
        addr: SocketAddr,
        stop: oneshot::Sender<()>,
        task: JoinHandle<()>,
    ) -> Self {
        Self {
            inner,
            addr,
            stop: Arc::new(Mutex::new(Some((stop, task)))),
        }
    }

    /// `http://127.0.0.1:PORT`: the endpoint URL for both services and the admin API.
    pub fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The first account: requests signed with plain credentials act in it.
    pub fn account_id(&self) -> &str {
        &self.inner.account
    }

    /// Every account served, the first one first.
    pub fn accounts(&self) -> &[String] {
        &self.inner.accounts
    }

    fn scope(&self, region: &str) -> Scope {
        Scope {
            account: self.inner.account.clone(),
            region: region.to_string(),
        }
    }

    /// A scope in a served account.
    fn scope_in(&self, account: &str, region: &str) -> anyhow::Result<Scope> {
        if !self.inner.accounts.iter().any(|a| a == account) {
            bail!(
                "account {account} is not served (accounts: {})",
                self.inner.accounts.join(", ")
            );
        }
        Ok(Scope {
            account: account.to_string(),
            region: region.to_string(),
        })
    }

    /// Creates an application (AWS owned key, version 1) in `status` in the first account;
    /// returns its ARN.
    pub fn create_application(
        &self,
        region: &str,
        name: &str,
        runtime: &str,
        status: ApplicationStatus,
    ) -> anyhow::Result<String> {
        let account = self.inner.account.clone();
        self.create_application_in(&account, region, name, runtime, status)
    }

    /// [`EmulatorHandle::create_application`] in any served account.
    pub fn create_application_in(
        &self,
        account: &str,
        region: &str,
        name: &str,
        runtime: &str,
        status: ApplicationStatus,
    ) -> anyhow::Result<String> {
        if !crate::arn::is_valid_application_name(name) {
            bail!("invalid application name {name:?}");
        }
        let scope = self.scope_in(account, region)?;
        let mut world = self.inner.lock_world();
        let apps = &mut world.scope_mut(&scope).apps;
        if apps.contains_key(name) {
            bail!("application {name} already exists in {region}");
        }
        let app = new_app(&scope, name, runtime, status);
        let arn = app.arn.clone();
        apps.insert(name.to_string(), app);
        Ok(arn)
    }

    /// Sets the status at once (e.g. STARTING, to test waiting), cancelling any transition.
    pub fn set_application_status(
        &self,
        region: &str,
        name: &str,
        status: ApplicationStatus,
    ) -> anyhow::Result<()> {
        let mut world = self.inner.lock_world();
        let app = world
            .app_mut(&self.scope(region), name)
            .with_context(|| format!("no application {name} in {region}"))?;
        app.status = status;
        app.transition = None;
        Ok(())
    }

    /// A change made in the console: new encryption, new version, no validation.
    pub fn set_application_encryption(
        &self,
        region: &str,
        name: &str,
        encryption: AppliedEncryption,
    ) -> anyhow::Result<ObservedApplication> {
        let mut world = self.inner.lock_world();
        let app = world
            .app_mut(&self.scope(region), name)
            .with_context(|| format!("no application {name} in {region}"))?;
        app.config.encryption = encryption;
        app.bump_version();
        Ok(app.observed())
    }

    /// A console change of the application's snapshot setting (a new version, like any
    /// configuration change). DescribeApplication reports it in
    /// `ApplicationSnapshotConfigurationDescription.SnapshotsEnabled`.
    pub fn set_snapshots_enabled(
        &self,
        region: &str,
        name: &str,
        enabled: bool,
    ) -> anyhow::Result<()> {
        self.inner
            .set_snapshots_enabled(&self.scope(region), name, enabled)
            .map(|_| ())
            .with_context(|| format!("no application {name} in {region}"))
    }

    /// Whether the application has snapshots enabled.
    pub fn snapshots_enabled(&self, region: &str, name: &str) -> Option<bool> {
        let mut world = self.inner.lock_world();
        world
            .app_mut(&self.scope(region), name)
            .map(|a| a.config.snapshots_enabled)
    }

    /// `ApplicationVersionRolledBackFrom` of the application, once a rollback has ended.
    pub fn rolled_back_from(&self, region: &str, name: &str) -> Option<i64> {
        let mut world = self.inner.lock_world();
        world
            .app_mut(&self.scope(region), name)
            .and_then(|a| a.rolled_back_from)
    }

    /// The application as DescribeApplication would show it now.
    pub fn application(&self, region: &str, name: &str) -> Option<ObservedApplication> {
        let mut world = self.inner.lock_world();
        world
            .app_mut(&self.scope(region), name)
            .map(|a| a.observed())
    }

    /// [`EmulatorHandle::application`] in any account.
    pub fn application_in(
        &self,
        account: &str,
        region: &str,
        name: &str,
    ) -> Option<ObservedApplication> {
        let scope = Scope {
            account: account.to_string(),
            region: region.to_string(),
        };
        let mut world = self.inner.lock_world();
        world.app_mut(&scope, name).map(|a| a.observed())
    }

    /// Removes an application; true if it existed.
    pub fn delete_application(&self, region: &str, name: &str) -> bool {
        let scope = self.scope(region);
        self.inner
            .lock_world()
            .scope_mut(&scope)
            .apps
            .remove(name)
            .is_some()
    }

    /// Creates a symmetric encrypt/decrypt key; `None` = KMS's default policy. Returns its ARN.
    pub fn create_key(&self, region: &str, policy: Option<&str>) -> anyhow::Result<String> {
        let mut opts = KeyOptions::new(region);
        opts.policy = policy.map(str::to_string);
        self.create_key_with(opts)
    }

    /// [`EmulatorHandle::create_key`] in any served account.
    pub fn create_key_in(
        &self,
        account: &str,
        region: &str,
        policy: Option<&str>,
    ) -> anyhow::Result<String> {
        self.scope_in(account, region)?;
        let mut opts = KeyOptions::new(region);
        opts.account = Some(account.to_string());
        opts.policy = policy.map(str::to_string);
        self.create_key_with(opts)
    }

    pub fn create_key_with(&self, opts: KeyOptions) -> anyhow::Result<String> {
        let scope = Scope {
            account: opts.account.unwrap_or_else(|| self.inner.account.clone()),
            region: opts.region,
        };
        let policy = match opts.policy {
            Some(p) => {
                policy_check::parse(&p).map_err(|e| anyhow::anyhow!("policy refused: {e:?}"))?;
                p
            }
            None => policy_check::default_policy(&scope.account),
        };
        let key = new_key(&scope, policy, &opts.spec, &opts.usage, &opts.description);
        let arn = key.arn.clone();
        self.inner
            .lock_world()
            .scope_mut(&scope)
            .keys
            .insert(key.id.clone(), key);
        Ok(arn)
    }

    /// Points `alias_name` (`alias/...`) at a key of the same region of the first account;
    /// returns the alias ARN.
    pub fn create_alias(
        &self,
        region: &str,
        alias_name: &str,
        key_arn: &str,
    ) -> anyhow::Result<String> {
        let account = self.inner.account.clone();
        self.create_alias_in(&account, region, alias_name, key_arn)
    }

    /// [`EmulatorHandle::create_alias`] in any served account.
    pub fn create_alias_in(
        &self,
        account: &str,
        region: &str,
        alias_name: &str,
        key_arn: &str,
    ) -> anyhow::Result<String> {
        if !alias_name.starts_with("alias/") || alias_name.len() <= 6 {
            bail!("alias name must look like alias/NAME, got {alias_name:?}");
        }
        let scope = self.scope_in(account, region)?;
        let mut world = self.inner.lock_world();
        let key_id = world
            .key_by_arn(key_arn)
            .filter(|k| k.region == region && k.account == scope.account)
            .map(|k| k.id.clone())
            .with_context(|| format!("no key {key_arn} in {region}"))?;
        let arn = format!("arn:aws:kms:{region}:{}:{alias_name}", scope.account);
        world.scope_mut(&scope).aliases.insert(
            alias_name.to_string(),
            Alias {
                name: alias_name.to_string(),
                arn: arn.clone(),
                target_key_id: key_id,
                created: std::time::SystemTime::now(),
            },
        );
        Ok(arn)
    }

    pub fn key(&self, key_arn: &str) -> Option<ObservedKey> {
        self.inner
            .lock_world()
            .key_by_arn(key_arn)
            .map(|k| k.observed())
    }

    /// The last policy written to the key, visible yet or not (see
    /// [`EmulatorHandle::visible_key_policy`]).
    pub fn key_policy(&self, key_arn: &str) -> Option<String> {
        self.inner
            .lock_world()
            .key_by_arn(key_arn)
            .map(|k| k.latest_policy().to_string())
    }

    /// The policy GetKeyPolicy (and MSF's checks) see now, with the propagation delay.
    pub fn visible_key_policy(&self, key_arn: &str) -> Option<String> {
        let now = std::time::Instant::now();
        self.inner
            .lock_world()
            .key_by_arn(key_arn)
            .map(|k| k.visible_policy(now).to_string())
    }

    /// A key administrator's edit: checked for size and JSON like KMS does, but not counted
    /// and without the lockout check. Visible after the propagation delay, like any write.
    pub fn put_key_policy_direct(&self, key_arn: &str, policy: &str) -> anyhow::Result<()> {
        policy_check::parse(policy).map_err(|e| anyhow::anyhow!("policy refused: {e:?}"))?;
        let delay = self.inner.lock_settings().policy_propagation;
        let mut world = self.inner.lock_world();
        let key = world
            .key_by_arn_mut(key_arn)
            .with_context(|| format!("no key {key_arn}"))?;
        key.write_policy(policy.to_string(), delay);
        Ok(())
    }

    fn set_key_state(&self, key_arn: &str, state: KeyState) -> anyhow::Result<()> {
        let mut world = self.inner.lock_world();
        let key = world
            .key_by_arn_mut(key_arn)
            .with_context(|| format!("no key {key_arn}"))?;
        if state == KeyState::PendingDeletion {
            super::kms::schedule(key, 30);
        } else {
            key.state = state;
            key.deletion_date = None;
            key.pending_window_days = None;
        }
        Ok(())
    }

    pub fn enable_key(&self, key_arn: &str) -> anyhow::Result<()> {
        self.set_key_state(key_arn, KeyState::Enabled)
    }

    pub fn disable_key(&self, key_arn: &str) -> anyhow::Result<()> {
        self.set_key_state(key_arn, KeyState::Disabled)
    }

    /// Pending deletion with the 30-day default window.
    pub fn schedule_key_deletion(&self, key_arn: &str) -> anyhow::Result<()> {
        self.set_key_state(key_arn, KeyState::PendingDeletion)
    }

    /// Faults for operation `op` (e.g. `PutKeyPolicy`; `"*"` = every operation without its
    /// own entry). `Fault::default()` removes the entry.
    pub fn set_fault(&self, op: &str, fault: Fault) {
        self.inner.lock_faults().set(op, fault);
    }

    pub fn clear_faults(&self) {
        self.inner.lock_faults().clear();
    }

    pub fn faults(&self) -> BTreeMap<String, Fault> {
        self.inner.lock_faults().table()
    }

    /// Calls received over HTTP, by operation (unknown targets count as `Unknown`).
    pub fn call_counts(&self) -> BTreeMap<String, u64> {
        self.inner.lock_counts().calls.clone()
    }

    /// Calls of one operation.
    pub fn call_count(&self, op: &str) -> u64 {
        self.inner.lock_counts().calls.get(op).copied().unwrap_or(0)
    }

    /// Calls by operation and outcome (`ok` or the error code returned).
    pub fn outcome_counts(&self) -> BTreeMap<String, BTreeMap<String, u64>> {
        self.inner.lock_counts().outcomes.clone()
    }

    pub fn reset_counts(&self) {
        *self.inner.lock_counts() = Default::default();
    }

    /// How long UPDATING (and STARTING / STOPPING) lasts from now on.
    pub fn set_update_delay(&self, delay: Duration) {
        self.inner.lock_settings().update_delay = delay;
    }

    /// How long a key policy write takes to be seen, from the next write on.
    pub fn set_policy_propagation(&self, delay: Duration) {
        self.inner.lock_settings().policy_propagation = delay;
    }

    /// Who calls from now on: a role, user, root or assumed-role ARN.
    pub fn set_caller_arn(&self, arn: &str) -> anyhow::Result<()> {
        let patch = SettingsPatch {
            caller_arn: Some(arn.to_string()),
            ..SettingsPatch::default()
        };
        self.inner
            .lock_settings()
            .apply(patch)
            .map_err(|e| anyhow::anyhow!(e))
    }

    /// The identity GetCallerIdentity answers (a role's session ARN for a role).
    pub fn caller_identity_arn(&self) -> String {
        self.inner.caller().arn
    }

    pub fn set_strict_principals(&self, strict: bool) {
        self.inner.lock_settings().strict_principals = strict;
    }

    /// KMS's rule since 2025-08-18: refuse statements without Action or Resource.
    pub fn set_reject_incomplete_statements(&self, reject: bool) {
        self.inner.lock_settings().reject_incomplete_statements = reject;
    }

    /// Request quotas from now on (`None` = off).
    pub fn set_quotas(&self, quotas: Option<super::Quotas>) {
        self.inner.lock_settings().quotas = quotas;
    }

    /// Adds principals (role, user ARNs, any account) to the registry `strict_principals`
    /// checks and AssumeRole looks roles up in.
    pub fn add_principals<I: IntoIterator<Item = S>, S: Into<String>>(&self, arns: I) {
        self.inner
            .lock_principals()
            .extend(arns.into_iter().map(Into::into));
    }

    /// Registers roles (in any account) that AssumeRole may enter only with `external_id`.
    pub fn add_roles_with_external_id<I: IntoIterator<Item = S>, S: Into<String>>(
        &self,
        role_arns: I,
        external_id: &str,
    ) -> anyhow::Result<()> {
        let arns: Vec<String> = role_arns.into_iter().map(Into::into).collect();
        self.inner
            .register_principals(&arns, Some(external_id))
            .map_err(|e| anyhow::anyhow!(e))
    }

    /// The shortest AssumeRole DurationSeconds accepted from now on (STS: 900); lower it to
    /// see credentials expire in a test.
    pub fn set_min_session_seconds(&self, seconds: u64) {
        self.inner.lock_settings().min_session_seconds = seconds.max(1);
    }

    pub fn principals(&self) -> Vec<String> {
        self.inner.lock_principals().iter().cloned().collect()
    }

    /// The call log: records with a sequence number above `since` (0 = every kept record).
    pub fn calls(&self, since: u64) -> Vec<CallRecord> {
        self.inner.lock_calls().since(since)
    }

    /// Empties the call log (sequence numbers go on).
    pub fn clear_calls(&self) {
        self.inner.lock_calls().clear();
    }

    /// Everything, as the admin endpoint `/_emulator/state` shows it.
    pub fn state_json(&self) -> serde_json::Value {
        self.inner.state_json()
    }

    /// Stops the server (in-flight requests finish) and waits for it. Idempotent.
    pub async fn shutdown(&self) {
        let taken = lock(&self.stop).take();
        if let Some((tx, task)) = taken {
            let _ = tx.send(());
            let _ = task.await;
        }
    }
}
