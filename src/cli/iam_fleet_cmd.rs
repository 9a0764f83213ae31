//! `iam-policy --accounts-config FILE --controller-role-arn ARN`: the IAM documents of a fleet
//! (docs/fleet.md), built by `policy::iam_fleet` from the accounts file.

use std::path::Path;
use std::process::ExitCode;

use crate::arn::Arn;
use crate::cli::BadInput;
use crate::controller::accounts::{AccountEntry, arn_account};
use crate::controller::fleet;
use crate::policy::iam_fleet::{AccountRoles, fleet_documents};

pub fn run(
    path: &Path,
    controller_role_arn: &str,
    application_arns: &[String],
    key_arns: &[String],
    format: crate::cli::output::OutputFormat,
) -> anyhow::Result<ExitCode> {
    let bad = |m: String| anyhow::Error::from(BadInput(m));
    Arn::parse_role(controller_role_arn).map_err(|e| bad(format!("--controller-role-arn: {e}")))?;
    for app in application_arns {
        Arn::parse_application(app).map_err(|e| bad(e.to_string()))?;
    }
    for key in key_arns {
        Arn::parse_key(key).map_err(|e| bad(e.to_string()))?;
    }
    let config = fleet::load(path).map_err(bad)?;
    // An ARN of no mapped account would silently grant nothing: say so.
    for arn in application_arns.iter().chain(key_arns) {
        let account = arn_account(arn).unwrap_or_default();
        if !config.accounts.iter().any(|e| e.account_id == account) {
            return Err(bad(format!(
                "{arn} is in account {account}, which the accounts file does not map"
            )));
        }
    }
    let accounts: Vec<AccountRoles> = config
        .accounts
        .iter()
        .map(|e| roles(e, application_arns, key_arns))
        .collect();
    let out = fleet_documents(controller_role_arn, &accounts);
    format.print_doc(&out)?;
    Ok(ExitCode::SUCCESS)
}

fn roles(e: &AccountEntry, application_arns: &[String], key_arns: &[String]) -> AccountRoles {
    let mine = |arns: &[String]| -> Vec<String> {
        arns.iter()
            .filter(|a| arn_account(a) == Some(e.account_id.as_str()))
            .cloned()
            .collect()
    };
    AccountRoles {
        account_id: e.account_id.clone(),
        // The role ARN's partition (aws, aws-cn, aws-us-gov): validated when the file loaded.
        partition: e
            .operator_role_arn
            .split(':')
            .nth(1)
            .unwrap_or("aws")
            .to_string(),
        namespaces: e.namespaces.clone(),
        operator_role_arn: e.operator_role_arn.clone(),
        key_admin_role_arn: e.key_admin_role_arn.clone(),
        external_id: e.external_id.clone(),
        regions: e.regions.clone().unwrap_or_default(),
        application_arns: mine(application_arns),
        key_arns: mine(key_arns),
    }
}
