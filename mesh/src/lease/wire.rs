//! The leadership wire format: Raft messages, client requests and replies, and the replicated
//! commands inside log entries, all in MeshKit's own encoding.
//!
//! raft-rs's protobuf types never parse bytes from the network: this module writes and reads the
//! fields of `eraftpb::Message` we use (message type, addressing, terms and indices, entries,
//! snapshot metadata, reject hints, context, priority) field by field, big-endian, with a bound
//! on every variable-length field, and builds the protobuf structs from checked values. Local
//! message types (`MsgHup`, `MsgBeat`, `MsgUnreachable`, `MsgSnapStatus`, `MsgCheckQuorum`) and
//! `MsgPropose` (only the leader stamps and proposes commands) are refused.
//!
//! A datagram is a header (protocol version, kind, sender) and one body. Every datagram fits
//! [`MAX_DATAGRAM_BYTES`]: a Raft append that would not is cut to the entries that fit, which
//! Raft treats like the loss of the rest (the follower acknowledges less, the leader resends).
//! The one exception is `MsgSnapshot`, which carries a whole lease table (up to
//! [`MAX_SNAPSHOT_DATA_BYTES`]) to a follower that fell behind the leader's compacted log: it is
//! one message of up to [`MAX_MESSAGE_BYTES`], and the transport sends any payload larger than
//! a datagram on a stream (the simulator delivers it as one message, under the same loss and
//! partition rules). Decoding returns a [`DecodeError`] for any byte string it cannot read,
//! including a message over a datagram that is not a snapshot; it never panics.
//!
//! The lease table of a snapshot has its own versioned encoding (`encode_table`,
//! `decode_table`): canonical (scopes and sessions in key order, so equal tables give equal
//! bytes), bounded by the table's own limits, and checked field by field on the way in.

#![deny(clippy::unwrap_used)]

use raft::eraftpb::{
    ConfChangeType, ConfState, Entry, EntryType, Message, MessageType, Snapshot, SnapshotMetadata,
};

use super::config::{MAX_TTL, MIN_TTL};
use super::event::LeaseInfo;
use super::ids::{FencingToken, RequestId, Term};
use super::scope::{MAX_SCOPE_BYTES, Scope};
use super::table::{
    Body, Command, Lease, LeaseTable, MAX_LEASES, MAX_SESSIONS, Op, Outcome, Refusal,
};
use crate::id::NodeId;
use crate::time::{Duration, Instant};
use crate::wire::codec::{Reader, Writer};
pub use crate::wire::{DecodeError, MAX_DATAGRAM_BYTES};

/// The leadership protocol version this build speaks.
pub const LEASE_PROTOCOL_VERSION: u8 = 1;
/// Header: version, kind, sender.
pub const HEADER_BYTES: usize = 1 + 1 + 8;
/// Longest entry data: one encoded command, or raft's encoding of a conf change.
pub const MAX_ENTRY_DATA_BYTES: usize = 256;
/// Longest entry context (our encoding of a conf change).
pub const MAX_ENTRY_CONTEXT_BYTES: usize = 32;
/// Longest message context (ReadIndex request ids, campaign kinds).
pub const MAX_MESSAGE_CONTEXT_BYTES: usize = 64;
/// Ids in one conf-state list of snapshot metadata.
pub const MAX_CONF_IDS: usize = 16;
/// Longest snapshot data (an encoded lease table) carried in one message: 32 MiB, above the
/// largest table the limits allow (see the const assertion below).
pub const MAX_SNAPSHOT_DATA_BYTES: usize = 32 << 20;
/// Version of the lease table encoding inside snapshots.
pub const TABLE_ENCODING_VERSION: u8 = 1;
/// Entries one Raft message carries at most (a bound for the decoder; appends are cut to
/// [`MAX_DATAGRAM_BYTES`] long before).
pub const MAX_ENTRIES_PER_MESSAGE: usize = 256;

/// Fixed part of a Raft message body: type, to, 7 u64 fields, reject, priority, context length,
/// snapshot flag, entry count.
const RAFT_FIXED_BYTES: usize = 1 + 8 + 7 * 8 + 1 + 8 + 2 + 1 + 2;
const ENTRY_FIXED_BYTES: usize = 1 + 8 + 8 + 2 + 2;
const SNAPSHOT_MAX_BYTES: usize =
    8 + 8 + 4 * (1 + MAX_CONF_IDS * 8) + 1 + 4 + MAX_SNAPSHOT_DATA_BYTES;
/// The largest lease message: a `MsgSnapshot` with the largest table. Every other message fits
/// [`MAX_DATAGRAM_BYTES`].
pub const MAX_MESSAGE_BYTES: usize =
    HEADER_BYTES + RAFT_FIXED_BYTES + MAX_MESSAGE_CONTEXT_BYTES + SNAPSHOT_MAX_BYTES + 2;
