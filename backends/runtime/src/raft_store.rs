//! A voter's Raft state on disk: the file `raft.log` in `[leadership] data_dir`.
//!
//! The lease core stays sans-IO: it never touches a disk and reads no clock. A voter that
//! records ([`LeaseGroup::record_durable_writes`]) queues every change of its Raft storage (log
//! entries, hard state, configuration, snapshots) as a self-checking [`DurableWrite`]; this
//! module writes them, and [`Leadership`](crate::lease_host) syncs the file before it hands the
//! transport any datagram polled after them. That is Raft's persistence rule: a vote or an
//! append acknowledgement only leaves the node once what it promises is on disk, so a restarted
//! voter never votes twice in a term and never forgets an entry it acknowledged. The
//! simulator, which models a crash by keeping the core's store as it was, runs the same core
//! code without any of this (see the core's `storage` module for the choice of design).
//!
//! # File format
//!
//! A [record file](crate::record_file) with the header [`MAGIC`] whose records are the core's
//! durable records (each at most [`MAX_DURABLE_RECORD_BYTES`]):
//!
//! * [`DurableWrite::Append`]: one record appended; [`RaftStore::sync`] syncs the data.
//! * [`DurableWrite::Replace`] (the whole state, after a compaction or a snapshot install, and
//!   at every start): replaced whole, crash-safe.
//!
//! At start the records are read back in order (a torn last record is cut off and logged).
//! A bad header, a bad checksum before the last record, an oversized record, or records the
//! core refuses stop the start with an error naming the file.

use std::path::Path;

use meshkit::lease::{DurableError, DurableState, DurableWrite, MAX_DURABLE_RECORD_BYTES};
use thiserror::Error;

use crate::record_file::{Kind, RecordFile, RecordFileError};

#[cfg(doc)]
use meshkit::lease::LeaseGroup;

/// The file's first bytes: "MKRAFT", then the format version (1) as a big-endian u16.
pub const MAGIC: [u8; 8] = *b"MKRAFT\x00\x01";
/// The file name inside `data_dir`.
pub const FILE_NAME: &str = "raft.log";
const KIND: Kind = Kind {
    magic: MAGIC,
    max_record_bytes: MAX_DURABLE_RECORD_BYTES,
    name: "MeshKit Raft log of format 1",
};

/// Why a voter's Raft file could not be used. Nothing was sent; a start fails with it.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum RaftStoreError {
    /// The file cannot be read or written, or is corrupt.
    #[error(transparent)]
    File(#[from] RecordFileError),
    /// Every record is intact but the core refuses them.
    #[error("{}: {source}", path.display())]
    Records {
        /// The file.
        path: std::path::PathBuf,
        /// The core's reason.
        source: DurableError,
    },
}

/// The open Raft file of one voter.
#[derive(Debug)]
pub struct RaftStore {
    file: RecordFile,
}

impl RaftStore {
    /// Opens `dir/raft.log` (creating `dir` if needed). Returns the store and what the file
    /// holds: `None` when there is no file yet (a first start).
    pub fn open(dir: &Path) -> Result<(Self, Option<DurableState>), RaftStoreError> {
        let (file, records) = RecordFile::open(dir, FILE_NAME, KIND)?;
        let Some(records) = records else {
            return Ok((Self { file }, None));
        };
        let durable =
            DurableState::from_records(records.iter().map(Vec::as_slice)).map_err(|source| {
                RaftStoreError::Records {
                    path: file.path().to_owned(),
                    source,
                }
            })?;
        Ok((Self { file }, Some(durable)))
    }

    /// The file's path.
    pub fn path(&self) -> &Path {
        self.file.path()
    }

    /// Writes one durable write (an append is synced by [`sync`](Self::sync); a replacement
    /// is synced before it returns).
    pub fn write(&mut self, write: DurableWrite) -> Result<(), RaftStoreError> {
        match write {
            DurableWrite::Append(record) => self.file.append(&record)?,
            DurableWrite::Replace(records) => self.file.replace(&records)?,
        }
        Ok(())
    }

