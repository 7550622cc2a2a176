//! Claims MeshKit makes about its protocol, checked end to end on the simulator: the core and the
//! simulator together, at mesh sizes small enough for the default (debug) test suite. The same
//! claims at 1,000 and 10,000 nodes are in `docs/benchmarks.md`.

use meshkit_sim::{RunOptions, RunReport, Scenario};

fn run(text: &str, seed: u64) -> RunReport {
    let scenario = Scenario::parse(text, "inline.toml").expect("inline scenario parses");
    let report = meshkit_sim::run(&scenario, RunOptions::seed(seed)).expect("run completes");
    assert!(
        report.invariant_violations.is_empty(),
        "{:?}",
        report.invariant_violations
    );
    report
}

fn crashes(profile: &str) -> String {
    format!(
        "name = \"claims\"\n[topology]\nnodes = 64\nprofile = \"{profile}\"\n[run]\nduration = \"100s\"\n\
         [[fault]]\nat = \"10s\"\naction = \"crash\"\nnodes = \"1\"\ncount = 4\nevery = \"20s\"\n"
    )
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// Lifeguard with a log-scaled minimum suspicion and confirmation-shrunk timeouts detects crashes
/// at least 20% sooner than memberlist's defaults at 64 nodes, on the same seeds and faults,
/// without more false positives. (The 4 s floor of the minimum suspicion timeout, which lets a
/// member stalled for a few seconds refute, costs the small meshes most: 0.72 of memberlist's
/// median here, 0.4 at 1,000 nodes, where the target is 0.7; docs/benchmarks.md,
/// "Pauses and cut-off minorities".)
#[test]
fn default_profile_detects_sooner_than_memberlist() {
    let (mut lan, mut ml) = (Vec::new(), Vec::new());
    let (mut lan_fp, mut ml_fp) = (0, 0);
    for seed in 1..=2 {
        let a = run(&crashes("lan"), seed);
        let b = run(&crashes("memberlist"), seed);
        lan.extend(a.detections_s.iter().copied());
        ml.extend(b.detections_s.iter().copied());
        lan_fp += a.false_positives;
        ml_fp += b.false_positives;
    }
    let (lan, ml) = (median(lan), median(ml));
    assert!(
        lan <= 0.8 * ml,
        "lan p50 {lan:.2}s vs memberlist p50 {ml:.2}s"
    );
    assert!(
        lan_fp <= ml_fp,
        "false positives: lan {lan_fp}, memberlist {ml_fp}"
    );
}

fn steady(nodes: u32, profile: &str) -> f64 {
    let text = format!(
        "name = \"steady\"\n[topology]\nnodes = {nodes}\nprofile = \"{profile}\"\n[run]\nduration = \"95s\"\n"
    );
    run(&text, 1).bytes_per_node_s
}

/// Bucketed anti-entropy costs each node one digest exchange per period whatever the mesh size,
/// where memberlist's full-state push-pull grows with N.
#[test]
fn anti_entropy_cost_does_not_grow_with_the_mesh() {
    let (small, large) = (steady(40, "lan"), steady(320, "lan"));
    assert!(
        large < small * 1.25,
        "lan: {small:.0} B/s at 40 nodes, {large:.0} B/s at 320"
    );
    let (small, large) = (steady(40, "memberlist"), steady(320, "memberlist"));
    assert!(
        large > small * 3.0,
        "memberlist: {small:.0} B/s at 40 nodes, {large:.0} B/s at 320"
    );
}

/// A 50/50 partition that outlives the suspicion timeout heals to one view within two
/// anti-entropy periods (60 s), with no operator action and no false positive.
#[test]
fn partition_heals_within_two_anti_entropy_periods() {
    let text = "name = \"heal\"\n[topology]\nnodes = 80\n[run]\nduration = \"130s\"\n\
                [[fault]]\nat = \"10s\"\naction = \"partition\"\nsplit = 0.5\nheal_after = \"50s\"\n";
    for seed in 1..=2 {
        let r = run(text, seed);
        let heal = r.heal_s.expect("a partition was healed");
        assert!(heal <= 60.0, "seed {seed}: heal took {heal:.1}s");
        assert_eq!(r.false_positives, 0, "seed {seed}");
    }
}
