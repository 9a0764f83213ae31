//! Merge: properties (proptest) and the figures the README states (applications per key).

use std::collections::{BTreeMap, BTreeSet};

use msf_cmk_controller::policy::merge::{Grant, MergeError, granted, merge};
use msf_cmk_controller::policy::requirements::MsfRequirements;
use msf_cmk_controller::policy::{
    Decision, MAX_POLICY_BYTES, PolicyDocument, Principal, Request, check, evaluate,
};
use proptest::prelude::*;
use serde_json::{Value, json};

const ACCOUNT: &str = "123456789012";
const KEY: &str = "arn:aws:kms:us-east-1:123456789012:key/1234abcd-12ab-34cd-56ef-1234567890ab";
const ROLES: [&str; 3] = [
    "arn:aws:iam::123456789012:role/Operator",
    "arn:aws:iam::123456789012:role/platform/msf-cmk-controller",
    "arn:aws:iam::123456789012:role/OtherTeamOperator",
];
const ADMIN: &str = "arn:aws:iam::123456789012:role/KeyAdmin";

fn app(name: &str) -> String {
    format!("arn:aws:kinesisanalytics:us-east-1:{ACCOUNT}:application/{name}")
}

fn grant(name: &str, role: &str) -> Grant {
    Grant {
        application_arn: app(name),
        operator_role_arn: role.to_string(),
    }
}

/// Statements people write, in assorted forms (string vs list, unknown fields, no Sid).
fn human_statements() -> Vec<Value> {
    vec![
        json!({"Sid": "Enable IAM User Permissions", "Effect": "Allow",
               "Principal": {"AWS": "arn:aws:iam::123456789012:root"}, "Action": "kms:*", "Resource": "*"}),
        json!({"Sid": "AllowKeyAdministrators", "Effect": "Allow", "Principal": {"AWS": [ADMIN]},
               "Action": ["kms:Create*", "kms:Describe*", "kms:Enable*", "kms:List*", "kms:Put*", "kms:Update*",
                          "kms:Revoke*", "kms:Disable*", "kms:Get*", "kms:Delete*", "kms:ScheduleKeyDeletion",
                          "kms:CancelKeyDeletion"],
               "Resource": "*"}),
        json!({"Effect": "Allow", "Principal": {"AWS": "arn:aws:iam::123456789012:role/Analytics"},
               "Action": "kms:Decrypt", "Resource": ["*"],
               "Condition": {"StringEquals": {"kms:CallerAccount": 123456789012u64}}}),
        json!({"Sid": "DenyOutsideOrg", "Effect": "Deny", "Principal": "*", "Action": "kms:Encrypt", "Resource": "*",
               "Condition": {"StringNotEqualsIfExists": {"aws:PrincipalOrgID": "o-abc123"}, "Bool": {"aws:PrincipalIsAWSService": "false"}}}),
        json!({"Sid": "AllowAttachmentOfPersistentResources", "Effect": "Allow", "Principal": {"AWS": ADMIN},
               "Action": ["kms:CreateGrant", "kms:ListGrants", "kms:RevokeGrant"], "Resource": "*",
               "Condition": {"Bool": {"kms:GrantIsForAWSResource": true}}}),
    ]
}

fn base_doc(pick: &[bool]) -> PolicyDocument {
    let statements: Vec<Value> = human_statements()
        .into_iter()
        .zip(pick)
        .filter_map(|(s, keep)| keep.then_some(s))
        .collect();
    let mut top = serde_json::Map::new();
    top.insert("Version".into(), json!("2012-10-17"));
    top.insert("Id".into(), json!("key-default-1"));
    top.insert("Statement".into(), Value::Array(statements));
    PolicyDocument::parse(&Value::Object(top).to_string()).unwrap()
}

fn unowned(doc: &PolicyDocument) -> Vec<serde_json::Map<String, Value>> {
    doc.statements()
        .iter()
        .filter(|s| !s.is_owned())
        .map(|s| s.raw().clone())
        .collect()
}

fn compliant(doc: &PolicyDocument, g: &Grant) -> bool {
    let reqs = MsfRequirements::for_application(&g.application_arn, &g.operator_role_arn).unwrap();
    check(doc, KEY, &reqs).compliant
}

