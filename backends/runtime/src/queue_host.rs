//! Task queues on a real node: the host side of the core's queues ([`meshkit::queue`]).
//!
//! The core's [`Queues`](meshkit::queue::Queues), inside the driver's [`Node`], does the
//! protocol: owning the queues of the shards the node holds, replicating, recovering, answering
//! producers and workers. This module is what a tokio host adds around it:
//!
//! * **Commands with answers.** A producer's or worker's call through the
//!   [`NodeHandle`](crate::driver::NodeHandle) becomes a core request; its answer (an event
//!   naming the request) completes the caller's future. Every request is answered: the core
//!   times it out after [`QueueConfig::request_timeout`](meshkit::queue::QueueConfig) with
//!   [`QueueError::TimedOut`].
//! * **Durable checkpoints.** The replicas' checkpoint records go to [`QueueStore`] and are
//!   synced before the driver sends any datagram polled after them; at start they are read
//!   back, so a restarted node offers what it held.
//! * **Backpressure for subscribers.** Every shard's owner publishes its signal in gossip
//!   metadata; the host keeps the latest of each shard in a `tokio::sync::watch`, so producers
//!   anywhere in the mesh can wait on it ([`NodeHandle::subscribe_backpressure`]).
//! * **Counters** for the `mesh_queue_*` metrics, by namespace (never by shard: a node's series
//!   stay bounded by the configured namespaces however many shards there are).
//!
//! [`NodeHandle::subscribe_backpressure`]: crate::driver::NodeHandle::subscribe_backpressure

use std::collections::BTreeMap;
use std::future::Future;
use std::path::PathBuf;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::SystemTime;

use meshkit::lease::FencingToken;
use meshkit::node::Node;
use meshkit::queue::{
    BackpressureSignal, FailOutcome, HealthSummary, ItemId, Origin, OwnershipToken, PeerHealth,
    QueueConfig, QueueError, QueueEvent, QueueStats,
};
use meshkit::shard::{ShardConfig, ShardId};
use meshkit::{Duration, Instant, NodeId};
use thiserror::Error;
use tokio::sync::{oneshot, watch};
use tokio::task::JoinHandle;

use crate::histogram::DurationHistogram;

use crate::error::DriverStopped;
use crate::queue_store::{QueueStore, QueueStoreError};

/// `[queues]`: the task queues of every configured shard.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct QueuesConfig {
    /// The shards (`[shards]`): one queue each.
    pub shards: ShardConfig,
    /// The core's queue configuration (the same on every node).
    pub queue: QueueConfig,
    /// Where the replicas' checkpoints are kept (`None`: in memory only, and a restarted node
    /// has nothing to offer a new owner; only for tests and throwaway meshes).
    pub data_dir: Option<PathBuf>,
    /// When a replica acknowledges the batches it applied (`[queues] ack_after`).
    pub ack_after: AckAfter,
}

/// When a replica's acknowledgement of the batches it applied leaves (`[queues] ack_after`):
/// what an acknowledged enqueue rests on between the replica's `write()` of its checkpoint
/// records and their `fdatasync`. Either way the records are synced, as a group commit off the
/// driver's task, and a replica's offers and chunks to a new owner wait for that sync.
/// `docs/task-queues.md` ("Guarantees, and what they rest on") gives the argument.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum AckAfter {
    /// `"sync"` (the default): once the records are on the disk. An acknowledged item survives
    /// any crash of the replica's process or of its whole machine; the acknowledgement waits
    /// for the disk's `fdatasync` (p99 of about 4-5 ms on the benchmark's machine).
    #[default]
    Sync,
    /// `"write"`: once the records are written to the checkpoint file, in the operating
    /// system's page cache; the sync follows. An acknowledged item survives a kill of any
    /// process (the page cache outlives it, and a restarted replica reads its file back),
    /// and is lost only if every replica that acknowledged it loses it in a crash of its
    /// operating system (or power) before the sync ends, and the owner loses it too before a
    /// replica holds it again.
    Write,
}

