#!/usr/bin/env bash
# Controller footprint and cold start on a real kube-apiserver (issue 10): RSS and CPU of
# `msf-cmk-controller run`
#   1. idle: a controller with no resources (then stopped);
#   2. cold start: N ApplicationEncryption resources are created first, then a fresh controller
#      starts and converges them all; wall time from its start to all Ready, PutKeyPolicy and
#      every other AWS call of that convergence, peak RSS (VmHWM), and the time from its cache
#      being synced to its first reconcile when its log says so;
#   3. steady state afterwards.
# The AWS side is the embedded emulator (standalone, quotas on) holding N applications on KEYS
# shared keys whose policies lack MSF's statements.
#
#   scripts/bench-footprint.sh                          # N=1000, release binary if built
#   N=10000 scripts/bench-footprint.sh                  # the 10,000-resource footprint
#   N=1000 KEYS=20 NAME_PREFIX=app- LATENCY_MS=20 HALF_RUNNING=1 scripts/bench-footprint.sh
#     # the set-up of benches/apply_at_scale.rs: `run` against `apply` on the same 1,000
#
# Knobs: N, KEYS (default N/40 rounded up: 40 applications per key fit in one 32 KB policy),
# NAME_PREFIX (footprint-app-), LATENCY_MS (0: injected on every AWS call), HALF_RUNNING (0: all
# READY; 1: every other application RUNNING, so its update restarts it), BIN, IDLE_SECS,
# STEADY_SECS, CONVERGE_TIMEOUT_SECS, POLL_SECS, RESYNC (5m: `run`'s default), RUN_ARGS (extra
# flags for `run`), APPLY_BESIDE (0; 1: `apply` with its defaults converges the same set-up on
# an emulator of its own just before `run`'s cold start, for the run/apply ratio), EMULATOR_BIN
# (default BIN; a binary built with the `emulator` feature, for when BIN is a production build
# without it, as the container image is: the emulator runs as a process of its own either way).
# Everything listens on 127.0.0.1 and is stopped by PID on exit. Figures go to stdout;
# BENCHMARKS.md ("Controller footprint", "Apply at scale") records runs.
set -euo pipefail
cd "$(dirname "$0")/.."

N=${N:-1000}
KEYS=${KEYS:-$(((N + 39) / 40))}
NAME_PREFIX=${NAME_PREFIX:-footprint-app-}
LATENCY_MS=${LATENCY_MS:-0}
HALF_RUNNING=${HALF_RUNNING:-0}
IDLE_SECS=${IDLE_SECS:-20}
STEADY_SECS=${STEADY_SECS:-60}
CONVERGE_TIMEOUT_SECS=${CONVERGE_TIMEOUT_SECS:-1800}
# Progress is read from the controller's own /metrics (msf_cmk_resources{ready="True"}, set
# after each status write): listing 10,000 objects with kubectl every poll cost the apiserver
# and kubectl more CPU than the controller on a 2-core machine. kubectl confirms the end once.
POLL_SECS=${POLL_SECS:-1}
# At N = 10,000 a 5-minute resync asks ~33 reconciles/s, more than the default concurrency of 8
# serves on this machine; `run` stretches the period to keep resyncs within --resync-share of its
# capacity (docs/controller.md, "Resyncs at scale"), so the default holds at any N.
RESYNC=${RESYNC:-5m}
RUN_ARGS=${RUN_ARGS:-}
ROLE=arn:aws:iam::123456789012:role/msf-cmk-controller
if [ -z "${BIN:-}" ]; then
  if [ -x target/release/msf-cmk-controller ]; then BIN=target/release/msf-cmk-controller; else
    cargo build -q --bin msf-cmk-controller
    BIN=target/debug/msf-cmk-controller
  fi
fi
EMULATOR_BIN=${EMULATOR_BIN:-$BIN}
eval "$(tests/e2e/setup.sh)"

WORK=$(mktemp -d)
export E2E_CLUSTER_DIR=$WORK/cluster
PIDS=()
cleanup() {
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  for p in "${PIDS[@]}"; do
    for _ in $(seq 1 50); do kill -0 "$p" 2>/dev/null || break; sleep 0.1; done
    kill -9 "$p" 2>/dev/null || true
  done
  tests/e2e/cluster down >/dev/null 2>&1 || true
  rm -rf "$WORK"
}
trap cleanup EXIT

