//! [`spawn_scheduler`]: the daily report after each UTC midnight, the weekly one after each
//! Monday 00:00 UTC.
//!
//! One tokio task; reports are generated on the blocking pool one at a time. It wakes at most
//! every [`MAX_SLEEP`] to re-read the wall clock (a suspended laptop or a stepped clock does
//! not delay a report by a day), writes a period's report [`REPORT_DELAY`] after its end (the
//! history writer has stored the last runs by then), never backfills periods that ended before
//! it started, and keeps `keep` reports of each period. A failed report is logged, not retried
//! (the next period's comes as usual; `meshkit-probe report --end` writes a missed one).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use tokio::task::JoinHandle;

use super::accounting::Period;
use super::{ReportConfig, generate, last_period_end};
use crate::record::now_unix_ms;

/// How long after a period's end its report is written.
pub const REPORT_DELAY: std::time::Duration = std::time::Duration::from_secs(60);
/// The longest the scheduler sleeps before it looks at the wall clock again.
const MAX_SLEEP: std::time::Duration = std::time::Duration::from_secs(600);

/// The running scheduler; dropping it stops it.
#[derive(Debug)]
pub struct ReportScheduler {
    task: Option<JoinHandle<()>>,
}

impl ReportScheduler {
    /// Whether a task runs (`[reports] dir` was set and a period enabled).
    pub fn is_running(&self) -> bool {
        self.task.as_ref().is_some_and(|t| !t.is_finished())
    }

