//! Task queues on the mesh (docs/design.md §2 "Task queue signals"; `docs/task-queues.md`):
//! leased work per shard, fenced by the shard's lease, replicated before it is acknowledged,
//! with backpressure and peer lease health. Sans-IO: no clock (every time is passed in), no
//! randomness, every collection a `BTreeMap`/`BTreeSet`.
//!
//! # The model
//!
//! * **One queue per shard, held by the shard's owner.** The holder of the lease on
//!   `shard/{ns}/{id}` ([`crate::shard`]) serves that shard's queue under the lease's fencing
//!   token; it stops serving the moment its lease client no longer holds the lease. It keeps
//!   that queue: back under the same token (a local lapse the lease table did not see: no
//!   other owner served meanwhile) it serves it again; under a new token it rebuilds with it as
//!   its own copy and numbers above every id it gave (issue 16). It
//!   publishes its fence and [`BackpressureSignal`] in its gossip metadata (key
//!   [`owner_key`]), which is how producers and workers anywhere in the mesh find it and see
//!   its backpressure.
//! * **Work items** ([`ItemRecord`]) are enqueued by producers, leased by workers with an
//!   [`OwnershipToken`] `(item, attempt, lease, fence)`, kept alive by heartbeats before the
//!   lease deadline ([`QueueConfig::lease_timeout`]), and completed or failed (requeue or
//!   not). An expired or failed lease requeues the item with its attempt count; after
//!   [`QueueConfig::max_attempts`] leases it is dead-lettered. [`WorkQueue`] is that state
//!   machine alone.
//! * **Replication.** Every change gives the changed item the next version (the replication
//!   sequence number, [`EventKind`] naming the change). The owner sends each of its replicas
//!   (the [`QueueConfig::replicas`] first queue members up after it, in id order) the records
//!   changed since what that replica acknowledged, in datagram-sized batches with
//!   `queue.pending`/`queue.active`; a replica ([`ReplicaStore`]) applies a batch that starts
//!   at or before its checkpoint, skips what it already holds, writes a checkpoint record the
//!   host makes durable ([`QueueDurableWrite`]) and acknowledges the version it holds. A
//!   newer owner's copy starts from version 0; the records of earlier owners stay until it
//!   replaces them.
//! * **Acknowledgement.** An enqueue, a completion and a failure are answered only once the
//!   configured number of replicas acknowledged the version of that change; every batch whose
//!   range holds that version carries the item, even if its record moved on since. A
//!   heartbeat and a lease grant are answered at once (a new owner requeues every leased item
//!   anyway).
//! * **Failover.** A node granted a shard's lease under a higher fence asks every queue member
//!   up to *promise* that fence (a replica then refuses batches of any lower fence, so the
//!   deposed owner can no longer have anything acknowledged) and to offer what it holds;
//!   once all answered (or [`QueueConfig::recovery_wait`] passed, and no silent member that
//!   runs queues is alive by its membership: those are waited for up to ten waits) it pulls
//!   every copy offered and merges them, each item at its newest `(source fence, version)`,
//!   requeues what was leased, and serves under its own fence: every token of the old owner
//!   is refused with [`QueueError::StaleFence`].
//! * **Backpressure** ([`BackpressureMonitor`]): inactive unless a high watermark is set;
//!   active at `pending >= high`, inactive at `pending <= low` (`high / 2` by default); two
//!   transitions no closer than the cooldown; the last [`MAX_SIGNAL_HISTORY`] signals kept.
//! * **Peer lease health** ([`LeaseHealth`]): workers heard from by their requests and
//!   heartbeats, and from membership: a worker's node Dead or Left raises an alert, and after
//!   [`QueueConfig::health_grace`] (30 s by default) its items are requeued.
//!
//! # Guarantees, and what they rest on
//!
//! * **No acknowledged item is lost** while, at each failover, at least one replica that held
//!   it when it was acknowledged is up and answers the new owner within its recovery wait.
//!   This rests on the shard lease (one owner at a time, fences strictly increasing: Raft's
//!   log index), on replicas persisting their checkpoint before acknowledging, and on the
//!   promise: once a replica promised a fence, the older owner cannot complete an
//!   acknowledgement through it. The owner and all its replicas lost together lose data: ask
//!   for more replicas.
//! * **No item is completed twice, and no stale token is accepted**: a completion is accepted
//!   only by the owner serving under the token's fence with the item leased under the token's
//!   grant, and answered only once replicated, so a new owner never sees the item leased
//!   again unless its completion was never answered.
//! * **Processing is at least once**: a worker whose owner was deposed, or whose lease
//!   expired, has its completion refused and the item runs again elsewhere.
//! * Producers' retries are idempotent: an enqueue carries `(node, request)`, replicated with
//!   the item, and a retried enqueue finds the item it made, on this owner or the next.
//!
//! The simulator checks each of these on every run (`meshkit-sim`, `[queue]` scenarios).
//!
//! # Wire and limits
//!
//! Messages travel on their own node channel ([`Channel::Queue`](crate::node::Channel::Queue))
//! in the format of [`QueueMessage`]; every message fits a datagram and every decoder returns
//! an error, never panics, on any bytes. Payloads are at most [`MAX_PAYLOAD_BYTES`]; a queue
//! holds at most [`QueueConfig::max_items`] items, tombstones of finished ones included.
//!
//! # Example
//!
//! An owner under fence 5 takes an item, leases it and replicates; its successor under fence 9
//! rebuilds from the replica, and the old worker's completion is refused.
//!
//! ```
//! use meshkit::NodeId;
//! use meshkit::Instant;
//! use meshkit::lease::FencingToken;
//! use meshkit::queue::{Batch, Origin, QueueConfig, QueueError, ReplicaStore, WorkQueue};
//!
//! let config = QueueConfig::default();
//! let (producer, worker) = (NodeId::new(3), NodeId::new(4));
//! let now = Instant::ZERO;
//! let mut owner = WorkQueue::new(FencingToken::new(5), &config);
//! let item = owner.enqueue(Origin { node: producer, request: 1 }, b"resize img-1")?;
//! let (token, _deadline) = owner.lease(now, worker).expect("one item is pending");
//! assert_eq!(token.item, item);
//!
//! // The replica applies everything changed since version 0.
//! let mut replica = ReplicaStore::new();
//! replica.apply(&Batch {
//!     fence: owner.fence(),
//!     from: 0,
//!     to: owner.version(),
//!     done: true,
//!     pending: 0,
//!     active: 1,
//!     records: owner.changed_since(0).cloned().collect(),
//! });
//!
//! // The owner dies; the next one promises fence 9 and rebuilds from the replica.
//! let (_source, applied) = replica.promise(FencingToken::new(9));
//! let mut next = WorkQueue::rebuild(
//!     FencingToken::new(9),
//!     &config,
//!     replica.records().cloned(),
//!     applied,
//! );
//! assert_eq!(next.pending_count(), 1, "the leased item is requeued");
//! assert!(matches!(next.complete(&token), Err(QueueError::StaleFence { .. })));
//! let (again, _) = next.lease(now, worker).expect("requeued");
//! assert_eq!((again.item, again.attempt), (item, 2));
//! next.complete(&again)?;
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

