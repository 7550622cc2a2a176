//! Leadership configuration: the validated [`LeaseConfig`] and its serde form [`RawLeaseConfig`].
//!
//! Raft time is counted in ticks; one tick is [`LeaseConfig::tick_interval`] of virtual time.
//! `pre_vote` and `check_quorum` are always on and not configurable: without them a partitioned
//! voter disrupts the group when it returns, and an isolated leader keeps believing it leads
//! (docs/design.md §6).
//!
//! # Why these defaults
//!
//! A 50 ms tick, an election timeout of 10 ticks and a heartbeat every tick: a follower
//! campaigns after a random 10 to 19 silent ticks (0.5 to 1.0 s), so a crashed Raft leader is
//! replaced within the slowest surviving follower's timeout plus a pre-vote and a vote round
//! trip. The target is p99 <= 1.2 s from the crash of the Raft leader to a new leader (etcd
//! 3.4 with a 100 ms heartbeat and a 1 s election timeout measures p50 1.26 s, p99 1.69 s); the
//! simulator measures p50 0.60 s and p99 0.92 s with these defaults
//! (`scenarios/raft-leader-kill.toml`, docs/benchmarks.md). The former 100 ms tick (1.0 to 2.0
//! s timeouts) gave p50 1.1 s and per-run p99s of 1.7 to 4.3 s.
//!
//! The cost: 20 heartbeats a second from the leader to each follower, and a leader that has not
//! heard from a quorum for 0.5 s steps down, so a voter paused that long (or a link that stalls
//! that long) costs an election. Lease TTLs are unaffected (grants do not wait for ticks, and
//! expiry follows the stamps of committed entries); lease failover, grant latency and handoff
//! figures did not regress (docs/benchmarks.md). On links slower than a LAN raise
//! `tick_interval` so that one round trip stays well under a tick.

use serde::{Deserialize, Serialize};

use crate::config::{ConfigError, HumanDuration, check_duration, check_u32};
use crate::time::Duration;

/// Shortest TTL the lease table accepts, whatever the configuration says.
pub const MIN_TTL: Duration = Duration::from_millis(10);
/// Longest TTL the lease table accepts, whatever the configuration says.
pub const MAX_TTL: Duration = Duration::from_secs(24 * 3600);

/// Validated leadership configuration. Build with [`LeaseConfig::default`] or from a
/// [`RawLeaseConfig`]. Every voter of one group must use the same values.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LeaseConfig {
    tick_interval: Duration,
    election_ticks: u32,
    heartbeat_ticks: u32,
    min_ttl: Duration,
    max_ttl: Duration,
    request_timeout: Duration,
    min_request_timeout: Duration,
    request_attempts: u32,
    max_pending_requests: u32,
    compact_after_entries: u32,
}

impl Default for LeaseConfig {
    fn default() -> Self {
        Self {
            tick_interval: Duration::from_millis(50),
            election_ticks: 10,
            heartbeat_ticks: 1,
            min_ttl: Duration::from_secs(1),
            max_ttl: Duration::from_secs(3600),
            request_timeout: Duration::from_millis(500),
            min_request_timeout: Duration::from_millis(10),
            request_attempts: 8,
            max_pending_requests: 1024,
            compact_after_entries: 1024,
        }
    }
}

