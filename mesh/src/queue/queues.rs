//! [`Queues`]: one node's part in the task queues of every configured shard: the owner of the
//! shards it holds, a replica for the owners that chose it, and a client for its producers and
//! workers. The node ([`crate::node::Node`]) drives it; see the [module docs](super).

use alloc::collections::{BTreeMap, BTreeSet, VecDeque};
use alloc::string::String;
use alloc::vec::Vec;

use super::backpressure::{BackpressureMonitor, BackpressureSignal};
use super::config::QueueConfig;
use super::error::QueueError;
use super::health::LeaseHealth;
use super::item::{ItemId, ItemRecord, Origin, OwnershipToken};
use super::replica::{Applied, ReplicaStore};
use super::store::{FailOutcome, WorkQueue};
use super::wire::{Batch, MAX_LEASE_ITEMS, QueueBody, QueueMessage, fill_batch_at};
use crate::id::NodeId;
use crate::lease::{FencingToken, LeaseClient, Scope};
use crate::membership::{MemberState, Membership};
use crate::shard::ShardId;
use crate::time::{Duration, Instant};

/// The period of the queue component's housekeeping: ownership checks, expiries, resends.
pub const TICK_INTERVAL: Duration = Duration::from_millis(50);
/// How long an unanswered request, replication batch or recovery message waits before it is
/// sent again.
pub const RESEND_INTERVAL: Duration = Duration::from_millis(200);
/// Requests a node keeps in flight at once.
pub const MAX_REQUESTS_IN_FLIGHT: usize = 4096;
/// Answers waiting for replication at one owner, per shard; past it new enqueues are refused
/// with [`QueueError::Overloaded`].
pub const MAX_WAITING_ACKS: usize = 4096;
/// Versions sent to one replica beyond what it acknowledged: the replication window. A replica
/// that is slow or gone costs at most this much per resend (about 64 datagrams of small items).
/// Every item takes three versions on its way (enqueue, lease, completion): at 5,000 items a
/// second a replica whose acknowledgement takes 10 ms (a round trip and a disk sync) has 150
/// versions in flight, which a window of 64 throttled to about 2,000 items a second.
pub const REPLICATION_WINDOW_VERSIONS: u64 = 1024;
/// Lease grants an owner remembers per shard, so that a resent lease request gets the items its
/// first answer carried instead of more (see `Serving::grants`); past it a resend leases anew.
pub const MAX_REMEMBERED_GRANTS: usize = 4096;
/// Acknowledgements of the same version in a row that make the owner resend at once.
const DUPLICATE_ACKS_RESEND: u32 = 3;
/// How many recovery waits a new owner waits, at most, for a member that is alive and runs
/// queues but has not answered (see `Queues::step_recovery`): long enough for membership to
/// suspect a member that is really gone, bounded so that a member that never answers (a shard
/// configuration it does not share) does not hold the shard unserved forever.
const RECOVERY_WAITS_FOR_THE_ALIVE: u32 = 10;
/// A replica replaced for not acknowledging is not chosen again for this many recovery waits
/// (membership has usually called it dead by then, if it is).
const REPLACED_RECOVERY_WAITS: u32 = 10;
/// Batches a replica holds that arrived before the ones they follow (reordered); past it the
/// newest are dropped and the owner's resend fills the gap.
pub(crate) const MAX_REORDERED_BATCHES: usize = 32;
/// Messages waiting for the host; past this the newest are dropped (and counted): every sender
/// retries.
pub const MAX_QUEUE_OUTBOX: usize = 16_384;
/// Events waiting for the node; past this the oldest are dropped (and counted).
const MAX_QUEUE_EVENTS: usize = 65_536;
/// The metadata key a node running queues publishes, so owners may pick it as a replica.
pub const PARTICIPANT_KEY: &str = "qn";

/// The metadata key under which a shard's owner publishes its fence and backpressure signal:
/// `q/{namespace}/{id}`.
pub fn owner_key(shard: &ShardId) -> String {
    alloc::format!("q/{}/{}", shard.namespace(), shard.id())
}

/// What the node's host learns from its queues.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum QueueEvent {
    /// Producer: the owner and its replicas hold the item (the enqueue is acknowledged).
    Enqueued {
        /// The shard.
        shard: ShardId,
        /// The request [`Node::queue_enqueue`](crate::node::Node::queue_enqueue) returned.
        request: u64,
        /// The item.
        item: ItemId,
        /// The owner's fence.
        fence: FencingToken,
    },
    /// Worker: an item to process, leased until `deadline` (local clock) unless heartbeated.
    Leased {
        /// The shard.
        shard: ShardId,
        /// The request.
        request: u64,
        /// The token to present.
        token: OwnershipToken,
        /// Local deadline.
        deadline: Instant,
        /// The item's bytes.
        payload: Vec<u8>,
    },
    /// Worker: the items a lease of several ([`Queues::lease_up_to`]) got, each leased until
    /// `deadline` (local clock) unless heartbeated.
    LeasedItems {
        /// The shard.
        shard: ShardId,
        /// The request.
        request: u64,
        /// Local deadline of every item's lease.
        deadline: Instant,
        /// Each item's token and bytes (at least one), in the order they were leased.
        items: Vec<(OwnershipToken, Vec<u8>)>,
    },
    /// Worker: nothing was pending.
    Empty {
        /// The shard.
        shard: ShardId,
        /// The request.
        request: u64,
    },
    /// Worker: the heartbeat, completion or failure was accepted (completions and failures are
    /// held by the replicas).
    Accepted {
        /// The shard.
        shard: ShardId,
        /// The request.
        request: u64,
        /// The token.
        token: OwnershipToken,
    },
    /// Producer or worker: the request was refused, or timed out.
    Refused {
        /// The shard.
        shard: ShardId,
        /// The request.
        request: u64,
        /// Why.
        error: QueueError,
    },
    /// Owner: an enqueue was acknowledged, `lag` after it arrived (the replication lag).
    Acknowledged {
        /// The shard.
        shard: ShardId,
        /// The item.
        item: ItemId,
        /// This owner's fence.
        fence: FencingToken,
        /// From the enqueue's arrival to its acknowledgement.
        lag: Duration,
    },
    /// Owner: a completion was accepted (held by the replicas) and answered.
    Completed {
        /// The shard.
        shard: ShardId,
        /// The token accepted.
        token: OwnershipToken,
    },
    /// Owner: a request with a stale token was refused.
    StaleRefused {
        /// The shard.
        shard: ShardId,
        /// The token refused.
        token: OwnershipToken,
    },
    /// Owner: an item's lease ended without completion (expired, or its worker's node gone):
    /// requeued or dead-lettered.
    Released {
        /// The shard.
        shard: ShardId,
        /// The item.
        item: ItemId,
        /// What became of it.
        outcome: FailOutcome,
    },
    /// Owner: a worker failed an item (requeued or dead-lettered, as `outcome` says); the
    /// failure is answered once the replicas hold it.
    Failed {
        /// The shard.
        shard: ShardId,
        /// The token the worker presented.
        token: OwnershipToken,
        /// What became of the item.
        outcome: FailOutcome,
    },
    /// Owner: a backpressure transition, published in this node's metadata.
    Backpressure {
        /// The shard.
        shard: ShardId,
        /// This owner's fence.
        fence: FencingToken,
        /// The new signal.
        signal: BackpressureSignal,
    },
    /// Owner: took the shard over under `fence`; rebuilding from replicas.
    Recovering {
        /// The shard.
        shard: ShardId,
        /// The new fence.
        fence: FencingToken,
    },
    /// Owner: the queue is rebuilt and served.
    Serving {
        /// The shard.
        shard: ShardId,
        /// This owner's fence.
        fence: FencingToken,
        /// The member it rebuilt from (`None`: an empty queue, or its own replica).
        source: Option<NodeId>,
        /// Items rebuilt (tombstones included).
        items: usize,
    },
    /// Owner: it no longer holds the shard's lease and stopped serving.
    Stopped {
        /// The shard.
        shard: ShardId,
        /// The fence it held.
        fence: FencingToken,
    },
    /// Owner: a worker's node went Dead or Left (the health tracker's alert).
    WorkerDisconnected {
        /// The worker's node.
        node: NodeId,
    },
    /// The node wrote one key of its own gossip metadata for the queues (its participation,
    /// or an owner's fence and backpressure signal); a host that audits metadata records it.
    Published {
        /// The key.
        key: String,
        /// The value (`None`: deleted).
        value: Option<Vec<u8>>,
        /// The version the write made.
        version: crate::MetaVersion,
    },
}

/// The component's counters; they only grow.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct QueueStats {
    /// Enqueues acknowledged as owner.
    pub acknowledged: u64,
    /// Completions accepted as owner.
    pub completed: u64,
    /// Requests refused for a stale token, as owner.
    pub stale_refused: u64,
    /// Batches a replica refused because it promised a newer owner.
    pub fenced_batches: u64,
    /// Messages refused: for a shard with no queue, or from a sender the message is not for.
    pub refused_messages: u64,
    /// Messages dropped because the host did not drain the outbox.
    pub outbox_dropped: u64,
    /// Events dropped because the node did not drain them.
    pub events_dropped: u64,
    /// Recoveries completed as a new owner.
    pub recoveries: u64,
}

/// A durable write of a replica: append `record` to the shard's checkpoint log, and make it
/// durable before sending anything polled after it (an acknowledgement must never promise what
/// the disk does not hold). [`ReplicaStore::restore`] reads the log back.
#[derive(Clone, Debug, PartialEq, Eq)]
#[must_use = "a checkpoint not written breaks the replica's acknowledgements"]
pub struct QueueDurableWrite {
    /// The shard.
    pub shard: ShardId,
    /// The bytes to append.
    pub record: Vec<u8>,
}

/// What the node lends the component for one input.
#[derive(Clone, Copy)]
pub struct QueueContext<'a> {
    /// The node's membership: owners by metadata, members up.
    pub membership: &'a Membership,
    /// The node's lease client, if it runs one: which shards it holds.
    pub client: Option<&'a LeaseClient>,
}

