//! Policy engine II: the classes of request the engine must decide exactly as AWS documents
//! (issue 8), one table per class. Each row's comment or the test's doc names the IAM / KMS
//! documentation rule it follows.

use msf_cmk_controller::policy::merge::{Grant, MergeError, granted, merge};
use msf_cmk_controller::policy::requirements::{MsfRequirements, dns_suffix, via_service};
use msf_cmk_controller::policy::{
    ComplianceReport, Decision, PolicyDocument, Principal, Request, check, evaluate,
};
use serde_json::{Value, json};

const APP: &str = "arn:aws:kinesisanalytics:us-east-1:123456789012:application/MyCmkApplication";
const OP: &str = "arn:aws:iam::123456789012:role/Operator";
const KEY: &str = "arn:aws:kms:us-east-1:123456789012:key/1234abcd-12ab-34cd-56ef-1234567890ab";
const CN_APP: &str = "arn:aws-cn:kinesisanalytics:cn-north-1:123456789012:application/Orders";
const CN_OP: &str = "arn:aws-cn:iam::123456789012:role/Operator";
const CN_KEY: &str =
    "arn:aws-cn:kms:cn-north-1:123456789012:key/1234abcd-12ab-34cd-56ef-1234567890ab";

fn fixture() -> Value {
    serde_json::from_str(
        &std::fs::read_to_string(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/fixtures/cmk-key-policy.json"
        ))
        .unwrap(),
    )
    .unwrap()
}

/// The AWS reference policy plus `extra` statements.
fn reference_with(extra: &[Value]) -> PolicyDocument {
    let mut p = fixture();
    p["Statement"]
        .as_array_mut()
        .unwrap()
        .extend_from_slice(extra);
    PolicyDocument::parse(&p.to_string()).unwrap()
}

fn report(doc: &PolicyDocument) -> ComplianceReport {
    check(
        doc,
        KEY,
        &MsfRequirements::for_application(APP, OP).unwrap(),
    )
}

fn codes(r: &ComplianceReport) -> Vec<(String, String)> {
    r.findings
        .iter()
        .map(|f| (f.code.clone(), f.statement.clone()))
        .collect()
}

/// Class 1. IAM User Guide, Principal element: `{"AWS": "*"}` is the same as `"*"`, so a
/// common lock-down written with it also applies to MSF's service principals.
#[test]
fn aws_star_is_everyone_including_services() {
    for principal in [json!({"AWS": "*"}), json!({"AWS": [OP, "*"]}), json!("*")] {
        let lockdown = json!({"Sid": "OnlyViaMsf", "Effect": "Deny", "Principal": principal,
            "Action": "kms:*", "Resource": "*",
            "Condition": {"StringNotEquals": {"kms:ViaService": "kinesisanalytics.us-east-1.amazonaws.com"}}});
        let r = report(&reference_with(&[lockdown]));
        assert!(!r.compliant, "{principal}");
        let denied: Vec<_> = r.missing().map(|a| a.principal.clone()).collect();
        // The operator's calls carry kms:ViaService; the services' calls do not.
        assert_eq!(denied.len(), 7, "{principal}: {denied:?}");
        assert!(denied.iter().all(|p| p.starts_with("Service:")));
    }
    // And in NotPrincipal: {"AWS": "*"} exempts everyone, services included.
    let not = json!({"Sid": "N", "Effect": "Deny", "NotPrincipal": {"AWS": "*"}, "Action": "kms:*", "Resource": "*"});
    assert!(report(&reference_with(&[not])).compliant);
}

