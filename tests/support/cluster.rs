//! A real Kubernetes control plane for the e2e tests: etcd + kube-apiserver (RBAC
//! authorization, token authentication, service account signing keys) on 127.0.0.1 with
//! random ports, started by `tests/e2e/cluster` (the same script developers use) in a
//! temporary directory.
//!
//! - [`TestCluster::shared`]: one cluster per test binary, started by the first test that
//!   asks. Statics are never dropped, so the script's watchdog stops it (by PID) when the test
//!   process exits, however it exits. Tests isolate themselves by namespace
//!   ([`TestCluster::create_namespace`]).
//! - [`TestCluster::start`]: a private cluster, stopped when dropped: for tests that restart
//!   the API server or must not share.
//!
//! The binaries come from `KUBE_APISERVER_BIN`, `ETCD_BIN` and `KUBECTL_BIN`, which
//! `tests/e2e/setup.sh` prints (scripts/test.sh evals it). Without them the tests fail; they
//! never skip.
//!
//! Everything here blocks (processes, kubectl) except the `kube::Client` constructors; a
//! client is made per call, because a client is bound to the tokio runtime of its test.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::{Mutex, OnceLock};

use kube::config::{KubeConfigOptions, Kubeconfig};

/// The namespace, ServiceAccount and Lease name of the controller in `deploy/`.
pub const CONTROLLER_NAMESPACE: &str = "msf-cmk-system";
pub const CONTROLLER_SERVICE_ACCOUNT: &str = "msf-cmk-controller";
pub const CRD_NAME: &str = "applicationencryptions.msfcmk.dev";

pub struct TestCluster {
    dir: PathBuf,
    /// Removes the directory when a private cluster is dropped; `None` for the shared one,
    /// whose watchdog removes it.
    _tmp: Option<tempfile::TempDir>,
    server: String,
    admin_kubeconfig: PathBuf,
    kubectl: PathBuf,
    stopped_on_drop: bool,
    installed: Mutex<Installed>,
}

#[derive(Default)]
struct Installed {
    crds: bool,
    deploy_bundle: bool,
}

/// The result of one kubectl run.
#[derive(Debug, Clone)]
pub struct KubectlOutput {
    pub success: bool,
    pub stdout: String,
    pub stderr: String,
}

impl KubectlOutput {
    fn from(out: Output) -> KubectlOutput {
        KubectlOutput {
            success: out.status.success(),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }

    /// stdout, or a panic that shows what kubectl said.
    pub fn ok(self) -> String {
        assert!(
            self.success,
            "kubectl failed:\n{}{}",
            self.stdout, self.stderr
        );
        self.stdout
    }

    /// stderr of a command expected to be refused, or a panic if it succeeded.
    pub fn refused(self) -> String {
        assert!(
            !self.success,
            "kubectl succeeded but should have been refused:\n{}",
            self.stdout
        );
        self.stderr
    }
}

/// The repository root (paths in tests are relative to it).
pub fn repo_path(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(rel)
}

fn required_env(var: &str) -> PathBuf {
    match std::env::var_os(var) {
        Some(v) if !v.is_empty() => PathBuf::from(v),
        _ => panic!(
            "{var} is not set. The e2e tests need a real kube-apiserver, etcd and kubectl: run\n\
             \n    eval \"$(tests/e2e/setup.sh)\"\n\n\
             first (scripts/test.sh does this; the first run builds them, see docs/e2e.md)."
        ),
    }
}

impl TestCluster {
    /// The cluster of this test binary, started on first use.
    pub fn shared() -> &'static TestCluster {
        static SHARED: OnceLock<Result<TestCluster, String>> = OnceLock::new();
        let cluster = SHARED.get_or_init(|| {
            std::panic::catch_unwind(|| TestCluster::launch(false)).map_err(|p| {
                p.downcast_ref::<String>()
                    .cloned()
                    .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
                    .unwrap_or_else(|| "cluster start panicked".into())
            })
        });
        match cluster {
            Ok(c) => c,
            Err(e) => panic!("the shared test cluster did not start: {e}"),
        }
    }

    /// A private cluster, stopped (by PID) and deleted when dropped.
    pub fn start() -> TestCluster {
        TestCluster::launch(true)
    }

