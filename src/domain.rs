//! Domain types shared by the AWS adapters, the emulator, the planner and the controller.
//!
//! These are what the controller *observed* in AWS, expressed in its own terms: no SDK type
//! leaks past the adapters (`crate::aws`). Pure data, no I/O.

use serde::{Deserialize, Serialize};

/// Which kind of key encrypts an application's state, as MSF reports it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum AppliedKeyType {
    /// `AWS_OWNED_KEY` (MSF's default).
    AwsOwnedKey,
    /// `CUSTOMER_MANAGED_KEY`.
    CustomerManagedKey,
}

impl AppliedKeyType {
    /// The wire value MSF uses (`KeyType` / `KeyTypeUpdate`).
    pub fn as_wire(self) -> &'static str {
        match self {
            Self::AwsOwnedKey => "AWS_OWNED_KEY",
            Self::CustomerManagedKey => "CUSTOMER_MANAGED_KEY",
        }
    }

    pub fn from_wire(s: &str) -> Option<Self> {
        match s {
            "AWS_OWNED_KEY" => Some(Self::AwsOwnedKey),
            "CUSTOMER_MANAGED_KEY" => Some(Self::CustomerManagedKey),
            _ => None,
        }
    }
}

/// `ApplicationStatus` of an MSF application.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum ApplicationStatus {
    Deleting,
    Starting,
    Stopping,
    Ready,
    Running,
    Updating,
    AutoScaling,
    ForceStopping,
    RollingBack,
    MaintenanceInProgress,
    RolledBack,
    /// A status this build does not know; treated as "not safe to update".
    Other(String),
}

impl ApplicationStatus {
    pub fn from_wire(s: &str) -> Self {
        match s {
            "DELETING" => Self::Deleting,
            "STARTING" => Self::Starting,
            "STOPPING" => Self::Stopping,
            "READY" => Self::Ready,
            "RUNNING" => Self::Running,
            "UPDATING" => Self::Updating,
            "AUTOSCALING" => Self::AutoScaling,
            "FORCE_STOPPING" => Self::ForceStopping,
            "ROLLING_BACK" => Self::RollingBack,
            "MAINTENANCE" => Self::MaintenanceInProgress,
            "ROLLED_BACK" => Self::RolledBack,
            other => Self::Other(other.to_string()),
        }
    }

    pub fn as_wire(&self) -> &str {
        match self {
            Self::Deleting => "DELETING",
            Self::Starting => "STARTING",
            Self::Stopping => "STOPPING",
            Self::Ready => "READY",
            Self::Running => "RUNNING",
            Self::Updating => "UPDATING",
            Self::AutoScaling => "AUTOSCALING",
            Self::ForceStopping => "FORCE_STOPPING",
            Self::RollingBack => "ROLLING_BACK",
            Self::MaintenanceInProgress => "MAINTENANCE",
            Self::RolledBack => "ROLLED_BACK",
            Self::Other(s) => s,
        }
    }

    /// MSF accepts UpdateApplication only in READY or RUNNING.
    pub fn is_updatable(&self) -> bool {
        matches!(self, Self::Ready | Self::Running)
    }
}

/// The encryption configuration MSF reports for an application
/// (`ApplicationEncryptionConfigurationDescription`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AppliedEncryption {
    pub key_type: AppliedKeyType,
    /// As MSF reports it: key ARN, key id, alias ARN or alias name. Compare by resolved ARN.
    pub key_id: Option<String>,
}

impl Default for AppliedEncryption {
    fn default() -> Self {
        Self {
            key_type: AppliedKeyType::AwsOwnedKey,
            key_id: None,
        }
    }
}

/// What DescribeApplication told us.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ObservedApplication {
    pub name: String,
    pub arn: String,
    pub version_id: i64,
    /// Preferred over the version id for optimistic concurrency when present.
    pub conditional_token: Option<String>,
    pub status: ApplicationStatus,
    /// e.g. `FLINK-1_20`.
    pub runtime_environment: String,
    pub encryption: AppliedEncryption,
}

/// `KeyState` of a KMS key.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum KeyState {
    Enabled,
    Disabled,
    PendingDeletion,
    PendingImport,
    PendingReplicaDeletion,
    Unavailable,
    Creating,
    Updating,
    Other(String),
}

