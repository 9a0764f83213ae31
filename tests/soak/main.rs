//! The chaos soak (issue 13): on a real kube-apiserver (a private one: it is restarted) and
//! the emulator, resources on shared keys while, for the whole run: throttling and 5xx on
//! every operation, latency spikes, policy propagation delay, applications whose update rolls
//! back, a person editing a few key policies through the KMS API, the leader SIGKILLed every
//! 20-40 s and restarted (two replicas, leader election), the API server restarted, and
//! resources created, edited, switched AOK<->CMK and deleted (both deletion policies).
//!
//! Then the chaos stops (faults cleared, rollbacks kept), everything must settle, and the
//! invariants are checked from the emulator's call log (`GET /_emulator/calls`) and final
//! state (checks.rs), never from the controller's report.
//!
//! Size from the environment: `SOAK_RESOURCES` (default 100), `SOAK_SECONDS` of chaos (default
//! 75: with set-up and settling about 2.5 minutes, the CI budget),
//! `SOAK_APISERVER_RESTARTS` (default 1; `make soak` runs 1,000 resources, 30 minutes, 2),
//! `SOAK_ACCOUNTS` (default 3: the resources spread over that many emulator accounts, one
//! namespace each; the first acts as the pod's own identity, the others through the accounts
//! file, AssumeRole), `SOAK_RESYNC_SECONDS` (default the larger of 20 and resources / 5: a
//! resync of every resource every 20 s at 1,000 would ask more reconciles than the throttled
//! pacing allows), `SOAK_RUST_LOG`.
//! Needs `eval "$(tests/e2e/setup.sh)"` (docs/e2e.md). Figures go to BENCHMARKS.md ("Chaos soak").

#[path = "../support/mod.rs"]
mod support;

mod checks;
mod person;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use msf_cmk_controller::domain::{ApplicationStatus, AppliedKeyType};
use msf_cmk_controller::emulator::{CallRecord, Fault};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use support::cluster::CONTROLLER_NAMESPACE;
use support::controller::http_get;
use support::scenario::{REGION, Replica, Scenario, appenc, condition};

use checks::LeaseSample;
use person::Person;

/// The accounts of the run: the emulator's first (the pod's own identity) and two more.
const ACCOUNTS: [&str; 3] = [support::scenario::ACCOUNT, "222222222222", "333333333333"];

fn operator_role(account: &str) -> String {
    format!("arn:aws:iam::{account}:role/msf-cmk-operator")
}

struct Config {
    resources: usize,
    accounts: usize,
    resync_seconds: u64,
    seconds: u64,
    apiserver_restarts: u32,
    throttle: f64,
    errors: f64,
}

fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn config() -> Config {
    Config {
        resources: env_or("SOAK_RESOURCES", 100),
        accounts: env_or("SOAK_ACCOUNTS", 3usize).clamp(1, ACCOUNTS.len()),
        resync_seconds: env_or(
            "SOAK_RESYNC_SECONDS",
            (env_or("SOAK_RESOURCES", 100u64) / 5).max(20),
        ),
        seconds: env_or("SOAK_SECONDS", 75),
        apiserver_restarts: env_or("SOAK_APISERVER_RESTARTS", 1),
        throttle: env_or("SOAK_THROTTLE", 0.2),
        errors: env_or("SOAK_ERRORS", 0.05),
    }
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or_default()
}

/// One resource as the driver last applied it.
#[derive(Clone, Debug)]
struct Res {
    app: String,
    /// Index into [`ACCOUNTS`] (and the namespaces).
    account: usize,
    /// Index into the keys; `None`: the AWS owned key.
    key: Option<usize>,
    retain: bool,
    /// UpdateApplication rolls back for this application (a scoped fault).
    rollback: bool,
    /// Changes of the desired encryption the driver made (creation on a key, a switch, another
    /// key, the revert of a deletion with RevertToAwsOwnedKey): at most one UpdateApplication
    /// each. Stricter than one per spec version (an edit of the deletion policy needs none).
    updates_allowed: u64,
    deleted: bool,
}

