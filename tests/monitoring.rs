//! The alerts and the dashboard in `deploy/monitoring/` query only what the controller exports:
//! the controller runs (`msf-cmk-controller run` on a real API server, against the AWS
//! emulator, as in tests/e2e_controller.rs), is driven through a key switch, a change made in
//! the console and throttling, and its `/metrics` is scraped. Every metric name a rule or a
//! panel queries must have samples there, and every label it matches or groups by must be one
//! of that metric's labels. Needs `eval "$(tests/e2e/setup.sh)"` first.

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use msf_cmk_controller::domain::{AppliedEncryption, AppliedKeyType};
use msf_cmk_controller::emulator::Fault;
use serde::Deserialize;
use serde_json::Value as Json;
use support::cluster::repo_path;
use support::scenario::{REGION, RESYNC, Replica, Scenario, appenc};

/// Labels Prometheus adds to every scraped series (target labels), and PromQL's own.
const TARGET_LABELS: &[&str] = &["instance", "job", "pod", "namespace_", "__name__"];

/// Every PromQL expression of the PrometheusRule and of the dashboard, with where it is.
fn queries() -> Vec<(String, String)> {
    let mut out = vec![];
    let rule_text =
        std::fs::read_to_string(repo_path("deploy/monitoring/prometheusrule.yaml")).unwrap();
    let rule = yaml_serde::Value::deserialize(yaml_serde::Deserializer::from_str(&rule_text))
        .expect("PrometheusRule YAML");
    assert_eq!(rule["kind"].as_str(), Some("PrometheusRule"));
    for group in rule["spec"]["groups"].as_sequence().expect("groups") {
        for r in group["rules"].as_sequence().expect("rules") {
            let name = r["alert"].as_str().or(r["record"].as_str()).unwrap_or("?");
            let expr = r["expr"].as_str().expect("expr");
            out.push((format!("rule {name}"), expr.to_string()));
        }
    }
    let dash: Json = serde_json::from_str(
        &std::fs::read_to_string(repo_path("deploy/monitoring/grafana-dashboard.json")).unwrap(),
    )
    .expect("dashboard JSON");
    for panel in dash["panels"].as_array().expect("panels") {
        for t in panel["targets"].as_array().expect("targets") {
            let title = panel["title"].as_str().unwrap_or("?");
            out.push((format!("panel {title}"), t["expr"].as_str().unwrap().into()));
        }
    }
    for var in dash["templating"]["list"].as_array().expect("variables") {
        if let Some(q) = var["query"].as_str().filter(|q| q.contains("msf_cmk_")) {
            out.push((format!("variable {}", var["name"]), q.to_string()));
        }
    }
    assert!(out.len() > 10, "{out:?}");
    out
}

/// Sample names of the exposition and the label names each carries.
fn exported(text: &str) -> BTreeMap<String, BTreeSet<String>> {
    let mut out: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for line in text
        .lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
    {
        let end = line.find(['{', ' ']).unwrap_or(line.len());
        let labels = out.entry(line[..end].to_string()).or_default();
        if line[end..].starts_with('{') {
            let body = &line[end + 1..line.find('}').expect("closing brace")];
            for pair in body.split("\",") {
                if let Some((k, _)) = pair.split_once('=') {
                    labels.insert(k.trim().to_string());
                }
            }
        }
    }
    out
}

fn is_ident(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_'
}

/// The metric names an expression selects, each with the label names its selector matches.
fn selectors(expr: &str) -> Vec<(String, Vec<String>)> {
    let mut out = vec![];
    let mut rest = expr;
    while let Some(i) = rest.find("msf_cmk_") {
        let before_ok = i == 0 || !is_ident(rest[..i].chars().last().unwrap());
        let tail = &rest[i..];
        let end = tail.find(|c: char| !is_ident(c)).unwrap_or(tail.len());
        let name = &tail[..end];
        let mut labels = vec![];
        if tail[end..].starts_with('{') {
            let body = &tail[end + 1..end + tail[end..].find('}').unwrap()];
            for m in body.split(',') {
                let key: String = m.trim().chars().take_while(|c| is_ident(*c)).collect();
                if !key.is_empty() {
                    labels.push(key);
                }
            }
        }
        if before_ok {
            out.push((name.to_string(), labels));
        }
        rest = &tail[end..];
    }
    out
}

