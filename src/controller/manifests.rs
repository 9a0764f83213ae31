//! Loading `ApplicationEncryption` manifests from disk for `plan` / `apply` (no cluster).
//!
//! Files or directories (recursively, `*.yaml` / `*.yml` / `*.json`), multi-document YAML.
//! Documents of other kinds are skipped (a GitOps directory holds many kinds). An
//! `ApplicationEncryption` gets the verdict the API server would give a `kubectl apply` of it
//! (field validation Strict): the CRD's schema and its create-time CEL rules, read from the CRD
//! generated out of `crate::api` ([`strict`]). A refused one is bad input, named by file,
//! document index and JSON path, so a pipeline fails before merge rather than after. What the
//! API server accepts but the controller refuses (a malformed keyId) is the planner's to report.

mod cel_rules;
mod openapi;
pub mod strict;

use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::api::{ApplicationEncryption, ApplicationEncryptionSpec};
use strict::Kind;

/// One resource read from disk.
#[derive(Clone, Debug)]
pub struct Manifest {
    pub namespace: String,
    pub name: String,
    pub spec: ApplicationEncryptionSpec,
    /// `path#document-index` for messages.
    pub source: String,
    /// The `msfcmk.dev/retry-update` annotation, if set.
    pub retry_update: Option<String>,
}

#[derive(Debug, Default)]
pub struct Loaded {
    pub manifests: Vec<Manifest>,
    /// Documents of other kinds, skipped.
    pub skipped: usize,
}

pub fn load(paths: &[PathBuf]) -> Result<Loaded, String> {
    let mut files = Vec::new();
    for p in paths {
        collect(p, &mut files)?;
    }
    let mut out = Loaded::default();
    for f in files {
        let text = std::fs::read_to_string(&f).map_err(|e| format!("{}: {e}", f.display()))?;
        load_text(&text, &f.display().to_string(), &mut out)?;
    }
    let mut seen = std::collections::BTreeSet::new();
    for m in &out.manifests {
        if !seen.insert((m.namespace.clone(), m.name.clone())) {
            return Err(format!(
                "{}: ApplicationEncryption {}/{} is defined twice",
                m.source, m.namespace, m.name
            ));
        }
    }
    Ok(out)
}

