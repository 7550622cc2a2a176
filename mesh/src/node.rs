//! The node: the one composition of the core's state machines, in the role quinn's `Endpoint`
//! plays for its connections.
//!
//! A MeshKit node runs gossip membership ([`Membership`]) and, when it takes part in
//! leadership, a Raft voter ([`LeaseGroup`]), a lease client ([`LeaseClient`]) and the client's
//! standing candidacy ([`Campaign`]). Each is a sans-IO state machine of its own, and a host
//! could wire them together itself: route each datagram to the right one, fan timeouts out,
//! drain each in the right order, hand the client's events to the campaign, tell the campaign
//! when a holder leaves the mesh. Two hosts did (the simulator and the tokio driver), and the
//! copies drifted apart: the simulator sent a node's datagrams to itself through its lossy
//! network model while the daemon looped them back in-process, and only the daemon framed its
//! datagrams by channel. [`Node`] is that wiring, once, so both hosts drive the same node and a
//! replayed seed exercises exactly what a real node runs.
//!
//! # What the node owns
//!
//! * **Channel framing.** Every datagram starts with one [`Channel`] byte, membership or lease,
//!   then the component's own encoding. A datagram with no byte or an unknown one is refused
//!   with [`ChannelError`] (counted in [`NodeStats::channel_refused`]); nothing else changes.
//! * **Self-delivery.** The lease client of a voter's node asks its own voter, and the voter
//!   answers its own client. Those datagrams never reach the host: the node hands them back
//!   in-process, right after the input that produced them, within [`MAX_SELF_DELIVERY_ROUNDS`]
//!   rounds (a request and its answer take two). A host therefore never sees a [`Transmit`]
//!   addressed to its own node.
//! * **Wiring between components.** The campaign reads every client event; it defers its
//!   acquisitions while the node's own voter leads ([`Campaign::defer_acquisitions`] says why);
//!   and a member that left or was declared dead is a holder gone
//!   ([`Campaign::holder_gone`]), so its scopes are asked for at once.
//! * **Child seeds.** One `seed: u64` from the host seeds the whole node (see
//!   [`Node::new`]): membership takes it as is, the voter and the client take children of it,
//!   each from its own ChaCha8 stream, whatever order the host adds them in.
//!
//! # Shards
//!
//! [`with_shards`](Node::with_shards) adds shard ownership ([`crate::shard`]): a voter's node
//! keeps a [`Coordinator`], fed with its voter's applied grants, that acts while the voter leads
//! the group; a node with a lease client keeps a [`ShardMember`] that follows the coordinator's
//! instructions through that client. The node owns the wiring: the shard messages travel on
//! their own channel ([`Channel::Shard`]), members announce their role to the voters
//! ([`join_shards`](Node::join_shards), [`drain_shards`](Node::drain_shards)), the coordinator's
//! pool is the members that announced and that this node's membership sees up, and a message
//! for the node itself (a voter's own member) is handed over in-process.
//!
//! # Seams
//!
//! The components the node composes are fields it drives in a fixed order (membership, voter,
//! client, campaign, shard coordinator, shard member): each is fed in `settle`, asked for its
//! deadline in [`poll_timeout`](Node::poll_timeout), and reports through an [`Event`] variant
//! (the enum is `#[non_exhaustive]` for that reason). The task queues follow the same pattern
//! (below); probe components will too.
//!
//! # Task queues
//!
//! [`with_queues`](Node::with_queues) adds the task queues of the configured shards
//! ([`crate::queue`]): the node serves the queue of every shard its lease client holds,
//! replicates for the owners that pick it, and sends its producers' and workers' requests to
//! the owners its membership metadata names. The node owns the wiring: queue messages travel on
//! their own channel ([`Channel::Queue`]); after every input the queues compare the shards
//! served with the leases held; a member Dead or Left is reported to the health tracker; the
//! queues' metadata writes (owner fence and backpressure signal) go to membership; a message
//! for the node itself is handed over in-process. A replica's checkpoint records come out of
//! [`poll_queue_durable`](Node::poll_queue_durable), to be made durable before the transmits
//! polled after them that speak for the replica's disk ([`waits_for_durable`]: its
//! acknowledgements, offers and chunks); every other datagram may leave at once.
//!
//! # Example
//!
//! Node 1 is the only voter; node 2 contends for `global-control` and wins it. Datagrams are
//! delivered at once and time jumps to the next deadline (a real host waits for both).
//!
//! ```
//! use core::time::Duration;
//! use meshkit::config::{Config, Profile};
//! use meshkit::lease::{Campaign, LeadershipEvent, LeaseConfig, Scope};
//! use meshkit::node::{Event, Node};
//! use meshkit::{Incarnation, Instant, NodeId};
//!
//! let (a, b) = (NodeId::new(1), NodeId::new(2));
//! let mut now = Instant::ZERO;
//! let config = Config::from_profile(Profile::Lan);
//! let mut campaign = Campaign::new(Duration::from_secs(3), Duration::from_millis(100));
//! campaign.enter(now, Scope::global_control());
//! let mut nodes = [
//!     Node::new(config.clone(), a, Incarnation::new(1), 7, now)
//!         .with_voter(now, LeaseConfig::default(), &[a])?,
//!     Node::new(config, b, Incarnation::new(1), 8, now)
//!         .with_lease_client(now, LeaseConfig::default(), &[a], campaign),
//! ];
//! nodes[1].join(now, &[a]);
//! let (mut buf, mut holder) = (Vec::new(), None);
//! for _ in 0..10_000 {
//!     // Drain every node in the documented order.
//!     let mut wire = Vec::new();
//!     for node in &mut nodes {
//!         while let Some(t) = node.poll_transmit(now, &mut buf) {
//!             assert_ne!(t.to, node.local_id(), "a node talks to itself in-process");
//!             wire.push((node.local_id(), t.to, buf[..t.len].to_vec()));
//!         }
//!         while let Some(event) = node.poll_event() {
//!             if let Event::Leadership(e) = event
//!                 && let LeadershipEvent::Acquired { .. } = e.event
//!             {
//!                 holder = Some(node.local_id());
//!             }
//!         }
//!     }
//!     if holder.is_some() {
//!         break;
//!     }
//!     if wire.is_empty() {
//!         // Nothing in flight: jump to the earliest deadline.
//!         now = nodes.iter().filter_map(Node::poll_timeout).min().unwrap();
//!         for node in &mut nodes {
//!             node.handle_timeout(now);
//!         }
//!     }
//!     for (from, to, bytes) in wire {
//!         nodes[(to.get() - 1) as usize].handle_datagram(now, from, &bytes)?;
//!     }
//! }
//! assert_eq!(holder, Some(b));
//! assert!(nodes[1].holds(now, &Scope::global_control()).is_some());
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use alloc::collections::VecDeque;

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use thiserror::Error;

use crate::config::Config;
use crate::id::{Incarnation, MetaVersion, NodeId};
use crate::lease::{
    Campaign, DurableState, DurableWrite, FencingToken, GroupError, GroupEvent, HeldLease,
    LeadershipEvent, LeaseClient, LeaseConfig, LeaseError, LeaseGroup, MessageError, Recipient,
    RequestId, Scope, Sequenced,
};
use crate::membership::{
    self, ForceLeave, ForceLeaveError, MemberState, Membership, MetadataError,
};
use crate::queue::{
    FinishOp, Origin, OwnershipToken, QueueConfig, QueueContext, QueueDurableWrite, QueueError,
    QueueEvent, QueueMessage, Queues, ReplicaStore,
};
use crate::shard::{
    Coordinator, InstructionError, Plan, RebalanceError, ShardConfig, ShardEvent, ShardId,
    ShardMember, ShardMessage, ShardRole,
};
use crate::time::{Duration, Instant};
use crate::transmit::Transmit;

