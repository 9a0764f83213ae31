//! What this binary is: its version and the git revision it was built from (set by build.rs:
//! `MSF_CMK_GIT_REVISION`, else the checkout's HEAD, else `unknown`). One source for
//! `--version` and the `msfcmk_build_info` metric.

pub const VERSION: &str = env!("CARGO_PKG_VERSION");

pub const GIT_REVISION: &str = env!("MSF_CMK_BUILD_REVISION");

/// What `--version` prints after the binary's name.
pub const LONG_VERSION: &str = concat!(
    env!("CARGO_PKG_VERSION"),
    " (git revision ",
    env!("MSF_CMK_BUILD_REVISION"),
    ")"
);
