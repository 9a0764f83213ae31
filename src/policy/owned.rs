//! The statements the controller owns: built from a set of grants, deterministically.
//!
//! Applications sharing a key share statements: their ARNs go into condition value lists, so a
//! key holds many applications under KMS's 32 KB limit. What must stay apart stays apart:
//! - the operator statements are per operator role (and region, for `kms:ViaService`), so an
//!   operator never gets the encryption context of another operator's applications;
//! - the service statements are per account, so `aws:SourceAccount` stays exact.
//!
//! Within one group the pairing of `aws:SourceArn` with the encryption context is lost (a
//! list each): MSF could in principle use application A's context on behalf of application B
//! of the same account and key. That is the price of fitting ~40 applications instead of ~10.

use std::collections::{BTreeMap, BTreeSet};

use serde_json::{Map, Value, json};

use super::OWNED_SID_PREFIX;
use super::requirements::{
    KEY_ENCRYPTION_CONTEXT, KEY_GRANT_CONSTRAINT, KEY_GRANT_OPERATIONS, KEY_SOURCE_ACCOUNT,
    KEY_SOURCE_ARN, KEY_VIA_SERVICE, MSF_INFRASTRUCTURE_SERVICE, MSF_SERVICE, via_service,
};
use crate::arn::Arn;

/// Which applications are granted, and through which operator.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct GrantState {
    /// Every granted application (its service statements), by ARN.
    pub applications: BTreeSet<String>,
    /// Application ARN -> operator role ARN. An application without an entry keeps its service
    /// statements only (its operator could not be recovered from a damaged statement).
    pub operators: BTreeMap<String, String>,
}

/// One value as a string, several as a sorted list (sets are already sorted).
fn values<'a>(items: impl IntoIterator<Item = &'a String>) -> Value {
    let v: Vec<Value> = items
        .into_iter()
        .map(|s| Value::String(s.clone()))
        .collect();
    match v.len() {
        1 => v.into_iter().next().unwrap_or(Value::Null),
        _ => Value::Array(v),
    }
}

fn statement(sid: String, principal: Value, action: Value, condition: Value) -> Map<String, Value> {
    let mut m = Map::new();
    m.insert("Sid".into(), Value::String(sid));
    m.insert("Effect".into(), Value::String("Allow".into()));
    m.insert("Principal".into(), principal);
    m.insert("Action".into(), action);
    m.insert("Resource".into(), Value::String("*".into()));
    m.insert("Condition".into(), condition);
    m
}

/// A short, stable tag for a group: readable role name plus a hash that keeps Sids unique.
fn group_tag(role_arn: &str, region: &str) -> String {
    let name: String = role_arn
        .rsplit('/')
        .next()
        .unwrap_or_default()
        .chars()
        .filter(char::is_ascii_alphanumeric)
        .take(24)
        .collect();
    // FNV-1a: tiny, stable across Rust versions (unlike DefaultHasher).
    let mut h: u32 = 0x811c_9dc5;
    for b in role_arn.bytes().chain([b'|']).chain(region.bytes()) {
        h ^= u32::from(b);
        h = h.wrapping_mul(0x0100_0193);
    }
    format!("{name}{h:08x}")
}

/// The owned statements for `state`, in a fixed order.
pub fn build(state: &GrantState) -> Vec<Map<String, Value>> {
    let mut out = Vec::new();
    // Service statements, per account.
    let mut by_account: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for app in &state.applications {
        if let Ok(a) = Arn::parse_application(app) {
            by_account.entry(a.account).or_default().insert(app.clone());
        }
    }
    for (account, apps) in &by_account {
        out.extend(service_statements(account, apps));
    }
    // Operator statements, per (role, region).
    let mut by_operator: BTreeMap<(String, String), BTreeSet<String>> = BTreeMap::new();
    for (app, role) in &state.operators {
        if !state.applications.contains(app) {
            continue;
        }
        if let Ok(a) = Arn::parse_application(app) {
            by_operator
                .entry((role.clone(), a.region))
                .or_default()
                .insert(app.clone());
        }
    }
    for ((role, region), apps) in &by_operator {
        out.extend(operator_statements(role, region, apps));
    }
    out
}

