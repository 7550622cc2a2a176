//! Tests of the rebalancer: properties over arbitrary maps, member sets and drains (proptest),
//! minimality against a brute-force optimum on small cases, golden plans in the style of raft-rs
//! `datadriven` (`testdata/rebalance.txt`), and the membership surge of the shard tests. The
//! coordinator and a member's side are tested on their own in `coordinator` and `member`.

use alloc::collections::{BTreeMap, BTreeSet};
use core::fmt::Write as _;

use proptest::collection::{btree_set, vec};
use proptest::option;
use proptest::prelude::*;
use proptest::sample::Index;

use super::*;
use crate::id::NodeId;

mod coordinator;
mod member;

fn node(i: u64) -> NodeId {
    NodeId::new(i)
}

fn shard(id: u32) -> ShardId {
    ShardId::new("t", id).expect("a valid namespace")
}

/// A map of shards `t/0..` with the given owners, every shard at fence 1 (owned or not).
fn map_of(owners: &[Option<u64>]) -> ShardMap {
    let mut map = ShardMap::new();
    for (id, owner) in (0u32..).zip(owners) {
        map.add_shard(shard(id)).unwrap();
        if let Some(owner) = owner {
            map.assign(&shard(id), node(*owner), 1).unwrap();
        }
    }
    map
}

fn nodes(ids: impl IntoIterator<Item = u64>) -> BTreeSet<NodeId> {
    ids.into_iter().map(node).collect()
}

/// Applies every move with a fresh fence, one above the shard's, as the lease table would.
fn apply_all(map: &mut ShardMap, moves: &[Move]) {
    for mv in moves {
        let fence = map.fence(&mv.shard).unwrap() + 1;
        map.apply(mv, fence).unwrap();
    }
}

/// The parts of the minimum, computed from the definitions (module docs, "Why the plan is
/// minimal"), independently of the planner.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Minimum {
    orphans: usize,
    excess: usize,
    deficit: usize,
}

impl Minimum {
    fn of(
        map: &ShardMap,
        live: &BTreeSet<NodeId>,
        draining: &BTreeSet<NodeId>,
        b: LoadBounds,
    ) -> Self {
        let eligible = |n: &NodeId| live.contains(n) && !draining.contains(n);
        let orphans = map
            .iter()
            .filter(|(_, a)| !a.owner.is_some_and(|o| eligible(&o)))
            .count();
        // Counted from the shard entries in one pass, not from the map's owner index.
        let mut counts: BTreeMap<NodeId, usize> = live
            .iter()
            .filter(|n| eligible(n))
            .map(|&n| (n, 0))
            .collect();
        for (_, a) in map.iter() {
            if let Some(count) = a.owner.and_then(|o| counts.get_mut(&o)) {
                *count += 1;
            }
        }
        let (mut excess, mut deficit) = (0, 0);
        for &c in counts.values() {
            excess += c.saturating_sub(b.upper());
            deficit += b.lower().saturating_sub(c);
        }
        Self {
            orphans,
            excess,
            deficit,
        }
    }

    /// `max(|O| + X, D)`.
    fn moves(self) -> usize {
        (self.orphans + self.excess).max(self.deficit)
    }

    /// The brief's bound: orphans plus the excess above `upper` (ignores the deficit).
    fn excess_bound(self) -> usize {
        self.orphans + self.excess
    }
}

