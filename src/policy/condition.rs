//! The `Condition` element: operators, set qualifiers, `IfExists`, and how each treats a
//! context key that is missing from the request.
//!
//! Rules (AWS IAM documentation, "Condition operators" and "Single-valued vs. multivalued
//! context keys"):
//! - several operators, and several keys under one operator, are ANDed;
//! - several values of one key are ORed; for negated operators (`StringNotEquals`, ...) no value
//!   may match (AND of the negations);
//! - a missing key makes a positive operator false and a negated operator true; `...IfExists`
//!   makes any operator true on a missing key; `Null` tests presence itself;
//! - `ForAllValues:` is true when the key is missing or empty, otherwise every request value
//!   must match; `ForAnyValue:` is false when missing, otherwise one request value must match;
//! - an empty list in the request counts as missing.
//!
//! Policy variables (`${aws:username}`) in string and ARN values are substituted under
//! Version 2012-10-17 (see [`super::variables`]); a variable that cannot be substituted makes
//! its clause false. A request value that cannot be read as the operator's type (a number, a
//! date, an IP) matches nothing, and makes the operator false whether or not it is negated.
//!
//! Three values: a key the caller marks as unknown (present, value not knowable, such as
//! `aws:PrincipalOrgID` for the controller) makes its clause [`Tri::Unknown`]; the condition is
//! the Kleene AND of its clauses (false wins over unknown, unknown over true).

use std::collections::BTreeMap;
use std::net::IpAddr;

use ipnet::IpNet;
use serde_json::Value;

use super::glob;
use super::principal::kind_of;
use super::variables::{Lookup, Resolved, Template};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Base {
    StringEquals,
    StringEqualsIgnoreCase,
    StringLike,
    NumericEquals,
    NumericLessThan,
    NumericLessThanEquals,
    NumericGreaterThan,
    NumericGreaterThanEquals,
    DateEquals,
    DateLessThan,
    DateLessThanEquals,
    DateGreaterThan,
    DateGreaterThanEquals,
    Bool,
    BinaryEquals,
    IpAddress,
    ArnLike,
    Null,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum SetOp {
    None,
    ForAllValues,
    ForAnyValue,
}

/// Operator name -> (base comparison, negated). Names compare case-insensitively.
const OPERATORS: &[(&str, Base, bool)] = &[
    ("StringEquals", Base::StringEquals, false),
    ("StringNotEquals", Base::StringEquals, true),
    (
        "StringEqualsIgnoreCase",
        Base::StringEqualsIgnoreCase,
        false,
    ),
    (
        "StringNotEqualsIgnoreCase",
        Base::StringEqualsIgnoreCase,
        true,
    ),
    ("StringLike", Base::StringLike, false),
    ("StringNotLike", Base::StringLike, true),
    ("NumericEquals", Base::NumericEquals, false),
    ("NumericNotEquals", Base::NumericEquals, true),
    ("NumericLessThan", Base::NumericLessThan, false),
    ("NumericLessThanEquals", Base::NumericLessThanEquals, false),
    ("NumericGreaterThan", Base::NumericGreaterThan, false),
    (
        "NumericGreaterThanEquals",
        Base::NumericGreaterThanEquals,
        false,
    ),
    ("DateEquals", Base::DateEquals, false),
    ("DateNotEquals", Base::DateEquals, true),
    ("DateLessThan", Base::DateLessThan, false),
    ("DateLessThanEquals", Base::DateLessThanEquals, false),
    ("DateGreaterThan", Base::DateGreaterThan, false),
    ("DateGreaterThanEquals", Base::DateGreaterThanEquals, false),
    ("Bool", Base::Bool, false),
    ("BinaryEquals", Base::BinaryEquals, false),
    ("IpAddress", Base::IpAddress, false),
    ("NotIpAddress", Base::IpAddress, true),
    // ArnEquals and ArnLike are the same comparison in IAM (both take wildcards per ARN part).
    ("ArnEquals", Base::ArnLike, false),
    ("ArnLike", Base::ArnLike, false),
    ("ArnNotEquals", Base::ArnLike, true),
    ("ArnNotLike", Base::ArnLike, true),
    ("Null", Base::Null, false),
];

/// A policy value, pre-parsed for its operator so evaluation does no parsing of the policy.
#[derive(Clone, Debug, PartialEq)]
enum PValue {
    Str(String),
    /// A string holding policy variables (Version 2012-10-17 only).
    Template(Template),
    /// A substituted template: characters and which of them are literal.
    Masked(Vec<char>, Vec<bool>),
    Num(f64),
    /// Milliseconds since the Unix epoch.
    Date(i64),
    Net(IpNet),
    Flag(bool),
}

#[derive(Clone, Debug, PartialEq)]
struct Clause {
    base: Base,
    negated: bool,
    set: SetOp,
    if_exists: bool,
    /// Lower-cased: condition key names are case-insensitive.
    key: String,
    values: Vec<PValue>,
    has_templates: bool,
    /// For `StringEquals` / `BinaryEquals` over many plain values: their indices in sorted
    /// order, so a request value is found by binary search.
    sorted: Option<Vec<u32>>,
}

/// From this many values on, an exact-match clause keeps a sorted index.
const SORTED_FROM: usize = 8;

/// The sorted index of `values` when `base` compares exactly and every value is plain text.
fn sorted_index(base: Base, values: &[PValue]) -> Option<Vec<u32>> {
    if !matches!(base, Base::StringEquals | Base::BinaryEquals) || values.len() < SORTED_FROM {
        return None;
    }
    let texts: Vec<&str> = values
        .iter()
        .map(|v| match v {
            PValue::Str(s) => Some(s.as_str()),
            _ => None,
        })
        .collect::<Option<_>>()?;
    let mut order: Vec<u32> = (0..u32::try_from(texts.len()).ok()?).collect();
    order.sort_by(|&a, &b| texts[a as usize].cmp(texts[b as usize]));
    Some(order)
}

/// A three-valued truth: the result of a condition on a request with unknown keys.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Tri {
    True,
    False,
    Unknown,
}

