//! The scenario-to-actions mapping and the refusals, on scenario text (no Docker).

use core::time::Duration;

use meshkit::diag::fault::{FaultKind, LinkDirection, PartitionShape as CoreShape, Selector};
use meshkit_sim::Scenario;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

use super::{Action, Pick, Refusal, resolve, spares_needed, split_expectations, timeline};

fn scenario(faults: &str) -> Scenario {
    let text = format!("name = \"t\"\n[topology]\nnodes = 5\n[run]\nduration = \"60s\"\n{faults}");
    Scenario::parse(&text, "t.toml").expect("a valid scenario")
}

fn steps(faults: &str) -> Result<Vec<super::Step>, Refusal> {
    timeline(&scenario(faults), 5, Duration::from_secs(60), 7)
}

#[test]
fn the_catalogs_crash_one_is_one_docker_kill_at_20_s() {
    let s = Scenario::from_file(std::path::Path::new(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../scenarios/crash-one.toml"
    )))
    .expect("scenarios/crash-one.toml");
    let t = timeline(&s, 5, s.duration(), 1).expect("crash-one runs in compose");
    assert_eq!(t.len(), 1, "{t:?}");
    assert_eq!(t[0].at, Duration::from_secs(20));
    assert_eq!(t[0].fault, Some(0));
    assert_eq!(
        t[0].action,
        Action::Kill {
            nodes: Pick::Count(1),
            restart_after: None
        }
    );
}

#[test]
fn process_faults_go_to_docker_and_repeat_with_their_restart() {
    let t = steps(
        "[[fault]]\nat = \"10s\"\ncount = 3\nevery = \"15s\"\naction = \"crash\"\nnodes = \"node:2\"\nrestart_after = \"5s\"\n\
         [[fault]]\nat = \"12s\"\naction = \"pause\"\nnodes = \"1\"\nfor = \"4s\"\n\
         [[fault]]\nat = \"50s\"\naction = \"restart\"\nnodes = \"1\"\n",
    )
    .expect("applies");
    let at: Vec<u64> = t.iter().map(|s| s.at.as_secs()).collect();
    assert_eq!(at, [10, 12, 25, 40, 50], "time order: {t:?}");
    assert_eq!(
        t[0].action,
        Action::Kill {
            nodes: Pick::Indices(vec![2]),
            restart_after: Some(Duration::from_secs(5))
        }
    );
    assert_eq!(
        t[1].action,
        Action::Pause {
            nodes: Pick::Count(1),
            duration: Duration::from_secs(4)
        }
    );
    assert_eq!(
        t[4].action,
        Action::Start {
            nodes: Pick::Count(1)
        }
    );
}

#[test]
fn link_faults_go_to_the_chaos_endpoints_and_end_with_the_run_at_the_latest() {
    let t = steps(
        "[[fault]]\nat = \"20s\"\naction = \"partition\"\ngroups = [\"0..2\"]\nheal_after = \"100s\"\n\
         [[fault]]\nat = \"30s\"\naction = \"loss\"\nrate = 0.2\nfor = \"10s\"\n\
         [[fault]]\nat = \"35s\"\naction = \"heal\"\n",
    )
    .expect("applies");
    let Action::Chaos { plan } = &t[0].action else {
        panic!("a partition is a chaos plan: {t:?}");
    };
    // heal_after runs past the end: cut at the run's end (40 s left), not 100 s.
    assert_eq!(plan.duration(), Duration::from_secs(40));
    assert_eq!(
        plan.kind(),
        &FaultKind::Partition {
            shape: CoreShape::Groups(vec![vec![0, 1], vec![2, 3, 4]]),
            direction: Default::default(),
        }
    );
    let Action::Chaos { plan } = &t[1].action else {
        panic!("loss is a chaos plan: {t:?}");
    };
    assert_eq!(plan.kind(), &FaultKind::Loss { rate: 0.2 });
    assert_eq!(plan.duration(), Duration::from_secs(10));
    // One draw per datagram, as the simulator's network: only the sender's side.
    assert_eq!(plan.direction(), LinkDirection::Outbound);
    assert_eq!(t[2].action, Action::Heal);
}

