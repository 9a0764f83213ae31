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
//! `SOAK_APISERVER_RESTARTS` (default 1; `make soak` runs 1,000 resources, 30 minutes, 2).
//! Needs `eval "$(tests/e2e/setup.sh)"` (docs/e2e.md). Figures go to BENCHMARKS.md ("Chaos soak").

#[path = "../support/mod.rs"]
mod support;

mod checks;
mod person;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use msf_cmk_controller::domain::AppliedKeyType;
use msf_cmk_controller::emulator::{CallRecord, Fault};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use support::cluster::CONTROLLER_NAMESPACE;
use support::controller::http_get;
use support::scenario::{Replica, Scenario, appenc, condition};

use checks::LeaseSample;
use person::Person;

struct Config {
    resources: usize,
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
    /// Index into the keys; `None`: the AWS owned key.
    key: Option<usize>,
    retain: bool,
    /// UpdateApplication rolls back for this application (a scoped fault).
    rollback: bool,
    /// Spec versions applied (creation, edits, deletion): at most one update each.
    versions: u64,
    deleted: bool,
}

struct World {
    ns: String,
    keys: Vec<String>,
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
    /// (slot, generation, scenario index, pid)
    live: Vec<(char, u32, usize)>,
    identity_of_key: BTreeMap<String, String>,
    starts: u32,
}

