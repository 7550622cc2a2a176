//! The one error every config section returns: which key, what was wrong, what is allowed.

use thiserror::Error;

/// A configuration value was refused. Nothing was applied: at start the agent does not run, on
/// a reload the running configuration stays.
#[derive(Clone, Debug, Error, PartialEq, Eq)]
#[error("{key}: {problem}")]
pub struct ConfigError {
    /// The key, as a path into the file: `group[2].interval`, `alerting.alertmanager[0]`.
    pub key: String,
    /// What was wrong and what is allowed, in words.
    pub problem: String,
}

impl ConfigError {
    /// The error of `key`.
    pub fn new(key: impl Into<String>, problem: impl Into<String>) -> Self {
        Self {
            key: key.into(),
            problem: problem.into(),
        }
    }
}