eval "$(tests/e2e/cluster up)"
"$KUBECTL_BIN" apply -f crds/ >/dev/null
"$KUBECTL_BIN" wait --for=condition=Established crd/applicationencryptions.msfcmk.dev --timeout=60s >/dev/null

# The AWS side: an emulator (standalone, quotas on) holding N applications and KEYS keys (default
# key policy: none of MSF's statements), and the manifests naming them; unsigned seeding calls
# are not counted against quotas. Sets EMU_ENDPOINT.
emulator_up() { # <directory>
  mkdir -p "$1"
  "$EMULATOR_BIN" emulator --port 0 --update-delay-ms 200 --caller-arn "$ROLE" \
    >"$1/emulator.out" 2>"$1/emulator.err" &
  PIDS+=($!)
  for _ in $(seq 1 100); do grep -q '^endpoint: ' "$1/emulator.out" && break; sleep 0.1; done
  EMU_ENDPOINT=$(sed -n 's/^endpoint: //p' "$1/emulator.out")
  [ -n "$EMU_ENDPOINT" ] || { echo "emulator did not start ($EMULATOR_BIN):" >&2; cat "$1/emulator.err" >&2; exit 1; }
  seed "$EMU_ENDPOINT" "$1/manifests.yaml"
  sleep 1 # STARTING -> RUNNING (update delay 200 ms)
  if [ "$LATENCY_MS" -gt 0 ]; then
    curl -fsS -X PUT "$EMU_ENDPOINT/_emulator/faults/*" -d "{\"latency_ms\": $LATENCY_MS}" >/dev/null
  fi
}
seed() { # <endpoint> <manifests file>
python3 - "$1" "$N" "$KEYS" "$2" "$NAME_PREFIX" "$HALF_RUNNING" <<'PY'
import json, sys, urllib.request
endpoint, n, keys, out, prefix, half = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4], sys.argv[5], sys.argv[6] == "1"
def call(target, body):
    req = urllib.request.Request(endpoint + "/", data=json.dumps(body).encode(), method="POST",
        headers={"content-type": "application/x-amz-json-1.1", "x-amz-target": target})
    with urllib.request.urlopen(req, timeout=10) as r:
        return json.load(r)
key_arns = [call("TrentService.CreateKey", {})["KeyMetadata"]["Arn"] for _ in range(keys)]
docs = []
for i in range(n):
    name = f"{prefix}{i:04d}"
    call("KinesisAnalytics_20180523.CreateApplication", {"ApplicationName": name,
        "RuntimeEnvironment": "FLINK-1_20",
        "ServiceExecutionRole": "arn:aws:iam::123456789012:role/flink-app"})
    if half and i % 2 == 0:
        call("KinesisAnalytics_20180523.StartApplication", {"ApplicationName": name})
    docs.append(f"""apiVersion: msfcmk.dev/v1alpha1
kind: ApplicationEncryption
metadata:
  name: {name}
  namespace: default
spec:
  applicationName: {name}
  keyType: CustomerManagedKey
  keyId: {key_arns[i % keys]}
""")
open(out, "w").write("---\n".join(docs))
PY
}
emulator_up "$WORK"
ENDPOINT=$EMU_ENDPOINT

export AWS_ACCESS_KEY_ID=bench AWS_SECRET_ACCESS_KEY=bench AWS_REGION=us-east-1 AWS_EC2_METADATA_DISABLED=true
CTRL=
start_controller() { # <log file>
  # shellcheck disable=SC2086 # RUN_ARGS is a list of flags
  "$BIN" run --aws-endpoint-url "$ENDPOINT" --region us-east-1 --operator-role-arn "$ROLE" \
    --metrics-addr 127.0.0.1:0 --resync-period "$RESYNC" $RUN_ARGS >"$1" 2>&1 &
  CTRL=$!
  PIDS+=("$CTRL")
}
stop_controller() {
  kill "$CTRL"
  for _ in $(seq 1 100); do kill -0 "$CTRL" 2>/dev/null || return 0; sleep 0.1; done
  kill -9 "$CTRL" 2>/dev/null || true
}