impl Tri {
    pub fn and(self, other: Tri) -> Tri {
        match (self, other) {
            (Tri::False, _) | (_, Tri::False) => Tri::False,
            (Tri::Unknown, _) | (_, Tri::Unknown) => Tri::Unknown,
            _ => Tri::True,
        }
    }

    pub fn from_bool(b: bool) -> Tri {
        if b { Tri::True } else { Tri::False }
    }
}

/// What evaluation knows of a request: its context and the keys whose value is unknown
/// (lower-cased names, or prefixes ending in `/` such as `aws:principaltag/`).
#[derive(Clone, Copy, Debug)]
pub struct Ctx<'a> {
    pub values: &'a Context,
    pub unknown: &'a [String],
    /// No key of `values` has an upper-case letter, so a lower-cased key is found by a plain
    /// lookup or not at all.
    lower_keys: bool,
}

impl<'a> Ctx<'a> {
    pub fn new(values: &'a Context, unknown: &'a [String]) -> Self {
        Self {
            values,
            unknown,
            lower_keys: values.keys().all(|k| !has_upper(k)),
        }
    }

    pub fn lookup(&self, key: &str) -> Lookup<'a> {
        let found = if self.lower_keys && !has_upper(key) {
            self.values
                .get(key)
                .map(Vec::as_slice)
                .filter(|v| !v.is_empty())
        } else {
            lookup(self.values, key)
        };
        if let Some(v) = found {
            return Lookup::Known(v);
        }
        let unknown = self.unknown.iter().any(|u| match u.strip_suffix('/') {
            Some(_) => {
                key.len() > u.len()
                    && key
                        .get(..u.len())
                        .is_some_and(|h| h.eq_ignore_ascii_case(u))
            }
            None => u.eq_ignore_ascii_case(key),
        });
        if unknown {
            Lookup::Unknown
        } else {
            Lookup::Absent
        }
    }
}

/// A parsed `Condition` element (all clauses ANDed).
#[derive(Clone, Debug, PartialEq, Default)]
pub struct Condition {
    clauses: Vec<Clause>,
}

/// The request context as evaluation sees it: lower-cased keys, possibly several values.
pub type Context = BTreeMap<String, Vec<String>>;

