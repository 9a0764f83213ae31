//! Tenancy gaps (issue 13): who may claim an application, which operator role a namespace may
//! have a key policy grant, and what a co-tenant's write may grant. Against the embedded
//! emulator through the `reconcile` core that `run` and `apply` share; every refusal is checked
//! to cost no AWS call, from the emulator's own counts.

use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use msf_cmk_controller::api::{ApplicationEncryptionSpec, DeletionPolicy, KeyPolicySpec, KeyType};
use msf_cmk_controller::aws::{ConnectOptions, connect};
use msf_cmk_controller::controller::batch::{self, ApplyOptions};
use msf_cmk_controller::controller::context::{Core, Settings};
use msf_cmk_controller::controller::manifests::Manifest;
use msf_cmk_controller::controller::metrics::Metrics;
use msf_cmk_controller::controller::reconcile::{self, Mode, Next, Outcome, Peer, Subject};
use msf_cmk_controller::controller::status;
use msf_cmk_controller::controller::tenancy::{Tenancy, TenancyConfig};
use msf_cmk_controller::domain::{ApplicationStatus, ErrorCategory};
use msf_cmk_controller::emulator::{Emulator, EmulatorConfig, EmulatorHandle, Fault};
use msf_cmk_controller::identity::CallerIdentity;
use msf_cmk_controller::planner::Defaults;

const REGION: &str = "us-east-1";

struct Env {
    emu: EmulatorHandle,
    core: Core,
}

async fn env_with(tenancy: Tenancy) -> Env {
    let emu = Emulator::start(EmulatorConfig {
        update_delay: Duration::from_millis(40),
        ..EmulatorConfig::default()
    })
    .await
    .unwrap();
    let mut opts = ConnectOptions::local(emu.endpoint());
    opts.max_attempts = 1;
    let aws = connect(&opts).await.unwrap();
    let core = Core::new(
        aws.msf,
        aws.kms,
        Defaults {
            region: REGION.into(),
            operator_role_arn: Some(format!("arn:aws:iam::{}:role/operator", emu.account_id())),
        },
        tenancy,
        Settings {
            policy_share_window: Duration::ZERO,
            policy_settle: Duration::ZERO,
            ..Settings::default()
        },
        Arc::new(Metrics::new()),
    );
    Env { emu, core }
}

