//! Apply at scale: `msf-cmk-controller apply` over N resources on 20 shared keys, against the
//! embedded emulator with 20 ms of latency injected on every call, side by side with the same
//! work done the way the AWS documentation shows it (the AWS CLI, one application at a time:
//! describe-application, get-key-policy, edit, put-key-policy, update-application).
//!
//! Run: `cargo bench --bench apply_at_scale` (results in BENCHMARKS.md, "Apply at scale").
//! The AWS CLI comes from `scripts/setup-awscli.sh` (run by this program when `AWS_CLI_BIN` is
//! unset). Knobs, all optional (environment):
//! - `BENCH_N` (default `100,1000`): resource counts.
//! - `BENCH_REPEAT` (default `3,1`): controller runs per N (one value, or one per N; the
//!   last value repeats); the tables show medians.
//! - `BENCH_CLI_SAMPLE` (default 100): the CLI baseline converts at most this many
//!   applications per N; above it its figures are extrapolated linearly (and labelled so).
//! - `BENCH_LATENCY_MS` (default 20), `BENCH_UPDATE_DELAY_MS` (default 200),
//!   `BENCH_KEYS` (default 20), `BENCH_CONCURRENCY` (unset: apply's default),
//!   `BENCH_NAME_PREFIX` (default `app-`: application names are the prefix and 4 digits).
//!
//! The controller is the binary cargo builds next to this bench (release profile) and runs as
//! a child process, so that its peak RSS is its own (`wait4` rusage). The emulator runs in this
//! process; its call counts are the source of every "calls" figure on both sides.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail, ensure};
use msf_cmk_controller::domain::{ApplicationStatus, AppliedKeyType};
use msf_cmk_controller::emulator::{Emulator, EmulatorConfig, EmulatorHandle, Fault, Quotas};

const REGION: &str = "us-east-1";
const RUNTIME: &str = "FLINK-1_20";
const OPERATOR_ROLE: &str = "arn:aws:iam::123456789012:role/msf-cmk-controller";
const WRITES: [&str; 2] = ["PutKeyPolicy", "UpdateApplication"];

struct Config {
    ns: Vec<usize>,
    repeat: Vec<usize>,
    cli_sample: usize,
    latency: Duration,
    update_delay: Duration,
    keys: usize,
    name_prefix: String,
    concurrency: Option<usize>,
    controller: PathBuf,
    aws_cli: PathBuf,
}

fn env_or<T: std::str::FromStr>(name: &str, default: T) -> anyhow::Result<T> {
    match std::env::var(name) {
        Ok(v) => v
            .trim()
            .parse()
            .map_err(|_| anyhow::anyhow!("{name}={v:?} is not a valid value")),
        Err(_) => Ok(default),
    }
}

impl Config {
    fn from_env() -> anyhow::Result<Self> {
        let ns = std::env::var("BENCH_N").unwrap_or_else(|_| "100,1000".into());
        let ns = ns
            .split(',')
            .map(|s| s.trim().parse::<usize>())
            .collect::<Result<Vec<_>, _>>()
            .context("BENCH_N: comma-separated resource counts")?;
        ensure!(ns.iter().all(|&n| n > 0), "BENCH_N: counts must be > 0");
        let keys = env_or("BENCH_KEYS", 20usize)?;
        ensure!(keys > 0, "BENCH_KEYS must be > 0");
        Ok(Self {
            ns,
            repeat: std::env::var("BENCH_REPEAT")
                .unwrap_or_else(|_| "3,1".into())
                .split(',')
                .map(|s| s.trim().parse::<usize>().map(|r| r.max(1)))
                .collect::<Result<Vec<_>, _>>()
                .context("BENCH_REPEAT: one count, or one per N")?,
            cli_sample: env_or("BENCH_CLI_SAMPLE", 100usize)?.max(1),
            latency: Duration::from_millis(env_or("BENCH_LATENCY_MS", 20u64)?),
            update_delay: Duration::from_millis(env_or("BENCH_UPDATE_DELAY_MS", 200u64)?),
            keys,
            name_prefix: std::env::var("BENCH_NAME_PREFIX").unwrap_or_else(|_| "app-".into()),
            concurrency: std::env::var("BENCH_CONCURRENCY")
                .ok()
                .map(|v| v.parse())
                .transpose()
                .context("BENCH_CONCURRENCY")?,
            controller: PathBuf::from(env!("CARGO_BIN_EXE_msf-cmk-controller")),
            aws_cli: aws_cli()?,
        })
    }
}