struct World {
    /// One namespace per account.
    ns: Vec<String>,
    keys: Vec<String>,
    /// The account (index) of each key.
    key_account: Vec<usize>,
    res: BTreeMap<String, Res>,
    /// Applications ever wanted on each key (statements stay on revert and on delete).
    ever_on_key: BTreeMap<String, BTreeSet<String>>,
    next_app: usize,
}

impl World {
    fn manifest(&self, name: &str) -> String {
        let r = &self.res[name];
        let key = r.key.map(|k| self.keys[k].as_str());
        let policy = if r.retain {
            "Retain"
        } else {
            "RevertToAwsOwnedKey"
        };
        appenc(name, &r.app, key, &format!("deletionPolicy: {policy}"))
    }

    /// The keys (indices) of an account.
    fn keys_of(&self, account: usize) -> Vec<usize> {
        (0..self.keys.len())
            .filter(|k| self.key_account[*k] == account)
            .collect()
    }

    fn random_key(&self, account: usize, rng: &mut StdRng) -> usize {
        let keys = self.keys_of(account);
        keys[rng.random_range(0..keys.len())]
    }

    fn remember(&mut self, name: &str) {
        let r = &self.res[name];
        if let Some(k) = r.key {
            self.ever_on_key
                .entry(self.keys[k].clone())
                .or_default()
                .insert(r.app.clone());
        }
    }
}

/// `kubectl apply` of several manifests, retried while the API server is away.
fn apply(s: &Scenario, ns: &str, yaml: &str) {
    let start = Instant::now();
    loop {
        match s.cluster().apply_yaml(yaml, ns) {
            Ok(_) => return,
            Err(e) if start.elapsed() > Duration::from_secs(90) => panic!("apply: {e}"),
            Err(_) => std::thread::sleep(Duration::from_millis(500)),
        }
    }
}

fn delete(s: &Scenario, ns: &str, name: &str) {
    for _ in 0..60 {
        let out = s.cluster().kubectl(&[
            "delete",
            "appenc",
            name,
            "-n",
            ns,
            "--wait=false",
            "--ignore-not-found",
        ]);
        if out.success {
            return;
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    panic!("could not delete {ns}/{name}");
}

/// The replicas: slot a and b, restarted under a new identity (and access key) each time.
struct Replicas {
    /// (slot, generation, scenario index)
    live: Vec<(char, u32, usize)>,
    identity_of_key: BTreeMap<String, String>,
    starts: u32,
    /// Settings every replica gets besides its identity.
    env: Vec<(String, String)>,
}

fn start_replica(s: &mut Scenario, reps: &mut Replicas, slot: char, generation: u32) {
    let id = format!("{slot}{generation}");
    let key = format!("AKIDSOAK{}", id.to_ascii_uppercase());
    let mut replica = Replica::new(&id)
        .leader_election()
        .env("AWS_ACCESS_KEY_ID", &key)
        .env("MSF_CMK_LEASE_DURATION", "6s");
    for (k, v) in &reps.env {
        replica = replica.env(k, v);
    }
    let index = s.start_replica(replica.env(
        "RUST_LOG",
        &std::env::var("SOAK_RUST_LOG").unwrap_or_else(|_| "info".into()),
    ));
    reps.identity_of_key.insert(key, format!("soak-{id}"));
    reps.live.push((slot, generation, index));
    reps.starts += 1;
}

/// RSS (kB) and open fds of a process, from /proc.
fn footprint(pid: u32) -> Option<(u64, usize)> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let rss = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))?
        .split_whitespace()
        .next()?
        .parse()
        .ok()?;
    let fds = std::fs::read_dir(format!("/proc/{pid}/fd")).ok()?.count();
    Some((rss, fds))
}

