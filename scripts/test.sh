#!/usr/bin/env bash
# The test command (README, .ci/run): installs what the tests need, then runs every check.
# Safe to run on a fresh machine with only the Rust toolchain; idempotent elsewhere.
set -euo pipefail
cd "$(dirname "$0")/.."

step() { printf '\n==> %s\n' "$*"; }

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

# promtool (Debian's prometheus package) lints a live node's /metrics in
# backends/node/tests/promtool.rs. Installed only as root; otherwise that test skips and says so.
if ! command -v promtool >/dev/null 2>&1; then
  if [[ "$(id -u)" -eq 0 ]] && command -v apt-get >/dev/null 2>&1; then
    step "installing promtool (Debian's prometheus package)"
    if ! { apt-get update -qq \
      && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends prometheus \
      >/dev/null; }; then
      echo "promtool: apt-get could not install prometheus; the promtool test will SKIP"
    fi
  else
    echo "promtool is missing and installing it needs root with apt-get: the promtool test will SKIP"
  fi
fi
if command -v promtool >/dev/null 2>&1; then
  # promtool is here, so the test must use it: a failed lookup is a failure, not a skip.
  export MESHKIT_REQUIRE_PROMTOOL=1
fi

step "format"
cargo fmt --all --check

step "clippy (all targets, warnings are errors)"
cargo clippy --workspace --all-targets --locked -- -D warnings

step "the core uses no runtime (STYLE.md rule 1)"
if cargo tree -p meshkit -e normal --prefix none | grep -E '^(tokio|quinn|mio|socket2|anyhow) '; then
  echo "meshkit (the sans-IO core) must not depend on a runtime or on anyhow" >&2
  exit 1
fi

step "tests (nextest)"
cargo nextest run --workspace --locked --no-fail-fast

step "doc tests"
cargo test --workspace --doc --locked

step "rustdoc (warnings are errors)"
# With meshkit-node's `turmoil` feature, as the test builds have it (its self dev-dependency):
# one feature set, so the dependencies checked for clippy are reused, and the turmoil tier is
# documented too.
RUSTDOCFLAGS="-D warnings" cargo doc --workspace --no-deps --locked --quiet --features meshkit-node/turmoil

step "fuzz targets compile (running them needs nightly: scripts/fuzz.sh, fuzz/README.md)"
cargo check --manifest-path fuzz/Cargo.toml --quiet  # its lock file follows the workspace's

step "scenario catalog replays on the simulator"
cargo run --quiet --locked -p meshkit-sim -- run scenarios/steady.toml --seeds 1..3
cargo run --quiet --locked -p meshkit-sim -- run scenarios/crash-one.toml --seed 7 --json

step "static binaries in an image FROM scratch (scripts/static-image.sh)"
# Needs a Docker daemon. The dev profile is the cheaper build (about 4.5 CPU-minutes here).
if timeout 20 docker info >/dev/null 2>&1; then
  scripts/static-image.sh --profile dev
else
  echo "SKIPPED: no Docker daemon reachable (docker info failed): the image was not built or tested"
fi
