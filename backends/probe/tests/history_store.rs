//! The history database on real SQLite files: records round-trip, retention prunes, the schema
//! is versioned and a file of a later agent is refused.

use meshkit::Duration;
use meshkit::diag::probe::ProbeResult;
use meshkit_api::alpn::HttpProtocol;
use meshkit_probe::history::{History, HistoryError, SCHEMA_VERSION};
use meshkit_probe::record::{AlertName, AlertState, AlertTransition, ProbeKey, RunRecord};
use meshkit_testkit::fixtures::TempDir;

fn key(probe: &str) -> ProbeKey {
    ProbeKey {
        cluster: "prod-a".into(),
        namespace: "default".into(),
        group: "core".into(),
        probe: probe.into(),
    }
}

fn run(probe: &str, at: i64, result: ProbeResult, latency_us: u64) -> RunRecord {
    RunRecord {
        key: key(probe),
        kind: "api".into(),
        target: "127.0.0.1:8001".into(),
        at_unix_ms: at,
        result,
        latency: Duration::from_micros(latency_us),
        http_version: Some(HttpProtocol::H3),
        error: result.is_failure().then(|| format!("boom at {at}")),
    }
}

fn alert(probe: &str, at: i64, state: AlertState, muted: bool) -> AlertTransition {
    AlertTransition {
        key: key(probe),
        alert: AlertName::Failing,
        kind: "api".into(),
        target: "127.0.0.1:8001".into(),
        state,
        at_unix_ms: at,
        muted,
        reason: format!("{} at {at}", state.as_str()),
    }
}

#[test]
fn runs_and_alerts_round_trip_through_a_reopened_file() {
    let dir = TempDir::new("history-roundtrip");
    let path = dir.path().join("h.sqlite");
    let mut runs = vec![
        run("api-peers@a", 1_000, ProbeResult::Pass, 1_234),
        run("api-peers@a", 2_000, ProbeResult::Slow, 900_001),
        run("api-shards@a", 2_000, ProbeResult::Fail, 17),
        run("api-shards@a", 3_000, ProbeResult::Timeout, 2_000_000),
    ];
    runs[1].http_version = Some(HttpProtocol::H2);
    runs[2].http_version = None;
    runs[3].kind = "watch".into();
    runs[3].target = "127.0.0.1:8002".into();
    let mut alerts = vec![
        alert("api-shards@a", 2_500, AlertState::Firing, false),
        alert("api-shards@a", 3_500, AlertState::Resolved, true),
    ];
    for a in &mut alerts {
        a.kind = "watch".into();
        a.target = "127.0.0.1:8002".into();
    }
    alerts.push(AlertTransition {
        alert: AlertName::Slow,
        ..alerts[0].clone()
    });
    alerts[2].at_unix_ms = 3_600;
    {
        let mut h = History::open(&path).unwrap();
        assert_eq!(h.record_runs(&runs).unwrap(), 4);
        for a in &alerts {
            h.record_alert(a).unwrap();
        }
        h.record_heartbeat("probe-a", 1_000).unwrap();
        h.record_heartbeat("probe-b", 5_000).unwrap();
    }
    let h = History::open(&path).unwrap();
    assert_eq!(h.schema_version().unwrap(), SCHEMA_VERSION);
    // A probe's kind and target are its row's, as last recorded (a probe's name carries its
    // target, so a change is a rename of its type at most).
    let mut expected = runs.clone();
    expected[2].kind = "watch".into();
    expected[2].target = "127.0.0.1:8002".into();
    assert_eq!(h.runs(0, 10_000).unwrap(), expected);
    // The half-open range: [2000, 3000) holds the two runs at 2000 only.
    assert_eq!(h.runs(2_000, 3_000).unwrap(), expected[1..3].to_vec());
    assert_eq!(h.alerts_before(10_000).unwrap(), alerts);
    assert_eq!(h.alerts_before(3_000).unwrap(), alerts[..1].to_vec());
    assert_eq!(h.alerts_before(10_000).unwrap()[2].alert, AlertName::Slow);
    assert_eq!(h.heartbeats(2_000, 10_000).unwrap(), vec![1_000, 5_000]);
    assert_eq!(h.agents(0, 10_000).unwrap(), vec!["probe-a", "probe-b"]);
    // The kind and target of a probe follow its latest record.
    let probes = h.probes().unwrap();
    assert_eq!(probes.len(), 2);
    assert_eq!(probes[1].key, key("api-shards@a"));
    assert_eq!(probes[1].kind, "watch");
    assert_eq!(probes[1].target, "127.0.0.1:8002");
    let mut seen = Vec::new();
    h.probe_runs(probes[0].id, 0, 10_000, |r| {
        seen.push((r.at_unix_ms, r.result, r.latency_us))
    })
    .unwrap();
    assert_eq!(
        seen,
        vec![
            (1_000, ProbeResult::Pass, 1_234),
            (2_000, ProbeResult::Slow, 900_001)
        ]
    );
}

