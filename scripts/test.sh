#!/usr/bin/env bash
# The project's test command (README). Installs into .cache/ whatever the tests need that a
# fresh machine lacks (moto for KMS, a real kube-apiserver + etcd + kubectl), then runs
# formatting, lints and every test.
set -euo pipefail
cd "$(dirname "$0")/.."

# Real servers used by the tests are set up by their own scripts, which print `export` lines.
for setup in scripts/setup-moto.sh tests/e2e/setup.sh; do
  if [ -x "$setup" ]; then
    eval "$("$setup")"
  fi
done

cargo fmt --all -- --check
cargo clippy --all-targets --locked -- -D warnings
cargo test --locked
