//! The soak's invariants, from the emulator's call log and final state (pure: data in,
//! violations out), never from the controller's own report.

use std::collections::{BTreeMap, BTreeSet};

use msf_cmk_controller::emulator::CallRecord;
use msf_cmk_controller::policy::PolicyDocument;
use serde_json::Value;

use crate::person;

/// One sample of the Lease, observed by a read that ended at `at_ms`: its holder, when that
/// holder acquired it (`spec.acquireTime`) and `spec.leaseTransitions`.
#[derive(Clone, Debug)]
pub struct LeaseSample {
    pub at_ms: u64,
    pub holder: Option<String>,
    pub acquired_ms: Option<u64>,
    pub transitions: Option<u64>,
}

/// One holder's time with the Lease: from its acquisition to the next holder's.
#[derive(Clone, Debug, PartialEq)]
pub struct Tenure {
    pub holder: String,
    pub from_ms: u64,
    /// The highest `leaseTransitions` seen with it (the counter is bumped by a second patch
    /// just after the acquisition).
    pub transitions: u64,
}

/// The Lease's holders in order, from the samples: each distinct (holder, acquireTime) is one
/// tenure. A holder needs to be sampled once only (its acquireTime says when it began), so
/// sparse reads (an API server restart, a slow kubectl) lose nothing unless a whole tenure
/// falls between two reads: then `leaseTransitions` jumps by more than one (see
/// [`writes_outside_tenure`]).
pub fn tenures(samples: &[LeaseSample]) -> Vec<Tenure> {
    let mut by_start: BTreeMap<(u64, String), u64> = BTreeMap::new();
    for s in samples {
        if let (Some(h), Some(from)) = (&s.holder, s.acquired_ms) {
            let t = by_start.entry((from, h.clone())).or_default();
            *t = (*t).max(s.transitions.unwrap_or(0));
        }
    }
    by_start
        .into_iter()
        .map(|((from_ms, holder), transitions)| Tenure {
            holder,
            from_ms,
            transitions,
        })
        .collect()
}

/// AWS writes (answered `ok`) by a replica outside its own tenures of the Lease: at the time
/// the emulator received the request, the latest acquisition before it was another
/// replica's (or none was). A replica that lost the Lease must have stopped writing before
/// anyone else could acquire it (the fence closes before the Lease expires). Writes that
/// fall after a tenure followed by a gap (`leaseTransitions` jumped by more than one: a
/// holder was never sampled) cannot be judged and are returned second.
pub fn writes_outside_tenure(
    calls: &[CallRecord],
    tenures: &[Tenure],
    identity_of_key: &BTreeMap<String, String>,
) -> (Vec<String>, Vec<String>) {
    let (mut bad, mut unjudged) = (Vec::new(), Vec::new());
    for c in calls.iter().filter(|c| is_write(c) && c.outcome == "ok") {
        let Some(who) = identity_of_key.get(&c.access_key_id) else {
            continue;
        };
        let what = format!(
            "{} of {:?} by {who} at {} ms",
            c.operation, c.target, c.time_ms
        );
        let i = tenures.iter().rposition(|t| t.from_ms <= c.time_ms);
        let Some(i) = i else {
            // Before the first acquisition seen: judged only if none came before it.
            match tenures.first() {
                Some(first) if first.transitions <= 1 => {
                    bad.push(format!("{what}: before anyone held the Lease"))
                }
                _ => unjudged.push(what),
            }
            continue;
        };
        let gap_after = tenures
            .get(i + 1)
            .is_some_and(|next| next.transitions > tenures[i].transitions + 1);
        if gap_after {
            unjudged.push(what);
        } else if tenures[i].holder != *who {
            bad.push(format!(
                "{what}: the Lease was {}'s since {} ms",
                tenures[i].holder, tenures[i].from_ms
            ));
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

    fn sample(at_ms: u64, holder: &str, acquired_ms: u64, transitions: u64) -> LeaseSample {
        LeaseSample {
            at_ms,
            holder: Some(holder.into()),
            acquired_ms: Some(acquired_ms),
            transitions: Some(transitions),
        }
    }

    #[test]
    fn writes_are_judged_against_the_tenures_of_the_lease() {
        let ids: BTreeMap<String, String> = [
            ("KA".to_string(), "a".to_string()),
            ("KB".to_string(), "b".to_string()),
        ]
        .into();
        // a from 100 (sampled once, long after), b from 1000 (its counter bump seen later).
        let samples = vec![
            sample(900, "a", 100, 1),
            sample(1100, "b", 1000, 1),
            sample(1200, "b", 1000, 2),
        ];
        let t = tenures(&samples);
        assert_eq!(t.len(), 2);
        assert_eq!((t[1].holder.as_str(), t[1].transitions), ("b", 2));
        let calls = vec![
            call("PutKeyPolicy", "KA", 150, "ok"),
            call("PutKeyPolicy", "KA", 999, "ok"),
            // a after b acquired: the violation.
            call("UpdateApplication", "KA", 1001, "ok"),
            call("UpdateApplication", "KB", 1001, "ok"),
            // b before it acquired; refused and read calls are not writes.
            call("PutKeyPolicy", "KB", 500, "ok"),
            call("PutKeyPolicy", "KA", 2000, "ThrottlingException"),
            call("GetKeyPolicy", "KA", 2000, "ok"),
            // Before any acquisition.
            call("PutKeyPolicy", "KA", 50, "ok"),
        ];
        let (bad, unjudged) = writes_outside_tenure(&calls, &t, &ids);
        assert_eq!(bad.len(), 3, "{bad:?}");
        assert!(bad[0].contains("by a at 1001 ms") && bad[0].contains("b's since 1000"));
        assert!(bad[1].contains("by b at 500 ms"));
        assert!(bad[2].contains("before anyone held"));
        assert!(unjudged.is_empty());
        // A tenure never sampled (transitions 2 -> 4): writes after b's start are unjudged.
        let mut samples = samples;
        samples.push(sample(5000, "a", 4000, 4));
        let t = tenures(&samples);
        let late = vec![call("PutKeyPolicy", "KB", 3000, "ok")];
        let (bad, unjudged) = writes_outside_tenure(&late, &t, &ids);
        assert!(bad.is_empty(), "{bad:?}");
        assert_eq!(unjudged.len(), 1);
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