fn tenancy(yaml: &str) -> Tenancy {
    Tenancy(Some(TenancyConfig::parse(yaml).unwrap()))
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

fn with_role(mut spec: ApplicationEncryptionSpec, role: &str) -> ApplicationEncryptionSpec {
    spec.key_policy.operator_role_arn = Some(role.into());
    spec
}

fn manifest(namespace: &str, name: &str, spec: ApplicationEncryptionSpec) -> Manifest {
    Manifest {
        namespace: namespace.into(),
        name: name.into(),
        spec,
        source: "test".into(),
        retry_update: None,
    }
}

fn ready(o: &Outcome) -> (String, String, String) {
    let c = status::ready(&o.status).expect("a Ready condition");
    (
        c.status.to_string(),
        c.reason.to_string(),
        c.message.to_string(),
    )
}

fn options() -> ApplyOptions {
    ApplyOptions {
        concurrency: 4,
        timeout: Duration::from_secs(30),
        poll: Duration::from_millis(30),
    }
}

impl Env {
    fn app(&self, name: &str) {
        self.emu
            .create_application(REGION, name, "FLINK-1_20", ApplicationStatus::Running)
            .unwrap();
    }

    fn calls(&self) -> u64 {
        self.emu.call_counts().values().sum()
    }

    async fn once(&self, namespace: &str, spec: &ApplicationEncryptionSpec) -> Outcome {
        self.once_with_peers(namespace, spec, &[]).await
    }

    async fn once_with_peers(
        &self,
        namespace: &str,
        spec: &ApplicationEncryptionSpec,
        peers: &[Peer],
    ) -> Outcome {
        let subject = Subject {
            namespace,
            name: "r",
            spec,
            generation: Some(1),
            previous: None,
            conflict: None,
            retry_update: None,
        };
        reconcile::reconcile(&self.core, &subject, peers, Mode::Execute, Utc::now()).await
    }
}

/// The loser of a conflict must not have its application granted on its key by another
/// resource's write: that would act for a claim the controller refused.
#[tokio::test]
async fn a_conflict_loser_is_not_granted_on_its_key_by_a_co_tenant() {
    let e = env_with(Tenancy(None)).await;
    e.app("orders");
    e.app("reports");
    let k1 = e.emu.create_key(REGION, None).unwrap();
    let k2 = e.emu.create_key(REGION, None).unwrap();
    let manifests = vec![
        manifest("a", "orders", cmk("orders", &k1)),
        // Loses "orders" to a/orders (namespace/name), and wants k2.
        manifest("b", "orders", cmk("orders", &k2)),
        // A legitimate co-tenant of k2: its write must cover only itself.
        manifest("c", "reports", cmk("reports", &k2)),
    ];
    let done = batch::apply_all(&e.core, &manifests, options(), |_| {}).await;
    assert_eq!(done[0].outcome.ready(), "True");
    let (status, reason, message) = ready(&done[1].outcome);
    assert_eq!((status.as_str(), reason.as_str()), ("False", "Conflict"));
    assert!(message.contains("a/orders"), "{message}");
    assert_eq!(done[2].outcome.ready(), "True");

    let orders_arn = format!(
        "arn:aws:kinesisanalytics:{REGION}:{}:application/orders",
        e.emu.account_id()
    );
    let p1 = e.emu.key_policy(&k1).unwrap();
    let p2 = e.emu.key_policy(&k2).unwrap();
    assert!(p1.contains(&orders_arn), "the winner's key grants orders");
    assert!(
        p2.contains("application/reports"),
        "k2 grants its co-tenant"
    );
    assert!(
        !p2.contains(&orders_arn),
        "the loser's application was granted on the loser's key:\n{p2}"
    );
    // One write per key, one update per winning application.
    assert_eq!(e.emu.call_count("PutKeyPolicy"), 2);
    assert_eq!(e.emu.call_count("UpdateApplication"), 2);
}

/// An operator role in another account than the application's is refused before any call,
/// with or without a tenancy file.
#[tokio::test]
async fn an_operator_role_of_another_account_is_refused_without_a_call() {
    let e = env_with(Tenancy(None)).await;
    e.app("orders");
    let key = e.emu.create_key(REGION, None).unwrap();
    let account = e.emu.account_id().to_string();
    e.core.caller.set(CallerIdentity {
        arn: format!("arn:aws:sts::{account}:assumed-role/operator/test"),
        account: account.clone(),
        user_id: "AROAEXAMPLE:test".into(),
    });
    let before = e.calls();
    let spec = with_role(
        cmk("orders", &key),
        "arn:aws:iam::999999999999:role/operator",
    );
    let o = e.once("ns", &spec).await;
    let (status, reason, message) = ready(&o);
    assert_eq!(
        (status.as_str(), reason.as_str()),
        ("False", "NotPermitted")
    );
    assert!(
        message.contains("not in the application's account"),
        "{message}"
    );
    assert!(matches!(o.next, Next::Refused));
    assert_eq!(e.calls(), before, "a refusal makes no AWS call");
}

/// `operatorRoles` in the tenancy file: a listed role converges and is the one granted; an
/// unlisted one is refused before any call, and a co-tenant's write never grants it either.
#[tokio::test]
async fn operator_roles_are_subject_to_the_tenancy_file() {
    let account = "123456789012";
    let e = env_with(tenancy(&format!(
        r#"
namespaces:
  team-a:
    applications: ["*"]
    keys: ["*"]
    operatorRoles: ["arn:aws:iam::{account}:role/team-a-*"]
  team-b:
    applications: ["*"]
    keys: ["*"]
"#
    )))
    .await;
    assert_eq!(
        e.emu.account_id(),
        account,
        "the emulator's default account"
    );
    e.app("orders");
    e.app("reports");
    let key = e.emu.create_key(REGION, None).unwrap();
    let allowed = format!("arn:aws:iam::{account}:role/team-a-operator");
    let refused_role = format!("arn:aws:iam::{account}:role/admin");
    e.emu
        .add_principals([allowed.clone(), refused_role.clone()]);

    // Refused: not listed for team-a; team-b lists none at all.
    let before = e.calls();
    for (ns, role) in [("team-a", &refused_role), ("team-b", &allowed)] {
        let o = e.once(ns, &with_role(cmk("orders", &key), role)).await;
        let (_, reason, message) = ready(&o);
        assert_eq!(reason, "NotPermitted", "{ns}: {message}");
        assert!(message.contains("may not name operator role"), "{message}");
    }
    assert_eq!(e.calls(), before, "refusals make no AWS call");

    // Listed: converges, and the key policy grants that role. A peer of team-b naming a role
    // it may not name is left out of the write.
    let peer = Peer {
        namespace: "team-b".into(),
        name: "reports".into(),
        spec: with_role(cmk("reports", &key), &refused_role),
        incumbent: false,
        deleting: false,
    };
    let spec = with_role(cmk("orders", &key), &allowed);
    let mut outcome = e
        .once_with_peers("team-a", &spec, std::slice::from_ref(&peer))
        .await;
    for _ in 0..100 {
        if !matches!(outcome.next, Next::Waiting(_) | Next::Failed(_)) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(30)).await;
        outcome = e
            .once_with_peers("team-a", &spec, std::slice::from_ref(&peer))
            .await;
    }
    assert_eq!(outcome.ready(), "True", "{:?}", ready(&outcome));
    let policy = e.emu.key_policy(&key).unwrap();
    assert!(policy.contains(&allowed), "{policy}");
    assert!(
        !policy.contains(&refused_role),
        "a co-tenant's write granted a role the guard refuses:\n{policy}"
    );
    assert!(!policy.contains("application/reports"), "{policy}");
}

