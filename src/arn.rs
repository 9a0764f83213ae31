//! ARN parsing and validation for the few ARN kinds the controller handles.
//!
//! Pure. Errors name what is wrong so that a status message or a CLI error is actionable.

use std::fmt;

/// A parsed ARN: `arn:partition:service:region:account:resource`.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Arn {
    pub partition: String,
    pub service: String,
    pub region: String,
    pub account: String,
    pub resource: String,
}

#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("invalid ARN {arn:?}: {why}")]
pub struct ArnError {
    pub arn: String,
    pub why: String,
}

fn err(arn: &str, why: impl Into<String>) -> ArnError {
    ArnError {
        arn: arn.to_string(),
        why: why.into(),
    }
}

impl Arn {
    pub fn parse(s: &str) -> Result<Self, ArnError> {
        let mut parts = s.splitn(6, ':');
        let prefix = parts.next().unwrap_or_default();
        if prefix != "arn" {
            return Err(err(s, "must start with \"arn:\""));
        }
        let (Some(partition), Some(service), Some(region), Some(account), Some(resource)) = (
            parts.next(),
            parts.next(),
            parts.next(),
            parts.next(),
            parts.next(),
        ) else {
            return Err(err(
                s,
                "expected 6 colon-separated parts (arn:partition:service:region:account:resource)",
            ));
        };
        if !matches!(
            partition,
            "aws" | "aws-cn" | "aws-us-gov" | "aws-iso" | "aws-iso-b"
        ) && !partition.starts_with("aws-")
        {
            return Err(err(s, format!("unknown partition {partition:?}")));
        }
        if service.is_empty() {
            return Err(err(s, "empty service"));
        }
        if !account.is_empty() && !is_account_id(account) {
            return Err(err(
                s,
                format!("account {account:?} is not a 12-digit account id"),
            ));
        }
        if resource.is_empty() {
            return Err(err(s, "empty resource"));
        }
        Ok(Self {
            partition: partition.to_string(),
            service: service.to_string(),
            region: region.to_string(),
            account: account.to_string(),
            resource: resource.to_string(),
        })
    }

    /// An MSF application ARN: `arn:aws:kinesisanalytics:REGION:ACCOUNT:application/NAME`.
    pub fn parse_application(s: &str) -> Result<Self, ArnError> {
        let arn = Self::parse(s)?;
        if arn.service != "kinesisanalytics" {
            return Err(err(
                s,
                "not an MSF application ARN (service must be kinesisanalytics)",
            ));
        }
        if arn.region.is_empty() || arn.account.is_empty() {
            return Err(err(s, "an application ARN needs a region and an account"));
        }
        match arn.resource.strip_prefix("application/") {
            Some(name) if is_valid_application_name(name) => Ok(arn),
            Some(name) => Err(err(s, format!("invalid application name {name:?}"))),
            None => Err(err(s, "resource must be application/NAME")),
        }
    }

    /// A KMS key ARN: `arn:aws:kms:REGION:ACCOUNT:key/KEY-ID`.
    pub fn parse_key(s: &str) -> Result<Self, ArnError> {
        let arn = Self::parse(s)?;
        if arn.service != "kms" {
            return Err(err(s, "not a KMS ARN (service must be kms)"));
        }
        if arn.region.is_empty() || arn.account.is_empty() {
            return Err(err(s, "a key ARN needs a region and an account"));
        }
        match arn.resource.strip_prefix("key/") {
            Some(id) if !id.is_empty() => Ok(arn),
            _ => Err(err(s, "resource must be key/KEY-ID")),
        }
    }

    /// An IAM role ARN: `arn:aws:iam::ACCOUNT:role/PATH/NAME`.
    pub fn parse_role(s: &str) -> Result<Self, ArnError> {
        let arn = Self::parse(s)?;
        if arn.service != "iam" {
            return Err(err(s, "not an IAM ARN (service must be iam)"));
        }
        if arn.account.is_empty() {
            return Err(err(s, "a role ARN needs an account"));
        }
        if !arn.resource.starts_with("role/") || arn.resource.len() <= 5 {
            return Err(err(s, "resource must be role/NAME"));
        }
        Ok(arn)
    }

    /// The application name of an application ARN.
    pub fn application_name(&self) -> Option<&str> {
        self.resource.strip_prefix("application/")
    }

    /// The ARN of application `name` in `region` / `account`.
    pub fn application(partition: &str, region: &str, account: &str, name: &str) -> Self {
        Self {
            partition: partition.to_string(),
            service: "kinesisanalytics".to_string(),
            region: region.to_string(),
            account: account.to_string(),
            resource: format!("application/{name}"),
        }
    }
}

