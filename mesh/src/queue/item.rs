//! Work items: their ids, the ownership token a worker presents, and the record the owner keeps
//! and replicates.

use alloc::vec::Vec;
use core::fmt;

use crate::id::NodeId;
use crate::lease::FencingToken;

/// The largest payload of one work item, in bytes: two items and a replication header fit one
/// datagram ([`MAX_DATAGRAM_BYTES`](crate::wire::MAX_DATAGRAM_BYTES)).
pub const MAX_PAYLOAD_BYTES: usize = 400;

/// A work item's sequence id within its shard's queue: assigned by the owner at enqueue,
/// strictly increasing, kept across failovers (a new owner continues after the highest it
/// recovered).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct ItemId(u64);

impl ItemId {
    /// Wraps a raw id.
    pub const fn new(raw: u64) -> Self {
        Self(raw)
    }
    /// The raw id.
    pub const fn get(self) -> u64 {
        self.0
    }
}

impl fmt::Display for ItemId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "item{}", self.0)
    }
}

/// One grant of an item to a worker, unique within the queue (and across failovers: a new
/// owner continues after the highest it recovered).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct LeaseId(u64);

impl LeaseId {
    /// Wraps a raw id.
    pub const fn new(raw: u64) -> Self {
        Self(raw)
    }
    /// The raw id.
    pub const fn get(self) -> u64 {
        self.0
    }
}

impl fmt::Display for LeaseId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "lease{}", self.0)
    }
}

/// What a worker holds while it processes an item, and presents to heartbeat, complete or fail
/// it: the item, which attempt, which grant, and the fencing token of the shard owner that
/// granted it. An owner accepts it only if the fence is its own and the item is still leased
/// under that grant, so a worker of a deposed owner (lower fence) or of an expired lease is
/// refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct OwnershipToken {
    /// The item.
    pub item: ItemId,
    /// The attempt this grant is (1 for the first lease).
    pub attempt: u32,
    /// The grant.
    pub lease: LeaseId,
    /// The fencing token of the shard lease its owner held when it granted this.
    pub fence: FencingToken,
}

impl fmt::Display for OwnershipToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}#{} {} {}",
            self.item, self.attempt, self.lease, self.fence
        )
    }
}

/// Where an item stands, as the owner replicates it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum ItemState {
    /// Waiting for a worker.
    Pending,
    /// Granted to `worker` under `lease`.
    Leased {
        /// The worker's node.
        worker: NodeId,
        /// The grant.
        lease: LeaseId,
    },
    /// Completed by a worker; kept as a tombstone so replicas and a new owner learn it.
    Completed,
    /// Failed or expired too many times (or failed without requeue): set aside.
    DeadLettered,
    /// Taken out of the queue by a drain (moved elsewhere by its operator).
    Drained,
}

impl ItemState {
    /// Whether the item is finished (completed, dead-lettered or drained): nothing changes it
    /// any more.
    pub fn is_finished(self) -> bool {
        matches!(self, Self::Completed | Self::DeadLettered | Self::Drained)
    }
}

/// What produced a record's current version: the replication event type.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
#[non_exhaustive]
pub enum EventKind {
    /// A producer's item entered the queue.
    Enqueue,
    /// A worker was granted the item.
    LeaseGranted,
    /// A worker's heartbeat. Heartbeats move only the owner's own deadline, which a new owner
    /// never uses (it requeues every leased item), so none is replicated; the kind exists for
    /// diagnostics that report what the owner did.
    Heartbeat,
    /// A worker completed the item.
    Completed,
    /// A worker failed it, or its lease expired: requeued or dead-lettered.
    Failed,
    /// A drain took it out.
    DrainSnapshot,
    /// A restore put it back.
    RestoreSnapshot,
}

impl EventKind {
    pub(crate) fn byte(self) -> u8 {
        match self {
            Self::Enqueue => 0,
            Self::LeaseGranted => 1,
            Self::Heartbeat => 2,
            Self::Completed => 3,
            Self::Failed => 4,
            Self::DrainSnapshot => 5,
            Self::RestoreSnapshot => 6,
        }
    }

    pub(crate) fn from_byte(b: u8) -> Option<Self> {
        Some(match b {
            0 => Self::Enqueue,
            1 => Self::LeaseGranted,
            2 => Self::Heartbeat,
            3 => Self::Completed,
            4 => Self::Failed,
            5 => Self::DrainSnapshot,
            6 => Self::RestoreSnapshot,
            _ => return None,
        })
    }

    /// Lower-case name, for logs and metric labels.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Enqueue => "enqueue",
            Self::LeaseGranted => "lease_granted",
            Self::Heartbeat => "heartbeat",
            Self::Completed => "completed",
            Self::Failed => "failed",
            Self::DrainSnapshot => "drain_snapshot",
            Self::RestoreSnapshot => "restore_snapshot",
        }
    }
}

/// Who enqueued an item and under which request: a retried enqueue finds the item it already
/// made (on this owner or, since the origin is replicated, on the next).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Origin {
    /// The producer's node.
    pub node: NodeId,
    /// The producer's request number.
    pub request: u64,
}

/// One item as the owner keeps it and replicates it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ItemRecord {
    /// The item.
    pub id: ItemId,
    /// The replication sequence number of its last change: strictly increasing over the queue's
    /// changes, across owners.
    pub version: u64,
    /// Leases granted so far.
    pub attempts: u32,
    /// Where it stands.
    pub state: ItemState,
    /// What made this version.
    pub change: EventKind,
    /// Who enqueued it.
    pub origin: Origin,
    /// The producer's bytes (at most [`MAX_PAYLOAD_BYTES`]).
    pub payload: Vec<u8>,
}
