#!/usr/bin/env bash
# Renders every kustomization under manifests/ and the Helm chart, validates the output against the Kubernetes
# OpenAPI schemas, checks that the chart's defaults are manifests/base, scans the kustomizations with checkov (skips are justified in checkov.io/skipN annotations beside the resources), and lints
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

# The Helm chart: lint, render with the default and with a full non-default values file, validate both, and compare
# the default rendering with manifests/base (scripts/compare-chart.py). checkov runs on the base only: the chart's
# default objects are the base's (compared), and its checks would only repeat.
if ! command -v helm >/dev/null && [ -f ../shared/helm/setup.sh ]; then
  PATH="$(bash ../shared/helm/setup.sh):$PATH"
fi
if command -v helm >/dev/null; then
  chart=charts/workload-identity-rs
  helm lint --strict --quiet "$chart" >/dev/null
  for values in default "$chart"/ci/*-values.yaml; do
    file="$out/chart-$(basename "$values" .yaml).yaml"
    if [ "$values" = default ]; then
      helm template workload-identity-rs "$chart" -n wi-system > "$file"
    else
      helm template workload-identity-rs "$chart" -n wi-system -f "$values" > "$file"
    fi
    for version in 1.31 1.36; do
      "$venv/bin/kubernetes-validate" --strict --quiet -k "$version" "$file"
    done
    echo "   $chart ($values values): linted, $(grep -c "^kind:" "$file") objects rendered, valid for Kubernetes 1.31 and 1.36"
  done
  "$venv/bin/python" scripts/compare-chart.py "$out/manifests-base.yaml" "$out/chart-default.yaml"
  if helm template x "$chart" --set webhook.replicas=abc >/dev/null 2>"$out/schema.txt" \
      || ! grep -q "/webhook/replicas': got string, want integer" "$out/schema.txt"; then
    echo "error: the chart's values.schema.json accepted webhook.replicas=abc" >&2; cat "$out/schema.txt" >&2; exit 1
  fi
  echo "   values.schema.json refuses webhook.replicas=abc: $(grep replicas "$out/schema.txt" | tr -s ' ')"
elif [ "${CI:-}" = true ]; then
  echo "error: CI=true and helm is not installed (../shared/helm/setup.sh): the chart must be checked" >&2
  exit 1
else
  echo "   helm not found: the chart is not checked (export PATH=\"\$(../shared/helm/setup.sh):\$PATH\")"
fi

"$venv/bin/checkov" --framework kubernetes --quiet --compact --skip-download \
  $(printf -- '-f %s ' "${rendered[@]}")
echo "   checkov: no failed check"

"$venv/bin/hadolint" Dockerfile.webhook Dockerfile.sidecar Dockerfile.controller
echo "   hadolint: Dockerfile.webhook, Dockerfile.sidecar and Dockerfile.controller clean"
