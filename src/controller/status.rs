//! Builds the `status` of an `ApplicationEncryption`. PURE: no I/O, no clock (`now` is an input).
//!
//! Rules (Kubernetes API conventions): every condition carries the generation it was computed
//! for, and its `lastTransitionTime` moves only when its `status` flips, so that a user can tell
//! since when something has been broken. The status as a whole carries `observedGeneration` and
//! `lastSyncTime`.
//!
//! Besides the four evaluated conditions, every status carries kstatus' `Reconciling` and
//! `Stalled` (derived from where the reconcile left the resource, [`Progress`]) so that Flux,
//! `kubectl wait` and Argo CD read the resource's health without custom code.

use chrono::{DateTime, SecondsFormat, Utc};

use crate::api::{
    ApplicationEncryptionStatus, ApplicationObservation, Condition, KeyPolicyObservation, KeyType,
    condition_types,
};
use crate::domain::{AppliedKeyType, ObservedApplication, ObservedKey};
use crate::planner::{ConditionReport, ConditionStatus};

/// The four condition types, in the order they are written.
pub const CONDITION_TYPES: [&str; 4] = [
    condition_types::READY,
    condition_types::KEY_USABLE,
    condition_types::KEY_POLICY_COMPLIANT,
    condition_types::ENCRYPTION_APPLIED,
];

/// The kstatus conditions, written after [`CONDITION_TYPES`].
pub const KSTATUS_TYPES: [&str; 2] = [condition_types::RECONCILING, condition_types::STALLED];

/// Where a reconcile left the resource, in kstatus terms.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Progress {
    /// Nothing in flight and nothing blocked (converged, or steady without a write to make).
    Current,
    /// Work in flight: a write made or pending, AWS catching up, a transient error backing off.
    InProgress,
    /// Blocked or refused: only a person (a spec or AWS change) can move it on.
    Stalled,
}

/// What the status is built from: only things that were actually observed or concluded.
#[derive(Clone, Debug)]
pub struct StatusInput<'a> {
    pub previous: Option<&'a ApplicationEncryptionStatus>,
    pub generation: Option<i64>,
    pub conditions: &'a [ConditionReport],
    /// The application as last observed (after any change this reconcile made).
    pub application: Option<&'a ObservedApplication>,
    /// The key the application uses, resolved (None for the AWS owned key or when unknown).
    pub current_key: Option<&'a ObservedKey>,
    pub key_policy: Option<&'a KeyPolicyObservation>,
    /// Drives the `Reconciling` and `Stalled` conditions.
    pub progress: Progress,
    pub now: DateTime<Utc>,
}

pub fn rfc3339(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Secs, true)
}

/// Builds the whole status.
pub fn build(input: &StatusInput<'_>) -> ApplicationEncryptionStatus {
    let StatusInput {
        previous,
        generation,
        conditions,
        application,
        current_key,
        key_policy,
        progress,
        now,
    } = input;
    ApplicationEncryptionStatus {
        observed_generation: *generation,
        conditions: build_conditions(
            previous
                .map(|p| p.conditions.as_slice())
                .unwrap_or_default(),
            &with_kstatus(conditions, *progress),
            *generation,
            *now,
        ),
        application: application.map(|a| observation(a, *current_key)),
        key_policy: key_policy.cloned(),
        last_sync_time: Some(rfc3339(*now)),
        // Records of past writes are carried over; the reconcile replaces them when it writes
        // or learns how an update ended.
        last_update: previous.and_then(|p| p.last_update.clone()),
        last_key_policy_write: previous.and_then(|p| p.last_key_policy_write.clone()),
    }
}

/// The conditions, keeping `lastTransitionTime` of any condition whose status did not flip.
/// Conditions are written in a fixed order (Ready first) whatever order the reports come in.
pub fn build_conditions(
    previous: &[Condition],
    reports: &[ConditionReport],
    generation: Option<i64>,
    now: DateTime<Utc>,
) -> Vec<Condition> {
    let mut out: Vec<Condition> = Vec::with_capacity(reports.len());
    let order = |t: &str| {
        CONDITION_TYPES
            .iter()
            .chain(KSTATUS_TYPES.iter())
            .position(|c| *c == t)
            .unwrap_or(usize::MAX)
    };
    let mut sorted: Vec<&ConditionReport> = reports.iter().collect();
    sorted.sort_by_key(|r| order(r.type_));
    for report in sorted {
        if out.iter().any(|c| c.type_ == report.type_) {
            continue; // a duplicate type would break the list-map; the first one wins
        }
        let status = report.status.as_str();
        let last_transition_time = previous
            .iter()
            .find(|p| p.type_ == report.type_ && p.status == status)
            .map(|p| p.last_transition_time.clone())
            .unwrap_or_else(|| rfc3339(now).into());
        out.push(Condition {
            type_: report.type_.into(),
            status: status.into(),
            reason: report.reason.as_str().into(),
            message: report.message.as_str().into(),
            last_transition_time,
            observed_generation: generation,
        });
    }
    out
}