fn start_replica(s: &mut Scenario, reps: &mut Replicas, slot: char, generation: u32) {
    let id = format!("{slot}{generation}");
    let key = format!("AKIDSOAK{}", id.to_ascii_uppercase());
    let index = s.start_replica(
        Replica::new(&id)
            .leader_election()
            .env("AWS_ACCESS_KEY_ID", &key)
            .env("MSF_CMK_LEASE_DURATION", "6s")
            .env("MSF_CMK_RESYNC_PERIOD", "20s")
            .env(
                "RUST_LOG",
                &std::env::var("SOAK_RUST_LOG").unwrap_or_else(|_| "info".into()),
            ),
    );
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
                    "jsonpath={.spec.holderIdentity}",
                ])
                .env_remove("KUBECONFIG")
                .output();
            if let Ok(o) = o
                && o.status.success()
            {
                let h = String::from_utf8_lossy(&o.stdout).trim().to_string();
                out.lock().unwrap().push(LeaseSample {
                    at_ms: now_ms(),
                    holder: Some(h).filter(|h| !h.is_empty()),
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
    let mut s = Scenario::private("soak");
    let ns = s.namespace("soak");
    let mut rng = StdRng::seed_from_u64(env_or("SOAK_SEED", 13));
    let n_keys = cfg.resources.div_ceil(20).max(5);
    let mut w = World {
        ns: ns.clone(),
        keys: (0..n_keys).map(|_| s.key()).collect(),
        res: BTreeMap::new(),
        ever_on_key: BTreeMap::new(),
        next_app: 0,
    };
    // The resources: 1 in 10 on the AWS owned key, 1 in 50 rolled back, both deletion policies.
    let mut yaml = Vec::new();
    for i in 0..cfg.resources {
        let name = new_resource(&mut s, &mut w, &mut rng, i % 50 == 7);
        if i % 10 == 3 && !w.res[&name].rollback {
            w.res.get_mut(&name).unwrap().key = None;
        }
        w.remember(&name);
        yaml.push(w.manifest(&name));
    }
    let setup_started = Instant::now();
    for chunk in yaml.chunks(50) {
        apply(&s, &ns, &chunk.join("---\n"));
    }

    let mut reps = Replicas {
        live: vec![],
        identity_of_key: BTreeMap::new(),
        starts: 0,
    };
    start_replica(&mut s, &mut reps, 'a', 0);
    start_replica(&mut s, &mut reps, 'b', 0);
    let stop = Arc::new(AtomicBool::new(false));
    let (samples, sampler) =
        lease_sampler(s.cluster().admin_kubeconfig().to_path_buf(), stop.clone());

    // Chaos on.
    s.emu.set_policy_propagation(Duration::from_millis(300));
    chaos_faults(&s, &cfg, 0);
    let person_keys: Vec<String> = w.keys.iter().take(5).cloned().collect();
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
    let replica_keys: BTreeSet<String> = reps.identity_of_key.keys().cloned().collect();
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
    // At most one UpdateApplication per spec version; none beyond the rolled-back one.
    let updates = checks::updates_per_application(&calls, &replica_keys);
    for r in w.res.values() {
        let n = updates.get(&r.app).copied().unwrap_or(0);
        let bound = if r.rollback { 1 } else { r.versions };
        if n > bound {
            problems.push(format!(
                "{}: {n} UpdateApplication for {bound} spec versions",
                r.app
            ));
        }
    }
    let (fenced, unjudged) = checks::writes_after_lease_lost(
        &calls,
        &samples.lock().unwrap(),
        &reps.identity_of_key,
        3_000,
    );
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
    let report = format!(
        "chaos soak: {} resources on {} keys, {chaos_seconds} s of chaos (setup {} s), settled in {settle_seconds} s; \
         {} calls logged ({} by the replicas), PutKeyPolicy ok {}, UpdateApplication ok {}; person edits {}; \
         {:?}; replica starts {}; max RSS {} kB, max fds {}; writes not judged for fencing (Lease reads too far apart): {}",
        cfg.resources,
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
        t.max_rss_kb,
        t.max_fds,
        unjudged.len(),
    );
    println!("{report}");
    assert!(
        problems.is_empty(),
        "{report}\n{} problems:\n{}",
        problems.len(),
        problems.join("\n")
    );
}

/// A new resource for a new application (created on the AWS owned key, RUNNING).
fn new_resource(s: &mut Scenario, w: &mut World, rng: &mut StdRng, rollback: bool) -> String {
    let i = w.next_app;
    w.next_app += 1;
    let app = format!("soak-app-{i}");
    s.application(&app);
    if rollback {
        s.emu
            .set_fault("UpdateApplication", Fault::rollback().for_application(&app));
    }
    let name = format!("r{i}");
    w.res.insert(
        name.clone(),
        Res {
            app,
            key: Some(rng.random_range(0..w.keys.len())),
            retain: rng.random_bool(0.5),
            rollback,
            versions: 1,
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
    let ns = w.ns.clone();
    if roll == 0 || live.is_empty() {
        let name = new_resource(s, w, rng, false);
        w.remember(&name);
        apply(s, &ns, &w.manifest(&name));
        t.creates += 1;
        return;
    }
    let name = live[rng.random_range(0..live.len())].clone();
    let n_keys = w.keys.len();
    let r = w.res.get_mut(&name).unwrap();
    match roll {
        1 => {
            r.deleted = true;
            r.versions += 1;
            delete(s, &ns, &name);
            t.deletes += 1;
            return;
        }
        2..=4 => {
            r.key = match r.key {
                Some(_) => None,
                None => Some(rng.random_range(0..n_keys)),
            };
            t.switches += 1;
        }
        5..=6 => {
            r.key = Some(rng.random_range(0..n_keys));
            t.edits += 1;
        }
        _ => {
            r.retain = !r.retain;
            t.edits += 1;
        }
    }
    r.versions += 1;
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

/// What the run looks like now (printed every minute): live resources by Ready reason, and
/// the restart slots each live replica counts.
fn progress(s: &Scenario, w: &World, reps: &Replicas) -> String {
    let out = s
        .cluster()
        .kubectl(&["get", "appenc", "-n", &w.ns, "-o", "json"]);
    let list: serde_json::Value = serde_json::from_str(&out.stdout).unwrap_or_default();
    let mut reasons: BTreeMap<String, usize> = BTreeMap::new();
    for o in list["items"].as_array().into_iter().flatten() {
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
        // One list per probe: a get per resource takes minutes at 1,000.
        let out = s
            .cluster()
            .kubectl(&["get", "appenc", "-n", &w.ns, "-o", "json"]);
        if !out.success {
            return Err(format!("kubectl get appenc: {}", out.stderr));
        }
        let list: serde_json::Value =
            serde_json::from_str(&out.stdout).map_err(|e| e.to_string())?;
        let by_name: BTreeMap<&str, &serde_json::Value> = list["items"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|o| Some((o["metadata"]["name"].as_str()?, o)))
            .collect();
        let mut waiting = Vec::new();
        let mut reasons: BTreeMap<String, usize> = BTreeMap::new();
        for (name, r) in &w.res {
            if let Err(e) = settled(s, w, by_name.get(name.as_str()).copied(), r) {
                waiting.push(format!("{name}: {e}"));
                let o = by_name.get(name.as_str());
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
    let (key_type, key_id) = s.encryption(&r.app);
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
