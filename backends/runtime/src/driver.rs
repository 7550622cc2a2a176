//! The tokio driver of the core's [`Node`]: one future per node, shaped like quinn's
//! `ConnectionDriver`.
//!
//! Each poll feeds the node its inputs (commands from [`NodeHandle`]s, datagrams from the
//! [`Transport`], the timer), makes the voter's recorded writes durable, drains `poll_transmit`
//! into the transport and `poll_event` into a broadcast channel (membership events) and the
//! leadership host ([`crate::lease_host`]: feed, waiting requests), re-arms one
//! `tokio::time::Sleep` to `poll_timeout`, and goes round again while there was progress,
//! within a fixed budget per poll. Time comes from a [`Clock`]. The driver holds no protocol
//! logic: the node frames datagrams by [`Channel`], delivers its own lease datagrams to itself
//! and wires its campaign; the driver only keeps the address book (NodeId -> SocketAddr) that
//! members publish under the [`ADDR_KEY`] metadata key, and counts traffic per channel.

use std::collections::{BTreeMap, VecDeque};
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use meshkit::lease::{FencingToken, LeaseError, Scope, Term};
use meshkit::membership::{Event, ForceLeave, ForceLeaveError, MemberState, MetadataError, Stats};
pub use meshkit::node::Channel;
use meshkit::node::{Event as NodeEvent, Node, VoterChange, VoterChangeError};
use meshkit::shard::Plan;
use meshkit::{Duration, Incarnation, Instant, MetaVersion, NodeId, RATE_ONE_PPM, SkewedClock};
use thiserror::Error;
use tokio::sync::{broadcast, mpsc, oneshot};
use tokio::time::Sleep;

use crate::chaos_host::{
    ChaosCommand, ChaosConfig, ChaosEffects, ChaosError, ChaosHost, ChaosStats, ExperimentRef,
    ExperimentStatus,
};
pub use crate::error::{DriverStopped, LeadershipError};
use crate::lease_host::{
    FeedEntry, FeedGap, Leadership, LeadershipConfig, LeadershipStats, LeadershipView,
    LeaseOutcome, LeaseRequest,
};
use crate::queue_host::{
    AckAfter, BackpressureView, Enqueued, Finish, LeasedItem, QueueCallError, QueueCommand,
    QueueHost, QueueStartError, QueueStatus, QueuesConfig,
};
use meshkit::diag::fault::{BlastRadius, ClusterView, FaultPlan};
use meshkit::queue::{Origin, OwnershipToken};
use meshkit::shard::ShardId;
use meshkit_net::clock::Clock;
use meshkit_net::transport::{Transport, TransportStats};

/// How long [`NodeHandle::transfer`] waits out a renewal of the scope in flight on this node.
pub const IN_FLIGHT_WAIT: Duration = Duration::from_secs(5);
/// How often [`NodeHandle::transfer`] asks again while a renewal is in flight.
pub const IN_FLIGHT_RETRY: Duration = Duration::from_millis(20);

/// The metadata key under which every node publishes the address its transport listens on.
pub const ADDR_KEY: &str = "addr";
/// Commands queued for the driver before [`NodeHandle`] calls wait.
pub const COMMAND_QUEUE_LEN: usize = 64;
/// Events kept for slow subscribers; past this a subscriber sees `Lagged`.
pub const EVENT_CHANNEL_LEN: usize = 1024;
/// Input/output rounds per poll before the driver yields to other tasks (and re-wakes itself).
pub const MAX_ROUNDS_PER_POLL: usize = 16;
/// Datagrams or commands taken per round.
pub const MAX_INPUTS_PER_ROUND: usize = 64;
/// When the core has no timer at all, the driver still wakes this often.
const IDLE_WAKE: Duration = Duration::from_secs(3600);
/// Datagrams held while the queue checkpoints they follow are synced (the queue host's group
/// commit; only a replica's acknowledgements, offers and chunks wait, see
/// `meshkit::node::waits_for_durable`); past it the newest are dropped, as a full network
/// queue would (every sender retries).
pub const MAX_HELD_TRANSMITS: usize = 65_536;
/// The metadata key a draining node sets, so that operators and peers see the drain.
pub const DRAIN_KEY: &str = "draining";
/// The metadata key under which every node publishes its software version.
pub const VERSION_KEY: &str = "version";
/// The metadata key under which every node publishes its wire protocol versions
/// (`membership/lease`, e.g. `2/1`).
pub const WIRE_KEY: &str = "wire";
/// The metadata key a node declares its cluster under (`[metadata] cluster = ...`).
pub const CLUSTER_KEY: &str = "cluster";
/// The metadata key a node declares its region under (`[metadata] region = ...`).
pub const REGION_KEY: &str = "region";
/// The metadata key under which a node with a control endpoint publishes where it answers
/// (`host:port`), so that an operator's tool can reach every member from any one of them.
pub const CONTROL_KEY: &str = "control";
/// The metadata key a node running a Raft voter (a founder, or a joining voter) publishes as
/// `voter`: only such a node can be added to the voter set (`POST /control/voters/add`), since
/// a node without one would count toward the quorum and never vote. The node speaks for itself
/// here, which is all a member may do.
pub const RAFT_KEY: &str = "raft";
/// The metadata key a joining voter publishes with the voters it takes Raft messages from until
/// it is added (its `[leadership] voters`, comma-separated ids). The Raft leader refuses to add
/// a joining voter that does not list it: the new voter would refuse the leader's log and never
/// catch up, while counting toward the quorum. The node speaks for itself here too.
pub const RAFT_JOIN_KEY: &str = meshkit::node::RAFT_JOIN_KEY;
/// Keys the node itself publishes; configuration may not set them.
pub const RESERVED_KEYS: [&str; 7] = [
    ADDR_KEY,
    CONTROL_KEY,
    DRAIN_KEY,
    VERSION_KEY,
    WIRE_KEY,
    RAFT_KEY,
    RAFT_JOIN_KEY,
];

/// What one [`Channel`] moved through the transport, as the driver counted it: each datagram with
/// its channel byte, QUIC and UDP headers not included. The counters only grow.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct ChannelTraffic {
    /// Datagrams handed to the transport (it may still drop them: see [`TransportStats`]).
    pub datagrams_sent: u64,
    /// Their bytes.
    pub bytes_sent: u64,
    /// Datagrams taken from the transport for this channel (before the core decodes them).
    pub datagrams_received: u64,
    /// Their bytes.
    pub bytes_received: u64,
}

/// [`ChannelTraffic`] per [`Channel`], for metrics and benchmarks.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Traffic {
    /// Gossip membership.
    pub membership: ChannelTraffic,
    /// Raft between voters and lease requests.
    pub lease: ChannelTraffic,
    /// The shard coordinator's instructions.
    pub shard: ChannelTraffic,
    /// Task queues: requests, answers, replication and recovery.
    pub queue: ChannelTraffic,
}

impl Traffic {
    fn channel_mut(&mut self, channel: Channel) -> &mut ChannelTraffic {
        match channel {
            Channel::Membership => &mut self.membership,
            Channel::Lease => &mut self.lease,
            Channel::Shard => &mut self.shard,
            Channel::Queue => &mut self.queue,
        }
    }

    fn count_sent(&mut self, channel: Channel, bytes: usize) {
        let c = self.channel_mut(channel);
        c.datagrams_sent += 1;
        c.bytes_sent += bytes as u64;
    }

    fn count_received(&mut self, channel: Channel, bytes: usize) {
        let c = self.channel_mut(channel);
        c.datagrams_received += 1;
        c.bytes_received += bytes as u64;
    }
}

/// A seed peer to join through: its id and the address its transport listens on. (Named so
/// apart from the `seed: u64` that seeds a node's random number generator.)
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SeedPeer {
    /// The seed's node id (its certificate must name it).
    pub id: NodeId,
    /// Where it listens.
    pub addr: SocketAddr,
}

impl SeedPeer {
    /// Parses `id@host:port` (`2@127.0.0.1:7002`), as `node.toml`'s `seeds` and
    /// `POST /control/join` write it; `None` when it is not that.
    pub fn parse(text: &str) -> Option<Self> {
        let (id, addr) = text.split_once('@')?;
        Some(Self {
            id: NodeId::new(id.trim().parse().ok()?),
            addr: addr.trim().parse().ok()?,
        })
    }
}

