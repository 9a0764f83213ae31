//! `plan` and `apply`: the controller's reconcile for manifests on disk, without a cluster
//! (what a GitOps pipeline runs before merge). Resources that share a key share one policy
//! write. See docs/controller.md for the exit codes.

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::aws::{ConnectOptions, connect_checked};
use crate::cli::pacing_args::PacingArgs;
use crate::cli::run_cmd::{LogFormat, init_logging, load_tenancy, parse_duration};
use crate::cli::{BadInput, accounts_arg};
use crate::controller::batch::{self, ApplyOptions, Done};
use crate::controller::context::{Core, Settings};
use crate::controller::manifests::{self, Manifest};
use crate::controller::metrics::Metrics;
use crate::controller::reconcile::{Next, Outcome};
use crate::controller::status;
use crate::controller::tenancy::Tenancy;
use crate::planner::{Defaults, Step};

/// Exit codes (documented in docs/controller.md).
pub const EXIT_OK: u8 = 0;
pub const EXIT_FAILED: u8 = 1;
pub const EXIT_BAD_INPUT: u8 = 2;
pub const EXIT_CHANGES_PENDING: u8 = 3;

/// `-o text|json|yaml`, as every command that prints a result.
pub use crate::cli::output::OutputFormat as Output;

#[derive(Debug, clap::Args)]
pub struct CommonArgs {
    /// Manifest files or directories (YAML, multi-document; other kinds are skipped).
    #[arg(short = 'f', long = "filename", required = true, num_args = 1..)]
    pub paths: Vec<PathBuf>,

    /// Default AWS region for resources without spec.region.
    #[arg(long, env = "MSF_CMK_REGION")]
    pub region: Option<String>,

    /// The operator role named in the key policy when a resource does not set one.
    #[arg(long, env = "MSF_CMK_OPERATOR_ROLE_ARN")]
    pub operator_role_arn: Option<String>,

    /// One endpoint for MSF and KMS (e.g. the embedded emulator).
    #[arg(long, env = "MSF_CMK_AWS_ENDPOINT_URL")]
    pub aws_endpoint_url: Option<String>,

    /// Tenancy configuration, as for `run`.
    #[arg(long, env = "MSF_CMK_TENANCY_CONFIG")]
    pub tenancy_config: Option<PathBuf>,

    /// Accounts file, as for `run` (docs/fleet.md).
    #[arg(long, env = "MSF_CMK_ACCOUNTS_CONFIG")]
    pub accounts_config: Option<PathBuf>,

    /// Instance name, as for `run` (docs/fleet.md).
    #[arg(long, env = "MSF_CMK_INSTANCE_NAME", default_value = "default")]
    pub instance_name: crate::policy::InstanceName,

    /// Output format: text for people, json or yaml for programs.
    #[arg(long, short = 'o', value_enum, default_value_t = Output::Text)]
    pub output: Output,

    /// Reconcile passes in flight at once. In apply a resource waiting for MSF holds none;
    /// the AWS pacing and --max-concurrent-restarts are the real limits.
    #[arg(long, default_value_t = crate::controller::batch::DEFAULT_CONCURRENCY)]
    pub concurrency: usize,

    #[command(flatten)]
    pub pacing: PacingArgs,
}

#[derive(Debug, clap::Args)]
pub struct PlanArgs {
    #[command(flatten)]
    pub common: CommonArgs,
}

#[derive(Debug, clap::Args)]
pub struct ApplyArgs {
    #[command(flatten)]
    pub common: CommonArgs,

    /// Give up waiting for one resource after this long (e.g. while its application is UPDATING).
    #[arg(long, default_value = "15m", value_parser = parse_duration)]
    pub timeout: Duration,

    /// How often the applications being updated are looked at: one ListApplications per
    /// region (a page per 50 applications) for all of them, not one call per resource.
    #[arg(long, default_value = "1s", value_parser = parse_duration)]
    pub poll_interval: Duration,

