//! A TCP proxy the test controls, between one controller replica and the API server: the
//! network partition of the leader-fencing scenario (`tests/e2e_fencing.rs`).
//!
//! It forwards bytes only (TLS passes through untouched: the replica still verifies the API
//! server's certificate for 127.0.0.1). [`TcpProxy::partition`] cuts every open connection
//! and refuses new ones (accepted, then closed at once), as an API server that became
//! unreachable looks to a client whose connections are reset; [`TcpProxy::heal`] forwards
//! again. Cutting rather than stalling keeps the cut-off replica busy: its requests fail fast
//! and its reconciles go on (with backoff), which is what the fence must stop.
//!
//! The proxy has its own tokio runtime (the e2e tests are synchronous); dropping it stops it.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

pub struct TcpProxy {
    addr: SocketAddr,
    open: watch::Sender<bool>,
    refused: Arc<AtomicU64>,
    // Last: dropping the runtime stops the accept loop and every connection task.
    runtime: tokio::runtime::Runtime,
}

impl TcpProxy {
    /// Listens on a free 127.0.0.1 port and forwards each connection to `upstream`.
    pub fn start(upstream: SocketAddr) -> TcpProxy {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("e2e-tcp-proxy")
            .enable_all()
            .build()
            .expect("tokio runtime for the proxy");
        let listener = runtime
            .block_on(TcpListener::bind("127.0.0.1:0"))
            .expect("bind the proxy on 127.0.0.1");
        let addr = listener.local_addr().expect("proxy address");
        let (open, _) = watch::channel(true);
        let refused = Arc::new(AtomicU64::new(0));
        runtime.spawn(accept_loop(
            listener,
            upstream,
            open.clone(),
            refused.clone(),
        ));
        TcpProxy {
            addr,
            open,
            refused,
            runtime,
        }
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `https://127.0.0.1:<port>`: the server URL of a kubeconfig that goes through the proxy.
    pub fn url(&self) -> String {
        format!("https://{}", self.addr)
    }

    /// Cuts every connection and refuses new ones until [`Self::heal`].
    pub fn partition(&self) {
        self.open.send_replace(false);
    }

    pub fn heal(&self) {
        self.open.send_replace(true);
    }

    /// Connections refused while partitioned (the replica kept trying).
    pub fn refused(&self) -> u64 {
        self.refused.load(Ordering::Relaxed)
    }

    pub fn shutdown(self) {
        self.runtime.shutdown_background();
    }
}

async fn accept_loop(
    listener: TcpListener,
    upstream: SocketAddr,
    open: watch::Sender<bool>,
    refused: Arc<AtomicU64>,
) {
    loop {
        let Ok((client, _)) = listener.accept().await else {
            // e.g. out of file descriptors: do not spin.
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
            continue;
        };
        if !*open.borrow() {
            refused.fetch_add(1, Ordering::Relaxed);
            drop(client);
            continue;
        }
        let mut open_rx = open.subscribe();
        tokio::spawn(async move {
            let Ok(server) = TcpStream::connect(upstream).await else {
                return;
            };
            let (mut client, mut server) = (client, server);
            tokio::select! {
                _ = tokio::io::copy_bidirectional(&mut client, &mut server) => {}
                // Partitioned: both sockets are dropped (closed) here.
                _ = open_rx.wait_for(|open| !*open) => {}
            }
        });
    }
}
