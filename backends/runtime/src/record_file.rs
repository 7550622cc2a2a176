//! A file of checksummed records, appended and synced, or replaced whole without a window in
//! which a crash loses both versions: what the voter's Raft file ([`crate::raft_store`]) and
//! the queue replicas' checkpoints ([`crate::queue_store`]) are written as.
//!
//! # Format
//!
//! An 8-byte header (the magic of the file's kind, which also carries its format version),
//! then records: `length: u32 BE`, `crc32: u32 BE` (CRC-32/IEEE of the payload), `payload`.
//!
//! * An append is written at once and made durable by the next sync.
//! * A replacement is written to `<name>.tmp`, synced, renamed over the file, and the directory
//!   synced, so a crash leaves either the old file or the new one.
//!
//! At open the records are read back in order. A record cut short at the end of the file (a
//! crash in the middle of a write that was therefore never synced, so nothing depending on it
//! was sent) is cut off and logged; so is a last record whose checksum fails. A bad header, a
//! bad checksum before the last record, or an oversized record stop the open with an error
//! naming the file. A `.tmp` left by a crash during a replacement is removed: the file it was
//! to replace is the state.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};

use thiserror::Error;

/// Length and checksum before each record.
pub(crate) const FRAME_BYTES: usize = 8;

/// Why a record file could not be used. Nothing was sent; the open or the write fails with it.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum RecordFileError {
    /// Reading, writing or syncing failed.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// Why.
        source: io::Error,
    },
    /// The file does not start with the expected magic: another kind of file, or another
    /// format version.
    #[error("{}: not a {kind} (bad header)", path.display())]
    BadHeader {
        /// The file.
        path: PathBuf,
        /// What it should be, in words.
        kind: &'static str,
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
}

/// What kind of file, for [`RecordFile::open`]: its magic, its largest record and a name for
/// errors.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Kind {
    /// The first 8 bytes.
    pub(crate) magic: [u8; 8],
    /// The largest record a valid file holds.
    pub(crate) max_record_bytes: usize,
    /// What the file is, in words ("MeshKit Raft log of format 1").
    pub(crate) name: &'static str,
}

/// The records of a file, in order.
pub(crate) type Records = Vec<Vec<u8>>;

/// One open record file.
#[derive(Debug)]
pub(crate) struct RecordFile {
    kind: Kind,
    dir: PathBuf,
    path: PathBuf,
    tmp: PathBuf,
    /// Open for appending once the file exists.
    file: Option<File>,
    /// Appended since the last sync.
    dirty: bool,
    /// Bytes in the file (header included).
    len: u64,
}

