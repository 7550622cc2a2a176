//! The fault catalog (docs/chaos-environment.md, "The fault catalog") runs in both
//! environments: each file meets its own expectations in the simulator (seed 1), and maps onto
//! the default compose stack (5 nodes, 3 spares) without a refusal. The compose runs themselves
//! need Docker: `compose_run.rs` and the documented commands.

use std::path::{Path, PathBuf};

use meshkit_chaos::plan::{self, Action};
use meshkit_sim::{RunOptions, Scenario};

/// The catalog: leader kill, partitions (halves, minority), latency, membership surge and leave,
/// the real-node faults (transport downgrade, certificate expiry, the certificate rotation
/// drill), a chained game day.
const CATALOG: &[&str] = &[
    "leader-kill",
    "raft-leader-kill",
    "partition-heal",
    "partition-minority",
    "latency-injection",
    "membership-surge-join",
    "transport-downgrade",
    "certificate-expiry",
    "certificate-rotation",
    "gameday",
];

/// The default compose stack: `compose/up` brings up 5 nodes and prepares 3 spares.
const STACK: u32 = 5;
const SPARES: [u64; 3] = [6, 7, 8];

fn path(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(format!("../../scenarios/{name}.toml"))
}

#[test]
fn every_catalog_scenario_maps_onto_the_default_compose_stack() {
    for name in CATALOG {
        let s = Scenario::from_file(&path(name)).unwrap_or_else(|e| panic!("{e}"));
        let steps = plan::timeline(&s, STACK, s.duration(), 1)
            .unwrap_or_else(|e| panic!("{name} is refused in compose: {e}"));
        assert!(!steps.is_empty(), "{name} applies some fault");
        let running: Vec<u64> = (1..=u64::from(STACK)).collect();
        plan::spares_needed(&steps, &running, &SPARES)
            .unwrap_or_else(|e| panic!("{name} does not fit the spares: {e}"));
    }
}

#[test]
fn the_surge_scenario_starts_the_three_spares_and_stops_a_member() {
    let s = Scenario::from_file(&path("membership-surge-join")).expect("parses");
    let steps = plan::timeline(&s, STACK, s.duration(), 1).expect("maps");
    assert!(matches!(steps[0].action, Action::Join { .. }), "{steps:?}");
    assert!(matches!(steps[1].action, Action::Leave { .. }), "{steps:?}");
    let running: Vec<u64> = (1..=u64::from(STACK)).collect();
    assert_eq!(plan::spares_needed(&steps, &running, &SPARES), Ok(3));
}

/// The catalog files `sim/tests/scenarios.rs` runs against their expectations already.
const RUN_BY_THE_SIMULATORS_TESTS: &[&str] = &["leader-kill", "raft-leader-kill", "partition-heal"];

/// The other catalog files meet their own expectations in the simulator; the game day at its
/// 150 s.
#[test]
fn the_new_catalog_scenarios_meet_their_expectations_in_the_simulator() {
    for name in CATALOG
        .iter()
        .filter(|n| !RUN_BY_THE_SIMULATORS_TESTS.contains(n))
    {
        let s = Scenario::from_file(&path(name)).expect("parses");
        let report = meshkit_sim::run(&s, RunOptions::seed(1)).expect("runs");
        assert!(report.passed(), "{name}: {}", report.render(s.expect()));
        // The real-node faults are listed, not applied.
        if [
            "transport-downgrade",
            "certificate-expiry",
            "certificate-rotation",
        ]
        .contains(name)
        {
            assert!(
                report.experiments.iter().all(|e| e
                    .end
                    .as_deref()
                    .is_some_and(|end| end.starts_with("not modelled"))),
                "{name}: {:?}",
                report.experiments
            );
        }
        assert!(report.virtual_s >= s.duration().as_secs_f64() - 1.0);
    }
}

/// The rotation drill is one step: every running node, one after another over the plan's 40 s.
#[test]
fn the_rotation_drill_rotates_every_node_over_its_forty_seconds() {
    let s = Scenario::from_file(&path("certificate-rotation")).expect("parses");
    let steps = plan::timeline(&s, STACK, s.duration(), 1).expect("maps");
    assert_eq!(steps.len(), 1, "{steps:?}");
    assert_eq!(
        steps[0].action,
        Action::Rotate {
            nodes: plan::Pick::Percent(100.0),
            over: std::time::Duration::from_secs(40),
        }
    );
}

/// The autoscaler scenario: compose runs it (`compose_run.rs`); the simulator parses it, lists
/// `[autoscale]` as not modelled, runs the rest (membership holds) and passes; it maps onto the
/// default stack with no fault to refuse.
#[test]
fn the_autoscale_scenario_parses_is_not_modelled_in_the_simulator_and_maps_onto_compose() {
    let s = Scenario::from_file(&path("queue-burst-autoscale")).unwrap_or_else(|e| panic!("{e}"));
    let a = s.autoscale().expect("an [autoscale] section");
    assert_eq!(
        (a.queue.as_str(), a.min_workers, a.max_workers),
        ("jobs", 1, 3)
    );
    assert!(a.scale_in_after > a.scale_out_after, "hysteresis");
    let report = meshkit_sim::run(&s, RunOptions::seed(1)).expect("runs");
    assert!(report.passed(), "{}", report.render(s.expect()));
    assert_eq!(report.not_modelled.len(), 1, "{:?}", report.not_modelled);
    assert!(report.not_modelled[0].starts_with("[autoscale]"));
    assert!(
        report
            .render(s.expect())
            .contains("not modelled: [autoscale]")
    );
    let json: serde_json::Value = serde_json::from_str(&report.to_json()).expect("JSON");
    assert!(json["not_modelled"][0].is_string(), "{json}");
    plan::timeline(&s, STACK, s.duration(), 1).expect("nothing refused in compose");
}
