//! IAM documents for a fleet of accounts (issue 11), PURE: per account, the operator role's
//! and (when separate) the key administrator role's permissions and trust policies, and the
//! controller's own (hub) role's permission to assume them.
//!
//! The operator's permissions are [`super::iam::operator_iam_policy`]'s, minus the key policy
//! calls when a key administrator makes them: the operator then cannot rewrite key policies.
//! Without explicit ARNs an account's resources are named by wildcard, per listed region (or
//! every region).

use std::collections::BTreeSet;

use serde_json::{Map, Value, json};

use super::iam::operator_iam_policy;
use super::requirements::{KEY_VIA_SERVICE, via_service};

/// One account of the accounts file, with the resources it acts on.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AccountRoles {
    pub account_id: String,
    pub partition: String,
    pub namespaces: Vec<String>,
    pub operator_role_arn: String,
    pub key_admin_role_arn: Option<String>,
    pub external_id: Option<String>,
    /// Empty: every region.
    pub regions: Vec<String>,
    /// Empty: every application of the account (in `regions`).
    pub application_arns: Vec<String>,
    /// Empty: every key of the account (in `regions`).
    pub key_arns: Vec<String>,
}

/// The whole output: `controllerRolePolicy` for the hub role, `accounts` one entry each.
pub fn fleet_documents(controller_role_arn: &str, accounts: &[AccountRoles]) -> Value {
    let assumable: BTreeSet<&str> = accounts
        .iter()
        .flat_map(|a| std::iter::once(&a.operator_role_arn).chain(&a.key_admin_role_arn))
        .map(String::as_str)
        .collect();
    json!({
        "controllerRoleArn": controller_role_arn,
        "controllerRolePolicy": {
            "Version": "2012-10-17",
            "Statement": [{
                "Sid": "AssumeAccountRoles",
                "Effect": "Allow",
                "Action": "sts:AssumeRole",
                "Resource": assumable.iter().collect::<Vec<_>>()
            }]
        },
        "accounts": accounts.iter().map(|a| account_documents(controller_role_arn, a)).collect::<Vec<_>>()
    })
}

fn account_documents(controller_role_arn: &str, a: &AccountRoles) -> Value {
    let (apps, keys) = resources(a);
    let mut operator = operator_iam_policy(&apps, &keys);
    fix_via_service(&mut operator, a);
    if a.key_admin_role_arn.is_some() {
        without_key_policy_calls(&mut operator);
    }
    let trust = trust_policy(controller_role_arn, a.external_id.as_deref());
    let mut out = json!({
        "accountId": a.account_id,
        "namespaces": a.namespaces,
        "operatorRole": {
            "arn": a.operator_role_arn,
            "trustPolicy": trust,
            "permissionsPolicy": operator,
        },
    });
    if let Some(admin) = &a.key_admin_role_arn {
        out["keyAdminRole"] = json!({
            "arn": admin,
            "trustPolicy": trust,
            "permissionsPolicy": {
                "Version": "2012-10-17",
                "Statement": [{
                    "Sid": "ManageMsfKeyPolicies",
                    "Effect": "Allow",
                    "Action": ["kms:GetKeyPolicy", "kms:PutKeyPolicy"],
                    "Resource": one_or_many(&keys)
                }]
            }
        });
    }
    out
}

/// Who may assume an account's roles: the controller's own role (IRSA or EKS Pod Identity),
/// with the external id when the accounts file sets one.
pub fn trust_policy(controller_role_arn: &str, external_id: Option<&str>) -> Value {
    let mut statement = json!({
        "Sid": "MsfCmkControllerAssumesThisRole",
        "Effect": "Allow",
        "Principal": {"AWS": controller_role_arn},
        "Action": "sts:AssumeRole"
    });
    if let Some(x) = external_id {
        statement["Condition"] = json!({"StringEquals": {"sts:ExternalId": x}});
    }
    json!({"Version": "2012-10-17", "Statement": [statement]})
}

/// The account's application and key ARNs: the given ones, else wildcards per region.
fn resources(a: &AccountRoles) -> (Vec<String>, Vec<String>) {
    let regions: Vec<&str> = if a.regions.is_empty() {
        vec!["*"]
    } else {
        a.regions.iter().map(String::as_str).collect()
    };
    let wild = |service: &str, resource: &str| -> Vec<String> {
        regions
            .iter()
            .map(|r| {
                format!(
                    "arn:{}:{service}:{r}:{}:{resource}",
                    a.partition, a.account_id
                )
            })
            .collect()
    };
    let apps = if a.application_arns.is_empty() {
        wild("kinesisanalytics", "application/*")
    } else {
        a.application_arns.clone()
    };
    let keys = if a.key_arns.is_empty() {
        wild("kms", "key/*")
    } else {
        a.key_arns.clone()
    };
    (apps, keys)
}

