//! The fault timeline: when each scenario fault fires, and which nodes it picks.
//!
//! A scenario's `[[fault]]` entries expand into [`FaultEvent::Fire`] occurrences at fixed virtual
//! times. Firing a fault may schedule follow-ups (a restart after a crash, a heal after a
//! partition, the end of a pause, loss change or skew); those carry a token so that a follow-up
//! made stale by a later fault (the node crashed while paused, a newer loss change) does nothing.
//! The engine applies the events to its nodes; this module only decides *what* and *whom*.
//!
//! Random choices (which nodes, how to split) come from the run's fault stream, a child of the
//! run seed that nothing else draws from, so the same seed picks the same victims whatever the
//! protocol profile and whatever the network did.

use core::time::Duration;

use meshkit::Instant;
use meshkit::diag::fault::FaultKind;
use rand::RngExt;
use rand_chacha::ChaCha8Rng;

use crate::scenario::{FaultSpec, NodeSelector};

/// How many datagrams a paused node queues; later ones are dropped (a full socket buffer).
pub(crate) const PAUSE_INBOX_MAX_DATAGRAMS: usize = 1_024;
/// How many random live seeds a restarted node joins through.
pub(crate) const RESTART_JOIN_SEEDS: usize = 3;
/// How many gossip rounds a leaving node keeps running to spread its leave.
pub(crate) const LEAVE_LINGER_ROUNDS: u32 = 5;

/// Something the fault timeline asks the engine to do. The reverts of faults are not here:
/// every fault is a core fault plan, which reverts by itself (see `engine/plans.rs`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum FaultEvent {
    /// One occurrence of scenario fault number `fault` (index into the scenario's faults).
    Fire {
        /// Index of the fault entry.
        fault: u32,
    },
    /// A leaving node stops.
    LeaveDone {
        /// Node index.
        node: u32,
        /// The node's life counter when it left.
        life: u32,
    },
}

/// Every occurrence of every scenario fault before `end`, as `(time, event)` in file order.
/// A fault with a `jitter` fires each occurrence up to that much late, drawn from `rng` (the
/// fault stream); faults without one draw nothing, so their runs are as before.
pub(crate) fn timeline(
    faults: &[FaultSpec],
    end: Instant,
    rng: &mut ChaCha8Rng,
) -> Vec<(Instant, FaultEvent)> {
    let mut out = Vec::new();
    for (index, spec) in faults.iter().enumerate() {
        let max_late = u64::try_from(spec.jitter.as_nanos()).unwrap_or(u64::MAX);
        for k in 0..spec.count {
            let late = if max_late == 0 {
                Duration::ZERO
            } else {
                Duration::from_nanos(rng.random_range(0..=max_late))
            };
            let Some(offset) = spec
                .every
                .checked_mul(k)
                .and_then(|e| e.checked_add(spec.at))
                .and_then(|t| t.checked_add(late))
            else {
                break;
            };
            let at = at(offset);
            if at > end {
                break;
            }
            out.push((
                at,
                FaultEvent::Fire {
                    fault: index as u32,
                },
            ));
        }
    }
    out
}

/// How many occurrences of `faults` are due (before jitter) after `end`, the run's length: a
/// `--duration` shorter than the scenario's cuts them off, and the report says how many.
pub(crate) fn occurrences_after(faults: &[FaultSpec], end: Duration) -> u64 {
    faults
        .iter()
        .map(|spec| {
            let due = if spec.at > end {
                0
            } else if spec.every.is_zero() {
                u64::from(spec.count)
            } else {
                // Occurrences k with at + k * every <= end.
                let fit = (end - spec.at).as_nanos() / spec.every.as_nanos() + 1;
                u64::try_from(fit)
                    .unwrap_or(u64::MAX)
                    .min(u64::from(spec.count))
            };
            u64::from(spec.count) - due
        })
        .sum()
}

/// The instant `d` after the start.
pub(crate) fn at(d: Duration) -> Instant {
    Instant::ZERO + d
}

