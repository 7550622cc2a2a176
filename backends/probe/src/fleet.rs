//! Fleets: agents probing the same clusters form their own small MeshKit mesh and own probe
//! groups through shard leases, so each group runs on one agent and moves when that agent dies.

use serde::Deserialize;

use crate::config::ConfigError;

/// `[fleet]` as written; without it the agent runs every group itself.
#[derive(Clone, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct RawFleetConfig {
    /// The agent's own node config (a `node.toml` of the agents' mesh), relative to the
    /// config file's directory.
    pub node: Option<String>,
}

/// `[fleet]`, validated.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct FleetConfig {
    /// The agent's own node config.
    pub node: Option<std::path::PathBuf>,
}

impl RawFleetConfig {
    /// Checks every key; relative paths are taken from `base`.
    ///
    /// # Errors
    ///
    /// [`ConfigError`] naming the key.
    pub fn validate(self, base: &std::path::Path) -> Result<FleetConfig, ConfigError> {
        Ok(FleetConfig {
            node: self.node.map(|n| base.join(n)),
        })
    }
}
