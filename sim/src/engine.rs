//! The discrete-event engine: one thread, one seed, virtual time.
//!
//! Everything that happens is an entry in one binary heap ordered by `(time, seq)`, where `seq`
//! is a global insertion counter, so equal times run in the order they were scheduled and a run
//! is a pure function of its seed. Entries are datagram deliveries, per-node timer wakeups and
//! fault-timeline events (plus the workload generator and the invariant sweep).
//!
//! Every node is an `Option<Node>` (`None` once crashed or gone: `meshkit::node::Node`, the
//! same composition the tokio driver runs) with its own [`SkewedClock`]. After every input to a node
//! the engine drains it in the core's documented order: every `poll_transmit` (a whole
//! datagram, channel byte included) goes through the [`Network`] model and, if delivered, back
//! into the heap; every `poll_event` goes to the [`Observer`], the [`Invariants`], the lease
//! ledger and the trace hash; then ONE timer is armed at `poll_timeout()`. A timer entry
//! carries the node's timer generation at the time it was armed; re-arming bumps the
//! generation, so stale wakeups are skipped without searching the heap.
//!
//! With `[leases]`, voters' nodes also run a `LeaseGroup` and contenders' a `LeaseClient` and
//! its campaign, inside the same `Node`: their datagrams share the heap and the network model
//! with membership's (the node frames them on the lease channel, and hands the ones it
//! addresses to itself back in-process, as a real node does), and their deadlines are part of
//! the node's one `poll_timeout`. A `LeaseTick` every [`WRITE_INTERVAL`] lets the contenders
//! write, and ask for and renew the shards the coordinator gives them (see `crate::lease`); the
//! engine's own per-node bookkeeping is a [`LeaseNode`]. A crashed voter keeps its
//! `DurableState` and restarts from it. Without `[leases]` none of this runs and no seed is
//! drawn for it, so traces are unchanged.
//!
//! Costs: O(log heap) per datagram plus the core's own work; no per-event allocation beyond a
//! datagram's buffer, and those buffers are recycled through a pool.

use core::cmp::Ordering;
use core::fmt::Write as _;
use core::time::Duration;
use std::collections::{BTreeSet, BinaryHeap, VecDeque};

use meshkit::config::Config;
use meshkit::diag::fault::{FaultKind, PartitionDirection, PartitionShape as PlanShape, Selector};
use meshkit::lease::{
    Campaign, FencingToken, GroupEvent, LeadershipEvent, LeaseConfig, LeaseGroup, Sequenced, Term,
};
use meshkit::membership::{Event, MemberState};
use meshkit::node::{Channel, DatagramError, Event as NodeEvent, Node};
use meshkit::shard::ShardEvent;
use meshkit::{Incarnation, Instant, MetaVersion, NodeId};
use rand::{RngExt, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::byzantine::{self, Forged, MeshView};
use crate::fault::{
    self, FaultEvent, LEAVE_LINGER_ROUNDS, PAUSE_INBOX_MAX_DATAGRAMS, RESTART_JOIN_SEEDS,
};
use crate::invariants::{Invariants, SWEEP_INTERVAL};
use crate::lease::{Ask, CAMPAIGN_RETRY, LeaseNode, LeaseRecords, Ledger, WRITE_INTERVAL};
use crate::metrics::Counters;
use crate::network::{LinkEffect, LinkSet, Network, Partition, Verdict};
use crate::observer::{Down, Observations, Observer};
use crate::queue::{QUEUE_TICK, QueueRecords, QueueRun};
use crate::report::ExperimentRecord;
use crate::scenario::{FaultAction, LeaseSpec, MetadataOp, NodeSelector, PartitionShape, Scenario};
use crate::shard::{ShardRecords, ShardRun};
use crate::trace::TraceHash;
use meshkit::SkewedClock;

mod plans;
mod probes;
mod tasks;

/// Timer wakeups of one node at one instant after which the engine declares a livelock.
const MAX_WAKEUPS_PER_INSTANT: u32 = 10_000;
/// Keys the metadata workload writes (`w0` .. `w3`).
const WORKLOAD_KEYS: u32 = 4;
/// The workload stops this many anti-entropy intervals (at most a quarter of the run) before the
/// end: a write that gossip missed somewhere is repaired by anti-entropy, so `converged` can hold.
const WORKLOAD_QUIET_AE_ROUNDS: u32 = 2;
/// Lines kept by `watch`.
const MAX_TRACE_LINES: usize = 1_000_000;
/// Heap entries processed between two progress reports.
const PROGRESS_EVERY_STEPS: u64 = 1 << 14;

/// What a heap entry does.
#[derive(Debug)]
enum What {
    Deliver {
        from: u32,
        to: u32,
        data: Vec<u8>,
    },
    Timer {
        node: u32,
        generation: u32,
    },
    Fault(FaultEvent),
    Workload,
    Sweep,
    /// The contenders' writes, renewals and acquisitions.
    LeaseTick,
    /// The core fault plans' schedule is due (see `plans.rs`).
    Plans,
    /// The `[queue]` producers and workers act (see `crate::queue`).
    QueueTick,
    /// A plan given to the run starts (index into the waiting plans, see `plans.rs`).
    PlanStart(u32),
    /// The probes' scheduler is due (see `probes.rs`).
    Probes,
    /// A probe run's request reaches its target.
    ProbeArrive {
        run: meshkit::diag::probe::RunId,
        from: u32,
        to: u32,
    },
    /// A probe run's answer comes back.
    ProbeReply {
        run: meshkit::diag::probe::RunId,
    },
}

/// A heap entry; the heap is a max-heap, so the order is reversed.
#[derive(Debug)]
struct Scheduled {
    time: Instant,
    seq: u64,
    what: What,
}

impl PartialEq for Scheduled {
    fn eq(&self, other: &Self) -> bool {
        (self.time, self.seq) == (other.time, other.seq)
    }
}
impl Eq for Scheduled {}
impl PartialOrd for Scheduled {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Scheduled {
    fn cmp(&self, other: &Self) -> Ordering {
        (other.time, other.seq).cmp(&(self.time, self.seq))
    }
}

/// The heap and its insertion counter.
#[derive(Debug, Default)]
struct Queue {
    heap: BinaryHeap<Scheduled>,
    seq: u64,
}

impl Queue {
    fn push(&mut self, time: Instant, what: What) {
        self.seq += 1;
        self.heap.push(Scheduled {
            time,
            seq: self.seq,
            what,
        });
    }
}

/// A node's process state as the engine knows it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum NodeState {
    Running,
    Paused,
    /// Announced its leave; still runs until its linger ends.
    Leaving,
    Crashed,
    /// Left and stopped, or a `[topology]` spare no membership surge has booted yet.
    Gone,
}

/// One simulated node.
#[derive(Debug)]
struct Slot {
    node: Option<Node>,
    state: NodeState,
    clock: SkewedClock,
    /// Bumped whenever the armed wakeup changes; a wakeup with another generation is stale.
    generation: u32,
    /// The armed wakeup (global time), `Instant::MAX` if none.
    armed: Instant,
    /// Datagrams waiting while paused: sender and bytes (channel byte included).
    inbox: VecDeque<(u32, Vec<u8>)>,
    /// The highest incarnation any life of this node used; a restart boots above it.
    boot: u32,
    /// Bumped by every crash, restart and leave, to invalidate scheduled follow-ups.
    life: u32,
    skew_token: u64,
    last_wake: Instant,
    wakes_at_last: u32,
}

impl Slot {
    /// A slot at its first boot, nothing armed, its clock `local` ahead of global time: a
    /// member (`Running`, with its node) or a spare (`Gone`, none until it joins).
    fn new(node: Option<Node>, state: NodeState, local: Instant) -> Self {
        Self {
            node,
            state,
            clock: SkewedClock::new(Instant::ZERO, local),
            generation: 0,
            armed: Instant::MAX,
            inbox: VecDeque::new(),
            boot: 1,
            life: 0,
            skew_token: 0,
            last_wake: Instant::MAX,
            wakes_at_last: 0,
        }
    }
}

/// What the engine hands to the report builder.
#[derive(Debug)]
pub(crate) struct Outcome {
    pub(crate) end: Instant,
    pub(crate) stopped_early: bool,
    pub(crate) trace_hash: u64,
    pub(crate) counters: Counters,
    pub(crate) observations: Observations,
    pub(crate) violations: Vec<String>,
    pub(crate) converged: bool,
    pub(crate) convergence_note: Option<String>,
    pub(crate) gossip_interval: Duration,
    pub(crate) trace: Vec<String>,
    /// With `[leases]`: the lease figures.
    pub(crate) leases: Option<LeaseRecords>,
    /// With `[shards]`: the shard figures.
    pub(crate) shards: Option<ShardRecords>,
    /// Whether the scenario has a `byzantine` fault (its figures are reported).
    pub(crate) byzantine: bool,
    /// The core fault plans that activated.
    pub(crate) experiments: Vec<ExperimentRecord>,
    /// With `[queue]`: the queue figures.
    pub(crate) queue: Option<QueueRecords>,
    /// The probes' state changes.
    pub(crate) probe_transitions: Vec<crate::report::ProbeTransition>,
}

/// The lease side of a run with `[leases]`: every node's lease state and the ledger.
struct LeaseRun {
    spec: LeaseSpec,
    config: LeaseConfig,
    voters: Vec<NodeId>,
    contenders: Vec<usize>,
    nodes: Vec<LeaseNode>,
    ledger: Ledger,
    /// The Raft leader crashed and no voter leads at a higher term yet: when, and its term.
    raft_failover: Option<(Instant, Term)>,
    /// Drained members that leave at the next lease tick.
    pending_leaves: Vec<usize>,
    /// With `[shards]`: the shard map and its coordinator; shard `i` is ledger scope
    /// `spec.scopes.len() + i`.
    shards: Option<ShardRun>,
}

/// One run of a scenario. See the module documentation.
pub(crate) struct Engine<'s> {
    scenario: &'s Scenario,
    config: Config,
    nodes: usize,
    end: Instant,
    now: Instant,
    queue: Queue,
    slots: Vec<Slot>,
    net: Network,
    fault_rng: ChaCha8Rng,
    workload_rng: ChaCha8Rng,
    observer: Observer,
    invariants: Invariants,
    trace: TraceHash,
    buf: Vec<u8>,
    pool: Vec<Vec<u8>>,
    counters: Counters,
    /// The last network rule id (partitions and link faults).
    next_partition: u64,
    /// The first spare slot no surge has booted yet (`nodes` when none is left); the slots
    /// before it are the members the mesh has had, spares that joined included.
    next_spare: usize,
    /// The workload stops writing here, so that the end state can converge.
    workload_end: Instant,
    /// The node whose events (seen by it or about it) are logged, for debugging.
    watch: Option<usize>,
    watch_log: Vec<String>,
    leases: Option<LeaseRun>,
    /// Whether the scenario has a `byzantine` fault: its datagrams come from node index
    /// `nodes` (id `nodes + 1`), and the checks of `crate::byzantine` apply.
    byzantine: bool,
    /// Every fault as a core fault plan, on the core's own schedule (see `plans.rs`).
    plans: plans::Plans,
    /// Health probes run in the simulator, if the run has any (see `probes.rs`).
    probes: Option<probes::Probes>,
    /// With `[queue]`: producers, workers, the replicas' disks and the queue checks.
    tasks: Option<QueueRun>,
    /// With `[queue]`: the producers' stream (drawn after every other child seed, so runs
    /// without a queue draw what they drew before).
    queue_rng: ChaCha8Rng,
}

