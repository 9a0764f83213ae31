//! Policies for people to apply: the controller's least-privilege IAM policy, and the owned
//! key policy statements on their own (Audit mode: a key administrator adds them).

use std::collections::BTreeSet;

use serde_json::{Value, json};

use super::merge::Grant;
use super::owned::{GrantState, build};
use super::requirements::{
    KEY_ENCRYPTION_CONTEXT, KEY_GRANT_CONSTRAINT, KEY_GRANT_OPERATIONS, KEY_VIA_SERVICE,
    via_service,
};
use crate::arn::Arn;

fn one_or_many(items: &BTreeSet<String>) -> Value {
    match items.len() {
        1 => json!(items.iter().next()),
        _ => json!(items),
    }
}

/// What the controller's identity needs: read and update the named applications, read the
/// keys and (Enforce mode) their policies, and the KMS calls MSF makes with the operator's
/// credentials when switching an application (only via MSF, only with its applications'
/// encryption context). Drop `AllowEnforceKeyPolicy` for Audit-only deployments.
pub fn operator_iam_policy(application_arns: &[String], key_arns: &[String]) -> Value {
    let apps: BTreeSet<String> = application_arns.iter().cloned().collect();
    let keys: BTreeSet<String> = key_arns.iter().cloned().collect();
    let vias: BTreeSet<String> = application_arns
        .iter()
        .filter_map(|a| Arn::parse_application(a).ok())
        .map(|a| via_service(&a.partition, &a.region))
        .collect();
    let apps_v = one_or_many(&apps);
    let keys_v = one_or_many(&keys);
    let vias_v = one_or_many(&vias);
    json!({
        "Version": "2012-10-17",
        "Statement": [
            {
                "Sid": "ObserveAndSwitchApplications",
                "Effect": "Allow",
                // The operation history: an update MSF rolled back is followed, never repeated.
                "Action": [
                    "kinesisanalytics:DescribeApplication",
                    "kinesisanalytics:UpdateApplication",
                    "kinesisanalytics:ListApplicationOperations",
                    "kinesisanalytics:DescribeApplicationOperation"
                ],
                "Resource": apps_v
            },
            {
                // One ListApplications page of 50 tells whether many updates have ended, where
                // following each would cost a DescribeApplication per application and poll. IAM
                // has no resource type for it: it lists the whole account and region.
                "Sid": "FollowUpdatesInOneList",
                "Effect": "Allow",
                "Action": "kinesisanalytics:ListApplications",
                "Resource": "*"
            },
            {
                "Sid": "ObserveKeys",
                "Effect": "Allow",
                "Action": ["kms:DescribeKey", "kms:GetKeyPolicy"],
                "Resource": keys_v
            },
            {
                "Sid": "AllowEnforceKeyPolicy",
                "Effect": "Allow",
                "Action": "kms:PutKeyPolicy",
                "Resource": keys_v
            },
            {
                "Sid": "UseKeysViaMsfForApplicationState",
                "Effect": "Allow",
                "Action": ["kms:Decrypt", "kms:GenerateDataKey", "kms:GenerateDataKeyWithoutPlaintext"],
                "Resource": keys_v,
                "Condition": {"StringEquals": {KEY_VIA_SERVICE: vias_v, KEY_ENCRYPTION_CONTEXT: apps_v}}
            },
            {
                "Sid": "CreateGrantViaMsfForRunningState",
                "Effect": "Allow",
                "Action": "kms:CreateGrant",
                "Resource": keys_v,
                "Condition": {
                    "StringEquals": {
                        KEY_VIA_SERVICE: vias_v,
                        KEY_ENCRYPTION_CONTEXT: apps_v,
                        KEY_GRANT_CONSTRAINT: "EncryptionContextSubset"
                    },
                    "ForAllValues:StringEquals": {KEY_GRANT_OPERATIONS: "Decrypt"}
                }
            }
        ]
    })
}

/// The controller-owned key policy statements for `grants`, exactly as merge would write them.
pub fn key_policy_statements(grants: &[Grant]) -> Value {
    let mut state = GrantState::default();
    for g in grants {
        state.applications.insert(g.application_arn.clone());
        state
            .operators
            .insert(g.application_arn.clone(), g.operator_role_arn.clone());
    }
    statements_for(&state)
}

/// Service statements only, for applications whose operator is not known yet.
pub fn service_statements(application_arns: &[String]) -> Value {
    let state = GrantState {
        applications: application_arns.iter().cloned().collect(),
        operators: Default::default(),
    };
    statements_for(&state)
}

fn statements_for(state: &GrantState) -> Value {
    Value::Array(build(state).into_iter().map(Value::Object).collect())
}
