//! The queue channel's messages ([`Channel::Queue`](crate::node::Channel::Queue)): producers'
//! and workers' requests to a shard's owner and its answers, the owner's replication to its
//! replicas and their acknowledgements, and a new owner's recovery from them.
//!
//! Every message starts with its kind (one byte) and the shard (namespace length, namespace,
//! id), then the kind's fields, big-endian, then nothing: trailing bytes are an error. Every
//! message fits [`MAX_QUEUE_MESSAGE_BYTES`]; a replication batch carries as many records as
//! fit. Decoding any bytes returns a [`DecodeError`] or a message, never panics.

use alloc::vec::Vec;

use super::item::{
    EventKind, ItemId, ItemRecord, ItemState, LeaseId, MAX_PAYLOAD_BYTES, Origin, OwnershipToken,
};
use crate::id::NodeId;
use crate::lease::FencingToken;
use crate::shard::{MAX_NAMESPACE_CHARS, ShardId};
use crate::time::Duration;
use crate::wire::DecodeError;
use crate::wire::codec::{Reader, Writer};

/// The largest queue message, channel byte excluded.
pub const MAX_QUEUE_MESSAGE_BYTES: usize = crate::wire::MAX_DATAGRAM_BYTES - 1;
/// The encoded size of an item record with an empty payload: a record's size is this plus its
/// payload's length.
pub const MIN_RECORD_BYTES: usize = 8 + 8 + 4 + 1 + 8 + 8 + 1 + 8 + 8 + 2;
/// The largest encoded item record.
pub const MAX_RECORD_BYTES: usize = MIN_RECORD_BYTES + MAX_PAYLOAD_BYTES;
/// The fixed part of a batch's header (kind, namespace length, id, fence, from, to, done,
/// pending, active, count): the namespace's bytes come on top.
const BATCH_HEADER_FIXED_BYTES: usize = 1 + 1 + 4 + 8 + 8 + 8 + 1 + 4 + 4 + 1;
/// The largest header of a batch: the fixed part and the longest namespace.
const BATCH_HEADER_BYTES: usize = BATCH_HEADER_FIXED_BYTES + MAX_NAMESPACE_CHARS;
/// Bytes the records of one batch may take, whatever its shard: senders fill batches by size
/// up to this, so a batch of small items carries many (about 16 items of 8
/// bytes) where a bound by the largest record would carry two.
pub const BATCH_RECORDS_BYTES: usize = MAX_QUEUE_MESSAGE_BYTES - BATCH_HEADER_BYTES;
/// Records one batch carries at most: as many records with empty payloads as fit a datagram
/// (what a decoder accepts; a sender is bound by [`BATCH_RECORDS_BYTES`] first).
pub const MAX_BATCH_RECORDS: usize =
    (MAX_QUEUE_MESSAGE_BYTES - BATCH_HEADER_FIXED_BYTES) / MIN_RECORD_BYTES;
const _: () = assert!(
    BATCH_RECORDS_BYTES / MAX_RECORD_BYTES >= 2,
    "a batch carries at least two records whatever their payloads"
);
const _: () = assert!(
    MAX_BATCH_RECORDS <= u8::MAX as usize,
    "a batch's record count is one byte"
);
const _: () = assert!(
    1 + 1 + MAX_NAMESPACE_CHARS + 4 + 8 + 8 + 4 + 8 + 8 + 8 + 2 + MAX_PAYLOAD_BYTES
        <= MAX_QUEUE_MESSAGE_BYTES,
    "a leased item fits a datagram"
);

/// Items one lease request may ask for at most ([`QueueBody::LeaseUpTo`]); an answer carries
/// as many of them as fit one datagram ([`LEASED_ITEMS_BYTES`]).
pub const MAX_LEASE_ITEMS: u16 = 256;
/// The fixed part of a [`QueueBody::LeasedItems`] answer (kind, namespace length, id, request,
/// timeout, count): the namespace's bytes come on top.
const LEASED_ITEMS_HEADER_FIXED_BYTES: usize = 1 + 1 + 4 + 8 + 8 + 2;
/// Bytes the items of one [`QueueBody::LeasedItems`] answer may take, whatever its shard: an
/// owner leases items while the next one fits (about 30 of 8 bytes, at least 2 of the largest).
pub const LEASED_ITEMS_BYTES: usize =
    MAX_QUEUE_MESSAGE_BYTES - LEASED_ITEMS_HEADER_FIXED_BYTES - MAX_NAMESPACE_CHARS;
/// The encoded size of one leased item with an empty payload (token, payload length).
pub const MIN_LEASED_ITEM_BYTES: usize = 8 + 4 + 8 + 8 + 2;
const _: () = assert!(
    LEASED_ITEMS_BYTES / (MIN_LEASED_ITEM_BYTES + MAX_PAYLOAD_BYTES) >= 2,
    "a lease of several items carries at least two whatever their payloads"
);

/// The encoded size of a leased item carrying `payload_len` bytes, in a
/// [`QueueBody::LeasedItems`] answer.
pub(crate) fn leased_item_bytes(payload_len: usize) -> usize {
    MIN_LEASED_ITEM_BYTES + payload_len
}

