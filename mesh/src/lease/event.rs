//! Events for the host: what a client learns about its own leases, what a voter learns about the
//! group, each numbered so a subscriber can resume after the last one it saw.

use alloc::collections::VecDeque;

use thiserror::Error;

use super::error::LeaseError;
use super::ids::{EventSeq, FencingToken, RequestId, Term};
use super::scope::Scope;
use crate::id::NodeId;
use crate::time::Instant;

/// Events kept for resumption ([`LeaseClient::events_since`](super::LeaseClient::events_since));
/// older ones are forgotten, and undrained ones beyond it are dropped and counted.
pub const MAX_EVENT_HISTORY: usize = 4096;

/// An event and its place in the node's stream.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Sequenced<E> {
    /// Strictly increasing per node, without gaps.
    pub seq: EventSeq,
    /// When it happened, by the local clock.
    pub at: Instant,
    /// What happened.
    pub event: E,
}

/// What a [`LeaseClient`](super::LeaseClient)'s host learns about its own leases.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum LeadershipEvent {
    /// This node now holds `scope` (by its own acquire, or handed over by a transfer).
    Acquired {
        /// The scope.
        scope: Scope,
        /// The grant's fencing token; present it to guarded resources.
        token: FencingToken,
        /// The Raft term of the grant.
        term: Term,
        /// Local instant until which the lease is certainly held (measured from before the
        /// request was sent, so it never outlives the voters' view).
        expires: Instant,
    },
    /// A renewal succeeded; the lease is held until `expires`.
    Renewed {
        /// The scope.
        scope: Scope,
        /// The (unchanged) token.
        token: FencingToken,
        /// New local expiry.
        expires: Instant,
    },
    /// This node no longer holds `scope`, for the reason given (the voters refused a renewal,
    /// or a transfer's outcome is unknown). Stop using the token now.
    Lost {
        /// The scope.
        scope: Scope,
        /// The token that is no longer valid.
        token: FencingToken,
        /// Why.
        reason: LeaseError,
    },
    /// This node handed `scope` to `to`.
    Transferred {
        /// The scope.
        scope: Scope,
        /// The token this node gave up.
        token: FencingToken,
        /// The new holder.
        to: NodeId,
        /// The new holder's token.
        new_token: FencingToken,
    },
    /// The lease ran out without a renewal; stop using the token.
    Expired {
        /// The scope.
        scope: Scope,
        /// The token that expired.
        token: FencingToken,
    },
    /// This node released `scope`.
    Released {
        /// The scope.
        scope: Scope,
        /// The token given up.
        token: FencingToken,
    },
    /// A request failed; if it was an acquire, nothing is held.
    Failed {
        /// The request.
        request: RequestId,
        /// Why.
        error: LeaseError,
    },
    /// Answer to [`LeaseClient::query`](super::LeaseClient::query), read through Raft's
    /// ReadIndex at the leader.
    Queried {
        /// The request.
        request: RequestId,
        /// The scope.
        scope: Scope,
        /// The lease on it, if any.
        lease: Option<LeaseInfo>,
    },
}

/// A lease as the leader's lease table holds it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LeaseInfo {
    /// The holder.
    pub holder: NodeId,
    /// The term of the grant.
    pub term: Term,
    /// The grant's fencing token.
    pub token: FencingToken,
    /// Time left, by the leader's clock when it answered.
    pub expires_in: crate::time::Duration,
}

