//! Placeholder: `run` (controller issue).
use std::process::ExitCode;

#[derive(Debug, clap::Args)]
pub struct RunArgs {}

pub async fn run(_a: RunArgs) -> anyhow::Result<ExitCode> {
    anyhow::bail!("not implemented yet")
}