/// The encoded size of `record`.
pub(crate) fn record_bytes(record: &ItemRecord) -> usize {
    MIN_RECORD_BYTES + record.payload.len()
}

/// The longest run of `records` (each at its position in version order: its version, or an
/// earlier version it must be sent at, see `Queues::send_batches`) that fits one batch of any
/// shard, without a record twice; whether any record was left out; the position of the last
/// record taken (`None` if none). At least one record is taken when there is one.
pub(crate) fn fill_batch_at<'a>(
    records: impl IntoIterator<Item = (u64, &'a ItemRecord)>,
) -> (Vec<ItemRecord>, bool, Option<u64>) {
    let mut out: Vec<ItemRecord> = Vec::new();
    let mut room = BATCH_RECORDS_BYTES;
    let mut last = None;
    for (position, record) in records {
        if out.iter().any(|r| r.id == record.id) {
            last = Some(position);
            continue;
        }
        let size = record_bytes(record);
        if size > room || out.len() == MAX_BATCH_RECORDS {
            return (out, true, last);
        }
        room -= size;
        out.push(record.clone());
        last = Some(position);
    }
    (out, false, last)
}

/// The longest run of `records` (in version order, each item once) that fits one batch of any
/// shard, and whether any record was left out. At least one record is taken when there is one.
pub(crate) fn fill_batch<'a>(
    records: impl IntoIterator<Item = &'a ItemRecord>,
) -> (Vec<ItemRecord>, bool) {
    let (out, more, _) = fill_batch_at(records.into_iter().map(|r| (r.version, r)));
    (out, more)
}

/// A replication batch (owner to replica) or a snapshot chunk (replica to new owner): the
/// records changed in `(from, to]`, in version order, under the owner's `fence`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Batch {
    /// The fence of the owner whose queue this is.
    pub fence: FencingToken,
    /// The version the receiver already holds (0: everything from scratch).
    pub from: u64,
    /// The version the receiver holds after applying it.
    pub to: u64,
    /// No more records follow (a snapshot's last chunk; always true for replication).
    pub done: bool,
    /// `queue.pending` at the owner when sent.
    pub pending: u32,
    /// `queue.active` at the owner when sent.
    pub active: u32,
    /// The records, in version order.
    pub records: Vec<ItemRecord>,
}

/// What a queue message says.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum QueueBody {
    /// Producer to owner: add an item.
    Enqueue {
        /// The producer's request.
        request: u64,
        /// The item's bytes.
        payload: Vec<u8>,
    },
    /// Owner to producer: the item is held by the owner and its replicas.
    Enqueued {
        /// The producer's request.
        request: u64,
        /// The item.
        item: ItemId,
        /// The owner's fence.
        fence: FencingToken,
    },
    /// Worker to owner: grant me an item.
    Lease {
        /// The worker's request.
        request: u64,
    },
    /// Owner to worker: an item and its token, leased for `timeout` from when it was sent.
    Leased {
        /// The worker's request.
        request: u64,
        /// The token to present.
        token: OwnershipToken,
        /// The lease's length without a heartbeat.
        timeout: Duration,
        /// The item's bytes.
        payload: Vec<u8>,
    },
    /// Worker to owner: grant me up to `max` items (1..=[`MAX_LEASE_ITEMS`]); answered with
    /// [`LeasedItems`](Self::LeasedItems) or [`Empty`](Self::Empty). A lease of one item is
    /// sent as [`Lease`](Self::Lease), which every version of the protocol reads.
    LeaseUpTo {
        /// The worker's request.
        request: u64,
        /// The most items to grant.
        max: u16,
    },
    /// Owner to worker: items and their tokens (at least one, as many as fit
    /// [`LEASED_ITEMS_BYTES`]), each leased for `timeout` from when it was sent.
    LeasedItems {
        /// The worker's request.
        request: u64,
        /// The leases' length without a heartbeat.
        timeout: Duration,
        /// Each item's token and bytes, in the order they were leased.
        items: Vec<(OwnershipToken, Vec<u8>)>,
    },
    /// Owner to worker: nothing is pending.
    Empty {
        /// The worker's request.
        request: u64,
    },
    /// Worker to owner: still working on the token's item.
    Heartbeat {
        /// The worker's request.
        request: u64,
        /// The token.
        token: OwnershipToken,
    },
    /// Worker to owner: the token's item is done.
    Complete {
        /// The worker's request.
        request: u64,
        /// The token.
        token: OwnershipToken,
    },
    /// Worker to owner: the token's item failed.
    Fail {
        /// The worker's request.
        request: u64,
        /// The token.
        token: OwnershipToken,
        /// Requeue it (if attempts remain) rather than dead-letter it.
        requeue: bool,
    },
    /// Owner to worker: the heartbeat, completion or failure was accepted (and, for the last
    /// two, is held by the replicas).
    Accepted {
        /// The worker's request.
        request: u64,
        /// The token.
        token: OwnershipToken,
    },
    /// Owner to producer or worker: the request was refused (a [`QueueError`](super::QueueError)
    /// code, and the owner's fence).
    Refused {
        /// The request.
        request: u64,
        /// The error's code.
        code: u8,
        /// The owner's fence (0 if it has none).
        fence: FencingToken,
    },
    /// Owner to replica: records to apply.
    Replicate(Batch),
    /// Replica to owner: it holds everything up to `applied` of the owner's `fence`.
    ReplicaAck {
        /// The owner's fence the replica follows.
        fence: FencingToken,
        /// The version it holds.
        applied: u64,
    },
    /// New owner to member: promise to follow no owner below `fence`, and say what you hold.
    Recover {
        /// The new owner's fence.
        fence: FencingToken,
    },
    /// Member to new owner: what it holds of the shard's queue.
    Offer {
        /// The new owner's fence (echoed).
        fence: FencingToken,
        /// The fence of the owner whose records it holds (0: none).
        source: FencingToken,
        /// The version it holds.
        applied: u64,
    },
    /// New owner to member: send the records after `(source, after)`: those of owner `source`
    /// changed after version `after`, then those of every newer owner (a member holds records
    /// of earlier owners besides its current copy's: see [`ReplicaStore`](super::ReplicaStore)).
    Pull {
        /// The new owner's fence.
        fence: FencingToken,
        /// The owner whose records it pulls now (0 at the start).
        source: FencingToken,
        /// The version of that owner's records it has.
        after: u64,
    },
    /// Member to new owner: a chunk of its records, all of one owner (the batch's fence).
    Snapshot(Batch),
}

