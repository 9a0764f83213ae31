//! Is a key policy compliant for an application? Every required access must evaluate to
//! Allow with exactly the context MSF sends. Findings are reported alongside, not blocking.

use serde::Serialize;

use super::document::PolicyDocument;
use super::evaluator::{Decision, Request, evaluate};
use super::findings::{Finding, findings};
use super::requirements::MsfRequirements;

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct AccessCheck {
    /// `AWS:<arn>` or `Service:<name>`.
    pub principal: String,
    pub action: String,
    pub decision: Decision,
    /// The deciding statements (the Deny statements for ExplicitDeny).
    pub statements: Vec<String>,
    pub purpose: String,
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
    /// The accesses that are not allowed (implicitly or explicitly denied).
    pub fn missing(&self) -> impl Iterator<Item = &AccessCheck> {
        self.accesses
            .iter()
            .filter(|a| a.decision != Decision::Allow)
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
    findings: Vec<Finding>,
    owned_sids: Vec<String>,
) -> ComplianceReport {
    let accesses: Vec<AccessCheck> = reqs
        .accesses
        .iter()
        .map(|a| {
            let req = Request {
                principal: a.principal.clone(),
                action: a.action.clone(),
                resource: key_arn.to_string(),
                context: a.context.clone(),
            };
            let e = evaluate(doc, &req);
            AccessCheck {
                principal: a.principal.to_string(),
                action: a.action.clone(),
                decision: e.decision,
                statements: e.statements,
                purpose: a.purpose.clone(),
            }
        })
        .collect();
    ComplianceReport {
        compliant: accesses.iter().all(|a| a.decision == Decision::Allow),
        accesses,
        findings,
        owned_sids,
    }
}
