//! The command line: one binary, subcommands. Each subcommand lives in its own module.
//!
//! Exit codes shared by every command: 0 success, 1 "not compliant / changes pending"
//! where a command documents it, 2 bad input (a one-line error naming the problem).

use std::process::ExitCode;

use clap::{Parser, Subcommand};

pub mod accounts_arg;
pub mod completions_cmd;
pub mod crd_cmd;
#[cfg(feature = "emulator")]
pub mod demo_cmd;
#[cfg(feature = "emulator")]
pub mod emulator_cmd;
pub mod iam_fleet_cmd;
pub mod output;
pub mod pacing_args;
pub mod plan_cmd;
pub mod policy_cmd;
pub mod run_cmd;

#[derive(Debug, Parser)]
#[command(
    name = "msf-cmk-controller",
    version = crate::build_info::LONG_VERSION,
    about = "Keeps Amazon Managed Service for Apache Flink applications encrypted with the KMS key you declare"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Print the ApplicationEncryption CustomResourceDefinition (YAML).
    Crd,
    /// Work with KMS key policy files: check, simulate, merge.
    #[command(subcommand)]
    Policy(policy_cmd::PolicyCommand),
    /// Print the operator's least-privilege IAM policy and the key policy statements.
    IamPolicy(policy_cmd::IamPolicyArgs),
    /// Run the embedded AWS emulator (MSF, KMS, STS) standalone.
    #[cfg(feature = "emulator")]
    Emulator(emulator_cmd::EmulatorArgs),
    /// Run the controller.
    Run(run_cmd::RunArgs),
    /// Show what reconciling manifests on disk would change, without a cluster.
    #[command(after_help = PLAN_EXIT_CODES)]
    Plan(plan_cmd::PlanArgs),
    /// Converge manifests on disk once, without a cluster.
    #[command(after_help = APPLY_EXIT_CODES)]
    Apply(plan_cmd::ApplyArgs),
    /// Everything end to end against the embedded emulator.
    #[cfg(feature = "emulator")]
    Demo(demo_cmd::DemoArgs),
    /// Print a shell completion script (bash, zsh, fish, elvish, powershell).
    Completions(completions_cmd::CompletionsArgs),
}

/// The exit codes of `plan` (docs/controller.md), shown by `plan --help`.
const PLAN_EXIT_CODES: &str = "Exit codes:
  0  nothing to do
  1  some resource is blocked, refused or failed (takes precedence over 3)
  2  bad input (manifests, flags, files) or AWS set-up (credentials, region, endpoint)
  3  changes pending (a policy write, an update, or an application in a transient status)";

/// The exit codes of `apply` (docs/controller.md), shown by `apply --help`.
const APPLY_EXIT_CODES: &str = "Exit codes:
  0  every resource converged (Ready=True)
  1  some resource is not converged (blocked, rolled back, refused, or out of time)
  2  bad input (manifests, flags, files) or AWS set-up (credentials, region, endpoint)";

/// An error that is the user's input: printed on one line, exit code 2.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct BadInput(pub String);

pub fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            let code = if e.use_stderr() { 2 } else { 0 };
            let _ = e.print();
            return ExitCode::from(code);
        }
    };
    // Only for the commands that print and hold no network connection: a server must not die
    // of a peer closing its socket.
    if matches!(
        cli.command,
        Command::Crd | Command::Policy(_) | Command::IamPolicy(_) | Command::Completions(_)
    ) {
        restore_default_sigpipe();
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::from(2);
        }
    };
    match runtime.block_on(dispatch(cli.command)) {
        Ok(code) => code,
        Err(e) => {
            // One line: the chain joined, so a pipeline log shows the cause.
            let msg = format!("{e:#}").replace('\n', " ");
            eprintln!("error: {msg}");
            // The AWS set-up (credentials, region, endpoint) is input too: the user fixes it.
            if e.downcast_ref::<BadInput>().is_some()
                || e.downcast_ref::<crate::aws::AwsConfigError>().is_some()
            {
                ExitCode::from(2)
            } else {
                ExitCode::from(1)
            }
        }
    }
}

async fn dispatch(command: Command) -> anyhow::Result<ExitCode> {
    match command {
        Command::Crd => crd_cmd::run(),
        Command::Policy(c) => policy_cmd::run(c),
        Command::IamPolicy(a) => policy_cmd::run_iam_policy(a),
        #[cfg(feature = "emulator")]
        Command::Emulator(a) => emulator_cmd::run(a).await,
        Command::Run(a) => run_cmd::run(a).await,
        Command::Plan(a) => plan_cmd::run_plan(a).await,
        Command::Apply(a) => plan_cmd::run_apply(a).await,
        #[cfg(feature = "emulator")]
        Command::Demo(a) => demo_cmd::run(a).await,
        Command::Completions(a) => completions_cmd::run(a),
    }
}

/// Rust ignores SIGPIPE, so `msf-cmk-controller iam-policy | head` would panic in `println!`.
/// Command-line tools are expected to end quietly when their reader goes away.
fn restore_default_sigpipe() {
    #[cfg(unix)]
    // SAFETY: called first thing in main, before any thread exists; SIG_DFL is a valid handler.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
}