    /// After a key policy write, how long to let it propagate in KMS (eventually consistent)
    /// before UpdateApplication; apply waits and continues by itself. 0 switches at once.
    #[arg(long, env = "MSF_CMK_POLICY_SETTLE", default_value = "20s", value_parser = parse_settle)]
    pub policy_settle: Duration,
}

/// A settle time: a duration as for the other flags, or 0 (no wait).
pub fn parse_settle(s: &str) -> Result<Duration, String> {
    crate::cli::run_cmd::parse_span(s)
}

/// Builds the shared core for a batch run.
pub fn batch_core(
    aws_msf: Arc<dyn crate::aws::MsfApi>,
    aws_kms: Arc<dyn crate::aws::KmsApi>,
    defaults: Defaults,
    tenancy: Tenancy,
    policy_settle: Duration,
) -> Core {
    Core::new(
        aws_msf,
        aws_kms,
        defaults,
        tenancy,
        Settings {
            // One run: a policy read is shared by every resource of the key for the whole run
            // (a write always re-reads first).
            policy_share_window: Duration::from_secs(3600),
            policy_settle,
            // A run knows every key policy write it made: a refusal is not blamed on an
            // unknown write before the start.
            writes_before_start_unknown: false,
            ..Settings::default()
        },
        Arc::new(Metrics::new()),
    )
}

async fn prepare(c: &CommonArgs, policy_settle: Duration) -> anyhow::Result<(Core, Vec<Manifest>)> {
    init_logging(LogFormat::Text, "warn");
    let loaded = manifests::load(&c.paths).map_err(BadInput)?;
    if loaded.manifests.is_empty() {
        return Err(BadInput(format!(
            "no ApplicationEncryption in {} ({} other documents skipped)",
            c.paths
                .iter()
                .map(|p| p.display().to_string())
                .collect::<Vec<_>>()
                .join(", "),
            loaded.skipped
        ))
        .into());
    }
    if let Some(role) = &c.operator_role_arn {
        crate::arn::Arn::parse_role(role)
            .map_err(|e| BadInput(format!("--operator-role-arn: {e}")))?;
    }
    let tenancy = load_tenancy(c.tenancy_config.as_ref())?;
    let accounts = accounts_arg::load(c.accounts_config.as_ref())?;
    let opts = ConnectOptions {
        endpoint_url: c.aws_endpoint_url.clone(),
        region: c.region.clone(),
        static_credentials: ConnectOptions::dummy_credentials_for(c.aws_endpoint_url.as_deref()),
        rate_limits: c.pacing.rate_limits()?,
        ..ConnectOptions::default()
    };
    // Credentials, region and endpoint checked once: a wrong set-up is one clear line,
    // before any resource is read.
    let (aws, me) = connect_checked(&opts).await?;
    let mut core = batch_core(
        aws.msf,
        aws.kms,
        Defaults {
            region: aws.default_region,
            operator_role_arn: c.operator_role_arn.clone(),
        },
        tenancy,
        policy_settle,
    );
    core.set_max_concurrent_restarts(c.pacing.max_concurrent_restarts);
    // Who we are, once: a resource whose operator role is not us reports OperatorMismatch.
    if let Some(me) = me {
        core.caller.set(me);
    }
    core.instance = c.instance_name.clone();
    accounts_arg::attach(&mut core, accounts, &opts, |_| {}).await?;
    Ok((core, loaded.manifests))
}

pub async fn run_plan(a: PlanArgs) -> anyhow::Result<ExitCode> {
    // `plan` writes nothing, so there is nothing to settle.
    let (core, manifests) = prepare(&a.common, Duration::ZERO).await?;
    let outcomes = batch::plan_all(&core, &manifests, a.common.concurrency).await;
    let mut out = std::io::stdout().lock();
    let code = print_plan(&mut out, &manifests, &outcomes, a.common.output)?;
    Ok(ExitCode::from(code))
}

