//! `node.toml`: what one `meshkitd` runs, parsed into a validated [`NodeConfig`].
//!
//! ```toml
//! id = 1                          # this node's id; its certificate must name node-1
//! listen = "127.0.0.1:7001"       # UDP address of the QUIC transport (port 0: any free port)
//! advertise = "127.0.0.1:7001"    # optional: the address peers dial (default: the bound one);
//!                                 # a host name (meshkit-1:7001) is resolved once at start
//! seeds = ["2@127.0.0.1:7002"]    # optional: id@ip:port or id@name:port of nodes to join
//!                                 # through; a name is resolved until it answers (compose, k8s)
//! profile = "lan"                 # optional: lan (default), wan or memberlist
//! control = "127.0.0.1:8001"      # optional: control API, TLS on TCP and HTTP/3 on UDP, one port
//!
//! [tls]                           # paths are relative to this file's directory
//! cert = "certs/node-1.pem"
//! key = "certs/node-1.key"
//! ca = "certs/ca.pem"
//! reload_interval = "2s"          # optional: how often the files are checked for a change
//!                                 # (default 2s, 100ms..=1h; "0s" turns reloading off)
//!
//! [membership]                    # optional overrides of the profile (meshkit RawConfig)
//! probe_interval = "500ms"
//!
//! [control_limits]                # optional: the control API's connection limits, per
//!                                 # listener (TCP, and QUIC); the defaults shown (docs/hosting.md)
//! max_connections = 1024          # connections in all, 1..=65536
//! reserved_authenticated = 256    # of them, only for CA-signed client certificates
//! max_handshakes = 128            # of them, in their TLS/QUIC handshake at once (at least 1;
//!                                 # reserved_authenticated + max_handshakes < max_connections:
//!                                 # the rest is the anonymous pool)
//! max_per_address = 16            # handshakes, and anonymous connections, from one IPv4
//!                                 # address or IPv6 /64 (1..=max_connections)
//! handshake_timeout = "10s"       # 1s..=60s
//! first_request_timeout = "10s"   # from the handshake to the first request, 1s..=10m
//! idle_timeout = "60s"            # with nothing in flight, 1s..=1h
//!
//! [access]                        # optional: who may call the control API (docs/hosting.md)
//! token_key = "certs/token-signing.pub"  # Ed25519 public key verifying bearer tokens
//! token_max_lifetime = "2160h"    # longest token lifetime accepted (the default, 90 days;
//!                                 # 1m..=8784h): exp - now and exp - iat
//! metrics_open = false            # true: /metrics needs no credential
//! nodes = ["mesh.observe"]        # scopes of node-<id> client certificates (the default)
//! audit_log = "audit.jsonl"       # operate/admin calls, one JSON line each
//! audit_log_max_bytes = 16777216  # rotate to audit.jsonl.1 past this size (the default)
//!
//! [access.identities]             # client certificate name -> scopes; others get none
//! meshctl-admin = ["mesh.admin"]
//! [metadata]                      # optional: published to every member (strings)
//! cluster = "eu-1"                # conventional keys: cluster, region (GET /meshkit/clusters)
//! region = "eu-west"
//!
//! [leadership]                    # optional: leases with fencing tokens
//! voters = [1, 2, 3]              # the Raft voters (1..=7 ids; 3 or 5 usual), same on every node
//! campaign = ["global-control"]   # optional: scopes this node contends for
//! ttl = "3s"                      # optional: TTL of the leases it asks for (default 3 s)
//! retry = "100ms"                 # optional: pause before asking again after a failure
//! data_dir = "raft"               # optional (voters): where the Raft log is kept, relative to
//!                                 # this file's directory; without it a voter keeps its Raft
//!                                 # state in memory and must be replaced, not restarted
//! join_as_voter = false           # optional: true on a node not in `voters` makes it a voter-to-be
//!                                 # of that group (empty log, never campaigns) that
//!                                 # `meshctl voters add` adds; with data_dir it restarts as
//!                                 # what it became
//!
//! [leadership.raft]               # optional overrides (meshkit RawLeaseConfig)
//! tick_interval = "50ms"
//!
//! [shards]                        # optional (needs [leadership]): shards owned through leases
//! namespaces = { orders = 16 }
//!
//! [queues]                        # optional (needs [shards]): a task queue per shard
//! data_dir = "queues"             # the replicas' checkpoints, relative to this file's directory
//!                                 # (required: an acknowledged item must survive a restart)
//! replicas = 1                    # replicas holding an item before its ack (default 1, 0..=8)
//! max_attempts = 5                # leases before an item is dead-lettered (default 5)
//! lease_timeout = "10s"           # a worker's lease without heartbeat (default 10s)
//! high_watermark = 1000           # backpressure active at pending >= 1000 (default: never)
//! low_watermark = 500             # inactive again at pending <= 500 (default high/2)
//! cooldown = "1s"                 # shortest time between two transitions (default 1s)
//! health_grace = "30s"            # a Dead/Left worker's items requeue after this (default 30s)
//! recovery_wait = "1s"            # a new owner's wait for the replicas' offers (default 1s)
//! request_timeout = "5s"          # a request's wait for its answer (default 5s)
//! max_items = 65536               # items per queue, tombstones included (default 65536)
//! ack_after = "sync"              # when a replica acknowledges what it applied: "sync" (its
//!                                 # checkpoint fdatasync'd; default) or "write" (written to
//!                                 # the page cache, the sync following: survives any process
//!                                 # kill, not an OS crash of every replica within the sync;
//!                                 # docs/task-queues.md)
//!
//! [chaos]                         # optional: chaos experiments on this node (docs/diagnostics.md)
//! enabled = false                 # off unless true: every experiment is refused
//! allowed_kinds = ["partition", "latency"]  # fault kinds taken (FaultKind names; default none)
//! max_duration = "10m"            # longest experiment taken (default 10m, at most 24h)
//! token_ttl = "60s"               # a plan's confirmation token is accepted this long
//!                                 # (default 60s, 1s..=10m)
//! stand_in_cert = "certs/node-1-expired.pem"  # optional: served by certificate-expiry (an
//!                                 # expired or expiring certificate for this node, from the CA)
//! stand_in_key = "certs/node-1.key"  # its key (default: tls.key)
//! [probes]                        # optional: the node's built-in health probes (all on by
//!                                 # default; meshkit_node::probes lists them)
//! disable = ["control-h3"]        # built-ins to leave out; builtins = false: none
//! interval = "5s"                 # the built-ins' interval (default 5s) and timeout (2s)
//! control_interval = "15s"        # control-h3's and control-h2's interval (default 15s)
//! cert_min_days = 14              # cert-expiry fails with fewer days left (default 14)
//! peers_min_percent = 100         # peers fails below this share of members alive
//! ```
//!
//! Unknown keys are refused with the list of allowed ones; every other error names its key.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use meshkit::NodeId;
use meshkit::config::{Config, ConfigError, HumanDuration, Profile, RawConfig};
use meshkit::lease::{LeaseConfig, MAX_VOTERS, RawLeaseConfig, Scope};
use serde::Deserialize;
use thiserror::Error;

use meshkit::diag::fault::{CUSTOM_KIND_PREFIX, MAX_FAULT_DURATION, check_custom_name};
use meshkit_control::admission::ConnectionLimits;
use meshkit_control::auth::{AccessConfig, AccessConfigError, RawAccessConfig};
use meshkit_net::peer_addr::PeerAddr;
use meshkit_net::tls::{TlsError, TlsFiles, TlsIdentity};
use meshkit_runtime::chaos_host::{
    ChaosConfig, DEFAULT_MAX_DURATION, DEFAULT_TOKEN_TTL, KIND_NAMES, MAX_TOKEN_TTL, MIN_TOKEN_TTL,
};
use meshkit_runtime::lease_host::LeadershipConfig;
use meshkit_runtime::queue_host::{AckAfter, QueuesConfig};

/// The core's queue error names its keys `queue.{key}` (the simulator's section); here the
/// section is `[queues]`.
fn queue_key(error: &meshkit::queue::QueueConfigError) -> String {
    let text = error.to_string();
    match text.strip_prefix("queue.") {
        Some(rest) => format!("queues.{rest}"),
        None => text,
    }
}

/// The serde form of `node.toml`.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
#[expect(missing_docs, reason = "the module docs describe each key")]
pub struct RawNodeConfig {
    pub id: u64,
    pub listen: String,
    pub advertise: Option<String>,
    #[serde(default)]
    pub seeds: Vec<String>,
    pub profile: Option<String>,
    pub control: Option<String>,
    pub seed: Option<u64>,
    pub tls: RawTlsConfig,
    pub membership: Option<RawConfig>,
    #[serde(default)]
    pub control_limits: RawControlLimits,
    #[serde(default)]
    pub access: RawAccessConfig,
    pub leadership: Option<RawLeadershipConfig>,
    pub shards: Option<meshkit::shard::RawShardConfig>,
    pub queues: Option<RawQueuesConfig>,
    pub probes: Option<crate::probes::RawProbesConfig>,
    #[serde(default)]
    pub chaos: RawChaosConfig,
    #[serde(default)]
    pub metadata: std::collections::BTreeMap<String, String>,
}

/// The `[chaos]` table.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
#[expect(missing_docs, reason = "the module docs describe each key")]
pub struct RawChaosConfig {
    #[serde(default)]
    pub enabled: bool,
    #[serde(default)]
    pub allowed_kinds: Vec<String>,
    pub max_duration: Option<HumanDuration>,
    pub token_ttl: Option<HumanDuration>,
    pub stand_in_cert: Option<PathBuf>,
    pub stand_in_key: Option<PathBuf>,
}

/// The `[leadership]` table.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
#[expect(missing_docs, reason = "the module docs describe each key")]
pub struct RawLeadershipConfig {
    pub voters: Vec<u64>,
    #[serde(default)]
    pub campaign: Vec<String>,
    pub ttl: Option<HumanDuration>,
    pub retry: Option<HumanDuration>,
    pub raft: Option<RawLeaseConfig>,
    pub data_dir: Option<PathBuf>,
    #[serde(default)]
    pub join_as_voter: bool,
}

