//! Task queues in the simulator: the producers and workers of a `[queue]` section, and the
//! queue invariants. The queues themselves are the core's (`meshkit::queue::Queues`, composed
//! in `Node`): the shard owner serves, replicates and recovers; the engine only drives the
//! producers (`Node::queue_enqueue`) and the workers (`Node::queue_lease`, `queue_heartbeat`,
//! `queue_complete`), persists the replicas' checkpoint records as a disk would
//! (`Node::poll_queue_durable`, before the node's datagrams leave) and hands them back to a
//! restarted node.
//!
//! # Invariants, checked as the run goes
//!
//! 1. **No acknowledged item is lost.** Every item an owner acknowledged (its
//!    `QueueEvent::Acknowledged`) must be in the queue of every owner that starts serving the
//!    shard after it (checked at each `QueueEvent::Serving`) and at the end.
//!    An item present there under another origin counts as missing: its id was reused.
//! 2. **An item id is acknowledged for one enqueue only**: two `QueueEvent::Acknowledged` of
//!    the same shard and item (any owner, any fence) name the same origin (producer node and
//!    request, which the owner's queue holds for the item), so one acknowledged payload never
//!    shadows another under the same id.
//! 3. **No item is completed twice**: an owner's `QueueEvent::Completed` (a completion accepted
//!    and answered) comes once per item.
//! 4. **No completion is accepted with a stale token**: when an owner accepts a completion,
//!    the token's fence is the shard's latest grant (the run's view of the lease table).
//! 5. **Backpressure transitions respect the cooldown**: two transitions of one owner's monitor
//!    are at least the cooldown apart (by that owner's clock).
//! 6. **A completion accepted is not refused by the owner that accepted it**: a worker that
//!    hears its completion refused as `StaleLease` (the owner serving under the token's own
//!    fence no longer has the item leased under that grant) must not hold a token whose
//!    completion an owner accepted (its first answer lost, the resend refused: the worker
//!    would believe its work was thrown away). A resend that reaches a newer owner is refused
//!    as `StaleFence`, which is not checked: that owner cannot tell the grant that completed
//!    the item from another of the same attempt (docs/task-queues.md).
//! 7. **The end state**: after the run, every shard is served by one live owner, and every
//!    acknowledged item in it is pending, leased to a live worker, completed or dead-lettered.
//!
//! # Figures
//!
//! `queue_acknowledged`, `queue_completed`, `queue_lost` (acknowledged items missing),
//! `queue_duplicate_completions`, `queue_reused_ids` (acknowledgements of an item id already
//! acknowledged for another enqueue), `queue_stale_completions_refused` (by owners),
//! `queue_stale_completions_accepted`, `queue_replication_lag_p99_ms` (an enqueue's arrival at
//! the owner to its acknowledgement), `queue_failover_s` (a serving owner's crash or lease loss
//! to the next owner serving the shard), `queue_backpressure_transitions`.

use std::collections::{BTreeMap, BTreeSet};

use meshkit::NodeId;
use meshkit::queue::{ItemId, ItemState, Origin, OwnershipToken, QueueEvent, ReplicaStore};
use meshkit::shard::ShardId;
use meshkit::{Duration, Instant};

use crate::scenario::QueueSpec;

/// How often producers and workers act.
pub(crate) const QUEUE_TICK: Duration = Duration::from_millis(10);
/// How long an idle worker waits before it asks again after an empty answer.
pub(crate) const EMPTY_BACKOFF: Duration = Duration::from_millis(50);

/// The queue figures of a run.
#[derive(Clone, Debug, Default, PartialEq)]
pub(crate) struct QueueRecords {
    pub(crate) acknowledged: u64,
    pub(crate) completed: u64,
    pub(crate) lost: u64,
    pub(crate) duplicate_completions: u64,
    /// Acknowledgements of an item id already acknowledged for another enqueue.
    pub(crate) reused_ids: u64,
    /// Completions a worker heard refused as `StaleLease` although the owner had accepted
    /// them (the answer was lost and the resend refused).
    pub(crate) accepted_refused: u64,
    pub(crate) stale_refused: u64,
    pub(crate) stale_accepted: u64,
    pub(crate) lag_ms: Vec<f64>,
    pub(crate) failover_s: Vec<f64>,
    pub(crate) backpressure_transitions: u64,
    pub(crate) enqueues_sent: u64,
    pub(crate) producer_waits: u64,
    pub(crate) released: u64,
}

