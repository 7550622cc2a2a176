//! The `[leases]` section: lease traffic runs in the same deterministic heap, the lease
//! invariants are checked as the run goes, and runs without it are unchanged.

use std::path::Path;

use meshkit_sim::{RunOptions, Scenario};

const BASE: &str = r#"
    name = "t"
    [topology]
    nodes = 10
    [network]
    latency = "1ms"
    jitter = "100us"
    [run]
    duration = "60s"
    [leases]
    voters = 3
    scopes = ["global-control", "shard/orders/1"]
    ttl = "3s"
    contenders = "3"
"#;

fn run(text: &str, seed: u64) -> meshkit_sim::RunReport {
    let scenario = Scenario::parse(text, "t.toml").unwrap_or_else(|e| panic!("{e}"));
    meshkit_sim::run(&scenario, RunOptions::seed(seed)).unwrap()
}

/// A run without `[leases]` reports no lease figure and is still a pure function of its seed
/// (the lease machinery draws from no shared RNG when it is off). No trace hash is pinned: a
/// golden value copied from output fails on every intended change and proves nothing a
/// determinism check does not.
#[test]
fn a_run_without_leases_keeps_its_trace() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../scenarios/crash-one.toml");
    let scenario = Scenario::from_file(&path).unwrap();
    let report = meshkit_sim::run(&scenario, RunOptions::seed(7)).unwrap();
    let again = meshkit_sim::run(&scenario, RunOptions::seed(7)).unwrap();
    let other = meshkit_sim::run(&scenario, RunOptions::seed(8)).unwrap();
    assert_eq!(report, again, "one seed, one run");
    assert_ne!(
        report.trace_hash, other.trace_hash,
        "the seed drives the run"
    );
    assert_eq!(report.lease_acquisitions, None);
    assert_eq!(report.stale_writes_refused, None);
    assert_eq!(report.voter_restarts, None);
}

#[test]
fn lease_runs_are_deterministic_and_report_their_figures() {
    let text = format!(
        "{BASE}
        [[fault]]
        at = \"10s\"
        count = 3
        every = \"15s\"
        action = \"crash\"
        nodes = \"holder\"
        restart_after = \"5s\"
        [[fault]]
        at = \"17s\"
        action = \"transfer\"
        scope = \"shard/orders/1\"
        "
    );
    let a = run(&text, 3);
    let b = run(&text, 3);
    let c = run(&text, 4);
    assert_eq!(
        a.trace_hash, b.trace_hash,
        "a run is a pure function of its seed"
    );
    assert_eq!(a, b);
    assert_ne!(a.trace_hash, c.trace_hash);
    assert!(
        a.invariant_violations.is_empty(),
        "{:?}",
        a.invariant_violations
    );
    assert!(a.lease_acquisitions.unwrap() >= 4, "{a:?}");
    assert!(a.failover_p99_s.is_some(), "{a:?}");
    assert!(a.lease_grant_p50_ms.is_some());
    assert_eq!(a.stale_writes_accepted, Some(0));
    let json = a.to_json();
    for key in [
        "\"failover_p99_s\":",
        "\"shard_moves\":null",
        "\"stale_writes_refused\":",
    ] {
        assert!(json.contains(key), "{key} in {json}");
    }
}

#[test]
fn a_transfer_hands_the_lease_over_quickly() {
    let text = format!(
        "{BASE}
        [[fault]]
        at = \"10s\"
        count = 5
        every = \"5s\"
        action = \"transfer\"
        "
    );
    let r = run(&text, 1);
    assert!(
        r.invariant_violations.is_empty(),
        "{:?}",
        r.invariant_violations
    );
    let handoff = r.handoff_p99_ms.expect("transfers completed");
    assert!(handoff <= 200.0, "handoff p99 {handoff} ms");
}

#[test]
fn a_paused_holder_s_write_is_refused_by_the_fence() {
    let text = format!(
        "{BASE}
        [[fault]]
        at = \"10s\"
        action = \"pause\"
        nodes = \"holder\"
        for = \"30s\"
        "
    );
    let r = run(&text, 2);
    assert!(
        r.invariant_violations.is_empty(),
        "{:?}",
        r.invariant_violations
    );
    assert!(r.stale_writes_refused.unwrap() >= 1, "{r:?}");
    assert_eq!(r.stale_writes_accepted, Some(0));
}

