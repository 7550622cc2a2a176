//! Fault plans: validation, the exact link sets of every shape, selectors, and the schedule's
//! self-revert.

use alloc::collections::BTreeSet;
use alloc::string::{String, ToString};
use alloc::vec::Vec;

use proptest::prelude::*;

use super::*;
use crate::id::NodeId;
use crate::lease::Scope;
use crate::shard::ShardId;
use crate::time::{Duration, Instant};

const SECS: Duration = Duration::from_secs(1);

fn id(index: u32) -> NodeId {
    NodeId::new(u64::from(index) + 1)
}

fn link(from: u32, to: u32) -> Link {
    Link {
        from: id(from),
        to: id(to),
    }
}

fn partition(
    shape: PartitionShape,
    direction: PartitionDirection,
    selector: Selector,
) -> FaultPlan {
    FaultPlan::new(
        FaultKind::Partition { shape, direction },
        selector,
        30 * SECS,
    )
    .unwrap()
}

/// Every directed link from a member of `a` to a member of `b`.
fn cross(a: &[NodeId], b: &[NodeId]) -> BTreeSet<Link> {
    a.iter()
        .flat_map(|&from| b.iter().map(move |&to| Link { from, to }))
        .collect()
}

#[test]
fn explicit_groups_cut_exactly_the_links_between_them() {
    let view = ClusterView::numbered(5, 1);
    let groups = PartitionShape::Groups(alloc::vec![alloc::vec![0, 1], alloc::vec![2]]);
    let two_way = resolve(
        &partition(groups.clone(), PartitionDirection::TwoWay, Selector::All),
        &view,
    )
    .unwrap();
    // Groups {0,1}, {2} and the unlisted {3,4}.
    let mut expected = BTreeSet::new();
    for (a, b) in [
        (0, 2),
        (1, 2),
        (0, 3),
        (0, 4),
        (1, 3),
        (1, 4),
        (2, 3),
        (2, 4),
    ] {
        expected.insert(link(a, b));
        expected.insert(link(b, a));
    }
    assert_eq!(two_way.links, expected);
    assert_eq!(
        two_way.groups,
        [
            alloc::vec![id(0), id(1)],
            alloc::vec![id(2)],
            alloc::vec![id(3), id(4)]
        ]
    );
    let one_way = resolve(
        &partition(groups, PartitionDirection::OneWay, Selector::All),
        &view,
    )
    .unwrap();
    let expected: BTreeSet<Link> = [(0, 2), (0, 3), (0, 4), (1, 2), (1, 3), (1, 4)]
        .into_iter()
        .map(|(a, b)| link(a, b))
        .collect();
    assert_eq!(one_way.links, expected, "only from the first group out");
    assert_eq!(one_way.nodes.len(), 5);
}

#[test]
fn regions_and_the_ring_of_five() {
    let view = ClusterView::numbered(6, 3); // r0 = {0, 3}, r1 = {1, 4}, r2 = {2, 5}
    let r = resolve(
        &partition(
            PartitionShape::Regions,
            PartitionDirection::TwoWay,
            Selector::All,
        ),
        &view,
    )
    .unwrap();
    let same_region = |l: &Link| (l.from.get() - 1) % 3 == (l.to.get() - 1) % 3;
    assert_eq!(
        r.links.len(),
        6 * 4,
        "each node loses the 4 outside its region"
    );
    assert!(r.links.iter().all(|l| !same_region(l)));

    // Five members on a ring: each keeps its two neighbours, loses the two across.
    let view = ClusterView::numbered(5, 1);
    let r = resolve(
        &partition(
            PartitionShape::MajoritiesRing,
            PartitionDirection::TwoWay,
            Selector::All,
        ),
        &view,
    )
    .unwrap();
    assert_eq!(r.links.len(), 10);
    assert!(r.groups.is_empty());
    // The kept links form a 5-cycle: every node has exactly two neighbours.
    for n in 0..5 {
        let kept = (0..5)
            .filter(|&m| m != n && !r.links.contains(&link(n, m)))
            .count();
        assert_eq!(kept, 2, "node {n}");
    }
    // Three members: every node already sees everyone within one step; nothing to cut.
    let small = ClusterView::numbered(3, 1);
    assert_eq!(
        resolve(
            &partition(
                PartitionShape::MajoritiesRing,
                PartitionDirection::TwoWay,
                Selector::All
            ),
            &small
        ),
        Err(ResolveError::NoTarget { members: 3 })
    );
}

