//! The owner's queue: items, leases, deadlines and versions, as a pure value (no clock: every
//! time is passed in). [`super::Queues`] wraps it with the network; tests drive it alone.

use alloc::collections::{BTreeMap, BTreeSet};
use alloc::vec::Vec;

use super::config::QueueConfig;
use super::error::QueueError;
use super::item::{
    EventKind, ItemId, ItemRecord, ItemState, LeaseId, MAX_PAYLOAD_BYTES, Origin, OwnershipToken,
};
use crate::id::NodeId;
use crate::lease::FencingToken;
use crate::time::{Duration, Instant};

/// What became of a failed or expired item.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum FailOutcome {
    /// Back in the queue for another attempt.
    Requeued,
    /// Set aside: too many attempts, or failed without requeue.
    DeadLettered,
}

/// One shard's queue as its owner holds it, under the owner's fencing token. See the
/// [module docs](super) for the model.
///
/// Every change gives the changed item the next version (the replication sequence number);
/// [`changed_since`](Self::changed_since) lists the items changed after a version, which is
/// what a replica that acknowledged that version is missing.
#[derive(Clone, Debug)]
pub struct WorkQueue {
    fence: FencingToken,
    max_attempts: u32,
    lease_timeout: Duration,
    max_items: usize,
    records: BTreeMap<ItemId, ItemRecord>,
    /// Version -> item, for every item's current version.
    by_version: BTreeMap<u64, ItemId>,
    /// Items waiting, oldest first.
    pending: BTreeSet<ItemId>,
    /// Leased items: deadline, by the owner's clock.
    deadlines: BTreeMap<ItemId, Instant>,
    origins: BTreeMap<Origin, ItemId>,
    version: u64,
    next_item: u64,
    next_lease: u64,
}

impl WorkQueue {
    /// An empty queue held under `fence`.
    pub fn new(fence: FencingToken, config: &QueueConfig) -> Self {
        Self {
            fence,
            max_attempts: config.max_attempts(),
            lease_timeout: config.lease_timeout(),
            max_items: config.max_items(),
            records: BTreeMap::new(),
            by_version: BTreeMap::new(),
            pending: BTreeSet::new(),
            deadlines: BTreeMap::new(),
            origins: BTreeMap::new(),
            version: 0,
            next_item: 1,
            next_lease: 1,
        }
    }

    /// The queue a new owner rebuilds from a replica's records (`applied`: the version the
    /// replica had applied). Every item that was leased under the old owner goes back to
    /// pending (its worker's token names the old fence and will be refused), as a change of
    /// this owner, so its replicas learn it.
    ///
    /// The records are numbered again, in their order of versions, above `applied` and every
    /// version they carry: records merged from the copies of several owners may carry the same
    /// version, and two items under one version would hide one of them from
    /// [`changed_since`](Self::changed_since), so from every replica.
    pub fn rebuild(
        fence: FencingToken,
        config: &QueueConfig,
        records: impl IntoIterator<Item = ItemRecord>,
        applied: u64,
    ) -> Self {
        let mut queue = Self::new(fence, config);
        let mut records: Vec<ItemRecord> = records.into_iter().collect();
        records.sort_by_key(|r| (r.version, r.id));
        queue.version = records.iter().map(|r| r.version).fold(applied, u64::max);
        let mut leased = Vec::new();
        for mut record in records {
            queue.version += 1;
            record.version = queue.version;
            queue.next_item = queue.next_item.max(record.id.get() + 1);
            if let ItemState::Leased { lease, .. } = record.state {
                queue.next_lease = queue.next_lease.max(lease.get() + 1);
                leased.push(record.id);
            }
            if record.state == ItemState::Pending {
                queue.pending.insert(record.id);
            }
            queue.origins.insert(record.origin, record.id);
            queue.by_version.insert(record.version, record.id);
            queue.records.insert(record.id, record);
        }
        for id in leased {
            queue.set_state(id, ItemState::Pending, EventKind::Failed);
            queue.pending.insert(id);
        }
        queue
    }