/// One message of the queue channel: a shard and what is said about it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct QueueMessage {
    /// The shard whose queue it concerns.
    pub shard: ShardId,
    /// What it says.
    pub body: QueueBody,
}

mod kind {
    pub(super) const ENQUEUE: u8 = 1;
    pub(super) const ENQUEUED: u8 = 2;
    pub(super) const LEASE: u8 = 3;
    pub(super) const LEASED: u8 = 4;
    pub(super) const EMPTY: u8 = 5;
    pub(super) const HEARTBEAT: u8 = 6;
    pub(super) const COMPLETE: u8 = 7;
    pub(super) const FAIL: u8 = 8;
    pub(super) const ACCEPTED: u8 = 9;
    pub(super) const REFUSED: u8 = 10;
    pub(super) const REPLICATE: u8 = 11;
    pub(super) const REPLICA_ACK: u8 = 12;
    pub(super) const RECOVER: u8 = 13;
    pub(super) const OFFER: u8 = 14;
    pub(super) const PULL: u8 = 15;
    pub(super) const SNAPSHOT: u8 = 16;
    pub(super) const LEASE_UP_TO: u8 = 17;
    pub(super) const LEASED_ITEMS: u8 = 18;
}

impl QueueMessage {
    /// Whether the encoded message `bytes` (channel byte excluded) tells its recipient what this
    /// node's replica copy holds, so that a host which makes the checkpoint records durable off
    /// its own task must hold it until every record polled before it is durable: a replica's
    /// acknowledgement (an owner counts it toward an enqueue's answer), its offer to a new owner
    /// (it carries the promise of a newer fence) and a chunk of its copy. Every other message,
    /// requests, answers and the owner's own batches included, promises nothing about this
    /// node's disk and may leave at once. Reads the kind byte only (empty bytes: `false`).
    pub fn waits_for_durable(bytes: &[u8]) -> bool {
        matches!(
            bytes.first(),
            Some(&(kind::REPLICA_ACK | kind::OFFER | kind::SNAPSHOT))
        )
    }

    /// Whether the encoded message `bytes` (channel byte excluded) is a replica's acknowledgement
    /// of the batches it applied: the one of [`waits_for_durable`](Self::waits_for_durable)'s
    /// messages a host may let leave once the records polled before it are *written* (in the
    /// operating system's page cache, which outlives the process) rather than synced, if it
    /// chose to (the tokio host's `[queues] ack_after = "write"`). Offers and chunks carry a
    /// replica's promise of a newer fence and its copy to a new owner: they still wait for the
    /// sync. Reads the kind byte only (empty bytes: `false`).
    pub fn is_replica_ack(bytes: &[u8]) -> bool {
        bytes.first() == Some(&kind::REPLICA_ACK)
    }

    /// Whether this message must wait for the checkpoints polled before it to be durable (see
    /// [`waits_for_durable`](Self::waits_for_durable)).
    pub fn is_durable_promise(&self) -> bool {
        matches!(
            self.body,
            QueueBody::ReplicaAck { .. } | QueueBody::Offer { .. } | QueueBody::Snapshot(_)
        )
    }