/// What a [`LeaseGroup`](super::LeaseGroup)'s host (a voter) learns about the group.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum GroupEvent {
    /// The Raft leader changed (or became unknown).
    LeaderChanged {
        /// The leader, if known.
        leader: Option<NodeId>,
        /// The term.
        term: Term,
    },
    /// A committed entry granted `scope` (acquire or transfer).
    Granted {
        /// The scope.
        scope: Scope,
        /// The new holder.
        holder: NodeId,
        /// The grant's token.
        token: FencingToken,
        /// The term of the grant.
        term: Term,
    },
    /// A committed entry released `scope`.
    Released {
        /// The scope.
        scope: Scope,
        /// The former holder.
        holder: NodeId,
        /// The token released.
        token: FencingToken,
    },
    /// A committed entry's time passed the lease's expiry.
    Expired {
        /// The scope.
        scope: Scope,
        /// The former holder.
        holder: NodeId,
        /// The token that expired.
        token: FencingToken,
    },
    /// A membership change was applied; the voters now.
    VotersChanged {
        /// The voters, in id order.
        voters: Vec<NodeId>,
    },
    /// This voter was behind the leader's compacted log and installed the leader's snapshot:
    /// its table is now the leader's as of `index` (the grants, releases and expiries in
    /// between were not applied one by one here, so no event reported them).
    SnapshotInstalled {
        /// The log index the snapshot covers.
        index: u64,
        /// Leases in the installed table.
        leases: usize,
    },
}

/// A resume point older than the history kept.
#[derive(Debug, Error, Clone, Copy, PartialEq, Eq)]
#[error("events after {after} are no longer kept; the oldest kept is {oldest}")]
pub struct ResumeError {
    /// The sequence number asked for.
    pub after: EventSeq,
    /// The oldest event still kept.
    pub oldest: EventSeq,
}

/// A node's numbered event stream: the undrained queue and the resumption history in one ring.
#[derive(Clone, Debug)]
pub(crate) struct EventLog<E> {
    next: u64,
    history: VecDeque<Sequenced<E>>,
    /// Events at the back of `history` not yet returned by `poll`.
    unread: usize,
    pub(crate) dropped: u64,
}

impl<E: Clone> EventLog<E> {
    pub(crate) fn new() -> Self {
        Self {
            next: 1,
            history: VecDeque::new(),
            unread: 0,
            dropped: 0,
        }
    }

    pub(crate) fn push(&mut self, at: Instant, event: E) {
        if self.history.len() == MAX_EVENT_HISTORY {
            self.history.pop_front();
            if self.unread > self.history.len() {
                self.unread = self.history.len();
                self.dropped += 1;
            }
        }
        self.history.push_back(Sequenced {
            seq: EventSeq::new(self.next),
            at,
            event,
        });
        self.next += 1;
        self.unread += 1;
    }

    pub(crate) fn poll(&mut self) -> Option<Sequenced<E>> {
        if self.unread == 0 {
            return None;
        }
        let e = self.history.get(self.history.len() - self.unread).cloned();
        self.unread -= 1;
        e
    }

    pub(crate) fn since(
        &self,
        after: EventSeq,
    ) -> Result<impl Iterator<Item = &Sequenced<E>>, ResumeError> {
        if let Some(front) = self.history.front()
            && front.seq.get() > after.get().saturating_add(1)
        {
            return Err(ResumeError {
                after,
                oldest: front.seq,
            });
        }
        Ok(self.history.iter().filter(move |e| e.seq > after))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resumes_after_a_sequence_number_and_reports_truncation() {
        let mut log = EventLog::new();
        for i in 0..(MAX_EVENT_HISTORY as u64 + 10) {
            log.push(Instant::from_nanos(i), i);
        }
        // The first 10 fell out of the history, undrained: counted as dropped.
        assert_eq!(log.dropped, 10);
        let first = log.poll().unwrap();
        assert_eq!(first.seq, EventSeq::new(11));
        let after: Vec<u64> = log
            .since(EventSeq::new(MAX_EVENT_HISTORY as u64 + 7))
            .unwrap()
            .map(|e| e.event)
            .collect();
        assert_eq!(
            after,
            vec![
                MAX_EVENT_HISTORY as u64 + 7,
                MAX_EVENT_HISTORY as u64 + 8,
                MAX_EVENT_HISTORY as u64 + 9
            ]
        );
        assert_eq!(
            log.since(EventSeq::new(3)).err(),
            Some(ResumeError {
                after: EventSeq::new(3),
                oldest: EventSeq::new(11)
            })
        );
        assert!(log.since(EventSeq::new(10)).is_ok());
    }
}
