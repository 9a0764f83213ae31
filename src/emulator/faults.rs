//! Fault injection and call counting. Faults are per operation (`"*"` applies to every
//! operation without its own entry), optionally scoped to one application or key (a scoped
//! entry wins over the operation's own, which wins over `"*"`; only one entry applies to a
//! call). Counts are by operation and by outcome (`ok` or the error code returned), so a test
//! can prove e.g. that a call was not retried.

use std::collections::BTreeMap;
use std::time::Duration;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde::{Deserialize, Serialize};

/// What to do to calls of one operation. Rates are probabilities in `[0, 1]`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Fault {
    /// Added before the call is handled.
    #[serde(with = "millis", rename = "latency_ms")]
    pub latency: Duration,
    /// Share of calls answered with `ThrottlingException` (HTTP 400, as both services do).
    pub throttle_rate: f64,
    /// Share of calls answered with an HTTP 5xx service error.
    pub error_rate: f64,
    /// Every call answered with `AccessDeniedException`: an IAM or key policy that says no.
    pub deny: bool,
    /// Every call answered as AWS answers an access key it does not know (deleted, mistyped,
    /// from another partition): `UnrecognizedClientException` (MSF, KMS, HTTP 400) or
    /// `InvalidClientTokenId` (STS, HTTP 403).
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub invalid_credentials: bool,
    /// UpdateApplication only: the update is accepted, then rolled back once the update delay
    /// has passed (the operation ends FAILED). Applies to every update until cleared.
    pub rollback: bool,
    /// A person's write of this policy, used once, then forgotten. PutKeyPolicy: applied just
    /// before the next PutKeyPolicy is handled (just after it with `interleave_after`).
    /// GetKeyPolicy: applied just after the next GetKeyPolicy is answered (the reader got the
    /// policy before the person's edit: an edit between a read and the write made from it).
    pub interleave_policy: Option<serde_json::Value>,
    /// PutKeyPolicy only: the interleaved write lands just after ours instead of before (a
    /// person who read before our write and writes after it).
    pub interleave_after: bool,
    /// Scope: only calls naming this application (`ApplicationName`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub application: Option<String>,
    /// Scope: only calls naming this key (key id or key ARN).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub key_id: Option<String>,
}

impl Fault {
    pub fn latency(d: Duration) -> Self {
        Self {
            latency: d,
            ..Self::default()
        }
    }

    pub fn throttle(rate: f64) -> Self {
        Self {
            throttle_rate: rate,
            ..Self::default()
        }
    }

    pub fn server_error(rate: f64) -> Self {
        Self {
            error_rate: rate,
            ..Self::default()
        }
    }

    pub fn deny() -> Self {
        Self {
            deny: true,
            ..Self::default()
        }
    }

    /// For `UpdateApplication`: accept every update, then roll it back.
    pub fn rollback() -> Self {
        Self {
            rollback: true,
            ..Self::default()
        }
    }

    /// For `PutKeyPolicy`: write `policy` as a person would, just before the next call. For
    /// `GetKeyPolicy`: just after the next call is answered.
    pub fn interleave(policy: serde_json::Value) -> Self {
        Self {
            interleave_policy: Some(policy),
            ..Self::default()
        }
    }

    /// For `PutKeyPolicy`: write `policy` as a person would, just after the next call.
    pub fn interleave_after(policy: serde_json::Value) -> Self {
        Self {
            interleave_after: true,
            ..Self::interleave(policy)
        }
    }

    /// Only calls naming application `name`.
    pub fn for_application(mut self, name: &str) -> Self {
        self.application = Some(name.to_string());
        self
    }

    /// Only calls naming key `key` (id or ARN).
    pub fn for_key(mut self, key: &str) -> Self {
        self.key_id = Some(key.to_string());
        self
    }

    /// The entry's name in the table: `OP`, or `OP/TARGET` when scoped.
    fn table_key(&self, op: &str) -> String {
        match self.application.as_deref().or(self.key_id.as_deref()) {
            Some(target) => format!("{op}/{}", bare_target(target)),
            None => op.to_string(),
        }
    }