impl Condition {
    /// `variables`: substitute policy variables (the document's Version is 2012-10-17).
    pub fn parse(v: &Value, variables: bool) -> Result<Self, String> {
        let Value::Object(ops) = v else {
            return Err(format!("must be an object, found {}", kind_of(v)));
        };
        let mut clauses = Vec::new();
        for (op_name, keys) in ops {
            let (base, negated, set, if_exists) = parse_operator(op_name)?;
            let Value::Object(keys) = keys else {
                return Err(format!("{op_name}: must be an object of key: values"));
            };
            if keys.is_empty() {
                return Err(format!("{op_name}: no condition keys"));
            }
            for (key, vals) in keys {
                let values = parse_values(base, vals, variables)
                    .map_err(|e| format!("{op_name}.{key}: {e}"))?;
                clauses.push(Clause {
                    base,
                    negated,
                    set,
                    if_exists,
                    key: key.to_ascii_lowercase(),
                    has_templates: values.iter().any(|v| matches!(v, PValue::Template(_))),
                    sorted: sorted_index(base, &values),
                    values,
                });
            }
        }
        Ok(Self { clauses })
    }

    pub fn is_empty(&self) -> bool {
        self.clauses.is_empty()
    }

    /// True when every clause holds for `ctx` (no unknown keys).
    pub fn matches(&self, ctx: &Context) -> bool {
        self.eval(&Ctx::new(ctx, &[])) == Tri::True
    }

    /// The Kleene AND of the clauses.
    pub fn eval(&self, ctx: &Ctx) -> Tri {
        let mut out = Tri::True;
        for c in &self.clauses {
            match c.eval(ctx) {
                Tri::False => return Tri::False,
                t => out = out.and(t),
            }
        }
        out
    }

    /// The keys that make [`Condition::eval`] unknown for `ctx` (lower-cased, sorted).
    pub fn unknown_keys(&self, ctx: &Ctx) -> Vec<String> {
        let mut keys: Vec<String> = Vec::new();
        for c in &self.clauses {
            if c.eval(ctx) != Tri::Unknown {
                continue;
            }
            if ctx.lookup(&c.key) == Lookup::Unknown {
                keys.push(c.key.clone());
            }
            for v in &c.values {
                if let PValue::Template(t) = v
                    && let Resolved::Unknown(k) = t.resolve(|k| ctx.lookup(k))
                {
                    keys.push(k);
                }
            }
        }
        keys.sort();
        keys.dedup();
        keys
    }

    /// Lower-cased names of the keys a clause really restricts: a positive, non-`IfExists`
    /// operator whose values are not vacuous (used by findings to tell a restricting
    /// condition). `Null` never restricts: `Null false` only asks that the key be present.
    pub fn required_keys(&self) -> impl Iterator<Item = &str> {
        self.clauses
            .iter()
            .filter(|c| {
                !c.negated
                    && !c.if_exists
                    && c.set != SetOp::ForAllValues
                    && c.base != Base::Null
                    && !c.is_vacuous()
            })
            .map(|c| c.key.as_str())
    }
}

fn has_upper(s: &str) -> bool {
    s.bytes().any(|b| b.is_ascii_uppercase())
}

/// Keys are expected lower-cased; a caller that did not lower-case still gets a match.
fn lookup<'a>(ctx: &'a Context, key: &str) -> Option<&'a [String]> {
    let found = ctx.get(key).or_else(|| {
        ctx.iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(key))
            .map(|(_, v)| v)
    });
    found.map(Vec::as_slice).filter(|v| !v.is_empty())
}

