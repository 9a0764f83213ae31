# The few commands a newcomer needs (mirrored in the README). `make` alone lists them.
.DEFAULT_GOAL := help
.PHONY: help demo test crd fmt lint e2e-up e2e-down bench image soak

help:          ## list the targets
	@grep -E '^[a-z0-9-]+:.*## ' $(MAKEFILE_LIST) | sed -E 's/:[^#]*## /\t/' | expand -t 16

demo:          ## the whole flow against the embedded emulator
	cargo run -- demo

test:          ## every test, as CI runs it
	scripts/test.sh

crd:           ## regenerate the committed CRD
	cargo run -q -- crd > crds/applicationencryptions.msfcmk.dev.yaml

fmt:           ## format the code
	cargo fmt --all

lint:          ## clippy with warnings as errors
	cargo clippy --all-targets --locked -- -D warnings

e2e-up:        ## a real kube-apiserver + etcd on 127.0.0.1 for manual use
	tests/e2e/cluster up

e2e-down:      ## stop it
	tests/e2e/cluster down

bench:         ## the benchmarks (BENCHMARKS.md)
	cargo bench

soak:          ## the long chaos soak: 1,000 resources in 3 accounts, 30 minutes (BENCHMARKS.md)
	eval "$$(tests/e2e/setup.sh)" && SOAK_RESOURCES=$${SOAK_RESOURCES:-1000} \
	  SOAK_SECONDS=$${SOAK_SECONDS:-1800} SOAK_APISERVER_RESTARTS=$${SOAK_APISERVER_RESTARTS:-2} \
	  cargo test --test soak -- --nocapture

image:         ## container image, amd64 + arm64 (docker buildx; says what it skips)
	scripts/build-image.sh
