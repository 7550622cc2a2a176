//! SWIM membership with the Lifeguard refinements, as a sans-IO state machine.
//!
//! [`Membership`] is one node's view of the mesh. It detects failures by probing (SWIM §4: direct
//! probe, indirect probe through k members, suspicion refuted by incarnation numbers), adapts to
//! its own health (Lifeguard: local health multiplier, confirmation-scaled suspicion timeouts,
//! nacks), spreads updates by piggybacking them on every datagram with a retransmit budget of
//! `mult * log(N)`, and repairs whatever gossip missed by periodic anti-entropy (bucket digests,
//! then the differing buckets' records). Each member publishes versioned key/value metadata.
//!
//! # Driving
//!
//! A driver (the simulator, the tokio runtime) owns time, the network and the seed:
//!
//! * **Inputs**: [`handle_datagram`](Membership::handle_datagram) for every datagram received,
//!   [`handle_timeout`](Membership::handle_timeout) when [`poll_timeout`](Membership::poll_timeout)
//!   comes due (spurious calls are no-ops), and the commands
//!   [`handle_join`](Membership::handle_join), [`set_metadata`](Membership::set_metadata),
//!   [`delete_metadata`](Membership::delete_metadata), [`leave`](Membership::leave) and
//!   [`force_leave`](Membership::force_leave).
//! * **Outputs**, drained after every input in this order:
//!   [`poll_transmit`](Membership::poll_transmit) until `None` (send each datagram),
//!   [`poll_event`](Membership::poll_event) until `None` (tell the application), then
//!   [`poll_timeout`](Membership::poll_timeout) (arm one timer).
//!
//! ```
//! use meshkit::{Instant, Incarnation, NodeId};
//! use meshkit::config::{Config, Profile};
//! use meshkit::membership::Membership;
//!
//! let now = Instant::ZERO;
//! let mut a = Membership::new(Config::from_profile(Profile::Lan), NodeId::new(1), Incarnation::new(1), 7, now);
//! let mut b = Membership::new(Config::from_profile(Profile::Lan), NodeId::new(2), Incarnation::new(1), 8, now);
//! a.handle_join(now, &[NodeId::new(2)]);
//! // Shuttle datagrams until both are quiet (a real driver loops forever and sleeps on timers).
//! let mut buf = Vec::new();
//! for _ in 0..10 {
//!     while let Some(t) = a.poll_transmit(now, &mut buf) { b.handle_datagram(now, a.local_id(), &buf[..t.len]).unwrap(); }
//!     while let Some(t) = b.poll_transmit(now, &mut buf) { a.handle_datagram(now, b.local_id(), &buf[..t.len]).unwrap(); }
//! }
//! assert_eq!(a.alive_count(), 2);
//! assert_eq!(b.alive_count(), 2);
//! ```

mod anti_entropy;
mod claims;
mod dissemination;
mod health;
mod intmath;
mod member;
mod metadata;
mod metadata_sync;
mod probe;
mod state_log;
mod suspicion;
mod timer;

use alloc::collections::{BTreeMap, BTreeSet, VecDeque};
use core::fmt;

use thiserror::Error;

pub use self::claims::{
    MAX_INCARNATION_STEP, MAX_UNVERIFIED_MEMBERS, MAX_UNVERIFIED_PER_INTRODUCER,
};
use self::dissemination::Broadcasts;
use self::health::LocalHealth;
use self::member::{Member, MemberTable};
use self::metadata::Transfers;
pub use self::metadata::{Metadata, MetadataError};
pub use self::state_log::{STATE_LOG_BURST, STATE_LOG_WINDOW};

use self::probe::{Probe, Relay};
use self::suspicion::Suspicion;
use self::timer::{Timer, TimerTable};
use crate::config::Config;
use crate::id::{Incarnation, MetaVersion, NodeId};
use crate::rng::NodeRng;
use crate::time::{Duration, Instant};
use crate::wire::{self, DecodeError, Message, Update};

