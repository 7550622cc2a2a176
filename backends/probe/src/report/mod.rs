//! Daily and weekly reports from the history: HTML with SVG plots, and Markdown.

use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::config::ConfigError;

/// `[reports]` as written: scheduled reports (`meshkit-probe report` writes one on demand).
#[derive(Clone, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct RawReportConfig {
    /// Where reports are written, relative to the config file's directory; without it no
    /// report is scheduled.
    pub dir: Option<String>,
}

/// `[reports]`, validated.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ReportConfig {
    /// Where scheduled reports are written; `None`: none are.
    pub dir: Option<PathBuf>,
}

impl RawReportConfig {
    /// Checks every key; relative paths are taken from `base`.
    ///
    /// # Errors
    ///
    /// [`ConfigError`] naming the key.
    pub fn validate(self, base: &Path) -> Result<ReportConfig, ConfigError> {
        Ok(ReportConfig {
            dir: self.dir.map(|d| base.join(d)),
        })
    }
}
