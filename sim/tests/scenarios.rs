//! Every shipped scenario parses, and runs (scaled down where its expectations still hold) to
//! meet its own expectations without an invariant violation.

use std::path::{Path, PathBuf};

use std::time::Duration;

use meshkit_sim::{RunOptions, Scenario};

/// The shipped scenarios and the node count this test runs them at (`None`: the file's own).
///
/// The loss scenarios keep their 128 nodes: below 100 nodes the retransmit budget
/// (`retransmit_mult * ceil(log10(N + 1))`) takes a step down, so at 5% loss a missed write
/// waits for anti-entropy (beyond the dissemination bound) and at 20% loss a missed refutation
/// more often becomes a false positive (beyond that bound).
const SHIPPED: &[(&str, Option<u32>)] = &[
    ("steady", Some(64)),
    ("crash-one", Some(64)),
    ("crash-10pct", Some(64)),
    ("partition-heal", Some(64)),
    ("loss-5pct", None),
    ("loss-20pct", None),
    ("gray-1pct", Some(64)),
    ("churn-restart", Some(64)),
    ("metadata-update", Some(32)),
    ("leader-kill", Some(10)),
    ("voter-partition", Some(10)),
    ("leader-pause-30s", Some(10)),
    ("clock-skew", Some(10)),
    ("voter-rolling-restart", Some(10)),
    // 1,203 nodes and 10,000 shards: ~40 s in a release build, minutes in a debug one; its
    // test is ignored by default (tests/shards.rs runs a 16-node join and drain instead).
    ("membership-surge", None),
    ("drain", Some(12)),
    ("raft-leader-kill", Some(10)),
    // An hour of 1% loss at 128 nodes; the test runs 64 nodes for 300 s (about 3 s in a debug
    // build): the loss is drawn per datagram, so a shorter run samples the same rate.
    ("loss-1pct", Some(64)),
    // Thirty 4 s pauses; at 16 nodes (the lan profile's smallest suspicion timeout before its
    // 4 s floor: 272 of 600 pauses over seeds 1..20 ended with the paused node declared dead).
    ("pause-4s", Some(16)),
    // The main job (1,000 nodes, both profiles, about 40 s of CPU in a release build); the
    // test runs its faults at 64 nodes.
    ("tour", Some(64)),
    // Seed 1 at 10 nodes missed the failover bound with the fixed 500 ms request timeout
    // (3.38 s > 3.3 s).
    ("leader-kill-loss-10pct", Some(10)),
    // #19 class 3: bursty loss. Its stuck claims showed at 128 nodes (the membership unit test
    // `a_claim_stuck_in_a_burst_is_not_declared_on_late_confirmations` holds the mechanism); at
    // 16 nodes the run is a fraction of a second in release and checks the file's bounds.
    ("burst-loss-5pct", Some(16)),
    // #19 class 1: a one-way cut. Its false positives need 1,000 nodes (16-22 min of wall time
    // a seed under load); at 64 nodes it checks the cut, the heal and the bounds in ~1 s.
    ("one-way-cut", Some(64)),
    // #19 class 4: a cut-off minority (3 of 16) completing its own view of the majority. Both
    // miss their bound (docs/benchmarks.md, "Class 4"; the opt-in minority rules do not meet
    // it either); their tests are ignored, so reported as skipped, until class 4 is fixed.
    ("minority-cut", None),
    // The same at 5%: 1,000 nodes in the file, 100 here (5 cut off).
    ("minority-cut-5pct", Some(100)),
    // A membership surge as a plan: 5 members, 3 spares booted at 10 s and leaving at 40 s.
    ("membership-surge-plan", None),
];

/// The scenario files other tests run (the file named holds the scenario's name): with
/// [`SHIPPED`], every file in `scenarios/` runs in the default suite.
const RUN_ELSEWHERE: &[(&str, &str)] = &[
    ("byzantine-non-member", "sim/tests/byzantine.rs"),
    ("queue-owner-kill", "sim/tests/queues.rs"),
    ("queue-owner-lapse", "sim/tests/queues.rs"),
    ("queue-partition", "sim/tests/queues.rs"),
    ("queue-backpressure", "sim/tests/queues.rs"),
    // The chaos catalog: each file against its own expectations in the simulator.
    ("latency-injection", "backends/chaos/tests/catalog.rs"),
    ("partition-minority", "backends/chaos/tests/catalog.rs"),
    ("membership-surge-join", "backends/chaos/tests/catalog.rs"),
    ("transport-downgrade", "backends/chaos/tests/catalog.rs"),
    ("certificate-expiry", "backends/chaos/tests/catalog.rs"),
    ("certificate-rotation", "backends/chaos/tests/catalog.rs"),
    ("gameday", "backends/chaos/tests/catalog.rs"),
    ("queue-burst-autoscale", "backends/chaos/tests/catalog.rs"),
];

fn dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../scenarios")
}