impl QueueContext<'_> {
    /// The fence this node holds the lease of `scope` (a shard's) under.
    fn holds(&self, now: Instant, scope: &Scope) -> Option<FencingToken> {
        self.client?.holds(now, scope)
    }

    fn is_up(&self, node: NodeId) -> bool {
        self.membership
            .member(node)
            .is_some_and(|m| matches!(m.state, MemberState::Alive | MemberState::Suspect))
    }

    fn is_alive(&self, node: NodeId) -> bool {
        self.membership
            .member(node)
            .is_some_and(|m| m.state == MemberState::Alive)
    }

    /// Every member that has not left, in id order, this node excluded: whom a new owner asks.
    /// Not only those whose metadata says they run queues (a node that just restarted may not
    /// have their metadata yet), and not only those it holds up: a node that was cut off holds
    /// the other side Dead until the heal spreads, and a replica it does not ask is a replica
    /// whose items it loses. A member really dead costs the recovery its wait.
    fn members_up(&self) -> Vec<NodeId> {
        let own = self.membership.local_id();
        self.membership
            .members()
            .filter(|m| m.id != own && m.state != MemberState::Left)
            .map(|m| m.id)
            .collect()
    }

    /// The members up that run queues, in id order, this node excluded.
    fn participants(&self) -> Vec<NodeId> {
        let own = self.membership.local_id();
        self.membership
            .members()
            .filter(|m| m.id != own && matches!(m.state, MemberState::Alive | MemberState::Suspect))
            .filter(|m| {
                self.membership
                    .metadata(m.id)
                    .is_some_and(|md| md.get(PARTICIPANT_KEY).is_some())
            })
            .map(|m| m.id)
            .collect()
    }

    /// The owner of `shard` by metadata: the member up that publishes the highest fence.
    pub(super) fn owner(
        &self,
        shard: &ShardId,
    ) -> Option<(NodeId, FencingToken, BackpressureSignal)> {
        let key = owner_key(shard);
        self.membership
            .members()
            .filter(|m| matches!(m.state, MemberState::Alive | MemberState::Suspect))
            .filter_map(|m| {
                let value = self.membership.metadata(m.id)?.get(&key)?;
                let (fence, signal) = BackpressureSignal::decode(value).ok()?;
                Some((m.id, fence, signal))
            })
            .max_by_key(|(id, fence, _)| (*fence, *id))
    }
}

#[derive(Debug)]
struct Link {
    acked: u64,
    sent: u64,
    last_send: Option<Instant>,
    /// When it last acknowledged something new, was chosen, or was seen caught up.
    last_progress: Instant,
    /// Acknowledgements in a row of the same version while more was sent: a batch was lost
    /// (or overtaken); at [`DUPLICATE_ACKS_RESEND`] the owner goes back at once.
    duplicate_acks: u32,
}

/// An answer waiting for the replicas: given once `replicas` replicas acknowledged `version`,
/// the version of the change it answers (the enqueue, the completion or failure), not the
/// item's version at answer time: a lease granted before the acknowledgement came would make
/// the enqueue wait for that lease's replication too (and a completion's, after it), which
/// cost a single shard 40% of its throughput on real nodes.
///
/// That rests on every batch covering `version` carrying the item: a batch lists the records
/// changed in its range at their version *when it is built*, so an item changed again before
/// (enqueued at 286, leased at 289, the batch up to 288 built after the lease: a resend, or a
/// new replica catching up) was not in it, and an acknowledgement of 288 answered an enqueue
/// no replica held (issue 16, `queue-owner-lapse` seed 947: two items lost once the owner
/// lapsed). `Queues::send_batches` therefore also sends, in every batch whose range holds
/// `version`, the record of each waiting item that moved past it.
#[derive(Debug)]
enum Waiting {
    Enqueue {
        producer: NodeId,
        request: u64,
        item: ItemId,
        /// The version of the item's record when it was enqueued (or found again, for a
        /// resend).
        version: u64,
        since: Instant,
        /// A resend of an enqueue already acknowledged (its answer was lost, or came after the
        /// producer gave up): answered again with the same item, but neither counted nor
        /// reported as a new acknowledgement.
        resent: bool,
    },
    Finish {
        worker: NodeId,
        request: u64,
        token: OwnershipToken,
        /// The version of the item's record once finished.
        version: u64,
        complete: bool,
    },
}

impl Waiting {
    /// The item whose record the replicas must hold before the answer.
    fn item(&self) -> ItemId {
        match self {
            Self::Enqueue { item, .. } => *item,
            Self::Finish { token, .. } => token.item,
        }
    }

    /// The version the replicas must acknowledge before the answer.
    fn version(&self) -> u64 {
        match self {
            Self::Enqueue { version, .. } | Self::Finish { version, .. } => *version,
        }
    }
}

#[derive(Debug)]
struct Serving {
    queue: WorkQueue,
    monitor: BackpressureMonitor,
    links: BTreeMap<NodeId, Link>,
    /// Replicas replaced for not acknowledging, and until when they are not chosen again.
    replaced: BTreeMap<NodeId, Instant>,
    waiting: Vec<Waiting>,
    /// The lease grants answered within the request timeout, by (worker, request), with when:
    /// a resend of the request (its worker heard no answer within [`RESEND_INTERVAL`], or the
    /// answer was lost) is answered with the same items while they are still leased under
    /// those grants. Without it every resend leased one more item, whose answer the worker's
    /// node dropped (the request was answered already, or answered by then): the item stayed
    /// leased to nobody for `lease_timeout` (issue 16's benchmark: enqueue-to-completion p99
    /// of 30 s, the lease timeout, once an owner answered slower than the resend interval).
    /// An answer of nothing pending is remembered too (a resend after it must not lease an
    /// item that arrived meanwhile). At most [`MAX_REMEMBERED_GRANTS`], the oldest forgotten
    /// first, and each after the request timeout, when its worker has given the request up.
    grants: BTreeMap<(NodeId, u64), Vec<OwnershipToken>>,
    /// The keys of `grants`, oldest first, with when each was granted.
    grant_order: VecDeque<(Instant, NodeId, u64)>,
}

impl Serving {
    /// Remembers the answer to `worker`'s lease `request` (see `grants`).
    fn remember_grant(
        &mut self,
        now: Instant,
        worker: NodeId,
        request: u64,
        tokens: Vec<OwnershipToken>,
    ) {
        if self.grant_order.len() >= MAX_REMEMBERED_GRANTS
            && let Some((_, n, r)) = self.grant_order.pop_front()
        {
            self.grants.remove(&(n, r));
        }
        if self.grants.insert((worker, request), tokens).is_none() {
            self.grant_order.push_back((now, worker, request));
        }
    }

    /// Forgets the grants older than `keep`.
    fn forget_grants(&mut self, now: Instant, keep: Duration) {
        while self
            .grant_order
            .front()
            .is_some_and(|(at, _, _)| now >= *at + keep)
        {
            if let Some((_, n, r)) = self.grant_order.pop_front() {
                self.grants.remove(&(n, r));
            }
        }
    }
}

#[derive(Debug)]
struct Pulling {
    from: NodeId,
    /// Where the pull is: the records of owner `source` up to version `after` are in
    /// (`ReplicaStore::chunk`'s order).
    source: FencingToken,
    after: u64,
    records: Vec<(FencingToken, ItemRecord)>,
    last_send: Instant,
    last_progress: Instant,
}

#[derive(Debug)]
struct Recovery {
    /// When it started, moved later by the time this node did not run (see `last_step`).
    started: Instant,
    asked: BTreeSet<NodeId>,
    offers: BTreeMap<NodeId, (FencingToken, u64)>,
    last_send: Instant,
    /// When it was last stepped (every tick, and every offer and pulled chunk): a later step
    /// much further on finds that this node did not run in between.
    last_step: Instant,
    /// Once decided: the members still to pull, most caught-up first.
    to_pull: Option<Vec<NodeId>>,
    pulling: Option<Pulling>,
    /// Every item of every copy pulled so far, each at its newest `(source fence, version)`.
    merged: BTreeMap<ItemId, (FencingToken, ItemRecord)>,
    /// The highest version of any copy pulled.
    applied: u64,
    /// The most caught-up copy's member.
    best: Option<NodeId>,
    /// The numbering (next item id, next lease id) of this node's own queue of an earlier fence
    /// that lapsed (see `Queues::lapsed`): the rebuilt queue numbers from at least there (its
    /// lease ids are not in its records once their items finished).
    floor: (u64, u64),
}

impl Recovery {
    /// A recovery started at `now` that asked `asked` and holds `offers` so far.
    fn new(
        now: Instant,
        asked: BTreeSet<NodeId>,
        offers: BTreeMap<NodeId, (FencingToken, u64)>,
    ) -> Self {
        Self {
            started: now,
            asked,
            offers,
            last_send: now,
            last_step: now,
            to_pull: None,
            pulling: None,
            merged: BTreeMap::new(),
            applied: 0,
            best: None,
            floor: (1, 1),
        }
    }

    fn merge(&mut self, records: impl IntoIterator<Item = (FencingToken, ItemRecord)>) {
        for (source, rec) in records {
            let newer = self
                .merged
                .get(&rec.id)
                .is_none_or(|(s, held)| (source, rec.version) > (*s, held.version));
            if newer {
                self.merged.insert(rec.id, (source, rec));
            }
        }
    }
}

#[derive(Debug)]
enum Owned {
    Recovering(Box<Recovery>),
    Serving(Box<Serving>),
}

#[derive(Debug)]
struct Request {
    shard: ShardId,
    body: QueueBody,
    deadline: Instant,
    next_send: Instant,
}

