//! The `ApplicationEncryption` custom resource (`msfcmk.dev/v1alpha1`): the contract users,
//! GitOps pipelines and outside checks rely on. Field names here are API; change with care.
//!
//! The CRD YAML in `crds/` is generated from these types (`msf-cmk-controller crd`) and a test
//! fails when it drifts.

use compact_str::CompactString;
use kube::{CustomResource, CustomResourceExt, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Declares which key encrypts the running and durable state (checkpoints, snapshots) of one
/// Amazon Managed Service for Apache Flink application.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "msfcmk.dev",
    version = "v1alpha1",
    kind = "ApplicationEncryption",
    plural = "applicationencryptions",
    singular = "applicationencryption",
    shortname = "appenc",
    namespaced,
    status = "ApplicationEncryptionStatus",
    derive = "PartialEq",
    doc = "Declares which KMS key encrypts the state of one Amazon Managed Service for Apache Flink application.",
    printcolumn = r#"{"name":"Application","type":"string","jsonPath":".spec.applicationName"}"#,
    printcolumn = r#"{"name":"Desired","type":"string","jsonPath":".spec.keyType"}"#,
    printcolumn = r#"{"name":"Observed","type":"string","jsonPath":".status.application.keyType"}"#,
    printcolumn = r#"{"name":"Ready","type":"string","jsonPath":".status.conditions[?(@.type==\"Ready\")].status"}"#,
    printcolumn = r#"{"name":"Reason","type":"string","priority":1,"jsonPath":".status.conditions[?(@.type==\"Ready\")].reason"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[x_kube(validation = kube::core::Rule::new(
    "self.keyType == 'CustomerManagedKey' ? (has(self.keyId) && self.keyId != '') : !has(self.keyId)"
).message("keyId is required when keyType is CustomerManagedKey and must be omitted when keyType is AwsOwnedKey"))]
// Which application a resource governs never changes: a new name or region would leave the old
// application on its key with no resource that owns it. (A field rule alone lets an optional
// field be added or removed, hence the presence check here.)
#[x_kube(validation = kube::core::Rule::new("has(self.region) == has(oldSelf.region)")
    .message("region is immutable: it cannot be added or removed after creation; create a new resource for another application"))]
#[serde(rename_all = "camelCase")]
pub struct ApplicationEncryptionSpec {
    /// Name of the MSF application (1-128 characters of [a-zA-Z0-9_.-]). Immutable.
    #[schemars(length(min = 1, max = 128), regex(pattern = r"^[a-zA-Z0-9_.-]+$"))]
    #[x_kube(validation = kube::core::Rule::new("self == oldSelf")
        .message("applicationName is immutable: create a new resource for another application"))]
    pub application_name: String,

    /// AWS region of the application, e.g. us-east-1. Defaults to the controller's region.
    /// Immutable.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = r"^[a-z]{2}(-[a-z]+)+-\d+$"))]
    #[x_kube(validation = kube::core::Rule::new("self == oldSelf")
        .message("region is immutable: create a new resource for an application in another region"))]
    pub region: Option<String>,

    /// Which key should encrypt the application's state: the AWS owned key or a customer
    /// managed KMS key.
    pub key_type: KeyType,

    /// The customer managed key: key ARN, key id, alias ARN or alias name (alias/NAME).
    /// Required when and only when keyType is CustomerManagedKey. The key must be a symmetric
    /// ENCRYPT_DECRYPT key in the application's account and region.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 2048))]
    pub key_id: Option<String>,

    /// How the controller treats the key policy statements MSF needs.
    #[serde(default)]
    pub key_policy: KeyPolicySpec,

    /// What happens in AWS when this resource is deleted. Retain (default) leaves AWS as it is;
    /// RevertToAwsOwnedKey switches the application back to the AWS owned key first.
    #[serde(default)]
    pub deletion_policy: DeletionPolicy,

    /// When true the controller observes and reports but changes nothing in AWS.
    #[serde(default)]
    pub suspend: bool,

    /// Switching the key of a RUNNING application restarts it from a snapshot. When the
    /// application has snapshots disabled it would restart without its state, so the controller
    /// refuses (reason WouldRestartWithoutState) unless this is true. Default false.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub allow_stateless_restart: bool,
}

