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

#[derive(Clone, Debug)]
pub struct App {
    pub name: String,
    pub arn: String,
    pub runtime: String,
    pub service_execution_role: String,
    pub status: ApplicationStatus,
    /// A status change in progress: the status to reach and when.
    pub transition: Option<(Instant, ApplicationStatus)>,
    pub version_id: i64,
    pub conditional_token: String,
    pub encryption: AppliedEncryption,
    pub created: SystemTime,
    pub last_updated: SystemTime,
}

impl App {
    pub fn settle(&mut self, now: Instant) {
        if let Some((at, to)) = &self.transition
            && now >= *at
        {
            self.status = to.clone();
            self.transition = None;
        }
    }

    /// Starts a transition through `via` that ends in `to` after `delay`.
    pub fn begin(&mut self, via: ApplicationStatus, to: ApplicationStatus, delay: Duration) {
        if delay.is_zero() {
            self.status = to;
            self.transition = None;
        } else {
            self.status = via;
            self.transition = Some((Instant::now() + delay, to));
        }
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
            encryption: self.encryption.clone(),
        }
    }
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
    pub policy: String,
    pub created: SystemTime,
    pub deletion_date: Option<SystemTime>,
    pub pending_window_days: Option<i64>,
}

impl Key {
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
        encryption: AppliedEncryption {
            key_type: AppliedKeyType::AwsOwnedKey,
            key_id: None,
        },
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
        created: SystemTime::now(),
        deletion_date: None,
        pending_window_days: None,
    }
}
