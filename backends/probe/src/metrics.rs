//! The agent's `/metrics`: blackbox_exporter-compatible names (`probe_success`,
//! `probe_duration_seconds`, `probe_http_version`, `probe_ssl_earliest_cert_expiry`) beside
//! `mesh_probe_*` with bounded cluster/namespace/probe labels.
//!
//! # Families
//!
//! Per probe, labels `cluster`, `namespace`, `group`, `probe`, `kind`, `target`:
//!
//! | family | type | value |
//! | --- | --- | --- |
//! | `probe_success` | gauge | 1 if the last run passed (slow included), else 0 |
//! | `probe_duration_seconds` | gauge | the last run's duration (the timeout for a timeout) |
//! | `probe_http_version` | gauge | HTTP version of the last run's answer: 3, 2, 1.1; 0 without one |
//! | `probe_ssl_earliest_cert_expiry` | gauge | the node's certificate expiry, Unix seconds (transport probes) |
//! | `mesh_probe_results_total` | counter | runs by `result` (pass, slow, fail, timeout) |
//! | `mesh_probe_duration_seconds` | histogram | every run's duration |
//! | `mesh_probe_state` | gauge | 1 for the probe's state (`state` = unknown, healthy, degraded, failing) |
//! | `mesh_probe_state_changes_total` | counter | state changes by the state entered (`to`) |
//! | `mesh_probe_alert_latency_threshold_seconds` | gauge | the group's `latency_threshold`, only where the group has `alert_on_latency` (a Degraded probe there alerts `MeshKitProbeSlow`) |
//!
//! The agent's own, label `agent`: `meshkit_probe_config_last_reload_successful` (1 or 0),
//! `meshkit_probe_config_last_reload_success_timestamp_seconds`, `meshkit_probe_probes`
//! (probes running), `meshkit_probe_notices_dropped_total` (results the fan-out missed), and
//! `meshkit_probe_sink_total{sink, outcome}` (what the history and the notifier did with the
//! records: written, dropped, failed, sent).
//!
//! # Bounds
//!
//! Label values come from the configuration, never from a peer: at most
//! [`crate::config::MAX_PROBES`] probes, four results and four states each. A probe removed by
//! a reload has its series removed ([`Metrics::remove`]).

use std::sync::atomic::AtomicU64;
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use meshkit::diag::probe::{ProbeResult, ProbeState};
use meshkit_api::alpn::HttpProtocol;
use meshkit_runtime::probe_host::DURATION_BOUNDS;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

use crate::record::{ProbeKey, RunRecord};

/// The `Content-Type` of [`Metrics::render`].
pub const CONTENT_TYPE: &str = prometheus_client::encoding::prometheus_text::CONTENT_TYPE;

/// A label set.
type Labels = Vec<(&'static str, String)>;
type FloatGauge = Gauge<f64, AtomicU64>;

const RESULTS: [ProbeResult; 4] = [
    ProbeResult::Pass,
    ProbeResult::Slow,
    ProbeResult::Fail,
    ProbeResult::Timeout,
];
const STATES: [ProbeState; 4] = [
    ProbeState::Unknown,
    ProbeState::Healthy,
    ProbeState::Degraded,
    ProbeState::Failing,
];

fn histogram() -> Histogram {
    Histogram::new(DURATION_BOUNDS.iter().map(|d| d.as_secs_f64()))
}

/// Every family of the agent, registered once.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    agent: Labels,
    success: Family<Labels, Gauge>,
    duration: Family<Labels, FloatGauge>,
    http_version: Family<Labels, FloatGauge>,
    cert_expiry: Family<Labels, Gauge>,
    results: Family<Labels, Counter>,
    durations: Family<Labels, Histogram, fn() -> Histogram>,
    state: Family<Labels, Gauge>,
    changes: Family<Labels, Counter>,
    alert_latency: Family<Labels, FloatGauge>,
    reload_ok: Family<Labels, Gauge>,
    reload_at: Family<Labels, FloatGauge>,
    probes: Family<Labels, Gauge>,
    notices_dropped: Family<Labels, Counter>,
    sinks: Family<Labels, Gauge>,
    /// Serializes rendering (the registry encodes under read locks; one scrape at a time keeps
    /// a scrape's cost bounded).
    render: Mutex<()>,
}

