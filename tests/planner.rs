//! Table tests of the pure planner: spec + observation -> steps + conditions.
//! The real policy engine is used (it is pure too); nothing here touches a network.

use std::time::Duration;

use chrono::{TimeZone, Utc};
use msf_cmk_controller::api::{ApplicationEncryptionSpec, KeyPolicyMode, KeyType};
use msf_cmk_controller::domain::*;
use msf_cmk_controller::planner::{
    CoTenant, ConditionStatus, Defaults, Plan, PlanInput, Step, plan,
};
use msf_cmk_controller::policy::requirements::MsfRequirements;
use msf_cmk_controller::policy::{self, PolicyDocument};

const ACCOUNT: &str = "123456789012";
const REGION: &str = "us-east-1";
const KEY: &str = "arn:aws:kms:us-east-1:123456789012:key/1234abcd-12ab-34cd-56ef-1234567890ab";
const KEY2: &str = "arn:aws:kms:us-east-1:123456789012:key/99999999-12ab-34cd-56ef-1234567890ab";
const APP: &str = "arn:aws:kinesisanalytics:us-east-1:123456789012:application/MyCmkApplication";
const OPERATOR: &str = "arn:aws:iam::123456789012:role/Operator";

fn default_key_policy() -> String {
    serde_json::json!({
        "Version": "2012-10-17",
        "Id": "key-default-1",
        "Statement": [{
            "Sid": "Enable IAM User Permissions",
            "Effect": "Allow",
            "Principal": {"AWS": format!("arn:aws:iam::{ACCOUNT}:root")},
            "Action": "kms:*",
            "Resource": "*"
        }]
    })
    .to_string()
}

fn reference_policy() -> String {
    std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/cmk-key-policy.json"
    ))
    .unwrap()
}

fn spec(key_type: KeyType, key_id: Option<&str>) -> ApplicationEncryptionSpec {
    serde_json::from_value(serde_json::json!({
        "applicationName": "MyCmkApplication",
        "keyType": key_type,
        "keyId": key_id,
    }))
    .unwrap()
}

fn app(
    status: ApplicationStatus,
    key_type: AppliedKeyType,
    key_id: Option<&str>,
) -> ObservedApplication {
    ObservedApplication {
        name: "MyCmkApplication".into(),
        arn: APP.into(),
        version_id: 7,
        conditional_token: Some("token-7".into()),
        status,
        runtime_environment: "FLINK-1_20".into(),
        encryption: AppliedEncryption {
            key_type,
            key_id: key_id.map(str::to_string),
        },
    }
}

fn key(arn: &str) -> ObservedKey {
    let region = arn.split(':').nth(3).unwrap().to_string();
    let account = arn.split(':').nth(4).unwrap().to_string();
    ObservedKey {
        arn: arn.into(),
        key_id: arn.rsplit('/').next().unwrap().into(),
        account,
        region,
        state: KeyState::Enabled,
        spec: "SYMMETRIC_DEFAULT".into(),
        usage: "ENCRYPT_DECRYPT".into(),
        manager: KeyManager::Customer,
    }
}

struct Case {
    spec: ApplicationEncryptionSpec,
    app: Observed<ObservedApplication>,
    desired_key: Observed<ObservedKey>,
    current_key: Observed<ObservedKey>,
    policy: Observed<String>,
    co_tenants: Vec<CoTenant>,
}

impl Case {
    fn cmk(policy: String) -> Self {
        Self {
            spec: spec(KeyType::CustomerManagedKey, Some(KEY)),
            app: Observed::Found(app(
                ApplicationStatus::Running,
                AppliedKeyType::AwsOwnedKey,
                None,
            )),
            desired_key: Observed::Found(key(KEY)),
            current_key: Observed::Skipped,
            policy: Observed::Found(policy),
            co_tenants: vec![],
        }
    }

    fn run(&self) -> Plan {
        let defaults = Defaults {
            region: REGION.into(),
            operator_role_arn: Some(OPERATOR.into()),
        };
        plan(&PlanInput {
            spec: &self.spec,
            generation: Some(1),
            defaults: &defaults,
            application: &self.app,
            desired_key: &self.desired_key,
            current_key: &self.current_key,
            key_policy: &self.policy,
            co_tenants: &self.co_tenants,
            instance: &Default::default(),
            now: Utc.with_ymd_and_hms(2026, 11, 23, 12, 0, 0).unwrap(),
        })
    }
}

fn cond<'a>(p: &'a Plan, t: &str) -> (&'a str, ConditionStatus) {
    let c = p
        .conditions
        .iter()
        .find(|c| c.type_ == t)
        .unwrap_or_else(|| panic!("no {t} in {p:#?}"));
    (c.reason.as_str(), c.status)
}

fn kinds(p: &Plan) -> Vec<&'static str> {
    p.steps
        .iter()
        .map(|s| match s {
            Step::PutKeyPolicy { .. } => "PutKeyPolicy",
            Step::UpdateApplication(_) => "UpdateApplication",
            Step::Requeue { .. } => "Requeue",
            Step::Blocked { .. } => "Blocked",
        })
        .collect()
}

fn update(p: &Plan) -> &EncryptionUpdate {
    p.steps
        .iter()
        .find_map(|s| match s {
            Step::UpdateApplication(u) => Some(u),
            _ => None,
        })
        .expect("an UpdateApplication step")
}

#[test]
fn aws_owned_converged_plans_nothing() {
    let mut c = Case::cmk(default_key_policy());
    c.spec = spec(KeyType::AwsOwnedKey, None);
    c.desired_key = Observed::Skipped;
    c.policy = Observed::Skipped;
    let p = c.run();
    assert!(p.is_converged(), "{p:#?}");
    assert_eq!(cond(&p, "Ready"), ("Converged", ConditionStatus::True));
    assert_eq!(p.conditions.len(), 4);
}

#[test]
fn revert_to_aws_owned_is_one_update_and_keeps_the_policy() {
    let mut c = Case::cmk(reference_policy());
    c.spec = spec(KeyType::AwsOwnedKey, None);
    c.app = Observed::Found(app(
        ApplicationStatus::Running,
        AppliedKeyType::CustomerManagedKey,
        Some(KEY),
    ));
    c.desired_key = Observed::Skipped;
    let p = c.run();
    assert_eq!(kinds(&p), ["UpdateApplication"]);
    let u = update(&p);
    assert_eq!(u.key_type, AppliedKeyType::AwsOwnedKey);
    assert_eq!(u.key_id, None);
    assert_eq!(u.conditional_token.as_deref(), Some("token-7"));
    assert_eq!(cond(&p, "Ready").1, ConditionStatus::False);
}

