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
//! An 8-byte header ([`MAGIC`]), then records: `length: u32 BE`, `crc32: u32 BE` (CRC-32/IEEE
//! of the payload), `payload` (one core record, at most [`MAX_DURABLE_RECORD_BYTES`]).
//!
//! * [`DurableWrite::Append`]: one record appended; [`RaftStore::sync`] syncs the data.
//! * [`DurableWrite::Replace`] (the whole state, after a compaction or a snapshot install, and
//!   at every start): written to `raft.log.tmp`, synced, renamed over `raft.log`, and the
//!   directory synced, so a crash leaves either the old file or the new one.
//!
//! At start the records are read back in order. A record cut short at the end of the file (a
//! crash in the middle of a write that was therefore never synced, so nothing depending on it
//! was sent) is cut off and logged; so is a last record whose checksum fails. A bad header, a
//! bad checksum before the last record, an oversized record, or records the core refuses stop
//! the start with an error naming the file.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};

use meshkit::lease::{DurableError, DurableState, DurableWrite, MAX_DURABLE_RECORD_BYTES};
use thiserror::Error;

#[cfg(doc)]
use meshkit::lease::LeaseGroup;

/// The file's first bytes: "MKRAFT", then the format version (1) as a big-endian u16.
pub const MAGIC: [u8; 8] = *b"MKRAFT\x00\x01";
/// The file name inside `data_dir`.
pub const FILE_NAME: &str = "raft.log";
const TMP_NAME: &str = "raft.log.tmp";
/// Length and checksum before each record.
const FRAME_BYTES: usize = 8;

/// Why a voter's Raft file could not be used. Nothing was sent; a start fails with it.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum RaftStoreError {
    /// Reading, writing or syncing failed.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// Why.
        source: io::Error,
    },
    /// The file does not start with [`MAGIC`]: not a MeshKit Raft log, or another version.
    #[error("{}: not a MeshKit Raft log of format 1 (bad header)", path.display())]
    BadHeader {
        /// The file.
        path: PathBuf,
    },
    /// A record that is not the last one fails its checksum, or is longer than any record.
    #[error("{}: record {record} at byte {offset} is corrupt ({what})", path.display())]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// Its position (from 0).
        record: usize,
        /// Where it starts.
        offset: u64,
        /// What is wrong.
        what: &'static str,
    },
    /// Every record is intact but the core refuses them.
    #[error("{}: {source}", path.display())]
    Records {
        /// The file.
        path: PathBuf,
        /// The core's reason.
        source: DurableError,
    },
}

/// The open Raft file of one voter.
#[derive(Debug)]
pub struct RaftStore {
    dir: PathBuf,
    path: PathBuf,
    /// Open for appending once the file exists.
    file: Option<File>,
    /// Appended since the last sync.
    dirty: bool,
}

