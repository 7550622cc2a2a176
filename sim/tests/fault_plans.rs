//! Core fault plans (docs/diagnostics.md) run through the simulator on virtual time: the blast
//! radius the core resolves is what the simulated mesh suffers, and the plan reverts by itself
//! at its deadline (the dead-man revert), with nobody asking.

use std::time::Duration;

use meshkit::diag::fault::{FaultKind, FaultPlan, PartitionDirection, PartitionShape, Selector};
use meshkit_sim::{PlanError, RunOptions, Scenario, SimError, run_with_plans};

/// A quiet 16-node mesh for 80 virtual seconds, no scenario fault.
fn quiet(nodes: u32) -> Scenario {
    let text = format!(
        r#"
        name = "plans-t"
        [topology]
        nodes = {nodes}
        [network]
        latency = "1ms"
        jitter = "100us"
        [run]
        duration = "80s"
        "#
    );
    Scenario::parse(&text, "plans-t.toml").unwrap_or_else(|e| panic!("{e}"))
}

fn secs(s: u64) -> Duration {
    Duration::from_secs(s)
}

/// Three nodes cut off both ways from 10 s for 25 s: the plan's radius (16 nodes, two groups,
/// 2 x 3 x 13 directed links) is what the network drops, the two sides declare each other dead
/// while it holds, and at its deadline it reverts by itself and the mesh comes back to one view.
#[test]
fn a_partition_plan_cuts_its_blast_radius_and_reverts_at_its_deadline() {
    let kind = FaultKind::Partition {
        shape: PartitionShape::Groups(vec![vec![0, 1, 2]]),
        direction: PartitionDirection::TwoWay,
    };
    let plan = FaultPlan::new(kind, Selector::All, secs(25))
        .and_then(|p| p.with_start(secs(10)))
        .unwrap();
    for seed in 1..=3 {
        let report = run_with_plans(
            &quiet(16),
            RunOptions::seed(seed),
            std::slice::from_ref(&plan),
        )
        .unwrap();
        let [e] = &report.experiments[..] else {
            panic!("seed {seed}: one experiment: {:?}", report.experiments);
        };
        assert_eq!(e.kind, "partition");
        assert_eq!(
            e.nodes,
            (0..16).collect::<Vec<u32>>(),
            "every node takes part"
        );
        assert_eq!(e.groups, [3, 13]);
        assert_eq!(e.links, 2 * 3 * 13);
        assert_eq!((e.activated_s, e.until_s), (10.0, 35.0));
        assert_eq!(
            e.reverted_s,
            Some(35.0),
            "seed {seed}: reverted at its deadline"
        );
        assert_eq!(e.end.as_deref(), Some("deadline"));
        // The cut was applied: datagrams dropped by it, verdicts across it.
        assert_eq!(report.partitions, 1);
        assert!(report.dropped_partition > 0, "seed {seed}");
        assert!(
            report.cut_off_verdicts > 0,
            "seed {seed}: nobody noticed the cut"
        );
        // And undone: one view again, well before the end.
        assert!(
            report.converged,
            "seed {seed}: {:?}",
            report.convergence_note
        );
        let heal = report.heal_s.expect("the heal is measured");
        assert!(heal < 30.0, "seed {seed}: {heal} s to one view");
        assert!(
            report.invariant_violations.is_empty(),
            "{:?}",
            report.invariant_violations
        );
    }
}

/// A kill plan crashes the selected node at its start and restarts it at its deadline: the
/// crash is detected while it lasts, and the restarted node is a member again at the end.
#[test]
fn a_kill_plan_crashes_its_node_and_restarts_it_at_its_deadline() {
    let plan = FaultPlan::new(FaultKind::Kill {}, Selector::Indices(vec![4]), secs(20))
        .and_then(|p| p.with_start(secs(5)))
        .unwrap();
    let mut options = RunOptions::seed(7);
    options.trace_node = Some(4);
    let report = run_with_plans(&quiet(16), options, &[plan]).unwrap();
    let [e] = &report.experiments[..] else {
        panic!("one experiment: {:?}", report.experiments);
    };
    assert_eq!(
        (e.kind.as_str(), &e.nodes[..], e.links),
        ("kill", &[4][..], 0)
    );
    assert_eq!((e.activated_s, e.reverted_s), (5.0, Some(25.0)));
    // Node index 4 is node-5 in the trace.
    let lifecycle: Vec<&String> = report
        .trace
        .iter()
        .filter(|l| l.ends_with("node-5: crashed") || l.ends_with("node-5: restarting"))
        .collect();
    assert_eq!(
        lifecycle,
        [
            "5.000000000s node-5: crashed",
            "25.000000000s node-5: restarting"
        ],
        "crashed at the start, restarted at the deadline"
    );
    assert_eq!(report.crashes, 1);
    assert_eq!(report.undetected, 0, "detected within its 20 s");
    assert!(report.detection_p50_s.is_some_and(|d| d < 20.0));
    assert!(report.converged, "{:?}", report.convergence_note);
    assert!(
        report.invariant_violations.is_empty(),
        "{:?}",
        report.invariant_violations
    );
}

/// A plan that outlasts the run is applied and not reverted within it; the report says so.
#[test]
fn a_plan_past_the_end_of_the_run_has_no_revert() {
    let plan = FaultPlan::new(FaultKind::Pause {}, Selector::Indices(vec![2]), secs(600))
        .and_then(|p| p.with_start(secs(70)))
        .unwrap();
    let report = run_with_plans(&quiet(8), RunOptions::seed(1), &[plan]).unwrap();
    let [e] = &report.experiments[..] else {
        panic!("one experiment: {:?}", report.experiments);
    };
    assert_eq!((e.activated_s, e.until_s), (70.0, 670.0));
    assert_eq!(report.pauses, 1, "node index 2 was paused");
    assert_eq!((e.reverted_s, e.end.as_deref()), (None, None));
}

/// What the simulator cannot apply is refused before anything runs, never ignored; a plan that
/// names what the mesh does not have too (the other kinds are in `fault_kinds.rs`).
#[test]
fn plans_the_simulator_cannot_apply_are_refused() {
    let downgrade =
        FaultPlan::new(FaultKind::TransportDowngrade {}, Selector::All, secs(5)).unwrap();
    assert_eq!(
        run_with_plans(&quiet(8), RunOptions::seed(1), &[downgrade]),
        Err(SimError::Plan(PlanError::RealNodeOnly {
            kind: "transport-downgrade"
        }))
    );
    let beyond = FaultPlan::new(FaultKind::Kill {}, Selector::Indices(vec![8]), secs(5)).unwrap();
    assert!(matches!(
        run_with_plans(&quiet(8), RunOptions::seed(1), &[beyond]),
        Err(SimError::Plan(PlanError::Resolve(_)))
    ));
    // A role nobody holds when the plan starts (no lease group here) is recorded, not run.
    let leader = FaultPlan::new(FaultKind::Kill {}, Selector::RaftLeader, secs(5))
        .and_then(|p| p.with_start(secs(3)))
        .unwrap();
    let report = run_with_plans(&quiet(8), RunOptions::seed(1), &[leader]).unwrap();
    let [e] = &report.experiments[..] else {
        panic!("one record: {:?}", report.experiments);
    };
    assert_eq!(e.activated_s, 3.0);
    assert!(
        e.end
            .as_deref()
            .is_some_and(|s| s.starts_with("unresolved")),
        "{e:?}"
    );
    assert_eq!(report.crashes, 0);
}
