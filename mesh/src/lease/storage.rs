//! [`LogStore`]: a voter's Raft log, hard state, configuration and newest snapshot, as raft-rs's
//! [`Storage`].
//!
//! raft-rs's `MemStorage` copies every entry from the requested index to the end of the log on
//! each read (and cuts the copy to the size budget afterwards), keeps no snapshot data, and
//! answers the term of the entry before its first one only when a snapshot was installed there.
//! This store keeps the entries in a ring, copies only what the size budget takes, remembers
//! the index and term of the last compacted entry, and holds the newest snapshot with its data
//! (the encoded lease table), which is what a lagging follower is sent.
//!
//! The entries may start before the snapshot (a few entries are kept behind it so that a
//! follower a little behind catches up by appends): raft-rs asks for a snapshot only when a
//! follower needs an entry older than the first one kept.
//!
//! # Durable writes: why the host persists and the core stays sans-IO
//!
//! The core never touches a disk (no I/O, no clock), and the simulator models a crash by
//! keeping this store as it was (its "disk"). A host with a real disk (meshkitd) turns on
//! recording ([`LeaseGroup::record_durable_writes`](super::LeaseGroup::record_durable_writes)):
//! from then on every change this store makes is also queued, in order, as a self-checking
//! [`DurableWrite`]: an appended record (entries, hard state, configuration, a snapshot taken,
//! a compaction) or, after a compaction or a snapshot install, the whole state as a new set of
//! records that replaces the file. The host writes and syncs every write it polled before it
//! sends any datagram polled after them, which keeps raft's rule (votes and acknowledgements go
//! out only after what they promise is on disk), because the group queues those messages only
//! after the store changed. [`DurableState::from_records`](super::DurableState::from_records)
//! replays the records (checking each, never panicking) into the same store a restart takes.
//!
//! The alternatives were a `Storage` the group is generic over (the node's would do file I/O
//! inside raft-rs's calls, with no place to report an I/O error and a second implementation
//! for the simulator to keep in step) and asking raft-rs's Ready for what to persist in the
//! host (raft's protobuf types in the host's API, and the group's own writes, such as
//! snapshots and configuration, outside the Ready). Replaying the exact sequence of store
//! operations means there is one store, the same in the simulator and on a disk.

use alloc::collections::VecDeque;

use raft::eraftpb::{ConfState, Entry, EntryType, HardState, Snapshot, SnapshotMetadata};
use raft::{Error as RaftError, GetEntriesContext, RaftState, Storage, StorageError};

use super::MAX_VOTERS;
use super::error::DurableError;
use super::wire::{self, MAX_ENTRY_CONTEXT_BYTES, MAX_ENTRY_DATA_BYTES, MAX_SNAPSHOT_DATA_BYTES};
use crate::wire::DecodeError;
use crate::wire::codec::{Reader, Writer};

/// Version of the durable record encoding ([`DurableWrite`]).
pub const DURABLE_RECORD_VERSION: u8 = 1;
/// Entries in one appended record at most (raft-rs hands out far fewer per Ready; a checkpoint
/// splits its entries into records of this many).
pub const MAX_ENTRIES_PER_RECORD: usize = 1024;
/// The longest durable record: a snapshot record with the largest table.
pub const MAX_DURABLE_RECORD_BYTES: usize = 64 + MAX_VOTERS * 8 + MAX_SNAPSHOT_DATA_BYTES;

const _: () = assert!(
    2 + 4
        + MAX_ENTRIES_PER_RECORD
            * (1 + 8 + 8 + 2 + MAX_ENTRY_DATA_BYTES + 2 + MAX_ENTRY_CONTEXT_BYTES)
        <= MAX_DURABLE_RECORD_BYTES,
    "an append record of the most entries fits the record bound"
);

mod record {
    pub(super) const BASE: u8 = 1;
    pub(super) const APPEND: u8 = 2;
    pub(super) const HARD_STATE: u8 = 3;
    pub(super) const CONF_STATE: u8 = 4;
    pub(super) const INSTALL: u8 = 5;
    pub(super) const SNAPSHOT: u8 = 6;
}

/// One write a voter's host must make durable (written and synced) before it sends any
/// datagram it polls after it. See the module documentation of `storage` in the lease module.
#[must_use = "a durable write not written breaks Raft's persistence rule"]
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DurableWrite {
    /// Append this record to the voter's file.
    Append(Vec<u8>),
    /// Replace every record of the voter's file with these (the whole state, after a
    /// compaction, a snapshot install or the start of recording): write them to a new file,
    /// sync it, and rename it over the old one.
    Replace(Vec<Vec<u8>>),
}

