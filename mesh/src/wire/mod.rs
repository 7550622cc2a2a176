//! MeshKit's versioned binary wire format for membership datagrams.
//!
//! A datagram is a header (protocol version, message kind, sender), one [`Message`], and a
//! count-prefixed list of piggybacked [`Update`]s that fill the rest of the datagram. The sender
//! and the fields of the probe messages (the most frequent datagrams) are LEB128 varints (only
//! their shortest form decodes); every other integer is big-endian, and every variable-length
//! field has a bound, so each datagram fits
//! [`MAX_DATAGRAM_BYTES`] (a QUIC datagram). [`decode`] returns a [`DecodeError`] for any byte
//! string it cannot read: it never panics on peer input.

#![cfg_attr(not(test), deny(clippy::unwrap_used, clippy::expect_used))]

pub(crate) mod codec;

use thiserror::Error;

use crate::id::{Incarnation, MetaVersion, NodeId};
use crate::membership::MemberState;
use codec::{Reader, Writer};

/// The protocol version this build speaks; a datagram of another version is refused. Version 2
/// writes the sender and the probe messages' fields (`Ping`, `Ack`, `PingReq`, `Nack`) as
/// varints: a probe and its answer are 24 and 16 bytes in version 1, 8 and 5 with small node
/// ids and sequence numbers (docs/architecture.md, "Bytes per packet").
pub const PROTOCOL_VERSION: u8 = 2;
/// Every datagram fits one QUIC DATAGRAM frame on a path with IPv6's minimum MTU of 1,280
/// bytes: 1,232 bytes of UDP payload, less a 1-RTT short header (1 + up to 20 connection-id + up
/// to 4 packet-number bytes), the frame's type and length (3) and the AEAD tag (16), with room
/// left for an ACK frame coalesced into the same packet. It also fits quinn's default initial
/// MTU of 1,200 bytes of UDP payload, so no path MTU discovery is needed before gossip flows.
pub const MAX_DATAGRAM_BYTES: usize = 1150;
/// Buckets of the anti-entropy digest; one digest datagram carries all of them.
pub const DIGEST_BUCKETS: usize = 128;
/// Longest metadata key, in bytes of UTF-8.
pub const MAX_KEY_BYTES: usize = 64;
/// Longest metadata value, in bytes; one key update always fits a datagram.
pub const MAX_VALUE_BYTES: usize = 1024;
/// Ceiling for the configurable per-member metadata bound.
pub const MAX_METADATA_BYTES: usize = 32 * 1024;
/// Header: version, kind, sender (a varint: at most 10 bytes).
pub const HEADER_BYTES: usize = 1 + 1 + codec::MAX_VARINT_BYTES;
/// Bytes of one [`MemberRecord`] on the wire.
pub const MEMBER_RECORD_BYTES: usize = 8 + 4 + 1 + 8;
/// Records that fit one [`Message::SyncEntries`] datagram, leaving room for its header.
pub const MAX_RECORDS_PER_DATAGRAM: usize =
    (MAX_DATAGRAM_BYTES - HEADER_BYTES - 1 - 16 - 2 - 1) / MEMBER_RECORD_BYTES;
/// Bytes of metadata entries one [`Message::MetaPush`] datagram carries at most.
pub const MAX_META_CHUNK_BYTES: usize = MAX_DATAGRAM_BYTES - HEADER_BYTES - 40;
/// Chunks one metadata transfer may span (a transfer's received chunks are a `u128` bitmap).
pub const MAX_META_CHUNKS: usize = 128;

const _: () = assert!(
    HEADER_BYTES + 1 + 1 + DIGEST_BUCKETS * 8 < MAX_DATAGRAM_BYTES,
    "a digest fits a datagram"
);
const _: () = assert!(
    HEADER_BYTES + 1 + 8 + 8 + 2 + MAX_KEY_BYTES + 1 + 2 + MAX_VALUE_BYTES < MAX_DATAGRAM_BYTES,
    "one metadata update fits a datagram"
);
// An entry takes at most 10/9 of what it counts against the metadata bound on the wire, and
// greedy packing fills any two consecutive chunks with more than one chunk's worth of bytes.
const _: () = assert!(
    2 * (MAX_METADATA_BYTES * 10 / 9) / MAX_META_CHUNK_BYTES < MAX_META_CHUNKS,
    "the largest metadata fits the chunk bitmap"
);