/// Checks a plan against the map it was made from, applies it, and checks the outcome.
/// Returns the map after the plan.
fn check_plan(
    map: &ShardMap,
    live: &BTreeSet<NodeId>,
    draining: &BTreeSet<NodeId>,
    plan: &Plan,
) -> ShardMap {
    let eligible: BTreeSet<NodeId> = live.difference(draining).copied().collect();
    // Shape: in shard order, each shard once, from its current owner, to an eligible member,
    // with the right reason.
    for pair in plan.moves().windows(2) {
        assert!(
            pair[0].shard < pair[1].shard,
            "moves out of order or repeated"
        );
    }
    for mv in plan.moves() {
        assert_eq!(map.owner(&mv.shard), mv.from, "{mv}");
        assert!(eligible.contains(&mv.to), "{mv}: not eligible");
        assert_ne!(mv.from, Some(mv.to), "{mv}");
        let expected = match mv.from {
            None => Some(MoveReason::Unowned),
            Some(o) if !live.contains(&o) => Some(MoveReason::OwnerDeparted),
            Some(o) if draining.contains(&o) => Some(MoveReason::OwnerDraining),
            Some(_) => None,
        };
        match expected {
            Some(reason) => assert_eq!(mv.reason, reason, "{mv}"),
            None => assert!(
                matches!(
                    mv.reason,
                    MoveReason::OwnerOverloaded | MoveReason::FillUnderloaded
                ),
                "{mv}"
            ),
        }
    }
    let mut after = map.clone();
    apply_all(&mut after, plan.moves());
    // Outcome: exactly one live, non-draining owner per shard; every eligible member in bounds.
    for (shard, a) in after.iter() {
        let owner = a
            .owner
            .unwrap_or_else(|| panic!("{shard} unowned after the plan"));
        assert!(eligible.contains(&owner), "{shard} on {owner}");
    }
    for &member in &eligible {
        let count = after.owned_count(member);
        assert!(
            plan.bounds().contains(count),
            "{member} owns {count}, outside {}",
            plan.bounds()
        );
    }
    for &member in draining {
        assert!(after.is_drained(member), "{member} not drained");
    }
    after
}

/// The fewest moves over every assignment of the shards to eligible members within `bounds`.
fn brute_force_minimum(map: &ShardMap, eligible: &[NodeId], bounds: LoadBounds) -> usize {
    let shards: Vec<Option<NodeId>> = map.iter().map(|(_, a)| a.owner).collect();
    let e = eligible.len();
    let total = e.pow(u32::try_from(shards.len()).unwrap());
    let mut best = usize::MAX;
    for code in 0..total {
        let mut counts = vec![0usize; e];
        let mut moves = 0;
        let mut rest = code;
        for owner in &shards {
            let to = rest % e;
            rest /= e;
            counts[to] += 1;
            if *owner != Some(eligible[to]) {
                moves += 1;
            }
        }
        if counts.iter().all(|&c| bounds.contains(c)) {
            best = best.min(moves);
        }
    }
    assert_ne!(best, usize::MAX, "the bound always admits a placement");
    best
}

// ---------------------------------------------------------------------------------------------
// Unit tests
// ---------------------------------------------------------------------------------------------

#[test]
fn bounds_follow_the_issue() {
    let r = Rebalancer::default();
    let b = |s, e| {
        let b = r.bounds(s, e).unwrap();
        (b.lower(), b.upper(), b.tolerance())
    };
    // mean 10, tolerance max(1, ceil(1)) = 1.
    assert_eq!(b(10_000, 1_000), (9, 11, 1));
    // mean 8.33, tolerance 1: 7.33..=9.33 -> 8..=9.
    assert_eq!(b(10_000, 1_200), (8, 9, 1));
    // mean 13.65, tolerance ceil(1.365) = 2: 11.65..=15.65 -> 12..=15.
    assert_eq!(b(16_384, 1_200), (12, 15, 2));
    // mean 100, tolerance 10.
    assert_eq!(b(1_000, 10), (90, 110, 10));
    // mean 100.1: tolerance ceil(10.01) = 11: 89.1..=111.1 -> 90..=111.
    assert_eq!(b(1_001, 10), (90, 111, 11));
    // Fewer shards than members: tolerance 1.
    assert_eq!(b(3, 10), (0, 1, 1));
    assert_eq!(b(0, 3), (0, 1, 1));
    assert_eq!(r.bounds(5, 0), None);
    assert_eq!(r.tolerance_percent(), DEFAULT_TOLERANCE_PERCENT);
    assert_eq!(Rebalancer::new(25).unwrap().tolerance_percent(), 25);
    let wide = Rebalancer::new(100).unwrap();
    assert_eq!(wide.tolerance_percent(), 100);
    assert_eq!(
        wide.bounds(100, 10).map(|b| (b.lower(), b.upper())),
        Some((0, 20))
    );
    assert_eq!(
        Rebalancer::new(101),
        Err(RebalanceError::ToleranceOutOfRange {
            value: 101,
            max: 100
        })
    );
}

#[test]
fn nothing_to_place_on() {
    let map = map_of(&[Some(1), None]);
    let err = Rebalancer::default()
        .plan(&map, &nodes([1]), &nodes([1]))
        .unwrap_err();
    assert_eq!(err, RebalanceError::NoEligibleMember { shards: 2 });
    assert_eq!(
        err.to_string(),
        "no live, non-draining member to place 2 shards on"
    );
    // An empty map needs no member.
    let plan = Rebalancer::default()
        .plan(&ShardMap::new(), &BTreeSet::new(), &BTreeSet::new())
        .unwrap();
    assert!(plan.is_empty());
}