/// Picks the nodes a selector names among `candidates` (sorted node indices).
///
/// Counts and shares draw distinct random candidates (a partial Fisher-Yates shuffle); index
/// selectors keep the named indices that are candidates. The result is sorted.
pub(crate) fn select(sel: &NodeSelector, candidates: &[u32], rng: &mut ChaCha8Rng) -> Vec<u32> {
    let want = match *sel {
        NodeSelector::Count(n) => n as usize,
        NodeSelector::Percent(p) => {
            let share = (candidates.len() as f64 * p / 100.0).round() as usize;
            share.max(1)
        }
        NodeSelector::Range { start, end } => {
            return candidates
                .iter()
                .copied()
                .filter(|i| (start..end).contains(i))
                .collect();
        }
        NodeSelector::Index(i) => {
            return candidates
                .binary_search(&i)
                .map(|_| vec![i])
                .unwrap_or_default();
        }
        // The engine narrows the candidates to the nodes in that lease role before it asks.
        NodeSelector::Holder | NodeSelector::RaftLeader => return candidates.to_vec(),
    };
    let mut pool = candidates.to_vec();
    let want = want.min(pool.len());
    for k in 0..want {
        let j = rng.random_range(k..pool.len());
        pool.swap(k, j);
    }
    pool.truncate(want);
    pool.sort_unstable();
    pool
}

/// Groups for `split`: a random `fraction` of all `nodes` (rounded, at least one, at most all
/// but one) in group 0, the rest in group 1.
pub(crate) fn split_groups(nodes: usize, fraction: f64, rng: &mut ChaCha8Rng) -> Vec<u8> {
    let all: Vec<u32> = (0..nodes as u32).collect();
    let first = ((nodes as f64 * fraction).round() as usize).clamp(1, nodes.saturating_sub(1));
    let chosen = select(&NodeSelector::Count(first as u32), &all, rng);
    let mut group = vec![1u8; nodes];
    for i in chosen {
        group[i as usize] = 0;
    }
    group
}

/// Groups for explicit index selectors: the k-th selector is group k; unlisted nodes form the
/// last group. The scenario was checked for overlaps and bounds before the run.
pub(crate) fn explicit_groups(nodes: usize, groups: &[NodeSelector]) -> Vec<u8> {
    let rest = u8::try_from(groups.len()).unwrap_or(u8::MAX);
    let mut group = vec![rest; nodes];
    for (k, sel) in groups.iter().enumerate() {
        let range = match *sel {
            NodeSelector::Range { start, end } => start as usize..end as usize,
            NodeSelector::Index(i) => i as usize..i as usize + 1,
            // Lease roles are resolved to indices by the engine before it gets here.
            NodeSelector::Count(_)
            | NodeSelector::Percent(_)
            | NodeSelector::Holder
            | NodeSelector::RaftLeader => continue,
        };
        for i in range.filter(|&i| i < nodes) {
            group[i] = u8::try_from(k).unwrap_or(u8::MAX);
        }
    }
    group
}

/// One partition occurrence's drawn groups (`drawn[i]` is node index `i`'s group) as the
/// explicit groups of a core fault plan, which cut the same directed links: the groups in
/// order, empty ones left out. An empty group changes no cut (a datagram is dropped by comparing
/// its two ends' groups, and only group 0 is distinguished), except an empty first group under a
/// one-way cut, which cuts nothing: `None` then, and whenever fewer than two groups are left
/// (nothing to cut).
pub(crate) fn plan_groups(drawn: &[u8], one_way: bool) -> Option<Vec<Vec<u32>>> {
    let count = drawn
        .iter()
        .copied()
        .max()
        .map_or(0, |g| usize::from(g) + 1);
    let mut groups: Vec<Vec<u32>> = vec![Vec::new(); count];
    for (i, &g) in drawn.iter().enumerate() {
        groups[usize::from(g)].push(u32::try_from(i).ok()?);
    }
    if one_way && groups.first().is_none_or(Vec::is_empty) {
        return None;
    }
    groups.retain(|g| !g.is_empty());
    (groups.len() >= 2).then_some(groups)
}

