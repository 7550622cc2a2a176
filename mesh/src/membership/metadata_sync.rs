//! Moving metadata between members: applying piggybacked writes in order, pulling what is
//! missing from a peer that has it, and serving pulls as deltas or snapshots in chunks.
//!
//! # Whose word moves a copy (docs/security.md, "Membership claims")
//!
//! The epoch of a member's metadata is its boot incarnation, and only the owner starts one. A
//! copy therefore moves to an epoch above the member's incarnation (as held here, itself bounded
//! for relays) only on the owner's own word (its writes, its pushes, its records, sent by the
//! owner itself); the same from anyone else is only a hint to pull from the owner. Within the
//! epoch a copy holds, relayed writes still apply in order (they are how addresses reach members
//! that cannot reach the owner yet). The owner's own record of itself is the truth: a copy ahead
//! of it is dropped and pulled again from the owner. No peer input changes this node's own epoch.

use super::metadata::{Metadata, MetadataError, chunk_entries};
use super::{Event, Membership};
use crate::id::{MetaVersion, NodeId};
use crate::time::Instant;
use crate::wire::{MAX_METADATA_BYTES, Message, MetaEntry, Update};

impl Membership {
    pub(super) fn write_own_metadata(
        &mut self,
        now: Instant,
        key: &str,
        value: Option<&[u8]>,
    ) -> Result<MetaVersion, MetadataError> {
        if self.left {
            return Err(MetadataError::Left);
        }
        self.own_meta
            .check_write(key, value, self.config.max_metadata_bytes() as usize)?;
        let current = self.own_meta.version();
        let version = MetaVersion::new(current.epoch, current.seq + 1);
        self.change_self(|s| s.own_meta.apply_write(version, key, value));
        if value.is_none() {
            self.tombstones.push_back((
                now + self.config.tombstone_ttl(),
                self.id,
                key.to_owned(),
                version.seq,
            ));
        }
        self.broadcasts.push(&Update::Meta {
            node: self.id,
            version,
            key: key.to_owned(),
            value: value.map(<[u8]>::to_vec),
        });
        self.emit(Event::MetadataChanged {
            node: self.id,
            version,
        });
        Ok(version)
    }

    pub(super) fn apply_meta_write(
        &mut self,
        now: Instant,
        sender: NodeId,
        node: NodeId,
        version: MetaVersion,
        key: &str,
        value: Option<&[u8]>,
    ) {
        if node == self.id {
            // Our metadata is what we wrote; a version we did not write changes nothing here.
            return;
        }
        let Some(m) = self.members.get(node) else {
            return;
        };
        let held = m.meta_version();
        if version <= held {
            return;
        }
        if sender != node && !self.epoch_in_reach(node, version.epoch) {
            // Only the owner starts an epoch: ask it, not the relay. (Not counted as refused:
            // relays pass on a restarted member's first writes all the time.)
            self.request_pull(now, node, node, held);
            return;
        }
        let is_next = m.meta.as_deref().map_or_else(
            || Metadata::empty(held).is_next(version),
            |meta| meta.is_next(version),
        );
        if !is_next {
            self.request_pull(now, sender, node, held);
            return;
        }
        let fits = self.members.modify(node, |m| {
            let meta = m.meta_mut();
            let mut probe = meta.clone();
            probe.apply_write(version, key, value);
            if probe.size_bytes() > MAX_METADATA_BYTES {
                return false;
            }
            *meta = probe;
            true
        });
        if fits != Some(true) {
            return;
        }
        if value.is_none() {
            self.tombstones.push_back((
                now + self.config.tombstone_ttl(),
                node,
                key.to_owned(),
                version.seq,
            ));
        }
        self.broadcasts.push(&Update::Meta {
            node,
            version,
            key: key.to_owned(),
            value: value.map(<[u8]>::to_vec),
        });
        self.emit(Event::MetadataChanged { node, version });
    }

    /// A member announced metadata newer than ours: take an empty new epoch as is, or pull.
    pub(super) fn observe_meta(
        &mut self,
        now: Instant,
        sender: NodeId,
        node: NodeId,
        announced: MetaVersion,
    ) {
        let Some(m) = self.members.get(node) else {
            return;
        };
        let held = m.meta_version();
        if announced <= held {
            return;
        }
        if sender != node && !self.epoch_in_reach(node, announced.epoch) {
            // Another epoch is the owner's to announce: pull from the owner.
            self.request_pull(now, node, node, held);
            return;
        }
        if announced.seq == 0 {
            self.members.modify(node, |m| m.reset_empty_meta(announced));
            self.emit(Event::MetadataChanged {
                node,
                version: announced,
            });
            return;
        }
        self.request_pull(now, sender, node, held);
    }