/// One member as a [`Snapshot`] shows it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PeerInfo {
    /// The member.
    pub id: NodeId,
    /// Its state.
    pub state: MemberState,
    /// Its incarnation.
    pub incarnation: Incarnation,
    /// Smoothed round-trip time of direct probes, once measured.
    pub rtt: Option<Duration>,
    /// Its metadata as this node holds it (live keys only; values as lossy UTF-8).
    pub metadata: BTreeMap<String, String>,
    /// How long ago this node saw it change state.
    pub last_change_ago: Duration,
    /// The address the driver would dial it at.
    pub addr: Option<SocketAddr>,
}

/// A consistent copy of one node's view, taken by the driver between two inputs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Snapshot {
    /// This node.
    pub local_id: NodeId,
    /// Every member known, this node included, in id order.
    pub peers: Vec<PeerInfo>,
    /// The core's counters.
    pub stats: Stats,
    /// The transport's counters.
    pub transport: TransportStats,
    /// Datagrams and bytes per channel, counted by the driver.
    pub traffic: Traffic,
    /// Lifeguard's local health score (0 = healthy).
    pub health_score: u32,
    /// The node's leadership state and counters, when it runs leadership.
    pub leadership: Option<(LeadershipView, LeadershipStats)>,
    /// Whether the node has been drained (and not resumed).
    pub draining: bool,
    /// Whether it was told to join through seeds (so it expects other members).
    pub joined: bool,
    /// When the node's certificate expires, in Unix seconds, if the driver was told.
    pub cert_not_after: Option<i64>,
    /// The node's task queues, when it runs them (`[queues]`).
    pub queues: Option<QueueStatus>,
    /// The `mesh_chaos_*` counters (all zero while `[chaos]` is off).
    pub chaos: ChaosStats,
}

impl Snapshot {
    /// Members in `state`, this node included.
    pub fn count(&self, state: MemberState) -> usize {
        self.peers.iter().filter(|p| p.state == state).count()
    }

    /// The view of member `id`, if known.
    pub fn peer(&self, id: NodeId) -> Option<&PeerInfo> {
        self.peers.iter().find(|p| p.id == id)
    }
}

/// Why [`NodeHandle::set_metadata`] failed.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum SetMetadataError {
    /// The core refused the write (caller misuse: key or size over its limits); nothing changed.
    #[error(transparent)]
    Refused(#[from] MetadataError),
    /// The driver has stopped.
    #[error(transparent)]
    Stopped(#[from] DriverStopped),
}

/// Why [`NodeHandle::force_leave`] failed.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum ForceLeaveFailed {
    /// The core refused (the operator named this node, an unknown member, or one it does not
    /// hold dead); nothing changed.
    #[error(transparent)]
    Refused(#[from] ForceLeaveError),
    /// The driver has stopped.
    #[error(transparent)]
    Stopped(#[from] DriverStopped),
}

/// Why [`NodeHandle::change_voters`] was refused. Nothing was proposed.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum VotersError {
    /// The node runs no leadership (no `[leadership]` section).
    #[error("this node runs no leadership")]
    Disabled,
    /// The node to add runs no Raft voter (it does not publish `raft = voter`): it would count
    /// toward the quorum and never vote (caller misuse).
    #[error(
        "{node} runs no Raft voter: start it with [leadership] join_as_voter = true (and the group's voters) before adding it"
    )]
    NotJoinable {
        /// The node named.
        node: NodeId,
    },
    /// The joining voter to add takes Raft messages only from `accepts` until it is added, and
    /// the leader is not among them: it would never catch up (caller misuse: restart it with
    /// the current voters in its `[leadership] voters`).
    #[error(
        "{node} takes Raft messages only from {accepts:?} until it is added, and the leader {leader} is not one of them: restart it with the current voters in [leadership] voters"
    )]
    LeaderNotTrusted {
        /// The node named.
        node: NodeId,
        /// The voters it published (`raft_join`).
        accepts: Vec<u64>,
        /// The Raft leader, this node.
        leader: NodeId,
    },
    /// The core refused the change (not the leader, one in progress, quorum, target).
    #[error(transparent)]
    Change(#[from] VoterChangeError),
    /// The driver has stopped.
    #[error(transparent)]
    Stopped(#[from] DriverStopped),
}

/// A voter change the leader proposed (not yet committed).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VotersProposed {
    /// The leader that proposed it (this node).
    pub leader: NodeId,
    /// The voters before the change.
    pub voters: Vec<NodeId>,
    /// The voters once it is applied.
    pub proposed: Vec<NodeId>,
}

#[derive(Debug)]
enum Command {
    Join(Vec<SeedPeer>),
    ForceLeave {
        node: NodeId,
        reply: oneshot::Sender<Result<ForceLeave, ForceLeaveError>>,
    },
    SetMetadata {
        key: String,
        value: Vec<u8>,
        reply: oneshot::Sender<Result<MetaVersion, MetadataError>>,
    },
    Leave,
    Snapshot(oneshot::Sender<Snapshot>),
    Leadership(oneshot::Sender<Option<LeadershipView>>),
    Feed {
        after: u64,
        reply: oneshot::Sender<Option<FeedSubscription>>,
    },
    Lease {
        request: LeaseRequest,
        reply: oneshot::Sender<LeaseOutcome>,
    },
    Drain(oneshot::Sender<Vec<Scope>>),
    Rebalance {
        dry_run: bool,
        reply: oneshot::Sender<Result<(Plan, Term), meshkit::node::CommandError>>,
    },
    Resume(oneshot::Sender<bool>),
    Voters {
        change: VoterChange,
        reply: oneshot::Sender<Result<VotersProposed, VotersError>>,
    },
    Queue(QueueCommand),
    Chaos(ChaosCommand),
    Shutdown,
    /// Tests only: the driver panics, as a bug would (what the node's supervision of its
    /// driver is tested with). Compiled into unit tests and into builds with the
    /// `fault-injection` feature, which only the tests enable: no shipped build has it.
    #[cfg(any(test, feature = "fault-injection"))]
    Panic,
}

/// A subscription to the leadership feed: the entries after the resume point (or why they are
/// gone), then every new entry from `live`.
#[derive(Debug)]
pub struct FeedSubscription {
    /// Entries after the resume point, oldest first.
    pub backlog: Result<Vec<FeedEntry>, FeedGap>,
    /// New entries (sequence numbers after the backlog's).
    pub live: broadcast::Receiver<FeedEntry>,
}

/// A cheap, cloneable way to command a running [`Driver`] and watch its events.
#[derive(Clone, Debug)]
pub struct NodeHandle {
    id: NodeId,
    commands: mpsc::Sender<Command>,
    events: broadcast::Sender<Event>,
}

impl NodeHandle {
    /// The node's id.
    pub fn id(&self) -> NodeId {
        self.id
    }

    /// Events from now on (membership changes, metadata changes, refutations).
    pub fn subscribe(&self) -> broadcast::Receiver<Event> {
        self.events.subscribe()
    }

    /// Joins the mesh through `seeds` (their addresses go into the address book first).
    pub async fn join(&self, seeds: Vec<SeedPeer>) -> Result<(), DriverStopped> {
        self.send(Command::Join(seeds)).await
    }

    /// Sets one key of this node's metadata and spreads it.
    pub async fn set_metadata(
        &self,
        key: &str,
        value: &[u8],
    ) -> Result<MetaVersion, SetMetadataError> {
        let (reply, rx) = oneshot::channel();
        self.send(Command::SetMetadata {
            key: key.to_owned(),
            value: value.to_vec(),
            reply,
        })
        .await?;
        Ok(rx.await.map_err(|_| DriverStopped)??)
    }

    /// Leaves the mesh gracefully; keep the node running a few gossip rounds afterwards.
    pub async fn leave(&self) -> Result<(), DriverStopped> {
        self.send(Command::Leave).await
    }

    /// Moves `node`, a member this node holds dead, to `left` in this node's view (the
    /// operator's word; see [`meshkit::membership::Membership::force_leave`]).
    pub async fn force_leave(&self, node: NodeId) -> Result<ForceLeave, ForceLeaveFailed> {
        let (reply, rx) = oneshot::channel();
        self.send(Command::ForceLeave { node, reply }).await?;
        Ok(rx.await.map_err(|_| DriverStopped)??)
    }

    /// A copy of the node's current view.
    pub async fn snapshot(&self) -> Result<Snapshot, DriverStopped> {
        let (reply, rx) = oneshot::channel();
        self.send(Command::Snapshot(reply)).await?;
        rx.await.map_err(|_| DriverStopped)
    }