impl<'s> Engine<'s> {
    /// Builds a converged mesh of `nodes` nodes for `scenario`, seeded by `seed`, and after
    /// them the scenario's spare slots (down, known to nobody).
    ///
    /// Child seeds are drawn from the master stream in this order: one per node (in node order),
    /// then the network's, the fault timeline's, the workload's and the clocks'. A node derives
    /// its lease components' seeds from its own (`meshkit::node::Node::new` says how), so runs
    /// without leases draw exactly what they drew before leases existed.
    pub(crate) fn new(
        scenario: &'s Scenario,
        config: Config,
        nodes: usize,
        duration: Duration,
        seed: u64,
    ) -> Self {
        // `[topology] spares`: slots after the members, down from the start, that a
        // membership-surge plan boots (`plans.rs`). Nothing is drawn for them from the master
        // stream, so a scenario without spares draws what it drew before they existed.
        let members = nodes;
        let nodes = members + scenario.spares() as usize;
        let mut master = ChaCha8Rng::seed_from_u64(seed);
        let node_seeds: Vec<u64> = (0..members).map(|_| master.random()).collect();
        let net = Network::new(
            scenario.network(),
            nodes,
            scenario.regions(),
            master.random(),
        );
        let fault_rng = ChaCha8Rng::seed_from_u64(master.random());
        let workload_rng = ChaCha8Rng::seed_from_u64(master.random());
        let mut clock_rng = ChaCha8Rng::seed_from_u64(master.random());
        let queue_rng = ChaCha8Rng::seed_from_u64(if scenario.queue().is_some() {
            master.random()
        } else {
            0
        });
        let tasks = scenario.queue().zip(scenario.shards()).map(|(q, sh)| {
            let shards = (0..sh.count)
                .filter_map(|i| meshkit::shard::ShardId::new(&sh.namespace, i).ok())
                .collect();
            QueueRun::new(q, shards, nodes)
        });

        // Node-local clocks start at a uniform offset within one probe interval, so that no
        // two nodes share an epoch (the core also jitters its own first ticks).
        let interval_ns = u64::try_from(config.probe_interval().as_nanos())
            .unwrap_or(1)
            .max(1);
        let mut slots = Vec::with_capacity(nodes);
        for (i, &seed) in node_seeds.iter().enumerate() {
            let local = Instant::from_nanos(clock_rng.random_range(0..interval_ns));
            let mut node = Node::new(config.clone(), id(i), Incarnation::new(1), seed, local);
            for j in (0..members).filter(|&j| j != i) {
                node.add_known_member(local, id(j), Incarnation::new(1));
            }
            slots.push(Slot::new(Some(node), NodeState::Running, local));
        }
        for _ in members..nodes {
            // A spare's clock offset comes after every member's, from the same stream.
            let local = Instant::from_nanos(clock_rng.random_range(0..interval_ns));
            slots.push(Slot::new(None, NodeState::Gone, local));
        }
        let end = fault::at(duration);
        let quiet_end = config.anti_entropy_interval() * WORKLOAD_QUIET_AE_ROUNDS;
        let mut engine = Self {
            scenario,
            config,
            nodes,
            end,
            now: Instant::ZERO,
            queue: Queue::default(),
            slots,
            net,
            fault_rng,
            workload_rng,
            observer: Observer::with_spares(nodes, nodes - members),
            invariants: Invariants::new(nodes),
            trace: TraceHash::default(),
            buf: Vec::with_capacity(meshkit::wire::MAX_DATAGRAM_BYTES),
            pool: Vec::new(),
            counters: Counters::default(),
            next_partition: 0,
            next_spare: members,
            workload_end: fault::at(duration - (duration / 4).min(quiet_end)),
            watch: None,
            watch_log: Vec::new(),
            leases: None,
            byzantine: scenario
                .faults()
                .iter()
                .any(|f| matches!(f.action, FaultAction::Byzantine { .. })),
            plans: plans::Plans::default(),
            probes: None,
            tasks,
            queue_rng,
        };
        if let Some(spec) = scenario.leases() {
            engine.start_leases(spec);
        }
        for i in 0..members {
            engine.drain(i);
        }
        if engine.leases.is_some() {
            engine
                .queue
                .push(Instant::ZERO + WRITE_INTERVAL, What::LeaseTick);
        }
        if engine.queue_run().is_some() {
            engine
                .queue
                .push(Instant::ZERO + QUEUE_TICK, What::QueueTick);
        }
        for (at, event) in fault::timeline(scenario.faults(), end, &mut engine.fault_rng) {
            engine.queue.push(at, What::Fault(event));
        }
        if scenario.workload().metadata_updates_per_s > 0.0 {
            let first = engine.workload_gap();
            engine.queue.push(Instant::ZERO + first, What::Workload);
        }
        engine
            .queue
            .push(Instant::ZERO + SWEEP_INTERVAL, What::Sweep);
        engine
    }

    /// Explains every false-positive Dead verdict in the observations.
    pub(crate) fn explain_false_positives(&mut self) {
        self.observer.explain();
    }

    /// Logs every event seen by or about node index `node` (and its lifecycle) into the outcome.
    pub(crate) fn watch(&mut self, node: usize) {
        self.watch = Some(node);
    }

    fn log(&mut self, index: usize, what: &str) {
        if self.watch == Some(index) && self.watch_log.len() < MAX_TRACE_LINES {
            self.watch_log
                .push(format!("{} node-{}: {what}", self.now, index + 1));
        }
    }

    /// Runs to the end (or the first invariant violation), reporting progress as
    /// `(virtual now, virtual end)` now and then.
    pub(crate) fn run(mut self, progress: &mut dyn FnMut(Instant, Instant)) -> Outcome {
        let mut steps = 0u64;
        let mut stopped_early = false;
        while let Some(top) = self.queue.heap.peek() {
            if top.time > self.end {
                break;
            }
            let Some(entry) = self.queue.heap.pop() else {
                break;
            };
            self.now = entry.time;
            self.step(entry.what);
            steps += 1;
            if steps.is_multiple_of(PROGRESS_EVERY_STEPS) {
                progress(self.now, self.end);
            }
            if self.invariants.violated() {
                stopped_early = true;
                break;
            }
        }
        if !stopped_early {
            self.now = self.end;
        }
        progress(self.now, self.end);
        self.counters.steps = steps;
        let view = self.final_view();
        if !stopped_early && view.one_view != self.observer.one_view() {
            self.invariants.violation(
                self.now,
                format!(
                    "the event stream and the member tables disagree at the end: tables say {}, \
                     events say {} ({})",
                    if view.one_view {
                        "one view"
                    } else {
                        "no single view"
                    },
                    if self.observer.one_view() {
                        "one view"
                    } else {
                        "no single view"
                    },
                    view.note.as_deref().unwrap_or("no detail"),
                ),
            );
        }
        if !stopped_early {
            self.check_shard_owners();
            self.check_byzantine_end();
            self.check_queue_end();
        }
        self.count_active_joins();
        self.count_leaves();
        let converged = view.one_view && view.metadata_equal;
        let convergence_note = view.note;
        let net = self.net.stats();
        self.counters.dropped_partition = net.dropped_partition;
        self.counters.dropped_loss = net.dropped_loss;
        self.counters.dropped_burst = net.dropped_burst;
        self.counters.duplicated = net.duplicated;
        self.counters.delayed = net.delayed;
        self.counters.held_back = net.held_back;
        Outcome {
            end: self.now,
            stopped_early,
            trace_hash: self.trace.value(),
            counters: self.counters,
            observations: self.observer.finish(self.now),
            violations: self
                .invariants
                .violations()
                .iter()
                .map(ToString::to_string)
                .collect(),
            converged,
            convergence_note,
            gossip_interval: self.config.gossip_interval(),
            trace: self.watch_log,
            byzantine: self.byzantine,
            experiments: std::mem::take(&mut self.plans.records),
            probe_transitions: self
                .probes
                .as_mut()
                .map(|p| std::mem::take(&mut p.transitions))
                .unwrap_or_default(),
            queue: self.tasks.take().map(|q| q.records),
            shards: self
                .leases
                .as_mut()
                .and_then(|run| run.shards.take())
                .map(ShardRun::finish),
            leases: self.leases.map(|run| {
                let unfinished = u64::from(run.raft_failover.is_some());
                let mut records = run.ledger.finish();
                records.raft_failovers_unfinished = unfinished;
                records
            }),
        }
    }

    fn step(&mut self, what: What) {
        match what {
            What::Deliver { from, to, data } => {
                self.deliver(from as usize, to as usize, data);
            }
            What::Timer { node, generation } => self.wake(node as usize, generation),
            What::Fault(event) => self.apply(event),
            What::Workload => self.workload(),
            What::Sweep => {
                let slots = &self.slots;
                let running = |i: usize| {
                    let s: &Slot = &slots[i];
                    s.node
                        .as_ref()
                        .filter(|_| s.state != NodeState::Crashed)
                        .map(Node::membership)
                };
                self.invariants.sweep(self.now, running);
                self.queue.push(self.now + SWEEP_INTERVAL, What::Sweep);
            }
            What::LeaseTick => self.lease_tick(),
            What::Plans => self.run_plans(),
            What::QueueTick => self.queue_tick(),
            What::PlanStart(k) => self.plan_start(k),
            What::Probes => self.probes_step(),
            What::ProbeArrive { run, from, to } => {
                self.probe_arrive(run, from as usize, to as usize);
            }
            What::ProbeReply { run } => self.probe_reply(run),
        }
    }

    // ---- node inputs -------------------------------------------------------------------------

    /// Delivers a datagram (channel byte included).
    fn deliver(&mut self, from: usize, to: usize, data: Vec<u8>) {
        match self.slots[to].state {
            NodeState::Running | NodeState::Leaving => {
                self.hand_datagram(from, to, &data);
                self.recycle(data);
                self.drain(to);
            }
            NodeState::Paused => {
                let slot = &mut self.slots[to];
                if slot.inbox.len() < PAUSE_INBOX_MAX_DATAGRAMS {
                    slot.inbox.push_back((from as u32, data));
                } else {
                    self.counters.dropped_inbox_full += 1;
                    self.recycle(data);
                }
            }
            NodeState::Crashed | NodeState::Gone => {
                self.counters.dropped_dead += 1;
                self.recycle(data);
            }
        }
    }

