//! The planner: desired spec + what was observed -> an ordered list of steps and the
//! conditions to report. Pure: no I/O, no clock (time is an input), deterministic.
//!
//! Rules (DESIGN.md): the key policy is made compliant (and re-read) before an application is
//! switched to a CMK; an application is updated only in READY or RUNNING and at most once per
//! change; reverting to the AWS owned key never strips statements; `suspend` changes nothing;
//! `keyPolicy.mode` decides whether the policy is written, only checked, or not read; keys
//! compare by resolved ARN; a converged resource plans no step at all.

pub mod lifecycle;
pub mod operator;

use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::Serialize;

use crate::api::{ApplicationEncryptionSpec, KeyPolicyObservation};
use crate::domain::{
    ApplicationStatus, EncryptionUpdate, Observed, ObservedApplication, ObservedKey,
};

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
    /// The controller instance: it writes and removes only its own statements.
    pub instance: &'a crate::policy::InstanceName,
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

/// How long to wait before looking again while the application is in a transient status.
pub const WAIT_FOR_STATUS: Duration = Duration::from_secs(15);
/// How long to wait after a transient AWS error seen while observing.
pub const WAIT_AFTER_TRANSIENT: Duration = Duration::from_secs(30);

/// Decide what to do. See the module documentation for the rules.
pub fn plan(input: &PlanInput<'_>) -> Plan {
    let b = Builder::default();
    let spec = input.spec;

    if let Err(why) = validate_spec(spec) {
        return b.blocked_everything("InvalidSpec", &why);
    }

    let app = match input.application {
        Observed::Found(app) => app,
        Observed::NotFound(msg) => {
            return b.blocked_everything(
                "ApplicationNotFound",
                &format!(
                    "application {:?} not found in {}: {msg}",
                    spec.application_name,
                    region_of(input)
                ),
            );
        }
        Observed::Failed {
            category,
            code,
            message,
        } => return b.observe_failed("application", *category, code, message),
        Observed::Skipped => {
            return b.blocked_everything("ApplicationNotObserved", "the application was not read");
        }
    };

    match spec.key_type {
        KeyType::AwsOwnedKey => plan_aws_owned(input, app, b),
        KeyType::CustomerManagedKey => plan_customer_managed(input, app, b),
    }
}

fn region_of(input: &PlanInput<'_>) -> String {
    input
        .spec
        .region
        .clone()
        .unwrap_or_else(|| input.defaults.region.clone())
}

/// The controller checks again what the API server's schema and CEL rules check: `plan`/`apply`
/// judge manifests with the CRD's own schema first (`controller::manifests`), but a resource
/// may come from a cluster whose CRD is older than this binary, and a malformed `keyId` passes
/// the schema (it is only a string there) and is refused here as `InvalidSpec`.
pub fn validate_spec(spec: &ApplicationEncryptionSpec) -> Result<(), String> {
    if !arn::is_valid_application_name(&spec.application_name) {
        return Err(format!(
            "applicationName {:?} is not a valid MSF application name (1-128 of [a-zA-Z0-9_.-])",
            spec.application_name
        ));
    }
    match (spec.key_type, spec.key_id.as_deref()) {
        (KeyType::CustomerManagedKey, None | Some("")) => {
            return Err("keyId is required when keyType is CustomerManagedKey".into());
        }
        (KeyType::AwsOwnedKey, Some(_)) => {
            return Err("keyId must be omitted when keyType is AwsOwnedKey".into());
        }
        (KeyType::CustomerManagedKey, Some(k)) => {
            KeyRef::parse(k).map_err(|e| format!("keyId: {e}"))?;
        }
        (KeyType::AwsOwnedKey, None) => {}
    }
    if let Some(r) = &spec.key_policy.operator_role_arn {
        Arn::parse_role(r).map_err(|e| format!("keyPolicy.operatorRoleArn: {e}"))?;
    }
    Ok(())
}