impl fmt::Display for Arn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "arn:{}:{}:{}:{}:{}",
            self.partition, self.service, self.region, self.account, self.resource
        )
    }
}

pub fn is_account_id(s: &str) -> bool {
    s.len() == 12 && s.bytes().all(|b| b.is_ascii_digit())
}

/// MSF application name rules: 1-128 characters of `[a-zA-Z0-9_.-]`.
pub fn is_valid_application_name(s: &str) -> bool {
    (1..=128).contains(&s.len())
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'))
}

/// What a `keyId` in a spec names, decided from its shape alone.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum KeyRef {
    KeyArn(Arn),
    AliasArn(Arn),
    /// `alias/NAME`.
    AliasName(String),
    /// A bare key id (UUID or `mrk-` multi-Region id).
    KeyId(String),
}

impl KeyRef {
    pub fn parse(s: &str) -> Result<Self, ArnError> {
        if s.starts_with("arn:") {
            let arn = Arn::parse(s)?;
            if arn.service != "kms" {
                return Err(err(s, "not a KMS ARN (service must be kms)"));
            }
            if arn.resource.starts_with("key/") {
                return Arn::parse_key(s).map(Self::KeyArn);
            }
            if arn.resource.starts_with("alias/") && arn.resource.len() > 6 {
                return Ok(Self::AliasArn(arn));
            }
            return Err(err(s, "a KMS ARN must name key/ID or alias/NAME"));
        }
        if let Some(name) = s.strip_prefix("alias/") {
            if name.is_empty() || name.len() > 250 {
                return Err(err(s, "alias name must be 1-250 characters after alias/"));
            }
            if name.starts_with("aws/") {
                return Err(err(
                    s,
                    "alias/aws/... names an AWS managed key, which MSF cannot use",
                ));
            }
            if !name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'/' | b'_' | b'-'))
            {
                return Err(err(s, "alias names use only [a-zA-Z0-9/_-]"));
            }
            return Ok(Self::AliasName(s.to_string()));
        }
        if !s.is_empty()
            && s.len() <= 2048
            && s.bytes()
                .all(|b| b.is_ascii_hexdigit() || b == b'-' || b == b'm' || b == b'r' || b == b'k')
        {
            return Ok(Self::KeyId(s.to_string()));
        }
        Err(err(
            s,
            "keyId must be a key ARN, key id, alias ARN or alias/NAME",
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn application_arns() {
        let a = Arn::parse_application(
            "arn:aws:kinesisanalytics:us-east-1:123456789012:application/MyCmkApplication",
        )
        .unwrap();
        assert_eq!(a.application_name(), Some("MyCmkApplication"));
        assert_eq!(a.region, "us-east-1");
        assert!(Arn::parse_application("arn:aws:kms:us-east-1:123456789012:key/x").is_err());
        assert!(
            Arn::parse_application("arn:aws:kinesisanalytics:us-east-1:1234:application/x")
                .is_err()
        );
        assert!(
            Arn::parse_application(
                "arn:aws:kinesisanalytics:us-east-1:123456789012:application/a b"
            )
            .is_err()
        );
        assert!(Arn::parse("not-an-arn").is_err());
        assert!(Arn::parse("arn:aws:kms").is_err());
    }

    #[test]
    fn key_refs() {
        assert!(matches!(
            KeyRef::parse(
                "arn:aws:kms:us-east-1:123456789012:key/1234abcd-12ab-34cd-56ef-1234567890ab"
            ),
            Ok(KeyRef::KeyArn(_))
        ));
        assert!(matches!(
            KeyRef::parse("arn:aws:kms:us-east-1:123456789012:alias/app"),
            Ok(KeyRef::AliasArn(_))
        ));
        assert!(matches!(
            KeyRef::parse("alias/app-key"),
            Ok(KeyRef::AliasName(_))
        ));
        assert!(matches!(
            KeyRef::parse("1234abcd-12ab-34cd-56ef-1234567890ab"),
            Ok(KeyRef::KeyId(_))
        ));
        assert!(matches!(
            KeyRef::parse("mrk-1234abcd12ab34cd56ef1234567890ab"),
            Ok(KeyRef::KeyId(_))
        ));
        assert!(KeyRef::parse("alias/aws/kinesisanalytics").is_err());
        assert!(KeyRef::parse("hello world").is_err());
        assert!(KeyRef::parse("").is_err());
        assert!(KeyRef::parse("arn:aws:s3:::bucket").is_err());
    }

    #[test]
    fn names() {
        assert!(is_valid_application_name("a"));
        assert!(is_valid_application_name(&"a".repeat(128)));
        assert!(!is_valid_application_name(&"a".repeat(129)));
        assert!(!is_valid_application_name(""));
        assert!(!is_valid_application_name("a/b"));
    }
}
