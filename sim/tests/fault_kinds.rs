//! Every fault kind the simulator applies, as a scenario (`action = "plan"`, docs/diagnostics.md):
//! its effect while it is active, and its revert at its deadline by itself.
//!
//! A revert is shown two ways: the mesh is back (the faulty node is Alive in every other node's
//! table at the end, one view), and the network stops doing what the fault did: a run cut off
//! at the plan's deadline counts exactly what the full run counts (the two runs are the same
//! up to that instant, one seed, one trace).

use std::time::Duration;

use meshkit::diag::fault::{FaultKind, FaultPlan, Selector};
use meshkit::diag::probe::ProbeSpec;
use meshkit_sim::{
    PlanError, RunOptions, RunReport, Scenario, SimError, SimProbe, run_with_plans, run_with_probes,
};

/// A scenario of `nodes` nodes for `secs` virtual seconds, `extra` TOML after `[run]`, and one
/// `[[fault]]` per plan: `(at, plan inline table)`.
fn scenario(nodes: u32, secs: u32, extra: &str, plans: &[(&str, &str)]) -> Scenario {
    let mut text = format!(
        "name = \"kinds\"\n[topology]\nnodes = {nodes}\n{extra}\n[run]\nduration = \"{secs}s\"\n"
    );
    for (at, plan) in plans {
        text.push_str(&format!(
            "[[fault]]\nat = \"{at}\"\naction = \"plan\"\nplan = {plan}\n"
        ));
    }
    Scenario::parse(&text, "kinds.toml").unwrap_or_else(|e| panic!("{e}"))
}

fn run(s: &Scenario, seed: u64, watch: Option<u32>) -> RunReport {
    let mut o = RunOptions::seed(seed);
    o.trace_node = watch;
    let r = meshkit_sim::run(s, o).unwrap_or_else(|e| panic!("{e}"));
    assert!(
        r.invariant_violations.is_empty(),
        "{:?}",
        r.invariant_violations
    );
    r
}

/// The same run cut off at `secs`.
fn run_until(s: &Scenario, seed: u64, secs: u64) -> RunReport {
    let mut o = RunOptions::seed(seed);
    o.duration = Some(Duration::from_secs(secs));
    meshkit_sim::run(s, o).unwrap_or_else(|e| panic!("{e}"))
}

/// `(time, observer index, state)` of every state change about node index `w` in a watched
/// run's trace.
fn about(r: &RunReport, w: u32) -> Vec<(f64, u32, String)> {
    let needle = format!("MemberStateChanged {{ node: NodeId({}),", w + 1);
    r.trace
        .iter()
        .filter(|l| l.contains(&needle))
        .map(|l| {
            let (t, rest) = l.split_once("s node-").expect("trace line");
            let (observer, _) = rest.split_once(':').expect("trace line");
            let to = l
                .split("to: ")
                .nth(1)
                .and_then(|s| s.split(',').next())
                .expect("trace line");
            (
                t.parse().expect("time"),
                observer.parse::<u32>().expect("observer") - 1,
                to.to_owned(),
            )
        })
        .collect()
}

/// The observers that moved node `w` to `state` between `from` and `to` seconds.
fn held(r: &RunReport, w: u32, state: &str, from: f64, to: f64) -> Vec<u32> {
    let mut out: Vec<u32> = about(r, w)
        .into_iter()
        .filter(|(t, _, s)| (from..to).contains(t) && s == state)
        .map(|(_, o, _)| o)
        .collect();
    out.sort_unstable();
    out.dedup();
    out
}

/// Whether every other node's last word on `w` is Alive (or it never changed).
fn alive_everywhere_at_end(r: &RunReport, w: u32, nodes: u32) -> bool {
    let events = about(r, w);
    (0..nodes).filter(|&o| o != w).all(|o| {
        events
            .iter()
            .rev()
            .find(|(_, obs, _)| *obs == o)
            .is_none_or(|(_, _, s)| s == "Alive")
    })
}

fn others(nodes: u32, w: u32) -> Vec<u32> {
    (0..nodes).filter(|&o| o != w).collect()
}

fn one_experiment(r: &RunReport) -> &meshkit_sim::ExperimentRecord {
    let [e] = &r.experiments[..] else {
        panic!("one experiment: {:?}", r.experiments);
    };
    e
}

