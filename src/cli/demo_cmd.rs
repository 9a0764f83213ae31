//! `demo`: the whole flow against the embedded emulator, in-process: no cloud, no cluster.
//!
//! Creates sample applications (some RUNNING, some READY) and one shared customer managed key
//! whose policy is KMS's default (account root `kms:*`, none of MSF's statements), writes sample
//! manifests, then runs `plan` and `apply` exactly as the commands do and shows the converged
//! status, the final key policy and the AWS calls it cost. A second plan shows the steady state.
//!
//! One application's update is rolled back by the emulator (its restart "fails"): the demo
//! shows it reported as `UpdateRolledBack` and not retried, neither by the same `apply` nor by a
//! second one that starts without any status.

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use crate::aws::{ConnectOptions, connect};
use crate::cli::plan_cmd::{self, Output, batch_core};
use crate::cli::run_cmd::{LogFormat, init_logging};
use crate::controller::batch::Done;
use crate::controller::batch::{self, ApplyOptions};
use crate::controller::identity;
use crate::controller::manifests;
use crate::controller::reconcile::Next;
use crate::controller::tenancy::Tenancy;
use crate::domain::ApplicationStatus;
use crate::emulator::{Emulator, EmulatorConfig, EmulatorHandle, Fault};
use crate::planner::Defaults;

const REGION: &str = "us-east-1";
const NAMESPACE: &str = "streaming";
/// Short for a demo, long enough to show the wait between the key policy write and the update.
const DEMO_SETTLE: Duration = Duration::from_millis(400);

#[derive(Debug, clap::Args)]
pub struct DemoArgs {
    /// Where to write the sample manifests, kept after the demo (default: a temporary
    /// directory, removed at the end).
    #[arg(long)]
    pub dir: Option<PathBuf>,
}

/// (name, status, desired key: true = the shared CMK)
const APPS: [(&str, ApplicationStatus, bool); 5] = [
    ("orders", ApplicationStatus::Running, true),
    ("payments", ApplicationStatus::Running, true),
    ("fraud-detection", ApplicationStatus::Ready, true),
    ("clickstream", ApplicationStatus::Ready, false),
    ("inventory", ApplicationStatus::Running, true),
];

/// The application whose update the emulator rolls back.
const ROLLED_BACK: &str = "inventory";

fn manifest(name: &str, cmk: bool, key_ref: &str) -> String {
    let key = if cmk {
        format!("  keyType: CustomerManagedKey\n  keyId: {key_ref}\n")
    } else {
        "  keyType: AwsOwnedKey\n".to_string()
    };
    format!(
        "apiVersion: msfcmk.dev/v1alpha1\nkind: ApplicationEncryption\nmetadata:\n  name: {name}\n  namespace: {NAMESPACE}\nspec:\n  applicationName: {name}\n  region: {REGION}\n{key}"
    )
}

pub async fn run(a: DemoArgs) -> anyhow::Result<ExitCode> {
    init_logging(LogFormat::Text, "warn");
    let emu = Emulator::start(EmulatorConfig {
        // Long enough to show the wait for UPDATING, short enough for a demo.
        update_delay: Duration::from_millis(300),
        ..EmulatorConfig::default()
    })
    .await?;
    let key_arn = create_world(&emu)?;
    let tmp;
    let dir = match &a.dir {
        Some(d) => {
            std::fs::create_dir_all(d)?;
            d.clone()
        }
        None => {
            tmp = tempdir()?;
            tmp.0.clone()
        }
    };
    let file = write_manifests(&dir, &key_arn)?;
    let mut out = std::io::stdout().lock();
    print_world(&mut out, &emu, &key_arn, &file, a.dir.is_some())?;

    let aws = connect(&ConnectOptions::local(emu.endpoint())).await?;
    let core = batch_core(
        aws.msf,
        aws.kms,
        Defaults {
            region: REGION.to_string(),
            operator_role_arn: Some(format!(
                "arn:aws:iam::{}:role/msf-cmk-operator",
                emu.account_id()
            )),
        },
        Tenancy(None),
        DEMO_SETTLE,
    );
    // As `plan` and `apply` do: the emulator answers as the demo's operator role.
    identity::ask_once(aws.sts.as_ref(), &core.caller).await;
    if let Some(me) = core.caller.get() {
        writeln!(
            out,
            "== AWS caller (sts:GetCallerIdentity): {}, the operator role of the key policies\n",
            me.arn
        )?;
    }
    let loaded = manifests::load(std::slice::from_ref(&file)).map_err(anyhow::Error::msg)?;
    let manifests = &loaded.manifests;

    writeln!(out, "== msf-cmk-controller plan -f {}\n", file.display())?;
    let outcomes = batch::plan_all(&core, manifests, 8).await;
    plan_cmd::print_plan(&mut out, manifests, &outcomes, Output::Text)?;

    writeln!(out, "\n== msf-cmk-controller apply -f {}\n", file.display())?;
    out.flush()?;
    emu.reset_counts();
    let done = plan_cmd::apply_with_progress(&core, manifests, APPLY).await;
    // One source for the calls apply made: the emulator's count of the requests it answered
    // (the core's own counters also hold the plan's calls above).
    let apply_calls = emu.call_counts();
    // Not converged: the rolled back resource, reported below; the demo's exit code says
    // whether everything else converged and the rollback was reported without a retry.
    plan_cmd::print_apply_with_calls(&mut out, manifests, &done, Output::Text, &apply_calls)?;
    let updating = converged_while_updating(&emu, manifests, &done);
    for name in &updating {
        writeln!(
            out,
            "   {NAMESPACE}/{name} is Converged while MSF still says UPDATING"
        )?;
    }
    print_results(&mut out, &emu, &key_arn, &done)?;
    let rolled_back_ok = report_rollback(&mut out, &emu, manifests, &done)?;
    let retried = apply_again(&mut out, &core, &emu, manifests).await?;
    resync(&mut out, &core, &emu, manifests).await?;
    out.flush()?;
    emu.shutdown().await;
    Ok(ExitCode::from(exit_code(
        manifests,
        &done,
        rolled_back_ok && !retried && updating.is_empty(),
    )))
}

