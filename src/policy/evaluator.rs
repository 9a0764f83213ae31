//! Request evaluation against one key policy: explicit Deny > Allow > implicit deny.
//!
//! Only the key policy is consulted. When an Allow names the caller's account rather than the
//! caller, AWS would also consult the caller's IAM policies; those are out of scope, so the
//! decision is the one AWS makes when the caller has no identity-based policy (implicit deny)
//! and [`Evaluation::delegated_to_iam`] says that an identity policy could allow it.
//!
//! Keys the caller marks unknown ([`Request::unknown`]) make conditions three-valued: a
//! statement that may or may not apply is listed in [`Evaluation::depends_on`] (its keys) when
//! it could change the decision, and does not count towards it.

use std::collections::BTreeMap;

use serde::Serialize;

use super::condition::{Ctx, Tri};
use super::document::{Effect, PolicyDocument, Statement};
use super::principal::{Caller, Cover, Principal};

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
    /// Keys present in the real request whose value is not known here (lower-cased names, or
    /// prefixes ending in `/`). Keys neither in `context` nor here are absent.
    pub unknown: Vec<String>,
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
            unknown: Vec::new(),
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
#[serde(rename_all = "camelCase")]
pub struct Evaluation {
    pub decision: Decision,
    pub statements: Vec<String>,
    /// Not allowed by the key policy alone, but an Allow names the caller's account: an
    /// identity-based policy of the caller could allow it.
    pub delegated_to_iam: bool,
    /// The unknown keys the decision hinges on (sorted, lower-cased): for `Allow`, the keys of
    /// Deny statements that may apply; for `ImplicitDeny`, those of Allow statements that may.
    pub depends_on: Vec<String>,
    /// The Allow statements that delegate to the caller's account.
    #[serde(skip)]
    pub delegating_statements: Vec<String>,
    /// The statements that may or may not apply, depending on `depends_on`.
    #[serde(skip)]
    pub conditional_statements: Vec<String>,
    /// The Deny statements among them (none for an explicit deny).
    #[serde(skip)]
    pub possible_denies: Vec<String>,
}

/// What one statement does to a request.
struct Applies {
    cover: Cover,
    condition: Tri,
}

pub fn evaluate(doc: &PolicyDocument, req: &Request) -> Evaluation {
    let ctx = Ctx::new(&req.context, &req.unknown);
    evaluate_parts(doc, &req.principal, &req.action, &req.resource, &ctx)
}

/// [`evaluate`] on borrowed parts, so a caller evaluating many requests copies nothing.
pub(crate) fn evaluate_parts(
    doc: &PolicyDocument,
    principal: &Principal,
    action: &str,
    resource: &str,
    ctx: &Ctx,
) -> Evaluation {
    evaluate_caller(
        doc,
        &Caller::of(principal),
        &action.to_ascii_lowercase(),
        resource,
        ctx,
    )
}

/// [`evaluate_parts`] for a caller already parsed and an action already lower-cased.
pub(crate) fn evaluate_caller(
    doc: &PolicyDocument,
    caller: &Caller,
    action: &str,
    resource: &str,
    ctx: &Ctx,
) -> Evaluation {
    let (mut allows, mut denies, mut delegating) = (Vec::new(), Vec::new(), Vec::new());
    let (mut maybe_allows, mut maybe_denies) = (Vec::new(), Vec::new());
    for stmt in doc.statements() {
        let Some(a) = applies(stmt, caller, resource, action, ctx) else {
            continue;
        };
        let deny = stmt.parsed().effect == Effect::Deny;
        match (deny, a.cover, a.condition) {
            (_, Cover::No, _) | (_, _, Tri::False) => {}
            (true, _, Tri::True) => denies.push(stmt),
            (true, _, Tri::Unknown) => maybe_denies.push(stmt),
            (false, Cover::Delegated, _) => delegating.push(stmt),
            (false, Cover::Yes, Tri::True) => allows.push(stmt),
            (false, Cover::Yes, Tri::Unknown) => maybe_allows.push(stmt),
        }
    }
    let labels = |v: &[&Statement]| v.iter().map(|s| s.label().to_string()).collect::<Vec<_>>();
    let delegated_to_iam = denies.is_empty() && allows.is_empty() && !delegating.is_empty();
    // What could still change the decision: Denies that may apply to an Allow (or to what an
    // identity policy could allow), Allows that may apply to an implicit deny.
    let (decision, statements, mut conditional) = if !denies.is_empty() {
        (Decision::ExplicitDeny, labels(&denies), Vec::new())
    } else if !allows.is_empty() {
        (Decision::Allow, labels(&allows), maybe_denies.clone())
    } else if delegated_to_iam {
        (Decision::ImplicitDeny, Vec::new(), maybe_denies.clone())
    } else {
        (Decision::ImplicitDeny, Vec::new(), Vec::new())
    };
    if decision == Decision::ImplicitDeny {
        conditional.extend(maybe_allows);
    }
    let mut depends_on: Vec<String> = conditional
        .iter()
        .flat_map(|s| s.parsed().condition.unknown_keys(ctx))
        .collect();
    depends_on.sort();
    depends_on.dedup();
    let possible_denies = if decision == Decision::ExplicitDeny {
        Vec::new()
    } else {
        labels(&maybe_denies)
    };
    Evaluation {
        decision,
        statements,
        delegated_to_iam,
        depends_on,
        delegating_statements: if delegated_to_iam {
            labels(&delegating)
        } else {
            Vec::new()
        },
        conditional_statements: labels(&conditional),
        possible_denies,
    }
}

/// How the statement covers the request, or `None` when it does not concern it. Cheapest
/// tests first: action, principal, resource, then conditions.
fn applies(
    stmt: &Statement,
    caller: &Caller,
    resource: &str,
    action_lower: &str,
    ctx: &Ctx,
) -> Option<Applies> {
    if !stmt.covers_action(action_lower) {
        return None;
    }
    let parsed = stmt.parsed();
    let p = &parsed.principal;
    let cover = if p.negated {
        Cover::from(!p.items.exempts(caller))
    } else {
        p.items.cover(caller, parsed.effect == Effect::Deny)
    };
    if cover == Cover::No {
        return None;
    }
    let resource = stmt.covers_resource(resource, ctx);
    if resource == Tri::False {
        return None;
    }
    Some(Applies {
        cover,
        condition: resource.and(parsed.condition.eval(ctx)),
    })
}