    /// Stops the scheduler (a report being written completes on the blocking pool).
    pub fn stop(mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}

impl Drop for ReportScheduler {
    fn drop(&mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}

/// Starts the scheduled reports of `config` from the history at `history_path`, on the current
/// tokio runtime. Without `dir`, or with both periods off, nothing runs. `agent` names the
/// agent in its logs.
pub fn spawn_scheduler(
    config: &ReportConfig,
    history_path: PathBuf,
    agent: String,
) -> ReportScheduler {
    spawn_with_clock(config, history_path, agent, Arc::new(now_unix_ms))
}

/// The wall clock the scheduler reads, ms since the Unix epoch.
pub(crate) type Clock = Arc<dyn Fn() -> i64 + Send + Sync>;

pub(crate) fn spawn_with_clock(
    config: &ReportConfig,
    history_path: PathBuf,
    agent: String,
    clock: Clock,
) -> ReportScheduler {
    let Some(dir) = config.dir.clone() else {
        return ReportScheduler { task: None };
    };
    if !config.daily && !config.weekly {
        return ReportScheduler { task: None };
    }
    let config = config.clone();
    let task = tokio::spawn(async move {
        // Periods that ended before the start are not written (no backfill).
        let mut done_daily = last_period_end(Period::Daily, clock());
        let mut done_weekly = last_period_end(Period::Weekly, clock());
        tracing::info!(%agent, dir = %dir.display(), "reports scheduled");
        loop {
            let now = clock();
            let delay_ms = i64::try_from(REPORT_DELAY.as_millis()).unwrap_or(i64::MAX);
            let due_daily = last_period_end(Period::Daily, now - delay_ms);
            let due_weekly = last_period_end(Period::Weekly, now - delay_ms);
            if config.daily && due_daily > done_daily {
                write(
                    &history_path,
                    &dir,
                    Period::Daily,
                    due_daily,
                    config.keep,
                    &agent,
                )
                .await;
                done_daily = due_daily;
            }
            if config.weekly && due_weekly > done_weekly {
                write(
                    &history_path,
                    &dir,
                    Period::Weekly,
                    due_weekly,
                    config.keep,
                    &agent,
                )
                .await;
                done_weekly = due_weekly;
            }
            // Sleep until the next daily end plus the delay, at most MAX_SLEEP.
            let next_due = done_daily.max(due_daily) + 86_400_000 + delay_ms;
            let wait_ms = u64::try_from((next_due - clock()).max(1)).unwrap_or(1);
            tokio::time::sleep(std::time::Duration::from_millis(wait_ms).min(MAX_SLEEP)).await;
        }
    });
    ReportScheduler { task: Some(task) }
}

async fn write(history: &Path, dir: &Path, period: Period, end: i64, keep: u32, agent: &str) {
    let (history, dir2) = (history.to_path_buf(), dir.to_path_buf());
    let result = tokio::task::spawn_blocking(move || generate(&history, period, end, &dir2)).await;
    match result {
        Ok(Ok(files)) => {
            tracing::info!(%agent, period = period.as_str(), html = %files.html.display(), "scheduled report written");
        }
        Ok(Err(error)) => {
            tracing::warn!(%agent, period = period.as_str(), %error, "scheduled report not written");
        }
        Err(error) => {
            tracing::error!(%agent, period = period.as_str(), %error, "scheduled report panicked");
        }
    }
    if let Err(error) = prune_reports(dir, period, keep) {
        tracing::warn!(%agent, dir = %dir.display(), %error, "old reports not deleted");
    }
}

/// Deletes the oldest reports of `period` in `dir` beyond `keep` (their names sort by date).
fn prune_reports(dir: &Path, period: Period, keep: u32) -> std::io::Result<()> {
    let prefix = format!("{}-", period.as_str());
    let mut stems: Vec<String> = std::fs::read_dir(dir)?
        .filter_map(Result::ok)
        .filter_map(|e| {
            let name = e.file_name().into_string().ok()?;
            let stem = name.strip_suffix(".html")?;
            stem.starts_with(&prefix).then(|| stem.to_owned())
        })
        .collect();
    stems.sort();
    let excess = stems
        .len()
        .saturating_sub(usize::try_from(keep).unwrap_or(usize::MAX));
    for stem in &stems[..excess] {
        for ext in ["html", "md", "json"] {
            match std::fs::remove_file(dir.join(format!("{stem}.{ext}"))) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e),
                _ => {}
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::history::History;

    /// Paused tokio time drives a wall clock that starts Sunday 2026-12-06 23:00 UTC: the
    /// daily report of the 6th appears after midnight (+ the delay), the weekly of the week
    /// from Monday the 30th too, and `keep` bounds the daily ones.
    #[tokio::test(start_paused = true)]
    async fn reports_appear_after_midnight_and_monday() {
        let dir = meshkit_testkit::fixtures::TempDir::new("report-schedule");
        let history = dir.path().join("h.sqlite");
        let out = dir.path().join("reports");
        let start_wall = 1_796_598_000_000; // 2026-12-06 23:00 UTC
        {
            let mut h = History::open(&history).unwrap();
            h.record_heartbeat("probe-a", start_wall).unwrap();
        }
        let t0 = tokio::time::Instant::now();
        let clock: Clock = Arc::new(move || {
            start_wall + i64::try_from(t0.elapsed().as_millis()).unwrap_or(i64::MAX)
        });
        let scheduler = spawn_with_clock(
            &ReportConfig {
                dir: Some(out.clone()),
                daily: true,
                weekly: true,
                keep: 2,
            },
            history,
            "probe-a".into(),
            clock,
        );
        assert!(scheduler.is_running());
        // 23:00 to 00:00:30: nothing yet (ended, but not REPORT_DELAY ago).
        tokio::time::sleep(std::time::Duration::from_secs(3630)).await;
        assert!(!out.join("daily-2026-12-06.html").exists());
        // Past 00:01: the daily report of the 6th and the weekly from the 30th of November.
        tokio::time::sleep(std::time::Duration::from_secs(60)).await;
        wait_for(&out.join("daily-2026-12-06.html")).await;
        wait_for(&out.join("weekly-2026-11-30.html")).await;
        assert!(out.join("daily-2026-12-06.md").exists());
        // Three more days: only the two latest daily reports are kept.
        tokio::time::sleep(std::time::Duration::from_secs(3 * 86_400)).await;
        wait_for(&out.join("daily-2026-12-09.html")).await;
        let dailies = || {
            let mut names: Vec<String> = std::fs::read_dir(&out)
                .unwrap()
                .filter_map(|e| e.unwrap().file_name().into_string().ok())
                .filter(|n| n.starts_with("daily-") && n.ends_with(".html"))
                .collect();
            names.sort();
            names
        };
        for _ in 0..200 {
            if dailies().len() == 2 {
                break;
            }
            real_pause().await;
        }
        assert_eq!(
            dailies(),
            vec!["daily-2026-12-08.html", "daily-2026-12-09.html"]
        );
        assert!(out.join("weekly-2026-11-30.html").exists());
        scheduler.stop();
    }

    /// The report is written on the blocking pool, in real time: wait a little of it, and let
    /// the scheduler task run, without moving the paused clock.
    async fn real_pause() {
        std::thread::sleep(std::time::Duration::from_millis(20));
        tokio::task::yield_now().await;
    }

    async fn wait_for(path: &Path) {
        // Bounded: 10 s of real time.
        for _ in 0..500 {
            if path.exists() {
                return;
            }
            real_pause().await;
        }
        panic!("{} never appeared", path.display());
    }

    #[test]
    fn disabled_schedules_spawn_nothing() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        let _guard = rt.enter();
        let none = spawn_scheduler(&ReportConfig::default(), PathBuf::from("h"), "a".into());
        assert!(!none.is_running());
        let off = spawn_scheduler(
            &ReportConfig {
                dir: Some(PathBuf::from("r")),
                daily: false,
                weekly: false,
                keep: 1,
            },
            PathBuf::from("h"),
            "a".into(),
        );
        assert!(!off.is_running());
    }
}
