//! Who calls, as the emulator sees it: STS GetCallerIdentity through the real aws-sdk-sts
//! client (awsQuery, XML), the configured caller, and the call log other tools read
//! (`GET /_emulator/calls`), with callers told apart by their access key id.

// The emulator (and the shared test support) exists only with the default feature `emulator`.
#![cfg(feature = "emulator")]

mod support_aws;

use aws_credential_types::Credentials;
use aws_sdk_kms as kms;
use aws_sdk_sts as sts;
use msf_cmk_controller::domain::ApplicationStatus;
use msf_cmk_controller::emulator::{CallRecord, Emulator, EmulatorConfig, Fault};
use support_aws::{REGION, emulator, http};

fn admin(endpoint: &str, method: &str, path: &str, body: &str) -> (u16, String) {
    tokio::task::block_in_place(|| http(endpoint, method, path, body))
}

fn creds(akid: &str) -> Credentials {
    Credentials::new(akid, "secret", None, None, "test")
}

fn raw_sts(endpoint: &str, akid: &str) -> sts::Client {
    let conf = sts::config::Builder::new()
        .behavior_version(aws_config::BehaviorVersion::latest())
        .region(aws_config::Region::new(REGION))
        .endpoint_url(endpoint)
        .credentials_provider(creds(akid))
        .retry_config(aws_smithy_types::retry::RetryConfig::disabled())
        .build();
    sts::Client::from_conf(conf)
}

fn kms_as(endpoint: &str, akid: &str) -> kms::Client {
    let conf = kms::config::Builder::new()
        .behavior_version(aws_config::BehaviorVersion::latest())
        .region(aws_config::Region::new(REGION))
        .endpoint_url(endpoint)
        .credentials_provider(creds(akid))
        .retry_config(aws_smithy_types::retry::RetryConfig::disabled())
        .build();
    kms::Client::from_conf(conf)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn get_caller_identity_answers_the_configured_caller() {
    let emu = emulator().await;
    let ep = emu.endpoint();
    let c = raw_sts(&ep, "AKIDTEST");
    let me = c
        .get_caller_identity()
        .send()
        .await
        .expect("GetCallerIdentity");
    assert_eq!(
        me.arn(),
        Some("arn:aws:sts::123456789012:assumed-role/msf-cmk-operator/msf-cmk-controller")
    );
    assert_eq!(me.account(), Some("123456789012"));
    let user_id = me.user_id().unwrap();
    assert!(
        user_id.starts_with("AROA") && user_id.ends_with(":msf-cmk-controller"),
        "{user_id}"
    );
    assert_eq!(emu.caller_identity_arn(), me.arn().unwrap());

    // At runtime, through the admin API: a user is answered as itself.
    let (status, body) = admin(
        &ep,
        "PUT",
        "/_emulator/config",
        r#"{"caller_arn": "arn:aws:iam::123456789012:user/alice"}"#,
    );
    assert_eq!(status, 200, "{body}");
    let me = c.get_caller_identity().send().await.unwrap();
    assert_eq!(me.arn(), Some("arn:aws:iam::123456789012:user/alice"));
    let (status, _) = admin(
        &ep,
        "PUT",
        "/_emulator/config",
        r#"{"caller_arn": "not-an-arn"}"#,
    );
    assert_eq!(status, 400);
    emu.shutdown().await;

    // From the config: another role.
    let emu = Emulator::start(EmulatorConfig {
        caller_arn: Some("arn:aws:iam::123456789012:role/platform/Deployer".into()),
        ..EmulatorConfig::default()
    })
    .await
    .unwrap();
    let me = raw_sts(&emu.endpoint(), "AKIDTEST")
        .get_caller_identity()
        .send()
        .await
        .unwrap();
    assert_eq!(
        me.arn(),
        Some("arn:aws:sts::123456789012:assumed-role/Deployer/msf-cmk-controller")
    );
    emu.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_call_log_tells_callers_apart_and_pages_by_sequence() {
    let emu = emulator().await;
    let ep = emu.endpoint();
    emu.create_application(REGION, "orders", "FLINK-1_20", ApplicationStatus::Ready)
        .unwrap();
    let key = emu.create_key(REGION, None).unwrap();
    let leader = kms_as(&ep, "AKIDLEADER");
    let standby = kms_as(&ep, "AKIDSTANDBY");
    let started_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64;

    leader.get_key_policy().key_id(&key).send().await.unwrap();
    emu.set_fault("DescribeKey", Fault::throttle(1.0));
    let _ = standby.describe_key().key_id(&key).send().await;
    raw_sts(&ep, "AKIDSTANDBY")
        .get_caller_identity()
        .send()
        .await
        .unwrap();

    let (status, body) = admin(&ep, "GET", "/_emulator/calls", "");
    assert_eq!(status, 200);
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    let calls: Vec<CallRecord> = serde_json::from_value(v["calls"].clone()).unwrap();
    assert_eq!(calls.len(), 3, "{calls:?}");
    let first = &calls[0];
    assert_eq!(first.operation, "GetKeyPolicy");
    assert_eq!(first.access_key_id, "AKIDLEADER");
    assert_eq!(first.region, REGION);
    assert_eq!(first.account, "123456789012");
    assert_eq!(first.target.as_deref(), Some(key.as_str()));
    assert_eq!(first.outcome, "ok");
    assert_eq!(
        first.caller_arn,
        "arn:aws:sts::123456789012:assumed-role/msf-cmk-operator/msf-cmk-controller"
    );
    assert!(
        first.time_ms >= started_ms,
        "{} < {started_ms}",
        first.time_ms
    );
    assert!(first.answered_ms >= first.time_ms);
    assert_eq!(calls[1].access_key_id, "AKIDSTANDBY");
    assert_eq!(calls[1].outcome, "ThrottlingException");
    assert_eq!(calls[2].operation, "GetCallerIdentity");
    assert!(calls.windows(2).all(|w| w[0].seq < w[1].seq));

    // Only what came after a sequence number.
    let since = calls[1].seq;
    let (_, body) = admin(&ep, "GET", &format!("/_emulator/calls?since={since}"), "");
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["calls"].as_array().unwrap().len(), 1);
    assert_eq!(emu.calls(since).len(), 1);
    let (_, body) = admin(
        &ep,
        "GET",
        "/_emulator/calls?access_key_id=AKIDSTANDBY&operation=DescribeKey",
        "",
    );
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["calls"].as_array().unwrap().len(), 1, "{v}");
    assert_eq!(v["calls"][0]["outcome"], "ThrottlingException");

    // Cleared, then numbering goes on.
    let (status, _) = admin(&ep, "DELETE", "/_emulator/calls", "");
    assert_eq!(status, 200);
    assert!(emu.calls(0).is_empty());
    leader.get_key_policy().key_id(&key).send().await.unwrap();
    let after = emu.calls(0);
    assert_eq!(after.len(), 1);
    assert!(after[0].seq > calls[2].seq);
    emu.shutdown().await;
}