#[test]
fn a_split_partition_draws_its_sides_from_the_seed() {
    let f = "[[fault]]\nat = \"20s\"\naction = \"partition\"\nsplit = 0.4\n";
    let a = steps(f).expect("applies");
    let b = steps(f).expect("applies");
    assert_eq!(a, b, "same seed, same sides");
    let Action::Chaos { plan } = &a[0].action else {
        panic!("{a:?}");
    };
    let FaultKind::Partition {
        shape: CoreShape::Groups(g),
        ..
    } = plan.kind()
    else {
        panic!("{plan:?}");
    };
    assert_eq!(g.len(), 2);
    assert_eq!(g[0].len(), 2, "40% of 5: {g:?}");
    let mut all: Vec<u32> = g.concat();
    all.sort_unstable();
    assert_eq!(all, [0, 1, 2, 3, 4]);
}

#[test]
fn background_loss_runs_the_whole_run() {
    let text =
        "name = \"t\"\n[topology]\nnodes = 5\n[network]\nloss = 0.05\n[run]\nduration = \"60s\"\n";
    let s = Scenario::parse(text, "t.toml").expect("valid");
    let t = timeline(&s, 5, s.duration(), 1).expect("applies");
    assert_eq!(t.len(), 1);
    assert_eq!(t[0].fault, None);
    let Action::Chaos { plan } = &t[0].action else {
        panic!("{t:?}");
    };
    assert_eq!(plan.kind(), &FaultKind::Loss { rate: 0.05 });
    assert_eq!(plan.duration(), Duration::from_secs(60));
}

/// A scenario's `skew` becomes a `clock-skew` plan on the same nodes for its `for`: the nodes
/// run their core's clock at the rate.
#[test]
fn skew_goes_through_the_chaos_endpoints() {
    let t = steps(
        "[[fault]]\nat = \"5s\"\naction = \"skew\"\nnodes = \"node:2\"\nrate = 0.5\nfor = \"20s\"\n",
    )
    .expect("applies in compose");
    let [step] = t.as_slice() else {
        panic!("{t:?}");
    };
    let Action::Chaos { plan } = &step.action else {
        panic!("{t:?}");
    };
    assert_eq!(plan.kind(), &FaultKind::ClockSkew { rate: 0.5 });
    assert_eq!(plan.selector(), &Selector::Indices(vec![2]));
    assert_eq!(plan.duration(), Duration::from_secs(20));
}

/// A leave stops nodes gracefully; the spares a timeline's surges need are summed (a
/// `membership-surge` plan counts, a `join` names ids) so a stack with too few refuses it before
/// anything starts.
#[test]
fn leave_maps_to_a_graceful_stop_and_surges_count_spares() {
    let t = steps("[[fault]]\nat = \"20s\"\naction = \"leave\"\nnodes = \"node:1\"\n")
        .expect("applies in compose");
    assert_eq!(
        t[0].action,
        Action::Leave {
            nodes: Pick::Indices(vec![1])
        }
    );
    // A `membership-surge` plan: the lowest spares, leaving at its deadline.
    let s = Scenario::parse(
        "name = \"t\"\n[topology]\nnodes = 5\nspares = 2\n[run]\nduration = \"60s\"\n\
         [[fault]]\nat = \"5s\"\naction = \"plan\"\nplan = { duration = \"30s\", fault = \
         { kind = \"membership-surge\", joins = 2 } }\n",
        "t.toml",
    )
    .expect("a valid scenario");
    let t = timeline(&s, 5, Duration::from_secs(60), 7).expect("applies in compose");
    let surge = t[0].clone();
    assert_eq!(
        surge.action,
        Action::Join {
            nodes: Pick::Count(2),
            leave_after: Some(Duration::from_secs(30)),
        }
    );
    let running = [1, 2, 3, 4, 5];
    assert_eq!(
        spares_needed(std::slice::from_ref(&surge), &running, &[6, 7, 8]),
        Ok(2)
    );
    assert!(matches!(
        spares_needed(&[surge], &running, &[6]),
        Err(Refusal::NotEnoughSpares {
            joins: 2,
            spares: 1,
            ..
        })
    ));
}

