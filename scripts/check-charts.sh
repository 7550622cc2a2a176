#!/usr/bin/env bash
# Checks charts/ offline (no cluster runs here): the PrometheusRule is generated from the rules
# the pack tests; the kustomize base and each overlay render (`kubectl kustomize`); the output
# passes `kubernetes-validate --strict` (Kubernetes' own schemas; the Prometheus Operator's
# ServiceMonitor and PrometheusRule have none offline and are only warned about) and yamllint;
# the rules inside the rendered PrometheusRule pass `promtool check rules`.
#
#   scripts/check-charts.sh
#
# Installs kubernetes-validate and yamllint from PyPI when missing. Without kubectl (which
# renders kustomize) it says SKIPPED and exits 0: nothing else here renders the overlays.
set -euo pipefail
cd "$(dirname "$0")/.."

step() { printf '\n--> %s\n' "$*"; }
fail() { echo "check-charts.sh: FAILED: $*" >&2; exit 1; }

step "the PrometheusRule is up to date with dashboards/rules"
python3 charts/prometheus-rule.py --check || fail "run charts/prometheus-rule.py"

if ! command -v kubectl >/dev/null 2>&1; then
  echo "SKIPPED: kubectl is not installed, so the kustomizations were not rendered or validated"
  exit 0
fi
if ! command -v kubernetes-validate >/dev/null 2>&1 || ! command -v yamllint >/dev/null 2>&1; then
  step "installing kubernetes-validate and yamllint (PyPI)"
  python3 -m pip install --quiet --disable-pip-version-check kubernetes-validate yamllint
fi

scratch=$(mktemp -d "${TMPDIR:-/tmp}/meshkit-charts.XXXXXX")
trap 'rm -rf "$scratch"' EXIT
# Long lines are allowed (embedded configs, rule expressions), and sequences indented or not
# (kubectl writes them flush); the rest is yamllint's default.
lint_config='{extends: default, rules: {line-length: disable, document-start: disable, indentation: {indent-sequences: whatever}, comments: {min-spaces-from-content: 1}}}'

for dir in charts/kustomize/base charts/kustomize/overlays/*; do
  name=${dir#charts/kustomize/}
  out="$scratch/${name//\//-}.yaml"
  step "$name: render, validate, lint"
  timeout 60 kubectl kustomize "$dir" >"$out" || fail "kubectl kustomize $dir"
  echo "$(grep -c '^kind:' "$out") objects: $(grep '^kind:' "$out" | sort | uniq -c | awk '{ printf "%s %s, ", $1, $3 }')"
  kubernetes-validate --strict --quiet "$out" || fail "kubernetes-validate --strict on $dir"
  yamllint -d "$lint_config" "$out" || fail "yamllint on the output of $dir"
  python3 - "$out" "$scratch/rules-${name//\//-}.yml" <<'PY' || fail "no PrometheusRule in $dir"
import sys, yaml
docs = [d for d in yaml.safe_load_all(open(sys.argv[1])) if d and d.get("kind") == "PrometheusRule"]
assert len(docs) == 1, f"{len(docs)} PrometheusRules"
yaml.safe_dump(docs[0]["spec"], open(sys.argv[2], "w"))
PY
  if command -v promtool >/dev/null 2>&1; then
    promtool check rules "$scratch/rules-${name//\//-}.yml" | tail -n1
  else
    echo "SKIPPED: promtool is not installed; the PrometheusRule's rules were not checked"
  fi
done
step "the sources lint"
yamllint -d "$lint_config" charts/kustomize || fail "yamllint charts/kustomize"
echo
echo "charts: every kustomization renders and validates"
