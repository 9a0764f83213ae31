//! The deploy bundle cannot rot: the Helm chart renders the same objects as the kustomize
//! base, both are accepted by a real API server, the chart's CRD copy is the generated one,
//! and the pod hardening is what docs promise. Needs `eval "$(tests/e2e/setup.sh)"` first
//! (for `HELM_BIN`, `KUBECTL_BIN` and the API server).

mod support;

use std::collections::BTreeSet;
use std::process::Command;

use serde::Deserialize;
use support::cluster::{TestCluster, repo_path};
use yaml_serde::Value;

const CHART: &str = "deploy/helm/msf-cmk-controller";
const RELEASE: &str = "msf-cmk-controller";
const NAMESPACE: &str = "msf-cmk-system";
/// The role the tests install with; the kustomize base's placeholder stands for it.
const ROLE_ARN: &str = "arn:aws:iam::111122223333:role/msf-cmk-controller";
const BASE_PLACEHOLDER: &str = "REPLACE_WITH_CONTROLLER_ROLE_ARN";

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

/// `helm template` with the role set (the chart requires one) and `extra` values.
fn helm_template(extra: &[&str]) -> String {
    let role = format!("aws.roleArn={ROLE_ARN}");
    let mut args = vec![
        "template",
        RELEASE,
        CHART,
        "--namespace",
        NAMESPACE,
        "--set",
        &role,
    ];
    args.extend_from_slice(extra);
    run(&tool("HELM_BIN"), &args)
}

/// `helm template` that is expected to fail: its error output.
fn helm_template_fails(extra: &[&str]) -> String {
    let mut args = vec!["template", RELEASE, CHART, "--namespace", NAMESPACE];
    args.extend_from_slice(extra);
    let out = Command::new(tool("HELM_BIN"))
        .args(&args)
        .current_dir(repo_path("."))
        .output()
        .expect("run helm");
    assert!(
        !out.status.success(),
        "helm template {extra:?} rendered:\n{}",
        String::from_utf8_lossy(&out.stdout)
    );
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// The kustomize base, its role placeholder replaced as an overlay would.
fn kustomize_base() -> String {
    run(
        &tool("KUBECTL_BIN"),
        &["kustomize", "deploy/kustomize/base"],
    )
    .replace(BASE_PLACEHOLDER, ROLE_ARN)
}

fn documents(yaml: &str) -> Vec<Value> {
    yaml_serde::Deserializer::from_str(yaml)
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
        "{CHART}/files/applicationencryptions.msfcmk.dev.yaml"
    )))
    .expect("chart files/");
    assert!(
        generated == copy,
        "the chart's CRD drifted: cp crds/applicationencryptions.msfcmk.dev.yaml {CHART}/files/"
    );
    // Rendered as a template (so upgrades upgrade it), the same object plus labels and the
    // keep annotation.
    let docs = documents(&helm_template(&[]));
    let crd = find(
        &docs,
        "CustomResourceDefinition",
        "applicationencryptions.msfcmk.dev",
    );
    let generated: Value = yaml_serde::from_str(&generated).expect("CRD YAML");
    assert_eq!(crd["spec"], generated["spec"]);
    assert_eq!(
        str_at(crd, &["metadata", "annotations", "helm.sh/resource-policy"]),
        "keep"
    );
}

#[test]
fn chart_renders_the_same_objects_as_the_kustomize_base() {
    let chart = documents(&helm_template(&[]));
    let base = documents(&kustomize_base());
    // Helm installs into an existing namespace (--create-namespace); the base creates it.
    let mut base_ids = identities(&base);
    base_ids.remove(&("Namespace".into(), String::new(), NAMESPACE.into()));
    // The chart also carries the CRD (the base leaves it to `kubectl apply -f crds/`) and the
    // ClusterRoles aggregated into admin/edit/view.
    let mut chart_ids = identities(&chart);
    for extra in [
        (
            "CustomResourceDefinition",
            "applicationencryptions.msfcmk.dev",
        ),
        ("ClusterRole", "msf-cmk-controller-edit"),
        ("ClusterRole", "msf-cmk-controller-view"),
    ] {
        assert!(
            chart_ids.remove(&(extra.0.into(), String::new(), extra.1.into())),
            "{extra:?}"
        );
    }
    assert_eq!(chart_ids, base_ids);

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
        yaml_serde::from_str::<Value>(text.as_str().expect("tenancy.yaml")).expect("tenancy YAML")
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
        "replicaCount=2",
        "--set",
        "aws.identity=podIdentity",
    ]);
    let docs = documents(&out);
    let ids = identities(&docs);
    assert!(
        ids.contains(&("ServiceMonitor".into(), NAMESPACE.into(), RELEASE.into())),
        "{ids:?}"
    );
    assert!(
        !ids.iter()
            .any(|(kind, _, name)| kind == "Role" && name.ends_with("-leader-election")),
        "no lease Role without leader election"
    );
    // RBAC only where the controller watches: a Role + RoleBinding per namespace with the
    // ClusterRole's rules, and no ClusterRole for the controller.
    let base = documents(&kustomize_base());
    for ns in ["team-a", "team-b"] {
        for kind in ["Role", "RoleBinding"] {
            assert!(
                ids.contains(&(kind.into(), ns.into(), RELEASE.into())),
                "{kind} in {ns}: {ids:?}"
            );
        }
        let role = docs
            .iter()
            .find(|d| str_at(d, &["kind"]) == "Role" && str_at(d, &["metadata", "namespace"]) == ns)
            .expect("Role");
        assert_eq!(role["rules"], find(&base, "ClusterRole", RELEASE)["rules"]);
    }
    assert!(!ids.contains(&("ClusterRole".into(), String::new(), RELEASE.into())));
    assert!(!ids.contains(&("ClusterRoleBinding".into(), String::new(), RELEASE.into())));
    // Two replicas: a PodDisruptionBudget over the controller's pods.
    let pdb = find(&docs, "PodDisruptionBudget", RELEASE);
    assert_eq!(pdb["spec"]["maxUnavailable"], Value::from(1));
    // Pod Identity: no IRSA annotation to fight the association.
    let sa = find(&docs, "ServiceAccount", RELEASE);
    assert!(sa["metadata"]["annotations"].is_null(), "{sa:?}");
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
        yaml_serde::from_str::<Value>("[ALL]").unwrap()
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

