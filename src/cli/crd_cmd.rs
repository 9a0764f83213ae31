//! `crd`: print the CustomResourceDefinition.
use std::process::ExitCode;

pub fn run() -> anyhow::Result<ExitCode> {
    print!("{}", crate::api::crd_yaml());
    Ok(ExitCode::SUCCESS)
}
