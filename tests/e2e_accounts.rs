//! Issue 11 on a real kube-apiserver: the accounts ConfigMap the Helm chart renders
//! (`accounts.config`, `helm template` as `tests/e2e_deploy.rs` runs it) drives
//! `msf-cmk-controller run` over two accounts of one emulator (`--accounts`). Resources in two
//! namespaces converge, each in its own account, every AWS call made as that account's
//! assumed operator role (the emulator's call log), under the chart's `instanceName`.

mod support;

use std::collections::BTreeSet;
use std::process::Command;
use std::time::Duration;

use msf_cmk_controller::domain::{ApplicationStatus, AppliedKeyType};
use msf_cmk_controller::emulator::{Emulator, EmulatorConfig};
use serde::Deserialize;
use serde_json::Value;
use support::cluster::{TestCluster, repo_path};
use support::controller::{ControllerOptions, start_controller};
use support::scenario::{appenc, condition};
use support::wait::wait_until;

const REGION: &str = "us-east-1";
const A: &str = "111111111111";
const B: &str = "222222222222";
/// The pod's own role (unmapped namespaces), in the emulator's first account.
const POD_ROLE: &str = "arn:aws:iam::111111111111:role/msf-cmk-controller";

fn operator(account: &str) -> String {
    format!("arn:aws:iam::{account}:role/msf-cmk-operator-{account}")
}

fn session(account: &str) -> String {
    format!("arn:aws:sts::{account}:assumed-role/msf-cmk-operator-{account}/msf-cmk-controller")
}

/// `helm template` of the chart with `values` (YAML), as documents.
fn helm_template(values: &str, namespace: &str) -> Vec<Value> {
    let helm = std::env::var("HELM_BIN").unwrap_or_else(|_| {
        panic!("HELM_BIN is not set: run `eval \"$(tests/e2e/setup.sh)\"` first (docs/e2e.md)")
    });
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("values.yaml");
    std::fs::write(&file, values).unwrap();
    let out = Command::new(helm)
        .args([
            "template",
            "msf-cmk-controller",
            "deploy/helm/msf-cmk-controller",
            "--namespace",
            namespace,
            "-f",
        ])
        .arg(&file)
        .current_dir(repo_path(""))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "helm template: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    yaml_serde::Deserializer::from_str(&String::from_utf8(out.stdout).unwrap())
        .map(|doc| Value::deserialize(doc).expect("valid YAML"))
        .filter(|v| !v.is_null())
        .collect()
}

fn env_value<'a>(container: &'a Value, name: &str) -> Option<&'a str> {
    container["env"]
        .as_array()?
        .iter()
        .find(|e| e["name"] == name)?["value"]
        .as_str()
}

