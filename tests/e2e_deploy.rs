//! The deploy bundle cannot rot: the Helm chart renders the same objects as the kustomize
//! base, both are accepted by a real API server, the chart's CRD copy is the generated one,
//! and the pod hardening is what docs promise. Needs `eval "$(tests/e2e/setup.sh)"` first
//! (for `HELM_BIN`, `KUBECTL_BIN` and the API server).

mod support;

use std::collections::BTreeSet;
use std::process::Command;

use serde::Deserialize;
use serde_yaml::Value;
use support::cluster::{TestCluster, repo_path};

const CHART: &str = "deploy/helm/msf-cmk-controller";
const RELEASE: &str = "msf-cmk-controller";
const NAMESPACE: &str = "msf-cmk-system";

fn tool(var: &str) -> String {
    std::env::var(var).ok().filter(|v| !v.is_empty()).unwrap_or_else(|| {
        panic!("{var} is not set: run `eval \"$(tests/e2e/setup.sh)\"` first (scripts/test.sh does this)")
    })
}

fn run(bin: &str, args: &[&str]) -> String {
    let out = Command::new(bin)
        .args(args)
        .current_dir(repo_path("."))
        .output()
        .expect("run tool");
    assert!(
        out.status.success(),
        "{bin} {args:?} failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("utf-8 output")
}

fn helm_template(extra: &[&str]) -> String {
    let mut args = vec!["template", RELEASE, CHART, "--namespace", NAMESPACE];
    args.extend_from_slice(extra);
    run(&tool("HELM_BIN"), &args)
}

fn kustomize_base() -> String {
    run(
        &tool("KUBECTL_BIN"),
        &["kustomize", "deploy/kustomize/base"],
    )
}

fn documents(yaml: &str) -> Vec<Value> {
    serde_yaml::Deserializer::from_str(yaml)
        .map(|doc| Value::deserialize(doc).expect("valid YAML"))
        .filter(|v| !v.is_null())
        .collect()
}

fn str_at<'a>(v: &'a Value, path: &[&str]) -> &'a str {
    let mut cur = v;
    for key in path {
        cur = &cur[*key];
    }
    cur.as_str().unwrap_or("")
}

/// (kind, namespace, name) of every object.
fn identities(docs: &[Value]) -> BTreeSet<(String, String, String)> {
    docs.iter()
        .map(|d| {
            (
                str_at(d, &["kind"]).to_string(),
                str_at(d, &["metadata", "namespace"]).to_string(),
                str_at(d, &["metadata", "name"]).to_string(),
            )
        })
        .collect()
}

fn find<'a>(docs: &'a [Value], kind: &str, name: &str) -> &'a Value {
    docs.iter()
        .find(|d| str_at(d, &["kind"]) == kind && str_at(d, &["metadata", "name"]) == name)
        .unwrap_or_else(|| panic!("no {kind} {name}"))
}

#[test]
fn chart_crd_is_the_generated_crd() {
    let generated =
        std::fs::read_to_string(repo_path("crds/applicationencryptions.msfcmk.dev.yaml"))
            .expect("crds/");
    let copy = std::fs::read_to_string(repo_path(&format!(
        "{CHART}/crds/applicationencryptions.msfcmk.dev.yaml"
    )))
    .expect("chart crds/");
    assert!(
        generated == copy,
        "the chart's CRD drifted: cp crds/applicationencryptions.msfcmk.dev.yaml {CHART}/crds/"
    );
}

#[test]
fn chart_renders_the_same_objects_as_the_kustomize_base() {
    let chart = documents(&helm_template(&[]));
    let base = documents(&kustomize_base());
    // Helm installs into an existing namespace (--create-namespace); the base creates it.
    let mut base_ids = identities(&base);
    base_ids.remove(&("Namespace".into(), String::new(), NAMESPACE.into()));
    assert_eq!(identities(&chart), base_ids);

    // The parts that matter for security and behaviour are identical, not just the names.
    for (kind, name) in [
        ("ClusterRole", RELEASE),
        ("Role", "msf-cmk-controller-leader-election"),
    ] {
        assert_eq!(
            find(&chart, kind, name)["rules"],
            find(&base, kind, name)["rules"],
            "{kind} rules"
        );
    }
    let pod =
        |docs: &[Value]| find(docs, "Deployment", RELEASE)["spec"]["template"]["spec"].clone();
    let (chart_pod, base_pod) = (pod(&chart), pod(&base));
    assert_eq!(chart_pod["securityContext"], base_pod["securityContext"]);
    let (cc, bc) = (&chart_pod["containers"][0], &base_pod["containers"][0]);
    for field in [
        "args",
        "env",
        "ports",
        "livenessProbe",
        "readinessProbe",
        "resources",
        "securityContext",
        "volumeMounts",
    ] {
        assert_eq!(cc[field], bc[field], "container {field}");
    }
    assert_eq!(chart_pod["volumes"], base_pod["volumes"]);
    let sa =
        |docs: &[Value]| find(docs, "ServiceAccount", RELEASE)["metadata"]["annotations"].clone();
    assert_eq!(sa(&chart), sa(&base));
    let tenancy = |docs: &[Value]| {
        let text =
            find(docs, "ConfigMap", "msf-cmk-controller-tenancy")["data"]["tenancy.yaml"].clone();
        serde_yaml::from_str::<Value>(text.as_str().expect("tenancy.yaml")).expect("tenancy YAML")
    };
    assert_eq!(tenancy(&chart), tenancy(&base));
}

