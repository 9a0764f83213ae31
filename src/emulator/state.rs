//! The emulated world: applications, keys and aliases, per account and region.
//!
//! Status transitions (UPDATING -> RUNNING, STARTING -> RUNNING, ...) are resolved lazily
//! on every read from a deadline, so the emulator needs no background task and a test that
//! waits the configured delay always sees the settled status.

use std::collections::BTreeMap;
use std::time::{Duration, Instant, SystemTime};

use crate::domain::{
    ApplicationStatus, AppliedEncryption, AppliedKeyType, KeyManager, KeyState,
    ObservedApplication, ObservedKey,
};

/// Where a resource lives.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Scope {
    pub account: String,
    pub region: String,
}

/// What an update changes and a rollback restores.
#[derive(Clone, Debug, PartialEq)]
pub struct AppConfig {
    pub encryption: AppliedEncryption,
    pub snapshots_enabled: bool,
}

/// A rollback scheduled at the end of an update: the configuration and version to return to.
#[derive(Clone, Debug)]
pub struct Rollback {
    pub config: AppConfig,
    pub version_id: i64,
    pub error: String,
}

/// A status change in progress.
#[derive(Clone, Debug)]
pub struct Transition {
    pub at: Instant,
    pub to: ApplicationStatus,
    /// The operation that ends with it.
    pub operation_id: Option<String>,
    pub rollback: Option<Rollback>,
}

#[derive(Clone, Debug)]
pub struct App {
    pub name: String,
    pub arn: String,
    pub runtime: String,
    pub service_execution_role: String,
    pub status: ApplicationStatus,
    pub transition: Option<Transition>,
    pub version_id: i64,
    pub conditional_token: String,
    pub config: AppConfig,
    /// `ApplicationVersionUpdatedFrom` / `RolledBackFrom` / `RolledBackTo`, as MSF reports them.
    pub updated_from: Option<i64>,
    pub rolled_back_from: Option<i64>,
    pub rolled_back_to: Option<i64>,
    /// Newest last.
    pub operations: Vec<Operation>,
    pub created: SystemTime,
    pub last_updated: SystemTime,
}

impl App {
    /// Ends a transition whose time has come: status, operation outcome, rollback.
    pub fn settle(&mut self, now: Instant) {
        let due = self.transition.as_ref().is_some_and(|t| now >= t.at);
        if !due {
            return;
        }
        let Some(t) = self.transition.take() else {
            return;
        };
        // When it ended, on the wall clock (the deadline may be a while ago).
        let ended = SystemTime::now()
            .checked_sub(now.saturating_duration_since(t.at))
            .unwrap_or_else(SystemTime::now);
        self.status = t.to;
        match t.rollback {
            None => {
                if let Some(op) = self.operation_mut(t.operation_id.as_deref()) {
                    op.finish(ended, OperationStatus::Successful, None);
                }
            }
            Some(rb) => self.roll_back(rb, t.operation_id.as_deref(), ended),
        }
    }

    /// MSF's automatic rollback: the previous configuration comes back as a new version, and
    /// the update's operation fails, naming the rollback's own operation.
    fn roll_back(&mut self, rb: Rollback, update_op: Option<&str>, ended: SystemTime) {
        let failed_version = self.version_id;
        self.config = rb.config;
        self.bump_version();
        self.last_updated = ended;
        self.rolled_back_from = Some(failed_version);
        self.rolled_back_to = Some(rb.version_id);
        let rollback_id = new_operation_id();
        self.operations.push(Operation {
            id: rollback_id.clone(),
            operation: "RollbackApplication".into(),
            status: OperationStatus::Successful,
            start: ended,
            end: Some(ended),
            version_change: Some((failed_version, self.version_id)),
            failure: None,
        });
        if let Some(op) = self.operation_mut(update_op) {
            op.finish(
                ended,
                OperationStatus::Failed,
                Some(OperationFailure {
                    rollback_operation_id: Some(rollback_id),
                    error: rb.error,
                }),
            );
        }
    }

    fn operation_mut(&mut self, id: Option<&str>) -> Option<&mut Operation> {
        let id = id?;
        self.operations.iter_mut().rev().find(|o| o.id == id)
    }

    /// Starts a transition through `via` that ends in `to` after `delay`, completing
    /// `operation_id` (and rolling back, when `rollback` is given) at its end.
    pub fn begin(
        &mut self,
        via: ApplicationStatus,
        to: ApplicationStatus,
        delay: Duration,
        operation_id: Option<String>,
        rollback: Option<Rollback>,
    ) {
        let now = Instant::now();
        self.status = via;
        self.transition = Some(Transition {
            at: now + delay,
            to,
            operation_id,
            rollback,
        });
        // A zero delay ends at once, through the same path as a timed one.
        self.settle(now);
    }

    /// Records a new operation, in progress; returns its id.
    pub fn start_operation(
        &mut self,
        operation: &str,
        version_change: Option<(i64, i64)>,
    ) -> String {
        let id = new_operation_id();
        self.operations.push(Operation {
            id: id.clone(),
            operation: operation.to_string(),
            status: OperationStatus::InProgress,
            start: SystemTime::now(),
            end: None,
            version_change,
            failure: None,
        });
        // MSF keeps a bounded history; so does the emulator.
        if self.operations.len() > MAX_OPERATIONS {
            self.operations.remove(0);
        }
        id
    }