impl AckAfter {
    /// The values `[queues] ack_after` takes, in the order of the variants.
    pub const NAMES: [&'static str; 2] = ["sync", "write"];

    /// The variant named `name` (one of [`NAMES`](Self::NAMES)).
    pub fn from_name(name: &str) -> Option<Self> {
        match name {
            "sync" => Some(Self::Sync),
            "write" => Some(Self::Write),
            _ => None,
        }
    }

    /// Its name in `[queues] ack_after`.
    pub fn name(self) -> &'static str {
        match self {
            Self::Sync => "sync",
            Self::Write => "write",
        }
    }
}

/// Why the queues did not start. Nothing runs.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum QueueStartError {
    /// The checkpoint files are unusable.
    #[error("key `queues.data_dir`: {0}")]
    Store(#[from] QueueStoreError),
    /// The node runs no lease client: it could never own a queue (caller misuse; a node
    /// configuration with `[queues]` needs `[leadership]` and `[shards]`).
    #[error("the queues need leadership and shards on this node")]
    NoLeadership,
}

/// Why a queue call on a [`NodeHandle`](crate::driver::NodeHandle) failed.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum QueueCallError {
    /// The node runs no queues (no `[queues]` section).
    #[error("this node runs no task queues (no [queues] section)")]
    Disabled,
    /// The queue refused, or no answer came in time (see [`QueueError`]: whether the item was
    /// touched, and what to do).
    #[error(transparent)]
    Queue(#[from] QueueError),
    /// The driver has stopped.
    #[error(transparent)]
    Stopped(#[from] DriverStopped),
}

/// An acknowledged enqueue: the owner and the configured replicas hold the item.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Enqueued {
    /// The shard.
    pub shard: ShardId,
    /// The item's id in the shard's queue.
    pub item: ItemId,
    /// The owner's fence.
    pub fence: FencingToken,
}

/// An item leased to this node's worker.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LeasedItem {
    /// The shard.
    pub shard: ShardId,
    /// The token to heartbeat, complete or fail it with.
    pub token: OwnershipToken,
    /// How long the lease lasts from the answer without a heartbeat.
    pub lease_for: Duration,
    /// The producer's bytes.
    pub payload: Vec<u8>,
}

/// What a heartbeat, completion or failure asks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Finish {
    /// Extend the lease.
    Heartbeat,
    /// Done.
    Complete,
    /// Failed: requeue it (if attempts remain) or dead-letter it.
    Fail {
        /// Whether to requeue.
        requeue: bool,
    },
}

/// One shard's backpressure as this node's gossip view shows it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ShardBackpressure {
    /// The owner publishing it.
    pub owner: NodeId,
    /// The owner's fence.
    pub fence: FencingToken,
    /// The signal (its `observed_at` is by the owner's process clock: compare only its own).
    pub signal: BackpressureSignal,
    /// When this node first saw this signal (wall clock).
    pub seen_at: SystemTime,
}

/// The latest backpressure of every shard whose owner is known, in shard order: what
/// [`NodeHandle::subscribe_backpressure`](crate::driver::NodeHandle::subscribe_backpressure)
/// watches.
pub type BackpressureView = BTreeMap<ShardId, ShardBackpressure>;

/// Upper bounds of the replication lag buckets: from a loopback acknowledgement to a replica
/// that took seconds.
pub const LAG_BOUNDS: [Duration; 12] = [
    Duration::from_micros(500),
    Duration::from_millis(1),
    Duration::from_millis(2),
    Duration::from_millis(5),
    Duration::from_millis(10),
    Duration::from_millis(25),
    Duration::from_millis(50),
    Duration::from_millis(100),
    Duration::from_millis(250),
    Duration::from_millis(500),
    Duration::from_secs(1),
    Duration::from_secs(5),
];

/// Replication lags in the buckets of [`LAG_BOUNDS`].
pub type LagHistogram = DurationHistogram<{ LAG_BOUNDS.len() + 1 }>;

