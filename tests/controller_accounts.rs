//! Accounts per namespace (issue 11) against the embedded emulator with three accounts: each
//! mapped namespace converges with its own account's assumed role (the emulator's call log
//! names the account and the session of every call), a namespace claiming another account's
//! key is refused with no AWS call, and a key administrator's session makes the key policy
//! calls while the operator's makes the MSF calls.

// The emulator exists only with the default feature `emulator`.
#![cfg(feature = "emulator")]

use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use msf_cmk_controller::api::{
    ApplicationEncryptionSpec, ApplicationEncryptionStatus, DeletionPolicy, KeyPolicySpec, KeyType,
};
use msf_cmk_controller::aws::{ConnectOptions, connect};
use msf_cmk_controller::controller::accounts::AccountsConfig;
use msf_cmk_controller::controller::batch;
use msf_cmk_controller::controller::context::{Core, Settings};
use msf_cmk_controller::controller::fleet::{Fleet, Shared};
use msf_cmk_controller::controller::manifests::Manifest;
use msf_cmk_controller::controller::metrics::Metrics;
use msf_cmk_controller::controller::reconcile::{self, Mode, Next, Outcome, Subject};
use msf_cmk_controller::controller::status;
use msf_cmk_controller::controller::tenancy::Tenancy;
use msf_cmk_controller::domain::{ApplicationStatus, AppliedKeyType};
use msf_cmk_controller::emulator::{CallRecord, Emulator, EmulatorConfig, EmulatorHandle};
use msf_cmk_controller::planner::Defaults;

const REGION: &str = "us-east-1";
const A: &str = "111111111111";
const B: &str = "222222222222";
const C: &str = "333333333333";
/// The access key id of `ConnectOptions::local`'s static credentials: the pod's own identity.
const POD_KEY: &str = "AKIDEMULATOR";

fn role(account: &str, name: &str) -> String {
    format!("arn:aws:iam::{account}:role/{name}")
}

fn session(account: &str, name: &str) -> String {
    format!("arn:aws:sts::{account}:assumed-role/{name}/msf-cmk-controller")
}

/// team-a* -> A (operator only), team-b -> B (external id), team-c -> C (operator and a
/// separate key administrator).
fn accounts_yaml() -> String {
    format!(
        r#"
accounts:
- namespaces: ["team-a", "team-a-*"]
  accountId: "{A}"
  operatorRoleArn: {op_a}
- namespaces: [team-b]
  accountId: "{B}"
  operatorRoleArn: {op_b}
  externalId: team-b
  regions: [{REGION}]
- namespaces: [team-c]
  accountId: "{C}"
  operatorRoleArn: {op_c}
  keyAdminRoleArn: {ka_c}
"#,
        op_a = role(A, "team-a-operator"),
        op_b = role(B, "msf-cmk-operator"),
        op_c = role(C, "msf-cmk-operator"),
        ka_c = role(C, "msf-cmk-key-admin"),
    )
}

struct Env {
    emu: EmulatorHandle,
    core: Core,
    /// Per account, the key the application `orders` of that account should use.
    keys: Vec<(String, String)>,
}

