//! The MSF adapter against the embedded emulator: describe, update with the conditional
//! token or the version id, and every error class (not found, conflict, in use, refused
//! key, throttling, 5xx, access denied).

// The emulator (and the shared test support) exists only with the default feature `emulator`.
#![cfg(feature = "emulator")]

mod support_aws;

use std::time::Duration;

use msf_cmk_controller::domain::{
    ApplicationStatus, AppliedKeyType, EncryptionUpdate, ErrorCategory, ObservedApplication,
};
use msf_cmk_controller::emulator::Fault;
use support_aws::{REGION, clients, emulator, msf_ready_policy};

fn to_cmk(app: &ObservedApplication, key: &str) -> EncryptionUpdate {
    EncryptionUpdate {
        region: REGION.into(),
        application_name: app.name.clone(),
        current_version_id: app.version_id,
        conditional_token: app.conditional_token.clone(),
        key_type: AppliedKeyType::CustomerManagedKey,
        key_id: Some(key.to_string()),
    }
}

#[tokio::test]
async fn describe_and_switch_to_cmk_and_back() {
    let emu = emulator().await;
    let aws = clients(&emu.endpoint(), 1).await;
    let arn = emu
        .create_application(REGION, "orders", "FLINK-1_20", ApplicationStatus::Running)
        .unwrap();
    let key = emu.create_key(REGION, Some(&msf_ready_policy())).unwrap();
    emu.create_alias(REGION, "alias/orders", &key).unwrap();

    let app = aws
        .msf
        .describe_application(REGION, "orders")
        .await
        .unwrap();
    assert_eq!(app.arn, arn);
    assert_eq!(app.status, ApplicationStatus::Running);
    assert_eq!(app.runtime_environment, "FLINK-1_20");
    assert_eq!(app.encryption.key_type, AppliedKeyType::AwsOwnedKey);
    assert_eq!(app.encryption.key_id, None);
    let token = app.conditional_token.clone().expect("token");

    // KeyId is reported as given: here an alias.
    let after = aws
        .msf
        .update_application_encryption(&to_cmk(&app, "alias/orders"))
        .await
        .unwrap();
    assert_eq!(after.version_id, app.version_id + 1);
    assert_ne!(after.conditional_token.as_deref(), Some(token.as_str()));
    assert_eq!(after.status, ApplicationStatus::Updating);
    assert_eq!(
        after.encryption.key_type,
        AppliedKeyType::CustomerManagedKey
    );
    assert_eq!(after.encryption.key_id.as_deref(), Some("alias/orders"));

    tokio::time::sleep(Duration::from_millis(400)).await;
    let settled = aws
        .msf
        .describe_application(REGION, "orders")
        .await
        .unwrap();
    assert_eq!(settled.status, ApplicationStatus::Running);

    // Back to the AWS owned key.
    let back = EncryptionUpdate {
        key_type: AppliedKeyType::AwsOwnedKey,
        key_id: None,
        ..to_cmk(&settled, "")
    };
    let after = aws.msf.update_application_encryption(&back).await.unwrap();
    assert_eq!(after.encryption.key_type, AppliedKeyType::AwsOwnedKey);
    emu.shutdown().await;
}

/// The adapter sends the conditional token when there is one (and then not the version id),
/// else the version id.
#[tokio::test]
async fn update_sends_token_else_version_id() {
    let emu = emulator().await;
    let aws = clients(&emu.endpoint(), 1).await;
    emu.create_application(REGION, "ready-app", "FLINK-1_20", ApplicationStatus::Ready)
        .unwrap();
    let key = emu.create_key(REGION, Some(&msf_ready_policy())).unwrap();
    let app = aws
        .msf
        .describe_application(REGION, "ready-app")
        .await
        .unwrap();

    // A wrong version id is ignored when the token is sent (MSF refuses both at once).
    let mut update = to_cmk(&app, &key);
    update.current_version_id = 999;
    let after = aws
        .msf
        .update_application_encryption(&update)
        .await
        .unwrap();
    assert_eq!(after.version_id, 2);
    tokio::time::sleep(Duration::from_millis(400)).await;
    let settled = emu.application(REGION, "ready-app").unwrap();
    assert_eq!(
        settled.status,
        ApplicationStatus::Ready,
        "READY stays READY"
    );

    // Without a token, the version id decides.
    let mut update = to_cmk(&settled, &key);
    update.conditional_token = None;
    let after = aws
        .msf
        .update_application_encryption(&update)
        .await
        .unwrap();
    assert_eq!(after.version_id, 3);
    emu.shutdown().await;
}

