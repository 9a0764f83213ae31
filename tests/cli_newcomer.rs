//! A newcomer's first runs: the real binary in an empty environment (HOME a temporary
//! directory, no AWS_* variable), as after a fresh clone. A wrong AWS set-up is one line on
//! stderr saying what to set, exit code 2, before any call to AWS; the emulator's banner is
//! enough to point a shell at it; `plan -f deploy/examples/` works against `--seed-demo`.

use std::io::{BufRead, BufReader, Read, Write};
use std::path::PathBuf;
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc;
use std::time::Duration;

fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_msf-cmk-controller")
}

fn example(name: &str) -> String {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("deploy/examples")
        .join(name)
        .display()
        .to_string()
}

/// Runs the binary with nothing in the environment but PATH, HOME (empty) and `vars`.
fn run_clean(args: &[&str], vars: &[(&str, &str)]) -> Output {
    let home = tempfile::tempdir().expect("temp HOME");
    Command::new(bin())
        .args(args)
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("HOME", home.path())
        .envs(vars.iter().copied())
        .output()
        .expect("run the binary")
}

fn stderr_lines(out: &Output) -> Vec<String> {
    String::from_utf8_lossy(&out.stderr)
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(str::to_string)
        .collect()
}

/// Exit code 2 and exactly one line on stderr, which starts with `starts`.
fn assert_one_clear_line(out: &Output, starts: &str) -> String {
    let lines = stderr_lines(out);
    assert_eq!(out.status.code(), Some(2), "exit code; stderr: {lines:#?}");
    assert_eq!(lines.len(), 1, "one line on stderr, got {lines:#?}");
    assert!(lines[0].starts_with(starts), "{:?}", lines[0]);
    lines[0].clone()
}

const NO_IMDS: (&str, &str) = ("AWS_EC2_METADATA_DISABLED", "true");
const REGION: (&str, &str) = ("AWS_REGION", "us-east-1");

#[test]
fn plan_and_apply_without_credentials_say_what_to_set() {
    for cmd in ["plan", "apply"] {
        let out = run_clean(&[cmd, "-f", &example("cmk-alias.yaml")], &[REGION, NO_IMDS]);
        let line = assert_one_clear_line(&out, "error: no AWS credentials: set AWS_PROFILE");
        assert!(line.contains("AWS_ACCESS_KEY_ID"), "{line}");
        assert!(out.stdout.is_empty(), "{cmd}: no plan without AWS");
    }
}

#[test]
fn without_a_region_the_line_names_aws_region() {
    let out = run_clean(&["plan", "-f", &example("cmk-alias.yaml")], &[NO_IMDS]);
    assert_one_clear_line(&out, "error: no AWS region: set AWS_REGION");
}

#[test]
fn the_sdk_instance_metadata_warnings_do_not_flood_stderr() {
    // Nothing disabled: the SDK asks the instance metadata service for a region and for
    // credentials, which off EC2 fails (refused, forbidden or no route) and warns each time.
    let out = run_clean(&["plan", "-f", &example("cmk-alias.yaml")], &[]);
    let line = assert_one_clear_line(&out, "error: no AWS ");
    assert!(!line.contains("IMDS"), "{line}");
}

#[test]
fn run_without_credentials_stops_before_kubernetes_with_the_same_line() {
    let out = run_clean(
        &["run", "--metrics-addr", "127.0.0.1:0"],
        &[REGION, NO_IMDS],
    );
    assert_eq!(out.status.code(), Some(2), "{:#?}", stderr_lines(&out));
    let lines = stderr_lines(&out);
    let last = lines.last().expect("a line");
    assert!(
        last.starts_with("error: no AWS credentials: set AWS_PROFILE"),
        "{lines:#?}"
    );
    // Before the error, only the controller's own start-up logs; nothing from the SDK.
    assert!(
        lines.iter().all(|l| !l.contains("aws_config")),
        "{lines:#?}"
    );
}

/// A port on 127.0.0.1 that nothing listens on (bound, then released).
fn closed_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    l.local_addr().expect("addr").port()
}

#[test]
fn an_unreachable_endpoint_is_one_line_not_a_long_retry() {
    let url = format!("http://127.0.0.1:{}", closed_port());
    for cmd in ["plan", "apply"] {
        let out = run_clean(
            &[
                cmd,
                "-f",
                &example("cmk-alias.yaml"),
                "--aws-endpoint-url",
                &url,
            ],
            &[],
        );
        let line = assert_one_clear_line(&out, &format!("error: cannot reach AWS at {url} "));
        assert!(line.contains("--aws-endpoint-url"), "{line}");
    }
    // The SDK's own endpoint variable is an override too.
    let out = run_clean(
        &["apply", "-f", &example("cmk-alias.yaml")],
        &[
            ("AWS_ENDPOINT_URL", &url),
            REGION,
            ("AWS_ACCESS_KEY_ID", "AKIDEXAMPLE"),
            ("AWS_SECRET_ACCESS_KEY", "secret"),
        ],
    );
    assert_one_clear_line(&out, &format!("error: cannot reach AWS at {url} "));
}