impl KeyState {
    pub fn from_wire(s: &str) -> Self {
        match s {
            "Enabled" => Self::Enabled,
            "Disabled" => Self::Disabled,
            "PendingDeletion" => Self::PendingDeletion,
            "PendingImport" => Self::PendingImport,
            "PendingReplicaDeletion" => Self::PendingReplicaDeletion,
            "Unavailable" => Self::Unavailable,
            "Creating" => Self::Creating,
            "Updating" => Self::Updating,
            other => Self::Other(other.to_string()),
        }
    }

    pub fn as_wire(&self) -> &str {
        match self {
            Self::Enabled => "Enabled",
            Self::Disabled => "Disabled",
            Self::PendingDeletion => "PendingDeletion",
            Self::PendingImport => "PendingImport",
            Self::PendingReplicaDeletion => "PendingReplicaDeletion",
            Self::Unavailable => "Unavailable",
            Self::Creating => "Creating",
            Self::Updating => "Updating",
            Self::Other(s) => s,
        }
    }
}

/// Who manages a KMS key (`KeyManager`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum KeyManager {
    Aws,
    Customer,
}

/// What DescribeKey told us about a key (always resolved to its key ARN).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ObservedKey {
    pub arn: String,
    pub key_id: String,
    pub account: String,
    pub region: String,
    pub state: KeyState,
    /// `KeySpec`, e.g. `SYMMETRIC_DEFAULT`.
    pub spec: String,
    /// `KeyUsage`, e.g. `ENCRYPT_DECRYPT`.
    pub usage: String,
    pub manager: KeyManager,
}

impl ObservedKey {
    /// MSF needs a symmetric encrypt/decrypt key.
    pub fn is_symmetric_encrypt_decrypt(&self) -> bool {
        self.spec == "SYMMETRIC_DEFAULT" && self.usage == "ENCRYPT_DECRYPT"
    }
}

/// The four ways an AWS error can be handled. Drives requeue, event reason and metric label.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum ErrorCategory {
    /// Throttling, 5xx, timeouts: retry with backoff and jitter.
    Transient,
    /// Someone else changed the resource (`ConcurrentModificationException`,
    /// `ResourceInUseException`): re-observe and requeue.
    Conflict,
    /// Will not get better by retrying: wait for a spec (or AWS-side) change.
    Terminal,
    /// The process's own AWS set-up is wrong (no or invalid credentials, no region): no
    /// resource can fix it and no retry either; a person must change the environment.
    /// Kept apart from `Transient` so it is never reported as AWS being unavailable.
    Configuration,
}

impl ErrorCategory {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Transient => "transient",
            Self::Conflict => "conflict",
            Self::Terminal => "terminal",
            Self::Configuration => "configuration",
        }
    }
}

/// The outcome of one read in the observe step, in terms the planner can reason about.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Observed<T> {
    Found(T),
    /// The resource does not exist (AWS said so); message kept for the status.
    NotFound(String),
    /// The read failed; `code` is AWS's error code (e.g. `AccessDeniedException`).
    Failed {
        category: ErrorCategory,
        code: String,
        message: String,
    },
    /// Not read on purpose (e.g. `keyPolicy.mode: Ignore`, or no key wanted).
    Skipped,
}

impl<T> Observed<T> {
    pub fn found(&self) -> Option<&T> {
        match self {
            Self::Found(t) => Some(t),
            _ => None,
        }
    }
}

/// One `UpdateApplication` call that switches an application's encryption
/// (`ApplicationConfigurationUpdate.ApplicationEncryptionConfigurationUpdate`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct EncryptionUpdate {
    pub region: String,
    pub application_name: String,
    /// `CurrentApplicationVersionId`; sent only when there is no conditional token.
    pub current_version_id: i64,
    /// `ConditionalToken`; preferred when MSF returned one.
    pub conditional_token: Option<String>,
    pub key_type: AppliedKeyType,
    /// `KeyIdUpdate`; only with `CustomerManagedKey`. The resolved key ARN.
    pub key_id: Option<String>,
}