    /// The node's leadership state; `None` if it runs no leadership.
    pub async fn leadership(&self) -> Result<Option<LeadershipView>, DriverStopped> {
        let (reply, rx) = oneshot::channel();
        self.send(Command::Leadership(reply)).await?;
        rx.await.map_err(|_| DriverStopped)
    }

    /// Subscribes to the leadership feed from after entry `after` (0: from the oldest held).
    pub async fn leadership_feed(&self, after: u64) -> Result<FeedSubscription, LeadershipError> {
        let (reply, rx) = oneshot::channel();
        self.send(Command::Feed { after, reply }).await?;
        rx.await
            .map_err(|_| DriverStopped)?
            .ok_or(LeadershipError::Disabled)
    }

    /// Acquires `scope` for `ttl` through the voters and waits for the grant: its fencing token.
    /// Present the token to every resource the lease guards. Asking for a scope this node
    /// holds renews it.
    pub async fn acquire(
        &self,
        scope: Scope,
        ttl: Duration,
    ) -> Result<FencingToken, LeadershipError> {
        self.lease(LeaseRequest::Acquire { scope, ttl }).await
    }

    /// Renews a lease this node holds, for its TTL.
    pub async fn renew(&self, scope: Scope) -> Result<FencingToken, LeadershipError> {
        self.lease(LeaseRequest::Renew { scope }).await
    }

    /// Releases a lease this node holds (at once: stop using its token) and stops contending
    /// for it. Returns the token given up.
    pub async fn release(&self, scope: Scope) -> Result<FencingToken, LeadershipError> {
        self.lease(LeaseRequest::Release { scope }).await
    }

    /// An operator's lock: acquires `scope` for `ttl` only if this node neither holds it nor
    /// contends for it, and is not drained (see [`LeaseRequest::AcquireNew`]). The lease is
    /// not renewed by itself: renew it with [`renew_held`](Self::renew_held) within `ttl`.
    pub async fn acquire_new(
        &self,
        scope: Scope,
        ttl: Duration,
    ) -> Result<FencingToken, LeadershipError> {
        self.lease(LeaseRequest::AcquireNew { scope, ttl }).await
    }

    /// Renews `scope` if this node holds it under `token` (an operator's session).
    pub async fn renew_held(
        &self,
        scope: Scope,
        token: FencingToken,
    ) -> Result<FencingToken, LeadershipError> {
        self.lease(LeaseRequest::RenewHeld { scope, token }).await
    }

    /// Releases `scope` if this node holds it under `token` (an operator's session).
    pub async fn release_held(
        &self,
        scope: Scope,
        token: FencingToken,
    ) -> Result<FencingToken, LeadershipError> {
        self.lease(LeaseRequest::ReleaseHeld { scope, token }).await
    }

    /// Hands this node's lease on `scope` to `to` and waits for the outcome (the new holder's
    /// token). This node stops contending for the scope.
    ///
    /// The lease client sends one request per scope at a time, and this node renews its leases
    /// on its own: a transfer asked while a renewal of the scope is in flight is asked again
    /// once that is answered (every [`IN_FLIGHT_RETRY`], for at most [`IN_FLIGHT_WAIT`]). The
    /// caller cannot see the renewal, so refusing it the transfer would be a race it cannot win.
    pub async fn transfer(
        &self,
        scope: Scope,
        to: NodeId,
    ) -> Result<FencingToken, LeadershipError> {
        let deadline = tokio::time::Instant::now() + IN_FLIGHT_WAIT;
        loop {
            let scope = scope.clone();
            match self.lease(LeaseRequest::Transfer { scope, to }).await {
                Err(LeadershipError::Lease(LeaseError::InFlight { .. }))
                    if tokio::time::Instant::now() < deadline =>
                {
                    tokio::time::sleep(IN_FLIGHT_RETRY).await;
                }
                outcome => return outcome,
            }
        }
    }

    async fn lease(&self, request: LeaseRequest) -> Result<FencingToken, LeadershipError> {
        let (reply, rx) = oneshot::channel();
        self.send(Command::Lease { request, reply }).await?;
        match rx.await {
            Ok(outcome) => outcome,
            // The driver dropped the reply: it runs no leadership, or it stopped.
            Err(_) => Err(if self.commands.is_closed() {
                LeadershipError::Stopped(DriverStopped)
            } else {
                LeadershipError::Disabled
            }),
        }
    }

    /// Drains the node: it stops contending for leases, releases those it holds (their next
    /// holders are whoever contends), and publishes [`DRAIN_KEY`] in its metadata. Returns
    /// the scopes released.
    pub async fn drain(&self) -> Result<Vec<Scope>, LeadershipError> {
        let (reply, rx) = oneshot::channel();
        self.send(Command::Drain(reply)).await?;
        Ok(rx.await.map_err(|_| DriverStopped)?)
    }

    /// Asks this node's shard coordinator for the plan the current map and pool give, and the
    /// term it acts in; unless `dry_run`, the coordinator also carries the plan out (at its next
    /// step, once the moves under way are done). Only the Raft leader's coordinator acts:
    /// elsewhere the error names the leader this node knows.
    pub async fn rebalance(&self, dry_run: bool) -> Result<(Plan, Term), LeadershipError> {
        let (reply, rx) = oneshot::channel();
        self.send(Command::Rebalance { dry_run, reply }).await?;
        rx.await
            .map_err(|_| DriverStopped)?
            .map_err(LeadershipError::Shards)
    }

    /// Undoes a drain: contends again for the configured scopes. `false` if it was not drained.
    pub async fn resume(&self) -> Result<bool, DriverStopped> {
        let (reply, rx) = oneshot::channel();
        self.send(Command::Resume(reply)).await?;
        rx.await.map_err(|_| DriverStopped)
    }

    /// Proposes one change of the Raft voter set (see [`Node::change_voters`]); this node's
    /// voter must lead the group. Answers once proposed: the change commits later (the voter
    /// set in [`leadership`](Self::leadership) shows it applied).
    pub async fn change_voters(&self, change: VoterChange) -> Result<VotersProposed, VotersError> {
        let (reply, rx) = oneshot::channel();
        self.send(Command::Voters { change, reply }).await?;
        rx.await.map_err(|_| VotersError::Stopped(DriverStopped))?
    }

    /// Enqueues `payload` on `shard`'s queue and waits for the acknowledgement: the owner and
    /// the configured replicas hold the item. An error of [`QueueCallError::Queue`] says
    /// whether anything was enqueued (a `TimedOut` enqueue may have been; retrying it is
    /// safe only through the same request, so treat it as unknown).
    pub async fn queue_enqueue(
        &self,
        shard: ShardId,
        payload: Vec<u8>,
    ) -> Result<Enqueued, QueueCallError> {
        self.queue_call(|reply| QueueCommand::Enqueue {
            shard,
            payload,
            reply,
        })
        .await
    }

    /// Waits (at most `max_wait`) until `shard`'s backpressure is inactive as this node's gossip
    /// view shows it, then enqueues as [`queue_enqueue`](Self::queue_enqueue) does: what the
    /// original system's `enqueue` did while backpressure was active. Past `max_wait` it
    /// enqueues anyway (the owner's `max_items` is the hard bound).
    pub async fn queue_enqueue_when_ready(
        &self,
        shard: ShardId,
        payload: Vec<u8>,
        max_wait: Duration,
    ) -> Result<Enqueued, QueueCallError> {
        let mut view = self.subscribe_backpressure().await?;
        let _ = tokio::time::timeout(
            max_wait,
            view.wait_for(|v| v.get(&shard).is_none_or(|b| !b.signal.is_active)),
        )
        .await;
        self.queue_enqueue(shard, payload).await
    }

    /// Leases an item of `shard`'s queue for this node's worker: `None` when nothing is
    /// pending. Heartbeat within [`LeasedItem::lease_for`], then complete or fail it.
    pub async fn queue_lease(&self, shard: ShardId) -> Result<Option<LeasedItem>, QueueCallError> {
        self.queue_call(|reply| QueueCommand::Lease { shard, reply })
            .await
    }

