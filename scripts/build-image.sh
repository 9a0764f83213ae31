#!/usr/bin/env bash
# `make image`: the controller image for linux/amd64 and linux/arm64 with docker buildx, with
# the OCI labels filled in. Builds what this machine can and says plainly what it skipped:
#   - no docker CLI or no reachable engine: nothing is built (exit 1);
#   - docker without buildx: the host platform only, with `docker build`;
#   - a buildx builder without one of the platforms (no QEMU/binfmt for the other
#     architecture): the platforms it has.
# Without PUSH=1 each platform is loaded into the local engine as IMAGE:TAG-<arch> (the docker
# driver cannot load a multi-platform image) and its size is printed; with PUSH=1 one
# multi-platform IMAGE:TAG is pushed (IMAGE must then name your registry).
#
#   make image [IMAGE=registry/msf-cmk-controller] [TAG=0.1.0] [PLATFORMS=linux/amd64,linux/arm64] [PUSH=1]
set -euo pipefail
cd "$(dirname "$0")/.."

image=${IMAGE:-msf-cmk-controller}
version=$(sed -n 's/^version = "\(.*\)"$/\1/p' Cargo.toml | head -n1)
tag=${TAG:-$version}
platforms=${PLATFORMS:-linux/amd64,linux/arm64}
revision=$(git rev-parse --short HEAD 2>/dev/null || echo unknown)
source=$(git remote get-url origin 2>/dev/null || echo unknown)
labels=(--build-arg "MSF_CMK_GIT_REVISION=$revision" --build-arg "MSF_CMK_VERSION=$version"
  --build-arg "MSF_CMK_SOURCE=$source")

skip() { echo "make image: SKIPPED $*" >&2; }

if ! command -v docker >/dev/null 2>&1; then
  skip "everything: docker is not installed (scripts/build-release.sh builds the same binary without it)"
  exit 1
fi
if ! docker info >/dev/null 2>&1; then
  skip "everything: no Docker engine answers (docker info failed); start one or set DOCKER_HOST"
  exit 1
fi

size() { docker image inspect --format '{{.Size}}' "$1" | awk -v i="$1" '{printf "%s: %.1f MB\n", i, $1/1e6}'; }

if ! docker buildx version >/dev/null 2>&1; then
  host=$(docker version --format '{{.Server.Os}}/{{.Server.Arch}}')
  skip "every platform but $host: docker buildx is not installed"
  docker build "${labels[@]}" -t "$image:$tag" .
  size "$image:$tag"
  exit 0
fi

# The platforms the current builder can run (native or through QEMU).
have=$(docker buildx inspect --bootstrap | sed -n 's/^Platforms: *//p' | tr -d ' ' | tr ',' '\n')
build=()
for p in ${platforms//,/ }; do
  if grep -qx "$p" <<<"$have"; then build+=("$p"); else skip "$p: the buildx builder does not offer it (docker run --privileged --rm tonistiigi/binfmt --install all)"; fi
done
if [ ${#build[@]} -eq 0 ]; then
  skip "everything: none of $platforms is available to the builder"
  exit 1
fi

if [ "${PUSH:-0}" = 1 ]; then
  list=$(IFS=,; echo "${build[*]}")
  docker buildx build --platform "$list" "${labels[@]}" -t "$image:$tag" --push .
  echo "pushed $image:$tag for $list" >&2
  exit 0
fi
for p in "${build[@]}"; do
  arch=${p#linux/}
  docker buildx build --platform "$p" "${labels[@]}" -t "$image:$tag-${arch//\//-}" --load .
  size "$image:$tag-${arch//\//-}"
done
