//! Shared by the AWS adapter tests: an emulator, clients with controlled retries, a moto
//! server started and stopped by PID, and the KMS suite run against both servers.

// Each test crate uses a different part of this module.
#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use aws_credential_types::Credentials;
use aws_sdk_kms as kms;
use msf_cmk_controller::aws::{AwsClients, ConnectOptions, connect};
use msf_cmk_controller::domain::{ErrorCategory, KeyManager, KeyState};
use msf_cmk_controller::emulator::{Emulator, EmulatorConfig, EmulatorHandle, MSF_PRINCIPALS};

pub const REGION: &str = "us-east-1";
pub const ACCOUNT: &str = "123456789012";

/// An emulator whose updates settle quickly.
pub async fn emulator() -> EmulatorHandle {
    Emulator::start(EmulatorConfig {
        update_delay: Duration::from_millis(300),
        ..EmulatorConfig::default()
    })
    .await
    .expect("emulator starts")
}

/// The adapters against `endpoint`, with `max_attempts` SDK attempts per call.
pub async fn clients(endpoint: &str, max_attempts: u32) -> AwsClients {
    let opts = ConnectOptions {
        max_attempts,
        ..ConnectOptions::local(endpoint)
    };
    connect(&opts).await.expect("clients")
}

/// A plain SDK KMS client for setting up what the adapter does not do (create, alias,
/// disable...). Static credentials, no retries: nothing probes the metadata service.
pub fn raw_kms(endpoint: &str) -> kms::Client {
    let conf = kms::config::Builder::new()
        .behavior_version(aws_config::BehaviorVersion::latest())
        .region(aws_config::Region::new(REGION))
        .endpoint_url(endpoint)
        .credentials_provider(Credentials::new("AKIDTEST", "secret", None, None, "test"))
        .retry_config(aws_smithy_types::retry::RetryConfig::disabled())
        .build();
    kms::Client::from_conf(conf)
}

/// A key policy that keeps the account's administrators in (lockout check) and lets MSF in.
pub fn msf_ready_policy() -> String {
    serde_json::json!({
        "Version": "2012-10-17",
        "Statement": [
            {
                "Sid": "Enable IAM User Permissions",
                "Effect": "Allow",
                "Principal": { "AWS": format!("arn:aws:iam::{ACCOUNT}:root") },
                "Action": "kms:*",
                "Resource": "*"
            },
            {
                "Sid": "MsfCmkServiceUse",
                "Effect": "Allow",
                "Principal": { "Service": MSF_PRINCIPALS },
                "Action": ["kms:DescribeKey", "kms:Decrypt", "kms:GenerateDataKey"],
                "Resource": "*"
            }
        ]
    })
    .to_string()
}

/// A moto server on 127.0.0.1, stopped (by PID) when dropped.
pub struct Moto {
    child: Child,
    pub endpoint: String,
}

impl Moto {
    /// Starts `$MOTO_SERVER_BIN -H 127.0.0.1 -p 0` and waits (bounded) for its address.
    /// Fails, never skips, when moto is not installed.
    pub fn start() -> Moto {
        let bin = std::env::var("MOTO_SERVER_BIN").unwrap_or_else(|_| {
            panic!(
                "MOTO_SERVER_BIN is not set: run `eval \"$(scripts/setup-moto.sh)\"` first \
                 (scripts/test.sh does it); the KMS adapter must be tested against moto"
            )
        });
        let mut child = Command::new(&bin)
            .args(["-H", "127.0.0.1", "-p", "0"])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {bin} (see scripts/setup-moto.sh): {e}"));
        // Werkzeug prints the address on stderr, some versions on stdout: read both.
        let (tx, rx) = mpsc::channel::<String>();
        for stream in [
            child
                .stdout
                .take()
                .map(|s| Box::new(s) as Box<dyn std::io::Read + Send>),
            child
                .stderr
                .take()
                .map(|s| Box::new(s) as Box<dyn std::io::Read + Send>),
        ]
        .into_iter()
        .flatten()
        {
            let tx = tx.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(stream).lines().map_while(Result::ok) {
                    // Keep draining after the address so moto never blocks on a full pipe.
                    let _ = tx.send(line);
                }
            });
        }
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        let mut seen = Vec::new();
        let endpoint = loop {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            match rx.recv_timeout(left) {
                Ok(line) => {
                    if let Some(rest) = line.split("Running on ").nth(1) {
                        break rest.trim().trim_end_matches('/').to_string();
                    }
                    seen.push(line);
                }
                Err(_) => {
                    let _ = child.kill();
                    let _ = child.wait();
                    panic!("moto_server did not print its address within 30 s; output: {seen:?}");
                }
            }
        };
        Moto { child, endpoint }
    }
}

