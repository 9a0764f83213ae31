//! Adaptive client-side pacing (issue 10 item 1) against the embedded emulator with its request
//! quotas on: a lane halves when the emulator throttles and grows back once it does not, never
//! passes its ceiling, and `apply` with the default pacing converges under the documented quotas.
//! Throttles are counted by the emulator (its answers), rates read from the lanes and from
//! the `msf_cmk_aws_rate_limit` gauge.

use std::time::Duration;

use futures::future::join_all;
use msf_cmk_controller::api::{ApplicationEncryptionSpec, DeletionPolicy, KeyPolicySpec, KeyType};
use msf_cmk_controller::aws::{
    AwsClients, ConnectOptions, FLOOR_PER_SECOND, RateLimits, RateSetting, connect,
};
use msf_cmk_controller::cli::plan_cmd::batch_core;
use msf_cmk_controller::controller::batch::{self, ApplyOptions};
use msf_cmk_controller::controller::identity::CallerCell;
use msf_cmk_controller::controller::manifests::Manifest;
use msf_cmk_controller::controller::metrics::Metrics;
use msf_cmk_controller::controller::tenancy::Tenancy;
use msf_cmk_controller::domain::ApplicationStatus;
use msf_cmk_controller::emulator::{
    DEFAULT_MSF_PER_SECOND, Emulator, EmulatorConfig, EmulatorHandle, Fault, Quotas,
};
use msf_cmk_controller::planner::Defaults;

const REGION: &str = "us-east-1";
const OP: &str = "DescribeApplication";

async fn emulator(msf_per_second: u32) -> EmulatorHandle {
    let emu = Emulator::start(EmulatorConfig {
        quotas: Some(Quotas { msf_per_second }),
        update_delay: Duration::ZERO,
        ..EmulatorConfig::default()
    })
    .await
    .unwrap();
    emu.create_application(REGION, "app", "FLINK-1_20", ApplicationStatus::Running)
        .unwrap();
    emu
}

/// Clients paced by `limits`; `attempts` SDK attempts per call.
async fn clients(emu: &EmulatorHandle, limits: RateLimits, attempts: u32) -> AwsClients {
    let mut opts = ConnectOptions::local(emu.endpoint());
    opts.rate_limits = limits;
    opts.max_attempts = attempts;
    connect(&opts).await.unwrap()
}

/// `n` DescribeApplication calls at once; how many the emulator throttled.
async fn burst(emu: &EmulatorHandle, aws: &AwsClients, n: usize) -> u64 {
    let before = throttled(emu);
    let calls = (0..n).map(|_| aws.msf.describe_application(REGION, "app"));
    let _ = join_all(calls).await;
    throttled(emu) - before
}

fn throttled(emu: &EmulatorHandle) -> u64 {
    emu.outcome_counts()
        .values()
        .map(|by| by.get("ThrottlingException").copied().unwrap_or(0))
        .sum()
}

fn rate(aws: &AwsClients) -> f64 {
    let lanes = aws.msf.pacing().expect("paced").rates();
    lanes
        .iter()
        .find(|(region, op, _)| region == REGION && *op == OP)
        .map(|l| l.2)
        .expect("a lane for DescribeApplication")
}

#[tokio::test]
async fn a_lane_halves_once_per_throttled_wave_and_grows_back() {
    // The emulator allows 5/s; the lane starts at 40/s.
    let emu = emulator(5).await;
    let aws = clients(&emu, RateLimits::unlimited().with(OP, 40.0, 40.0), 1).await;
    // 40 calls leave at once (one second of burst): the emulator passes about 5 and throttles
    // the rest. All were sent at 40/s, so the lane halves once, not 35 times.
    assert!(burst(&emu, &aws, 40).await >= 30);
    assert_eq!(rate(&aws), 20.0);
    // The next wave is paced at 20/s, still above 5/s: halved again, once per throttled
    // rate (calls queued at 20/s queue again at 10/s, and so on), never below the floor.
    assert!(burst(&emu, &aws, 20).await > 0);
    let halved = rate(&aws);
    assert!((FLOOR_PER_SECOND..=10.5).contains(&halved), "{halved}");
    // The quota is lifted: calls that wait for the lane and succeed make it grow again.
    emu.set_quotas(None);
    assert_eq!(burst(&emu, &aws, 60).await, 0);
    let grown = rate(&aws);
    assert!(grown > halved && grown <= 40.0, "{grown}");
    // The gauge says the same, per account, region and operation.
    let metrics = Metrics::new();
    metrics.watch_pacing(&CallerCell::default(), aws.msf.pacing().unwrap());
    let text = metrics.encode();
    let prefix = r#"msf_cmk_aws_rate_limit{service="msf",operation="DescribeApplication",region="us-east-1",account="unknown"} "#;
    let shown: f64 = text
        .lines()
        .find_map(|l| l.strip_prefix(prefix))
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no {prefix} in\n{text}"));
    assert!((shown - grown).abs() < 1e-9, "{shown} vs {grown}");
    emu.shutdown().await;
}

