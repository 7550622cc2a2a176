//! `[alerting]`: where alerts go, how often firing ones are sent again, static labels and the
//! maintenance windows ([`super::maintenance`]).
//!
//! ```toml
//! [alerting]
//! alertmanager = ["http://127.0.0.1:9093"]    # base URLs: POST <url>/api/v2/alerts
//! webhooks = ["http://127.0.0.1:8080/hook"]   # plain JSON webhooks (docs/probes.md)
//! runbook_base = "https://example.invalid/meshkit/blob/main/docs/runbooks.md"
//! resend = "1m"                               # firing alerts sent again this often
//! timeout = "5s"                              # one HTTP request
//! retries = 3                                 # more attempts after a failed one
//! labels = { team = "platform" }              # added to every alert
//! ca = "alertmanager-ca.pem"                  # for https:// receivers (relative to the file)
//! ```
//!
//! Every error names its key (`alerting.resend`, `alerting.alertmanager[1]`,
//! `alerting.maintenance[0].end`) and says what is allowed. `https://` URLs need `ca`, the PEM
//! file of the CA that signed the receivers' certificates ([`super::transport`]): without it
//! they are refused rather than sent in clear.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use meshkit::Duration;
use meshkit::config::parse_duration;
use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;
use serde::Deserialize;

use super::maintenance::{MaintenanceWindow, RawMaintenanceWindow};
use crate::config::ConfigError;

/// The `runbook_base` when none is given: the runbooks of the project's own docs, the form the
/// Prometheus rules of `dashboards/rules/meshkit.rules.yml` use.
pub const DEFAULT_RUNBOOK_BASE: &str = "https://example.invalid/meshkit/blob/main/docs/runbooks.md";
/// `resend` when none is given. Alertmanager forgets an alert that is not sent again before its
/// `endsAt` (now + 4 x `resend`), so this is also how long a dead agent's alerts outlive it.
pub const DEFAULT_RESEND: Duration = Duration::from_secs(60);
/// `timeout` when none is given: one HTTP request, connect included.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(5);
/// `retries` when none is given.
pub const DEFAULT_RETRIES: u32 = 3;
/// The shortest `resend`: faster only loads Alertmanager.
pub const MIN_RESEND: Duration = Duration::from_secs(1);
/// The longest `resend`: Alertmanager keeps a firing alert for 4 x `resend` without news.
pub const MAX_RESEND: Duration = Duration::from_secs(3600);
/// The bounds of `timeout`.
pub const MIN_TIMEOUT: Duration = Duration::from_millis(100);
/// See [`MIN_TIMEOUT`].
pub const MAX_TIMEOUT: Duration = Duration::from_secs(60);
/// The most `retries`: with the backoff doubling from the notifier's first, ten
/// already wait minutes.
pub const MAX_RETRIES: u32 = 10;
/// The most receivers of each kind, maintenance windows and static labels: a config that needs
/// more is a mistake, and each bound keeps a notifier's work per alert bounded.
pub const MAX_RECEIVERS: usize = 16;
/// See [`MAX_RECEIVERS`].
pub const MAX_WINDOWS: usize = 256;
/// See [`MAX_RECEIVERS`].
pub const MAX_STATIC_LABELS: usize = 32;

/// The labels the notifier sets itself: a static label may not replace them (`alertname`,
/// the probe's identity, `severity`), or alerts of different probes would merge.
pub const RESERVED_LABELS: [&str; 8] = [
    "alertname",
    "cluster",
    "namespace",
    "group",
    "probe",
    "kind",
    "target",
    "severity",
];

/// `[alerting]` as written.
#[derive(Clone, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct RawAlertConfig {
    /// Alertmanager base URLs (`http://alertmanager:9093`); alerts go to each.
    #[serde(default)]
    pub alertmanager: Vec<String>,
    /// Plain webhook URLs; each transition is POSTed to each as JSON.
    #[serde(default)]
    pub webhooks: Vec<String>,
    /// The runbook document; an alert's `runbook_url` is `<runbook_base>#<alertname lowercase>`.
    pub runbook_base: Option<String>,
    /// How often firing alerts are sent to Alertmanager again (a duration, `1m`).
    pub resend: Option<String>,
    /// One HTTP request's timeout (a duration, `5s`).
    pub timeout: Option<String>,
    /// Attempts after a failed one, with a doubling backoff.
    pub retries: Option<u32>,
    /// Labels added to every alert.
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    /// `[[alerting.maintenance]]`: windows when alerts are recorded but not sent.
    #[serde(default)]
    pub maintenance: Vec<RawMaintenanceWindow>,
    /// A PEM file of CA certificates for `https://` receivers.
    pub ca: Option<String>,
}