    /// Hands one datagram to a running node (without draining it).
    fn hand_datagram(&mut self, from: usize, to: usize, data: &[u8]) {
        let channel = Channel::split(data);
        if from >= self.nodes {
            match channel {
                Ok((Channel::Lease, _)) => self.hand_forged_lease_datagram(from, to, data),
                _ => self.hand_forged_datagram(from, to, data),
            }
            return;
        }
        // The trace folds in the payload, as it did before datagrams carried a channel byte.
        match channel {
            Ok((Channel::Shard, payload)) => {
                self.trace.word(0x5ba2d);
                self.trace.word(self.now.as_nanos());
                self.trace.word(from as u64);
                self.trace.word(to as u64);
                self.trace.bytes(payload);
            }
            Ok((Channel::Queue, payload)) => {
                self.trace.word(0x90e0e);
                self.trace.word(self.now.as_nanos());
                self.trace.word(from as u64);
                self.trace.word(to as u64);
                self.trace.bytes(payload);
            }
            Ok((Channel::Lease, payload)) => {
                self.trace.word(0x1ea5e);
                self.trace.word(self.now.as_nanos());
                self.trace.word(from as u64);
                self.trace.word(to as u64);
                self.trace.bytes(payload);
            }
            Ok((_, payload)) => {
                self.counters.delivered += 1;
                self.trace.word(self.now.as_nanos());
                self.trace.word(from as u64);
                self.trace.word(to as u64);
                self.trace.bytes(payload);
            }
            Err(_) => {}
        }
        let slot = &mut self.slots[to];
        let local = slot.clock.local(self.now);
        let Some(node) = slot.node.as_mut() else {
            return;
        };
        match node.handle_datagram(local, id(from), data) {
            Ok(()) => {}
            // A lease datagram for a state machine the node does not run (a restarted voter's
            // old client's answer, say) or one it refuses is counted, not a violation: the core
            // refuses it without changing state.
            Err(
                DatagramError::Lease(_)
                | DatagramError::NotRunning { .. }
                | DatagramError::Shard(_)
                | DatagramError::NoShardMember
                | DatagramError::NoCoordinator,
            ) => {
                if let Some(run) = self.leases.as_mut() {
                    run.ledger.records.messages_refused += 1;
                }
            }
            Err(e) => {
                self.invariants.violation(
                    self.now,
                    format!(
                        "node-{} refused a datagram from node-{}: {e}",
                        to + 1,
                        from + 1
                    ),
                );
            }
        }
    }

    fn wake(&mut self, index: usize, generation: u32) {
        let now = self.now;
        let slot = &mut self.slots[index];
        if slot.generation != generation {
            return;
        }
        slot.armed = Instant::MAX;
        if !matches!(slot.state, NodeState::Running | NodeState::Leaving) {
            // A paused node's timers wait; its resume re-arms them.
            return;
        }
        if slot.last_wake == now {
            slot.wakes_at_last += 1;
            if slot.wakes_at_last > MAX_WAKEUPS_PER_INSTANT {
                self.invariants.violation(
                    now,
                    format!(
                        "node-{} asked for {MAX_WAKEUPS_PER_INSTANT} timeouts at one instant \
                         (poll_timeout never moves past now)",
                        index + 1
                    ),
                );
                return;
            }
        } else {
            slot.last_wake = now;
            slot.wakes_at_last = 0;
        }
        let local = slot.clock.local(now);
        if let Some(node) = slot.node.as_mut() {
            node.handle_timeout(local);
        }
        self.book_campaign(index);
        self.drain(index);
    }

    /// Books the requests a contender's campaign just made (`sent` now, in global time), for
    /// the grant-latency figure and so that the write tick does not ask twice.
    fn book_campaign(&mut self, index: usize) {
        let Some(run) = self.leases.as_mut() else {
            return;
        };
        let slot = &self.slots[index];
        let Some(node) = slot.node.as_ref() else {
            return;
        };
        let local = slot.clock.local(self.now);
        let ledger = &run.ledger;
        run.nodes[index].book_campaign(node, local, self.now, |scope| ledger.scope_index(scope));
    }

    /// Drains a node's outputs after an input, in the core's documented order: datagrams
    /// through the network, events to the observer, the invariants, the ledger and the trace,
    /// then one wakeup.
    fn drain(&mut self, index: usize) {
        let Self {
            slots,
            net,
            queue,
            pool,
            buf,
            counters,
            now,
            nodes,
            leases,
            tasks: queue_run,
            ..
        } = self;
        let now = *now;
        let slot = &mut slots[index];
        let Some(node) = slot.node.as_mut() else {
            return;
        };
        let local = slot.clock.local(now);
        // The replicas' checkpoint records reach the disk before any datagram leaves.
        while let Some(w) = node.poll_queue_durable() {
            if let Some(q) = queue_run.as_mut() {
                q.persist(index, w.shard, w.record);
            }
        }
        while let Some(t) = node.poll_transmit(local, buf) {
            // The figures count what the core encoded, as before datagrams had a channel byte;
            // shard instructions count with the lease traffic they steer.
            let payload_len = t.len.saturating_sub(1) as u64;
            let lease = buf.first() != Some(&Channel::Membership.byte());
            if lease {
                if let Some(run) = leases.as_mut() {
                    run.ledger.records.datagrams_sent += 1;
                    run.ledger.records.bytes_sent += payload_len;
                }
            } else {
                counters.datagrams_sent += 1;
                counters.bytes_sent += payload_len;
            }
            let Some(to) = index_of(t.to, *nodes) else {
                if !lease {
                    counters.misaddressed += 1;
                }
                continue;
            };
            let datagram = &buf[..t.len];

            if let Verdict::Deliver { delay_ns, copy_ns } = net.send(index, to) {
                for delay in core::iter::once(delay_ns).chain(copy_ns) {
                    let mut data = pool.pop().unwrap_or_default();
                    data.clear();
                    data.extend_from_slice(datagram);
                    let at = Instant::from_nanos(now.as_nanos().saturating_add(delay));
                    queue.push(
                        at,
                        What::Deliver {
                            from: index as u32,
                            to: to as u32,
                            data,
                        },
                    );
                }
            }
        }
        let events: Vec<NodeEvent> = core::iter::from_fn(|| node.poll_event()).collect();
        let live = self.observer.is_live(index);
        let mut violations = Vec::new();
        for event in events {
            // Membership events are traced (with the ones about the node) in
            // `on_member_event`; the rest of the watched node's own here.
            if !matches!(event, NodeEvent::Membership(_)) && self.watch == Some(index) {
                self.log(index, &format!("{event:?}"));
            }
            match event {
                NodeEvent::Membership(event) => self.on_member_event(index, &event, live),
                NodeEvent::Group(e) => self.on_group_event(index, &e),
                NodeEvent::Leadership(e) => {
                    violations.extend(self.on_lease_event(index, &e));
                }
                NodeEvent::Shard(e) => self.on_shard_event(index, &e),
                NodeEvent::Queue(e) => violations.extend(self.on_queue_event(index, &e)),
                _ => {}
            }
        }
        self.after_lease_events(index);
        for v in violations {
            self.invariants.violation(now, v);
        }
        let slot = &mut self.slots[index];
        if matches!(slot.state, NodeState::Running | NodeState::Leaving) {
            rearm(slot, &mut self.queue, now, index);
        }
    }

    /// One membership event of node `index` (`live`: whether the observer counts it live).
    fn on_member_event(&mut self, index: usize, event: &Event, live: bool) {
        let now = self.now;
        let nodes = self.nodes;
        self.counters.events += 1;
        hash_event(&mut self.trace, now, index, event);
        if let Some(w) = self.watch
            && self.watch_log.len() < MAX_TRACE_LINES
            && (w == index || concerns(event, w))
        {
            self.watch_log
                .push(format!("{now} node-{}: {event:?}", index + 1));
        }
        match *event {
            Event::MemberStateChanged {
                node: member,
                incarnation,
                from,
                to,
                by,
            } => {
                let Some(m) = index_of(member, nodes) else {
                    return;
                };
                let by = by.and_then(|b| index_of(b, nodes));
                let inc = incarnation.get();
                self.invariants
                    .on_member_state(now, index, m, inc, from, to, live);
                self.observer.on_member_state(now, index, m, inc, to, by);
                // Only a member itself leaves: a live one held Left was talked into it.
                if self.byzantine
                    && to == MemberState::Left
                    && m != index
                    && matches!(self.slots[m].state, NodeState::Running | NodeState::Paused)
                {
                    self.invariants.violation(
                        now,
                        format!(
                            "node-{} holds node-{} Left, but node-{} never left (it is {:?})",
                            index + 1,
                            m + 1,
                            m + 1,
                            self.slots[m].state
                        ),
                    );
                }
            }
            Event::Refuted { incarnation } => {
                self.observer.on_refuted(now, index, incarnation.get());
            }
            Event::MetadataChanged {
                node: owner,
                version,
            } => {
                let Some(m) = index_of(owner, nodes) else {
                    return;
                };
                if let Some(node) = self.slots[index].node.as_ref() {
                    self.invariants
                        .on_metadata(now, node.membership(), m, version);
                }
                if live {
                    self.observer.on_metadata(now, index, m, version);
                }
            }
            _ => {}
        }
    }

    /// One event of node `index`'s voter: grants feed the ledger's fences and the shard map.
    fn on_group_event(&mut self, index: usize, e: &Sequenced<GroupEvent>) {
        let now = self.now;
        self.trace.word(now.as_nanos());
        self.trace.word(index as u64);
        let _ = write!(self.trace, "{:?}", e.event);
        let Some(run) = self.leases.as_mut() else {
            return;
        };
        let base = run.spec.scopes.len();
        let LeaseRun { ledger, shards, .. } = run;
        match &e.event {
            GroupEvent::Granted {
                scope,
                holder,
                token,
                ..
            } => {
                if let Some(s) = ledger.scope_index(scope) {
                    ledger.on_granted(now, s, *token);
                    if let Some(sh) = shards.as_mut().filter(|_| s >= base) {
                        sh.on_granted(s - base, *holder, token.get());
                    }
                }
            }
            GroupEvent::Released { scope, token, .. }
            | GroupEvent::Expired { scope, token, .. } => {
                if let Some(s) = ledger.scope_index(scope)
                    && let Some(sh) = shards.as_mut().filter(|_| s >= base)
                {
                    sh.on_ended(s - base, token.get());
                }
            }
            _ => {}
        }
    }

    /// After a node's events: a Raft failover ends when a voter leads (a quorum elected it) at
    /// a higher term than the crashed leader's.
    fn after_lease_events(&mut self, index: usize) {
        let now = self.now;
        let Some(run) = self.leases.as_mut() else {
            return;
        };
        // A holder stops believing the moment its client stops saying it holds (what its queue
        // and its writes go by), not at the event that comes later: a transfer the shard member
        // asked makes `holds` false at once and `Transferred` follows the voters' answer, after
        // the target may have been granted the lease (seen with the shard coordinator planning
        // a suspect's shards away: "two holders" in queue-owner-lapse seeds 194 and 273).
        if let Some(node) = self.slots[index].node.as_ref() {
            let local = self.slots[index].clock.local(now);
            let client = node.lease_client();
            run.ledger.keep_beliefs(index, |scope| {
                client.is_some_and(|c| c.holds(local, scope).is_some())
            });
        }
        let Some(g) = self.slots[index].node.as_ref().and_then(Node::lease_group) else {
            return;
        };
        if let Some((since, term)) = run.raft_failover
            && g.is_leader()
            && g.term() > term
        {
            run.ledger
                .records
                .raft_failover_s
                .push(now.saturating_duration_since(since).as_secs_f64());
            run.raft_failover = None;
        }
    }