/// Class 4. KMS Developer Guide, "Default key policy" / IAM "Principal": an account principal
/// delegates to the account's IAM policies. The operator let in only that way is compliant
/// with a warning; the service principals can never rely on it.
#[test]
fn account_principals_delegate_to_iam() {
    let root = json!({"Sid": "Enable IAM User Permissions", "Effect": "Allow",
        "Principal": {"AWS": "arn:aws:iam::123456789012:root"}, "Action": "kms:*", "Resource": "*"});
    // The reference policy without its operator statements, plus the default root statement.
    let mut p = fixture();
    p["Statement"].as_array_mut().unwrap().drain(0..3);
    p["Statement"].as_array_mut().unwrap().push(root.clone());
    let r = report(&PolicyDocument::parse(&p.to_string()).unwrap());
    assert!(r.compliant, "{:#?}", r.missing().collect::<Vec<_>>());
    let op: Vec<_> = r
        .accesses
        .iter()
        .filter(|a| a.principal.starts_with("AWS:"))
        .collect();
    assert_eq!(op.len(), 5);
    assert!(
        op.iter()
            .all(|a| a.decision == Decision::ImplicitDeny && a.delegated_to_iam)
    );
    assert_eq!(
        codes(&r),
        vec![(
            "OperatorReliesOnIamPolicy".to_string(),
            "Enable IAM User Permissions".to_string()
        )]
    );
    // Only the root statement: the operator relies on IAM, the services are missing.
    let only_root =
        PolicyDocument::parse(&json!({"Version": "2012-10-17", "Statement": [root]}).to_string())
            .unwrap();
    let r = report(&only_root);
    assert!(!r.compliant);
    assert_eq!(r.missing().count(), 7);
    assert!(r.missing().all(|a| a.principal.starts_with("Service:")));
    assert!(r.missing().all(|a| !a.delegated_to_iam));
}

/// (name, Version, Condition, request context, allowed?)
type VarRow = (
    &'static str,
    Option<&'static str>,
    Value,
    Vec<(&'static str, &'static str)>,
    bool,
);

/// Class 6. IAM User Guide, "Policy variables": substituted under 2012-10-17 only; a key absent
/// from the request makes the condition false; `${*}`, `${?}`, `${$}` are literal characters.
#[test]
fn policy_variables() {
    let run = |version: Option<&str>, condition: Value, ctx: &[(&str, &str)]| {
        let mut p = json!({"Statement": [{"Effect": "Allow", "Principal": "*", "Action": "kms:Decrypt",
            "Resource": "*", "Condition": condition}]});
        if let Some(v) = version {
            p["Version"] = json!(v);
        }
        let doc = PolicyDocument::parse(&p.to_string()).unwrap();
        let req = ctx.iter().fold(
            Request::new(Principal::Aws(OP.into()), "kms:Decrypt", KEY),
            |r, (k, v)| r.with_context(k, *v),
        );
        evaluate(&doc, &req).decision == Decision::Allow
    };
    let v12 = Some("2012-10-17");
    let acct = ("aws:PrincipalAccount", "123456789012");
    #[rustfmt::skip]
    let rows: Vec<VarRow> = vec![
        ("substituted", v12, json!({"StringEquals": {"aws:PrincipalArn": "arn:aws:iam::${aws:PrincipalAccount}:role/Operator"}}), vec![acct, ("aws:PrincipalArn", OP)], true),
        ("substituted, other value", v12, json!({"StringEquals": {"aws:PrincipalArn": "arn:aws:iam::${aws:PrincipalAccount}:role/Other"}}), vec![acct, ("aws:PrincipalArn", OP)], false),
        ("key names are case-insensitive", v12, json!({"StringEquals": {"k": "${AWS:principalaccount}"}}), vec![acct, ("k", "123456789012")], true),
        ("literal under 2008-10-17", Some("2008-10-17"), json!({"StringEquals": {"k": "${aws:PrincipalAccount}"}}), vec![acct, ("k", "${aws:PrincipalAccount}")], true),
        ("literal without Version", None, json!({"StringEquals": {"k": "${aws:PrincipalAccount}"}}), vec![acct, ("k", "123456789012")], false),
        ("absent key: false", v12, json!({"StringEquals": {"k": "${aws:username}"}}), vec![("k", "")], false),
        ("absent key: false even negated", v12, json!({"StringNotEquals": {"k": "${aws:username}"}}), vec![("k", "x")], false),
        ("default value", v12, json!({"StringEquals": {"k": "${aws:username, 'nobody'}"}}), vec![("k", "nobody")], true),
        ("${*} is a literal star", v12, json!({"StringLike": {"k": "a${*}"}}), vec![("k", "a*")], true),
        ("${*} is not a wildcard", v12, json!({"StringLike": {"k": "a${*}"}}), vec![("k", "ab")], false),
        ("${?} is a literal question mark", v12, json!({"StringLike": {"k": "a${?}"}}), vec![("k", "ab")], false),
        ("${$} is a dollar", v12, json!({"StringEquals": {"k": "${$}{x}"}}), vec![("k", "${x}")], true),
        ("a substituted value is literal", v12, json!({"StringLike": {"k": "${aws:username}"}}), vec![("aws:username", "*"), ("k", "alice")], false),
        ("ArnLike with a variable", v12, json!({"ArnLike": {"aws:SourceArn": "arn:aws:kinesisanalytics:*:${aws:PrincipalAccount}:application/*"}}), vec![acct, ("aws:SourceArn", APP)], true),
    ];
    for (name, version, c, ctx, want) in rows {
        assert_eq!(run(version, c, &ctx), want, "{name}");
    }
    // In Resource too.
    let doc = |resource: &str| {
        PolicyDocument::parse(
            &json!({"Version": "2012-10-17", "Statement": [{"Effect": "Allow",
            "Principal": "*", "Action": "kms:Decrypt", "Resource": resource}]})
            .to_string(),
        )
        .unwrap()
    };
    let req = Request::new(Principal::Aws(OP.into()), "kms:Decrypt", KEY)
        .with_context("aws:PrincipalAccount", "123456789012");
    let on = |r: &str, req: &Request| evaluate(&doc(r), req).decision == Decision::Allow;
    assert!(on("arn:aws:kms:*:${aws:PrincipalAccount}:key/*", &req));
    assert!(!on(
        "arn:aws:kms:*:${aws:PrincipalAccount}:key/*",
        &Request::new(Principal::Aws(OP.into()), "kms:Decrypt", KEY)
    ));
    // The unsafe direction: a Deny with a variable applies to the operator's real request.
    let deny = json!({"Sid": "NoOperatorOfThisAccount", "Effect": "Deny", "Principal": "*", "Action": "kms:CreateGrant",
        "Resource": "*", "Condition": {"ArnEquals": {"aws:PrincipalArn": "arn:aws:iam::${aws:PrincipalAccount}:role/Operator"}}});
    let r = report(&reference_with(std::slice::from_ref(&deny)));
    let denied: Vec<_> = r
        .missing()
        .map(|a| (a.principal.as_str(), a.decision))
        .collect();
    assert_eq!(
        denied,
        vec![(format!("AWS:{OP}").as_str(), Decision::ExplicitDeny)]
    );
    let mut old = fixture();
    old["Version"] = json!("2008-10-17");
    old["Statement"].as_array_mut().unwrap().push(deny);
    assert!(report(&PolicyDocument::parse(&old.to_string()).unwrap()).compliant);
}

