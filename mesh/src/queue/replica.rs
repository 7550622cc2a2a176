//! A replica's copy of one shard's queue, its checkpoint (what the host makes durable), and the
//! promise that fences a deposed owner out.

use alloc::collections::BTreeMap;
use alloc::vec::Vec;

use super::error::CheckpointError;
use super::item::{ItemId, ItemRecord};
use super::wire::{Batch, fill_batch, record_in, record_out};
use crate::lease::FencingToken;
use crate::wire::codec::{Reader, Writer};

/// What a replica did with a batch.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Applied {
    /// Applied (records it already had at that version or later were skipped); it now holds
    /// `applied`.
    Applied {
        /// The version it holds.
        applied: u64,
        /// Records it applied (those it had already are not counted).
        records: usize,
    },
    /// The batch starts after what it holds (a lost batch before it): it holds `applied`, and
    /// the owner resends from there.
    Gap {
        /// The version it holds.
        applied: u64,
    },
    /// The batch comes from an owner below the fence this replica promised to a newer owner:
    /// refused, nothing changed.
    Fenced {
        /// The fence promised.
        promised: FencingToken,
    },
}

/// One shard's queue as a replica holds it: the records of the owner under `source` up to
/// version `applied`, and the highest fence it promised to follow.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ReplicaStore {
    promised: FencingToken,
    source: FencingToken,
    applied: u64,
    records: BTreeMap<ItemId, ItemRecord>,
}

impl ReplicaStore {
    /// An empty replica.
    pub fn new() -> Self {
        Self::default()
    }

    /// The fence of the owner whose records it holds.
    pub fn source(&self) -> FencingToken {
        self.source
    }

    /// The version it holds (its checkpoint).
    pub fn applied(&self) -> u64 {
        self.applied
    }

    /// The highest fence it promised to follow.
    pub fn promised(&self) -> FencingToken {
        self.promised
    }

    /// The records it holds, in id order.
    pub fn records(&self) -> impl Iterator<Item = &ItemRecord> + '_ {
        self.records.values()
    }

    /// Applies a batch from the owner under `batch.fence`.
    ///
    /// A batch of a newer owner starting from 0 replaces the whole copy; one of the same owner
    /// applies if it starts at or before what is held; anything else changes nothing.
    pub fn apply(&mut self, batch: &Batch) -> Applied {
        if batch.fence < self.promised || batch.fence < self.source {
            return Applied::Fenced {
                promised: self.promised.max(self.source),
            };
        }
        if batch.fence > self.source {
            if batch.from != 0 {
                // A newer owner that believes this replica holds its records: it does not.
                return Applied::Gap { applied: 0 };
            }
            self.records.clear();
            self.source = batch.fence;
            self.applied = 0;
        }
        self.promised = self.promised.max(batch.fence);
        if batch.from > self.applied {
            return Applied::Gap {
                applied: self.applied,
            };
        }
        let mut applied = 0;
        for rec in &batch.records {
            let newer = self
                .records
                .get(&rec.id)
                .is_none_or(|held| held.version < rec.version);
            if newer {
                self.records.insert(rec.id, rec.clone());
                applied += 1;
            }
        }
        self.applied = self.applied.max(batch.to);
        Applied::Applied {
            applied: self.applied,
            records: applied,
        }
    }

    /// Promises to follow no owner below `fence` (a new owner's recovery); returns what it holds:
    /// `(source fence, applied version)`.
    pub fn promise(&mut self, fence: FencingToken) -> (FencingToken, u64) {
        self.promised = self.promised.max(fence);
        (self.source, self.applied)
    }

    /// The snapshot chunk after version `after`: the records changed after it, in version
    /// order, as many as fit one batch ([`BATCH_RECORDS_BYTES`](super::BATCH_RECORDS_BYTES)).
    pub fn chunk(&self, after: u64) -> Batch {
        let mut changed: Vec<&ItemRecord> = self
            .records
            .values()
            .filter(|r| r.version > after)
            .collect();
        changed.sort_by_key(|r| r.version);
        let (records, more) = fill_batch(changed);
        let to = if more {
            records.last().map_or(after, |r| r.version)
        } else {
            self.applied.max(after)
        };
        Batch {
            fence: self.source,
            from: after,
            to,
            done: !more,
            pending: 0,
            active: 0,
            records,
        }
    }

    /// The durable record of a change: the header (promised, source, applied) and the records
    /// the change touched. Replaying every record a replica wrote, in order, with
    /// [`restore`](Self::restore) rebuilds it exactly.
    pub fn checkpoint_record<'a>(
        &self,
        touched: impl IntoIterator<Item = &'a ItemRecord>,
    ) -> Vec<u8> {
        let mut buf = Vec::new();
        let mut w = Writer::new(&mut buf);
        w.u64(self.promised.get());
        w.u64(self.source.get());
        w.u64(self.applied);
        let touched: Vec<&ItemRecord> = touched.into_iter().collect();
        w.u32(touched.len() as u32);
        for r in touched {
            record_out(&mut w, r);
        }
        buf
    }

    /// Rebuilds a replica from the checkpoint records it wrote, in order. A record whose source
    /// is newer than the one before starts a new copy.
    ///
    /// # Errors
    ///
    /// [`CheckpointError`] for a record that does not decode; nothing is built.
    pub fn restore<'a>(
        records: impl IntoIterator<Item = &'a [u8]>,
    ) -> Result<Self, CheckpointError> {
        let mut store = Self::new();
        for (k, bytes) in records.into_iter().enumerate() {
            let err = |source| CheckpointError::Record { record: k, source };
            let mut r = Reader::new(bytes);
            let promised = FencingToken::new(r.u64().map_err(err)?);
            let source = FencingToken::new(r.u64().map_err(err)?);
            let applied = r.u64().map_err(err)?;
            let count = r.u32().map_err(err)?;
            if source != store.source {
                store.records.clear();
            }
            store.promised = promised;
            store.source = source;
            store.applied = applied;
            for _ in 0..count {
                let rec = record_in(&mut r).map_err(err)?;
                store.records.insert(rec.id, rec);
            }
            r.finish().map_err(err)?;
        }
        Ok(store)
    }
}
