//! Leader election on a `coordination.k8s.io/v1` Lease (crate `kube-lease-manager`: server-side
//! apply on the Lease, renewals before the deadline, tolerant of clock skew).
//!
//! With two replicas exactly one acts; the other keeps serving `/livez` and `/readyz` and takes
//! over once the leader stops renewing (it died, or lost the API server) for `duration` seconds.
//! Losing the lease stops the controllers at once: a former leader never keeps writing.

use std::future::Future;
use std::time::Duration;

use kube::Client;
use kube_lease_manager::LeaseManagerBuilder;
use tokio::sync::watch;

#[derive(Clone, Debug)]
pub struct LeaderConfig {
    pub lease_name: String,
    pub lease_namespace: String,
    /// Unique per replica (the pod name when known).
    pub identity: String,
    /// A lease not renewed for this long may be taken over.
    pub duration: Duration,
    /// Renew this long before the lease would expire.
    pub grace: Duration,
}

/// Runs `work` whenever this replica holds the lease, stopping it as soon as the lease is lost.
/// `on_role(true/false)` is told each change. Returns when `work` ends by itself (shutdown) or
/// on a Lease API error at start-up.
pub async fn run_when_leader<F, Fut>(
    client: Client,
    cfg: LeaderConfig,
    on_role: impl Fn(bool),
    mut work: F,
) -> anyhow::Result<()>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    let manager = LeaseManagerBuilder::new(client, &cfg.lease_name)
        .with_namespace(&cfg.lease_namespace)
        .with_identity(&cfg.identity)
        .with_duration(cfg.duration.as_secs().max(2))
        .with_grace(cfg.grace.as_secs().max(1))
        .with_field_manager("msf-cmk-controller")
        .build()
        .await
        .map_err(|e| {
            anyhow::anyhow!(
                "leader election on Lease {}/{}: {e}",
                cfg.lease_namespace,
                cfg.lease_name
            )
        })?;
    let (mut leading, _task) = manager.watch().await;
    on_role(false);
    tracing::info!(lease = %cfg.lease_name, namespace = %cfg.lease_namespace, identity = %cfg.identity, "waiting to become the leader");
    loop {
        wait_for(&mut leading, true).await?;
        tracing::info!(identity = %cfg.identity, "became the leader: starting the controllers");
        on_role(true);
        let mut running = tokio::spawn(work());
        tokio::select! {
            r = wait_for(&mut leading, false) => {
                running.abort();
                r?;
                tracing::warn!(identity = %cfg.identity, "lost the lease: controllers stopped, standing by");
            }
            _ = &mut running => {
                // The controllers only end on a shutdown signal: stop, do not restart them.
                return Ok(());
            }
        }
        on_role(false);
    }
}

async fn wait_for(rx: &mut watch::Receiver<bool>, want: bool) -> anyhow::Result<()> {
    rx.wait_for(|v| *v == want)
        .await
        .map(|_| ())
        .map_err(|_| anyhow::anyhow!("leader election task stopped"))
}
