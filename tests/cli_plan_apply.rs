//! `plan`, `apply` and `demo` through the binary, against the embedded emulator: output and
//! the documented exit codes (plan: 0 nothing to do, 3 changes pending, 1 blocked, 2 bad input;
//! apply: 0 all converged, 1 some not, 2 bad input).

use std::path::Path;
use std::process::{Command, Output};
use std::time::Duration;

use msf_cmk_controller::domain::{ApplicationStatus, AppliedKeyType};
use msf_cmk_controller::emulator::{Emulator, EmulatorConfig, EmulatorHandle, Fault};

const REGION: &str = "us-east-1";

fn bin(args: &[&str], endpoint: &str) -> Output {
    Command::new(env!("CARGO_BIN_EXE_msf-cmk-controller"))
        .args(args)
        .args([
            "--aws-endpoint-url",
            endpoint,
            "--region",
            REGION,
            "--operator-role-arn",
            // The identity the emulator answers as (sts:GetCallerIdentity): key policies must
            // name the caller, or the resource reports OperatorMismatch.
            "arn:aws:iam::123456789012:role/msf-cmk-operator",
        ])
        .env_remove("AWS_ACCESS_KEY_ID")
        .env_remove("AWS_PROFILE")
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .output()
        .expect("run the binary")
}