#[test]
fn switch_to_cmk_repairs_policy_first_then_updates_once() {
    let c = Case::cmk(default_key_policy());
    let p = c.run();
    assert_eq!(kinds(&p), ["PutKeyPolicy", "UpdateApplication"], "{p:#?}");
    let Step::PutKeyPolicy {
        policy: text,
        key_arn,
        ..
    } = &p.steps[0]
    else {
        unreachable!()
    };
    assert_eq!(key_arn, KEY);
    let merged = PolicyDocument::parse(text).unwrap();
    let reqs = MsfRequirements::for_application(APP, OPERATOR).unwrap();
    assert!(policy::check(&merged, KEY, &reqs).compliant);
    // The human's root statement survives.
    assert!(text.contains("Enable IAM User Permissions"));
    let u = update(&p);
    assert_eq!(u.key_type, AppliedKeyType::CustomerManagedKey);
    assert_eq!(u.key_id.as_deref(), Some(KEY));
    assert_eq!(u.application_name, "MyCmkApplication");
    assert_eq!(
        cond(&p, "KeyPolicyCompliant"),
        ("MissingServicePrincipal", ConditionStatus::False)
    );
    assert_eq!(cond(&p, "Ready"), ("Reconciling", ConditionStatus::False));
}

#[test]
fn compliant_policy_switches_without_writing() {
    let p = Case::cmk(reference_policy()).run();
    assert_eq!(kinds(&p), ["UpdateApplication"]);
    assert_eq!(
        cond(&p, "KeyPolicyCompliant"),
        ("Compliant", ConditionStatus::True)
    );
}

#[test]
fn converged_cmk_plans_nothing_even_when_msf_reports_an_alias() {
    let mut c = Case::cmk(reference_policy());
    c.app = Observed::Found(app(
        ApplicationStatus::Running,
        AppliedKeyType::CustomerManagedKey,
        Some("alias/app-key"),
    ));
    c.current_key = Observed::Found(key(KEY));
    c.spec = spec(KeyType::CustomerManagedKey, Some("alias/app-key"));
    let p = c.run();
    assert!(p.is_converged(), "{p:#?}");
    assert_eq!(cond(&p, "Ready"), ("Converged", ConditionStatus::True));
    assert_eq!(
        cond(&p, "EncryptionApplied"),
        ("CustomerManagedKeyInUse", ConditionStatus::True)
    );
}

#[test]
fn cmk_to_another_cmk() {
    let mut c = Case::cmk(reference_policy());
    c.app = Observed::Found(app(
        ApplicationStatus::Ready,
        AppliedKeyType::CustomerManagedKey,
        Some(KEY2),
    ));
    c.current_key = Observed::Found(key(KEY2));
    let p = c.run();
    assert_eq!(kinds(&p), ["UpdateApplication"]);
    assert_eq!(update(&p).key_id.as_deref(), Some(KEY));
}

#[test]
fn drift_deleted_statement_is_repaired_without_update() {
    let mut c = Case::cmk(default_key_policy());
    c.app = Observed::Found(app(
        ApplicationStatus::Running,
        AppliedKeyType::CustomerManagedKey,
        Some(KEY),
    ));
    c.current_key = Observed::Found(key(KEY));
    let p = c.run();
    assert_eq!(kinds(&p), ["PutKeyPolicy"]);
}

#[test]
fn audit_mode_reports_and_never_writes_or_switches() {
    let mut c = Case::cmk(default_key_policy());
    c.spec.key_policy.mode = KeyPolicyMode::Audit;
    let p = c.run();
    assert_eq!(kinds(&p), ["Blocked"]);
    assert_eq!(
        cond(&p, "KeyPolicyCompliant"),
        ("MissingServicePrincipal", ConditionStatus::False)
    );
    assert_eq!(
        cond(&p, "EncryptionApplied"),
        ("KeyPolicyNotCompliant", ConditionStatus::False)
    );
    let kp = p.key_policy.as_ref().unwrap();
    assert!(!kp.compliant);
    assert!(
        kp.missing_accesses
            .iter()
            .any(|m| m.contains("Service:kinesisanalytics.amazonaws.com")),
        "{kp:?}"
    );
    // Once compliant, Audit mode switches.
    let mut c = Case::cmk(reference_policy());
    c.spec.key_policy.mode = KeyPolicyMode::Audit;
    assert_eq!(kinds(&c.run()), ["UpdateApplication"]);
}

#[test]
fn ignore_mode_does_not_need_the_policy() {
    let mut c = Case::cmk(String::new());
    c.spec.key_policy.mode = KeyPolicyMode::Ignore;
    c.policy = Observed::Skipped;
    let p = c.run();
    assert_eq!(kinds(&p), ["UpdateApplication"]);
    assert_eq!(
        cond(&p, "KeyPolicyCompliant"),
        ("NotChecked", ConditionStatus::Unknown)
    );
}

#[test]
fn suspend_changes_nothing() {
    let mut c = Case::cmk(default_key_policy());
    c.spec.suspend = true;
    let p = c.run();
    assert!(
        !kinds(&p)
            .iter()
            .any(|k| *k == "PutKeyPolicy" || *k == "UpdateApplication"),
        "{p:#?}"
    );
    assert_eq!(cond(&p, "Ready").1, ConditionStatus::False);
    let mut c = Case::cmk(reference_policy());
    c.spec.suspend = true;
    let p = c.run();
    assert_eq!(kinds(&p), ["Blocked"]);
    assert_eq!(
        cond(&p, "EncryptionApplied"),
        ("Suspended", ConditionStatus::False)
    );
}

#[test]
fn updates_only_in_ready_or_running() {
    for (status, updates) in [
        (ApplicationStatus::Ready, true),
        (ApplicationStatus::Running, true),
        (ApplicationStatus::Updating, false),
        (ApplicationStatus::Starting, false),
        (ApplicationStatus::Stopping, false),
        (ApplicationStatus::AutoScaling, false),
        (ApplicationStatus::RollingBack, false),
        (ApplicationStatus::Other("NEW".into()), false),
    ] {
        let mut c = Case::cmk(reference_policy());
        c.app = Observed::Found(app(status.clone(), AppliedKeyType::AwsOwnedKey, None));
        let p = c.run();
        if updates {
            assert_eq!(kinds(&p), ["UpdateApplication"], "{status:?}");
        } else {
            assert_eq!(kinds(&p), ["Requeue"], "{status:?}");
            assert_eq!(
                cond(&p, "EncryptionApplied").0,
                "WaitingForApplicationStatus"
            );
            let Step::Requeue { after, .. } = &p.steps[0] else {
                unreachable!()
            };
            assert!(*after <= Duration::from_secs(60));
        }
    }
}