    /// One event of node `index`'s lease client: the ledger's beliefs, fences and figures, and
    /// the engine's bookkeeping of its requests. Returns the violations found.
    fn on_lease_event(&mut self, index: usize, e: &Sequenced<LeadershipEvent>) -> Vec<String> {
        let now = self.now;
        self.trace.word(now.as_nanos());
        self.trace.word(index as u64);
        let _ = write!(self.trace, "{:?}", e.event);
        let Some(run) = self.leases.as_mut() else {
            return Vec::new();
        };
        let slots = &self.slots;
        let LeaseRun {
            nodes: lnodes,
            ledger,
            ..
        } = run;
        let ln = &mut lnodes[index];
        let clock_of = |i: usize| {
            let s = &slots[i];
            (!matches!(s.state, NodeState::Crashed | NodeState::Gone)).then_some(s.clock)
        };
        let mut violations = Vec::new();
        let scope_of = |scope| ledger.scope_index(scope);
        match &e.event {
            LeadershipEvent::Acquired {
                scope,
                token,
                expires,
                ..
            } => {
                let Some(s) = scope_of(scope) else {
                    return violations;
                };
                violations.extend(ledger.on_acquired(now, index, s, *token, *expires, &clock_of));
                let asked = ln
                    .requests
                    .iter()
                    .find(|(_, r)| r.scope == s && r.ask == Ask::Acquire)
                    .map(|(&id, &r)| (id, r));
                if let Some((id, r)) = asked {
                    ln.requests.remove(&id);
                    ln.refresh_asking(s);
                    ledger
                        .records
                        .grant_ms
                        .push(now.saturating_duration_since(r.sent).as_secs_f64() * 1e3);
                }
                // A new holder writes at once, so that the fence learns its token.
                violations.extend(ledger.write(now, index, s, *token));
            }
            LeadershipEvent::Renewed { scope, expires, .. } => {
                let Some(s) = scope_of(scope) else {
                    return violations;
                };
                violations.extend(ledger.on_renewed(now, index, s, *expires, &clock_of));
                ln.requests
                    .retain(|_, r| !(r.scope == s && r.ask == Ask::Renew));
                ln.refresh_asking(s);
            }
            LeadershipEvent::Lost { scope, .. }
            | LeadershipEvent::Expired { scope, .. }
            | LeadershipEvent::Released { scope, .. }
            | LeadershipEvent::Transferred { scope, .. } => {
                let Some(s) = scope_of(scope) else {
                    return violations;
                };
                ledger.on_belief_end(index, s);
                if matches!(e.event, LeadershipEvent::Lost { .. }) {
                    ln.requests
                        .retain(|_, r| !(r.scope == s && r.ask == Ask::Renew));
                    ln.refresh_asking(s);
                }
            }
            LeadershipEvent::Failed { request, .. } => {
                if let Some(r) = ln.requests.remove(request) {
                    ln.refresh_asking(r.scope);
                }
            }
            _ => {}
        }
        violations
    }

    // ---- faults ------------------------------------------------------------------------------

    fn apply(&mut self, event: FaultEvent) {
        match event {
            FaultEvent::Fire { fault } => {
                let action = self.scenario.faults()[fault as usize].action.clone();
                self.fire(&action);
            }
            FaultEvent::LeaveDone { node, life } => {
                let slot = &mut self.slots[node as usize];
                if slot.life == life && slot.state == NodeState::Leaving {
                    slot.node = None;
                    slot.state = NodeState::Gone;
                    slot.generation += 1;
                    slot.armed = Instant::MAX;
                    let clock = slot.clock;
                    if let Some(run) = self.leases.as_mut() {
                        run.ledger.on_crash(self.now, node as usize, clock);
                    }
                }
            }
        }
    }

    fn fire(&mut self, action: &FaultAction) {
        let now = self.now;
        match action {
            // Each occurrence of a fault kind is a core fault plan (docs/diagnostics.md) on what
            // the fault stream drew, started now; its revert (a restart, a heal, the end of a
            // pause, loss or skew) is the plan's own, at its deadline. A fault without an end
            // lasts the rest of the run.
            FaultAction::Crash {
                nodes,
                restart_after,
            } => {
                let victims = self.pick(nodes, |s| {
                    matches!(s, NodeState::Running | NodeState::Paused)
                });
                self.start_lowered(FaultKind::Kill {}, indices(&victims), *restart_after);
            }
            FaultAction::Restart { nodes } => {
                for i in self.pick(nodes, |s| s == NodeState::Crashed) {
                    self.restart(i);
                }
            }
            FaultAction::Partition {
                shape,
                one_way,
                heal_after,
            } => {
                let drawn = match shape {
                    PartitionShape::Split(f) => {
                        fault::split_groups(self.next_spare, *f, &mut self.fault_rng)
                    }
                    PartitionShape::Groups(groups) => {
                        let groups: Vec<NodeSelector> =
                            groups.iter().map(|g| self.resolve_role(g)).collect();
                        fault::explicit_groups(self.next_spare, &groups)
                    }
                };
                if let Some(groups) = fault::plan_groups(&drawn, *one_way) {
                    let direction = if *one_way {
                        PartitionDirection::OneWay
                    } else {
                        PartitionDirection::TwoWay
                    };
                    let kind = FaultKind::Partition {
                        shape: PlanShape::Groups(groups),
                        direction,
                    };
                    self.start_lowered(kind, Selector::All, *heal_after);
                }
            }
            FaultAction::Heal => self.heal_partitions(),
            FaultAction::Loss { rate, duration } => {
                self.start_lowered(FaultKind::Loss { rate: *rate }, Selector::All, *duration);
            }
            FaultAction::Pause { nodes, duration } => {
                let victims = self.pick(nodes, |s| s == NodeState::Running);
                self.start_lowered(FaultKind::Pause {}, indices(&victims), Some(*duration));
            }
            FaultAction::Skew {
                nodes,
                rate,
                duration,
            } => {
                let victims = self.pick(nodes, |s| {
                    matches!(s, NodeState::Running | NodeState::Paused)
                });
                let kind = FaultKind::ClockSkew { rate: *rate };
                self.start_lowered(kind, indices(&victims), *duration);
            }
            FaultAction::Plan(plan) => {
                // Each occurrence draws its own seed from the fault stream: a repeated plan
                // with a count or share picks again, as every other selector does.
                let seed = plan.seed() ^ self.fault_rng.random::<u64>();
                self.start_or_record(plan.clone().with_seed(seed));
            }
            FaultAction::Leave { nodes } => {
                for i in self.pick(nodes, |s| s == NodeState::Running) {
                    self.leave_node(i);
                }
            }
            FaultAction::Transfer { scope } => self.transfer(scope.as_ref()),
            FaultAction::Join { nodes } => {
                for i in self.pick(nodes, |s| {
                    matches!(s, NodeState::Running | NodeState::Paused)
                }) {
                    let joined = self
                        .leases
                        .as_mut()
                        .and_then(|r| r.shards.as_mut())
                        .is_some_and(|sh| sh.out_of_pool.remove(&i));
                    if joined {
                        self.announce_shards(i, false);
                    }
                }
            }
            FaultAction::Drain { nodes } => {
                // Candidates: running members of the shard pool not draining already.
                let Some(run) = self.leases.as_ref() else {
                    return;
                };
                let Some(sh) = run.shards.as_ref() else {
                    return;
                };
                let candidates: Vec<u32> = run
                    .contenders
                    .iter()
                    .copied()
                    .filter(|&c| {
                        self.slots[c].state == NodeState::Running
                            && !sh.out_of_pool.contains(&c)
                            && !sh.is_draining(c)
                            && (!nodes.is_lease_role() || self.in_role(nodes, c))
                    })
                    .map(|c| c as u32)
                    .collect();
                let picked = fault::select(nodes, &candidates, &mut self.fault_rng);
                for i in picked {
                    if let Some(sh) = self.leases.as_mut().and_then(|r| r.shards.as_mut()) {
                        sh.start_drain(now, i as usize);
                    }
                    self.announce_shards(i as usize, true);
                }
            }
            FaultAction::Byzantine { attacks } => {
                let attack = attacks[self.fault_rng.random_range(0..attacks.len())];
                let view = self.mesh_view();
                let attacker = id(self.nodes);
                let forged =
                    byzantine::forge(attack, attacker, &view, self.nodes, &mut self.fault_rng);
                self.counters.byzantine_attacks += 1;
                for f in forged {
                    self.inject(f);
                }
            }
            FaultAction::Metadata { nodes, key, op } => {
                for i in self.pick(nodes, |s| s == NodeState::Running) {
                    let value = match *op {
                        MetadataOp::Set { value_bytes } => {
                            Some(random_bytes(&mut self.fault_rng, value_bytes as usize))
                        }
                        MetadataOp::Delete => None,
                    };
                    self.write_metadata(i, key, value.as_deref());
                }
            }
        }
    }

    /// Starts a partition of `group` (every node index's group) and returns its network rule
    /// id (also the observer's id of the partition).
    fn start_partition(&mut self, group: Vec<u8>, one_way: bool) -> u64 {
        let now = self.now;
        self.next_partition += 1;
        let id = self.next_partition;
        let partition = Partition { id, group, one_way };
        self.observer.on_partition(now, &partition);
        self.net
            .add_rule(id, LinkSet::Groups(partition), LinkEffect::Cut);
        self.partition_started();
        id
    }

    /// Tells the lease ledger a partition started (its one-holder check allows for it).
    fn partition_started(&mut self) {
        let now = self.now;
        if let Some(run) = self.leases.as_mut() {
            let slots = &self.slots;
            let clock_of = |i: usize| {
                let s = &slots[i];
                (!matches!(s.state, NodeState::Crashed | NodeState::Gone)).then_some(s.clock)
            };
            run.ledger.on_partition(now, &clock_of);
        }
    }

    /// Pauses running node `i` and returns the life its resume must match; the caller
    /// schedules the resume, then calls `pause_lease` (in that order, as the trace hashes of
    /// the shipped scenarios were taken).
    fn pause_node(&mut self, i: usize) -> u32 {
        let slot = &mut self.slots[i];
        slot.state = NodeState::Paused;
        let life = slot.life;
        self.observer.on_pause(i);
        self.log(i, "paused");
        life
    }

    /// A graceful leave: a contender hands its `[leases]` scopes over first; the process stops
    /// a few gossip rounds later.
    fn leave_node(&mut self, i: usize) {
        let now = self.now;
        // A leaving node stops contending (meshkitd's graceful shutdown does), then hands over
        // what it holds.
        if let Some(node) = self.slots[i].node.as_mut() {
            let scopes: Vec<_> = node
                .campaign()
                .map(|c| c.scopes().cloned().collect())
                .unwrap_or_default();
            for scope in &scopes {
                node.withdraw_campaign(scope);
            }
        }
        self.drain_node_leases(i);
        let slot = &mut self.slots[i];
        let local = slot.clock.local(now);
        if let Some(node) = slot.node.as_mut() {
            node.leave(local);
        }
        slot.state = NodeState::Leaving;
        slot.life += 1;
        let event = FaultEvent::LeaveDone {
            node: i as u32,
            life: slot.life,
        };
        self.observer.on_down(now, i, Down::Leave);
        self.drain(i);
        let linger = self.config.gossip_interval() * LEAVE_LINGER_ROUNDS;
        self.queue.push(now + linger, What::Fault(event));
    }

