//! Once per process, right after the rollout budget is seeded from the statuses: asks MSF
//! about every seeded slot and frees those whose update has ended (I/O).
//!
//! Why: a leader started after a SIGKILL counts the updates its predecessor's statuses show
//! in progress ([`crate::controller::lifecycle::seed_restart_budget`]). Most of them ended
//! while no process ran, but each slot was freed only when its resource's reconcile came
//! round, behind every other resource of the first pass (at a thousand resources under AWS
//! throttling, minutes: longer than a leader lives when it is killed every half minute). Until
//! then every restart waited. One DescribeApplication per seeded slot (at most the budget
//! plus the updates left in flight) frees them at once. A read that fails leaves the slot to
//! the resource's own reconcile, as before.

use std::collections::BTreeSet;
use std::sync::Arc;

use crate::api::ApplicationEncryption;
use crate::controller::context::Core;
use crate::controller::lifecycle;
use crate::controller::restart_budget;

/// Frees the seeded slots of updates MSF shows ended (or applications gone), in the account
/// of every namespace of `objects`; returns how many were freed.
pub async fn free_ended(core: &Core, objects: &[Arc<ApplicationEncryption>]) -> usize {
    let namespaces: BTreeSet<&str> = objects
        .iter()
        .filter_map(|o| o.metadata.namespace.as_deref())
        .collect();
    // One Core per account: namespaces of one account share its budget.
    let mut cores: Vec<&Core> = vec![core];
    for ns in namespaces {
        let c = core.for_namespace(ns);
        if !cores
            .iter()
            .any(|k| Arc::ptr_eq(&k.restart_budget, &c.restart_budget))
        {
            cores.push(c);
        }
    }
    let mut freed = 0;
    for c in cores {
        for (region, application) in c.restart_budget.seeded() {
            let ended = match c
                .msf
                .describe_application_detail(&region, &application)
                .await
            {
                Ok(d) => !restart_budget::in_progress(&d.application.status),
                Err(e) => e.is_not_found(),
            };
            if ended && c.restart_budget.release_seeded(&region, &application) {
                freed += 1;
                lifecycle::report_slots(c, &region);
            }
        }
    }
    if freed > 0 {
        tracing::info!(
            freed,
            "freed the restart slots of updates a previous process left that have ended"
        );
    }
    freed
}
