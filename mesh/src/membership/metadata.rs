//! Per-member, per-key versioned metadata with tombstones and bounded garbage collection.
//!
//! Only the owner writes its metadata. Every write (set or delete) raises the owner's
//! [`MetaVersion`] by one, so a copy at version `v` equals the owner's state after write `v`:
//! copies advance only by applying exactly the next write, or by a complete transfer (a delta from
//! the version they hold, or a full snapshot). Tombstones are dropped after a TTL; the copy then
//! remembers the newest dropped sequence number as its `floor`, and a peer holding a version older
//! than the floor gets a full snapshot instead of a delta. That is what keeps a member isolated by
//! a partition longer than the TTL from resurrecting keys deleted meanwhile.

use alloc::collections::BTreeMap;
use alloc::vec::Vec;

use thiserror::Error;

use crate::id::{MetaVersion, NodeId};
use crate::time::{Duration, Instant};
use crate::wire::{
    MAX_KEY_BYTES, MAX_META_CHUNK_BYTES, MAX_META_CHUNKS, MAX_VALUE_BYTES, MetaEntry,
};

/// Bytes a key costs against the metadata bound besides its value: the key and a sequence number.
const KEY_OVERHEAD_BYTES: usize = 8;
/// Metadata transfers in flight at once; more are refused until one completes or expires.
pub(crate) const MAX_PENDING_TRANSFERS: usize = 64;
/// A transfer whose chunks have not all arrived by then is dropped (a later sync retries).
pub(crate) const TRANSFER_TIMEOUT: Duration = Duration::from_secs(10);

/// Why a local metadata write was refused. Caller misuse; nothing changed.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum MetadataError {
    /// Keys are 1 to [`MAX_KEY_BYTES`] bytes of UTF-8.
    #[error("metadata key must be 1..={max} bytes, got {len}")]
    BadKeyLength {
        /// Its length.
        len: usize,
        /// The bound.
        max: usize,
    },
    /// Values are at most [`MAX_VALUE_BYTES`] bytes.
    #[error("metadata value of {len} bytes exceeds {max}")]
    ValueTooLong {
        /// Its length.
        len: usize,
        /// The bound.
        max: usize,
    },
    /// The write would exceed the configured per-member metadata bound.
    #[error("metadata would grow to {would_be} bytes, over the configured {limit}")]
    OverBudget {
        /// The size after the write.
        would_be: usize,
        /// `Config::max_metadata_bytes`.
        limit: usize,
    },
    /// Deleting a key that is not set.
    #[error("metadata key {key:?} is not set")]
    UnknownKey {
        /// The key.
        key: String,
    },
    /// The node has left the mesh; it no longer publishes.
    #[error("the node has left the mesh")]
    Left,
}

#[derive(Clone, Debug, PartialEq, Eq)]
struct Slot {
    seq: u32,
    value: Option<Box<[u8]>>,
}

/// A member's metadata, as the owner holds it or as a copy elsewhere.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Metadata {
    version: MetaVersion,
    floor: u32,
    slots: BTreeMap<String, Slot>,
    bytes: usize,
}

impl Metadata {
    pub(crate) fn empty(version: MetaVersion) -> Self {
        Self {
            version,
            ..Self::default()
        }
    }

    /// The version of this copy.
    pub fn version(&self) -> MetaVersion {
        self.version
    }

    /// The live value of `key`.
    pub fn get(&self, key: &str) -> Option<&[u8]> {
        self.slots.get(key).and_then(|s| s.value.as_deref())
    }

