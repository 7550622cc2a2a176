#!/usr/bin/env bash
# Runs each cargo-fuzz target in fuzz/ for a bounded time and prints executions per target.
#
#   scripts/fuzz.sh                      every target, 60 s each
#   FUZZ_SECONDS=120 scripts/fuzz.sh lease_group lease_wire
#
# Needs a nightly toolchain and cargo-fuzz (`cargo install cargo-fuzz --locked`); without them it
# says SKIPPED and exits 0 (on stable the targets only compile: `cargo check --manifest-path
# fuzz/Cargo.toml --locked`, as CI does). Builds without AddressSanitizer (`-s none`: MeshKit
# forbids `unsafe`, and ASan makes the targets several times slower) but with debug assertions
# and overflow checks (`-a`), so an integer overflow in MeshKit or raft-rs is a crash. Corpora
# grow in fuzz/corpus/<target>/, crashes land in fuzz/artifacts/<target>/ (both git-ignored).
# Exits non-zero if any target crashed.
set -euo pipefail

seconds="${FUZZ_SECONDS:-60}"
root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root/fuzz"

if ! cargo +nightly --version >/dev/null 2>&1; then
    echo "SKIPPED: no nightly toolchain (rustup toolchain install nightly)"
    exit 0
fi
if ! cargo +nightly fuzz --version >/dev/null 2>&1; then
    echo "SKIPPED: cargo-fuzz is not installed (cargo install cargo-fuzz --locked)"
    exit 0
fi

if [ "$#" -gt 0 ]; then
    targets=("$@")
else
    mapfile -t targets < <(cargo +nightly fuzz list)
fi

echo "building the targets (cargo +nightly fuzz build -s none -a)"
cargo +nightly fuzz build -s none -a

status=0
results=()
for target in "${targets[@]}"; do
    log="$(mktemp)"
    echo "== $target: ${seconds} s"
    set +e
    cargo +nightly fuzz run -s none -a "$target" -- \
        -max_total_time="$seconds" -max_len=8192 -print_final_stats=1 >"$log" 2>&1
    code=$?
    set -e
    execs="$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -1)"
    rate="$(sed -n 's/^stat::average_exec_per_sec: *//p' "$log" | tail -1)"
    if [ "$code" -eq 0 ]; then
        outcome="no crash"
    else
        outcome="CRASH (exit $code; see fuzz/artifacts/$target/)"
        status=1
        grep -E "panicked at|SUMMARY|Test unit written" "$log" | head -5 || true
    fi
    results+=("$(printf '%-16s %12s execs %8s exec/s  %s' "$target" "${execs:-?}" "${rate:-?}" "$outcome")")
    rm -f "$log"
done

echo
echo "fuzz summary (${seconds} s per target, -s none -a):"
printf '%s\n' "${results[@]}"
exit "$status"