#[test]
fn unusable_keys_block_with_precise_reasons() {
    type Mutation = Box<dyn Fn(&mut ObservedKey)>;
    let cases: Vec<(Mutation, &str)> = vec![
        (Box::new(|k| k.state = KeyState::Disabled), "KeyDisabled"),
        (
            Box::new(|k| k.state = KeyState::PendingDeletion),
            "KeyPendingDeletion",
        ),
        (Box::new(|k| k.spec = "RSA_2048".into()), "KeyNotSymmetric"),
        (
            Box::new(|k| k.usage = "SIGN_VERIFY".into()),
            "KeyNotSymmetric",
        ),
        (Box::new(|k| k.manager = KeyManager::Aws), "AwsManagedKey"),
        (
            Box::new(|k| k.region = "eu-west-1".into()),
            "KeyInWrongRegion",
        ),
        (
            Box::new(|k| k.account = "210987654321".into()),
            "KeyInWrongAccount",
        ),
    ];
    for (mutate, reason) in cases {
        let mut k = key(KEY);
        mutate(&mut k);
        let mut c = Case::cmk(default_key_policy());
        c.desired_key = Observed::Found(k);
        let p = c.run();
        assert_eq!(cond(&p, "KeyUsable"), (reason, ConditionStatus::False));
        assert!(
            !kinds(&p).contains(&"UpdateApplication"),
            "{reason}: {p:#?}"
        );
        assert!(kinds(&p).contains(&"Blocked"));
        assert_eq!(cond(&p, "Ready"), (reason, ConditionStatus::False));
    }
}

#[test]
fn old_runtime_blocks() {
    let mut c = Case::cmk(reference_policy());
    let mut a = app(
        ApplicationStatus::Running,
        AppliedKeyType::AwsOwnedKey,
        None,
    );
    a.runtime_environment = "FLINK-1_19".into();
    c.app = Observed::Found(a);
    let p = c.run();
    assert_eq!(
        cond(&p, "KeyUsable"),
        ("RuntimeNotSupported", ConditionStatus::False)
    );
    assert_eq!(kinds(&p), ["Blocked"]);
}

#[test]
fn application_not_found_and_observe_errors() {
    let mut c = Case::cmk(reference_policy());
    c.app = Observed::NotFound("Application MyCmkApplication not found".into());
    let p = c.run();
    assert_eq!(kinds(&p), ["Blocked"]);
    assert_eq!(
        cond(&p, "Ready"),
        ("ApplicationNotFound", ConditionStatus::False)
    );

    c.app = Observed::Failed {
        category: ErrorCategory::Transient,
        code: "ThrottlingException".into(),
        message: "Rate exceeded".into(),
    };
    let p = c.run();
    assert_eq!(kinds(&p), ["Requeue"]);
    assert_eq!(cond(&p, "Ready").1, ConditionStatus::Unknown);

    c.app = Observed::Failed {
        category: ErrorCategory::Terminal,
        code: "AccessDeniedException".into(),
        message: "no".into(),
    };
    let p = c.run();
    assert_eq!(kinds(&p), ["Blocked"]);
    assert_eq!(cond(&p, "Ready").0, "NotPermitted");
}

#[test]
fn key_not_found() {
    let mut c = Case::cmk(reference_policy());
    c.desired_key = Observed::NotFound("Alias alias/nope is not found.".into());
    let p = c.run();
    assert_eq!(
        cond(&p, "KeyUsable"),
        ("KeyNotFound", ConditionStatus::False)
    );
    assert_eq!(kinds(&p), ["Blocked"]);
}

#[test]
fn malformed_policy_is_never_overwritten() {
    let p = Case::cmk("{not json".into()).run();
    assert_eq!(kinds(&p), ["Blocked"]);
    assert_eq!(cond(&p, "KeyPolicyCompliant").0, "MalformedKeyPolicy");
}

#[test]
fn a_humans_deny_blocks_without_a_write() {
    let mut doc: serde_json::Value = serde_json::from_str(&reference_policy()).unwrap();
    doc["Statement"]
        .as_array_mut()
        .unwrap()
        .push(serde_json::json!({
            "Sid": "NoDecryptForMsf",
            "Effect": "Deny",
            "Principal": {"Service": "kinesisanalytics.amazonaws.com"},
            "Action": "kms:Decrypt",
            "Resource": "*"
        }));
    let p = Case::cmk(doc.to_string()).run();
    assert_eq!(kinds(&p), ["Blocked"], "{p:#?}");
    assert_eq!(
        cond(&p, "KeyPolicyCompliant"),
        ("ExplicitDeny", ConditionStatus::False)
    );
}

#[test]
fn co_tenants_share_one_write() {
    let mut c = Case::cmk(default_key_policy());
    let others: Vec<String> = (0..5)
        .map(|i| format!("arn:aws:kinesisanalytics:us-east-1:123456789012:application/other-{i}"))
        .collect();
    c.co_tenants = others
        .iter()
        .map(|a| CoTenant {
            application_arn: a.clone(),
            operator_role_arn: OPERATOR.into(),
        })
        .collect();
    let p = c.run();
    let Step::PutKeyPolicy {
        policy: text,
        applications,
        ..
    } = &p.steps[0]
    else {
        panic!("{p:#?}")
    };
    assert_eq!(applications.len(), 6);
    let merged = PolicyDocument::parse(text).unwrap();
    for a in &others {
        let reqs = MsfRequirements::for_application(a, OPERATOR).unwrap();
        assert!(policy::check(&merged, KEY, &reqs).compliant, "{a}");
    }
}

#[test]
fn invalid_spec_is_refused_before_anything_else() {
    let mut c = Case::cmk(reference_policy());
    c.spec.key_id = None;
    let p = c.run();
    assert_eq!(kinds(&p), ["Blocked"]);
    assert_eq!(cond(&p, "Ready").0, "InvalidSpec");
    let mut c = Case::cmk(reference_policy());
    c.spec.key_id = Some("not a key".into());
    assert_eq!(cond(&c.run(), "Ready").0, "InvalidSpec");
    let mut c = Case::cmk(reference_policy());
    c.spec.application_name = "bad name".into();
    assert_eq!(cond(&c.run(), "Ready").0, "InvalidSpec");
}

#[test]
fn missing_operator_role_blocks() {
    let c = Case::cmk(default_key_policy());
    let defaults = Defaults {
        region: REGION.into(),
        operator_role_arn: None,
    };
    let p = plan(&PlanInput {
        spec: &c.spec,
        generation: Some(1),
        defaults: &defaults,
        application: &c.app,
        desired_key: &c.desired_key,
        current_key: &c.current_key,
        key_policy: &c.policy,
        co_tenants: &[],
        instance: &Default::default(),
        now: Utc::now(),
    });
    assert_eq!(cond(&p, "KeyPolicyCompliant").0, "OperatorRoleUnknown");
    assert!(!kinds(&p).contains(&"UpdateApplication"));
}

