//! Issue 14's acceptance: the `meshkit-probe` binary watching five real `meshkitd` (chaos
//! endpoints on), sending to a real Alertmanager (Debian's package). Each fault is injected on
//! its own node and watched by its own probe group, so they run at once and each alert is
//! told apart by its `group` label:
//!
//! | fault | how | group (probe) | alert |
//! |---|---|---|---|
//! | API downtime | node 5 killed (SIGKILL), restarted on its ports | `down` (api) | `MeshKitProbeFailing` |
//! | a muted one | the same node, under a maintenance window | `muted` (api) | none: recorded, not sent |
//! | the control listener refusing | a relay in front of node 4 closes every connection and drops every datagram; the node stays in its mesh | `refused` (api) | `MeshKitProbeFailing` |
//! | slow responses | a relay in front of node 4 delays every answer 700 ms (threshold 400 ms) | `slow` (api) | `MeshKitProbeSlow` |
//! | a stalled stream | node 3 stopped (SIGSTOP): its connections stay, its heartbeats stop (SSE and gRPC) | `stream` (watch) | `MeshKitProbeFailing` |
//! | a permission regression | node 2 restarted giving the agent's certificate `mesh.operate` | `authz` (authz) | `MeshKitProbeFailing` |
//! | an HTTP/3 outage | a `transport-downgrade` experiment on node 1 through the chaos endpoints | `h3` (transport) | `MeshKitProbeFailing` |
//!
//! Each alert must reach Alertmanager (`GET /api/v2/alerts`) within its window,
//! `interval x failure_threshold + timeout + 1 s` (plus the heartbeat and its tolerance for the
//! stream, which is only late after them), with [`SLACK`] for a loaded 2-core machine, and be
//! gone after the fault is undone. Then a config reload lowers a latency threshold without a
//! restart (the `reload` group's alert fires), and a bad reload is refused: the old config
//! keeps running and `meshkit_probe_config_last_reload_successful` is 0. The measured delays
//! are printed (`figure:` lines).
//!
//! Needs `prometheus-alertmanager`, so it is ignored by default (reported skipped) and run by
//! `scripts/test.sh` with the other tool tests. Every wait is bounded; every process is killed
//! when the test ends.

mod common;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant, SystemTime};

use common::daemon::{Daemon, start};
use common::prometheus::{Alertmanager, Killed, free_port, http, http_get, spawn_probe_agent};
use common::relay::{Relay, RelayMode};
use common::{TempDir, eventually, token, write_config_with};
use meshkit_node::client::{Client, ClientConfig, Protocols};
use meshkit_node::permission::Permission;
use serde_json::{Value, json};

/// The agent's timing (every group but `slow`, `stream`): the window is 3 x 1 s + 1 s + 1 s.
const INTERVAL_S: u64 = 1;
const TIMEOUT_S: u64 = 1;
const FAILURES: u64 = 3;
/// `slow`: a 2 s timeout above the relay's 700 ms, so its runs are slow, not timed out.
const SLOW_INTERVAL_S: u64 = 2;
const SLOW_TIMEOUT_S: u64 = 2;
/// `stream`: the node's keep-alive cadence (SSE_HEARTBEAT) and the tolerance on it.
const HEARTBEAT_S: u64 = 5;
const TOLERANCE_S: u64 = 2;
/// What a loaded 2-core machine may add to a window: the agent's and Alertmanager's own
/// latency, scheduling. The figures printed say what it really took.
const SLACK: Duration = Duration::from_secs(6);
const FORM_LIMIT: Duration = Duration::from_secs(30);
const RESOLVE_LIMIT: Duration = Duration::from_secs(40);

fn window(interval_s: u64, timeout_s: u64) -> Duration {
    Duration::from_secs(interval_s * FAILURES + timeout_s + 1)
}

/// Five nodes on fixed ports (so a restarted one is found where it was), voters 1-3.
struct Mesh {
    configs: BTreeMap<u64, PathBuf>,
    daemons: BTreeMap<u64, Daemon>,
}

fn node_extra(identity_scope: &str) -> String {
    format!(
        "[access.identities]\nmeshctl-observer = [\"{identity_scope}\"]\n\n\
         [leadership]\nvoters = [1, 2, 3]\ncampaign = [\"global-control\"]\nttl = \"3s\"\n\n\
         [chaos]\nenabled = true\nallowed_kinds = [\"transport-downgrade\"]\nmax_duration = \"2m\"\n"
    )
}