/// Why a datagram could not be decoded. Always the peer's fault (or the network's); the receiving
/// node's state is unchanged when this is returned.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum DecodeError {
    /// The datagram ended inside a field.
    #[error("truncated datagram: needed {needed} more bytes, {remaining} left")]
    Truncated {
        /// Bytes the field needed.
        needed: usize,
        /// Bytes that were left.
        remaining: usize,
    },
    /// Larger than any datagram we send.
    #[error("datagram of {len} bytes exceeds the {max}-byte limit")]
    Oversized {
        /// Its length.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// A protocol version this build does not speak.
    #[error("protocol version {found} is not supported (this node speaks {supported})")]
    UnsupportedVersion {
        /// Version in the datagram.
        found: u8,
        /// Version of this build.
        supported: u8,
    },
    /// An unknown message or update kind.
    #[error("unknown {what} kind {kind}")]
    UnknownKind {
        /// "message", "update", "state" or "reply".
        what: &'static str,
        /// The byte found.
        kind: u8,
    },
    /// A variable-length field longer than its bound.
    #[error("{field} of {len} bytes exceeds its {max}-byte bound")]
    TooLong {
        /// The field.
        field: &'static str,
        /// Its length.
        len: usize,
        /// The bound.
        max: usize,
    },
    /// A field whose value is not allowed.
    #[error("invalid {field}: {value}")]
    InvalidValue {
        /// The field.
        field: &'static str,
        /// The value found.
        value: u64,
    },
    /// A metadata key that is not UTF-8.
    #[error("metadata key is not UTF-8")]
    InvalidKey,
    /// Bytes after the last field.
    #[error("{0} trailing bytes after the last field")]
    TrailingBytes(usize),
}

/// One member's state as anti-entropy exchanges it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MemberRecord {
    /// The member.
    pub node: NodeId,
    /// Its incarnation as the sender knows it.
    pub incarnation: Incarnation,
    /// Its state as the sender knows it.
    pub state: MemberState,
    /// Its metadata version as the sender holds it.
    pub meta: MetaVersion,
}

/// Which buckets the receiver of [`Message::SyncEntries`] should send back.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SyncReply {
    /// Nothing: this is the answer.
    Nothing,
    /// The members of these buckets (bit i = bucket i).
    Buckets(u128),
    /// Every member (joins and full-state anti-entropy).
    All,
}

/// One key of a metadata transfer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MetaEntry {
    /// The key.
    pub key: String,
    /// Write sequence number of this key within the epoch.
    pub seq: u32,
    /// The value, or `None` for a tombstone.
    pub value: Option<Vec<u8>>,
}

/// The body of a datagram.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Message {
    /// SWIM direct probe.
    Ping {
        /// Matches the ack to the probe.
        seq: u32,
        /// Whom the sender means to probe (a restarted node under the same address can tell).
        target: NodeId,
    },
    /// Answer to a ping, or forwarded by an indirect prober.
    Ack {
        /// The probe's sequence number.
        seq: u32,
    },
    /// Ask the receiver to probe `target` on the sender's behalf (SWIM indirect probe).
    PingReq {
        /// The sender's probe sequence number, echoed in the ack or nack.
        seq: u32,
        /// The member to probe.
        target: NodeId,
    },
    /// Lifeguard: the indirect prober got no ack from the target in time.
    Nack {
        /// The sender's probe sequence number.
        seq: u32,
    },
    /// Carries piggybacked updates only.
    Gossip,
    /// Anti-entropy, step 1: the sender's bucket digests.
    SyncDigest {
        /// Ask for every member (joins, full-state mode); `digests` is then empty.
        all: bool,
        /// One digest per bucket, [`DIGEST_BUCKETS`] of them, unless `all`.
        digests: Vec<u64>,
    },
    /// Anti-entropy, step 2 and 3: member records, and which buckets to send back.
    SyncEntries {
        /// What the receiver should answer with.
        reply: SyncReply,
        /// The records, at most [`MAX_RECORDS_PER_DATAGRAM`].
        records: Vec<MemberRecord>,
    },
    /// Ask for a member's metadata newer than `have`.
    MetaPull {
        /// Whose metadata.
        node: NodeId,
        /// The version the sender holds.
        have: MetaVersion,
    },
    /// One chunk of a member's metadata at `version`.
    MetaPush {
        /// Whose metadata.
        node: NodeId,
        /// `Some(v)`: a delta on top of `v`; `None`: the complete set of live keys.
        base: Option<MetaVersion>,
        /// The version this transfer brings the receiver to.
        version: MetaVersion,
        /// This chunk's index.
        chunk: u8,
        /// Chunks in the transfer.
        chunks: u8,
        /// Keys (and tombstones, in a delta).
        entries: Vec<MetaEntry>,
    },
}

