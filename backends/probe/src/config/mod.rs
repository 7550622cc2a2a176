//! `probes.toml`: the agent's declarative configuration (see `docs/probes.md` for the
//! reference).
//!
//! The file is read in two steps: TOML into a table, then each section into its serde form
//! (`deny_unknown_fields`) and from there into its validated type. Every refusal is a
//! [`ConfigError`] whose `key` is the path into the file (`group[1].watch.tolerance`,
//! `credentials.token_file`), so `meshkit-probe check-config` can point at the line to fix.
//! Nothing is applied from a file that fails anywhere: at start the agent does not run, on a
//! reload the running configuration stays.
//!
//! ```toml
//! [agent]
//! name = "probe-a"                # a-z 0-9 . _ -; a label of the agent's own metrics only
//! listen = "127.0.0.1:9465"       # /metrics, POST /-/reload, GET /-/healthy
//! bind = "10.0.0.5"               # optional: the source address of every probe connection
//! allow_excess_privilege = false  # true: run even if the credentials can operate
//! reload_on_change = true         # reload when the file changes (SIGHUP and POST /-/reload always)
//!
//! [credentials]                   # paths relative to this file
//! ca = "certs/ca.pem"
//! token_file = "observer.token"   # or cert = "probe.pem" with key = "probe.key"
//! server_name = "node-1"          # optional: accept only this server certificate name
//!
//! [defaults]                      # every group's timing unless the group says otherwise
//! interval = "10s"                # 10ms..=1h
//! timeout = "2s"                  # 1ms..=interval
//! failure_threshold = 3           # 1..=100 failures in a row make a probe Failing
//! success_threshold = 2           # 1..=100 passes in a row make it Healthy again
//! latency_threshold = "500ms"     # optional, below timeout: slower passes are Degraded
//! alert_on_latency = false        # whether Degraded alerts as well as Failing
//!
//! [[group]]
//! name = "core"                   # a-z 0-9 . _ -, unique
//! cluster = "prod-a"              # the `cluster` label
//! namespace = "default"           # the `namespace` label (default "default")
//! targets = ["10.0.0.1:7443"]     # control addresses, or:
//! # discover = "10.0.0.1:7443"    # every member's control address from this node's peers
//! probes = ["api", "authz", "watch", "transport"]
//! interval = "5s"                 # any key of [defaults] may be overridden here
//! [group.api]
//! endpoints = ["peers", "shards", "clusters", "versions", "leaders"]
//! min_alive = 3                   # peers: at least this many members alive (default 1)
//! rollout = false                 # versions: true allows more than one version
//! [group.watch]
//! streams = ["leadership", "shards"]
//! heartbeat = "5s"                # the node's keep-alive cadence (SSE_HEARTBEAT, both carriers)
//! tolerance = "2s"                # how late a heartbeat may be
//! resume_every = "30s"            # a deliberate reconnect with Last-Event-ID this often
//! sse = true                      # over server-sent events (a probe per stream)
//! grpc = false                    # also over gRPC (WatchLeadership, WatchShards): a probe of its own
//! [group.transport]
//! path = "/meshkit/peers"         # the request sent over HTTP/3, then HTTP/2
//! counters = true                 # compare with the node's mesh_transport_* counters
//! ```
//!
//! `[history]`, `[reports]`, `[alerting]` and `[fleet]` belong to their modules
//! ([`crate::history`], [`crate::report`], [`crate::alert`], [`crate::fleet`]); this module
//! reads them into their serde forms and calls their `validate`.

mod error;
mod group;

use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};

use serde::Deserialize;
use serde::de::DeserializeOwned;

pub use error::ConfigError;
pub use group::{
    ApiEndpoint, ApiOptions, GroupConfig, MAX_GROUPS, MAX_TARGETS_PER_GROUP, ProbeType, RawApi,
    RawGroup, RawTiming, RawTransport, RawWatch, Targets, Timing, TransportOptions, WatchOptions,
    WatchStream,
};

