//! The sequential script a platform engineer would write instead of the controller, with the
//! same AWS SDK for Rust the controller uses (issue 10's peer): one call at a time,
//!
//! 1. per key: GetKeyPolicy, add every statement its applications need, PutKeyPolicy once;
//! 2. per application: DescribeApplication (for the version id), UpdateApplication.
//!
//! No DescribeKey, no re-read after the write, no wait for a policy to settle, no wait for an
//! update to end: every RUNNING application it touches restarts at once. The edit is this
//! project's own merge (`policy::merge`, the function behind `policy merge`), as a person would
//! paste the documented statements: so the final state can be compared with `apply`'s.
//!
//! The bench runs it as a child process of its own binary (`APPLY_AT_SCALE_PEER=sequential`),
//! so that its peak RSS is its own, not the emulator's.

use std::collections::BTreeMap;

use anyhow::Context;
use aws_config::{BehaviorVersion, Region};
use aws_credential_types::Credentials;
use aws_sdk_kinesisanalyticsv2 as msf;
use aws_sdk_kms as kms;
use msf_cmk_controller::policy::PolicyDocument;
use msf_cmk_controller::policy::merge::{Grant, merge};

/// The script's whole input: what a person would keep in a spreadsheet.
#[derive(serde::Serialize, serde::Deserialize)]
pub struct Plan {
    pub endpoint: String,
    pub region: String,
    pub account: String,
    pub operator_role_arn: String,
    /// (application name, key ARN)
    pub applications: Vec<(String, String)>,
}

/// Child entry point: reads the plan from the file named by `APPLY_AT_SCALE_PLAN`.
pub fn main_from_env() -> anyhow::Result<()> {
    let path = std::env::var("APPLY_AT_SCALE_PLAN").context("APPLY_AT_SCALE_PLAN is not set")?;
    let plan: Plan = serde_json::from_slice(&std::fs::read(&path)?)
        .with_context(|| format!("reading the plan {path}"))?;
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?
        .block_on(run(&plan))
}

async fn run(plan: &Plan) -> anyhow::Result<()> {
    let config = aws_config::defaults(BehaviorVersion::latest())
        .endpoint_url(&plan.endpoint)
        .region(Region::new(plan.region.clone()))
        .credentials_provider(Credentials::new("test", "test", None, None, "bench"))
        .load()
        .await;
    let kms = kms::Client::new(&config);
    let msf = msf::Client::new(&config);

    let mut by_key: BTreeMap<&str, Vec<Grant>> = BTreeMap::new();
    for (name, key) in &plan.applications {
        by_key.entry(key).or_default().push(Grant {
            application_arn: format!(
                "arn:aws:kinesisanalytics:{}:{}:application/{name}",
                plan.region, plan.account
            ),
            operator_role_arn: plan.operator_role_arn.clone(),
        });
    }
    for (key, grants) in &by_key {
        let got = kms
            .get_key_policy()
            .key_id(*key)
            .policy_name("default")
            .send()
            .await
            .with_context(|| format!("GetKeyPolicy {key}"))?;
        let doc = PolicyDocument::parse(got.policy().context("no policy")?)
            .map_err(|e| anyhow::anyhow!("key policy of {key}: {e}"))?;
        let merged = merge(&doc, grants, &[]).with_context(|| format!("merging {key}"))?;
        kms.put_key_policy()
            .key_id(*key)
            .policy_name("default")
            .policy(merged.to_compact_json())
            .send()
            .await
            .with_context(|| format!("PutKeyPolicy {key}"))?;
    }
    for (name, key) in &plan.applications {
        update_application(&msf, name, key).await?;
    }
    Ok(())
}

async fn update_application(client: &msf::Client, name: &str, key: &str) -> anyhow::Result<()> {
    use msf::types::{
        ApplicationConfigurationUpdate, ApplicationEncryptionConfigurationUpdate, KeyType,
    };
    let described = client
        .describe_application()
        .application_name(name)
        .send()
        .await
        .with_context(|| format!("DescribeApplication {name}"))?;
    let version = described
        .application_detail()
        .context("no ApplicationDetail")?
        .application_version_id();
    let encryption = ApplicationEncryptionConfigurationUpdate::builder()
        .key_type_update(KeyType::CustomerManagedKey)
        .key_id_update(key)
        .build()?;
    client
        .update_application()
        .application_name(name)
        .current_application_version_id(version)
        .application_configuration_update(
            ApplicationConfigurationUpdate::builder()
                .application_encryption_configuration_update(encryption)
                .build(),
        )
        .send()
        .await
        .with_context(|| format!("UpdateApplication {name}"))?;
    Ok(())
}
