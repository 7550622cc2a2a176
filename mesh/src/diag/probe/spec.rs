//! A probe's description: the validated [`ProbeSpec`] and its serde form [`RawProbeSpec`].

use alloc::collections::BTreeMap;
use alloc::string::String;

use serde::{Deserialize, Serialize};
use thiserror::Error;

use crate::config::{ConfigError, HumanDuration, check_duration, check_u32};
use crate::time::Duration;

/// The interval when `interval` is absent.
pub const DEFAULT_INTERVAL: Duration = Duration::from_secs(10);
/// The timeout when `timeout` is absent.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(1);
/// Consecutive failures that make a probe Failing, when `failure_threshold` is absent.
pub const DEFAULT_FAILURE_THRESHOLD: u32 = 3;
/// Consecutive successes that bring a Failing probe back, when `success_threshold` is absent.
pub const DEFAULT_SUCCESS_THRESHOLD: u32 = 2;
/// Results kept per probe when `history` is absent.
pub const DEFAULT_HISTORY: u32 = 32;
/// Jitter added to each interval, in percent of it, when `jitter_percent` is absent.
pub const DEFAULT_JITTER_PERCENT: u32 = 10;

/// The shortest interval: below it a probe costs more than it tells.
pub const MIN_INTERVAL: Duration = Duration::from_millis(10);
/// The longest interval.
pub const MAX_INTERVAL: Duration = Duration::from_secs(3600);
/// The shortest timeout.
pub const MIN_TIMEOUT: Duration = Duration::from_millis(1);
/// The largest threshold: a state that needs more results than this to change is never acted on.
pub const MAX_THRESHOLD: u32 = 100;
/// The most results kept per probe: bounds memory at 1,000 probes to a few MB.
pub const MAX_HISTORY: u32 = 1024;
/// The most jitter, in percent of the interval.
pub const MAX_JITTER_PERCENT: u32 = 50;
/// The longest probe name, cluster, namespace, label key or label value, in bytes.
pub const MAX_TAG_BYTES: usize = 64;
/// The most free labels per probe: the labels become metric labels, whose sets must stay bounded.
pub const MAX_LABELS: usize = 8;

/// What a probe is, where it belongs, how often it runs and when its state changes. Build it with
/// [`ProbeSpec::new`] and the `with_*` methods, or from a [`RawProbeSpec`]; every value is
/// checked when it is built.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProbeSpec {
    name: String,
    tags: ProbeTags,
    interval: Duration,
    timeout: Duration,
    failure_threshold: u32,
    success_threshold: u32,
    degraded_latency: Option<Duration>,
    history: u32,
    jitter_percent: u32,
}

/// A probe's tags: the cluster and namespace it checks, and free labels (filters of
/// `GET /control/probes` and labels of its metrics).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProbeTags {
    /// The cluster the probe checks, if it names one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cluster: Option<String>,
    /// The namespace the probe checks, if it names one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    /// Free labels, at most [`MAX_LABELS`].
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
}

impl ProbeSpec {
    /// A probe named `name` with every default: no tags, every 10 s, 1 s timeout, Failing after
    /// 3 consecutive failures, back after 2 consecutive successes, no latency threshold, 32
    /// results kept, 10% jitter.
    ///
    /// # Errors
    ///
    /// [`ProbeSpecError::Name`] for an empty or over-long name, or a character outside
    /// `a-z 0-9 . _ -`.
    pub fn new(name: &str) -> Result<Self, ProbeSpecError> {
        Self::try_from(RawProbeSpec {
            name: name.into(),
            ..RawProbeSpec::default()
        })
    }

    /// The same with other timing; `timeout` must not exceed `interval`, so one run always ends
    /// before the next is due.
    ///
    /// # Errors
    ///
    /// As for a [`RawProbeSpec`] with these values ([`ProbeSpecError::Range`] naming the
    /// field).
    pub fn with_timing(
        self,
        interval: Duration,
        timeout: Duration,
    ) -> Result<Self, ProbeSpecError> {
        let mut raw = RawProbeSpec::from(self);
        raw.interval = Some(HumanDuration(interval));
        raw.timeout = Some(HumanDuration(timeout));
        Self::try_from(raw)
    }

    /// The same with other thresholds.
    ///
    /// # Errors
    ///
    /// [`ProbeSpecError::Range`] naming the threshold out of `1..=100`.
    pub fn with_thresholds(self, failure: u32, success: u32) -> Result<Self, ProbeSpecError> {
        let mut raw = RawProbeSpec::from(self);
        raw.failure_threshold = Some(failure);
        raw.success_threshold = Some(success);
        Self::try_from(raw)
    }

    /// The same with a latency threshold: a passing result slower than `latency` counts toward
    /// Degraded (see the [module documentation](super)).
    ///
    /// # Errors
    ///
    /// [`ProbeSpecError::Range`] if `latency` is not below the timeout.
    pub fn with_degraded_latency(self, latency: Duration) -> Result<Self, ProbeSpecError> {
        let mut raw = RawProbeSpec::from(self);
        raw.degraded_latency = Some(HumanDuration(latency));
        Self::try_from(raw)
    }