/// Every required access of every application, under every operator, as (request -> decision):
/// two documents with the same table mean the same thing for MSF.
fn semantics(doc: &PolicyDocument, names: &[String]) -> BTreeMap<String, Decision> {
    let mut out = BTreeMap::new();
    for name in names {
        for role in ROLES {
            let reqs = MsfRequirements::for_application(&app(name), role).unwrap();
            for a in &reqs.accesses {
                let req = Request {
                    principal: a.principal.clone(),
                    action: a.action.clone(),
                    resource: KEY.into(),
                    context: a.context.clone(),
                    unknown: a.unknown.clone(),
                };
                out.insert(
                    format!("{name}|{role}|{}|{}", a.principal, a.action),
                    evaluate(doc, &req).decision,
                );
            }
        }
    }
    out
}

fn arb_grants() -> impl Strategy<Value = Vec<(String, usize)>> {
    prop::collection::vec(("[A-Za-z0-9_.-]{1,24}", 0..ROLES.len()), 0..8)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    #[test]
    fn merge_properties(
        pick in prop::collection::vec(any::<bool>(), 5),
        first in arb_grants(),
        second in arb_grants(),
        remove_some in prop::collection::vec(any::<bool>(), 8),
    ) {
        let base = base_doc(&pick);
        let to_grants = |v: &[(String, usize)]| -> Vec<Grant> { v.iter().map(|(n, r)| grant(n, ROLES[*r])).collect() };
        let g1 = to_grants(&first);
        let g2 = to_grants(&second);

        // Two rounds, as a controller reconciling applications one after another would.
        let m1 = merge(&base, &g1, &[]).unwrap();
        let m2 = merge(&m1, &g2, &[]).unwrap();

        // Idempotent, and a no-op merge returns an equal document.
        prop_assert_eq!(&merge(&m2, &g2, &[]).unwrap(), &m2);
        prop_assert_eq!(&merge(&m2, &[], &[]).unwrap(), &m2);

        // Unowned statements: unchanged, same order.
        prop_assert_eq!(unowned(&m2), unowned(&base));

        // Every granted application is compliant with its (latest) operator.
        let mut latest: BTreeMap<String, Grant> = BTreeMap::new();
        for g in g1.iter().chain(&g2) {
            latest.insert(g.application_arn.clone(), g.clone());
        }
        for g in latest.values() {
            prop_assert!(compliant(&m2, g), "not compliant: {:?}\n{}", g, m2.to_pretty_json());
        }
        // An operator never gets another operator's application context (checked without the
        // root delegation, which by design lets every role of the account through).
        for g in latest.values().filter(|_| !pick[0]) {
            for role in ROLES.iter().filter(|r| **r != g.operator_role_arn) {
                let req = Request::new(Principal::Aws(role.to_string()), "kms:Decrypt", KEY)
                    .with_context("kms:ViaService", "kinesisanalytics.us-east-1.amazonaws.com")
                    .with_context("kms:EncryptionContext:aws:kinesisanalytics:arn", g.application_arn.clone());
                let still_own = latest.values().any(|o| o.operator_role_arn == *role && o.application_arn == g.application_arn);
                if !still_own {
                    prop_assert_ne!(evaluate(&m2, &req).decision, Decision::Allow);
                }
            }
        }

        // Removing some applications takes only their values out.
        let removed: Vec<String> = latest.keys().zip(&remove_some).filter(|(_, r)| **r).map(|(a, _)| a.clone()).collect();
        let m3 = merge(&m2, &[], &removed).unwrap();
        prop_assert_eq!(unowned(&m3), unowned(&base));
        for g in latest.values() {
            prop_assert_eq!(compliant(&m3, g), !removed.contains(&g.application_arn));
        }
        let left: BTreeSet<String> = granted(&m3).applications;
        let want: BTreeSet<String> = latest.keys().filter(|a| !removed.contains(a)).cloned().collect();
        prop_assert_eq!(left, want);

        // Adding then removing every application gives the original back.
        let all: Vec<String> = latest.keys().cloned().collect();
        let back = merge(&m2, &[], &all).unwrap();
        prop_assert_eq!(&back, &base);
        let names: Vec<String> = first.iter().chain(&second).map(|(n, _)| n.clone()).collect();
        prop_assert_eq!(semantics(&back, &names), semantics(&base, &names));
    }

    /// An edited copy of an owned statement is a person's statement: kept as it is, never
    /// adopted, and nothing is written until it is renamed.
    #[test]
    fn edited_owned_statements_are_not_mergeable(
        names in prop::collection::btree_set("[a-z0-9-]{1,12}", 1..5),
        victim in 0usize..8,
        damage in 0usize..4,
    ) {
        let grants: Vec<Grant> = names.iter().map(|n| grant(n, ROLES[0])).collect();
        let good = merge(&base_doc(&[true, true, false, false, false]), &grants, &[]).unwrap();
        let mut v: Value = serde_json::from_str(&good.to_compact_json()).unwrap();
        let owned: Vec<usize> = v["Statement"].as_array().unwrap().iter().enumerate()
            .filter(|(_, s)| s["Sid"].as_str().is_some_and(|s| s.starts_with("MsfCmk")))
            .map(|(i, _)| i).collect();
        let idx = owned[victim % owned.len()];
        let s = &mut v["Statement"][idx];
        match damage {
            0 => { s.as_object_mut().unwrap().remove("Condition"); }
            1 => { s["Action"] = json!("kms:*"); }
            2 => { s["Resource"] = json!("arn:aws:kms:eu-west-1:123456789012:key/other"); }
            _ => { s["Condition"]["StringLike"] = json!({"kms:ViaService": "*"}); }
        }
        let sid = v["Statement"][idx]["Sid"].as_str().unwrap().to_string();
        let damaged = PolicyDocument::parse(&v.to_string()).unwrap();
        prop_assert_ne!(&damaged, &good);
        prop_assert_eq!(damaged.unmergeable_sids(), vec![sid.clone()]);
        prop_assert!(!damaged.owned_sids().contains(&sid));
        match merge(&damaged, &grants, &[]) {
            Err(MergeError::NotMergeable { sids }) => prop_assert_eq!(sids, vec![sid.clone()]),
            other => prop_assert!(false, "expected NotMergeable, got {:?}", other.map(|d| d.to_compact_json())),
        }
        // Renamed, it is a person's statement like any other and the merge goes through,
        // keeping it byte for byte.
        v["Statement"][idx]["Sid"] = json!(format!("Edited{}", &sid[6..]));
        let renamed = PolicyDocument::parse(&v.to_string()).unwrap();
        let merged = merge(&renamed, &grants, &[]).unwrap();
        prop_assert_eq!(unowned(&merged), unowned(&renamed));
    }
}