#[test]
fn every_scenario_file_is_shipped_and_parses() {
    let mut found: Vec<String> = std::fs::read_dir(dir())
        .expect("the scenarios directory exists")
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".toml"))
        .collect();
    found.sort();
    for name in &found {
        let path = dir().join(name);
        let scenario = Scenario::from_file(&path).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            format!("{}.toml", scenario.name()),
            *name,
            "name matches the file"
        );
        assert!(
            !scenario.description().is_empty(),
            "{name} has a description"
        );
    }
    for (name, _) in SHIPPED {
        assert!(
            found.contains(&format!("{name}.toml")),
            "{name}.toml is shipped"
        );
    }
    for file in &found {
        let name = file.trim_end_matches(".toml");
        if SHIPPED.iter().any(|(n, _)| *n == name) {
            continue;
        }
        let Some((_, test)) = RUN_ELSEWHERE.iter().find(|(n, _)| *n == name) else {
            panic!(
                "{file} is run by no test: add it to SHIPPED (with a small size) or RUN_ELSEWHERE"
            );
        };
        let source = std::fs::read_to_string(dir().join("..").join(test))
            .unwrap_or_else(|e| panic!("{test}: {e}"));
        assert!(source.contains(name), "{test} no longer names {name}");
    }
}

/// [`run_shipped`] for the [`SHIPPED`] entry named `name` (at its node count).
fn run_named(name: &str) {
    let &(name, nodes) = SHIPPED
        .iter()
        .find(|(n, _)| *n == name)
        .unwrap_or_else(|| panic!("{name} is not in SHIPPED"));
    run_shipped(name, nodes);
}

fn run_shipped(name: &str, nodes: Option<u32>) {
    run_shipped_for(name, nodes, None);
}

/// As [`run_shipped`], for `duration` of virtual time instead of the file's.
fn run_shipped_for(name: &str, nodes: Option<u32>, duration: Option<Duration>) {
    let scenario = Scenario::from_file(&dir().join(format!("{name}.toml"))).unwrap();
    let mut options = RunOptions::seed(1);
    options.nodes = nodes;
    options.duration = duration;
    let report = meshkit_sim::run(&scenario, options).unwrap();
    assert!(
        report.passed(),
        "{name} failed; replay: {}\n{}",
        report.replay,
        report.render(scenario.expect())
    );
}

#[test]
fn steady_meets_its_expectations() {
    run_shipped(SHIPPED[0].0, SHIPPED[0].1);
}

#[test]
fn crash_one_meets_its_expectations() {
    run_shipped(SHIPPED[1].0, SHIPPED[1].1);
}

#[test]
fn crash_10pct_meets_its_expectations() {
    run_shipped(SHIPPED[2].0, SHIPPED[2].1);
}

#[test]
fn partition_heal_meets_its_expectations() {
    run_shipped(SHIPPED[3].0, SHIPPED[3].1);
}

#[test]
fn loss_5pct_meets_its_expectations() {
    run_shipped(SHIPPED[4].0, SHIPPED[4].1);
}

#[test]
fn loss_20pct_meets_its_expectations() {
    run_shipped(SHIPPED[5].0, SHIPPED[5].1);
}

#[test]
fn gray_1pct_meets_its_expectations() {
    run_shipped(SHIPPED[6].0, SHIPPED[6].1);
}

#[test]
fn churn_restart_meets_its_expectations() {
    run_shipped(SHIPPED[7].0, SHIPPED[7].1);
}

#[test]
fn metadata_update_meets_its_expectations() {
    run_shipped(SHIPPED[8].0, SHIPPED[8].1);
}

#[test]
fn leader_kill_meets_its_expectations() {
    run_shipped(SHIPPED[9].0, SHIPPED[9].1);
}

#[test]
fn voter_partition_meets_its_expectations() {
    run_shipped(SHIPPED[10].0, SHIPPED[10].1);
}

#[test]
fn leader_pause_30s_meets_its_expectations() {
    run_shipped(SHIPPED[11].0, SHIPPED[11].1);
}

#[test]
fn clock_skew_meets_its_expectations() {
    run_shipped(SHIPPED[12].0, SHIPPED[12].1);
}

#[test]
fn voter_rolling_restart_meets_its_expectations() {
    run_shipped(SHIPPED[13].0, SHIPPED[13].1);
}

#[test]
#[ignore = "N = 1,000 with 10,000 shards: run with `cargo nextest run --release --run-ignored all`"]
fn membership_surge_meets_its_expectations() {
    run_shipped(SHIPPED[14].0, SHIPPED[14].1);
}

#[test]
fn drain_meets_its_expectations() {
    run_shipped(SHIPPED[15].0, SHIPPED[15].1);
}

#[test]
fn raft_leader_kill_meets_its_expectations() {
    run_shipped(SHIPPED[16].0, SHIPPED[16].1);
}