#[test]
fn link_faults_apply_per_directed_link() {
    let view = ClusterView::numbered(5, 1);
    let loss = FaultKind::Loss { rate: 0.5 };
    let plan = |direction| {
        FaultPlan::new(loss.clone(), Selector::Indices(alloc::vec![0]), 10 * SECS)
            .unwrap()
            .with_links(Selector::Indices(alloc::vec![3]), direction)
            .unwrap()
    };
    let out = resolve(&plan(LinkDirection::Outbound), &view).unwrap();
    assert_eq!(out.links, BTreeSet::from([link(0, 3)]));
    assert_eq!(out.nodes, BTreeSet::from([id(0), id(3)]));
    let inbound = resolve(&plan(LinkDirection::Inbound), &view).unwrap();
    assert_eq!(inbound.links, BTreeSet::from([link(3, 0)]));
    let both = resolve(&plan(LinkDirection::Both), &view).unwrap();
    assert_eq!(both.links, BTreeSet::from([link(0, 3), link(3, 0)]));
    // Default peers: every other member, never a self-link.
    let all = resolve(
        &FaultPlan::new(loss, Selector::Indices(alloc::vec![0, 1]), 10 * SECS).unwrap(),
        &view,
    )
    .unwrap();
    assert_eq!(
        all.links.len(),
        2 * (4 + 4) - 2,
        "0<->1 counted once per direction"
    );
    assert!(all.links.iter().all(|l| l.from != l.to));
    // A node fault touches nodes only.
    let kill = resolve(
        &FaultPlan::new(FaultKind::Kill {}, Selector::Indices(alloc::vec![4]), SECS).unwrap(),
        &view,
    )
    .unwrap();
    assert_eq!((kill.nodes, kill.links.len()), (BTreeSet::from([id(4)]), 0));
    // A node fault has no link ends.
    let kill = FaultPlan::new(FaultKind::Kill {}, Selector::Indices(alloc::vec![4]), SECS).unwrap();
    assert_eq!(link_ends(&kill, &view), Ok(None));
    let beyond = FaultPlan::new(
        FaultKind::Loss { rate: 0.1 },
        Selector::Indices(alloc::vec![9]),
        SECS,
    )
    .unwrap();
    assert!(link_ends(&beyond, &view).is_err());
}

#[test]
fn selectors_resolve_against_the_view() {
    let scope = Scope::new("global-control").unwrap();
    let shard = ShardId::new("orders", 3).unwrap();
    let view = ClusterView::numbered(10, 2)
        .with_raft_leader(Some(id(7)))
        .with_lease_holder(scope.clone(), id(2))
        .with_shard_owner(shard.clone(), id(9));
    let nodes = |selector: Selector, seed: u64| -> Result<Vec<NodeId>, ResolveError> {
        let plan = FaultPlan::new(FaultKind::Pause {}, selector, SECS)
            .unwrap()
            .with_seed(seed);
        resolve(&plan, &view).map(|r| r.nodes.into_iter().collect())
    };
    assert_eq!(nodes(Selector::RaftLeader, 0).unwrap(), [id(7)]);
    assert_eq!(nodes(Selector::LeaseHolder(scope), 0).unwrap(), [id(2)]);
    assert_eq!(nodes(Selector::ShardOwner(shard), 0).unwrap(), [id(9)]);
    assert_eq!(
        nodes(Selector::Region("r1".into()), 0).unwrap(),
        [id(1), id(3), id(5), id(7), id(9)]
    );
    assert_eq!(nodes(Selector::Count(3), 1).unwrap().len(), 3);
    assert_eq!(nodes(Selector::Count(30), 1).unwrap().len(), 10);
    assert_eq!(
        nodes(Selector::Share(25), 1).unwrap().len(),
        3,
        "2.5 rounds up"
    );
    assert_eq!(
        nodes(Selector::Share(1), 1).unwrap().len(),
        1,
        "at least one"
    );
    assert_eq!(nodes(Selector::Share(100), 1).unwrap().len(), 10);
    // Draws follow the seed.
    assert_eq!(nodes(Selector::Count(3), 1), nodes(Selector::Count(3), 1));
    assert!((2..20).any(|s| nodes(Selector::Count(3), s) != nodes(Selector::Count(3), 1)));
    // What the view does not have.
    assert_eq!(
        nodes(Selector::Share(0), 0),
        Err(ResolveError::NoTarget { members: 10 })
    );
    assert_eq!(
        nodes(Selector::Region("r9".into()), 0),
        Err(ResolveError::NoTarget { members: 10 })
    );
    assert_eq!(
        nodes(Selector::Indices(alloc::vec![10]), 0),
        Err(ResolveError::IndexOutOfRange {
            field: "selector",
            index: 10,
            members: 10
        })
    );
    let leaderless = ClusterView::numbered(3, 1);
    let plan = FaultPlan::new(FaultKind::Kill {}, Selector::RaftLeader, SECS).unwrap();
    assert_eq!(
        resolve(&plan, &leaderless).unwrap_err().to_string(),
        "selector: nobody in the view is the raft leader"
    );
    // One: the selected node is the one cut off.
    let one = partition(
        PartitionShape::One,
        PartitionDirection::TwoWay,
        Selector::RaftLeader,
    );
    let r = resolve(&one, &view).unwrap();
    assert_eq!(r.groups[0], [id(7)]);
}

