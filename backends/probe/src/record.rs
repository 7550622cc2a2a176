//! What the agent's parts hand each other: one probe run ([`RunRecord`]) and one change of an
//! alert ([`AlertTransition`]), both keyed by a [`ProbeKey`].
//!
//! The agent's host turns each [`meshkit_runtime::probe_host::ProbeNotice`] into these records
//! and fans them out: the metrics count them, the history stores them, the alert engine turns
//! state changes into alerts, the reports read them back from the history. Times are wall-clock
//! milliseconds since the Unix epoch: they leave the process (SQLite rows, Alertmanager's
//! `startsAt`), unlike the core's virtual [`meshkit::Instant`].

use meshkit::Duration;
use meshkit::diag::probe::ProbeResult;
use meshkit_api::alpn::HttpProtocol;

/// Which probe: the group it belongs to (with the group's cluster and namespace) and its name,
/// unique within the agent's configuration. The same key on every agent of a fleet, so
/// Alertmanager deduplicates their alerts (no agent name in it).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ProbeKey {
    /// The cluster the group checks (`cluster` label).
    pub cluster: String,
    /// The namespace the group checks (`namespace` label).
    pub namespace: String,
    /// The configured group (`group` label).
    pub group: String,
    /// The probe's name (`probe` label), such as `api-peers@10.0.0.1:7443`.
    pub probe: String,
}

/// One finished run of one probe.
#[derive(Clone, Debug, PartialEq)]
pub struct RunRecord {
    /// Which probe.
    pub key: ProbeKey,
    /// The probe type: `api`, `authz`, `watch`, `transport`.
    pub kind: String,
    /// The node it ran against (`host:port`).
    pub target: String,
    /// When the run ended, in ms since the Unix epoch.
    pub at_unix_ms: i64,
    /// How it ended (pass, slow, fail, timeout), as the core's scheduler judged it.
    pub result: ProbeResult,
    /// How long it took (the timeout for a timeout).
    pub latency: Duration,
    /// The HTTP version the request really used, when one answered.
    pub http_version: Option<HttpProtocol>,
    /// Why it failed, in the probe's words.
    pub error: Option<String>,
}

/// Whether an alert is firing or resolved.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum AlertState {
    /// The probe failed `failure_threshold` times in a row (or was slow past its latency
    /// threshold, where the group alerts on latency).
    Firing,
    /// `success_threshold` passes in a row after firing.
    Resolved,
}

impl AlertState {
    /// Its name in payloads and the history.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Firing => "firing",
            Self::Resolved => "resolved",
        }
    }
}

/// Which alert of a probe: its `alertname` label. A probe has at most one alert at a time; a
/// Failing probe that turns Degraded in a group with `alert_on_latency` resolves the one and
/// fires the other.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum AlertName {
    /// `MeshKitProbeFailing`: the probe is Failing (`failure_threshold` failures in a row).
    Failing,
    /// `MeshKitProbeSlow`: the probe is Degraded (passing slower than its latency threshold) in
    /// a group with `alert_on_latency`.
    Slow,
}

impl AlertName {
    /// The `alertname` label (also the runbook's section: `docs/runbooks.md#<lowercase>`).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Failing => "MeshKitProbeFailing",
            Self::Slow => "MeshKitProbeSlow",
        }
    }
}

/// One change of an alert, as the alert engine decided it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AlertTransition {
    /// Which probe.
    pub key: ProbeKey,
    /// Which of its alerts.
    pub alert: AlertName,
    /// The probe type.
    pub kind: String,
    /// The node it ran against.
    pub target: String,
    /// Firing or resolved.
    pub state: AlertState,
    /// When, in ms since the Unix epoch.
    pub at_unix_ms: i64,
    /// A maintenance window covered it: recorded, not sent.
    pub muted: bool,
    /// Why, in words (the last failure's message, or "2 passes in a row").
    pub reason: String,
}

/// Now, in ms since the Unix epoch (0 before it: a clock that wrong is not worth a panic).
pub fn now_unix_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

/// A probe's state changed (the core scheduler's rules: `failure_threshold` failures in a row
/// make it Failing, slow passes Degraded, `success_threshold` passes Healthy again): the alert
/// engine's input.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StateChange {
    /// Which probe.
    pub key: ProbeKey,
    /// The probe type.
    pub kind: String,
    /// The node it ran against.
    pub target: String,
    /// The state before.
    pub from: meshkit::diag::probe::ProbeState,
    /// The state now.
    pub to: meshkit::diag::probe::ProbeState,
    /// When, in ms since the Unix epoch.
    pub at_unix_ms: i64,
    /// The last failure's message, if the change came from a failure.
    pub last_error: Option<String>,
    /// Whether the probe's group alerts on Degraded (latency breaches) as well as on Failing.
    pub alert_on_latency: bool,
}