    /// Does it add latency or inject an outcome?
    fn injects(&self) -> bool {
        !self.latency.is_zero()
            || self.deny
            || self.invalid_credentials
            || self.throttle_rate > 0.0
            || self.error_rate > 0.0
    }

    /// True when the fault changes nothing (its scope aside): setting it removes the entry.
    fn is_noop(&self) -> bool {
        Fault {
            application: None,
            key_id: None,
            ..self.clone()
        } == Fault::default()
    }
}

/// A key ARN's id (`arn:...:key/ID` -> `ID`); anything else as given.
fn bare_target(target: &str) -> &str {
    target.rsplit_once(":key/").map_or(target, |(_, id)| id)
}

mod millis {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u64(d.as_millis() as u64)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        Ok(Duration::from_millis(u64::deserialize(d)?))
    }
}

/// The injected outcome of one call, decided before it is handled.
#[derive(Debug, PartialEq, Eq)]
pub enum Injected {
    None,
    Deny,
    InvalidCredentials,
    Throttle,
    ServerError,
}

/// Everything decided for one call before it is handled.
#[derive(Debug)]
pub struct Decision {
    pub latency: Duration,
    pub injected: Injected,
    pub rollback: bool,
}

pub struct Faults {
    table: BTreeMap<String, Fault>,
    rng: StdRng,
}

impl Faults {
    pub fn new(seed: u64) -> Self {
        Self {
            table: BTreeMap::new(),
            rng: StdRng::seed_from_u64(seed),
        }
    }

    pub fn set(&mut self, op: &str, fault: Fault) {
        let key = fault.table_key(op);
        if fault.is_noop() {
            self.table.remove(&key);
        } else {
            self.table.insert(key, fault);
        }
    }

    pub fn clear(&mut self) {
        self.table.clear();
    }

    pub fn table(&self) -> BTreeMap<String, Fault> {
        self.table.clone()
    }

    /// The latency to add and the outcome to inject for one call of `op` naming `target`
    /// (an application name or key reference), if any. Entries apply from the most specific
    /// (scoped, then the operation's, then `*`): latency and outcome come from the first entry
    /// that sets any of them, so a rollback or interleave entry does not hide a `*` throttle.
    pub fn decide(&mut self, op: &str, target: Option<&str>) -> Decision {
        let scoped = target.map(|t| format!("{op}/{}", bare_target(t)));
        let chain: Vec<&Fault> = [scoped.as_deref(), Some(op), Some("*")]
            .into_iter()
            .flatten()
            .filter_map(|k| self.table.get(k))
            .collect();
        let rollback = chain.iter().any(|f| f.rollback);
        let Some(f) = chain.into_iter().find(|f| f.injects()) else {
            return Decision {
                latency: Duration::ZERO,
                injected: Injected::None,
                rollback,
            };
        };
        let (latency, deny, throttle, error) = (f.latency, f.deny, f.throttle_rate, f.error_rate);
        let injected = if f.invalid_credentials {
            Injected::InvalidCredentials
        } else if deny {
            Injected::Deny
        } else {
            let r: f64 = self.rng.random();
            if r < throttle {
                Injected::Throttle
            } else if r < throttle + error {
                Injected::ServerError
            } else {
                Injected::None
            }
        };
        Decision {
            latency,
            injected,
            rollback,
        }
    }

    /// The policy to interleave with a call of `op` (PutKeyPolicy, GetKeyPolicy) on key
    /// `key_id`, taken (it applies once): the key's own entry first, then the operation's.
    /// Returns the policy and whether it lands after the call rather than before.
    pub fn take_interleave(&mut self, op: &str, key_id: &str) -> Option<Interleave> {
        let scoped = format!("{op}/{key_id}");
        let name = [scoped.as_str(), op]
            .into_iter()
            .find(|k| {
                self.table
                    .get(*k)
                    .is_some_and(|f| f.interleave_policy.is_some())
            })?
            .to_string();
        let fault = self.table.get_mut(&name)?;
        let policy = fault.interleave_policy.take()?;
        // A read is answered first: its interleave always lands after it.
        let after = fault.interleave_after || op == "GetKeyPolicy";
        fault.interleave_after = false;
        if fault.is_noop() {
            self.table.remove(&name);
        }
        Some(Interleave { policy, after })
    }
}

