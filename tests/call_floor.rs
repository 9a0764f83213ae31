//! The AWS call floor of `apply` (issue 10, item 3), counted by the embedded emulator: per
//! pass, DescribeKey and GetKeyPolicy once per key whatever the number of applications on it,
//! DescribeApplication once per application; a key policy is re-read to verify only after a
//! write. The counts are exact, by operation.

use std::collections::BTreeMap;
use std::time::Duration;

use msf_cmk_controller::api::{ApplicationEncryptionSpec, DeletionPolicy, KeyPolicySpec, KeyType};
use msf_cmk_controller::aws::{ConnectOptions, connect};
use msf_cmk_controller::cli::plan_cmd::batch_core;
use msf_cmk_controller::controller::batch::{self, ApplyOptions};
use msf_cmk_controller::controller::context::Core;
use msf_cmk_controller::controller::manifests::Manifest;
use msf_cmk_controller::controller::tenancy::Tenancy;
use msf_cmk_controller::domain::ApplicationStatus;
use msf_cmk_controller::emulator::{Emulator, EmulatorConfig, EmulatorHandle};
use msf_cmk_controller::planner::Defaults;

const REGION: &str = "us-east-1";

async fn emulator() -> EmulatorHandle {
    Emulator::start(EmulatorConfig {
        // Updates finish at once: the passes that follow an update are then exactly one.
        update_delay: Duration::ZERO,
        ..EmulatorConfig::default()
    })
    .await
    .unwrap()
}

/// A Core as `apply` builds it (shared reads for the run), switching in the pass that writes
/// the policy (`--policy-settle 0s`: the settle time only adds passes of the same reads).
async fn apply_core(emu: &EmulatorHandle) -> Core {
    let mut opts = ConnectOptions::local(emu.endpoint());
    opts.max_attempts = 1;
    let aws = connect(&opts).await.unwrap();
    batch_core(
        aws.msf,
        aws.kms,
        Defaults {
            region: REGION.into(),
            operator_role_arn: Some(format!(
                "arn:aws:iam::{}:role/msf-cmk-operator",
                emu.account_id()
            )),
        },
        Tenancy(None),
        Duration::ZERO,
    )
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

/// `n` applications (half RUNNING, half READY) spread over `keys` new keys; keys named by
/// alias when `by_alias`.
fn fleet(emu: &EmulatorHandle, n: usize, keys: usize, by_alias: bool) -> Vec<Manifest> {
    let key_ids: Vec<String> = (0..keys)
        .map(|k| {
            let arn = emu.create_key(REGION, None).unwrap();
            if by_alias {
                let alias = format!("alias/floor-{k}");
                emu.create_alias(REGION, &alias, &arn).unwrap();
                alias
            } else {
                arn
            }
        })
        .collect();
    (0..n)
        .map(|i| {
            let name = format!("floor-{i:03}");
            let status = if i % 2 == 0 {
                ApplicationStatus::Running
            } else {
                ApplicationStatus::Ready
            };
            emu.create_application(REGION, &name, "FLINK-1_20", status)
                .unwrap();
            Manifest {
                namespace: "ns".into(),
                name: name.clone(),
                spec: spec(&name, &key_ids[i % keys]),
                source: "test".into(),
                retry_update: None,
            }
        })
        .collect()
}

fn opts() -> ApplyOptions {
    ApplyOptions {
        concurrency: 16,
        timeout: Duration::from_secs(60),
        poll: Duration::from_millis(20),
    }
}

/// The calls made, by operation, without the test's own set-up calls.
fn calls(emu: &EmulatorHandle) -> BTreeMap<String, u64> {
    emu.call_counts()
        .into_iter()
        .filter(|(op, n)| *n > 0 && !op.starts_with("Create"))
        .collect()
}

fn expect(pairs: &[(&str, usize)]) -> BTreeMap<String, u64> {
    pairs
        .iter()
        .filter(|(_, n)| *n > 0)
        .map(|(op, n)| (op.to_string(), *n as u64))
        .collect()
}

async fn apply(core: &Core, manifests: &[Manifest]) {
    let done = batch::apply_all(core, manifests, opts(), |_| {}).await;
    for d in &done {
        assert_eq!(d.outcome.ready(), "True", "{:#?}", d.outcome.status);
    }
}

#[tokio::test]
async fn apply_costs_the_floor_and_a_second_apply_reads_once_per_application_and_twice_per_key() {
    let emu = emulator().await;
    let (n, keys) = (40, 4);
    let manifests = fleet(&emu, n, keys, false);
    emu.reset_counts();

    apply(&apply_core(&emu).await, &manifests).await;
    // Per key: one DescribeKey; the read, the re-read right before the write (lost-update
    // protection, `key_write`), the write, the re-read that verifies it. Per application:
    // DescribeApplication before the update and once after (it shows the update ended), the
    // update. No history read (no rollback marker, nothing of ours that failed) and no
    // operation followed (the application is settled at the version the update made).
    assert_eq!(
        calls(&emu),
        expect(&[
            ("DescribeKey", keys),
            ("GetKeyPolicy", 3 * keys),
            ("PutKeyPolicy", keys),
            ("DescribeApplication", 2 * n),
            ("UpdateApplication", n),
        ])
    );

    // Steady state: a new run (nothing shared from the first) reads each application once
    // and each key twice, and writes nothing.
    emu.reset_counts();
    apply(&apply_core(&emu).await, &manifests).await;
    assert_eq!(
        calls(&emu),
        expect(&[
            ("DescribeKey", keys),
            ("GetKeyPolicy", keys),
            ("DescribeApplication", n),
        ])
    );
}

#[tokio::test]
async fn keys_named_by_alias_are_described_once_per_key_too() {
    let emu = emulator().await;
    let (n, keys) = (12, 3);
    let manifests = fleet(&emu, n, keys, true);
    apply(&apply_core(&emu).await, &manifests).await;
    emu.reset_counts();
    apply(&apply_core(&emu).await, &manifests).await;
    // The alias is described once; the application, which MSF reports with the key's ARN,
    // finds the same description under the resolved ARN.
    assert_eq!(
        calls(&emu),
        expect(&[
            ("DescribeKey", keys),
            ("GetKeyPolicy", keys),
            ("DescribeApplication", n),
        ])
    );
}