/// Kill: the node is declared dead by every other while it is down, and restarts at the
/// deadline; at the end it is a member again everywhere.
#[test]
fn kill_crashes_the_node_and_restarts_it_at_the_deadline() {
    let s = scenario(
        8,
        45,
        "",
        &[(
            "5s",
            r#"{ duration = "15s", selector = { indices = [2] }, fault = { kind = "kill" } }"#,
        )],
    );
    let r = run(&s, 1, Some(2));
    let e = one_experiment(&r);
    assert_eq!((e.kind.as_str(), &e.nodes[..]), ("kill", &[2][..]));
    assert_eq!((e.activated_s, e.reverted_s), (5.0, Some(20.0)));
    assert_eq!(held(&r, 2, "Dead", 5.0, 20.0), others(8, 2));
    assert!(
        r.trace
            .iter()
            .any(|l| l == "20.000000000s node-3: restarting")
    );
    assert!(alive_everywhere_at_end(&r, 2, 8));
    assert!(r.converged, "{:?}", r.convergence_note);
}

/// Membership surge: at its start it boots the run's spares (`[topology] spares`, down and
/// unknown until then) through the selected nodes, and every member holds each Alive; at its
/// deadline each leaves gracefully and every member holds it Left, none Dead. The record lists
/// the joins and the leaves and the live members at both edges.
#[test]
fn a_membership_surge_boots_the_spares_and_they_leave_at_its_deadline() {
    let plan = r#"{ duration = "20s", selector = { indices = [0, 1] }, fault = { kind = "membership-surge", joins = 3 } }"#;
    let s = scenario(6, 45, "spares = 3", &[("5s", plan)]);
    // Node index 7: the second spare.
    let r = run(&s, 1, Some(7));
    let e = one_experiment(&r);
    assert_eq!(
        (e.kind.as_str(), &e.nodes[..], &e.joined[..], &e.left[..]),
        (
            "membership-surge",
            &[0, 1][..],
            &[6, 7, 8][..],
            &[6, 7, 8][..]
        ),
        "{e:?}"
    );
    assert_eq!((e.activated_s, e.reverted_s), (5.0, Some(25.0)));
    assert_eq!(
        (e.members_at_activation, e.members_at_revert),
        (Some(9), Some(6)),
        "3 joined at the start, 3 left at the end"
    );
    assert!(
        r.trace
            .iter()
            .any(|l| l == "5.000000000s node-8: joining (membership surge)"),
        "{:?}",
        &r.trace[..r.trace.len().min(5)]
    );
    // Nobody knew it before the surge; every member holds it Alive within a few rounds.
    assert!(about(&r, 7).iter().all(|(t, _, _)| *t >= 5.0));
    assert_eq!(held(&r, 7, "Alive", 5.0, 10.0), others(9, 7));
    // It leaves at the deadline: held Left by every member, never Dead.
    let left = held(&r, 7, "Left", 25.0, 30.0);
    assert!((0..6).all(|o| left.contains(&o)), "{left:?}");
    assert!(held(&r, 7, "Dead", 0.0, 45.0).is_empty());
    assert_eq!(
        (r.joins, r.joins_seen, r.leaves, r.leaves_seen),
        (Some(3), Some(3), Some(3), Some(3))
    );
    assert_eq!(r.false_positives, 0, "{:?}", r.first_false_positive);
    assert!(r.converged, "{:?}", r.convergence_note);
}

/// Spares no surge boots touch nothing: the run is the run without them, trace for trace.
#[test]
fn spares_that_never_join_change_nothing() {
    let plan = r#"{ duration = "10s", selector = { indices = [2] }, fault = { kind = "kill" } }"#;
    let without = run(&scenario(6, 30, "", &[("5s", plan)]), 4, None);
    let with = run(&scenario(6, 30, "spares = 4", &[("5s", plan)]), 4, None);
    assert_eq!(with.trace_hash, without.trace_hash);
    assert_eq!(with.converged, without.converged);
    assert_eq!(with.joins, None);
}