#[test]
fn chart_refuses_to_render_without_the_role() {
    for extra in [&[][..], &["--set", "aws.identity=podIdentity"][..]] {
        let err = helm_template_fails(extra);
        assert!(err.contains("aws.roleArn is required"), "{extra:?}: {err}");
    }
    // With credentials from elsewhere, an operator role alone is enough; without one, the
    // message still names what to set.
    let err = helm_template_fails(&["--set", "aws.identity=none"]);
    assert!(
        err.contains("aws.roleArn (or controller.operatorRoleArn) is required"),
        "{err}"
    );
    let out = run(
        &tool("HELM_BIN"),
        &[
            "template",
            RELEASE,
            CHART,
            "--set",
            "aws.identity=none",
            "--set",
            &format!("controller.operatorRoleArn={ROLE_ARN}"),
        ],
    );
    let docs = documents(&out);
    assert!(find(&docs, "ServiceAccount", RELEASE)["metadata"]["annotations"].is_null());
    // Not an ARN of a role: the schema refuses it before anything renders.
    let err = helm_template_fails(&["--set", "aws.roleArn=arn:aws:iam::1111:role/x"]);
    assert!(err.contains("roleArn"), "{err}");
    // A value the chart does not know (the old `replicas`) is an error, not ignored.
    let err = helm_template_fails(&[
        "--set",
        &format!("aws.roleArn={ROLE_ARN}"),
        "--set",
        "replicas=2",
    ]);
    assert!(err.contains("replicas"), "{err}");
}

#[test]
fn irsa_and_pod_identity_do_not_fight() {
    let operator = |docs: &[Value]| {
        let env =
            &find(docs, "Deployment", RELEASE)["spec"]["template"]["spec"]["containers"][0]["env"];
        env.as_sequence()
            .expect("env")
            .iter()
            .find(|e| e["name"].as_str() == Some("MSF_CMK_OPERATOR_ROLE_ARN"))
            .and_then(|e| e["value"].as_str())
            .unwrap_or("")
            .to_string()
    };
    let irsa = documents(&helm_template(&[
        "--set",
        "serviceAccount.annotations.team=a",
    ]));
    let sa = find(&irsa, "ServiceAccount", RELEASE);
    assert_eq!(
        str_at(
            sa,
            &["metadata", "annotations", "eks.amazonaws.com/role-arn"]
        ),
        ROLE_ARN
    );
    assert_eq!(str_at(sa, &["metadata", "annotations", "team"]), "a");
    assert_eq!(operator(&irsa), ROLE_ARN);

    let pod_identity = documents(&helm_template(&["--set", "aws.identity=podIdentity"]));
    let sa = find(&pod_identity, "ServiceAccount", RELEASE);
    assert!(sa["metadata"]["annotations"].is_null(), "{sa:?}");
    assert_eq!(operator(&pod_identity), ROLE_ARN);

    // The annotation set by hand next to Pod Identity would override the association.
    let err = helm_template_fails(&[
        "--set",
        &format!("aws.roleArn={ROLE_ARN}"),
        "--set",
        "aws.identity=podIdentity",
        "--set",
        "serviceAccount.annotations.eks\\.amazonaws\\.com/role-arn=arn:aws:iam::111122223333:role/other",
    ]);
    assert!(
        err.contains("must not set eks.amazonaws.com/role-arn"),
        "{err}"
    );

    // A separate operator role is named in key policies; the pod still runs as aws.roleArn.
    let other = "arn:aws:iam::111122223333:role/msf-operator";
    let split = documents(&helm_template(&[
        "--set",
        &format!("controller.operatorRoleArn={other}"),
    ]));
    assert_eq!(operator(&split), other);
}

#[test]
fn crds_install_and_keep_toggle() {
    let crd = (
        "CustomResourceDefinition",
        "applicationencryptions.msfcmk.dev",
    );
    let has_crd =
        |docs: &[Value]| identities(docs).contains(&(crd.0.into(), String::new(), crd.1.into()));
    assert!(has_crd(&documents(&helm_template(&[]))));
    let without = documents(&helm_template(&["--set", "crds.install=false"]));
    assert!(!has_crd(&without));
    let not_kept = documents(&helm_template(&["--set", "crds.keep=false"]));
    let obj = find(&not_kept, crd.0, crd.1);
    assert!(
        str_at(obj, &["metadata", "annotations", "helm.sh/resource-policy"]).is_empty(),
        "{:?}",
        obj["metadata"]
    );
}