# CPU seconds (user+sys) and RSS of the controller, from /proc.
cpu_secs() { awk -v hz="$(getconf CLK_TCK)" '{printf "%.2f", ($14+$15)/hz}' "/proc/$CTRL/stat"; }
rss_mib() { awk '/^VmRSS/ {printf "%.1f", $2/1024}' "/proc/$CTRL/status"; }
hwm_mib() { awk '/^VmHWM/ {printf "%.1f", $2/1024}' "/proc/$CTRL/status"; }
ready_count() { # from Kubernetes: every resource's Ready condition
  "$KUBECTL_BIN" get appenc -n default -o jsonpath='{range .items[*]}{.status.conditions[?(@.type=="Ready")].status}{"\n"}{end}' 2>/dev/null | grep -c '^True$' || true
}
metrics_addr() { # <log file>: the address `run` logs it serves /metrics on
  sed 's/\x1b\[[0-9;]*m//g' "$1" | sed -n 's/.*serving \/metrics.*addr=\([0-9.:]*\).*/\1/p' | head -1
}
ready_metric() { # <address>: Ready=True resources as the controller counts them
  curl -fsS "http://$1/metrics" 2>/dev/null | awk '/^msf_cmk_resources\{ready="True"\}/ {print $2; f=1} END {if (!f) print 0}'
}
counts() {
  curl -fsS "$ENDPOINT/_emulator/counts" | python3 -c 'import json,sys; c=json.load(sys.stdin)["calls"]; print(", ".join(f"{k}={v}" for k,v in sorted(c.items()) if k not in ("CreateApplication","CreateKey","StartApplication")))'
}
py() { python3 -c "print($1)"; }
# Where the memory is: anonymous (heap) against file-backed (the binary's pages) RSS, and threads.
mem_detail() {
  awk '/^(RssAnon|RssFile|Threads)/ {printf "%s %s%s  ", $1, ($1=="Threads:" ? $2 : sprintf("%.1f", $2/1024)), ($1=="Threads:" ? "" : " MiB")}' "/proc/$CTRL/status"
}
LOAD=("start $(cut -d' ' -f1-3 /proc/loadavg)")

# 1. Idle: no resources.
start_controller "$WORK/idle.log"
sleep 3
kill -0 "$CTRL" || { cat "$WORK/idle.log" >&2; exit 1; }
c0=$(cpu_secs); sleep "$IDLE_SECS"; c1=$(cpu_secs)
IDLE_RSS=$(rss_mib)
IDLE_HWM=$(hwm_mib)
IDLE_MEM=$(mem_detail)
IDLE_CPU=$(py "f'{($c1-$c0)/$IDLE_SECS*1000:.1f}'")
stop_controller

# 1b. `apply` beside (APPLY_BESIDE=1): the same set-up on a fresh emulator of its own, converged
# by `apply` with its default flags, right before `run`'s cold start: the "within 1.5x of
# apply's" comparison of issue 10 in one run, on the same machine load.
APPLY_LINE=
if [ "${APPLY_BESIDE:-0}" = 1 ]; then
  emulator_up "$WORK/apply"
  a0=$(date +%s.%N)
  "$BIN" apply -f "$WORK/apply/manifests.yaml" --region us-east-1 --operator-role-arn "$ROLE" \
    --aws-endpoint-url "$EMU_ENDPOINT" --output json >"$WORK/apply/out.json" 2>"$WORK/apply/err.txt" \
    || { echo "apply failed:" >&2; tail -5 "$WORK/apply/err.txt" >&2; exit 1; }
  a1=$(date +%s.%N)
  APPLY_WALL=$(py "f'{$a1-$a0:.1f}'")
  kill "${PIDS[-1]}" 2>/dev/null || true
  APPLY_LINE="apply (defaults) on the same set-up, just before: ${APPLY_WALL}s"
fi

