//! Piggybacked dissemination with a retransmit budget (SWIM §4.1, memberlist's
//! `TransmitLimitedQueue`).
//!
//! Each update is kept encoded and sent on the next outgoing datagrams, least-sent first, until it
//! has gone out `retransmit_mult * ceil(log10(N + 1))` times; a newer update about the same
//! subject replaces the older one.

use alloc::collections::BTreeMap;
use alloc::vec::Vec;

use super::intmath;
use crate::id::NodeId;
use crate::wire::{self, Update};

/// Bound on queued updates; past it the most-sent ones are dropped (anti-entropy repairs them).
pub(crate) const MAX_QUEUED_UPDATES: usize = 8192;

/// What a queued update is about; a newer update with the same subject replaces it.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Debug)]
enum Subject {
    Member(NodeId),
    MetaWrite(NodeId, u32, u32),
}

/// Queue order: fewest transmissions first, then newest first.
type Rank = (u32, u64);

#[derive(Debug)]
struct Queued {
    subject: Subject,
    bytes: Vec<u8>,
    /// The recipient of the last transmission: sending the same update to the same member twice
    /// in a row would spend budget without spreading it.
    last_to: Option<NodeId>,
}

/// The queue of updates waiting to be piggybacked.
#[derive(Debug, Default)]
pub(crate) struct Broadcasts {
    queue: BTreeMap<Rank, Queued>,
    by_subject: BTreeMap<Subject, Rank>,
    next: u64,
}

impl Broadcasts {
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.queue.len()
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.queue.is_empty()
    }

    /// Queues `update`, replacing any older update about the same subject.
    pub(crate) fn push(&mut self, update: &Update) {
        let subject = match update {
            Update::Meta { node, version, .. } => {
                Subject::MetaWrite(*node, version.epoch, version.seq)
            }
            other => Subject::Member(other.node()),
        };
        if let Some(rank) = self.by_subject.remove(&subject) {
            self.queue.remove(&rank);
        }
        let mut bytes = Vec::with_capacity(32);
        wire::encode_update(update, &mut bytes);
        self.next += 1;
        let rank = (0, u64::MAX - self.next);
        self.queue.insert(
            rank,
            Queued {
                subject,
                bytes,
                last_to: None,
            },
        );
        self.by_subject.insert(subject, rank);
        while self.queue.len() > MAX_QUEUED_UPDATES {
            if let Some((_, dropped)) = self.queue.pop_last() {
                self.by_subject.remove(&dropped.subject);
            }
        }
    }

    /// Appends as many queued updates as fit to the datagram in `buf`, counting a transmission for
    /// each and retiring those that reached `limit`.
    pub(crate) fn fill(&mut self, buf: &mut Vec<u8>, count_at: usize, limit: u32, to: NodeId) {
        if self.queue.is_empty() {
            return;
        }
        let mut sent: Vec<Rank> = Vec::new();
        let mut room = wire::MAX_DATAGRAM_BYTES.saturating_sub(buf.len());
        for (rank, q) in &self.queue {
            if room < 10 {
                break;
            }
            if q.last_to != Some(to)
                && q.bytes.len() <= room
                && wire::append_update(buf, count_at, &q.bytes)
            {
                room -= q.bytes.len();
                sent.push(*rank);
            }
        }
        for rank in sent {
            let Some(mut q) = self.queue.remove(&rank) else {
                continue;
            };
            q.last_to = Some(to);
            let transmits = rank.0 + 1;
            if transmits >= limit {
                self.by_subject.remove(&q.subject);
            } else {
                let new_rank = (transmits, rank.1);
                self.by_subject.insert(q.subject, new_rank);
                self.queue.insert(new_rank, q);
            }
        }
    }
}

/// `mult * ceil(log10(n + 1))`, at least 1; the logarithm counts digits exactly (no `f64`, see
/// [`super::intmath`]).
pub(crate) fn retransmit_limit(mult: u32, members: usize) -> u32 {
    let n = u64::try_from(members).unwrap_or(u64::MAX).saturating_add(1);
    let scale = intmath::ceil_log10(n).max(1);
    mult.saturating_mul(scale).max(1)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::id::{Incarnation, MetaVersion};

    fn alive(n: u64, inc: u32) -> Update {
        Update::Alive {
            node: NodeId::new(n),
            incarnation: Incarnation::new(inc),
            meta: MetaVersion::default(),
        }
    }

    #[test]
    fn retires_after_limit_and_replaces_by_subject() {
        let mut b = Broadcasts::default();
        b.push(&alive(1, 1));
        b.push(&alive(1, 2));
        assert_eq!(b.len(), 1, "newer update about node 1 replaced the older");
        let mut buf = Vec::new();
        for to in 0..3 {
            let at = wire::encode_message(NodeId::new(9), &wire::Message::Gossip, &mut buf);
            b.fill(&mut buf, at, 3, NodeId::new(to));
            let d = wire::decode(&buf).unwrap();
            assert_eq!(d.updates, vec![alive(1, 2)]);
        }
        assert!(b.is_empty());
    }

    #[test]
    fn consecutive_datagrams_to_one_member_do_not_spend_budget() {
        let mut b = Broadcasts::default();
        b.push(&alive(1, 1));
        let mut buf = Vec::new();
        for _ in 0..5 {
            let at = wire::encode_message(NodeId::new(9), &wire::Message::Gossip, &mut buf);
            b.fill(&mut buf, at, 3, NodeId::new(4));
        }
        assert_eq!(
            b.len(),
            1,
            "one transmission to node 4, the update waits for others"
        );
    }

    #[test]
    fn the_queue_is_bounded_and_drops_the_oldest_of_the_most_sent_first() {
        let mut b = Broadcasts::default();
        let max = MAX_QUEUED_UPDATES as u64;
        for n in 1..=max + 1 {
            b.push(&alive(n, 1));
        }
        assert_eq!(
            b.len(),
            MAX_QUEUED_UPDATES,
            "bounded at the limit, not below"
        );
        // Node 1's, the oldest of the never-sent, went; its subject is free again: a new update
        // about it is queued, and the bound drops the next oldest (node 2's).
        b.push(&alive(1, 2));
        assert_eq!(b.len(), MAX_QUEUED_UPDATES);
        assert!(b.by_subject.contains_key(&Subject::Member(NodeId::new(1))));
        assert!(!b.by_subject.contains_key(&Subject::Member(NodeId::new(2))));
        assert_eq!(b.by_subject.len(), b.queue.len());
    }

    #[test]
    fn the_newest_of_the_least_sent_goes_first() {
        let mut b = Broadcasts::default();
        b.push(&alive(1, 1));
        b.push(&alive(2, 1));
        let mut buf = Vec::new();
        let at = wire::encode_message(NodeId::new(9), &wire::Message::Gossip, &mut buf);
        b.fill(&mut buf, at, 3, NodeId::new(4));
        assert_eq!(
            wire::decode(&buf).unwrap().updates,
            vec![alive(2, 1), alive(1, 1)]
        );
        // Both sent once; a third, never sent, leads the next datagram.
        b.push(&alive(3, 1));
        let at = wire::encode_message(NodeId::new(9), &wire::Message::Gossip, &mut buf);
        b.fill(&mut buf, at, 3, NodeId::new(5));
        assert_eq!(wire::decode(&buf).unwrap().updates[0], alive(3, 1));
    }

    #[test]
    fn limit_grows_with_log_n() {
        assert_eq!(retransmit_limit(4, 5), 4);
        assert_eq!(retransmit_limit(4, 1000), 16);
        assert_eq!(retransmit_limit(4, 999), 12);
    }
}
