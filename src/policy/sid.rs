//! The Sids of the controller's statements, readable:
//!
//! ```text
//! MsfCmk<Kind>-<name>                 the default instance
//! MsfCmk-<instance>-<Kind>-<name>     any other instance (--instance-name)
//! ```
//!
//! `<Kind>` says what the statement grants (`OperatorUseKey`, `ServiceDescribeKey`, ...);
//! `<name>` is the operator role's name for an operator statement and the account for a
//! service statement, so `MsfCmkOperatorUseKey-msf-cmk-operator` reads as what it is. When two
//! groups of one policy would get the same name (two accounts' roles of the same name, one
//! role in two regions), each of them gets `-<8 hex digits>` appended (a hash of the role ARN
//! and region, or of the partition and account), so Sids stay unique. KMS allows any printable
//! ASCII in a key policy Sid (spaces too) and documents no length limit besides the
//! document's 32 KB; an IAM role name is at most 64 characters of `[A-Za-z0-9+=,.@_-]`, kept
//! as it is (anything else would be replaced by `_`, then told apart by the hash).
//!
//! The releases before readable Sids wrote `MsfCmk<Kind><tag>`: the account, or the role name's
//! letters and digits (24 at most) followed by the same kind of hash. Those are still
//! recognised (with the statement's exact shape), as the default instance's, so the next
//! write replaces them with the readable Sids ([`ParsedSid::legacy`]).

use super::OWNED_SID_PREFIX;
use super::instance::InstanceName;

/// The statements of one service group (per account), by kind.
pub const SERVICE_KINDS: [&str; 5] = [
    "ServiceDescribeKey",
    "ServiceDurableGenerateDataKey",
    "ServiceDurableDecrypt",
    "ServiceRunningState",
    "ServiceRunningCreateGrant",
];

/// The statements of one operator group (per operator role and region), by kind.
pub const OPERATOR_KINDS: [&str; 3] = [
    "OperatorDescribeKey",
    "OperatorUseKey",
    "OperatorCreateGrant",
];

/// The longest name kept from a role (IAM's limit for a role name).
const MAX_NAME: usize = 64;

/// An owned-looking Sid taken apart. Whether the statement is really owned is decided by
/// rebuilding it ([`super::owned::recognise`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ParsedSid<'a> {
    pub instance: InstanceName,
    pub kind: &'static str,
    /// What follows the kind: `<name>[-<hash>]`, or the legacy tag.
    pub suffix: &'a str,
    /// Written by a release before readable Sids (`MsfCmk<Kind><tag>`, no instance).
    pub legacy: bool,
}

impl ParsedSid<'_> {
    pub fn is_service(&self) -> bool {
        self.kind.starts_with("Service")
    }
}

/// The Sid of a statement of `kind` for the group called `name`.
pub fn format(instance: &InstanceName, kind: &str, name: &str) -> String {
    if instance.is_default() {
        format!("{OWNED_SID_PREFIX}{kind}-{name}")
    } else {
        format!("{OWNED_SID_PREFIX}-{instance}-{kind}-{name}")
    }
}

/// Takes an owned-looking Sid apart; `None` when it does not follow either scheme.
pub fn parse(sid: &str) -> Option<ParsedSid<'_>> {
    let rest = sid.strip_prefix(OWNED_SID_PREFIX)?;
    let (instance, rest) = match rest.strip_prefix('-') {
        // An instance name has no upper-case letter, a kind starts with one.
        Some(named) => {
            let end = named
                .as_bytes()
                .windows(2)
                .position(|w| w[0] == b'-' && w[1].is_ascii_uppercase())?;
            let instance = InstanceName::parse(&named[..end]).ok()?;
            // The default instance is written without its name.
            if instance.is_default() {
                return None;
            }
            (instance, &named[end + 1..])
        }
        None => (InstanceName::default(), rest),
    };
    let kind = SERVICE_KINDS
        .iter()
        .chain(&OPERATOR_KINDS)
        .find(|k| rest.starts_with(**k))?;
    let after = &rest[kind.len()..];
    let (suffix, legacy) = match after.strip_prefix('-') {
        Some(s) => (s, false),
        None if instance.is_default() => (after, true),
        None => return None,
    };
    Some(ParsedSid {
        instance,
        kind,
        suffix,
        legacy,
    })
}

