//! A job: what a producer posts, what travels in the queue, what a worker does with it and
//! what it records. The work is deterministic (SHA-256 iterated `rounds` times over `data`), so
//! `mesh-jobs verify` can recompute every result.

use serde::{Deserialize, Serialize};
use thiserror::Error;

/// Most rounds one job may ask for (about a second of CPU).
pub(crate) const MAX_ROUNDS: u32 = 1_000_000;
/// Longest job id.
pub(crate) const MAX_ID_LEN: usize = 64;
/// Longest `data`: with the id and the JSON around them the payload stays within the queue's
/// 400-byte bound ([`meshkit::queue::MAX_PAYLOAD_BYTES`]).
pub(crate) const MAX_DATA_LEN: usize = 256;

/// A job, as posted to `POST /jobs` and carried (as JSON) in the queue.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Job {
    /// The producer's name for it (letters, digits, `.`, `_`, `-`).
    pub(crate) id: String,
    /// The bytes to hash.
    pub(crate) data: String,
    /// How many times.
    pub(crate) rounds: u32,
}

/// Why a job was refused; names the field.
#[derive(Debug, Error, PartialEq, Eq)]
pub(crate) enum JobError {
    /// The payload is not a job's JSON.
    #[error("not a job: {0}")]
    Malformed(String),
    /// A field is out of range.
    #[error("`{field}`: {expected}")]
    Invalid {
        /// The field.
        field: &'static str,
        /// What is allowed.
        expected: &'static str,
    },
}

impl Job {
    /// Checks the fields' ranges.
    pub(crate) fn check(&self) -> Result<(), JobError> {
        let id_ok = |c: char| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-');
        if self.id.is_empty() || self.id.len() > MAX_ID_LEN || !self.id.chars().all(id_ok) {
            return Err(JobError::Invalid {
                field: "id",
                expected: "1 to 64 letters, digits, '.', '_' or '-'",
            });
        }
        if self.data.len() > MAX_DATA_LEN {
            return Err(JobError::Invalid {
                field: "data",
                expected: "at most 256 bytes",
            });
        }
        if !(1..=MAX_ROUNDS).contains(&self.rounds) {
            return Err(JobError::Invalid {
                field: "rounds",
                expected: "from 1 to 1000000",
            });
        }
        // Escapes (quotes, control characters) lengthen the JSON: the queue's bound is on it.
        if self.to_payload().len() > meshkit::queue::MAX_PAYLOAD_BYTES {
            return Err(JobError::Invalid {
                field: "data",
                expected: "short enough for the job's JSON to fit in 400 bytes",
            });
        }
        Ok(())
    }

    /// The queue payload: the job's JSON.
    pub(crate) fn to_payload(&self) -> Vec<u8> {
        // A struct of strings and a number always serializes.
        serde_json::to_vec(self).unwrap_or_default()
    }

    /// A job read back from a queue payload, checked.
    pub(crate) fn from_payload(payload: &[u8]) -> Result<Self, JobError> {
        let job: Self =
            serde_json::from_slice(payload).map_err(|e| JobError::Malformed(e.to_string()))?;
        job.check()?;
        Ok(job)
    }

    /// Which shard of `shards` the job goes to: FNV-1a of its id, so a producer's retry of the
    /// same job lands on the same queue.
    pub(crate) fn shard_index(&self, shards: u32) -> u32 {
        let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
        for byte in self.id.bytes() {
            hash ^= u64::from(byte);
            hash = hash.wrapping_mul(0x0100_0000_01b3);
        }
        u32::try_from(hash % u64::from(shards.max(1))).unwrap_or(0)
    }

    /// The work: SHA-256 of `data`, then of the digest, `rounds` times in all; hex.
    pub(crate) fn run(&self) -> String {
        let mut digest = ring::digest::digest(&ring::digest::SHA256, self.data.as_bytes());
        for _ in 1..self.rounds {
            digest = ring::digest::digest(&ring::digest::SHA256, digest.as_ref());
        }
        digest.as_ref().iter().map(|b| format!("{b:02x}")).collect()
    }
}

/// What `POST /jobs` answers: the acknowledged item (the owner and a replica hold it).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Accepted {
    /// The job's id.
    pub(crate) id: String,
    /// The shard's queue, `jobs/<n>`.
    pub(crate) shard: String,
    /// The item's id in that queue.
    pub(crate) item: u64,
    /// The owner's fencing token when it acknowledged.
    pub(crate) fence: u64,
}

/// A line of a node's results file.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub(crate) enum Record {
    /// A worker ran the job (written before it asks to complete it: at least once).
    Processed {
        /// The node.
        node: u64,
        /// The job.
        id: String,
        /// Its queue.
        shard: String,
        /// Its item there.
        item: u64,
        /// Which lease of the item this was.
        attempt: u32,
        /// The owner's fence in the token.
        fence: u64,
        /// The result.
        digest: String,
    },
    /// The owner accepted the completion (replicated before it answered).
    Completed {
        /// The node.
        node: u64,
        /// Its queue.
        shard: String,
        /// Its item there.
        item: u64,
        /// The fence of the token it completed with.
        fence: u64,
    },
    /// The owner refused the completion: the token was stale (the item runs again elsewhere).
    Refused {
        /// The node.
        node: u64,
        /// Its queue.
        shard: String,
        /// Its item there.
        item: u64,
        /// Why.
        reason: String,
    },
}

#[cfg(test)]
mod tests {
    use super::*;

    fn job(id: &str, rounds: u32) -> Job {
        Job {
            id: id.to_owned(),
            data: "hello".to_owned(),
            rounds,
        }
    }

    #[test]
    fn the_work_is_iterated_sha256() {
        // sha256("hello"), and sha256 of that digest.
        assert_eq!(
            job("a", 1).run(),
            "2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824"
        );
        let twice = ring::digest::digest(
            &ring::digest::SHA256,
            ring::digest::digest(&ring::digest::SHA256, b"hello").as_ref(),
        );
        let hex: String = twice.as_ref().iter().map(|b| format!("{b:02x}")).collect();
        assert_eq!(job("a", 2).run(), hex);
    }

    #[test]
    fn payloads_round_trip_and_bad_ones_are_refused() {
        let j = job("p-1", 10);
        assert_eq!(Job::from_payload(&j.to_payload()), Ok(j));
        assert!(matches!(
            Job::from_payload(b"{\"id\":1}"),
            Err(JobError::Malformed(_))
        ));
        assert_eq!(
            job("bad id", 1).check(),
            Err(JobError::Invalid {
                field: "id",
                expected: "1 to 64 letters, digits, '.', '_' or '-'"
            })
        );
        assert!(job("a", 0).check().is_err());
        let longest = Job {
            id: "x".repeat(MAX_ID_LEN),
            data: "y".repeat(MAX_DATA_LEN),
            rounds: MAX_ROUNDS,
        };
        assert!(longest.to_payload().len() <= meshkit::queue::MAX_PAYLOAD_BYTES);
        assert!(job("a", 1).shard_index(4) < 4);
    }
}
