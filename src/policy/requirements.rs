//! What MSF and the application's operator need from a key, for one application.
//!
//! Derived from the AWS reference key policy (`tests/fixtures/cmk-key-policy.json`): for each
//! statement, the principal, the action, and the request context a real call carries. The
//! service principals call with `aws:SourceArn` / `aws:SourceAccount` of the application; the
//! operator's calls go through MSF (`kms:ViaService`); data-key calls carry the application
//! ARN as encryption context; MSF's grants are constrained to that context and to Decrypt.

use std::collections::BTreeMap;

use serde::Serialize;

use super::principal::Principal;
use crate::arn::{Arn, ArnError};

pub const MSF_SERVICE: &str = "kinesisanalytics.amazonaws.com";
pub const MSF_INFRASTRUCTURE_SERVICE: &str = "infrastructure.kinesisanalytics.amazonaws.com";

pub const KEY_VIA_SERVICE: &str = "kms:ViaService";
pub const KEY_ENCRYPTION_CONTEXT: &str = "kms:EncryptionContext:aws:kinesisanalytics:arn";
pub const KEY_SOURCE_ARN: &str = "aws:SourceArn";
pub const KEY_SOURCE_ACCOUNT: &str = "aws:SourceAccount";
pub const KEY_GRANT_CONSTRAINT: &str = "kms:GrantConstraintType";
pub const KEY_GRANT_OPERATIONS: &str = "kms:GrantOperations";
pub const KEY_CALLER_ACCOUNT: &str = "kms:CallerAccount";

/// One access: a principal calling an action on the key with this request context.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct RequiredAccess {
    pub principal: Principal,
    pub action: String,
    /// Lower-cased keys, as evaluation expects.
    pub context: BTreeMap<String, Vec<String>>,
    /// Why MSF needs it, for people reading a report.
    pub purpose: String,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct MsfRequirements {
    pub application_arn: String,
    pub operator_role_arn: String,
    pub accesses: Vec<RequiredAccess>,
}

/// `kms:ViaService` value for MSF in the application's region.
pub fn via_service(region: &str) -> String {
    format!("kinesisanalytics.{region}.amazonaws.com")
}

impl MsfRequirements {
    pub fn for_application(
        application_arn: &str,
        operator_role_arn: &str,
    ) -> Result<Self, ArnError> {
        let app = Arn::parse_application(application_arn)?;
        Arn::parse_role(operator_role_arn)?;
        let via = via_service(&app.region);
        let operator = Principal::Aws(operator_role_arn.to_string());
        let msf = Principal::Service(MSF_SERVICE.to_string());
        let infra = Principal::Service(MSF_INFRASTRUCTURE_SERVICE.to_string());

        let ctx = |pairs: &[(&str, &str)]| -> BTreeMap<String, Vec<String>> {
            let mut m: BTreeMap<String, Vec<String>> = BTreeMap::new();
            for (k, v) in pairs {
                m.entry(k.to_ascii_lowercase())
                    .or_default()
                    .push((*v).to_string());
            }
            m
        };
        let account = app.account.as_str();
        let operator_describe = ctx(&[(KEY_VIA_SERVICE, &via), (KEY_CALLER_ACCOUNT, account)]);
        let operator_data = ctx(&[
            (KEY_VIA_SERVICE, &via),
            (KEY_CALLER_ACCOUNT, account),
            (KEY_ENCRYPTION_CONTEXT, application_arn),
        ]);
        let operator_grant = ctx(&[
            (KEY_VIA_SERVICE, &via),
            (KEY_CALLER_ACCOUNT, account),
            (KEY_ENCRYPTION_CONTEXT, application_arn),
            (KEY_GRANT_CONSTRAINT, "EncryptionContextSubset"),
            (KEY_GRANT_OPERATIONS, "Decrypt"),
        ]);
        let service_describe = ctx(&[
            (KEY_SOURCE_ARN, application_arn),
            (KEY_SOURCE_ACCOUNT, account),
        ]);
        let service_data = ctx(&[
            (KEY_SOURCE_ARN, application_arn),
            (KEY_SOURCE_ACCOUNT, account),
            (KEY_ENCRYPTION_CONTEXT, application_arn),
        ]);
        let service_grant = ctx(&[
            (KEY_SOURCE_ARN, application_arn),
            (KEY_SOURCE_ACCOUNT, account),
            (KEY_ENCRYPTION_CONTEXT, application_arn),
            (KEY_GRANT_CONSTRAINT, "EncryptionContextSubset"),
            (KEY_GRANT_OPERATIONS, "Decrypt"),
        ]);

        let access = |p: &Principal, action: &str, c: &BTreeMap<String, Vec<String>>, why: &str| {
            RequiredAccess {
                principal: p.clone(),
                action: action.to_string(),
                context: c.clone(),
                purpose: why.to_string(),
            }
        };
        let accesses = vec![
            access(
                &operator,
                "kms:DescribeKey",
                &operator_describe,
                "the operator's UpdateApplication validates the key through MSF",
            ),
            access(
                &operator,
                "kms:Decrypt",
                &operator_data,
                "the operator configures the application to use the key for its state",
            ),
            access(
                &operator,
                "kms:GenerateDataKey",
                &operator_data,
                "the operator configures the application to use the key for its state",
            ),
            access(
                &operator,
                "kms:GenerateDataKeyWithoutPlaintext",
                &operator_data,
                "the operator configures the application to use the key for its state",
            ),
            access(
                &operator,
                "kms:CreateGrant",
                &operator_grant,
                "the operator lets MSF create the grant for the running application",
            ),
            access(
                &msf,
                "kms:DescribeKey",
                &service_describe,
                "MSF validates the key for the application",
            ),
            access(
                &msf,
                "kms:GenerateDataKey",
                &service_data,
                "MSF encrypts durable application state (snapshots)",
            ),
            access(
                &msf,
                "kms:Decrypt",
                &service_data,
                "MSF decrypts durable application state (snapshot restore)",
            ),
            access(
                &infra,
                "kms:DescribeKey",
                &service_describe,
                "MSF infrastructure validates the key for the application",
            ),
            access(
                &infra,
                "kms:Decrypt",
                &service_data,
                "MSF infrastructure decrypts running application state",
            ),
            access(
                &infra,
                "kms:GenerateDataKeyWithoutPlaintext",
                &service_data,
                "MSF infrastructure encrypts running application state",
            ),
            access(
                &infra,
                "kms:CreateGrant",
                &service_grant,
                "MSF infrastructure creates a Decrypt grant for the running application",
            ),
        ];
        Ok(Self {
            application_arn: application_arn.to_string(),
            operator_role_arn: operator_role_arn.to_string(),
            accesses,
        })
    }
}