    fn launch(stopped_on_drop: bool) -> TestCluster {
        for var in ["KUBE_APISERVER_BIN", "ETCD_BIN", "KUBECTL_BIN"] {
            required_env(var);
        }
        let tmp = tempfile::Builder::new()
            .prefix("msf-cmk-e2e-")
            .tempdir()
            .expect("create temp dir");
        let dir = tmp.path().to_path_buf();
        let out = Command::new(repo_path("tests/e2e/cluster"))
            .arg("up")
            .env("E2E_CLUSTER_DIR", &dir)
            // The watchdog stops the servers when this test process exits.
            .env("E2E_OWNER_PID", std::process::id().to_string())
            .stdin(Stdio::null())
            .output()
            .expect("run tests/e2e/cluster up");
        if !out.status.success() {
            let apiserver_log = tail(&dir.join("apiserver.log"), 40);
            let etcd_log = tail(&dir.join("etcd.log"), 20);
            panic!(
                "tests/e2e/cluster up failed:\n{}\n--- apiserver.log (tail) ---\n{apiserver_log}\n--- etcd.log (tail) ---\n{etcd_log}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        let port = std::fs::read_to_string(dir.join("apiserver.port")).expect("apiserver.port");
        let tmp = if stopped_on_drop {
            Some(tmp)
        } else {
            // The watchdog deletes it after the process exits.
            let _ = tmp.keep();
            None
        };
        TestCluster {
            server: format!("https://127.0.0.1:{}", port.trim()),
            admin_kubeconfig: dir.join("admin.kubeconfig"),
            kubectl: required_env("KUBECTL_BIN"),
            dir,
            _tmp: tmp,
            stopped_on_drop,
            installed: Mutex::default(),
        }
    }

    /// `https://127.0.0.1:<port>`.
    pub fn server_url(&self) -> &str {
        &self.server
    }

    /// The cluster's state directory (logs: `apiserver.log`, `etcd.log`).
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// A kubeconfig for the admin (system:masters), for kubectl or a child process.
    pub fn admin_kubeconfig(&self) -> &Path {
        &self.admin_kubeconfig
    }

    /// The CA that signed the API server's certificate.
    pub fn ca_file(&self) -> PathBuf {
        self.dir.join("pki/ca.crt")
    }

    /// A client authenticated as the admin.
    pub async fn client(&self) -> kube::Client {
        client_from_kubeconfig(&self.admin_kubeconfig).await
    }

    /// Runs kubectl as the admin; see [`KubectlOutput::ok`] and [`KubectlOutput::refused`].
    pub fn kubectl(&self, args: &[&str]) -> KubectlOutput {
        self.kubectl_as(&self.admin_kubeconfig, args, None)
    }

    /// Runs kubectl as the admin with `stdin` as its input (`apply -f -`).
    pub fn kubectl_stdin(&self, args: &[&str], stdin: &str) -> KubectlOutput {
        self.kubectl_as(&self.admin_kubeconfig, args, Some(stdin))
    }

    /// Runs kubectl with another kubeconfig (a ServiceAccount's).
    pub fn kubectl_as(
        &self,
        kubeconfig: &Path,
        args: &[&str],
        stdin: Option<&str>,
    ) -> KubectlOutput {
        use std::io::Write;
        let mut cmd = Command::new(&self.kubectl);
        cmd.arg(format!("--kubeconfig={}", kubeconfig.display()))
            .args(["--request-timeout=30s"])
            .args(args)
            .env_remove("KUBECONFIG")
            .current_dir(repo_path("."))
            .stdin(if stdin.is_some() {
                Stdio::piped()
            } else {
                Stdio::null()
            })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = cmd.spawn().expect("run kubectl");
        if let Some(input) = stdin {
            let mut pipe = child.stdin.take().expect("kubectl stdin");
            pipe.write_all(input.as_bytes())
                .expect("write kubectl stdin");
        }
        KubectlOutput::from(child.wait_with_output().expect("wait for kubectl"))
    }

    /// `kubectl apply --server-side -f <path>` (a file or a directory, relative to the
    /// repository root), in `namespace` if given; panics if refused.
    pub fn apply_file(&self, path: &str, namespace: Option<&str>) -> String {
        let file = repo_path(path);
        let file = file.to_str().expect("utf-8 path");
        let mut args = vec!["apply", "--server-side", "-f", file];
        if let Some(ns) = namespace {
            args.extend(["-n", ns]);
        }
        self.kubectl(&args).ok()
    }

    /// `kubectl apply --server-side -f -` of inline YAML: `Ok(stdout)` or `Err(stderr)`, so a
    /// test can assert on the API server's refusal message.
    pub fn apply_yaml(&self, yaml: &str, namespace: &str) -> Result<String, String> {
        let out = self.kubectl_stdin(
            &["apply", "--server-side", "-n", namespace, "-f", "-"],
            yaml,
        );
        if out.success {
            Ok(out.stdout)
        } else {
            Err(out.stderr)
        }
    }

    /// Applies `crds/` once per cluster and waits until the CRD is Established.
    pub fn install_crds(&self) {
        let mut installed = self.installed.lock().unwrap_or_else(|e| e.into_inner());
        if installed.crds {
            return;
        }
        self.apply_file("crds", None);
        self.kubectl(&[
            "wait",
            "--for=condition=Established",
            "--timeout=30s",
            &format!("crd/{CRD_NAME}"),
        ])
        .ok();
        installed.crds = true;
    }

    /// Applies `deploy/kustomize/base` (namespace, ServiceAccount, RBAC, ConfigMap, Deployment,
    /// Service) once per cluster. Nothing schedules the Deployment's pods here: the tests run
    /// the controller binary themselves, with the ServiceAccount's token.
    pub fn install_deploy_bundle(&self) {
        let mut installed = self.installed.lock().unwrap_or_else(|e| e.into_inner());
        if installed.deploy_bundle {
            return;
        }
        let base = repo_path("deploy/kustomize/base");
        self.kubectl(&[
            "apply",
            "--server-side",
            "-k",
            base.to_str().expect("utf-8 path"),
        ])
        .ok();
        installed.deploy_bundle = true;
    }

    /// Creates a namespace with a unique name starting with `prefix`.
    pub fn create_namespace(&self, prefix: &str) -> String {
        let name = format!(
            "{prefix}-{}",
            &uuid::Uuid::new_v4().simple().to_string()[..8]
        );
        self.kubectl(&["create", "namespace", &name]).ok();
        name
    }

    /// A token for ServiceAccount `namespace/name` from the TokenRequest API, creating the
    /// namespace and the ServiceAccount if missing. RBAC then sees
    /// `system:serviceaccount:<namespace>:<name>`.
    pub fn service_account_token(&self, namespace: &str, name: &str) -> String {
        let manifest = format!(
            "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: {namespace}\n---\n\
             apiVersion: v1\nkind: ServiceAccount\nmetadata:\n  name: {name}\n  namespace: {namespace}\n"
        );
        self.kubectl_stdin(&["apply", "--server-side", "-f", "-"], &manifest)
            .ok();
        let token = self
            .kubectl(&["create", "token", name, "-n", namespace, "--duration=24h"])
            .ok();
        token.trim().to_string()
    }

    /// A kubeconfig file authenticating as ServiceAccount `namespace/name`: give it to the
    /// controller process (`KUBECONFIG`) or to [`TestCluster::kubectl_as`].
    pub fn service_account_kubeconfig(&self, namespace: &str, name: &str) -> PathBuf {
        let token = self.service_account_token(namespace, name);
        let path = self.dir.join(format!("sa-{namespace}-{name}.kubeconfig"));
        let kubeconfig = format!(
            "apiVersion: v1\nkind: Config\n\
             clusters:\n- name: e2e\n  cluster:\n    server: {server}\n    certificate-authority: {ca}\n\
             users:\n- name: {name}\n  user:\n    token: {token}\n\
             contexts:\n- name: e2e\n  context:\n    cluster: e2e\n    user: {name}\n    namespace: {namespace}\n\
             current-context: e2e\n",
            server = self.server,
            ca = self.ca_file().display(),
        );
        std::fs::write(&path, kubeconfig).expect("write kubeconfig");
        path
    }

    /// A client authenticated as ServiceAccount `namespace/name` (see
    /// [`TestCluster::service_account_token`]).
    pub async fn service_account_client(&self, namespace: &str, name: &str) -> kube::Client {
        let path = self.service_account_kubeconfig(namespace, name);
        client_from_kubeconfig(&path).await
    }

    /// `kubectl auth can-i <verb> <resource> [extra...]` as the given kubeconfig.
    pub fn can_i(&self, kubeconfig: &Path, verb: &str, resource: &str, extra: &[&str]) -> bool {
        let mut args = vec!["auth", "can-i", verb, resource];
        args.extend_from_slice(extra);
        let out = self.kubectl_as(kubeconfig, &args, None);
        match out.stdout.trim() {
            "yes" => true,
            "no" => false,
            _ => panic!(
                "kubectl auth can-i {verb} {resource} {extra:?}: {}{}",
                out.stdout, out.stderr
            ),
        }
    }

    /// Stops and starts kube-apiserver only (same port, same etcd): clients and watches see
    /// the connection drop and must recover.
    pub fn restart_apiserver(&self) {
        let out = Command::new(repo_path("tests/e2e/cluster"))
            .arg("restart-apiserver")
            .env("E2E_CLUSTER_DIR", &self.dir)
            .stdin(Stdio::null())
            .output()
            .expect("run tests/e2e/cluster restart-apiserver");
        assert!(
            out.status.success(),
            "restart-apiserver failed:\n{}\n{}",
            String::from_utf8_lossy(&out.stderr),
            tail(&self.dir.join("apiserver.log"), 40)
        );
    }

    /// The last lines of the API server's log, for failure messages.
    pub fn apiserver_log_tail(&self, lines: usize) -> String {
        tail(&self.dir.join("apiserver.log"), lines)
    }
}

impl Drop for TestCluster {
    fn drop(&mut self) {
        if self.stopped_on_drop {
            let _ = Command::new(repo_path("tests/e2e/cluster"))
                .arg("down")
                .env("E2E_CLUSTER_DIR", &self.dir)
                .stdin(Stdio::null())
                .output();
        }
    }
}

/// A client from a kubeconfig file (TLS verified against the cluster's CA).
pub async fn client_from_kubeconfig(path: &Path) -> kube::Client {
    let kubeconfig = Kubeconfig::read_from(path).expect("read kubeconfig");
    let config = kube::Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default())
        .await
        .expect("load kubeconfig");
    kube::Client::try_from(config).expect("build kube client")
}

fn tail(path: &Path, lines: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}
