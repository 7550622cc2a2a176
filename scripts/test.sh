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
RUSTDOCFLAGS="-D warnings" cargo doc --workspace --no-deps --locked --quiet

step "fuzz targets compile (running them needs nightly: see fuzz/README.md)"
cargo check --manifest-path fuzz/Cargo.toml --quiet  # its lock file follows the workspace's

step "scenario catalog replays on the simulator"
cargo run --quiet --locked -p meshkit-sim -- run scenarios/steady.toml --seeds 1..3
cargo run --quiet --locked -p meshkit-sim -- run scenarios/crash-one.toml --seed 7 --json