/// The shapes whose first group is drawn: its size for `n` members.
fn first_size(shape: &PartitionShape, n: usize) -> usize {
    match shape {
        PartitionShape::Halves => n / 2,
        PartitionShape::One => 1,
        PartitionShape::Minority => ((n - 1) / 2).max(1),
        PartitionShape::Majority => (n / 2 + 1).min(n - 1),
        _ => unreachable!("not a drawn shape"),
    }
}

fn drawn_shape() -> impl Strategy<Value = PartitionShape> {
    prop_oneof![
        Just(PartitionShape::Halves),
        Just(PartitionShape::One),
        Just(PartitionShape::Minority),
        Just(PartitionShape::Majority),
    ]
}

proptest! {
    /// Drawn shapes: the first group has the documented size, the groups split the members, and
    /// the cut links are exactly those between groups (two-way) or out of the first (one-way).
    #[test]
    fn drawn_shapes_cut_exactly_between_their_groups(
        n in 2u32..40,
        seed in any::<u64>(),
        shape in drawn_shape(),
        one_way in any::<bool>(),
    ) {
        let view = ClusterView::numbered(n, 1);
        let direction = if one_way { PartitionDirection::OneWay } else { PartitionDirection::TwoWay };
        let plan = partition(shape.clone(), direction, Selector::All).with_seed(seed);
        let r = resolve(&plan, &view).unwrap();
        prop_assert_eq!(r.groups.len(), 2);
        let (g0, g1) = (&r.groups[0], &r.groups[1]);
        prop_assert_eq!(g0.len(), first_size(&shape, n as usize));
        let members: BTreeSet<NodeId> = (0..n).map(id).collect();
        let union: BTreeSet<NodeId> = g0.iter().chain(g1).copied().collect();
        prop_assert_eq!(union.len(), n as usize);
        prop_assert_eq!(&union, &members);
        let mut expected = cross(g0, g1);
        if !one_way {
            expected.extend(cross(g1, g0));
        }
        prop_assert_eq!(&r.links, &expected);
        prop_assert_eq!(resolve(&plan, &view).unwrap(), r, "pure: same plan, same view, same radius");
    }

    /// A link fault's ends name exactly the links of its radius: drawn selectors and peers,
    /// every direction.
    #[test]
    fn link_ends_name_exactly_the_radius_links(
        n in 2u32..30,
        seed in any::<u64>(),
        count in 1u32..6,
        share in 1u32..=100,
        direction in prop_oneof![
            Just(LinkDirection::Both),
            Just(LinkDirection::Outbound),
            Just(LinkDirection::Inbound),
        ],
    ) {
        let view = ClusterView::numbered(n, 1);
        let plan = FaultPlan::new(FaultKind::Duplicate { rate: 0.5 }, Selector::Count(count), 10 * SECS)
            .unwrap()
            .with_links(Selector::Share(share), direction)
            .unwrap()
            .with_seed(seed);
        let ends = link_ends(&plan, &view).unwrap().unwrap();
        prop_assert_eq!(ends.direction, direction);
        let mut links = BTreeSet::new();
        for &s in &ends.selected {
            for &p in ends.peers.iter().filter(|&&p| p != s) {
                if direction != LinkDirection::Inbound {
                    links.insert(Link { from: s, to: p });
                }
                if direction != LinkDirection::Outbound {
                    links.insert(Link { from: p, to: s });
                }
            }
        }
        match resolve(&plan, &view) {
            Ok(r) => prop_assert_eq!(r.links, links),
            Err(_) => prop_assert!(links.is_empty()),
        }
    }

    /// A drawn first group comes from the selected nodes only.
    #[test]
    fn the_first_group_is_drawn_from_the_selector(
        n in 4u32..40,
        seed in any::<u64>(),
        region in 0u32..2,
        shape in drawn_shape(),
    ) {
        let view = ClusterView::numbered(n, 2);
        let plan = partition(shape, PartitionDirection::TwoWay, Selector::Region(alloc::format!("r{region}")))
            .with_seed(seed);
        let r = resolve(&plan, &view).unwrap();
        prop_assert!(r.groups[0].iter().all(|node| (node.get() - 1) % 2 == u64::from(region)));
    }

    /// Bridge: one node keeps every link; the two sides lose exactly the links between them.
    #[test]
    fn the_bridge_keeps_one_node_talking_to_both_sides(
        n in 3u32..40,
        seed in any::<u64>(),
        one_way in any::<bool>(),
    ) {
        let view = ClusterView::numbered(n, 1);
        let direction = if one_way { PartitionDirection::OneWay } else { PartitionDirection::TwoWay };
        let r = resolve(&partition(PartitionShape::Bridge, direction, Selector::All).with_seed(seed), &view).unwrap();
        let (a, b) = (&r.groups[0], &r.groups[1]);
        prop_assert_eq!(a.len(), (n as usize - 1) / 2);
        prop_assert_eq!(a.len() + b.len(), n as usize - 1);
        let grouped: BTreeSet<NodeId> = a.iter().chain(b).copied().collect();
        let bridge: Vec<NodeId> = (0..n).map(id).filter(|x| !grouped.contains(x)).collect();
        prop_assert_eq!(bridge.len(), 1);
        prop_assert!(r.links.iter().all(|l| l.from != bridge[0] && l.to != bridge[0]));
        let mut expected = cross(a, b);
        if !one_way {
            expected.extend(cross(b, a));
        }
        prop_assert_eq!(&r.links, &expected);
    }

    /// Majorities ring: symmetric; every node sees a majority (itself included); no two see the
    /// same one.
    #[test]
    fn every_node_of_the_ring_sees_its_own_majority(n in 4u32..30, seed in any::<u64>()) {
        let view = ClusterView::numbered(n, 1);
        let r = resolve(
            &partition(PartitionShape::MajoritiesRing, PartitionDirection::TwoWay, Selector::All).with_seed(seed),
            &view,
        ).unwrap();
        let mut seen = BTreeSet::new();
        for a in 0..n {
            let sees: BTreeSet<u32> = (0..n).filter(|&b| !r.links.contains(&link(a, b))).collect();
            prop_assert!(sees.contains(&a));
            prop_assert!(sees.len() > n as usize / 2, "node {} sees {} of {}", a, sees.len(), n);
            prop_assert!(sees.len() < n as usize, "node {} sees everyone", a);
            prop_assert!(seen.insert(sees), "two nodes see the same majority");
            for b in 0..n {
                prop_assert_eq!(r.links.contains(&link(a, b)), r.links.contains(&link(b, a)));
            }
        }
    }
}

