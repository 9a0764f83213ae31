//! Apply at scale (issue 10): one run measures, side by side on the same emulator set-up,
//!
//! - `msf-cmk-controller apply` with its default flags;
//! - `apply` raced like for like with the script (`--policy-settle 0s`, and
//!   `--max-concurrent-restarts 0` when the binary has that flag): no settle, no restart budget;
//! - the same with `--concurrency N` (diagnostic: what apply's default concurrency costs);
//! - the sequential script a platform engineer would write (`benches/peers/sequential.rs`, the
//!   same AWS SDK for Rust), whose final state must equal `apply`'s (compared modulo key ids);
//! - the AWS CLI procedure of the documentation (`benches/peers/awscli.rs`) on a small sample,
//!   extrapolated linearly per resource (and labelled so);
//! - a second `apply` on the converged state: one steady-state pass (writes must be zero).
//!
//! The emulator enforces KMS's documented request quotas and an MSF quota per operation, and
//! injects 20 ms of latency on every call. N applications (half RUNNING, half READY) on 20 keys
//! whose policy is KMS's default (none of MSF's statements).
//!
//! Run: `cargo bench --bench apply_at_scale` (results in BENCHMARKS.md, "Apply at scale").
//! Knobs, all optional (environment):
//! - `BENCH_N` (default `1000`): resource counts, comma-separated.
//! - `BENCH_REPEAT` (default `3`): runs of each side per N (one value, or one per N; the last
//!   value repeats); the tables show medians. A side whose first run took longer than
//!   `BENCH_REPEAT_MAX_SECS` (default 120) runs once (time budget; the table says so).
//! - `BENCH_SIDES` (default `default,raced,wide,script,cli`): which sides to run.
//! - `BENCH_CLI_SAMPLE` (default 10): the CLI converts this many applications per N.
//! - `BENCH_LATENCY_MS` (20), `BENCH_UPDATE_DELAY_MS` (200), `BENCH_KEYS` (20),
//!   `BENCH_MSF_QUOTA` (the emulator's default, 1,000 per second per operation: MSF documents none),
//!   `BENCH_CONCURRENCY` (unset: apply's default), `BENCH_NAME_PREFIX` (`app-`).
//! - `AWS_CLI_BIN`: the CLI; unset = the pinned one `scripts/setup-awscli.sh` installs.
//!
//! The controller is the binary cargo builds next to this bench (release profile), the script
//! this bench's own binary re-run as a child (`APPLY_AT_SCALE_PEER=sequential`): both are child
//! processes, so their peak RSS is their own (`wait4` rusage). The emulator runs in this
//! process; its call counts are the source of every "calls" figure.

#[path = "peers/awscli.rs"]
mod awscli;
#[path = "peers/sequential.rs"]
mod sequential;

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, ensure};
use msf_cmk_controller::domain::{ApplicationStatus, AppliedKeyType};
use msf_cmk_controller::emulator::{
    DEFAULT_ACCOUNT, Emulator, EmulatorConfig, EmulatorHandle, Fault, Quotas,
};
use serde_json::Value;

const REGION: &str = "us-east-1";
const RUNTIME: &str = "FLINK-1_20";
const OPERATOR_ROLE: &str = "arn:aws:iam::123456789012:role/msf-cmk-controller";
const WRITES: [&str; 2] = ["PutKeyPolicy", "UpdateApplication"];
const ALL_SIDES: [Side; 5] = [
    Side::Default,
    Side::Raced,
    Side::Wide,
    Side::Script,
    Side::Cli,
];

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Side {
    /// `apply` with its default flags.
    Default,
    /// `apply` without settle and restart budget.
    Raced,
    /// As `Raced`, with `--concurrency N`: what apply's default concurrency costs (a
    /// diagnostic, not a default).
    Wide,
    /// benches/peers/sequential.rs.
    Script,
    /// benches/peers/awscli.rs, on a sample.
    Cli,
}

impl Side {
    fn parse(s: &str) -> anyhow::Result<Self> {
        Ok(match s.trim() {
            "default" => Side::Default,
            "raced" => Side::Raced,
            "wide" => Side::Wide,
            "script" => Side::Script,
            "cli" => Side::Cli,
            other => anyhow::bail!("BENCH_SIDES: unknown side {other:?}"),
        })
    }
}