/// Whether the simulator applies plans of `kind`, and if not, why: transport downgrade,
/// certificate expiry and certificate rotation are real-node faults (the simulated network has
/// no HTTP/3 listener and no certificates), and a custom kind is a service's own code. (A
/// membership surge is applied when the run has the spares for it: checked by the scenario
/// parser and `Engine::schedule_plan`.)
pub(crate) fn check_plan_kind(kind: &FaultKind) -> Result<(), crate::PlanError> {
    match kind {
        FaultKind::TransportDowngrade {}
        | FaultKind::CertificateExpiry { .. }
        | FaultKind::CertificateRotation {} => {
            Err(crate::PlanError::RealNodeOnly { kind: kind.name() })
        }
        FaultKind::Custom { name, .. } => Err(crate::PlanError::NotModelled { name: name.clone() }),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use meshkit::diag::fault::{
        ClusterView, FaultPlan, PartitionDirection, PartitionShape as PlanShape, Selector, resolve,
    };
    use rand::SeedableRng;

    /// Lowering keeps every cut: drawn splits, explicit groups with the rest, and the one-way
    /// direction become plan groups that cut the same directed links.
    #[test]
    fn plan_groups_cut_what_the_drawn_groups_did() {
        let mut rng = ChaCha8Rng::seed_from_u64(3);
        let secs = Duration::from_secs;
        for nodes in [2usize, 3, 16, 101] {
            for fraction in [0.05, 0.3, 0.5, 0.9] {
                let drawn = split_groups(nodes, fraction, &mut rng);
                for one_way in [false, true] {
                    let groups = plan_groups(&drawn, one_way).unwrap();
                    let direction = if one_way {
                        PartitionDirection::OneWay
                    } else {
                        PartitionDirection::TwoWay
                    };
                    let kind = FaultKind::Partition {
                        shape: PlanShape::Groups(groups),
                        direction,
                    };
                    let plan = FaultPlan::new(kind, Selector::All, secs(20)).unwrap();
                    let radius = resolve(&plan, &ClusterView::numbered(nodes as u32, 1)).unwrap();
                    let cut = |a: usize, b: usize| {
                        crate::network::Partition {
                            id: 0,
                            group: drawn.clone(),
                            one_way,
                        }
                        .blocks(a, b)
                    };
                    let expected: std::collections::BTreeSet<(u64, u64)> = (0..nodes)
                        .flat_map(|a| (0..nodes).map(move |b| (a, b)))
                        .filter(|&(a, b)| cut(a, b))
                        .map(|(a, b)| (a as u64 + 1, b as u64 + 1))
                        .collect();
                    let got: std::collections::BTreeSet<(u64, u64)> = radius
                        .links
                        .iter()
                        .map(|l| (l.from.get(), l.to.get()))
                        .collect();
                    assert_eq!(got, expected, "{nodes} nodes, split {fraction}");
                }
            }
        }
        let explicit = explicit_groups(
            6,
            &[
                NodeSelector::Range { start: 0, end: 2 },
                NodeSelector::Index(4),
            ],
        );
        assert_eq!(
            plan_groups(&explicit, false).unwrap(),
            [vec![0, 1], vec![4], vec![2, 3, 5]]
        );
        // An empty middle group changes the numbering, not the cuts.
        assert_eq!(
            plan_groups(&[0, 0, 2, 2], false).unwrap(),
            [vec![0, 1], vec![2, 3]]
        );
        // An empty first group cuts nothing one way; two way, the others are still cut.
        assert!(plan_groups(&[1, 1, 2], true).is_none());
        assert_eq!(
            plan_groups(&[1, 1, 2], false).unwrap(),
            [vec![0, 1], vec![2]]
        );
        // One group: nothing to cut.
        assert!(plan_groups(&[1, 1, 1], false).is_none());
    }

    #[test]
    fn the_real_node_kinds_are_refused_with_their_reason() {
        use crate::PlanError;
        assert_eq!(
            check_plan_kind(&FaultKind::TransportDowngrade {}),
            Err(PlanError::RealNodeOnly {
                kind: "transport-downgrade"
            })
        );
        assert_eq!(
            check_plan_kind(&FaultKind::CertificateExpiry { expires_in: None }),
            Err(PlanError::RealNodeOnly {
                kind: "certificate-expiry"
            })
        );
        assert_eq!(
            check_plan_kind(&FaultKind::CertificateRotation {}),
            Err(PlanError::RealNodeOnly {
                kind: "certificate-rotation"
            })
        );
        assert_eq!(
            check_plan_kind(&FaultKind::MembershipSurge { joins: 3 }),
            Ok(())
        );
        assert_eq!(
            check_plan_kind(&FaultKind::Custom {
                name: "slow-disk".to_owned(),
                params: Default::default(),
            }),
            Err(PlanError::NotModelled {
                name: "slow-disk".to_owned()
            })
        );
        assert_eq!(check_plan_kind(&FaultKind::Kill {}), Ok(()));
    }

    #[test]
    fn occurrences_due_after_the_end_are_counted() {
        let text = "name = \"t\"\n[topology]\nnodes = 4\n[run]\nduration = \"100s\"\n\
                    [[fault]]\nat = \"10s\"\naction = \"crash\"\nnodes = \"1\"\ncount = 8\n\
                    every = \"10s\"\n[[fault]]\nat = \"90s\"\naction = \"heal\"\n";
        let s = crate::Scenario::parse(text, "t.toml").unwrap();
        let secs = Duration::from_secs;
        // Crashes at 10, 20, ..., 80 s; a heal at 90 s.
        assert_eq!(occurrences_after(s.faults(), secs(100)), 0);
        assert_eq!(occurrences_after(s.faults(), secs(80)), 1);
        assert_eq!(occurrences_after(s.faults(), secs(55)), 4);
        assert_eq!(occurrences_after(s.faults(), secs(5)), 9);
    }

    #[test]
    fn jitter_delays_each_occurrence_within_its_bound_and_costs_nothing_when_absent() {
        let text = |jitter: &str| {
            format!(
                "name = \"t\"\n[topology]\nnodes = 4\n[run]\nduration = \"100s\"\n\
                 [[fault]]\nat = \"10s\"\naction = \"crash\"\nnodes = \"1\"\ncount = 8\n\
                 every = \"10s\"\n{jitter}"
            )
        };
        let end = at(Duration::from_secs(100));
        let plain = crate::Scenario::parse(&text(""), "t.toml").unwrap();
        let mut rng = ChaCha8Rng::seed_from_u64(7);
        let times: Vec<Instant> = timeline(plain.faults(), end, &mut rng)
            .into_iter()
            .map(|(t, _)| t)
            .collect();
        let on_time: Vec<Instant> = (1..=8).map(|k| at(Duration::from_secs(10 * k))).collect();
        assert_eq!(times, on_time);
        assert_eq!(rng, ChaCha8Rng::seed_from_u64(7), "no jitter, no draw");

        let jittered = crate::Scenario::parse(&text("jitter = \"1s\"\n"), "t.toml").unwrap();
        let times: Vec<Instant> = timeline(jittered.faults(), end, &mut rng)
            .into_iter()
            .map(|(t, _)| t)
            .collect();
        assert_eq!(times.len(), 8);
        for (t, base) in times.iter().zip(&on_time) {
            assert!(
                *t >= *base && *t <= *base + Duration::from_secs(1),
                "{t} vs {base}"
            );
        }
        assert!(times.iter().zip(&on_time).any(|(t, base)| t != base));
    }

    #[test]
    fn count_and_share_pick_distinct_candidates() {
        let mut rng = ChaCha8Rng::seed_from_u64(1);
        let candidates: Vec<u32> = (0..100).filter(|i| i % 3 != 0).collect();
        let picked = select(&NodeSelector::Count(10), &candidates, &mut rng);
        assert_eq!(picked.len(), 10);
        assert!(picked.windows(2).all(|w| w[0] < w[1]));
        assert!(picked.iter().all(|p| candidates.contains(p)));
        let share = select(&NodeSelector::Percent(10.0), &candidates, &mut rng);
        assert_eq!(share.len(), 7);
        let tiny = select(&NodeSelector::Percent(0.1), &candidates, &mut rng);
        assert_eq!(tiny.len(), 1);
        let too_many = select(&NodeSelector::Count(1000), &candidates, &mut rng);
        assert_eq!(too_many, candidates);
    }

    #[test]
    fn index_selectors_keep_only_candidates() {
        let mut rng = ChaCha8Rng::seed_from_u64(1);
        let candidates = [1, 2, 5, 8];
        assert_eq!(
            select(
                &NodeSelector::Range { start: 2, end: 8 },
                &candidates,
                &mut rng
            ),
            vec![2, 5]
        );
        assert_eq!(
            select(&NodeSelector::Index(3), &candidates, &mut rng),
            Vec::<u32>::new()
        );
        assert_eq!(
            select(&NodeSelector::Index(8), &candidates, &mut rng),
            vec![8]
        );
    }

    #[test]
    fn groups_are_formed_as_documented() {
        let mut rng = ChaCha8Rng::seed_from_u64(2);
        let g = split_groups(10, 0.3, &mut rng);
        assert_eq!(g.iter().filter(|&&x| x == 0).count(), 3);
        let g = explicit_groups(
            6,
            &[
                NodeSelector::Range { start: 0, end: 2 },
                NodeSelector::Index(4),
            ],
        );
        assert_eq!(g, vec![0, 0, 2, 2, 1, 2]);
    }
}
