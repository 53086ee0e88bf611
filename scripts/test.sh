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
if [ -x "${KUBEBUILDER_ASSETS:-/nonexistent}/kube-apiserver" ] && [ -x "${KUBEBUILDER_ASSETS}/etcd" ]; then
  echo "   envtest: runs against ${KUBEBUILDER_ASSETS}/kube-apiserver and etcd"
else
  echo "   envtest: skipped, KUBEBUILDER_ASSETS does not name a folder with kube-apiserver and etcd"
fi
# Snapshots are compared, never rewritten, here: review changes with INSTA_UPDATE=always locally.
INSTA_UPDATE=no cargo test --workspace --locked
echo "== the emulator against Microsoft's Python SDK (azure-identity, azure-keyvault-secrets)"
# cargo test built target/debug/wi-emulator for wi-testbed's integration tests; a separate `cargo build` would
# rebuild half the tree with another feature set.
[ -x target/debug/wi-emulator ] || cargo build --quiet --locked -p wi-testbed --bin wi-emulator
venv=$(scripts/python-venv.sh azure-sdk)
WI_EMULATOR=target/debug/wi-emulator "$venv/bin/pytest" tests/python -q -p no:cacheprovider
