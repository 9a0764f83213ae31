//! The KMS adapter against the embedded emulator: the shared suite, then the errors the
//! controller must classify (policy too large, malformed, throttled, 5xx, access denied).

// The emulator (and the shared test support) exists only with the default feature `emulator`.
#![cfg(feature = "emulator")]

mod support_aws;

use msf_cmk_controller::domain::ErrorCategory;
use msf_cmk_controller::emulator::{Fault, MAX_POLICY_BYTES};
use support_aws::{REGION, clients, emulator, kms_suite, msf_ready_policy};

#[tokio::test]
async fn kms_suite_against_emulator() {
    let emu = emulator().await;
    kms_suite(&emu.endpoint()).await;
    emu.shutdown().await;
}

/// The SDK treats LimitExceededException as throttling; for an oversize policy that would be
/// retried until the attempts run out. It must be terminal and sent exactly once.
#[tokio::test]
async fn oversize_policy_is_terminal_and_not_retried() {
    let emu = emulator().await;
    let aws = clients(&emu.endpoint(), 3).await;
    let key = emu.create_key(REGION, None).unwrap();
    let mut doc: serde_json::Value = serde_json::from_str(&msf_ready_policy()).unwrap();
    doc["Statement"][0]["Sid"] = "x".repeat(MAX_POLICY_BYTES).into();
    let oversize = doc.to_string();
    emu.reset_counts();

    let e = aws
        .kms
        .put_key_policy(REGION, &key, &oversize)
        .await
        .expect_err("too large");
    assert_eq!(e.code, "LimitExceededException");
    assert_eq!(e.category, ErrorCategory::Terminal);
    assert!(
        e.message.contains("32768"),
        "AWS's message kept: {}",
        e.message
    );
    assert_eq!(emu.call_count("PutKeyPolicy"), 1, "not retried");
    // The policy is unchanged.
    assert!(!emu.key_policy(&key).unwrap().contains("xxxx"));
    emu.shutdown().await;
}

#[tokio::test]
async fn malformed_and_lockout_policies_are_terminal() {
    let emu = emulator().await;
    let aws = clients(&emu.endpoint(), 3).await;
    let key = emu.create_key(REGION, None).unwrap();
    emu.reset_counts();

    let e = aws
        .kms
        .put_key_policy(REGION, &key, "{not json")
        .await
        .unwrap_err();
    assert_eq!(e.code, "MalformedPolicyDocumentException");
    assert_eq!(e.category, ErrorCategory::Terminal);

    // Only the MSF statement: nobody in the account could change the policy again.
    let lockout = serde_json::json!({
        "Version": "2012-10-17",
        "Statement": [{
            "Effect": "Allow",
            "Principal": { "Service": "kinesisanalytics.amazonaws.com" },
            "Action": "kms:Decrypt",
            "Resource": "*"
        }]
    })
    .to_string();
    let e = aws
        .kms
        .put_key_policy(REGION, &key, &lockout)
        .await
        .unwrap_err();
    assert_eq!(e.code, "MalformedPolicyDocumentException");
    assert!(
        e.message
            .contains("will not allow you to update the key policy")
    );
    assert_eq!(
        emu.call_count("PutKeyPolicy"),
        2,
        "terminal errors are not retried"
    );
    emu.shutdown().await;
}

#[tokio::test]
async fn throttling_is_transient_and_retried() {
    let emu = emulator().await;
    let aws = clients(&emu.endpoint(), 2).await;
    let key = emu.create_key(REGION, None).unwrap();
    emu.set_fault("GetKeyPolicy", Fault::throttle(1.0));
    emu.reset_counts();

    let e = aws.kms.get_key_policy(REGION, &key).await.unwrap_err();
    assert_eq!(e.code, "ThrottlingException");
    assert_eq!(e.category, ErrorCategory::Transient);
    assert_eq!(emu.call_count("GetKeyPolicy"), 2, "the SDK retried once");

    // Once the throttling stops, the call goes through.
    emu.clear_faults();
    aws.kms
        .get_key_policy(REGION, &key)
        .await
        .expect("recovered");
    emu.shutdown().await;
}

#[tokio::test]
async fn server_errors_are_transient_and_access_denied_terminal() {
    let emu = emulator().await;
    let aws = clients(&emu.endpoint(), 2).await;
    let key = emu.create_key(REGION, None).unwrap();

    emu.set_fault("DescribeKey", Fault::server_error(1.0));
    emu.reset_counts();
    let e = aws.kms.describe_key(REGION, &key).await.unwrap_err();
    assert_eq!(e.code, "KMSInternalException");
    assert_eq!(e.category, ErrorCategory::Transient);
    assert_eq!(emu.call_count("DescribeKey"), 2, "5xx retried by the SDK");

    emu.set_fault("DescribeKey", Fault::deny());
    emu.reset_counts();
    let e = aws.kms.describe_key(REGION, &key).await.unwrap_err();
    assert!(e.is_access_denied(), "{e}");
    assert_eq!(e.category, ErrorCategory::Terminal);
    assert!(e.message.contains("kms:DescribeKey"));
    assert_eq!(emu.call_count("DescribeKey"), 1);
    emu.shutdown().await;
}

/// A key ARN of another region is described in its own region, so the controller can say
/// "wrong region" instead of "not found".
#[tokio::test]
async fn key_arn_of_another_region_is_described_there() {
    let emu = emulator().await;
    let aws = clients(&emu.endpoint(), 1).await;
    let key = emu.create_key("eu-west-1", None).unwrap();
    let k = aws.kms.describe_key(REGION, &key).await.unwrap();
    assert_eq!(k.region, "eu-west-1");
    assert_eq!(k.arn, key);
    aws.kms.get_key_policy(REGION, &key).await.unwrap();
    emu.shutdown().await;
}
