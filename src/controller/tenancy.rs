//! The tenancy guard. PURE: configuration parsing and the checks; no I/O.
//!
//! Why: the controller holds broad AWS rights, so a namespace must not be able to use it to
//! re-key another team's application (encrypting someone else's state with a key the tenant
//! controls). A cluster admin mounts a file (YAML or JSON, e.g. from a ConfigMap) that lists,
//! per namespace, the application-name patterns and the keys it may claim:
//!
//! ```yaml
//! namespaces:
//!   team-a:
//!     applications: ["team-a-*"]                       # MSF application names, * and ? wildcards
//!     keys: ["arn:aws:kms:us-east-1:111122223333:key/*"] # key ARNs (resolved) or keyIds as written
//!   "sandbox-*":                                       # namespace patterns are allowed too
//!     applications: ["sandbox-*"]
//!     keys: []                                         # may only use the AWS owned key
//! ```
//!
//! A namespace that no entry matches may claim nothing. Without a file every namespace is
//! admitted (and `run` says so in its log). Two resources claiming the same application in the
//! same region are a conflict: the older one (creation time, then namespace/name) keeps it.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::Deserialize;

/// The allowance of one namespace (or namespace pattern).
#[derive(Clone, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct Allowance {
    /// Application-name patterns.
    #[serde(default)]
    pub applications: Vec<String>,
    /// Key patterns, matched against the resolved key ARN and against spec.keyId as written.
    #[serde(default)]
    pub keys: Vec<String>,
}

/// The whole file.
#[derive(Clone, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct TenancyConfig {
    pub namespaces: BTreeMap<String, Allowance>,
}

#[derive(Debug, thiserror::Error)]
#[error("tenancy config: {0}")]
pub struct TenancyConfigError(String);

impl TenancyConfig {
    /// Parses YAML (JSON is YAML too).
    pub fn parse(text: &str) -> Result<Self, TenancyConfigError> {
        let cfg: Self =
            yaml_serde::from_str(text).map_err(|e| TenancyConfigError(e.to_string()))?;
        for (ns, a) in &cfg.namespaces {
            if ns.is_empty() {
                return Err(TenancyConfigError("empty namespace name".into()));
            }
            if a.applications.iter().chain(&a.keys).any(|p| p.is_empty()) {
                return Err(TenancyConfigError(format!(
                    "namespace {ns:?}: empty pattern"
                )));
            }
        }
        Ok(cfg)
    }

    /// The allowance that applies to `namespace`: an exact entry first, else the first
    /// matching pattern (in name order, so the choice is deterministic).
    fn allowance(&self, namespace: &str) -> Option<&Allowance> {
        self.namespaces.get(namespace).or_else(|| {
            self.namespaces
                .iter()
                .find(|(pattern, _)| glob(pattern, namespace))
                .map(|(_, a)| a)
        })
    }
}

/// The answer for the key of a resource.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum KeyVerdict {
    Permitted,
    NotPermitted(String),
    /// The keyId as written does not match, but its resolved ARN might: resolve (a read-only
    /// DescribeKey) and ask again with the ARN.
    NeedsResolvedArn,
}

/// The guard: `None` admits everything.
#[derive(Clone, Debug, Default)]
pub struct Tenancy(pub Option<TenancyConfig>);

impl Tenancy {
    pub fn admits_all(&self) -> bool {
        self.0.is_none()
    }

    /// May `namespace` claim the application called `application_name`?
    pub fn check_application(&self, namespace: &str, application_name: &str) -> Result<(), String> {
        let Some(cfg) = &self.0 else { return Ok(()) };
        let Some(a) = cfg.allowance(namespace) else {
            return Err(format!(
                "Namespace {namespace} has no allowance in the tenancy configuration; ask a cluster admin to add one."
            ));
        };
        if a.applications.iter().any(|p| glob(p, application_name)) {
            Ok(())
        } else {
            Err(format!(
                "Namespace {namespace} may not claim application {application_name} (allowed: {}).",
                list(&a.applications)
            ))
        }
    }

