//! Is a key policy compliant for an application? Every required access must evaluate to
//! Allow with exactly the context MSF sends. Findings are reported alongside, not blocking.
//!
//! Two cases are compliant with a finding rather than missing: the operator let in only by
//! the account's delegation to IAM (`OperatorReliesOnIamPolicy`: its IAM policy must allow it;
//! a service principal can never rely on delegation), and an access allowed unless a Deny
//! whose condition hinges on a key the controller cannot know applies
//! (`DenyDependsOnUnknownKey`, with the keys in `dependsOn`).

use serde::Serialize;

use super::condition::Ctx;
use super::document::PolicyDocument;
use super::evaluator::{Decision, Evaluation, evaluate_caller};
use super::findings::{Finding, findings};
use super::principal::{Caller, Principal};
use super::requirements::MsfRequirements;

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct AccessCheck {
    /// `AWS:<arn>` or `Service:<name>`.
    pub principal: String,
    pub action: String,
    pub decision: Decision,
    /// The deciding statements (the Deny statements for ExplicitDeny).
    pub statements: Vec<String>,
    pub purpose: String,
    /// Denied by the key policy alone, but an Allow names the caller's account.
    pub delegated_to_iam: bool,
    /// Unknown keys the decision hinges on (see [`Evaluation::depends_on`]).
    pub depends_on: Vec<String>,
}

impl AccessCheck {
    /// Allowed, or (for the operator only) left to its IAM policy by the account's delegation.
    pub fn granted(&self) -> bool {
        self.decision == Decision::Allow
            || (self.delegated_to_iam && self.principal.starts_with("AWS:"))
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ComplianceReport {
    pub compliant: bool,
    pub accesses: Vec<AccessCheck>,
    pub findings: Vec<Finding>,
    pub owned_sids: Vec<String>,
}

impl ComplianceReport {
    /// The accesses that are not granted (implicitly or explicitly denied).
    pub fn missing(&self) -> impl Iterator<Item = &AccessCheck> {
        self.accesses.iter().filter(|a| !a.granted())
    }
}

pub fn check(doc: &PolicyDocument, key_arn: &str, reqs: &MsfRequirements) -> ComplianceReport {
    report(doc, key_arn, reqs, findings(doc, key_arn), doc.owned_sids())
}

/// Several applications against one parsed document; findings are computed once.
pub fn check_many(
    doc: &PolicyDocument,
    key_arn: &str,
    reqs: &[MsfRequirements],
) -> Vec<ComplianceReport> {
    let f = findings(doc, key_arn);
    let owned = doc.owned_sids();
    reqs.iter()
        .map(|r| report(doc, key_arn, r, f.clone(), owned.clone()))
        .collect()
}

fn report(
    doc: &PolicyDocument,
    key_arn: &str,
    reqs: &MsfRequirements,
    mut findings: Vec<Finding>,
    owned_sids: Vec<String>,
) -> ComplianceReport {
    let mut accesses = Vec::with_capacity(reqs.accesses.len());
    // The accesses name a few principals: each is parsed and printed once.
    let mut callers: Vec<(&Principal, Caller, String)> = Vec::new();
    for a in &reqs.accesses {
        let i = match callers.iter().position(|(p, _, _)| *p == &a.principal) {
            Some(i) => i,
            None => {
                callers.push((
                    &a.principal,
                    Caller::of(&a.principal),
                    a.principal.to_string(),
                ));
                callers.len() - 1
            }
        };
        let (_, caller, principal) = &callers[i];
        let ctx = Ctx::new(&a.context, &a.unknown);
        let mut e = evaluate_caller(doc, caller, &a.action.to_ascii_lowercase(), key_arn, &ctx);
        let mut check = AccessCheck {
            principal: principal.clone(),
            action: a.action.clone(),
            decision: e.decision,
            statements: std::mem::take(&mut e.statements),
            purpose: a.purpose.clone(),
            delegated_to_iam: e.delegated_to_iam,
            depends_on: Vec::new(),
        };
        access_findings(&check, &e, &mut findings);
        check.depends_on = e.depends_on;
        accesses.push(check);
    }
    ComplianceReport {
        compliant: accesses.iter().all(AccessCheck::granted),
        accesses,
        findings,
        owned_sids,
    }
}

/// Findings about one access, each statement reported once per code.
fn access_findings(a: &AccessCheck, e: &Evaluation, out: &mut Vec<Finding>) {
    // The message is written only for a finding not reported yet.
    let mut push = |code: &str, statement: &str, message: &dyn Fn() -> String| {
        if !out
            .iter()
            .any(|f| f.code == code && f.statement == statement)
        {
            out.push(Finding {
                code: code.to_string(),
                statement: statement.to_string(),
                message: message(),
            });
        }
    };
    if e.decision == Decision::ImplicitDeny && e.delegated_to_iam && a.granted() {
        for s in &e.delegating_statements {
            push("OperatorReliesOnIamPolicy", s, &|| {
                format!(
                    "{} is let in only by the account's delegation to IAM: its own IAM policy \
                     must allow the KMS calls MSF makes with its credentials (the controller's \
                     statements would grant them directly)",
                    a.principal
                )
            });
        }
    }
    if a.granted() && !e.depends_on.is_empty() {
        for s in &e.possible_denies {
            push("DenyDependsOnUnknownKey", s, &|| {
                format!(
                    "denies {} {} if {} (which the controller cannot know) match its condition",
                    a.principal,
                    a.action,
                    e.depends_on.join(", ")
                )
            });
        }
    }
}
