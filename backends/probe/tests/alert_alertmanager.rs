//! The notifier against a real Alertmanager (Debian's `prometheus-alertmanager`, started by
//! each test on a free loopback port with clustering off), whose own webhook receiver is this
//! test's HTTP server:
//!
//! 1. a firing alert reaches `GET /api/v2/alerts` with the probe's labels (and no agent's) and
//!    the runbook annotation, is kept alive by resends (its `endsAt` moves on), and resolves;
//! 2. two notifiers (two agents of a fleet) sending the same probe's alert give one alert in
//!    Alertmanager and one notification at its receiver, firing and resolved: the dedupe
//!    property of issue 14's fleet target;
//! 3. a muted alert never reaches Alertmanager, and arrives once its window is gone;
//! 4. issue 14's fleet target: five agents with the same 100 probes failing give 100 alerts,
//!    each notified once;
//! 5. a reconfigured notifier moves a firing alert to its new label set (the old one resolves)
//!    and starts sending to a webhook added by the reload;
//! 6. the figure: send to visible in `GET /api/v2/alerts`, p50 and p99 over 50 alerts;
//! 7. over TLS: Alertmanager serving https with a certificate of the test's CA, the notifier
//!    trusting that CA (`alerting.ca`) delivers; trusting another CA, it delivers nothing.
//!
//! Needs `/usr/bin/prometheus-alertmanager`, so the tests are ignored by default (the runner
//! reports them skipped, never passed); run them with
//! `cargo nextest run -p meshkit-probe --run-ignored all -E 'binary(alert_alertmanager)'`
//! (a missing binary then fails them, naming the package). Every wait is a bounded poll.

mod alert_support;

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use alert_support::{Alertmanager, Receiver, change, eventually, feed, key, notifications};
use meshkit::diag::probe::ProbeState;
use meshkit_probe::alert::{
    AlertConfig, AlertEngine, RawAlertConfig, RawMaintenanceWindow, spawn_notifier,
};
use meshkit_probe::record::now_unix_ms;
use meshkit_testkit::fixtures::TempDir;
use serde_json::{Value, json};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

/// The notifier's resend period in these tests (the shortest allowed).
const RESEND: Duration = Duration::from_secs(1);
/// How long an alert may take to show, a notification to arrive (group wait 1 s), on a loaded
/// 2-core machine.
const LIMIT: Duration = Duration::from_secs(15);

fn config(alertmanager: &Alertmanager, windows: Vec<RawMaintenanceWindow>) -> AlertConfig {
    RawAlertConfig {
        alertmanager: vec![alertmanager.url.clone()],
        resend: Some("1s".to_owned()),
        timeout: Some("2s".to_owned()),
        labels: [("team".to_owned(), "platform".to_owned())].into(),
        maintenance: windows,
        ..RawAlertConfig::default()
    }
    .validate()
    .expect("a valid config")
}

