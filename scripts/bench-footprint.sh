#!/usr/bin/env bash
# Controller footprint on a real kube-apiserver: RSS and CPU of `msf-cmk-controller run`
# idle (no resources), while converging N ApplicationEncryption resources, and in steady state.
# The AWS side is the embedded emulator (standalone) holding N applications on 25 shared keys.
#
#   scripts/bench-footprint.sh            # N=1000, release binary if built, else debug
#   N=200 BIN=target/debug/msf-cmk-controller scripts/bench-footprint.sh
#
# Everything listens on 127.0.0.1 and is stopped by PID on exit. Figures go to stdout;
# BENCHMARKS.md ("Controller footprint") records a run.
set -euo pipefail
cd "$(dirname "$0")/.."

N=${N:-1000}
# 25 keys: 40 applications each, under the ~45 that fit in one 32 KB key policy.
KEYS=${KEYS:-25}
IDLE_SECS=${IDLE_SECS:-20}
STEADY_SECS=${STEADY_SECS:-60}
CONVERGE_TIMEOUT_SECS=${CONVERGE_TIMEOUT_SECS:-900}
if [ -z "${BIN:-}" ]; then
  if [ -x target/release/msf-cmk-controller ]; then BIN=target/release/msf-cmk-controller; else
    cargo build -q --bin msf-cmk-controller
    BIN=target/debug/msf-cmk-controller
  fi
fi
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

# The AWS side.
"$BIN" emulator --port 0 --update-delay-ms 200 \
  --caller-arn arn:aws:iam::123456789012:role/msf-cmk-controller >"$WORK/emulator.out" 2>"$WORK/emulator.err" &
PIDS+=($!)
for _ in $(seq 1 100); do grep -q '^endpoint: ' "$WORK/emulator.out" && break; sleep 0.1; done
ENDPOINT=$(sed -n 's/^endpoint: //p' "$WORK/emulator.out")
[ -n "$ENDPOINT" ] || { echo "emulator did not start" >&2; exit 1; }

# N applications and KEYS keys (default key policy: none of MSF's statements), and the manifests.
python3 - "$ENDPOINT" "$N" "$KEYS" "$WORK/manifests.yaml" <<'PY'
import json, sys, urllib.request
endpoint, n, keys, out = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
def call(target, body):
    req = urllib.request.Request(endpoint + "/", data=json.dumps(body).encode(), method="POST",
        headers={"content-type": "application/x-amz-json-1.1", "x-amz-target": target})
    with urllib.request.urlopen(req, timeout=10) as r:
        return json.load(r)
key_arns = [call("TrentService.CreateKey", {})["KeyMetadata"]["Arn"] for _ in range(keys)]
docs = []
for i in range(n):
    name = f"footprint-app-{i:04d}"
    call("KinesisAnalytics_20180523.CreateApplication", {"ApplicationName": name,
        "RuntimeEnvironment": "FLINK-1_20",
        "ServiceExecutionRole": "arn:aws:iam::123456789012:role/flink-app"})
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

export AWS_ACCESS_KEY_ID=bench AWS_SECRET_ACCESS_KEY=bench AWS_REGION=us-east-1 AWS_EC2_METADATA_DISABLED=true
"$BIN" run --aws-endpoint-url "$ENDPOINT" --region us-east-1 \
  --operator-role-arn arn:aws:iam::123456789012:role/msf-cmk-controller \
  --metrics-addr 127.0.0.1:0 --resync-period 5m >"$WORK/controller.log" 2>&1 &
CTRL=$!
PIDS+=("$CTRL")

# CPU seconds (user+sys) and RSS of the controller, from /proc.
cpu_secs() { awk -v hz="$(getconf CLK_TCK)" '{printf "%.2f", ($14+$15)/hz}' "/proc/$CTRL/stat"; }
rss_mib() { awk '/^VmRSS/ {printf "%.1f", $2/1024}' "/proc/$CTRL/status"; }
hwm_mib() { awk '/^VmHWM/ {printf "%.1f", $2/1024}' "/proc/$CTRL/status"; }
ready_count() {
  "$KUBECTL_BIN" get appenc -n default -o jsonpath='{range .items[*]}{.status.conditions[?(@.type=="Ready")].status}{"\n"}{end}' 2>/dev/null | grep -c '^True$' || true
}

sleep 3
kill -0 "$CTRL" || { cat "$WORK/controller.log" >&2; exit 1; }
c0=$(cpu_secs); sleep "$IDLE_SECS"; c1=$(cpu_secs)
IDLE_RSS=$(rss_mib)
IDLE_CPU=$(python3 -c "print(f'{($c1-$c0)/$IDLE_SECS*1000:.1f}')")

start=$(date +%s.%N); cstart=$(cpu_secs)
"$KUBECTL_BIN" apply -f "$WORK/manifests.yaml" >/dev/null
deadline=$((SECONDS + CONVERGE_TIMEOUT_SECS))
while [ "$(ready_count)" -lt "$N" ]; do
  [ $SECONDS -lt $deadline ] || { echo "not converged after ${CONVERGE_TIMEOUT_SECS}s: $(ready_count)/$N Ready" >&2; tail -20 "$WORK/controller.log" >&2; exit 1; }
  kill -0 "$CTRL" || { tail -20 "$WORK/controller.log" >&2; exit 1; }
  sleep 2
done
end=$(date +%s.%N); cend=$(cpu_secs)
CONVERGE_WALL=$(python3 -c "print(f'{$end-$start:.1f}')")
CONVERGE_CPU=$(python3 -c "print(f'{$cend-$cstart:.1f}')")
PEAK=$(hwm_mib)

c0=$(cpu_secs); sleep "$STEADY_SECS"; c1=$(cpu_secs)
STEADY_RSS=$(rss_mib)
STEADY_CPU=$(python3 -c "print(f'{($c1-$c0)/$STEADY_SECS*1000:.1f}')")
COUNTS=$(curl -fsS "$ENDPOINT/_emulator/counts" | python3 -c 'import json,sys; c=json.load(sys.stdin)["calls"]; print(", ".join(f"{k}={v}" for k,v in sorted(c.items()) if k not in ("CreateApplication","CreateKey")))')

echo "binary: $BIN"
echo "resources: $N on $KEYS keys"
echo "idle (0 resources): RSS ${IDLE_RSS} MiB, CPU ${IDLE_CPU} millicores (over ${IDLE_SECS}s)"
echo "converge $N: wall ${CONVERGE_WALL}s, CPU ${CONVERGE_CPU}s, peak RSS ${PEAK} MiB"
echo "steady ($N converged): RSS ${STEADY_RSS} MiB, CPU ${STEADY_CPU} millicores (over ${STEADY_SECS}s)"
echo "AWS calls: $COUNTS"
