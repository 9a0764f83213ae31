//! Placeholder: `emulator` (AWS-side issue).
use std::process::ExitCode;

#[derive(Debug, clap::Args)]
pub struct EmulatorArgs {}

pub async fn run(_a: EmulatorArgs) -> anyhow::Result<ExitCode> {
    anyhow::bail!("not implemented yet")
}
