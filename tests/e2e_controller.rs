//! End-to-end scenarios of the controller (issue 5, item 3): `msf-cmk-controller run` as its
//! ServiceAccount (RBAC from `deploy/`) on a real kube-apiserver, against the embedded AWS
//! emulator (MSF + KMS). Objects are created with `kubectl apply` and read back as the API
//! server stores them; AWS effects are read from the emulator (state and call counts).
//!
//! Each scenario has its own emulator and controller replicas that watch only its namespaces
//! (see `support::scenario`), so the scenarios run in parallel on the shared cluster and every
//! call count belongs to one scenario. The API server restart uses a private cluster.
//! Failing scenarios print the controller's log, `kubectl get appenc -o yaml`, the events
//! and the emulator's counts and state.

mod support;

use std::time::{Duration, Instant};

use msf_cmk_controller::domain::{ApplicationStatus, AppliedEncryption, AppliedKeyType};
use serde_json::Value;
use support::scenario::{RESYNC, Replica, Scenario, appenc, condition};

const CONDITION_TYPES: [&str; 4] = [
    "Ready",
    "KeyUsable",
    "KeyPolicyCompliant",
    "EncryptionApplied",
];

/// Every condition is True and computed for the object's current generation.
fn assert_all_true_at_generation(o: &Value) {
    let generation = o["metadata"]["generation"].as_i64().expect("generation");
    assert_eq!(
        o["status"]["observedGeneration"].as_i64(),
        Some(generation),
        "status.observedGeneration: {o:#}"
    );
    for t in CONDITION_TYPES {
        let c = condition(o, t).unwrap_or_else(|| panic!("condition {t} missing: {o:#}"));
        assert_eq!(c["status"], "True", "{t}: {c}");
        assert_eq!(
            c["observedGeneration"].as_i64(),
            Some(generation),
            "{t}: {c}"
        );
        assert!(
            c["lastTransitionTime"]
                .as_str()
                .is_some_and(|s| !s.is_empty()),
            "{t}: {c}"
        );
        assert!(
            c["reason"].as_str().is_some_and(|s| !s.is_empty()),
            "{t}: {c}"
        );
    }
}

