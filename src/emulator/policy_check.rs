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

/// KMS's rule since 2025-08-18 (AWS Health notice to key owners): every statement needs
/// Action or NotAction, and Resource or NotResource, and the only Resource accepted is `*`.
pub fn check_complete(statements: &[Value]) -> Result<(), PolicyProblem> {
    for (i, s) in statements.iter().enumerate() {
        let label = s.get("Sid").and_then(Value::as_str).map_or_else(
            || format!("statement {i}"),
            |sid| format!("statement {sid:?}"),
        );
        if s.get("Action").is_none() && s.get("NotAction").is_none() {
            return Err(PolicyProblem::Malformed(format!(
                "{label} has no Action or NotAction element"
            )));
        }
        let resource = s.get("Resource").or_else(|| s.get("NotResource"));
        let only_star = match resource {
            Some(Value::String(r)) => r == "*",
            Some(Value::Array(rs)) => !rs.is_empty() && rs.iter().all(|r| r == "*"),
            _ => false,
        };
        if !only_star {
            return Err(PolicyProblem::Malformed(format!(
                "{label} needs a Resource element of \"*\""
            )));
        }
    }
    Ok(())
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
        assert!(check_complete(&parse(no_action).unwrap()).is_err());
        assert!(check_complete(&parse(&def).unwrap()).is_ok());
        let narrow = r#"{"Statement":[{"Effect":"Allow","Principal":"*","Action":"kms:*","Resource":"arn:aws:kms:r:1:key/k"}]}"#;
        assert!(check_complete(&parse(narrow).unwrap()).is_err());
        assert!(matches!(parse("{"), Err(PolicyProblem::Malformed(_))));
        assert!(matches!(parse("{}"), Err(PolicyProblem::Malformed(_))));
        let big = format!("{{\"x\":\"{}\"}}", "a".repeat(MAX_POLICY_BYTES));
        assert!(matches!(parse(&big), Err(PolicyProblem::TooLarge(_))));
    }
}