/// One namespace's counters, as this node's queues counted them as owner. They only grow.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct NamespaceCounters {
    /// Enqueues acknowledged (held by the replicas).
    pub enqueued: u64,
    /// Completions accepted.
    pub completed: u64,
    /// Failures reported by workers.
    pub failed: u64,
    /// Items requeued: failed with requeue, lease expired, or worker gone.
    pub requeued: u64,
    /// Items dead-lettered.
    pub dead_lettered: u64,
    /// Requests refused for a stale ownership token.
    pub stale_refused: u64,
    /// Backpressure transitions to active.
    pub backpressure_activated: u64,
    /// Backpressure transitions to inactive.
    pub backpressure_deactivated: u64,
    /// From an enqueue's arrival to its acknowledgement.
    pub replication_lag: LagHistogram,
}

/// One queue this node serves, in [`QueueStatus`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServedQueue {
    /// The shard.
    pub shard: ShardId,
    /// This node's fence.
    pub fence: FencingToken,
    /// Still rebuilding from the replicas.
    pub recovering: bool,
    /// Items waiting for a worker.
    pub pending: usize,
    /// Items leased.
    pub active: usize,
    /// The replication sequence number of the last change.
    pub version: u64,
    /// Each replica with the version it acknowledged.
    pub replicas: Vec<(NodeId, u64)>,
    /// Whether producers should wait.
    pub backpressure_active: bool,
    /// The last transitions, oldest first (at most 16).
    pub history: Vec<BackpressureSignal>,
}

/// One replica copy this node holds, in [`QueueStatus`]: its checkpoint.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReplicaCheckpoint {
    /// The shard.
    pub shard: ShardId,
    /// The fence of the owner whose records it holds.
    pub source: FencingToken,
    /// The version it holds (the checkpoint's sequence number).
    pub applied: u64,
    /// The highest fence it promised to follow.
    pub promised: FencingToken,
    /// Items it holds, tombstones included.
    pub items: usize,
    /// Versions behind the owner, when this node sees the owner's queue (its own shard).
    pub lag_versions: Option<u64>,
}

/// The queues as one node sees them (in [`Snapshot`](crate::driver::Snapshot)).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct QueueStatus {
    /// The configuration.
    pub config: QueueConfig,
    /// Configured shards.
    pub configured: usize,
    /// The namespaces, in order (the metrics' label values).
    pub namespaces: Vec<String>,
    /// The queues this node serves (or rebuilds), in shard order.
    pub served: Vec<ServedQueue>,
    /// The replica copies it holds, in shard order.
    pub replicas: Vec<ReplicaCheckpoint>,
    /// The workers its queues track, with how long ago they were last heard from.
    pub health: Vec<(PeerHealth, Option<Duration>)>,
    /// Counts over them.
    pub health_summary: HealthSummary,
    /// The latest backpressure of every shard whose owner is known.
    pub backpressure: BackpressureView,
    /// Counters by namespace.
    pub counters: BTreeMap<String, NamespaceCounters>,
    /// The core's counters.
    pub stats: QueueStats,
    /// Requests of this node's producers and workers in flight.
    pub requests_in_flight: usize,
    /// Checkpoint records appended, syncs and compactions (with a `data_dir`).
    pub checkpoint_writes: u64,
    /// Checkpoint syncs.
    pub checkpoint_syncs: u64,
}

/// Items a drain took out, with who enqueued each: what a restore puts back.
type DrainedItems = Vec<(Origin, Vec<u8>)>;

/// A queue command from a [`NodeHandle`](crate::driver::NodeHandle).
#[derive(Debug)]
pub(crate) enum QueueCommand {
    Enqueue {
        shard: ShardId,
        payload: Vec<u8>,
        reply: oneshot::Sender<Result<Enqueued, QueueCallError>>,
    },
    Lease {
        shard: ShardId,
        reply: oneshot::Sender<Result<Option<LeasedItem>, QueueCallError>>,
    },
    LeaseUpTo {
        shard: ShardId,
        max: u16,
        reply: oneshot::Sender<Result<Vec<LeasedItem>, QueueCallError>>,
    },
    Finish {
        shard: ShardId,
        token: OwnershipToken,
        finish: Finish,
        reply: oneshot::Sender<Result<OwnershipToken, QueueCallError>>,
    },
    Drain {
        shard: ShardId,
        reply: oneshot::Sender<Result<DrainedItems, QueueCallError>>,
    },
    Restore {
        shard: ShardId,
        items: Vec<(Origin, Vec<u8>)>,
        reply: oneshot::Sender<Result<usize, QueueCallError>>,
    },
    Subscribe(oneshot::Sender<watch::Receiver<BackpressureView>>),
    Shards(oneshot::Sender<ShardConfig>),
}