    /// May `namespace` use this key? `resolved_arn` is None until the key has been described.
    pub fn check_key(
        &self,
        namespace: &str,
        key_id: &str,
        resolved_arn: Option<&str>,
    ) -> KeyVerdict {
        let Some(cfg) = &self.0 else {
            return KeyVerdict::Permitted;
        };
        let Some(a) = cfg.allowance(namespace) else {
            return KeyVerdict::NotPermitted(format!(
                "Namespace {namespace} has no allowance in the tenancy configuration."
            ));
        };
        let matches = |s: &str| a.keys.iter().any(|p| glob(p, s));
        if matches(key_id) || resolved_arn.is_some_and(matches) {
            return KeyVerdict::Permitted;
        }
        match resolved_arn {
            None if !key_id.contains(":key/") => KeyVerdict::NeedsResolvedArn,
            _ => KeyVerdict::NotPermitted(format!(
                "Namespace {namespace} may not use key {} (allowed: {}).",
                resolved_arn.unwrap_or(key_id),
                list(&a.keys)
            )),
        }
    }
}

fn list(patterns: &[String]) -> String {
    if patterns.is_empty() {
        "none".to_string()
    } else {
        patterns.join(", ")
    }
}

/// `*` matches any run of characters (including none), `?` exactly one; everything else is
/// literal and case-sensitive (names and ARNs are). The same matcher as the policy engine's.
pub use crate::policy::glob::matches as glob;

/// One resource's claim on an application, for conflict detection.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Claim<'a> {
    pub namespace: &'a str,
    pub name: &'a str,
    pub created: Option<DateTime<Utc>>,
    pub region: &'a str,
    pub application_name: &'a str,
    /// Already acting on the application (it has a status that is not a Conflict). Creation
    /// times have one-second resolution: within the same second the incumbent keeps it.
    pub incumbent: bool,
}

impl Claim<'_> {
    /// Older first; resources without a creation time (not yet persisted) sort last.
    fn seniority(&self) -> (bool, Option<DateTime<Utc>>, bool, &str, &str) {
        (
            self.created.is_none(),
            self.created,
            !self.incumbent,
            self.namespace,
            self.name,
        )
    }
}

