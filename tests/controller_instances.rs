//! Several controllers on one key (issue 11, item 3): two installations with different
//! `--instance-name`s converge their own applications on one shared key, against one emulator,
//! and neither changes or removes the other's statements (docs/fleet.md).

use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use msf_cmk_controller::api::{
    ApplicationEncryptionSpec, ApplicationEncryptionStatus, DeletionPolicy, KeyPolicySpec, KeyType,
};
use msf_cmk_controller::aws::{ConnectOptions, connect};
use msf_cmk_controller::controller::context::{Core, Settings};
use msf_cmk_controller::controller::finalizer;
use msf_cmk_controller::controller::metrics::Metrics;
use msf_cmk_controller::controller::reconcile::{self, Mode, Next, Outcome, Subject};
use msf_cmk_controller::controller::tenancy::Tenancy;
use msf_cmk_controller::domain::{ApplicationStatus, AppliedKeyType};
use msf_cmk_controller::emulator::{Emulator, EmulatorConfig, EmulatorHandle};
use msf_cmk_controller::planner::Defaults;
use msf_cmk_controller::policy::{InstanceName, PolicyDocument};
use serde_json::Value;

const REGION: &str = "us-east-1";

async fn core(emu: &EmulatorHandle, instance: &str) -> Core {
    let mut opts = ConnectOptions::local(emu.endpoint());
    opts.max_attempts = 1;
    let aws = connect(&opts).await.unwrap();
    let mut core = Core::new(
        aws.msf,
        aws.kms,
        Defaults {
            region: REGION.into(),
            operator_role_arn: Some(format!("arn:aws:iam::{}:role/operator", emu.account_id())),
        },
        Tenancy(None),
        Settings {
            policy_share_window: Duration::ZERO,
            policy_settle: Duration::ZERO,
            ..Settings::default()
        },
        Arc::new(Metrics::new()),
    );
    core.instance = InstanceName::parse(instance).unwrap();
    core
}