/// A probe's labels.
pub fn labels(key: &ProbeKey, kind: &str, target: &str) -> Vec<(&'static str, String)> {
    vec![
        ("cluster", key.cluster.clone()),
        ("namespace", key.namespace.clone()),
        ("group", key.group.clone()),
        ("probe", key.probe.clone()),
        ("kind", kind.to_owned()),
        ("target", target.to_owned()),
    ]
}

fn with(labels: &Labels, name: &'static str, value: &str) -> Labels {
    let mut l = labels.clone();
    l.push((name, value.to_owned()));
    l
}

/// The number blackbox_exporter gives an HTTP version.
pub fn http_version_number(protocol: Option<HttpProtocol>) -> f64 {
    match protocol {
        Some(HttpProtocol::H3) => 3.0,
        Some(HttpProtocol::H2) => 2.0,
        Some(HttpProtocol::Http11) => 1.1,
        None => 0.0,
    }
}

impl Metrics {
    /// The families of agent `agent`, empty.
    pub fn new(agent: &str) -> Self {
        let mut registry = Registry::default();
        let success = Family::<Labels, Gauge>::default();
        let duration = Family::<Labels, FloatGauge>::default();
        let http_version = Family::<Labels, FloatGauge>::default();
        let cert_expiry = Family::<Labels, Gauge>::default();
        let results = Family::<Labels, Counter>::default();
        let durations = Family::<Labels, Histogram, fn() -> Histogram>::new_with_constructor(
            histogram as fn() -> Histogram,
        );
        let state = Family::<Labels, Gauge>::default();
        let changes = Family::<Labels, Counter>::default();
        let alert_latency = Family::<Labels, FloatGauge>::default();
        let reload_ok = Family::<Labels, Gauge>::default();
        let reload_at = Family::<Labels, FloatGauge>::default();
        let probes = Family::<Labels, Gauge>::default();
        let notices_dropped = Family::<Labels, Counter>::default();
        let sinks = Family::<Labels, Gauge>::default();
        registry.register(
            "probe_success",
            "Whether the probe's last run passed (1) or failed (0)",
            success.clone(),
        );
        registry.register(
            "probe_duration_seconds",
            "How long the probe's last run took, in seconds",
            duration.clone(),
        );
        registry.register(
            "probe_http_version",
            "The HTTP version of the last run's answer (3, 2, 1.1; 0 without an answer)",
            http_version.clone(),
        );
        registry.register(
            "probe_ssl_earliest_cert_expiry",
            "The probed node's certificate expiry, in Unix seconds",
            cert_expiry.clone(),
        );
        registry.register(
            "mesh_probe_results",
            "Probe runs by result: pass, slow, fail, timeout",
            results.clone(),
        );
        registry.register(
            "mesh_probe_duration_seconds",
            "Probe run durations, in seconds",
            durations.clone(),
        );
        registry.register(
            "mesh_probe_state",
            "1 for the probe's state: unknown, healthy, degraded, failing",
            state.clone(),
        );
        registry.register(
            "mesh_probe_state_changes",
            "Probe state changes by the state entered",
            changes.clone(),
        );
        registry.register(
            "mesh_probe_alert_latency_threshold_seconds",
            "The latency above which the probe's Degraded state alerts (its group's \
             latency_threshold, where the group has alert_on_latency), in seconds",
            alert_latency.clone(),
        );
        registry.register(
            "meshkit_probe_config_last_reload_successful",
            "Whether the last configuration (re)load was applied (1) or refused (0)",
            reload_ok.clone(),
        );
        registry.register(
            "meshkit_probe_config_last_reload_success_timestamp_seconds",
            "When a configuration was last applied, in Unix seconds",
            reload_at.clone(),
        );
        registry.register(
            "meshkit_probe_probes",
            "Probes this agent runs",
            probes.clone(),
        );
        registry.register(
            "meshkit_probe_notices_dropped",
            "Run results and state changes the agent's fan-out missed (its queue was full)",
            notices_dropped.clone(),
        );
        registry.register(
            "meshkit_probe_sink",
            "Records handled by the history and the notifier, by sink and outcome",
            sinks.clone(),
        );
        Self {
            registry,
            agent: vec![("agent", agent.to_owned())],
            success,
            duration,
            http_version,
            cert_expiry,
            results,
            durations,
            state,
            changes,
            alert_latency,
            reload_ok,
            reload_at,
            probes,
            notices_dropped,
            sinks,
            render: Mutex::new(()),
        }
    }