fn plan_aws_owned(input: &PlanInput<'_>, app: &ObservedApplication, mut b: Builder) -> Plan {
    b.set(
        KEY_USABLE,
        ConditionStatus::True,
        "NotRequired",
        "the AWS owned key needs no customer key",
    );
    b.set(
        KEY_POLICY_COMPLIANT,
        ConditionStatus::True,
        "NotRequired",
        "the AWS owned key has no key policy to check",
    );
    if app.encryption.key_type == AppliedKeyType::AwsOwnedKey {
        b.set(
            ENCRYPTION_APPLIED,
            ConditionStatus::True,
            "AwsOwnedKeyInUse",
            "the application uses the AWS owned key",
        );
        return b.finish();
    }
    // Switching back never strips key policy statements: snapshots taken under the CMK
    // still need it to be restored.
    let from = app
        .encryption
        .key_id
        .as_deref()
        .unwrap_or("a customer managed key");
    let update = EncryptionUpdate {
        region: region_of(input),
        application_name: app.name.clone(),
        current_version_id: app.version_id,
        conditional_token: app.conditional_token.clone(),
        key_type: AppliedKeyType::AwsOwnedKey,
        key_id: None,
    };
    b.switch(
        input,
        app,
        update,
        &format!("the application uses {from}; switching to the AWS owned key"),
    );
    b.finish()
}

fn plan_customer_managed(input: &PlanInput<'_>, app: &ObservedApplication, mut b: Builder) -> Plan {
    let spec = input.spec;
    let key_ref = spec.key_id.as_deref().unwrap_or_default();
    let app_arn = match Arn::parse_application(&app.arn) {
        Ok(a) => a,
        Err(e) => return b.blocked_everything("InvalidApplicationArn", &e.to_string()),
    };

    // --- The key itself.
    let key = match input.desired_key {
        Observed::Found(k) => Some(k),
        Observed::NotFound(msg) => {
            b.block(
                KEY_USABLE,
                "KeyNotFound",
                &format!("key {key_ref:?} not found in {}: {msg}", app_arn.region),
            );
            None
        }
        Observed::Failed {
            category,
            code,
            message,
        } => {
            match category {
                ErrorCategory::Terminal | ErrorCategory::Configuration => b.block(
                    KEY_USABLE,
                    reason_for_code(code),
                    &format!("DescribeKey {key_ref:?}: {code}: {message}"),
                ),
                _ => b.wait(
                    KEY_USABLE,
                    "AwsUnavailable",
                    &format!("DescribeKey {key_ref:?}: {code}: {message}"),
                    WAIT_AFTER_TRANSIENT,
                ),
            }
            None
        }
        Observed::Skipped => {
            b.block(KEY_USABLE, "KeyNotObserved", "the key was not read");
            None
        }
    };
    let key_usable = key.is_some_and(|k| check_key_usable(k, &app_arn, app, &mut b));

    // --- The key policy.
    let policy_ok = match key {
        Some(k) => plan_key_policy(input, app, k, key_usable, &mut b),
        None => {
            b.set(
                KEY_POLICY_COMPLIANT,
                ConditionStatus::Unknown,
                "KeyNotUsable",
                "the key policy cannot be checked without the key",
            );
            false
        }
    };

    // --- The application's encryption.
    let in_use = app.encryption.key_type == AppliedKeyType::CustomerManagedKey;
    let same_key = in_use
        && key.is_some_and(|k| {
            input.current_key.found().is_some_and(|c| c.arn == k.arn)
                || app.encryption.key_id.as_deref() == Some(k.arn.as_str())
        });
    if same_key {
        b.set(
            ENCRYPTION_APPLIED,
            ConditionStatus::True,
            "CustomerManagedKeyInUse",
            &format!(
                "the application uses {}",
                key.map(|k| k.arn.as_str()).unwrap_or_default()
            ),
        );
        return b.finish();
    }
    let Some(key) = key.filter(|_| key_usable) else {
        b.set(
            ENCRYPTION_APPLIED,
            ConditionStatus::False,
            "KeyNotUsable",
            "waiting for a usable key before switching the application",
        );
        return b.finish();
    };
    if !policy_ok {
        b.set(
            ENCRYPTION_APPLIED,
            ConditionStatus::False,
            "KeyPolicyNotCompliant",
            "the application is switched only once the key policy grants what MSF needs",
        );
        return b.finish();
    }
    let from = if in_use {
        app.encryption
            .key_id
            .clone()
            .unwrap_or_else(|| "another customer managed key".into())
    } else {
        "the AWS owned key".into()
    };
    let update = EncryptionUpdate {
        region: app_arn.region.clone(),
        application_name: app.name.clone(),
        current_version_id: app.version_id,
        conditional_token: app.conditional_token.clone(),
        key_type: AppliedKeyType::CustomerManagedKey,
        key_id: Some(key.arn.clone()),
    };
    b.switch(
        input,
        app,
        update,
        &format!("the application uses {from}; switching to {}", key.arn),
    );
    b.finish()
}