fn parse_time(value: &Value) -> OffsetDateTime {
    OffsetDateTime::parse(value.as_str().expect("a time string"), &Rfc3339).expect("RFC 3339")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs Debian's prometheus-alertmanager; scripts/test.sh runs it"]
async fn an_alert_reaches_alertmanager_with_its_labels_and_runbook_and_resolves() {
    let dir = TempDir::new("alert-am-1");
    let hooks = Receiver::default();
    let am = Alertmanager::start(dir.path(), hooks.start().await).await;
    let config = config(&am, Vec::new());
    let mut engine = AlertEngine::new(&config);
    let notifier = spawn_notifier(&config, "http://agent-a:9465/metrics");
    let probe = "core/api@127.0.0.1:8001";
    let k = key("core", probe);

    let sent = Instant::now();
    feed(
        &mut engine,
        &notifier,
        &k,
        ProbeState::Healthy,
        ProbeState::Failing,
        now_unix_ms(),
    );
    assert!(
        eventually(LIMIT, || async { !am.alerts_of(probe).await.is_empty() }).await,
        "the alert did not reach Alertmanager: {:?}\n{}",
        notifier.stats(),
        am.log()
    );
    let visible = sent.elapsed();
    let alerts = am.alerts_of(probe).await;
    assert_eq!(alerts.len(), 1, "{alerts:#?}");
    let alert = &alerts[0];
    assert_eq!(
        alert["labels"],
        json!({
            "alertname": "MeshKitProbeFailing", "cluster": "prod-a", "namespace": "default",
            "group": "core", "probe": probe, "kind": "api", "target": "127.0.0.1:8001",
            "severity": "critical", "team": "platform"
        }),
        "the probe's identity and the static labels, nothing of the agent"
    );
    assert_eq!(
        alert["annotations"]["runbook_url"],
        "https://example.invalid/meshkit/blob/main/docs/runbooks.md#meshkitprobefailing"
    );
    assert_eq!(alert["generatorURL"], "http://agent-a:9465/metrics");
    assert_eq!(alert["status"]["state"], "active");

    // Resends keep it alive: its endsAt moves on (each send says now + 4 x resend).
    let first_end = parse_time(&alert["endsAt"]);
    assert!(
        eventually(LIMIT, || async {
            am.alerts_of(probe)
                .await
                .first()
                .is_some_and(|a| parse_time(&a["endsAt"]) > first_end)
        })
        .await,
        "endsAt never moved: no resend ({:?})",
        notifier.stats()
    );
    assert!(
        eventually(LIMIT, || async {
            !notifications(&hooks, "am", probe, "firing").is_empty()
        })
        .await,
        "Alertmanager notified nobody:\n{}",
        am.log()
    );

    let resolving = Instant::now();
    feed(
        &mut engine,
        &notifier,
        &k,
        ProbeState::Failing,
        ProbeState::Healthy,
        now_unix_ms(),
    );
    assert!(
        eventually(LIMIT, || async { am.alerts_of(probe).await.is_empty() }).await,
        "the alert did not resolve"
    );
    let gone = resolving.elapsed();
    assert!(
        eventually(LIMIT, || async {
            !notifications(&hooks, "am", probe, "resolved").is_empty()
        })
        .await,
        "no resolved notification:\n{}",
        am.log()
    );
    let stats = notifier.stats();
    assert_eq!((stats.failed, stats.dropped), (0, 0), "{stats:?}");
    eprintln!(
        "figure: send -> visible in GET /api/v2/alerts {} ms; resolved send -> gone {} ms; {stats:?}",
        visible.as_millis(),
        gone.as_millis()
    );
    notifier.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs Debian's prometheus-alertmanager; scripts/test.sh runs it"]
async fn two_agents_sending_the_same_alert_give_one_alert_and_one_notification() {
    let dir = TempDir::new("alert-am-2");
    let hooks = Receiver::default();
    let am = Alertmanager::start(dir.path(), hooks.start().await).await;
    let config = config(&am, Vec::new());
    // Two agents: each its own engine and notifier, the same probe failing for both.
    let mut agents: Vec<_> = ["http://agent-a:9465/metrics", "http://agent-b:9465/metrics"]
        .into_iter()
        .map(|url| (AlertEngine::new(&config), spawn_notifier(&config, url)))
        .collect();
    let probe = "core/watch-sse@127.0.0.1:8001";
    let k = key("core", probe);
    let failed_at = now_unix_ms();
    for (engine, notifier) in &mut agents {
        feed(
            engine,
            notifier,
            &k,
            ProbeState::Healthy,
            ProbeState::Failing,
            failed_at,
        );
    }
    assert!(
        eventually(LIMIT, || async {
            agents.iter().all(|(_, n)| n.stats().sent >= 1)
                && !notifications(&hooks, "am", probe, "firing").is_empty()
        })
        .await,
        "no notification:\n{}",
        am.log()
    );
    // Hold for three resend periods of both agents and three group intervals: still one alert,
    // one notification.
    let hold = Instant::now() + 3 * RESEND + Duration::from_millis(500);
    while Instant::now() < hold {
        let alerts = am.alerts_of(probe).await;
        assert_eq!(alerts.len(), 1, "{alerts:#?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        agents.iter().all(|(_, n)| n.stats().sent >= 3),
        "both agents resent: {:?}",
        agents.iter().map(|(_, n)| n.stats()).collect::<Vec<_>>()
    );
    let firing = notifications(&hooks, "am", probe, "firing");
    assert_eq!(firing.len(), 1, "{firing:#?}");

    let resolved_at = now_unix_ms();
    for (engine, notifier) in &mut agents {
        feed(
            engine,
            notifier,
            &k,
            ProbeState::Failing,
            ProbeState::Healthy,
            resolved_at,
        );
    }
    assert!(
        eventually(LIMIT, || async {
            !notifications(&hooks, "am", probe, "resolved").is_empty()
        })
        .await,
        "no resolved notification:\n{}",
        am.log()
    );
    tokio::time::sleep(3 * RESEND).await;
    let resolved = notifications(&hooks, "am", probe, "resolved");
    assert_eq!(resolved.len(), 1, "{resolved:#?}");
    assert_eq!(
        notifications(&hooks, "am", probe, "firing").len(),
        1,
        "no second firing notification"
    );
    assert!(am.alerts_of(probe).await.is_empty());
    for (_, notifier) in agents {
        notifier.close().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs Debian's prometheus-alertmanager; scripts/test.sh runs it"]
async fn a_muted_alert_never_reaches_alertmanager() {
    let dir = TempDir::new("alert-am-3");
    let hooks = Receiver::default();
    let am = Alertmanager::start(dir.path(), hooks.start().await).await;
    let now = OffsetDateTime::now_utc();
    let hour = time::Duration::hours(1);
    let window = RawMaintenanceWindow {
        start: Some((now - hour).format(&Rfc3339).expect("formats")),
        end: Some((now + hour).format(&Rfc3339).expect("formats")),
        groups: Some(vec!["maint".to_owned()]),
        reason: Some("planned restart".to_owned()),
        ..RawMaintenanceWindow::default()
    };
    let config = config(&am, vec![window]);
    let mut engine = AlertEngine::new(&config);
    let notifier = spawn_notifier(&config, "http://agent-a:9465/metrics");
    let muted = "maint/api@127.0.0.1:8001";
    let loud = "core/api@127.0.0.1:8001";
    let at = now_unix_ms();
    for probe in [muted, loud] {
        let group = probe.split('/').next().expect("a group");
        for t in engine.on_state(&change(
            &key(group, probe),
            ProbeState::Healthy,
            ProbeState::Failing,
            at,
        )) {
            notifier.send(t);
        }
    }
    // The loud one arrives and is notified; the muted one, sent first, never shows.
    let seen_muted = AtomicBool::new(false);
    let arrived = eventually(LIMIT, || async {
        let alerts = am.alerts().await;
        if alerts.iter().any(|a| a["labels"]["probe"] == muted) {
            seen_muted.store(true, Ordering::Relaxed);
        }
        alerts.iter().any(|a| a["labels"]["probe"] == loud)
            && !notifications(&hooks, "am", loud, "firing").is_empty()
    })
    .await;
    assert!(arrived, "the unmuted alert did not arrive:\n{}", am.log());
    let hold = Instant::now() + 2 * RESEND;
    while Instant::now() < hold {
        if !am.alerts_of(muted).await.is_empty() {
            seen_muted.store(true, Ordering::Relaxed);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        !seen_muted.load(Ordering::Relaxed),
        "a muted alert reached Alertmanager"
    );
    assert!(notifications(&hooks, "am", muted, "firing").is_empty());
    assert_eq!(notifier.stats().muted, 1, "{:?}", notifier.stats());

    // The window removed: the next tick fires it, and it arrives (the check above could see it).
    engine.reconfigure(&RawAlertConfig::default().validate().expect("valid"));
    let unmuted = engine.tick(now_unix_ms());
    assert_eq!(unmuted.len(), 1, "{unmuted:?}");
    for t in unmuted {
        notifier.send(t);
    }
    assert!(
        eventually(LIMIT, || async { !am.alerts_of(muted).await.is_empty() }).await,
        "the unmuted alert did not arrive"
    );
    notifier.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs Debian's prometheus-alertmanager; scripts/test.sh runs it"]
async fn five_agents_with_100_failing_probes_give_each_alert_once() {
    const AGENTS: usize = 5;
    const PROBES: usize = 100;
    let dir = TempDir::new("alert-am-4");
    let hooks = Receiver::default();
    let am = Alertmanager::start(dir.path(), hooks.start().await).await;
    let config = config(&am, Vec::new());
    let mut agents: Vec<_> = (0..AGENTS)
        .map(|i| {
            let url = format!("http://agent-{i}:9465/metrics");
            (AlertEngine::new(&config), spawn_notifier(&config, url))
        })
        .collect();
    let probes: Vec<String> = (0..PROBES)
        .map(|i| format!("core/api-{i}@127.0.0.1:8001"))
        .collect();
    let at = now_unix_ms();
    let sent = Instant::now();
    for (engine, notifier) in &mut agents {
        for probe in &probes {
            let change = change(
                &key("core", probe),
                ProbeState::Healthy,
                ProbeState::Failing,
                at,
            );
            for t in engine.on_state(&change) {
                notifier.send(t);
            }
        }
    }
    let all_notified = || {
        let received = hooks.received("am");
        probes.iter().all(|p| {
            received.iter().any(|r| {
                r.body["alerts"]
                    .as_array()
                    .is_some_and(|a| a.iter().any(|a| a["labels"]["probe"] == p.as_str()))
            })
        })
    };
    assert!(
        eventually(LIMIT, || async { all_notified() }).await,
        "not every alert was notified: {} notifications\n{}",
        hooks.received("am").len(),
        am.log()
    );
    let notified = sent.elapsed();
    // Three resend periods of all five agents: still 100 alerts, each notified once.
    tokio::time::sleep(3 * RESEND + Duration::from_millis(500)).await;
    let alerts = am.alerts().await;
    assert_eq!(
        alerts.len(),
        PROBES,
        "one alert per probe, whatever the agents"
    );
    for probe in &probes {
        let firing = notifications(&hooks, "am", probe, "firing");
        assert_eq!(firing.len(), 1, "{probe}: {firing:#?}");
    }
    let sent_total: u64 = agents.iter().map(|(_, n)| n.stats().sent).sum();
    assert!(
        sent_total >= (AGENTS * PROBES * 3) as u64,
        "every agent sent and resent every alert: {sent_total}"
    );
    eprintln!(
        "figure: {AGENTS} agents x {PROBES} failing probes: {} alerts at Alertmanager, {} \
         notifications, all notified {} ms after the first send; {sent_total} alert sends",
        alerts.len(),
        hooks.received("am").len(),
        notified.as_millis()
    );
    for (_, notifier) in agents {
        notifier.close().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs Debian's prometheus-alertmanager; scripts/test.sh runs it"]
async fn a_reconfigured_notifier_relabels_what_fires_and_adds_receivers() {
    let dir = TempDir::new("alert-am-5");
    let hooks = Receiver::default();
    let hooks_addr = hooks.start().await;
    let am = Alertmanager::start(dir.path(), hooks_addr).await;
    let before = config(&am, Vec::new());
    let mut engine = AlertEngine::new(&before);
    let notifier = spawn_notifier(&before, "http://agent-a:9465/metrics");
    let probe = "core/authz@127.0.0.1:8001";
    for t in engine.on_state(&change(
        &key("core", probe),
        ProbeState::Healthy,
        ProbeState::Failing,
        now_unix_ms(),
    )) {
        notifier.send(t);
    }
    let teams = || async {
        let alerts = am.alerts_of(probe).await;
        alerts
            .iter()
            .map(|a| a["labels"]["team"].as_str().unwrap_or_default().to_owned())
            .collect::<Vec<_>>()
    };
    assert!(
        eventually(LIMIT, || async { teams().await == ["platform"] }).await,
        "{}",
        am.log()
    );

    let after = RawAlertConfig {
        alertmanager: vec![am.url.clone()],
        webhooks: vec![format!("http://{hooks_addr}/plain")],
        resend: Some("1s".to_owned()),
        labels: [("team".to_owned(), "network".to_owned())].into(),
        ..RawAlertConfig::default()
    }
    .validate()
    .expect("valid");
    notifier.reconfigure(after.clone());
    engine.reconfigure(&after);
    // The old label set is resolved before the new one is sent (one worker, in order): when
    // team=network shows, team=platform is gone, long before its endsAt (4 s) would drop it.
    assert!(
        eventually(LIMIT, || async {
            teams().await.iter().any(|t| t == "network")
        })
        .await,
        "{:#?}",
        am.alerts_of(probe).await
    );
    assert_eq!(teams().await, ["network"], "the old label set still fires");
    for t in engine.on_state(&change(
        &key("core", probe),
        ProbeState::Failing,
        ProbeState::Healthy,
        now_unix_ms(),
    )) {
        notifier.send(t);
    }
    assert!(
        eventually(LIMIT, || async { !hooks.received("plain").is_empty() }).await,
        "the webhook added by the reload got nothing"
    );
    assert_eq!(
        hooks.received("plain")[0].body["alerts"][0]["status"],
        "resolved"
    );
    assert!(eventually(LIMIT, || async { am.alerts_of(probe).await.is_empty() }).await);
    notifier.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs Debian's prometheus-alertmanager; scripts/test.sh runs it"]
async fn figure_send_to_visible_over_50_alerts() {
    const ALERTS: usize = 50;
    let dir = TempDir::new("alert-am-6");
    let hooks = Receiver::default();
    let am = Alertmanager::start(dir.path(), hooks.start().await).await;
    let config = config(&am, Vec::new());
    let mut engine = AlertEngine::new(&config);
    let notifier = spawn_notifier(&config, "http://agent-a:9465/metrics");
    let mut millis = Vec::with_capacity(ALERTS);
    for i in 0..ALERTS {
        let probe = format!("core/transport-{i}@127.0.0.1:8001");
        let sent = Instant::now();
        for t in engine.on_state(&change(
            &key("core", &probe),
            ProbeState::Healthy,
            ProbeState::Failing,
            now_unix_ms(),
        )) {
            notifier.send(t);
        }
        let probe = probe.as_str();
        assert!(
            eventually(LIMIT, || async { !am.alerts_of(probe).await.is_empty() }).await,
            "alert {i} did not arrive"
        );
        millis.push(sent.elapsed().as_secs_f64() * 1e3);
    }
    millis.sort_by(f64::total_cmp);
    let rank = |q: f64| millis[((q * ALERTS as f64).ceil() as usize).clamp(1, ALERTS) - 1];
    eprintln!(
        "figure: send -> visible in GET /api/v2/alerts over {ALERTS} alerts (10 ms polls): \
         p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms",
        rank(0.5),
        rank(0.99),
        millis[ALERTS - 1]
    );
    assert_eq!(notifier.stats().failed, 0);
    notifier.close().await;
}

/// A CA and a certificate for `localhost` it signed: (CA PEM, certificate PEM, key PEM).
fn localhost_certificate() -> (String, String, String) {
    use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair};
    let mut ca = CertificateParams::new(Vec::<String>::new()).expect("CA params");
    ca.distinguished_name
        .push(DnType::CommonName, "alert test CA");
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let issuer =
        CertifiedIssuer::self_signed(ca, KeyPair::generate().expect("a key")).expect("a CA");
    let key = KeyPair::generate().expect("a key");
    let cert = CertificateParams::new(vec!["localhost".to_owned()])
        .expect("params")
        .signed_by(&key, &issuer)
        .expect("signed");
    (issuer.pem(), cert.pem(), key.serialize_pem())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs Debian's prometheus-alertmanager; scripts/test.sh runs it"]
async fn alerts_reach_alertmanager_over_tls_with_the_configured_ca_only() {
    let dir = TempDir::new("alert-am-7");
    let hooks = Receiver::default();
    let (ca, cert, cert_key) = localhost_certificate();
    let am =
        Alertmanager::start_with(dir.path(), hooks.start().await, Some((&cert, &cert_key))).await;
    assert!(am.url.starts_with("https://localhost:"), "{}", am.url);
    std::fs::write(dir.path().join("ca.pem"), &ca).expect("write the CA");
    let (other_ca, _, _) = localhost_certificate();
    std::fs::write(dir.path().join("other-ca.pem"), &other_ca).expect("write the other CA");
    let config_with = |ca: &str| {
        RawAlertConfig {
            alertmanager: vec![am.url.clone()],
            resend: Some("1s".to_owned()),
            timeout: Some("2s".to_owned()),
            retries: Some(0),
            ca: Some(ca.to_owned()),
            ..RawAlertConfig::default()
        }
        .validate_in(dir.path())
        .expect("a valid config")
    };
    let trusted = config_with("ca.pem");
    let untrusted = config_with("other-ca.pem");

    let mut engine = AlertEngine::new(&trusted);
    let wrong = spawn_notifier(&untrusted, "http://agent-b:9465/metrics");
    let refused = "core/api-untrusted@127.0.0.1:8001";
    for t in engine.on_state(&change(
        &key("core", refused),
        ProbeState::Healthy,
        ProbeState::Failing,
        now_unix_ms(),
    )) {
        wrong.send(t);
    }
    assert!(
        eventually(LIMIT, || async { wrong.stats().failed >= 1 }).await,
        "a server of another CA was not refused: {:?}",
        wrong.stats()
    );
    assert_eq!(wrong.stats().sent, 0);

    let right = spawn_notifier(&trusted, "http://agent-a:9465/metrics");
    let probe = "core/api@127.0.0.1:8001";
    for t in engine.on_state(&change(
        &key("core", probe),
        ProbeState::Healthy,
        ProbeState::Failing,
        now_unix_ms(),
    )) {
        right.send(t);
    }
    // Alertmanager got it over TLS: its own (plain) webhook notification says so.
    assert!(
        eventually(LIMIT, || async {
            !notifications(&hooks, "am", probe, "firing").is_empty()
        })
        .await,
        "nothing over TLS: {:?}\n{}",
        right.stats(),
        am.log()
    );
    assert!(right.stats().sent >= 1);
    assert!(notifications(&hooks, "am", refused, "firing").is_empty());
    right.close().await;
    wrong.close().await;
}