/// Longest outcome remembered in a session: kind, refusal kind, three u64 fields.
const OUTCOME_MAX_BYTES: usize = 1 + 1 + 3 * 8;
/// The table header: version, applied index, clock term, clock, two counts.
const TABLE_HEADER_BYTES: usize = 1 + 8 + 8 + 8 + 4 + 4;
/// One lease: scope, holder, term, token, ttl, expiry.
const TABLE_LEASE_MAX_BYTES: usize = 2 + MAX_SCOPE_BYTES + 5 * 8;
/// One session: client, scope, request, index, outcome.
const TABLE_SESSION_MAX_BYTES: usize = 8 + 2 + MAX_SCOPE_BYTES + 8 + 8 + OUTCOME_MAX_BYTES;
/// A command: kind, at, proposer, client, request, op kind, scope, token, to, ttl.
const COMMAND_MAX_BYTES: usize = 1 + 8 + 8 + 8 + 8 + 1 + 2 + MAX_SCOPE_BYTES + 8 + 8 + 8;

const _: () = assert!(
    COMMAND_MAX_BYTES <= MAX_ENTRY_DATA_BYTES,
    "a command fits an entry"
);
const _: () = assert!(
    HEADER_BYTES
        + RAFT_FIXED_BYTES
        + MAX_MESSAGE_CONTEXT_BYTES
        + ENTRY_FIXED_BYTES
        + MAX_ENTRY_DATA_BYTES
        + MAX_ENTRY_CONTEXT_BYTES
        <= MAX_DATAGRAM_BYTES,
    "a Raft message with one entry of the largest size fits a datagram"
);
const _: () = assert!(
    TABLE_HEADER_BYTES
        + MAX_LEASES as usize * TABLE_LEASE_MAX_BYTES
        + MAX_SESSIONS * TABLE_SESSION_MAX_BYTES
        <= MAX_SNAPSHOT_DATA_BYTES,
    "the largest lease table fits a snapshot"
);

mod kind {
    pub(super) const RAFT: u8 = 1;
    pub(super) const REQUEST: u8 = 2;
    pub(super) const RESPONSE: u8 = 3;
    pub(super) const NOTICE: u8 = 4;

    pub(super) const ACQUIRE: u8 = 1;
    pub(super) const RENEW: u8 = 2;
    pub(super) const RELEASE: u8 = 3;
    pub(super) const TRANSFER: u8 = 4;
    pub(super) const QUERY: u8 = 5;

    pub(super) const CLOCK: u8 = 1;
    pub(super) const CLIENT: u8 = 2;

    pub(super) const GRANTED: u8 = 1;
    pub(super) const RELEASED: u8 = 2;
    pub(super) const TRANSFERRED: u8 = 3;
    pub(super) const REFUSED: u8 = 4;
    pub(super) const NOT_LEADER: u8 = 5;
    pub(super) const LEASE: u8 = 6;

    pub(super) const HELD: u8 = 1;
    pub(super) const NOT_HOLDER: u8 = 2;
    pub(super) const UNKNOWN_SCOPE: u8 = 3;
    pub(super) const STALE_TOKEN: u8 = 4;
    pub(super) const INVALID_TTL: u8 = 5;
    pub(super) const TABLE_FULL: u8 = 6;
    pub(super) const INVALID_TARGET: u8 = 7;
    pub(super) const OVERLOADED: u8 = 8;
}

/// Which state machine a datagram is for: the driver hands it to the node's
/// [`LeaseGroup`](super::LeaseGroup) or to its [`LeaseClient`](super::LeaseClient).
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Recipient {
    /// Raft traffic and client requests: the voter.
    Group,
    /// Replies and transfer notices: the client.
    Client,
}

/// Reads just the header and says which state machine takes the datagram.
pub fn recipient(bytes: &[u8]) -> Result<Recipient, DecodeError> {
    let mut r = Reader::new(bytes);
    let (kind, _) = read_header(&mut r)?;
    match kind {
        kind::RAFT | kind::REQUEST => Ok(Recipient::Group),
        kind::RESPONSE | kind::NOTICE => Ok(Recipient::Client),
        other => Err(DecodeError::UnknownKind {
            what: "message",
            kind: other,
        }),
    }
}

/// One decoded datagram body.
#[derive(Clone, Debug, PartialEq)]
pub(crate) enum LeaseMessage {
    Raft(Message),
    Request {
        request: RequestId,
        op: Op,
    },
    Response {
        request: RequestId,
        reply: Reply,
    },
    /// Tells a transfer's target that it was granted `scope`; it renews to learn a safe expiry.
    Notice {
        scope: Scope,
        token: FencingToken,
        term: Term,
        ttl: Duration,
    },
}

/// A voter's answer to a request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Reply {
    Outcome(Outcome),
    NotLeader { leader: Option<NodeId> },
    Lease(Option<LeaseInfo>),
}

