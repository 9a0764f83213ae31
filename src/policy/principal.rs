//! Who makes a request ([`Principal`]) and who a statement names (`Principal` / `NotPrincipal`).
//!
//! Key policies name principals; whether an IAM identity is then allowed also depends on its
//! IAM policies when the key policy delegates to the account (`arn:aws:iam::ACCOUNT:root`).
//! IAM policies are out of scope here, so such a grant is reported as a delegation
//! ([`Cover::Delegated`]): the key policy alone does not let the identity in.

use std::fmt;

use serde::Serialize;
use serde_json::Value;

use crate::arn::{Arn, is_account_id};

/// The principal making a request.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub enum Principal {
    /// An IAM ARN (role, user, assumed-role session, account root) or a 12-digit account id.
    Aws(String),
    /// A service principal such as `kinesisanalytics.amazonaws.com`.
    Service(String),
}

impl Principal {
    /// Parses the CLI form `AWS:<arn-or-account>` or `Service:<name>`.
    pub fn parse_cli(s: &str) -> Result<Self, String> {
        if let Some(rest) = strip_prefix_ignore_case(s, "AWS:") {
            if is_account_id(rest) || Arn::parse(rest).is_ok() {
                return Ok(Self::Aws(rest.to_string()));
            }
            return Err(format!(
                "principal {s:?}: AWS:<...> must be a 12-digit account id or an ARN"
            ));
        }
        if let Some(rest) = strip_prefix_ignore_case(s, "Service:") {
            if !rest.is_empty() && !rest.contains(char::is_whitespace) {
                return Ok(Self::Service(rest.to_string()));
            }
            return Err(format!(
                "principal {s:?}: Service:<name> needs a service name"
            ));
        }
        Err(format!(
            "principal {s:?}: expected AWS:<arn-or-account> or Service:<name>"
        ))
    }
}

impl fmt::Display for Principal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Aws(s) => write!(f, "AWS:{s}"),
            Self::Service(s) => write!(f, "Service:{s}"),
        }
    }
}

fn strip_prefix_ignore_case<'a>(s: &'a str, prefix: &str) -> Option<&'a str> {
    let head = s.get(..prefix.len())?;
    head.eq_ignore_ascii_case(prefix)
        .then(|| &s[prefix.len()..])
}

/// One AWS principal value of a statement, classified once at parse time.
#[derive(Clone, Debug, PartialEq)]
enum AwsPrincipal {
    Any,
    /// `ACCOUNT` or `arn:PARTITION:iam::ACCOUNT:root`.
    Account(String),
    /// Any other ARN, compared exactly (plus assumed-role sessions of a role).
    Arn(String),
    /// A unique id (`AROA...`, `AIDA...`): how KMS shows a principal that was deleted. It
    /// stands for nobody who can still call, so it matches nothing.
    UniqueId(String),
}

/// How a statement's principal element covers a request's principal.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Cover {
    No,
    /// An Allow naming the principal's account: the key policy delegates to the account's
    /// IAM policies, which alone decide for an identity other than the account root.
    Delegated,
    Yes,
}

/// The request's principal, parsed once per evaluation.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Caller {
    /// The account root user (`ACCOUNT` or `...:root`).
    Root {
        account: String,
    },
    /// An IAM role. A role never calls by itself: its requests are made by a session of it,
    /// whose session name is not known here.
    Role {
        account: String,
        arn: String,
    },
    /// An assumed-role session `arn:aws:sts::ACCOUNT:assumed-role/NAME/SESSION`.
    Session {
        account: String,
        role_name: String,
        arn: String,
    },
    /// Any other IAM ARN (a user, a federated user).
    Other {
        account: String,
        arn: String,
    },
    Service(String),
    /// Something that is not an ARN or an account: only `*` names it.
    Unknown,
}

impl Caller {
    pub(crate) fn of(p: &Principal) -> Self {
        let s = match p {
            Principal::Service(s) => return Self::Service(s.to_ascii_lowercase()),
            Principal::Aws(s) => s,
        };
        if is_account_id(s) {
            return Self::Root { account: s.clone() };
        }
        let Ok(a) = Arn::parse(s) else {
            return Self::Unknown;
        };
        let account = a.account.clone();
        if a.service == "iam" && a.resource == "root" {
            return Self::Root { account };
        }
        if a.service == "iam" && a.resource.starts_with("role/") {
            return Self::Role {
                account,
                arn: s.clone(),
            };
        }
        if a.service == "sts"
            && let Some(role_name) = a
                .resource
                .strip_prefix("assumed-role/")
                .and_then(|r| r.split('/').next())
        {
            return Self::Session {
                account,
                role_name: role_name.to_string(),
                arn: s.clone(),
            };
        }
        Self::Other {
            account,
            arn: s.clone(),
        }
    }

    fn account(&self) -> Option<&str> {
        match self {
            Self::Root { account }
            | Self::Role { account, .. }
            | Self::Session { account, .. }
            | Self::Other { account, .. } => Some(account),
            Self::Service(_) | Self::Unknown => None,
        }
    }
}

