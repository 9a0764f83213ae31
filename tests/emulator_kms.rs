//! The emulator's KMS behaviours through the plain SDK: eventual consistency of key policy
//! writes (GetKeyPolicy and MSF's check), cross-account refusals, principals that must exist,
//! KMS's character set, statements without Action, the lock-out safety check, request
//! quotas, and issue 13's interleaved write.

// The emulator (and the shared test support) exists only with the default feature `emulator`.
#![cfg(feature = "emulator")]

mod support_aws;

use std::time::Duration;

use aws_sdk_kinesisanalyticsv2 as msf;
use aws_sdk_kms as kms;
use kms::error::ProvideErrorMetadata;
use msf_cmk_controller::domain::ApplicationStatus;
use msf_cmk_controller::emulator::{Emulator, EmulatorConfig, Fault, KeyOptions, Quotas};
use serde_json::json;
use support_aws::{ACCOUNT, REGION, emulator, http, msf_ready_policy, raw_kms};

fn admin(endpoint: &str, method: &str, path: &str, body: &str) -> (u16, String) {
    tokio::task::block_in_place(|| http(endpoint, method, path, body))
}

/// The error code of a failed KMS call, or "ok".
fn code<T, E: ProvideErrorMetadata>(r: &Result<T, E>) -> String {
    match r {
        Ok(_) => "ok".into(),
        Err(e) => e.code().unwrap_or("?").to_string(),
    }
}

async fn put(c: &kms::Client, key: &str, policy: &str) -> Result<(), String> {
    c.put_key_policy()
        .key_id(key)
        .policy(policy)
        .send()
        .await
        .map(|_| ())
        .map_err(|e| {
            let se = e.into_service_error();
            format!(
                "{}: {}",
                se.code().unwrap_or("?"),
                se.message().unwrap_or("")
            )
        })
}

async fn get(c: &kms::Client, key: &str) -> String {
    c.get_key_policy()
        .key_id(key)
        .send()
        .await
        .expect("GetKeyPolicy")
        .policy()
        .unwrap_or_default()
        .to_string()
}

/// The account's administrators plus one extra statement, to tell versions apart.
fn policy_with(sid: &str) -> String {
    json!({
        "Version": "2012-10-17",
        "Statement": [
            {
                "Sid": "Root",
                "Effect": "Allow",
                "Principal": { "AWS": format!("arn:aws:iam::{ACCOUNT}:root") },
                "Action": "kms:*",
                "Resource": "*"
            },
            {
                "Sid": sid,
                "Effect": "Allow",
                "Principal": { "AWS": format!("arn:aws:iam::{ACCOUNT}:root") },
                "Action": "kms:DescribeKey",
                "Resource": "*"
            }
        ]
    })
    .to_string()
}

fn raw_msf(endpoint: &str) -> msf::Client {
    let conf = msf::config::Builder::new()
        .behavior_version(aws_config::BehaviorVersion::latest())
        .region(aws_config::Region::new(REGION))
        .endpoint_url(endpoint)
        .credentials_provider(aws_credential_types::Credentials::new(
            "AKIDTEST", "secret", None, None, "test",
        ))
        .retry_config(aws_smithy_types::retry::RetryConfig::disabled())
        .build();
    msf::Client::from_conf(conf)
}

