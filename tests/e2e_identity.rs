//! Know who we are (issue 9, item 5), on a real kube-apiserver: `msf-cmk-controller run` asks
//! `sts:GetCallerIdentity` at start; when AWS says it is not the operator role the key
//! policies are written for, the resource reports `OperatorMismatch` (status and a Warning
//! event) and nothing is written in AWS.

mod support;

use std::time::Duration;

use support::scenario::{ACCOUNT, Replica, Scenario, appenc, condition};

#[test]
fn a_controller_running_as_another_role_reports_operator_mismatch_and_writes_nothing() {
    let mut s = Scenario::shared("identity");
    let ns = s.namespace("identity");
    let key = s.key();
    s.application("identity-app");
    let someone_else = format!("arn:aws:iam::{ACCOUNT}:role/someone-else");
    s.emu
        .set_caller_arn(&someone_else)
        .expect("the emulator answers as another role");
    s.start_replica(Replica::new("c0"));

    s.apply(
        &ns,
        &appenc("identity-test", "identity-app", Some(&key), ""),
    );
    let o = s.wait_condition(&ns, "identity-test", "Ready", "False", "OperatorMismatch");
    let message = condition(&o, "EncryptionApplied").expect("EncryptionApplied")["message"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    assert!(
        message.contains("assumed-role/someone-else"),
        "the message names who the controller is: {message}"
    );
    assert_eq!(
        condition(&o, "KeyPolicyCompliant").expect("KeyPolicyCompliant")["reason"],
        "OperatorMismatch"
    );
    // A few resyncs later still nothing written, and the user was told by an event.
    std::thread::sleep(Duration::from_secs(5));
    assert_eq!(s.writes(), (0, 0), "no PutKeyPolicy, no UpdateApplication");
    assert!(s.calls("GetCallerIdentity") >= 1);
    assert!(
        s.event_reasons(&ns, "identity-test")
            .iter()
            .any(|r| r == "OperatorMismatch"),
        "events: {:?}",
        s.event_reasons(&ns, "identity-test")
    );
    assert!(
        !s.log_lines(0, "someone-else").is_empty(),
        "run warns at start that it is not the operator role"
    );
    s.assert_no_panic();
}
