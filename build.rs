//! Resolves the git revision the binary reports (`--version`, `msfcmk_build_info`).
//!
//! `MSF_CMK_GIT_REVISION` wins (the image build passes it: its context has no `.git`); else
//! `git rev-parse --short HEAD` when the crate is a git checkout; else `unknown`. Never fails:
//! a build from a staged copy (scripts/build-release.sh, `docker build`) must still work.

use std::path::Path;
use std::process::Command;

const OUT: &str = "MSF_CMK_BUILD_REVISION";

fn main() {
    println!("cargo:rerun-if-env-changed=MSF_CMK_GIT_REVISION");
    println!("cargo:rerun-if-changed=build.rs");
    let revision = std::env::var("MSF_CMK_GIT_REVISION")
        .ok()
        .map(|r| r.trim().to_string())
        .filter(|r| !r.is_empty())
        .or_else(git_revision)
        .unwrap_or_else(|| "unknown".to_string());
    println!("cargo:rustc-env={OUT}={revision}");
    pack_relative_relocations();
}

/// The executable is position independent, so the loader applies about 90,000 relative
/// relocations at every start, reading 2 MB of `.rela.dyn` that then stays resident: most of
/// the gap to `run`'s idle memory target (BENCHMARKS.md, "Controller footprint"). Packed
/// (DT_RELR) they take a few kilobytes. Needs glibc 2.36 at run time (Debian 12, the image's
/// distroless base) and binutils 2.38 or lld to link; glibc and GNU targets only.
fn pack_relative_relocations() {
    let var = |k: &str| std::env::var(k).unwrap_or_default();
    if var("CARGO_CFG_TARGET_OS") == "linux" && var("CARGO_CFG_TARGET_ENV") == "gnu" {
        println!("cargo:rustc-link-arg-bins=-Wl,-z,pack-relative-relocs");
    }
}

fn git_revision() -> Option<String> {
    // Only our own checkout: a staged copy under some other repository must not borrow its HEAD.
    if !Path::new(".git").exists() {
        return None;
    }
    // Rebuild when HEAD moves: the file HEAD, and the branch it points to (a commit).
    // A path that does not exist would make cargo rerun this script on every build.
    let branch = git(&["symbolic-ref", "-q", "HEAD"]);
    for path in ["HEAD", "packed-refs"].into_iter().chain(branch.as_deref()) {
        if let Some(p) = git(&["rev-parse", "--git-path", path])
            && Path::new(&p).exists()
        {
            println!("cargo:rerun-if-changed={p}");
        }
    }
    git(&["rev-parse", "--short", "HEAD"])
}

/// A git command's trimmed stdout, None when git is missing or fails.
fn git(args: &[&str]) -> Option<String> {
    let out = Command::new("git").args(args).output().ok()?;
    let text = String::from_utf8(out.stdout).ok()?.trim().to_string();
    (out.status.success() && !text.is_empty()).then_some(text)
}