/// Datagrams waiting in the outbox; past this the newest are dropped and counted.
pub const MAX_OUTBOX_DATAGRAMS: usize = 16_384;
/// Events waiting for the driver; past this the oldest are dropped and counted.
pub const MAX_PENDING_EVENTS: usize = 65_536;
/// Period of the maintenance timer (tombstone GC, forgetting long-dead members).
const MAINTENANCE_INTERVAL: Duration = Duration::from_secs(5);
/// How long after `handle_join` a seed's answer is taken as an introduction of the whole mesh.
const JOIN_ANSWER_WINDOW: Duration = Duration::from_secs(10);
/// How long after `handle_join` anti-entropy runs every [`JOIN_SYNC_INTERVAL`] instead of its
/// configured interval.
const JOIN_SYNC_WINDOW: Duration = Duration::from_secs(10);
/// Anti-entropy's period during [`JOIN_SYNC_WINDOW`]. A member heard of only through a relay is
/// not passed on until it is heard from directly (a phantom must not spread by gossip), so a
/// new member's `Alive` is relayed only by the few it reached itself, and when many start at
/// once a member or two can miss one of them until a periodic exchange (every 30 s) repairs
/// it: 6.7-18 s to a full view at 64 real processes started together. A joining node
/// exchanging with a random member every second for its first seconds pulls what it missed
/// and pushes itself, on its own word, to each member it exchanges with: 1.3-3.1 s then
/// (docs/benchmarks.md, "Side by side on an idle machine, with the self-checks counted apart").
const JOIN_SYNC_INTERVAL: Duration = Duration::from_secs(1);
/// Seeds one join asks at most (each gets one request; their answers are trusted).
pub const MAX_JOIN_SEEDS: usize = 64;

/// A member's state, as SWIM defines it plus a graceful leave.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Debug)]
pub enum MemberState {
    /// Answers probes, or has not been suspected since it last refuted.
    Alive,
    /// Missed a probe; declared dead unless it refutes before the suspicion times out.
    Suspect,
    /// Declared dead; still probed now and then so a healed partition brings it back.
    Dead,
    /// Left gracefully.
    Left,
}

impl fmt::Display for MemberState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Alive => "alive",
            Self::Suspect => "suspect",
            Self::Dead => "dead",
            Self::Left => "left",
        })
    }
}

/// What the host application should learn.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Event {
    /// A member changed state (or was learned, when `from` is `None`).
    MemberStateChanged {
        /// The member.
        node: NodeId,
        /// Its incarnation now.
        incarnation: Incarnation,
        /// The state before; `None` for a newly learned member.
        from: Option<MemberState>,
        /// The state now.
        to: MemberState,
        /// Who raised the suspicion or declared the death (this node itself for its own probes),
        /// or who said the member left (the member itself, or this node for a
        /// [`force_leave`](Membership::force_leave)).
        by: Option<NodeId>,
    },
    /// This node's copy of a member's metadata (or its own metadata) changed.
    MetadataChanged {
        /// Whose metadata.
        node: NodeId,
        /// The version now held.
        version: MetaVersion,
    },
    /// This node refuted a suspicion or death claim about itself.
    Refuted {
        /// The incarnation it now announces.
        incarnation: Incarnation,
    },
}

/// A datagram written to the caller's buffer by [`Membership::poll_transmit`] (the core's one
/// [`Transmit`](crate::Transmit) type).
pub use crate::transmit::Transmit;

/// A read-only view of one member.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MemberView {
    /// The member.
    pub id: NodeId,
    /// Its incarnation.
    pub incarnation: Incarnation,
    /// Its state.
    pub state: MemberState,
    /// The version of its metadata this node holds.
    pub meta_version: MetaVersion,
    /// Smoothed round-trip time of direct probes, once measured.
    pub rtt: Option<Duration>,
    /// When this node last saw it change state.
    pub last_change: Instant,
}

/// Why a datagram was refused. The node's state is unchanged.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum DatagramError {
    /// The bytes are not a valid datagram (a peer or network fault).
    #[error(transparent)]
    Decode(#[from] DecodeError),
    /// The datagram claims a sender other than the one the transport authenticated.
    #[error("datagram claims sender {claimed} but came from {actual}")]
    SenderMismatch {
        /// The sender written in the datagram.
        claimed: NodeId,
        /// The sender the driver saw.
        actual: NodeId,
    },
}

/// Why [`Membership::force_leave`] refused: the caller's (the operator's) request does not fit
/// this node's view. Nothing changed.
#[derive(Debug, Error, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum ForceLeaveError {
    /// The member named is this node: a node leaves on its own ([`Membership::leave`]).
    #[error("node {node} is the node asked: it leaves with `leave`, not by force")]
    OwnNode {
        /// This node.
        node: NodeId,
    },
    /// This node does not know the member (never learnt, or already forgotten).
    #[error("node {node} is not a member this node knows")]
    UnknownMember {
        /// The member named.
        node: NodeId,
    },
    /// This node does not hold the member dead: it may still answer, and only its own word (or
    /// this node's own failure detector) may take it out of the mesh.
    #[error(
        "node {node} is {state} here, not dead: only a member this node holds dead can be forced to leave"
    )]
    NotDead {
        /// The member named.
        node: NodeId,
        /// Its state at this node.
        state: MemberState,
    },
}

/// What [`Membership::force_leave`] did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ForceLeave {
    /// The member was dead here and is now left.
    Left {
        /// Its incarnation (unchanged).
        incarnation: Incarnation,
    },
    /// The member had left already (its own word, or an earlier force-leave): nothing changed.
    AlreadyLeft,
}

