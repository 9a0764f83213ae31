//! One TLS/crypto stack (Cargo.toml explains the feature choices): hyper 1 + rustls 0.23 with
//! aws-lc-rs for both the AWS SDK and kube. If a second provider (ring) came back, rustls could
//! no longer pick one by itself and the Kubernetes client would fail at start-up; a legacy SDK
//! feature would bring back hyper 0.14 and rustls 0.21. Read from `cargo tree` (offline).

use std::collections::BTreeMap;
use std::process::Command;

/// name -> versions, for the packages linked into the binary and the tests (this platform).
fn linked_packages() -> BTreeMap<String, Vec<String>> {
    let out = Command::new(env!("CARGO"))
        .args([
            "tree",
            "--offline",
            "--edges",
            "normal,dev",
            "--prefix",
            "none",
        ])
        .args(["--format", "{p}"])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .expect("run cargo tree");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut map: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for line in String::from_utf8(out.stdout).unwrap().lines() {
        let mut words = line.split_whitespace();
        let (Some(name), Some(version)) = (words.next(), words.next()) else {
            continue;
        };
        let versions = map.entry(name.to_string()).or_default();
        if !versions.iter().any(|v| v == version) {
            versions.push(version.to_string());
        }
    }
    map
}

#[test]
fn one_tls_stack_and_one_crypto_provider() {
    let packages = linked_packages();
    for single in [
        "rustls",
        "hyper",
        "h2",
        "http",
        "hyper-rustls",
        "tokio-rustls",
    ] {
        let versions = packages.get(single).map(Vec::as_slice).unwrap_or_default();
        assert_eq!(versions.len(), 1, "{single}: {versions:?}");
    }
    assert!(
        packages["rustls"][0].starts_with("v0.23"),
        "{:?}",
        packages["rustls"]
    );
    assert!(
        packages["hyper"][0].starts_with("v1."),
        "{:?}",
        packages["hyper"]
    );
    assert!(packages.contains_key("aws-lc-rs"), "the crypto provider");
    // ring: a second provider; openssl: a second TLS stack; p256: the SDK's sigv4a.
    for absent in ["ring", "openssl", "openssl-sys", "native-tls", "p256"] {
        assert!(
            !packages.contains_key(absent),
            "{absent} is linked: {:?}",
            packages[absent]
        );
    }
}