    /// Counts one finished run.
    pub fn run(&self, record: &RunRecord, cert_expiry_unix_s: Option<i64>) {
        let l = labels(&record.key, &record.kind, &record.target);
        let passed = matches!(record.result, ProbeResult::Pass | ProbeResult::Slow);
        self.success.get_or_create(&l).set(i64::from(passed));
        let seconds = record.latency.as_secs_f64();
        self.duration.get_or_create(&l).set(seconds);
        self.http_version
            .get_or_create(&l)
            .set(http_version_number(record.http_version));
        if let Some(expiry) = cert_expiry_unix_s {
            self.cert_expiry.get_or_create(&l).set(expiry);
        }
        self.results
            .get_or_create(&with(&l, "result", record.result.as_str()))
            .inc();
        self.durations.get_or_create(&l).observe(seconds);
    }

    /// Shows `state` as the probe's state.
    pub fn state(&self, key: &ProbeKey, kind: &str, target: &str, state: ProbeState) {
        let l = labels(key, kind, target);
        for s in STATES {
            self.state
                .get_or_create(&with(&l, "state", s.as_str()))
                .set(i64::from(s == state));
        }
    }

    /// Counts a change into `to` (and shows it as the state).
    pub fn state_change(&self, key: &ProbeKey, kind: &str, target: &str, to: ProbeState) {
        let l = labels(key, kind, target);
        self.changes
            .get_or_create(&with(&l, "to", to.as_str()))
            .inc();
        self.state(key, kind, target, to);
    }

    /// Shows the latency threshold a Degraded state of the probe alerts on (`Some` where its
    /// group has `alert_on_latency` and a `latency_threshold`), or none: Prometheus's
    /// `MeshKitProbeSlow` rule reads it to alert exactly where the agent's own push does.
    pub fn alert_latency(
        &self,
        key: &ProbeKey,
        kind: &str,
        target: &str,
        threshold: Option<Duration>,
    ) {
        let l = labels(key, kind, target);
        match threshold {
            Some(t) => {
                self.alert_latency.get_or_create(&l).set(t.as_secs_f64());
            }
            None => {
                self.alert_latency.remove(&l);
            }
        }
    }

    /// Removes every series of a probe no longer run.
    pub fn remove(&self, key: &ProbeKey, kind: &str, target: &str) {
        let l = labels(key, kind, target);
        self.success.remove(&l);
        self.duration.remove(&l);
        self.http_version.remove(&l);
        self.cert_expiry.remove(&l);
        self.durations.remove(&l);
        self.alert_latency.remove(&l);
        for r in RESULTS {
            self.results.remove(&with(&l, "result", r.as_str()));
        }
        for s in STATES {
            self.state.remove(&with(&l, "state", s.as_str()));
            self.changes.remove(&with(&l, "to", s.as_str()));
        }
    }

    /// A configuration was applied (`true`, at `unix_s`) or refused.
    pub fn reload(&self, applied: bool, unix_s: f64) {
        self.reload_ok
            .get_or_create(&self.agent)
            .set(i64::from(applied));
        if applied {
            self.reload_at.get_or_create(&self.agent).set(unix_s);
        }
    }

    /// Whether the last (re)load was applied, as `/metrics` shows it.
    pub fn last_reload_successful(&self) -> bool {
        self.reload_ok.get_or_create(&self.agent).get() == 1
    }

    /// The number of probes running.
    pub fn set_probes(&self, n: usize) {
        self.probes
            .get_or_create(&self.agent)
            .set(i64::try_from(n).unwrap_or(i64::MAX));
    }

    /// The host's count of notices the fan-out's queue refused, since the host started.
    pub fn set_notices_dropped(&self, total: u64) {
        let counter = self.notices_dropped.get_or_create(&self.agent);
        let now = counter.get();
        if total > now {
            counter.inc_by(total - now);
        }
    }

