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

/// Which of `all` (key id, application name) a reconcile of `me` needs as peers: those that may
/// share its key (the same key id, or an id that is not a full key ARN and may resolve to it),
/// and every claim of their applications and of its own (conflicts among them). Both `run`
/// and `apply` give a reconcile only these: a reconcile walks its peers (co-tenants, claims),
/// so all N as peers of each of N resources cost O(N²) (5 s of CPU at N = 1,000).
pub fn relevant(all: &[(Option<&str>, &str)], me: (Option<&str>, &str)) -> Vec<usize> {
    let my_key = me.0.filter(|k| !k.is_empty());
    let may_share_key = |key: Option<&str>| match (my_key, key) {
        (Some(mine), Some(theirs)) => mine == theirs || !is_key_arn(mine) || !is_key_arn(theirs),
        _ => false,
    };
    let applications: std::collections::HashSet<&str> = all
        .iter()
        .filter(|(key, _)| may_share_key(*key))
        .map(|(_, app)| *app)
        .chain([me.1])
        .collect();
    all.iter()
        .enumerate()
        .filter(|(_, (key, app))| applications.contains(app) || may_share_key(*key))
        .map(|(i, _)| i)
        .collect()
}

/// A full key ARN names one key; anything else (alias, bare id) may resolve to any key.
fn is_key_arn(key_id: &str) -> bool {
    key_id.starts_with("arn:") && key_id.contains(":key/")
}
