//! The queue replicas' checkpoints on disk: one file per shard, `queue-{namespace}-{id}.log`
//! in `[queues] data_dir`.
//!
//! The queue core stays sans-IO: a replica that records
//! ([`Node::record_queue_durable_writes`](meshkit::node::Node::record_queue_durable_writes))
//! hands every change of its copy out as a [`QueueDurableWrite`]; this module appends them, and
//! the driver syncs the files before it hands the transport any datagram polled after them. An
//! acknowledgement to an owner therefore never promises what the disk does not hold, and an
//! owner counts a replica's acknowledgement toward an enqueue's only once it is durable: the
//! rule the queue's "no acknowledged item is lost" rests on (`docs/task-queues.md`). At start
//! every file is read back with [`ReplicaStore::restore`], so a restarted node offers a new
//! owner what it held.
//!
//! # Why this shape
//!
//! The checkpoint is a log of small records (each batch applied adds one), read back only at
//! start: the [record file](crate::record_file) the voter's Raft log uses fits it as it is
//! (CRC per record, torn tail cut, crash-safe replacement), with no new dependency. One file
//! per shard keeps a compaction to the shard that grew. SQLite would give the same guarantees
//! at the cost of a C library in every build, for no query the queue needs.
//!
//! # Compaction
//!
//! A log grows with every change. Once a shard's file passes [`COMPACT_MIN_BYTES`] and twice
//! what its last compaction wrote, it is replaced by the replica's current copy, in records of
//! at most [`COMPACT_RECORDS_PER_CHUNK`] items ([`ReplicaStore::compacted`]: the records of
//! earlier owners it still holds first, under their owners' fences): replaying them gives the
//! same copy (see [`ReplicaStore::restore`]). The replacement is taken after every write the
//! core recorded was appended, so it holds everything those writes held.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use meshkit::queue::{
    CheckpointError, MAX_BATCH_RECORDS, MAX_RECORD_BYTES, QueueDurableWrite, ReplicaStore,
};
use meshkit::shard::ShardId;
use thiserror::Error;

use crate::record_file::{Kind, RecordFile, RecordFileError};

/// The files' first bytes: "MKQUEU", then the format version (1) as a big-endian u16.
pub const MAGIC: [u8; 8] = *b"MKQUEU\x00\x01";
/// Items per record of a compacted file.
pub const COMPACT_RECORDS_PER_CHUNK: usize = 64;
/// A shard's file is not compacted below this size.
pub const COMPACT_MIN_BYTES: u64 = 1 << 20;
/// The header of a checkpoint record: promised, source, applied, record count.
const HEADER_BYTES: usize = 8 + 8 + 8 + 4;
/// The largest checkpoint record: a header and a chunk's items, or a batch's.
pub const MAX_CHECKPOINT_RECORD_BYTES: usize =
    HEADER_BYTES + COMPACT_RECORDS_PER_CHUNK * MAX_RECORD_BYTES;
const _: () = assert!(
    COMPACT_RECORDS_PER_CHUNK >= MAX_BATCH_RECORDS,
    "a replica's record (one batch) must fit the bound the files are read with"
);
const KIND: Kind = Kind {
    magic: MAGIC,
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
    /// Every record is intact but one does not decode as a checkpoint.
    #[error("{}: {source}", path.display())]
    Checkpoint {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        source: CheckpointError,
    },
}

#[derive(Debug)]
struct ShardFile {
    file: RecordFile,
    /// Bytes the last compaction (or the open) left.
    compacted_len: u64,
}

/// The checkpoint files of every configured shard.
#[derive(Debug)]
pub struct QueueStore {
    dir: PathBuf,
    files: BTreeMap<ShardId, ShardFile>,
    writes: u64,
    syncs: u64,
    compactions: u64,
}

impl QueueStore {
    /// Opens the files of `shards` in `dir` (creating it if needed) and rebuilds the replicas
    /// they hold (shards without a file or with an empty copy are left out).
    pub fn open(
        dir: &Path,
        shards: impl IntoIterator<Item = ShardId>,
    ) -> Result<(Self, BTreeMap<ShardId, ReplicaStore>), QueueStoreError> {
        let mut files = BTreeMap::new();
        let mut replicas = BTreeMap::new();
        for shard in shards {
            let (file, records) = RecordFile::open(dir, &file_name(&shard), KIND)?;
            if let Some(records) = records {
                let replica =
                    ReplicaStore::restore(records.iter().map(Vec::as_slice)).map_err(|source| {
                        QueueStoreError::Checkpoint {
                            path: file.path().to_owned(),
                            source,
                        }
                    })?;
                if replica != ReplicaStore::new() {
                    replicas.insert(shard.clone(), replica);
                }
            }
            let compacted_len = file.len();
            files.insert(
                shard,
                ShardFile {
                    file,
                    compacted_len,
                },
            );
        }
        let store = Self {
            dir: dir.to_owned(),
            files,
            writes: 0,
            syncs: 0,
            compactions: 0,
        };
        Ok((store, replicas))
    }

