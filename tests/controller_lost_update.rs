//! Lost-update protection on PutKeyPolicy (issue 13, `controller::key_write`): a person's edit
//! made inside the controller's read-modify-write of a shared key policy survives, the
//! controller's own statements end present, and the detection is reported (Warning event
//! `ConcurrentKeyPolicyEdit`, `msf_cmk_concurrent_key_policy_edits_total{stage}`). The edits
//! are made by the emulator's interleave hook (docs/emulator.md) at the exact moment; call
//! counts come from the emulator.

use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use msf_cmk_controller::api::{ApplicationEncryptionSpec, DeletionPolicy, KeyPolicySpec, KeyType};
use msf_cmk_controller::aws::{AwsError, ConnectOptions, KmsApi, connect};
use msf_cmk_controller::controller::context::{Core, Settings};
use msf_cmk_controller::controller::metrics::Metrics;
use msf_cmk_controller::controller::reconcile::{self, Mode, Next, Outcome, Subject};
use msf_cmk_controller::controller::tenancy::Tenancy;
use msf_cmk_controller::domain::ApplicationStatus;
use msf_cmk_controller::domain::ObservedKey;
use msf_cmk_controller::emulator::{Emulator, EmulatorConfig, EmulatorHandle, Fault};
use msf_cmk_controller::planner::Defaults;
use serde_json::{Value, json};

const REGION: &str = "us-east-1";

struct Env {
    emu: EmulatorHandle,
    core: Core,
}

async fn env() -> Env {
    env_with(|kms| kms).await
}

/// The environment with the KMS client wrapped (e.g. to record the order of calls).
async fn env_with(wrap: impl FnOnce(Arc<dyn KmsApi>) -> Arc<dyn KmsApi>) -> Env {
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
        wrap(aws.kms),
        Defaults {
            region: REGION.into(),
            operator_role_arn: Some(format!("arn:aws:iam::{}:role/operator", emu.account_id())),
        },
        Tenancy(None),
        Settings {
            // Every reconcile reads the policy itself; the switch happens in the same pass.
            policy_share_window: Duration::ZERO,
            policy_settle: Duration::ZERO,
            ..Settings::default()
        },
        Arc::new(Metrics::new()),
    );
    Env { emu, core }
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

/// A statement of a person's (not the controller's: no `MsfCmk` Sid, a plain grant).
fn person(sid: &str, action: &str) -> Value {
    json!({"Sid": sid, "Effect": "Allow",
        "Principal": {"AWS": "arn:aws:iam::123456789012:role/DataEngineer"},
        "Action": action, "Resource": "*"})
}

fn statements(policy: &str) -> Vec<Value> {
    let v: Value = serde_json::from_str(policy).unwrap();
    match &v["Statement"] {
        Value::Array(a) => a.clone(),
        other => vec![other.clone()],
    }
}

fn with_statements(policy: &str, extra: &[Value]) -> Value {
    let mut v: Value = serde_json::from_str(policy).unwrap();
    let mut all = statements(policy);
    all.extend(extra.iter().cloned());
    v["Statement"] = Value::Array(all);
    v
}

fn sids(policy: &str) -> Vec<String> {
    statements(policy)
        .iter()
        .filter_map(|s| s["Sid"].as_str().map(str::to_string))
        .collect()
}

impl Env {
    /// An application on the AWS owned key and a key whose policy holds `extra` besides the
    /// default statement; returns the key ARN and its policy.
    fn setup(&self, extra: &[Value]) -> (String, String) {
        self.emu
            .create_application(REGION, "orders", "FLINK-1_20", ApplicationStatus::Running)
            .unwrap();
        let key = self.emu.create_key(REGION, None).unwrap();
        let policy = with_statements(&self.emu.key_policy(&key).unwrap(), extra).to_string();
        self.emu.put_key_policy_direct(&key, &policy).unwrap();
        (key, policy)
    }

    async fn once(&self, spec: &ApplicationEncryptionSpec) -> Outcome {
        let subject = Subject {
            namespace: "ns",
            name: "orders",
            spec,
            generation: Some(1),
            previous: None,
            conflict: None,
            retry_update: None,
        };
        reconcile::reconcile(&self.core, &subject, &[], Mode::Execute, Utc::now()).await
    }

    fn count(&self, op: &str) -> u64 {
        self.emu.call_count(op)
    }