/// The `[queues]` table: where the checkpoints go (`data_dir`), when a replica acknowledges
/// (`ack_after`: `"sync"` or `"write"`), and the core's queue keys
/// ([`RawQueueConfig`](meshkit::queue::RawQueueConfig)). Unknown keys are refused with the list
/// of allowed ones, as elsewhere (serde's `flatten` would let them through).
#[derive(Clone, Debug, Default)]
#[expect(missing_docs, reason = "the module docs describe each key")]
pub struct RawQueuesConfig {
    pub data_dir: Option<PathBuf>,
    pub ack_after: Option<String>,
    pub queue: meshkit::queue::RawQueueConfig,
}

impl<'de> Deserialize<'de> for RawQueuesConfig {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        use serde::de::Error as _;
        let mut table = toml::Table::deserialize(deserializer)?;
        let data_dir = table
            .remove("data_dir")
            .map(toml::Value::try_into::<PathBuf>)
            .transpose()
            .map_err(|e| D::Error::custom(format!("queues.data_dir: {e}")))?;
        let ack_after = table
            .remove("ack_after")
            .map(toml::Value::try_into::<String>)
            .transpose()
            .map_err(|e| D::Error::custom(format!("queues.ack_after: {e}")))?;
        let queue = toml::Value::Table(table)
            .try_into()
            .map_err(|e| D::Error::custom(format!("queues: {e} (or data_dir, ack_after)")))?;
        Ok(Self {
            data_dir,
            ack_after,
            queue,
        })
    }
}

/// The `[control_limits]` table: the control API's connection limits
/// ([`ConnectionLimits`]); a key left out keeps its default.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
#[expect(missing_docs, reason = "the module docs describe each key")]
pub struct RawControlLimits {
    pub max_connections: Option<usize>,
    pub reserved_authenticated: Option<usize>,
    pub max_handshakes: Option<usize>,
    pub max_per_address: Option<usize>,
    pub handshake_timeout: Option<HumanDuration>,
    pub first_request_timeout: Option<HumanDuration>,
    pub idle_timeout: Option<HumanDuration>,
}

/// Most `[control_limits] max_connections`: each connection costs a task, TLS state and HTTP
/// buffers (tens of KiB), so this bounds the control API to a few GiB however it is set.
pub const MAX_CONTROL_CONNECTIONS: usize = 65_536;
/// Range of `[control_limits] handshake_timeout`: a handshake takes one or two round trips;
/// a minute is far beyond any honest client, and every second of it is a permit held.
pub const CONTROL_HANDSHAKE_TIMEOUT_RANGE: std::ops::RangeInclusive<std::time::Duration> =
    std::time::Duration::from_secs(1)..=std::time::Duration::from_secs(60);
/// Range of `[control_limits] first_request_timeout`.
pub const CONTROL_FIRST_REQUEST_TIMEOUT_RANGE: std::ops::RangeInclusive<std::time::Duration> =
    std::time::Duration::from_secs(1)..=std::time::Duration::from_secs(600);
/// Range of `[control_limits] idle_timeout`.
pub const CONTROL_IDLE_TIMEOUT_RANGE: std::ops::RangeInclusive<std::time::Duration> =
    std::time::Duration::from_secs(1)..=std::time::Duration::from_secs(3600);

/// Default TTL of the leases a node's campaign asks for.
pub const DEFAULT_LEASE_TTL: meshkit::Duration = meshkit::Duration::from_secs(3);
/// Default pause before a campaign asks again after a failure.
pub const DEFAULT_CAMPAIGN_RETRY: meshkit::Duration = meshkit::Duration::from_millis(100);

/// The `[tls]` table.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
#[expect(missing_docs, reason = "the module docs describe each key")]
pub struct RawTlsConfig {
    pub cert: PathBuf,
    pub key: PathBuf,
    pub ca: PathBuf,
    pub reload_interval: Option<HumanDuration>,
}

/// Shortest `[tls] reload_interval` (other than `0s`, which turns reloading off).
pub const MIN_TLS_RELOAD_INTERVAL: std::time::Duration = std::time::Duration::from_millis(100);
/// Longest `[tls] reload_interval`.
pub const MAX_TLS_RELOAD_INTERVAL: std::time::Duration = std::time::Duration::from_secs(3600);