/// Counters for metrics; they only grow.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Stats {
    /// Direct probes started.
    pub probes: u64,
    /// Probes that got no ack, direct or indirect.
    pub probes_failed: u64,
    /// Indirect probe requests sent.
    pub indirect_probes: u64,
    /// Suspicions this node raised from its own failed probes.
    pub suspicions_raised: u64,
    /// Suspicions this node ended with its own verdict: the member was still suspect when the
    /// suspicion ran out, so this node declared it dead. Beside [`Stats::suspicions_raised`]
    /// and [`Stats::refutations`] it tells a crash (suspicions that end dead) from flapping
    /// (suspicions that end refuted). A member declared dead on another node's word is not
    /// counted here.
    pub suspicions_confirmed: u64,
    /// Refutations of claims about this node.
    pub refutations: u64,
    /// Anti-entropy exchanges this node started.
    pub syncs: u64,
    /// Datagrams sent.
    pub datagrams_sent: u64,
    /// Bytes sent.
    pub bytes_sent: u64,
    /// Datagrams received and decoded.
    pub datagrams_received: u64,
    /// Datagrams refused (undecodable, or a sender mismatch).
    pub datagrams_refused: u64,
    /// Datagrams dropped because the outbox was full.
    pub outbox_dropped: u64,
    /// Events dropped because the driver did not drain them.
    pub events_dropped: u64,
    /// Claims (piggybacked updates or anti-entropy records) refused: the sender claimed an
    /// incarnation more than [`MAX_INCARNATION_STEP`] above the one held, or claimed that a
    /// member failed (`Suspect`, `Dead`, a relayed `Left`) without being a member this node
    /// knows. The rest of the datagram still applies. A member's death claim is not counted
    /// here: it is applied as a suspicion, which the member refutes if it is alive.
    pub claims_refused: u64,
    /// Members a relay tried to introduce past [`MAX_UNVERIFIED_PER_INTRODUCER`] or
    /// [`MAX_UNVERIFIED_MEMBERS`]; they were not added.
    pub introductions_refused: u64,
    /// Round-trip times of the direct probes acknowledged by their target.
    pub probe_rtt: RttHistogram,
}

/// A histogram of round-trip times with fixed bucket bounds ([`RttHistogram::BOUNDS`]), for a
/// Prometheus histogram: counts per bucket (not cumulative), their sum and count. It only
/// grows, like the other [`Stats`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RttHistogram {
    /// Samples per bucket: `buckets[i]` counts samples `<= BOUNDS[i]` and above the bound
    /// before; the last counts those above every bound.
    pub buckets: [u64; Self::BOUNDS.len() + 1],
    /// Sum of the samples.
    pub sum: Duration,
    /// Number of samples.
    pub count: u64,
}

impl RttHistogram {
    /// Upper bounds of the buckets: from a loopback round trip to a slow WAN one.
    pub const BOUNDS: [Duration; 13] = [
        Duration::from_micros(100),
        Duration::from_micros(250),
        Duration::from_micros(500),
        Duration::from_millis(1),
        Duration::from_micros(2_500),
        Duration::from_millis(5),
        Duration::from_millis(10),
        Duration::from_millis(25),
        Duration::from_millis(50),
        Duration::from_millis(100),
        Duration::from_millis(250),
        Duration::from_millis(500),
        Duration::from_secs(1),
    ];

    /// Counts one sample.
    pub fn record(&mut self, sample: Duration) {
        let bucket = Self::BOUNDS.partition_point(|bound| *bound < sample);
        self.buckets[bucket] += 1;
        self.sum = self.sum.saturating_add(sample);
        self.count += 1;
    }
}

/// A datagram waiting to be encoded: its message, and updates meant for this recipient that ride
/// in front of the piggybacked queue (Lifeguard's "buddy system" tells a suspect it is suspected;
/// a stale claim's sender is told the newer record).
#[derive(Debug)]
struct Outgoing {
    to: NodeId,
    message: Message,
    leading: Vec<Update>,
}

/// Corrections of stale claims sent back for one received datagram, at most.
const MAX_CORRECTIONS_PER_DATAGRAM: usize = 32;