struct Config {
    ns: Vec<usize>,
    repeat: Vec<usize>,
    sides: Vec<Side>,
    cli_sample: usize,
    repeat_max: Duration,
    latency: Duration,
    update_delay: Duration,
    keys: usize,
    msf_quota: u32,
    name_prefix: String,
    concurrency: Option<usize>,
    controller: PathBuf,
    /// `apply`'s flags for the raced side (what this binary supports).
    raced_args: Vec<&'static str>,
    aws_cli: Option<PathBuf>,
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

fn list<T: std::str::FromStr>(name: &str, default: &str) -> anyhow::Result<Vec<T>> {
    std::env::var(name)
        .unwrap_or_else(|_| default.into())
        .split(',')
        .map(|s| s.trim().parse::<T>())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|_| anyhow::anyhow!("{name}: a comma-separated list of counts"))
}

impl Config {
    fn from_env() -> anyhow::Result<Self> {
        let ns: Vec<usize> = list("BENCH_N", "1000")?;
        ensure!(ns.iter().all(|&n| n > 0), "BENCH_N: counts must be > 0");
        let keys = env_or("BENCH_KEYS", 20usize)?;
        ensure!(keys > 0, "BENCH_KEYS must be > 0");
        let sides = std::env::var("BENCH_SIDES")
            .map(|s| s.split(',').map(Side::parse).collect())
            .unwrap_or_else(|_| Ok(ALL_SIDES.to_vec()))?;
        let controller = PathBuf::from(env!("CARGO_BIN_EXE_msf-cmk-controller"));
        let mut raced_args = vec!["--policy-settle", "0s"];
        if apply_has_flag(&controller, "--max-concurrent-restarts") {
            raced_args.extend(["--max-concurrent-restarts", "0"]);
        }
        Ok(Self {
            ns,
            repeat: list::<usize>("BENCH_REPEAT", "3")?
                .into_iter()
                .map(|r| r.max(1))
                .collect(),
            cli_sample: env_or("BENCH_CLI_SAMPLE", 10usize)?.max(1),
            repeat_max: Duration::from_secs(env_or("BENCH_REPEAT_MAX_SECS", 120u64)?),
            latency: Duration::from_millis(env_or("BENCH_LATENCY_MS", 20u64)?),
            update_delay: Duration::from_millis(env_or("BENCH_UPDATE_DELAY_MS", 200u64)?),
            keys,
            msf_quota: env_or("BENCH_MSF_QUOTA", Quotas::default().msf_per_second)?.max(1),
            name_prefix: std::env::var("BENCH_NAME_PREFIX").unwrap_or_else(|_| "app-".into()),
            concurrency: std::env::var("BENCH_CONCURRENCY")
                .ok()
                .map(|v| v.parse())
                .transpose()
                .context("BENCH_CONCURRENCY")?,
            aws_cli: if sides.contains(&Side::Cli) {
                Some(aws_cli()?)
            } else {
                None
            },
            sides,
            controller,
            raced_args,
        })
    }

    fn runs(&self, i: usize) -> usize {
        self.repeat[i.min(self.repeat.len() - 1)]
    }
}

fn apply_has_flag(controller: &Path, flag: &str) -> bool {
    Command::new(controller)
        .args(["apply", "--help"])
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).contains(flag))
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
    keys: Vec<String>,
    /// (application name, key ARN it should end on)
    apps: Vec<(String, String)>,
}