#[test]
fn plan_errors_name_the_field() {
    let parse = |text: &str| -> Result<FaultPlan, String> {
        let raw: RawFaultPlan = toml::from_str(text).map_err(|e| e.message().to_string())?;
        FaultPlan::try_from(raw).map_err(|e| e.to_string())
    };
    let ok = "duration = \"30s\"\n[fault]\nkind = \"kill\"";
    assert_eq!(parse(ok).unwrap().duration(), 30 * SECS);
    let e = |text: &str| parse(text).unwrap_err();
    assert!(e("[fault]\nkind = \"kill\"").contains("missing field `duration`"));
    assert_eq!(
        e("duration = \"0s\"\n[fault]\nkind = \"kill\""),
        "duration = 0ms is out of range: allowed 1ms..=86400000ms"
    );
    assert_eq!(
        e("duration = \"25h\"\n[fault]\nkind = \"kill\""),
        "duration = 90000000ms is out of range: allowed 1ms..=86400000ms"
    );
    assert_eq!(
        e("duration = \"1s\"\nstart = \"2d\"\n[fault]\nkind = \"kill\""),
        "invalid duration \"2d\": unknown unit (ns, us, ms, s, m, h), such as 500ms, 30s, 10m or 1h"
    );
    assert_eq!(
        e("duration = \"1s\"\nselector = { share = 150 }\n[fault]\nkind = \"kill\""),
        "selector.share = 150 is out of range: allowed 0..=100"
    );
    assert_eq!(
        e("duration = \"1s\"\n[fault]\nkind = \"loss\"\nrate = 1.5"),
        "fault.rate = 1.5 is out of range: allowed 0..=1"
    );
    assert_eq!(
        e("duration = \"1s\"\n[fault]\nkind = \"loss\"\nrate = nan"),
        "fault.rate = NaN is out of range: allowed 0..=1"
    );
    assert_eq!(
        e("duration = \"1s\"\n[fault]\nkind = \"clock-skew\"\nrate = 0"),
        "fault.rate = 0 is out of range: allowed 0.01..=100"
    );
    assert_eq!(
        e("duration = \"1s\"\n[fault]\nkind = \"latency\"\ndelay = \"2m\""),
        "fault.delay = 120000ms is out of range: allowed 0ms..=60000ms"
    );
    assert_eq!(
        e("duration = \"1s\"\n[fault]\nkind = \"membership-surge\"\njoins = 0"),
        "fault.joins = 0 is out of range: allowed 1..=100000"
    );
    assert_eq!(
        e(
            "duration = \"1s\"\n[fault]\nkind = \"partition\"\nshape = \"majorities-ring\"\ndirection = \"one-way\""
        ),
        "fault.direction = one-way: the majorities-ring shape is symmetric, use two-way"
    );
    assert_eq!(
        e(
            "duration = \"1s\"\nselector = \"raft-leader\"\n[fault]\nkind = \"partition\"\nshape = \"regions\""
        ),
        "selector = raft leader: the regions shape partitions every member, use \"all\""
    );
    assert_eq!(
        e("duration = \"1s\"\ndirection = \"inbound\"\n[fault]\nkind = \"pause\""),
        "direction applies to link faults only, not to pause"
    );
    assert_eq!(
        e("duration = \"1s\"\npeers = \"all\"\n[fault]\nkind = \"kill\""),
        "peers applies to link faults only, not to kill"
    );
    assert_eq!(
        e(
            "duration = \"1s\"\n[fault]\nkind = \"partition\"\nshape = { groups = [[0, 1], [1, 2]] }"
        ),
        "fault.shape.groups: index 1 is listed twice, or a group is empty"
    );
    assert!(
        e("duration = \"1s\"\nselector = { lease-holder = \"Bad Scope\" }\n[fault]\nkind = \"kill\"")
            .starts_with("selector.lease-holder \"Bad Scope\": ")
    );
    assert!(
        e("duration = \"1s\"\nselector = { shard-owner = \"orders/3\" }\n[fault]\nkind = \"kill\"")
            .starts_with("selector.shard-owner \"orders/3\": ")
    );
    assert!(e("duration = \"1s\"\n[fault]\nkind = \"kill\"\nrate = 1").contains("unknown field"));
    assert!(e("duration = \"1s\"\n[fault]\nkind = \"meteor\"").contains("unknown variant"));
}

