//! The API server's verdict on creating one document, from the CRD generated out of
//! `crate::api` (never a hand-kept copy, so it cannot drift): which documents are ours, and
//! whether one of ours would be admitted with field validation Strict (pure, no I/O).
//!
//! Order, as on the API server: prune nulls and apply defaults, validate against the schema
//! (unknown fields, types, enums, patterns, bounds, required), then, only on a valid object,
//! the CEL rules that apply on create.

use std::sync::OnceLock;

use jsonschema::error::ValidationErrorKind;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::CustomResourceExt;
use serde_json::Value;

use super::{cel_rules, openapi};
use crate::api::ApplicationEncryption;

/// One reason the API server would refuse a document.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Violation {
    /// Dotted JSON path (`spec.keyPolicy.mode`, `metadata.labels`); empty for the root.
    pub path: String,
    pub message: String,
}

impl std::fmt::Display for Violation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.path.as_str() {
            "" => write!(f, "{}", self.message),
            p => write!(f, "{p}: {}", self.message),
        }
    }
}

/// What a document is, by its apiVersion and kind.
#[derive(Debug, PartialEq, Eq)]
pub enum Kind {
    /// Another kind (a GitOps directory holds many): not ours to judge.
    Other,
    /// An ApplicationEncryption of a served version.
    Ours,
    /// Meant as ours (our group, or our kind) but not served: the API server has no such type.
    NotServed(String),
}

/// The CRD's group, kind, served versions, schema and create-time rules, compiled once.
pub struct CrdCheck {
    group: String,
    kind: String,
    versions: Vec<Version>,
}

struct Version {
    name: String,
    open_api: Value,
    validator: jsonschema::Validator,
    rules: Vec<cel_rules::Rule>,
}

/// The check for `crate::api`'s CRD. Built from compiled-in types: a failure is a bug caught by
/// this module's tests, not bad input.
pub fn application_encryption() -> &'static CrdCheck {
    static CHECK: OnceLock<CrdCheck> = OnceLock::new();
    CHECK.get_or_init(|| {
        CrdCheck::from_crd(&ApplicationEncryption::crd()).expect("the generated CRD is checkable")
    })
}

impl CrdCheck {
    pub fn from_crd(crd: &CustomResourceDefinition) -> Result<Self, String> {
        let mut versions = Vec::new();
        for v in crd.spec.versions.iter().filter(|v| v.served) {
            let open_api = v
                .schema
                .as_ref()
                .and_then(|s| s.open_api_v3_schema.as_ref())
                .ok_or_else(|| format!("version {} has no openAPIV3Schema", v.name))
                .and_then(|s| serde_json::to_value(s).map_err(|e| e.to_string()))?;
            let schema = openapi::document_schema(&open_api)?;
            let validator = jsonschema::draft202012::options()
                .should_validate_formats(true)
                .build(&schema)
                .map_err(|e| format!("version {}: {e}", v.name))?;
            let rules = cel_rules::read_rules(&open_api)?;
            versions.push(Version {
                name: v.name.clone(),
                open_api,
                validator,
                rules,
            });
        }
        Ok(CrdCheck {
            group: crd.spec.group.clone(),
            kind: crd.spec.names.kind.clone(),
            versions,
        })
    }

    /// `group/version` of every served version.
    pub fn served(&self) -> Vec<String> {
        let g = &self.group;
        self.versions
            .iter()
            .map(|v| format!("{g}/{}", v.name))
            .collect()
    }

    /// Ours, another kind, or a mistyped apiVersion/kind. A document without both fields is
    /// not a Kubernetes object (a values file, a kustomization): another kind.
    pub fn classify(&self, doc: &Value) -> Kind {
        let (Some(api_version), Some(kind)) = (
            doc.get("apiVersion").and_then(Value::as_str),
            doc.get("kind").and_then(Value::as_str),
        ) else {
            return Kind::Other;
        };
        let (group, version) = api_version.rsplit_once('/').unwrap_or(("", api_version));
        let our_group = group == self.group;
        let our_kind = kind.eq_ignore_ascii_case(&self.kind);
        if !our_group && !our_kind {
            return Kind::Other;
        }
        if our_group && kind == self.kind && self.versions.iter().any(|v| v.name == version) {
            return Kind::Ours;
        }
        Kind::NotServed(format!(
            "apiVersion {api_version:?} kind {kind:?} is not served: the API server knows \
             kind {:?} in {}",
            self.kind,
            self.served().join(", ")
        ))
    }