fn text(o: &Output) -> String {
    format!(
        "stdout:\n{}\nstderr:\n{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

async fn emulator() -> EmulatorHandle {
    Emulator::start(EmulatorConfig {
        update_delay: Duration::from_millis(50),
        ..EmulatorConfig::default()
    })
    .await
    .unwrap()
}

fn write_manifests(dir: &Path, key: &str, names: &[&str]) {
    let docs: Vec<String> = names
        .iter()
        .map(|n| {
            format!(
                "apiVersion: msfcmk.dev/v1alpha1\nkind: ApplicationEncryption\nmetadata:\n  name: {n}\n  namespace: team\nspec:\n  applicationName: {n}\n  keyType: CustomerManagedKey\n  keyId: {key}\n"
            )
        })
        .collect();
    let other = "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: unrelated\n";
    std::fs::write(
        dir.join("appenc.yaml"),
        format!("{}---\n{other}", docs.join("---\n")),
    )
    .unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn plan_then_apply_then_plan_again() {
    let emu = emulator().await;
    for n in ["a1", "a2", "a3"] {
        emu.create_application(REGION, n, "FLINK-1_20", ApplicationStatus::Running)
            .unwrap();
    }
    let key = emu.create_key(REGION, None).unwrap();
    let dir = tempfile::tempdir().unwrap();
    write_manifests(dir.path(), &key, &["a1", "a2", "a3"]);
    let path = dir.path().to_str().unwrap();
    let ep = emu.endpoint();

    // plan: readable, names the key write once and the exact payloads; exit 3.
    let o = bin(&["plan", "-f", path], &ep);
    assert_eq!(o.status.code(), Some(3), "{}", text(&o));
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(out.contains("Key policy writes (1)"), "{out}");
    assert!(out.contains("Application updates (3)"), "{out}");
    assert!(
        out.contains("\"KeyTypeUpdate\": \"CUSTOMER_MANAGED_KEY\""),
        "{out}"
    );
    assert_eq!(
        emu.call_count("PutKeyPolicy") + emu.call_count("UpdateApplication"),
        0
    );

    // --output json for machines.
    let o = bin(&["plan", "-f", path, "--output", "json"], &ep);
    assert_eq!(o.status.code(), Some(3));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).expect("json");
    assert_eq!(v["summary"]["keyPolicyWrites"], 1);
    assert_eq!(v["summary"]["applicationUpdates"], 3);
    assert_eq!(v["resources"].as_array().unwrap().len(), 3);
    let step = &v["resources"][0]["steps"];
    assert!(
        step.as_array()
            .unwrap()
            .iter()
            .any(|s| s["request"]["ApplicationConfigurationUpdate"].is_object()),
        "{step}"
    );

    // apply converges: one policy write for the three, one update each; exit 0. It waits for
    // the written policy to settle and for MSF to finish each update by itself.
    let o = bin(
        &[
            "apply",
            "-f",
            path,
            "--poll-interval",
            "100ms",
            "--policy-settle",
            "1s",
        ],
        &ep,
    );
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    assert_eq!(emu.call_count("PutKeyPolicy"), 1);
    assert_eq!(emu.call_count("UpdateApplication"), 3);
    assert!(
        String::from_utf8_lossy(&o.stdout).contains("3/3 converged"),
        "{}",
        text(&o)
    );
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("[3/3]"),
        "progress: {}",
        text(&o)
    );
    for n in ["a1", "a2", "a3"] {
        assert_eq!(
            emu.application(REGION, n).unwrap().encryption.key_type,
            AppliedKeyType::CustomerManagedKey
        );
    }

    // Nothing left to do: exit 0, reads only.
    emu.reset_counts();
    let o = bin(&["plan", "-f", path], &ep);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    assert_eq!(
        emu.call_count("PutKeyPolicy") + emu.call_count("UpdateApplication"),
        0
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn blocked_resources_and_bad_input() {
    let emu = emulator().await;
    let key = emu.create_key(REGION, None).unwrap();
    let dir = tempfile::tempdir().unwrap();
    // The application does not exist: blocked.
    write_manifests(dir.path(), &key, &["missing"]);
    let path = dir.path().to_str().unwrap();
    let ep = emu.endpoint();
    let o = bin(&["plan", "-f", path], &ep);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    let o = bin(&["apply", "-f", path, "--output", "json"], &ep);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).expect("json");
    assert_eq!(v["resources"][0]["reason"], "ApplicationNotFound");

    // Bad input: exit 2 with a one-line error naming the file.
    let bad = dir.path().join("bad.yaml");
    std::fs::write(
        &bad,
        "apiVersion: msfcmk.dev/v1alpha1\nkind: ApplicationEncryption\nmetadata: {name: x}\nspec: {applicationName: x, keyType: CustomerManagedKey}\n",
    )
    .unwrap();
    let o = bin(&["plan", "-f", bad.to_str().unwrap()], &ep);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("bad.yaml#0") && err.contains("keyId is required"),
        "{err}"
    );
    let o = bin(&["apply", "-f", "/nonexistent/path"], &ep);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    let empty = tempfile::tempdir().unwrap();
    let o = bin(&["plan", "-f", empty.path().to_str().unwrap()], &ep);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
}

#[test]
fn demo_runs_on_a_fresh_machine() {
    let dir = tempfile::tempdir().unwrap();
    let o = Command::new(env!("CARGO_BIN_EXE_msf-cmk-controller"))
        .args(["demo", "--dir", dir.path().to_str().unwrap()])
        .env_remove("AWS_ACCESS_KEY_ID")
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let out = String::from_utf8_lossy(&o.stdout);
    for needle in [
        "Key policy writes (1)",
        "4/5 converged",
        "Final key policy",
        "kinesisanalytics.amazonaws.com",
        // The calls apply made, as the emulator counted them (one source).
        "PutKeyPolicy=1,",
        "UpdateApplication=4",
        // The application whose update the emulator rolls back: reported, not retried.
        "Ready=False UpdateRolledBack",
        "Warning event UpdateRolledBack: yes",
        "UpdateApplication calls for inventory in all: 1",
    ] {
        assert!(out.contains(needle), "demo output lacks {needle:?}:\n{out}");
    }
    assert!(dir.path().join("applicationencryptions.yaml").exists());
}

#[tokio::test(flavor = "multi_thread")]
async fn apply_exits_non_zero_on_a_rollback_and_never_updates_twice() {
    let emu = emulator().await;
    emu.create_application(REGION, "r1", "FLINK-1_20", ApplicationStatus::Running)
        .unwrap();
    let key = emu.create_key(REGION, None).unwrap();
    emu.set_fault("UpdateApplication", Fault::rollback());
    let dir = tempfile::tempdir().unwrap();
    write_manifests(dir.path(), &key, &["r1"]);
    let path = dir.path().to_str().unwrap();
    let ep = emu.endpoint();
    let args = [
        "apply",
        "-f",
        path,
        "--poll-interval",
        "100ms",
        "--policy-settle",
        "0",
        "--output",
        "json",
    ];
    let o = bin(&args, &ep);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).expect("json");
    assert_eq!(v["resources"][0]["reason"], "UpdateRolledBack", "{v}");
    assert_eq!(
        v["resources"][0]["status"]["lastUpdate"]["outcome"],
        "RolledBack"
    );
    assert_eq!(emu.call_count("UpdateApplication"), 1);
    // The next pipeline run keeps no status: MSF's history says the same.
    emu.clear_faults();
    let o = bin(&args, &ep);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    assert_eq!(emu.call_count("UpdateApplication"), 1, "no second restart");
}

