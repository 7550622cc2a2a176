//! The leadership module's errors: what a lease operation, a group command or a received message
//! can fail with.

use thiserror::Error;

use super::ids::FencingToken;
use super::scope::Scope;
use crate::id::NodeId;
use crate::time::Duration;
use crate::wire::DecodeError;

/// Why a lease operation did not succeed.
///
/// Variants decided by the voter group (`Held`, `NotHolder`, `UnknownScope`, `StaleToken`,
/// `TableFull`, `InvalidTarget`) come from applying a committed log entry: the lease table is
/// unchanged by the refused operation. The others are decided locally by the client before or
/// instead of an answer.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum LeaseError {
    /// Another node holds the scope. Retry after `expires_in` at the earliest.
    #[error("{scope} is held by {holder} ({token}) for another {expires_in:?} at least")]
    Held {
        /// The scope asked for.
        scope: Scope,
        /// Its holder.
        holder: NodeId,
        /// The holder's fencing token.
        token: FencingToken,
        /// Time left on the holder's lease when the request was applied, by the leader's clock.
        expires_in: Duration,
    },
    /// The scope is held, but not by the requester.
    #[error("{scope} is held by {holder}, not by this node")]
    NotHolder {
        /// The scope.
        scope: Scope,
        /// Its actual holder.
        holder: NodeId,
    },
    /// No lease exists on the scope (never granted, released, or expired).
    #[error("no lease exists on {scope}")]
    UnknownScope {
        /// The scope.
        scope: Scope,
    },
    /// The requester holds the scope under a newer grant than the token it presented.
    #[error("{scope}: token {presented} is stale, the current grant is {current}")]
    StaleToken {
        /// The scope.
        scope: Scope,
        /// The token the request carried.
        presented: FencingToken,
        /// The current grant's token.
        current: FencingToken,
    },
    /// No voter answered within `attempts` tries: no leader with a quorum was reachable. The
    /// outcome is unknown; a lease this node held stays valid only until its local expiry.
    #[error("{scope}: no quorum answered after {attempts} attempts")]
    NoQuorum {
        /// The scope.
        scope: Scope,
        /// Attempts made.
        attempts: u32,
    },
    /// A TTL outside the configured range (caller misuse; nothing was sent).
    #[error("ttl {ttl:?} is out of range: allowed {min:?}..={max:?}")]
    InvalidTtl {
        /// The TTL asked for.
        ttl: Duration,
        /// Shortest allowed.
        min: Duration,
        /// Longest allowed.
        max: Duration,
    },
    /// The lease table is full.
    #[error("the lease table holds its maximum of {max} leases")]
    TableFull {
        /// The bound.
        max: u32,
    },
    /// A transfer to the current holder itself, or to node id 0.
    #[error("{scope} cannot be transferred to {to}")]
    InvalidTarget {
        /// The scope.
        scope: Scope,
        /// The target named.
        to: NodeId,
    },
    /// This node does not hold the scope (caller misuse of renew, release or transfer; nothing
    /// was sent).
    #[error("this node holds no lease on {scope}")]
    NotHeld {
        /// The scope.
        scope: Scope,
    },
    /// A request on the same scope is still in flight on this client; one at a time per scope
    /// keeps the voters' de-duplication of retries exact (caller misuse; nothing was sent).
    #[error("{request} on {scope} is still in flight")]
    InFlight {
        /// The scope.
        scope: Scope,
        /// The request in flight.
        request: super::ids::RequestId,
    },
    /// Too many requests are in flight (on this client, or at the leader); nothing was done.
    #[error("too many requests in flight: at most {max}")]
    Overloaded {
        /// The bound.
        max: u32,
    },
}