/// Samples the Lease holder every 300 ms on its own thread (kubectl as the admin).
fn lease_sampler(
    kubeconfig: std::path::PathBuf,
    stop: Arc<AtomicBool>,
) -> (Arc<Mutex<Vec<LeaseSample>>>, std::thread::JoinHandle<()>) {
    let samples: Arc<Mutex<Vec<LeaseSample>>> = Arc::default();
    let out = samples.clone();
    let kubectl = std::env::var("KUBECTL_BIN").expect("KUBECTL_BIN (tests/e2e/setup.sh)");
    let t = std::thread::spawn(move || {
        while !stop.load(Ordering::SeqCst) {
            let o = std::process::Command::new(&kubectl)
                .arg(format!("--kubeconfig={}", kubeconfig.display()))
                .args(["--request-timeout=2s", "get", "lease", "msf-cmk-controller"])
                .args([
                    "-n",
                    CONTROLLER_NAMESPACE,
                    "-o",
                    "jsonpath={.spec.holderIdentity}|{.spec.acquireTime}|{.spec.leaseTransitions}",
                ])
                .env_remove("KUBECONFIG")
                .output();
            if let Ok(o) = o
                && o.status.success()
            {
                let text = String::from_utf8_lossy(&o.stdout).trim().to_string();
                let mut parts = text.split('|');
                let mut next = || parts.next().unwrap_or_default().trim().to_string();
                let (holder, acquired, transitions) = (next(), next(), next());
                out.lock().unwrap().push(LeaseSample {
                    at_ms: now_ms(),
                    holder: Some(holder).filter(|h| !h.is_empty()),
                    acquired_ms: chrono::DateTime::parse_from_rfc3339(&acquired)
                        .ok()
                        .map(|t| t.timestamp_millis() as u64),
                    transitions: transitions.parse().ok(),
                });
            }
            std::thread::sleep(Duration::from_millis(300));
        }
    });
    (samples, t)
}

#[derive(Default)]
struct CallLog {
    calls: Vec<CallRecord>,
    last_seq: u64,
}

impl CallLog {
    fn collect(&mut self, s: &Scenario) {
        let new = calls_since(s, self.last_seq);
        if let Some(first) = new.first() {
            assert_eq!(
                first.seq,
                self.last_seq + 1,
                "the emulator's call log dropped records before the soak collected them"
            );
        }
        if let Some(last) = new.last() {
            self.last_seq = last.seq;
        }
        self.calls.extend(new);
    }
}

fn calls_since(s: &Scenario, since: u64) -> Vec<CallRecord> {
    let (status, body) = http_get(s.emu.addr(), &format!("/_emulator/calls?since={since}"))
        .expect("GET /_emulator/calls");
    assert_eq!(status, 200, "{body}");
    let v: serde_json::Value = serde_json::from_str(&body).expect("call log");
    serde_json::from_value(v["calls"].clone()).expect("call records")
}

/// The faults of the run: throttling and 5xx on every operation, latency spikes on all but
/// PutKeyPolicy (latency is added before a call is handled: on PutKeyPolicy it would widen
/// the one window no KMS client can close, between the last read and the write).
fn chaos_faults(s: &Scenario, cfg: &Config, spike_ms: u64) {
    let base = Fault {
        throttle_rate: cfg.throttle,
        error_rate: cfg.errors,
        ..Fault::default()
    };
    s.emu.set_fault(
        "*",
        Fault {
            latency: Duration::from_millis(spike_ms),
            ..base.clone()
        },
    );
    s.emu.set_fault("PutKeyPolicy", base);
}

#[derive(Default, Debug)]
struct Tally {
    kills: u32,
    apiserver_restarts: u32,
    creates: u32,
    edits: u32,
    switches: u32,
    deletes: u32,
    spikes: u32,
    max_rss_kb: u64,
    max_fds: usize,
}