impl Mesh {
    fn start(dir: &Path) -> Self {
        let bundle = meshkit_node::certs::write_dev_bundle(dir, 5).expect("certificates");
        let mut mesh = Self {
            configs: BTreeMap::new(),
            daemons: BTreeMap::new(),
        };
        for f in &bundle.nodes {
            let id = f.id.get();
            let seeds: Vec<(u64, SocketAddr)> = mesh
                .daemons
                .get(&1)
                .map(|d| vec![(1, d.gossip)])
                .unwrap_or_default();
            let path = write_config_with(
                dir,
                id,
                &seeds,
                &f.cert,
                &f.key,
                &bundle.ca,
                &node_extra("mesh.observe"),
            );
            let daemon = start(&path);
            // Pin the ports the OS chose, so a restart comes back on them.
            daemon.pin_ports(&path);
            mesh.configs.insert(id, path);
            mesh.daemons.insert(id, daemon);
        }
        mesh
    }

    fn control(&self, id: u64) -> &str {
        &self.daemons[&id].control
    }

    fn pid(&self, id: u64) -> u32 {
        self.daemons[&id].child.id()
    }

    /// Kills node `id` (SIGKILL).
    fn kill(&mut self, id: u64) {
        if let Some(mut daemon) = self.daemons.remove(&id) {
            daemon.kill();
        }
    }

    /// Starts node `id` again from its (pinned) config, after `edit` of its text.
    fn restart(&mut self, id: u64, edit: impl FnOnce(String) -> String) {
        self.kill(id);
        let path = &self.configs[&id];
        let text = std::fs::read_to_string(path).expect("read the config");
        std::fs::write(path, edit(text)).expect("write the config");
        // The port may take a moment to be free again after the kill.
        let mut last = None;
        for _ in 0..20 {
            match common::daemon::spawn(&meshkit_testkit::bin("meshkitd"), path) {
                Ok(daemon) => {
                    self.daemons.insert(id, daemon);
                    return;
                }
                Err(error) => last = Some(error),
            }
            std::thread::sleep(Duration::from_millis(250));
        }
        panic!("node {id} did not restart: {last:?}");
    }

    fn signal(&self, id: u64, signal: &str) {
        let status = Command::new("kill")
            .arg(format!("-{signal}"))
            .arg(self.pid(id).to_string())
            .status()
            .expect("run kill");
        assert!(status.success(), "kill -{signal} node {id}");
    }
}

/// `meshkit-probe --config probes.toml`, killed when dropped.
struct Agent {
    _process: Killed,
    listen: SocketAddr,
    config: PathBuf,
    log: PathBuf,
}