async fn world(cfg: &Config, n: usize) -> anyhow::Result<World> {
    let emu = Emulator::start(EmulatorConfig {
        update_delay: cfg.update_delay,
        // KMS's documented request quotas; MSF documents none: a rate per operation.
        quotas: Some(Quotas {
            msf_per_second: cfg.msf_quota,
        }),
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
    Ok(World { emu, keys, apps })
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

/// The emulator's applications and keys with key ids replaced by their index, times and
/// random tokens dropped: two worlds built alike and converted alike compare equal.
fn normalized_state(w: &World) -> Value {
    let mut text = w.emu.state_json()["scopes"].to_string();
    for (i, arn) in w.keys.iter().enumerate() {
        let id = arn.rsplit('/').next().unwrap_or(arn);
        text = text.replace(id, &format!("key-{i}"));
    }
    let mut v: Value = serde_json::from_str(&text).expect("state JSON round-trips");
    strip_times(&mut v);
    // The emulator lists from hash maps: order by name and key id.
    for scope in v.as_array_mut().into_iter().flatten() {
        sort_by_field(&mut scope["applications"], "/ApplicationName");
        sort_by_field(&mut scope["keys"], "/KeyMetadata/KeyId");
    }
    v
}

fn sort_by_field(list: &mut Value, pointer: &str) {
    if let Some(a) = list.as_array_mut() {
        a.sort_by_key(|x| x.pointer(pointer).map(Value::to_string).unwrap_or_default());
    }
}

fn strip_times(v: &mut Value) {
    match v {
        Value::Object(m) => {
            // Times, and the ids each update draws at random.
            m.retain(|k, _| {
                !k.ends_with("Timestamp")
                    && !matches!(
                        k.as_str(),
                        "CreationDate" | "ConditionalToken" | "OperationId"
                    )
            });
            m.values_mut().for_each(strip_times);
        }
        Value::Array(a) => a.iter_mut().for_each(strip_times),
        _ => {}
    }
}

/// The first place where `a` and `b` differ, as a JSON path; None when equal.
fn first_difference(a: &Value, b: &Value, path: &str) -> Option<String> {
    match (a, b) {
        (Value::Object(x), Value::Object(y)) => {
            x.keys()
                .chain(y.keys())
                .find_map(|k| match (x.get(k), y.get(k)) {
                    (Some(p), Some(q)) => first_difference(p, q, &format!("{path}.{k}")),
                    _ => Some(format!("{path}.{k} (present on one side only)")),
                })
        }
        (Value::Array(x), Value::Array(y)) if x.len() == y.len() => x
            .iter()
            .zip(y)
            .enumerate()
            .find_map(|(i, (p, q))| first_difference(p, q, &format!("{path}[{i}]"))),
        _ if a == b => None,
        _ => Some(format!("{path}: {} vs {}", short(a), short(b))),
    }
}

fn short(v: &Value) -> String {
    let s = v.to_string();
    if s.len() > 120 {
        format!("{}...", &s[..120])
    } else {
        s
    }
}

fn write_manifests(dir: &Path, apps: &[(String, String)]) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir)?;
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
    let child = cmd.spawn().context("spawning a child")?;
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

/// Dummy credentials and no shared config, for every side.
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
    /// Calls answered with a throttling error.
    throttled: u64,
    max_rss_kib: i64,
    converged: usize,
    exit: i32,
    /// Resources actually processed (CLI: the sample).
    done: usize,
    /// Where the final state differs from the script's (None: equal or not compared).
    state_difference: Option<String>,
}

impl Measured {
    fn total_calls(&self) -> u64 {
        self.calls.values().sum()
    }
    fn op(&self, op: &str) -> u64 {
        self.calls.get(op).copied().unwrap_or(0)
    }
    fn writes(&self) -> u64 {
        WRITES.iter().map(|op| self.op(op)).sum()
    }
}

fn throttled(emu: &EmulatorHandle) -> u64 {
    emu.outcome_counts()
        .values()
        .flat_map(|by| by.iter())
        .filter(|(outcome, _)| outcome.contains("Throttl") || outcome.contains("LimitExceeded"))
        .map(|(_, n)| n)
        .sum()
}

/// Lets the last UPDATING applications settle, so what follows sees the end state.
fn settle(cfg: &Config) {
    std::thread::sleep(cfg.update_delay * 2 + Duration::from_millis(100));
}

fn measured(w: &World, r: &ChildRun, done: usize) -> Measured {
    Measured {
        wall: r.wall,
        calls: w.emu.call_counts(),
        throttled: throttled(&w.emu),
        max_rss_kib: r.max_rss_kib,
        converged: converted(w, &w.apps[..done]),
        exit: r.exit,
        done,
        state_difference: None,
    }
}

fn print_failure(label: &str, r: &ChildRun, stdout: &Path, stderr: &Path) {
    if r.exit == 0 {
        return;
    }
    let tail = std::fs::read_to_string(stderr).unwrap_or_default();
    let tail: Vec<&str> = tail.lines().rev().take(15).collect();
    eprintln!(
        "  ({label}: exit {}; last stderr lines, newest first; stdout in {})\n    {}",
        r.exit,
        stdout.display(),
        tail.join("\n    ")
    );
}

fn log_run(label: &str, n: usize, run: usize, m: &Measured) {
    eprintln!(
        "  {label} N={n} run {}: {:.2}s exit {} converted {}/{} calls {} (throttled {}) \
         PutKeyPolicy {} UpdateApplication {} maxrss {} MiB{}",
        run + 1,
        m.wall.as_secs_f64(),
        m.exit,
        m.converged,
        m.done,
        m.total_calls(),
        m.throttled,
        m.op("PutKeyPolicy"),
        m.op("UpdateApplication"),
        m.max_rss_kib / 1024,
        m.state_difference
            .as_ref()
            .map(|d| format!("; final state differs from the script's at {d}"))
            .unwrap_or_default()
    );
}

/// One `apply` side: the first apply (everything to convert), its final state, and (for the
/// default side) a second apply on the converged state.
struct ApplyRun {
    apply: Measured,
    resync: Option<Measured>,
    state: Value,
}

fn apply_run(
    rt: &tokio::runtime::Runtime,
    cfg: &Config,
    side: Side,
    n: usize,
    run: usize,
    scratch: &Path,
) -> anyhow::Result<ApplyRun> {
    let w = rt.block_on(world(cfg, n))?;
    let label = format!("{side:?}").to_lowercase();
    // Every world has new key ids: manifests of its own.
    let dir = scratch.join(format!("manifests-{label}-{n}-{run}"));
    write_manifests(&dir, &w.apps)?;
    let phases: &[&str] = match side {
        Side::Default => &["apply", "resync"],
        _ => &["apply"],
    };
    let wide = n.to_string();
    let extra: Vec<&str> = match side {
        Side::Raced => cfg.raced_args.clone(),
        Side::Wide => [&cfg.raced_args[..], &["--concurrency", &wide]].concat(),
        _ => Vec::new(),
    };
    let mut out = Vec::new();
    let mut state = Value::Null;
    for phase in phases {
        if *phase == "resync" {
            settle(cfg);
            state = normalized_state(&w);
        }
        w.emu.reset_counts();
        let stdout = scratch.join(format!("{label}-{phase}-{n}-{run}.out.json"));
        let stderr = scratch.join(format!("{label}-{phase}-{n}-{run}.err"));
        let mut cmd = Command::new(&cfg.controller);
        cmd.args(["apply", "-f"])
            .arg(&dir)
            .args(["--region", REGION, "--operator-role-arn", OPERATOR_ROLE])
            .args(["--aws-endpoint-url", &w.emu.endpoint(), "--output", "json"])
            .args(&extra);
        if let (Some(c), false) = (cfg.concurrency, side == Side::Wide) {
            cmd.args(["--concurrency", &c.to_string()]);
        }
        aws_env(&mut cmd);
        let r = run_measured(cmd, &stdout, &stderr)?;
        print_failure(&label, &r, &stdout, &stderr);
        out.push(measured(&w, &r, n));
    }
    if state.is_null() {
        settle(cfg);
        state = normalized_state(&w);
    }
    rt.block_on(w.emu.shutdown());
    let resync = (out.len() == 2).then(|| out.pop().expect("two phases"));
    let apply = out.pop().expect("one phase");
    Ok(ApplyRun {
        apply,
        resync,
        state,
    })
}

/// The sequential script, as a child process of this binary.
fn script_run(
    rt: &tokio::runtime::Runtime,
    cfg: &Config,
    n: usize,
    run: usize,
    scratch: &Path,
) -> anyhow::Result<(Measured, Value)> {
    let w = rt.block_on(world(cfg, n))?;
    let plan = sequential::Plan {
        endpoint: w.emu.endpoint(),
        region: REGION.into(),
        account: DEFAULT_ACCOUNT.into(),
        operator_role_arn: OPERATOR_ROLE.into(),
        applications: w.apps.clone(),
    };
    let plan_path = scratch.join(format!("script-plan-{n}-{run}.json"));
    std::fs::write(&plan_path, serde_json::to_vec(&plan)?)?;
    let mut cmd = Command::new(std::env::current_exe()?);
    cmd.env("APPLY_AT_SCALE_PEER", "sequential")
        .env("APPLY_AT_SCALE_PLAN", &plan_path);
    aws_env(&mut cmd);
    let stdout = scratch.join(format!("script-{n}-{run}.out"));
    let stderr = scratch.join(format!("script-{n}-{run}.err"));
    let r = run_measured(cmd, &stdout, &stderr)?;
    print_failure("script", &r, &stdout, &stderr);
    // Counted before the settle wait; the script made no call since it exited.
    let mut m = measured(&w, &r, n);
    settle(cfg);
    m.converged = converted(&w, &w.apps);
    let state = normalized_state(&w);
    rt.block_on(w.emu.shutdown());
    Ok((m, state))
}

/// The AWS CLI procedure on the first `cli_sample` applications.
fn cli_run(
    rt: &tokio::runtime::Runtime,
    cfg: &Config,
    n: usize,
    scratch: &Path,
) -> anyhow::Result<Measured> {
    let w = rt.block_on(world(cfg, n))?;
    let done = cfg.cli_sample.min(n);
    let dir = scratch.join(format!("cli-{n}"));
    std::fs::create_dir_all(&dir)?;
    let endpoint = w.emu.endpoint();
    let cli = awscli::Cli {
        aws_cli: cfg.aws_cli.as_deref().context("no AWS CLI")?,
        controller: &cfg.controller,
        endpoint: &endpoint,
        region: REGION,
        operator_role_arn: OPERATOR_ROLE,
        dir: &dir,
        env: aws_env,
    };
    w.emu.reset_counts();
    let start = Instant::now();
    for (name, key) in &w.apps[..done] {
        cli.convert(name, key)?;
    }
    let r = ChildRun {
        wall: start.elapsed(),
        exit: 0,
        // Many short processes: no one peak to report.
        max_rss_kib: 0,
    };
    let m = measured(&w, &r, done);
    rt.block_on(w.emu.shutdown());
    Ok(m)
}

/// Every run of one N, by side.
#[derive(Default)]
struct Row {
    n: usize,
    runs: BTreeMap<Side, Vec<Measured>>,
    resyncs: Vec<Measured>,
}

fn measure_n(
    rt: &tokio::runtime::Runtime,
    cfg: &Config,
    n: usize,
    runs: usize,
    scratch: &Path,
) -> anyhow::Result<Row> {
    let mut row = Row {
        n,
        ..Row::default()
    };
    let mut script_state: Option<Value> = None;
    let mut apply_states: Vec<(Side, usize, Value)> = Vec::new();
    // Interleaved, so that a slow minute on the shared machine hits every side alike.
    for run in 0..runs {
        for &side in &cfg.sides {
            let m = match side {
                _ if run > 0 && !repeat_side(cfg, &row, side) => continue,
                Side::Default | Side::Raced | Side::Wide => {
                    let r = apply_run(rt, cfg, side, n, run, scratch)?;
                    row.resyncs.extend(r.resync.clone());
                    if let Some(s) = &r.resync {
                        log_run("steady-state apply", n, run, s);
                    }
                    apply_states.push((side, row.runs.get(&side).map_or(0, Vec::len), r.state));
                    r.apply
                }
                Side::Script => {
                    let (m, state) = script_run(rt, cfg, n, run, scratch)?;
                    script_state.get_or_insert(state);
                    m
                }
                Side::Cli => cli_run(rt, cfg, n, scratch)?,
            };
            log_run(&format!("{side:?}"), n, run, &m);
            row.runs.entry(side).or_default().push(m);
        }
    }
    if let Some(reference) = &script_state {
        for (side, i, state) in apply_states {
            let d = first_difference(&state, reference, "$").unwrap_or_else(|| "none".to_string());
            eprintln!(
                "  {side:?} run {}: difference from the script's state: {d}",
                i + 1
            );
            if let Some(m) = row.runs.get_mut(&side).and_then(|v| v.get_mut(i)) {
                m.state_difference = Some(d);
            }
        }
    }
    Ok(row)
}

/// Runs a side again only while its first run fits the time budget (the CLI runs once).
fn repeat_side(cfg: &Config, row: &Row, side: Side) -> bool {
    side != Side::Cli
        && row
            .runs
            .get(&side)
            .and_then(|v| v.first())
            .is_some_and(|m| m.wall <= cfg.repeat_max)
}

fn median_by<T: Clone>(xs: &[T], key: impl Fn(&T) -> f64) -> T {
    let mut v: Vec<T> = xs.to_vec();
    v.sort_by(|a, b| key(a).total_cmp(&key(b)));
    v[v.len() / 2].clone()
}

fn secs(m: &Measured) -> f64 {
    m.wall.as_secs_f64()
}

/// The floor of a first apply: per application DescribeApplication + UpdateApplication, per
/// key DescribeKey, GetKeyPolicy, PutKeyPolicy and the GetKeyPolicy that verifies the write.
fn floor(n: usize, keys: usize) -> u64 {
    (2 * n + 4 * keys) as u64
}

/// The floor of a steady-state pass: DescribeApplication per application, DescribeKey and
/// GetKeyPolicy per key.
fn steady_floor(n: usize, keys: usize) -> u64 {
    (n + 2 * keys) as u64
}

fn report(cfg: &Config, rows: &[Row]) -> String {
    let mut s = String::new();
    let _ = writeln!(
        s,
        "\n{} keys, {} ms latency per call, update delay {} ms, KMS's documented quotas, MSF \
         {}/s per operation; raced flags: {}\n",
        cfg.keys,
        cfg.latency.as_millis(),
        cfg.update_delay.as_millis(),
        cfg.msf_quota,
        cfg.raced_args.join(" ")
    );
    for r in rows {
        report_row(&mut s, cfg, r);
    }
    s
}

fn side_label(cfg: &Config, side: Side, r: &Row) -> String {
    match side {
        Side::Default => "`apply` (defaults)".into(),
        Side::Raced => format!("`apply {}`", cfg.raced_args.join(" ")),
        Side::Wide => format!(
            "`apply {} --concurrency {}` (diagnostic)",
            cfg.raced_args.join(" "),
            r.n
        ),
        Side::Script => "sequential script (SDK)".into(),
        Side::Cli => {
            let done = r.runs.get(&Side::Cli).map_or(0, |v| v[0].done);
            format!(
                "AWS CLI procedure ({done} converted, x{} extrapolated)",
                r.n / done.max(1)
            )
        }
    }
}

/// The wall time and calls of a side for all N resources (the CLI: scaled from its sample).
fn scaled(side: Side, m: &Measured, n: usize) -> (f64, f64, f64) {
    let k = if side == Side::Cli {
        n as f64 / m.done.max(1) as f64
    } else {
        1.0
    };
    (
        secs(m) * k,
        m.total_calls() as f64 * k,
        m.writes() as f64 * k,
    )
}

fn report_row(s: &mut String, cfg: &Config, r: &Row) {
    let n = r.n;
    let fl = floor(n, cfg.keys);
    let medians: BTreeMap<Side, Measured> = r
        .runs
        .iter()
        .map(|(side, v)| (*side, median_by(v, secs)))
        .collect();
    let script_wall = medians.get(&Side::Script).map(secs);
    let _ = writeln!(
        s,
        "### N = {n}\n\n| | wall (median) | runs (s) | speed-up over the script | AWS calls | \
         calls / floor ({fl} = 2N + 4K) | throttled | writes | peak RSS | converged | same \
         final state as the script |\n|---|---|---|---|---|---|---|---|---|---|---|"
    );
    for (side, m) in &medians {
        let (wall, calls, writes) = scaled(*side, m, n);
        let runs: Vec<String> = r.runs[side]
            .iter()
            .map(|m| match m.exit {
                0 => format!("{:.1}", secs(m)),
                e => format!("{:.1} (exit {e})", secs(m)),
            })
            .collect();
        let _ = writeln!(
            s,
            "| {} | {wall:.1} s | {} | {} | {calls:.0} | {:.2}x | {} | {writes:.0} | {} | {}/{} | {} |",
            side_label(cfg, *side, r),
            runs.join(", "),
            script_wall.map_or("-".into(), |w| format!("{:.2}x", w / wall)),
            calls / fl as f64,
            m.throttled,
            if m.max_rss_kib > 0 {
                format!("{:.0} MiB", m.max_rss_kib as f64 / 1024.0)
            } else {
                "-".into()
            },
            m.converged,
            m.done,
            match (side, &m.state_difference) {
                (Side::Script, _) => "(reference)".to_string(),
                (_, Some(d)) if d == "none" => "yes".to_string(),
                (_, Some(d)) => format!("no: {d}"),
                (_, None) => "-".to_string(),
            },
        );
    }
    report_ops(s, cfg, r, &medians);
    report_steady(s, cfg, r);
}

fn report_ops(s: &mut String, cfg: &Config, r: &Row, medians: &BTreeMap<Side, Measured>) {
    let n = r.n;
    let ops: Vec<String> = {
        let mut v: Vec<String> = medians
            .values()
            .flat_map(|m| m.calls.keys().cloned())
            .collect();
        v.sort();
        v.dedup();
        v
    };
    let _ = writeln!(
        s,
        "\nCalls by operation (the median-wall run of each side):\n\n| | {} |\n|---|{}",
        ops.join(" | "),
        "---|".repeat(ops.len())
    );
    let floor_of = |op: &str| match op {
        "DescribeApplication" | "UpdateApplication" => n.to_string(),
        "DescribeKey" | "PutKeyPolicy" => cfg.keys.to_string(),
        "GetKeyPolicy" => (2 * cfg.keys).to_string(),
        _ => "0".to_string(),
    };
    let cells: Vec<String> = ops.iter().map(|op| floor_of(op)).collect();
    let _ = writeln!(s, "| floor | {} |", cells.join(" | "));
    for (side, m) in medians {
        let k = if *side == Side::Cli {
            n as f64 / m.done.max(1) as f64
        } else {
            1.0
        };
        let cells: Vec<String> = ops
            .iter()
            .map(|op| format!("{:.0}", m.op(op) as f64 * k))
            .collect();
        let _ = writeln!(
            s,
            "| {} | {} |",
            side_label(cfg, *side, r),
            cells.join(" | ")
        );
    }
}

fn report_steady(s: &mut String, cfg: &Config, r: &Row) {
    if r.resyncs.is_empty() {
        return;
    }
    let m = median_by(&r.resyncs, secs);
    let fl = steady_floor(r.n, cfg.keys);
    let ops: Vec<String> = m.calls.iter().map(|(op, c)| format!("{op} {c}")).collect();
    let _ = writeln!(
        s,
        "\nSteady state (a second `apply`, defaults, on the converged state), median of {}: \
         {:.1} s, {} calls for a floor of {fl} (N + 2K) = {:.2}x, writes {} (every run: {}); {}\n",
        r.resyncs.len(),
        secs(&m),
        m.total_calls(),
        m.total_calls() as f64 / fl as f64,
        m.writes(),
        r.resyncs
            .iter()
            .map(|m| m.writes().to_string())
            .collect::<Vec<_>>()
            .join(", "),
        ops.join(", ")
    );
}

fn main() -> anyhow::Result<()> {
    if std::env::var("APPLY_AT_SCALE_PEER").as_deref() == Ok("sequential") {
        return sequential::main_from_env();
    }
    let cfg = Config::from_env()?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let scratch = tempfile::tempdir()?;
    eprintln!(
        "apply_at_scale: controller {}, raced flags {:?}, AWS CLI {:?}, scratch {}",
        cfg.controller.display(),
        cfg.raced_args,
        cfg.aws_cli,
        scratch.path().display()
    );
    let mut rows = Vec::new();
    for (i, &n) in cfg.ns.iter().enumerate() {
        rows.push(measure_n(&rt, &cfg, n, cfg.runs(i), scratch.path())?);
    }
    print!("{}", report(&cfg, &rows));
    Ok(())
}
