//! The settings a running emulator can change (`GET`/`PUT /_emulator/config`): who calls,
//! how long a key policy write takes to be seen, whether principals must exist, quotas.
//! [`super::EmulatorConfig`] gives their starting values.

use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use super::quotas::Quotas;

#[derive(Clone, Debug)]
pub struct Settings {
    /// The configured identity: a role, user or root ARN.
    pub caller_arn: String,
    pub policy_propagation: Duration,
    pub strict_principals: bool,
    pub reject_incomplete_statements: bool,
    pub quotas: Option<Quotas>,
    pub update_delay: Duration,
    /// The shortest AssumeRole DurationSeconds accepted.
    pub min_session_seconds: u64,
}

/// The default caller: the operator role the demo and the docs use.
pub fn default_caller(account: &str) -> String {
    format!("arn:aws:iam::{account}:role/msf-cmk-operator")
}

/// A `PUT /_emulator/config` body: every field optional, absent = unchanged.
#[derive(Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct SettingsPatch {
    pub policy_propagation_ms: Option<u64>,
    pub caller_arn: Option<String>,
    pub strict_principals: Option<bool>,
    pub reject_incomplete_statements: Option<bool>,
    /// `true` = the documented quotas (MSF at its current or default rate), `false` = none.
    pub quotas: Option<bool>,
    /// MSF requests per second per operation; implies quotas on.
    pub msf_quota: Option<u32>,
    pub update_delay_ms: Option<u64>,
    /// The shortest AssumeRole DurationSeconds accepted (STS: 900).
    pub min_session_seconds: Option<u64>,
}

impl Settings {
    /// Applies a patch; refuses (and changes nothing) when a value is invalid.
    pub fn apply(&mut self, patch: SettingsPatch) -> Result<(), String> {
        if let Some(arn) = &patch.caller_arn {
            super::identity::Identity::parse(arn)?;
        }
        if patch.min_session_seconds == Some(0) {
            return Err("min_session_seconds must be at least 1".into());
        }
        if patch.msf_quota == Some(0) {
            return Err("msf_quota must be at least 1".into());
        }
        let SettingsPatch {
            policy_propagation_ms,
            caller_arn,
            strict_principals,
            reject_incomplete_statements,
            quotas,
            msf_quota,
            update_delay_ms,
            min_session_seconds,
        } = patch;
        if let Some(ms) = policy_propagation_ms {
            self.policy_propagation = Duration::from_millis(ms);
        }
        if let Some(arn) = caller_arn {
            self.caller_arn = arn;
        }
        if let Some(strict) = strict_principals {
            self.strict_principals = strict;
        }
        if let Some(reject) = reject_incomplete_statements {
            self.reject_incomplete_statements = reject;
        }
        match quotas {
            Some(false) => self.quotas = None,
            Some(true) if self.quotas.is_none() => self.quotas = Some(Quotas::default()),
            _ => {}
        }
        if let Some(rate) = msf_quota {
            self.quotas = Some(Quotas {
                msf_per_second: rate,
            });
        }
        if let Some(ms) = update_delay_ms {
            self.update_delay = Duration::from_millis(ms);
        }
        if let Some(s) = min_session_seconds {
            self.min_session_seconds = s;
        }
        Ok(())
    }

    pub fn to_json(&self, account: &str, accounts: &[String]) -> Value {
        json!({
            "account_id": account,
            "accounts": accounts,
            "caller_arn": self.caller_arn,
            "policy_propagation_ms": self.policy_propagation.as_millis() as u64,
            "strict_principals": self.strict_principals,
            "reject_incomplete_statements": self.reject_incomplete_statements,
            "quotas": self.quotas.is_some(),
            "msf_quota": self.quotas.map(|q| q.msf_per_second),
            "update_delay_ms": self.update_delay.as_millis() as u64,
            "min_session_seconds": self.min_session_seconds,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings() -> Settings {
        Settings {
            caller_arn: default_caller("123456789012"),
            policy_propagation: Duration::ZERO,
            strict_principals: false,
            reject_incomplete_statements: false,
            quotas: None,
            update_delay: Duration::ZERO,
            min_session_seconds: 900,
        }
    }

    #[test]
    fn patches() {
        let mut s = settings();
        let p: SettingsPatch =
            serde_json::from_str(r#"{"policy_propagation_ms": 1500, "msf_quota": 7}"#).unwrap();
        s.apply(p).unwrap();
        assert_eq!(s.policy_propagation, Duration::from_millis(1500));
        assert_eq!(s.quotas.unwrap().msf_per_second, 7);
        let p: SettingsPatch = serde_json::from_str(r#"{"quotas": false}"#).unwrap();
        s.apply(p).unwrap();
        assert!(s.quotas.is_none());
        let bad: SettingsPatch = serde_json::from_str(r#"{"caller_arn": "nope"}"#).unwrap();
        assert!(s.apply(bad).is_err());
        assert_eq!(s.caller_arn, default_caller("123456789012"));
        assert!(serde_json::from_str::<SettingsPatch>(r#"{"typo": 1}"#).is_err());
    }
}