/// The size of an entry as raft-rs's budgets count it: its protobuf encoding (`eraftpb.Entry`:
/// fields 1 to 6, each with a one-byte tag, left out when zero or empty), computed without
/// encoding, so that this store cuts reads exactly where raft-rs's `limit_size` would.
pub(crate) fn entry_size(e: &Entry) -> u64 {
    fn varint(v: u64) -> u64 {
        u64::from((64 - (v | 1).leading_zeros()).div_ceil(7))
    }
    fn int(v: u64) -> u64 {
        if v == 0 { 0 } else { 1 + varint(v) }
    }
    fn bytes(len: usize) -> u64 {
        if len == 0 {
            0
        } else {
            1 + varint(len as u64) + len as u64
        }
    }
    int(e.get_entry_type() as u64)
        + int(e.term)
        + int(e.index)
        + bytes(e.data.len())
        + bytes(e.context.len())
        + if e.sync_log { 2 } else { 0 }
}

/// A voter's persistent Raft state. The group treats it as the disk: raft-rs reads it through
/// [`Storage`]; the group writes it in raft-rs's Ready order.
#[derive(Clone, Debug, Default)]
pub(crate) struct LogStore {
    hard_state: HardState,
    conf_state: ConfState,
    /// The newest snapshot; index 0 until the first one is taken or installed.
    snapshot: Snapshot,
    /// Index and term of the entry just before `entries` (0, 0 before any compaction).
    compacted: (u64, u64),
    entries: VecDeque<Entry>,
    /// Index of the founders' membership entries, applied as the initial configuration.
    bootstrap_index: u64,
    /// Writes queued for a host with a disk; `None` while not recording.
    journal: Option<VecDeque<DurableWrite>>,
}

impl LogStore {
    /// Index of the first entry kept.
    pub(crate) fn first(&self) -> u64 {
        self.compacted.0 + 1
    }

    /// Index of the last entry (the compacted index when none is kept).
    pub(crate) fn last(&self) -> u64 {
        self.compacted.0 + self.entries.len() as u64
    }

    /// Entries kept.
    pub(crate) fn len(&self) -> usize {
        self.entries.len()
    }

    pub(crate) fn hard_state(&self) -> &HardState {
        &self.hard_state
    }

    pub(crate) fn conf_state(&self) -> &ConfState {
        &self.conf_state
    }

    /// The newest snapshot (index 0: none).
    pub(crate) fn snapshot_ref(&self) -> &Snapshot {
        &self.snapshot
    }

    /// The term of entry `index`, if it is the compacted one or kept.
    pub(crate) fn term_of(&self, index: u64) -> Option<u64> {
        if index == self.compacted.0 {
            return Some(self.compacted.1);
        }
        if index < self.first() || index > self.last() {
            return None;
        }
        self.entries
            .get((index - self.first()) as usize)
            .map(|e| e.term)
    }

    /// Appends entries that continue the log or overwrite its tail (what raft-rs hands out in a
    /// Ready). Entries at or before the compacted index are already committed and applied, so
    /// they are skipped.
    pub(crate) fn append(&mut self, entries: &[Entry]) {
        let fresh: &[Entry] = match entries.iter().position(|e| e.index > self.compacted.0) {
            Some(i) => &entries[i..],
            None => return,
        };
        let start = fresh[0].index;
        debug_assert!(
            start <= self.last() + 1,
            "raft-rs appends without a gap: {start} after {}",
            self.last()
        );
        self.entries.truncate((start - self.first()) as usize);
        self.entries.extend(fresh.iter().cloned());
        if self.journal.is_some() {
            for chunk in fresh.chunks(MAX_ENTRIES_PER_RECORD) {
                let rec = encode_record(record::APPEND, |w| write_entries(w, chunk));
                self.journal_push(rec);
            }
        }
    }

    pub(crate) fn set_hard_state(&mut self, hs: HardState) {
        self.hard_state = hs;
        self.journal_hard_state();
    }

    pub(crate) fn set_commit(&mut self, commit: u64) {
        self.hard_state.commit = commit;
        self.journal_hard_state();
    }

    pub(crate) fn set_conf_state(&mut self, cs: ConfState) {
        self.conf_state = cs;
        if self.journal.is_some() {
            let rec = encode_record(record::CONF_STATE, |w| write_voters(w, &self.conf_state));
            self.journal_push(rec);
        }
    }