#[test]
fn chaos_soak() {
    let cfg = config();
    let mut s = Scenario::private_with_accounts("soak", &ACCOUNTS[1..cfg.accounts]);
    let ns: Vec<String> = (0..cfg.accounts).map(|_| s.namespace("soak")).collect();
    let mut rng = StdRng::seed_from_u64(env_or("SOAK_SEED", 13));
    // One key per 20 resources, at least 5 per account (the person edits 5 of the first's).
    let per_account = cfg.resources.div_ceil(20 * cfg.accounts).max(5);
    let mut w = World {
        ns: ns.clone(),
        keys: Vec::new(),
        key_account: Vec::new(),
        res: BTreeMap::new(),
        ever_on_key: BTreeMap::new(),
        next_app: 0,
    };
    for (a, account) in ACCOUNTS.iter().enumerate().take(cfg.accounts) {
        for _ in 0..per_account {
            w.keys
                .push(s.emu.create_key_in(account, REGION, None).unwrap());
            w.key_account.push(a);
        }
    }
    // The accounts file: every namespace but the first acts in its own account.
    let roles: Vec<String> = ACCOUNTS[1..cfg.accounts]
        .iter()
        .map(|a| operator_role(a))
        .collect();
    s.emu.add_principals(roles.clone());
    let mut accounts_yaml = String::from("accounts:\n");
    for (a, role) in roles.iter().enumerate() {
        accounts_yaml += &format!(
            "  - namespaces: [\"{}\"]\n    accountId: \"{}\"\n    operatorRoleArn: {role}\n",
            ns[a + 1],
            ACCOUNTS[a + 1]
        );
    }
    let accounts_file = s.write_file("accounts.yaml", &accounts_yaml);
    // The resources: 1 in 10 on the AWS owned key, 1 in 50 rolled back, both deletion policies.
    let mut yaml: Vec<Vec<String>> = vec![Vec::new(); cfg.accounts];
    for i in 0..cfg.resources {
        let name = new_resource(&mut s, &mut w, &mut rng, i % 50 == 7, i % cfg.accounts);
        if i % 10 == 3 && !w.res[&name].rollback {
            let r = w.res.get_mut(&name).unwrap();
            r.key = None;
            r.updates_allowed = 0;
        }
        w.remember(&name);
        yaml[w.res[&name].account].push(w.manifest(&name));
    }
    let setup_started = Instant::now();
    for (a, docs) in yaml.iter().enumerate() {
        for chunk in docs.chunks(50) {
            apply(&s, &ns[a], &chunk.join("---\n"));
        }
    }

    let mut reps = Replicas {
        live: vec![],
        identity_of_key: BTreeMap::new(),
        starts: 0,
        env: vec![
            (
                "MSF_CMK_RESYNC_PERIOD".into(),
                format!("{}s", cfg.resync_seconds),
            ),
            (
                "MSF_CMK_ACCOUNTS_CONFIG".into(),
                accounts_file.display().to_string(),
            ),
        ],
    };
    start_replica(&mut s, &mut reps, 'a', 0);
    start_replica(&mut s, &mut reps, 'b', 0);
    let stop = Arc::new(AtomicBool::new(false));
    let (samples, sampler) =
        lease_sampler(s.cluster().admin_kubeconfig().to_path_buf(), stop.clone());

    // Chaos on.
    s.emu.set_policy_propagation(Duration::from_millis(300));
    chaos_faults(&s, &cfg, 0);
    // The person works in the first account (plain credentials act there).
    let person_keys: Vec<String> = w
        .keys_of(0)
        .into_iter()
        .take(5)
        .map(|k| w.keys[k].clone())
        .collect();
    let mut person = Person::start(
        s.emu.endpoint(),
        person_keys.clone(),
        Duration::from_secs(3),
        7,
    );

    let mut t = Tally::default();
    let run = Duration::from_secs(cfg.seconds);
    let started = Instant::now();
    let mut next_kill = started + Duration::from_secs(rng.random_range(20..=40));
    let mut pending_restart: Option<(Instant, char, u32)> = None;
    let restart_at: Vec<Duration> = (1..=cfg.apiserver_restarts)
        .map(|i| run.mul_f64(f64::from(i) / f64::from(cfg.apiserver_restarts + 1)))
        .collect();
    let mut next_spike = started + Duration::from_secs(8);
    let mut spike_until: Option<Instant> = None;
    let mut next_churn = started + Duration::from_secs(2);
    // The call log is collected as the run goes: the emulator keeps only the last 100,000.
    let mut log = CallLog::default();
    let mut next_collect = started + Duration::from_secs(10);
    let mut next_progress = started + Duration::from_secs(60);
    while started.elapsed() < run {
        let now = Instant::now();
        if now >= next_kill && pending_restart.is_none() {
            if let Some((slot, generation)) = kill_leader(&mut s, &mut reps) {
                t.kills += 1;
                pending_restart = Some((now + Duration::from_secs(2), slot, generation + 1));
            }
            next_kill = now + Duration::from_secs(rng.random_range(20..=40));
        }
        if let Some((at, slot, generation)) = pending_restart
            && now >= at
        {
            start_replica(&mut s, &mut reps, slot, generation);
            pending_restart = None;
        }
        if (t.apiserver_restarts as usize) < restart_at.len()
            && started.elapsed() >= restart_at[t.apiserver_restarts as usize]
        {
            s.cluster().restart_apiserver();
            t.apiserver_restarts += 1;
        }
        if now >= next_spike {
            chaos_faults(&s, &cfg, rng.random_range(200..=2000));
            spike_until = Some(now + Duration::from_secs(3));
            next_spike = now + Duration::from_secs(rng.random_range(10..=20));
            t.spikes += 1;
        }
        if spike_until.is_some_and(|u| now >= u) {
            chaos_faults(&s, &cfg, 0);
            spike_until = None;
        }
        if now >= next_churn {
            churn(&mut s, &mut w, &mut rng, &mut t);
            next_churn = now + Duration::from_millis(rng.random_range(500..=1500));
        }
        if now >= next_collect {
            log.collect(&s);
            next_collect = now + Duration::from_secs(10);
        }
        if now >= next_progress {
            println!(
                "soak: {} s of chaos, {t:?}; {}",
                started.elapsed().as_secs(),
                progress(&s, &w, &reps)
            );
            next_progress = now + Duration::from_secs(60);
        }
        sample_footprint(&mut s, &reps, &mut t);
        std::thread::sleep(Duration::from_millis(200));
    }

    // Chaos off: the person stops, faults cleared (the rollbacks stay), both replicas up.
    person.stop();
    s.emu.clear_faults();
    for r in w.res.values().filter(|r| r.rollback) {
        s.emu.set_fault(
            "UpdateApplication",
            Fault::rollback().for_application(&r.app),
        );
    }
    s.emu.set_policy_propagation(Duration::ZERO);
    if let Some((_, slot, generation)) = pending_restart.take() {
        start_replica(&mut s, &mut reps, slot, generation);
    }
    let chaos_seconds = started.elapsed().as_secs();
    let settle_started = Instant::now();
    settle(&s, &w);
    let settle_seconds = settle_started.elapsed().as_secs();
    stop.store(true, Ordering::SeqCst);
    let _ = sampler.join();
    sample_footprint(&mut s, &reps, &mut t);

    // ---- invariants, from the call log and the final state ----
    log.collect(&s);
    let calls = log.calls;
    // The credentials each replica got from AssumeRole act as that replica.
    let mut identity_of_key = reps.identity_of_key.clone();
    identity_of_key.extend(sessions_of_replicas(&s, &reps.identity_of_key));
    let replica_keys: BTreeSet<String> = identity_of_key.keys().cloned().collect();
    let mut problems: Vec<String> = Vec::new();
    // Person statements: exactly as last written.
    let written = person.written.lock().unwrap().clone();
    for key in &person_keys {
        let policy = s.emu.key_policy(key).unwrap();
        let expected = written.get(key).cloned().unwrap_or_default();
        for p in checks::person_statement_problems(&policy, &expected) {
            problems.push(format!("person statement on {key}: {p}"));
        }
    }
    // Owned statements: only applications ever wanted on the key (keep-on-revert/delete).
    for key in &w.keys {
        let policy = s.emu.key_policy(key).unwrap();
        let allowed = w.ever_on_key.get(key).cloned().unwrap_or_default();
        for app in checks::owned_applications(&policy) {
            if !allowed.contains(&app) {
                problems.push(format!("{key} grants {app}, never wanted on it"));
            }
        }
    }
    // At most one UpdateApplication per change of the desired encryption; one in all for the
    // rolled-back ones (never retried).
    let updates = checks::updates_per_application(&calls, &replica_keys);
    for r in w.res.values() {
        let n = updates.get(&r.app).copied().unwrap_or(0);
        let bound = if r.rollback { 1 } else { r.updates_allowed };
        if n > bound {
            problems.push(format!(
                "{}: {n} UpdateApplication for {bound} changes of the desired encryption",
                r.app
            ));
        }
    }
    let samples = samples.lock().unwrap().clone();
    let tenures = checks::tenures(&samples);
    let widest_gap_ms = samples
        .windows(2)
        .map(|p| p[1].at_ms - p[0].at_ms)
        .max()
        .unwrap_or_default();
    let (fenced, unjudged) = checks::writes_outside_tenure(&calls, &tenures, &identity_of_key);
    problems.extend(fenced);
    problems.extend(checks::refused_policy_writes(&calls, &replica_keys));
    if t.max_rss_kb > 512 * 1024 {
        problems.push(format!("a replica's RSS reached {} kB", t.max_rss_kb));
    }
    if t.max_fds > 512 {
        problems.push(format!("a replica had {} fds open", t.max_fds));
    }
    s.assert_no_panic();

    let writes = |op: &str| {
        calls
            .iter()
            .filter(|c| {
                c.operation == op && c.outcome == "ok" && replica_keys.contains(&c.access_key_id)
            })
            .count()
    };
    let in_account = |a: &str| {
        calls
            .iter()
            .filter(|c| c.account == a && replica_keys.contains(&c.access_key_id))
            .count()
    };
    let per_account: Vec<String> = ACCOUNTS[..cfg.accounts]
        .iter()
        .map(|a| format!("{a}: {}", in_account(a)))
        .collect();
    let report = format!(
        "chaos soak: {} resources in {} accounts on {} keys, {chaos_seconds} s of chaos (setup {} s), settled in {settle_seconds} s; \
         {} calls logged ({} by the replicas: {per_account:?}), PutKeyPolicy ok {}, UpdateApplication ok {}; person edits {}; \
         {:?}; replica starts {}; Lease tenures seen {} ({} reads, widest gap {widest_gap_ms} ms); max RSS {} kB, max fds {}; writes the Lease timeline could not judge: {} of {}",
        cfg.resources,
        cfg.accounts,
        w.keys.len(),
        setup_started.elapsed().as_secs() - chaos_seconds - settle_seconds,
        calls.len(),
        calls
            .iter()
            .filter(|c| replica_keys.contains(&c.access_key_id))
            .count(),
        writes("PutKeyPolicy"),
        writes("UpdateApplication"),
        person.edits.lock().unwrap(),
        t,
        reps.starts,
        tenures.len(),
        samples.len(),
        t.max_rss_kb,
        t.max_fds,
        unjudged.len(),
        writes("PutKeyPolicy") + writes("UpdateApplication"),
    );
    println!("{report}");
    assert!(
        problems.is_empty(),
        "{report}\n{} problems:\n{}",
        problems.len(),
        problems.join("\n")
    );
}

