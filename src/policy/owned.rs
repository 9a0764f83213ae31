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

use serde_json::{Map, Value};

use super::instance::InstanceName;
use super::requirements::{
    KEY_ENCRYPTION_CONTEXT, KEY_GRANT_CONSTRAINT, KEY_GRANT_OPERATIONS, KEY_SOURCE_ACCOUNT,
    KEY_SOURCE_ARN, KEY_VIA_SERVICE, msf_infrastructure_service, msf_service, via_service,
};
use super::sid::{self, OPERATOR_KINDS, SERVICE_KINDS};
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
    values_of(items.into_iter().map(String::as_str))
}

fn values_of<'a>(items: impl IntoIterator<Item = &'a str>) -> Value {
    let v: Vec<Value> = items
        .into_iter()
        .map(|s| Value::String(s.to_string()))
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

/// The owned statements of the default instance for `state`, in a fixed order.
pub fn build(state: &GrantState) -> Vec<Map<String, Value>> {
    build_for(state, &InstanceName::default())
}

/// The statements `instance` owns for `state`, in a fixed order (see [`sid`] for their Sids).
pub fn build_for(state: &GrantState, instance: &InstanceName) -> Vec<Map<String, Value>> {
    // Service groups, per account (an account belongs to one partition).
    let mut by_account: BTreeMap<(String, String), BTreeSet<String>> = BTreeMap::new();
    for app in &state.applications {
        if let Ok(a) = Arn::parse_application(app) {
            by_account
                .entry((a.account, a.partition))
                .or_default()
                .insert(app.clone());
        }
    }
    // Operator groups, per (role, region).
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
    let service_names = unique_names(
        by_account
            .keys()
            .map(|(account, partition)| (account.clone(), [partition.as_str(), account.as_str()])),
    );
    let operator_names = unique_names(
        by_operator
            .keys()
            .map(|(role, region, _)| (sid::role_name(role), [role.as_str(), region.as_str()])),
    );
    let mut out = Vec::new();
    for (((account, partition), apps), name) in by_account.iter().zip(&service_names) {
        let arns = values(apps);
        out.extend(SERVICE_KINDS.iter().map(|kind| {
            let id = sid::format(instance, kind, name);
            service_statement(id, kind, partition, account, &arns)
        }));
    }
    for (((role, region, partition), apps), name) in by_operator.iter().zip(&operator_names) {
        let arns = values(apps);
        out.extend(OPERATOR_KINDS.iter().map(|kind| {
            let id = sid::format(instance, kind, name);
            operator_statement(id, kind, role, partition, region, &arns)
        }));
    }
    out
}

/// The groups' readable names, each with its hash appended when another group has the same
/// name (and all of them hashed in the unlikely case a hashed name meets a plain one).
fn unique_names<'a>(groups: impl Iterator<Item = (String, [&'a str; 2])>) -> Vec<String> {
    let groups: Vec<(String, [&str; 2])> = groups.collect();
    let mut count: BTreeMap<&str, usize> = BTreeMap::new();
    for (name, _) in &groups {
        *count.entry(name.as_str()).or_default() += 1;
    }
    let names: Vec<String> = groups
        .iter()
        .map(|(name, parts)| match count[name.as_str()] {
            1 => name.clone(),
            _ => sid::with_hash(name, *parts),
        })
        .collect();
    let distinct: BTreeSet<&String> = names.iter().collect();
    if distinct.len() == names.len() {
        return names;
    }
    groups
        .iter()
        .map(|(name, parts)| sid::with_hash(name, *parts))
        .collect()
}

/// A JSON object with these entries, in this order.
fn object<const N: usize>(entries: [(&str, Value); N]) -> Value {
    let mut m = Map::with_capacity(N);
    for (k, v) in entries {
        m.insert(k.to_string(), v);
    }
    Value::Object(m)
}

fn text(s: &str) -> Value {
    Value::String(s.to_string())
}