#[test]
fn reference_policy_merge_keeps_it_and_adds_owned_statements() {
    let text = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/cmk-key-policy.json"
    ))
    .unwrap();
    let doc = PolicyDocument::parse(&text).unwrap();
    let g = grant("Second", ROLES[0]);
    let merged = merge(&doc, std::slice::from_ref(&g), &[]).unwrap();
    assert_eq!(unowned(&merged), unowned(&doc));
    assert!(compliant(&merged, &g));
    assert!(compliant(
        &merged,
        &grant(
            "MyCmkApplication",
            "arn:aws:iam::123456789012:role/Operator"
        )
    ));
    assert_eq!(merged.owned_sids().len(), 8);
    assert!(merged.owned_sids().iter().all(|s| s.starts_with("MsfCmk")));
}

#[test]
fn put_key_policy_is_never_taken_away() {
    // Unowned statements keep PutKeyPolicy for root and the key admin through any merge.
    let base = base_doc(&[true, true, true, true, true]);
    let can_put = |d: &PolicyDocument, who: &str| {
        evaluate(
            d,
            &Request::new(Principal::Aws(who.into()), "kms:PutKeyPolicy", KEY),
        )
        .decision
            == Decision::Allow
    };
    let grants: Vec<Grant> = (0..5)
        .map(|i| grant(&format!("app{i}"), ROLES[i % 3]))
        .collect();
    let merged = merge(&base, &grants, &[]).unwrap();
    let removed = merge(&merged, &[], &[app("app0"), app("app1")]).unwrap();
    let delegated = |d: &PolicyDocument, who: &str| {
        evaluate(
            d,
            &Request::new(Principal::Aws(who.into()), "kms:PutKeyPolicy", KEY),
        )
        .delegated_to_iam
    };
    for d in [&base, &merged, &removed] {
        assert!(can_put(d, ADMIN));
        assert!(can_put(d, ACCOUNT));
        // Any other role of the account: through the account's delegation to IAM.
        assert!(delegated(
            d,
            "arn:aws:iam::123456789012:role/AnyRoleOfTheAccount"
        ));
    }
    // Owned statements never grant it themselves.
    for role in ROLES {
        assert!(!can_put(
            &merge(&base_doc(&[false; 5]), &grants, &[]).unwrap(),
            role
        ));
    }

    // A person widened an owned statement to grant PutKeyPolicy to the only principal that
    // had it: it is no longer the controller's statement, so merge writes nothing.
    let mut v: Value = serde_json::from_str(
        &merge(&base_doc(&[false; 5]), &grants, &[])
            .unwrap()
            .to_compact_json(),
    )
    .unwrap();
    let s = &mut v["Statement"][0];
    s["Principal"] = json!({"AWS": ADMIN});
    s["Action"] = json!("kms:PutKeyPolicy");
    s.as_object_mut().unwrap().remove("Condition");
    let doc = PolicyDocument::parse(&v.to_string()).unwrap();
    match merge(&doc, &grants, &[]) {
        Err(MergeError::NotMergeable { sids }) => assert_eq!(sids.len(), 1),
        other => panic!("expected NotMergeable, got {other:?}"),
    }
}

