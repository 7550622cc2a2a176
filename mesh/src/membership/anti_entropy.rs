//! Periodic anti-entropy: repairs whatever piggybacked gossip missed.
//!
//! Bucketed mode (the default) sends 128 bucket digests (one datagram); the peer answers with the
//! records of up to `anti_entropy_max_buckets` differing buckets and asks for ours in return, so a
//! converged mesh pays one datagram per period whatever its size. Full-state mode sends every
//! record each period, as memberlist's push-pull does. A remote Dead record is merged as a mere
//! suspicion (as memberlist does), so a healed partition does not kill members that are fine:
//! they refute instead.

use super::member::{MemberTable, bucket_of};
use super::{MemberState, Membership};
use crate::config::AntiEntropyMode;
use crate::id::{Incarnation, NodeId};
use crate::time::Instant;
use crate::wire::{
    DIGEST_BUCKETS, MAX_RECORDS_PER_DATAGRAM, MemberRecord, Message, SyncReply, Update,
};

impl Membership {
    /// Starts one exchange with a random live member.
    pub(super) fn start_sync(&mut self) {
        if self.left {
            return;
        }
        let Some(peer) = self.members.random(&mut self.rng, &[], |m| {
            m.state == MemberState::Alive && m.routable
        }) else {
            return;
        };
        let message = match self.config.anti_entropy_mode() {
            AntiEntropyMode::FullState => Message::SyncDigest {
                all: true,
                digests: Vec::new(),
            },
            AntiEntropyMode::Bucketed => Message::SyncDigest {
                all: false,
                digests: self.members.digests().to_vec(),
            },
        };
        self.send(peer, message);
        self.stats.syncs += 1;
    }

    pub(super) fn handle_sync_digest(&mut self, from: NodeId, all: bool, digests: &[u64]) {
        if all {
            self.send_records(from, SyncReply::All, None);
            return;
        }
        let mine = self.members.digests();
        let start = self.rng.index(DIGEST_BUCKETS);
        let max = self.config.anti_entropy_max_buckets() as usize;
        let mut set = 0u128;
        let mut count = 0;
        for i in 0..DIGEST_BUCKETS {
            let b = (start + i) % DIGEST_BUCKETS;
            if mine[b] != digests[b] {
                set |= 1 << b;
                count += 1;
                if count == max {
                    break;
                }
            }
        }
        if set != 0 {
            self.send_records(from, SyncReply::Buckets(set), Some(set));
        }
    }

    pub(super) fn handle_sync_entries(
        &mut self,
        now: Instant,
        from: NodeId,
        reply: SyncReply,
        records: Vec<MemberRecord>,
    ) {
        for r in records {
            self.merge_record(now, from, r);
        }
        match reply {
            SyncReply::Nothing => {}
            SyncReply::Buckets(set) => self.send_records(from, SyncReply::Nothing, Some(set)),
            SyncReply::All => self.send_records(from, SyncReply::Nothing, None),
        }
    }

    /// Sends our records of `buckets` (all when `None`), chunked into datagrams; `reply` rides on
    /// the first.
    fn send_records(&mut self, to: NodeId, reply: SyncReply, buckets: Option<u128>) {
        let wanted = |id: NodeId| buckets.is_none_or(|set| set & (1 << bucket_of(id)) != 0);
        let mut records: Vec<MemberRecord> = Vec::new();
        if wanted(self.id) {
            records.push(self.self_record());
        }
        records.extend(
            self.members
                .iter()
                // An unverified member is one relay's word: passing it on would let every
                // honest node introduce a forger's phantoms again, each under its own
                // per-introducer bound (docs/security.md). It is sent once heard from.
                .filter(|(id, m)| wanted(*id) && m.introduced_by.is_none())
                .map(|(id, m)| MemberTable::record(id, m)),
        );
        if records.is_empty() {
            if reply != SyncReply::Nothing {
                self.send(to, Message::SyncEntries { reply, records });
            }
            return;
        }
        let mut reply = Some(reply);
        for chunk in records.chunks(MAX_RECORDS_PER_DATAGRAM) {
            let reply = reply.take().unwrap_or(SyncReply::Nothing);
            self.send(
                to,
                Message::SyncEntries {
                    reply,
                    records: chunk.to_vec(),
                },
            );
        }
    }

    /// Merges one record. Claims at a newer incarnation than ours are taken (a remote death only
    /// as a suspicion, as memberlist does). Where the two views disagree at the *same*
    /// incarnation, neither adopts the other's opinion: the member itself is sent the claim and
    /// asked to refute it. After a partition heals, every record of the other side disagrees;
    /// adopting them would make every node suspect every member at once, and the storm of
    /// suspicions would crowd out the refutations. A member that is really dead is found by our
    /// own probes.
    fn merge_record(&mut self, now: Instant, from: NodeId, r: MemberRecord) {
        let failure = match r.state {
            MemberState::Alive => false,
            MemberState::Left => r.node != from,
            MemberState::Suspect | MemberState::Dead => true,
        };
        if failure && !self.may_claim_failures(from, r.node) {
            return;
        }
        if !self.claim_in_bounds(from, r.node, Some(r.incarnation)) {
            return;
        }
        if r.state != MemberState::Alive {
            self.correct_stale_claim(r.node, r.incarnation);
        }
        if r.node == self.id {
            match r.state {
                MemberState::Alive => self.apply_alive(now, from, r.node, r.incarnation, r.meta),
                MemberState::Suspect | MemberState::Dead | MemberState::Left => {
                    self.apply_suspect(now, r.node, r.incarnation, from, from);
                }
            }
            return;
        }
        if from == r.node {
            // The member's own record of itself: its metadata version is the truth, even when
            // older than the copy held (a copy can only be ahead if someone else wrote it).
            self.follow_owner_meta(now, r.node, r.meta);
        }
        let held = self.members.get(r.node).map(|m| (m.state, m.incarnation));
        match (r.state, held) {
            (
                MemberState::Alive,
                Some((ours @ (MemberState::Suspect | MemberState::Dead), inc)),
            ) if inc == r.incarnation => {
                self.ask_to_refute(r.node, ours, inc);
            }
            (MemberState::Alive, _) => self.apply_alive(now, from, r.node, r.incarnation, r.meta),
            (MemberState::Suspect | MemberState::Dead, Some((MemberState::Alive, inc)))
                if inc == r.incarnation =>
            {
                self.ask_to_refute(r.node, r.state, inc);
                self.observe_meta(now, from, r.node, r.meta);
            }
            (MemberState::Left, _) if from == r.node => {
                self.apply_left(now, r.node, r.incarnation);
            }
            // A remote death, or a leave the member did not tell us itself: only a suspicion.
            (MemberState::Suspect | MemberState::Dead | MemberState::Left, _) => {
                self.apply_suspect(now, r.node, r.incarnation, from, from);
            }
        }
    }

    /// Sends `node` a claim about itself; if it is alive it refutes, and the refutation comes
    /// straight back (see `correct_stale_claim`) and spreads by gossip.
    fn ask_to_refute(&mut self, node: NodeId, claim: MemberState, incarnation: Incarnation) {
        let from = self.id;
        let update = if claim == MemberState::Dead {
            Update::Dead {
                node,
                incarnation,
                from,
            }
        } else {
            Update::Suspect {
                node,
                incarnation,
                from,
            }
        };
        self.send_with(node, Message::Gossip, vec![update]);
    }
}