pub async fn run_apply(a: ApplyArgs) -> anyhow::Result<ExitCode> {
    let (core, manifests) = prepare(&a.common, a.policy_settle).await?;
    let opts = ApplyOptions {
        concurrency: a.common.concurrency.max(1),
        timeout: a.timeout,
        poll: a.poll_interval,
    };
    let done = apply_with_progress(&core, &manifests, opts).await;
    let mut out = std::io::stdout().lock();
    let code = print_apply(&mut out, &core, &manifests, &done, a.common.output)?;
    Ok(ExitCode::from(code))
}

/// `apply_all` with progress on stderr: every resource when there are few, else about every 5%.
pub async fn apply_with_progress(
    core: &Core,
    manifests: &[Manifest],
    opts: ApplyOptions,
) -> Vec<Done> {
    let total = manifests.len();
    let finished = AtomicUsize::new(0);
    let start = Instant::now();
    let step = if total <= 50 { 1 } else { total.div_ceil(20) };
    batch::apply_all(core, manifests, opts, |d| {
        let n = finished.fetch_add(1, Ordering::SeqCst) + 1;
        if n.is_multiple_of(step) || n == total {
            let m = &manifests[d.index];
            let (ready, reason) = ready_of(&d.outcome);
            eprintln!(
                "[{n:>width$}/{total}] {:.1}s {}/{}: Ready={ready} {reason}",
                start.elapsed().as_secs_f64(),
                m.namespace,
                m.name,
                width = total.to_string().len()
            );
        }
    })
    .await
}

fn ready_of(o: &Outcome) -> (String, String) {
    status::ready(&o.status).map_or(("Unknown".into(), String::new()), |c| {
        (c.status.to_string(), c.reason.to_string())
    })
}

fn ready_message(o: &Outcome) -> String {
    status::ready(&o.status).map_or(String::new(), |c| c.message.to_string())
}

/// A write step, or a transient wait: the resource is not in its desired state yet.
fn has_changes(o: &Outcome) -> bool {
    o.first_plan.as_ref().is_some_and(|p| {
        p.steps.iter().any(|s| {
            matches!(
                s,
                Step::PutKeyPolicy { .. } | Step::UpdateApplication(_) | Step::Requeue { .. }
            )
        })
    })
}

fn is_failure(o: &Outcome) -> bool {
    matches!(o.next, Next::Blocked | Next::Refused | Next::Failed(_))
}

fn step_json(step: &Step) -> Value {
    match step {
        Step::UpdateApplication(u) => json!({
            "step": "updateApplication",
            "region": u.region,
            "applicationName": u.application_name,
            "request": u.to_request_json(),
        }),
        Step::PutKeyPolicy {
            region,
            key_arn,
            applications,
            changed_sids,
            ..
        } => json!({
            "step": "putKeyPolicy",
            "region": region,
            "keyArn": key_arn,
            "applications": applications,
            "changedSids": changed_sids,
        }),
        other => serde_json::to_value(other).unwrap_or(Value::Null),
    }
}

/// Distinct key policy writes across all plans (co-tenants make them identical per key).
fn policy_writes(outcomes: &[Outcome]) -> Vec<&Step> {
    let mut seen = std::collections::BTreeSet::new();
    outcomes
        .iter()
        .filter_map(|o| o.first_plan.as_ref())
        .flat_map(|p| p.steps.iter())
        .filter(|s| match s {
            Step::PutKeyPolicy { key_arn, .. } => seen.insert(key_arn.clone()),
            _ => false,
        })
        .collect()
}

