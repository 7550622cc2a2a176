//! The node's own health probes and the `[probes]` section of `node.toml`.
//!
//! Every node runs a probe host ([`meshkit_runtime::probe_host`]); [`start`](crate::node::start)
//! registers the built-in probes below on it through the same open registration a service uses
//! ([`ProbeHandle::register_async`]), so they show in `GET /control/probes` and the
//! `mesh_probe_*` metrics beside the service's own:
//!
//! | name | kind | passes when | registered |
//! | --- | --- | --- | --- |
//! | `quorum` | `quorum` | a majority of the Raft voters is alive in this node's view | with `[leadership]` |
//! | `raft-leader` | `raft-leader` | this node's voter knows a Raft leader | on a voter |
//! | `peers` | `peers` | at least `peers_min_percent` of the other members (left ones aside) are alive | always |
//! | `cert-expiry` | `cert-expiry` | the node's certificate has at least `cert_min_days` left | always |
//! | `control-h3` | `http` | `GET /healthz` on the node's own control listener answers 200 over HTTP/3 | with `control` |
//! | `control-h2` | `http` | the same over HTTP/2 (TLS over TCP) | with `control` |
//!
//! ```toml
//! [probes]
//! builtins = true             # default true: register the built-ins above
//! disable = ["control-h3"]    # built-ins to leave out, by name
//! interval = "5s"             # the built-ins' interval (default 5s, 10ms..=1h)
//! control_interval = "15s"    # control-h3's and control-h2's (default 15s, 10ms..=1h)
//! timeout = "2s"              # their timeout (default 2s, at most either interval)
//! failure_threshold = 3       # consecutive failures to Failing (default 3, 1..=100)
//! success_threshold = 2       # consecutive passes back (default 2, 1..=100)
//! cert_min_days = 14          # cert-expiry fails with fewer days left (default 14, 0..=3650)
//! peers_min_percent = 100     # peers fails below this share alive (default 100, 1..=100)
//! ```

use std::net::SocketAddr;
use std::sync::Arc;

use meshkit::config::{ConfigError, HumanDuration};
use meshkit::diag::probe::{ProbeSpec, ProbeSpecError, ProbeTags, RawProbeSpec};
use meshkit::membership::MemberState;
use meshkit_client::{Client, ClientConfig, Protocols};
use meshkit_net::tls::TlsFiles;
use meshkit_runtime::driver::{NodeHandle, Snapshot};
use meshkit_runtime::probe_host::{
    AsyncProbe, CheckFuture, ProbeFailure, ProbeHandle, ProbeRegisterError,
};
use serde::Deserialize;

use crate::config::NodeConfigError;

/// The built-ins' interval when `interval` is absent.
pub const DEFAULT_INTERVAL: std::time::Duration = std::time::Duration::from_secs(5);
/// `control-h3`'s and `control-h2`'s interval when `control_interval` is absent. Longer than the
/// others': they are the only built-ins that use the network (a request over TLS through the
/// node's own listener on each protocol, where the others read the node's state in process),
/// and every 5 s they were about 40% of an idle node's loopback bytes and a fifth of its CPU
/// (docs/benchmarks.md, "Side by side on an idle machine"). A wedged listener is still reported
/// within `15 s x failure_threshold + timeout` (47 s by default).
pub const DEFAULT_CONTROL_INTERVAL: std::time::Duration = std::time::Duration::from_secs(15);
/// Their timeout when `timeout` is absent.
pub const DEFAULT_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(2);
/// `cert_min_days` when absent.
pub const DEFAULT_CERT_MIN_DAYS: u32 = 14;
/// The largest `cert_min_days`: ten years.
pub const MAX_CERT_MIN_DAYS: u32 = 3650;
/// `peers_min_percent` when absent: every other member alive.
pub const DEFAULT_PEERS_MIN_PERCENT: u32 = 100;
/// The label every built-in carries (`source=node`), to filter them (`?tag=source=node`).
pub const SOURCE_LABEL: (&str, &str) = ("source", "node");

/// The built-ins, by name.
pub const BUILTINS: [&str; 6] = [
    "quorum",
    "raft-leader",
    "peers",
    "cert-expiry",
    "control-h3",
    "control-h2",
];

