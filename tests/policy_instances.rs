//! Owned Sids: readable, per controller instance, and the migration from the Sids of the
//! releases before them (docs/policy.md, docs/fleet.md).

use std::collections::BTreeSet;

use msf_cmk_controller::policy::merge::{Grant, MergeError, granted, granted_by, merge, merge_for};
use msf_cmk_controller::policy::requirements::MsfRequirements;
use msf_cmk_controller::policy::{InstanceName, MAX_POLICY_BYTES, PolicyDocument, check};
use proptest::prelude::*;
use serde_json::{Map, Value, json};

const ACCOUNT: &str = "111122223333";
const KEY: &str = "arn:aws:kms:eu-west-1:111122223333:key/1234abcd-12ab-34cd-56ef-1234567890ab";
const ROLE: &str = "arn:aws:iam::111122223333:role/msf-cmk-controller";
const ROOT: &str = r#"{"Sid":"Root","Effect":"Allow","Principal":{"AWS":"arn:aws:iam::111122223333:root"},"Action":"kms:*","Resource":"*"}"#;

fn app(name: &str) -> String {
    format!("arn:aws:kinesisanalytics:eu-west-1:{ACCOUNT}:application/{name}")
}

fn grant(name: &str, role: &str) -> Grant {
    Grant {
        application_arn: app(name),
        operator_role_arn: role.to_string(),
    }
}

fn instance(name: &str) -> InstanceName {
    InstanceName::parse(name).unwrap()
}

fn root_only() -> PolicyDocument {
    PolicyDocument::parse(&format!(
        r#"{{"Version":"2012-10-17","Statement":[{ROOT}]}}"#
    ))
    .unwrap()
}

fn statements(doc: &PolicyDocument) -> Vec<Map<String, Value>> {
    doc.statements().iter().map(|s| s.raw().clone()).collect()
}

/// The statements `instance` does not own, in order.
fn not_owned_by(doc: &PolicyDocument, instance: &InstanceName) -> Vec<Map<String, Value>> {
    doc.statements()
        .iter()
        .filter(|s| !s.is_owned_by(instance))
        .map(|s| s.raw().clone())
        .collect()
}

fn sids(doc: &PolicyDocument) -> Vec<String> {
    doc.statements()
        .iter()
        .map(|s| s.sid().unwrap_or_default().to_string())
        .collect()
}

fn legacy_fixture() -> PolicyDocument {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/legacy-sids-key-policy.json"
    );
    PolicyDocument::parse(&std::fs::read_to_string(path).unwrap()).unwrap()
}

/// The readable Sids of the default instance for the fixture's grants.
const MIGRATED_SIDS: [&str; 8] = [
    "MsfCmkServiceDescribeKey-111122223333",
    "MsfCmkServiceDurableGenerateDataKey-111122223333",
    "MsfCmkServiceDurableDecrypt-111122223333",
    "MsfCmkServiceRunningState-111122223333",
    "MsfCmkServiceRunningCreateGrant-111122223333",
    "MsfCmkOperatorDescribeKey-msf-cmk-controller",
    "MsfCmkOperatorUseKey-msf-cmk-controller",
    "MsfCmkOperatorCreateGrant-msf-cmk-controller",
];