impl RecordFile {
    /// Opens `dir/name` (creating `dir` if needed). Returns the file and its records: `None`
    /// when there is no file yet.
    pub(crate) fn open(
        dir: &Path,
        name: &str,
        kind: Kind,
    ) -> Result<(Self, Option<Records>), RecordFileError> {
        fs::create_dir_all(dir).map_err(io_err(dir))?;
        let path = dir.join(name);
        let tmp = dir.join(format!("{name}.tmp"));
        // A replacement that never got renamed is not the state: the old file is.
        if tmp.exists() {
            fs::remove_file(&tmp).map_err(io_err(&tmp))?;
        }
        let mut store = Self {
            kind,
            dir: dir.to_owned(),
            path: path.clone(),
            tmp,
            file: None,
            dirty: false,
            len: 0,
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
        let (records, valid_len) = parse(&path, kind, &bytes)?;
        let records: Vec<Vec<u8>> = records.into_iter().map(<[u8]>::to_vec).collect();
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
        store.file = Some(
            OpenOptions::new()
                .append(true)
                .open(&path)
                .map_err(io_err(&path))?,
        );
        store.len = valid_len as u64;
        Ok((store, Some(records)))
    }

    /// The file's path.
    pub(crate) fn path(&self) -> &Path {
        &self.path
    }

    /// Bytes in the file, header included.
    pub(crate) fn len(&self) -> u64 {
        self.len
    }

    /// Appends one record; [`sync`](Self::sync) makes it durable. Without a file yet, the
    /// record becomes the file (a replacement, synced at once).
    pub(crate) fn append(&mut self, record: &[u8]) -> Result<(), RecordFileError> {
        let Some(file) = self.file.as_mut() else {
            return self.replace(&[record]);
        };
        let mut framed = Vec::with_capacity(FRAME_BYTES + record.len());
        frame(record, &mut framed);
        file.write_all(&framed).map_err(io_err(&self.path))?;
        self.len += framed.len() as u64;
        self.dirty = true;
        Ok(())
    }

    /// Syncs what was appended since the last sync. Call it before sending anything that
    /// depends on the appends.
    pub(crate) fn sync(&mut self) -> Result<bool, RecordFileError> {
        if !self.dirty {
            return Ok(false);
        }
        if let Some(file) = self.file.as_mut() {
            file.sync_data().map_err(io_err(&self.path))?;
        }
        self.dirty = false;
        Ok(true)
    }

    /// What [`sync`](Self::sync) would do, to do elsewhere: a handle on the file (the same open
    /// file, another descriptor) to `sync_data` off the caller's thread, if anything was
    /// appended since the last sync; from then on the file counts as synced, so the caller must
    /// not rely on the appends until that `sync_data` returned.
    pub(crate) fn take_sync(&mut self) -> Result<Option<File>, RecordFileError> {
        if !self.dirty {
            return Ok(None);
        }
        let handle = match self.file.as_ref() {
            Some(file) => Some(file.try_clone().map_err(io_err(&self.path))?),
            None => None,
        };
        self.dirty = false;
        Ok(handle)
    }

    /// Replaces the whole file with `records` (synced, and the rename made durable, before it
    /// returns).
    pub(crate) fn replace<R: AsRef<[u8]>>(&mut self, records: &[R]) -> Result<(), RecordFileError> {
        let mut bytes = Vec::with_capacity(
            self.kind.magic.len()
                + records
                    .iter()
                    .map(|r| FRAME_BYTES + r.as_ref().len())
                    .sum::<usize>(),
        );
        bytes.extend_from_slice(&self.kind.magic);
        for record in records {
            frame(record.as_ref(), &mut bytes);
        }
        {
            let mut f = File::create(&self.tmp).map_err(io_err(&self.tmp))?;
            f.write_all(&bytes).map_err(io_err(&self.tmp))?;
            f.sync_all().map_err(io_err(&self.tmp))?;
        }
        fs::rename(&self.tmp, &self.path).map_err(io_err(&self.path))?;
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
        self.len = bytes.len() as u64;
        self.dirty = false;
        Ok(())
    }
}

pub(crate) fn io_err(path: &Path) -> impl FnOnce(io::Error) -> RecordFileError + use<> {
    let path = path.to_owned();
    move |source| RecordFileError::Io { path, source }
}

pub(crate) fn frame(record: &[u8], out: &mut Vec<u8>) {
    let len = u32::try_from(record.len()).expect("callers bound records far below 4 GiB");
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(&crc32(record).to_be_bytes());
    out.extend_from_slice(record);
}

/// The records of a file and the length of its intact prefix (shorter than the file when the
/// last record is torn).
pub(crate) fn parse<'a>(
    path: &Path,
    kind: Kind,
    bytes: &'a [u8],
) -> Result<(Vec<&'a [u8]>, usize), RecordFileError> {
    let magic = &kind.magic;
    if bytes.len() < magic.len() || bytes[..magic.len()] != *magic {
        return Err(RecordFileError::BadHeader {
            path: path.to_owned(),
            kind: kind.name,
        });
    }
    let mut records = Vec::new();
    let mut at = magic.len();
    while at < bytes.len() {
        let corrupt = |what| RecordFileError::Corrupt {
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
        if len > kind.max_record_bytes {
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

/// CRC-32/IEEE (the one of zlib, Ethernet and PNG) of `bytes`.
pub fn crc32(bytes: &[u8]) -> u32 {
    crc32fast::hash(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crc32_matches_the_standard_check_value() {
        assert_eq!(crc32(b"123456789"), 0xCBF4_3926);
        assert_eq!(crc32(b""), 0);
    }
}
