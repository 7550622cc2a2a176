//! `[[group]]` and `[defaults]`: targets, probe types, timing and each type's options.

use std::collections::BTreeSet;
use std::time::Duration;

use meshkit::config::parse_duration;
use meshkit::diag::probe::{MAX_INTERVAL, MAX_THRESHOLD, MIN_INTERVAL, MIN_TIMEOUT};
use serde::Deserialize;

use super::{ConfigError, MAX_PROBES, check_label};

/// The longest list of targets one group may name.
pub const MAX_TARGETS_PER_GROUP: usize = 256;
/// The most groups one file may hold.
pub const MAX_GROUPS: usize = 256;

/// A probe type.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum ProbeType {
    /// The read API: status, body shape, invariants, latency.
    Api,
    /// Authorization behaviour: observe reads, operate is refused, no credentials get 401.
    Authz,
    /// Watch streams: heartbeats, freshness, resume without loss or repeat.
    Watch,
    /// Transport: HTTP/3, then a forced HTTP/2, against the node's own counters.
    Transport,
}

impl ProbeType {
    /// Every type, in the order their probes are named.
    pub const ALL: [Self; 4] = [Self::Api, Self::Authz, Self::Watch, Self::Transport];

    /// Its name in the file, the `kind` label and probe names.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Api => "api",
            Self::Authz => "authz",
            Self::Watch => "watch",
            Self::Transport => "transport",
        }
    }
}

/// An endpoint of the read API an `api` probe checks.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum ApiEndpoint {
    /// `GET /meshkit/peers`.
    Peers,
    /// `GET /meshkit/shards`.
    Shards,
    /// `GET /meshkit/clusters`.
    Clusters,
    /// `GET /meshkit/versions`.
    Versions,
    /// `GET /meshkit/leaders`.
    Leaders,
}

impl ApiEndpoint {
    /// Every endpoint, the default list.
    pub const ALL: [Self; 5] = [
        Self::Peers,
        Self::Shards,
        Self::Clusters,
        Self::Versions,
        Self::Leaders,
    ];

    /// Its name in the file and in probe names.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Peers => "peers",
            Self::Shards => "shards",
            Self::Clusters => "clusters",
            Self::Versions => "versions",
            Self::Leaders => "leaders",
        }
    }

    /// The path it reads.
    pub fn path(self) -> &'static str {
        match self {
            Self::Peers => "/meshkit/peers",
            Self::Shards => "/meshkit/shards",
            Self::Clusters => "/meshkit/clusters",
            Self::Versions => "/meshkit/versions",
            Self::Leaders => "/meshkit/leaders",
        }
    }
}

/// A watch stream.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum WatchStream {
    /// The leadership feed (`/control/events/leadership`, `WatchLeadership`).
    Leadership,
    /// The shard feed (`/control/events/shards`, `WatchShards`).
    Shards,
}

impl WatchStream {
    /// Its name in the file and in probe names.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Leadership => "leadership",
            Self::Shards => "shards",
        }
    }

    /// The SSE path.
    pub fn path(self) -> &'static str {
        match self {
            Self::Leadership => "/control/events/leadership",
            Self::Shards => "/control/events/shards",
        }
    }
}

/// Timing and thresholds, as the core's probe scheduler takes them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Timing {
    /// From one run's start to the next's.
    pub interval: Duration,
    /// How long a run may take.
    pub timeout: Duration,
    /// Failures in a row to Failing.
    pub failure_threshold: u32,
    /// Passes in a row back to Healthy.
    pub success_threshold: u32,
    /// Passes slower than this count toward Degraded.
    pub latency_threshold: Option<Duration>,
    /// Whether Degraded alerts as well as Failing.
    pub alert_on_latency: bool,
}

impl Default for Timing {
    fn default() -> Self {
        Self {
            interval: Duration::from_secs(10),
            timeout: Duration::from_secs(2),
            failure_threshold: 3,
            success_threshold: 2,
            latency_threshold: None,
            alert_on_latency: false,
        }
    }
}