    /// The sorted indices a selector picks among nodes whose state passes `filter`.
    fn pick(&mut self, sel: &NodeSelector, filter: impl Fn(NodeState) -> bool) -> Vec<usize> {
        let candidates: Vec<u32> = (0..self.nodes as u32)
            .filter(|&i| filter(self.slots[i as usize].state))
            .filter(|&i| !sel.is_lease_role() || self.in_role(sel, i as usize))
            .collect();
        fault::select(sel, &candidates, &mut self.fault_rng)
            .into_iter()
            .map(|i| i as usize)
            .collect()
    }

    fn crash(&mut self, i: usize) {
        self.log(i, "crashed");
        let slot = &mut self.slots[i];
        let node = slot.node.take();
        if let Some(node) = &node {
            slot.boot = slot.boot.max(node.incarnation().get());
        }
        slot.state = NodeState::Crashed;
        slot.generation += 1;
        slot.armed = Instant::MAX;
        slot.life += 1;
        let inbox = std::mem::take(&mut slot.inbox);
        for (_, data) in inbox {
            self.recycle(data);
        }
        self.observer.on_down(self.now, i, Down::Crash);
        if let Some(q) = self.tasks.as_mut() {
            let served: Vec<meshkit::shard::ShardId> = node
                .as_ref()
                .and_then(Node::queues)
                .map(|qs| qs.owned().map(|(s, _)| s.clone()).collect())
                .unwrap_or_default();
            q.on_crash(self.now, i, &served);
        }
        self.crash_lease(i, node);
    }

    fn restart(&mut self, i: usize) {
        self.log(i, "restarting");
        let seed: u64 = self.fault_rng.random();
        let seeds: Vec<NodeId> = self
            .pick(&NodeSelector::Count(RESTART_JOIN_SEEDS as u32), |s| {
                matches!(s, NodeState::Running | NodeState::Paused)
            })
            .into_iter()
            .map(id)
            .collect();
        self.boot_node(i, seed, &seeds);
    }

    /// Boots a fresh process in slot `i` (node seed `seed`) at a boot incarnation above every
    /// earlier life, joining through `seeds`: a restart, or a spare a membership surge starts.
    fn boot_node(&mut self, i: usize, seed: u64, seeds: &[NodeId]) {
        let now = self.now;
        let slot = &mut self.slots[i];
        slot.boot += 1;
        slot.life += 1;
        let boot = slot.boot;
        let local = slot.clock.local(now);
        let node = Node::new(
            self.config.clone(),
            id(i),
            Incarnation::new(boot),
            seed,
            local,
        );
        let mut node = self.restart_lease(i, node, local);
        node.join(local, seeds);
        let slot = &mut self.slots[i];
        slot.node = Some(node);
        slot.state = NodeState::Running;
        self.invariants.on_restart(i);
        self.observer.on_restart(now, i, boot);
        // A member of the shard pool announces itself again (a new life, new metadata).
        self.announce_shards_at_start(i);
        self.drain(i);
    }

    fn resume(&mut self, i: usize, life: u32) {
        let slot = &mut self.slots[i];
        if slot.life != life || slot.state != NodeState::Paused {
            return;
        }
        slot.state = NodeState::Running;
        self.log(i, "resumed");
        self.observer.on_resume(i);
        // The socket buffer is read first, then the overdue timers run (re-armed by drain).
        self.resume_lease_writes(i);
        let inbox = std::mem::take(&mut self.slots[i].inbox);
        for (from, data) in inbox {
            self.hand_datagram(from as usize, i, &data);
            self.recycle(data);
            self.drain(i);
        }
        self.drain(i);
    }

    fn set_clock_rate(&mut self, i: usize, ppm: u64) {
        let now = self.now;
        let slot = &mut self.slots[i];
        slot.clock.set_rate(now, ppm);
        slot.skew_token += 1;
        // The armed wakeup was converted with the old rate: convert again.
        slot.armed = Instant::MAX;
        slot.generation += 1;
        if matches!(slot.state, NodeState::Running | NodeState::Leaving) {
            rearm(slot, &mut self.queue, now, i);
        }
    }

    fn write_metadata(&mut self, i: usize, key: &str, value: Option<&[u8]>) -> Option<MetaVersion> {
        let slot = &mut self.slots[i];
        let local = slot.clock.local(self.now);
        let node = slot.node.as_mut()?;
        let result = match value {
            Some(v) => node.set_metadata(local, key, v),
            None => node.delete_metadata(local, key),
        };
        match result {
            Ok(version) => {
                self.invariants.record_write(i, version, key, value);
                self.drain(i);
                Some(version)
            }
            Err(e) => {
                self.counters.metadata_rejected += 1;
                if self.counters.first_metadata_error.is_none() {
                    self.counters.first_metadata_error =
                        Some(format!("node-{} {key:?}: {e}", i + 1));
                }
                None
            }
        }
    }

    fn workload(&mut self) {
        let spec = *self.scenario.workload();
        if self.now >= self.workload_end {
            return;
        }
        let candidates: Vec<u32> = (0..self.nodes as u32)
            .filter(|&i| self.slots[i as usize].state == NodeState::Running)
            .collect();
        if !candidates.is_empty() {
            let i = candidates[self.workload_rng.random_range(0..candidates.len())] as usize;
            let key = format!("w{}", self.workload_rng.random_range(0..WORKLOAD_KEYS));
            let value = random_bytes(&mut self.workload_rng, spec.metadata_value_bytes as usize);
            // Track before draining, so that the first copies count.
            let slot = &mut self.slots[i];
            let local = slot.clock.local(self.now);
            if let Some(node) = slot.node.as_mut() {
                match node.set_metadata(local, &key, &value) {
                    Ok(version) => {
                        self.invariants.record_write(i, version, &key, Some(&value));
                        self.observer.track_update(self.now, i, version);
                        self.drain(i);
                    }
                    Err(e) => {
                        self.counters.metadata_rejected += 1;
                        if self.counters.first_metadata_error.is_none() {
                            self.counters.first_metadata_error =
                                Some(format!("node-{} {key:?}: {e}", i + 1));
                        }
                    }
                }
            }
        }
        let gap = self.workload_gap();
        self.queue.push(self.now + gap, What::Workload);
    }

    /// An exponential gap between workload writes.
    fn workload_gap(&mut self) -> Duration {
        let rate = self.scenario.workload().metadata_updates_per_s;
        let u: f64 = self.workload_rng.random();
        Duration::from_secs_f64((-(1.0 - u).ln() / rate).min(1e9))
    }

    fn recycle(&mut self, data: Vec<u8>) {
        // Keep enough buffers for the datagrams usually in flight; drop the rest.
        if self.pool.len() < 4 * self.nodes + 1024 {
            self.pool.push(data);
        }
    }

    // ---- the end -----------------------------------------------------------------------------

    /// Counts the graceful leaves (members that left or are leaving: every slot that has been
    /// a member and is `Leaving` or `Gone`), and those 99% of the live nodes hold `left` or no
    /// longer list; one held `dead` instead is no leave seen.
    fn count_leaves(&mut self) {
        for i in 0..self.next_spare {
            if !matches!(self.slots[i].state, NodeState::Leaving | NodeState::Gone) {
                continue;
            }
            self.counters.leaves += 1;
            if self.held_by_quorum(i, |m| matches!(m, None | Some(MemberState::Left))) {
                self.counters.leaves_seen += 1;
            }
        }
    }

    /// Asks the member tables themselves (not the events) whether every live node holds exactly
    /// the live nodes up, and each at its owner's metadata version.
    fn final_view(&self) -> FinalView {
        let live: Vec<bool> = self
            .slots
            .iter()
            .map(|s| matches!(s.state, NodeState::Running | NodeState::Paused))
            .collect();
        let live_count = live.iter().filter(|&&l| l).count();
        let own: Vec<Option<MetaVersion>> = self
            .slots
            .iter()
            .enumerate()
            .map(|(i, s)| {
                let node = s.node.as_ref().filter(|_| live[i])?;
                node.membership().member(id(i)).map(|m| m.meta_version)
            })
            .collect();
        let mut view = FinalView {
            one_view: true,
            metadata_equal: true,
            note: None,
        };
        for (o, slot) in self.slots.iter().enumerate() {
            let Some(node) = slot.node.as_ref().filter(|_| live[o]).map(Node::membership) else {
                continue;
            };
            let mut up = 0usize;
            for m in node.members() {
                let Some(k) = index_of(m.id, self.nodes) else {
                    continue;
                };
                if k == o || !matches!(m.state, MemberState::Alive | MemberState::Suspect) {
                    continue;
                }
                if !live[k] {
                    view.one_view = false;
                    view.note.get_or_insert_with(|| {
                        format!("node-{} holds gone node-{} {:?}", o + 1, k + 1, m.state)
                    });
                    continue;
                }
                up += 1;
                if let Some(v) = own[k]
                    && v != m.meta_version
                {
                    view.metadata_equal = false;
                    view.note.get_or_insert_with(|| {
                        format!(
                            "node-{} holds node-{}'s metadata at {}, its owner at {v}",
                            o + 1,
                            k + 1,
                            m.meta_version
                        )
                    });
                }
            }
            if up + 1 != live_count {
                view.one_view = false;
                view.note.get_or_insert_with(|| {
                    format!(
                        "node-{} holds {up} of the {} other live nodes up",
                        o + 1,
                        live_count - 1
                    )
                });
            }
        }
        view
    }
}

// ---- the byzantine non-member ------------------------------------------------------------------

