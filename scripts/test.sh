#!/usr/bin/env bash
# The test command (README, .ci/run): installs what the tests need, then runs every check.
# Safe to run on a fresh machine with only the Rust toolchain; idempotent elsewhere.
set -euo pipefail
cd "$(dirname "$0")/.."

step() { printf '\n==> %s\n' "$*"; }

# Every build below is made once: incremental caches would only double the target directory
# (CI machines have had little disk to spare).
export CARGO_INCREMENTAL=0

# cargo-nextest runs the suite; install it if this machine lacks it.
if ! cargo nextest --version >/dev/null 2>&1; then
  step "installing cargo-nextest"
  cargo install cargo-nextest --locked
fi
# rustfmt and clippy come with the toolchain's default profile; add them if missing.
if ! cargo fmt --version >/dev/null 2>&1 || ! cargo clippy --version >/dev/null 2>&1; then
  step "installing rustfmt and clippy"
  rustup component add rustfmt clippy
fi

# Tests that need an outside tool are ignored by default (the runner reports them skipped, never
# passed); this script runs them below and fails when a tool is missing. They need root (network
# namespaces, apt-get), Debian's prometheus package (prometheus and promtool), its
# prometheus-alertmanager package (Alertmanager and amtool, for dashboards/alertmanager.yml) and
# python3 (dashboards/tools/dashboards.py, the synthetic check the end-to-end run uses). The
# sample service's walkthrough (samples/jobs/tests/walkthrough.rs) runs its README as written,
# curl lines included, with three real processes and a kill -9 (20 s on a quiet machine, minutes
# on a loaded one): it is here too.
TOOL_TESTS='(package(meshkit-tests) | package(meshkit-cli) | package(meshkit-probe) | package(meshkit-sample-jobs)) & (binary(walkthrough) | binary(promtool) | binary(observability_tools) | binary(observability_e2e) | binary(alert_alertmanager) | binary(probe_agent) | test(=five_daemons_are_scraped_by_prometheus) | test(=client_falls_back_to_h2_when_nftables_drops_udp))'
if [[ "${MESHKIT_SKIP_TOOL_TESTS:-0}" != 1 ]]; then
  if [[ "$(id -u)" -ne 0 ]]; then
    echo "the tests that need outside tools need root (MESHKIT_SKIP_TOOL_TESTS=1 leaves them out, as skipped)" >&2
    exit 1
  fi
  if ! command -v promtool >/dev/null 2>&1 || ! command -v prometheus >/dev/null 2>&1 \
    || ! command -v nft >/dev/null 2>&1 || ! command -v unshare >/dev/null 2>&1 \
    || ! command -v ip >/dev/null 2>&1 || ! command -v amtool >/dev/null 2>&1 \
    || ! command -v prometheus-alertmanager >/dev/null 2>&1 || ! command -v python3 >/dev/null 2>&1 \
    || ! command -v curl >/dev/null 2>&1; then
    step "installing prometheus, promtool, alertmanager, amtool, nftables, iproute2, python3, curl (Debian packages)"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
      prometheus prometheus-alertmanager nftables iproute2 util-linux python3 curl >/dev/null
  fi
fi

step "format"
cargo fmt --all --check
# The fuzz crate is a workspace of its own (fuzz/Cargo.toml says why): checked apart.
cargo fmt --manifest-path fuzz/Cargo.toml --check

step "clippy (all targets, warnings are errors)"
cargo clippy --workspace --all-targets --locked -- -D warnings

step "the core uses no runtime (docs/style.md rule 1)"
if cargo tree -p meshkit -e normal --prefix none | grep -E '^(tokio|quinn|mio|socket2|anyhow) '; then
  echo "meshkit (the sans-IO core) must not depend on a runtime or on anyhow" >&2
  exit 1
fi

step "tests (nextest)"
cargo nextest run --workspace --locked --no-fail-fast

