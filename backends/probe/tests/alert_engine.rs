//! The alert engine's rules on virtual time: the core's states decide (Failing fires, Degraded
//! fires only with `alert_on_latency`, Healthy resolves), maintenance windows mute, a window
//! ending over a still-failing probe fires it then. No I/O, no sleep: every time is passed in.

use meshkit::diag::probe::ProbeState;
use meshkit_probe::alert::{AlertConfig, AlertEngine, RawAlertConfig, RawMaintenanceWindow};
use meshkit_probe::record::{AlertName, AlertState, AlertTransition, ProbeKey, StateChange};

/// 2026-12-06T00:00:00Z, a Sunday.
const DAY0: i64 = 1_796_515_200_000;
const MINUTE: i64 = 60_000;

fn key(group: &str, probe: &str) -> ProbeKey {
    ProbeKey {
        cluster: "prod-a".to_owned(),
        namespace: "default".to_owned(),
        group: group.to_owned(),
        probe: probe.to_owned(),
    }
}

fn change(key: &ProbeKey, from: ProbeState, to: ProbeState, at: i64) -> StateChange {
    StateChange {
        key: key.clone(),
        kind: "api".to_owned(),
        target: "127.0.0.1:8001".to_owned(),
        from,
        to,
        at_unix_ms: at,
        last_error: (to == ProbeState::Failing).then(|| "connection refused".to_owned()),
        alert_on_latency: false,
    }
}

fn slow_alerting(mut c: StateChange) -> StateChange {
    c.alert_on_latency = true;
    c
}

fn config(windows: Vec<RawMaintenanceWindow>) -> AlertConfig {
    RawAlertConfig {
        maintenance: windows,
        ..RawAlertConfig::default()
    }
    .validate()
    .expect("a valid config")
}

/// A one-off window from `start` to `end` (RFC 3339) over the group `group`.
fn window(start: &str, end: &str, group: &str) -> RawMaintenanceWindow {
    RawMaintenanceWindow {
        start: Some(start.to_owned()),
        end: Some(end.to_owned()),
        groups: Some(vec![group.to_owned()]),
        reason: Some("planned restart".to_owned()),
        ..RawMaintenanceWindow::default()
    }
}

fn states(out: &[AlertTransition]) -> Vec<(AlertName, AlertState, bool)> {
    out.iter().map(|t| (t.alert, t.state, t.muted)).collect()
}

#[test]
fn failing_fires_and_healthy_resolves() {
    let mut engine = AlertEngine::new(&AlertConfig::default());
    let k = key("core", "core/api@127.0.0.1:8001");
    let fired = engine.on_state(&change(&k, ProbeState::Healthy, ProbeState::Failing, DAY0));
    assert_eq!(
        states(&fired),
        [(AlertName::Failing, AlertState::Firing, false)]
    );
    assert_eq!(fired[0].key, k);
    assert_eq!(fired[0].at_unix_ms, DAY0);
    assert!(
        fired[0].reason.contains("connection refused"),
        "{}",
        fired[0].reason
    );
    assert_eq!(engine.firing().len(), 1);

    let resolved = engine.on_state(&change(
        &k,
        ProbeState::Failing,
        ProbeState::Healthy,
        DAY0 + MINUTE,
    ));
    assert_eq!(
        states(&resolved),
        [(AlertName::Failing, AlertState::Resolved, false)]
    );
    assert_eq!(resolved[0].at_unix_ms, DAY0 + MINUTE);
    assert!(engine.firing().is_empty());
    // Healthy again while nothing fires: nothing to say.
    assert!(
        engine
            .on_state(&change(
                &k,
                ProbeState::Degraded,
                ProbeState::Healthy,
                DAY0 + 2 * MINUTE
            ))
            .is_empty()
    );
}

#[test]
fn degraded_fires_only_with_alert_on_latency() {
    let mut engine = AlertEngine::new(&AlertConfig::default());
    let k = key("core", "core/api@127.0.0.1:8001");
    let quiet = engine.on_state(&change(&k, ProbeState::Healthy, ProbeState::Degraded, DAY0));
    assert!(quiet.is_empty(), "{quiet:?}");

    let other = key("edge", "edge/api@127.0.0.1:8002");
    let slow = engine.on_state(&slow_alerting(change(
        &other,
        ProbeState::Healthy,
        ProbeState::Degraded,
        DAY0,
    )));
    assert_eq!(
        states(&slow),
        [(AlertName::Slow, AlertState::Firing, false)]
    );
    assert_eq!(AlertName::Slow.as_str(), "MeshKitProbeSlow");

    // Slow, then failing: the slow alert resolves, the failing one fires, in that order.
    let worse = engine.on_state(&slow_alerting(change(
        &other,
        ProbeState::Degraded,
        ProbeState::Failing,
        DAY0 + MINUTE,
    )));
    assert_eq!(
        states(&worse),
        [
            (AlertName::Slow, AlertState::Resolved, false),
            (AlertName::Failing, AlertState::Firing, false)
        ]
    );
    // Failing, then passing slowly: back to the slow alert.
    let better = engine.on_state(&slow_alerting(change(
        &other,
        ProbeState::Failing,
        ProbeState::Degraded,
        DAY0 + 2 * MINUTE,
    )));
    assert_eq!(
        states(&better),
        [
            (AlertName::Failing, AlertState::Resolved, false),
            (AlertName::Slow, AlertState::Firing, false)
        ]
    );
}

#[test]
fn failing_then_degraded_without_latency_alerts_resolves() {
    let mut engine = AlertEngine::new(&AlertConfig::default());
    let k = key("core", "core/watch@127.0.0.1:8001");
    engine.on_state(&change(&k, ProbeState::Healthy, ProbeState::Failing, DAY0));
    let out = engine.on_state(&change(
        &k,
        ProbeState::Failing,
        ProbeState::Degraded,
        DAY0 + 1,
    ));
    assert_eq!(
        states(&out),
        [(AlertName::Failing, AlertState::Resolved, false)]
    );
}