/// One node's SWIM/Lifeguard membership. See the [module docs](self) for how to drive it.
#[derive(Debug)]
pub struct Membership {
    config: Config,
    id: NodeId,
    incarnation: Incarnation,
    own_meta: Metadata,
    left: bool,
    rng: NodeRng,
    members: MemberTable,
    health: LocalHealth,
    broadcasts: Broadcasts,
    suspicions: BTreeMap<NodeId, Suspicion>,
    suspicion_deadlines: BTreeSet<(Instant, NodeId)>,
    /// The last time a member this node had lost contact with (held Dead, or Suspect for
    /// longer than a confirmed suspicion lasts) sent it a datagram (see `note_reconnect`).
    reconnected_at: Option<Instant>,
    /// The probes of the current protocol period: one, or up to
    /// [`MAX_PROBES_PER_PERIOD`](probe::MAX_PROBES_PER_PERIOD) in a mass failure.
    probes: Vec<Probe>,
    relays: BTreeMap<u32, Relay>,
    relay_deadlines: BTreeSet<(Instant, u32)>,
    dead_probes: BTreeMap<u32, (NodeId, Instant)>,
    next_seq: u32,
    transfers: Transfers,
    meta_pulls: BTreeMap<NodeId, Instant>,
    tombstones: VecDeque<(Instant, NodeId, String, u32)>,
    departed: VecDeque<(Instant, NodeId)>,
    /// Unverified members (see `claims::admit`) per introducing relay, and their total.
    unverified: BTreeMap<NodeId, u32>,
    unverified_total: usize,
    /// Seeds asked for the member list by `handle_join`, until their answer window closes:
    /// their answer introduces the mesh to this node (an operator chose them).
    join_seeds: BTreeMap<NodeId, Instant>,
    /// Until when anti-entropy runs every [`JOIN_SYNC_INTERVAL`] (set by `handle_join`).
    join_sync_until: Option<Instant>,
    timers: TimerTable,
    /// When the gossip timer last fired with nothing to send: it is then not re-armed, so an
    /// idle node does not wake every gossip interval, and the first update brings it back on
    /// the same grid of instants (`anchor + k * gossip_interval`) it would have kept ticking
    /// on (see `handle_timeout` and `poll_timeout`).
    gossip_parked: Option<Instant>,
    outbox: VecDeque<Outgoing>,
    /// Newer records for the sender of the datagram being handled (see `correct_stale_claim`).
    corrections: Vec<Update>,
    events: VecDeque<Event>,
    /// The rate limit of the state-change debug lines (see `state_log`).
    state_log: state_log::StateLog,
    stats: Stats,
}

impl Membership {
    /// A node alone in its mesh. `incarnation` is its boot incarnation: a restarted node must use
    /// a higher one than before (the tokio driver uses wall-clock seconds, the simulator counts
    /// restarts), and it is also its metadata epoch. All randomness derives from `seed`.
    pub fn new(
        config: Config,
        id: NodeId,
        incarnation: Incarnation,
        seed: u64,
        now: Instant,
    ) -> Self {
        let mut rng = NodeRng::from_seed(seed);
        let mut timers = TimerTable::default();
        // Spread the first ticks over one period so nodes started together do not probe in step
        // (`d * r / 2^32` in integer nanoseconds: no float rounding in a replay).
        let jitter = |rng: &mut NodeRng, d: Duration| now + intmath::fraction_of(d, rng.next_u32());
        timers.set(
            Timer::ProbePeriod,
            jitter(&mut rng, config.probe_interval()),
        );
        timers.set(Timer::Gossip, jitter(&mut rng, config.gossip_interval()));
        timers.set(
            Timer::AntiEntropy,
            jitter(&mut rng, config.anti_entropy_interval()),
        );
        timers.set(
            Timer::DeadProbe,
            jitter(&mut rng, config.dead_probe_interval()),
        );
        timers.set(Timer::Maintenance, jitter(&mut rng, MAINTENANCE_INTERVAL));
        let mut node = Self {
            health: LocalHealth::new(config.awareness_max()),
            config,
            id,
            incarnation,
            own_meta: Metadata::empty(MetaVersion::new(incarnation.get(), 0)),
            left: false,
            rng,
            members: MemberTable::new(),
            broadcasts: Broadcasts::default(),
            suspicions: BTreeMap::new(),
            suspicion_deadlines: BTreeSet::new(),
            reconnected_at: None,
            probes: Vec::new(),
            relays: BTreeMap::new(),
            relay_deadlines: BTreeSet::new(),
            dead_probes: BTreeMap::new(),
            next_seq: 0,
            transfers: Transfers::default(),
            meta_pulls: BTreeMap::new(),
            tombstones: VecDeque::new(),
            departed: VecDeque::new(),
            unverified: BTreeMap::new(),
            unverified_total: 0,
            join_seeds: BTreeMap::new(),
            join_sync_until: None,
            timers,
            gossip_parked: None,
            outbox: VecDeque::new(),
            corrections: Vec::new(),
            events: VecDeque::new(),
            state_log: state_log::StateLog::default(),
            stats: Stats::default(),
        };
        node.members.toggle_digest(&node.self_record());
        node
    }