/// The access key ids AssumeRole issued to a replica (`/_emulator/state`'s sessions), mapped to
/// that replica's identity.
fn sessions_of_replicas(
    s: &Scenario,
    identity_of_key: &BTreeMap<String, String>,
) -> BTreeMap<String, String> {
    let state = s.emu.state_json();
    state["sessions"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|x| {
            let who = identity_of_key.get(x["source_access_key_id"].as_str()?)?;
            Some((x["access_key_id"].as_str()?.to_string(), who.clone()))
        })
        .collect()
}

/// A new resource in `account` for a new application (created on the AWS owned key, RUNNING).
fn new_resource(
    s: &mut Scenario,
    w: &mut World,
    rng: &mut StdRng,
    rollback: bool,
    account: usize,
) -> String {
    let i = w.next_app;
    w.next_app += 1;
    let app = format!("soak-app-{i}");
    s.emu
        .create_application_in(
            ACCOUNTS[account],
            REGION,
            &app,
            "FLINK-1_20",
            ApplicationStatus::Running,
        )
        .expect("create application");
    if rollback {
        s.emu
            .set_fault("UpdateApplication", Fault::rollback().for_application(&app));
    }
    let name = format!("r{i}");
    let key = w.random_key(account, rng);
    w.res.insert(
        name.clone(),
        Res {
            app,
            account,
            key: Some(key),
            retain: rng.random_bool(0.5),
            rollback,
            updates_allowed: 1,
            deleted: false,
        },
    );
    name
}

