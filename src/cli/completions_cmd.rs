//! `completions <shell>`: a completion script generated from the command tree, so it never
//! lags behind the subcommands and flags.

use std::process::ExitCode;

use clap::{Args, CommandFactory};
use clap_complete::Shell;

#[derive(Debug, Args)]
#[command(after_help = "Load it in the current shell, e.g.:
  bash: source <(msf-cmk-controller completions bash)
  zsh:  msf-cmk-controller completions zsh > \"${fpath[1]}/_msf-cmk-controller\"
  fish: msf-cmk-controller completions fish > ~/.config/fish/completions/msf-cmk-controller.fish")]
pub struct CompletionsArgs {
    /// The shell to write the script for.
    #[arg(value_enum)]
    pub shell: Shell,
}

pub fn run(args: CompletionsArgs) -> anyhow::Result<ExitCode> {
    let mut command = super::Cli::command();
    let name = command.get_name().to_string();
    clap_complete::generate(args.shell, &mut command, name, &mut std::io::stdout());
    Ok(ExitCode::SUCCESS)
}