use crate::alert::{AlertConfig, RawAlertConfig};
use crate::fleet::{FleetConfig, RawFleetConfig};
use crate::history::{HistoryConfig, RawHistoryConfig};
use crate::report::{RawReportConfig, ReportConfig};

/// The longest config file read, in bytes: a config is a few kilobytes; anything near this is
/// not one.
pub const MAX_CONFIG_BYTES: u64 = 4 * 1024 * 1024;
/// The longest token file read, in bytes.
pub const MAX_TOKEN_BYTES: u64 = 16 * 1024;
/// The most probes one agent runs: the probe host's own bound
/// ([`meshkit::diag::probe::MAX_PROBES`]).
pub const MAX_PROBES: usize = meshkit::diag::probe::MAX_PROBES;

/// The whole file, validated.
#[derive(Clone, Debug, PartialEq)]
pub struct Config {
    /// The file it was read from.
    pub path: PathBuf,
    /// `[agent]`.
    pub agent: AgentConfig,
    /// `[credentials]`.
    pub credentials: Credentials,
    /// `[[group]]`, in file order.
    pub groups: Vec<GroupConfig>,
    /// `[history]` (defaults when absent).
    pub history: HistoryConfig,
    /// `[reports]` (none scheduled when absent).
    pub reports: ReportConfig,
    /// `[alerting]` (no receiver when absent).
    pub alerting: AlertConfig,
    /// `[fleet]`: `None` when absent (the agent runs every group itself).
    pub fleet: Option<FleetConfig>,
}

/// `[agent]`, validated.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AgentConfig {
    /// This agent's name (`agent` label of its own metrics, the history's heartbeats).
    pub name: String,
    /// The address of `/metrics`, `POST /-/reload` and `GET /-/healthy`.
    pub listen: SocketAddr,
    /// The source address of every probe connection (QUIC and TCP), if set.
    pub bind: Option<IpAddr>,
    /// Run even when the credentials can do more than observe.
    pub allow_excess_privilege: bool,
    /// Reload when the config file changes (default true).
    pub reload_on_change: bool,
}

/// How the agent proves who it is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Identity {
    /// A bearer token, read from `token_file` (trimmed).
    Token {
        /// The file (re-read on every reload).
        file: PathBuf,
        /// Its content.
        token: String,
    },
    /// A client certificate and its key (PEM).
    Certificate {
        /// The certificate (chain).
        cert: PathBuf,
        /// The private key.
        key: PathBuf,
    },
}

/// `[credentials]`, validated: the files exist and are readable.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Credentials {
    /// The mesh's CA (PEM).
    pub ca: PathBuf,
    /// The agent's identity.
    pub identity: Identity,
    /// The server certificate name to accept, if pinned.
    pub server_name: Option<String>,
}

/// `[agent]` as written.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
#[expect(missing_docs, reason = "the module docs describe each key")]
pub struct RawAgent {
    pub name: Option<String>,
    pub listen: Option<String>,
    pub bind: Option<String>,
    pub allow_excess_privilege: Option<bool>,
    pub reload_on_change: Option<bool>,
}

/// `[credentials]` as written.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
#[expect(missing_docs, reason = "the module docs describe each key")]
pub struct RawCredentials {
    pub ca: Option<String>,
    pub token_file: Option<String>,
    pub cert: Option<String>,
    pub key: Option<String>,
    pub server_name: Option<String>,
}

/// The sections a file may hold.
const SECTIONS: [&str; 8] = [
    "agent",
    "credentials",
    "defaults",
    "group",
    "history",
    "reports",
    "alerting",
    "fleet",
];