#[test]
fn plans_round_trip_through_toml_and_json() {
    let text = r#"
        duration = "1500ms"
        start = "250us"
        selector = { region = "eu" }
        peers = { indices = [0, 2] }
        direction = "outbound"
        seed = 9
        [fault]
        kind = "latency"
        delay = "120ms"
        jitter = "500us"
    "#;
    let plan: FaultPlan = toml::from_str(text).unwrap();
    assert_eq!(plan.start(), Duration::from_micros(250));
    assert_eq!(
        plan.kind(),
        &FaultKind::Latency {
            delay: Duration::from_millis(120),
            jitter: Duration::from_micros(500)
        }
    );
    assert_eq!(plan.direction(), LinkDirection::Outbound);
    let json = serde_json::to_string(&plan).unwrap();
    assert_eq!(serde_json::from_str::<FaultPlan>(&json).unwrap(), plan);
    let toml_text = toml::to_string(&plan).unwrap();
    assert_eq!(toml::from_str::<FaultPlan>(&toml_text).unwrap(), plan);
    for kind in [
        "kind = \"kill\"",
        "kind = \"pause\"",
        "kind = \"partition\"\nshape = \"bridge\"\ndirection = \"one-way\"",
        "kind = \"partition\"\nshape = { groups = [[0], [1, 2]] }",
        "kind = \"bursty-loss\"\nenter = 0.01\nleave = 0.1\nloss = 0.5",
        "kind = \"duplicate\"\nrate = 0.1",
        "kind = \"reorder\"\nrate = 0.1\nmax_delay = \"20ms\"",
        "kind = \"transport-downgrade\"",
        "kind = \"certificate-expiry\"",
        "kind = \"certificate-expiry\"\nexpires_in = \"10m\"",
        "kind = \"clock-skew\"\nrate = 1.5",
        "kind = \"membership-surge\"\njoins = 200",
    ] {
        let plan: FaultPlan =
            toml::from_str(&alloc::format!("duration = \"10s\"\n[fault]\n{kind}"))
                .unwrap_or_else(|e| panic!("{kind}: {e}"));
        let json = serde_json::to_string(&plan).unwrap();
        assert_eq!(
            serde_json::from_str::<FaultPlan>(&json).unwrap(),
            plan,
            "{json}"
        );
    }
}