/// `operator_iam_policy` derives `kms:ViaService` from application ARNs, which it cannot do for
/// wildcard ones: name MSF's endpoint per region here, and compare with StringLike, because
/// the encryption context (the application ARN) is then a pattern too.
fn fix_via_service(policy: &mut Value, a: &AccountRoles) {
    if !a.application_arns.is_empty() {
        return;
    }
    let regions: Vec<&str> = if a.regions.is_empty() {
        vec!["*"]
    } else {
        a.regions.iter().map(String::as_str).collect()
    };
    let vias: Vec<String> = regions
        .iter()
        .map(|r| via_service(&a.partition, r))
        .collect();
    let vias = one_or_many(&vias);
    for s in statements_mut(policy) {
        let Some(cond) = s.get_mut("Condition").and_then(Value::as_object_mut) else {
            continue;
        };
        let Some(Value::Object(mut block)) = cond.remove("StringEquals") else {
            continue;
        };
        block.insert(KEY_VIA_SERVICE.to_string(), vias.clone());
        cond.insert("StringLike".into(), Value::Object(block));
    }
}

/// With a separate key administrator the operator reads keys but never their policies.
fn without_key_policy_calls(policy: &mut Value) {
    if let Some(list) = policy.get_mut("Statement").and_then(Value::as_array_mut) {
        list.retain(|s| s["Sid"] != "AllowEnforceKeyPolicy");
    }
    for s in statements_mut(policy) {
        if let Some(actions) = s.get_mut("Action").and_then(Value::as_array_mut) {
            actions.retain(|x| x != "kms:GetKeyPolicy" && x != "kms:PutKeyPolicy");
            if actions.len() == 1 {
                let only = actions[0].clone();
                s.insert("Action".into(), only);
            }
        }
    }
}

fn statements_mut(policy: &mut Value) -> impl Iterator<Item = &mut Map<String, Value>> {
    policy
        .get_mut("Statement")
        .and_then(Value::as_array_mut)
        .into_iter()
        .flatten()
        .filter_map(Value::as_object_mut)
}

fn one_or_many(items: &[String]) -> Value {
    match items {
        [one] => json!(one),
        _ => json!(items),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn account(key_admin: bool, regions: &[&str]) -> AccountRoles {
        AccountRoles {
            account_id: "111111111111".into(),
            partition: "aws".into(),
            namespaces: vec!["team-a".into()],
            operator_role_arn: "arn:aws:iam::111111111111:role/op".into(),
            key_admin_role_arn: key_admin.then(|| "arn:aws:iam::111111111111:role/ka".into()),
            external_id: Some("team-a".into()),
            regions: regions.iter().map(|r| r.to_string()).collect(),
            application_arns: vec![],
            key_arns: vec![],
        }
    }

    fn actions(policy: &Value) -> Vec<String> {
        policy["Statement"]
            .as_array()
            .unwrap()
            .iter()
            .flat_map(|s| match &s["Action"] {
                Value::String(a) => vec![a.clone()],
                Value::Array(v) => v.iter().map(|a| a.as_str().unwrap().to_string()).collect(),
                _ => vec![],
            })
            .collect()
    }

    #[test]
    fn key_admin_split_moves_the_policy_calls() {
        let hub = "arn:aws:iam::999999999999:role/msf-cmk-controller";
        let out = fleet_documents(hub, &[account(true, &["us-east-1"])]);
        let a = &out["accounts"][0];
        let op = actions(&a["operatorRole"]["permissionsPolicy"]);
        assert!(op.contains(&"kinesisanalytics:UpdateApplication".to_string()));
        assert!(op.contains(&"kms:DescribeKey".to_string()));
        assert!(!op.iter().any(|x| x.ends_with("KeyPolicy")), "{op:?}");
        let ka = actions(&a["keyAdminRole"]["permissionsPolicy"]);
        assert_eq!(ka, ["kms:GetKeyPolicy", "kms:PutKeyPolicy"]);
        let trust = &a["operatorRole"]["trustPolicy"]["Statement"][0];
        assert_eq!(trust["Principal"]["AWS"], hub);
        assert_eq!(
            trust["Condition"]["StringEquals"]["sts:ExternalId"],
            "team-a"
        );
        let text = a["operatorRole"]["permissionsPolicy"].to_string();
        assert!(
            text.contains("kinesisanalytics.us-east-1.amazonaws.com"),
            "{text}"
        );
        assert!(
            !text.contains("\"StringEquals\""),
            "patterns need StringLike: {text}"
        );
        assert!(
            text.contains("arn:aws:kms:us-east-1:111111111111:key/*"),
            "{text}"
        );
        let assumable = &out["controllerRolePolicy"]["Statement"][0]["Resource"];
        assert_eq!(assumable.as_array().unwrap().len(), 2);
    }

    #[test]
    fn without_a_key_admin_the_operator_writes_policies() {
        let out = fleet_documents("arn:aws:iam::9:role/c", &[account(false, &[])]);
        let a = &out["accounts"][0];
        assert!(a.get("keyAdminRole").is_none());
        let op = actions(&a["operatorRole"]["permissionsPolicy"]);
        assert!(op.contains(&"kms:PutKeyPolicy".to_string()));
        let text = a["operatorRole"]["permissionsPolicy"].to_string();
        assert!(text.contains("StringLike"), "{text}");
        assert!(text.contains("kinesisanalytics.*.amazonaws.com"), "{text}");
    }
}