/// Why a `node.toml` was refused. Always an operator fault; nothing was started.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum NodeConfigError {
    /// The file could not be read. (Messages leave out the path: callers print it first.)
    #[error("cannot read the file: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// Not valid TOML, a key of the wrong type, a missing or an unknown key.
    #[error("{source}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// toml's message: it names the key, and lists the allowed keys for an unknown one.
        source: Box<toml::de::Error>,
    },
    /// The file uses a placeholder (`{id}`, `{hostname}`) that nothing filled in: one file
    /// shared by the pods of a StatefulSet is started with `meshkitd --id-from-hostname`.
    #[error(
        "the file uses the placeholder {placeholder} but no value was given for it: start \
         meshkitd with --id-from-hostname (one file for every pod of a StatefulSet), or write \
         the value in the file"
    )]
    Unfilled {
        /// The placeholder, braces included.
        placeholder: &'static str,
    },
    /// The host name does not end in `-<ordinal>` (a StatefulSet pod's name does), so no node
    /// id can be taken from it.
    #[error(
        "--id-from-hostname: the host name {hostname:?} does not end in -<number> (a \
         StatefulSet pod's name, such as meshkit-2); give the id in the file instead"
    )]
    NoOrdinal {
        /// The host name read.
        hostname: String,
    },
    /// A value of the right type that is not allowed.
    #[error("key `{key}` = {value:?}: expected {expected}")]
    Invalid {
        /// The key, as written in the file (`seeds[1]` for the second seed).
        key: String,
        /// The value given.
        value: String,
        /// What is allowed.
        expected: &'static str,
    },
    /// A `[membership]` override out of range.
    #[error("key membership.{0}")]
    Membership(ConfigError),
    /// An `[access]` value is not allowed (the message names the key, as for
    /// [`Self::Invalid`]).
    #[error(transparent)]
    Access(#[from] AccessConfigError),
    /// The `[access]` token key is unusable.
    #[error("key `access.token_key`: {0}")]
    TokenKey(#[from] meshkit_control::tokens::KeyError),
    /// A scope name that is not one.
    #[error("key `{key}`: {source}")]
    Scope {
        /// The key.
        key: String,
        /// What is wrong with it, and the allowed forms.
        source: meshkit::lease::ScopeError,
    },
    /// A `[leadership.raft]` override out of range.
    #[error("key leadership.raft.{0}")]
    Lease(ConfigError),
    /// A `[shards]` key is invalid (the message names it).
    #[error("key {0}")]
    Shards(#[from] meshkit::shard::ShardConfigError),
    /// A `[queues]` number or duration out of range (the message names the key).
    #[error("key {}", queue_key(.0))]
    Queues(meshkit::queue::QueueConfigError),
    /// A `[probes]` number or duration out of range.
    #[error("key probes.{0}")]
    Probes(ConfigError),
    /// The TLS files are unusable.
    #[error("key `tls`: {0}")]
    Tls(#[from] TlsError),
    /// The certificate a `certificate-expiry` experiment would serve is unusable (expired is
    /// fine: that is its purpose).
    #[error("key `chaos.stand_in_cert`: {0}")]
    StandIn(TlsError),
    /// A file or directory the configuration names cannot be used as the node would use it
    /// (found by [`NodeConfig::check_paths`], or at start).
    #[error("key `{key}` = {path:?}: {problem}")]
    Path {
        /// The key, e.g. `leadership.data_dir`.
        key: &'static str,
        /// The path, resolved.
        path: PathBuf,
        /// What is wrong with it.
        problem: PathProblem,
    },
    /// The certificate names another node than `id`.
    #[error("key `id` = {id}: the certificate in `tls.cert` is for node-{cert_id}")]
    IdMismatch {
        /// The configured id.
        id: u64,
        /// The id the certificate names.
        cert_id: u64,
    },
}

/// What is wrong with a path of the configuration ([`NodeConfigError::Path`]).
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum PathProblem {
    /// A directory where a file belongs.
    #[error("is a directory, expected a file")]
    IsDirectory,
    /// Something else than a directory where one belongs (or on the way to it).
    #[error("{0:?} is not a directory")]
    NotADirectory(PathBuf),
    /// The directory that should hold the file does not exist (it is not created).
    #[error("its directory {0:?} does not exist")]
    NoParent(PathBuf),
    /// A probe file could not be created and removed there, or the file opened for appending.
    #[error("not writable: {0}")]
    NotWritable(std::io::Error),
}

/// A validated node configuration. Build it with [`NodeConfig::load`] (a `node.toml`),
/// [`NodeConfig::builder`] (in code) or `TryFrom`.
#[derive(Clone, Debug)]
pub struct NodeConfig {
    id: NodeId,
    listen: SocketAddr,
    advertise: Option<PeerAddr>,
    seeds: Vec<Seed>,
    control: Option<SocketAddr>,
    control_limits: ConnectionLimits,
    rng_seed: Option<u64>,
    tls: TlsFiles,
    tls_reload: Option<std::time::Duration>,
    membership: Config,
    access: AccessConfig,
    leadership: Option<LeadershipConfig>,
    queues: Option<QueuesConfig>,
    chaos: ChaosConfig,
    /// `[chaos] stand_in_cert` and its key, resolved.
    stand_in: Option<(PathBuf, PathBuf)>,
    probes: crate::probes::ProbesConfig,
    metadata: std::collections::BTreeMap<String, String>,
}

fn socket_addr(key: &str, value: &str) -> Result<SocketAddr, NodeConfigError> {
    value.parse().map_err(|_| NodeConfigError::Invalid {
        key: key.to_owned(),
        value: value.to_owned(),
        expected: "an IP address and port, such as 127.0.0.1:7001",
    })
}

/// Values for the placeholders of a `node.toml` shared by several nodes (the pods of a
/// StatefulSet): `{id}` and `{hostname}`, replaced in the file's text before it is parsed, so
/// `id = {id}`, `cert = "certs/node-{id}.pem"` and `advertise = "{hostname}.meshkit:7001"` give
/// each pod its own identity from one ConfigMap.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Placeholders {
    /// The node id `{id}` stands for.
    pub id: Option<u64>,
    /// The host name `{hostname}` stands for.
    pub hostname: Option<String>,
}

impl Placeholders {
    /// The values of a StatefulSet pod named `hostname` (`meshkit-2`): `{hostname}` is the
    /// name, `{id}` its ordinal plus `offset` (ordinals start at 0, node ids at 1: offset 1
    /// numbers the pods 1, 2, 3; a second StatefulSet of members takes a higher offset so the
    /// ids do not overlap).
    ///
    /// # Errors
    ///
    /// [`NodeConfigError::NoOrdinal`] when the name does not end in `-<number>`, or the id
    /// would be 0 or overflow.
    pub fn from_hostname(hostname: &str, offset: u64) -> Result<Self, NodeConfigError> {
        let no_ordinal = || NodeConfigError::NoOrdinal {
            hostname: hostname.to_owned(),
        };
        let (_, ordinal) = hostname.rsplit_once('-').ok_or_else(no_ordinal)?;
        let ordinal: u64 = ordinal.parse().map_err(|_| no_ordinal())?;
        let id = ordinal
            .checked_add(offset)
            .filter(|id| *id > 0)
            .ok_or_else(no_ordinal)?;
        Ok(Self {
            id: Some(id),
            hostname: Some(hostname.to_owned()),
        })
    }

    /// `text` with every placeholder replaced.
    ///
    /// # Errors
    ///
    /// [`NodeConfigError::Unfilled`] for a placeholder in the text without a value.
    fn fill(&self, text: &str) -> Result<String, NodeConfigError> {
        let mut text = text.to_owned();
        let id = self.id.map(|id| id.to_string());
        for (placeholder, value) in [("{id}", &id), ("{hostname}", &self.hostname)] {
            if !text.contains(placeholder) {
                continue;
            }
            let Some(value) = value else {
                return Err(NodeConfigError::Unfilled { placeholder });
            };
            text = text.replace(placeholder, value);
        }
        Ok(text)
    }
}

impl NodeConfig {
    /// Reads and validates `path`; relative TLS paths are taken from the file's directory.
    pub fn load(path: &Path) -> Result<Self, NodeConfigError> {
        Self::load_with(path, &Placeholders::default())
    }

    /// [`load`](Self::load), with `placeholders` filled in first (see [`Placeholders`]).
    pub fn load_with(path: &Path, placeholders: &Placeholders) -> Result<Self, NodeConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| NodeConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        let text = placeholders.fill(&text)?;
        let mut raw: RawNodeConfig =
            toml::from_str(&text).map_err(|source| NodeConfigError::Parse {
                path: path.to_owned(),
                source: Box::new(source),
            })?;
        let base = path.parent().unwrap_or(Path::new("."));
        let chaos_files = [&mut raw.chaos.stand_in_cert, &mut raw.chaos.stand_in_key];
        let files = [&mut raw.tls.cert, &mut raw.tls.key, &mut raw.tls.ca]
            .into_iter()
            .chain(chaos_files.into_iter().flatten());
        for file in files {
            if file.is_relative() {
                *file = base.join(&*file);
            }
        }
        AccessConfig::resolve_paths(&mut raw.access, base);
        let dirs = [
            raw.leadership.as_mut().and_then(|l| l.data_dir.as_mut()),
            raw.queues.as_mut().and_then(|q| q.data_dir.as_mut()),
        ];
        for dir in dirs.into_iter().flatten() {
            if dir.is_relative() && !dir.as_os_str().is_empty() {
                *dir = base.join(&*dir);
            }
        }
        Self::try_from(raw)
    }

    /// Loads the TLS files and checks them as of now: the certificate names this node, the key
    /// matches it, and it is neither expired nor not yet valid (a node does not start with a
    /// certificate its peers must refuse). A certificate that does not chain to the CA file is
    /// only warned about: peers trusting another CA may still accept it.
    pub fn load_tls(&self) -> Result<TlsIdentity, NodeConfigError> {
        let identity = TlsIdentity::load(&self.tls.cert, &self.tls.key, &self.tls.ca)?;
        if identity.id() != self.id {
            return Err(NodeConfigError::IdMismatch {
                id: self.id.get(),
                cert_id: identity.id().get(),
            });
        }
        let now = std::time::SystemTime::now();
        identity.check(Some(self.id), now)?;
        if let Err(error) = identity.check_chain(now) {
            tracing::warn!(%error, "key `tls`: peers trusting only this CA will refuse this node");
        }
        Ok(identity)
    }

    /// Loads `[chaos] stand_in_cert` (with `stand_in_key`, or `tls.key`, and `tls.ca`), the
    /// certificate a `certificate-expiry` experiment serves: it must name this node, match its
    /// key and chain to the CA ([`TlsIdentity::check_stand_in`]); it may have expired. `None`
    /// when the key is not set.
    pub fn load_stand_in(&self) -> Result<Option<TlsIdentity>, NodeConfigError> {
        let Some((cert, key)) = &self.stand_in else {
            return Ok(None);
        };
        let identity =
            TlsIdentity::load(cert, key, &self.tls.ca).map_err(NodeConfigError::StandIn)?;
        identity
            .check_stand_in(self.id)
            .map_err(NodeConfigError::StandIn)?;
        Ok(Some(identity))
    }

    /// Whether the files and directories the node writes can be written, as start needs them,
    /// without changing them: `[leadership] data_dir` (a directory, created at start if
    /// missing: its nearest existing ancestor must take a new file) and `[access] audit_log`
    /// (a file, not a directory, in an existing directory; opened for appending if it
    /// exists). Writability is tried by creating and removing a probe file. `meshkitd
    /// check-config` runs this; the node's start meets the same failures when it opens them.
    pub fn check_paths(&self) -> Result<(), NodeConfigError> {
        if let Some(dir) = self.leadership.as_ref().and_then(|l| l.data_dir.as_deref()) {
            check_dir("leadership.data_dir", dir)?;
        }
        if let Some(dir) = self.queues.as_ref().and_then(|q| q.data_dir.as_deref()) {
            check_dir("queues.data_dir", dir)?;
        }
        if let Some((file, _)) = self.access.audit_log() {
            check_file("access.audit_log", file)?;
        }
        Ok(())
    }

    /// The TLS files (`[tls]`), paths resolved.
    pub fn tls_files(&self) -> &TlsFiles {
        &self.tls
    }
    /// How often the TLS files are checked for a change; `None` when reloading is off.
    pub fn tls_reload_interval(&self) -> Option<std::time::Duration> {
        self.tls_reload
    }

    /// This node's id.
    pub fn id(&self) -> NodeId {
        self.id
    }
    /// The UDP address the QUIC transport binds.
    pub fn listen(&self) -> SocketAddr {
        self.listen
    }
    /// The address peers dial, if set apart from the bound one (a name is resolved at start).
    pub fn advertise(&self) -> Option<&PeerAddr> {
        self.advertise.as_ref()
    }
    /// Nodes to join through.
    pub fn seeds(&self) -> &[Seed] {
        &self.seeds
    }
    /// The address of the control endpoint (TCP and UDP, one port number), if any.
    pub fn control(&self) -> Option<SocketAddr> {
        self.control
    }
    /// The control API's connection limits, per listener (`[control_limits]`, default
    /// [`ConnectionLimits::default`]).
    pub fn control_limits(&self) -> ConnectionLimits {
        self.control_limits
    }
    /// The RNG seed of the membership core, if fixed (default: drawn at start).
    pub fn rng_seed(&self) -> Option<u64> {
        self.rng_seed
    }
    /// The membership configuration (profile plus overrides).
    pub fn membership(&self) -> &Config {
        &self.membership
    }
    /// Who may call the control API (`[access]`).
    pub fn access(&self) -> &AccessConfig {
        &self.access
    }
    /// Metadata the node publishes besides what it sets itself.
    pub fn metadata(&self) -> &std::collections::BTreeMap<String, String> {
        &self.metadata
    }
    /// The leadership settings, if the node runs leases.
    pub fn leadership(&self) -> Option<&LeadershipConfig> {
        self.leadership.as_ref()
    }

    /// The task queues (`[queues]`), if the node runs them.
    pub fn queues(&self) -> Option<&QueuesConfig> {
        self.queues.as_ref()
    }

    /// `[chaos]`: whether this node takes chaos experiments, which kinds, how long at most.
    pub fn chaos(&self) -> &ChaosConfig {
        &self.chaos
    }

    /// The built-in health probes (`[probes]`).
    pub fn probes(&self) -> &crate::probes::ProbesConfig {
        &self.probes
    }
}

impl TryFrom<RawNodeConfig> for NodeConfig {
    type Error = NodeConfigError;

    fn try_from(raw: RawNodeConfig) -> Result<Self, NodeConfigError> {
        let listen = socket_addr("listen", &raw.listen)?;
        let advertise = raw
            .advertise
            .as_deref()
            .map(|a| {
                a.parse::<PeerAddr>()
                    .ok()
                    .filter(|p| p.socket_addr().is_none_or(|s| !s.ip().is_unspecified()))
                    .ok_or_else(|| NodeConfigError::Invalid {
                        key: "advertise".to_owned(),
                        value: a.to_owned(),
                        expected: "an address peers can dial: a specific IP or a host name, \
                                   and a non-zero port (10.0.0.5:7001, meshkit-1:7001)",
                    })
            })
            .transpose()?;
        if advertise.is_none() && listen.ip().is_unspecified() {
            return Err(NodeConfigError::Invalid {
                key: "advertise".to_owned(),
                value: String::new(),
                expected: "an address peers can dial, required when `listen` is 0.0.0.0 or [::]",
            });
        }
        let seeds = raw
            .seeds
            .iter()
            .enumerate()
            .map(|(i, s)| Seed::parse(s).ok_or_else(|| seed_error(i, s)))
            .collect::<Result<Vec<_>, _>>()?;
        for (i, seed) in seeds.iter().enumerate() {
            if seed.id.get() == 0 || seeds[..i].iter().any(|s| s.id == seed.id) {
                return Err(NodeConfigError::Invalid {
                    key: format!("seeds[{i}]"),
                    value: raw.seeds[i].clone(),
                    expected: "a seed with a non-zero node id, each id listed once",
                });
            }
        }
        let control = raw
            .control
            .as_deref()
            .map(|c| socket_addr("control", c))
            .transpose()?;
        if let Some(control) = control
            && ports_clash(listen, control)
        {
            return Err(NodeConfigError::Invalid {
                key: "control".to_owned(),
                value: control.to_string(),
                expected: "a port other than `listen`'s on the same address: the control API \
                           binds UDP (HTTP/3) as well as TCP, and `listen` binds UDP",
            });
        }
        let control_limits = control_limits(&raw.control_limits)?;
        let mut membership = raw.membership.unwrap_or_default();
        if let Some(name) = &raw.profile {
            let profile: Profile = name.parse().map_err(|_| NodeConfigError::Invalid {
                key: "profile".to_owned(),
                value: name.clone(),
                expected: "lan, wan or memberlist",
            })?;
            if membership.profile.is_some_and(|p| p != profile) {
                return Err(NodeConfigError::Invalid {
                    key: "membership.profile".to_owned(),
                    value: membership
                        .profile
                        .map(|p| p.to_string())
                        .unwrap_or_default(),
                    expected: "the same profile as the top-level `profile` key, or nothing",
                });
            }
            membership.profile = Some(profile);
        }
        let membership = Config::try_from(membership).map_err(NodeConfigError::Membership)?;
        let access = AccessConfig::try_from(raw.access)?;
        let mut leadership = raw.leadership.map(leadership_config).transpose()?;
        if let Some(l) = &leadership
            && l.join_as_voter
            && l.voters.contains(&NodeId::new(raw.id))
        {
            return Err(NodeConfigError::Invalid {
                key: "leadership.join_as_voter".to_owned(),
                value: "true".to_owned(),
                expected: "false on a node listed in leadership.voters (a founding voter); true \
                           only on a node to be added later with `meshctl voters add`",
            });
        }
        if let Some(shards) = raw.shards {
            let shards = meshkit::shard::ShardConfig::try_from(shards)?;
            let Some(l) = leadership.as_mut() else {
                return Err(NodeConfigError::Invalid {
                    key: "shards".to_owned(),
                    value: "a [shards] section".to_owned(),
                    expected: "a [leadership] section too: shards are owned through leases",
                });
            };
            if !(l.lease.min_ttl()..=l.lease.max_ttl()).contains(&shards.ttl()) {
                return Err(NodeConfigError::Invalid {
                    key: "shards.ttl".to_owned(),
                    value: format!("{:?}", shards.ttl()),
                    expected: "a TTL within leadership.raft.min_ttl..=max_ttl (default 1s..=1h)",
                });
            }
            l.shards = Some(shards);
        }
        let shards = leadership.as_ref().and_then(|l| l.shards.clone());
        let queues = raw.queues.map(|q| queues_config(q, shards)).transpose()?;
        let chaos = chaos_config(&raw.chaos)?;
        let stand_in = raw.chaos.stand_in_cert.clone().map(|cert| {
            let key = raw.chaos.stand_in_key.clone();
            (cert, key.unwrap_or_else(|| raw.tls.key.clone()))
        });
        let probes = crate::probes::ProbesConfig::try_from(raw.probes.unwrap_or_default())?;
        let tls_reload = match raw.tls.reload_interval.map(|d| d.0) {
            None => Some(meshkit_net::reload::DEFAULT_RELOAD_INTERVAL),
            Some(std::time::Duration::ZERO) => None,
            Some(d) if (MIN_TLS_RELOAD_INTERVAL..=MAX_TLS_RELOAD_INTERVAL).contains(&d) => Some(d),
            Some(d) => {
                return Err(NodeConfigError::Invalid {
                    key: "tls.reload_interval".to_owned(),
                    value: format!("{d:?}"),
                    expected: "0s (no reloading) or 100ms to 1h",
                });
            }
        };
        for (key, value) in &raw.metadata {
            let invalid = |expected| NodeConfigError::Invalid {
                key: format!("metadata.{key}"),
                value: value.clone(),
                expected,
            };
            if meshkit_runtime::driver::RESERVED_KEYS.contains(&key.as_str()) {
                return Err(invalid(
                    "a key other than addr, draining, version and wire (the node sets those)",
                ));
            }
            if key.is_empty() || key.len() > meshkit::wire::MAX_KEY_BYTES {
                return Err(invalid("a key of 1 to 64 bytes"));
            }
            if value.len() > meshkit::wire::MAX_VALUE_BYTES {
                return Err(invalid("a value of at most 1024 bytes"));
            }
        }
        Ok(Self {
            id: NodeId::new(raw.id),
            listen,
            advertise,
            seeds,
            control,
            control_limits,
            rng_seed: raw.seed,
            tls: TlsFiles {
                cert: raw.tls.cert,
                key: raw.tls.key,
                ca: raw.tls.ca,
            },
            tls_reload,
            membership,
            access,
            leadership,
            queues,
            chaos,
            stand_in,
            probes,
            metadata: raw.metadata,
        })
    }
}

/// The `[control_limits]` table as [`ConnectionLimits`]: each key in its range, and an
/// anonymous pool that is not empty.
fn control_limits(raw: &RawControlLimits) -> Result<ConnectionLimits, NodeConfigError> {
    let invalid = |key: &str, value: String, expected| NodeConfigError::Invalid {
        key: format!("control_limits.{key}"),
        value,
        expected,
    };
    let defaults = ConnectionLimits::default();
    let max_connections = raw.max_connections.unwrap_or(defaults.max_connections());
    let reserved = raw
        .reserved_authenticated
        .unwrap_or(defaults.reserved_authenticated());
    let handshakes = raw.max_handshakes.unwrap_or(defaults.max_handshakes());
    let per_address = raw.max_per_address.unwrap_or(defaults.max_per_address());
    if !(1..=MAX_CONTROL_CONNECTIONS).contains(&max_connections) {
        return Err(invalid(
            "max_connections",
            max_connections.to_string(),
            "1 to 65536 connections",
        ));
    }
    if handshakes == 0 {
        return Err(invalid(
            "max_handshakes",
            handshakes.to_string(),
            "at least 1 handshake in progress",
        ));
    }
    if reserved.saturating_add(handshakes) >= max_connections {
        let key = if raw.reserved_authenticated.is_some() {
            "reserved_authenticated"
        } else if raw.max_handshakes.is_some() {
            "max_handshakes"
        } else {
            "max_connections"
        };
        return Err(invalid(
            key,
            format!("{reserved} reserved + {handshakes} handshakes of {max_connections}"),
            "reserved_authenticated + max_handshakes below max_connections (what is left is \
             the anonymous pool, which must not be empty)",
        ));
    }
    if !(1..=max_connections).contains(&per_address) {
        return Err(invalid(
            "max_per_address",
            per_address.to_string(),
            "1 to max_connections",
        ));
    }
    let timeout = |key: &str,
                   value: Option<HumanDuration>,
                   default: std::time::Duration,
                   range: std::ops::RangeInclusive<std::time::Duration>,
                   expected| {
        let d = value.map_or(default, |d| d.0);
        if range.contains(&d) {
            Ok(d)
        } else {
            Err(invalid(key, format!("{d:?}"), expected))
        }
    };
    let handshake = timeout(
        "handshake_timeout",
        raw.handshake_timeout,
        defaults.handshake_timeout(),
        CONTROL_HANDSHAKE_TIMEOUT_RANGE,
        "1s to 60s",
    )?;
    let first_request = timeout(
        "first_request_timeout",
        raw.first_request_timeout,
        defaults.first_request_timeout(),
        CONTROL_FIRST_REQUEST_TIMEOUT_RANGE,
        "1s to 10m",
    )?;
    let idle = timeout(
        "idle_timeout",
        raw.idle_timeout,
        defaults.idle_timeout(),
        CONTROL_IDLE_TIMEOUT_RANGE,
        "1s to 1h",
    )?;
    let limits = defaults
        .with_counts(max_connections, reserved, handshakes, per_address)
        // The checks above are the builder's, with the key named: this cannot fail.
        .map_err(|_| invalid("max_connections", max_connections.to_string(), "1 to 65536"))?;
    Ok(limits.with_timeouts(handshake, first_request, idle))
}

fn leadership_config(raw: RawLeadershipConfig) -> Result<LeadershipConfig, NodeConfigError> {
    let invalid = |key: &str, value: String, expected| NodeConfigError::Invalid {
        key: format!("leadership.{key}"),
        value,
        expected,
    };
    let mut voters: Vec<NodeId> = Vec::with_capacity(raw.voters.len());
    for (i, &v) in raw.voters.iter().enumerate() {
        if v == 0 || voters.contains(&NodeId::new(v)) {
            return Err(invalid(
                &format!("voters[{i}]"),
                v.to_string(),
                "a non-zero node id, each listed once",
            ));
        }
        voters.push(NodeId::new(v));
    }
    if voters.is_empty() || voters.len() > MAX_VOTERS {
        return Err(invalid(
            "voters",
            format!("{:?}", raw.voters),
            "1 to 7 node ids (3 or 5 tolerate one or two failures)",
        ));
    }
    let campaign = raw
        .campaign
        .iter()
        .enumerate()
        .map(|(i, text)| {
            text.parse::<Scope>()
                .map_err(|source| NodeConfigError::Scope {
                    key: format!("leadership.campaign[{i}]"),
                    source,
                })
        })
        .collect::<Result<Vec<_>, _>>()?;
    let lease =
        LeaseConfig::try_from(raw.raft.unwrap_or_default()).map_err(NodeConfigError::Lease)?;
    let ttl = raw.ttl.map_or(DEFAULT_LEASE_TTL, |d| d.0);
    if !(lease.min_ttl()..=lease.max_ttl()).contains(&ttl) {
        return Err(invalid(
            "ttl",
            format!("{ttl:?}"),
            "a TTL within leadership.raft.min_ttl..=max_ttl (default 1s..=1h)",
        ));
    }
    let retry = raw.retry.map_or(DEFAULT_CAMPAIGN_RETRY, |d| d.0);
    if retry < meshkit::Duration::from_millis(10) || retry > ttl {
        return Err(invalid(
            "retry",
            format!("{retry:?}"),
            "at least 10ms and at most the ttl",
        ));
    }
    if let Some(dir) = &raw.data_dir
        && (dir.as_os_str().is_empty() || dir.is_file())
    {
        return Err(invalid(
            "data_dir",
            dir.display().to_string(),
            "a directory (created if missing) for the voter's Raft log, not a file",
        ));
    }
    Ok(LeadershipConfig {
        voters,
        campaign,
        ttl,
        retry,
        lease,
        data_dir: raw.data_dir,
        join_as_voter: raw.join_as_voter,
        shards: None,
    })
}

/// `[chaos]`: kind names from [`KIND_NAMES`], each once; `max_duration` above zero and at most
/// [`MAX_FAULT_DURATION`]; `token_ttl` within [`MIN_TOKEN_TTL`]..=[`MAX_TOKEN_TTL`]. Every
/// error names its key under `chaos.`.
fn chaos_config(raw: &RawChaosConfig) -> Result<ChaosConfig, NodeConfigError> {
    let mut allowed_kinds = std::collections::BTreeSet::new();
    for (i, kind) in raw.allowed_kinds.iter().enumerate() {
        // A service's own fault type is `custom:<name>`: the prefix keeps a misspelled
        // built-in kind an error instead of an allowed type that no node has.
        let known = KIND_NAMES.contains(&kind.as_str())
            || kind
                .strip_prefix(CUSTOM_KIND_PREFIX)
                .is_some_and(|name| check_custom_name("name", name).is_ok());
        if !known || !allowed_kinds.insert(kind.clone()) {
            return Err(NodeConfigError::Invalid {
                key: format!("chaos.allowed_kinds[{i}]"),
                value: kind.clone(),
                expected: "a fault kind, listed once: kill, pause, partition, latency, loss, \
                           bursty-loss, duplicate, reorder, transport-downgrade, \
                           certificate-expiry, certificate-rotation, clock-skew, membership-surge, \
                           or custom:<name> \
                           for a service's own fault type (a-z 0-9 . _ -)",
            });
        }
    }
    let max_duration = match raw.max_duration.map(|d| d.0) {
        None => DEFAULT_MAX_DURATION,
        Some(d) if !d.is_zero() && d <= MAX_FAULT_DURATION => d,
        Some(d) => {
            return Err(NodeConfigError::Invalid {
                key: "chaos.max_duration".to_owned(),
                value: format!("{d:?}"),
                expected: "a duration above 0s and at most 24h",
            });
        }
    };
    let token_ttl = match raw.token_ttl.map(|d| d.0) {
        None => DEFAULT_TOKEN_TTL,
        Some(d) if (MIN_TOKEN_TTL..=MAX_TOKEN_TTL).contains(&d) => d,
        Some(d) => {
            return Err(NodeConfigError::Invalid {
                key: "chaos.token_ttl".to_owned(),
                value: format!("{d:?}"),
                expected: "a duration from 1s to 10m",
            });
        }
    };
    // `stand_in_not_after` is filled in at start, from the certificate file.
    Ok(ChaosConfig {
        enabled: raw.enabled,
        allowed_kinds,
        max_duration,
        token_ttl,
        stand_in_not_after: None,
    })
}

/// `[queues]` on `shards` (`None`: the node has no `[shards]`, refused). Every error names its
/// key under `queues.`.
fn queues_config(
    raw: RawQueuesConfig,
    shards: Option<meshkit::shard::ShardConfig>,
) -> Result<QueuesConfig, NodeConfigError> {
    use meshkit::queue::{QueueConfig, QueueConfigError};
    let invalid = |key: &str, value: String, expected| NodeConfigError::Invalid {
        key: format!("queues.{key}"),
        value,
        expected,
    };
    let Some(shards) = shards else {
        return Err(NodeConfigError::Invalid {
            key: "queues".to_owned(),
            value: "a [queues] section".to_owned(),
            expected: "a [shards] section too (and [leadership]): a queue lives on each shard and is \
             served by its owner",
        });
    };
    let queue = QueueConfig::try_from(raw.queue).map_err(|e| match e {
        QueueConfigError::Watermarks { low, .. } => invalid(
            "low_watermark",
            low.to_string(),
            "a value below queues.high_watermark",
        ),
        QueueConfigError::LowWithoutHigh => invalid(
            "low_watermark",
            "set".to_owned(),
            "absent unless queues.high_watermark is set",
        ),
        other => NodeConfigError::Queues(other),
    })?;
    let data_dir = match raw.data_dir {
        Some(dir) if dir.as_os_str().is_empty() || dir.is_file() => {
            return Err(invalid(
                "data_dir",
                dir.display().to_string(),
                "a directory (created if missing) for the replicas' checkpoints, not a file",
            ));
        }
        Some(dir) => Some(dir),
        None if queue.replicas() == 0 => None,
        None => {
            return Err(invalid(
                "data_dir",
                "absent".to_owned(),
                "a directory for the replicas' checkpoints: an acknowledged item must survive \
                 a restart of the replica holding it (or replicas = 0, which acknowledges \
                 what only the owner holds)",
            ));
        }
    };
    let ack_after = match raw.ack_after.as_deref() {
        None => AckAfter::default(),
        Some(name) => AckAfter::from_name(name).ok_or_else(|| {
            invalid(
                "ack_after",
                name.to_owned(),
                "\"sync\" (a replica acknowledges once its checkpoint is on the disk) or \"write\" \
                 (once written to the page cache: docs/task-queues.md)",
            )
        })?,
    };
    Ok(QueuesConfig {
        shards,
        queue,
        data_dir,
        ack_after,
    })
}

/// Whether UDP sockets bound at `a` and `b` would collide: the same non-zero port, and the
/// same IP or either one unspecified (binding every address of its family, and on a dual-stack
/// host `[::]` takes IPv4 too).
fn ports_clash(a: SocketAddr, b: SocketAddr) -> bool {
    a.port() != 0
        && a.port() == b.port()
        && (a.ip() == b.ip() || a.ip().is_unspecified() || b.ip().is_unspecified())
}

/// Creates and removes a probe file in `dir`.
fn probe_write(dir: &Path) -> std::io::Result<()> {
    let probe = dir.join(format!(".meshkit-check-{}", std::process::id()));
    std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&probe)?;
    std::fs::remove_file(&probe)
}

