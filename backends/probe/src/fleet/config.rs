//! `[fleet]`: which node of the agents' own mesh this agent runs, and which shard namespace
//! holds the probe groups.
//!
//! ```toml
//! [fleet]
//! node = "agent-node.toml"     # the agent's own node.toml of the agents' mesh (relative to
//!                              # probes.toml's directory); it must have [leadership] and
//!                              # [shards] with the namespace below
//! namespace = "probe-groups"   # optional: the [shards] namespace of the probe groups
//! ```
//!
//! Validation reads the node's file (as `meshkitd check-config` would, without its TLS files or
//! ports), so `meshkit-probe check-config` already refuses a node file that could not carry a
//! fleet: one without `[leadership]`, without `[shards]`, or whose `[shards]` lacks the
//! namespace. Every error names the `[fleet]` key it comes from and says what to add.

use std::path::{Path, PathBuf};
use std::time::Duration;

use meshkit::shard::ShardId;
use meshkit_node::config::NodeConfig;
use serde::Deserialize;

use crate::config::ConfigError;

/// The `[shards]` namespace of the probe groups when `namespace` is absent.
pub const DEFAULT_NAMESPACE: &str = "probe-groups";

/// `[fleet]` as written; without the section the agent runs every group itself.
#[derive(Clone, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct RawFleetConfig {
    /// The agent's own node config (a `node.toml` of the agents' mesh), relative to the
    /// config file's directory.
    pub node: Option<String>,
    /// The `[shards]` namespace whose shards hold the probe groups (default
    /// [`DEFAULT_NAMESPACE`]).
    pub namespace: Option<String>,
}

/// `[fleet]`, validated: built only by [`RawFleetConfig::validate`]. Two are equal when the
/// node's file, the namespace and what the fleet read from the file are (a reload that changes
/// none of them keeps the running fleet).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FleetConfig {
    node: PathBuf,
    namespace: String,
    shards: u32,
    shard_ttl: Duration,
    detection: Duration,
}

impl FleetConfig {
    /// The agent's own node config, resolved against the config file's directory.
    pub fn node(&self) -> &Path {
        &self.node
    }

    /// The `[shards]` namespace of the probe groups.
    pub fn namespace(&self) -> &str {
        &self.namespace
    }

    /// How many shards that namespace has in the node's `[shards]` (0 without a fleet): the
    /// modulus of [`shard_of`](super::shard_of).
    pub fn shard_count(&self) -> u32 {
        self.shards
    }

    /// The TTL of the shard leases (`[shards] ttl` of the node's file): a dead agent's groups
    /// move once their leases run out, so this bounds the failover time
    /// ([`failover_target`](super::failover_target)).
    pub fn shard_ttl(&self) -> Duration {
        self.shard_ttl
    }

    /// How long the agents' mesh takes at most to hold a silent agent dead, from the node's
    /// `[membership]` ([`detection_time`](super::detection_time)).
    pub fn detection(&self) -> Duration {
        self.detection
    }

    /// The failover bound of this fleet ([`failover_target`](super::failover_target)).
    pub fn failover_target(&self) -> Duration {
        super::failover_target(self.shard_ttl, self.detection)
    }
}

impl RawFleetConfig {
    /// Checks every key; relative paths are taken from `base`. Reads the node's file.
    ///
    /// # Errors
    ///
    /// [`ConfigError`] naming the key: `fleet.node` when it is missing (a `[fleet]` section
    /// without a node), unreadable, invalid as a `node.toml`, or without `[leadership]` or `[shards]`;
    /// `fleet.namespace` when it is not a valid shard namespace or not one of the node's
    /// `[shards]` namespaces.
    pub fn validate(self, base: &Path) -> Result<FleetConfig, ConfigError> {
        let namespace = self
            .namespace
            .unwrap_or_else(|| DEFAULT_NAMESPACE.to_owned());
        if let Err(error) = ShardId::new(&namespace, 0) {
            return Err(ConfigError::new(
                "fleet.namespace",
                format!("{namespace:?}: {error}"),
            ));
        }
        let Some(node) = self.node else {
            return Err(ConfigError::new(
                "fleet.node",
                "missing: a fleet needs the agent's own node.toml of the agents' mesh \
                 (node = \"agent-node.toml\", with [leadership] and [shards]); without [fleet] \
                 the agent runs every group itself",
            ));
        };
        if node.trim().is_empty() {
            return Err(ConfigError::new(
                "fleet.node",
                "is empty: expected the path of the agent's own node.toml",
            ));
        }
        let path = base.join(&node);
        let config = load_node(&path)?;
        let (shards, shard_ttl) = fleet_shards(&config, &path, &namespace)?;
        Ok(FleetConfig {
            node: path,
            namespace,
            shards,
            shard_ttl,
            detection: super::detection_time(config.membership()),
        })
    }
}

/// Reads and validates the node's file; errors name `fleet.node` and then the node's own key.
pub(super) fn load_node(path: &Path) -> Result<NodeConfig, ConfigError> {
    NodeConfig::load(path)
        .map_err(|error| ConfigError::new("fleet.node", format!("{}: {error}", path.display())))
}

/// The shard count and lease TTL of `namespace` in the node's `[shards]`, or what to add.
pub(super) fn fleet_shards(
    config: &NodeConfig,
    path: &Path,
    namespace: &str,
) -> Result<(u32, Duration), ConfigError> {
    let shown = path.display();
    let Some(leadership) = config.leadership() else {
        return Err(ConfigError::new(
            "fleet.node",
            format!(
                "{shown} has no [leadership] section: the agents own probe groups through \
                 shard leases, so add [leadership] (voters = [1, 2, 3], the same on every agent) \
                 and [shards] (namespaces = {{ {namespace} = 16 }})"
            ),
        ));
    };
    let Some(shards) = leadership.shards.as_ref() else {
        return Err(ConfigError::new(
            "fleet.node",
            format!(
                "{shown} has no [shards] section: add [shards] with namespaces = \
                 {{ {namespace} = 16 }} (the same on every agent; a group runs on the agent \
                 holding its shard)"
            ),
        ));
    };
    let Some((_, count)) = shards.namespaces().find(|(ns, _)| *ns == namespace) else {
        let known: Vec<&str> = shards.namespaces().map(|(ns, _)| ns).collect();
        return Err(ConfigError::new(
            "fleet.namespace",
            format!(
                "{namespace:?} is not a namespace of [shards] in {shown} (it has {}): add \
                 {namespace} = 16 to its [shards] namespaces, or set fleet.namespace to one of \
                 those",
                known.join(", ")
            ),
        ));
    };
    Ok((count, shards.ttl()))
}