impl Drop for Moto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The KMS behaviour the controller relies on, as one suite run against the emulator and
/// against moto, so the emulator cannot drift from an independent implementation.
pub async fn kms_suite(endpoint: &str) {
    let aws = clients(endpoint, 1).await;
    let raw = raw_kms(endpoint);
    let suffix = uuid::Uuid::new_v4().simple().to_string();

    // Create a key and an alias.
    let created = raw
        .create_key()
        .description("kms suite")
        .send()
        .await
        .expect("CreateKey");
    let meta = created.key_metadata().expect("KeyMetadata");
    let key_id = meta.key_id().to_string();
    let key_arn = meta.arn().expect("Arn").to_string();
    assert_eq!(
        key_arn,
        format!("arn:aws:kms:{REGION}:{ACCOUNT}:key/{key_id}")
    );
    let alias = format!("alias/suite-{suffix}");
    raw.create_alias()
        .alias_name(&alias)
        .target_key_id(&key_id)
        .send()
        .await
        .expect("CreateAlias");
    let aliases = raw.list_aliases().send().await.expect("ListAliases");
    assert!(
        aliases
            .aliases()
            .iter()
            .any(|a| a.alias_name() == Some(alias.as_str())
                && a.target_key_id() == Some(key_id.as_str())),
        "ListAliases shows the alias"
    );

    // DescribeKey resolves every way of naming the key to its ARN.
    let alias_arn = format!("arn:aws:kms:{REGION}:{ACCOUNT}:{alias}");
    for name in [&key_id, &key_arn, &alias, &alias_arn] {
        let k = aws
            .kms
            .describe_key(REGION, name)
            .await
            .expect("DescribeKey");
        assert_eq!(k.arn, key_arn, "resolved from {name}");
        assert_eq!(k.key_id, key_id);
        assert_eq!(k.account, ACCOUNT);
        assert_eq!(k.region, REGION);
        assert_eq!(k.state, KeyState::Enabled);
        assert!(k.is_symmetric_encrypt_decrypt());
        assert_eq!(k.manager, KeyManager::Customer);
    }

    // GetKeyPolicy / PutKeyPolicy round trip (policy name `default`).
    let initial = aws
        .kms
        .get_key_policy(REGION, &key_arn)
        .await
        .expect("GetKeyPolicy");
    let initial: serde_json::Value =
        serde_json::from_str(&initial).expect("default policy is JSON");
    assert!(initial.get("Statement").is_some());
    let wanted = msf_ready_policy();
    aws.kms
        .put_key_policy(REGION, &key_arn, &wanted)
        .await
        .expect("PutKeyPolicy");
    let read = aws
        .kms
        .get_key_policy(REGION, &key_arn)
        .await
        .expect("GetKeyPolicy");
    assert_eq!(
        serde_json::from_str::<serde_json::Value>(&read).expect("JSON"),
        serde_json::from_str::<serde_json::Value>(&wanted).expect("JSON"),
    );

    // Disable / enable.
    raw.disable_key()
        .key_id(&key_id)
        .send()
        .await
        .expect("DisableKey");
    let k = aws
        .kms
        .describe_key(REGION, &alias)
        .await
        .expect("DescribeKey");
    assert_eq!(k.state, KeyState::Disabled);
    raw.enable_key()
        .key_id(&key_id)
        .send()
        .await
        .expect("EnableKey");
    let k = aws
        .kms
        .describe_key(REGION, &key_arn)
        .await
        .expect("DescribeKey");
    assert_eq!(k.state, KeyState::Enabled);

    // Scheduled deletion.
    raw.schedule_key_deletion()
        .key_id(&key_id)
        .pending_window_in_days(7)
        .send()
        .await
        .expect("ScheduleKeyDeletion");
    let k = aws
        .kms
        .describe_key(REGION, &key_arn)
        .await
        .expect("DescribeKey");
    assert_eq!(k.state, KeyState::PendingDeletion);

    // Not found: a key id, an alias, a key policy.
    let missing = uuid::Uuid::new_v4().to_string();
    for name in [missing.clone(), format!("alias/missing-{suffix}")] {
        let e = aws
            .kms
            .describe_key(REGION, &name)
            .await
            .expect_err("no such key");
        assert!(e.is_not_found(), "{e}");
        assert_eq!(e.category, ErrorCategory::Terminal);
        assert_eq!(e.operation, "DescribeKey");
        assert!(!e.message.is_empty(), "AWS's message kept");
    }
    let missing_arn = format!("arn:aws:kms:{REGION}:{ACCOUNT}:key/{missing}");
    let e = aws
        .kms
        .get_key_policy(REGION, &missing_arn)
        .await
        .expect_err("no such key");
    assert!(e.is_not_found(), "{e}");
    assert_eq!(e.category, ErrorCategory::Terminal);
}

/// A minimal HTTP/1.1 request over a fresh connection, for the admin API (no HTTP client
/// crate needed). Returns the status code and the body.
pub fn http(endpoint: &str, method: &str, path: &str, body: &str) -> (u16, String) {
    use std::io::{Read, Write};
    let addr = endpoint.trim_start_matches("http://");
    let mut s = std::net::TcpStream::connect(addr).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .expect("write");
    let mut out = String::new();
    s.read_to_string(&mut out).expect("read");
    let status = out
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let body = out
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    (status, body)
}
