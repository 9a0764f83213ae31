//! The emulator's MSF operations as the plain SDK sees them: every response must parse
//! (epoch timestamps, required fields), and the lifecycle the controller waits on must hold
//! (create, list with pages, start/stop transitions, delete).

// The emulator (and the shared test support) exists only with the default feature `emulator`.
#![cfg(feature = "emulator")]

mod support_aws;

use std::time::Duration;

use aws_credential_types::Credentials;
use aws_sdk_kinesisanalyticsv2 as msf;
use msf::types::{
    ApplicationConfiguration, ApplicationEncryptionConfiguration, ApplicationStatus, KeyType,
    RuntimeEnvironment,
};
use support_aws::{REGION, emulator, msf_ready_policy};

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

#[tokio::test]
async fn msf_lifecycle_through_the_sdk() {
    let emu = emulator().await;
    emu.set_update_delay(Duration::from_millis(100));
    let c = raw_msf(&emu.endpoint());
    let key = emu.create_key(REGION, Some(&msf_ready_policy())).unwrap();

    // Created with a CMK from the start; KeyId reported as given.
    let created = c
        .create_application()
        .application_name("wire-app")
        .runtime_environment(RuntimeEnvironment::Flink120)
        .service_execution_role("arn:aws:iam::123456789012:role/msf")
        .application_configuration(
            ApplicationConfiguration::builder()
                .application_encryption_configuration(
                    ApplicationEncryptionConfiguration::builder()
                        .key_type(KeyType::CustomerManagedKey)
                        .key_id(&key)
                        .build()
                        .unwrap(),
                )
                .build(),
        )
        .send()
        .await
        .expect("CreateApplication");
    let d = created.application_detail().unwrap();
    assert_eq!(d.application_status(), &ApplicationStatus::Ready);
    let enc = d
        .application_configuration_description()
        .and_then(|c| c.application_encryption_configuration_description())
        .unwrap();
    assert_eq!(enc.key_type(), &KeyType::CustomerManagedKey);
    assert_eq!(enc.key_id(), Some(key.as_str()));
    let create_ts = *d.create_timestamp().expect("epoch timestamp parsed");

    // Pages of ListApplications.
    for i in 0..3 {
        emu.create_application(
            REGION,
            &format!("more-{i}"),
            "FLINK-1_20",
            msf_cmk_controller::domain::ApplicationStatus::Ready,
        )
        .unwrap();
    }
    let mut names = Vec::new();
    let mut token = None;
    loop {
        let page = c
            .list_applications()
            .limit(2)
            .set_next_token(token)
            .send()
            .await
            .expect("ListApplications");
        names.extend(
            page.application_summaries()
                .iter()
                .map(|s| s.application_name().to_string()),
        );
        token = page.next_token().map(str::to_string);
        if token.is_none() {
            break;
        }
    }
    assert_eq!(names, ["more-0", "more-1", "more-2", "wire-app"]);

    // Start: READY -> STARTING -> RUNNING; stop: RUNNING -> STOPPING -> READY.
    c.start_application()
        .application_name("wire-app")
        .send()
        .await
        .expect("Start");
    assert_eq!(status(&c, "wire-app").await, ApplicationStatus::Starting);
    tokio::time::sleep(Duration::from_millis(150)).await;
    assert_eq!(status(&c, "wire-app").await, ApplicationStatus::Running);
    let again = c
        .start_application()
        .application_name("wire-app")
        .send()
        .await;
    assert!(again.is_err(), "already running");
    c.stop_application()
        .application_name("wire-app")
        .send()
        .await
        .expect("Stop");
    assert_eq!(status(&c, "wire-app").await, ApplicationStatus::Stopping);
    tokio::time::sleep(Duration::from_millis(150)).await;
    assert_eq!(status(&c, "wire-app").await, ApplicationStatus::Ready);

    // Delete needs the right CreateTimestamp.
    let wrong = aws_smithy_types::DateTime::from_secs(create_ts.secs() - 3600);
    let e = c
        .delete_application()
        .application_name("wire-app")
        .create_timestamp(wrong)
        .send()
        .await
        .expect_err("wrong timestamp");
    assert!(format!("{:?}", e).contains("InvalidArgumentException"));
    c.delete_application()
        .application_name("wire-app")
        .create_timestamp(create_ts)
        .send()
        .await
        .expect("DeleteApplication");
    assert!(emu.application(REGION, "wire-app").is_none());
    emu.shutdown().await;
}

async fn status(c: &msf::Client, name: &str) -> ApplicationStatus {
    c.describe_application()
        .application_name(name)
        .send()
        .await
        .expect("DescribeApplication")
        .application_detail()
        .expect("detail")
        .application_status()
        .clone()
}
