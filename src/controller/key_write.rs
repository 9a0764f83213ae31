//! Lost-update protection for PutKeyPolicy.
//!
//! KMS has no ETag or conditional write on key policies: a write replaces the whole policy,
//! so a person's edit made between our read and our write would be silently undone. Within
//! one process the key's lock ([`KeyGuard`]) serialises our own writers; against everyone else
//! the controller narrows the window and checks what slipped through:
//!
//! 1. The pacing permit of the write is taken first ([`crate::aws::KmsApi::reserve_put_key_policy`]),
//!    so no rate-limiter wait sits between the read and the write.
//! 2. The policy is re-read right before PutKeyPolicy. If it is not the one the plan was made
//!    from, the write is not made: the caller plans again from this read (someone's newer edit
//!    is then part of the base, never undone).
//! 3. After the write the policy is re-read. If it is neither ours nor the base (someone wrote
//!    after us, e.g. a person whose tool read the policy before our write), the statements the
//!    controller does not own are compared with the base. Whatever the other writer did wins:
//!    the caller plans again from *this* read, which re-adds only the controller's own
//!    statements, and writes again after a backoff (bounded: [`MAX_OVERTAKEN`]).
//!
//! Both detections emit a Warning event `ConcurrentKeyPolicyEdit` and count
//! `msf_cmk_concurrent_key_policy_edits_total{stage}`. What cannot be detected: a write that
//! lands between the re-read of step 2 and our PutKeyPolicy (one round trip) is overwritten,
//! and no KMS read can show it afterwards.

use std::time::Duration;

use serde_json::Value;

use crate::aws::AwsError;
use crate::controller::apply;
use crate::controller::context::Core;
use crate::controller::key_locks::KeyGuard;
use crate::controller::observe;
use crate::controller::reconcile::Note;
use crate::domain::Observed;
use crate::policy::Statement;

/// Event reason of both detections.
pub const REASON: &str = "ConcurrentKeyPolicyEdit";

/// How many times one reconcile writes again after another writer overtook its write; then it
/// gives up with `ConcurrentKeyPolicyEdit` (a conflict: retried with backoff).
pub const MAX_OVERTAKEN: u32 = 2;

/// The pause before writing again after being overtaken: 250 ms, 500 ms, ... (someone is
/// editing right now; give them a moment rather than race them).
pub fn overtaken_backoff(times: u32) -> Duration {
    Duration::from_millis(250u64 << times.min(4))
}

/// What became of one write attempt.
#[derive(Debug)]
pub enum Attempt {
    /// The policy is not the one the plan was made from: nothing written; plan again from
    /// `policy`. `concurrent`: it changed since this reconcile's own read (an edit inside our
    /// read-modify-write), not merely since a shared read of another reconcile.
    Replan {
        policy: Observed<String>,
        concurrent: Option<Note>,
    },
    /// Written; `reread` is what KMS answered after (it may not show the write yet: eventual
    /// consistency; the caller's re-plan then reports `KeyPolicyNotVerified`).
    Written {
        reread: Observed<String>,
    },
    /// Written, then another writer's policy was read back: plan again from `reread` (theirs
    /// wins) and write again after [`overtaken_backoff`].
    Overtaken {
        reread: Observed<String>,
        note: Note,
    },
    Failed(AwsError),
}

/// One guarded write of `policy`, planned from `planned_from` (`fresh`: read by this
/// reconcile, not shared).
pub async fn write(
    core: &Core,
    guard: &KeyGuard,
    region: &str,
    planned_from: &Observed<String>,
    fresh: bool,
    policy: &str,
) -> Attempt {
    let key_arn = &guard.key_arn;
    core.kms.reserve_put_key_policy(region, key_arn).await;
    let (base, _) = observe::fresh_key_policy(core, guard, region).await;
    if !same_observation(&base, planned_from) {
        let concurrent = match (planned_from, &base) {
            (Observed::Found(before), Observed::Found(now)) if fresh => {
                core.metrics.concurrent_key_policy_edit("before_write");
                Some(note(
                    key_arn,
                    &others_changes(before, now),
                    "between this reconcile's read and its write; the write was planned again from the new policy, so that edit is kept",
                ))
            }
            _ => None,
        };
        return Attempt::Replan {
            policy: base,
            concurrent,
        };
    }
    let Observed::Found(base_text) = &base else {
        // Equal to the plan's observation yet not found: the plan has no write to make.
        return Attempt::Replan {
            policy: base,
            concurrent: None,
        };
    };
    let reread = match apply::put_key_policy(core, guard, region, policy, base_text).await {
        Ok(r) => r,
        Err(e) => return Attempt::Failed(e),
    };
    match &reread {
        Observed::Found(after) if !same_policy(after, policy) && !same_policy(after, base_text) => {
            core.metrics.concurrent_key_policy_edit("after_write");
            let note = note(
                key_arn,
                &others_changes(base_text, after),
                "just after this reconcile's PutKeyPolicy; the newer policy is kept and only the controller's own statements are added to it again",
            );
            Attempt::Overtaken { reread, note }
        }
        _ => Attempt::Written { reread },
    }
}

fn same_observation(a: &Observed<String>, b: &Observed<String>) -> bool {
    match (a, b) {
        (Observed::Found(x), Observed::Found(y)) => same_policy(x, y),
        _ => a == b,
    }
}

/// Whether two policy texts are the same document (compared as JSON: whitespace may differ).
pub fn same_policy(a: &str, b: &str) -> bool {
    match (
        serde_json::from_str::<Value>(a),
        serde_json::from_str::<Value>(b),
    ) {
        (Ok(x), Ok(y)) => x == y,
        _ => a == b,
    }
}

