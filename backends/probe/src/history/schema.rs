//! The database schema and its migrations.
//!
//! `schema_version` holds one row: the number of migrations applied. [`MIGRATIONS`] is append
//! only: a release that changes the schema adds a step and never edits an old one, so a file
//! written by any earlier agent opens in a later one. A file from a later agent (a version above
//! [`SCHEMA_VERSION`]) is refused rather than guessed at.
//!
//! Tables (times are ms since the Unix epoch, latencies microseconds):
//!
//! - `probes(id, cluster, namespace, grp, probe, kind, target)`: one row per probe key, so the
//!   many run rows carry a small integer instead of four strings;
//! - `runs(probe_id, at_ms, result, latency_us, http_version, error)`: one row per finished run;
//!   `result` is 0 pass, 1 slow, 2 fail, 3 timeout; `http_version` is `h3`, `h2`, `http1.1` or
//!   NULL. Indexed by `(probe_id, at_ms)` (a report reads one probe's period) and by `at_ms`
//!   (the retention prune deletes everything older than a time);
//! - `alerts(probe_id, at_ms, state, muted, reason, alert)`: each alert transition (`firing`
//!   or `resolved`) of `alert` (`MeshKitProbeFailing`, `MeshKitProbeSlow`); `muted` 1 where a
//!   maintenance window covered it;
//! - `heartbeats(agent, at_ms)`: the writer's "I am alive" each minute, from which reports
//!   tell agent downtime (a gap) from a quiet period.

/// The migrations, in order; the schema version is how many have run.
pub(crate) const MIGRATIONS: &[&str] = &[
    // 1: the first schema.
    "CREATE TABLE probes (
        id INTEGER PRIMARY KEY,
        cluster TEXT NOT NULL,
        namespace TEXT NOT NULL,
        grp TEXT NOT NULL,
        probe TEXT NOT NULL,
        kind TEXT NOT NULL,
        target TEXT NOT NULL,
        UNIQUE (cluster, namespace, grp, probe)
    );
    CREATE TABLE runs (
        probe_id INTEGER NOT NULL REFERENCES probes(id),
        at_ms INTEGER NOT NULL,
        result INTEGER NOT NULL CHECK (result BETWEEN 0 AND 3),
        latency_us INTEGER NOT NULL,
        http_version TEXT,
        error TEXT
    );
    CREATE INDEX runs_probe_at ON runs (probe_id, at_ms);
    CREATE INDEX runs_at ON runs (at_ms);
    CREATE TABLE alerts (
        probe_id INTEGER NOT NULL REFERENCES probes(id),
        at_ms INTEGER NOT NULL,
        state TEXT NOT NULL CHECK (state IN ('firing', 'resolved')),
        muted INTEGER NOT NULL,
        reason TEXT NOT NULL
    );
    CREATE INDEX alerts_at ON alerts (at_ms);
    CREATE TABLE heartbeats (
        agent TEXT NOT NULL,
        at_ms INTEGER NOT NULL
    );
    CREATE INDEX heartbeats_at ON heartbeats (at_ms);",
    // 2: which of a probe's alerts a transition is (`MeshKitProbeFailing` or
    // `MeshKitProbeSlow`); rows of version 1 were all of the failing kind.
    "ALTER TABLE alerts ADD COLUMN alert TEXT NOT NULL DEFAULT 'MeshKitProbeFailing'
        CHECK (alert IN ('MeshKitProbeFailing', 'MeshKitProbeSlow'));",
];

/// The schema version this build writes.
pub const SCHEMA_VERSION: i64 = MIGRATIONS.len() as i64;