/// A piggybacked membership or metadata update (SWIM dissemination).
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Update {
    /// `node` is alive at `incarnation`, with metadata at version `meta`.
    Alive {
        /// The member.
        node: NodeId,
        /// Its incarnation.
        incarnation: Incarnation,
        /// Its metadata version.
        meta: MetaVersion,
    },
    /// `from` suspects `node` at `incarnation`.
    Suspect {
        /// The member.
        node: NodeId,
        /// Its incarnation.
        incarnation: Incarnation,
        /// Who suspects it.
        from: NodeId,
    },
    /// `from` declared `node` dead at `incarnation`.
    Dead {
        /// The member.
        node: NodeId,
        /// Its incarnation.
        incarnation: Incarnation,
        /// Who declared it.
        from: NodeId,
    },
    /// `node` left gracefully.
    Left {
        /// The member.
        node: NodeId,
        /// Its incarnation.
        incarnation: Incarnation,
    },
    /// One write to `node`'s metadata.
    Meta {
        /// The owner.
        node: NodeId,
        /// Its metadata version after this write.
        version: MetaVersion,
        /// The key.
        key: String,
        /// The value, or `None` for a delete.
        value: Option<Vec<u8>>,
    },
}

impl Update {
    /// The member this update is about.
    pub fn node(&self) -> NodeId {
        match self {
            Self::Alive { node, .. }
            | Self::Suspect { node, .. }
            | Self::Dead { node, .. }
            | Self::Left { node, .. }
            | Self::Meta { node, .. } => *node,
        }
    }
}

/// A decoded datagram.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Datagram {
    /// Who sent it (as it claims; the driver authenticates the transport).
    pub sender: NodeId,
    /// The message.
    pub message: Message,
    /// Piggybacked updates.
    pub updates: Vec<Update>,
}

mod kind {
    pub(super) const PING: u8 = 1;
    pub(super) const ACK: u8 = 2;
    pub(super) const PING_REQ: u8 = 3;
    pub(super) const NACK: u8 = 4;
    pub(super) const GOSSIP: u8 = 5;
    pub(super) const SYNC_DIGEST: u8 = 6;
    pub(super) const SYNC_ENTRIES: u8 = 7;
    pub(super) const META_PULL: u8 = 8;
    pub(super) const META_PUSH: u8 = 9;

    pub(super) const ALIVE: u8 = 1;
    pub(super) const SUSPECT: u8 = 2;
    pub(super) const DEAD: u8 = 3;
    pub(super) const LEFT: u8 = 4;
    pub(super) const META: u8 = 5;
}

fn state_byte(state: MemberState) -> u8 {
    match state {
        MemberState::Alive => 1,
        MemberState::Suspect => 2,
        MemberState::Dead => 3,
        MemberState::Left => 4,
    }
}

fn state_from_byte(b: u8) -> Result<MemberState, DecodeError> {
    Ok(match b {
        1 => MemberState::Alive,
        2 => MemberState::Suspect,
        3 => MemberState::Dead,
        4 => MemberState::Left,
        kind => {
            return Err(DecodeError::UnknownKind {
                what: "state",
                kind,
            });
        }
    })
}