/// tests/fixtures/legacy-sids-key-policy.json: the statements the released version wrote
/// (`MsfCmkServiceDescribeKey111122223333`, `MsfCmkOperatorUseKeymsfcmkcontroller30262e12`),
/// between two statements of people.
#[test]
fn statements_under_the_released_sids_are_the_default_instance_s_and_get_readable_sids() {
    let old = legacy_fixture();
    let legacy: Vec<_> = old.statements().iter().filter(|s| s.is_owned()).collect();
    assert_eq!(legacy.len(), 8);
    assert!(legacy.iter().all(|s| s.has_legacy_sid()));
    assert!(
        legacy
            .iter()
            .all(|s| s.is_owned_by(&InstanceName::default()))
    );
    assert!(
        old.unmergeable_sids().is_empty(),
        "not KeyPolicyNotMergeable"
    );

    // The next write, even one that changes no grant, carries the readable Sids.
    let new = merge(&old, &[], &[]).unwrap();
    let owned: Vec<_> = new.statements().iter().filter(|s| s.is_owned()).collect();
    let new_sids: Vec<&str> = owned.iter().filter_map(|s| s.sid()).collect();
    assert_eq!(new_sids, MIGRATED_SIDS, "no duplicates, no old Sid left");
    assert!(owned.iter().all(|s| !s.has_legacy_sid()));
    // Each statement is the old one with its new Sid, nothing else changed.
    for (before, after) in legacy.iter().zip(&owned) {
        let mut renamed = before.raw().clone();
        renamed.insert("Sid".into(), json!(after.sid().unwrap()));
        assert_eq!(
            serde_json::to_string(&renamed).unwrap(),
            serde_json::to_string(after.raw()).unwrap()
        );
    }
    // People's statements are kept byte for byte, in their order, and the grants are the same.
    let default = InstanceName::default();
    assert_eq!(not_owned_by(&new, &default), not_owned_by(&old, &default));
    assert_eq!(granted(&new), granted(&old));
    assert_eq!(
        sids(&new),
        [
            &["Enable IAM User Permissions"][..],
            &MIGRATED_SIDS,
            &["Allow access for Key Administrators"]
        ]
        .concat()
    );
    // Then it is stable, and a grant added later keeps the new scheme.
    assert_eq!(merge(&new, &[], &[]).unwrap(), new);
    let more = merge(&old, &[grant("late-app", ROLE)], &[]).unwrap();
    assert!(granted(&more).applications.contains(&app("late-app")));
    assert_eq!(
        more.statements()
            .iter()
            .filter(|s| s.is_owned())
            .filter_map(|s| s.sid())
            .collect::<Vec<_>>(),
        MIGRATED_SIDS
    );
    // A policy holding both forms (a half-migrated copy) comes out with one set.
    let mut both = statements(&old);
    both.extend(
        new.statements()
            .iter()
            .filter(|s| s.is_owned())
            .map(|s| s.raw().clone()),
    );
    let mut value = old.to_value();
    value["Statement"] = json!(both);
    let both = PolicyDocument::from_value(value).unwrap();
    assert_eq!(
        merge(&both, &[], &[]).unwrap().to_compact_json(),
        new.to_compact_json()
    );
}

#[test]
fn a_named_instance_keeps_the_released_statements_as_they_are() {
    let old = legacy_fixture();
    let b = instance("cluster-b");
    let new = merge_for(&old, &b, &[grant("b-app", ROLE)], &[]).unwrap();
    // Everything that was there stays byte for byte; B's statements come last.
    assert_eq!(
        statements(&new)[..old.statements().len()],
        statements(&old)[..]
    );
    let added: Vec<&str> = new.statements()[old.statements().len()..]
        .iter()
        .filter_map(|s| s.sid())
        .collect();
    assert_eq!(added.len(), 8);
    assert!(
        added.iter().all(|s| s.starts_with("MsfCmk-cluster-b-")),
        "{added:?}"
    );
    assert!(added.contains(&"MsfCmk-cluster-b-OperatorUseKey-msf-cmk-controller"));
    assert_eq!(
        granted_by(&new, &b).applications,
        BTreeSet::from([app("b-app")])
    );
    // B removing an application of the released statements changes nothing of them.
    let removed = merge_for(&new, &b, &[], &[app("risk-scoring")]).unwrap();
    assert_eq!(removed, new);
}

#[test]
fn two_instances_on_one_key_never_change_each_other_s_statements() {
    let (a, b) = (instance("cluster-a"), instance("cluster-b"));
    let with_a = merge_for(
        &root_only(),
        &a,
        &[grant("a1", ROLE), grant("a2", ROLE)],
        &[],
    )
    .unwrap();
    let with_both = merge_for(&with_a, &b, &[grant("b1", ROLE)], &[]).unwrap();
    assert_eq!(not_owned_by(&with_both, &b), statements(&with_a));
    // A removes all its applications: B's statements stay byte for byte.
    let a_gone = merge_for(&with_both, &a, &[], &[app("a1"), app("a2")]).unwrap();
    assert_eq!(not_owned_by(&a_gone, &a), not_owned_by(&with_both, &a));
    assert!(a_gone.statements().iter().all(|s| !s.is_owned_by(&a)));
    // B removing A's application is a no-op; the default instance owns nothing here.
    assert_eq!(
        merge_for(&with_both, &b, &[], &[app("a1")]).unwrap(),
        with_both
    );
    assert_eq!(
        merge(&with_both, &[], &[app("a1"), app("b1")]).unwrap(),
        with_both
    );
    // `policy check` sees the union: both instances' applications are granted.
    for name in ["a1", "a2", "b1"] {
        let reqs = MsfRequirements::for_application(&app(name), ROLE).unwrap();
        assert!(check(&with_both, KEY, &reqs).compliant, "{name}");
    }
    let reqs = MsfRequirements::for_application(&app("a1"), ROLE).unwrap();
    assert!(!check(&a_gone, KEY, &reqs).compliant);
    // The Sids say whose statements they are.
    assert!(
        sids(&with_both)
            .iter()
            .any(|s| s == "MsfCmk-cluster-a-OperatorUseKey-msf-cmk-controller")
    );
    assert!(
        sids(&with_both)
            .iter()
            .any(|s| s == "MsfCmk-cluster-b-ServiceDescribeKey-111122223333")
    );
}