fn read_scope(r: &mut Reader<'_>) -> Result<Scope, DecodeError> {
    let bytes = r.bytes16("scope", MAX_SCOPE_BYTES)?;
    core::str::from_utf8(bytes)
        .ok()
        .and_then(|s| Scope::new(s).ok())
        .ok_or(DecodeError::InvalidValue {
            field: "scope",
            value: bytes.len() as u64,
        })
}

fn read_header(r: &mut Reader<'_>) -> Result<(u8, NodeId), DecodeError> {
    let version = r.u8()?;
    if version != LEASE_PROTOCOL_VERSION {
        return Err(DecodeError::UnsupportedVersion {
            found: version,
            supported: LEASE_PROTOCOL_VERSION,
        });
    }
    let kind = r.u8()?;
    let sender = r.node()?;
    Ok((kind, sender))
}

// ---------------------------------------------------------------------------------------------
// Datagrams
// ---------------------------------------------------------------------------------------------

/// Writes one datagram into `buf` (cleared first). A Raft message whose entries would overflow
/// [`MAX_DATAGRAM_BYTES`] is cut to the entries that fit; returns how many were cut.
pub(crate) fn encode(sender: NodeId, message: &LeaseMessage, buf: &mut Vec<u8>) -> usize {
    buf.clear();
    let mut w = Writer::new(buf);
    w.u8(LEASE_PROTOCOL_VERSION);
    let mut cut = 0;
    match message {
        LeaseMessage::Raft(m) => {
            w.u8(kind::RAFT);
            w.u64(sender.get());
            cut = write_raft(&mut w, m);
        }
        LeaseMessage::Request { request, op } => {
            w.u8(kind::REQUEST);
            w.u64(sender.get());
            w.u64(request.get());
            write_op(&mut w, op);
        }
        LeaseMessage::Response { request, reply } => {
            w.u8(kind::RESPONSE);
            w.u64(sender.get());
            w.u64(request.get());
            write_reply(&mut w, reply);
        }
        LeaseMessage::Notice {
            scope,
            token,
            term,
            ttl,
        } => {
            w.u8(kind::NOTICE);
            w.u64(sender.get());
            w.bytes16(scope.as_str().as_bytes());
            w.u64(token.get());
            w.u64(term.get());
            w.duration(*ttl);
        }
    }
    debug_assert!(
        buf.len() <= MAX_DATAGRAM_BYTES
            || (buf.len() <= MAX_MESSAGE_BYTES && carries_snapshot(message)),
        "encoded lease message over its bound"
    );
    cut
}

/// Whether `message` is a Raft message with a snapshot (the only kind over a datagram).
pub(crate) fn carries_snapshot(message: &LeaseMessage) -> bool {
    matches!(message, LeaseMessage::Raft(m) if m.has_snapshot())
}

/// Reads one datagram: its sender and message.
/// Decodes a message from `from` (as the transport authenticated it), refusing one that claims
/// another sender.
pub(crate) fn decode_from(
    from: NodeId,
    bytes: &[u8],
) -> Result<LeaseMessage, super::error::MessageError> {
    let (sender, message) = decode(bytes)?;
    if sender != from {
        return Err(super::error::MessageError::SenderMismatch {
            claimed: sender,
            actual: from,
        });
    }
    Ok(message)
}

pub(crate) fn decode(bytes: &[u8]) -> Result<(NodeId, LeaseMessage), DecodeError> {
    if bytes.len() > MAX_MESSAGE_BYTES {
        return Err(DecodeError::Oversized {
            len: bytes.len(),
            max: MAX_MESSAGE_BYTES,
        });
    }
    let mut r = Reader::new(bytes);
    let (kind, sender) = read_header(&mut r)?;
    let message = match kind {
        kind::RAFT => LeaseMessage::Raft(read_raft(&mut r, sender)?),
        kind::REQUEST => LeaseMessage::Request {
            request: RequestId::new(r.u64()?),
            op: read_op(&mut r)?,
        },
        kind::RESPONSE => LeaseMessage::Response {
            request: RequestId::new(r.u64()?),
            reply: read_reply(&mut r)?,
        },
        kind::NOTICE => LeaseMessage::Notice {
            scope: read_scope(&mut r)?,
            token: FencingToken::new(r.u64()?),
            term: Term::new(r.u64()?),
            ttl: r.duration()?,
        },
        other => {
            return Err(DecodeError::UnknownKind {
                what: "message",
                kind: other,
            });
        }
    };
    r.finish()?;
    if bytes.len() > MAX_DATAGRAM_BYTES && !carries_snapshot(&message) {
        return Err(DecodeError::Oversized {
            len: bytes.len(),
            max: MAX_DATAGRAM_BYTES,
        });
    }
    Ok((sender, message))
}

// ---------------------------------------------------------------------------------------------
// Raft messages
// ---------------------------------------------------------------------------------------------