/// Class 7. IAM User Guide, "AWS global condition context keys": the operator's and MSF's
/// requests carry aws:PrincipalArn, aws:PrincipalAccount, aws:PrincipalIsAWSService, ... and
/// keys the controller cannot know (aws:PrincipalOrgID) make the decision depend on them.
#[test]
fn global_keys_and_unknown_keys() {
    let deny = |condition: Value| json!({"Sid": "D", "Effect": "Deny", "Principal": "*", "Action": "kms:*", "Resource": "*", "Condition": condition});
    // (name, condition of a Deny on kms:*, operator denied, services denied, operator depends on)
    #[rustfmt::skip]
    let rows: Vec<(&str, Value, bool, bool, Vec<&str>)> = vec![
        ("AWS recommended organisation perimeter", json!({"StringNotEqualsIfExists": {"aws:PrincipalOrgID": "o-abc123"}, "BoolIfExists": {"aws:PrincipalIsAWSService": "false"}}), false, false, vec!["aws:principalorgid"]),
        ("perimeter with plain Bool", json!({"StringNotEqualsIfExists": {"aws:PrincipalOrgID": "o-abc123"}, "Bool": {"aws:PrincipalIsAWSService": "false"}}), false, false, vec!["aws:principalorgid"]),
        ("other account's principals", json!({"StringNotEquals": {"aws:PrincipalAccount": "123456789012"}, "Bool": {"aws:PrincipalIsAWSService": "false"}}), false, false, vec![]),
        // aws:PrincipalAccount is absent for a service principal: a negated operator is true.
        ("a foreign account only", json!({"StringNotEquals": {"aws:PrincipalAccount": "111111111111"}}), true, true, vec![]),
        ("only one role may call", json!({"ArnNotEquals": {"aws:PrincipalArn": "arn:aws:iam::123456789012:role/KeyAdmin"}, "Bool": {"aws:PrincipalIsAWSService": "false"}}), true, false, vec![]),
        ("services only for our account", json!({"StringNotEquals": {"aws:SourceAccount": "123456789012"}, "Bool": {"aws:PrincipalIsAWSService": "true"}}), false, false, vec![]),
        ("services for another account", json!({"StringNotEquals": {"aws:SourceAccount": "111111111111"}, "Bool": {"aws:PrincipalIsAWSService": "true"}}), false, true, vec![]),
        ("AssumedRole callers", json!({"StringEquals": {"aws:PrincipalType": "AssumedRole"}}), true, false, vec![]),
        ("only through a service (forward access sessions)", json!({"Bool": {"aws:ViaAWSService": "false", "aws:PrincipalIsAWSService": "false"}}), false, false, vec![]),
        ("principal tag", json!({"StringNotEquals": {"aws:PrincipalTag/team": "data"}, "Bool": {"aws:PrincipalIsAWSService": "false"}}), false, false, vec!["aws:principaltag/team"]),
    ];
    for (name, c, op_denied, svc_denied, depends) in rows {
        let r = report(&reference_with(&[deny(c)]));
        let op: Vec<_> = r
            .accesses
            .iter()
            .filter(|a| a.principal.starts_with("AWS:"))
            .collect();
        let svc: Vec<_> = r
            .accesses
            .iter()
            .filter(|a| a.principal.starts_with("Service:"))
            .collect();
        assert!(
            op.iter()
                .all(|a| (a.decision == Decision::ExplicitDeny) == op_denied),
            "{name}: {op:#?}"
        );
        assert!(
            svc.iter()
                .all(|a| (a.decision == Decision::ExplicitDeny) == svc_denied),
            "{name}: {svc:#?}"
        );
        assert!(
            op.iter().all(|a| a.depends_on == depends),
            "{name}: {op:#?}"
        );
        assert!(svc.iter().all(|a| a.depends_on.is_empty()), "{name}");
        assert_eq!(r.compliant, !op_denied && !svc_denied, "{name}");
        let depends_finding = codes(&r).contains(&("DenyDependsOnUnknownKey".into(), "D".into()));
        assert_eq!(
            depends_finding,
            !depends.is_empty(),
            "{name}: {:?}",
            codes(&r)
        );
    }
    // An Allow that depends on an unknown key does not grant, and says on what it depends.
    let mut p = fixture();
    p["Statement"][0]["Condition"]["StringEquals"]["aws:PrincipalOrgID"] = json!("o-abc123");
    let r = report(&PolicyDocument::parse(&p.to_string()).unwrap());
    let a = r.missing().next().unwrap();
    assert_eq!(
        (a.action.as_str(), a.decision),
        ("kms:DescribeKey", Decision::ImplicitDeny)
    );
    assert_eq!(a.depends_on, vec!["aws:principalorgid"]);
}

