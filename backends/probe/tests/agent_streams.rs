//! Watch and transport probes against real nodes (in-process, real QUIC/TLS): a leadership
//! and a shard feed, over SSE and gRPC, stay healthy across deliberate resumes and turn
//! Failing when the stream stalls with its connection open; idle feeds pass on the node's
//! heartbeats alone; HTTP/3 and the forced HTTP/2 pass with their protocol
//! recorded, and an address without HTTP/3 fails `transport-h3` only.

mod agent_support;

use std::time::Duration;

use agent_support::{Relay, metrics_until, probe, series, write_probes_toml};
use meshkit_probe::agent;
use meshkit_testkit::fixtures::{TempDir, observer_token_file, start_cluster, start_cluster_with};

const LIMIT: Duration = Duration::from_secs(30);

/// Every failed run's probe and message, from the agent's history (for a failure's message).
fn failures(dir: &std::path::Path) -> Vec<(String, String)> {
    let Ok(history) = meshkit_probe::history::History::open(dir.join("probe-history.sqlite"))
    else {
        return Vec::new();
    };
    history
        .runs(0, i64::MAX)
        .unwrap_or_default()
        .into_iter()
        .filter_map(|r| Some((r.key.probe, r.error?)))
        .collect()
}

/// Leadership with shards, so both feeds carry events (grants, renewals) besides the node's
/// keep-alive comments.
const SHARDS: &str = "[leadership]\nvoters = [1, 2, 3]\nttl = \"3s\"\n\n\
    [leadership.raft]\ntick_interval = \"50ms\"\n\n\
    [shards]\nnamespaces = { orders = 6 }\nttl = \"3s\"\n";

/// Both feeds of node 1 (through a relay), over SSE and over gRPC, stay healthy across a
/// deliberate resume with no failed run (a resume that lost or repeated an event would fail
/// one); pausing what the node sends makes them Failing, the ones that never reconnect on
/// purpose included (their heartbeat checks alone see the stall: the SSE keep-alive comment,
/// the gRPC `Heartbeat`); letting it through makes them healthy again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_streams_survive_resumes_and_fail_when_stalled() {
    let dir = TempDir::new("probe-agent-watch");
    let nodes = start_cluster_with(dir.path(), 3, SHARDS).await;
    let relay = Relay::start(nodes[0].control_addr().expect("a control listener")).await;
    let target = relay.addr.to_string();
    let token_file = observer_token_file(dir.path());
    let rest = format!(
        "[[group]]\nname = \"feeds\"\ncluster = \"test\"\ntargets = [\"{target}\"]\n\
         probes = [\"watch\"]\ninterval = \"500ms\"\ntimeout = \"500ms\"\nfailure_threshold = 2\n\
         success_threshold = 1\n[group.watch]\nstreams = [\"leadership\", \"shards\"]\n\
         heartbeat = \"5s\"\ntolerance = \"2s\"\nresume_every = \"7s\"\ngrpc = true\n\n\
         [[group]]\nname = \"stall\"\ncluster = \"test\"\ntargets = [\"{target}\"]\n\
         probes = [\"watch\"]\ninterval = \"500ms\"\ntimeout = \"500ms\"\nfailure_threshold = 2\n\
         success_threshold = 1\n[group.watch]\nstreams = [\"leadership\"]\n\
         heartbeat = \"5s\"\ntolerance = \"2s\"\nresume_every = \"1h\"\ngrpc = true\n"
    );
    let path = write_probes_toml(dir.path(), &token_file, "", &rest);
    let agent = agent::start(&path).await.expect("the agent starts");
    let addr = agent.listen_addr();
    let names = [
        probe(&format!("feeds/watch-leadership-sse@{target}")),
        probe(&format!("feeds/watch-shards-sse@{target}")),
        probe(&format!("feeds/watch-leadership-grpc@{target}")),
        probe(&format!("feeds/watch-shards-grpc@{target}")),
    ];
    // Never reconnect on purpose: only their heartbeat checks can see the stall.
    let stalls = [
        probe(&format!("stall/watch-leadership-sse@{target}")),
        probe(&format!("stall/watch-leadership-grpc@{target}")),
    ];
    let healthy = |text: &str| {
        names
            .iter()
            .all(|n| series(text, "mesh_probe_state", &[n, "state=\"healthy\""]) == Some(1.0))
    };
    let (ok, text) = metrics_until(addr, LIMIT, healthy).await;
    assert!(ok, "the feeds not healthy within {LIMIT:?}:\n{text}");
    // Past a deliberate resume: every run passes (no lost, repeated or stale event, no stall;
    // the node's keep-alive comes every 5 s, its SSE_HEARTBEAT).
    tokio::time::sleep(Duration::from_secs(9)).await;
    let (_, text) = metrics_until(addr, LIMIT, |_| true).await;
    for n in &names {
        let passes = series(&text, "mesh_probe_results_total", &[n, "result=\"pass\""]);
        assert!(passes.is_some_and(|p| p >= 6.0), "{n}: {passes:?}\n{text}");
        let fails = series(&text, "mesh_probe_results_total", &[n, "result=\"fail\""])
            .unwrap_or(0.0)
            + series(
                &text,
                "mesh_probe_results_total",
                &[n, "result=\"timeout\""],
            )
            .unwrap_or(0.0);
        assert_eq!(
            fails,
            0.0,
            "{n} failed across resumes: {:?}",
            failures(dir.path())
        );
        assert_eq!(
            series(&text, "probe_http_version", &[n]),
            Some(2.0),
            "SSE and gRPC ride HTTP/2"
        );
    }

    // The node's bytes stop (the connection stays open): a stalled stream.
    relay.pause(true);
    let (ok, text) = metrics_until(addr, LIMIT, |text| {
        names
            .iter()
            .chain(&stalls)
            .all(|n| series(text, "mesh_probe_state", &[n, "state=\"failing\""]) == Some(1.0))
    })
    .await;
    assert!(ok, "stalled feeds not failing within {LIMIT:?}:\n{text}");
    relay.pause(false);
    let (ok, text) = metrics_until(addr, LIMIT, healthy).await;
    assert!(ok, "the feeds not healthy again within {LIMIT:?}:\n{text}");
    agent.stop().await;
    for node in nodes {
        node.stop().await;
    }
}