#[test]
fn runtime_versions() {
    use msf_cmk_controller::planner::runtime_supports_cmk;
    assert!(runtime_supports_cmk("FLINK-1_20"));
    assert!(runtime_supports_cmk("FLINK-1_21"));
    assert!(runtime_supports_cmk("FLINK-2_0"));
    assert!(!runtime_supports_cmk("FLINK-1_19"));
    assert!(!runtime_supports_cmk("FLINK-1_6"));
    assert!(!runtime_supports_cmk("SQL-1_0"));
}

// ---- The update lifecycle gate (planner::lifecycle): rollbacks, Updating, settle, state.

mod lifecycle {
    use super::*;
    use chrono::{DateTime, Duration as TimeDelta};
    use msf_cmk_controller::api::{LastUpdate, UpdateOutcome};
    use msf_cmk_controller::planner::lifecycle::{
        GateInput, History, follow, gate, is_key_permission_refusal,
    };

    fn now() -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 11, 23, 12, 0, 0).unwrap()
    }

    fn rolled_back(generation: i64, retry: Option<&str>) -> LastUpdate {
        LastUpdate {
            generation: Some(generation),
            key_type: KeyType::CustomerManagedKey,
            key_arn: Some(KEY.into()),
            operation_id: Some("op-1".into()),
            version_id: Some(8),
            time: "2026-11-23T11:00:00Z".into(),
            outcome: UpdateOutcome::RolledBack,
            message: Some("Flink job failed to restore".into()),
            retry: retry.map(str::to_string),
        }
    }

    fn operation(status: OperationStatus, message: Option<&str>) -> ApplicationOperation {
        ApplicationOperation {
            operation_id: "op-1".into(),
            operation: "UpdateApplication".into(),
            status,
            start_time: Some(now() - TimeDelta::hours(1)),
            end_time: None,
            version_from: Some(7),
            version_to: Some(8),
            failure_message: message.map(str::to_string),
            rollback_operation_id: None,
        }
    }

    /// The inputs of one gate call; each test changes what it is about.
    struct Gate {
        spec: ApplicationEncryptionSpec,
        generation: i64,
        retry: Option<&'static str>,
        app: ObservedApplication,
        recorded: Option<LastUpdate>,
        latest: Option<ApplicationOperation>,
        lifecycle: ApplicationLifecycle,
        written: Option<DateTime<Utc>>,
        settle: Duration,
    }

    impl Gate {
        /// A RUNNING application on the AWS owned key, a compliant policy: the plan updates.
        fn switch() -> Self {
            Self {
                spec: spec(KeyType::CustomerManagedKey, Some(KEY)),
                generation: 1,
                retry: None,
                app: app(
                    ApplicationStatus::Running,
                    AppliedKeyType::AwsOwnedKey,
                    None,
                ),
                recorded: None,
                latest: None,
                lifecycle: ApplicationLifecycle::default(),
                written: None,
                settle: Duration::from_secs(20),
            }
        }

        /// The application already on the desired key.
        fn applied(status: ApplicationStatus) -> Self {
            Self {
                app: app(status, AppliedKeyType::CustomerManagedKey, Some(KEY)),
                ..Self::switch()
            }
        }

        fn run(&self) -> Plan {
            let mut c = Case::cmk(reference_policy());
            c.spec = self.spec.clone();
            c.app = Observed::Found(self.app.clone());
            if self.app.encryption.key_id.as_deref() == Some(KEY) {
                c.current_key = Observed::Found(key(KEY));
            }
            let plan = c.run();
            gate(
                plan,
                &GateInput {
                    spec: &self.spec,
                    generation: Some(self.generation),
                    retry: self.retry,
                    application: &self.app,
                    history: History {
                        recorded: self.recorded.as_ref(),
                        latest: self.latest.as_ref(),
                        lifecycle: &self.lifecycle,
                    },
                    policy_written_at: self.written,
                    settle: self.settle,
                    now: now(),
                },
            )
        }
    }

    fn blocked_reason(p: &Plan) -> Option<&str> {
        p.steps.iter().find_map(|s| match s {
            Step::Blocked { reason, .. } => Some(reason.as_str()),
            _ => None,
        })
    }

    fn message<'a>(p: &'a Plan, t: &str) -> &'a str {
        &p.conditions.iter().find(|c| c.type_ == t).unwrap().message
    }

    #[test]
    fn nothing_in_the_history_lets_the_update_through() {
        let p = Gate::switch().run();
        assert_eq!(kinds(&p), ["UpdateApplication"], "{p:#?}");
        assert_eq!(cond(&p, "Ready"), ("Reconciling", ConditionStatus::False));
    }

    #[test]
    fn our_rolled_back_update_is_not_repeated_for_the_same_generation() {
        let mut g = Gate::switch();
        g.recorded = Some(rolled_back(1, None));
        g.latest = Some(operation(OperationStatus::Failed, None));
        g.lifecycle.rolled_back_from = Some(8);
        let p = g.run();
        assert_eq!(kinds(&p), ["Blocked"], "{p:#?}");
        assert_eq!(blocked_reason(&p), Some("UpdateRolledBack"));
        assert_eq!(
            cond(&p, "Ready"),
            ("UpdateRolledBack", ConditionStatus::False)
        );
        assert_eq!(
            cond(&p, "EncryptionApplied"),
            ("UpdateRolledBack", ConditionStatus::False)
        );
        let m = message(&p, "EncryptionApplied");
        assert!(
            m.contains("Flink job failed to restore") && m.contains("op-1"),
            "{m}"
        );
        assert!(m.contains("msfcmk.dev/retry-update"), "{m}");
    }

    #[test]
    fn the_decision_holds_from_aws_alone_without_a_status() {
        // `apply`, or a controller whose status was lost: the latest operation failed.
        let mut g = Gate::switch();
        g.latest = Some(operation(OperationStatus::Failed, Some("restore failed")));
        let p = g.run();
        assert_eq!(blocked_reason(&p), Some("UpdateRolledBack"), "{p:#?}");
        assert!(message(&p, "Ready").contains("restore failed"));
        // Without a readable history, ApplicationVersionRolledBackFrom says the same.
        let mut g = Gate::switch();
        g.lifecycle.rolled_back_from = Some(8);
        assert_eq!(blocked_reason(&g.run()), Some("UpdateRolledBack"));
        // A later successful update outweighs a stale rollback marker.
        g.latest = Some(operation(OperationStatus::Successful, None));
        assert_eq!(kinds(&g.run()), ["UpdateApplication"]);
    }

    #[test]
    fn a_spec_change_after_our_failed_try_allows_one_more() {
        let mut g = Gate::switch();
        g.recorded = Some(rolled_back(1, None));
        g.latest = Some(operation(OperationStatus::Failed, None));
        g.generation = 2;
        assert_eq!(kinds(&g.run()), ["UpdateApplication"]);
        // Without our record the generation proves nothing: AWS's failure still blocks.
        g.recorded = None;
        assert_eq!(blocked_reason(&g.run()), Some("UpdateRolledBack"));
    }

    #[test]
    fn a_new_retry_annotation_value_allows_one_more_try() {
        let mut g = Gate::switch();
        g.recorded = Some(rolled_back(1, None));
        g.latest = Some(operation(OperationStatus::Failed, None));
        g.retry = Some("1");
        assert_eq!(kinds(&g.run()), ["UpdateApplication"]);
        // The value the failed try was made under does not allow another.
        g.recorded = Some(rolled_back(1, Some("1")));
        assert_eq!(blocked_reason(&g.run()), Some("UpdateRolledBack"));
        g.retry = Some("2");
        assert_eq!(kinds(&g.run()), ["UpdateApplication"]);
        // No status at all: the annotation allows the one try of this run.
        g.recorded = None;
        assert_eq!(kinds(&g.run()), ["UpdateApplication"]);
    }

    #[test]
    fn an_update_in_progress_is_waited_for() {
        let mut g = Gate::switch();
        g.latest = Some(operation(OperationStatus::InProgress, None));
        let p = g.run();
        assert_eq!(kinds(&p), ["Requeue"], "{p:#?}");
        assert_eq!(cond(&p, "Ready"), ("Updating", ConditionStatus::False));
    }

    #[test]
    fn a_running_application_without_snapshots_is_not_restarted() {
        let mut g = Gate::switch();
        g.lifecycle.snapshots_enabled = Some(false);
        let p = g.run();
        assert_eq!(
            blocked_reason(&p),
            Some("WouldRestartWithoutState"),
            "{p:#?}"
        );
        assert_eq!(
            cond(&p, "Ready"),
            ("WouldRestartWithoutState", ConditionStatus::False)
        );
        assert!(message(&p, "Ready").contains("allowStatelessRestart"));
        // The user accepts the loss of state.
        g.spec.allow_stateless_restart = true;
        assert_eq!(kinds(&g.run()), ["UpdateApplication"]);
        // A stopped (READY) application does not restart: nothing to lose.
        g.spec.allow_stateless_restart = false;
        g.app.status = ApplicationStatus::Ready;
        assert_eq!(kinds(&g.run()), ["UpdateApplication"]);
        // Snapshots enabled, or not reported: no block.
        g.app.status = ApplicationStatus::Running;
        g.lifecycle.snapshots_enabled = Some(true);
        assert_eq!(kinds(&g.run()), ["UpdateApplication"]);
    }

    #[test]
    fn the_update_waits_for_a_fresh_key_policy_write_to_settle() {
        let mut g = Gate::switch();
        g.written = Some(now() - TimeDelta::seconds(5));
        let p = g.run();
        let Some(Step::Requeue { after, reason }) = p.steps.first() else {
            panic!("{p:#?}")
        };
        assert_eq!(reason, "WaitingForKeyPolicyPropagation");
        assert_eq!(*after, Duration::from_secs(15));
        assert_eq!(
            cond(&p, "Ready"),
            ("WaitingForKeyPolicyPropagation", ConditionStatus::False)
        );
        // Settled, or no settle time: the update goes ahead.
        g.written = Some(now() - TimeDelta::seconds(21));
        assert_eq!(kinds(&g.run()), ["UpdateApplication"]);
        g.written = Some(now());
        g.settle = Duration::ZERO;
        assert_eq!(kinds(&g.run()), ["UpdateApplication"]);
        // Reverting to the AWS owned key does not depend on the new key's policy.
        let mut g = Gate::applied(ApplicationStatus::Running);
        g.spec = spec(KeyType::AwsOwnedKey, None);
        g.written = Some(now());
        assert_eq!(kinds(&g.run()), ["UpdateApplication"]);
    }

    #[test]
    fn a_rollback_that_leaves_no_updatable_status_is_reported_not_waited_for() {
        let mut g = Gate::switch();
        g.app.status = ApplicationStatus::RolledBack;
        let p = g.run();
        assert_eq!(
            cond(&p, "Ready").0,
            "WaitingForApplicationStatus",
            "nothing recorded: {p:#?}"
        );
        g.recorded = Some(rolled_back(1, None));
        let p = g.run();
        assert_eq!(kinds(&p), ["Blocked"], "{p:#?}");
        assert_eq!(
            cond(&p, "Ready"),
            ("UpdateRolledBack", ConditionStatus::False)
        );
        // A retry is authorised: wait for a status that allows it.
        g.retry = Some("1");
        assert_eq!(kinds(&g.run()), ["Requeue"]);
    }

    #[test]
    fn a_settling_policy_is_waited_for_before_the_history_is_judged() {
        // The controller reads MSF's history only in the pass that may update: while the
        // policy settles, an old rollback marker must not block (or be reported) yet.
        let mut g = Gate::switch();
        g.written = Some(now() - TimeDelta::seconds(1));
        g.lifecycle.rolled_back_from = Some(3);
        let p = g.run();
        assert_eq!(kinds(&p), ["Requeue"], "{p:#?}");
        assert_eq!(cond(&p, "Ready").0, "WaitingForKeyPolicyPropagation");
    }

    #[test]
    fn converged_means_the_update_has_ended() {
        // MSF shows the new key while it is still UPDATING: not converged.
        let p = Gate::applied(ApplicationStatus::Updating).run();
        assert_eq!(kinds(&p), ["Requeue"], "{p:#?}");
        assert_eq!(cond(&p, "Ready"), ("Updating", ConditionStatus::False));
        assert_eq!(
            cond(&p, "EncryptionApplied"),
            ("Updating", ConditionStatus::False)
        );
        // RUNNING again but our operation not yet reported SUCCESSFUL.
        let mut g = Gate::applied(ApplicationStatus::Running);
        g.recorded = Some(LastUpdate {
            outcome: UpdateOutcome::InProgress,
            message: None,
            ..rolled_back(1, None)
        });
        assert_eq!(
            cond(&g.run(), "Ready"),
            ("Updating", ConditionStatus::False)
        );
        g.recorded.as_mut().unwrap().outcome = UpdateOutcome::Successful;
        let p = g.run();
        assert!(p.is_converged(), "{p:#?}");
        assert_eq!(cond(&p, "Ready"), ("Converged", ConditionStatus::True));
    }

    #[test]
    fn a_stopped_application_is_told_the_key_applies_at_its_next_start() {
        let p = Gate::applied(ApplicationStatus::Ready).run();
        assert!(p.is_converged(), "{p:#?}");
        assert!(message(&p, "EncryptionApplied").contains("next start"));
        assert!(message(&p, "Ready").contains("next start"));
        let p = Gate::applied(ApplicationStatus::Running).run();
        assert!(!message(&p, "EncryptionApplied").contains("next start"));
    }

    #[test]
    fn following_an_update_until_its_operation_ends() {
        let running = app(
            ApplicationStatus::Running,
            AppliedKeyType::CustomerManagedKey,
            Some(KEY),
        );
        let lc = ApplicationLifecycle::default();
        let in_progress = LastUpdate {
            outcome: UpdateOutcome::InProgress,
            message: None,
            ..rolled_back(1, None)
        };
        let still = follow(
            &in_progress,
            Some(&operation(OperationStatus::InProgress, None)),
            &running,
            &lc,
        );
        assert_eq!(still.outcome, UpdateOutcome::InProgress);
        let ok = follow(
            &in_progress,
            Some(&operation(OperationStatus::Successful, None)),
            &running,
            &lc,
        );
        assert_eq!(ok.outcome, UpdateOutcome::Successful);
        let failed = follow(
            &in_progress,
            Some(&operation(OperationStatus::Failed, Some("boom"))),
            &running,
            &lc,
        );
        assert_eq!(failed.outcome, UpdateOutcome::RolledBack);
        assert_eq!(failed.message.as_deref(), Some("boom"));
        // No operation id to follow: the rollback marker names our version.
        let mut no_id = in_progress.clone();
        no_id.operation_id = None;
        let marked = ApplicationLifecycle {
            rolled_back_from: Some(8),
            ..ApplicationLifecycle::default()
        };
        assert_eq!(
            follow(&no_id, None, &running, &marked).outcome,
            UpdateOutcome::RolledBack
        );
        // An ended record is left alone.
        assert_eq!(follow(&ok, None, &running, &marked), ok);
        // No operation and no rollback: a settled application at our version is done; one
        // still UPDATING is not.
        let at_ours = ObservedApplication {
            version_id: 8,
            ..running.clone()
        };
        assert_eq!(
            follow(&no_id, None, &at_ours, &lc).outcome,
            UpdateOutcome::Successful
        );
        let updating = ObservedApplication {
            status: ApplicationStatus::Updating,
            ..at_ours
        };
        assert_eq!(
            follow(&no_id, None, &updating, &lc).outcome,
            UpdateOutcome::InProgress
        );
    }

    #[test]
    fn refusals_that_read_like_propagation() {
        for (code, message, expected) in [
            ("AccessDeniedException", "User is not authorized", true),
            (
                "InvalidArgumentException",
                "Key arn:aws:kms:... is not accessible: kms:DescribeKey denied",
                true,
            ),
            (
                "InvalidRequestException",
                "MSF does not have permissions to use the key",
                true,
            ),
            (
                "InvalidArgumentException",
                "Runtime FLINK-1_15 is too old",
                false,
            ),
            ("ConcurrentModificationException", "key changed", false),
        ] {
            assert_eq!(
                is_key_permission_refusal(code, message),
                expected,
                "{code}: {message}"
            );
        }
    }
}