/// Resolving an alias for the guard while AWS does not answer is a transient failure
/// (`AwsUnavailable`, retried), never a `NotPermitted` refusal; once AWS answers it converges.
#[tokio::test]
async fn an_alias_unresolvable_while_aws_is_down_is_retried_not_refused() {
    let account = "123456789012";
    let e = env_with(tenancy(&format!(
        r#"
namespaces:
  team-a:
    applications: ["orders"]
    keys: ["arn:aws:kms:{REGION}:{account}:key/*"]
"#
    )))
    .await;
    e.app("orders");
    let key = e.emu.create_key(REGION, None).unwrap();
    e.emu.create_alias(REGION, "alias/team-a", &key).unwrap();
    let spec = cmk("orders", "alias/team-a");

    e.emu.set_fault("DescribeKey", Fault::server_error(1.0));
    let o = e.once("team-a", &spec).await;
    let (status, reason, message) = ready(&o);
    assert_eq!(
        (status.as_str(), reason.as_str()),
        ("False", "AwsUnavailable"),
        "{message}"
    );
    assert!(
        matches!(o.next, Next::Failed(ErrorCategory::Transient)),
        "{:?}",
        o.next
    );
    assert_eq!(e.emu.call_count("PutKeyPolicy"), 0);
    assert_eq!(e.emu.call_count("UpdateApplication"), 0);

    e.emu.clear_faults();
    let mut outcome = e.once("team-a", &spec).await;
    for _ in 0..100 {
        if !matches!(outcome.next, Next::Waiting(_) | Next::Failed(_)) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(30)).await;
        outcome = e.once("team-a", &spec).await;
    }
    assert_eq!(outcome.ready(), "True", "{:?}", ready(&outcome));
}

/// `plan` (dry run over files) and `apply` choose the same winner as `run`'s rule for new
/// claims: the first by namespace/name, whatever the order of the files.
#[tokio::test]
async fn plan_and_apply_choose_the_same_winner_whatever_the_file_order() {
    let e = env_with(Tenancy(None)).await;
    e.app("orders");
    let key = e.emu.create_key(REGION, None).unwrap();
    let later = manifest("team-z", "orders", cmk("orders", &key));
    let first = manifest("team-a", "orders", cmk("orders", &key));
    let plans = batch::plan_all(&e.core, &[later.clone(), first.clone()], 2).await;
    let (_, reason, message) = ready(&plans[0]);
    assert_eq!(reason, "Conflict", "{message}");
    assert!(message.contains("team-a/orders"), "{message}");
    assert_ne!(ready(&plans[1]).1, "Conflict");
    let done = batch::apply_all(&e.core, &[first, later], options(), |_| {}).await;
    assert_eq!(done[0].outcome.ready(), "True");
    assert_eq!(ready(&done[1].outcome).1, "Conflict");
    assert_eq!(e.emu.call_count("UpdateApplication"), 1);
}
