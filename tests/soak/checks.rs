//! The soak's invariants, from the emulator's call log and final state (pure: data in,
//! violations out), never from the controller's own report.

use std::collections::{BTreeMap, BTreeSet};

use msf_cmk_controller::emulator::CallRecord;
use msf_cmk_controller::policy::PolicyDocument;
use serde_json::Value;

use crate::person;

/// One sample of the Lease: who held it, observed by a read that ended at `at_ms`.
#[derive(Clone, Debug)]
pub struct LeaseSample {
    pub at_ms: u64,
    pub holder: Option<String>,
}

/// AWS writes (answered `ok`) by a replica while it did not hold the Lease: the Lease reads
/// just before and just after the request (at most `max_gap_ms` apart, else the write cannot
/// be judged and is counted in the second list) both show another holder. A holder cannot
/// change twice within the gap (a Lease is taken over only once it expired).
pub fn writes_after_lease_lost(
    calls: &[CallRecord],
    samples: &[LeaseSample],
    identity_of_key: &BTreeMap<String, String>,
    max_gap_ms: u64,
) -> (Vec<String>, Vec<String>) {
    let (mut bad, mut unjudged) = (Vec::new(), Vec::new());
    for c in calls.iter().filter(|c| is_write(c) && c.outcome == "ok") {
        let Some(who) = identity_of_key.get(&c.access_key_id) else {
            continue;
        };
        let before = samples.iter().rev().find(|s| s.at_ms < c.time_ms);
        let after = samples.iter().find(|s| s.at_ms > c.time_ms);
        let what = format!("{} by {who} at {} ms", c.operation, c.time_ms);
        match (before, after) {
            (Some(b), Some(a)) if a.at_ms - b.at_ms <= max_gap_ms => {
                let other = |s: &LeaseSample| s.holder.as_ref().is_some_and(|h| h != who);
                if other(b) && other(a) {
                    bad.push(format!(
                        "{what}: the Lease was held by {:?} at {} ms and {:?} at {} ms",
                        b.holder, b.at_ms, a.holder, a.at_ms
                    ));
                }
            }
            _ => unjudged.push(what),
        }
    }
    (bad, unjudged)
}

pub fn is_write(c: &CallRecord) -> bool {
    matches!(c.operation.as_str(), "PutKeyPolicy" | "UpdateApplication")
}

/// Successful UpdateApplication calls per application, by the controller's replicas.
pub fn updates_per_application(
    calls: &[CallRecord],
    replica_keys: &BTreeSet<String>,
) -> BTreeMap<String, u64> {
    let mut out = BTreeMap::new();
    for c in calls.iter().filter(|c| {
        c.operation == "UpdateApplication"
            && c.outcome == "ok"
            && replica_keys.contains(&c.access_key_id)
    }) {
        *out.entry(c.target.clone().unwrap_or_default()).or_insert(0) += 1;
    }
    out
}

/// PutKeyPolicy calls of the controller KMS refused as a lock-out (or a malformed policy).
pub fn refused_policy_writes(calls: &[CallRecord], replica_keys: &BTreeSet<String>) -> Vec<String> {
    calls
        .iter()
        .filter(|c| {
            c.operation == "PutKeyPolicy"
                && replica_keys.contains(&c.access_key_id)
                && c.outcome == "MalformedPolicyDocumentException"
        })
        .map(|c| format!("PutKeyPolicy on {:?} at {} ms", c.target, c.time_ms))
        .collect()
}

/// The person's statements of a key that are not exactly as the person last wrote them.
pub fn person_statement_problems(policy: &str, expected: &[Value]) -> Vec<String> {
    let now: Vec<Value> = person::statements(policy)
        .into_iter()
        .filter(person::is_persons)
        .collect();
    let mut out = Vec::new();
    for e in expected {
        if !now.contains(e) {
            out.push(format!("lost or changed: {e}"));
        }
    }
    for n in &now {
        if !expected.contains(n) {
            out.push(format!("revived or unknown: {n}"));
        }
    }
    out
}

/// The application names the controller's own statements of a policy grant.
pub fn owned_applications(policy: &str) -> BTreeSet<String> {
    let Ok(doc) = PolicyDocument::parse(policy) else {
        return BTreeSet::new();
    };
    let mut out = BTreeSet::new();
    for s in doc.statements().iter().filter(|s| s.is_owned()) {
        let text = Value::Object(s.raw().clone()).to_string();
        let mut rest = text.as_str();
        while let Some(i) = rest.find(":application/") {
            rest = &rest[i + ":application/".len()..];
            let name: String = rest
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '-' || *c == '_')
                .collect();
            out.insert(name);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn call(op: &str, key: &str, t: u64, outcome: &str) -> CallRecord {
        serde_json::from_value(serde_json::json!({"seq": t, "time_ms": t, "answered_ms": t,
            "operation": op, "region": "us-east-1", "account": "111122223333",
            "access_key_id": key, "caller_arn": "", "target": "app", "outcome": outcome}))
        .unwrap()
    }

    #[test]
    fn a_write_after_another_holder_was_seen_is_flagged() {
        let ids: BTreeMap<String, String> = [("KA".to_string(), "a".to_string())].into();
        let samples = vec![
            LeaseSample {
                at_ms: 100,
                holder: Some("a".into()),
            },
            LeaseSample {
                at_ms: 200,
                holder: Some("b".into()),
            },
        ];
        let calls = vec![
            call("PutKeyPolicy", "KA", 150, "ok"),
            call("PutKeyPolicy", "KA", 250, "ok"),
            call("UpdateApplication", "KA", 260, "ThrottlingException"),
            call("GetKeyPolicy", "KA", 270, "ok"),
        ];
        let samples = [
            samples,
            vec![LeaseSample {
                at_ms: 300,
                holder: Some("b".into()),
            }],
        ]
        .concat();
        let (bad, unjudged) = writes_after_lease_lost(&calls, &samples, &ids, 1000);
        assert_eq!(bad.len(), 1, "{bad:?}");
        assert!(bad[0].contains("at 250 ms"), "{bad:?}");
        assert!(unjudged.is_empty());
        // Too far apart to judge.
        let (bad, unjudged) = writes_after_lease_lost(&calls, &samples, &ids, 50);
        assert!(bad.is_empty());
        assert_eq!(unjudged.len(), 2);
    }

    #[test]
    fn person_statements_compare_exactly() {
        let s = |sid: &str, a: &str| serde_json::json!({"Sid": sid, "Action": a});
        let policy =
            serde_json::json!({"Statement": [s("SoakPerson1", "x"), s("Other", "y")]}).to_string();
        assert!(person_statement_problems(&policy, &[s("SoakPerson1", "x")]).is_empty());
        assert_eq!(
            person_statement_problems(&policy, &[s("SoakPerson1", "z")]).len(),
            2
        );
        assert_eq!(person_statement_problems(&policy, &[]).len(), 1);
    }
}