#[test]
fn drained_once_the_last_shard_is_handed_off() {
    let mut map = map_of(&[Some(1), Some(1), Some(2), Some(2)]);
    let (live, draining) = (nodes([1, 2, 3]), nodes([1]));
    assert!(!map.is_drained(node(1)));
    let plan = Rebalancer::default().plan(&map, &live, &draining).unwrap();
    assert_eq!(plan.len(), 2);
    assert!(!plan.is_empty());
    assert_eq!(plan.clone().into_moves(), plan.moves());
    assert!(plan.moves().iter().all(|m| m.to == node(3)));
    apply_all(&mut map, &plan.moves()[..1]);
    assert!(!map.is_drained(node(1)));
    apply_all(&mut map, &plan.moves()[1..]);
    assert!(map.is_drained(node(1)));
    // A member that never owned anything is drained from the start.
    assert!(map.is_drained(node(9)));
}

/// The brief's `orphans + sum(max(0, count - upper))` is not always reachable: a joining member
/// must be lifted to the lower bound, which can take more than the excess.
#[test]
fn deficit_can_exceed_orphans_plus_excess() {
    let counts = [12, 12, 12, 12, 12, 10, 10, 10, 10];
    let mut owners = Vec::new();
    for (member, &count) in (1u64..).zip(&counts) {
        owners.extend(core::iter::repeat_n(Some(member), count));
    }
    let map = map_of(&owners);
    let live = nodes(1..=10);
    let none = BTreeSet::new();
    let plan = Rebalancer::default().plan(&map, &live, &none).unwrap();
    // 100 shards over 10 members: bounds 9..=11. Excess 5 (one per member at 12), deficit 9
    // (the newcomer), so 9 moves: 5 above the bound plus 4 from members at 10.
    assert_eq!((plan.bounds().lower(), plan.bounds().upper()), (9, 11));
    let min = Minimum::of(&map, &live, &none, plan.bounds());
    assert_eq!((min.excess_bound(), min.deficit), (5, 9));
    assert_eq!(plan.len(), 9);
    assert!(plan.moves().iter().all(|m| m.to == node(10)));
    let reasons = plan
        .moves()
        .iter()
        .filter(|m| m.reason == MoveReason::FillUnderloaded);
    assert_eq!(reasons.count(), 4);
    check_plan(&map, &live, &none, &plan);
}

// ---------------------------------------------------------------------------------------------
// Properties
// ---------------------------------------------------------------------------------------------

/// Owners drawn from ids 1..=members+2, so some owners are never live (departed).
fn scenario(
    max_shards: usize,
    members: u64,
) -> impl Strategy<Value = (Vec<Option<u64>>, BTreeSet<u64>, BTreeSet<u64>)> {
    (
        vec(option::weighted(0.8, 1..=members + 2), 0..=max_shards),
        btree_set(1..=members, 0..=members as usize),
        btree_set(1..=members + 2, 0..=3),
    )
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    /// After the plan every shard has one live, non-draining owner, the bound holds, and the
    /// number of moves is `max(orphans + excess, deficit)`: at least the brief's `orphans +
    /// excess`, and equal to it whenever the deficit does not exceed it. A full plan leaves
    /// nothing to do; re-planning after part of a plan needs no more than the rest of it.
    #[test]
    fn plans_are_valid_and_minimal(
        (owners, live, draining) in scenario(300, 12),
        tolerance in prop_oneof![Just(10u32), 0u32..=100],
        applied in any::<Index>(),
    ) {
        let map = map_of(&owners);
        let (live, draining) = (nodes(live), nodes(draining));
        let rebalancer = Rebalancer::new(tolerance).unwrap();
        let eligible = live.difference(&draining).count();
        let plan = match rebalancer.plan(&map, &live, &draining) {
            Ok(plan) => plan,
            Err(RebalanceError::NoEligibleMember { shards }) => {
                prop_assert!(eligible == 0 && shards == owners.len() && shards > 0);
                return Ok(());
            }
            Err(e) => panic!("{e}"),
        };
        prop_assert_eq!(&plan, &rebalancer.plan(&map, &live, &draining).unwrap());
        let after = check_plan(&map, &live, &draining, &plan);

        if eligible > 0 {
            let min = Minimum::of(&map, &live, &draining, plan.bounds());
            prop_assert_eq!(plan.len(), min.moves(), "{:?}", min);
            prop_assert!(plan.len() >= min.excess_bound());
            if min.deficit <= min.excess_bound() {
                prop_assert_eq!(plan.len(), min.excess_bound());
            }
        }
        prop_assert!(rebalancer.plan(&after, &live, &draining).unwrap().is_empty());

        let done = applied.index(plan.len() + 1);
        let mut partial = map;
        apply_all(&mut partial, &plan.moves()[..done]);
        let replan = rebalancer.plan(&partial, &live, &draining).unwrap();
        prop_assert!(replan.len() <= plan.len() - done);
        check_plan(&partial, &live, &draining, &replan);
    }

    /// On small cases the plan moves exactly as few shards as the best of every assignment of
    /// shards to eligible members within the bound.
    #[test]
    fn plans_match_the_brute_force_optimum(
        (owners, live, draining) in scenario(7, 4),
        tolerance in prop_oneof![Just(10u32), 0u32..=100],
    ) {
        let map = map_of(&owners);
        let (live, draining) = (nodes(live), nodes(draining));
        let eligible: Vec<NodeId> = live.difference(&draining).copied().collect();
        prop_assume!(!eligible.is_empty());
        let rebalancer = Rebalancer::new(tolerance).unwrap();
        let plan = rebalancer.plan(&map, &live, &draining).unwrap();
        check_plan(&map, &live, &draining, &plan);
        prop_assert_eq!(plan.len(), brute_force_minimum(&map, &eligible, plan.bounds()));
    }
}

