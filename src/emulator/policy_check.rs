//! KMS's well-formedness checks of a key policy document (size, JSON, Effect, Principal),
//! deliberately its own small code: what KMS stores must not depend on the engine under
//! test. Decisions about access (MSF's checks, the lock-out check) are in `access.rs`.

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
        // A statement without Action (or Resource) is stored and has no effect, as KMS does.
        if s.get("Principal").is_none() && s.get("NotPrincipal").is_none() {
            return Err(PolicyProblem::Malformed(
                "a key policy statement must name a Principal".into(),
            ));
        }
    }
    Ok(statements)
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
        assert_eq!(parse(&def).unwrap().len(), 1);
        let no_action = r#"{"Statement":[{"Effect":"Allow","Principal":"*","Resource":"*"}]}"#;
        assert!(parse(no_action).is_ok());
        assert!(matches!(parse("{"), Err(PolicyProblem::Malformed(_))));
        assert!(matches!(parse("{}"), Err(PolicyProblem::Malformed(_))));
        let big = format!("{{\"x\":\"{}\"}}", "a".repeat(MAX_POLICY_BYTES));
        assert!(matches!(parse(&big), Err(PolicyProblem::TooLarge(_))));
    }
}