    /// Tells the node that its driver can send only to members it has an address for (the tokio
    /// driver: a member's address arrives with its metadata, often after the gossip that
    /// introduced it). From now on the node chooses a member as a probe, gossip, indirect-probe
    /// helper, anti-entropy or dead-member probe target only once [`Self::set_routable`] named
    /// it; answers to a member's own datagrams still go out (the transport answers on the
    /// connection that member opened). Why: a datagram the driver drops for want of an address
    /// carries piggybacked updates whose retransmit budget is spent all the same, so a late
    /// joiner's `Alive` reached some nodes only seconds later. Without this call (the
    /// simulator, whose network needs no addresses) every member is routable.
    pub fn require_routes(&mut self) {
        self.members.require_routes();
    }

    /// The driver can now address `id` (its address is known). Only the driver calls this,
    /// from what it learnt itself (a seed's configured address, the member's published `addr`);
    /// no peer input makes a member routable.
    pub fn set_routable(&mut self, id: NodeId) {
        self.members.set_routable(id);
    }

    /// Adds a member known to be alive at `incarnation` without any exchange (bootstrapping a
    /// converged mesh, e.g. in the simulator or from a persisted peer list). Its metadata is
    /// taken as empty at epoch `incarnation`; anti-entropy corrects anything else.
    pub fn add_known_member(&mut self, now: Instant, id: NodeId, incarnation: Incarnation) {
        if id == self.id
            || self.members.get(id).is_some()
            || self.members.len() >= self.config.max_members() as usize
        {
            return;
        }
        let mut m = Member::new(now, incarnation, MemberState::Alive);
        m.reset_empty_meta(MetaVersion::new(incarnation.get(), 0));
        self.members.insert(&mut self.rng, id, m);
    }

    /// Joins through `seeds` (the first [`MAX_JOIN_SEEDS`]): announces this node and asks each
    /// for the full member list. Their answers introduce members without the per-relay bound
    /// (see [`MAX_UNVERIFIED_PER_INTRODUCER`]) for a short while: seeds are the operator's choice.
    pub fn handle_join(&mut self, now: Instant, seeds: &[NodeId]) {
        self.broadcasts.push(&self.alive_update());
        // Anti-entropy every second for a while: what the join's answer and the first gossip
        // missed (see `JOIN_SYNC_INTERVAL`).
        if seeds.iter().any(|s| *s != self.id) && !self.left {
            self.join_sync_until = Some(now + JOIN_SYNC_WINDOW);
            self.timers
                .set(Timer::AntiEntropy, now + JOIN_SYNC_INTERVAL);
        }
        let own = self.id;
        for &seed in seeds.iter().filter(|s| **s != own).take(MAX_JOIN_SEEDS) {
            self.join_seeds.insert(seed, now + JOIN_ANSWER_WINDOW);
            self.send(
                seed,
                Message::SyncDigest {
                    all: true,
                    digests: Vec::new(),
                },
            );
        }
    }

    /// Leaves gracefully: announces `Left`, then stops probing. Keep driving the node for a few
    /// gossip rounds so the announcement spreads.
    pub fn leave(&mut self, now: Instant) {
        if self.left {
            return;
        }
        self.change_self(|s| s.left = true);
        if let Some(suppressed) = self.state_log.allow(now) {
            tracing::debug!(node = %self.id, incarnation = %self.incarnation, suppressed,
                "this node leaves the mesh");
        }
        self.broadcasts.push(&Update::Left {
            node: self.id,
            incarnation: self.incarnation,
        });
        for t in [
            Timer::ProbePeriod,
            Timer::ProbeTimeout,
            Timer::AntiEntropy,
            Timer::DeadProbe,
        ] {
            self.timers.stop(t);
        }
        self.probes.clear();
        // Only a member's own `Left` counts as a leave (a relayed one is a death claim), so
        // every member hears it from this node directly, besides the piggybacked copies.
        let left = Update::Left {
            node: self.id,
            incarnation: self.incarnation,
        };
        let targets: Vec<NodeId> = self
            .members
            .iter()
            .filter(|(_, m)| m.is_up())
            .map(|(id, _)| id)
            .collect();
        for to in targets {
            self.send_with(to, Message::Gossip, vec![left.clone()]);
        }
    }

    /// Sets one key of this node's metadata and spreads the write.
    pub fn set_metadata(
        &mut self,
        now: Instant,
        key: &str,
        value: &[u8],
    ) -> Result<MetaVersion, MetadataError> {
        self.write_own_metadata(now, key, Some(value))
    }

    /// Deletes one key of this node's metadata (a tombstone spreads, then is collected).
    pub fn delete_metadata(
        &mut self,
        now: Instant,
        key: &str,
    ) -> Result<MetaVersion, MetadataError> {
        self.write_own_metadata(now, key, None)
    }

