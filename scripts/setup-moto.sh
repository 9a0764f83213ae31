#!/usr/bin/env bash
# Installs a pinned moto[server] (an independent KMS implementation the tests run against)
# into a virtualenv in a machine-local cache, once. Prints on stdout the one line the test
# command evals:  export MOTO_SERVER_BIN=/path/to/moto_server
# Progress goes to stderr. Idempotent: a second run only prints the line.
set -euo pipefail

MOTO_VERSION="5.2.5"
CACHE_DIR="${XDG_CACHE_HOME:-$HOME/.cache}/msf-cmk"
VENV="$CACHE_DIR/moto-$MOTO_VERSION"
BIN="$VENV/bin/moto_server"
# Written last: a venv without it is a half-finished install (interrupted run) and is redone.
DONE="$VENV/.installed"

if [ ! -f "$DONE" ] || [ ! -x "$BIN" ]; then
  PYTHON="${PYTHON:-$(command -v python3 || true)}"
  if [ -z "$PYTHON" ]; then
    echo "setup-moto: python3 is required (apt-get install python3 python3-venv)" >&2
    exit 1
  fi
  echo "setup-moto: installing moto[server]==$MOTO_VERSION into $VENV ..." >&2
  rm -rf "$VENV"
  mkdir -p "$CACHE_DIR"
  "$PYTHON" -m venv "$VENV" >&2
  "$VENV/bin/pip" install --quiet --disable-pip-version-check "moto[server]==$MOTO_VERSION" >&2
  "$VENV/bin/python" -c "import moto.server" >&2
  touch "$DONE"
  echo "setup-moto: done" >&2
fi

echo "export MOTO_SERVER_BIN=$BIN"