fn kill_plan(start: Duration, duration: Duration) -> (FaultPlan, BlastRadius) {
    let plan = FaultPlan::new(
        FaultKind::Kill {},
        Selector::Indices(alloc::vec![1]),
        duration,
    )
    .unwrap()
    .with_start(start)
    .unwrap();
    let radius = resolve(&plan, &ClusterView::numbered(3, 1)).unwrap();
    (plan, radius)
}

fn drain(s: &mut FaultSchedule) -> Vec<FaultEvent> {
    core::iter::from_fn(|| s.poll_event()).collect()
}

#[test]
fn the_schedule_reverts_at_the_deadline_by_itself() {
    let mut s = FaultSchedule::new();
    let t0 = Instant::ZERO + 100 * SECS;
    let (plan, radius) = kill_plan(5 * SECS, 30 * SECS);
    let id = s.schedule(t0, plan, radius).unwrap();
    assert!(drain(&mut s).is_empty(), "starts after its delay");
    assert_eq!(s.poll_timeout(), Some(t0 + 5 * SECS));
    s.handle_timeout(t0 + 5 * SECS);
    let events = drain(&mut s);
    assert!(
        matches!(&events[..], [FaultEvent::Activate { id: a, until, .. }] if *a == id && *until == t0 + 35 * SECS),
        "{events:?}"
    );
    // Not a nanosecond early.
    let deadline = s.poll_timeout().unwrap();
    assert_eq!(deadline, t0 + 35 * SECS);
    s.handle_timeout(deadline.saturating_sub(Duration::from_nanos(1)));
    assert!(drain(&mut s).is_empty());
    assert_eq!(s.experiment(id).unwrap().phase, Phase::Active);
    s.handle_timeout(deadline);
    let events = drain(&mut s);
    assert!(
        matches!(&events[..], [FaultEvent::Revert { id: r, reason: EndReason::Deadline, .. }] if *r == id),
        "{events:?}"
    );
    assert_eq!(s.poll_timeout(), None);
    assert_eq!(s.experiments().count(), 0);
}

#[test]
fn a_late_host_never_extends_the_window() {
    let mut s = FaultSchedule::new();
    let (plan, radius) = kill_plan(10 * SECS, 20 * SECS);
    let late = s
        .schedule(Instant::ZERO, plan.clone(), radius.clone())
        .unwrap();
    // The host wakes 15 s late: active for the 5 s left of its window, not 20 s.
    s.handle_timeout(Instant::ZERO + 25 * SECS);
    let events = drain(&mut s);
    assert!(
        matches!(&events[..], [FaultEvent::Activate { id, until, .. }] if *id == late && *until == Instant::ZERO + 30 * SECS),
        "{events:?}"
    );
    assert_eq!(s.poll_timeout(), Some(Instant::ZERO + 30 * SECS));
    // A schedule that sleeps through a whole window never activates it.
    let mut s = FaultSchedule::new();
    let id = s.schedule(Instant::ZERO, plan, radius).unwrap();
    s.handle_timeout(Instant::ZERO + 30 * SECS);
    assert_eq!(
        drain(&mut s),
        [FaultEvent::Cancelled {
            id,
            reason: EndReason::Missed
        }]
    );
    assert_eq!(s.poll_timeout(), None);
}

#[test]
fn reverts_come_before_activations_at_one_instant() {
    let mut s = FaultSchedule::new();
    let (first, r1) = kill_plan(Duration::ZERO, 10 * SECS);
    let (second, r2) = kill_plan(10 * SECS, 10 * SECS);
    // The one that starts at 10 s is scheduled first and has the lower id, so its timer sorts
    // before the other's deadline at the same instant: only the rule puts the revert first.
    let b = s.schedule(Instant::ZERO, second, r2).unwrap();
    let a = s.schedule(Instant::ZERO, first, r1).unwrap();
    assert!(b < a);
    drain(&mut s);
    s.handle_timeout(Instant::ZERO + 10 * SECS);
    let events = drain(&mut s);
    assert!(
        matches!(&events[0], FaultEvent::Revert { id, .. } if *id == a),
        "{events:?}"
    );
    assert!(
        matches!(&events[1], FaultEvent::Activate { id, .. } if *id == b),
        "{events:?}"
    );
}