#[test]
fn an_edited_copy_under_another_instance_s_sid_is_not_mergeable() {
    let a = instance("cluster-a");
    let with_a = merge_for(&root_only(), &a, &[grant("a1", ROLE)], &[]).unwrap();
    let mut raws = statements(&with_a);
    let i = raws
        .iter()
        .position(|s| s["Sid"] == "MsfCmk-cluster-a-OperatorUseKey-msf-cmk-controller")
        .unwrap();
    raws[i].insert("Effect".into(), json!("Deny"));
    let edited =
        PolicyDocument::from_value(json!({"Version": "2012-10-17", "Statement": raws})).unwrap();
    let sid = "MsfCmk-cluster-a-OperatorUseKey-msf-cmk-controller".to_string();
    assert_eq!(edited.unmergeable_sids(), vec![sid.clone()]);
    for inst in [instance("cluster-b"), a.clone(), InstanceName::default()] {
        match merge_for(&edited, &inst, &[grant("x", ROLE)], &[]) {
            Err(MergeError::NotMergeable { sids }) => assert_eq!(sids, vec![sid.clone()]),
            other => panic!("{inst}: {other:?}"),
        }
    }
}

/// Another instance's statements count towards KMS's 32 KB like a person's.
#[test]
fn another_instance_s_statements_count_towards_the_size_limit() {
    let (a, b) = (instance("cluster-a"), instance("cluster-b"));
    let mut doc = root_only();
    let mut n = 0;
    // A fills the key with applications of distinct operator roles until one more would not fit.
    loop {
        let role = format!("arn:aws:iam::{ACCOUNT}:role/operator-{n:03}");
        match merge_for(&doc, &a, &[grant(&format!("app-{n:03}"), &role)], &[]) {
            Ok(next) => doc = next,
            Err(MergeError::TooLarge { .. }) => break,
            Err(e) => panic!("{e}"),
        }
        n += 1;
        assert!(n < 200, "32 KB fill bounded");
    }
    assert!(doc.to_compact_json().len() <= MAX_POLICY_BYTES);
    // B's statements alone would fit easily; with A's they do not.
    let fresh = merge_for(
        &root_only(),
        &b,
        &[grant("b1", "arn:aws:iam::111122223333:role/b-operator")],
        &[],
    );
    assert!(fresh.is_ok());
    let b_role = format!("arn:aws:iam::{ACCOUNT}:role/{}", "b".repeat(60));
    assert!(matches!(
        merge_for(&doc, &b, &[grant("b1", &b_role)], &[]),
        Err(MergeError::TooLarge { .. })
    ));
}

#[test]
fn sids_carry_the_role_name_and_a_hash_only_when_two_groups_share_it() {
    let other_account_role = "arn:aws:iam::444455556666:role/msf-cmk-controller";
    let one = merge(&root_only(), &[grant("a1", ROLE)], &[]).unwrap();
    assert!(sids(&one).contains(&"MsfCmkOperatorUseKey-msf-cmk-controller".to_string()));
    // Two roles named alike (two accounts): both get their hash, and the Sids are unique.
    let two = merge(&one, &[grant("a2", other_account_role)], &[]).unwrap();
    let op: Vec<String> = sids(&two)
        .into_iter()
        .filter(|s| s.starts_with("MsfCmkOperatorUseKey-"))
        .collect();
    assert_eq!(op.len(), 2);
    assert!(
        op.iter()
            .all(|s| s.len() == "MsfCmkOperatorUseKey-msf-cmk-controller".len() + 9),
        "{op:?}"
    );
    let unique: BTreeSet<&String> = op.iter().collect();
    assert_eq!(unique.len(), 2);
    let all = sids(&two);
    assert_eq!(all.iter().collect::<BTreeSet<_>>().len(), all.len());
    // Recognised in both forms: the hashed group drops its hash when it is alone again.
    assert_eq!(granted(&two).applications.len(), 2);
    let back = merge(&two, &[], &[app("a2")]).unwrap();
    assert_eq!(back, one);
}

