//! Request evaluation against one key policy: explicit Deny > Allow > implicit deny.
//!
//! Only the key policy is consulted. When it delegates to an account (`...:root`), AWS would
//! also consult that account's IAM policies; those are out of scope, so an account grant is
//! treated as allowing every principal of the account (see [`super::principal`]).

use std::collections::BTreeMap;

use serde::Serialize;

use super::condition::Context;
use super::document::{Effect, PolicyDocument, Statement};
use super::principal::Principal;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
pub enum Decision {
    Allow,
    ExplicitDeny,
    ImplicitDeny,
}

impl std::fmt::Display for Decision {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Allow => "Allow",
            Self::ExplicitDeny => "ExplicitDeny",
            Self::ImplicitDeny => "ImplicitDeny",
        })
    }
}

/// One request: who, what, on which resource (the key ARN), and with which context.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Request {
    pub principal: Principal,
    pub action: String,
    pub resource: String,
    /// Condition keys, lower-cased by [`Request::with_context`]; lookups also tolerate other cases.
    pub context: BTreeMap<String, Vec<String>>,
}

impl Request {
    pub fn new(
        principal: Principal,
        action: impl Into<String>,
        resource: impl Into<String>,
    ) -> Self {
        Self {
            principal,
            action: action.into(),
            resource: resource.into(),
            context: BTreeMap::new(),
        }
    }

    /// Adds one value of a context key; adding the same key again makes it multi-valued.
    pub fn with_context(mut self, key: &str, value: impl Into<String>) -> Self {
        self.context
            .entry(key.to_ascii_lowercase())
            .or_default()
            .push(value.into());
        self
    }
}

/// The decision and the statements that made it: the matching Deny statements for
/// `ExplicitDeny`, the matching Allow statements for `Allow`, none for `ImplicitDeny`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Evaluation {
    pub decision: Decision,
    pub statements: Vec<String>,
}

pub fn evaluate(doc: &PolicyDocument, req: &Request) -> Evaluation {
    let action = req.action.to_ascii_lowercase();
    let mut allows = Vec::new();
    let mut denies = Vec::new();
    for stmt in doc.statements() {
        if applies(stmt, req, &action, &req.context) {
            match stmt.parsed().effect {
                Effect::Allow => allows.push(stmt.label().to_string()),
                Effect::Deny => denies.push(stmt.label().to_string()),
            }
        }
    }
    if !denies.is_empty() {
        Evaluation {
            decision: Decision::ExplicitDeny,
            statements: denies,
        }
    } else if !allows.is_empty() {
        Evaluation {
            decision: Decision::Allow,
            statements: allows,
        }
    } else {
        Evaluation {
            decision: Decision::ImplicitDeny,
            statements: Vec::new(),
        }
    }
}

/// Does the statement apply to the request? Cheapest tests first: action, principal, resource,
/// then conditions.
pub(crate) fn applies(stmt: &Statement, req: &Request, action_lower: &str, ctx: &Context) -> bool {
    let p = &stmt.parsed().principal;
    stmt.covers_action(action_lower)
        && (p.items.matches(&req.principal) != p.negated)
        && stmt.covers_resource(&req.resource)
        && stmt.parsed().condition.matches(ctx)
}