/// The parsed `Principal` / `NotPrincipal` element.
#[derive(Clone, Debug, PartialEq, Default)]
pub struct PrincipalSpec {
    any: bool,
    aws: Vec<AwsPrincipal>,
    service: Vec<String>,
    /// Federated and CanonicalUser principals never make KMS requests we evaluate; kept so the
    /// statement round-trips, they match nothing.
    other: usize,
}

impl PrincipalSpec {
    pub fn parse(v: &Value) -> Result<Self, String> {
        match v {
            Value::String(s) if s == "*" => Ok(Self {
                any: true,
                ..Self::default()
            }),
            Value::String(s) => Err(format!(
                "{s:?} is not valid; use \"*\" or an object such as {{\"AWS\": ...}}"
            )),
            Value::Object(map) => {
                if map.is_empty() {
                    return Err("empty principal object".into());
                }
                let mut spec = Self::default();
                for (kind, values) in map {
                    let values = string_list(values).map_err(|e| format!("{kind}: {e}"))?;
                    spec.add(kind, values)?;
                }
                Ok(spec)
            }
            _ => Err("must be \"*\" or an object".into()),
        }
    }

    fn add(&mut self, kind: &str, values: Vec<String>) -> Result<(), String> {
        match kind {
            "AWS" => {
                for s in values {
                    let p = classify_aws(&s)?;
                    // IAM: {"AWS": "*"} is the same as "*" and covers service principals too.
                    self.any |= p == AwsPrincipal::Any;
                    self.aws.push(p);
                }
            }
            "Service" => {
                for s in values {
                    if s.contains('*') {
                        return Err(format!(
                            "Service: {s:?}: a service principal cannot be a wildcard (AWS refuses it; use \"*\" for everyone)"
                        ));
                    }
                    self.service.push(s.to_ascii_lowercase());
                }
            }
            "Federated" | "CanonicalUser" => self.other += values.len(),
            other => {
                return Err(format!(
                    "unknown principal type {other:?} (expected AWS, Service, Federated or CanonicalUser)"
                ));
            }
        }
        Ok(())
    }

    /// How a `Principal` element (not `NotPrincipal`) covers `caller` in a statement of
    /// `effect`. IAM User Guide, "AWS JSON policy elements: Principal":
    /// - `"*"` and `{"AWS": "*"}` cover everyone, service principals included;
    /// - a role ARN covers the role's sessions; a session ARN covers that session only;
    /// - an account (`ACCOUNT`, `...:root`) covers the account root user; for the account's
    ///   other identities an Allow only delegates to their IAM policies ([`Cover::Delegated`]),
    ///   while a Deny applies to every identity of the account;
    /// - an account never covers a service principal.
    pub(crate) fn cover(&self, caller: &Caller, deny: bool) -> Cover {
        if self.any {
            return Cover::Yes;
        }
        if let Caller::Service(name) = caller {
            return if self.service.iter().any(|s| s == name) {
                Cover::Yes
            } else {
                Cover::No
            };
        }
        let mut best = Cover::No;
        for a in &self.aws {
            let c = match (a, caller) {
                (
                    AwsPrincipal::Arn(granted),
                    Caller::Role { arn, .. } | Caller::Other { arn, .. },
                ) => Cover::from(granted == arn),
                (AwsPrincipal::Arn(granted), Caller::Session { arn, .. }) => {
                    Cover::from(granted == arn || is_session_of(arn, granted))
                }
                (AwsPrincipal::Account(acct), Caller::Root { account }) => {
                    Cover::from(acct == account)
                }
                (AwsPrincipal::Account(acct), c) if c.account() == Some(acct.as_str()) => {
                    if deny {
                        Cover::Yes
                    } else {
                        Cover::Delegated
                    }
                }
                _ => Cover::No,
            };
            best = best.max(c);
            if best == Cover::Yes {
                break;
            }
        }
        best
    }

    /// Is `caller` exempt from a `NotPrincipal` element? IAM User Guide, "AWS JSON policy
    /// elements: NotPrincipal": AWS checks the account, then the role, then the session, and
    /// the statement applies unless every one of them is listed. So naming an account does not
    /// exempt its identities, naming a role does not exempt its sessions (the session ARN must
    /// be listed as well), and a role (whose requests are always made by some session) is
    /// exempt only when its account, the role and a session of it are all listed.
    pub(crate) fn exempts(&self, caller: &Caller) -> bool {
        if self.any {
            return true;
        }
        let account_listed = |acct: &str| {
            self.aws
                .iter()
                .any(|a| matches!(a, AwsPrincipal::Account(x) if x == acct))
        };
        let arn_listed = |arn: &str| {
            self.aws
                .iter()
                .any(|a| matches!(a, AwsPrincipal::Arn(x) if x == arn))
        };
        match caller {
            Caller::Service(name) => self.service.iter().any(|s| s == name),
            Caller::Root { account } => account_listed(account),
            Caller::Other { account, arn } => account_listed(account) && arn_listed(arn),
            Caller::Session {
                account,
                role_name,
                arn,
            } => {
                let role_listed = self.aws.iter().any(|a| match a {
                    AwsPrincipal::Arn(r) => role_name_of(r).is_some_and(|(acct, name)| {
                        acct == account.as_str() && name == role_name.as_str()
                    }),
                    _ => false,
                });
                account_listed(account) && role_listed && arn_listed(arn)
            }
            Caller::Role { account, arn } => {
                let session_listed = self.aws.iter().any(|a| match a {
                    AwsPrincipal::Arn(s) => is_session_of(s, arn),
                    _ => false,
                });
                account_listed(account) && arn_listed(arn) && session_listed
            }
            Caller::Unknown => false,
        }
    }

