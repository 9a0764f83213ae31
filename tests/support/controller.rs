//! Running `msf-cmk-controller run` against a [`TestCluster`] the way the Deployment in
//! `deploy/` runs it, but as a local process: authenticated with the token of the
//! ServiceAccount that `deploy/kustomize/base` binds to the ClusterRole (so RBAC gaps fail the
//! test), leader election in `msf-cmk-system`, its HTTP port on a free 127.0.0.1 port.
//!
//! The `run` settings are passed as the same `MSF_CMK_*` variables as in
//! `deploy/kustomize/base/deployment.yaml`; add scenario-specific ones (the emulator endpoint:
//! `MSF_CMK_AWS_ENDPOINT_URL`) with [`ControllerOptions::env`].

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::process::Command;
use std::time::Duration;

use super::cluster::{CONTROLLER_NAMESPACE, CONTROLLER_SERVICE_ACCOUNT, TestCluster};
use super::process::BackgroundProcess;

/// A free TCP port on 127.0.0.1 (bound, then released).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("bind 127.0.0.1:0")
        .port()
}

pub struct ControllerOptions {
    /// The replica's identity (POD_NAME): the Lease holder.
    pub identity: String,
    pub resync_period: String,
    pub leader_election: bool,
    /// Extra environment, applied last (overrides the defaults above).
    pub env: Vec<(String, String)>,
}

impl Default for ControllerOptions {
    fn default() -> Self {
        ControllerOptions {
            identity: "controller-0".into(),
            resync_period: "5m".into(),
            leader_election: true,
            env: vec![],
        }
    }
}

impl ControllerOptions {
    pub fn env(mut self, key: &str, value: &str) -> Self {
        self.env.push((key.into(), value.into()));
        self
    }
}

/// A running controller replica.
pub struct RunningController {
    pub process: BackgroundProcess,
    /// /metrics, /livez, /readyz.
    pub http: SocketAddr,
}

impl RunningController {
    /// `GET path` on the controller's HTTP port: (status, body), or `None` if not listening.
    pub fn get(&self, path: &str) -> Option<(u16, String)> {
        http_get(self.http, path)
    }
}

/// Installs `crds/` and `deploy/kustomize/base`, then starts `msf-cmk-controller run` as the
/// controller's ServiceAccount. Its log is `<cluster dir>/<identity>.log`.
pub fn start_controller(c: &TestCluster, opts: ControllerOptions) -> RunningController {
    c.install_crds();
    c.install_deploy_bundle();
    let kubeconfig = c.service_account_kubeconfig(CONTROLLER_NAMESPACE, CONTROLLER_SERVICE_ACCOUNT);
    let http: SocketAddr = format!("127.0.0.1:{}", free_port())
        .parse()
        .expect("address");
    let mut cmd = Command::new(BackgroundProcess::controller_bin());
    cmd.arg("run")
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("KUBECONFIG", &kubeconfig)
        .env("POD_NAMESPACE", CONTROLLER_NAMESPACE)
        .env("POD_NAME", &opts.identity)
        .env("MSF_CMK_LEADER_ELECTION", opts.leader_election.to_string())
        .env("MSF_CMK_LEASE_NAME", "msf-cmk-controller")
        .env("MSF_CMK_RESYNC_PERIOD", &opts.resync_period)
        .env("MSF_CMK_METRICS_ADDR", http.to_string())
        .env("MSF_CMK_LOG_FORMAT", "text")
        .env("RUST_LOG", "info,msf_cmk_controller=debug")
        // Never reach for real AWS or the instance metadata service from a test.
        .env("AWS_REGION", "us-east-1")
        .env("AWS_ACCESS_KEY_ID", "AKIDE2ETEST")
        .env("AWS_SECRET_ACCESS_KEY", "e2e-secret")
        .env("AWS_EC2_METADATA_DISABLED", "true");
    for (k, v) in &opts.env {
        cmd.env(k, v);
    }
    let log = c.dir().join(format!("{}.log", opts.identity));
    let process = BackgroundProcess::spawn(&opts.identity, cmd, &log);
    RunningController { process, http }
}

/// A minimal HTTP/1.0 GET (no client dependency): (status, body).
pub fn http_get(addr: SocketAddr, path: &str) -> Option<(u16, String)> {
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(2)).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(stream, "GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n").ok()?;
    let mut response = String::new();
    stream.read_to_string(&mut response).ok()?;
    let status = response.split_whitespace().nth(1)?.parse().ok()?;
    let body = response
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    Some((status, body))
}
