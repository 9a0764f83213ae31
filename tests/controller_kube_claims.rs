//! Two resources in two watched namespaces claim one application before `run` starts (a cold
//! start, or a GitOps sync that created both): `run` must choose the winner `plan`/`apply` choose
//! for the same manifests (the first by namespace/name; neither acts yet), and only once every
//! watched namespace's cache is synced, so the order in which the caches fill does not decide.
//! On a real kube-apiserver; needs `eval "$(tests/e2e/setup.sh)"` first (see docs/e2e.md).

mod support;

use std::sync::Arc;
use std::time::Duration;

use kube::api::Api;
use msf_cmk_controller::api::ApplicationEncryption;
use msf_cmk_controller::aws::{ConnectOptions, connect};
use msf_cmk_controller::controller::batch;
use msf_cmk_controller::controller::context::{Core, Settings};
use msf_cmk_controller::controller::manifests::Manifest;
use msf_cmk_controller::controller::metrics::Metrics;
use msf_cmk_controller::controller::status;
use msf_cmk_controller::controller::tenancy::Tenancy;
use msf_cmk_controller::domain::ApplicationStatus;
use msf_cmk_controller::emulator::{Emulator, EmulatorConfig};
use msf_cmk_controller::planner::Defaults;
use support::cluster::TestCluster;
use support::controller::{ControllerOptions, start_controller};
use support::wait::wait_until_async;

const REGION: &str = "us-east-1";

fn manifest(name: &str, key: &str) -> String {
    format!(
        "apiVersion: msfcmk.dev/v1alpha1\nkind: ApplicationEncryption\nmetadata:\n  name: {name}\nspec:\n  applicationName: orders\n  region: {REGION}\n  keyType: CustomerManagedKey\n  keyId: {key}\n"
    )
}

async fn ready_reason(
    api: &Api<ApplicationEncryption>,
    name: &str,
    log: &dyn Fn() -> String,
) -> String {
    wait_until_async(
        &format!("{name}: a Ready reason"),
        Duration::from_secs(60),
        Duration::from_millis(300),
        || async {
            let o = api.get(name).await.map_err(|e| e.to_string())?;
            let ready = o
                .status
                .as_ref()
                .and_then(|s| s.conditions.iter().find(|c| c.type_ == "Ready"));
            match ready {
                Some(c) if c.status == "True" || c.reason == "Conflict" => Ok(c.reason.to_string()),
                other => Err(format!("{other:?}\nlog:\n{}", log())),
            }
        },
    )
    .await
}

#[tokio::test(flavor = "multi_thread")]
async fn run_and_apply_choose_the_same_winner_across_namespaces() {
    let c = TestCluster::shared();
    let emu = Emulator::start(EmulatorConfig {
        update_delay: Duration::from_millis(100),
        ..EmulatorConfig::default()
    })
    .await
    .expect("emulator");
    emu.create_application(REGION, "orders", "FLINK-1_20", ApplicationStatus::Running)
        .unwrap();
    let key = emu.create_key(REGION, None).unwrap();
    c.install_crds();
    // The later namespace by name is created, and its resource applied, first: creation time
    // would pick it, namespace/name picks the other.
    let late = c.create_namespace("claims-z");
    c.apply_yaml(&manifest("orders", &key), &late)
        .expect("apply");
    tokio::time::sleep(Duration::from_millis(1100)).await; // a later creation second
    let early = c.create_namespace("claims-a");
    c.apply_yaml(&manifest("orders", &key), &early)
        .expect("apply");

    // What `plan`/`apply` decide for the same two manifests (dry run: no write).
    let mut opts = ConnectOptions::local(emu.endpoint());
    opts.max_attempts = 1;
    let aws = connect(&opts).await.unwrap();
    let core = Core::new(
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
        Settings::default(),
        Arc::new(Metrics::new()),
    );
    let spec = |ns: &str| Manifest {
        namespace: ns.into(),
        name: "orders".into(),
        spec: serde_json::from_value(serde_json::json!({
            "applicationName": "orders", "region": REGION,
            "keyType": "CustomerManagedKey", "keyId": key,
        }))
        .unwrap(),
        source: "test".into(),
        retry_update: None,
    };
    let plans = batch::plan_all(&core, &[spec(&late), spec(&early)], 2).await;
    let planned: Vec<String> = plans
        .iter()
        .map(|o| status::ready(&o.status).unwrap().reason.to_string())
        .collect();
    assert_eq!(planned[0], "Conflict", "plan: the later namespace loses");
    assert_ne!(
        planned[1], "Conflict",
        "plan: the earlier namespace keeps it"
    );
    assert_eq!(emu.call_count("UpdateApplication"), 0);

    // `run` over both namespaces, started after both resources exist.
    let ctl = start_controller(
        c,
        ControllerOptions {
            identity: "claims-0".into(),
            resync_period: "5m".into(),
            leader_election: false,
            env: vec![],
        }
        .env("MSF_CMK_AWS_ENDPOINT_URL", &emu.endpoint())
        .env("MSF_CMK_NAMESPACES", &format!("{late},{early}"))
        .env(
            "MSF_CMK_OPERATOR_ROLE_ARN",
            &format!("arn:aws:iam::{}:role/msf-cmk-operator", emu.account_id()),
        ),
    );
    let client = c.client().await;
    let log = || ctl.process.log();
    let early_api: Api<ApplicationEncryption> = Api::namespaced(client.clone(), &early);
    let late_api: Api<ApplicationEncryption> = Api::namespaced(client, &late);
    assert_eq!(ready_reason(&early_api, "orders", &log).await, "Converged");
    assert_eq!(ready_reason(&late_api, "orders", &log).await, "Conflict");
    assert_eq!(
        emu.call_count("UpdateApplication"),
        1,
        "one update, by the winner:\n{}",
        log()
    );
}
