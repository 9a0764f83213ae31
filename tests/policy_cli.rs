//! The `policy` and `iam-policy` commands through the binary: flags, JSON shapes, exit codes.

use std::process::{Command, Output};

use serde_json::Value;

const FIXTURE: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/tests/fixtures/cmk-key-policy.json"
);
const APP: &str = "arn:aws:kinesisanalytics:us-east-1:123456789012:application/MyCmkApplication";
const APP2: &str = "arn:aws:kinesisanalytics:us-east-1:123456789012:application/Second";
const OP: &str = "arn:aws:iam::123456789012:role/Operator";
const KEY: &str = "arn:aws:kms:us-east-1:123456789012:key/1234abcd-12ab-34cd-56ef-1234567890ab";

fn run(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_msf-cmk-controller"))
        .args(args)
        .output()
        .unwrap()
}

fn json_of(out: &Output) -> Value {
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "{e}: stdout {} stderr {}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    })
}

fn grant_simulation(ops: &[&str]) -> Output {
    let mut args = vec![
        "policy",
        "simulate",
        "--policy",
        FIXTURE,
        "--principal",
        "Service:infrastructure.kinesisanalytics.amazonaws.com",
        "--action",
        "kms:CreateGrant",
        "--resource",
        KEY,
        "--context",
        "kms:EncryptionContext:aws:kinesisanalytics:arn=arn:aws:kinesisanalytics:us-east-1:123456789012:application/MyCmkApplication",
        "--context",
        "kms:GrantConstraintType=EncryptionContextSubset",
        "--output",
        "json",
    ];
    let ctx: Vec<String> = ops
        .iter()
        .map(|o| format!("kms:GrantOperations={o}"))
        .collect();
    for c in &ctx {
        args.push("--context");
        args.push(c);
    }
    run(&args)
}

#[test]
fn simulate_json_and_multi_valued_context() {
    let out = grant_simulation(&["Decrypt"]);
    assert_eq!(out.status.code(), Some(0));
    let v = json_of(&out);
    assert_eq!(v["decision"], "Allow");
    assert_eq!(
        v["statements"],
        serde_json::json!(["AllowMSFServiceToCreateGrantForRunningState"])
    );
    // Repeating a key makes it multi-valued: ForAllValues now fails on Encrypt.
    let out = grant_simulation(&["Decrypt", "Encrypt"]);
    assert_eq!(out.status.code(), Some(0), "exit 0 whenever it evaluated");
    assert_eq!(
        json_of(&out),
        serde_json::json!({"decision": "ImplicitDeny", "statements": []})
    );
    // No GrantOperations at all: ForAllValues is true on a missing key.
    assert_eq!(json_of(&grant_simulation(&[]))["decision"], "Allow");
}

#[test]
fn simulate_text_and_account_principal() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("p.json");
    std::fs::write(&p, r#"{"Version":"2012-10-17","Statement":[
        {"Sid":"Root","Effect":"Allow","Principal":{"AWS":"arn:aws:iam::123456789012:root"},"Action":"kms:*","Resource":"*"},
        {"Sid":"NoDelete","Effect":"Deny","Principal":"*","Action":"kms:ScheduleKeyDeletion","Resource":"*"}]}"#).unwrap();
    let p = p.to_str().unwrap();
    let out = run(&[
        "policy",
        "simulate",
        "--policy",
        p,
        "--principal",
        "AWS:123456789012",
        "--action",
        "kms:Decrypt",
    ]);
    assert_eq!(out.status.code(), Some(0));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.starts_with("Allow"), "{text}");
    assert!(text.contains("Root"), "{text}");
    let out = run(&[
        "policy",
        "simulate",
        "--policy",
        p,
        "--principal",
        "AWS:arn:aws:iam::123456789012:role/Any",
        "--action",
        "kms:ScheduleKeyDeletion",
        "--output",
        "json",
    ]);
    assert_eq!(
        json_of(&out),
        serde_json::json!({"decision": "ExplicitDeny", "statements": ["NoDelete"]})
    );
}