/// The serde form of `[probes]`.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
#[expect(missing_docs, reason = "the module docs describe each key")]
pub struct RawProbesConfig {
    pub builtins: Option<bool>,
    #[serde(default)]
    pub disable: Vec<String>,
    pub interval: Option<HumanDuration>,
    pub control_interval: Option<HumanDuration>,
    pub timeout: Option<HumanDuration>,
    pub failure_threshold: Option<u32>,
    pub success_threshold: Option<u32>,
    pub cert_min_days: Option<u32>,
    pub peers_min_percent: Option<u32>,
}

/// A validated `[probes]` section.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProbesConfig {
    /// The built-ins to register (those of [`BUILTINS`] neither disabled nor off).
    pub enabled: Vec<&'static str>,
    /// The timing and thresholds every built-in gets (its name aside).
    pub template: RawProbeSpecTemplate,
    /// The same for `control-h3` and `control-h2`, at `control_interval`.
    pub control_template: RawProbeSpecTemplate,
    /// `cert_min_days`.
    pub cert_min_days: u32,
    /// `peers_min_percent`.
    pub peers_min_percent: u32,
}

/// The timing and thresholds of the built-ins, checked as a [`ProbeSpec`] would check them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RawProbeSpecTemplate {
    interval: std::time::Duration,
    timeout: std::time::Duration,
    failure_threshold: u32,
    success_threshold: u32,
}

impl RawProbeSpecTemplate {
    fn of(spec: &ProbeSpec) -> Self {
        Self {
            interval: spec.interval(),
            timeout: spec.timeout(),
            failure_threshold: spec.failure_threshold(),
            success_threshold: spec.success_threshold(),
        }
    }

    /// The spec of the built-in `name`, tagged with `cluster` when it is a valid tag.
    fn spec(&self, name: &str, cluster: Option<&str>) -> Result<ProbeSpec, ProbeSpecError> {
        let mut tags = ProbeTags::default();
        tags.labels
            .insert(SOURCE_LABEL.0.to_owned(), SOURCE_LABEL.1.to_owned());
        let raw = |tags| RawProbeSpec {
            name: name.to_owned(),
            tags,
            interval: Some(HumanDuration(self.interval)),
            timeout: Some(HumanDuration(self.timeout)),
            failure_threshold: Some(self.failure_threshold),
            success_threshold: Some(self.success_threshold),
            ..RawProbeSpec::default()
        };
        let Some(cluster) = cluster else {
            return ProbeSpec::try_from(raw(tags));
        };
        let mut with_cluster = tags.clone();
        with_cluster.cluster = Some(cluster.to_owned());
        // A cluster name that is not a valid tag (upper case, say) is left off, not an error.
        ProbeSpec::try_from(raw(with_cluster)).or_else(|_| ProbeSpec::try_from(raw(tags)))
    }
}

impl Default for ProbesConfig {
    fn default() -> Self {
        // The defaults are valid by construction.
        let template = |interval| RawProbeSpecTemplate {
            interval,
            timeout: DEFAULT_TIMEOUT,
            failure_threshold: 3,
            success_threshold: 2,
        };
        Self::try_from(RawProbesConfig::default()).unwrap_or(Self {
            enabled: Vec::new(),
            template: template(DEFAULT_INTERVAL),
            control_template: template(DEFAULT_CONTROL_INTERVAL),
            cert_min_days: DEFAULT_CERT_MIN_DAYS,
            peers_min_percent: DEFAULT_PEERS_MIN_PERCENT,
        })
    }
}

impl TryFrom<RawProbesConfig> for ProbesConfig {
    type Error = NodeConfigError;

