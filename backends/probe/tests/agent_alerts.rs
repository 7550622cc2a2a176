//! The agent's fan-out to the alerts and the history, end to end against a real node: a
//! stopped node's probe fires `MeshKitProbeFailing` at a webhook (a receiver in the test) with
//! the probe's labels, and the run results and the transition are in the history.

mod agent_support;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use agent_support::write_probes_toml;
use axum::Json;
use axum::extract::State;
use meshkit_probe::agent;
use meshkit_probe::history::History;
use meshkit_testkit::fixtures::{TempDir, observer_token_file, start_cluster};

const LIMIT: Duration = Duration::from_secs(20);

type Seen = Arc<Mutex<Vec<serde_json::Value>>>;

async fn hook(State(seen): State<Seen>, Json(body): Json<serde_json::Value>) -> &'static str {
    seen.lock().unwrap().push(body);
    "ok"
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_probe_fires_at_the_webhook_and_lands_in_the_history() {
    let dir = TempDir::new("probe-agent-alerts");
    let mut nodes = start_cluster(dir.path(), 2).await;
    let target = nodes[1]
        .control_addr()
        .expect("a control listener")
        .to_string();
    let seen: Seen = Arc::default();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let hook_addr = listener.local_addr().unwrap();
    let app = axum::Router::new()
        .route("/hook", axum::routing::post(hook))
        .with_state(seen.clone());
    let server = tokio::spawn(async move { axum::serve(listener, app).await });

    let token = observer_token_file(dir.path());
    let rest = format!(
        "[defaults]\ninterval = \"300ms\"\ntimeout = \"300ms\"\nfailure_threshold = 2\n\
         success_threshold = 1\n\n[[group]]\nname = \"core\"\ncluster = \"test\"\n\
         targets = [\"{target}\"]\nprobes = [\"api\"]\n[group.api]\nendpoints = [\"peers\"]\n\n\
         [alerting]\nwebhooks = [\"http://{hook_addr}/hook\"]\nresend = \"1m\"\n"
    );
    let path = write_probes_toml(dir.path(), &token, "", &rest);
    let agent = agent::start(&path).await.expect("the agent starts");
    let name = format!("core/api-peers@{target}");

    // Healthy first: nothing fires.
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(
        seen.lock().unwrap().is_empty(),
        "{:?}",
        seen.lock().unwrap()
    );

    nodes.remove(1).stop().await;
    let fired = agent_support_wait(LIMIT, || {
        seen.lock()
            .unwrap()
            .iter()
            .flat_map(|b| b["alerts"].as_array().cloned().unwrap_or_default())
            .find(|a| {
                a["status"] == "firing"
                    && a["labels"]["alertname"] == "MeshKitProbeFailing"
                    && a["labels"]["probe"] == name.as_str()
            })
    })
    .await
    .unwrap_or_else(|| {
        panic!(
            "no firing alert within {LIMIT:?}: {:?}",
            seen.lock().unwrap()
        )
    });
    for (label, value) in [
        ("cluster", "test"),
        ("namespace", "default"),
        ("group", "core"),
        ("kind", "api"),
    ] {
        assert_eq!(fired["labels"][label], value, "{fired}");
    }
    assert_eq!(fired["labels"]["target"], target.as_str(), "{fired}");
    assert!(
        fired["labels"].get("agent").is_none(),
        "no agent identity on alerts: {fired}"
    );

    agent.stop().await;
    // The stop flushed the history: the runs and the transition are stored.
    let history = History::open(dir.path().join("probe-history.sqlite")).expect("the history");
    let runs = history.runs(0, i64::MAX).expect("runs");
    assert!(
        runs.iter()
            .any(|r| r.key.probe == name && r.error.is_some()),
        "{runs:?}"
    );
    assert!(
        runs.iter()
            .any(|r| r.key.probe == name && r.error.is_none()),
        "{runs:?}"
    );
    let alerts = history.alerts_before(i64::MAX).expect("alerts");
    assert!(alerts.iter().any(|a| a.key.probe == name), "{alerts:?}");
    server.abort();
    for node in nodes {
        node.stop().await;
    }
}

/// Polls `check` every 100 ms until it gives something, at most `limit`.
async fn agent_support_wait<T>(limit: Duration, check: impl Fn() -> Option<T>) -> Option<T> {
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        if let Some(found) = check() {
            return Some(found);
        }
        if tokio::time::Instant::now() >= deadline {
            return None;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
