#!/usr/bin/env bash
# Mutation testing of the core's protocol modules with cargo-mutants, bounded: one module at a
# time, one build or test at a time, a time limit on every build and test run. On demand only
# (not in CI): a full pass is about two CPU-hours here.
#
#   scripts/mutants.sh                 every module below, in order
#   scripts/mutants.sh shard claims    some of them (names from the list below)
#
# Each module's mutants are tested against the core's own unit tests of that area (the test-name
# filter after `--`): a mutant counts as caught only if the module's own tests catch it, not the
# simulator's or the real node's. Results land in target/mutants/<module>/mutants.out/
# (caught.txt, missed.txt, timeout.txt, unviable.txt, outcomes.json); the summary line of each
# module is printed at the end. Needs cargo-mutants (`cargo install --locked cargo-mutants`).
#
# Environment: MUTANTS_TIMEOUT (seconds per test run, default 120), MUTANTS_BUILD_TIMEOUT
# (seconds per build, default 600), MUTANTS_JOBS (default 1), MUTANTS_ITERATE=1 (test again only
# the mutants the previous run in target/mutants/<module> did not catch: after adding tests).
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root"

if ! cargo mutants --version >/dev/null 2>&1; then
    echo "cargo-mutants is not installed: cargo install --locked cargo-mutants" >&2
    exit 1
fi

# name | files (a cargo-mutants glob) | test-name filter for the core's unit tests
modules=(
    "shard|mesh/src/shard/*.rs|shard::"
    "id|mesh/src/id.rs|"
    "suspicion|mesh/src/membership/suspicion.rs|membership::"
    "lease-table|mesh/src/lease/table.rs|lease::"
    "claims|mesh/src/membership/claims.rs|membership::"
)

wanted=("$@")
summaries=()
status=0
for entry in "${modules[@]}"; do
    IFS='|' read -r name files filter <<<"$entry"
    if [ "${#wanted[@]}" -gt 0 ] && [[ ! " ${wanted[*]} " == *" $name "* ]]; then
        continue
    fi
    out="target/mutants/$name"
    mkdir -p "$out"
    shown="${filter:-every unit test of the core}"
    echo "==> $name ($files; tests: $shown)"
    # The copies cargo-mutants builds in share one target directory (the registry dependencies
    # are built once); the `mutants` profile has no debug info, so a mutant links faster.
    set +e
    CARGO_TARGET_DIR="$root/target/mutants-build" cargo mutants \
        --package meshkit --file "$files" \
        --jobs "${MUTANTS_JOBS:-1}" \
        --timeout "${MUTANTS_TIMEOUT:-120}" --build-timeout "${MUTANTS_BUILD_TIMEOUT:-600}" \
        --profile mutants --output "$out" --no-times ${MUTANTS_ITERATE:+--iterate} \
        --cargo-test-arg=--lib -- -- $filter \
        2>&1 | tee "$out/log.txt"
    code=${PIPESTATUS[0]}
    set -e
    # 0: every mutant caught; 2: some missed; 3: some timed out; anything else is a failure to run.
    if [ "$code" -ne 0 ] && [ "$code" -ne 2 ] && [ "$code" -ne 3 ]; then
        status=1
    fi
    summaries+=("$name: $(grep -E '^[0-9]+ mutants tested' "$out/log.txt" | tail -1)")
done

echo
echo "==> summary"
printf '%s\n' "${summaries[@]}"
exit "$status"