#[test]
fn invalid_arns_are_rejected() {
    let base = base_doc(&[true; 5]);
    let bad_app = Grant {
        application_arn: "arn:aws:s3:::bucket".into(),
        operator_role_arn: ROLES[0].into(),
    };
    assert!(matches!(
        merge(&base, &[bad_app], &[]),
        Err(MergeError::InvalidArn(_))
    ));
    let bad_role = Grant {
        application_arn: app("a"),
        operator_role_arn: "arn:aws:iam::123456789012:user/bob".into(),
    };
    assert!(matches!(
        merge(&base, &[bad_role], &[]),
        Err(MergeError::InvalidArn(_))
    ));
    assert!(matches!(
        merge(&base, &[], &["nope".into()]),
        Err(MergeError::InvalidArn(_))
    ));
}

#[test]
fn a_new_operator_replaces_the_old_one() {
    let base = base_doc(&[false, true, true, true, true]);
    let m1 = merge(&base, &[grant("a", ROLES[0])], &[]).unwrap();
    let m2 = merge(&m1, &[grant("a", ROLES[1])], &[]).unwrap();
    assert!(compliant(&m2, &grant("a", ROLES[1])));
    assert!(!compliant(&m2, &grant("a", ROLES[0])));
}

/// A realistic application name length (MSF names in the wild: 15-30 characters).
fn capacity_name(i: usize) -> String {
    format!("orders-enrichment-{i:03}")
}

/// How many applications fit in one key under one operator, starting from the default key
/// policy (root delegation + key administrators), with merged value lists.
fn merged_capacity() -> usize {
    let mut doc = base_doc(&[true, true, false, false, false]);
    for i in 0.. {
        match merge(&doc, &[grant(&capacity_name(i), ROLES[0])], &[]) {
            Ok(next) => doc = next,
            Err(MergeError::TooLarge { bytes, limit }) => {
                assert!(bytes > limit && limit == MAX_POLICY_BYTES);
                assert!(doc.to_compact_json().len() <= MAX_POLICY_BYTES);
                return i;
            }
            Err(e) => panic!("{e}"),
        }
    }
    unreachable!()
}

/// The same with one copy of the AWS reference statements per application.
fn naive_capacity() -> usize {
    let reference: Value = serde_json::from_str(
        &std::fs::read_to_string(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/fixtures/cmk-key-policy.json"
        ))
        .unwrap(),
    )
    .unwrap();
    let base: Value =
        serde_json::from_str(&base_doc(&[true, true, false, false, false]).to_compact_json())
            .unwrap();
    let mut statements = base["Statement"].as_array().unwrap().clone();
    for i in 0.. {
        let block = reference["Statement"]
            .to_string()
            .replace("MyCmkApplication", &capacity_name(i))
            .replace("\"Sid\":\"Allow", &format!("\"Sid\":\"App{i}Allow"));
        let block: Vec<Value> = serde_json::from_str(&block).unwrap();
        statements.extend(block);
        let mut doc = base.clone();
        doc["Statement"] = Value::Array(statements.clone());
        if serde_json::to_string(&doc).unwrap().len() > MAX_POLICY_BYTES {
            return i;
        }
    }
    unreachable!()
}

#[test]
fn applications_per_key() {
    let merged = merged_capacity();
    let naive = naive_capacity();
    println!(
        "applications per key under one operator: merged {merged}, one block per application {naive}"
    );
    // The figures stated in BENCHMARKS.md / the report.
    assert_eq!(merged, 44);
    assert_eq!(naive, 9);
    assert!(merged >= 40);
}

#[test]
fn too_large_is_an_error_not_a_write() {
    let grants: Vec<Grant> = (0..200)
        .map(|i| grant(&capacity_name(i), ROLES[0]))
        .collect();
    match merge(&base_doc(&[true; 5]), &grants, &[]) {
        Err(e @ MergeError::TooLarge { .. }) => assert!(e.to_string().contains("32768")),
        other => panic!("expected TooLarge, got {other:?}"),
    }
}
