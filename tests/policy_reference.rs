//! The AWS reference key policy grants every access MSF needs, and breaking any one of its
//! statements makes `policy check` (the binary) name exactly the accesses that are now missing.

use std::collections::BTreeSet;
use std::process::Command;

use msf_cmk_controller::policy::requirements::MsfRequirements;
use msf_cmk_controller::policy::{Decision, PolicyDocument, check};
use serde_json::Value;

const FIXTURE: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/tests/fixtures/cmk-key-policy.json"
);
const APP: &str = "arn:aws:kinesisanalytics:us-east-1:123456789012:application/MyCmkApplication";
const OTHER_APP: &str = "arn:aws:kinesisanalytics:us-east-1:123456789012:application/Other";
const OP: &str = "arn:aws:iam::123456789012:role/Operator";
const KEY: &str = "arn:aws:kms:us-east-1:123456789012:key/1234abcd-12ab-34cd-56ef-1234567890ab";
const OPERATOR: &str = "AWS:arn:aws:iam::123456789012:role/Operator";
const MSF: &str = "Service:kinesisanalytics.amazonaws.com";
const INFRA: &str = "Service:infrastructure.kinesisanalytics.amazonaws.com";

fn fixture() -> Value {
    serde_json::from_str(&std::fs::read_to_string(FIXTURE).unwrap()).unwrap()
}

/// Runs `policy check --output json` on `policy`; returns the exit code and the JSON.
fn run_check(policy: &Value) -> (i32, Value) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("policy.json");
    std::fs::write(&path, serde_json::to_string_pretty(policy).unwrap()).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_msf-cmk-controller"))
        .args(["policy", "check", "--policy"])
        .arg(&path)
        .args([
            "--application-arn",
            APP,
            "--operator-role-arn",
            OP,
            "--key-arn",
            KEY,
            "--output",
            "json",
        ])
        .output()
        .unwrap();
    let json = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&out.stderr)));
    (out.status.code().unwrap_or(-1), json)
}

/// (principal, action, decision, statements) of each access that is not allowed.
fn missing(report: &Value) -> BTreeSet<(String, String, String, Vec<String>)> {
    report["accesses"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|a| a["decision"] != "Allow")
        .map(|a| {
            (
                a["principal"].as_str().unwrap().to_string(),
                a["action"].as_str().unwrap().to_string(),
                a["decision"].as_str().unwrap().to_string(),
                serde_json::from_value(a["statements"].clone()).unwrap(),
            )
        })
        .collect()
}

/// What each reference statement grants, in statement order.
fn granted_by(index: usize) -> Vec<(&'static str, &'static str)> {
    match index {
        0 => vec![(OPERATOR, "kms:DescribeKey")],
        1 => vec![
            (OPERATOR, "kms:Decrypt"),
            (OPERATOR, "kms:GenerateDataKey"),
            (OPERATOR, "kms:GenerateDataKeyWithoutPlaintext"),
        ],
        2 => vec![(OPERATOR, "kms:CreateGrant")],
        3 => vec![(MSF, "kms:DescribeKey"), (INFRA, "kms:DescribeKey")],
        4 => vec![(MSF, "kms:GenerateDataKey")],
        5 => vec![(MSF, "kms:Decrypt")],
        6 => vec![
            (INFRA, "kms:Decrypt"),
            (INFRA, "kms:GenerateDataKeyWithoutPlaintext"),
        ],
        7 => vec![(INFRA, "kms:CreateGrant")],
        _ => unreachable!(),
    }
}

fn expect(
    index: usize,
    decision: &str,
    statements: &[&str],
) -> BTreeSet<(String, String, String, Vec<String>)> {
    granted_by(index)
        .into_iter()
        .map(|(p, a)| {
            (
                p.to_string(),
                a.to_string(),
                decision.to_string(),
                statements.iter().map(|s| s.to_string()).collect(),
            )
        })
        .collect()
}

#[test]
fn reference_policy_grants_every_required_access() {
    let doc = PolicyDocument::parse(&std::fs::read_to_string(FIXTURE).unwrap()).unwrap();
    let reqs = MsfRequirements::for_application(APP, OP).unwrap();
    let report = check(&doc, KEY, &reqs);
    assert!(
        report.compliant,
        "{:#?}",
        report.missing().collect::<Vec<_>>()
    );
    assert_eq!(report.accesses.len(), 12);
    assert!(report.owned_sids.is_empty());
    // The reference policy is also what the findings accept: its service statements are bound
    // by aws:SourceArn or by the application's encryption context.
    assert!(report.findings.is_empty(), "{:#?}", report.findings);
    let (code, json) = run_check(&fixture());
    assert_eq!(code, 0);
    assert_eq!(json["compliant"], true);
}

