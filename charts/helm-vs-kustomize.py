#!/usr/bin/env python3
"""Compares the Helm chart's output with the kustomize output for the same topology, so the two
ways of deploying MeshKit cannot drift apart unnoticed.

    charts/helm-vs-kustomize.py HELM.yaml KUSTOMIZE.yaml

Both files are rendered manifests (`helm template`, `kubectl kustomize`). They must hold the same
objects (by kind and name; kustomize's ConfigMap hash suffix aside, and a StatefulSet scaled to
0 may be left out by the chart along with its ConfigMap), and agree on what decides how the mesh
runs:
- every config file in the ConfigMaps, compared as parsed TOML (so comments and layout may
  differ, values may not);
- each StatefulSet's replicas, service name, container args, ports and volume claims; each
  Deployment's args and ports;
- the Services' and NetworkPolicies' ports, the ServiceMonitors' endpoints, the PrometheusRule's
  rules;
- selectors: the chart's select at least what the kustomization's do (the chart adds the
  release's `app.kubernetes.io/instance`).
Exits 1 naming each difference.
"""
import re
import sys
import tomllib

import yaml


def load(path):
    objects = {}
    with open(path) as f:
        for doc in yaml.safe_load_all(f):
            if not doc:
                continue
            name = doc["metadata"]["name"]
            if doc["kind"] == "ConfigMap":
                # kustomize's configMapGenerator appends a content hash: meshkit-voter-5h2c8k9tbd.
                name = re.sub(r"-[a-z0-9]{10}$", "", name)
            objects[(doc["kind"], name)] = doc
    return objects


def parse_config(text):
    """A config file as meshkitd reads it: `{id}` and `{hostname}` filled first (--id-from-hostname),
    as one pod would, then TOML."""
    return tomllib.loads(text.replace("{id}", "1").replace("{hostname}", "pod-0"))


def containers(obj):
    return obj["spec"]["template"]["spec"]["containers"]


def selector_covers(chart, kustomize):
    """The chart's selector holds every label the kustomization's does, with the same value."""
    return all(chart.get(k) == v for k, v in kustomize.items())


def compare(chart, kust):
    problems = []

    def differ(what, a, b):
        # Dicts are compared key by key, so a difference names its path, not two whole files.
        if isinstance(a, dict) and isinstance(b, dict):
            for key in sorted(set(a) | set(b)):
                differ(f"{what}.{key}", a.get(key), b.get(key))
        elif a != b:
            problems.append(f"{what}: chart {a!r}, kustomize {b!r}")

    scaled_out = {
        name
        for (kind, name), obj in kust.items()
        if kind == "StatefulSet" and obj["spec"].get("replicas") == 0
    }
    for key in sorted(set(kust) - set(chart)):
        kind, name = key
        if name in scaled_out or (kind == "ConfigMap" and name in scaled_out):
            continue
        problems.append(f"{kind}/{name}: in the kustomize output only")
    for key in sorted(set(chart) - set(kust)):
        problems.append(f"{key[0]}/{key[1]}: in the chart's output only")

    for key in sorted(set(chart) & set(kust)):
        kind, name = key
        a, b = chart[key], kust[key]
        what = f"{kind}/{name}"
        if kind == "ConfigMap":
            differ(f"{what} keys", sorted(a["data"]), sorted(b["data"]))
            for file in sorted(set(a["data"]) & set(b["data"])):
                differ(f"{what} {file}", parse_config(a["data"][file]), parse_config(b["data"][file]))
        elif kind in ("StatefulSet", "Deployment"):
            differ(f"{what} replicas", a["spec"].get("replicas", 1), b["spec"].get("replicas", 1))
            if not selector_covers(a["spec"]["selector"]["matchLabels"], b["spec"]["selector"]["matchLabels"]):
                problems.append(f"{what} selector: chart {a['spec']['selector']} does not cover {b['spec']['selector']}")
            for ca, cb in zip(containers(a), containers(b)):
                # `--id-from-hostname` and `--id-from-hostname=1` say the same (1 is the default).
                args = [x.replace("--id-from-hostname=1", "--id-from-hostname") for x in ca.get("args", [])]
                differ(f"{what} {ca['name']} args", args, cb.get("args", []))
                differ(f"{what} {ca['name']} ports", ca.get("ports"), cb.get("ports"))
                differ(f"{what} {ca['name']} mounts", ca.get("volumeMounts"), cb.get("volumeMounts"))
            if kind == "StatefulSet":
                differ(f"{what} serviceName", a["spec"]["serviceName"], b["spec"]["serviceName"])
                claims = lambda o: [
                    (c["metadata"]["name"], c["spec"]["resources"]) for c in o["spec"].get("volumeClaimTemplates", [])
                ]
                differ(f"{what} volume claims", claims(a), claims(b))
        elif kind == "Service":
            differ(f"{what} ports", a["spec"]["ports"], b["spec"]["ports"])
            differ(f"{what} clusterIP", a["spec"].get("clusterIP"), b["spec"].get("clusterIP"))
            if not selector_covers(a["spec"]["selector"], b["spec"]["selector"]):
                problems.append(f"{what} selector does not cover the kustomization's")
        elif kind == "NetworkPolicy":
            differ(f"{what} ports", [r["ports"] for r in a["spec"]["ingress"]], [r["ports"] for r in b["spec"]["ingress"]])
        elif kind == "ServiceMonitor":
            differ(f"{what} endpoints", a["spec"]["endpoints"], b["spec"]["endpoints"])
        elif kind == "PrometheusRule":
            differ(f"{what} rules", a["spec"], b["spec"])
    return problems


def main():
    if len(sys.argv) != 3:
        print(__doc__, file=sys.stderr)
        return 2
    chart, kust = load(sys.argv[1]), load(sys.argv[2])
    problems = compare(chart, kust)
    for p in problems:
        print(f"helm-vs-kustomize: {p}", file=sys.stderr)
    if problems:
        return 1
    print(f"the chart's {len(chart)} objects agree with the kustomization's {len(kust)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