    /// Every key, tombstones included (`value == None`), in key order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, u32, Option<&[u8]>)> {
        self.slots
            .iter()
            .map(|(k, s)| (k.as_str(), s.seq, s.value.as_deref()))
    }

    /// Live keys and their values, in key order.
    pub fn live(&self) -> impl Iterator<Item = (&str, &[u8])> {
        self.slots
            .iter()
            .filter_map(|(k, s)| s.value.as_deref().map(|v| (k.as_str(), v)))
    }

    /// Bytes counted against the bound (keys, values and tombstones' keys).
    pub fn size_bytes(&self) -> usize {
        self.bytes
    }

    fn slot_bytes(key: &str, value: Option<&[u8]>) -> usize {
        key.len() + value.map_or(0, <[u8]>::len) + KEY_OVERHEAD_BYTES
    }

    /// Size after writing `key = value`.
    fn bytes_after(&self, key: &str, value: Option<&[u8]>) -> usize {
        let old = self
            .slots
            .get(key)
            .map_or(0, |s| Self::slot_bytes(key, s.value.as_deref()));
        self.bytes - old + Self::slot_bytes(key, value)
    }

    /// Checks a local write against the key, value and total bounds.
    pub(crate) fn check_write(
        &self,
        key: &str,
        value: Option<&[u8]>,
        limit: usize,
    ) -> Result<(), MetadataError> {
        if key.is_empty() || key.len() > MAX_KEY_BYTES {
            return Err(MetadataError::BadKeyLength {
                len: key.len(),
                max: MAX_KEY_BYTES,
            });
        }
        if let Some(v) = value
            && v.len() > MAX_VALUE_BYTES
        {
            return Err(MetadataError::ValueTooLong {
                len: v.len(),
                max: MAX_VALUE_BYTES,
            });
        }
        if value.is_none() && self.get(key).is_none() {
            return Err(MetadataError::UnknownKey {
                key: key.to_owned(),
            });
        }
        let would_be = self.bytes_after(key, value);
        if would_be > limit && would_be > self.bytes {
            return Err(MetadataError::OverBudget { would_be, limit });
        }
        Ok(())
    }

    /// Applies write `version` (the caller has checked it is the next one).
    pub(crate) fn apply_write(&mut self, version: MetaVersion, key: &str, value: Option<&[u8]>) {
        debug_assert!(
            (version.epoch == self.version.epoch && version.seq == self.version.seq + 1)
                || (version.epoch > self.version.epoch && version.seq == 1),
            "metadata writes apply in order: {} after {}",
            version,
            self.version
        );
        if version.epoch != self.version.epoch {
            *self = Self::empty(MetaVersion::new(version.epoch, 0));
        }
        self.bytes = self.bytes_after(key, value);
        self.slots.insert(
            key.to_owned(),
            Slot {
                seq: version.seq,
                value: value.map(Box::from),
            },
        );
        self.version = version;
    }

    /// Whether `version` is exactly the write that follows this copy.
    pub(crate) fn is_next(&self, version: MetaVersion) -> bool {
        (version.epoch == self.version.epoch && version.seq == self.version.seq.wrapping_add(1))
            || (version.epoch > self.version.epoch && version.seq == 1)
    }

    /// Drops the tombstone of `key` if it is still the one written at `seq`.
    pub(crate) fn collect_tombstone(&mut self, key: &str, seq: u32) {
        if self
            .slots
            .get(key)
            .is_some_and(|s| s.seq == seq && s.value.is_none())
        {
            self.bytes -= Self::slot_bytes(key, None);
            self.slots.remove(key);
            self.floor = self.floor.max(seq);
        }
    }

    /// What a peer holding `have` needs: `Some(base)` and a delta, or `None` and every live key.
    pub(crate) fn transfer_since(
        &self,
        have: MetaVersion,
    ) -> (Option<MetaVersion>, Vec<MetaEntry>) {
        let entry = |(k, s): (&String, &Slot)| MetaEntry {
            key: k.clone(),
            seq: s.seq,
            value: s.value.as_deref().map(<[u8]>::to_vec),
        };
        if have.epoch == self.version.epoch && have.seq >= self.floor && have.seq < self.version.seq
        {
            (
                Some(have),
                self.slots
                    .iter()
                    .filter(|(_, s)| s.seq > have.seq)
                    .map(entry)
                    .collect(),
            )
        } else {
            (
                None,
                self.slots
                    .iter()
                    .filter(|(_, s)| s.value.is_some())
                    .map(entry)
                    .collect(),
            )
        }
    }

    /// Applies a complete transfer. A delta must start at or before this copy's version (same
    /// epoch); a snapshot replaces the copy. Returns the tombstones received (for garbage collection), or `None` if the
    /// transfer did not fit this copy.
    pub(crate) fn apply_transfer(
        &mut self,
        base: Option<MetaVersion>,
        version: MetaVersion,
        entries: Vec<MetaEntry>,
    ) -> Option<Vec<(String, u32)>> {
        // A delta from `base` holds every key written after `base`, so it also brings any copy
        // between `base` and `version` (an exact earlier state) up to `version`.
        let applies = |b: MetaVersion| b.epoch == self.version.epoch && b.seq <= self.version.seq;
        if version <= self.version || base.is_some_and(|b| !applies(b)) {
            return None;
        }
        let held = self.version.seq;
        if base.is_none() {
            // A snapshot carries no tombstones: a later peer older than `version` needs one too.
            *self = Self {
                floor: version.seq,
                ..Self::empty(version)
            };
        }
        let mut tombstones = Vec::new();
        for e in entries {
            if e.seq > version.seq || (base.is_some() && e.seq <= held) {
                continue;
            }
            if e.value.is_none() {
                tombstones.push((e.key.clone(), e.seq));
            }
            self.bytes = self.bytes_after(&e.key, e.value.as_deref());
            self.slots.insert(
                e.key,
                Slot {
                    seq: e.seq,
                    value: e.value.map(Vec::into_boxed_slice),
                },
            );
        }
        self.version = version;
        Some(tombstones)
    }
}

