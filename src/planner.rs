//! The planner: desired spec + what was observed -> an ordered list of steps and the
//! conditions to report. Pure: no I/O, no clock (time is an input), deterministic.
//!
//! Rules (DESIGN.md): the key policy is made compliant (and re-read) before an application is
//! switched to a CMK; an application is updated only in READY or RUNNING and at most once per
//! change; reverting to the AWS owned key never strips statements; `suspend` changes nothing;
//! `keyPolicy.mode` decides whether the policy is written, only checked, or not read; keys
//! compare by resolved ARN; a converged resource plans no step at all.

use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::Serialize;

use crate::api::{ApplicationEncryptionSpec, KeyPolicyObservation};
use crate::domain::{EncryptionUpdate, Observed, ObservedApplication, ObservedKey};

/// Controller-wide defaults a spec may leave out.
#[derive(Clone, Debug, Default)]
pub struct Defaults {
    /// `spec.region` when absent.
    pub region: String,
    /// `spec.keyPolicy.operatorRoleArn` when absent.
    pub operator_role_arn: Option<String>,
}

/// Another application that declares the same key (in Enforce mode): its statements are
/// written in the same PutKeyPolicy so that N applications sharing a key cost one write.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct CoTenant {
    pub application_arn: String,
    pub operator_role_arn: String,
}

/// Everything the planner looks at.
#[derive(Clone, Debug)]
pub struct PlanInput<'a> {
    pub spec: &'a ApplicationEncryptionSpec,
    /// `metadata.generation`.
    pub generation: Option<i64>,
    pub defaults: &'a Defaults,
    /// DescribeApplication.
    pub application: &'a Observed<ObservedApplication>,
    /// DescribeKey of `spec.keyId` (`Skipped` when the spec wants the AWS owned key).
    pub desired_key: &'a Observed<ObservedKey>,
    /// DescribeKey of the key the application currently uses (`Skipped` when it uses the
    /// AWS owned key).
    pub current_key: &'a Observed<ObservedKey>,
    /// GetKeyPolicy of the desired key (`Skipped` in `Ignore` mode or for the AWS owned key).
    pub key_policy: &'a Observed<String>,
    /// Other applications that want the same key; merged into the same policy write.
    pub co_tenants: &'a [CoTenant],
    pub now: DateTime<Utc>,
}

/// One thing to do, in order.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(tag = "step", rename_all = "camelCase")]
pub enum Step {
    /// Replace the key policy (then re-read it to verify before any later step).
    #[serde(rename_all = "camelCase")]
    PutKeyPolicy {
        region: String,
        key_arn: String,
        /// The full new policy (compact JSON), as it will be sent.
        policy: String,
        /// The applications whose statements this write adds or repairs.
        applications: Vec<String>,
        /// Owned Sids that are added or changed.
        changed_sids: Vec<String>,
    },
    /// Switch the application's encryption (exactly once per change).
    UpdateApplication(EncryptionUpdate),
    /// Nothing to do now; look again later (e.g. application UPDATING).
    #[serde(rename_all = "camelCase")]
    Requeue {
        #[serde(with = "duration_secs")]
        after: Duration,
        reason: String,
    },
    /// Cannot proceed until something changes (spec, key, permissions). Terminal.
    #[serde(rename_all = "camelCase")]
    Blocked { reason: String, message: String },
}

/// `True` / `False` / `Unknown`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub enum ConditionStatus {
    True,
    False,
    Unknown,
}

impl ConditionStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::True => "True",
            Self::False => "False",
            Self::Unknown => "Unknown",
        }
    }
}

/// A condition as the planner concludes it (no transition time: the status builder keeps
/// `lastTransitionTime` stable when the status does not flip).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ConditionReport {
    #[serde(rename = "type")]
    pub type_: &'static str,
    pub status: ConditionStatus,
    pub reason: String,
    pub message: String,
}

/// The planner's answer.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Plan {
    pub steps: Vec<Step>,
    /// Ready, KeyUsable, KeyPolicyCompliant, EncryptionApplied (always all four).
    pub conditions: Vec<ConditionReport>,
    /// Key policy findings for the status (None when the policy was not read).
    pub key_policy: Option<KeyPolicyObservation>,
}

impl Plan {
    /// A converged resource plans no step at all.
    pub fn is_converged(&self) -> bool {
        self.steps.is_empty()
    }
}

/// Decide what to do. See the module documentation for the rules.
pub fn plan(input: &PlanInput<'_>) -> Plan {
    let _ = input;
    todo!("planner: being written")
}

mod duration_secs {
    use std::time::Duration;

    pub fn serialize<S: serde::Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u64(d.as_secs())
    }
}
