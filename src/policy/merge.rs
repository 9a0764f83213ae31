//! Adds, repairs and removes the controller-owned statements of a key policy.
//!
//! Owned statements are rebuilt from scratch from the grants they hold (plus the additions,
//! minus the removals), so the output is deterministic. A statement is owned only when it is
//! exactly what the controller writes ([`super::owned::recognise`]); one that merely carries
//! the `MsfCmk` Sid prefix (a Deny, a person's grant, an edited copy) belongs to a person, and
//! merge refuses to write anything until it is renamed ([`MergeError::NotMergeable`]).
//!
//! Each controller instance (`--instance-name`) owns only the statements under its own Sids
//! ([`super::sid`]): another instance's statements are copied like a person's, so they count
//! towards the 32 KB and the lock-out check and are never changed. The statements written
//! under the Sids of the releases before readable Sids are the default instance's: its next
//! merge rewrites them under the readable Sids.
//!
//! Statements the instance does not own are copied as they are, in their order; its owned
//! block takes the place of its first owned statement, or goes last.

use std::collections::BTreeSet;

use serde_json::{Map, Value};

use super::MAX_POLICY_BYTES;
use super::document::{Effect, ParseError, PolicyDocument};
use super::evaluator::{Decision, Request, evaluate};
use super::instance::InstanceName;
use super::owned::{build_for, extract};
use super::principal::Principal;
use crate::arn::{Arn, ArnError};

pub use super::owned::GrantState;

/// One application to grant, with the operator role that switches it.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Grant {
    pub application_arn: String,
    pub operator_role_arn: String,
}

#[derive(Debug, thiserror::Error)]
pub enum MergeError {
    #[error(
        "the merged key policy would be {bytes} bytes, over KMS's limit of {limit} bytes: \
         use another key for further applications or shorten the policy's other statements"
    )]
    TooLarge { bytes: usize, limit: usize },
    #[error(transparent)]
    InvalidArn(#[from] ArnError),
    #[error(
        "the merged key policy would take kms:PutKeyPolicy away from {principal}; refusing \
         (an owned statement was edited to grant it: move that grant to a statement without \
         the MsfCmk Sid prefix)"
    )]
    WouldLockOut { principal: String },
    #[error(
        "statement {} has the controller's Sid prefix MsfCmk but is not a statement the \
         controller writes (a Deny, a person's grant or an edited copy): it is kept as it is, \
         and nothing is written to this key until a person gives it a Sid without the MsfCmk \
         prefix",
        sids.join(", ")
    )]
    NotMergeable { sids: Vec<String> },
    /// A generated statement failed to parse: a bug in the controller, never the user's input.
    #[error("internal error: a generated key policy statement is invalid: {0}")]
    Internal(#[from] ParseError),
}

/// [`merge_for`] the default instance.
pub fn merge(
    doc: &PolicyDocument,
    add: &[Grant],
    remove_applications: &[String],
) -> Result<PolicyDocument, MergeError> {
    merge_for(doc, &InstanceName::default(), add, remove_applications)
}

/// Adds `add` to and removes `remove_applications` from the statements `instance` owns.
pub fn merge_for(
    doc: &PolicyDocument,
    instance: &InstanceName,
    add: &[Grant],
    remove_applications: &[String],
) -> Result<PolicyDocument, MergeError> {
    for g in add {
        Arn::parse_application(&g.application_arn)?;
        Arn::parse_role(&g.operator_role_arn)?;
    }
    for a in remove_applications {
        Arn::parse_application(a)?;
    }
    let sids = doc.unmergeable_sids();
    if !sids.is_empty() {
        return Err(MergeError::NotMergeable { sids });
    }

    let mut state = granted_by(doc, instance);
    for g in add {
        state.applications.insert(g.application_arn.clone());
        // One operator per application: a new operator replaces the old one.
        state
            .operators
            .insert(g.application_arn.clone(), g.operator_role_arn.clone());
    }
    for a in remove_applications {
        state.applications.remove(a);
        state.operators.remove(a);
    }
    let owned = build_for(&state, instance);

    let first_owned = doc
        .statements()
        .iter()
        .position(|s| s.is_owned_by(instance));
    let mut raws: Vec<Map<String, Value>> =
        Vec::with_capacity(doc.statements().len() + owned.len());
    let mut owned = Some(owned);
    for (i, s) in doc.statements().iter().enumerate() {
        if Some(i) == first_owned {
            raws.extend(owned.take().unwrap_or_default());
        }
        if !s.is_owned_by(instance) {
            raws.push(s.raw().clone());
        }
    }
    raws.extend(owned.take().unwrap_or_default());

    let merged = doc.with_statements(raws)?;
    let bytes = merged.to_compact_json().len();
    if bytes > MAX_POLICY_BYTES {
        return Err(MergeError::TooLarge {
            bytes,
            limit: MAX_POLICY_BYTES,
        });
    }
    check_no_lockout(doc, &merged)?;
    Ok(merged)
}

