//! Shared harness of the end-to-end tests (`tests/e2e_*.rs`), included by each with
//! `mod support;`. Each test binary uses a different subset, hence the `dead_code` allowance.
//!
//! - [`cluster`]: a private etcd + kube-apiserver (RBAC on) per test binary, kubectl, clients
//!   authenticated as a ServiceAccount.
//! - [`controller`]: `msf-cmk-controller run` as the controller's ServiceAccount, configured
//!   like the Deployment in `deploy/`.
//! - [`process`]: a child process (the controller binary) killed when dropped.
//! - [`proxy`]: a TCP proxy the test controls between a replica and the API server (partitions).
//! - [`scenario`]: one controller scenario: its own emulator, namespaces and replicas, and
//!   diagnostics printed when it fails.
//! - [`wait`]: bounded polling.
#![allow(dead_code)]

pub mod cluster;
pub mod controller;
pub mod process;
pub mod proxy;
pub mod scenario;
pub mod wait;