#[test]
fn abort_and_the_kill_switch_end_experiments_now() {
    let mut s = FaultSchedule::new();
    let (active, ra) = kill_plan(Duration::ZERO, 60 * SECS);
    let (pending, rp) = kill_plan(30 * SECS, 60 * SECS);
    let a = s
        .schedule(Instant::ZERO, active.clone(), ra.clone())
        .unwrap();
    let p = s.schedule(Instant::ZERO, pending, rp).unwrap();
    drain(&mut s);
    s.abort(Instant::ZERO + SECS, a).unwrap();
    assert!(matches!(
        &drain(&mut s)[..],
        [FaultEvent::Revert {
            reason: EndReason::Aborted,
            ..
        }]
    ));
    assert_eq!(
        s.abort(Instant::ZERO + SECS, a),
        Err(AbortError::Unknown { id: a })
    );
    let again = s
        .schedule(Instant::ZERO + SECS, active.clone(), ra.clone())
        .unwrap();
    drain(&mut s);
    assert_eq!(s.engage_kill_switch(Instant::ZERO + 2 * SECS), 2);
    let events = drain(&mut s);
    assert_eq!(events.len(), 2);
    assert!(events.contains(&FaultEvent::Cancelled {
        id: p,
        reason: EndReason::KillSwitch
    }));
    assert!(events.iter().any(|e| matches!(e, FaultEvent::Revert { id, reason: EndReason::KillSwitch, .. } if *id == again)));
    assert_eq!(s.poll_timeout(), None);
    assert_eq!(
        s.schedule(Instant::ZERO + 3 * SECS, active.clone(), ra.clone()),
        Err(ScheduleError::KillSwitchEngaged)
    );
    s.rearm();
    assert!(
        s.schedule(Instant::ZERO + 3 * SECS, active.clone(), ra)
            .is_ok()
    );
    // A radius resolved for another plan is refused.
    let (_, other) = kill_plan(Duration::ZERO, 5 * SECS);
    assert_eq!(
        s.schedule(Instant::ZERO, active, other),
        Err(ScheduleError::RadiusMismatch)
    );
}

/// Names, ids and display forms; the schedule's bound and kill-switch state.
#[test]
fn names_bounds_and_the_kill_switch_state() {
    let shapes = [
        (PartitionShape::Halves, "halves"),
        (PartitionShape::One, "one"),
        (PartitionShape::Minority, "minority"),
        (PartitionShape::Majority, "majority"),
        (PartitionShape::Bridge, "bridge"),
        (PartitionShape::MajoritiesRing, "majorities-ring"),
        (PartitionShape::Regions, "regions"),
        (
            PartitionShape::Groups(alloc::vec![alloc::vec![0]]),
            "groups",
        ),
    ];
    for (shape, name) in shapes {
        assert_eq!(shape.name(), name);
    }
    let scope = Scope::new("global-control").unwrap();
    let shard: ShardId = "shard/orders/3".parse().unwrap();
    let selectors = [
        (Selector::All, "all"),
        (Selector::Indices(alloc::vec![0, 3]), "indices [0, 3]"),
        (Selector::Count(2), "2 drawn"),
        (Selector::Share(20), "20%"),
        (Selector::Region("eu".into()), "region eu"),
        (Selector::LeaseHolder(scope), "holder of global-control"),
        (Selector::RaftLeader, "raft leader"),
        (Selector::ShardOwner(shard), "owner of shard/orders/3"),
    ];
    for (selector, text) in selectors {
        assert_eq!(selector.to_string(), text);
    }

    let mut s = FaultSchedule::new();
    assert!(!s.is_kill_switch_engaged());
    let (plan, radius) = kill_plan(10 * SECS, SECS);
    let first = s
        .schedule(Instant::ZERO, plan.clone(), radius.clone())
        .unwrap();
    assert_eq!(
        first.to_string(),
        alloc::format!("experiment-{}", first.get())
    );
    for _ in 1..MAX_EXPERIMENTS {
        s.schedule(Instant::ZERO, plan.clone(), radius.clone())
            .unwrap();
    }
    assert_eq!(
        s.schedule(Instant::ZERO, plan, radius),
        Err(ScheduleError::Full {
            max: MAX_EXPERIMENTS
        })
    );
    assert_eq!(s.engage_kill_switch(Instant::ZERO), MAX_EXPERIMENTS);
    assert!(s.is_kill_switch_engaged());
    s.rearm();
    assert!(!s.is_kill_switch_engaged());
}