/// What a worker's request was for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Ask {
    Lease,
    Heartbeat(OwnershipToken),
    Complete(OwnershipToken),
}

/// One item a worker holds.
#[derive(Clone, Debug)]
pub(crate) struct Held {
    pub(crate) shard: usize,
    pub(crate) token: OwnershipToken,
    pub(crate) done_at: Instant,
    pub(crate) next_heartbeat: Instant,
    pub(crate) completing: bool,
}

/// One worker's state (lost with its node).
#[derive(Clone, Debug, Default)]
pub(crate) struct Worker {
    pub(crate) held: Vec<Held>,
    pub(crate) asking: u32,
    pub(crate) next_poll: Option<Instant>,
    pub(crate) next_shard: usize,
    pub(crate) requests: BTreeMap<u64, Ask>,
}

/// The queue side of a run. See the module doc.
#[derive(Debug)]
pub(crate) struct QueueRun {
    pub(crate) spec: QueueSpec,
    pub(crate) shards: Vec<ShardId>,
    pub(crate) producers: Vec<usize>,
    pub(crate) workers: Vec<usize>,
    /// Each producer's next enqueue.
    pub(crate) next_enqueue: BTreeMap<usize, Instant>,
    pub(crate) worker_state: BTreeMap<usize, Worker>,
    /// Each node's replica checkpoint log, by shard: what its disk holds.
    disks: Vec<BTreeMap<ShardId, Vec<Vec<u8>>>>,
    /// Acknowledged items, by shard, with the enqueue (origin) each was acknowledged for
    /// (`None`: the owner's queue did not show it, which the lost-item check reports).
    acked: Vec<BTreeMap<ItemId, Option<Origin>>>,
    completed: Vec<BTreeSet<ItemId>>,
    /// Every completion an owner accepted, by shard: the token it accepted.
    pub(crate) accepted: Vec<BTreeSet<OwnershipToken>>,
    /// Last backpressure transition per (node, shard, fence): the owner's local time.
    last_transition: BTreeMap<(usize, usize, u64), Instant>,
    /// Shards whose serving owner went away, since when.
    unserved_since: BTreeMap<usize, Instant>,
    pub(crate) burst_done: bool,
    pub(crate) records: QueueRecords,
}

impl QueueRun {
    pub(crate) fn new(spec: &QueueSpec, shards: Vec<ShardId>, nodes: usize) -> Self {
        let n = nodes as u32;
        let producers: Vec<usize> = QueueSpec::indices(&spec.producers, n)
            .into_iter()
            .map(|i| i as usize)
            .collect();
        let workers: Vec<usize> = QueueSpec::indices(&spec.workers, n)
            .into_iter()
            .map(|i| i as usize)
            .collect();
        Self {
            spec: spec.clone(),
            acked: vec![BTreeMap::new(); shards.len()],
            completed: vec![BTreeSet::new(); shards.len()],
            accepted: vec![BTreeSet::new(); shards.len()],
            shards,
            next_enqueue: BTreeMap::new(),
            worker_state: workers.iter().map(|&w| (w, Worker::default())).collect(),
            producers,
            workers,
            disks: vec![BTreeMap::new(); nodes],
            last_transition: BTreeMap::new(),
            unserved_since: BTreeMap::new(),
            burst_done: false,
            records: QueueRecords::default(),
        }
    }

    /// The shard's index.
    pub(crate) fn shard_index(&self, shard: &ShardId) -> Option<usize> {
        self.shards.iter().position(|s| s == shard)
    }

    /// Appends a checkpoint record to node `i`'s disk.
    pub(crate) fn persist(&mut self, i: usize, shard: ShardId, record: Vec<u8>) {
        self.disks[i].entry(shard).or_default().push(record);
    }