fn service_statements(account: &str, apps: &BTreeSet<String>) -> Vec<Map<String, Value>> {
    let p = OWNED_SID_PREFIX;
    let both = json!({"Service": [MSF_SERVICE, MSF_INFRASTRUCTURE_SERVICE]});
    let msf = json!({"Service": MSF_SERVICE});
    let infra = json!({"Service": MSF_INFRASTRUCTURE_SERVICE});
    let arns = values(apps);
    let ctx = |extra: Value| {
        let mut m = Map::new();
        m.insert(KEY_ENCRYPTION_CONTEXT.into(), arns.clone());
        if let Value::Object(e) = extra {
            m.extend(e);
        }
        Value::Object(m)
    };
    vec![
        statement(
            format!("{p}ServiceDescribeKey{account}"),
            both,
            json!("kms:DescribeKey"),
            json!({"StringEquals": {KEY_SOURCE_ARN: arns, KEY_SOURCE_ACCOUNT: account}}),
        ),
        statement(
            format!("{p}ServiceDurableGenerateDataKey{account}"),
            msf.clone(),
            json!("kms:GenerateDataKey"),
            json!({"StringEquals": ctx(json!({KEY_SOURCE_ARN: arns, KEY_SOURCE_ACCOUNT: account}))}),
        ),
        statement(
            format!("{p}ServiceDurableDecrypt{account}"),
            msf,
            json!("kms:Decrypt"),
            json!({"StringEquals": ctx(Value::Null)}),
        ),
        statement(
            format!("{p}ServiceRunningState{account}"),
            infra.clone(),
            json!(["kms:Decrypt", "kms:GenerateDataKeyWithoutPlaintext"]),
            json!({"StringEquals": ctx(Value::Null)}),
        ),
        statement(
            format!("{p}ServiceRunningCreateGrant{account}"),
            infra,
            json!("kms:CreateGrant"),
            json!({
                "StringEquals": ctx(json!({KEY_GRANT_CONSTRAINT: "EncryptionContextSubset"})),
                "ForAllValues:StringEquals": {KEY_GRANT_OPERATIONS: "Decrypt"}
            }),
        ),
    ]
}

fn operator_statements(
    role: &str,
    region: &str,
    apps: &BTreeSet<String>,
) -> Vec<Map<String, Value>> {
    let p = OWNED_SID_PREFIX;
    let tag = group_tag(role, region);
    let principal = json!({"AWS": role});
    let via = via_service(region);
    let arns = values(apps);
    vec![
        statement(
            format!("{p}OperatorDescribeKey{tag}"),
            principal.clone(),
            json!("kms:DescribeKey"),
            json!({"StringEquals": {KEY_VIA_SERVICE: via}}),
        ),
        statement(
            format!("{p}OperatorUseKey{tag}"),
            principal.clone(),
            json!([
                "kms:Decrypt",
                "kms:GenerateDataKey",
                "kms:GenerateDataKeyWithoutPlaintext"
            ]),
            json!({"StringEquals": {KEY_ENCRYPTION_CONTEXT: arns, KEY_VIA_SERVICE: via}}),
        ),
        statement(
            format!("{p}OperatorCreateGrant{tag}"),
            principal,
            json!("kms:CreateGrant"),
            json!({
                "StringEquals": {
                    KEY_ENCRYPTION_CONTEXT: arns,
                    KEY_VIA_SERVICE: via,
                    KEY_GRANT_CONSTRAINT: "EncryptionContextSubset"
                },
                "ForAllValues:StringEquals": {KEY_GRANT_OPERATIONS: "Decrypt"}
            }),
        ),
    ]
}

/// Recovers the grants from the owned statements of a policy, even damaged ones: any
/// application ARN found under `aws:SourceArn` or the encryption-context key, and the operator
/// role named by an owned statement that carries an application's encryption context.
pub fn extract<'a>(owned: impl Iterator<Item = &'a Map<String, Value>>) -> GrantState {
    let mut state = GrantState::default();
    for raw in owned {
        let mut apps = BTreeSet::new();
        let mut context_apps = BTreeSet::new();
        if let Some(Value::Object(ops)) = raw.get("Condition") {
            for keys in ops.values() {
                let Value::Object(keys) = keys else { continue };
                for (key, vals) in keys {
                    let is_ctx = key.eq_ignore_ascii_case(KEY_ENCRYPTION_CONTEXT);
                    if !(is_ctx || key.eq_ignore_ascii_case(KEY_SOURCE_ARN)) {
                        continue;
                    }
                    for v in strings(vals) {
                        if Arn::parse_application(v).is_ok() {
                            apps.insert(v.to_string());
                            if is_ctx {
                                context_apps.insert(v.to_string());
                            }
                        }
                    }
                }
            }
        }
        let roles: Vec<&str> = match raw.get("Principal") {
            Some(Value::Object(p)) => p
                .get("AWS")
                .map(strings)
                .unwrap_or_default()
                .into_iter()
                .filter(|r| Arn::parse_role(r).is_ok())
                .collect(),
            _ => Vec::new(),
        };
        if let Some(role) = roles.iter().min() {
            for app in &context_apps {
                state.operators.insert(app.clone(), (*role).to_string());
            }
        }
        state.applications.extend(apps);
    }
    state
}

fn strings(v: &Value) -> Vec<&str> {
    match v {
        Value::String(s) => vec![s.as_str()],
        Value::Array(items) => items.iter().filter_map(Value::as_str).collect(),
        _ => Vec::new(),
    }
}
