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
    KEY_SOURCE_ARN, KEY_VIA_SERVICE, msf_infrastructure_service, msf_service, via_service,
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
    // Service statements, per account (an account belongs to one partition).
    let mut by_account: BTreeMap<(String, String), BTreeSet<String>> = BTreeMap::new();
    for app in &state.applications {
        if let Ok(a) = Arn::parse_application(app) {
            by_account
                .entry((a.account, a.partition))
                .or_default()
                .insert(app.clone());
        }
    }
    for ((account, partition), apps) in &by_account {
        out.extend(service_statements(partition, account, apps));
    }
    // Operator statements, per (role, region).
    let mut by_operator: BTreeMap<(String, String, String), BTreeSet<String>> = BTreeMap::new();
    for (app, role) in &state.operators {
        if !state.applications.contains(app) {
            continue;
        }
        if let Ok(a) = Arn::parse_application(app) {
            by_operator
                .entry((role.clone(), a.region, a.partition))
                .or_default()
                .insert(app.clone());
        }
    }
    for ((role, region, partition), apps) in &by_operator {
        out.extend(operator_statements(role, partition, region, apps));
    }
    out
}

fn service_statements(
    partition: &str,
    account: &str,
    apps: &BTreeSet<String>,
) -> Vec<Map<String, Value>> {
    let p = OWNED_SID_PREFIX;
    let (msf_name, infra_name) = (
        msf_service(partition),
        msf_infrastructure_service(partition),
    );
    let both = json!({"Service": [msf_name, infra_name]});
    let msf = json!({"Service": msf_name});
    let infra = json!({"Service": infra_name});
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
    partition: &str,
    region: &str,
    apps: &BTreeSet<String>,
) -> Vec<Map<String, Value>> {
    let p = OWNED_SID_PREFIX;
    let tag = group_tag(role, region);
    let principal = json!({"AWS": role});
    let via = via_service(partition, region);
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

/// The grants a statement holds when it is exactly one the controller writes, `None` when it is
/// anything else (whatever its Sid). The statement is rebuilt from the values it holds (its
/// applications, its operator role and region) and must come out byte for byte: so a Deny, a
/// person's grant or an edited copy under an owned-looking Sid is never taken for ours, and
/// its values never flow into the statements the controller writes.
pub fn recognise(raw: &Map<String, Value>) -> Option<GrantState> {
    let sid = raw.get("Sid")?.as_str()?;
    let rest = sid.strip_prefix(OWNED_SID_PREFIX)?;
    let state = extract(std::iter::once(raw));
    let apps: Vec<Arn> = state
        .applications
        .iter()
        .filter_map(|a| Arn::parse_application(a).ok())
        .collect();
    let candidates = if rest.starts_with("Service") {
        let first = apps.first()?;
        let one_group = apps
            .iter()
            .all(|a| a.account == first.account && a.partition == first.partition);
        if !one_group || !rest.ends_with(&first.account) {
            return None;
        }
        service_statements(&first.partition, &first.account, &state.applications)
    } else if rest.starts_with("Operator") {
        let role = match raw.get("Principal") {
            Some(Value::Object(p)) => p.get("AWS")?.as_str()?,
            _ => return None,
        };
        let role_arn = Arn::parse_role(role).ok()?;
        let region = operator_region(raw)?;
        let one_group = apps
            .iter()
            .all(|a| a.region == region && a.partition == role_arn.partition);
        if !one_group {
            return None;
        }
        operator_statements(role, &role_arn.partition, &region, &state.applications)
    } else {
        return None;
    };
    let built = candidates
        .into_iter()
        .find(|c| c.get("Sid").and_then(Value::as_str) == Some(sid))?;
    let same = serde_json::to_string(&built).ok()? == serde_json::to_string(raw).ok()?;
    same.then_some(state)
}

/// The region in an operator statement's `kms:ViaService` (`kinesisanalytics.REGION.SUFFIX`).
fn operator_region(raw: &Map<String, Value>) -> Option<String> {
    let equals = raw.get("Condition")?.get("StringEquals")?;
    let via = equals.get(KEY_VIA_SERVICE)?.as_str()?;
    let rest = via.strip_prefix("kinesisanalytics.")?;
    rest.split('.').next().map(str::to_string)
}

/// Recovers the grants from owned statements: any application ARN found under
/// `aws:SourceArn` or the encryption-context key, and the operator role named by a statement
/// that carries an application's encryption context. Callers pass only statements that
/// [`recognise`] accepts.
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