/// `dir` is a directory the node can write, or one it can create.
fn check_dir(key: &'static str, dir: &Path) -> Result<(), NodeConfigError> {
    let fail = |problem| NodeConfigError::Path {
        key,
        path: dir.to_owned(),
        problem,
    };
    // The nearest part of the path that exists must be a directory that takes a new entry.
    let mut existing = dir;
    while !existing.exists() {
        match existing.parent() {
            Some(parent) if !parent.as_os_str().is_empty() => existing = parent,
            _ => {
                existing = Path::new(".");
                break;
            }
        }
    }
    if !existing.is_dir() {
        return Err(fail(PathProblem::NotADirectory(existing.to_owned())));
    }
    probe_write(existing).map_err(|e| fail(PathProblem::NotWritable(e)))
}

/// `file` is a file the node can append to, or create in an existing directory.
fn check_file(key: &'static str, file: &Path) -> Result<(), NodeConfigError> {
    let fail = |problem| NodeConfigError::Path {
        key,
        path: file.to_owned(),
        problem,
    };
    if file.is_dir() {
        return Err(fail(PathProblem::IsDirectory));
    }
    if file.exists() {
        // Appending nothing changes nothing, and is what the writer will do.
        return std::fs::OpenOptions::new()
            .append(true)
            .open(file)
            .map(drop)
            .map_err(|e| fail(PathProblem::NotWritable(e)));
    }
    let parent = match file.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    if !parent.exists() {
        return Err(fail(PathProblem::NoParent(parent.to_owned())));
    }
    if !parent.is_dir() {
        return Err(fail(PathProblem::NotADirectory(parent.to_owned())));
    }
    probe_write(parent).map_err(|e| fail(PathProblem::NotWritable(e)))
}

