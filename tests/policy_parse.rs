//! The policy model: lossless round trip, precise errors, and no panic on any input.

use msf_cmk_controller::policy::merge::{Grant, merge};
use msf_cmk_controller::policy::{PolicyDocument, Principal, Request, evaluate};
use proptest::prelude::*;
use serde_json::{Value, json};

const ODD_FORMS: &str = r#"{
  "Id": "odd-but-valid",
  "Version": "2012-10-17",
  "Statement": [
    {"Resource": "*", "Action": "kms:Decrypt", "Principal": {"AWS": ["arn:aws:iam::123456789012:role/B", "arn:aws:iam::123456789012:role/A", "AROAEXAMPLEDELETED01"]},
     "Effect": "Allow", "Sid": "FieldsInOddOrder", "Condition": {"NumericLessThan": {"n": 42}}},
    {"Effect": "Deny", "Principal": "*", "NotAction": ["kms:Decrypt"], "NotResource": "arn:aws:kms:*:*:key/*",
     "Condition": {"ForAnyValue:StringLike": {"kms:EncryptionContextKeys": ["b*", "a*"]}, "NumericLessThan": {"n": 3.5}}},
    {"Sid": "", "Effect": "Allow", "NotPrincipal": {"Service": "x.amazonaws.com"}, "Action": ["kms:List*"], "Resource": ["*"]}
  ]
}"#;

#[test]
fn round_trip_keeps_forms_fields_and_order() {
    let doc = PolicyDocument::parse(ODD_FORMS).unwrap();
    let original: Value = serde_json::from_str(ODD_FORMS).unwrap();
    let out: Value = serde_json::from_str(&doc.to_compact_json()).unwrap();
    assert_eq!(out, original);
    // Order of keys inside statements and at the top is kept, not just the values.
    assert_eq!(
        doc.to_compact_json(),
        serde_json::to_string(&original).unwrap()
    );
    assert_eq!(PolicyDocument::parse(&doc.to_pretty_json()).unwrap(), doc);
    // And through a merge, the unowned statements come out byte for byte.
    let merged = merge(
        &doc,
        &[Grant {
            application_arn: "arn:aws:kinesisanalytics:us-east-1:123456789012:application/A".into(),
            operator_role_arn: "arn:aws:iam::123456789012:role/Operator".into(),
        }],
        &[],
    )
    .unwrap();
    let merged_json: Value = serde_json::from_str(&merged.to_compact_json()).unwrap();
    for (i, s) in original["Statement"].as_array().unwrap().iter().enumerate() {
        assert_eq!(
            serde_json::to_string(&merged_json["Statement"][i]).unwrap(),
            serde_json::to_string(s).unwrap()
        );
    }
    assert_eq!(
        merged_json.as_object().unwrap().keys().collect::<Vec<_>>(),
        ["Id", "Version", "Statement"]
    );
}

/// KMS keeps a deleted principal as its unique id: the policy stays valid and round-trips.
#[test]
fn unique_id_principals_round_trip_byte_for_byte() {
    let text = r#"{"Version":"2012-10-17","Statement":[{"Sid":"Gone","Effect":"Allow","Principal":{"AWS":["AROA3EXAMPLEROLEID00","AIDAEXAMPLEUSERID001"]},"Action":"kms:Decrypt","Resource":"*"}]}"#;
    let doc = PolicyDocument::parse(text).unwrap();
    assert_eq!(doc.to_compact_json(), text);
    let merged = merge(
        &doc,
        &[Grant {
            application_arn: "arn:aws:kinesisanalytics:us-east-1:123456789012:application/A".into(),
            operator_role_arn: "arn:aws:iam::123456789012:role/Operator".into(),
        }],
        &[],
    )
    .unwrap();
    assert!(
        merged
            .to_compact_json()
            .starts_with(&text[..text.len() - 2])
    );
}

/// KMS accepts only tab, LF, CR and U+0020..U+00FF: the rest is written as `\uXXXX`, and the
/// size is that of the text sent.
#[test]
fn writing_escapes_above_latin1() {
    let text = "{\"Version\":\"2012-10-17\",\"Statement\":[{\"Sid\":\"Café€😀\",\"Effect\":\"Allow\",\"Principal\":\"*\",\"Action\":\"kms:Describe*\",\"Resource\":\"*\"}]}";
    let doc = PolicyDocument::parse(text).unwrap();
    let sent = doc.to_compact_json();
    assert!(sent.contains("Café\\u20ac\\ud83d\\ude00"), "{sent}");
    assert!(
        sent.chars()
            .all(|c| c == '\t' || c == '\n' || c == '\r' || ('\u{20}'..='\u{ff}').contains(&c))
    );
    assert!(doc.to_pretty_json().contains("\\u20ac"));
    assert_eq!(PolicyDocument::parse(&sent).unwrap(), doc);
}

