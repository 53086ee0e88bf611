#!/usr/bin/env bash
# The project's test command (README): formatting, lints, then every test of the workspace.
# Needs only a Rust toolchain with rustfmt and clippy; .ci/run installs the rest on a fresh machine.
set -euo pipefail
cd "$(dirname "$0")/.."

echo "== cargo fmt --all --check"
cargo fmt --all --check
echo "== cargo clippy --workspace --all-targets -- -D warnings"
cargo clippy --workspace --all-targets --locked -- -D warnings
echo "== manifests and Dockerfiles"
scripts/check-manifests.sh
echo "== cargo test --workspace"
# The tests that need a control plane (webhook/tests/control_plane/) run when KUBEBUILDER_ASSETS names a folder with
# kube-apiserver and etcd, or when CI=true (where a missing one fails); otherwise cargo reports them as ignored, with
# the reason (webhook/build.rs).
if [ -x "${KUBEBUILDER_ASSETS:-/nonexistent}/kube-apiserver" ] && [ -x "${KUBEBUILDER_ASSETS}/etcd" ]; then
  echo "   envtest: the control-plane tests run against ${KUBEBUILDER_ASSETS}"
elif [ "${CI:-}" = true ]; then
  echo "error: CI=true, and KUBEBUILDER_ASSETS (${KUBEBUILDER_ASSETS:-not set}) does not name a folder with" \
       "kube-apiserver and etcd: in CI the control-plane tests must run, not skip" >&2
  exit 1
else
  echo "   envtest: KUBEBUILDER_ASSETS does not name a folder with kube-apiserver and etcd; the control-plane tests" \
       "are reported as ignored (export KUBEBUILDER_ASSETS=\"\$(setup-envtest use -p path 1.36)\" to run them)"
fi
# The process tests (webhook/tests/process, control_plane/install.rs) run wi-webhook as shipped: the release build.
cargo build --release --locked --quiet -p wi-webhook --bin wi-webhook
export WI_WEBHOOK_BINARY="$PWD/target/release/wi-webhook"
# Snapshots are compared, never rewritten, here: review changes with INSTA_UPDATE=always locally.
INSTA_UPDATE=no cargo test --workspace --locked
echo "== the emulator against Microsoft's Python SDK (azure-identity, azure-keyvault-secrets)"
# cargo test built target/debug/wi-emulator for wi-testbed's integration tests; a separate `cargo build` would
# rebuild half the tree with another feature set.
[ -x target/debug/wi-emulator ] || cargo build --quiet --locked -p wi-testbed --bin wi-emulator
venv=$(scripts/python-venv.sh azure-sdk)
WI_EMULATOR=target/debug/wi-emulator "$venv/bin/pytest" tests/python -q -p no:cacheprovider
echo "== fuzzing: each target of fuzz/ for ${FUZZ_SECONDS:-25} s (cargo fuzz; FUZZ_SECONDS=0 skips)"
scripts/fuzz.sh