    fn metric(&self, stage: &str) -> Option<String> {
        let prefix = format!("msf_cmk_concurrent_key_policy_edits_total{{stage=\"{stage}\"}} ");
        self.core
            .metrics
            .encode()
            .lines()
            .find_map(|l| l.strip_prefix(&prefix).map(str::to_string))
    }
}

fn warnings(o: &Outcome) -> Vec<&str> {
    o.events
        .iter()
        .filter(|n| n.warning)
        .map(|n| n.reason.as_str())
        .collect()
}

fn owned_sids(policy: &str) -> Vec<String> {
    sids(policy)
        .into_iter()
        .filter(|s| s.starts_with("MsfCmk"))
        .collect()
}

#[tokio::test]
async fn a_persons_edit_between_our_read_and_our_write_is_kept() {
    let e = env().await;
    let (key, before) = e.setup(&[person("PersonA", "kms:Decrypt")]);
    // Just after the controller's first GetKeyPolicy is answered, a person adds a statement:
    // the policy the plan is made from no longer is the policy in KMS.
    let edited = with_statements(&before, &[person("PersonB", "kms:Encrypt")]);
    e.emu
        .set_fault("GetKeyPolicy", Fault::interleave(edited).for_key(&key));

    let o = e.once(&cmk("orders", &key)).await;
    // Policy written and the switch made: MSF is updating.
    assert!(matches!(o.next, Next::Waiting(_)), "{:#?}", o.status);
    let after = e.emu.key_policy(&key).unwrap();
    let s = statements(&after);
    assert!(s.contains(&person("PersonA", "kms:Decrypt")), "{after}");
    assert!(
        s.contains(&person("PersonB", "kms:Encrypt")),
        "the person's edit survives: {after}"
    );
    assert!(!owned_sids(&after).is_empty(), "{after}");
    assert_eq!(warnings(&o), ["ConcurrentKeyPolicyEdit"], "{:#?}", o.events);
    let note = o.events.iter().find(|n| n.warning).unwrap();
    assert!(note.message.contains("added PersonB"), "{}", note.message);
    assert_eq!(e.metric("before_write").as_deref(), Some("1"));
    assert_eq!(e.metric("after_write"), None);
    // One write, made from the person's policy: read (plan), re-read (changed: plan again),
    // re-read (unchanged), PutKeyPolicy, re-read (verified).
    assert_eq!(e.count("PutKeyPolicy"), 1);
    assert_eq!(e.count("GetKeyPolicy"), 4);
    assert_eq!(e.count("UpdateApplication"), 1);
    e.emu.shutdown().await;
}

#[tokio::test]
async fn a_persons_write_just_after_ours_wins_and_ours_is_added_again() {
    let e = env().await;
    let (key, before) = e.setup(&[
        person("PersonA", "kms:Decrypt"),
        person("PersonGone", "kms:ReEncrypt*"),
    ]);
    // A person's tool read the policy before our write and writes just after it: their
    // statement changed, one removed, one added, and (from their old copy) none of ours.
    let mut theirs: Value = serde_json::from_str(&before).unwrap();
    let mut s = statements(&before);
    s.retain(|x| x["Sid"] != "PersonGone");
    for x in &mut s {
        if x["Sid"] == "PersonA" {
            *x = person("PersonA", "kms:DescribeKey");
        }
    }
    s.push(person("PersonB", "kms:Encrypt"));
    theirs["Statement"] = Value::Array(s.clone());
    e.emu.set_fault(
        "PutKeyPolicy",
        Fault::interleave_after(theirs).for_key(&key),
    );

    let o = e.once(&cmk("orders", &key)).await;
    // Policy written and the switch made: MSF is updating.
    assert!(matches!(o.next, Next::Waiting(_)), "{:#?}", o.status);
    let after = e.emu.key_policy(&key).unwrap();
    let now = statements(&after);
    // Their newer edit wins, as they made it: never restored from the older copy.
    for x in &s {
        assert!(now.contains(x), "{x} kept: {after}");
    }
    assert!(!now.contains(&person("PersonA", "kms:Decrypt")), "{after}");
    assert!(!sids(&after).contains(&"PersonGone".to_string()), "{after}");
    // Only the controller's own statements were added again.
    assert_eq!(now.len(), s.len() + owned_sids(&after).len(), "{after}");
    assert!(!owned_sids(&after).is_empty(), "{after}");

    assert_eq!(warnings(&o), ["ConcurrentKeyPolicyEdit"], "{:#?}", o.events);
    let note = o.events.iter().find(|n| n.warning).unwrap();
    for part in ["changed PersonA", "removed PersonGone", "added PersonB"] {
        assert!(note.message.contains(part), "{part}: {}", note.message);
    }
    assert_eq!(e.metric("after_write").as_deref(), Some("1"));
    assert_eq!(e.metric("before_write"), None);
    // Ours, overtaken; ours again on top of theirs. Reads: plan, re-read, verify (theirs:
    // no more waiting), re-read, verify.
    assert_eq!(e.count("PutKeyPolicy"), 2);
    assert_eq!(e.count("GetKeyPolicy"), 5);
    assert_eq!(o.key_policy_writes, 2);
    assert_eq!(e.count("UpdateApplication"), 1);
    e.emu.shutdown().await;
}

