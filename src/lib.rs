//! msf-cmk-controller: keeps Amazon Managed Service for Apache Flink applications encrypted
//! with the key their `ApplicationEncryption` resource declares.
//!
//! Layout (pipeline: observe -> plan -> apply -> status):
//! - [`api`]: the `ApplicationEncryption` custom resource (the user-facing contract).
//! - [`domain`]: what was observed in AWS, in the controller's own terms.
//! - [`policy`]: the pure key-policy engine (model, evaluator, MSF requirements, merge).
//! - [`identity`]: pure; who the controller is in AWS vs the operator role of the key policies.
//! - [`planner`]: pure; desired spec + observation -> ordered steps + conditions.
//! - [`aws`]: adapters to MSF and KMS (the only code that talks to AWS).
//! - `emulator` (feature `emulator`): an embedded MSF + KMS emulator for demo and tests.
//! - [`controller`]: the Kubernetes layer (reconcile loop, status, finalizer, metrics).
//! - [`cli`]: the command line.

pub mod api;
pub mod arn;
pub mod aws;
pub mod build_info;
pub mod cli;
pub mod controller;
pub mod domain;
#[cfg(feature = "emulator")]
pub mod emulator;
pub mod identity;
pub mod planner;
pub mod policy;
