//! The body of `GET /control/probes` ([`ProbesResponse`]) and its tag filter ([`TagFilter`]):
//! the one payload shape every host answers with, built by the node's probe host and parsed by
//! `meshctl probes list`.
//!
//! Times are relative (`*_ms` ago or from now), because a node's clock is its own: its
//! instants mean nothing to a caller on another host.

use serde::{Deserialize, Serialize};
use thiserror::Error;

/// The most results a probe shows in [`ProbeJson::results`], newest first: the scheduler keeps
/// up to its spec's `history` (at most 1,024), which is too much for one listing of 1,000
/// probes.
pub const MAX_RESULTS_SHOWN: usize = 16;

/// The most `tag` filters one request may carry.
pub const MAX_TAG_FILTERS: usize = 8;

/// `GET /control/probes`: every probe of one node that matches the filter, in registration
/// order.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ProbesResponse {
    /// The node that answered.
    pub node: u64,
    /// Its probes.
    pub probes: Vec<ProbeJson>,
}

/// One probe as its node sees it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ProbeJson {
    /// Its name, unique on the node.
    pub name: String,
    /// Its type (`Probe::kind`): `quorum`, `http`, or a service's own.
    pub kind: String,
    /// Its tags.
    pub tags: meshkit::diag::probe::ProbeTags,
    /// `unknown`, `healthy`, `degraded` or `failing`.
    pub state: String,
    /// Failures (fail or timeout) in a row, up to the latest result.
    pub consecutive_failures: u32,
    /// Passes (pass or slow) in a row, up to the latest result.
    pub consecutive_successes: u32,
    /// Milliseconds until the next run is due (0 when it is due now).
    pub next_due_ms: u64,
    /// Whether a run is in flight.
    pub running: bool,
    /// The spec's interval, in milliseconds.
    pub interval_ms: u64,
    /// The spec's timeout, in milliseconds.
    pub timeout_ms: u64,
    /// The spec's failure threshold.
    pub failure_threshold: u32,
    /// The spec's success threshold.
    pub success_threshold: u32,
    /// Median latency of the kept results, in milliseconds (none before the first result).
    pub latency_p50_ms: Option<f64>,
    /// 99th percentile latency of the kept results, in milliseconds.
    pub latency_p99_ms: Option<f64>,
    /// Results of each kind since the probe was registered.
    pub counts: ProbeCounts,
    /// The last failure's message, as the probe gave it (none after a pass, or for a timeout).
    pub last_error: Option<String>,
    /// The last results, newest first, at most [`MAX_RESULTS_SHOWN`].
    pub results: Vec<ProbeResultJson>,
}

/// Results of each kind since registration.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProbeCounts {
    /// Passed within the latency threshold.
    pub pass: u64,
    /// Passed, slower than the latency threshold.
    pub slow: u64,
    /// Failed.
    pub fail: u64,
    /// No answer before the timeout.
    pub timeout: u64,
}

/// One kept result.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ProbeResultJson {
    /// `pass`, `slow`, `fail` or `timeout`.
    pub result: String,
    /// How long ago the run started, in milliseconds.
    pub started_ms_ago: u64,
    /// How long it took, in milliseconds (the timeout for a timeout).
    pub latency_ms: f64,
}

/// One `tag` filter of `GET /control/probes?tag=key=value`: `cluster`, `namespace` or a free
/// label's key, which must equal `value`. Several filters must all match.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TagFilter {
    /// `cluster`, `namespace`, or a label key.
    pub key: String,
    /// The value it must have.
    pub value: String,
}

/// Why a `tag` filter was refused: the caller's fault; nothing was read.
#[derive(Clone, Debug, Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum TagFilterError {
    /// Not `key=value` with both sides non-empty.
    #[error("query parameter `tag` = {0:?}: expected key=value, such as tag=cluster=eu-1")]
    Form(String),
    /// More than [`MAX_TAG_FILTERS`] filters.
    #[error("query parameter `tag` given {0} times: at most {MAX_TAG_FILTERS}")]
    TooMany(usize),
}

impl TagFilter {
    /// Parses `key=value`.
    ///
    /// # Errors
    ///
    /// [`TagFilterError::Form`] when either side is empty or there is no `=`.
    pub fn parse(text: &str) -> Result<Self, TagFilterError> {
        match text.split_once('=') {
            Some((key, value)) if !key.is_empty() && !value.is_empty() => Ok(Self {
                key: key.to_owned(),
                value: value.to_owned(),
            }),
            _ => Err(TagFilterError::Form(text.chars().take(128).collect())),
        }
    }

    /// Parses every `tag` parameter of a query string (other parameters are the caller's).
    ///
    /// # Errors
    ///
    /// As [`TagFilter::parse`], or [`TagFilterError::TooMany`].
    pub fn from_query(query: &str) -> Result<Vec<Self>, TagFilterError> {
        let filters: Vec<&str> = query
            .split('&')
            .filter_map(|pair| pair.strip_prefix("tag="))
            .collect();
        if filters.len() > MAX_TAG_FILTERS {
            return Err(TagFilterError::TooMany(filters.len()));
        }
        filters
            .into_iter()
            .map(|f| Self::parse(&percent_decode(f)))
            .collect()
    }

    /// Whether `tags` has this key with this value.
    pub fn matches(&self, tags: &meshkit::diag::probe::ProbeTags) -> bool {
        let value = match self.key.as_str() {
            "cluster" => tags.cluster.as_deref(),
            "namespace" => tags.namespace.as_deref(),
            key => tags.labels.get(key).map(String::as_str),
        };
        value == Some(self.value.as_str())
    }
}

/// `%3D` and friends: a client may escape the inner `=` of `tag=cluster%3Deu`. Tag values are
/// `a-z 0-9 . _ -` only, so anything that does not decode to ASCII is left as written (and
/// matches nothing).
fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = |b: u8| char::from(b).to_digit(16);
        if bytes[i] == b'%'
            && let (Some(h), Some(l)) = (
                bytes.get(i + 1).copied().and_then(hex),
                bytes.get(i + 2).copied().and_then(hex),
            )
        {
            // Two hex digits: at most 0xff.
            out.push(u8::try_from(h * 16 + l).unwrap_or(b'?'));
            i += 3;
        } else {
            out.push(if bytes[i] == b'+' { b' ' } else { bytes[i] });
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;
    use meshkit::diag::probe::ProbeTags;

    #[test]
    fn tag_filters_parse_and_match() {
        let filters = TagFilter::from_query("tag=cluster=eu&x=1&tag=tier%3Ddb").unwrap();
        assert_eq!(filters.len(), 2);
        let mut tags = ProbeTags {
            cluster: Some("eu".into()),
            ..ProbeTags::default()
        };
        assert!(filters[0].matches(&tags));
        assert!(!filters[1].matches(&tags));
        tags.labels.insert("tier".into(), "db".into());
        assert!(filters[1].matches(&tags));
        assert!(!TagFilter::parse("cluster=us").unwrap().matches(&tags));
        for bad in ["cluster", "=eu", "cluster="] {
            assert!(
                matches!(TagFilter::parse(bad), Err(TagFilterError::Form(_))),
                "{bad}"
            );
        }
        let many = ["tag=a=b"; MAX_TAG_FILTERS + 1].join("&");
        assert_eq!(
            TagFilter::from_query(&many),
            Err(TagFilterError::TooMany(MAX_TAG_FILTERS + 1))
        );
    }
}