/// Every small case, not a sample: all owner vectors over 0..=4 shards and owners
/// {none, 1, 2, 3 (never live)}, live {1, 2} or {1, 2} plus a joiner 4, draining none or 1.
#[test]
fn small_cases_exhaustively_match_the_brute_force_optimum() {
    let rebalancer = Rebalancer::default();
    let mut cases = 0;
    for shards in 0..=4u32 {
        for code in 0..4usize.pow(shards) {
            let owners: Vec<Option<u64>> = (0..shards)
                .map(|i| match code / 4usize.pow(i) % 4 {
                    0 => None,
                    k => Some(k as u64),
                })
                .collect();
            let map = map_of(&owners);
            for live in [nodes([1, 2]), nodes([1, 2, 4])] {
                for draining in [nodes([]), nodes([1])] {
                    let eligible: Vec<NodeId> = live.difference(&draining).copied().collect();
                    let plan = rebalancer.plan(&map, &live, &draining).unwrap();
                    check_plan(&map, &live, &draining, &plan);
                    assert_eq!(
                        plan.len(),
                        brute_force_minimum(&map, &eligible, plan.bounds()),
                        "{owners:?} live {live:?} draining {draining:?}"
                    );
                    cases += 1;
                }
            }
        }
    }
    assert_eq!(cases, 4 * (1 + 4 + 16 + 64 + 256));
}

// ---------------------------------------------------------------------------------------------
// Membership surge (moves / minimum <= 1.2)
// ---------------------------------------------------------------------------------------------

/// The issue's target for moves / minimum moves.
const SURGE_TARGET_RATIO: f64 = 1.2;

/// `members` members own `shards` shards, balanced by a first plan; then `joiners` join or
/// `leavers` depart at once. Returns the plan and the minimum.
fn surge(shards: u32, members: u64, joiners: u64, leavers: u64) -> (Plan, Minimum, ShardMap) {
    let rebalancer = Rebalancer::default();
    let mut map = ShardMap::new();
    for id in 0..shards {
        map.add_shard(ShardId::new("surge", id).unwrap()).unwrap();
    }
    let none = BTreeSet::new();
    let first = rebalancer.plan(&map, &nodes(1..=members), &none).unwrap();
    apply_all(&mut map, first.moves());
    let live = nodes(1 + leavers..=members + joiners);
    let plan = rebalancer.plan(&map, &live, &none).unwrap();
    let min = Minimum::of(&map, &live, &none, plan.bounds());
    check_plan(&map, &live, &none, &plan);
    (plan, min, map)
}