/// The reports plus `Reconciling` and `Stalled`. Both carry Ready's reason and message: the
/// one place a person looks to learn what is in flight or what blocks the resource.
pub fn with_kstatus(reports: &[ConditionReport], progress: Progress) -> Vec<ConditionReport> {
    let (reason, message) = reports
        .iter()
        .find(|r| r.type_ == condition_types::READY)
        .map(|r| (r.reason.clone(), r.message.clone()))
        // Every path reports Ready; this only keeps the kstatus pair well-formed regardless.
        .unwrap_or_else(|| ("Unknown".to_string(), String::new()));
    let flag = |on: bool| {
        if on {
            ConditionStatus::True
        } else {
            ConditionStatus::False
        }
    };
    let mut out: Vec<ConditionReport> = reports
        .iter()
        .filter(|r| !KSTATUS_TYPES.contains(&r.type_))
        .cloned()
        .collect();
    for (type_, on) in [
        (
            condition_types::RECONCILING,
            progress == Progress::InProgress,
        ),
        (condition_types::STALLED, progress == Progress::Stalled),
    ] {
        out.push(ConditionReport {
            type_,
            status: flag(on),
            reason: reason.clone(),
            message: message.clone(),
        });
    }
    out
}

fn observation(app: &ObservedApplication, key: Option<&ObservedKey>) -> ApplicationObservation {
    let key_type = match app.encryption.key_type {
        AppliedKeyType::AwsOwnedKey => KeyType::AwsOwnedKey,
        AppliedKeyType::CustomerManagedKey => KeyType::CustomerManagedKey,
    };
    let key_arn = match app.encryption.key_type {
        AppliedKeyType::CustomerManagedKey => key
            .map(|k| k.arn.clone())
            // Unresolved (e.g. the key cannot be described): report what MSF reports.
            .or_else(|| app.encryption.key_id.clone()),
        AppliedKeyType::AwsOwnedKey => None,
    };
    ApplicationObservation {
        arn: Some(app.arn.clone()),
        version_id: Some(app.version_id),
        status: Some(app.status.as_wire().to_string()),
        key_type: Some(key_type),
        key_arn,
    }
}

/// The Ready condition of a status, if any.
pub fn ready(status: &ApplicationEncryptionStatus) -> Option<&Condition> {
    status
        .conditions
        .iter()
        .find(|c| c.type_ == condition_types::READY)
}

/// Same conditions for a resource the controller refuses to act on (tenancy guard, conflict):
/// Ready=False with `reason`, the other three Unknown because nothing was evaluated.
pub fn refused(reason: &str, message: &str) -> Vec<ConditionReport> {
    CONDITION_TYPES
        .iter()
        .map(|t| {
            if *t == condition_types::READY {
                ConditionReport {
                    type_: t,
                    status: ConditionStatus::False,
                    reason: reason.to_string(),
                    message: message.to_string(),
                }
            } else {
                ConditionReport {
                    type_: t,
                    status: ConditionStatus::Unknown,
                    reason: reason.to_string(),
                    message: "Not evaluated: the controller does not act on this resource."
                        .to_string(),
                }
            }
        })
        .collect()
}