    /// Leases up to `max` items of `shard`'s queue for this node's workers in one request
    /// (1..=[`MAX_LEASE_ITEMS`](meshkit::queue::MAX_LEASE_ITEMS)): as many as are pending and
    /// fit the owner's answer datagram (about 30 items of 8 bytes, at least 2 of the largest),
    /// empty when nothing is pending. Each item is leased on its own: heartbeat, complete or
    /// fail each with its token. A request and an answer per lease is what a worker pays; this
    /// pays them once for the batch.
    ///
    /// # Errors
    ///
    /// As [`queue_lease`](Self::queue_lease), and
    /// [`QueueError::OutOfRange`](meshkit::queue::QueueError::OutOfRange) naming `max` when it
    /// is out of range (nothing was sent).
    pub async fn queue_lease_up_to(
        &self,
        shard: ShardId,
        max: u16,
    ) -> Result<Vec<LeasedItem>, QueueCallError> {
        self.queue_call(|reply| QueueCommand::LeaseUpTo { shard, max, reply })
            .await
    }

    /// Extends the lease of the token's item. A stale token
    /// ([`QueueError::is_stale`](meshkit::queue::QueueError::is_stale)) means: stop working on
    /// it, it is someone else's now.
    pub async fn queue_heartbeat(
        &self,
        shard: ShardId,
        token: OwnershipToken,
    ) -> Result<OwnershipToken, QueueCallError> {
        self.queue_finish(shard, token, Finish::Heartbeat).await
    }

    /// Completes the token's item; answered once the replicas hold the completion.
    pub async fn queue_complete(
        &self,
        shard: ShardId,
        token: OwnershipToken,
    ) -> Result<OwnershipToken, QueueCallError> {
        self.queue_finish(shard, token, Finish::Complete).await
    }

    /// Fails the token's item: requeued if `requeue` and attempts remain, else dead-lettered;
    /// answered once the replicas hold it.
    pub async fn queue_fail(
        &self,
        shard: ShardId,
        token: OwnershipToken,
        requeue: bool,
    ) -> Result<OwnershipToken, QueueCallError> {
        self.queue_finish(shard, token, Finish::Fail { requeue })
            .await
    }

    async fn queue_finish(
        &self,
        shard: ShardId,
        token: OwnershipToken,
        finish: Finish,
    ) -> Result<OwnershipToken, QueueCallError> {
        self.queue_call(|reply| QueueCommand::Finish {
            shard,
            token,
            finish,
            reply,
        })
        .await
    }

    /// As the owner of `shard`'s queue: takes every pending item out (replicated as drain
    /// events) and returns them, with who enqueued each. Refused with
    /// [`QueueError::NotOwner`](meshkit::queue::QueueError::NotOwner) elsewhere.
    pub async fn queue_drain(
        &self,
        shard: ShardId,
    ) -> Result<Vec<(Origin, Vec<u8>)>, QueueCallError> {
        self.queue_call(|reply| QueueCommand::Drain { shard, reply })
            .await
    }

    /// As the owner of `shard`'s queue: puts drained items back as pending; returns how many.
    pub async fn queue_restore(
        &self,
        shard: ShardId,
        items: Vec<(Origin, Vec<u8>)>,
    ) -> Result<usize, QueueCallError> {
        self.queue_call(|reply| QueueCommand::Restore {
            shard,
            items,
            reply,
        })
        .await
    }

    /// The latest backpressure signal of every shard whose owner this node knows, as a watch:
    /// it changes when an owner publishes a transition (or a new owner takes a shard over).
    pub async fn subscribe_backpressure(
        &self,
    ) -> Result<tokio::sync::watch::Receiver<BackpressureView>, QueueCallError> {
        let (reply, rx) = oneshot::channel();
        self.send(Command::Queue(QueueCommand::Subscribe(reply)))
            .await?;
        rx.await.map_err(|_| self.queue_gone())
    }

    /// The shards that have a queue (`[shards]` of the node's `[queues]`).
    pub async fn queue_shards(&self) -> Result<meshkit::shard::ShardConfig, QueueCallError> {
        let (reply, rx) = oneshot::channel();
        self.send(Command::Queue(QueueCommand::Shards(reply)))
            .await?;
        rx.await.map_err(|_| self.queue_gone())
    }

    async fn queue_call<T>(
        &self,
        command: impl FnOnce(oneshot::Sender<Result<T, QueueCallError>>) -> QueueCommand,
    ) -> Result<T, QueueCallError> {
        let (reply, rx) = oneshot::channel();
        self.send(Command::Queue(command(reply))).await?;
        rx.await.map_err(|_| self.queue_gone())?
    }

    /// Why a queue command's reply was dropped: the driver stopped, or it runs no queues.
    fn queue_gone(&self) -> QueueCallError {
        if self.commands.is_closed() {
            QueueCallError::Stopped(DriverStopped)
        } else {
            QueueCallError::Disabled
        }
    }

    /// The view `resolve` needs, read now: the members (not dead or left) with their region
    /// metadata, the Raft leader and the lease holders (both known on voters only).
    pub async fn chaos_view(&self) -> Result<ClusterView, DriverStopped> {
        let (reply, rx) = oneshot::channel();
        self.send(Command::Chaos(ChaosCommand::View(reply))).await?;
        rx.await.map_err(|_| DriverStopped)
    }

    /// Checks `[chaos]`, schedules the experiment on this node's own clock (it reverts by
    /// itself at the deadline: the dead-man switch) and applies the part of `radius` that
    /// concerns this node. Idempotent per `id`: a second call returns its status.
    ///
    /// # Errors
    ///
    /// [`ChaosError`]; nothing changed.
    pub async fn chaos_apply(
        &self,
        id: ExperimentRef,
        plan: FaultPlan,
        radius: BlastRadius,
    ) -> Result<ExperimentStatus, ChaosError> {
        let (reply, rx) = oneshot::channel();
        self.send(Command::Chaos(ChaosCommand::Apply {
            id,
            experiment: Box::new((plan, radius)),
            reply,
        }))
        .await?;
        rx.await.map_err(|_| DriverStopped)?
    }

    /// Ends experiment `id` now (reverts it if active).
    ///
    /// # Errors
    ///
    /// [`ChaosError::UnknownExperiment`] when it is not scheduled or active here.
    pub async fn chaos_abort(&self, id: ExperimentRef) -> Result<ExperimentStatus, ChaosError> {
        let (reply, rx) = oneshot::channel();
        self.send(Command::Chaos(ChaosCommand::Abort { id, reply }))
            .await?;
        rx.await.map_err(|_| DriverStopped)?
    }

    /// Reverts every experiment now and refuses new ones until
    /// [`chaos_rearm`](Self::chaos_rearm). Returns how many it reverted.
    pub async fn chaos_kill_switch(&self) -> Result<usize, DriverStopped> {
        let (reply, rx) = oneshot::channel();
        self.send(Command::Chaos(ChaosCommand::KillSwitch(reply)))
            .await?;
        rx.await.map_err(|_| DriverStopped)
    }

    /// Releases the kill switch: experiments may start again.
    pub async fn chaos_rearm(&self) -> Result<(), DriverStopped> {
        let (reply, rx) = oneshot::channel();
        self.send(Command::Chaos(ChaosCommand::Rearm(reply)))
            .await?;
        rx.await.map_err(|_| DriverStopped)
    }

    /// Active, scheduled and recent (bounded) experiments on this node, newest first.
    pub async fn chaos_experiments(&self) -> Result<Vec<ExperimentStatus>, DriverStopped> {
        let (reply, rx) = oneshot::channel();
        self.send(Command::Chaos(ChaosCommand::List(reply))).await?;
        rx.await.map_err(|_| DriverStopped)
    }

    /// Completes once the driver has stopped (for tasks beside it that should end with it).
    pub async fn stopped(&self) {
        self.commands.closed().await;
    }

    /// Stops the driver (without leaving: to peers this looks like a crash).
    pub async fn shutdown(&self) -> Result<(), DriverStopped> {
        self.send(Command::Shutdown).await
    }

    /// Tests only (unit tests, and the `fault-injection` feature that `meshkitd`'s end-to-end
    /// tests build with): makes the driver panic, as a bug would.
    #[cfg(any(test, feature = "fault-injection"))]
    #[doc(hidden)]
    pub async fn panic_for_test(&self) -> Result<(), DriverStopped> {
        self.send(Command::Panic).await
    }

    async fn send(&self, command: Command) -> Result<(), DriverStopped> {
        self.commands.send(command).await.map_err(|_| DriverStopped)
    }
}