impl Config {
    /// Reads and validates `path`.
    ///
    /// # Errors
    ///
    /// [`ConfigError`] naming the key (the file itself for an unreadable file or bad TOML).
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = read_bounded(path, MAX_CONFIG_BYTES)
            .map_err(|e| ConfigError::new(path.display().to_string(), e))?;
        let base = path.parent().unwrap_or_else(|| Path::new("."));
        Self::parse(&text, path, base)
    }

    /// Validates `text` as if read from `path`; relative paths are taken from `base`.
    ///
    /// # Errors
    ///
    /// [`ConfigError`] naming the key.
    pub fn parse(text: &str, path: &Path, base: &Path) -> Result<Self, ConfigError> {
        let mut table: toml::Table = toml::from_str(text).map_err(|e| {
            ConfigError::new(
                path.display().to_string(),
                format!("not valid TOML: {}", e.message()),
            )
        })?;
        if let Some(unknown) = table.keys().find(|k| !SECTIONS.contains(&k.as_str())) {
            return Err(ConfigError::new(
                unknown.clone(),
                format!("unknown section: the sections are {}", SECTIONS.join(", ")),
            ));
        }
        let agent: RawAgent = section(&mut table, "agent")?.unwrap_or_default();
        let credentials: RawCredentials = section(&mut table, "credentials")?.ok_or_else(|| {
            ConfigError::new(
                "credentials",
                "missing: the agent needs a CA and a token or certificate",
            )
        })?;
        let defaults: RawTiming = section(&mut table, "defaults")?.unwrap_or_default();
        let groups: Vec<RawGroup> = match table.remove("group") {
            None => Vec::new(),
            Some(toml::Value::Array(items)) => items
                .into_iter()
                .enumerate()
                .map(|(i, item)| value(item, &format!("group[{i}]")))
                .collect::<Result<_, _>>()?,
            Some(_) => {
                return Err(ConfigError::new(
                    "group",
                    "expected an array of tables ([[group]])",
                ));
            }
        };
        let history: RawHistoryConfig = section(&mut table, "history")?.unwrap_or_default();
        let reports: RawReportConfig = section(&mut table, "reports")?.unwrap_or_default();
        let alerting: RawAlertConfig = section(&mut table, "alerting")?.unwrap_or_default();
        let fleet: Option<RawFleetConfig> = section(&mut table, "fleet")?;

        let agent = agent.validate()?;
        let credentials = credentials.validate(base)?;
        let defaults = defaults.validate("defaults", &Timing::default())?;
        let groups = group::validate_groups(groups, &defaults)?;
        Ok(Self {
            path: path.to_owned(),
            agent,
            credentials,
            groups,
            history: history.validate(base)?,
            reports: reports.validate(base)?,
            alerting: alerting.validate()?,
            fleet: fleet.map(|f| f.validate(base)).transpose()?,
        })
    }

    /// How many probes the groups make (targets x types x details); discovered targets count
    /// as one until discovered.
    pub fn probe_count(&self) -> usize {
        self.groups.iter().map(GroupConfig::probe_count).sum()
    }
}

/// Reads `path`, refusing one longer than `max_bytes`.
pub(crate) fn read_bounded(path: &Path, max_bytes: u64) -> Result<String, String> {
    use std::io::Read as _;
    let file =
        std::fs::File::open(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    let mut text = String::new();
    file.take(max_bytes + 1)
        .read_to_string(&mut text)
        .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    if text.len() as u64 > max_bytes {
        return Err(format!(
            "{} is longer than {max_bytes} bytes",
            path.display()
        ));
    }
    Ok(text)
}

/// The section `name` of `table` in its serde form, if present.
fn section<T: DeserializeOwned>(
    table: &mut toml::Table,
    name: &str,
) -> Result<Option<T>, ConfigError> {
    table.remove(name).map(|v| value(v, name)).transpose()
}

/// `v` in its serde form; an error names `key` and the field where it can: serde names an
/// unknown or missing field in its message, and a value of the wrong type is found by reading
/// each key alone (every field of the serde forms is optional, so a one-key table is complete).
fn value<T: DeserializeOwned>(v: toml::Value, key: &str) -> Result<T, ConfigError> {
    let toml::Value::Table(table) = v else {
        return Err(ConfigError::new(key, "expected a table"));
    };
    match toml::Value::Table(table.clone()).try_into::<T>() {
        Ok(parsed) => Ok(parsed),
        Err(e) => {
            for (field, item) in &table {
                let mut alone = toml::Table::new();
                alone.insert(field.clone(), item.clone());
                if let Err(one) = toml::Value::Table(alone).try_into::<T>()
                    && !one.message().contains("unknown field")
                {
                    return Err(ConfigError::new(
                        format!("{key}.{field}"),
                        one.message().trim().to_owned(),
                    ));
                }
            }
            Err(ConfigError::new(key, e.message().trim().to_owned()))
        }
    }
}

/// Checks a name that becomes a metric label value and a probe name part: 1..=64 bytes of
/// `a-z 0-9 . _ -`.
pub(crate) fn check_label(key: &str, value: &str) -> Result<(), ConfigError> {
    let ok = !value.is_empty()
        && value.len() <= meshkit::diag::probe::MAX_TAG_BYTES
        && value.bytes().all(|b| {
            b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'.' | b'_' | b'-')
        });
    if ok {
        Ok(())
    } else {
        Err(ConfigError::new(
            key,
            format!(
                "{value:?}: expected 1 to {} characters of a-z, 0-9, '.', '_' and '-'",
                meshkit::diag::probe::MAX_TAG_BYTES
            ),
        ))
    }
}