/// Label names in `by (...)`, `without (...)`, `on (...)` and `ignoring (...)` clauses.
fn grouping_labels(expr: &str) -> Vec<String> {
    let mut out = vec![];
    for kw in ["by", "without", "on", "ignoring"] {
        let mut rest = expr;
        while let Some(i) = rest.find(kw) {
            let before_ok = i == 0 || !is_ident(rest[..i].chars().last().unwrap());
            let after = rest[i + kw.len()..].trim_start();
            if before_ok && after.starts_with('(') {
                let body = &after[1..after.find(')').unwrap()];
                out.extend(
                    body.split(',')
                        .map(str::trim)
                        .filter(|l| !l.is_empty())
                        .map(str::to_string),
                );
            }
            rest = &rest[i + kw.len()..];
        }
    }
    out
}

#[test]
fn every_metric_and_label_the_alerts_and_dashboard_query_is_exported() {
    let queries = queries();
    let mut s = Scenario::shared("monitoring");
    let ns = s.namespace("monitoring");
    s.application("monitored-app");
    s.application("throttled-app");
    let key = s.key();
    let r = s.start_replica(Replica::new("c0").leader_election());

    // A key switch (policy write, UpdateApplication), then a change made in the console that
    // the controller corrects (drift).
    s.apply(&ns, &appenc("monitored", "monitored-app", Some(&key), ""));
    s.wait_converged(&ns, "monitored");
    s.emu
        .set_application_encryption(REGION, "monitored-app", AppliedEncryption::default())
        .unwrap();
    s.wait(
        "the console change corrected",
        RESYNC * 5 + Duration::from_secs(10),
        |s| match s.encryption("monitored-app") {
            (AppliedKeyType::CustomerManagedKey, _) => Ok(()),
            other => Err(format!("{other:?}")),
        },
    );
    // Throttling that outlasts the SDK's retries, for a second resource.
    s.emu.set_fault("DescribeApplication", Fault::throttle(1.0));
    s.apply(&ns, &appenc("throttled", "throttled-app", None, ""));
    let metrics = s.wait(
        "throttles, drift and both resources in /metrics",
        Duration::from_secs(60),
        |s| {
            let (code, body) = s.http_get(r, "/metrics").ok_or("no answer")?;
            let needed = [
                "msf_cmk_aws_throttles_total{",
                "msf_cmk_drift_corrections_total{",
                "name=\"throttled\"",
                "msf_cmk_leader 1",
            ];
            match needed.iter().find(|n| !body.contains(**n)) {
                None if code == 200 => Ok(body),
                missing => Err(format!("{code}: missing {missing:?}")),
            }
        },
    );
    s.emu.clear_faults();

    let exported = exported(&metrics);
    let mut problems = vec![];
    for (place, expr) in &queries {
        let selected = selectors(expr);
        assert!(
            !selected.is_empty(),
            "{place} queries no msf_cmk_ metric: {expr}"
        );
        let mut labels_here: BTreeSet<String> = BTreeSet::new();
        for (name, labels) in &selected {
            let Some(have) = exported.get(name) else {
                problems.push(format!("{place}: {name} is not exported"));
                continue;
            };
            labels_here.extend(have.iter().cloned());
            for l in labels {
                if !have.contains(l) && !TARGET_LABELS.contains(&l.as_str()) {
                    problems.push(format!("{place}: {name} has no label {l}"));
                }
            }
        }
        for l in grouping_labels(expr) {
            if !labels_here.contains(&l) && !TARGET_LABELS.contains(&l.as_str()) {
                problems.push(format!("{place}: groups by {l}, which its metrics lack"));
            }
        }
    }
    assert!(problems.is_empty(), "{problems:#?}\n\n/metrics:\n{metrics}");
}

/// The parsers above, on known input (so a green run above means something).
#[test]
fn query_parsing() {
    let e = r#"(max by (namespace, name) (msf_cmk_resource_ready{reason="X", instance=~"a"} == 0)) and on (instance) (msf_cmk_leader == 1)"#;
    assert_eq!(
        selectors(e),
        vec![
            (
                "msf_cmk_resource_ready".to_string(),
                vec!["reason".to_string(), "instance".to_string()]
            ),
            ("msf_cmk_leader".to_string(), vec![]),
        ]
    );
    assert_eq!(grouping_labels(e), vec!["namespace", "name", "instance"]);
    let text = "# TYPE msf_cmk_leader gauge\nmsf_cmk_leader 1\nmsf_cmk_aws_calls_total{service=\"kms\",operation=\"A,B\"} 2\n";
    let ex = exported(text);
    assert!(ex["msf_cmk_leader"].is_empty());
    assert_eq!(
        ex["msf_cmk_aws_calls_total"],
        BTreeSet::from(["service".to_string(), "operation".to_string()])
    );
}
