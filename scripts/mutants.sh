#!/usr/bin/env bash
# Mutation testing of the core's protocol modules with cargo-mutants, bounded: one module at a
# time, one build or test at a time, a time limit on every build and test run. On demand only
# (not in CI): a full pass of every module (1,880 mutants) is 8-20 hours here; one module 10
# minutes to 4 hours.
#
#   scripts/mutants.sh                 every module below, in order
#   scripts/mutants.sh shard claims    some of them (names from the list below)
#   scripts/mutants.sh --list          the modules, their files and their mutant counts (no build)
#
# Each module's mutants are tested against the core's own unit tests of that area (the test-name
# filter after `--`): a mutant counts as caught only if the module's own tests catch it, not the
# simulator's or the real node's. Results land in target/mutants/<module>/mutants.out/
# (caught.txt, missed.txt, timeout.txt, unviable.txt, outcomes.json); the summary line of each
# module is printed at the end. Needs cargo-mutants (`cargo install --locked cargo-mutants`).
#
# Environment: MUTANTS_TIMEOUT (seconds per test run, default 120), MUTANTS_BUILD_TIMEOUT
# (seconds per build, default 600), MUTANTS_JOBS (default 1), MUTANTS_ITERATE=1 (test again only
# the mutants the previous run in target/mutants/<module> did not catch: after adding tests),
# MUTANTS_START_BEFORE=HH:MM (UTC; no module is started after that time, so a run of several
# modules ends within a bound: the one under way finishes), MUTANTS_END_BY=HH:MM (UTC, today; the
# module under way is stopped then, keeping the outcomes of the mutants it finished, and no
# other is started: a hard bound).
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root"

if ! cargo mutants --version >/dev/null 2>&1; then
    echo "cargo-mutants is not installed: cargo install --locked cargo-mutants" >&2
    exit 1
fi

# name | files (a cargo-mutants glob) | test-name filter for the core's unit tests
#
# One module per file of protocol logic, so each runs in bounded time (`--list` gives the counts;
# a mutant costs 10-40 s here). Left out: the wire codecs (fuzzed and round-trip tested), configs
# (parsed by constructors with their own tests), errors, events, views and the diagnostics.
modules=(
    "shard|mesh/src/shard/*.rs|shard::"
    "id|mesh/src/id.rs|"
    "suspicion|mesh/src/membership/suspicion.rs|membership::"
    "lease-table|mesh/src/lease/table.rs|lease::"
    "claims|mesh/src/membership/claims.rs|membership::"
    "probe|mesh/src/membership/probe.rs|membership::"
    "dissemination|mesh/src/membership/dissemination.rs|membership::"
    "membership|mesh/src/membership/mod.rs|membership::"
    "member-table|mesh/src/membership/member.rs|membership::"
    "anti-entropy|mesh/src/membership/anti_entropy.rs|membership::"
    "health|mesh/src/membership/{health,intmath}.rs|membership::"
    "lease-campaign|mesh/src/lease/campaign.rs|lease::"
    "lease-client|mesh/src/lease/client.rs|lease::"
    "lease-group|mesh/src/lease/group.rs|lease::"
    "lease-storage|mesh/src/lease/storage.rs|lease::"
    # The work queue: items and their ownership tokens, the replicas' copies and recovery,
    # backpressure, the store's records and checkpoints, worker health, then the state machine.
    # queues.rs is driven across nodes by `queue::tests::across_nodes` (and the simulator's
    # queue section, which this filter leaves out).
    "queue-item|mesh/src/queue/item.rs|queue::"
    "queue-replica|mesh/src/queue/replica.rs|queue::"
    "queue-backpressure|mesh/src/queue/backpressure.rs|queue::"
    "queue-store|mesh/src/queue/store.rs|queue::"
    "queue-health|mesh/src/queue/health.rs|queue::"
    "queue|mesh/src/queue/queues.rs|queue::"
)

if [ "${1:-}" = "--list" ]; then
    for entry in "${modules[@]}"; do
        IFS='|' read -r name files filter <<<"$entry"
        count="$(cargo mutants --package meshkit --file "$files" --list 2>/dev/null | wc -l)"
        printf '%-16s %5s mutants  %s\n' "$name" "$count" "$files"
    done
    exit 0
fi

