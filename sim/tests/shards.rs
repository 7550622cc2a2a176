//! The `[shards]` section: shards are owned through lease scopes, the rebalancer moves the
//! fewest shards when members join or drain, every move is a lease grant with a new fence, and
//! every shard ends with exactly one owner.

use meshkit_sim::{RunOptions, Scenario};

const BASE: &str = r#"
    name = "t"
    [topology]
    nodes = 16
    [network]
    latency = "1ms"
    jitter = "100us"
    [run]
    duration = "40s"
    [leases]
    voters = 3
    scopes = ["global-control"]
    ttl = "3s"
    contenders = "3..16"
    [shards]
    namespace = "orders"
    count = 40
"#;

fn run(text: &str, seed: u64) -> meshkit_sim::RunReport {
    let scenario = Scenario::parse(text, "t.toml").unwrap_or_else(|e| panic!("{e}"));
    meshkit_sim::run(&scenario, RunOptions::seed(seed)).unwrap()
}

#[test]
fn a_join_and_a_drain_move_the_minimum_deterministically() {
    let text = format!(
        "{BASE}
        [[fault]]
        at = \"12s\"
        action = \"join\"
        nodes = \"13..16\"
        [[fault]]
        at = \"22s\"
        action = \"drain\"
        nodes = \"node:5\"
        "
    );
    let a = run(&text, 1);
    let b = run(&text, 1);
    assert_eq!(
        a.trace_hash, b.trace_hash,
        "a run is a pure function of its seed"
    );
    assert_eq!(a, b);
    assert!(a.passed(), "{a:?}");
    assert_eq!(a.shards_placed, Some(true));
    // 40 shards on 10 members, then 13: the newcomers need 3 each (bounds 3..=4); then node
    // 5's shards (3 or 4) move off it.
    let min = a.shard_moves_min.unwrap();
    assert!((12..=13).contains(&min), "{a:?}");
    assert_eq!(a.shard_moves, Some(min));
    assert_eq!(a.shard_moves_ratio, Some(1.0));
    assert_eq!(a.shard_drains, Some(1));
    assert_eq!(a.shard_drains_unfinished, Some(0));
    // The tolerance is one shard over a mean of 40 / 13 = 3.08: 4 shards is 0.3 above it.
    assert!(a.shard_imbalance_max.unwrap() <= 0.31, "{a:?}");
    let json = a.to_json();
    for key in [
        "\"shard_moves\":",
        "\"shard_imbalance_max\":0.3",
        "\"shard_drains\":1",
    ] {
        assert!(json.contains(key), "{key} in {json}");
    }
}

#[test]
fn a_crashed_owner_s_shards_move_after_their_leases_expire() {
    let text = format!(
        "{BASE}
        [[fault]]
        at = \"10s\"
        action = \"crash\"
        nodes = \"node:7\"
        restart_after = \"10s\"
        "
    );
    let r = run(&text, 2);
    assert!(r.passed(), "{r:?}");
    // No join fault: all 13 contenders share the 40 shards. Its 3 shards go to the others once
    // their leases expire, and it takes 3 back (the lower bound) after its restart.
    assert_eq!(r.shard_moves, Some(6), "{r:?}");
    assert_eq!(r.shard_moves_min, Some(6), "{r:?}");
    assert!(r.failover_p99_s.is_some(), "{r:?}");
    assert_eq!(r.stale_writes_accepted, Some(0));
}

#[test]
fn a_run_that_ends_mid_move_breaks_the_one_owner_invariant() {
    // An owner crashes 50 ms before the end: its shards have no holder when the run ends.
    let text = format!(
        "{BASE}
        [[fault]]
        at = \"39.95s\"
        action = \"crash\"
        nodes = \"node:5\"
        "
    );
    let r = run(&text, 1);
    assert!(
        r.invariant_violations
            .iter()
            .any(|v| v.contains("exactly one owner")),
        "{:?}",
        r.invariant_violations
    );
}

#[test]
fn shard_faults_need_a_shards_section_and_join_needs_indices() {
    let no_shards = "name = \"t\"\n[topology]\nnodes = 10\n[run]\nduration = \"10s\"\n\
                     [leases]\n[[fault]]\nat = \"1s\"\naction = \"drain\"\nnodes = \"1\"\n";
    let e = Scenario::parse(no_shards, "t.toml").unwrap_err();
    assert!(e.message.contains("[shards]"), "{e}");
    let by_count = format!("{BASE}[[fault]]\nat = \"1s\"\naction = \"join\"\nnodes = \"2\"\n");
    let e = Scenario::parse(&by_count, "t.toml").unwrap_err();
    assert!(e.message.contains("join names nodes by index"), "{e}");
    let no_leases = "name = \"t\"\n[topology]\nnodes = 10\n[run]\nduration = \"10s\"\n\
                     [shards]\ncount = 4\n";
    let e = Scenario::parse(no_leases, "t.toml").unwrap_err();
    assert!(e.message.contains("needs a [leases] section"), "{e}");
}
