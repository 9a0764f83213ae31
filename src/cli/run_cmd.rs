//! `run`: the controller. Every flag has an environment fallback (`MSF_CMK_*`) so the
//! Deployment can be configured either way. See docs/controller.md.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;

use crate::aws::{ConnectOptions, connect_checked};
use crate::cli::pacing_args::PacingArgs;
use crate::cli::{BadInput, accounts_arg};
use crate::controller::context::{Core, Settings};
use crate::controller::fence::WriteFence;
use crate::controller::http::{self, Health};
use crate::controller::identity;
use crate::controller::kube_loop;
use crate::controller::leader::{self, LeaderConfig};
use crate::controller::metrics::Metrics;
use crate::controller::tenancy::{Tenancy, TenancyConfig};
use crate::planner::Defaults;

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, clap::Args)]
pub struct RunArgs {
    /// Namespace to watch (repeatable, or comma-separated in the env var). Default: all.
    #[arg(long = "namespace", env = "MSF_CMK_NAMESPACES", value_delimiter = ',')]
    pub namespaces: Vec<String>,

    /// Steady-state resync: how often a converged resource is compared with AWS again (drift
    /// made in AWS raises no watch event). e.g. 30s, 1m30s, 5m, 1h. The shortest period: it
    /// grows once resyncs would ask for more than --resync-share of the reconcile capacity.
    #[arg(long, env = "MSF_CMK_RESYNC_PERIOD", default_value = "5m", value_parser = parse_duration)]
    pub resync_period: Duration,

    /// The largest share (above 0, at most 1) of the reconcile capacity (--concurrency slots
    /// over the mean reconcile time) that resyncs of converged resources may ask for: with more
    /// resources the resync period is stretched to resources x mean reconcile / (share x
    /// concurrency), so that new resources and spec changes are never starved.
    #[arg(long, env = "MSF_CMK_RESYNC_SHARE", default_value_t = crate::controller::resync::DEFAULT_SHARE, value_parser = parse_share)]
    pub resync_share: f64,

    /// After a key policy write, how long to let it propagate in KMS (eventually consistent)
    /// before UpdateApplication; 0 switches in the same pass.
    #[arg(long, env = "MSF_CMK_POLICY_SETTLE", default_value = "20s", value_parser = crate::cli::plan_cmd::parse_settle)]
    pub policy_settle: Duration,

    /// The IAM role that calls UpdateApplication, named in the key policy statements, when a
    /// resource does not set spec.keyPolicy.operatorRoleArn.
    #[arg(long, env = "MSF_CMK_OPERATOR_ROLE_ARN")]
    pub operator_role_arn: Option<String>,

    /// Default AWS region (else AWS_REGION / the shared config / instance metadata).
    #[arg(long, env = "MSF_CMK_REGION")]
    pub region: Option<String>,

    /// Tenancy configuration file (YAML or JSON; mount it from a ConfigMap). Without it every
    /// namespace may claim any application and key.
    #[arg(long, env = "MSF_CMK_TENANCY_CONFIG")]
    pub tenancy_config: Option<PathBuf>,

    /// Accounts file (YAML or JSON): namespace patterns -> AWS account and the roles assumed
    /// there (docs/fleet.md). Unmapped namespaces use the pod's own identity.
    #[arg(long, env = "MSF_CMK_ACCOUNTS_CONFIG")]
    pub accounts_config: Option<PathBuf>,

    /// This installation's name in the key policies it writes: each controller sharing a key
    /// owns only the statements under its own name (docs/fleet.md).
    #[arg(long, env = "MSF_CMK_INSTANCE_NAME", default_value = "default")]
    pub instance_name: crate::policy::InstanceName,

    /// Elect a leader on a Lease so that only one replica acts.
    #[arg(long, env = "MSF_CMK_LEADER_ELECTION")]
    pub leader_election: bool,

    /// Name of the Lease used for leader election.
    #[arg(long, env = "MSF_CMK_LEASE_NAME", default_value = "msf-cmk-controller")]
    pub lease_name: String,

    /// Namespace of the Lease. Default: POD_NAMESPACE.
    #[arg(long, env = "MSF_CMK_LEASE_NAMESPACE")]
    pub lease_namespace: Option<String>,

    /// A leader that has not renewed its lease for this long is replaced.
    #[arg(long, env = "MSF_CMK_LEASE_DURATION", default_value = "15s", value_parser = parse_duration)]
    pub lease_duration: Duration,

