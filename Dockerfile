# syntax=docker/dockerfile:1
# The controller image: a release build without the embedded AWS emulator, on a distroless
# runtime (glibc + CA certificates, no shell) as a numeric non-root user.
#
#   make image                      # amd64 + arm64 with docker buildx, labels filled in
#   docker build -t msf-cmk-controller:0.1.0 --build-arg MSF_CMK_GIT_REVISION=$(git rev-parse --short HEAD) .
#
# CI builds the same binary the same way without a Docker engine: scripts/build-release.sh
# stages exactly what this build stage COPYs (after .dockerignore) in an empty directory and
# runs the cargo command below there, so a file missing from the context fails CI too.

# Base images are pinned by the digest of their multi-arch index (amd64 and arm64 resolve from
# the same pin), so a rebuild starts from the bytes that were reviewed; the tag is for people.
# Neither digest could be pulled where this was written (no registry access there):
# - rust:1.98-bookworm: the index digest published in docker-library/repo-info
#   (repos/rust/remote/1.98-bookworm.md, image built 2026-08-25);
# - distroless cc-debian12:nonroot: the digest several public projects pin for that tag.
# Refresh both (and check them) with `docker buildx imagetools inspect <image>:<tag>`; the
# `Digest:` line is the index digest. Override for one build with --build-arg BUILD_IMAGE=...
ARG BUILD_IMAGE=docker.io/library/rust:1.98-bookworm@sha256:e536cf316987faedfe8ae120f83b70c7df0068fdb4fc9efcce55c71a625001d5
ARG RUNTIME_IMAGE=gcr.io/distroless/cc-debian12:nonroot@sha256:9dac0a79194e45a7da0158a9c6da57b217585af0786db3845d1f0ec1a0dd182f

FROM ${BUILD_IMAGE} AS build
WORKDIR /src
# The context has no .git: pass the revision for `--version` and msfcmk_build_info, e.g.
#   docker build --build-arg MSF_CMK_GIT_REVISION=$(git rev-parse --short HEAD) .
# (build.rs reads it; without it the binary reports `unknown`.)
ARG MSF_CMK_GIT_REVISION=unknown
COPY Cargo.toml Cargo.lock build.rs ./
COPY src ./src
COPY crds ./crds
# Cargo.toml declares the [[bench]] targets: cargo refuses the manifest without their files.
COPY benches ./benches
# One target cache per platform: `make image` builds amd64 and arm64 side by side.
ARG TARGETPLATFORM
RUN --mount=type=cache,target=/usr/local/cargo/registry,sharing=locked \
    --mount=type=cache,target=/src/target,id=msf-cmk-target-${TARGETPLATFORM} \
    cargo build --release --locked --no-default-features --bin msf-cmk-controller \
 && install -D -m 0755 target/release/msf-cmk-controller /out/msf-cmk-controller

FROM ${RUNTIME_IMAGE}
# OCI labels (`make image` passes them; docker build without them says `unknown`).
ARG MSF_CMK_GIT_REVISION=unknown
ARG MSF_CMK_VERSION=unknown
ARG MSF_CMK_SOURCE=unknown
LABEL org.opencontainers.image.title="msf-cmk-controller" \
      org.opencontainers.image.description="Keeps Amazon Managed Service for Apache Flink applications encrypted with customer managed KMS keys" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.version="${MSF_CMK_VERSION}" \
      org.opencontainers.image.revision="${MSF_CMK_GIT_REVISION}" \
      org.opencontainers.image.source="${MSF_CMK_SOURCE}"
COPY --from=build /out/msf-cmk-controller /usr/local/bin/msf-cmk-controller
# 65532 is distroless' "nonroot"; numeric so that runAsNonRoot can verify it.
USER 65532:65532
EXPOSE 8080
ENTRYPOINT ["/usr/local/bin/msf-cmk-controller"]
CMD ["run"]