#[test]
fn the_file_is_in_wal_mode_with_the_report_indexes() {
    let dir = TempDir::new("history-wal");
    let path = dir.path().join("h.sqlite");
    drop(History::open(&path).unwrap());
    let conn = rusqlite::Connection::open(&path).unwrap();
    let mode: String = conn
        .query_row("PRAGMA journal_mode", [], |r| r.get(0))
        .unwrap();
    assert_eq!(mode, "wal");
    let plan: String = conn
        .query_row(
            "EXPLAIN QUERY PLAN SELECT at_ms, result, latency_us FROM runs
             WHERE probe_id = 1 AND at_ms >= 0 AND at_ms < 10 ORDER BY at_ms",
            [],
            |r| r.get(3),
        )
        .unwrap();
    assert!(plan.contains("runs_probe_at"), "report query plan: {plan}");
    let plan: String = conn
        .query_row(
            "EXPLAIN QUERY PLAN DELETE FROM runs WHERE at_ms < 10",
            [],
            |r| r.get(3),
        )
        .unwrap();
    assert!(plan.contains("runs_at"), "prune query plan: {plan}");
}

#[test]
fn prune_deletes_what_is_older_than_the_cutoff_and_orphaned_probes() {
    let dir = TempDir::new("history-prune");
    let path = dir.path().join("h.sqlite");
    let mut h = History::open(&path).unwrap();
    h.record_runs(&[
        run("old@a", 1_000, ProbeResult::Pass, 10),
        run("both@a", 1_000, ProbeResult::Pass, 10),
        run("both@a", 9_000, ProbeResult::Fail, 10),
    ])
    .unwrap();
    h.record_alert(&alert("both@a", 1_500, AlertState::Firing, false))
        .unwrap();
    h.record_alert(&alert("both@a", 9_500, AlertState::Resolved, false))
        .unwrap();
    h.record_heartbeat("a", 1_000).unwrap();
    h.record_heartbeat("a", 9_000).unwrap();
    let counts = h.prune(5_000).unwrap();
    assert_eq!(
        (counts.runs, counts.alerts, counts.heartbeats, counts.probes),
        (2, 1, 1, 1)
    );
    let left = h.counts().unwrap();
    assert_eq!(
        (left.probes, left.runs, left.alerts, left.heartbeats),
        (1, 1, 1, 1)
    );
    assert_eq!(
        h.runs(0, i64::MAX).unwrap(),
        vec![run("both@a", 9_000, ProbeResult::Fail, 10)]
    );
    // A pruned probe comes back with a fresh row when it runs again (no stale cached id).
    h.record_runs(&[run("old@a", 10_000, ProbeResult::Pass, 10)])
        .unwrap();
    assert_eq!(h.counts().unwrap().probes, 2);
    assert_eq!(h.runs(10_000, 10_001).unwrap().len(), 1);
}

#[test]
fn a_file_of_a_later_schema_is_refused_and_a_non_database_named() {
    let dir = TempDir::new("history-schema");
    let path = dir.path().join("h.sqlite");
    drop(History::open(&path).unwrap());
    let conn = rusqlite::Connection::open(&path).unwrap();
    conn.execute(
        "UPDATE schema_version SET version = ?1",
        [SCHEMA_VERSION + 1],
    )
    .unwrap();
    drop(conn);
    match History::open(&path) {
        Err(HistoryError::NewerSchema {
            found, supported, ..
        }) => {
            assert_eq!((found, supported), (SCHEMA_VERSION + 1, SCHEMA_VERSION));
        }
        other => panic!("expected NewerSchema, got {other:?}"),
    }
    let junk = dir.path().join("junk.sqlite");
    std::fs::write(
        &junk,
        b"this is not a database, it is a text file of some length",
    )
    .unwrap();
    let err = History::open(&junk).unwrap_err();
    assert!(matches!(err, HistoryError::Open { .. }), "{err}");
    assert!(err.to_string().contains("junk.sqlite"), "{err}");
}

#[test]
fn a_hand_edited_result_code_is_an_error_not_a_panic() {
    let dir = TempDir::new("history-corrupt");
    let path = dir.path().join("h.sqlite");
    let mut h = History::open(&path).unwrap();
    h.record_runs(&[run("p@a", 1_000, ProbeResult::Pass, 10)])
        .unwrap();
    let conn = rusqlite::Connection::open(&path).unwrap();
    conn.execute("UPDATE runs SET http_version = 'h9'", [])
        .unwrap();
    let err = h.runs(0, i64::MAX).unwrap_err();
    assert!(err.to_string().contains("runs.http_version"), "{err}");
}