/// One node's queues. See the [module docs](super).
///
/// # Driving
///
/// [`Node`](crate::node::Node) drives it; a host never calls it directly. Inputs:
/// [`handle_message`](Self::handle_message), [`handle_timeout`](Self::handle_timeout),
/// [`on_member`](Self::on_member), [`sync`](Self::sync) (the lease client's shards), and the
/// commands ([`enqueue`](Self::enqueue), [`lease`](Self::lease), ...). Outputs, in this order:
/// [`poll_durable`](Self::poll_durable), [`poll_metadata`](Self::poll_metadata),
/// [`poll_message`](Self::poll_message), [`poll_event`](Self::poll_event),
/// [`poll_timeout`](Self::poll_timeout). Replication batches and replica acknowledgements wait
/// for [`flush`](Self::flush) (the node calls it when its transmits are polled, after the
/// durable writes were drained), so the inputs between two polls share them.
#[derive(Debug)]
pub struct Queues {
    id: NodeId,
    config: QueueConfig,
    /// The configured shards, each with the lease scope that owns it: built once, since
    /// [`sync`](Self::sync) looks every shard's lease up after every input.
    shards: BTreeMap<ShardId, Scope>,
    owned: BTreeMap<ShardId, (FencingToken, Owned)>,
    /// The queue a shard's owner served when its lease lapsed (its lease client's local expiry
    /// came before a renewal: a pause, late timers, lost renewals), kept under that fence. The
    /// lease table may still hold the lease for this node, and then a renewal or a repeated
    /// acquire gives back the SAME fencing token: no other owner can have served in between
    /// (every grant to another node, and every transfer, has a new token), so this copy is the
    /// shard's latest state and serving resumes from it. Rebuilding from replicas instead
    /// (issue 16) lost every item whose replica missed the recovery wait and numbered items
    /// again from the highest id recovered, under the same fence: one id, two payloads, both
    /// acknowledged (a replica skips a record it holds at the same version). Under another
    /// fence it is this node's own copy in the recovery (`start_recovery`). Dropped once this
    /// node serves the shard again, or once another member publishes that it serves it under a
    /// higher fence (that owner recovered without it; it is not worth its memory).
    lapsed: BTreeMap<ShardId, (FencingToken, Box<Serving>)>,
    replicas: BTreeMap<ShardId, ReplicaStore>,
    /// Shards served with changes not yet offered to their replicas: the changes of every
    /// input until the next [`flush`](Self::flush) go out together, a batch per datagram.
    to_replicate: BTreeSet<ShardId>,
    /// Acknowledgements this replica owes, by shard and owner: the fence and the version it
    /// holds. One per owner per [`flush`](Self::flush), of the latest version, however many
    /// batches it applied since.
    to_ack: BTreeMap<(ShardId, NodeId), (FencingToken, u64)>,
    /// Batches that arrived ahead of a gap, by shard and `from`.
    reordered: BTreeMap<ShardId, BTreeMap<u64, (NodeId, Batch)>>,
    requests: BTreeMap<u64, Request>,
    next_request: u64,
    health: LeaseHealth,
    outbox: VecDeque<(NodeId, QueueMessage)>,
    events: VecDeque<QueueEvent>,
    record_durable: bool,
    durable: VecDeque<QueueDurableWrite>,
    metadata: VecDeque<(String, Option<Vec<u8>>)>,
    next_tick: Instant,
    stats: QueueStats,
}

impl Queues {
    /// The queues of `shards` on node `id`, booted under incarnation `boot` (it numbers the
    /// requests, so a restarted producer never reuses one), with `replicas` restored from
    /// their checkpoints.
    pub fn new(
        now: Instant,
        id: NodeId,
        boot: u32,
        shards: impl IntoIterator<Item = ShardId>,
        config: QueueConfig,
        replicas: BTreeMap<ShardId, ReplicaStore>,
    ) -> Self {
        let mut metadata = VecDeque::new();
        metadata.push_back((String::from(PARTICIPANT_KEY), Some(alloc::vec![1])));
        Self {
            id,
            health: LeaseHealth::new(config.health_grace()),
            config,
            shards: shards
                .into_iter()
                .map(|shard| {
                    let scope = shard.scope();
                    (shard, scope)
                })
                .collect(),
            owned: BTreeMap::new(),
            lapsed: BTreeMap::new(),
            replicas,
            to_replicate: BTreeSet::new(),
            to_ack: BTreeMap::new(),
            reordered: BTreeMap::new(),
            requests: BTreeMap::new(),
            next_request: u64::from(boot) << 32,
            outbox: VecDeque::new(),
            events: VecDeque::new(),
            record_durable: false,
            durable: VecDeque::new(),
            metadata,
            next_tick: now,
            stats: QueueStats::default(),
        }
    }

    /// From now on, every change of a replica is recorded for [`poll_durable`](Self::poll_durable).
    pub fn record_durable_writes(&mut self) {
        self.record_durable = true;
    }

    // ---- commands ------------------------------------------------------------------------------

    /// Asks the shard's owner to add an item; [`QueueEvent::Enqueued`] reports the
    /// acknowledgement.
    ///
    /// # Errors
    ///
    /// [`QueueError::UnknownShard`], [`QueueError::PayloadTooLarge`],
    /// [`QueueError::Overloaded`]; nothing was sent.
    pub fn enqueue(
        &mut self,
        now: Instant,
        ctx: QueueContext<'_>,
        shard: ShardId,
        payload: &[u8],
    ) -> Result<u64, QueueError> {
        if payload.len() > super::MAX_PAYLOAD_BYTES {
            return Err(QueueError::PayloadTooLarge {
                len: payload.len(),
                max: super::MAX_PAYLOAD_BYTES,
            });
        }
        self.request(now, ctx, shard, |request| QueueBody::Enqueue {
            request,
            payload: payload.to_vec(),
        })
    }

    /// Asks the shard's owner for an item; [`QueueEvent::Leased`] or [`QueueEvent::Empty`].
    ///
    /// # Errors
    ///
    /// As [`enqueue`](Self::enqueue).
    pub fn lease(
        &mut self,
        now: Instant,
        ctx: QueueContext<'_>,
        shard: ShardId,
    ) -> Result<u64, QueueError> {
        self.request(now, ctx, shard, |request| QueueBody::Lease { request })
    }

    /// Asks the shard's owner for up to `max` items in one request:
    /// [`QueueEvent::LeasedItems`] with as many as were pending and fit one answer datagram
    /// ([`LEASED_ITEMS_BYTES`](super::LEASED_ITEMS_BYTES): about 30 items of 8 bytes, at
    /// least 2 of the largest), or [`QueueEvent::Empty`]. A lease of one is sent as
    /// [`lease`](Self::lease) (which every owner reads) and answered with
    /// [`QueueEvent::Leased`]. Why: a worker pays a request, an answer and the owner's input
    /// round per lease; taking several at once cuts that by as many.
    ///
    /// # Errors
    ///
    /// [`QueueError::OutOfRange`] naming `max` outside 1..=[`MAX_LEASE_ITEMS`]; else as
    /// [`enqueue`](Self::enqueue). Nothing was sent.
    pub fn lease_up_to(
        &mut self,
        now: Instant,
        ctx: QueueContext<'_>,
        shard: ShardId,
        max: u16,
    ) -> Result<u64, QueueError> {
        if !(1..=MAX_LEASE_ITEMS).contains(&max) {
            return Err(QueueError::OutOfRange {
                field: "max",
                value: u64::from(max),
                min: 1,
                max: u64::from(MAX_LEASE_ITEMS),
            });
        }
        if max == 1 {
            return self.lease(now, ctx, shard);
        }
        self.request(now, ctx, shard, |request| QueueBody::LeaseUpTo {
            request,
            max,
        })
    }

    /// Heartbeats, completes (`outcome: None`) or fails (`Some(requeue)`) the token's item;
    /// [`QueueEvent::Accepted`] or [`QueueEvent::Refused`].
    ///
    /// # Errors
    ///
    /// As [`enqueue`](Self::enqueue).
    pub fn finish(
        &mut self,
        now: Instant,
        ctx: QueueContext<'_>,
        shard: ShardId,
        token: OwnershipToken,
        op: FinishOp,
    ) -> Result<u64, QueueError> {
        self.request(now, ctx, shard, |request| match op {
            FinishOp::Heartbeat => QueueBody::Heartbeat { request, token },
            FinishOp::Complete => QueueBody::Complete { request, token },
            FinishOp::Fail { requeue } => QueueBody::Fail {
                request,
                token,
                requeue,
            },
        })
    }

    /// The owner takes every pending item out of the shard's queue (replicated as drain
    /// events) and returns them.
    ///
    /// # Errors
    ///
    /// [`QueueError::NotOwner`] or [`QueueError::Recovering`]; nothing changed.
    pub fn drain(
        &mut self,
        now: Instant,
        ctx: QueueContext<'_>,
        shard: &ShardId,
    ) -> Result<Vec<(Origin, Vec<u8>)>, QueueError> {
        let serving = self.serving_mut(now, ctx, shard)?;
        let items = serving.queue.drain();
        self.observe_backpressure(now, shard);
        self.replicate(shard);
        Ok(items)
    }

    /// The owner puts drained items back as pending (replicated as restore events).
    ///
    /// # Errors
    ///
    /// [`QueueError::NotOwner`], [`QueueError::Recovering`], or [`QueueError::Full`] once the
    /// queue is full (the items before it were restored).
    pub fn restore(
        &mut self,
        now: Instant,
        ctx: QueueContext<'_>,
        shard: &ShardId,
        items: &[(Origin, Vec<u8>)],
    ) -> Result<usize, QueueError> {
        let serving = self.serving_mut(now, ctx, shard)?;
        let result = serving.queue.restore(items);
        self.observe_backpressure(now, shard);
        self.replicate(shard);
        result
    }

    // ---- inputs --------------------------------------------------------------------------------

