//! The history of results and incidents in an embedded SQLite database, with retention.

use std::path::{Path, PathBuf};

use meshkit::Duration;
use serde::Deserialize;

use crate::config::ConfigError;

/// `[history]` as written.
#[derive(Clone, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct RawHistoryConfig {
    /// The database file, relative to the config file's directory (default
    /// `probe-history.sqlite`).
    pub path: Option<String>,
    /// How long results are kept (default `30d`... as a duration string).
    pub retention: Option<String>,
}

/// `[history]`, validated.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HistoryConfig {
    /// The database file.
    pub path: PathBuf,
    /// How long results are kept.
    pub retention: Duration,
}

impl RawHistoryConfig {
    /// Checks every key; relative paths are taken from `base` (the config file's directory).
    ///
    /// # Errors
    ///
    /// [`ConfigError`] naming the key.
    pub fn validate(self, base: &Path) -> Result<HistoryConfig, ConfigError> {
        let path = base.join(self.path.as_deref().unwrap_or("probe-history.sqlite"));
        let retention = match self.retention {
            None => Duration::from_secs(30 * 24 * 3600),
            Some(text) => meshkit::config::parse_duration(&text)
                .map_err(|e| ConfigError::new("history.retention", e.to_string()))?,
        };
        Ok(HistoryConfig { path, retention })
    }
}