    pub(crate) fn set_bootstrap_index(&mut self, index: u64) {
        self.bootstrap_index = index;
    }

    pub(crate) fn bootstrap_index(&self) -> u64 {
        self.bootstrap_index
    }

    /// Takes a snapshot received from the leader: the log restarts after it.
    pub(crate) fn install_snapshot(&mut self, snapshot: Snapshot) {
        let meta = snapshot.get_metadata();
        self.hard_state.term = self.hard_state.term.max(meta.term);
        self.hard_state.commit = self.hard_state.commit.max(meta.index);
        self.conf_state = meta.get_conf_state().clone();
        self.compacted = (meta.index, meta.term);
        self.entries.clear();
        self.snapshot = snapshot;
        self.journal_checkpoint();
    }

    /// Records a snapshot of the applied state at `index` (which must be kept or compacted).
    pub(crate) fn set_snapshot(&mut self, index: u64, data: Vec<u8>) {
        let term = self
            .term_of(index)
            .expect("snapshots are taken at an applied index, which the log still holds");
        let mut meta = SnapshotMetadata {
            index,
            term,
            ..SnapshotMetadata::default()
        };
        meta.set_conf_state(self.conf_state.clone());
        let mut snapshot = Snapshot::default();
        snapshot.set_metadata(meta);
        snapshot.data = data.into();
        self.snapshot = snapshot;
        if self.journal.is_some() {
            let rec = encode_record(record::SNAPSHOT, |w| {
                w.u64(index);
                w.bytes32(&self.snapshot.data);
            });
            self.journal_push(rec);
        }
    }

    /// Drops every entry up to and including `index` (at most the snapshot's index).
    pub(crate) fn compact(&mut self, index: u64) {
        if index <= self.compacted.0 {
            return;
        }
        debug_assert!(
            index <= self.snapshot.get_metadata().index,
            "compaction past the snapshot would lose applied state"
        );
        let Some(term) = self.term_of(index) else {
            return;
        };
        let drop = (index - self.compacted.0) as usize;
        self.entries.drain(..drop.min(self.entries.len()));
        self.compacted = (index, term);
        // The file would only grow: write the (now smaller) state afresh.
        self.journal_checkpoint();
    }

    // ---- durable writes --------------------------------------------------------------------

    /// Starts recording durable writes; the first is the whole state.
    pub(crate) fn start_journal(&mut self) {
        self.journal = Some(VecDeque::new());
        self.journal_checkpoint();
    }

    /// Stops recording (the store becomes a crashed voter's disk).
    pub(crate) fn stop_journal(&mut self) {
        self.journal = None;
    }

    pub(crate) fn next_write(&mut self) -> Option<DurableWrite> {
        self.journal.as_mut()?.pop_front()
    }

    fn journal_push(&mut self, rec: Vec<u8>) {
        if let Some(j) = self.journal.as_mut() {
            j.push_back(DurableWrite::Append(rec));
        }
    }

    fn journal_hard_state(&mut self) {
        if self.journal.is_some() {
            let rec = encode_record(record::HARD_STATE, |w| {
                write_hard_state(w, &self.hard_state)
            });
            self.journal_push(rec);
        }
    }

    /// Replaces whatever is queued by the whole state: the queued writes are part of it.
    fn journal_checkpoint(&mut self) {
        if self.journal.is_none() {
            return;
        }
        let mut records = vec![encode_record(record::BASE, |w| {
            w.u64(self.bootstrap_index);
            write_hard_state(w, &self.hard_state);
            write_voters(w, &self.conf_state);
            w.u64(self.compacted.0);
            w.u64(self.compacted.1);
            write_snapshot(w, &self.snapshot);
        })];
        let entries: Vec<Entry> = self.entries.iter().cloned().collect();
        for chunk in entries.chunks(MAX_ENTRIES_PER_RECORD) {
            records.push(encode_record(record::APPEND, |w| write_entries(w, chunk)));
        }
        if let Some(j) = self.journal.as_mut() {
            j.clear();
            j.push_back(DurableWrite::Replace(records));
        }
    }