/// The emulator binary, stopped by its PID when dropped.
struct Emulator {
    child: Child,
    endpoint: String,
    exports: Vec<(String, String)>,
}

impl Drop for Emulator {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts `emulator ARGS` and reads its banner: the endpoint line, then the export lines.
fn emulator(args: &[&str]) -> Emulator {
    let mut child = Command::new(bin())
        .arg("emulator")
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("start the emulator");
    let stdout = child.stdout.take().expect("stdout");
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().take(5) {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let mut banner = Vec::new();
    while banner.len() < 5 {
        match rx.recv_timeout(Duration::from_secs(30)) {
            Ok(line) => banner.push(line),
            Err(_) => break,
        }
    }
    let mut emu = Emulator {
        child,
        endpoint: String::new(),
        exports: Vec::new(),
    };
    emu.endpoint = banner
        .first()
        .and_then(|l| l.strip_prefix("endpoint: "))
        .unwrap_or_else(|| panic!("banner: {banner:#?}"))
        .to_string();
    emu.exports = banner[1..]
        .iter()
        .map(|l| {
            let (k, v) = l
                .strip_prefix("export ")
                .and_then(|kv| kv.split_once('='))
                .unwrap_or_else(|| panic!("not an export line: {l:?}"));
            (k.to_string(), v.to_string())
        })
        .collect();
    emu
}

fn admin_get(endpoint: &str, path: &str) -> serde_json::Value {
    let addr = endpoint.trim_start_matches("http://");
    let mut s = std::net::TcpStream::connect(addr).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .expect("write");
    let mut text = String::new();
    s.read_to_string(&mut text).expect("read");
    let body = text.split_once("\r\n\r\n").map_or("", |(_, b)| b);
    serde_json::from_str(body).unwrap_or_else(|e| panic!("{e}: {text}"))
}

#[test]
fn the_banner_points_a_shell_at_the_emulator_and_seed_demo_matches_the_examples() {
    let emu = emulator(&["--seed-demo"]);
    let names: Vec<&str> = emu.exports.iter().map(|(k, _)| k.as_str()).collect();
    assert_eq!(
        names,
        [
            "AWS_ENDPOINT_URL",
            "AWS_REGION",
            "AWS_ACCESS_KEY_ID",
            "AWS_SECRET_ACCESS_KEY"
        ]
    );
    assert_eq!(emu.exports[0].1, emu.endpoint);
    let vars: Vec<(&str, &str)> = emu
        .exports
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    let examples = example("");
    let out = run_clean(&["plan", "-f", &examples, "-o", "json"], &vars);
    // 1: some examples are blocked (their keys are in account 111122223333); never 2.
    assert!(
        matches!(out.status.code(), Some(0 | 1 | 3)),
        "{:?} {:#?}",
        out.status,
        stderr_lines(&out)
    );
    let plan: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json plan");
    let resources = plan["resources"].as_array().expect("resources");
    let planned: Vec<&str> = resources
        .iter()
        .map(|r| r["applicationName"].as_str().unwrap_or_default())
        .collect();
    assert_eq!(resources.len(), 6, "{planned:?}");
    for r in resources {
        let text = r.to_string();
        assert!(!text.contains("ApplicationNotFound"), "{text}");
        assert!(!text.contains("ApplicationNotObserved"), "{text}");
    }
    // The same plan as YAML: the same resources, verdicts and summary.
    let yaml = run_clean(&["plan", "-f", &examples, "-o", "yaml"], &vars);
    assert_eq!(yaml.status.code(), out.status.code());
    let yaml: serde_json::Value = yaml_serde::from_slice(&yaml.stdout).expect("yaml plan");
    let verdicts = |p: &serde_json::Value| -> Vec<(String, String, String)> {
        p["resources"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|r| {
                let f = |k: &str| r[k].as_str().unwrap_or_default().to_string();
                (f("applicationName"), f("ready"), f("reason"))
            })
            .collect()
    };
    assert_eq!(verdicts(&yaml), verdicts(&plan));
    assert_eq!(yaml["summary"], plan["summary"]);
    // A plan reads: it wrote nothing.
    let counts = admin_get(&emu.endpoint, "/_emulator/counts");
    for write in ["PutKeyPolicy", "UpdateApplication"] {
        assert!(counts["calls"].get(write).is_none(), "{write}: {counts}");
    }
}

#[test]
fn without_credentials_nothing_reaches_aws() {
    // AWS_ENDPOINT_URL names the emulator, but no credentials: not one call arrives there.
    let emu = emulator(&[]);
    let out = run_clean(
        &["apply", "-f", &example("cmk-alias.yaml")],
        &[("AWS_ENDPOINT_URL", &emu.endpoint), REGION, NO_IMDS],
    );
    assert_one_clear_line(&out, "error: no AWS credentials");
    let counts = admin_get(&emu.endpoint, "/_emulator/counts");
    assert_eq!(
        counts["calls"],
        serde_json::json!({}),
        "no attempt at all: {counts}"
    );
}

#[test]
fn the_demo_counts_once_says_each_key_message_once_and_keeps_its_manifests() {
    let dir = tempfile::tempdir().expect("dir");
    let kept = dir.path().join("manifests");
    let out = run_clean(
        &["demo", "--dir", kept.to_str().expect("utf-8")],
        &[NO_IMDS],
    );
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{text}");
    assert!(kept.join("applicationencryptions.yaml").exists());
    assert!(
        text.contains("(kept)"),
        "the demo says the manifests stay:\n{text}"
    );
    // Four resources on one key: the key policy's message once, then referred to.
    assert_eq!(
        text.matches("the key policy does not grant").count(),
        1,
        "{text}"
    );
    assert_eq!(
        text.matches("(the same as streaming/orders)").count(),
        3,
        "{text}"
    );
    // One count of apply's calls (the emulator's), agreeing with apply's own summary.
    let calls: Vec<&str> = text
        .lines()
        .filter(|l| l.starts_with("AWS calls: "))
        .collect();
    assert_eq!(calls.len(), 1, "{calls:?}");
    assert!(
        text.contains("1 key policy write(s), 4 application update(s)."),
        "{text}"
    );
    assert!(calls[0].contains("PutKeyPolicy=1,"), "{}", calls[0]);
    assert!(calls[0].contains("UpdateApplication=4"), "{}", calls[0]);
    assert!(!text.contains("AWS calls made by apply"), "{text}");
    assert!(!text.contains("while MSF still says UPDATING"), "{text}");
}

fn admin_put(endpoint: &str, path: &str, body: &str) {
    let addr = endpoint.trim_start_matches("http://");
    let mut s = std::net::TcpStream::connect(addr).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    write!(
        s,
        "PUT {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .expect("write");
    let mut text = String::new();
    s.read_to_string(&mut text).expect("read");
    assert!(text.starts_with("HTTP/1.1 200"), "{text}");
}

fn emulator_vars(emu: &Emulator) -> Vec<(&str, &str)> {
    emu.exports
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect()
}

#[test]
fn credentials_aws_refuses_stop_the_command_after_one_call() {
    let emu = emulator(&["--seed-demo"]);
    admin_put(
        &emu.endpoint,
        "/_emulator/faults/*",
        r#"{"invalid_credentials": true}"#,
    );
    for cmd in ["plan", "apply"] {
        let out = run_clean(
            &[cmd, "-f", &example("aws-owned-key.yaml")],
            &emulator_vars(&emu),
        );
        let line = assert_one_clear_line(&out, "error: AWS refused the credentials (");
        assert!(line.contains("InvalidClientTokenId"), "{line}");
    }
    // One GetCallerIdentity per command (refused; not retried), and nothing else.
    let counts = admin_get(&emu.endpoint, "/_emulator/counts");
    assert_eq!(
        counts["calls"],
        serde_json::json!({"GetCallerIdentity": 2}),
        "{counts}"
    );
}

#[test]
fn credentials_refused_by_msf_alone_are_aws_credentials_not_aws_unavailable() {
    // STS accepts the keys, MSF does not (e.g. a partition or region where they are unknown):
    // the resource says AwsCredentials, the apply stops at once instead of retrying.
    let emu = emulator(&["--seed-demo"]);
    admin_put(
        &emu.endpoint,
        "/_emulator/faults/DescribeApplication",
        r#"{"invalid_credentials": true}"#,
    );
    let out = run_clean(
        &["apply", "-f", &example("aws-owned-key.yaml"), "-o", "json"],
        &emulator_vars(&emu),
    );
    assert_eq!(out.status.code(), Some(1), "{:#?}", stderr_lines(&out));
    let doc: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    let r = &doc["resources"][0];
    assert_eq!(r["reason"], "AwsCredentials", "{r}");
    assert!(!r.to_string().contains("AwsUnavailable"), "{r}");
    let counts = admin_get(&emu.endpoint, "/_emulator/counts");
    assert_eq!(
        counts["calls"]["DescribeApplication"], 1,
        "read once, not retried: {counts}"
    );
}
