//! The history of results and incidents in an embedded SQLite database, with retention.
//!
//! What is kept: every finished run ([`RunRecord`]), every alert transition
//! ([`AlertTransition`], muted ones too) and a heartbeat of the agent each minute. The reports
//! ([`crate::report`]) read nothing else: availability, latency percentiles and incidents all
//! come from these three tables, and agent downtime from the gaps between heartbeats.
//!
//! Rules:
//!
//! - **One writer.** [`HistoryWriter`] owns the connection on a thread of its own; the agent
//!   hands it records through a bounded queue and never waits for the disk. When the queue is
//!   full a record is dropped and counted ([`HistoryStats::dropped`]): a slow disk costs history,
//!   never probe cadence or alert latency.
//! - **Batches.** The writer stores whatever runs queued up since its last write in one
//!   transaction (at most [`MAX_BATCH_RECORDS`]): one fsync for many runs.
//! - **WAL, synchronous = NORMAL.** Readers (a report) do not block the writer; a crash of the
//!   process loses nothing committed, a power loss at most the last transactions, which is
//!   fine for a history.
//! - **Retention.** Everything older than `[history] retention` is deleted at start and every
//!   hour ([`History::prune`]); a probe whose last row went goes too.
//! - **Versioned schema.** A `schema_version` table and append-only migrations run at open;
//!   a file written by a later agent is refused ([`HistoryError::NewerSchema`]).

mod schema;
mod writer;

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use meshkit::Duration;
use meshkit::diag::probe::ProbeResult;
use meshkit_api::alpn::HttpProtocol;
use rusqlite::{Connection, OptionalExtension, params};
use serde::Deserialize;
use thiserror::Error;

pub use self::schema::SCHEMA_VERSION;
pub use self::writer::{
    HEARTBEAT_EVERY, HistoryStats, HistoryWriter, PRUNE_EVERY, WRITER_QUEUE_CAPACITY,
    WriterOptions, spawn_writer, spawn_writer_with,
};
use crate::config::ConfigError;
use crate::record::{AlertName, AlertState, AlertTransition, ProbeKey, RunRecord};

/// The most records the writer stores in one transaction.
pub const MAX_BATCH_RECORDS: usize = 2048;
/// How long a write waits for a lock another connection holds (a report's reader never does
/// in WAL mode; an operator's `sqlite3` shell might) before it gives up and counts an error.
pub const BUSY_TIMEOUT: Duration = Duration::from_secs(10);
/// The shortest retention accepted: pruning runs hourly, a shorter one would not be honoured.
pub const MIN_RETENTION: Duration = Duration::from_secs(3600);

/// `[history]` as written.
#[derive(Clone, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct RawHistoryConfig {
    /// The database file, relative to the config file's directory (default
    /// `probe-history.sqlite`).
    pub path: Option<String>,
    /// How long results are kept: a duration such as `30d`, `12h` or `2w` (default `30d`, at
    /// least `1h`). Longer keeps longer trends for weekly reports at the cost of disk: about
    /// 63 bytes a run (measured: `docs/probes.md`, Reports), so 1,000 probes every 10 s take
    /// about 540 MB a day.
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
        let path = match self.path.as_deref() {
            None => base.join("probe-history.sqlite"),
            Some(p) if p.trim().is_empty() => {
                return Err(ConfigError::new(
                    "history.path",
                    "is empty; give a file name such as \"probe-history.sqlite\"",
                ));
            }
            Some(p) => base.join(p),
        };
        let retention = match self.retention {
            None => Duration::from_secs(30 * 24 * 3600),
            Some(text) => parse_retention(&text)
                .map_err(|problem| ConfigError::new("history.retention", problem))?,
        };
        if retention < MIN_RETENTION {
            return Err(ConfigError::new(
                "history.retention",
                format!(
                    "{retention:?} is shorter than the allowed minimum of 1h (old rows are pruned hourly)"
                ),
            ));
        }
        Ok(HistoryConfig { path, retention })
    }
}