/// Sets KeyUsable; returns whether MSF can use the key for this application.
fn check_key_usable(
    key: &ObservedKey,
    app_arn: &Arn,
    app: &ObservedApplication,
    b: &mut Builder,
) -> bool {
    let problem = match &key.state {
        KeyState::Enabled => None,
        KeyState::Disabled => Some(("KeyDisabled", format!("key {} is Disabled: enable it; MSF cannot encrypt, restore or roll back with a disabled key", key.arn))),
        KeyState::PendingDeletion => Some(("KeyPendingDeletion", format!("key {} is pending deletion: cancel the deletion; snapshots under it would become unrecoverable", key.arn))),
        other => Some(("KeyNotEnabled", format!("key {} is {}: MSF needs an Enabled key", key.arn, other.as_wire()))),
    }
    .or_else(|| (key.manager != KeyManager::Customer).then(|| ("AwsManagedKey", format!("key {} is an AWS managed key: MSF needs a customer managed key", key.arn))))
    .or_else(|| (!key.is_symmetric_encrypt_decrypt()).then(|| ("KeyNotSymmetric", format!("key {} is {} / {}: MSF needs a SYMMETRIC_DEFAULT ENCRYPT_DECRYPT key", key.arn, key.spec, key.usage))))
    .or_else(|| (key.region != app_arn.region).then(|| ("KeyInWrongRegion", format!("key {} is in {} but the application is in {}: use a key in the application's region", key.arn, key.region, app_arn.region))))
    .or_else(|| (key.account != app_arn.account).then(|| ("KeyInWrongAccount", format!("key {} is in account {} but the application is in {}: use a key in the application's account", key.arn, key.account, app_arn.account))))
    .or_else(|| (!runtime_supports_cmk(&app.runtime_environment)).then(|| ("RuntimeNotSupported", format!("runtime {} does not support customer managed keys: upgrade to FLINK-1_20 or later", app.runtime_environment))));
    match problem {
        None => {
            b.set(
                KEY_USABLE,
                ConditionStatus::True,
                "KeyUsable",
                &format!(
                    "key {} is enabled, symmetric and in the application's account and region",
                    key.arn
                ),
            );
            true
        }
        Some((reason, message)) => {
            b.block(KEY_USABLE, reason, &message);
            false
        }
    }
}

/// `FLINK-1_20` or later (CMK support starts with Flink 1.20).
pub fn runtime_supports_cmk(runtime: &str) -> bool {
    let Some(version) = runtime.strip_prefix("FLINK-") else {
        return false;
    };
    let mut parts = version.split('_').map(|p| p.parse::<u32>());
    match (parts.next(), parts.next()) {
        (Some(Ok(major)), Some(Ok(minor))) => (major, minor) >= (1, 20),
        (Some(Ok(major)), None) => major >= 2,
        _ => false,
    }
}