/// `[defaults]` as written (and the same keys in a group).
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
#[expect(missing_docs, reason = "the module docs describe each key")]
pub struct RawTiming {
    pub interval: Option<String>,
    pub timeout: Option<String>,
    pub failure_threshold: Option<u32>,
    pub success_threshold: Option<u32>,
    pub latency_threshold: Option<String>,
    pub alert_on_latency: Option<bool>,
}

fn duration(key: String, text: &str) -> Result<Duration, ConfigError> {
    parse_duration(text).map_err(|e| ConfigError::new(key, e.to_string()))
}

impl RawTiming {
    /// Checks every key under `prefix`, with `base` for what is absent.
    ///
    /// # Errors
    ///
    /// [`ConfigError`] naming the key.
    pub fn validate(self, prefix: &str, base: &Timing) -> Result<Timing, ConfigError> {
        let key = |k: &str| format!("{prefix}.{k}");
        let interval = match &self.interval {
            Some(t) => duration(key("interval"), t)?,
            None => base.interval,
        };
        if !(MIN_INTERVAL..=MAX_INTERVAL).contains(&interval) {
            return Err(ConfigError::new(
                key("interval"),
                format!("{interval:?}: expected 10ms to 1h"),
            ));
        }
        let timeout = match &self.timeout {
            Some(t) => duration(key("timeout"), t)?,
            // A shorter interval than the inherited timeout brings the timeout down with it.
            None => base.timeout.min(interval),
        };
        if timeout < MIN_TIMEOUT || timeout > interval {
            return Err(ConfigError::new(
                key("timeout"),
                format!(
                    "{timeout:?}: expected 1ms up to the interval ({interval:?}): one run ends \
                     before the next is due"
                ),
            ));
        }
        let threshold = |name: &str, v: Option<u32>, d: u32| {
            let v = v.unwrap_or(d);
            if (1..=MAX_THRESHOLD).contains(&v) {
                Ok(v)
            } else {
                Err(ConfigError::new(
                    key(name),
                    format!("{v}: expected 1 to {MAX_THRESHOLD}"),
                ))
            }
        };
        let failure_threshold = threshold(
            "failure_threshold",
            self.failure_threshold,
            base.failure_threshold,
        )?;
        let success_threshold = threshold(
            "success_threshold",
            self.success_threshold,
            base.success_threshold,
        )?;
        let latency_threshold = match &self.latency_threshold {
            Some(t) => Some(duration(key("latency_threshold"), t)?),
            None => base.latency_threshold,
        };
        if let Some(l) = latency_threshold
            && (l.is_zero() || l >= timeout)
        {
            return Err(ConfigError::new(
                key("latency_threshold"),
                format!("{l:?}: expected more than 0 and less than the timeout ({timeout:?})"),
            ));
        }
        Ok(Timing {
            interval,
            timeout,
            failure_threshold,
            success_threshold,
            latency_threshold,
            alert_on_latency: self.alert_on_latency.unwrap_or(base.alert_on_latency),
        })
    }
}

/// Where a group's targets come from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Targets {
    /// These control addresses (`host:port`).
    Static(Vec<String>),
    /// Every member's control address, from this node's `GET /meshkit/peers` (the `control`
    /// metadata each node publishes), read at start and on every reload.
    Discover(String),
}

/// `[group.api]`, validated.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ApiOptions {
    /// The endpoints checked, one probe each.
    pub endpoints: Vec<ApiEndpoint>,
    /// `peers`: at least this many members alive.
    pub min_alive: usize,
    /// `versions`: more than one software version is allowed (a rollout is under way).
    pub rollout: bool,
}

/// `[group.watch]`, validated.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WatchOptions {
    /// The streams watched.
    pub streams: Vec<WatchStream>,
    /// The node's keep-alive cadence.
    pub heartbeat: Duration,
    /// How late a heartbeat may be.
    pub tolerance: Duration,
    /// How often the probe reconnects on purpose, resuming with the last event id.
    pub resume_every: Duration,
    /// Watch over server-sent events.
    pub sse: bool,
    /// Watch over gRPC as well.
    pub grpc: bool,
}

/// `[group.transport]`, validated.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TransportOptions {
    /// The request sent over each protocol.
    pub path: String,
    /// Whether the node's `mesh_transport_control_requests_total` must move with each request.
    pub counters: bool,
}

