#!/usr/bin/env python3
"""The chart and manifests/base must not drift: `helm template` with default values (release named after the chart,
in the base's namespace) and `kubectl kustomize manifests/base` must give the same objects. Compared semantically:
same kinds, namespaces and names, and everything equal but labels and annotations (the chart adds Helm's labels and a
config checksum). kustomize's generated ConfigMap name suffix is dropped. The Namespace is the base's alone (Helm
installs into one: --create-namespace).

Usage: compare-chart.py BASE.yaml CHART.yaml"""
import difflib
import json
import re
import sys

import yaml

SUFFIXED = re.compile(r"^(wi-webhook-config)-[a-z0-9]{10}$")


def unsuffix(value):
    if isinstance(value, dict):
        return {k: unsuffix(v) for k, v in value.items()}
    if isinstance(value, list):
        return [unsuffix(v) for v in value]
    if isinstance(value, str):
        return SUFFIXED.sub(r"\1", value)
    return value


def strip(obj):
    """Labels and annotations off the object's metadata and its pod template's (selectors stay compared)."""
    template = obj.get("spec", {}).get("template", {}).get("metadata", {}) if isinstance(obj.get("spec"), dict) else {}
    for meta in (obj.get("metadata", {}), template):
        meta.pop("labels", None)
        meta.pop("annotations", None)
    return obj


def load(path):
    objects = {}
    with open(path) as f:
        for doc in yaml.safe_load_all(f):
            if not doc:
                continue
            doc = strip(unsuffix(doc))
            key = (doc["kind"], doc["metadata"].get("namespace", ""), doc["metadata"]["name"])
            if key in objects:
                sys.exit(f"{path}: {key} twice")
            objects[key] = doc
    return objects


def main():
    base, chart = load(sys.argv[1]), load(sys.argv[2])
    base = {k: v for k, v in base.items() if k[0] != "Namespace"}
    problems = []
    for key in sorted(set(base) | set(chart)):
        if key not in chart:
            problems.append(f"{key}: in manifests/base, not in the chart")
        elif key not in base:
            problems.append(f"{key}: in the chart, not in manifests/base")
        elif base[key] != chart[key]:
            a = json.dumps(base[key], indent=1, sort_keys=True).splitlines()
            b = json.dumps(chart[key], indent=1, sort_keys=True).splitlines()
            diff = "\n".join(difflib.unified_diff(a, b, "manifests/base", "chart", lineterm="", n=2))
            problems.append(f"{key} differs:\n{diff}")
    if problems:
        sys.exit("the chart and manifests/base drifted apart:\n" + "\n".join(problems))
    print(f"   chart = manifests/base: {len(chart)} objects equal but for labels and annotations (and the Namespace)")


main()