#[tokio::test]
async fn stale_token_or_version_is_a_conflict() {
    let emu = emulator().await;
    emu.set_update_delay(Duration::ZERO);
    let aws = clients(&emu.endpoint(), 3).await;
    emu.create_application(REGION, "app", "FLINK-1_20", ApplicationStatus::Running)
        .unwrap();
    let key = emu.create_key(REGION, Some(&msf_ready_policy())).unwrap();
    let stale = aws.msf.describe_application(REGION, "app").await.unwrap();
    aws.msf
        .update_application_encryption(&to_cmk(&stale, &key))
        .await
        .unwrap();
    emu.reset_counts();

    let e = aws
        .msf
        .update_application_encryption(&to_cmk(&stale, &key))
        .await
        .unwrap_err();
    assert_eq!(e.code, "ConcurrentModificationException");
    assert_eq!(e.category, ErrorCategory::Conflict);
    let mut by_version = to_cmk(&stale, &key);
    by_version.conditional_token = None;
    let e = aws
        .msf
        .update_application_encryption(&by_version)
        .await
        .unwrap_err();
    assert_eq!(e.category, ErrorCategory::Conflict);
    assert!(e.message.contains("version id"), "{}", e.message);
    assert_eq!(
        emu.call_count("UpdateApplication"),
        2,
        "conflicts are not retried"
    );
    emu.shutdown().await;
}

#[tokio::test]
async fn update_while_updating_is_resource_in_use() {
    let emu = emulator().await;
    emu.set_update_delay(Duration::from_secs(30));
    let aws = clients(&emu.endpoint(), 1).await;
    emu.create_application(REGION, "busy", "FLINK-1_20", ApplicationStatus::Running)
        .unwrap();
    let key = emu.create_key(REGION, Some(&msf_ready_policy())).unwrap();
    let app = aws.msf.describe_application(REGION, "busy").await.unwrap();
    let updating = aws
        .msf
        .update_application_encryption(&to_cmk(&app, &key))
        .await
        .unwrap();
    assert_eq!(updating.status, ApplicationStatus::Updating);

    let e = aws
        .msf
        .update_application_encryption(&to_cmk(&updating, &key))
        .await
        .unwrap_err();
    assert_eq!(e.code, "ResourceInUseException");
    assert_eq!(e.category, ErrorCategory::Conflict);
    assert!(e.message.contains("UPDATING"));

    // Also refused in other statuses, e.g. STARTING.
    emu.create_application(
        REGION,
        "starting",
        "FLINK-1_20",
        ApplicationStatus::Starting,
    )
    .unwrap();
    let app = aws
        .msf
        .describe_application(REGION, "starting")
        .await
        .unwrap();
    let e = aws
        .msf
        .update_application_encryption(&to_cmk(&app, &key))
        .await
        .unwrap_err();
    assert_eq!(e.code, "ResourceInUseException");
    emu.shutdown().await;
}

#[tokio::test]
async fn not_found_is_terminal() {
    let emu = emulator().await;
    let aws = clients(&emu.endpoint(), 3).await;
    emu.reset_counts();
    let e = aws
        .msf
        .describe_application(REGION, "nope")
        .await
        .unwrap_err();
    assert!(e.is_not_found(), "{e}");
    assert_eq!(e.category, ErrorCategory::Terminal);
    assert!(e.message.contains("nope"));
    assert_eq!(emu.call_count("DescribeApplication"), 1);
    emu.shutdown().await;
}

