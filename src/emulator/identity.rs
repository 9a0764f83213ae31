//! Who calls: the identity the emulator was told (`--caller-arn`), as STS's
//! GetCallerIdentity reports it and as the services evaluate key policies for it.
//!
//! A role ARN stands for a session of that role, as an EKS pod (IRSA) or any assumed role
//! is: STS answers `arn:aws:sts::ACCOUNT:assumed-role/NAME/msf-cmk-controller`, and policies
//! are evaluated with that session as the principal and the role as `aws:PrincipalArn`.

use serde_json::Value;

/// The session name the emulator gives an assumed role.
pub const SESSION_NAME: &str = "msf-cmk-controller";

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Identity {
    pub partition: String,
    pub account: String,
    /// What STS's GetCallerIdentity answers, and the principal policies see.
    pub arn: String,
    /// `aws:PrincipalArn`: the role for a session, else the ARN itself.
    pub principal_arn: String,
    pub user_id: String,
}

impl Identity {
    /// A role, user or root ARN (`arn:aws:iam::ACCOUNT:role/NAME`), or an assumed-role
    /// session ARN (`arn:aws:sts::ACCOUNT:assumed-role/NAME/SESSION`).
    pub fn parse(arn: &str) -> Result<Self, String> {
        let bad =
            || format!("caller ARN {arn:?} is not an IAM role, user, root or assumed-role ARN");
        let parts: Vec<&str> = arn.splitn(6, ':').collect();
        let ["arn", partition, service, "", account, resource] = parts[..] else {
            return Err(bad());
        };
        if !crate::arn::is_account_id(account) || !partition.starts_with("aws") {
            return Err(bad());
        }
        let own = |s: &str| s.to_string();
        let id = |prefix: &str, name: &str| format!("{prefix}{}", pseudo_id(account, name));
        match (service, resource) {
            ("iam", "root") => Ok(Self {
                partition: own(partition),
                account: own(account),
                arn: own(arn),
                principal_arn: own(arn),
                user_id: own(account),
            }),
            ("iam", r) if r.starts_with("user/") && r.len() > 5 => Ok(Self {
                partition: own(partition),
                account: own(account),
                arn: own(arn),
                principal_arn: own(arn),
                user_id: id("AIDA", r),
            }),
            ("iam", r) if r.starts_with("role/") => {
                let name = r
                    .rsplit('/')
                    .next()
                    .filter(|n| !n.is_empty())
                    .ok_or_else(bad)?;
                Ok(Self {
                    partition: own(partition),
                    account: own(account),
                    arn: format!(
                        "arn:{partition}:sts::{account}:assumed-role/{name}/{SESSION_NAME}"
                    ),
                    principal_arn: own(arn),
                    user_id: format!("{}:{SESSION_NAME}", id("AROA", r)),
                })
            }
            ("sts", r) if r.starts_with("assumed-role/") => {
                let mut it = r["assumed-role/".len()..].splitn(2, '/');
                let (Some(name), Some(session)) = (it.next(), it.next()) else {
                    return Err(bad());
                };
                if name.is_empty() || session.is_empty() {
                    return Err(bad());
                }
                Ok(Self {
                    partition: own(partition),
                    account: own(account),
                    arn: own(arn),
                    principal_arn: format!("arn:{partition}:iam::{account}:role/{name}"),
                    user_id: format!("{}:{session}", id("AROA", &format!("role/{name}"))),
                })
            }
            _ => Err(bad()),
        }
    }

    /// A session of a role, as STS's AssumeRole names it: `arn:aws:sts::ACCOUNT:assumed-role/
    /// NAME/SESSION`, with the role (its path kept) as `aws:PrincipalArn`.
    pub fn role_session(role_arn: &str, session: &str) -> Result<Self, String> {
        let role = Self::parse(role_arn)?;
        let is_role = role_arn
            .split(':')
            .nth(5)
            .is_some_and(|r| r.starts_with("role/"));
        if !is_role || session.is_empty() {
            return Err(format!("{role_arn:?} is not an IAM role ARN"));
        }
        let name = role_arn.rsplit('/').next().unwrap_or_default();
        let role_id = role.user_id.split(':').next().unwrap_or_default();
        Ok(Self {
            arn: format!(
                "arn:{}:sts::{}:assumed-role/{name}/{session}",
                role.partition, role.account
            ),
            user_id: format!("{role_id}:{session}"),
            ..role
        })
    }

    /// The principal of a policy evaluation and its context keys.
    pub fn request(&self, action: &str, key_arn: &str) -> crate::policy::Request {
        crate::policy::Request::new(
            crate::policy::Principal::Aws(self.arn.clone()),
            action,
            key_arn,
        )
        .with_context("aws:PrincipalArn", self.principal_arn.clone())
        .with_context("aws:PrincipalAccount", self.account.clone())
    }
}