/// The readable name of an operator role: its name after the last `/`, at most 64 characters,
/// characters IAM does not allow in a role name replaced by `_`.
pub fn role_name(role_arn: &str) -> String {
    role_arn
        .rsplit('/')
        .next()
        .unwrap_or_default()
        .chars()
        .take(MAX_NAME)
        .map(|c| {
            if c.is_ascii_alphanumeric() || "+=,.@_-".contains(c) {
                c
            } else {
                '_'
            }
        })
        .collect()
}

/// The name with its disambiguating hash of `parts`.
pub fn with_hash(name: &str, parts: [&str; 2]) -> String {
    format!("{name}-{:08x}", fnv(parts))
}

/// The tag of the legacy Sids: the role name's letters and digits (24 at most), then the hash.
pub fn legacy_operator_tag(role_arn: &str, region: &str) -> String {
    let name: String = role_arn
        .rsplit('/')
        .next()
        .unwrap_or_default()
        .chars()
        .filter(char::is_ascii_alphanumeric)
        .take(24)
        .collect();
    format!("{name}{:08x}", fnv([role_arn, region]))
}

/// FNV-1a of the parts joined by `|`: tiny and stable across Rust versions (unlike
/// `DefaultHasher`); the legacy tags used the same.
fn fnv(parts: [&str; 2]) -> u32 {
    let mut h: u32 = 0x811c_9dc5;
    for b in parts[0].bytes().chain([b'|']).chain(parts[1].bytes()) {
        h ^= u32::from(b);
        h = h.wrapping_mul(0x0100_0193);
    }
    h
}

#[cfg(test)]
mod tests {
    use super::*;

    fn inst(s: &str) -> InstanceName {
        InstanceName::parse(s).unwrap()
    }

    #[test]
    fn formats_parse_back() {
        for instance in [InstanceName::default(), inst("cluster-b"), inst("b2")] {
            for kind in SERVICE_KINDS.iter().chain(&OPERATOR_KINDS) {
                for name in ["msf-cmk-operator", "123456789012", "a-Bc-12ab34cd", "x.y@z"] {
                    let sid = format(&instance, kind, name);
                    let p = parse(&sid).unwrap_or_else(|| panic!("{sid}"));
                    assert_eq!(
                        (p.instance, p.kind, p.suffix, p.legacy),
                        (instance.clone(), *kind, name, false),
                        "{sid}"
                    );
                }
            }
        }
    }

    #[test]
    fn legacy_sids_are_the_default_instance() {
        let p = parse("MsfCmkOperatorUseKeymsfcmkoperator783ed94c").unwrap();
        assert!(p.legacy && p.instance.is_default());
        assert_eq!(
            (p.kind, p.suffix),
            ("OperatorUseKey", "msfcmkoperator783ed94c")
        );
        let p = parse("MsfCmkServiceDescribeKey123456789012").unwrap();
        assert!(p.legacy && p.is_service());
        assert_eq!(p.suffix, "123456789012");
    }

    #[test]
    fn other_sids_do_not_parse() {
        for sid in [
            "MsfCmk",
            "MsfCmkSomethingElse",
            "MsfCmk-default-OperatorUseKey-r",
            "MsfCmk-Bad-OperatorUseKey-r",
            "MsfCmk-b-OperatorUseKeyr",
            "MsfCmk--OperatorUseKey-r",
            "MsfCmk-b-",
        ] {
            assert_eq!(parse(sid), None, "{sid}");
        }
    }

    #[test]
    fn role_names_are_kept_readable() {
        assert_eq!(
            role_name("arn:aws:iam::1:role/p/a+b=c,d.e@f_g-h"),
            "a+b=c,d.e@f_g-h"
        );
        assert_eq!(role_name("arn:aws:iam::1:role/a b\"c"), "a_b_c");
        assert_eq!(
            role_name(&format!("arn:aws:iam::1:role/{}", "r".repeat(70))).len(),
            64
        );
    }
}