if [[ "${MESHKIT_SKIP_TOOL_TESTS:-0}" != 1 ]]; then
  step "tests that need an outside tool (ignored by default; a missing tool fails them)"
  # --workspace with the packages in the filter, not -p: -p unifies the dependencies'
  # features apart and rebuilds the whole suite (twice the time, and the disk).
  cargo nextest run --workspace --locked --no-fail-fast --run-ignored only -E "$TOOL_TESTS"
else
  echo "SKIPPED (MESHKIT_SKIP_TOOL_TESTS=1): the tests that need prometheus, promtool and nftables"
fi

step "Kubernetes manifests render and validate offline (scripts/check-charts.sh)"
scripts/check-charts.sh

step "every command of the README and docs/ (scripts/check-docs.sh)"
# Runs the hosting walkthrough and the local cluster against real meshkitd in a network
# namespace, the cheap commands as written, and checks the long ones' arguments (about a
# minute here). Needs python3, unshare, nft and curl (no root); MESHKIT_SKIP_DOCS=1 leaves it
# out on purpose.
if [[ "${MESHKIT_SKIP_DOCS:-0}" == 1 ]]; then
  echo "SKIPPED (MESHKIT_SKIP_DOCS=1): the README's and docs' commands were not checked"
else
  scripts/check-docs.sh
fi

step "doc tests"
cargo test --workspace --doc --locked

step "rustdoc (warnings are errors)"
# With meshkit-node's `turmoil` feature, as the test builds have it (tests/Cargo.toml):
# one feature set, so the dependencies checked for clippy are reused, and the turmoil tier is
# documented too.
RUSTDOCFLAGS="-D warnings" cargo doc --workspace --no-deps --locked --quiet --features meshkit-node/turmoil

step "crates ready to publish: metadata, cargo package --workspace --no-verify (scripts/check-packages.sh)"
scripts/check-packages.sh

step "fuzz targets compile, clippy-clean (running them needs nightly: scripts/fuzz.sh, fuzz/README.md)"
# Its own lock file (fuzz/Cargo.lock), which must be up to date like the workspace's.
cargo clippy --manifest-path fuzz/Cargo.toml --locked --all-targets --quiet -- -D warnings

step "scenario catalog replays on the simulator"
# The workspace build's binary (`cargo run -p meshkit-sim` would build it again, alone).
target/debug/meshkit-sim run scenarios/steady.toml --seeds 1..3
target/debug/meshkit-sim run scenarios/crash-one.toml --seed 7 --json

step "static binaries in an image FROM scratch (scripts/static-image.sh)"
# Needs a Docker daemon, which CI has: without one this step fails, unless MESHKIT_SKIP_DOCKER=1
# says on purpose that this run goes without it. The dev profile is the cheaper build (about 4.5
# CPU-minutes here).
if [[ "${MESHKIT_SKIP_DOCKER:-0}" == 1 ]]; then
  echo "SKIPPED (MESHKIT_SKIP_DOCKER=1): the static image was not built or tested"
elif timeout 20 docker info >/dev/null 2>&1; then
  scripts/static-image.sh --profile dev
  step "the compose chaos environment: up 3 nodes, a container killed, down leaves nothing (compose/)"
  # Its Prometheus and Alertmanager images are made from Debian's binaries, installed above
  # with the other outside tools.
  if [[ "${MESHKIT_SKIP_TOOL_TESTS:-0}" == 1 ]]; then
    echo "SKIPPED (MESHKIT_SKIP_TOOL_TESTS=1): the compose environment needs Debian's prometheus packages"
  else
    cargo nextest run --workspace --locked --no-fail-fast --run-ignored only -E 'package(meshkit-tests) & binary(compose_env)' --no-capture
    step "meshkit-chaos runs scenarios/crash-one.toml on a 3-node compose stack, membership-surge-join on 5 nodes with 3 spares and queue-burst-autoscale on 3 nodes (--up --down, one stack at a time, about six minutes)"
    cargo nextest run --workspace --locked --no-fail-fast --run-ignored only -E 'package(meshkit-chaos) & binary(compose_run)' --no-capture
  fi
else
  echo "no Docker daemon reachable (docker info failed); MESHKIT_SKIP_DOCKER=1 leaves the image out" >&2
  exit 1
fi