/// The bounds on what one plan may list, and on its start and certificate expiry.
#[test]
fn plans_listing_too_much_are_refused() {
    let too_many: Vec<u32> = (0..=MAX_SELECTOR_INDICES as u32).collect();
    let kill = FaultPlan::new(
        FaultKind::Kill {},
        Selector::Indices(too_many.clone()),
        SECS,
    );
    assert!(matches!(
        kill,
        Err(FaultPlanError::TooMany {
            field: "selector.indices",
            ..
        })
    ));
    let loss = FaultPlan::new(FaultKind::Loss { rate: 0.1 }, Selector::All, SECS)
        .unwrap()
        .with_links(Selector::Indices(too_many.clone()), LinkDirection::Both);
    assert!(matches!(
        loss,
        Err(FaultPlanError::TooMany {
            field: "peers.indices",
            ..
        })
    ));
    let groups = |g: Vec<Vec<u32>>| FaultKind::Partition {
        shape: PartitionShape::Groups(g),
        direction: PartitionDirection::TwoWay,
    };
    let many_groups: Vec<Vec<u32>> = (0..=MAX_PARTITION_GROUPS as u32)
        .map(|i| alloc::vec![i])
        .collect();
    assert!(matches!(
        FaultPlan::new(groups(many_groups), Selector::All, SECS),
        Err(FaultPlanError::TooMany {
            field: "fault.shape.groups",
            ..
        })
    ));
    assert!(matches!(
        FaultPlan::new(groups(alloc::vec![too_many]), Selector::All, SECS),
        Err(FaultPlanError::TooMany {
            field: "fault.shape.groups indices",
            ..
        })
    ));
    assert_eq!(
        FaultPlan::new(
            groups(alloc::vec![alloc::vec![0], alloc::vec![]]),
            Selector::All,
            SECS
        ),
        Err(FaultPlanError::Groups { index: u32::MAX })
    );
    let late = FaultPlan::new(FaultKind::Pause {}, Selector::All, SECS)
        .unwrap()
        .with_start(MAX_START_DELAY + SECS);
    assert!(matches!(late, Err(FaultPlanError::Range(_))));
    let cert = FaultKind::CertificateExpiry {
        expires_in: Some(MAX_CERTIFICATE_EXPIRY + SECS),
    };
    assert!(matches!(
        FaultPlan::new(cert, Selector::All, SECS),
        Err(FaultPlanError::Range(_))
    ));
}

/// Durations below a microsecond are written in nanoseconds and read back exactly.
#[test]
fn a_nanosecond_delay_round_trips() {
    let kind = FaultKind::Latency {
        delay: Duration::from_nanos(1_500),
        jitter: Duration::from_nanos(7),
    };
    let plan = FaultPlan::new(kind, Selector::All, SECS).unwrap();
    let json = serde_json::to_string(&plan).unwrap();
    assert!(
        json.contains("\"7ns\"") && json.contains("\"1500ns\""),
        "{json}"
    );
    assert_eq!(serde_json::from_str::<FaultPlan>(&json).unwrap(), plan);
}

#[test]
fn a_custom_fault_type_parses_checks_and_resolves_like_a_node_fault() {
    let plan: FaultPlan = serde_json::from_str(
        r#"{"duration": "2s", "selector": {"indices": [1]},
            "fault": {"kind": "custom", "name": "slow-disk", "params": {"delay": "200ms"}}}"#,
    )
    .unwrap();
    assert_eq!(plan.kind().name(), "custom");
    assert_eq!(plan.kind().allow_name(), "custom:slow-disk");
    assert!(!plan.kind().is_link_fault());
    // Read back, it is the plan written.
    let again: FaultPlan = serde_json::from_str(&serde_json::to_string(&plan).unwrap()).unwrap();
    assert_eq!(again, plan);
    // A node fault: its radius is the selected nodes, with no links.
    let radius = resolve(&plan, &ClusterView::numbered(3, 1)).unwrap();
    assert_eq!(radius.kind, "custom");
    assert_eq!(radius.nodes, [id(1)].into());
    assert!(radius.links.is_empty());

    let refused = |fault: &str| {
        serde_json::from_str::<FaultPlan>(&alloc::format!(
            r#"{{"duration": "2s", "fault": {fault}}}"#
        ))
        .unwrap_err()
        .to_string()
    };
    assert!(refused(r#"{"kind": "custom", "name": "Slow Disk"}"#).contains("fault.name"));
    assert!(refused(r#"{"kind": "custom", "name": ""}"#).contains("empty"));
    let many: Vec<String> = (0..=MAX_CUSTOM_PARAMS)
        .map(|i| alloc::format!(r#""k{i}": "v""#))
        .collect();
    assert!(
        refused(&alloc::format!(
            r#"{{"kind": "custom", "name": "x", "params": {{{}}}}}"#,
            many.join(", ")
        ))
        .contains("fault.params lists 17")
    );
    let long = "v".repeat(MAX_CUSTOM_PARAM_BYTES + 1);
    assert!(
        refused(&alloc::format!(
            r#"{{"kind": "custom", "name": "x", "params": {{"k": "{long}"}}}}"#
        ))
        .contains("longer than 256 bytes")
    );
    // A built-in kind is never taken for a custom one.
    assert!(refused(r#"{"kind": "slow-disk"}"#).contains("unknown variant"));
}