/// MSF refuses a CMK it cannot use: disabled or pending deletion, missing service
/// principals, an asymmetric key, another account, a missing key, an old runtime.
#[tokio::test]
async fn unusable_keys_are_refused() {
    let emu = emulator().await;
    emu.set_update_delay(Duration::ZERO);
    let aws = clients(&emu.endpoint(), 1).await;
    emu.create_application(REGION, "app", "FLINK-1_20", ApplicationStatus::Running)
        .unwrap();
    emu.create_application(REGION, "old", "FLINK-1_18", ApplicationStatus::Running)
        .unwrap();
    let good = emu.create_key(REGION, Some(&msf_ready_policy())).unwrap();
    let disabled = emu.create_key(REGION, Some(&msf_ready_policy())).unwrap();
    emu.disable_key(&disabled).unwrap();
    let deleting = emu.create_key(REGION, Some(&msf_ready_policy())).unwrap();
    emu.schedule_key_deletion(&deleting).unwrap();
    let no_principals = emu.create_key(REGION, None).unwrap();
    let mut asym = msf_cmk_controller::emulator::KeyOptions::new(REGION);
    asym.spec = "RSA_2048".into();
    asym.usage = "SIGN_VERIFY".into();
    asym.policy = Some(msf_ready_policy());
    let asymmetric = emu.create_key_with(asym).unwrap();
    let mut other = msf_cmk_controller::emulator::KeyOptions::new(REGION);
    other.account = Some("210987654321".into());
    other.policy = Some(msf_ready_policy());
    let cross_account = emu.create_key_with(other).unwrap();
    let missing = format!(
        "arn:aws:kms:{REGION}:123456789012:key/{}",
        uuid::Uuid::new_v4()
    );

    let app = aws.msf.describe_application(REGION, "app").await.unwrap();
    for (key, expect) in [
        (&disabled, "Disabled"),
        (&deleting, "PendingDeletion"),
        (
            &no_principals,
            "infrastructure.kinesisanalytics.amazonaws.com",
        ),
        (&asymmetric, "SYMMETRIC_DEFAULT"),
        (&cross_account, "same account"),
        (&missing, "could not be found"),
    ] {
        let e = aws
            .msf
            .update_application_encryption(&to_cmk(&app, key))
            .await
            .unwrap_err();
        assert!(
            matches!(
                e.code.as_str(),
                "InvalidArgumentException" | "InvalidRequestException"
            ),
            "{e}"
        );
        assert_eq!(e.category, ErrorCategory::Terminal);
        assert!(e.message.contains(expect), "{key}: {}", e.message);
    }
    let old = aws.msf.describe_application(REGION, "old").await.unwrap();
    let e = aws
        .msf
        .update_application_encryption(&to_cmk(&old, &good))
        .await
        .unwrap_err();
    assert_eq!(e.code, "InvalidArgumentException");
    assert!(e.message.contains("1.20"));

    // Nothing changed on the refused application.
    let now = emu.application(REGION, "app").unwrap();
    assert_eq!(now.version_id, app.version_id);
    assert_eq!(now.encryption.key_type, AppliedKeyType::AwsOwnedKey);
    emu.shutdown().await;
}

