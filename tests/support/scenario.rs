//! One scenario of the controller e2e tests (`tests/e2e_controller.rs`): a cluster (the shared
//! one, or a private one for tests that restart the API server), an embedded AWS emulator of
//! its own (MSF + KMS, so call counts belong to this scenario alone), namespaces, and the
//! controller replicas that serve them.
//!
//! Isolation: every replica watches only its scenario's namespaces (`MSF_CMK_NAMESPACES`) and
//! talks only to its scenario's emulator, so scenarios run in parallel on one API server
//! without seeing each other's resources or AWS calls. Leader election is off except where a
//! scenario asks for it: the Role in `deploy/` allows one Lease name only, so only the
//! leader-election scenario (and the private-cluster scenario) may hold it.
//!
//! On failure (any panic while a scenario is alive) its `Drop` prints what a reader needs:
//! every replica's log, `kubectl get appenc -o yaml`, the events, the emulator's call counts
//! and state.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use msf_cmk_controller::domain::{ApplicationStatus, AppliedKeyType, ObservedApplication};
use msf_cmk_controller::emulator::{Emulator, EmulatorConfig, EmulatorHandle};
use msf_cmk_controller::policy::{self, PolicyDocument, requirements::MsfRequirements};
use serde_json::Value;

use super::cluster::{CONTROLLER_NAMESPACE, TestCluster};
use super::controller::{ControllerOptions, RunningController, start_controller};
use super::wait::wait_until;

/// The region of every resource (the controller's `AWS_REGION` in the harness).
pub const REGION: &str = "us-east-1";
/// The account of the examples in `deploy/examples/` and of the Deployment's operator role.
pub const ACCOUNT: &str = "111122223333";
/// `MSF_CMK_OPERATOR_ROLE_ARN` of `deploy/kustomize/base/deployment.yaml`.
pub const OPERATOR_ROLE_ARN: &str = "arn:aws:iam::111122223333:role/msf-cmk-controller";
/// The resync period of the scenarios: drift made in AWS is corrected within about this long.
pub const RESYNC: Duration = Duration::from_secs(2);
/// A bound for one change to converge (observe, PutKeyPolicy, UpdateApplication, status),
/// including one wait for an application status (the planner requeues after 15 s).
pub const CONVERGE: Duration = Duration::from_secs(45);

enum ClusterRef {
    Shared(&'static TestCluster),
    Private(Box<TestCluster>),
}

pub struct Scenario {
    pub name: String,
    // Dropped in declaration order: the replicas stop before the emulator and the cluster.
    replicas: Vec<RunningController>,
    pub emu: EmulatorHandle,
    runtime: tokio::runtime::Runtime,
    namespaces: Vec<String>,
    tmp: tempfile::TempDir,
    cluster: ClusterRef,
}

/// What a replica is started with, besides the defaults of [`Scenario::start_replica`].
#[derive(Clone, Debug, Default)]
pub struct Replica {
    pub identity: String,
    pub leader_election: bool,
    pub env: Vec<(String, String)>,
}

impl Replica {
    pub fn new(identity: &str) -> Self {
        Replica {
            identity: identity.into(),
            ..Default::default()
        }
    }

    pub fn leader_election(mut self) -> Self {
        self.leader_election = true;
        self
    }

    pub fn env(mut self, key: &str, value: &str) -> Self {
        self.env.push((key.into(), value.into()));
        self
    }
}

impl Scenario {
    /// A scenario on the shared cluster of this test binary.
    pub fn shared(name: &str) -> Scenario {
        Scenario::with_cluster(name, ClusterRef::Shared(TestCluster::shared()), &[])
    }

    /// A scenario on a cluster of its own (restarting its API server disturbs nobody).
    pub fn private(name: &str) -> Scenario {
        Scenario::private_with_accounts(name, &[])
    }

    /// [`Scenario::private`] with an emulator that also serves `extra_accounts`.
    pub fn private_with_accounts(name: &str, extra_accounts: &[&str]) -> Scenario {
        let cluster = ClusterRef::Private(Box::new(TestCluster::start()));
        Scenario::with_cluster(name, cluster, extra_accounts)
    }