    /// The same with `history` results kept and `jitter_percent` of jitter.
    ///
    /// # Errors
    ///
    /// [`ProbeSpecError::Range`] naming the value out of range.
    pub fn with_history(self, history: u32, jitter_percent: u32) -> Result<Self, ProbeSpecError> {
        let mut raw = RawProbeSpec::from(self);
        raw.history = Some(history);
        raw.jitter_percent = Some(jitter_percent);
        Self::try_from(raw)
    }

    /// The same with these tags.
    ///
    /// # Errors
    ///
    /// [`ProbeSpecError::Tag`] or [`ProbeSpecError::TooManyLabels`].
    pub fn with_tags(self, tags: ProbeTags) -> Result<Self, ProbeSpecError> {
        let mut raw = RawProbeSpec::from(self);
        raw.tags = tags;
        Self::try_from(raw)
    }

    /// The probe's name, unique on its node.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Its tags.
    pub fn tags(&self) -> &ProbeTags {
        &self.tags
    }

    /// Time from one run's start to the next's, before jitter (default 10 s, 10 ms..=1 h).
    pub fn interval(&self) -> Duration {
        self.interval
    }

    /// How long a run may take; an unfinished run fails at its deadline (default 1 s, at least
    /// 1 ms, at most the interval).
    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    /// Consecutive failures that make the probe Failing (default 3, 1..=100). Higher rides out
    /// more transient failures and detects a real one later: within
    /// `interval x failure_threshold + timeout` (plus jitter).
    pub fn failure_threshold(&self) -> u32 {
        self.failure_threshold
    }

    /// Consecutive successes that bring a Failing probe back (default 2, 1..=100).
    pub fn success_threshold(&self) -> u32 {
        self.success_threshold
    }

    /// A passing result slower than this counts as slow (toward Degraded); none by default.
    pub fn degraded_latency(&self) -> Option<Duration> {
        self.degraded_latency
    }

    /// Results kept for the history and the latency percentiles (default 32, 1..=1024).
    pub fn history(&self) -> u32 {
        self.history
    }

    /// Each run is due `interval + j` after the previous start, with `j` uniform in
    /// `0..=interval x jitter_percent / 100` (default 10, 0..=50), drawn from the node's seeded
    /// RNG: probes registered together do not stay in lockstep, and a seed replays the same
    /// schedule.
    pub fn jitter_percent(&self) -> u32 {
        self.jitter_percent
    }

    /// The largest jitter of one interval.
    pub(crate) fn max_jitter(&self) -> Duration {
        self.interval * self.jitter_percent / 100
    }
}

/// The serde form of [`ProbeSpec`], as written in TOML or JSON:
///
/// ```toml
/// name = "orders-db"                 # a-z 0-9 . _ -, 1..=64 bytes, unique on the node
/// interval = "10s"                   # default 10s, 10ms..=1h
/// timeout = "1s"                     # default 1s, 1ms..=interval
/// failure_threshold = 3              # default 3, 1..=100
/// success_threshold = 2              # default 2, 1..=100
/// degraded_latency = "250ms"         # optional, below timeout
/// history = 32                       # default 32, 1..=1024
/// jitter_percent = 10                # default 10, 0..=50
/// [tags]
/// cluster = "eu-1"
/// namespace = "orders"
/// labels = { tier = "db" }           # at most 8
/// ```
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[expect(
    missing_docs,
    reason = "each field is documented by the ProbeSpec getter of the same name"
)]
pub struct RawProbeSpec {
    pub name: String,
    #[serde(default)]
    pub tags: ProbeTags,
    pub interval: Option<HumanDuration>,
    pub timeout: Option<HumanDuration>,
    pub failure_threshold: Option<u32>,
    pub success_threshold: Option<u32>,
    pub degraded_latency: Option<HumanDuration>,
    pub history: Option<u32>,
    pub jitter_percent: Option<u32>,
}

impl From<ProbeSpec> for RawProbeSpec {
    fn from(spec: ProbeSpec) -> Self {
        Self {
            name: spec.name,
            tags: spec.tags,
            interval: Some(HumanDuration(spec.interval)),
            timeout: Some(HumanDuration(spec.timeout)),
            failure_threshold: Some(spec.failure_threshold),
            success_threshold: Some(spec.success_threshold),
            degraded_latency: spec.degraded_latency.map(HumanDuration),
            history: Some(spec.history),
            jitter_percent: Some(spec.jitter_percent),
        }
    }
}