    /// The directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Appends one write (made durable by [`sync`](Self::sync)). A write for a shard without a
    /// file (not configured) is a bug of the core's and is dropped with a log line.
    pub fn write(&mut self, write: &QueueDurableWrite) -> Result<(), QueueStoreError> {
        let Some(f) = self.files.get_mut(&write.shard) else {
            tracing::error!(shard = %write.shard, "a queue checkpoint for a shard with no file");
            return Ok(());
        };
        f.file.append(&write.record)?;
        self.writes += 1;
        Ok(())
    }

    /// The syncs [`sync`](Self::sync) would make, to make off the driver's task (one
    /// [`SyncFile`] per file written since the last sync); compact afterwards with
    /// [`compact_grown`](Self::compact_grown). Nothing that depends on the writes appended so
    /// far may be sent until every one of them ran.
    pub(crate) fn start_sync(&mut self) -> Result<Vec<SyncFile>, QueueStoreError> {
        let mut out = Vec::new();
        for f in self.files.values_mut() {
            if let Some(file) = f.file.take_sync()? {
                out.push(SyncFile {
                    path: f.file.path().to_owned(),
                    file,
                });
            }
        }
        Ok(out)
    }

    /// Counts `files` syncs made by [`SyncFile::run`].
    pub(crate) fn count_syncs(&mut self, files: usize) {
        self.syncs += files as u64;
    }

    /// Compacts the files that grew past their bound from `replicas` (the copies the written
    /// records built); each replacement is synced before it returns.
    pub(crate) fn compact_grown(
        &mut self,
        replicas: &BTreeMap<ShardId, ReplicaStore>,
    ) -> Result<(), QueueStoreError> {
        for (shard, f) in &mut self.files {
            let grown = f.file.len() > COMPACT_MIN_BYTES.max(2 * f.compacted_len);
            if grown {
                let empty = ReplicaStore::new();
                let replica = replicas.get(shard).unwrap_or(&empty);
                f.file
                    .replace(&replica.compacted(COMPACT_RECORDS_PER_CHUNK))?;
                f.compacted_len = f.file.len();
                self.compactions += 1;
            }
        }
        Ok(())
    }

    /// Syncs every file written since the last sync, then compacts the files that grew past
    /// their bound from `replicas` (the copies the written records built).
    pub fn sync(
        &mut self,
        replicas: &BTreeMap<ShardId, ReplicaStore>,
    ) -> Result<(), QueueStoreError> {
        for f in self.files.values_mut() {
            if f.file.sync()? {
                self.syncs += 1;
            }
        }
        self.compact_grown(replicas)
    }

    /// Records appended, syncs made and compactions, since the open.
    pub fn counters(&self) -> (u64, u64, u64) {
        (self.writes, self.syncs, self.compactions)
    }
}

/// One file's sync, taken by [`QueueStore::start_sync`]: blocking, to run on a thread that may
/// block (`tokio::task::spawn_blocking`), not on the driver's task.
#[derive(Debug)]
pub(crate) struct SyncFile {
    path: PathBuf,
    file: std::fs::File,
}

impl SyncFile {
    /// Makes the file's appends durable (`fdatasync`).
    pub(crate) fn run(self) -> Result<(), QueueStoreError> {
        self.file
            .sync_data()
            .map_err(crate::record_file::io_err(&self.path))
            .map_err(QueueStoreError::File)
    }
}

/// `queue-{namespace}-{id}.log`.
pub fn file_name(shard: &ShardId) -> String {
    format!("queue-{}-{}.log", shard.namespace(), shard.id())
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
        for record in replicate(&mut replica, 4000) {
            store
                .write(&QueueDurableWrite {
                    shard: shard.clone(),
                    record,
                })
                .unwrap();
        }
        replicas.insert(shard.clone(), replica.clone());
        store.sync(&replicas).unwrap();
        assert_eq!(store.counters().2, 1, "one compaction");
        drop(store);
        let (_, restored) = QueueStore::open(&dir, [shard.clone()]).unwrap();
        assert_eq!(restored.get(&shard), Some(&replica));
        let path = dir.join(file_name(&shard));
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
        for record in replicate(&mut replica, 5) {
            store
                .write(&QueueDurableWrite {
                    shard: shard.clone(),
                    record,
                })
                .unwrap();
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
        for record in replicate(&mut replica, 3) {
            store
                .write(&QueueDurableWrite {
                    shard: shard.clone(),
                    record,
                })
                .unwrap();
        }
        store.sync(&BTreeMap::new()).unwrap();
        drop(store);
        let path = dir.join(file_name(&shard));
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
        assert!(err.to_string().contains("queue-orders-0.log"), "{err}");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