/// Issue 9, items 4 and 5: the operator gate (`planner::operator`) after the plan: who calls
/// (`OperatorMismatch`) and the key being left (`CurrentKeyUnusable`).
mod operator_gate {
    use msf_cmk_controller::identity::CallerIdentity;
    use msf_cmk_controller::planner::operator::{OperatorInput, gate};

    use super::*;

    const SESSION: &str = "arn:aws:sts::123456789012:assumed-role/Operator/msf-cmk-controller";

    fn caller(arn: &str) -> CallerIdentity {
        CallerIdentity {
            arn: arn.into(),
            account: arn.split(':').nth(4).unwrap_or_default().into(),
            user_id: "AROAEXAMPLE:msf-cmk-controller".into(),
        }
    }

    /// The case's plan, then the gate with `caller` and the policy of the key in use.
    fn gated(c: &Case, caller: Option<&CallerIdentity>, current_policy: &Observed<String>) -> Plan {
        let defaults = Defaults {
            region: REGION.into(),
            operator_role_arn: Some(OPERATOR.into()),
        };
        gate(
            c.run(),
            &OperatorInput {
                spec: &c.spec,
                defaults: &defaults,
                caller,
                application: &c.app,
                current_key: &c.current_key,
                current_key_policy: current_policy,
            },
        )
    }