/// A node to join through: its id, and where it gossips.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Seed {
    /// The seed's node id (its certificate must name it).
    pub id: NodeId,
    /// Its gossip address: an IP, or a name the node resolves until it answers.
    pub addr: PeerAddr,
}

impl Seed {
    /// Parses `id@ip:port` or `id@name:port`; `None` when it is neither.
    pub fn parse(text: &str) -> Option<Self> {
        let (id, addr) = text.split_once('@')?;
        Some(Self {
            id: NodeId::new(id.trim().parse().ok()?),
            addr: addr.parse().ok()?,
        })
    }
}

fn seed_error(index: usize, value: &str) -> NodeConfigError {
    NodeConfigError::Invalid {
        key: format!("seeds[{index}]"),
        value: value.to_owned(),
        expected: "id@ip:port or id@name:port, such as 2@127.0.0.1:7002 or 2@meshkit-2:7001",
    }
}

/// A [`NodeConfig`] set in code: what a service that embeds a node uses instead of writing a
/// `node.toml`. Each method sets the key of the same name (see the module docs);
/// [`build`](Self::build) validates exactly as [`NodeConfig::load`] does, so an error names
/// the key as the file would. Paths are used as given (relative ones from the working
/// directory; `load` takes them from the file's directory).
///
/// ```no_run
/// # async fn run() -> Result<(), Box<dyn std::error::Error>> {
/// use meshkit_node::config::NodeConfig;
///
/// let node = NodeConfig::builder(1)
///     .identity("certs/node-1.pem", "certs/node-1.key", "certs/ca.pem")
///     .listen("127.0.0.1:7001".parse()?)
///     .control("127.0.0.1:8001".parse()?)
///     .seed(2, "127.0.0.1:7002".parse::<std::net::SocketAddr>()?)
///     .seed(3, "meshkit-3:7001".parse::<meshkit_node::net::peer_addr::PeerAddr>()?)
///     .voters([1, 2, 3])
///     .campaign("global-control")
///     .data_dir("raft")
///     .build()?;
/// let running = meshkit_node::node::start(&node).await?;
/// # running.stop().await;
/// # Ok(())
/// # }
/// ```
#[derive(Clone, Debug)]
#[must_use = "a builder does nothing until built"]
pub struct NodeConfigBuilder {
    raw: RawNodeConfig,
    /// Whether [`identity`](Self::identity) was called: `[tls]` has no default.
    identity_set: bool,
}