    /// Appends the encoding to `buf`.
    pub fn encode(&self, buf: &mut Vec<u8>) {
        let mut w = Writer::new(buf);
        let kind = match &self.body {
            QueueBody::Enqueue { .. } => kind::ENQUEUE,
            QueueBody::Enqueued { .. } => kind::ENQUEUED,
            QueueBody::Lease { .. } => kind::LEASE,
            QueueBody::Leased { .. } => kind::LEASED,
            QueueBody::Empty { .. } => kind::EMPTY,
            QueueBody::Heartbeat { .. } => kind::HEARTBEAT,
            QueueBody::Complete { .. } => kind::COMPLETE,
            QueueBody::Fail { .. } => kind::FAIL,
            QueueBody::Accepted { .. } => kind::ACCEPTED,
            QueueBody::Refused { .. } => kind::REFUSED,
            QueueBody::Replicate(_) => kind::REPLICATE,
            QueueBody::ReplicaAck { .. } => kind::REPLICA_ACK,
            QueueBody::Recover { .. } => kind::RECOVER,
            QueueBody::Offer { .. } => kind::OFFER,
            QueueBody::Pull { .. } => kind::PULL,
            QueueBody::Snapshot(_) => kind::SNAPSHOT,
            QueueBody::LeaseUpTo { .. } => kind::LEASE_UP_TO,
            QueueBody::LeasedItems { .. } => kind::LEASED_ITEMS,
        };
        w.u8(kind);
        let ns = self.shard.namespace().as_bytes();
        // A valid namespace is at most MAX_NAMESPACE_CHARS (64) ASCII bytes.
        w.u8(ns.len() as u8);
        w.buf.extend_from_slice(ns);
        w.u32(self.shard.id());
        match &self.body {
            QueueBody::Enqueue { request, payload } => {
                w.u64(*request);
                w.bytes16(payload);
            }
            QueueBody::Enqueued {
                request,
                item,
                fence,
            } => {
                w.u64(*request);
                w.u64(item.get());
                w.u64(fence.get());
            }
            QueueBody::Lease { request } | QueueBody::Empty { request } => w.u64(*request),
            QueueBody::Leased {
                request,
                token,
                timeout,
                payload,
            } => {
                w.u64(*request);
                token_out(&mut w, token);
                w.duration(*timeout);
                w.bytes16(payload);
            }
            QueueBody::LeaseUpTo { request, max } => {
                w.u64(*request);
                w.u16(*max);
            }
            QueueBody::LeasedItems {
                request,
                timeout,
                items,
            } => {
                w.u64(*request);
                w.duration(*timeout);
                debug_assert!(
                    items
                        .iter()
                        .map(|(_, p)| leased_item_bytes(p.len()))
                        .sum::<usize>()
                        <= LEASED_ITEMS_BYTES,
                    "leased items over their bound"
                );
                w.u16(items.len() as u16);
                for (token, payload) in items {
                    token_out(&mut w, token);
                    w.bytes16(payload);
                }
            }
            QueueBody::Heartbeat { request, token }
            | QueueBody::Complete { request, token }
            | QueueBody::Accepted { request, token } => {
                w.u64(*request);
                token_out(&mut w, token);
            }
            QueueBody::Fail {
                request,
                token,
                requeue,
            } => {
                w.u64(*request);
                token_out(&mut w, token);
                w.bool(*requeue);
            }
            QueueBody::Refused {
                request,
                code,
                fence,
            } => {
                w.u64(*request);
                w.u8(*code);
                w.u64(fence.get());
            }
            QueueBody::Replicate(b) | QueueBody::Snapshot(b) => {
                w.u64(b.fence.get());
                w.u64(b.from);
                w.u64(b.to);
                w.bool(b.done);
                w.u32(b.pending);
                w.u32(b.active);
                debug_assert!(
                    b.records.len() <= MAX_BATCH_RECORDS
                        && b.records.iter().map(record_bytes).sum::<usize>() <= BATCH_RECORDS_BYTES,
                    "batch over its bound"
                );
                w.u8(b.records.len() as u8);
                for r in &b.records {
                    record_out(&mut w, r);
                }
            }
            QueueBody::ReplicaAck { fence, applied } => {
                w.u64(fence.get());
                w.u64(*applied);
            }
            QueueBody::Recover { fence } => w.u64(fence.get()),
            QueueBody::Offer {
                fence,
                source,
                applied,
            } => {
                w.u64(fence.get());
                w.u64(source.get());
                w.u64(*applied);
            }
            QueueBody::Pull {
                fence,
                source,
                after,
            } => {
                w.u64(fence.get());
                w.u64(source.get());
                w.u64(*after);
            }
        }
    }