/// The key that encrypts an application's state.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash, JsonSchema)]
pub enum KeyType {
    /// Encrypt with a customer managed KMS key (spec.keyId).
    CustomerManagedKey,
    /// Encrypt with the AWS owned key (MSF's default).
    AwsOwnedKey,
}

/// Key policy handling.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct KeyPolicySpec {
    /// Enforce (default): add or repair the statements MSF needs in the key policy.
    /// Audit: only report what is missing (for a separate key administrator to add).
    /// Ignore: do not read the key policy at all.
    #[serde(default)]
    pub mode: KeyPolicyMode,

    /// The IAM role that calls UpdateApplication (the application lifecycle operator) and
    /// is named in the key policy. Defaults to the controller's configured operator role.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = r"^arn:aws[a-z-]*:iam::\d{12}:role/.+$"))]
    pub operator_role_arn: Option<String>,

    /// When true, deleting this resource also removes this application's values from the
    /// controller-owned key policy statements. Off by default: snapshots taken under the key
    /// still need it to be restored.
    #[serde(default)]
    pub remove_statements_on_delete: bool,
}

/// How the controller treats the key policy.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, Hash, JsonSchema)]
pub enum KeyPolicyMode {
    /// Add or repair the statements MSF needs.
    #[default]
    Enforce,
    /// Report what is missing; never write the key policy.
    Audit,
    /// Do not read the key policy.
    Ignore,
}

/// What deleting the resource does in AWS.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, Hash, JsonSchema)]
pub enum DeletionPolicy {
    /// Leave the application and the key as they are.
    #[default]
    Retain,
    /// Switch the application back to the AWS owned key before the resource goes away.
    RevertToAwsOwnedKey,
}

/// What the controller last observed and concluded.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ApplicationEncryptionStatus {
    /// The metadata.generation this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,

    /// Ready (summary), KeyUsable, KeyPolicyCompliant, EncryptionApplied.
    #[serde(default)]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["type"]))]
    pub conditions: Vec<Condition>,

    /// The application as last observed in AWS.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub application: Option<ApplicationObservation>,

    /// The key policy as last observed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key_policy: Option<KeyPolicyObservation>,

    /// When the controller last compared AWS with this spec (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("format" = "date-time"))]
    pub last_sync_time: Option<String>,

    /// The last UpdateApplication the controller made for this resource and how it ended.
    /// A failed (rolled back) update is not retried for the same generation.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_update: Option<LastUpdate>,

    /// The last key policy write this resource made (its key and time): UpdateApplication
    /// waits for it to propagate, also across a controller restart.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_key_policy_write: Option<KeyPolicyWrite>,
}

/// One UpdateApplication made by the controller, followed until MSF's operation ends.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct LastUpdate {
    /// The metadata.generation the update was made for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub generation: Option<i64>,
    /// The key type the update switched to.
    pub key_type: KeyType,
    /// The resolved ARN of the key the update switched to (none for the AWS owned key).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key_arn: Option<String>,
    /// MSF's OperationId (DescribeApplicationOperation).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub operation_id: Option<String>,
    /// The application version the update produced.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version_id: Option<i64>,
    /// When the update was made (RFC 3339).
    #[schemars(extend("format" = "date-time"))]
    pub time: String,
    /// InProgress, Successful, RolledBack (MSF failed the operation and undid it) or Cancelled.
    pub outcome: UpdateOutcome,
    /// MSF's failure message, when the operation failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// The value of the msfcmk.dev/retry-update annotation this update was made under: a
    /// different value allows one more try after a rollback.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry: Option<String>,
}

/// How an UpdateApplication ended, as MSF's operation says.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash, JsonSchema)]
pub enum UpdateOutcome {
    /// MSF is still applying it.
    InProgress,
    /// The operation succeeded.
    Successful,
    /// The operation failed and MSF rolled the application back.
    RolledBack,
    /// The operation was cancelled.
    Cancelled,
}

/// A key policy write made by the controller.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct KeyPolicyWrite {
    /// The key whose policy was written.
    pub key_arn: String,
    /// When (RFC 3339).
    #[schemars(extend("format" = "date-time"))]
    pub time: String,
}

