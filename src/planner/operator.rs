//! The operator's rights, PURE (no I/O): a gate applied to the planner's plan before anything
//! is written (issue 9, items 4 and 5).
//!
//! - **Who calls** (`OperatorMismatch`): MSF checks the key policy with the caller's own
//!   identity. When the controller's AWS identity (`sts:GetCallerIdentity`) is not the operator
//!   role the key policies are written for (`spec.keyPolicy.operatorRoleArn`, else the
//!   controller's default), the plan's writes are dropped: a PutKeyPolicy would grant the wrong
//!   role and the UpdateApplication would be refused. A resource that needs no write is not
//!   affected. An unknown caller (STS unreachable) is not checked.
//! - **The key being left** (`CurrentKeyUnusable`): switching CMK -> CMK or CMK -> AWS owned
//!   key needs the operator's rights on the key the application uses now (MSF snapshots the
//!   running application under it first). When that key is not Enabled, is gone, or its policy
//!   (evaluated with `crate::policy`) no longer lets the operator in, the UpdateApplication is
//!   dropped and the switch is reported as blocked. A policy write on the new key still
//!   happens: it is needed anyway and harms nothing. In `Ignore` mode, or when no operator role
//!   is configured, the old key's policy is not read and only its state is checked.

use crate::api::ApplicationEncryptionSpec;
use crate::api::condition_types::{ENCRYPTION_APPLIED, KEY_POLICY_COMPLIANT};
use crate::domain::{
    AppliedKeyType, ErrorCategory, KeyState, Observed, ObservedApplication, ObservedKey,
};
use crate::identity::CallerIdentity;
use crate::policy;
use crate::policy::requirements::MsfRequirements;

use super::{Builder, ConditionStatus, Defaults, Plan, Step, WAIT_AFTER_TRANSIENT};

/// What the gate looks at besides the plan.
#[derive(Clone, Copy, Debug)]
pub struct OperatorInput<'a> {
    pub spec: &'a ApplicationEncryptionSpec,
    pub defaults: &'a Defaults,
    /// Who the controller is; `None` when unknown (then not checked).
    pub caller: Option<&'a CallerIdentity>,
    pub application: &'a Observed<ObservedApplication>,
    /// DescribeKey of the key the application uses now (`Skipped` for the AWS owned key).
    pub current_key: &'a Observed<ObservedKey>,
    /// GetKeyPolicy of that key while a switch away from it is pending (`Skipped` otherwise).
    pub current_key_policy: &'a Observed<String>,
}

/// The operator role the key policies name for this resource.
pub fn operator_role<'a>(
    spec: &'a ApplicationEncryptionSpec,
    defaults: &'a Defaults,
) -> Option<&'a str> {
    spec.key_policy
        .operator_role_arn
        .as_deref()
        .or(defaults.operator_role_arn.as_deref())
        .filter(|r| !r.is_empty())
}

/// Drops the writes the operator's rights do not allow; see the module documentation.
pub fn gate(plan: Plan, input: &OperatorInput<'_>) -> Plan {
    let writes = |p: &Plan| {
        p.steps
            .iter()
            .any(|s| matches!(s, Step::PutKeyPolicy { .. } | Step::UpdateApplication(_)))
    };
    if !writes(&plan) {
        return plan;
    }
    if let (Some(caller), Some(role)) = (input.caller, operator_role(input.spec, input.defaults))
        && let Some(why) = caller.mismatch(role)
    {
        return operator_mismatch(plan, &why);
    }
    let updates = plan
        .steps
        .iter()
        .any(|s| matches!(s, Step::UpdateApplication(_)));
    let Some(app) = input.application.found() else {
        return plan;
    };
    if !updates || app.encryption.key_type != AppliedKeyType::CustomerManagedKey {
        return plan;
    }
    match leaving(input, app) {
        Leaving::Usable => plan,
        Leaving::Unusable(why) => drop_update(plan, |b| {
            b.block(ENCRYPTION_APPLIED, "CurrentKeyUnusable", &why);
        }),
        Leaving::Unknown(why) => drop_update(plan, |b| {
            b.wait(
                ENCRYPTION_APPLIED,
                "AwsUnavailable",
                &why,
                WAIT_AFTER_TRANSIENT,
            );
        }),
    }
}

