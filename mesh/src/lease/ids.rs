//! Identifiers of the leadership module: newtypes, never aliases.

use core::fmt;

/// A Raft term: the election epoch in which a lease was granted.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Debug, Default)]
pub struct Term(u64);

impl Term {
    /// Wraps a raw term.
    pub const fn new(raw: u64) -> Self {
        Self(raw)
    }
    /// The raw term.
    pub const fn get(self) -> u64 {
        self.0
    }
}

impl fmt::Display for Term {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "term{}", self.0)
    }
}

/// A fencing token: the Raft log index of the committed entry that granted a lease.
///
/// Log indices are unique and grow along the log, and only a quorum commits an entry, so a later
/// grant of any scope always carries a larger token, across leader changes and restarts. A
/// resource guarded by a lease refuses writes that carry a token below the largest it has seen.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Debug, Default)]
pub struct FencingToken(u64);

impl FencingToken {
    /// Wraps a raw token.
    pub const fn new(raw: u64) -> Self {
        Self(raw)
    }
    /// The raw token (a log index).
    pub const fn get(self) -> u64 {
        self.0
    }
}

impl fmt::Display for FencingToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "fence{}", self.0)
    }
}

/// One request of a [`LeaseClient`](super::LeaseClient): the client's boot incarnation in the
/// high 32 bits and a counter in the low 32 bits, so a restarted client never reuses an id the
/// voters remember.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Debug, Default)]
pub struct RequestId(u64);

impl RequestId {
    /// Wraps a raw id.
    pub const fn new(raw: u64) -> Self {
        Self(raw)
    }
    /// The raw id.
    pub const fn get(self) -> u64 {
        self.0
    }
}

impl fmt::Display for RequestId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "req{:x}", self.0)
    }
}

/// The position of an event in one node's event stream: it grows by one per event, so a
/// subscriber that saw sequence `n` resumes with the events after `n`. Numbering starts at 1 when
/// the state machine is built: after a restart a subscriber sees numbers below its resume point
/// and knows the node's history started over.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Debug, Default)]
pub struct EventSeq(u64);

impl EventSeq {
    /// Wraps a raw sequence number.
    pub const fn new(raw: u64) -> Self {
        Self(raw)
    }
    /// The raw sequence number.
    pub const fn get(self) -> u64 {
        self.0
    }
}

impl fmt::Display for EventSeq {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "#{}", self.0)
    }
}