    fn try_from(raw: RawProbesConfig) -> Result<Self, NodeConfigError> {
        for (i, name) in raw.disable.iter().enumerate() {
            if !BUILTINS.contains(&name.as_str()) {
                return Err(NodeConfigError::Invalid {
                    key: format!("probes.disable[{i}]"),
                    value: name.clone(),
                    expected: "a built-in probe: quorum, raft-leader, peers, cert-expiry, \
                               control-h3 or control-h2",
                });
            }
        }
        // The core's checks, on a spec of these values: its errors name the field.
        let timing = |interval: HumanDuration, interval_key: &'static str| {
            ProbeSpec::try_from(RawProbeSpec {
                name: "probes".to_owned(),
                interval: Some(interval),
                // A shorter interval than the default timeout brings the timeout down with it.
                timeout: raw
                    .timeout
                    .or(Some(HumanDuration(DEFAULT_TIMEOUT.min(interval.0)))),
                failure_threshold: raw.failure_threshold,
                success_threshold: raw.success_threshold,
                ..RawProbeSpec::default()
            })
            .map_err(|e| match e {
                ProbeSpecError::Range(e) => {
                    NodeConfigError::Probes(rename_interval(e, interval_key))
                }
                other => NodeConfigError::Invalid {
                    key: "probes".to_owned(),
                    value: other.to_string(),
                    expected: "valid probe timing",
                },
            })
        };
        let spec = timing(
            raw.interval.unwrap_or(HumanDuration(DEFAULT_INTERVAL)),
            "interval",
        )?;
        let control = timing(
            raw.control_interval
                .unwrap_or(HumanDuration(DEFAULT_CONTROL_INTERVAL)),
            "control_interval",
        )?;
        let cert_min_days = raw.cert_min_days.unwrap_or(DEFAULT_CERT_MIN_DAYS);
        if cert_min_days > MAX_CERT_MIN_DAYS {
            return Err(NodeConfigError::Probes(ConfigError::OutOfRange {
                field: "cert_min_days",
                value: u64::from(cert_min_days),
                min: 0,
                max: u64::from(MAX_CERT_MIN_DAYS),
            }));
        }
        let peers_min_percent = raw.peers_min_percent.unwrap_or(DEFAULT_PEERS_MIN_PERCENT);
        if !(1..=100).contains(&peers_min_percent) {
            return Err(NodeConfigError::Probes(ConfigError::OutOfRange {
                field: "peers_min_percent",
                value: u64::from(peers_min_percent),
                min: 1,
                max: 100,
            }));
        }
        let enabled = if raw.builtins.unwrap_or(true) {
            BUILTINS
                .into_iter()
                .filter(|b| !raw.disable.iter().any(|d| d == b))
                .collect()
        } else {
            Vec::new()
        };
        Ok(Self {
            enabled,
            template: RawProbeSpecTemplate::of(&spec),
            control_template: RawProbeSpecTemplate::of(&control),
            cert_min_days,
            peers_min_percent,
        })
    }
}

/// `error` as the key it is about is written: the control probes' timing is checked as a spec
/// whose `interval` is `control_interval`, so its interval error names that key, and its
/// timeout error says which interval bounds the timeout.
fn rename_interval(error: ConfigError, key: &'static str) -> ConfigError {
    let field = |field| match (field, key) {
        ("interval", _) => key,
        ("timeout", "control_interval") => "timeout (at most control_interval)",
        (other, _) => other,
    };
    match error {
        ConfigError::DurationOutOfRange {
            field: f,
            value_ms,
            min_ms,
            max_ms,
        } => ConfigError::DurationOutOfRange {
            field: field(f),
            value_ms,
            min_ms,
            max_ms,
        },
        other => other,
    }
}

/// What the built-ins need of the node beyond its handle.
#[derive(Debug)]
pub(crate) struct BuiltinContext {
    /// Whether the node runs leadership, and a voter.
    pub leadership: bool,
    /// Whether this node is a voter.
    pub voter: bool,
    /// The control listener and the TLS files to call it with.
    pub control: Option<(SocketAddr, TlsFiles)>,
    /// The node's declared cluster.
    pub cluster: Option<String>,
}