/// Every AWS principal the original lets call `kms:PutKeyPolicy`, directly or through the
/// account's delegation to IAM, must keep it (KMS's own lockout safety check refuses the write
/// otherwise, or worse, accepts it). Checking each account named by an Allow covers every
/// identity that relies on delegation, and so the writing identity whoever it is. Owned
/// statements never grant PutKeyPolicy and a statement that is not exactly ours is refused
/// before this, so this is a last guard, not a path taken in practice.
fn check_no_lockout(before: &PolicyDocument, after: &PolicyDocument) -> Result<(), MergeError> {
    let mut principals = BTreeSet::new();
    for s in before.statements() {
        let p = &s.parsed().principal;
        if s.parsed().effect == Effect::Allow && !p.negated {
            principals.extend(p.items.aws_arns().map(str::to_string));
            principals.extend(p.items.accounts().map(str::to_string));
        }
    }
    for principal in principals {
        let req = Request::new(Principal::Aws(principal.clone()), "kms:PutKeyPolicy", "*");
        if can_put(before, &req) && !can_put(after, &req) {
            return Err(MergeError::WouldLockOut { principal });
        }
    }
    Ok(())
}

/// Allowed by the key policy, or left to the caller's IAM policies by it.
fn can_put(doc: &PolicyDocument, req: &Request) -> bool {
    let e = evaluate(doc, req);
    e.decision == Decision::Allow || e.delegated_to_iam
}

/// The grants recorded in a policy's owned statements, every instance's (for reports and
/// callers that need to know which applications share a key).
pub fn granted(doc: &PolicyDocument) -> GrantState {
    extract(
        doc.statements()
            .iter()
            .filter(|s| s.is_owned())
            .map(|s| s.raw()),
    )
}

/// The grants recorded in the statements `instance` owns.
pub fn granted_by(doc: &PolicyDocument, instance: &InstanceName) -> GrantState {
    extract(
        doc.statements()
            .iter()
            .filter(|s| s.is_owned_by(instance))
            .map(|s| s.raw()),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn doc(statements: &str) -> PolicyDocument {
        PolicyDocument::parse(&format!(
            r#"{{"Version":"2012-10-17","Statement":[{statements}]}}"#
        ))
        .unwrap()
    }

    const ROOT: &str = r#"{"Sid":"Root","Effect":"Allow","Principal":{"AWS":"arn:aws:iam::123456789012:root"},"Action":"kms:*","Resource":"*"}"#;
    const ADMIN: &str = r#"{"Sid":"Admin","Effect":"Allow","Principal":{"AWS":"arn:aws:iam::123456789012:role/KeyAdmin"},"Action":"kms:PutKeyPolicy","Resource":"*"}"#;

    /// KMS Developer Guide, "Default key policy": the root statement is what lets the account's
    /// roles (the writing identity among them) call PutKeyPolicy through their IAM policies.
    #[test]
    fn the_guard_notices_the_last_way_to_put_key_policy() {
        let both = doc(&format!("{ROOT},{ADMIN}"));
        // Removing the root statement takes the delegation away from every other role.
        assert!(matches!(
            check_no_lockout(&both, &doc(ADMIN)),
            Err(MergeError::WouldLockOut { principal }) if principal == "123456789012"
        ));
        // Removing the administrator's own statement leaves it the account's delegation: its
        // IAM policy can still let it in, as KMS's own lockout check accepts.
        assert!(check_no_lockout(&both, &doc(ROOT)).is_ok());
        // Without the root statement, the administrator's statement is its last way in.
        assert!(matches!(
            check_no_lockout(&doc(ADMIN), &doc(r#"{"Effect":"Allow","Principal":"*","Action":"kms:Decrypt","Resource":"*"}"#)),
            Err(MergeError::WouldLockOut { principal }) if principal.ends_with("role/KeyAdmin")
        ));
        assert!(check_no_lockout(&both, &both).is_ok());
        // A Deny added for the writing identity counts too.
        let deny = r#"{"Sid":"NoPut","Effect":"Deny","Principal":{"AWS":"arn:aws:iam::123456789012:role/KeyAdmin"},"Action":"kms:Put*","Resource":"*"}"#;
        assert!(check_no_lockout(&both, &doc(&format!("{ROOT},{ADMIN},{deny}"))).is_err());
    }
}