/// Rounds of self-addressed lease datagrams the node hands back after one input (a request to
/// its own voter and the answer take two; a transfer notice and the take-over renewal two more).
/// Past it the rest waits for the next input, counted in
/// [`NodeStats::self_delivery_rounds_exhausted`].
pub const MAX_SELF_DELIVERY_ROUNDS: usize = 8;
/// Lease datagrams waiting for the host; past this the newest are dropped (and counted): the
/// lease client retries at its deadline, Raft resends.
pub const MAX_LEASE_OUTBOX_DATAGRAMS: usize =
    crate::lease::MAX_GROUP_OUTBOX_DATAGRAMS + crate::lease::MAX_CLIENT_OUTBOX_DATAGRAMS;
/// Events waiting for the host; past this the oldest are dropped (and counted).
pub const MAX_PENDING_EVENTS: usize = 65_536;
/// Rounds of self-addressed queue messages the node hands back after one input (a request to
/// its own queue and the answer take two).
const MAX_QUEUE_SELF_ROUNDS: usize = 8;
/// Spare datagram buffers kept for reuse.
const MAX_SPARE_BUFFERS: usize = 64;

/// The stream of the node's seed that each lease component's seed is drawn from (stream 0 is
/// the seed itself, which membership takes).
const VOTER_SEED_STREAM: u64 = 1;
const CLIENT_SEED_STREAM: u64 = 2;

/// Which state machine a datagram is for: its first byte on the wire.
///
/// Not `#[non_exhaustive]`: a new channel is a new wire protocol version, and hosts match on
/// the byte (`Channel::Lease as u8`) to count traffic.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[repr(u8)]
pub enum Channel {
    /// Gossip membership ([`Membership`]).
    Membership = 0,
    /// Leases: Raft between voters, lease requests and answers ([`crate::lease`]).
    Lease = 1,
    /// Shards: the coordinator's instructions ([`crate::shard::Instruction`]).
    Shard = 2,
    /// Task queues: requests, answers, replication and recovery ([`crate::queue`]).
    Queue = 3,
}

impl Channel {
    /// Every channel, in byte order.
    pub const VALUES: [Self; 4] = [Self::Membership, Self::Lease, Self::Shard, Self::Queue];

    /// The channel's byte on the wire.
    pub const fn byte(self) -> u8 {
        self as u8
    }

    /// Splits a received datagram into its channel and the payload after the byte.
    pub fn split(datagram: &[u8]) -> Result<(Self, &[u8]), ChannelError> {
        let (&first, payload) = datagram.split_first().ok_or(ChannelError::Empty)?;
        let channel = match first {
            0 => Self::Membership,
            1 => Self::Lease,
            2 => Self::Shard,
            3 => Self::Queue,
            byte => return Err(ChannelError::Unknown { byte }),
        };
        Ok((channel, payload))
    }

    /// Writes the datagram carrying `payload` on this channel into `buf` (cleared first).
    pub fn frame(self, payload: &[u8], buf: &mut Vec<u8>) {
        buf.clear();
        buf.reserve(payload.len() + 1);
        buf.push(self.byte());
        buf.extend_from_slice(payload);
    }

    /// Lower-case name, for logs and metric labels.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Membership => "membership",
            Self::Lease => "lease",
            Self::Shard => "shard",
            Self::Queue => "queue",
        }
    }
}

impl core::fmt::Display for Channel {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A datagram without a channel this build knows. A peer or network fault; the node's state
/// is unchanged.
#[derive(Debug, Error, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum ChannelError {
    /// The datagram is empty: not even a channel byte.
    #[error("empty datagram: no channel byte")]
    Empty,
    /// The first byte names no channel.
    #[error("unknown channel byte {byte}")]
    Unknown {
        /// The byte received.
        byte: u8,
    },
}