/// `AWS_CLI_BIN`, or the pinned CLI that `scripts/setup-awscli.sh` installs (once).
fn aws_cli() -> anyhow::Result<PathBuf> {
    if let Some(p) = std::env::var_os("AWS_CLI_BIN") {
        return Ok(PathBuf::from(p));
    }
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/setup-awscli.sh");
    let out = Command::new("bash")
        .arg(&script)
        .stderr(Stdio::inherit())
        .output()
        .with_context(|| format!("running {}", script.display()))?;
    ensure!(out.status.success(), "{} failed", script.display());
    let text = String::from_utf8_lossy(&out.stdout);
    text.lines()
        .find_map(|l| l.strip_prefix("export AWS_CLI_BIN="))
        .map(|p| PathBuf::from(p.trim()))
        .context("setup-awscli.sh printed no `export AWS_CLI_BIN=` line")
}

/// One emulator with N applications on `keys` keys whose policies lack MSF's statements.
struct World {
    emu: EmulatorHandle,
    /// (application name, key ARN it should end on)
    apps: Vec<(String, String)>,
}

async fn world(cfg: &Config, n: usize) -> anyhow::Result<World> {
    let emu = Emulator::start(EmulatorConfig {
        update_delay: cfg.update_delay,
        // Realistic request quotas (KMS's documented rates, MSF 50/s per operation).
        quotas: Some(Quotas::default()),
        // MSF checks key policies with the caller's identity: answer as the operator role the
        // policies are written for.
        caller_arn: Some(OPERATOR_ROLE.to_string()),
        ..EmulatorConfig::default()
    })
    .await?;
    // `None`: the default key policy (account root, kms:*), no MSF statements.
    let keys = (0..cfg.keys)
        .map(|_| emu.create_key(REGION, None))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let mut apps = Vec::with_capacity(n);
    for i in 0..n {
        // Short names by default: 50 applications per key (N = 1,000 on 20 keys) fit in 32 KB.
        let name = format!("{}{i:04}", cfg.name_prefix);
        let status = if i % 2 == 0 {
            ApplicationStatus::Running
        } else {
            ApplicationStatus::Ready
        };
        emu.create_application(REGION, &name, RUNTIME, status)?;
        apps.push((name, keys[i % keys.len()].clone()));
    }
    emu.set_fault("*", Fault::latency(cfg.latency));
    emu.reset_counts();
    Ok(World { emu, apps })
}

/// How many of `apps` are encrypted with their intended key.
fn converted(w: &World, apps: &[(String, String)]) -> usize {
    apps.iter()
        .filter(|(name, key)| {
            w.emu.application(REGION, name).is_some_and(|a| {
                a.encryption.key_type == AppliedKeyType::CustomerManagedKey
                    && a.encryption.key_id.as_deref() == Some(key.as_str())
            })
        })
        .count()
}

fn write_manifests(dir: &Path, apps: &[(String, String)]) -> anyhow::Result<()> {
    for (name, key) in apps {
        let doc = format!(
            "apiVersion: msfcmk.dev/v1alpha1\nkind: ApplicationEncryption\nmetadata:\n  \
             name: {name}\n  namespace: bench\nspec:\n  applicationName: {name}\n  \
             region: {REGION}\n  keyType: CustomerManagedKey\n  keyId: {key}\n"
        );
        std::fs::write(dir.join(format!("{name}.yaml")), doc)?;
    }
    Ok(())
}

