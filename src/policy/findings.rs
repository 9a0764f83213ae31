//! Over-permissive statements worth a person's attention. Reported, never blocking: the
//! controller does not own these statements and must not refuse to work because of them.
//!
//! Stable codes: `ServicePrincipalWithoutSourceCondition`, `PrincipalStarWithoutCondition`,
//! `KmsStarToNonAdministrator` (here), `OperatorReliesOnIamPolicy` and
//! `DenyDependsOnUnknownKey` (per access, in [`super::compliance`]). A vacuous condition
//! (`StringLike "*"`, `IpAddress 0.0.0.0/0`, `ArnLike "arn:*"`, `Null`) restricts nothing and
//! does not silence a finding; an action pattern that matches every KMS action (`kms:?*`)
//! counts as `kms:*`.

use serde::Serialize;

use super::document::{Effect, PolicyDocument, Statement};
use crate::arn::Arn;

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Finding {
    /// CamelCase, stable, searchable.
    pub code: String,
    /// Sid of the statement, or its index when it has none.
    pub statement: String,
    pub message: String,
}

/// Condition keys that pin a service principal's call to a resource or account. An
/// encryption-context key counts too: the service sets it to the resource it acts for, so a
/// call made for another account's application carries that application's ARN and fails the
/// match. (The AWS reference policy binds its running-state statements this way.)
const SOURCE_KEYS: &[&str] = &[
    "aws:sourcearn",
    "aws:sourceaccount",
    "aws:sourceorgid",
    "aws:sourceorgpaths",
];

/// Condition keys that restrict who may call, making `Principal: "*"` acceptable.
const CALLER_KEYS: &[&str] = &[
    "aws:principalaccount",
    "aws:principalarn",
    "aws:principalorgid",
    "aws:principalorgpaths",
    "aws:userid",
    "aws:username",
    "kms:calleraccount",
    "aws:sourceaccount",
    "aws:sourcearn",
    "aws:sourceorgid",
    "aws:sourcevpc",
    "aws:sourcevpce",
    "aws:sourceip",
];

pub fn findings(doc: &PolicyDocument, key_arn: &str) -> Vec<Finding> {
    let key_account = Arn::parse(key_arn).ok().map(|a| a.account);
    let mut out = Vec::new();
    for stmt in doc.statements() {
        if stmt.parsed().effect != Effect::Allow {
            continue;
        }
        service_without_source(stmt, &mut out);
        anyone_without_condition(stmt, &mut out);
        kms_star(stmt, key_account.as_deref(), &mut out);
    }
    out
}

fn push(out: &mut Vec<Finding>, code: &str, stmt: &Statement, message: String) {
    out.push(Finding {
        code: code.to_string(),
        statement: stmt.label().to_string(),
        message,
    });
}

fn required_keys(stmt: &Statement) -> Vec<&str> {
    stmt.parsed().condition.required_keys().collect()
}

fn service_without_source(stmt: &Statement, out: &mut Vec<Finding>) {
    let p = &stmt.parsed().principal;
    if p.negated || !p.items.has_service() {
        return;
    }
    let keys = required_keys(stmt);
    let bound = keys
        .iter()
        .any(|k| SOURCE_KEYS.contains(k) || k.starts_with("kms:encryptioncontext:"));
    if !bound {
        push(
            out,
            "ServicePrincipalWithoutSourceCondition",
            stmt,
            "allows a service principal without an aws:SourceArn or aws:SourceAccount condition \
             (confused deputy: the service could use the key on behalf of another account)"
                .into(),
        );
    }
}

fn anyone_without_condition(stmt: &Statement, out: &mut Vec<Finding>) {
    let p = &stmt.parsed().principal;
    if !(p.negated || p.items.is_anyone()) {
        return;
    }
    if !required_keys(stmt).iter().any(|k| CALLER_KEYS.contains(k)) {
        let what = if p.negated {
            "NotPrincipal"
        } else {
            "Principal \"*\""
        };
        push(
            out,
            "PrincipalStarWithoutCondition",
            stmt,
            format!(
                "allows {what} without a condition restricting the caller \
                 (such as kms:CallerAccount, aws:PrincipalOrgID or aws:SourceAccount)"
            ),
        );
    }
}

fn kms_star(stmt: &Statement, key_account: Option<&str>, out: &mut Vec<Finding>) {
    let parsed = stmt.parsed();
    let all_actions =
        parsed.action.negated || parsed.action.items.iter().any(|a| every_kms_action(a));
    if !all_actions {
        return;
    }
    let p = &parsed.principal;
    // Administrators: the key's own account (the delegation to IAM of the default key policy).
    let only_admins = !p.negated
        && !p.items.is_anyone()
        && !p.items.has_service()
        && p.items.aws_arns().next().is_none()
        && p.items
            .accounts()
            .all(|a| key_account.is_none_or(|k| k == a));
    if !only_admins {
        push(
            out,
            "KmsStarToNonAdministrator",
            stmt,
            "allows every KMS action (kms:* or NotAction) to principals other than the key \
             account's administrators (the account root)"
                .into(),
        );
    }
}

/// Actions a key administrator has and nobody else should: a pattern matching all of them
/// is `kms:*` in effect, however it is spelled (`kms:*`, `kms:?*`, `*`).
const SENSITIVE_ACTIONS: &[&str] = &[
    "kms:decrypt",
    "kms:encrypt",
    "kms:putkeypolicy",
    "kms:schedulekeydeletion",
    "kms:creategrant",
    "kms:disablekey",
    "kms:sign",
];

/// `pattern` is lower-cased, as the parsed statement keeps it.
fn every_kms_action(pattern: &str) -> bool {
    // A literal names one action; `all` stops at the first action a pattern misses.
    !super::glob::is_literal(pattern)
        && SENSITIVE_ACTIONS
            .iter()
            .all(|a| super::glob::matches(pattern, a))
}