#[test]
fn namespace_users_get_applicationencryptions_through_aggregation() {
    let docs = documents(&helm_template(&[]));
    let label = |role: &Value, which: &str| {
        str_at(
            role,
            &[
                "metadata",
                "labels",
                &format!("rbac.authorization.k8s.io/aggregate-to-{which}"),
            ],
        )
        .to_string()
    };
    let edit = find(&docs, "ClusterRole", "msf-cmk-controller-edit");
    assert_eq!(label(edit, "edit"), "true");
    assert_eq!(label(edit, "admin"), "true");
    let verbs: Vec<_> = edit["rules"][0]["verbs"]
        .as_sequence()
        .expect("verbs")
        .iter()
        .filter_map(Value::as_str)
        .collect();
    for verb in [
        "create", "update", "patch", "delete", "get", "list", "watch",
    ] {
        assert!(verbs.contains(&verb), "edit lacks {verb}: {verbs:?}");
    }
    // Status belongs to the controller: users read it, never write it.
    let status_rule = edit["rules"]
        .as_sequence()
        .expect("rules")
        .iter()
        .find(|r| r["resources"][0].as_str() == Some("applicationencryptions/status"))
        .expect("a status rule");
    assert_eq!(
        status_rule["verbs"],
        yaml_serde::from_str::<Value>("[get, list, watch]").unwrap()
    );
    let view = find(&docs, "ClusterRole", "msf-cmk-controller-view");
    assert_eq!(label(view, "view"), "true");
    assert_eq!(
        view["rules"][0]["verbs"],
        yaml_serde::from_str::<Value>("[get, list, watch]").unwrap()
    );
    let off = documents(&helm_template(&[
        "--set",
        "rbac.aggregateToDefaultRoles=false",
    ]));
    assert!(
        !identities(&off)
            .iter()
            .any(|(_, _, name)| name.ends_with("-edit") || name.ends_with("-view"))
    );
}

#[test]
fn chart_pod_settings_are_overridable() {
    let out = helm_template(&[
        "--set",
        "fullnameOverride=cmk",
        "--set",
        "serviceAccount.name=cmk-sa",
        "--set",
        "podLabels.team=platform",
        "--set",
        "podAnnotations.note=x",
        "--set",
        "priorityClassName=system-cluster-critical",
        "--set",
        "nodeSelector.kubernetes\\.io/os=linux",
        "--set",
        "tolerations[0].key=dedicated,tolerations[0].operator=Exists",
        "--set",
        "topologySpreadConstraints[0].maxSkew=1,topologySpreadConstraints[0].topologyKey=topology.kubernetes.io/zone,topologySpreadConstraints[0].whenUnsatisfiable=ScheduleAnyway",
        "--set",
        "podSecurityContext.runAsUser=10001",
        "--set",
        "securityContext.readOnlyRootFilesystem=true",
    ]);
    let docs = documents(&out);
    let deployment = find(&docs, "Deployment", "cmk");
    let pod = &deployment["spec"]["template"];
    assert_eq!(str_at(pod, &["metadata", "labels", "team"]), "platform");
    assert_eq!(str_at(pod, &["metadata", "annotations", "note"]), "x");
    let spec = &pod["spec"];
    assert_eq!(str_at(spec, &["serviceAccountName"]), "cmk-sa");
    assert_eq!(
        str_at(spec, &["priorityClassName"]),
        "system-cluster-critical"
    );
    assert_eq!(str_at(spec, &["nodeSelector", "kubernetes.io/os"]), "linux");
    assert_eq!(str_at(&spec["tolerations"][0], &["key"]), "dedicated");
    assert_eq!(
        spec["topologySpreadConstraints"][0]["maxSkew"],
        Value::from(1)
    );
    // A value replaces one key; the other defaults stay.
    assert_eq!(spec["securityContext"]["runAsUser"], Value::from(10001));
    assert_eq!(spec["securityContext"]["runAsNonRoot"], Value::from(true));
    find(&docs, "ServiceAccount", "cmk-sa");
    find(&docs, "ConfigMap", "cmk-tenancy");
    let binding = find(&docs, "ClusterRoleBinding", "cmk");
    assert_eq!(str_at(&binding["subjects"][0], &["name"]), "cmk-sa");
    // The selector stays the chart's name, so an upgrade never changes it.
    assert_eq!(
        str_at(
            &deployment["spec"]["selector"]["matchLabels"],
            &["app.kubernetes.io/name"]
        ),
        "msf-cmk-controller"
    );
    let renamed = documents(&helm_template(&["--set", "nameOverride=kms-guard"]));
    let deployment = find(&renamed, "Deployment", "msf-cmk-controller-kms-guard");
    assert_eq!(
        str_at(
            deployment,
            &["metadata", "labels", "app.kubernetes.io/name"]
        ),
        "kms-guard"
    );
}

/// The values table of the chart's README is generated from the comments in values.yaml:
/// each commented key is a row (its path, type, default and comment). Regenerate with
/// `MSF_CMK_REGENERATE=1 cargo test --test e2e_deploy chart_readme`.
#[test]
fn chart_readme_values_table_is_generated() {
    let values_path = repo_path(&format!("{CHART}/values.yaml"));
    let readme_path = repo_path(&format!("{CHART}/README.md"));
    let values = std::fs::read_to_string(&values_path).expect("values.yaml");
    let readme = std::fs::read_to_string(&readme_path).expect("chart README.md");
    let (begin, end) = ("<!-- values:begin -->\n", "<!-- values:end -->");
    let start = readme.find(begin).expect("values:begin marker") + begin.len();
    let stop = readme.find(end).expect("values:end marker");
    let table = values_table(&values);
    if std::env::var_os("MSF_CMK_REGENERATE").is_some() {
        let updated = format!("{}{table}{}", &readme[..start], &readme[stop..]);
        std::fs::write(&readme_path, updated).expect("write README.md");
        return;
    }
    assert!(
        readme[start..stop] == table,
        "{CHART}/README.md is not the table values.yaml generates: run \
         MSF_CMK_REGENERATE=1 cargo test --test e2e_deploy chart_readme"
    );
    // Every top-level value is documented.
    let parsed: Value = yaml_serde::from_str(&values).expect("values YAML");
    for key in parsed.as_mapping().expect("mapping").keys() {
        let key = key.as_str().expect("string key");
        assert!(
            table.contains(&format!("| `{key}")),
            "values.yaml: `{key}` has no comment (and so no README row)"
        );
    }
}

