//! Scenario files: the TOML format that describes one simulated run.
//!
//! A scenario names a topology, a network, a run length, a background workload, a timeline of
//! faults and the expectations the run must meet. The same file is meant to drive the simulator
//! and the compose chaos environment. Parsing is strict: unknown keys, malformed durations, bad
//! node selectors and out-of-range numbers are refused with `FILE:LINE:COL: message` and a hint
//! (see [`ScenarioError`]).
//!
//! # Format
//!
//! ```toml
//! name = "crash-one"                     # required
//! description = "One node crashes."      # optional
//!
//! [topology]                             # required
//! nodes = 1000                           # 2..=200000; `--nodes` overrides it
//! profile = "lan"                        # lan | wan | memberlist (default lan); `--profile` overrides
//! regions = 1                            # nodes are spread round-robin over regions (default 1)
//! spares = 0                             # slots after the nodes, down until a membership-surge
//!                                        # plan boots them (default 0; nodes + spares <= 200000)
//!
//! [network]                              # optional; defaults shown
//! latency = "500us"                      # one-way base latency inside a region
//! jitter = "100us"                       # mean of the exponential extra delay
//! inter_region_latency = "40ms"          # one-way base latency between two regions
//! loss = 0.0                             # independent per-datagram loss probability
//! duplicate = 0.0                        # probability a datagram is delivered twice
//! reorder = 0.0                          # probability of an extra uniform delay of up to 10x jitter
//!
//! [network.burst]                        # optional Gilbert-Elliott loss, one chain per sender
//! enter = 0.001                          # P(good -> bad), drawn per datagram sent
//! leave = 0.1                            # P(bad -> good)
//! loss = 0.5                             # loss probability while bad
//!
//! [run]                                  # required
//! duration = "120s"                      # virtual time; `--duration` overrides it
//!
//! [workload]                             # optional
//! metadata_updates_per_s = 0.2           # Poisson rate of metadata writes by random live nodes
//! metadata_value_bytes = 64              # size of each written value (default 64)
//!                                        # writes stop 2 anti-entropy intervals (at most a
//!                                        # quarter of the run) before the end, so that
//!                                        # `converged` can hold; keys are w0..w3
//!
//! [leases]                              # optional; absent = no lease traffic at all
//! voters = 3                             # node indices 0..voters run a LeaseGroup (default 3)
//! scopes = ["global-control"]            # every contender tries to hold each (default shown;
//!                                        # may be empty, e.g. when only [shards] matter)
//! ttl = "3s"                             # the TTL contenders ask for (default 3s)
//! contenders = "3"                       # "N": the N nodes after the voters; "0..3": indices
//! max_clock_skew = 0.0                   # clock-rate deviation the one-holder check tolerates
//!
//! [shards]                               # optional, needs [leases]; absent = no shard map
//! namespace = "orders"                   # the shards are leases on shard/{namespace}/{0..count}
//! count = 64                             # 1..=65536
//! ttl = "3s"                             # the shard leases' TTL (default: [leases] ttl)
//! max_moves_in_flight = 256              # lease transfers under way at once (1..=4096)
//!
//! [[fault]]                              # any number, in any order
//! at = "30s"                             # when the (first) occurrence fires
//! action = "crash"                       # see the table below
//! nodes = "1"                            # a node selector, see below
//! count = 1                              # optional: how many occurrences (default 1) ...
//! every = "10s"                          # ... this far apart (required when count > 1)
//! jitter = "1s"                          # optional: each occurrence fires up to this much
//!                                        # later, uniformly (shorter than `every`)
//!
//! [expect]                               # optional; every key optional
//! detection_p99_s_max = 10.0
//! detection_p50_s_max = 6.0
//! false_positives_max = 0
//! paused_dead_max = 0                    # pauses during which the paused node was declared Dead
//! minority_view_s_max = 15.0             # a partition's smallest side holds the rest Dead
//! suspicions_per_node_hour_max = 1.0
//! dissemination_p99_rounds_max = 16.0
//! heal_s_max = 60.0
//! bytes_per_node_s_max = 600.0
//! converged = true
//! failover_p99_s_max = 3.3               # the lease keys need [leases]
//! failover_p50_s_max = 3.0
//! handoff_p99_ms_max = 200.0
//! raft_failover_p99_s_max = 1.2          # Raft leader crash to a new Raft leader
//! raft_failover_p50_s_max = 1.0
//! lease_grant_p50_ms_max = 5.0
//! stale_writes_accepted_max = 0
//! stale_writes_refused_min = 1           # a lower bound: the run must exercise the fence
//! shard_moves_ratio_max = 1.2            # the shard keys need [shards]
//! shard_imbalance_max_max = 0.2
//! shard_drains_min = 1                   # a lower bound: drains that finished
//! byzantine_datagrams_min = 1            # a lower bound: forged datagrams sent
//! joins_seen_min = 3                     # a lower bound: surge joins held Alive by the mesh
//! leaves_seen_min = 3                    # a lower bound: graceful leaves held `left`, not dead
//! ```
//!
//! Durations are strings: a decimal number and a unit among `ns`, `us`, `ms`, `s`, `m`, `h`
//! (`"500us"`, `"1.5s"`, `"10m"`). Probabilities are numbers in `0.0..=1.0`.
//!
//! ## Node selectors
//!
//! | selector   | meaning                                                                   |
//! |------------|---------------------------------------------------------------------------|
//! | `"3"`      | that many distinct random nodes among the candidates (live nodes, usually) |
//! | `"10%"`    | that share of the candidates, rounded to nearest, at least one             |
//! | `"0..10"`  | node indices 0 to 9 (indices count from 0; node index `i` is `NodeId(i+1)`) |
//! | `"node:4"` | node index 4                                                              |
//! | `"holder"` | with `[leases]`: the contender holding the first scope when the fault fires |
//! | `"raft-leader"` | with `[leases]`: the voter that leads the lease group then             |
//!
//! Random selectors are drawn when the fault fires, from the fault stream of the run's seed, so
//! the same seed picks the same nodes whatever the profile. Index selectors beyond the node count
//! (for instance after `--nodes` scaled a scenario down) are refused before the run starts.
//!
//! ## Fault actions
//!
//! | action     | keys                                               | what happens                    |
//! |------------|----------------------------------------------------|---------------------------------|
//! | `crash`    | `nodes`, `restart_after`?                          | the process stops; with `restart_after`, it restarts that much later |
//! | `restart`  | `nodes` (chosen among crashed nodes)               | a fresh process with a higher boot incarnation joins through up to 3 random live seeds; all state is lost |
//! | `partition`| `split` or `groups`, `one_way`?, `heal_after`?     | datagrams between groups are dropped |
//! | `heal`     | (none)                                             | every partition ends             |
//! | `loss`     | `rate`, `for`?                                     | independent loss becomes `rate` (for `for`, then back to `[network] loss`) |
//! | `pause`    | `nodes`, `for`                                     | gray failure: timers and inbound datagrams wait (at most 1,024 queued, the rest dropped) until the node resumes with a jump of local time |
//! | `skew`     | `nodes`, `rate`, `for`?                            | the nodes' clocks run at `rate` times real speed |
//! | `leave`    | `nodes`                                            | graceful leave; the process stops 5 gossip rounds later |
//! | `metadata` | `nodes`, `key`, `value_bytes` or `delete = true`, `rate`? | the nodes set `key` to that many random bytes, or delete it |
//! | `transfer` | `scope`? (default: the first `[leases]` scope)     | the holder hands the lease to another running contender, drawn at random |
//! | `join`     | `nodes` (index selectors)                          | with `[shards]`: the contenders join the shard pool (they run from the start, held out of the pool until then) |
//! | `drain`    | `nodes`                                            | with `[shards]`: the contenders' shards move off them; once drained, they leave gracefully |
//! | `byzantine`| `attacks`? (default: all)                          | a non-member with a valid certificate (node id `nodes + 1`) sends forged datagrams: one attack per occurrence, drawn with its parameters from the fault stream (see below) |
//! | `plan`     | `plan` (a `meshkit::diag::fault::FaultPlan`)       | the core's fault plan: any kind the simulator applies (kill, pause, partition of every shape, latency, loss, bursty loss, duplicate, reorder, clock skew, membership surge), its selectors resolved when it starts, reverting by itself after its `duration` (docs/diagnostics.md); a `membership-surge` of `joins = K` boots K `[topology] spares` through its selected nodes and has them leave gracefully at its end |
//!
//! Every fault reaches the simulated network and processes as a core fault plan: `crash`,
//! `partition`, `heal`, `loss`, `pause` and `skew` are lowered to plans on the nodes or groups
//! the fault stream drew, as they fire, and revert by themselves (a fault without an end lasts
//! past the end of the run); see docs/diagnostics.md, "Faults in the simulator".
//!
//! With `[leases]`, the voters' Raft log survives a crash (a restarted voter comes back with it);
//! a restarted contender gets a new client. Lease datagrams go through the same network model as
//! membership datagrams. `partition` groups may also be `"holder"` or `"raft-leader"`. What the
//! lease invariants and figures mean is in `crate::lease` (and docs/scenarios.md).
//!
//! With `[shards]`, shard `i` is the lease scope `shard/{namespace}/{i}`: nobody contends for
//! it; the core's coordinator (`meshkit::shard::Coordinator`, in every voter's `Node`, acting
//! on the Raft leader) runs the `Rebalancer` over a `ShardMap` fed by its voter's grants and
//! tells contenders to take shards, by a lease transfer from the current holder (a graceful
//! handoff, with a new fencing token) or by an acquire when the holder is gone. The shard pool
//! is the contenders that announced themselves (all, except those a `join` still holds out),
//! minus drained ones. At the end of the run every shard must have
//! exactly one holder, the map's owner, a member of the pool that is not draining (an invariant:
//! leave the run at least two shard TTLs after the last fault). What the shard figures mean is
//! in `crate::shard`.
//!
//! A `byzantine` occurrence draws one of its `attacks` and that attack's parameters (targets,
//! victims, terms, counts) from the fault stream, builds the datagrams with the core's own
//! encoders and injects them as sent by node id `nodes + 1`, which the network authenticates
//! like any node's but which is no member: `"raft-commit"` (a `MsgHeartbeat` at a voter's term
//! whose commit runs past its log), `"timeout-now"` (1-5 `MsgTimeoutNow`), `"higher-term"` (a
//! `MsgHeartbeat` or `MsgAppend` at a higher term), `"left"` (a live member's `Left` at a high
//! or the ceiling incarnation), `"meta"` (a write to a live member's metadata at a high or the
//! ceiling epoch), `"phantoms"` (100-2,000 members that do not exist, announced alive) and
//! `"garbage"` (random bytes, and valid forged datagrams cut short or with a byte flipped, on
//! either channel). The Raft attacks need `[leases]`. Such datagrams reach a node even across
//! partitions (the attacker is outside them), under the network's loss and latency. What the
//! core refuses is counted (`byzantine_refused`), never a violation; what it accepts must change
//! nothing: a Raft message from the attacker that moves a voter's term or leader, a datagram
//! from it that makes a node hold a live member Left or Dead, hold a member at the incarnation
//! ceiling, or hold more members that are not in the mesh than one sender may introduce
//! (`meshkit::membership::MAX_UNVERIFIED_PER_INTRODUCER`), is a violation, as is a member outside
//! the mesh or above its own incarnation or metadata version still held at the end,
//! and so is a live member held Left anywhere, and a panic of the core on such a datagram.
//!
//! `partition` takes `split = 0.5` (a random share of all nodes forms the first group, the rest
//! the second) or `groups = ["0..500", "500..1000"]` (index selectors; unlisted nodes form one
//! more group). With `one_way = true`, datagrams *from* the first group to the others are lost
//! while the reverse direction still flows. `metadata` may give `rate` (occurrences per second)
//! instead of `every`.
//!
//! Candidates, i.e. the nodes a random selector draws from: running or paused nodes for `crash`
//! and `skew`; running nodes for `pause`, `leave`, `metadata` and `drain`; crashed nodes for
//! `restart`; running or paused nodes for `join`.
//! Index selectors keep only the named nodes that are candidates (pausing a crashed node does
//! nothing). Every occurrence of a repeated fault draws again.
//!
//! ## Start state
//!
//! Every node starts converged: it knows every other node as Alive at incarnation 1 with empty
//! metadata. Each node's local clock starts at a random offset within one probe interval (the
//! core also spreads its own first probe over one interval, so nodes do not probe in lockstep).
//!
//! ## Expectations
//!
//! Each `*_max` key bounds the report figure of the same name (without `_max`); the figures are
//! defined in [`crate::metrics`]. A bound on a figure that measured nothing fails (a detection
//! bound with no crash, a `heal_s_max` with no single view after the heal), and a crash never
//! detected fails any detection bound. `converged = true` asks the member tables at the end:
//! every live node holds exactly the live nodes as Alive or Suspect, each at its owner's metadata
//! version. Bounds are written for the file's own node count: detection and dissemination grow
//! with log N, so a scenario scaled with `--nodes` may need other bounds.