    fn with_cluster(name: &str, cluster: ClusterRef, extra_accounts: &[&str]) -> Scenario {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name(format!("emulator-{name}"))
            .enable_all()
            .build()
            .expect("tokio runtime for the emulator");
        let emu = runtime
            .block_on(Emulator::start(EmulatorConfig {
                account_id: ACCOUNT.into(),
                extra_accounts: extra_accounts.iter().map(|a| a.to_string()).collect(),
                default_region: REGION.into(),
                // MSF checks key policies with the caller's own identity: the controller
                // calls AWS as the operator role the key policies are written for.
                caller_arn: Some(OPERATOR_ROLE_ARN.into()),
                ..EmulatorConfig::default()
            }))
            .expect("start the embedded AWS emulator");
        Scenario {
            name: name.into(),
            replicas: Vec::new(),
            emu,
            runtime,
            namespaces: Vec::new(),
            tmp: tempfile::Builder::new()
                .prefix(&format!("e2e-{name}-"))
                .tempdir()
                .expect("temp dir"),
            cluster,
        }
    }

    pub fn cluster(&self) -> &TestCluster {
        match &self.cluster {
            ClusterRef::Shared(c) => c,
            ClusterRef::Private(c) => c,
        }
    }

    /// Installs `crds/` and the deploy bundle (RBAC) and creates a namespace of this scenario.
    pub fn namespace(&mut self, prefix: &str) -> String {
        self.cluster().install_crds();
        self.cluster().install_deploy_bundle();
        let ns = self.cluster().create_namespace(prefix);
        self.namespaces.push(ns.clone());
        ns
    }

    /// A file in the scenario's temporary directory (a tenancy configuration).
    pub fn write_file(&self, name: &str, text: &str) -> PathBuf {
        let path = self.tmp.path().join(name);
        std::fs::write(&path, text).expect("write scenario file");
        path
    }

    // ---- the controller ----------------------------------------------------------------

    /// Starts `msf-cmk-controller run` as the controller's ServiceAccount, configured like
    /// the Deployment, pointed at this scenario's emulator, watching this scenario's
    /// namespaces, resync [`RESYNC`]; waits for `/readyz`. Returns the replica's index.
    pub fn start_replica(&mut self, r: Replica) -> usize {
        assert!(
            !self.namespaces.is_empty(),
            "create the scenario's namespaces before starting a replica"
        );
        let mut opts = ControllerOptions {
            identity: format!("{}-{}", self.name, r.identity),
            resync_period: format!("{}s", RESYNC.as_secs()),
            leader_election: r.leader_election,
            env: vec![],
        }
        .env("MSF_CMK_AWS_ENDPOINT_URL", &self.emu.endpoint())
        .env("MSF_CMK_NAMESPACES", &self.namespaces.join(","))
        .env("MSF_CMK_OPERATOR_ROLE_ARN", OPERATOR_ROLE_ARN)
        // The emulator makes key policy writes visible at once unless a scenario sets a
        // propagation delay; scenarios that test the settle time set their own.
        .env("MSF_CMK_POLICY_SETTLE", "1s")
        // Plain text in the log files (tracing-subscriber honours NO_COLOR).
        .env("NO_COLOR", "1");
        opts.env.extend(r.env);
        let replica = start_controller(self.cluster(), opts);
        let index = self.replicas.len();
        self.replicas.push(replica);
        let what = format!("replica {} to answer /readyz with 200", r.identity);
        let rep = &mut self.replicas[index];
        wait_until(
            &what,
            Duration::from_secs(30),
            Duration::from_millis(200),
            || {
                if !rep.process.is_running() {
                    return Err("the process exited (its log is below)".into());
                }
                match rep.get("/readyz") {
                    Some((200, body)) => Ok(body),
                    other => Err(format!("{other:?}")),
                }
            },
        );
        index
    }

    pub fn replica(&mut self, index: usize) -> &mut RunningController {
        &mut self.replicas[index]
    }