/// One voter, no campaign and no shards: once elected, both feeds are idle.
const IDLE: &str = "[leadership]\nvoters = [1]\nttl = \"3s\"\n\n\
    [leadership.raft]\ntick_interval = \"50ms\"\n";

/// An idle feed sends nothing but the node's keep-alives: over gRPC (the `Heartbeat` message)
/// and SSE (the comment), every run passes on them alone across more than one heartbeat and a
/// deliberate resume. Without the node's heartbeats each watch would fail once it had been
/// quiet for `heartbeat + tolerance` (7 s).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_feeds_pass_on_heartbeats_alone() {
    let dir = TempDir::new("probe-agent-idle");
    let nodes = start_cluster_with(dir.path(), 1, IDLE).await;
    let target = nodes[0]
        .control_addr()
        .expect("a control listener")
        .to_string();
    let token_file = observer_token_file(dir.path());
    let rest = format!(
        "[[group]]\nname = \"idle\"\ncluster = \"test\"\ntargets = [\"{target}\"]\n\
         probes = [\"watch\"]\ninterval = \"500ms\"\ntimeout = \"500ms\"\nfailure_threshold = 1\n\
         success_threshold = 1\n[group.watch]\nstreams = [\"leadership\", \"shards\"]\n\
         heartbeat = \"5s\"\ntolerance = \"2s\"\nresume_every = \"8s\"\ngrpc = true\n"
    );
    let path = write_probes_toml(dir.path(), &token_file, "", &rest);
    let agent = agent::start(&path).await.expect("the agent starts");
    let addr = agent.listen_addr();
    let names = [
        "leadership-grpc",
        "shards-grpc",
        "leadership-sse",
        "shards-sse",
    ]
    .map(|d| probe(&format!("idle/watch-{d}@{target}")));
    let (ok, text) = metrics_until(addr, LIMIT, |text| {
        names
            .iter()
            .all(|n| series(text, "mesh_probe_state", &[n, "state=\"healthy\""]) == Some(1.0))
    })
    .await;
    assert!(ok, "the idle feeds not healthy within {LIMIT:?}:\n{text}");
    // Past two heartbeats and a deliberate resume, nothing sent but keep-alives.
    tokio::time::sleep(Duration::from_secs(11)).await;
    let (_, text) = metrics_until(addr, LIMIT, |_| true).await;
    for n in &names {
        let passes = series(&text, "mesh_probe_results_total", &[n, "result=\"pass\""]);
        assert!(passes.is_some_and(|p| p >= 15.0), "{n}: {passes:?}\n{text}");
        let fails = series(&text, "mesh_probe_results_total", &[n, "result=\"fail\""])
            .unwrap_or(0.0)
            + series(
                &text,
                "mesh_probe_results_total",
                &[n, "result=\"timeout\""],
            )
            .unwrap_or(0.0);
        assert_eq!(
            fails,
            0.0,
            "{n} failed on an idle feed: {:?}",
            failures(dir.path())
        );
    }
    agent.stop().await;
    for node in nodes {
        node.stop().await;
    }
}