/// `[alerting]`, validated: built only by [`RawAlertConfig::validate`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AlertConfig {
    alertmanager: Vec<String>,
    webhooks: Vec<String>,
    runbook_base: String,
    resend: Duration,
    timeout: Duration,
    retries: u32,
    labels: BTreeMap<String, String>,
    maintenance: Vec<MaintenanceWindow>,
    ca: Option<PathBuf>,
    ca_certs: Vec<CertificateDer<'static>>,
}

impl Default for AlertConfig {
    /// No receivers (alerts are decided and recorded, sent nowhere), the defaults of each key.
    fn default() -> Self {
        Self {
            alertmanager: Vec::new(),
            webhooks: Vec::new(),
            runbook_base: DEFAULT_RUNBOOK_BASE.to_owned(),
            resend: DEFAULT_RESEND,
            timeout: DEFAULT_TIMEOUT,
            retries: DEFAULT_RETRIES,
            labels: BTreeMap::new(),
            maintenance: Vec::new(),
            ca: None,
            ca_certs: Vec::new(),
        }
    }
}

impl AlertConfig {
    /// Alertmanager base URLs, without a trailing `/`.
    pub fn alertmanager(&self) -> &[String] {
        &self.alertmanager
    }

    /// Plain webhook URLs.
    pub fn webhooks(&self) -> &[String] {
        &self.webhooks
    }

    /// The runbook document the `runbook_url` annotation points into.
    pub fn runbook_base(&self) -> &str {
        &self.runbook_base
    }

    /// How often firing alerts are sent to Alertmanager again.
    pub fn resend(&self) -> Duration {
        self.resend
    }

    /// One HTTP request's timeout.
    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    /// Attempts after a failed one.
    pub fn retries(&self) -> u32 {
        self.retries
    }

    /// Labels added to every alert.
    pub fn labels(&self) -> &BTreeMap<String, String> {
        &self.labels
    }

    /// The maintenance windows, in the file's order.
    pub fn maintenance(&self) -> &[MaintenanceWindow] {
        &self.maintenance
    }

    /// The CA file for `https://` receivers, as resolved.
    pub fn ca(&self) -> Option<&Path> {
        self.ca.as_deref()
    }

    /// The CA certificates read from [`ca`](Self::ca) when the config was validated.
    pub fn ca_certs(&self) -> &[CertificateDer<'static>] {
        &self.ca_certs
    }
}

impl RawAlertConfig {
    /// Checks every key; a relative `ca` is read from the working directory (see
    /// [`validate_in`](Self::validate_in)).
    ///
    /// # Errors
    ///
    /// [`ConfigError`] naming the key (`alerting.<key>`, `alerting.maintenance[i].<key>`) and
    /// what is allowed.
    pub fn validate(self) -> Result<AlertConfig, ConfigError> {
        self.validate_in(Path::new("."))
    }

    /// Checks every key; a relative `ca` is read from `base` (the config file's directory).
    ///
    /// # Errors
    ///
    /// As [`validate`](Self::validate); `alerting.ca` when the file cannot be read or holds
    /// no usable CA certificate.
    pub fn validate_in(self, base: &Path) -> Result<AlertConfig, ConfigError> {
        let (ca, ca_certs) = match self.ca {
            None => (None, Vec::new()),
            Some(path) => {
                let path = base.join(path);
                let certs = read_ca(&path)?;
                (Some(path), certs)
            }
        };
        let https_allowed = !ca_certs.is_empty();
        let alertmanager = urls("alerting.alertmanager", self.alertmanager, https_allowed)?;
        let webhooks = urls("alerting.webhooks", self.webhooks, https_allowed)?;
        let runbook_base = match self.runbook_base {
            None => DEFAULT_RUNBOOK_BASE.to_owned(),
            Some(base) => {
                let base = base.trim().to_owned();
                if base.is_empty() || base.contains('#') || base.chars().any(char::is_whitespace) {
                    return Err(ConfigError::new(
                        "alerting.runbook_base",
                        format!(
                            "{base:?} is not a runbook document: a URL without spaces or a \
                             #fragment (the alert's name is appended as #<alertname>)"
                        ),
                    ));
                }
                base
            }
        };
        let resend = duration(
            "alerting.resend",
            self.resend.as_deref(),
            DEFAULT_RESEND,
            (MIN_RESEND, MAX_RESEND),
        )?;
        let timeout = duration(
            "alerting.timeout",
            self.timeout.as_deref(),
            DEFAULT_TIMEOUT,
            (MIN_TIMEOUT, MAX_TIMEOUT),
        )?;
        let retries = self.retries.unwrap_or(DEFAULT_RETRIES);
        if retries > MAX_RETRIES {
            return Err(ConfigError::new(
                "alerting.retries",
                format!("{retries} is too many: 0 to {MAX_RETRIES}"),
            ));
        }
        if self.labels.len() > MAX_STATIC_LABELS {
            return Err(ConfigError::new(
                "alerting.labels",
                format!("{} labels: at most {MAX_STATIC_LABELS}", self.labels.len()),
            ));
        }
        for (name, value) in &self.labels {
            let key = format!("alerting.labels.{name}");
            if !is_label_name(name) {
                return Err(ConfigError::new(
                    key,
                    "not a label name: letters, digits and _, not starting with a digit or __",
                ));
            }
            if RESERVED_LABELS.contains(&name.as_str()) {
                return Err(ConfigError::new(
                    key,
                    format!(
                        "reserved: the notifier sets {} itself",
                        RESERVED_LABELS.join(", ")
                    ),
                ));
            }
            if value.is_empty() {
                return Err(ConfigError::new(
                    key,
                    "empty: Alertmanager drops a label with an empty value",
                ));
            }
        }
        if self.maintenance.len() > MAX_WINDOWS {
            return Err(ConfigError::new(
                "alerting.maintenance",
                format!("{} windows: at most {MAX_WINDOWS}", self.maintenance.len()),
            ));
        }
        let maintenance = self
            .maintenance
            .into_iter()
            .enumerate()
            .map(|(i, raw)| raw.validate(&format!("alerting.maintenance[{i}]")))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(AlertConfig {
            alertmanager,
            webhooks,
            runbook_base,
            resend,
            timeout,
            retries,
            labels: self.labels,
            maintenance,
            ca,
            ca_certs,
        })
    }
}