wanted=("$@")
summaries=()
status=0
for entry in "${modules[@]}"; do
    IFS='|' read -r name files filter <<<"$entry"
    if [ "${#wanted[@]}" -gt 0 ] && [[ ! " ${wanted[*]} " == *" $name "* ]]; then
        continue
    fi
    if [ -n "${MUTANTS_START_BEFORE:-}" ] && [[ "$(date -u +%H:%M)" > "$MUTANTS_START_BEFORE" ]]; then
        summaries+=("$name: not started (past MUTANTS_START_BEFORE=$MUTANTS_START_BEFORE UTC)")
        continue
    fi
    budget=""
    if [ -n "${MUTANTS_END_BY:-}" ]; then
        budget=$(($(date -u -d "$MUTANTS_END_BY" +%s) - $(date -u +%s)))
        if [ "$budget" -le 0 ]; then
            summaries+=("$name: not started (past MUTANTS_END_BY=$MUTANTS_END_BY UTC)")
            continue
        fi
    fi
    out="target/mutants/$name"
    mkdir -p "$out"
    started=$(date +%s)
    # The machine's 1-minute load average every 30 s while the module runs: its figures depend
    # on it (a mutant is a build), so the summary reports the mean and the peak.
    : >"$out/load.txt"
    (while :; do cut -d' ' -f1 /proc/loadavg >>"$out/load.txt"; sleep 30; done) &
    sampler=$!
    trap 'kill "$sampler" 2>/dev/null' EXIT
    shown="${filter:-every unit test of the core}"
    echo "==> $name ($files; tests: $shown)"
    # The copies cargo-mutants builds in share one target directory (the registry dependencies
    # are built once); the `mutants` profile has no debug info, so a mutant links faster.
    # `-Zunstable-options --fail-fast` stops the test binary at the first failing test (all a
    # mutant needs to count as caught; the membership and lease tests take about 30 s in all
    # here). It is libtest's, still unstable: RUSTC_BOOTSTRAP=1 lets the stable toolchain's test
    # binary accept it (only the few dependencies whose build scripts probe the compiler are
    # rebuilt for it, once). It only shortens caught mutants' runs; a missed mutant still runs
    # every test.
    # `state_change_lines_are_logged_and_rate_limited` is skipped: it captures tracing output
    # with a scoped subscriber, and in one test process (cargo test, not nextest's process per
    # test) tracing's shared callsite interest can hide its lines, so the unmutated baseline
    # failed now and then and no mutant of the module ran. The rate limit it checks has unit
    # tests of its own (membership/state_log.rs).
    # Past MUTANTS_END_BY, cargo-mutants is interrupted as by Ctrl-C (it stops the mutant under
    # way; the outcomes it has written so far stay).
    # One shared target directory is only safe for one job at a time: the copies' crates hash
    # alike (their paths are relative to each copy's root), so two jobs overwrite each other's
    # test binaries and a caught mutant can be reported missed (seen: queues.rs:1313, missed
    # with two jobs, caught by hand). With more jobs each copy builds in its own target.
    target_dir=(CARGO_TARGET_DIR="$root/target/mutants-build")
    if [ "${MUTANTS_JOBS:-1}" != 1 ]; then
        target_dir=()
    fi
    bound=()
    if [ -n "$budget" ]; then
        bound=(timeout --signal=INT --kill-after=120 "$budget")
    fi
    set +e
    env RUSTC_BOOTSTRAP=1 "${target_dir[@]}" "${bound[@]}" cargo mutants \
        --package meshkit --file "$files" \
        --jobs "${MUTANTS_JOBS:-1}" \
        --timeout "${MUTANTS_TIMEOUT:-120}" --build-timeout "${MUTANTS_BUILD_TIMEOUT:-600}" \
        --profile mutants --output "$out" --no-times ${MUTANTS_ITERATE:+--iterate} \
        --cargo-test-arg=--lib -- -- -Zunstable-options --fail-fast \
        --skip state_change_lines_are_logged_and_rate_limited $filter \
        2>&1 | tee "$out/log.txt"
    code=${PIPESTATUS[0]}
    set -e
    # 0: every mutant caught; 2: some missed; 3: some timed out; anything else is a failure to run
    # (or, under MUTANTS_END_BY, the bound: `timeout` exits 124).
    stopped=""
    if [ -n "$budget" ] && [ "$code" -eq 124 ]; then
        stopped=yes
    elif [ "$code" -ne 0 ] && [ "$code" -ne 2 ] && [ "$code" -ne 3 ]; then
        status=1
    fi
    kill "$sampler" 2>/dev/null || true
    wall=$(($(date +%s) - started))
    load="$(awk '{ s += $1; if ($1 > m) m = $1 } END { if (NR) printf "mean %.1f, peak %.1f", s / NR, m }' "$out/load.txt")"
    # (No summary line when the run was stopped: grep's status must not end the script.)
    result="$(grep -E '^[0-9]+ mutants tested' "$out/log.txt" | tail -1 || true)"
    if [ -n "$stopped" ]; then
        counts=""
        for kind in caught missed timeout unviable; do
            counts+="$(wc -l <"$out/mutants.out/$kind.txt" 2>/dev/null || echo 0) $kind, "
        done
        result="stopped at MUTANTS_END_BY=$MUTANTS_END_BY UTC: ${counts%, } of $(cargo mutants --package meshkit --file "$files" --list 2>/dev/null | wc -l)"
    fi
    summaries+=("$name: $result" \
        "    wall $((wall / 60))m $((wall % 60))s; 1-minute load average $load")
done

echo
echo "==> summary"
printf '%s\n' "${summaries[@]}"
exit "$status"