#[tokio::test]
async fn no_edit_no_warning_and_one_read_more_than_the_write() {
    let e = env().await;
    let (key, _) = e.setup(&[person("PersonA", "kms:Decrypt")]);
    let o = e.once(&cmk("orders", &key)).await;
    // Policy written and the switch made: MSF is updating.
    assert!(matches!(o.next, Next::Waiting(_)), "{:#?}", o.status);
    assert!(warnings(&o).is_empty(), "{:#?}", o.events);
    assert_eq!(e.metric("before_write"), None);
    assert_eq!(e.metric("after_write"), None);
    // Read (plan), re-read after the permit, PutKeyPolicy, re-read (verified).
    assert_eq!(e.count("PutKeyPolicy"), 1);
    assert_eq!(e.count("GetKeyPolicy"), 3);
    e.emu.shutdown().await;
}

/// Records the order of the KMS policy calls and of the permit.
struct Recording {
    inner: Arc<dyn KmsApi>,
    log: Arc<std::sync::Mutex<Vec<&'static str>>>,
}

#[async_trait::async_trait]
impl KmsApi for Recording {
    async fn describe_key(&self, region: &str, key_id: &str) -> Result<ObservedKey, AwsError> {
        self.inner.describe_key(region, key_id).await
    }

    async fn get_key_policy(&self, region: &str, key_arn: &str) -> Result<String, AwsError> {
        self.log.lock().unwrap().push("GetKeyPolicy");
        self.inner.get_key_policy(region, key_arn).await
    }

    async fn put_key_policy(
        &self,
        region: &str,
        key_arn: &str,
        policy: &str,
    ) -> Result<(), AwsError> {
        self.log.lock().unwrap().push("PutKeyPolicy");
        self.inner.put_key_policy(region, key_arn, policy).await
    }

    async fn reserve_put_key_policy(&self, region: &str, key_arn: &str) {
        self.log.lock().unwrap().push("permit");
        self.inner.reserve_put_key_policy(region, key_arn).await
    }
}

#[tokio::test]
async fn the_permit_is_taken_before_the_read_the_write_is_computed_from() {
    let log: Arc<std::sync::Mutex<Vec<&'static str>>> = Arc::default();
    let l = log.clone();
    let e = env_with(move |inner| Arc::new(Recording { inner, log: l })).await;
    let (key, _) = e.setup(&[]);
    let o = e.once(&cmk("orders", &key)).await;
    assert!(matches!(o.next, Next::Waiting(_)), "{:#?}", o.status);
    // Plan's read; permit; the read the write is made from; the write; its verification.
    assert_eq!(
        *log.lock().unwrap(),
        [
            "GetKeyPolicy",
            "permit",
            "GetKeyPolicy",
            "PutKeyPolicy",
            "GetKeyPolicy"
        ]
    );
    e.emu.shutdown().await;
}

/// The resource as the finalizer sees it, with `removeStatementsOnDelete`.
fn removing(spec: &mut ApplicationEncryptionSpec) -> Subject<'_> {
    spec.key_policy.remove_statements_on_delete = true;
    Subject {
        namespace: "ns",
        name: "orders",
        spec,
        generation: Some(1),
        previous: None,
        conflict: None,
        retry_update: None,
    }
}