/// One change while the chaos runs: create, edit (deletion policy, another key), switch
/// AOK<->CMK, or delete. Rolled-back resources are left alone (one version each).
fn churn(s: &mut Scenario, w: &mut World, rng: &mut StdRng, t: &mut Tally) {
    let live: Vec<String> = w
        .res
        .iter()
        .filter(|(_, r)| !r.deleted && !r.rollback)
        .map(|(n, _)| n.clone())
        .collect();
    let roll = rng.random_range(0..10);
    if roll == 0 || live.is_empty() {
        let account = rng.random_range(0..w.ns.len());
        let name = new_resource(s, w, rng, false, account);
        w.remember(&name);
        apply(s, &w.ns[account], &w.manifest(&name));
        t.creates += 1;
        return;
    }
    let name = live[rng.random_range(0..live.len())].clone();
    let account = w.res[&name].account;
    let other_key = w.random_key(account, rng);
    let ns = w.ns[account].clone();
    let r = w.res.get_mut(&name).unwrap();
    let before = r.key;
    match roll {
        1 => {
            r.deleted = true;
            if !r.retain && r.key.is_some() {
                r.updates_allowed += 1;
            }
            delete(s, &ns, &name);
            t.deletes += 1;
            return;
        }
        2..=4 => {
            r.key = match r.key {
                Some(_) => None,
                None => Some(other_key),
            };
            t.switches += 1;
        }
        5..=6 => {
            r.key = Some(other_key);
            t.edits += 1;
        }
        _ => {
            r.retain = !r.retain;
            t.edits += 1;
        }
    }
    if r.key != before {
        r.updates_allowed += 1;
    }
    w.remember(&name);
    apply(s, &ns, &w.manifest(&name));
}

