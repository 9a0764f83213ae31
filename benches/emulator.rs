//! The embedded emulator's own overhead: requests per second on loopback for
//! DescribeApplication and GetKeyPolicy, through the real SDK adapters (signing, HTTP,
//! JSON both ways), one at a time and 32 in flight. Later benchmarks use the emulator as
//! their AWS; this tells them how much of their time is the emulator's.
//!
//! Quotas are on, as in every benchmark (KMS's documented rates, MSF at 50/s per
//! operation): calls above a rate are answered `ThrottlingException`, a full round trip too,
//! so both answers count; the split is printed at the end.
//!
//! Run: `cargo bench --bench emulator` (results in BENCHMARKS.md, "Emulator overhead").

use std::time::Duration;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use futures::future::join_all;
use msf_cmk_controller::aws::{ConnectOptions, connect};
use msf_cmk_controller::domain::ApplicationStatus;
use msf_cmk_controller::emulator::{Emulator, EmulatorConfig, Quotas};

const REGION: &str = "us-east-1";
const IN_FLIGHT: usize = 32;

/// An answer: the value, or the throttling the quotas give (anything else is a bug).
fn answered<T>(r: Result<T, msf_cmk_controller::aws::AwsError>) {
    if let Err(e) = r {
        assert_eq!(e.code, "ThrottlingException", "unexpected error: {e:?}");
    }
}

fn emulator_overhead(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let (emu, aws, key) = rt.block_on(async {
        let emu = Emulator::start(EmulatorConfig {
            update_delay: Duration::ZERO,
            quotas: Some(Quotas::default()),
            ..EmulatorConfig::default()
        })
        .await
        .expect("emulator");
        emu.create_application(
            REGION,
            "bench-app",
            "FLINK-1_20",
            ApplicationStatus::Running,
        )
        .expect("application");
        let key = emu.create_key(REGION, None).expect("key");
        // No client-side rate limits and no retries: measure the server, not the pacing.
        let opts = ConnectOptions {
            max_attempts: 1,
            ..ConnectOptions::local(emu.endpoint())
        };
        let aws = connect(&opts).await.expect("clients");
        (emu, aws, key)
    });

    let mut g = c.benchmark_group("emulator");
    g.sample_size(30).measurement_time(Duration::from_secs(5));

    g.throughput(Throughput::Elements(1));
    g.bench_function("DescribeApplication/sequential", |b| {
        b.iter(|| answered(rt.block_on(aws.msf.describe_application(REGION, "bench-app"))))
    });
    g.bench_function("GetKeyPolicy/sequential", |b| {
        b.iter(|| answered(rt.block_on(aws.kms.get_key_policy(REGION, &key))))
    });

    g.throughput(Throughput::Elements(IN_FLIGHT as u64));
    g.bench_function("DescribeApplication/32-in-flight", |b| {
        b.iter(|| {
            rt.block_on(join_all(
                (0..IN_FLIGHT).map(|_| aws.msf.describe_application(REGION, "bench-app")),
            ))
            .into_iter()
            .for_each(answered)
        })
    });
    g.bench_function("GetKeyPolicy/32-in-flight", |b| {
        b.iter(|| {
            rt.block_on(join_all(
                (0..IN_FLIGHT).map(|_| aws.kms.get_key_policy(REGION, &key)),
            ))
            .into_iter()
            .for_each(answered)
        })
    });
    g.finish();

    let counts = emu.outcome_counts();
    eprintln!("emulator calls served (ok / throttled): {counts:?}");
    rt.block_on(emu.shutdown());
}

criterion_group!(benches, emulator_overhead);
criterion_main!(benches);