    /// Syncs what was appended since the last sync. Call it before sending anything polled
    /// after the writes.
    pub fn sync(&mut self) -> Result<(), RaftStoreError> {
        self.file.sync()?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::fs;
    use std::path::PathBuf;

    use super::*;
    use crate::record_file::{FRAME_BYTES, parse};
    use meshkit::lease::{LeaseConfig, LeaseGroup};
    use meshkit::{Instant, NodeId};

    fn temp_dir(name: &str) -> PathBuf {
        let dir =
            std::env::temp_dir().join(format!("meshkit-raft-store-{name}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        dir
    }

    /// A one-voter group's first writes, as a fresh voter makes them.
    fn write_state(dir: &Path) -> RaftStore {
        let (mut store, durable) = RaftStore::open(dir).unwrap();
        assert!(durable.is_none());
        let id = NodeId::new(1);
        let mut group =
            LeaseGroup::bootstrap(LeaseConfig::default(), id, &[id], 7, Instant::ZERO).unwrap();
        group.record_durable_writes();
        // Elect itself: hard state and an entry get written.
        for _ in 0..100 {
            if group.is_leader() {
                break;
            }
            let now = group.poll_timeout().unwrap();
            group.handle_timeout(now);
        }
        assert!(group.is_leader());
        while let Some(w) = group.poll_durable() {
            store.write(w).unwrap();
        }
        store.sync().unwrap();
        store
    }

    #[test]
    fn records_read_back_and_a_torn_tail_is_cut() {
        let dir = temp_dir("torn");
        let store = write_state(&dir);
        let path = store.path().to_owned();
        drop(store);
        let (_, durable) = RaftStore::open(&dir).unwrap();
        let saved = durable.unwrap().hard_state();
        assert!(saved.term.get() >= 2 && saved.vote == Some(NodeId::new(1)) && saved.commit >= 2);
        // A half-written record at the end is cut, not fatal.
        let intact = fs::read(&path).unwrap();
        let mut torn = intact.clone();
        torn.extend_from_slice(&[0, 0, 0, 40, 1, 2, 3, 4, 5, 6]);
        fs::write(&path, &torn).unwrap();
        let (_, durable) = RaftStore::open(&dir).unwrap();
        assert_eq!(durable.unwrap().hard_state(), saved);
        assert_eq!(fs::read(&path).unwrap(), intact, "the torn tail was cut");
        let _ = fs::remove_dir_all(&dir);
    }

    #[test]
    fn corruption_before_the_end_and_a_bad_header_name_the_file() {
        let dir = temp_dir("corrupt");
        let store = write_state(&dir);
        let path = store.path().to_owned();
        drop(store);
        let intact = fs::read(&path).unwrap();
        // Flip a byte inside the first record's payload (more records follow it).
        let mut bad = intact.clone();
        bad[MAGIC.len() + FRAME_BYTES + 3] ^= 0xff;
        let (records, _) = parse(&path, KIND, &intact).unwrap();
        assert!(records.len() > 1, "a state of several records");
        fs::write(&path, &bad).unwrap();
        let err = RaftStore::open(&dir).unwrap_err();
        assert!(
            matches!(
                err,
                RaftStoreError::File(RecordFileError::Corrupt { record: 0, .. })
            ),
            "{err}"
        );
        assert!(err.to_string().contains("raft.log"), "{err}");
        let mut bad = intact.clone();
        bad[0] = b'X';
        fs::write(&path, &bad).unwrap();
        let err = RaftStore::open(&dir).unwrap_err();
        assert!(
            matches!(err, RaftStoreError::File(RecordFileError::BadHeader { .. })),
            "{err}"
        );
        assert!(err.to_string().contains("raft.log"), "{err}");
        let _ = fs::remove_dir_all(&dir);
    }
}
