//! Key-policy decisions the emulated services make with the project's policy engine
//! ([`crate::policy::evaluate`]): MSF's checks of the caller and of its service principals
//! when an update switches keys, and KMS's lock-out safety check.
//!
//! Only the key policy is evaluated (no IAM policies, grants or SCPs): an account grant
//! (`arn:aws:iam::ACCOUNT:root`) therefore lets every principal of the account in, which is
//! what a caller whose IAM policy allows the call would see.

use serde_json::Value;

use super::identity::Identity;
use crate::policy::requirements::MsfRequirements;
use crate::policy::{Decision, PolicyDocument, Principal, Request, evaluate};

/// The key policy as the engine sees it. Statements without Action / NotAction are dropped:
/// KMS stores them and they grant nothing. `None` when the engine cannot read the policy
/// (then nothing is allowed: MSF could not use the key either).
pub fn engine_document(policy: &str) -> Option<PolicyDocument> {
    let mut doc: Value = serde_json::from_str(policy).ok()?;
    if let Some(Value::Array(statements)) = doc.get_mut("Statement") {
        statements.retain(|s| s.get("Action").is_some() || s.get("NotAction").is_some());
    }
    PolicyDocument::from_value(doc).ok()
}

/// One refused access, for the error message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Refusal {
    /// `arn:...` for the caller, the service name for a service principal.
    pub principal: String,
    pub action: String,
    pub explicit_deny: bool,
}

fn decide(doc: Option<&PolicyDocument>, req: &Request) -> Decision {
    // The engine reports an account grant as a delegation to IAM (`delegated_to_iam`); the
    // emulator has no IAM policies and takes the caller's as allowing.
    doc.map_or(Decision::ImplicitDeny, |d| {
        let e = evaluate(d, req);
        if e.delegated_to_iam {
            Decision::Allow
        } else {
            e.decision
        }
    })
}

fn refusal(principal: &str, action: &str, decision: Decision) -> Option<Refusal> {
    (decision != Decision::Allow).then(|| Refusal {
        principal: principal.to_string(),
        action: action.to_string(),
        explicit_deny: decision == Decision::ExplicitDeny,
    })
}

/// The service principals' accesses MSF verifies when an update names a key: both principals
/// describe the key; `kinesisanalytics.amazonaws.com` makes and opens a data key (durable
/// state); the infrastructure principal opens one (running state). Its own data keys and
/// grants are used once the application runs, so they are not checked at update time.
fn checked_at_update(principal: &Principal, action: &str) -> bool {
    let Principal::Service(name) = principal else {
        return true;
    };
    let infra = name.starts_with("infrastructure.");
    matches!(
        (infra, action),
        (_, "kms:DescribeKey" | "kms:Decrypt") | (false, "kms:GenerateDataKey")
    )
}

/// What MSF refuses on the key an update switches to: the caller's accesses through MSF and
/// the service principals' ones, with the conditions of the AWS reference key policy.
pub fn refusals_on_new_key(
    policy: &str,
    key_arn: &str,
    application_arn: &str,
    caller: &Identity,
) -> Vec<Refusal> {
    let doc = engine_document(policy);
    let Ok(reqs) = MsfRequirements::for_application(application_arn, &caller.principal_arn) else {
        // A caller that is not a role (a user, root): check the services only, and the
        // caller's DescribeKey.
        return services_only(doc.as_ref(), key_arn, application_arn, caller);
    };
    let mut out = Vec::new();
    for access in &reqs.accesses {
        if !checked_at_update(&access.principal, &access.action) {
            continue;
        }
        let (shown, mut req) = match &access.principal {
            Principal::Service(name) => (
                name.clone(),
                Request::new(access.principal.clone(), &access.action, key_arn),
            ),
            Principal::Aws(_) => (caller.arn.clone(), caller.request(&access.action, key_arn)),
        };
        for (k, vs) in &access.context {
            req.context
                .entry(k.clone())
                .or_default()
                .extend(vs.iter().cloned());
        }
        out.extend(refusal(&shown, &access.action, decide(doc.as_ref(), &req)));
    }
    out
}

fn services_only(
    doc: Option<&PolicyDocument>,
    key_arn: &str,
    application_arn: &str,
    caller: &Identity,
) -> Vec<Refusal> {
    let mut out = Vec::new();
    let req = caller
        .request("kms:DescribeKey", key_arn)
        .with_context("kms:ViaService", via_service(application_arn));
    out.extend(refusal(&caller.arn, "kms:DescribeKey", decide(doc, &req)));
    for service in super::policy_check::MSF_PRINCIPALS {
        let req = Request::new(
            Principal::Service(service.into()),
            "kms:DescribeKey",
            key_arn,
        )
        .with_context("aws:SourceArn", application_arn)
        .with_context("aws:SourceAccount", caller.account.clone());
        out.extend(refusal(service, "kms:DescribeKey", decide(doc, &req)));
    }
    out
}

