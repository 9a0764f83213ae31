//! Accounts per namespace (issue 11): which AWS account, and as which roles, the controller
//! acts in for a namespace. PURE: parsing, validation and the account guard; no I/O (the
//! clients are built by `aws::assume`, the per-account state by `controller::fleet`).
//!
//! A controller-wide file (`--accounts-config`, env `MSF_CMK_ACCOUNTS_CONFIG`, YAML or JSON):
//!
//! ```yaml
//! accounts:
//! - namespaces: ["team-a", "team-a-*"]          # the tenancy file's glob: * and ?
//!   accountId: "111111111111"
//!   operatorRoleArn: arn:aws:iam::111111111111:role/msf-cmk-operator   # MSF calls, DescribeKey
//!   keyAdminRoleArn: arn:aws:iam::111111111111:role/msf-cmk-key-admin  # optional: key policy calls
//!   externalId: team-a                                                  # optional
//!   regions: [us-east-1, eu-west-1]                                     # optional
//! ```
//!
//! Parsed strictly because a typo here sends a team's writes to the wrong account: unknown
//! fields, malformed account ids, a role of another account than `accountId`, and two entries
//! whose patterns can match one namespace are all errors at start. A namespace no entry matches
//! keeps the pod's own identity (today's behaviour).

use std::collections::HashMap;

use schemars::JsonSchema;
use serde::Deserialize;

use crate::controller::tenancy::glob;

/// The accounts file of msf-cmk-controller (`--accounts-config`): namespace patterns mapped to
/// the AWS account, and the roles, the controller acts as for them.
#[derive(Clone, Debug, Default, Deserialize, JsonSchema, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct AccountsConfig {
    /// Namespace patterns and the AWS account each acts in. No two entries may match one
    /// namespace.
    pub accounts: Vec<AccountEntry>,
}

/// One account mapping.
#[derive(Clone, Debug, Deserialize, JsonSchema, PartialEq, Eq)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct AccountEntry {
    /// Namespace names or patterns (`*` any run of characters, `?` one character).
    #[schemars(length(min = 1))]
    pub namespaces: Vec<String>,
    /// The 12-digit AWS account id (quote it in YAML so it stays a string).
    #[schemars(regex(pattern = r"^\d{12}$"))]
    pub account_id: String,
    /// The role assumed for MSF calls and DescribeKey (and the key policy calls when no
    /// key administrator is set). Must be a role of `accountId`.
    #[schemars(regex(pattern = r"^arn:aws[a-z-]*:iam::\d{12}:role/.+$"))]
    pub operator_role_arn: String,
    /// Optional: the role assumed for GetKeyPolicy / PutKeyPolicy. Must be a role of
    /// `accountId`.
    #[serde(default)]
    #[schemars(regex(pattern = r"^arn:aws[a-z-]*:iam::\d{12}:role/.+$"))]
    pub key_admin_role_arn: Option<String>,
    /// Optional: passed as `ExternalId` to sts:AssumeRole for both roles.
    #[serde(default)]
    #[schemars(length(min = 2, max = 1224))]
    pub external_id: Option<String>,
    /// Optional: the only regions these namespaces may act in.
    #[serde(default)]
    pub regions: Option<Vec<String>>,
}

#[derive(Debug, thiserror::Error)]
#[error("accounts config: {0}")]
pub struct AccountsConfigError(String);

impl AccountsConfig {
    /// Parses YAML (JSON is YAML too) and validates it.
    pub fn parse(text: &str) -> Result<Self, AccountsConfigError> {
        let cfg: Self =
            yaml_serde::from_str(text).map_err(|e| AccountsConfigError(e.to_string()))?;
        for (i, e) in cfg.accounts.iter().enumerate() {
            e.validate()
                .map_err(|m| AccountsConfigError(format!("accounts[{i}]: {m}")))?;
        }
        cfg.check_overlaps()?;
        Ok(cfg)
    }

    /// The index of the entry that maps `namespace`, if any (at most one can: overlaps are
    /// refused at parse time).
    pub fn entry_index(&self, namespace: &str) -> Option<usize> {
        self.accounts
            .iter()
            .position(|e| e.namespaces.iter().any(|p| glob(p, namespace)))
    }

    pub fn entry_for(&self, namespace: &str) -> Option<&AccountEntry> {
        self.entry_index(namespace).map(|i| &self.accounts[i])
    }

    /// Two entries whose patterns could both match some namespace would make the account of
    /// that namespace depend on the file's order: refuse instead.
    fn check_overlaps(&self) -> Result<(), AccountsConfigError> {
        for (i, a) in self.accounts.iter().enumerate() {
            for (j, b) in self.accounts.iter().enumerate().skip(i + 1) {
                for p in &a.namespaces {
                    if let Some(q) = b.namespaces.iter().find(|q| globs_overlap(p, q)) {
                        return Err(AccountsConfigError(format!(
                            "accounts[{i}] namespace pattern {p:?} and accounts[{j}] pattern {q:?} can match the same namespace (accounts {} and {}); make them disjoint",
                            a.account_id, b.account_id
                        )));
                    }
                }
            }
        }
        Ok(())
    }