    /// One message from `from` (as the transport authenticated it).
    ///
    /// # Errors
    ///
    /// [`QueueError::UnknownShard`] for a shard with no queue (counted); nothing changed.
    pub fn handle_message(
        &mut self,
        now: Instant,
        ctx: QueueContext<'_>,
        from: NodeId,
        message: QueueMessage,
    ) -> Result<(), QueueError> {
        let QueueMessage { shard, body } = message;
        if !self.shards.contains_key(&shard) {
            self.stats.refused_messages += 1;
            // A new owner asks every member that runs queues, and waits past its recovery wait
            // for those alive: one that does not run this shard holds nothing of it, and says
            // so at once.
            if let QueueBody::Recover { fence } = body {
                let nothing = QueueBody::Offer {
                    fence,
                    source: FencingToken::default(),
                    applied: 0,
                };
                self.send(from, &shard, nothing);
            }
            return Err(QueueError::UnknownShard);
        }
        match body {
            QueueBody::Enqueue { request, payload } => {
                self.on_enqueue(now, ctx, from, &shard, request, &payload);
            }
            QueueBody::Lease { request } => self.on_lease(now, ctx, from, &shard, request, None),
            QueueBody::LeaseUpTo { request, max } => {
                self.on_lease(now, ctx, from, &shard, request, Some(max));
            }
            QueueBody::Heartbeat { request, token } => {
                self.on_finish(now, ctx, from, &shard, request, token, None);
            }
            QueueBody::Complete { request, token } => {
                self.on_finish(now, ctx, from, &shard, request, token, Some(None));
            }
            QueueBody::Fail {
                request,
                token,
                requeue,
            } => self.on_finish(now, ctx, from, &shard, request, token, Some(Some(requeue))),
            QueueBody::Enqueued {
                request,
                item,
                fence,
            } => self.answered(request, &shard, |shard| QueueEvent::Enqueued {
                shard,
                request,
                item,
                fence,
            }),
            QueueBody::Leased {
                request,
                token,
                timeout,
                payload,
            } => self.answered(request, &shard, |shard| QueueEvent::Leased {
                shard,
                request,
                token,
                // Counted from the answer's arrival: the owner's deadline is earlier by the
                // one-way delay, so a worker that heartbeats well within `timeout` is safe.
                deadline: now + timeout,
                payload,
            }),
            QueueBody::LeasedItems {
                request,
                timeout,
                items,
            } => self.answered(request, &shard, |shard| QueueEvent::LeasedItems {
                shard,
                request,
                // Counted from the answer's arrival, as for one item.
                deadline: now + timeout,
                items,
            }),
            QueueBody::Empty { request } => {
                self.answered(request, &shard, |shard| QueueEvent::Empty {
                    shard,
                    request,
                });
            }
            QueueBody::Accepted { request, token } => {
                self.answered(request, &shard, |shard| QueueEvent::Accepted {
                    shard,
                    request,
                    token,
                });
            }
            QueueBody::Refused {
                request,
                code,
                fence,
            } => self.on_refused(now, &shard, request, code, fence),
            QueueBody::Replicate(batch) => self.on_replicate(from, &shard, &batch),
            QueueBody::ReplicaAck { fence, applied } => {
                self.on_replica_ack(now, from, &shard, fence, applied);
            }
            QueueBody::Recover { fence } => {
                let replica = self.replicas.entry(shard.clone()).or_default();
                let (source, applied) = replica.promise(fence);
                let record = self.record_durable.then(|| replica.checkpoint_record([]));
                self.write_durable(&shard, record);
                self.send(
                    from,
                    &shard,
                    QueueBody::Offer {
                        fence,
                        source,
                        applied,
                    },
                );
            }
            QueueBody::Offer {
                fence,
                source,
                applied,
            } => {
                if let Some((f, Owned::Recovering(r))) = self.owned.get_mut(&shard)
                    && *f == fence
                    && r.asked.contains(&from)
                {
                    r.offers.insert(from, (source, applied));
                }
                self.step_recovery(now, ctx, &shard);
            }
            QueueBody::Pull {
                fence,
                source,
                after,
            } => {
                if let Some(replica) = self.replicas.get(&shard)
                    && fence >= replica.promised()
                {
                    let chunk = replica.chunk(source, after);
                    self.send(from, &shard, QueueBody::Snapshot(chunk));
                }
            }
            QueueBody::Snapshot(batch) => self.on_snapshot(now, ctx, from, &shard, batch),
        }
        Ok(())
    }

    /// Membership says `node` went down (Dead or Left) or came back.
    pub fn on_member(&mut self, now: Instant, node: NodeId, down: bool) {
        if self.health.on_member(now, node, down) {
            self.push_event(QueueEvent::WorkerDisconnected { node });
        }
    }

    /// Compares the shards owned with the shards the lease client holds now: takes over the new
    /// ones (recovery), stops serving the lost ones.
    pub fn sync(&mut self, now: Instant, ctx: QueueContext<'_>) {
        // Most inputs change no lease: find the shards to act on without cloning any.
        type ToAct = (ShardId, Option<FencingToken>, Option<FencingToken>);
        let to_act: Vec<ToAct> = self
            .shards
            .iter()
            .filter_map(|(shard, scope)| {
                let held = ctx.holds(now, scope);
                let owned = self.owned.get(shard).map(|(f, _)| *f);
                (held != owned || self.lapsed.contains_key(shard))
                    .then(|| (shard.clone(), held, owned))
            })
            .collect();
        for (shard, held, owned) in to_act {
            if let Some((lapsed, _)) = self.lapsed.get(&shard)
                && ctx
                    .owner(&shard)
                    .is_some_and(|(o, f, _)| o != self.id && f > *lapsed)
            {
                self.lapsed.remove(&shard);
            }
            if held == owned {
                continue;
            }
            if let Some((fence, state)) = self.owned.remove(&shard) {
                if let Owned::Serving(s) = state {
                    // Kept, not served: see `lapsed`. Nothing is answered or replicated from
                    // it until the same fence is held again.
                    self.lapsed.insert(shard.clone(), (fence, s));
                }
                self.metadata.push_back((owner_key(&shard), None));
                self.push_event(QueueEvent::Stopped {
                    shard: shard.clone(),
                    fence,
                });
            }
            if let Some(fence) = held {
                let same = self.lapsed.get(&shard).is_some_and(|(f, _)| *f == fence);
                match self.lapsed.remove(&shard) {
                    Some((_, s)) if same => self.resume(now, ctx, &shard, fence, s),
                    // Another fence: another owner may have served since; rebuild from the
                    // replicas, which promised the newer fence, with its own lapsed queue as
                    // one more copy (kept until it serves: a recovery can lapse too).
                    lapsed => {
                        if let Some(l) = lapsed {
                            self.lapsed.insert(shard.clone(), l);
                        }
                        self.start_recovery(now, ctx, &shard, fence);
                    }
                }
            }
        }
    }

    /// Housekeeping when [`poll_timeout`](Self::poll_timeout) is due: ownership, expiries, the
    /// health tracker, recoveries, replication resends, backpressure, request resends and
    /// timeouts. A spurious call is a no-op.
    pub fn handle_timeout(&mut self, now: Instant, ctx: QueueContext<'_>) {
        if now < self.next_tick {
            return;
        }
        self.next_tick = now + TICK_INTERVAL;
        self.sync(now, ctx);
        let gone = self.health.due(now);
        self.health.forget_idle(now);
        let shards: Vec<ShardId> = self.owned.keys().cloned().collect();
        for shard in shards {
            if let Some((_, Owned::Serving(s))) = self.owned.get_mut(&shard) {
                s.forget_grants(now, self.config.request_timeout());
                let mut released = s.queue.expire(now);
                for &worker in &gone {
                    released.extend(s.queue.release_worker(worker));
                }
                for (item, outcome) in released {
                    self.push_event(QueueEvent::Released {
                        shard: shard.clone(),
                        item,
                        outcome,
                    });
                }
                // Expiries and releases move the count, and a transition the cooldown held
                // back is due once it passed: without this a queue emptied by a drain, or by
                // the last lease inside the cooldown, stayed active until the next request.
                self.observe_backpressure(now, &shard);
                self.refresh_links(now, ctx, &shard);
                self.replicate(&shard);
                self.answer_waiting(now, &shard);
            } else {
                self.step_recovery(now, ctx, &shard);
            }
        }
        // Requests: resend the due ones to the owner known now, time out the old ones.
        let due: Vec<u64> = self
            .requests
            .iter()
            .filter(|(_, r)| r.next_send <= now)
            .map(|(&k, _)| k)
            .collect();
        for k in due {
            let Some(r) = self.requests.get_mut(&k) else {
                continue;
            };
            if r.deadline <= now {
                let shard = r.shard.clone();
                self.requests.remove(&k);
                self.push_event(QueueEvent::Refused {
                    shard,
                    request: k,
                    error: QueueError::TimedOut,
                });
                continue;
            }
            // With no owner known the request stays due, so it goes out at the first tick
            // that knows one, not a whole resend interval later (a producer's first requests
            // after a failover, or before the owner's metadata reached it).
            let Some((owner, _, _)) = ctx.owner(&r.shard) else {
                continue;
            };
            r.next_send = now + RESEND_INTERVAL;
            let (shard, body) = (r.shard.clone(), r.body.clone());
            self.send(owner, &shard, body);
        }
    }

    /// Sends what the inputs since the last flush left to send together: each changed shard's
    /// records to its replicas (in datagram-sized batches), and each owner the latest version
    /// this replica holds of it. The node calls it when its transmits are polled, so all the
    /// inputs a host takes in before draining (a driver's round of datagrams and commands)
    /// share batches and acknowledgements: with one Replicate per enqueue a batch held one or
    /// two records and every record cost its replica a checkpoint record and an answer.
    /// Deterministic: a function of the state and `now` alone.
    pub fn flush(&mut self, now: Instant) {
        for shard in core::mem::take(&mut self.to_replicate) {
            self.send_batches(now, &shard);
        }
        for ((shard, owner), (fence, applied)) in core::mem::take(&mut self.to_ack) {
            self.send(owner, &shard, QueueBody::ReplicaAck { fence, applied });
        }
    }

    /// Whether a [`flush`](Self::flush) has anything to send.
    pub fn has_unflushed(&self) -> bool {
        !self.to_replicate.is_empty() || !self.to_ack.is_empty()
    }

    // ---- outputs -------------------------------------------------------------------------------

    /// The next checkpoint record to make durable (before anything polled after it is sent).
    pub fn poll_durable(&mut self) -> Option<QueueDurableWrite> {
        self.durable.pop_front()
    }

    /// The next metadata write for the node's membership: a key and its value (`None`: delete).
    pub fn poll_metadata(&mut self) -> Option<(String, Option<Vec<u8>>)> {
        self.metadata.pop_front()
    }

    /// The next message to send, and to whom (possibly this node itself: the node hands it
    /// back).
    pub fn poll_message(&mut self) -> Option<(NodeId, QueueMessage)> {
        self.outbox.pop_front()
    }

    /// The next event.
    pub fn poll_event(&mut self) -> Option<QueueEvent> {
        self.events.pop_front()
    }

    /// When [`handle_timeout`](Self::handle_timeout) is next due.
    pub fn poll_timeout(&self) -> Option<Instant> {
        Some(self.next_tick)
    }

