//! Loading `ApplicationEncryption` manifests from disk for `plan` / `apply` (no cluster).
//!
//! Files or directories (recursively, `*.yaml` / `*.yml` / `*.json`), multi-document YAML.
//! Documents of other kinds are skipped (a GitOps directory holds many kinds); an
//! `ApplicationEncryption` that the API server would reject is bad input, named by file and
//! document, so a pipeline fails before merge rather than after.

use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::api::{ApplicationEncryption, ApplicationEncryptionSpec, KeyType};
use crate::arn::{KeyRef, is_valid_application_name};

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
        let kind = value.get("kind").and_then(|k| k.as_str());
        let api_version = value.get("apiVersion").and_then(|k| k.as_str());
        if kind != Some("ApplicationEncryption")
            || !api_version.is_some_and(|v| v.starts_with("msfcmk.dev/"))
        {
            out.skipped += 1;
            continue;
        }
        if api_version != Some("msfcmk.dev/v1alpha1") {
            return Err(format!(
                "{source}: apiVersion {} is not served (msfcmk.dev/v1alpha1)",
                api_version.unwrap_or_default()
            ));
        }
        let has_name = value
            .get("metadata")
            .and_then(|m| m.get("name"))
            .and_then(|n| n.as_str())
            .is_some_and(|n| !n.is_empty());
        if !has_name {
            return Err(format!("{source}: metadata.name is required"));
        }
        let obj: ApplicationEncryption =
            yaml_serde::from_value(value).map_err(|e| format!("{source}: {e}"))?;
        let name = obj
            .metadata
            .name
            .clone()
            .filter(|n| !n.is_empty())
            .ok_or_else(|| format!("{source}: metadata.name is required"))?;
        validate(&obj.spec).map_err(|e| format!("{source} ({name}): {e}"))?;
        out.manifests.push(Manifest {
            namespace: obj
                .metadata
                .namespace
                .clone()
                .unwrap_or_else(|| "default".into()),
            name,
            retry_update: obj
                .metadata
                .annotations
                .as_ref()
                .and_then(|a| a.get(crate::api::RETRY_UPDATE_ANNOTATION))
                .cloned(),
            spec: obj.spec,
            source,
        });
    }
    Ok(())
}

/// What the CRD's schema and CEL rule enforce on a cluster, checked again for files.
pub fn validate(spec: &ApplicationEncryptionSpec) -> Result<(), String> {
    if !is_valid_application_name(&spec.application_name) {
        return Err(format!(
            "spec.applicationName {:?} must be 1-128 characters of [a-zA-Z0-9_.-]",
            spec.application_name
        ));
    }
    if let Some(r) = &spec.region {
        let ok = r.split('-').count() >= 3
            && r.bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
        if !ok {
            return Err(format!(
                "spec.region {r:?} is not a region name (e.g. us-east-1)"
            ));
        }
    }
    match (spec.key_type, spec.key_id.as_deref()) {
        (KeyType::CustomerManagedKey, None | Some("")) => {
            Err("spec.keyId is required when keyType is CustomerManagedKey".into())
        }
        (KeyType::CustomerManagedKey, Some(k)) => KeyRef::parse(k)
            .map(|_| ())
            .map_err(|e| format!("spec.keyId: {e}")),
        (KeyType::AwsOwnedKey, Some(_)) => {
            Err("spec.keyId must be omitted when keyType is AwsOwnedKey".into())
        }
        (KeyType::AwsOwnedKey, None) => Ok(()),
    }?;
    if let Some(role) = &spec.key_policy.operator_role_arn {
        crate::arn::Arn::parse_role(role)
            .map_err(|e| format!("spec.keyPolicy.operatorRoleArn: {e}"))?;
    }
    Ok(())
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
            (
                "spec: {applicationName: a, keyType: CustomerManagedKey, keyId: 'no way'}",
                "keyId",
            ),
            ("spec: {applicationName: a, keyType: Other}", "x.yaml#0"),
            (
                "spec: {applicationName: a, keyType: AwsOwnedKey, region: Mars}",
                "region",
            ),
        ];
        for (spec, needle) in bad {
            let doc = format!(
                "apiVersion: msfcmk.dev/v1alpha1\nkind: ApplicationEncryption\nmetadata: {{name: r}}\n{spec}\n"
            );
            let err = load_text(&doc, "x.yaml", &mut Loaded::default()).unwrap_err();
            assert!(err.contains(needle), "{spec}: {err}");
        }
        let nameless = "apiVersion: msfcmk.dev/v1alpha1\nkind: ApplicationEncryption\nspec: {applicationName: a, keyType: AwsOwnedKey}\n";
        assert!(
            load_text(nameless, "x", &mut Loaded::default())
                .unwrap_err()
                .contains("metadata.name")
        );
        assert!(load_text("a: [", "x", &mut Loaded::default()).is_err());
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