/// Splits transfer entries into datagram-sized chunks (at least one, possibly empty).
pub(crate) fn chunk_entries(entries: Vec<MetaEntry>) -> Vec<Vec<MetaEntry>> {
    let mut chunks = vec![Vec::new()];
    let mut used = 0;
    for e in entries {
        let size = 2 + e.key.len() + 4 + 1 + 2 + e.value.as_ref().map_or(0, Vec::len);
        if used + size > MAX_META_CHUNK_BYTES && used > 0 {
            chunks.push(Vec::new());
            used = 0;
        }
        used += size;
        chunks.last_mut().expect("chunks starts non-empty").push(e);
    }
    debug_assert!(
        chunks.len() <= MAX_META_CHUNKS,
        "metadata bound keeps transfers within MAX_META_CHUNKS"
    );
    chunks
}

/// A transfer being reassembled from its chunks.
#[derive(Debug)]
struct Transfer {
    /// Who sends it: chunks from another sender never complete it.
    from: NodeId,
    base: Option<MetaVersion>,
    version: MetaVersion,
    chunks: u8,
    received: u128,
    entries: Vec<MetaEntry>,
    started: Instant,
}

/// A transfer whose chunks have all arrived.
pub(crate) struct CompleteTransfer {
    pub(crate) base: Option<MetaVersion>,
    pub(crate) version: MetaVersion,
    pub(crate) entries: Vec<MetaEntry>,
}

/// Chunked metadata transfers being reassembled, at most one per member.
#[derive(Debug, Default)]
pub(crate) struct Transfers {
    pending: BTreeMap<NodeId, Transfer>,
}