/// One service statement (`kind` is one of [`SERVICE_KINDS`]); `arns` is [`values`] of the
/// group's applications.
fn service_statement(
    sid: String,
    kind: &str,
    partition: &str,
    account: &str,
    arns: &Value,
) -> Map<String, Value> {
    let msf = || object([("Service", Value::String(msf_service(partition)))]);
    let infra = || {
        object([(
            "Service",
            Value::String(msf_infrastructure_service(partition)),
        )])
    };
    let context = || (KEY_ENCRYPTION_CONTEXT, arns.clone());
    let source = || {
        [
            (KEY_SOURCE_ARN, arns.clone()),
            (KEY_SOURCE_ACCOUNT, text(account)),
        ]
    };
    let (principal, action, condition) = match kind {
        "ServiceDescribeKey" => (
            object([(
                "Service",
                Value::Array(vec![
                    Value::String(msf_service(partition)),
                    Value::String(msf_infrastructure_service(partition)),
                ]),
            )]),
            text("kms:DescribeKey"),
            object([("StringEquals", object(source()))]),
        ),
        "ServiceDurableGenerateDataKey" => {
            let [arn, acct] = source();
            (
                msf(),
                text("kms:GenerateDataKey"),
                object([("StringEquals", object([context(), arn, acct]))]),
            )
        }
        "ServiceDurableDecrypt" => (
            msf(),
            text("kms:Decrypt"),
            object([("StringEquals", object([context()]))]),
        ),
        "ServiceRunningState" => (
            infra(),
            Value::Array(vec![
                text("kms:Decrypt"),
                text("kms:GenerateDataKeyWithoutPlaintext"),
            ]),
            object([("StringEquals", object([context()]))]),
        ),
        _ => (
            infra(),
            text("kms:CreateGrant"),
            object([
                (
                    "StringEquals",
                    object([
                        context(),
                        (KEY_GRANT_CONSTRAINT, text("EncryptionContextSubset")),
                    ]),
                ),
                (
                    "ForAllValues:StringEquals",
                    object([(KEY_GRANT_OPERATIONS, text("Decrypt"))]),
                ),
            ]),
        ),
    };
    statement(sid, principal, action, condition)
}

/// One operator statement (`kind` is one of [`OPERATOR_KINDS`]); `arns` is [`values`] of the
/// group's applications.
fn operator_statement(
    sid: String,
    kind: &str,
    role: &str,
    partition: &str,
    region: &str,
    arns: &Value,
) -> Map<String, Value> {
    let principal = object([("AWS", text(role))]);
    let via = || {
        (
            KEY_VIA_SERVICE,
            Value::String(via_service(partition, region)),
        )
    };
    let (action, condition) = match kind {
        "OperatorDescribeKey" => (
            text("kms:DescribeKey"),
            object([("StringEquals", object([via()]))]),
        ),
        "OperatorUseKey" => (
            Value::Array(vec![
                text("kms:Decrypt"),
                text("kms:GenerateDataKey"),
                text("kms:GenerateDataKeyWithoutPlaintext"),
            ]),
            object([(
                "StringEquals",
                object([(KEY_ENCRYPTION_CONTEXT, arns.clone()), via()]),
            )]),
        ),
        _ => (
            text("kms:CreateGrant"),
            object([
                (
                    "StringEquals",
                    object([
                        (KEY_ENCRYPTION_CONTEXT, arns.clone()),
                        via(),
                        (KEY_GRANT_CONSTRAINT, text("EncryptionContextSubset")),
                    ]),
                ),
                (
                    "ForAllValues:StringEquals",
                    object([(KEY_GRANT_OPERATIONS, text("Decrypt"))]),
                ),
            ]),
        ),
    };
    statement(sid, principal, action, condition)
}

/// `(partition, region, account)` of an ARN that [`Arn::parse_application`] accepted: its
/// colon-separated parts as they stand (what `splitn(6, ':')` gives), without copying them.
fn arn_parts(arn: &str) -> (&str, &str, &str) {
    // Byte offsets of the first five colons (ASCII, so always character boundaries).
    let mut colons = [arn.len(); 5];
    let mut n = 0;
    for (i, b) in arn.bytes().enumerate() {
        if b == b':' {
            colons[n] = i;
            n += 1;
            if n == colons.len() {
                break;
            }
        }
    }
    let part = |k: usize| {
        let start = (colons[k - 1] + 1).min(arn.len());
        arn.get(start..colons[k].max(start)).unwrap_or_default()
    };
    (part(1), part(3), part(4))
}

/// The application list last found valid while recognising the statements of one document:
/// the statements of a group hold the same list, which is then parsed once.
#[derive(Debug, Default)]
pub struct KnownApplications(Vec<String>);

impl KnownApplications {
    /// Every ARN of `apps` is a valid application ARN.
    fn all_valid(&mut self, apps: &[&str]) -> bool {
        if self.0.len() == apps.len() && self.0.iter().zip(apps).all(|(a, b)| a == b) {
            return true;
        }
        if !apps.iter().all(|a| Arn::parse_application(a).is_ok()) {
            return false;
        }
        self.0 = apps.iter().map(|a| a.to_string()).collect();
        true
    }
}

/// Who owns a recognised statement.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Owner {
    pub instance: InstanceName,
    /// Under a Sid of the releases before readable Sids: replaced at the next write.
    pub legacy: bool,
}

