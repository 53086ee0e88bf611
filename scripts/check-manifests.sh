#!/usr/bin/env bash
# Renders every kustomization under manifests/, validates the output against the Kubernetes OpenAPI schemas,
# scans it with checkov (skips are justified in checkov.io/skipN annotations beside the resources), and lints
# both Dockerfiles with hadolint. The Python tools live in .ci/.venv (scripts/python-venv.sh).
set -euo pipefail
cd "$(dirname "$0")/.."

venv=$(scripts/python-venv.sh manifests)
command -v kubectl >/dev/null || { echo "kubectl is needed to render the kustomizations (kubectl kustomize)" >&2; exit 1; }

out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
rendered=()
while IFS= read -r kustomization; do
  dir=$(dirname "$kustomization")
  file="$out/$(echo "$dir" | tr / -).yaml"
  kubectl kustomize "$dir" > "$file"
  rendered+=("$file")
  # The oldest Kubernetes minor AKS still supports, and the version the admission fixtures come from.
  for version in 1.31 1.36; do
    "$venv/bin/kubernetes-validate" --strict --quiet -k "$version" "$file"
  done
  echo "   $dir: $(grep -c "^kind:" "$file") objects rendered, valid for Kubernetes 1.31 and 1.36 (custom resources: no schema, warned)"
done < <(find manifests -name kustomization.yaml | sort)

"$venv/bin/checkov" --framework kubernetes --quiet --compact --skip-download \
  $(printf -- '-f %s ' "${rendered[@]}")
echo "   checkov: no failed check"

"$venv/bin/hadolint" Dockerfile.webhook Dockerfile.sidecar Dockerfile.controller
echo "   hadolint: Dockerfile.webhook, Dockerfile.sidecar and Dockerfile.controller clean"
