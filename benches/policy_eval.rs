//! Evaluating every required access of one application against a key policy near KMS's
//! 32 KB limit: 40 applications merged under one operator plus people's statements.
//!
//! Run: cargo bench --bench policy_eval -- --warm-up-time 1 --measurement-time 3

use std::hint::black_box;

use criterion::{Criterion, criterion_group, criterion_main};
use msf_cmk_controller::policy::merge::{Grant, merge};
use msf_cmk_controller::policy::requirements::MsfRequirements;
use msf_cmk_controller::policy::{MAX_POLICY_BYTES, PolicyDocument, check};
use serde_json::json;

const KEY: &str = "arn:aws:kms:us-east-1:123456789012:key/1234abcd-12ab-34cd-56ef-1234567890ab";
const OP: &str = "arn:aws:iam::123456789012:role/Operator";

fn app(i: usize) -> String {
    format!("arn:aws:kinesisanalytics:us-east-1:123456789012:application/orders-enrichment-{i:03}")
}

fn big_policy() -> PolicyDocument {
    let human = json!({"Version": "2012-10-17", "Id": "key-default-1", "Statement": [
        {"Sid": "Enable IAM User Permissions", "Effect": "Allow",
         "Principal": {"AWS": "arn:aws:iam::123456789012:root"}, "Action": "kms:*", "Resource": "*"},
        {"Sid": "AllowKeyAdministrators", "Effect": "Allow", "Principal": {"AWS": "arn:aws:iam::123456789012:role/KeyAdmin"},
         "Action": ["kms:Create*", "kms:Describe*", "kms:Enable*", "kms:List*", "kms:Put*", "kms:Update*",
                    "kms:Revoke*", "kms:Disable*", "kms:Get*", "kms:Delete*", "kms:ScheduleKeyDeletion", "kms:CancelKeyDeletion"],
         "Resource": "*"},
        {"Sid": "DenyOutsideOrg", "Effect": "Deny", "Principal": "*", "Action": "kms:*", "Resource": "*",
         "Condition": {"StringNotEqualsIfExists": {"aws:PrincipalOrgID": "o-abc123"}, "Bool": {"aws:PrincipalIsAWSService": "false"}}}
    ]});
    let base = PolicyDocument::parse(&human.to_string()).expect("bench policy parses");
    let grants: Vec<Grant> = (0..40)
        .map(|i| Grant {
            application_arn: app(i),
            operator_role_arn: OP.to_string(),
        })
        .collect();
    merge(&base, &grants, &[]).expect("40 applications fit")
}

fn bench(c: &mut Criterion) {
    let doc = big_policy();
    let bytes = doc.to_compact_json().len();
    assert!(
        bytes > 28_000 && bytes <= MAX_POLICY_BYTES,
        "policy is {bytes} bytes"
    );
    // The last application: its ARN sits at the end of every value list.
    let reqs = MsfRequirements::for_application(&app(39), OP).expect("valid ARNs");
    assert!(check(&doc, KEY, &reqs).compliant);
    println!(
        "policy: {bytes} bytes compact, {} statements, {} accesses",
        doc.statements().len(),
        reqs.accesses.len()
    );

    c.bench_function("check_one_application_32k_policy", |b| {
        b.iter(|| check(black_box(&doc), black_box(KEY), black_box(&reqs)))
    });
    let text = doc.to_compact_json();
    c.bench_function("parse_and_check_32k_policy", |b| {
        b.iter(|| {
            let d = PolicyDocument::parse(black_box(&text)).expect("parses");
            check(&d, KEY, &reqs)
        })
    });
}

criterion_group!(benches, bench);
criterion_main!(benches);
