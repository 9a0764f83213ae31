//! The emulator as scripts use it: the `emulator` subcommand (address on stdout, demo
//! seed, SIGTERM stops it) and the admin API (counts, faults, state).

// The emulator (and the shared test support) exists only with the default feature `emulator`.
#![cfg(feature = "emulator")]

mod support_aws;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::Duration;

use msf_cmk_controller::domain::{ApplicationStatus, ErrorCategory};
use support_aws::{REGION, clients, emulator, http};

#[tokio::test]
async fn subcommand_prints_endpoint_serves_seed_and_stops_on_sigterm() {
    let mut child = Command::new(env!("CARGO_BIN_EXE_msf-cmk-controller"))
        .args([
            "emulator",
            "--port",
            "0",
            "--update-delay-ms",
            "50",
            "--seed-demo",
        ])
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

    let aws = clients(&endpoint, 1).await;
    let app = aws
        .msf
        .describe_application(REGION, "orders-enricher")
        .await
        .expect("seeded application");
    assert_eq!(app.status, ApplicationStatus::Running);
    let key = aws
        .kms
        .describe_key(REGION, "alias/msf-demo-ready")
        .await
        .expect("seeded key");
    assert!(key.is_symmetric_encrypt_decrypt());

    let status = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .expect("kill");
    assert!(status.success());
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let code = loop {
        if let Some(code) = child.try_wait().expect("wait") {
            break code;
        }
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            panic!("emulator did not stop on SIGTERM");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(code.success(), "{code:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_api_counts_faults_state() {
    let emu = emulator().await;
    let ep = emu.endpoint();
    emu.create_application(REGION, "app", "FLINK-1_20", ApplicationStatus::Ready)
        .unwrap();
    let aws = clients(&ep, 1).await;
    aws.msf.describe_application(REGION, "app").await.unwrap();
    let _ = aws.msf.describe_application(REGION, "missing").await;

    let (code, body) = tokio::task::block_in_place(|| http(&ep, "GET", "/_emulator/counts", ""));
    assert_eq!(code, 200);
    let counts: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(counts["calls"]["DescribeApplication"], 2);
    assert_eq!(counts["outcomes"]["DescribeApplication"]["ok"], 1);
    assert_eq!(
        counts["outcomes"]["DescribeApplication"]["ResourceNotFoundException"],
        1
    );

    let (code, _) = tokio::task::block_in_place(|| {
        http(
            &ep,
            "PUT",
            "/_emulator/faults/DescribeApplication",
            r#"{"throttle_rate":1.0}"#,
        )
    });
    assert_eq!(code, 200);
    let e = aws
        .msf
        .describe_application(REGION, "app")
        .await
        .unwrap_err();
    assert_eq!(e.category, ErrorCategory::Transient);
    let (code, _) = tokio::task::block_in_place(|| {
        http(&ep, "PUT", "/_emulator/faults/X", r#"{"throttle_rate":2}"#)
    });
    assert_eq!(code, 400, "rates outside [0, 1] refused");
    let (code, _) = tokio::task::block_in_place(|| http(&ep, "DELETE", "/_emulator/faults", ""));
    assert_eq!(code, 200);
    aws.msf.describe_application(REGION, "app").await.unwrap();

    let (_, body) = tokio::task::block_in_place(|| http(&ep, "GET", "/_emulator/state", ""));
    let state: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(
        state["scopes"][0]["applications"][0]["ApplicationName"],
        "app"
    );
    let (_, _) = tokio::task::block_in_place(|| http(&ep, "DELETE", "/_emulator/counts", ""));
    assert!(emu.call_counts().is_empty());
    emu.shutdown().await;
}
