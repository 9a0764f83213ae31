//! The KMS adapter against moto, an independent KMS implementation. Needs
//! `MOTO_SERVER_BIN` (scripts/setup-moto.sh); fails without it.

// The emulator (and the shared test support) exists only with the default feature `emulator`.
#![cfg(feature = "emulator")]

mod support_aws;

use support_aws::{Moto, kms_suite};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kms_suite_against_moto() {
    let moto = Moto::start();
    kms_suite(&moto.endpoint).await;
}