/// SIGKILLs the replica holding the Lease; returns its slot and generation.
fn kill_leader(s: &mut Scenario, reps: &mut Replicas) -> Option<(char, u32)> {
    let holder = s.lease_holder()?;
    let pos = reps
        .live
        .iter()
        .position(|(slot, g, _)| holder == format!("soak-{slot}{g}"))?;
    let (slot, generation, index) = reps.live.remove(pos);
    s.replica(index).process.kill();
    Some((slot, generation))
}

fn sample_footprint(s: &mut Scenario, reps: &Replicas, t: &mut Tally) {
    for (_, _, index) in &reps.live {
        if let Some(pid) = s.replica(*index).process.pid()
            && let Some((rss, fds)) = footprint(pid)
        {
            t.max_rss_kb = t.max_rss_kb.max(rss);
            t.max_fds = t.max_fds.max(fds);
        }
    }
}

/// Every resource of the run's namespaces, by name (one list per namespace).
fn list_all(s: &Scenario, w: &World) -> Result<BTreeMap<String, serde_json::Value>, String> {
    let mut out = BTreeMap::new();
    for ns in &w.ns {
        let o = s
            .cluster()
            .kubectl(&["get", "appenc", "-n", ns, "-o", "json"]);
        if !o.success {
            return Err(format!("kubectl get appenc: {}", o.stderr));
        }
        let list: serde_json::Value = serde_json::from_str(&o.stdout).map_err(|e| e.to_string())?;
        for item in list["items"].as_array().into_iter().flatten() {
            if let Some(name) = item["metadata"]["name"].as_str() {
                out.insert(name.to_string(), item.clone());
            }
        }
    }
    Ok(out)
}