    /// Decodes one message, the whole of `bytes`.
    ///
    /// # Errors
    ///
    /// Any [`DecodeError`] (a peer or network fault); nothing is built.
    pub fn decode(bytes: &[u8]) -> Result<Self, DecodeError> {
        if bytes.len() > MAX_QUEUE_MESSAGE_BYTES {
            return Err(DecodeError::Oversized {
                len: bytes.len(),
                max: MAX_QUEUE_MESSAGE_BYTES,
            });
        }
        let mut r = Reader::new(bytes);
        let kind = r.u8()?;
        let ns_len = usize::from(r.u8()?);
        if ns_len > MAX_NAMESPACE_CHARS {
            return Err(DecodeError::TooLong {
                field: "namespace",
                len: ns_len,
                max: MAX_NAMESPACE_CHARS,
            });
        }
        let ns = r.bytes_exact(ns_len)?;
        let id = r.u32()?;
        let ns = core::str::from_utf8(ns).map_err(|_| DecodeError::InvalidKey)?;
        let shard = ShardId::new(ns, id).map_err(|_| DecodeError::InvalidValue {
            field: "shard",
            value: u64::from(id),
        })?;
        let body = match kind {
            kind::ENQUEUE => QueueBody::Enqueue {
                request: r.u64()?,
                payload: r.bytes16("payload", MAX_PAYLOAD_BYTES)?.to_vec(),
            },
            kind::ENQUEUED => QueueBody::Enqueued {
                request: r.u64()?,
                item: ItemId::new(r.u64()?),
                fence: FencingToken::new(r.u64()?),
            },
            kind::LEASE => QueueBody::Lease { request: r.u64()? },
            kind::EMPTY => QueueBody::Empty { request: r.u64()? },
            kind::LEASE_UP_TO => {
                let request = r.u64()?;
                let max = r.u16()?;
                if !(1..=MAX_LEASE_ITEMS).contains(&max) {
                    return Err(DecodeError::InvalidValue {
                        field: "max",
                        value: u64::from(max),
                    });
                }
                QueueBody::LeaseUpTo { request, max }
            }
            kind::LEASED_ITEMS => {
                let request = r.u64()?;
                let timeout = r.duration()?;
                let count = r.u16()?;
                if count == 0 || count > MAX_LEASE_ITEMS {
                    return Err(DecodeError::InvalidValue {
                        field: "leased item count",
                        value: u64::from(count),
                    });
                }
                // A count beyond what the bytes hold fails at the first missing item: the
                // message is at most a datagram, so the items built before it are too.
                let items = (0..count)
                    .map(|_| {
                        let token = token_in(&mut r)?;
                        let payload = r.bytes16("payload", MAX_PAYLOAD_BYTES)?.to_vec();
                        Ok((token, payload))
                    })
                    .collect::<Result<Vec<_>, DecodeError>>()?;
                QueueBody::LeasedItems {
                    request,
                    timeout,
                    items,
                }
            }
            kind::LEASED => QueueBody::Leased {
                request: r.u64()?,
                token: token_in(&mut r)?,
                timeout: r.duration()?,
                payload: r.bytes16("payload", MAX_PAYLOAD_BYTES)?.to_vec(),
            },
            kind::HEARTBEAT => QueueBody::Heartbeat {
                request: r.u64()?,
                token: token_in(&mut r)?,
            },
            kind::COMPLETE => QueueBody::Complete {
                request: r.u64()?,
                token: token_in(&mut r)?,
            },
            kind::ACCEPTED => QueueBody::Accepted {
                request: r.u64()?,
                token: token_in(&mut r)?,
            },
            kind::FAIL => QueueBody::Fail {
                request: r.u64()?,
                token: token_in(&mut r)?,
                requeue: r.bool("requeue")?,
            },
            kind::REFUSED => QueueBody::Refused {
                request: r.u64()?,
                code: r.u8()?,
                fence: FencingToken::new(r.u64()?),
            },
            kind::REPLICATE => QueueBody::Replicate(batch_in(&mut r)?),
            kind::SNAPSHOT => QueueBody::Snapshot(batch_in(&mut r)?),
            kind::REPLICA_ACK => QueueBody::ReplicaAck {
                fence: FencingToken::new(r.u64()?),
                applied: r.u64()?,
            },
            kind::RECOVER => QueueBody::Recover {
                fence: FencingToken::new(r.u64()?),
            },
            kind::OFFER => QueueBody::Offer {
                fence: FencingToken::new(r.u64()?),
                source: FencingToken::new(r.u64()?),
                applied: r.u64()?,
            },
            kind::PULL => QueueBody::Pull {
                fence: FencingToken::new(r.u64()?),
                source: FencingToken::new(r.u64()?),
                after: r.u64()?,
            },
            other => {
                return Err(DecodeError::UnknownKind {
                    what: "queue message",
                    kind: other,
                });
            }
        };
        r.finish()?;
        Ok(Self { shard, body })
    }
}

fn token_out(w: &mut Writer<'_>, t: &OwnershipToken) {
    w.u64(t.item.get());
    w.u32(t.attempt);
    w.u64(t.lease.get());
    w.u64(t.fence.get());
}

fn token_in(r: &mut Reader<'_>) -> Result<OwnershipToken, DecodeError> {
    Ok(OwnershipToken {
        item: ItemId::new(r.u64()?),
        attempt: r.u32()?,
        lease: LeaseId::new(r.u64()?),
        fence: FencingToken::new(r.u64()?),
    })
}