#[tokio::test]
async fn throttling_and_5xx_are_transient_and_retried_access_denied_terminal() {
    let emu = emulator().await;
    let aws = clients(&emu.endpoint(), 2).await;
    emu.create_application(REGION, "app", "FLINK-1_20", ApplicationStatus::Running)
        .unwrap();

    emu.set_fault("DescribeApplication", Fault::throttle(1.0));
    emu.reset_counts();
    let e = aws
        .msf
        .describe_application(REGION, "app")
        .await
        .unwrap_err();
    assert_eq!(e.code, "ThrottlingException");
    assert_eq!(e.category, ErrorCategory::Transient);
    assert_eq!(emu.call_count("DescribeApplication"), 2, "retried");

    emu.set_fault("DescribeApplication", Fault::server_error(1.0));
    emu.reset_counts();
    let e = aws
        .msf
        .describe_application(REGION, "app")
        .await
        .unwrap_err();
    assert_eq!(e.category, ErrorCategory::Transient);
    assert_eq!(emu.call_count("DescribeApplication"), 2, "retried");

    emu.set_fault("DescribeApplication", Fault::deny());
    let e = aws
        .msf
        .describe_application(REGION, "app")
        .await
        .unwrap_err();
    assert!(e.is_access_denied());
    assert_eq!(e.category, ErrorCategory::Terminal);

    // Half the calls throttled: with retries the adapter still gets through.
    emu.set_fault("DescribeApplication", Fault::throttle(0.5));
    let aws = clients(&emu.endpoint(), 10).await;
    for _ in 0..5 {
        aws.msf
            .describe_application(REGION, "app")
            .await
            .expect("retried through");
    }
    let outcomes = emu.outcome_counts();
    assert!(outcomes["DescribeApplication"]["ok"] >= 5);

    // Added latency is felt.
    emu.set_fault(
        "DescribeApplication",
        Fault::latency(Duration::from_millis(150)),
    );
    let t = std::time::Instant::now();
    aws.msf.describe_application(REGION, "app").await.unwrap();
    assert!(t.elapsed() >= Duration::from_millis(150));
    emu.shutdown().await;
}

/// Requests are routed by the region of the SigV4 scope: applications live per region.
#[tokio::test]
async fn regions_are_separate() {
    let emu = emulator().await;
    let aws = clients(&emu.endpoint(), 1).await;
    emu.create_application("eu-west-1", "app", "FLINK-1_20", ApplicationStatus::Ready)
        .unwrap();
    let app = aws
        .msf
        .describe_application("eu-west-1", "app")
        .await
        .unwrap();
    assert!(app.arn.contains(":eu-west-1:"));
    let e = aws
        .msf
        .describe_application(REGION, "app")
        .await
        .unwrap_err();
    assert!(e.is_not_found());
    emu.shutdown().await;
}

/// Nothing listening: the request cannot be sent, which is transient.
#[tokio::test]
async fn unreachable_endpoint_is_transient() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let endpoint = format!("http://{}", listener.local_addr().unwrap());
    drop(listener);
    let aws = clients(&endpoint, 1).await;
    let e = aws
        .msf
        .describe_application(REGION, "app")
        .await
        .unwrap_err();
    assert_eq!(e.code, "DispatchFailure", "{e}");
    assert_eq!(e.category, ErrorCategory::Transient);
}

/// The client-side limit paces calls: 5/s with a burst of 5 makes 10 calls last about 1 s.
#[tokio::test]
async fn client_side_rate_limit_paces_calls() {
    let emu = emulator().await;
    emu.create_application(REGION, "app", "FLINK-1_20", ApplicationStatus::Ready)
        .unwrap();
    let mut opts = msf_cmk_controller::aws::ConnectOptions::local(emu.endpoint());
    opts.rate_limits =
        msf_cmk_controller::aws::RateLimits::unlimited().with("DescribeApplication", 5.0, 5.0);
    let aws = msf_cmk_controller::aws::connect(&opts).await.unwrap();
    let t = std::time::Instant::now();
    for _ in 0..10 {
        aws.msf.describe_application(REGION, "app").await.unwrap();
    }
    assert!(
        t.elapsed() >= Duration::from_millis(900),
        "{:?}",
        t.elapsed()
    );
    // That another region has its own lane is a unit test of src/aws/ratelimit.rs: an upper
    // bound on a wall-clock time here would only measure how loaded the machine is.
    emu.shutdown().await;
}
