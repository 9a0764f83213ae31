//! Several accounts on one emulator, through the real SDK clients: `sts:AssumeRole` into each
//! account's operator role (principal registry, external ids), requests signed with the
//! issued credentials acting in that account as the role's session (MSF, KMS's
//! cross-account refusal and lock-out check, GetCallerIdentity, the call log telling the key
//! administrator from the operator), expiry, role chaining, and aws-config's
//! `AssumeRoleProvider` refreshing credentials end to end.

// The emulator exists only with the default feature `emulator`.
#![cfg(feature = "emulator")]

mod support_aws;

use std::time::Duration;

use aws_config::SdkConfig;
use aws_config::identity::IdentityCache;
use aws_config::sts::AssumeRoleProvider;
use aws_credential_types::Credentials;
use aws_credential_types::provider::SharedCredentialsProvider;
use aws_sdk_kinesisanalyticsv2 as msf;
use aws_sdk_kms as kms;
use aws_sdk_sts as sts;
use aws_smithy_types::retry::RetryConfig;
use msf_cmk_controller::domain::{ApplicationStatus, AppliedKeyType};
use msf_cmk_controller::emulator::{Emulator, EmulatorConfig, EmulatorHandle, MSF_PRINCIPALS};
use support_aws::http;

const REGION: &str = "us-east-1";
const A: &str = "111111111111";
const B: &str = "222222222222";
const C: &str = "333333333333";

fn operator(account: &str) -> String {
    format!("arn:aws:iam::{account}:role/msf-cmk-operator")
}

/// Three accounts; in each an application `orders` and a key MSF may use; B's and C's
/// operator roles require an external id.
async fn three_accounts() -> (EmulatorHandle, Vec<String>) {
    let emu = Emulator::start(EmulatorConfig {
        account_id: A.into(),
        extra_accounts: vec![B.into(), C.into()],
        update_delay: Duration::from_millis(200),
        ..EmulatorConfig::default()
    })
    .await
    .expect("emulator starts");
    let mut keys = Vec::new();
    for account in [A, B, C] {
        emu.create_application_in(
            account,
            REGION,
            "orders",
            "FLINK-1_20",
            ApplicationStatus::Running,
        )
        .unwrap();
        keys.push(
            emu.create_key_in(account, REGION, Some(&ready_policy(account)))
                .unwrap(),
        );
    }
    emu.create_application_in(
        B,
        REGION,
        "only-in-b",
        "FLINK-1_20",
        ApplicationStatus::Ready,
    )
    .unwrap();
    emu.add_roles_with_external_id([operator(B)], "team-b")
        .unwrap();
    emu.add_roles_with_external_id([operator(C)], "team-c")
        .unwrap();
    (emu, keys)
}