/// Class 8. A vacuous condition restricts nothing: findings are not silenced by it, and an
/// action pattern matching every KMS action counts as kms:*.
#[test]
fn vacuous_conditions_do_not_silence_findings() {
    let anyone = |condition: Value| json!({"Sid": "Open", "Effect": "Allow", "Principal": "*", "Action": "kms:DescribeKey", "Resource": "*", "Condition": condition});
    #[rustfmt::skip]
    let rows: Vec<(&str, Value, bool)> = vec![
        ("StringLike *", json!({"StringLike": {"kms:CallerAccount": "*"}}), true),
        ("StringLike all ?", json!({"StringLike": {"kms:CallerAccount": "????????????"}}), true),
        ("StringLike ?*", json!({"StringLike": {"aws:PrincipalOrgID": "?*"}}), true),
        ("IpAddress 0.0.0.0/0", json!({"IpAddress": {"aws:SourceIp": "0.0.0.0/0"}}), true),
        ("IpAddress ::/0", json!({"IpAddress": {"aws:SourceIp": ["10.0.0.0/8", "::/0"]}}), true),
        ("ArnLike arn:*", json!({"ArnLike": {"aws:PrincipalArn": "arn:*"}}), true),
        ("ArnLike all parts *", json!({"ArnLike": {"aws:SourceArn": "arn:*:*:*:*:*"}}), true),
        ("Null false on an always-present key", json!({"Null": {"aws:PrincipalArn": "false"}}), true),
        ("a real restriction", json!({"StringEquals": {"kms:CallerAccount": "123456789012"}}), false),
        ("StringLike with a real prefix", json!({"StringLike": {"aws:PrincipalArn": "arn:aws:iam::123456789012:*"}}), false),
        ("IpAddress /8", json!({"IpAddress": {"aws:SourceIp": "10.0.0.0/8"}}), false),
    ];
    for (name, c, finding) in rows {
        let r = report(&reference_with(&[anyone(c)]));
        let has = codes(&r).contains(&("PrincipalStarWithoutCondition".into(), "Open".into()));
        assert_eq!(has, finding, "{name}: {:?}", codes(&r));
    }
    for action in [
        json!("kms:?*"),
        json!("kms:*"),
        json!("*"),
        json!(["kms:Describe*", "kms:*?"]),
    ] {
        let s = json!({"Sid": "Dev", "Effect": "Allow", "Principal": {"AWS": "arn:aws:iam::123456789012:role/Dev"}, "Action": action, "Resource": "*"});
        let r = report(&reference_with(&[s]));
        assert!(
            codes(&r).contains(&("KmsStarToNonAdministrator".into(), "Dev".into())),
            "{action}"
        );
    }
    let narrow = json!({"Sid": "Dev", "Effect": "Allow", "Principal": {"AWS": "arn:aws:iam::123456789012:role/Dev"}, "Action": "kms:Describe*", "Resource": "*"});
    assert!(codes(&report(&reference_with(&[narrow]))).is_empty());
}