fn builder(plan: Plan) -> Builder {
    Builder {
        steps: plan.steps,
        conditions: plan.conditions,
        key_policy: plan.key_policy,
    }
}

fn operator_mismatch(plan: Plan, why: &str) -> Plan {
    let mut b = builder(plan);
    let dropped_put = b
        .steps
        .iter()
        .any(|s| matches!(s, Step::PutKeyPolicy { .. }));
    b.steps
        .retain(|s| !matches!(s, Step::PutKeyPolicy { .. } | Step::UpdateApplication(_)));
    if dropped_put {
        let before = b
            .conditions
            .iter()
            .find(|c| c.type_ == KEY_POLICY_COMPLIANT)
            .map(|c| c.message.clone())
            .unwrap_or_default();
        b.set(
            KEY_POLICY_COMPLIANT,
            ConditionStatus::False,
            "OperatorMismatch",
            &format!("{before}; not written: {why}"),
        );
    }
    b.block(ENCRYPTION_APPLIED, "OperatorMismatch", why);
    b.finish()
}

fn drop_update(plan: Plan, report: impl FnOnce(&mut Builder)) -> Plan {
    let mut b = builder(plan);
    b.steps.retain(|s| !matches!(s, Step::UpdateApplication(_)));
    report(&mut b);
    b.finish()
}

enum Leaving {
    Usable,
    /// Blocked until someone fixes the key or its policy.
    Unusable(String),
    /// Could not be checked for now (transient).
    Unknown(String),
}

/// Can the operator leave the key the application uses now?
fn leaving(input: &OperatorInput<'_>, app: &ObservedApplication) -> Leaving {
    let named = app.encryption.key_id.as_deref().unwrap_or("the key in use");
    let key = match input.current_key {
        Observed::Found(k) => k,
        Observed::NotFound(msg) => {
            return Leaving::Unusable(format!(
                "the application's current key {named} no longer exists ({msg}); MSF cannot snapshot the application under it to switch keys"
            ));
        }
        Observed::Failed {
            category: ErrorCategory::Terminal,
            code,
            message,
        } => {
            return Leaving::Unusable(format!(
                "the application's current key {named} cannot be read by the operator (DescribeKey: {code}: {message}); switching away from it needs the operator's rights on it"
            ));
        }
        Observed::Failed { code, message, .. } => {
            return Leaving::Unknown(format!(
                "DescribeKey of the current key {named}: {code}: {message}"
            ));
        }
        Observed::Skipped => return Leaving::Usable,
    };
    if key.state != KeyState::Enabled {
        return Leaving::Unusable(format!(
            "the application's current key {} is {}: MSF snapshots the application under it before switching, so it must be Enabled; enable it (or cancel its deletion) to let the switch happen",
            key.arn,
            key.state.as_wire()
        ));
    }
    let text = match input.current_key_policy {
        Observed::Found(t) => t,
        Observed::Failed {
            category: ErrorCategory::Transient | ErrorCategory::Conflict,
            code,
            message,
        } => {
            return Leaving::Unknown(format!(
                "GetKeyPolicy of the current key {}: {code}: {message}",
                key.arn
            ));
        }
        // Not read (Ignore mode), or not readable by us: MSF decides.
        _ => return Leaving::Usable,
    };
    let Some(role) = operator_role(input.spec, input.defaults) else {
        return Leaving::Usable;
    };
    let (Ok(doc), Ok(reqs)) = (
        policy::parse_shared(text),
        MsfRequirements::for_application(&app.arn, role),
    ) else {
        // A policy our engine cannot read is not evidence of a refusal.
        return Leaving::Usable;
    };
    let report = policy::check(&doc, &key.arn, &reqs);
    let missing: Vec<String> = report
        .missing()
        .filter(|a| a.principal.starts_with("AWS:"))
        .map(|a| a.action.clone())
        .collect();
    if missing.is_empty() {
        return Leaving::Usable;
    }
    Leaving::Unusable(format!(
        "the policy of the application's current key {} no longer lets the operator {role} use it ({} denied); switching away from a key needs the operator's rights on it: ask the key administrator to restore them",
        key.arn,
        missing.join(", ")
    ))
}
