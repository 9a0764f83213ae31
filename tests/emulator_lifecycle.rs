//! The emulator's MSF update lifecycle through the plain SDK: rollbacks and operations,
//! snapshot settings, and MSF's key checks (caller and service principals, with conditions,
//! on the new key and on the key an update leaves).

// The emulator (and the shared test support) exists only with the default feature `emulator`.
#![cfg(feature = "emulator")]

mod support_aws;

use std::time::Duration;

use aws_credential_types::Credentials;
use aws_sdk_kinesisanalyticsv2 as msf;
use msf::types::{
    ApplicationConfigurationUpdate, ApplicationEncryptionConfigurationUpdate, KeyType,
    OperationStatus,
};
use msf_cmk_controller::domain::{ApplicationStatus, AppliedEncryption, AppliedKeyType};
use msf_cmk_controller::emulator::{EmulatorHandle, Fault, MSF_PRINCIPALS};
use serde_json::json;
use support_aws::{ACCOUNT, REGION, emulator, http, msf_ready_policy};

const CALLER_ROLE: &str = "arn:aws:iam::123456789012:role/msf-cmk-operator";
const CALLER_SESSION: &str =
    "arn:aws:sts::123456789012:assumed-role/msf-cmk-operator/msf-cmk-controller";

fn raw_msf(endpoint: &str) -> msf::Client {
    let conf = msf::config::Builder::new()
        .behavior_version(aws_config::BehaviorVersion::latest())
        .region(aws_config::Region::new(REGION))
        .endpoint_url(endpoint)
        .credentials_provider(Credentials::new("AKIDTEST", "secret", None, None, "test"))
        .retry_config(aws_smithy_types::retry::RetryConfig::disabled())
        .build();
    msf::Client::from_conf(conf)
}

/// The admin API, from a multi-threaded test runtime (the server runs on the other worker).
fn admin(endpoint: &str, method: &str, path: &str, body: &str) -> (u16, String) {
    tokio::task::block_in_place(|| http(endpoint, method, path, body))
}

fn app_arn(name: &str) -> String {
    format!("arn:aws:kinesisanalytics:{REGION}:{ACCOUNT}:application/{name}")
}

/// UpdateApplication to `key` (None = AWS owned) at the application's current version.
async fn switch(
    c: &msf::Client,
    name: &str,
    key: Option<&str>,
) -> Result<msf::operation::update_application::UpdateApplicationOutput, String> {
    let d = c
        .describe_application()
        .application_name(name)
        .send()
        .await
        .map_err(|e| format!("{e:?}"))?;
    let version = d.application_detail().unwrap().application_version_id();
    let enc = match key {
        Some(k) => ApplicationEncryptionConfigurationUpdate::builder()
            .key_type_update(KeyType::CustomerManagedKey)
            .key_id_update(k),
        None => ApplicationEncryptionConfigurationUpdate::builder()
            .key_type_update(KeyType::AwsOwnedKey),
    };
    c.update_application()
        .application_name(name)
        .current_application_version_id(version)
        .application_configuration_update(
            ApplicationConfigurationUpdate::builder()
                .application_encryption_configuration_update(enc.build().unwrap())
                .build(),
        )
        .send()
        .await
        .map_err(|e| {
            let se = e.into_service_error();
            format!(
                "{}: {}",
                msf::error::ProvideErrorMetadata::code(&se).unwrap_or("?"),
                msf::error::ProvideErrorMetadata::message(&se).unwrap_or("")
            )
        })
}