    /// Address of /metrics (and of /livez and /readyz unless --probe-addr is given).
    #[arg(long, env = "MSF_CMK_METRICS_ADDR", default_value = "0.0.0.0:8080")]
    pub metrics_addr: SocketAddr,

    /// Serve /livez and /readyz on this address instead, and /metrics only on --metrics-addr
    /// (e.g. --metrics-addr 127.0.0.1:8080 behind kube-rbac-proxy, with the probes still open).
    #[arg(long, env = "MSF_CMK_PROBE_ADDR")]
    pub probe_addr: Option<SocketAddr>,

    /// Log format.
    #[arg(long, env = "MSF_CMK_LOG_FORMAT", value_enum, default_value = "text")]
    pub log_format: LogFormat,

    /// One endpoint for MSF and KMS (an emulator); default: the standard AWS endpoint chain.
    #[arg(long, env = "MSF_CMK_AWS_ENDPOINT_URL")]
    pub aws_endpoint_url: Option<String>,

    /// Resources reconciled at the same time.
    #[arg(long, env = "MSF_CMK_CONCURRENCY", default_value_t = 8)]
    pub concurrency: u16,

    #[command(flatten)]
    pub pacing: PacingArgs,

    /// New resources (or spec changes) arriving less than this apart are one burst: their
    /// first reconciles wait for it to end (at most 30 times this), so each key's policy is
    /// written once for the whole burst. 0 turns it off.
    #[arg(long, env = "MSF_CMK_COALESCE_WINDOW", default_value = "1s", value_parser = parse_span)]
    pub coalesce_window: Duration,

    /// While updates made by the controller run, how often the applications are listed to see
    /// which have ended: one ListApplications per account and region (a page per 50
    /// applications) for all of them, and their resources are reconciled at once; also wakes
    /// resources waiting for a restart slot. Without ListApplications permission each waits
    /// for its own requeue.
    #[arg(long, env = "MSF_CMK_POLL_INTERVAL", default_value = "1s", value_parser = parse_duration)]
    pub poll_interval: Duration,
}

/// A positive duration for a flag: humantime's forms (`30s`, `1m30s`, `1h 5m`, `250ms`,
/// `1.5s`, `2min`) or a bare number of seconds (`45`), which the flags accepted before
/// humantime and which humantime alone refuses.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let d = parse_span(s)?;
    if d.is_zero() {
        return Err(format!("duration {:?} must be positive", s.trim()));
    }
    Ok(d)
}

/// `--resync-share`: a number in (0, 1].
pub fn parse_share(s: &str) -> Result<f64, String> {
    let share: f64 = s
        .trim()
        .parse()
        .map_err(|_| format!("{:?} is not a number (e.g. 0.5)", s.trim()))?;
    if !(share > 0.0 && share <= 1.0) {
        return Err(format!(
            "{share} is not a share of the capacity: above 0, at most 1 (e.g. 0.5)"
        ));
    }
    Ok(share)
}

/// A duration that may be zero (`0`, `0s`); see [`parse_duration`] for the forms.
pub fn parse_span(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    if !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()) {
        return s
            .parse()
            .map(Duration::from_secs)
            .map_err(|_| format!("duration {s:?} is too large"));
    }
    humantime::parse_duration(s)
        .map_err(|e| format!("invalid duration {s:?}: {e} (e.g. 45, 30s, 1m30s, 1h, 250ms)"))
}

/// The SDK warns once per attempt when the instance metadata service (IMDS) does not answer,
/// which is every attempt off EC2: a screenful before the one line that matters. The start-up
/// check (`aws::connect_checked`) reports a missing region or credentials itself.
const QUIET_SDK_PROBES: &str = "aws_config::imds=off,aws_config::meta::credentials::chain=error";

/// Logs go to stderr; `RUST_LOG` overrides the default level.
pub fn init_logging(format: LogFormat, default_level: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| {
        tracing_subscriber::EnvFilter::new(format!("{default_level},{QUIET_SDK_PROBES}"))
    });
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    // A second init (tests) is harmless: keep the first subscriber.
    let _ = match format {
        LogFormat::Json => builder.json().try_init(),
        LogFormat::Text => builder.try_init(),
    };
}

