#!/usr/bin/env bash
# Installs a pinned AWS CLI v1 (PyPI `awscli`) into a virtualenv in a machine-local cache,
# once. The "Apply at scale" benchmark runs it as the baseline: the work done the way the AWS
# documentation shows it, one application at a time. Prints on stdout the one line to eval:
#   export AWS_CLI_BIN=/path/to/aws
# Progress goes to stderr. Idempotent: a second run only prints the line.
set -euo pipefail

AWSCLI_VERSION="1.46.2"
CACHE_DIR="${XDG_CACHE_HOME:-$HOME/.cache}/msf-cmk"
VENV="$CACHE_DIR/awscli-$AWSCLI_VERSION"
BIN="$VENV/bin/aws"
# Written last: a venv without it is a half-finished install (interrupted run) and is redone.
DONE="$VENV/.installed"

if [ ! -f "$DONE" ] || [ ! -x "$BIN" ]; then
  PYTHON="${PYTHON:-$(command -v python3 || true)}"
  if [ -z "$PYTHON" ]; then
    echo "setup-awscli: python3 is required (apt-get install python3 python3-venv)" >&2
    exit 1
  fi
  echo "setup-awscli: installing awscli==$AWSCLI_VERSION into $VENV ..." >&2
  rm -rf "$VENV"
  mkdir -p "$CACHE_DIR"
  "$PYTHON" -m venv "$VENV" >&2
  "$VENV/bin/pip" install --quiet --disable-pip-version-check "awscli==$AWSCLI_VERSION" >&2
  # The benchmark needs UpdateApplication's ApplicationEncryptionConfigurationUpdate shape.
  "$VENV/bin/python" - <<'PY' >&2
# awscli 1.46 vendors botocore as awscli.botocore; older releases depend on botocore.
try:
    from awscli.botocore import session as bs
except ImportError:
    from botocore import session as bs
m = bs.get_session().get_service_model("kinesisanalyticsv2")
shape = m.shape_for("ApplicationConfigurationUpdate")
assert "ApplicationEncryptionConfigurationUpdate" in shape.members, "botocore too old"
PY
  touch "$DONE"
  echo "setup-awscli: done" >&2
fi

echo "export AWS_CLI_BIN=$BIN"
