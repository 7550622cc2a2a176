#!/usr/bin/env bash
# Line coverage of the core (crate meshkit) by its own unit tests, with cargo-tarpaulin's LLVM
# engine: the tests are built with `-C instrument-coverage` and tarpaulin reads the profiles
# itself, so no `llvm-tools` component is needed. On demand only (not in CI).
#
#   scripts/coverage.sh                 the core's code, by its unit tests (doc tests left out)
#   scripts/coverage.sh -p meshkit-sim  other tarpaulin arguments replace the default selection
#
# Writes target/coverage/tarpaulin-report.{html,json} and lcov.info, and prints the per-file
# table and the total. Branch coverage: tarpaulin does not implement it (`--branch` is a no-op),
# and llvm-cov, which does, needs the `llvm-tools` component. Needs cargo-tarpaulin (`cargo install --locked cargo-tarpaulin`). Builds in
# target/tarpaulin, apart from the usual builds (instrumented code is not reusable).
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root"

if ! cargo tarpaulin --version >/dev/null 2>&1; then
    echo "cargo-tarpaulin is not installed: cargo install --locked cargo-tarpaulin" >&2
    exit 1
fi

# The core's own code: its test modules and the test-only forger are left out of the figure.
selection=(--packages meshkit --lib --include-files 'mesh/src/*'
    --exclude-files '*/tests.rs' --exclude-files '*/tests/*' --exclude-files '*/wire/forge.rs')
if [ "$#" -gt 0 ]; then
    selection=("$@")
fi

cargo tarpaulin "${selection[@]}" \
    --engine llvm --skip-clean --locked \
    --target-dir target/tarpaulin \
    --out Html --out Json --out Lcov --output-dir target/coverage \
    --timeout 600 \
    -- --test-threads 2