/// The wire code of a message type that may cross the network; `None` for local ones.
fn message_type_code(t: MessageType) -> Option<u8> {
    use MessageType as T;
    Some(match t {
        T::MsgAppend => 3,
        T::MsgAppendResponse => 4,
        T::MsgRequestVote => 5,
        T::MsgRequestVoteResponse => 6,
        T::MsgSnapshot => 7,
        T::MsgHeartbeat => 8,
        T::MsgHeartbeatResponse => 9,
        T::MsgTransferLeader => 13,
        T::MsgTimeoutNow => 14,
        T::MsgReadIndex => 15,
        T::MsgReadIndexResp => 16,
        T::MsgRequestPreVote => 17,
        T::MsgRequestPreVoteResponse => 18,
        T::MsgHup
        | T::MsgBeat
        | T::MsgPropose
        | T::MsgUnreachable
        | T::MsgSnapStatus
        | T::MsgCheckQuorum => return None,
    })
}

fn message_type_from_code(code: u8) -> Result<MessageType, DecodeError> {
    use MessageType as T;
    Ok(match code {
        3 => T::MsgAppend,
        4 => T::MsgAppendResponse,
        5 => T::MsgRequestVote,
        6 => T::MsgRequestVoteResponse,
        7 => T::MsgSnapshot,
        8 => T::MsgHeartbeat,
        9 => T::MsgHeartbeatResponse,
        13 => T::MsgTransferLeader,
        14 => T::MsgTimeoutNow,
        15 => T::MsgReadIndex,
        16 => T::MsgReadIndexResp,
        17 => T::MsgRequestPreVote,
        18 => T::MsgRequestPreVoteResponse,
        kind => {
            return Err(DecodeError::UnknownKind {
                what: "raft message",
                kind,
            });
        }
    })
}

fn entry_type_code(t: EntryType) -> u8 {
    match t {
        EntryType::EntryNormal => 0,
        EntryType::EntryConfChange => 1,
        EntryType::EntryConfChangeV2 => 2,
    }
}

fn entry_type_from_code(code: u8) -> Result<EntryType, DecodeError> {
    Ok(match code {
        0 => EntryType::EntryNormal,
        1 => EntryType::EntryConfChange,
        2 => EntryType::EntryConfChangeV2,
        kind => {
            return Err(DecodeError::UnknownKind {
                what: "entry",
                kind,
            });
        }
    })
}

/// Whether `m` can be sent at all: a network message type with fields within bounds. Raft only
/// produces such messages from our own proposals; the group checks before queueing.
pub(crate) fn is_sendable(m: &Message) -> bool {
    message_type_code(m.get_msg_type()).is_some()
        && m.context.len() <= MAX_MESSAGE_CONTEXT_BYTES
        && m.get_entries().iter().all(|e| {
            e.data.len() <= MAX_ENTRY_DATA_BYTES && e.context.len() <= MAX_ENTRY_CONTEXT_BYTES
        })
        && (!m.has_snapshot() || {
            let s = m.get_snapshot();
            let cs = s.get_metadata().get_conf_state();
            s.data.len() <= MAX_SNAPSHOT_DATA_BYTES
                && [
                    &cs.voters,
                    &cs.learners,
                    &cs.voters_outgoing,
                    &cs.learners_next,
                ]
                .iter()
                .all(|l| l.len() <= MAX_CONF_IDS)
        })
}

fn write_raft(w: &mut Writer<'_>, m: &Message) -> usize {
    let code = message_type_code(m.get_msg_type());
    debug_assert!(code.is_some(), "local raft message queued for the network");
    w.u8(code.unwrap_or(0));
    w.u64(m.to);
    for v in [
        m.term,
        m.log_term,
        m.index,
        m.commit,
        m.commit_term,
        m.reject_hint,
        m.request_snapshot,
    ] {
        w.u64(v);
    }
    w.bool(m.reject);
    w.u64(m.priority as u64);
    w.bytes16(&m.context);
    if m.has_snapshot() {
        w.u8(1);
        let s = m.get_snapshot();
        let meta = s.get_metadata();
        w.u64(meta.index);
        w.u64(meta.term);
        let cs = meta.get_conf_state();
        for list in [
            &cs.voters,
            &cs.learners,
            &cs.voters_outgoing,
            &cs.learners_next,
        ] {
            w.u8(list.len() as u8);
            for id in list {
                w.u64(*id);
            }
        }
        w.bool(cs.auto_leave);
        w.bytes32(&s.data);
    } else {
        w.u8(0);
    }
    let count_at = w.buf.len();
    w.u16(0);
    let mut count: u16 = 0;
    let entries = m.get_entries();
    for e in entries {
        let before = w.buf.len();
        w.u8(entry_type_code(e.get_entry_type()));
        w.u64(e.term);
        w.u64(e.index);
        w.bytes16(&e.data);
        w.bytes16(&e.context);
        // Keep at least one entry: one always fits (see the const assertions above).
        if w.buf.len() > MAX_DATAGRAM_BYTES && count > 0 {
            w.buf.truncate(before);
            break;
        }
        count += 1;
    }
    w.buf[count_at..count_at + 2].copy_from_slice(&count.to_be_bytes());
    entries.len() - usize::from(count)
}