/// Reads and parses the tenancy file (bad input: exit code 2).
pub fn load_tenancy(path: Option<&PathBuf>) -> anyhow::Result<Tenancy> {
    let Some(path) = path else {
        return Ok(Tenancy(None));
    };
    let text = std::fs::read_to_string(path).map_err(|e| {
        BadInput(format!(
            "cannot read tenancy config {}: {e}",
            path.display()
        ))
    })?;
    let cfg =
        TenancyConfig::parse(&text).map_err(|e| BadInput(format!("{}: {e}", path.display())))?;
    Ok(Tenancy(Some(cfg)))
}

/// Bytes of policy text whose parse `run` keeps (`apply` keeps 1 MiB):
/// 8 policies at KMS's 32 KB limit, more than the keys of the reconciles running at once.
const RUN_PARSE_CACHE_BYTES: u64 = 256 << 10;

pub async fn run(a: RunArgs) -> anyhow::Result<ExitCode> {
    init_logging(a.log_format, "info");
    crate::policy::limit_parse_cache(RUN_PARSE_CACHE_BYTES);
    let tenancy = load_tenancy(a.tenancy_config.as_ref())?;
    let accounts = accounts_arg::load(a.accounts_config.as_ref())?;
    if tenancy.admits_all() {
        tracing::warn!(
            "no tenancy configuration (--tenancy-config): every namespace may claim any application and key"
        );
    }
    if let Some(role) = &a.operator_role_arn {
        crate::arn::Arn::parse_role(role)
            .map_err(|e| BadInput(format!("--operator-role-arn: {e}")))?;
    }
    let lease_namespace = a
        .lease_namespace
        .clone()
        .or_else(|| std::env::var("POD_NAMESPACE").ok())
        .filter(|s| !s.is_empty());
    if a.leader_election && lease_namespace.is_none() {
        return Err(
            BadInput("--leader-election needs --lease-namespace or POD_NAMESPACE".into()).into(),
        );
    }

    let metrics = Arc::new(Metrics::new());
    let health = Arc::new(Health::default());
    let _servers = serve_http(&a, &metrics, &health).await?;

    let opts = ConnectOptions {
        endpoint_url: a.aws_endpoint_url.clone(),
        region: a.region.clone(),
        static_credentials: ConnectOptions::dummy_credentials_for(a.aws_endpoint_url.as_deref()),
        rate_limits: a.pacing.rate_limits()?,
        ..ConnectOptions::default()
    };
    // Credentials, region and endpoint checked once: a wrong set-up is one clear line.
    let (aws, me) = connect_checked(&opts).await?;
    let client = kube::Client::try_default()
        .await
        .context("configuring the Kubernetes client (kubeconfig or in-cluster)")?;
    let leader_cfg = a.leader_election.then(|| LeaderConfig {
        lease_name: a.lease_name.clone(),
        lease_namespace: lease_namespace.clone().unwrap_or_default(),
        identity: std::env::var("POD_NAME")
            .unwrap_or_else(|_| format!("msf-cmk-controller-{}", uuid::Uuid::new_v4())),
        duration: a.lease_duration,
        grace: (a.lease_duration / 3).max(Duration::from_secs(1)),
    });
    // With leader election, every AWS write asks the Lease's fence first.
    let fence = leader_cfg
        .as_ref()
        .map_or_else(WriteFence::unfenced, LeaderConfig::fence);
    let mut core = Core::new(
        aws.msf.clone(),
        aws.kms.clone(),
        Defaults {
            region: aws.default_region.clone(),
            operator_role_arn: a.operator_role_arn.clone(),
        },
        tenancy,
        Settings {
            resync: a.resync_period,
            // Share reads within a resync wave, never longer than half a resync.
            policy_share_window: (a.resync_period / 2).min(Duration::from_secs(30)),
            policy_settle: a.policy_settle,
            max_concurrent_restarts: a.pacing.max_concurrent_restarts,
            ..Settings::default()
        },
        metrics,
    );
    core.instance = a.instance_name.clone();
    // Outside the metering: a write the fence refuses is not an AWS call.
    core.msf = fence.msf(core.msf.clone());
    core.kms = fence.kms(core.kms.clone());
    if let Some(me) = me {
        core.caller.set(me);
    }
    warn_if_not_operator(&core);
    let _identity = AbortOnDrop(tokio::spawn(identity::keep_current(
        aws.sts.clone(),
        core.caller.clone(),
    )));
    accounts_arg::attach(&mut core, accounts, &opts, |c| {
        c.msf = fence.msf(c.msf.clone());
        c.kms = fence.kms(c.kms.clone());
    })
    .await?;
    let _account_identities: Vec<AbortOnDrop> = core
        .fleet
        .as_ref()
        .map(|f| f.keep_identities_current())
        .unwrap_or_default()
        .into_iter()
        .map(AbortOnDrop)
        .collect();
    let core = Arc::new(core);
    tracing::info!(
        namespaces = ?a.namespaces,
        region = %aws.default_region,
        resync = ?a.resync_period,
        resync_share = a.resync_share,
        leader_election = a.leader_election,
        "starting"
    );

    let namespaces = a.namespaces.clone();
    let settings = kube_loop::LoopSettings {
        concurrency: a.concurrency.max(1),
        coalesce_window: a.coalesce_window,
        poll: a.poll_interval,
        resync_share: a.resync_share,
    };
    if let Some(cfg) = leader_cfg {
        let h = health.clone();
        let run_client = client.clone();
        tokio::select! {
            r = leader::run_when_leader(
                client,
                cfg,
                fence,
                move |leading| h.set(if leading { Health::LEADER } else { Health::STANDBY }),
                move || kube_loop::run_controllers(run_client.clone(), core.clone(), namespaces.clone(), settings),
            ) => r?,
            _ = shutdown_signal() => tracing::info!("signal received: stopping"),
        }
    } else {
        health.set(Health::LEADER);
        tokio::select! {
            _ = kube_loop::run_controllers(client, core, namespaces, settings) => {}
            _ = shutdown_signal() => tracing::info!("signal received: stopping"),
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// Says at start, once, when the controller does not run as its default operator role (each
/// affected resource then reports `OperatorMismatch`).
fn warn_if_not_operator(core: &Core) {
    if let (Some(me), Some(role)) = (core.caller.get(), &core.defaults.operator_role_arn)
        && let Some(why) = me.mismatch(role)
    {
        tracing::warn!("{why}");
    }
}

struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// SIGTERM (what Kubernetes sends) or SIGINT. AWS-side work is idempotent and resumes safely,
/// so stopping mid-reconcile is harmless.
async fn shutdown_signal() {
    #[cfg(unix)]
    {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(s) => s,
                Err(_) => {
                    let _ = tokio::signal::ctrl_c().await;
                    return;
                }
            };
        tokio::select! {
            _ = term.recv() => {}
            _ = tokio::signal::ctrl_c() => {}
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

/// The HTTP listeners: one for everything, or /metrics and the probes apart (`--probe-addr`).
async fn serve_http(
    a: &RunArgs,
    metrics: &Arc<Metrics>,
    health: &Arc<Health>,
) -> anyhow::Result<Vec<tokio::task::JoinHandle<()>>> {
    let (m, h) = (metrics.clone(), health.clone());
    let Some(probe_addr) = a.probe_addr else {
        let (addr, server) = http::serve(a.metrics_addr, m, h).await?;
        tracing::info!(%addr, "serving /metrics, /livez, /readyz");
        return Ok(vec![server]);
    };
    let (addr, metrics_server) =
        http::serve_only(http::Serves::Metrics, a.metrics_addr, m.clone(), h.clone()).await?;
    tracing::info!(%addr, "serving /metrics");
    let (addr, probe_server) = http::serve_only(http::Serves::Probes, probe_addr, m, h).await?;
    tracing::info!(%addr, "serving /livez, /readyz");
    Ok(vec![metrics_server, probe_server])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("5m"), Ok(Duration::from_secs(300)));
        assert_eq!(parse_duration("30s"), Ok(Duration::from_secs(30)));
        assert_eq!(parse_duration("45"), Ok(Duration::from_secs(45)));
        assert_eq!(parse_duration("1h"), Ok(Duration::from_secs(3600)));
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration("1m30s"), Ok(Duration::from_secs(90)));
        assert!(parse_duration("0s").is_err());
        assert!(parse_duration("0").is_err());
        assert!(parse_duration("5 parsecs").is_err());
        assert!(parse_duration("m").is_err());
        assert!(parse_duration("-5s").is_err());
        assert!(parse_duration("99999999999999999999").is_err());
    }

    #[test]
    fn shares() {
        assert_eq!(parse_share("0.5"), Ok(0.5));
        assert_eq!(parse_share(" 1 "), Ok(1.0));
        assert_eq!(parse_share("0.05"), Ok(0.05));
        for bad in ["0", "-0.5", "1.5", "NaN", "inf", "half", ""] {
            assert!(parse_share(bad).is_err(), "{bad}");
        }
    }
}