fn parse_operator(name: &str) -> Result<(Base, bool, SetOp, bool), String> {
    let (set, rest) = match name.split_once(':') {
        Some((q, rest)) if q.eq_ignore_ascii_case("ForAllValues") => (SetOp::ForAllValues, rest),
        Some((q, rest)) if q.eq_ignore_ascii_case("ForAnyValue") => (SetOp::ForAnyValue, rest),
        Some((q, _)) => {
            return Err(format!(
                "unknown set operator {q:?} in {name:?} (expected ForAllValues or ForAnyValue)"
            ));
        }
        None => (SetOp::None, name),
    };
    let lower = rest.to_ascii_lowercase();
    let (core, if_exists) = match lower.strip_suffix("ifexists") {
        Some(core) => (core, true),
        None => (lower.as_str(), false),
    };
    let Some(&(_, base, negated)) = OPERATORS
        .iter()
        .find(|(n, _, _)| n.eq_ignore_ascii_case(core))
    else {
        return Err(format!("unknown condition operator {name:?}"));
    };
    if base == Base::Null && (if_exists || set != SetOp::None) {
        return Err(format!(
            "{name:?}: Null takes neither IfExists nor a set operator"
        ));
    }
    Ok((base, negated, set, if_exists))
}

fn parse_values(base: Base, v: &Value, variables: bool) -> Result<Vec<PValue>, String> {
    let scalars: Vec<&Value> = match v {
        Value::Array(items) if items.is_empty() => return Err("no values".into()),
        Value::Array(items) => items.iter().collect(),
        other => vec![other],
    };
    scalars
        .into_iter()
        .map(|s| {
            let text = match s {
                Value::String(s) => s.clone(),
                Value::Number(n) => n.to_string(),
                Value::Bool(b) => b.to_string(),
                other => return Err(format!("a value cannot be {}", kind_of(other))),
            };
            let is_text = matches!(
                base,
                Base::StringEquals
                    | Base::StringEqualsIgnoreCase
                    | Base::StringLike
                    | Base::BinaryEquals
                    | Base::ArnLike
            );
            if variables
                && is_text
                && let Some(t) = Template::parse(&text)
            {
                return Ok(PValue::Template(t));
            }
            parse_value(base, &text)
        })
        .collect()
}

fn parse_value(base: Base, text: &str) -> Result<PValue, String> {
    use Base::*;
    Ok(match base {
        NumericEquals
        | NumericLessThan
        | NumericLessThanEquals
        | NumericGreaterThan
        | NumericGreaterThanEquals => {
            PValue::Num(parse_number(text).ok_or_else(|| format!("{text:?} is not a number"))?)
        }
        DateEquals
        | DateLessThan
        | DateLessThanEquals
        | DateGreaterThan
        | DateGreaterThanEquals => PValue::Date(
            parse_date(text)
                .ok_or_else(|| format!("{text:?} is not an ISO 8601 date or epoch seconds"))?,
        ),
        IpAddress => PValue::Net(
            parse_net(text)
                .ok_or_else(|| format!("{text:?} is not an IP address or CIDR block"))?,
        ),
        Null | Bool => match text.to_ascii_lowercase().as_str() {
            "true" => PValue::Flag(true),
            "false" => PValue::Flag(false),
            _ => return Err(format!("{text:?} must be true or false")),
        },
        StringEquals | StringEqualsIgnoreCase | StringLike | BinaryEquals | ArnLike => {
            PValue::Str(text.to_string())
        }
    })
}

fn parse_number(s: &str) -> Option<f64> {
    s.trim().parse::<f64>().ok().filter(|n| n.is_finite())
}

fn parse_net(s: &str) -> Option<IpNet> {
    let s = s.trim();
    s.parse::<IpNet>()
        .ok()
        .or_else(|| s.parse::<IpAddr>().ok().map(IpNet::from))
}

/// ISO 8601 (full timestamp with offset, without offset meaning UTC, or a date) or epoch seconds.
fn parse_date(s: &str) -> Option<i64> {
    use chrono::{DateTime, NaiveDate, NaiveDateTime};
    let s = s.trim();
    if !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()) {
        return s.parse::<i64>().ok()?.checked_mul(1000);
    }
    if let Ok(d) = DateTime::parse_from_rfc3339(s) {
        return Some(d.timestamp_millis());
    }
    for fmt in ["%Y-%m-%dT%H:%M:%S%.f", "%Y-%m-%dT%H:%M"] {
        if let Ok(d) = NaiveDateTime::parse_from_str(s.trim_end_matches('Z'), fmt) {
            return Some(d.and_utc().timestamp_millis());
        }
    }
    NaiveDate::parse_from_str(s, "%Y-%m-%d")
        .ok()
        .and_then(|d| d.and_hms_opt(0, 0, 0))
        .map(|d| d.and_utc().timestamp_millis())
}