/// Issue 9, item 7. Service principals and kms:ViaService follow the partition's DNS suffix,
/// taken from the application ARN.
#[test]
fn partitions() {
    for (partition, suffix) in [
        ("aws", "amazonaws.com"),
        ("aws-cn", "amazonaws.com.cn"),
        ("aws-us-gov", "amazonaws.com"),
        ("aws-iso", "c2s.ic.gov"),
        ("aws-iso-b", "sc2s.sgov.gov"),
    ] {
        assert_eq!(dns_suffix(partition), suffix);
    }
    assert_eq!(
        via_service("aws-cn", "cn-north-1"),
        "kinesisanalytics.cn-north-1.amazonaws.com.cn"
    );
    let reqs = MsfRequirements::for_application(CN_APP, CN_OP).unwrap();
    let services: Vec<String> = reqs
        .accesses
        .iter()
        .filter_map(|a| match &a.principal {
            Principal::Service(s) => Some(s.clone()),
            _ => None,
        })
        .collect();
    assert_eq!(services.len(), 7);
    assert!(services.iter().all(|s| s.ends_with(".amazonaws.com.cn")));
    assert!(
        reqs.accesses
            .iter()
            .filter(|a| matches!(a.principal, Principal::Aws(_)))
            .all(
                |a| a.context["kms:viaservice"] == ["kinesisanalytics.cn-north-1.amazonaws.com.cn"]
            )
    );
    // The statements the controller writes for a China application grant exactly that, and
    // the aws partition's reference statements do not.
    let base = PolicyDocument::parse(r#"{"Version":"2012-10-17","Statement":[{"Sid":"Root","Effect":"Allow","Principal":{"AWS":"arn:aws-cn:iam::123456789012:root"},"Action":"kms:*","Resource":"*"}]}"#).unwrap();
    let g = Grant {
        application_arn: CN_APP.into(),
        operator_role_arn: CN_OP.into(),
    };
    let merged = merge(&base, std::slice::from_ref(&g), &[]).unwrap();
    let text = merged.to_compact_json();
    assert!(
        text.contains("\"kinesisanalytics.amazonaws.com.cn\""),
        "{text}"
    );
    assert!(
        text.contains("kinesisanalytics.cn-north-1.amazonaws.com.cn"),
        "{text}"
    );
    assert!(!text.contains("amazonaws.com\""), "{text}");
    let r = check(&merged, CN_KEY, &reqs);
    assert!(r.compliant, "{:#?}", r.missing().collect::<Vec<_>>());
    assert!(r.findings.is_empty(), "{:?}", r.findings);
    assert_eq!(merged.owned_sids().len(), 8);
    let back = merge(&merged, &[], &[CN_APP.to_string()]).unwrap();
    assert_eq!(back.to_compact_json(), base.to_compact_json());
    let global = fixture()
        .to_string()
        .replace(":aws:", ":aws-cn:")
        .replace("us-east-1", "cn-north-1");
    let r = check(
        &PolicyDocument::parse(&global).unwrap(),
        CN_KEY,
        &MsfRequirements::for_application(CN_APP, CN_OP).unwrap(),
    );
    assert!(!r.compliant);
    assert_eq!(
        r.missing().count(),
        12,
        "aws-partition names grant nothing in aws-cn"
    );
}

/// Ownership: a statement is the controller's only when its Sid follows the naming scheme and
/// it is exactly what the controller writes. Anything else under the prefix is a person's: kept
/// byte for byte, its values never adopted, and merge writes nothing until it is renamed.
#[test]
fn ownership_needs_the_sid_and_the_shape() {
    let g = Grant {
        application_arn: APP.into(),
        operator_role_arn: OP.into(),
    };
    let base = PolicyDocument::parse(&fixture().to_string()).unwrap();
    let good = merge(&base, std::slice::from_ref(&g), &[]).unwrap();
    let good_json: Value = serde_json::from_str(&good.to_compact_json()).unwrap();
    let owned_at = |sid_part: &str| {
        good_json["Statement"]
            .as_array()
            .unwrap()
            .iter()
            .position(|s| s["Sid"].as_str().unwrap().contains(sid_part))
            .unwrap()
    };
    let other_app = "arn:aws:kinesisanalytics:us-east-1:123456789012:application/Intruder";
    type Edit = Box<dyn Fn(&mut Value)>;
    #[rustfmt::skip]
    let rows: Vec<(&str, &str, Edit)> = vec![
        ("a Deny under an owned Sid", "ServiceDurableDecrypt", Box::new(|s: &mut Value| s["Effect"] = json!("Deny"))),
        ("a person's grant under an owned Sid", "OperatorDescribeKey", Box::new(|s: &mut Value| s["Principal"] = json!({"AWS": "arn:aws:iam::123456789012:role/Someone"}))),
        ("an edited copy (an application added)", "ServiceDescribeKey", Box::new(move |s: &mut Value| s["Condition"]["StringEquals"]["aws:SourceArn"] = json!([APP, other_app]))),
        ("an edited copy (a condition key dropped)", "OperatorCreateGrant", Box::new(|s: &mut Value| { s["Condition"].as_object_mut().unwrap().remove("ForAllValues:StringEquals"); })),
        ("an edited copy (an action added)", "OperatorUseKey", Box::new(|s: &mut Value| s["Action"] = json!(["kms:Decrypt", "kms:Encrypt", "kms:GenerateDataKey", "kms:GenerateDataKeyWithoutPlaintext"]))),
        ("an edited copy (reformatted list)", "ServiceDurableGenerateDataKey", Box::new(|s: &mut Value| s["Action"] = json!(["kms:GenerateDataKey"]))),
        ("a made-up owned-looking Sid", "ServiceRunningState", Box::new(|s: &mut Value| s["Sid"] = json!("MsfCmkSomethingElse"))),
    ];
    for (name, which, edit) in rows {
        let mut v = good_json.clone();
        let idx = owned_at(which);
        edit(&mut v["Statement"][idx]);
        let sid = v["Statement"][idx]["Sid"].as_str().unwrap().to_string();
        let doc = PolicyDocument::parse(&v.to_string()).unwrap();
        assert_eq!(doc.unmergeable_sids(), vec![sid.clone()], "{name}");
        match merge(&doc, std::slice::from_ref(&g), &[]) {
            Err(e @ MergeError::NotMergeable { .. }) => {
                assert!(e.to_string().contains(&sid), "{name}: {e}")
            }
            other => panic!("{name}: expected NotMergeable, got {other:?}"),
        }
        // Its values are never taken for the controller's grants.
        assert!(!granted(&doc).applications.contains(other_app), "{name}");
        // Nor is it listed as owned.
        assert!(!doc.owned_sids().contains(&sid), "{name}");
    }
    // The untouched statements are all recognised.
    assert_eq!(good.owned_sids().len(), 8);
    assert!(good.unmergeable_sids().is_empty());
}
