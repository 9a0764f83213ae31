//! `iam-policy --accounts-config`: per-account operator and key administrator policies, their
//! trust policies, and the controller role's AssumeRole policy, from the example accounts file.

use std::process::{Command, Output};

use serde_json::Value;

const HUB: &str = "arn:aws:iam::999999999999:role/msf-cmk-controller";

fn iam_policy(accounts_file: &str, extra: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_msf-cmk-controller"))
        .args(["iam-policy", "--accounts-config", accounts_file])
        .args(extra)
        .output()
        .expect("run the binary")
}

/// The accounts file inside deploy/examples/accounts.yaml (a ConfigMap), written out.
fn example_file(dir: &std::path::Path) -> String {
    let text = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/examples/accounts.yaml"),
    )
    .unwrap();
    let cm: Value = yaml_serde::from_str(&text).unwrap();
    let path = dir.join("accounts.yaml");
    std::fs::write(&path, cm["data"]["accounts.yaml"].as_str().unwrap()).unwrap();
    path.to_str().unwrap().to_string()
}

fn actions(policy: &Value) -> Vec<String> {
    let mut out = Vec::new();
    for s in policy["Statement"].as_array().unwrap() {
        match &s["Action"] {
            Value::String(a) => out.push(a.clone()),
            Value::Array(v) => out.extend(v.iter().map(|a| a.as_str().unwrap().to_string())),
            _ => {}
        }
    }
    out
}

#[test]
fn per_account_documents() {
    let dir = tempfile::tempdir().unwrap();
    let file = example_file(dir.path());
    let key = "arn:aws:kms:us-east-1:222222222222:key/1234abcd-12ab-34cd-56ef-1234567890ab";
    let o = iam_policy(&file, &["--controller-role-arn", HUB, "--key-arn", key]);
    assert_eq!(
        o.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    let v: Value = serde_json::from_slice(&o.stdout).unwrap();
    let assumable = v["controllerRolePolicy"]["Statement"][0]["Resource"].to_string();
    for role in [
        "arn:aws:iam::111111111111:role/msf-cmk-operator",
        "arn:aws:iam::111111111111:role/msf-cmk-key-admin",
        "arn:aws:iam::222222222222:role/msf-cmk-operator",
    ] {
        assert!(assumable.contains(role), "{assumable}");
    }
    let (a, b) = (&v["accounts"][0], &v["accounts"][1]);
    // Account A has a key administrator: the operator has no key policy call.
    let op_a = actions(&a["operatorRole"]["permissionsPolicy"]);
    assert!(!op_a.iter().any(|x| x.ends_with("KeyPolicy")), "{op_a:?}");
    assert_eq!(
        actions(&a["keyAdminRole"]["permissionsPolicy"]),
        ["kms:GetKeyPolicy", "kms:PutKeyPolicy"]
    );
    let trust = &a["keyAdminRole"]["trustPolicy"]["Statement"][0];
    assert_eq!(trust["Principal"]["AWS"], HUB);
    assert_eq!(
        trust["Condition"]["StringEquals"]["sts:ExternalId"],
        "team-a"
    );
    // Account B: the operator writes key policies, on the one key given for B.
    let op_b = &b["operatorRole"]["permissionsPolicy"];
    assert!(actions(op_b).contains(&"kms:PutKeyPolicy".to_string()));
    assert!(op_b.to_string().contains(key), "{op_b}");
    assert!(b.get("keyAdminRole").is_none());
    assert!(b["operatorRole"]["trustPolicy"]["Statement"][0]["Condition"].is_null());
}

#[test]
fn bad_input() {
    let dir = tempfile::tempdir().unwrap();
    let file = example_file(dir.path());
    // The hub role is required with an accounts file.
    assert_eq!(iam_policy(&file, &[]).status.code(), Some(2));
    // An ARN of an account the file does not map.
    let o = iam_policy(
        &file,
        &[
            "--controller-role-arn",
            HUB,
            "--key-arn",
            "arn:aws:kms:us-east-1:333333333333:key/k",
        ],
    );
    assert_eq!(o.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&o.stderr).contains("does not map"));
}
