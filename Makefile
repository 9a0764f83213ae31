# The few commands a newcomer needs (mirrored in the README).
.PHONY: demo test crd fmt lint e2e-up e2e-down bench

demo:          ## the whole flow against the embedded emulator
	cargo run -- demo

test:          ## every test, as CI runs it
	scripts/test.sh

crd:           ## regenerate the committed CRD
	cargo run -q -- crd > crds/applicationencryptions.msfcmk.dev.yaml

fmt:
	cargo fmt --all

lint:
	cargo clippy --all-targets --locked -- -D warnings

e2e-up:        ## a real kube-apiserver + etcd on 127.0.0.1 for manual use
	tests/e2e/cluster up

e2e-down:
	tests/e2e/cluster down

bench:
	cargo bench