/// One `[[group]]`, validated.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GroupConfig {
    /// Its name (`group` label).
    pub name: String,
    /// `cluster` label.
    pub cluster: String,
    /// `namespace` label.
    pub namespace: String,
    /// The nodes probed.
    pub targets: Targets,
    /// The probe types run against every target, in [`ProbeType::ALL`] order.
    pub probes: Vec<ProbeType>,
    /// Timing and thresholds.
    pub timing: Timing,
    /// `api` options.
    pub api: ApiOptions,
    /// `watch` options.
    pub watch: WatchOptions,
    /// `transport` options.
    pub transport: TransportOptions,
}

impl GroupConfig {
    /// Probes per target.
    pub fn probes_per_target(&self) -> usize {
        self.probes
            .iter()
            .map(|t| match t {
                ProbeType::Api => self.api.endpoints.len(),
                ProbeType::Authz => 1,
                ProbeType::Watch => {
                    self.watch.streams.len()
                        * (usize::from(self.watch.sse) + usize::from(self.watch.grpc))
                }
                ProbeType::Transport => 2,
            })
            .sum()
    }

    /// Probes of the group (a discovered group counts one target until discovered).
    pub fn probe_count(&self) -> usize {
        let targets = match &self.targets {
            Targets::Static(t) => t.len(),
            Targets::Discover(_) => 1,
        };
        targets * self.probes_per_target()
    }
}

/// `[[group]]` as written.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
#[expect(missing_docs, reason = "the module docs describe each key")]
pub struct RawGroup {
    pub name: Option<String>,
    pub cluster: Option<String>,
    pub namespace: Option<String>,
    pub targets: Option<Vec<String>>,
    pub discover: Option<String>,
    pub probes: Option<Vec<String>>,
    pub interval: Option<String>,
    pub timeout: Option<String>,
    pub failure_threshold: Option<u32>,
    pub success_threshold: Option<u32>,
    pub latency_threshold: Option<String>,
    pub alert_on_latency: Option<bool>,
    /// `[group.api]`, read into [`RawApi`] under its own key (so an error names it).
    pub api: Option<toml::Value>,
    /// `[group.watch]`, read into [`RawWatch`].
    pub watch: Option<toml::Value>,
    /// `[group.transport]`, read into [`RawTransport`].
    pub transport: Option<toml::Value>,
}

/// `[group.api]` as written.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
#[expect(missing_docs, reason = "the module docs describe each key")]
pub struct RawApi {
    pub endpoints: Option<Vec<String>>,
    pub min_alive: Option<u32>,
    pub rollout: Option<bool>,
}

/// `[group.watch]` as written.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
#[expect(missing_docs, reason = "the module docs describe each key")]
pub struct RawWatch {
    pub streams: Option<Vec<String>>,
    pub heartbeat: Option<String>,
    pub tolerance: Option<String>,
    pub resume_every: Option<String>,
    pub sse: Option<bool>,
    pub grpc: Option<bool>,
}

/// `[group.transport]` as written.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
#[expect(missing_docs, reason = "the module docs describe each key")]
pub struct RawTransport {
    pub path: Option<String>,
    pub counters: Option<bool>,
}

/// A group's sub-table in its serde form, errors under `key`.
fn sub<T: serde::de::DeserializeOwned>(
    v: Option<toml::Value>,
    key: &str,
) -> Result<Option<T>, ConfigError> {
    v.map(|v| super::value(v, key)).transpose()
}

/// `host:port` with a numeric port.
fn check_address(key: &str, text: &str) -> Result<(), ConfigError> {
    let ok = text
        .rsplit_once(':')
        .is_some_and(|(host, port)| !host.is_empty() && port.parse::<u16>().is_ok_and(|p| p > 0));
    if ok {
        Ok(())
    } else {
        Err(ConfigError::new(
            key,
            format!("{text:?}: expected a control address host:port, such as \"10.0.0.1:7443\""),
        ))
    }
}