#[test]
fn bad_input_is_one_line_and_exit_2() {
    let dir = tempfile::tempdir().unwrap();
    let malformed = dir.path().join("bad.json");
    std::fs::write(&malformed, "{\"Statement\": [ {\"Effect\": \"Allow\"").unwrap();
    let malformed = malformed.to_str().unwrap();
    let cases: Vec<(Vec<&str>, &str)> = vec![
        (
            vec![
                "policy",
                "simulate",
                "--policy",
                "/does/not/exist.json",
                "--principal",
                "AWS:123456789012",
                "--action",
                "kms:Decrypt",
            ],
            "cannot read policy file",
        ),
        (
            vec![
                "policy",
                "simulate",
                "--policy",
                malformed,
                "--principal",
                "AWS:123456789012",
                "--action",
                "kms:Decrypt",
            ],
            "not valid JSON",
        ),
        (
            vec![
                "policy",
                "simulate",
                "--policy",
                FIXTURE,
                "--principal",
                "Role:x",
                "--action",
                "kms:Decrypt",
            ],
            "expected AWS:<arn-or-account> or Service:<name>",
        ),
        (
            vec![
                "policy",
                "simulate",
                "--policy",
                FIXTURE,
                "--principal",
                "AWS:12345",
                "--action",
                "kms:Decrypt",
            ],
            "12-digit account id or an ARN",
        ),
        (
            vec![
                "policy",
                "simulate",
                "--policy",
                FIXTURE,
                "--principal",
                "AWS:123456789012",
                "--action",
                "kms:Decrypt",
                "--context",
                "novalue",
            ],
            "KEY=VALUE",
        ),
        (
            vec![
                "policy",
                "check",
                "--policy",
                FIXTURE,
                "--application-arn",
                "arn:aws:s3:::b",
                "--operator-role-arn",
                OP,
            ],
            "invalid ARN",
        ),
        (
            vec![
                "policy",
                "check",
                "--policy",
                FIXTURE,
                "--application-arn",
                APP,
                "--operator-role-arn",
                "Operator",
            ],
            "invalid ARN",
        ),
        (
            vec![
                "policy",
                "check",
                "--policy",
                malformed,
                "--application-arn",
                APP,
                "--operator-role-arn",
                OP,
            ],
            "not valid JSON",
        ),
        (
            vec![
                "policy",
                "merge",
                "--policy",
                FIXTURE,
                "--application-arn",
                "arn:nope",
                "--operator-role-arn",
                OP,
            ],
            "invalid ARN",
        ),
        (
            vec![
                "policy",
                "merge",
                "--policy",
                FIXTURE,
                "--application-arn",
                APP,
            ],
            "--operator-role-arn",
        ),
        (
            vec![
                "iam-policy",
                "--application-arn",
                APP,
                "--key-arn",
                "alias/x",
            ],
            "invalid ARN",
        ),
        (
            vec![
                "iam-policy",
                "--application-arn",
                APP,
                "--key-arn",
                KEY,
                "--operator-role-arn",
                "arn:aws:iam::123456789012:user/u",
            ],
            "role/NAME",
        ),
    ];
    for (args, want) in cases {
        let out = run(&args);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {err}");
        assert!(err.contains(want), "{args:?}: {err}");
        assert_eq!(err.trim_end().lines().count(), 1, "{args:?}: {err}");
    }
}

#[test]
fn check_exit_codes() {
    let ok = run(&[
        "policy",
        "check",
        "--policy",
        FIXTURE,
        "--application-arn",
        APP,
        "--operator-role-arn",
        OP,
        "--output",
        "json",
    ]);
    assert_eq!(ok.status.code(), Some(0));
    let v = json_of(&ok);
    assert_eq!(v["compliant"], true);
    assert_eq!(v["accesses"].as_array().unwrap().len(), 12);
    assert!(v["findings"].as_array().unwrap().is_empty());
    let other = run(&[
        "policy",
        "check",
        "--policy",
        FIXTURE,
        "--application-arn",
        APP2,
        "--operator-role-arn",
        OP,
        "--output",
        "json",
    ]);
    assert_eq!(other.status.code(), Some(1));
    assert_eq!(json_of(&other)["compliant"], false);
}