impl QueueCommand {
    /// Answers the command with `error` (the node runs no queues).
    pub(crate) fn refuse(self, error: QueueCallError) {
        match self {
            Self::Enqueue { reply, .. } => drop(reply.send(Err(error))),
            Self::Lease { reply, .. } => drop(reply.send(Err(error))),
            Self::LeaseUpTo { reply, .. } => drop(reply.send(Err(error))),
            Self::Finish { reply, .. } => drop(reply.send(Err(error))),
            Self::Drain { reply, .. } => drop(reply.send(Err(error))),
            Self::Restore { reply, .. } => drop(reply.send(Err(error))),
            // The receiver learns it from the dropped sender.
            Self::Subscribe(_) | Self::Shards(_) => {}
        }
    }
}

#[derive(Debug)]
enum Waiter {
    Enqueue(oneshot::Sender<Result<Enqueued, QueueCallError>>),
    Lease(oneshot::Sender<Result<Option<LeasedItem>, QueueCallError>>),
    LeaseUpTo(oneshot::Sender<Result<Vec<LeasedItem>, QueueCallError>>),
    Finish(oneshot::Sender<Result<OwnershipToken, QueueCallError>>),
}

impl Waiter {
    fn refuse(self, error: QueueError) {
        let error = QueueCallError::Queue(error);
        match self {
            Self::Enqueue(reply) => drop(reply.send(Err(error))),
            Self::Lease(reply) => drop(reply.send(Err(error))),
            Self::LeaseUpTo(reply) => drop(reply.send(Err(error))),
            Self::Finish(reply) => drop(reply.send(Err(error))),
        }
    }
}

/// The checkpoint sync in flight: a blocking task making every append up to generation
/// `generation` durable.
#[derive(Debug)]
struct Syncing {
    generation: u64,
    task: JoinHandle<Result<(), QueueStoreError>>,
}

/// The queues as the driver hosts them.
#[derive(Debug)]
pub(crate) struct QueueHost {
    config: QueuesConfig,
    store: Option<QueueStore>,
    /// Generations of checkpoint appends: one more for every [`persist`](Self::persist) that
    /// appended anything.
    appended: u64,
    /// Every append up to this generation is durable.
    synced: u64,
    /// The group commit in flight, off the driver's task: the appends of every input since the
    /// last one started share it.
    syncing: Option<Syncing>,
    waiters: BTreeMap<u64, Waiter>,
    backpressure: watch::Sender<BackpressureView>,
    /// Gossip metadata or an owner changed since the backpressure view was last read.
    backpressure_stale: bool,
    counters: BTreeMap<String, NamespaceCounters>,
}

impl QueueHost {
    /// Gives `node` its queues as `config` says, with the replica copies its `data_dir` holds,
    /// and the host side of them.
    pub(crate) fn start(
        config: &QueuesConfig,
        node: Node,
        now: Instant,
    ) -> Result<(Self, Node), QueueStartError> {
        if node.lease_client().is_none() {
            return Err(QueueStartError::NoLeadership);
        }
        let (store, replicas) = match &config.data_dir {
            Some(dir) => {
                let (store, replicas) = QueueStore::open(dir, config.shards.shards())?;
                if !replicas.is_empty() {
                    tracing::info!(
                        dir = %dir.display(),
                        shards = replicas.len(),
                        "queue replicas restored from their checkpoints"
                    );
                }
                (Some(store), replicas)
            }
            None => (None, BTreeMap::new()),
        };
        let mut node = node.with_queues(now, &config.shards, config.queue.clone(), replicas);
        if store.is_some() {
            node.record_queue_durable_writes();
        }
        let counters = config
            .shards
            .namespaces()
            .map(|(ns, _)| (ns.to_owned(), NamespaceCounters::default()))
            .collect();
        let host = Self {
            config: config.clone(),
            store,
            appended: 0,
            synced: 0,
            syncing: None,
            waiters: BTreeMap::new(),
            backpressure: watch::Sender::new(BTreeMap::new()),
            backpressure_stale: true,
            counters,
        };
        Ok((host, node))
    }

