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
///
/// # Records of earlier owners
///
/// A newer owner sends its whole queue from version 0, in version order. The records the
/// replica held stay until that owner's record of the same item replaces them, each under the
/// fence of the owner it came from: until the newer owner's first pass is through, they may
/// be the only copy of items an earlier owner acknowledged. Clearing them at the newer owner's
/// first batch lost such items when that owner lapsed before its pass was through (issue 16,
/// `queue-owner-lapse` seed 569: 45 acknowledged items, the replica being also the next
/// owner). A recovery pulls them all ([`chunk`](Self::chunk)) and merges every item at its
/// newest `(fence, version)`, so an earlier owner's record never overrides a newer one's.
/// They are bounded as the owner's queue is: one record per item id.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ReplicaStore {
    promised: FencingToken,
    source: FencingToken,
    applied: u64,
    /// Every item held, with the fence of the owner whose record it is (`source`, or an
    /// earlier owner's for an item `source` has not sent yet).
    records: BTreeMap<ItemId, (FencingToken, ItemRecord)>,
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
        self.records.values().map(|(_, r)| r)
    }

    /// The records it holds, in id order, each with the fence of the owner it came from.
    pub fn sourced_records(&self) -> impl Iterator<Item = (FencingToken, &ItemRecord)> + '_ {
        self.records.values().map(|(f, r)| (*f, r))
    }

    /// Applies a batch from the owner under `batch.fence`.
    ///
    /// A batch of a newer owner starting from 0 starts a new copy (the records held stay until
    /// replaced: see [Records of earlier owners](Self#records-of-earlier-owners)); one of the
    /// same owner applies if it starts at or before what is held; anything else changes
    /// nothing.
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
            if self.keep(batch.fence, rec) {
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

    /// Keeps `rec` of the owner under `fence` if it is newer than the record held of its item
    /// (by `(fence, version)`); returns whether it did.
    fn keep(&mut self, fence: FencingToken, rec: &ItemRecord) -> bool {
        let newer = self
            .records
            .get(&rec.id)
            .is_none_or(|(f, held)| (*f, held.version) < (fence, rec.version));
        if newer {
            self.records.insert(rec.id, (fence, rec.clone()));
        }
        newer
    }

    /// The snapshot chunk after `(source, after)`, records ordered by `(owner's fence,
    /// version)`: the records of owner `source` changed after version `after`, or, once there
    /// are none, those of the next owner it holds records of from version 0; as many as fit
    /// one batch ([`BATCH_RECORDS_BYTES`](super::BATCH_RECORDS_BYTES)), all of one owner (the
    /// batch's fence). `done` once nothing follows it. The last chunk of the current copy ends
    /// at the version it holds.
    pub fn chunk(&self, source: FencingToken, after: u64) -> Batch {
        let next = self
            .records
            .values()
            .filter(|(f, r)| *f > source || (*f == source && r.version > after))
            .map(|(f, _)| *f)
            .min();
        let (fence, from) = match next {
            Some(f) if f > source => (f, 0),
            Some(f) => (f, after),
            None if self.source > source => (self.source, 0),
            None => (source, after),
        };
        let mut changed: Vec<&ItemRecord> = self
            .records
            .values()
            .filter(|(f, r)| *f == fence && r.version > from)
            .map(|(_, r)| r)
            .collect();
        changed.sort_by_key(|r| r.version);
        let (records, more) = fill_batch(changed);
        let last = records.last().map_or(from, |r| r.version);
        let later = self.records.values().any(|(f, _)| *f > fence);
        let to = if fence == self.source && !more {
            self.applied.max(last)
        } else {
            last
        };
        Batch {
            fence,
            from,
            to,
            done: !more && !later,
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
        encode_checkpoint((self.promised, self.source, self.applied), touched)
    }

    /// Its whole state as checkpoint records of at most `per_record` items each, from which
    /// [`restore`](Self::restore) rebuilds it exactly: the records of earlier owners first,
    /// each under its owner's fence, then the current copy's (a header alone if it has none).
    pub fn compacted(&self, per_record: usize) -> Vec<Vec<u8>> {
        let mut by_source: BTreeMap<FencingToken, Vec<&ItemRecord>> = BTreeMap::new();
        by_source.entry(self.source).or_default();
        for (f, r) in self.records.values() {
            by_source.entry(*f).or_default().push(r);
        }
        let mut out = Vec::new();
        for (source, records) in by_source {
            // Fences only grow, so the current copy's comes last and sets `applied`.
            let applied = if source == self.source {
                self.applied
            } else {
                0
            };
            let header = (self.promised, source, applied);
            if records.is_empty() {
                out.push(encode_checkpoint(header, []));
            }
            for chunk in records.chunks(per_record.max(1)) {
                out.push(encode_checkpoint(header, chunk.iter().copied()));
            }
        }
        out
    }

    /// Rebuilds a replica from the checkpoint records it wrote, in order. A record whose source
    /// is newer than the one before starts a new copy; the records held stay as
    /// [`apply`](Self::apply) keeps them.
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
            store.promised = promised;
            store.source = source;
            store.applied = applied;
            for _ in 0..count {
                let rec = record_in(&mut r).map_err(err)?;
                // The rule `apply` kept it by: a record of a batch that also held older ones
                // (a resend) must not undo a newer one.
                store.keep(source, &rec);
            }
            r.finish().map_err(err)?;
        }
        Ok(store)
    }
}

/// A checkpoint record: the header `(promised, source, applied)` and `records`.
fn encode_checkpoint<'a>(
    (promised, source, applied): (FencingToken, FencingToken, u64),
    records: impl IntoIterator<Item = &'a ItemRecord>,
) -> Vec<u8> {
    let mut buf = Vec::new();
    let mut w = Writer::new(&mut buf);
    w.u64(promised.get());
    w.u64(source.get());
    w.u64(applied);
    let records: Vec<&ItemRecord> = records.into_iter().collect();
    w.u32(records.len() as u32);
    for r in records {
        record_out(&mut w, r);
    }
    buf
}
