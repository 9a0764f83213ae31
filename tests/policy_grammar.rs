//! Property: for random key policies built from a grammar of statements people really write
//! (default key policy, key administrators, org perimeters, service grants, deleted principals,
//! NotPrincipal, policy variables, fields in any order), merging applications and then removing
//! every one of them gives back the original statements byte for byte, and no statement the
//! controller does not own ever changes on the way.

use msf_cmk_controller::policy::PolicyDocument;
use msf_cmk_controller::policy::merge::{Grant, MergeError, merge};
use proptest::prelude::*;
use serde_json::{Map, Value, json};

const ROLES: [&str; 3] = [
    "arn:aws:iam::123456789012:role/Operator",
    "arn:aws:iam::123456789012:role/platform/msf-cmk-controller",
    "arn:aws:iam::123456789012:role/OtherTeamOperator",
];

fn principal() -> impl Strategy<Value = (&'static str, Value)> {
    prop_oneof![
        Just(("Principal", json!("*"))),
        Just(("Principal", json!({"AWS": "*"}))),
        Just((
            "Principal",
            json!({"AWS": "arn:aws:iam::123456789012:root"})
        )),
        Just(("Principal", json!({"AWS": "123456789012"}))),
        Just((
            "Principal",
            json!({"AWS": ["arn:aws:iam::123456789012:role/KeyAdmin", "arn:aws:iam::123456789012:user/alice"]})
        )),
        Just(("Principal", json!({"AWS": "AROAEXAMPLEDELETED01"}))),
        Just((
            "Principal",
            json!({"Service": "logs.us-east-1.amazonaws.com"})
        )),
        Just((
            "Principal",
            json!({"AWS": "arn:aws:iam::111122223333:root", "Service": ["a.amazonaws.com"]})
        )),
        Just((
            "NotPrincipal",
            json!({"AWS": ["123456789012", "arn:aws:iam::123456789012:role/KeyAdmin"]})
        )),
    ]
}

fn action() -> impl Strategy<Value = (&'static str, Value)> {
    prop_oneof![
        Just(("Action", json!("kms:*"))),
        Just(("Action", json!("kms:?*"))),
        Just((
            "Action",
            json!([
                "kms:Create*",
                "kms:Describe*",
                "kms:Enable*",
                "kms:List*",
                "kms:Put*"
            ])
        )),
        Just((
            "Action",
            json!(["kms:Decrypt", "kms:GenerateDataKey*", "kms:ReEncrypt*"])
        )),
        Just(("Action", json!("kms:DescribeKey"))),
        Just((
            "NotAction",
            json!(["kms:PutKeyPolicy", "kms:ScheduleKeyDeletion"])
        )),
    ]
}

fn condition() -> impl Strategy<Value = Option<Value>> {
    prop_oneof![
        Just(None),
        Just(Some(
            json!({"StringNotEqualsIfExists": {"aws:PrincipalOrgID": "o-abc123"}, "BoolIfExists": {"aws:PrincipalIsAWSService": "false"}})
        )),
        Just(Some(
            json!({"StringEquals": {"kms:ViaService": ["s3.us-east-1.amazonaws.com", "logs.us-east-1.amazonaws.com"]}})
        )),
        Just(Some(
            json!({"StringEquals": {"kms:CallerAccount": 123456789012u64}})
        )),
        Just(Some(
            json!({"IpAddress": {"aws:SourceIp": ["203.0.113.0/24", "2001:db8::/32"]}})
        )),
        Just(Some(
            json!({"ArnLike": {"aws:PrincipalArn": "arn:aws:iam::${aws:PrincipalAccount}:role/*"}})
        )),
        Just(Some(json!({"Bool": {"kms:GrantIsForAWSResource": true}}))),
        Just(Some(
            json!({"ForAnyValue:StringLike": {"kms:EncryptionContextKeys": ["aws:*", "team"]}})
        )),
        Just(Some(json!({"Null": {"aws:SourceVpc": "false"}}))),
    ]
}

prop_compose! {
    fn statement()(
        sid in prop::option::of("[A-Za-z0-9 ]{0,20}"),
        effect in prop_oneof![Just("Allow"), Just("Deny")],
        principal in principal(),
        action in action(),
        resource in prop_oneof![Just(json!("*")), Just(json!(["*"]))],
        condition in condition(),
        order in Just((0..6usize).collect::<Vec<_>>()).prop_shuffle(),
    ) -> Value {
        let mut fields: Vec<(String, Value)> = vec![
            ("Effect".into(), json!(effect)),
            (principal.0.into(), principal.1),
            (action.0.into(), action.1),
            ("Resource".into(), resource),
        ];
        if let Some(s) = sid {
            fields.push(("Sid".into(), json!(s)));
        }
        if let Some(c) = condition {
            fields.push(("Condition".into(), c));
        }
        let mut m = Map::new();
        for i in order.into_iter().filter(|i| *i < fields.len()) {
            m.insert(fields[i].0.clone(), fields[i].1.clone());
        }
        Value::Object(m)
    }
}