fn transition_times(o: &Value) -> Vec<String> {
    CONDITION_TYPES
        .iter()
        .map(|t| {
            condition(o, t).map_or(String::new(), |c| {
                c["lastTransitionTime"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string()
            })
        })
        .collect()
}

/// Sleeps over several resync periods and asserts that no AWS write happened meanwhile, while
/// the resource kept being re-observed (lastSyncTime moves) without its conditions flipping.
fn assert_steady(s: &Scenario, ns: &str, name: &str) {
    let before = s.must_get(ns, name);
    let writes = s.writes();
    let describes = s.calls("DescribeApplication");
    std::thread::sleep(RESYNC * 3 + Duration::from_secs(1));
    let after = s.must_get(ns, name);
    assert_eq!(
        s.writes(),
        writes,
        "AWS writes (PutKeyPolicy, UpdateApplication) in steady state"
    );
    assert!(
        s.calls("DescribeApplication") > describes,
        "no DescribeApplication over {:?}: the resync ({RESYNC:?}) does not re-observe",
        RESYNC * 3
    );
    assert_ne!(
        before["status"]["lastSyncTime"], after["status"]["lastSyncTime"],
        "lastSyncTime did not move across resyncs"
    );
    assert_eq!(
        transition_times(&before),
        transition_times(&after),
        "lastTransitionTime moved although no condition flipped"
    );
}

#[test]
fn aws_owned_to_customer_managed_and_back() {
    let mut s = Scenario::shared("aok-cmk");
    let ns = s.namespace("aok-cmk");
    // deploy/examples/cmk-alias.yaml: application orders-enrichment, key alias/flink-orders.
    let app_arn = s.application("orders-enrichment");
    let key = s.key();
    s.emu
        .create_alias(support::scenario::REGION, "alias/flink-orders", &key)
        .unwrap();
    s.start_replica(Replica::new("c0"));
    assert_eq!(s.writes(), (0, 0));

    // AWS owned -> customer managed, from the example manifest as users apply it.
    s.cluster()
        .apply_file("deploy/examples/cmk-alias.yaml", Some(&ns));
    let o = s.wait_converged(&ns, "orders-enrichment");
    assert_all_true_at_generation(&o);
    assert_eq!(o["metadata"]["generation"], 1);
    let st = &o["status"];
    assert_eq!(st["application"]["arn"], app_arn.as_str(), "{st:#}");
    assert_eq!(st["application"]["keyType"], "CustomerManagedKey", "{st:#}");
    assert_eq!(
        st["application"]["keyArn"],
        key.as_str(),
        "the alias resolved to the key ARN: {st:#}"
    );
    assert_eq!(st["keyPolicy"]["compliant"], true, "{st:#}");
    let owned: Vec<&str> = st["keyPolicy"]["ownedSids"]
        .as_array()
        .expect("status.keyPolicy.ownedSids")
        .iter()
        .filter_map(Value::as_str)
        .collect();
    assert!(
        !owned.is_empty() && owned.iter().all(|sid| sid.starts_with("MsfCmk")),
        "owned Sids: {owned:?}"
    );
    assert!(
        o["metadata"]["finalizers"]
            .as_array()
            .is_some_and(|f| f.iter().any(|x| x == "msfcmk.dev/cleanup")),
        "finalizer: {}",
        o["metadata"]
    );
    assert_eq!(
        s.encryption("orders-enrichment").0,
        AppliedKeyType::CustomerManagedKey
    );
    s.assert_policy_grants(&key, &[&app_arn]);
    assert_eq!(
        s.writes(),
        (1, 1),
        "(PutKeyPolicy, UpdateApplication) for one change: {:?}",
        s.emu.outcome_counts()
    );
    assert_eq!(
        s.app("orders-enrichment").version_id,
        2,
        "one new application version"
    );
    assert_steady(&s, &ns, "orders-enrichment");

    // kubectl get: the printer columns, with values.
    let table = s.kubectl(&["get", "appenc", "-n", &ns]);
    let header: Vec<&str> = table
        .lines()
        .next()
        .unwrap_or_default()
        .split_whitespace()
        .collect();
    assert_eq!(
        header,
        ["NAME", "APPLICATION", "DESIRED", "OBSERVED", "READY", "AGE"],
        "{table}"
    );
    let row: Vec<&str> = table
        .lines()
        .nth(1)
        .unwrap_or_default()
        .split_whitespace()
        .collect();
    assert_eq!(
        row[..5],
        [
            "orders-enrichment",
            "orders-enrichment",
            "CustomerManagedKey",
            "CustomerManagedKey",
            "True"
        ],
        "{table}"
    );
    let wide = s.kubectl(&["get", "appenc", "-n", &ns, "-o", "wide"]);
    assert!(
        wide.lines().next().unwrap_or_default().contains("REASON"),
        "{wide}"
    );
    assert!(wide.contains("Converged"), "{wide}");

    // kubectl describe: the events of the change.
    let described = s.kubectl(&["describe", "appenc", "orders-enrichment", "-n", &ns]);
    let events = described
        .split("Events:")
        .nth(1)
        .unwrap_or_else(|| panic!("no Events section:\n{described}"));
    for reason in ["KeyPolicyUpdated", "EncryptionUpdated"] {
        assert!(
            events.contains(reason),
            "describe lacks event {reason}:\n{described}"
        );
    }

    // ... and back to the AWS owned key: a spec edit (generation 2).
    s.apply(
        &ns,
        &appenc("orders-enrichment", "orders-enrichment", None, ""),
    );
    let o = s.wait_converged(&ns, "orders-enrichment");
    assert_eq!(o["metadata"]["generation"], 2);
    assert_all_true_at_generation(&o);
    assert_eq!(
        o["status"]["application"]["keyType"], "AwsOwnedKey",
        "{o:#}"
    );
    assert!(o["status"]["application"]["keyArn"].is_null(), "{o:#}");
    assert_eq!(
        s.encryption("orders-enrichment"),
        (AppliedKeyType::AwsOwnedKey, None)
    );
    assert_eq!(
        s.writes(),
        (1, 2),
        "switching back: one UpdateApplication, no PutKeyPolicy"
    );
    // The statements stay: snapshots taken under the key still need it.
    s.assert_policy_grants(&key, &[&app_arn]);
    assert_steady(&s, &ns, "orders-enrichment");
    let updated = s
        .event_reasons(&ns, "orders-enrichment")
        .iter()
        .filter(|r| *r == "EncryptionUpdated")
        .count();
    assert!(
        updated >= 1,
        "events: {:?}",
        s.event_reasons(&ns, "orders-enrichment")
    );
    s.assert_calls_allowed_by_deploy_iam();
    s.assert_no_panic();
}

#[test]
fn spec_edit_to_another_key_waits_for_an_updatable_status_and_switches_once() {
    let mut s = Scenario::shared("spec-edit");
    let ns = s.namespace("spec-edit");
    let app_arn = s.application("fraud-scoring");
    let key_a = s.key();
    let key_b = s.key();
    s.emu
        .create_alias(support::scenario::REGION, "alias/fraud-b", &key_b)
        .unwrap();
    s.start_replica(Replica::new("c0"));

    s.apply(&ns, &appenc("fraud", "fraud-scoring", Some(&key_a), ""));
    let o = s.wait_converged(&ns, "fraud");
    assert_eq!(o["status"]["application"]["keyArn"], key_a.as_str());
    assert_eq!(s.writes(), (1, 1));

    // The application is busy (STARTING): the edit waits, writes no UpdateApplication.
    s.emu
        .set_application_status(
            support::scenario::REGION,
            "fraud-scoring",
            ApplicationStatus::Starting,
        )
        .unwrap();
    s.apply(
        &ns,
        &appenc("fraud", "fraud-scoring", Some("alias/fraud-b"), ""),
    );
    let o = s.wait_condition(
        &ns,
        "fraud",
        "EncryptionApplied",
        "False",
        "WaitingForApplicationStatus",
    );
    assert_eq!(o["metadata"]["generation"], 2);
    assert_ne!(
        condition(&o, "Ready").map(|c| c["status"].clone()),
        Some(Value::from("True")),
        "{o:#}"
    );
    std::thread::sleep(RESYNC * 2);
    assert_eq!(
        s.calls("UpdateApplication"),
        1,
        "UpdateApplication while the application is STARTING"
    );
    assert_eq!(
        s.encryption("fraud-scoring").0,
        AppliedKeyType::CustomerManagedKey
    );

    // Updatable again: exactly one switch to key B, whose policy is prepared first.
    s.emu
        .set_application_status(
            support::scenario::REGION,
            "fraud-scoring",
            ApplicationStatus::Running,
        )
        .unwrap();
    let o = s.wait_converged(&ns, "fraud");
    assert_all_true_at_generation(&o);
    assert_eq!(o["metadata"]["generation"], 2);
    assert_eq!(
        o["status"]["application"]["keyArn"],
        key_b.as_str(),
        "{o:#}"
    );
    assert_eq!(s.writes(), (2, 2), "(PutKeyPolicy, UpdateApplication)");
    s.assert_policy_grants(&key_b, &[&app_arn]);
    s.assert_policy_grants(&key_a, &[&app_arn]);
    assert_steady(&s, &ns, "fraud");
    s.assert_no_panic();
}

#[test]
fn one_key_shared_by_applications_in_several_namespaces() {
    let mut s = Scenario::shared("shared-key");
    let namespaces = [
        s.namespace("shared-a"),
        s.namespace("shared-b"),
        s.namespace("shared-c"),
    ];
    let key = s.key();
    // Four applications in three namespaces, all declared before the controller starts (a
    // controller installed on a cluster that already has them, or a GitOps sync).
    let resources = [
        (&namespaces[0], "ingest", "shared-ingest"),
        (&namespaces[0], "enrich", "shared-enrich"),
        (&namespaces[1], "reporting", "shared-reporting"),
        (&namespaces[2], "alerts", "shared-alerts"),
    ];
    let mut arns = Vec::new();
    for (ns, name, app) in resources {
        arns.push(s.application(app));
        s.apply(ns, &appenc(name, app, Some(&key), ""));
    }
    s.start_replica(Replica::new("c0"));
    let mut owned = Vec::new();
    for (ns, name, _) in resources {
        let o = s.wait_converged(ns, name);
        assert_all_true_at_generation(&o);
        assert_eq!(o["status"]["application"]["keyArn"], key.as_str());
        owned.push(o["status"]["keyPolicy"]["ownedSids"].clone());
    }
    let arn_refs: Vec<&str> = arns.iter().map(String::as_str).collect();
    s.assert_policy_grants(&key, &arn_refs);
    let (puts, updates) = s.writes();
    assert_eq!(updates, 4, "one UpdateApplication per application");
    assert!(
        puts < 4,
        "{puts} PutKeyPolicy for 4 applications of one key: the controller should merge co-tenants into one write"
    );
    assert!(
        owned.windows(2).all(|w| w[0] == w[1]),
        "the applications of one key report different owned statements: {owned:?}"
    );
    for (ns, name, app) in resources {
        assert_eq!(s.app(app).version_id, 2, "{ns}/{name}: one new version");
    }
    assert_steady(&s, resources[0].0, resources[0].1);
    s.assert_calls_allowed_by_deploy_iam();
    s.assert_no_panic();
}

#[test]
fn delete_under_each_deletion_policy() {
    let mut s = Scenario::shared("deletion");
    let ns = s.namespace("deletion");
    let key = s.key();
    s.application("keep-on-cmk");
    s.application("revert-to-aok");
    s.start_replica(Replica::new("c0"));
    s.apply(
        &ns,
        &appenc("keep", "keep-on-cmk", Some(&key), "deletionPolicy: Retain"),
    );
    s.apply(
        &ns,
        &appenc(
            "revert",
            "revert-to-aok",
            Some(&key),
            "deletionPolicy: RevertToAwsOwnedKey",
        ),
    );
    s.wait_converged(&ns, "keep");
    s.wait_converged(&ns, "revert");
    let (_, updates) = s.writes();
    assert_eq!(updates, 2);

    // Retain: the object goes, AWS stays as it is.
    s.kubectl(&["delete", "appenc", "keep", "-n", &ns, "--wait=false"]);
    s.wait_gone(&ns, "keep", Duration::from_secs(30));
    assert_eq!(
        s.encryption("keep-on-cmk").0,
        AppliedKeyType::CustomerManagedKey
    );
    assert_eq!(
        s.calls("UpdateApplication"),
        2,
        "Retain must not touch the application"
    );

    // RevertToAwsOwnedKey while MSF refuses updates: the finalizer holds the object.
    s.emu
        .set_application_status(
            support::scenario::REGION,
            "revert-to-aok",
            ApplicationStatus::Updating,
        )
        .unwrap();
    s.kubectl(&["delete", "appenc", "revert", "-n", &ns, "--wait=false"]);
    s.wait(
        "a CleanupFailed event while the application is UPDATING",
        Duration::from_secs(30),
        |s| {
            let reasons = s.event_reasons(&ns, "revert");
            if reasons.iter().any(|r| r == "CleanupFailed") {
                Ok(())
            } else {
                Err(format!("{reasons:?}"))
            }
        },
    );
    let held = s.must_get(&ns, "revert");
    assert!(
        !held["metadata"]["deletionTimestamp"].is_null(),
        "deletionTimestamp: {}",
        held["metadata"]
    );
    assert_eq!(
        s.encryption("revert-to-aok").0,
        AppliedKeyType::CustomerManagedKey
    );
    assert_eq!(s.calls("UpdateApplication"), 2);

    // Updatable again: switched back first, then the finalizer goes and so does the object.
    s.emu
        .set_application_status(
            support::scenario::REGION,
            "revert-to-aok",
            ApplicationStatus::Running,
        )
        .unwrap();
    s.wait_gone(&ns, "revert", Duration::from_secs(60));
    assert_eq!(
        s.encryption("revert-to-aok"),
        (AppliedKeyType::AwsOwnedKey, None)
    );
    assert_eq!(
        s.calls("UpdateApplication"),
        3,
        "exactly one UpdateApplication to revert"
    );
    assert_eq!(
        s.encryption("keep-on-cmk").0,
        AppliedKeyType::CustomerManagedKey
    );
    s.assert_calls_allowed_by_deploy_iam();
    s.assert_no_panic();
}

#[test]
fn drift_made_in_aws_is_corrected_at_resync() {
    let mut s = Scenario::shared("drift");
    let ns = s.namespace("drift");
    let app_arn = s.application("drifting-app");
    let key = s.key();
    // The key already has a statement of a human's: it must survive every repair.
    let mut policy: Value = serde_json::from_str(&s.emu.key_policy(&key).unwrap()).unwrap();
    let human = serde_json::json!({
        "Sid": "HumanAuditors",
        "Effect": "Allow",
        "Principal": {"AWS": "arn:aws:iam::111122223333:role/auditors"},
        "Action": ["kms:DescribeKey", "kms:GetKeyPolicy"],
        "Resource": "*"
    });
    policy["Statement"]
        .as_array_mut()
        .unwrap()
        .push(human.clone());
    let human_policy = serde_json::to_string(&policy).unwrap();
    s.emu.put_key_policy_direct(&key, &human_policy).unwrap();
    s.start_replica(Replica::new("c0"));

    s.apply(&ns, &appenc("drifting", "drifting-app", Some(&key), ""));
    s.wait_converged(&ns, "drifting");
    assert_eq!(s.writes(), (1, 1));

    // Someone switches the application back to the AWS owned key in the console.
    s.emu
        .set_application_encryption(
            support::scenario::REGION,
            "drifting-app",
            AppliedEncryption::default(),
        )
        .unwrap();
    let start = Instant::now();
    s.wait(
        "the application back on the key after console drift",
        RESYNC * 5 + Duration::from_secs(5),
        |s| match s.encryption("drifting-app") {
            (AppliedKeyType::CustomerManagedKey, _) => Ok(()),
            other => Err(format!("{other:?}")),
        },
    );
    let took = start.elapsed();
    eprintln!("encryption drift corrected in {took:?} (resync {RESYNC:?})");
    s.wait_converged(&ns, "drifting");
    assert_eq!(
        s.writes(),
        (1, 2),
        "drift: one UpdateApplication, no PutKeyPolicy"
    );

    // A key administrator strips the MSF statements (keeping their own).
    s.emu.put_key_policy_direct(&key, &human_policy).unwrap();
    s.wait(
        "the key policy repaired after drift",
        RESYNC * 5 + Duration::from_secs(5),
        |s| match s.calls("PutKeyPolicy") {
            2 => Ok(()),
            n => Err(format!("{n} PutKeyPolicy")),
        },
    );
    s.wait_converged(&ns, "drifting");
    s.assert_policy_grants(&key, &[&app_arn]);
    let repaired: Value = serde_json::from_str(&s.emu.key_policy(&key).unwrap()).unwrap();
    assert!(
        repaired["Statement"].as_array().unwrap().contains(&human),
        "the human's statement was changed or dropped:\n{repaired:#}"
    );
    assert_eq!(
        s.writes(),
        (2, 2),
        "policy drift: one PutKeyPolicy, no UpdateApplication"
    );
    assert_steady(&s, &ns, "drifting");
    s.assert_calls_allowed_by_deploy_iam();
    s.assert_no_panic();
}

#[test]
fn api_server_restart_mid_run() {
    let mut s = Scenario::private("restart");
    let ns = s.namespace("restart");
    let key = s.key();
    s.application("before-restart");
    s.application("during-restart");
    // As deployed: leader election on.
    let c0 = s.start_replica(Replica::new("c0").leader_election());
    s.apply(&ns, &appenc("before", "before-restart", Some(&key), ""));
    s.wait_converged(&ns, "before");
    assert_eq!(s.writes(), (1, 1));

    // A new resource, and the API server goes away while the controller handles it.
    s.apply(&ns, &appenc("during", "during-restart", Some(&key), ""));
    s.cluster().restart_apiserver();
    let o = s.wait_converged(&ns, "during");
    assert_all_true_at_generation(&o);
    assert!(s.replica(c0).process.is_running(), "the controller exited");
    let (puts, updates) = s.writes();
    assert_eq!(
        updates, 2,
        "UpdateApplication: one per application, none repeated"
    );
    assert_eq!(puts, 2, "PutKeyPolicy: one per application, none repeated");
    assert_eq!(s.app("during-restart").version_id, 2, "one new version");
    assert_eq!(s.app("before-restart").version_id, 2, "untouched");

    // The watch recovered: a spec edit made after the restart is seen and applied.
    s.apply(&ns, &appenc("before", "before-restart", None, ""));
    let o = s.wait_converged(&ns, "before");
    assert_eq!(o["metadata"]["generation"], 2);
    assert_eq!(
        s.encryption("before-restart").0,
        AppliedKeyType::AwsOwnedKey
    );
    assert_eq!(s.calls("UpdateApplication"), 3);
    assert_steady(&s, &ns, "during");
    assert!(
        s.lease_holder().is_some_and(|h| h.ends_with("-c0")),
        "lease holder {:?}",
        s.lease_holder()
    );
    s.assert_no_panic();
}

#[test]
fn two_replicas_with_leader_election() {
    const LEASE: Duration = Duration::from_secs(6);
    let mut s = Scenario::shared("leader");
    let ns = s.namespace("leader");
    let key = s.key();
    s.application("leader-app");
    let lease = format!("{}s", LEASE.as_secs());
    let a = s.start_replica(
        Replica::new("a")
            .leader_election()
            .env("MSF_CMK_LEASE_DURATION", &lease),
    );
    let leader_a = s.wait(
        "replica a to hold the Lease",
        Duration::from_secs(30),
        |s| match s.lease_holder() {
            Some(h) if h.ends_with("-a") => Ok(h),
            other => Err(format!("holder {other:?}")),
        },
    );
    let b = s.start_replica(
        Replica::new("b")
            .leader_election()
            .env("MSF_CMK_LEASE_DURATION", &lease),
    );
    assert!(
        s.http_get(a, "/readyz")
            .is_some_and(|(_, body)| body.contains("leader")),
        "a /readyz: {:?}",
        s.http_get(a, "/readyz")
    );
    assert!(
        s.http_get(b, "/readyz")
            .is_some_and(|(_, body)| body.contains("standby")),
        "b /readyz: {:?}",
        s.http_get(b, "/readyz")
    );

    s.apply(&ns, &appenc("leader-test", "leader-app", Some(&key), ""));
    s.wait_converged(&ns, "leader-test");
    std::thread::sleep(RESYNC * 2);
    assert_eq!(s.writes(), (1, 1), "exactly one replica acted");
    assert!(
        !s.log_lines(a, "reconciled").is_empty(),
        "the leader did not reconcile"
    );
    assert_eq!(
        s.log_lines(b, "reconciled"),
        Vec::<String>::new(),
        "the standby reconciled"
    );
    assert_eq!(s.lease_holder().as_ref(), Some(&leader_a));

    // The leader vanishes without releasing the Lease: b takes over within the lease duration.
    s.replica(a).process.kill();
    let killed = Instant::now();
    s.wait("replica b to take the Lease", LEASE * 3, |s| {
        match s.lease_holder() {
            Some(h) if h.ends_with("-b") => Ok(()),
            other => Err(format!("holder {other:?}")),
        }
    });
    let handover = killed.elapsed();
    eprintln!("leader handover took {handover:?} (lease duration {LEASE:?})");
    assert!(
        handover <= LEASE + Duration::from_secs(3),
        "handover took {handover:?}, lease duration {LEASE:?}"
    );
    s.wait(
        "b /readyz to say leader",
        Duration::from_secs(10),
        |s| match s.http_get(b, "/readyz") {
            Some((200, body)) if body.contains("leader") => Ok(()),
            other => Err(format!("{other:?}")),
        },
    );

    // The new leader acts on a change, once.
    s.apply(&ns, &appenc("leader-test", "leader-app", None, ""));
    let o = s.wait_converged(&ns, "leader-test");
    assert_eq!(o["metadata"]["generation"], 2);
    assert_eq!(s.writes(), (1, 2));
    assert!(
        !s.log_lines(b, "reconciled").is_empty(),
        "the new leader did not reconcile"
    );

    // Pod deletion: SIGTERM must stop the leader within the pod's grace period (30 s in the
    // Deployment; we allow 10 s), not only its controllers.
    let stopped = s.terminate(b, Duration::from_secs(10));
    assert!(
        stopped.is_some(),
        "the leader was still running 10 s after SIGTERM (the harness SIGKILLs it); its log:\n{}",
        s.log_lines(b, "")
            .into_iter()
            .filter(|l| ["shut", "stopped", "leader", "signal"]
                .iter()
                .any(|w| l.contains(w)))
            .collect::<Vec<_>>()
            .join("\n")
    );
    s.assert_no_panic();
}

#[test]
fn tenancy_guard_refuses_a_namespaces_claim() {
    let mut s = Scenario::shared("tenancy");
    let team = s.namespace("team-a");
    let outsider = s.namespace("outsider");
    let team_key = s.key();
    let other_key = s.key();
    let other_key_policy = s.emu.key_policy(&other_key).unwrap();
    s.application("team-a-ingest");
    s.application("payroll");
    s.application("team-a-reports");
    s.application("team-a-sneaky");
    let tenancy = s.write_file(
        "tenancy.yaml",
        &format!(
            "namespaces:\n  {team}:\n    applications: [\"team-a-*\"]\n    keys: [\"{team_key}\"]\n"
        ),
    );
    s.start_replica(Replica::new("c0").env("MSF_CMK_TENANCY_CONFIG", tenancy.to_str().unwrap()));

    // Allowed: converges (the guard does not block everything).
    s.apply(
        &team,
        &appenc("ingest", "team-a-ingest", Some(&team_key), ""),
    );
    s.wait_converged(&team, "ingest");
    assert_eq!(s.writes(), (1, 1));

    // Refused: another team's application, a key outside the allowance, a namespace with no
    // allowance at all, and a second claim of an application already claimed.
    let refused = [
        (
            &team,
            "payroll",
            appenc("payroll", "payroll", Some(&team_key), ""),
            "NotPermitted",
        ),
        (
            &team,
            "other-key",
            appenc("other-key", "team-a-reports", Some(&other_key), ""),
            "NotPermitted",
        ),
        (
            &outsider,
            "claim",
            appenc("claim", "team-a-sneaky", None, ""),
            "NotPermitted",
        ),
        (
            &team,
            "zz-duplicate",
            appenc("zz-duplicate", "team-a-ingest", None, ""),
            "Conflict",
        ),
    ];
    for (ns, _, yaml, _) in &refused {
        s.apply(ns, yaml);
    }
    for (ns, name, _, reason) in &refused {
        let o = s.wait_condition(ns, name, "Ready", "False", reason);
        for t in ["KeyUsable", "KeyPolicyCompliant", "EncryptionApplied"] {
            assert_ne!(
                condition(&o, t).map(|c| c["status"].clone()),
                Some(Value::from("True")),
                "{ns}/{name}: {t} True on a refused resource: {o:#}"
            );
        }
        assert!(
            s.event_reasons(ns, name).iter().any(|r| r == reason),
            "{ns}/{name}: no {reason} event: {:?}",
            s.event_reasons(ns, name)
        );
    }
    std::thread::sleep(RESYNC * 2);
    assert_eq!(s.writes(), (1, 1), "a refused claim wrote to AWS");
    assert_eq!(s.encryption("payroll"), (AppliedKeyType::AwsOwnedKey, None));
    assert_eq!(
        s.encryption("team-a-reports"),
        (AppliedKeyType::AwsOwnedKey, None)
    );
    assert_eq!(
        s.encryption("team-a-sneaky"),
        (AppliedKeyType::AwsOwnedKey, None)
    );
    assert_eq!(
        s.encryption("team-a-ingest").0,
        AppliedKeyType::CustomerManagedKey
    );
    assert_eq!(s.emu.key_policy(&other_key).unwrap(), other_key_policy);
    let ingest = s.wait_converged(&team, "ingest");
    assert_all_true_at_generation(&ingest);
    let wide = s.kubectl(&["get", "appenc", "-n", &team, "-o", "wide"]);
    assert!(
        wide.contains("NotPermitted") && wide.contains("Conflict"),
        "{wide}"
    );
    let described = s.kubectl(&["describe", "appenc", "payroll", "-n", &team]);
    assert!(
        described.contains("NotPermitted") && described.contains("Warning"),
        "{described}"
    );
    s.assert_no_panic();
}

/// A claim the tenancy guard refuses must not count as a claim: otherwise a namespace with no
/// allowance could block a team from its own application by declaring it first (the owner's
/// resource would be refused as a `Conflict` with the older, refused one).
#[test]
fn a_refused_claim_does_not_block_the_permitted_owner() {
    let mut s = Scenario::shared("tenancy-first");
    let team = s.namespace("team-b");
    let outsider = s.namespace("squatter");
    let key = s.key();
    let app_arn = s.application("team-b-orders");
    let tenancy = s.write_file(
        "tenancy.yaml",
        &format!("namespaces:\n  {team}:\n    applications: [\"team-b-*\"]\n    keys: [\"*\"]\n"),
    );
    s.start_replica(Replica::new("c0").env("MSF_CMK_TENANCY_CONFIG", tenancy.to_str().unwrap()));

    // The outsider declares the team's application first, and is refused.
    s.apply(&outsider, &appenc("squat", "team-b-orders", None, ""));
    s.wait_condition(&outsider, "squat", "Ready", "False", "NotPermitted");
    // Strictly older (creationTimestamp has a resolution of one second).
    std::thread::sleep(Duration::from_millis(1100));

    // The team's own claim, permitted, converges.
    s.apply(&team, &appenc("orders", "team-b-orders", Some(&key), ""));
    let o = s.wait(
        "team's claim to converge or be refused",
        support::scenario::CONVERGE,
        |s| {
            let o = s.must_get(&team, "orders");
            let ready = condition(&o, "Ready").cloned().unwrap_or_default();
            let current = o["metadata"]["generation"] == o["status"]["observedGeneration"];
            if current && (ready["status"] == "True" || ready["reason"] == "Conflict") {
                Ok(o)
            } else {
                Err(format!("Ready {ready}"))
            }
        },
    );
    let ready = condition(&o, "Ready").cloned().unwrap_or_default();
    assert_eq!(
        ready["status"], "True",
        "the permitted owner is blocked by a claim the tenancy guard refused: Ready {ready}"
    );
    assert_eq!(
        s.encryption("team-b-orders").0,
        AppliedKeyType::CustomerManagedKey
    );
    s.assert_policy_grants(&key, &[&app_arn]);
    assert_eq!(s.writes(), (1, 1));
    s.assert_no_panic();
}

/// A key that becomes unusable is reported (KeyUsable=False, KeyDisabled) and nothing is
/// changed in AWS: switching the application away would need a restore under that key.
#[test]
fn a_disabled_key_is_reported_without_any_write() {
    let mut s = Scenario::shared("disabled");
    let ns = s.namespace("disabled");
    let key = s.key();
    s.application("disabled-key-app");
    s.start_replica(Replica::new("c0"));
    s.apply(&ns, &appenc("app", "disabled-key-app", Some(&key), ""));
    s.wait_converged(&ns, "app");
    assert_eq!(s.writes(), (1, 1));

    s.emu.disable_key(&key).unwrap();
    let o = s.wait_condition(&ns, "app", "KeyUsable", "False", "KeyDisabled");
    let ready = condition(&o, "Ready").cloned().unwrap_or_default();
    assert_ne!(
        ready["status"], "True",
        "Ready with a disabled key: {ready}"
    );
    assert!(
        s.event_reasons(&ns, "app")
            .iter()
            .any(|r| r == "KeyDisabled"),
        "no KeyDisabled event: {:?}",
        s.event_reasons(&ns, "app")
    );
    std::thread::sleep(RESYNC * 2);
    assert_eq!(s.writes(), (1, 1), "AWS writes with a disabled key");
    assert_eq!(
        s.encryption("disabled-key-app").0,
        AppliedKeyType::CustomerManagedKey
    );

    s.emu.enable_key(&key).unwrap();
    let o = s.wait_converged(&ns, "app");
    assert_all_true_at_generation(&o);
    assert_eq!(s.writes(), (1, 1), "re-enabling the key needs no write");
    s.assert_no_panic();
}

/// Separation of duties (deploy/examples/cmk-audit-mode.yaml): in Audit mode the controller
/// never writes the key policy; it reports what is missing, and switches the application once
/// a key administrator has added the statements `msf-cmk-controller iam-policy` prints.
#[test]
fn audit_mode_waits_for_the_key_administrator() {
    let mut s = Scenario::shared("audit");
    let ns = s.namespace("audit");
    let key = s.key();
    let app_arn = s.application("risk-scoring");
    s.start_replica(Replica::new("c0"));
    s.apply(
        &ns,
        &appenc(
            "risk",
            "risk-scoring",
            Some(&key),
            "keyPolicy:\n  mode: Audit",
        ),
    );
    let o = s.wait(
        "Audit mode to report the missing statements",
        support::scenario::CONVERGE,
        |s| {
            let o = s.must_get(&ns, "risk");
            let compliant = condition(&o, "KeyPolicyCompliant").cloned();
            let current = o["metadata"]["generation"] == o["status"]["observedGeneration"];
            match compliant {
                Some(c) if current && c["status"] == "False" => Ok(o),
                other => Err(format!("KeyPolicyCompliant {other:?}")),
            }
        },
    );
    assert_eq!(o["status"]["keyPolicy"]["compliant"], false, "{o:#}");
    assert!(
        o["status"]["keyPolicy"]["missingAccesses"]
            .as_array()
            .is_some_and(|m| !m.is_empty()),
        "status.keyPolicy.missingAccesses: {o:#}"
    );
    assert_ne!(condition(&o, "Ready").unwrap()["status"], "True");
    std::thread::sleep(RESYNC * 2);
    assert_eq!(s.writes(), (0, 0), "Audit mode wrote to AWS");
    assert_eq!(
        s.encryption("risk-scoring"),
        (AppliedKeyType::AwsOwnedKey, None)
    );

    // The key administrator adds the statements iam-policy prints for this application.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_msf-cmk-controller"))
        .args([
            "iam-policy",
            "--application-arn",
            &app_arn,
            "--key-arn",
            &key,
            "--operator-role-arn",
            support::scenario::OPERATOR_ROLE_ARN,
        ])
        .output()
        .expect("run iam-policy");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let printed: Value = serde_json::from_slice(&out.stdout).expect("iam-policy JSON");
    let mut policy: Value = serde_json::from_str(&s.emu.key_policy(&key).unwrap()).unwrap();
    policy["Statement"].as_array_mut().unwrap().extend(
        printed["keyPolicyStatements"]
            .as_array()
            .unwrap()
            .iter()
            .cloned(),
    );
    let granted = serde_json::to_string(&policy).unwrap();
    s.emu.put_key_policy_direct(&key, &granted).unwrap();

    let o = s.wait_converged(&ns, "risk");
    assert_all_true_at_generation(&o);
    assert_eq!(
        s.writes(),
        (0, 1),
        "Audit mode: no PutKeyPolicy, one UpdateApplication"
    );
    assert_eq!(
        s.emu.key_policy(&key).unwrap(),
        granted,
        "Audit mode changed the policy"
    );
    assert_eq!(
        s.encryption("risk-scoring").0,
        AppliedKeyType::CustomerManagedKey
    );
    s.assert_no_panic();
}

/// `suspend: true` observes and reports but changes nothing; lifting it applies the change once.
#[test]
fn suspend_reports_a_pending_change_without_writing() {
    let mut s = Scenario::shared("suspend");
    let ns = s.namespace("suspend");
    let key = s.key();
    s.application("suspended-app");
    s.start_replica(Replica::new("c0"));
    s.apply(&ns, &appenc("app", "suspended-app", Some(&key), ""));
    s.wait_converged(&ns, "app");
    assert_eq!(s.writes(), (1, 1));

    s.apply(&ns, &appenc("app", "suspended-app", None, "suspend: true"));
    let o = s.wait_condition(&ns, "app", "EncryptionApplied", "False", "Suspended");
    assert_eq!(o["metadata"]["generation"], 2);
    assert_eq!(
        o["status"]["application"]["keyType"], "CustomerManagedKey",
        "status must report what AWS has: {o:#}"
    );
    std::thread::sleep(RESYNC * 2);
    assert_eq!(s.writes(), (1, 1), "a suspended resource wrote to AWS");
    assert_eq!(
        s.encryption("suspended-app").0,
        AppliedKeyType::CustomerManagedKey
    );

    s.apply(&ns, &appenc("app", "suspended-app", None, "suspend: false"));
    let o = s.wait_converged(&ns, "app");
    assert_eq!(o["metadata"]["generation"], 3);
    assert_eq!(s.writes(), (1, 2), "lifting suspend: one UpdateApplication");
    assert_eq!(
        s.encryption("suspended-app"),
        (AppliedKeyType::AwsOwnedKey, None)
    );
    s.assert_no_panic();
}