use core::fmt;
use core::ops::Range;
use core::time::Duration;
use std::path::Path;

use meshkit::config::Profile;
use meshkit::lease::{LeaseConfig, Scope};
use serde::Deserialize;
use serde::de::{self, Deserializer, Visitor};
use thiserror::Error;
use toml::Spanned;

/// The largest node count a scenario may ask for (the core's member-table bound).
pub const MAX_NODES: u32 = 200_000;
/// The largest `count` of one fault entry.
pub const MAX_FAULT_OCCURRENCES: u32 = 100_000;
/// The most explicit groups of one partition (unlisted nodes form one more).
pub const MAX_PARTITION_GROUPS: usize = 254;
/// The largest `value_bytes` of a metadata write: the core's bound on one value. A larger value
/// would only be refused by every node, and the run would measure nothing.
pub const MAX_VALUE_BYTES: u32 = meshkit::wire::MAX_VALUE_BYTES as u32;

/// The most voters of a `[leases]` group (the core's bound).
pub const MAX_LEASE_VOTERS: u32 = meshkit::lease::MAX_VOTERS as u32;
/// The most scopes of a `[leases]` section.
pub const MAX_LEASE_SCOPES: usize = 64;
/// The most shards of a `[shards]` section (the lease table holds 65,536 leases).
pub const MAX_SIM_SHARDS: u32 = 65_536;
/// The most shard moves under way at once that `[shards] max_moves_in_flight` accepts.
pub const MAX_MOVES_IN_FLIGHT: u32 = 4_096;
/// The TTL contenders ask for when `[leases] ttl` is absent.
pub const DEFAULT_LEASE_TTL: Duration = Duration::from_secs(3);

const HINT_FORMAT: &str = "the scenario format is documented at the top of sim/src/scenario.rs \
                           (and in docs/scenarios.md)";
const HINT_DURATION: &str = "write durations as strings with a unit: \"500us\", \"250ms\", \
                             \"1.5s\", \"30s\", \"10m\", \"1h\"";
const HINT_SELECTOR: &str = "node selectors are strings: \"3\" (that many random nodes), \"10%\", \
                             \"0..10\" (index range, end excluded), \"node:4\" (one index)";
const HINT_PROBABILITY: &str = "probabilities are numbers from 0.0 to 1.0, e.g. loss = 0.05";

/// A parsed, validated scenario. Build it with [`Scenario::from_file`] or [`Scenario::parse`].
#[derive(Clone, Debug)]
pub struct Scenario {
    name: String,
    description: String,
    nodes: u32,
    spares: u32,
    profile: Profile,
    regions: u32,
    network: NetworkSpec,
    duration: Duration,
    workload: WorkloadSpec,
    faults: Vec<FaultSpec>,
    leases: Option<LeaseSpec>,
    shards: Option<ShardSpec>,
    queue: Option<QueueSpec>,
    autoscale: Option<AutoscaleSpec>,
    expect: Expectations,
    /// Where the text came from, for error messages that are only known at run time.
    file: String,
    source: String,
}

/// `[network]`: the link model. See the module documentation for units and defaults.
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub struct NetworkSpec {
    /// One-way base latency inside a region.
    pub latency: Duration,
    /// Mean of the exponential extra delay of every datagram.
    pub jitter: Duration,
    /// One-way base latency between nodes of different regions.
    pub inter_region_latency: Duration,
    /// Independent loss probability of every datagram.
    pub loss: f64,
    /// Probability that a datagram is delivered twice (the copy has its own delay).
    pub duplicate: f64,
    /// Probability that a datagram gets an extra uniform delay of up to 10x `jitter`.
    pub reorder: f64,
    /// Optional bursty loss.
    pub burst: Option<BurstSpec>,
}

impl Default for NetworkSpec {
    fn default() -> Self {
        Self {
            latency: Duration::from_micros(500),
            jitter: Duration::from_micros(100),
            inter_region_latency: Duration::from_millis(40),
            loss: 0.0,
            duplicate: 0.0,
            reorder: 0.0,
            burst: None,
        }
    }
}

/// `[network.burst]`: a Gilbert-Elliott two-state loss chain, one per sending node.
#[derive(Clone, Copy, Debug, PartialEq)]
#[non_exhaustive]
pub struct BurstSpec {
    /// Probability of moving from the good to the bad state, per datagram sent.
    pub enter: f64,
    /// Probability of moving from the bad to the good state, per datagram sent.
    pub leave: f64,
    /// Loss probability while in the bad state.
    pub loss: f64,
}

/// `[workload]`: background activity measured by the report.
#[derive(Clone, Copy, Debug, PartialEq)]
#[non_exhaustive]
pub struct WorkloadSpec {
    /// Poisson rate of metadata writes, each by a random running node, in writes per second.
    pub metadata_updates_per_s: f64,
    /// Size of each written value, in bytes.
    pub metadata_value_bytes: u32,
}

impl Default for WorkloadSpec {
    fn default() -> Self {
        Self {
            metadata_updates_per_s: 0.0,
            metadata_value_bytes: 64,
        }
    }
}

/// `[leases]`: a lease voter group and the nodes that contend for its scopes. See the module
/// documentation.
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub struct LeaseSpec {
    /// The voters are node indices `0..voters`.
    pub voters: u32,
    /// The scopes every contender tries to hold.
    pub scopes: Vec<Scope>,
    /// The TTL contenders ask for.
    pub ttl: Duration,
    /// Which nodes contend: `Count(n)` means the `n` nodes right after the voters; an index
    /// range or index names them.
    pub contenders: NodeSelector,
    /// The clock-rate deviation the run assumes (0.5 = rates within 0.5..=1.5); the single-holder
    /// invariant tolerates the overlap such skew allows (see `crate::lease`).
    pub max_clock_skew: f64,
    /// Byte range of the `[leases]` section in the source, for late error messages.
    span: Range<usize>,
}

impl LeaseSpec {
    /// The contenders' node indices, for a run of `nodes` nodes (clipped to it).
    pub fn contender_indices(&self, nodes: u32) -> Vec<u32> {
        let range = match self.contenders {
            NodeSelector::Count(n) => self.voters..self.voters.saturating_add(n),
            NodeSelector::Range { start, end } => start..end,
            NodeSelector::Index(i) => i..i.saturating_add(1),
            NodeSelector::Percent(_) | NodeSelector::Holder | NodeSelector::RaftLeader => 0..0,
        };
        range.filter(|&i| i < nodes).collect()
    }
}

/// `[shards]`: a shard map whose shards are owned through lease scopes `shard/{ns}/{id}`, held
/// by the `[leases]` contenders and moved by the rebalancer. See `crate::shard`.
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub struct ShardSpec {
    /// The namespace: shard `i` is the lease scope `shard/{namespace}/{i}`.
    pub namespace: String,
    /// Shards `0..count`.
    pub count: u32,
    /// The TTL of the shard leases.
    pub ttl: Duration,
    /// Shard moves (lease transfers or acquisitions) under way at once.
    pub max_moves_in_flight: u32,
}

/// `[autoscale]`: worker containers scaled on a task queue's backpressure, and the load burst
/// that drives them. Only the compose environment runs it (`meshkit-chaos run --env compose`:
/// its autoscaler adds and removes `meshctl queue work` containers through the Docker API);
/// the simulator has no containers, reads the section so the same file drives both, and lists
/// it in its report as not modelled (`RunReport::not_modelled`).
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub struct AutoscaleSpec {
    /// The queue (shard namespace) whose backpressure is followed and whose items the workers
    /// take (default `jobs`, the compose stack's).
    pub queue: String,
    /// Fewest workers (default 1); the autoscaler starts this many.
    pub min_workers: u32,
    /// Most workers (default 4, at most [`AutoscaleSpec::MAX_WORKERS`]).
    pub max_workers: u32,
    /// Backpressure active this long without a break before a scale-out (default 3s).
    pub scale_out_after: Duration,
    /// Backpressure inactive this long before a scale-in (default 15s): longer than
    /// `scale_out_after`, the hysteresis.
    pub scale_in_after: Duration,
    /// Shortest time between two decisions (default 10s).
    pub cooldown: Duration,
    /// When the runner enqueues the burst.
    pub burst_at: Duration,
    /// Items in the burst (at most 5,000).
    pub burst_items: u32,
    /// Time one worker holds one item (default 200ms).
    pub work: Duration,
    /// Bound on burst to the first scale-out, in seconds (`autoscale_scale_out_s`).
    pub scale_out_s_max: Option<f64>,
    /// Bound on burst to the last scale-in back at `min_workers`, in seconds
    /// (`autoscale_scale_in_s`).
    pub scale_in_s_max: Option<f64>,
}

impl AutoscaleSpec {
    /// Most workers a scenario may ask for: each is a container on the machine running the
    /// stack.
    pub const MAX_WORKERS: u32 = 16;
    /// Most items in a burst.
    pub const MAX_BURST_ITEMS: u32 = 5_000;
}

/// `[queue]`: task queues on the `[shards]` (one per shard, served by its owner), producers
/// and workers. See `crate::queue`.
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub struct QueueSpec {
    /// The producers' node indices.
    pub producers: NodeSelector,
    /// The workers' node indices.
    pub workers: NodeSelector,
    /// Items each producer enqueues per second (Poisson), spread over the shards.
    pub rate_per_s: f64,
    /// How long a worker works on an item before completing it.
    pub processing_time: Duration,
    /// Items a worker holds at once.
    pub worker_concurrency: u32,
    /// Producers stop here (so the queues can empty and the end state settle).
    pub produce_until: Duration,
    /// A burst: at this time, each producer enqueues `burst_items` items at once, ignoring
    /// backpressure.
    pub burst_at: Option<Duration>,
    /// Items of the burst, per producer.
    pub burst_items: u32,
    /// The core's queue configuration (replicas, watermarks, cooldown, lease timeout, ...).
    pub config: meshkit::queue::QueueConfig,
}

impl QueueSpec {
    /// The node indices a selector of this section names, for a run of `nodes` nodes.
    pub fn indices(sel: &NodeSelector, nodes: u32) -> Vec<u32> {
        let range = match *sel {
            NodeSelector::Range { start, end } => start..end,
            NodeSelector::Index(i) => i..i.saturating_add(1),
            _ => 0..0,
        };
        range.filter(|&i| i < nodes).collect()
    }
}

