//! The per-account state of one process (issue 11): one [`Core`] per client set of the
//! accounts file, chosen by namespace ([`Core::for_namespace`]). I/O only in building the
//! clients and asking each account who the controller is there.
//!
//! Why a whole `Core` per account rather than routing inside the clients: everything a
//! reconcile reads from the `Core` is per account anyway: the clients, the operator role the
//! key policies are written for, the caller identity `OperatorMismatch` compares it with. Key
//! locks, caches and policy-write times are keyed by key ARN, which names the account, so
//! separate maps lose nothing. Metrics are shared.

use std::collections::HashMap;
use std::sync::Arc;

use crate::aws::{AccountLimiters, ConnectOptions, RoleSet, StsApi, connect_roles};
use crate::controller::accounts::AccountsConfig;
use crate::controller::context::{Core, Settings};
use crate::controller::identity;
use crate::controller::metrics::Metrics;
use crate::controller::restart_budget::RestartBudget;
use crate::controller::tenancy::Tenancy;
use crate::planner::Defaults;

/// What a per-account `Core` knows about its place in the accounts file.
#[derive(Clone, Debug)]
pub struct AccountScope {
    pub config: Arc<AccountsConfig>,
    /// Per entry of the file, the index of its client set.
    pub set_of_entry: Arc<Vec<usize>>,
    /// This Core's client set.
    pub set: usize,
    pub account_id: String,
}

impl AccountScope {
    /// Whether `namespace` maps to this scope's client set.
    pub fn check_served(&self, namespace: &str) -> bool {
        self.config
            .entry_index(namespace)
            .is_some_and(|i| self.set_of_entry.get(i) == Some(&self.set))
    }

    /// The account guard for a resource of `namespace` (see `AccountEntry::check`).
    pub fn check(&self, namespace: &str, region: &str, key_id: Option<&str>) -> Result<(), String> {
        match self.config.entry_index(namespace) {
            Some(i) if self.set_of_entry.get(i) == Some(&self.set) => {
                self.config.accounts[i].check(namespace, region, key_id)
            }
            // Only reachable by a caller that picked the wrong Core: refuse rather than act.
            _ => Err(format!(
                "Namespace {namespace} is not mapped to account {}.",
                self.account_id
            )),
        }
    }
}

/// The per-account Cores, held by the process' own Core.
pub struct Fleet {
    pub config: Arc<AccountsConfig>,
    set_of_entry: Arc<Vec<usize>>,
    cores: Vec<Core>,
    stss: Vec<Arc<dyn StsApi>>,
}

/// What every per-account Core shares with the process' own.
pub struct Shared<'a> {
    pub defaults: &'a Defaults,
    pub tenancy: &'a Tenancy,
    pub settings: Settings,
    pub metrics: Arc<Metrics>,
}

impl Fleet {
    /// Builds one client set per distinct (account, roles); `wrap` decorates each Core's
    /// clients the way the process' own are (e.g. the leader fence).
    pub async fn connect(
        config: AccountsConfig,
        opts: &ConnectOptions,
        shared: Shared<'_>,
        wrap: impl Fn(&mut Core),
    ) -> anyhow::Result<Self> {
        let (set_of_entry, sets) = config.client_sets();
        let config = Arc::new(config);
        let set_of_entry = Arc::new(set_of_entry);
        // AWS quotas are per account and region: one set of limiters per account.
        let mut limiters: HashMap<String, AccountLimiters> = HashMap::new();
        // The rollout budget too: restarts count per account and region, whatever the roles.
        let mut budgets: HashMap<String, Arc<RestartBudget>> = HashMap::new();
        let mut cores = Vec::with_capacity(sets);
        let mut stss = Vec::with_capacity(sets);
        for set in 0..sets {
            let Some(i) = set_of_entry.iter().position(|s| *s == set) else {
                continue;
            };
            let e = &config.accounts[i];
            let roles = RoleSet {
                operator_role_arn: e.operator_role_arn.clone(),
                key_admin_role_arn: e.key_admin_role_arn.clone(),
                external_id: e.external_id.clone(),
            };
            let paced = limiters
                .entry(e.account_id.clone())
                .or_insert_with(|| AccountLimiters::new(&opts.rate_limits));
            let clients = connect_roles(opts, &roles, paced).await?;
            let defaults = Defaults {
                region: shared.defaults.region.clone(),
                // Key policies grant the role the controller acts as in this account.
                operator_role_arn: Some(e.operator_role_arn.clone()),
            };
            let mut core = Core::new(
                clients.msf,
                clients.kms,
                defaults,
                shared.tenancy.clone(),
                shared.settings,
                shared.metrics.clone(),
            );
            core.restart_budget = budgets
                .entry(e.account_id.clone())
                .or_insert_with(|| core.restart_budget.clone())
                .clone();
            core.account = Some(AccountScope {
                config: config.clone(),
                set_of_entry: set_of_entry.clone(),
                set,
                account_id: e.account_id.clone(),
            });
            wrap(&mut core);
            cores.push(core);
            stss.push(clients.sts);
        }
        Ok(Self {
            config,
            set_of_entry,
            cores,
            stss,
        })
    }

    /// The Core of `namespace`, when the file maps it.
    pub fn core_for(&self, namespace: &str) -> Option<&Core> {
        let i = self.config.entry_index(namespace)?;
        self.cores.get(*self.set_of_entry.get(i)?)
    }

    /// Asks each account once who the controller is there (`plan`, `apply`, and `run` before
    /// it starts); a failure leaves that account's check off, as for the pod's own identity.
    pub async fn ask_identities(&self) {
        for (core, sts) in self.cores.iter().zip(&self.stss) {
            identity::ask_once(sts.as_ref(), &core.caller).await;
        }
    }

    /// `run`: keeps every account's identity current; the tasks end with the returned guards.
    pub fn keep_identities_current(&self) -> Vec<tokio::task::JoinHandle<()>> {
        self.cores
            .iter()
            .zip(&self.stss)
            .map(|(core, sts)| {
                tokio::spawn(identity::keep_current(sts.clone(), core.caller.clone()))
            })
            .collect()
    }

    pub fn cores(&self) -> &[Core] {
        &self.cores
    }
}

/// The region a claim on an application is made in, qualified by the account when an accounts
/// file is in use: applications of one name in two accounts are two applications, not a
/// conflict. Unmapped namespaces are in the pod's own account (when known).
pub fn claim_region(core: &Core, namespace: &str, region: &str) -> String {
    if core.fleet.is_none() {
        return region.to_string();
    }
    let acting = core.for_namespace(namespace);
    let account = match &acting.account {
        Some(scope) => Some(scope.account_id.clone()),
        None => acting.caller.get().map(|c| c.account),
    };
    match account {
        Some(a) => format!("{region} (account {a})"),
        None => region.to_string(),
    }
}

/// Loads the accounts file (`--accounts-config`): bad input is the caller's `BadInput`.
pub fn load(path: &std::path::Path) -> Result<AccountsConfig, String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("cannot read accounts config {}: {e}", path.display()))?;
    AccountsConfig::parse(&text).map_err(|e| format!("{}: {e}", path.display()))
}