/// The CA certificates of the PEM file `path`, each checked as a trust anchor.
fn read_ca(path: &Path) -> Result<Vec<CertificateDer<'static>>, ConfigError> {
    let key = "alerting.ca";
    let pem = std::fs::read(path)
        .map_err(|e| ConfigError::new(key, format!("cannot read {}: {e}", path.display())))?;
    let certs = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| {
            ConfigError::new(
                key,
                format!("{}: not PEM certificates: {e}", path.display()),
            )
        })?;
    if certs.is_empty() {
        return Err(ConfigError::new(
            key,
            format!(
                "{}: no CERTIFICATE block (a PEM file of CA certificates)",
                path.display()
            ),
        ));
    }
    let mut roots = rustls::RootCertStore::empty();
    for (i, cert) in certs.iter().enumerate() {
        roots.add(cert.clone()).map_err(|e| {
            ConfigError::new(
                key,
                format!(
                    "{}: certificate {i} is not a usable CA: {e}",
                    path.display()
                ),
            )
        })?;
    }
    Ok(certs)
}

/// `urls` checked as HTTP URLs with a host (a trailing `/` removed); `https` only when a CA
/// is configured.
fn urls(key: &str, urls: Vec<String>, https_allowed: bool) -> Result<Vec<String>, ConfigError> {
    if urls.len() > MAX_RECEIVERS {
        return Err(ConfigError::new(
            key,
            format!("{} URLs: at most {MAX_RECEIVERS}", urls.len()),
        ));
    }
    let mut out: Vec<String> = Vec::with_capacity(urls.len());
    for (i, url) in urls.into_iter().enumerate() {
        let key = format!("{key}[{i}]");
        let trimmed = url.trim().trim_end_matches('/').to_owned();
        let uri: http::Uri = trimmed.parse().map_err(|e| {
            ConfigError::new(
                &key,
                format!("{url:?} is not a URL ({e}): http://host:port/path"),
            )
        })?;
        match uri.scheme_str() {
            Some("http") => {}
            Some("https") if https_allowed => {}
            Some("https") => {
                return Err(ConfigError::new(
                    key,
                    format!(
                        "{url:?}: https needs alerting.ca, the PEM file of the CA that signed \
                         the receiver's certificate (the agent uses no system roots)"
                    ),
                ));
            }
            _ => {
                return Err(ConfigError::new(
                    key,
                    format!("{url:?}: needs the scheme http:// or https:// (http://host:port)"),
                ));
            }
        }
        if uri.host().is_none_or(str::is_empty) {
            return Err(ConfigError::new(
                key,
                format!("{url:?} has no host: http://host:port"),
            ));
        }
        if uri.query().is_some() {
            return Err(ConfigError::new(
                key,
                format!("{url:?}: a query string is not allowed"),
            ));
        }
        if out.contains(&trimmed) {
            return Err(ConfigError::new(
                key,
                format!("{url:?} is listed twice (each alert would be sent to it twice)"),
            ));
        }
        out.push(trimmed);
    }
    Ok(out)
}