struct ChildRun {
    wall: Duration,
    exit: i32,
    max_rss_kib: i64,
}

/// Runs `cmd` with stdout and stderr to files and waits with `wait4`, for its own rusage.
fn run_measured(mut cmd: Command, out: &Path, err: &Path) -> anyhow::Result<ChildRun> {
    cmd.stdin(Stdio::null())
        .stdout(std::fs::File::create(out)?)
        .stderr(std::fs::File::create(err)?);
    let start = Instant::now();
    let child = cmd.spawn().context("spawning the controller")?;
    let pid = child.id() as libc::pid_t;
    let mut status: libc::c_int = 0;
    // SAFETY: rusage is plain data that wait4 fills in; the pid is our own unreaped child
    // (std's Child is dropped without waiting, so nothing else reaps it).
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    let rc = unsafe { libc::wait4(pid, &mut status, 0, &mut usage) };
    let wall = start.elapsed();
    ensure!(rc == pid, "wait4: {}", std::io::Error::last_os_error());
    drop(child);
    let exit = if libc::WIFEXITED(status) {
        libc::WEXITSTATUS(status)
    } else {
        -1
    };
    Ok(ChildRun {
        wall,
        exit,
        // Linux reports ru_maxrss in KiB.
        max_rss_kib: usage.ru_maxrss,
    })
}

fn controller_cmd(cfg: &Config, w: &World, dir: &Path) -> Command {
    let mut c = Command::new(&cfg.controller);
    c.arg("apply")
        .arg("-f")
        .arg(dir)
        .args(["--region", REGION, "--operator-role-arn", OPERATOR_ROLE])
        .args(["--aws-endpoint-url", &w.emu.endpoint(), "--output", "json"]);
    if let Some(n) = cfg.concurrency {
        c.args(["--concurrency", &n.to_string()]);
    }
    aws_env(&mut c);
    c
}

/// Dummy credentials and no shared config, for both sides.
fn aws_env(c: &mut Command) {
    c.env("AWS_ACCESS_KEY_ID", "test")
        .env("AWS_SECRET_ACCESS_KEY", "test")
        .env("AWS_DEFAULT_REGION", REGION)
        .env("AWS_REGION", REGION)
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .env("AWS_CONFIG_FILE", "/dev/null")
        .env("AWS_SHARED_CREDENTIALS_FILE", "/dev/null")
        .env_remove("AWS_PROFILE")
        .env_remove("AWS_ENDPOINT_URL")
        .env_remove("AWS_SESSION_TOKEN");
}

#[derive(Default, Clone)]
struct Measured {
    wall: Duration,
    calls: BTreeMap<String, u64>,
    max_rss_kib: i64,
    converged: usize,
    exit: i32,
    /// Resources actually processed (CLI: the sample).
    done: usize,
}

impl Measured {
    fn total_calls(&self) -> u64 {
        self.calls.values().sum()
    }
    fn op(&self, op: &str) -> u64 {
        self.calls.get(op).copied().unwrap_or(0)
    }
}