    /// Rebuilds a store from its durable records, in the order they were written. Checks every
    /// record and the result; never panics.
    pub(crate) fn from_records<'a>(
        records: impl IntoIterator<Item = &'a [u8]>,
    ) -> Result<Self, DurableError> {
        let mut store = Self::default();
        let mut count = 0;
        for (i, bytes) in records.into_iter().enumerate() {
            store
                .replay(bytes)
                .map_err(|source| DurableError::Record { record: i, source })?;
            count += 1;
        }
        if count == 0 {
            return Err(DurableError::Empty);
        }
        let commit = store.hard_state.commit;
        if commit < store.compacted.0 || commit > store.last() {
            return Err(DurableError::Inconsistent {
                what: "commit index outside the log",
                value: commit,
            });
        }
        let snap = store.snapshot.get_metadata().index;
        if snap < store.compacted.0 || snap > commit {
            return Err(DurableError::Inconsistent {
                what: "snapshot index outside the committed log",
                value: snap,
            });
        }
        if store.bootstrap_index > commit {
            return Err(DurableError::Inconsistent {
                what: "bootstrap index past the commit index",
                value: store.bootstrap_index,
            });
        }
        Ok(store)
    }

    fn replay(&mut self, bytes: &[u8]) -> Result<(), DecodeError> {
        if bytes.len() > MAX_DURABLE_RECORD_BYTES {
            return Err(DecodeError::Oversized {
                len: bytes.len(),
                max: MAX_DURABLE_RECORD_BYTES,
            });
        }
        let mut r = Reader::new(bytes);
        let version = r.u8()?;
        if version != DURABLE_RECORD_VERSION {
            return Err(DecodeError::UnsupportedVersion {
                found: version,
                supported: DURABLE_RECORD_VERSION,
            });
        }
        let invalid = |field: &'static str, value: u64| DecodeError::InvalidValue { field, value };
        match r.u8()? {
            record::BASE => {
                let bootstrap_index = r.u64()?;
                let hard_state = read_hard_state(&mut r)?;
                let conf_state = read_voters(&mut r)?;
                let compacted = (r.u64()?, r.u64()?);
                let snapshot = read_snapshot(&mut r)?;
                let snap_index = snapshot.get_metadata().index;
                if snap_index < compacted.0 {
                    return Err(invalid("snapshot index", snap_index));
                }
                *self = Self {
                    hard_state,
                    conf_state,
                    snapshot,
                    compacted,
                    entries: VecDeque::new(),
                    bootstrap_index,
                    journal: None,
                };
            }
            record::APPEND => {
                let entries = read_entries(&mut r)?;
                let Some(first) = entries.first() else {
                    return Err(invalid("appended entries", 0));
                };
                if first.index <= self.compacted.0 || first.index > self.last() + 1 {
                    return Err(invalid("appended index", first.index));
                }
                if entries.windows(2).any(|p| p[1].index != p[0].index + 1) {
                    return Err(invalid("appended indices", first.index));
                }
                self.append(&entries);
            }
            record::HARD_STATE => self.hard_state = read_hard_state(&mut r)?,
            record::CONF_STATE => self.conf_state = read_voters(&mut r)?,
            record::INSTALL => {
                let snapshot = read_snapshot(&mut r)?;
                if snapshot.get_metadata().index == 0 {
                    return Err(invalid("installed snapshot index", 0));
                }
                self.install_snapshot(snapshot);
            }
            record::SNAPSHOT => {
                let index = r.u64()?;
                let data = r
                    .bytes32("snapshot data", MAX_SNAPSHOT_DATA_BYTES)?
                    .to_vec();
                if index == 0 || self.term_of(index).is_none() {
                    return Err(invalid("snapshot index", index));
                }
                check_table(&data, index)?;
                self.set_snapshot(index, data);
            }
            kind => {
                return Err(DecodeError::UnknownKind {
                    what: "durable record",
                    kind,
                });
            }
        }
        r.finish()
    }
}

fn check_table(data: &[u8], index: u64) -> Result<(), DecodeError> {
    let (applied, _) = wire::decode_table(data)?;
    if applied != index {
        return Err(DecodeError::InvalidValue {
            field: "snapshot table index",
            value: applied,
        });
    }
    Ok(())
}