    /// One client set per distinct (account, roles, external id): entries that share them
    /// share clients. Returns, per entry, the index of its client set, and the number of sets.
    pub fn client_sets(&self) -> (Vec<usize>, usize) {
        let mut seen: HashMap<ClientSetKey<'_>, usize> = HashMap::new();
        let index = self
            .accounts
            .iter()
            .map(|e| {
                let k = (
                    e.account_id.as_str(),
                    e.operator_role_arn.as_str(),
                    e.key_admin_role_arn.as_deref(),
                    e.external_id.as_deref(),
                );
                let next = seen.len();
                *seen.entry(k).or_insert(next)
            })
            .collect();
        (index, seen.len())
    }
}

/// What makes two entries' clients the same: account, operator, key administrator, external id.
type ClientSetKey<'a> = (&'a str, &'a str, Option<&'a str>, Option<&'a str>);

impl AccountEntry {
    fn validate(&self) -> Result<(), String> {
        if self.namespaces.is_empty() {
            return Err("namespaces is empty".into());
        }
        if self.namespaces.iter().any(|p| p.is_empty()) {
            return Err("empty namespace pattern".into());
        }
        if self.account_id.len() != 12 || !self.account_id.bytes().all(|b| b.is_ascii_digit()) {
            return Err(format!(
                "accountId {:?} is not a 12-digit AWS account id (quote it in YAML)",
                self.account_id
            ));
        }
        let roles = std::iter::once(("operatorRoleArn", &self.operator_role_arn)).chain(
            self.key_admin_role_arn
                .iter()
                .map(|r| ("keyAdminRoleArn", r)),
        );
        for (field, arn) in roles {
            match role_account(arn) {
                None => return Err(format!("{field} {arn:?} is not an IAM role ARN")),
                Some(a) if a != self.account_id => {
                    return Err(format!(
                        "{field} {arn} is a role of account {a}, not of accountId {}",
                        self.account_id
                    ));
                }
                Some(_) => {}
            }
        }
        if let Some(x) = &self.external_id
            && !(2..=1224).contains(&x.len())
        {
            return Err("externalId must have 2 to 1224 characters".into());
        }
        if let Some(regions) = &self.regions
            && let Some(r) = regions.iter().find(|r| !is_region(r))
        {
            return Err(format!("regions: {r:?} is not a region name"));
        }
        Ok(())
    }

    /// The account guard: may a resource of this entry's namespaces act on `key_id` in
    /// `region`? Checked before any AWS call. A key or alias ARN names its account; a key id
    /// or alias name is resolved in this account by construction (the calls are made there).
    pub fn check(&self, namespace: &str, region: &str, key_id: Option<&str>) -> Result<(), String> {
        if let Some(regions) = &self.regions
            && !regions.iter().any(|r| r == region)
        {
            return Err(format!(
                "Namespace {namespace} is mapped to account {} in regions {}; region {region} is not one of them.",
                self.account_id,
                regions.join(", ")
            ));
        }
        if let Some(arn_account) = key_id.and_then(arn_account)
            && arn_account != self.account_id
        {
            return Err(format!(
                "Namespace {namespace} is mapped to account {}; key {} is in account {arn_account}.",
                self.account_id,
                key_id.unwrap_or_default()
            ));
        }
        Ok(())
    }
}

/// The account field of an ARN (`arn:partition:service:region:account:resource`).
pub fn arn_account(arn: &str) -> Option<&str> {
    let mut parts = arn.strip_prefix("arn:")?.splitn(5, ':');
    parts.nth(3)
}

/// The account of an IAM role ARN, or None if `arn` is not one.
fn role_account(arn: &str) -> Option<&str> {
    let rest = arn.strip_prefix("arn:")?;
    let mut parts = rest.splitn(5, ':');
    let (partition, service, region, account, resource) = (
        parts.next()?,
        parts.next()?,
        parts.next()?,
        parts.next()?,
        parts.next()?,
    );
    let name = resource.strip_prefix("role/")?;
    let ok = partition.starts_with("aws")
        && service == "iam"
        && region.is_empty()
        && !name.is_empty()
        && !name.ends_with('/');
    ok.then_some(account)
}

fn is_region(r: &str) -> bool {
    // e.g. us-east-1, us-gov-west-1: lower-case words, then a number.
    let mut parts = r.split('-').collect::<Vec<_>>();
    let Some(last) = parts.pop() else {
        return false;
    };
    parts.len() >= 2
        && !last.is_empty()
        && last.bytes().all(|b| b.is_ascii_digit())
        && parts
            .iter()
            .all(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_lowercase()))
}