impl Clause {
    fn eval(&self, ctx: &Ctx) -> Tri {
        let request = match ctx.lookup(&self.key) {
            Lookup::Known(v) => Some(v),
            Lookup::Absent => None,
            Lookup::Unknown => return Tri::Unknown,
        };
        if !self.has_templates {
            return Tri::from_bool(self.matches(&self.values, request));
        }
        let mut values = Vec::with_capacity(self.values.len());
        for v in &self.values {
            match v {
                PValue::Template(t) => match t.resolve(|k| ctx.lookup(k)) {
                    Resolved::Text { chars, literal } => {
                        values.push(PValue::Masked(chars, literal))
                    }
                    // AWS: a variable that cannot be substituted makes the condition false.
                    Resolved::Absent => return Tri::False,
                    Resolved::Unknown(_) => return Tri::Unknown,
                },
                other => values.push(other.clone()),
            }
        }
        Tri::from_bool(self.matches(&values, request))
    }

    fn matches(&self, values: &[PValue], request: Option<&[String]>) -> bool {
        if self.base == Base::Null {
            let want_missing = values.contains(&PValue::Flag(true));
            let want_present = values.contains(&PValue::Flag(false));
            return if request.is_none() {
                want_missing
            } else {
                want_present
            };
        }
        let Some(request) = request else {
            return match self.set {
                _ if self.if_exists => true,
                SetOp::ForAllValues => true,
                SetOp::ForAnyValue => false,
                SetOp::None => self.negated,
            };
        };
        let (mut any_hit, mut all_hit) = (false, true);
        for r in request {
            // An unreadable request value makes the operator false, negated or not.
            let Some(h) = self.hit(values, r) else {
                return false;
            };
            any_hit |= h;
            all_hit &= h;
        }
        match (self.set, self.negated) {
            (SetOp::ForAllValues, false) => all_hit,
            (SetOp::ForAnyValue, true) => !all_hit,
            (SetOp::ForAllValues | SetOp::None, true) => !any_hit,
            (SetOp::ForAnyValue | SetOp::None, false) => any_hit,
        }
    }

    /// Does one request value match any policy value (the positive form of the operator)?
    fn hit(&self, values: &[PValue], req: &str) -> Option<bool> {
        use Base::*;
        let text = |f: &dyn Fn(&PValue) -> bool| values.iter().any(f);
        Some(match self.base {
            // Only set for a clause without templates: `values` is `self.values`.
            StringEquals | BinaryEquals if self.sorted.is_some() => {
                let order = self.sorted.as_deref().unwrap_or_default();
                order
                    .binary_search_by(|&i| match &values[i as usize] {
                        PValue::Str(p) => p.as_str().cmp(req),
                        _ => std::cmp::Ordering::Less,
                    })
                    .is_ok()
            }
            StringEquals | BinaryEquals => text(&|v| match v {
                PValue::Str(p) => p == req,
                PValue::Masked(c, _) => c.iter().copied().eq(req.chars()),
                _ => false,
            }),
            StringEqualsIgnoreCase => {
                let r = req.to_lowercase();
                text(&|v| match v {
                    PValue::Str(p) => p.to_lowercase() == r,
                    PValue::Masked(c, _) => c.iter().collect::<String>().to_lowercase() == r,
                    _ => false,
                })
            }
            StringLike => text(&|v| match v {
                PValue::Str(p) => glob::matches(p, req),
                PValue::Masked(c, lit) => glob::matches_masked(c, lit, req),
                _ => false,
            }),
            ArnLike => text(&|v| match v {
                PValue::Str(p) => arn_like(p, req),
                PValue::Masked(c, lit) => arn_like_masked(c, lit, req),
                _ => false,
            }),
            Bool => {
                let r = match req.to_ascii_lowercase().as_str() {
                    "true" => true,
                    "false" => false,
                    _ => return None,
                };
                values.contains(&PValue::Flag(r))
            }
            NumericEquals
            | NumericLessThan
            | NumericLessThanEquals
            | NumericGreaterThan
            | NumericGreaterThanEquals => {
                let r = parse_number(req)?;
                values.iter().any(|v| match v {
                    PValue::Num(p) => compare(self.base, r.partial_cmp(p)),
                    _ => false,
                })
            }
            DateEquals
            | DateLessThan
            | DateLessThanEquals
            | DateGreaterThan
            | DateGreaterThanEquals => {
                let r = parse_date(req)?;
                values.iter().any(|v| match v {
                    PValue::Date(p) => compare(self.base, Some(r.cmp(p))),
                    _ => false,
                })
            }
            IpAddress => {
                let r: IpAddr = req.trim().parse().ok()?;
                values.iter().any(|v| match v {
                    PValue::Net(n) => n.contains(&r),
                    _ => false,
                })
            }
            Null => false,
        })
    }

