//! The key policy document: a lossless model.
//!
//! Every statement keeps its raw JSON object (field order, string-vs-array forms) next to the
//! parsed form used for evaluation, and serialisation writes the raw object back. So a
//! statement the controller does not own comes out exactly as it went in. Numbers are kept as
//! serde_json reads them (integers exactly; floats may be re-formatted).
//!
//! Parsing is as strict as PutKeyPolicy: unknown elements (a typo such as `Conditon` must not
//! make a statement unconditional), duplicate keys at any depth, characters KMS refuses,
//! `{"Service": "*"}` and unknown condition operators are errors. Writing escapes what KMS
//! refuses (see [`super::strict_json`]).

use std::fmt;

use serde_json::{Map, Value};

use super::OWNED_SID_PREFIX;
use super::condition::{Condition, Ctx, Tri};
use super::glob;
use super::instance::InstanceName;
use super::owned;
use super::principal::{PrincipalSpec, kind_of, string_list};
use super::strict_json;
use super::variables::{Resolved, Template};

/// The elements a key policy may have at the top level and in a statement.
const TOP_ELEMENTS: &[&str] = &["Version", "Id", "Statement"];
const STATEMENT_ELEMENTS: &[&str] = &[
    "Sid",
    "Effect",
    "Principal",
    "NotPrincipal",
    "Action",
    "NotAction",
    "Resource",
    "NotResource",
    "Condition",
];

/// A malformed policy: where (statement index and Sid, field) and why.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub struct ParseError {
    /// Zero-based statement index, when the problem is inside a statement.
    pub statement: Option<usize>,
    pub sid: Option<String>,
    /// The field (e.g. `Condition.StringEquals.kms:ViaService`), when known.
    pub field: Option<String>,
    pub message: String,
}

impl fmt::Display for ParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "invalid key policy")?;
        if let Some(i) = self.statement {
            write!(f, ": statement {i}")?;
            if let Some(sid) = &self.sid {
                write!(f, " (Sid {sid:?})")?;
            }
        }
        if let Some(field) = &self.field {
            write!(f, ": {field}")?;
        }
        write!(f, ": {}", self.message)
    }
}

