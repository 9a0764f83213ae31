//! The AWS documentation's procedure, one application at a time, each step one AWS CLI
//! invocation as a shell script would run it: describe-application, get-key-policy, edit,
//! put-key-policy, update-application. The edit adds this application's statements with
//! `msf-cmk-controller policy merge` (a person would use an editor, jq or python). Each CLI
//! call starts a Python process: that is what this way costs.

use std::path::Path;
use std::process::{Command, Stdio};

use anyhow::{Context, bail, ensure};

pub struct Cli<'a> {
    pub aws_cli: &'a Path,
    /// The controller binary, for `policy merge`.
    pub controller: &'a Path,
    pub endpoint: &'a str,
    pub region: &'a str,
    pub operator_role_arn: &'a str,
    /// Scratch directory for the policy and request files.
    pub dir: &'a Path,
    /// Sets the environment of every child (credentials, no shared config).
    pub env: fn(&mut Command),
}

impl Cli<'_> {
    fn aws(&self, args: &[&str]) -> anyhow::Result<String> {
        let mut c = Command::new(self.aws_cli);
        c.args(["--endpoint-url", self.endpoint, "--region", self.region])
            .args(["--output", "json"])
            .args(args)
            .stdin(Stdio::null());
        (self.env)(&mut c);
        let o = c.output().context("running the AWS CLI")?;
        if !o.status.success() {
            bail!(
                "aws {}: {}",
                args.join(" "),
                String::from_utf8_lossy(&o.stderr).trim()
            );
        }
        Ok(String::from_utf8(o.stdout)?)
    }

    /// Converts one application to `key`.
    pub fn convert(&self, name: &str, key: &str) -> anyhow::Result<()> {
        // 1. describe-application: ARN and version id.
        let d: serde_json::Value = serde_json::from_str(&self.aws(&[
            "kinesisanalyticsv2",
            "describe-application",
            "--application-name",
            name,
        ])?)?;
        let detail = &d["ApplicationDetail"];
        let arn = detail["ApplicationARN"]
            .as_str()
            .context("no ApplicationARN")?;
        let version = detail["ApplicationVersionId"]
            .as_i64()
            .context("no ApplicationVersionId")?;
        // 2. get-key-policy.
        let policy = self.dir.join("policy.json");
        let got = self.aws(&[
            "kms",
            "get-key-policy",
            "--key-id",
            key,
            "--policy-name",
            "default",
            "--query",
            "Policy",
            "--output",
            "text",
        ])?;
        std::fs::write(&policy, got)?;
        // 3. edit: add this application's statements.
        let merged = Command::new(self.controller)
            .args(["policy", "merge", "--policy"])
            .arg(&policy)
            .args(["--application-arn", arn])
            .args(["--operator-role-arn", self.operator_role_arn])
            .stdin(Stdio::null())
            .output()?;
        ensure!(
            merged.status.success(),
            "policy merge: {}",
            String::from_utf8_lossy(&merged.stderr)
        );
        let new_policy = self.dir.join("policy-new.json");
        std::fs::write(&new_policy, &merged.stdout)?;
        // 4. put-key-policy.
        self.aws(&[
            "kms",
            "put-key-policy",
            "--key-id",
            key,
            "--policy-name",
            "default",
            "--policy",
            &format!("file://{}", new_policy.display()),
        ])?;
        // 5. update-application with the documentation's request file (enable-cmk-update.json).
        let update = self.dir.join("update.json");
        std::fs::write(
            &update,
            serde_json::to_vec_pretty(&serde_json::json!({
                "ApplicationName": name,
                "CurrentApplicationVersionId": version,
                "ApplicationConfigurationUpdate": {
                    "ApplicationEncryptionConfigurationUpdate": {
                        "KeyTypeUpdate": "CUSTOMER_MANAGED_KEY",
                        "KeyIdUpdate": key,
                    }
                }
            }))?,
        )?;
        self.aws(&[
            "kinesisanalyticsv2",
            "update-application",
            "--cli-input-json",
            &format!("file://{}", update.display()),
        ])?;
        Ok(())
    }
}
