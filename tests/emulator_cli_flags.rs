//! The `emulator` command's flags reach the running emulator (read back from
//! `GET /_emulator/config`), quotas are on by default, `--accounts` serves several accounts,
//! and a bad caller ARN or account id is refused.

// The emulator (and the shared test support) exists only with the default feature `emulator`.
#![cfg(feature = "emulator")]

mod support_aws;

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use support_aws::http;

/// Starts `emulator ARGS` and returns the child and its endpoint.
fn start(args: &[&str]) -> (Child, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_msf-cmk-controller"))
        .arg("emulator")
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn");
    let stdout = child.stdout.take().expect("stdout");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut line = String::new();
        let _ = BufReader::new(stdout).read_line(&mut line);
        let _ = tx.send(line);
    });
    let line = rx
        .recv_timeout(Duration::from_secs(20))
        .expect("address printed");
    let endpoint = line
        .trim()
        .strip_prefix("endpoint: ")
        .unwrap_or_else(|| panic!("unexpected first line {line:?}"))
        .to_string();
    (child, endpoint)
}

fn config(endpoint: &str) -> serde_json::Value {
    let (status, body) = http(endpoint, "GET", "/_emulator/config", "");
    assert_eq!(status, 200, "{body}");
    serde_json::from_str(&body).expect("json")
}

#[test]
fn flags_reach_the_config_and_quotas_are_on_by_default() {
    let (mut child, ep) = start(&[
        "--policy-propagation-ms",
        "250",
        "--caller-arn",
        "arn:aws:iam::123456789012:role/Deployer",
        "--strict-principals",
        "--msf-quota",
        "7",
    ]);
    let c = config(&ep);
    let _ = child.kill();
    let _ = child.wait();
    assert_eq!(c["policy_propagation_ms"], 250);
    assert_eq!(c["caller_arn"], "arn:aws:iam::123456789012:role/Deployer");
    assert_eq!(c["strict_principals"], true);
    assert_eq!(c["quotas"], true);
    assert_eq!(c["msf_quota"], 7);

    let (mut child, ep) = start(&[]);
    let c = config(&ep);
    assert_eq!(c["quotas"], true, "on by default in the command");
    assert_eq!(c["msf_quota"], 1000);
    assert_eq!(
        c["caller_arn"],
        "arn:aws:iam::123456789012:role/msf-cmk-operator"
    );
    let _ = child.kill();
    let _ = child.wait();

    let (mut child, ep) = start(&["--no-quotas"]);
    assert_eq!(config(&ep)["quotas"], false);
    let _ = child.kill();
    let _ = child.wait();
}

#[test]
fn a_bad_caller_arn_is_bad_input() {
    let out = Command::new(env!("CARGO_BIN_EXE_msf-cmk-controller"))
        .args(["emulator", "--caller-arn", "role/nope"])
        .stdin(Stdio::null())
        .output()
        .expect("run");
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("--caller-arn"), "{stderr}");
}

#[test]
fn accounts_flag_serves_several_accounts() {
    let (mut child, ep) = start(&["--accounts", "111111111111,222222222222"]);
    let c = config(&ep);
    let (status, state) = http(&ep, "GET", "/_emulator/state", "");
    let _ = child.kill();
    let _ = child.wait();
    assert_eq!(c["account_id"], "111111111111", "the first is the default");
    assert_eq!(
        c["accounts"],
        serde_json::json!(["111111111111", "222222222222"])
    );
    assert_eq!(
        c["caller_arn"],
        "arn:aws:iam::111111111111:role/msf-cmk-operator"
    );
    assert_eq!(status, 200, "{state}");
    assert!(state.contains(r#""accounts":["111111111111","222222222222"]"#));

    let out = Command::new(env!("CARGO_BIN_EXE_msf-cmk-controller"))
        .args(["emulator", "--accounts", "111111111111,42"])
        .stdin(Stdio::null())
        .output()
        .expect("run");
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("--accounts"), "{stderr}");
}
