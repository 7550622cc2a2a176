//! Shard configuration: the validated [`ShardConfig`] and its serde form [`RawShardConfig`]
//! (`[shards]` in `node.toml`).
//!
//! Every node of a mesh must use the same values: each voter keeps the map of the configured
//! shards, and each member acquires and renews its shards for the configured TTL.

use alloc::collections::BTreeMap;
use alloc::string::String;

use serde::{Deserialize, Serialize};
use thiserror::Error;

use super::{MAX_SHARDS, MAX_TOLERANCE_PERCENT, ShardId, ShardIdError};
use crate::config::{ConfigError, HumanDuration, check_duration, check_u32};
use crate::time::Duration;

/// The TTL of a shard's lease when `ttl` is absent.
pub const DEFAULT_SHARD_TTL: Duration = Duration::from_secs(3);
/// Moves under way at once when `max_moves_in_flight` is absent.
pub const DEFAULT_MAX_MOVES_IN_FLIGHT: u32 = 8;

/// Validated `[shards]`: which shards exist, their lease TTL, the rebalancer's bound and how
/// many moves may run at once. Build from a [`RawShardConfig`] or with [`ShardConfig::new`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ShardConfig {
    namespaces: BTreeMap<String, u32>,
    ttl: Duration,
    tolerance_percent: u32,
    max_moves_in_flight: u32,
}

impl ShardConfig {
    /// One namespace of `count` shards, the default TTL, bound and moves in flight.
    ///
    /// # Errors
    ///
    /// As for a [`RawShardConfig`] with that one namespace.
    pub fn new(namespace: &str, count: u32) -> Result<Self, ShardConfigError> {
        Self::try_from(RawShardConfig {
            namespaces: BTreeMap::from([(namespace.into(), count)]),
            ..RawShardConfig::default()
        })
    }

    /// The same, with the shard leases' TTL.
    #[must_use]
    pub fn with_ttl(mut self, ttl: Duration) -> Self {
        self.ttl = ttl;
        self
    }

    /// The same, with at most `max` moves under way at once (at least 1).
    #[must_use]
    pub fn with_max_moves_in_flight(mut self, max: u32) -> Self {
        self.max_moves_in_flight = max.max(1);
        self
    }

    /// Namespaces and their shard counts: shards `0..count` of each.
    pub fn namespaces(&self) -> impl Iterator<Item = (&str, u32)> + '_ {
        self.namespaces.iter().map(|(n, &c)| (n.as_str(), c))
    }

    /// Every configured shard, in shard order.
    pub fn shards(&self) -> impl Iterator<Item = ShardId> + '_ {
        self.namespaces
            .iter()
            .flat_map(|(n, &c)| (0..c).filter_map(move |i| ShardId::new(n, i).ok()))
    }

    /// Whether `shard` is one of the configured shards.
    pub fn contains(&self, shard: &ShardId) -> bool {
        self.namespaces
            .get(shard.namespace())
            .is_some_and(|&c| shard.id() < c)
    }

    /// How many shards in all.
    pub fn shard_count(&self) -> usize {
        self.namespaces.values().map(|&c| c as usize).sum()
    }

    /// The TTL members ask for their shards' leases.
    pub fn ttl(&self) -> Duration {
        self.ttl
    }

    /// The rebalancer's tolerance around the mean, in percent (see
    /// [`Rebalancer`](super::Rebalancer)).
    pub fn tolerance_percent(&self) -> u32 {
        self.tolerance_percent
    }

    /// Moves (transfers or acquisitions) under way at once.
    pub fn max_moves_in_flight(&self) -> u32 {
        self.max_moves_in_flight
    }
}

/// The serde form of [`ShardConfig`], as written in TOML:
///
/// ```toml
/// [shards]
/// namespaces = { orders = 64, tenants = 16 }   # shards 0..64 of `orders`, 0..16 of `tenants`
/// ttl = "3s"                                   # each shard lease's TTL (default 3s)
/// tolerance_percent = 10                       # load bound around the mean (default 10)
/// max_moves_in_flight = 8                      # moves under way at once (default 8)
/// ```
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[expect(
    missing_docs,
    reason = "each field is documented by the ShardConfig getter of the same name"
)]
pub struct RawShardConfig {
    #[serde(default)]
    pub namespaces: BTreeMap<String, u32>,
    pub ttl: Option<HumanDuration>,
    pub tolerance_percent: Option<u32>,
    pub max_moves_in_flight: Option<u32>,
}

