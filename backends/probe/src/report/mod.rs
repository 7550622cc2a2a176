//! Daily and weekly reports from the history: HTML with SVG plots, Markdown and JSON.
//!
//! [`generate`] reads a period of the history ([`crate::history`]) and writes three files into
//! a directory: `<period>-<start date>.html` (a summary table, the incidents, the agent's
//! downtime and one inline SVG plot per probe: success rate and latency p50/p99 per hour or
//! day), the same as `.md`, and the computed figures as `.json`. [`spawn_scheduler`] writes
//! the daily report after each UTC midnight and the weekly one after each Monday 00:00 UTC.
//!
//! # Accounting
//!
#![doc = include_str!("rules.md")]

mod accounting;
mod render;
mod schedule;

use std::path::{Path, PathBuf};

use serde::Deserialize;
use thiserror::Error;

pub use self::accounting::{
    AGENT_GAP_MS, Bucket, HEARTBEAT_MS, Incident, Period, ProbeInput, ProbeSummary, Report, Span,
    agent_downtime, build, incidents, percentile_ms,
};
pub use self::schedule::{REPORT_DELAY, ReportScheduler, spawn_scheduler};
use crate::config::ConfigError;
use crate::history::{History, HistoryError};

/// The accounting rules, as Markdown: the module documentation, the reports' last section and
/// `docs/probes.md` say the same.
pub const RULES_MARKDOWN: &str = include_str!("rules.md");

/// How many reports of each period [`spawn_scheduler`] keeps by default (older ones are
/// deleted): three months of daily reports.
pub const DEFAULT_KEEP: u32 = 92;
/// The most reports of each period one may ask to keep.
pub const MAX_KEEP: u32 = 10_000;

/// `[reports]` as written: scheduled reports (`meshkit-probe report` writes one on demand).
#[derive(Clone, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct RawReportConfig {
    /// Where reports are written, relative to the config file's directory; without it no
    /// report is scheduled.
    pub dir: Option<String>,
    /// Write the daily report after each UTC midnight (default true).
    pub daily: Option<bool>,
    /// Write the weekly report after each Monday 00:00 UTC (default true).
    pub weekly: Option<bool>,
    /// How many reports of each period to keep in `dir`, oldest deleted first (default 92,
    /// 1 to 10,000).
    pub keep: Option<u32>,
}

/// `[reports]`, validated.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReportConfig {
    /// Where scheduled reports are written; `None`: none are.
    pub dir: Option<PathBuf>,
    /// Whether the daily report is scheduled.
    pub daily: bool,
    /// Whether the weekly report is scheduled.
    pub weekly: bool,
    /// Reports of each period kept.
    pub keep: u32,
}

impl Default for ReportConfig {
    fn default() -> Self {
        Self {
            dir: None,
            daily: true,
            weekly: true,
            keep: DEFAULT_KEEP,
        }
    }
}

impl RawReportConfig {
    /// Checks every key; relative paths are taken from `base`.
    ///
    /// # Errors
    ///
    /// [`ConfigError`] naming the key.
    pub fn validate(self, base: &Path) -> Result<ReportConfig, ConfigError> {
        let dir = match self.dir {
            Some(d) if d.trim().is_empty() => {
                return Err(ConfigError::new(
                    "reports.dir",
                    "is empty; give a directory such as \"reports\", or leave the key out to schedule no report",
                ));
            }
            d => d.map(|d| base.join(d)),
        };
        let keep = self.keep.unwrap_or(DEFAULT_KEEP);
        if !(1..=MAX_KEEP).contains(&keep) {
            return Err(ConfigError::new(
                "reports.keep",
                format!("{keep} is out of range: keep 1 to {MAX_KEEP} reports of each period"),
            ));
        }
        Ok(ReportConfig {
            dir,
            daily: self.daily.unwrap_or(true),
            weekly: self.weekly.unwrap_or(true),
            keep,
        })
    }
}

/// The files one report was written to, and what they say.
#[derive(Clone, Debug)]
pub struct ReportFiles {
    /// `<period>-<start date>.html`.
    pub html: PathBuf,
    /// `<period>-<start date>.md`.
    pub markdown: PathBuf,
    /// `<period>-<start date>.json`: [`Report`] as JSON (what `meshkit-probe report --json`
    /// prints).
    pub json: PathBuf,
    /// The figures.
    pub report: Report,
}