/// The first apply (everything to convert) and a second apply on the converged state.
fn controller_run(
    rt: &tokio::runtime::Runtime,
    cfg: &Config,
    n: usize,
    run: usize,
    scratch: &Path,
) -> anyhow::Result<(Measured, Measured)> {
    let w = rt.block_on(world(cfg, n))?;
    let dir = scratch.join(format!("manifests-{n}-{run}"));
    std::fs::create_dir_all(&dir)?;
    write_manifests(&dir, &w.apps)?;
    let mut out = Vec::new();
    for phase in ["apply", "resync"] {
        if phase == "resync" {
            // Let the last UPDATING applications settle, so the second run sees steady state.
            std::thread::sleep(cfg.update_delay * 2 + Duration::from_millis(100));
        }
        w.emu.reset_counts();
        let stdout = scratch.join(format!("{phase}-{n}-{run}.out.json"));
        let stderr = scratch.join(format!("{phase}-{n}-{run}.err"));
        let r = run_measured(controller_cmd(cfg, &w, &dir), &stdout, &stderr)?;
        let m = Measured {
            wall: r.wall,
            calls: w.emu.call_counts(),
            max_rss_kib: r.max_rss_kib,
            converged: converted(&w, &w.apps),
            exit: r.exit,
            done: n,
        };
        eprintln!(
            "  controller {phase} N={n} run {}: {:.2}s exit {} converted {}/{n} calls {} \
             PutKeyPolicy {} UpdateApplication {} maxrss {} MiB",
            run + 1,
            m.wall.as_secs_f64(),
            m.exit,
            m.converged,
            m.total_calls(),
            m.op("PutKeyPolicy"),
            m.op("UpdateApplication"),
            m.max_rss_kib / 1024
        );
        if m.exit != 0 {
            let tail = std::fs::read_to_string(&stderr).unwrap_or_default();
            let tail: Vec<&str> = tail.lines().rev().take(15).collect();
            eprintln!(
                "  (exit {}; last stderr lines, newest first; stdout in {})\n    {}",
                m.exit,
                stdout.display(),
                tail.join("\n    ")
            );
        }
        out.push(m);
    }
    rt.block_on(w.emu.shutdown());
    let resync = out.pop().expect("two phases");
    let apply = out.pop().expect("two phases");
    Ok((apply, resync))
}

/// The AWS documentation's way, one application at a time, each step a CLI invocation, as a
/// shell script would do it. The edit step adds this application's statements with
/// `msf-cmk-controller policy merge` (a human would use an editor, jq or python).
fn cli_run(
    rt: &tokio::runtime::Runtime,
    cfg: &Config,
    n: usize,
    scratch: &Path,
) -> anyhow::Result<Measured> {
    let w = rt.block_on(world(cfg, n))?;
    let sample: Vec<(String, String)> = w.apps.iter().take(cfg.cli_sample).cloned().collect();
    let dir = scratch.join(format!("cli-{n}"));
    std::fs::create_dir_all(&dir)?;
    let endpoint = w.emu.endpoint();
    let aws = |args: &[&str]| -> anyhow::Result<String> {
        let mut c = Command::new(&cfg.aws_cli);
        c.args([
            "--endpoint-url",
            &endpoint,
            "--region",
            REGION,
            "--output",
            "json",
        ])
        .args(args)
        .stdin(Stdio::null());
        aws_env(&mut c);
        let o = c.output().context("running the AWS CLI")?;
        if !o.status.success() {
            bail!(
                "aws {}: {}",
                args.join(" "),
                String::from_utf8_lossy(&o.stderr).trim()
            );
        }
        Ok(String::from_utf8(o.stdout)?)
    };
    w.emu.reset_counts();
    let start = Instant::now();
    for (name, key) in &sample {
        // 1. describe-application: ARN and version id.
        let d: serde_json::Value = serde_json::from_str(&aws(&[
            "kinesisanalyticsv2",
            "describe-application",
            "--application-name",
            name,
        ])?)?;
        let detail = &d["ApplicationDetail"];
        let arn = detail["ApplicationARN"]
            .as_str()
            .context("no ApplicationARN")?;
        let version = detail["ApplicationVersionId"]
            .as_i64()
            .context("no ApplicationVersionId")?;
        // 2. get-key-policy.
        let policy = dir.join("policy.json");
        let got = aws(&[
            "kms",
            "get-key-policy",
            "--key-id",
            key,
            "--policy-name",
            "default",
            "--query",
            "Policy",
            "--output",
            "text",
        ])?;
        std::fs::write(&policy, got)?;
        // 3. edit: add this application's statements.
        let merged = Command::new(&cfg.controller)
            .args(["policy", "merge", "--policy"])
            .arg(&policy)
            .args([
                "--application-arn",
                arn,
                "--operator-role-arn",
                OPERATOR_ROLE,
            ])
            .stdin(Stdio::null())
            .output()?;
        ensure!(
            merged.status.success(),
            "policy merge: {}",
            String::from_utf8_lossy(&merged.stderr)
        );
        let new_policy = dir.join("policy-new.json");
        std::fs::write(&new_policy, &merged.stdout)?;
        // 4. put-key-policy.
        aws(&[
            "kms",
            "put-key-policy",
            "--key-id",
            key,
            "--policy-name",
            "default",
            "--policy",
            &format!("file://{}", new_policy.display()),
        ])?;
        // 5. update-application with the documentation's request file (enable-cmk-update.json).
        let update = dir.join("update.json");
        std::fs::write(
            &update,
            serde_json::to_vec_pretty(&serde_json::json!({
                "ApplicationName": name,
                "CurrentApplicationVersionId": version,
                "ApplicationConfigurationUpdate": {
                    "ApplicationEncryptionConfigurationUpdate": {
                        "KeyTypeUpdate": "CUSTOMER_MANAGED_KEY",
                        "KeyIdUpdate": key,
                    }
                }
            }))?,
        )?;
        aws(&[
            "kinesisanalyticsv2",
            "update-application",
            "--cli-input-json",
            &format!("file://{}", update.display()),
        ])?;
    }
    let m = Measured {
        wall: start.elapsed(),
        calls: w.emu.call_counts(),
        max_rss_kib: 0,
        converged: converted(&w, &sample),
        exit: 0,
        done: sample.len(),
    };
    eprintln!(
        "  AWS CLI N={n}: {} applications in {:.1}s, converted {}, calls {}",
        m.done,
        m.wall.as_secs_f64(),
        m.converged,
        m.total_calls()
    );
    rt.block_on(w.emu.shutdown());
    Ok(m)
}