/// A stable, plausible unique id (IAM's are 21 characters: a 4-letter prefix and 17 more).
fn pseudo_id(account: &str, name: &str) -> String {
    // FNV-1a: stable across runs and platforms, unlike the std hasher.
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in account.bytes().chain(name.bytes()) {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";
    (0..17)
        .map(|i| ALPHABET[((h >> ((i * 5) % 60)) & 31) as usize] as char)
        .collect()
}

/// STS's awsQuery answer to GetCallerIdentity.
pub fn get_caller_identity_xml(id: &Identity, request_id: &str) -> String {
    format!(
        "<GetCallerIdentityResponse xmlns=\"https://sts.amazonaws.com/doc/2011-06-15/\">\n  <GetCallerIdentityResult>\n    <Arn>{}</Arn>\n    <UserId>{}</UserId>\n    <Account>{}</Account>\n  </GetCallerIdentityResult>\n  <ResponseMetadata>\n    <RequestId>{request_id}</RequestId>\n  </ResponseMetadata>\n</GetCallerIdentityResponse>\n",
        xml_escape(&id.arn),
        xml_escape(&id.user_id),
        xml_escape(&id.account)
    )
}

/// STS's awsQuery error shape.
pub fn error_xml(code: &str, message: &str, request_id: &str) -> String {
    format!(
        "<ErrorResponse xmlns=\"https://sts.amazonaws.com/doc/2011-06-15/\">\n  <Error>\n    <Type>Sender</Type>\n    <Code>{}</Code>\n    <Message>{}</Message>\n  </Error>\n  <RequestId>{request_id}</RequestId>\n</ErrorResponse>\n",
        xml_escape(code),
        xml_escape(message)
    )
}

pub fn xml_escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// The `Action` of a form-encoded awsQuery body (`Action=GetCallerIdentity&Version=...`).
pub fn query_action(body: &[u8]) -> Option<String> {
    let text = std::str::from_utf8(body).ok()?;
    text.split('&')
        .filter_map(|pair| pair.split_once('='))
        .find(|(k, _)| *k == "Action")
        .map(|(_, v)| v.to_string())
}

/// The principals named by a policy statement's `Principal` (AWS ARNs only): what the
/// strict-principals check looks up.
pub fn aws_principals(statement: &Value) -> Vec<String> {
    let Some(p) = statement
        .get("Principal")
        .or_else(|| statement.get("NotPrincipal"))
    else {
        return Vec::new();
    };
    match p.get("AWS") {
        Some(Value::String(s)) => vec![s.clone()],
        Some(Value::Array(a)) => a
            .iter()
            .filter_map(Value::as_str)
            .map(str::to_string)
            .collect(),
        _ => Vec::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identities() {
        let role =
            Identity::parse("arn:aws:iam::123456789012:role/platform/msf-cmk-operator").unwrap();
        assert_eq!(
            role.arn,
            "arn:aws:sts::123456789012:assumed-role/msf-cmk-operator/msf-cmk-controller"
        );
        assert_eq!(
            role.principal_arn,
            "arn:aws:iam::123456789012:role/platform/msf-cmk-operator"
        );
        assert!(role.user_id.starts_with("AROA") && role.user_id.ends_with(":msf-cmk-controller"));
        let session = Identity::parse("arn:aws:sts::123456789012:assumed-role/Ops/alice").unwrap();
        assert_eq!(session.principal_arn, "arn:aws:iam::123456789012:role/Ops");
        let s = Identity::role_session("arn:aws:iam::222222222222:role/team/ops", "s1").unwrap();
        assert_eq!(s.arn, "arn:aws:sts::222222222222:assumed-role/ops/s1");
        assert_eq!(s.principal_arn, "arn:aws:iam::222222222222:role/team/ops");
        assert_eq!(s.account, "222222222222");
        assert!(s.user_id.starts_with("AROA") && s.user_id.ends_with(":s1"));
        assert!(Identity::role_session("arn:aws:iam::222222222222:user/bob", "s").is_err());
        let user = Identity::parse("arn:aws:iam::123456789012:user/bob").unwrap();
        assert_eq!(user.arn, user.principal_arn);
        let root = Identity::parse("arn:aws-cn:iam::123456789012:root").unwrap();
        assert_eq!(root.user_id, "123456789012");
        for bad in [
            "",
            "role/x",
            "arn:aws:iam::12:role/x",
            "arn:aws:s3:::bucket",
            "arn:aws:iam::123456789012:role/",
        ] {
            assert!(Identity::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn query() {
        assert_eq!(
            query_action(b"Action=GetCallerIdentity&Version=2011-06-15").as_deref(),
            Some("GetCallerIdentity")
        );
        assert_eq!(query_action(b"Version=1"), None);
        let xml = get_caller_identity_xml(
            &Identity::parse("arn:aws:iam::123456789012:user/a&b").unwrap(),
            "r",
        );
        assert!(xml.contains("<Arn>arn:aws:iam::123456789012:user/a&amp;b</Arn>"));
    }
}