    /// The application runs on KEY; the spec wants KEY2 (or the AWS owned key).
    fn leaving_key(to_aws_owned: bool, current: ObservedKey) -> Case {
        let mut c = Case::cmk(reference_policy().replace(KEY, KEY2));
        c.app = Observed::Found(app(
            ApplicationStatus::Running,
            AppliedKeyType::CustomerManagedKey,
            Some(KEY),
        ));
        c.current_key = Observed::Found(current);
        if to_aws_owned {
            c.spec = spec(KeyType::AwsOwnedKey, None);
            c.desired_key = Observed::Skipped;
            c.policy = Observed::Skipped;
        } else {
            c.spec = spec(KeyType::CustomerManagedKey, Some(KEY2));
            c.desired_key = Observed::Found(key(KEY2));
        }
        c
    }

    fn in_state(state: KeyState) -> ObservedKey {
        ObservedKey { state, ..key(KEY) }
    }

    /// Only a key administrator role: the operator is not let in (no account delegation).
    fn admin_only_policy() -> String {
        serde_json::json!({
            "Version": "2012-10-17",
            "Statement": [{
                "Sid": "KeyAdmin",
                "Effect": "Allow",
                "Principal": {"AWS": format!("arn:aws:iam::{ACCOUNT}:role/KeyAdmin")},
                "Action": "kms:*",
                "Resource": "*"
            }]
        })
        .to_string()
    }

    /// The reference policy plus a Deny of kms:Decrypt for the operator.
    fn operator_denied_policy() -> String {
        let mut doc: serde_json::Value = serde_json::from_str(&reference_policy()).unwrap();
        doc["Statement"]
            .as_array_mut()
            .unwrap()
            .push(serde_json::json!({
                "Sid": "NoOperatorDecrypt",
                "Effect": "Deny",
                "Principal": {"AWS": OPERATOR},
                "Action": "kms:Decrypt",
                "Resource": "*"
            }));
        doc.to_string()
    }