    /// Takes one datagram from `from` (as authenticated by the transport).
    pub fn handle_datagram(
        &mut self,
        now: Instant,
        from: NodeId,
        bytes: &[u8],
    ) -> Result<(), DatagramError> {
        let datagram = match wire::decode(bytes) {
            Ok(d) => d,
            Err(e) => {
                self.stats.datagrams_refused += 1;
                return Err(e.into());
            }
        };
        if datagram.sender != from {
            self.stats.datagrams_refused += 1;
            return Err(DatagramError::SenderMismatch {
                claimed: datagram.sender,
                actual: from,
            });
        }
        self.stats.datagrams_received += 1;
        self.note_reconnect(now, from);
        self.verify(from);
        let mut updates = datagram.updates;
        // Queues send newest first; metadata writes apply only in version order.
        updates.sort_by_key(|u| match u {
            Update::Meta { node, version, .. } => (1, *node, *version),
            _ => (0, NodeId::new(0), MetaVersion::default()),
        });
        for update in updates {
            self.apply_update(now, from, update);
        }
        match datagram.message {
            Message::Ping { seq, target } => self.handle_ping(from, seq, target),
            Message::Ack { seq } => self.handle_ack(now, from, seq),
            Message::PingReq { seq, target } => self.handle_ping_req(now, from, seq, target),
            Message::Nack { seq } => self.handle_nack(from, seq),
            Message::Gossip => {}
            Message::SyncDigest { all, digests } => self.handle_sync_digest(from, all, &digests),
            Message::SyncEntries { reply, records } => {
                self.handle_sync_entries(now, from, reply, records)
            }
            Message::MetaPull { node, have } => self.handle_meta_pull(from, node, have),
            Message::MetaPush {
                node,
                base,
                version,
                chunk,
                chunks,
                entries,
            } => {
                self.handle_meta_push(now, from, node, base, version, chunk, chunks, entries);
            }
        }
        if !self.corrections.is_empty() {
            let corrections = core::mem::take(&mut self.corrections);
            self.send_with(from, Message::Gossip, corrections);
        }
        self.tell_speaking_suspect(now, from);
        self.tell_speaking_leaver(now, from);
        Ok(())
    }

    /// Runs every timer that is due at `now`.
    pub fn handle_timeout(&mut self, now: Instant) {
        if self.timers.take_expired(Timer::ProbePeriod, now) {
            self.conclude_probe(now);
            self.start_probe(now);
        }
        if self.timers.take_expired(Timer::ProbeTimeout, now) {
            self.probe_indirectly();
        }
        if self.timers.take_expired(Timer::Gossip, now) {
            if self.broadcasts.is_empty() {
                // Nothing to send: park the timer instead of ticking (an idle node's wakeups).
                self.gossip_parked = Some(now);
            } else {
                self.gossip(now);
                self.timers
                    .set(Timer::Gossip, now + self.config.gossip_interval());
            }
        } else if let Some(anchor) = self.gossip_parked
            && !self.broadcasts.is_empty()
        {
            // Updates arrived while parked: gossip at the first instant of the grid the timer
            // would have ticked on, now if `now` is one of them (as a ticking timer would).
            self.gossip_parked = None;
            let next = next_on_grid(anchor, self.config.gossip_interval(), now);
            if next == now {
                self.gossip(now);
                self.timers
                    .set(Timer::Gossip, now + self.config.gossip_interval());
            } else {
                self.timers.set(Timer::Gossip, next);
            }
        }
        if self.timers.take_expired(Timer::AntiEntropy, now) {
            self.start_sync();
            let interval = if self.join_sync_until.is_some_and(|until| now < until) {
                JOIN_SYNC_INTERVAL.min(self.config.anti_entropy_interval())
            } else {
                self.config.anti_entropy_interval()
            };
            self.timers.set(Timer::AntiEntropy, now + interval);
        }
        if self.timers.take_expired(Timer::DeadProbe, now) {
            self.probe_dead_member(now);
            self.timers
                .set(Timer::DeadProbe, now + self.config.dead_probe_interval());
        }
        if self.timers.take_expired(Timer::Maintenance, now) {
            self.maintain(now);
            self.timers
                .set(Timer::Maintenance, now + MAINTENANCE_INTERVAL);
        }
        while let Some(&(at, node)) = self.suspicion_deadlines.first() {
            if at > now {
                break;
            }
            self.suspicion_deadlines.pop_first();
            self.suspicion_expired(now, node);
        }
        self.expire_relays(now);
    }

