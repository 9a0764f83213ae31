//! Who the controller is in AWS (`sts:GetCallerIdentity`), and whether that is the operator
//! role the key policies are written for. Pure: no I/O.
//!
//! Why it matters: MSF checks the key policy with the caller's own identity when it validates
//! an UpdateApplication. If the controller runs as role A but the key policies name role B
//! (`spec.keyPolicy.operatorRoleArn`, or the controller's `--operator-role-arn`), every switch
//! would be refused by MSF after the controller had already rewritten key policies for B.
//!
//! Comparison: a role session ARN (`arn:aws:sts::ACCT:assumed-role/ROLE/SESSION`) carries
//! neither the role's path nor its unique id, so roles compare by partition, account and role
//! name. IAM role names are unique per account ignoring case, so the name compares
//! case-insensitively.

use serde::Serialize;

use crate::arn::Arn;

/// What `sts:GetCallerIdentity` answered.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct CallerIdentity {
    /// e.g. `arn:aws:sts::111122223333:assumed-role/msf-cmk-controller/botocore-session-1`.
    pub arn: String,
    pub account: String,
    pub user_id: String,
}

/// An IAM role, as far as a session ARN identifies it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RoleName {
    pub partition: String,
    pub account: String,
    /// The last segment of the role's path.
    pub name: String,
}

impl RoleName {
    /// The role of an IAM role ARN (`arn:aws:iam::ACCT:role/PATH/NAME`) or of a role session
    /// ARN (`arn:aws:sts::ACCT:assumed-role/NAME/SESSION`); `None` for users, root, federated
    /// users and anything else.
    pub fn of(arn: &str) -> Option<Self> {
        let a = Arn::parse(arn).ok()?;
        let name = match a.service.as_str() {
            "iam" => a.resource.strip_prefix("role/")?.rsplit('/').next()?,
            "sts" => {
                let mut parts = a.resource.strip_prefix("assumed-role/")?.splitn(2, '/');
                let name = parts.next()?;
                parts.next().filter(|session| !session.is_empty())?;
                name
            }
            _ => return None,
        };
        if name.is_empty() || a.account.is_empty() {
            return None;
        }
        Some(Self {
            partition: a.partition,
            account: a.account,
            name: name.to_string(),
        })
    }

    pub fn same_as(&self, other: &RoleName) -> bool {
        self.partition == other.partition
            && self.account == other.account
            && self.name.eq_ignore_ascii_case(&other.name)
    }

    /// `arn:PARTITION:iam::ACCOUNT:role/NAME` (without a path: a session does not say it).
    pub fn role_arn(&self) -> String {
        format!(
            "arn:{}:iam::{}:role/{}",
            self.partition, self.account, self.name
        )
    }
}

impl CallerIdentity {
    /// The IAM role behind the caller, when it is a role session (or a role ARN).
    pub fn role(&self) -> Option<RoleName> {
        RoleName::of(&self.arn)
    }

    /// `None` when the caller is the operator role; else why not, for a status message.
    pub fn mismatch(&self, operator_role_arn: &str) -> Option<String> {
        let Some(operator) = RoleName::of(operator_role_arn) else {
            return Some(format!(
                "the operator role {operator_role_arn:?} is not an IAM role ARN"
            ));
        };
        match self.role() {
            Some(me) if me.same_as(&operator) => None,
            Some(me) => Some(format!(
                "the controller runs as {} (role {}), but the key policies name the operator role {operator_role_arn}: MSF checks the key policy with the caller's identity, so nothing is written. Run the controller as that role, or set spec.keyPolicy.operatorRoleArn / --operator-role-arn to {}",
                self.arn,
                me.role_arn(),
                me.role_arn()
            )),
            None => Some(format!(
                "the controller runs as {}, which is not a role session, but the key policies name the operator role {operator_role_arn}: MSF checks the key policy with the caller's identity, so nothing is written. Run the controller as that role",
                self.arn
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn caller(arn: &str) -> CallerIdentity {
        CallerIdentity {
            arn: arn.into(),
            account: "111122223333".into(),
            user_id: "AROAEXAMPLE:session".into(),
        }
    }

    #[test]
    fn roles_of_arns() {
        let r = RoleName::of("arn:aws:sts::111122223333:assumed-role/msf-op/session-1").unwrap();
        assert_eq!(
            (r.partition.as_str(), r.account.as_str(), r.name.as_str()),
            ("aws", "111122223333", "msf-op")
        );
        assert_eq!(r.role_arn(), "arn:aws:iam::111122223333:role/msf-op");
        // A path is not part of a session ARN: compare by name.
        let with_path = RoleName::of("arn:aws:iam::111122223333:role/team/a/msf-op").unwrap();
        assert!(r.same_as(&with_path));
        assert!(
            RoleName::of("arn:aws-cn:sts::111122223333:assumed-role/msf-op/s")
                .is_some_and(|c| !c.same_as(&with_path)),
            "another partition"
        );
        for not_a_role in [
            "arn:aws:iam::111122223333:user/alice",
            "arn:aws:iam::111122223333:root",
            "arn:aws:sts::111122223333:federated-user/bob",
            "arn:aws:sts::111122223333:assumed-role/msf-op",
            "arn:aws:sts::111122223333:assumed-role//s",
            "arn:aws:iam::111122223333:role/",
            "not an arn",
        ] {
            assert_eq!(RoleName::of(not_a_role), None, "{not_a_role}");
        }
    }

    #[test]
    fn mismatch_by_account_and_role_name() {
        let me = caller("arn:aws:sts::111122223333:assumed-role/MSF-Op/i-0abc");
        assert_eq!(me.mismatch("arn:aws:iam::111122223333:role/msf-op"), None);
        assert_eq!(
            me.mismatch("arn:aws:iam::111122223333:role/ops/msf-op"),
            None
        );
        let other = me.mismatch("arn:aws:iam::111122223333:role/other").unwrap();
        assert!(
            other.contains("arn:aws:iam::111122223333:role/MSF-Op"),
            "{other}"
        );
        assert!(
            me.mismatch("arn:aws:iam::444455556666:role/msf-op")
                .is_some(),
            "another account"
        );
        let user = caller("arn:aws:iam::111122223333:user/alice");
        assert!(
            user.mismatch("arn:aws:iam::111122223333:role/msf-op")
                .unwrap()
                .contains("not a role session")
        );
    }
}