/// The future that runs one node: spawn it on a tokio runtime. It completes when a
/// [`NodeHandle::shutdown`] arrives, when every handle is dropped, or when the transport closes.
#[must_use = "a driver does nothing unless spawned or awaited"]
pub struct Driver<T, C> {
    node: Node,
    leadership: Option<Leadership>,
    queues: Option<QueueHost>,
    chaos: ChaosHost,
    /// Scopes the configuration contends for (re-entered on resume).
    campaign: Vec<Scope>,
    draining: bool,
    joined: bool,
    cert_not_after: Option<i64>,
    transport: T,
    clock: C,
    /// The core's time as a function of `clock`: the identity unless a `clock-skew` experiment
    /// runs here. The chaos schedule reads `clock` itself, so a skewed node still reverts at
    /// the real deadline.
    core_clock: SkewedClock,
    timer: Pin<Box<Sleep>>,
    armed: Option<Instant>,
    commands: mpsc::Receiver<Command>,
    events: broadcast::Sender<Event>,
    addrs: BTreeMap<NodeId, SocketAddr>,
    buf: Vec<u8>,
    traffic: Traffic,
    /// The replica's acknowledgements (and offers, chunks) polled after queue checkpoint
    /// appends not yet durable (see [`QueueHost::persist`]).
    held: Holdback,
}

/// A datagram waiting for the queue checkpoints polled before it to be durable.
#[derive(Debug)]
struct Held {
    generation: u64,
    to: NodeId,
    datagram: Bytes,
}

/// The datagrams that wait for a queue checkpoint sync, in poll order: only those that speak
/// for this node's replica copies ([`meshkit::node::waits_for_durable`]), each with the append
/// generation it waits for. Everything else leaves at once: holding every datagram made
/// membership probes, lease renewals and every queue request and answer of a node that
/// replicates wait for its disk (one or two syncs, about 4 ms each on the benchmark's machine,
/// far more under load), for no guarantee: none of them promises what the disk holds.
#[derive(Debug, Default)]
struct Holdback {
    held: VecDeque<Held>,
}

impl Holdback {
    /// Takes a datagram polled when the appends reached `generation` and syncs `synced`: gives
    /// it back to send now, or holds it (dropping it past [`MAX_HELD_TRANSMITS`], as a full
    /// network queue would: its sender's resend covers it). With [`AckAfter::Write`] a
    /// replica's acknowledgement leaves at once (the appends it follows are written already);
    /// its offers and chunks still wait.
    fn admit(
        &mut self,
        generation: u64,
        synced: u64,
        ack_after: AckAfter,
        to: NodeId,
        datagram: Bytes,
    ) -> Option<Bytes> {
        // Held ones wait only for appends not yet durable, so with any held `generation >
        // synced` already; a later one that waits queues behind them and keeps their order.
        if generation <= synced
            || !meshkit::node::waits_for_durable(&datagram)
            || (ack_after == AckAfter::Write && meshkit::node::is_replica_ack(&datagram))
        {
            return Some(datagram);
        }
        if self.held.len() < MAX_HELD_TRANSMITS {
            self.held.push_back(Held {
                generation,
                to,
                datagram,
            });
        } else {
            tracing::debug!(peer = %to, "datagram dropped: too many wait for a checkpoint sync");
        }
        None
    }

    /// The oldest held datagram if the appends it waits for are durable once `synced` is.
    fn release(&mut self, synced: u64) -> Option<Held> {
        if self.held.front()?.generation <= synced {
            self.held.pop_front()
        } else {
            None
        }
    }
}

impl<T: Transport, C: Clock> Driver<T, C> {
    /// A driver for `node` (membership only: [`with_leadership`](Self::with_leadership) adds the
    /// lease state machines) over `transport`, and the first handle to it.
    pub fn new(mut node: Node, transport: T, clock: C) -> (Self, NodeHandle) {
        if transport.needs_addresses() {
            // The node must not choose members the transport cannot reach yet as targets:
            // the datagram would be dropped with the updates piggybacked on it.
            node.require_routes();
        }
        let (commands_tx, commands) = mpsc::channel(COMMAND_QUEUE_LEN);
        let (events, _) = broadcast::channel(EVENT_CHANNEL_LEN);
        let handle = NodeHandle {
            id: node.local_id(),
            commands: commands_tx,
            events: events.clone(),
        };
        let chaos = ChaosHost::new(
            node.local_id(),
            ChaosConfig::default(),
            ChaosEffects::default(),
        );
        let driver = Self {
            node,
            leadership: None,
            queues: None,
            chaos,
            campaign: Vec::new(),
            draining: false,
            joined: false,
            cert_not_after: None,
            transport,
            clock,
            core_clock: SkewedClock::new(Instant::ZERO, Instant::ZERO),
            timer: Box::pin(tokio::time::sleep(Duration::ZERO)),
            armed: None,
            commands,
            events,
            addrs: BTreeMap::new(),
            buf: Vec::with_capacity(meshkit::wire::MAX_DATAGRAM_BYTES),
            traffic: Traffic::default(),
            held: Holdback::default(),
        };
        (driver, handle)
    }

    /// Runs the node's leases too: a voter if `config.voters` names it, a client and its
    /// campaign in any case. Their seeds derive from the node's own (see [`Node::new`]).
    pub fn with_leadership(
        mut self,
        config: &LeadershipConfig,
    ) -> Result<Self, crate::lease_host::LeadershipStartError> {
        let now = self.core_now();
        let (leadership, mut node) = Leadership::start(config, self.node, now)?;
        if node.lease_group().is_some() {
            // The value is tiny: far below the metadata limits. A joining voter's node has
            // published RAFT_JOIN_KEY itself (`Node::with_joining_voter`).
            let _ = node.set_metadata(now, RAFT_KEY, b"voter");
        }
        self.node = node;
        self.leadership = Some(leadership);
        self.campaign = config.campaign.clone();
        Ok(self)
    }

    /// Runs the task queues of the configured shards (after
    /// [`with_leadership`](Self::with_leadership), with `[shards]`: a queue is served by its
    /// shard's lease holder), restoring the replica copies `config.data_dir` holds.
    pub fn with_queues(mut self, config: &QueuesConfig) -> Result<Self, QueueStartError> {
        let now = self.core_now();
        let (host, node) = QueueHost::start(config, self.node, now)?;
        self.node = node;
        self.queues = Some(host);
        Ok(self)
    }

    /// Takes chaos experiments under `config` (`[chaos]`), applying them through `effects`:
    /// give the node's [`ChaosTransport`](meshkit_net::transport::chaos::ChaosTransport) the
    /// same `effects.links`, and its control listener `effects.refuse_h3`. Without this call
    /// (or with `config.enabled` false) every experiment is refused with
    /// [`ChaosError::Disabled`].
    pub fn with_chaos(mut self, config: ChaosConfig, effects: ChaosEffects) -> Self {
        self.chaos = ChaosHost::new(self.node.local_id(), config, effects);
        self
    }

    /// Tells the driver when the node's certificate expires (Unix seconds), for its snapshots
    /// and the `mesh_transport_cert_expiry_timestamp_seconds` metric.
    pub fn with_cert_expiry(mut self, not_after_unix: Option<i64>) -> Self {
        self.cert_not_after = not_after_unix;
        self
    }