fn report(name: &str, shards: u32, plan: &Plan, min: Minimum) -> f64 {
    let ratio = plan.len() as f64 / min.moves() as f64;
    let excess_ratio = plan.len() as f64 / min.excess_bound() as f64;
    println!(
        "{name}: {} moves of {shards} shards ({:.1}%), minimum {} = max(orphans {} + excess {}, \
         deficit {}); moves / minimum = {ratio:.3} (target <= {SURGE_TARGET_RATIO}); \
         moves / (orphans + excess) = {excess_ratio:.3}; bounds {}",
        plan.len(),
        100.0 * plan.len() as f64 / f64::from(shards),
        min.moves(),
        min.orphans,
        min.excess,
        min.deficit,
        plan.bounds(),
    );
    ratio
}

/// 1,000 members with 10 shards each; 200 more join at once.
#[test]
fn membership_surge_10_shards_each() {
    let (plan, min, map) = surge(10_000, 1_000, 200, 0);
    assert!(map.owners().all(|(_, c)| c == 10), "balanced start");
    // Bounds 8..=9: every old member sheds one (1,000) but the joiners need 8 each (1,600).
    assert_eq!(min.moves(), 1_600);
    let ratio = report(
        "surge 1,000 + 200 members, 10,000 shards",
        10_000,
        &plan,
        min,
    );
    assert!(ratio <= SURGE_TARGET_RATIO, "moves / minimum = {ratio}");
    assert_eq!(plan.len(), min.moves());
}

/// 16,384 shards over 1,000 members; 200 more join at once.
#[test]
fn membership_surge_16384_shards() {
    let (plan, min, _) = surge(16_384, 1_000, 200, 0);
    let ratio = report(
        "surge 1,000 + 200 members, 16,384 shards",
        16_384,
        &plan,
        min,
    );
    assert!(ratio <= SURGE_TARGET_RATIO, "moves / minimum = {ratio}");
    assert_eq!(plan.len(), min.moves());
}

/// The reverse: 200 of 1,200 members depart at once; only their shards may move.
#[test]
fn membership_exodus_moves_only_orphans() {
    let (plan, min, _) = surge(10_000, 1_200, 0, 200);
    let ratio = report(
        "exodus 1,200 - 200 members, 10,000 shards",
        10_000,
        &plan,
        min,
    );
    assert!(ratio <= SURGE_TARGET_RATIO, "moves / minimum = {ratio}");
    assert_eq!(plan.len(), min.orphans);
    assert!(
        plan.moves()
            .iter()
            .all(|m| m.reason == MoveReason::OwnerDeparted)
    );
}

// ---------------------------------------------------------------------------------------------
// Golden plans (raft-rs `datadriven` style)
// ---------------------------------------------------------------------------------------------

/// `testdata/rebalance.txt`: cases of a command line, input lines, `----`, and the expected
/// output up to a blank line; `#` lines are comments. `REWRITE=1` rewrites the expected outputs
/// from the code (then review the diff).
#[test]
fn golden_plans() {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/src/shard/testdata/rebalance.txt"
    );
    let text = std::fs::read_to_string(path).unwrap();
    let mut rewritten = String::new();
    let mut failures = Vec::new();
    let mut lines = text.lines().enumerate().peekable();
    let mut cases = 0;
    while let Some((n, line)) = lines.next() {
        rewritten.push_str(line);
        rewritten.push('\n');
        if line.trim().is_empty() || line.starts_with('#') {
            continue;
        }
        let command = line;
        let mut input = Vec::new();
        let mut separated = false;
        for (_, line) in lines.by_ref() {
            rewritten.push_str(line);
            rewritten.push('\n');
            if line == "----" {
                separated = true;
                break;
            }
            input.push(line);
        }
        assert!(separated, "line {}: case without ----", n + 1);
        let mut expected = String::new();
        while let Some((_, line)) = lines.next_if(|(_, l)| !l.trim().is_empty()) {
            expected.push_str(line);
            expected.push('\n');
        }
        let actual = run_golden(command, &input);
        rewritten.push_str(&actual);
        if actual != expected {
            failures.push(format!(
                "line {}: {command}\n--- expected\n{expected}--- actual\n{actual}",
                n + 1
            ));
        }
        cases += 1;
    }
    if std::env::var_os("REWRITE").is_some() {
        std::fs::write(path, rewritten).unwrap();
        return;
    }
    assert!(cases >= 10, "only {cases} golden cases");
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