fn read_raft(r: &mut Reader<'_>, from: NodeId) -> Result<Message, DecodeError> {
    let mut m = Message::default();
    m.set_msg_type(message_type_from_code(r.u8()?)?);
    m.from = from.get();
    m.to = r.u64()?;
    m.term = r.u64()?;
    m.log_term = r.u64()?;
    m.index = r.u64()?;
    m.commit = r.u64()?;
    m.commit_term = r.u64()?;
    m.reject_hint = r.u64()?;
    m.request_snapshot = r.u64()?;
    m.reject = r.bool("reject")?;
    m.priority = r.u64()? as i64;
    m.context = r
        .bytes16("message context", MAX_MESSAGE_CONTEXT_BYTES)?
        .to_vec()
        .into();
    if r.bool("snapshot flag")? {
        let mut meta = SnapshotMetadata {
            index: r.u64()?,
            term: r.u64()?,
            ..SnapshotMetadata::default()
        };
        let mut cs = ConfState::default();
        for list in [
            &mut cs.voters,
            &mut cs.learners,
            &mut cs.voters_outgoing,
            &mut cs.learners_next,
        ] {
            let n = usize::from(r.u8()?);
            if n > MAX_CONF_IDS {
                return Err(DecodeError::TooLong {
                    field: "conf state",
                    len: n,
                    max: MAX_CONF_IDS,
                });
            }
            for _ in 0..n {
                list.push(r.u64()?);
            }
        }
        cs.auto_leave = r.bool("auto_leave")?;
        meta.set_conf_state(cs);
        let mut snapshot = Snapshot::default();
        snapshot.set_metadata(meta);
        snapshot.data = r
            .bytes32("snapshot data", MAX_SNAPSHOT_DATA_BYTES)?
            .to_vec()
            .into();
        m.set_snapshot(snapshot);
    }
    let count = usize::from(r.u16()?);
    if count > MAX_ENTRIES_PER_MESSAGE {
        return Err(DecodeError::TooLong {
            field: "entries",
            len: count,
            max: MAX_ENTRIES_PER_MESSAGE,
        });
    }
    let mut entries = Vec::with_capacity(count);
    for _ in 0..count {
        let mut e = Entry::default();
        e.set_entry_type(entry_type_from_code(r.u8()?)?);
        e.term = r.u64()?;
        e.index = r.u64()?;
        e.data = r
            .bytes16("entry data", MAX_ENTRY_DATA_BYTES)?
            .to_vec()
            .into();
        e.context = r
            .bytes16("entry context", MAX_ENTRY_CONTEXT_BYTES)?
            .to_vec()
            .into();
        entries.push(e);
    }
    m.set_entries(entries.into());
    Ok(m)
}

// ---------------------------------------------------------------------------------------------
// Requests and replies
// ---------------------------------------------------------------------------------------------

fn write_op(w: &mut Writer<'_>, op: &Op) {
    match op {
        Op::Acquire { scope, ttl } => {
            w.u8(kind::ACQUIRE);
            w.bytes16(scope.as_str().as_bytes());
            w.duration(*ttl);
        }
        Op::Renew { scope, token, ttl } => {
            w.u8(kind::RENEW);
            w.bytes16(scope.as_str().as_bytes());
            w.u64(token.get());
            w.duration(*ttl);
        }
        Op::Release { scope, token } => {
            w.u8(kind::RELEASE);
            w.bytes16(scope.as_str().as_bytes());
            w.u64(token.get());
        }
        Op::Transfer {
            scope,
            token,
            to,
            ttl,
        } => {
            w.u8(kind::TRANSFER);
            w.bytes16(scope.as_str().as_bytes());
            w.u64(token.get());
            w.u64(to.get());
            w.duration(*ttl);
        }
        Op::Query { scope } => {
            w.u8(kind::QUERY);
            w.bytes16(scope.as_str().as_bytes());
        }
    }
}

fn read_op(r: &mut Reader<'_>) -> Result<Op, DecodeError> {
    Ok(match r.u8()? {
        kind::ACQUIRE => Op::Acquire {
            scope: read_scope(r)?,
            ttl: r.duration()?,
        },
        kind::RENEW => Op::Renew {
            scope: read_scope(r)?,
            token: FencingToken::new(r.u64()?),
            ttl: r.duration()?,
        },
        kind::RELEASE => Op::Release {
            scope: read_scope(r)?,
            token: FencingToken::new(r.u64()?),
        },
        kind::TRANSFER => Op::Transfer {
            scope: read_scope(r)?,
            token: FencingToken::new(r.u64()?),
            to: r.node()?,
            ttl: r.duration()?,
        },
        kind::QUERY => Op::Query {
            scope: read_scope(r)?,
        },
        kind => return Err(DecodeError::UnknownKind { what: "op", kind }),
    })
}