impl LeaseConfig {
    /// Virtual time per Raft tick (default 50 ms, 1 ms..=10 s). Shorter detects a dead leader
    /// sooner and costs more heartbeats (see "Why these defaults" above).
    pub fn tick_interval(&self) -> Duration {
        self.tick_interval
    }
    /// Raft's election timeout in ticks (default 10, 3..=1000); each voter waits a random
    /// `election_ticks..2 * election_ticks` drawn from its seeded RNG. With check_quorum a leader
    /// that heard from no quorum for this long steps down.
    pub fn election_ticks(&self) -> u32 {
        self.election_ticks
    }
    /// Ticks between leader heartbeats (default 1, 1..=100); less than `election_ticks`.
    pub fn heartbeat_ticks(&self) -> u32 {
        self.heartbeat_ticks
    }
    /// Shortest TTL a client may ask for (default 1 s; at least 10 ms).
    pub fn min_ttl(&self) -> Duration {
        self.min_ttl
    }
    /// Longest TTL a client may ask for (default 1 h; at most 24 h).
    pub fn max_ttl(&self) -> Duration {
        self.max_ttl
    }
    /// The longest a client waits for one attempt of a request before it tries again (default
    /// 500 ms, 10 ms..=60 s), and its wait before it has measured a round trip. Between this
    /// ceiling and [`min_request_timeout`](Self::min_request_timeout) the wait follows the
    /// measured round trips (smoothed + 4 x variation, doubled per timed-out attempt, as TCP's
    /// retransmission timeout). Voters forget a request that never committed after four times
    /// this.
    pub fn request_timeout(&self) -> Duration {
        self.request_timeout
    }
    /// The shortest a client waits for one attempt of a request (default 10 ms, 1 ms..=60 s, at
    /// most `request_timeout`). Lower retries a lost datagram sooner on fast links and sends
    /// more needless retries when a commit is only slow (a retry of a request the leader is
    /// committing costs a datagram, nothing else). Equal to `request_timeout`, the wait is
    /// fixed.
    pub fn min_request_timeout(&self) -> Duration {
        self.min_request_timeout
    }
    /// Attempts of one request that may time out before it fails with `NoQuorum` (default 8,
    /// 1..=100). A redirect (a voter that is not the leader naming the one it knows) is
    /// answered at once and does not count, up to three per timed-out attempt. With the
    /// default timeouts, eight attempts wait about 1.6 s in all once round trips of a few
    /// milliseconds were measured (10, 20, 40 ... 320 ms, then 500 ms twice), 4 s before.
    pub fn request_attempts(&self) -> u32 {
        self.request_attempts
    }
    /// Requests in flight per client, and proposals awaiting commit per voter (default 1024,
    /// 1..=65536); beyond it new ones are refused.
    pub fn max_pending_requests(&self) -> u32 {
        self.max_pending_requests
    }
    /// Applied entries after which a voter snapshots its lease table and compacts its log
    /// (default 1024, 16..=1,048,576). The log holds about 1.25 times this (a quarter is kept
    /// behind each snapshot for followers a little behind). Lower keeps less memory and makes
    /// a restart replay less; it also makes snapshots (one encoding of the table each, and a
    /// whole table sent to a follower that falls behind) more frequent. With about one entry
    /// per lease renewal, 1024 is about 20 s of 150 shard leases renewed every second.
    pub fn compact_after_entries(&self) -> u32 {
        self.compact_after_entries
    }
}

/// The serde form of [`LeaseConfig`]: optional overrides of the defaults, as written in TOML.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[expect(
    missing_docs,
    reason = "each field is documented by the LeaseConfig getter of the same name"
)]
pub struct RawLeaseConfig {
    pub tick_interval: Option<HumanDuration>,
    pub election_ticks: Option<u32>,
    pub heartbeat_ticks: Option<u32>,
    pub min_ttl: Option<HumanDuration>,
    pub max_ttl: Option<HumanDuration>,
    pub request_timeout: Option<HumanDuration>,
    pub min_request_timeout: Option<HumanDuration>,
    pub request_attempts: Option<u32>,
    pub max_pending_requests: Option<u32>,
    pub compact_after_entries: Option<u32>,
}

impl TryFrom<RawLeaseConfig> for LeaseConfig {
    type Error = ConfigError;

