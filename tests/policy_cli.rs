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
        serde_json::json!({"decision": "ImplicitDeny", "statements": [], "delegatedToIam": false, "dependsOn": []})
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
        serde_json::json!({"decision": "ExplicitDeny", "statements": ["NoDelete"], "delegatedToIam": false, "dependsOn": []})
    );
    // A role of the account, covered only by the root statement: the key policy alone does
    // not let it in, an identity policy could.
    let role = [
        "policy",
        "simulate",
        "--policy",
        p,
        "--principal",
        "AWS:arn:aws:iam::123456789012:role/Any",
        "--action",
        "kms:Decrypt",
    ];
    let out = run(&[&role[..], &["--output", "json"]].concat());
    assert_eq!(
        json_of(&out),
        serde_json::json!({"decision": "ImplicitDeny", "statements": [], "delegatedToIam": true, "dependsOn": []})
    );
    let text = String::from_utf8_lossy(&run(&role).stdout).to_string();
    assert!(text.starts_with("ImplicitDeny"), "{text}");
    assert!(text.contains("delegated to IAM: Root"), "{text}");
}

#[test]
fn simulate_context_wins_and_unknown_keys() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("p.json");
    std::fs::write(&p, r#"{"Version":"2012-10-17","Statement":[
        {"Sid":"Op","Effect":"Allow","Principal":{"AWS":"arn:aws:iam::123456789012:role/Operator"},"Action":"kms:Decrypt","Resource":"*"},
        {"Sid":"OnlyOp","Effect":"Deny","Principal":"*","Action":"kms:Decrypt","Resource":"*",
         "Condition":{"ArnNotEquals":{"aws:PrincipalArn":"arn:aws:iam::123456789012:role/Operator"}}},
        {"Sid":"Perimeter","Effect":"Deny","Principal":"*","Action":"kms:*","Resource":"*",
         "Condition":{"StringNotEqualsIfExists":{"aws:PrincipalOrgID":"o-abc123"},"BoolIfExists":{"aws:PrincipalIsAWSService":"false"}}}]}"#).unwrap();
    let p = p.to_str().unwrap();
    let sim = |extra: &[&str]| {
        let mut args = vec![
            "policy",
            "simulate",
            "--policy",
            p,
            "--principal",
            "AWS:arn:aws:iam::123456789012:role/Operator",
            "--action",
            "kms:Decrypt",
            "--output",
            "json",
        ];
        args.extend_from_slice(extra);
        json_of(&run(&args))
    };
    // aws:PrincipalArn comes from --principal; aws:PrincipalOrgID not given is absent, and
    // ...IfExists is true on an absent key: a caller outside any organisation is denied.
    let v = sim(&[]);
    assert_eq!(v["statements"], serde_json::json!(["Perimeter"]));
    assert_eq!(
        sim(&["--context", "aws:PrincipalOrgID=o-abc123"])["decision"],
        "Allow"
    );
    // --context always wins over the derived keys.
    let v = sim(&[
        "--context",
        "aws:PrincipalArn=arn:aws:iam::123456789012:role/Other",
        "--context",
        "aws:PrincipalOrgID=o-abc123",
    ]);
    assert_eq!(v["decision"], "ExplicitDeny");
    assert_eq!(v["statements"], serde_json::json!(["OnlyOp"]));
    let v = sim(&["--context", "aws:PrincipalOrgID=o-other"]);
    assert_eq!(v["statements"], serde_json::json!(["Perimeter"]));
    // A key declared unknown: the decision hinges on it.
    let v = sim(&["--unknown", "aws:PrincipalOrgID"]);
    assert_eq!(v["decision"], "Allow");
    assert_eq!(v["dependsOn"], serde_json::json!(["aws:principalorgid"]));
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
    for a in v["accesses"].as_array().unwrap() {
        assert_eq!(a["dependsOn"], serde_json::json!([]));
        assert_eq!(a["delegatedToIam"], false);
    }
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

/// The organisation perimeter AWS recommends is compliant: the operator's accesses depend on
/// aws:PrincipalOrgID (which the controller cannot know), reported with a stable code.
#[test]
fn check_reports_depends_on_and_finding_codes() {
    let mut p: Value = serde_json::from_str(&std::fs::read_to_string(FIXTURE).unwrap()).unwrap();
    p["Statement"]
        .as_array_mut()
        .unwrap()
        .push(serde_json::json!({
        "Sid": "Perimeter", "Effect": "Deny", "Principal": "*", "Action": "kms:*", "Resource": "*",
        "Condition": {"StringNotEqualsIfExists": {"aws:PrincipalOrgID": "o-abc123"},
                      "BoolIfExists": {"aws:PrincipalIsAWSService": "false"}}}));
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("p.json");
    std::fs::write(&path, p.to_string()).unwrap();
    let path = path.to_str().unwrap();
    let args = [
        "policy",
        "check",
        "--policy",
        path,
        "--application-arn",
        APP,
        "--operator-role-arn",
        OP,
    ];
    let out = run(&[&args[..], &["--output", "json"]].concat());
    assert_eq!(out.status.code(), Some(0));
    let v = json_of(&out);
    assert_eq!(v["compliant"], true);
    for a in v["accesses"].as_array().unwrap() {
        let want = if a["principal"].as_str().unwrap().starts_with("AWS:") {
            serde_json::json!(["aws:principalorgid"])
        } else {
            serde_json::json!([])
        };
        assert_eq!(a["dependsOn"], want, "{a}");
    }
    assert_eq!(
        v["findings"],
        serde_json::json!([{"code": "DenyDependsOnUnknownKey", "statement": "Perimeter",
            "message": v["findings"][0]["message"]}])
    );
    let text = String::from_utf8_lossy(&run(&args).stdout).to_string();
    assert!(
        text.contains("finding DenyDependsOnUnknownKey in statement Perimeter"),
        "{text}"
    );
}

