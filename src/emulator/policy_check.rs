//! The key-policy checks the emulated services make. Deliberately small and self-contained
//! (the real evaluator lives in `crate::policy`; the emulator must stay an independent
//! opinion): well-formedness and size (KMS PutKeyPolicy), the lockout safety check, and
//! whether a policy lets the MSF service principals in (MSF UpdateApplication).

use serde_json::Value;

/// KMS's limit on a key policy document.
pub const MAX_POLICY_BYTES: usize = 32_768;

pub const MSF_PRINCIPALS: [&str; 2] = [
    "kinesisanalytics.amazonaws.com",
    "infrastructure.kinesisanalytics.amazonaws.com",
];

/// Why KMS refuses a policy document.
#[derive(Debug, PartialEq, Eq)]
pub enum PolicyProblem {
    TooLarge(usize),
    Malformed(String),
}

/// The statements of a well-formed, size-limited policy document.
pub fn parse(policy: &str) -> Result<Vec<Value>, PolicyProblem> {
    if policy.len() > MAX_POLICY_BYTES {
        return Err(PolicyProblem::TooLarge(policy.len()));
    }
    let doc: Value = serde_json::from_str(policy)
        .map_err(|e| PolicyProblem::Malformed(format!("policy is not valid JSON: {e}")))?;
    let statements = match doc.get("Statement") {
        Some(Value::Array(a)) => a.clone(),
        Some(s @ Value::Object(_)) => vec![s.clone()],
        _ => return Err(PolicyProblem::Malformed("policy has no Statement".into())),
    };
    for s in &statements {
        match s.get("Effect").and_then(Value::as_str) {
            Some("Allow" | "Deny") => {}
            _ => {
                return Err(PolicyProblem::Malformed(
                    "every statement needs an Effect of Allow or Deny".into(),
                ));
            }
        }
        if s.get("Action").is_none() && s.get("NotAction").is_none() {
            return Err(PolicyProblem::Malformed("a statement has no Action".into()));
        }
        if s.get("Principal").is_none() && s.get("NotPrincipal").is_none() {
            return Err(PolicyProblem::Malformed(
                "a key policy statement must name a Principal".into(),
            ));
        }
    }
    Ok(statements)
}

/// One value or a list of values, as policies write them.
fn values(v: Option<&Value>) -> Vec<&str> {
    match v {
        Some(Value::String(s)) => vec![s.as_str()],
        Some(Value::Array(a)) => a.iter().filter_map(Value::as_str).collect(),
        _ => Vec::new(),
    }
}

/// A KMS action pattern (`kms:*`, `kms:Put*`, `*`) matching `action`, case-insensitively.
fn action_matches(pattern: &str, action: &str) -> bool {
    let (p, a) = (pattern.to_ascii_lowercase(), action.to_ascii_lowercase());
    match p.strip_suffix('*') {
        Some(prefix) => a.starts_with(prefix),
        None => p == a,
    }
}

fn allows_action(statement: &Value, action: &str) -> bool {
    statement.get("Effect").and_then(Value::as_str) == Some("Allow")
        && values(statement.get("Action"))
            .iter()
            .any(|p| action_matches(p, action))
}

fn principals<'a>(statement: &'a Value, kind: &str) -> Vec<&'a str> {
    match statement.get("Principal") {
        Some(Value::String(s)) if s == "*" => vec!["*"],
        Some(p) => values(p.get(kind)),
        None => Vec::new(),
    }
}

/// KMS's lockout safety check, simplified: some Allow statement must still let a principal of
/// the key's account (or everyone) call `kms:PutKeyPolicy`.
pub fn passes_lockout_check(statements: &[Value], account: &str) -> bool {
    statements.iter().any(|s| {
        allows_action(s, "kms:PutKeyPolicy")
            && principals(s, "AWS")
                .iter()
                .any(|p| *p == "*" || *p == account || p.split(':').nth(4) == Some(account))
    })
}

/// The MSF service principals that no Allow statement of the policy names.
pub fn missing_msf_principals(statements: &[Value]) -> Vec<&'static str> {
    MSF_PRINCIPALS
        .into_iter()
        .filter(|wanted| {
            !statements.iter().any(|s| {
                s.get("Effect").and_then(Value::as_str) == Some("Allow")
                    && principals(s, "Service").contains(wanted)
            })
        })
        .collect()
}

/// The policy KMS gives a key created without one: the account may do everything.
pub fn default_policy(account: &str) -> String {
    serde_json::json!({
        "Version": "2012-10-17",
        "Id": "key-default-1",
        "Statement": [{
            "Sid": "Enable IAM User Permissions",
            "Effect": "Allow",
            "Principal": { "AWS": format!("arn:aws:iam::{account}:root") },
            "Action": "kms:*",
            "Resource": "*"
        }]
    })
    .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn checks() {
        let def = default_policy("123456789012");
        let st = parse(&def).unwrap();
        assert!(passes_lockout_check(&st, "123456789012"));
        assert!(!passes_lockout_check(&st, "999999999999"));
        assert_eq!(missing_msf_principals(&st).len(), 2);
        assert!(matches!(parse("{"), Err(PolicyProblem::Malformed(_))));
        assert!(matches!(parse("{}"), Err(PolicyProblem::Malformed(_))));
        let big = format!("{{\"x\":\"{}\"}}", "a".repeat(MAX_POLICY_BYTES));
        assert!(matches!(parse(&big), Err(PolicyProblem::TooLarge(_))));
        let msf = r#"{"Statement":[{"Effect":"Allow","Principal":{"Service":["kinesisanalytics.amazonaws.com","infrastructure.kinesisanalytics.amazonaws.com"]},"Action":"kms:Decrypt","Resource":"*"}]}"#;
        assert!(missing_msf_principals(&parse(msf).unwrap()).is_empty());
        let deny = msf.replace("Allow", "Deny");
        assert_eq!(missing_msf_principals(&parse(&deny).unwrap()).len(), 2);
    }
}
