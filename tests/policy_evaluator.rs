//! Table tests of the evaluator: one or more rows per rule of IAM/KMS policy evaluation.

use msf_cmk_controller::policy::{Decision, PolicyDocument, Principal, Request, evaluate};
use serde_json::{Value, json};

const KEY: &str = "arn:aws:kms:us-east-1:123456789012:key/1234abcd-12ab-34cd-56ef-1234567890ab";
const ROLE: &str = "arn:aws:iam::123456789012:role/Operator";

fn doc(statements: Value) -> PolicyDocument {
    let text = json!({"Version": "2012-10-17", "Statement": statements}).to_string();
    PolicyDocument::parse(&text).expect("test policy parses")
}

fn req(principal: Principal, action: &str, ctx: &[(&str, &str)]) -> Request {
    ctx.iter()
        .fold(Request::new(principal, action, KEY), |r, (k, v)| {
            r.with_context(k, *v)
        })
}

/// Does an Allow-everyone statement with condition `c` allow a request with context `ctx`?
fn cond(c: &Value, ctx: &[(&str, &str)]) -> bool {
    let d = doc(
        json!([{"Effect": "Allow", "Principal": "*", "Action": "kms:Decrypt", "Resource": "*", "Condition": c}]),
    );
    evaluate(&d, &req(Principal::Aws(ROLE.into()), "kms:Decrypt", ctx)).decision == Decision::Allow
}

