//! `--accounts-config` (env `MSF_CMK_ACCOUNTS_CONFIG`) of `run`, `plan` and `apply`: loads the
//! accounts file and gives the process' Core one Core per account (`controller::fleet`).

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context as _;

use crate::aws::ConnectOptions;
use crate::cli::BadInput;
use crate::controller::context::Core;
use crate::controller::fleet::{self, Fleet, Shared};

/// Loads the file (bad input: exit code 2) and builds the accounts' clients; `wrap` decorates
/// each account's clients as the process' own are. Asks each account who the controller is
/// there, once. Without a path, nothing changes.
pub async fn attach(
    core: &mut Core,
    path: Option<&PathBuf>,
    opts: &ConnectOptions,
    wrap: impl Fn(&mut Core),
) -> anyhow::Result<()> {
    let Some(path) = path else {
        return Ok(());
    };
    let config = fleet::load(path).map_err(BadInput)?;
    let accounts = config.accounts.len();
    let shared = Shared {
        defaults: &core.defaults,
        tenancy: &core.tenancy,
        settings: core.settings,
        metrics: core.metrics.clone(),
    };
    let fleet = Fleet::connect(config, opts, shared, wrap)
        .await
        .context("configuring the accounts' AWS clients")?;
    fleet.ask_identities().await;
    tracing::info!(
        accounts,
        client_sets = fleet.cores().len(),
        "accounts config: mapped namespaces act as the assumed roles of their accounts"
    );
    core.fleet = Some(Arc::new(fleet));
    Ok(())
}
