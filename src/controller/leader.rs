//! Leader election on a `coordination.k8s.io/v1` Lease (crate `kube-lease-manager`: server-side
//! apply on the Lease, renewals before the deadline, tolerant of clock skew), fenced.
//!
//! With two replicas exactly one acts; the other keeps serving `/livez` and `/readyz` and takes
//! over once the leader stops renewing (it died, or lost the API server) for `duration` seconds.
//!
//! Fencing: `kube-lease-manager` keeps saying "leader" while its renewals fail (it only logs
//! them), so a leader cut off from the API server would go on writing to AWS after the standby
//! took over. This module therefore also reads the Lease itself every `poll` and feeds the
//! [`WriteFence`]: writes are allowed only until the last renewal the API server showed us
//! plus the lease duration minus a margin. When that deadline passes, every AWS write is
//! refused in the write path (see `fence`) and the controllers are stopped here as well; they
//! start again only once a read shows this replica renewed the Lease (the partition healed
//! before anyone took over), or never, if another replica holds it.

use std::future::Future;
use std::time::{Duration, SystemTime};

use k8s_openapi::api::coordination::v1::Lease;
use kube::{Api, Client};
use kube_lease_manager::LeaseManagerBuilder;
use tokio::sync::watch;

use crate::controller::fence::WriteFence;

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

impl LeaderConfig {
    /// The Lease as `kube-lease-manager` writes it: whole seconds.
    fn lease_secs(&self) -> (u64, u64) {
        (self.duration.as_secs().max(2), self.grace.as_secs().max(1))
    }

    /// Writes stop this long before the Lease could expire: half the grace, so that a renewal
    /// made on time (at `duration - grace`) and seen within `grace / 2` never closes the fence,
    /// while clock skew and a request still on the wire have `grace / 2` before the standby
    /// may act.
    pub fn fence_margin(&self) -> Duration {
        Duration::from_secs(self.lease_secs().1) / 2
    }

    /// How often the Lease is read to follow renewals: a quarter of the grace (250 ms to 2 s),
    /// so at least one read falls between a renewal and the deadline it must extend.
    pub fn poll_interval(&self) -> Duration {
        (Duration::from_secs(self.lease_secs().1) / 4)
            .clamp(Duration::from_millis(250), Duration::from_secs(2))
    }

    /// The fence for this replica's writes.
    pub fn fence(&self) -> WriteFence {
        WriteFence::for_lease(&self.identity, self.fence_margin())
    }
}

/// Runs `work` whenever this replica holds the lease and its fence is open, stopping it as
/// soon as the lease is lost or the fence closes. `on_role(true/false)` is told each change.
/// Returns when `work` ends by itself (shutdown) or on a Lease API error at start-up.
pub async fn run_when_leader<F, Fut>(
    client: Client,
    cfg: LeaderConfig,
    fence: WriteFence,
    on_role: impl Fn(bool),
    mut work: F,
) -> anyhow::Result<()>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    let (duration, grace) = cfg.lease_secs();
    let manager = LeaseManagerBuilder::new(client.clone(), &cfg.lease_name)
        .with_namespace(&cfg.lease_namespace)
        .with_identity(&cfg.identity)
        .with_duration(duration)
        .with_grace(grace)
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
    let poller = AbortOnDrop(tokio::spawn(follow_lease(
        Api::namespaced(client, &cfg.lease_namespace),
        cfg.lease_name.clone(),
        fence.clone(),
        cfg.poll_interval(),
    )));
    on_role(false);
    tracing::info!(lease = %cfg.lease_name, namespace = %cfg.lease_namespace, identity = %cfg.identity, fence_margin = ?cfg.fence_margin(), "waiting to become the leader");
    loop {
        wait_for(&mut leading, true).await?;
        // The fence opens when the poller reads the Lease in our name: wait for it, unless
        // the lease manager says we lost the lease meanwhile.
        tokio::select! {
            _ = fence.opened() => {}
            r = wait_for(&mut leading, false) => { r?; continue; }
        }
        tracing::info!(identity = %cfg.identity, "became the leader: starting the controllers");
        on_role(true);
        let mut running = tokio::spawn(work());
        tokio::select! {
            r = wait_for(&mut leading, false) => {
                running.abort();
                r?;
                tracing::warn!(identity = %cfg.identity, "lost the lease: controllers stopped, standing by");
            }
            _ = fence.closed() => {
                running.abort();
                tracing::warn!(identity = %cfg.identity, "the Lease was not renewed in time (API server unreachable?): AWS writes fenced and controllers stopped until it is renewed or taken over");
            }
            _ = &mut running => {
                // The controllers only end on a shutdown signal: stop, do not restart them.
                drop(poller);
                return Ok(());
            }
        }
        on_role(false);
    }
}

/// Reads the Lease every `every` and tells the fence what it shows. A failed read tells
/// nothing: the fence then closes by itself at the deadline it already knows.
async fn follow_lease(api: Api<Lease>, name: String, fence: WriteFence, every: Duration) {
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // Said once per outage, not at every poll: a replica that cannot read its Lease (API
    // server unreachable, or no `get` on leases) never opens its fence.
    let mut failing = false;
    loop {
        tick.tick().await;
        // Bounded: a read hanging on a dead connection must not delay the next one.
        let read = tokio::time::timeout(every.max(Duration::from_secs(1)), api.get_opt(&name))
            .await
            .map_err(|_| "timed out".to_string())
            .and_then(|r| r.map_err(|e| e.to_string()));
        match &read {
            Err(e) if !failing => {
                tracing::warn!(lease = %name, error = %e, "cannot read the Lease: this replica writes to AWS only while a read shows it holds a renewed Lease");
            }
            Ok(_) if failing => tracing::info!(lease = %name, "reading the Lease again"),
            _ => {}
        }
        failing = read.is_err();
        match read {
            Ok(Some(lease)) => {
                let spec = lease.spec.unwrap_or_default();
                let renewed = spec.renew_time.map(|t| SystemTime::from(t.0));
                let duration = spec
                    .lease_duration_seconds
                    .and_then(|s| u64::try_from(s).ok())
                    .map(Duration::from_secs);
                fence.observe_lease(spec.holder_identity.as_deref(), renewed, duration);
            }
            Ok(None) => fence.revoke(),
            Err(_) => {}
        }
    }
}

struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

async fn wait_for(rx: &mut watch::Receiver<bool>, want: bool) -> anyhow::Result<()> {
    rx.wait_for(|v| *v == want)
        .await
        .map(|_| ())
        .map_err(|_| anyhow::anyhow!("leader election task stopped"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(duration: u64) -> LeaderConfig {
        LeaderConfig {
            lease_name: "l".into(),
            lease_namespace: "ns".into(),
            identity: "me".into(),
            duration: Duration::from_secs(duration),
            grace: Duration::from_secs(duration / 3),
        }
    }

    #[test]
    fn the_fence_closes_after_a_renewal_is_due_and_before_the_lease_expires() {
        for d in [3, 6, 15, 30, 60] {
            let c = cfg(d);
            let (duration, grace) = c.lease_secs();
            let (duration, grace) = (Duration::from_secs(duration), Duration::from_secs(grace));
            let margin = c.fence_margin();
            // Renewals happen at duration - grace; the fence closes at duration - margin.
            assert!(margin > Duration::ZERO, "{d}");
            assert!(
                duration - margin > duration - grace,
                "{d}: renewal before the deadline"
            );
            assert!(
                c.poll_interval() <= grace - margin,
                "{d}: a read between the renewal and the deadline"
            );
        }
    }
}