/// Appends one record (also the unit of a replica's durable checkpoint).
pub(crate) fn record_out(w: &mut Writer<'_>, rec: &ItemRecord) {
    w.u64(rec.id.get());
    w.u64(rec.version);
    w.u32(rec.attempts);
    let (state, worker, lease) = match rec.state {
        ItemState::Pending => (0, 0, 0),
        ItemState::Leased { worker, lease } => (1, worker.get(), lease.get()),
        ItemState::Completed => (2, 0, 0),
        ItemState::DeadLettered => (3, 0, 0),
        ItemState::Drained => (4, 0, 0),
    };
    w.u8(state);
    w.u64(worker);
    w.u64(lease);
    w.u8(rec.change.byte());
    w.u64(rec.origin.node.get());
    w.u64(rec.origin.request);
    w.bytes16(&rec.payload);
}

/// Reads one record.
pub(crate) fn record_in(r: &mut Reader<'_>) -> Result<ItemRecord, DecodeError> {
    let id = ItemId::new(r.u64()?);
    let version = r.u64()?;
    let attempts = r.u32()?;
    let state = r.u8()?;
    let worker = r.u64()?;
    let lease = r.u64()?;
    let state = match state {
        0 => ItemState::Pending,
        1 => ItemState::Leased {
            worker: NodeId::new(worker),
            lease: LeaseId::new(lease),
        },
        2 => ItemState::Completed,
        3 => ItemState::DeadLettered,
        4 => ItemState::Drained,
        other => {
            return Err(DecodeError::UnknownKind {
                what: "item state",
                kind: other,
            });
        }
    };
    let change = r.u8()?;
    let change = EventKind::from_byte(change).ok_or(DecodeError::UnknownKind {
        what: "queue event",
        kind: change,
    })?;
    if version == 0 {
        return Err(DecodeError::InvalidValue {
            field: "version",
            value: 0,
        });
    }
    Ok(ItemRecord {
        id,
        version,
        attempts,
        state,
        change,
        origin: Origin {
            node: NodeId::new(r.u64()?),
            request: r.u64()?,
        },
        payload: r.bytes16("payload", MAX_PAYLOAD_BYTES)?.to_vec(),
    })
}

fn batch_in(r: &mut Reader<'_>) -> Result<Batch, DecodeError> {
    let fence = FencingToken::new(r.u64()?);
    let from = r.u64()?;
    let to = r.u64()?;
    let done = r.bool("done")?;
    let pending = r.u32()?;
    let active = r.u32()?;
    let count = usize::from(r.u8()?);
    if count > MAX_BATCH_RECORDS {
        return Err(DecodeError::TooLong {
            field: "records",
            len: count,
            max: MAX_BATCH_RECORDS,
        });
    }
    let mut records: Vec<ItemRecord> = Vec::with_capacity(count);
    for _ in 0..count {
        let rec = record_in(r)?;
        // Every record changed after `from`, each item once. Not necessarily within `to`, nor
        // in order: a replication batch also carries, at the version an answer waits for, a
        // waiting item whose record moved past it (`Queues::send_batches`).
        if rec.version <= from {
            return Err(DecodeError::InvalidValue {
                field: "record version",
                value: rec.version,
            });
        }
        if records.iter().any(|held| held.id == rec.id) {
            return Err(DecodeError::InvalidValue {
                field: "record item (twice in a batch)",
                value: rec.id.get(),
            });
        }
        records.push(rec);
    }
    if to < from {
        return Err(DecodeError::InvalidValue {
            field: "batch to",
            value: to,
        });
    }
    Ok(Batch {
        fence,
        from,
        to,
        done,
        pending,
        active,
        records,
    })
}

#[cfg(test)]
mod tests {
    use alloc::collections::BTreeSet;

    use super::*;

    fn shard() -> ShardId {
        ShardId::new("orders", 3).unwrap()
    }

    fn token() -> OwnershipToken {
        OwnershipToken {
            item: ItemId::new(9),
            attempt: 2,
            lease: LeaseId::new(4),
            fence: FencingToken::new(77),
        }
    }

    fn record(version: u64, payload: usize) -> ItemRecord {
        ItemRecord {
            id: ItemId::new(version),
            version,
            attempts: 1,
            state: ItemState::Leased {
                worker: NodeId::new(5),
                lease: LeaseId::new(6),
            },
            change: EventKind::LeaseGranted,
            origin: Origin {
                node: NodeId::new(2),
                request: 8,
            },
            payload: vec![0xab; payload],
        }
    }