    /// Writes the next datagram into `buf` (cleared first) and says where it goes.
    #[must_use = "a transmit not sent is a probe or an update lost"]
    pub fn poll_transmit(&mut self, _now: Instant, buf: &mut Vec<u8>) -> Option<Transmit> {
        let out = self.outbox.pop_front()?;
        let count_at = wire::encode_message(self.id, &out.message, buf);
        let mut encoded = Vec::with_capacity(32);
        for update in &out.leading {
            encoded.clear();
            wire::encode_update(update, &mut encoded);
            let _ = wire::append_update(buf, count_at, &encoded);
        }
        if carries_piggyback(&out.message) {
            let limit = dissemination::retransmit_limit(
                self.config.retransmit_mult(),
                self.members.up_count() + 1,
            );
            self.broadcasts.fill(buf, count_at, limit, out.to);
        }
        debug_assert!(
            buf.len() <= wire::MAX_DATAGRAM_BYTES,
            "encoded datagram over MAX_DATAGRAM_BYTES"
        );
        self.stats.datagrams_sent += 1;
        self.stats.bytes_sent += buf.len() as u64;
        Some(Transmit {
            to: out.to,
            len: buf.len(),
        })
    }

    /// When [`handle_timeout`](Self::handle_timeout) should next be called.
    #[must_use]
    pub fn poll_timeout(&self) -> Option<Instant> {
        // A parked gossip timer with updates waiting: the first grid instant after parking (if
        // that has passed, the call it asks for finds the next one).
        let gossip = self
            .gossip_parked
            .filter(|_| !self.broadcasts.is_empty())
            .map(|anchor| anchor + self.config.gossip_interval());
        [
            self.timers.next(),
            gossip,
            self.suspicion_deadlines.first().map(|d| d.0),
            self.relay_deadlines.first().map(|d| d.0),
        ]
        .into_iter()
        .flatten()
        .min()
    }

    /// The next event for the application.
    #[must_use]
    pub fn poll_event(&mut self) -> Option<Event> {
        self.events.pop_front()
    }

    /// This node's id.
    pub fn local_id(&self) -> NodeId {
        self.id
    }

    /// The incarnation this node announces.
    pub fn incarnation(&self) -> Incarnation {
        self.incarnation
    }

    /// Lifeguard's local health score (0 = healthy).
    pub fn health_score(&self) -> u32 {
        self.health.score()
    }

    /// Counters for metrics.
    pub fn stats(&self) -> Stats {
        self.stats
    }

    /// The configuration in force.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// One member's view; the local node is included (Alive, or Left after [`leave`](Self::leave)).
    pub fn member(&self, id: NodeId) -> Option<MemberView> {
        if id == self.id {
            return Some(self.self_view());
        }
        self.members.get(id).map(|m| view(id, m))
    }