impl ParseError {
    fn top(field: Option<&str>, message: impl Into<String>) -> Self {
        Self {
            statement: None,
            sid: None,
            field: field.map(str::to_string),
            message: message.into(),
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Effect {
    Allow,
    Deny,
}

/// A list element with its negation: `Action` vs `NotAction`, and so on.
#[derive(Clone, Debug, PartialEq)]
pub struct Matcher<T> {
    pub negated: bool,
    pub items: T,
}

/// The parsed form of one statement. Patterns are stored ready to match.
#[derive(Clone, Debug, PartialEq)]
pub struct Parsed {
    pub effect: Effect,
    pub principal: Matcher<PrincipalSpec>,
    /// Lower-cased action patterns.
    pub action: Matcher<Vec<String>>,
    pub resource: Matcher<Vec<String>>,
    /// The resource patterns holding policy variables (Version 2012-10-17), substituted at
    /// evaluation; `resource.items` holds the others.
    pub resource_templates: Vec<Template>,
    pub condition: Condition,
}

#[derive(Clone, Debug)]
pub struct Statement {
    pub(crate) raw: Map<String, Value>,
    pub(crate) parsed: Parsed,
    /// `Sid`, or the statement index as text when there is none.
    pub(crate) label: String,
    /// The Sid is one the controller's naming scheme produces and the statement is exactly
    /// what the controller (the named instance) would write for the grants it holds.
    owner: Option<owned::Owner>,
    /// `parsed.action.items`, classified once for [`Statement::covers_action`].
    action_patterns: Vec<ActionPattern>,
}

/// An action pattern (lower-cased), sorted by how it can be matched without the general glob.
#[derive(Clone, Debug)]
enum ActionPattern {
    /// No wildcard: compared as is.
    Literal(String),
    /// One `*`, at the end (`kms:*`, `kms:Get*`): a prefix test.
    Prefix(String),
    Glob(String),
}

impl ActionPattern {
    fn new(pattern: &str) -> Self {
        match pattern.strip_suffix('*') {
            _ if glob::is_literal(pattern) => Self::Literal(pattern.to_string()),
            Some(prefix) if glob::is_literal(prefix) => Self::Prefix(prefix.to_string()),
            _ => Self::Glob(pattern.to_string()),
        }
    }

    fn matches(&self, action_lower: &str) -> bool {
        match self {
            Self::Literal(p) => p == action_lower,
            Self::Prefix(p) => action_lower.starts_with(p.as_str()),
            Self::Glob(p) => glob::matches(p, action_lower),
        }
    }
}

impl PartialEq for Statement {
    // The raw JSON is the statement; the parsed form is derived from it.
    fn eq(&self, other: &Self) -> bool {
        self.raw == other.raw
    }
}

impl Statement {
    pub fn sid(&self) -> Option<&str> {
        self.raw.get("Sid").and_then(Value::as_str)
    }

    pub fn label(&self) -> &str {
        &self.label
    }

    /// A controller (any instance) wrote this statement: its Sid follows the naming scheme and
    /// its shape (effect, principals, actions, condition keys and values) is the generated one.
    pub fn is_owned(&self) -> bool {
        self.owner.is_some()
    }

    /// The instance that wrote this statement, when one did.
    pub fn owner(&self) -> Option<&InstanceName> {
        self.owner.as_ref().map(|o| &o.instance)
    }

    /// Written by `instance`: the statements it may change or remove. For it, the other
    /// instances' statements are like a person's.
    pub fn is_owned_by(&self, instance: &InstanceName) -> bool {
        self.owner() == Some(instance)
    }

    /// An owned statement under a Sid of the releases before readable Sids.
    pub fn has_legacy_sid(&self) -> bool {
        self.owner.as_ref().is_some_and(|o| o.legacy)
    }

    /// The Sid has the controller's prefix but the statement is not one any instance of the
    /// controller would write (a Deny, a person's grant, an edited copy): a person's statement
    /// that must be renamed before the controller writes to the key.
    pub fn claims_ownership(&self) -> bool {
        self.owner.is_none() && self.sid().is_some_and(|s| s.starts_with(OWNED_SID_PREFIX))
    }

    pub fn raw(&self) -> &Map<String, Value> {
        &self.raw
    }

    pub fn parsed(&self) -> &Parsed {
        &self.parsed
    }

    /// `variables`: the document's Version is 2012-10-17, so policy variables are substituted.
    /// `known`: shared by the statements of one document (see [`owned::recognise`]).
    pub(crate) fn from_raw(
        index: usize,
        raw: Map<String, Value>,
        variables: bool,
        known: &mut owned::KnownApplications,
    ) -> Result<Self, ParseError> {
        let sid = raw.get("Sid").and_then(Value::as_str).map(str::to_string);
        let err = |field: &str, message: String| ParseError {
            statement: Some(index),
            sid: sid.clone(),
            field: Some(field.to_string()),
            message,
        };
        if let Some(unknown) = raw
            .keys()
            .find(|k| !STATEMENT_ELEMENTS.contains(&k.as_str()))
        {
            return Err(err(
                unknown,
                format!(
                    "unknown statement element (KMS refuses it; expected one of {})",
                    STATEMENT_ELEMENTS.join(", ")
                ),
            ));
        }
        if let Some(s) = raw.get("Sid")
            && !s.is_string()
        {
            return Err(err(
                "Sid",
                format!("must be a string, found {}", kind_of(s)),
            ));
        }
        let effect = parse_effect(raw.get("Effect")).map_err(|m| err("Effect", m))?;
        let (pname, pvalue, pneg) =
            pick(&raw, "Principal", "NotPrincipal").map_err(|m| err("Principal", m))?;
        let principal = Matcher {
            negated: pneg,
            items: PrincipalSpec::parse(pvalue).map_err(|m| err(pname, m))?,
        };
        // KMS accepts a statement without Action or NotAction; it allows or denies nothing.
        let (actions, aneg) = if raw.contains_key("Action") || raw.contains_key("NotAction") {
            let (aname, avalue, aneg) =
                pick(&raw, "Action", "NotAction").map_err(|m| err("Action", m))?;
            (string_list(avalue).map_err(|m| err(aname, m))?, aneg)
        } else {
            (Vec::new(), false)
        };
        let (rname, rvalue, rneg) =
            pick(&raw, "Resource", "NotResource").map_err(|m| err("Resource", m))?;
        let resources = string_list(rvalue).map_err(|m| err(rname, m))?;
        let (resources, resource_templates) = split_templates(resources, variables);
        let condition = match raw.get("Condition") {
            Some(c) => Condition::parse(c, variables).map_err(|m| err("Condition", m))?,
            None => Condition::default(),
        };
        let parsed = Parsed {
            effect,
            principal,
            action: Matcher {
                negated: aneg,
                items: actions.iter().map(|a| a.to_ascii_lowercase()).collect(),
            },
            resource: Matcher {
                negated: rneg,
                items: resources,
            },
            resource_templates,
            condition,
        };
        let owner = match sid.as_deref() {
            Some(s) if s.starts_with(OWNED_SID_PREFIX) => owned::recognise(&raw, known),
            _ => None,
        };
        // An empty Sid names nothing; the index does.
        let label = sid
            .filter(|s| !s.is_empty())
            .unwrap_or_else(|| index.to_string());
        let action_patterns = parsed
            .action
            .items
            .iter()
            .map(|p| ActionPattern::new(p))
            .collect();
        Ok(Self {
            raw,
            parsed,
            label,
            owner,
            action_patterns,
        })
    }

    /// Does the statement's Action / NotAction cover `action_lower` (already lower-cased)?
    pub fn covers_action(&self, action_lower: &str) -> bool {
        let hit = self.action_patterns.iter().any(|p| p.matches(action_lower));
        hit != self.parsed.action.negated
    }

    /// Does Resource / NotResource cover `resource`? Unknown only when a policy variable in
    /// it names an unknown key.
    pub fn covers_resource(&self, resource: &str, ctx: &Ctx) -> Tri {
        let m = &self.parsed.resource;
        let mut hit = if m.items.iter().any(|p| glob::matches(p, resource)) {
            Tri::True
        } else {
            Tri::False
        };
        for t in &self.parsed.resource_templates {
            if hit == Tri::True {
                break;
            }
            match t.resolve(|k| ctx.lookup(k)) {
                Resolved::Text { chars, literal } => {
                    if glob::matches_masked(&chars, &literal, resource) {
                        hit = Tri::True;
                    }
                }
                Resolved::Absent => {}
                Resolved::Unknown(_) => hit = Tri::Unknown,
            }
        }
        match (hit, m.negated) {
            (Tri::Unknown, _) => Tri::Unknown,
            (h, false) => h,
            (h, true) => Tri::from_bool(h == Tri::False),
        }
    }
}

fn parse_effect(v: Option<&Value>) -> Result<Effect, String> {
    match v {
        Some(Value::String(s)) if s == "Allow" => Ok(Effect::Allow),
        Some(Value::String(s)) if s == "Deny" => Ok(Effect::Deny),
        Some(other) => Err(format!("must be \"Allow\" or \"Deny\", found {other}")),
        None => Err("is required".into()),
    }
}

/// The patterns that hold policy variables (only substituted under 2012-10-17), apart.
fn split_templates(patterns: Vec<String>, variables: bool) -> (Vec<String>, Vec<Template>) {
    if !variables {
        return (patterns, Vec::new());
    }
    let mut templates = Vec::new();
    let plain = patterns
        .into_iter()
        .filter(|r| match Template::parse(r) {
            Some(t) => {
                templates.push(t);
                false
            }
            None => true,
        })
        .collect();
    (plain, templates)
}

/// Exactly one of `name` / `not_name` must be present.
fn pick<'a>(
    raw: &'a Map<String, Value>,
    name: &'static str,
    not_name: &'static str,
) -> Result<(&'static str, &'a Value, bool), String> {
    match (raw.get(name), raw.get(not_name)) {
        (Some(v), None) => Ok((name, v, false)),
        (None, Some(v)) => Ok((not_name, v, true)),
        (Some(_), Some(_)) => Err(format!("{name} and {not_name} cannot both be present")),
        (None, None) => Err(format!("{name} or {not_name} is required")),
    }
}

/// Whether `Statement` was a single object or a list, so it is written back the same way.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum StatementForm {
    Single,
    List,
}

#[derive(Clone, Debug, PartialEq)]
pub struct PolicyDocument {
    /// Top-level fields in their order; the `Statement` entry is a placeholder filled on output.
    top: Map<String, Value>,
    /// Version 2012-10-17: policy variables are substituted.
    variables: bool,
    form: StatementForm,
    pub(crate) statements: Vec<Statement>,
}

impl PolicyDocument {
    pub fn parse(json: &str) -> Result<Self, ParseError> {
        let value: Value = strict_json::parse(json).map_err(|e| {
            ParseError::top(
                None,
                format!(
                    "not valid JSON (line {}, column {}): {e}",
                    e.line(),
                    e.column()
                ),
            )
        })?;
        Self::from_value(value)
    }

