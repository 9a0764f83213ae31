//! Adds, repairs and removes the controller-owned statements of a key policy.
//!
//! Owned statements are rebuilt from scratch from the grants they hold (plus the additions,
//! minus the removals), so edits to them are repaired and the output is deterministic.
//! Statements the controller does not own are copied as they are, in their order; the owned
//! block takes the place of the first owned statement, or goes last.

use std::collections::BTreeSet;

use serde_json::{Map, Value};

use super::MAX_POLICY_BYTES;
use super::document::{Effect, ParseError, PolicyDocument};
use super::evaluator::{Decision, Request, evaluate};
use super::owned::{build, extract};
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
    /// A generated statement failed to parse: a bug in the controller, never the user's input.
    #[error("internal error: a generated key policy statement is invalid: {0}")]
    Internal(#[from] ParseError),
}

pub fn merge(
    doc: &PolicyDocument,
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

    let mut state = extract(
        doc.statements()
            .iter()
            .filter(|s| s.is_owned())
            .map(|s| s.raw()),
    );
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
    let owned = build(&state);

    let first_owned = doc.statements().iter().position(|s| s.is_owned());
    let mut raws: Vec<Map<String, Value>> =
        Vec::with_capacity(doc.statements().len() + owned.len());
    let mut owned = Some(owned);
    for (i, s) in doc.statements().iter().enumerate() {
        if Some(i) == first_owned {
            raws.extend(owned.take().unwrap_or_default());
        }
        if !s.is_owned() {
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

/// Every AWS principal the original allows `kms:PutKeyPolicy` must keep it. Only owned
/// statements change and they never grant it, so this fires only when a person widened an
/// owned statement; refusing beats silently locking someone out.
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
        if evaluate(before, &req).decision == Decision::Allow
            && evaluate(after, &req).decision != Decision::Allow
        {
            return Err(MergeError::WouldLockOut { principal });
        }
    }
    Ok(())
}

/// The grants recorded in a policy's owned statements (for reports and callers that need to
/// know which applications share a key).
pub fn granted(doc: &PolicyDocument) -> GrantState {
    extract(
        doc.statements()
            .iter()
            .filter(|s| s.is_owned())
            .map(|s| s.raw()),
    )
}