/// One `[[fault]]` entry.
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub struct FaultSpec {
    /// When the first occurrence fires (virtual time since the start).
    pub at: Duration,
    /// How many occurrences (at least 1).
    pub count: u32,
    /// Time between occurrences (zero when `count == 1`).
    pub every: Duration,
    /// Each occurrence fires up to this much after its time, drawn uniformly from the fault
    /// stream (zero: exactly on time). A crash at a random point of a renewal period, not
    /// always at the same one, is what makes a failover distribution worth its percentiles.
    pub jitter: Duration,
    /// What happens.
    pub action: FaultAction,
    /// Byte range of the entry's `action` value in the source, for late error messages.
    span: Range<usize>,
}

/// What a fault does. See the module documentation's table.
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub enum FaultAction {
    /// Stop the selected live nodes, optionally restarting them later.
    Crash {
        /// Which nodes.
        nodes: NodeSelector,
        /// Restart each crashed node this much later (with state loss).
        restart_after: Option<Duration>,
    },
    /// Restart the selected crashed nodes with state loss.
    Restart {
        /// Which nodes, chosen among the crashed ones.
        nodes: NodeSelector,
    },
    /// Split the mesh into groups that cannot talk.
    Partition {
        /// How the groups are formed.
        shape: PartitionShape,
        /// Drop only datagrams from the first group to the others.
        one_way: bool,
        /// End this partition that much later.
        heal_after: Option<Duration>,
    },
    /// End every partition.
    Heal,
    /// Change the independent loss probability.
    Loss {
        /// The new probability.
        rate: f64,
        /// Return to the scenario's base loss after this long.
        duration: Option<Duration>,
    },
    /// Pause the selected nodes (gray failure).
    Pause {
        /// Which nodes, among running ones.
        nodes: NodeSelector,
        /// How long.
        duration: Duration,
    },
    /// Make the selected nodes' clocks run fast or slow.
    Skew {
        /// Which nodes.
        nodes: NodeSelector,
        /// Local seconds per real second (0.5 ..= 2.0 in practice; 0.01 ..= 100 accepted).
        rate: f64,
        /// Return to rate 1.0 after this long.
        duration: Option<Duration>,
    },
    /// Leave gracefully.
    Leave {
        /// Which nodes.
        nodes: NodeSelector,
    },
    /// The holder of a `[leases]` scope hands it to another running contender, chosen at
    /// random (a graceful handoff).
    Transfer {
        /// The scope, by default the first of `[leases] scopes`.
        scope: Option<Scope>,
    },
    /// With `[shards]`: the selected contenders join the shard pool.
    Join {
        /// Which nodes (index selectors).
        nodes: NodeSelector,
    },
    /// With `[shards]`: the selected contenders are drained (their shards move off), then
    /// leave gracefully.
    Drain {
        /// Which nodes.
        nodes: NodeSelector,
    },
    /// A non-member with a valid certificate sends forged datagrams (one attack per
    /// occurrence, drawn from these).
    Byzantine {
        /// The attacks drawn from (at least one, no repeats).
        attacks: Vec<Attack>,
    },
    /// A core fault plan (`meshkit::diag::fault::FaultPlan`), started at each occurrence:
    /// any kind the simulator applies, any selector (role selectors read when it starts), its
    /// own duration, after which it reverts by itself.
    Plan(meshkit::diag::fault::FaultPlan),
    /// Write or delete one metadata key on the selected nodes.
    Metadata {
        /// Which nodes.
        nodes: NodeSelector,
        /// The key.
        key: String,
        /// Set the key to this many random bytes, or delete it.
        op: MetadataOp,
    },
}

/// One attack of a `byzantine` fault. See the module documentation.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Deserialize)]
#[serde(rename_all = "kebab-case")]
#[non_exhaustive]
pub enum Attack {
    /// A `MsgHeartbeat` at a voter's current term with a commit index past its log.
    RaftCommit,
    /// One to five `MsgTimeoutNow` at a voter's current term.
    TimeoutNow,
    /// A `MsgHeartbeat` or a `MsgAppend` at a higher term than the voter's.
    HigherTerm,
    /// `Left` of a live member at a high incarnation (or `u32::MAX`).
    Left,
    /// A write to a live member's metadata at a high epoch (or `u32::MAX`).
    Meta,
    /// Members that do not exist, announced alive, many per datagram.
    Phantoms,
    /// Random bytes and damaged forged datagrams on either channel.
    Garbage,
}

impl Attack {
    /// Every attack, the default of `attacks`.
    pub const ALL: [Self; 7] = [
        Self::RaftCommit,
        Self::TimeoutNow,
        Self::HigherTerm,
        Self::Left,
        Self::Meta,
        Self::Phantoms,
        Self::Garbage,
    ];

    /// Whether the attack speaks Raft (and so needs `[leases]`).
    pub fn is_raft(self) -> bool {
        matches!(self, Self::RaftCommit | Self::TimeoutNow | Self::HigherTerm)
    }

    /// Its name in a scenario file.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::RaftCommit => "raft-commit",
            Self::TimeoutNow => "timeout-now",
            Self::HigherTerm => "higher-term",
            Self::Left => "left",
            Self::Meta => "meta",
            Self::Phantoms => "phantoms",
            Self::Garbage => "garbage",
        }
    }
}

/// A metadata fault's write.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum MetadataOp {
    /// Set the key to a fresh random value of this many bytes.
    Set {
        /// Value size in bytes.
        value_bytes: u32,
    },
    /// Delete the key (leaving a tombstone).
    Delete,
}

/// How a partition forms its groups.
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub enum PartitionShape {
    /// A random share of all nodes (this fraction, rounded) forms the first group.
    Split(f64),
    /// Explicit groups of index selectors; unlisted nodes form one more group.
    Groups(Vec<NodeSelector>),
}

/// Which nodes a fault applies to. See the module documentation.
#[derive(Clone, Copy, Debug, PartialEq)]
#[non_exhaustive]
pub enum NodeSelector {
    /// That many distinct random candidates.
    Count(u32),
    /// That share (0..=100) of the candidates, rounded to nearest, at least one.
    Percent(f64),
    /// Node indices `start..end`.
    Range {
        /// First index.
        start: u32,
        /// One past the last index.
        end: u32,
    },
    /// One node index.
    Index(u32),
    /// `"holder"`: the running contenders that hold the first `[leases]` scope by their own
    /// clock when the fault fires.
    Holder,
    /// `"raft-leader"`: the voters that believe they lead the lease group when the fault fires.
    RaftLeader,
}

impl NodeSelector {
    /// Whether the selector names indices (rather than drawing random nodes).
    pub fn is_indexed(&self) -> bool {
        matches!(self, Self::Range { .. } | Self::Index(_))
    }

    /// One past the largest index the selector names, if it names indices.
    fn index_end(&self) -> Option<u32> {
        match *self {
            Self::Range { end, .. } => Some(end),
            Self::Index(i) => Some(i.saturating_add(1)),
            Self::Count(_) | Self::Percent(_) | Self::Holder | Self::RaftLeader => None,
        }
    }

    /// Whether the selector names nodes by their lease role.
    pub fn is_lease_role(&self) -> bool {
        matches!(self, Self::Holder | Self::RaftLeader)
    }
}

impl fmt::Display for NodeSelector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Count(n) => write!(f, "{n}"),
            Self::Percent(p) => write!(f, "{p}%"),
            Self::Range { start, end } => write!(f, "{start}..{end}"),
            Self::Index(i) => write!(f, "node:{i}"),
            Self::Holder => f.write_str("holder"),
            Self::RaftLeader => f.write_str("raft-leader"),
        }
    }
}

/// `[expect]`: bounds the run must meet; a missing key is not checked.
#[derive(Clone, Copy, Debug, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct Expectations {
    /// Upper bound of `detection_p99_s`.
    pub detection_p99_s_max: Option<f64>,
    /// Upper bound of `detection_p50_s`.
    pub detection_p50_s_max: Option<f64>,
    /// Upper bound of `false_positives`.
    pub false_positives_max: Option<u64>,
    /// Upper bound of `paused_dead` (pauses during which the paused node was declared Dead).
    pub paused_dead_max: Option<u64>,
    /// Upper bound of `minority_view_s` (a side that never completed its view fails it).
    pub minority_view_s_max: Option<f64>,
    /// Upper bound of `suspicions_per_node_hour`.
    pub suspicions_per_node_hour_max: Option<f64>,
    /// Upper bound of `dissemination_p99_rounds`.
    pub dissemination_p99_rounds_max: Option<f64>,
    /// Upper bound of `heal_s`.
    pub heal_s_max: Option<f64>,
    /// Upper bound of `bytes_per_node_s`.
    pub bytes_per_node_s_max: Option<f64>,
    /// Whether the mesh must end in one view with equal metadata versions.
    pub converged: Option<bool>,
    /// Upper bound of `failover_p50_s`.
    pub failover_p50_s_max: Option<f64>,
    /// Upper bound of `failover_p99_s`.
    pub failover_p99_s_max: Option<f64>,
    /// Upper bound of `raft_failover_p50_s`.
    pub raft_failover_p50_s_max: Option<f64>,
    /// Upper bound of `raft_failover_p99_s`.
    pub raft_failover_p99_s_max: Option<f64>,
    /// Upper bound of `handoff_p99_ms`.
    pub handoff_p99_ms_max: Option<f64>,
    /// Upper bound of `lease_grant_p50_ms`.
    pub lease_grant_p50_ms_max: Option<f64>,
    /// Upper bound of `stale_writes_accepted` (an accepted stale write is also an invariant
    /// violation).
    pub stale_writes_accepted_max: Option<u64>,
    /// Lower bound of `stale_writes_refused`: the run must have exercised the fence.
    pub stale_writes_refused_min: Option<u64>,
    /// Upper bound of `shard_moves_ratio`.
    pub shard_moves_ratio_max: Option<f64>,
    /// Upper bound of `shard_imbalance_max`.
    pub shard_imbalance_max_max: Option<f64>,
    /// Lower bound of `shard_drains`: drains that finished.
    pub shard_drains_min: Option<u64>,
    /// Lower bound of `byzantine_datagrams`: the run must have attacked.
    pub byzantine_datagrams_min: Option<u64>,
    /// Lower bound of `joins_seen`: surge joins the mesh held Alive.
    pub joins_seen_min: Option<u64>,
    /// Lower bound of `leaves_seen`: graceful leaves the mesh holds `left`, not dead.
    pub leaves_seen_min: Option<u64>,
}

/// A scenario that could not be read or does not make sense. Nothing was built.
///
/// Displays as `FILE:LINE:COL: message` followed by an indented `hint:` line.
#[derive(Clone, Debug, Error, PartialEq, Eq)]
#[error("{file}:{line}:{column}: {message}\n  hint: {hint}")]
#[non_exhaustive]
pub struct ScenarioError {
    /// The file name as given (or `<input>`).
    pub file: String,
    /// 1-based line.
    pub line: usize,
    /// 1-based column, in characters.
    pub column: usize,
    /// What is wrong.
    pub message: String,
    /// How to fix it.
    pub hint: String,
}

impl ScenarioError {
    fn at(file: &str, source: &str, offset: usize, message: String, hint: &str) -> Self {
        let (line, column) = line_col(source, offset);
        Self {
            file: file.to_owned(),
            line,
            column,
            message,
            hint: hint.to_owned(),
        }
    }
}