    pub fn from_value(value: Value) -> Result<Self, ParseError> {
        let Value::Object(mut top) = value else {
            return Err(ParseError::top(
                None,
                format!("must be a JSON object, found {}", kind_of(&value)),
            ));
        };
        if let Some(unknown) = top.keys().find(|k| !TOP_ELEMENTS.contains(&k.as_str())) {
            return Err(ParseError::top(
                Some(unknown),
                "unknown policy element (KMS refuses it; expected Version, Id and Statement)",
            ));
        }
        let variables = top.get("Version").and_then(Value::as_str) == Some("2012-10-17");
        match top.get("Version") {
            None => {}
            Some(Value::String(v)) if v == "2012-10-17" || v == "2008-10-17" => {}
            Some(other) => {
                return Err(ParseError::top(
                    Some("Version"),
                    format!("must be \"2012-10-17\" or \"2008-10-17\", found {other}"),
                ));
            }
        }
        if let Some(id) = top.get("Id")
            && !id.is_string()
        {
            return Err(ParseError::top(
                Some("Id"),
                format!("must be a string, found {}", kind_of(id)),
            ));
        }
        let Some(stmts) = top.get_mut("Statement") else {
            return Err(ParseError::top(Some("Statement"), "is required"));
        };
        let (form, raws) = match stmts.take() {
            Value::Array(items) => (StatementForm::List, items),
            obj @ Value::Object(_) => (StatementForm::Single, vec![obj]),
            other => {
                return Err(ParseError::top(
                    Some("Statement"),
                    format!(
                        "must be a list of statements or one statement, found {}",
                        kind_of(&other)
                    ),
                ));
            }
        };
        let mut known = owned::KnownApplications::default();
        let statements = raws
            .into_iter()
            .enumerate()
            .map(|(i, v)| match v {
                Value::Object(m) => Statement::from_raw(i, m, variables, &mut known),
                other => Err(ParseError {
                    statement: Some(i),
                    sid: None,
                    field: None,
                    message: format!("a statement must be an object, found {}", kind_of(&other)),
                }),
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Self {
            top,
            variables,
            form,
            statements,
        })
    }

    /// Builds a document from statements (used by merge); labels follow the new positions.
    pub(crate) fn with_statements(
        &self,
        raws: Vec<Map<String, Value>>,
    ) -> Result<Self, ParseError> {
        let mut known = owned::KnownApplications::default();
        let statements = raws
            .into_iter()
            .enumerate()
            .map(|(i, m)| Statement::from_raw(i, m, self.variables, &mut known))
            .collect::<Result<Vec<_>, _>>()?;
        // A single-object policy that now holds several statements must become a list.
        let form = if self.form == StatementForm::Single && statements.len() == 1 {
            StatementForm::Single
        } else {
            StatementForm::List
        };
        let mut top = self.top.clone();
        if !top.contains_key("Statement") {
            top.insert("Statement".into(), Value::Null);
        }
        Ok(Self {
            top,
            variables: self.variables,
            form,
            statements,
        })
    }

    pub fn statements(&self) -> &[Statement] {
        &self.statements
    }

    pub fn to_value(&self) -> Value {
        let mut out = Map::with_capacity(self.top.len());
        for (k, v) in &self.top {
            if k == "Statement" {
                let raws = self.statements.iter().map(|s| Value::Object(s.raw.clone()));
                let value = match self.form {
                    StatementForm::Single if self.statements.len() == 1 => {
                        raws.into_iter().next().unwrap_or(Value::Null)
                    }
                    _ => Value::Array(raws.collect()),
                };
                out.insert(k.clone(), value);
            } else {
                out.insert(k.clone(), v.clone());
            }
        }
        Value::Object(out)
    }

    /// The form sent to PutKeyPolicy (compact, characters above U+00FF escaped); its byte
    /// length is what KMS compares with the limit.
    pub fn to_compact_json(&self) -> String {
        strict_json::kms_text(serde_json::to_string(&self.to_value()).unwrap_or_default())
    }

    /// Indented for people; also accepted by KMS (it counts the indentation towards the limit).
    pub fn to_pretty_json(&self) -> String {
        strict_json::kms_text(serde_json::to_string_pretty(&self.to_value()).unwrap_or_default())
    }

    /// Sids of the statements that carry the controller's prefix but are not the controller's
    /// (see [`Statement::claims_ownership`]), in document order.
    pub fn unmergeable_sids(&self) -> Vec<String> {
        self.statements
            .iter()
            .filter(|s| s.claims_ownership())
            .filter_map(|s| s.sid().map(str::to_string))
            .collect()
    }

    /// Sids of the statements the controller owns (every instance), in document order.
    pub fn owned_sids(&self) -> Vec<String> {
        self.statements
            .iter()
            .filter(|s| s.is_owned())
            .filter_map(|s| s.sid().map(str::to_string))
            .collect()
    }
}
