//! Queue configuration: the validated [`QueueConfig`] and its serde form [`RawQueueConfig`]
//! (`[queue]` in `node.toml`, and the core half of a simulator scenario's `[queue]`).
//!
//! Every node of a mesh must use the same values: any of them may become a shard's owner.

use serde::{Deserialize, Serialize};

use super::error::QueueConfigError;
use crate::config::{HumanDuration, check_duration, check_u32};
use crate::time::Duration;

/// Replicas that hold an item before its enqueue is acknowledged, when `replicas` is absent.
pub const DEFAULT_REPLICAS: u32 = 1;
/// Leases of one item before it is dead-lettered, when `max_attempts` is absent.
pub const DEFAULT_MAX_ATTEMPTS: u32 = 5;
/// How long a worker's lease on an item lasts without a heartbeat, when absent.
pub const DEFAULT_LEASE_TIMEOUT: Duration = Duration::from_secs(10);
/// The shortest time between two backpressure transitions, when absent.
pub const DEFAULT_BACKPRESSURE_COOLDOWN: Duration = Duration::from_secs(1);
/// How long a worker's node may be Dead or Left before its items are requeued, when absent.
pub const DEFAULT_HEALTH_GRACE: Duration = Duration::from_secs(30);
/// How long a new owner waits for every member it asked before it rebuilds from the best offer
/// it has, when absent.
pub const DEFAULT_RECOVERY_WAIT: Duration = Duration::from_secs(1);
/// How long a producer's or worker's request waits for its answer (retrying meanwhile), when
/// absent.
pub const DEFAULT_REQUEST_TIMEOUT: Duration = Duration::from_secs(5);
/// Items (tombstones of completed ones included) one queue holds, when absent.
pub const DEFAULT_MAX_ITEMS: u32 = 65_536;
/// The most replicas a queue may ask for.
pub const MAX_REPLICAS: u32 = 8;

/// Validated `[queue]`. Build from a [`RawQueueConfig`] or with [`QueueConfig::default`] and
/// the builders.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct QueueConfig {
    replicas: u32,
    max_attempts: u32,
    lease_timeout: Duration,
    high_watermark: Option<u32>,
    low_watermark: u32,
    cooldown: Duration,
    health_grace: Duration,
    recovery_wait: Duration,
    request_timeout: Duration,
    max_items: u32,
}

impl Default for QueueConfig {
    fn default() -> Self {
        Self {
            replicas: DEFAULT_REPLICAS,
            max_attempts: DEFAULT_MAX_ATTEMPTS,
            lease_timeout: DEFAULT_LEASE_TIMEOUT,
            high_watermark: None,
            low_watermark: 0,
            cooldown: DEFAULT_BACKPRESSURE_COOLDOWN,
            health_grace: DEFAULT_HEALTH_GRACE,
            recovery_wait: DEFAULT_RECOVERY_WAIT,
            request_timeout: DEFAULT_REQUEST_TIMEOUT,
            max_items: DEFAULT_MAX_ITEMS,
        }
    }
}

impl QueueConfig {
    /// The same, with `replicas` replicas (at most [`MAX_REPLICAS`]; 0 acknowledges at once,
    /// and an owner's crash then loses what it held).
    #[must_use]
    pub fn with_replicas(mut self, replicas: u32) -> Self {
        self.replicas = replicas.min(MAX_REPLICAS);
        self
    }

    /// The same, with backpressure: active at `pending >= high`, inactive at `pending <= low`
    /// (`None`: `high / 2`). A `low` at or above `high` is lowered to `high / 2`.
    #[must_use]
    pub fn with_watermarks(mut self, high: u32, low: Option<u32>) -> Self {
        let high = high.max(1);
        self.high_watermark = Some(high);
        self.low_watermark = low.filter(|&l| l < high).unwrap_or(high / 2);
        self
    }

