//! `apply` at scale against the embedded emulator with injected latency per call, side by side
//! with the same work done the way the AWS documentation shows it (one application at a time:
//! describe the application, get the key policy, edit it, put it, update the application).
//!
//! Run: `cargo bench --bench apply_at_scale` (results in BENCHMARKS.md, "Apply at scale").
//! Knobs (env): `BENCH_SIZES` (default `100,1000`), `BENCH_KEYS` (20), `BENCH_LATENCY_MS` (20),
//! `BENCH_CONCURRENCY` (16, apply's default).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::Utc;
use msf_cmk_controller::api::{ApplicationEncryptionSpec, DeletionPolicy, KeyPolicySpec, KeyType};
use msf_cmk_controller::aws::{AwsClients, ConnectOptions, connect};
use msf_cmk_controller::controller::batch::{self, ApplyOptions};
use msf_cmk_controller::controller::context::{Core, Settings};
use msf_cmk_controller::controller::manifests::Manifest;
use msf_cmk_controller::controller::metrics::Metrics;
use msf_cmk_controller::controller::reconcile::{self, Mode, Subject};
use msf_cmk_controller::controller::tenancy::Tenancy;
use msf_cmk_controller::domain::{ApplicationStatus, AppliedKeyType, EncryptionUpdate};
use msf_cmk_controller::emulator::{Emulator, EmulatorConfig, EmulatorHandle, Fault};
use msf_cmk_controller::planner::Defaults;
use msf_cmk_controller::policy::PolicyDocument;
use msf_cmk_controller::policy::merge::{Grant, merge};

const REGION: &str = "us-east-1";

fn env_or(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Peak resident set of this process so far (kB), from /proc (Linux).
fn peak_rss_kb() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        })
        .unwrap_or(0)
}

struct World {
    emu: EmulatorHandle,
    aws: AwsClients,
    keys: Vec<String>,
    apps: Vec<String>,
    operator: String,
}

async fn world(n: usize, keys: usize, latency: Duration) -> World {
    let emu = Emulator::start(EmulatorConfig {
        update_delay: Duration::from_millis(50),
        ..EmulatorConfig::default()
    })
    .await
    .expect("emulator");
    let keys: Vec<String> = (0..keys)
        .map(|_| emu.create_key(REGION, None).expect("key"))
        .collect();
    let apps: Vec<String> = (0..n)
        .map(|i| {
            let name = format!("app-{i:04}");
            let status = if i % 2 == 0 {
                ApplicationStatus::Running
            } else {
                ApplicationStatus::Ready
            };
            emu.create_application(REGION, &name, "FLINK-1_20", status)
                .expect("application");
            name
        })
        .collect();
    emu.set_fault("*", Fault::latency(latency));
    let mut opts = ConnectOptions::local(emu.endpoint());
    opts.max_attempts = 1;
    let aws = connect(&opts).await.expect("connect");
    let operator = format!("arn:aws:iam::{}:role/operator", emu.account_id());
    World {
        emu,
        aws,
        keys,
        apps,
        operator,
    }
}

fn manifests(w: &World) -> Vec<Manifest> {
    w.apps
        .iter()
        .enumerate()
        .map(|(i, name)| Manifest {
            namespace: "bench".into(),
            name: name.clone(),
            spec: ApplicationEncryptionSpec {
                application_name: name.clone(),
                region: Some(REGION.into()),
                key_type: KeyType::CustomerManagedKey,
                key_id: Some(w.keys[i % w.keys.len()].clone()),
                key_policy: KeyPolicySpec::default(),
                deletion_policy: DeletionPolicy::Retain,
                suspend: false,
            },
            source: "bench".into(),
        })
        .collect()
}

fn core(w: &World, share_window: Duration) -> Core {
    Core::new(
        w.aws.msf.clone(),
        w.aws.kms.clone(),
        Defaults {
            region: REGION.into(),
            operator_role_arn: Some(w.operator.clone()),
        },
        Tenancy(None),
        Settings {
            policy_share_window: share_window,
            ..Settings::default()
        },
        Arc::new(Metrics::new()),
    )
}

struct Run {
    wall: Duration,
    calls: BTreeMap<String, u64>,
    converged: usize,
}

async fn controller_apply(w: &World, concurrency: usize) -> Run {
    let core = core(w, Duration::from_secs(3600));
    let m = manifests(w);
    w.emu.reset_counts();
    let start = Instant::now();
    let opts = ApplyOptions {
        concurrency,
        timeout: Duration::from_secs(600),
        poll: Duration::from_millis(200),
    };
    let done = batch::apply_all(&core, &m, opts, |_| {}).await;
    Run {
        wall: start.elapsed(),
        calls: w.emu.call_counts(),
        converged: done.iter().filter(|d| d.outcome.ready() == "True").count(),
    }
}