/// The Markdown table for values.yaml: one row per key that has a comment right above it.
fn values_table(values: &str) -> String {
    let parsed: Value = yaml_serde::from_str(values).expect("values YAML");
    let mut rows = vec![
        "| key | type | default | description |".to_string(),
        "|---|---|---|---|".to_string(),
    ];
    let mut path: Vec<(usize, String)> = vec![];
    let mut comment: Vec<String> = vec![];
    let mut comment_indent = None;
    for line in values.lines() {
        let indent = line.len() - line.trim_start().len();
        let text = line.trim();
        if text.is_empty() {
            comment.clear();
            continue;
        }
        if let Some(c) = text.strip_prefix('#') {
            if comment_indent != Some(indent) {
                comment.clear();
            }
            comment_indent = Some(indent);
            comment.push(c.trim().to_string());
            continue;
        }
        if text.starts_with('-') {
            comment.clear();
            continue;
        }
        let Some((key, _)) = text.split_once(':') else {
            continue;
        };
        let key = key.trim_matches('"').to_string();
        path.retain(|(i, _)| *i < indent);
        path.push((indent, key));
        if comment.is_empty() || comment_indent != Some(indent) {
            comment.clear();
            continue;
        }
        let keys: Vec<&str> = path.iter().map(|(_, k)| k.as_str()).collect();
        let mut v = &parsed;
        for k in &keys {
            v = &v[*k];
        }
        let (kind, default) = match v {
            Value::Bool(b) => ("bool", b.to_string()),
            Value::Number(n) => ("int", n.to_string()),
            Value::String(s) => ("string", format!("{s:?}")),
            Value::Sequence(_) => ("list", serde_json::to_string(v).expect("json")),
            Value::Mapping(_) => ("object", serde_json::to_string(v).expect("json")),
            _ => ("", String::new()),
        };
        // Long object defaults (resources, tenancy...) are shown in values.yaml itself.
        let default = if default.len() > 60 {
            "see values.yaml".to_string()
        } else {
            format!("`{}`", default.replace('|', "\\|"))
        };
        rows.push(format!(
            "| `{}` | {kind} | {default} | {} |",
            keys.join("."),
            comment.join(" ").replace('|', "\\|")
        ));
        comment.clear();
    }
    rows.join("\n") + "\n"
}

/// The trust policies in `deploy/iam/` name the chart's default namespace and ServiceAccount,
/// carry what IRSA and EKS Pod Identity need, and docs/install-eks.md shows them as they are.
#[test]
fn trust_policies_match_the_chart_and_the_install_guide() {
    let guide = std::fs::read_to_string(repo_path("docs/install-eks.md")).expect("install guide");
    let read = |file: &str| {
        let text = std::fs::read_to_string(repo_path(&format!("deploy/iam/{file}"))).unwrap();
        assert!(
            guide.contains(text.trim_end()),
            "docs/install-eks.md does not show deploy/iam/{file} as it is"
        );
        serde_json::from_str::<serde_json::Value>(&text).expect("JSON")
    };
    let irsa = read("trust-irsa.json");
    let st = &irsa["Statement"][0];
    assert_eq!(st["Action"], "sts:AssumeRoleWithWebIdentity");
    assert!(
        st["Principal"]["Federated"]
            .as_str()
            .unwrap()
            .ends_with(":oidc-provider/<OIDC_PROVIDER>")
    );
    let cond = &st["Condition"]["StringEquals"];
    assert_eq!(
        cond["<OIDC_PROVIDER>:sub"],
        format!("system:serviceaccount:{NAMESPACE}:{RELEASE}")
    );
    assert_eq!(cond["<OIDC_PROVIDER>:aud"], "sts.amazonaws.com");

    let pod = read("trust-pod-identity.json");
    let st = &pod["Statement"][0];
    assert_eq!(st["Principal"]["Service"], "pods.eks.amazonaws.com");
    assert_eq!(
        st["Action"],
        serde_json::json!(["sts:AssumeRole", "sts:TagSession"])
    );
    let cond = &st["Condition"]["StringEquals"];
    assert_eq!(cond["aws:RequestTag/kubernetes-namespace"], NAMESPACE);
    assert_eq!(cond["aws:RequestTag/kubernetes-service-account"], RELEASE);

    // The names the trust policies assume are what the chart renders by default.
    let docs = documents(&helm_template(&[]));
    find(&docs, "ServiceAccount", RELEASE);
}

/// README.md, docs/ and the deploy READMEs link only to files in this repository (relative
/// links resolve; nothing points above the repository root).
#[test]
fn docs_link_only_to_files_in_the_repository() {
    let mut files = vec!["README.md".to_string(), "BENCHMARKS.md".to_string()];
    for dir in [
        "docs",
        "deploy",
        "deploy/argocd",
        "deploy/monitoring",
        CHART,
    ] {
        for entry in std::fs::read_dir(repo_path(dir)).expect("dir") {
            let name = entry.expect("entry").file_name();
            let name = name.to_string_lossy();
            if name.ends_with(".md") {
                files.push(format!("{dir}/{name}"));
            }
        }
    }
    files.sort();
    let root = repo_path(".").canonicalize().unwrap();
    let mut bad = vec![];
    for file in &files {
        let path = repo_path(file);
        let text = std::fs::read_to_string(&path).unwrap_or_else(|_| panic!("{file}"));
        if text.contains("../shared") {
            bad.push(format!(
                "{file}: mentions ../shared (outside the repository)"
            ));
        }
        let mut rest = text.as_str();
        while let Some(i) = rest.find("](") {
            let tail = &rest[i + 2..];
            let end = tail.find(')').unwrap_or(tail.len());
            let target = tail[..end].split('#').next().unwrap_or("");
            rest = &tail[end..];
            if target.is_empty() || target.starts_with("http") {
                continue;
            }
            let resolved = path.parent().unwrap().join(target);
            match resolved.canonicalize() {
                Ok(p) if p.starts_with(&root) => {}
                _ => bad.push(format!("{file}: link to {target}")),
            }
        }
    }
    assert!(bad.is_empty(), "{bad:#?}");
}