/// Sets KeyPolicyCompliant and possibly plans a PutKeyPolicy. Returns whether the policy
/// will grant what MSF needs once the planned steps ran (so the switch may follow).
fn plan_key_policy(
    input: &PlanInput<'_>,
    app: &ObservedApplication,
    key: &ObservedKey,
    key_usable: bool,
    b: &mut Builder,
) -> bool {
    let spec = input.spec;
    let mode = spec.key_policy.mode;
    if mode == KeyPolicyMode::Ignore {
        b.set(
            KEY_POLICY_COMPLIANT,
            ConditionStatus::Unknown,
            "NotChecked",
            "keyPolicy.mode is Ignore: the key policy is not read",
        );
        return true;
    }
    let text = match input.key_policy {
        Observed::Found(t) => t,
        Observed::NotFound(msg) => {
            b.block(
                KEY_POLICY_COMPLIANT,
                "KeyPolicyNotFound",
                &format!("GetKeyPolicy {}: {msg}", key.arn),
            );
            return false;
        }
        Observed::Failed {
            category,
            code,
            message,
        } => {
            let text = format!("GetKeyPolicy {}: {code}: {message}", key.arn);
            match category {
                ErrorCategory::Terminal | ErrorCategory::Configuration => {
                    b.block(KEY_POLICY_COMPLIANT, reason_for_code(code), &text)
                }
                _ => b.wait(
                    KEY_POLICY_COMPLIANT,
                    "AwsUnavailable",
                    &text,
                    WAIT_AFTER_TRANSIENT,
                ),
            }
            return false;
        }
        Observed::Skipped => {
            b.set(
                KEY_POLICY_COMPLIANT,
                ConditionStatus::Unknown,
                "NotChecked",
                "the key policy was not read",
            );
            return false;
        }
    };
    let Some(operator) = spec
        .key_policy
        .operator_role_arn
        .clone()
        .or_else(|| input.defaults.operator_role_arn.clone())
    else {
        b.block(
            KEY_POLICY_COMPLIANT,
            "OperatorRoleUnknown",
            "no operator role: set spec.keyPolicy.operatorRoleArn or the controller's --operator-role-arn",
        );
        return false;
    };
    let doc = match policy::parse_shared(text) {
        Ok(d) => d,
        Err(e) => {
            b.block(
                KEY_POLICY_COMPLIANT,
                "MalformedKeyPolicy",
                &format!(
                    "the policy of key {} cannot be parsed ({e}); it is left untouched",
                    key.arn
                ),
            );
            return false;
        }
    };
    let reqs = match MsfRequirements::for_application(&app.arn, &operator) {
        Ok(r) => r,
        Err(e) => {
            b.block(KEY_POLICY_COMPLIANT, "InvalidSpec", &e.to_string());
            return false;
        }
    };
    let report = policy::check(&doc, &key.arn, &reqs);
    b.key_policy = Some(observation(&key.arn, &report));
    // A statement under the controller's Sid prefix that is not exactly what the controller
    // writes belongs to a person: kept as it is, and nothing is written to this key (whatever
    // else it grants) until a person renames it.
    let unmergeable = doc.unmergeable_sids();
    if mode == KeyPolicyMode::Enforce && !unmergeable.is_empty() {
        let why = MergeError::NotMergeable { sids: unmergeable };
        b.block(
            KEY_POLICY_COMPLIANT,
            "KeyPolicyNotMergeable",
            &format!("key {}: {why}", key.arn),
        );
        return false;
    }
    if report.compliant {
        b.set(
            KEY_POLICY_COMPLIANT,
            ConditionStatus::True,
            "Compliant",
            &format!(
                "the policy of key {} grants every access MSF and the operator need",
                key.arn
            ),
        );
        return true;
    }
    let (reason, summary) = missing_summary(&report);
    if mode == KeyPolicyMode::Audit || spec.suspend || !key_usable {
        // A key MSF cannot use (wrong region or account, disabled, ...) gets no statements.
        let why = if !key_usable {
            "the key is not usable"
        } else if spec.suspend {
            "suspend is set"
        } else {
            "keyPolicy.mode is Audit"
        };
        // Blocked, not failed: the key administrator's edit (or lifting suspend) unblocks it,
        // and the periodic resync notices.
        b.block(
            KEY_POLICY_COMPLIANT,
            reason,
            &format!("{summary}; {why}, so the key administrator must add the statements (see `msf-cmk-controller iam-policy`)"),
        );
        return false;
    }

    // Enforce: one write covers this application and every co-tenant of the key.
    let mut grants = vec![Grant {
        application_arn: app.arn.clone(),
        operator_role_arn: operator.clone(),
    }];
    grants.extend(
        input
            .co_tenants
            .iter()
            .filter(|t| t.application_arn != app.arn)
            .map(|t| Grant {
                application_arn: t.application_arn.clone(),
                operator_role_arn: t.operator_role_arn.clone(),
            }),
    );
    let merged = match policy::merge::merge_for(&doc, input.instance, &grants, &[]) {
        Ok(m) => m,
        Err(e) => {
            let reason = match e {
                MergeError::TooLarge { .. } => "KeyPolicyTooLarge",
                MergeError::WouldLockOut { .. } => "WouldLockOut",
                _ => "KeyPolicyNotMergeable",
            };
            b.block(
                KEY_POLICY_COMPLIANT,
                reason,
                &format!("{summary}; cannot add the statements: {e}; nothing was written"),
            );
            return false;
        }
    };
    let after = policy::check(&merged, &key.arn, &reqs);
    if merged == *doc || !after.compliant {
        // Only a statement the controller does not own (a human's Deny, say) can stop the
        // merged policy from granting the access: say which, and write nothing.
        let (reason, summary) = missing_summary(&after);
        b.block(KEY_POLICY_COMPLIANT, reason, &format!("{summary}; a statement the controller does not own prevents it, nothing was written"));
        return false;
    }
    let before: std::collections::BTreeSet<String> = report.owned_sids.iter().cloned().collect();
    let changed_sids: Vec<String> = after
        .owned_sids
        .iter()
        .filter(|s| !before.contains(*s))
        .cloned()
        .collect();
    let applications: Vec<String> = grants.iter().map(|g| g.application_arn.clone()).collect();
    b.steps.push(Step::PutKeyPolicy {
        region: key.region.clone(),
        key_arn: key.arn.clone(),
        policy: merged.to_compact_json(),
        applications,
        changed_sids,
    });
    b.set(
        KEY_POLICY_COMPLIANT,
        ConditionStatus::False,
        reason,
        &format!("{summary}; adding the statements MSF needs"),
    );
    true
}