    /// The same, with at least `cooldown` between two backpressure transitions.
    #[must_use]
    pub fn with_cooldown(mut self, cooldown: Duration) -> Self {
        self.cooldown = cooldown;
        self
    }

    /// The same, with a worker's lease lasting `timeout` without a heartbeat (at least 1 ms).
    #[must_use]
    pub fn with_lease_timeout(mut self, timeout: Duration) -> Self {
        self.lease_timeout = timeout.max(Duration::from_millis(1));
        self
    }

    /// The same, dead-lettering an item after `max` leases (at least 1).
    #[must_use]
    pub fn with_max_attempts(mut self, max: u32) -> Self {
        self.max_attempts = max.max(1);
        self
    }

    /// The same, requeueing a gone worker's items after `grace`.
    #[must_use]
    pub fn with_health_grace(mut self, grace: Duration) -> Self {
        self.health_grace = grace;
        self
    }

    /// The same, with a new owner waiting at most `wait` for its replicas' offers.
    #[must_use]
    pub fn with_recovery_wait(mut self, wait: Duration) -> Self {
        self.recovery_wait = wait;
        self
    }

    /// The same, with requests waiting `timeout` for their answer (at least 1 ms).
    #[must_use]
    pub fn with_request_timeout(mut self, timeout: Duration) -> Self {
        self.request_timeout = timeout.max(Duration::from_millis(1));
        self
    }

    /// The same, holding at most `max` items per queue, tombstones included (at least 1).
    #[must_use]
    pub fn with_max_items(mut self, max: u32) -> Self {
        self.max_items = max.max(1);
        self
    }

    /// Replicas that hold an item before its enqueue (or its completion) is acknowledged.
    pub fn replicas(&self) -> u32 {
        self.replicas
    }
    /// Leases of one item before it is dead-lettered.
    pub fn max_attempts(&self) -> u32 {
        self.max_attempts
    }
    /// A worker's lease without a heartbeat.
    pub fn lease_timeout(&self) -> Duration {
        self.lease_timeout
    }
    /// The high watermark; `None`: backpressure is never active.
    pub fn high_watermark(&self) -> Option<u32> {
        self.high_watermark
    }
    /// The low watermark (meaningful with a high one).
    pub fn low_watermark(&self) -> u32 {
        self.low_watermark
    }
    /// The shortest time between two backpressure transitions.
    pub fn cooldown(&self) -> Duration {
        self.cooldown
    }
    /// How long a worker's node may be Dead or Left before its items are requeued.
    pub fn health_grace(&self) -> Duration {
        self.health_grace
    }
    /// How long a new owner waits for the members it asked before rebuilding from the best
    /// offer.
    pub fn recovery_wait(&self) -> Duration {
        self.recovery_wait
    }
    /// How long a request waits for its answer.
    pub fn request_timeout(&self) -> Duration {
        self.request_timeout
    }
    /// Items one queue holds (tombstones included).
    pub fn max_items(&self) -> usize {
        self.max_items as usize
    }
}

/// The serde form of [`QueueConfig`], as written in TOML:
///
/// ```toml
/// [queue]
/// replicas = 1              # replicas holding an item before its ack (default 1, at most 8)
/// max_attempts = 5          # leases before dead-lettering (default 5)
/// lease_timeout = "10s"     # a worker's lease without heartbeat (default 10s)
/// high_watermark = 1000     # backpressure active at pending >= 1000 (default: never)
/// low_watermark = 500       # inactive again at pending <= 500 (default high/2)
/// cooldown = "1s"           # shortest time between transitions (default 1s)
/// health_grace = "30s"      # a Dead/Left worker's items requeue after this (default 30s)
/// recovery_wait = "1s"      # a new owner's wait for replicas' offers (default 1s)
/// request_timeout = "5s"    # a request's wait for its answer (default 5s)
/// max_items = 65536         # items per queue, tombstones included (default 65536)
/// ```
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[expect(
    missing_docs,
    reason = "each field is documented by the QueueConfig getter of the same name"
)]
pub struct RawQueueConfig {
    pub replicas: Option<u32>,
    pub max_attempts: Option<u32>,
    pub lease_timeout: Option<HumanDuration>,
    pub high_watermark: Option<u32>,
    pub low_watermark: Option<u32>,
    pub cooldown: Option<HumanDuration>,
    pub health_grace: Option<HumanDuration>,
    pub recovery_wait: Option<HumanDuration>,
    pub request_timeout: Option<HumanDuration>,
    pub max_items: Option<u32>,
}