/// `30d`, `2w` (days and weeks, whole numbers) or any duration of the node's grammar (`12h`).
fn parse_retention(text: &str) -> Result<Duration, String> {
    let trimmed = text.trim();
    let whole = |digits: &str, unit_secs: u64| -> Result<Duration, String> {
        digits
            .trim()
            .parse::<u64>()
            .ok()
            .and_then(|n| n.checked_mul(unit_secs))
            .map(Duration::from_secs)
            .ok_or_else(|| {
                format!("{text:?} is not a whole number of days or weeks, such as 30d or 2w")
            })
    };
    if let Some(days) = trimmed.strip_suffix('d') {
        whole(days, 24 * 3600)
    } else if let Some(weeks) = trimmed.strip_suffix('w') {
        whole(weeks, 7 * 24 * 3600)
    } else {
        meshkit::config::parse_duration(trimmed)
            .map_err(|e| format!("{e}; a retention is a duration such as 30d, 2w or 12h"))
    }
}

/// What went wrong with the history. Nothing is half-written: a failed call rolled its
/// transaction back.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum HistoryError {
    /// The file could not be opened or set up (permissions, a directory, not a database).
    #[error("history {path}: cannot open: {source}")]
    Open {
        /// The database file.
        path: PathBuf,
        /// What SQLite said.
        source: rusqlite::Error,
    },
    /// The file was written by a later agent whose schema this one does not know.
    #[error(
        "history {path}: schema version {found} is newer than this agent's {supported}; use a newer meshkit-probe or another file"
    )]
    NewerSchema {
        /// The database file.
        path: PathBuf,
        /// The file's version.
        found: i64,
        /// The latest this build knows.
        supported: i64,
    },
    /// A statement failed (disk full, lock held past [`BUSY_TIMEOUT`], I/O error).
    #[error("history: {operation}: {source}")]
    Sqlite {
        /// What was being done.
        operation: &'static str,
        /// What SQLite said.
        source: rusqlite::Error,
    },
    /// A stored value this build cannot read back (the file was edited by hand).
    #[error("history: {table}.{column} holds {value:?}, which is not a valid value")]
    Corrupt {
        /// The table.
        table: &'static str,
        /// The column.
        column: &'static str,
        /// What was found.
        value: String,
    },
    /// The writer's thread could not be started.
    #[error("history: cannot start the writer thread: {0}")]
    Spawn(#[source] std::io::Error),
}

/// Attaches the operation's name to a SQLite error.
fn sql(operation: &'static str) -> impl FnOnce(rusqlite::Error) -> HistoryError {
    move |source| HistoryError::Sqlite { operation, source }
}

/// What each step of a batch insert is called in its errors.
struct BatchOps {
    begin: &'static str,
    prepare: &'static str,
    insert: &'static str,
    commit: &'static str,
}

const RUN_BATCH: BatchOps = BatchOps {
    begin: "begin a batch of runs",
    prepare: "prepare the run insert",
    insert: "insert a run",
    commit: "commit a batch of runs",
};

const ALERT_BATCH: BatchOps = BatchOps {
    begin: "begin a batch of alerts",
    prepare: "prepare the alert insert",
    insert: "insert an alert",
    commit: "commit a batch of alerts",
};

/// A probe as stored.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoredProbe {
    /// Its row id (what [`History::probe_runs`] takes).
    pub id: i64,
    /// Its key.
    pub key: ProbeKey,
    /// Its type, as last recorded.
    pub kind: String,
    /// Its target, as last recorded.
    pub target: String,
}

/// One run as a report reads it: no strings, so a week of runs streams quickly.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StoredRun {
    /// When it ended, ms since the Unix epoch.
    pub at_unix_ms: i64,
    /// How it ended.
    pub result: ProbeResult,
    /// How long it took, in microseconds.
    pub latency_us: i64,
}

/// How many rows a prune deleted.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PruneCounts {
    /// Runs.
    pub runs: u64,
    /// Alert transitions.
    pub alerts: u64,
    /// Heartbeats.
    pub heartbeats: u64,
    /// Probes left without any row.
    pub probes: u64,
}

