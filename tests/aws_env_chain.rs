//! `connect` with the standard AWS configuration chain: region, credentials and endpoints
//! from the environment, a service-specific endpoint variable beating the global one. One
//! test in its own binary, because it sets process environment variables.

// The emulator (and the shared test support) exists only with the default feature `emulator`.
#![cfg(feature = "emulator")]

use msf_cmk_controller::aws::{ConnectOptions, RateLimits, connect};
use msf_cmk_controller::domain::ApplicationStatus;
use msf_cmk_controller::emulator::{Emulator, EmulatorConfig};

#[test]
fn endpoints_region_and_credentials_come_from_the_environment() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    // Two emulators: one for everything, one only for KMS.
    let (global, kms_only) = rt.block_on(async {
        (
            Emulator::start(EmulatorConfig::default()).await.unwrap(),
            Emulator::start(EmulatorConfig::default()).await.unwrap(),
        )
    });
    global
        .create_application(
            "eu-west-1",
            "env-app",
            "FLINK-1_20",
            ApplicationStatus::Ready,
        )
        .unwrap();
    let key = kms_only.create_key("eu-west-1", None).unwrap();

    // SAFETY: this binary has this one test and the runtime above is single-threaded and idle,
    // so nothing reads the environment while it changes.
    unsafe {
        std::env::set_var("AWS_EC2_METADATA_DISABLED", "true");
        std::env::set_var("AWS_REGION", "eu-west-1");
        std::env::set_var("AWS_ACCESS_KEY_ID", "AKIDENV");
        std::env::set_var("AWS_SECRET_ACCESS_KEY", "secret");
        std::env::set_var("AWS_ENDPOINT_URL", global.endpoint());
        std::env::set_var("AWS_ENDPOINT_URL_KMS", kms_only.endpoint());
        std::env::remove_var("AWS_PROFILE");
    }

    rt.block_on(async {
        let opts = ConnectOptions {
            rate_limits: RateLimits::unlimited(),
            max_attempts: 1,
            ..ConnectOptions::default()
        };
        let aws = connect(&opts).await.unwrap();
        assert_eq!(aws.default_region, "eu-west-1");
        let app = aws
            .msf
            .describe_application(&aws.default_region, "env-app")
            .await
            .unwrap();
        assert!(app.arn.contains(":eu-west-1:"));
        let k = aws
            .kms
            .describe_key(&aws.default_region, &key)
            .await
            .unwrap();
        assert_eq!(k.arn, key);
        assert_eq!(global.call_count("DescribeKey"), 0);
        assert_eq!(kms_only.call_count("DescribeKey"), 1);

        // An explicit endpoint beats every variable.
        let explicit = ConnectOptions {
            endpoint_url: Some(global.endpoint()),
            ..opts
        };
        let aws = connect(&explicit).await.unwrap();
        let e = aws.kms.describe_key("eu-west-1", &key).await.unwrap_err();
        assert!(e.is_not_found(), "{e}");
        assert_eq!(global.call_count("DescribeKey"), 1);
    });
}
