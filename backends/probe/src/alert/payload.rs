//! What the notifier sends: Alertmanager's API v2 `postableAlert` list and the plain webhook's
//! own body (documented in `docs/probes.md`, "Alerting"). Pure functions of a transition and
//! the configuration, so the shapes are tested without a network.
//!
//! The label set is an alert's identity at Alertmanager and carries no agent identity
//! ([`labels`]): every agent of a fleet sends the same set for the same probe's alert.

use std::collections::BTreeMap;

use serde::Serialize;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use super::config::AlertConfig;
use crate::record::{AlertName, AlertState, AlertTransition};

/// The webhook body's `version`: raised when a field changes meaning or goes away.
pub const WEBHOOK_VERSION: &str = "1";

/// One alert as Alertmanager's `POST /api/v2/alerts` takes it (a list of these is the body).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct PostableAlert {
    /// The identity: see [`labels`].
    pub labels: BTreeMap<String, String>,
    /// `summary`, `description`, `runbook_url`.
    pub annotations: BTreeMap<String, String>,
    /// When it started firing (RFC 3339).
    #[serde(rename = "startsAt")]
    pub starts_at: String,
    /// Firing: a time ahead (Alertmanager resolves it then unless sent again); resolved: when.
    #[serde(rename = "endsAt")]
    pub ends_at: String,
    /// The agent that sent it (its own endpoint).
    #[serde(rename = "generatorURL")]
    pub generator_url: String,
}

/// The plain webhook's body: one POST per batch of transitions.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct WebhookBody {
    /// [`WEBHOOK_VERSION`].
    pub version: &'static str,
    /// Always `meshkit-probe`.
    pub source: &'static str,
    /// The agent that sent it.
    #[serde(rename = "generatorURL")]
    pub generator_url: String,
    /// The transitions, in the order they happened.
    pub alerts: Vec<WebhookAlert>,
}

/// One transition in a [`WebhookBody`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct WebhookAlert {
    /// `firing` or `resolved`.
    pub status: &'static str,
    /// The same labels Alertmanager gets.
    pub labels: BTreeMap<String, String>,
    /// The same annotations Alertmanager gets.
    pub annotations: BTreeMap<String, String>,
    /// When it started firing (RFC 3339).
    #[serde(rename = "startsAt")]
    pub starts_at: String,
    /// When it resolved (RFC 3339); `null` while firing.
    #[serde(rename = "endsAt")]
    pub ends_at: Option<String>,
    /// Why, in words (the probe's last error, the window that ended).
    pub reason: String,
}

/// An alert's labels: `alertname`, `cluster`, `namespace`, `group`, `probe`, `kind`, `target`,
/// `severity` (`critical` for failing, `warning` for slow), and the configured static labels
/// (which cannot replace these: the config refuses them).
pub fn labels(t: &AlertTransition, config: &AlertConfig) -> BTreeMap<String, String> {
    let mut out = config.labels().clone();
    let own = [
        ("alertname", t.alert.as_str()),
        ("cluster", &t.key.cluster),
        ("namespace", &t.key.namespace),
        ("group", &t.key.group),
        ("probe", &t.key.probe),
        ("kind", &t.kind),
        ("target", &t.target),
        ("severity", severity(t.alert)),
    ];
    for (name, value) in own {
        // Alertmanager refuses a label with an empty value (and the whole batch with it).
        if !value.is_empty() {
            out.insert(name.to_owned(), value.to_owned());
        }
    }
    out
}

/// The `severity` label of `alert`: a failing probe pages, a slow one does not.
pub fn severity(alert: AlertName) -> &'static str {
    match alert {
        AlertName::Failing => "critical",
        AlertName::Slow => "warning",
    }
}

/// An alert's annotations: `summary`, `description` (the transition's reason), `runbook_url`
/// (`<runbook_base>#<alertname lowercase>`, the section of `docs/runbooks.md`).
pub fn annotations(t: &AlertTransition, config: &AlertConfig) -> BTreeMap<String, String> {
    let what = match t.alert {
        AlertName::Failing => "is failing",
        AlertName::Slow => "passes slowly",
    };
    let summary = format!(
        "Probe {} ({}) of group {} in {}/{} {what} against {}.",
        t.key.probe, t.kind, t.key.group, t.key.cluster, t.key.namespace, t.target
    );
    BTreeMap::from([
        ("summary".to_owned(), summary),
        ("description".to_owned(), t.reason.clone()),
        ("runbook_url".to_owned(), runbook_url(t.alert, config)),
    ])
}

/// `<runbook_base>#<alertname lowercase>`.
pub fn runbook_url(alert: AlertName, config: &AlertConfig) -> String {
    format!(
        "{}#{}",
        config.runbook_base(),
        alert.as_str().to_ascii_lowercase()
    )
}