/// Is this statement exactly one the controller writes (whatever its Sid otherwise), and for
/// which instance? The statement is rebuilt from the values it holds (its applications, its
/// operator role and region) and must come out byte for byte: so a Deny, a person's grant or
/// an edited copy under an owned-looking Sid is never taken for ours, and its values never
/// flow into the statements the controller writes ([`extract`] reads only recognised
/// statements).
///
/// The Sid names the instance and the kind of statement ([`sid::parse`]); its name part must
/// be one the group's values give (the readable name with or without its hash, or the legacy
/// tag). The applications are read from the first `aws:SourceArn` or encryption-context list
/// (as [`extract`] finds them). A generated statement holds the same sorted, duplicate-free
/// list of valid application ARNs under every such key, so a list that is not one cannot be
/// ours; otherwise only the statement the Sid names is rebuilt, and compared with
/// [`same_object`] (equal exactly when the two serialise to the same bytes).
pub fn recognise(raw: &Map<String, Value>, known: &mut KnownApplications) -> Option<Owner> {
    let id = raw.get("Sid").and_then(Value::as_str)?;
    let parsed = sid::parse(id)?;
    let apps = first_application_list(raw);
    // Sorted and without duplicates (as `values` writes a set), every one valid.
    let sorted = apps.windows(2).all(|w| w[0] < w[1]);
    if !sorted || !known.all_valid(&apps) {
        return None;
    }
    let parts: Vec<(&str, &str, &str)> = apps.iter().map(|a| arn_parts(a)).collect();
    let arns = || values_of(apps.iter().copied());
    let name_fits = |plain: &str, hash_parts: [&str; 2], legacy: &str| {
        if parsed.legacy {
            parsed.suffix == legacy
        } else {
            parsed.suffix == plain || parsed.suffix == sid::with_hash(plain, hash_parts)
        }
    };
    let built = if parsed.is_service() {
        let &(partition, _, account) = parts.first()?;
        let one_group = parts
            .iter()
            .all(|&(p, _, a)| a == account && p == partition);
        if !one_group || !name_fits(account, [partition, account], account) {
            return None;
        }
        service_statement(id.to_string(), parsed.kind, partition, account, &arns())
    } else {
        let role = match raw.get("Principal") {
            Some(Value::Object(p)) => p.get("AWS").and_then(Value::as_str),
            _ => None,
        }?;
        let role_arn = Arn::parse_role(role).ok()?;
        let region = operator_region(raw)?;
        let one_group = parts
            .iter()
            .all(|&(p, r, _)| r == region && p == role_arn.partition);
        let legacy_tag = || sid::legacy_operator_tag(role, &region);
        let fits = if parsed.legacy {
            parsed.suffix == legacy_tag()
        } else {
            name_fits(&sid::role_name(role), [role, &region], "")
        };
        if !one_group || !fits {
            return None;
        }
        operator_statement(
            id.to_string(),
            parsed.kind,
            role,
            &role_arn.partition,
            &region,
            &arns(),
        )
    };
    same_object(&built, raw).then(|| Owner {
        instance: parsed.instance.clone(),
        legacy: parsed.legacy,
    })
}

/// The string values of the first `aws:SourceArn` or encryption-context key of the statement's
/// condition (empty when it has none).
fn first_application_list(raw: &Map<String, Value>) -> Vec<&str> {
    let Some(Value::Object(ops)) = raw.get("Condition") else {
        return Vec::new();
    };
    for keys in ops.values() {
        let Value::Object(keys) = keys else { continue };
        for (key, vals) in keys {
            if key.eq_ignore_ascii_case(KEY_ENCRYPTION_CONTEXT)
                || key.eq_ignore_ascii_case(KEY_SOURCE_ARN)
            {
                return strings(vals);
            }
        }
    }
    Vec::new()
}

/// True exactly when `serde_json::to_string` gives the same text for both: same keys in the
/// same order, same values (strings and keys serialise one to one; numbers are compared by
/// their text).
fn same_text(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Null, Value::Null) => true,
        (Value::Bool(x), Value::Bool(y)) => x == y,
        (Value::Number(x), Value::Number(y)) => x.to_string() == y.to_string(),
        (Value::String(x), Value::String(y)) => x == y,
        (Value::Array(x), Value::Array(y)) => {
            x.len() == y.len() && x.iter().zip(y).all(|(a, b)| same_text(a, b))
        }
        (Value::Object(x), Value::Object(y)) => same_object(x, y),
        _ => false,
    }
}

fn same_object(a: &Map<String, Value>, b: &Map<String, Value>) -> bool {
    a.len() == b.len()
        && a.iter()
            .zip(b)
            .all(|((ka, va), (kb, vb))| ka == kb && same_text(va, vb))
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
                        // A value seen under the other key was already parsed.
                        if apps.contains(v) || Arn::parse_application(v).is_ok() {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn arn_parts_are_the_colon_separated_parts() {
        for arn in [
            "arn:aws:kinesisanalytics:us-east-1:123456789012:application/a:b",
            "arn:aws-cn:kinesisanalytics:cn-north-1:123456789012:application/x",
            "arn:aws:s3:::bucket",
        ] {
            let p: Vec<&str> = arn.splitn(6, ':').collect();
            assert_eq!(arn_parts(arn), (p[1], p[3], p[4]), "{arn}");
        }
    }
}