/// Names from `list` parsed by `parse`, without repeats.
fn names<T: Copy + PartialEq>(
    key: &str,
    list: &[String],
    parse: impl Fn(&str) -> Option<T>,
    allowed: &str,
) -> Result<Vec<T>, ConfigError> {
    if list.is_empty() {
        return Err(ConfigError::new(
            key,
            format!("empty: name at least one of {allowed}"),
        ));
    }
    let mut out: Vec<T> = Vec::new();
    for (i, name) in list.iter().enumerate() {
        let item = parse(name).ok_or_else(|| {
            ConfigError::new(
                format!("{key}[{i}]"),
                format!("{name:?}: expected one of {allowed}"),
            )
        })?;
        if out.contains(&item) {
            return Err(ConfigError::new(
                format!("{key}[{i}]"),
                format!("{name:?} is listed twice"),
            ));
        }
        out.push(item);
    }
    Ok(out)
}

/// Checks every group against the defaults; names unique, probes within [`MAX_PROBES`].
pub(super) fn validate_groups(
    raw: Vec<RawGroup>,
    defaults: &Timing,
) -> Result<Vec<GroupConfig>, ConfigError> {
    if raw.is_empty() {
        return Err(ConfigError::new(
            "group",
            "missing: at least one [[group]] of targets",
        ));
    }
    if raw.len() > MAX_GROUPS {
        return Err(ConfigError::new(
            "group",
            format!("{} groups: at most {MAX_GROUPS}", raw.len()),
        ));
    }
    let mut groups: Vec<GroupConfig> = Vec::new();
    let mut seen = BTreeSet::new();
    for (i, g) in raw.into_iter().enumerate() {
        let group = g.validate(&format!("group[{i}]"), defaults)?;
        if !seen.insert(group.name.clone()) {
            return Err(ConfigError::new(
                format!("group[{i}].name"),
                format!("{:?}: another group has this name", group.name),
            ));
        }
        groups.push(group);
    }
    let total: usize = groups.iter().map(GroupConfig::probe_count).sum();
    if total > MAX_PROBES {
        return Err(ConfigError::new(
            "group",
            format!(
                "{total} probes: one agent runs at most {MAX_PROBES}; split the groups over a fleet"
            ),
        ));
    }
    Ok(groups)
}

