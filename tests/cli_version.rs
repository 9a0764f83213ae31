//! `--version` names the version and the git revision, the same one `msfcmk_build_info` exports.

use std::process::Command;

use msf_cmk_controller::build_info::{GIT_REVISION, VERSION};
use msf_cmk_controller::controller::metrics::Metrics;

fn version_output() -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_msf-cmk-controller"))
        .arg("--version")
        .output()
        .expect("run the binary");
    assert!(out.status.success(), "{out:?}");
    String::from_utf8(out.stdout).unwrap()
}

#[test]
fn version_prints_the_version_and_the_git_revision() {
    let text = version_output();
    assert_eq!(
        text.trim(),
        format!("msf-cmk-controller {VERSION} (git revision {GIT_REVISION})")
    );
    // A revision (short hash or one given by MSF_CMK_GIT_REVISION), or `unknown` without one.
    assert!(!GIT_REVISION.is_empty() && !GIT_REVISION.contains(char::is_whitespace));
}

#[test]
fn build_info_metric_reports_the_same_revision() {
    let text = Metrics::new().encode();
    let want = format!(r#"version="{VERSION}",git_revision="{GIT_REVISION}""#);
    assert!(
        // Whatever the metric prefix (msfcmk_ or msf_cmk_), the one build_info series.
        text.lines()
            .any(|l| l.contains("build_info{") && l.contains(&want)),
        "{want} not in:\n{text}"
    );
}

#[test]
fn a_checkout_reports_its_head() {
    // Only meaningful when built from this git checkout without an explicit revision.
    let root = env!("CARGO_MANIFEST_DIR");
    let explicit = option_env!("MSF_CMK_GIT_REVISION").is_some_and(|r| !r.trim().is_empty());
    if explicit || !std::path::Path::new(root).join(".git").exists() {
        return;
    }
    assert_ne!(GIT_REVISION, "unknown");
    assert!(
        GIT_REVISION.chars().all(|c| c.is_ascii_hexdigit()),
        "{GIT_REVISION}"
    );
}