#[test]
fn leader_kill_loss_10pct_meets_its_expectations() {
    run_named("leader-kill-loss-10pct");
}

#[test]
fn loss_1pct_meets_its_expectations() {
    run_shipped_for(SHIPPED[17].0, SHIPPED[17].1, Some(Duration::from_secs(300)));
}

/// Issue 19, class 2: a node paused for 4 s, again and again, is never declared dead and
/// nobody is declared dead after it resumes (fails without the suspicion floor).
#[test]
fn pause_4s_meets_its_expectations() {
    run_named("pause-4s");
}

#[test]
fn burst_loss_5pct_meets_its_expectations() {
    run_named("burst-loss-5pct");
}

#[test]
fn one_way_cut_meets_its_expectations() {
    run_named("one-way-cut");
}

#[test]
fn tour_meets_its_expectations() {
    run_named("tour");
}

/// After a partition heals, the cut-off side's suspicions of the majority, raised across the
/// cut, used to run out just after the heal, before any refutation could cross, and one verdict
/// confirmed the next at once (182 false positives in the 1,000-node tour, seed 1). A late
/// confirmation at a node whose health dropped, and a verdict after contact came back, now get
/// a direct check of the suspect first. The tour's faults at 128 nodes, seeds 1..3: 30 running
/// nodes declared dead before, 7 after; what is left are verdicts in the first 0.3 s after the
/// heal, before any contact (release build, `meshkit-sim run scenarios/tour.toml --nodes 128
/// --seeds 1..4 --json`, field `false_positives`).
#[test]
fn the_cut_off_side_checks_the_majority_before_declaring_it_dead_after_a_heal() {
    let scenario = Scenario::from_file(&dir().join("tour.toml")).unwrap();
    let mut total = 0;
    for seed in 1..=3 {
        let mut options = RunOptions::seed(seed);
        options.nodes = Some(128);
        options.explain_false_positives = true;
        let report = meshkit_sim::run(&scenario, options).unwrap();
        for v in &report.false_positive_log {
            // What is left is a verdict just after the heal, by a node that had no contact
            // with the other side yet.
            assert!(
                v.across_healed_cut && v.since_heal_s.is_some_and(|s| s < 2.0),
                "seed {seed}: {}",
                meshkit_sim::report::explain_line(v)
            );
        }
        total += report.false_positives;
    }
    assert!(
        total <= 10,
        "{total} running nodes declared dead after the heal, over seeds 1..3 (before the fix: 30, after: 7)"
    );
}

/// `RunOptions::mass_probes` and `RunOptions::minority_rules` (`meshkit-sim --mass-probes`,
/// `--minority-rules`) reach every node's configuration: at `minority-cut`, seed 1, each run
/// differs from the default's, and the one with mass probes meets the file's bound, which the
/// default misses.
#[test]
fn the_opt_in_switches_reach_the_nodes() {
    let scenario = Scenario::from_file(&dir().join("minority-cut.toml")).unwrap();
    let off = meshkit_sim::run(&scenario, RunOptions::seed(1)).unwrap();
    let mut options = RunOptions::seed(1);
    options.mass_probes = true;
    let mass = meshkit_sim::run(&scenario, options).unwrap();
    let mut options = RunOptions::seed(1);
    options.minority_rules = true;
    let minority = meshkit_sim::run(&scenario, options).unwrap();
    assert_ne!(off.trace_hash, mass.trace_hash);
    assert_ne!(off.trace_hash, minority.trace_hash);
    assert_ne!(mass.trace_hash, minority.trace_hash);
    assert!(!off.passed(), "the default misses the bound on seed 1");
    assert!(mass.passed(), "{:?}", mass.expectations_failed);
    assert!(mass.replay.ends_with(" --mass-probes"), "{}", mass.replay);
    assert!(
        minority.replay.ends_with(" --minority-rules"),
        "{}",
        minority.replay
    );
}

#[test]
#[ignore = "issue 19 class 4 is open: the cut-off 3 of 16 hold the majority Dead after 27.8 s at p50 over seeds 1..20 by default (max 18.7 s, 3 of 20 seeds over 18 s, with the opt-in mass probes, 17.8 s p50 with the opt-in minority rules, both costing false positives after heals), the file's bound is 18 s"]
fn minority_cut_meets_its_expectations() {
    run_named("minority-cut");
}

#[test]
#[ignore = "issue 19 class 4 is open: at 100 nodes the cut-off 5 do not hold the whole majority Dead within the 120 s cut (112.8 s on seed 1 with the opt-in minority rules), the file's bound is 18 s"]
fn minority_cut_5pct_meets_its_expectations() {
    run_named("minority-cut-5pct");
}

/// The surge plan boots the spares and they leave at its deadline: every join and every
/// leave is seen by the mesh (`joins_seen_min`, `leaves_seen_min`), with no false positive.
#[test]
fn membership_surge_plan_meets_its_expectations() {
    run_named("membership-surge-plan");
}