impl RawAgent {
    fn validate(self) -> Result<AgentConfig, ConfigError> {
        let name = self
            .name
            .ok_or_else(|| ConfigError::new("agent.name", "missing: name this agent"))?;
        check_label("agent.name", &name)?;
        let listen = self.listen.ok_or_else(|| {
            ConfigError::new(
                "agent.listen",
                "missing: the address of /metrics (e.g. \"127.0.0.1:9465\")",
            )
        })?;
        let listen: SocketAddr = listen.parse().map_err(|_| {
            ConfigError::new(
                "agent.listen",
                format!("{listen:?}: expected an IP address and port, such as \"127.0.0.1:9465\""),
            )
        })?;
        let bind = self
            .bind
            .map(|text| {
                let parsed = text.parse::<IpAddr>().ok().or_else(|| {
                    text.parse::<SocketAddr>()
                        .ok()
                        .filter(|a| a.port() == 0)
                        .map(|a| a.ip())
                });
                parsed.ok_or_else(|| {
                    ConfigError::new(
                        "agent.bind",
                        format!(
                            "{text:?}: expected an IP address (\"10.0.0.5\", or \"10.0.0.5:0\"): \
                             each connection takes a port of its own"
                        ),
                    )
                })
            })
            .transpose()?;
        Ok(AgentConfig {
            name,
            listen,
            bind,
            allow_excess_privilege: self.allow_excess_privilege.unwrap_or(false),
            reload_on_change: self.reload_on_change.unwrap_or(true),
        })
    }
}

/// `base/file`, checked to be a readable file.
fn readable(key: &str, base: &Path, file: &str) -> Result<PathBuf, ConfigError> {
    let path = base.join(file);
    std::fs::File::open(&path)
        .map_err(|e| ConfigError::new(key, format!("cannot read {}: {e}", path.display())))?;
    Ok(path)
}