fn encode_record(kind: u8, body: impl FnOnce(&mut Writer<'_>)) -> Vec<u8> {
    let mut buf = Vec::with_capacity(64);
    let mut w = Writer::new(&mut buf);
    w.u8(DURABLE_RECORD_VERSION);
    w.u8(kind);
    body(&mut w);
    buf
}

fn write_hard_state(w: &mut Writer<'_>, hs: &HardState) {
    w.u64(hs.term);
    w.u64(hs.vote);
    w.u64(hs.commit);
}

fn read_hard_state(r: &mut Reader<'_>) -> Result<HardState, DecodeError> {
    Ok(HardState {
        term: r.u64()?,
        vote: r.u64()?,
        commit: r.u64()?,
        ..HardState::default()
    })
}

/// Only voters: the group uses no learners and no joint consensus.
fn write_voters(w: &mut Writer<'_>, cs: &ConfState) {
    w.u8(cs.voters.len() as u8);
    for v in &cs.voters {
        w.u64(*v);
    }
}

fn read_voters(r: &mut Reader<'_>) -> Result<ConfState, DecodeError> {
    let n = usize::from(r.u8()?);
    if n > MAX_VOTERS {
        return Err(DecodeError::TooLong {
            field: "voters",
            len: n,
            max: MAX_VOTERS,
        });
    }
    let mut cs = ConfState::default();
    for _ in 0..n {
        cs.voters.push(r.u64()?);
    }
    if n > 0 {
        wire::check_conf_state(&cs)?;
    }
    Ok(cs)
}

fn write_snapshot(w: &mut Writer<'_>, s: &Snapshot) {
    let meta = s.get_metadata();
    w.u64(meta.index);
    w.u64(meta.term);
    write_voters(w, meta.get_conf_state());
    w.bytes32(&s.data);
}

fn read_snapshot(r: &mut Reader<'_>) -> Result<Snapshot, DecodeError> {
    let index = r.u64()?;
    let term = r.u64()?;
    let cs = read_voters(r)?;
    let data = r
        .bytes32("snapshot data", MAX_SNAPSHOT_DATA_BYTES)?
        .to_vec();
    if index > 0 {
        check_table(&data, index)?;
    } else if !data.is_empty() {
        return Err(DecodeError::InvalidValue {
            field: "empty snapshot data",
            value: data.len() as u64,
        });
    }
    let mut meta = SnapshotMetadata {
        index,
        term,
        ..SnapshotMetadata::default()
    };
    meta.set_conf_state(cs);
    let mut snapshot = Snapshot::default();
    snapshot.set_metadata(meta);
    snapshot.data = data.into();
    Ok(snapshot)
}

fn write_entries(w: &mut Writer<'_>, entries: &[Entry]) {
    w.u32(entries.len() as u32);
    for e in entries {
        w.u8(match e.get_entry_type() {
            EntryType::EntryNormal => 0,
            EntryType::EntryConfChange => 1,
            EntryType::EntryConfChangeV2 => 2,
        });
        w.u64(e.term);
        w.u64(e.index);
        w.bytes16(&e.data);
        w.bytes16(&e.context);
    }
}

fn read_entries(r: &mut Reader<'_>) -> Result<Vec<Entry>, DecodeError> {
    let n = r.u32()? as usize;
    if n > MAX_ENTRIES_PER_RECORD {
        return Err(DecodeError::TooLong {
            field: "record entries",
            len: n,
            max: MAX_ENTRIES_PER_RECORD,
        });
    }
    let mut out = Vec::with_capacity(n.min(r.remaining() / 21));
    for _ in 0..n {
        let mut e = Entry::default();
        e.set_entry_type(match r.u8()? {
            0 => EntryType::EntryNormal,
            1 => EntryType::EntryConfChange,
            2 => EntryType::EntryConfChangeV2,
            kind => {
                return Err(DecodeError::UnknownKind {
                    what: "entry",
                    kind,
                });
            }
        });
        e.term = r.u64()?;
        e.index = r.u64()?;
        e.data = r
            .bytes16("entry data", MAX_ENTRY_DATA_BYTES)?
            .to_vec()
            .into();
        e.context = r
            .bytes16("entry context", MAX_ENTRY_CONTEXT_BYTES)?
            .to_vec()
            .into();
        out.push(e);
    }
    Ok(out)
}

impl Storage for LogStore {
    fn initial_state(&self) -> raft::Result<RaftState> {
        Ok(RaftState {
            hard_state: self.hard_state.clone(),
            conf_state: self.conf_state.clone(),
        })
    }

    fn entries(
        &self,
        low: u64,
        high: u64,
        max_size: impl Into<Option<u64>>,
        _context: GetEntriesContext,
    ) -> raft::Result<Vec<Entry>> {
        if low < self.first() {
            return Err(RaftError::Store(StorageError::Compacted));
        }
        if high > self.last() + 1 || low > high {
            return Err(RaftError::Store(StorageError::Unavailable));
        }
        let max_size = max_size.into().unwrap_or(u64::MAX);
        let from = (low - self.first()) as usize;
        let count = (high - low) as usize;
        let mut out = Vec::new();
        let mut size = 0u64;
        // Like raft-rs's `limit_size`: the first entry always, then while within the budget.
        for e in self.entries.range(from..from + count) {
            size = size.saturating_add(entry_size(e));
            if !out.is_empty() && size > max_size {
                break;
            }
            out.push(e.clone());
        }
        Ok(out)
    }

    fn term(&self, idx: u64) -> raft::Result<u64> {
        if idx < self.compacted.0 {
            return Err(RaftError::Store(StorageError::Compacted));
        }
        self.term_of(idx)
            .ok_or(RaftError::Store(StorageError::Unavailable))
    }

    fn first_index(&self) -> raft::Result<u64> {
        Ok(self.first())
    }

    fn last_index(&self) -> raft::Result<u64> {
        Ok(self.last())
    }

    fn snapshot(&self, request_index: u64, _to: u64) -> raft::Result<Snapshot> {
        let index = self.snapshot.get_metadata().index;
        if index == 0 || index < request_index {
            // raft-rs tries again later; the next compaction or conf change makes a new one.
            return Err(RaftError::Store(
                StorageError::SnapshotTemporarilyUnavailable,
            ));
        }
        Ok(self.snapshot.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(index: u64, term: u64) -> Entry {
        Entry {
            index,
            term,
            data: vec![1; 10].into(),
            ..Entry::default()
        }
    }

    fn ctx() -> GetEntriesContext {
        GetEntriesContext::empty(false)
    }

    #[test]
    fn append_overwrites_the_tail_and_compaction_keeps_the_term_before() {
        let mut s = LogStore::default();
        s.append(&(1..=10).map(|i| entry(i, 1)).collect::<Vec<_>>());
        s.append(&[entry(8, 2), entry(9, 2)]);
        assert_eq!((s.first(), s.last()), (1, 9));
        assert_eq!(s.term(8).unwrap(), 2);
        s.set_snapshot(6, vec![9]);
        s.compact(5);
        assert_eq!((s.first(), s.last(), s.len()), (6, 9, 4));
        assert_eq!(s.term(5).unwrap(), 1);
        assert_eq!(s.term(4), Err(RaftError::Store(StorageError::Compacted)));
        assert_eq!(
            s.entries(5, 7, None, ctx()),
            Err(RaftError::Store(StorageError::Compacted))
        );
        let got = s.entries(6, 10, None, ctx()).unwrap();
        assert_eq!(
            got.iter().map(|e| e.index).collect::<Vec<_>>(),
            [6, 7, 8, 9]
        );
        // The budget keeps the first entry and then what fits.
        let got = s.entries(6, 10, 20, ctx()).unwrap();
        assert_eq!(got.len(), 1);
        assert_eq!(s.snapshot(0, 2).unwrap().get_metadata().index, 6);
        assert!(s.snapshot(7, 2).is_err());
    }

    /// The sizes raft-rs's `limit_size` counts (protobuf), worked out by hand.
    #[test]
    fn entry_sizes_are_protobuf_sizes() {
        // term 1 (2 bytes), index 300 (3 bytes), 10 data bytes (12 bytes).
        assert_eq!(entry_size(&entry(300, 1)), 17);
        let mut e = Entry::default();
        assert_eq!(entry_size(&e), 0);
        e.set_entry_type(EntryType::EntryConfChange);
        e.context = vec![0; 200].into();
        // type (2 bytes), context: tag, a 2-byte length, 200 bytes.
        assert_eq!(entry_size(&e), 2 + 203);
    }

    #[test]
    fn an_installed_snapshot_restarts_the_log() {
        let mut s = LogStore::default();
        s.append(&(1..=3).map(|i| entry(i, 1)).collect::<Vec<_>>());
        let mut snap = Snapshot::default();
        snap.mut_metadata().index = 50;
        snap.mut_metadata().term = 4;
        snap.mut_metadata().mut_conf_state().voters = vec![1, 2, 3];
        s.install_snapshot(snap);
        assert_eq!((s.first(), s.last(), s.len()), (51, 50, 0));
        assert_eq!(s.term(50).unwrap(), 4);
        assert_eq!(s.hard_state().commit, 50);
        assert_eq!(s.conf_state().voters, [1, 2, 3]);
        s.append(&[entry(51, 4)]);
        assert_eq!(s.last(), 51);
    }
}