/// Prints the plan; returns the exit code.
pub fn print_plan(
    out: &mut impl Write,
    manifests: &[Manifest],
    outcomes: &[Outcome],
    format: Output,
) -> anyhow::Result<u8> {
    let writes = policy_writes(outcomes);
    let updates: Vec<(&Manifest, &Step)> = manifests
        .iter()
        .zip(outcomes)
        .flat_map(|(m, o)| {
            o.first_plan
                .iter()
                .flat_map(|p| p.steps.iter())
                .filter(|s| matches!(s, Step::UpdateApplication(_)))
                .map(move |s| (m, s))
        })
        .collect();
    let pending = outcomes.iter().filter(|o| has_changes(o)).count();
    let failed = outcomes.iter().filter(|o| is_failure(o)).count();
    let code = if failed > 0 {
        EXIT_FAILED
    } else if pending > 0 {
        EXIT_CHANGES_PENDING
    } else {
        EXIT_OK
    };
    if format != Output::Text {
        let resources: Vec<Value> = manifests
            .iter()
            .zip(outcomes)
            .map(|(m, o)| {
                let (ready, reason) = ready_of(o);
                json!({
                    "namespace": m.namespace,
                    "name": m.name,
                    "applicationName": m.spec.application_name,
                    "ready": ready,
                    "reason": reason,
                    "message": ready_message(o),
                    "steps": o.first_plan.iter().flat_map(|p| p.steps.iter()).map(step_json).collect::<Vec<_>>(),
                    "conditions": o.status.conditions,
                    "keyPolicy": o.status.key_policy,
                })
            })
            .collect();
        let key_writes: Vec<Value> = writes
            .iter()
            .filter_map(|s| match s {
                Step::PutKeyPolicy {
                    region,
                    key_arn,
                    policy,
                    applications,
                    changed_sids,
                } => Some(json!({
                    "region": region,
                    "keyArn": key_arn,
                    "applications": applications,
                    "changedSids": changed_sids,
                    "policyBytes": policy.len(),
                    "policy": serde_json::from_str::<Value>(policy).unwrap_or_else(|_| Value::String(policy.clone())),
                })),
                _ => None,
            })
            .collect();
        let doc = json!({
            "resources": resources,
            "keyPolicyWrites": key_writes,
            "summary": {
                "resources": manifests.len(),
                "keyPolicyWrites": writes.len(),
                "applicationUpdates": updates.len(),
                "pending": pending,
                "blocked": failed,
                "exitCode": code,
            }
        });
        format.write_doc(out, &doc)?;
        return Ok(code);
    }

    writeln!(
        out,
        "Plan for {} ApplicationEncryption resource(s)",
        manifests.len()
    )?;
    if !writes.is_empty() {
        writeln!(out, "\nKey policy writes ({}):", writes.len())?;
        for s in &writes {
            if let Step::PutKeyPolicy {
                region,
                key_arn,
                policy,
                applications,
                changed_sids,
            } = s
            {
                writeln!(
                    out,
                    "  PutKeyPolicy {key_arn} ({region}), {} bytes",
                    policy.len()
                )?;
                writeln!(
                    out,
                    "    add or repair statements: {}",
                    changed_sids.join(", ")
                )?;
                writeln!(out, "    for applications:")?;
                for a in applications.iter() {
                    writeln!(out, "      {a}")?;
                }
            }
        }
    }
    if !updates.is_empty() {
        writeln!(out, "\nApplication updates ({}):", updates.len())?;
        for (m, s) in &updates {
            if let Step::UpdateApplication(u) = s {
                writeln!(
                    out,
                    "  {}/{}: UpdateApplication in {} (restarts the application if it is RUNNING)",
                    m.namespace, m.name, u.region
                )?;
                for line in serde_json::to_string_pretty(&u.to_request_json())?.lines() {
                    writeln!(out, "    {line}")?;
                }
            }
        }
    }
    writeln!(out, "\nResources:")?;
    // Resources of one key share its policy's message: said once, then referred to.
    let mut said: std::collections::HashMap<String, String> = std::collections::HashMap::new();
    for (m, o) in manifests.iter().zip(outcomes) {
        let (ready, reason) = ready_of(o);
        let what = if has_changes(o) {
            "changes pending"
        } else if is_failure(o) {
            "blocked"
        } else {
            "no change"
        };
        writeln!(
            out,
            "  {}/{} (application {}): {what}; Ready={ready} {reason}",
            m.namespace, m.name, m.spec.application_name
        )?;
        if ready != "True" {
            let message = ready_message(o);
            match said.get(&message) {
                Some(first) => writeln!(out, "      (the same as {first})")?,
                None => {
                    writeln!(out, "      {message}")?;
                    said.insert(message, format!("{}/{}", m.namespace, m.name));
                }
            }
        }
    }
    writeln!(
        out,
        "\n{} key policy write(s), {} application update(s), {} blocked. Exit code {code}.",
        writes.len(),
        updates.len(),
        failed
    )?;
    Ok(code)
}