fn observation(key_arn: &str, report: &ComplianceReport) -> KeyPolicyObservation {
    KeyPolicyObservation {
        key_arn: Some(key_arn.to_string()),
        compliant: report.compliant,
        missing_accesses: report
            .missing()
            .map(|a| {
                format!(
                    "{} {} ({})",
                    a.principal,
                    a.action,
                    decision_word(a.decision)
                )
            })
            .collect(),
        findings: report
            .findings
            .iter()
            .map(|f| format!("{}: {}: {}", f.code, f.statement, f.message))
            .collect(),
        owned_sids: report.owned_sids.clone(),
    }
}

fn decision_word(d: Decision) -> &'static str {
    match d {
        Decision::Allow => "Allow",
        Decision::ExplicitDeny => "ExplicitDeny",
        Decision::ImplicitDeny => "ImplicitDeny",
    }
}

/// The condition reason and a one-line summary for what a policy is missing.
fn missing_summary(report: &ComplianceReport) -> (&'static str, String) {
    let missing: Vec<_> = report.missing().collect();
    let reason = if missing.iter().any(|a| a.decision == Decision::ExplicitDeny) {
        "ExplicitDeny"
    } else if missing.iter().any(|a| a.principal.starts_with("Service:")) {
        "MissingServicePrincipal"
    } else {
        "MissingOperatorAccess"
    };
    let list: Vec<String> = missing
        .iter()
        .take(4)
        .map(|a| format!("{} {}", a.principal, a.action))
        .collect();
    let more = if missing.len() > 4 {
        format!(" and {} more", missing.len() - 4)
    } else {
        String::new()
    };
    (
        reason,
        format!("the key policy does not grant {}{more}", list.join(", ")),
    )
}