async fn operation(
    c: &msf::Client,
    name: &str,
    id: &str,
) -> msf::types::ApplicationOperationInfoDetails {
    c.describe_application_operation()
        .application_name(name)
        .operation_id(id)
        .send()
        .await
        .expect("DescribeApplicationOperation")
        .application_operation_info_details()
        .cloned()
        .expect("details")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rollback_restores_the_configuration_and_fails_the_operation() {
    let emu = emulator().await;
    let c = raw_msf(&emu.endpoint());
    for name in ["orders", "payments"] {
        emu.create_application(REGION, name, "FLINK-1_20", ApplicationStatus::Running)
            .unwrap();
    }
    let key = emu.create_key(REGION, Some(&msf_ready_policy())).unwrap();
    // Scoped through the admin API, as scripts do: only "orders" rolls back.
    let (code, _) = admin(
        &emu.endpoint(),
        "PUT",
        "/_emulator/faults/UpdateApplication",
        r#"{"rollback": true, "application": "orders"}"#,
    );
    assert_eq!(code, 200);

    let out = switch(&c, "orders", Some(&key)).await.expect("accepted");
    let op_id = out.operation_id().expect("OperationId").to_string();
    let d = out.application_detail().unwrap();
    assert_eq!(d.application_version_id(), 2);
    assert_eq!(d.application_status().as_str(), "UPDATING");
    assert_eq!(
        operation(&c, "orders", &op_id).await.operation_status(),
        &OperationStatus::InProgress
    );

    tokio::time::sleep(Duration::from_millis(500)).await;
    let d = c
        .describe_application()
        .application_name("orders")
        .send()
        .await
        .unwrap();
    let d = d.application_detail().unwrap();
    assert_eq!(d.application_status().as_str(), "RUNNING");
    assert_eq!(d.application_version_id(), 3, "a rollback is a new version");
    assert_eq!(d.application_version_rolled_back_from(), Some(2));
    assert_eq!(d.application_version_rolled_back_to(), Some(1));
    let enc = d
        .application_configuration_description()
        .and_then(|c| c.application_encryption_configuration_description())
        .unwrap();
    assert_eq!(
        enc.key_type(),
        &KeyType::AwsOwnedKey,
        "previous key is back"
    );
    assert_eq!(enc.key_id(), None);

    let details = operation(&c, "orders", &op_id).await;
    assert_eq!(details.operation(), "UpdateApplication");
    assert_eq!(details.operation_status(), &OperationStatus::Failed);
    let change = details.application_version_change_details().unwrap();
    assert_eq!(
        (
            change.application_version_updated_from(),
            change.application_version_updated_to()
        ),
        (1, 2)
    );
    let failure = details
        .operation_failure_details()
        .expect("failure details");
    let rollback_id = failure.rollback_operation_id().expect("rollback operation");
    let message = failure.error_info().and_then(|e| e.error_string()).unwrap();
    assert!(message.contains("rolled back"), "{message}");
    let rollback = operation(&c, "orders", rollback_id).await;
    assert_eq!(rollback.operation(), "RollbackApplication");
    assert_eq!(rollback.operation_status(), &OperationStatus::Successful);
    assert_eq!(emu.rolled_back_from(REGION, "orders"), Some(2));

    // The other application is not in the fault's scope: its update succeeds.
    let out = switch(&c, "payments", Some(&key)).await.expect("accepted");
    let op_id = out.operation_id().unwrap().to_string();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let details = operation(&c, "payments", &op_id).await;
    assert_eq!(details.operation_status(), &OperationStatus::Successful);
    assert!(details.operation_failure_details().is_none());
    let d = c
        .describe_application()
        .application_name("payments")
        .send()
        .await
        .unwrap();
    let d = d.application_detail().unwrap();
    assert_eq!(d.application_version_id(), 2);
    assert_eq!(d.application_version_updated_from(), Some(1));
    assert_eq!(d.application_version_rolled_back_from(), None);
    emu.shutdown().await;
}

#[tokio::test]
async fn operations_are_listed_newest_first_with_filters_and_pages() {
    let emu = emulator().await;
    emu.set_update_delay(Duration::ZERO);
    let c = raw_msf(&emu.endpoint());
    emu.create_application(REGION, "orders", "FLINK-1_20", ApplicationStatus::Running)
        .unwrap();
    let key = emu.create_key(REGION, Some(&msf_ready_policy())).unwrap();
    emu.set_fault(
        "UpdateApplication",
        Fault::rollback().for_application("orders"),
    );
    switch(&c, "orders", Some(&key)).await.unwrap();
    emu.set_fault(
        "UpdateApplication",
        Fault::default().for_application("orders"),
    );
    let ok = switch(&c, "orders", Some(&key)).await.unwrap();

    let all = c
        .list_application_operations()
        .application_name("orders")
        .send()
        .await
        .unwrap();
    let ops: Vec<(String, String)> = all
        .application_operation_info_list()
        .iter()
        .map(|o| {
            (
                o.operation().unwrap_or_default().to_string(),
                o.operation_status().unwrap().as_str().to_string(),
            )
        })
        .collect();
    assert_eq!(
        ops,
        vec![
            ("UpdateApplication".to_string(), "SUCCESSFUL".to_string()),
            ("RollbackApplication".to_string(), "SUCCESSFUL".to_string()),
            ("UpdateApplication".to_string(), "FAILED".to_string()),
        ]
    );
    assert_eq!(
        all.application_operation_info_list()[0].operation_id(),
        ok.operation_id()
    );
    let failed = c
        .list_application_operations()
        .application_name("orders")
        .operation("UpdateApplication")
        .operation_status(OperationStatus::Failed)
        .send()
        .await
        .unwrap();
    assert_eq!(failed.application_operation_info_list().len(), 1);
    let page = c
        .list_application_operations()
        .application_name("orders")
        .limit(2)
        .send()
        .await
        .unwrap();
    assert_eq!(page.application_operation_info_list().len(), 2);
    let rest = c
        .list_application_operations()
        .application_name("orders")
        .limit(2)
        .next_token(page.next_token().expect("a second page"))
        .send()
        .await
        .unwrap();
    assert_eq!(rest.application_operation_info_list().len(), 1);
    assert!(rest.next_token().is_none());
    let missing = c
        .describe_application_operation()
        .application_name("orders")
        .operation_id("nope")
        .send()
        .await
        .unwrap_err();
    assert!(
        missing
            .into_service_error()
            .is_resource_not_found_exception()
    );
    emu.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn snapshot_setting_is_described_and_settable() {
    let emu = emulator().await;
    let c = raw_msf(&emu.endpoint());
    emu.create_application(REGION, "orders", "FLINK-1_20", ApplicationStatus::Running)
        .unwrap();
    let snapshots = |c: msf::Client| async move {
        c.describe_application()
            .application_name("orders")
            .send()
            .await
            .unwrap()
            .application_detail()
            .and_then(|d| d.application_configuration_description())
            .and_then(|c| c.application_snapshot_configuration_description())
            .map(|s| s.snapshots_enabled())
    };
    assert_eq!(snapshots(c.clone()).await, Some(true));
    emu.set_snapshots_enabled(REGION, "orders", false).unwrap();
    assert_eq!(snapshots(c.clone()).await, Some(false));
    let (code, _) = admin(
        &emu.endpoint(),
        "PUT",
        &format!("/_emulator/applications/{REGION}/orders/snapshots"),
        r#"{"enabled": true}"#,
    );
    assert_eq!(code, 200);
    assert_eq!(snapshots(c.clone()).await, Some(true));
    let (code, _) = admin(
        &emu.endpoint(),
        "PUT",
        &format!("/_emulator/applications/{REGION}/missing/snapshots"),
        r#"{"enabled": true}"#,
    );
    assert_eq!(code, 404);
    emu.shutdown().await;
}

/// A key policy with the service statements of the reference policy (conditions included)
/// and, optionally, the caller's statement and an administrator that is not the caller.
fn reference_policy(app: &str, caller: Option<&str>) -> String {
    let mut statements = vec![
        json!({
            "Sid": "KeyAdmin",
            "Effect": "Allow",
            "Principal": { "AWS": "arn:aws:iam::123456789012:role/KeyAdmin" },
            "Action": "kms:*",
            "Resource": "*"
        }),
        json!({
            "Sid": "Services",
            "Effect": "Allow",
            "Principal": { "Service": MSF_PRINCIPALS },
            "Action": ["kms:DescribeKey", "kms:Decrypt", "kms:GenerateDataKey"],
            "Resource": "*",
            "Condition": { "StringEquals": { "aws:SourceArn": app_arn(app) } }
        }),
    ];
    if let Some(role) = caller {
        statements.push(json!({
            "Sid": "Operator",
            "Effect": "Allow",
            "Principal": { "AWS": role },
            "Action": ["kms:DescribeKey", "kms:Decrypt", "kms:GenerateDataKey",
                       "kms:GenerateDataKeyWithoutPlaintext", "kms:CreateGrant"],
            "Resource": "*",
            "Condition": { "StringEquals": {
                "kms:ViaService": format!("kinesisanalytics.{REGION}.amazonaws.com")
            } }
        }));
    }
    json!({ "Version": "2012-10-17", "Statement": statements }).to_string()
}

fn setup(emu: &EmulatorHandle, name: &str) {
    emu.create_application(REGION, name, "FLINK-1_20", ApplicationStatus::Ready)
        .unwrap();
}

#[tokio::test]
async fn msf_checks_the_caller_and_the_service_principals_on_the_new_key() {
    let emu = emulator().await;
    emu.set_update_delay(Duration::ZERO);
    let c = raw_msf(&emu.endpoint());
    setup(&emu, "orders");

    // KMS's default policy: the caller is in (account delegation), MSF's principals are not.
    let plain = emu.create_key(REGION, None).unwrap();
    let e = switch(&c, "orders", Some(&plain)).await.unwrap_err();
    assert!(e.starts_with("InvalidRequestException"), "{e}");
    assert!(e.contains("kinesisanalytics.amazonaws.com"), "{e}");

    // The services are in, but not the caller.
    let no_caller = emu
        .create_key(REGION, Some(&reference_policy("orders", None)))
        .unwrap();
    let e = switch(&c, "orders", Some(&no_caller)).await.unwrap_err();
    assert!(e.starts_with("AccessDeniedException"), "{e}");
    assert!(e.contains(CALLER_SESSION), "{e}");
    assert!(e.contains(&no_caller), "{e}");

    // Conditions count: the service statement is for another application.
    let other_app = emu
        .create_key(
            REGION,
            Some(&reference_policy("payments", Some(CALLER_ROLE))),
        )
        .unwrap();
    let e = switch(&c, "orders", Some(&other_app)).await.unwrap_err();
    assert!(e.starts_with("InvalidRequestException"), "{e}");

    // The role's statement lets its session in; the update goes through.
    let good = emu
        .create_key(REGION, Some(&reference_policy("orders", Some(CALLER_ROLE))))
        .unwrap();
    switch(&c, "orders", Some(&good)).await.expect("allowed");

    // An explicit deny of the caller wins over every allow.
    let mut denied: serde_json::Value =
        serde_json::from_str(&reference_policy("orders", Some(CALLER_ROLE))).unwrap();
    denied["Statement"].as_array_mut().unwrap().push(json!({
        "Effect": "Deny",
        "Principal": { "AWS": CALLER_ROLE },
        "Action": "kms:DescribeKey",
        "Resource": "*"
    }));
    let denied = emu.create_key(REGION, Some(&denied.to_string())).unwrap();
    let e = switch(&c, "orders", Some(&denied)).await.unwrap_err();
    assert!(e.contains("explicit deny"), "{e}");
    emu.shutdown().await;
}

#[tokio::test]
async fn leaving_a_key_needs_the_callers_access_to_it() {
    let emu = emulator().await;
    emu.set_update_delay(Duration::ZERO);
    let c = raw_msf(&emu.endpoint());
    setup(&emu, "orders");
    let old = emu
        .create_key(REGION, Some(&reference_policy("orders", Some(CALLER_ROLE))))
        .unwrap();
    let new = emu
        .create_key(REGION, Some(&reference_policy("orders", Some(CALLER_ROLE))))
        .unwrap();
    emu.set_application_encryption(
        REGION,
        "orders",
        AppliedEncryption {
            key_type: AppliedKeyType::CustomerManagedKey,
            key_id: Some(old.clone()),
        },
    )
    .unwrap();
    // A key administrator removes the operator from the current key.
    emu.put_key_policy_direct(&old, &reference_policy("orders", None))
        .unwrap();
    for target in [Some(new.as_str()), None] {
        let e = switch(&c, "orders", target).await.unwrap_err();
        assert!(e.starts_with("AccessDeniedException"), "{target:?}: {e}");
        assert!(e.contains(&old), "names the key being left: {e}");
    }
    // A disabled current key blocks too.
    emu.put_key_policy_direct(&old, &reference_policy("orders", Some(CALLER_ROLE)))
        .unwrap();
    emu.disable_key(&old).unwrap();
    let e = switch(&c, "orders", None).await.unwrap_err();
    assert!(e.starts_with("InvalidRequestException"), "{e}");
    emu.enable_key(&old).unwrap();
    switch(&c, "orders", Some(&new)).await.expect("CMK -> CMK");
    emu.shutdown().await;
}