    /// A value that lets every request through, so the clause restricts nothing:
    /// `StringLike "*"` (or any pattern of only `*` and `?`), `ArnLike "*"` / `"arn:*"`,
    /// `IpAddress 0.0.0.0/0` or `::/0`. One such value is enough (values are ORed).
    fn is_vacuous(&self) -> bool {
        self.values.iter().any(|v| match (self.base, v) {
            (Base::StringLike, PValue::Str(p)) => {
                !p.is_empty() && p.chars().all(|c| c == '*' || c == '?')
            }
            (Base::ArnLike, PValue::Str(p)) => {
                arn_like(p, "arn:aws:x:::y") && arn_like(p, "arn:aws-cn:iam::123456789012:role/r")
            }
            (Base::IpAddress, PValue::Net(n)) => n.prefix_len() == 0,
            _ => false,
        })
    }
}

/// Request value `ord` policy value, for the ordering operators.
fn compare(base: Base, ord: Option<std::cmp::Ordering>) -> bool {
    use std::cmp::Ordering::*;
    let Some(ord) = ord else { return false };
    match base {
        Base::NumericEquals | Base::DateEquals => ord == Equal,
        Base::NumericLessThan | Base::DateLessThan => ord == Less,
        Base::NumericLessThanEquals | Base::DateLessThanEquals => ord != Greater,
        Base::NumericGreaterThan | Base::DateGreaterThan => ord == Greater,
        Base::NumericGreaterThanEquals | Base::DateGreaterThanEquals => ord != Less,
        _ => false,
    }
}

/// ARN comparison: each of the six colon-separated parts matched on its own, wildcards allowed.
fn arn_like(pattern: &str, arn: &str) -> bool {
    if pattern == arn {
        return true;
    }
    let p: Vec<&str> = pattern.splitn(6, ':').collect();
    let a: Vec<&str> = arn.splitn(6, ':').collect();
    if a.len() != 6 {
        return false;
    }
    // A shorter pattern ending in `:*` (such as `arn:*`) leaves the rest of the ARN to that `*`.
    if p.len() < 6 && p.last() == Some(&"*") {
        let n = p.len() - 1;
        return p[..n].iter().zip(&a).all(|(p, a)| glob::matches(p, a));
    }
    p.len() == 6 && p.iter().zip(&a).all(|(p, a)| glob::matches(p, a))
}

/// [`arn_like`] for a substituted template: a colon from a substituted value splits too.
fn arn_like_masked(chars: &[char], literal: &[bool], arn: &str) -> bool {
    let mut parts: Vec<(Vec<char>, Vec<bool>)> = vec![(Vec::new(), Vec::new())];
    for (i, &c) in chars.iter().enumerate() {
        if c == ':' && parts.len() < 6 {
            parts.push((Vec::new(), Vec::new()));
            continue;
        }
        if let Some((pc, pl)) = parts.last_mut() {
            pc.push(c);
            pl.push(literal.get(i).copied().unwrap_or(false));
        }
    }
    let a: Vec<&str> = arn.splitn(6, ':').collect();
    parts.len() == 6
        && a.len() == 6
        && parts
            .iter()
            .zip(&a)
            .all(|((pc, pl), a)| glob::matches_masked(pc, pl, a))
}