/// Registers the enabled built-ins that apply to this node. A control probe whose client cannot
/// be built (unreadable CA) is registered as failing with that reason rather than left out.
pub(crate) async fn register_builtins(
    probes: &ProbeHandle,
    node: &NodeHandle,
    config: &ProbesConfig,
    ctx: BuiltinContext,
) -> Result<(), ProbeRegisterError> {
    let cluster = ctx.cluster.as_deref();
    for name in &config.enabled {
        // The templates were checked when the configuration was: a spec from one is valid.
        let template = if name.starts_with("control-") {
            &config.control_template
        } else {
            &config.template
        };
        let Ok(spec) = template.spec(name, cluster) else {
            continue;
        };
        let node = node.clone();
        match *name {
            "quorum" if ctx.leadership => {
                probes
                    .register_async(spec, SnapshotProbe::quorum(node))
                    .await?;
            }
            "raft-leader" if ctx.voter => {
                probes
                    .register_async(spec, SnapshotProbe::raft_leader(node))
                    .await?;
            }
            "peers" => {
                probes
                    .register_async(spec, SnapshotProbe::peers(node, config.peers_min_percent))
                    .await?;
            }
            "cert-expiry" => {
                probes
                    .register_async(spec, SnapshotProbe::cert(node, config.cert_min_days))
                    .await?;
            }
            "control-h3" | "control-h2" => {
                if let Some((addr, files)) = &ctx.control {
                    let protocols = if *name == "control-h3" {
                        Protocols::H3Only
                    } else {
                        Protocols::TcpOnly
                    };
                    let probe = ControlProbe::new(*addr, files, protocols, spec.timeout());
                    probes.register_async(spec, probe).await?;
                }
            }
            _ => {}
        }
    }
    Ok(())
}

/// What a [`SnapshotProbe`] checks in the node's snapshot.
#[derive(Clone, Copy, Debug)]
enum SnapshotCheck {
    Quorum,
    RaftLeader,
    Peers { min_percent: u32 },
    Cert { min_days: u32 },
}

/// A built-in that reads the node's own view (one driver snapshot per run).
#[derive(Clone, Debug)]
pub struct SnapshotProbe {
    node: NodeHandle,
    check: SnapshotCheck,
}

impl SnapshotProbe {
    fn quorum(node: NodeHandle) -> Self {
        Self {
            node,
            check: SnapshotCheck::Quorum,
        }
    }
    fn raft_leader(node: NodeHandle) -> Self {
        Self {
            node,
            check: SnapshotCheck::RaftLeader,
        }
    }
    fn peers(node: NodeHandle, min_percent: u32) -> Self {
        Self {
            node,
            check: SnapshotCheck::Peers { min_percent },
        }
    }
    fn cert(node: NodeHandle, min_days: u32) -> Self {
        Self {
            node,
            check: SnapshotCheck::Cert { min_days },
        }
    }
}

impl AsyncProbe for SnapshotProbe {
    fn kind(&self) -> &str {
        match self.check {
            SnapshotCheck::Quorum => "quorum",
            SnapshotCheck::RaftLeader => "raft-leader",
            SnapshotCheck::Peers { .. } => "peers",
            SnapshotCheck::Cert { .. } => "cert-expiry",
        }
    }

    fn check(&self) -> CheckFuture {
        let node = self.node.clone();
        let check = self.check;
        Box::pin(async move {
            let snapshot = node
                .snapshot()
                .await
                .map_err(|_| ProbeFailure::new("the node's driver has stopped"))?;
            let unix_now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX));
            judge(check, &snapshot, unix_now)
        })
    }
}