    // ---- views ---------------------------------------------------------------------------------

    /// The queue of `shard` if this node serves it.
    pub fn serving(&self, shard: &ShardId) -> Option<&WorkQueue> {
        match self.owned.get(shard) {
            Some((_, Owned::Serving(s))) => Some(&s.queue),
            _ => None,
        }
    }

    /// The shards this node owns (serving or recovering), with their fences.
    pub fn owned(&self) -> impl Iterator<Item = (&ShardId, FencingToken)> + '_ {
        self.owned.iter().map(|(s, (f, _))| (s, *f))
    }

    /// Whether this node owns `shard` and is still rebuilding it.
    pub fn is_recovering(&self, shard: &ShardId) -> bool {
        matches!(self.owned.get(shard), Some((_, Owned::Recovering(_))))
    }

    /// The backpressure monitor of a shard this node serves.
    pub fn monitor(&self, shard: &ShardId) -> Option<&BackpressureMonitor> {
        match self.owned.get(shard) {
            Some((_, Owned::Serving(s))) => Some(&s.monitor),
            _ => None,
        }
    }

    /// The replicas of a shard this node serves: each with the version it acknowledged.
    pub fn replica_links(&self, shard: &ShardId) -> Vec<(NodeId, u64)> {
        match self.owned.get(shard) {
            Some((_, Owned::Serving(s))) => s.links.iter().map(|(&n, l)| (n, l.acked)).collect(),
            _ => Vec::new(),
        }
    }

    /// This node's replica copies, by shard.
    pub fn replicas(&self) -> &BTreeMap<ShardId, ReplicaStore> {
        &self.replicas
    }

    /// The signal of `shard`'s owner as this node's metadata shows it, with the owner.
    pub fn backpressure(
        &self,
        ctx: QueueContext<'_>,
        shard: &ShardId,
    ) -> Option<(NodeId, FencingToken, BackpressureSignal)> {
        ctx.owner(shard)
    }

    /// The health tracker.
    pub fn health(&self) -> &LeaseHealth {
        &self.health
    }

    /// The configuration.
    pub fn config(&self) -> &QueueConfig {
        &self.config
    }

    /// The configured shards.
    pub fn shards(&self) -> impl Iterator<Item = &ShardId> + '_ {
        self.shards.keys()
    }

    /// Requests in flight.
    pub fn requests_in_flight(&self) -> usize {
        self.requests.len()
    }

    /// The counters.
    pub fn stats(&self) -> QueueStats {
        self.stats
    }

    // ---- owner -------------------------------------------------------------------------------

    fn serving_mut(
        &mut self,
        now: Instant,
        ctx: QueueContext<'_>,
        shard: &ShardId,
    ) -> Result<&mut Serving, QueueError> {
        let held = self
            .shards
            .get(shard)
            .and_then(|scope| ctx.holds(now, scope));
        match self.owned.get_mut(shard) {
            Some((fence, Owned::Serving(s))) if held == Some(*fence) => Ok(s),
            Some((fence, Owned::Recovering(_))) if held == Some(*fence) => {
                Err(QueueError::Recovering)
            }
            _ => Err(QueueError::NotOwner {
                owner: ctx.owner(shard).map(|(o, _, _)| o),
            }),
        }
    }

    fn refuse(&mut self, to: NodeId, shard: &ShardId, request: u64, error: &QueueError) {
        let fence = self
            .owned
            .get(shard)
            .map_or(FencingToken::new(0), |(f, _)| *f);
        self.send(
            to,
            shard,
            QueueBody::Refused {
                request,
                code: error.code(),
                fence,
            },
        );
    }

    fn on_enqueue(
        &mut self,
        now: Instant,
        ctx: QueueContext<'_>,
        from: NodeId,
        shard: &ShardId,
        request: u64,
        payload: &[u8],
    ) {
        let origin = Origin {
            node: from,
            request,
        };
        let result = self.serving_mut(now, ctx, shard).and_then(|s| {
            let retried = s.waiting.iter().any(|w| {
                matches!(*w, Waiting::Enqueue { producer, request: r, .. }
                    if producer == from && r == request)
            });
            if retried {
                // A resend of an enqueue still waiting for its replicas: it is answered then.
                return Ok(());
            }
            if s.waiting.len() >= MAX_WAITING_ACKS {
                return Err(QueueError::Overloaded {
                    max: MAX_WAITING_ACKS,
                });
            }
            let resent = s.queue.knows(&origin);
            let item = s.queue.enqueue(origin, payload)?;
            s.waiting.push(Waiting::Enqueue {
                producer: from,
                request,
                item,
                version: record_version(&s.queue, item),
                since: now,
                resent,
            });
            Ok(())
        });
        match result {
            Ok(()) => {
                self.observe_backpressure(now, shard);
                self.replicate(shard);
                self.answer_waiting(now, shard);
            }
            Err(e) => self.refuse(from, shard, request, &e),
        }
    }

    /// A lease request: of one item (`many: None`, answered `Leased`) or of up to `many`
    /// (answered `LeasedItems`), as many as are pending and fit one answer.
    fn on_lease(
        &mut self,
        now: Instant,
        ctx: QueueContext<'_>,
        from: NodeId,
        shard: &ShardId,
        request: u64,
        many: Option<u16>,
    ) {
        self.health.on_heartbeat(now, from);
        let lease_timeout = self.config.lease_timeout();
        let max = usize::from(many.unwrap_or(1));
        let result = self.serving_mut(now, ctx, shard).map(|s| {
            if let Some(tokens) = s.grants.get(&(from, request)) {
                // A resend: the same items again, those still leased under these grants, for
                // what is left of their leases (the worker counts from the answer's arrival).
                let items: Vec<(OwnershipToken, Vec<u8>)> = tokens
                    .iter()
                    .filter(|t| s.queue.is_leased_under(t))
                    .map(|t| {
                        let payload = s
                            .queue
                            .record(t.item)
                            .map(|r| r.payload.clone())
                            .unwrap_or_default();
                        (*t, payload)
                    })
                    .collect();
                let left = items
                    .iter()
                    .filter_map(|(t, _)| s.queue.lease_deadline(t.item))
                    .map(|d| d.saturating_duration_since(now))
                    .min()
                    .unwrap_or(lease_timeout);
                return (items, left);
            }
            let mut items = Vec::new();
            let mut room = super::wire::LEASED_ITEMS_BYTES;
            while items.len() < max {
                let Some(len) = s.queue.next_pending_len() else {
                    break;
                };
                let size = super::wire::leased_item_bytes(len);
                if size > room {
                    break;
                }
                let Some((token, _)) = s.queue.lease(now, from) else {
                    break;
                };
                room -= size;
                let payload = s
                    .queue
                    .record(token.item)
                    .map(|r| r.payload.clone())
                    .unwrap_or_default();
                items.push((token, payload));
            }
            let tokens = items.iter().map(|(t, _)| *t).collect();
            s.remember_grant(now, from, request, tokens);
            (items, lease_timeout)
        });
        match result {
            Ok((items, _)) if items.is_empty() => {
                self.send(from, shard, QueueBody::Empty { request });
            }
            Ok((mut items, timeout)) => {
                let body = match (many, items.pop()) {
                    (None, Some((token, payload))) => QueueBody::Leased {
                        request,
                        token,
                        timeout,
                        payload,
                    },
                    (_, last) => {
                        items.extend(last);
                        QueueBody::LeasedItems {
                            request,
                            timeout,
                            items,
                        }
                    }
                };
                self.send(from, shard, body);
                self.observe_backpressure(now, shard);
                self.replicate(shard);
            }
            Err(e) => self.refuse(from, shard, request, &e),
        }
    }

    /// `op`: `None` heartbeat, `Some(None)` complete, `Some(Some(requeue))` fail.
    #[expect(
        clippy::too_many_arguments,
        reason = "the request's fields, unpacked once by handle_message"
    )]
    fn on_finish(
        &mut self,
        now: Instant,
        ctx: QueueContext<'_>,
        from: NodeId,
        shard: &ShardId,
        request: u64,
        token: OwnershipToken,
        op: Option<Option<bool>>,
    ) {
        self.health.on_heartbeat(now, from);
        let result = self.serving_mut(now, ctx, shard).and_then(|s| {
            let retried = s.waiting.iter().any(|w| {
                matches!(*w, Waiting::Finish { worker, request: r, token: t, .. }
                    if worker == from && r == request && t == token)
            });
            if retried {
                // A resend of a completion or failure still waiting for its replicas: it is
                // answered then (refusing it, the item being finished, would tell the worker
                // its completion failed).
                return Ok((true, None));
            }
            if op == Some(None) && s.queue.completed_by(&token) {
                // A resend of a completion already accepted and answered, whose answer was
                // lost (or came after the worker's request timed out and it asked again):
                // accepted again, not counted again. It waits like the first did, so it is
                // answered only once the replicas hold the completion (at once, normally).
                s.waiting.push(Waiting::Finish {
                    worker: from,
                    request,
                    token,
                    version: record_version(&s.queue, token.item),
                    complete: false,
                });
                return Ok((true, None));
            }
            match op {
                None => s.queue.heartbeat(now, &token).map(|_| (false, None)),
                Some(None) => s.queue.complete(&token).map(|()| (true, None)),
                Some(Some(requeue)) => s
                    .queue
                    .fail(&token, requeue)
                    .map(|outcome| (true, Some(outcome))),
            }
            .inspect(|&(replicated, _)| {
                if replicated {
                    s.waiting.push(Waiting::Finish {
                        worker: from,
                        request,
                        token,
                        version: record_version(&s.queue, token.item),
                        complete: op == Some(None),
                    });
                }
            })
        });
        match result {
            Ok((false, _)) => self.send(from, shard, QueueBody::Accepted { request, token }),
            Ok((true, failed)) => {
                if let Some(outcome) = failed {
                    self.push_event(QueueEvent::Failed {
                        shard: shard.clone(),
                        token,
                        outcome,
                    });
                }
                self.observe_backpressure(now, shard);
                self.replicate(shard);
                self.answer_waiting(now, shard);
            }
            Err(e) => {
                if e.is_stale() {
                    self.stats.stale_refused += 1;
                    self.push_event(QueueEvent::StaleRefused {
                        shard: shard.clone(),
                        token,
                    });
                }
                self.refuse(from, shard, request, &e);
            }
        }
    }

    fn observe_backpressure(&mut self, now: Instant, shard: &ShardId) {
        let Some((fence, Owned::Serving(s))) = self.owned.get_mut(shard) else {
            return;
        };
        let fence = *fence;
        if let Some(signal) = s.monitor.observe(now, s.queue.pending_count()) {
            self.metadata
                .push_back((owner_key(shard), Some(signal.encode(fence))));
            self.push_event(QueueEvent::Backpressure {
                shard: shard.clone(),
                fence,
                signal,
            });
        }
    }

    /// Answers every request whose change enough replicas hold.
    fn answer_waiting(&mut self, now: Instant, shard: &ShardId) {
        let Some((fence, Owned::Serving(s))) = self.owned.get_mut(shard) else {
            return;
        };
        let fence = *fence;
        let needed = self.config.replicas() as usize;
        let held = |version: u64| s.links.values().filter(|l| l.acked >= version).count();
        let mut answers = Vec::new();
        s.waiting.retain(|w| {
            if held(w.version()) < needed {
                return true;
            }
            answers.push(match *w {
                Waiting::Enqueue {
                    producer,
                    request,
                    item,
                    since,
                    resent,
                    ..
                } => (producer, request, Ok((item, since, resent))),
                Waiting::Finish {
                    worker,
                    request,
                    token,
                    complete,
                    ..
                } => (worker, request, Err((token, complete))),
            });
            false
        });
        for (to, request, answer) in answers {
            match answer {
                Ok((item, since, resent)) => {
                    if !resent {
                        self.stats.acknowledged += 1;
                        self.push_event(QueueEvent::Acknowledged {
                            shard: shard.clone(),
                            item,
                            fence,
                            lag: now.saturating_duration_since(since),
                        });
                    }
                    self.send(
                        to,
                        shard,
                        QueueBody::Enqueued {
                            request,
                            item,
                            fence,
                        },
                    );
                }
                Err((token, complete)) => {
                    if complete {
                        self.stats.completed += 1;
                        self.push_event(QueueEvent::Completed {
                            shard: shard.clone(),
                            token,
                        });
                    }
                    self.send(to, shard, QueueBody::Accepted { request, token });
                }
            }
        }
    }

    /// Keeps the replica set: links to members up are kept, links to members gone dropped, and
    /// new members (after this node, in id order, wrapping) added up to the configured count.
    fn refresh_links(&mut self, now: Instant, ctx: QueueContext<'_>, shard: &ShardId) {
        let Some((_, Owned::Serving(s))) = self.owned.get_mut(shard) else {
            return;
        };
        // A replica that acknowledged nothing new for the recovery wait while behind is
        // replaced (membership may take seconds to call it dead; acknowledgements wait for it
        // meanwhile). Dropping a replica only stops counting its acknowledgements: safe.
        let version = s.queue.version();
        let stuck = self.config.recovery_wait();
        let replaced = &mut s.replaced;
        replaced.retain(|_, until| *until > now);
        s.links.retain(|&n, l| {
            if l.acked >= version {
                // Caught up: having nothing to acknowledge is not silence. Without this, a
                // replica idle for longer than the wait was replaced at the first tick after the
                // next change, before its acknowledgement could come back.
                l.last_progress = now;
            }
            let keep = now < l.last_progress + stuck;
            if !keep {
                replaced.insert(n, now + stuck * REPLACED_RECOVERY_WAITS);
            }
            ctx.is_up(n) && keep
        });
        let want = self.config.replicas() as usize;
        if s.links.len() >= want {
            return;
        }
        let mut candidates = ctx.participants();
        let split = candidates.partition_point(|&n| n < self.id);
        candidates.rotate_left(split);
        for n in candidates
            .into_iter()
            .filter(|n| !s.replaced.contains_key(n))
        {
            if s.links.len() >= want {
                break;
            }
            s.links.entry(n).or_insert(Link {
                acked: 0,
                sent: 0,
                last_send: None,
                last_progress: now,
                duplicate_acks: 0,
            });
        }
    }

    /// Marks `shard`'s changes for its replicas: they go out at the next
    /// [`flush`](Self::flush), together with every other change made until then.
    fn replicate(&mut self, shard: &ShardId) {
        if !self.to_replicate.contains(shard) {
            self.to_replicate.insert(shard.clone());
        }
    }

    /// Sends each replica what it lacks: new changes at once, everything unacknowledged again
    /// after [`RESEND_INTERVAL`]; each batch as many records as fit a datagram.
    fn send_batches(&mut self, now: Instant, shard: &ShardId) {
        let Some((fence, Owned::Serving(s))) = self.owned.get_mut(shard) else {
            return;
        };
        let fence = *fence;
        let version = s.queue.version();
        if s.links.values().all(|l| l.acked >= version) {
            return;
        }
        let pending = s.queue.pending_count() as u32;
        let active = s.queue.active_count() as u32;
        // The waiting items whose record moved past the version their answer waits for, at
        // that version: every batch whose range holds it carries them (see `Waiting`).
        let mut moved: Vec<(u64, ItemId)> = s
            .waiting
            .iter()
            .filter(|w| record_version(&s.queue, w.item()) > w.version())
            .map(|w| (w.version(), w.item()))
            .collect();
        moved.sort_unstable();
        moved.dedup();
        let mut out = Vec::new();
        for (&node, link) in &mut s.links {
            if link.acked >= version {
                continue;
            }
            let stalled = link.last_send.is_none_or(|t| now >= t + RESEND_INTERVAL);
            if stalled {
                link.sent = link.acked;
            }
            let window_end = link.acked.saturating_add(REPLICATION_WINDOW_VERSIONS);
            if link.sent >= version || link.sent >= window_end {
                continue;
            }
            while link.sent < version && link.sent < window_end {
                let from = link.sent;
                let (records, more, last) = fill_batch_at(in_version_order(&s.queue, from, &moved));
                let to = if more {
                    last.unwrap_or(version)
                } else {
                    version
                };
                out.push((
                    node,
                    Batch {
                        fence,
                        from,
                        to,
                        done: true,
                        pending,
                        active,
                        records,
                    },
                ));
                link.sent = to;
            }
            link.last_send = Some(now);
        }
        for (node, batch) in out {
            self.send(node, shard, QueueBody::Replicate(batch));
        }
    }

    fn on_replica_ack(
        &mut self,
        now: Instant,
        from: NodeId,
        shard: &ShardId,
        fence: FencingToken,
        applied: u64,
    ) {
        let Some((f, Owned::Serving(s))) = self.owned.get_mut(shard) else {
            return;
        };
        if *f != fence {
            return;
        }
        let Some(link) = s.links.get_mut(&from) else {
            return;
        };
        if applied > link.acked {
            link.last_progress = now;
            link.duplicate_acks = 0;
        } else if applied == link.acked && applied < link.sent {
            link.duplicate_acks = link.duplicate_acks.saturating_add(1);
            if link.duplicate_acks == DUPLICATE_ACKS_RESEND {
                // Like TCP's fast retransmit: the replica keeps answering with the same
                // version while batches after it arrive, so the one it needs was lost. Once
                // per loss: the count rises past the threshold until the replica progresses.
                link.sent = applied;
                link.last_send = None;
            }
        }
        if applied < link.acked {
            // The replica lost what it had (a restart without its disk): start it over.
            link.acked = applied;
        }
        link.acked = link.acked.max(applied);
        // An acknowledgement below what was sent is usually a batch still in flight, not a
        // loss: a lost batch shows as no progress, and the resend after RESEND_INTERVAL goes
        // back to what the replica holds.
        self.replicate(shard);
        self.answer_waiting(now, shard);
    }

    // ---- replica -------------------------------------------------------------------------------

    fn on_replicate(&mut self, from: NodeId, shard: &ShardId, batch: &Batch) {
        let mut next = Some((from, batch.clone()));
        while let Some((from, batch)) = next.take() {
            let applied = self.apply_batch(from, shard, &batch);
            let buffer = self.reordered.entry(shard.clone()).or_default();
            match applied {
                Some(applied) => {
                    // Batches buffered behind this one: the first that now fits goes next.
                    buffer.retain(|_, (_, b)| b.fence == batch.fence && b.to > applied);
                    let fits = buffer.range(..=applied).next_back().map(|(&k, _)| k);
                    next = fits.and_then(|k| buffer.remove(&k));
                }
                None => {
                    if buffer.len() < MAX_REORDERED_BATCHES {
                        buffer.insert(batch.from, (from, batch));
                    }
                }
            }
        }
    }

    /// Applies one batch; returns the version now held, or `None` for a gap (the batch starts
    /// after it).
    fn apply_batch(&mut self, from: NodeId, shard: &ShardId, batch: &Batch) -> Option<u64> {
        let replica = self.replicas.entry(shard.clone()).or_default();
        let before = replica.source();
        match replica.apply(batch) {
            Applied::Fenced { .. } => {
                self.stats.fenced_batches += 1;
                // Nothing to buffer: a deposed owner's batch never applies.
                Some(0)
            }
            Applied::Gap { applied } => {
                let fence = batch.fence;
                self.send(from, shard, QueueBody::ReplicaAck { fence, applied });
                None
            }
            Applied::Applied { applied, records } => {
                if self.record_durable && (records > 0 || before != replica.source()) {
                    let touched: Vec<&ItemRecord> = batch.records.iter().collect();
                    let record = replica.checkpoint_record(touched);
                    self.write_durable(shard, Some(record));
                } else if self.record_durable {
                    let record = replica.checkpoint_record([]);
                    self.write_durable(shard, Some(record));
                }
                // Owed, not sent: one acknowledgement per owner per flush, of the latest
                // version, whatever number of batches arrived meanwhile.
                self.to_ack
                    .insert((shard.clone(), from), (batch.fence, applied));
                Some(applied)
            }
        }
    }

    fn write_durable(&mut self, shard: &ShardId, record: Option<Vec<u8>>) {
        if let Some(record) = record.filter(|_| self.record_durable) {
            self.durable.push_back(QueueDurableWrite {
                shard: shard.clone(),
                record,
            });
        }
    }

    // ---- recovery ------------------------------------------------------------------------------

    fn start_recovery(
        &mut self,
        now: Instant,
        ctx: QueueContext<'_>,
        shard: &ShardId,
        fence: FencingToken,
    ) {
        // Its own copy first: promise the new fence to itself.
        let replica = self.replicas.entry(shard.clone()).or_default();
        let own = replica.promise(fence);
        let record = self.record_durable.then(|| replica.checkpoint_record([]));
        self.write_durable(shard, record);
        let asked: BTreeSet<NodeId> = ctx.members_up().into_iter().collect();
        let mut offers = BTreeMap::new();
        offers.insert(self.id, own);
        let mut recovery = Recovery::new(now, asked.clone(), offers);
        // The queue it served itself under an earlier fence, if that lapsed (see `lapsed`): a
        // copy like a replica's, of that fence, and the most caught-up one of that fence (the
        // owner is where changes start). Without it, an owner whose lease lapsed and came back
        // under a new fence lost every item its replicas did not offer within the wait (they
        // may be paused or cut off just as it was), and numbered new items from the highest id
        // recovered: ids it had acknowledged were given again (issue 16). Items of a newer
        // owner, when offered, win over it (each item at its newest `(source fence, version)`).
        if let Some((lapsed, s)) = self.lapsed.get(shard) {
            recovery.merge(s.queue.records().map(|r| (*lapsed, r.clone())));
            recovery.applied = s.queue.version();
            recovery.floor = s.queue.numbering();
        }
        self.owned.insert(
            shard.clone(),
            (fence, Owned::Recovering(Box::new(recovery))),
        );
        self.push_event(QueueEvent::Recovering {
            shard: shard.clone(),
            fence,
        });
        for n in asked {
            self.send(n, shard, QueueBody::Recover { fence });
        }
        self.step_recovery(now, ctx, shard);
    }

    /// Moves a recovery on: resends what is unanswered; once every member asked answered (or
    /// the wait is over), pulls the records of every copy offered, most caught-up first, and
    /// merges them (each item at its newest `(source fence, version)`), then serves.
    ///
    /// Why every copy and not only the most caught-up one: a replica that joined an owner late
    /// catches up in version order, so its version can be the highest while it still lacks an
    /// older item whose last change it has not reached; another replica (or one of an earlier
    /// owner) holds it. Merging loses no item any copy holds.
    fn step_recovery(&mut self, now: Instant, ctx: QueueContext<'_>, shard: &ShardId) {
        let id = self.id;
        let wait = self.config.recovery_wait();
        let Some((fence, Owned::Recovering(r))) = self.owned.get_mut(shard) else {
            return;
        };
        let fence = *fence;
        // Time this node did not run is not silence of the members it asked: after a gap with
        // no step (a pause, a stalled host), the recovery's clocks move past it, and what is
        // unanswered is asked again at once. Without it a new owner paused through its wait
        // together with the members holding the shard gave them up (suspect by then) at its
        // first step back, before they could answer (issue 16, `queue-owner-lapse` seed 7600:
        // 177 acknowledged items lost).
        let stalled = now.saturating_duration_since(r.last_step);
        if stalled > RESEND_INTERVAL {
            r.started += stalled;
            if let Some(p) = &mut r.pulling {
                p.last_progress += stalled;
            }
        }
        r.last_step = now;
        let mut sends = Vec::new();
        if r.to_pull.is_none() {
            let all = r.asked.iter().all(|n| r.offers.contains_key(n));
            // Past the wait, a silent member that runs queues and that membership holds alive
            // (not suspect) is still waited for (up to `RECOVERY_WAITS_FOR_THE_ALIVE` waits): it
            // may hold the only copy of items an earlier owner acknowledged, and under loss it
            // answers late, not never. Serving without it lost every item of a shard (issue
            // 16, `queue-owner-lapse` seed 425: the lapsed owner's replica answered after 1 s
            // of 60% loss). A suspect is given up at the wait: a killed owner is one by the
            // time its lease expires, and waiting for its dead verdict doubled a failover
            // (queue-owner-kill, p50 2.80 s -> 5.48 s over 1,000 seeds).
            let waiting_for_alive = now < r.started + wait * RECOVERY_WAITS_FOR_THE_ALIVE
                && ctx.participants().iter().any(|&n| {
                    r.asked.contains(&n) && !r.offers.contains_key(&n) && ctx.is_alive(n)
                });
            if !all && (now < r.started + wait || waiting_for_alive) {
                if now >= r.last_send + RESEND_INTERVAL {
                    r.last_send = now;
                    for &n in r.asked.iter().filter(|n| !r.offers.contains_key(n)) {
                        sends.push((n, QueueBody::Recover { fence }));
                    }
                }
                for (n, body) in sends {
                    self.send(n, shard, body);
                }
                return;
            }
            // Decide: its own copy first, then every other copy that holds anything.
            if let Some(own) = self.replicas.get(shard) {
                r.applied = r.applied.max(own.applied());
                r.merge(own.sourced_records().map(|(f, r)| (f, r.clone())));
            }
            let mut others: Vec<(NodeId, (FencingToken, u64))> = r
                .offers
                .iter()
                .filter(|&(&n, &(source, applied))| n != id && (source.get() > 0 || applied > 0))
                .map(|(&n, &o)| (n, o))
                .collect();
            others.sort_by_key(|&(n, (source, applied))| core::cmp::Reverse((source, applied, n)));
            r.best = r
                .offers
                .iter()
                .max_by_key(|&(&n, &(source, applied))| (source, applied, n == id, n))
                .map(|(&n, _)| n)
                .filter(|&n| n != id);
            r.to_pull = Some(others.into_iter().map(|(n, _)| n).collect());
        }
        if let Some(p) = &mut r.pulling {
            if now >= p.last_progress + wait * 4 {
                // The member went silent: go on without its copy.
                r.pulling = None;
            } else {
                if now >= p.last_send + RESEND_INTERVAL {
                    p.last_send = now;
                    sends.push((
                        p.from,
                        QueueBody::Pull {
                            fence,
                            source: p.source,
                            after: p.after,
                        },
                    ));
                }
                for (n, body) in sends {
                    self.send(n, shard, body);
                }
                return;
            }
        }
        let next = r.to_pull.as_mut().and_then(|list| {
            if list.is_empty() {
                None
            } else {
                Some(list.remove(0))
            }
        });
        match next {
            Some(from) => {
                let source = FencingToken::default();
                r.pulling = Some(Pulling {
                    from,
                    source,
                    after: 0,
                    records: Vec::new(),
                    last_send: now,
                    last_progress: now,
                });
                self.pull(from, shard, fence, source, 0);
            }
            None => {
                let records: Vec<ItemRecord> = core::mem::take(&mut r.merged)
                    .into_values()
                    .map(|(_, rec)| rec)
                    .collect();
                let (applied, best, floor) = (r.applied, r.best, r.floor);
                self.serve(now, ctx, shard, fence, records, applied, best, floor);
            }
        }
    }

    fn on_snapshot(
        &mut self,
        now: Instant,
        ctx: QueueContext<'_>,
        from: NodeId,
        shard: &ShardId,
        batch: Batch,
    ) {
        let Some((fence, Owned::Recovering(r))) = self.owned.get_mut(shard) else {
            return;
        };
        let fence = *fence;
        let Some(p) = &mut r.pulling else {
            return;
        };
        // The chunk that follows where the pull is: the same owner's records from there, or
        // the next owner's from the start (`ReplicaStore::chunk`).
        let follows = (batch.fence == p.source && batch.from == p.after)
            || (batch.fence > p.source && batch.from == 0);
        if p.from != from || !follows {
            return;
        }
        let source = batch.fence;
        p.records
            .extend(batch.records.into_iter().map(|rec| (source, rec)));
        p.source = source;
        p.after = batch.to;
        p.last_progress = now;
        r.applied = r.applied.max(batch.to);
        if batch.done {
            let Some(p) = r.pulling.take() else {
                return;
            };
            r.merge(p.records);
            self.step_recovery(now, ctx, shard);
        } else {
            p.last_send = now;
            let after = p.after;
            self.pull(from, shard, fence, source, after);
        }
    }

    /// Asks `from` for its records after `(source, after)` (`ReplicaStore::chunk`).
    fn pull(
        &mut self,
        from: NodeId,
        shard: &ShardId,
        fence: FencingToken,
        source: FencingToken,
        after: u64,
    ) {
        let body = QueueBody::Pull {
            fence,
            source,
            after,
        };
        self.send(from, shard, body);
    }

    #[expect(
        clippy::too_many_arguments,
        reason = "what a finished recovery hands over, once"
    )]
    fn serve(
        &mut self,
        now: Instant,
        ctx: QueueContext<'_>,
        shard: &ShardId,
        fence: FencingToken,
        records: Vec<ItemRecord>,
        applied: u64,
        source: Option<NodeId>,
        floor: (u64, u64),
    ) {
        let items = records.len();
        let mut queue = WorkQueue::rebuild(fence, &self.config, records, applied);
        queue.raise_numbering(floor);
        // Its lapsed queue, if any, is merged into this one: served no more.
        self.lapsed.remove(shard);
        let mut monitor = BackpressureMonitor::new(
            self.config.high_watermark(),
            self.config.low_watermark(),
            self.config.cooldown(),
        );
        let _ = monitor.observe(now, queue.pending_count());
        let pending = u32::try_from(queue.pending_count()).unwrap_or(u32::MAX);
        let signal = monitor.signal(now, pending);
        self.owned.insert(
            shard.clone(),
            (
                fence,
                Owned::Serving(Box::new(Serving {
                    queue,
                    monitor,
                    links: BTreeMap::new(),
                    replaced: BTreeMap::new(),
                    waiting: Vec::new(),
                    grants: BTreeMap::new(),
                    grant_order: VecDeque::new(),
                })),
            ),
        );
        self.stats.recoveries += 1;
        self.metadata
            .push_back((owner_key(shard), Some(signal.encode(fence))));
        self.push_event(QueueEvent::Serving {
            shard: shard.clone(),
            fence,
            source,
            items,
        });
        self.refresh_links(now, ctx, shard);
        self.replicate(shard);
    }

    /// Serves again the queue kept when the lease lapsed under the same `fence` (see
    /// `lapsed`): its items, ids, versions, replica links and waiting answers as they were.
    /// Leases whose deadline passed meanwhile expire at the next tick; replicas that stopped
    /// acknowledging meanwhile are replaced as usual.
    fn resume(
        &mut self,
        now: Instant,
        ctx: QueueContext<'_>,
        shard: &ShardId,
        fence: FencingToken,
        serving: Box<Serving>,
    ) {
        let items = serving.queue.records().count();
        let pending = u32::try_from(serving.queue.pending_count()).unwrap_or(u32::MAX);
        let signal = serving.monitor.signal(now, pending);
        self.owned
            .insert(shard.clone(), (fence, Owned::Serving(serving)));
        self.metadata
            .push_back((owner_key(shard), Some(signal.encode(fence))));
        self.push_event(QueueEvent::Serving {
            shard: shard.clone(),
            fence,
            source: None,
            items,
        });
        self.refresh_links(now, ctx, shard);
        self.replicate(shard);
        self.answer_waiting(now, shard);
    }

    // ---- client --------------------------------------------------------------------------------

    fn request(
        &mut self,
        now: Instant,
        ctx: QueueContext<'_>,
        shard: ShardId,
        body: impl FnOnce(u64) -> QueueBody,
    ) -> Result<u64, QueueError> {
        if !self.shards.contains_key(&shard) {
            return Err(QueueError::UnknownShard);
        }
        if self.requests.len() >= MAX_REQUESTS_IN_FLIGHT {
            return Err(QueueError::Overloaded {
                max: MAX_REQUESTS_IN_FLIGHT,
            });
        }
        self.next_request += 1;
        let request = self.next_request;
        let body = body(request);
        // Unsent (no owner known yet): due at once, so each tick tries again (see
        // `handle_timeout`).
        let mut next_send = now;
        if let Some((owner, _, _)) = ctx.owner(&shard) {
            self.send(owner, &shard, body.clone());
            next_send = now + RESEND_INTERVAL;
        }
        self.requests.insert(
            request,
            Request {
                shard,
                body,
                deadline: now + self.config.request_timeout(),
                next_send,
            },
        );
        Ok(request)
    }

    fn answered(
        &mut self,
        request: u64,
        shard: &ShardId,
        event: impl FnOnce(ShardId) -> QueueEvent,
    ) {
        if self
            .requests
            .get(&request)
            .is_some_and(|r| &r.shard == shard)
        {
            self.requests.remove(&request);
            self.push_event(event(shard.clone()));
        }
    }

    fn on_refused(
        &mut self,
        now: Instant,
        shard: &ShardId,
        request: u64,
        code: u8,
        fence: FencingToken,
    ) {
        let Some(r) = self
            .requests
            .get_mut(&request)
            .filter(|r| &r.shard == shard)
        else {
            return;
        };
        let token = match &r.body {
            QueueBody::Heartbeat { token, .. }
            | QueueBody::Complete { token, .. }
            | QueueBody::Fail { token, .. } => Some(*token),
            _ => None,
        };
        let error = match code {
            1 => QueueError::StaleFence {
                presented: token.map_or(FencingToken::new(0), |t| t.fence),
                current: fence,
            },
            2 => {
                let t = token.unwrap_or(OwnershipToken {
                    item: ItemId::new(0),
                    attempt: 0,
                    lease: super::LeaseId::new(0),
                    fence,
                });
                QueueError::StaleLease {
                    item: t.item,
                    lease: t.lease,
                }
            }
            3 => QueueError::UnknownItem {
                item: token.map_or(ItemId::new(0), |t| t.item),
            },
            4 => QueueError::Full {
                max: self.config.max_items(),
            },
            5 => QueueError::PayloadTooLarge {
                len: 0,
                max: super::MAX_PAYLOAD_BYTES,
            },
            11 => QueueError::Overloaded {
                max: MAX_WAITING_ACKS,
            },
            // Not owner, recovering, or anything this build does not know: a routing race
            // that the next resend (to the owner known then) settles.
            _ => {
                r.next_send = r.next_send.min(now + RESEND_INTERVAL);
                return;
            }
        };
        self.requests.remove(&request);
        self.push_event(QueueEvent::Refused {
            shard: shard.clone(),
            request,
            error,
        });
    }

    // ---- plumbing ------------------------------------------------------------------------------

    fn send(&mut self, to: NodeId, shard: &ShardId, body: QueueBody) {
        if self.outbox.len() >= MAX_QUEUE_OUTBOX {
            self.stats.outbox_dropped += 1;
            return;
        }
        self.outbox.push_back((
            to,
            QueueMessage {
                shard: shard.clone(),
                body,
            },
        ));
    }

    fn push_event(&mut self, event: QueueEvent) {
        if self.events.len() >= MAX_QUEUE_EVENTS {
            self.events.pop_front();
            self.stats.events_dropped += 1;
        }
        self.events.push_back(event);
    }
}