    /// Handles one command; `false` means stop.
    fn handle_command(&mut self, command: Command) -> bool {
        let real = self.clock.now();
        let now = self.core_clock.local(real);
        match command {
            Command::Join(seeds) => {
                let own = self.node.local_id();
                for seed in seeds.iter().filter(|s| s.id != own) {
                    self.addrs.insert(seed.id, seed.addr);
                    self.node.set_routable(seed.id);
                }
                let ids: Vec<NodeId> = seeds.iter().map(|s| s.id).collect();
                self.joined |= ids.iter().any(|id| *id != own);
                self.node.join(now, &ids);
            }
            Command::SetMetadata { key, value, reply } => {
                let _ = reply.send(self.node.set_metadata(now, &key, &value));
            }
            Command::Leave => self.node.leave(now),
            Command::ForceLeave { node, reply } => {
                // The state log says `member left` with `by` this node and `from` dead.
                let _ = reply.send(self.node.force_leave(now, node));
            }
            Command::Snapshot(reply) => {
                let _ = reply.send(self.snapshot());
            }
            Command::Leadership(reply) => {
                let _ = reply.send(self.leadership.as_ref().map(|l| l.view(now, &self.node)));
            }
            Command::Feed { after, reply } => {
                let subscription = self.leadership.as_ref().map(|l| FeedSubscription {
                    // Subscribed before the backlog is read, in one step of the driver: no
                    // entry falls between them.
                    live: l.subscribe(),
                    backlog: l.feed_since(after),
                });
                let _ = reply.send(subscription);
            }
            Command::Lease { request, reply } => match &mut self.leadership {
                // A drained node takes no operator's lock (its campaign is withdrawn too).
                Some(_) if self.draining && matches!(request, LeaseRequest::AcquireNew { .. }) => {
                    let _ = reply.send(Err(LeadershipError::Draining));
                }
                Some(l) => l.request(now, &mut self.node, request, reply),
                // Answered by the handle before it sends the command; cannot happen.
                None => drop(reply),
            },
            Command::Drain(reply) => {
                let released = self
                    .leadership
                    .as_mut()
                    .map(|l| l.drain(now, &mut self.node))
                    .unwrap_or_default();
                if !self.draining {
                    self.draining = true;
                    // The value is tiny: far below the metadata limits.
                    let _ = self.node.set_metadata(now, DRAIN_KEY, b"1");
                }
                let _ = reply.send(released);
            }
            Command::Rebalance { dry_run, reply } => {
                let term = self.node.shard_coordinator().and_then(|c| c.term());
                let outcome = self.node.rebalance_shards(dry_run).map(|plan| {
                    // `rebalance_shards` answers only while the coordinator acts, in a term.
                    (plan, term.unwrap_or(Term::new(0)))
                });
                if let Ok((plan, term)) = &outcome {
                    tracing::info!(
                        dry_run,
                        moves = plan.len(),
                        term = term.get(),
                        "shard rebalance asked"
                    );
                }
                let _ = reply.send(outcome);
            }
            Command::Resume(reply) => {
                let was = std::mem::take(&mut self.draining);
                if was {
                    if let Some(l) = &mut self.leadership {
                        l.resume(now, &mut self.node, &self.campaign);
                    }
                    let _ = self.node.delete_metadata(now, DRAIN_KEY);
                }
                let _ = reply.send(was);
            }
            Command::Voters { change, reply } => {
                let _ = reply.send(self.change_voters(now, change));
            }
            Command::Queue(command) => match &mut self.queues {
                Some(q) => q.command(now, &mut self.node, command),
                None => command.refuse(QueueCallError::Disabled),
            },
            Command::Chaos(ChaosCommand::View(reply)) => {
                let _ = reply.send(crate::chaos_host::cluster_view(&self.node));
            }
            Command::Chaos(command) => {
                self.chaos.command(real, &self.node, command);
                self.follow_clock_rate(real);
            }
            Command::Shutdown => return false,
            #[cfg(any(test, feature = "fault-injection"))]
            Command::Panic => panic!("test-only: the driver panics on command"),
        }
        true
    }

    fn handle_received(&mut self, from: NodeId, datagram: &[u8]) {
        let now = self.core_now();
        if let Ok((channel, _)) = Channel::split(datagram) {
            self.traffic.count_received(channel, datagram.len());
        }
        if let Err(error) = self.node.handle_datagram(now, from, datagram) {
            crate::lease_host::log_refused(from, &error);
        }
    }

    /// Drains the node's outputs in the core's order: the voter's and the queue replicas'
    /// durable writes to disk, then transmits to the transport, then events to subscribers,
    /// the leadership host and the queue host. The queue checkpoints are appended here and
    /// synced off this task (a group commit, [`QueueHost::persist`]): the replica's
    /// acknowledgements, offers and chunks polled after an append wait in `held`, in order,
    /// until the sync covering it ended, so an acknowledgement never promises what its disk
    /// does not hold; every other datagram and every event leaves at once (none promises a
    /// checkpoint to a peer). `false` when the queue checkpoints cannot be written: the driver
    /// stops (no acknowledgement polled after them may be sent, and a replica that cannot
    /// persist must not acknowledge; restart once the disk is fixed).
    fn flush(&mut self) -> bool {
        let now = self.core_now();
        if let Some(l) = &mut self.leadership {
            l.persist(&mut self.node);
        }
        if let Some(q) = &mut self.queues
            && let Err(error) = q.persist(&mut self.node)
        {
            tracing::error!(%error, "the queue checkpoints cannot be written: the node stops");
            return false;
        }
        self.release_held();
        // Checkpoints appended and not yet durable: what is polled now waits for them.
        let generation = self.queues.as_ref().map_or(0, QueueHost::appended);
        let synced = self.queues.as_ref().map_or(0, QueueHost::synced);
        let ack_after = self
            .queues
            .as_ref()
            .map_or(AckAfter::Sync, QueueHost::ack_after);
        while let Some(t) = self.node.poll_transmit(now, &mut self.buf) {
            let datagram = Bytes::copy_from_slice(&self.buf[..t.len]);
            if let Some(datagram) = self
                .held
                .admit(generation, synced, ack_after, t.to, datagram)
            {
                self.send_now(t.to, datagram);
            }
        }
        while let Some(event) = self.node.poll_event() {
            match event {
                NodeEvent::Membership(event) => {
                    crate::state_log::membership(&event);
                    if let Event::MetadataChanged { node, .. } = event {
                        self.learn_addr(node);
                        if let Some(q) = &mut self.queues {
                            q.on_metadata_changed();
                        }
                    }
                    // No subscriber is fine: events are for whoever listens.
                    let _ = self.events.send(event);
                }
                NodeEvent::Leadership(e) => {
                    crate::state_log::leadership(&e.event);
                    if let Some(l) = &mut self.leadership {
                        l.on_client_event(&e.event);
                    }
                }
                NodeEvent::Shard(event) => crate::state_log::shard(&event),
                NodeEvent::Group(e) => {
                    crate::state_log::group(&e.event);
                    if let Some(l) = &mut self.leadership {
                        l.on_group_event(now, &e.event);
                    }
                }
                NodeEvent::Queue(e) => {
                    if let Some(q) = &mut self.queues {
                        q.on_event(now, e);
                    }
                }
                _ => {}
            }
        }
        if let Some(q) = &mut self.queues {
            q.refresh_backpressure(&self.node);
        }
        true
    }

    fn send_now(&mut self, to: NodeId, datagram: Bytes) {
        let addr = self.addrs.get(&to).copied();
        if let Ok((channel, _)) = Channel::split(&datagram) {
            self.traffic.count_sent(channel, datagram.len());
        }
        self.transport.send(to, addr, datagram);
    }

    /// Sends the held datagrams whose checkpoints are durable now, in poll order.
    fn release_held(&mut self) {
        let synced = self.queues.as_ref().map_or(u64::MAX, QueueHost::synced);
        while let Some(h) = self.held.release(synced) {
            self.send_now(h.to, h.datagram);
        }
    }

    fn change_voters(
        &mut self,
        now: Instant,
        change: VoterChange,
    ) -> Result<VotersProposed, VotersError> {
        if self.leadership.is_none() {
            return Err(VotersError::Disabled);
        }
        if let VoterChange::Add(node) = change {
            let runs_voter = self
                .node
                .membership()
                .metadata(node)
                .and_then(|m| m.get(RAFT_KEY))
                .is_some_and(|v| v == b"voter");
            let known = self.node.membership().member(node).is_some();
            // An unknown or dead node gets the core's answer (not alive); a live one that runs
            // no voter, this one.
            if known && !runs_voter {
                let alive = self
                    .node
                    .membership()
                    .member(node)
                    .is_some_and(|m| m.state == MemberState::Alive);
                if alive {
                    return Err(VotersError::NotJoinable { node });
                }
            }
            // Only the leader proposes; a follower answers with the core's redirect below.
            let leader = self.node.local_id();
            let leads = self.node.lease_group().is_some_and(|g| g.is_leader());
            let accepts: Option<Vec<u64>> = self
                .node
                .membership()
                .metadata(node)
                .and_then(|m| m.get(RAFT_JOIN_KEY))
                .map(|v| {
                    meshkit::node::parse_raft_join(v)
                        .into_iter()
                        .map(NodeId::get)
                        .collect()
                });
            if let Some(accepts) = accepts
                && leads
                && !accepts.contains(&leader.get())
            {
                return Err(VotersError::LeaderNotTrusted {
                    node,
                    accepts,
                    leader,
                });
            }
        }
        let voters: Vec<NodeId> = self
            .node
            .lease_group()
            .map(|g| g.voters().collect())
            .unwrap_or_default();
        self.node.change_voters(now, change)?;
        let mut proposed: Vec<NodeId> = voters
            .iter()
            .copied()
            .filter(|v| *v != change.node())
            .collect();
        if let VoterChange::Add(node) = change {
            proposed.push(node);
            proposed.sort_unstable();
        }
        tracing::info!(
            %change,
            voters = ?voters.iter().map(|v| v.get()).collect::<Vec<_>>(),
            "voter change proposed (asked through the control API)"
        );
        Ok(VotersProposed {
            leader: self.node.local_id(),
            voters,
            proposed,
        })
    }

