#!/usr/bin/env bash
# Builds the release binary the way the Dockerfile does (there is no Docker engine on the CI
# machines, so CI runs this instead of `docker build`). tests/e2e_deploy.rs checks that the
# Dockerfile runs the same command.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --locked --no-default-features --bin msf-cmk-controller
echo "built target/release/msf-cmk-controller (emulator feature off)" >&2
