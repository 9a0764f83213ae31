//! The README's offline command blocks run as pasted: every `sh` block after the first (which
//! runs the whole test suite) is run by bash from the repository's root, with the freshly
//! built binary first on PATH as `cargo install --path .` would put it, and an empty AWS
//! environment. A command the binary refuses (unknown flag, missing file, bad input) prints
//! `error:`; a shell that cannot find it says so; both fail here.

use std::path::{Path, PathBuf};
use std::process::Command;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The bodies of the README's ```sh blocks, in order.
fn sh_blocks(readme: &str) -> Vec<String> {
    let mut blocks = Vec::new();
    let mut current: Option<String> = None;
    for line in readme.lines() {
        match (&mut current, line.trim_end()) {
            (None, "```sh") => current = Some(String::new()),
            (Some(_), "```") => blocks.extend(current.take()),
            (Some(body), l) => {
                body.push_str(l);
                body.push('\n');
            }
            (None, _) => {}
        }
    }
    blocks
}

#[test]
fn the_readme_command_blocks_run_as_pasted() {
    let readme = std::fs::read_to_string(root().join("README.md")).expect("README.md");
    let blocks = sh_blocks(&readme);
    assert!(blocks.len() >= 3, "README sh blocks: {blocks:#?}");
    let bin = PathBuf::from(env!("CARGO_BIN_EXE_msf-cmk-controller"));
    let bin_dir = bin.parent().expect("bin dir");
    let scratch = tempfile::tempdir().expect("temp dir");
    // The blocks write to /tmp; a test keeps its files to itself.
    let tmp = scratch.path().display().to_string();
    // The first block builds and tests everything (cargo, scripts/test.sh): not offline.
    for block in &blocks[1..] {
        let script = block.replace("/tmp/", &format!("{tmp}/"));
        // Bounded: a background emulator the block failed to stop cannot hold the test.
        let out = Command::new("timeout")
            .args(["120", "bash", "-c"])
            .arg(&script)
            .current_dir(root())
            .env_clear()
            .env("PATH", path_with(bin_dir))
            .env("HOME", scratch.path())
            .env("AWS_EC2_METADATA_DISABLED", "true")
            .output()
            .expect("bash");
        let stderr = String::from_utf8_lossy(&out.stderr);
        let stdout = String::from_utf8_lossy(&out.stdout);
        for bad in ["error:", "command not found", "No such file"] {
            assert!(
                !stderr.contains(bad),
                "README block failed ({bad}):\n{block}\nstderr:\n{stderr}"
            );
        }
        assert!(!stdout.trim().is_empty(), "no output from:\n{block}");
    }
}

fn path_with(dir: &Path) -> std::ffi::OsString {
    let mut paths = vec![dir.to_path_buf()];
    paths.extend(std::env::split_paths(
        &std::env::var_os("PATH").unwrap_or_default(),
    ));
    std::env::join_paths(paths).expect("PATH")
}