impl Engine<'_> {
    /// What the attacker knows when it strikes: the running members with their own
    /// incarnations and metadata versions, and the running voters' terms and applied indices.
    fn mesh_view(&self) -> MeshView {
        let mut view = MeshView::default();
        for (i, slot) in self.slots.iter().enumerate() {
            if slot.state != NodeState::Running {
                continue;
            }
            let Some(node) = slot.node.as_ref() else {
                continue;
            };
            view.running.push(i);
            let meta = node
                .membership()
                .member(id(i))
                .map(|m| m.meta_version)
                .unwrap_or_default();
            view.own.push((i, node.incarnation(), meta));
            if let Some(g) = node.lease_group() {
                view.voters.push((i, g.term().get(), g.applied_index()));
            }
        }
        view
    }

    /// Sends one forged message through the network model as the attacker's (it stands outside
    /// every partition; loss and latency apply).
    fn inject(&mut self, f: Forged) {
        self.counters.byzantine_datagrams += 1;
        let Verdict::Deliver { delay_ns, copy_ns } = self.net.send_from_outside(f.to) else {
            return;
        };
        let from = self.nodes as u32;
        let Forged { to, lease, data } = f;
        let to = to as u32;
        // On the channel it attacks, framed as any node frames it.
        let channel = if lease {
            Channel::Lease
        } else {
            Channel::Membership
        };
        let mut framed = Vec::with_capacity(data.len() + 1);
        channel.frame(&data, &mut framed);
        for (delay, data) in
            core::iter::once((delay_ns, framed.clone())).chain(copy_ns.map(|c| (c, framed)))
        {
            let at = Instant::from_nanos(self.now.as_nanos().saturating_add(delay));
            self.queue.push(at, What::Deliver { from, to, data });
        }
    }

    /// A membership datagram from the attacker. The core may refuse it (counted); what it
    /// accepts must not make the node hold a live member Left or Dead, hold any member at the
    /// incarnation ceiling, or hold members that are not in the mesh; a panic is a violation.
    fn hand_forged_datagram(&mut self, from: usize, to: usize, data: &[u8]) {
        self.trace.word(0xb12);
        self.trace.word(self.now.as_nanos());
        self.trace.word(to as u64);
        self.trace.bytes(data);
        let nodes = self.nodes;
        let attacker = id(from);
        let live: Vec<bool> = self
            .slots
            .iter()
            .map(|s| matches!(s.state, NodeState::Running | NodeState::Paused))
            .collect();
        let slot = &mut self.slots[to];
        let local = slot.clock.local(self.now);
        let Some(node) = slot.node.as_mut() else {
            return;
        };
        let outsiders = |node: &Node| {
            node.membership()
                .members()
                .filter(|m| index_of(m.id, nodes).is_none() && m.id != attacker)
                .count()
        };
        let before: Vec<(NodeId, MemberState)> = node
            .membership()
            .members()
            .map(|m| (m.id, m.state))
            .collect();
        let outsiders_before = outsiders(node);
        let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            node.handle_datagram(local, attacker, data)
        }));
        let mut violations = Vec::new();
        match result {
            Err(panic) => {
                violations.push(format!(
                    "node-{} panicked on a datagram from non-member node-{}: {}",
                    to + 1,
                    from + 1,
                    panic_message(&*panic)
                ));
                slot.node = None;
            }
            Ok(Err(_)) => self.counters.byzantine_refused += 1,
            Ok(Ok(())) => {
                // Admission (docs/security.md, "Membership claims"): a relay may introduce at
                // most MAX_UNVERIFIED_PER_INTRODUCER members a node has not heard from itself;
                // the attacker is the only one that makes members up.
                let held = outsiders(node);
                let bound = meshkit::membership::MAX_UNVERIFIED_PER_INTRODUCER as usize;
                if held > bound && held > outsiders_before {
                    violations.push(format!(
                        "a datagram from non-member node-{} made node-{} hold {held} members \
                         that are not in the mesh (one sender may introduce {bound})",
                        from + 1,
                        to + 1
                    ));
                }
                for m in node.membership().members() {
                    let Some(k) = index_of(m.id, nodes) else {
                        continue;
                    };
                    let was = before.iter().find(|(i, _)| *i == m.id).map(|(_, s)| *s);
                    if k != to
                        && live[k]
                        && matches!(m.state, MemberState::Left | MemberState::Dead)
                        && was != Some(m.state)
                    {
                        violations.push(format!(
                            "a datagram from non-member node-{} made node-{} hold live node-{} \
                             {:?}",
                            from + 1,
                            to + 1,
                            k + 1,
                            m.state
                        ));
                    }
                    if m.incarnation.get() == u32::MAX {
                        violations.push(format!(
                            "a datagram from non-member node-{} pushed node-{}'s view of node-{} \
                             to the incarnation ceiling (no refutation can win)",
                            from + 1,
                            to + 1,
                            k + 1
                        ));
                    }
                }
            }
        }
        for v in violations {
            self.invariants.violation(self.now, v);
        }
    }

    /// A lease datagram from the attacker. Raft accepts only voters: whatever the voter does
    /// with it, its term and the leader it knows must stay as they were, and it must not panic.
    fn hand_forged_lease_datagram(&mut self, from: usize, to: usize, data: &[u8]) {
        self.trace.word(0xb13);
        self.trace.word(self.now.as_nanos());
        self.trace.word(to as u64);
        self.trace.bytes(data);
        let slot = &mut self.slots[to];
        let local = slot.clock.local(self.now);
        let Some(node) = slot.node.as_mut() else {
            self.counters.byzantine_refused += 1;
            return;
        };
        let attacker = id(from);
        let raft = |node: &Node| node.lease_group().map(|g| (g.term(), g.leader()));
        let before = raft(node);
        let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            node.handle_datagram(local, attacker, data).is_ok()
        }));
        let mut violations = Vec::new();
        match result {
            Err(panic) => {
                violations.push(format!(
                    "node-{}'s lease state machine panicked on a datagram from non-member \
                     node-{}: {}",
                    to + 1,
                    from + 1,
                    panic_message(&*panic)
                ));
                // As the driver task dies: the node stops.
                slot.node = None;
            }
            Ok(accepted) => {
                if !accepted {
                    self.counters.byzantine_refused += 1;
                }
                let after = raft(node);
                if let (Some((t0, l0)), Some((t1, l1))) = (before, after)
                    && (t0, l0) != (t1, l1)
                {
                    violations.push(format!(
                        "a Raft message from non-member node-{} moved node-{} from {t0} with \
                         leader {} to {t1} with leader {}",
                        from + 1,
                        to + 1,
                        l0.map_or("none".to_owned(), |l| l.to_string()),
                        l1.map_or("none".to_owned(), |l| l.to_string()),
                    ));
                }
            }
        }
        for v in violations {
            self.invariants.violation(self.now, v);
        }
    }

    /// At the end of a run with a `byzantine` fault: no live node holds a member that is not in
    /// the mesh, nor a live member above the member's own incarnation or metadata version
    /// (whatever the attacker pushed was refuted).
    fn check_byzantine_end(&mut self) {
        if !self.byzantine {
            return;
        }
        let attacker = id(self.nodes);
        let own: Vec<Option<(u32, MetaVersion)>> = self
            .slots
            .iter()
            .enumerate()
            .map(|(i, s)| {
                let node = s
                    .node
                    .as_ref()
                    .filter(|_| matches!(s.state, NodeState::Running | NodeState::Paused))?
                    .membership();
                let meta = node
                    .member(id(i))
                    .map(|m| m.meta_version)
                    .unwrap_or_default();
                Some((node.incarnation().get(), meta))
            })
            .collect();
        let mut violations = Vec::new();
        for (o, slot) in self.slots.iter().enumerate() {
            let Some(node) = slot
                .node
                .as_ref()
                .filter(|_| own[o].is_some())
                .map(Node::membership)
            else {
                continue;
            };
            let outsiders = node
                .members()
                .filter(|m| index_of(m.id, self.nodes).is_none() && m.id != attacker)
                .count();
            if outsiders > 0 {
                violations.push(format!(
                    "after the run node-{} holds {outsiders} members that are not in the mesh",
                    o + 1
                ));
            }
            for m in node.members() {
                let Some(k) = index_of(m.id, self.nodes) else {
                    continue;
                };
                if let Some((inc, meta)) = own[k]
                    && k != o
                    && (m.incarnation.get() > inc || m.meta_version > meta)
                {
                    violations.push(format!(
                        "after the run node-{} holds node-{} at incarnation {} and metadata {}, \
                         above its own {inc} and {meta}",
                        o + 1,
                        k + 1,
                        m.incarnation,
                        m.meta_version
                    ));
                }
            }
        }
        violations.truncate(5);
        for v in violations {
            self.invariants.violation(self.now, v);
        }
    }
}

/// The message of a caught panic.
fn panic_message(panic: &(dyn core::any::Any + Send)) -> String {
    panic
        .downcast_ref::<&str>()
        .map(|s| (*s).to_owned())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "a panic without a message".to_owned())
}

// ---- leases ----------------------------------------------------------------------------------