#[test]
fn a_maintenance_window_mutes_firing_and_resolving() {
    let mut engine = AlertEngine::new(&config(vec![window(
        "2026-12-06T02:00:00Z",
        "2026-12-06T04:00:00Z",
        "core",
    )]));
    let muted = key("core", "core/api@127.0.0.1:8001");
    let other = key("edge", "edge/api@127.0.0.1:8002");
    let in_window = DAY0 + 150 * MINUTE;
    let a = engine.on_state(&change(
        &muted,
        ProbeState::Healthy,
        ProbeState::Failing,
        in_window,
    ));
    assert_eq!(states(&a), [(AlertName::Failing, AlertState::Firing, true)]);
    assert!(a[0].reason.contains("planned restart"), "{}", a[0].reason);
    let b = engine.on_state(&change(
        &other,
        ProbeState::Healthy,
        ProbeState::Failing,
        in_window,
    ));
    assert_eq!(
        states(&b),
        [(AlertName::Failing, AlertState::Firing, false)],
        "the window covers the group core only"
    );
    let resolved = engine.on_state(&change(
        &muted,
        ProbeState::Failing,
        ProbeState::Healthy,
        in_window + MINUTE,
    ));
    assert_eq!(
        states(&resolved),
        [(AlertName::Failing, AlertState::Resolved, true)],
        "a muted alert resolves muted: it was never sent"
    );
    assert!(engine.tick(DAY0 + 5 * 60 * MINUTE).is_empty());
}

#[test]
fn a_window_ending_while_still_failing_fires_then() {
    let mut engine = AlertEngine::new(&config(vec![window(
        "2026-12-06T02:00:00Z",
        "2026-12-06T04:00:00Z",
        "core",
    )]));
    let k = key("core", "core/api@127.0.0.1:8001");
    let end = DAY0 + 4 * 60 * MINUTE;
    engine.on_state(&change(
        &k,
        ProbeState::Healthy,
        ProbeState::Failing,
        DAY0 + 150 * MINUTE,
    ));
    assert!(engine.tick(end - 1).is_empty(), "still in the window");
    let fired = engine.tick(end);
    assert_eq!(
        states(&fired),
        [(AlertName::Failing, AlertState::Firing, false)]
    );
    assert_eq!(fired[0].at_unix_ms, end);
    assert!(fired[0].reason.contains("ended"), "{}", fired[0].reason);
    assert!(engine.tick(end + MINUTE).is_empty(), "fired once");
    assert!(!engine.firing()[0].muted);
    let resolved = engine.on_state(&change(
        &k,
        ProbeState::Failing,
        ProbeState::Healthy,
        end + 2 * MINUTE,
    ));
    assert_eq!(
        states(&resolved),
        [(AlertName::Failing, AlertState::Resolved, false)],
        "sent, so its resolution is sent"
    );
}

#[test]
fn a_weekly_window_mutes_each_week() {
    let weekly = RawMaintenanceWindow {
        weekdays: Some(vec!["sunday".to_owned()]),
        start: Some("02:00".to_owned()),
        end: Some("04:00".to_owned()),
        reason: Some("weekly restarts".to_owned()),
        ..RawMaintenanceWindow::default()
    };
    let mut engine = AlertEngine::new(&config(vec![weekly]));
    let k = key("core", "core/api@127.0.0.1:8001");
    let week = 7 * 24 * 60 * MINUTE;
    for (at, muted) in [
        (DAY0 + 3 * 60 * MINUTE, true),
        (DAY0 + week + 3 * 60 * MINUTE, true),
        (DAY0 + week + 5 * 60 * MINUTE, false),
        (DAY0 + 24 * 60 * MINUTE + 3 * 60 * MINUTE, false),
    ] {
        let fired = engine.on_state(&change(&k, ProbeState::Healthy, ProbeState::Failing, at));
        assert_eq!(
            states(&fired),
            [(AlertName::Failing, AlertState::Firing, muted)],
            "at {at}"
        );
        engine.on_state(&change(
            &k,
            ProbeState::Failing,
            ProbeState::Healthy,
            at + 1,
        ));
    }
}

#[test]
fn reconfigure_removing_a_window_unmutes_at_the_next_tick() {
    let mut engine = AlertEngine::new(&config(vec![window(
        "2026-12-06T00:00:00Z",
        "2026-12-07T00:00:00Z",
        "core",
    )]));
    let k = key("core", "core/api@127.0.0.1:8001");
    let at = DAY0 + MINUTE;
    assert!(engine.on_state(&change(&k, ProbeState::Healthy, ProbeState::Failing, at))[0].muted);
    assert!(engine.tick(at + 1).is_empty());
    engine.reconfigure(&AlertConfig::default());
    let fired = engine.tick(at + 2);
    assert_eq!(
        states(&fired),
        [(AlertName::Failing, AlertState::Firing, false)]
    );
}

#[test]
fn forgetting_a_probe_resolves_its_alert() {
    let mut engine = AlertEngine::new(&AlertConfig::default());
    let k = key("core", "core/api@127.0.0.1:8001");
    engine.on_state(&change(&k, ProbeState::Healthy, ProbeState::Failing, DAY0));
    let out = engine.forget(&k, DAY0 + 5);
    let out = out.expect("its alert resolves");
    assert_eq!(out.state, AlertState::Resolved);
    assert_eq!(out.at_unix_ms, DAY0 + 5);
    assert!(engine.forget(&k, DAY0 + 6).is_none());
    assert!(engine.firing().is_empty());
}