fn cmk(app: &str, key: &str) -> ApplicationEncryptionSpec {
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

fn subject<'a>(name: &'a str, spec: &'a ApplicationEncryptionSpec) -> Subject<'a> {
    Subject {
        namespace: "ns",
        name,
        spec,
        generation: Some(1),
        previous: None,
        conflict: None,
        retry_update: None,
    }
}

/// Reconciles until the resource no longer waits (as the requeue would); bounded.
async fn converge(core: &Core, name: &str, spec: &ApplicationEncryptionSpec) -> Outcome {
    let mut previous: Option<ApplicationEncryptionStatus> = None;
    for _ in 0..100 {
        let s = Subject {
            previous: previous.as_ref(),
            ..subject(name, spec)
        };
        let o = reconcile::reconcile(core, &s, &[], Mode::Execute, Utc::now()).await;
        match o.next {
            Next::Waiting(_) | Next::Failed(_) => {
                previous = Some(o.status.clone());
                tokio::time::sleep(Duration::from_millis(30)).await;
            }
            _ => return o,
        }
    }
    panic!("{name} did not converge");
}

async fn settle(emu: &EmulatorHandle, name: &str) {
    for _ in 0..200 {
        if emu
            .application(REGION, name)
            .is_some_and(|a| a.status.is_updatable())
        {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("{name} stayed in a transient status");
}

/// The statements under Sids starting with `prefix`, as compact JSON text (byte for byte).
fn statements_under(policy: &str, prefix: &str) -> Vec<String> {
    let v: Value = serde_json::from_str(policy).unwrap();
    v["Statement"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|s| s["Sid"].as_str().is_some_and(|s| s.starts_with(prefix)))
        .map(|s| serde_json::to_string(s).unwrap())
        .collect()
}

#[tokio::test]
async fn two_instances_on_one_key_converge_their_own_and_never_remove_the_other_s() {
    let emu = Emulator::start(EmulatorConfig {
        update_delay: Duration::from_millis(40),
        ..EmulatorConfig::default()
    })
    .await
    .unwrap();
    let key = emu.create_key(REGION, None).unwrap();
    for app in ["orders", "payments"] {
        emu.create_application(REGION, app, "FLINK-1_20", ApplicationStatus::Running)
            .unwrap();
    }
    let a = core(&emu, "cluster-a").await;
    let b = core(&emu, "cluster-b").await;
    let orders = cmk("orders", &key);
    let payments = cmk("payments", &key);

    // Each installation converges its own application on the shared key.
    assert!(matches!(
        converge(&a, "orders", &orders).await.next,
        Next::Converged
    ));
    assert!(matches!(
        converge(&b, "payments", &payments).await.next,
        Next::Converged
    ));
    for app in ["orders", "payments"] {
        let enc = emu.application(REGION, app).unwrap().encryption;
        assert_eq!(enc.key_type, AppliedKeyType::CustomerManagedKey, "{app}");
    }
    assert_eq!(
        emu.call_count("PutKeyPolicy"),
        2,
        "one write per installation"
    );
    let policy = emu.key_policy(&key).unwrap();
    let a_statements = statements_under(&policy, "MsfCmk-cluster-a-");
    let b_statements = statements_under(&policy, "MsfCmk-cluster-b-");
    assert_eq!((a_statements.len(), b_statements.len()), (8, 8), "{policy}");
    // Each names only its own application (OperatorDescribeKey names none).
    assert_eq!(
        a_statements
            .iter()
            .filter(|s| s.contains("application/orders"))
            .count(),
        7
    );
    assert!(
        a_statements
            .iter()
            .all(|s| !s.contains("application/payments"))
    );
    assert_eq!(
        b_statements
            .iter()
            .filter(|s| s.contains("application/payments"))
            .count(),
        7
    );
    assert!(
        b_statements
            .iter()
            .all(|s| !s.contains("application/orders"))
    );
    let doc = PolicyDocument::parse(&policy).unwrap();
    assert!(doc.unmergeable_sids().is_empty());
    assert!(
        policy.contains("\"MsfCmk-cluster-b-OperatorUseKey-operator\""),
        "{policy}"
    );

    // A resync of either sees its application granted (the union): no write.
    emu.reset_counts();
    settle(&emu, "orders").await;
    settle(&emu, "payments").await;
    assert!(matches!(
        converge(&a, "orders", &orders).await.next,
        Next::Converged
    ));
    assert!(matches!(
        converge(&b, "payments", &payments).await.next,
        Next::Converged
    ));
    assert_eq!(emu.call_count("PutKeyPolicy"), 0);

    // A's resource is deleted, reverting its application and removing its statements:
    // B's statements stay byte for byte.
    let mut gone = orders.clone();
    gone.deletion_policy = DeletionPolicy::RevertToAwsOwnedKey;
    gone.key_policy.remove_statements_on_delete = true;
    finalizer::cleanup(&a, &subject("orders", &gone))
        .await
        .unwrap();
    let after = emu.key_policy(&key).unwrap();
    assert_eq!(statements_under(&after, "MsfCmk-cluster-b-"), b_statements);
    assert!(
        statements_under(&after, "MsfCmk-cluster-a-").is_empty(),
        "{after}"
    );
    assert!(!after.contains("application/orders"), "{after}");
    assert_eq!(emu.call_count("PutKeyPolicy"), 1);
    assert_eq!(emu.call_count("UpdateApplication"), 1, "the revert");
    let orders_enc = emu.application(REGION, "orders").unwrap().encryption;
    assert_eq!(orders_enc.key_type, AppliedKeyType::AwsOwnedKey);

    // B removing A's (already removed) application, or resyncing its own, writes nothing.
    emu.reset_counts();
    let mut b_claims_orders = gone.clone();
    b_claims_orders.deletion_policy = DeletionPolicy::Retain;
    finalizer::cleanup(&b, &subject("orders", &b_claims_orders))
        .await
        .unwrap();
    settle(&emu, "payments").await;
    assert!(matches!(
        converge(&b, "payments", &payments).await.next,
        Next::Converged
    ));
    assert_eq!(emu.call_count("PutKeyPolicy"), 0);
    assert_eq!(emu.key_policy(&key).unwrap(), after);
}

/// The other direction, before anything is removed: B's deletion leaves A's statements as
/// they are and A's application on its key.
#[tokio::test]
async fn removing_b_s_statements_keeps_a_s_application_on_the_key() {
    let emu = Emulator::start(EmulatorConfig::default()).await.unwrap();
    let key = emu.create_key(REGION, None).unwrap();
    for app in ["orders", "payments"] {
        emu.create_application(REGION, app, "FLINK-1_20", ApplicationStatus::Ready)
            .unwrap();
    }
    let a = core(&emu, "cluster-a").await;
    let b = core(&emu, "cluster-b").await;
    let orders = cmk("orders", &key);
    let mut payments = cmk("payments", &key);
    converge(&a, "orders", &orders).await;
    converge(&b, "payments", &payments).await;
    let before = emu.key_policy(&key).unwrap();
    let a_statements = statements_under(&before, "MsfCmk-cluster-a-");

    settle(&emu, "payments").await;
    payments.deletion_policy = DeletionPolicy::RevertToAwsOwnedKey;
    payments.key_policy.remove_statements_on_delete = true;
    finalizer::cleanup(&b, &subject("payments", &payments))
        .await
        .unwrap();
    let after = emu.key_policy(&key).unwrap();
    assert_eq!(statements_under(&after, "MsfCmk-cluster-a-"), a_statements);
    assert!(
        statements_under(&after, "MsfCmk-cluster-b-").is_empty(),
        "{after}"
    );
    let enc = emu.application(REGION, "orders").unwrap().encryption;
    assert_eq!(enc.key_type, AppliedKeyType::CustomerManagedKey);
    settle(&emu, "orders").await;
    emu.reset_counts();
    assert!(matches!(
        converge(&a, "orders", &orders).await.next,
        Next::Converged
    ));
    assert_eq!(emu.call_count("PutKeyPolicy"), 0);
}

/// MIGRATION: a key whose policy the released version wrote (tests/fixtures/
/// legacy-sids-key-policy.json: its Sids, its exact statements) is the default installation's.
/// The next write (a new application on the key) replaces the released Sids with the readable
/// ones, keeps every grant and the people's statements, and leaves no duplicate; a resync then
/// writes nothing.
#[tokio::test]
async fn the_default_installation_takes_over_the_released_sids_at_its_next_write() {
    const ACCOUNT: &str = "111122223333";
    const EU: &str = "eu-west-1";
    let role = format!("arn:aws:iam::{ACCOUNT}:role/msf-cmk-controller");
    let emu = Emulator::start(EmulatorConfig {
        account_id: ACCOUNT.into(),
        default_region: EU.into(),
        caller_arn: Some(role.clone()),
        ..EmulatorConfig::default()
    })
    .await
    .unwrap();
    emu.add_principals([
        role.clone(),
        format!("arn:aws:iam::{ACCOUNT}:role/KeyAdmin"),
    ]);
    let fixture = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/legacy-sids-key-policy.json"
    ))
    .unwrap();
    let key = emu.create_key(EU, Some(&fixture)).unwrap();
    let released = PolicyDocument::parse(&emu.key_policy(&key).unwrap()).unwrap();
    assert!(released.statements().iter().any(|s| s.has_legacy_sid()));
    emu.create_application(EU, "late-app", "FLINK-1_20", ApplicationStatus::Ready)
        .unwrap();

    let mut opts = ConnectOptions::local(emu.endpoint());
    opts.max_attempts = 1;
    let aws = connect(&opts).await.unwrap();
    let core = Core::new(
        aws.msf,
        aws.kms,
        Defaults {
            region: EU.into(),
            operator_role_arn: Some(role.clone()),
        },
        Tenancy(None),
        Settings {
            policy_share_window: Duration::ZERO,
            policy_settle: Duration::ZERO,
            ..Settings::default()
        },
        Arc::new(Metrics::new()),
    );
    let mut spec = cmk("late-app", &key);
    spec.region = Some(EU.into());
    assert!(matches!(
        converge(&core, "late-app", &spec).await.next,
        Next::Converged
    ));
    assert_eq!(emu.call_count("PutKeyPolicy"), 1);

    let after = PolicyDocument::parse(&emu.key_policy(&key).unwrap()).unwrap();
    assert!(after.statements().iter().all(|s| !s.has_legacy_sid()));
    assert_eq!(
        after.owned_sids().len(),
        8,
        "no duplicates: {:?}",
        after.owned_sids()
    );
    assert!(
        after
            .owned_sids()
            .contains(&"MsfCmkOperatorUseKey-msf-cmk-controller".to_string())
    );
    let granted = msf_cmk_controller::policy::merge::granted(&after).applications;
    let before = msf_cmk_controller::policy::merge::granted(&released).applications;
    assert!(before.iter().all(|a| granted.contains(a)));
    assert_eq!(granted.len(), before.len() + 1);
    let people = |d: &PolicyDocument| -> Vec<String> {
        d.statements()
            .iter()
            .filter(|s| !s.is_owned())
            .map(|s| serde_json::to_string(s.raw()).unwrap())
            .collect()
    };
    assert_eq!(people(&after), people(&released));

    emu.reset_counts();
    assert!(matches!(
        converge(&core, "late-app", &spec).await.next,
        Next::Converged
    ));
    assert_eq!(emu.call_count("PutKeyPolicy"), 0);
}