    /// What `sink` (history, notifier) did: `outcome` (written, dropped, failed, sent) so far.
    pub fn set_sink(&self, sink: &str, outcome: &str, total: u64) {
        let l = with(&with(&self.agent, "sink", sink), "outcome", outcome);
        self.sinks
            .get_or_create(&l)
            .set(i64::try_from(total).unwrap_or(i64::MAX));
    }

    /// The Prometheus text exposition (format 0.0.4, [`CONTENT_TYPE`]).
    pub fn render(&self) -> String {
        let _one = self.render.lock().unwrap_or_else(PoisonError::into_inner);
        let mut text = String::new();
        // Writing to a String cannot fail; an encoder error would mean a bad family, which a
        // test catches: an empty page rather than a panic in production.
        if prometheus_client::encoding::prometheus_text::encode(&mut text, &self.registry).is_err()
        {
            text.clear();
        }
        text
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(probe: &str) -> ProbeKey {
        ProbeKey {
            cluster: "prod-a".into(),
            namespace: "default".into(),
            group: "core".into(),
            probe: probe.into(),
        }
    }

    #[test]
    fn blackbox_names_carry_the_last_run_and_removal_clears_them() {
        let m = Metrics::new("probe-a");
        let record = RunRecord {
            key: key("core/api-peers@127.0.0.1:1"),
            kind: "api".into(),
            target: "127.0.0.1:1".into(),
            at_unix_ms: 0,
            result: ProbeResult::Pass,
            latency: Duration::from_millis(12),
            http_version: Some(HttpProtocol::H3),
            error: None,
        };
        m.run(&record, Some(1_900_000_000));
        m.state_change(&record.key, "api", "127.0.0.1:1", ProbeState::Healthy);
        m.reload(true, 1.0);
        m.alert_latency(
            &record.key,
            "api",
            "127.0.0.1:1",
            Some(Duration::from_millis(250)),
        );
        let text = m.render();
        let series = "cluster=\"prod-a\",namespace=\"default\",group=\"core\",probe=\"core/api-peers@127.0.0.1:1\",kind=\"api\",target=\"127.0.0.1:1\"";
        for line in [
            format!("probe_success{{{series}}} 1"),
            format!("probe_http_version{{{series}}} 3"),
            format!("probe_duration_seconds{{{series}}} 0.012"),
            format!("probe_ssl_earliest_cert_expiry{{{series}}} 1900000000"),
            format!("mesh_probe_results_total{{{series},result=\"pass\"}} 1"),
            format!("mesh_probe_state{{{series},state=\"healthy\"}} 1"),
            format!("mesh_probe_state{{{series},state=\"failing\"}} 0"),
            format!("mesh_probe_alert_latency_threshold_seconds{{{series}}} 0.25"),
            "meshkit_probe_config_last_reload_successful{agent=\"probe-a\"} 1".to_owned(),
        ] {
            assert!(text.contains(&line), "{line} missing from\n{text}");
        }
        m.remove(&record.key, "api", "127.0.0.1:1");
        assert!(!m.render().contains("core/api-peers"), "{}", m.render());
    }

    /// Only probes whose group alerts on latency have a threshold series: the Slow rule stays
    /// quiet for the others, as the agent's push does.
    #[test]
    fn the_alert_latency_threshold_is_shown_only_where_latency_alerts() {
        let m = Metrics::new("probe-a");
        let (slow, quiet) = (
            key("core/api-peers@127.0.0.1:1"),
            key("core/api-peers@127.0.0.1:2"),
        );
        m.alert_latency(&slow, "api", "127.0.0.1:1", Some(Duration::from_secs(2)));
        m.alert_latency(&quiet, "api", "127.0.0.1:2", None);
        let text = m.render();
        let lines: Vec<&str> = text
            .lines()
            .filter(|l| l.starts_with("mesh_probe_alert_latency_threshold_seconds{"))
            .collect();
        assert_eq!(lines.len(), 1, "{text}");
        assert!(
            lines[0].contains("target=\"127.0.0.1:1\"") && lines[0].ends_with(" 2.0"),
            "{text}"
        );
        // A reload that turns alert_on_latency off takes the series away.
        m.alert_latency(&slow, "api", "127.0.0.1:1", None);
        assert!(
            !m.render()
                .contains("mesh_probe_alert_latency_threshold_seconds{"),
            "{}",
            m.render()
        );
    }
}