/// A CamelCase reason for an AWS error code seen while observing.
fn reason_for_code(code: &str) -> &'static str {
    match code {
        "AccessDeniedException" | "AccessDenied" => "NotPermitted",
        "NotFoundException" | "ResourceNotFoundException" => "NotFound",
        "KMSInvalidStateException" | "DisabledException" => "KeyNotUsable",
        c if crate::aws::category_of(c, None) == ErrorCategory::Configuration => "AwsCredentials",
        _ => "AwsError",
    }
}

use crate::api::KeyPolicyMode;
use crate::api::KeyType;
use crate::api::condition_types::{ENCRYPTION_APPLIED, KEY_POLICY_COMPLIANT, KEY_USABLE, READY};
use crate::arn::{self, Arn, KeyRef};
use crate::domain::{AppliedKeyType, ErrorCategory, KeyManager, KeyState};
use crate::policy::merge::{Grant, MergeError};
use crate::policy::requirements::MsfRequirements;
use crate::policy::{self, ComplianceReport, Decision};

/// Accumulates steps and conditions; `finish` derives Ready from the other three.
#[derive(Default)]
struct Builder {
    steps: Vec<Step>,
    conditions: Vec<ConditionReport>,
    key_policy: Option<KeyPolicyObservation>,
}

impl Builder {
    fn set(&mut self, type_: &'static str, status: ConditionStatus, reason: &str, message: &str) {
        self.conditions.retain(|c| c.type_ != type_);
        self.conditions.push(ConditionReport {
            type_,
            status,
            reason: reason.to_string(),
            message: message.to_string(),
        });
    }

    /// A condition that cannot become true until something changes: terminal.
    fn block(&mut self, type_: &'static str, reason: &str, message: &str) {
        self.set(type_, ConditionStatus::False, reason, message);
        if !self.steps.iter().any(|s| matches!(s, Step::Blocked { .. })) {
            self.steps.push(Step::Blocked {
                reason: reason.to_string(),
                message: message.to_string(),
            });
        }
    }

    /// A condition that is unknown for now: look again later.
    fn wait(&mut self, type_: &'static str, reason: &str, message: &str, after: Duration) {
        self.set(type_, ConditionStatus::Unknown, reason, message);
        self.requeue(after, reason);
    }

    fn requeue(&mut self, after: Duration, reason: &str) {
        if !self.steps.iter().any(|s| matches!(s, Step::Requeue { .. })) {
            self.steps.push(Step::Requeue {
                after,
                reason: reason.to_string(),
            });
        }
    }

    fn observe_failed(
        mut self,
        what: &str,
        category: ErrorCategory,
        code: &str,
        message: &str,
    ) -> Plan {
        let text = format!("reading the {what}: {code}: {message}");
        for t in [KEY_USABLE, KEY_POLICY_COMPLIANT] {
            self.set(
                t,
                ConditionStatus::Unknown,
                "ApplicationNotObserved",
                "the application could not be read",
            );
        }
        match category {
            ErrorCategory::Terminal | ErrorCategory::Configuration => {
                self.block(ENCRYPTION_APPLIED, reason_for_code(code), &text)
            }
            _ => self.wait(
                ENCRYPTION_APPLIED,
                "AwsUnavailable",
                &text,
                WAIT_AFTER_TRANSIENT,
            ),
        }
        self.finish()
    }

