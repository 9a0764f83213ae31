#!/usr/bin/env bash
# Builds the release binary the way the Dockerfile does. There is no Docker engine on the CI
# machines, so CI runs this instead of `docker build`: scripts/docker-context.py stages exactly
# the files the Dockerfile's build stage COPYs (from the build context after .dockerignore) in
# an empty directory, and the Dockerfile's own cargo command runs there. A file the image build
# needs but does not get (a bench target, a new top-level folder) fails here as it would in
# `docker build`. tests/e2e_deploy.rs checks that the Dockerfile runs the command below.
#
#   cargo build --release --locked --no-default-features --bin msf-cmk-controller
set -euo pipefail
cd "$(dirname "$0")/.."
repo=$(pwd)
stage=$(mktemp -d)
trap 'rm -rf "$stage"' EXIT

command=$(python3 scripts/docker-context.py "$stage")
echo "docker build context staged in $stage ($(find "$stage" -type f | wc -l) files): $command" >&2
# The shared target directory keeps dependencies built once; the crate itself is built from
# the staged copy.
# The staged copy has no .git: pass the revision as the image build does (--build-arg).
revision=${MSF_CMK_GIT_REVISION:-$(git rev-parse --short HEAD 2>/dev/null || echo unknown)}
(cd "$stage" && MSF_CMK_GIT_REVISION="$revision" CARGO_TARGET_DIR="$repo/target" $command)
echo "built target/release/msf-cmk-controller (emulator feature off)" >&2