/// What the caller may no longer do on the key an update leaves (CMK -> CMK or CMK -> AWS
/// owned): MSF re-encrypts the application's state, so the caller must still describe the
/// key and decrypt with it, through MSF.
pub fn refusals_on_old_key(
    policy: &str,
    key_arn: &str,
    application_arn: &str,
    caller: &Identity,
) -> Vec<Refusal> {
    let doc = engine_document(policy);
    let wanted = ["kms:DescribeKey", "kms:Decrypt"];
    let requests: Vec<(String, Request)> =
        match MsfRequirements::for_application(application_arn, &caller.principal_arn) {
            // The operator's accesses of the requirements, with their context.
            Ok(reqs) => reqs
                .accesses
                .iter()
                .filter(|a| matches!(a.principal, Principal::Aws(_)))
                .filter(|a| wanted.contains(&a.action.as_str()))
                .map(|a| {
                    let mut req = caller.request(&a.action, key_arn);
                    for (k, vs) in &a.context {
                        req.context
                            .entry(k.clone())
                            .or_default()
                            .extend(vs.iter().cloned());
                    }
                    (a.action.clone(), req)
                })
                .collect(),
            Err(_) => wanted
                .iter()
                .map(|action| {
                    let req = caller
                        .request(action, key_arn)
                        .with_context("kms:ViaService", via_service(application_arn))
                        .with_context("kms:CallerAccount", caller.account.clone())
                        .with_context(
                            "kms:EncryptionContext:aws:kinesisanalytics:arn",
                            application_arn,
                        );
                    (action.to_string(), req)
                })
                .collect(),
        };
    requests
        .into_iter()
        .filter_map(|(action, req)| refusal(&caller.arn, &action, decide(doc.as_ref(), &req)))
        .collect()
}

/// `kms:ViaService` of MSF in the application's partition and region, for callers the
/// requirements do not cover (users, root).
fn via_service(application_arn: &str) -> String {
    let mut parts = application_arn.split(':');
    let partition = parts.nth(1).unwrap_or("aws");
    let region = parts.nth(1).unwrap_or_default();
    let suffix = match partition {
        "aws-cn" => "amazonaws.com.cn",
        "aws-iso" => "c2s.ic.gov",
        "aws-iso-b" => "sc2s.sgov.gov",
        _ => "amazonaws.com",
    };
    format!("kinesisanalytics.{region}.{suffix}")
}

/// KMS's lock-out safety check: may the caller still call PutKeyPolicy under `policy`?
pub fn keeps_put_key_policy(policy: &str, key_arn: &str, caller: &Identity) -> bool {
    let doc = engine_document(policy);
    decide(doc.as_ref(), &caller.request("kms:PutKeyPolicy", key_arn)) == Decision::Allow
}

#[cfg(test)]
mod tests {
    use super::*;

    const APP: &str = "arn:aws:kinesisanalytics:us-east-1:123456789012:application/orders";
    const KEY: &str = "arn:aws:kms:us-east-1:123456789012:key/k";

    fn caller() -> Identity {
        Identity::parse("arn:aws:iam::123456789012:role/msf-cmk-operator").unwrap()
    }

    #[test]
    fn default_policy_lets_the_caller_in_but_not_the_services() {
        let policy = super::super::policy_check::default_policy("123456789012");
        let r = refusals_on_new_key(&policy, KEY, APP, &caller());
        assert!(r.iter().all(|r| !r.principal.starts_with("arn:")), "{r:?}");
        assert!(
            r.iter()
                .any(|r| r.principal == "kinesisanalytics.amazonaws.com")
        );
        assert!(refusals_on_old_key(&policy, KEY, APP, &caller()).is_empty());
        assert!(keeps_put_key_policy(&policy, KEY, &caller()));
    }

    #[test]
    fn the_caller_is_its_roles_session_with_the_role_as_principal_arn() {
        let by_principal_arn = |role: &str| {
            serde_json::json!({"Statement": [{
                "Effect": "Allow",
                "Principal": {"AWS": "*"},
                "Action": "kms:PutKeyPolicy",
                "Resource": "*",
                "Condition": {"StringEquals": {"aws:PrincipalArn": role}}
            }]})
            .to_string()
        };
        let me = "arn:aws:iam::123456789012:role/msf-cmk-operator";
        assert!(keeps_put_key_policy(&by_principal_arn(me), KEY, &caller()));
        let other = "arn:aws:iam::123456789012:role/Other";
        assert!(!keeps_put_key_policy(
            &by_principal_arn(other),
            KEY,
            &caller()
        ));
        // Naming the role as principal matches its session.
        let named = r#"{"Statement":[{"Effect":"Allow","Principal":{"AWS":"arn:aws:iam::123456789012:role/msf-cmk-operator"},"Action":"kms:*","Resource":"*"}]}"#;
        assert!(keeps_put_key_policy(named, KEY, &caller()));
    }

    #[test]
    fn statements_without_action_grant_nothing() {
        let policy = r#"{"Statement":[{"Effect":"Allow","Principal":{"AWS":"*"},"Resource":"*"}]}"#;
        assert!(engine_document(policy).is_some());
        assert!(!keeps_put_key_policy(policy, KEY, &caller()));
        let other = r#"{"Statement":[{"Effect":"Allow","Principal":{"AWS":"arn:aws:iam::123456789012:role/Other"},"Action":"kms:*","Resource":"*"}]}"#;
        assert!(!keeps_put_key_policy(other, KEY, &caller()));
        assert_eq!(refusals_on_old_key(other, KEY, APP, &caller()).len(), 2);
    }
}