fn write_reply(w: &mut Writer<'_>, reply: &Reply) {
    match reply {
        Reply::Outcome(Outcome::Granted { token, term, ttl }) => {
            w.u8(kind::GRANTED);
            w.u64(token.get());
            w.u64(term.get());
            w.duration(*ttl);
        }
        Reply::Outcome(Outcome::Released) => w.u8(kind::RELEASED),
        Reply::Outcome(Outcome::Transferred { to, token }) => {
            w.u8(kind::TRANSFERRED);
            w.u64(to.get());
            w.u64(token.get());
        }
        Reply::Outcome(Outcome::Refused(refusal)) => {
            w.u8(kind::REFUSED);
            write_refusal(w, refusal);
        }
        Reply::NotLeader { leader } => {
            w.u8(kind::NOT_LEADER);
            w.u64(leader.map_or(0, NodeId::get));
        }
        Reply::Lease(lease) => {
            w.u8(kind::LEASE);
            match lease {
                None => w.u8(0),
                Some(l) => {
                    w.u8(1);
                    w.u64(l.holder.get());
                    w.u64(l.term.get());
                    w.u64(l.token.get());
                    w.duration(l.expires_in);
                }
            }
        }
    }
}

fn read_reply(r: &mut Reader<'_>) -> Result<Reply, DecodeError> {
    Ok(match r.u8()? {
        kind::GRANTED => Reply::Outcome(Outcome::Granted {
            token: FencingToken::new(r.u64()?),
            term: Term::new(r.u64()?),
            ttl: r.duration()?,
        }),
        kind::RELEASED => Reply::Outcome(Outcome::Released),
        kind::TRANSFERRED => Reply::Outcome(Outcome::Transferred {
            to: r.node()?,
            token: FencingToken::new(r.u64()?),
        }),
        kind::REFUSED => Reply::Outcome(Outcome::Refused(read_refusal(r)?)),
        kind::NOT_LEADER => {
            let raw = r.u64()?;
            Reply::NotLeader {
                leader: (raw != 0).then_some(NodeId::new(raw)),
            }
        }
        kind::LEASE => Reply::Lease(if r.bool("lease flag")? {
            Some(LeaseInfo {
                holder: r.node()?,
                term: Term::new(r.u64()?),
                token: FencingToken::new(r.u64()?),
                expires_in: r.duration()?,
            })
        } else {
            None
        }),
        kind => {
            return Err(DecodeError::UnknownKind {
                what: "reply",
                kind,
            });
        }
    })
}

fn write_refusal(w: &mut Writer<'_>, refusal: &Refusal) {
    match refusal {
        Refusal::Held {
            holder,
            token,
            expires_in,
        } => {
            w.u8(kind::HELD);
            w.u64(holder.get());
            w.u64(token.get());
            w.duration(*expires_in);
        }
        Refusal::NotHolder { holder } => {
            w.u8(kind::NOT_HOLDER);
            w.u64(holder.get());
        }
        Refusal::UnknownScope => w.u8(kind::UNKNOWN_SCOPE),
        Refusal::StaleToken { current } => {
            w.u8(kind::STALE_TOKEN);
            w.u64(current.get());
        }
        Refusal::InvalidTtl => w.u8(kind::INVALID_TTL),
        Refusal::TableFull => w.u8(kind::TABLE_FULL),
        Refusal::InvalidTarget => w.u8(kind::INVALID_TARGET),
        Refusal::Overloaded => w.u8(kind::OVERLOADED),
    }
}

fn read_refusal(r: &mut Reader<'_>) -> Result<Refusal, DecodeError> {
    Ok(match r.u8()? {
        kind::HELD => Refusal::Held {
            holder: r.node()?,
            token: FencingToken::new(r.u64()?),
            expires_in: r.duration()?,
        },
        kind::NOT_HOLDER => Refusal::NotHolder { holder: r.node()? },
        kind::UNKNOWN_SCOPE => Refusal::UnknownScope,
        kind::STALE_TOKEN => Refusal::StaleToken {
            current: FencingToken::new(r.u64()?),
        },
        kind::INVALID_TTL => Refusal::InvalidTtl,
        kind::TABLE_FULL => Refusal::TableFull,
        kind::INVALID_TARGET => Refusal::InvalidTarget,
        kind::OVERLOADED => Refusal::Overloaded,
        kind => {
            return Err(DecodeError::UnknownKind {
                what: "refusal",
                kind,
            });
        }
    })
}

// ---------------------------------------------------------------------------------------------
// Replicated commands (entry data) and conf changes (entry context)
// ---------------------------------------------------------------------------------------------

