//! The accounts file (`--accounts-config`): its committed JSON schema must be what the code
//! generates, and the example must parse.
//!
//! Regenerate after changing `controller::accounts`:
//!
//! ```sh
//! MSF_CMK_REGENERATE=1 cargo test --test accounts_schema_drift
//! ```

use std::path::PathBuf;

use msf_cmk_controller::controller::accounts::{AccountsConfig, schema_json};

fn repo(path: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(path)
}

#[test]
fn committed_schema_matches_generated() {
    let path = repo("deploy/accounts.schema.json");
    let generated = schema_json();
    if std::env::var_os("MSF_CMK_REGENERATE").is_some() {
        std::fs::write(&path, &generated).expect("write the schema");
    }
    let committed = std::fs::read_to_string(&path).expect("deploy/accounts.schema.json exists");
    assert_eq!(
        committed, generated,
        "deploy/accounts.schema.json drifted from the code; run: MSF_CMK_REGENERATE=1 cargo test --test accounts_schema_drift"
    );
}

#[test]
fn the_example_parses() {
    let text = std::fs::read_to_string(repo("deploy/examples/accounts.yaml")).expect("example");
    let cm: serde_json::Value = yaml_serde::from_str(&text).expect("YAML");
    assert_eq!(cm["kind"], "ConfigMap");
    let file = cm["data"]["accounts.yaml"]
        .as_str()
        .expect("data.accounts.yaml");
    let cfg = AccountsConfig::parse(file).expect("the example parses");
    assert_eq!(cfg.accounts.len(), 2);
    let a = cfg.entry_for("team-a-payments").expect("mapped");
    assert_eq!(a.account_id, "111111111111");
    assert!(a.key_admin_role_arn.is_some());
    assert!(cfg.entry_for("team-c").is_none());
}

#[test]
fn the_schema_refuses_what_the_parser_refuses() {
    // The schema is for editors and CI linting; spot-check that it is strict where the parser is.
    let schema: serde_json::Value = serde_json::from_str(&schema_json()).expect("JSON");
    let text = schema.to_string();
    assert!(text.contains("\"additionalProperties\":false"), "{text}");
    assert!(text.contains("accountId"), "{text}");
    assert!(text.contains(r"^\\d{12}$"), "{text}");
}