    /// The object as the API server would store it (nulls pruned, defaults applied, status
    /// dropped), or every reason it would refuse it. Call on a document classified `Ours`.
    pub fn admit(&self, doc: &Value) -> Result<Value, Vec<Violation>> {
        let version = doc
            .get("apiVersion")
            .and_then(Value::as_str)
            .and_then(|a| a.rsplit_once('/'))
            .and_then(|(_, v)| self.versions.iter().find(|x| x.name == v))
            .ok_or_else(|| {
                vec![Violation {
                    path: "apiVersion".into(),
                    message: format!("not one of {}", self.served().join(", ")),
                }]
            })?;
        let mut obj = doc.clone();
        openapi::prune_nulls_and_default(&mut obj, &version.open_api);
        let violations: Vec<Violation> = version
            .validator
            .iter_errors(&obj)
            .flat_map(|e| schema_violations(&e))
            .collect();
        if !violations.is_empty() {
            return Err(violations);
        }
        if let Value::Object(m) = &mut obj {
            m.remove("status");
        }
        let failures = cel_rules::evaluate(&version.rules, &obj);
        if !failures.is_empty() {
            return Err(failures
                .into_iter()
                .map(|f| Violation {
                    path: f.path,
                    message: f.message,
                })
                .collect());
        }
        Ok(obj)
    }
}

/// One schema error as violations; an unknown field is named by its own path, as the API
/// server's strict decoding does (`unknown field "spec.suspended"`).
fn schema_violations(e: &jsonschema::ValidationError<'_>) -> Vec<Violation> {
    let path = dotted(e.instance_path());
    let child = |name: &str| match path.as_str() {
        "" => name.to_string(),
        p => format!("{p}.{name}"),
    };
    match e.kind() {
        ValidationErrorKind::AdditionalProperties { unexpected } => unexpected
            .iter()
            .map(|name| Violation {
                path: child(name),
                message: "unknown field".into(),
            })
            .collect(),
        ValidationErrorKind::Required { property } => vec![Violation {
            path: child(property.as_str().unwrap_or_default()),
            message: "required field is missing".into(),
        }],
        _ => vec![Violation {
            path,
            message: e.to_string(),
        }],
    }
}