/// Pause: a gray failure; the others declare the silent node dead, and at the deadline it
/// resumes, refutes, and is Alive everywhere.
#[test]
fn pause_silences_the_node_until_its_deadline() {
    let s = scenario(
        8,
        40,
        "",
        &[(
            "5s",
            r#"{ duration = "15s", selector = { indices = [2] }, fault = { kind = "pause" } }"#,
        )],
    );
    let r = run(&s, 1, Some(2));
    assert_eq!(r.pauses, 1);
    assert_eq!(held(&r, 2, "Dead", 5.0, 20.0), others(8, 2));
    assert!(r.trace.iter().any(|l| l == "20.000000000s node-3: resumed"));
    assert_eq!(held(&r, 2, "Alive", 20.0, 21.0), others(8, 2));
    assert!(alive_everywhere_at_end(&r, 2, 8));
    assert!(r.converged, "{:?}", r.convergence_note);
}

/// A one-way cut of node 2's outbound links: the others never hear it and declare it dead;
/// what it receives still flows. After the deadline it is alive again everywhere.
#[test]
fn a_one_way_cut_is_declared_dead_and_heals_by_itself() {
    let plan = r#"{ duration = "20s", fault = { kind = "partition", shape = { groups = [[2]] }, direction = "one-way" } }"#;
    let s = scenario(8, 50, "", &[("5s", plan)]);
    let r = run(&s, 3, Some(2));
    let e = one_experiment(&r);
    assert_eq!(
        (e.links, &e.groups[..]),
        (7, &[1, 7][..]),
        "2 -> each other"
    );
    assert!(r.dropped_partition > 0);
    assert_eq!(held(&r, 2, "Dead", 5.0, 25.0), others(8, 2));
    assert!(alive_everywhere_at_end(&r, 2, 8));
    assert!(r.converged, "{:?}", r.convergence_note);
    // No drop after the deadline.
    assert_eq!(run_until(&s, 3, 25).dropped_partition, r.dropped_partition);
}