/// Directly, `transport-h3` and `transport-h2` pass with `probe_http_version` 3 and 2 (and the
/// node's counters moved with each); through a TCP-only relay (an HTTP/3 outage)
/// `transport-h3` fails and `transport-h2` passes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transport_probes_record_the_protocol_and_see_an_http3_outage() {
    let dir = TempDir::new("probe-agent-transport");
    let nodes = start_cluster(dir.path(), 1).await;
    let direct = nodes[0]
        .control_addr()
        .expect("a control listener")
        .to_string();
    let relay = Relay::start(nodes[0].control_addr().expect("a control listener")).await;
    let tcp_only = relay.addr.to_string();
    let token_file = observer_token_file(dir.path());
    let rest = format!(
        "[defaults]\ninterval = \"300ms\"\ntimeout = \"300ms\"\nfailure_threshold = 2\n\
         success_threshold = 1\n\n\
         [[group]]\nname = \"direct\"\ncluster = \"test\"\ntargets = [\"{direct}\"]\n\
         probes = [\"transport\"]\n\n\
         [[group]]\nname = \"outage\"\ncluster = \"test\"\ntargets = [\"{tcp_only}\"]\n\
         probes = [\"transport\"]\n\
         # Time enough for a fallback to TCP: only forcing HTTP/3 makes transport-h3 fail.\n\
         interval = \"1s\"\ntimeout = \"1s\"\n"
    );
    let path = write_probes_toml(dir.path(), &token_file, "", &rest);
    let agent = agent::start(&path).await.expect("the agent starts");
    let h3 = probe(&format!("direct/transport-h3@{direct}"));
    let h2 = probe(&format!("direct/transport-h2@{direct}"));
    let out_h3 = probe(&format!("outage/transport-h3@{tcp_only}"));
    let out_h2 = probe(&format!("outage/transport-h2@{tcp_only}"));
    let (ok, text) = metrics_until(agent.listen_addr(), LIMIT, |text| {
        let state = |n: &str, s: &str| {
            series(text, "mesh_probe_state", &[n, &format!("state=\"{s}\"")]) == Some(1.0)
        };
        state(&h3, "healthy")
            && state(&h2, "healthy")
            && state(&out_h2, "healthy")
            && state(&out_h3, "failing")
    })
    .await;
    assert!(
        ok,
        "transport states not as expected within {LIMIT:?}:\n{text}"
    );
    assert_eq!(
        series(&text, "probe_http_version", &[&h3]),
        Some(3.0),
        "{text}"
    );
    assert_eq!(
        series(&text, "probe_http_version", &[&h2]),
        Some(2.0),
        "{text}"
    );
    assert_eq!(
        series(&text, "probe_http_version", &[&out_h2]),
        Some(2.0),
        "{text}"
    );
    assert_eq!(
        series(&text, "probe_success", &[&out_h3]),
        Some(0.0),
        "{text}"
    );
    // The node reports its certificate's expiry, a date in the future.
    let expiry = series(&text, "probe_ssl_earliest_cert_expiry", &[&h2]).unwrap_or(0.0);
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64();
    assert!(expiry > now, "expiry {expiry} not after now {now}:\n{text}");
    agent.stop().await;
    for node in nodes {
        node.stop().await;
    }
}