/// Writes the header and `message` into `buf` (cleared first), followed by a zero update count
/// that [`append_update`] raises. Returns the offset of that count byte.
pub fn encode_message(sender: NodeId, message: &Message, buf: &mut Vec<u8>) -> usize {
    buf.clear();
    let mut w = Writer::new(buf);
    w.u8(PROTOCOL_VERSION);
    match message {
        Message::Ping { seq, target } => {
            w.u8(kind::PING);
            w.varint(sender.get());
            w.varint(u64::from(*seq));
            w.varint(target.get());
        }
        Message::Ack { seq } => {
            w.u8(kind::ACK);
            w.varint(sender.get());
            w.varint(u64::from(*seq));
        }
        Message::PingReq { seq, target } => {
            w.u8(kind::PING_REQ);
            w.varint(sender.get());
            w.varint(u64::from(*seq));
            w.varint(target.get());
        }
        Message::Nack { seq } => {
            w.u8(kind::NACK);
            w.varint(sender.get());
            w.varint(u64::from(*seq));
        }
        Message::Gossip => {
            w.u8(kind::GOSSIP);
            w.varint(sender.get());
        }
        Message::SyncDigest { all, digests } => {
            debug_assert!(
                digests.len() <= DIGEST_BUCKETS,
                "digest longer than DIGEST_BUCKETS"
            );
            w.u8(kind::SYNC_DIGEST);
            w.varint(sender.get());
            w.u8(u8::from(*all));
            w.u8(digests.len() as u8);
            for d in digests {
                w.u64(*d);
            }
        }
        Message::SyncEntries { reply, records } => {
            debug_assert!(
                records.len() <= MAX_RECORDS_PER_DATAGRAM,
                "too many records for a datagram"
            );
            w.u8(kind::SYNC_ENTRIES);
            w.varint(sender.get());
            match reply {
                SyncReply::Nothing => w.u8(0),
                SyncReply::Buckets(set) => {
                    w.u8(1);
                    w.u128(*set);
                }
                SyncReply::All => w.u8(2),
            }
            w.u16(records.len() as u16);
            for r in records {
                w.u64(r.node.get());
                w.u32(r.incarnation.get());
                w.u8(state_byte(r.state));
                write_version(&mut w, r.meta);
            }
        }
        Message::MetaPull { node, have } => {
            w.u8(kind::META_PULL);
            w.varint(sender.get());
            w.u64(node.get());
            write_version(&mut w, *have);
        }
        Message::MetaPush {
            node,
            base,
            version,
            chunk,
            chunks,
            entries,
        } => {
            w.u8(kind::META_PUSH);
            w.varint(sender.get());
            w.u64(node.get());
            match base {
                Some(b) => {
                    w.u8(1);
                    write_version(&mut w, *b);
                }
                None => w.u8(0),
            }
            write_version(&mut w, *version);
            w.u8(*chunk);
            w.u8(*chunks);
            w.u16(entries.len() as u16);
            for e in entries {
                w.bytes16(e.key.as_bytes());
                w.u32(e.seq);
                write_value(&mut w, e.value.as_deref());
            }
        }
    }
    let count_at = buf.len();
    buf.push(0);
    count_at
}

/// Appends one pre-encoded update (from [`encode_update`]) if it fits within
/// [`MAX_DATAGRAM_BYTES`], raising the count at `count_at`. Returns whether it was appended.
pub fn append_update(buf: &mut Vec<u8>, count_at: usize, encoded: &[u8]) -> bool {
    if buf.len() + encoded.len() > MAX_DATAGRAM_BYTES || buf[count_at] == u8::MAX {
        return false;
    }
    buf[count_at] += 1;
    buf.extend_from_slice(encoded);
    true
}

/// `updates` packed, in order, into as few `Gossip` datagrams from `sender` as fit within
/// [`MAX_DATAGRAM_BYTES`] each; an update too large for an empty datagram is left out. For
/// hosts and tests that send a list of claims at once (the simulator's byzantine fault, the
/// adversarial tests); the node itself piggybacks updates on its own messages.
pub fn pack_gossip(sender: NodeId, updates: &[Update]) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    let mut buf = Vec::new();
    let mut count_at = encode_message(sender, &Message::Gossip, &mut buf);
    let mut in_buf = 0usize;
    let mut encoded = Vec::new();
    for u in updates {
        encoded.clear();
        encode_update(u, &mut encoded);
        if !append_update(&mut buf, count_at, &encoded) {
            if in_buf == 0 {
                continue;
            }
            out.push(core::mem::take(&mut buf));
            count_at = encode_message(sender, &Message::Gossip, &mut buf);
            in_buf = 0;
            if !append_update(&mut buf, count_at, &encoded) {
                continue;
            }
        }
        in_buf += 1;
    }
    if in_buf > 0 {
        out.push(buf);
    }
    out
}