    /// True when the element names everyone (`"*"`, `{"AWS": "*"}`).
    pub fn is_anyone(&self) -> bool {
        self.any
    }

    pub fn has_service(&self) -> bool {
        !self.service.is_empty()
    }

    /// The service principals named.
    pub fn services(&self) -> impl Iterator<Item = &str> {
        self.service.iter().map(String::as_str)
    }

    /// The named AWS principals that are neither `*` nor an account: roles, users.
    pub fn aws_arns(&self) -> impl Iterator<Item = &str> {
        self.aws.iter().filter_map(|a| match a {
            AwsPrincipal::Arn(s) => Some(s.as_str()),
            _ => None,
        })
    }

    /// The accounts this element delegates to (`ACCOUNT` / `...:root`).
    pub fn accounts(&self) -> impl Iterator<Item = &str> {
        self.aws.iter().filter_map(|a| match a {
            AwsPrincipal::Account(s) => Some(s.as_str()),
            _ => None,
        })
    }
}

impl From<bool> for Cover {
    fn from(b: bool) -> Self {
        if b { Cover::Yes } else { Cover::No }
    }
}

/// IAM unique ids: four upper-case letters naming the kind (AROA role, AIDA user, AIPA
/// instance profile, ...) then upper-case letters and digits.
fn is_unique_id(s: &str) -> bool {
    const PREFIXES: &[&str] = &[
        "AROA", "AIDA", "AIPA", "ANPA", "ANVA", "ASIA", "AKIA", "AGPA",
    ];
    s.len() >= 16
        && s.len() <= 128
        && PREFIXES.iter().any(|p| s.starts_with(p))
        && s.bytes()
            .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit())
}

fn classify_aws(s: &str) -> Result<AwsPrincipal, String> {
    if s == "*" {
        return Ok(AwsPrincipal::Any);
    }
    if is_account_id(s) {
        return Ok(AwsPrincipal::Account(s.to_string()));
    }
    if is_unique_id(s) {
        return Ok(AwsPrincipal::UniqueId(s.to_string()));
    }
    match Arn::parse(s) {
        Ok(a) if a.service == "iam" && a.resource == "root" => Ok(AwsPrincipal::Account(a.account)),
        Ok(_) => Ok(AwsPrincipal::Arn(s.to_string())),
        Err(e) => Err(format!("AWS principal: {e}")),
    }
}

/// `(account, name)` of an IAM role ARN `arn:aws:iam::ACCT:role/PATH/NAME`.
fn role_name_of(role: &str) -> Option<(String, String)> {
    let r = Arn::parse(role).ok()?;
    if r.service != "iam" || !r.resource.starts_with("role/") {
        return None;
    }
    let name = r.resource.rsplit('/').next()?.to_string();
    Some((r.account, name))
}

/// `arn:aws:sts::ACCT:assumed-role/NAME/SESSION` is a session of `arn:aws:iam::ACCT:role/PATH/NAME`.
fn is_session_of(request: &str, role: &str) -> bool {
    let Ok(req) = Arn::parse(request) else {
        return false;
    };
    let Some(session_role) = req
        .resource
        .strip_prefix("assumed-role/")
        .and_then(|r| r.split('/').next())
    else {
        return false;
    };
    req.service == "sts"
        && role_name_of(role)
            .is_some_and(|(acct, name)| acct == req.account && name == session_role)
}

/// A JSON string or array of strings (the two forms IAM accepts for lists).
pub fn string_list(v: &Value) -> Result<Vec<String>, String> {
    match v {
        Value::String(s) => Ok(vec![s.clone()]),
        Value::Array(items) if !items.is_empty() => items
            .iter()
            .map(|i| match i {
                Value::String(s) => Ok(s.clone()),
                other => Err(format!("expected a string, found {}", kind_of(other))),
            })
            .collect(),
        Value::Array(_) => Err("empty list".into()),
        other => Err(format!(
            "expected a string or a list of strings, found {}",
            kind_of(other)
        )),
    }
}

pub fn kind_of(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "an object",
    }
}