/// How the statements the controller does not own differ between two policies (pure).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct OthersChanges {
    /// In both, with the same Sid, but not the same statement.
    pub changed: Vec<String>,
    /// Only in the first.
    pub removed: Vec<String>,
    /// Only in the second.
    pub added: Vec<String>,
}

impl OthersChanges {
    pub fn is_empty(&self) -> bool {
        self.changed.is_empty() && self.removed.is_empty() && self.added.is_empty()
    }
}

/// The statements the controller does not own; `None` when the text is not a policy the
/// controller can parse.
pub fn others_statements(text: &str) -> Option<Vec<Statement>> {
    let doc = crate::policy::parse_shared(text).ok()?;
    Some(
        doc.statements()
            .iter()
            .filter(|s| !s.is_owned())
            .cloned()
            .collect(),
    )
}

/// Compares the statements the controller does not own in `before` and `after`, as multisets
/// (order is not meaning). Statements are named by Sid, else by their position.
pub fn others_changes(before: &str, after: &str) -> OthersChanges {
    let (Some(b), Some(a)) = (others_statements(before), others_statements(after)) else {
        // Not parseable: say the document changed, without detail.
        return OthersChanges {
            changed: vec!["(policy document)".into()],
            ..OthersChanges::default()
        };
    };
    let mut unmatched_after: Vec<Option<&Statement>> = a.iter().map(Some).collect();
    let mut gone: Vec<(usize, &Statement)> = Vec::new();
    for (i, s) in b.iter().enumerate() {
        match unmatched_after.iter().position(|x| *x == Some(s)) {
            Some(j) => unmatched_after[j] = None,
            None => gone.push((i, s)),
        }
    }
    let appeared: Vec<(usize, &Statement)> = unmatched_after
        .iter()
        .enumerate()
        .filter_map(|(i, x)| x.map(|s| (i, s)))
        .collect();
    let sid = |s: &Statement| s.sid().map(str::to_string);
    let mut out = OthersChanges::default();
    for (i, s) in &gone {
        let name = sid(s);
        if name.is_some() && appeared.iter().any(|(_, t)| sid(t) == name) {
            out.changed.extend(name);
        } else {
            out.removed.push(name.unwrap_or_else(|| format!("#{i}")));
        }
    }
    for (i, s) in &appeared {
        let name = sid(s);
        if name.is_none()
            || !out
                .changed
                .contains(name.as_ref().unwrap_or(&String::new()))
        {
            out.added.push(name.unwrap_or_else(|| format!("#{i}")));
        }
    }
    out
}

fn note(key_arn: &str, changes: &OthersChanges, when: &str) -> Note {
    let what = if changes.is_empty() {
        "another writer changed the controller's own statements".to_string()
    } else {
        let part = |label: &str, items: &[String]| {
            (!items.is_empty()).then(|| format!("{label} {}", items.join(", ")))
        };
        let parts: Vec<String> = [
            part("changed", &changes.changed),
            part("removed", &changes.removed),
            part("added", &changes.added),
        ]
        .into_iter()
        .flatten()
        .collect();
        format!(
            "statements the controller does not own were edited ({})",
            parts.join("; ")
        )
    };
    Note {
        warning: true,
        reason: REASON.into(),
        action: "PutKeyPolicy".into(),
        message: format!("The policy of {key_arn} was changed by another writer {when}: {what}."),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(statements: &[Value]) -> String {
        serde_json::json!({"Version": "2012-10-17", "Statement": statements}).to_string()
    }

    fn person(sid: &str, action: &str) -> Value {
        serde_json::json!({"Sid": sid, "Effect": "Allow",
            "Principal": {"AWS": "arn:aws:iam::111122223333:role/Person"},
            "Action": action, "Resource": "*"})
    }

    #[test]
    fn others_changes_by_sid_and_position() {
        let root = serde_json::json!({"Effect": "Allow",
            "Principal": {"AWS": "arn:aws:iam::111122223333:root"}, "Action": "kms:*", "Resource": "*"});
        let before = policy(&[
            root.clone(),
            person("A", "kms:Decrypt"),
            person("B", "kms:Encrypt"),
        ]);
        assert!(others_changes(&before, &before).is_empty());
        // Order is not meaning.
        let reordered = policy(&[
            person("B", "kms:Encrypt"),
            root.clone(),
            person("A", "kms:Decrypt"),
        ]);
        assert!(others_changes(&before, &reordered).is_empty());
        let after = policy(&[person("A", "kms:Encrypt"), person("C", "kms:Decrypt")]);
        assert_eq!(
            others_changes(&before, &after),
            OthersChanges {
                changed: vec!["A".into()],
                removed: vec!["#0".into(), "B".into()],
                added: vec!["C".into()],
            }
        );
        assert_eq!(
            others_changes("not json", &before).changed,
            vec!["(policy document)".to_string()]
        );
    }

    #[test]
    fn policies_compare_as_json() {
        assert!(same_policy(r#"{"a": 1}"#, r#"{ "a":1 }"#));
        assert!(!same_policy(r#"{"a": 1}"#, r#"{"a": 2}"#));
        assert!(same_policy("x", "x"));
    }

    #[test]
    fn backoff_grows_and_is_bounded() {
        assert_eq!(overtaken_backoff(0), Duration::from_millis(250));
        assert_eq!(overtaken_backoff(1), Duration::from_millis(500));
        assert_eq!(overtaken_backoff(40), Duration::from_millis(4000));
    }
}