    #[test]
    fn the_caller_must_be_the_operator_role() {
        // (caller, spec.keyPolicy.operatorRoleArn, Ready reason, steps)
        type Row<'a> = (Option<&'a str>, Option<&'a str>, &'a str, Vec<&'a str>);
        let rows: Vec<Row<'_>> = vec![
            (
                Some(SESSION),
                None,
                "Reconciling",
                vec!["PutKeyPolicy", "UpdateApplication"],
            ),
            // Paths are not in a session ARN: compared by account + role name.
            (
                Some(SESSION),
                Some("arn:aws:iam::123456789012:role/team/Operator"),
                "Reconciling",
                vec!["PutKeyPolicy", "UpdateApplication"],
            ),
            (
                Some("arn:aws:sts::123456789012:assumed-role/Other/s"),
                None,
                "OperatorMismatch",
                vec!["Blocked"],
            ),
            (
                Some("arn:aws:sts::444455556666:assumed-role/Operator/s"),
                None,
                "OperatorMismatch",
                vec!["Blocked"],
            ),
            (
                Some("arn:aws:iam::123456789012:user/alice"),
                None,
                "OperatorMismatch",
                vec!["Blocked"],
            ),
            // The spec's operator role wins over the controller's default.
            (
                Some("arn:aws:sts::123456789012:assumed-role/Other/s"),
                Some("arn:aws:iam::123456789012:role/Other"),
                "Reconciling",
                vec!["PutKeyPolicy", "UpdateApplication"],
            ),
            (
                Some(SESSION),
                Some("arn:aws:iam::123456789012:role/Other"),
                "OperatorMismatch",
                vec!["Blocked"],
            ),
            // Unknown caller (STS unreachable): not checked.
            (
                None,
                None,
                "Reconciling",
                vec!["PutKeyPolicy", "UpdateApplication"],
            ),
        ];
        for (who, spec_role, reason, steps) in rows {
            let mut c = Case::cmk(default_key_policy());
            c.spec.key_policy.operator_role_arn = spec_role.map(str::to_string);
            let me = who.map(caller);
            let p = gated(&c, me.as_ref(), &Observed::Skipped);
            assert_eq!(
                cond(&p, "Ready").0,
                reason,
                "{who:?} / {spec_role:?}: {p:#?}"
            );
            assert_eq!(kinds(&p), steps, "{who:?} / {spec_role:?}");
            if reason == "OperatorMismatch" {
                assert_eq!(cond(&p, "Ready").1, ConditionStatus::False);
                assert_eq!(
                    cond(&p, "EncryptionApplied"),
                    ("OperatorMismatch", ConditionStatus::False)
                );
                assert_eq!(
                    cond(&p, "KeyPolicyCompliant"),
                    ("OperatorMismatch", ConditionStatus::False),
                    "the policy write was dropped too"
                );
                assert_eq!(p.conditions.len(), 4);
            }
        }
    }

    #[test]
    fn a_resource_that_needs_no_write_is_not_affected_by_a_mismatch() {
        let mut c = Case::cmk(reference_policy());
        c.app = Observed::Found(app(
            ApplicationStatus::Running,
            AppliedKeyType::CustomerManagedKey,
            Some(KEY),
        ));
        c.current_key = Observed::Found(key(KEY));
        let other = caller("arn:aws:sts::123456789012:assumed-role/Other/s");
        let p = gated(&c, Some(&other), &Observed::Skipped);
        assert!(p.is_converged(), "{p:#?}");
        assert_eq!(cond(&p, "Ready"), ("Converged", ConditionStatus::True));
        // A mismatch in Audit mode blocks the update only (no policy write was planned).
        let mut c = Case::cmk(reference_policy());
        c.spec.key_policy.mode = KeyPolicyMode::Audit;
        let p = gated(&c, Some(&other), &Observed::Skipped);
        assert_eq!(kinds(&p), ["Blocked"]);
        assert_eq!(cond(&p, "Ready").0, "OperatorMismatch");
        assert_eq!(
            cond(&p, "KeyPolicyCompliant"),
            ("Compliant", ConditionStatus::True)
        );
    }

    #[test]
    fn leaving_a_key_needs_the_operators_rights_on_it() {
        let ok = Observed::Found(reference_policy());
        let transient = Observed::Failed {
            category: ErrorCategory::Transient,
            code: "ThrottlingException".into(),
            message: "slow down".into(),
        };
        let denied_read = Observed::Failed {
            category: ErrorCategory::Terminal,
            code: "AccessDeniedException".into(),
            message: "not allowed".into(),
        };
        // (to the AWS owned key?, key in use, its policy, EncryptionApplied reason, steps)
        type Row = (
            bool,
            Observed<ObservedKey>,
            Observed<String>,
            &'static str,
            Vec<&'static str>,
        );
        let rows: Vec<Row> = vec![
            (
                true,
                Observed::Found(key(KEY)),
                ok.clone(),
                "Updating",
                vec!["UpdateApplication"],
            ),
            (
                false,
                Observed::Found(key(KEY)),
                ok.clone(),
                "Updating",
                vec!["UpdateApplication"],
            ),
            // The account root delegates to IAM: the operator's IAM policy decides.
            (
                true,
                Observed::Found(key(KEY)),
                Observed::Found(default_key_policy()),
                "Updating",
                vec!["UpdateApplication"],
            ),
            // Ignore mode (not read), or a policy we may not read: MSF decides.
            (
                true,
                Observed::Found(key(KEY)),
                Observed::Skipped,
                "Updating",
                vec!["UpdateApplication"],
            ),
            (
                true,
                Observed::Found(key(KEY)),
                denied_read,
                "Updating",
                vec!["UpdateApplication"],
            ),
            (
                true,
                Observed::Found(in_state(KeyState::Disabled)),
                ok.clone(),
                "CurrentKeyUnusable",
                vec!["Blocked"],
            ),
            (
                false,
                Observed::Found(in_state(KeyState::PendingDeletion)),
                ok.clone(),
                "CurrentKeyUnusable",
                vec!["Blocked"],
            ),
            (
                true,
                Observed::NotFound("Key is gone".into()),
                Observed::Skipped,
                "CurrentKeyUnusable",
                vec!["Blocked"],
            ),
            (
                true,
                Observed::Found(key(KEY)),
                Observed::Found(admin_only_policy()),
                "CurrentKeyUnusable",
                vec!["Blocked"],
            ),
            (
                false,
                Observed::Found(key(KEY)),
                Observed::Found(operator_denied_policy()),
                "CurrentKeyUnusable",
                vec!["Blocked"],
            ),
            (
                true,
                Observed::Found(key(KEY)),
                transient.clone(),
                "AwsUnavailable",
                vec!["Requeue"],
            ),
        ];
        for (i, (to_aws_owned, current, policy, reason, steps)) in rows.into_iter().enumerate() {
            let mut c = leaving_key(to_aws_owned, key(KEY));
            c.current_key = current;
            let p = gated(&c, None, &policy);
            assert_eq!(cond(&p, "EncryptionApplied").0, reason, "row {i}: {p:#?}");
            assert_eq!(kinds(&p), steps, "row {i}");
            if reason == "CurrentKeyUnusable" {
                assert_eq!(
                    cond(&p, "Ready"),
                    ("CurrentKeyUnusable", ConditionStatus::False),
                    "row {i}"
                );
                assert_eq!(
                    cond(&p, "EncryptionApplied").1,
                    ConditionStatus::False,
                    "row {i}"
                );
            }
        }
    }

    #[test]
    fn a_blocked_switch_still_writes_the_new_keys_policy() {
        // CMK -> CMK where the new key's policy lacks MSF's statements and the old key is
        // disabled: the policy write happens (Ready says Reconciling), the update does not.
        let mut c = leaving_key(false, in_state(KeyState::Disabled));
        c.policy = Observed::Found(default_key_policy().replace(KEY, KEY2));
        let p = gated(&c, None, &Observed::Found(reference_policy()));
        assert_eq!(kinds(&p), ["PutKeyPolicy", "Blocked"], "{p:#?}");
        assert_eq!(cond(&p, "EncryptionApplied").0, "CurrentKeyUnusable");
        let message = &p
            .conditions
            .iter()
            .find(|c| c.type_ == "EncryptionApplied")
            .unwrap()
            .message;
        assert!(message.contains("Disabled"), "{message}");
        // Staying on the same key needs no check of it.
        let mut c = leaving_key(false, in_state(KeyState::Disabled));
        c.spec = spec(KeyType::CustomerManagedKey, Some(KEY));
        c.desired_key = Observed::Found(in_state(KeyState::Disabled));
        let p = gated(&c, None, &Observed::Skipped);
        assert!(!kinds(&p).contains(&"UpdateApplication"));
        assert_ne!(cond(&p, "EncryptionApplied").0, "CurrentKeyUnusable");
    }
}