/// Prints the result of `apply`, with the AWS calls the core counted; returns the exit code.
pub fn print_apply(
    out: &mut impl Write,
    core: &Core,
    manifests: &[Manifest],
    done: &[Done],
    format: Output,
) -> anyhow::Result<u8> {
    let calls = core.metrics.aws_call_totals();
    print_apply_with_calls(out, manifests, done, format, &calls)
}

/// [`print_apply`] with the AWS call counts from elsewhere (the demo: the emulator's, so
/// that the numbers shown come from one source).
pub fn print_apply_with_calls(
    out: &mut impl Write,
    manifests: &[Manifest],
    done: &[Done],
    format: Output,
    calls: &std::collections::BTreeMap<String, u64>,
) -> anyhow::Result<u8> {
    let converged = done
        .iter()
        .filter(|d| d.outcome.next == Next::Converged && d.outcome.ready() == "True")
        .count();
    let code = if converged == done.len() {
        EXIT_OK
    } else {
        EXIT_FAILED
    };
    let puts: u32 = done.iter().map(|d| d.outcome.key_policy_writes).sum();
    let updates: u32 = done.iter().map(|d| d.outcome.application_updates).sum();
    if format != Output::Text {
        let resources: Vec<Value> = done
            .iter()
            .map(|d| {
                let m = &manifests[d.index];
                let (ready, reason) = ready_of(&d.outcome);
                json!({
                    "namespace": m.namespace,
                    "name": m.name,
                    "applicationName": m.spec.application_name,
                    "ready": ready,
                    "reason": reason,
                    "status": d.outcome.status,
                })
            })
            .collect();
        let doc = json!({
            "resources": resources,
            "awsCalls": calls,
            "summary": {"resources": done.len(), "converged": converged, "exitCode": code},
        });
        format.write_doc(out, &doc)?;
        return Ok(code);
    }
    let width = manifests
        .iter()
        .map(|m| m.namespace.len() + m.name.len() + 1)
        .max()
        .unwrap_or(8)
        .max(8);
    writeln!(
        out,
        "{:<width$}  {:<6}  {:<28}  MESSAGE",
        "RESOURCE", "READY", "REASON"
    )?;
    for d in done {
        let m = &manifests[d.index];
        let (ready, reason) = ready_of(&d.outcome);
        writeln!(
            out,
            "{:<width$}  {:<6}  {:<28}  {}",
            format!("{}/{}", m.namespace, m.name),
            ready,
            reason,
            ready_message(&d.outcome)
        )?;
    }
    let call_list: Vec<String> = calls.iter().map(|(k, v)| format!("{k}={v}")).collect();
    writeln!(
        out,
        "\n{converged}/{} converged; {puts} key policy write(s), {updates} application update(s).\nAWS calls: {}",
        done.len(),
        if call_list.is_empty() {
            "none".to_string()
        } else {
            call_list.join(", ")
        }
    )?;
    Ok(code)
}

#[cfg(test)]
mod tests {
    #[test]
    fn exit_codes_are_distinct() {
        use super::*;
        let codes = [EXIT_OK, EXIT_FAILED, EXIT_BAD_INPUT, EXIT_CHANGES_PENDING];
        let set: std::collections::BTreeSet<_> = codes.iter().collect();
        assert_eq!(set.len(), codes.len());
    }

    #[test]
    fn settle_accepts_zero_unlike_other_durations() {
        use super::*;
        assert_eq!(parse_settle("0"), Ok(Duration::ZERO));
        assert_eq!(parse_settle("0s"), Ok(Duration::ZERO));
        assert_eq!(parse_settle("20s"), Ok(Duration::from_secs(20)));
        assert_eq!(parse_settle("500ms"), Ok(Duration::from_millis(500)));
        assert!(parse_settle("soon").is_err());
    }
}