/// Four crashes of whichever voter leads Raft, each restarted 4 s later.
const RAFT_LEADER_CRASHES: &str = "
    [[fault]]
    at = \"10s\"
    count = 4
    every = \"10s\"
    action = \"crash\"
    nodes = \"raft-leader\"
    restart_after = \"4s\"
    ";

/// A voter that led Raft crashes and restarts from what it persisted, four times.
#[test]
fn a_voter_crash_restarts_from_its_durable_state() {
    let text = format!("{BASE}{RAFT_LEADER_CRASHES}");
    let r = run(&text, 5);
    assert!(
        r.invariant_violations.is_empty(),
        "{:?}",
        r.invariant_violations
    );
    assert_eq!(r.crashes, 4);
    // Each restarted voter was checked (an invariant) to resume the term and log it crashed
    // with; count them so that a run without restarts cannot pass.
    assert_eq!(r.voter_restarts, Some(4), "{r:?}");
    assert_eq!(r.stale_writes_accepted, Some(0));
}

/// The checker itself: a holder whose clock runs at half speed and which is cut off from the
/// voters believes it holds the lease for twice its TTL in real time, so the voters grant it to
/// another node while it still believes. Without a skew allowance that is a violation; with
/// `max_clock_skew = 0.5` it is tolerated (and the fence still refuses what it must).
#[test]
fn a_slow_clock_beyond_the_allowance_is_caught() {
    let faults = "
        [[fault]]
        at = \"10s\"
        action = \"skew\"
        nodes = \"holder\"
        rate = 0.5
        [[fault]]
        at = \"12s\"
        action = \"partition\"
        groups = [\"holder\"]
        heal_after = \"20s\"
        ";
    let strict = run(&format!("{BASE}{faults}"), 1);
    assert!(
        strict
            .invariant_violations
            .iter()
            .any(|v| v.contains("two holders")),
        "{:?}",
        strict.invariant_violations
    );
    let tolerant = run(
        &format!(
            "{}{faults}",
            BASE.replace(
                "contenders = \"3\"",
                "contenders = \"3\"\n    max_clock_skew = 0.5"
            )
        ),
        1,
    );
    assert!(
        tolerant.invariant_violations.is_empty(),
        "{:?}",
        tolerant.invariant_violations
    );
}

#[test]
fn lease_faults_need_a_leases_section() {
    let text = "name = \"t\"\n[topology]\nnodes = 10\n[run]\nduration = \"10s\"\n\
                [[fault]]\nat = \"1s\"\naction = \"crash\"\nnodes = \"holder\"\n";
    let err = Scenario::parse(text, "t.toml").unwrap_err();
    assert!(err.message.contains("[leases]"), "{err}");
    let bad = BASE.replace("ttl = \"3s\"", "ttl = \"5ms\"");
    let err = Scenario::parse(&bad, "t.toml").unwrap_err();
    assert!(err.message.contains("ttl"), "{err}");
    let too_many = BASE.replace("nodes = 10", "nodes = 5");
    let err = Scenario::parse(&too_many, "t.toml").unwrap_err();
    assert!(err.message.contains("[leases]"), "{err}");
}

#[test]
fn a_crashed_raft_leader_is_replaced_within_the_election_timeout() {
    let text = format!("{BASE}{RAFT_LEADER_CRASHES}");
    let r = run(&text, 1);
    assert!(
        r.invariant_violations.is_empty(),
        "{:?}",
        r.invariant_violations
    );
    assert_eq!(r.raft_failovers_s.len(), 4, "{r:?}");
    assert_eq!(r.raft_failovers_unfinished, Some(0));
    // The slowest surviving follower waits at most 19 ticks of 50 ms after the last heartbeat,
    // then a pre-vote and a vote round trip (no split vote at this seed).
    for &s in &r.raft_failovers_s {
        assert!(
            s > 0.0 && s <= 1.2,
            "raft failover {s} s: {:?}",
            r.raft_failovers_s
        );
    }
    // A run without a Raft leader crash measures nothing.
    let quiet = run(BASE, 1);
    assert!(quiet.raft_failovers_s.is_empty());
    assert_eq!(quiet.raft_failover_p99_s, None);
}