/// KMS accepts a statement without Action (it has no effect): so does the engine.
#[test]
fn a_statement_without_action_has_no_effect() {
    let text = r#"{"Version":"2012-10-17","Statement":[{"Sid":"Empty","Effect":"Deny","Principal":"*","Resource":"*"}]}"#;
    let doc = PolicyDocument::parse(text).unwrap();
    assert_eq!(doc.to_compact_json(), text);
    let e = evaluate(
        &doc,
        &Request::new(Principal::Aws("123456789012".into()), "kms:Decrypt", "*"),
    );
    assert!(e.statements.is_empty());
}

#[test]
fn single_statement_object_form_is_kept() {
    let text = r#"{"Version":"2012-10-17","Statement":{"Effect":"Allow","Principal":{"AWS":"123456789012"},"Action":"kms:*","Resource":"*"}}"#;
    let doc = PolicyDocument::parse(text).unwrap();
    assert_eq!(doc.to_compact_json(), text);
    let e = evaluate(
        &doc,
        &Request::new(Principal::Aws("123456789012".into()), "kms:Decrypt", "*"),
    );
    assert_eq!(e.statements, vec!["0"]);
}

#[test]
fn errors_say_where_and_why() {
    let cases = [
        ("[]", "must be a JSON object"),
        ("{\"Statement\": [", "not valid JSON (line 1"),
        ("{}", "Statement: is required"),
        (r#"{"Version":"2020-01-01","Statement":[]}"#, "Version"),
        (
            r#"{"Statement":[1]}"#,
            "statement 0: a statement must be an object",
        ),
        (
            r#"{"Statement":[{"Sid":"S","Effect":"Permit","Principal":"*","Action":"a","Resource":"*"}]}"#,
            "statement 0 (Sid \"S\"): Effect: must be \"Allow\" or \"Deny\"",
        ),
        (
            r#"{"Statement":[{"Effect":"Allow","Action":"a","Resource":"*"}]}"#,
            "Principal: Principal or NotPrincipal is required",
        ),
        (
            r#"{"Statement":[{"Effect":"Allow","Principal":"*","Action":"a","NotAction":"b","Resource":"*"}]}"#,
            "Action and NotAction cannot both be present",
        ),
        (
            r#"{"Statement":[{"Effect":"Allow","Principal":"*","Action":"a"}]}"#,
            "Resource or NotResource is required",
        ),
        (
            r#"{"Statement":[{"Effect":"Allow","Principal":{"Robot":"x"},"Action":"a","Resource":"*"}]}"#,
            "unknown principal type \"Robot\"",
        ),
        (
            r#"{"Statement":[{"Effect":"Allow","Principal":{"AWS":"bob"},"Action":"a","Resource":"*"}]}"#,
            "AWS principal",
        ),
        (
            r#"{"Statement":[{"Effect":"Allow","Principal":"*","Action":[],"Resource":"*"}]}"#,
            "Action: empty list",
        ),
        (
            r#"{"Statement":[{"Effect":"Allow","Principal":"*","Action":"a","Resource":"*","Condition":{"StringEqualz":{"k":"v"}}}]}"#,
            "unknown condition operator \"StringEqualz\"",
        ),
        (
            r#"{"Statement":[{"Effect":"Allow","Principal":"*","Action":"a","Resource":"*","Condition":{"ForSomeValues:StringEquals":{"k":"v"}}}]}"#,
            "unknown set operator",
        ),
        (
            r#"{"Statement":[{"Sid":"N","Effect":"Allow","Principal":"*","Action":"a","Resource":"*","Condition":{"NumericLessThan":{"n":"ten"}}}]}"#,
            "statement 0 (Sid \"N\"): Condition: NumericLessThan.n: \"ten\" is not a number",
        ),
        (
            r#"{"Statement":[{"Effect":"Allow","Principal":"*","Action":"a","Resource":"*","Condition":{"DateLessThan":{"d":"soon"}}}]}"#,
            "not an ISO 8601 date",
        ),
        (
            r#"{"Statement":[{"Effect":"Allow","Principal":"*","Action":"a","Resource":"*","Condition":{"IpAddress":{"aws:SourceIp":"1.2.3.4/99"}}}]}"#,
            "not an IP address",
        ),
        (
            r#"{"Statement":[{"Effect":"Allow","Principal":"*","Action":"a","Resource":"*","Condition":{"Bool":{"b":"yes"}}}]}"#,
            "must be true or false",
        ),
        (
            r#"{"Statement":[{"Effect":"Allow","Principal":"*","Action":"a","Resource":"*","Condition":{"StringEquals":{"k":{"x":1}}}}]}"#,
            "cannot be an object",
        ),
        (
            r#"{"Statement":[{"Effect":"Allow","Principal":"*","Action":"a","Resource":"*","Condition":{"NullIfExists":{"k":"true"}}}]}"#,
            "Null takes neither",
        ),
        // Strict as PutKeyPolicy: a typo must not make a statement unconditional.
        (
            r#"{"Statement":[{"Sid":"T","Effect":"Deny","Principal":"*","Action":"a","Resource":"*","Conditon":{"Bool":{"b":"true"}}}]}"#,
            "statement 0 (Sid \"T\"): Conditon: unknown statement element",
        ),
        (
            r#"{"Version":"2012-10-17","Statment":[]}"#,
            "Statment: unknown policy element",
        ),
        (
            r#"{"Statement":[{"Effect":"Allow","Principal":"*","Action":"a","Resource":"*","Condition":{"StringEquals":{"k":"v"},"StringEquals":{"k":"w"}}}]}"#,
            "duplicate key \"StringEquals\"",
        ),
        (
            r#"{"Statement":[{"Effect":"Allow","Effect":"Deny","Principal":"*","Action":"a","Resource":"*"}]}"#,
            "duplicate key \"Effect\"",
        ),
        (
            r#"{"Statement":[{"Effect":"Allow","Principal":{"Service":"*"},"Action":"a","Resource":"*"}]}"#,
            "a service principal cannot be a wildcard",
        ),
        (
            r#"{"Statement":[{"Effect":"Allow","Principal":{"Service":["s.amazonaws.com","*"]},"Action":"a","Resource":"*"}]}"#,
            "a service principal cannot be a wildcard",
        ),
        (
            r#"{"Statement":[{"Sid":"a\u0007","Effect":"Allow","Principal":"*","Action":"a","Resource":"*"}]}"#,
            "character U+0007 is not accepted",
        ),
    ];
    for (text, want) in cases {
        let err = PolicyDocument::parse(text).expect_err(text).to_string();
        assert!(err.contains(want), "{text}\n  got: {err}\n  want: {want}");
        assert!(!err.contains('\n'), "one line: {err}");
    }
}

/// Any JSON value, biased towards policy-shaped objects so deep paths get exercised.
fn arb_json() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(|n| json!(n)),
        any::<f64>().prop_map(|f| json!(f)),
        prop_oneof![
            Just("*".to_string()),
            Just("Allow".to_string()),
            Just("Deny".to_string()),
            Just("kms:*".to_string()),
            Just("123456789012".to_string()),
            Just("arn:aws:iam::123456789012:role/R".to_string()),
            ".*",
        ]
        .prop_map(Value::String),
    ];
    let keys = prop_oneof![
        Just("Statement".to_string()),
        Just("Version".to_string()),
        Just("Effect".to_string()),
        Just("Principal".to_string()),
        Just("NotPrincipal".to_string()),
        Just("AWS".to_string()),
        Just("Service".to_string()),
        Just("Action".to_string()),
        Just("NotAction".to_string()),
        Just("Resource".to_string()),
        Just("Condition".to_string()),
        Just("StringEquals".to_string()),
        Just("ForAllValues:StringLike".to_string()),
        Just("NumericLessThanIfExists".to_string()),
        Just("DateGreaterThan".to_string()),
        Just("IpAddress".to_string()),
        Just("Null".to_string()),
        "[a-zA-Z:]{0,12}",
    ];
    leaf.prop_recursive(5, 64, 6, move |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..5).prop_map(Value::Array),
            prop::collection::vec((keys.clone(), inner), 0..6)
                .prop_map(|kv| Value::Object(kv.into_iter().collect())),
        ]
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn arbitrary_json_never_panics(v in arb_json()) {
        let text = v.to_string();
        if let Ok(doc) = PolicyDocument::parse(&text) {
            // Whatever parses evaluates, merges and round-trips without panicking.
            let req = Request::new(Principal::Aws("arn:aws:iam::123456789012:role/R".into()), "kms:Decrypt", "*")
                .with_context("k", "v");
            let _ = evaluate(&doc, &req);
            prop_assert_eq!(PolicyDocument::parse(&doc.to_compact_json()).unwrap(), doc.clone());
            let _ = merge(&doc, &[], &[]);
        }
        let wrapped = json!({"Version": "2012-10-17", "Statement": [v]}).to_string();
        let _ = PolicyDocument::parse(&wrapped);
    }

    #[test]
    fn random_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..512)) {
        let text = String::from_utf8_lossy(&bytes);
        let _ = PolicyDocument::parse(&text);
    }

    #[test]
    fn any_condition_never_panics(op in "[A-Za-z:]{0,30}", key in prop_oneof![".{0,10}", "[aé]{1,3}/.{0,4}"], val in arb_json(), ctx in prop::collection::vec(".{0,40}", 0..3)) {
        let text = json!({"Statement": [{"Effect": "Allow", "Principal": "*", "Action": "*", "Resource": "*",
            "Condition": {op: {key.clone(): val}}}]}).to_string();
        if let Ok(doc) = PolicyDocument::parse(&text) {
            let mut req = ctx.iter().fold(Request::new(Principal::Service("s".into()), "kms:Decrypt", "*"), |r, v| r.with_context(&key, v.clone()));
            let _ = evaluate(&doc, &req);
            // Unknown keys (names and prefixes) on any key name: three values, no panic.
            req.unknown = vec!["a/".into(), "é/".into(), key.to_lowercase()];
            let _ = evaluate(&doc, &req);
        }
    }
}