/// Switches application "orders" to `key`; the error code on refusal.
async fn switch_to(c: &msf::Client, key: &str) -> Result<(), String> {
    use msf::types::{
        ApplicationConfigurationUpdate, ApplicationEncryptionConfigurationUpdate, KeyType,
    };
    let d = c
        .describe_application()
        .application_name("orders")
        .send()
        .await
        .unwrap();
    let version = d.application_detail().unwrap().application_version_id();
    let enc = ApplicationEncryptionConfigurationUpdate::builder()
        .key_type_update(KeyType::CustomerManagedKey)
        .key_id_update(key)
        .build()
        .unwrap();
    c.update_application()
        .application_name("orders")
        .current_application_version_id(version)
        .application_configuration_update(
            ApplicationConfigurationUpdate::builder()
                .application_encryption_configuration_update(enc)
                .build(),
        )
        .send()
        .await
        .map(|_| ())
        .map_err(|e| e.into_service_error().code().unwrap_or("?").to_string())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_policy_write_is_seen_only_after_the_propagation_delay() {
    let emu = emulator().await;
    emu.set_update_delay(Duration::ZERO);
    let ep = emu.endpoint();
    let c = raw_kms(&ep);
    let (status, body) = admin(
        &ep,
        "PUT",
        "/_emulator/config",
        r#"{"policy_propagation_ms": 600}"#,
    );
    assert_eq!(status, 200, "{body}");
    let (_, body) = admin(&ep, "GET", "/_emulator/config", "");
    let config: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(config["policy_propagation_ms"], 600);

    let key = emu.create_key(REGION, None).unwrap();
    let before = get(&c, &key).await;
    put(&c, &key, &msf_ready_policy()).await.expect("accepted");
    assert_eq!(get(&c, &key).await, before, "not visible yet");
    assert_eq!(
        emu.key_policy(&key).as_deref(),
        Some(msf_ready_policy().as_str())
    );

    // MSF's check reads the same stale policy: the service principals are not in yet.
    emu.create_application(REGION, "orders", "FLINK-1_20", ApplicationStatus::Ready)
        .unwrap();
    let m = raw_msf(&ep);
    let e = switch_to(&m, &key).await.unwrap_err();
    assert_eq!(e, "InvalidRequestException");

    tokio::time::sleep(Duration::from_millis(800)).await;
    assert_eq!(get(&c, &key).await, msf_ready_policy(), "visible now");
    switch_to(&m, &key).await.expect("MSF sees the new policy");
    emu.shutdown().await;
}

#[tokio::test]
async fn key_policies_of_another_account_are_refused() {
    let emu = emulator().await;
    let c = raw_kms(&emu.endpoint());
    let mut opts = KeyOptions::new(REGION);
    opts.account = Some("210987654321".into());
    let foreign = emu.create_key_with(opts).unwrap();
    let described = c.describe_key().key_id(&foreign).send().await;
    assert_eq!(code(&described), "ok", "DescribeKey works across accounts");
    let got = c.get_key_policy().key_id(&foreign).send().await;
    assert_eq!(code(&got), "AccessDeniedException");
    let e = put(&c, &foreign, &policy_with("X")).await.unwrap_err();
    assert!(e.starts_with("AccessDeniedException"), "{e}");
    assert!(e.contains("kms:PutKeyPolicy"), "{e}");
    emu.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn strict_principals_must_exist() {
    let emu = Emulator::start(EmulatorConfig {
        strict_principals: true,
        ..EmulatorConfig::default()
    })
    .await
    .unwrap();
    let ep = emu.endpoint();
    let c = raw_kms(&ep);
    let key = emu.create_key(REGION, None).unwrap();
    let (_, body) = admin(&ep, "GET", "/_emulator/principals", "");
    let registry: serde_json::Value = serde_json::from_str(&body).unwrap();
    let arns: Vec<&str> = registry["arns"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|v| v.as_str())
        .collect();
    assert!(arns.contains(&"arn:aws:iam::123456789012:root"));
    assert!(arns.contains(&"arn:aws:iam::123456789012:role/msf-cmk-operator"));
    assert!(arns.contains(&"arn:aws:iam::111122223333:role/msf-cmk-controller"));

    let ghost = "arn:aws:iam::123456789012:role/Ghost";
    let mut doc: serde_json::Value = serde_json::from_str(&policy_with("Ghost")).unwrap();
    doc["Statement"][1]["Principal"]["AWS"] = ghost.into();
    let e = put(&c, &key, &doc.to_string()).await.unwrap_err();
    assert!(e.starts_with("MalformedPolicyDocumentException"), "{e}");
    assert!(e.contains("invalid principals"), "{e}");

    let (status, _) = admin(
        &ep,
        "PUT",
        "/_emulator/principals",
        &json!({ "arns": [ghost] }).to_string(),
    );
    assert_eq!(status, 200);
    put(&c, &key, &doc.to_string()).await.expect("exists now");
    // Off, any principal goes.
    emu.set_strict_principals(false);
    doc["Statement"][1]["Principal"]["AWS"] = "arn:aws:iam::123456789012:role/Other".into();
    put(&c, &key, &doc.to_string()).await.expect("not checked");
    emu.shutdown().await;
}

#[tokio::test]
async fn characters_and_statements_without_action_as_kms_takes_them() {
    let emu = emulator().await;
    let c = raw_kms(&emu.endpoint());
    let key = emu.create_key(REGION, None).unwrap();
    // Latin-1 (U+00E9), tab and newline are in KMS's set.
    put(&c, &key, &policy_with("caf\u{e9}\tDescribe\n"))
        .await
        .expect("Latin-1 accepted");
    // Characters as they appear in the policy text (serde_json would escape a control
    // character, so it is spliced in raw).
    let raw_bell = policy_with("bell").replace("bell", "bell\u{7}");
    for bad in [
        policy_with("euro\u{20ac}"),
        policy_with("snow\u{2603}"),
        raw_bell,
    ] {
        let e = put(&c, &key, &bad).await.unwrap_err();
        assert!(e.starts_with("ValidationException"), "{bad:?}: {e}");
        assert!(e.contains("regular expression pattern"), "{e}");
    }
    // Six ASCII characters spelling an escape are fine: the check is on the text KMS gets.
    put(&c, &key, &policy_with("text \\u2603"))
        .await
        .expect("ASCII");

    let mut doc: serde_json::Value = serde_json::from_str(&policy_with("NoAction")).unwrap();
    doc["Statement"][1]
        .as_object_mut()
        .unwrap()
        .remove("Action");
    put(&c, &key, &doc.to_string())
        .await
        .expect("stored, without effect");
    assert_eq!(get(&c, &key).await, doc.to_string());

    // KMS's rule since 2025-08-18, behind a switch: such statements are refused.
    emu.set_reject_incomplete_statements(true);
    let e = put(&c, &key, &doc.to_string()).await.unwrap_err();
    assert!(e.starts_with("MalformedPolicyDocumentException"), "{e}");
    assert!(e.contains("no Action"), "{e}");
    put(&c, &key, &policy_with("Complete"))
        .await
        .expect("complete");
    emu.shutdown().await;
}

#[tokio::test]
async fn the_lockout_check_protects_the_callers_own_access() {
    let emu = emulator().await;
    let c = raw_kms(&emu.endpoint());
    let key = emu.create_key(REGION, None).unwrap();
    let only = |principal: &str| {
        json!({
            "Version": "2012-10-17",
            "Statement": [{
                "Effect": "Allow",
                "Principal": { "AWS": principal },
                "Action": "kms:*",
                "Resource": "*"
            }]
        })
        .to_string()
    };
    let other = only("arn:aws:iam::123456789012:role/KeyAdmin");
    let e = put(&c, &key, &other).await.unwrap_err();
    assert_eq!(
        e,
        "MalformedPolicyDocumentException: The new key policy will not allow you to update the key policy in the future."
    );
    c.put_key_policy()
        .key_id(&key)
        .policy(&other)
        .bypass_policy_lockout_safety_check(true)
        .send()
        .await
        .expect("bypassed");
    // The caller's role (its session calls) keeps the caller in.
    let key2 = emu.create_key(REGION, None).unwrap();
    put(
        &c,
        &key2,
        &only("arn:aws:iam::123456789012:role/msf-cmk-operator"),
    )
    .await
    .expect("caller keeps access");
    emu.shutdown().await;
}

async fn burst(c: &kms::Client, key: &str, n: usize) -> (usize, usize) {
    let mut throttled = 0;
    let mut ok = 0;
    for i in 0..n {
        match code(
            &c.put_key_policy()
                .key_id(key)
                .policy(policy_with(&format!("S{i}")))
                .send()
                .await,
        )
        .as_str()
        {
            "ok" => ok += 1,
            "ThrottlingException" => throttled += 1,
            other => panic!("unexpected {other}"),
        }
    }
    (ok, throttled)
}

#[tokio::test]
async fn quotas_throttle_put_key_policy_at_its_documented_rate() {
    let emu = Emulator::start(EmulatorConfig {
        quotas: Some(Quotas::default()),
        ..EmulatorConfig::default()
    })
    .await
    .unwrap();
    let c = raw_kms(&emu.endpoint());
    let key = emu.create_key(REGION, None).unwrap();
    let (ok, throttled) = burst(&c, &key, 40).await;
    assert!(throttled > 0, "ok {ok}, throttled {throttled}");
    // 15 in the bucket, plus what refills (15/s) while the burst runs.
    assert!((15..40).contains(&ok), "ok {ok}");
    // GetKeyPolicy has its own, larger bucket.
    assert_eq!(code(&c.get_key_policy().key_id(&key).send().await), "ok");

    // Off: the same burst goes through.
    emu.set_quotas(None);
    assert_eq!(burst(&c, &key, 40).await, (40, 0));
    emu.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn msf_quota_is_configurable_and_throttles_as_throttling() {
    let emu = emulator().await;
    let ep = emu.endpoint();
    emu.create_application(REGION, "orders", "FLINK-1_20", ApplicationStatus::Ready)
        .unwrap();
    let (status, _) = admin(&ep, "PUT", "/_emulator/config", r#"{"msf_quota": 5}"#);
    assert_eq!(status, 200);
    let c = raw_msf(&ep);
    let mut codes = Vec::new();
    for _ in 0..20 {
        let r = c
            .describe_application()
            .application_name("orders")
            .send()
            .await;
        codes.push(match r {
            Ok(_) => "ok".to_string(),
            Err(e) => e.into_service_error().code().unwrap_or("?").to_string(),
        });
    }
    let throttled = codes.iter().filter(|c| *c == "ThrottlingException").count();
    assert!(throttled >= 10, "{codes:?}");
    // The project's adapter (and the SDK's retry classifier) treat it as throttling.
    let aws = support_aws::clients(&ep, 1).await;
    let e = aws
        .msf
        .describe_application(REGION, "orders")
        .await
        .unwrap_err();
    assert_eq!(
        e.category,
        msf_cmk_controller::domain::ErrorCategory::Transient,
        "{e:?}"
    );
    emu.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_interleaved_write_lands_once_just_before_the_next_put() {
    let emu = emulator().await;
    let ep = emu.endpoint();
    let c = raw_kms(&ep);
    let key = emu.create_key(REGION, Some(&policy_with("Start"))).unwrap();
    let other_key = emu.create_key(REGION, None).unwrap();
    let person: serde_json::Value = serde_json::from_str(&policy_with("PersonEdit")).unwrap();
    let key_id = key.rsplit('/').next().unwrap();
    let (status, body) = admin(
        &ep,
        "PUT",
        "/_emulator/faults/PutKeyPolicy",
        &json!({ "interleave_policy": person, "key_id": key_id }).to_string(),
    );
    assert_eq!(status, 200, "{body}");

    // Another key's write does not use it.
    put(&c, &other_key, &policy_with("Other")).await.unwrap();
    assert_eq!(get(&c, &key).await, policy_with("Start"));

    // Our write is refused (lock-out), yet the person's write has landed before it.
    let locked = json!({"Statement": [{"Effect": "Allow", "Principal": {"AWS": "arn:aws:iam::123456789012:role/KeyAdmin"}, "Action": "kms:*", "Resource": "*"}]});
    put(&c, &key, &locked.to_string()).await.unwrap_err();
    assert_eq!(get(&c, &key).await, person.to_string());
    // Once only: the next write is ours alone.
    put(&c, &key, &policy_with("Ours")).await.unwrap();
    assert_eq!(get(&c, &key).await, policy_with("Ours"));
    assert!(emu.faults().is_empty(), "{:?}", emu.faults());

    // From Rust, unscoped: the next PutKeyPolicy on any key.
    emu.set_fault("PutKeyPolicy", Fault::interleave(person.clone()));
    put(&c, &other_key, &policy_with("Again")).await.unwrap();
    assert_eq!(get(&c, &other_key).await, policy_with("Again"));
    assert!(emu.faults().is_empty());
    emu.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unsigned_setup_requests_are_not_throttled() {
    let emu = Emulator::start(EmulatorConfig {
        quotas: Some(Quotas::default()),
        ..EmulatorConfig::default()
    })
    .await
    .unwrap();
    let ep = emu.endpoint();
    // 25 CreateKey (quota 5/s) without a signature, as scripts seed keys.
    for i in 0..25 {
        let addr = ep.trim_start_matches("http://").to_string();
        let (status, body) = tokio::task::block_in_place(|| {
            use std::io::{Read, Write};
            let mut s = std::net::TcpStream::connect(&addr).unwrap();
            let body = "{}";
            write!(
                s,
                "POST / HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nX-Amz-Target: TrentService.CreateKey\r\nContent-Type: application/x-amz-json-1.1\r\nContent-Length: {}\r\n\r\n{body}",
                body.len()
            )
            .unwrap();
            let mut out = String::new();
            s.read_to_string(&mut out).unwrap();
            (
                out.split_whitespace().nth(1).unwrap_or("0").to_string(),
                out,
            )
        });
        assert_eq!(status, "200", "key {i}: {body}");
    }
    // Signed ones (the SDK) are.
    let c = raw_kms(&ep);
    let mut codes = Vec::new();
    for _ in 0..10 {
        codes.push(code(&c.create_key().send().await));
    }
    assert!(
        codes.iter().any(|c| c == "ThrottlingException"),
        "{codes:?}"
    );
    emu.shutdown().await;
}

#[tokio::test]
async fn create_key_checks_its_policy_like_put_key_policy() {
    let emu = emulator().await;
    let c = raw_kms(&emu.endpoint());
    let locked = json!({"Statement": [{"Effect": "Allow", "Principal": {"AWS": "arn:aws:iam::123456789012:role/KeyAdmin"}, "Action": "kms:*", "Resource": "*"}]}).to_string();
    let r = c.create_key().policy(&locked).send().await;
    assert_eq!(code(&r), "MalformedPolicyDocumentException");
    let r = c
        .create_key()
        .policy(&locked)
        .bypass_policy_lockout_safety_check(true)
        .send()
        .await;
    assert_eq!(code(&r), "ok");
    let r = c
        .create_key()
        .policy(policy_with("snow\u{2603}"))
        .send()
        .await;
    assert_eq!(code(&r), "ValidationException");
    emu.shutdown().await;
}

#[tokio::test]
async fn the_sdk_retries_msf_throttling_on_its_own() {
    let emu = Emulator::start(EmulatorConfig {
        quotas: Some(Quotas { msf_per_second: 1 }),
        ..EmulatorConfig::default()
    })
    .await
    .unwrap();
    let ep = emu.endpoint();
    emu.create_application(REGION, "orders", "FLINK-1_20", ApplicationStatus::Ready)
        .unwrap();
    let conf = msf::config::Builder::new()
        .behavior_version(aws_config::BehaviorVersion::latest())
        .region(aws_config::Region::new(REGION))
        .endpoint_url(&ep)
        .credentials_provider(aws_credential_types::Credentials::new(
            "AKIDTEST", "secret", None, None, "test",
        ))
        .retry_config(aws_smithy_types::retry::RetryConfig::standard().with_max_attempts(3))
        .build();
    let c = msf::Client::from_conf(conf);
    for _ in 0..2 {
        let _ = c
            .describe_application()
            .application_name("orders")
            .send()
            .await;
    }
    let attempts = emu
        .calls(0)
        .iter()
        .filter(|r| r.operation == "DescribeApplication")
        .count();
    assert!(
        attempts >= 3,
        "the throttled call was retried: {attempts} attempts"
    );
    emu.shutdown().await;
}
