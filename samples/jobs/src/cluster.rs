//! The cluster file, `jobs.toml`: one file for every node of the sample (each `mesh-jobs run`
//! picks its own `[[nodes]]` entry by `--id`), turned into a MeshKit [`NodeConfig`] with the
//! builder. Paths in the file are relative to the file's directory.
//!
//! ```toml
//! certs = "certs"          # ca.pem, node-<id>.pem/.key, token-signing.pub (`mesh-jobs init`)
//! data = "data"            # data/node-<id>/: Raft log, queue checkpoints, results, pid
//! shards = 4               # queues: one per shard of the namespace `jobs`
//! replicas = 1             # replicas holding a job before its enqueue is acknowledged
//! lease_timeout = "3s"     # a worker's lease on a job without heartbeat
//! shard_ttl = "3s"         # a shard's lease: a dead owner's queue moves after it
//! recovery_wait = "2s"     # a new owner's wait for its replicas' copies
//! workers = 2              # worker tasks per node
//!
//! [[nodes]]                # every node: the first three are the Raft voters
//! id = 1
//! gossip = "127.0.0.1:7101"   # QUIC (UDP): membership, leases, queue replication
//! http = "127.0.0.1:7201"     # the service's own HTTP server (and the control API under /mesh)
//! ```

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use meshkit::config::HumanDuration;
use meshkit_node::config::{NodeConfig, NodeConfigError, RawQueuesConfig};
use meshkit_node::control::auth::RawAccessConfig;
use serde::Deserialize;
use thiserror::Error;

/// The namespace whose shards carry the jobs.
pub(crate) const NAMESPACE: &str = "jobs";

/// The serde form of `jobs.toml`.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawCluster {
    certs: PathBuf,
    data: PathBuf,
    shards: u32,
    replicas: Option<u32>,
    lease_timeout: Option<HumanDuration>,
    shard_ttl: Option<HumanDuration>,
    recovery_wait: Option<HumanDuration>,
    workers: Option<u32>,
    nodes: Vec<RawMember>,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawMember {
    id: u64,
    gossip: String,
    http: String,
}

/// One node of the cluster file.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Member {
    /// Its node id (its certificate names `node-<id>`).
    pub(crate) id: u64,
    /// Its QUIC address (gossip, leases, queue replication).
    pub(crate) gossip: SocketAddr,
    /// Its HTTP server: `POST /jobs`, `GET /jobs/stats`, the control API under `/mesh`.
    pub(crate) http: SocketAddr,
}

/// A validated `jobs.toml`.
#[derive(Clone, Debug)]
pub(crate) struct Cluster {
    /// The certificates' directory (absolute).
    pub(crate) certs: PathBuf,
    /// The data directory (absolute): `node-<id>/` per node, `acked.jsonl` for `push`.
    pub(crate) data: PathBuf,
    /// Shards (queues) of the namespace `jobs`.
    pub(crate) shards: u32,
    /// Replicas before an acknowledgement.
    pub(crate) replicas: u32,
    /// A worker's lease without heartbeat.
    pub(crate) lease_timeout: Duration,
    /// A shard lease's TTL: how long a dead owner's queue waits for its next owner.
    pub(crate) shard_ttl: Duration,
    /// A new owner's wait for its replicas' offers.
    pub(crate) recovery_wait: Duration,
    /// Worker tasks per node.
    pub(crate) workers: u32,
    /// The nodes, in file order.
    pub(crate) members: Vec<Member>,
}

/// Why `jobs.toml` was refused; the message names the file and the key.
#[derive(Debug, Error)]
pub(crate) enum ClusterError {
    /// The file could not be read.
    #[error("{path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// Not TOML of the expected shape (serde's message names the key).
    #[error("{path}: {source}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// Why.
        source: Box<toml::de::Error>,
    },
    /// A key's value is out of range.
    #[error("{path}: key `{key}` = {value}: {expected}")]
    Invalid {
        /// The file.
        path: PathBuf,
        /// The key.
        key: String,
        /// Its value as written.
        value: String,
        /// What is allowed.
        expected: &'static str,
    },
    /// `--id` names no `[[nodes]]` entry.
    #[error("{path}: no [[nodes]] entry with id = {id}")]
    NoSuchNode {
        /// The file.
        path: PathBuf,
        /// The id asked for.
        id: u64,
    },
    /// MeshKit refused the node configuration built from the file (names MeshKit's key).
    #[error("{path}: node {id}: {source}")]
    Node {
        /// The file.
        path: PathBuf,
        /// The node.
        id: u64,
        /// MeshKit's reason.
        source: Box<NodeConfigError>,
    },
}

/// Most shards the sample takes: each is a queue and a lease.
const MAX_SHARDS: u32 = 1024;
/// Most worker tasks per node.
const MAX_WORKERS: u32 = 64;
/// Most nodes in the file (the sample's walkthrough runs three).
const MAX_NODES: usize = 16;

