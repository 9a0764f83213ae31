//! `msf-cmk-controller emulator`: the embedded AWS emulator, standalone, for manual use and
//! scripts. Prints `endpoint: http://127.0.0.1:PORT` on stdout once it listens, then the
//! `export AWS_...=` lines that point a shell's AWS clients at it.

// Compiled only with the emulator (the container image builds without it).
#![cfg(feature = "emulator")]

use std::io::Write;
use std::net::SocketAddr;
use std::process::ExitCode;
use std::time::Duration;

use crate::domain::ApplicationStatus;
use crate::emulator::{
    DEFAULT_MSF_PER_SECOND, Emulator, EmulatorConfig, EmulatorHandle, MSF_PRINCIPALS, Quotas,
};

#[derive(Debug, clap::Args)]
pub struct EmulatorArgs {
    /// Port on 127.0.0.1 (0 picks a free one).
    #[arg(long, default_value_t = 0)]
    pub port: u16,
    /// How long an application stays UPDATING (and STARTING / STOPPING), in milliseconds.
    #[arg(long, default_value_t = 2000)]
    pub update_delay_ms: u64,
    /// Create a few demo applications, keys and aliases in us-east-1.
    #[arg(long)]
    pub seed_demo: bool,
    /// The account requests signed with plain credentials act in.
    #[arg(long, default_value = crate::emulator::DEFAULT_ACCOUNT, conflicts_with = "accounts")]
    pub account_id: String,
    /// Several accounts, the first the default one (e.g. 111111111111,222222222222):
    /// `sts:AssumeRole` into a registered role of any of them acts in that account.
    #[arg(long, value_delimiter = ',')]
    pub accounts: Vec<String>,
    /// How long a key policy write takes to be seen by GetKeyPolicy and by MSF's checks
    /// (KMS is eventually consistent), in milliseconds.
    #[arg(long, default_value_t = 0)]
    pub policy_propagation_ms: u64,
    /// Who calls: a role (answered as its session `.../assumed-role/NAME/msf-cmk-controller`),
    /// user, root or assumed-role ARN. Default: arn:aws:iam::<account>:role/msf-cmk-operator.
    #[arg(long)]
    pub caller_arn: Option<String>,
    /// PutKeyPolicy refuses principals that do not exist (see PUT /_emulator/principals).
    #[arg(long)]
    pub strict_principals: bool,
    /// PutKeyPolicy refuses statements without Action or Resource (KMS's rule since
    /// 2025-08-18); default: stored without effect, as the KMS API reference describes.
    #[arg(long)]
    pub reject_incomplete_statements: bool,
    /// MSF control-plane requests per second per operation (account and region).
    #[arg(long, default_value_t = DEFAULT_MSF_PER_SECOND)]
    pub msf_quota: u32,
    /// No request quotas (KMS's documented rates and --msf-quota apply by default).
    #[arg(long)]
    pub no_quotas: bool,
}

pub async fn run(a: EmulatorArgs) -> anyhow::Result<ExitCode> {
    if !crate::arn::is_account_id(&a.account_id) {
        return Err(crate::cli::BadInput(format!(
            "--account-id {:?} is not a 12-digit account id",
            a.account_id
        ))
        .into());
    }
    if let Some(bad) = a.accounts.iter().find(|x| !crate::arn::is_account_id(x)) {
        return Err(crate::cli::BadInput(format!(
            "--accounts: {bad:?} is not a 12-digit account id"
        ))
        .into());
    }
    let (account_id, extra_accounts) = match a.accounts.split_first() {
        Some((first, rest)) => (first.clone(), rest.to_vec()),
        None => (a.account_id, Vec::new()),
    };
    if let Some(arn) = &a.caller_arn {
        crate::emulator::validate_caller_arn(arn)
            .map_err(|e| crate::cli::BadInput(format!("--caller-arn: {e}")))?;
    }
    if a.msf_quota == 0 {
        return Err(crate::cli::BadInput("--msf-quota must be at least 1".into()).into());
    }
    let quotas = (!a.no_quotas).then_some(Quotas {
        msf_per_second: a.msf_quota,
    });
    let emu = Emulator::start(EmulatorConfig {
        bind: SocketAddr::from(([127, 0, 0, 1], a.port)),
        account_id,
        extra_accounts,
        update_delay: Duration::from_millis(a.update_delay_ms),
        policy_propagation: Duration::from_millis(a.policy_propagation_ms),
        caller_arn: a.caller_arn,
        strict_principals: a.strict_principals,
        reject_incomplete_statements: a.reject_incomplete_statements,
        quotas,
        ..EmulatorConfig::default()
    })
    .await?;
    if a.seed_demo {
        for line in seed_demo(&emu)? {
            eprintln!("seeded: {line}");
        }
    }
    // The first line is the one scripts parse; then what a shell needs to point any AWS
    // client at the emulator (`eval "$(grep '^export ' FILE)"`). Flushed so a pipe sees it.
    let mut out = std::io::stdout();
    writeln!(out, "endpoint: {}", emu.endpoint())?;
    out.flush()?;
    // Best effort: a script that reads only the first line and closes the pipe must not stop
    // the emulator (a write to a closed pipe fails with EPIPE).
    for line in export_lines(&emu.endpoint()) {
        if writeln!(out, "{line}").and_then(|()| out.flush()).is_err() {
            break;
        }
    }
    eprintln!(
        "MSF + KMS + STS emulator; admin API at {0}/_emulator/{{counts,faults,state,calls,config,principals}} (docs/emulator.md). Ctrl-C stops it.",
        emu.endpoint()
    );
    wait_for_signal().await;
    emu.shutdown().await;
    Ok(ExitCode::SUCCESS)
}