#[test]
fn merge_then_check_then_remove() {
    let dir = tempfile::tempdir().unwrap();
    let merged = run(&[
        "policy",
        "merge",
        "--policy",
        FIXTURE,
        "--application-arn",
        APP2,
        "--application-arn",
        APP,
        "--operator-role-arn",
        OP,
    ]);
    assert_eq!(
        merged.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&merged.stderr)
    );
    let path = dir.path().join("merged.json");
    std::fs::write(&path, &merged.stdout).unwrap();
    let path = path.to_str().unwrap();
    for app in [APP, APP2] {
        let out = run(&[
            "policy",
            "check",
            "--policy",
            path,
            "--application-arn",
            app,
            "--operator-role-arn",
            OP,
        ]);
        assert_eq!(
            out.status.code(),
            Some(0),
            "{app}: {}",
            String::from_utf8_lossy(&out.stdout)
        );
    }
    let removed = run(&[
        "policy",
        "merge",
        "--policy",
        path,
        "--remove-application-arn",
        APP2,
    ]);
    assert_eq!(removed.status.code(), Some(0));
    let path2 = dir.path().join("removed.json");
    std::fs::write(&path2, &removed.stdout).unwrap();
    let out = run(&[
        "policy",
        "check",
        "--policy",
        path2.to_str().unwrap(),
        "--application-arn",
        APP2,
        "--operator-role-arn",
        OP,
    ]);
    assert_eq!(out.status.code(), Some(1));
}

#[test]
fn iam_policy_output() {
    let out = run(&[
        "iam-policy",
        "--application-arn",
        APP,
        "--application-arn",
        APP2,
        "--key-arn",
        KEY,
        "--operator-role-arn",
        OP,
    ]);
    assert_eq!(out.status.code(), Some(0));
    let v = json_of(&out);
    let stmts = v["operatorIamPolicy"]["Statement"].as_array().unwrap();
    assert!(
        stmts.iter().all(|s| s["Resource"] != "*"),
        "least privilege: no Resource *"
    );
    let key_stmts = v["keyPolicyStatements"].as_array().unwrap();
    assert_eq!(key_stmts.len(), 8);
    // The statements alone make a compliant policy for both applications.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("p.json");
    std::fs::write(
        &path,
        serde_json::json!({"Version": "2012-10-17", "Statement": key_stmts}).to_string(),
    )
    .unwrap();
    for app in [APP, APP2] {
        let out = run(&[
            "policy",
            "check",
            "--policy",
            path.to_str().unwrap(),
            "--application-arn",
            app,
            "--operator-role-arn",
            OP,
        ]);
        assert_eq!(
            out.status.code(),
            Some(0),
            "{}",
            String::from_utf8_lossy(&out.stdout)
        );
    }
    let no_role = json_of(&run(&[
        "iam-policy",
        "--application-arn",
        APP,
        "--key-arn",
        KEY,
    ]));
    assert_eq!(
        no_role["keyPolicyStatements"].as_array().unwrap().len(),
        5,
        "service statements only"
    );
}

/// `iam-policy | head -1` must end quietly, not panic, when the reader goes away.
#[test]
fn a_closed_stdout_ends_quietly() {
    use std::io::{BufRead, BufReader};
    use std::process::{Command, Stdio};
    // Far more output than a pipe buffers (64 KiB), so the writer meets the closed pipe.
    let mut args = vec![
        "iam-policy".to_string(),
        "--key-arn".to_string(),
        "arn:aws:kms:us-east-1:123456789012:key/1234abcd-12ab-34cd-56ef-1234567890ab".to_string(),
    ];
    for i in 0..2000 {
        args.push("--application-arn".to_string());
        args.push(format!(
            "arn:aws:kinesisanalytics:us-east-1:123456789012:application/app-{i:05}"
        ));
    }
    let mut child = Command::new(env!("CARGO_BIN_EXE_msf-cmk-controller"))
        .args(&args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut first = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut first)
        .unwrap();
    // The reader is dropped here, as `head -1` would exit.
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert_eq!(first.trim(), "{");
}