/// Replaces the Ready condition (keeping the others) after a step failed, so the status says
/// what went wrong in this reconcile rather than what the plan expected before the call.
pub fn with_failed_ready(
    reports: &[ConditionReport],
    reason: &str,
    message: &str,
) -> Vec<ConditionReport> {
    let mut out: Vec<ConditionReport> = reports
        .iter()
        .filter(|r| r.type_ != condition_types::READY)
        .cloned()
        .collect();
    out.insert(
        0,
        ConditionReport {
            type_: condition_types::READY,
            status: ConditionStatus::False,
            reason: reason.to_string(),
            message: message.to_string(),
        },
    );
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::{ApplicationStatus, AppliedEncryption, KeyManager, KeyState};
    use chrono::TimeZone;

    fn t(s: i64) -> DateTime<Utc> {
        Utc.timestamp_opt(1_800_000_000 + s, 0).single().unwrap()
    }

    fn report(type_: &'static str, status: ConditionStatus, reason: &str) -> ConditionReport {
        ConditionReport {
            type_,
            status,
            reason: reason.into(),
            message: format!("{reason} message"),
        }
    }

    fn reports(ready: ConditionStatus, reason: &str) -> Vec<ConditionReport> {
        vec![
            report(condition_types::ENCRYPTION_APPLIED, ready, reason),
            report(
                condition_types::KEY_USABLE,
                ConditionStatus::True,
                "KeyUsable",
            ),
            report(condition_types::READY, ready, reason),
            report(
                condition_types::KEY_POLICY_COMPLIANT,
                ConditionStatus::True,
                "Compliant",
            ),
        ]
    }

    fn input<'a>(
        previous: Option<&'a ApplicationEncryptionStatus>,
        reports: &'a [ConditionReport],
        generation: i64,
        now: DateTime<Utc>,
    ) -> StatusInput<'a> {
        StatusInput {
            previous,
            generation: Some(generation),
            conditions: reports,
            application: None,
            current_key: None,
            key_policy: None,
            progress: Progress::InProgress,
            now,
        }
    }

    fn find<'s>(s: &'s ApplicationEncryptionStatus, type_: &str) -> &'s Condition {
        s.conditions.iter().find(|c| c.type_ == type_).unwrap()
    }

    #[test]
    fn first_status_sets_every_transition_time_to_now_and_orders_ready_first() {
        let r = reports(ConditionStatus::False, "WaitingForApplicationStatus");
        let s = build(&input(None, &r, 3, t(0)));
        let types: Vec<_> = s.conditions.iter().map(|c| c.type_.as_str()).collect();
        let all: Vec<_> = CONDITION_TYPES
            .iter()
            .chain(&KSTATUS_TYPES)
            .copied()
            .collect();
        assert_eq!(types, all);
        assert!(
            s.conditions
                .iter()
                .all(|c| c.last_transition_time == rfc3339(t(0)))
        );
        assert!(
            s.conditions
                .iter()
                .all(|c| c.observed_generation == Some(3))
        );
        assert_eq!(s.observed_generation, Some(3));
        assert_eq!(s.last_sync_time.as_deref(), Some(rfc3339(t(0)).as_str()));
    }

    #[test]
    fn transition_time_moves_only_on_a_flip() {
        let waiting = reports(ConditionStatus::False, "WaitingForApplicationStatus");
        let first = build(&input(None, &waiting, 1, t(0)));
        // Same status, different reason and generation: transition time kept.
        let blocked = reports(ConditionStatus::False, "KeyDisabled");
        let second = build(&input(Some(&first), &blocked, 2, t(60)));
        let ready = ready(&second).unwrap();
        assert_eq!(ready.last_transition_time, rfc3339(t(0)));
        assert_eq!(ready.reason, "KeyDisabled");
        assert_eq!(ready.observed_generation, Some(2));
        // Flip to True: Ready moves, KeyUsable (True all along) does not.
        let ok = reports(ConditionStatus::True, "Converged");
        let third = build(&input(Some(&second), &ok, 2, t(120)));
        assert_eq!(
            super::ready(&third).unwrap().last_transition_time,
            rfc3339(t(120))
        );
        let usable = third
            .conditions
            .iter()
            .find(|c| c.type_ == condition_types::KEY_USABLE)
            .unwrap();
        assert_eq!(usable.last_transition_time, rfc3339(t(0)));
        assert_eq!(
            third.last_sync_time.as_deref(),
            Some(rfc3339(t(120)).as_str())
        );
    }

    #[test]
    fn observation_reports_resolved_key_arn() {
        let app = ObservedApplication {
            name: "a".into(),
            arn: "arn:aws:kinesisanalytics:us-east-1:111122223333:application/a".into(),
            version_id: 7,
            conditional_token: None,
            status: ApplicationStatus::Running,
            runtime_environment: "FLINK-1_20".into(),
            encryption: AppliedEncryption {
                key_type: AppliedKeyType::CustomerManagedKey,
                key_id: Some("alias/k".into()),
            },
        };
        let key = ObservedKey {
            arn: "arn:aws:kms:us-east-1:111122223333:key/k1".into(),
            key_id: "k1".into(),
            account: "111122223333".into(),
            region: "us-east-1".into(),
            state: KeyState::Enabled,
            spec: "SYMMETRIC_DEFAULT".into(),
            usage: "ENCRYPT_DECRYPT".into(),
            manager: KeyManager::Customer,
        };
        let r = reports(ConditionStatus::True, "Converged");
        let mut i = input(None, &r, 1, t(0));
        i.application = Some(&app);
        i.current_key = Some(&key);
        let s = build(&i);
        let a = s.application.unwrap();
        assert_eq!(a.key_type, Some(KeyType::CustomerManagedKey));
        assert_eq!(a.key_arn.as_deref(), Some(key.arn.as_str()));
        assert_eq!(a.status.as_deref(), Some("RUNNING"));
        assert_eq!(a.version_id, Some(7));
        // Unresolved key: MSF's own key id is reported rather than nothing.
        i.current_key = None;
        assert_eq!(
            build(&i).application.unwrap().key_arn.as_deref(),
            Some("alias/k")
        );
    }

    #[test]
    fn refused_and_failed_ready() {
        let r = refused(
            "NotPermitted",
            "namespace team-a may not claim application x",
        );
        assert_eq!(r.len(), 4);
        assert_eq!(r[0].status, ConditionStatus::False);
        assert!(r[1..].iter().all(|c| c.status == ConditionStatus::Unknown));
        let f = with_failed_ready(
            &reports(ConditionStatus::True, "Converged"),
            "EncryptionUpdateFailed",
            "boom",
        );
        assert_eq!(f.len(), 4);
        assert_eq!(f[0].type_, condition_types::READY);
        assert_eq!(f[0].reason, "EncryptionUpdateFailed");
    }

    #[test]
    fn kstatus_conditions_follow_progress_and_carry_ready_reason() {
        let cases = [
            (Progress::Current, "False", "False"),
            (Progress::InProgress, "True", "False"),
            (Progress::Stalled, "False", "True"),
        ];
        for (progress, reconciling, stalled) in cases {
            let r = reports(ConditionStatus::False, "KeyDisabled");
            let mut i = input(None, &r, 4, t(0));
            i.progress = progress;
            let s = build(&i);
            for (type_, want) in [
                (condition_types::RECONCILING, reconciling),
                (condition_types::STALLED, stalled),
            ] {
                let c = find(&s, type_);
                assert_eq!(c.status, want, "{progress:?} {type_}");
                assert_eq!(c.reason, "KeyDisabled");
                assert_eq!(c.message, "KeyDisabled message");
                assert_eq!(c.observed_generation, Some(4));
            }
        }
    }

    #[test]
    fn kstatus_transition_time_moves_only_on_a_flip() {
        let waiting = reports(ConditionStatus::False, "WaitingForApplicationStatus");
        let first = build(&input(None, &waiting, 1, t(0)));
        // Still in flight with another reason: Reconciling keeps its time.
        let settling = reports(ConditionStatus::False, "WaitingForKeyPolicy");
        let second = build(&input(Some(&first), &settling, 1, t(30)));
        let reconciling = find(&second, condition_types::RECONCILING);
        assert_eq!(reconciling.last_transition_time, rfc3339(t(0)));
        assert_eq!(reconciling.reason, "WaitingForKeyPolicy");
        // Converged: Reconciling flips, Stalled (False all along) keeps its time.
        let ok = reports(ConditionStatus::True, "Converged");
        let mut i = input(Some(&second), &ok, 1, t(60));
        i.progress = Progress::Current;
        let third = build(&i);
        let reconciling = find(&third, condition_types::RECONCILING);
        assert_eq!(reconciling.status, "False");
        assert_eq!(reconciling.last_transition_time, rfc3339(t(60)));
        let stalled = find(&third, condition_types::STALLED);
        assert_eq!(stalled.last_transition_time, rfc3339(t(0)));
    }

    #[test]
    fn refused_is_stalled_with_its_reason() {
        let r = refused("NotPermitted", "not yours");
        let k = with_kstatus(&r, Progress::Stalled);
        assert_eq!(k.len(), 6);
        let stalled = k
            .iter()
            .find(|c| c.type_ == condition_types::STALLED)
            .unwrap();
        assert_eq!(stalled.status, ConditionStatus::True);
        assert_eq!(stalled.reason, "NotPermitted");
        assert_eq!(stalled.message, "not yours");
        // Reports that already carry the pair are not duplicated.
        assert_eq!(with_kstatus(&k, Progress::Current).len(), 6);
    }
}