/// `t` as Alertmanager takes it: started at `starts_unix_ms`, ending at `ends_unix_ms` (ahead
/// for a firing alert, the resolve time for a resolved one).
pub fn postable(
    t: &AlertTransition,
    config: &AlertConfig,
    starts_unix_ms: i64,
    ends_unix_ms: i64,
    generator_url: &str,
) -> PostableAlert {
    PostableAlert {
        labels: labels(t, config),
        annotations: annotations(t, config),
        // Alertmanager refuses an alert that ends before it starts.
        starts_at: rfc3339(starts_unix_ms.min(ends_unix_ms)),
        ends_at: rfc3339(ends_unix_ms),
        generator_url: generator_url.to_owned(),
    }
}

/// `t` as the plain webhook gets it.
pub fn webhook_alert(
    t: &AlertTransition,
    config: &AlertConfig,
    starts_unix_ms: i64,
) -> WebhookAlert {
    WebhookAlert {
        status: t.state.as_str(),
        labels: labels(t, config),
        annotations: annotations(t, config),
        starts_at: rfc3339(starts_unix_ms.min(t.at_unix_ms)),
        ends_at: (t.state == AlertState::Resolved).then(|| rfc3339(t.at_unix_ms)),
        reason: t.reason.clone(),
    }
}

/// `unix_ms` as RFC 3339 in UTC, with milliseconds (the Unix epoch for a time out of range).
pub fn rfc3339(unix_ms: i64) -> String {
    OffsetDateTime::from_unix_timestamp_nanos(i128::from(unix_ms) * 1_000_000)
        .unwrap_or(OffsetDateTime::UNIX_EPOCH)
        .format(&Rfc3339)
        .unwrap_or_else(|_| "1970-01-01T00:00:00Z".to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::alert::RawAlertConfig;
    use crate::record::ProbeKey;

    fn transition(state: AlertState) -> AlertTransition {
        AlertTransition {
            key: ProbeKey {
                cluster: "prod-a".to_owned(),
                namespace: "default".to_owned(),
                group: "core".to_owned(),
                probe: "core/api@10.0.0.1:7443".to_owned(),
            },
            alert: AlertName::Failing,
            kind: "api".to_owned(),
            target: "10.0.0.1:7443".to_owned(),
            state,
            at_unix_ms: 1_796_522_400_000,
            muted: false,
            reason: "connection refused".to_owned(),
        }
    }

    #[test]
    fn an_alert_has_the_probe_identity_and_no_agent() {
        let config = RawAlertConfig {
            labels: BTreeMap::from([("team".to_owned(), "platform".to_owned())]),
            ..RawAlertConfig::default()
        }
        .validate()
        .expect("valid");
        let alert = postable(
            &transition(AlertState::Firing),
            &config,
            1_796_522_400_000,
            1_796_522_640_000,
            "http://agent-1:9465/metrics",
        );
        let json = serde_json::to_value(&alert).expect("serializes");
        assert_eq!(
            json["labels"],
            serde_json::json!({
                "alertname": "MeshKitProbeFailing", "cluster": "prod-a", "namespace": "default",
                "group": "core", "probe": "core/api@10.0.0.1:7443", "kind": "api",
                "target": "10.0.0.1:7443", "severity": "critical", "team": "platform"
            })
        );
        assert_eq!(json["startsAt"], "2026-12-06T02:00:00Z");
        assert_eq!(json["endsAt"], "2026-12-06T02:04:00Z");
        assert_eq!(json["generatorURL"], "http://agent-1:9465/metrics");
        assert_eq!(
            json["annotations"]["runbook_url"],
            "https://example.invalid/meshkit/blob/main/docs/runbooks.md#meshkitprobefailing"
        );
        assert_eq!(json["annotations"]["description"], "connection refused");
    }

    #[test]
    fn the_webhook_alert_says_its_status() {
        let config = AlertConfig::default();
        let firing = serde_json::to_value(webhook_alert(
            &transition(AlertState::Firing),
            &config,
            1_796_522_400_000,
        ))
        .expect("serializes");
        assert_eq!(firing["status"], "firing");
        assert!(firing["endsAt"].is_null());
        let mut resolved = transition(AlertState::Resolved);
        resolved.at_unix_ms += 1_500;
        let resolved =
            serde_json::to_value(webhook_alert(&resolved, &config, 1_796_522_400_000)).expect("ok");
        assert_eq!(resolved["status"], "resolved");
        assert_eq!(resolved["endsAt"], "2026-12-06T02:00:01.5Z");
    }
}