/// If another resource claims the same application and region and is older, the claim that
/// wins. `others` may include `me` (it is skipped). A claim the tenancy guard refuses
/// (NotPermitted) never wins: otherwise any namespace could block a team from its own
/// application by declaring it first.
pub fn conflicting_owner<'a>(
    tenancy: &Tenancy,
    me: &Claim<'_>,
    others: &'a [Claim<'a>],
) -> Option<&'a Claim<'a>> {
    others
        .iter()
        .filter(|o| !(o.namespace == me.namespace && o.name == me.name))
        .filter(|o| {
            tenancy
                .check_application(o.namespace, o.application_name)
                .is_ok()
        })
        .filter(|o| o.region == me.region && o.application_name == me.application_name)
        .filter(|o| o.seniority() < me.seniority())
        .min_by(|a, b| a.seniority().cmp(&b.seniority()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    const CFG: &str = r#"
namespaces:
  team-a:
    applications: ["team-a-*", "shared"]
    keys: ["arn:aws:kms:us-east-1:111122223333:key/*", "alias/team-a"]
  "sandbox-*":
    applications: ["sb-?"]
"#;

    #[test]
    fn globbing() {
        assert!(glob("team-a-*", "team-a-orders"));
        assert!(glob("team-a-*", "team-a-"));
        assert!(!glob("team-a-*", "team-b-orders"));
        assert!(glob("*", ""));
        assert!(glob("a*b*c", "axxbyyc"));
        assert!(!glob("a*b*c", "axxbyy"));
        assert!(glob("sb-?", "sb-1"));
        assert!(!glob("sb-?", "sb-12"));
        assert!(glob("exact", "exact"));
        assert!(!glob("exact", "exactly"));
    }

    #[test]
    fn applications_and_keys() {
        let t = Tenancy(Some(TenancyConfig::parse(CFG).unwrap()));
        assert!(t.check_application("team-a", "team-a-orders").is_ok());
        assert!(t.check_application("team-a", "shared").is_ok());
        let err = t.check_application("team-a", "team-b-orders").unwrap_err();
        assert!(
            err.contains("may not claim application team-b-orders"),
            "{err}"
        );
        assert!(t.check_application("sandbox-1", "sb-x").is_ok());
        assert!(t.check_application("other", "anything").is_err());

        let arn = "arn:aws:kms:us-east-1:111122223333:key/k1";
        assert_eq!(t.check_key("team-a", arn, None), KeyVerdict::Permitted);
        assert_eq!(
            t.check_key("team-a", "alias/team-a", None),
            KeyVerdict::Permitted
        );
        assert_eq!(
            t.check_key("team-a", "alias/other", None),
            KeyVerdict::NeedsResolvedArn
        );
        assert_eq!(
            t.check_key("team-a", "alias/other", Some(arn)),
            KeyVerdict::Permitted
        );
        assert!(matches!(
            t.check_key("team-a", "arn:aws:kms:us-east-1:999999999999:key/k", None),
            KeyVerdict::NotPermitted(_)
        ));
        assert!(matches!(
            t.check_key("sandbox-1", "alias/x", Some(arn)),
            KeyVerdict::NotPermitted(m) if m.contains("allowed: none")
        ));
    }

    #[test]
    fn no_config_admits_all_and_bad_config_is_an_error() {
        let t = Tenancy::default();
        assert!(t.admits_all());
        assert!(t.check_application("x", "y").is_ok());
        assert_eq!(t.check_key("x", "alias/y", None), KeyVerdict::Permitted);
        assert!(TenancyConfig::parse("namespaces: {a: {apps: []}}").is_err());
        assert!(TenancyConfig::parse("[").is_err());
        let json = r#"{"namespaces": {"a": {"applications": ["x"]}}}"#;
        assert!(TenancyConfig::parse(json).is_ok());
    }

    #[test]
    fn the_newer_claim_loses() {
        let ts = |s: i64| Utc.timestamp_opt(1_800_000_000 + s, 0).single();
        let old = Claim {
            namespace: "a",
            name: "x",
            created: ts(0),
            region: "us-east-1",
            application_name: "app",
            incumbent: false,
        };
        let new = Claim {
            namespace: "b",
            name: "y",
            created: ts(10),
            ..old.clone()
        };
        let other_region = Claim {
            namespace: "c",
            name: "z",
            created: ts(-10),
            region: "eu-west-1",
            ..old.clone()
        };
        let all = [old.clone(), new.clone(), other_region];
        assert_eq!(conflicting_owner(&Tenancy(None), &new, &all), Some(&old));
        assert_eq!(conflicting_owner(&Tenancy(None), &old, &all), None);
        // Same creation second: namespace/name decides, deterministically.
        let twin = Claim {
            namespace: "b",
            created: ts(0),
            ..new.clone()
        };
        let pair = [old.clone(), twin.clone()];
        assert_eq!(conflicting_owner(&Tenancy(None), &twin, &pair), Some(&old));
        assert_eq!(conflicting_owner(&Tenancy(None), &old, &pair), None);
        // ... unless the other one already holds the application.
        let holder = Claim {
            incumbent: true,
            ..twin.clone()
        };
        let pair = [old.clone(), holder.clone()];
        assert_eq!(
            conflicting_owner(&Tenancy(None), &old, &pair),
            Some(&holder)
        );
        assert_eq!(conflicting_owner(&Tenancy(None), &holder, &pair), None);
    }

    #[test]
    fn a_refused_claim_never_wins_a_conflict() {
        let t = Tenancy(Some(TenancyConfig::parse(CFG).unwrap()));
        let squatter = Claim {
            namespace: "other",
            name: "squat",
            created: Some(Utc.timestamp_opt(1_000, 0).unwrap()),
            region: "us-east-1",
            application_name: "team-a-orders",
            incumbent: false,
        };
        let owner = Claim {
            namespace: "team-a",
            name: "orders",
            created: Some(Utc.timestamp_opt(2_000, 0).unwrap()),
            ..squatter.clone()
        };
        let all = [squatter.clone(), owner.clone()];
        assert_eq!(conflicting_owner(&t, &owner, &all), None);
        // Without a tenancy configuration every claim counts, and the older one wins.
        assert_eq!(
            conflicting_owner(&Tenancy(None), &owner, &all),
            Some(&squatter)
        );
    }
}