fn run_golden(command: &str, input: &[&str]) -> String {
    let mut words = command.split_whitespace();
    let verb = words.next().unwrap();
    let args: BTreeMap<&str, &str> = words
        .map(|w| {
            w.split_once('=')
                .unwrap_or_else(|| panic!("argument {w}: key=value"))
        })
        .collect();
    match verb {
        "plan" => golden_plan(&args, input),
        "scope" => golden_scope(input),
        "bounds" => {
            let num = |k: &str| args[k].parse::<usize>().unwrap();
            let tolerance = args.get("tolerance").map_or(10, |t| t.parse().unwrap());
            let r = Rebalancer::new(tolerance).unwrap();
            match r.bounds(num("shards"), num("members")) {
                Some(b) => format!("{b} (tolerance {})\n", b.tolerance()),
                None => "none\n".to_owned(),
            }
        }
        _ => panic!("unknown command {verb}"),
    }
}

/// `plan live=1,2 draining=2 [tolerance=10]`; input lines `<scope> <owner|->[@fence]`, where
/// `<scope>` may end in a range `a..b` (exclusive) for many shards with the same owner.
fn golden_plan(args: &BTreeMap<&str, &str>, input: &[&str]) -> String {
    let ids = |k: &str| -> BTreeSet<NodeId> {
        args.get(k)
            .filter(|v| !v.is_empty())
            .map(|v| v.split(',').map(|i| node(i.parse().unwrap())).collect())
            .unwrap_or_default()
    };
    let (live, draining) = (ids("live"), ids("draining"));
    let tolerance = args.get("tolerance").map_or(10, |t| t.parse().unwrap());
    let mut map = ShardMap::new();
    for line in input {
        let (scope, owner) = line.split_once(' ').unwrap();
        let (owner, fence) = match owner.split_once('@') {
            Some((o, f)) => (o, f.parse::<u64>().unwrap()),
            None => (owner, 1),
        };
        let shards: Vec<ShardId> = match scope.rsplit_once('/') {
            Some((prefix, range)) if range.contains("..") => {
                let (a, b) = range.split_once("..").unwrap();
                let (a, b) = (a.parse::<u32>().unwrap(), b.parse::<u32>().unwrap());
                (a..b)
                    .map(|i| format!("{prefix}/{i}").parse().unwrap())
                    .collect()
            }
            _ => vec![scope.parse().unwrap()],
        };
        for shard in shards {
            map.add_shard(shard.clone()).unwrap();
            if owner != "-" {
                map.assign(&shard, node(owner.parse().unwrap()), fence)
                    .unwrap();
            } else if fence > 0 {
                // An unowned shard whose last lease had this fence.
                map.assign(&shard, node(0), fence).unwrap();
                map.release(&shard, fence).unwrap();
            }
        }
    }
    let rebalancer = Rebalancer::new(tolerance).unwrap();
    let plan = match rebalancer.plan(&map, &live, &draining) {
        Ok(plan) => plan,
        Err(e) => return format!("error: {e}\n"),
    };
    let after = check_plan(&map, &live, &draining, &plan);
    let min = Minimum::of(&map, &live, &draining, plan.bounds());
    assert_eq!(plan.len(), min.moves());
    let eligible: Vec<NodeId> = live.difference(&draining).copied().collect();
    let mut out = String::new();
    writeln!(
        out,
        "bounds {} (mean {}/{} = {:.2}, tolerance {})",
        plan.bounds(),
        map.len(),
        eligible.len(),
        map.len() as f64 / eligible.len() as f64,
        plan.bounds().tolerance()
    )
    .unwrap();
    writeln!(
        out,
        "moves {} = max(orphans {} + excess {}, deficit {})",
        plan.len(),
        min.orphans,
        min.excess,
        min.deficit
    )
    .unwrap();
    for mv in plan.moves() {
        writeln!(out, "move {mv} fence {}", after.fence(&mv.shard).unwrap()).unwrap();
    }
    let counts: Vec<String> = eligible
        .iter()
        .map(|&n| format!("{n}={}", after.owned_count(n)))
        .collect();
    writeln!(out, "after {}", counts.join(" ")).unwrap();
    for &member in &draining {
        writeln!(out, "drained {member} {}", after.is_drained(member)).unwrap();
    }
    out
}

fn golden_scope(input: &[&str]) -> String {
    let mut out = String::new();
    for scope in input {
        match scope.parse::<ShardId>() {
            Ok(s) => writeln!(out, "{scope} -> namespace {} id {}", s.namespace(), s.id()),
            Err(e) => writeln!(out, "{scope} -> error: {e}"),
        }
        .unwrap();
    }
    out
}
