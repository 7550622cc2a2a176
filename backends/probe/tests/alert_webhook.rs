//! The notifier's plain webhook against an HTTP receiver of the test (axum on loopback): the
//! documented JSON body, retries with backoff, giving up (counted), and a `send` that never
//! waits (a full queue drops and counts).

mod alert_support;

use std::time::Duration;

use alert_support::{Receiver, eventually, feed, free_port, key};
use meshkit::diag::probe::ProbeState;
use meshkit_probe::alert::notifier::QUEUE_CAPACITY;
use meshkit_probe::alert::payload::rfc3339;
use meshkit_probe::alert::{AlertConfig, AlertEngine, RawAlertConfig, spawn_notifier};
use meshkit_probe::record::now_unix_ms;

const LIMIT: Duration = Duration::from_secs(10);

fn config(webhooks: Vec<String>, retries: u32) -> AlertConfig {
    RawAlertConfig {
        webhooks,
        retries: Some(retries),
        timeout: Some("2s".to_owned()),
        ..RawAlertConfig::default()
    }
    .validate()
    .expect("a valid config")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_webhook_gets_the_documented_json_for_firing_and_resolved() {
    let receiver = Receiver::default();
    let addr = receiver.start().await;
    let config = config(vec![format!("http://{addr}/plain")], 2);
    let mut engine = AlertEngine::new(&config);
    let notifier = spawn_notifier(&config, "http://agent-a:9465/metrics");
    let k = key("core", "core/api@127.0.0.1:8001");
    let fired_at = now_unix_ms();
    feed(
        &mut engine,
        &notifier,
        &k,
        ProbeState::Healthy,
        ProbeState::Failing,
        fired_at,
    );
    assert!(
        eventually(LIMIT, || async { !receiver.received("plain").is_empty() }).await,
        "the webhook got nothing"
    );
    let body = &receiver.received("plain")[0].body;
    assert_eq!(body["version"], "1", "{body:#}");
    assert_eq!(body["source"], "meshkit-probe");
    assert_eq!(body["generatorURL"], "http://agent-a:9465/metrics");
    let alerts = body["alerts"].as_array().expect("alerts");
    assert_eq!(alerts.len(), 1, "{body:#}");
    let alert = &alerts[0];
    assert_eq!(alert["status"], "firing");
    assert_eq!(
        alert["labels"],
        serde_json::json!({
            "alertname": "MeshKitProbeFailing", "cluster": "prod-a", "namespace": "default",
            "group": "core", "probe": "core/api@127.0.0.1:8001", "kind": "api",
            "target": "127.0.0.1:8001", "severity": "critical"
        })
    );
    assert_eq!(
        alert["annotations"]["runbook_url"],
        "https://example.invalid/meshkit/blob/main/docs/runbooks.md#meshkitprobefailing"
    );
    assert!(alert["annotations"]["summary"].is_string());
    assert_eq!(alert["startsAt"], rfc3339(fired_at));
    assert!(alert["endsAt"].is_null());
    assert!(
        alert["reason"]
            .as_str()
            .is_some_and(|r| r.contains("connection refused")),
        "{alert:#}"
    );

    let resolved_at = now_unix_ms();
    feed(
        &mut engine,
        &notifier,
        &k,
        ProbeState::Failing,
        ProbeState::Healthy,
        resolved_at,
    );
    assert!(
        eventually(LIMIT, || async { notifier.stats().sent == 2 }).await,
        "{:?}",
        notifier.stats()
    );
    assert_eq!(notifier.stats().failed, 0);
    tokio::time::timeout(LIMIT, notifier.close())
        .await
        .expect("close within the retries' bound");
    let bodies = receiver.received("plain");
    assert_eq!(
        bodies.len(),
        2,
        "one POST per transition batch, no resends to webhooks"
    );
    let alert = &bodies[1].body["alerts"][0];
    assert_eq!(alert["status"], "resolved");
    assert_eq!(alert["startsAt"], rfc3339(fired_at));
    assert_eq!(alert["endsAt"], rfc3339(resolved_at));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_post_is_retried_with_backoff() {
    let receiver = Receiver::default();
    let addr = receiver.start().await;
    receiver.fail_next(2);
    let config = config(vec![format!("http://{addr}/plain")], 3);
    let mut engine = AlertEngine::new(&config);
    let notifier = spawn_notifier(&config, "http://agent-a:9465/metrics");
    let k = key("core", "core/api@127.0.0.1:8001");
    let started = std::time::Instant::now();
    feed(
        &mut engine,
        &notifier,
        &k,
        ProbeState::Healthy,
        ProbeState::Failing,
        now_unix_ms(),
    );
    assert!(
        eventually(LIMIT, || async { notifier.stats().sent == 1 }).await,
        "not delivered: {:?}",
        notifier.stats()
    );
    let waited = started.elapsed();
    assert_eq!(receiver.refused(), 2);
    assert_eq!(receiver.received("plain").len(), 1);
    let stats = notifier.stats();
    assert_eq!((stats.retries, stats.failed), (2, 0), "{stats:?}");
    // Two backoffs: 250 ms, then 500 ms.
    assert!(waited >= Duration::from_millis(750), "{waited:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_receiver_is_given_up_after_the_retries() {
    let config = config(vec![format!("http://127.0.0.1:{}/gone", free_port())], 1);
    let mut engine = AlertEngine::new(&config);
    let notifier = spawn_notifier(&config, "http://agent-a:9465/metrics");
    let k = key("core", "core/api@127.0.0.1:8001");
    feed(
        &mut engine,
        &notifier,
        &k,
        ProbeState::Healthy,
        ProbeState::Failing,
        now_unix_ms(),
    );
    assert!(
        eventually(LIMIT, || async { notifier.stats().failed == 1 }).await,
        "not given up: {:?}",
        notifier.stats()
    );
    let stats = notifier.stats();
    assert_eq!((stats.sent, stats.retries), (0, 1), "{stats:?}");
}

/// On a current-thread runtime the notifier's task cannot run while the test does not yield:
/// `send` returns at once each time, the queue fills, the rest are dropped and counted.
#[tokio::test]
async fn send_never_waits_and_counts_what_it_drops() {
    let receiver = Receiver::default();
    let addr = receiver.start().await;
    let config = config(vec![format!("http://{addr}/plain")], 0);
    let notifier = spawn_notifier(&config, "http://agent-a:9465/metrics");
    let mut engine = AlertEngine::new(&config);
    let extra = 100;
    let started = std::time::Instant::now();
    for i in 0..QUEUE_CAPACITY + extra {
        let k = key("core", &format!("core/api-{i}@127.0.0.1:8001"));
        feed(
            &mut engine,
            &notifier,
            &k,
            ProbeState::Healthy,
            ProbeState::Failing,
            0,
        );
    }
    let elapsed = started.elapsed();
    assert_eq!(notifier.stats().dropped, extra as u64);
    assert!(elapsed < Duration::from_secs(2), "{elapsed:?}");
    tokio::time::timeout(LIMIT, notifier.close())
        .await
        .expect("the queued ones are delivered");
    let delivered: usize = receiver
        .received("plain")
        .iter()
        .map(|r| r.body["alerts"].as_array().map_or(0, Vec::len))
        .sum();
    assert_eq!(delivered, QUEUE_CAPACITY);
}