impl NodeConfig {
    /// A builder for node `id`: QUIC on `127.0.0.1:0` (any free port), no control endpoint,
    /// no seeds, the `lan` profile, no leadership; [`NodeConfigBuilder::identity`] is required.
    pub fn builder(id: u64) -> NodeConfigBuilder {
        NodeConfigBuilder {
            raw: RawNodeConfig {
                id,
                listen: "127.0.0.1:0".to_owned(),
                advertise: None,
                seeds: Vec::new(),
                profile: None,
                control: None,
                seed: None,
                tls: RawTlsConfig {
                    cert: PathBuf::new(),
                    key: PathBuf::new(),
                    ca: PathBuf::new(),
                    reload_interval: None,
                },
                membership: None,
                control_limits: RawControlLimits::default(),
                access: RawAccessConfig::default(),
                leadership: None,
                shards: None,
                queues: None,
                chaos: RawChaosConfig::default(),
                probes: None,
                metadata: std::collections::BTreeMap::new(),
            },
            identity_set: false,
        }
    }
}

impl NodeConfigBuilder {
    /// `[tls]`: the node's certificate (it must name `node-<id>`), its key and the CA that
    /// signs every node's and operator's certificate.
    pub fn identity(
        mut self,
        cert: impl Into<PathBuf>,
        key: impl Into<PathBuf>,
        ca: impl Into<PathBuf>,
    ) -> Self {
        self.raw.tls.cert = cert.into();
        self.raw.tls.key = key.into();
        self.raw.tls.ca = ca.into();
        self.identity_set = true;
        self
    }

    /// `[tls] reload_interval`: how often the files are checked for a change
    /// (`Duration::ZERO` turns reloading off).
    pub fn tls_reload_interval(mut self, interval: std::time::Duration) -> Self {
        self.raw.tls.reload_interval = Some(HumanDuration(interval));
        self
    }

    /// `listen`: the UDP address of the QUIC transport (port 0: any free port).
    pub fn listen(mut self, addr: SocketAddr) -> Self {
        self.raw.listen = addr.to_string();
        self
    }

    /// `advertise`: the address peers dial, when it is not the bound one (an IP, or a host
    /// name resolved at start: `"meshkit-1:7001".parse::<PeerAddr>()?`).
    pub fn advertise(mut self, addr: impl Into<PeerAddr>) -> Self {
        self.raw.advertise = Some(addr.into().to_string());
        self
    }

    /// `control`: the control API's address (TLS on TCP and HTTP/3 on UDP, one port number).
    pub fn control(mut self, addr: SocketAddr) -> Self {
        self.raw.control = Some(addr.to_string());
        self
    }

    /// `seeds`: adds node `id`, gossiping at `addr` (an IP, or a host name resolved until it
    /// answers), to join through.
    pub fn seed(mut self, id: u64, addr: impl Into<PeerAddr>) -> Self {
        let addr = addr.into();
        self.raw.seeds.push(format!("{id}@{addr}"));
        self
    }

    /// `profile`: `lan`, `wan` or `memberlist`.
    pub fn profile(mut self, profile: &str) -> Self {
        self.raw.profile = Some(profile.to_owned());
        self
    }

    /// `seed`: a fixed seed for the core's randomness (repeatable runs; tests only).
    pub fn rng_seed(mut self, seed: u64) -> Self {
        self.raw.seed = Some(seed);
        self
    }

    /// `[membership]`: overrides of the profile.
    pub fn membership(mut self, overrides: RawConfig) -> Self {
        self.raw.membership = Some(overrides);
        self
    }

    /// `[control_limits]`: the control API's connection limits.
    pub fn control_limits(mut self, limits: RawControlLimits) -> Self {
        self.raw.control_limits = limits;
        self
    }

    /// `[access]`: who may call the control API.
    pub fn access(mut self, access: RawAccessConfig) -> Self {
        self.raw.access = access;
        self
    }

    /// `[metadata]`: adds `key = value`, published to every member.
    pub fn metadata(mut self, key: &str, value: &str) -> Self {
        self.raw.metadata.insert(key.to_owned(), value.to_owned());
        self
    }

    /// `[leadership] voters`: the Raft voters (the same on every node). Turns leadership on.
    pub fn voters(mut self, voters: impl IntoIterator<Item = u64>) -> Self {
        self.leadership().voters = voters.into_iter().collect();
        self
    }

    /// `[leadership] campaign`: adds a scope this node contends for.
    pub fn campaign(mut self, scope: &str) -> Self {
        self.leadership().campaign.push(scope.to_owned());
        self
    }

    /// `[leadership] ttl`: the TTL of the leases its campaign asks for.
    pub fn lease_ttl(mut self, ttl: std::time::Duration) -> Self {
        self.leadership().ttl = Some(HumanDuration(ttl));
        self
    }

