//! The controller: turns the pure core (planner, policy engine) and the AWS adapters into a
//! product that converges every `ApplicationEncryption` and tells the truth about it.
//!
//! The pipeline of one reconcile ([`reconcile`]) is observe -> plan -> apply -> status:
//! - I/O: [`observe`] (reads), [`apply`] (writes), [`lifecycle`] (following MSF's update
//!   operations), and the Kubernetes side in [`kube_loop`]
//!   (finalizer, status patch, events), [`finalizer`], [`http`], [`leader`].
//! - PURE: [`status`] (the status builder), [`tenancy`] (the guard), [`backoff`].
//! - Leader election: [`leader`] elects, [`fence`] stops AWS writes once the Lease may be lost.
//! - Accounts per namespace: [`accounts`] (the file and the guard, PURE), [`fleet`] (a
//!   `context::Core` per account).
//! - [`identity`]: who the controller is in AWS (`sts:GetCallerIdentity`), kept current.
//! - Shared state: [`context`] (clients, defaults, caches), [`key_locks`], [`metrics`].
//! - [`restart_budget`]: how many restarts (updates of RUNNING applications) run at once (PURE);
//!   [`restart_seed`] frees, once per process, the slots of a previous process's ended updates.
//! - [`resync`]: how often `run` resyncs converged resources, so that resyncs stay under a share
//!   of the reconcile capacity and never starve new work (PURE arithmetic).
//! - [`key_write`]: PutKeyPolicy without losing another writer's edit (KMS has no ETag).

pub mod accounts;
pub mod apply;
pub mod arrivals;
pub mod backoff;
pub mod batch;
pub mod claims;
pub mod context;
pub mod fence;
pub mod finalizer;
pub mod fleet;
pub mod http;
pub mod identity;
pub mod key_locks;
pub mod key_write;
pub mod kube_loop;
pub mod leader;
pub mod lifecycle;
pub mod manifests;
pub mod metrics;
pub mod observe;
pub mod reconcile;
pub mod restart_budget;
pub mod restart_seed;
pub mod resync;
pub mod run_watch;
pub mod status;
pub mod tenancy;
pub mod update_watch;