/// The verdict of a snapshot check (pure, so the unit tests feed it snapshots).
fn judge(check: SnapshotCheck, s: &Snapshot, unix_now: i64) -> Result<(), ProbeFailure> {
    match check {
        SnapshotCheck::Quorum => {
            let Some((view, _)) = &s.leadership else {
                return Err(ProbeFailure::new("this node runs no leadership"));
            };
            let voters: Vec<u64> = match &view.raft {
                Some(raft) => raft.voters.clone(),
                None => view.voters.clone(),
            };
            let alive = voters
                .iter()
                .filter(|v| {
                    s.peer(meshkit::NodeId::new(**v))
                        .is_some_and(|p| p.state == MemberState::Alive)
                })
                .count();
            let majority = voters.len() / 2 + 1;
            if alive >= majority {
                Ok(())
            } else {
                Err(ProbeFailure::new(format!(
                    "{alive} of {} voters alive in this node's view: a quorum needs {majority}",
                    voters.len()
                )))
            }
        }
        SnapshotCheck::RaftLeader => {
            match s.leadership.as_ref().and_then(|(v, _)| v.raft.as_ref()) {
                Some(raft) if raft.leader.is_some() => Ok(()),
                Some(raft) => Err(ProbeFailure::new(format!(
                    "no Raft leader known in term {}",
                    raft.term
                ))),
                None => Err(ProbeFailure::new("this node runs no Raft voter")),
            }
        }
        SnapshotCheck::Peers { min_percent } => {
            let others: Vec<_> = s
                .peers
                .iter()
                .filter(|p| p.id != s.local_id && p.state != MemberState::Left)
                .collect();
            if others.is_empty() {
                // A node alone (not told to join) reaches every peer it has; one that joined
                // and sees nobody does not.
                return if s.joined {
                    Err(ProbeFailure::new("joined through seeds, but knows no peer"))
                } else {
                    Ok(())
                };
            }
            let alive = others
                .iter()
                .filter(|p| p.state == MemberState::Alive)
                .count();
            // alive / others >= min_percent / 100, in integers.
            if alive * 100 >= others.len() * min_percent as usize {
                Ok(())
            } else {
                let down: Vec<String> = others
                    .iter()
                    .filter(|p| p.state != MemberState::Alive)
                    .take(8)
                    .map(|p| format!("{}={}", p.id, p.state))
                    .collect();
                Err(ProbeFailure::new(format!(
                    "{alive} of {} peers alive, below {min_percent}%: {}",
                    others.len(),
                    down.join(", ")
                )))
            }
        }
        SnapshotCheck::Cert { min_days } => {
            let Some(not_after) = s.transport.tls.cert_not_after.or(s.cert_not_after) else {
                return Err(ProbeFailure::new(
                    "the node's certificate expiry is unknown",
                ));
            };
            let left = not_after.saturating_sub(unix_now) / 86_400;
            if left >= i64::from(min_days) {
                Ok(())
            } else {
                Err(ProbeFailure::new(format!(
                    "the certificate expires in {left} days, fewer than {min_days}"
                )))
            }
        }
    }
}

/// `GET /healthz` on the node's own control listener over one protocol.
pub struct ControlProbe {
    addr: String,
    client: Result<Arc<Client>, String>,
}

impl std::fmt::Debug for ControlProbe {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ControlProbe")
            .field("addr", &self.addr)
            .finish_non_exhaustive()
    }
}

impl ControlProbe {
    fn new(
        addr: SocketAddr,
        files: &TlsFiles,
        protocols: Protocols,
        timeout: std::time::Duration,
    ) -> Self {
        // The node's own certificate as the client's: /healthz needs none, but a listener
        // that requires client certificates gets one.
        let client = ClientConfig::new(&files.ca)
            .and_then(|c| c.with_identity(&files.cert, &files.key))
            .map(|c| {
                c.with_protocols(protocols)
                    .with_h3_timeout(timeout)
                    .with_connect_timeout(timeout)
                    .with_request_timeout(timeout)
            })
            .and_then(|c| Client::new(&c))
            .map(Arc::new)
            .map_err(|e| format!("the probe's client could not be built: {e}"));
        // A wildcard bind is called on loopback.
        let addr = if addr.ip().is_unspecified() {
            SocketAddr::new(
                if addr.is_ipv4() {
                    std::net::Ipv4Addr::LOCALHOST.into()
                } else {
                    std::net::Ipv6Addr::LOCALHOST.into()
                },
                addr.port(),
            )
        } else {
            addr
        };
        Self {
            addr: addr.to_string(),
            client,
        }
    }
}

impl AsyncProbe for ControlProbe {
    fn kind(&self) -> &str {
        "http"
    }

