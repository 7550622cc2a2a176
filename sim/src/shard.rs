//! Shards in the simulator: the shard map the voters' grants build, and the coordinator that
//! plans moves with the core's [`Rebalancer`] and hands them to the engine as lease operations.
//!
//! With a `[shards]` section, shard `i` is the lease scope `shard/{namespace}/{i}`. Unlike the
//! `[leases]` scopes, nobody contends for it: a contender asks for a shard only when the
//! coordinator tells it to, and renews the shards it holds at a third of their TTL.
//!
//! * **The map is a view of the lease table.** Every `GroupEvent::Granted` a voter applies is
//!   fed to [`ShardMap::assign`] with the grant's fencing token, every `Released` / `Expired` to
//!   [`ShardMap::release`]. The three voters apply the same committed entries, so the first to
//!   apply one updates the map and the others' copies are refused as stale fences (ignored).
//! * **The coordinator** stands in for the service that plans shard moves (in a deployment, the
//!   holder of `global-control`). Every lease tick it looks at the pool: running contenders,
//!   minus those a `join` fault still holds out, minus crashed, paused-out and gone ones;
//!   `drain` faults put members in the draining set. When the pool or the draining set changes,
//!   or the map changes in a way no planned move explains (a lease expired, say), it plans
//!   again once the moves under way are done. It starts at most `max_moves_in_flight` moves at
//!   once. A move whose source holds the lease is a **graceful handoff**: a lease transfer, after
//!   which the target holds the shard under a new, higher fencing token. A move from nobody, or
//!   from a node that no longer holds the lease, is an acquire by the target, which the voters
//!   grant once the old lease expired. A move not done within `2 * ttl + 5 s` is dropped and the
//!   map planned again.
//! * **A drain** ends when the map shows the node owning nothing and no move from it is under
//!   way; the node then leaves gracefully (it hands its `[leases]` scopes over first).
//!
//! # Figures
//!
//! * `shard_moves`: changes of a shard's owner (to a node other than its last owner) after the
//!   initial placement, the first time every shard was owned within the load bound.
//! * `shard_moves_min`: for each change of the pool or the draining set after the initial
//!   placement, the length of the first plan made after it. The rebalancer's plans are minimal
//!   (proof in `meshkit::shard`), so this is the fewest moves that change needed from the map
//!   it found; `shard_moves_ratio` is `shard_moves / shard_moves_min`.
//! * `shard_imbalance_max`: at every instant the map settles (every shard owned by an eligible
//!   member, nothing under way, nothing left to plan), the largest `|owned - mean| / mean` over
//!   the eligible members; the largest of those.
//! * `shard_drains`, `shard_drain_max_s`, `shard_drains_unfinished`: drains finished, the
//!   slowest one (from the `drain` fault to the map showing the node empty), and drains whose
//!   node crashed or whose run ended first.

use core::time::Duration;
use std::collections::{BTreeMap, BTreeSet, VecDeque};

use meshkit::shard::{Move, Rebalancer, ShardId, ShardMap};
use meshkit::{Instant, NodeId};

use crate::scenario::ShardSpec;

/// Extra time a move may take beyond two TTLs (an acquire waits for the old lease to expire,
/// and a request retries through up to 8 voters' timeouts).
const MOVE_SLACK: Duration = Duration::from_secs(5);

/// What the engine must do for the coordinator.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Action {
    /// `from` holds shard `shard`: transfer it to `to` (if it no longer holds it, `to`
    /// acquires it instead).
    Transfer {
        shard: usize,
        from: usize,
        to: usize,
    },
    /// `to` asks for shard `shard` until it holds it.
    Acquire { shard: usize, to: usize },
    /// `to` stops asking for shard `shard` (the move was dropped).
    Abandon { shard: usize, to: usize },
    /// Node `node` owns no shard any more: it leaves.
    Drained { node: usize },
}

#[derive(Clone, Debug)]
struct InFlight {
    to: NodeId,
    from: Option<NodeId>,
    deadline: Instant,
}