impl Engine<'_> {
    /// Gives every node its lease state machines for `[leases]`: voters bootstrap the group,
    /// contenders get a client and a campaign for the `[leases]` scopes. Each node derives
    /// their seeds from its own.
    fn start_leases(&mut self, spec: &LeaseSpec) {
        let config = LeaseConfig::default();
        let voters: Vec<NodeId> = (0..spec.voters as usize).map(id).collect();
        let contenders: Vec<usize> = spec
            .contender_indices(self.nodes as u32)
            .into_iter()
            .map(|i| i as usize)
            .collect();
        let mut nodes: Vec<LeaseNode> = (0..self.nodes).map(|_| LeaseNode::default()).collect();
        for (i, ln) in nodes.iter_mut().enumerate() {
            ln.voter = i < voters.len();
            ln.contender = contenders.contains(&i);
        }
        let shards = self.scenario.shards().map(|sh| {
            // Contenders named by a `join` fault stay out of the shard pool until it fires.
            let mut out = BTreeSet::new();
            for f in self.scenario.faults() {
                if let FaultAction::Join { nodes: sel } = &f.action {
                    out.extend(contenders.iter().copied().filter(|&c| in_index(sel, c)));
                }
            }
            ShardRun::new(sh, out)
        });
        let mut scopes = spec.scopes.clone();
        let mut ttl = spec.ttl;
        if let Some(sh) = &shards {
            scopes.extend(
                sh.scope_names()
                    .map(|n| meshkit::lease::Scope::new(&n).expect("a valid shard scope")),
            );
            ttl = ttl.max(sh.spec.ttl);
        }
        self.leases = Some(LeaseRun {
            ledger: Ledger::new(&scopes, ttl, spec.max_clock_skew),
            shards,
            spec: spec.clone(),
            config,
            voters,
            contenders: contenders.clone(),
            nodes,
            raft_failover: None,
            pending_leaves: Vec::new(),
        });
        for i in 0..self.nodes {
            let local = self.slots[i].clock.local(self.now);
            if let Some(node) = self.slots[i].node.take() {
                let node = self.with_lease_parts(i, node, VoterStart::Bootstrap, local);
                self.slots[i].node = Some(node);
            }
        }
        for c in contenders {
            self.announce_shards_at_start(c);
        }
    }

    /// A contender the shard pool takes from its start (or restart) announces it.
    fn announce_shards_at_start(&mut self, c: usize) {
        let in_pool = self
            .leases
            .as_ref()
            .and_then(|r| r.shards.as_ref())
            .is_some_and(|sh| !sh.out_of_pool.contains(&c) && !sh.is_draining(c));
        if in_pool {
            self.announce_shards(c, false);
        }
    }

    /// Node `i` announces that it takes shards (`Node::join_shards`) or drains
    /// (`Node::drain_shards`).
    fn announce_shards(&mut self, i: usize, drain: bool) {
        let slot = &mut self.slots[i];
        let local = slot.clock.local(self.now);
        let Some(node) = slot.node.as_mut() else {
            return;
        };
        let result = if drain {
            node.drain_shards(local)
        } else {
            node.join_shards(local)
        };
        if result.is_ok() {
            self.drain(i);
        }
    }

    /// Node `i`'s lease state machines on `node`, as its roles say (a voter's as `voter`
    /// says).
    fn with_lease_parts(&self, i: usize, node: Node, voter: VoterStart, local: Instant) -> Node {
        let Some(run) = self.leases.as_ref() else {
            return node;
        };
        let ln = &run.nodes[i];
        let mut node = node;
        if ln.voter {
            node = match voter {
                VoterStart::Restart(durable) => {
                    node.with_restarted_voter(local, run.config.clone(), *durable)
                }
                VoterStart::Bootstrap => node
                    .with_voter(local, run.config.clone(), &run.voters)
                    .expect("the scenario bounds the voters to 1..=MAX_VOTERS distinct ids"),
                VoterStart::Not => node,
            };
        }
        if ln.contender {
            let mut campaign = Campaign::new(run.spec.ttl, CAMPAIGN_RETRY);
            for scope in &run.spec.scopes {
                campaign.enter(local, scope.clone());
            }
            node = node.with_lease_client(local, run.config.clone(), &run.voters, campaign);
        }
        if let Some(sh) = &run.shards {
            node = node.with_shards(local, sh.config().clone());
            if let Some(q) = &self.tasks {
                // A restarted node reads its replicas back from its disk (a corrupt log is a
                // bug of the checkpoint format: it starts empty, and the loss check says so).
                let replicas = q.restore(i).unwrap_or_default();
                node = node.with_queues(local, sh.config(), q.spec.config.clone(), replicas);
                node.record_queue_durable_writes();
            }
        }
        node
    }

    /// Every [`WRITE_INTERVAL`]: each running contender writes with the tokens it holds,
    /// renews what is due, and asks for what it does not hold (with `[shards]`, only for the
    /// shards the coordinator gave it); then the shard coordinator takes a step.
    fn lease_tick(&mut self) {
        let now = self.now;
        self.queue.push(now + WRITE_INTERVAL, What::LeaseTick);
        let Some(run) = self.leases.as_ref() else {
            return;
        };
        let contenders = run.contenders.clone();
        for c in contenders {
            if self.slots[c].state != NodeState::Running {
                continue;
            }
            let slot = &mut self.slots[c];
            let local = slot.clock.local(now);
            let Some(run) = self.leases.as_mut() else {
                return;
            };
            let base = run.spec.scopes.len();
            let Some(client) = slot.node.as_mut().filter(|n| n.lease_client().is_some()) else {
                continue;
            };
            let mut violations = Vec::new();
            // The `[leases]` scopes: write with what it holds (its campaign asks and renews).
            for (s, scope) in run.spec.scopes.iter().enumerate() {
                if let Some(token) = client.holds(local, scope) {
                    violations.extend(run.ledger.write(now, c, s, token));
                }
            }
            if run.shards.is_some() {
                // The shards it holds (its shard member acquires and renews them): write.
                let held: Vec<(usize, FencingToken)> = client
                    .held()
                    .filter_map(|(scope, _)| {
                        let s = run.ledger.scope_index(scope).filter(|&s| s >= base)?;
                        Some((s, client.holds(local, scope)?))
                    })
                    .collect();
                for (s, token) in held {
                    violations.extend(run.ledger.write(now, c, s, token));
                }
            }
            for v in violations {
                self.invariants.violation(now, v);
            }
            self.drain(c);
        }
        self.shard_step();
    }

    /// The shard figures look at the acting coordinator (the one in the highest term, on the
    /// Raft leader).
    fn shard_step(&mut self) {
        let leaving = self
            .leases
            .as_mut()
            .map(|r| core::mem::take(&mut r.pending_leaves))
            .unwrap_or_default();
        for i in leaving {
            if self.slots[i].state == NodeState::Running {
                self.leave_node(i);
            }
        }
        let Some(run) = self.leases.as_mut() else {
            return;
        };
        let Some(sh) = run.shards.as_mut() else {
            return;
        };
        let acting = self
            .slots
            .iter()
            .filter(|s| matches!(s.state, NodeState::Running | NodeState::Paused))
            .filter_map(|s| s.node.as_ref()?.shard_coordinator())
            .filter(|c| c.term().is_some())
            .max_by_key(|c| c.term());
        if let Some(coordinator) = acting {
            sh.observe(coordinator);
        }
    }

    /// One shard event of node `index`: plans feed the figures; a drained member leaves.
    fn on_shard_event(&mut self, index: usize, e: &ShardEvent) {
        let now = self.now;
        self.trace.word(now.as_nanos());
        self.trace.word(index as u64);
        let _ = write!(self.trace, "{e:?}");
        let Some(run) = self.leases.as_mut() else {
            return;
        };
        let Some(sh) = run.shards.as_mut() else {
            return;
        };
        match *e {
            ShardEvent::Planned {
                moves,
                pool_changed,
            } => sh.on_planned(moves, pool_changed),
            ShardEvent::Drained if sh.on_drained(now, index) => {
                run.pending_leaves.push(index);
            }
            _ => {}
        }
    }

    /// At the end of a run with `[shards]`: every shard has exactly one owner, the map's, and
    /// it is a live member of the pool that is not draining.
    fn check_shard_owners(&mut self) {
        let now = self.now;
        let Some(run) = self.leases.as_ref() else {
            return;
        };
        let Some(sh) = run.shards.as_ref() else {
            return;
        };
        let base = run.spec.scopes.len();
        let mut violations = Vec::new();
        for k in 0..sh.spec.count as usize {
            let scope = run.ledger.scope(base + k);
            let holders: Vec<usize> = run
                .contenders
                .iter()
                .copied()
                .filter(|&c| {
                    matches!(self.slots[c].state, NodeState::Running | NodeState::Paused)
                        && self.slots[c].node.as_ref().is_some_and(|n| {
                            n.holds(self.slots[c].clock.local(now), scope).is_some()
                        })
                })
                .collect();
            let owner = sh.owner(k).and_then(|o| index_of(o, self.nodes));
            let ok = match (holders.as_slice(), owner) {
                ([h], Some(o)) => *h == o && !sh.is_draining(o) && !sh.out_of_pool.contains(&o),
                _ => false,
            };
            if !ok && violations.len() < 5 {
                violations.push(format!(
                    "after the run {scope} has holders {:?} and map owner {:?}: every shard must \
                     end with exactly one owner (let the run settle: at least two shard TTLs \
                     after the last fault)",
                    holders.iter().map(|h| h + 1).collect::<Vec<_>>(),
                    owner.map(|o| o + 1)
                ));
            }
        }
        for v in violations {
            self.invariants.violation(now, v);
        }
    }

    /// Node `i` crashed; `node` is what it ran. A voter keeps its durable state for its restart.
    fn crash_lease(&mut self, i: usize, node: Option<Node>) {
        let clock = self.slots[i].clock;
        let Some(run) = self.leases.as_mut() else {
            return;
        };
        run.ledger.on_crash(self.now, i, clock);
        let ln = &mut run.nodes[i];
        if let Some(g) = node.as_ref().and_then(Node::lease_group) {
            if g.is_leader() && run.raft_failover.is_none() {
                run.raft_failover = Some((self.now, g.term()));
            }
            ln.crashed_raft = Some((g.term(), g.log_len()));
        }
        if let Some(durable) = node.and_then(Node::into_durable) {
            ln.durable = Some(durable);
        }
        if let Some(sh) = run.shards.as_mut() {
            sh.on_gone(i);
        }
        ln.reset_asks();
    }

    /// A restarting node's lease state machines: a voter comes back with its durable state, a
    /// contender with a new client under its new boot incarnation.
    fn restart_lease(&mut self, i: usize, node: Node, local: Instant) -> Node {
        let Some(run) = self.leases.as_mut() else {
            return node;
        };
        let ln = &mut run.nodes[i];
        let voter = match ln.durable.take() {
            Some(durable) => VoterStart::Restart(Box::new(durable)),
            // A voter that lost its state (it panicked) does not come back as one.
            None => VoterStart::Not,
        };
        let node = self.with_lease_parts(i, node, voter, local);
        let Some(run) = self.leases.as_mut() else {
            return node;
        };
        let ln = &mut run.nodes[i];
        if let Some(group) = node.lease_group() {
            // Raft's safety rests on a voter keeping its term, vote and log across a crash: the
            // restarted voter must resume exactly where it stopped, before it hears anyone.
            let resumed = (group.term(), group.log_len());
            if ln
                .crashed_raft
                .take()
                .is_some_and(|at_crash| at_crash != resumed)
            {
                self.invariants.violation(
                    self.now,
                    format!(
                        "voter {i} restarted at {} with {} log entries, not the state it \
                         crashed with",
                        resumed.0, resumed.1
                    ),
                );
            }
            run.ledger.records.voter_restarts += 1;
        }
        node
    }

    /// A contender paused while it holds a scope has checked its lease and is about to write:
    /// that write goes out when it resumes.
    fn pause_lease(&mut self, i: usize) {
        let local = self.slots[i].clock.local(self.now);
        let Some(run) = self.leases.as_mut() else {
            return;
        };
        run.ledger.on_pause(self.now, i, self.slots[i].clock);
        let ln = &mut run.nodes[i];
        let Some(node) = self.slots[i].node.as_ref() else {
            return;
        };
        for (s, scope) in run.spec.scopes.iter().enumerate() {
            if let Some(token) = node.holds(local, scope) {
                ln.paused_writes.push((s, token));
            }
        }
    }

    fn resume_lease_writes(&mut self, i: usize) {
        let now = self.now;
        let Some(run) = self.leases.as_mut() else {
            return;
        };
        let writes = std::mem::take(&mut run.nodes[i].paused_writes);
        for (s, token) in writes {
            if let Some(v) = run.ledger.write(now, i, s, token) {
                self.invariants.violation(now, v);
            }
        }
    }

    /// The holder of `scope` (the first `[leases]` scope by default) hands it to another
    /// running contender, drawn from the fault stream.
    fn transfer(&mut self, scope: Option<&meshkit::lease::Scope>) {
        let now = self.now;
        let Some(run) = self.leases.as_ref() else {
            return;
        };
        let Some(scope) = scope.or(run.spec.scopes.first()) else {
            return;
        };
        let Some(s) = run.ledger.scope_index(scope) else {
            return;
        };
        let holder = run.contenders.iter().copied().find(|&c| {
            let local = self.slots[c].clock.local(now);
            self.slots[c].state == NodeState::Running
                && self.slots[c]
                    .node
                    .as_ref()
                    .is_some_and(|n| n.holds(local, scope).is_some())
        });
        if let Some(from) = holder {
            self.transfer_from(from, s);
        }
    }

    /// A drain: node `i` (about to leave) hands every scope it holds to other contenders.
    fn drain_node_leases(&mut self, i: usize) {
        let Some(run) = self.leases.as_ref() else {
            return;
        };
        let local = self.slots[i].clock.local(self.now);
        let held: Vec<usize> = match self.slots[i].node.as_ref() {
            Some(n) => (0..run.spec.scopes.len())
                .filter(|&s| n.holds(local, &run.spec.scopes[s]).is_some())
                .collect(),
            None => Vec::new(),
        };
        for s in held {
            self.transfer_from(i, s);
        }
    }

    /// `from` hands scope index `s` to another running contender, drawn from the fault stream.
    fn transfer_from(&mut self, from: usize, s: usize) {
        let Some(run) = self.leases.as_mut() else {
            return;
        };
        let others: Vec<usize> = run
            .contenders
            .iter()
            .copied()
            .filter(|&c| c != from && self.slots[c].state == NodeState::Running)
            .collect();
        if others.is_empty() {
            return;
        }
        let to = others[self.fault_rng.random_range(0..others.len())];
        self.transfer_scope(from, s, to);
    }

    /// `from` hands ledger scope `s` to `to` if it holds it; returns whether the transfer left.
    fn transfer_scope(&mut self, from: usize, s: usize, to: usize) -> bool {
        let now = self.now;
        if !matches!(self.slots[from].state, NodeState::Running) {
            return false;
        }
        let local = self.slots[from].clock.local(now);
        let Some(run) = self.leases.as_mut() else {
            return false;
        };
        let scope = run.ledger.scope(s).clone();
        let Some(node) = self.slots[from].node.as_mut() else {
            return false;
        };
        if node.holds(local, &scope).is_none() {
            return false;
        }
        let sent = node.transfer(local, scope, id(to)).is_ok();
        if sent {
            run.ledger.on_transfer(now, from, to, s);
        }
        self.drain(from);
        sent
    }

    /// Whether node `i` is in the lease role `sel` names (`holder`, `raft-leader`) right now.
    fn in_role(&self, sel: &NodeSelector, i: usize) -> bool {
        let Some(run) = self.leases.as_ref() else {
            return false;
        };
        let Some(node) = self.slots[i].node.as_ref() else {
            return false;
        };
        match sel {
            NodeSelector::Holder => {
                let local = self.slots[i].clock.local(self.now);
                run.spec
                    .scopes
                    .first()
                    .is_some_and(|s| node.holds(local, s).is_some())
            }
            NodeSelector::RaftLeader => node.lease_group().is_some_and(LeaseGroup::is_leader),
            _ => false,
        }
    }

    /// A lease-role selector as the index of the (first) node in that role; a role nobody has
    /// names no node.
    fn resolve_role(&self, sel: &NodeSelector) -> NodeSelector {
        if !sel.is_lease_role() {
            return *sel;
        }
        let alive = |i: &usize| {
            matches!(
                self.slots[*i].state,
                NodeState::Running | NodeState::Paused | NodeState::Leaving
            )
        };
        let found = (0..self.nodes)
            .filter(alive)
            .find(|&i| self.in_role(sel, i));
        NodeSelector::Index(found.map_or(self.nodes as u32, |i| i as u32))
    }
}