/// Encodes one update into `buf` (appending).
pub fn encode_update(update: &Update, buf: &mut Vec<u8>) {
    let mut w = Writer::new(buf);
    match update {
        Update::Alive {
            node,
            incarnation,
            meta,
        } => {
            w.u8(kind::ALIVE);
            w.u64(node.get());
            w.u32(incarnation.get());
            write_version(&mut w, *meta);
        }
        Update::Suspect {
            node,
            incarnation,
            from,
        } => {
            w.u8(kind::SUSPECT);
            w.u64(node.get());
            w.u32(incarnation.get());
            w.u64(from.get());
        }
        Update::Dead {
            node,
            incarnation,
            from,
        } => {
            w.u8(kind::DEAD);
            w.u64(node.get());
            w.u32(incarnation.get());
            w.u64(from.get());
        }
        Update::Left { node, incarnation } => {
            w.u8(kind::LEFT);
            w.u64(node.get());
            w.u32(incarnation.get());
        }
        Update::Meta {
            node,
            version,
            key,
            value,
        } => {
            w.u8(kind::META);
            w.u64(node.get());
            write_version(&mut w, *version);
            w.bytes16(key.as_bytes());
            write_value(&mut w, value.as_deref());
        }
    }
}

fn write_version(w: &mut Writer<'_>, v: MetaVersion) {
    w.u32(v.epoch);
    w.u32(v.seq);
}

fn write_value(w: &mut Writer<'_>, value: Option<&[u8]>) {
    match value {
        Some(v) => {
            w.u8(1);
            w.bytes16(v);
        }
        None => w.u8(0),
    }
}

/// Decodes one datagram. Any byte string gives either a datagram or an error, never a panic.
pub fn decode(bytes: &[u8]) -> Result<Datagram, DecodeError> {
    if bytes.len() > MAX_DATAGRAM_BYTES {
        return Err(DecodeError::Oversized {
            len: bytes.len(),
            max: MAX_DATAGRAM_BYTES,
        });
    }
    let mut r = Reader::new(bytes);
    let version = r.u8()?;
    if version != PROTOCOL_VERSION {
        return Err(DecodeError::UnsupportedVersion {
            found: version,
            supported: PROTOCOL_VERSION,
        });
    }
    let message_kind = r.u8()?;
    let sender = r.varint_node("sender")?;
    let message = match message_kind {
        kind::PING => Message::Ping {
            seq: r.varint_u32("ping seq")?,
            target: r.varint_node("ping target")?,
        },
        kind::ACK => Message::Ack {
            seq: r.varint_u32("ack seq")?,
        },
        kind::PING_REQ => Message::PingReq {
            seq: r.varint_u32("ping-req seq")?,
            target: r.varint_node("ping-req target")?,
        },
        kind::NACK => Message::Nack {
            seq: r.varint_u32("nack seq")?,
        },
        kind::GOSSIP => Message::Gossip,
        kind::SYNC_DIGEST => {
            let all = read_bool(&mut r, "sync all flag")?;
            let n = usize::from(r.u8()?);
            if n > DIGEST_BUCKETS {
                return Err(DecodeError::TooLong {
                    field: "digest",
                    len: n,
                    max: DIGEST_BUCKETS,
                });
            }
            if !all && n != DIGEST_BUCKETS {
                return Err(DecodeError::InvalidValue {
                    field: "digest bucket count",
                    value: n as u64,
                });
            }
            let digests = (0..n).map(|_| r.u64()).collect::<Result<_, _>>()?;
            Message::SyncDigest { all, digests }
        }
        kind::SYNC_ENTRIES => {
            let reply = match r.u8()? {
                0 => SyncReply::Nothing,
                1 => SyncReply::Buckets(r.u128()?),
                2 => SyncReply::All,
                kind => {
                    return Err(DecodeError::UnknownKind {
                        what: "reply",
                        kind,
                    });
                }
            };
            let n = usize::from(r.u16()?);
            if n > MAX_RECORDS_PER_DATAGRAM {
                return Err(DecodeError::TooLong {
                    field: "records",
                    len: n,
                    max: MAX_RECORDS_PER_DATAGRAM,
                });
            }
            let mut records = Vec::with_capacity(n);
            for _ in 0..n {
                records.push(MemberRecord {
                    node: NodeId::new(r.u64()?),
                    incarnation: Incarnation::new(r.u32()?),
                    state: state_from_byte(r.u8()?)?,
                    meta: read_version(&mut r)?,
                });
            }
            Message::SyncEntries { reply, records }
        }
        kind::META_PULL => Message::MetaPull {
            node: NodeId::new(r.u64()?),
            have: read_version(&mut r)?,
        },
        kind::META_PUSH => {
            let node = NodeId::new(r.u64()?);
            let base = if read_bool(&mut r, "delta flag")? {
                Some(read_version(&mut r)?)
            } else {
                None
            };
            let version = read_version(&mut r)?;
            let chunk = r.u8()?;
            let chunks = r.u8()?;
            if chunks == 0 || usize::from(chunks) > MAX_META_CHUNKS || chunk >= chunks {
                return Err(DecodeError::InvalidValue {
                    field: "metadata chunk",
                    value: u64::from(chunk) << 8 | u64::from(chunks),
                });
            }
            let n = usize::from(r.u16()?);
            // Each entry takes at least 2 + 4 + 1 bytes; refuse counts the datagram cannot hold.
            if n > r.remaining() / 7 {
                return Err(DecodeError::TooLong {
                    field: "metadata entries",
                    len: n,
                    max: r.remaining() / 7,
                });
            }
            let mut entries = Vec::with_capacity(n);
            for _ in 0..n {
                let key = read_key(&mut r)?;
                let seq = r.u32()?;
                let value = read_value(&mut r)?;
                entries.push(MetaEntry { key, seq, value });
            }
            Message::MetaPush {
                node,
                base,
                version,
                chunk,
                chunks,
                entries,
            }
        }
        kind => {
            return Err(DecodeError::UnknownKind {
                what: "message",
                kind,
            });
        }
    };
    let count = r.u8()?;
    let mut updates = Vec::with_capacity(usize::from(count));
    for _ in 0..count {
        updates.push(decode_update(&mut r)?);
    }
    if r.remaining() != 0 {
        return Err(DecodeError::TrailingBytes(r.remaining()));
    }
    Ok(Datagram {
        sender,
        message,
        updates,
    })
}