/// Encodes a command as entry data.
pub(crate) fn encode_command(c: &Command) -> Vec<u8> {
    let mut buf = Vec::with_capacity(64);
    let mut w = Writer::new(&mut buf);
    match &c.body {
        Body::Clock => w.u8(kind::CLOCK),
        Body::Client { .. } => w.u8(kind::CLIENT),
    }
    w.u64(c.at.as_nanos());
    w.u64(c.proposer.get());
    if let Body::Client {
        client,
        request,
        op,
    } = &c.body
    {
        w.u64(client.get());
        w.u64(request.get());
        write_op(&mut w, op);
    }
    debug_assert!(
        buf.len() <= MAX_ENTRY_DATA_BYTES,
        "command over MAX_ENTRY_DATA_BYTES"
    );
    buf
}

/// Decodes entry data written by [`encode_command`].
pub(crate) fn decode_command(bytes: &[u8]) -> Result<Command, DecodeError> {
    let mut r = Reader::new(bytes);
    let kind = r.u8()?;
    let at = Instant::from_nanos(r.u64()?);
    let proposer = r.node()?;
    let body = match kind {
        kind::CLOCK => Body::Clock,
        kind::CLIENT => Body::Client {
            client: r.node()?,
            request: RequestId::new(r.u64()?),
            op: read_op(&mut r)?,
        },
        kind => {
            return Err(DecodeError::UnknownKind {
                what: "command",
                kind,
            });
        }
    };
    r.finish()?;
    Ok(Command { at, proposer, body })
}

/// A single-voter membership change, as carried in a conf-change entry's context.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct VoterChange {
    pub(crate) add: bool,
    pub(crate) node: NodeId,
}

impl VoterChange {
    pub(crate) fn change_type(self) -> ConfChangeType {
        if self.add {
            ConfChangeType::AddNode
        } else {
            ConfChangeType::RemoveNode
        }
    }
}

pub(crate) fn encode_voter_change(c: VoterChange) -> Vec<u8> {
    let mut buf = Vec::with_capacity(9);
    let mut w = Writer::new(&mut buf);
    w.bool(c.add);
    w.u64(c.node.get());
    buf
}

pub(crate) fn decode_voter_change(bytes: &[u8]) -> Result<VoterChange, DecodeError> {
    let mut r = Reader::new(bytes);
    let add = r.bool("voter change")?;
    let node = r.node()?;
    r.finish()?;
    if node.get() == 0 {
        return Err(DecodeError::InvalidValue {
            field: "voter",
            value: 0,
        });
    }
    Ok(VoterChange { add, node })
}

// ---------------------------------------------------------------------------------------------
// Snapshots: the lease table, and the configuration a snapshot may carry
// ---------------------------------------------------------------------------------------------

/// Encodes `table` as applied up to log index `applied`, as snapshot data.
///
/// Layout (version [`TABLE_ENCODING_VERSION`]): version u8, applied u64, clock term u64, clock
/// u64 (ns), lease count u32, then per lease in scope order: scope, holder, term, token, ttl,
/// expiry; session count u32, then per session in `(client, scope)` order: client, scope,
/// request, deciding index, outcome (as a reply encodes it).
pub(crate) fn encode_table(table: &LeaseTable, applied: u64) -> Vec<u8> {
    let mut buf = Vec::with_capacity(TABLE_HEADER_BYTES + table.len() * 64);
    let mut w = Writer::new(&mut buf);
    w.u8(TABLE_ENCODING_VERSION);
    w.u64(applied);
    w.u64(table.clock_term().get());
    w.u64(table.clock().as_nanos());
    w.u32(table.len() as u32);
    for (scope, l) in table.iter() {
        w.bytes16(scope.as_str().as_bytes());
        w.u64(l.holder.get());
        w.u64(l.term.get());
        w.u64(l.token.get());
        w.duration(l.ttl);
        w.u64(l.expires_at.as_nanos());
    }
    let count_at = w.buf.len();
    w.u32(0);
    let mut count: u32 = 0;
    for (client, scope, request, outcome, index) in table.sessions() {
        w.u64(client.get());
        w.bytes16(scope.as_str().as_bytes());
        w.u64(request.get());
        w.u64(index);
        write_reply(&mut w, &Reply::Outcome(outcome.clone()));
        count += 1;
    }
    w.buf[count_at..count_at + 4].copy_from_slice(&count.to_be_bytes());
    debug_assert!(
        buf.len() <= MAX_SNAPSHOT_DATA_BYTES,
        "an encoded lease table over MAX_SNAPSHOT_DATA_BYTES"
    );
    buf
}