/// Moves one armed wakeup to `deadline` (node-local time), bumping the generation so the old
/// wakeup is skipped; returns the wakeup to queue, or `None` when nothing changed or the node
/// wants no wakeup.
fn arm(
    armed: &mut Instant,
    generation: &mut u32,
    deadline: Option<Instant>,
    clock: SkewedClock,
    now: Instant,
) -> Option<(Instant, u32)> {
    let at = deadline.map_or(Instant::MAX, |d| clock.to_global(d).max(now));
    if at == *armed {
        return None;
    }
    *generation = generation.wrapping_add(1);
    *armed = at;
    (at != Instant::MAX).then_some((at, *generation))
}

/// How a voter's node gets its voter.
enum VoterStart {
    /// A founder, at the start of the run.
    Bootstrap,
    /// Restarted from what it persisted before its crash.
    Restart(Box<meshkit::lease::DurableState>),
    /// Not at all (it lost its state).
    Not,
}

/// The end state, asked of the member tables.
#[derive(Debug)]
struct FinalView {
    /// Every live node holds exactly the live nodes up.
    one_view: bool,
    /// Every live node holds every live node's metadata at its owner's version.
    metadata_equal: bool,
    /// The first difference found.
    note: Option<String>,
}

/// Arms one wakeup at the node's `poll_timeout`, unless the same one is armed already.
fn rearm(slot: &mut Slot, queue: &mut Queue, now: Instant, index: usize) {
    let Some(node) = slot.node.as_ref() else {
        return;
    };
    let deadline = node.poll_timeout();
    if let Some((at, generation)) = arm(
        &mut slot.armed,
        &mut slot.generation,
        deadline,
        slot.clock,
        now,
    ) {
        let node = index as u32;
        queue.push(at, What::Timer { node, generation });
    }
}

/// Folds one event into the trace: time, observer, then the event's fields.
fn hash_event(trace: &mut TraceHash, now: Instant, observer: usize, event: &Event) {
    trace.word(now.as_nanos());
    trace.word(observer as u64);
    let state = |s: MemberState| match s {
        MemberState::Alive => 1,
        MemberState::Suspect => 2,
        MemberState::Dead => 3,
        MemberState::Left => 4,
    };
    match event {
        Event::MemberStateChanged {
            node,
            incarnation,
            from,
            to,
            by,
        } => {
            trace.word(1);
            trace.word(node.get());
            trace.word(u64::from(incarnation.get()));
            trace.word(from.map_or(0, state));
            trace.word(state(*to));
            trace.word(by.map_or(0, NodeId::get));
        }
        Event::MetadataChanged { node, version } => {
            trace.word(2);
            trace.word(node.get());
            trace.word(u64::from(version.epoch) << 32 | u64::from(version.seq));
        }
        Event::Refuted { incarnation } => {
            trace.word(3);
            trace.word(u64::from(incarnation.get()));
        }
        other => {
            let _ = write!(trace, "{other:?}");
        }
    }
}

/// Whether an event is about node index `w`.
fn concerns(event: &Event, w: usize) -> bool {
    match event {
        Event::MemberStateChanged { node, .. } | Event::MetadataChanged { node, .. } => {
            node.get() == w as u64 + 1
        }
        _ => false,
    }
}

/// Random bytes from a stream.
fn random_bytes(rng: &mut ChaCha8Rng, len: usize) -> Vec<u8> {
    let mut v = vec![0u8; len];
    rng.fill(&mut v[..]);
    v
}

/// Whether an index selector names node index `i`.
fn in_index(sel: &NodeSelector, i: usize) -> bool {
    match *sel {
        NodeSelector::Range { start, end } => (start as usize..end as usize).contains(&i),
        NodeSelector::Index(k) => k as usize == i,
        _ => false,
    }
}

/// Drawn node indices as a plan's selector.
fn indices(victims: &[usize]) -> Selector {
    Selector::Indices(victims.iter().map(|&i| i as u32).collect())
}

/// The core's id of node index `i`.
fn id(i: usize) -> NodeId {
    NodeId::new(i as u64 + 1)
}

/// The node index of a core id, if it is one of ours.
fn index_of(id: NodeId, nodes: usize) -> Option<usize> {
    (id.get() as usize).checked_sub(1).filter(|&i| i < nodes)
}

#[cfg(test)]
mod tests {
    use super::*;
    use meshkit::config::Profile;

    /// Every network feature and every fault action, at a size that runs in a blink.
    const EVERYTHING: &str = r#"
        name = "everything"
        [topology]
        nodes = 24
        regions = 2
        [network]
        latency = "1ms"
        jitter = "300us"
        inter_region_latency = "20ms"
        loss = 0.02
        duplicate = 0.02
        reorder = 0.05
        [network.burst]
        enter = 0.01
        leave = 0.2
        loss = 0.5
        [run]
        duration = "90s"
        [workload]
        metadata_updates_per_s = 0.5
        [[fault]]
        at = "5s"
        action = "crash"
        nodes = "2"
        restart_after = "20s"
        [[fault]]
        at = "10s"
        action = "partition"
        split = 0.3
        heal_after = "15s"
        [[fault]]
        at = "12s"
        action = "pause"
        nodes = "1"
        for = "8s"
        [[fault]]
        at = "15s"
        action = "skew"
        nodes = "3"
        rate = 1.5
        for = "30s"
        [[fault]]
        at = "20s"
        action = "loss"
        rate = 0.1
        for = "10s"
        [[fault]]
        at = "30s"
        action = "metadata"
        nodes = "2"
        key = "k"
        value_bytes = 200
        [[fault]]
        at = "35s"
        action = "metadata"
        nodes = "0..24"
        key = "k"
        delete = true
        [[fault]]
        at = "40s"
        action = "leave"
        nodes = "1"
        [[fault]]
        at = "45s"
        action = "crash"
        nodes = "1"
        [[fault]]
        at = "50s"
        action = "restart"
        nodes = "1"
        [[fault]]
        at = "55s"
        action = "partition"
        groups = ["0..4"]
        one_way = true
        [[fault]]
        at = "60s"
        action = "heal"
    "#;

    fn run(text: &str, seed: u64) -> Outcome {
        let scenario = Scenario::parse(text, "test.toml").unwrap();
        let config = Config::from_profile(Profile::Lan);
        let engine = Engine::new(
            &scenario,
            config,
            scenario.nodes() as usize,
            scenario.duration(),
            seed,
        );
        engine.run(&mut |_, _| {})
    }

    #[test]
    fn same_seed_same_trace_different_seed_different_trace() {
        let a = run(EVERYTHING, 42);
        let b = run(EVERYTHING, 42);
        let c = run(EVERYTHING, 43);
        assert!(a.violations.is_empty(), "{:?}", a.violations);
        assert!(c.violations.is_empty(), "{:?}", c.violations);
        assert_eq!(
            a.trace_hash, b.trace_hash,
            "a run must be a pure function of its seed"
        );
        assert_eq!(a.counters, b.counters);
        assert_eq!(a.observations, b.observations);
        assert_ne!(a.trace_hash, c.trace_hash, "the seed must matter");
        // The run exercised what it claims to.
        assert!(a.counters.dropped_partition > 0 && a.counters.dropped_loss > 0);
        assert!(a.counters.duplicated > 0 && a.counters.dropped_burst > 0);
        assert_eq!(a.observations.crashes, 3);
        assert_eq!(a.observations.partitions, 2);
        assert!(a.observations.updates > 0);
    }

    #[test]
    fn a_paused_node_queues_at_most_its_bound() {
        let scenario = Scenario::parse(EVERYTHING, "test.toml").unwrap();
        let config = Config::from_profile(Profile::Lan);
        let mut engine = Engine::new(&scenario, config, 24, scenario.duration(), 1);
        engine.slots[0].state = NodeState::Paused;
        for _ in 0..PAUSE_INBOX_MAX_DATAGRAMS + 10 {
            engine.deliver(1, 0, vec![0u8; 16]);
        }
        assert_eq!(engine.slots[0].inbox.len(), PAUSE_INBOX_MAX_DATAGRAMS);
        assert_eq!(engine.counters.dropped_inbox_full, 10);
    }

    #[test]
    fn leave_and_restart_end_in_one_view() {
        let text = r#"
            name = "t"
            [topology]
            nodes = 16
            [run]
            duration = "60s"
            [[fault]]
            at = "5s"
            action = "leave"
            nodes = "node:3"
            [[fault]]
            at = "5s"
            action = "crash"
            nodes = "node:7"
            restart_after = "10s"
        "#;
        let out = run(text, 5);
        assert!(out.violations.is_empty(), "{:?}", out.violations);
        assert!(out.converged, "{:?}", out.convergence_note);
        assert_eq!(out.observations.crashes, 1);
        assert_eq!(
            out.observations.restarted_before_detection + out.observations.detection_s.len() as u64,
            1
        );
        assert_eq!(out.observations.false_positives, 0);
    }

    #[test]
    fn rearm_skips_an_unchanged_deadline() {
        let scenario = Scenario::parse(EVERYTHING, "test.toml").unwrap();
        let config = Config::from_profile(Profile::Lan);
        let mut engine = Engine::new(&scenario, config, 24, scenario.duration(), 1);
        let before = engine.queue.heap.len();
        let generation = engine.slots[0].generation;
        engine.drain(0);
        assert_eq!(
            engine.queue.heap.len(),
            before,
            "no second wakeup for the same deadline"
        );
        assert_eq!(engine.slots[0].generation, generation);
    }
}