impl RawGroup {
    fn validate(self, prefix: &str, defaults: &Timing) -> Result<GroupConfig, ConfigError> {
        let key = |k: &str| format!("{prefix}.{k}");
        let name = self
            .name
            .ok_or_else(|| ConfigError::new(key("name"), "missing"))?;
        check_label(&key("name"), &name)?;
        let cluster = self.cluster.ok_or_else(|| {
            ConfigError::new(key("cluster"), "missing: the cluster the targets belong to")
        })?;
        check_label(&key("cluster"), &cluster)?;
        let namespace = self.namespace.unwrap_or_else(|| "default".to_owned());
        check_label(&key("namespace"), &namespace)?;
        let targets = match (self.targets, self.discover) {
            (Some(list), None) => {
                if list.is_empty() {
                    return Err(ConfigError::new(
                        key("targets"),
                        "empty: list at least one control address",
                    ));
                }
                if list.len() > MAX_TARGETS_PER_GROUP {
                    return Err(ConfigError::new(
                        key("targets"),
                        format!("{} targets: at most {MAX_TARGETS_PER_GROUP}", list.len()),
                    ));
                }
                for (i, t) in list.iter().enumerate() {
                    let k = format!("{prefix}.targets[{i}]");
                    check_address(&k, t)?;
                    if list[..i].contains(t) {
                        return Err(ConfigError::new(k, format!("{t:?} is listed twice")));
                    }
                }
                Targets::Static(list)
            }
            (None, Some(seed)) => {
                check_address(&key("discover"), &seed)?;
                Targets::Discover(seed)
            }
            (Some(_), Some(_)) => {
                return Err(ConfigError::new(
                    key("discover"),
                    "give either targets or discover, not both",
                ));
            }
            (None, None) => {
                return Err(ConfigError::new(
                    key("targets"),
                    "missing: list control addresses, or discover = \"host:port\"",
                ));
            }
        };
        let mut probes = names(
            &key("probes"),
            &self.probes.unwrap_or_default(),
            |n| ProbeType::ALL.into_iter().find(|t| t.as_str() == n),
            "api, authz, watch, transport",
        )?;
        probes.sort();
        let timing = RawTiming {
            interval: self.interval,
            timeout: self.timeout,
            failure_threshold: self.failure_threshold,
            success_threshold: self.success_threshold,
            latency_threshold: self.latency_threshold,
            alert_on_latency: self.alert_on_latency,
        }
        .validate(prefix, defaults)?;

        let api: RawApi = sub(self.api, &key("api"))?.unwrap_or_default();
        let endpoints = match api.endpoints {
            None => ApiEndpoint::ALL.to_vec(),
            Some(list) => names(
                &key("api.endpoints"),
                &list,
                |n| ApiEndpoint::ALL.into_iter().find(|e| e.as_str() == n),
                "peers, shards, clusters, versions, leaders",
            )?,
        };
        let min_alive = api.min_alive.unwrap_or(1);
        if min_alive == 0 {
            return Err(ConfigError::new(
                key("api.min_alive"),
                "0: expected at least 1 (the node itself)",
            ));
        }
        let api = ApiOptions {
            endpoints,
            min_alive: min_alive as usize,
            rollout: api.rollout.unwrap_or(false),
        };

        let watch: RawWatch = sub(self.watch, &key("watch"))?.unwrap_or_default();
        let streams = match watch.streams {
            None => vec![WatchStream::Leadership, WatchStream::Shards],
            Some(list) => names(
                &key("watch.streams"),
                &list,
                |n| {
                    [WatchStream::Leadership, WatchStream::Shards]
                        .into_iter()
                        .find(|s| s.as_str() == n)
                },
                "leadership, shards",
            )?,
        };
        let heartbeat = match &watch.heartbeat {
            Some(t) => duration(key("watch.heartbeat"), t)?,
            None => Duration::from_secs(5),
        };
        if heartbeat < Duration::from_millis(100) || heartbeat > MAX_INTERVAL {
            return Err(ConfigError::new(
                key("watch.heartbeat"),
                format!("{heartbeat:?}: expected 100ms to 1h"),
            ));
        }
        let tolerance = match &watch.tolerance {
            Some(t) => duration(key("watch.tolerance"), t)?,
            None => Duration::from_secs(2),
        };
        if tolerance > MAX_INTERVAL {
            return Err(ConfigError::new(
                key("watch.tolerance"),
                format!("{tolerance:?}: expected at most 1h"),
            ));
        }
        let resume_every = match &watch.resume_every {
            Some(t) => duration(key("watch.resume_every"), t)?,
            None => Duration::from_secs(30),
        };
        if resume_every < heartbeat + tolerance || resume_every > Duration::from_secs(24 * 3600) {
            return Err(ConfigError::new(
                key("watch.resume_every"),
                format!(
                    "{resume_every:?}: expected at least heartbeat + tolerance ({:?}, so a \
                     heartbeat can be seen between reconnects) and at most 24h",
                    heartbeat + tolerance
                ),
            ));
        }
        let sse = watch.sse.unwrap_or(true);
        let grpc = watch.grpc.unwrap_or(false);
        if probes.contains(&ProbeType::Watch) && !sse && !grpc {
            return Err(ConfigError::new(
                key("watch.sse"),
                "false with grpc false: nothing to watch",
            ));
        }
        let watch = WatchOptions {
            streams,
            heartbeat,
            tolerance,
            resume_every,
            sse,
            grpc,
        };

        let transport: RawTransport = sub(self.transport, &key("transport"))?.unwrap_or_default();
        let path = transport
            .path
            .unwrap_or_else(|| "/meshkit/peers".to_owned());
        if !path.starts_with('/')
            || path.len() > 1024
            || path.bytes().any(|b| b.is_ascii_control() || b == b' ')
        {
            return Err(ConfigError::new(
                key("transport.path"),
                format!("{path:?}: expected a path starting with '/', without spaces"),
            ));
        }
        let transport = TransportOptions {
            path,
            counters: transport.counters.unwrap_or(true),
        };
        Ok(GroupConfig {
            name,
            cluster,
            namespace,
            targets,
            probes,
            timing,
            api,
            watch,
            transport,
        })
    }
}
