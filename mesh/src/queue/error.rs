//! The queue's errors: what an operation on a work item can fail with, and why a configuration
//! was refused.

use thiserror::Error;

use super::item::{ItemId, LeaseId};
use crate::config::ConfigError;
use crate::id::NodeId;
use crate::lease::FencingToken;

/// Why a queue operation was refused. Unless a variant says otherwise, nothing changed: the
/// queue, the item and its lease are as they were.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum QueueError {
    /// The token names an older owner of the shard (a lower fencing token): the worker's
    /// owner was deposed, and the new owner requeued what it had leased. The caller's fault
    /// only in the sense that its lease is gone: stop working on the item.
    #[error("token of {presented} is stale: the shard's owner now holds {current}")]
    StaleFence {
        /// The fence the token carried.
        presented: FencingToken,
        /// The owner's fence.
        current: FencingToken,
    },
    /// The item is no longer leased under this grant: its lease expired, it failed, or it was
    /// requeued when its worker's node went away; another worker may hold it now.
    #[error("{item} is no longer leased under {lease}")]
    StaleLease {
        /// The item.
        item: ItemId,
        /// The grant the token named.
        lease: LeaseId,
    },
    /// The queue has no such item (never enqueued, or the token is forged).
    #[error("no {item} in this queue")]
    UnknownItem {
        /// The item.
        item: ItemId,
    },
    /// The queue holds its maximum of items (caller should wait: backpressure). Nothing was
    /// enqueued.
    #[error("the queue holds its maximum of {max} items")]
    Full {
        /// The bound.
        max: usize,
    },
    /// A payload above [`MAX_PAYLOAD_BYTES`](super::MAX_PAYLOAD_BYTES) (caller misuse; nothing
    /// was sent).
    #[error("payload of {len} bytes exceeds the {max}-byte bound")]
    PayloadTooLarge {
        /// Its length.
        len: usize,
        /// The bound.
        max: usize,
    },
    /// This node does not own the shard's queue (a routing race: ask the owner its metadata
    /// names; `owner` is the one this node knows of, if any).
    #[error("this node does not own the queue{}", owner.map_or(String::new(), |o| format!(" (owner: {o})")))]
    NotOwner {
        /// The owner as known here.
        owner: Option<NodeId>,
    },
    /// The owner took the shard over and is still rebuilding the queue from its replicas;
    /// retry shortly.
    #[error("the owner is rebuilding the queue from its replicas")]
    Recovering,
    /// No node is known to own the shard's queue (no metadata names one yet): nothing was
    /// sent; retry shortly.
    #[error("no owner is known for this shard's queue")]
    NoOwner,
    /// The shard is not one the queues were configured with (caller misuse).
    #[error("this shard has no queue")]
    UnknownShard,
    /// This node runs no queue component (caller misuse: build it with
    /// [`Node::with_queues`](crate::node::Node::with_queues)).
    #[error("this node runs no queues")]
    NoQueues,
    /// Too many requests are in flight on this node; nothing was sent.
    #[error("too many queue requests in flight: at most {max}")]
    Overloaded {
        /// The bound.
        max: usize,
    },
    /// A request's number out of its range (caller misuse: a lease of `max` items outside
    /// 1..=[`MAX_LEASE_ITEMS`](super::MAX_LEASE_ITEMS)); nothing was sent.
    #[error("{field} = {value} is out of range {min}..={max}")]
    OutOfRange {
        /// The field, as the API names it (`max`).
        field: &'static str,
        /// The value given.
        value: u64,
        /// The lowest allowed.
        min: u64,
        /// The highest allowed.
        max: u64,
    },
    /// No answer came within the request timeout; the outcome is unknown (an enqueue may have
    /// been made and not acknowledged, a completion may or may not have been accepted).
    #[error("no answer within the request timeout")]
    TimedOut,
}

impl QueueError {
    /// The byte that carries the error on the wire.
    pub(crate) fn code(&self) -> u8 {
        match self {
            Self::StaleFence { .. } => 1,
            Self::StaleLease { .. } => 2,
            Self::UnknownItem { .. } => 3,
            Self::Full { .. } => 4,
            Self::PayloadTooLarge { .. } => 5,
            Self::NotOwner { .. } => 6,
            Self::Recovering => 7,
            Self::NoOwner => 8,
            Self::UnknownShard => 9,
            Self::NoQueues => 10,
            Self::Overloaded { .. } => 11,
            Self::TimedOut => 12,
            Self::OutOfRange { .. } => 13,
        }
    }

    /// Whether a worker must give the item up: its token will never be accepted again.
    pub fn is_stale(&self) -> bool {
        matches!(self, Self::StaleFence { .. } | Self::StaleLease { .. })
    }

    /// A short name, for metric labels.
    pub fn label(&self) -> &'static str {
        match self {
            Self::StaleFence { .. } => "stale_fence",
            Self::StaleLease { .. } => "stale_lease",
            Self::UnknownItem { .. } => "unknown_item",
            Self::Full { .. } => "full",
            Self::PayloadTooLarge { .. } => "payload_too_large",
            Self::NotOwner { .. } => "not_owner",
            Self::Recovering => "recovering",
            Self::NoOwner => "no_owner",
            Self::UnknownShard => "unknown_shard",
            Self::NoQueues => "no_queues",
            Self::Overloaded { .. } => "overloaded",
            Self::TimedOut => "timed_out",
            Self::OutOfRange { .. } => "out_of_range",
        }
    }
}

/// Why a [`RawQueueConfig`](super::RawQueueConfig) was refused; the message names the key. An
/// operator fault.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum QueueConfigError {
    /// A number or duration out of range.
    #[error("queue.{0}")]
    Range(#[from] ConfigError),
    /// A low watermark at or above the high one.
    #[error("queue.low_watermark = {low} must be below high_watermark = {high}")]
    Watermarks {
        /// The low watermark.
        low: u32,
        /// The high watermark.
        high: u32,
    },
    /// A low watermark without a high one.
    #[error("queue.low_watermark needs a high_watermark")]
    LowWithoutHigh,
}

/// Why a replica's durable checkpoint could not be read back. Corruption on the host's disk (or
/// a bug), never peer input; nothing was built.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum CheckpointError {
    /// Record number `record` (from 0) does not decode.
    #[error("queue checkpoint record {record}: {source}")]
    Record {
        /// Its position.
        record: usize,
        /// What is wrong with it.
        source: crate::wire::DecodeError,
    },
}
