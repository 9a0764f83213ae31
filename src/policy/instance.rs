//! The instance name: which controller installation owns a statement.
//!
//! Several controllers (two clusters, two installations) may manage applications on one key.
//! Each owns only the statements whose Sid carries its name; the others' statements are, for
//! it, like a person's: kept byte for byte, counted towards KMS's 32 KB and the lock-out check,
//! and evaluated by `policy check` with everything else.
//!
//! The name is part of every owned Sid, so it is short and plain: 1 to 32 lower-case letters,
//! digits and inner hyphens (a DNS label, shorter). `default` is written without a name
//! (`MsfCmkOperatorUseKey-<role>`), so the Sids of a single installation stay short and the
//! statements of the releases before instance names (which had no name) are the default
//! instance's.

use std::fmt;
use std::str::FromStr;

/// The name of the default instance (`--instance-name` unset).
pub const DEFAULT_INSTANCE: &str = "default";

/// The longest instance name: it is repeated in every owned Sid.
pub const MAX_INSTANCE_NAME: usize = 32;

/// A valid instance name (see the module documentation).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct InstanceName(String);

impl InstanceName {
    pub fn parse(s: &str) -> Result<Self, String> {
        let valid_chars = s
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
        if s.is_empty()
            || s.len() > MAX_INSTANCE_NAME
            || !valid_chars
            || s.starts_with('-')
            || s.ends_with('-')
        {
            return Err(format!(
                "invalid instance name {s:?}: 1 to {MAX_INSTANCE_NAME} lower-case letters, \
                 digits and hyphens, starting and ending with a letter or digit"
            ));
        }
        Ok(Self(s.to_string()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    pub fn is_default(&self) -> bool {
        self.0 == DEFAULT_INSTANCE
    }
}

impl Default for InstanceName {
    fn default() -> Self {
        Self(DEFAULT_INSTANCE.to_string())
    }
}

impl fmt::Display for InstanceName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl FromStr for InstanceName {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_dns_label_like() {
        for ok in ["default", "a", "eu-west-1", "cluster-b", &"x".repeat(32)] {
            assert!(InstanceName::parse(ok).is_ok(), "{ok}");
        }
        for bad in ["", "-a", "a-", "A", "a_b", "a.b", "ä", &"x".repeat(33)] {
            assert!(InstanceName::parse(bad).is_err(), "{bad}");
        }
        assert!(InstanceName::default().is_default());
    }
}
