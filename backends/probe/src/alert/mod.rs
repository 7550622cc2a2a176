//! Alerts from probe state changes: thresholds, maintenance windows, Alertmanager's API v2 and
//! plain webhooks.

use serde::Deserialize;

use crate::config::ConfigError;

/// `[alerting]` as written.
#[derive(Clone, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct RawAlertConfig {
    /// Alertmanager base URLs (`http://alertmanager:9093`); alerts go to each.
    #[serde(default)]
    pub alertmanager: Vec<String>,
}

/// `[alerting]`, validated.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct AlertConfig {
    /// Alertmanager base URLs.
    pub alertmanager: Vec<String>,
}

impl RawAlertConfig {
    /// Checks every key.
    ///
    /// # Errors
    ///
    /// [`ConfigError`] naming the key.
    pub fn validate(self) -> Result<AlertConfig, ConfigError> {
        Ok(AlertConfig {
            alertmanager: self.alertmanager,
        })
    }
}