/// Why [`Node::handle_datagram`] refused a datagram. Each is a peer or network fault (or a
/// datagram for a state machine this node does not run); the refusal is counted, and the state
/// machine that refused it is unchanged.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum DatagramError {
    /// No channel, or an unknown one ([`NodeStats::channel_refused`]).
    #[error(transparent)]
    Channel(#[from] ChannelError),
    /// Membership refused it (counted in its own [`membership::Stats`]).
    #[error(transparent)]
    Membership(#[from] membership::DatagramError),
    /// The voter or the lease client refused it ([`NodeStats::lease_refused`]).
    #[error(transparent)]
    Lease(#[from] MessageError),
    /// A lease datagram for a state machine this node does not run: Raft or a lease request for
    /// a node that is not a voter, an answer for a node without a lease client
    /// ([`NodeStats::lease_refused`]).
    #[error("lease datagram for the {recipient:?}, which this node does not run")]
    NotRunning {
        /// The state machine the datagram is for.
        recipient: Recipient,
    },
    /// A shard instruction that does not decode ([`NodeStats::shard_refused`]).
    #[error(transparent)]
    Shard(#[from] InstructionError),
    /// A shard instruction for a node that is no shard member ([`NodeStats::shard_refused`]).
    #[error("shard instruction for a node that is no shard member")]
    NoShardMember,
    /// A shard announce for a node that runs no coordinator (no voter)
    /// ([`NodeStats::shard_refused`]).
    #[error("shard announce for a node that runs no shard coordinator")]
    NoCoordinator,
    /// A queue message that does not decode ([`NodeStats::queue_refused`]).
    #[error("queue message: {0}")]
    QueueDecode(crate::wire::DecodeError),
    /// A queue message the queues refused: a shard with no queue
    /// ([`NodeStats::queue_refused`]).
    #[error("queue message refused: {0}")]
    QueueRefused(QueueError),
    /// A queue message for a node that runs no queues ([`NodeStats::queue_refused`]).
    #[error("queue message for a node that runs no queues")]
    NoQueues,
}

/// Why a lease command was refused. Nothing was sent and nothing changed.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum CommandError {
    /// This node runs no lease client (caller misuse: build it with
    /// [`Node::with_lease_client`]).
    #[error("this node runs no lease client")]
    NoLeaseClient,
    /// The lease client refused the command.
    #[error(transparent)]
    Lease(#[from] LeaseError),
    /// This node takes no shards (caller misuse: build it with [`Node::with_shards`] and a
    /// lease client).
    #[error("this node is no shard member: give it a [shards] section and a lease client")]
    NoShardMember,
    /// This node runs no shard coordinator, or it does not act now (its voter does not lead).
    #[error("this node does not coordinate shards now: ask the Raft leader{}", leader.map_or(String::new(), |l| format!(" ({l})")))]
    NotCoordinator {
        /// The Raft leader, if this node knows it.
        leader: Option<NodeId>,
    },
    /// No plan: the pool has no eligible member.
    #[error(transparent)]
    Rebalance(#[from] RebalanceError),
}

/// What the host application learns, from any of the node's components.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Event {
    /// Membership: a member changed state, metadata changed, a refutation.
    Membership(membership::Event),
    /// The lease client: this node's own leases (numbered per node).
    Leadership(Sequenced<LeadershipEvent>),
    /// The voter: the group's leader and its replicated lease table (numbered per voter).
    Group(Sequenced<GroupEvent>),
    /// Shards: the coordinator's plans and moves, the member's drain.
    Shard(ShardEvent),
    /// Task queues: answers to this node's requests, and what it does as owner.
    Queue(QueueEvent),
}

/// The node's own counters (each component keeps its own too); they only grow.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct NodeStats {
    /// Datagrams refused for their channel byte (none, or unknown).
    pub channel_refused: u64,
    /// Lease datagrams refused: undecodable, refused by the voter or the client, or for a state
    /// machine this node does not run.
    pub lease_refused: u64,
    /// Lease datagrams this node addressed to itself and handed back in-process.
    pub self_delivered: u64,
    /// Membership datagrams addressed to this node itself, dropped (membership has nothing to
    /// tell itself; none is expected).
    pub self_addressed_dropped: u64,
    /// Inputs after which self-addressed datagrams were still coming after
    /// [`MAX_SELF_DELIVERY_ROUNDS`] rounds (the rest waited for the next input).
    pub self_delivery_rounds_exhausted: u64,
    /// Lease datagrams dropped because the host did not drain [`Node::poll_transmit`].
    pub outbox_dropped: u64,
    /// Events dropped because the host did not drain [`Node::poll_event`].
    pub events_dropped: u64,
    /// Shard datagrams refused: undecodable, or for a node that is no shard member.
    pub shard_refused: u64,
    /// Queue datagrams refused: undecodable, for a shard with no queue, or for a node that runs
    /// no queues.
    pub queue_refused: u64,
}

/// One MeshKit node: membership and, optionally, a lease voter, a lease client and its
/// campaign. See the [module docs](self) for why it exists.
///
/// # Driving
///
/// A host (the simulator, the tokio driver) owns time, the network and the seed, and calls:
///
/// * **Construction**: [`new`](Self::new) (membership), then optionally
///   [`with_voter`](Self::with_voter), [`with_restarted_voter`](Self::with_restarted_voter)
///   or [`with_joining_voter`](Self::with_joining_voter) (a Raft voter), and
///   [`with_lease_client`](Self::with_lease_client) (a lease client and its campaign). A host
///   with a disk calls [`record_durable_writes`](Self::record_durable_writes) on a voter's node
///   before anything else.
/// * **Inputs**: [`handle_datagram`](Self::handle_datagram) for every datagram received (with
///   the sender the transport authenticated), [`handle_timeout`](Self::handle_timeout) when
///   [`poll_timeout`](Self::poll_timeout) comes due (a spurious call is a no-op), and the
///   commands: [`join`](Self::join), [`leave`](Self::leave),
///   [`set_metadata`](Self::set_metadata), [`delete_metadata`](Self::delete_metadata),
///   [`acquire`](Self::acquire), [`renew`](Self::renew), [`release`](Self::release),
///   [`transfer`](Self::transfer), [`query`](Self::query),
///   [`enter_campaign`](Self::enter_campaign), [`withdraw_campaign`](Self::withdraw_campaign),
///   [`change_voters`](Self::change_voters).
/// * **Outputs**, drained after every input in this order:
///   1. [`poll_durable`](Self::poll_durable) until `None`, then make what it gave durable
///      (write and sync): nothing polled afterwards may leave before that (Raft's persistence
///      rule). Only a voter that records durable writes has any.
///   2. [`poll_transmit`](Self::poll_transmit) until `None`: send each datagram (channel byte
///      included) to `to`. Never addressed to this node itself.
///   3. [`poll_event`](Self::poll_event) until `None`: tell the application.
///   4. [`poll_timeout`](Self::poll_timeout): arm one timer.
///
/// The node has done all of its internal work (self-deliveries, the campaign's bookkeeping)
/// before an input returns, so a host that is slow to poll events loses at most events, never
/// progress.
#[derive(Debug)]
pub struct Node {
    id: NodeId,
    seed: u64,
    membership: Membership,
    group: Option<LeaseGroup>,
    client: Option<LeaseClient>,
    campaign: Option<Campaign>,
    coordinator: Option<Coordinator>,
    shard_member: Option<ShardMember>,
    queues: Option<Queues>,
    /// Queue messages for other nodes, waiting for `poll_transmit`.
    queue_outbox: VecDeque<(NodeId, QueueMessage)>,
    /// Shard messages for other nodes, waiting for `poll_transmit`.
    shard_outbox: VecDeque<(NodeId, ShardMessage)>,
    /// Lease payloads for other nodes, waiting for `poll_transmit`.
    lease_outbox: VecDeque<(NodeId, Vec<u8>)>,
    /// Lease payloads this node addressed to itself, waiting to be handed back.
    loopback: VecDeque<Vec<u8>>,
    spare: Vec<Vec<u8>>,
    scratch: Vec<u8>,
    events: VecDeque<Event>,
    stats: NodeStats,
}

impl Node {
    /// A node alone in its mesh, running membership only.
    ///
    /// `boot` is its boot incarnation (a restarted node must use a higher one; it also numbers
    /// the lease client's requests). `seed` seeds everything the node draws: membership takes
    /// it as its own seed, so a node without leases runs exactly as [`Membership`] alone; the
    /// voter's and the client's seeds are the first word of ChaCha8 keyed by `seed`, on streams
    /// 1 and 2.
    pub fn new(config: Config, id: NodeId, boot: Incarnation, seed: u64, now: Instant) -> Self {
        Self {
            id,
            seed,
            membership: Membership::new(config, id, boot, seed, now),
            group: None,
            client: None,
            campaign: None,
            coordinator: None,
            shard_member: None,
            queues: None,
            queue_outbox: VecDeque::new(),
            shard_outbox: VecDeque::new(),
            lease_outbox: VecDeque::new(),
            loopback: VecDeque::new(),
            spare: Vec::new(),
            scratch: Vec::with_capacity(crate::wire::MAX_DATAGRAM_BYTES),
            events: VecDeque::new(),
            stats: NodeStats::default(),
        }
    }

    /// Makes the node a founding voter of the lease group `voters` (every founder must be given
    /// the same set). Fails, leaving the node without a voter, if the set is invalid or does not
    /// hold this node.
    pub fn with_voter(
        mut self,
        now: Instant,
        config: LeaseConfig,
        voters: &[NodeId],
    ) -> Result<Self, GroupError> {
        let seed = child_seed(self.seed, VOTER_SEED_STREAM);
        self.group = Some(LeaseGroup::bootstrap(config, self.id, voters, seed, now)?);
        self.settle(now);
        Ok(self)
    }

    /// Makes the node a voter restarted from what it persisted (its Raft log, hard state and
    /// snapshot): it resumes exactly where it stopped.
    pub fn with_restarted_voter(
        mut self,
        now: Instant,
        config: LeaseConfig,
        durable: DurableState,
    ) -> Self {
        let seed = child_seed(self.seed, VOTER_SEED_STREAM);
        self.group = Some(LeaseGroup::restart(config, self.id, durable, seed, now));
        self.settle(now);
        self
    }

    /// Makes the node a voter-to-be of the lease group whose voters are `group`: it starts
    /// with no configuration of its own (an empty log, or what it persisted as a joining voter
    /// before a restart: `durable`), never campaigns, takes Raft messages only from `group`,
    /// and becomes a voter once the leader's [`change_voters`](Self::change_voters) adds it and
    /// the log (or a snapshot) reaches it (see [`LeaseGroup::join`]). `durable` that holds a
    /// configuration restarts it as the voter it became (see [`LeaseGroup::rejoin`]).
    pub fn with_joining_voter(
        mut self,
        now: Instant,
        config: LeaseConfig,
        group: &[NodeId],
        durable: Option<DurableState>,
    ) -> Self {
        let seed = child_seed(self.seed, VOTER_SEED_STREAM);
        let joiner = match durable {
            Some(durable) => LeaseGroup::rejoin(config, self.id, durable, group, seed, now),
            None => LeaseGroup::join(config, self.id, group, seed, now),
        };
        if joiner.voters().next().is_none() {
            // The value is at most MAX_VOTERS short ids: far below the metadata limits.
            let accepts: Vec<String> = group.iter().map(|v| v.get().to_string()).collect();
            let _ = self
                .membership
                .set_metadata(now, RAFT_JOIN_KEY, accepts.join(",").as_bytes());
        }
        self.group = Some(joiner);
        self.settle(now);
        self
    }

    /// Gives the node a lease client that talks to `voters`, and its standing `campaign` (an
    /// empty [`Campaign`] contends for nothing until [`enter_campaign`](Self::enter_campaign)).
    pub fn with_lease_client(
        mut self,
        now: Instant,
        config: LeaseConfig,
        voters: &[NodeId],
        campaign: Campaign,
    ) -> Self {
        let seed = child_seed(self.seed, CLIENT_SEED_STREAM);
        let boot = self.membership.incarnation();
        self.client = Some(LeaseClient::new(config, self.id, boot, voters, seed));
        self.campaign = Some(campaign);
        self.settle(now);
        self
    }

    /// Adds shard ownership for the shards `config` names (every node of the mesh must be
    /// given the same): a coordinator if the node is a voter (call after
    /// [`with_voter`](Self::with_voter)), a member if it has a lease client (call after
    /// [`with_lease_client`](Self::with_lease_client)). The member takes shards once
    /// [`join_shards`](Self::join_shards) announced it.
    #[must_use]
    pub fn with_shards(mut self, now: Instant, config: ShardConfig) -> Self {
        if let Some(group) = &self.group {
            let mut coordinator = Coordinator::new(now, config.clone());
            coordinator.resync(group.table());
            self.coordinator = Some(coordinator);
        }
        if self.client.is_some() {
            self.shard_member = Some(ShardMember::new(self.id, config));
        }
        self.settle(now);
        self
    }

    /// Adds the task queues of the shards `shards` names (every node of the mesh must be given
    /// the same shards and queue configuration), with the replica copies `replicas` a restarted
    /// node read back from its checkpoints ([`ReplicaStore::restore`]; empty on a first start).
    /// The node serves the queues of the shards its lease client holds (call after
    /// [`with_lease_client`](Self::with_lease_client) and [`with_shards`](Self::with_shards)
    /// for that); without a lease client it is a producer, worker and replica only.
    #[must_use]
    pub fn with_queues(
        mut self,
        now: Instant,
        shards: &ShardConfig,
        config: QueueConfig,
        replicas: alloc::collections::BTreeMap<ShardId, ReplicaStore>,
    ) -> Self {
        let boot = self.membership.incarnation().get();
        self.queues = Some(Queues::new(
            now,
            self.id,
            boot,
            shards.shards(),
            config,
            replicas,
        ));
        self.settle(now);
        self
    }

    /// Starts recording the queue replicas' checkpoint records; from then on drain
    /// [`poll_queue_durable`](Self::poll_queue_durable) before the transmits after every input.
    pub fn record_queue_durable_writes(&mut self) {
        if let Some(queues) = &mut self.queues {
            queues.record_durable_writes();
        }
    }

    /// Starts recording the voter's durable writes (see [`LeaseGroup::record_durable_writes`]);
    /// from then on drain [`poll_durable`](Self::poll_durable) first after every input. A node
    /// without a voter has nothing to record.
    pub fn record_durable_writes(&mut self) {
        if let Some(group) = &mut self.group {
            group.record_durable_writes();
        }
    }

    /// Stops the voter (its disk failed, say): the group carries on without it, and nothing it
    /// recorded and did not send goes out. The node keeps running membership and its client.
    pub fn stop_voter(&mut self) {
        if self.group.take().is_some() {
            // Its datagrams may promise what the disk never got.
            self.lease_outbox.clear();
            self.loopback.clear();
        }
    }

    /// What a crash leaves behind: the voter's Raft state, if the node is a voter. Consumes the
    /// node (a real crash loses everything else).
    pub fn into_durable(self) -> Option<DurableState> {
        self.group.map(LeaseGroup::into_durable)
    }

    /// The driver sends only to members it has an address for (see
    /// [`Membership::require_routes`]).
    pub fn require_routes(&mut self) {
        self.membership.require_routes();
    }

    /// The driver can now address `id` (see [`Membership::set_routable`]).
    pub fn set_routable(&mut self, id: NodeId) {
        self.membership.set_routable(id);
    }

    /// Adds a member known to be alive without any exchange (see
    /// [`Membership::add_known_member`]).
    pub fn add_known_member(&mut self, now: Instant, id: NodeId, incarnation: Incarnation) {
        self.membership.add_known_member(now, id, incarnation);
    }

    // ---- inputs --------------------------------------------------------------------------------

    /// Takes one datagram (channel byte included) from `from`, as the transport authenticated
    /// it. A refused datagram changes nothing and is counted.
    pub fn handle_datagram(
        &mut self,
        now: Instant,
        from: NodeId,
        datagram: &[u8],
    ) -> Result<(), DatagramError> {
        let result = match Channel::split(datagram) {
            Ok((Channel::Membership, payload)) => self
                .membership
                .handle_datagram(now, from, payload)
                .map_err(DatagramError::from),
            Ok((Channel::Lease, payload)) => self.handle_lease(now, from, payload),
            Ok((Channel::Shard, payload)) => self.handle_shard(now, from, payload),
            Ok((Channel::Queue, payload)) => self.handle_queue(now, from, payload),
            Err(error) => {
                self.stats.channel_refused += 1;
                return Err(error.into());
            }
        };
        self.settle(now);
        result
    }

    /// Runs every timer of every component that is due at `now`.
    pub fn handle_timeout(&mut self, now: Instant) {
        // Membership checks each of its timers itself (a spurious call is a no-op).
        self.membership.handle_timeout(now);
        let due = |at: Option<Instant>| at.is_some_and(|at| at <= now);
        if let Some(group) = &mut self.group
            && due(group.poll_timeout())
        {
            group.handle_timeout(now);
        }
        if let Some(client) = &mut self.client {
            if due(client.poll_timeout()) {
                client.handle_timeout(now);
            }
            if let Some(campaign) = &mut self.campaign
                && due(campaign.poll_timeout())
            {
                campaign.handle_timeout(now, client);
            }
            if let Some(member) = &mut self.shard_member
                && due(member.poll_timeout())
            {
                member.handle_timeout(now, client);
            }
        }
        if let Some(coordinator) = &mut self.coordinator
            && due(coordinator.poll_timeout())
        {
            let term = self
                .group
                .as_ref()
                .filter(|g| g.is_leader())
                .map(LeaseGroup::term);
            let membership = &self.membership;
            coordinator.step(now, term, |member| {
                membership
                    .member(member)
                    .is_some_and(|m| m.state == MemberState::Alive)
            });
        }
        if let Some(queues) = &mut self.queues {
            let ctx = QueueContext {
                membership: &self.membership,
                client: self.client.as_ref(),
            };
            queues.handle_timeout(now, ctx);
        }
        self.settle(now);
    }

    /// Joins the mesh through `seeds` (see [`Membership::handle_join`]).
    pub fn join(&mut self, now: Instant, seeds: &[NodeId]) {
        self.membership.handle_join(now, seeds);
        self.settle(now);
    }

    /// Leaves the mesh gracefully (see [`Membership::leave`]); keep driving the node a few
    /// gossip rounds so the announcement spreads. The shard member releases the shards it holds
    /// (drain first to hand them over instead); other leases are not touched: release or
    /// transfer them first.
    pub fn leave(&mut self, now: Instant) {
        if let (Some(member), Some(client)) = (&mut self.shard_member, &mut self.client) {
            member.leave(now, client);
        }
        self.membership.leave(now);
        self.settle(now);
    }

    /// Moves a member this node holds dead to `left` in this node's view, on the operator's
    /// word (see [`Membership::force_leave`]); campaigns waiting on it stop waiting.
    pub fn force_leave(
        &mut self,
        now: Instant,
        node: NodeId,
    ) -> Result<ForceLeave, ForceLeaveError> {
        let outcome = self.membership.force_leave(now, node)?;
        self.settle(now);
        Ok(outcome)
    }

    /// Sets one key of this node's metadata and spreads the write.
    pub fn set_metadata(
        &mut self,
        now: Instant,
        key: &str,
        value: &[u8],
    ) -> Result<MetaVersion, MetadataError> {
        let version = self.membership.set_metadata(now, key, value)?;
        self.settle(now);
        Ok(version)
    }

    /// Deletes one key of this node's metadata.
    pub fn delete_metadata(
        &mut self,
        now: Instant,
        key: &str,
    ) -> Result<MetaVersion, MetadataError> {
        let version = self.membership.delete_metadata(now, key)?;
        self.settle(now);
        Ok(version)
    }

    /// Asks the voters for `scope` for `ttl` (see [`LeaseClient::acquire`]).
    pub fn acquire(
        &mut self,
        now: Instant,
        scope: Scope,
        ttl: Duration,
    ) -> Result<RequestId, CommandError> {
        self.lease_command(now, |client| client.acquire(now, scope, ttl))
    }

    /// Renews a held lease for its TTL (see [`LeaseClient::renew`]).
    pub fn renew(&mut self, now: Instant, scope: Scope) -> Result<RequestId, CommandError> {
        self.lease_command(now, |client| client.renew(now, scope))
    }

    /// Releases a held lease; it stops being held at once (see [`LeaseClient::release`]).
    pub fn release(&mut self, now: Instant, scope: &Scope) -> Result<RequestId, CommandError> {
        self.lease_command(now, |client| client.release(now, scope))
    }

    /// Hands a held lease to `to` (see [`LeaseClient::transfer`]).
    pub fn transfer(
        &mut self,
        now: Instant,
        scope: Scope,
        to: NodeId,
    ) -> Result<RequestId, CommandError> {
        self.lease_command(now, |client| client.transfer(now, scope, to))
    }

    /// Reads the lease on `scope` through the Raft leader (see [`LeaseClient::query`]).
    pub fn query(&mut self, now: Instant, scope: Scope) -> Result<RequestId, CommandError> {
        self.lease_command(now, |client| client.query(now, scope))
    }

    /// Contends for `scope` from `now` on (again, after a withdrawal). Without a lease client
    /// there is no campaign, and this does nothing.
    pub fn enter_campaign(&mut self, now: Instant, scope: Scope) {
        if let Some(campaign) = &mut self.campaign {
            campaign.enter(now, scope);
        }
    }

    /// Announces to the voters that this node takes shards; a draining node takes shards
    /// again.
    pub fn join_shards(&mut self, now: Instant) -> Result<(), CommandError> {
        self.set_shard_role(now, ShardRole::Member)
    }

    /// Starts draining: the coordinator moves this node's shards away and gives it none;
    /// [`ShardEvent::Drained`] reports when it holds none (see
    /// [`shards_drained`](Self::shards_drained)).
    pub fn drain_shards(&mut self, now: Instant) -> Result<(), CommandError> {
        self.set_shard_role(now, ShardRole::Draining)
    }

    /// Asks the coordinator for a new plan (see [`Coordinator::rebalance`]) and returns the
    /// plan the current map and pool give; with `dry_run` nothing is asked, the plan is only
    /// shown.
    pub fn rebalance_shards(&mut self, dry_run: bool) -> Result<Plan, CommandError> {
        let leader = self.group.as_ref().and_then(LeaseGroup::leader);
        let coordinator = self
            .coordinator
            .as_mut()
            .filter(|c| c.term().is_some())
            .ok_or(CommandError::NotCoordinator { leader })?;
        Ok(if dry_run {
            coordinator.preview()?
        } else {
            coordinator.rebalance()?
        })
    }

    /// Asks the owner of `shard`'s queue to add an item; [`QueueEvent::Enqueued`] reports its
    /// acknowledgement (held by the owner and its replicas), [`QueueEvent::Refused`] a refusal
    /// or a timeout. Returns the request's number.
    pub fn queue_enqueue(
        &mut self,
        now: Instant,
        shard: ShardId,
        payload: &[u8],
    ) -> Result<u64, QueueError> {
        self.queue_command(now, |q, ctx| q.enqueue(now, ctx, shard, payload))
    }

    /// Asks the owner of `shard`'s queue for an item; [`QueueEvent::Leased`] or
    /// [`QueueEvent::Empty`].
    pub fn queue_lease(&mut self, now: Instant, shard: ShardId) -> Result<u64, QueueError> {
        self.queue_command(now, |q, ctx| q.lease(now, ctx, shard))
    }

    /// Asks the owner of `shard`'s queue for up to `max` items in one request (see
    /// [`Queues::lease_up_to`]): [`QueueEvent::LeasedItems`] (or [`QueueEvent::Leased`] for a
    /// lease of one) or [`QueueEvent::Empty`].
    pub fn queue_lease_up_to(
        &mut self,
        now: Instant,
        shard: ShardId,
        max: u16,
    ) -> Result<u64, QueueError> {
        self.queue_command(now, |q, ctx| q.lease_up_to(now, ctx, shard, max))
    }

    /// Extends the lease of the token's item; [`QueueEvent::Accepted`] or
    /// [`QueueEvent::Refused`] (a stale token: stop working on it).
    pub fn queue_heartbeat(
        &mut self,
        now: Instant,
        shard: ShardId,
        token: OwnershipToken,
    ) -> Result<u64, QueueError> {
        self.queue_command(now, |q, ctx| {
            q.finish(now, ctx, shard, token, FinishOp::Heartbeat)
        })
    }

    /// Completes the token's item; [`QueueEvent::Accepted`] once the replicas hold the
    /// completion, or [`QueueEvent::Refused`].
    pub fn queue_complete(
        &mut self,
        now: Instant,
        shard: ShardId,
        token: OwnershipToken,
    ) -> Result<u64, QueueError> {
        self.queue_command(now, |q, ctx| {
            q.finish(now, ctx, shard, token, FinishOp::Complete)
        })
    }

    /// Fails the token's item (requeued if `requeue` and attempts remain, else
    /// dead-lettered); answered as [`queue_complete`](Self::queue_complete).
    pub fn queue_fail(
        &mut self,
        now: Instant,
        shard: ShardId,
        token: OwnershipToken,
        requeue: bool,
    ) -> Result<u64, QueueError> {
        self.queue_command(now, |q, ctx| {
            q.finish(now, ctx, shard, token, FinishOp::Fail { requeue })
        })
    }

    /// As owner of `shard`'s queue: takes every pending item out (see [`Queues::drain`]).
    pub fn queue_drain(
        &mut self,
        now: Instant,
        shard: &ShardId,
    ) -> Result<Vec<(Origin, Vec<u8>)>, QueueError> {
        self.queue_command(now, |q, ctx| q.drain(now, ctx, shard))
    }

    /// As owner of `shard`'s queue: puts items back (see [`Queues::restore`]).
    pub fn queue_restore(
        &mut self,
        now: Instant,
        shard: &ShardId,
        items: &[(Origin, Vec<u8>)],
    ) -> Result<usize, QueueError> {
        self.queue_command(now, |q, ctx| q.restore(now, ctx, shard, items))
    }

    /// Stops contending for `scope`; a lease held stays held until released, transferred or
    /// expired (see [`Campaign::withdraw`]).
    pub fn withdraw_campaign(&mut self, scope: &Scope) {
        if let Some(campaign) = &mut self.campaign {
            campaign.withdraw(scope);
        }
    }

    // ---- outputs -------------------------------------------------------------------------------

    /// The next write the voter recorded, to make durable before anything polled after it is
    /// sent (see [`LeaseGroup::poll_durable`]).
    #[must_use = "a durable write not written breaks Raft's persistence rule"]
    pub fn poll_durable(&mut self) -> Option<DurableWrite> {
        self.group.as_mut()?.poll_durable()
    }

    /// The next queue checkpoint record, to make durable before any datagram polled after it
    /// that [`waits_for_durable`] is sent (see [`QueueDurableWrite`]). Only a node that records
    /// them has any.
    pub fn poll_queue_durable(&mut self) -> Option<QueueDurableWrite> {
        self.queues.as_mut()?.poll_durable()
    }

    /// Writes the next datagram (channel byte, then payload) into `buf`, cleared first, and says
    /// where it goes: membership's first, then the lease components'.
    #[must_use = "a transmit not sent is a probe, an update or a lease message lost"]
    pub fn poll_transmit(&mut self, now: Instant, buf: &mut Vec<u8>) -> Option<Transmit> {
        while let Some(t) = self.membership.poll_transmit(now, buf) {
            if t.to == self.id {
                self.stats.self_addressed_dropped += 1;
                continue;
            }
            buf.insert(0, Channel::Membership.byte());
            return Some(Transmit {
                to: t.to,
                len: t.len + 1,
            });
        }
        if let Some((to, message)) = self.shard_outbox.pop_front() {
            buf.clear();
            buf.push(Channel::Shard.byte());
            message.encode(buf);
            return Some(Transmit { to, len: buf.len() });
        }
        if self.queue_outbox.is_empty() && self.queues.as_ref().is_some_and(Queues::has_unflushed) {
            // The replication batches and replica acknowledgements of every input since the
            // last poll, together (see `Queues::flush`); they make no durable write, so the
            // order durable writes first, then transmits, holds.
            if let Some(queues) = &mut self.queues {
                queues.flush(now);
            }
            self.collect_queue_outputs(now);
        }
        if let Some((to, message)) = self.queue_outbox.pop_front() {
            buf.clear();
            buf.push(Channel::Queue.byte());
            message.encode(buf);
            return Some(Transmit { to, len: buf.len() });
        }
        let (to, payload) = self.lease_outbox.pop_front()?;
        Channel::Lease.frame(&payload, buf);
        self.recycle(payload);
        Some(Transmit { to, len: buf.len() })
    }

    /// The next event for the application.
    #[must_use]
    pub fn poll_event(&mut self) -> Option<Event> {
        self.events.pop_front()
    }

    /// When [`handle_timeout`](Self::handle_timeout) should next be called: the earliest
    /// deadline of any component.
    #[must_use]
    pub fn poll_timeout(&self) -> Option<Instant> {
        [
            self.membership.poll_timeout(),
            self.group.as_ref().and_then(LeaseGroup::poll_timeout),
            self.client.as_ref().and_then(LeaseClient::poll_timeout),
            // The campaign acts through the client: without one it never comes due.
            self.client
                .as_ref()
                .and(self.campaign.as_ref())
                .and_then(Campaign::poll_timeout),
            self.client
                .as_ref()
                .and(self.shard_member.as_ref())
                .and_then(ShardMember::poll_timeout),
            self.coordinator
                .as_ref()
                .and_then(Coordinator::poll_timeout),
            self.queues.as_ref().and_then(Queues::poll_timeout),
        ]
        .into_iter()
        .flatten()
        .min()
    }

    // ---- views ---------------------------------------------------------------------------------

    /// This node's id.
    pub fn local_id(&self) -> NodeId {
        self.id
    }

    /// The incarnation this node announces.
    pub fn incarnation(&self) -> Incarnation {
        self.membership.incarnation()
    }

    /// The node's membership (members, metadata, health, counters).
    pub fn membership(&self) -> &Membership {
        &self.membership
    }

    /// The node's voter, if it is one.
    pub fn lease_group(&self) -> Option<&LeaseGroup> {
        self.group.as_ref()
    }

    /// The node's lease client, if it runs one.
    pub fn lease_client(&self) -> Option<&LeaseClient> {
        self.client.as_ref()
    }

    /// The client's campaign, if the node runs a lease client.
    pub fn campaign(&self) -> Option<&Campaign> {
        self.campaign.as_ref()
    }

    /// The token under which this node holds `scope` at `now`, if it does (see
    /// [`LeaseClient::holds`]).
    pub fn holds(&self, now: Instant, scope: &Scope) -> Option<FencingToken> {
        self.client.as_ref()?.holds(now, scope)
    }

    /// Every lease this node holds (see [`LeaseClient::held`]).
    pub fn held(&self) -> impl Iterator<Item = (&Scope, &HeldLease)> {
        self.client.iter().flat_map(LeaseClient::held)
    }

    /// The node's shard coordinator, if it is a voter with shards (acting while
    /// [`Coordinator::term`] is `Some`).
    pub fn shard_coordinator(&self) -> Option<&Coordinator> {
        self.coordinator.as_ref()
    }

    /// The node's shard member, if it takes part in shards.
    pub fn shard_member(&self) -> Option<&ShardMember> {
        self.shard_member.as_ref()
    }

    /// How many configured shards this node holds at `now`.
    pub fn shards_held(&self, now: Instant) -> usize {
        match (&self.shard_member, &self.client) {
            (Some(m), Some(c)) => m.held(now, c),
            _ => 0,
        }
    }

    /// Whether this node is draining and holds no shard.
    pub fn shards_drained(&self, now: Instant) -> bool {
        match (&self.shard_member, &self.client) {
            (Some(m), Some(c)) => m.is_drained(now, c),
            _ => false,
        }
    }

    /// The node's task queues, if it runs them.
    pub fn queues(&self) -> Option<&Queues> {
        self.queues.as_ref()
    }

    /// The context the queues read: this node's membership and lease client.
    pub fn queue_context(&self) -> QueueContext<'_> {
        QueueContext {
            membership: &self.membership,
            client: self.client.as_ref(),
        }
    }

    /// The node's own counters.
    pub fn stats(&self) -> NodeStats {
        self.stats
    }

    // ---- internals -----------------------------------------------------------------------------

    fn lease_command(
        &mut self,
        now: Instant,
        command: impl FnOnce(&mut LeaseClient) -> Result<RequestId, LeaseError>,
    ) -> Result<RequestId, CommandError> {
        let client = self.client.as_mut().ok_or(CommandError::NoLeaseClient)?;
        let request = command(client)?;
        self.settle(now);
        Ok(request)
    }

    fn queue_command<T>(
        &mut self,
        now: Instant,
        command: impl FnOnce(&mut Queues, QueueContext<'_>) -> Result<T, QueueError>,
    ) -> Result<T, QueueError> {
        let queues = self.queues.as_mut().ok_or(QueueError::NoQueues)?;
        let ctx = QueueContext {
            membership: &self.membership,
            client: self.client.as_ref(),
        };
        let result = command(queues, ctx);
        self.settle(now);
        result
    }

    /// Hands one queue message to the queues.
    fn handle_queue(
        &mut self,
        now: Instant,
        from: NodeId,
        payload: &[u8],
    ) -> Result<(), DatagramError> {
        let result = match QueueMessage::decode(payload) {
            Err(e) => Err(DatagramError::QueueDecode(e)),
            Ok(message) => match &mut self.queues {
                None => Err(DatagramError::NoQueues),
                Some(queues) => {
                    let ctx = QueueContext {
                        membership: &self.membership,
                        client: self.client.as_ref(),
                    };
                    queues
                        .handle_message(now, ctx, from, message)
                        .map_err(DatagramError::QueueRefused)
                }
            },
        };
        if result.is_err() {
            self.stats.queue_refused += 1;
        }
        result
    }

    /// Drains the queues: metadata writes to membership, messages for this node handed back
    /// in-process (within bounded rounds), the others to the outbox, events to the host; and
    /// first, the shards served compared with the leases held.
    fn collect_queue_outputs(&mut self, now: Instant) {
        let Some(queues) = &mut self.queues else {
            return;
        };
        let ctx = QueueContext {
            membership: &self.membership,
            client: self.client.as_ref(),
        };
        queues.sync(now, ctx);
        // One more poll than rounds: what is left for this node after the last round is
        // dropped (its sender retries).
        for round in 0..=MAX_QUEUE_SELF_ROUNDS {
            let mut local = Vec::new();
            while let Some((to, message)) = queues.poll_message() {
                if to == self.id && round < MAX_QUEUE_SELF_ROUNDS {
                    local.push(message);
                } else if to != self.id && self.queue_outbox.len() < crate::queue::MAX_QUEUE_OUTBOX
                {
                    self.queue_outbox.push_back((to, message));
                } else {
                    self.stats.outbox_dropped += 1;
                }
            }
            if local.is_empty() {
                break;
            }
            for message in local {
                self.stats.self_delivered += 1;
                let ctx = QueueContext {
                    membership: &self.membership,
                    client: self.client.as_ref(),
                };
                // The node's own messages are for shards it was configured with.
                let _ = queues.handle_message(now, ctx, self.id, message);
            }
        }
        while let Some((key, value)) = queues.poll_metadata() {
            // Keys are short (`q/{ns}/{id}`, at most 64 bytes for namespaces of up to 50
            // characters) and values 29 bytes: a refusal is a namespace too long to publish.
            let written = match &value {
                Some(v) => self.membership.set_metadata(now, &key, v),
                None => self.membership.delete_metadata(now, &key),
            };
            if let Ok(version) = written {
                let event = QueueEvent::Published {
                    key,
                    value,
                    version,
                };
                push_bounded(&mut self.events, &mut self.stats, Event::Queue(event));
            }
        }
        while let Some(event) = queues.poll_event() {
            push_bounded(&mut self.events, &mut self.stats, Event::Queue(event));
        }
    }

    fn set_shard_role(&mut self, now: Instant, role: ShardRole) -> Result<(), CommandError> {
        let (Some(member), Some(client)) = (&mut self.shard_member, &self.client) else {
            return Err(CommandError::NoShardMember);
        };
        member.set_role(now, role, client);
        self.settle(now);
        Ok(())
    }

    /// Hands one shard message to the member (an instruction) or the coordinator (an
    /// announce).
    fn handle_shard(
        &mut self,
        now: Instant,
        from: NodeId,
        payload: &[u8],
    ) -> Result<(), DatagramError> {
        let message = ShardMessage::decode(payload).inspect_err(|_| {
            self.stats.shard_refused += 1;
        })?;
        let handled = self.handle_shard_message(now, from, &message);
        if handled.is_err() {
            self.stats.shard_refused += 1;
        }
        handled
    }

    fn handle_shard_message(
        &mut self,
        now: Instant,
        from: NodeId,
        message: &ShardMessage,
    ) -> Result<(), DatagramError> {
        match message {
            ShardMessage::Instruction(instruction) => {
                match (&mut self.shard_member, &mut self.client) {
                    (Some(member), Some(client)) => {
                        member.handle_instruction(now, from, instruction, client);
                        Ok(())
                    }
                    _ => Err(DatagramError::NoShardMember),
                }
            }
            ShardMessage::Announce(announce) => match &mut self.coordinator {
                Some(coordinator) => {
                    coordinator.handle_announce(from, announce.role);
                    Ok(())
                }
                None => Err(DatagramError::NoCoordinator),
            },
        }
    }

    /// Hands one lease payload to the state machine its header names.
    fn handle_lease(
        &mut self,
        now: Instant,
        from: NodeId,
        payload: &[u8],
    ) -> Result<(), DatagramError> {
        let result = match crate::lease::recipient(payload) {
            Ok(recipient @ Recipient::Group) => match &mut self.group {
                Some(group) => group.handle_message(now, from, payload).map_err(Into::into),
                None => Err(DatagramError::NotRunning { recipient }),
            },
            Ok(recipient @ Recipient::Client) => match &mut self.client {
                Some(client) => client
                    .handle_message(now, from, payload)
                    .map_err(Into::into),
                None => Err(DatagramError::NotRunning { recipient }),
            },
            Err(error) => Err(MessageError::from(error).into()),
        };
        if result.is_err() {
            self.stats.lease_refused += 1;
        }
        result
    }

    /// After every input: collects every component's events (wiring the campaign to them),
    /// takes the lease components' datagrams, and hands the self-addressed ones back, within
    /// [`MAX_SELF_DELIVERY_ROUNDS`].
    fn settle(&mut self, now: Instant) {
        self.retire_raft_join(now);
        self.drain_membership_events(now);
        self.settle_leases(now);
        if self.queues.is_some() {
            self.collect_queue_outputs(now);
            // Its metadata writes may have made membership events.
            self.drain_membership_events(now);
        }
    }

    /// Membership's events to the host, with the campaign and the queues' health tracker
    /// reading along.
    fn drain_membership_events(&mut self, now: Instant) {
        while let Some(event) = self.membership.poll_event() {
            if let membership::Event::MemberStateChanged { node, .. }
            | membership::Event::MetadataChanged { node, .. } = event
            {
                self.note_joiner(node);
            }
            if let membership::Event::MemberStateChanged { node, to, .. } = event {
                let down = matches!(to, MemberState::Left | MemberState::Dead);
                if down && let Some(campaign) = &mut self.campaign {
                    campaign.holder_gone(now, node);
                }
                if let Some(queues) = &mut self.queues {
                    queues.on_member(now, node, down);
                }
            }
            self.push_event(Event::Membership(event));
        }
    }

    /// A joining voter stops publishing [`RAFT_JOIN_KEY`] once a configuration that names it
    /// applies: from then on it takes Raft messages from that configuration's voters.
    fn retire_raft_join(&mut self, now: Instant) {
        let configured = self
            .group
            .as_ref()
            .is_some_and(|g| g.voters().any(|v| v == self.id));
        let published = self
            .membership
            .metadata(self.id)
            .is_some_and(|m| m.get(RAFT_JOIN_KEY).is_some());
        if configured && published {
            let _ = self.membership.delete_metadata(now, RAFT_JOIN_KEY);
        }
    }

    /// Tells this node's voter what member `node` takes Raft messages from if it is a live
    /// joining voter ([`RAFT_JOIN_KEY`] in its metadata), so that a leader it refuses hands
    /// leadership on (see [`LeaseGroup::set_joiner_accepts`]).
    fn note_joiner(&mut self, node: NodeId) {
        let Some(group) = &mut self.group else {
            return;
        };
        let alive = self
            .membership
            .member(node)
            .is_some_and(|m| m.state == MemberState::Alive);
        let accepts = self
            .membership
            .metadata(node)
            .and_then(|m| m.get(RAFT_JOIN_KEY))
            .filter(|_| alive)
            .map(|value| parse_raft_join(value).into_iter().collect());
        group.set_joiner_accepts(node, accepts);
    }

    /// The lease components' outputs and their self-deliveries.
    fn settle_leases(&mut self, now: Instant) {
        for _ in 0..MAX_SELF_DELIVERY_ROUNDS {
            self.collect_lease_outputs(now);
            if self.loopback.is_empty() {
                return;
            }
            let batch = core::mem::take(&mut self.loopback);
            for payload in batch {
                self.stats.self_delivered += 1;
                // A refusal is counted; the node's own datagrams are refused only if a state
                // machine stopped meanwhile (a voter stopped by its disk).
                let _ = self.handle_lease(now, self.id, &payload);
                self.recycle(payload);
            }
        }
        self.collect_lease_outputs(now);
        if !self.loopback.is_empty() {
            self.stats.self_delivery_rounds_exhausted += 1;
        }
    }

    /// Drains the voter, then the client: datagrams to the outbox (or the loopback), events to
    /// the queue, with the campaign reading along.
    fn collect_lease_outputs(&mut self, now: Instant) {
        if let Some(group) = &mut self.group {
            while let Some(t) = group.poll_transmit(now, &mut self.scratch) {
                route(
                    self.id,
                    t,
                    &self.scratch,
                    &mut self.spare,
                    &mut self.lease_outbox,
                    &mut self.loopback,
                    &mut self.stats,
                );
            }
            while let Some(event) = group.poll_event() {
                // The node's own client asks the voters its voter applied: a voter added by an
                // operator answers requests from then on, a removed one no longer does.
                if let (GroupEvent::VotersChanged { voters }, Some(client)) =
                    (&event.event, &mut self.client)
                {
                    client.set_voters(voters);
                }
                if let Some(coordinator) = &mut self.coordinator {
                    if let GroupEvent::SnapshotInstalled { .. } = event.event {
                        coordinator.resync(group.table());
                    } else {
                        coordinator.handle_group_event(now, &event.event);
                    }
                }
                push_bounded(&mut self.events, &mut self.stats, Event::Group(event));
            }
            if let Some(campaign) = &mut self.campaign {
                campaign.defer_acquisitions(group.is_leader());
            }
        }
        // Before the client drains: what the member asks of it goes out in this same pass.
        self.collect_shard_outputs(now);
        if let Some(client) = &mut self.client {
            while let Some(t) = client.poll_transmit(now, &mut self.scratch) {
                route(
                    self.id,
                    t,
                    &self.scratch,
                    &mut self.spare,
                    &mut self.lease_outbox,
                    &mut self.loopback,
                    &mut self.stats,
                );
            }
            while let Some(event) = client.poll_event() {
                if let Some(campaign) = &mut self.campaign {
                    campaign.handle_event(now, &event.event);
                }
                if let Some(member) = &mut self.shard_member {
                    member.handle_event(now, &event.event, client);
                }
                push_bounded(&mut self.events, &mut self.stats, Event::Leadership(event));
            }
        }
        self.collect_shard_outputs(now);
    }

    /// Drains the coordinator (its instructions for this node go to the member in-process, the
    /// others to the outbox) and both shard components' events.
    fn collect_shard_outputs(&mut self, now: Instant) {
        let mut local = Vec::new();
        if let Some(member) = &mut self.shard_member {
            while let Some((to, message)) = member.poll_message() {
                local.push((to, message));
            }
        }
        if let Some(coordinator) = &mut self.coordinator {
            while let Some((to, instruction)) = coordinator.poll_instruction() {
                local.push((to, ShardMessage::Instruction(instruction)));
            }
        }
        for (to, message) in local {
            if to != self.id {
                if self.shard_outbox.len() < MAX_LEASE_OUTBOX_DATAGRAMS {
                    self.shard_outbox.push_back((to, message));
                } else {
                    self.stats.outbox_dropped += 1;
                }
                continue;
            }
            self.stats.self_delivered += 1;
            // The node's own messages reach a component it runs, or nothing.
            let _ = self.handle_shard_message(now, self.id, &message);
        }
        if let Some(coordinator) = &mut self.coordinator {
            while let Some(event) = coordinator.poll_event() {
                push_bounded(&mut self.events, &mut self.stats, Event::Shard(event));
            }
        }
        if let Some(member) = &mut self.shard_member {
            while let Some(event) = member.poll_event() {
                push_bounded(&mut self.events, &mut self.stats, Event::Shard(event));
            }
        }
    }

    fn push_event(&mut self, event: Event) {
        push_bounded(&mut self.events, &mut self.stats, event);
    }

    fn recycle(&mut self, mut payload: Vec<u8>) {
        if self.spare.len() < MAX_SPARE_BUFFERS {
            payload.clear();
            self.spare.push(payload);
        }
    }
}

/// Queues one lease datagram written in `scratch`: for this node itself, to be handed back;
/// for anyone else, to the host.
fn route(
    own: NodeId,
    t: Transmit,
    scratch: &[u8],
    spare: &mut Vec<Vec<u8>>,
    outbox: &mut VecDeque<(NodeId, Vec<u8>)>,
    loopback: &mut VecDeque<Vec<u8>>,
    stats: &mut NodeStats,
) {
    if t.to != own && outbox.len() >= MAX_LEASE_OUTBOX_DATAGRAMS {
        stats.outbox_dropped += 1;
        return;
    }
    let mut payload = spare.pop().unwrap_or_default();
    payload.extend_from_slice(&scratch[..t.len]);
    if t.to == own {
        loopback.push_back(payload);
    } else {
        outbox.push_back((t.to, payload));
    }
}

fn push_bounded(events: &mut VecDeque<Event>, stats: &mut NodeStats, event: Event) {
    if events.len() >= MAX_PENDING_EVENTS {
        events.pop_front();
        stats.events_dropped += 1;
    }
    events.push_back(event);
}

/// The seed of one child component: the first word of ChaCha8 keyed by the node's seed, on the
/// component's own stream.
fn child_seed(seed: u64, stream: u64) -> u64 {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    rng.set_stream(stream);
    rng.next_u64()
}

#[cfg(test)]
mod tests;
mod voters;

pub use self::voters::{VoterChange, VoterChangeError, quorum};

/// The metadata key a joining voter ([`Node::with_joining_voter`]) publishes, until a
/// configuration reaches it, with the voters it takes Raft messages from (comma-separated ids,
/// e.g. `1,2,3`). The node speaks for itself here, as a member may. A leader reads it to refuse
/// adding a joiner that would refuse its log, and to hand leadership to a voter a lagging
/// joiner takes messages from ([`LeaseGroup::set_joiner_accepts`]).
pub const RAFT_JOIN_KEY: &str = "raft_join";

/// Whether `datagram` (a whole datagram from [`Node::poll_transmit`]) tells its recipient what
/// this node's queue replicas hold ([`QueueMessage::waits_for_durable`]), so that a host which
/// makes [`Node::poll_queue_durable`]'s records durable off its own task must hold it until
/// every record polled before it is durable. Everything else (membership, leases, shards, queue
/// requests, answers and an owner's batches) promises nothing about this node's disk: holding
/// it too made probes, lease renewals and every request of a replica wait for its disk.
pub fn waits_for_durable(datagram: &[u8]) -> bool {
    matches!(Channel::split(datagram), Ok((Channel::Queue, payload)) if QueueMessage::waits_for_durable(payload))
}

/// Whether `datagram` (a whole datagram from [`Node::poll_transmit`]) is a queue replica's
/// acknowledgement of the batches it applied ([`QueueMessage::is_replica_ack`]): of the
/// datagrams [`waits_for_durable`] names, the only one a host may send once the records polled
/// before it are written but not yet synced, if it accepts that an acknowledged item then rests
/// on the page cache of the replica's operating system until the sync (see
/// `docs/task-queues.md`, "Guarantees, and what they rest on").
pub fn is_replica_ack(datagram: &[u8]) -> bool {
    matches!(Channel::split(datagram), Ok((Channel::Queue, payload)) if QueueMessage::is_replica_ack(payload))
}

/// The voter ids of a [`RAFT_JOIN_KEY`] value; what does not parse as an id is skipped.
pub fn parse_raft_join(value: &[u8]) -> Vec<NodeId> {
    core::str::from_utf8(value)
        .unwrap_or_default()
        .split(',')
        .filter_map(|id| id.trim().parse::<u64>().ok())
        .filter(|id| *id != 0)
        .map(NodeId::new)
        .collect()
}