    /// Runs one command.
    pub(crate) fn command(&mut self, now: Instant, node: &mut Node, command: QueueCommand) {
        let call = |r: Result<u64, QueueError>| r.map_err(QueueCallError::Queue);
        match command {
            QueueCommand::Enqueue {
                shard,
                payload,
                reply,
            } => match call(node.queue_enqueue(now, shard, &payload)) {
                Ok(request) => self.wait(request, Waiter::Enqueue(reply)),
                Err(e) => drop(reply.send(Err(e))),
            },
            QueueCommand::Lease { shard, reply } => match call(node.queue_lease(now, shard)) {
                Ok(request) => self.wait(request, Waiter::Lease(reply)),
                Err(e) => drop(reply.send(Err(e))),
            },
            QueueCommand::LeaseUpTo { shard, max, reply } => {
                match call(node.queue_lease_up_to(now, shard, max)) {
                    Ok(request) => self.wait(request, Waiter::LeaseUpTo(reply)),
                    Err(e) => drop(reply.send(Err(e))),
                }
            }
            QueueCommand::Finish {
                shard,
                token,
                finish,
                reply,
            } => {
                let sent = match finish {
                    Finish::Heartbeat => node.queue_heartbeat(now, shard, token),
                    Finish::Complete => node.queue_complete(now, shard, token),
                    Finish::Fail { requeue } => node.queue_fail(now, shard, token, requeue),
                };
                match call(sent) {
                    Ok(request) => self.wait(request, Waiter::Finish(reply)),
                    Err(e) => drop(reply.send(Err(e))),
                }
            }
            QueueCommand::Drain { shard, reply } => {
                let drained = node.queue_drain(now, &shard).map_err(QueueCallError::Queue);
                if let Ok(items) = &drained {
                    tracing::info!(%shard, items = items.len(), "queue drained");
                }
                let _ = reply.send(drained);
            }
            QueueCommand::Restore {
                shard,
                items,
                reply,
            } => {
                let restored = node
                    .queue_restore(now, &shard, &items)
                    .map_err(QueueCallError::Queue);
                if let Ok(n) = &restored {
                    tracing::info!(%shard, items = n, "queue restored");
                }
                let _ = reply.send(restored);
            }
            QueueCommand::Subscribe(reply) => {
                let _ = reply.send(self.backpressure.subscribe());
            }
            QueueCommand::Shards(reply) => {
                let _ = reply.send(self.config.shards.clone());
            }
        }
    }

    fn wait(&mut self, request: u64, waiter: Waiter) {
        // Request numbers never repeat within a boot, and the core answers each one.
        self.waiters.insert(request, waiter);
    }

    /// Appends what the replicas recorded and starts syncing it, off the driver's task, unless
    /// a sync is in flight (the next one, started when it ends, takes these appends too: a
    /// group commit). Call it before the node's transmits are polled, and send a transmit
    /// polled after it only once [`synced`](Self::synced) reaches the [`appended`](Self::appended)
    /// of its poll. An error means nothing polled after the writes may be sent: the driver
    /// stops.
    ///
    /// Why not sync here: a sync takes milliseconds on a disk (about 3 ms on the benchmark's
    /// machine), and the driver's task runs every input of the node meanwhile: membership
    /// probes, lease renewals and every queue request waited for the disk (issue 16's
    /// benchmark: acknowledgements of 38 ms at p99 with one in flight).
    pub(crate) fn persist(&mut self, node: &mut Node) -> Result<(), QueueStoreError> {
        let Some(store) = self.store.as_mut() else {
            return Ok(());
        };
        let mut wrote = false;
        while let Some(write) = node.poll_queue_durable() {
            store.write(&write)?;
            wrote = true;
        }
        if wrote {
            self.appended += 1;
        }
        self.start_sync()
    }