impl Transfers {
    /// Takes one chunk; returns the whole transfer once its last chunk arrived.
    #[expect(
        clippy::too_many_arguments,
        reason = "the sender and the fields of one MetaPush message"
    )]
    pub(crate) fn accept(
        &mut self,
        now: Instant,
        from: NodeId,
        node: NodeId,
        base: Option<MetaVersion>,
        version: MetaVersion,
        chunk: u8,
        chunks: u8,
        entries: Vec<MetaEntry>,
    ) -> Option<CompleteTransfer> {
        if chunks == 1 {
            self.pending.remove(&node);
            return Some(CompleteTransfer {
                base,
                version,
                entries,
            });
        }
        let fits = |t: &Transfer| {
            t.from == from && t.base == base && t.version == version && t.chunks == chunks
        };
        match self.pending.get(&node) {
            Some(t) if fits(t) => {}
            Some(t) if t.version >= version => return None,
            _ => {
                if !self.pending.contains_key(&node) && self.pending.len() >= MAX_PENDING_TRANSFERS
                {
                    return None;
                }
                self.pending.insert(
                    node,
                    Transfer {
                        from,
                        base,
                        version,
                        chunks,
                        received: 0,
                        entries: Vec::new(),
                        started: now,
                    },
                );
            }
        }
        let t = self.pending.get_mut(&node)?;
        let bit = 1u128 << chunk;
        if t.received & bit != 0 {
            return None;
        }
        t.received |= bit;
        t.entries.extend(entries);
        if t.received.count_ones() == u32::from(t.chunks) {
            let t = self.pending.remove(&node)?;
            return Some(CompleteTransfer {
                base: t.base,
                version: t.version,
                entries: t.entries,
            });
        }
        None
    }

    /// Drops transfers older than [`TRANSFER_TIMEOUT`].
    pub(crate) fn expire(&mut self, now: Instant) {
        self.pending
            .retain(|_, t| now.saturating_duration_since(t.started) < TRANSFER_TIMEOUT);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(seq: u32) -> MetaVersion {
        MetaVersion::new(1, seq)
    }

    #[test]
    fn delta_or_snapshot_by_floor() {
        let mut owner = Metadata::empty(v(0));
        owner.apply_write(v(1), "a", Some(b"1"));
        owner.apply_write(v(2), "b", Some(b"2"));
        owner.apply_write(v(3), "a", None);
        let (base, entries) = owner.transfer_since(v(1));
        assert_eq!(base, Some(v(1)));
        assert_eq!(entries.len(), 2, "b and a's tombstone");

        owner.collect_tombstone("a", 3);
        let (base, entries) = owner.transfer_since(v(1));
        assert_eq!(base, None, "a peer older than the floor gets a snapshot");
        assert_eq!(
            entries,
            vec![MetaEntry {
                key: "b".into(),
                seq: 2,
                value: Some(b"2".to_vec())
            }]
        );
    }

    #[test]
    fn snapshot_removes_keys_deleted_long_ago() {
        // The copy was isolated at version 1 while "a" was deleted and its tombstone collected.
        let mut copy = Metadata::empty(v(0));
        copy.apply_write(v(1), "a", Some(b"1"));
        let mut owner = copy.clone();
        owner.apply_write(v(2), "a", None);
        owner.collect_tombstone("a", 2);
        let (base, entries) = owner.transfer_since(copy.version());
        copy.apply_transfer(base, owner.version(), entries).unwrap();
        assert_eq!(copy.get("a"), None, "deleted key must not come back");
        assert_eq!(copy.version(), v(2));
    }

    #[test]
    fn budget_and_bounds() {
        let m = Metadata::empty(v(0));
        assert!(matches!(
            m.check_write("", Some(b"x"), 4096),
            Err(MetadataError::BadKeyLength { .. })
        ));
        assert!(matches!(
            m.check_write("k", Some(&[0; 2000]), 4096),
            Err(MetadataError::ValueTooLong { .. })
        ));
        assert!(matches!(
            m.check_write("k", Some(&[0; 1000]), 100),
            Err(MetadataError::OverBudget { .. })
        ));
        assert!(matches!(
            m.check_write("k", None, 100),
            Err(MetadataError::UnknownKey { .. })
        ));
    }

    #[test]
    fn chunks_reassemble_in_any_order() {
        let entries: Vec<_> = (0..8)
            .map(|i| MetaEntry {
                key: format!("k{i}"),
                seq: i + 1,
                value: Some(vec![7; 500]),
            })
            .collect();
        let chunks = chunk_entries(entries.clone());
        assert!(chunks.len() > 1);
        let n = chunks.len() as u8;
        let mut t = Transfers::default();
        let mut done = None;
        for (i, c) in chunks.into_iter().enumerate().rev() {
            done = t.accept(
                Instant::ZERO,
                NodeId::new(2),
                NodeId::new(1),
                None,
                v(8),
                i as u8,
                n,
                c,
            );
        }
        let mut got = done.expect("complete").entries;
        got.sort_by_key(|e| e.seq);
        assert_eq!(got, entries);
    }
}