/// Region and credentials of the emulator's own: the region the demo data is in, and the
/// dummy keys `ConnectOptions::local` signs with (the emulator accepts any signature).
pub const REGION: &str = "us-east-1";
const ACCESS_KEY_ID: &str = "AKIDEMULATOR";
const SECRET_ACCESS_KEY: &str = "emulator-secret";

/// `export` lines that point the AWS SDKs, the AWS CLI and this binary at `endpoint`.
pub fn export_lines(endpoint: &str) -> Vec<String> {
    [
        ("AWS_ENDPOINT_URL", endpoint),
        ("AWS_REGION", REGION),
        ("AWS_ACCESS_KEY_ID", ACCESS_KEY_ID),
        ("AWS_SECRET_ACCESS_KEY", SECRET_ACCESS_KEY),
    ]
    .iter()
    .map(|(k, v)| format!("export {k}={v}"))
    .collect()
}

/// Ctrl-C or SIGTERM (what Kubernetes and `kill` send).
async fn wait_for_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => {}
                    _ = term.recv() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

/// A small estate to play with: applications in each status that matters, a key whose policy
/// already lets MSF in, and one whose policy does not; and the applications (and the alias)
/// `deploy/examples/` name, so `plan -f deploy/examples/` runs against it.
pub fn seed_demo(emu: &EmulatorHandle) -> anyhow::Result<Vec<String>> {
    let region = REGION;
    let mut lines = seed_examples(emu)?;
    for (name, runtime, status) in [
        ("orders-enricher", "FLINK-1_20", ApplicationStatus::Running),
        (
            "clickstream-sessionizer",
            "FLINK-1_20",
            ApplicationStatus::Ready,
        ),
        ("legacy-etl", "FLINK-1_18", ApplicationStatus::Running),
    ] {
        let arn = emu.create_application(region, name, runtime, status)?;
        lines.push(format!("application {arn} ({runtime})"));
    }
    let plain = emu.create_key(region, None)?;
    let alias = emu.create_alias(region, "alias/msf-demo", &plain)?;
    lines.push(format!("key {plain} (default policy; alias {alias})"));
    let ready_policy = serde_json::json!({
        "Version": "2012-10-17",
        "Statement": [
            {
                "Sid": "Enable IAM User Permissions",
                "Effect": "Allow",
                "Principal": { "AWS": format!("arn:aws:iam::{}:root", emu.account_id()) },
                "Action": "kms:*",
                "Resource": "*"
            },
            {
                "Sid": "AllowMSFServiceToUseKey",
                "Effect": "Allow",
                "Principal": { "Service": MSF_PRINCIPALS },
                "Action": ["kms:DescribeKey", "kms:Decrypt", "kms:GenerateDataKey", "kms:GenerateDataKeyWithoutPlaintext", "kms:CreateGrant"],
                "Resource": "*"
            }
        ]
    })
    .to_string();
    let ready = emu.create_key(region, Some(&ready_policy))?;
    let alias = emu.create_alias(region, "alias/msf-demo-ready", &ready)?;
    lines.push(format!(
        "key {ready} (MSF principals allowed; alias {alias})"
    ));
    Ok(lines)
}

/// What `deploy/examples/` refer to: an application for each `applicationName` (in the
/// resource's `spec.region`, else the emulator's region) and `alias/flink-orders`. Keys named by
/// an ARN of account 111122223333 stay absent: those examples show a key of another account.
fn seed_examples(emu: &EmulatorHandle) -> anyhow::Result<Vec<String>> {
    const EXAMPLE_APPLICATIONS: &[(&str, &str)] = &[
        ("clickstream-aggregator", REGION),
        ("orders-enrichment", REGION),
        ("risk-scoring", REGION),
        ("payments-fraud-detector", "eu-west-1"),
        ("team-a-ingest", REGION),
        ("team-b-reporting", REGION),
    ];
    let mut lines = Vec::new();
    for (name, region) in EXAMPLE_APPLICATIONS {
        let arn = emu.create_application(region, name, "FLINK-1_20", ApplicationStatus::Running)?;
        lines.push(format!("application {arn} (FLINK-1_20, deploy/examples/)"));
    }
    let key = emu.create_key(REGION, None)?;
    let alias = emu.create_alias(REGION, "alias/flink-orders", &key)?;
    lines.push(format!(
        "key {key} (default policy; alias {alias}, deploy/examples/)"
    ));
    Ok(lines)
}