/// Why a [`RawShardConfig`] was refused; the message names the key. An operator fault.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum ShardConfigError {
    /// A number or duration out of range.
    #[error("shards.{0}")]
    Range(#[from] ConfigError),
    /// No namespace: a `[shards]` section needs at least one.
    #[error("shards.namespaces is empty: name at least one, e.g. `namespaces = {{ orders = 64 }}`")]
    NoNamespace,
    /// A namespace name that cannot be part of a lease scope.
    #[error("shards.namespaces.{namespace}: {source}")]
    Namespace {
        /// The name as written.
        namespace: String,
        /// Why.
        source: ShardIdError,
    },
    /// A namespace with no shard, or more shards in all than the map holds.
    #[error(
        "shards.namespaces.{namespace} = {count}: allowed 1..={max} (shards of every namespace together)"
    )]
    Count {
        /// The namespace.
        namespace: String,
        /// Its count as written.
        count: u32,
        /// What was still allowed.
        max: usize,
    },
}

impl TryFrom<RawShardConfig> for ShardConfig {
    type Error = ShardConfigError;

    fn try_from(raw: RawShardConfig) -> Result<Self, ShardConfigError> {
        if raw.namespaces.is_empty() {
            return Err(ShardConfigError::NoNamespace);
        }
        let mut total = 0usize;
        for (namespace, &count) in &raw.namespaces {
            ShardId::new(namespace, 0).map_err(|source| ShardConfigError::Namespace {
                namespace: namespace.clone(),
                source,
            })?;
            let max = MAX_SHARDS - total;
            if count == 0 || count as usize > max {
                return Err(ShardConfigError::Count {
                    namespace: namespace.clone(),
                    count,
                    max,
                });
            }
            total += count as usize;
        }
        Ok(Self {
            namespaces: raw.namespaces,
            ttl: check_duration(
                "ttl",
                raw.ttl,
                DEFAULT_SHARD_TTL,
                Duration::from_secs(1),
                Duration::from_secs(3600),
            )?,
            tolerance_percent: check_u32(
                "tolerance_percent",
                raw.tolerance_percent,
                super::DEFAULT_TOLERANCE_PERCENT,
                1,
                MAX_TOLERANCE_PERCENT,
            )?,
            max_moves_in_flight: check_u32(
                "max_moves_in_flight",
                raw.max_moves_in_flight,
                DEFAULT_MAX_MOVES_IN_FLIGHT,
                1,
                4096,
            )?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<ShardConfig, ShardConfigError> {
        ShardConfig::try_from(toml::from_str::<RawShardConfig>(text).unwrap())
    }

    #[test]
    fn defaults_and_shards() {
        let c = parse("namespaces = { orders = 3, a = 1 }").unwrap();
        assert_eq!(c.ttl(), DEFAULT_SHARD_TTL);
        assert_eq!(c.max_moves_in_flight(), DEFAULT_MAX_MOVES_IN_FLIGHT);
        let names: Vec<String> = c.shards().map(|s| s.to_string()).collect();
        assert_eq!(
            names,
            [
                "shard/a/0",
                "shard/orders/0",
                "shard/orders/1",
                "shard/orders/2"
            ]
        );
        assert!(c.contains(&ShardId::new("orders", 2).unwrap()));
        assert!(!c.contains(&ShardId::new("orders", 3).unwrap()));
        let ns: Vec<(&str, u32)> = c.namespaces().collect();
        assert_eq!(ns, [("a", 1), ("orders", 3)]);
        assert_eq!(c.shard_count(), 4);
    }

    /// The builders a host uses in code: a TTL of its own, and at least one move in flight
    /// (zero would stall every plan).
    #[test]
    fn builders_set_the_ttl_and_keep_one_move_in_flight() {
        let c = ShardConfig::new("orders", 8).unwrap();
        assert_eq!(c.shard_count(), 8);
        let c = c
            .with_ttl(Duration::from_secs(7))
            .with_max_moves_in_flight(0);
        assert_eq!(c.ttl(), Duration::from_secs(7));
        assert_eq!(c.max_moves_in_flight(), 1);
        assert_eq!(c.with_max_moves_in_flight(5).max_moves_in_flight(), 5);
    }

    #[test]
    fn errors_name_the_key() {
        let e = |t: &str| parse(t).unwrap_err().to_string();
        assert!(e("").starts_with("shards.namespaces is empty"), "{}", e(""));
        assert!(e("namespaces = { Bad = 1 }").starts_with("shards.namespaces.Bad: "));
        assert!(e("namespaces = { o = 0 }").starts_with("shards.namespaces.o = 0: allowed 1..="));
        assert_eq!(
            e("namespaces = { o = 1 }\nmax_moves_in_flight = 0"),
            "shards.max_moves_in_flight = 0 is out of range: allowed 1..=4096"
        );
        assert!(e("namespaces = { o = 1 }\nttl = \"10ms\"").starts_with("shards.ttl = 10ms"));
        assert!(toml::from_str::<RawShardConfig>("count = 1").is_err());
    }
}