    /// When a replica's acknowledgement may leave.
    pub(crate) fn ack_after(&self) -> AckAfter {
        self.config.ack_after
    }

    /// The generation of the last checkpoint append.
    pub(crate) fn appended(&self) -> u64 {
        self.appended
    }

    /// Every checkpoint append up to this generation is durable.
    pub(crate) fn synced(&self) -> u64 {
        self.synced
    }

    fn start_sync(&mut self) -> Result<(), QueueStoreError> {
        if self.syncing.is_some() || self.synced == self.appended {
            return Ok(());
        }
        let generation = self.appended;
        let Some(store) = self.store.as_mut() else {
            self.synced = generation;
            return Ok(());
        };
        let Some(file) = store.start_sync()? else {
            // The log was created by its first record (a replacement, synced).
            self.synced = generation;
            return Ok(());
        };
        self.syncing = Some(Syncing {
            generation,
            task: tokio::task::spawn_blocking(move || file.run()),
        });
        Ok(())
    }

    /// Polls the sync in flight: `Ready(Ok(()))` once it ended (then [`synced`](Self::synced)
    /// moved on, the files that grew past their bound are compacted, and the next sync has
    /// started if appends wait for one); `Pending` while it runs or when none does.
    pub(crate) fn poll_sync(
        &mut self,
        cx: &mut Context<'_>,
        node: &Node,
    ) -> Poll<Result<(), QueueStoreError>> {
        let Some(syncing) = self.syncing.as_mut() else {
            return Poll::Pending;
        };
        match Pin::new(&mut syncing.task).poll(cx) {
            Poll::Ready(Ok(Ok(()))) => {}
            Poll::Ready(Ok(Err(error))) => return Poll::Ready(Err(error)),
            Poll::Ready(Err(error)) => return Poll::Ready(Err(QueueStoreError::SyncTask(error))),
            Poll::Pending => return Poll::Pending,
        }
        self.synced = syncing.generation;
        self.syncing = None;
        if let Some(store) = self.store.as_mut() {
            store.count_sync();
            let empty = BTreeMap::new();
            let replicas = node.queues().map_or(&empty, |q| q.replicas());
            if let Err(error) = store.compact_grown(replicas) {
                return Poll::Ready(Err(error));
            }
        }
        Poll::Ready(self.start_sync())
    }

    /// Gossip metadata changed somewhere: an owner's signal may have.
    pub(crate) fn on_metadata_changed(&mut self) {
        self.backpressure_stale = true;
    }