/// A person's write to apply around one call (see [`Fault::interleave_policy`]).
#[derive(Debug, PartialEq)]
pub struct Interleave {
    pub policy: serde_json::Value,
    /// After the call is handled (else before).
    pub after: bool,
}

/// Calls by operation, and by operation and outcome.
#[derive(Default)]
pub struct Counts {
    pub calls: BTreeMap<String, u64>,
    pub outcomes: BTreeMap<String, BTreeMap<String, u64>>,
}

impl Counts {
    pub fn record(&mut self, op: &str, outcome: &str) {
        *self.calls.entry(op.to_string()).or_default() += 1;
        *self
            .outcomes
            .entry(op.to_string())
            .or_default()
            .entry(outcome.to_string())
            .or_default() += 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decisions() {
        let mut f = Faults::new(1);
        assert_eq!(f.decide("X", None).injected, Injected::None);
        f.set("X", Fault::throttle(1.0));
        assert_eq!(f.decide("X", None).injected, Injected::Throttle);
        f.set("*", Fault::server_error(1.0));
        assert_eq!(f.decide("Y", None).injected, Injected::ServerError);
        f.set("X", Fault::default());
        assert_eq!(f.decide("X", None).injected, Injected::ServerError);
        let parsed: Fault = serde_json::from_str(r#"{"latency_ms":5,"deny":true}"#).unwrap();
        assert_eq!(parsed.latency, Duration::from_millis(5));
        assert!(parsed.deny);
    }

    #[test]
    fn scoped_rollback_and_interleave() {
        let mut f = Faults::new(1);
        f.set("UpdateApplication", Fault::rollback().for_application("a"));
        assert!(f.decide("UpdateApplication", Some("a")).rollback);
        assert!(!f.decide("UpdateApplication", Some("b")).rollback);
        assert!(!f.decide("UpdateApplication", None).rollback);
        let parsed: Fault =
            serde_json::from_str(r#"{"rollback": true, "application": "b"}"#).unwrap();
        f.set("UpdateApplication", parsed);
        assert!(f.decide("UpdateApplication", Some("b")).rollback);
        f.set("UpdateApplication", Fault::default().for_application("a"));
        assert!(!f.decide("UpdateApplication", Some("a")).rollback);
        // A rollback entry does not hide a `*` throttle.
        f.set("*", Fault::throttle(1.0));
        let d = f.decide("UpdateApplication", Some("b"));
        assert!(d.rollback);
        assert_eq!(d.injected, Injected::Throttle);
        f.set("*", Fault::default());
        assert_eq!(f.table().len(), 1);

        let p = serde_json::json!({"Statement": []});
        f.set(
            "PutKeyPolicy",
            Fault::interleave(p.clone()).for_key("arn:aws:kms:r:1:key/k1"),
        );
        let put = "PutKeyPolicy";
        let before = |policy: &serde_json::Value| Interleave {
            policy: policy.clone(),
            after: false,
        };
        assert_eq!(f.take_interleave(put, "k2"), None);
        assert_eq!(f.take_interleave("GetKeyPolicy", "k1"), None);
        assert_eq!(f.take_interleave(put, "k1"), Some(before(&p)));
        assert_eq!(f.take_interleave(put, "k1"), None);
        assert!(!f.table().keys().any(|k| k.starts_with("PutKeyPolicy")));
        f.set("PutKeyPolicy", Fault::interleave(p.clone()));
        assert_eq!(f.take_interleave(put, "k9"), Some(before(&p)));

        // After our write, and after a read (whatever the flag says).
        f.set("PutKeyPolicy", Fault::interleave_after(p.clone()));
        let after = Interleave {
            policy: p.clone(),
            after: true,
        };
        assert_eq!(f.take_interleave(put, "k1"), Some(after));
        let interleaves = |f: &Faults| f.table().keys().filter(|k| k.contains("KeyPolicy")).count();
        assert_eq!(interleaves(&f), 0);
        f.set("GetKeyPolicy", Fault::interleave(p.clone()).for_key("k3"));
        assert_eq!(
            f.take_interleave("GetKeyPolicy", "k3"),
            Some(Interleave {
                policy: p,
                after: true
            })
        );
        assert_eq!(interleaves(&f), 0);
    }
}