    /// Reads `node`'s published address into the address book (the local node's too, so
    /// snapshots show it; nothing is ever sent to it).
    fn learn_addr(&mut self, node: NodeId) {
        let published = self
            .node
            .membership()
            .metadata(node)
            .and_then(|m| m.get(ADDR_KEY))
            .and_then(|v| std::str::from_utf8(v).ok())
            .and_then(|s| s.parse::<SocketAddr>().ok());
        if let Some(addr) = published {
            self.addrs.insert(node, addr);
            self.node.set_routable(node);
        }
    }

    /// The core's time now (see `core_clock`).
    fn core_now(&self) -> Instant {
        self.core_clock.local(self.clock.now())
    }

    /// Runs the core's clock at the rate the chaos host asks for from real time `real` on
    /// (local time stays continuous), and re-arms the timer for the new rate.
    fn follow_clock_rate(&mut self, real: Instant) {
        let rate = self.chaos.clock_rate_ppm();
        if rate != self.core_clock.rate_ppm() {
            self.core_clock.set_rate(real, rate);
            self.armed = None;
            tracing::warn!(
                rate = rate as f64 / RATE_ONE_PPM as f64,
                "the core's clock now runs at this rate of real time (chaos clock-skew)"
            );
        }
    }

    /// Points the one timer at the earliest of the core's next deadline (on its clock, mapped
    /// back to real time) and the chaos schedule's (real time); `now` is real time.
    fn arm_timer(&mut self, now: Instant) {
        // While paused by chaos only the chaos schedule's timer runs (its revert ends the pause).
        let core = if self.chaos.is_paused() {
            None
        } else {
            self.node
                .poll_timeout()
                .map(|local| self.core_clock.to_global(local))
        };
        let deadline = [core, self.chaos.poll_timeout()]
            .into_iter()
            .flatten()
            .min()
            .unwrap_or(now + IDLE_WAKE);
        if self.armed != Some(deadline) {
            self.armed = Some(deadline);
            let wait = deadline.saturating_duration_since(now);
            self.timer
                .as_mut()
                .reset(tokio::time::Instant::now() + wait);
        }
    }

    fn snapshot(&self) -> Snapshot {
        let now = self.core_now();
        let membership = self.node.membership();
        let peers = membership
            .members()
            .map(|m| PeerInfo {
                id: m.id,
                state: m.state,
                incarnation: m.incarnation,
                rtt: m.rtt,
                metadata: membership
                    .metadata(m.id)
                    .map(|meta| {
                        meta.live()
                            .map(|(k, v)| (k.to_owned(), String::from_utf8_lossy(v).into_owned()))
                            .collect()
                    })
                    .unwrap_or_default(),
                last_change_ago: now.saturating_duration_since(m.last_change),
                addr: self.addrs.get(&m.id).copied(),
            })
            .collect();
        Snapshot {
            local_id: self.node.local_id(),
            peers,
            stats: membership.stats(),
            transport: self.transport.stats(),
            traffic: self.traffic,
            health_score: membership.health_score(),
            leadership: self
                .leadership
                .as_ref()
                .map(|l| (l.view(now, &self.node), l.stats(&self.node))),
            draining: self.draining,
            joined: self.joined,
            cert_not_after: self.cert_not_after,
            queues: self.queues.as_ref().and_then(|q| q.status(now, &self.node)),
            chaos: self.chaos.stats(),
        }
    }
}

impl<T: Transport, C: Clock> Future for Driver<T, C> {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let this = self.get_mut();
        for _ in 0..MAX_ROUNDS_PER_POLL {
            let mut progress = false;
            for _ in 0..MAX_INPUTS_PER_ROUND {
                match this.commands.poll_recv(cx) {
                    Poll::Ready(Some(command)) => {
                        progress = true;
                        if !this.handle_command(command) {
                            return Poll::Ready(());
                        }
                    }
                    // Every handle dropped: nobody can command or observe the node any more.
                    Poll::Ready(None) => return Poll::Ready(()),
                    Poll::Pending => break,
                }
            }
            if let Some(q) = &mut this.queues {
                match q.poll_sync(cx, &this.node) {
                    Poll::Ready(Ok(())) => {
                        progress = true;
                        this.release_held();
                    }
                    Poll::Ready(Err(error)) => {
                        tracing::error!(%error, "the queue checkpoints cannot be synced: the node stops");
                        return Poll::Ready(());
                    }
                    Poll::Pending => {}
                }
            }
            let now = this.clock.now();
            if this.chaos.poll_timeout().is_some_and(|at| at <= now) {
                this.chaos.handle_timeout(now, &this.node);
                this.follow_clock_rate(now);
                progress = true;
            }
            if this.chaos.take_kill() {
                // Logged by the chaos host; the node's supervisor reads `killed` and exits.
                return Poll::Ready(());
            }
            // A chaos pause holds the node: its datagrams wait in the transport and its timers
            // do not run until the revert (commands are still answered, so an abort or the
            // kill switch reaches it).
            if this.chaos.is_paused() {
                this.arm_timer(now);
                if this.timer.as_mut().poll(cx).is_ready() {
                    this.armed = None;
                    progress = true;
                }
                if !progress {
                    return Poll::Pending;
                }
                continue;
            }
            for _ in 0..MAX_INPUTS_PER_ROUND {
                match this.transport.poll_recv(cx) {
                    Poll::Ready(Some(received)) => {
                        progress = true;
                        this.handle_received(received.from, &received.datagram);
                    }
                    Poll::Ready(None) => return Poll::Ready(()),
                    Poll::Pending => break,
                }
            }
            let now = this.clock.now();
            let core_now = this.core_clock.local(now);
            if this.node.poll_timeout().is_some_and(|at| at <= core_now) {
                this.node.handle_timeout(core_now);
                progress = true;
            }
            if !this.flush() {
                return Poll::Ready(());
            }
            this.chaos.check_recovery(now, &this.node);
            this.arm_timer(now);
            if this.timer.as_mut().poll(cx).is_ready() {
                // Due already: go round again and run it. Forget the armed deadline so the
                // next round re-arms (and re-registers) the timer.
                this.armed = None;
                progress = true;
            }
            if !progress {
                return Poll::Pending;
            }
        }
        // Budget spent with work left: let other tasks run, then come back.
        cx.waker().wake_by_ref();
        Poll::Pending
    }
}