    pub(crate) fn samples() -> Vec<QueueMessage> {
        let long = ShardId::new(&"n".repeat(MAX_NAMESPACE_CHARS), u32::MAX).unwrap();
        let batch = Batch {
            fence: FencingToken::new(3),
            from: 0,
            to: 10,
            done: true,
            pending: 4,
            active: 1,
            records: (1..=(BATCH_RECORDS_BYTES / MAX_RECORD_BYTES) as u64)
                .map(|v| record(v, MAX_PAYLOAD_BYTES))
                .collect(),
        };
        // The most records a batch carries: small ones, filled by size.
        let small: Vec<ItemRecord> = (1..=MAX_BATCH_RECORDS as u64)
            .map(|v| record(v, 0))
            .collect();
        let (small, _) = fill_batch(&small);
        let many = Batch {
            to: small.len() as u64,
            records: small,
            ..batch
        };
        let bodies = vec![
            QueueBody::Enqueue {
                request: 1,
                payload: vec![1; MAX_PAYLOAD_BYTES],
            },
            QueueBody::Enqueued {
                request: 1,
                item: ItemId::new(2),
                fence: FencingToken::new(3),
            },
            QueueBody::Lease { request: 4 },
            QueueBody::Leased {
                request: 4,
                token: token(),
                timeout: Duration::from_secs(10),
                payload: vec![2; MAX_PAYLOAD_BYTES],
            },
            QueueBody::Empty { request: 5 },
            QueueBody::LeaseUpTo {
                request: 4,
                max: MAX_LEASE_ITEMS,
            },
            // The most items of the largest payload an answer carries, and the most small ones.
            QueueBody::LeasedItems {
                request: 4,
                timeout: Duration::from_secs(10),
                items: vec![
                    (token(), vec![3; MAX_PAYLOAD_BYTES]);
                    LEASED_ITEMS_BYTES / leased_item_bytes(MAX_PAYLOAD_BYTES)
                ],
            },
            QueueBody::LeasedItems {
                request: 4,
                timeout: Duration::from_secs(10),
                items: vec![(token(), Vec::new()); LEASED_ITEMS_BYTES / MIN_LEASED_ITEM_BYTES],
            },
            QueueBody::Heartbeat {
                request: 6,
                token: token(),
            },
            QueueBody::Complete {
                request: 7,
                token: token(),
            },
            QueueBody::Fail {
                request: 8,
                token: token(),
                requeue: true,
            },
            QueueBody::Accepted {
                request: 9,
                token: token(),
            },
            QueueBody::Refused {
                request: 10,
                code: 1,
                fence: FencingToken::new(11),
            },
            QueueBody::Replicate(batch.clone()),
            QueueBody::Replicate(many),
            QueueBody::ReplicaAck {
                fence: FencingToken::new(3),
                applied: 10,
            },
            QueueBody::Recover {
                fence: FencingToken::new(12),
            },
            QueueBody::Offer {
                fence: FencingToken::new(12),
                source: FencingToken::new(3),
                applied: 10,
            },
            QueueBody::Pull {
                fence: FencingToken::new(12),
                source: FencingToken::new(3),
                after: 4,
            },
            QueueBody::Snapshot(batch),
        ];
        bodies
            .into_iter()
            .map(|body| QueueMessage {
                shard: long.clone(),
                body,
            })
            .chain(core::iter::once(QueueMessage {
                shard: shard(),
                body: QueueBody::Lease { request: 1 },
            }))
            .collect()
    }

    #[test]
    fn every_message_round_trips_within_its_bound() {
        for m in samples() {
            let mut buf = Vec::new();
            m.encode(&mut buf);
            assert!(
                buf.len() <= MAX_QUEUE_MESSAGE_BYTES,
                "{} bytes: {m:?}",
                buf.len()
            );
            assert_eq!(QueueMessage::decode(&buf).unwrap(), m);
        }
    }

    /// The host holds only what speaks for the replica's disk behind a checkpoint sync: the
    /// byte peek agrees with the decoded body for every kind of message, and exactly the
    /// replica's acknowledgement, offer and chunk wait (requests, answers and the owner's
    /// batches go at once, or every request a node sends waits for its disk).
    #[test]
    fn only_what_speaks_for_the_replicas_disk_waits_for_a_sync() {
        let mut waiting = BTreeSet::new();
        for m in samples() {
            let mut buf = Vec::new();
            m.encode(&mut buf);
            assert_eq!(
                QueueMessage::waits_for_durable(&buf),
                m.is_durable_promise(),
                "{m:?}"
            );
            if m.is_durable_promise() {
                waiting.insert(buf[0]);
            }
        }
        assert_eq!(
            waiting,
            BTreeSet::from([kind::REPLICA_ACK, kind::OFFER, kind::SNAPSHOT])
        );
        assert!(!QueueMessage::waits_for_durable(&[]));
    }

    /// With `ack_after = "write"` only the replica's acknowledgement leaves before the sync:
    /// the byte peek names exactly that kind, and never an offer or a chunk (they carry the
    /// promise of a newer fence and the copy a new owner rebuilds from).
    #[test]
    fn only_the_replicas_acknowledgement_may_leave_once_written() {
        let mut acks = BTreeSet::new();
        for m in samples() {
            let mut buf = Vec::new();
            m.encode(&mut buf);
            let is_ack = matches!(m.body, QueueBody::ReplicaAck { .. });
            assert_eq!(QueueMessage::is_replica_ack(&buf), is_ack, "{m:?}");
            if is_ack {
                assert!(QueueMessage::waits_for_durable(&buf), "{m:?}");
                acks.insert(buf[0]);
            }
        }
        assert_eq!(acks, BTreeSet::from([kind::REPLICA_ACK]));
        assert!(!QueueMessage::is_replica_ack(&[]));
    }

