//! The "person" of the soak: edits a few key policies through the KMS API directly (its own
//! access key, so the call log tells it apart), adding and removing statements of its own
//! every few seconds, and remembers what it last wrote. The soak's invariant: at the end each
//! of these keys holds exactly the person's last statements (none lost, changed or revived).

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use aws_credential_types::Credentials;
use aws_sdk_kms as kms;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::{Value, json};

pub const ACCESS_KEY: &str = "AKIDSOAKPERSON";
/// The Sid prefix of the person's statements.
pub const SID_PREFIX: &str = "SoakPerson";

/// Key ARN -> the person's statements as last written (successfully).
pub type Written = Arc<Mutex<BTreeMap<String, Vec<Value>>>>;

pub struct Person {
    pub written: Written,
    pub edits: Arc<Mutex<u64>>,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

fn client(endpoint: &str) -> kms::Client {
    let conf = kms::config::Builder::new()
        .behavior_version(aws_config::BehaviorVersion::latest())
        .region(aws_config::Region::new("us-east-1"))
        .endpoint_url(endpoint)
        .credentials_provider(Credentials::new(ACCESS_KEY, "secret", None, None, "soak"))
        // A person's CLI retries throttling too.
        .retry_config(aws_smithy_types::retry::RetryConfig::standard().with_max_attempts(6))
        .build();
    kms::Client::from_conf(conf)
}

/// One statement of the person's: a grant to a role of theirs.
fn statement(n: u32) -> Value {
    json!({"Sid": format!("{SID_PREFIX}{n}"), "Effect": "Allow",
        "Principal": {"AWS": "arn:aws:iam::111122223333:role/DataEngineer"},
        "Action": ["kms:Decrypt", "kms:DescribeKey"], "Resource": "*"})
}

pub fn is_persons(s: &Value) -> bool {
    s["Sid"]
        .as_str()
        .is_some_and(|sid| sid.starts_with(SID_PREFIX))
}

pub fn statements(policy: &str) -> Vec<Value> {
    let v: Value = serde_json::from_str(policy).unwrap_or(Value::Null);
    match &v["Statement"] {
        Value::Array(a) => a.clone(),
        Value::Null => vec![],
        other => vec![other.clone()],
    }
}

impl Person {
    /// Starts editing `keys` every `period` (jittered) until [`Person::stop`].
    pub fn start(endpoint: String, keys: Vec<String>, period: Duration, seed: u64) -> Person {
        let written: Written = Arc::default();
        let edits = Arc::new(Mutex::new(0u64));
        let stop = Arc::new(AtomicBool::new(false));
        let (w, e, s) = (written.clone(), edits.clone(), stop.clone());
        let thread = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime");
            rt.block_on(run(endpoint, keys, period, seed, w, e, s));
        });
        Person {
            written,
            edits,
            stop,
            thread: Some(thread),
        }
    }

    pub fn stop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for Person {
    fn drop(&mut self) {
        self.stop();
    }
}

async fn run(
    endpoint: String,
    keys: Vec<String>,
    period: Duration,
    seed: u64,
    written: Written,
    edits: Arc<Mutex<u64>>,
    stop: Arc<AtomicBool>,
) {
    let c = client(&endpoint);
    let mut rng = StdRng::seed_from_u64(seed);
    let mut next_sid = 0u32;
    // The person's own view of their statements per key (they know what they wrote).
    let mut mine: BTreeMap<String, Vec<Value>> = BTreeMap::new();
    while !stop.load(Ordering::SeqCst) {
        let jitter = rng.random_range(0.5..1.5);
        tokio::time::sleep(period.mul_f64(jitter)).await;
        let key = &keys[rng.random_range(0..keys.len())];
        let Ok(out) = c
            .get_key_policy()
            .key_id(key)
            .policy_name("default")
            .send()
            .await
        else {
            continue;
        };
        let Some(text) = out.policy() else { continue };
        let want = mine.entry(key.clone()).or_default();
        let mut next = want.clone();
        if next.is_empty() || (next.len() < 3 && rng.random_bool(0.6)) {
            next_sid += 1;
            next.push(statement(next_sid));
        } else {
            let i = rng.random_range(0..next.len());
            next.remove(i);
        }
        // Everything else as read, the person's statements as they want them.
        let mut all: Vec<Value> = statements(text)
            .into_iter()
            .filter(|s| !is_persons(s))
            .collect();
        all.extend(next.iter().cloned());
        let mut doc: Value = serde_json::from_str(text).unwrap_or_else(|_| json!({}));
        doc["Statement"] = Value::Array(all);
        let put = c
            .put_key_policy()
            .key_id(key)
            .policy_name("default")
            .policy(doc.to_string())
            .send()
            .await;
        if put.is_ok() {
            *want = next.clone();
            written
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .insert(key.clone(), next);
            *edits.lock().unwrap_or_else(|e| e.into_inner()) += 1;
        }
    }
}