/// How the demo's `apply` waits.
const APPLY: ApplyOptions = ApplyOptions {
    concurrency: 8,
    timeout: Duration::from_secs(60),
    poll: Duration::from_millis(250),
};

/// The applications, the shared key (with an alias) and the rollback fault; returns the key.
fn create_world(emu: &EmulatorHandle) -> anyhow::Result<String> {
    for (name, status, _) in &APPS {
        emu.create_application(REGION, name, "FLINK-1_20", status.clone())?;
    }
    let key_arn = emu.create_key(REGION, None)?;
    emu.create_alias(REGION, "alias/flink-state", &key_arn)?;
    // MSF accepts the update, the restart fails, MSF rolls the application back.
    emu.set_fault(
        "UpdateApplication",
        Fault::rollback().for_application(ROLLED_BACK),
    );
    Ok(key_arn)
}

/// One manifest per application; returns the file.
fn write_manifests(dir: &std::path::Path, key_arn: &str) -> anyhow::Result<PathBuf> {
    let docs: Vec<String> = APPS
        .iter()
        .enumerate()
        .map(|(i, (name, _, cmk))| {
            // One by alias, the others by key ARN: keys are compared by resolved ARN.
            let key_ref = if i == 0 { "alias/flink-state" } else { key_arn };
            manifest(name, *cmk, key_ref)
        })
        .collect();
    let file = dir.join("applicationencryptions.yaml");
    std::fs::write(&file, docs.join("---\n"))?;
    Ok(file)
}

fn print_world(
    out: &mut impl Write,
    emu: &EmulatorHandle,
    key_arn: &str,
    file: &std::path::Path,
    kept: bool,
) -> anyhow::Result<()> {
    writeln!(
        out,
        "== Embedded AWS emulator at {} (account {}, {REGION})",
        emu.endpoint(),
        emu.account_id()
    )?;
    for (name, status, _) in &APPS {
        writeln!(
            out,
            "   application {name}: {} with the AWS owned key",
            status.as_wire()
        )?;
    }
    writeln!(
        out,
        "   shared key {key_arn} (alias/flink-state): KMS default policy, no MSF statements"
    )?;
    writeln!(
        out,
        "   the emulator rolls back any update of {ROLLED_BACK} (its restart fails)"
    )?;
    if kept {
        writeln!(out, "== Manifests written to {} (kept)\n", file.display())?;
    } else {
        writeln!(
            out,
            "== Manifests written to {} (removed at the end; --dir DIR keeps them)\n",
            file.display()
        )?;
    }
    Ok(())
}

/// Resources apply reports `Converged` whose application MSF still shows UPDATING: a switch
/// is converged only once MSF has finished it.
fn converged_while_updating(
    emu: &EmulatorHandle,
    manifests: &[manifests::Manifest],
    done: &[Done],
) -> Vec<String> {
    done.iter()
        .filter(|d| d.outcome.next == Next::Converged)
        .map(|d| manifests[d.index].spec.application_name.clone())
        .filter(|app| {
            emu.application(REGION, app)
                .is_some_and(|a| a.status == ApplicationStatus::Updating)
        })
        .collect()
}

/// The status of the first resource and the final key policy.
fn print_results(
    out: &mut impl Write,
    emu: &EmulatorHandle,
    key_arn: &str,
    done: &[Done],
) -> anyhow::Result<()> {
    writeln!(
        out,
        "\n== Status of {NAMESPACE}/orders (as `kubectl get appenc orders -o yaml` would show it)\n"
    )?;
    if let Some(d) = done.first() {
        write!(out, "{}", yaml_serde::to_string(&d.outcome.status)?)?;
    }
    writeln!(out, "\n== Final key policy of {key_arn}\n")?;
    let policy = emu.key_policy(key_arn).unwrap_or_default();
    let pretty = serde_json::from_str::<serde_json::Value>(&policy)
        .and_then(|v| serde_json::to_string_pretty(&v))
        .unwrap_or(policy);
    writeln!(out, "{pretty}")?;
    Ok(())
}

