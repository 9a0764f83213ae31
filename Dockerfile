# syntax=docker/dockerfile:1
# The controller image: a release build without the embedded AWS emulator, on a distroless
# runtime (glibc + CA certificates, no shell) as a numeric non-root user.
#
#   docker build -t msf-cmk-controller:0.1.0 --build-arg MSF_CMK_GIT_REVISION=$(git rev-parse --short HEAD) .
#
# CI builds the same binary the same way without a Docker engine: scripts/build-release.sh
# stages exactly what this build stage COPYs (after .dockerignore) in an empty directory and
# runs the cargo command below there, so a file missing from the context fails CI too.

ARG RUST_VERSION=1.95

FROM docker.io/library/rust:${RUST_VERSION}-bookworm AS build
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
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked --no-default-features --bin msf-cmk-controller \
 && install -D -m 0755 target/release/msf-cmk-controller /out/msf-cmk-controller

FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=build /out/msf-cmk-controller /usr/local/bin/msf-cmk-controller
# 65532 is distroless' "nonroot"; numeric so that runAsNonRoot can verify it.
USER 65532:65532
EXPOSE 8080
ENTRYPOINT ["/usr/local/bin/msf-cmk-controller"]
CMD ["run"]