    fn check(&self) -> CheckFuture {
        let client = self.client.clone();
        let addr = self.addr.clone();
        Box::pin(async move {
            let client = client.map_err(ProbeFailure::new)?;
            let response = client
                .get(&addr, "/healthz")
                .await
                .map_err(|e| ProbeFailure::new(format!("GET /healthz: {e}")))?;
            if response.status == 200 {
                Ok(())
            } else {
                Err(ProbeFailure::new(format!(
                    "GET /healthz answered {} over {:?}",
                    response.status, response.protocol
                )))
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use meshkit::membership::Stats;
    use meshkit::{Duration, Incarnation, NodeId};
    use meshkit_net::transport::TransportStats;
    use meshkit_runtime::driver::{PeerInfo, Traffic};

    use super::*;

    fn snapshot(states: &[MemberState]) -> Snapshot {
        let peer = |i: usize, state| PeerInfo {
            id: NodeId::new(i as u64 + 1),
            state,
            incarnation: Incarnation::new(1),
            rtt: None,
            metadata: Default::default(),
            last_change_ago: Duration::ZERO,
            addr: None,
        };
        Snapshot {
            local_id: NodeId::new(1),
            peers: states
                .iter()
                .enumerate()
                .map(|(i, s)| peer(i, *s))
                .collect(),
            stats: Stats::default(),
            transport: TransportStats::default(),
            traffic: Traffic::default(),
            health_score: 0,
            leadership: None,
            draining: false,
            joined: true,
            cert_not_after: Some(100 * 86_400),
            queues: None,
            chaos: meshkit_runtime::chaos_host::ChaosStats::default(),
        }
    }

    /// A dead peer fails `peers` at 100% and passes at 50%; a left one does not count; the
    /// message names the member that is down.
    #[test]
    fn peers_counts_the_share_alive() {
        use MemberState::{Alive, Dead, Left};
        let s = snapshot(&[Alive, Alive, Dead, Left]);
        let err = judge(SnapshotCheck::Peers { min_percent: 100 }, &s, 0).unwrap_err();
        assert!(err.message().contains("1 of 2 peers alive"), "{err}");
        assert!(err.message().contains("node-3=dead"), "{err}");
        judge(SnapshotCheck::Peers { min_percent: 50 }, &s, 0).unwrap();
        judge(
            SnapshotCheck::Peers { min_percent: 100 },
            &snapshot(&[Alive, Alive, Left]),
            0,
        )
        .unwrap();
    }

    /// Days left against the threshold: 100 days pass 14, fail 101.
    #[test]
    fn cert_expiry_compares_days_left() {
        let s = snapshot(&[MemberState::Alive]);
        judge(SnapshotCheck::Cert { min_days: 14 }, &s, 0).unwrap();
        let err = judge(SnapshotCheck::Cert { min_days: 101 }, &s, 0).unwrap_err();
        assert!(err.message().contains("100 days"), "{err}");
        let err = judge(SnapshotCheck::Cert { min_days: 14 }, &s, 90 * 86_400).unwrap_err();
        assert!(err.message().contains("10 days"), "{err}");
    }

    /// Every `[probes]` error names its key under `probes.`.
    #[test]
    fn probes_config_errors_name_the_key() {
        let parse = |text: &str| {
            let raw: RawProbesConfig = toml::from_str(text).unwrap();
            ProbesConfig::try_from(raw).map_err(|e| e.to_string())
        };
        let ok = parse("").unwrap();
        assert_eq!(ok.enabled.len(), BUILTINS.len());
        assert_eq!(
            (ok.template.interval, ok.control_template.interval),
            (DEFAULT_INTERVAL, DEFAULT_CONTROL_INTERVAL)
        );
        let fast = parse("control_interval = \"1s\"").unwrap();
        assert_eq!(
            (
                fast.control_template.interval,
                fast.control_template.timeout
            ),
            (Duration::from_secs(1), Duration::from_secs(1)),
            "a control interval under the default timeout brings the timeout down with it"
        );
        assert_eq!(
            parse("disable = [\"peers\", \"control-h3\"]")
                .unwrap()
                .enabled,
            ["quorum", "raft-leader", "cert-expiry", "control-h2"]
        );
        assert!(parse("builtins = false").unwrap().enabled.is_empty());
        for (text, key) in [
            ("disable = [\"peers\", \"nope\"]", "probes.disable[1]"),
            ("interval = \"1ms\"", "probes.interval"),
            ("interval = \"1s\"\ntimeout = \"2s\"", "probes.timeout"),
            ("control_interval = \"2h\"", "probes.control_interval"),
            (
                "control_interval = \"1s\"\ntimeout = \"2s\"",
                "probes.timeout (at most control_interval) = 2000ms",
            ),
            ("failure_threshold = 0", "probes.failure_threshold"),
            ("success_threshold = 101", "probes.success_threshold"),
            ("cert_min_days = 4000", "probes.cert_min_days"),
            ("peers_min_percent = 0", "probes.peers_min_percent"),
        ] {
            let err = parse(text).unwrap_err();
            assert!(err.contains(key), "{text}: {err}");
        }
    }
}