    /// `[leadership] data_dir`: where a voter keeps its Raft log.
    pub fn data_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.leadership().data_dir = Some(dir.into());
        self
    }

    /// `[leadership] join_as_voter`: a node outside `voters` starts as a voter-to-be.
    pub fn join_as_voter(mut self, join: bool) -> Self {
        self.leadership().join_as_voter = join;
        self
    }

    /// `[leadership.raft]`: Raft and lease-client overrides.
    pub fn raft(mut self, overrides: RawLeaseConfig) -> Self {
        self.leadership().raft = Some(overrides);
        self
    }

    /// `[shards]`: the shards the mesh owns through leases (needs leadership).
    pub fn shards(mut self, shards: meshkit::shard::RawShardConfig) -> Self {
        self.raw.shards = Some(shards);
        self
    }

    /// `[chaos]`: whether the node takes chaos experiments, which kinds, how long at most.
    pub fn chaos(mut self, chaos: RawChaosConfig) -> Self {
        self.raw.chaos = chaos;
        self
    }

    /// `[probes]`: the built-in health probes' settings.
    pub fn probes(mut self, probes: crate::probes::RawProbesConfig) -> Self {
        self.raw.probes = Some(probes);
        self
    }

    /// `[queues]`: a task queue per shard (needs [`shards`](Self::shards)).
    pub fn queues(mut self, queues: RawQueuesConfig) -> Self {
        self.raw.queues = Some(queues);
        self
    }

    /// Validates the keys set, as [`NodeConfig::load`] validates a file.
    ///
    /// # Errors
    ///
    /// [`NodeConfigError::Invalid`] with key `tls` if [`identity`](Self::identity) was not
    /// called; otherwise what a `node.toml` with these keys would get, naming the key.
    pub fn build(self) -> Result<NodeConfig, NodeConfigError> {
        if !self.identity_set {
            return Err(NodeConfigError::Invalid {
                key: "tls".to_owned(),
                value: String::new(),
                expected: "the node's certificate, key and CA (NodeConfigBuilder::identity)",
            });
        }
        NodeConfig::try_from(self.raw)
    }

    /// The `[leadership]` table, created empty (no voters: `build` names the key) if unset.
    fn leadership(&mut self) -> &mut RawLeadershipConfig {
        self.raw
            .leadership
            .get_or_insert_with(|| RawLeadershipConfig {
                voters: Vec::new(),
                campaign: Vec::new(),
                ttl: None,
                retry: None,
                raft: None,
                data_dir: None,
                join_as_voter: false,
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<NodeConfig, NodeConfigError> {
        let raw: RawNodeConfig = toml::from_str(text).map_err(|source| NodeConfigError::Parse {
            path: PathBuf::from("node.toml"),
            source: Box::new(source),
        })?;
        NodeConfig::try_from(raw)
    }

    const TLS: &str = "[tls]\ncert = \"a.pem\"\nkey = \"a.key\"\nca = \"ca.pem\"\n";

    #[test]
    fn names_are_kept_to_be_resolved_by_the_node() {
        let c = parse(&format!(
            "id = 1\nlisten = \"0.0.0.0:7001\"\nadvertise = \"meshkit-1:7001\"\n\
             seeds = [\"2@meshkit-2.meshkit.svc:7001\", \"3@10.0.0.3:7001\"]\n{TLS}"
        ))
        .expect("names need no resolution to validate");
        assert_eq!(
            c.advertise().map(ToString::to_string).as_deref(),
            Some("meshkit-1:7001")
        );
        assert_eq!(c.seeds()[0].addr.socket_addr(), None);
        assert_eq!(
            c.seeds()[1].addr.socket_addr(),
            Some("10.0.0.3:7001".parse().unwrap())
        );
    }

    /// One file for every pod of a StatefulSet: `{id}` and `{hostname}` filled from the pod's
    /// name; without values the file is refused naming the flag; a name without an ordinal is
    /// refused naming the name.
    #[test]
    fn placeholders_give_each_pod_its_identity() {
        let dir = std::env::temp_dir().join(format!("meshkit-placeholders-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("node.toml");
        std::fs::write(
            &path,
            "id = {id}
listen = \"0.0.0.0:7001\"
advertise = \"{hostname}.meshkit:7001\"
\
             [tls]\ncert = \"certs/node-{id}.pem\"\nkey = \"certs/node-{id}.key\"\nca = \"ca.pem\"\n",
        )
        .unwrap();
        let pod = Placeholders::from_hostname("meshkit-voter-2", 1).unwrap();
        let c = NodeConfig::load_with(&path, &pod).unwrap();
        assert_eq!(c.id(), NodeId::new(3));
        assert_eq!(
            c.advertise().map(ToString::to_string).as_deref(),
            Some("meshkit-voter-2.meshkit:7001")
        );
        assert_eq!(c.tls.cert, dir.join("certs/node-3.pem"));
        let member = Placeholders::from_hostname("meshkit-member-0", 101).unwrap();
        assert_eq!(member.id, Some(101));

        let unfilled = NodeConfig::load(&path).unwrap_err().to_string();
        assert!(
            unfilled.contains("{id}") && unfilled.contains("--id-from-hostname"),
            "{unfilled}"
        );
        for name in ["meshkit", "meshkit-x", "meshkit-0"] {
            let offset = if name == "meshkit-0" { 0 } else { 1 };
            let refused = Placeholders::from_hostname(name, offset)
                .unwrap_err()
                .to_string();
            assert!(refused.contains(name), "{refused}");
        }
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn good_file_parses() {
        let c = parse(&format!(
            "id = 3\nlisten = \"127.0.0.1:7003\"\nseeds = [\"1@127.0.0.1:7001\"]\n\
             profile = \"wan\"\ncontrol = \"127.0.0.1:8003\"\n{TLS}\
             [membership]\nprobe_interval = \"6s\"\n"
        ))
        .unwrap();
        assert_eq!(c.id(), NodeId::new(3));
        assert_eq!(c.seeds()[0].id, NodeId::new(1));
        assert_eq!(c.membership().profile(), Profile::Wan);
        assert_eq!(
            c.membership().probe_interval(),
            meshkit::Duration::from_secs(6)
        );
    }

    /// `[shards]`: needs `[leadership]`; every error names its key.
    #[test]
    fn shards_parse_and_errors_name_the_key() {
        let base = format!("id = 1\nlisten = \"127.0.0.1:7001\"\n{TLS}");
        let lead = "[leadership]\nvoters = [1]\n";
        let c = parse(&format!(
            "{base}{lead}[shards]\nnamespaces = {{ orders = 64 }}\nmax_moves_in_flight = 4\n"
        ))
        .unwrap();
        let shards = c.leadership().unwrap().shards.as_ref().unwrap();
        assert_eq!(shards.shard_count(), 64);
        assert_eq!(shards.max_moves_in_flight(), 4);
        let err = |text: &str| parse(&format!("{base}{text}")).unwrap_err().to_string();
        assert!(
            err("[shards]\nnamespaces = { orders = 4 }\n").contains("[leadership]"),
            "{}",
            err("[shards]\nnamespaces = { orders = 4 }\n")
        );
        assert!(
            err(&format!("{lead}[shards]\nnamespaces = {{ Orders = 4 }}\n"))
                .starts_with("key shards.namespaces.Orders: ")
        );
        // A namespace the lease scope grammar refuses (its shards could never be leased).
        let dash = err(&format!(
            "{lead}[shards]\nnamespaces = {{ \"-orders\" = 4 }}\n"
        ));
        assert!(
            dash.starts_with("key shards.namespaces.-orders: ") && dash.contains("must start"),
            "{dash}"
        );
        assert!(
            err(&format!(
                "{lead}[shards]\nnamespaces = {{ o = 4 }}\ntolerance_percent = 0\n"
            ))
            .starts_with("key shards.tolerance_percent = 0 is out of range")
        );
        assert!(err(&format!("{lead}[shards]\n")).contains("shards.namespaces is empty"));
        assert!(
            err(&format!(
                "{lead}[shards]\nnamespaces = {{ o = 4 }}\ncount = 3\n"
            ))
            .contains("count")
        );
    }

    /// `[control_limits]`: the defaults are the admission constants; each key set is taken.
    /// `[chaos]`: off by default with no kinds and a 10 minute cap; unknown or repeated kinds
    /// and out-of-range durations are refused naming the key.
    #[test]
    fn chaos_parses_with_defaults_and_errors_name_the_key() {
        let base = format!("id = 1\nlisten = \"127.0.0.1:7001\"\n{TLS}");
        let off = parse(&base).unwrap();
        assert_eq!(off.chaos(), &ChaosConfig::default());
        assert!(!off.chaos().enabled);
        assert_eq!(
            off.chaos().max_duration,
            std::time::Duration::from_secs(600)
        );
        let on = parse(&format!(
            "{base}[chaos]\nenabled = true\nallowed_kinds = [\"partition\", \"pause\"]\nmax_duration = \"90s\"\n"
        ))
        .unwrap();
        assert!(on.chaos().enabled);
        assert_eq!(
            on.chaos().allowed_kinds.iter().collect::<Vec<_>>(),
            ["partition", "pause"]
        );
        assert_eq!(on.chaos().max_duration, std::time::Duration::from_secs(90));
        assert_eq!(off.chaos().token_ttl, std::time::Duration::from_secs(60));
        let short = parse(&format!("{base}[chaos]\ntoken_ttl = \"2s\"\n")).unwrap();
        assert_eq!(short.chaos().token_ttl, std::time::Duration::from_secs(2));
        let err = |text: &str| {
            parse(&format!("{base}[chaos]\n{text}"))
                .unwrap_err()
                .to_string()
        };
        for (text, key) in [
            (
                "allowed_kinds = [\"partition\", \"nuke\"]\n",
                "key `chaos.allowed_kinds[1]` = \"nuke\"",
            ),
            (
                "allowed_kinds = [\"loss\", \"loss\"]\n",
                "key `chaos.allowed_kinds[1]` = \"loss\"",
            ),
            // A service's own type is `custom:<name>`, with a name by the usual rule.
            (
                "allowed_kinds = [\"custom:Slow Disk\"]\n",
                "key `chaos.allowed_kinds[0]` = \"custom:Slow Disk\"",
            ),
            ("max_duration = \"0s\"\n", "key `chaos.max_duration`"),
            ("max_duration = \"25h\"\n", "key `chaos.max_duration`"),
            ("token_ttl = \"500ms\"\n", "key `chaos.token_ttl`"),
            ("token_ttl = \"11m\"\n", "key `chaos.token_ttl`"),
            ("enabeld = true\n", "enabeld"),
        ] {
            let message = err(text);
            assert!(message.contains(key), "{text}: {message}");
        }
        // Every kind name the core gives is accepted.
        let all = KIND_NAMES.map(|k| format!("\"{k}\"")).join(", ");
        assert!(parse(&format!("{base}[chaos]\nallowed_kinds = [{all}]\n")).is_ok());
        let custom = parse(&format!(
            "{base}[chaos]\nallowed_kinds = [\"custom:slow-disk\"]\n"
        ))
        .unwrap();
        assert!(custom.chaos().allowed_kinds.contains("custom:slow-disk"));
    }

    /// `[queues]`: needs `[shards]` and a `data_dir`; every error names its key under
    /// `queues.`.
    #[test]
    fn queues_parse_and_errors_name_the_key() {
        let base = format!("id = 1\nlisten = \"127.0.0.1:7001\"\n{TLS}");
        let shards = "[leadership]\nvoters = [1]\n[shards]\nnamespaces = { jobs = 4 }\n";
        let c = parse(&format!(
            "{base}{shards}[queues]\ndata_dir = \"q\"\nreplicas = 2\nhigh_watermark = 100\n"
        ))
        .unwrap();
        let q = c.queues().unwrap();
        assert_eq!(q.shards.shard_count(), 4);
        assert_eq!(q.queue.replicas(), 2);
        assert_eq!(
            (q.queue.high_watermark(), q.queue.low_watermark()),
            (Some(100), 50)
        );
        assert_eq!(q.data_dir.as_deref(), Some(Path::new("q")));
        assert_eq!(
            q.ack_after,
            AckAfter::Sync,
            "acknowledged once synced by default"
        );
        let write = parse(&format!(
            "{base}{shards}[queues]\ndata_dir = \"q\"\nack_after = \"write\"\n"
        ))
        .unwrap();
        assert_eq!(write.queues().unwrap().ack_after, AckAfter::Write);
        let err = |text: &str| parse(&format!("{base}{text}")).unwrap_err().to_string();
        let cases = [
            ("[queues]\ndata_dir = \"q\"\n", "key `queues`"),
            (
                &format!("{shards}[queues]\nreplicas = 1\n") as &str,
                "key `queues.data_dir`",
            ),
            (
                &format!("{shards}[queues]\ndata_dir = \"q\"\nreplicas = 9\n"),
                "key queues.replicas = 9",
            ),
            (
                &format!(
                    "{shards}[queues]\ndata_dir = \"q\"\nhigh_watermark = 10\nlow_watermark = 10\n"
                ),
                "key `queues.low_watermark`",
            ),
            (
                &format!("{shards}[queues]\ndata_dir = \"q\"\nlow_watermark = 1\n"),
                "key `queues.low_watermark`",
            ),
            (
                &format!("{shards}[queues]\ndata_dir = \"q\"\nlease_timeout = \"1ms\"\n"),
                "key queues.lease_timeout",
            ),
            (
                &format!("{shards}[queues]\ndata_dir = \"q\"\nack_after = \"fsync\"\n"),
                "key `queues.ack_after`",
            ),
        ];
        for (text, key) in cases {
            let e = err(text);
            assert!(e.starts_with(key), "{text:?}: {e}");
        }
        // Unknown keys are refused (the core's part denies them).
        assert!(
            parse(&format!(
                "{base}{shards}[queues]\ndata_dir = \"q\"\nreplica = 1\n"
            ))
            .is_err()
        );
        // Without replicas nothing needs to survive a restart: no data_dir needed.
        assert!(parse(&format!("{base}{shards}[queues]\nreplicas = 0\n")).is_ok());
    }

    #[test]
    fn control_limits_parse_with_their_defaults() {
        let base = format!("id = 1\nlisten = \"127.0.0.1:7001\"\n{TLS}");
        let defaults = parse(&base).unwrap().control_limits();
        assert_eq!(defaults, ConnectionLimits::default());
        assert_eq!(
            defaults.max_connections(),
            meshkit_control::admission::MAX_CONNECTIONS
        );
        assert_eq!(
            defaults.idle_timeout(),
            meshkit_control::admission::IDLE_TIMEOUT
        );
        let set = parse(&format!(
            "{base}[control_limits]\nmax_connections = 100\nreserved_authenticated = 10\n\
             max_handshakes = 20\nmax_per_address = 3\nhandshake_timeout = \"2s\"\n\
             first_request_timeout = \"3s\"\nidle_timeout = \"4m\"\n"
        ))
        .unwrap()
        .control_limits();
        let s = std::time::Duration::from_secs;
        assert_eq!(
            (
                set.max_connections(),
                set.reserved_authenticated(),
                set.max_handshakes(),
                set.max_per_address(),
                set.max_anonymous()
            ),
            (100, 10, 20, 3, 70)
        );
        assert_eq!(
            (
                set.handshake_timeout(),
                set.first_request_timeout(),
                set.idle_timeout()
            ),
            (s(2), s(3), s(240))
        );
        // One key alone keeps the other defaults.
        let one = parse(&format!("{base}[control_limits]\nmax_per_address = 4\n"))
            .unwrap()
            .control_limits();
        assert_eq!(one.max_per_address(), 4);
        assert_eq!(one.max_connections(), 1024);
    }

    /// A bad `[control_limits]` value is refused naming its key.
    #[test]
    fn control_limits_errors_name_their_key() {
        let base = format!("id = 1\nlisten = \"127.0.0.1:7001\"\n{TLS}[control_limits]\n");
        let cases = [
            ("max_connections = 0", "control_limits.max_connections"),
            ("max_connections = 65537", "control_limits.max_connections"),
            ("max_connections = -1", "max_connections"),
            // The default reserved (256) and handshakes (128) leave no anonymous pool.
            ("max_connections = 384", "control_limits.max_connections"),
            (
                "reserved_authenticated = 900",
                "control_limits.reserved_authenticated",
            ),
            ("max_handshakes = 0", "control_limits.max_handshakes"),
            ("max_handshakes = 800", "control_limits.max_handshakes"),
            ("max_per_address = 0", "control_limits.max_per_address"),
            ("max_per_address = 1025", "control_limits.max_per_address"),
            (
                "handshake_timeout = \"0s\"",
                "control_limits.handshake_timeout",
            ),
            (
                "handshake_timeout = \"2m\"",
                "control_limits.handshake_timeout",
            ),
            (
                "first_request_timeout = \"100ms\"",
                "control_limits.first_request_timeout",
            ),
            ("idle_timeout = \"2h\"", "control_limits.idle_timeout"),
            ("idle_timeout = \"soon\"", "idle_timeout"),
            ("max_streams = 4", "max_streams"),
        ];
        for (line, key) in cases {
            let err = parse(&format!("{base}{line}\n")).unwrap_err().to_string();
            assert!(err.contains(key), "{line}: {key:?} not named in: {err}");
        }
    }

    #[test]
    fn control_on_another_port_or_address_is_fine() {
        for control in ["127.0.0.1:8001", "127.0.0.2:7001", "127.0.0.1:0"] {
            let text =
                format!("id = 1\nlisten = \"127.0.0.1:7001\"\ncontrol = \"{control}\"\n{TLS}");
            assert!(parse(&text).is_ok(), "{control}");
        }
        let zero = format!("id = 1\nlisten = \"127.0.0.1:0\"\ncontrol = \"127.0.0.1:0\"\n{TLS}");
        assert!(parse(&zero).is_ok());
    }

    #[test]
    fn check_paths_finds_what_start_would_fail_on() {
        let dir = std::env::temp_dir().join(format!("meshkit-check-paths-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(dir.join("audit-dir")).unwrap();
        std::fs::write(dir.join("a-file"), "x").unwrap();
        let config = |leadership: &str, access: &str| {
            parse(&format!(
                "id = 1\nlisten = \"127.0.0.1:7001\"\n{TLS}{leadership}{access}"
            ))
            .unwrap()
        };
        let data_dir = |path: &Path| {
            format!(
                "[leadership]\nvoters = [1]\ndata_dir = {:?}\n",
                path.display().to_string()
            )
        };
        let audit =
            |path: &Path| format!("[access]\naudit_log = {:?}\n", path.display().to_string());
        // Good: a data_dir to be created under the temp dir, an audit file to be created.
        let good = config(
            &data_dir(&dir.join("raft/new")),
            &audit(&dir.join("audit.jsonl")),
        );
        good.check_paths().unwrap();
        assert!(!dir.join("raft").exists(), "the check created the data_dir");
        assert!(
            !dir.join("audit.jsonl").exists(),
            "the check created the audit file"
        );
        let cases = [
            (
                config("", &audit(&dir.join("audit-dir"))),
                "access.audit_log",
                "is a directory",
            ),
            (
                config("", &audit(&dir.join("missing/audit.jsonl"))),
                "access.audit_log",
                "does not exist",
            ),
            (
                config("", &audit(&dir.join("a-file/audit.jsonl"))),
                "access.audit_log",
                "not a directory",
            ),
            (
                config(&data_dir(&dir.join("a-file/raft")), ""),
                "leadership.data_dir",
                "not a directory",
            ),
            // Not writable even as root: the proc filesystem takes no new files.
            (
                config(&data_dir(Path::new("/proc/meshkit-raft")), ""),
                "leadership.data_dir",
                "not writable",
            ),
            (
                config("", &audit(Path::new("/proc/meshkit-audit.jsonl"))),
                "access.audit_log",
                "not writable",
            ),
        ];
        for (config, key, says) in cases {
            let err = config.check_paths().unwrap_err().to_string();
            assert!(
                err.contains(key) && err.contains(says),
                "{key}, {says}: {err}"
            );
        }
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn errors_name_their_key() {
        let base = "id = 1\nlisten = \"127.0.0.1:7001\"\n";
        let cases = [
            (format!("{base}colour = 1\n{TLS}"), "colour"),
            (format!("{base}seeds = [\"1@x\", \"y\"]\n{TLS}"), "seeds[0]"),
            (format!("{base}profile = \"fast\"\n{TLS}"), "profile"),
            (format!("id = 1\nlisten = \"nope\"\n{TLS}"), "listen"),
            (
                format!("{base}{TLS}[membership]\nprobe_interval = \"1ns\"\n"),
                "membership.probe_interval",
            ),
            (base.to_owned(), "tls"),
            (
                format!("{base}{TLS}[metadata]\naddr = \"x\"\n"),
                "metadata.addr",
            ),
            (
                format!("{base}{TLS}[leadership]\nvoters = [1, 1]\n"),
                "leadership.voters[1]",
            ),
            // Security review: seed id 0, one seed id twice, `control` on `listen`'s port.
            (
                format!("{base}seeds = [\"0@127.0.0.1:7002\"]\n{TLS}"),
                "seeds[0]",
            ),
            (
                format!("{base}seeds = [\"2@127.0.0.1:7002\", \"2@127.0.0.1:7003\"]\n{TLS}"),
                "seeds[1]",
            ),
            // Names: host name syntax, a port, and an advertised address peers can dial.
            (
                format!("{base}seeds = [\"2@meshkit_2:7001\"]\n{TLS}"),
                "seeds[0]",
            ),
            (
                format!("{base}seeds = [\"2@meshkit-2\"]\n{TLS}"),
                "seeds[0]",
            ),
            (
                format!("{base}advertise = \"meshkit-1\"\n{TLS}"),
                "advertise",
            ),
            (
                format!("{base}advertise = \"0.0.0.0:7001\"\n{TLS}"),
                "advertise",
            ),
            (
                format!("{base}control = \"127.0.0.1:7001\"\n{TLS}"),
                "control",
            ),
            (
                format!(
                    "id = 1\nlisten = \"0.0.0.0:7001\"\nadvertise = \"10.0.0.1:7001\"\ncontrol = \"127.0.0.1:7001\"\n{TLS}"
                ),
                "control",
            ),
            (
                format!("{base}{TLS}[leadership]\nvoters = []\n"),
                "leadership.voters",
            ),
            (
                format!("{base}{TLS}[leadership]\nvoters = [1]\ncampaign = [\"Bad Scope\"]\n"),
                "leadership.campaign[0]",
            ),
            (
                format!("{base}{TLS}[leadership]\nvoters = [1]\nttl = \"1ms\"\n"),
                "leadership.ttl",
            ),
            (
                format!("{base}{TLS}[leadership]\nvoters = [1]\ndata_dir = \"\"\n"),
                "leadership.data_dir",
            ),
            (
                format!("{base}{TLS}[leadership]\nvoters = [1]\ndata_dir = \"Cargo.toml\"\n"),
                "leadership.data_dir",
            ),
            (
                format!(
                    "{base}{TLS}[leadership]\nvoters = [1]\n[leadership.raft]\nelection_ticks = 1\n"
                ),
                "leadership.raft.election_ticks",
            ),
        ];
        for (text, key) in cases {
            let err = parse(&text).unwrap_err().to_string();
            assert!(err.contains(key), "{key:?} not named in: {err}");
        }
    }

    /// The builder and the file are one validation: the same keys give the same configuration,
    /// and a refused value is refused with the key the file would name.
    #[test]
    fn the_builder_validates_as_node_toml_does() {
        let built = NodeConfig::builder(1)
            .identity("a.pem", "a.key", "ca.pem")
            .listen("127.0.0.1:7001".parse().unwrap())
            .control("127.0.0.1:8001".parse().unwrap())
            .seed(2, "127.0.0.1:7002".parse::<SocketAddr>().unwrap())
            .metadata("cluster", "eu-1")
            .voters([1, 2, 3])
            .campaign("global-control")
            .lease_ttl(std::time::Duration::from_secs(5))
            .shards(meshkit::shard::RawShardConfig {
                namespaces: [("orders".to_owned(), 64)].into(),
                ..Default::default()
            })
            .build()
            .expect("a valid configuration");
        let file = parse(&format!(
            "id = 1\nlisten = \"127.0.0.1:7001\"\ncontrol = \"127.0.0.1:8001\"\n\
             seeds = [\"2@127.0.0.1:7002\"]\n{TLS}[metadata]\ncluster = \"eu-1\"\n\
             [leadership]\nvoters = [1, 2, 3]\ncampaign = [\"global-control\"]\nttl = \"5s\"\n\
             [shards]\nnamespaces = {{ orders = 64 }}\n"
        ))
        .expect("the same keys in a file");
        assert_eq!(format!("{built:?}"), format!("{file:?}"));

        let builder = || NodeConfig::builder(1).identity("a.pem", "a.key", "ca.pem");
        let key_of = |result: Result<NodeConfig, NodeConfigError>| match result {
            Err(NodeConfigError::Invalid { key, .. } | NodeConfigError::Scope { key, .. }) => key,
            other => panic!("expected a refused key, got {other:?}"),
        };
        assert_eq!(key_of(NodeConfig::builder(1).build()), "tls");
        assert_eq!(
            key_of(builder().data_dir("raft").build()),
            "leadership.voters"
        );
        assert_eq!(
            key_of(builder().voters([1]).campaign("Bad Scope").build()),
            "leadership.campaign[0]"
        );
        let shards = meshkit::shard::RawShardConfig {
            namespaces: [("orders".to_owned(), 8)].into(),
            ..Default::default()
        };
        assert_eq!(key_of(builder().shards(shards).build()), "shards");
        assert_eq!(
            key_of(builder().listen("0.0.0.0:7001".parse().unwrap()).build()),
            "advertise"
        );
    }
}