    /// What node `i` reads back from its disk at a restart.
    pub(crate) fn restore(&self, i: usize) -> Result<BTreeMap<ShardId, ReplicaStore>, String> {
        let mut out = BTreeMap::new();
        for (shard, log) in &self.disks[i] {
            let store = ReplicaStore::restore(log.iter().map(Vec::as_slice))
                .map_err(|e| format!("node-{}'s checkpoint of {shard}: {e}", i + 1))?;
            out.insert(shard.clone(), store);
        }
        Ok(out)
    }

    /// Node `i` crashed: its workers' state is gone; the shards it served are unserved.
    pub(crate) fn on_crash(&mut self, now: Instant, i: usize, served: &[ShardId]) {
        if let Some(w) = self.worker_state.get_mut(&i) {
            *w = Worker::default();
        }
        self.next_enqueue.remove(&i);
        for shard in served {
            if let Some(s) = self.shard_index(shard) {
                self.unserved_since.entry(s).or_insert(now);
            }
        }
    }

    /// One queue event of node `index`; `fence_of(shard)` is the shard's latest grant, and
    /// `origin_of(shard, item)` the origin of the item in the queue node `index` serves now
    /// (`None`: it serves none; `Some(None)`: the queue lacks the item). Returns the violations
    /// found.
    ///
    /// "Now" is after the node's whole step: a node whose lease lapsed in the step that made it
    /// serve has stopped already when its `Serving` is seen. That `Serving` is not checked (the
    /// node's next `Serving`, a resume or a recovery, and the end state are); its
    /// acknowledgements are recorded without an origin, filled in by a later one.
    pub(crate) fn on_event(
        &mut self,
        now: Instant,
        index: usize,
        event: &QueueEvent,
        fence_of: impl Fn(usize) -> u64,
        origin_of: impl Fn(usize, ItemId) -> Option<Option<Origin>>,
    ) -> Vec<String> {
        let mut violations = Vec::new();
        match event {
            QueueEvent::Acknowledged {
                shard,
                item,
                lag,
                fence,
            } => {
                let Some(s) = self.shard_index(shard) else {
                    return violations;
                };
                let origin = origin_of(s, *item).flatten();
                match self.acked[s].get_mut(item) {
                    None => {
                        self.acked[s].insert(*item, origin);
                        self.records.acknowledged += 1;
                    }
                    Some(held @ None) => *held = origin,
                    // The same enqueue acknowledged again (a resend to a later owner), or one
                    // whose origin is unknown.
                    Some(held) if origin.is_none() || *held == origin => {}
                    Some(held) => {
                        self.records.reused_ids += 1;
                        violations.push(format!(
                            "node-{} acknowledged {shard} {item} under {fence} for {origin:?}, \
                             but it was acknowledged before for {held:?}: an item id reused",
                            index + 1,
                        ));
                    }
                }
                self.records.lag_ms.push(lag.as_secs_f64() * 1e3);
            }
            QueueEvent::Completed { shard, token } => {
                let Some(s) = self.shard_index(shard) else {
                    return violations;
                };
                self.records.completed += 1;
                self.accepted[s].insert(*token);
                if !self.completed[s].insert(token.item) {
                    self.records.duplicate_completions += 1;
                    violations.push(format!(
                        "node-{} accepted a second completion of {shard} {} ({token})",
                        index + 1,
                        token.item
                    ));
                }
                let latest = fence_of(s);
                if token.fence.get() < latest {
                    self.records.stale_accepted += 1;
                    violations.push(format!(
                        "node-{} accepted a completion of {shard} {} with a stale token ({token}; \
                         the shard's latest grant is fence{latest})",
                        index + 1,
                        token.item
                    ));
                }
            }
            QueueEvent::StaleRefused { .. } => self.records.stale_refused += 1,
            QueueEvent::Released { .. } => self.records.released += 1,
            QueueEvent::Backpressure {
                shard,
                fence,
                signal,
            } => {
                self.records.backpressure_transitions += 1;
                let Some(s) = self.shard_index(shard) else {
                    return violations;
                };
                let key = (index, s, fence.get());
                if let Some(&last) = self.last_transition.get(&key) {
                    let gap = signal.observed_at.saturating_duration_since(last);
                    if gap < self.spec.config.cooldown() {
                        violations.push(format!(
                            "node-{}'s backpressure on {shard} changed twice {gap:?} apart \
                             (cooldown {:?})",
                            index + 1,
                            self.spec.config.cooldown()
                        ));
                    }
                }
                self.last_transition.insert(key, signal.observed_at);
            }
            QueueEvent::Serving { shard, .. } => {
                let Some(s) = self.shard_index(shard) else {
                    return violations;
                };
                if let Some(since) = self.unserved_since.remove(&s) {
                    self.records
                        .failover_s
                        .push(now.saturating_duration_since(since).as_secs_f64());
                }
                // An item held under another origin is missing too: the acknowledged enqueue's
                // payload is not there, another one is.
                let missing: Vec<ItemId> = self.acked[s]
                    .iter()
                    .filter(|&(&item, origin)| match origin_of(s, item) {
                        // Stopped already in the step that made it serve: see above.
                        None => false,
                        Some(held) => held.is_none_or(|h| origin.is_some_and(|o| o != h)),
                    })
                    .map(|(&item, _)| item)
                    .collect();
                if !missing.is_empty() {
                    self.records.lost += missing.len() as u64;
                    violations.push(format!(
                        "node-{} serves {shard} without {} acknowledged items (first: {})",
                        index + 1,
                        missing.len(),
                        missing[0]
                    ));
                }
            }
            QueueEvent::Stopped { shard, .. } => {
                if let Some(s) = self.shard_index(shard) {
                    self.unserved_since.entry(s).or_insert(now);
                }
            }
            _ => {}
        }
        violations
    }

