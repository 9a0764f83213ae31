//! Findings: over-permissive statements are reported, and do not make a policy non-compliant.

use msf_cmk_controller::policy::requirements::MsfRequirements;
use msf_cmk_controller::policy::{PolicyDocument, check, check_many};
use serde_json::{Value, json};

const APP: &str = "arn:aws:kinesisanalytics:us-east-1:123456789012:application/MyCmkApplication";
const OP: &str = "arn:aws:iam::123456789012:role/Operator";
const KEY: &str = "arn:aws:kms:us-east-1:123456789012:key/1234abcd-12ab-34cd-56ef-1234567890ab";

fn with(extra: Value) -> PolicyDocument {
    let mut p: Value = serde_json::from_str(
        &std::fs::read_to_string(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/fixtures/cmk-key-policy.json"
        ))
        .unwrap(),
    )
    .unwrap();
    p["Statement"].as_array_mut().unwrap().push(extra);
    PolicyDocument::parse(&p.to_string()).unwrap()
}

fn codes(doc: &PolicyDocument) -> Vec<(String, String)> {
    let r = check(
        doc,
        KEY,
        &MsfRequirements::for_application(APP, OP).unwrap(),
    );
    assert!(r.compliant, "findings never block");
    r.findings
        .into_iter()
        .map(|f| (f.code, f.statement))
        .collect()
}

fn one(code: &str, sid: &str) -> Vec<(String, String)> {
    vec![(code.to_string(), sid.to_string())]
}

#[test]
fn service_principal_without_source_condition() {
    let s = json!({"Sid": "Loose", "Effect": "Allow", "Principal": {"Service": "logs.amazonaws.com"}, "Action": "kms:Decrypt", "Resource": "*"});
    assert_eq!(
        codes(&with(s)),
        one("ServicePrincipalWithoutSourceCondition", "Loose")
    );
    let bound = json!({"Sid": "Bound", "Effect": "Allow", "Principal": {"Service": "logs.amazonaws.com"}, "Action": "kms:Decrypt", "Resource": "*",
        "Condition": {"ArnLike": {"aws:SourceArn": "arn:aws:logs:us-east-1:123456789012:*"}}});
    assert!(codes(&with(bound)).is_empty());
    let if_exists = json!({"Sid": "IfExists", "Effect": "Allow", "Principal": {"Service": "logs.amazonaws.com"}, "Action": "kms:Decrypt", "Resource": "*",
        "Condition": {"StringEqualsIfExists": {"aws:SourceAccount": "123456789012"}}});
    assert_eq!(
        codes(&with(if_exists)),
        one("ServicePrincipalWithoutSourceCondition", "IfExists")
    );
    let deny = json!({"Sid": "D", "Effect": "Deny", "Principal": {"Service": "logs.amazonaws.com"}, "Action": "kms:Decrypt", "Resource": "*"});
    assert!(
        codes(&with(deny)).is_empty(),
        "a Deny is never over-permissive"
    );
}

#[test]
fn principal_star_without_condition() {
    let s = json!({"Effect": "Allow", "Principal": {"AWS": "*"}, "Action": "kms:DescribeKey", "Resource": "*"});
    assert_eq!(codes(&with(s)), one("PrincipalStarWithoutCondition", "8"));
    let restricted = json!({"Sid": "R", "Effect": "Allow", "Principal": "*", "Action": "kms:DescribeKey", "Resource": "*",
        "Condition": {"StringEquals": {"kms:CallerAccount": "123456789012", "kms:ViaService": "x"}}});
    assert!(codes(&with(restricted)).is_empty());
    let via_only = json!({"Sid": "V", "Effect": "Allow", "Principal": "*", "Action": "kms:DescribeKey", "Resource": "*",
        "Condition": {"StringEquals": {"kms:ViaService": "x"}}});
    assert_eq!(
        codes(&with(via_only)),
        one("PrincipalStarWithoutCondition", "V")
    );
}

#[test]
fn kms_star_to_non_administrator() {
    let root = json!({"Sid": "Root", "Effect": "Allow", "Principal": {"AWS": "arn:aws:iam::123456789012:root"}, "Action": "kms:*", "Resource": "*"});
    assert!(
        codes(&with(root)).is_empty(),
        "the key account's root is the administrator"
    );
    let role = json!({"Sid": "Dev", "Effect": "Allow", "Principal": {"AWS": "arn:aws:iam::123456789012:role/Dev"}, "Action": "kms:*", "Resource": "*"});
    assert_eq!(codes(&with(role)), one("KmsStarToNonAdministrator", "Dev"));
    let other_account = json!({"Sid": "X", "Effect": "Allow", "Principal": {"AWS": "111111111111"}, "Action": ["*"], "Resource": "*"});
    assert_eq!(
        codes(&with(other_account)),
        one("KmsStarToNonAdministrator", "X")
    );
    let everyone = json!({"Sid": "E", "Effect": "Allow", "Principal": "*", "Action": "kms:*", "Resource": "*"});
    assert_eq!(
        codes(&with(everyone)),
        vec![
            ("PrincipalStarWithoutCondition".to_string(), "E".to_string()),
            ("KmsStarToNonAdministrator".to_string(), "E".to_string())
        ]
    );
}

#[test]
fn check_many_matches_check() {
    let doc = with(
        json!({"Sid": "Dev", "Effect": "Allow", "Principal": {"AWS": "arn:aws:iam::123456789012:role/Dev"}, "Action": "kms:*", "Resource": "*"}),
    );
    let reqs = vec![
        MsfRequirements::for_application(APP, OP).unwrap(),
        MsfRequirements::for_application(
            "arn:aws:kinesisanalytics:us-east-1:123456789012:application/Other",
            OP,
        )
        .unwrap(),
    ];
    let many = check_many(&doc, KEY, &reqs);
    assert_eq!(many.len(), 2);
    for (r, one) in reqs.iter().zip(&many) {
        assert_eq!(&check(&doc, KEY, r), one);
    }
    assert!(many[0].compliant);
    assert!(!many[1].compliant);
    assert_eq!(
        many[1].missing().count(),
        12 - 1,
        "only the operator's DescribeKey (ViaService) holds for another app"
    );
}