fn ready_policy(account: &str) -> String {
    serde_json::json!({
        "Version": "2012-10-17",
        "Statement": [
            {
                "Sid": "Enable IAM User Permissions",
                "Effect": "Allow",
                "Principal": { "AWS": format!("arn:aws:iam::{account}:root") },
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

fn sdk_config(endpoint: &str, creds: Credentials) -> SdkConfig {
    SdkConfig::builder()
        .behavior_version(aws_config::BehaviorVersion::latest())
        .region(aws_config::Region::new(REGION))
        .endpoint_url(endpoint)
        .credentials_provider(SharedCredentialsProvider::new(creds))
        .retry_config(RetryConfig::disabled())
        .build()
}

fn plain(akid: &str) -> Credentials {
    Credentials::new(akid, "secret", None, None, "test")
}

/// The three clients, signed with `creds`.
struct Clients {
    sts: sts::Client,
    kms: kms::Client,
    msf: msf::Client,
}

fn clients(endpoint: &str, creds: Credentials) -> Clients {
    let conf = sdk_config(endpoint, creds);
    Clients {
        sts: sts::Client::new(&conf),
        kms: kms::Client::new(&conf),
        msf: msf::Client::new(&conf),
    }
}

/// AssumeRole with the hub's plain credentials (or any `via`); the issued credentials.
async fn assume(
    via: &sts::Client,
    role: &str,
    external_id: Option<&str>,
    seconds: Option<i32>,
) -> Result<Credentials, String> {
    let out = via
        .assume_role()
        .role_arn(role)
        .role_session_name("msf-cmk-controller")
        .set_external_id(external_id.map(str::to_string))
        .set_duration_seconds(seconds)
        .send()
        .await
        .map_err(|e| {
            let e = e.into_service_error();
            format!(
                "{}: {}",
                e.meta().code().unwrap_or("?"),
                e.meta().message().unwrap_or("")
            )
        })?;
    let c = out.credentials().expect("credentials");
    Ok(Credentials::new(
        c.access_key_id(),
        c.secret_access_key(),
        Some(c.session_token().to_string()),
        None,
        "assumed",
    ))
}

fn session_arn(account: &str) -> String {
    format!("arn:aws:sts::{account}:assumed-role/msf-cmk-operator/msf-cmk-controller")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_account_acts_with_its_own_role() {
    let (emu, keys) = three_accounts().await;
    let ep = emu.endpoint();
    let hub = clients(&ep, plain("AKIDHUB"));
    let creds = [
        assume(&hub.sts, &operator(A), None, None).await.unwrap(),
        assume(&hub.sts, &operator(B), Some("team-b"), None)
            .await
            .unwrap(),
        assume(&hub.sts, &operator(C), Some("team-c"), Some(1800))
            .await
            .unwrap(),
    ];
    for ((account, key), creds) in [A, B, C].into_iter().zip(&keys).zip(&creds) {
        assert!(creds.access_key_id().starts_with("ASIA"));
        let c = clients(&ep, creds.clone());
        let me = c.sts.get_caller_identity().send().await.unwrap();
        assert_eq!(me.arn(), Some(session_arn(account).as_str()));
        assert_eq!(me.account(), Some(account));

        let app = c
            .msf
            .describe_application()
            .application_name("orders")
            .send()
            .await
            .unwrap();
        let detail = app.application_detail().unwrap();
        let arn = format!("arn:aws:kinesisanalytics:{REGION}:{account}:application/orders");
        assert_eq!(detail.application_arn(), arn);

        // The key id alone resolves in the caller's account.
        let key_id = key.rsplit('/').next().unwrap();
        c.kms.get_key_policy().key_id(key_id).send().await.unwrap();
        c.kms
            .put_key_policy()
            .key_id(key.as_str())
            .policy(ready_policy(account))
            .send()
            .await
            .unwrap();
        c.msf
            .update_application()
            .application_name("orders")
            .current_application_version_id(detail.application_version_id())
            .application_configuration_update(
                msf::types::ApplicationConfigurationUpdate::builder()
                    .application_encryption_configuration_update(
                        msf::types::ApplicationEncryptionConfigurationUpdate::builder()
                            .key_type_update(msf::types::KeyType::CustomerManagedKey)
                            .key_id_update(key.as_str())
                            .build()
                            .unwrap(),
                    )
                    .build(),
            )
            .send()
            .await
            .unwrap();
        let seen = emu.application_in(account, REGION, "orders").unwrap();
        assert_eq!(seen.encryption.key_type, AppliedKeyType::CustomerManagedKey);
        assert_eq!(seen.encryption.key_id.as_deref(), Some(key.as_str()));
    }

    // A's credentials: B's application is not there, B's key is refused cross-account.
    let a = clients(&ep, creds[0].clone());
    let err = a
        .msf
        .describe_application()
        .application_name("only-in-b")
        .send()
        .await
        .unwrap_err();
    assert_eq!(
        err.into_service_error().meta().code(),
        Some("ResourceNotFoundException")
    );
    let err = a
        .kms
        .get_key_policy()
        .key_id(keys[1].as_str())
        .send()
        .await
        .unwrap_err();
    let err = err.into_service_error();
    assert_eq!(err.meta().code(), Some("AccessDeniedException"));
    assert!(
        err.meta().message().unwrap().contains(&session_arn(A)),
        "{err:?}"
    );
    let err = a
        .kms
        .put_key_policy()
        .key_id(keys[1].as_str())
        .policy(ready_policy(B))
        .send()
        .await
        .unwrap_err();
    assert_eq!(
        err.into_service_error().meta().code(),
        Some("AccessDeniedException")
    );
    // Plain credentials act in the first account as the configured caller.
    let me = hub.sts.get_caller_identity().send().await.unwrap();
    assert_eq!(me.arn(), Some(session_arn(A).as_str()));
    assert!(emu.application_in(B, REGION, "only-in-b").is_some());

    // The call log tells who made which call.
    let calls = emu.calls(0);
    for (account, creds) in [A, B, C].into_iter().zip(&creds) {
        let mine: Vec<_> = calls
            .iter()
            .filter(|c| c.access_key_id == creds.access_key_id())
            .collect();
        let ops: Vec<&str> = mine.iter().map(|c| c.operation.as_str()).collect();
        for op in [
            "GetCallerIdentity",
            "DescribeApplication",
            "GetKeyPolicy",
            "PutKeyPolicy",
            "UpdateApplication",
        ] {
            assert!(ops.contains(&op), "{account}: {ops:?}");
        }
        assert!(
            mine.iter()
                .all(|c| c.account == account && c.caller_arn == session_arn(account))
        );
    }
    let assumes: Vec<_> = calls
        .iter()
        .filter(|c| c.operation == "AssumeRole")
        .collect();
    assert_eq!(assumes.len(), 3);
    assert!(
        assumes
            .iter()
            .all(|c| c.access_key_id == "AKIDHUB" && c.account == A)
    );
    assert_eq!(assumes[1].target.as_deref(), Some(operator(B).as_str()));

    let state = emu.state_json();
    assert_eq!(state["accounts"], serde_json::json!([A, B, C]));
    assert_eq!(state["sessions"].as_array().unwrap().len(), 3);
    emu.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_roles_and_wrong_external_ids_are_denied() {
    let (emu, _) = three_accounts().await;
    let ep = emu.endpoint();
    let hub = clients(&ep, plain("AKIDHUB"));
    let denied = |r: Result<Credentials, String>| {
        let e = r.unwrap_err();
        assert!(e.starts_with("AccessDenied:"), "{e}");
        assert!(e.contains("sts:AssumeRole"), "{e}");
    };
    denied(
        assume(
            &hub.sts,
            &format!("arn:aws:iam::{B}:role/nobody"),
            None,
            None,
        )
        .await,
    );
    denied(assume(&hub.sts, &operator(B), None, None).await);
    denied(assume(&hub.sts, &operator(B), Some("team-c"), None).await);
    // A role registered in an account the emulator does not serve.
    emu.add_principals(["arn:aws:iam::444444444444:role/msf-cmk-operator"]);
    denied(assume(&hub.sts, &operator("444444444444"), None, None).await);
    // Registered through the admin API, with an external id.
    let role = format!("arn:aws:iam::{C}:role/msf-cmk-key-admin");
    let body = format!(r#"{{"arns": ["{role}"], "external_id": "keys-c"}}"#);
    let (status, answer) =
        tokio::task::block_in_place(|| http(&ep, "PUT", "/_emulator/principals", &body));
    assert_eq!(status, 200, "{answer}");
    assert!(answer.contains(r#""external_ids":{"#), "{answer}");
    denied(assume(&hub.sts, &role, Some("keys-x"), None).await);
    let admin = assume(&hub.sts, &role, Some("keys-c"), None).await.unwrap();
    let me = clients(&ep, admin)
        .sts
        .get_caller_identity()
        .send()
        .await
        .unwrap();
    assert_eq!(
        me.arn(),
        Some(
            format!("arn:aws:sts::{C}:assumed-role/msf-cmk-key-admin/msf-cmk-controller").as_str()
        )
    );
    // STS's bounds: below 900 seconds is a validation error.
    let e = assume(&hub.sts, &operator(A), None, Some(60))
        .await
        .unwrap_err();
    assert!(e.starts_with("ValidationError:"), "{e}");
    let outcomes = emu.outcome_counts();
    assert_eq!(outcomes["AssumeRole"]["AccessDenied"], 5);
    emu.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chained_sessions_and_expired_credentials() {
    let (emu, keys) = three_accounts().await;
    emu.set_min_session_seconds(1);
    let ep = emu.endpoint();
    let hub = clients(&ep, plain("AKIDHUB"));
    // Role chaining: B's session assumes C's role; at most one hour.
    let b = clients(
        &ep,
        assume(&hub.sts, &operator(B), Some("team-b"), None)
            .await
            .unwrap(),
    );
    let e = assume(&b.sts, &operator(C), Some("team-c"), Some(7200))
        .await
        .unwrap_err();
    assert!(e.starts_with("ValidationError:"), "{e}");
    let c = assume(&b.sts, &operator(C), Some("team-c"), Some(1))
        .await
        .unwrap();
    let chained = clients(&ep, c);
    let me = chained.sts.get_caller_identity().send().await.unwrap();
    assert_eq!(me.arn(), Some(session_arn(C).as_str()));
    chained
        .kms
        .get_key_policy()
        .key_id(keys[2].as_str())
        .send()
        .await
        .unwrap();

    tokio::time::sleep(Duration::from_millis(1_300)).await;
    let err = chained
        .kms
        .get_key_policy()
        .key_id(keys[2].as_str())
        .send()
        .await
        .unwrap_err();
    assert_eq!(
        err.into_service_error().meta().code(),
        Some("ExpiredTokenException")
    );
    let err = chained
        .msf
        .describe_application()
        .application_name("orders")
        .send()
        .await
        .unwrap_err();
    assert_eq!(
        err.into_service_error().meta().code(),
        Some("ExpiredTokenException")
    );
    let err = chained.sts.get_caller_identity().send().await.unwrap_err();
    assert_eq!(
        err.into_service_error().meta().code(),
        Some("ExpiredTokenException")
    );
    let expired: Vec<_> = emu
        .calls(0)
        .into_iter()
        .filter(|c| c.outcome == "ExpiredTokenException")
        .collect();
    assert_eq!(expired.len(), 3);
    assert!(
        expired
            .iter()
            .all(|c| c.account == C && c.caller_arn == session_arn(C))
    );
    emu.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn assume_role_provider_refreshes_before_expiry() {
    let (emu, keys) = three_accounts().await;
    emu.set_min_session_seconds(1);
    let ep = emu.endpoint();
    // Loaded as the controller loads it (time source, sleep), with the pod's credentials.
    let base = aws_config::defaults(aws_config::BehaviorVersion::latest())
        .region(aws_config::Region::new(REGION))
        .endpoint_url(&ep)
        .credentials_provider(plain("AKIDPOD"))
        .retry_config(RetryConfig::disabled())
        .load()
        .await;
    let provider = AssumeRoleProvider::builder(operator(B))
        .external_id("team-b")
        .session_name("msf-cmk-controller")
        .session_length(Duration::from_secs(2))
        .configure(&base)
        .build()
        .await;
    let conf = base
        .into_builder()
        .credentials_provider(SharedCredentialsProvider::new(provider))
        .identity_cache(
            IdentityCache::lazy()
                .buffer_time(Duration::from_millis(300))
                .build(),
        )
        .build();
    let kms = kms::Client::new(&conf);
    for _ in 0..2 {
        kms.get_key_policy()
            .key_id(keys[1].as_str())
            .send()
            .await
            .unwrap();
    }
    tokio::time::sleep(Duration::from_millis(2_200)).await;
    kms.get_key_policy()
        .key_id(keys[1].as_str())
        .send()
        .await
        .unwrap();

    let calls = emu.calls(0);
    let assumes: Vec<_> = calls
        .iter()
        .filter(|c| c.operation == "AssumeRole")
        .collect();
    assert_eq!(
        assumes.len(),
        2,
        "one AssumeRole, cached, then a refresh: {assumes:?}"
    );
    assert!(
        assumes
            .iter()
            .all(|c| c.access_key_id == "AKIDPOD" && c.outcome == "ok")
    );
    let gets: Vec<_> = calls
        .iter()
        .filter(|c| c.operation == "GetKeyPolicy")
        .collect();
    assert_eq!(gets.len(), 3);
    assert!(
        gets.iter()
            .all(|c| c.outcome == "ok" && c.account == B && c.caller_arn == session_arn(B))
    );
    assert_eq!(gets[0].access_key_id, gets[1].access_key_id);
    assert_ne!(gets[1].access_key_id, gets[2].access_key_id);
    emu.shutdown().await;
}

/// A policy granting kms:* to one role of `account` (and MSF its use).
fn role_only_policy(account: &str, role: &str) -> String {
    serde_json::json!({
        "Version": "2012-10-17",
        "Statement": [
            {
                "Sid": "KeyAdministration",
                "Effect": "Allow",
                "Principal": { "AWS": format!("arn:aws:iam::{account}:role/{role}") },
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn key_admin_and_operator_are_told_apart() {
    let (emu, keys) = three_accounts().await;
    let ep = emu.endpoint();
    let hub = clients(&ep, plain("AKIDHUB"));
    let key_admin = format!("arn:aws:iam::{B}:role/msf-cmk-key-admin");
    emu.add_roles_with_external_id([key_admin.as_str()], "team-b")
        .unwrap();
    let admin = clients(
        &ep,
        assume(&hub.sts, &key_admin, Some("team-b"), None)
            .await
            .unwrap(),
    );
    let op_creds = assume(&hub.sts, &operator(B), Some("team-b"), None)
        .await
        .unwrap();
    let operator_clients = clients(&ep, op_creds);

    // The lock-out check evaluates the caller's session against its role: a policy naming
    // only the key administrator keeps it in, and refuses the operator.
    let admin_only = role_only_policy(B, "msf-cmk-key-admin");
    let err = operator_clients
        .kms
        .put_key_policy()
        .key_id(keys[1].as_str())
        .policy(admin_only.as_str())
        .send()
        .await
        .unwrap_err();
    assert_eq!(
        err.into_service_error().meta().code(),
        Some("MalformedPolicyDocumentException")
    );
    admin
        .kms
        .put_key_policy()
        .key_id(keys[1].as_str())
        .policy(admin_only.as_str())
        .send()
        .await
        .unwrap();
    // The key administrator reads it back; the operator goes on with MSF.
    admin
        .kms
        .get_key_policy()
        .key_id(keys[1].as_str())
        .send()
        .await
        .unwrap();
    operator_clients
        .msf
        .describe_application()
        .application_name("orders")
        .send()
        .await
        .unwrap();

    let calls = emu.calls(0);
    let by = |op: &str| -> Vec<String> {
        calls
            .iter()
            .filter(|c| c.operation == op && c.outcome == "ok")
            .map(|c| c.caller_arn.clone())
            .collect()
    };
    let admin_session =
        format!("arn:aws:sts::{B}:assumed-role/msf-cmk-key-admin/msf-cmk-controller");
    assert_eq!(by("PutKeyPolicy"), vec![admin_session.clone()]);
    assert_eq!(by("GetKeyPolicy"), vec![admin_session]);
    assert_eq!(by("DescribeApplication"), vec![session_arn(B)]);
    emu.shutdown().await;
}
