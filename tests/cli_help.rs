//! The command line explains itself: every command and argument has a help line, flags that
//! can repeat say so, `plan`/`apply --help` list their exit codes, and `-o` is the same flag
//! (name, values, default) on every command that prints a result. Read from clap's command
//! tree, so a new flag without help fails here.

use clap::{ArgAction, Command, CommandFactory};
use msf_cmk_controller::cli::Cli;

/// Every command in the tree with its path (`msf-cmk-controller policy check`).
fn commands() -> Vec<(String, Command)> {
    fn walk(cmd: &Command, path: String, out: &mut Vec<(String, Command)>) {
        out.push((path.clone(), cmd.clone()));
        for sub in cmd.get_subcommands() {
            walk(sub, format!("{path} {}", sub.get_name()), out);
        }
    }
    let mut out = Vec::new();
    let root = Cli::command();
    walk(&root, root.get_name().to_string(), &mut out);
    out
}

fn help_of(arg: &clap::Arg) -> String {
    arg.get_long_help()
        .or(arg.get_help())
        .map(|h| h.to_string())
        .unwrap_or_default()
}

#[test]
fn every_command_and_argument_has_a_help_line() {
    let mut missing = Vec::new();
    for (path, cmd) in commands() {
        if cmd.get_about().is_none()
            && path.contains(' ')
            && path.split(' ').next_back() != Some("help")
        {
            missing.push(format!("{path} (the command itself)"));
        }
        for arg in cmd.get_arguments() {
            let id = arg.get_id().as_str();
            if arg.is_hide_set() || id == "help" || id == "version" {
                continue;
            }
            if help_of(arg).trim().is_empty() {
                missing.push(format!("{path} --{}", arg.get_long().unwrap_or(id)));
            }
        }
    }
    assert!(
        missing.is_empty(),
        "no help line:\n  {}",
        missing.join("\n  ")
    );
}

#[test]
fn flags_that_can_repeat_say_so() {
    let mut silent = Vec::new();
    for (path, cmd) in commands() {
        for arg in cmd.get_arguments() {
            // A positional list is visibly a list; a flag given several times is not.
            if arg.is_positional() || !matches!(arg.get_action(), ArgAction::Append) {
                continue;
            }
            // Flags that take several values at once (`-f a b`) show `...` in the usage.
            if arg.get_num_args().is_some_and(|n| n.max_values() > 1) {
                continue;
            }
            let help = help_of(arg).to_ascii_lowercase();
            if !help.contains("repeat") && arg.get_value_delimiter().is_none() {
                silent.push(format!("{path} --{}", arg.get_long().unwrap_or_default()));
            }
        }
    }
    assert!(
        silent.is_empty(),
        "repeatable flags whose help does not say so:\n  {}",
        silent.join("\n  ")
    );
}

#[test]
fn the_policy_and_iam_flags_that_repeat_are_the_ones_that_say_so() {
    let commands = commands();
    let find = |path: &str| {
        commands
            .iter()
            .find(|(p, _)| p == path)
            .unwrap_or_else(|| panic!("no command {path}"))
            .1
            .clone()
    };
    for (path, flag) in [
        ("msf-cmk-controller policy merge", "application-arn"),
        ("msf-cmk-controller policy merge", "remove-application-arn"),
        ("msf-cmk-controller policy simulate", "context"),
        ("msf-cmk-controller policy simulate", "unknown"),
        ("msf-cmk-controller iam-policy", "application-arn"),
        ("msf-cmk-controller iam-policy", "key-arn"),
    ] {
        let cmd = find(path);
        let arg = cmd
            .get_arguments()
            .find(|a| a.get_long() == Some(flag))
            .unwrap_or_else(|| panic!("{path} has no --{flag}"));
        assert!(
            matches!(arg.get_action(), ArgAction::Append),
            "{path} --{flag} repeats"
        );
        assert!(help_of(arg).contains("repeat"), "{path} --{flag}");
    }
}