/// Why a [`RawProbeSpec`] was refused; the message names the field. Nothing was built or
/// registered. Always the caller's fault (the service or operator that described the probe).
#[derive(Debug, Error, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum ProbeSpecError {
    /// A number or duration out of its range, or two fields that do not relate as they must.
    #[error("probe.{0}")]
    Range(#[from] ConfigError),
    /// A name that is empty, too long or has a character outside `a-z 0-9 . _ -`.
    #[error("probe.name {name:?}: {reason}")]
    Name {
        /// The name as given.
        name: String,
        /// What is wrong with it.
        reason: TagError,
    },
    /// A tag (cluster, namespace, label key or value) that is empty, too long or has a control
    /// character.
    #[error("probe.tags.{field} {value:?}: {reason}")]
    Tag {
        /// `cluster`, `namespace` or `labels.<key>`.
        field: String,
        /// The value as given.
        value: String,
        /// What is wrong with it.
        reason: TagError,
    },
    /// More labels than [`MAX_LABELS`].
    #[error("probe.tags.labels has {count} labels: at most {max}")]
    TooManyLabels {
        /// Labels given.
        count: usize,
        /// [`MAX_LABELS`].
        max: usize,
    },
}

/// What is wrong with a name or tag.
#[derive(Debug, Error, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum TagError {
    /// Nothing given.
    #[error("empty")]
    Empty,
    /// Longer than [`MAX_TAG_BYTES`].
    #[error("longer than {MAX_TAG_BYTES} bytes")]
    TooLong,
    /// A character outside what the field allows.
    #[error("only a-z, 0-9, '.', '_' and '-' are allowed")]
    Character,
}

/// Names and tag values: 1..=64 bytes of `a-z 0-9 . _ -`; they become metric label values and
/// URL query filters, so nothing needs escaping anywhere.
fn check_tag(value: &str) -> Result<(), TagError> {
    if value.is_empty() {
        return Err(TagError::Empty);
    }
    if value.len() > MAX_TAG_BYTES {
        return Err(TagError::TooLong);
    }
    if !value
        .bytes()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'.' | b'_' | b'-'))
    {
        return Err(TagError::Character);
    }
    Ok(())
}

impl TryFrom<RawProbeSpec> for ProbeSpec {
    type Error = ProbeSpecError;

    fn try_from(raw: RawProbeSpec) -> Result<Self, ProbeSpecError> {
        check_tag(&raw.name).map_err(|reason| ProbeSpecError::Name {
            name: raw.name.clone(),
            reason,
        })?;
        let tag_error = |field: &str, value: &str, reason| ProbeSpecError::Tag {
            field: field.into(),
            value: value.into(),
            reason,
        };
        for (field, value) in [
            ("cluster", &raw.tags.cluster),
            ("namespace", &raw.tags.namespace),
        ] {
            if let Some(value) = value {
                check_tag(value).map_err(|reason| tag_error(field, value, reason))?;
            }
        }
        if raw.tags.labels.len() > MAX_LABELS {
            return Err(ProbeSpecError::TooManyLabels {
                count: raw.tags.labels.len(),
                max: MAX_LABELS,
            });
        }
        for (key, value) in &raw.tags.labels {
            check_tag(key).map_err(|reason| tag_error("labels", key, reason))?;
            check_tag(value)
                .map_err(|reason| tag_error(&alloc::format!("labels.{key}"), value, reason))?;
        }
        let interval = check_duration(
            "interval",
            raw.interval,
            DEFAULT_INTERVAL,
            MIN_INTERVAL,
            MAX_INTERVAL,
        )?;
        let timeout = check_duration(
            "timeout",
            raw.timeout,
            DEFAULT_TIMEOUT.min(interval),
            MIN_TIMEOUT,
            interval,
        )?;
        let degraded_latency = match raw.degraded_latency {
            None => None,
            Some(latency) if latency.0 < timeout => Some(latency.0),
            Some(_) => {
                return Err(ConfigError::Relation {
                    field: "degraded_latency",
                    relation: "less than",
                    other: "timeout",
                }
                .into());
            }
        };
        Ok(Self {
            name: raw.name,
            tags: raw.tags,
            interval,
            timeout,
            failure_threshold: check_u32(
                "failure_threshold",
                raw.failure_threshold,
                DEFAULT_FAILURE_THRESHOLD,
                1,
                MAX_THRESHOLD,
            )?,
            success_threshold: check_u32(
                "success_threshold",
                raw.success_threshold,
                DEFAULT_SUCCESS_THRESHOLD,
                1,
                MAX_THRESHOLD,
            )?,
            degraded_latency,
            history: check_u32("history", raw.history, DEFAULT_HISTORY, 1, MAX_HISTORY)?,
            jitter_percent: check_u32(
                "jitter_percent",
                raw.jitter_percent,
                DEFAULT_JITTER_PERCENT,
                0,
                MAX_JITTER_PERCENT,
            )?,
        })
    }
}

impl Serialize for ProbeSpec {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        RawProbeSpec::from(self.clone()).serialize(s)
    }
}

impl<'de> Deserialize<'de> for ProbeSpec {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Self::try_from(RawProbeSpec::deserialize(d)?).map_err(serde::de::Error::custom)
    }
}