    /// One event of the node's queues: a waiting call's answer, or a counter.
    pub(crate) fn on_event(&mut self, now: Instant, event: QueueEvent) {
        match event {
            QueueEvent::Enqueued {
                shard,
                request,
                item,
                fence,
            } => {
                if let Some(Waiter::Enqueue(reply)) = self.waiters.remove(&request) {
                    let _ = reply.send(Ok(Enqueued { shard, item, fence }));
                }
            }
            QueueEvent::Leased {
                shard,
                request,
                token,
                deadline,
                payload,
            } => match self.waiters.remove(&request) {
                Some(Waiter::Lease(reply)) => {
                    let leased = LeasedItem {
                        shard,
                        token,
                        lease_for: deadline.saturating_duration_since(now),
                        payload,
                    };
                    let _ = reply.send(Ok(Some(leased)));
                }
                // A lease of one asked through `queue_lease_up_to`.
                Some(Waiter::LeaseUpTo(reply)) => {
                    let leased = LeasedItem {
                        shard,
                        token,
                        lease_for: deadline.saturating_duration_since(now),
                        payload,
                    };
                    let _ = reply.send(Ok(vec![leased]));
                }
                // Nobody waits (the caller went away): the lease expires and the item is
                // requeued, which is what a worker that vanished gets.
                _ => tracing::debug!(%shard, %token, "an item leased for a caller gone"),
            },
            QueueEvent::LeasedItems {
                shard,
                request,
                deadline,
                items,
            } => match self.waiters.remove(&request) {
                Some(Waiter::LeaseUpTo(reply)) => {
                    let lease_for = deadline.saturating_duration_since(now);
                    let leased = items
                        .into_iter()
                        .map(|(token, payload)| LeasedItem {
                            shard: shard.clone(),
                            token,
                            lease_for,
                            payload,
                        })
                        .collect();
                    let _ = reply.send(Ok(leased));
                }
                // As for one item: the leases expire and the items are requeued.
                _ => tracing::debug!(%shard, items = items.len(), "items leased for a caller gone"),
            },
            QueueEvent::Empty { request, .. } => match self.waiters.remove(&request) {
                Some(Waiter::Lease(reply)) => drop(reply.send(Ok(None))),
                Some(Waiter::LeaseUpTo(reply)) => drop(reply.send(Ok(Vec::new()))),
                _ => {}
            },
            QueueEvent::Accepted { request, token, .. } => {
                if let Some(Waiter::Finish(reply)) = self.waiters.remove(&request) {
                    let _ = reply.send(Ok(token));
                }
            }
            QueueEvent::Refused { request, error, .. } => {
                if let Some(waiter) = self.waiters.remove(&request) {
                    waiter.refuse(error);
                }
            }
            QueueEvent::Acknowledged { shard, lag, .. } => {
                let c = self.counters_mut(&shard);
                c.enqueued += 1;
                c.replication_lag.record(&LAG_BOUNDS, lag);
            }
            QueueEvent::Completed { shard, .. } => self.counters_mut(&shard).completed += 1,
            QueueEvent::Failed { shard, outcome, .. } => {
                let c = self.counters_mut(&shard);
                c.failed += 1;
                count_outcome(c, outcome);
            }
            QueueEvent::Released { shard, outcome, .. } => {
                count_outcome(self.counters_mut(&shard), outcome);
            }
            QueueEvent::StaleRefused { shard, .. } => {
                self.counters_mut(&shard).stale_refused += 1;
            }
            QueueEvent::Backpressure { shard, signal, .. } => {
                let c = self.counters_mut(&shard);
                if signal.is_active {
                    c.backpressure_activated += 1;
                } else {
                    c.backpressure_deactivated += 1;
                }
                tracing::info!(
                    %shard,
                    active = signal.is_active,
                    pending = signal.pending_count,
                    "queue backpressure changed"
                );
                self.backpressure_stale = true;
            }
            QueueEvent::Recovering { shard, fence } => {
                tracing::info!(%shard, %fence, "queue taken over: rebuilding from the replicas");
            }
            QueueEvent::Serving {
                shard,
                fence,
                source,
                items,
            } => {
                tracing::info!(%shard, %fence, source = ?source.map(NodeId::get), items, "queue served");
                self.backpressure_stale = true;
            }
            QueueEvent::Stopped { shard, fence } => {
                tracing::info!(%shard, %fence, "queue no longer served here (lease lost)");
                self.backpressure_stale = true;
            }
            QueueEvent::WorkerDisconnected { node } => {
                tracing::warn!(
                    worker = node.get(),
                    "a worker's node went dead or left: its items are requeued after the grace"
                );
            }
            QueueEvent::Published { .. } => self.backpressure_stale = true,
            _ => {}
        }
    }

    fn counters_mut(&mut self, shard: &ShardId) -> &mut NamespaceCounters {
        self.counters
            .entry(shard.namespace().to_owned())
            .or_default()
    }

