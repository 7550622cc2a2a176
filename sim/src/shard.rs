//! Shards in the simulator: what the run measures and checks. The coordinator itself is the
//! core's (`meshkit::shard::Coordinator`, composed in `Node` and acting on the Raft leader),
//! and so are the members that follow it (`meshkit::shard::ShardMember`): the engine only
//! announces members (`Node::join_shards`, at the start or when a `join` fault fires), starts
//! drains (`Node::drain_shards`) and lets a drained node leave.
//!
//! With a `[shards]` section, shard `i` is the lease scope `shard/{namespace}/{i}`. Unlike the
//! `[leases]` scopes, nobody contends for it: a member asks for a shard only when the
//! coordinator tells it to, and renews the shards it holds at a third of their TTL.
//!
//! * **The map here is a view of the lease table**, kept apart from the coordinator's to judge
//!   it: every `GroupEvent::Granted` a voter applies is fed to [`ShardMap::assign`] with the
//!   grant's fencing token, every `Released` / `Expired` to [`ShardMap::release`]. The voters
//!   apply the same committed entries, so the first to apply one updates the map and the
//!   others' copies are refused as stale fences (ignored).
//! * **The pool** the coordinator plans for is the members that announced to the voters they
//!   take shards (or drain) and that its node's membership sees up. Contenders announce at the
//!   start, except those a `join` fault holds out until it fires; a `drain` fault makes a
//!   member announce it drains. A drained member (it holds no shard and asks for none) leaves gracefully (it
//!   hands its `[leases]` scopes over first).
//!
//! # Figures
//!
//! * `shard_moves`: changes of a shard's owner (to a node other than its last owner) after the
//!   initial placement, the first time every shard was owned within the load bound.
//! * `shard_moves_min`: for each change of the pool or the draining set after the initial
//!   placement, the length of the first plan the coordinator made after it (its
//!   `ShardEvent::Planned` says the pool changed). The rebalancer's plans are minimal (proof
//!   in `meshkit::shard`), so this is the fewest moves that change needed from the map it
//!   found; `shard_moves_ratio` is `shard_moves / shard_moves_min`.
//! * `shard_imbalance_max`: at every instant the acting coordinator is idle (nothing under
//!   way, nothing left to plan) with every shard owned by an eligible member, the largest
//!   `|owned - mean| / mean` over the eligible members; the largest of those.
//! * `shard_drains`, `shard_drain_max_s`, `shard_drains_unfinished`: drains finished, the
//!   slowest one (from the `drain` fault to the member reporting `ShardEvent::Drained`), and
//!   drains whose node crashed or whose run ended first.

use std::collections::{BTreeMap, BTreeSet};

use meshkit::shard::{Coordinator, ShardConfig, ShardId, ShardMap};
use meshkit::{Instant, NodeId};

use crate::scenario::ShardSpec;

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

/// The run's view of the shard map, the drains under way and the figures. See the module doc.
#[derive(Debug)]
pub(crate) struct ShardRun {
    pub(crate) spec: ShardSpec,
    config: ShardConfig,
    ids: Vec<ShardId>,
    map: ShardMap,
    /// Contenders out of the pool: a `join` fault still holds them out, or they drained.
    pub(crate) out_of_pool: BTreeSet<usize>,
    /// Draining members and when their drain began.
    draining: BTreeMap<usize, Instant>,
    /// The map changed since the last settled measurement.
    settled: bool,
    last_owner: Vec<Option<NodeId>>,
    pub(crate) records: ShardRecords,
}

impl ShardRun {
    pub(crate) fn new(spec: &ShardSpec, out_of_pool: BTreeSet<usize>) -> Self {
        let config = ShardConfig::new(&spec.namespace, spec.count)
            .expect("the scenario checked the namespace and the count")
            .with_ttl(spec.ttl)
            .with_max_moves_in_flight(spec.max_moves_in_flight);
        let ids: Vec<ShardId> = config.shards().collect();
        let mut map = ShardMap::new();
        for id in &ids {
            map.add_shard(id.clone())
                .expect("distinct shards, fewer than MAX_SHARDS");
        }
        Self {
            spec: spec.clone(),
            config,
            last_owner: vec![None; ids.len()],
            ids,
            map,
            out_of_pool,
            draining: BTreeMap::new(),
            settled: false,
            records: ShardRecords::default(),
        }
    }

    /// The configuration every node is given.
    pub(crate) fn config(&self) -> &ShardConfig {
        &self.config
    }

    /// The shards' lease scope names, in shard order.
    pub(crate) fn scope_names(&self) -> impl Iterator<Item = String> + '_ {
        self.ids.iter().map(ToString::to_string)
    }

    /// The map's owner of shard `shard`.
    pub(crate) fn owner(&self, shard: usize) -> Option<NodeId> {
        self.map.owner(&self.ids[shard])
    }

    /// The fence of the last grant of shard `shard` the map applied (0 before the first).
    pub(crate) fn fence(&self, shard: usize) -> u64 {
        self.map.assignment(&self.ids[shard]).map_or(0, |a| a.fence)
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
    }

    /// A voter applied the end (release or expiry) of the lease `token` on shard `shard`.
    pub(crate) fn on_ended(&mut self, shard: usize, token: u64) {
        if let Ok(Some(_)) = self.map.release(&self.ids[shard], token) {
            self.settled = false;
        }
    }

    /// The acting coordinator made a plan of `moves` moves.
    pub(crate) fn on_planned(&mut self, moves: usize, pool_changed: bool) {
        self.records.plans += 1;
        self.settled = false;
        if pool_changed && self.records.placed {
            self.records.moves_min += moves as u64;
        }
    }

    /// A `drain` fault on `node`.
    pub(crate) fn start_drain(&mut self, now: Instant, node: usize) {
        self.draining.entry(node).or_insert(now);
    }

    /// Member `node` reported it drained: it never takes shards again.
    pub(crate) fn on_drained(&mut self, now: Instant, node: usize) -> bool {
        let Some(since) = self.draining.remove(&node) else {
            return false;
        };
        self.records
            .drains_s
            .push(now.saturating_duration_since(since).as_secs_f64());
        self.out_of_pool.insert(node);
        true
    }

    /// A draining node crashed or left before it drained.
    pub(crate) fn on_gone(&mut self, node: usize) {
        if self.draining.remove(&node).is_some() {
            self.records.drains_unfinished += 1;
        }
    }

    /// Looks at the acting coordinator: once it is idle with every shard owned by an eligible
    /// member, the initial placement is done (the first time), and the balance is measured.
    pub(crate) fn observe(&mut self, coordinator: &Coordinator) {
        if self.settled || !coordinator.is_idle() {
            return;
        }
        let (live, draining) = coordinator.pool();
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
