//! Placeholder: `policy simulate|check|merge` and `iam-policy` (pure-core issue).
use std::process::ExitCode;

#[derive(Debug, clap::Subcommand)]
pub enum PolicyCommand {
    /// Not implemented yet.
    Check,
}

#[derive(Debug, clap::Args)]
pub struct IamPolicyArgs {}

pub fn run(_c: PolicyCommand) -> anyhow::Result<ExitCode> {
    anyhow::bail!("not implemented yet")
}

pub fn run_iam_policy(_a: IamPolicyArgs) -> anyhow::Result<ExitCode> {
    anyhow::bail!("not implemented yet")
}