impl Cluster {
    /// Reads and validates `path`.
    pub(crate) fn load(path: &Path) -> Result<Self, ClusterError> {
        let text = std::fs::read_to_string(path).map_err(|source| ClusterError::Read {
            path: path.to_owned(),
            source,
        })?;
        let raw: RawCluster = toml::from_str(&text).map_err(|source| ClusterError::Parse {
            path: path.to_owned(),
            source: Box::new(source),
        })?;
        let dir = path.parent().unwrap_or(Path::new("."));
        Self::validate(raw, dir, path)
    }

    fn validate(raw: RawCluster, dir: &Path, path: &Path) -> Result<Self, ClusterError> {
        let invalid = |key: &str, value: String, expected| ClusterError::Invalid {
            path: path.to_owned(),
            key: key.to_owned(),
            value,
            expected,
        };
        if !(1..=MAX_SHARDS).contains(&raw.shards) {
            return Err(invalid("shards", raw.shards.to_string(), "from 1 to 1024"));
        }
        let workers = raw.workers.unwrap_or(2);
        if !(1..=MAX_WORKERS).contains(&workers) {
            return Err(invalid("workers", workers.to_string(), "from 1 to 64"));
        }
        if raw.nodes.is_empty() || raw.nodes.len() > MAX_NODES {
            return Err(invalid(
                "nodes",
                format!("{} entries", raw.nodes.len()),
                "from 1 to 16 [[nodes]] entries",
            ));
        }
        let replicas = raw.replicas.unwrap_or(1);
        if replicas as usize >= raw.nodes.len() || replicas > 8 {
            return Err(invalid(
                "replicas",
                replicas.to_string(),
                "at most 8 and fewer than the nodes (a replica is another node)",
            ));
        }
        let mut members = Vec::new();
        let mut seen = BTreeMap::new();
        for (i, node) in raw.nodes.iter().enumerate() {
            if node.id == 0 || seen.insert(node.id, i).is_some() {
                return Err(invalid(
                    &format!("nodes[{i}].id"),
                    node.id.to_string(),
                    "a non-zero id, each once",
                ));
            }
            let addr = |key: &str, text: &str| {
                text.parse::<SocketAddr>().map_err(|_| {
                    invalid(
                        &format!("nodes[{i}].{key}"),
                        format!("{text:?}"),
                        "an ip:port such as \"127.0.0.1:7101\"",
                    )
                })
            };
            members.push(Member {
                id: node.id,
                gossip: addr("gossip", &node.gossip)?,
                http: addr("http", &node.http)?,
            });
        }
        Ok(Self {
            certs: dir.join(raw.certs),
            data: dir.join(raw.data),
            shards: raw.shards,
            replicas,
            lease_timeout: raw.lease_timeout.map_or(Duration::from_secs(3), |d| d.0),
            shard_ttl: raw.shard_ttl.map_or(Duration::from_secs(3), |d| d.0),
            recovery_wait: raw.recovery_wait.map_or(Duration::from_secs(2), |d| d.0),
            workers,
            members,
        })
    }

    /// The `[[nodes]]` entry of `id`.
    pub(crate) fn member(&self, id: u64, path: &Path) -> Result<Member, ClusterError> {
        self.members
            .iter()
            .find(|m| m.id == id)
            .copied()
            .ok_or_else(|| ClusterError::NoSuchNode {
                path: path.to_owned(),
                id,
            })
    }

    /// Node `id`'s directory: its Raft log, queue checkpoints, results and pid file.
    pub(crate) fn node_dir(&self, id: u64) -> PathBuf {
        self.data.join(format!("node-{id}"))
    }

    /// Node `id`'s results file (one JSON line per job processed or completed).
    pub(crate) fn results_file(&self, id: u64) -> PathBuf {
        self.node_dir(id).join("results.jsonl")
    }

    /// Where `push` records every acknowledged enqueue.
    pub(crate) fn acked_file(&self) -> PathBuf {
        self.data.join("acked.jsonl")
    }

