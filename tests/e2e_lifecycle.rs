//! End-to-end scenarios of the update lifecycle (issue 9) on a real kube-apiserver: the
//! controller binary (`run`, as its ServiceAccount) against the embedded emulator, which fails
//! the way AWS does.
//!
//! - **Rollback**: MSF accepts the update, the restart fails and MSF rolls the application
//!   back. The controller reports `UpdateRolledBack` and never updates again for that
//!   generation, across many resyncs; the `msfcmk.dev/retry-update` annotation allows exactly
//!   one more try.
//! - **Settle**: key policy writes become visible to MSF only after a propagation delay (as KMS
//!   is eventually consistent). The controller waits `--policy-settle` after its write before
//!   UpdateApplication, so MSF never refuses the update; the emulator's call log (not the
//!   controller's own report) proves the order and the gap.

mod support;

use std::time::Duration;

use msf_cmk_controller::domain::AppliedKeyType;
use msf_cmk_controller::emulator::Fault;
use serde_json::Value;
use support::scenario::{RESYNC, Replica, Scenario, appenc, condition};

fn update_outcomes(s: &Scenario) -> Vec<String> {
    s.emu
        .calls(0)
        .into_iter()
        .filter(|c| c.operation == "UpdateApplication")
        .map(|c| c.outcome)
        .collect()
}

#[test]
fn rolled_back_update_is_reported_and_not_repeated_until_retry_is_asked() {
    let mut s = Scenario::shared("rollback");
    let ns = s.namespace("rollback");
    s.application("risky");
    let key = s.key();
    s.emu.set_fault(
        "UpdateApplication",
        Fault {
            application: Some("risky".into()),
            ..Fault::rollback()
        },
    );
    s.start_replica(Replica::new("c0"));
    s.apply(&ns, &appenc("risky", "risky", Some(&key), ""));

    let o = s.wait_condition(
        &ns,
        "risky",
        "EncryptionApplied",
        "False",
        "UpdateRolledBack",
    );
    let ready = condition(&o, "Ready").expect("Ready");
    assert_eq!(ready["status"], "False", "{ready}");
    assert_eq!(ready["reason"], "UpdateRolledBack", "{ready}");
    let last = &o["status"]["lastUpdate"];
    assert_eq!(last["outcome"], "RolledBack", "{last:#}");
    assert_eq!(last["generation"], 1, "{last:#}");
    assert_eq!(last["keyArn"], key.as_str(), "{last:#}");
    assert!(
        last["operationId"]
            .as_str()
            .is_some_and(|id| !id.is_empty()),
        "the operation MSF returned is recorded: {last:#}"
    );
    assert!(
        s.event_reasons(&ns, "risky")
            .iter()
            .any(|r| r == "UpdateRolledBack"),
        "a Warning event UpdateRolledBack: {:?}",
        s.event_reasons(&ns, "risky")
    );
    assert_eq!(
        s.encryption("risky").0,
        AppliedKeyType::AwsOwnedKey,
        "MSF rolled the application back to its previous key"
    );

    // Many resyncs later: still exactly one restart for this generation.
    std::thread::sleep(RESYNC * 4);
    assert_eq!(
        s.calls("UpdateApplication"),
        1,
        "a rolled back update was repeated: {:?}",
        update_outcomes(&s)
    );
    let o = s.must_get(&ns, "risky");
    assert_eq!(
        condition(&o, "EncryptionApplied").map(|c| c["reason"].clone()),
        Some(Value::from("UpdateRolledBack"))
    );

    // The cause is fixed; a person asks for one more try.
    s.emu.clear_faults();
    s.kubectl(&[
        "annotate",
        "-n",
        &ns,
        "appenc/risky",
        "msfcmk.dev/retry-update=fixed-1",
    ]);
    let o = s.wait_converged(&ns, "risky");
    assert_eq!(o["status"]["lastUpdate"]["outcome"], "Successful", "{o:#}");
    assert_eq!(o["status"]["lastUpdate"]["retry"], "fixed-1", "{o:#}");
    assert_eq!(s.calls("UpdateApplication"), 2, "exactly one more try");
    assert_eq!(s.encryption("risky").0, AppliedKeyType::CustomerManagedKey);
    s.assert_no_panic();
}

#[test]
fn update_waits_for_the_key_policy_to_settle() {
    const PROPAGATION: Duration = Duration::from_secs(2);
    const SETTLE: Duration = Duration::from_secs(4);
    let mut s = Scenario::shared("settle");
    let ns = s.namespace("settle");
    s.application("slowkms");
    let key = s.key();
    s.emu.set_policy_propagation(PROPAGATION);
    s.start_replica(Replica::new("c0").env("MSF_CMK_POLICY_SETTLE", "4s"));
    s.apply(&ns, &appenc("slowkms", "slowkms", Some(&key), ""));
    s.wait_converged(&ns, "slowkms");

    let calls = s.emu.calls(0);
    let put = calls
        .iter()
        .filter(|c| c.operation == "PutKeyPolicy" && c.outcome == "ok")
        .map(|c| c.time_ms)
        .max()
        .expect("the controller wrote the key policy");
    let updates: Vec<_> = calls
        .iter()
        .filter(|c| c.operation == "UpdateApplication")
        .collect();
    assert_eq!(
        updates.len(),
        1,
        "one UpdateApplication, never refused by MSF for a policy it could not see yet: {updates:?}"
    );
    assert_eq!(updates[0].outcome, "ok", "{updates:?}");
    let gap = updates[0].time_ms.saturating_sub(put);
    assert!(
        gap >= SETTLE.as_millis() as u64,
        "UpdateApplication {gap} ms after PutKeyPolicy; the settle time is {SETTLE:?}"
    );
    assert_eq!(
        s.encryption("slowkms").0,
        AppliedKeyType::CustomerManagedKey
    );
    s.assert_no_panic();
}