/// `text` parsed as a duration within `bounds` (inclusive), or `default` when absent.
fn duration(
    key: &str,
    text: Option<&str>,
    default: Duration,
    (min, max): (Duration, Duration),
) -> Result<Duration, ConfigError> {
    let Some(text) = text else {
        return Ok(default);
    };
    let value = parse_duration(text)
        .map_err(|e| ConfigError::new(key, format!("{e}: a duration such as 500ms, 30s, 1m")))?;
    if value < min || value > max {
        return Err(ConfigError::new(
            key,
            format!("{text:?} is out of range: {min:?} to {max:?}"),
        ));
    }
    Ok(value)
}

/// Whether `name` is a Prometheus label name that is not reserved for internal use (`__`).
pub(crate) fn is_label_name(name: &str) -> bool {
    let mut chars = name.chars();
    let Some(first) = chars.next() else {
        return false;
    };
    (first.is_ascii_alphabetic() || first == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
        && !name.starts_with("__")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<AlertConfig, ConfigError> {
        #[derive(Deserialize)]
        #[serde(deny_unknown_fields)]
        struct File {
            alerting: RawAlertConfig,
        }
        let file: File = toml::from_str(text).map_err(|e| ConfigError::new("toml", e.message()))?;
        file.alerting.validate()
    }

    fn key_of(text: &str) -> String {
        parse(text).expect_err("refused").key
    }

    #[test]
    fn defaults_apply_to_an_empty_section() {
        let config = parse("[alerting]\n").expect("valid");
        assert_eq!(config, AlertConfig::default());
        assert_eq!(config.resend(), Duration::from_secs(60));
        assert_eq!(config.runbook_base(), DEFAULT_RUNBOOK_BASE);
    }

    #[test]
    fn a_full_section_is_read() {
        let config = parse(
            r#"
            [alerting]
            alertmanager = ["http://127.0.0.1:9093/", "http://am-2:9093"]
            webhooks = ["http://hooks:8080/meshkit"]
            runbook_base = "https://wiki.example/runbooks"
            resend = "30s"
            timeout = "2s"
            retries = 1
            labels = { team = "platform" }
            [[alerting.maintenance]]
            start = "2026-12-06T02:00:00Z"
            end = "2026-12-06T04:00:00+01:00"
            clusters = ["prod-a"]
            reason = "upgrade"
            "#,
        )
        .expect("valid");
        assert_eq!(
            config.alertmanager(),
            ["http://127.0.0.1:9093", "http://am-2:9093"]
        );
        assert_eq!(config.webhooks(), ["http://hooks:8080/meshkit"]);
        assert_eq!(config.resend(), Duration::from_secs(30));
        assert_eq!(config.timeout(), Duration::from_secs(2));
        assert_eq!(config.retries(), 1);
        assert_eq!(config.labels()["team"], "platform");
        assert_eq!(config.maintenance().len(), 1);
        assert_eq!(config.maintenance()[0].reason(), "upgrade");
    }

    #[test]
    fn every_error_names_its_key() {
        let cases = [
            (
                "alertmanager = [\"https://am:9093\"]",
                "alerting.alertmanager[0]",
            ),
            (
                "alertmanager = [\"http://a:1\", \"am:9093\"]",
                "alerting.alertmanager[1]",
            ),
            (
                "alertmanager = [\"http://a:1\", \"http://a:1/\"]",
                "alerting.alertmanager[1]",
            ),
            ("webhooks = [\"not a url\"]", "alerting.webhooks[0]"),
            ("webhooks = [\"http://h/x?y=1\"]", "alerting.webhooks[0]"),
            (
                "runbook_base = \"https://x/r.md#a\"",
                "alerting.runbook_base",
            ),
            ("resend = \"10\"", "alerting.resend"),
            ("resend = \"100ms\"", "alerting.resend"),
            ("resend = \"2h\"", "alerting.resend"),
            ("timeout = \"5 parsecs\"", "alerting.timeout"),
            ("retries = 11", "alerting.retries"),
            ("ca = \"/nonexistent/ca.pem\"", "alerting.ca"),
            ("ca = \"/dev/null\"", "alerting.ca"),
            (
                "labels = { severity = \"page\" }",
                "alerting.labels.severity",
            ),
            ("labels = { probe = \"x\" }", "alerting.labels.probe"),
            ("labels = { \"9x\" = \"x\" }", "alerting.labels.9x"),
            ("labels = { __x = \"x\" }", "alerting.labels.__x"),
            ("labels = { team = \"\" }", "alerting.labels.team"),
        ];
        for (line, key) in cases {
            let got = key_of(&format!("[alerting]\n{line}\n"));
            assert_eq!(got, key, "{line}");
        }
        let error = parse("[alerting]\nresend = \"100ms\"\n").expect_err("refused");
        assert!(error.problem.contains("1s"), "{error}");
    }

    #[test]
    fn unknown_keys_are_refused() {
        let error = parse("[alerting]\nresnd = \"1m\"\n").expect_err("refused");
        assert!(error.problem.contains("resnd"), "{error}");
    }
}
