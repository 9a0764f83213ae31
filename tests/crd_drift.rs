//! The committed CRD in `crds/` must be exactly what the binary generates.
//! Regenerate with: cargo run -- crd > crds/applicationencryptions.msfcmk.dev.yaml

#[test]
fn committed_crd_matches_generated() {
    let committed = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/crds/applicationencryptions.msfcmk.dev.yaml"
    ))
    .expect("crds/applicationencryptions.msfcmk.dev.yaml exists");
    let generated = msf_cmk_controller::api::crd_yaml();
    assert!(
        committed == generated,
        "crds/ drifted from the code; run: cargo run -- crd > crds/applicationencryptions.msfcmk.dev.yaml"
    );
}

#[test]
fn crd_command_prints_the_same_yaml() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_msf-cmk-controller"))
        .arg("crd")
        .output()
        .expect("binary runs");
    assert!(out.status.success());
    assert_eq!(
        String::from_utf8(out.stdout).unwrap(),
        msf_cmk_controller::api::crd_yaml()
    );
}