#[test]
fn every_command_that_prints_a_result_has_the_same_output_flag() {
    let with_output: Vec<(String, Command)> = commands()
        .into_iter()
        .filter(|(_, c)| c.get_arguments().any(|a| a.get_id() == "output"))
        .collect();
    let names: Vec<&str> = with_output.iter().map(|(p, _)| p.as_str()).collect();
    for expected in [
        "msf-cmk-controller plan",
        "msf-cmk-controller apply",
        "msf-cmk-controller policy simulate",
        "msf-cmk-controller policy check",
        "msf-cmk-controller policy merge",
        "msf-cmk-controller iam-policy",
    ] {
        assert!(names.contains(&expected), "{expected} has no -o: {names:?}");
    }
    for (path, cmd) in &with_output {
        let arg = cmd
            .get_arguments()
            .find(|a| a.get_id() == "output")
            .unwrap();
        assert_eq!(arg.get_long(), Some("output"), "{path}");
        assert_eq!(arg.get_short(), Some('o'), "{path}");
        let values: Vec<String> = arg
            .get_possible_values()
            .iter()
            .map(|v| v.get_name().to_string())
            .collect();
        assert_eq!(values, ["text", "json", "yaml"], "{path}");
        let default: Vec<String> = arg
            .get_default_values()
            .iter()
            .map(|v| v.to_string_lossy().into_owned())
            .collect();
        assert_eq!(default, ["text"], "{path}");
    }
}

#[test]
fn plan_and_apply_help_list_the_exit_codes() {
    let bin = env!("CARGO_BIN_EXE_msf-cmk-controller");
    for (cmd, codes) in [
        ("plan", &["0", "1", "2", "3"][..]),
        ("apply", &["0", "1", "2"][..]),
    ] {
        let out = std::process::Command::new(bin)
            .args([cmd, "--help"])
            .output()
            .expect("run");
        assert!(out.status.success(), "{cmd} --help");
        let text = String::from_utf8_lossy(&out.stdout);
        let section = text
            .split("Exit codes:")
            .nth(1)
            .unwrap_or_else(|| panic!("{cmd} --help has no exit codes:\n{text}"));
        for code in codes {
            assert!(
                section
                    .lines()
                    .any(|l| l.trim_start().starts_with(&format!("{code} "))),
                "{cmd} --help does not explain exit code {code}:\n{section}"
            );
        }
    }
}

/// Runs the binary; returns (exit code, stdout).
fn run(args: &[&str]) -> (Option<i32>, String) {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_msf-cmk-controller"))
        .args(args)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .expect("run");
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
    )
}

#[test]
fn json_and_yaml_are_the_same_document_for_every_offline_command() {
    const APP: &str = "arn:aws:kinesisanalytics:us-east-1:123456789012:application/orders";
    const ROLE: &str = "arn:aws:iam::123456789012:role/msf-cmk-controller";
    const KEY: &str = "arn:aws:kms:us-east-1:123456789012:key/1234abcd-12ab-34cd-56ef-1234567890ab";
    let policy = "examples/key-policy.json";
    let commands: Vec<Vec<&str>> = vec![
        vec![
            "policy",
            "check",
            "--policy",
            policy,
            "--application-arn",
            APP,
            "--operator-role-arn",
            ROLE,
        ],
        vec![
            "policy",
            "simulate",
            "--policy",
            policy,
            "--principal",
            "Service:kinesisanalytics.amazonaws.com",
            "--action",
            "kms:Decrypt",
        ],
        vec![
            "policy",
            "merge",
            "--policy",
            policy,
            "--application-arn",
            APP,
            "--operator-role-arn",
            ROLE,
        ],
        vec![
            "iam-policy",
            "--application-arn",
            APP,
            "--key-arn",
            KEY,
            "--operator-role-arn",
            ROLE,
        ],
    ];
    for args in commands {
        let with = |format: &str| {
            let mut a = args.clone();
            a.extend(["-o", format]);
            run(&a)
        };
        let (json_code, json) = with("json");
        let (yaml_code, yaml) = with("yaml");
        let (text_code, _) = run(&args);
        assert_eq!(
            json_code, text_code,
            "{args:?}: the format does not change the verdict"
        );
        assert_eq!(yaml_code, text_code, "{args:?}");
        let from_json: serde_json::Value =
            serde_json::from_str(&json).unwrap_or_else(|e| panic!("{args:?} -o json: {e}\n{json}"));
        let from_yaml: serde_json::Value =
            yaml_serde::from_str(&yaml).unwrap_or_else(|e| panic!("{args:?} -o yaml: {e}\n{yaml}"));
        assert_eq!(from_json, from_yaml, "{args:?}");
        assert!(from_json.is_object(), "{args:?}: {json}");
    }
}
