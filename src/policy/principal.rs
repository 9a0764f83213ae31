//! Who makes a request ([`Principal`]) and who a statement names (`Principal` / `NotPrincipal`).
//!
//! Key policies name principals; whether an IAM identity is then allowed also depends on its
//! IAM policies when the key policy delegates to the account (`arn:aws:iam::ACCOUNT:root`).
//! IAM policies are out of scope here: an account grant is treated as allowing every principal
//! of that account, which is the best the key policy alone can say.

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

    /// The account a principal belongs to, when it has one.
    fn account(&self) -> Option<&str> {
        match self {
            Self::Aws(s) if is_account_id(s) => Some(s),
            Self::Aws(s) => s.split(':').nth(4).filter(|a| is_account_id(a)),
            Self::Service(_) => None,
        }
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
                    match kind.as_str() {
                        "AWS" => {
                            for s in values {
                                spec.aws.push(classify_aws(&s)?);
                            }
                        }
                        "Service" => {
                            for s in values {
                                if s == "*" {
                                    spec.any = true;
                                } else {
                                    spec.service.push(s.to_ascii_lowercase());
                                }
                            }
                        }
                        "Federated" | "CanonicalUser" => spec.other += values.len(),
                        other => {
                            return Err(format!(
                                "unknown principal type {other:?} (expected AWS, Service, Federated or CanonicalUser)"
                            ));
                        }
                    }
                }
                Ok(spec)
            }
            _ => Err("must be \"*\" or an object".into()),
        }
    }

    /// Does this element name `p`? `"*"` and `{"AWS": "*"}` are equivalent and name everyone,
    /// service principals included, as AWS documents for resource policies.
    pub fn matches(&self, p: &Principal) -> bool {
        if self.any {
            return true;
        }
        match p {
            Principal::Service(name) => self.service.iter().any(|s| s.eq_ignore_ascii_case(name)),
            Principal::Aws(arn) => self.aws.iter().any(|a| match a {
                AwsPrincipal::Any => true,
                AwsPrincipal::Account(acct) => p.account() == Some(acct.as_str()),
                AwsPrincipal::Arn(granted) => granted == arn || is_session_of(arn, granted),
            }),
        }
    }

    /// True when the element names everyone (`"*"`, `{"AWS": "*"}`).
    pub fn is_anyone(&self) -> bool {
        self.any || self.aws.contains(&AwsPrincipal::Any)
    }

    pub fn has_service(&self) -> bool {
        !self.service.is_empty()
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

fn classify_aws(s: &str) -> Result<AwsPrincipal, String> {
    if s == "*" {
        return Ok(AwsPrincipal::Any);
    }
    if is_account_id(s) {
        return Ok(AwsPrincipal::Account(s.to_string()));
    }
    match Arn::parse(s) {
        Ok(a) if a.service == "iam" && a.resource == "root" => Ok(AwsPrincipal::Account(a.account)),
        Ok(_) => Ok(AwsPrincipal::Arn(s.to_string())),
        Err(e) => Err(format!("AWS principal: {e}")),
    }
}

/// `arn:aws:sts::ACCT:assumed-role/NAME/SESSION` is a session of `arn:aws:iam::ACCT:role/PATH/NAME`.
fn is_session_of(request: &str, role: &str) -> bool {
    let (Ok(req), Ok(role)) = (Arn::parse(request), Arn::parse(role)) else {
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
        && role.service == "iam"
        && req.account == role.account
        && role.resource.starts_with("role/")
        && role.resource.rsplit('/').next() == Some(session_role)
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