/// `plan` and `apply` with `--accounts-config`: the namespace `team` is mapped to a second
/// account, whose operator role is assumed for every call there; a bad file is exit code 2;
/// a key of another account is refused without a write.
#[tokio::test(flavor = "multi_thread")]
async fn plan_and_apply_act_in_the_mapped_account() {
    const B: &str = "222222222222";
    let emu = Emulator::start(EmulatorConfig {
        extra_accounts: vec![B.into()],
        update_delay: Duration::from_millis(50),
        ..EmulatorConfig::default()
    })
    .await
    .unwrap();
    let operator = format!("arn:aws:iam::{B}:role/msf-cmk-operator");
    emu.add_roles_with_external_id([operator.as_str()], "team")
        .unwrap();
    emu.create_application_in(B, REGION, "b1", "FLINK-1_20", ApplicationStatus::Running)
        .unwrap();
    let key = emu.create_key_in(B, REGION, None).unwrap();
    let dir = tempfile::tempdir().unwrap();
    write_manifests(dir.path(), &key, &["b1"]);
    let accounts = dir.path().join("accounts.yaml");
    std::fs::write(
        &accounts,
        format!(
            "accounts:\n- namespaces: [team]\n  accountId: \"{B}\"\n  operatorRoleArn: {operator}\n  externalId: team\n"
        ),
    )
    .unwrap();
    let manifests = dir.path().join("appenc.yaml");
    let (m, a) = (manifests.to_str().unwrap(), accounts.to_str().unwrap());
    let ep = emu.endpoint();

    let o = bin(&["plan", "-f", m, "--accounts-config", a], &ep);
    assert_eq!(o.status.code(), Some(3), "{}", text(&o));
    let o = bin(
        &[
            "apply",
            "-f",
            m,
            "--accounts-config",
            a,
            "--policy-settle",
            "0",
        ],
        &ep,
    );
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let app = emu.application_in(B, REGION, "b1").unwrap();
    assert_eq!(app.encryption.key_id.as_deref(), Some(key.as_str()));
    let session = format!("arn:aws:sts::{B}:assumed-role/msf-cmk-operator/msf-cmk-controller");
    let updates: Vec<_> = emu
        .calls(0)
        .into_iter()
        .filter(|c| c.operation == "UpdateApplication")
        .collect();
    assert!(!updates.is_empty());
    assert!(
        updates
            .iter()
            .all(|c| c.account == B && c.caller_arn == session),
        "{updates:#?}"
    );

    // A key of the first account, claimed from a namespace mapped to B: refused, no write.
    let other = emu.create_key(REGION, None).unwrap();
    write_manifests(dir.path(), &other, &["b1"]);
    let before = emu.call_count("PutKeyPolicy") + emu.call_count("UpdateApplication");
    let o = bin(&["apply", "-f", m, "--accounts-config", a], &ep);
    assert_ne!(o.status.code(), Some(0), "{}", text(&o));
    assert!(text(&o).contains("NotPermitted"), "{}", text(&o));
    let after = emu.call_count("PutKeyPolicy") + emu.call_count("UpdateApplication");
    assert_eq!(before, after);

    // A file that maps a namespace to two accounts is bad input.
    std::fs::write(
        &accounts,
        format!(
            "accounts:\n- namespaces: [\"te*\"]\n  accountId: \"{B}\"\n  operatorRoleArn: {operator}\n- namespaces: [team]\n  accountId: \"123456789012\"\n  operatorRoleArn: arn:aws:iam::123456789012:role/x\n"
        ),
    )
    .unwrap();
    for cmd in ["plan", "apply"] {
        let o = bin(&[cmd, "-f", m, "--accounts-config", a], &ep);
        assert_eq!(o.status.code(), Some(2), "{}", text(&o));
        assert!(
            String::from_utf8_lossy(&o.stderr).contains("can match the same namespace"),
            "{}",
            text(&o)
        );
    }
}

