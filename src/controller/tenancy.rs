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
//!     operatorRoles: ["arn:aws:iam::111122223333:role/team-a-*"] # spec.keyPolicy.operatorRoleArn
//!   "sandbox-*":                                       # namespace patterns are allowed too
//!     applications: ["sandbox-*"]
//!     keys: []                                         # may only use the AWS owned key
//! ```
//!
//! A namespace that no entry matches may claim nothing. Without a file every namespace is
//! admitted (and `run` says so in its log). Two resources claiming the same application in the
//! same region are a conflict: the one already acting on the application keeps it, and between
//! new claims namespace/name order decides. Creation times are deliberately not part of the
//! rule: `plan`/`apply` read files, which have none, and both must choose the same winner as
//! `run` ([`conflicting_owner`] is the one rule for all three).

use std::collections::BTreeMap;

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
    /// Role ARN patterns the namespace may name in `spec.keyPolicy.operatorRoleArn` (the
    /// principal the key policy grants). None listed: only the controller's own operator role.
    #[serde(default, rename = "operatorRoles")]
    pub operator_roles: Vec<String>,
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
            if a.applications
                .iter()
                .chain(&a.keys)
                .chain(&a.operator_roles)
                .any(|p| p.is_empty())
            {
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

    /// May `namespace` have the key policy grant `role_arn` (`spec.keyPolicy.operatorRoleArn`)
    /// for an application in `application_account`? A role of another account is refused
    /// whatever the configuration says: the controller would grant a foreign principal the use
    /// of the key. `application_account` is None when the controller does not know its account
    /// yet (that part of the check is then left to the planner).
    pub fn check_operator_role(
        &self,
        namespace: &str,
        role_arn: &str,
        application_account: Option<&str>,
    ) -> Result<(), String> {
        if let Some(account) = application_account {
            let role_account = role_arn.split(':').nth(4).unwrap_or_default();
            if role_account != account {
                return Err(format!(
                    "Operator role {role_arn} is in account {role_account:?}, not in the application's account {account}; the key policy may only grant the application's own account."
                ));
            }
        }
        let Some(cfg) = &self.0 else { return Ok(()) };
        let Some(a) = cfg.allowance(namespace) else {
            return Err(format!(
                "Namespace {namespace} has no allowance in the tenancy configuration."
            ));
        };
        if a.operator_roles.iter().any(|p| glob(p, role_arn)) {
            Ok(())
        } else {
            Err(format!(
                "Namespace {namespace} may not name operator role {role_arn} in spec.keyPolicy.operatorRoleArn (allowed: {}).",
                list(&a.operator_roles)
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
    /// The claim's region, qualified by its account when an accounts file maps namespaces.
    pub region: &'a str,
    pub application_name: &'a str,
    /// Already acting on the application (it has a status that is not a Conflict or a
    /// refusal). `plan`/`apply` have no status: every claim there is new.
    pub incumbent: bool,
}

impl Claim<'_> {
    /// The incumbent first, then namespace/name: total and deterministic.
    fn seniority(&self) -> (bool, &str, &str) {
        (!self.incumbent, self.namespace, self.name)
    }
}

/// If another resource claims the same application and region and ranks before `me`, the
/// claim that wins. `others` may include `me` (it is skipped). A claim the tenancy guard
/// refuses (NotPermitted) never wins: otherwise any namespace could block a team from its own
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

/// For every claim, the index of the claim it loses to: the same rule as [`conflicting_owner`]
/// for all of them in one pass (a reconcile of `run` asks it for a thousand peers).
pub fn losing_to(tenancy: &Tenancy, claims: &[Claim<'_>]) -> Vec<Option<usize>> {
    let mut best: std::collections::HashMap<(&str, &str), usize> = Default::default();
    for (i, c) in claims.iter().enumerate() {
        if tenancy
            .check_application(c.namespace, c.application_name)
            .is_err()
        {
            continue;
        }
        best.entry((c.region, c.application_name))
            .and_modify(|b| {
                if c.seniority() < claims[*b].seniority() {
                    *b = i;
                }
            })
            .or_insert(i);
    }
    claims
        .iter()
        .enumerate()
        .map(|(i, c)| {
            let b = *best.get(&(c.region, c.application_name))?;
            let winner = &claims[b];
            let same = winner.namespace == c.namespace && winner.name == c.name;
            (b != i && !same && winner.seniority() < c.seniority()).then_some(b)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

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
    fn the_incumbent_keeps_it_then_namespace_and_name_decide() {
        let a = Claim {
            namespace: "a",
            name: "x",
            region: "us-east-1",
            application_name: "app",
            incumbent: false,
        };
        let b = Claim {
            namespace: "b",
            name: "y",
            ..a.clone()
        };
        let other_region = Claim {
            namespace: "0",
            name: "z",
            region: "eu-west-1",
            ..a.clone()
        };
        // Two new claims (files in `apply`, or a cold start of `run`): namespace/name decides.
        let all = [b.clone(), a.clone(), other_region];
        assert_eq!(conflicting_owner(&Tenancy(None), &b, &all), Some(&a));
        assert_eq!(conflicting_owner(&Tenancy(None), &a, &all), None);
        // The one already acting keeps the application, whatever its name.
        let holder = Claim {
            incumbent: true,
            ..b.clone()
        };
        let pair = [a.clone(), holder.clone()];
        assert_eq!(conflicting_owner(&Tenancy(None), &a, &pair), Some(&holder));
        assert_eq!(conflicting_owner(&Tenancy(None), &holder, &pair), None);
    }

    #[test]
    fn a_refused_claim_never_wins_a_conflict() {
        let t = Tenancy(Some(TenancyConfig::parse(CFG).unwrap()));
        // The squatter ranks first by namespace ("other" < "team-a") and even acts already.
        let squatter = Claim {
            namespace: "other",
            name: "squat",
            region: "us-east-1",
            application_name: "team-a-orders",
            incumbent: true,
        };
        let owner = Claim {
            namespace: "team-a",
            name: "orders",
            incumbent: false,
            ..squatter.clone()
        };
        let all = [squatter.clone(), owner.clone()];
        assert_eq!(conflicting_owner(&t, &owner, &all), None);
        // Without a tenancy configuration every claim counts, and the incumbent wins.
        assert_eq!(
            conflicting_owner(&Tenancy(None), &owner, &all),
            Some(&squatter)
        );
    }

    #[test]
    fn the_one_pass_resolver_agrees_with_the_rule() {
        let t = Tenancy(Some(TenancyConfig::parse(CFG).unwrap()));
        let names = ["a", "b", "c"];
        let namespaces = ["team-a", "other", "sandbox-1"];
        let apps = ["team-a-x", "sb-1", "shared"];
        let mut claims = Vec::new();
        for (i, ns) in namespaces.iter().enumerate() {
            for (j, name) in names.iter().enumerate() {
                for (k, app) in apps.iter().enumerate() {
                    if (i + j + k) % 2 == 0 {
                        claims.push(Claim {
                            namespace: ns,
                            name,
                            region: if k == 2 && j == 1 {
                                "eu-west-1"
                            } else {
                                "us-east-1"
                            },
                            application_name: app,
                            incumbent: (i * 7 + j * 3 + k) % 5 == 0,
                        });
                    }
                }
            }
        }
        for tenancy in [&t, &Tenancy(None)] {
            let fast = losing_to(tenancy, &claims);
            for (i, me) in claims.iter().enumerate() {
                let slow = conflicting_owner(tenancy, me, &claims);
                assert_eq!(fast[i].map(|w| &claims[w]), slow, "claim {me:?}");
            }
        }
    }

    #[test]
    fn operator_roles_are_guarded() {
        let cfg = r#"
namespaces:
  team-a:
    applications: ["*"]
    operatorRoles: ["arn:aws:iam::111122223333:role/team-a-*"]
  team-b:
    applications: ["*"]
"#;
        let t = Tenancy(Some(TenancyConfig::parse(cfg).unwrap()));
        let acct = Some("111122223333");
        let mine = "arn:aws:iam::111122223333:role/team-a-op";
        assert!(t.check_operator_role("team-a", mine, acct).is_ok());
        let err = t
            .check_operator_role("team-a", "arn:aws:iam::111122223333:role/admin", acct)
            .unwrap_err();
        assert!(err.contains("may not name operator role"), "{err}");
        // No roles listed: only the controller's own operator role (spec field unset).
        let err = t.check_operator_role("team-b", mine, acct).unwrap_err();
        assert!(err.contains("allowed: none"), "{err}");
        assert!(t.check_operator_role("nobody", mine, acct).is_err());
        // Another account is refused even without a tenancy configuration, and even when a
        // pattern would match it.
        let foreign = "arn:aws:iam::999999999999:role/team-a-op";
        let open = Tenancy(None);
        let err = open.check_operator_role("x", foreign, acct).unwrap_err();
        assert!(err.contains("not in the application's account"), "{err}");
        assert!(open.check_operator_role("x", mine, acct).is_ok());
        assert!(open.check_operator_role("x", foreign, None).is_ok());
        assert!(TenancyConfig::parse("namespaces: {a: {operatorRoles: [\"\"]}}").is_err());
    }
}