mod backpressure;
mod config;
mod error;
mod health;
mod item;
mod queues;
mod replica;
mod store;
mod wire;

pub use self::backpressure::{
    BackpressureMonitor, BackpressureSignal, MAX_SIGNAL_HISTORY, SIGNAL_BYTES,
};
pub use self::config::{
    DEFAULT_BACKPRESSURE_COOLDOWN, DEFAULT_HEALTH_GRACE, DEFAULT_LEASE_TIMEOUT,
    DEFAULT_MAX_ATTEMPTS, DEFAULT_MAX_ITEMS, DEFAULT_RECOVERY_WAIT, DEFAULT_REPLICAS,
    DEFAULT_REQUEST_TIMEOUT, MAX_REPLICAS, QueueConfig, RawQueueConfig,
};
pub use self::error::{CheckpointError, QueueConfigError, QueueError};
pub use self::health::{HealthSummary, LeaseHealth, PeerHealth};
pub use self::item::{
    EventKind, ItemId, ItemRecord, ItemState, LeaseId, MAX_PAYLOAD_BYTES, Origin, OwnershipToken,
};
pub use self::queues::{
    FinishOp, MAX_QUEUE_OUTBOX, MAX_REMEMBERED_GRANTS, MAX_REQUESTS_IN_FLIGHT, MAX_WAITING_ACKS,
    PARTICIPANT_KEY, QueueContext, QueueDurableWrite, QueueEvent, QueueStats, Queues,
    REPLICATION_WINDOW_VERSIONS, RESEND_INTERVAL, TICK_INTERVAL, owner_key,
};
pub use self::replica::{Applied, ReplicaStore};
pub use self::store::{FailOutcome, WorkQueue};
pub use self::wire::{
    BATCH_RECORDS_BYTES, Batch, LEASED_ITEMS_BYTES, MAX_BATCH_RECORDS, MAX_LEASE_ITEMS,
    MAX_QUEUE_MESSAGE_BYTES, MAX_RECORD_BYTES, MIN_LEASED_ITEM_BYTES, MIN_RECORD_BYTES, QueueBody,
    QueueMessage,
};

#[cfg(test)]
mod tests;