    fn blocked_everything(mut self, reason: &str, message: &str) -> Plan {
        for t in [KEY_USABLE, KEY_POLICY_COMPLIANT] {
            self.set(t, ConditionStatus::Unknown, reason, message);
        }
        self.block(ENCRYPTION_APPLIED, reason, message);
        self.finish()
    }

    /// Plans the one UpdateApplication of a change, or the wait for a status that allows it.
    fn switch(
        &mut self,
        input: &PlanInput<'_>,
        app: &ObservedApplication,
        update: EncryptionUpdate,
        what: &str,
    ) {
        if input.spec.suspend {
            self.block(
                ENCRYPTION_APPLIED,
                "Suspended",
                &format!("{what} is pending; suspend is set, nothing is changed"),
            );
        } else if !app.status.is_updatable() {
            self.set(
                ENCRYPTION_APPLIED,
                ConditionStatus::False,
                "WaitingForApplicationStatus",
                &format!(
                    "{what} once the application is READY or RUNNING (it is {})",
                    app.status.as_wire()
                ),
            );
            self.requeue(WAIT_FOR_STATUS, "WaitingForApplicationStatus");
        } else {
            let restart = if app.status == ApplicationStatus::Running {
                " (MSF snapshots and restarts the running application)"
            } else {
                ""
            };
            self.set(
                ENCRYPTION_APPLIED,
                ConditionStatus::False,
                "Updating",
                &format!("{what}{restart}"),
            );
            self.steps.push(Step::UpdateApplication(update));
        }
    }

    fn finish(mut self) -> Plan {
        let acting = self
            .steps
            .iter()
            .any(|s| matches!(s, Step::PutKeyPolicy { .. } | Step::UpdateApplication(_)));
        // Ready summarises the first False condition (what blocks), else the first Unknown.
        let gates: Vec<&ConditionReport> = [KEY_USABLE, KEY_POLICY_COMPLIANT, ENCRYPTION_APPLIED]
            .iter()
            .filter_map(|t| self.conditions.iter().find(|c| c.type_ == *t))
            .collect();
        let first_not_true = gates
            .iter()
            .find(|c| c.status == ConditionStatus::False)
            .or_else(|| {
                gates
                    .iter()
                    .find(|c| c.status == ConditionStatus::Unknown && c.reason != "NotChecked")
            })
            .map(|c| (*c).clone());
        let ready = match (&first_not_true, acting) {
            (None, _) => ConditionReport {
                type_: READY,
                status: ConditionStatus::True,
                reason: "Converged".into(),
                message: "AWS matches the spec".into(),
            },
            (Some(c), true) => ConditionReport {
                type_: READY,
                status: ConditionStatus::False,
                reason: "Reconciling".into(),
                message: c.message.clone(),
            },
            (Some(c), false) => ConditionReport {
                type_: READY,
                status: if c.status == ConditionStatus::Unknown {
                    ConditionStatus::Unknown
                } else {
                    ConditionStatus::False
                },
                reason: c.reason.clone(),
                message: c.message.clone(),
            },
        };
        self.conditions.retain(|c| c.type_ != READY);
        let mut conditions = vec![ready];
        for t in [KEY_USABLE, KEY_POLICY_COMPLIANT, ENCRYPTION_APPLIED] {
            if let Some(c) = self.conditions.iter().find(|c| c.type_ == t) {
                conditions.push(c.clone());
            }
        }
        Plan {
            steps: self.steps,
            conditions,
            key_policy: self.key_policy,
        }
    }
}

mod duration_secs {
    use std::time::Duration;

    pub fn serialize<S: serde::Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u64(d.as_secs())
    }
}
