//! Who calls, and the key being left (issue 9, items 4 and 5), end to end against the embedded
//! emulator through the real SDK adapters (STS included) and the same `reconcile` as `run` and
//! `apply`. The emulator's call counts prove that a blocked resource made no write.

use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use msf_cmk_controller::api::{
    ApplicationEncryptionSpec, ApplicationEncryptionStatus, DeletionPolicy, KeyPolicySpec, KeyType,
    condition_types,
};
use msf_cmk_controller::aws::{ConnectOptions, StsApi, connect};
use msf_cmk_controller::controller::context::{Core, Settings};
use msf_cmk_controller::controller::identity;
use msf_cmk_controller::controller::metrics::Metrics;
use msf_cmk_controller::controller::reconcile::{self, Mode, Next, Outcome, Subject};
use msf_cmk_controller::controller::tenancy::Tenancy;
use msf_cmk_controller::domain::{ApplicationStatus, AppliedKeyType};
use msf_cmk_controller::emulator::{Emulator, EmulatorConfig, EmulatorHandle};
use msf_cmk_controller::planner::Defaults;

const REGION: &str = "us-east-1";
const APP: &str = "identity-app";

struct Env {
    emu: EmulatorHandle,
    core: Core,
    sts: Arc<dyn StsApi>,
}

/// The emulator answers as `caller`; the key policies name `operator`.
async fn env(caller: &str, operator: &str) -> Env {
    let emu = Emulator::start(EmulatorConfig {
        update_delay: Duration::from_millis(40),
        caller_arn: Some(caller.into()),
        ..EmulatorConfig::default()
    })
    .await
    .unwrap();
    let mut opts = ConnectOptions::local(emu.endpoint());
    opts.max_attempts = 1;
    let aws = connect(&opts).await.unwrap();
    let core = Core::new(
        aws.msf,
        aws.kms,
        Defaults {
            region: REGION.into(),
            operator_role_arn: Some(operator.into()),
        },
        Tenancy(None),
        Settings {
            policy_share_window: Duration::ZERO,
            policy_settle: Duration::ZERO,
            ..Settings::default()
        },
        Arc::new(Metrics::new()),
    );
    identity::ask_once(aws.sts.as_ref(), &core.caller).await;
    emu.create_application(REGION, APP, "FLINK-1_20", ApplicationStatus::Running)
        .unwrap();
    Env {
        emu,
        core,
        sts: aws.sts,
    }
}

fn role(account: &str, name: &str) -> String {
    format!("arn:aws:iam::{account}:role/{name}")
}

fn spec(key: Option<&str>) -> ApplicationEncryptionSpec {
    ApplicationEncryptionSpec {
        application_name: APP.into(),
        region: Some(REGION.into()),
        key_type: if key.is_some() {
            KeyType::CustomerManagedKey
        } else {
            KeyType::AwsOwnedKey
        },
        key_id: key.map(str::to_string),
        key_policy: KeyPolicySpec::default(),
        deletion_policy: DeletionPolicy::Retain,
        suspend: false,
        allow_stateless_restart: false,
    }
}

impl Env {
    async fn once(
        &self,
        spec: &ApplicationEncryptionSpec,
        previous: Option<&ApplicationEncryptionStatus>,
    ) -> Outcome {
        let subject = Subject {
            namespace: "ns",
            name: "r",
            spec,
            generation: Some(1),
            previous,
            conflict: None,
            retry_update: None,
        };
        reconcile::reconcile(&self.core, &subject, &[], Mode::Execute, Utc::now()).await
    }

    /// Reconciles until the resource is no longer waiting (as the requeue would).
    async fn converge(&self, spec: &ApplicationEncryptionSpec) -> Outcome {
        let mut previous: Option<ApplicationEncryptionStatus> = None;
        for _ in 0..200 {
            let o = self.once(spec, previous.as_ref()).await;
            match o.next {
                Next::Waiting(_) | Next::Failed(_) => {
                    previous = Some(o.status.clone());
                    tokio::time::sleep(Duration::from_millis(30)).await;
                }
                _ => return o,
            }
        }
        panic!("did not converge");
    }

    fn writes(&self) -> (u64, u64) {
        (
            self.emu.call_count("PutKeyPolicy"),
            self.emu.call_count("UpdateApplication"),
        )
    }
}

fn condition(o: &Outcome, type_: &str) -> (String, String, String) {
    let c = o
        .status
        .conditions
        .iter()
        .find(|c| c.type_ == type_)
        .unwrap_or_else(|| panic!("no {type_} in {:#?}", o.status));
    (
        c.status.to_string(),
        c.reason.to_string(),
        c.message.to_string(),
    )
}

