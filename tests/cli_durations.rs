//! Duration flags (`--resync-period`, `--lease-duration`, `--policy-settle`, `apply --timeout`,
//! `--poll-interval`) take humantime's forms (`1m30s`, `1h 5m`, `250ms`) and, as before
//! humantime, a bare number of seconds. Parsed through the real command tree (exact values),
//! and refused forms through the binary (exit code 2, the flag and the value named).

use std::process::Command;
use std::time::Duration;

use clap::Parser;
use msf_cmk_controller::cli::{Cli, Command as Sub};

fn apply(extra: &[&str]) -> Result<msf_cmk_controller::cli::plan_cmd::ApplyArgs, clap::Error> {
    let mut argv = vec!["msf-cmk-controller", "apply", "-f", "x.yaml"];
    argv.extend_from_slice(extra);
    match Cli::try_parse_from(argv)?.command {
        Sub::Apply(a) => Ok(a),
        other => panic!("parsed as {other:?}"),
    }
}

fn run(extra: &[&str]) -> Result<msf_cmk_controller::cli::run_cmd::RunArgs, clap::Error> {
    let mut argv = vec!["msf-cmk-controller", "run"];
    argv.extend_from_slice(extra);
    match Cli::try_parse_from(argv)?.command {
        Sub::Run(a) => Ok(a),
        other => panic!("parsed as {other:?}"),
    }
}

const fn secs(n: u64) -> Duration {
    Duration::from_secs(n)
}

#[test]
fn humantime_forms_and_bare_seconds_are_accepted() {
    let cases: &[(&str, Duration)] = &[
        ("1m30s", secs(90)),
        ("1m 30s", secs(90)),
        ("90", secs(90)),
        ("90s", secs(90)),
        ("2min", secs(120)),
        ("1h", secs(3600)),
        ("1h 5m", secs(3900)),
        ("250ms", Duration::from_millis(250)),
        ("1.5s", Duration::from_millis(1500)),
    ];
    for (text, want) in cases {
        let a = apply(&[
            "--timeout",
            text,
            "--poll-interval",
            text,
            "--policy-settle",
            text,
        ])
        .unwrap_or_else(|e| panic!("{text:?} refused: {e}"));
        assert_eq!(
            (a.timeout, a.poll_interval, a.policy_settle),
            (*want, *want, *want),
            "{text:?}"
        );
        let r = run(&[
            "--resync-period",
            text,
            "--lease-duration",
            text,
            "--policy-settle",
            text,
        ])
        .unwrap_or_else(|e| panic!("{text:?} refused: {e}"));
        assert_eq!(
            (r.resync_period, r.lease_duration, r.policy_settle),
            (*want, *want, *want),
            "{text:?}"
        );
    }
}

#[test]
fn defaults_are_unchanged() {
    let a = apply(&[]).unwrap();
    assert_eq!(
        (a.timeout, a.poll_interval, a.policy_settle),
        (secs(900), secs(1), secs(20))
    );
    let r = run(&[]).unwrap();
    assert_eq!(
        (
            r.resync_period,
            r.lease_duration,
            r.policy_settle,
            r.poll_interval
        ),
        (secs(300), secs(15), secs(20), secs(1))
    );
}

#[test]
fn settle_alone_may_be_zero() {
    for zero in ["0", "0s", "0ms", "0m"] {
        assert_eq!(
            apply(&["--policy-settle", zero]).unwrap().policy_settle,
            Duration::ZERO
        );
        assert_eq!(
            run(&["--policy-settle", zero]).unwrap().policy_settle,
            Duration::ZERO
        );
        assert!(apply(&["--timeout", zero]).is_err(), "--timeout {zero}");
        assert!(
            apply(&["--poll-interval", zero]).is_err(),
            "--poll-interval {zero}"
        );
        assert!(
            run(&["--resync-period", zero]).is_err(),
            "--resync-period {zero}"
        );
        assert!(
            run(&["--lease-duration", zero]).is_err(),
            "--lease-duration {zero}"
        );
    }
}

/// Runs the binary; returns (exit code, stderr).
fn binary(args: &[&str]) -> (Option<i32>, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_msf-cmk-controller"))
        .args(args)
        .env_remove("MSF_CMK_POLICY_SETTLE")
        .env_remove("MSF_CMK_RESYNC_PERIOD")
        .env_remove("MSF_CMK_LEASE_DURATION")
        .output()
        .expect("run the binary");
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn refused_forms_exit_2_naming_the_flag_and_the_value() {
    let refused = [
        "5x",
        "soon",
        "-5s",
        "1m30",
        "m",
        "",
        "99999999999999999999",
        "1.5",
    ];
    for bad in refused {
        let (code, err) = binary(&["apply", "-f", "x.yaml", &format!("--timeout={bad}")]);
        assert_eq!(code, Some(2), "--timeout {bad:?}: {err}");
        assert!(
            err.contains(&format!("'{bad}'")) && err.contains("--timeout"),
            "--timeout {bad:?}: {err}"
        );
        assert!(!err.contains("panicked"), "{err}");
    }
    let (code, err) = binary(&["apply", "-f", "x.yaml", "--poll-interval", "0s"]);
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("must be positive"), "{err}");
}

#[test]
fn refused_forms_from_the_environment_are_refused_too() {
    let out = Command::new(env!("CARGO_BIN_EXE_msf-cmk-controller"))
        .args(["apply", "-f", "x.yaml"])
        .env("MSF_CMK_POLICY_SETTLE", "twenty")
        .output()
        .expect("run the binary");
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(
        err.contains("'twenty'") && err.contains("--policy-settle"),
        "{err}"
    );
}
