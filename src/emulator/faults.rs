//! Fault injection and call counting. Faults are per operation (`"*"` applies to every
//! operation without its own entry); counts are by operation and by outcome (`ok` or the
//! error code returned), so a test can prove e.g. that a call was not retried.

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
    Throttle,
    ServerError,
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
        if fault == Fault::default() {
            self.table.remove(op);
        } else {
            self.table.insert(op.to_string(), fault);
        }
    }

    pub fn clear(&mut self) {
        self.table.clear();
    }

    pub fn table(&self) -> BTreeMap<String, Fault> {
        self.table.clone()
    }

    /// The latency to add and the outcome to inject for one call of `op`.
    pub fn decide(&mut self, op: &str) -> (Duration, Injected) {
        let Some(f) = self.table.get(op).or_else(|| self.table.get("*")) else {
            return (Duration::ZERO, Injected::None);
        };
        let (latency, deny, throttle, error) = (f.latency, f.deny, f.throttle_rate, f.error_rate);
        if deny {
            return (latency, Injected::Deny);
        }
        let r: f64 = self.rng.random();
        let outcome = if r < throttle {
            Injected::Throttle
        } else if r < throttle + error {
            Injected::ServerError
        } else {
            Injected::None
        };
        (latency, outcome)
    }
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
        assert_eq!(f.decide("X").1, Injected::None);
        f.set("X", Fault::throttle(1.0));
        assert_eq!(f.decide("X").1, Injected::Throttle);
        f.set("*", Fault::server_error(1.0));
        assert_eq!(f.decide("Y").1, Injected::ServerError);
        f.set("X", Fault::default());
        assert_eq!(f.decide("X").1, Injected::ServerError);
        let parsed: Fault = serde_json::from_str(r#"{"latency_ms":5,"deny":true}"#).unwrap();
        assert_eq!(parsed.latency, Duration::from_millis(5));
        assert!(parsed.deny);
    }
}
