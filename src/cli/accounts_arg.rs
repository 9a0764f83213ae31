//! `--accounts-config` (env `MSF_CMK_ACCOUNTS_CONFIG`) of `run`, `plan` and `apply`: loads the
//! accounts file and gives the process' Core one Core per account (`controller::fleet`).

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context as _;

use crate::aws::ConnectOptions;
use crate::cli::BadInput;
use crate::controller::accounts::AccountsConfig;
use crate::controller::context::Core;
use crate::controller::fleet::{self, Fleet, Shared};

/// Loads and checks the file (bad input: exit code 2), before anything else starts.
pub fn load(path: Option<&PathBuf>) -> anyhow::Result<Option<AccountsConfig>> {
    match path {
        None => Ok(None),
        Some(p) => Ok(Some(fleet::load(p).map_err(BadInput)?)),
    }
}

/// Builds the accounts' clients and hangs them on the process' Core; `wrap` decorates each
/// account's clients as the process' own are. Asks each account who the controller is
/// there, once. Without a file, nothing changes.
pub async fn attach(
    core: &mut Core,
    config: Option<AccountsConfig>,
    opts: &ConnectOptions,
    wrap: impl Fn(&mut Core),
) -> anyhow::Result<()> {
    let Some(config) = config else {
        return Ok(());
    };
    let accounts = config.accounts.len();
    let shared = Shared {
        defaults: &core.defaults,
        tenancy: &core.tenancy,
        settings: core.settings,
        metrics: core.metrics.clone(),
    };
    // Every account's Core writes key policies under this installation's name.
    let instance = core.instance.clone();
    let wrap = move |c: &mut Core| {
        c.instance = instance.clone();
        wrap(c)
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