/// Why a report was not written. Nothing was written then, or only complete files (each is
/// written to a temporary name and renamed).
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum ReportError {
    /// There is no history file at the path (a typo would otherwise report an empty mesh).
    #[error("no history at {path}: check [history] path, or run the agent first")]
    NoHistory {
        /// The path given.
        path: PathBuf,
    },
    /// Reading the history failed.
    #[error(transparent)]
    History(#[from] HistoryError),
    /// The period's end is outside the dates a report can name (before 1970 or past 9999).
    #[error("the report's end {end_unix_ms} ms is outside 1970..9999")]
    EndOutOfRange {
        /// The end given.
        end_unix_ms: i64,
    },
    /// A file could not be written.
    #[error("cannot write {path}: {source}")]
    Write {
        /// The file.
        path: PathBuf,
        /// What the system said.
        source: std::io::Error,
    },
    /// The figures could not be serialized (a bug: they hold plain numbers and strings).
    #[error("cannot serialize the report: {0}")]
    Json(#[from] serde_json::Error),
}

/// The latest end of a `period` at or before `now_unix_ms`: the last UTC midnight (daily) or
/// Monday 00:00 UTC (weekly). What `meshkit-probe report` uses without `--end`.
pub fn last_period_end(period: Period, now_unix_ms: i64) -> i64 {
    const DAY_MS: i64 = 86_400_000;
    let midnight = now_unix_ms.div_euclid(DAY_MS) * DAY_MS;
    match period {
        Period::Daily => midnight,
        // 1970-01-01 was a Thursday: days since the epoch + 3, mod 7, is days since Monday.
        Period::Weekly => midnight - (midnight / DAY_MS + 3).rem_euclid(7) * DAY_MS,
    }
}

/// Reads the history at `history_path` and writes the `period` report ending at `end_unix_ms`
/// into `out_dir` (created if absent): HTML, Markdown and JSON.
///
/// # Errors
///
/// [`ReportError`]: no history there, the history unreadable, a file not writable.
pub fn generate(
    history_path: &Path,
    period: Period,
    end_unix_ms: i64,
    out_dir: &Path,
) -> Result<ReportFiles, ReportError> {
    // Year 9999 ends near 2.5e14 ms: beyond, dates in file names would not be four digits.
    const MAX_END_MS: i64 = 253_402_300_800_000;
    if !(period.length_ms()..=MAX_END_MS).contains(&end_unix_ms) {
        return Err(ReportError::EndOutOfRange { end_unix_ms });
    }
    let report = compute(history_path, period, end_unix_ms)?;
    std::fs::create_dir_all(out_dir).map_err(|source| ReportError::Write {
        path: out_dir.to_path_buf(),
        source,
    })?;
    let stem = format!(
        "{}-{}",
        period.as_str(),
        render::date(report.span.start_unix_ms)
    );
    let html = out_dir.join(format!("{stem}.html"));
    let markdown = out_dir.join(format!("{stem}.md"));
    let json = out_dir.join(format!("{stem}.json"));
    write_atomically(&html, render::html(&report).as_bytes())?;
    write_atomically(&markdown, render::markdown(&report).as_bytes())?;
    write_atomically(&json, &serde_json::to_vec_pretty(&report)?)?;
    tracing::info!(
        period = period.as_str(),
        html = %html.display(),
        probes = report.probes.len(),
        incidents = report.incidents.len(),
        "report written"
    );
    Ok(ReportFiles {
        html,
        markdown,
        json,
        report,
    })
}

/// The figures of the `period` ending at `end_unix_ms`, without writing anything.
///
/// # Errors
///
/// [`ReportError::NoHistory`], [`ReportError::History`].
pub fn compute(
    history_path: &Path,
    period: Period,
    end_unix_ms: i64,
) -> Result<Report, ReportError> {
    if !history_path.is_file() {
        return Err(ReportError::NoHistory {
            path: history_path.to_path_buf(),
        });
    }
    let history = History::open(history_path)?;
    let span = Span {
        start_unix_ms: end_unix_ms - period.length_ms(),
        end_unix_ms,
    };
    let heartbeats = history.heartbeats(span.start_unix_ms, span.end_unix_ms)?;
    let agents = history.agents(span.start_unix_ms, span.end_unix_ms)?;
    let alerts = history.alerts_before(span.end_unix_ms)?;
    let mut probes = Vec::new();
    for stored in history.probes()? {
        let mut runs = Vec::new();
        history.probe_runs(stored.id, span.start_unix_ms, span.end_unix_ms, |r| {
            runs.push(r);
        })?;
        probes.push(ProbeInput {
            key: stored.key,
            kind: stored.kind,
            target: stored.target,
            runs,
        });
    }
    Ok(build(period, span, agents, &heartbeats, &alerts, probes))
}

/// Writes `bytes` to `path` through a temporary file and a rename, so a reader (a web server
/// serving the directory) never sees half a report.
fn write_atomically(path: &Path, bytes: &[u8]) -> Result<(), ReportError> {
    let err = |source| ReportError::Write {
        path: path.to_path_buf(),
        source,
    };
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    let tmp = PathBuf::from(tmp);
    std::fs::write(&tmp, bytes).map_err(err)?;
    std::fs::rename(&tmp, path).map_err(err)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn period_ends_fall_on_utc_midnight_and_monday() {
        // 2026-12-06 is a Sunday; 16:09 UTC.
        let now = 1_796_573_340_000;
        assert_eq!(render::utc(now), "2026-12-06 16:09 UTC");
        let daily = last_period_end(Period::Daily, now);
        assert_eq!(render::utc(daily), "2026-12-06 00:00 UTC");
        let weekly = last_period_end(Period::Weekly, now);
        assert_eq!(render::utc(weekly), "2026-11-30 00:00 UTC");
        // A Monday midnight is its own weekly end.
        assert_eq!(last_period_end(Period::Weekly, weekly), weekly);
        assert_eq!(last_period_end(Period::Daily, daily), daily);
    }

    #[test]
    fn config_errors_name_the_key() {
        let base = Path::new("/etc/probe");
        let err = RawReportConfig {
            keep: Some(0),
            ..RawReportConfig::default()
        }
        .validate(base)
        .unwrap_err();
        assert_eq!(err.key, "reports.keep");
        let err = RawReportConfig {
            dir: Some(String::new()),
            ..RawReportConfig::default()
        }
        .validate(base)
        .unwrap_err();
        assert_eq!(err.key, "reports.dir");
        let ok = RawReportConfig {
            dir: Some("reports".into()),
            weekly: Some(false),
            ..RawReportConfig::default()
        }
        .validate(base)
        .unwrap();
        assert_eq!(ok.dir.as_deref(), Some(base.join("reports").as_path()));
        assert!(ok.daily && !ok.weekly);
        assert_eq!(ok.keep, DEFAULT_KEEP);
    }
}