/// How many rows each table holds.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct HistoryCounts {
    /// Probes.
    pub probes: u64,
    /// Runs.
    pub runs: u64,
    /// Alert transitions.
    pub alerts: u64,
    /// Heartbeats.
    pub heartbeats: u64,
}

/// The history database: one SQLite connection. Writes go through [`HistoryWriter`] in the
/// agent; reports and tests use this directly.
#[derive(Debug)]
pub struct History {
    conn: Connection,
    path: PathBuf,
    /// Probe key to (row id, kind, target): the upsert runs only when a probe is new or its
    /// kind or target changed.
    probe_ids: HashMap<ProbeKey, (i64, String, String)>,
}

impl History {
    /// Opens (creating if absent) the database at `path`, sets WAL mode and runs pending
    /// migrations.
    ///
    /// # Errors
    ///
    /// [`HistoryError::Open`] when the file cannot be opened or is not a database,
    /// [`HistoryError::NewerSchema`] for a file of a later agent.
    pub fn open(path: impl AsRef<Path>) -> Result<Self, HistoryError> {
        let path = path.as_ref().to_path_buf();
        let open_err = |source| HistoryError::Open {
            path: path.clone(),
            source,
        };
        let mut conn = Connection::open(&path).map_err(open_err)?;
        conn.busy_timeout(BUSY_TIMEOUT).map_err(open_err)?;
        // journal_mode answers with the mode set; a query, not an update.
        let mode: String = conn
            .query_row("PRAGMA journal_mode = WAL", [], |row| row.get(0))
            .map_err(open_err)?;
        if !mode.eq_ignore_ascii_case("wal") {
            tracing::warn!(path = %path.display(), %mode, "history: WAL mode refused; readers may block the writer");
        }
        conn.pragma_update(None, "synchronous", "NORMAL")
            .map_err(open_err)?;
        conn.pragma_update(None, "foreign_keys", "ON")
            .map_err(open_err)?;
        migrate(&mut conn, &path)?;
        Ok(Self {
            conn,
            path,
            probe_ids: HashMap::new(),
        })
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The file's schema version (after [`open`](Self::open): [`SCHEMA_VERSION`]).
    ///
    /// # Errors
    ///
    /// [`HistoryError::Sqlite`].
    pub fn schema_version(&self) -> Result<i64, HistoryError> {
        read_version(&self.conn).map_err(sql("read the schema version"))
    }

    /// Stores `runs` in one transaction; returns how many.
    ///
    /// # Errors
    ///
    /// [`HistoryError::Sqlite`]; nothing of the batch is stored then.
    pub fn record_runs(&mut self, runs: &[RunRecord]) -> Result<usize, HistoryError> {
        self.insert_batch(
            &RUN_BATCH,
            "INSERT INTO runs (probe_id, at_ms, result, latency_us, http_version, error)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            runs,
            |run| (&run.key, &run.kind, &run.target),
            |insert, id, run| {
                insert.execute(params![
                    id,
                    run.at_unix_ms,
                    result_code(run.result),
                    duration_us(run.latency),
                    run.http_version.map(HttpProtocol::as_str),
                    run.error.as_deref(),
                ])
            },
        )
    }

    /// Stores one alert transition.
    ///
    /// # Errors
    ///
    /// [`HistoryError::Sqlite`].
    pub fn record_alert(&mut self, alert: &AlertTransition) -> Result<(), HistoryError> {
        self.record_alerts(std::slice::from_ref(alert)).map(drop)
    }

    /// Stores alert transitions in one transaction; returns how many.
    ///
    /// # Errors
    ///
    /// [`HistoryError::Sqlite`]; none is stored then.
    pub fn record_alerts(&mut self, alerts: &[AlertTransition]) -> Result<usize, HistoryError> {
        self.insert_batch(
            &ALERT_BATCH,
            "INSERT INTO alerts (probe_id, at_ms, state, muted, reason, alert)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            alerts,
            |alert| (&alert.key, &alert.kind, &alert.target),
            |insert, id, alert| {
                insert.execute(params![
                    id,
                    alert.at_unix_ms,
                    alert.state.as_str(),
                    alert.muted,
                    alert.reason,
                    alert.alert.as_str(),
                ])
            },
        )
    }

    /// Inserts `rows` with `insert_sql` in one transaction, each under the
    /// id of its probe (`probe_of`: key, kind, target), which is created or updated first; the
    /// probe ids learnt are cached only once the transaction commits, so a failed batch leaves
    /// neither rows nor cache entries behind. Returns how many rows.
    fn insert_batch<T>(
        &mut self,
        ops: &BatchOps,
        insert_sql: &str,
        rows: &[T],
        probe_of: impl Fn(&T) -> (&ProbeKey, &String, &String),
        insert_row: impl Fn(&mut rusqlite::CachedStatement<'_>, i64, &T) -> rusqlite::Result<usize>,
    ) -> Result<usize, HistoryError> {
        let tx = self.conn.transaction().map_err(sql(ops.begin))?;
        let mut new_ids = Vec::new();
        {
            let mut insert = tx.prepare_cached(insert_sql).map_err(sql(ops.prepare))?;
            for row in rows {
                let (key, kind, target) = probe_of(row);
                let id = probe_id(&tx, &self.probe_ids, &mut new_ids, key, kind, target)?;
                insert_row(&mut insert, id, row).map_err(sql(ops.insert))?;
            }
        }
        tx.commit().map_err(sql(ops.commit))?;
        self.probe_ids.extend(new_ids);
        Ok(rows.len())
    }

    /// Stores a heartbeat of `agent` at `at_unix_ms`: the agent was alive then.
    ///
    /// # Errors
    ///
    /// [`HistoryError::Sqlite`].
    pub fn record_heartbeat(&mut self, agent: &str, at_unix_ms: i64) -> Result<(), HistoryError> {
        self.conn
            .prepare_cached("INSERT INTO heartbeats (agent, at_ms) VALUES (?1, ?2)")
            .and_then(|mut s| s.execute(params![agent, at_unix_ms]))
            .map_err(sql("insert a heartbeat"))?;
        Ok(())
    }

    /// Deletes every run, alert and heartbeat older than `before_unix_ms`, then the probes left
    /// without a row, in one transaction.
    ///
    /// # Errors
    ///
    /// [`HistoryError::Sqlite`]; nothing is deleted then.
    pub fn prune(&mut self, before_unix_ms: i64) -> Result<PruneCounts, HistoryError> {
        let tx = self.conn.transaction().map_err(sql("begin a prune"))?;
        let count = |n: usize| u64::try_from(n).unwrap_or(u64::MAX);
        let runs = tx
            .execute("DELETE FROM runs WHERE at_ms < ?1", [before_unix_ms])
            .map_err(sql("prune runs"))?;
        let alerts = tx
            .execute("DELETE FROM alerts WHERE at_ms < ?1", [before_unix_ms])
            .map_err(sql("prune alerts"))?;
        let heartbeats = tx
            .execute("DELETE FROM heartbeats WHERE at_ms < ?1", [before_unix_ms])
            .map_err(sql("prune heartbeats"))?;
        let probes = tx
            .execute(
                "DELETE FROM probes WHERE NOT EXISTS (SELECT 1 FROM runs WHERE runs.probe_id = probes.id)
                   AND NOT EXISTS (SELECT 1 FROM alerts WHERE alerts.probe_id = probes.id)",
                [],
            )
            .map_err(sql("prune probes"))?;
        tx.commit().map_err(sql("commit a prune"))?;
        if probes > 0 {
            // Ids of deleted probes must not be reused from the cache.
            self.probe_ids.clear();
        }
        Ok(PruneCounts {
            runs: count(runs),
            alerts: count(alerts),
            heartbeats: count(heartbeats),
            probes: count(probes),
        })
    }

    /// How many rows each table holds.
    ///
    /// # Errors
    ///
    /// [`HistoryError::Sqlite`].
    pub fn counts(&self) -> Result<HistoryCounts, HistoryError> {
        let count = |table: &str| -> Result<u64, HistoryError> {
            let n: i64 = self
                .conn
                .query_row(&format!("SELECT COUNT(*) FROM {table}"), [], |r| r.get(0))
                .map_err(sql("count rows"))?;
            Ok(u64::try_from(n).unwrap_or(0))
        };
        Ok(HistoryCounts {
            probes: count("probes")?,
            runs: count("runs")?,
            alerts: count("alerts")?,
            heartbeats: count("heartbeats")?,
        })
    }

    /// Every stored probe, ordered by cluster, namespace, group and name.
    ///
    /// # Errors
    ///
    /// [`HistoryError::Sqlite`].
    pub fn probes(&self) -> Result<Vec<StoredProbe>, HistoryError> {
        let mut stmt = self
            .conn
            .prepare_cached(
                "SELECT id, cluster, namespace, grp, probe, kind, target FROM probes
                 ORDER BY cluster, namespace, grp, probe",
            )
            .map_err(sql("list probes"))?;
        let rows = stmt
            .query_map([], |r| {
                Ok(StoredProbe {
                    id: r.get(0)?,
                    key: ProbeKey {
                        cluster: r.get(1)?,
                        namespace: r.get(2)?,
                        group: r.get(3)?,
                        probe: r.get(4)?,
                    },
                    kind: r.get(5)?,
                    target: r.get(6)?,
                })
            })
            .map_err(sql("list probes"))?;
        rows.collect::<Result<_, _>>().map_err(sql("list probes"))
    }

    /// Calls `each` with every run of probe `probe_id` in `[from, to)`, oldest first, without
    /// collecting them (a week of a probe every second is 600,000 runs).
    ///
    /// # Errors
    ///
    /// [`HistoryError::Sqlite`], [`HistoryError::Corrupt`] for a result code out of range.
    pub fn probe_runs(
        &self,
        probe_id: i64,
        from_unix_ms: i64,
        to_unix_ms: i64,
        mut each: impl FnMut(StoredRun),
    ) -> Result<(), HistoryError> {
        let mut stmt = self
            .conn
            .prepare_cached(
                "SELECT at_ms, result, latency_us FROM runs
                 WHERE probe_id = ?1 AND at_ms >= ?2 AND at_ms < ?3 ORDER BY at_ms",
            )
            .map_err(sql("read runs"))?;
        let mut rows = stmt
            .query(params![probe_id, from_unix_ms, to_unix_ms])
            .map_err(sql("read runs"))?;
        while let Some(row) = rows.next().map_err(sql("read runs"))? {
            let code: i64 = row.get(1).map_err(sql("read runs"))?;
            each(StoredRun {
                at_unix_ms: row.get(0).map_err(sql("read runs"))?,
                result: result_from_code(code)?,
                latency_us: row.get(2).map_err(sql("read runs"))?,
            });
        }
        Ok(())
    }

    /// Every run in `[from, to)` as full records, oldest first (ties in insertion order).
    /// Meant for exports and tests; reports use [`probe_runs`](Self::probe_runs).
    ///
    /// # Errors
    ///
    /// [`HistoryError::Sqlite`], [`HistoryError::Corrupt`].
    pub fn runs(&self, from_unix_ms: i64, to_unix_ms: i64) -> Result<Vec<RunRecord>, HistoryError> {
        let mut stmt = self
            .conn
            .prepare_cached(
                "SELECT p.cluster, p.namespace, p.grp, p.probe, p.kind, p.target,
                        r.at_ms, r.result, r.latency_us, r.http_version, r.error
                 FROM runs r JOIN probes p ON p.id = r.probe_id
                 WHERE r.at_ms >= ?1 AND r.at_ms < ?2 ORDER BY r.at_ms, r.rowid",
            )
            .map_err(sql("read runs"))?;
        let mut rows = stmt
            .query(params![from_unix_ms, to_unix_ms])
            .map_err(sql("read runs"))?;
        let mut out = Vec::new();
        while let Some(r) = rows.next().map_err(sql("read runs"))? {
            let get = |e| HistoryError::Sqlite {
                operation: "read runs",
                source: e,
            };
            let code: i64 = r.get(7).map_err(get)?;
            let latency_us: i64 = r.get(8).map_err(get)?;
            let version: Option<String> = r.get(9).map_err(get)?;
            out.push(RunRecord {
                key: ProbeKey {
                    cluster: r.get(0).map_err(get)?,
                    namespace: r.get(1).map_err(get)?,
                    group: r.get(2).map_err(get)?,
                    probe: r.get(3).map_err(get)?,
                },
                kind: r.get(4).map_err(get)?,
                target: r.get(5).map_err(get)?,
                at_unix_ms: r.get(6).map_err(get)?,
                result: result_from_code(code)?,
                latency: Duration::from_micros(u64::try_from(latency_us).unwrap_or(0)),
                http_version: version.as_deref().map(protocol_from_str).transpose()?,
                error: r.get(10).map_err(get)?,
            });
        }
        Ok(out)
    }

    /// Every alert transition before `to_unix_ms` (all of them since the retention: alerts are
    /// few, and an incident of a period may have fired before it), oldest first.
    ///
    /// # Errors
    ///
    /// [`HistoryError::Sqlite`], [`HistoryError::Corrupt`].
    pub fn alerts_before(&self, to_unix_ms: i64) -> Result<Vec<AlertTransition>, HistoryError> {
        let mut stmt = self
            .conn
            .prepare_cached(
                "SELECT p.cluster, p.namespace, p.grp, p.probe, p.kind, p.target,
                        a.state, a.at_ms, a.muted, a.reason, a.alert
                 FROM alerts a JOIN probes p ON p.id = a.probe_id
                 WHERE a.at_ms < ?1 ORDER BY a.at_ms, a.rowid",
            )
            .map_err(sql("read alerts"))?;
        let mut rows = stmt.query([to_unix_ms]).map_err(sql("read alerts"))?;
        let mut out = Vec::new();
        while let Some(r) = rows.next().map_err(sql("read alerts"))? {
            let get = |e| HistoryError::Sqlite {
                operation: "read alerts",
                source: e,
            };
            let state: String = r.get(6).map_err(get)?;
            let state = match state.as_str() {
                "firing" => AlertState::Firing,
                "resolved" => AlertState::Resolved,
                _ => {
                    return Err(HistoryError::Corrupt {
                        table: "alerts",
                        column: "state",
                        value: state,
                    });
                }
            };
            let name: String = r.get(10).map_err(get)?;
            let alert = match name.as_str() {
                "MeshKitProbeFailing" => AlertName::Failing,
                "MeshKitProbeSlow" => AlertName::Slow,
                _ => {
                    return Err(HistoryError::Corrupt {
                        table: "alerts",
                        column: "alert",
                        value: name,
                    });
                }
            };
            out.push(AlertTransition {
                alert,
                key: ProbeKey {
                    cluster: r.get(0).map_err(get)?,
                    namespace: r.get(1).map_err(get)?,
                    group: r.get(2).map_err(get)?,
                    probe: r.get(3).map_err(get)?,
                },
                kind: r.get(4).map_err(get)?,
                target: r.get(5).map_err(get)?,
                state,
                at_unix_ms: r.get(7).map_err(get)?,
                muted: r.get(8).map_err(get)?,
                reason: r.get(9).map_err(get)?,
            });
        }
        Ok(out)
    }

    /// The heartbeat times in `[from, to)` of every agent, oldest first, preceded by the last
    /// one before `from` if any (so a gap that began before the period is seen).
    ///
    /// # Errors
    ///
    /// [`HistoryError::Sqlite`].
    pub fn heartbeats(&self, from_unix_ms: i64, to_unix_ms: i64) -> Result<Vec<i64>, HistoryError> {
        let before: Option<i64> = self
            .conn
            .query_row(
                "SELECT MAX(at_ms) FROM heartbeats WHERE at_ms < ?1",
                [from_unix_ms],
                |r| r.get(0),
            )
            .optional()
            .map_err(sql("read heartbeats"))?
            .flatten();
        let mut stmt = self
            .conn
            .prepare_cached(
                "SELECT at_ms FROM heartbeats WHERE at_ms >= ?1 AND at_ms < ?2 ORDER BY at_ms",
            )
            .map_err(sql("read heartbeats"))?;
        let rows = stmt
            .query_map([from_unix_ms, to_unix_ms], |r| r.get::<_, i64>(0))
            .map_err(sql("read heartbeats"))?;
        let mut out: Vec<i64> = before.into_iter().collect();
        for at in rows {
            out.push(at.map_err(sql("read heartbeats"))?);
        }
        Ok(out)
    }

    /// The names of the agents that wrote heartbeats in `[from, to)`.
    ///
    /// # Errors
    ///
    /// [`HistoryError::Sqlite`].
    pub fn agents(&self, from_unix_ms: i64, to_unix_ms: i64) -> Result<Vec<String>, HistoryError> {
        let mut stmt = self
            .conn
            .prepare_cached(
                "SELECT DISTINCT agent FROM heartbeats WHERE at_ms >= ?1 AND at_ms < ?2 ORDER BY agent",
            )
            .map_err(sql("read agents"))?;
        let rows = stmt
            .query_map([from_unix_ms, to_unix_ms], |r| r.get::<_, String>(0))
            .map_err(sql("read agents"))?;
        rows.collect::<Result<_, _>>().map_err(sql("read agents"))
    }
}

/// The row id of `key`, inserting or updating its row when it is new or its kind or target
/// changed. New ids go to `new_ids`, merged into the cache only once the transaction commits
/// (a rolled-back insert must not leave a cached id that does not exist).
fn probe_id(
    tx: &rusqlite::Transaction<'_>,
    cache: &HashMap<ProbeKey, (i64, String, String)>,
    new_ids: &mut Vec<(ProbeKey, (i64, String, String))>,
    key: &ProbeKey,
    kind: &str,
    target: &str,
) -> Result<i64, HistoryError> {
    let known = cache
        .get(key)
        .or_else(|| new_ids.iter().rev().find(|(k, _)| k == key).map(|(_, v)| v));
    if let Some((id, k, t)) = known
        && k == kind
        && t == target
    {
        return Ok(*id);
    }
    let id: i64 = tx
        .prepare_cached(
            "INSERT INTO probes (cluster, namespace, grp, probe, kind, target)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6)
             ON CONFLICT (cluster, namespace, grp, probe)
             DO UPDATE SET kind = excluded.kind, target = excluded.target
             RETURNING id",
        )
        .and_then(|mut s| {
            s.query_row(
                params![
                    key.cluster,
                    key.namespace,
                    key.group,
                    key.probe,
                    kind,
                    target
                ],
                |r| r.get(0),
            )
        })
        .map_err(sql("insert a probe"))?;
    new_ids.push((key.clone(), (id, kind.to_owned(), target.to_owned())));
    Ok(id)
}

fn read_version(conn: &Connection) -> rusqlite::Result<i64> {
    conn.query_row(
        "SELECT COALESCE(MAX(version), 0) FROM schema_version",
        [],
        |r| r.get(0),
    )
}

/// Runs the migrations the file has not seen, each with its version bump in one transaction.
fn migrate(conn: &mut Connection, path: &Path) -> Result<(), HistoryError> {
    let open_err = |source| HistoryError::Open {
        path: path.to_path_buf(),
        source,
    };
    conn.execute_batch("CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)")
        .map_err(open_err)?;
    let found = read_version(conn).map_err(open_err)?;
    if found > SCHEMA_VERSION {
        return Err(HistoryError::NewerSchema {
            path: path.to_path_buf(),
            found,
            supported: SCHEMA_VERSION,
        });
    }
    for (index, step) in schema::MIGRATIONS
        .iter()
        .enumerate()
        .skip(usize::try_from(found).unwrap_or(0))
    {
        let version = i64::try_from(index).unwrap_or(i64::MAX) + 1;
        let tx = conn.transaction().map_err(open_err)?;
        tx.execute_batch(step).map_err(open_err)?;
        tx.execute("DELETE FROM schema_version", [])
            .map_err(open_err)?;
        tx.execute(
            "INSERT INTO schema_version (version) VALUES (?1)",
            [version],
        )
        .map_err(open_err)?;
        tx.commit().map_err(open_err)?;
        tracing::info!(path = %path.display(), version, "history: schema migrated");
    }
    Ok(())
}

fn result_code(result: ProbeResult) -> i64 {
    match result {
        ProbeResult::Pass => 0,
        ProbeResult::Slow => 1,
        ProbeResult::Fail => 2,
        ProbeResult::Timeout => 3,
    }
}

fn result_from_code(code: i64) -> Result<ProbeResult, HistoryError> {
    Ok(match code {
        0 => ProbeResult::Pass,
        1 => ProbeResult::Slow,
        2 => ProbeResult::Fail,
        3 => ProbeResult::Timeout,
        _ => {
            return Err(HistoryError::Corrupt {
                table: "runs",
                column: "result",
                value: code.to_string(),
            });
        }
    })
}

fn protocol_from_str(text: &str) -> Result<HttpProtocol, HistoryError> {
    HttpProtocol::ALL
        .into_iter()
        .find(|p| p.as_str() == text)
        .ok_or_else(|| HistoryError::Corrupt {
            table: "runs",
            column: "http_version",
            value: text.to_owned(),
        })
}

/// A duration in whole microseconds, saturating (a latency past 292,000 years is a bug
/// elsewhere, not a reason to lose the row).
fn duration_us(d: Duration) -> i64 {
    i64::try_from(d.as_micros()).unwrap_or(i64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_version_1_file_is_migrated_and_keeps_its_rows() {
        let dir = meshkit_testkit::fixtures::TempDir::new("history-migrate");
        let path = dir.path().join("v1.sqlite");
        {
            let conn = Connection::open(&path).unwrap();
            conn.execute_batch(schema::MIGRATIONS[0]).unwrap();
            conn.execute_batch(
                "CREATE TABLE schema_version (version INTEGER NOT NULL);
                 INSERT INTO schema_version VALUES (1);
                 INSERT INTO probes VALUES (1, 'c', 'n', 'g', 'p', 'api', 't');
                 INSERT INTO alerts VALUES (1, 5, 'firing', 0, 'three failures');",
            )
            .unwrap();
        }
        let h = History::open(&path).unwrap();
        assert_eq!(h.schema_version().unwrap(), SCHEMA_VERSION);
        let alerts = h.alerts_before(10).unwrap();
        assert_eq!(alerts.len(), 1);
        assert_eq!(alerts[0].alert, AlertName::Failing);
        assert_eq!(alerts[0].reason, "three failures");
    }

    #[test]
    fn retention_accepts_days_weeks_and_durations_and_names_the_key() {
        let base = Path::new("/etc/probe");
        let v = |r: &str| {
            RawHistoryConfig {
                path: None,
                retention: Some(r.to_owned()),
            }
            .validate(base)
        };
        assert_eq!(
            v("30d").unwrap().retention,
            Duration::from_secs(30 * 86_400)
        );
        assert_eq!(v("2w").unwrap().retention, Duration::from_secs(14 * 86_400));
        assert_eq!(v("12h").unwrap().retention, Duration::from_secs(12 * 3600));
        for bad in ["10m", "1.5d", "xd", "forever", "-1h"] {
            let err = v(bad).unwrap_err();
            assert_eq!(err.key, "history.retention", "{bad}: {err}");
        }
        let err = RawHistoryConfig {
            path: Some(" ".into()),
            retention: None,
        }
        .validate(base)
        .unwrap_err();
        assert_eq!(err.key, "history.path");
        let ok = RawHistoryConfig::default().validate(base).unwrap();
        assert_eq!(ok.path, base.join("probe-history.sqlite"));
        assert_eq!(ok.retention, Duration::from_secs(30 * 86_400));
    }
}
