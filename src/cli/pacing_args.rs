//! The flags that pace the controller's AWS calls and restarts, the same for `run`, `plan` and
//! `apply` (docs/controller.md, "Pacing and the rollout budget").

use crate::aws::{RateLimits, RateSetting};
use crate::cli::BadInput;
use crate::controller::restart_budget::DEFAULT_MAX_CONCURRENT_RESTARTS;

#[derive(Clone, Debug, clap::Args)]
pub struct PacingArgs {
    /// Requests per second an AWS operation starts at, per account and region: OPERATION=N
    /// (e.g. UpdateApplication=50), or msf=N / kms=N for every operation of the service;
    /// repeatable or comma-separated. The rate halves when AWS throttles and grows back, never
    /// above the ceiling. Defaults: KMS half its documented quota, MSF 25.
    #[arg(
        long = "aws-rate-start",
        env = "MSF_CMK_AWS_RATE_START",
        value_name = "OPERATION=N",
        value_delimiter = ','
    )]
    pub aws_rate_start: Vec<RateSetting>,

    /// The most requests per second an AWS operation may reach, per account and region:
    /// OPERATION=N or msf=N / kms=N, as for --aws-rate-start. Defaults: KMS 80 % of its
    /// documented quota, MSF 100.
    #[arg(
        long = "aws-rate-ceiling",
        env = "MSF_CMK_AWS_RATE_CEILING",
        value_name = "OPERATION=N",
        value_delimiter = ','
    )]
    pub aws_rate_ceiling: Vec<RateSetting>,

    /// How many of our updates of RUNNING applications (each restarts the job) may be in
    /// progress at once per account and region; more wait (WaitingForRestartBudget). READY
    /// applications do not count. 0 = no budget.
    #[arg(long, env = "MSF_CMK_MAX_CONCURRENT_RESTARTS", default_value_t = DEFAULT_MAX_CONCURRENT_RESTARTS)]
    pub max_concurrent_restarts: u32,
}

impl PacingArgs {
    /// The client-side pacing the flags ask for (bad input: exit code 2).
    pub fn rate_limits(&self) -> Result<RateLimits, BadInput> {
        RateLimits::configured(&self.aws_rate_start, &self.aws_rate_ceiling).map_err(BadInput)
    }
}