    /// A worker of node `index` heard its completion of `token` on shard `s` refused with
    /// `error`: a violation if an owner accepted that completion and the refusal is
    /// `StaleLease` (from an owner under the token's fence).
    pub(crate) fn on_completion_refused(
        &mut self,
        index: usize,
        s: usize,
        token: OwnershipToken,
        error: &meshkit::queue::QueueError,
    ) -> Option<String> {
        let same_fence = matches!(error, meshkit::queue::QueueError::StaleLease { .. });
        if !same_fence || !self.accepted.get(s)?.contains(&token) {
            return None;
        }
        self.records.accepted_refused += 1;
        Some(format!(
            "node-{}'s completion of {} {} was accepted, then refused as stale ({error})",
            index + 1,
            self.shards[s],
            token
        ))
    }

    /// The end-state check: `served(s)` gives the live nodes serving shard `s` and a view of
    /// each item's state in the first; `live(node)` whether a node is running.
    pub(crate) fn check_end(
        &mut self,
        served: impl Fn(usize) -> Vec<(usize, Vec<(ItemId, ItemState)>)>,
        live: impl Fn(NodeId) -> bool,
    ) -> Vec<String> {
        let mut violations = Vec::new();
        for s in 0..self.shards.len() {
            let owners = served(s);
            let [(owner, items)] = owners.as_slice() else {
                violations.push(format!(
                    "after the run {} is served by {:?}: exactly one live owner must serve it",
                    self.shards[s],
                    owners.iter().map(|(o, _)| o + 1).collect::<Vec<_>>()
                ));
                continue;
            };
            let states: BTreeMap<ItemId, ItemState> = items.iter().copied().collect();
            let mut lost = 0;
            let mut bad = None;
            for item in self.acked[s].keys() {
                match states.get(item) {
                    None => lost += 1,
                    Some(ItemState::Leased { worker, .. }) if !live(*worker) => {
                        bad.get_or_insert(format!(
                            "{item} is leased to {worker}, which is not running"
                        ));
                    }
                    Some(ItemState::Drained) => {
                        bad.get_or_insert(format!("{item} was drained"));
                    }
                    Some(_) => {}
                }
            }
            if lost > 0 {
                self.records.lost += lost;
                violations.push(format!(
                    "after the run node-{}'s queue of {} lacks {lost} acknowledged items",
                    owner + 1,
                    self.shards[s]
                ));
            }
            if let Some(bad) = bad {
                violations.push(format!(
                    "after the run, in node-{}'s queue of {}: {bad}",
                    owner + 1,
                    self.shards[s]
                ));
            }
        }
        violations.truncate(5);
        violations
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use meshkit::lease::FencingToken;
    use meshkit::queue::{BackpressureSignal, LeaseId};

    fn run() -> QueueRun {
        let text = "name = \"t\"\n[topology]\nnodes = 6\n[run]\nduration = \"10s\"\n\
                    [leases]\nvoters = 3\n[shards]\nnamespace = \"jobs\"\ncount = 2\n\
                    [queue]\nproducers = \"0..2\"\nworkers = \"3..6\"\ncooldown = \"1s\"\n";
        let scenario = crate::Scenario::parse(text, "t.toml").unwrap();
        let shards = (0..2).map(|i| ShardId::new("jobs", i).unwrap()).collect();
        QueueRun::new(scenario.queue().unwrap(), shards, 6)
    }

    fn token(item: u64, fence: u64) -> OwnershipToken {
        OwnershipToken {
            item: ItemId::new(item),
            attempt: 1,
            lease: LeaseId::new(1),
            fence: FencingToken::new(fence),
        }
    }

    fn at(s: u64) -> Instant {
        Instant::from_nanos(s * 1_000_000_000)
    }

    /// Each checker fires on what it guards against (the runs only show that nothing fires).
    #[test]
    fn duplicate_stale_lost_and_cooldown_are_violations() {
        let mut q = run();
        let shard = ShardId::new("jobs", 0).unwrap();
        let fence_of = |_| 5;
        let origin = |request| Origin {
            node: NodeId::new(1),
            request,
        };
        let held = |_, _| Some(Some(origin(1)));
        let ack = QueueEvent::Acknowledged {
            shard: shard.clone(),
            item: ItemId::new(1),
            fence: FencingToken::new(5),
            lag: Duration::from_millis(2),
        };
        assert!(q.on_event(at(1), 3, &ack, fence_of, held).is_empty());
        // The same enqueue acknowledged again is fine; another enqueue under the same id is not.
        assert!(q.on_event(at(1), 3, &ack, fence_of, held).is_empty());
        let v = q.on_event(at(1), 3, &ack, fence_of, |_, _| Some(Some(origin(2))));
        assert!(v[0].contains("an item id reused"), "{v:?}");
        assert_eq!(q.records.reused_ids, 1);
        let done = QueueEvent::Completed {
            shard: shard.clone(),
            token: token(1, 5),
        };
        assert!(q.on_event(at(2), 3, &done, fence_of, held).is_empty());
        let again = q.on_event(at(3), 3, &done, fence_of, held);
        assert!(again[0].contains("second completion"), "{again:?}");
        let stale = QueueEvent::Completed {
            shard: shard.clone(),
            token: token(2, 4),
        };
        let v = q.on_event(at(3), 3, &stale, fence_of, held);
        assert!(v[0].contains("stale token"), "{v:?}");
        let serving = QueueEvent::Serving {
            shard: shard.clone(),
            fence: FencingToken::new(6),
            source: None,
            items: 0,
        };
        // A node that stopped in the step that made it serve is not checked; one that serves is.
        assert!(
            q.on_event(at(4), 4, &serving, fence_of, |_, _| None)
                .is_empty()
        );
        let v = q.on_event(at(4), 4, &serving, fence_of, |_, _| Some(None));
        assert!(v[0].contains("without 1 acknowledged items"), "{v:?}");
        let signal = |s: u64, on: bool| QueueEvent::Backpressure {
            shard: shard.clone(),
            fence: FencingToken::new(6),
            signal: BackpressureSignal {
                is_active: on,
                pending_count: 0,
                observed_at: Instant::from_nanos(s * 100_000_000),
                high_watermark: Some(10),
                low_watermark: 5,
            },
        };
        assert!(
            q.on_event(at(5), 4, &signal(50, true), fence_of, held)
                .is_empty()
        );
        let v = q.on_event(at(5), 4, &signal(55, false), fence_of, held);
        assert!(v[0].contains("cooldown"), "{v:?}");
        assert_eq!(
            (
                q.records.duplicate_completions,
                q.records.stale_accepted,
                q.records.lost
            ),
            (1, 1, 1)
        );
    }
}
