//! The state shared by every reconcile in one process: AWS clients (metered), controller-wide
//! defaults, the tenancy guard, per-key locks and caches, per-object backoff, metrics.
//!
//! Used alike by `run` (the Kubernetes controller) and by `plan` / `apply` (manifests on disk).

use std::sync::Arc;
use std::time::Duration;

use crate::aws::{KmsApi, MsfApi};
use crate::controller::backoff::{Backoff, BackoffPolicy};
use crate::controller::fleet::{AccountScope, Fleet};
use crate::controller::identity::CallerCell;
use crate::controller::key_locks::{KeyLocks, ResolvedKeys};
use crate::controller::lifecycle::PolicyWrites;
use crate::controller::metrics::{MeteredKms, MeteredMsf, Metrics};
use crate::controller::restart_budget::RestartBudget;
use crate::controller::tenancy::Tenancy;
use crate::planner::Defaults;
use crate::policy::InstanceName;

/// Timing knobs.
#[derive(Clone, Copy, Debug)]
pub struct Settings {
    /// Steady-state resync: drift made in AWS raises no watch event, so look again this often.
    pub resync: Duration,
    /// How long one reconcile's GetKeyPolicy result may be reused by the other applications of
    /// the same key (shared reads within a resync wave).
    pub policy_share_window: Duration,
    /// Backoff for transient errors.
    pub backoff: BackoffPolicy,
    /// After a key policy write, how long UpdateApplication waits for KMS to propagate it
    /// (`--policy-settle`). Zero switches in the same pass.
    pub policy_settle: Duration,
    /// How long after our key policy write MSF refusing the update for key permissions is
    /// read as propagation (transient) rather than a real refusal (terminal).
    pub propagation_window: Duration,
    /// Re-reads of a written policy that does not show the write yet, before
    /// `KeyPolicyNotVerified`, and the pause between them.
    pub verify_attempts: u32,
    pub verify_interval: Duration,
    /// Count the process start as a possible key policy write when judging a refusal: a
    /// restarted controller does not know what it wrote just before (`run`). Off for `apply`,
    /// which knows every write of its run.
    pub writes_before_start_unknown: bool,
    /// The rollout budget (`--max-concurrent-restarts`): our updates of RUNNING applications
    /// in progress at once per account and region; 0 = no budget.
    pub max_concurrent_restarts: u32,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            resync: Duration::from_secs(300),
            policy_share_window: Duration::from_secs(30),
            backoff: BackoffPolicy::default(),
            policy_settle: Duration::from_secs(20),
            propagation_window: Duration::from_secs(300),
            verify_attempts: 4,
            verify_interval: Duration::from_secs(1),
            writes_before_start_unknown: true,
            max_concurrent_restarts:
                crate::controller::restart_budget::DEFAULT_MAX_CONCURRENT_RESTARTS,
        }
    }
}

pub struct Core {
    pub msf: Arc<dyn MsfApi>,
    pub kms: Arc<dyn KmsApi>,
    pub defaults: Defaults,
    pub tenancy: Tenancy,
    pub key_locks: KeyLocks,
    pub resolved_keys: ResolvedKeys,
    pub backoff: Backoff,
    pub metrics: Arc<Metrics>,
    pub settings: Settings,
    /// When this process last wrote each key's policy (UpdateApplication waits for it).
    pub policy_writes: PolicyWrites,
    /// Who the controller is in AWS (`sts:GetCallerIdentity`); empty until asked.
    pub caller: CallerCell,
    /// The account this Core acts in (accounts file); `None`: the pod's own identity.
    pub account: Option<AccountScope>,
    /// The per-account Cores (`--accounts-config`), on the process' own Core only.
    pub fleet: Option<Arc<Fleet>>,
    /// The rollout budget of this Core's account (shared by the account's client sets).
    pub restart_budget: Arc<RestartBudget>,
    /// This installation's name (`--instance-name`): it owns only the key policy statements
    /// under its name; the per-account Cores carry the same.
    pub instance: InstanceName,
}

impl Core {
    /// Wraps the clients in the metering decorators so every AWS call is counted.
    pub fn new(
        msf: Arc<dyn MsfApi>,
        kms: Arc<dyn KmsApi>,
        defaults: Defaults,
        tenancy: Tenancy,
        settings: Settings,
        metrics: Arc<Metrics>,
    ) -> Self {
        // The metering labels each call with the account this Core's identity is in.
        let caller = CallerCell::default();
        for pacing in [msf.pacing(), kms.pacing()].into_iter().flatten() {
            metrics.watch_pacing(&caller, pacing);
        }
        Self {
            msf: Arc::new(MeteredMsf {
                inner: msf,
                metrics: metrics.clone(),
                caller: caller.clone(),
            }),
            kms: Arc::new(MeteredKms {
                inner: kms,
                metrics: metrics.clone(),
                caller: caller.clone(),
            }),
            defaults,
            tenancy,
            key_locks: KeyLocks::new(settings.policy_share_window),
            // Aliases are rarely re-pointed; a resync period is a fair bound on staleness.
            resolved_keys: ResolvedKeys::new(settings.resync),
            backoff: Backoff::new(settings.backoff),
            metrics,
            settings,
            policy_writes: PolicyWrites::new(chrono::Utc::now()),
            caller,
            account: None,
            fleet: None,
            restart_budget: Arc::new(RestartBudget::new(settings.max_concurrent_restarts)),
            instance: InstanceName::default(),
        }
    }

    /// Sets the rollout budget (`--max-concurrent-restarts`); before any reconcile.
    pub fn set_max_concurrent_restarts(&mut self, limit: u32) {
        self.settings.max_concurrent_restarts = limit;
        self.restart_budget = Arc::new(RestartBudget::new(limit));
    }

    /// The Core that acts for `namespace`: its account's when the accounts file maps it,
    /// else this one (the pod's own identity).
    pub fn for_namespace(&self, namespace: &str) -> &Core {
        self.fleet
            .as_ref()
            .and_then(|f| f.core_for(namespace))
            .unwrap_or(self)
    }

    /// Whether a resource of `namespace` is served by this Core: a co-tenant of a key must be
    /// reconciled with the same identity in the same account.
    pub fn serves(&self, namespace: &str) -> bool {
        match (&self.account, &self.fleet) {
            (Some(scope), _) => scope.check_served(namespace),
            (None, Some(f)) => f.config.entry_index(namespace).is_none(),
            (None, None) => true,
        }
    }
}