/// A pipeline running `apply` again: no status, the decision comes from MSF's history.
/// Returns whether the rolled back application was updated again (it must not be).
async fn apply_again(
    out: &mut impl Write,
    core: &crate::controller::context::Core,
    emu: &EmulatorHandle,
    manifests: &[manifests::Manifest],
) -> anyhow::Result<bool> {
    let before = updates_of(emu, ROLLED_BACK);
    let again = batch::apply_all(core, manifests, APPLY, |_| {}).await;
    let updates = updates_of(emu, ROLLED_BACK);
    writeln!(
        out,
        "\n== apply again (a new run, no status): {ROLLED_BACK} is {}; UpdateApplication calls for {ROLLED_BACK} in all: {updates}",
        again
            .iter()
            .find(|d| manifests[d.index].name == ROLLED_BACK)
            .map_or("-".to_string(), ready_reason)
    )?;
    Ok(updates != before)
}

/// Steady state: what a resync costs once everything has converged.
async fn resync(
    out: &mut impl Write,
    core: &crate::controller::context::Core,
    emu: &EmulatorHandle,
    manifests: &[manifests::Manifest],
) -> anyhow::Result<()> {
    emu.reset_counts();
    let plans = batch::plan_all(core, manifests, 8).await;
    let pending = plans
        .iter()
        .filter(|o| o.first_plan.as_ref().is_some_and(has_write))
        .count();
    writeln!(
        out,
        "\n== Resync (plan again): {pending} resource(s) with changes; AWS calls: {}",
        emu.call_counts()
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join(", ")
    )?;
    writeln!(
        out,
        "   (reads only: a converged resource costs no write, nor does the rolled back one)"
    )?;
    Ok(())
}

/// Prints how the rolled back update was reported; true when it was reported as the issue
/// asks (Ready=False `UpdateRolledBack`, a Warning event, one UpdateApplication).
fn report_rollback(
    out: &mut impl Write,
    emu: &EmulatorHandle,
    manifests: &[manifests::Manifest],
    done: &[Done],
) -> anyhow::Result<bool> {
    let Some(d) = done.iter().find(|d| manifests[d.index].name == ROLLED_BACK) else {
        return Ok(false);
    };
    writeln!(
        out,
        "\n== {NAMESPACE}/{ROLLED_BACK}: MSF rolled its update back\n"
    )?;
    let ready = crate::controller::status::ready(&d.outcome.status);
    if let Some(c) = ready {
        writeln!(out, "   Ready={} {}: {}", c.status, c.reason, c.message)?;
    }
    if let Some(last) = &d.outcome.status.last_update {
        writeln!(out, "   status.lastUpdate:")?;
        for line in yaml_serde::to_string(last)?.lines() {
            writeln!(out, "     {line}")?;
        }
    }
    let warned = d
        .outcome
        .events
        .iter()
        .any(|n| n.warning && n.reason == "UpdateRolledBack");
    let updates = updates_of(emu, ROLLED_BACK);
    writeln!(
        out,
        "   Warning event UpdateRolledBack: {}; UpdateApplication calls for {ROLLED_BACK}: {updates} (no retry)",
        if warned { "yes" } else { "no" }
    )?;
    Ok(warned
        && updates == 1
        && d.outcome.next == Next::Blocked
        && ready.is_some_and(|c| c.reason == "UpdateRolledBack"))
}

/// UpdateApplication calls naming `application`, from the emulator's call log.
fn updates_of(emu: &EmulatorHandle, application: &str) -> usize {
    emu.calls(0)
        .iter()
        .filter(|c| c.operation == "UpdateApplication" && c.target.as_deref() == Some(application))
        .count()
}

fn ready_reason(d: &Done) -> String {
    crate::controller::status::ready(&d.outcome.status).map_or("Unknown".into(), |c| {
        format!("Ready={} {}", c.status, c.reason)
    })
}

fn has_write(plan: &crate::planner::Plan) -> bool {
    plan.steps.iter().any(|s| {
        matches!(
            s,
            crate::planner::Step::PutKeyPolicy { .. } | crate::planner::Step::UpdateApplication(_)
        )
    })
}

/// 0 when every other resource converged and the rollback was reported without a retry.
fn exit_code(manifests: &[manifests::Manifest], done: &[Done], rollback_reported: bool) -> u8 {
    let others_converged = done
        .iter()
        .filter(|d| manifests[d.index].name != ROLLED_BACK)
        .all(|d| d.outcome.next == Next::Converged && d.outcome.ready() == "True");
    if others_converged && rollback_reported {
        plan_cmd::EXIT_OK
    } else {
        plan_cmd::EXIT_FAILED
    }
}

/// A temporary directory removed on drop (tempfile is a dev-dependency only).
struct TempDir(PathBuf);

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn tempdir() -> anyhow::Result<TempDir> {
    let p = std::env::temp_dir().join(format!("msf-cmk-demo-{}", uuid::Uuid::new_v4()));
    std::fs::create_dir_all(&p)?;
    Ok(TempDir(p))
}
