//! Every condition reason the code can emit is in docs/controller.md's reasons table.
//!
//! Reasons are string literals spread over the planner and the controller, so the test reads
//! the sources: every CamelCase string literal outside the test modules of `src/planner.rs`,
//! `src/planner/*.rs` and `src/controller/*.rs` is a reason unless it is listed below as
//! something else (an AWS operation or error code, an event reason, ...). A new reason then
//! fails this test until it has a row in the table, or is consciously listed as not a reason.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// CamelCase literals in the scanned code that are not condition reasons, and why.
const NOT_REASONS: &[&str] = &[
    // AWS operations (messages, metrics labels, call budgets).
    "DescribeApplication",
    "DescribeApplicationOperation",
    "ListApplicationOperations",
    "ListApplications",
    "DescribeKey",
    "GetKeyPolicy",
    "PutKeyPolicy",
    "UpdateApplication",
    "GetCallerIdentity",
    // AWS error codes the code classifies (codes ending in `Exception` are skipped anyway).
    "AccessDenied",
    "RequestLimitExceeded",
    "RequestThrottled",
    "SlowDown",
    "Throttling",
    "ExpiredToken",
    "Http429",
    // Internal error codes carried in `AwsError.code`, never a condition reason.
    "FromInner",
    "NoOperationId",
    "LeaseNotRenewed",
    // Kubernetes Event reasons and actions (documented under "One reconcile" and "Deletion").
    "KeyPolicyUpdated",
    "EncryptionUpdated",
    "CleanupFailed",
    "Admit",
    "Reconcile",
    "Cleanup",
    // Why a cleanup waits (logged; the finalizer stays): documented under "Deletion".
    "RestartInProgress",
    // Condition types (`KeyUsable` and `Reconciling` are reasons as well).
    "Ready",
    "KeyPolicyCompliant",
    "EncryptionApplied",
    "Stalled",
    // Condition statuses, policy decisions shown in messages, kinds and enum values.
    "True",
    "False",
    "Unknown",
    "Allow",
    "ImplicitDeny",
    "ApplicationEncryption",
    "AwsOwnedKey",
    "CustomerManagedKey",
    "Metrics",
    "Other",
];

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn rust_files(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "rs"))
        .collect();
    files.sort();
    files
}

fn is_camel_word(s: &str) -> bool {
    let mut chars = s.chars();
    chars.next().is_some_and(|c| c.is_ascii_uppercase())
        && s.len() > 1
        && chars.all(|c| c.is_ascii_alphanumeric())
}

/// CamelCase string literals and where each was first seen, up to the file's test module.
/// Literals are read per line (the text between quotes), which is enough for this code: a
/// reason is always a plain literal on one line.
fn literals(files: &[PathBuf]) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    for file in files {
        let text = std::fs::read_to_string(file).unwrap();
        let rel = file
            .strip_prefix(root())
            .unwrap_or(file)
            .display()
            .to_string();
        for (n, line) in text.lines().enumerate() {
            let trimmed = line.trim_start();
            if trimmed.starts_with("#[cfg(test)]") {
                break; // tests use made-up reasons
            }
            if trimmed.starts_with("//") {
                continue;
            }
            for lit in line.split('"').skip(1).step_by(2) {
                if is_camel_word(lit) {
                    out.entry(lit.to_string())
                        .or_insert_with(|| format!("{rel}:{}", n + 1));
                }
            }
        }
    }
    out
}

/// The backticked words in the reason column of the `| condition | reason |` table.
fn documented_reasons() -> BTreeSet<String> {
    let doc = std::fs::read_to_string(root().join("docs/controller.md")).unwrap();
    let table: Vec<&str> = doc
        .lines()
        .skip_while(|l| !l.starts_with("| condition | reason |"))
        .take_while(|l| l.starts_with('|'))
        .collect();
    assert!(
        table.len() > 10,
        "reasons table not found in docs/controller.md"
    );
    table
        .iter()
        .filter_map(|row| row.split('|').nth(2))
        .flat_map(|cell| cell.split('`').skip(1).step_by(2))
        .filter(|w| is_camel_word(w))
        .map(str::to_string)
        .collect()
}

fn emitted_reasons() -> BTreeMap<String, String> {
    let src = root().join("src");
    let mut files = vec![src.join("planner.rs")];
    files.extend(rust_files(&src.join("planner")));
    files.extend(rust_files(&src.join("controller")));
    literals(&files)
        .into_iter()
        .filter(|(w, _)| !w.ends_with("Exception") && !NOT_REASONS.contains(&w.as_str()))
        .collect()
}

#[test]
fn every_reason_the_code_emits_is_in_the_reasons_table() {
    let emitted = emitted_reasons();
    // The scan must see the reasons it is meant to guard, or it proves nothing.
    for known in [
        "Converged",
        "KeyDisabled",
        "ApplicationNotObserved",
        "NotPermitted",
    ] {
        assert!(emitted.contains_key(known), "the scan missed {known}");
    }
    let documented = documented_reasons();
    let missing: Vec<String> = emitted
        .iter()
        .filter(|(w, _)| !documented.contains(*w))
        .map(|(w, at)| format!("{w} ({at})"))
        .collect();
    assert!(
        missing.is_empty(),
        "reasons missing from docs/controller.md's reasons table (add a row saying what it means \
         and what to do, or list the literal in NOT_REASONS if it is not a reason):\n  {}",
        missing.join("\n  ")
    );
}

#[test]
fn not_reasons_are_not_documented_as_reasons() {
    // A word in both lists would hide a reason from the first test.
    let documented = documented_reasons();
    let both: Vec<&&str> = NOT_REASONS
        .iter()
        .filter(|w| documented.contains(**w))
        .collect();
    assert!(both.is_empty(), "listed as reasons and as not: {both:?}");
}