async fn env() -> Env {
    let emu = Emulator::start(EmulatorConfig {
        account_id: A.into(),
        extra_accounts: vec![B.into(), C.into()],
        update_delay: Duration::from_millis(40),
        ..EmulatorConfig::default()
    })
    .await
    .expect("emulator starts");
    emu.add_principals([
        role(A, "team-a-operator"),
        role(C, "msf-cmk-operator"),
        role(C, "msf-cmk-key-admin"),
    ]);
    emu.add_roles_with_external_id([role(B, "msf-cmk-operator")], "team-b")
        .unwrap();
    let mut keys = Vec::new();
    for account in [A, B, C] {
        emu.create_application_in(
            account,
            REGION,
            "orders",
            "FLINK-1_20",
            ApplicationStatus::Ready,
        )
        .unwrap();
        keys.push((
            account.to_string(),
            emu.create_key_in(account, REGION, None).unwrap(),
        ));
    }
    let mut opts = ConnectOptions::local(emu.endpoint());
    opts.max_attempts = 1;
    let aws = connect(&opts).await.unwrap();
    let metrics = Arc::new(Metrics::new());
    let settings = Settings {
        policy_share_window: Duration::ZERO,
        policy_settle: Duration::ZERO,
        ..Settings::default()
    };
    let defaults = Defaults {
        region: REGION.into(),
        operator_role_arn: Some(role(A, "msf-cmk-operator")),
    };
    let tenancy = Tenancy(None);
    let mut core = Core::new(
        aws.msf,
        aws.kms,
        defaults.clone(),
        tenancy.clone(),
        settings,
        metrics.clone(),
    );
    let config = AccountsConfig::parse(&accounts_yaml()).unwrap();
    let shared = Shared {
        defaults: &defaults,
        tenancy: &tenancy,
        settings,
        metrics,
    };
    let fleet = Fleet::connect(config, &opts, shared, |_| {}).await.unwrap();
    fleet.ask_identities().await;
    core.fleet = Some(Arc::new(fleet));
    Env { emu, core, keys }
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

impl Env {
    fn key(&self, account: &str) -> &str {
        &self.keys.iter().find(|(a, _)| a == account).unwrap().1
    }

    async fn once(
        &self,
        namespace: &str,
        spec: &ApplicationEncryptionSpec,
        previous: Option<&ApplicationEncryptionStatus>,
    ) -> Outcome {
        let subject = Subject {
            namespace,
            name: "orders",
            spec,
            generation: Some(1),
            previous,
            conflict: None,
            retry_update: None,
        };
        reconcile::reconcile(&self.core, &subject, &[], Mode::Execute, Utc::now()).await
    }

    async fn converge(&self, namespace: &str, spec: &ApplicationEncryptionSpec) -> Outcome {
        let mut previous: Option<ApplicationEncryptionStatus> = None;
        for _ in 0..100 {
            let o = self.once(namespace, spec, previous.as_ref()).await;
            match o.next {
                Next::Waiting(_) | Next::Failed(_) => {
                    previous = Some(o.status.clone());
                    tokio::time::sleep(Duration::from_millis(30)).await;
                }
                _ => return o,
            }
        }
        panic!("{namespace} did not converge");
    }

    /// The calls of `account` since `since`, AssumeRole (made by the pod's own identity) left out.
    fn calls_in(&self, account: &str, since: u64) -> Vec<CallRecord> {
        self.emu
            .calls(since)
            .into_iter()
            .filter(|c| c.account == account && c.operation != "AssumeRole")
            .collect()
    }

    fn last_seq(&self) -> u64 {
        self.emu.calls(0).last().map_or(0, |c| c.seq)
    }
}

fn ready(o: &Outcome) -> (String, String) {
    let c = status::ready(&o.status).expect("a Ready condition");
    (c.status.to_string(), c.reason.to_string())
}

#[tokio::test]
async fn each_namespace_converges_in_its_account_as_its_role() {
    let e = env().await;
    let since = e.last_seq();
    for (ns, account) in [("team-a-orders", A), ("team-b", B), ("team-c", C)] {
        let spec = cmk("orders", e.key(account));
        let o = e.converge(ns, &spec).await;
        assert_eq!(o.next, Next::Converged, "{ns}: {:#?}", o.status);
        assert_eq!(ready(&o).0, "True", "{ns}");
        let app = e.emu.application_in(account, REGION, "orders").unwrap();
        assert_eq!(app.encryption.key_type, AppliedKeyType::CustomerManagedKey);
        assert_eq!(app.encryption.key_id.as_deref(), Some(e.key(account)));
    }
    // Every call in A and B was made by that account's operator session.
    for (account, operator) in [(A, "team-a-operator"), (B, "msf-cmk-operator")] {
        let calls = e.calls_in(account, since);
        assert!(
            calls.iter().any(|c| c.operation == "UpdateApplication"),
            "{account}: {calls:#?}"
        );
        for c in &calls {
            assert_eq!(c.caller_arn, session(account, operator), "{c:#?}");
            assert_ne!(c.access_key_id, POD_KEY, "{c:#?}");
        }
    }
    // The call metrics name each account (item 4: per-account dashboards and alerts).
    let text = e.core.metrics.encode();
    for account in [A, B, C] {
        let needle = format!(
            r#"msf_cmk_aws_calls_total{{service="kinesisanalytics",operation="UpdateApplication",outcome="ok",account="{account}"}} 1"#
        );
        assert!(text.contains(&needle), "missing {needle}:\n{text}");
    }
    // The other accounts' applications were not touched by anyone else: each `orders` uses its
    // own account's key (checked above), and A's pod identity made no MSF or KMS call.
    assert!(
        e.emu
            .calls(since)
            .iter()
            .all(|c| c.access_key_id != POD_KEY || c.operation == "AssumeRole"),
        "only AssumeRole with the pod's own credentials"
    );
}

#[tokio::test]
async fn key_admin_writes_the_policy_and_operator_updates_the_application() {
    let e = env().await;
    let since = e.last_seq();
    let o = e.converge("team-c", &cmk("orders", e.key(C))).await;
    assert_eq!(o.next, Next::Converged, "{:#?}", o.status);
    let calls = e.calls_in(C, since);
    let admin = session(C, "msf-cmk-key-admin");
    let operator = session(C, "msf-cmk-operator");
    let by = |op: &str| -> Vec<&str> {
        calls
            .iter()
            .filter(|c| c.operation == op)
            .map(|c| c.caller_arn.as_str())
            .collect()
    };
    for op in ["GetKeyPolicy", "PutKeyPolicy"] {
        assert!(!by(op).is_empty(), "{op}: {calls:#?}");
        assert!(by(op).iter().all(|c| *c == admin), "{op}: {:?}", by(op));
    }
    for op in ["UpdateApplication", "DescribeApplication", "DescribeKey"] {
        assert!(!by(op).is_empty(), "{op}: {calls:#?}");
        assert!(by(op).iter().all(|c| *c == operator), "{op}: {:?}", by(op));
    }
    // The key policy grants the operator (the role MSF checks), not the key administrator.
    let policy = e.emu.key_policy(e.key(C)).unwrap();
    assert!(policy.contains(&role(C, "msf-cmk-operator")), "{policy}");
}

#[tokio::test]
async fn another_accounts_key_is_refused_without_any_call() {
    let e = env().await;
    let since = e.last_seq();
    // team-a is mapped to A; B's key (and an alias ARN of B) are not its to use.
    for key in [
        e.key(B).to_string(),
        format!("arn:aws:kms:{REGION}:{B}:alias/orders"),
    ] {
        let o = e.once("team-a", &cmk("orders", &key), None).await;
        assert_eq!(o.next, Next::Refused, "{:#?}", o.status);
        assert_eq!(ready(&o).1, "NotPermitted");
        let msg = &status::ready(&o.status).unwrap().message;
        assert!(msg.contains(B) && msg.contains(A), "{msg}");
    }
    // team-b may act only in its listed region.
    let mut spec = cmk("orders", e.key(B));
    spec.region = Some("eu-west-1".into());
    let o = e.once("team-b", &spec, None).await;
    assert_eq!(ready(&o).1, "NotPermitted", "{:#?}", o.status);
    assert!(
        e.emu.calls(since).is_empty(),
        "no AWS call at all: {:#?}",
        e.emu.calls(since)
    );
    // Nothing changed in B.
    let app = e.emu.application_in(B, REGION, "orders").unwrap();
    assert_eq!(app.encryption.key_type, AppliedKeyType::AwsOwnedKey);
}

#[tokio::test]
async fn an_unmapped_namespace_keeps_the_pods_own_identity() {
    let e = env().await;
    let since = e.last_seq();
    let o = e.converge("elsewhere", &cmk("orders", e.key(A))).await;
    assert_eq!(o.next, Next::Converged, "{:#?}", o.status);
    let calls = e.calls_in(A, since);
    assert!(calls.iter().any(|c| c.operation == "UpdateApplication"));
    assert!(
        calls.iter().all(|c| c.access_key_id == POD_KEY),
        "{calls:#?}"
    );
}

#[tokio::test]
async fn each_accounts_caller_identity_is_its_operator_session() {
    let e = env().await;
    let fleet = e.core.fleet.as_ref().unwrap();
    let callers: Vec<String> = fleet
        .cores()
        .iter()
        .map(|c| c.caller.get().expect("asked").arn)
        .collect();
    assert_eq!(
        callers,
        vec![
            session(A, "team-a-operator"),
            session(B, "msf-cmk-operator"),
            session(C, "msf-cmk-operator"),
        ]
    );
}

#[tokio::test]
async fn one_name_in_two_accounts_is_no_conflict() {
    let e = env().await;
    let manifest = |ns: &str, account: &str| Manifest {
        namespace: ns.into(),
        name: "orders".into(),
        spec: cmk("orders", e.key(account)),
        source: "test".into(),
        retry_update: None,
    };
    // `orders` exists in every account: three applications, three owners.
    let manifests = vec![
        manifest("team-a", A),
        manifest("team-b", B),
        manifest("team-c", C),
    ];
    let outcomes = batch::plan_all(&e.core, &manifests, 3).await;
    for (m, o) in manifests.iter().zip(&outcomes) {
        assert_ne!(o.next, Next::Refused, "{}: {:#?}", m.namespace, o.status);
        assert_eq!(o.next, Next::Pending, "{}: {:#?}", m.namespace, o.status);
    }
    // Two namespaces of one account claiming one application: still a conflict.
    let manifests = vec![manifest("team-a", A), manifest("team-a-2", A)];
    let outcomes = batch::plan_all(&e.core, &manifests, 2).await;
    assert_eq!(
        ready(&outcomes[1]).1,
        "Conflict",
        "{:#?}",
        outcomes[1].status
    );
}