#[test]
fn chart_options_render() {
    let out = helm_template(&[
        "--set",
        "metrics.serviceMonitor.enabled=true",
        "--set",
        "controller.watchNamespaces={team-a,team-b}",
        "--set",
        "controller.leaderElection.enabled=false",
        "--set",
        "replicas=2",
        "--set",
        "serviceAccount.annotations=null",
    ]);
    let docs = documents(&out);
    let ids = identities(&docs);
    assert!(
        ids.contains(&("ServiceMonitor".into(), NAMESPACE.into(), RELEASE.into())),
        "{ids:?}"
    );
    assert!(
        !ids.iter().any(|(kind, _, _)| kind == "Role"),
        "no lease Role without leader election"
    );
    let deployment = find(&docs, "Deployment", RELEASE);
    assert_eq!(deployment["spec"]["replicas"], Value::from(2));
    let env = &deployment["spec"]["template"]["spec"]["containers"][0]["env"];
    let var = |name: &str| {
        env.as_sequence()
            .expect("env list")
            .iter()
            .find(|e| e["name"].as_str() == Some(name))
            .map(|e| e["value"].as_str().unwrap_or("").to_string())
    };
    assert_eq!(var("MSF_CMK_NAMESPACES").as_deref(), Some("team-a,team-b"));
    assert_eq!(var("MSF_CMK_LEADER_ELECTION").as_deref(), Some("false"));
}

#[test]
fn pods_are_hardened() {
    let base = documents(&kustomize_base());
    let spec = &find(&base, "Deployment", RELEASE)["spec"]["template"]["spec"];
    assert_eq!(spec["securityContext"]["runAsNonRoot"], Value::from(true));
    assert_eq!(
        str_at(spec, &["securityContext", "seccompProfile", "type"]),
        "RuntimeDefault"
    );
    let c = &spec["containers"][0];
    let sc = &c["securityContext"];
    assert_eq!(sc["readOnlyRootFilesystem"], Value::from(true));
    assert_eq!(sc["allowPrivilegeEscalation"], Value::from(false));
    assert_eq!(
        sc["capabilities"]["drop"],
        serde_yaml::from_str::<Value>("[ALL]").unwrap()
    );
    assert_eq!(str_at(c, &["livenessProbe", "httpGet", "path"]), "/livez");
    assert_eq!(str_at(c, &["readinessProbe", "httpGet", "path"]), "/readyz");
    assert_eq!(c["ports"][0]["containerPort"], Value::from(8080));
    assert!(!str_at(c, &["resources", "requests", "cpu"]).is_empty());
    assert!(!str_at(c, &["resources", "requests", "memory"]).is_empty());
}

#[test]
fn api_server_accepts_the_chart() {
    let c = TestCluster::shared();
    c.kubectl(&["create", "namespace", NAMESPACE]); // may already exist
    let rendered = helm_template(&[]);
    c.kubectl_stdin(&["apply", "--dry-run=server", "-f", "-"], &rendered)
        .ok();
}

#[test]
fn api_server_accepts_the_kustomize_base() {
    let c = TestCluster::shared();
    c.install_deploy_bundle();
    let out = c
        .kubectl(&[
            "get",
            "deployment,serviceaccount,configmap,service",
            "-n",
            NAMESPACE,
            "-o",
            "name",
        ])
        .ok();
    for want in [
        "deployment.apps/msf-cmk-controller",
        "serviceaccount/msf-cmk-controller",
        "configmap/msf-cmk-controller-tenancy",
        "service/msf-cmk-controller-metrics",
    ] {
        assert!(out.lines().any(|l| l == want), "{want} missing in {out}");
    }
}

#[test]
fn dockerfile_builds_like_ci_and_runs_as_non_root() {
    let dockerfile = std::fs::read_to_string(repo_path("Dockerfile")).expect("Dockerfile");
    let script = std::fs::read_to_string(repo_path("scripts/build-release.sh")).expect("script");
    let build = "cargo build --release --locked --no-default-features --bin msf-cmk-controller";
    assert!(
        dockerfile.contains(build),
        "the Dockerfile must run: {build}"
    );
    assert!(
        script.contains(build),
        "scripts/build-release.sh must run: {build}"
    );
    let user = dockerfile
        .lines()
        .rfind(|l| l.starts_with("USER "))
        .expect("a USER line");
    let uid = user["USER ".len()..].split(':').next().unwrap_or("");
    assert!(
        uid.parse::<u32>().is_ok_and(|u| u != 0),
        "numeric non-root USER (runAsNonRoot can verify it): {user}"
    );
    let base = find_run_as_user();
    assert_eq!(uid, base, "the image user is the Deployment's runAsUser");
}

fn find_run_as_user() -> String {
    let base = documents(
        &std::fs::read_to_string(repo_path("deploy/kustomize/base/deployment.yaml")).unwrap(),
    );
    let v = &base[0]["spec"]["template"]["spec"]["securityContext"]["runAsUser"];
    v.as_u64().expect("runAsUser").to_string()
}