impl TryFrom<RawQueueConfig> for QueueConfig {
    type Error = QueueConfigError;

    fn try_from(raw: RawQueueConfig) -> Result<Self, QueueConfigError> {
        let ms = Duration::from_millis;
        let hour = Duration::from_secs(3600);
        let high_watermark = raw
            .high_watermark
            .map(|h| check_u32("high_watermark", Some(h), h, 1, 1 << 30))
            .transpose()?;
        let low_watermark = match (high_watermark, raw.low_watermark) {
            (None, Some(_)) => return Err(QueueConfigError::LowWithoutHigh),
            (None, None) => 0,
            (Some(high), None) => high / 2,
            (Some(high), Some(low)) if low >= high => {
                return Err(QueueConfigError::Watermarks { low, high });
            }
            (Some(_), Some(low)) => low,
        };
        Ok(Self {
            replicas: check_u32("replicas", raw.replicas, DEFAULT_REPLICAS, 0, MAX_REPLICAS)?,
            max_attempts: check_u32(
                "max_attempts",
                raw.max_attempts,
                DEFAULT_MAX_ATTEMPTS,
                1,
                1000,
            )?,
            lease_timeout: check_duration(
                "lease_timeout",
                raw.lease_timeout,
                DEFAULT_LEASE_TIMEOUT,
                ms(10),
                hour,
            )?,
            high_watermark,
            low_watermark,
            cooldown: check_duration(
                "cooldown",
                raw.cooldown,
                DEFAULT_BACKPRESSURE_COOLDOWN,
                Duration::ZERO,
                hour,
            )?,
            health_grace: check_duration(
                "health_grace",
                raw.health_grace,
                DEFAULT_HEALTH_GRACE,
                Duration::ZERO,
                hour,
            )?,
            recovery_wait: check_duration(
                "recovery_wait",
                raw.recovery_wait,
                DEFAULT_RECOVERY_WAIT,
                ms(10),
                Duration::from_secs(60),
            )?,
            request_timeout: check_duration(
                "request_timeout",
                raw.request_timeout,
                DEFAULT_REQUEST_TIMEOUT,
                ms(10),
                hour,
            )?,
            max_items: check_u32("max_items", raw.max_items, DEFAULT_MAX_ITEMS, 1, 1 << 20)?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<QueueConfig, QueueConfigError> {
        QueueConfig::try_from(toml::from_str::<RawQueueConfig>(text).unwrap())
    }

    #[test]
    fn defaults_watermarks_and_errors() {
        let c = parse("").unwrap();
        assert_eq!(c, QueueConfig::default());
        assert_eq!(c.high_watermark(), None);
        let c = parse("high_watermark = 100").unwrap();
        assert_eq!((c.high_watermark(), c.low_watermark()), (Some(100), 50));
        assert_eq!(
            parse("high_watermark = 10\nlow_watermark = 10"),
            Err(QueueConfigError::Watermarks { low: 10, high: 10 })
        );
        assert_eq!(
            parse("low_watermark = 1"),
            Err(QueueConfigError::LowWithoutHigh)
        );
        assert!(
            parse("replicas = 9")
                .unwrap_err()
                .to_string()
                .starts_with("queue.replicas = 9")
        );
        let b = QueueConfig::default().with_watermarks(10, Some(20));
        assert_eq!(
            b.low_watermark(),
            5,
            "a low at or above high falls back to high/2"
        );
    }
}