    /// Every member this node knows, the local node included, in id order.
    pub fn members(&self) -> impl Iterator<Item = MemberView> + '_ {
        let own = self.self_view();
        let mut own = Some(own);
        let mut rest = self.members.iter().map(|(id, m)| view(id, m)).peekable();
        core::iter::from_fn(move || match (&own, rest.peek()) {
            (Some(o), Some(r)) if r.id < o.id => rest.next(),
            (Some(_), _) => own.take(),
            (None, _) => rest.next(),
        })
    }

    /// The metadata this node holds for `id` (its own for the local id).
    ///
    /// `None` for an unknown member, and also for a member whose metadata this node holds as
    /// empty: an empty copy is kept as its version only (see [`MemberView::meta_version`]), which
    /// keeps the table small in meshes where most members publish nothing.
    pub fn metadata(&self, id: NodeId) -> Option<&Metadata> {
        if id == self.id {
            return Some(&self.own_meta);
        }
        self.members.get(id).and_then(|m| m.meta.as_deref())
    }

    /// Members known, the local node included.
    pub fn member_count(&self) -> usize {
        self.members.len() + 1
    }

    /// Members Alive or Suspect, the local node included (unless it left).
    pub fn alive_count(&self) -> usize {
        self.members.up_count() + usize::from(!self.left)
    }

    fn self_view(&self) -> MemberView {
        MemberView {
            id: self.id,
            incarnation: self.incarnation,
            state: if self.left {
                MemberState::Left
            } else {
                MemberState::Alive
            },
            meta_version: self.own_meta.version(),
            rtt: None,
            last_change: Instant::ZERO,
        }
    }

    fn self_record(&self) -> wire::MemberRecord {
        let v = self.self_view();
        wire::MemberRecord {
            node: self.id,
            incarnation: v.incarnation,
            state: v.state,
            meta: v.meta_version,
        }
    }

    fn alive_update(&self) -> Update {
        Update::Alive {
            node: self.id,
            incarnation: self.incarnation,
            meta: self.own_meta.version(),
        }
    }

    /// Changes the local node's own record, keeping the digests right.
    fn change_self(&mut self, f: impl FnOnce(&mut Self)) {
        let before = self.self_record();
        f(self);
        let after = self.self_record();
        if before != after {
            self.members.toggle_digest(&before);
            self.members.toggle_digest(&after);
        }
    }

    /// Removes a member from the table, freeing its unverified slot if it had one.
    fn forget(&mut self, node: NodeId) {
        if let Some(introducer) = self.members.remove(node).and_then(|m| m.introduced_by) {
            self.release_introduction(introducer);
        }
        if let Some(s) = self.suspicions.remove(&node) {
            self.suspicion_deadlines.remove(&(s.deadline(), node));
        }
    }

    fn next_seq(&mut self) -> u32 {
        self.next_seq = self.next_seq.wrapping_add(1);
        self.next_seq
    }

    fn send(&mut self, to: NodeId, message: Message) {
        self.send_with(to, message, Vec::new());
    }

    fn send_with(&mut self, to: NodeId, message: Message, leading: Vec<Update>) {
        if self.outbox.len() >= MAX_OUTBOX_DATAGRAMS {
            self.stats.outbox_dropped += 1;
            return;
        }
        self.outbox.push_back(Outgoing {
            to,
            message,
            leading,
        });
    }

    fn emit(&mut self, event: Event) {
        if self.events.len() >= MAX_PENDING_EVENTS {
            self.events.pop_front();
            self.stats.events_dropped += 1;
        }
        self.events.push_back(event);
    }

    /// Standalone gossip: pending updates to `gossip_fanout` random members (recently dead ones
    /// included, so a wrongly declared member hears of it and refutes).
    fn gossip(&mut self, now: Instant) {
        if self.broadcasts.is_empty() {
            return;
        }
        let window = crate::time::scale(
            self.config.gossip_interval(),
            10 * self.config.retransmit_mult(),
        );
        let targets = self.members.sample(
            &mut self.rng,
            self.config.gossip_fanout() as usize,
            &[],
            |m| {
                // A datagram the driver cannot address would spend the updates' retransmit
                // budget on nobody.
                m.routable
                    && (m.is_up()
                        || (m.state == MemberState::Dead
                            && now.saturating_duration_since(m.last_change) < window))
            },
        );
        for to in targets {
            self.send(to, Message::Gossip);
        }
    }

    /// Collects tombstones past their TTL, forgets members dead for longer than the retention,
    /// and drops stalled metadata transfers.
    fn maintain(&mut self, now: Instant) {
        while let Some((due, node, key, seq)) = self.tombstones.front().cloned() {
            if due > now {
                break;
            }
            self.tombstones.pop_front();
            if node == self.id {
                self.own_meta.collect_tombstone(&key, seq);
            } else if self.members.get(node).is_some_and(|m| m.meta.is_some()) {
                self.members
                    .modify(node, |m| m.meta_mut().collect_tombstone(&key, seq));
            }
        }
        let retention = self.config.dead_retention();
        while let Some(&(since, node)) = self.departed.front() {
            if now.saturating_duration_since(since) < retention {
                break;
            }
            self.departed.pop_front();
            let forget = self.members.get(node).is_some_and(|m| {
                !m.is_up() && now.saturating_duration_since(m.last_change) >= retention
            });
            if forget {
                self.forget(node);
            }
        }
        self.join_seeds.retain(|_, until| *until > now);
        self.transfers.expire(now);
        self.meta_pulls
            .retain(|_, at| now.saturating_duration_since(*at) < metadata::TRANSFER_TIMEOUT);
        let window = self.config.probe_interval().saturating_mul(4);
        self.dead_probes
            .retain(|_, (_, sent)| now.saturating_duration_since(*sent) < window);
    }
}

/// Updates ride on the small datagrams of probing and gossip, which go to many different members.
/// Bulk transfers (anti-entropy records, metadata chunks) come in bursts to one member, which
/// would spend an update's whole retransmit budget on a single recipient; in the real runtime
/// they travel on streams anyway.
fn carries_piggyback(message: &Message) -> bool {
    matches!(
        message,
        Message::Ping { .. }
            | Message::Ack { .. }
            | Message::PingReq { .. }
            | Message::Nack { .. }
            | Message::Gossip
    )
}

/// The first instant `anchor + k * interval` (k >= 1) at or after `now`.
fn next_on_grid(anchor: Instant, interval: Duration, now: Instant) -> Instant {
    let first = anchor + interval;
    if now <= first || interval.is_zero() {
        return first;
    }
    let behind = now.saturating_duration_since(first).as_nanos();
    let step = interval.as_nanos();
    let steps = behind.div_ceil(step);
    // Saturates far beyond any real idle period (2^32 intervals).
    first + interval.saturating_mul(u32::try_from(steps).unwrap_or(u32::MAX))
}

fn view(id: NodeId, m: &Member) -> MemberView {
    MemberView {
        id,
        incarnation: m.incarnation,
        state: m.state,
        meta_version: m.meta_version(),
        rtt: (m.srtt_us > 0).then(|| Duration::from_micros(u64::from(m.srtt_us))),
        last_change: m.last_change,
    }
}

#[cfg(test)]
mod tests;