    /// The next item id and lease id this queue would give: the numbering's high-water mark.
    pub fn numbering(&self) -> (u64, u64) {
        (self.next_item, self.next_lease)
    }

    /// Numbers new items and leases from at least `next_item` and `next_lease`: a new owner
    /// that knows of ids beyond what it recovered (its own queue of an earlier fence, kept when
    /// its lease lapsed) never gives them again, even if no copy holding them answered.
    pub fn raise_numbering(&mut self, (next_item, next_lease): (u64, u64)) {
        self.next_item = self.next_item.max(next_item);
        self.next_lease = self.next_lease.max(next_lease);
    }

    /// The owner's fencing token.
    pub fn fence(&self) -> FencingToken {
        self.fence
    }

    /// The version of the latest change.
    pub fn version(&self) -> u64 {
        self.version
    }

    /// Items waiting for a worker.
    pub fn pending_count(&self) -> usize {
        self.pending.len()
    }

    /// Items leased to workers.
    pub fn active_count(&self) -> usize {
        self.deadlines.len()
    }

    /// Every item, tombstones included, in id order.
    pub fn records(&self) -> impl Iterator<Item = &ItemRecord> + '_ {
        self.records.values()
    }

    /// One item.
    pub fn record(&self, item: ItemId) -> Option<&ItemRecord> {
        self.records.get(&item)
    }

    /// Whether the token's item is leased under the token's grant (this owner's fence, the
    /// same lease): a resent lease request gets it back only then.
    pub fn is_leased_under(&self, token: &OwnershipToken) -> bool {
        token.fence == self.fence
            && self.records.get(&token.item).is_some_and(
                |r| matches!(r.state, ItemState::Leased { lease, .. } if lease == token.lease),
            )
    }

    /// When the lease of a leased item runs out (without a heartbeat).
    pub fn lease_deadline(&self, item: ItemId) -> Option<Instant> {
        self.deadlines.get(&item).copied()
    }

    /// The payload length of the item the next [`lease`](Self::lease) would grant, if any is
    /// pending (a lease of several items stops before one its answer has no room for).
    pub fn next_pending_len(&self) -> Option<usize> {
        let id = self.pending.first()?;
        self.records.get(id).map(|r| r.payload.len())
    }

    /// The items changed after version `after`, oldest change first.
    pub fn changed_since(&self, after: u64) -> impl Iterator<Item = &ItemRecord> + '_ {
        self.by_version
            .range(after.saturating_add(1)..)
            .filter_map(|(_, id)| self.records.get(id))
    }

    /// Whether an enqueue from `origin` is already held (a resend would return its item).
    pub fn knows(&self, origin: &Origin) -> bool {
        self.origins.contains_key(origin)
    }

    /// Adds an item from `origin`; a retried enqueue (same origin) returns the item it made.
    ///
    /// # Errors
    ///
    /// [`QueueError::PayloadTooLarge`], [`QueueError::Full`]; nothing changed.
    pub fn enqueue(&mut self, origin: Origin, payload: &[u8]) -> Result<ItemId, QueueError> {
        if payload.len() > MAX_PAYLOAD_BYTES {
            return Err(QueueError::PayloadTooLarge {
                len: payload.len(),
                max: MAX_PAYLOAD_BYTES,
            });
        }
        if let Some(&id) = self.origins.get(&origin) {
            return Ok(id);
        }
        if self.records.len() >= self.max_items {
            return Err(QueueError::Full {
                max: self.max_items,
            });
        }
        let id = ItemId::new(self.next_item);
        self.next_item += 1;
        self.version += 1;
        let record = ItemRecord {
            id,
            version: self.version,
            attempts: 0,
            state: ItemState::Pending,
            change: EventKind::Enqueue,
            origin,
            payload: payload.to_vec(),
        };
        self.by_version.insert(self.version, id);
        self.records.insert(id, record);
        self.origins.insert(origin, id);
        self.pending.insert(id);
        Ok(id)
    }

    /// Grants the oldest pending item to `worker` until `now + lease_timeout`; `None` if none
    /// waits.
    pub fn lease(&mut self, now: Instant, worker: NodeId) -> Option<(OwnershipToken, Instant)> {
        let id = self.pending.pop_first()?;
        let lease = LeaseId::new(self.next_lease);
        self.next_lease += 1;
        let attempt = {
            let record = self.records.get_mut(&id)?;
            record.attempts = record.attempts.saturating_add(1);
            record.attempts
        };
        self.set_state(
            id,
            ItemState::Leased { worker, lease },
            EventKind::LeaseGranted,
        );
        let deadline = now + self.lease_timeout;
        self.deadlines.insert(id, deadline);
        Some((
            OwnershipToken {
                item: id,
                attempt,
                lease,
                fence: self.fence,
            },
            deadline,
        ))
    }

    /// Extends the token's lease to `now + lease_timeout` and returns the new deadline. Not a
    /// replicated change (see [`EventKind::Heartbeat`]).
    ///
    /// # Errors
    ///
    /// As [`check`](Self::check); nothing changed.
    pub fn heartbeat(
        &mut self,
        now: Instant,
        token: &OwnershipToken,
    ) -> Result<Instant, QueueError> {
        self.check(token)?;
        let deadline = now + self.lease_timeout;
        self.deadlines.insert(token.item, deadline);
        Ok(deadline)
    }

    /// Marks the token's item completed.
    ///
    /// # Errors
    ///
    /// As [`check`](Self::check); nothing changed.
    pub fn complete(&mut self, token: &OwnershipToken) -> Result<(), QueueError> {
        self.check(token)?;
        self.deadlines.remove(&token.item);
        self.set_state(token.item, ItemState::Completed, EventKind::Completed);
        Ok(())
    }

    /// Whether the token's item is completed, by the grant the token names as far as the record
    /// tells: this owner's fence and the item's last attempt. A completion is accepted only
    /// from the holder of the item's current grant, and nothing changes a completed item, so
    /// such a token's completion is the one that was accepted: a resend of it (its answer was
    /// lost) is answered as accepted again rather than refused as stale.
    pub fn completed_by(&self, token: &OwnershipToken) -> bool {
        token.fence == self.fence
            && self
                .records
                .get(&token.item)
                .is_some_and(|r| r.state == ItemState::Completed && r.attempts == token.attempt)
    }

    /// The worker gave up the token's item: requeued (if `requeue` and attempts remain) or
    /// dead-lettered.
    ///
    /// # Errors
    ///
    /// As [`check`](Self::check); nothing changed.
    pub fn fail(
        &mut self,
        token: &OwnershipToken,
        requeue: bool,
    ) -> Result<FailOutcome, QueueError> {
        self.check(token)?;
        Ok(self.release(token.item, requeue))
    }

    /// Requeues (or dead-letters) every item whose lease is past its deadline at `now`.
    pub fn expire(&mut self, now: Instant) -> Vec<(ItemId, FailOutcome)> {
        let due: Vec<ItemId> = self
            .deadlines
            .iter()
            .filter(|&(_, &d)| d <= now)
            .map(|(&id, _)| id)
            .collect();
        due.into_iter()
            .map(|id| (id, self.release(id, true)))
            .collect()
    }

    /// Requeues (or dead-letters) every item leased to `worker` (its node is gone).
    pub fn release_worker(&mut self, worker: NodeId) -> Vec<(ItemId, FailOutcome)> {
        let held: Vec<ItemId> = self
            .deadlines
            .keys()
            .copied()
            .filter(|id| {
                matches!(self.records.get(id).map(|r| r.state),
                    Some(ItemState::Leased { worker: w, .. }) if w == worker)
            })
            .collect();
        held.into_iter()
            .map(|id| (id, self.release(id, true)))
            .collect()
    }

    /// The workers holding leases now.
    pub fn workers(&self) -> BTreeSet<NodeId> {
        self.deadlines
            .keys()
            .filter_map(|id| match self.records.get(id)?.state {
                ItemState::Leased { worker, .. } => Some(worker),
                _ => None,
            })
            .collect()
    }

    /// The earliest lease deadline.
    pub fn next_deadline(&self) -> Option<Instant> {
        self.deadlines.values().min().copied()
    }

    /// Takes every pending item out (the drain snapshot: move them elsewhere with
    /// [`restore`](Self::restore)); each stays as a `Drained` tombstone.
    pub fn drain(&mut self) -> Vec<(Origin, Vec<u8>)> {
        let ids: Vec<ItemId> = core::mem::take(&mut self.pending).into_iter().collect();
        let mut out = Vec::with_capacity(ids.len());
        for id in ids {
            if let Some(r) = self.records.get(&id) {
                out.push((r.origin, r.payload.clone()));
            }
            self.set_state(id, ItemState::Drained, EventKind::DrainSnapshot);
        }
        out
    }

    /// Puts drained items back as pending: an item this queue drained becomes pending again
    /// (the same item), one it never held is enqueued anew; an origin present in any other
    /// state is a repeat and skipped, so a restore sent twice restores once.
    ///
    /// # Errors
    ///
    /// [`QueueError::Full`] once the queue is full; the items before it were restored.
    pub fn restore(&mut self, items: &[(Origin, Vec<u8>)]) -> Result<usize, QueueError> {
        let mut restored = 0;
        for (origin, payload) in items {
            if let Some(&id) = self.origins.get(origin) {
                // Drain then restore on the same shard is the operator's round trip: the
                // drained record comes back (skipping it restored nothing, silently).
                if self.records.get(&id).map(|r| r.state) == Some(ItemState::Drained) {
                    self.set_state(id, ItemState::Pending, EventKind::RestoreSnapshot);
                    self.pending.insert(id);
                    restored += 1;
                }
                continue;
            }
            let id = self.enqueue(*origin, payload)?;
            if let Some(r) = self.records.get_mut(&id) {
                r.change = EventKind::RestoreSnapshot;
            }
            restored += 1;
        }
        Ok(restored)
    }

    /// Checks that `token` is accepted now: this owner's fence, the item leased under that
    /// grant.
    ///
    /// # Errors
    ///
    /// [`QueueError::StaleFence`] (another owner's token), [`QueueError::UnknownItem`],
    /// [`QueueError::StaleLease`] (no longer leased under that grant).
    pub fn check(&self, token: &OwnershipToken) -> Result<(), QueueError> {
        if token.fence != self.fence {
            return Err(QueueError::StaleFence {
                presented: token.fence,
                current: self.fence,
            });
        }
        let record = self
            .records
            .get(&token.item)
            .ok_or(QueueError::UnknownItem { item: token.item })?;
        match record.state {
            ItemState::Leased { lease, .. }
                if lease == token.lease && record.attempts == token.attempt =>
            {
                Ok(())
            }
            _ => Err(QueueError::StaleLease {
                item: token.item,
                lease: token.lease,
            }),
        }
    }

    fn release(&mut self, id: ItemId, requeue: bool) -> FailOutcome {
        self.deadlines.remove(&id);
        let attempts = self.records.get(&id).map_or(0, |r| r.attempts);
        if requeue && attempts < self.max_attempts {
            self.set_state(id, ItemState::Pending, EventKind::Failed);
            self.pending.insert(id);
            FailOutcome::Requeued
        } else {
            self.set_state(id, ItemState::DeadLettered, EventKind::Failed);
            FailOutcome::DeadLettered
        }
    }

    fn set_state(&mut self, id: ItemId, state: ItemState, change: EventKind) {
        let Some(record) = self.records.get_mut(&id) else {
            return;
        };
        self.by_version.remove(&record.version);
        self.version += 1;
        record.version = self.version;
        record.state = state;
        record.change = change;
        self.by_version.insert(self.version, id);
    }
}