impl RaftStore {
    /// Opens `dir/raft.log` (creating `dir` if needed). Returns the store and what the file
    /// holds: `None` when there is no file yet (a first start).
    pub fn open(dir: &Path) -> Result<(Self, Option<DurableState>), RaftStoreError> {
        let io_err = |path: &Path| {
            let path = path.to_owned();
            move |source| RaftStoreError::Io { path, source }
        };
        fs::create_dir_all(dir).map_err(io_err(dir))?;
        let path = dir.join(FILE_NAME);
        // A replacement that never got renamed is not the state: the old file is.
        let tmp = dir.join(TMP_NAME);
        if tmp.exists() {
            fs::remove_file(&tmp).map_err(io_err(&tmp))?;
        }
        let mut store = Self {
            dir: dir.to_owned(),
            path: path.clone(),
            file: None,
            dirty: false,
        };
        let bytes = match File::open(&path) {
            Ok(mut f) => {
                let mut bytes = Vec::new();
                f.read_to_end(&mut bytes).map_err(io_err(&path))?;
                bytes
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok((store, None)),
            Err(e) => return Err(io_err(&path)(e)),
        };
        let (records, valid_len) = parse(&path, &bytes)?;
        if valid_len < bytes.len() {
            tracing::warn!(
                file = %path.display(),
                kept_bytes = valid_len,
                cut_bytes = bytes.len() - valid_len,
                "cutting a torn last record (a crash during a write that was never synced)"
            );
            let f = OpenOptions::new()
                .write(true)
                .open(&path)
                .map_err(io_err(&path))?;
            f.set_len(valid_len as u64).map_err(io_err(&path))?;
            f.sync_all().map_err(io_err(&path))?;
        }
        let durable = DurableState::from_records(records.iter().copied()).map_err(|source| {
            RaftStoreError::Records {
                path: path.clone(),
                source,
            }
        })?;
        store.file = Some(
            OpenOptions::new()
                .append(true)
                .open(&path)
                .map_err(io_err(&path))?,
        );
        Ok((store, Some(durable)))
    }

    /// The file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Writes one durable write (an append is synced by [`sync`](Self::sync); a replacement
    /// is synced before it returns).
    pub fn write(&mut self, write: DurableWrite) -> Result<(), RaftStoreError> {
        match write {
            DurableWrite::Append(record) => {
                let path = self.path.clone();
                let Some(file) = self.file.as_mut() else {
                    // The core's first write is always a replacement; be safe anyway.
                    return self.replace(&[record]);
                };
                let mut framed = Vec::with_capacity(FRAME_BYTES + record.len());
                frame(&record, &mut framed);
                file.write_all(&framed)
                    .map_err(|source| RaftStoreError::Io { path, source })?;
                self.dirty = true;
                Ok(())
            }
            DurableWrite::Replace(records) => self.replace(&records),
        }
    }

    /// Syncs what was appended since the last sync. Call it before sending anything polled
    /// after the writes.
    pub fn sync(&mut self) -> Result<(), RaftStoreError> {
        if !self.dirty {
            return Ok(());
        }
        if let Some(file) = self.file.as_mut() {
            file.sync_data().map_err(|source| RaftStoreError::Io {
                path: self.path.clone(),
                source,
            })?;
        }
        self.dirty = false;
        Ok(())
    }

    fn replace(&mut self, records: &[Vec<u8>]) -> Result<(), RaftStoreError> {
        let tmp = self.dir.join(TMP_NAME);
        let io_err = |path: &Path| {
            let path = path.to_owned();
            move |source| RaftStoreError::Io { path, source }
        };
        let mut bytes = Vec::with_capacity(
            MAGIC.len() + records.iter().map(|r| FRAME_BYTES + r.len()).sum::<usize>(),
        );
        bytes.extend_from_slice(&MAGIC);
        for record in records {
            frame(record, &mut bytes);
        }
        {
            let mut f = File::create(&tmp).map_err(io_err(&tmp))?;
            f.write_all(&bytes).map_err(io_err(&tmp))?;
            f.sync_all().map_err(io_err(&tmp))?;
        }
        fs::rename(&tmp, &self.path).map_err(io_err(&self.path))?;
        // The rename is durable once the directory is.
        File::open(&self.dir)
            .and_then(|d| d.sync_all())
            .map_err(io_err(&self.dir))?;
        self.file = Some(
            OpenOptions::new()
                .append(true)
                .open(&self.path)
                .map_err(io_err(&self.path))?,
        );
        self.dirty = false;
        Ok(())
    }
}

fn frame(record: &[u8], out: &mut Vec<u8>) {
    let len = u32::try_from(record.len()).expect("the core bounds records far below 4 GiB");
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(&crc32(record).to_be_bytes());
    out.extend_from_slice(record);
}

/// The records of a file and the length of its intact prefix (shorter than the file when the
/// last record is torn).
fn parse<'a>(path: &Path, bytes: &'a [u8]) -> Result<(Vec<&'a [u8]>, usize), RaftStoreError> {
    if bytes.len() < MAGIC.len() || bytes[..MAGIC.len()] != MAGIC {
        return Err(RaftStoreError::BadHeader {
            path: path.to_owned(),
        });
    }
    let mut records = Vec::new();
    let mut at = MAGIC.len();
    while at < bytes.len() {
        let corrupt = |what| RaftStoreError::Corrupt {
            path: path.to_owned(),
            record: records.len(),
            offset: at as u64,
            what,
        };
        let rest = &bytes[at..];
        if rest.len() < FRAME_BYTES {
            break; // A torn frame header.
        }
        let len = u32::from_be_bytes([rest[0], rest[1], rest[2], rest[3]]) as usize;
        let crc = u32::from_be_bytes([rest[4], rest[5], rest[6], rest[7]]);
        if len > MAX_DURABLE_RECORD_BYTES {
            return Err(corrupt("longer than any record"));
        }
        if FRAME_BYTES + len > rest.len() {
            break; // Torn: the file ends inside the record.
        }
        let payload = &rest[FRAME_BYTES..FRAME_BYTES + len];
        if crc32(payload) != crc {
            if FRAME_BYTES + len == rest.len() {
                break; // The last record, half written.
            }
            return Err(corrupt("checksum mismatch"));
        }
        records.push(payload);
        at += FRAME_BYTES + len;
    }
    Ok((records, at))
}

/// CRC-32/IEEE (the one of zlib, Ethernet and PNG), reflected, table-driven.
pub fn crc32(bytes: &[u8]) -> u32 {
    const TABLE: [u32; 256] = {
        let mut table = [0u32; 256];
        let mut i = 0;
        while i < 256 {
            let mut c = i as u32;
            let mut k = 0;
            while k < 8 {
                c = if c & 1 != 0 {
                    0xEDB8_8320 ^ (c >> 1)
                } else {
                    c >> 1
                };
                k += 1;
            }
            table[i] = c;
            i += 1;
        }
        table
    };
    let mut crc = !0u32;
    for &b in bytes {
        crc = TABLE[((crc ^ u32::from(b)) & 0xff) as usize] ^ (crc >> 8);
    }
    !crc
}

#[cfg(test)]
mod tests {
    use super::*;
    use meshkit::lease::{LeaseConfig, LeaseGroup};
    use meshkit::{Instant, NodeId};

    #[test]
    fn crc32_matches_the_standard_check_value() {
        assert_eq!(crc32(b"123456789"), 0xCBF4_3926);
        assert_eq!(crc32(b""), 0);
    }

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
        let (records, _) = parse(&path, &intact).unwrap();
        assert!(records.len() > 1, "a state of several records");
        fs::write(&path, &bad).unwrap();
        let err = RaftStore::open(&dir).unwrap_err();
        assert!(
            matches!(err, RaftStoreError::Corrupt { record: 0, .. }),
            "{err}"
        );
        assert!(err.to_string().contains("raft.log"), "{err}");
        let mut bad = intact.clone();
        bad[0] = b'X';
        fs::write(&path, &bad).unwrap();
        let err = RaftStore::open(&dir).unwrap_err();
        assert!(matches!(err, RaftStoreError::BadHeader { .. }), "{err}");
        assert!(err.to_string().contains("raft.log"), "{err}");
        let _ = fs::remove_dir_all(&dir);
    }
}