fn dotted(location: &jsonschema::paths::Location) -> String {
    let mut out = String::new();
    for segment in location.segments() {
        match segment {
            jsonschema::paths::LocationSegment::Property(p) => {
                if !out.is_empty() {
                    out.push('.');
                }
                out.push_str(&p);
            }
            jsonschema::paths::LocationSegment::Index(i) => out.push_str(&format!("[{i}]")),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn doc(spec: Value) -> Value {
        json!({"apiVersion": "msfcmk.dev/v1alpha1", "kind": "ApplicationEncryption",
               "metadata": {"name": "r", "namespace": "team-a"}, "spec": spec})
    }

    fn refused(d: Value) -> Vec<String> {
        application_encryption()
            .admit(&d)
            .unwrap_err()
            .iter()
            .map(ToString::to_string)
            .collect()
    }

    #[test]
    fn the_generated_crd_is_checkable_and_keeps_only_create_rules() {
        let check = application_encryption();
        assert_eq!(check.served(), vec!["msfcmk.dev/v1alpha1"]);
        // The keyId/keyType rule; the three immutability rules need oldSelf.
        assert_eq!(check.versions[0].rules.len(), 1);
    }

    #[test]
    fn classify_by_group_and_kind() {
        let c = application_encryption();
        let k = |a: &str, k: &str| c.classify(&json!({"apiVersion": a, "kind": k}));
        assert_eq!(
            k("msfcmk.dev/v1alpha1", "ApplicationEncryption"),
            Kind::Ours
        );
        assert_eq!(k("v1", "ConfigMap"), Kind::Other);
        assert_eq!(c.classify(&json!({"name": "values"})), Kind::Other);
        for (a, kind) in [
            ("msfcmk.dev/v1", "ApplicationEncryption"),
            ("msfcmk.io/v1alpha1", "ApplicationEncryption"),
            ("msfcmk.dev/v1alpha1", "ApplicationEncryptions"),
            ("msfcmk.dev/v1alpha1", "applicationencryption"),
        ] {
            assert!(matches!(k(a, kind), Kind::NotServed(_)), "{a} {kind}");
        }
    }

    #[test]
    fn admitted_object_has_defaults_and_no_status() {
        let mut d = doc(json!({"applicationName": "a", "keyType": "AwsOwnedKey", "suspend": null}));
        d["status"] = json!({"observedGeneration": "not checked on create"});
        let obj = application_encryption().admit(&d).unwrap();
        assert_eq!(obj["spec"]["suspend"], json!(false));
        assert_eq!(obj["spec"]["keyPolicy"]["mode"], json!("Enforce"));
        assert!(obj.get("status").is_none());
    }

    #[test]
    fn refusals_name_the_path() {
        let cases = [
            (
                json!({"applicationName": "a", "keyType": "AwsOwnedKey", "suspended": true}),
                "spec.suspended: unknown field",
            ),
            (
                json!({"applicationName": 5, "keyType": "AwsOwnedKey"}),
                "spec.applicationName: 5 is not of type \"string\"",
            ),
            (
                json!({"applicationName": "a", "keyType": "Other"}),
                "spec.keyType: ",
            ),
            (
                json!({"keyType": "AwsOwnedKey"}),
                "spec.applicationName: required field is missing",
            ),
            (
                json!({"applicationName": "a", "keyType": "CustomerManagedKey"}),
                "spec: keyId is required when keyType is CustomerManagedKey",
            ),
            (
                json!({"applicationName": "a", "keyType": "AwsOwnedKey", "region": "Mars"}),
                "spec.region: ",
            ),
            (
                json!({"applicationName": "a", "keyType": "AwsOwnedKey", "keyPolicy": {"mode": "Sometimes"}}),
                "spec.keyPolicy.mode: ",
            ),
        ];
        for (spec, needle) in cases {
            let got = refused(doc(spec.clone()));
            assert!(got.iter().any(|m| m.starts_with(needle)), "{spec}: {got:?}");
        }
    }

    #[test]
    fn status_and_metadata_unknown_fields_are_refused() {
        let mut d = doc(json!({"applicationName": "a", "keyType": "AwsOwnedKey"}));
        d["status"] = json!({"foo": 1});
        d["metadata"]["labelz"] = json!({});
        d["extra"] = json!(1);
        let got = refused(d);
        for needle in ["status.foo", "metadata.labelz", "extra"] {
            assert!(got.contains(&format!("{needle}: unknown field")), "{got:?}");
        }
    }

    fn any_json() -> impl proptest::strategy::Strategy<Value = Value> {
        use proptest::prelude::*;
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::from),
            any::<i64>().prop_map(Value::from),
            any::<f64>().prop_map(Value::from),
            "[a-zA-Z]{0,6}".prop_map(Value::from),
            Just(json!("CustomerManagedKey")),
            Just(json!("AwsOwnedKey")),
        ];
        leaf.prop_recursive(3, 24, 4, |inner| {
            prop_oneof![
                proptest::collection::vec(inner.clone(), 0..4).prop_map(Value::from),
                proptest::collection::btree_map(
                    prop_oneof![
                        Just("applicationName".to_string()),
                        Just("keyType".to_string()),
                        Just("keyId".to_string()),
                        Just("keyPolicy".to_string()),
                        Just("mode".to_string()),
                        "[a-z]{1,4}"
                    ],
                    inner,
                    0..5
                )
                .prop_map(|m| Value::Object(m.into_iter().collect())),
            ]
        })
    }

    proptest::proptest! {
        /// Bad input is a refusal, never a panic; what is admitted deserialises.
        #[test]
        fn any_spec_or_metadata_is_judged_without_panic(spec in any_json(), meta in any_json()) {
            let mut d = doc(spec);
            if meta.is_object() {
                d["metadata"] = meta;
            }
            if let Ok(obj) = application_encryption().admit(&d) {
                proptest::prop_assert!(serde_json::from_value::<ApplicationEncryption>(obj).is_ok());
            }
        }
    }

    #[test]
    fn metadata_names_follow_the_api_server() {
        let spec = json!({"applicationName": "a", "keyType": "AwsOwnedKey"});
        for (meta, ok) in [
            (
                json!({"name": "orders.v2", "creationTimestamp": null}),
                true,
            ),
            (json!({"name": "Orders"}), false),
            (json!({"name": "r", "namespace": "team.a"}), false),
            (
                json!({"name": "r", "labels": {"app.kubernetes.io/name": "x"}}),
                true,
            ),
            (json!({"name": "r", "labels": {"a": "not ok"}}), false),
            (json!({"namespace": "a"}), false),
        ] {
            let mut d = doc(spec.clone());
            d["metadata"] = meta.clone();
            assert_eq!(application_encryption().admit(&d).is_ok(), ok, "{meta}");
        }
    }
}