/// Why a voter-group command (construction, membership change) was refused. Nothing changed.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum GroupError {
    /// A voter set that is empty, too large, or holds node id 0 (Raft reserves it).
    #[error("a voter group needs 1..={max} distinct voters with non-zero ids, got {len}")]
    VoterSet {
        /// Voters given.
        len: usize,
        /// [`MAX_VOTERS`](super::MAX_VOTERS).
        max: usize,
    },
    /// The local node is not in the voter set it was bootstrapped with.
    #[error("{id} is not in its own voter set")]
    NotAVoter {
        /// The local node.
        id: NodeId,
    },
    /// Membership changes are proposed by the leader only.
    #[error("this voter is not the leader (leader: {leader:?})")]
    NotLeader {
        /// The leader, if known.
        leader: Option<NodeId>,
    },
    /// A membership change is still being committed; changes go one at a time.
    #[error("a membership change is already in progress")]
    ChangeInProgress,
    /// The node is already a voter (add) or not a voter (remove).
    #[error("{id} is {}", if *.is_voter { "already a voter" } else { "not a voter" })]
    Membership {
        /// The node named.
        id: NodeId,
        /// Whether it is a voter now.
        is_voter: bool,
    },
}

/// Why a received message was refused. The receiver's state is unchanged.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum MessageError {
    /// Undecodable bytes (a peer or network fault).
    #[error(transparent)]
    Decode(#[from] DecodeError),
    /// The message claims a sender other than the one the transport authenticated.
    #[error("message claims sender {claimed} but came from {actual}")]
    SenderMismatch {
        /// The sender written in the message.
        claimed: NodeId,
        /// The sender the driver saw.
        actual: NodeId,
    },
    /// A Raft message addressed to another node, or a message kind this state machine does not
    /// take (a client reply given to a voter, or a Raft message given to a client): a driver
    /// routing fault (see [`recipient`](super::recipient)).
    #[error("message misrouted: meant for {to:?}")]
    Misrouted {
        /// The addressee, for Raft messages.
        to: Option<NodeId>,
    },
    /// A lease answer (a response to a request) from a node that is not one of the client's
    /// voters: only voters answer requests. A peer fault (a forgery); the client's state is
    /// unchanged.
    #[error("lease answer from {from}, which is not a voter")]
    NotVoter {
        /// The sender, as the transport authenticated it.
        from: NodeId,
    },
    /// A Raft message that raft-rs never saw: its sender may not speak Raft to this voter, or
    /// one of its fields breaks an invariant raft-rs relies on (it would panic, or let a peer
    /// steer the group). A peer fault (a non-voter, a forged or corrupted message); the voter's
    /// state is unchanged.
    #[error("raft message from {from} refused: {reason}")]
    RaftRefused {
        /// The sender, as the transport authenticated it.
        from: NodeId,
        /// What is wrong with the message.
        reason: RaftRefusal,
    },
}