/// The shard figures of a run.
#[derive(Clone, Debug, Default, PartialEq)]
pub(crate) struct ShardRecords {
    pub(crate) moves: u64,
    pub(crate) moves_min: u64,
    pub(crate) imbalance_max: Option<f64>,
    pub(crate) drains_s: Vec<f64>,
    pub(crate) drains_unfinished: u64,
    pub(crate) plans: u64,
    pub(crate) placed: bool,
}

/// The shard map, the coordinator's state and the figures. See the module doc.
#[derive(Debug)]
pub(crate) struct ShardRun {
    pub(crate) spec: ShardSpec,
    ids: Vec<ShardId>,
    map: ShardMap,
    rebalancer: Rebalancer,
    /// Contenders a `join` fault still holds out of the pool.
    pub(crate) out_of_pool: BTreeSet<usize>,
    /// Draining members and when their drain began.
    draining: BTreeMap<usize, Instant>,
    in_flight: BTreeMap<usize, InFlight>,
    pending: VecDeque<Move>,
    /// Plan again once the moves under way are done.
    dirty: bool,
    /// A change of the pool awaits the plan that gives its minimum.
    count_next_plan: bool,
    /// The settled state was already measured.
    settled: bool,
    last_pool: (BTreeSet<NodeId>, BTreeSet<NodeId>),
    last_owner: Vec<Option<NodeId>>,
    pub(crate) records: ShardRecords,
}

impl ShardRun {
    pub(crate) fn new(spec: &ShardSpec, out_of_pool: BTreeSet<usize>) -> Self {
        let ids: Vec<ShardId> = (0..spec.count)
            .map(|i| ShardId::new(&spec.namespace, i).expect("the scenario checked the namespace"))
            .collect();
        let mut map = ShardMap::new();
        for id in &ids {
            map.add_shard(id.clone())
                .expect("distinct shards, fewer than MAX_SHARDS");
        }
        Self {
            spec: spec.clone(),
            last_owner: vec![None; ids.len()],
            ids,
            map,
            rebalancer: Rebalancer::default(),
            out_of_pool,
            draining: BTreeMap::new(),
            in_flight: BTreeMap::new(),
            pending: VecDeque::new(),
            dirty: true,
            count_next_plan: false,
            settled: false,
            last_pool: (BTreeSet::new(), BTreeSet::new()),
            records: ShardRecords::default(),
        }
    }