fn names() -> impl Strategy<Value = String> {
    prop::sample::select(vec!["a", "b", "c", "d", "e"]).prop_map(str::to_string)
}

#[derive(Clone, Debug)]
enum Op {
    Add(usize, String, usize),
    Remove(usize, String),
}

fn ops() -> impl Strategy<Value = Vec<Op>> {
    let op = prop_oneof![
        (0..3usize, names(), 0..2usize).prop_map(|(i, n, r)| Op::Add(i, n, r)),
        (0..3usize, names()).prop_map(|(i, n)| Op::Remove(i, n)),
    ];
    prop::collection::vec(op, 1..12)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// Whatever the instances do in turn, a merge by one never changes, moves within the
    /// others' order or drops a statement it does not own.
    #[test]
    fn an_instance_never_changes_another_s_statements(ops in ops()) {
        let instances = [InstanceName::default(), instance("cluster-a"), instance("b")];
        let roles = [ROLE, "arn:aws:iam::111122223333:role/second"];
        let mut doc = root_only();
        for op in ops {
            let (who, next) = match &op {
                Op::Add(i, name, r) => (*i, merge_for(&doc, &instances[*i], &[grant(&format!("{i}-{name}"), roles[*r])], &[])),
                Op::Remove(i, name) => (*i, merge_for(&doc, &instances[*i], &[], &[app(&format!("{}-{name}", (i + 1) % 3)), app(&format!("{i}-{name}"))])),
            };
            let next = next.unwrap();
            prop_assert_eq!(not_owned_by(&next, &instances[who]), not_owned_by(&doc, &instances[who]));
            prop_assert!(next.unmergeable_sids().is_empty());
            for inst in &instances {
                // Each instance's grants are only ever its own applications.
                let own = format!("/{}-", instances.iter().position(|x| x == inst).unwrap());
                let only_own = granted_by(&next, inst).applications.iter().all(|a| a.contains(&own));
                prop_assert!(only_own);
            }
            doc = next;
        }
    }
}

fn cli(args: &[&str]) -> (i32, String, String) {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_msf-cmk-controller"))
        .args(args)
        .env_remove("MSF_CMK_INSTANCE_NAME")
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8(out.stdout).unwrap(),
        String::from_utf8(out.stderr).unwrap(),
    )
}

/// `policy merge` on a policy of the released version: without any grant it rewrites the Sids;
/// `--instance-name` merges as another installation; a bad name is refused with exit code 2.
#[test]
fn policy_merge_migrates_and_takes_an_instance_name() {
    let fixture = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/legacy-sids-key-policy.json"
    );
    let (code, out, err) = cli(&["policy", "merge", "--policy", fixture]);
    assert_eq!(code, 0, "{err}");
    let migrated = PolicyDocument::parse(out.trim()).unwrap();
    assert_eq!(
        migrated.owned_sids(),
        MIGRATED_SIDS
            .iter()
            .map(|s| s.to_string())
            .collect::<Vec<_>>()
    );

    let app_arn = app("b-app");
    let (code, out, err) = cli(&[
        "policy",
        "merge",
        "--policy",
        fixture,
        "--instance-name",
        "cluster-b",
        "--application-arn",
        &app_arn,
        "--operator-role-arn",
        ROLE,
    ]);
    assert_eq!(code, 0, "{err}");
    let merged = PolicyDocument::parse(out.trim()).unwrap();
    let old = legacy_fixture();
    assert_eq!(
        statements(&merged)[..old.statements().len()],
        statements(&old)[..]
    );
    assert!(
        merged
            .owned_sids()
            .contains(&"MsfCmk-cluster-b-OperatorUseKey-msf-cmk-controller".to_string())
    );

    // Nothing to do for another installation: its statements are not there to migrate.
    let (code, _, err) = cli(&[
        "policy",
        "merge",
        "--policy",
        fixture,
        "--instance-name",
        "cluster-b",
    ]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("nothing to do"), "{err}");
    let (code, out, err) = cli(&[
        "policy",
        "merge",
        "--policy",
        fixture,
        "--instance-name",
        "Cluster_B",
    ]);
    assert_eq!((code, out.as_str()), (2, ""), "{err}");
    assert!(err.contains("invalid instance name"), "{err}");
}