    fn try_from(raw: RawLeaseConfig) -> Result<Self, ConfigError> {
        let d = Self::default();
        let ms = Duration::from_millis;
        let secs = Duration::from_secs;
        let config = Self {
            tick_interval: check_duration(
                "tick_interval",
                raw.tick_interval,
                d.tick_interval,
                ms(1),
                secs(10),
            )?,
            election_ticks: check_u32(
                "election_ticks",
                raw.election_ticks,
                d.election_ticks,
                3,
                1000,
            )?,
            heartbeat_ticks: check_u32(
                "heartbeat_ticks",
                raw.heartbeat_ticks,
                d.heartbeat_ticks,
                1,
                100,
            )?,
            min_ttl: check_duration("min_ttl", raw.min_ttl, d.min_ttl, MIN_TTL, MAX_TTL)?,
            max_ttl: check_duration("max_ttl", raw.max_ttl, d.max_ttl, MIN_TTL, MAX_TTL)?,
            request_timeout: check_duration(
                "request_timeout",
                raw.request_timeout,
                d.request_timeout,
                ms(10),
                secs(60),
            )?,
            min_request_timeout: check_duration(
                "min_request_timeout",
                raw.min_request_timeout,
                d.min_request_timeout,
                ms(1),
                secs(60),
            )?,
            request_attempts: check_u32(
                "request_attempts",
                raw.request_attempts,
                d.request_attempts,
                1,
                100,
            )?,
            max_pending_requests: check_u32(
                "max_pending_requests",
                raw.max_pending_requests,
                d.max_pending_requests,
                1,
                65_536,
            )?,
            compact_after_entries: check_u32(
                "compact_after_entries",
                raw.compact_after_entries,
                d.compact_after_entries,
                16,
                1 << 20,
            )?,
        };
        if config.heartbeat_ticks >= config.election_ticks {
            return Err(ConfigError::Relation {
                field: "heartbeat_ticks",
                relation: "less than",
                other: "election_ticks",
            });
        }
        if config.min_request_timeout > config.request_timeout {
            return Err(ConfigError::Relation {
                field: "min_request_timeout",
                relation: "at most",
                other: "request_timeout",
            });
        }
        if config.min_ttl > config.max_ttl {
            return Err(ConfigError::Relation {
                field: "min_ttl",
                relation: "at most",
                other: "max_ttl",
            });
        }
        Ok(config)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid() {
        let built = LeaseConfig::try_from(RawLeaseConfig::default()).unwrap();
        assert_eq!(built, LeaseConfig::default());
    }

    #[test]
    fn out_of_range_and_relations_name_the_field() {
        let raw: RawLeaseConfig = toml::from_str("election_ticks = 2").unwrap();
        assert_eq!(
            LeaseConfig::try_from(raw).unwrap_err().to_string(),
            "election_ticks = 2 is out of range: allowed 3..=1000"
        );
        let raw: RawLeaseConfig = toml::from_str("heartbeat_ticks = 10").unwrap();
        assert!(matches!(
            LeaseConfig::try_from(raw),
            Err(ConfigError::Relation {
                field: "heartbeat_ticks",
                ..
            })
        ));
        let raw: RawLeaseConfig = toml::from_str("min_ttl = \"2h\"").unwrap();
        assert!(LeaseConfig::try_from(raw).is_err());
        assert!(toml::from_str::<RawLeaseConfig>("pre_vote = false").is_err());
        let raw: RawLeaseConfig = toml::from_str("min_request_timeout = \"1s\"").unwrap();
        assert_eq!(
            LeaseConfig::try_from(raw).unwrap_err().to_string(),
            ConfigError::Relation {
                field: "min_request_timeout",
                relation: "at most",
                other: "request_timeout",
            }
            .to_string()
        );
        let raw: RawLeaseConfig = toml::from_str("min_request_timeout = \"0s\"").unwrap();
        assert!(LeaseConfig::try_from(raw).is_err());
        let raw: RawLeaseConfig =
            toml::from_str("min_request_timeout = \"2s\"\nrequest_timeout = \"2s\"").unwrap();
        assert_eq!(
            LeaseConfig::try_from(raw).unwrap().min_request_timeout(),
            Duration::from_secs(2)
        );
        let raw: RawLeaseConfig = toml::from_str("compact_after_entries = 8").unwrap();
        assert_eq!(
            LeaseConfig::try_from(raw).unwrap_err().to_string(),
            "compact_after_entries = 8 is out of range: allowed 16..=1048576"
        );
    }
}
