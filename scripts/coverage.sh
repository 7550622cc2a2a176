#!/usr/bin/env bash
# Line, region and branch coverage of the core (crate meshkit) by its own unit tests, with
# cargo-llvm-cov. On demand only (not in CI).
#
#   scripts/coverage.sh                 the core's code, by its unit tests (doc tests left out)
#   scripts/coverage.sh -p meshkit-sim  other cargo-llvm-cov arguments replace the default selection
#
# cargo-llvm-cov needs `llvm-profdata` and `llvm-cov` of rustc's LLVM major version. The
# `llvm-tools` rustup component that usually brings them cannot be downloaded here, so this
# script uses Debian's `llvm-22` package (rustc 1.95 is built on LLVM 22; `rustc -vV` says which)
# and installs it when missing and run as root.
#
# Branch coverage needs rustc's `-Z coverage-options=branch`, which is still unstable: the script
# sets RUSTC_BOOTSTRAP=1 for this instrumented build only (cargo-llvm-cov's `--branch`), so the
# stable compiler accepts it. Set MESHKIT_COVERAGE_NO_BRANCH=1 to leave it out (lines and regions
# are stable).
#
# Writes target/llvm-cov/html/index.html and target/llvm-cov/lcov.info, and prints the per-file
# table. Builds in target/llvm-cov-target, apart from the usual builds (instrumented code is not
# reusable).
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root"

llvm_major="$(rustc -vV | sed -n 's/^LLVM version: \([0-9]*\).*/\1/p')"
llvm_bin="/usr/lib/llvm-${llvm_major}/bin"
if [ ! -x "$llvm_bin/llvm-cov" ]; then
    if [ "$(id -u)" -eq 0 ]; then
        echo "installing Debian's llvm-${llvm_major} (llvm-cov and llvm-profdata of rustc's LLVM)" >&2
        apt-get update -qq
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "llvm-${llvm_major}" >/dev/null
    else
        echo "llvm-cov of LLVM ${llvm_major} is missing: apt-get install llvm-${llvm_major} (as root)" >&2
        exit 1
    fi
fi
if ! cargo llvm-cov --version >/dev/null 2>&1; then
    echo "cargo-llvm-cov is not installed: cargo install --locked cargo-llvm-cov" >&2
    exit 1
fi
export LLVM_COV="$llvm_bin/llvm-cov" LLVM_PROFDATA="$llvm_bin/llvm-profdata"

# The core's own code: its test modules and the test-only forger are left out of the figure.
selection=(--package meshkit --lib)
if [ "$#" -gt 0 ]; then
    selection=("$@")
fi
ignore='(tests\.rs|/tests/|wire/forge\.rs)'
branch=(--branch)
if [ "${MESHKIT_COVERAGE_NO_BRANCH:-0}" = 1 ]; then
    branch=()
else
    export RUSTC_BOOTSTRAP=1
fi

mkdir -p target/llvm-cov
# Through nextest, as CI runs the tests: a process per test. Under `cargo test` the tests share
# one process, and the one that captures the core's log lines
# (`state_change_lines_are_logged_and_rate_limited`) then records none (it passes alone; tracing's
# dispatch state is process-wide, and which part of it is not pinned down).
cargo llvm-cov nextest "${selection[@]}" "${branch[@]}" --locked --ignore-filename-regex "$ignore" \
    --lcov --output-path target/llvm-cov/lcov.info
cargo llvm-cov report "${branch[@]}" --ignore-filename-regex "$ignore" --html
cargo llvm-cov report "${branch[@]}" --ignore-filename-regex "$ignore" --summary-only