/// Issue 8, ownership: a statement under the controller's Sid prefix that is not exactly what
/// the controller writes is a person's. KeyPolicyCompliant=False reason KeyPolicyNotMergeable
/// names its Sid, and nothing is written to the key.
#[test]
fn an_owned_looking_statement_that_is_not_ours_blocks_without_a_write() {
    let mut doc: serde_json::Value = serde_json::from_str(&default_key_policy()).unwrap();
    doc["Statement"]
        .as_array_mut()
        .unwrap()
        .push(serde_json::json!({
            "Sid": "MsfCmkServiceDurableDecrypt-123456789012",
            "Effect": "Deny",
            "Principal": {"Service": "kinesisanalytics.amazonaws.com"},
            "Action": "kms:Decrypt",
            "Resource": "*"
        }));
    let p = Case::cmk(doc.to_string()).run();
    assert_eq!(kinds(&p), ["Blocked"], "{p:#?}");
    assert_eq!(
        cond(&p, "KeyPolicyCompliant"),
        ("KeyPolicyNotMergeable", ConditionStatus::False)
    );
    let c = p
        .conditions
        .iter()
        .find(|c| c.type_ == "KeyPolicyCompliant")
        .unwrap();
    assert!(
        c.message
            .contains("MsfCmkServiceDurableDecrypt-123456789012"),
        "{}",
        c.message
    );
    assert!(
        !p.key_policy
            .as_ref()
            .unwrap()
            .owned_sids
            .contains(&"MsfCmkServiceDurableDecrypt-123456789012".to_string())
    );
}

/// Issue 8: what PutKeyPolicy would refuse is MalformedKeyPolicy, never overwritten.
#[test]
fn a_policy_kms_would_refuse_is_malformed() {
    for bad in [
        r#"{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Principal":{"Service":"*"},"Action":"kms:*","Resource":"*"}]}"#,
        r#"{"Version":"2012-10-17","Statement":[{"Effect":"Deny","Principal":"*","Action":"kms:*","Resource":"*","Conditon":{}}]}"#,
        r#"{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Effect":"Deny","Principal":"*","Action":"kms:*","Resource":"*"}]}"#,
    ] {
        let p = Case::cmk(bad.into()).run();
        assert_eq!(kinds(&p), ["Blocked"], "{bad}");
        assert_eq!(
            cond(&p, "KeyPolicyCompliant").0,
            "MalformedKeyPolicy",
            "{bad}"
        );
    }
}

/// Issue 8: the operator let in only by the account's delegation to IAM is compliant with a
/// warning finding; the AWS recommended organisation perimeter is compliant, its dependence on
/// aws:PrincipalOrgID reported as a finding.
#[test]
fn delegation_and_unknown_keys_are_findings_not_blocks() {
    let mut doc: serde_json::Value = serde_json::from_str(&reference_policy()).unwrap();
    let statements = doc["Statement"].as_array_mut().unwrap();
    statements.drain(0..3);
    statements.push(serde_json::json!({
        "Sid": "Enable IAM User Permissions", "Effect": "Allow",
        "Principal": {"AWS": "arn:aws:iam::123456789012:root"}, "Action": "kms:*", "Resource": "*"}));
    statements.push(serde_json::json!({
        "Sid": "Perimeter", "Effect": "Deny", "Principal": "*", "Action": "kms:*", "Resource": "*",
        "Condition": {"StringNotEqualsIfExists": {"aws:PrincipalOrgID": "o-abc123"},
                      "BoolIfExists": {"aws:PrincipalIsAWSService": "false"}}}));
    let mut c = Case::cmk(doc.to_string());
    c.spec.key_policy.mode = KeyPolicyMode::Audit;
    let p = c.run();
    assert_eq!(
        cond(&p, "KeyPolicyCompliant"),
        ("Compliant", ConditionStatus::True)
    );
    let findings = &p.key_policy.as_ref().unwrap().findings;
    assert!(
        findings
            .iter()
            .any(|f| f.starts_with("OperatorReliesOnIamPolicy: Enable IAM User Permissions")),
        "{findings:?}"
    );
    assert!(
        findings
            .iter()
            .any(|f| f.starts_with("DenyDependsOnUnknownKey: Perimeter")),
        "{findings:?}"
    );
}