/// (name, Condition element, request context, allowed?)
type Row = (&'static str, Value, Vec<(&'static str, &'static str)>, bool);

#[test]
fn condition_operators() {
    let ip = "203.0.113.7";
    #[rustfmt::skip]
    let rows: Vec<Row> = vec![
        // String
        ("StringEquals match", json!({"StringEquals": {"k": "v"}}), vec![("k", "v")], true),
        ("StringEquals values are case-sensitive", json!({"StringEquals": {"k": "v"}}), vec![("k", "V")], false),
        ("key names are case-insensitive", json!({"StringEquals": {"KMS:ViaService": "x"}}), vec![("kms:viaservice", "x")], true),
        ("key names are case-insensitive (other way)", json!({"StringEquals": {"kms:viaservice": "x"}}), vec![("KMS:VIASERVICE", "x")], true),
        ("StringEquals missing key is false", json!({"StringEquals": {"k": "v"}}), vec![], false),
        ("several values are OR", json!({"StringEquals": {"k": ["a", "b"]}}), vec![("k", "b")], true),
        ("several keys are AND (one fails)", json!({"StringEquals": {"a": "1", "b": "2"}}), vec![("a", "1"), ("b", "3")], false),
        ("several keys are AND (all hold)", json!({"StringEquals": {"a": "1", "b": "2"}}), vec![("a", "1"), ("b", "2")], true),
        ("several operators are AND", json!({"StringEquals": {"a": "1"}, "StringLike": {"b": "x*"}}), vec![("a", "1"), ("b", "y")], false),
        ("StringNotEquals other value", json!({"StringNotEquals": {"k": "v"}}), vec![("k", "w")], true),
        ("StringNotEquals same value", json!({"StringNotEquals": {"k": "v"}}), vec![("k", "v")], false),
        ("StringNotEquals several values are AND (none may match)", json!({"StringNotEquals": {"k": ["a", "b"]}}), vec![("k", "b")], false),
        ("StringNotEquals several values, none matches", json!({"StringNotEquals": {"k": ["a", "b"]}}), vec![("k", "c")], true),
        ("StringNotEquals missing key is true", json!({"StringNotEquals": {"k": "v"}}), vec![], true),
        ("StringEqualsIgnoreCase", json!({"StringEqualsIgnoreCase": {"k": "VaLuE"}}), vec![("k", "value")], true),
        ("StringNotEqualsIgnoreCase same", json!({"StringNotEqualsIgnoreCase": {"k": "VaLuE"}}), vec![("k", "value")], false),
        ("StringNotEqualsIgnoreCase other", json!({"StringNotEqualsIgnoreCase": {"k": "VaLuE"}}), vec![("k", "other")], true),
        ("StringLike *", json!({"StringLike": {"k": "app/*"}}), vec![("k", "app/x/y")], true),
        ("StringLike ?", json!({"StringLike": {"k": "a?c"}}), vec![("k", "abc")], true),
        ("StringLike ? is one char", json!({"StringLike": {"k": "a?c"}}), vec![("k", "abbc")], false),
        ("StringLike is case-sensitive", json!({"StringLike": {"k": "A*"}}), vec![("k", "abc")], false),
        ("StringNotLike", json!({"StringNotLike": {"k": "a*"}}), vec![("k", "abc")], false),
        ("StringNotLike other", json!({"StringNotLike": {"k": "a*"}}), vec![("k", "xbc")], true),
        // Under 2012-10-17 a variable whose key is absent makes the condition false.
        ("policy variable with absent key", json!({"StringEquals": {"k": "${aws:username}"}}), vec![("k", "alice")], false),
        ("policy variable substituted", json!({"StringEquals": {"k": "${aws:username}"}}), vec![("k", "alice"), ("aws:username", "alice")], true),
        ("number policy values compare as text", json!({"StringEquals": {"aws:SourceAccount": 123456789012u64}}), vec![("aws:SourceAccount", "123456789012")], true),
        // ARN
        ("ArnEquals exact", json!({"ArnEquals": {"aws:SourceArn": "arn:aws:kinesisanalytics:us-east-1:123456789012:application/A"}}), vec![("aws:SourceArn", "arn:aws:kinesisanalytics:us-east-1:123456789012:application/A")], true),
        ("ArnLike wildcard per part", json!({"ArnLike": {"aws:SourceArn": "arn:aws:kinesisanalytics:*:123456789012:application/*"}}), vec![("aws:SourceArn", "arn:aws:kinesisanalytics:eu-west-1:123456789012:application/B")], true),
        ("ArnLike wildcard does not cross parts", json!({"ArnLike": {"aws:SourceArn": "arn:aws:kinesisanalytics:*:application/*"}}), vec![("aws:SourceArn", "arn:aws:kinesisanalytics:eu-west-1:123456789012:application/B")], false),
        ("ArnLike other account", json!({"ArnLike": {"aws:SourceArn": "arn:aws:kinesisanalytics:*:123456789012:application/*"}}), vec![("aws:SourceArn", "arn:aws:kinesisanalytics:eu-west-1:999999999999:application/B")], false),
        ("ArnNotEquals", json!({"ArnNotEquals": {"aws:SourceArn": "arn:aws:s3:::a"}}), vec![("aws:SourceArn", "arn:aws:s3:::b")], true),
        ("ArnNotLike matching", json!({"ArnNotLike": {"aws:SourceArn": "arn:aws:s3:::*"}}), vec![("aws:SourceArn", "arn:aws:s3:::b")], false),
        ("ArnNotLike missing key is true", json!({"ArnNotLike": {"aws:SourceArn": "arn:aws:s3:::*"}}), vec![], true),
        ("ArnLike on a non-ARN is false", json!({"ArnLike": {"aws:SourceArn": "arn:aws:s3:::*"}}), vec![("aws:SourceArn", "nope")], false),
        // Bool, Null, Binary
        ("Bool true", json!({"Bool": {"aws:SecureTransport": "true"}}), vec![("aws:SecureTransport", "true")], true),
        ("Bool JSON boolean", json!({"Bool": {"aws:SecureTransport": true}}), vec![("aws:SecureTransport", "TRUE")], true),
        ("Bool false vs true", json!({"Bool": {"aws:SecureTransport": "false"}}), vec![("aws:SecureTransport", "true")], false),
        ("Bool missing key", json!({"Bool": {"aws:SecureTransport": "true"}}), vec![], false),
        ("Null true on missing", json!({"Null": {"k": "true"}}), vec![], true),
        ("Null true on present", json!({"Null": {"k": "true"}}), vec![("k", "x")], false),
        ("Null false on present", json!({"Null": {"k": "false"}}), vec![("k", "x")], true),
        ("Null false on missing", json!({"Null": {"k": "false"}}), vec![], false),
        ("BinaryEquals", json!({"BinaryEquals": {"k": "QmluYXJ5"}}), vec![("k", "QmluYXJ5")], true),
        ("BinaryEquals differs", json!({"BinaryEquals": {"k": "QmluYXJ5"}}), vec![("k", "QmluYXJ6")], false),
        // Numeric
        ("NumericEquals", json!({"NumericEquals": {"n": "10"}}), vec![("n", "10.0")], true),
        ("NumericNotEquals", json!({"NumericNotEquals": {"n": "10"}}), vec![("n", "11")], true),
        ("NumericNotEquals equal", json!({"NumericNotEquals": {"n": 10}}), vec![("n", "10")], false),
        ("NumericLessThan", json!({"NumericLessThan": {"n": "10"}}), vec![("n", "9")], true),
        ("NumericLessThan equal", json!({"NumericLessThan": {"n": "10"}}), vec![("n", "10")], false),
        ("NumericLessThanEquals", json!({"NumericLessThanEquals": {"n": "10"}}), vec![("n", "10")], true),
        ("NumericGreaterThan", json!({"NumericGreaterThan": {"n": "10"}}), vec![("n", "10.5")], true),
        ("NumericGreaterThan less", json!({"NumericGreaterThan": {"n": "10"}}), vec![("n", "3")], false),
        ("NumericGreaterThanEquals", json!({"NumericGreaterThanEquals": {"n": "10"}}), vec![("n", "10")], true),
        ("Numeric unreadable request value", json!({"NumericLessThan": {"n": "10"}}), vec![("n", "ten")], false),
        ("Numeric negated unreadable request value", json!({"NumericNotEquals": {"n": "10"}}), vec![("n", "ten")], false),
        // Date: ISO 8601 and epoch, on either side
        ("DateEquals ISO vs epoch", json!({"DateEquals": {"d": "2024-01-01T00:00:00Z"}}), vec![("d", "1704067200")], true),
        ("DateNotEquals", json!({"DateNotEquals": {"d": "2024-01-01T00:00:00Z"}}), vec![("d", "2024-01-02T00:00:00Z")], true),
        ("DateLessThan", json!({"DateLessThan": {"aws:CurrentTime": "2024-06-01T00:00:00Z"}}), vec![("aws:CurrentTime", "2024-05-31T23:59:59Z")], true),
        ("DateLessThan later", json!({"DateLessThan": {"aws:CurrentTime": "2024-06-01"}}), vec![("aws:CurrentTime", "2024-06-01T00:00:01Z")], false),
        ("DateLessThanEquals", json!({"DateLessThanEquals": {"d": 1704067200}}), vec![("d", "2024-01-01T00:00:00Z")], true),
        ("DateGreaterThan with offset", json!({"DateGreaterThan": {"d": "2024-01-01T00:00:00Z"}}), vec![("d", "2024-01-01T00:30:00+01:00")], false),
        ("DateGreaterThan", json!({"DateGreaterThan": {"d": "2024-01-01T00:00:00Z"}}), vec![("d", "2024-01-01T00:00:00.001Z")], true),
        ("DateGreaterThanEquals", json!({"DateGreaterThanEquals": {"d": "2024-01-01"}}), vec![("d", "2024-01-01T00:00:00Z")], true),
        // IP
        ("IpAddress CIDR", json!({"IpAddress": {"aws:SourceIp": "203.0.113.0/24"}}), vec![("aws:SourceIp", ip)], true),
        ("IpAddress bare IP", json!({"IpAddress": {"aws:SourceIp": "203.0.113.7"}}), vec![("aws:SourceIp", ip)], true),
        ("IpAddress outside", json!({"IpAddress": {"aws:SourceIp": "198.51.100.0/24"}}), vec![("aws:SourceIp", ip)], false),
        ("IpAddress IPv6", json!({"IpAddress": {"aws:SourceIp": "2001:db8::/32"}}), vec![("aws:SourceIp", "2001:db8::1")], true),
        ("NotIpAddress outside", json!({"NotIpAddress": {"aws:SourceIp": "198.51.100.0/24"}}), vec![("aws:SourceIp", ip)], true),
        ("NotIpAddress inside", json!({"NotIpAddress": {"aws:SourceIp": ["198.51.100.0/24", "203.0.113.0/24"]}}), vec![("aws:SourceIp", ip)], false),
        // IfExists
        ("IfExists on missing key", json!({"StringEqualsIfExists": {"k": "v"}}), vec![], true),
        ("IfExists on present mismatch", json!({"StringEqualsIfExists": {"k": "v"}}), vec![("k", "w")], false),
        ("IfExists on present match", json!({"StringEqualsIfExists": {"k": "v"}}), vec![("k", "v")], true),
        ("NumericLessThanIfExists missing", json!({"NumericLessThanIfExists": {"n": 1}}), vec![], true),
        // Set operators on multi-valued keys
        ("ForAllValues on missing key is true", json!({"ForAllValues:StringEquals": {"kms:GrantOperations": "Decrypt"}}), vec![], true),
        ("ForAllValues subset", json!({"ForAllValues:StringEquals": {"kms:GrantOperations": ["Decrypt", "Encrypt"]}}), vec![("kms:GrantOperations", "Decrypt")], true),
        ("ForAllValues all values must match", json!({"ForAllValues:StringEquals": {"kms:GrantOperations": "Decrypt"}}), vec![("kms:GrantOperations", "Decrypt"), ("kms:GrantOperations", "Encrypt")], false),
        ("ForAllValues all values match", json!({"ForAllValues:StringEquals": {"kms:GrantOperations": ["Decrypt", "Encrypt"]}}), vec![("kms:GrantOperations", "Decrypt"), ("kms:GrantOperations", "Encrypt")], true),
        ("ForAnyValue on missing key is false", json!({"ForAnyValue:StringEquals": {"k": "a"}}), vec![], false),
        ("ForAnyValue one matches", json!({"ForAnyValue:StringEquals": {"k": "a"}}), vec![("k", "z"), ("k", "a")], true),
        ("ForAnyValue none matches", json!({"ForAnyValue:StringEquals": {"k": "a"}}), vec![("k", "z")], false),
        ("ForAllValues:StringNotEquals none in the list", json!({"ForAllValues:StringNotEquals": {"k": ["a", "b"]}}), vec![("k", "c"), ("k", "d")], true),
        ("ForAllValues:StringNotEquals one in the list", json!({"ForAllValues:StringNotEquals": {"k": ["a", "b"]}}), vec![("k", "c"), ("k", "a")], false),
        ("ForAnyValue:StringNotEquals one outside the list", json!({"ForAnyValue:StringNotEquals": {"k": ["a"]}}), vec![("k", "a"), ("k", "c")], true),
        ("ForAnyValue:StringNotEquals all in the list", json!({"ForAnyValue:StringNotEquals": {"k": ["a"]}}), vec![("k", "a")], false),
        ("ForAnyValue:StringNotEquals missing key", json!({"ForAnyValue:StringNotEquals": {"k": ["a"]}}), vec![], false),
        ("ForAnyValue:StringLike", json!({"ForAnyValue:StringLike": {"k": "x*"}}), vec![("k", "a"), ("k", "xy")], true),
        ("multi-valued key without qualifier: any value", json!({"StringEquals": {"k": "a"}}), vec![("k", "z"), ("k", "a")], true),
        ("operator names are case-insensitive", json!({"stringequals": {"k": "v"}}), vec![("k", "v")], true),
    ];
    let mut failures = Vec::new();
    for (name, c, ctx, want) in &rows {
        if cond(c, ctx) != *want {
            failures.push(format!("{name}: want {want}"));
        }
    }
    assert!(failures.is_empty(), "failed rows:\n{}", failures.join("\n"));
}

fn allow_for(principal: Value) -> PolicyDocument {
    doc(
        json!([{"Sid": "S", "Effect": "Allow", "Principal": principal, "Action": "kms:Decrypt", "Resource": "*"}]),
    )
}

/// IAM User Guide, "AWS JSON policy elements: Principal": a role ARN covers its sessions, an
/// account principal covers the account root and delegates to IAM for the account's other
/// identities (the key policy alone does not let them in), `{"AWS": "*"}` is `"*"`.
#[test]
fn principals() {
    let aws = |s: &str| Principal::Aws(s.to_string());
    let svc = |s: &str| Principal::Service(s.to_string());
    use Decision::{Allow, ImplicitDeny};
    #[rustfmt::skip]
    let rows: Vec<(&str, Value, Principal, Decision, bool)> = vec![
        ("* is anyone", json!("*"), aws(ROLE), Allow, false),
        ("* includes services", json!("*"), svc("kinesisanalytics.amazonaws.com"), Allow, false),
        ("AWS * is anyone", json!({"AWS": "*"}), aws(ROLE), Allow, false),
        ("AWS * includes services", json!({"AWS": "*"}), svc("kinesisanalytics.amazonaws.com"), Allow, false),
        ("AWS * in a list includes services", json!({"AWS": [ROLE, "*"]}), svc("kinesisanalytics.amazonaws.com"), Allow, false),
        ("account id delegates a role to IAM", json!({"AWS": "123456789012"}), aws(ROLE), ImplicitDeny, true),
        ("account root ARN delegates a role to IAM", json!({"AWS": "arn:aws:iam::123456789012:root"}), aws(ROLE), ImplicitDeny, true),
        ("account delegates a session to IAM", json!({"AWS": "123456789012"}), aws("arn:aws:sts::123456789012:assumed-role/Operator/s1"), ImplicitDeny, true),
        ("account root ARN allows the root user", json!({"AWS": "arn:aws:iam::123456789012:root"}), aws("123456789012"), Allow, false),
        ("account id allows the root user", json!({"AWS": "123456789012"}), aws("arn:aws:iam::123456789012:root"), Allow, false),
        ("other account", json!({"AWS": "111111111111"}), aws(ROLE), ImplicitDeny, false),
        ("role ARN exact", json!({"AWS": ROLE}), aws(ROLE), Allow, false),
        ("other role", json!({"AWS": ROLE}), aws("arn:aws:iam::123456789012:role/Other"), ImplicitDeny, false),
        ("role grants its sessions", json!({"AWS": ROLE}), aws("arn:aws:sts::123456789012:assumed-role/Operator/s1"), Allow, false),
        ("role with a path grants its sessions", json!({"AWS": "arn:aws:iam::123456789012:role/team/Operator"}), aws("arn:aws:sts::123456789012:assumed-role/Operator/s1"), Allow, false),
        ("session ARN grants that session only", json!({"AWS": "arn:aws:sts::123456789012:assumed-role/Operator/s1"}), aws("arn:aws:sts::123456789012:assumed-role/Operator/s2"), ImplicitDeny, false),
        ("role does not grant the account", json!({"AWS": ROLE}), aws("123456789012"), ImplicitDeny, false),
        ("array of principals", json!({"AWS": ["arn:aws:iam::123456789012:role/A", ROLE]}), aws(ROLE), Allow, false),
        ("service principal", json!({"Service": "kinesisanalytics.amazonaws.com"}), svc("kinesisanalytics.amazonaws.com"), Allow, false),
        ("service array", json!({"Service": ["a.amazonaws.com", "infrastructure.kinesisanalytics.amazonaws.com"]}), svc("infrastructure.kinesisanalytics.amazonaws.com"), Allow, false),
        ("service is not an AWS principal", json!({"Service": "kinesisanalytics.amazonaws.com"}), aws(ROLE), ImplicitDeny, false),
        ("account grant never covers (nor delegates for) services", json!({"AWS": "123456789012"}), svc("kinesisanalytics.amazonaws.com"), ImplicitDeny, false),
        ("other service", json!({"Service": "kinesisanalytics.amazonaws.com"}), svc("infrastructure.kinesisanalytics.amazonaws.com"), ImplicitDeny, false),
        ("mixed AWS and Service", json!({"AWS": ROLE, "Service": "s.amazonaws.com"}), svc("s.amazonaws.com"), Allow, false),
        // How KMS shows a deleted principal: valid, matches nobody.
        ("unique id matches nobody", json!({"AWS": "AROAEXAMPLEID1234567"}), aws(ROLE), ImplicitDeny, false),
    ];
    for (name, p, who, want, delegated) in rows {
        let e = evaluate(&allow_for(p), &Request::new(who, "kms:Decrypt", KEY));
        assert_eq!(
            (e.decision, e.delegated_to_iam),
            (want, delegated),
            "{name}"
        );
    }
}

/// IAM User Guide, "AWS JSON policy elements: NotPrincipal": with Deny, everyone but the
/// listed principals is denied; AWS checks the account, then the role, then the session, so a
/// caller is exempt only when each of them is listed.
#[test]
fn not_principal_with_deny() {
    const SESSION: &str = "arn:aws:sts::123456789012:assumed-role/Operator/s1";
    const USER: &str = "arn:aws:iam::123456789012:user/alice";
    let aws = |s: &str| Principal::Aws(s.to_string());
    #[rustfmt::skip]
    let rows: Vec<(&str, Value, Principal, bool)> = vec![
        ("unlisted role is denied", json!({"AWS": "arn:aws:iam::123456789012:role/Other"}), aws(ROLE), true),
        ("the account alone does not exempt its roles", json!({"AWS": "123456789012"}), aws(SESSION), true),
        ("the account alone does not exempt its users", json!({"AWS": "arn:aws:iam::123456789012:root"}), aws(USER), true),
        ("the account exempts its root user", json!({"AWS": "arn:aws:iam::123456789012:root"}), aws("123456789012"), false),
        ("account + user exempts the user", json!({"AWS": ["123456789012", USER]}), aws(USER), false),
        ("a user without its account is denied", json!({"AWS": USER}), aws(USER), true),
        ("account + role does not exempt its sessions", json!({"AWS": ["123456789012", ROLE]}), aws(SESSION), true),
        ("account + role + session ARN exempts the session", json!({"AWS": ["123456789012", ROLE, SESSION]}), aws(SESSION), false),
        ("account + role + session ARN: another session is denied", json!({"AWS": ["123456789012", ROLE, SESSION]}), aws("arn:aws:sts::123456789012:assumed-role/Operator/s2"), true),
        ("a role acts through sessions: account + role is not enough", json!({"AWS": ["123456789012", ROLE]}), aws(ROLE), true),
        ("a role with a listed session of it is exempt", json!({"AWS": ["123456789012", ROLE, SESSION]}), aws(ROLE), false),
        ("AWS * in NotPrincipal exempts everyone, services too", json!({"AWS": "*"}), Principal::Service("kinesisanalytics.amazonaws.com".into()), false),
        ("a listed service is exempt", json!({"Service": "kinesisanalytics.amazonaws.com"}), Principal::Service("kinesisanalytics.amazonaws.com".into()), false),
        ("an unlisted service is denied", json!({"AWS": ROLE}), Principal::Service("kinesisanalytics.amazonaws.com".into()), true),
    ];
    for (name, np, who, denied) in rows {
        let d = doc(json!([
            {"Sid": "All", "Effect": "Allow", "Principal": "*", "Action": "kms:Decrypt", "Resource": "*"},
            {"Sid": "D", "Effect": "Deny", "NotPrincipal": np, "Action": "kms:Decrypt", "Resource": "*"}
        ]));
        let e = evaluate(&d, &Request::new(who, "kms:Decrypt", KEY));
        assert_eq!(e.decision == Decision::ExplicitDeny, denied, "{name}");
    }
}

/// A Deny naming an account applies to every identity of it (there is nothing to delegate).
#[test]
fn deny_naming_an_account_covers_its_identities() {
    let d = doc(json!([
        {"Sid": "All", "Effect": "Allow", "Principal": "*", "Action": "kms:*", "Resource": "*"},
        {"Sid": "NoAcct", "Effect": "Deny", "Principal": {"AWS": "111111111111"}, "Action": "kms:*", "Resource": "*"}
    ]));
    for who in [
        "111111111111",
        "arn:aws:iam::111111111111:role/R",
        "arn:aws:sts::111111111111:assumed-role/R/s",
    ] {
        let e = evaluate(
            &d,
            &Request::new(Principal::Aws(who.into()), "kms:Decrypt", KEY),
        );
        assert_eq!(e.decision, Decision::ExplicitDeny, "{who}");
    }
    let e = evaluate(
        &d,
        &Request::new(Principal::Aws(ROLE.into()), "kms:Decrypt", KEY),
    );
    assert_eq!(e.decision, Decision::Allow);
}

fn action_allowed(actions: Value, negated: bool, action: &str) -> bool {
    let field = if negated { "NotAction" } else { "Action" };
    let d = doc(json!([{"Effect": "Allow", "Principal": "*", field: actions, "Resource": "*"}]));
    evaluate(&d, &Request::new(Principal::Aws(ROLE.into()), action, KEY)).decision
        == Decision::Allow
}

#[test]
fn actions() {
    assert!(action_allowed(json!("kms:*"), false, "kms:Decrypt"));
    assert!(action_allowed(json!("*"), false, "kms:Decrypt"));
    assert!(
        action_allowed(json!("KMS:decrypt"), false, "kms:Decrypt"),
        "case-insensitive"
    );
    assert!(
        action_allowed(json!("kms:Decrypt"), false, "KMS:DECRYPT"),
        "case-insensitive"
    );
    assert!(action_allowed(
        json!("kms:GenerateDataKey*"),
        false,
        "kms:GenerateDataKeyWithoutPlaintext"
    ));
    assert!(action_allowed(json!("kms:?ecrypt"), false, "kms:Decrypt"));
    assert!(!action_allowed(
        json!("kms:?ecrypt"),
        false,
        "kms:ReEncrypt"
    ));
    assert!(!action_allowed(
        json!(["kms:Encrypt", "kms:Describe*"]),
        false,
        "kms:Decrypt"
    ));
    assert!(action_allowed(
        json!(["kms:Encrypt", "kms:Describe*"]),
        false,
        "kms:DescribeKey"
    ));
    assert!(!action_allowed(
        json!("kms:GenerateDataKey"),
        false,
        "kms:GenerateDataKeyWithoutPlaintext"
    ));
    assert!(
        action_allowed(json!("kms:PutKeyPolicy"), true, "kms:Decrypt"),
        "NotAction"
    );
    assert!(
        !action_allowed(json!(["kms:Put*", "kms:Decrypt"]), true, "kms:decrypt"),
        "NotAction"
    );
}

#[test]
fn resources() {
    let on = |field: &str, r: Value| {
        let d = doc(json!([{"Effect": "Allow", "Principal": "*", "Action": "kms:*", field: r}]));
        evaluate(
            &d,
            &Request::new(Principal::Aws(ROLE.into()), "kms:Decrypt", KEY),
        )
        .decision
            == Decision::Allow
    };
    assert!(on("Resource", json!("*")));
    assert!(on("Resource", json!(KEY)));
    assert!(on(
        "Resource",
        json!("arn:aws:kms:us-east-1:123456789012:key/*")
    ));
    assert!(!on(
        "Resource",
        json!("arn:aws:kms:eu-west-1:123456789012:key/*")
    ));
    assert!(!on(
        "NotResource",
        json!("arn:aws:kms:us-east-1:123456789012:key/*")
    ));
    assert!(on(
        "NotResource",
        json!(["arn:aws:kms:eu-west-1:123456789012:key/*"])
    ));
}

#[test]
fn deny_beats_allow_beats_implicit_deny() {
    let d = doc(json!([
        {"Sid": "AllowAll", "Effect": "Allow", "Principal": "*", "Action": "kms:*", "Resource": "*"},
        {"Effect": "Allow", "Principal": {"AWS": ROLE}, "Action": "kms:Decrypt", "Resource": "*"},
        {"Sid": "DenyDecryptWithoutVia", "Effect": "Deny", "Principal": "*", "Action": "kms:Decrypt", "Resource": "*",
         "Condition": {"Null": {"kms:ViaService": "true"}}},
        {"Sid": "DenyOthers", "Effect": "Deny", "NotPrincipal": {"AWS": ROLE}, "Action": "kms:Encrypt", "Resource": "*"}
    ]));
    let role = Principal::Aws(ROLE.into());
    let e = evaluate(&d, &req(role.clone(), "kms:Decrypt", &[]));
    assert_eq!(e.decision, Decision::ExplicitDeny);
    assert_eq!(e.statements, vec!["DenyDecryptWithoutVia"]);
    let e = evaluate(
        &d,
        &req(role.clone(), "kms:Decrypt", &[("kms:ViaService", "x")]),
    );
    assert_eq!(e.decision, Decision::Allow);
    assert_eq!(
        e.statements,
        vec!["AllowAll", "1"],
        "index when there is no Sid"
    );
    let e = evaluate(
        &d,
        &req(Principal::Aws("111111111111".into()), "kms:Encrypt", &[]),
    );
    assert_eq!(e.decision, Decision::ExplicitDeny);
    assert_eq!(e.statements, vec!["DenyOthers"]);
    let only_role = doc(
        json!([{"Effect": "Allow", "Principal": {"AWS": ROLE}, "Action": "kms:Decrypt", "Resource": "*"}]),
    );
    let e = evaluate(&only_role, &req(role, "kms:Encrypt", &[]));
    assert_eq!(e.decision, Decision::ImplicitDeny);
    assert!(e.statements.is_empty());
}

#[test]
fn decision_serialises_as_its_name() {
    for (d, s) in [
        (Decision::Allow, "\"Allow\""),
        (Decision::ExplicitDeny, "\"ExplicitDeny\""),
        (Decision::ImplicitDeny, "\"ImplicitDeny\""),
    ] {
        assert_eq!(serde_json::to_string(&d).unwrap(), s);
    }
}