/// The simulator's `join` (contenders held out of the shard pool until then) names indices: on
/// a stack those past its nodes are spares to start, those of running nodes are members
/// already.
#[test]
fn a_join_names_spares_by_index() {
    let s = Scenario::parse(
        "name = \"t\"\n[topology]\nnodes = 8\n[run]\nduration = \"60s\"\n\
         [leases]\nvoters = 3\nscopes = []\ncontenders = \"3..8\"\n\
         [shards]\nnamespace = \"orders\"\ncount = 16\n\
         [[fault]]\nat = \"20s\"\naction = \"join\"\nnodes = \"4..8\"\n",
        "t.toml",
    )
    .expect("a valid scenario");
    let t = timeline(&s, 5, Duration::from_secs(60), 1).expect("applies on 5 nodes + spares");
    assert_eq!(
        t[0].action,
        Action::Join {
            nodes: Pick::Indices(vec![4, 5, 6, 7]),
            leave_after: None,
        }
    );
    let running = [1, 2, 3, 4, 5];
    assert_eq!(spares_needed(&t, &running, &[6, 7, 8]), Ok(3), "ids 6..=8");
    let err = spares_needed(&t, &running, &[6, 7]).expect_err("id 8 is no spare");
    assert!(err.to_string().contains("--spares"), "{err}");
}

#[test]
fn faults_without_a_real_counterpart_are_refused_by_name() {
    for (fault, name) in [
        (
            "action = \"byzantine\"\nattacks = [\"garbage\"]\n",
            "byzantine",
        ),
        (
            "action = \"metadata\"\nnodes = \"1\"\nkey = \"k\"\nvalue_bytes = 8\n",
            "metadata",
        ),
    ] {
        let err = steps(&format!("[[fault]]\nat = \"5s\"\n{fault}"))
            .expect_err(&format!("{name} must be refused"));
        let text = err.to_string();
        assert!(
            matches!(err, Refusal::Unsupported { fault: 0, .. }),
            "{name}: {err:?}"
        );
        assert!(
            text.contains(&format!("({name})")) && text.contains("cannot be applied in compose"),
            "the refusal names the fault: {text}"
        );
    }
}

#[test]
fn an_index_beyond_the_stack_is_refused_with_what_to_do() {
    let err = steps("[[fault]]\nat = \"5s\"\naction = \"crash\"\nnodes = \"node:4\"\n")
        .map(|_| ())
        .and_then(|()| {
            timeline(
                &scenario("[[fault]]\nat = \"5s\"\naction = \"crash\"\nnodes = \"node:4\"\n"),
                3,
                Duration::from_secs(60),
                1,
            )
        })
        .expect_err("index 4 on 3 nodes");
    assert_eq!(
        err,
        Refusal::IndexBeyondStack {
            fault: 0,
            index: 4,
            nodes: 3
        }
    );
    assert!(err.to_string().contains("compose/up --nodes 5"), "{err}");
}

#[test]
fn faults_after_the_end_are_not_steps() {
    let t = steps(
        "[[fault]]\nat = \"50s\"\ncount = 3\nevery = \"10s\"\naction = \"crash\"\nnodes = \"1\"\n",
    )
    .expect("applies");
    assert_eq!(t.len(), 1, "only the one at 50 s fits in 60 s: {t:?}");
}

#[test]
fn picks_resolve_among_candidates_only() {
    let mut rng = ChaCha8Rng::seed_from_u64(1);
    let c = [1, 2, 4, 5];
    assert_eq!(
        resolve(&Pick::Indices(vec![0, 2]), &c, (None, None), &mut rng),
        [1]
    );
    assert_eq!(
        resolve(&Pick::Holder, &c, (Some(4), Some(2)), &mut rng),
        [4]
    );
    assert_eq!(
        resolve(&Pick::RaftLeader, &c, (Some(4), Some(3)), &mut rng),
        Vec::<u64>::new()
    );
    let two = resolve(&Pick::Count(2), &c, (None, None), &mut rng);
    assert_eq!(two.len(), 2);
    assert!(two.iter().all(|n| c.contains(n)), "{two:?}");
    assert_eq!(
        resolve(&Pick::Count(9), &c, (None, None), &mut rng).len(),
        4
    );
    assert_eq!(
        resolve(&Pick::Percent(50.0), &c, (None, None), &mut rng).len(),
        2
    );
}

#[test]
fn expectations_not_measured_in_compose_are_named() {
    let s = Scenario::parse(
        "name = \"t\"\n[topology]\nnodes = 5\n[run]\nduration = \"60s\"\n[expect]\ndetection_p99_s_max = 9.0\nbytes_per_node_s_max = 10.0\n",
        "t.toml",
    )
    .expect("valid");
    let (kept, skipped) = split_expectations(s.expect());
    assert_eq!(kept.detection_p99_s_max, Some(9.0));
    assert_eq!(kept.bytes_per_node_s_max, None);
    assert_eq!(skipped, ["bytes_per_node_s"]);
}