fn median_by<T: Clone>(xs: &[T], key: impl Fn(&T) -> f64) -> T {
    let mut v: Vec<T> = xs.to_vec();
    v.sort_by(|a, b| key(a).total_cmp(&key(b)));
    v[v.len() / 2].clone()
}

fn per(x: u64, n: usize) -> f64 {
    x as f64 / n as f64
}

fn ops_line(m: &Measured, n: usize) -> String {
    m.calls
        .iter()
        .map(|(op, c)| format!("{op} {c} ({:.2}/res)", per(*c, n)))
        .collect::<Vec<_>>()
        .join(", ")
}

struct Row {
    n: usize,
    applies: Vec<Measured>,
    resyncs: Vec<Measured>,
    cli: Measured,
}

fn report(cfg: &Config, rows: &[Row]) -> String {
    let mut s = String::new();
    let _ = writeln!(
        s,
        "\n{} keys, {} ms latency per call, update delay {} ms; controller runs per N: {}\n",
        cfg.keys,
        cfg.latency.as_millis(),
        cfg.update_delay.as_millis(),
        rows.iter()
            .map(|r| format!("{} at N={}", r.applies.len(), r.n))
            .collect::<Vec<_>>()
            .join(", ")
    );
    let _ = writeln!(
        s,
        "| N | controller wall | AWS CLI wall | ratio (CLI / controller) | AWS calls per resource (controller / CLI) | PutKeyPolicy (controller / CLI) | UpdateApplication (controller / CLI) | controller peak RSS | converged (controller / CLI) |"
    );
    let _ = writeln!(s, "|---|---|---|---|---|---|---|---|---|");
    for r in rows {
        let a = median_by(&r.applies, |m| m.wall.as_secs_f64());
        let rss = median_by(&r.applies, |m| m.max_rss_kib as f64).max_rss_kib;
        let scale = r.n as f64 / r.cli.done as f64;
        let extrapolated = r.cli.done < r.n;
        let mark = if extrapolated { " (extrapolated)" } else { "" };
        let cli_wall = r.cli.wall.as_secs_f64() * scale;
        let _ = writeln!(
            s,
            "| {} | {:.1} s | {:.0} s{mark} | {:.0}x | {:.2} / {:.2} | {} / {:.0}{mark} | {} / {:.0}{mark} | {:.0} MiB | {}/{} / {}/{}{} |",
            r.n,
            a.wall.as_secs_f64(),
            cli_wall,
            cli_wall / a.wall.as_secs_f64(),
            per(a.total_calls(), r.n),
            per(r.cli.total_calls(), r.cli.done),
            a.op("PutKeyPolicy"),
            r.cli.op("PutKeyPolicy") as f64 * scale,
            a.op("UpdateApplication"),
            r.cli.op("UpdateApplication") as f64 * scale,
            rss as f64 / 1024.0,
            a.converged,
            r.n,
            r.cli.converged,
            r.cli.done,
            if extrapolated { " sampled" } else { "" },
        );
    }
    let _ = writeln!(
        s,
        "\nAWS calls per operation (median-wall controller run; CLI as measured):\n"
    );
    for r in rows {
        let a = median_by(&r.applies, |m| m.wall.as_secs_f64());
        let _ = writeln!(s, "- N={} controller apply: {}", r.n, ops_line(&a, r.n));
        let _ = writeln!(
            s,
            "- N={} AWS CLI ({} applications{}): {}",
            r.n,
            r.cli.done,
            if r.cli.done < r.n { ", a sample" } else { "" },
            ops_line(&r.cli, r.cli.done)
        );
    }
    let _ = writeln!(
        s,
        "\nSteady state (a second `apply` on the converged state):\n"
    );
    let _ = writeln!(
        s,
        "| N | wall | AWS calls per resource | writes (PutKeyPolicy + UpdateApplication) | per operation |"
    );
    let _ = writeln!(s, "|---|---|---|---|---|");
    for r in rows {
        let m = median_by(&r.resyncs, |m| m.wall.as_secs_f64());
        let writes: u64 = WRITES.iter().map(|op| m.op(op)).sum();
        let _ = writeln!(
            s,
            "| {} | {:.1} s | {:.2} | {} | {} |",
            r.n,
            m.wall.as_secs_f64(),
            per(m.total_calls(), r.n),
            writes,
            ops_line(&m, r.n)
        );
    }
    let _ = writeln!(s, "\nEvery run (wall s, exit code):\n");
    for r in rows {
        let runs: Vec<String> = r
            .applies
            .iter()
            .zip(&r.resyncs)
            .map(|(a, b)| {
                format!(
                    "apply {:.2}s exit {} / resync {:.2}s exit {}",
                    a.wall.as_secs_f64(),
                    a.exit,
                    b.wall.as_secs_f64(),
                    b.exit
                )
            })
            .collect();
        let _ = writeln!(s, "- N={}: {}", r.n, runs.join("; "));
    }
    s
}

fn main() -> anyhow::Result<()> {
    let cfg = Config::from_env()?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let scratch = tempfile::tempdir()?;
    eprintln!(
        "apply_at_scale: controller {}, AWS CLI {}, scratch {}",
        cfg.controller.display(),
        cfg.aws_cli.display(),
        scratch.path().display()
    );
    let mut rows = Vec::new();
    for (i, &n) in cfg.ns.iter().enumerate() {
        let repeat = cfg.repeat[i.min(cfg.repeat.len() - 1)];
        let mut applies = Vec::new();
        let mut resyncs = Vec::new();
        for run in 0..repeat {
            let (a, r) = controller_run(&rt, &cfg, n, run, scratch.path())?;
            applies.push(a);
            resyncs.push(r);
        }
        let cli = cli_run(&rt, &cfg, n, scratch.path())?;
        rows.push(Row {
            n,
            applies,
            resyncs,
            cli,
        });
    }
    print!("{}", report(&cfg, &rows));
    Ok(())
}