/// A China-region application: the service principals and kms:ViaService of aws-cn.
#[test]
fn check_in_the_china_partition() {
    let app = "arn:aws-cn:kinesisanalytics:cn-north-1:123456789012:application/Orders";
    let op = "arn:aws-cn:iam::123456789012:role/Operator";
    let dir = tempfile::tempdir().unwrap();
    let base = dir.path().join("base.json");
    std::fs::write(&base, r#"{"Version":"2012-10-17","Statement":[{"Sid":"Root","Effect":"Allow","Principal":{"AWS":"arn:aws-cn:iam::123456789012:root"},"Action":"kms:*","Resource":"*"}]}"#).unwrap();
    let base = base.to_str().unwrap();
    let check = |policy: &str| {
        run(&[
            "policy",
            "check",
            "--policy",
            policy,
            "--application-arn",
            app,
            "--operator-role-arn",
            op,
            "--output",
            "json",
        ])
    };
    let before = check(base);
    assert_eq!(before.status.code(), Some(1));
    let missing: Vec<String> = json_of(&before)["accesses"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|a| a["decision"] != "Allow" && a["delegatedToIam"] != true)
        .map(|a| a["principal"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(missing.len(), 7);
    assert!(
        missing.iter().all(|p| p.ends_with(".amazonaws.com.cn")),
        "{missing:?}"
    );
    let merged = run(&[
        "policy",
        "merge",
        "--policy",
        base,
        "--application-arn",
        app,
        "--operator-role-arn",
        op,
    ]);
    assert_eq!(merged.status.code(), Some(0));
    let text = String::from_utf8_lossy(&merged.stdout).to_string();
    assert!(text.contains("kinesisanalytics.cn-north-1.amazonaws.com.cn"));
    let path = dir.path().join("merged.json");
    std::fs::write(&path, &merged.stdout).unwrap();
    let after = check(path.to_str().unwrap());
    assert_eq!(
        after.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&after.stdout)
    );
    assert!(json_of(&after)["findings"].as_array().unwrap().is_empty());
}

/// Refused like PutKeyPolicy would refuse them: exit 2, one line.
#[test]
fn strictly_parsed_policies_exit_2() {
    let dir = tempfile::tempdir().unwrap();
    let cases = [
        (
            r#"{"Statement":[{"Effect":"Allow","Principal":{"Service":"*"},"Action":"kms:*","Resource":"*"}]}"#,
            "service principal cannot be a wildcard",
        ),
        (
            r#"{"Statement":[{"Effect":"Deny","Principal":"*","Action":"kms:*","Resource":"*","Conditon":{}}]}"#,
            "Conditon: unknown statement element",
        ),
        (
            r#"{"Statement":[{"Effect":"Allow","Principal":"*","Action":"kms:*","Resource":"*","Resource":"x"}]}"#,
            r#"duplicate key "Resource""#,
        ),
    ];
    for (i, (policy, want)) in cases.iter().enumerate() {
        let path = dir.path().join(format!("p{i}.json"));
        std::fs::write(&path, policy).unwrap();
        let out = run(&[
            "policy",
            "check",
            "--policy",
            path.to_str().unwrap(),
            "--application-arn",
            APP,
            "--operator-role-arn",
            OP,
        ]);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{policy}: {err}");
        assert!(err.contains(want), "{policy}: {err}");
        assert_eq!(err.trim_end().lines().count(), 1, "{err}");
    }
}

/// `policy merge` prints what PutKeyPolicy would be sent (compact, escaped) unless --pretty,
/// and refuses when that would exceed 32,768 bytes.
#[test]
fn merge_prints_the_sent_form() {
    let compact = run(&[
        "policy",
        "merge",
        "--policy",
        FIXTURE,
        "--application-arn",
        APP2,
        "--operator-role-arn",
        OP,
    ]);
    assert_eq!(compact.status.code(), Some(0));
    let text = String::from_utf8(compact.stdout).unwrap();
    assert_eq!(text.trim_end().lines().count(), 1, "compact: one line");
    let pretty = run(&[
        "policy",
        "merge",
        "--policy",
        FIXTURE,
        "--application-arn",
        APP2,
        "--operator-role-arn",
        OP,
        "--pretty",
    ]);
    let pretty = String::from_utf8(pretty.stdout).unwrap();
    assert!(pretty.lines().count() > 100);
    let a: Value = serde_json::from_str(&text).unwrap();
    let b: Value = serde_json::from_str(&pretty).unwrap();
    assert_eq!(a, b);
    // A policy just under the limit: adding an application would cross it.
    let dir = tempfile::tempdir().unwrap();
    let big = dir.path().join("big.json");
    let filler = "x".repeat(31_000);
    std::fs::write(&big, format!(r#"{{"Version":"2012-10-17","Statement":[{{"Sid":"{filler}","Effect":"Allow","Principal":{{"AWS":"arn:aws:iam::123456789012:root"}},"Action":"kms:*","Resource":"*"}}]}}"#)).unwrap();
    let out = run(&[
        "policy",
        "merge",
        "--policy",
        big.to_str().unwrap(),
        "--application-arn",
        APP2,
        "--operator-role-arn",
        OP,
    ]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("over KMS's limit of 32768 bytes"));
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
    // Least privilege: no Resource "*", except for the one action IAM gives no resource type
    // (ListApplications), alone in its statement.
    for s in stmts.iter().filter(|s| s["Resource"] == "*") {
        assert_eq!(s["Action"], "kinesisanalytics:ListApplications", "{s}");
    }
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