impl RawCredentials {
    fn validate(self, base: &Path) -> Result<Credentials, ConfigError> {
        let ca = self.ca.ok_or_else(|| {
            ConfigError::new("credentials.ca", "missing: the mesh's CA certificate (PEM)")
        })?;
        let ca = readable("credentials.ca", base, &ca)?;
        let identity = match (self.token_file, self.cert, self.key) {
            (Some(file), None, None) => {
                let file = readable("credentials.token_file", base, &file)?;
                let token = read_bounded(&file, MAX_TOKEN_BYTES)
                    .map_err(|e| ConfigError::new("credentials.token_file", e))?
                    .trim()
                    .to_owned();
                if token.is_empty() || token.bytes().any(|b| b.is_ascii_control()) {
                    return Err(ConfigError::new(
                        "credentials.token_file",
                        format!("{}: expected one bearer token, on one line", file.display()),
                    ));
                }
                Identity::Token { file, token }
            }
            (None, Some(cert), Some(key)) => Identity::Certificate {
                cert: readable("credentials.cert", base, &cert)?,
                key: readable("credentials.key", base, &key)?,
            },
            (None, Some(_), None) => {
                return Err(ConfigError::new(
                    "credentials.key",
                    "missing: a certificate needs its private key",
                ));
            }
            (None, None, Some(_)) => {
                return Err(ConfigError::new(
                    "credentials.cert",
                    "missing: a key needs its certificate",
                ));
            }
            (Some(_), _, _) => {
                return Err(ConfigError::new(
                    "credentials.token_file",
                    "give either token_file or cert and key, not both",
                ));
            }
            (None, None, None) => {
                return Err(ConfigError::new(
                    "credentials.token_file",
                    "missing: give token_file (a mesh.observe bearer token) or cert and key",
                ));
            }
        };
        if let Some(name) = &self.server_name
            && rustls_name_ok(name).is_err()
        {
            return Err(ConfigError::new(
                "credentials.server_name",
                format!("{name:?}: expected a DNS name, such as \"node-1\""),
            ));
        }
        Ok(Credentials {
            ca,
            identity,
            server_name: self.server_name,
        })
    }
}

/// Whether `name` is a DNS name a client can pin (letters, digits, `-` and `.`).
fn rustls_name_ok(name: &str) -> Result<(), ()> {
    let ok = !name.is_empty()
        && name.len() <= 253
        && name.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-')
        });
    if ok { Ok(()) } else { Err(()) }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A scratch directory with a CA file and a token file.
    fn scratch(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!(
            "meshkit-probe-config-{name}-{}",
            std::process::id()
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("ca.pem"), "not read here").unwrap();
        std::fs::write(dir.join("observer.token"), "abc.def.ghi\n").unwrap();
        dir
    }

    const GOOD: &str = r#"