prop_compose! {
    fn policy()(
        statements in prop::collection::vec(statement(), 1..8),
        version in prop_oneof![Just(Some("2012-10-17")), Just(Some("2008-10-17")), Just(None)],
        id in prop::option::of(Just("key-default-1")),
    ) -> String {
        let mut top = Map::new();
        if let Some(id) = id {
            top.insert("Id".into(), json!(id));
        }
        top.insert("Statement".into(), Value::Array(statements));
        if let Some(v) = version {
            top.insert("Version".into(), json!(v));
        }
        Value::Object(top).to_string()
    }
}

/// Each statement of the document as it is written, in order.
fn statement_texts(doc: &PolicyDocument) -> Vec<String> {
    doc.statements()
        .iter()
        .map(|s| serde_json::to_string(s.raw()).unwrap())
        .collect()
}

fn unowned_texts(doc: &PolicyDocument) -> Vec<String> {
    doc.statements()
        .iter()
        .filter(|s| !s.is_owned())
        .map(|s| serde_json::to_string(s.raw()).unwrap())
        .collect()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(96))]

    #[test]
    fn merge_then_remove_gives_back_the_original(
        text in policy(),
        apps in prop::collection::btree_map("[A-Za-z0-9_.-]{1,20}", 0..ROLES.len(), 1..6),
        remove_first in prop::collection::vec(any::<bool>(), 6),
    ) {
        let base = PolicyDocument::parse(&text).unwrap();
        prop_assert!(base.owned_sids().is_empty());
        let grants: Vec<Grant> = apps.iter().map(|(name, r)| Grant {
            application_arn: format!("arn:aws:kinesisanalytics:us-east-1:123456789012:application/{name}"),
            operator_role_arn: ROLES[*r].to_string(),
        }).collect();
        let all: Vec<String> = grants.iter().map(|g| g.application_arn.clone()).collect();

        let merged = merge(&base, &grants, &[]).unwrap();
        prop_assert_eq!(unowned_texts(&merged), statement_texts(&base));
        prop_assert!(!merged.owned_sids().is_empty());
        prop_assert!(merged.unmergeable_sids().is_empty());

        // Remove some, then the rest: people's statements never move or change.
        let some: Vec<String> = all.iter().zip(&remove_first).filter(|(_, r)| **r).map(|(a, _)| a.clone()).collect();
        let partly = merge(&merged, &[], &some).unwrap();
        prop_assert_eq!(unowned_texts(&partly), statement_texts(&base));
        let back = merge(&partly, &[], &all).unwrap();
        prop_assert_eq!(statement_texts(&back), statement_texts(&base));
        prop_assert_eq!(back.to_compact_json(), base.to_compact_json());

        // The same through the text that is sent: parsing it back changes nothing.
        let reparsed = PolicyDocument::parse(&merged.to_compact_json()).unwrap();
        prop_assert_eq!(&reparsed, &merged);
        prop_assert_eq!(merged.owned_sids(), reparsed.owned_sids());
    }

    /// A person's statement under the controller's prefix is never changed and stops the write.
    #[test]
    fn a_prefixed_person_statement_stops_every_write(
        text in policy(),
        at in 0usize..8,
        name in "[A-Za-z0-9_.-]{1,20}",
    ) {
        let mut v: Value = serde_json::from_str(&text).unwrap();
        let statements = v["Statement"].as_array_mut().unwrap();
        let i = at % statements.len();
        statements[i]["Sid"] = json!(format!("MsfCmkOperatorUseKey-{i}"));
        let doc = PolicyDocument::parse(&v.to_string()).unwrap();
        let g = Grant {
            application_arn: format!("arn:aws:kinesisanalytics:us-east-1:123456789012:application/{name}"),
            operator_role_arn: ROLES[0].to_string(),
        };
        match merge(&doc, std::slice::from_ref(&g), &[]) {
            Err(MergeError::NotMergeable { sids }) => prop_assert_eq!(sids, vec![format!("MsfCmkOperatorUseKey-{i}")]),
            other => prop_assert!(false, "expected NotMergeable, got {:?}", other.map(|d| d.to_compact_json())),
        }
        let removal = merge(&doc, &[], &[g.application_arn]);
        prop_assert!(matches!(removal, Err(MergeError::NotMergeable { .. })), "removal was not refused");
    }
}