#[tokio::test]
async fn a_lane_never_passes_its_ceiling() {
    // The emulator allows 20/s. The default start (400/s) would be throttled at once; a ceiling
    // of 16/s, as the flag gives it, keeps every call within the quota.
    let emu = emulator(20).await;
    let ceiling: RateSetting = "DescribeApplication=16".parse().unwrap();
    let limits = RateLimits::configured(&[], &[ceiling]).unwrap();
    let aws = clients(&emu, limits, 1).await;
    for _ in 0..3 {
        assert_eq!(burst(&emu, &aws, 32).await, 0);
        assert_eq!(rate(&aws), 16.0);
    }
    emu.shutdown().await;
}

#[tokio::test]
async fn throttled_attempts_are_retried_through_the_lane_not_by_the_sdk_as_well() {
    let emu = emulator(1000).await;
    emu.set_fault(
        OP,
        Fault {
            throttle_rate: 1.0,
            ..Fault::default()
        },
    );
    // Three attempts in all: the lane retries the throttled ones, each at the halved rate;
    // the SDK, told not to retry throttles, adds none (3 x 3 calls if it did).
    let aws = clients(&emu, RateLimits::unlimited().with(OP, 8.0, 8.0), 3).await;
    let e = aws
        .msf
        .describe_application(REGION, "app")
        .await
        .unwrap_err();
    assert_eq!(e.code, "ThrottlingException");
    assert_eq!(emu.call_count(OP), 3);
    // Each attempt was reserved after the previous halving: 8 -> 4 -> 2 -> 1.
    assert_eq!(rate(&aws), 1.0);
    // Unpaced, the SDK retries throttles as it always did.
    emu.reset_counts();
    let unpaced = clients(&emu, RateLimits::unlimited(), 3).await;
    let _ = unpaced.msf.describe_application(REGION, "app").await;
    assert_eq!(emu.call_count(OP), 3);
    emu.shutdown().await;
}

fn spec(app: &str, key: &str) -> ApplicationEncryptionSpec {
    ApplicationEncryptionSpec {
        application_name: app.into(),
        region: Some(REGION.into()),
        key_type: KeyType::CustomerManagedKey,
        key_id: Some(key.into()),
        key_policy: KeyPolicySpec::default(),
        deletion_policy: DeletionPolicy::Retain,
        suspend: false,
        allow_stateless_restart: false,
    }
}

/// `apply` of `n` applications on 4 keys with the default pacing and `msf_per_second` quota.
async fn apply_under_quota(msf_per_second: u32, n: usize) -> (EmulatorHandle, AwsClients) {
    let emu = emulator(msf_per_second).await;
    let keys: Vec<String> = (0..4)
        .map(|_| emu.create_key(REGION, None).unwrap())
        .collect();
    let manifests: Vec<Manifest> = (0..n)
        .map(|i| {
            let name = format!("paced-{i:03}");
            emu.create_application(REGION, &name, "FLINK-1_20", ApplicationStatus::Ready)
                .unwrap();
            Manifest {
                namespace: "ns".into(),
                name: name.clone(),
                spec: spec(&name, &keys[i % keys.len()]),
                source: "test".into(),
                retry_update: None,
            }
        })
        .collect();
    // As `apply` connects: default pacing, the SDK's 3 attempts.
    let aws = clients(&emu, RateLimits::default(), 3).await;
    let core = batch_core(
        aws.msf.clone(),
        aws.kms.clone(),
        Defaults {
            region: REGION.into(),
            operator_role_arn: Some(format!(
                "arn:aws:iam::{}:role/msf-cmk-operator",
                emu.account_id()
            )),
        },
        Tenancy(None),
        Duration::ZERO,
    );
    let done = batch::apply_all(
        &core,
        &manifests,
        ApplyOptions {
            concurrency: 64,
            timeout: Duration::from_secs(120),
            poll: Duration::from_millis(50),
        },
        |_| {},
    )
    .await;
    for d in &done {
        assert_eq!(d.outcome.ready(), "True", "{:#?}", d.outcome.status);
    }
    (emu, aws)
}

#[tokio::test]
async fn apply_with_the_default_pacing_is_never_throttled_under_the_default_quotas() {
    // KMS at its documented quotas, MSF at the emulator's default; the lanes start below.
    let (emu, _aws) = apply_under_quota(DEFAULT_MSF_PER_SECOND, 80).await;
    assert_eq!(throttled(&emu), 0, "{:?}", emu.outcome_counts());
    emu.shutdown().await;
}

#[tokio::test]
async fn apply_converges_when_the_quota_is_far_below_the_start() {
    // MSF allows 4/s per operation, the default lanes start at 400/s: the first wave is
    // throttled, the lanes halve and the run still converges.
    let (emu, aws) = apply_under_quota(4, 40).await;
    let calls: u64 = emu.call_counts().values().sum();
    eprintln!(
        "throttled {} of {calls} calls; DescribeApplication lane at {}/s; {:?}",
        throttled(&emu),
        rate(&aws),
        emu.outcome_counts()
    );
    assert!(throttled(&emu) > 0);
    emu.shutdown().await;
}