fn decode_update(r: &mut Reader<'_>) -> Result<Update, DecodeError> {
    Ok(match r.u8()? {
        kind::ALIVE => Update::Alive {
            node: NodeId::new(r.u64()?),
            incarnation: Incarnation::new(r.u32()?),
            meta: read_version(r)?,
        },
        kind::SUSPECT => Update::Suspect {
            node: NodeId::new(r.u64()?),
            incarnation: Incarnation::new(r.u32()?),
            from: NodeId::new(r.u64()?),
        },
        kind::DEAD => Update::Dead {
            node: NodeId::new(r.u64()?),
            incarnation: Incarnation::new(r.u32()?),
            from: NodeId::new(r.u64()?),
        },
        kind::LEFT => Update::Left {
            node: NodeId::new(r.u64()?),
            incarnation: Incarnation::new(r.u32()?),
        },
        kind::META => Update::Meta {
            node: NodeId::new(r.u64()?),
            version: read_version(r)?,
            key: read_key(r)?,
            value: read_value(r)?,
        },
        kind => {
            return Err(DecodeError::UnknownKind {
                what: "update",
                kind,
            });
        }
    })
}

fn read_bool(r: &mut Reader<'_>, field: &'static str) -> Result<bool, DecodeError> {
    match r.u8()? {
        0 => Ok(false),
        1 => Ok(true),
        v => Err(DecodeError::InvalidValue {
            field,
            value: v.into(),
        }),
    }
}

fn read_version(r: &mut Reader<'_>) -> Result<MetaVersion, DecodeError> {
    Ok(MetaVersion::new(r.u32()?, r.u32()?))
}

fn read_key(r: &mut Reader<'_>) -> Result<String, DecodeError> {
    let bytes = r.bytes16("metadata key", MAX_KEY_BYTES)?;
    if bytes.is_empty() {
        return Err(DecodeError::InvalidValue {
            field: "metadata key length",
            value: 0,
        });
    }
    core::str::from_utf8(bytes)
        .map(str::to_owned)
        .map_err(|_| DecodeError::InvalidKey)
}

fn read_value(r: &mut Reader<'_>) -> Result<Option<Vec<u8>>, DecodeError> {
    if read_bool(r, "value flag")? {
        Ok(Some(r.bytes16("metadata value", MAX_VALUE_BYTES)?.to_vec()))
    } else {
        Ok(None)
    }
}

#[cfg(test)]
mod tests;