[agent]
name = "probe-a"
listen = "127.0.0.1:9465"
[credentials]
ca = "ca.pem"
token_file = "observer.token"
[defaults]
interval = "10s"
timeout = "2s"
[[group]]
name = "core"
cluster = "prod-a"
targets = ["127.0.0.1:8001", "127.0.0.1:8002"]
probes = ["api", "authz"]
interval = "5s"
[group.api]
endpoints = ["peers", "versions"]
min_alive = 2
"#;

    #[test]
    fn a_good_file_is_read_with_defaults_and_overrides() {
        let dir = scratch("good");
        let config = Config::parse(GOOD, &dir.join("probes.toml"), &dir).unwrap();
        assert_eq!(config.agent.name, "probe-a");
        assert!(
            matches!(&config.credentials.identity, Identity::Token { token, .. } if token == "abc.def.ghi")
        );
        let g = &config.groups[0];
        assert_eq!(g.namespace, "default");
        assert_eq!(g.timing.interval, std::time::Duration::from_secs(5));
        assert_eq!(g.timing.timeout, std::time::Duration::from_secs(2));
        assert_eq!(g.timing.failure_threshold, 3);
        assert_eq!(g.api.min_alive, 2);
        // 2 targets x (2 api endpoints + 1 authz).
        assert_eq!(config.probe_count(), 6);
        let _ = std::fs::remove_dir_all(dir);
    }

    /// `watch.grpc = true` adds a probe per stream beside the SSE ones, or replaces them with
    /// `sse = false`; turning both off is refused naming `watch.sse`.
    #[test]
    fn watch_over_grpc_adds_or_replaces_the_sse_probes() {
        let dir = scratch("grpc");
        let with = |watch: &str| {
            let text = GOOD.replace("probes = [\"api\", \"authz\"]", "probes = [\"watch\"]")
                + "[group.watch]\nstreams = [\"leadership\", \"shards\"]\n"
                + watch;
            Config::parse(&text, &dir.join("probes.toml"), &dir)
        };
        let both = with("grpc = true\n").unwrap();
        assert!(both.groups[0].watch.sse && both.groups[0].watch.grpc);
        // 2 targets x 2 streams x 2 carriers.
        assert_eq!(both.probe_count(), 8);
        let only = with("grpc = true\nsse = false\n").unwrap();
        assert_eq!(only.probe_count(), 4);
        let none = with("grpc = false\nsse = false\n").unwrap_err();
        assert!(none.to_string().contains("group[0].watch.sse"), "{none}");
        let _ = std::fs::remove_dir_all(dir);
    }

    /// Every refusal names its key.
    #[test]
    fn every_error_names_the_key() {
        let dir = scratch("errors");
        let cases: &[(&str, &str, &str)] = &[
            ("name = \"probe-a\"", "name = \"Probe A\"", "agent.name"),
            (
                "listen = \"127.0.0.1:9465\"",
                "listen = \"nowhere\"",
                "agent.listen",
            ),
            ("[agent]", "[agent]\nbind = \"10.0.0.1:80\"", "agent.bind"),
            ("[agent]", "[agent]\nlisen = 1", "agent"),
            ("ca = \"ca.pem\"", "ca = \"missing.pem\"", "credentials.ca"),
            (
                "token_file = \"observer.token\"",
                "cert = \"ca.pem\"",
                "credentials.key",
            ),
            ("timeout = \"2s\"", "timeout = \"20s\"", "defaults.timeout"),
            (
                "timeout = \"2s\"",
                "timeout = \"2 parsecs\"",
                "defaults.timeout",
            ),
            (
                "[defaults]",
                "[defaults]\nfailure_threshold = 0",
                "defaults.failure_threshold",
            ),
            (
                "[defaults]",
                "[defaults]\nlatency_threshold = \"3s\"",
                "defaults.latency_threshold",
            ),
            ("name = \"core\"", "name = \"Core\"", "group[0].name"),
            ("cluster = \"prod-a\"", "cluster = \"\"", "group[0].cluster"),
            (
                "probes = [\"api\", \"authz\"]",
                "probes = [\"api\", \"dns\"]",
                "group[0].probes[1]",
            ),
            (
                "probes = [\"api\", \"authz\"]",
                "probes = []",
                "group[0].probes",
            ),
            (
                "\"127.0.0.1:8002\"]",
                "\"127.0.0.1:8001\"]",
                "group[0].targets[1]",
            ),
            (
                "\"127.0.0.1:8002\"]",
                "\"localhost\"]",
                "group[0].targets[1]",
            ),
            (
                "targets = [",
                "discover = \"127.0.0.1:1\"\ntargets = [",
                "group[0].discover",
            ),
            (
                "interval = \"5s\"",
                "interval = \"5ms\"",
                "group[0].interval",
            ),
            (
                "endpoints = [\"peers\", \"versions\"]",
                "endpoints = [\"peer\"]",
                "group[0].api.endpoints[0]",
            ),
            ("min_alive = 2", "min_alive = 2\nmax = 1", "group[0].api"),
            (
                "min_alive = 2",
                "min_alive = \"two\"",
                "group[0].api.min_alive",
            ),
            ("interval = \"5s\"", "interval = 5", "group[0].interval"),
            ("[credentials]", "[credential]", "credential"),
        ];
        for (from, to, key) in cases {
            assert!(GOOD.contains(from), "{from}");
            let text = GOOD.replacen(from, to, 1);
            let err = Config::parse(&text, &dir.join("probes.toml"), &dir).unwrap_err();
            assert_eq!(err.key, *key, "{to}: {err}");
            assert!(!err.problem.is_empty());
        }
        // Two groups of one name.
        let twice = format!(
            "{GOOD}\n[[group]]\nname = \"core\"\ncluster = \"b\"\ntargets = [\"127.0.0.1:1\"]\nprobes = [\"api\"]\n"
        );
        let err = Config::parse(&twice, &dir.join("probes.toml"), &dir).unwrap_err();
        assert_eq!(err.key, "group[1].name", "{err}");
        let _ = std::fs::remove_dir_all(dir);
    }
}