/// Every partition shape: its groups and link count as documented, datagrams dropped while it
/// holds, none after its deadline, one view at the end.
#[test]
fn every_partition_shape_cuts_its_links_and_reverts() {
    // (shape TOML, direction, regions, expected group sizes, expected cut links) for 8 nodes.
    let cases: &[(&str, &str, u32, &[usize], usize)] = &[
        (r#""halves""#, "two-way", 1, &[4, 4], 32),
        (r#""halves""#, "one-way", 1, &[4, 4], 16),
        (r#""one""#, "two-way", 1, &[1, 7], 14),
        (r#""minority""#, "two-way", 1, &[3, 5], 30),
        (r#""majority""#, "one-way", 1, &[5, 3], 15),
        // The bridge keeps every link; its two sides (3 and 4 of the other 7) lose theirs.
        (r#""bridge""#, "two-way", 1, &[3, 4], 24),
        // k = ceil(4 / 2) = 2: each node keeps 4 of 7 others, so 8 x 3 links are cut.
        (r#""majorities-ring""#, "two-way", 1, &[], 24),
        (r#""regions""#, "two-way", 2, &[4, 4], 32),
        (
            r#"{ groups = [[0, 1], [2]] }"#,
            "two-way",
            1,
            &[2, 1, 5],
            2 * (2 + 10 + 5),
        ),
    ];
    for &(shape, direction, regions, groups, links) in cases {
        let plan = format!(
            r#"{{ duration = "20s", fault = {{ kind = "partition", shape = {shape}, direction = "{direction}" }} }}"#
        );
        let extra = format!("regions = {regions}\n[network]\nlatency = \"1ms\"");
        let s = scenario(8, 60, &extra, &[("5s", &plan)]);
        let r = run(&s, 2, None);
        let e = one_experiment(&r);
        assert_eq!(&e.groups[..], groups, "{shape} {direction}");
        assert_eq!(e.links, links, "{shape} {direction}");
        assert!(r.dropped_partition > 0, "{shape} {direction}");
        assert_eq!(e.reverted_s, Some(25.0), "{shape}");
        assert_eq!(
            run_until(&s, 2, 25).dropped_partition,
            r.dropped_partition,
            "{shape} {direction}: dropped after the deadline"
        );
        assert!(r.converged, "{shape} {direction}: {:?}", r.convergence_note);
    }
}

/// Latency with jitter on node 2's links, longer than a probe timeout: the others suspect it
/// while it lasts; after the deadline no datagram is delayed and it is Alive everywhere.
#[test]
fn latency_slows_the_node_into_suspicion_and_reverts() {
    let plan = r#"{ duration = "20s", selector = { indices = [2] }, fault = { kind = "latency", delay = "700ms", jitter = "100ms" } }"#;
    let s = scenario(8, 50, "", &[("5s", plan)]);
    let r = run(&s, 1, Some(2));
    assert!(r.delayed > 0);
    assert!(
        !held(&r, 2, "Suspect", 5.0, 25.5).is_empty(),
        "nobody suspected the slow node"
    );
    assert_eq!(
        run_until(&s, 1, 25).delayed,
        r.delayed,
        "delayed after the deadline"
    );
    assert!(alive_everywhere_at_end(&r, 2, 8));
    assert!(r.converged, "{:?}", r.convergence_note);
}

/// Loss on node 2's inbound links only: it hears nobody, so it answers nobody, and the others
/// declare it dead; a partial loss on every link drops about its rate. Both revert.
#[test]
fn loss_drops_datagrams_on_its_links_until_its_deadline() {
    let plan = r#"{ duration = "20s", selector = { indices = [2] }, direction = "inbound", fault = { kind = "loss", rate = 1.0 } }"#;
    let s = scenario(8, 50, "", &[("5s", plan)]);
    let r = run(&s, 1, Some(2));
    assert!(r.dropped_loss > 0);
    assert_eq!(held(&r, 2, "Dead", 5.0, 25.0), others(8, 2));
    assert_eq!(run_until(&s, 1, 25).dropped_loss, r.dropped_loss);
    assert!(alive_everywhere_at_end(&r, 2, 8));
    assert!(r.converged, "{:?}", r.convergence_note);

    let partial = scenario(
        8,
        40,
        "",
        &[(
            "5s",
            r#"{ duration = "20s", fault = { kind = "loss", rate = 0.3 } }"#,
        )],
    );
    let at_deadline = run_until(&partial, 4, 25);
    let before = run_until(&partial, 4, 5);
    let sent = at_deadline.datagrams_sent - before.datagrams_sent;
    let lost = at_deadline.dropped_loss - before.dropped_loss;
    let rate = lost as f64 / sent as f64;
    assert!((0.25..0.35).contains(&rate), "measured loss {rate}");
    assert_eq!(
        run(&partial, 4, None).dropped_loss,
        at_deadline.dropped_loss
    );
}

/// Bursty loss (a Gilbert-Elliott chain per link) on node 2's outbound links: bursts long
/// enough to get it suspected; none after the deadline.
#[test]
fn bursty_loss_comes_in_bursts_per_link_and_reverts() {
    let plan = r#"{ duration = "20s", selector = { indices = [2] }, direction = "outbound", fault = { kind = "bursty-loss", enter = 0.2, leave = 0.02, loss = 1.0 } }"#;
    let s = scenario(8, 50, "", &[("5s", plan)]);
    let r = run(&s, 1, Some(2));
    assert!(r.dropped_loss > 0);
    assert!(!held(&r, 2, "Suspect", 5.0, 25.5).is_empty());
    assert_eq!(run_until(&s, 1, 25).dropped_loss, r.dropped_loss);
    assert!(alive_everywhere_at_end(&r, 2, 8));
    assert!(r.converged, "{:?}", r.convergence_note);
}

/// Duplicate and reorder on every link: copies and holds while active, none after; the core
/// takes both in its stride (no false positive).
#[test]
fn duplicate_and_reorder_act_only_while_active() {
    let s = scenario(
        8,
        40,
        "",
        &[
            (
                "5s",
                r#"{ duration = "10s", fault = { kind = "duplicate", rate = 0.5 } }"#,
            ),
            (
                "5s",
                r#"{ duration = "10s", fault = { kind = "reorder", rate = 0.5, max_delay = "200ms" } }"#,
            ),
        ],
    );
    let r = run(&s, 1, None);
    assert!(r.duplicated > 0 && r.held_back > 0);
    let at_deadline = run_until(&s, 1, 15);
    assert_eq!(at_deadline.duplicated, r.duplicated);
    assert_eq!(at_deadline.held_back, r.held_back);
    assert_eq!(run_until(&s, 1, 5).duplicated, 0);
    assert_eq!(r.false_positives, 0);
    assert!(r.converged, "{:?}", r.convergence_note);
}

/// Clock skew: a node whose clock runs 3x fast probes three times as often while it lasts
/// (the mesh sends about 2/8 more), and at the normal rate after its deadline.
#[test]
fn clock_skew_speeds_the_node_up_until_its_deadline() {
    let skewed = scenario(
        8,
        60,
        "",
        &[(
            "20s",
            r#"{ duration = "20s", selector = { indices = [1] }, fault = { kind = "clock-skew", rate = 3.0 } }"#,
        )],
    );
    let quiet = scenario(8, 60, "", &[]);
    let sent = |s: &Scenario, a: u64, b: u64| {
        run_until(s, 1, b).datagrams_sent - run_until(s, 1, a).datagrams_sent
    };
    let during = sent(&skewed, 20, 40) as f64 / sent(&quiet, 20, 40) as f64;
    assert!(during > 1.15, "{during}x the datagrams while skewed");
    let after = sent(&skewed, 40, 60) as f64 / sent(&quiet, 40, 60) as f64;
    assert!((0.95..1.05).contains(&after), "{after}x after the revert");
}

/// Selectors by index, count, share and region pick the documented nodes.
#[test]
fn selectors_pick_by_index_count_share_and_region() {
    let kill = |selector: &str| {
        format!(r#"{{ duration = "5s", selector = {selector}, fault = {{ kind = "pause" }} }}"#)
    };
    let s = scenario(
        8,
        20,
        "regions = 2",
        &[
            ("2s", &kill("{ indices = [0, 5] }")),
            ("2s", &kill("{ count = 3 }")),
            ("2s", &kill("{ share = 25 }")),
            ("2s", &kill(r#"{ region = "r1" }"#)),
        ],
    );
    let r = run(&s, 1, None);
    let nodes: Vec<&[u32]> = r.experiments.iter().map(|e| &e.nodes[..]).collect();
    assert_eq!(nodes[0], [0, 5]);
    assert_eq!(nodes[1].len(), 3);
    assert_eq!(nodes[2].len(), 2, "25% of 8");
    assert_eq!(nodes[3], [1, 3, 5, 7], "region r1: odd indices");
}

const LEASES: &str = r#"
[network]
latency = "1ms"
jitter = "100us"
[leases]
voters = 3
scopes = ["global-control"]
ttl = "3s"
contenders = "3"
[shards]
namespace = "orders"
count = 4
"#;

/// Role selectors are read when the plan starts: a kill of the Raft leader takes a voter, and
/// a later pause of the Raft leader takes the voter elected after it, not the dead one; a
/// lease holder and a shard owner are contenders holding them then.
#[test]
fn role_selectors_name_who_holds_the_role_when_the_plan_starts() {
    let s = scenario(
        10,
        60,
        LEASES,
        &[
            (
                "10s",
                r#"{ duration = "40s", selector = "raft-leader", fault = { kind = "kill" } }"#,
            ),
            (
                "20s",
                r#"{ duration = "5s", selector = "raft-leader", fault = { kind = "pause" } }"#,
            ),
            (
                "30s",
                r#"{ duration = "5s", selector = { lease-holder = "global-control" }, fault = { kind = "pause" } }"#,
            ),
            (
                "40s",
                r#"{ duration = "5s", selector = { shard-owner = "shard/orders/1" }, fault = { kind = "pause" } }"#,
            ),
        ],
    );
    for seed in 1..=3 {
        let r = run(&s, seed, None);
        let nodes: Vec<&[u32]> = r.experiments.iter().map(|e| &e.nodes[..]).collect();
        assert_eq!(nodes.len(), 4, "seed {seed}: {:?}", r.experiments);
        let (killed, paused) = (nodes[0][0], nodes[1][0]);
        assert!(killed < 3 && paused < 3, "seed {seed}: voters");
        assert_ne!(
            killed, paused,
            "seed {seed}: the leader elected after the kill"
        );
        assert!(
            (3..6).contains(&nodes[2][0]),
            "seed {seed}: a contender holds it"
        );
        assert!(
            (3..6).contains(&nodes[3][0]),
            "seed {seed}: a contender owns it"
        );
    }
}

/// What the simulator cannot apply is refused with a typed error saying why: the real-node
/// kinds as given plans, and a membership surge larger than the run's spares, as a given plan
/// and in a scenario file.
#[test]
fn real_node_kinds_and_surges_beyond_the_spares_are_refused_with_their_reason() {
    let quiet = scenario(8, 10, "", &[]);
    let plan = |kind| FaultPlan::new(kind, Selector::All, Duration::from_secs(5)).unwrap();
    assert_eq!(
        run_with_plans(
            &quiet,
            RunOptions::seed(1),
            &[plan(FaultKind::TransportDowngrade {})]
        ),
        Err(SimError::Plan(PlanError::RealNodeOnly {
            kind: "transport-downgrade"
        }))
    );
    assert_eq!(
        run_with_plans(
            &quiet,
            RunOptions::seed(1),
            &[plan(FaultKind::CertificateExpiry { expires_in: None })]
        ),
        Err(SimError::Plan(PlanError::RealNodeOnly {
            kind: "certificate-expiry"
        }))
    );
    assert_eq!(
        run_with_plans(
            &quiet,
            RunOptions::seed(1),
            &[plan(FaultKind::MembershipSurge { joins: 4 })]
        ),
        Err(SimError::Plan(PlanError::NotEnoughSpares {
            joins: 4,
            spares: 0
        }))
    );
    // Two given surges share the spares.
    let spared = scenario(8, 10, "spares = 5", &[]);
    assert_eq!(
        run_with_plans(
            &spared,
            RunOptions::seed(1),
            &[
                plan(FaultKind::MembershipSurge { joins: 3 }),
                plan(FaultKind::MembershipSurge { joins: 3 })
            ]
        ),
        Err(SimError::Plan(PlanError::NotEnoughSpares {
            joins: 6,
            spares: 5
        }))
    );
    let text = "name = \"t\"\n[topology]\nnodes = 4\nspares = 3\n[run]\nduration = \"10s\"\n\
                [[fault]]\nat = \"1s\"\naction = \"plan\"\ncount = 2\nevery = \"3s\"\n\
                plan = { duration = \"5s\", fault = { kind = \"membership-surge\", joins = 2 } }\n";
    let err = Scenario::parse(text, "t.toml").unwrap_err().to_string();
    assert!(
        err.contains("start 4 nodes, but [topology] spares = 3"),
        "{err}"
    );
    assert!(Scenario::parse(&text.replace("spares = 3", "spares = 4"), "t.toml").is_ok());
    // Every plan has a duration.
    let text = text
        .replace("duration = \\\"5s\\\", ", "")
        .replace("duration = \"5s\", ", "");
    assert!(Scenario::parse(&text, "t.toml").is_err());
}

/// A scenario file may hold the real-node faults, because the same file drives real nodes
/// (`meshkit-chaos --env compose`): here each is listed as not modelled over the window it
/// would have lasted, and touches nothing: the run is the run without it, trace for trace.
#[test]
fn real_node_faults_in_a_scenario_file_are_listed_as_not_modelled() {
    let base = "name = \"t\"\n[topology]\nnodes = 6\n[run]\nduration = \"20s\"\n";
    let without = run(&Scenario::parse(base, "t.toml").unwrap(), 3, None);
    for (kind, why) in [
        ("kind = \"transport-downgrade\"", "real-node fault"),
        ("kind = \"certificate-expiry\"", "real-node fault"),
        // A service's own fault type: its effect is the service's code, not the simulator's.
        (
            "kind = \"custom\", name = \"slow-disk\", params = { delay = \"200ms\" }",
            "custom fault type slow-disk is a service's own",
        ),
    ] {
        let text = format!(
            "{base}[[fault]]\nat = \"4s\"\naction = \"plan\"\nplan = {{ duration = \"5s\", \
             fault = {{ {kind} }} }}\n"
        );
        let s = Scenario::parse(&text, "t.toml").unwrap_or_else(|e| panic!("{kind}: {e}"));
        let r = run(&s, 3, None);
        let e = one_experiment(&r);
        assert!(
            e.end
                .as_deref()
                .is_some_and(|end| end.starts_with("not modelled: ") && end.contains(why)),
            "{kind}: {e:?}"
        );
        assert_eq!(
            (e.activated_s, e.until_s, e.reverted_s, e.nodes.len()),
            (4.0, 9.0, None, 0),
            "{kind}"
        );
        assert_eq!(r.trace_hash, without.trace_hash, "{kind} touched the run");
    }
}

/// `heal` ends every active partition, plans included, before their deadline.
#[test]
fn heal_ends_plan_partitions_early() {
    let text = "name = \"t\"\n[topology]\nnodes = 8\n[run]\nduration = \"60s\"\n[[fault]]\n\
                at = \"5s\"\naction = \"plan\"\nplan = { duration = \"40s\", fault = { kind = \
                \"partition\", shape = \"halves\" } }\n[[fault]]\nat = \"15s\"\naction = \
                \"heal\"\n";
    let s = Scenario::parse(text, "t.toml").unwrap();
    let r = run(&s, 1, None);
    let e = one_experiment(&r);
    assert_eq!(
        (e.reverted_s, e.end.as_deref()),
        (Some(15.0), Some("aborted"))
    );
    assert_eq!(run_until(&s, 1, 15).dropped_partition, r.dropped_partition);
}

/// A probe in the simulator detects an injected failure within `interval x failure_threshold
/// + timeout` of virtual time, and sees the recovery after the plan's revert.
#[test]
fn a_probe_detects_a_kill_within_its_bound_and_sees_the_recovery() {
    let interval = Duration::from_secs(1);
    let timeout = Duration::from_millis(300);
    let spec = ProbeSpec::new("reach-node-5")
        .and_then(|s| s.with_timing(interval, timeout))
        .and_then(|s| s.with_history(16, 0))
        .unwrap();
    let threshold = spec.failure_threshold();
    let quiet = scenario(8, 60, "", &[]);
    for (seed, start) in [(1, 10.0), (2, 10.37), (3, 10.9)] {
        let plan = FaultPlan::new(
            FaultKind::Kill {},
            Selector::Indices(vec![5]),
            Duration::from_secs(20),
        )
        .and_then(|p| p.with_start(Duration::from_secs_f64(start)))
        .unwrap();
        let probes = [SimProbe::new(spec.clone(), 0, 5)];
        let r = run_with_probes(&quiet, RunOptions::seed(seed), &[plan], &probes).unwrap();
        let failing: Vec<f64> = r
            .probe_transitions
            .iter()
            .filter(|t| t.state_to == "failing")
            .map(|t| t.at_s)
            .collect();
        let bound = interval.as_secs_f64() * f64::from(threshold) + timeout.as_secs_f64();
        let [detected] = failing[..] else {
            panic!(
                "seed {seed}: one failing transition: {:?}",
                r.probe_transitions
            );
        };
        assert!(
            detected > start && detected - start <= bound,
            "seed {seed}: detected {:.3} s after the kill, bound {bound} s",
            detected - start
        );
        let healthy_after = r
            .probe_transitions
            .iter()
            .any(|t| t.state_to == "healthy" && t.at_s > start + 20.0);
        assert!(healthy_after, "seed {seed}: {:?}", r.probe_transitions);
    }
}

/// The plan syntax docs/diagnostics.md shows parses and runs: a role nobody holds (no lease
/// group here) is recorded as unresolved, the region latency applies.
#[test]
fn the_documented_plan_syntax_parses_and_runs() {
    let doc = include_str!("../../docs/diagnostics.md");
    let block = doc
        .split("```toml\n")
        .skip(1)
        .filter_map(|b| b.split("```").next())
        .find(|b| b.contains("action = \"plan\""))
        .expect("a plan block in docs/diagnostics.md");
    let text = format!(
        "name = \"doc\"\n[topology]\nnodes = 8\nregions = 2\n[run]\nduration = \"200s\"\n{block}"
    );
    let s = Scenario::parse(&text, "doc.toml").unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(s.faults().len(), 2);
    let r = run(&s, 1, None);
    let ends: Vec<&str> = r
        .experiments
        .iter()
        .map(|e| e.end.as_deref().unwrap_or("active"))
        .collect();
    assert_eq!(ends.len(), 4, "{:?}", r.experiments);
    assert_eq!(
        ends.iter().filter(|e| e.starts_with("unresolved")).count(),
        3
    );
    assert!(r.delayed > 0);
}