/// Why a Raft message was refused before raft-rs stepped it (see
/// [`MessageError::RaftRefused`] and `docs/security.md`, "Raft and the lease wire"). Each rule
/// holds for every message an honest voter running this build sends; [`label`](Self::label)
/// names the rule for metrics.
#[derive(Debug, Error, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum RaftRefusal {
    /// The sender is not a voter of the receiver's current configuration (or it is the
    /// receiver itself): only voters speak Raft.
    #[error("the sender is not a voter")]
    NotVoter,
    /// A message type this group's voters never send to a peer (`MsgTransferLeader`), or
    /// `MsgTimeoutNow` from anyone but the leader of the receiver's current term.
    #[error("{what} is not accepted from this sender")]
    MessageType {
        /// The message type.
        what: &'static str,
    },
    /// A term raft-rs would misread: 0 (raft-rs takes a message of term 0 as a local one,
    /// except `MsgReadIndex`, which must carry 0), a term above
    /// [`MAX_RAFT_TERM`](super::MAX_RAFT_TERM), a log term above the message's term, or an
    /// append whose log term is 0 at an index other than 0 (raft-rs reads the term of an index
    /// beyond its log as 0, so such an append "matches" and commits past the log).
    #[error("term {term} is invalid for this message")]
    Term {
        /// The offending term.
        term: u64,
    },
    /// A heartbeat's commit index beyond the receiver's last log index (raft-rs panics on it:
    /// a leader never sends more than the follower acknowledged).
    #[error("commit {commit} is beyond the last log index {last_index}")]
    Commit {
        /// The commit index the message carries.
        commit: u64,
        /// The receiver's last log index.
        last_index: u64,
    },
    /// An index beyond the receiver's log in an append response (the follower acknowledges
    /// more than the leader sent), any index above [`MAX_RAFT_INDEX`](super::MAX_RAFT_INDEX)
    /// (raft-rs adds to indices without checking), or a snapshot request (this group never
    /// asks for one).
    #[error("index {index} is beyond the last log index {last_index}")]
    Index {
        /// The offending index.
        index: u64,
        /// The receiver's last log index.
        last_index: u64,
    },
    /// Entries that do not follow each other from the append's `index + 1`, whose terms are 0,
    /// go down or exceed the message's term, of a type this group never writes
    /// (`EntryConfChangeV2`), or entries on a message type that carries none (or not exactly
    /// the one entry a ReadIndex carries).
    #[error("entries are inconsistent at position {position}")]
    Entries {
        /// The position of the first offending entry (the count, for a wrong count).
        position: usize,
    },
    /// Snapshot metadata with a term of 0 or above the message's term, or a snapshot on a
    /// message type that carries none.
    #[error("snapshot metadata is invalid (term {term})")]
    Snapshot {
        /// The snapshot's term.
        term: u64,
    },
    /// A election priority other than 0: this group gives every voter the same priority, and
    /// raft-rs refuses votes by it (a refusal from a voter that never heard of a leader carries
    /// term 0, on which raft-rs panics).
    #[error("priority {priority} is not this group's")]
    Priority {
        /// The priority the message carries.
        priority: i64,
    },
}

impl RaftRefusal {
    /// Every label, in the order of [`RaftRefusals`]'s counters.
    pub const LABELS: [&'static str; 8] = [
        "not_voter",
        "message_type",
        "term",
        "commit",
        "index",
        "entries",
        "snapshot",
        "priority",
    ];

    /// A short name of the rule, for a metric label (one of [`LABELS`](Self::LABELS)).
    pub fn label(self) -> &'static str {
        Self::LABELS[self.slot()]
    }

    fn slot(self) -> usize {
        match self {
            Self::NotVoter => 0,
            Self::MessageType { .. } => 1,
            Self::Term { .. } => 2,
            Self::Commit { .. } => 3,
            Self::Index { .. } => 4,
            Self::Entries { .. } => 5,
            Self::Snapshot { .. } => 6,
            Self::Priority { .. } => 7,
        }
    }
}

/// Raft messages refused before raft-rs, counted per [`RaftRefusal`] rule.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RaftRefusals([u64; RaftRefusal::LABELS.len()]);

impl RaftRefusals {
    pub(crate) fn count(&mut self, reason: RaftRefusal) {
        let slot = &mut self.0[reason.slot()];
        *slot = slot.saturating_add(1);
    }

    /// `(label, count)` for every rule, in [`RaftRefusal::LABELS`] order.
    pub fn iter(&self) -> impl Iterator<Item = (&'static str, u64)> + '_ {
        RaftRefusal::LABELS
            .iter()
            .copied()
            .zip(self.0.iter().copied())
    }

    /// All refusals together.
    pub fn total(&self) -> u64 {
        self.0.iter().sum()
    }
}

/// Why a voter's durable records could not be read back
/// ([`DurableState::from_records`](super::DurableState::from_records)). Nothing was built; the
/// records are as they were. Corruption on the host's disk (or a bug), never peer input.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum DurableError {
    /// No record at all.
    #[error("no durable record")]
    Empty,
    /// Record number `record` (from 0) is unreadable or does not continue the ones before it.
    #[error("durable record {record}: {source}")]
    Record {
        /// Its position.
        record: usize,
        /// What is wrong with it.
        source: DecodeError,
    },
    /// Every record reads, but together they describe an impossible state.
    #[error("durable records are inconsistent: {what} ({value})")]
    Inconsistent {
        /// What is impossible.
        what: &'static str,
        /// The value found.
        value: u64,
    },
}