/// `helm` against a cluster: (success, stdout + stderr).
fn helm_on(c: &TestCluster, args: &[&str]) -> (bool, String) {
    let out = Command::new(tool("HELM_BIN"))
        .args(args)
        .arg("--kubeconfig")
        .arg(c.admin_kubeconfig())
        .current_dir(repo_path("."))
        .output()
        .expect("run helm");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

/// The chart's lifecycle on a real API server, as docs/install-eks.md describes it: a CRD
/// applied by hand (or by an older chart from its crds/ directory) is adopted after the
/// documented label and annotations; install, upgrade and uninstall work; the CRD and the
/// resources survive `helm uninstall` (crds.keep) and a reinstall picks them up.
#[test]
fn chart_installs_upgrades_and_uninstalls_keeping_the_crd() {
    let c = TestCluster::start();
    let crd = "crd/applicationencryptions.msfcmk.dev";
    let role = format!("aws.roleArn={ROLE_ARN}");
    let install = |extra: &[&str]| {
        let mut args = vec![
            "upgrade",
            "--install",
            RELEASE,
            CHART,
            "--namespace",
            NAMESPACE,
            "--create-namespace",
            "--set",
            &role,
        ];
        args.extend_from_slice(extra);
        helm_on(&c, &args)
    };

    // A CRD Helm does not own: the install refuses to take it over silently...
    c.install_crds();
    let (ok, out) = install(&[]);
    assert!(!ok && out.contains("ownership"), "{out}");
    // ...until it is labelled and annotated as docs/install-eks.md says.
    let guide = std::fs::read_to_string(repo_path("docs/install-eks.md")).unwrap();
    for needle in [
        "kubectl label crd applicationencryptions.msfcmk.dev app.kubernetes.io/managed-by=Helm",
        "meta.helm.sh/release-name=msf-cmk-controller meta.helm.sh/release-namespace=msf-cmk-system",
    ] {
        assert!(guide.contains(needle), "the guide lost: {needle}");
    }
    c.kubectl(&["label", crd, "app.kubernetes.io/managed-by=Helm"])
        .ok();
    c.kubectl(&[
        "annotate",
        crd,
        &format!("meta.helm.sh/release-name={RELEASE}"),
        &format!("meta.helm.sh/release-namespace={NAMESPACE}"),
    ])
    .ok();
    let (ok, out) = install(&[]);
    assert!(ok, "{out}");

    // A resource, then an upgrade that changes the CRD's labels (it is a template now).
    let ns = c.create_namespace("team");
    c.apply_yaml(
        "apiVersion: msfcmk.dev/v1alpha1\nkind: ApplicationEncryption\nmetadata:\n  name: kept\nspec:\n  applicationName: app-1\n  keyType: AwsOwnedKey\n",
        &ns,
    )
    .expect("resource");
    let (ok, out) = install(&["--set", "replicaCount=2"]);
    assert!(ok, "{out}");
    let policy = c
        .kubectl(&[
            "get",
            crd,
            "-o",
            "jsonpath={.metadata.annotations.helm\\.sh/resource-policy}",
        ])
        .ok();
    assert_eq!(policy, "keep");
    let pdb = c
        .kubectl(&["get", "pdb", "-n", NAMESPACE, "-o", "name"])
        .ok();
    assert!(pdb.contains(RELEASE), "{pdb}");

    // Uninstall: the controller goes, the CRD and the resource stay.
    let (ok, out) = helm_on(&c, &["uninstall", RELEASE, "--namespace", NAMESPACE]);
    assert!(ok, "{out}");
    c.kubectl(&["get", crd]).ok();
    c.kubectl(&["get", "appenc", "kept", "-n", &ns]).ok();
    let left = c
        .kubectl(&["get", "deployment,clusterrole", "-A", "-o", "name"])
        .ok();
    assert!(
        !left.lines().any(|l| l.ends_with(&format!("/{RELEASE}"))),
        "{left}"
    );
    // Reinstalling the same release adopts the kept CRD again.
    let (ok, out) = install(&[]);
    assert!(ok, "{out}");
}

#[test]
fn chart_lints_clean() {
    let role = format!("aws.roleArn={ROLE_ARN}");
    let out = run(
        &tool("HELM_BIN"),
        &[
            "lint",
            CHART,
            "--strict",
            "--kube-version",
            "1.30.0",
            "--set",
            &role,
        ],
    );
    assert!(out.contains("0 chart(s) failed"), "{out}");
}

/// The overlay deploy/README.md shows replaces the kustomize base's role placeholder
/// everywhere; the chart's default tenancy is a file the controller accepts.
#[test]
fn readme_overlay_replaces_the_placeholder() {
    let readme = std::fs::read_to_string(repo_path("deploy/README.md")).unwrap();
    let start = readme
        .find("# my-overlay/kustomization.yaml\n")
        .expect("the overlay example");
    let block = &readme[start..];
    let block = &block[..block.find("```").expect("end of the block")];
    // kustomize takes bases by relative path only: the overlay lives in target/.
    let overlay = block.replace("../deploy/kustomize/base", "../../deploy/kustomize/base");
    let dir = tempfile::Builder::new()
        .prefix("overlay-")
        .tempdir_in(repo_path("target"))
        .unwrap();
    std::fs::write(dir.path().join("kustomization.yaml"), overlay).unwrap();
    let out = run(
        &tool("KUBECTL_BIN"),
        &["kustomize", dir.path().to_str().unwrap()],
    );
    assert!(!out.contains(BASE_PLACEHOLDER), "{out}");
    let docs = documents(&out);
    let role = "arn:aws:iam::ACCOUNT:role/msf-cmk-controller";
    let sa = find(&docs, "ServiceAccount", RELEASE);
    assert_eq!(
        str_at(
            sa,
            &["metadata", "annotations", "eks.amazonaws.com/role-arn"]
        ),
        role
    );
    let c = &find(&docs, "Deployment", RELEASE)["spec"]["template"]["spec"]["containers"][0];
    let env = c["env"].as_sequence().unwrap();
    let operator = env
        .iter()
        .find(|e| e["name"].as_str() == Some("MSF_CMK_OPERATOR_ROLE_ARN"))
        .unwrap();
    assert_eq!(operator["value"].as_str(), Some(role));
    let base = documents(&kustomize_base());
    let base_env =
        &find(&base, "Deployment", RELEASE)["spec"]["template"]["spec"]["containers"][0]["env"];
    assert_eq!(
        env.len(),
        base_env.as_sequence().unwrap().len(),
        "the patch replaced the variable, it did not add one"
    );
    assert_eq!(
        str_at(c, &["image"]),
        "registry.example.com/msf-cmk-controller:0.1.0"
    );

    let chart = documents(&helm_template(&[]));
    let tenancy = find(&chart, "ConfigMap", "msf-cmk-controller-tenancy")["data"]["tenancy.yaml"]
        .as_str()
        .unwrap()
        .to_string();
    msf_cmk_controller::controller::tenancy::TenancyConfig::parse(&tenancy)
        .expect("the chart's tenancy file is one the controller accepts");
}

/// With `controller.watchNamespaces`, the real RBAC authorizer lets the controller's
/// ServiceAccount do its work in those namespaces and nowhere else; namespace editors and
/// viewers get the rights the aggregated ClusterRoles carry.
#[test]
fn namespace_list_limits_the_controller_rbac() {
    let c = TestCluster::start();
    c.install_crds();
    let team_a = c.create_namespace("team-a");
    let team_b = c.create_namespace("team-b");
    let other = c.create_namespace("other");
    let namespaces = format!("controller.watchNamespaces={{{team_a},{team_b}}}");
    let rendered = helm_template(&["--set", &namespaces, "--set", "crds.install=false"]);
    c.kubectl(&["create", "namespace", NAMESPACE]);
    c.kubectl_stdin(&["apply", "--server-side", "-f", "-"], &rendered)
        .ok();
    let sa = c.service_account_kubeconfig(NAMESPACE, RELEASE);
    for ns in [&team_a, &team_b] {
        for (verb, resource) in [
            ("list", "applicationencryptions.msfcmk.dev"),
            ("watch", "applicationencryptions.msfcmk.dev"),
            ("patch", "applicationencryptions.msfcmk.dev"),
            ("create", "events.events.k8s.io"),
        ] {
            assert!(
                c.can_i(&sa, verb, resource, &["-n", ns]),
                "{verb} {resource} in {ns}"
            );
        }
        // (`kubectl auth can-i VERB RESOURCE/X` would ask about an object named X.)
        assert!(c.can_i(
            &sa,
            "patch",
            "applicationencryptions.msfcmk.dev",
            &["-n", ns, "--subresource", "status"]
        ));
    }
    assert!(!c.can_i(
        &sa,
        "list",
        "applicationencryptions.msfcmk.dev",
        &["-n", &other]
    ));
    assert!(!c.can_i(
        &sa,
        "list",
        "applicationencryptions.msfcmk.dev",
        &["--all-namespaces"]
    ));
    assert!(!c.can_i(&sa, "create", "events.events.k8s.io", &["-n", &other]));
    // The Lease stays in the release namespace.
    assert!(c.can_i(
        &sa,
        "create",
        "leases.coordination.k8s.io",
        &["-n", NAMESPACE]
    ));

    // Users bound to the aggregated roles in a namespace (the API server's aggregation
    // controller folds them into edit/view; bound directly here, the rules are the same).
    for (role, user, may_create) in [
        ("msf-cmk-controller-edit", "alice", true),
        ("msf-cmk-controller-view", "bob", false),
    ] {
        c.kubectl(&[
            "create",
            "rolebinding",
            user,
            "-n",
            &team_a,
            &format!("--clusterrole={role}"),
            &format!("--user={user}"),
        ])
        .ok();
        let as_user = |verb: &str, subresource: &str| {
            let mut args = vec![
                "auth",
                "can-i",
                verb,
                "applicationencryptions.msfcmk.dev",
                "-n",
                &team_a,
                "--as",
                user,
            ];
            if !subresource.is_empty() {
                args.extend(["--subresource", subresource]);
            }
            c.kubectl(&args).stdout.trim() == "yes"
        };
        assert!(as_user("list", ""), "{user}");
        assert!(as_user("get", "status"), "{user}");
        assert_eq!(as_user("create", ""), may_create, "{user}");
        assert_eq!(as_user("delete", ""), may_create, "{user}");
        assert!(
            !as_user("patch", "status"),
            "{user}: status belongs to the controller"
        );
    }
}

/// The chart's optional PrometheusRule and dashboard ConfigMap carry deploy/monitoring/ as it
/// is (the chart keeps copies in files/, since Helm reads nothing outside the chart).
#[test]
fn chart_monitoring_is_deploy_monitoring() {
    for file in ["prometheusrule.yaml", "grafana-dashboard.json"] {
        let source = std::fs::read_to_string(repo_path(&format!("deploy/monitoring/{file}")))
            .expect("deploy/monitoring");
        let copy = std::fs::read_to_string(repo_path(&format!("{CHART}/files/{file}")))
            .expect("chart files/");
        assert!(
            source == copy,
            "the chart's copy drifted: cp deploy/monitoring/{file} {CHART}/files/"
        );
    }
    let off = identities(&documents(&helm_template(&[])));
    assert!(!off.iter().any(|(kind, _, _)| kind == "PrometheusRule"));
    let docs = documents(&helm_template(&[
        "--set",
        "metrics.prometheusRule.enabled=true",
        "--set",
        "metrics.prometheusRule.labels.release=prom",
        "--set",
        "metrics.grafanaDashboard.enabled=true",
    ]));
    let rule = find(&docs, "PrometheusRule", RELEASE);
    assert_eq!(str_at(rule, &["metadata", "labels", "release"]), "prom");
    let source: Value = yaml_serde::from_str(
        &std::fs::read_to_string(repo_path("deploy/monitoring/prometheusrule.yaml")).unwrap(),
    )
    .unwrap();
    assert_eq!(rule["spec"], source["spec"]);
    let dashboard = find(&docs, "ConfigMap", "msf-cmk-controller-dashboard");
    assert_eq!(
        str_at(dashboard, &["metadata", "labels", "grafana_dashboard"]),
        "1"
    );
    let json: serde_json::Value =
        serde_json::from_str(str_at(dashboard, &["data", "msf-cmk-controller.json"]))
            .expect("dashboard JSON");
    let source: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(repo_path("deploy/monitoring/grafana-dashboard.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(json, source);
}

/// The controller needs nothing cluster-wide when it watches a namespace list: installed from
/// the chart with `controller.watchNamespaces` (Roles in those namespaces, no ClusterRole),
/// run as that ServiceAccount against the AWS emulator, it converges a resource and the API
/// server forbids it nothing.
#[test]
fn controller_runs_with_namespace_scoped_rbac() {
    use msf_cmk_controller::domain::ApplicationStatus;
    use msf_cmk_controller::emulator::{Emulator, EmulatorConfig};
    use support::controller::{free_port, http_get};
    use support::process::BackgroundProcess;

    let role = "arn:aws:iam::111122223333:role/msf-cmk-controller";
    let c = TestCluster::start();
    c.install_crds();
    let team = c.create_namespace("scoped");
    let system = "scoped-system";
    let release = "scoped";
    let sa_name = "scoped-msf-cmk-controller";
    let namespaces = format!("controller.watchNamespaces={{{team}}}");
    let rendered = run(
        &tool("HELM_BIN"),
        &[
            "template",
            release,
            CHART,
            "--namespace",
            system,
            "--set",
            &format!("aws.roleArn={role}"),
            "--set",
            &namespaces,
            "--set",
            "crds.install=false",
            "--set",
            "rbac.aggregateToDefaultRoles=false",
        ],
    );
    assert!(!rendered.contains("kind: ClusterRole"), "{rendered}");
    c.kubectl(&["create", "namespace", system]).ok();
    c.kubectl_stdin(&["apply", "--server-side", "-f", "-"], &rendered)
        .ok();

    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let emu = rt
        .block_on(Emulator::start(EmulatorConfig {
            account_id: "111122223333".into(),
            default_region: "us-east-1".into(),
            caller_arn: Some(role.into()),
            ..EmulatorConfig::default()
        }))
        .expect("emulator");
    emu.create_application(
        "us-east-1",
        "scoped-app",
        "FLINK-1_20",
        ApplicationStatus::Running,
    )
    .unwrap();

    let kubeconfig = c.service_account_kubeconfig(system, sa_name);
    let http: std::net::SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let mut cmd = Command::new(BackgroundProcess::controller_bin());
    cmd.arg("run")
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("KUBECONFIG", &kubeconfig)
        .env("POD_NAMESPACE", system)
        .env("POD_NAME", "scoped-0")
        .env("MSF_CMK_LEADER_ELECTION", "true")
        .env("MSF_CMK_LEASE_NAME", "msf-cmk-controller")
        .env("MSF_CMK_NAMESPACES", &team)
        .env("MSF_CMK_OPERATOR_ROLE_ARN", role)
        .env("MSF_CMK_RESYNC_PERIOD", "5s")
        .env("MSF_CMK_METRICS_ADDR", http.to_string())
        .env("MSF_CMK_AWS_ENDPOINT_URL", emu.endpoint())
        .env("MSF_CMK_LOG_FORMAT", "text")
        .env("NO_COLOR", "1")
        .env("RUST_LOG", "info")
        .env("AWS_REGION", "us-east-1")
        .env("AWS_ACCESS_KEY_ID", "AKIDSCOPED")
        .env("AWS_SECRET_ACCESS_KEY", "scoped-secret")
        .env("AWS_EC2_METADATA_DISABLED", "true");
    let log = c.dir().join("scoped-0.log");
    let mut controller = BackgroundProcess::spawn("scoped-0", cmd, &log);

    c.apply_yaml(
        "apiVersion: msfcmk.dev/v1alpha1\nkind: ApplicationEncryption\nmetadata:\n  name: scoped\nspec:\n  applicationName: scoped-app\n  keyType: AwsOwnedKey\n",
        &team,
    )
    .expect("resource");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    let ready = loop {
        let out = c.kubectl(&[
            "get",
            "appenc",
            "scoped",
            "-n",
            &team,
            "-o",
            "jsonpath={.status.conditions[?(@.type==\"Ready\")].status}",
        ]);
        if out.stdout.trim() == "True" {
            break true;
        }
        if std::time::Instant::now() > deadline || !controller.is_running() {
            break false;
        }
        std::thread::sleep(std::time::Duration::from_millis(500));
    };
    let text = controller.log();
    assert!(ready, "not Ready within 60 s; controller log:\n{text}");
    assert_eq!(
        http_get(http, "/readyz").map(|(code, body)| (code, body.trim().to_string())),
        Some((200, "ok: leader".to_string()))
    );
    assert!(
        !text.to_lowercase().contains("forbidden"),
        "the API server refused the controller something:\n{text}"
    );
    controller.stop(std::time::Duration::from_secs(5));
}

/// `metrics.protection`: /metrics on localhost (alone or behind kube-rbac-proxy) while the
/// kubelet still reaches the probes on their own port.
#[test]
fn metrics_can_be_kept_off_the_network() {
    let env_of = |d: &Value, name: &str| -> Option<String> {
        d["spec"]["template"]["spec"]["containers"][0]["env"]
            .as_sequence()
            .unwrap()
            .iter()
            .find(|e| e["name"] == name)
            .map(|e| e["value"].as_str().unwrap_or("").to_string())
    };
    // The chart's fullname is the release name when it contains the chart's name.
    let deployment = RELEASE.to_string();

    // Default: everything on one open port, as before.
    let docs = documents(&helm_template(&[]));
    let d = find(&docs, "Deployment", &deployment);
    assert_eq!(
        env_of(d, "MSF_CMK_METRICS_ADDR").as_deref(),
        Some("0.0.0.0:8080")
    );
    assert_eq!(env_of(d, "MSF_CMK_PROBE_ADDR"), None);

    // localhost: no Service, no ServiceMonitor; probes on 8081.
    let docs = documents(&helm_template(&[
        "--set",
        "metrics.protection=localhost",
        "--set",
        "metrics.serviceMonitor.enabled=true",
    ]));
    let d = find(&docs, "Deployment", &deployment);
    assert_eq!(
        env_of(d, "MSF_CMK_METRICS_ADDR").as_deref(),
        Some("127.0.0.1:8080")
    );
    assert_eq!(
        env_of(d, "MSF_CMK_PROBE_ADDR").as_deref(),
        Some("0.0.0.0:8081")
    );
    let c = &d["spec"]["template"]["spec"]["containers"][0];
    assert_eq!(c["ports"][0]["containerPort"], 8081);
    assert_eq!(c["livenessProbe"]["httpGet"]["port"], "http");
    assert!(
        !docs
            .iter()
            .any(|d| str_at(d, &["kind"]) == "ServiceMonitor")
    );
    assert!(!docs.iter().any(|d| str_at(d, &["kind"]) == "Service"));

    // kubeRbacProxy: a sidecar on 8443 in front of 127.0.0.1:8080, the Service and the
    // ServiceMonitor point at it, and the RBAC it needs exists.
    let args = ["--set", "metrics.protection=kubeRbacProxy"];
    let docs = documents(&helm_template(&args));
    let d = find(&docs, "Deployment", &deployment);
    assert_eq!(
        env_of(d, "MSF_CMK_METRICS_ADDR").as_deref(),
        Some("127.0.0.1:8080")
    );
    let proxy = &d["spec"]["template"]["spec"]["containers"][1];
    assert_eq!(proxy["name"], "kube-rbac-proxy");
    let proxy_args: Vec<&str> = proxy["args"]
        .as_sequence()
        .unwrap()
        .iter()
        .map(|a| a.as_str().unwrap())
        .collect();
    assert!(
        proxy_args.contains(&"--upstream=http://127.0.0.1:8080/"),
        "{proxy_args:?}"
    );
    assert!(
        proxy_args.contains(&"--secure-listen-address=0.0.0.0:8443"),
        "{proxy_args:?}"
    );
    let svc = find(&docs, "Service", &format!("{deployment}-metrics"));
    assert_eq!(svc["spec"]["ports"][0]["targetPort"], "https-metrics");
    let auth = find(&docs, "ClusterRole", &format!("{deployment}-metrics-auth"));
    assert!(format!("{auth:?}").contains("tokenreviews"));
    assert!(format!("{auth:?}").contains("subjectaccessreviews"));
    let reader = find(
        &docs,
        "ClusterRole",
        &format!("{deployment}-metrics-reader"),
    );
    assert_eq!(reader["rules"][0]["nonResourceURLs"][0], "/metrics");
    let monitor = documents(&helm_template(&[
        "--set",
        "metrics.protection=kubeRbacProxy",
        "--set",
        "metrics.serviceMonitor.enabled=true",
    ]));
    let sm = docs_kind(&monitor, "ServiceMonitor");
    assert_eq!(sm["spec"]["endpoints"][0]["scheme"], "https");
    assert_eq!(sm["spec"]["endpoints"][0]["port"], "https-metrics");

    // The real API server accepts what is rendered (server-side dry run), in a namespace of
    // its own: a client-side apply over another test's Deployment would merge the two port
    // lists (both name a port `http`).
    let c = TestCluster::shared();
    let ns = c.create_namespace("metrics-protection");
    let rendered = helm_template(&[
        "--namespace",
        &ns,
        "--set",
        "metrics.protection=kubeRbacProxy",
    ]);
    c.kubectl_stdin(&["apply", "--dry-run=server", "-f", "-"], &rendered)
        .ok();
}

fn docs_kind<'a>(docs: &'a [Value], kind: &str) -> &'a Value {
    docs.iter()
        .find(|d| str_at(d, &["kind"]) == kind)
        .unwrap_or_else(|| panic!("no {kind}"))
}