impl EncryptionUpdate {
    /// The request body MSF receives, as in the AWS documentation
    /// (`fixtures/aws-docs/enable-cmk-update.json`). Used by `plan` to show the exact payload.
    pub fn to_request_json(&self) -> serde_json::Value {
        let mut update = serde_json::Map::new();
        update.insert("KeyTypeUpdate".into(), self.key_type.as_wire().into());
        if let Some(k) = &self.key_id {
            update.insert("KeyIdUpdate".into(), k.clone().into());
        }
        let mut body = serde_json::Map::new();
        body.insert(
            "ApplicationName".into(),
            self.application_name.clone().into(),
        );
        match &self.conditional_token {
            Some(t) => body.insert("ConditionalToken".into(), t.clone().into()),
            None => body.insert(
                "CurrentApplicationVersionId".into(),
                self.current_version_id.into(),
            ),
        };
        body.insert(
            "ApplicationConfigurationUpdate".into(),
            serde_json::json!({ "ApplicationEncryptionConfigurationUpdate": update }),
        );
        serde_json::Value::Object(body)
    }
}

/// What DescribeApplication says besides the encryption that the update lifecycle needs:
/// whether MSF rolled the current version back from a failed one, and whether a restart
/// keeps the job's state (snapshots).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApplicationLifecycle {
    /// `ApplicationVersionRolledBackFrom`: the version whose update failed and was undone.
    pub rolled_back_from: Option<i64>,
    /// `ApplicationVersionRolledBackTo`.
    pub rolled_back_to: Option<i64>,
    /// `ApplicationSnapshotConfigurationDescription.SnapshotsEnabled`; None when MSF does not
    /// report it (not known to be disabled).
    pub snapshots_enabled: Option<bool>,
}

/// DescribeApplication: the application and its lifecycle markers, from one call.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApplicationDescription {
    pub application: ObservedApplication,
    pub lifecycle: ApplicationLifecycle,
}

/// What an accepted UpdateApplication returned.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct UpdateAccepted {
    /// The application as MSF describes it right after the call (new version, UPDATING).
    pub application: ObservedApplication,
    /// `OperationId`: follow it with DescribeApplicationOperation.
    pub operation_id: Option<String>,
    /// The response's lifecycle markers and snapshot setting (of the new version).
    #[serde(default)]
    pub lifecycle: ApplicationLifecycle,
}

/// One entry of ListApplications: enough to see an update end without describing the
/// application (`apply` waits for many at once with one list per region).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApplicationSummary {
    pub name: String,
    pub status: ApplicationStatus,
    pub version_id: i64,
}

/// `OperationStatus` of an MSF application operation.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum OperationStatus {
    InProgress,
    Successful,
    Failed,
    Cancelled,
    Other(String),
}

impl OperationStatus {
    pub fn from_wire(s: &str) -> Self {
        match s {
            "IN_PROGRESS" => Self::InProgress,
            "SUCCESSFUL" => Self::Successful,
            "FAILED" => Self::Failed,
            "CANCELLED" => Self::Cancelled,
            other => Self::Other(other.to_string()),
        }
    }

    pub fn as_wire(&self) -> &str {
        match self {
            Self::InProgress => "IN_PROGRESS",
            Self::Successful => "SUCCESSFUL",
            Self::Failed => "FAILED",
            Self::Cancelled => "CANCELLED",
            Self::Other(s) => s,
        }
    }

    /// The operation has ended (one way or another).
    pub fn is_final(&self) -> bool {
        !matches!(self, Self::InProgress)
    }
}

/// One application operation (ListApplicationOperations / DescribeApplicationOperation).
/// The list gives only the summary; the version change and the failure come from Describe.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApplicationOperation {
    pub operation_id: String,
    /// e.g. `UpdateApplication`, `StartApplication`.
    pub operation: String,
    pub status: OperationStatus,
    pub start_time: Option<chrono::DateTime<chrono::Utc>>,
    pub end_time: Option<chrono::DateTime<chrono::Utc>>,
    /// `ApplicationVersionChangeDetails.ApplicationVersionUpdatedFrom`.
    pub version_from: Option<i64>,
    /// `ApplicationVersionChangeDetails.ApplicationVersionUpdatedTo`.
    pub version_to: Option<i64>,
    /// `OperationFailureDetails.ErrorInfo.ErrorString`: MSF's reason for the failure.
    pub failure_message: Option<String>,
    /// `OperationFailureDetails.RollbackOperationId`.
    pub rollback_operation_id: Option<String>,
}