    /// Whether a relay may move `node`'s copy to `epoch`: the epoch it holds, or a newer one no
    /// higher than the incarnation held for `node` (an epoch is a boot incarnation, so the owner
    /// can have started no later one; and relayed incarnations are bounded by
    /// `MAX_INCARNATION_STEP`). A member's first copy comes this way: relays carry the `addr`
    /// the tokio driver needs before it can reach the owner at all.
    fn epoch_in_reach(&self, node: NodeId, epoch: u32) -> bool {
        self.members
            .get(node)
            .is_some_and(|m| epoch == m.meta_version().epoch || epoch <= m.incarnation.get())
    }

    /// The owner itself says its metadata is at `announced`. A copy ahead of that was not
    /// written by the owner (or by this life of it): drop it and pull again from the owner.
    pub(super) fn follow_owner_meta(&mut self, now: Instant, node: NodeId, announced: MetaVersion) {
        let Some(m) = self.members.get(node) else {
            return;
        };
        if m.meta_version() <= announced {
            return;
        }
        self.members
            .modify(node, |m| m.reset_empty_meta(MetaVersion::default()));
        self.meta_pulls.remove(&node);
        self.observe_meta(now, node, node, announced);
        self.emit(Event::MetadataChanged {
            node,
            version: self
                .members
                .get(node)
                .map_or(MetaVersion::default(), |m| m.meta_version()),
        });
    }

    /// Asks `peer` for `node`'s metadata newer than `have`, unless a pull is already under way.
    /// A pull unanswered for a (health-scaled) probe timeout is presumed lost and may be retried,
    /// so a lost answer costs a round trip, not an anti-entropy period.
    fn request_pull(&mut self, now: Instant, peer: NodeId, node: NodeId, have: MetaVersion) {
        let retry_after = self.health.scale(self.config.probe_timeout());
        let in_flight = self
            .meta_pulls
            .get(&node)
            .is_some_and(|at| now.saturating_duration_since(*at) < retry_after);
        if peer == self.id
            || in_flight
            || (!self.meta_pulls.contains_key(&node)
                && self.meta_pulls.len() >= super::metadata::MAX_PENDING_TRANSFERS)
        {
            return;
        }
        self.meta_pulls.insert(node, now);
        self.send(peer, Message::MetaPull { node, have });
    }

    pub(super) fn handle_meta_pull(&mut self, from: NodeId, node: NodeId, have: MetaVersion) {
        let held = if node == self.id {
            Some(&self.own_meta)
        } else {
            self.members.get(node).and_then(|m| m.meta.as_deref())
        };
        let Some(meta) = held.filter(|m| m.version() > have) else {
            return;
        };
        let version = meta.version();
        let (base, entries) = meta.transfer_since(have);
        let chunks = chunk_entries(entries);
        let count = chunks.len() as u8;
        for (i, entries) in chunks.into_iter().enumerate() {
            self.send(
                from,
                Message::MetaPush {
                    node,
                    base,
                    version,
                    chunk: i as u8,
                    chunks: count,
                    entries,
                },
            );
        }
    }

    #[expect(
        clippy::too_many_arguments,
        reason = "the fields of one MetaPush message"
    )]
    pub(super) fn handle_meta_push(
        &mut self,
        now: Instant,
        from: NodeId,
        node: NodeId,
        base: Option<MetaVersion>,
        version: MetaVersion,
        chunk: u8,
        chunks: u8,
        entries: Vec<MetaEntry>,
    ) {
        if node == self.id {
            return;
        }
        let Some(held) = self.members.get(node).map(|m| m.meta_version()) else {
            return;
        };
        if version <= held {
            return;
        }
        if from != node && !self.epoch_in_reach(node, version.epoch) {
            // A relay answering a pull may hold a newer epoch than we asked about; only the
            // owner's own push moves a copy there (the owner is pulled from on the next hint).
            return;
        }
        let Some(done) = self
            .transfers
            .accept(now, from, node, base, version, chunk, chunks, entries)
        else {
            return;
        };
        self.meta_pulls.remove(&node);
        let applied = self.members.modify(node, |m| {
            let mut copy = m
                .meta
                .as_deref()
                .cloned()
                .unwrap_or_else(|| Metadata::empty(m.meta_version()));
            let tombstones = copy.apply_transfer(done.base, done.version, done.entries)?;
            if copy.size_bytes() > MAX_METADATA_BYTES {
                return None;
            }
            m.meta = Some(Box::new(copy));
            Some(tombstones)
        });
        let Some(Some(tombstones)) = applied else {
            return;
        };
        let due = now + self.config.tombstone_ttl();
        self.tombstones.extend(
            tombstones
                .into_iter()
                .map(|(key, seq)| (due, node, key, seq)),
        );
        self.emit(Event::MetadataChanged { node, version });
    }
}