    /// The shards' lease scope names, in shard order.
    pub(crate) fn scope_names(&self) -> impl Iterator<Item = String> + '_ {
        self.ids.iter().map(ToString::to_string)
    }

    /// The map's owner of shard `shard`.
    pub(crate) fn owner(&self, shard: usize) -> Option<NodeId> {
        self.map.owner(&self.ids[shard])
    }

    /// Whether `node` is draining.
    pub(crate) fn is_draining(&self, node: usize) -> bool {
        self.draining.contains_key(&node)
    }

    /// A voter applied a grant of shard `shard` to `holder` under `token`.
    pub(crate) fn on_granted(&mut self, shard: usize, holder: NodeId, token: u64) {
        // Another voter applied this grant first (or a restarted voter replays its log).
        if self.map.assign(&self.ids[shard], holder, token).is_err() {
            return;
        }
        if self.records.placed && self.last_owner[shard] != Some(holder) {
            self.records.moves += 1;
        }
        self.last_owner[shard] = Some(holder);
        self.settled = false;
        match self.in_flight.get(&shard) {
            Some(f) if f.to == holder => {
                self.in_flight.remove(&shard);
            }
            _ => self.dirty = true,
        }
    }

    /// A voter applied the end (release or expiry) of the lease `token` on shard `shard`.
    pub(crate) fn on_ended(&mut self, shard: usize, token: u64) {
        if let Ok(Some(_)) = self.map.release(&self.ids[shard], token) {
            self.settled = false;
            self.dirty = true;
        }
    }

    /// A `drain` fault on `node`.
    pub(crate) fn start_drain(&mut self, now: Instant, node: usize) {
        self.draining.entry(node).or_insert(now);
    }

    /// One coordinator step: `pool` holds the node indices of the running contenders (those
    /// out of the pool are left out here). Returns what the engine must do, in order.
    pub(crate) fn step(&mut self, now: Instant, pool: &BTreeSet<usize>) -> Vec<Action> {
        let mut actions = Vec::new();
        let mut live: BTreeSet<NodeId> = pool
            .iter()
            .filter(|i| !self.out_of_pool.contains(i))
            .map(|&i| id(i))
            .collect();
        // Moves whose target left the pool, or that took too long, are dropped.
        let expired: Vec<usize> = self
            .in_flight
            .iter()
            .filter(|(_, f)| now >= f.deadline || !live.contains(&f.to))
            .map(|(&s, _)| s)
            .collect();
        for s in expired {
            if let Some(f) = self.in_flight.remove(&s) {
                actions.push(Action::Abandon {
                    shard: s,
                    to: index(f.to),
                });
                self.dirty = true;
            }
        }
        // Drains: a drained node leaves; a draining node that left the pool ends unfinished.
        let mut ended = Vec::new();
        for (&node, &since) in &self.draining {
            if !pool.contains(&node) {
                self.records.drains_unfinished += 1;
                ended.push(node);
            } else if self.map.is_drained(id(node))
                && !self.in_flight.values().any(|f| f.from == Some(id(node)))
            {
                self.records
                    .drains_s
                    .push(now.saturating_duration_since(since).as_secs_f64());
                ended.push(node);
                actions.push(Action::Drained { node });
            }
        }
        for node in ended {
            self.draining.remove(&node);
            // A drained node is leaving: it never takes shards again.
            self.out_of_pool.insert(node);
            live.remove(&id(node));
        }
        let draining: BTreeSet<NodeId> = self.draining.keys().map(|&i| id(i)).collect();
        if (&live, &draining) != (&self.last_pool.0, &self.last_pool.1) {
            self.dirty = true;
            self.settled = false;
            self.count_next_plan = self.records.placed;
            self.last_pool = (live.clone(), draining.clone());
        }
        if self.dirty && self.in_flight.is_empty() {
            self.dirty = false;
            self.pending.clear();
            // No eligible member (every one draining or gone): nothing can move until one joins.
            if let Ok(plan) = self.rebalancer.plan(&self.map, &live, &draining) {
                self.records.plans += 1;
                if self.count_next_plan {
                    self.records.moves_min += plan.len() as u64;
                    self.count_next_plan = false;
                }
                self.pending = plan.into_moves().into();
            }
        }
        let deadline = now + self.spec.ttl * 2 + MOVE_SLACK;
        while !self.dirty && self.in_flight.len() < self.spec.max_moves_in_flight as usize {
            let Some(mv) = self.pending.pop_front() else {
                break;
            };
            let s = mv.shard.id() as usize;
            // A plan made stale by an unplanned change is redone once the dirty flag is seen.
            if self.map.owner(&mv.shard) != mv.from {
                self.dirty = true;
                break;
            }
            let to = index(mv.to);
            actions.push(match mv.from {
                Some(from) => Action::Transfer {
                    shard: s,
                    from: index(from),
                    to,
                },
                None => Action::Acquire { shard: s, to },
            });
            self.in_flight.insert(
                s,
                InFlight {
                    to: mv.to,
                    from: mv.from,
                    deadline,
                },
            );
        }
        if !self.dirty && self.in_flight.is_empty() && self.pending.is_empty() && !self.settled {
            self.settle(&live, &draining);
        }
        actions
    }

    /// Every shard owned by an eligible member and nothing left to do: the initial placement
    /// is done (the first time), and the balance is measured.
    fn settle(&mut self, live: &BTreeSet<NodeId>, draining: &BTreeSet<NodeId>) {
        let eligible: Vec<NodeId> = live.difference(draining).copied().collect();
        if eligible.is_empty() {
            return;
        }
        let all_owned = self.map.iter().all(|(_, a)| {
            a.owner
                .is_some_and(|o| live.contains(&o) && !draining.contains(&o))
        });
        if !all_owned {
            return;
        }
        self.settled = true;
        self.records.placed = true;
        let mean = self.map.len() as f64 / eligible.len() as f64;
        let worst = eligible
            .iter()
            .map(|&m| (self.map.owned_count(m) as f64 - mean).abs() / mean)
            .fold(0.0, f64::max);
        let max = self.records.imbalance_max.get_or_insert(0.0);
        *max = max.max(worst);
    }

    /// The records at the end of the run.
    pub(crate) fn finish(mut self) -> ShardRecords {
        self.records.drains_unfinished += self.draining.len() as u64;
        self.records
    }
}