    /// A new version: MSF bumps the version id and the conditional token on every change.
    pub fn bump_version(&mut self) {
        self.version_id += 1;
        self.conditional_token = new_token();
        self.last_updated = SystemTime::now();
    }

    pub fn observed(&self) -> ObservedApplication {
        ObservedApplication {
            name: self.name.clone(),
            arn: self.arn.clone(),
            version_id: self.version_id,
            conditional_token: Some(self.conditional_token.clone()),
            status: self.status.clone(),
            runtime_environment: self.runtime.clone(),
            encryption: self.config.encryption.clone(),
        }
    }
}

/// Operations kept per application.
pub const MAX_OPERATIONS: usize = 1_000;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OperationStatus {
    InProgress,
    Successful,
    Failed,
}

impl OperationStatus {
    pub fn as_wire(self) -> &'static str {
        match self {
            Self::InProgress => "IN_PROGRESS",
            Self::Successful => "SUCCESSFUL",
            Self::Failed => "FAILED",
        }
    }
}

#[derive(Clone, Debug)]
pub struct OperationFailure {
    pub rollback_operation_id: Option<String>,
    pub error: String,
}

/// One entry of ListApplicationOperations.
#[derive(Clone, Debug)]
pub struct Operation {
    pub id: String,
    pub operation: String,
    pub status: OperationStatus,
    pub start: SystemTime,
    pub end: Option<SystemTime>,
    /// (from, to) version ids.
    pub version_change: Option<(i64, i64)>,
    pub failure: Option<OperationFailure>,
}

impl Operation {
    fn finish(
        &mut self,
        at: SystemTime,
        status: OperationStatus,
        failure: Option<OperationFailure>,
    ) {
        self.status = status;
        self.end = Some(at);
        self.failure = failure;
    }
}

pub fn new_operation_id() -> String {
    uuid::Uuid::new_v4().simple().to_string()
}

pub fn new_token() -> String {
    uuid::Uuid::new_v4().simple().to_string()
}

#[derive(Clone, Debug)]
pub struct Key {
    pub id: String,
    pub arn: String,
    pub account: String,
    pub region: String,
    pub description: String,
    pub spec: String,
    pub usage: String,
    pub state: KeyState,
    /// The policy every reader sees now.
    pub policy: String,
    /// Writes not yet visible (KMS is eventually consistent), oldest first, with the time
    /// each becomes visible.
    pub pending_policies: Vec<(Instant, String)>,
    pub created: SystemTime,
    pub deletion_date: Option<SystemTime>,
    pub pending_window_days: Option<i64>,
}

impl Key {
    /// Makes the writes whose time has come visible.
    pub fn settle_policy(&mut self, now: Instant) {
        let due = self.pending_policies.partition_point(|(at, _)| *at <= now);
        if let Some((_, latest)) = self.pending_policies.drain(..due).next_back() {
            self.policy = latest;
        }
    }

    /// The policy as readers see it at `now`, without settling.
    pub fn visible_policy(&self, now: Instant) -> &str {
        self.pending_policies
            .iter()
            .rev()
            .find(|(at, _)| *at <= now)
            .map_or(self.policy.as_str(), |(_, p)| p.as_str())
    }

    /// The last policy written, visible or not: what the key will say once KMS settles.
    pub fn latest_policy(&self) -> &str {
        self.pending_policies
            .last()
            .map_or(self.policy.as_str(), |(_, p)| p.as_str())
    }

    /// A write that becomes visible after `delay`.
    pub fn write_policy(&mut self, policy: String, delay: Duration) {
        let now = Instant::now();
        self.settle_policy(now);
        if delay.is_zero() && self.pending_policies.is_empty() {
            self.policy = policy;
        } else {
            // Visibility never goes backwards: a later write is not seen before an earlier one.
            let at = (now + delay).max(self.pending_policies.last().map_or(now, |(t, _)| *t));
            self.pending_policies.push((at, policy));
        }
    }

    pub fn observed(&self) -> ObservedKey {
        ObservedKey {
            arn: self.arn.clone(),
            key_id: self.id.clone(),
            account: self.account.clone(),
            region: self.region.clone(),
            state: self.state.clone(),
            spec: self.spec.clone(),
            usage: self.usage.clone(),
            manager: KeyManager::Customer,
        }
    }
}

#[derive(Clone, Debug)]
pub struct Alias {
    pub name: String,
    pub arn: String,
    pub target_key_id: String,
    pub created: SystemTime,
}

/// Everything in one account and region.
#[derive(Clone, Debug, Default)]
pub struct RegionState {
    pub apps: BTreeMap<String, App>,
    pub keys: BTreeMap<String, Key>,
    pub aliases: BTreeMap<String, Alias>,
}

/// What a key reference names, once looked up.
pub enum KeyLookup {
    Found(Scope, String),
    /// KMS's message for the miss.
    Missing(String),
}