    /// Replicas and a new owner learn every kind of change and every state from these records:
    /// each (state, change) pair a record can carry round-trips, and the change kinds keep
    /// distinct bytes and names (the names label logs and diagnostics).
    #[test]
    fn records_of_every_state_and_change_round_trip() {
        let states = [
            ItemState::Pending,
            ItemState::Leased {
                worker: NodeId::new(5),
                lease: LeaseId::new(6),
            },
            ItemState::Completed,
            ItemState::DeadLettered,
            ItemState::Drained,
        ];
        let changes = [
            (EventKind::Enqueue, "enqueue"),
            (EventKind::LeaseGranted, "lease_granted"),
            (EventKind::Heartbeat, "heartbeat"),
            (EventKind::Completed, "completed"),
            (EventKind::Failed, "failed"),
            (EventKind::DrainSnapshot, "drain_snapshot"),
            (EventKind::RestoreSnapshot, "restore_snapshot"),
        ];
        for state in states {
            for (change, _) in changes {
                let mut r = record(1, 3);
                r.state = state;
                r.change = change;
                let m = QueueMessage {
                    shard: shard(),
                    body: QueueBody::Replicate(Batch {
                        fence: FencingToken::new(3),
                        from: 0,
                        to: 1,
                        done: true,
                        pending: 0,
                        active: 0,
                        records: vec![r],
                    }),
                };
                let mut buf = Vec::new();
                m.encode(&mut buf);
                assert_eq!(QueueMessage::decode(&buf), Ok(m), "{state:?} {change:?}");
            }
        }
        let bytes: BTreeSet<u8> = changes.iter().map(|(c, _)| c.byte()).collect();
        assert_eq!(bytes.len(), changes.len());
        let unknown = (0..=u8::MAX).filter(|b| !bytes.contains(b));
        assert!(
            unknown
                .into_iter()
                .all(|b| EventKind::from_byte(b).is_none())
        );
        for (change, name) in changes {
            assert_eq!(change.as_str(), name);
        }
    }

    #[test]
    fn truncated_trailing_oversized_and_mutated_bytes_are_errors_not_panics() {
        for m in samples() {
            let mut buf = Vec::new();
            m.encode(&mut buf);
            for n in 0..buf.len() {
                assert!(
                    QueueMessage::decode(&buf[..n]).is_err(),
                    "prefix {n} of {m:?}"
                );
            }
            let mut longer = buf.clone();
            longer.push(0);
            assert!(QueueMessage::decode(&longer).is_err());
            for i in 0..buf.len() {
                for b in [0u8, 0xff, 0x7f, 0x01] {
                    let mut c = buf.clone();
                    c[i] = b;
                    let _ = QueueMessage::decode(&c);
                }
            }
        }
        assert!(matches!(
            QueueMessage::decode(&vec![1; MAX_QUEUE_MESSAGE_BYTES + 1]),
            Err(DecodeError::Oversized { .. })
        ));
        assert!(matches!(
            QueueMessage::decode(&[99, 1, b'a', 0, 0, 0, 0]),
            Err(DecodeError::UnknownKind { .. })
        ));
        // A lease of 0 items, or of more than MAX_LEASE_ITEMS, is refused naming the field.
        for max in [0, MAX_LEASE_ITEMS + 1, u16::MAX] {
            let mut buf = Vec::new();
            QueueMessage {
                shard: shard(),
                body: QueueBody::LeaseUpTo { request: 1, max },
            }
            .encode(&mut buf);
            assert_eq!(
                QueueMessage::decode(&buf),
                Err(DecodeError::InvalidValue {
                    field: "max",
                    value: u64::from(max)
                })
            );
        }
    }

    /// A replication batch may carry a record past `to` and out of order (a waiting item that
    /// moved past the version its answer waits for, `Queues::send_batches`), but never one at
    /// or before `from`, nor an item twice.
    #[test]
    fn a_batchs_records_are_after_from_each_item_once() {
        let encoded = |records: Vec<ItemRecord>| {
            let mut buf = Vec::new();
            QueueMessage {
                shard: shard(),
                body: QueueBody::Replicate(Batch {
                    fence: FencingToken::new(3),
                    from: 10,
                    to: 12,
                    done: true,
                    pending: 0,
                    active: 0,
                    records,
                }),
            }
            .encode(&mut buf);
            buf
        };
        let moved = encoded(vec![record(40, 1), record(11, 1), record(12, 1)]);
        assert!(QueueMessage::decode(&moved).is_ok());
        assert_eq!(
            QueueMessage::decode(&encoded(vec![record(10, 1)])),
            Err(DecodeError::InvalidValue {
                field: "record version",
                value: 10
            })
        );
        let mut twice = record(12, 1);
        twice.id = ItemId::new(11);
        assert_eq!(
            QueueMessage::decode(&encoded(vec![record(11, 1), twice])),
            Err(DecodeError::InvalidValue {
                field: "record item (twice in a batch)",
                value: 11
            })
        );
    }
}