/// What the run looks like now (printed every minute): live resources by Ready reason, and
/// the restart slots each live replica counts.
fn progress(s: &Scenario, w: &World, reps: &Replicas) -> String {
    let mut reasons: BTreeMap<String, usize> = BTreeMap::new();
    for o in list_all(s, w).unwrap_or_default().values() {
        let reason = match condition(o, "Ready") {
            Some(c) => c["reason"].as_str().unwrap_or("?").to_string(),
            None => "(no status)".into(),
        };
        *reasons.entry(reason).or_default() += 1;
    }
    let mut slots = Vec::new();
    for (slot, generation, index) in &reps.live {
        if let Some((200, body)) = s.http_get(*index, "/metrics") {
            let gauge: Vec<&str> = body
                .lines()
                .filter(|l| l.starts_with("msf_cmk_restart_slots_in_use"))
                .filter_map(|l| l.rsplit(' ').next())
                .collect();
            slots.push(format!("{slot}{generation}: {gauge:?}"));
        }
    }
    format!("resources by Ready reason {reasons:?}; restart slots in use {slots:?}")
}

/// Waits until every resource is where its spec says: live ones Ready=True at their
/// generation with MSF on the desired key (rolled-back ones `UpdateRolledBack`, still on the
/// AWS owned key), deleted ones gone.
fn settle(s: &Scenario, w: &World) {
    let bound = Duration::from_secs(120 + w.res.len() as u64 / 2);
    let mut next_print = Instant::now() + Duration::from_secs(60);
    s.wait("every resource to settle after the chaos", bound, |s| {
        // One list per namespace and probe: a get per resource takes minutes at 1,000.
        let by_name = list_all(s, w)?;
        let mut waiting = Vec::new();
        let mut reasons: BTreeMap<String, usize> = BTreeMap::new();
        for (name, r) in &w.res {
            let o = by_name.get(name.as_str());
            if let Err(e) = settled(s, w, o, r) {
                waiting.push(format!("{name}: {e}"));
                let reason = match o.and_then(|o| condition(o, "Ready")) {
                    Some(c) => c["reason"].as_str().unwrap_or("?").to_string(),
                    None if o.is_some() => "(no status)".into(),
                    None => "(gone)".into(),
                };
                *reasons.entry(reason).or_default() += 1;
            }
        }
        if waiting.is_empty() {
            return Ok(());
        }
        let e = format!(
            "{} not settled, by Ready reason {reasons:?}, e.g. {:?}",
            waiting.len(),
            &waiting[..waiting.len().min(5)]
        );
        if Instant::now() >= next_print {
            println!("soak: settling: {e}");
            next_print = Instant::now() + Duration::from_secs(60);
        }
        Err(e)
    });
}

fn settled(s: &Scenario, w: &World, o: Option<&serde_json::Value>, r: &Res) -> Result<(), String> {
    if r.deleted {
        return match o {
            None => Ok(()),
            Some(_) => Err("not deleted yet".into()),
        };
    }
    let o = o.ok_or("gone")?;
    let current = o["metadata"]["generation"] == o["status"]["observedGeneration"];
    let ready = condition(o, "Ready").ok_or("no Ready")?;
    let enc = s
        .emu
        .application_in(ACCOUNTS[r.account], REGION, &r.app)
        .ok_or("application gone")?
        .encryption;
    let (key_type, key_id) = (enc.key_type, enc.key_id);
    if r.rollback {
        return (current
            && ready["reason"] == "UpdateRolledBack"
            && key_type == AppliedKeyType::AwsOwnedKey)
            .then_some(())
            .ok_or_else(|| {
                format!(
                    "Ready {} (rollback expected), MSF {key_type:?}",
                    ready["reason"]
                )
            });
    }
    if !current || ready["status"] != "True" {
        return Err(format!("Ready {} {}", ready["status"], ready["reason"]));
    }
    let matches = match r.key {
        None => key_type == AppliedKeyType::AwsOwnedKey,
        Some(k) => {
            key_type == AppliedKeyType::CustomerManagedKey
                && key_id.as_deref() == Some(w.keys[k].as_str())
        }
    };
    matches
        .then_some(())
        .ok_or_else(|| format!("Ready but MSF says {key_type:?} {key_id:?}"))
}
