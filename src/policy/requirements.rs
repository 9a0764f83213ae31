//! What MSF and the application's operator need from a key, for one application.
//!
//! Derived from the AWS reference key policy (`tests/fixtures/cmk-key-policy.json`): for each
//! statement, the principal, the action, and the request context a real call carries. The
//! service principals call with `aws:SourceArn` / `aws:SourceAccount` of the application; the
//! operator's calls go through MSF (`kms:ViaService`); data-key calls carry the application
//! ARN as encryption context; MSF's grants are constrained to that context and to Decrypt.
//!
//! Each access also carries the global keys a real request carries (`aws:PrincipalArn`,
//! `aws:PrincipalIsAWSService`, ...), and names the keys whose value the controller cannot
//! know ([`RequiredAccess::unknown`], such as `aws:PrincipalOrgID`): evaluation treats those as
//! unknown rather than absent. Service names and `kms:ViaService` follow the partition's DNS
//! suffix (`amazonaws.com.cn` in China), taken from the application ARN.

use std::collections::BTreeMap;

use serde::Serialize;

use super::principal::Principal;
use crate::arn::{Arn, ArnError};

/// The MSF service principals in the `aws` partition; see [`msf_service`] for the others.
pub const MSF_SERVICE: &str = "kinesisanalytics.amazonaws.com";
pub const MSF_INFRASTRUCTURE_SERVICE: &str = "infrastructure.kinesisanalytics.amazonaws.com";

/// The DNS suffix of a partition: service principals and endpoints end with it.
pub fn dns_suffix(partition: &str) -> &'static str {
    match partition {
        "aws-cn" => "amazonaws.com.cn",
        "aws-iso" => "c2s.ic.gov",
        "aws-iso-b" => "sc2s.sgov.gov",
        // aws, aws-us-gov, and partitions this build does not know.
        _ => "amazonaws.com",
    }
}

/// `kinesisanalytics.<suffix>` in `partition`.
pub fn msf_service(partition: &str) -> String {
    format!("kinesisanalytics.{}", dns_suffix(partition))
}

/// `infrastructure.kinesisanalytics.<suffix>` in `partition`.
pub fn msf_infrastructure_service(partition: &str) -> String {
    format!("infrastructure.kinesisanalytics.{}", dns_suffix(partition))
}

/// Keys present in a request by an IAM role through MSF whose value the controller cannot
/// know. Names are lower-cased; a trailing `/` makes a prefix. `aws:CalledVia` is here because
/// AWS fills it only for some services and does not list MSF among them.
const OPERATOR_UNKNOWN: &[&str] = &[
    "aws:principalorgid",
    "aws:principalorgpaths",
    "aws:principaltag/",
    "aws:userid",
    "aws:sourceip",
    "aws:sourceidentity",
    "aws:rolesessionname",
    "aws:tokenissuetime",
    "aws:multifactorauthpresent",
    "aws:multifactorauthage",
    "aws:currenttime",
    "aws:epochtime",
    "aws:resourcetag/",
    "aws:resourceorgid",
    "aws:resourceorgpaths",
    "aws:calledvia",
    "aws:calledviafirst",
    "aws:calledvialast",
    "kms:keyorigin",
    "kms:keyspec",
    "kms:keyusage",
    "kms:multiregion",
    "kms:multiregionkeytype",
    "kms:resourcealiases",
];

/// The same for a service principal's request. The service's own account (`kms:CallerAccount`)
/// is not documented; `aws:PrincipalOrgID` and `aws:PrincipalArn` are absent for services.
const SERVICE_UNKNOWN: &[&str] = &[
    "kms:calleraccount",
    "aws:sourceip",
    "aws:currenttime",
    "aws:epochtime",
    "aws:viaawsservice",
    "aws:resourcetag/",
    "aws:resourceorgid",
    "aws:resourceorgpaths",
    "aws:sourceorgid",
    "aws:sourceorgpaths",
    "kms:keyorigin",
    "kms:keyspec",
    "kms:keyusage",
    "kms:multiregion",
    "kms:multiregionkeytype",
    "kms:resourcealiases",
];

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
    /// Keys present in the real request whose value the controller cannot know.
    pub unknown: Vec<String>,
    /// Why MSF needs it, for people reading a report.
    pub purpose: String,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct MsfRequirements {
    pub application_arn: String,
    pub operator_role_arn: String,
    pub accesses: Vec<RequiredAccess>,
}

/// `kms:ViaService` value for MSF in the application's partition and region.
pub fn via_service(partition: &str, region: &str) -> String {
    format!("kinesisanalytics.{region}.{}", dns_suffix(partition))
}

impl MsfRequirements {
    pub fn for_application(
        application_arn: &str,
        operator_role_arn: &str,
    ) -> Result<Self, ArnError> {
        let app = Arn::parse_application(application_arn)?;
        Arn::parse_role(operator_role_arn)?;
        let via = via_service(&app.partition, &app.region);
        let operator = Principal::Aws(operator_role_arn.to_string());
        let msf_name = msf_service(&app.partition);
        let infra_name = msf_infrastructure_service(&app.partition);
        let msf = Principal::Service(msf_name.clone());
        let infra = Principal::Service(infra_name.clone());

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
                unknown: Vec::new(),
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
        let accesses = accesses
            .into_iter()
            .map(|a| with_global_keys(a, &app, operator_role_arn))
            .collect();
        Ok(Self {
            application_arn: application_arn.to_string(),
            operator_role_arn: operator_role_arn.to_string(),
            accesses,
        })
    }
}

/// Adds the global keys AWS puts in every request of this principal (IAM User Guide, "AWS
/// global condition context keys"), and the keys whose value is unknown. Keys already in the
/// access's context stay as they are.
fn with_global_keys(mut a: RequiredAccess, app: &Arn, operator_role_arn: &str) -> RequiredAccess {
    let mut add = |k: &str, v: &str| {
        a.context
            .entry(k.to_string())
            .or_insert_with(|| vec![v.to_string()]);
    };
    add("aws:securetransport", "true");
    add("aws:requestedregion", &app.region);
    let unknown: &[&str] = match &a.principal {
        Principal::Aws(_) => {
            // The operator's credentials, used by MSF on its behalf (forward access sessions).
            add("aws:principalarn", operator_role_arn);
            add("aws:principalaccount", &app.account);
            add("aws:principalisawsservice", "false");
            add("aws:principaltype", "AssumedRole");
            add("aws:viaawsservice", "true");
            OPERATOR_UNKNOWN
        }
        Principal::Service(name) => {
            let name = name.clone();
            add("aws:principalisawsservice", "true");
            add("aws:principalservicename", &name);
            SERVICE_UNKNOWN
        }
    };
    a.unknown = unknown.iter().map(|k| k.to_string()).collect();
    a
}