impl Env {
    /// `orders` converged on a new key whose policy also holds a person's statement; returns
    /// the key and its policy. Waits (bounded) for the switch's UPDATING to end: the cleanup
    /// waits for a restart of ours in progress.
    async fn converged(&self) -> (String, String) {
        let (key, _) = self.setup(&[person("PersonA", "kms:Decrypt")]);
        let o = self.once(&cmk("orders", &key)).await;
        assert_eq!(o.key_policy_writes, 1, "{:#?}", o.status);
        for _ in 0..200 {
            let app = self.emu.application(REGION, "orders").unwrap();
            if app.status == ApplicationStatus::Running {
                let policy = self.emu.key_policy(&key).unwrap();
                return (key, policy);
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        panic!("orders still UPDATING");
    }
}

fn grants_orders(policy: &str) -> bool {
    policy.contains(":application/orders")
}

/// Issue 13 (d): `removeStatementsOnDelete` writes through the lost-update protection. A
/// person's edit made between the cleanup's read and its write is kept.
#[tokio::test]
async fn the_cleanup_keeps_a_persons_edit_made_between_its_read_and_its_write() {
    use msf_cmk_controller::controller::finalizer;
    let e = env().await;
    let (key, before) = e.converged().await;
    assert!(grants_orders(&before), "{before}");
    let edited = with_statements(&before, &[person("PersonB", "kms:Encrypt")]);
    e.emu
        .set_fault("GetKeyPolicy", Fault::interleave(edited).for_key(&key));
    let (puts, gets) = (e.count("PutKeyPolicy"), e.count("GetKeyPolicy"));

    let mut spec = cmk("orders", &key);
    let notes = finalizer::cleanup(&e.core, &removing(&mut spec))
        .await
        .unwrap();
    let after = e.emu.key_policy(&key).unwrap();
    assert!(!grants_orders(&after), "{after}");
    let s = statements(&after);
    assert!(s.contains(&person("PersonA", "kms:Decrypt")), "{after}");
    assert!(
        s.contains(&person("PersonB", "kms:Encrypt")),
        "the person's edit survives: {after}"
    );
    let reasons: Vec<&str> = notes.iter().map(|n| n.reason.as_str()).collect();
    assert_eq!(
        reasons,
        ["ConcurrentKeyPolicyEdit", "KeyPolicyUpdated"],
        "{notes:?}"
    );
    assert!(notes[0].warning && notes[0].message.contains("added PersonB"));
    assert_eq!(e.metric("before_write").as_deref(), Some("1"));
    // One write, from the person's policy: read (plan), re-read (changed: plan again),
    // re-read (unchanged), PutKeyPolicy, re-read (verified).
    assert_eq!(e.count("PutKeyPolicy"), puts + 1);
    assert_eq!(e.count("GetKeyPolicy"), gets + 4);
    e.emu.shutdown().await;
}

/// Issue 13 (d): a person's write landing just after the cleanup's (their tool read the policy
/// before it, so it still grants `orders`) wins as they made it, and the removal is made again
/// on top of it.
#[tokio::test]
async fn the_cleanup_removes_again_on_top_of_a_persons_write_just_after_its_own() {
    use msf_cmk_controller::controller::finalizer;
    let e = env().await;
    let (key, before) = e.converged().await;
    let theirs = with_statements(&before, &[person("PersonB", "kms:Encrypt")]);
    e.emu.set_fault(
        "PutKeyPolicy",
        Fault::interleave_after(theirs.clone()).for_key(&key),
    );
    let puts = e.count("PutKeyPolicy");

    let mut spec = cmk("orders", &key);
    let notes = finalizer::cleanup(&e.core, &removing(&mut spec))
        .await
        .unwrap();
    let after = e.emu.key_policy(&key).unwrap();
    assert!(!grants_orders(&after), "removed again: {after}");
    let now = statements(&after);
    for x in statements(&theirs.to_string())
        .iter()
        .filter(|x| !x["Sid"].as_str().unwrap_or("").starts_with("MsfCmk"))
    {
        assert!(now.contains(x), "{x} kept: {after}");
    }
    let reasons: Vec<&str> = notes.iter().map(|n| n.reason.as_str()).collect();
    assert_eq!(
        reasons,
        ["ConcurrentKeyPolicyEdit", "KeyPolicyUpdated"],
        "{notes:?}"
    );
    assert_eq!(e.metric("after_write").as_deref(), Some("1"));
    assert_eq!(e.count("PutKeyPolicy"), puts + 2);
    e.emu.shutdown().await;
}
