//! The queue replicas' checkpoints on disk: one log per node, `queue-checkpoints.log` in
//! `[queues] data_dir`, holding every shard's records, each tagged with its shard.
//!
//! The queue core stays sans-IO: a replica that records
//! ([`Node::record_queue_durable_writes`](meshkit::node::Node::record_queue_durable_writes))
//! hands every change of its copy out as a [`QueueDurableWrite`]; this module appends them, and
//! the driver syncs the log before it hands the transport any datagram polled after them. An
//! acknowledgement to an owner therefore never promises what the disk does not hold, and an
//! owner counts a replica's acknowledgement toward an enqueue's only once it is durable: the
//! rule the queue's "no acknowledged item is lost" rests on (`docs/task-queues.md`). At start
//! the log is read back and every shard's copy rebuilt with [`ReplicaStore::restore`], so a
//! restarted node offers a new owner what it held.
//!
//! # Why this shape
//!
//! The checkpoint is a log of small records (each batch applied adds one), read back only at
//! start: the [record file](crate::record_file) the voter's Raft log uses fits it as it is
//! (CRC per record, torn tail cut, crash-safe replacement), with no new dependency. SQLite
//! would give the same guarantees at the cost of a C library in every build, for no query the
//! queue needs.
//!
//! **One log for all shards, not a file per shard**: a group commit then costs one `fdatasync`
//! however many shards it wrote. With a file per shard (format 1) the three nodes of issue 16's
//! benchmark made 13,000-14,000 syncs for 20,000 items over 16 shards against about 1,000 with
//! one shard, and the syncs' system time was a third of the nodes' CPU (docs/benchmarks.md,
//! "One checkpoint log per node"). The price is that a compaction rewrites every shard's copy,
//! not only the one that grew; it is amortized the same way (below).
//!
//! A record is `namespace length: u8`, `namespace`, `shard id: u32 BE`, then the replica's
//! [checkpoint record](ReplicaStore::checkpoint_record).
//!
//! # Compaction
//!
//! The log grows with every change. Once it passes [`COMPACT_MIN_BYTES`] and twice what its
//! last compaction wrote, it is replaced by the replicas' current copies, in records of at most
//! [`COMPACT_RECORDS_PER_CHUNK`] items ([`ReplicaStore::compacted`]: the records of earlier
//! owners a replica still holds first, under their owners' fences): replaying them gives the
//! same copies (see [`ReplicaStore::restore`]). The replacement is taken after every write the
//! core recorded was appended, so it holds everything those writes held.
//!
//! # Upgrading from a file per shard
//!
//! A node that finds no log but format-1 files (`queue-{namespace}-{id}.log`, one per shard)
//! of its configured shards restores from them, writes the log (a replacement: synced, renamed,
//! the directory synced) and only then removes them. A crash in between leaves the log, which
//! holds everything, and the old files, which the next start removes unread.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use meshkit::queue::{
    CheckpointError, MAX_BATCH_RECORDS, MAX_RECORD_BYTES, QueueDurableWrite, ReplicaStore,
};
use meshkit::shard::{MAX_NAMESPACE_CHARS, ShardId};
use thiserror::Error;

use crate::record_file::{Kind, RecordFile, RecordFileError};

/// The log's file name in `data_dir`.
pub const LOG_NAME: &str = "queue-checkpoints.log";
/// The log's first bytes: "MKQUEU", then the format version (2) as a big-endian u16.
pub const MAGIC: [u8; 8] = *b"MKQUEU\x00\x02";
/// The first bytes of a format-1 file (one per shard), read once to upgrade.
pub const MAGIC_V1: [u8; 8] = *b"MKQUEU\x00\x01";
/// Items per record of a compacted log.
pub const COMPACT_RECORDS_PER_CHUNK: usize = 64;
/// The log is not compacted below this size.
pub const COMPACT_MIN_BYTES: u64 = 1 << 20;
/// The header of a checkpoint record: promised, source, applied, record count.
const HEADER_BYTES: usize = 8 + 8 + 8 + 4;
/// The largest checkpoint record: a header and a chunk's items, or a batch's.
pub const MAX_CHECKPOINT_RECORD_BYTES: usize =
    HEADER_BYTES + COMPACT_RECORDS_PER_CHUNK * MAX_RECORD_BYTES;