    /// Re-reads every shard's backpressure from the node's gossip view if something changed,
    /// and tells the subscribers if it did.
    pub(crate) fn refresh_backpressure(&mut self, node: &Node) {
        if !std::mem::take(&mut self.backpressure_stale) {
            return;
        }
        let Some(queues) = node.queues() else {
            return;
        };
        let ctx = node.queue_context();
        let wall = SystemTime::now();
        self.backpressure.send_if_modified(|view| {
            let mut next = BTreeMap::new();
            for shard in self.config.shards.shards() {
                if let Some((owner, fence, signal)) = queues.backpressure(ctx, &shard) {
                    // The first time this signal was seen, kept while it stays the same.
                    let seen_at = view
                        .get(&shard)
                        .filter(|old| {
                            old.owner == owner && old.fence == fence && old.signal == signal
                        })
                        .map_or(wall, |old| old.seen_at);
                    next.insert(
                        shard,
                        ShardBackpressure {
                            owner,
                            fence,
                            signal,
                            seen_at,
                        },
                    );
                }
            }
            let changed = *view != next;
            *view = next;
            changed
        });
    }

    /// The queues' state at `now`.
    pub(crate) fn status(&self, now: Instant, node: &Node) -> Option<QueueStatus> {
        let queues = node.queues()?;
        let served: Vec<ServedQueue> = queues
            .owned()
            .map(|(shard, fence)| {
                let queue = queues.serving(shard);
                let monitor = queues.monitor(shard);
                ServedQueue {
                    shard: shard.clone(),
                    fence,
                    recovering: queues.is_recovering(shard),
                    pending: queue.map_or(0, |q| q.pending_count()),
                    active: queue.map_or(0, |q| q.active_count()),
                    version: queue.map_or(0, |q| q.version()),
                    replicas: queues.replica_links(shard),
                    backpressure_active: monitor.is_some_and(|m| m.is_active()),
                    history: monitor
                        .map(|m| m.history().copied().collect())
                        .unwrap_or_default(),
                }
            })
            .collect();
        let replicas = queues
            .replicas()
            .iter()
            .map(|(shard, r)| ReplicaCheckpoint {
                shard: shard.clone(),
                source: r.source(),
                applied: r.applied(),
                promised: r.promised(),
                items: r.records().count(),
                lag_versions: queues
                    .serving(shard)
                    .map(|q| q.version().saturating_sub(r.applied())),
            })
            .collect();
        let health = queues
            .health()
            .snapshot(now)
            .into_iter()
            .map(|p| {
                let ago = p.last_heartbeat.map(|h| now.saturating_duration_since(h));
                (p, ago)
            })
            .collect();
        let (checkpoint_writes, checkpoint_syncs, _) =
            self.store.as_ref().map_or((0, 0, 0), QueueStore::counters);
        Some(QueueStatus {
            config: self.config.queue.clone(),
            configured: self.config.shards.shard_count(),
            namespaces: self
                .config
                .shards
                .namespaces()
                .map(|(ns, _)| ns.to_owned())
                .collect(),
            served,
            replicas,
            health,
            health_summary: queues.health().summary(now),
            backpressure: self.backpressure.borrow().clone(),
            counters: self.counters.clone(),
            stats: queues.stats(),
            requests_in_flight: queues.requests_in_flight(),
            checkpoint_writes,
            checkpoint_syncs,
        })
    }
}

fn count_outcome(c: &mut NamespaceCounters, outcome: FailOutcome) {
    match outcome {
        FailOutcome::Requeued => c.requeued += 1,
        FailOutcome::DeadLettered => c.dead_lettered += 1,
        // A new outcome is counted by neither until it is named here.
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lag_buckets_count_each_lag_once() {
        let mut h = LagHistogram::default();
        h.record(&LAG_BOUNDS, Duration::from_micros(400));
        h.record(&LAG_BOUNDS, Duration::from_millis(3));
        h.record(&LAG_BOUNDS, Duration::from_secs(9));
        assert_eq!(h.buckets[0], 1);
        assert_eq!(h.buckets[3], 1, "3 ms is in the 5 ms bucket");
        assert_eq!(h.buckets[LAG_BOUNDS.len()], 1, "above every bound");
        assert_eq!(h.count, 3);
    }
}