    /// Sends SIGTERM to a replica, as the kubelet does when its pod is deleted, and waits up
    /// to `within` for it to exit: how long it took, or `None` if it is still running.
    pub fn terminate(&mut self, index: usize, within: Duration) -> Option<Duration> {
        let process = &mut self.replicas[index].process;
        let pid = process.pid().expect("replica was started");
        let sent = Instant::now();
        let _ = std::process::Command::new("kill")
            .args(["-TERM", &pid.to_string()])
            .status();
        while sent.elapsed() < within {
            if !process.is_running() {
                return Some(sent.elapsed());
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        None
    }

    /// `GET path` on a replica's HTTP port (`/readyz`, `/metrics`).
    pub fn http_get(&self, index: usize, path: &str) -> Option<(u16, String)> {
        self.replicas[index].get(path)
    }

    /// The lines of a replica's log that contain `needle`.
    pub fn log_lines(&self, index: usize, needle: &str) -> Vec<String> {
        self.replicas[index]
            .process
            .log()
            .lines()
            .filter(|l| l.contains(needle))
            .map(str::to_string)
            .collect()
    }

    /// Panics if a replica logged a panic.
    pub fn assert_no_panic(&self) {
        for r in &self.replicas {
            let log = r.process.log();
            assert!(
                !log.contains("panicked at"),
                "{} panicked:\n{}",
                r.process.name(),
                tail(&log, 60)
            );
        }
    }

    // ---- AWS (the emulator) ------------------------------------------------------------

    /// A RUNNING Flink 1.20 application on the AWS owned key; returns its ARN.
    pub fn application(&self, name: &str) -> String {
        self.emu
            .create_application(REGION, name, "FLINK-1_20", ApplicationStatus::Running)
            .expect("create application")
    }

    /// A symmetric key with KMS's default policy; returns its ARN.
    pub fn key(&self) -> String {
        self.emu.create_key(REGION, None).expect("create key")
    }

    pub fn app(&self, name: &str) -> ObservedApplication {
        self.emu
            .application(REGION, name)
            .unwrap_or_else(|| panic!("application {name} is gone from the emulator"))
    }

    /// The application's key type and the key id MSF reports.
    pub fn encryption(&self, name: &str) -> (AppliedKeyType, Option<String>) {
        let e = self.app(name).encryption;
        (e.key_type, e.key_id)
    }

    pub fn calls(&self, op: &str) -> u64 {
        self.emu.call_count(op)
    }

    /// The AWS writes the controller can make: (PutKeyPolicy, UpdateApplication).
    pub fn writes(&self) -> (u64, u64) {
        (self.calls("PutKeyPolicy"), self.calls("UpdateApplication"))
    }

    /// Asserts that the key's policy, as KMS holds it, grants everything MSF needs for each
    /// application (checked with the policy engine, independently of the controller's
    /// status) and names both MSF service principals.
    pub fn assert_policy_grants(&self, key_arn: &str, application_arns: &[&str]) {
        let text = self.emu.key_policy(key_arn).expect("key exists");
        for principal in [
            "kinesisanalytics.amazonaws.com",
            "infrastructure.kinesisanalytics.amazonaws.com",
        ] {
            assert!(
                text.contains(principal),
                "the policy of {key_arn} does not name {principal}:\n{text}"
            );
        }
        let doc = PolicyDocument::parse(&text).expect("the key policy parses");
        for app in application_arns {
            let reqs = MsfRequirements::for_application(app, OPERATOR_ROLE_ARN)
                .expect("requirements for the application");
            let report = policy::check(&doc, key_arn, &reqs);
            let missing: Vec<String> = report
                .missing()
                .map(|a| format!("{} {} ({:?})", a.principal, a.action, a.decision))
                .collect();
            assert!(
                report.compliant,
                "the policy of {key_arn} does not grant what MSF needs for {app}: missing {missing:?}\n{text}"
            );
        }
    }

    /// Every AWS operation the controller called in this scenario is allowed by the role
    /// policy in `deploy/iam/` (so that least-privilege policy is enough for what the
    /// controller really does).
    pub fn assert_calls_allowed_by_deploy_iam(&self) {
        let path = super::cluster::repo_path("deploy/iam/controller-role-policy.json");
        let text = std::fs::read_to_string(&path).expect("deploy/iam/controller-role-policy.json");
        let policy: Value = serde_json::from_str(&text).expect("role policy JSON");
        let mut allowed = Vec::new();
        for st in policy["Statement"].as_array().expect("Statement") {
            match &st["Action"] {
                Value::String(a) => allowed.push(a.to_ascii_lowercase()),
                Value::Array(a) => allowed.extend(
                    a.iter()
                        .filter_map(Value::as_str)
                        .map(str::to_ascii_lowercase),
                ),
                _ => {}
            }
        }
        for (op, n) in self.emu.call_counts() {
            // Needs no IAM permission: AWS answers it even under an explicit deny.
            if op == "GetCallerIdentity" {
                continue;
            }
            let service = if op.contains("Application") {
                "kinesisanalytics"
            } else {
                "kms"
            };
            let action = format!("{service}:{op}");
            assert!(
                allowed.contains(&action.to_ascii_lowercase()),
                "the controller called {action} ({n} times); deploy/iam/controller-role-policy.json does not allow it"
            );
        }
    }

    // ---- Kubernetes ----------------------------------------------------------------------

    /// `kubectl apply --server-side` of inline YAML in `ns`; panics with the refusal.
    pub fn apply(&self, ns: &str, yaml: &str) {
        if let Err(e) = self.cluster().apply_yaml(yaml, ns) {
            panic!("kubectl apply refused in {ns}: {e}\n{yaml}");
        }
    }

    /// The object as the API server stores it (`kubectl get -o json`), `None` if absent.
    pub fn get(&self, ns: &str, name: &str) -> Option<Value> {
        let out = self
            .cluster()
            .kubectl(&["get", "appenc", name, "-n", ns, "-o", "json"]);
        if out.success {
            Some(serde_json::from_str(&out.stdout).expect("kubectl get -o json"))
        } else if out.stderr.contains("NotFound") || out.stderr.contains("not found") {
            None
        } else {
            panic!("kubectl get appenc {name} -n {ns}: {}", out.stderr)
        }
    }

    pub fn must_get(&self, ns: &str, name: &str) -> Value {
        self.get(ns, name)
            .unwrap_or_else(|| panic!("ApplicationEncryption {ns}/{name} not found"))
    }

    /// `kubectl <args>` as the admin; panics if it fails.
    pub fn kubectl(&self, args: &[&str]) -> String {
        self.cluster().kubectl(args).ok()
    }

    /// Waits until the status is for the object's current generation and Ready is `True`;
    /// returns the object.
    pub fn wait_converged(&self, ns: &str, name: &str) -> Value {
        self.wait(
            &format!("{ns}/{name} to converge (Ready=True at its generation)"),
            CONVERGE,
            |s| {
                let o = s.get(ns, name).ok_or_else(|| "not found".to_string())?;
                let generation = o["metadata"]["generation"].as_i64();
                let observed = o["status"]["observedGeneration"].as_i64();
                let ready = condition(&o, "Ready");
                match (generation == observed, ready) {
                    (true, Some(c)) if c["status"] == "True" => Ok(o),
                    _ => Err(format!(
                        "generation {generation:?}, observedGeneration {observed:?}, Ready {}",
                        ready.map_or("absent".into(), summary)
                    )),
                }
            },
        )
    }

    /// Waits until condition `type_` has `status` and `reason` at the current generation.
    pub fn wait_condition(
        &self,
        ns: &str,
        name: &str,
        type_: &str,
        status: &str,
        reason: &str,
    ) -> Value {
        self.wait(
            &format!("{ns}/{name} to report {type_}={status} ({reason})"),
            CONVERGE,
            |s| {
                let o = s.get(ns, name).ok_or_else(|| "not found".to_string())?;
                let current = o["metadata"]["generation"] == o["status"]["observedGeneration"];
                match condition(&o, type_) {
                    Some(c) if current && c["status"] == status && c["reason"] == reason => Ok(o),
                    c => Err(format!(
                        "{type_}: {} (status for the current generation: {current})",
                        c.map_or("absent".into(), summary)
                    )),
                }
            },
        )
    }

    pub fn wait_gone(&self, ns: &str, name: &str, timeout: Duration) {
        self.wait(&format!("{ns}/{name} to disappear"), timeout, |s| {
            match s.get(ns, name) {
                None => Ok(()),
                Some(o) => Err(format!(
                    "still there: deletionTimestamp {}, finalizers {}",
                    o["metadata"]["deletionTimestamp"], o["metadata"]["finalizers"]
                )),
            }
        });
    }

    /// The reasons of the events about `ns/name`, oldest first.
    pub fn event_reasons(&self, ns: &str, name: &str) -> Vec<String> {
        let out = self.kubectl(&[
            "get",
            "events",
            "-n",
            ns,
            "--field-selector",
            &format!("involvedObject.name={name}"),
            "-o",
            "json",
        ]);
        let v: Value = serde_json::from_str(&out).expect("events json");
        v["items"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|e| e["reason"].as_str().unwrap_or_default().to_string())
            .collect()
    }

    /// The holder of the controller's Lease, if any.
    pub fn lease_holder(&self) -> Option<String> {
        let out = self.cluster().kubectl(&[
            "get",
            "lease",
            "msf-cmk-controller",
            "-n",
            CONTROLLER_NAMESPACE,
            "-o",
            "jsonpath={.spec.holderIdentity}",
        ]);
        Some(out.stdout.trim().to_string()).filter(|s| out.success && !s.is_empty())
    }

    /// Bounded polling of `probe` (every 250 ms); panics with `what` and the last observation.
    /// The scenario's `Drop` then prints the diagnostics.
    pub fn wait<T>(
        &self,
        what: &str,
        timeout: Duration,
        mut probe: impl FnMut(&Self) -> Result<T, String>,
    ) -> T {
        let start = Instant::now();
        loop {
            match probe(self) {
                Ok(v) => return v,
                Err(last) if start.elapsed() >= timeout => {
                    panic!(
                        "[{}] timed out after {timeout:?} waiting for {what}; last: {last}",
                        self.name
                    )
                }
                Err(_) => std::thread::sleep(Duration::from_millis(250)),
            }
        }
    }

    /// Everything a reader needs to see why a scenario failed.
    pub fn diagnostics(&self) -> String {
        let mut out = format!("===== diagnostics of scenario {} =====\n", self.name);
        for r in &self.replicas {
            out += &format!(
                "----- log of {} ({}) -----\n{}\n",
                r.process.name(),
                r.process.log_path().display(),
                tail(&r.process.log(), 120)
            );
        }
        for ns in &self.namespaces {
            let objects = self
                .cluster()
                .kubectl(&["get", "appenc", "-n", ns, "-o", "yaml"]);
            out += &format!(
                "----- kubectl get appenc -n {ns} -o yaml -----\n{}{}\n",
                objects.stdout, objects.stderr
            );
            let events = self.cluster().kubectl(&["get", "events", "-n", ns]);
            out += &format!(
                "----- kubectl get events -n {ns} -----\n{}{}\n",
                events.stdout, events.stderr
            );
        }
        out += &format!(
            "----- emulator calls -----\n{:?}\n----- emulator outcomes -----\n{:?}\n----- emulator state -----\n{}\n",
            self.emu.call_counts(),
            self.emu.outcome_counts(),
            serde_json::to_string_pretty(&self.emu.state_json()).unwrap_or_default()
        );
        out += &format!("----- lease holder: {:?} -----\n", self.lease_holder());
        out
    }
}

impl Drop for Scenario {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("{}", self.diagnostics());
        }
        // Stop the replicas first (by PID, SIGTERM then SIGKILL), then the emulator.
        for r in &mut self.replicas {
            r.process.stop(Duration::from_secs(5));
        }
        // E2E_KEEP_LOGS=<dir>: keep every replica's log (the cluster's directory goes away).
        if let Some(keep) = std::env::var_os("E2E_KEEP_LOGS").filter(|v| !v.is_empty()) {
            let keep = PathBuf::from(keep);
            let _ = std::fs::create_dir_all(&keep);
            for r in &self.replicas {
                let _ = std::fs::copy(
                    r.process.log_path(),
                    keep.join(format!("{}.log", r.process.name())),
                );
            }
        }
        let emu = self.emu.clone();
        self.runtime.block_on(emu.shutdown());
    }
}

/// A condition of an object as stored, by type.
pub fn condition<'a>(o: &'a Value, type_: &str) -> Option<&'a Value> {
    o["status"]["conditions"]
        .as_array()?
        .iter()
        .find(|c| c["type"] == type_)
}

fn summary(c: &Value) -> String {
    format!(
        "{} {} {:?}",
        c["status"].as_str().unwrap_or("?"),
        c["reason"].as_str().unwrap_or("?"),
        c["message"].as_str().unwrap_or("")
    )
}

/// An `ApplicationEncryption` manifest (no namespace: applied with `-n`).
pub fn appenc(name: &str, application: &str, key_id: Option<&str>, extra_spec: &str) -> String {
    let key = match key_id {
        Some(k) => format!("  keyType: CustomerManagedKey\n  keyId: {k}\n"),
        None => "  keyType: AwsOwnedKey\n".to_string(),
    };
    let mut extra = String::new();
    for line in extra_spec.lines().filter(|l| !l.trim().is_empty()) {
        extra += &format!("  {line}\n");
    }
    format!(
        "apiVersion: msfcmk.dev/v1alpha1\nkind: ApplicationEncryption\nmetadata:\n  name: {name}\nspec:\n  applicationName: {application}\n{key}{extra}"
    )
}

fn tail(text: &str, lines: usize) -> String {
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}