/// The AWS documentation's procedure, one application after the other (as a person or a
/// script of AWS CLI calls would do it; the CLI's own start-up time is not counted).
async fn documented_way(w: &World) -> Run {
    w.emu.reset_counts();
    let start = Instant::now();
    let mut converged = 0;
    for (i, name) in w.apps.iter().enumerate() {
        let key = &w.keys[i % w.keys.len()];
        let Ok(app) = w.aws.msf.describe_application(REGION, name).await else {
            continue;
        };
        let Ok(text) = w.aws.kms.get_key_policy(REGION, key).await else {
            continue;
        };
        let Ok(doc) = PolicyDocument::parse(&text) else {
            continue;
        };
        let grant = Grant {
            application_arn: app.arn.clone(),
            operator_role_arn: w.operator.clone(),
        };
        // The edit: add this application's statements (with the controller's compact merge,
        // which is kinder to this baseline than a copy of the reference block per application).
        let Ok(edited) = merge(&doc, &[grant], &[]) else {
            continue;
        };
        if w.aws
            .kms
            .put_key_policy(REGION, key, &edited.to_compact_json())
            .await
            .is_err()
        {
            continue;
        }
        let update = EncryptionUpdate {
            region: REGION.into(),
            application_name: name.clone(),
            current_version_id: app.version_id,
            conditional_token: app.conditional_token.clone(),
            key_type: AppliedKeyType::CustomerManagedKey,
            key_id: Some(key.clone()),
        };
        if w.aws
            .msf
            .update_application_encryption(&update)
            .await
            .is_ok()
        {
            converged += 1;
        }
    }
    Run {
        wall: start.elapsed(),
        calls: w.emu.call_counts(),
        converged,
    }
}

/// One resync of every resource with the controller's default sharing window (30 s).
async fn steady_state(w: &World) -> (Duration, BTreeMap<String, u64>) {
    let core = core(w, Duration::from_secs(30));
    let m = manifests(w);
    w.emu.reset_counts();
    let start = Instant::now();
    let peers: Vec<reconcile::Peer> = m
        .iter()
        .map(|x| reconcile::Peer {
            namespace: x.namespace.clone(),
            name: x.name.clone(),
            spec: x.spec.clone(),
        })
        .collect();
    use futures::StreamExt;
    futures::stream::iter(m.iter())
        .for_each_concurrent(16, |x| {
            let core = &core;
            let peers = &peers;
            async move {
                let s = Subject {
                    namespace: &x.namespace,
                    name: &x.name,
                    spec: &x.spec,
                    generation: Some(1),
                    previous: None,
                    conflict: None,
                };
                reconcile::reconcile(core, &s, peers, Mode::Execute, Utc::now()).await;
            }
        })
        .await;
    (start.elapsed(), w.emu.call_counts())
}

fn fmt_calls(c: &BTreeMap<String, u64>) -> String {
    c.iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(" ")
}

fn main() {
    // `cargo bench` passes --bench; `cargo test --benches` passes nothing useful: one quick size.
    let quick = !std::env::args().any(|a| a == "--bench");
    let sizes: Vec<usize> = if quick {
        vec![20]
    } else {
        std::env::var("BENCH_SIZES")
            .unwrap_or_else(|_| "100,1000".into())
            .split(',')
            .filter_map(|s| s.trim().parse().ok())
            .collect()
    };
    let keys = env_or("BENCH_KEYS", 20);
    let latency = Duration::from_millis(env_or("BENCH_LATENCY_MS", 20) as u64);
    let concurrency = env_or("BENCH_CONCURRENCY", 16);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    println!("apply_at_scale: {keys} keys, {latency:?} per call, concurrency {concurrency}");
    for n in sizes {
        rt.block_on(async {
            let rss0 = peak_rss_kb();
            let w = world(n, keys.min(n), latency).await;
            let c = controller_apply(&w, concurrency).await;
            let rss1 = peak_rss_kb();
            let (resync_wall, resync) = steady_state(&w).await;
            w.emu.shutdown().await;

            let w2 = world(n, keys.min(n), latency).await;
            let d = documented_way(&w2).await;
            w2.emu.shutdown().await;

            let per_resource: f64 = resync.values().sum::<u64>() as f64 / n as f64;
            println!("N={n}");
            println!(
                "  controller apply: {:.2}s, {} converged, calls: {}",
                c.wall.as_secs_f64(),
                c.converged,
                fmt_calls(&c.calls)
            );
            println!(
                "  documented way:   {:.2}s, {} converged, calls: {}",
                d.wall.as_secs_f64(),
                d.converged,
                fmt_calls(&d.calls)
            );
            println!(
                "  ratio (documented / controller wall time): {:.1}x",
                d.wall.as_secs_f64() / c.wall.as_secs_f64()
            );
            println!(
                "  peak RSS: {} MB before, {} MB after apply (process: controller + emulator)",
                rss0 / 1024,
                rss1 / 1024
            );
            println!(
                "  steady state: one resync of all {n} in {:.2}s, {per_resource:.2} calls per resource ({})",
                resync_wall.as_secs_f64(),
                fmt_calls(&resync)
            );
        });
    }
}