/// The largest shard tag: the namespace's length, the namespace, the shard's id.
const MAX_TAG_BYTES: usize = 1 + MAX_NAMESPACE_CHARS + 4;
const _: () = assert!(
    COMPACT_RECORDS_PER_CHUNK >= MAX_BATCH_RECORDS,
    "a replica's record (one batch) must fit the bound the log is read with"
);
const KIND: Kind = Kind {
    magic: MAGIC,
    max_record_bytes: MAX_TAG_BYTES + MAX_CHECKPOINT_RECORD_BYTES,
    name: "MeshKit queue checkpoint log of format 2",
};
const KIND_V1: Kind = Kind {
    magic: MAGIC_V1,
    max_record_bytes: MAX_CHECKPOINT_RECORD_BYTES,
    name: "MeshKit queue checkpoint of format 1",
};

/// Why the queue checkpoints could not be used. At start nothing runs; while running, the
/// node stops (a replica that cannot persist must not acknowledge).
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum QueueStoreError {
    /// A file cannot be read or written, or is corrupt.
    #[error(transparent)]
    File(#[from] RecordFileError),
    /// A sync running off the driver's task ended without an answer (it panicked, or the
    /// runtime is shutting down): the appends it covered may not be durable.
    #[error("a queue checkpoint sync did not finish: {0}")]
    SyncTask(#[source] tokio::task::JoinError),
    /// Every record is intact (its checksum holds) but one does not name a valid shard: the
    /// file was not written by MeshKit.
    #[error("{}: record {record} names no valid shard", path.display())]
    Shard {
        /// The file.
        path: PathBuf,
        /// The record's position in the file (from 0).
        record: usize,
    },
    /// Every record is intact but one of a shard's does not decode as a checkpoint.
    #[error("{}: shard {shard}: {source}", path.display())]
    Checkpoint {
        /// The file.
        path: PathBuf,
        /// The shard whose records do not decode.
        shard: ShardId,
        /// What is wrong (the record's position among the shard's).
        source: CheckpointError,
    },
}

/// The checkpoint log of every shard this node replicates.
#[derive(Debug)]
pub struct QueueStore {
    dir: PathBuf,
    log: RecordFile,
    /// Bytes the last compaction (or the open) left.
    compacted_len: u64,
    writes: u64,
    syncs: u64,
    compactions: u64,
}

impl QueueStore {
    /// Opens the log in `dir` (creating `dir` if needed) and rebuilds the replicas of
    /// `shards` it holds (shards without records or with an empty copy are left out; records
    /// of shards no longer configured are dropped at the next compaction). Upgrades format-1
    /// files of `shards` as the module doc says.
    pub fn open(
        dir: &Path,
        shards: impl IntoIterator<Item = ShardId>,
    ) -> Result<(Self, BTreeMap<ShardId, ReplicaStore>), QueueStoreError> {
        let (log, records) = RecordFile::open(dir, LOG_NAME, KIND)?;
        let path = log.path().to_owned();
        let had_log = records.is_some();
        let mut by_shard: BTreeMap<ShardId, Vec<Vec<u8>>> = BTreeMap::new();
        for (k, mut record) in records.into_iter().flatten().enumerate() {
            let (shard, tag_len) = untag(&record).ok_or_else(|| QueueStoreError::Shard {
                path: path.clone(),
                record: k,
            })?;
            record.drain(..tag_len);
            by_shard.entry(shard).or_default().push(record);
        }
        let mut store = Self {
            dir: dir.to_owned(),
            compacted_len: log.len(),
            log,
            writes: 0,
            syncs: 0,
            compactions: 0,
        };
        let mut replicas = BTreeMap::new();
        let mut upgraded = Vec::new();
        for shard in shards {
            let v1 = dir.join(v1_file_name(&shard));
            let (from, body) = if !had_log && v1.exists() {
                let (_, v1_records) = RecordFile::open(dir, &v1_file_name(&shard), KIND_V1)?;
                upgraded.push(v1.clone());
                (v1, v1_records.unwrap_or_default())
            } else {
                if v1.exists() {
                    // Left by a crash after an upgrade wrote the log, which holds it all.
                    upgraded.push(v1);
                }
                (path.clone(), by_shard.remove(&shard).unwrap_or_default())
            };
            let replica =
                ReplicaStore::restore(body.iter().map(Vec::as_slice)).map_err(|source| {
                    QueueStoreError::Checkpoint {
                        path: from,
                        shard: shard.clone(),
                        source,
                    }
                })?;
            if replica != ReplicaStore::new() {
                replicas.insert(shard, replica);
            }
        }
        if !by_shard.is_empty() {
            tracing::warn!(
                file = %path.display(),
                shards = by_shard.len(),
                "queue checkpoints of shards no longer configured: dropped at the next compaction"
            );
        }
        if !upgraded.is_empty() {
            if !had_log {
                store.compact(&replicas)?;
                tracing::info!(
                    file = %path.display(),
                    files = upgraded.len(),
                    "queue checkpoints moved from one file per shard (format 1) into one log"
                );
            }
            for file in upgraded {
                std::fs::remove_file(&file)
                    .map_err(crate::record_file::io_err(&file))
                    .map_err(QueueStoreError::File)?;
            }
        }
        Ok((store, replicas))
    }

    /// The directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Appends one write (made durable by [`sync`](Self::sync)).
    pub fn write(&mut self, write: &QueueDurableWrite) -> Result<(), QueueStoreError> {
        self.log.append(&tag(&write.shard, &write.record))?;
        self.writes += 1;
        Ok(())
    }

    /// The sync [`sync`](Self::sync) would make, to make off the driver's task, if anything
    /// was written since the last one; compact afterwards with
    /// [`compact_grown`](Self::compact_grown). Nothing that depends on the writes appended so
    /// far may be sent until it ran.
    pub(crate) fn start_sync(&mut self) -> Result<Option<SyncFile>, QueueStoreError> {
        Ok(self.log.take_sync()?.map(|file| SyncFile {
            path: self.log.path().to_owned(),
            file,
        }))
    }

    /// Counts a sync made by [`SyncFile::run`].
    pub(crate) fn count_sync(&mut self) {
        self.syncs += 1;
    }

    /// Compacts the log from `replicas` (the copies the written records built) if it grew
    /// past its bound; the replacement is synced before it returns.
    pub(crate) fn compact_grown(
        &mut self,
        replicas: &BTreeMap<ShardId, ReplicaStore>,
    ) -> Result<(), QueueStoreError> {
        if self.log.len() > COMPACT_MIN_BYTES.max(2 * self.compacted_len) {
            self.compact(replicas)?;
        }
        Ok(())
    }

    fn compact(
        &mut self,
        replicas: &BTreeMap<ShardId, ReplicaStore>,
    ) -> Result<(), QueueStoreError> {
        let records: Vec<Vec<u8>> = replicas
            .iter()
            .flat_map(|(shard, replica)| {
                replica
                    .compacted(COMPACT_RECORDS_PER_CHUNK)
                    .into_iter()
                    .map(move |body| tag(shard, &body))
            })
            .collect();
        self.log.replace(&records)?;
        self.compacted_len = self.log.len();
        self.compactions += 1;
        Ok(())
    }

    /// Syncs what was written since the last sync, then compacts the log if it grew past its
    /// bound, from `replicas` (the copies the written records built).
    pub fn sync(
        &mut self,
        replicas: &BTreeMap<ShardId, ReplicaStore>,
    ) -> Result<(), QueueStoreError> {
        if self.log.sync()? {
            self.syncs += 1;
        }
        self.compact_grown(replicas)
    }

    /// Records appended, syncs made and compactions, since the open.
    pub fn counters(&self) -> (u64, u64, u64) {
        (self.writes, self.syncs, self.compactions)
    }
}

/// The log's sync, taken by [`QueueStore::start_sync`]: blocking, to run on a thread that may
/// block (`tokio::task::spawn_blocking`), not on the driver's task.
#[derive(Debug)]
pub(crate) struct SyncFile {
    path: PathBuf,
    file: std::fs::File,
}

impl SyncFile {
    /// Makes the log's appends durable (`fdatasync`).
    pub(crate) fn run(self) -> Result<(), QueueStoreError> {
        self.file
            .sync_data()
            .map_err(crate::record_file::io_err(&self.path))
            .map_err(QueueStoreError::File)
    }
}

/// A format-1 file's name: `queue-{namespace}-{id}.log`.
pub fn v1_file_name(shard: &ShardId) -> String {
    format!("queue-{}-{}.log", shard.namespace(), shard.id())
}

/// `record` under `shard`'s tag.
fn tag(shard: &ShardId, record: &[u8]) -> Vec<u8> {
    let ns = shard.namespace().as_bytes();
    let mut out = Vec::with_capacity(1 + ns.len() + 4 + record.len());
    // A namespace is at most MAX_NAMESPACE_CHARS (64) ASCII bytes: its length fits a byte.
    out.push(ns.len() as u8);
    out.extend_from_slice(ns);
    out.extend_from_slice(&shard.id().to_be_bytes());
    out.extend_from_slice(record);
    out
}

/// The shard a record names and the length of its tag (the checkpoint record follows);
/// `None` if it names no valid shard.
fn untag(record: &[u8]) -> Option<(ShardId, usize)> {
    let (&len, rest) = record.split_first()?;
    let len = usize::from(len);
    let ns = std::str::from_utf8(rest.get(..len)?).ok()?;
    let id = u32::from_be_bytes(rest.get(len..len + 4)?.try_into().ok()?);
    Some((ShardId::new(ns, id).ok()?, 1 + len + 4))
}

#[cfg(test)]
mod tests {
    use meshkit::NodeId;
    use meshkit::lease::FencingToken;
    use meshkit::queue::{Batch, Origin, QueueConfig, WorkQueue};

    use super::*;

    fn temp_dir(name: &str) -> PathBuf {
        let dir =
            std::env::temp_dir().join(format!("meshkit-queue-store-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        dir
    }

    /// An owner's `n` items applied to `replica`, as one batch per item; the records the core
    /// would have recorded for each.
    fn replicate(replica: &mut ReplicaStore, n: u64) -> Vec<Vec<u8>> {
        let mut owner = WorkQueue::new(FencingToken::new(7), &QueueConfig::default());
        let mut written = Vec::new();
        for k in 0..n {
            let origin = Origin {
                node: NodeId::new(2),
                request: k,
            };
            owner.enqueue(origin, &[7u8; 300]).unwrap();
            let from = owner.version() - 1;
            let batch = Batch {
                fence: owner.fence(),
                from,
                to: owner.version(),
                done: true,
                pending: 0,
                active: 0,
                records: owner.changed_since(from).cloned().collect(),
            };
            replica.apply(&batch);
            written.push(replica.checkpoint_record(batch.records.iter()));
        }
        written
    }

    /// The writes the core records for `shard` while `replica` applies `n` items, one batch each.
    fn writes(shard: &ShardId, replica: &mut ReplicaStore, n: u64) -> Vec<QueueDurableWrite> {
        replicate(replica, n)
            .into_iter()
            .map(|record| QueueDurableWrite {
                shard: shard.clone(),
                record,
            })
            .collect()
    }

    /// What is written is what a restart reads back; a file past its bound is compacted to
    /// the same copy; a torn tail is cut, not fatal.
    #[test]
    fn checkpoints_read_back_and_compact_to_the_same_copy() {
        let dir = temp_dir("compact");
        let shard = ShardId::new("orders", 3).unwrap();
        let (mut store, restored) = QueueStore::open(&dir, [shard.clone()]).unwrap();
        assert!(restored.is_empty());
        let mut replica = ReplicaStore::new();
        // About 340 bytes a record: 4,000 of them pass the 1 MiB bound.
        let mut replicas = BTreeMap::new();
        for write in writes(&shard, &mut replica, 4000) {
            store.write(&write).unwrap();
        }
        replicas.insert(shard.clone(), replica.clone());
        store.sync(&replicas).unwrap();
        assert_eq!(store.counters().2, 1, "one compaction");
        drop(store);
        let (_, restored) = QueueStore::open(&dir, [shard.clone()]).unwrap();
        assert_eq!(restored.get(&shard), Some(&replica));
        let path = dir.join(LOG_NAME);
        let mut bytes = std::fs::read(&path).unwrap();
        bytes.extend_from_slice(&[0, 0, 0, 50, 1, 2]);
        std::fs::write(&path, &bytes).unwrap();
        let (_, restored) = QueueStore::open(&dir, [shard.clone()]).unwrap();
        assert_eq!(restored.get(&shard), Some(&replica), "the torn tail is cut");
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// What `[queues] ack_after = "write"` rests on: a record appended and never synced is
    /// read back by the next process that opens the file (the store dropped without a sync is
    /// what a kill -9 of the replica's process leaves: the file's pages stay in the operating
    /// system's cache), so an acknowledgement that left after the write survives any process
    /// kill.
    #[test]
    fn a_record_written_and_not_synced_is_read_back_after_the_process_is_gone() {
        let dir = temp_dir("unsynced");
        let shard = ShardId::new("orders", 1).unwrap();
        let (mut store, _) = QueueStore::open(&dir, [shard.clone()]).unwrap();
        let mut replica = ReplicaStore::new();
        for write in writes(&shard, &mut replica, 5) {
            store.write(&write).unwrap();
        }
        assert_eq!(store.counters().1, 0, "no sync made");
        drop(store);
        let (_, restored) = QueueStore::open(&dir, [shard.clone()]).unwrap();
        assert_eq!(restored.get(&shard), Some(&replica));
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_corrupt_record_names_the_file() {
        let dir = temp_dir("corrupt");
        let shard = ShardId::new("orders", 0).unwrap();
        let (mut store, _) = QueueStore::open(&dir, [shard.clone()]).unwrap();
        let mut replica = ReplicaStore::new();
        for write in writes(&shard, &mut replica, 3) {
            store.write(&write).unwrap();
        }
        store.sync(&BTreeMap::new()).unwrap();
        drop(store);
        let path = dir.join(LOG_NAME);
        let mut bytes = std::fs::read(&path).unwrap();
        bytes[MAGIC.len() + 8 + 2] ^= 0xff;
        std::fs::write(&path, &bytes).unwrap();
        let err = QueueStore::open(&dir, [shard]).unwrap_err();
        assert!(
            matches!(
                err,
                QueueStoreError::File(RecordFileError::Corrupt { record: 0, .. })
            ),
            "{err}"
        );
        assert!(err.to_string().contains(LOG_NAME), "{err}");
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// Shards written in turn into the one log come back apart, each its own copy, through a
    /// compaction too; a group commit of every shard's writes is one sync.
    #[test]
    fn shards_interleaved_in_one_log_come_back_apart() {
        let dir = temp_dir("interleaved");
        let shards: Vec<ShardId> = (0..3).map(|k| ShardId::new("orders", k).unwrap()).collect();
        let (mut store, _) = QueueStore::open(&dir, shards.clone()).unwrap();
        let mut replicas: BTreeMap<ShardId, ReplicaStore> = BTreeMap::new();
        let mut per_shard: Vec<Vec<QueueDurableWrite>> = shards
            .iter()
            .zip([5, 3, 0])
            .map(|(shard, n)| writes(shard, replicas.entry(shard.clone()).or_default(), n))
            .collect();
        replicas.retain(|_, r| *r != ReplicaStore::new());
        // Interleave the shards' writes, as concurrent batches do.
        while per_shard.iter().any(|w| !w.is_empty()) {
            for w in &mut per_shard {
                if !w.is_empty() {
                    store.write(&w.remove(0)).unwrap();
                }
            }
        }
        store.sync(&replicas).unwrap();
        assert_eq!(store.counters().1, 1, "one sync for every shard written");
        drop(store);
        let (mut store, restored) = QueueStore::open(&dir, shards.clone()).unwrap();
        assert_eq!(
            restored, replicas,
            "each shard its own copy; the empty one left out"
        );
        store.compact(&replicas).unwrap();
        drop(store);
        let (_, restored) = QueueStore::open(&dir, shards).unwrap();
        assert_eq!(restored, replicas, "the same copies after a compaction");
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// A node that kept a file per shard (format 1) finds its copies in the log after the
    /// upgrade, and the old files are gone; one left by a crash after the log was written is
    /// removed unread.
    #[test]
    fn files_per_shard_are_upgraded_into_the_log() {
        let dir = temp_dir("upgrade");
        let shards: Vec<ShardId> = (0..2).map(|k| ShardId::new("orders", k).unwrap()).collect();
        let mut replicas = BTreeMap::new();
        for (shard, n) in shards.iter().zip([4, 2]) {
            let mut replica = ReplicaStore::new();
            let records = replicate(&mut replica, n);
            let (mut file, _) = RecordFile::open(&dir, &v1_file_name(shard), KIND_V1).unwrap();
            file.replace(&records).unwrap();
            replicas.insert(shard.clone(), replica);
        }
        let (store, restored) = QueueStore::open(&dir, shards.clone()).unwrap();
        assert_eq!(restored, replicas);
        assert_eq!(store.counters().2, 1, "the log written by a compaction");
        for shard in &shards {
            assert!(
                !dir.join(v1_file_name(shard)).exists(),
                "{shard}'s old file removed"
            );
        }
        drop(store);
        // A crash between the log's write and the old files' removal: the file left behind
        // holds less than the log (here: nothing) and must not be read.
        let (mut stale, _) = RecordFile::open(&dir, &v1_file_name(&shards[0]), KIND_V1).unwrap();
        stale
            .replace(&replicate(&mut ReplicaStore::new(), 9))
            .unwrap();
        let (_, restored) = QueueStore::open(&dir, shards.clone()).unwrap();
        assert_eq!(restored, replicas, "the log is the state");
        assert!(!dir.join(v1_file_name(&shards[0])).exists());
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// A record whose checksum holds but whose tag names no shard stops the open with the
    /// record's position.
    #[test]
    fn a_record_naming_no_shard_is_refused() {
        let dir = temp_dir("untagged");
        let (mut log, _) = RecordFile::open(&dir, LOG_NAME, KIND).unwrap();
        log.replace(&[b"\x03ABC\x00\x00\x00\x01".to_vec()]).unwrap();
        let err = QueueStore::open(&dir, [ShardId::new("orders", 0).unwrap()]).unwrap_err();
        assert!(
            matches!(err, QueueStoreError::Shard { record: 0, .. }),
            "{err}"
        );
        assert!(err.to_string().contains(LOG_NAME), "{err}");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