fn collect(p: &Path, files: &mut Vec<PathBuf>) -> Result<(), String> {
    let meta = std::fs::metadata(p).map_err(|e| format!("{}: {e}", p.display()))?;
    if meta.is_file() {
        files.push(p.to_path_buf());
        return Ok(());
    }
    let mut entries: Vec<PathBuf> = std::fs::read_dir(p)
        .map_err(|e| format!("{}: {e}", p.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .collect();
    entries.sort();
    for e in entries {
        if e.is_dir() {
            collect(&e, files)?;
        } else if matches!(
            e.extension().and_then(|x| x.to_str()),
            Some("yaml" | "yml" | "json")
        ) {
            files.push(e);
        }
    }
    Ok(())
}

pub fn load_text(text: &str, origin: &str, out: &mut Loaded) -> Result<(), String> {
    for (i, doc) in yaml_serde::Deserializer::from_str(text).enumerate() {
        let source = format!("{origin}#{i}");
        let value = yaml_serde::Value::deserialize(doc).map_err(|e| format!("{source}: {e}"))?;
        if value.is_null() {
            continue;
        }
        // Classified before the JSON conversion, which only ours must survive: other files in
        // a GitOps directory may have integer keys or tags.
        let type_meta = serde_json::json!({
            "apiVersion": value.get("apiVersion").and_then(|v| v.as_str()),
            "kind": value.get("kind").and_then(|v| v.as_str()),
        });
        match strict::application_encryption().classify(&type_meta) {
            Kind::Other => out.skipped += 1,
            Kind::NotServed(why) => return Err(format!("{source}: {why}")),
            Kind::Ours => {
                // JSON is what the API server sees (kubectl converts YAML to JSON first).
                let value: serde_json::Value =
                    serde_json::to_value(&value).map_err(|e| format!("{source}: {e}"))?;
                out.manifests.push(validate(&value, &source)?);
            }
        }
    }
    Ok(())
}

/// The API server's verdict on creating this `ApplicationEncryption`, from the generated CRD;
/// the manifest as the API server would store it (defaults applied) when it is admitted.
pub fn validate(doc: &serde_json::Value, source: &str) -> Result<Manifest, String> {
    let name = doc
        .pointer("/metadata/name")
        .and_then(|n| n.as_str())
        .unwrap_or_default();
    let admitted = strict::application_encryption()
        .admit(doc)
        .map_err(|violations| {
            let all: Vec<String> = violations.iter().map(ToString::to_string).collect();
            format!(
                "{source}: ApplicationEncryption {name:?} would be refused by the API server: {}",
                all.join("; ")
            )
        })?;
    let obj: ApplicationEncryption =
        serde_json::from_value(admitted).map_err(|e| format!("{source} ({name}): {e}"))?;
    Ok(Manifest {
        namespace: obj
            .metadata
            .namespace
            .clone()
            .unwrap_or_else(|| "default".into()),
        name: name.to_string(),
        retry_update: obj
            .metadata
            .annotations
            .as_ref()
            .and_then(|a| a.get(crate::api::RETRY_UPDATE_ANNOTATION))
            .cloned(),
        spec: obj.spec,
        source: source.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const DOCS: &str = r#"
apiVersion: v1
kind: ConfigMap
metadata: {name: other}
---
apiVersion: msfcmk.dev/v1alpha1
kind: ApplicationEncryption
metadata: {name: orders, namespace: team-a}
spec:
  applicationName: orders
  keyType: CustomerManagedKey
  keyId: alias/orders
---
apiVersion: msfcmk.dev/v1alpha1
kind: ApplicationEncryption
metadata: {name: payments}
spec: {applicationName: payments, keyType: AwsOwnedKey}
---
"#;

    #[test]
    fn multi_document_and_other_kinds() {
        let mut out = Loaded::default();
        load_text(DOCS, "x.yaml", &mut out).unwrap();
        assert_eq!(out.skipped, 1);
        assert_eq!(out.manifests.len(), 2);
        assert_eq!(out.manifests[0].namespace, "team-a");
        assert_eq!(out.manifests[1].namespace, "default");
        assert_eq!(out.manifests[1].source, "x.yaml#2");
    }

    #[test]
    fn invalid_resources_are_named() {
        let bad = [
            (
                "spec: {applicationName: 'a b', keyType: AwsOwnedKey}",
                "applicationName",
            ),
            (
                "spec: {applicationName: a, keyType: CustomerManagedKey}",
                "keyId is required",
            ),
            (
                "spec: {applicationName: a, keyType: AwsOwnedKey, keyId: alias/x}",
                "must be omitted",
            ),
            ("spec: {applicationName: a, keyType: Other}", "x.yaml#0"),
            (
                "spec: {applicationName: a, keyType: AwsOwnedKey, region: Mars}",
                "spec.region",
            ),
            (
                "spec: {applicationName: a, keyType: AwsOwnedKey, suspended: true}",
                "spec.suspended: unknown field",
            ),
        ];
        for (spec, needle) in bad {
            let doc = format!(
                "apiVersion: msfcmk.dev/v1alpha1\nkind: ApplicationEncryption\nmetadata: {{name: r}}\n{spec}\n"
            );
            let err = load_text(&doc, "x.yaml", &mut Loaded::default()).unwrap_err();
            assert!(err.contains(needle), "{spec}: {err}");
        }
        for (meta, needle) in [
            ("", "metadata: required field is missing"),
            (
                "metadata: {namespace: a}\n",
                "metadata.name: required field is missing",
            ),
        ] {
            let nameless = format!(
                "apiVersion: msfcmk.dev/v1alpha1\nkind: ApplicationEncryption\n{meta}spec: {{applicationName: a, keyType: AwsOwnedKey}}\n"
            );
            let err = load_text(&nameless, "x", &mut Loaded::default()).unwrap_err();
            assert!(err.contains(needle), "{err}");
        }
        assert!(load_text("a: [", "x", &mut Loaded::default()).is_err());
    }

    #[test]
    fn mistyped_api_version_or_kind_is_an_error_not_skipped() {
        for head in [
            "apiVersion: msfcmk.dev/v1\nkind: ApplicationEncryption",
            "apiVersion: msfcmk.io/v1alpha1\nkind: ApplicationEncryption",
            "apiVersion: msfcmk.dev/v1alpha1\nkind: ApplicationEncryptions",
        ] {
            let doc = format!(
                "{head}\nmetadata: {{name: r}}\nspec: {{applicationName: a, keyType: AwsOwnedKey}}\n"
            );
            let err = load_text(&doc, "x.yaml", &mut Loaded::default()).unwrap_err();
            assert!(
                err.starts_with("x.yaml#0: ") && err.contains("not served"),
                "{err}"
            );
        }
    }

    #[test]
    fn other_documents_need_not_be_json() {
        let docs =
            "ports: {80: http, 443: https}\n---\nResources: {B: !Ref X}\n---\n42\n---\n- a\n";
        let mut out = Loaded::default();
        load_text(docs, "x.yaml", &mut out).unwrap();
        assert_eq!((out.skipped, out.manifests.len()), (4, 0));
        let ours = "apiVersion: msfcmk.dev/v1alpha1\nkind: ApplicationEncryption\nmetadata: {name: r, labels: {[a]: b}}\nspec: {applicationName: a, keyType: AwsOwnedKey}\n";
        let err = load_text(ours, "x.yaml", &mut Loaded::default()).unwrap_err();
        assert!(err.starts_with("x.yaml#0: "), "{err}");
    }

    #[test]
    fn what_the_api_server_accepts_is_loaded_with_defaults() {
        // A malformed keyId passes the CRD; the planner refuses it (InvalidSpec), as in a cluster.
        let doc = "apiVersion: msfcmk.dev/v1alpha1\nkind: ApplicationEncryption\nmetadata: {name: r}\nspec: {applicationName: a, keyType: CustomerManagedKey, keyId: 'no way', suspend: null}\n";
        let mut out = Loaded::default();
        load_text(doc, "x.yaml", &mut out).unwrap();
        assert_eq!(out.manifests[0].spec.key_id.as_deref(), Some("no way"));
        assert!(!out.manifests[0].spec.suspend);
    }

    #[test]
    fn every_example_passes_strict_validation() {
        let examples = Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/examples");
        let loaded = load(&[examples]).unwrap();
        assert!(loaded.manifests.len() >= 3, "{}", loaded.manifests.len());
    }

    #[test]
    fn files_and_directories() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("sub")).unwrap();
        std::fs::write(dir.path().join("a.yaml"), DOCS).unwrap();
        std::fs::write(dir.path().join("notes.txt"), "not yaml: [").unwrap();
        let dup = DOCS.replace("orders, namespace: team-a", "orders2, namespace: team-a");
        std::fs::write(dir.path().join("sub/b.yml"), dup).unwrap();
        // b.yml repeats default/payments: a duplicate.
        let err = load(&[dir.path().to_path_buf()]).unwrap_err();
        assert!(err.contains("defined twice"), "{err}");
        let ok = load(&[dir.path().join("a.yaml")]).unwrap();
        assert_eq!(ok.manifests.len(), 2);
        assert!(load(&[dir.path().join("missing.yaml")]).is_err());
    }
}
