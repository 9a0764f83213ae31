//! Which resource keeps an application that several resources claim: the one rule
//! ([`tenancy::losing_to`]) applied to the peers the way `run` and `plan`/`apply` both see them,
//! so the three commands choose the same winner and a loser is never someone else's co-tenant.

use crate::controller::context::Core;
use crate::controller::fleet;
use crate::controller::reconcile::Peer;
use crate::controller::tenancy::{self, Claim};

/// For each peer, the index of the peer it loses its application to.
pub fn losers(core: &Core, peers: &[Peer]) -> Vec<Option<usize>> {
    // With an accounts file, the region is qualified by the namespace's account: the same
    // application name in two accounts is two applications.
    let regions: Vec<String> = peers
        .iter()
        .map(|p| {
            let region = p
                .spec
                .region
                .clone()
                .filter(|r| !r.is_empty())
                .unwrap_or_else(|| core.defaults.region.clone());
            fleet::claim_region(core, &p.namespace, &region)
        })
        .collect();
    let claims: Vec<Claim<'_>> = peers
        .iter()
        .zip(&regions)
        .map(|(p, region)| Claim {
            namespace: &p.namespace,
            name: &p.name,
            region,
            application_name: &p.spec.application_name,
            incumbent: p.incumbent,
        })
        .collect();
    tenancy::losing_to(&core.tenancy, &claims)
}

/// The `Conflict` message of `me`, which loses its application to `winner`.
pub fn conflict_message(core: &Core, me: &Peer, winner: &Peer) -> String {
    let region = me
        .spec
        .region
        .clone()
        .filter(|r| !r.is_empty())
        .unwrap_or_else(|| core.defaults.region.clone());
    let why = if winner.incumbent {
        "it already acts on the application"
    } else {
        "neither acts on it yet, and it comes first by namespace/name"
    };
    format!(
        "Application {} in {region} is already claimed by ApplicationEncryption {}/{} ({why}); delete one of the two.",
        me.spec.application_name, winner.namespace, winner.name
    )
}

/// The conflict message of the peer called `namespace/name`, if it loses.
pub fn conflict_of(core: &Core, peers: &[Peer], namespace: &str, name: &str) -> Option<String> {
    let me = peers
        .iter()
        .position(|p| p.namespace == namespace && p.name == name)?;
    let winner = losers(core, peers)[me]?;
    Some(conflict_message(core, &peers[me], &peers[winner]))
}