    /// The MeshKit configuration of node `id`, made with the builder: what `node.toml` would
    /// say, in code. The first three nodes are the Raft voters; every node seeds from the
    /// others; MeshKit validates the durations (a refused one names its key).
    pub(crate) fn node_config(&self, id: u64, path: &Path) -> Result<NodeConfig, ClusterError> {
        let me = self.member(id, path)?;
        let certs = &self.certs;
        let dir = self.node_dir(id);
        let mut builder = NodeConfig::builder(id)
            .identity(
                certs.join(format!("node-{id}.pem")),
                certs.join(format!("node-{id}.key")),
                certs.join("ca.pem"),
            )
            .listen(me.gossip)
            .voters(self.members.iter().take(3).map(|m| m.id))
            .data_dir(dir.join("raft"))
            .shards(meshkit::shard::RawShardConfig {
                namespaces: BTreeMap::from([(NAMESPACE.to_owned(), self.shards)]),
                ttl: Some(HumanDuration(self.shard_ttl)),
                tolerance_percent: None,
                max_moves_in_flight: None,
            })
            .queues(RawQueuesConfig {
                data_dir: Some(dir.join("queues")),
                ack_after: None,
                queue: meshkit::queue::RawQueueConfig {
                    replicas: Some(self.replicas),
                    lease_timeout: Some(HumanDuration(self.lease_timeout)),
                    recovery_wait: Some(HumanDuration(self.recovery_wait)),
                    ..meshkit::queue::RawQueueConfig::default()
                },
            })
            // The control API mounted in the service's server authorizes by bearer token
            // (requests there carry no client certificate): tokens signed by this key.
            .access(RawAccessConfig {
                token_key: Some(certs.join("token-signing.pub")),
                ..RawAccessConfig::default()
            })
            // Published to every member: where this node's service answers.
            .metadata("service", "mesh-jobs")
            .metadata("http", &me.http.to_string());
        for other in self.members.iter().filter(|m| m.id != id) {
            builder = builder.seed(other.id, other.gossip);
        }
        builder.build().map_err(|source| ClusterError::Node {
            path: path.to_owned(),
            id,
            source: Box::new(source),
        })
    }

    /// The text of a cluster file for `nodes` nodes on loopback: gossip on `port_base + i`,
    /// HTTP on `port_base + 100 + i`.
    pub(crate) fn template(nodes: u64, port_base: u16) -> String {
        let mut text = String::from(
            "# The sample's cluster (mesh-jobs init): the same file for every node;\n\
             # `mesh-jobs run --config jobs.toml --id N` runs node N. Paths are relative to this file.\n\
             certs = \"certs\"          # ca.pem, node-<id>.pem/.key, token-signing.pub\n\
             data = \"data\"            # data/node-<id>/: Raft log, queue checkpoints, results, pid\n\
             shards = 4               # one queue per shard of the namespace `jobs`\n\
             replicas = 1             # replicas holding a job before its enqueue is acknowledged\n\
             lease_timeout = \"3s\"     # a worker's lease on a job without heartbeat\n\
             shard_ttl = \"3s\"         # a shard's lease: a dead owner's queue moves after it\n\
             recovery_wait = \"2s\"     # a new owner's wait for its replicas' copies\n\
             workers = 2              # worker tasks per node\n",
        );
        for i in 1..=nodes {
            let i16 = u16::try_from(i).unwrap_or(u16::MAX);
            text.push_str(&format!(
                "\n[[nodes]]\nid = {i}\ngossip = \"127.0.0.1:{}\"\nhttp = \"127.0.0.1:{}\"\n",
                port_base.saturating_add(i16),
                port_base.saturating_add(100).saturating_add(i16),
            ));
        }
        text
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Cluster, ClusterError> {
        let raw: RawCluster = toml::from_str(text).map_err(|source| ClusterError::Parse {
            path: PathBuf::from("jobs.toml"),
            source: Box::new(source),
        })?;
        Cluster::validate(raw, Path::new("/x"), Path::new("jobs.toml"))
    }

    #[test]
    fn the_template_is_valid_and_builds_node_configs() {
        let cluster = parse(&Cluster::template(3, 7100)).expect("the template is valid");
        assert_eq!(cluster.members.len(), 3);
        assert_eq!(cluster.members[2].http, "127.0.0.1:7203".parse().unwrap());
        assert_eq!(cluster.certs, Path::new("/x/certs"));
        let config = cluster
            .node_config(2, Path::new("jobs.toml"))
            .expect("MeshKit takes it");
        assert_eq!(config.seeds().len(), 2);
        assert!(config.queues().is_some());
    }

    #[test]
    fn bad_values_name_their_key() {
        let text = Cluster::template(3, 7100);
        let err = parse(&text.replace("shards = 4", "shards = 0")).unwrap_err();
        assert!(err.to_string().contains("key `shards` = 0"), "{err}");
        let err = parse(&text.replace("127.0.0.1:7202", "nowhere")).unwrap_err();
        assert!(err.to_string().contains("key `nodes[1].http`"), "{err}");
        let err = parse(&text.replace("id = 3", "id = 1")).unwrap_err();
        assert!(err.to_string().contains("key `nodes[2].id` = 1"), "{err}");
        let err = parse(&text.replace("replicas = 1", "replicas = 3")).unwrap_err();
        assert!(err.to_string().contains("key `replicas` = 3"), "{err}");
        // MeshKit's own validation, through the builder, names its key.
        let cluster = parse(&text.replace("shard_ttl = \"3s\"", "shard_ttl = \"1ms\""))
            .expect("the file itself is fine");
        let err = cluster.node_config(1, Path::new("jobs.toml")).unwrap_err();
        assert!(err.to_string().contains("shards.ttl"), "{err}");
        let err = parse(&format!("colour = 1\n{text}")).unwrap_err();
        assert!(err.to_string().contains("unknown field `colour`"), "{err}");
    }
}