/// Set to a new value to allow one more UpdateApplication after MSF rolled an update back.
pub const RETRY_UPDATE_ANNOTATION: &str = "msfcmk.dev/retry-update";

/// The application as observed by DescribeApplication.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ApplicationObservation {
    /// Application ARN.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub arn: Option<String>,
    /// ApplicationVersionId.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version_id: Option<i64>,
    /// ApplicationStatus (READY, RUNNING, UPDATING, ...).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<String>,
    /// The key type in use: CustomerManagedKey or AwsOwnedKey.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key_type: Option<KeyType>,
    /// The resolved ARN of the customer managed key in use, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key_arn: Option<String>,
}

/// Key policy findings.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct KeyPolicyObservation {
    /// Resolved ARN of the key whose policy was checked.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key_arn: Option<String>,
    /// True when the policy grants every access MSF and the operator need.
    pub compliant: bool,
    /// The accesses the policy does not grant, as "principal action".
    #[serde(default)]
    pub missing_accesses: Vec<String>,
    /// Over-permissive or risky statements (reported, not blocking).
    #[serde(default)]
    pub findings: Vec<String>,
    /// Sids of the statements this controller owns in the policy.
    #[serde(default)]
    pub owned_sids: Vec<String>,
}

// Texts are `CompactString`s (the same JSON and schema as `String`): type, status, reason and
// transition time are at most 24 bytes, kept inline instead of in four allocations each. `run`
// caches six conditions per resource for the life of the process: at 10,000 resources that is
// 240,000 allocations fewer (BENCHMARKS.md, "Controller footprint").
/// A status condition, in the shape of Kubernetes' metav1.Condition.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Condition {
    /// Ready, KeyUsable, KeyPolicyCompliant or EncryptionApplied.
    #[serde(rename = "type")]
    pub type_: CompactString,
    /// True, False or Unknown.
    #[schemars(regex(pattern = r"^(True|False|Unknown)$"))]
    pub status: CompactString,
    /// A CamelCase word a user can search for.
    pub reason: CompactString,
    /// What happened and what to do about it.
    #[serde(default)]
    pub message: CompactString,
    /// When status last changed (RFC 3339).
    #[schemars(extend("format" = "date-time"))]
    pub last_transition_time: CompactString,
    /// The metadata.generation this condition was computed for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
}

/// Condition types.
pub mod condition_types {
    pub const READY: &str = "Ready";
    pub const KEY_USABLE: &str = "KeyUsable";
    pub const KEY_POLICY_COMPLIANT: &str = "KeyPolicyCompliant";
    pub const ENCRYPTION_APPLIED: &str = "EncryptionApplied";
    /// kstatus: True while work is in flight (a write made or pending, waiting for AWS).
    pub const RECONCILING: &str = "Reconciling";
    /// kstatus: True when only a person can unblock the resource (terminal or refused).
    pub const STALLED: &str = "Stalled";
}

/// The finalizer the controller puts on every resource it manages.
pub const FINALIZER: &str = "msfcmk.dev/cleanup";

/// The CRD as YAML, exactly what `crds/` holds.
pub fn crd_yaml() -> String {
    let crd = ApplicationEncryption::crd();
    // yaml_serde cannot fail on a value that serde_json accepts.
    yaml_serde::to_string(&crd).expect("CRD serialises")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spec_defaults() {
        let s: ApplicationEncryptionSpec = serde_json::from_value(serde_json::json!({
            "applicationName": "app",
            "keyType": "AwsOwnedKey"
        }))
        .unwrap();
        assert_eq!(s.key_policy.mode, KeyPolicyMode::Enforce);
        assert_eq!(s.deletion_policy, DeletionPolicy::Retain);
        assert!(!s.suspend);
    }

    #[test]
    fn crd_has_contract_names_and_cel_rule() {
        let y = crd_yaml();
        for needle in [
            "group: msfcmk.dev",
            "kind: ApplicationEncryption",
            "plural: applicationencryptions",
            "- appenc",
            "x-kubernetes-validations",
            "x-kubernetes-list-type: map",
            "subresources:",
            "status: {}",
            "CustomerManagedKey",
            "pattern: ^[a-zA-Z0-9_.-]+$",
        ] {
            assert!(y.contains(needle), "CRD lacks {needle:?}:\n{y}");
        }
    }
}