#[test]
fn deleting_any_statement_names_exactly_its_accesses() {
    for i in 0..8 {
        let mut p = fixture();
        p["Statement"].as_array_mut().unwrap().remove(i);
        let (code, json) = run_check(&p);
        assert_eq!(code, 1, "statement {i}");
        assert_eq!(json["compliant"], false);
        assert_eq!(
            missing(&json),
            expect(i, "ImplicitDeny", &[]),
            "deleting statement {i}"
        );
    }
}

/// Replaces every occurrence of `from` in the statement's conditions with `to`.
fn rewrite_condition(stmt: &mut Value, from: &str, to: &str) -> bool {
    let mut text = stmt["Condition"].to_string();
    let changed = text.contains(from);
    text = text.replace(from, to);
    stmt["Condition"] = serde_json::from_str(&text).unwrap();
    changed
}

#[test]
fn breaking_any_statement_names_exactly_its_accesses() {
    for i in 0..8 {
        // Point the statement at another application (or, with no application in it, at
        // another region's MSF endpoint).
        let mut p = fixture();
        let stmt = &mut p["Statement"][i];
        if !rewrite_condition(stmt, APP, OTHER_APP) {
            assert!(
                rewrite_condition(stmt, "us-east-1", "eu-west-1"),
                "statement {i}"
            );
        }
        let (code, json) = run_check(&p);
        assert_eq!(code, 1);
        assert_eq!(
            missing(&json),
            expect(i, "ImplicitDeny", &[]),
            "retargeting statement {i}"
        );

        // Loosened grant constraints break the CreateGrant statements.
        let mut p = fixture();
        if rewrite_condition(
            &mut p["Statement"][i],
            "EncryptionContextSubset",
            "EncryptionContextEquals",
        ) {
            let (_, json) = run_check(&p);
            assert_eq!(
                missing(&json),
                expect(i, "ImplicitDeny", &[]),
                "grant constraint of {i}"
            );
        }

        // The same statement as a Deny: now an explicit deny naming it.
        let mut p = fixture();
        p["Statement"][i]["Effect"] = Value::String("Deny".into());
        let sid = p["Statement"][i]["Sid"].as_str().unwrap().to_string();
        let (code, json) = run_check(&p);
        assert_eq!(code, 1);
        assert_eq!(
            missing(&json),
            expect(i, "ExplicitDeny", &[&sid]),
            "denying statement {i}"
        );
    }
}

#[test]
fn text_output_names_the_missing_access() {
    let mut p = fixture();
    p["Statement"].as_array_mut().unwrap().remove(7);
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("p.json");
    std::fs::write(&path, p.to_string()).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_msf-cmk-controller"))
        .args(["policy", "check", "--policy"])
        .arg(&path)
        .args(["--application-arn", APP, "--operator-role-arn", OP])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains(&format!("missing: {INFRA} kms:CreateGrant")),
        "{text}"
    );
    assert_eq!(text.matches("missing:").count(), 1, "{text}");
}

#[test]
fn a_human_deny_is_reported_not_overridden() {
    use msf_cmk_controller::policy::merge::{Grant, merge};
    let mut p = fixture();
    p["Statement"].as_array_mut().unwrap().push(serde_json::json!({
        "Sid": "NoGrantsEver", "Effect": "Deny", "Principal": "*", "Action": "kms:CreateGrant", "Resource": "*"
    }));
    let doc = PolicyDocument::parse(&p.to_string()).unwrap();
    let grant = Grant {
        application_arn: APP.into(),
        operator_role_arn: OP.into(),
    };
    let merged = merge(&doc, &[grant], &[]).unwrap();
    let report = check(
        &merged,
        KEY,
        &MsfRequirements::for_application(APP, OP).unwrap(),
    );
    assert!(!report.compliant);
    let denied: Vec<_> = report.missing().collect();
    assert_eq!(denied.len(), 2, "{denied:#?}");
    for a in denied {
        assert_eq!(a.action, "kms:CreateGrant");
        assert_eq!(a.decision, Decision::ExplicitDeny);
        assert_eq!(a.statements, vec!["NoGrantsEver"]);
    }
}
