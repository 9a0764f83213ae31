//! `completions <shell>` prints a script generated from the command tree.

use std::process::Command;

fn completions(shell: &str) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_msf-cmk-controller"))
        .args(["completions", shell])
        .output()
        .expect("run the binary")
}

#[test]
fn bash_script_completes_the_subcommands() {
    let out = completions("bash");
    assert!(out.status.success(), "{out:?}");
    let script = String::from_utf8(out.stdout).unwrap();
    assert!(
        script.contains("complete -F"),
        "not a bash completion script"
    );
    for sub in [
        "run",
        "plan",
        "apply",
        "crd",
        "policy",
        "iam-policy",
        "completions",
    ] {
        assert!(script.contains(sub), "{sub} missing from the script");
    }
    // Flags of a subcommand are completed too.
    assert!(script.contains("--dry-run") || script.contains("--filename"));
}

#[test]
fn every_shell_clap_complete_knows_works_and_an_unknown_one_is_bad_input() {
    for shell in ["bash", "zsh", "fish", "elvish", "powershell"] {
        let out = completions(shell);
        assert!(
            out.status.success() && !out.stdout.is_empty(),
            "{shell}: {out:?}"
        );
    }
    let out = completions("tcsh");
    assert_eq!(out.status.code(), Some(2), "{out:?}");
}
