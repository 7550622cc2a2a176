//! Leadership: leases with fencing tokens, replicated by a small Raft voter group.
//!
//! A few nodes (3 or 5) run a [`LeaseGroup`] each: a raft-rs `RawNode` whose replicated state
//! machine is the [`LeaseTable`], mapping a [`Scope`] to its holder, the Raft [`Term`] of the
//! grant, a [`FencingToken`] (the log index of the grant, so it strictly increases and always
//! comes from a quorum) and an expiry. Every node, voter or not, runs a [`LeaseClient`] that
//! acquires, renews, releases and transfers leases through the voters and tells its host what
//! it holds as numbered [`LeadershipEvent`]s.
//!
//! The rules that keep at most one holder per scope:
//!
//! * Only the Raft leader proposes, and it stamps each command with its own `now`; the table
//!   decides everything (grant, refusal, expiry) from committed entries and their stamps, the
//!   same way on every voter. An isolated old leader cannot commit, so it cannot grant.
//! * A new leader's first stamp rebases every lease to a full TTL from that stamp (it cannot
//!   translate the previous leader's clock), so a lease only ever gets longer in real time.
//! * A client counts its lease from before it sent the request, so its view ends first.
//! * Reads go through Raft's ReadIndex ([`LeaseClient::query`]), never "I think I lead".
//! * raft-rs runs with `pre_vote` and `check_quorum`; its randomized election timeout is drawn
//!   from the voter's seeded RNG; its protobuf types never parse network bytes ([`wire`]).
//! * Only voters speak Raft, and every field raft-rs treats as an invariant is checked before it
//!   steps a message: anything else is refused with [`MessageError::RaftRefused`] (the
//!   [`RaftRefusal`] says which rule), never stepped (see `docs/security.md`).
//!
//! # Driving
//!
//! Both state machines have the surface of [`Membership`](crate::membership::Membership):
//!
//! * **Inputs**: `handle_message(now, from, bytes)` for each datagram (ask [`recipient`] which
//!   of the two takes it), `handle_timeout(now)` when `poll_timeout()` comes due (a spurious
//!   call is a no-op), and commands (`acquire`, `renew`, `release`, `transfer`, `query` on the
//!   client; `add_voter`, `remove_voter` on the group).
//! * **Outputs**, drained after every input in this order: `poll_transmit(now, &mut buf)` until
//!   `None`, `poll_event()` until `None`, then `poll_timeout()`.
//!
//! ```
//! use core::time::Duration;
//! use meshkit::{Instant, Incarnation, NodeId};
//! use meshkit::lease::{LeaseClient, LeaseConfig, LeaseGroup, LeadershipEvent, Recipient, Scope};
//!
//! let voter = NodeId::new(1);
//! let mut now = Instant::ZERO;
//! let mut group = LeaseGroup::bootstrap(LeaseConfig::default(), voter, &[voter], 7, now).unwrap();
//! let mut client = LeaseClient::new(LeaseConfig::default(), voter, Incarnation::new(1), &[voter], 8);
//! // A one-voter group elects itself after an election timeout.
//! while !group.is_leader() {
//!     now = group.poll_timeout().unwrap();
//!     group.handle_timeout(now);
//! }
//! client.acquire(now, Scope::global_control(), Duration::from_secs(10)).unwrap();
//! let mut buf = Vec::new();
//! // Shuttle datagrams (all addressed to the one node) until both are quiet.
//! for _ in 0..4 {
//!     while let Some(t) = client.poll_transmit(now, &mut buf) {
//!         group.handle_message(now, voter, &buf[..t.len]).unwrap();
//!     }
//!     while let Some(t) = group.poll_transmit(now, &mut buf) {
//!         assert_eq!(meshkit::lease::recipient(&buf[..t.len]).unwrap(), Recipient::Client);
//!         client.handle_message(now, voter, &buf[..t.len]).unwrap();
//!     }
//! }
//! let event = client.poll_event().unwrap();
//! assert!(matches!(event.event, LeadershipEvent::Acquired { .. }));
//! assert!(client.holds(now, &Scope::global_control()).is_some());
//! ```

mod campaign;
mod client;
mod config;
mod error;
mod event;
#[cfg(feature = "fuzzing")]
#[doc(hidden)]
pub mod fuzzing;
mod group;
mod ids;
mod rtt;
mod scope;
mod slog_bridge;
mod storage;
mod table;
mod timer;
pub mod wire;

pub use self::campaign::Campaign;
pub use self::client::{ClientStats, HeldLease, LeaseClient, MAX_CLIENT_OUTBOX_DATAGRAMS};
pub use self::config::{LeaseConfig, MAX_TTL, MIN_TTL, RawLeaseConfig};
pub use self::error::{
    DurableError, GroupError, LeaseError, MessageError, RaftRefusal, RaftRefusals,
};
pub use self::event::{
    GroupEvent, LeadershipEvent, LeaseInfo, MAX_EVENT_HISTORY, ResumeError, Sequenced,
};
pub use self::group::{
    DurableHardState, DurableState, GroupStats, LeaseGroup, LogBounds, MAX_GROUP_OUTBOX_DATAGRAMS,
    MAX_RAFT_INDEX, MAX_RAFT_TERM, RaftSafetyFlags,
};
pub use self::ids::{EventSeq, FencingToken, RequestId, Term};
pub use self::scope::{MAX_SCOPE_BYTES, MAX_SEGMENT_BYTES, Scope, ScopeError, ScopeKind};
pub(crate) use self::scope::{SegmentFault, check_segment};
pub use self::storage::{
    DURABLE_RECORD_VERSION, DurableWrite, MAX_DURABLE_RECORD_BYTES, MAX_ENTRIES_PER_RECORD,
};
pub use self::table::{Lease, LeaseTable, MAX_LEASES, MAX_LEASES_PER_HOLDER, MAX_SESSIONS};
pub use self::wire::{Recipient, recipient};

/// Voters a group holds at most (Raft needs a majority of them for every decision; 3 or 5 is
/// the usual size).
pub const MAX_VOTERS: usize = 7;

/// A datagram written to the caller's buffer by a `poll_transmit` (the core's one
/// [`Transmit`](crate::Transmit) type).
pub use crate::transmit::Transmit;

#[cfg(test)]
mod tests;