impl<T, C> std::fmt::Debug for Driver<T, C> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Driver")
            .field("id", &self.node.local_id())
            .field("armed", &self.armed)
            .field("addrs", &self.addrs)
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration as StdDuration;

    use meshkit::config::{Config, RawConfig};
    use meshkit::membership::MemberState;

    use super::*;
    use meshkit_net::clock::SystemClock;
    use meshkit_net::transport::memory::{MemoryNetwork, MemoryTransport};

    /// Fast timers so the tests take a second, not ten.
    fn fast_config() -> Config {
        let raw: RawConfig = toml::from_str(
            "probe_interval = \"200ms\"\nprobe_timeout = \"100ms\"\ngossip_interval = \"50ms\"\n",
        )
        .expect("valid overrides");
        Config::try_from(raw).expect("valid overrides")
    }

    fn spawn_node(network: &MemoryNetwork, raw_id: u64) -> NodeHandle {
        let id = NodeId::new(raw_id);
        let now = SystemClock.now();
        let node = Node::new(fast_config(), id, Incarnation::new(1), raw_id, now);
        let transport: MemoryTransport = network.attach(id);
        let (driver, handle) = Driver::new(node, transport, SystemClock);
        tokio::spawn(driver);
        handle
    }

    /// Polls `check` every 20 ms until it holds or `limit` passes (bounded in time and count).
    async fn eventually<F, Fut>(limit: StdDuration, mut check: F) -> bool
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = bool>,
    {
        let step = StdDuration::from_millis(20);
        let deadline = tokio::time::Instant::now() + limit;
        for _ in 0..(limit.as_millis() / step.as_millis()) + 1 {
            if check().await {
                return true;
            }
            if tokio::time::Instant::now() >= deadline {
                break;
            }
            tokio::time::sleep(step).await;
        }
        false
    }

    fn seed(raw: u64) -> SeedPeer {
        SeedPeer {
            id: NodeId::new(raw),
            addr: SocketAddr::from(([127, 0, 0, 1], 1)),
        }
    }

    /// Waits (at most 5 s) until every node counts every node alive.
    async fn assert_converged(nodes: &[NodeHandle]) {
        let converged = eventually(StdDuration::from_secs(5), || async {
            for node in nodes {
                if node.snapshot().await.unwrap().count(MemberState::Alive) != nodes.len() {
                    return false;
                }
            }
            true
        })
        .await;
        assert!(converged, "the drivers did not converge within 5 s");
    }

    /// `body` about shard `jobs/0`, framed as a queue datagram.
    fn queue_datagram(body: meshkit::queue::QueueBody) -> Bytes {
        let mut payload = Vec::new();
        meshkit::queue::QueueMessage {
            shard: ShardId::new("jobs", 0).expect("a valid shard"),
            body,
        }
        .encode(&mut payload);
        let mut datagram = Vec::new();
        Channel::Queue.frame(&payload, &mut datagram);
        Bytes::from(datagram)
    }

    /// Only what speaks for the replica's disk waits for a queue checkpoint sync: a membership
    /// datagram (a real one, a join's digest request) and a queue request polled while appends
    /// are not yet durable leave at once, the replica's acknowledgements wait and leave in poll
    /// order once the sync covering them ended (issue 16: every datagram waited).
    #[test]
    fn only_replica_acknowledgements_wait_for_a_checkpoint_sync() {
        use meshkit::queue::QueueBody;

        let now = SystemClock.now();
        let mut node = Node::new(fast_config(), NodeId::new(3), Incarnation::new(1), 3, now);
        node.join(now, &[NodeId::new(1)]);
        let mut buf = Vec::new();
        let t = node
            .poll_transmit(now, &mut buf)
            .expect("a join sends a digest request");
        let membership = Bytes::copy_from_slice(&buf[..t.len]);
        assert_eq!(
            Channel::split(&membership).map(|(c, _)| c),
            Ok(Channel::Membership)
        );
        let ack = |applied| {
            queue_datagram(QueueBody::ReplicaAck {
                fence: FencingToken::new(7),
                applied,
            })
        };
        let request = queue_datagram(QueueBody::Lease { request: 1 });
        let owner = NodeId::new(1);

        let mut held = Holdback::default();
        // Appends up to generation 2 made, up to 1 durable.
        assert_eq!(
            held.admit(2, 1, AckAfter::Sync, owner, ack(10)),
            None,
            "an ack waits"
        );
        assert_eq!(
            held.admit(2, 1, AckAfter::Sync, owner, membership.clone()),
            Some(membership),
            "a membership datagram waits for no checkpoint sync"
        );
        assert_eq!(
            held.admit(2, 1, AckAfter::Sync, owner, request.clone()),
            Some(request),
            "a queue request waits for no checkpoint sync"
        );
        assert_eq!(held.admit(3, 1, AckAfter::Sync, owner, ack(20)), None);
        assert!(held.release(1).is_none(), "nothing held is durable yet");
        assert_eq!(held.release(2).map(|h| h.datagram), Some(ack(10)));
        assert!(
            held.release(2).is_none(),
            "the second waits for generation 3"
        );
        assert_eq!(held.release(3).map(|h| h.datagram), Some(ack(20)));
        // Nothing appended since the last sync: an acknowledgement leaves at once.
        assert_eq!(
            held.admit(3, 3, AckAfter::Sync, owner, ack(30)),
            Some(ack(30))
        );
    }

    /// `[queues] ack_after = "write"`: a replica's acknowledgement leaves once the records it
    /// follows are written, before their sync; its offer to a new owner (which carries its
    /// promise of the newer fence) still waits for the sync, and so does everything with the
    /// default, `"sync"`.
    #[test]
    fn with_ack_after_write_a_replica_acknowledgement_leaves_before_the_sync_and_an_offer_waits() {
        use meshkit::lease::FencingToken;
        use meshkit::queue::QueueBody;

        let ack = queue_datagram(QueueBody::ReplicaAck {
            fence: FencingToken::new(7),
            applied: 40,
        });
        let offer = queue_datagram(QueueBody::Offer {
            fence: FencingToken::new(8),
            source: FencingToken::new(7),
            applied: 40,
        });
        let owner = NodeId::new(1);
        let mut held = Holdback::default();
        // Appends up to generation 4 written, up to 3 synced.
        assert_eq!(
            held.admit(4, 3, AckAfter::Write, owner, ack.clone()),
            Some(ack.clone()),
            "with ack_after = write an acknowledgement waits for no sync"
        );
        assert_eq!(
            held.admit(4, 3, AckAfter::Write, owner, offer.clone()),
            None,
            "an offer waits for the sync"
        );
        assert_eq!(held.admit(4, 3, AckAfter::Sync, owner, ack.clone()), None);
        assert!(held.release(3).is_none());
        assert_eq!(held.release(4).map(|h| h.datagram), Some(offer));
        assert_eq!(held.release(4).map(|h| h.datagram), Some(ack));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn three_drivers_converge_and_detect_a_crash() {
        let network = MemoryNetwork::new();
        let nodes: Vec<NodeHandle> = (1..=3).map(|i| spawn_node(&network, i)).collect();
        for node in &nodes[1..] {
            node.join(vec![seed(1)]).await.unwrap();
        }
        assert_converged(&nodes).await;

        // A crash: node 3 drops off the network. Its driver may stop on its own first (its
        // transport closes once the queue drains), so the shutdown may find it gone.
        network.detach(NodeId::new(3));
        let _ = nodes[2].shutdown().await;
        let detected = eventually(StdDuration::from_secs(10), || async {
            for node in &nodes[..2] {
                let s = node.snapshot().await.unwrap();
                if s.peer(NodeId::new(3)).map(|p| p.state) != Some(MemberState::Dead) {
                    return false;
                }
            }
            true
        })
        .await;
        assert!(
            detected,
            "the crashed node was not declared dead within 10 s"
        );
        assert!(
            nodes[2].snapshot().await.is_err(),
            "a stopped driver answers nothing"
        );
    }

    /// The driver's per-channel counts agree with the core's own: one datagram handed to the
    /// transport per transmit, one channel byte more than the core encoded, and every datagram
    /// taken for the membership channel either decoded or refused by the core.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn traffic_counts_match_the_cores_counters() {
        let network = MemoryNetwork::new();
        let nodes: Vec<NodeHandle> = (1..=3).map(|i| spawn_node(&network, i)).collect();
        for node in &nodes[1..] {
            node.join(vec![seed(1)]).await.unwrap();
        }
        assert_converged(&nodes).await;
        for node in &nodes {
            let s = node.snapshot().await.unwrap();
            let m = s.traffic.membership;
            assert!(m.datagrams_sent > 0 && m.datagrams_received > 0, "{s:?}");
            assert_eq!(m.datagrams_sent, s.stats.datagrams_sent);
            assert_eq!(m.bytes_sent, s.stats.bytes_sent + s.stats.datagrams_sent);
            assert_eq!(
                m.datagrams_received,
                s.stats.datagrams_received + s.stats.datagrams_refused
            );
            assert!(m.bytes_received > m.datagrams_received, "{s:?}");
            assert_eq!(s.traffic.lease, ChannelTraffic::default(), "no leadership");
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn forged_sender_is_refused_by_the_core() {
        let network = MemoryNetwork::new();
        let a = spawn_node(&network, 1);
        // A datagram written by node 3 ...
        let mut forger = Node::new(
            fast_config(),
            NodeId::new(3),
            Incarnation::new(1),
            3,
            SystemClock.now(),
        );
        forger.join(SystemClock.now(), &[NodeId::new(1)]);
        let mut buf = Vec::new();
        let t = forger
            .poll_transmit(SystemClock.now(), &mut buf)
            .expect("a join sends a digest request");
        // ... arriving on a transport that authenticated node 2.
        assert!(network.deliver(
            NodeId::new(2),
            NodeId::new(1),
            Bytes::copy_from_slice(&buf[..t.len])
        ));
        let refused = eventually(StdDuration::from_secs(2), || async {
            a.snapshot().await.unwrap().stats.datagrams_refused == 1
        })
        .await;
        assert!(
            refused,
            "the core did not refuse a datagram with a forged sender"
        );
        let s = a.snapshot().await.unwrap();
        assert!(s.peer(NodeId::new(3)).is_none() && s.peer(NodeId::new(2)).is_none());
    }
}