/// 1-based line and column (in characters) of a byte offset.
fn line_col(source: &str, offset: usize) -> (usize, usize) {
    let mut offset = offset.min(source.len());
    while !source.is_char_boundary(offset) {
        offset -= 1;
    }
    let before = &source[..offset];
    let line = before.matches('\n').count() + 1;
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    (line, before[line_start..].chars().count() + 1)
}

impl Scenario {
    /// Reads and parses a scenario file.
    pub fn from_file(path: &Path) -> Result<Self, ScenarioError> {
        let file = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|e| ScenarioError {
            file: file.clone(),
            line: 1,
            column: 1,
            message: format!("cannot read the scenario: {e}"),
            hint: "give the path of a .toml scenario, e.g. scenarios/crash-one.toml".to_owned(),
        })?;
        Self::parse(&text, &file)
    }

    /// Parses scenario text; `file` only names it in error messages.
    pub fn parse(text: &str, file: &str) -> Result<Self, ScenarioError> {
        let raw: RawScenario = toml::from_str(text).map_err(|e| {
            let offset = e.span().map_or(0, |s| s.start);
            let message = e.message().trim().to_owned();
            let hint = hint_for(&message);
            ScenarioError::at(file, text, offset, message, hint)
        })?;
        let err = |span: Range<usize>, message: String, hint: &str| {
            ScenarioError::at(file, text, span.start, message, hint)
        };
        let faults = raw
            .faults
            .into_iter()
            .map(|f| {
                f.validate()
                    .map_err(|(span, msg, hint)| err(span, msg, hint))
            })
            .collect::<Result<Vec<_>, _>>()?;
        let leases = match raw.leases {
            None => None,
            Some(l) => {
                let whole = l.span();
                Some(
                    l.into_inner()
                        .validate(whole)
                        .map_err(|(span, msg, hint)| err(span, msg, hint))?,
                )
            }
        };
        let shards = match raw.shards {
            None => None,
            Some(sh) => {
                let whole = sh.span();
                let Some(leases) = &leases else {
                    return Err(err(
                        whole,
                        "[shards] needs a [leases] section".to_owned(),
                        "shards are owned through leases: add [leases] (voters, contenders)",
                    ));
                };
                let spec = sh
                    .into_inner()
                    .validate(whole.clone(), leases.ttl)
                    .map_err(|(span, msg, hint)| err(span, msg, hint))?;
                if let Some(clash) = leases.scopes.iter().find(|s| {
                    s.as_shard()
                        .is_some_and(|shard| shard.namespace() == spec.namespace)
                }) {
                    return Err(err(
                        whole,
                        format!(
                            "[leases] scope {clash} is in the [shards] namespace {:?}",
                            spec.namespace
                        ),
                        "give [shards] another namespace: its shards are leased by the \
                         coordinator, not contended for",
                    ));
                }
                Some(spec)
            }
        };
        let queue = match raw.queue {
            None => None,
            Some(q) => {
                let whole = q.span();
                if shards.is_none() {
                    return Err(err(
                        whole,
                        "[queue] needs a [shards] section".to_owned(),
                        "a queue lives on each shard and is served by its owner: add [shards]",
                    ));
                }
                Some(
                    q.into_inner()
                        .validate(whole, raw.run.duration.0)
                        .map_err(|(span, msg, hint)| err(span, msg, hint))?,
                )
            }
        };
        let autoscale = match raw.autoscale {
            None => None,
            Some(a) => {
                let whole = a.span();
                Some(
                    a.into_inner()
                        .validate(whole, raw.run.duration.0)
                        .map_err(|(span, msg, hint)| err(span, msg, hint))?,
                )
            }
        };
        let spares = raw.topology.spares.as_ref().map_or(0, |s| *s.get_ref());
        if let Some(sp) = &raw.topology.spares
            && spares > MAX_NODES - raw.topology.nodes.0
        {
            return Err(err(
                sp.span(),
                format!(
                    "nodes + spares = {} is over {MAX_NODES}",
                    u64::from(raw.topology.nodes.0) + u64::from(spares)
                ),
                "spares are slots a membership surge boots: keep nodes + spares within the \
                 simulator's bound",
            ));
        }
        // Every surge occurrence boots its own spares (a surged node that left is not booted
        // again), so the timeline's surges must fit the spares before anything runs.
        let mut surged = 0u64;
        for f in &faults {
            if let FaultAction::Plan(plan) = &f.action
                && let meshkit::diag::fault::FaultKind::MembershipSurge { joins } = plan.kind()
            {
                surged += u64::from(*joins) * u64::from(f.count);
                if surged > u64::from(spares) {
                    return Err(err(
                        f.span.clone(),
                        format!(
                            "the membership surges up to here start {surged} nodes, but \
                             [topology] spares = {spares}"
                        ),
                        "a surge boots spares, slots that are down until it starts: raise \
                         [topology] spares (in compose, `compose/up --spares K`) or join fewer",
                    ));
                }
            }
        }
        let workload = raw.workload;
        if workload.metadata_value_bytes.get_ref().0 > MAX_VALUE_BYTES {
            return Err(err(
                workload.metadata_value_bytes.span(),
                format!("metadata_value_bytes is larger than {MAX_VALUE_BYTES}"),
                "the core refuses a metadata value larger than 1,024 bytes",
            ));
        }
        let scenario = Self {
            name: raw.name,
            description: raw.description,
            nodes: raw.topology.nodes.0,
            spares,
            profile: raw.topology.profile,
            regions: raw.topology.regions.0,
            network: NetworkSpec {
                latency: raw.network.latency.0,
                jitter: raw.network.jitter.0,
                inter_region_latency: raw.network.inter_region_latency.0,
                loss: raw.network.loss.0,
                duplicate: raw.network.duplicate.0,
                reorder: raw.network.reorder.0,
                burst: raw.network.burst.map(|b| BurstSpec {
                    enter: b.enter.0,
                    leave: b.leave.0,
                    loss: b.loss.0,
                }),
            },
            duration: raw.run.duration.0,
            workload: WorkloadSpec {
                metadata_updates_per_s: workload.metadata_updates_per_s.0,
                metadata_value_bytes: workload.metadata_value_bytes.into_inner().0,
            },
            faults,
            leases,
            shards,
            queue,
            autoscale,
            expect: raw.expect,
            file: file.to_owned(),
            source: text.to_owned(),
        };
        scenario.check_node_count(scenario.nodes)?;
        if let Some(late) = scenario.faults.iter().find(|f| f.at > scenario.duration) {
            return Err(err(
                late.span.clone(),
                format!(
                    "this fault is due at {:?}, after the run ends ([run] duration = {:?})",
                    late.at, scenario.duration
                ),
                "move `at` before the end of the run, or make [run] duration longer",
            ));
        }
        Ok(scenario)
    }

    /// Checks that every index selector fits `nodes` nodes and that partition groups do not
    /// overlap. [`crate::run`] calls it with the effective node count (after `--nodes`).
    pub fn check_node_count(&self, nodes: u32) -> Result<(), ScenarioError> {
        let err = |span: &Range<usize>, message: String, hint: &str| {
            ScenarioError::at(&self.file, &self.source, span.start, message, hint)
        };
        if !(2..=MAX_NODES).contains(&nodes) {
            return Err(ScenarioError {
                file: self.file.clone(),
                line: 1,
                column: 1,
                message: format!("{nodes} nodes is outside 2..={MAX_NODES}"),
                hint: "choose a node count of at least 2".to_owned(),
            });
        }
        if let Some(leases) = &self.leases {
            let end = leases
                .contenders
                .index_end()
                .unwrap_or(0)
                .max(leases.voters.saturating_add(match leases.contenders {
                    NodeSelector::Count(n) => n,
                    _ => 0,
                }))
                .max(leases.voters);
            if end > nodes {
                return Err(err(
                    &leases.span,
                    format!(
                        "[leases] voters and contenders need {end} nodes; this run has {nodes}"
                    ),
                    "run with more nodes or fewer voters or contenders",
                ));
            }
        }
        for fault in &self.faults {
            let selectors: Vec<&NodeSelector> = match &fault.action {
                FaultAction::Crash { nodes, .. }
                | FaultAction::Restart { nodes }
                | FaultAction::Pause { nodes, .. }
                | FaultAction::Skew { nodes, .. }
                | FaultAction::Leave { nodes }
                | FaultAction::Join { nodes }
                | FaultAction::Drain { nodes }
                | FaultAction::Metadata { nodes, .. } => vec![nodes],
                FaultAction::Partition {
                    shape: PartitionShape::Groups(groups),
                    ..
                } => groups.iter().collect(),
                FaultAction::Partition {
                    shape: PartitionShape::Split(_),
                    ..
                }
                | FaultAction::Heal
                | FaultAction::Transfer { .. }
                | FaultAction::Byzantine { .. }
                | FaultAction::Plan(_)
                | FaultAction::Loss { .. } => vec![],
            };
            if let FaultAction::Plan(plan) = &fault.action {
                use meshkit::diag::fault::{ClusterView, ResolveError, resolve};
                let view = ClusterView::numbered(nodes, self.regions.max(1));
                // A role is read when the plan starts; an empty region or share is a plan that
                // touches nothing, which the report shows as unresolved. An index beyond the
                // run's nodes can never run.
                if let Err(e @ ResolveError::IndexOutOfRange { .. }) = resolve(plan, &view) {
                    return Err(err(
                        &fault.span,
                        format!("{e}"),
                        "index selectors do not scale with --nodes: use a count, a share or a \
                         region, or run with more nodes",
                    ));
                }
            }
            let no_leases = || {
                err(
                    &fault.span,
                    "this fault needs a [leases] section".to_owned(),
                    "add [leases] (voters, scopes, ttl, contenders) or pick nodes by index or \
                     count",
                )
            };
            if let FaultAction::Transfer { scope } = &fault.action {
                let Some(leases) = &self.leases else {
                    return Err(no_leases());
                };
                if let Some(scope) = scope
                    && !leases.scopes.contains(scope)
                {
                    return Err(err(
                        &fault.span,
                        format!("scope {scope} is not among the [leases] scopes"),
                        "name one of the [leases] scopes, or leave `scope` out for the first",
                    ));
                }
            }
            if let FaultAction::Byzantine { attacks } = &fault.action
                && self.leases.is_none()
                && let Some(raft) = attacks.iter().find(|a| a.is_raft())
            {
                return Err(err(
                    &fault.span,
                    format!("attack \"{}\" needs a [leases] section", raft.as_str()),
                    "add [leases] (the voters it attacks), or list only membership attacks: \
                     attacks = [\"left\", \"meta\", \"phantoms\", \"garbage\"]",
                ));
            }
            if self.leases.is_none() && selectors.iter().any(|s| s.is_lease_role()) {
                return Err(no_leases());
            }
            if let FaultAction::Join { nodes } | FaultAction::Drain { nodes } = &fault.action {
                if self.shards.is_none() {
                    return Err(err(
                        &fault.span,
                        "this fault needs a [shards] section".to_owned(),
                        "add [shards] (namespace, count) next to [leases]",
                    ));
                }
                if matches!(fault.action, FaultAction::Join { .. }) && !nodes.is_indexed() {
                    return Err(err(
                        &fault.span,
                        format!("join names nodes by index, not \"{nodes}\""),
                        "e.g. nodes = \"100..120\": those contenders stay out of the shard pool \
                         until the join",
                    ));
                }
            }
            for sel in &selectors {
                if let Some(end) = sel.index_end()
                    && end > nodes
                {
                    return Err(err(
                        &fault.span,
                        format!(
                            "selector \"{sel}\" names indices beyond the {nodes} nodes of this run"
                        ),
                        "index selectors do not scale with --nodes: use a count (\"3\"), a share \
                         (\"10%\") or `split`, or run with more nodes",
                    ));
                }
            }
            if let FaultAction::Partition {
                shape: PartitionShape::Groups(groups),
                ..
            } = &fault.action
            {
                let mut seen = vec![false; nodes as usize];
                for sel in groups {
                    let (start, end) = match *sel {
                        NodeSelector::Range { start, end } => (start, end),
                        NodeSelector::Index(i) => (i, i + 1),
                        NodeSelector::Count(_)
                        | NodeSelector::Percent(_)
                        | NodeSelector::Holder
                        | NodeSelector::RaftLeader => continue,
                    };
                    for i in start..end {
                        if std::mem::replace(&mut seen[i as usize], true) {
                            return Err(err(
                                &fault.span,
                                format!("node index {i} is in two partition groups"),
                                "partition groups must not overlap",
                            ));
                        }
                    }
                }
            }
        }
        Ok(())
    }

    /// The scenario's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The one-line description.
    pub fn description(&self) -> &str {
        &self.description
    }

    /// The default node count.
    pub fn nodes(&self) -> u32 {
        self.nodes
    }

    /// `[topology] spares`: slots after the nodes, down from the start, that membership-surge
    /// plans boot (0 without).
    pub fn spares(&self) -> u32 {
        self.spares
    }

    /// The default protocol profile.
    pub fn profile(&self) -> Profile {
        self.profile
    }

    /// The number of regions (at least 1).
    pub fn regions(&self) -> u32 {
        self.regions
    }

    /// The network model.
    pub fn network(&self) -> &NetworkSpec {
        &self.network
    }

    /// The default virtual run length.
    pub fn duration(&self) -> Duration {
        self.duration
    }

    /// The background workload.
    pub fn workload(&self) -> &WorkloadSpec {
        &self.workload
    }

    /// The fault timeline, in file order.
    pub fn faults(&self) -> &[FaultSpec] {
        &self.faults
    }

    /// The `[leases]` section, if any.
    pub fn leases(&self) -> Option<&LeaseSpec> {
        self.leases.as_ref()
    }

    /// The `[shards]` section, if any.
    pub fn shards(&self) -> Option<&ShardSpec> {
        self.shards.as_ref()
    }

    /// The `[queue]` section, if any.
    pub fn queue(&self) -> Option<&QueueSpec> {
        self.queue.as_ref()
    }

    /// The `[autoscale]` section, if any (compose only; the simulator lists it as not
    /// modelled).
    pub fn autoscale(&self) -> Option<&AutoscaleSpec> {
        self.autoscale.as_ref()
    }

    /// The expectations.
    pub fn expect(&self) -> &Expectations {
        &self.expect
    }

    /// The file name the scenario was read from.
    pub fn file(&self) -> &str {
        &self.file
    }
}

