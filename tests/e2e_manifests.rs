//! End to end, no controller: `plan` and a real kube-apiserver judge the same documents
//! (tests/fixtures/strict-manifests/) and must agree. The API server is asked the way a GitOps
//! pipeline asks it, `kubectl apply --dry-run=server --validate=strict` (Strict is kubectl's
//! default since 1.27); `plan` refuses with exit 2 and a message naming the file, the document
//! index and the JSON path. Each file's first line says the expected verdict
//! (`# admitted` or `# refused: <text the message must contain>`), so a fixture that stops
//! matching the API server fails here, and one that stops matching `plan` fails in
//! tests/cli_plan_apply.rs without a cluster. Needs `eval "$(tests/e2e/setup.sh)"` first.

mod support;

use std::path::PathBuf;
use std::process::{Command, Output};

use msf_cmk_controller::emulator::{Emulator, EmulatorConfig};
use support::cluster::{TestCluster, repo_path};

const REGION: &str = "us-east-1";

/// Every fixture with its expected verdict: `None` when admitted, else the text the refusal
/// must contain.
fn corpus() -> Vec<(PathBuf, Option<String>)> {
    let dir = repo_path("tests/fixtures/strict-manifests");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .expect("fixtures")
        .map(|e| e.expect("entry").path())
        .collect();
    files.sort();
    files
        .into_iter()
        .map(|f| {
            let text = std::fs::read_to_string(&f).expect("fixture");
            let first = text.lines().next().unwrap_or_default().to_string();
            let expect = match first.strip_prefix("# refused: ") {
                Some(needle) => Some(needle.to_string()),
                None => {
                    assert!(first.starts_with("# admitted"), "{}: {first}", f.display());
                    None
                }
            };
            (f, expect)
        })
        .collect()
}

fn plan(file: &str, endpoint: &str) -> Output {
    Command::new(env!("CARGO_BIN_EXE_msf-cmk-controller"))
        .args(["plan", "-f", file, "--aws-endpoint-url", endpoint])
        .args(["--region", REGION])
        .args([
            "--operator-role-arn",
            "arn:aws:iam::123456789012:role/msf-cmk-operator",
        ])
        .env_remove("AWS_ACCESS_KEY_ID")
        .env_remove("AWS_PROFILE")
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .output()
        .expect("run plan")
}

#[tokio::test(flavor = "multi_thread")]
async fn plan_and_the_api_server_give_the_same_verdict() {
    let cluster = TestCluster::shared();
    cluster.install_crds();
    let ns = cluster.create_namespace("manifests");
    let emu = Emulator::start(EmulatorConfig::default()).await.unwrap();
    let corpus = corpus();
    assert!(corpus.len() >= 20, "the corpus shrank: {}", corpus.len());
    let mut disagreements = Vec::new();
    for (file, expect) in &corpus {
        let path = file.to_str().expect("utf-8 path");
        let name = file.file_name().unwrap().to_string_lossy().to_string();
        let server = cluster.kubectl(&[
            "apply",
            "--dry-run=server",
            "--validate=strict",
            "-n",
            &ns,
            "-f",
            path,
        ]);
        let planned = plan(path, &emu.endpoint());
        let plan_refused = planned.status.code() == Some(2);
        let stderr = String::from_utf8_lossy(&planned.stderr);
        if server.success == plan_refused || server.success != expect.is_none() {
            disagreements.push(format!(
                "{name}: expected {}, API server {} ({}{}), plan exit {:?}: {stderr}",
                if expect.is_none() {
                    "admitted"
                } else {
                    "refused"
                },
                if server.success {
                    "admitted"
                } else {
                    "refused"
                },
                server.stdout.trim(),
                server.stderr.trim(),
                planned.status.code(),
            ));
            continue;
        }
        if let Some(needle) = expect {
            let at = format!("{name}#0");
            if !(stderr.contains(&at) && stderr.contains(needle.as_str())) {
                disagreements.push(format!(
                    "{name}: plan's message lacks {at:?} or {needle:?}: {stderr}"
                ));
            }
        }
    }
    assert!(disagreements.is_empty(), "{}", disagreements.join("\n"));
}