/// What [`Queues::finish`] does with a token.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum FinishOp {
    /// Extend the lease.
    Heartbeat,
    /// The item is done.
    Complete,
    /// The item failed.
    Fail {
        /// Requeue it (if attempts remain) rather than dead-letter it.
        requeue: bool,
    },
}

/// The records changed after version `from`, each at its version, merged in order with the
/// `moved` items (sorted `(position, item)`) at their positions after `from`: what a batch
/// starting at `from` carries (see `Waiting`).
fn in_version_order<'a>(
    queue: &'a WorkQueue,
    from: u64,
    moved: &'a [(u64, ItemId)],
) -> impl Iterator<Item = (u64, &'a ItemRecord)> + 'a {
    let mut changed = queue.changed_since(from).map(|r| (r.version, r)).peekable();
    let start = moved.partition_point(|&(p, _)| p <= from);
    let mut moved = moved[start..]
        .iter()
        .filter_map(|&(p, item)| queue.record(item).map(|r| (p, r)))
        .peekable();
    core::iter::from_fn(move || match (changed.peek(), moved.peek()) {
        (Some(c), Some(m)) if m.0 < c.0 => moved.next(),
        (Some(_), _) => changed.next(),
        (None, _) => moved.next(),
    })
}

/// The version of `item`'s record in `queue` now (the queue's own version if it holds no
/// record of it: every change so far then).
fn record_version(queue: &WorkQueue, item: ItemId) -> u64 {
    queue.record(item).map_or(queue.version(), |r| r.version)
}

/// The private parts the protocol tests across nodes (`queue::tests::across_nodes`) reach only
/// through rare timings: a recovery's merge of copies, and an owner's memory of its grants.
#[cfg(test)]
mod tests {
    use super::*;
    use crate::queue::config::QueueConfig;

    fn record(q: &mut WorkQueue, request: u64) -> ItemRecord {
        let origin = Origin {
            node: NodeId::new(9),
            request,
        };
        let id = q.enqueue(origin, b"x").unwrap();
        q.record(id).unwrap().clone()
    }

    fn recovery() -> Recovery {
        Recovery::new(Instant::from_nanos(0), BTreeSet::new(), BTreeMap::new())
    }

    /// Each item ends at its newest `(source fence, version)`, whatever order the copies
    /// arrive in: a newer owner's record wins over an older owner's of a higher version, and
    /// within one owner the higher version wins.
    #[test]
    fn a_recovery_keeps_each_items_newest_record_in_any_order() {
        let (old, new) = (FencingToken::new(3), FencingToken::new(4));
        let mut q = WorkQueue::new(old, &QueueConfig::default());
        let first = record(&mut q, 1);
        // Versions 1 and 2 of the item under the old owner; a newer owner's version 1.
        let mut leased = first.clone();
        leased.version = 2;
        leased.attempts = 1;
        let mut newer = first.clone();
        newer.attempts = 2;
        let copies = [
            (old, first.clone()),
            (old, leased.clone()),
            (new, newer.clone()),
        ];
        for order in [[0, 1, 2], [2, 1, 0], [1, 2, 0], [0, 2, 1]] {
            let mut r = recovery();
            r.merge(order.iter().map(|&k| copies[k].clone()));
            assert_eq!(
                r.merged.get(&first.id),
                Some(&(new, newer.clone())),
                "{order:?}"
            );
        }
        let mut r = recovery();
        r.merge([(old, leased.clone()), (old, first.clone())]);
        assert_eq!(
            r.merged.get(&first.id),
            Some(&(old, leased)),
            "the higher version"
        );
    }

    fn serving() -> Serving {
        let config = QueueConfig::default();
        Serving {
            queue: WorkQueue::new(FencingToken::new(1), &config),
            monitor: BackpressureMonitor::new(None, 0, config.cooldown()),
            links: BTreeMap::new(),
            replaced: BTreeMap::new(),
            waiting: Vec::new(),
            grants: BTreeMap::new(),
            grant_order: VecDeque::new(),
        }
    }

    /// An owner answers a resent lease request from its memory of grants: bounded by
    /// [`MAX_REMEMBERED_GRANTS`] (the oldest forgotten first) and by age.
    #[test]
    fn remembered_grants_are_bounded_in_number_and_age() {
        let mut s = serving();
        let w = NodeId::new(4);
        let at = |ms: u64| Instant::from_nanos(ms * 1_000_000);
        for request in 0..MAX_REMEMBERED_GRANTS as u64 {
            s.remember_grant(at(request), w, request, Vec::new());
        }
        assert_eq!(s.grants.len(), MAX_REMEMBERED_GRANTS);
        assert!(s.grants.contains_key(&(w, 0)));
        // One more forgets the oldest, only it.
        let last = MAX_REMEMBERED_GRANTS as u64;
        s.remember_grant(at(last), w, last, Vec::new());
        assert_eq!(s.grants.len(), MAX_REMEMBERED_GRANTS);
        assert!(!s.grants.contains_key(&(w, 0)));
        assert!(s.grants.contains_key(&(w, 1)) && s.grants.contains_key(&(w, last)));
        // Those granted 1 s or more before now go; the younger stay.
        s.forget_grants(at(last), Duration::from_millis(1000));
        assert_eq!(s.grants.len(), 1000);
        assert!(!s.grants.contains_key(&(w, last - 1000)));
        assert!(s.grants.contains_key(&(w, last - 999)));
        assert_eq!(s.grant_order.len(), s.grants.len());
    }
}