#[tokio::test]
async fn a_controller_running_as_another_role_writes_nothing() {
    let account = msf_cmk_controller::emulator::DEFAULT_ACCOUNT;
    let e = env(&role(account, "someone-else"), &role(account, "operator")).await;
    let me = e.core.caller.get().expect("GetCallerIdentity answered");
    assert_eq!(
        me.arn,
        format!("arn:aws:sts::{account}:assumed-role/someone-else/msf-cmk-controller")
    );
    let key = e.emu.create_key(REGION, None).unwrap();

    let o = e.converge(&spec(Some(&key))).await;
    let (status, reason, message) = condition(&o, condition_types::READY);
    assert_eq!(
        (status.as_str(), reason.as_str()),
        ("False", "OperatorMismatch")
    );
    assert!(message.contains("someone-else"), "{message}");
    assert_eq!(o.next, Next::Blocked);
    assert_eq!(e.writes(), (0, 0), "no PutKeyPolicy, no UpdateApplication");

    // The controller is re-pointed at the operator role (a credential refresh): the next ask
    // sees it and the same resource converges.
    e.emu.set_caller_arn(&role(account, "operator")).unwrap();
    identity::ask(e.sts.as_ref(), &e.core.caller).await.unwrap();
    let o = e.converge(&spec(Some(&key))).await;
    assert_eq!(o.ready(), "True", "{:#?}", o.status);
    assert_eq!(e.writes(), (1, 1));
}

#[tokio::test]
async fn an_unknown_caller_is_not_checked() {
    let account = msf_cmk_controller::emulator::DEFAULT_ACCOUNT;
    let e = env(&role(account, "operator"), &role(account, "operator")).await;
    // As if STS had never answered: the check is off, nothing else changes.
    let core_without = Core::new(
        e.core.msf.clone(),
        e.core.kms.clone(),
        e.core.defaults.clone(),
        Tenancy(None),
        Settings {
            policy_share_window: Duration::ZERO,
            policy_settle: Duration::ZERO,
            ..Settings::default()
        },
        Arc::new(Metrics::new()),
    );
    assert!(core_without.caller.get().is_none());
    let key = e.emu.create_key(REGION, None).unwrap();
    let env2 = Env {
        emu: e.emu.clone(),
        core: core_without,
        sts: e.sts.clone(),
    };
    let o = env2.converge(&spec(Some(&key))).await;
    assert_eq!(o.ready(), "True", "{:#?}", o.status);
}

/// Converges the application onto a CMK the controller prepared; returns the key.
async fn on_a_cmk(e: &Env) -> String {
    let key = e.emu.create_key(REGION, None).unwrap();
    let o = e.converge(&spec(Some(&key))).await;
    assert_eq!(o.ready(), "True", "{:#?}", o.status);
    for _ in 0..200 {
        if e.emu
            .application(REGION, APP)
            .is_some_and(|a| a.status.is_updatable())
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    key
}

#[tokio::test]
async fn leaving_a_disabled_key_is_blocked_without_an_update() {
    let account = msf_cmk_controller::emulator::DEFAULT_ACCOUNT;
    let operator = role(account, "msf-cmk-operator");
    let e = env(&operator, &operator).await;
    let old = on_a_cmk(&e).await;
    let new = e.emu.create_key(REGION, None).unwrap();
    e.emu.disable_key(&old).unwrap();
    let before = e.writes();

    for target in [None, Some(new.as_str())] {
        let o = e.converge(&spec(target)).await;
        let (status, reason, message) = condition(&o, condition_types::ENCRYPTION_APPLIED);
        assert_eq!(
            (status.as_str(), reason.as_str()),
            ("False", "CurrentKeyUnusable"),
            "to {target:?}: {message}"
        );
        assert!(message.contains("Disabled"), "{message}");
        assert_eq!(o.next, Next::Blocked);
        assert_eq!(
            e.writes().1,
            before.1,
            "to {target:?}: no UpdateApplication while the key being left is disabled"
        );
    }

    // Enabled again: the switch happens, once.
    e.emu.enable_key(&old).unwrap();
    let o = e.converge(&spec(None)).await;
    assert_eq!(o.ready(), "True", "{:#?}", o.status);
    assert_eq!(e.writes().1, before.1 + 1);
    let app = e.emu.application(REGION, APP).unwrap();
    assert_eq!(app.encryption.key_type, AppliedKeyType::AwsOwnedKey);
}

#[tokio::test]
async fn leaving_a_key_whose_policy_shuts_the_operator_out_is_blocked() {
    let account = msf_cmk_controller::emulator::DEFAULT_ACCOUNT;
    let operator = role(account, "msf-cmk-operator");
    let e = env(&operator, &operator).await;
    let old = on_a_cmk(&e).await;
    // The key administrator rewrote the policy: only they and MSF's service principals remain.
    let admin_only = serde_json::json!({
        "Version": "2012-10-17",
        "Statement": [{
            "Sid": "KeyAdmin",
            "Effect": "Allow",
            "Principal": {"AWS": role(account, "KeyAdmin")},
            "Action": "kms:*",
            "Resource": "*"
        }]
    })
    .to_string();
    e.emu.put_key_policy_direct(&old, &admin_only).unwrap();
    let before = e.writes();

    let o = e.converge(&spec(None)).await;
    let (status, reason, message) = condition(&o, condition_types::ENCRYPTION_APPLIED);
    assert_eq!(
        (status.as_str(), reason.as_str()),
        ("False", "CurrentKeyUnusable"),
        "{message}"
    );
    assert!(message.contains(&operator), "{message}");
    let (_, ready, _) = condition(&o, condition_types::READY);
    assert_eq!(ready, "CurrentKeyUnusable");
    assert_eq!(e.writes(), before, "no write at all");
    // The policy of the key being left was read to decide (GetKeyPolicy of the old key).
    assert!(e.emu.call_count("GetKeyPolicy") > 0);
}