/// Decodes snapshot data written by [`encode_table`]: the applied index and the table. Refuses
/// anything the table itself could not hold (counts over its limits, scopes or sessions out of
/// order or repeated, TTLs out of range, tokens or indices past the applied index).
pub(crate) fn decode_table(bytes: &[u8]) -> Result<(u64, LeaseTable), DecodeError> {
    if bytes.len() > MAX_SNAPSHOT_DATA_BYTES {
        return Err(DecodeError::Oversized {
            len: bytes.len(),
            max: MAX_SNAPSHOT_DATA_BYTES,
        });
    }
    let mut r = Reader::new(bytes);
    let version = r.u8()?;
    if version != TABLE_ENCODING_VERSION {
        return Err(DecodeError::UnsupportedVersion {
            found: version,
            supported: TABLE_ENCODING_VERSION,
        });
    }
    let applied = r.u64()?;
    let clock_term = Term::new(r.u64()?);
    let clock = Instant::from_nanos(r.u64()?);
    let count = r.u32()? as usize;
    if count > MAX_LEASES as usize {
        return Err(DecodeError::TooLong {
            field: "table leases",
            len: count,
            max: MAX_LEASES as usize,
        });
    }
    let mut leases = alloc::collections::BTreeMap::new();
    let mut last: Option<Scope> = None;
    for _ in 0..count {
        let scope = read_scope(&mut r)?;
        let lease = Lease {
            holder: r.node()?,
            term: Term::new(r.u64()?),
            token: FencingToken::new(r.u64()?),
            ttl: r.duration()?,
            expires_at: Instant::from_nanos(r.u64()?),
        };
        if last.as_ref().is_some_and(|l| *l >= scope) {
            return Err(DecodeError::InvalidValue {
                field: "table scope order",
                value: scope.as_str().len() as u64,
            });
        }
        check_table_values(&lease, applied, clock_term)?;
        last = Some(scope.clone());
        leases.insert(scope, lease);
    }
    let count = r.u32()? as usize;
    if count > MAX_SESSIONS {
        return Err(DecodeError::TooLong {
            field: "table sessions",
            len: count,
            max: MAX_SESSIONS,
        });
    }
    let mut sessions = Vec::with_capacity(count.min(r.remaining() / 32));
    let mut last: Option<(NodeId, Scope)> = None;
    for _ in 0..count {
        let client = r.node()?;
        let scope = read_scope(&mut r)?;
        let request = RequestId::new(r.u64()?);
        let index = r.u64()?;
        let Reply::Outcome(outcome) = read_reply(&mut r)? else {
            return Err(DecodeError::InvalidValue {
                field: "session outcome",
                value: 0,
            });
        };
        if index > applied {
            return Err(DecodeError::InvalidValue {
                field: "session index",
                value: index,
            });
        }
        let key = (client, scope);
        if last.as_ref().is_some_and(|l| *l >= key) {
            return Err(DecodeError::InvalidValue {
                field: "table session order",
                value: client.get(),
            });
        }
        last = Some(key.clone());
        sessions.push((key.0, key.1, request, outcome, index));
    }
    r.finish()?;
    Ok((
        applied,
        LeaseTable::from_parts(clock_term, clock, leases, sessions),
    ))
}

fn check_table_values(lease: &Lease, applied: u64, clock_term: Term) -> Result<(), DecodeError> {
    if !(MIN_TTL..=MAX_TTL).contains(&lease.ttl) {
        return Err(DecodeError::InvalidValue {
            field: "lease ttl",
            value: u64::try_from(lease.ttl.as_nanos()).unwrap_or(u64::MAX),
        });
    }
    if lease.token.get() == 0 || lease.token.get() > applied {
        return Err(DecodeError::InvalidValue {
            field: "lease token",
            value: lease.token.get(),
        });
    }
    if lease.term > clock_term {
        return Err(DecodeError::InvalidValue {
            field: "lease term",
            value: lease.term.get(),
        });
    }
    Ok(())
}

/// Checks a snapshot's configuration before raft-rs sees it (raft-rs aborts on one it cannot
/// restore): 1 to [`MAX_VOTERS`](super::MAX_VOTERS) distinct non-zero voters and nothing else
/// (this group never uses learners or joint consensus).
pub(crate) fn check_conf_state(cs: &ConfState) -> Result<(), DecodeError> {
    let voters = &cs.voters;
    let distinct = voters
        .iter()
        .collect::<alloc::collections::BTreeSet<_>>()
        .len();
    if voters.is_empty()
        || voters.len() > super::MAX_VOTERS
        || distinct != voters.len()
        || voters.contains(&0)
    {
        return Err(DecodeError::InvalidValue {
            field: "snapshot voters",
            value: voters.len() as u64,
        });
    }
    if !cs.learners.is_empty()
        || !cs.voters_outgoing.is_empty()
        || !cs.learners_next.is_empty()
        || cs.auto_leave
    {
        return Err(DecodeError::InvalidValue {
            field: "snapshot configuration",
            value: (cs.learners.len() + cs.voters_outgoing.len() + cs.learners_next.len()) as u64,
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests;

// Test support for adversarial tests (see its module doc): public but hidden.
mod forge;
#[doc(hidden)]
pub use self::forge::{ForgedRaft, encode_forged_raft};