#[derive(Debug, Default)]
pub struct World {
    pub scopes: BTreeMap<Scope, RegionState>,
}

impl World {
    pub fn scope_mut(&mut self, scope: &Scope) -> &mut RegionState {
        self.scopes.entry(scope.clone()).or_default()
    }

    pub fn app_mut(&mut self, scope: &Scope, name: &str) -> Option<&mut App> {
        let app = self.scopes.get_mut(scope)?.apps.get_mut(name)?;
        app.settle(Instant::now());
        Some(app)
    }

    pub fn key(&self, scope: &Scope, id: &str) -> Option<&Key> {
        self.scopes.get(scope)?.keys.get(id)
    }

    pub fn key_mut(&mut self, scope: &Scope, id: &str) -> Option<&mut Key> {
        self.scopes.get_mut(scope)?.keys.get_mut(id)
    }

    /// Resolves a key id, key ARN and, when `aliases` is true, an alias name or alias ARN, as
    /// seen from `caller` (a key ARN may name another account: cross-account use).
    pub fn lookup_key(&self, caller: &Scope, key_ref: &str, aliases: bool) -> KeyLookup {
        let not_found = || KeyLookup::Missing(format!("Key '{key_ref}' does not exist"));
        if let Some(rest) = key_ref.strip_prefix("arn:") {
            let parts: Vec<&str> = rest.splitn(5, ':').collect();
            let [_partition, service, region, account, resource] = parts[..] else {
                return not_found();
            };
            if service != "kms" {
                return not_found();
            }
            if region != caller.region {
                return KeyLookup::Missing(format!("Invalid arn {region}"));
            }
            let scope = Scope {
                account: account.to_string(),
                region: region.to_string(),
            };
            if let Some(id) = resource.strip_prefix("key/") {
                return match self.key(&scope, id) {
                    Some(_) => KeyLookup::Found(scope, id.to_string()),
                    None => KeyLookup::Missing(format!(
                        "Key 'arn:aws:kms:{region}:{account}:key/{id}' does not exist"
                    )),
                };
            }
            if aliases && resource.starts_with("alias/") {
                return self.lookup_alias(&scope, resource, key_ref);
            }
            return not_found();
        }
        if key_ref.starts_with("alias/") {
            if !aliases {
                return not_found();
            }
            return self.lookup_alias(caller, key_ref, key_ref);
        }
        match self.key(caller, key_ref) {
            Some(_) => KeyLookup::Found(caller.clone(), key_ref.to_string()),
            None => KeyLookup::Missing(format!(
                "Key 'arn:aws:kms:{}:{}:key/{key_ref}' does not exist",
                caller.region, caller.account
            )),
        }
    }

    fn lookup_alias(&self, scope: &Scope, alias: &str, shown: &str) -> KeyLookup {
        match self.scopes.get(scope).and_then(|s| s.aliases.get(alias)) {
            Some(a) => KeyLookup::Found(scope.clone(), a.target_key_id.clone()),
            None => KeyLookup::Missing(format!("Alias {shown} is not found.")),
        }
    }

    /// The key a key ARN names, for the in-process API.
    pub fn key_by_arn(&self, arn: &str) -> Option<&Key> {
        self.scopes
            .values()
            .flat_map(|s| s.keys.values())
            .find(|k| k.arn == arn)
    }

    pub fn key_by_arn_mut(&mut self, arn: &str) -> Option<&mut Key> {
        self.scopes
            .values_mut()
            .flat_map(|s| s.keys.values_mut())
            .find(|k| k.arn == arn)
    }
}

/// A fresh application in `status`, encrypted with the AWS owned key.
pub fn new_app(scope: &Scope, name: &str, runtime: &str, status: ApplicationStatus) -> App {
    let now = SystemTime::now();
    App {
        name: name.to_string(),
        arn: format!(
            "arn:aws:kinesisanalytics:{}:{}:application/{name}",
            scope.region, scope.account
        ),
        runtime: runtime.to_string(),
        service_execution_role: format!("arn:aws:iam::{}:role/msf-{name}", scope.account),
        status,
        transition: None,
        version_id: 1,
        conditional_token: new_token(),
        config: AppConfig {
            encryption: AppliedEncryption {
                key_type: AppliedKeyType::AwsOwnedKey,
                key_id: None,
            },
            snapshots_enabled: true,
        },
        updated_from: None,
        rolled_back_from: None,
        rolled_back_to: None,
        operations: Vec::new(),
        created: now,
        last_updated: now,
    }
}

/// A fresh, enabled key.
pub fn new_key(scope: &Scope, policy: String, spec: &str, usage: &str, description: &str) -> Key {
    let id = uuid::Uuid::new_v4().to_string();
    Key {
        arn: format!("arn:aws:kms:{}:{}:key/{id}", scope.region, scope.account),
        id,
        account: scope.account.clone(),
        region: scope.region.clone(),
        description: description.to_string(),
        spec: spec.to_string(),
        usage: usage.to_string(),
        state: KeyState::Enabled,
        policy,
        pending_policies: Vec::new(),
        created: SystemTime::now(),
        deletion_date: None,
        pending_window_days: None,
    }
}