/// tests/fixtures/strict-manifests/: each file's first line is `# admitted` or
/// `# refused: <text>`; tests/e2e_manifests.rs checks the real API server agrees.
fn strict_corpus() -> Vec<(std::path::PathBuf, Option<String>)> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/strict-manifests");
    let mut files: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    files.sort();
    files
        .into_iter()
        .map(|f| {
            let text = std::fs::read_to_string(&f).unwrap();
            let first = text.lines().next().unwrap_or_default();
            let needle = first.strip_prefix("# refused: ").map(String::from);
            assert!(needle.is_some() || first.starts_with("# admitted"), "{f:?}");
            (f, needle)
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn plan_refuses_what_the_api_server_refuses_naming_file_document_and_path() {
    let emu = emulator().await;
    let ep = emu.endpoint();
    for (file, needle) in strict_corpus() {
        let o = bin(&["plan", "-f", file.to_str().unwrap()], &ep);
        let name = file.file_name().unwrap().to_string_lossy().to_string();
        let err = String::from_utf8_lossy(&o.stderr);
        match needle {
            Some(needle) => {
                assert_eq!(o.status.code(), Some(2), "{name}: {}", text(&o));
                assert!(
                    err.contains(&format!("{name}#0")) && err.contains(&needle),
                    "{name}: wants {needle:?}: {err}"
                );
            }
            // Admitted: the application does not exist, so blocked (1), never bad input.
            None => assert_eq!(o.status.code(), Some(1), "{name}: {}", text(&o)),
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_refused_document_is_named_by_its_index_and_apply_writes_nothing() {
    let emu = emulator().await;
    emu.create_application(REGION, "orders", "FLINK-1_20", ApplicationStatus::Running)
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("two.yaml");
    std::fs::write(
        &file,
        "apiVersion: msfcmk.dev/v1alpha1\nkind: ApplicationEncryption\nmetadata: {name: a}\nspec: {applicationName: orders, keyType: CustomerManagedKey, keyId: alias/x}\n---\n\
         apiVersion: msfcmk.dev/v1alpha1\nkind: ApplicationEncryption\nmetadata: {name: b}\nspec: {applicationName: orders, keyType: AwsOwnedKey, suspended: true}\n",
    )
    .unwrap();
    let ep = emu.endpoint();
    let o = bin(&["apply", "-f", file.to_str().unwrap()], &ep);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("two.yaml#1") && err.contains("spec.suspended: unknown field"),
        "{err}"
    );
    assert!(
        emu.call_counts().is_empty(),
        "bad input reaches no AWS API: {:?}",
        emu.call_counts()
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_malformed_key_id_passes_the_crd_and_is_refused_by_the_planner() {
    let emu = emulator().await;
    let file = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/strict-manifests/admitted-malformed-key-id.yaml");
    let o = bin(
        &["plan", "-f", file.to_str().unwrap(), "--output", "json"],
        &emu.endpoint(),
    );
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).expect("json");
    assert_eq!(v["resources"][0]["reason"], "InvalidSpec", "{v}");
}