impl Agent {
    fn start(dir: &Path, text: &str, listen: SocketAddr) -> Self {
        let config = dir.join("probes.toml");
        std::fs::write(&config, text).expect("write probes.toml");
        let log = dir.join("agent.log");
        Self {
            _process: spawn_probe_agent(&config, &log),
            listen,
            config,
            log,
        }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    async fn metrics(&self) -> String {
        http_get(self.listen, "/metrics").await.unwrap_or_default()
    }

    /// Whether every probe of `group` passed its last run.
    async fn group_passing(&self, group: &str) -> bool {
        let metrics = self.metrics().await;
        let label = format!("group=\"{group}\"");
        let lines: Vec<&str> = metrics
            .lines()
            .filter(|l| l.starts_with("probe_success{") && l.contains(&label))
            .collect();
        !lines.is_empty() && lines.iter().all(|l| l.ends_with(" 1"))
    }
}

/// The agent's configuration: one group per fault (see the module documentation).
fn agent_config(
    mesh: &Mesh,
    relay: SocketAddr,
    refuser: SocketAddr,
    am: &Alertmanager,
    listen: SocketAddr,
) -> String {
    let rfc3339 = |t: SystemTime| {
        time::OffsetDateTime::from(t)
            .format(&time::format_description::well_known::Rfc3339)
            .expect("format a time")
    };
    let now = SystemTime::now();
    let (from, to) = (
        rfc3339(now - Duration::from_secs(3600)),
        rfc3339(now + Duration::from_secs(3600)),
    );
    let group = |name: &str, target: &str, probes: &str, extra: &str| {
        format!(
            "[[group]]\nname = \"{name}\"\ncluster = \"acceptance\"\ntargets = [\"{target}\"]\n\
             probes = [{probes}]\n{extra}\n"
        )
    };
    let api = "[group.api]\nendpoints = [\"peers\"]\n";
    [
        format!(
            "[agent]\nname = \"acceptance\"\nlisten = \"{listen}\"\n\n\
             [credentials]\nca = \"ca.pem\"\ncert = \"meshctl-observer.pem\"\nkey = \"meshctl-observer.key\"\n\n\
             [defaults]\ninterval = \"{INTERVAL_S}s\"\ntimeout = \"{TIMEOUT_S}s\"\n\
             failure_threshold = {FAILURES}\nsuccess_threshold = 2\n\n"
        ),
        group("down", mesh.control(5), "\"api\"", api),
        group("muted", mesh.control(5), "\"api\"", "[group.api]\nendpoints = [\"versions\"]\n"),
        group("refused", &refuser.to_string(), "\"api\"", api),
        group(
            "slow",
            &relay.to_string(),
            "\"api\"",
            &format!(
                "interval = \"{SLOW_INTERVAL_S}s\"\ntimeout = \"{SLOW_TIMEOUT_S}s\"\n\
                 latency_threshold = \"400ms\"\nalert_on_latency = true\n{api}"
            ),
        ),
        group(
            "stream",
            mesh.control(3),
            "\"watch\"",
            &format!(
                "[group.watch]\nstreams = [\"leadership\"]\nheartbeat = \"{HEARTBEAT_S}s\"\n\
                 tolerance = \"{TOLERANCE_S}s\"\nresume_every = \"1h\"\ngrpc = true\n"
            ),
        ),
        group("authz", mesh.control(2), "\"authz\"", ""),
        group("h3", mesh.control(1), "\"transport\"", ""),
        group(
            "reload",
            mesh.control(1),
            "\"api\"",
            "latency_threshold = \"900ms\"\nalert_on_latency = true\n[group.api]\nendpoints = [\"versions\"]\n",
        ),
        format!(
            "[history]\npath = \"history.sqlite\"\n\n\
             [alerting]\nalertmanager = [\"{}\"]\nresend = \"1s\"\ntimeout = \"2s\"\n\n\
             [[alerting.maintenance]]\nstart = \"{from}\"\nend = \"{to}\"\ngroups = [\"muted\"]\n\
             reason = \"acceptance: muted on purpose\"\n",
            am.url()
        ),
    ]
    .concat()
}

/// The active alert of `group` at Alertmanager, if any: (alertname, the alert).
async fn alert_of(am: &Alertmanager, group: &str) -> Option<(String, Value)> {
    am.alerts().await?.into_iter().find_map(|a| {
        let labels = &a["labels"];
        (labels["group"] == group && a["status"]["state"] == "active").then(|| {
            (
                labels["alertname"].as_str().unwrap_or_default().to_owned(),
                a.clone(),
            )
        })
    })
}

/// Polls every 100 ms until `group`'s alert is there (`want`) or gone; the time it took.
async fn until_alert(
    am: &Alertmanager,
    group: &str,
    want: bool,
    limit: Duration,
) -> Option<Duration> {
    let started = Instant::now();
    while started.elapsed() <= limit {
        if alert_of(am, group).await.is_some() == want {
            return Some(started.elapsed());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    None
}

struct Fault {
    group: &'static str,
    alertname: &'static str,
    window: Duration,
    injected: Instant,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs prometheus-alertmanager (Debian); scripts/test.sh runs it"]
async fn the_agent_detects_each_fault_alerts_and_resolves() {
    let dir = TempDir::new("probe-agent");
    let mut mesh = Mesh::start(dir.path());
    let admin = Client::new(
        &ClientConfig::new(&dir.path().join("ca.pem"))
            .expect("the CA")
            .with_protocols(Protocols::TcpOnly)
            .with_token(&token(dir.path(), "acceptance-admin", Permission::Admin))
            .expect("a token")
            .with_request_timeout(Duration::from_secs(10)),
    )
    .expect("a client");
    let formed = eventually(FORM_LIMIT, || async {
        let Ok(r) = admin.get(mesh.control(1), "/meshkit/peers").await else {
            return false;
        };
        r.body.matches("\"alive\"").count() == 5
    })
    .await;
    assert!(formed, "five daemons form a mesh within {FORM_LIMIT:?}");

    let am = Alertmanager::start(
        dir.path(),
        "route:\n  receiver: sink\n  group_wait: 1s\n  group_interval: 1s\nreceivers:\n  - name: sink\n",
    );
    assert!(
        eventually(FORM_LIMIT, || async { am.alerts().await.is_some() }).await,
        "Alertmanager answers:\n{}",
        am.log()
    );
    let relay = Relay::start(mesh.control(4).parse().expect("an address")).await;
    let refuser = Relay::start(mesh.control(4).parse().expect("an address")).await;
    let listen: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().expect("addr");
    let agent = Agent::start(
        dir.path(),
        &agent_config(&mesh, relay.addr, refuser.addr, &am, listen),
        listen,
    );
    let groups = [
        "down", "muted", "refused", "slow", "stream", "authz", "h3", "reload",
    ];
    let healthy = eventually(FORM_LIMIT, || async {
        for g in groups {
            if !agent.group_passing(g).await {
                return false;
            }
        }
        true
    })
    .await;
    assert!(
        healthy,
        "every group passes before the faults:\n{}\n{}",
        agent.metrics().await,
        agent.log()
    );
    let alerts = am.alerts().await.unwrap_or_default();
    assert!(alerts.is_empty(), "no alert before the faults: {alerts:?}");

    // The faults, at once.
    let mut faults = Vec::new();
    let now = Instant::now;
    mesh.kill(5);
    faults.push(Fault {
        group: "down",
        alertname: "MeshKitProbeFailing",
        window: window(INTERVAL_S, TIMEOUT_S),
        injected: now(),
    });
    refuser.set(RelayMode::Refuse);
    faults.push(Fault {
        group: "refused",
        alertname: "MeshKitProbeFailing",
        window: window(INTERVAL_S, TIMEOUT_S),
        injected: now(),
    });
    relay.set(RelayMode::Delay(Duration::from_millis(700)));
    faults.push(Fault {
        group: "slow",
        alertname: "MeshKitProbeSlow",
        window: window(SLOW_INTERVAL_S, SLOW_TIMEOUT_S),
        injected: now(),
    });
    mesh.signal(3, "STOP");
    faults.push(Fault {
        group: "stream",
        alertname: "MeshKitProbeFailing",
        window: window(INTERVAL_S, TIMEOUT_S) + Duration::from_secs(HEARTBEAT_S + TOLERANCE_S),
        injected: now(),
    });
    mesh.restart(2, |text| {
        text.replacen(
            "meshctl-observer = [\"mesh.observe\"]",
            "meshctl-observer = [\"mesh.operate\"]",
            1,
        )
    });
    faults.push(Fault {
        group: "authz",
        alertname: "MeshKitProbeFailing",
        window: window(INTERVAL_S, TIMEOUT_S),
        injected: now(),
    });
    let downgrade = json!({
        "duration": "60s",
        "selector": {"indices": [0]},
        "fault": {"kind": "transport-downgrade"}
    });
    let planned = admin
        .post_json(mesh.control(1), "/control/chaos/plans", &downgrade)
        .await
        .expect("plan the downgrade");
    assert_eq!(planned.status, 200, "{}", planned.body);
    let planned: Value = serde_json::from_str(&planned.body).expect("JSON");
    let started = admin
        .post_json(
            mesh.control(1),
            "/control/chaos/experiments",
            &json!({"plan": planned["plan"], "token": planned["token"]}),
        )
        .await
        .expect("start the downgrade");
    assert!(matches!(started.status, 200 | 201), "{}", started.body);
    let experiment: Value = serde_json::from_str(&started.body).expect("JSON");
    faults.push(Fault {
        group: "h3",
        alertname: "MeshKitProbeFailing",
        window: window(INTERVAL_S, TIMEOUT_S),
        injected: now(),
    });

    // Each alert at Alertmanager within its window.
    let mut figures = Vec::new();
    let longest = faults.iter().map(|f| f.window).max().unwrap_or_default() + SLACK;
    let mut pending: Vec<&Fault> = faults.iter().collect();
    let deadline = Instant::now() + longest;
    while !pending.is_empty() && Instant::now() < deadline {
        for fault in std::mem::take(&mut pending) {
            match alert_of(&am, fault.group).await {
                Some((name, alert)) => {
                    assert_eq!(name, fault.alertname, "{}: {alert}", fault.group);
                    figures.push((fault.group, fault.injected.elapsed(), fault.window));
                }
                None => pending.push(fault),
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    for (group, took, window) in &figures {
        println!(
            "figure: {group}: alert at Alertmanager {:.1} s after the fault (window {:.0} s)",
            took.as_secs_f64(),
            window.as_secs_f64()
        );
    }
    assert!(
        pending.is_empty(),
        "no alert within {longest:?} for {:?}\nalerts: {:?}\n{}",
        pending.iter().map(|f| f.group).collect::<Vec<_>>(),
        am.alerts().await,
        agent.log()
    );
    for (group, took, window) in &figures {
        assert!(
            *took <= *window + SLACK,
            "{group}: {took:?}, window {window:?} + slack {SLACK:?}"
        );
    }
    // The maintenance window: the same outage as `down`, never sent.
    assert!(
        alert_of(&am, "muted").await.is_none(),
        "the muted group's alert reached Alertmanager"
    );
    // The permission regression is named as one (not mistaken for the restart).
    let (_, authz) = alert_of(&am, "authz").await.expect("still firing");
    let description = authz["annotations"]["description"]
        .as_str()
        .unwrap_or_default();
    assert!(description.contains("403"), "authz alert: {authz}");

    // Undo every fault; each alert resolves.
    let mut undone: BTreeMap<&str, Instant> = BTreeMap::new();
    mesh.restart(5, |text| text);
    undone.insert("down", Instant::now());
    refuser.set(RelayMode::Pass);
    undone.insert("refused", Instant::now());
    relay.set(RelayMode::Pass);
    undone.insert("slow", Instant::now());
    mesh.signal(3, "CONT");
    undone.insert("stream", Instant::now());
    mesh.restart(2, |text| {
        text.replacen(
            "meshctl-observer = [\"mesh.operate\"]",
            "meshctl-observer = [\"mesh.observe\"]",
            1,
        )
    });
    undone.insert("authz", Instant::now());
    let id = experiment["id"].as_str().expect("the experiment's id");
    let aborted = admin
        .request(
            http::Method::DELETE,
            mesh.control(1),
            &format!("/control/chaos/experiments/{}", id.replace('/', "%2F")),
            bytes::Bytes::new(),
        )
        .await
        .expect("abort the downgrade");
    assert!(aborted.status < 300, "{}", aborted.body);
    undone.insert("h3", Instant::now());
    let deadline = Instant::now() + RESOLVE_LIMIT;
    while !undone.is_empty() && Instant::now() < deadline {
        for (group, at) in std::mem::take(&mut undone) {
            if alert_of(&am, group).await.is_some() {
                undone.insert(group, at);
            } else {
                println!(
                    "figure: {group}: resolved at Alertmanager {:.1} s after the fault was undone",
                    at.elapsed().as_secs_f64()
                );
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        undone.is_empty(),
        "still firing {RESOLVE_LIMIT:?} after recovery: {:?}\n{}",
        undone.keys().collect::<Vec<_>>(),
        agent.log()
    );

    // A reload lowers the `reload` group's latency threshold without a restart: it alerts.
    let text = std::fs::read_to_string(&agent.config).expect("read probes.toml");
    let lowered = text.replacen(
        "latency_threshold = \"900ms\"",
        "latency_threshold = \"1ms\"",
        1,
    );
    assert_ne!(lowered, text);
    std::fs::write(&agent.config, &lowered).expect("write probes.toml");
    let answer = http(agent.listen, "POST", "/-/reload", "").await;
    assert!(matches!(answer, Some((200, _))), "reload: {answer:?}");
    let reloaded = Instant::now();
    let took = until_alert(&am, "reload", true, window(INTERVAL_S, TIMEOUT_S) + SLACK).await;
    assert!(
        took.is_some(),
        "the lowered threshold never alerted\n{}",
        agent.log()
    );
    println!(
        "figure: reload: a lowered latency threshold alerted {:.1} s after the reload",
        reloaded.elapsed().as_secs_f64()
    );
    // A bad reload is refused, and says so; the running config stays (the alert stays).
    std::fs::write(&agent.config, format!("{lowered}\n[agent]\ncolour = 1\n")).expect("write");
    let answer = http(agent.listen, "POST", "/-/reload", "").await;
    assert!(
        !matches!(answer, Some((200, _))),
        "a bad reload was accepted: {answer:?}"
    );
    let metrics = agent.metrics().await;
    assert!(
        metrics.lines().any(
            |l| l.starts_with("meshkit_probe_config_last_reload_successful") && l.ends_with(" 0")
        ),
        "{metrics}"
    );
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(
        alert_of(&am, "reload").await.is_some(),
        "the old config stopped after a refused reload"
    );
    assert!(
        agent.group_passing("down").await,
        "the agent stopped probing after a refused reload\n{}",
        agent.log()
    );
}
