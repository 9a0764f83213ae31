//! Placeholder: `plan` and `apply` (controller issue).
use std::process::ExitCode;

#[derive(Debug, clap::Args)]
pub struct PlanArgs {}

#[derive(Debug, clap::Args)]
pub struct ApplyArgs {}

pub async fn run_plan(_a: PlanArgs) -> anyhow::Result<ExitCode> {
    anyhow::bail!("not implemented yet")
}

pub async fn run_apply(_a: ApplyArgs) -> anyhow::Result<ExitCode> {
    anyhow::bail!("not implemented yet")
}