/// Picks a hint for a message produced while deserializing.
fn hint_for(message: &str) -> &'static str {
    if message.contains("duration") {
        HINT_DURATION
    } else if message.contains("selector") {
        HINT_SELECTOR
    } else if message.contains("probability") {
        HINT_PROBABILITY
    } else if message.contains("unknown field") {
        "remove the key or fix its spelling; the accepted keys are listed above, and the \
         scenario format is documented at the top of sim/src/scenario.rs"
    } else if message.contains("missing field") {
        "add the missing key; the scenario format is documented at the top of sim/src/scenario.rs"
    } else if message.contains("unknown variant") {
        "use one of the values listed above"
    } else {
        HINT_FORMAT
    }
}

// ---- Raw serde forms -------------------------------------------------------------------------

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawScenario {
    name: String,
    #[serde(default)]
    description: String,
    topology: RawTopology,
    #[serde(default)]
    network: RawNetwork,
    run: RawRun,
    #[serde(default)]
    workload: RawWorkload,
    #[serde(default, rename = "fault")]
    faults: Vec<RawFault>,
    leases: Option<Spanned<RawLeases>>,
    shards: Option<Spanned<RawShards>>,
    queue: Option<Spanned<RawQueue>>,
    autoscale: Option<Spanned<RawAutoscale>>,
    #[serde(default)]
    expect: Expectations,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawAutoscale {
    queue: Option<String>,
    min_workers: Option<u32>,
    max_workers: Option<u32>,
    scale_out_after: Option<DurationStr>,
    scale_in_after: Option<DurationStr>,
    cooldown: Option<DurationStr>,
    burst_at: DurationStr,
    burst_items: u32,
    work: Option<DurationStr>,
    scale_out_s_max: Option<f64>,
    scale_in_s_max: Option<f64>,
}

impl RawAutoscale {
    fn validate(
        self,
        whole: Range<usize>,
        duration: Duration,
    ) -> Result<AutoscaleSpec, FieldError> {
        let bad = |message: String, hint: &'static str| Err((whole.clone(), message, hint));
        let spec = AutoscaleSpec {
            queue: self.queue.unwrap_or_else(|| "jobs".to_owned()),
            min_workers: self.min_workers.unwrap_or(1),
            max_workers: self.max_workers.unwrap_or(4),
            scale_out_after: self.scale_out_after.map_or(Duration::from_secs(3), |d| d.0),
            scale_in_after: self.scale_in_after.map_or(Duration::from_secs(15), |d| d.0),
            cooldown: self.cooldown.map_or(Duration::from_secs(10), |d| d.0),
            burst_at: self.burst_at.0,
            burst_items: self.burst_items,
            work: self.work.map_or(Duration::from_millis(200), |d| d.0),
            scale_out_s_max: self.scale_out_s_max,
            scale_in_s_max: self.scale_in_s_max,
        };
        if meshkit::shard::ShardId::new(&spec.queue, 0).is_err() {
            return bad(
                format!(
                    "[autoscale] queue {:?} is not a shard namespace",
                    spec.queue
                ),
                "name a namespace of the stack's [shards], e.g. queue = \"jobs\"",
            );
        }
        if spec.min_workers > spec.max_workers
            || spec.max_workers > AutoscaleSpec::MAX_WORKERS
            || spec.max_workers == 0
        {
            return bad(
                format!(
                    "[autoscale] min_workers = {} and max_workers = {}: need min <= max, \
                     1 <= max <= {}",
                    spec.min_workers,
                    spec.max_workers,
                    AutoscaleSpec::MAX_WORKERS
                ),
                "each worker is a container on this machine: keep max_workers small",
            );
        }
        if spec.scale_in_after < spec.scale_out_after || spec.scale_out_after.is_zero() {
            return bad(
                format!(
                    "[autoscale] scale_in_after ({:?}) must be at least scale_out_after ({:?}), \
                     which must be positive",
                    spec.scale_in_after, spec.scale_out_after
                ),
                "a scale-in waits longer than a scale-out (hysteresis), or the workers flap",
            );
        }
        if spec.burst_at >= duration
            || spec.burst_items == 0
            || spec.burst_items > AutoscaleSpec::MAX_BURST_ITEMS
        {
            return bad(
                format!(
                    "[autoscale] burst_at = {:?} (the run lasts {duration:?}), burst_items = {} \
                     (1..={})",
                    spec.burst_at,
                    spec.burst_items,
                    AutoscaleSpec::MAX_BURST_ITEMS
                ),
                "the burst must land inside the run",
            );
        }
        if spec.work.is_zero() || spec.work > Duration::from_secs(2) {
            return bad(
                format!("[autoscale] work = {:?} is outside (0, 2s]", spec.work),
                "a worker holds an item without heartbeats: keep it well below the queue's \
                 lease_timeout",
            );
        }
        for (key, v) in [
            ("scale_out_s_max", spec.scale_out_s_max),
            ("scale_in_s_max", spec.scale_in_s_max),
        ] {
            if v.is_some_and(|v| !(v.is_finite() && v > 0.0)) {
                return bad(
                    format!("[autoscale] {key} must be a positive number of seconds"),
                    "e.g. scale_out_s_max = 20.0",
                );
            }
        }
        Ok(spec)
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawQueue {
    producers: Spanned<NodeSelector>,
    workers: Spanned<NodeSelector>,
    rate_per_s: Option<f64>,
    processing_time: Option<DurationStr>,
    worker_concurrency: Option<u32>,
    produce_until: Option<DurationStr>,
    burst_at: Option<DurationStr>,
    burst_items: Option<u32>,
    #[serde(flatten)]
    core: meshkit::queue::RawQueueConfig,
}

impl RawQueue {
    fn validate(self, whole: Range<usize>, duration: Duration) -> Result<QueueSpec, FieldError> {
        for sel in [&self.producers, &self.workers] {
            if !matches!(
                sel.get_ref(),
                NodeSelector::Range { .. } | NodeSelector::Index(_)
            ) {
                return Err((
                    sel.span(),
                    format!("\"{}\" is not an index selector", sel.get_ref()),
                    "name the nodes by index, e.g. producers = \"3..5\" or \"node:4\"",
                ));
            }
        }
        let rate_per_s = self.rate_per_s.unwrap_or(10.0);
        if !(0.0..=10_000.0).contains(&rate_per_s) {
            return Err((
                whole,
                format!("rate_per_s = {rate_per_s} is outside 0..=10000"),
                "items each producer enqueues per second, e.g. 20.0",
            ));
        }
        let worker_concurrency = self.worker_concurrency.unwrap_or(1);
        if !(1..=64).contains(&worker_concurrency) {
            return Err((
                whole,
                format!("worker_concurrency = {worker_concurrency} is outside 1..=64"),
                "items one worker holds at once, e.g. 2",
            ));
        }
        let burst_items = self.burst_items.unwrap_or(0);
        if burst_items > 10_000 {
            return Err((
                whole,
                format!("burst_items = {burst_items} is above 10000"),
                "items each producer enqueues at once at burst_at",
            ));
        }
        let config = meshkit::queue::QueueConfig::try_from(self.core).map_err(|e| {
            (
                whole.clone(),
                e.to_string(),
                "the core's [queue] keys: replicas, max_attempts, lease_timeout, high_watermark, \
                 low_watermark, cooldown, health_grace, recovery_wait, request_timeout, max_items",
            )
        })?;
        Ok(QueueSpec {
            producers: *self.producers.get_ref(),
            workers: *self.workers.get_ref(),
            rate_per_s,
            processing_time: self
                .processing_time
                .map_or(Duration::from_millis(50), |d| d.0),
            worker_concurrency,
            produce_until: self.produce_until.map_or(duration * 2 / 3, |d| d.0),
            burst_at: self.burst_at.map(|d| d.0),
            burst_items,
            config,
        })
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawShards {
    namespace: Option<Spanned<String>>,
    count: Spanned<u32>,
    ttl: Option<Spanned<DurationStr>>,
    max_moves_in_flight: Option<Spanned<u32>>,
}

impl RawShards {
    fn validate(self, whole: Range<usize>, lease_ttl: Duration) -> Result<ShardSpec, FieldError> {
        let namespace = self
            .namespace
            .as_ref()
            .map_or_else(|| "orders".to_owned(), |n| n.get_ref().clone());
        if let Err(e) = meshkit::shard::ShardId::new(&namespace, 0) {
            let span = self.namespace.as_ref().map_or(whole, Spanned::span);
            return Err((
                span,
                format!("namespace {namespace:?}: {e}"),
                "a namespace is a short name such as \"orders\"",
            ));
        }
        let count = *self.count.get_ref();
        if !(1..=MAX_SIM_SHARDS).contains(&count) {
            return Err((
                self.count.span(),
                format!("count = {count} is outside 1..={MAX_SIM_SHARDS}"),
                "count is the number of shards, e.g. 64",
            ));
        }
        let ttl = checked_ttl(
            self.ttl.as_ref(),
            lease_ttl,
            whole.clone(),
            "write e.g. ttl = \"10s\"",
        )?;
        let max_moves_in_flight = self
            .max_moves_in_flight
            .as_ref()
            .map_or(256, |m| *m.get_ref());
        if !(1..=MAX_MOVES_IN_FLIGHT).contains(&max_moves_in_flight) {
            let span = self
                .max_moves_in_flight
                .as_ref()
                .map_or(whole, Spanned::span);
            return Err((
                span,
                format!(
                    "max_moves_in_flight = {max_moves_in_flight} is outside 1..={MAX_MOVES_IN_FLIGHT}"
                ),
                "how many lease transfers may be under way at once, e.g. 256",
            ));
        }
        Ok(ShardSpec {
            namespace,
            count,
            ttl,
            max_moves_in_flight,
        })
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawLeases {
    voters: Option<Spanned<u32>>,
    scopes: Option<Spanned<Vec<String>>>,
    ttl: Option<Spanned<DurationStr>>,
    contenders: Option<Spanned<NodeSelector>>,
    max_clock_skew: Option<Spanned<f64>>,
}

impl RawLeases {
    fn validate(self, whole: Range<usize>) -> Result<LeaseSpec, FieldError> {
        let voters = self.voters.as_ref().map_or(3, |v| *v.get_ref());
        if !(1..=MAX_LEASE_VOTERS).contains(&voters) {
            let span = self.voters.as_ref().map_or(whole, Spanned::span);
            return Err((
                span,
                format!("voters = {voters} is outside 1..={MAX_LEASE_VOTERS}"),
                "a lease group has 3 or 5 voters, usually",
            ));
        }
        let scopes = match &self.scopes {
            None => vec![Scope::global_control()],
            Some(list) => {
                if list.get_ref().len() > MAX_LEASE_SCOPES {
                    return Err((
                        list.span(),
                        format!("scopes must list at most {MAX_LEASE_SCOPES} scopes"),
                        "e.g. scopes = [\"global-control\", \"shard/orders/1\"]",
                    ));
                }
                let mut scopes = Vec::new();
                for name in list.get_ref() {
                    let scope = Scope::new(name).map_err(|e| {
                        (
                            list.span(),
                            format!("scope {name:?}: {e}"),
                            "scopes are `global-control`, `shard/{namespace}/{id}` or custom names",
                        )
                    })?;
                    if scopes.contains(&scope) {
                        return Err((
                            list.span(),
                            format!("scope {name:?} is listed twice"),
                            "list each scope once",
                        ));
                    }
                    scopes.push(scope);
                }
                scopes
            }
        };
        let ttl = checked_ttl(
            self.ttl.as_ref(),
            DEFAULT_LEASE_TTL,
            whole.clone(),
            "write e.g. ttl = \"3s\"",
        )?;
        let contenders = self
            .contenders
            .as_ref()
            .map_or(NodeSelector::Count(3), |c| *c.get_ref());
        if matches!(contenders, NodeSelector::Percent(_)) || contenders.is_lease_role() {
            let span = self.contenders.as_ref().map_or(whole, Spanned::span);
            return Err((
                span,
                format!("contenders = \"{contenders}\" is not a count or an index selector"),
                "\"3\" means the 3 nodes right after the voters; \"0..3\" names indices",
            ));
        }
        let max_clock_skew = self.max_clock_skew.as_ref().map_or(0.0, |m| *m.get_ref());
        if !(0.0..=0.9).contains(&max_clock_skew) {
            let span = self.max_clock_skew.as_ref().map_or(whole, Spanned::span);
            return Err((
                span,
                format!("max_clock_skew = {max_clock_skew} is outside 0.0..=0.9"),
                "it is the largest deviation of a clock rate from 1.0, e.g. 0.5",
            ));
        }
        Ok(LeaseSpec {
            voters,
            scopes,
            ttl,
            contenders,
            max_clock_skew,
            span: whole,
        })
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTopology {
    nodes: NodeCount,
    #[serde(default)]
    profile: Profile,
    #[serde(default)]
    regions: Regions,
    #[serde(default)]
    spares: Option<Spanned<u32>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, default)]
struct RawNetwork {
    latency: DurationStr,
    jitter: DurationStr,
    inter_region_latency: DurationStr,
    loss: Probability,
    duplicate: Probability,
    reorder: Probability,
    burst: Option<RawBurst>,
}

impl Default for RawNetwork {
    fn default() -> Self {
        let d = NetworkSpec::default();
        Self {
            latency: DurationStr(d.latency),
            jitter: DurationStr(d.jitter),
            inter_region_latency: DurationStr(d.inter_region_latency),
            loss: Probability(d.loss),
            duplicate: Probability(d.duplicate),
            reorder: Probability(d.reorder),
            burst: None,
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawBurst {
    enter: Probability,
    leave: Probability,
    loss: Probability,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRun {
    duration: DurationStr,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, default)]
struct RawWorkload {
    metadata_updates_per_s: Rate,
    metadata_value_bytes: Spanned<Bytes>,
}

impl Default for RawWorkload {
    fn default() -> Self {
        let d = WorkloadSpec::default();
        Self {
            metadata_updates_per_s: Rate(d.metadata_updates_per_s),
            metadata_value_bytes: Spanned::new(0..0, Bytes(d.metadata_value_bytes)),
        }
    }
}

#[derive(Deserialize, Clone, Copy, PartialEq, Eq, Debug)]
#[serde(rename_all = "lowercase")]
enum ActionName {
    Crash,
    Restart,
    Partition,
    Heal,
    Loss,
    Pause,
    Skew,
    Leave,
    Metadata,
    Transfer,
    Join,
    Drain,
    Byzantine,
    Plan,
}

impl ActionName {
    fn as_str(self) -> &'static str {
        match self {
            Self::Crash => "crash",
            Self::Restart => "restart",
            Self::Partition => "partition",
            Self::Heal => "heal",
            Self::Loss => "loss",
            Self::Pause => "pause",
            Self::Skew => "skew",
            Self::Leave => "leave",
            Self::Metadata => "metadata",
            Self::Transfer => "transfer",
            Self::Join => "join",
            Self::Drain => "drain",
            Self::Byzantine => "byzantine",
            Self::Plan => "plan",
        }
    }

    /// The keys (besides `at`, `action`, `count`, `every`, `jitter`) this action accepts.
    fn keys(self) -> &'static [&'static str] {
        match self {
            Self::Crash => &["nodes", "restart_after"],
            Self::Restart | Self::Leave | Self::Join | Self::Drain => &["nodes"],
            Self::Partition => &["split", "groups", "one_way", "heal_after"],
            Self::Heal => &[],
            Self::Loss => &["rate", "for"],
            Self::Pause => &["nodes", "for"],
            Self::Skew => &["nodes", "rate", "for"],
            Self::Metadata => &["nodes", "key", "value_bytes", "delete", "rate"],
            Self::Transfer => &["scope"],
            Self::Byzantine => &["attacks"],
            Self::Plan => &["plan"],
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFault {
    at: DurationStr,
    action: Spanned<ActionName>,
    count: Option<Spanned<u32>>,
    every: Option<Spanned<DurationStr>>,
    jitter: Option<Spanned<DurationStr>>,
    nodes: Option<Spanned<NodeSelector>>,
    restart_after: Option<Spanned<DurationStr>>,
    split: Option<Spanned<Probability>>,
    groups: Option<Spanned<Vec<NodeSelector>>>,
    one_way: Option<Spanned<bool>>,
    heal_after: Option<Spanned<DurationStr>>,
    rate: Option<Spanned<f64>>,
    #[serde(rename = "for")]
    duration: Option<Spanned<DurationStr>>,
    key: Option<Spanned<String>>,
    value_bytes: Option<Spanned<Bytes>>,
    delete: Option<Spanned<bool>>,
    scope: Option<Spanned<String>>,
    attacks: Option<Spanned<Vec<Attack>>>,
    plan: Option<Spanned<meshkit::diag::fault::RawFaultPlan>>,
}

type FieldError = (Range<usize>, String, &'static str);

impl RawFault {
    fn validate(self) -> Result<FaultSpec, FieldError> {
        let action = *self.action.get_ref();
        let action_span = self.action.span();
        let name = action.as_str();
        let allowed = action.keys();
        let keys_hint = || -> &'static str {
            match action {
                ActionName::Crash => "crash takes: nodes, restart_after",
                ActionName::Restart => "restart takes: nodes",
                ActionName::Leave => "leave takes: nodes",
                ActionName::Partition => "partition takes: split or groups, one_way, heal_after",
                ActionName::Heal => "heal takes no keys besides at, count, every, jitter",
                ActionName::Loss => "loss takes: rate, for",
                ActionName::Pause => "pause takes: nodes, for",
                ActionName::Skew => "skew takes: nodes, rate, for",
                ActionName::Metadata => {
                    "metadata takes: nodes, key, value_bytes or delete = true, rate"
                }
                ActionName::Transfer => "transfer takes: scope (needs a [leases] section)",
                ActionName::Join => "join takes: nodes (index selectors; needs [shards])",
                ActionName::Drain => "drain takes: nodes (needs [shards])",
                ActionName::Byzantine => {
                    "byzantine takes: attacks (raft-commit, timeout-now, higher-term, left, meta, \
                     phantoms, garbage)"
                }
                ActionName::Plan => {
                    "plan takes: plan = { duration = \"20s\", selector = ..., fault = { kind = \
                     ... } } (docs/diagnostics.md)"
                }
            }
        };
        let present: [(&str, Option<Range<usize>>); 14] = [
            ("nodes", self.nodes.as_ref().map(Spanned::span)),
            (
                "restart_after",
                self.restart_after.as_ref().map(Spanned::span),
            ),
            ("split", self.split.as_ref().map(Spanned::span)),
            ("groups", self.groups.as_ref().map(Spanned::span)),
            ("one_way", self.one_way.as_ref().map(Spanned::span)),
            ("heal_after", self.heal_after.as_ref().map(Spanned::span)),
            ("rate", self.rate.as_ref().map(Spanned::span)),
            ("for", self.duration.as_ref().map(Spanned::span)),
            ("key", self.key.as_ref().map(Spanned::span)),
            ("value_bytes", self.value_bytes.as_ref().map(Spanned::span)),
            ("delete", self.delete.as_ref().map(Spanned::span)),
            ("scope", self.scope.as_ref().map(Spanned::span)),
            ("attacks", self.attacks.as_ref().map(Spanned::span)),
            ("plan", self.plan.as_ref().map(Spanned::span)),
        ];
        for (key, span) in &present {
            if let Some(span) = span
                && !allowed.contains(key)
            {
                return Err((
                    span.clone(),
                    format!("`{key}` does not apply to action `{name}`"),
                    keys_hint(),
                ));
            }
        }
        let need = |key: &str| -> FieldError {
            (
                action_span.clone(),
                format!("action `{name}` needs `{key}`"),
                keys_hint(),
            )
        };
        let nodes = || {
            self.nodes
                .as_ref()
                .map(|s| *s.get_ref())
                .ok_or_else(|| need("nodes"))
        };
        let dur = |d: &Option<Spanned<DurationStr>>| d.as_ref().map(|s| s.get_ref().0);

        let count = self.count.as_ref().map_or(1, |c| *c.get_ref());
        if let Some(c) = &self.count
            && !(1..=MAX_FAULT_OCCURRENCES).contains(c.get_ref())
        {
            return Err((
                c.span(),
                format!("count must be in 1..={MAX_FAULT_OCCURRENCES}"),
                "count is how many times the fault fires",
            ));
        }
        let mut every = dur(&self.every);
        let rate_span = self.rate.as_ref().map(Spanned::span);
        let rate = self.rate.as_ref().map(|r| *r.get_ref());

        let action_spec = match action {
            ActionName::Crash => FaultAction::Crash {
                nodes: nodes()?,
                restart_after: dur(&self.restart_after),
            },
            ActionName::Restart => FaultAction::Restart { nodes: nodes()? },
            ActionName::Leave => FaultAction::Leave { nodes: nodes()? },
            ActionName::Join => FaultAction::Join { nodes: nodes()? },
            ActionName::Drain => FaultAction::Drain { nodes: nodes()? },
            ActionName::Heal => FaultAction::Heal,
            ActionName::Plan => {
                let raw = self.plan.as_ref().ok_or_else(|| need("plan"))?;
                let plan = meshkit::diag::fault::FaultPlan::try_from(raw.get_ref().clone())
                    .map_err(|e| (raw.span(), format!("plan: {e}"), keys_hint()))?;
                // A real-node fault (transport downgrade, certificate expiry) is kept: the
                // same file drives real nodes, and here the report lists it as not modelled.
                // A membership surge is checked against `[topology] spares` once every fault
                // is parsed.
                FaultAction::Plan(plan)
            }
            ActionName::Byzantine => {
                let attacks = match &self.attacks {
                    None => Attack::ALL.to_vec(),
                    Some(list) => {
                        let mut sorted = list.get_ref().clone();
                        sorted.sort_unstable();
                        sorted.dedup();
                        if sorted.is_empty() || sorted.len() != list.get_ref().len() {
                            return Err((
                                list.span(),
                                "attacks must name at least one attack, each once".to_owned(),
                                keys_hint(),
                            ));
                        }
                        list.get_ref().clone()
                    }
                };
                FaultAction::Byzantine { attacks }
            }
            ActionName::Transfer => FaultAction::Transfer {
                scope: match &self.scope {
                    None => None,
                    Some(name) => Some(Scope::new(name.get_ref()).map_err(|e| {
                        (
                            name.span(),
                            format!("scope {:?}: {e}", name.get_ref()),
                            "name one of the [leases] scopes",
                        )
                    })?),
                },
            },
            ActionName::Partition => {
                let shape = match (&self.split, &self.groups) {
                    (Some(s), None) => {
                        let f = s.get_ref().0;
                        if f <= 0.0 || f >= 1.0 {
                            return Err((
                                s.span(),
                                "split must be strictly between 0.0 and 1.0".to_owned(),
                                "split is the share of nodes in the first group, e.g. 0.5",
                            ));
                        }
                        PartitionShape::Split(f)
                    }
                    (None, Some(g)) => {
                        let groups = g.get_ref();
                        if groups.is_empty()
                            || groups.len() > MAX_PARTITION_GROUPS
                            || groups.iter().any(|s| !s.is_indexed() && !s.is_lease_role())
                        {
                            return Err((
                                g.span(),
                                format!(
                                    "groups must be a list of 1 to {MAX_PARTITION_GROUPS} index \
                                     selectors"
                                ),
                                "e.g. groups = [\"0..50\", \"50..100\"]; use split for random \
                                 groups",
                            ));
                        }
                        PartitionShape::Groups(groups.clone())
                    }
                    (Some(s), Some(_)) => {
                        return Err((
                            s.span(),
                            "give either `split` or `groups`, not both".to_owned(),
                            keys_hint(),
                        ));
                    }
                    (None, None) => return Err(need("split` or `groups")),
                };
                FaultAction::Partition {
                    shape,
                    one_way: self.one_way.as_ref().is_some_and(|b| *b.get_ref()),
                    heal_after: dur(&self.heal_after),
                }
            }
            ActionName::Loss => {
                let rate = rate.ok_or_else(|| need("rate"))?;
                if !(0.0..=1.0).contains(&rate) {
                    return Err((
                        rate_span.unwrap_or(action_span.clone()),
                        format!("loss rate {rate} is not a probability"),
                        HINT_PROBABILITY,
                    ));
                }
                FaultAction::Loss {
                    rate,
                    duration: dur(&self.duration),
                }
            }
            ActionName::Pause => FaultAction::Pause {
                nodes: nodes()?,
                duration: dur(&self.duration).ok_or_else(|| need("for"))?,
            },
            ActionName::Skew => {
                let rate = rate.ok_or_else(|| need("rate"))?;
                if !(0.01..=100.0).contains(&rate) {
                    return Err((
                        rate_span.unwrap_or(action_span.clone()),
                        format!("clock rate {rate} is outside 0.01..=100"),
                        "rate is local seconds per real second, e.g. 1.5 for a fast clock",
                    ));
                }
                FaultAction::Skew {
                    nodes: nodes()?,
                    rate,
                    duration: dur(&self.duration),
                }
            }
            ActionName::Metadata => {
                let key = self
                    .key
                    .as_ref()
                    .ok_or_else(|| need("key"))?
                    .get_ref()
                    .clone();
                let delete = self.delete.as_ref().is_some_and(|d| *d.get_ref());
                let op = match (&self.value_bytes, delete) {
                    (Some(v), false) => {
                        let value_bytes = v.get_ref().0;
                        if value_bytes > MAX_VALUE_BYTES {
                            return Err((
                                v.span(),
                                format!("value_bytes is larger than {MAX_VALUE_BYTES}"),
                                "the core refuses a metadata value larger than 1,024 bytes",
                            ));
                        }
                        MetadataOp::Set { value_bytes }
                    }
                    (None, true) => MetadataOp::Delete,
                    (Some(v), true) => {
                        return Err((
                            v.span(),
                            "give either `value_bytes` or `delete = true`, not both".to_owned(),
                            keys_hint(),
                        ));
                    }
                    (None, false) => return Err(need("value_bytes` or `delete = true")),
                };
                if let Some(r) = rate {
                    if every.is_some() {
                        return Err((
                            rate_span.unwrap_or(action_span.clone()),
                            "give either `rate` or `every`, not both".to_owned(),
                            keys_hint(),
                        ));
                    }
                    if !(r > 0.0 && r <= 1e6) {
                        return Err((
                            rate_span.unwrap_or(action_span.clone()),
                            format!("rate {r} must be in (0, 1e6] occurrences per second"),
                            "rate is how many times per second the write repeats",
                        ));
                    }
                    every = Some(Duration::from_secs_f64(1.0 / r));
                }
                FaultAction::Metadata {
                    nodes: nodes()?,
                    key,
                    op,
                }
            }
        };
        if count > 1 && every.is_none_or(|e| e.is_zero()) {
            let span = self
                .count
                .as_ref()
                .map_or(action_span.clone(), Spanned::span);
            return Err((
                span,
                "count > 1 needs a non-zero `every`".to_owned(),
                "e.g. count = 5 and every = \"30s\": the fault fires 5 times, 30 s apart",
            ));
        }
        let every = every.unwrap_or(Duration::ZERO);
        let jitter = dur(&self.jitter).unwrap_or(Duration::ZERO);
        if let Some(j) = &self.jitter
            && count > 1
            && jitter >= every
        {
            return Err((
                j.span(),
                "`jitter` must be shorter than `every`".to_owned(),
                "occurrences stay in order: e.g. every = \"20s\" and jitter = \"1s\"",
            ));
        }
        Ok(FaultSpec {
            at: self.at.0,
            count,
            every,
            jitter,
            action: action_spec,
            span: action_span,
        })
    }
}

// ---- Typed scalars with their own error messages (toml attaches the value's span) ------------

/// A duration written as a string with a unit.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct DurationStr(Duration);

impl<'de> Deserialize<'de> for DurationStr {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = DurationStr;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a duration string such as \"500ms\"")
            }
            fn visit_str<E: de::Error>(self, s: &str) -> Result<DurationStr, E> {
                parse_duration(s).map(DurationStr).map_err(E::custom)
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<DurationStr, E> {
                Err(E::custom(format!(
                    "invalid duration {v}: a duration needs a unit"
                )))
            }
            fn visit_f64<E: de::Error>(self, v: f64) -> Result<DurationStr, E> {
                Err(E::custom(format!(
                    "invalid duration {v}: a duration needs a unit"
                )))
            }
        }
        d.deserialize_any(V)
    }
}

/// Parses `"500us"`, `"1.5s"`, `"10m"`: the core's one duration grammar
/// ([`meshkit::config::parse_duration`], exact, no floating point), with its error as text.
pub fn parse_duration(input: &str) -> Result<Duration, String> {
    meshkit::config::parse_duration(input).map_err(|e| e.to_string())
}

/// A probability in `0.0..=1.0`.
#[derive(Clone, Copy, Debug, PartialEq)]
struct Probability(f64);

impl<'de> Deserialize<'de> for Probability {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let v = f64::deserialize(d)?;
        if (0.0..=1.0).contains(&v) {
            Ok(Self(v))
        } else {
            Err(de::Error::custom(format!(
                "{v} is not a probability (0.0 to 1.0)"
            )))
        }
    }
}

/// A non-negative finite rate.
#[derive(Clone, Copy, Debug, PartialEq)]
struct Rate(f64);

impl<'de> Deserialize<'de> for Rate {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let v = f64::deserialize(d)?;
        if v.is_finite() && (0.0..=1e6).contains(&v) {
            Ok(Self(v))
        } else {
            Err(de::Error::custom(format!(
                "rate {v} must be in 0..=1e6 per second"
            )))
        }
    }
}

/// A byte count.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Bytes(u32);

impl<'de> Deserialize<'de> for Bytes {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        u32::deserialize(d).map(Self)
    }
}

/// A node count in `2..=MAX_NODES`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct NodeCount(u32);

impl<'de> Deserialize<'de> for NodeCount {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let v = u32::deserialize(d)?;
        if (2..=MAX_NODES).contains(&v) {
            Ok(Self(v))
        } else {
            Err(de::Error::custom(format!(
                "nodes = {v} is outside 2..={MAX_NODES}"
            )))
        }
    }
}

/// A region count of at least 1.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Regions(u32);

impl Default for Regions {
    fn default() -> Self {
        Self(1)
    }
}

impl<'de> Deserialize<'de> for Regions {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let v = u32::deserialize(d)?;
        if (1..=256).contains(&v) {
            Ok(Self(v))
        } else {
            Err(de::Error::custom(format!(
                "regions = {v} is outside 1..=256"
            )))
        }
    }
}

impl<'de> Deserialize<'de> for NodeSelector {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = NodeSelector;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a node selector string such as \"3\", \"10%\", \"0..10\", \"node:4\"")
            }
            fn visit_str<E: de::Error>(self, s: &str) -> Result<NodeSelector, E> {
                s.parse().map_err(E::custom)
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<NodeSelector, E> {
                Err(E::custom(format!(
                    "invalid node selector {v}: selectors are strings, write \"{v}\""
                )))
            }
        }
        d.deserialize_any(V)
    }
}

impl core::str::FromStr for NodeSelector {
    type Err = String;

    fn from_str(input: &str) -> Result<Self, String> {
        let bad = |why: &str| format!("invalid node selector \"{input}\": {why}");
        let s = input.trim();
        let int = |t: &str| {
            t.trim()
                .parse::<u32>()
                .map_err(|_| bad("expected a whole number"))
        };
        if let Some(i) = s.strip_prefix("node:") {
            return Ok(Self::Index(int(i)?));
        }
        if s == "holder" {
            return Ok(Self::Holder);
        }
        if s == "raft-leader" {
            return Ok(Self::RaftLeader);
        }
        if let Some((a, b)) = s.split_once("..") {
            let (start, end) = (int(a)?, int(b)?);
            if start >= end {
                return Err(bad("empty range (the end is excluded)"));
            }
            return Ok(Self::Range { start, end });
        }
        if let Some(p) = s.strip_suffix('%') {
            let p: f64 = p
                .trim()
                .parse()
                .map_err(|_| bad("expected a number before %"))?;
            if !(p > 0.0 && p <= 100.0) {
                return Err(bad("a share must be in (0, 100]%"));
            }
            return Ok(Self::Percent(p));
        }
        let n = int(s)?;
        if n == 0 {
            return Err(bad("a count must be at least 1"));
        }
        Ok(Self::Count(n))
    }
}

/// A `ttl` key (or `default`) within the lease configuration's range; the error points at the
/// key, or at the whole section when the key is absent.
fn checked_ttl(
    ttl: Option<&Spanned<DurationStr>>,
    default: Duration,
    whole: Range<usize>,
    hint: &'static str,
) -> Result<Duration, FieldError> {
    let value = ttl.map_or(default, |t| t.get_ref().0);
    let config = LeaseConfig::default();
    if value < config.min_ttl() || value > config.max_ttl() {
        return Err((
            ttl.map_or(whole, Spanned::span),
            format!(
                "ttl {value:?} is outside the lease configuration's {:?}..={:?}",
                config.min_ttl(),
                config.max_ttl()
            ),
            hint,
        ));
    }
    Ok(value)
}

#[cfg(test)]
mod tests {
    use super::*;

    const MINIMAL: &str = "name = \"t\"\n[topology]\nnodes = 10\n[run]\nduration = \"10s\"\n";

    #[test]
    fn minimal_scenario_takes_defaults() {
        let s = Scenario::parse(MINIMAL, "t.toml").unwrap();
        assert_eq!(s.nodes(), 10);
        assert_eq!(s.profile(), Profile::Lan);
        assert_eq!(s.duration(), Duration::from_secs(10));
        assert_eq!(s.network(), &NetworkSpec::default());
        assert!(s.faults().is_empty());
    }

    #[test]
    fn durations_parse_exactly() {
        assert_eq!(parse_duration("500us").unwrap(), Duration::from_micros(500));
        assert_eq!(parse_duration("1.5s").unwrap(), Duration::from_millis(1500));
        assert_eq!(parse_duration("0.1s").unwrap(), Duration::from_millis(100));
        assert_eq!(parse_duration("10m").unwrap(), Duration::from_secs(600));
        assert_eq!(parse_duration("1h").unwrap(), Duration::from_secs(3600));
        assert_eq!(parse_duration("7ns").unwrap(), Duration::from_nanos(7));
        for bad in ["", "5", "s", "5x", "1.2.3s", "-1s", "99999999999999999999h"] {
            assert!(parse_duration(bad).is_err(), "{bad:?} should be refused");
        }
    }

    #[test]
    fn an_autoscale_section_is_read_with_defaults_and_its_hysteresis_checked() {
        let ok = format!("{MINIMAL}[autoscale]\nburst_at = \"2s\"\nburst_items = 100\n");
        let s = Scenario::parse(&ok, "t.toml").unwrap();
        let a = s.autoscale().expect("read");
        assert_eq!(
            (a.queue.as_str(), a.min_workers, a.max_workers),
            ("jobs", 1, 4)
        );
        assert!(a.scale_in_after >= a.scale_out_after);
        for (bad, says) in [
            ("min_workers = 5\nmax_workers = 2\n", "min <= max"),
            ("max_workers = 17\n", "min <= max"),
            (
                "scale_out_after = \"5s\"\nscale_in_after = \"2s\"\n",
                "at least scale_out_after",
            ),
            ("work = \"5s\"\n", "work"),
            ("queue = \"no/such\"\n", "not a shard namespace"),
            ("scale_in_s_max = -1.0\n", "positive"),
        ] {
            let text = format!("{ok}{bad}");
            let e = Scenario::parse(&text, "t.toml").unwrap_err().to_string();
            assert!(e.contains(says), "{bad:?}: {e}");
        }
        let late = format!("{MINIMAL}[autoscale]\nburst_at = \"20s\"\nburst_items = 100\n");
        let e = Scenario::parse(&late, "t.toml").unwrap_err().to_string();
        assert!(
            e.contains("inside the run") || e.contains("the run lasts"),
            "{e}"
        );
    }

    #[test]
    fn a_negative_duration_says_so() {
        let e = parse_duration("-1s").unwrap_err();
        assert!(e.contains("cannot be negative"), "{e}");
    }

    #[test]
    fn metadata_values_are_bounded_by_the_core_s_limit() {
        let write = "[[fault]]\nat = \"1s\"\naction = \"metadata\"\nnodes = \"1\"\nkey = \"k\"\n";
        let at_bound = format!("{MINIMAL}{write}value_bytes = 1024\n");
        Scenario::parse(&at_bound, "t.toml").unwrap();
        let over = format!("{MINIMAL}{write}value_bytes = 1025\n");
        let e = Scenario::parse(&over, "t.toml").unwrap_err();
        assert!(e.message.contains("larger than 1024"), "{e}");
        assert_eq!(e.line, 11, "points at value_bytes: {e}");
        let workload = MINIMAL.replace(
            "[run]",
            "[workload]\nmetadata_updates_per_s = 1.0\nmetadata_value_bytes = 2000\n[run]",
        );
        let e = Scenario::parse(&workload, "t.toml").unwrap_err();
        assert!(e.message.contains("larger than 1024"), "{e}");
    }

    #[test]
    fn a_fault_due_after_the_run_ends_is_refused() {
        let at = |t: &str| {
            format!("{MINIMAL}[[fault]]\nat = \"{t}\"\naction = \"crash\"\nnodes = \"1\"\n")
        };
        Scenario::parse(&at("10s"), "t.toml").unwrap();
        let e = Scenario::parse(&at("11s"), "t.toml").unwrap_err();
        assert!(e.message.contains("after the run ends"), "{e}");
        assert_eq!(e.line, 8, "points at the fault: {e}");
    }

    #[test]
    fn a_lease_group_too_large_for_the_run_points_at_leases() {
        let text = MINIMAL.replace("nodes = 10", "nodes = 4")
            + "[leases]\nvoters = 3\ncontenders = \"2\"\n";
        let e = Scenario::parse(&text, "t.toml").unwrap_err();
        assert!(e.message.contains("need 5 nodes"), "{e}");
        assert_eq!(e.line, 6, "points at [leases], not 1:1: {e}");
    }

    #[test]
    fn selectors_parse() {
        assert_eq!("3".parse::<NodeSelector>().unwrap(), NodeSelector::Count(3));
        assert_eq!(
            "10%".parse::<NodeSelector>().unwrap(),
            NodeSelector::Percent(10.0)
        );
        assert_eq!(
            "0..10".parse::<NodeSelector>().unwrap(),
            NodeSelector::Range { start: 0, end: 10 }
        );
        assert_eq!(
            "node:4".parse::<NodeSelector>().unwrap(),
            NodeSelector::Index(4)
        );
        for bad in ["0", "abc", "5..5", "0%", "101%", "node:x", "-1"] {
            assert!(
                bad.parse::<NodeSelector>().is_err(),
                "{bad:?} should be refused"
            );
        }
    }

    #[test]
    fn fault_jitter_is_parsed_and_must_stay_shorter_than_every() {
        let crash = "[[fault]]\nat = \"2s\"\naction = \"crash\"\nnodes = \"1\"\ncount = 3\n";
        let ok = format!("{MINIMAL}{crash}every = \"2s\"\njitter = \"500ms\"\n");
        let s = Scenario::parse(&ok, "t.toml").unwrap();
        assert_eq!(s.faults()[0].jitter, Duration::from_millis(500));
        let bad = format!("{MINIMAL}{crash}every = \"2s\"\njitter = \"2s\"\n");
        let e = Scenario::parse(&bad, "t.toml").unwrap_err().to_string();
        assert!(e.contains("`jitter` must be shorter than `every`"), "{e}");
    }

    #[test]
    fn unknown_key_names_file_line_and_hint() {
        let text = format!("{MINIMAL}[network]\nlatency = \"1ms\"\nlatncy = \"2ms\"\n");
        let e = Scenario::parse(&text, "scenarios/x.toml").unwrap_err();
        assert_eq!((e.line, e.column), (8, 1), "{e}");
        let shown = e.to_string();
        assert!(shown.starts_with("scenarios/x.toml:8:1: "), "{shown}");
        assert!(shown.contains("latncy"), "{shown}");
        assert!(shown.contains("hint: "), "{shown}");
    }

    /// A `[shards]` namespace that no lease scope could hold is refused at its key, not run
    /// with shards nobody can lease.
    #[test]
    fn a_shard_namespace_outside_the_scope_grammar_is_refused_at_its_key() {
        let shards = |namespace: &str| {
            format!(
                "{MINIMAL}[leases]\nvoters = 3\n[shards]\ncount = 4\nnamespace = \"{namespace}\"\n"
            )
        };
        assert!(Scenario::parse(&shards("orders-1"), "s.toml").is_ok());
        for bad in ["-orders", "or.ders", ""] {
            let e = Scenario::parse(&shards(bad), "s.toml").unwrap_err();
            assert_eq!(e.line, 10, "{e}");
            assert!(
                e.message
                    .starts_with(&format!("namespace {bad:?}: shard namespace")),
                "{e}"
            );
        }
    }

    #[test]
    fn bad_duration_names_file_line_and_hint() {
        let text = "name = \"t\"\n[topology]\nnodes = 10\n[run]\nduration = \"10 parsecs\"\n";
        let e = Scenario::parse(text, "d.toml").unwrap_err();
        assert_eq!(e.line, 5, "{e}");
        let shown = e.to_string();
        assert!(shown.starts_with("d.toml:5:"), "{shown}");
        assert!(shown.contains("duration"), "{shown}");
        assert!(
            shown.contains("hint: write durations as strings"),
            "{shown}"
        );
    }

    #[test]
    fn fault_keys_are_checked_against_the_action() {
        let text = format!(
            "{MINIMAL}[[fault]]\nat = \"1s\"\naction = \"crash\"\nnodes = \"1\"\nrate = 0.5\n"
        );
        let e = Scenario::parse(&text, "f.toml").unwrap_err();
        assert_eq!(e.line, 10, "{e}");
        assert!(
            e.message
                .contains("`rate` does not apply to action `crash`"),
            "{e}"
        );

        let text = format!("{MINIMAL}[[fault]]\nat = \"1s\"\naction = \"pause\"\nnodes = \"1\"\n");
        let e = Scenario::parse(&text, "f.toml").unwrap_err();
        assert_eq!(e.line, 8, "{e}");
        assert!(e.message.contains("needs `for`"), "{e}");

        let text =
            format!("{MINIMAL}[[fault]]\nat = \"1s\"\naction = \"crash\"\nnodes = \"lots\"\n");
        let e = Scenario::parse(&text, "f.toml").unwrap_err();
        assert_eq!(e.line, 9, "{e}");
        assert!(e.hint.contains("node selectors"), "{e}");
    }

    #[test]
    fn index_selectors_must_fit_the_node_count() {
        let text = format!(
            "{MINIMAL}[[fault]]\nat = \"1s\"\naction = \"partition\"\ngroups = [\"0..5\", \"5..12\"]\n"
        );
        let e = Scenario::parse(&text, "p.toml").unwrap_err();
        assert!(e.message.contains("beyond the 10 nodes"), "{e}");
        let text = format!(
            "{MINIMAL}[[fault]]\nat = \"1s\"\naction = \"partition\"\ngroups = [\"0..5\", \"4..10\"]\n"
        );
        let e = Scenario::parse(&text, "p.toml").unwrap_err();
        assert!(e.message.contains("two partition groups"), "{e}");
    }
}