fn id(i: usize) -> NodeId {
    NodeId::new(i as u64 + 1)
}

fn index(id: NodeId) -> usize {
    (id.get() as usize).saturating_sub(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(count: u32) -> ShardSpec {
        let text = format!(
            "name = \"t\"\n[topology]\nnodes = 10\n[run]\nduration = \"10s\"\n[leases]\n\
             [shards]\ncount = {count}\n"
        );
        crate::Scenario::parse(&text, "t.toml")
            .unwrap()
            .shards()
            .unwrap()
            .clone()
    }

    /// Runs the coordinator against a perfect lease table that grants every move at once.
    fn settle(run: &mut ShardRun, pool: &BTreeSet<usize>, token: &mut u64) -> u64 {
        let mut moves = 0;
        for _ in 0..100 {
            let actions = run.step(Instant::ZERO, pool);
            if actions.is_empty() {
                return moves;
            }
            for a in actions {
                if let Action::Transfer { shard, to, .. } | Action::Acquire { shard, to } = a {
                    *token += 1;
                    moves += 1;
                    run.on_granted(shard, id(to), *token);
                }
            }
        }
        panic!("the coordinator never settled");
    }

    #[test]
    fn a_join_moves_the_minimum_and_stays_balanced() {
        let mut run = ShardRun::new(&spec(100), BTreeSet::from([8, 9]));
        let mut token = 0;
        let pool: BTreeSet<usize> = (0..8).collect();
        assert_eq!(settle(&mut run, &pool, &mut token), 100);
        assert!(run.records.placed);
        assert_eq!((run.records.moves, run.records.moves_min), (0, 0));
        // Two members join: 10 each now; 8 members of 12 or 13 must give 20 shards.
        run.out_of_pool.clear();
        let pool: BTreeSet<usize> = (0..10).collect();
        let moved = settle(&mut run, &pool, &mut token);
        assert_eq!(run.records.moves, moved);
        assert_eq!(run.records.moves, run.records.moves_min);
        assert!(
            run.records.imbalance_max.unwrap() <= 0.2,
            "{:?}",
            run.records
        );
    }

    #[test]
    fn a_drain_empties_the_node_then_reports_it() {
        let mut run = ShardRun::new(&spec(40), BTreeSet::new());
        let mut token = 0;
        let pool: BTreeSet<usize> = (0..4).collect();
        settle(&mut run, &pool, &mut token);
        run.start_drain(Instant::ZERO, 2);
        let mut drained = false;
        for _ in 0..10 {
            for a in run.step(Instant::ZERO, &pool) {
                match a {
                    Action::Transfer { shard, from, to } => {
                        assert_eq!(from, 2);
                        token += 1;
                        run.on_granted(shard, id(to), token);
                    }
                    Action::Drained { node } => drained = node == 2,
                    other => panic!("unexpected {other:?}"),
                }
            }
        }
        assert!(drained);
        assert_eq!(run.records.drains_s.len(), 1);
        assert_eq!(run.records.moves, 10);
        assert_eq!(run.records.moves_min, 10);
        assert!((0..40).all(|s| run.owner(s) != Some(id(2))));
    }

    #[test]
    fn duplicate_and_replayed_grants_are_ignored() {
        let mut run = ShardRun::new(&spec(2), BTreeSet::new());
        let pool: BTreeSet<usize> = (0..2).collect();
        let mut token = 0;
        settle(&mut run, &pool, &mut token);
        let owner = run.owner(0);
        let fence = run.map.fence(&run.ids[0]).unwrap();
        // Another voter's copy of the same grant, and an older one replayed.
        run.on_granted(0, id(1), fence);
        run.on_granted(0, id(1), fence - 1);
        assert_eq!(run.owner(0), owner);
        assert!(run.step(Instant::ZERO, &pool).is_empty());
    }
}