/// Whether some text matches both glob patterns (`*` any run, `?` one character). Dynamic
/// programming over both patterns' positions: quadratic, never exponential.
pub fn globs_overlap(a: &str, b: &str) -> bool {
    let a: Vec<char> = a.chars().collect();
    let b: Vec<char> = b.chars().collect();
    // can[i][j]: the suffixes a[i..] and b[j..] match a common text.
    let mut can = vec![vec![false; b.len() + 1]; a.len() + 1];
    for i in (0..=a.len()).rev() {
        for j in (0..=b.len()).rev() {
            can[i][j] = match (a.get(i), b.get(j)) {
                (None, None) => true,
                // A star may match nothing, or absorb one more character of the other side.
                (Some('*'), _) if can[i + 1][j] => true,
                (_, Some('*')) if can[i][j + 1] => true,
                (Some('*'), Some(_)) => can[i][j + 1],
                (Some(_), Some('*')) => can[i + 1][j],
                (Some(x), Some(y)) => (x == y || *x == '?' || *y == '?') && can[i + 1][j + 1],
                _ => false,
            };
        }
    }
    can[0][0]
}

/// The JSON schema of the file, as committed in `deploy/accounts.schema.json`.
pub fn schema_json() -> String {
    let schema = schemars::schema_for!(AccountsConfig);
    // Serializing a schema value cannot fail; an empty string would fail the drift test.
    serde_json::to_string_pretty(&schema).unwrap_or_default() + "\n"
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"
accounts:
- namespaces: ["team-a", "team-a-*"]
  accountId: "111111111111"
  operatorRoleArn: arn:aws:iam::111111111111:role/msf-cmk-operator
  keyAdminRoleArn: arn:aws:iam::111111111111:role/msf-cmk-key-admin
  externalId: team-a
  regions: [us-east-1, eu-west-1]
- namespaces: ["team-b"]
  accountId: "222222222222"
  operatorRoleArn: arn:aws:iam::222222222222:role/path/op
"#;

    #[test]
    fn parses_the_issue_format() {
        let c = AccountsConfig::parse(GOOD).unwrap();
        assert_eq!(c.accounts.len(), 2);
        assert_eq!(c.entry_for("team-a-x").unwrap().account_id, "111111111111");
        assert_eq!(c.entry_for("team-b").unwrap().account_id, "222222222222");
        assert!(c.entry_for("team-c").is_none());
        assert_eq!(c.client_sets(), (vec![0, 1], 2));
    }

    #[test]
    fn refuses_bad_files() {
        let bad = |text: &str, needle: &str| {
            let e = AccountsConfig::parse(text).unwrap_err().to_string();
            assert!(e.contains(needle), "{e} lacks {needle}");
        };
        let one = |extra: &str| {
            format!(
                "accounts:\n- namespaces: [a]\n  accountId: \"111111111111\"\n  operatorRoleArn: arn:aws:iam::111111111111:role/op\n{extra}"
            )
        };
        bad(&one("  colour: red\n"), "unknown field");
        bad(
            "accounts:\n- namespaces: [a]\n  accountId: 11111\n  operatorRoleArn: arn:aws:iam::111111111111:role/op\n",
            "accountId",
        );
        bad(
            &one("  keyAdminRoleArn: arn:aws:iam::999999999999:role/ka\n"),
            "not of accountId",
        );
        bad(
            &one("  keyAdminRoleArn: arn:aws:iam::111111111111:user/u\n"),
            "not an IAM role",
        );
        bad(&one("  regions: [Mars]\n"), "not a region");
        bad(&one("  externalId: x\n"), "externalId");
        let overlap = format!(
            "{}- namespaces: [\"a*\"]\n  accountId: \"222222222222\"\n  operatorRoleArn: arn:aws:iam::222222222222:role/op\n",
            one("")
        );
        bad(&overlap, "can match the same namespace");
    }

    #[test]
    fn overlap_of_patterns() {
        assert!(globs_overlap("team-a", "team-a"));
        assert!(globs_overlap("team-*", "team-a"));
        assert!(globs_overlap("*-a", "team-*"));
        assert!(globs_overlap("t?am", "te?m"));
        assert!(globs_overlap("*", "x"));
        assert!(!globs_overlap("team-a", "team-b"));
        assert!(!globs_overlap("team-a-*", "team-b-*"));
        assert!(!globs_overlap("a?", "a"));
        assert!(!globs_overlap("a*b", "c*"));
    }

    #[test]
    fn the_guard_refuses_other_accounts_and_regions() {
        let c = AccountsConfig::parse(GOOD).unwrap();
        let a = &c.accounts[0];
        assert!(a.check("team-a", "us-east-1", Some("alias/x")).is_ok());
        assert!(
            a.check(
                "team-a",
                "us-east-1",
                Some("arn:aws:kms:us-east-1:111111111111:key/k")
            )
            .is_ok()
        );
        let e = a
            .check(
                "team-a",
                "us-east-1",
                Some("arn:aws:kms:us-east-1:222222222222:alias/x"),
            )
            .unwrap_err();
        assert!(e.contains("222222222222"), "{e}");
        assert!(a.check("team-a", "ap-south-1", None).is_err());
    }
}