# 2. Cold start: the resources exist before the controller starts.
"$KUBECTL_BIN" apply -f "$WORK/manifests.yaml" >/dev/null
curl -fsS -X DELETE "$ENDPOINT/_emulator/counts" >/dev/null
start=$(date +%s.%N)
start_controller "$WORK/controller.log"
cstart=0
deadline=$((SECONDS + CONVERGE_TIMEOUT_SECS))
addr=
last_print=0
while :; do
  [ -n "$addr" ] || addr=$(metrics_addr "$WORK/controller.log")
  ready=0
  [ -z "$addr" ] || ready=$(ready_metric "$addr")
  # Progress on stderr, so that an interrupted run still tells how far it got.
  if [ "$ready" -ge "$N" ] || [ $((SECONDS - last_print)) -ge 10 ]; then
    last_print=$SECONDS
    echo "  t=$(py "f'{$(date +%s.%N)-$start:.0f}'")s Ready $ready/$N RSS $(rss_mib) MiB peak $(hwm_mib) MiB $(mem_detail)" >&2
  fi
  [ "$ready" -lt "$N" ] || break
  [ $SECONDS -lt $deadline ] || { echo "not converged after ${CONVERGE_TIMEOUT_SECS}s: $(ready_count)/$N Ready" >&2; tail -20 "$WORK/controller.log" >&2; exit 1; }
  kill -0 "$CTRL" || { tail -20 "$WORK/controller.log" >&2; exit 1; }
  sleep "$POLL_SECS"
done
end=$(date +%s.%N); cend=$(cpu_secs)
KUBE_READY=$(ready_count)
[ "$KUBE_READY" -eq "$N" ] || echo "warning: the controller counts $N Ready, Kubernetes $KUBE_READY" >&2
CONVERGE_WALL=$(py "f'{$end-$start:.1f}'")
CONVERGE_CPU=$(py "f'{$cend-$cstart:.1f}'")
PEAK=$(hwm_mib)
CONVERGE_MEM=$(mem_detail)
CONVERGE_COUNTS=$(counts)
LOAD+=("converged $(cut -d' ' -f1-3 /proc/loadavg)")
# The controller's own account of its start (issue 10: cache synced -> first reconcile).
STARTUP=$(sed 's/\x1b\[[0-9;]*m//g' "$WORK/controller.log" | grep -oiE '(caches? synced|first reconcile).*' | head -5 || true)

# 3. Steady state.
curl -fsS -X DELETE "$ENDPOINT/_emulator/counts" >/dev/null
c0=$(cpu_secs); sleep "$STEADY_SECS"; c1=$(cpu_secs)
STEADY_RSS=$(rss_mib)
STEADY_CPU=$(py "f'{($c1-$c0)/$STEADY_SECS*1000:.1f}'")
STEADY_PEAK=$(hwm_mib)
STEADY_MEM=$(mem_detail)
LOAD+=("end $(cut -d' ' -f1-3 /proc/loadavg)")

echo "binary: $BIN (emulator: $EMULATOR_BIN)"
echo "resources: $N on $KEYS keys, names ${NAME_PREFIX}NNNN, latency ${LATENCY_MS} ms per call, half RUNNING: $HALF_RUNNING, resync ${RESYNC}, run flags: ${RUN_ARGS:-(defaults)}"
echo "idle (0 resources): RSS ${IDLE_RSS} MiB (peak ${IDLE_HWM} MiB), CPU ${IDLE_CPU} millicores (over ${IDLE_SECS}s)"
echo "cold start with $N: converged in ${CONVERGE_WALL}s from the controller's start (polled every ${POLL_SECS}s; Kubernetes says $KUBE_READY/$N Ready), CPU ${CONVERGE_CPU}s, peak RSS ${PEAK} MiB"
echo "cold start AWS calls: $CONVERGE_COUNTS"
echo "steady ($N converged): RSS ${STEADY_RSS} MiB (peak so far ${STEADY_PEAK} MiB), CPU ${STEADY_CPU} millicores (over ${STEADY_SECS}s), AWS calls: $(counts)"
if [ -n "$APPLY_LINE" ]; then
  echo "$APPLY_LINE; run/apply = $(py "f'{$CONVERGE_WALL/$APPLY_WALL:.2f}'")x"
fi
echo "memory idle: $IDLE_MEM"
echo "memory at convergence: $CONVERGE_MEM"
echo "memory in steady state: $STEADY_MEM"
echo "load average (1/5/15 min): $(IFS=';'; echo "${LOAD[*]}")"
echo "binary version: $("$BIN" --version 2>/dev/null || echo unknown)"
echo "start-up log lines:"
echo "${STARTUP:-  (none matched)}" | sed 's/^/  /'