#[test]
fn the_chart_s_accounts_config_map_drives_a_run_over_two_accounts() {
    let cluster = TestCluster::shared();
    cluster.install_crds();
    cluster.install_deploy_bundle();
    let ns_a = cluster.create_namespace("acct-a");
    let ns_b = cluster.create_namespace("acct-b");

    // The chart renders the accounts file into a ConfigMap and points the controller at it.
    let values = format!(
        r#"
aws:
  roleArn: {POD_ROLE}
instanceName: e2e-fleet
accounts:
  config:
    accounts:
      - namespaces: ["{ns_a}"]
        accountId: "{A}"
        operatorRoleArn: {op_a}
      - namespaces: ["{ns_b}"]
        accountId: "{B}"
        operatorRoleArn: {op_b}
        externalId: team-b
        regions: [{REGION}]
"#,
        op_a = operator(A),
        op_b = operator(B),
    );
    // Installed in a namespace of its own, as `helm install -n` would.
    let ns_controller = cluster.create_namespace("acct-ctl");
    let docs = helm_template(&values, &ns_controller);
    let cm = docs
        .iter()
        .find(|d| {
            d["kind"] == "ConfigMap" && d["metadata"]["name"] == "msf-cmk-controller-accounts"
        })
        .unwrap_or_else(|| {
            let names: Vec<String> = docs
                .iter()
                .map(|d| format!("{} {}", d["kind"], d["metadata"]["name"]))
                .collect();
            panic!("the chart renders no accounts ConfigMap: {names:?}")
        })
        .clone();
    let deployment = docs.iter().find(|d| d["kind"] == "Deployment").unwrap();
    let pod = &deployment["spec"]["template"]["spec"];
    let container = &pod["containers"][0];
    let path = env_value(container, "MSF_CMK_ACCOUNTS_CONFIG").expect("MSF_CMK_ACCOUNTS_CONFIG");
    assert_eq!(
        env_value(container, "MSF_CMK_INSTANCE_NAME"),
        Some("e2e-fleet")
    );
    let mount = container["volumeMounts"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["name"] == "accounts")
        .expect("the accounts volume is mounted");
    assert_eq!(mount["readOnly"], true);
    let file = path
        .strip_prefix(mount["mountPath"].as_str().unwrap())
        .and_then(|f| f.strip_prefix('/'))
        .expect("the file is in the mounted directory");
    let volume = pod["volumes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|v| v["name"] == "accounts")
        .unwrap();
    assert_eq!(volume["configMap"]["name"], "msf-cmk-controller-accounts");

    // The API server stores the ConfigMap; the file the kubelet would project is its key.
    cluster
        .kubectl_stdin(
            &["apply", "-n", &ns_controller, "-f", "-"],
            &serde_json::to_string(&cm).unwrap(),
        )
        .ok();
    let stored: Value = serde_json::from_str(
        &cluster
            .kubectl(&[
                "get",
                "configmap",
                "msf-cmk-controller-accounts",
                "-n",
                &ns_controller,
                "-o",
                "json",
            ])
            .ok(),
    )
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let accounts_file = dir.path().join(file);
    std::fs::write(&accounts_file, stored["data"][file].as_str().unwrap()).unwrap();

    // One emulator serving both accounts; an application and a key in each.
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let emu = runtime
        .block_on(Emulator::start(EmulatorConfig {
            account_id: A.into(),
            extra_accounts: vec![B.into()],
            default_region: REGION.into(),
            update_delay: Duration::from_millis(100),
            ..EmulatorConfig::default()
        }))
        .unwrap();
    emu.add_principals([operator(A), POD_ROLE.to_string()]);
    emu.add_roles_with_external_id([operator(B)], "team-b")
        .unwrap();
    let mut keys = Vec::new();
    for account in [A, B] {
        emu.create_application_in(
            account,
            REGION,
            "orders",
            "FLINK-1_20",
            ApplicationStatus::Ready,
        )
        .unwrap();
        keys.push(emu.create_key_in(account, REGION, None).unwrap());
    }

    let opts = ControllerOptions {
        identity: "e2e-accounts".into(),
        resync_period: "2s".into(),
        leader_election: false,
        env: vec![],
    }
    .env("MSF_CMK_AWS_ENDPOINT_URL", &emu.endpoint())
    .env("MSF_CMK_NAMESPACES", &format!("{ns_a},{ns_b}"))
    .env("MSF_CMK_OPERATOR_ROLE_ARN", POD_ROLE)
    .env("MSF_CMK_POLICY_SETTLE", "1s")
    .env("MSF_CMK_ACCOUNTS_CONFIG", accounts_file.to_str().unwrap())
    .env(
        "MSF_CMK_INSTANCE_NAME",
        env_value(container, "MSF_CMK_INSTANCE_NAME").unwrap(),
    )
    .env("NO_COLOR", "1");
    let mut controller = start_controller(cluster, opts);

    for (ns, key) in [(&ns_a, &keys[0]), (&ns_b, &keys[1])] {
        cluster
            .kubectl_stdin(
                &["apply", "-n", ns, "-f", "-"],
                &appenc("orders", "orders", Some(key), ""),
            )
            .ok();
    }
    for ns in [&ns_a, &ns_b] {
        wait_until(
            &format!("{ns}/orders Ready=True"),
            Duration::from_secs(60),
            Duration::from_millis(500),
            || {
                if !controller.process.is_running() {
                    return Err(format!(
                        "the controller exited:\n{}",
                        controller.process.log()
                    ));
                }
                let out = cluster
                    .kubectl(&["get", "appenc", "orders", "-n", ns, "-o", "json"])
                    .ok();
                let v: Value = serde_json::from_str(&out).map_err(|e| e.to_string())?;
                match condition(&v, "Ready") {
                    Some(c) if c["status"] == "True" => Ok(()),
                    other => Err(format!("{other:?}\n{}", controller.process.log())),
                }
            },
        );
    }

    // Each application is on its own account's key, with the key policy written under the
    // chart's instance name for that account's operator role.
    for (account, key) in [(A, &keys[0]), (B, &keys[1])] {
        let app = emu.application_in(account, REGION, "orders").unwrap();
        assert_eq!(app.encryption.key_type, AppliedKeyType::CustomerManagedKey);
        assert_eq!(app.encryption.key_id.as_deref(), Some(key.as_str()));
        let policy = emu.key_policy(key).unwrap();
        let role_name = format!("msf-cmk-operator-{account}");
        assert!(
            policy.contains(&format!("\"MsfCmk-e2e-fleet-OperatorUseKey-{role_name}\"")),
            "{policy}"
        );
    }
    // Every MSF and KMS call in each account was made by that account's operator session.
    let calls = emu.calls(0);
    for account in [A, B] {
        let in_account: Vec<_> = calls
            .iter()
            .filter(|c| {
                c.account == account
                    && !["AssumeRole", "GetCallerIdentity"].contains(&c.operation.as_str())
            })
            .collect();
        let ops: BTreeSet<&str> = in_account.iter().map(|c| c.operation.as_str()).collect();
        for op in [
            "DescribeApplication",
            "UpdateApplication",
            "GetKeyPolicy",
            "PutKeyPolicy",
        ] {
            assert!(ops.contains(op), "{account}: {op} missing from {ops:?}");
        }
        for c in &in_account {
            assert_eq!(c.caller_arn, session(account), "{c:#?}");
        }
    }
    let assumed: BTreeSet<&str> = calls
        .iter()
        .filter(|c| c.operation == "AssumeRole")
        .filter_map(|c| c.target.as_deref())
        .collect();
    assert!(
        !calls
            .iter()
            .any(|c| c.operation == "AssumeRole" && c.outcome != "ok"),
        "{assumed:?}"
    );
    controller.process.stop(Duration::from_secs(10));
}
