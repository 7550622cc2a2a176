//! The observability pack (`dashboards/`) end to end, with real parts only: five `meshkitd` on
//! loopback (three Raft voters with durable logs), scraped over TLS by a real Prometheus that
//! loads `dashboards/rules/meshkit.rules.yml` and sends to a real Alertmanager running
//! `dashboards/alertmanager.yml`, whose webhook receivers are this test's HTTP server.
//!
//! What it shows, in order:
//! 1. `kill -9` of the Raft leader and of a second voter fires `MeshKitNodeDown` for both (and
//!    `MeshKitNoRaftLeader` for the voter left) at Alertmanager within the alert's `for` plus a
//!    scrape interval and two evaluation intervals; the latency of each is printed;
//! 2. the `maintenance-window` mute time interval holds the node-down notification back
//!    (Alertmanager logs that it did not send it), and it is sent once the window is moved away
//!    (a configuration reload);
//! 3. an `amtool silence` suppresses the no-leader notification (Alertmanager lists the alert as
//!    silenced, and two flushes of its group go by without it), which is sent once the silence
//!    is expired;
//! 4. after the two nodes restart, both alerts resolve (resolved notifications);
//! 5. the probe agent (`meshkit-probe`, scraped as job `meshkit-probe` and sending its own
//!    alerts to the same Alertmanager) probes the five nodes' control API over HTTP/3 and
//!    HTTP/2: its `MeshKitProbeFailing` for the two killed nodes reaches Alertmanager within
//!    the agent's own bound (interval x failure_threshold + timeout), is inhibited by their
//!    `MeshKitNodeDown`, and still is after Alertmanager's reloads (not "never notified": the
//!    comment before the restart says why). The voters' `instance` is their name
//!    (`node-<id>`), not the address the agent probes: the inhibition holds through the
//!    `target` label the scrape configuration sets to the control address (node 5 keeps
//!    Prometheus's defaults instead; dashboards/README.md, "What the rules expect");
//! 6. every panel query of every dashboard and every rule returns data over the run
//!    (`dashboards/tools/dashboards.py check --strict`, the synthetic check for deploys), with
//!    the one exception argued at [`ALLOWED_EMPTY`].
//!
//! Intervals are short (scrape and evaluation every second, Alertmanager's group wait 1 s and
//! group interval 2 s); the rules and their `for` are the pack's, unchanged. The Alertmanager
//! configuration is the pack's, with three edits the test makes and checks: the webhook URLs
//! point at this test, the group timers are short, and the maintenance window is "always"
//! (then "another weekday"). With `MESHKIT_DASHBOARD_PICTURES=DIR` set, the dashboards are also
//! drawn with this run's data into `DIR/*.png` (`scripts/render-dashboards.sh`).
//!
//! Needs Debian's `prometheus`, `prometheus-alertmanager` and `python3`, so it is ignored by
//! default; `scripts/test.sh` runs it (about 100 s). Every wait is a bounded poll. Every node
//! target carries the `cluster`, `namespace` and `target` labels the pack expects, and a
//! restarted node comes back on its ports, as the agent's targets and the inhibition of its
//! alerts need.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use common::daemon::{Daemon, start};
use common::prometheus::{Killed, Prometheus, free_port, http, http_get, spawn_probe_agent};
use common::{MeshctlAs, TempDir, write_config_with};
use meshkit_node::api::json::EnqueueRequest;
use meshkit_node::client::{Client, ClientConfig, Protocols};
use serde_json::Value;

/// The `cluster` label of every target.
const CLUSTER: &str = "e2e";
/// The `namespace` label of every node target, and the namespace of the agent's group.
const NAMESPACE: &str = "mesh-e2e";
/// Prometheus's scrape and rule evaluation intervals in this test.
const SCRAPE: Duration = Duration::from_secs(1);
const EVALUATION: Duration = Duration::from_secs(1);
/// Alertmanager's timers in this test (the pack's are 30 s / 10 s and 5 m).
const GROUP_WAIT: &str = "1s";
const GROUP_INTERVAL: &str = "2s";
/// Delivery and polling on a loaded 2-core machine: Prometheus's send, Alertmanager's intake,
/// this test's poll (every 100 ms). Added to the bound each alert's latency is checked against.
const SLACK: Duration = Duration::from_secs(2);
/// The probe agent's timing: a probe is Failing after FAILURES runs in a row, one every
/// INTERVAL, each cut at TIMEOUT: its alert is due interval x failure_threshold + timeout after
/// a fault (docs/probes.md), plus AGENT_SLACK for a loaded 2-core machine (as tests/probe_agent.rs).
const AGENT_INTERVAL_S: u64 = 2;
const AGENT_TIMEOUT_S: u64 = 2;
const AGENT_FAILURES: u64 = 3;
/// The agent's latency threshold, with `alert_on_latency` (so that it exports the threshold the
/// `MeshKitProbeSlow` rule reads): just under the timeout, far above what a loopback probe
/// takes even on a loaded machine (runs near 1 s were seen at a load of 30 on 2 cores).
const AGENT_LATENCY_MS: u64 = 1900;
const AGENT_SLACK: Duration = Duration::from_secs(6);
/// How long the mesh and the tools may take to start, settle, recover.
const SETTLE_LIMIT: Duration = Duration::from_secs(30);
const POLL: Duration = Duration::from_millis(100);

/// Checks of `dashboards.py check` that may return nothing in this run, each with the reason
/// (`--strict` fails the run if one of them does return data, so the list stays minimal).
const ALLOWED_EMPTY: &[(&str, &str)] = &[(
    "*instance:mesh_gossip_sent_bytes:rate5m_avg1h*",
    "the gossip traffic baseline averages the hour before the last 15 minutes \
     (`[1h] offset 15m`): a run shorter than 15 minutes has none",
)];

/// Voters 1-3 keep their Raft log (`data_dir`), so a voter killed with SIGKILL can be
/// restarted; every node contends for `global-control` and takes shards (16 of them, so that
/// the shards dashboard has data) and serves their task queues (so the queues dashboard has:
/// the run enqueues [`ENQUEUED`] items, which nobody works on).
fn leadership(id: u64) -> String {
    let data_dir = if id <= 3 {
        format!("data_dir = \"raft-{id}\"\n")
    } else {
        String::new()
    };
    format!(
        "[leadership]\nvoters = [1, 2, 3]\ncampaign = [\"global-control\"]\nttl = \"3s\"\n\
         {data_dir}\n[leadership.raft]\ntick_interval = \"50ms\"\n\n\
         [shards]\nnamespaces = {{ orders = 16 }}\nttl = \"3s\"\n\n\
         [queues]\ndata_dir = \"queues-{id}\"\n\n\
         [chaos]\nenabled = true\nallowed_kinds = [\"latency\"]\nmax_duration = \"1m\"\n"
    )
}

/// The pack's directory.
fn pack() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../dashboards")
}

/// The `for` of `alert` in the pack's rule file (its first definition).
fn alert_for(alert: &str) -> Duration {
    let rules = std::fs::read_to_string(pack().join("rules/meshkit.rules.yml")).expect("rules");
    let mut lines = rules
        .lines()
        .skip_while(|l| l.trim() != format!("- alert: {alert}"));
    assert!(lines.next().is_some(), "no alert {alert} in the rule file");
    let value = lines
        .map(str::trim)
        .take_while(|l| !l.starts_with("- "))
        .find_map(|l| l.strip_prefix("for: "))
        .unwrap_or_else(|| panic!("{alert} has no `for:`"));
    let (number, unit) = value.split_at(value.len() - 1);
    let number: u64 = number.parse().unwrap_or_else(|_| panic!("for: {value}"));
    Duration::from_secs(match unit {
        "s" => number,
        "m" => number * 60,
        "h" => number * 3600,
        _ => panic!("{alert}: for: {value} is not in s, m or h"),
    })
}

/// A notification a webhook receiver got.
#[derive(Clone, Debug)]
struct Notification {
    at: Instant,
    receiver: String,
    body: Value,
}

impl Notification {
    /// `(alertname, instance, status)` of each alert it carries.
    fn alerts(&self) -> Vec<(String, String, String)> {
        self.body["alerts"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|a| {
                let s = |v: &Value| v.as_str().unwrap_or_default().to_owned();
                (
                    s(&a["labels"]["alertname"]),
                    s(&a["labels"]["instance"]),
                    s(&a["status"]),
                )
            })
            .collect()
    }
}

/// This test's HTTP server: Alertmanager's webhook receivers (`POST /<receiver>`, recorded)
/// and a textfile collector (`GET /textfile`: the client families `meshctl transport stats
/// --prometheus` printed last, as node_exporter's textfile collector would serve them).
#[derive(Clone, Default)]
struct Server {
    notifications: Arc<Mutex<Vec<Notification>>>,
    textfile: Arc<Mutex<String>>,
}

impl Server {
    async fn start(&self) -> SocketAddr {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind the test's HTTP server");
        let addr = listener.local_addr().expect("its address");
        let server = self.clone();
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let server = server.clone();
                tokio::spawn(async move { server.serve(stream).await });
            }
        });
        addr
    }

    /// One request, then the connection is closed.
    async fn serve(&self, mut stream: tokio::net::TcpStream) {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut raw = Vec::new();
        let mut buf = [0u8; 8192];
        let request = loop {
            let read = tokio::time::timeout(Duration::from_secs(5), stream.read(&mut buf)).await;
            let Ok(Ok(n)) = read else { return };
            if n == 0 || raw.len() > 4 << 20 {
                return;
            }
            raw.extend_from_slice(&buf[..n]);
            let text = String::from_utf8_lossy(&raw).into_owned();
            let Some((head, body)) = text.split_once("\r\n\r\n") else {
                continue;
            };
            let length = head
                .lines()
                .filter_map(|l| l.split_once(':'))
                .find(|(k, _)| k.eq_ignore_ascii_case("content-length"))
                .and_then(|(_, v)| v.trim().parse::<usize>().ok())
                .unwrap_or(0);
            if body.len() >= length {
                break (head.to_owned(), body[..length].to_owned());
            }
        };
        let (head, body) = request;
        let mut words = head.split_whitespace();
        let (method, path) = (words.next().unwrap_or(""), words.next().unwrap_or(""));
        let (status, answer) = match (method, path) {
            ("GET", "/textfile") => ("200 OK", self.textfile.lock().unwrap().clone()),
            ("POST", receiver) => match serde_json::from_str(&body) {
                Ok(body) => {
                    self.notifications.lock().unwrap().push(Notification {
                        at: Instant::now(),
                        receiver: receiver.trim_start_matches('/').to_owned(),
                        body,
                    });
                    ("200 OK", String::new())
                }
                Err(_) => ("400 Bad Request", String::new()),
            },
            _ => ("404 Not Found", String::new()),
        };
        let response = format!(
            "HTTP/1.1 {status}\r\nContent-Type: text/plain; version=0.0.4\r\n\
             Content-Length: {}\r\nConnection: close\r\n\r\n{answer}",
            answer.len()
        );
        let _ = stream.write_all(response.as_bytes()).await;
        let _ = stream.shutdown().await;
    }

    fn notifications(&self) -> Vec<Notification> {
        self.notifications.lock().unwrap().clone()
    }
}

/// Alertmanager, started on the pack's configuration with the test's three edits.
struct Alertmanager {
    am: common::prometheus::Alertmanager,
    hooks: SocketAddr,
}

/// The maintenance window as the pack defines it (Sunday 02:00-04:00 UTC).
const PACK_WINDOW: &str = "      - weekdays: [sunday]\n        times:\n          - start_time: \
     \"02:00\"\n            end_time: \"04:00\"\n        location: UTC\n";

impl Alertmanager {
    /// The pack's `alertmanager.yml` with the webhooks pointing at `hooks`, short group timers,
    /// and the maintenance window replaced by `window` (a `time_intervals` entry).
    fn config(hooks: SocketAddr, window: &str) -> String {
        let pack = std::fs::read_to_string(pack().join("alertmanager.yml")).expect("read it");
        let edits = [
            (
                "url: https://alerts.example.invalid/".to_owned(),
                format!("url: http://{hooks}/"),
                3,
            ),
            (
                "group_wait: 30s".to_owned(),
                format!("group_wait: {GROUP_WAIT}"),
                1,
            ),
            (
                "group_wait: 10s".to_owned(),
                format!("group_wait: {GROUP_WAIT}"),
                1,
            ),
            (
                "group_interval: 5m".to_owned(),
                format!("group_interval: {GROUP_INTERVAL}"),
                1,
            ),
            (PACK_WINDOW.to_owned(), window.to_owned(), 1),
        ];
        let mut text = pack;
        for (from, to, count) in edits {
            assert_eq!(
                text.matches(&from).count(),
                count,
                "dashboards/alertmanager.yml changed: this test edits {from:?} ({count} times); \
                 update the test with it"
            );
            text = text.replace(&from, &to);
        }
        text
    }

    /// A maintenance window covering every day, all day: notifications of the muted routes are
    /// held back.
    fn always() -> String {
        "      - weekdays: ['sunday:saturday']\n        location: UTC\n".to_owned()
    }

    /// A maintenance window on the weekday three days from today (UTC): not now.
    fn another_day() -> String {
        const DAYS: [&str; 7] = [
            "thursday",
            "friday",
            "saturday",
            "sunday",
            "monday",
            "tuesday",
            "wednesday",
        ];
        let now = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .expect("after 1970")
            .as_secs();
        // 1970-01-01 was a Thursday.
        let day = DAYS[usize::try_from((now / 86_400 + 3) % 7).expect("small")];
        format!("      - weekdays: [{day}]\n        location: UTC\n")
    }

    fn start(dir: &Path, hooks: SocketAddr) -> Self {
        Self {
            am: common::prometheus::Alertmanager::start(dir, &Self::config(hooks, &Self::always())),
            hooks,
        }
    }

    fn url(&self) -> String {
        format!("--alertmanager.url={}", self.am.url())
    }

    /// Rewrites the configuration with `window` and reloads it.
    async fn reload(&self, window: &str) {
        std::fs::write(&self.am.config, Self::config(self.hooks, window)).expect("write it");
        let answer = http(self.am.web, "POST", "/-/reload", "").await;
        assert!(
            matches!(answer, Some((200, _))),
            "Alertmanager's reload: {answer:?}\n{}",
            self.am.log()
        );
    }

    /// Runs `amtool args --alertmanager.url=...`: what it printed.
    fn amtool(&self, args: &[&str]) -> String {
        let mut command = Command::new("amtool");
        command.args(args).arg(self.url()).stdin(Stdio::null());
        let (ok, printed) = common::run_bounded(command, Duration::from_secs(30));
        assert!(ok, "amtool {args:?}:\n{printed}");
        printed
    }
}

/// Lines of `log` from the first one containing `from` on (all of it for an empty `from`).
fn log_after<'a>(log: &'a str, from: &str) -> Vec<&'a str> {
    log.lines().skip_while(|l| !l.contains(from)).collect()
}

/// Flushes of the group of `alertname` Alertmanager logged in `lines`.
fn flushes(lines: &[&str], alertname: &str) -> usize {
    let group = format!("alertname=\\\"{alertname}\\\"");
    lines
        .iter()
        .filter(|l| l.contains("msg=flushing") && l.contains(&group))
        .count()
}

/// The node whose target keeps Prometheus's defaults: `instance` is its control address and
/// it has no `target` label (so `MeshKitNodeDown`'s fallback, a copy of `instance`, has a
/// series to read). Not a voter: it is never killed.
const DEFAULT_LABELS: u64 = 5;

/// The `instance` label of node `id` listening on `control`: its name (`node-<id>`), as a
/// relabelled target or a Kubernetes pod has, not the address the agent probes; the control
/// address for [`DEFAULT_LABELS`].
fn instance_label(id: u64, control: &str) -> String {
    if id == DEFAULT_LABELS {
        control.to_owned()
    } else {
        format!("node-{id}")
    }
}

/// The five nodes, their configuration files, and Prometheus's file-based target list.
struct Mesh {
    dir: PathBuf,
    configs: BTreeMap<u64, PathBuf>,
    daemons: BTreeMap<u64, Daemon>,
}

impl Mesh {
    fn start(dir: &Path) -> Self {
        let (ca, files) = meshkit_node::certs::write_dev_certs(dir, 5).expect("certificates");
        std::fs::create_dir_all(dir.join("targets")).expect("create targets/");
        let mut mesh = Self {
            dir: dir.to_owned(),
            configs: BTreeMap::new(),
            daemons: BTreeMap::new(),
        };
        for f in &files {
            let id = f.id.get();
            let seeds: Vec<(u64, SocketAddr)> = mesh
                .daemons
                .get(&1)
                .map(|d| vec![(1, d.gossip)])
                .unwrap_or_default();
            let path = write_config_with(dir, id, &seeds, &f.cert, &f.key, &ca, &leadership(id));
            mesh.configs.insert(id, path.clone());
            mesh.launch(id);
            // Pin the ports the OS chose, so a restarted node comes back where the agent
            // probes it and under the same `target`.
            mesh.daemons[&id].pin_ports(&path);
        }
        mesh
    }

    /// The running node whose `instance` label is `instance`.
    fn id_of(&self, instance: &str) -> Option<u64> {
        self.daemons
            .iter()
            .find_map(|(id, d)| (instance_label(*id, &d.control) == instance).then_some(*id))
    }

    /// The `instance` label of running node `id`.
    fn instance(&self, id: u64) -> String {
        instance_label(id, &self.daemons[&id].control)
    }

    /// Starts node `id` and points its target file at its control address, with the labels
    /// of [`instance_label`] (and, but for [`DEFAULT_LABELS`], `target`: the control address).
    fn launch(&mut self, id: u64) {
        let daemon = start(&self.configs[&id]);
        let mut labels = serde_json::json!({"cluster": CLUSTER, "namespace": NAMESPACE});
        if id != DEFAULT_LABELS {
            labels["instance"] = instance_label(id, &daemon.control).into();
            labels["target"] = daemon.control.clone().into();
        }
        let targets = serde_json::json!([{"targets": [daemon.control], "labels": labels}]);
        let file = self.dir.join(format!("targets/node-{id}.json"));
        let scratch = file.with_extension("tmp");
        std::fs::write(&scratch, targets.to_string()).expect("write a target file");
        std::fs::rename(&scratch, &file).expect("replace the target file");
        self.daemons.insert(id, daemon);
    }

    /// Restarts node `id` (killed before) with its configuration, joining through a node
    /// still running (the gossip ports of the others did not change).
    fn restart(&mut self, id: u64) {
        let (other, seed) = self
            .daemons
            .iter()
            .next()
            .map(|(other, d)| (*other, d.gossip))
            .expect("a running node");
        let path = &self.configs[&id];
        let text = std::fs::read_to_string(path).expect("read the config");
        let text: String = text
            .lines()
            .map(|l| {
                if l.starts_with("seeds = ") {
                    format!("seeds = [\"{other}@{seed}\"]\n")
                } else {
                    format!("{l}\n")
                }
            })
            .collect();
        std::fs::write(path, text).expect("write the config");
        self.launch(id);
    }

    /// Prometheus's configuration: one TLS job per node (each checks its node's certificate
    /// name) reading its file-based target list and relabelled to `job="meshkit"`, and the
    /// textfile collector of `meshctl`'s client families, labelled as node-4's host, and the
    /// probe agent listening on `agent` (job `meshkit-probe`, no `cluster` target label: its
    /// series carry the probed group's).
    fn prometheus_config(
        &self,
        alertmanager: SocketAddr,
        server: SocketAddr,
        agent: SocketAddr,
    ) -> String {
        let mut config = format!(
            "global:\n  scrape_interval: {s}s\n  scrape_timeout: 900ms\n  \
             evaluation_interval: {e}s\nrule_files:\n  - {rules}\nalerting:\n  alertmanagers:\n    \
             - static_configs:\n        - targets: ['{alertmanager}']\nscrape_configs:\n  \
             - job_name: meshctl-textfile\n    metrics_path: /textfile\n    static_configs:\n      \
             - targets: ['{server}']\n        labels: {{cluster: {CLUSTER}, namespace: {NAMESPACE}, \
             instance: '{node4}'}}\n  \
             - job_name: meshkit-probe\n    static_configs:\n      - targets: ['{agent}']\n",
            node4 = self.instance(4),
            s = SCRAPE.as_secs(),
            e = EVALUATION.as_secs(),
            rules = pack().join("rules/meshkit.rules.yml").display(),
        );
        for id in self.configs.keys() {
            config.push_str(&format!(
                "  - job_name: meshkit-node-{id}\n    scheme: https\n    tls_config:\n      \
                 ca_file: {ca}\n      cert_file: {cert}\n      key_file: {key}\n      \
                 server_name: node-{id}\n    file_sd_configs:\n      - files: ['{targets}']\n        \
                 refresh_interval: 1s\n    relabel_configs:\n      - target_label: job\n        \
                 replacement: meshkit\n",
                ca = self.dir.join("ca.pem").display(),
                cert = self.dir.join("node-1.pem").display(),
                key = self.dir.join("node-1.key").display(),
                targets = self.dir.join(format!("targets/node-{id}.json")).display(),
            ));
        }
        config
    }
}

/// Runs `meshctl transport stats --prometheus` against node 4 every two seconds (two requests
/// each time) and publishes its output at the test server's `/textfile`, until dropped.
struct ClientStats {
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl ClientStats {
    fn start(dir: &Path, node: &Daemon, server: &Server) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let (dir, addr, textfile) = (
            dir.to_owned(),
            node.control.clone(),
            server.textfile.clone(),
        );
        let flag = stop.clone();
        let thread = std::thread::spawn(move || {
            while !flag.load(Ordering::Relaxed) {
                let out = dir.join("meshctl.prom");
                let mut child = common::meshctl(
                    &dir,
                    &addr,
                    MeshctlAs::Node("node-1"),
                    ["transport", "stats", "--prometheus", "--requests", "2"],
                )
                .stdin(Stdio::null())
                .stdout(std::fs::File::create(&out).expect("create meshctl.prom"))
                .stderr(Stdio::null())
                .spawn()
                .expect("meshctl starts");
                let deadline = Instant::now() + Duration::from_secs(20);
                let status = loop {
                    if let Ok(Some(status)) = child.try_wait() {
                        break Some(status);
                    }
                    if Instant::now() >= deadline {
                        let _ = child.kill();
                        let _ = child.wait();
                        break None;
                    }
                    std::thread::sleep(Duration::from_millis(50));
                };
                if status.is_some_and(|s| s.success()) {
                    *textfile.lock().unwrap() = std::fs::read_to_string(&out).unwrap_or_default();
                }
                for _ in 0..20 {
                    if flag.load(Ordering::Relaxed) {
                        return;
                    }
                    std::thread::sleep(Duration::from_millis(100));
                }
            }
        });
        Self {
            stop,
            thread: Some(thread),
        }
    }
}

impl Drop for ClientStats {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// `meshkit-probe` probing the five nodes (one group, `api` peers and `transport` over HTTP/3
/// and HTTP/2) with an observe-only token and sending its alerts to `alertmanager`; killed
/// when dropped.
struct ProbeAgent {
    _process: Killed,
    listen: SocketAddr,
    log: PathBuf,
}

impl ProbeAgent {
    fn start(dir: &Path, mesh: &Mesh, listen: SocketAddr, alertmanager: SocketAddr) -> Self {
        let token = common::token(
            dir,
            "e2e-probe",
            meshkit_node::permission::Permission::Observe,
        );
        std::fs::write(dir.join("probe.token"), token).expect("write the agent's token");
        let targets: Vec<String> = mesh
            .daemons
            .values()
            .map(|d| format!("\"{}\"", d.control))
            .collect();
        let config = format!(
            "[agent]\nname = \"e2e\"\nlisten = \"{listen}\"\n\n\
             [credentials]\nca = \"ca.pem\"\ntoken_file = \"probe.token\"\n\n\
             [defaults]\ninterval = \"{AGENT_INTERVAL_S}s\"\ntimeout = \"{AGENT_TIMEOUT_S}s\"\n\
             failure_threshold = {AGENT_FAILURES}\nsuccess_threshold = 1\n\
             latency_threshold = \"{AGENT_LATENCY_MS}ms\"\nalert_on_latency = true\n\n\
             [[group]]\nname = \"mesh\"\ncluster = \"{CLUSTER}\"\nnamespace = \"{NAMESPACE}\"\n\
             targets = [{}]\n\
             probes = [\"api\", \"transport\"]\n[group.api]\nendpoints = [\"peers\"]\nmin_alive = 1\n\n\
             [history]\npath = \"probe-history.sqlite\"\n\n\
             [alerting]\nalertmanager = [\"http://{alertmanager}\"]\nresend = \"1s\"\ntimeout = \"2s\"\n",
            targets.join(", ")
        );
        let path = dir.join("probes.toml");
        std::fs::write(&path, config).expect("write probes.toml");
        let log = dir.join("probe-agent.log");
        Self {
            _process: spawn_probe_agent(&path, &log),
            listen,
            log,
        }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

/// Items the run enqueues (and nobody works on).
const ENQUEUED: usize = 20;

/// Enqueues `payload` on `orders` through the running daemons in turn until one acknowledges
/// (a 503 or 504 is a shard moving after the drain: ask again), within [`SETTLE_LIMIT`].
async fn enqueue(producer: &Client, mesh: &Mesh, payload: &str) {
    let request = EnqueueRequest {
        queue: "orders".to_owned(),
        shard: None,
        payload: payload.to_owned(),
    };
    let started = Instant::now();
    let mut last = String::new();
    while started.elapsed() < SETTLE_LIMIT {
        for d in mesh.daemons.values() {
            match producer
                .post_json(&d.control, "/control/queue/enqueue", &request)
                .await
            {
                Ok(r) if r.status == 200 => return,
                Ok(r) => {
                    assert!(
                        r.status == 503 || r.status == 504,
                        "enqueue refused: {} {}",
                        r.status,
                        r.body
                    );
                    last = format!("{} {}", r.status, r.body);
                }
                Err(e) => last = e.to_string(),
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("{payload} not acknowledged within {SETTLE_LIMIT:?}: {last}");
}

/// Polls `check` every [`POLL`] until it gives a value or `limit` passes; panics with `what`
/// and `why()` (the state that explains it) past the limit.
async fn wait_for<T, F, Fut>(
    limit: Duration,
    what: &str,
    mut check: F,
    why: impl Fn() -> String,
) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = Instant::now() + limit;
    for _ in 0..=(limit.as_millis() / POLL.as_millis()) {
        if let Some(v) = check().await {
            return v;
        }
        if Instant::now() >= deadline {
            break;
        }
        tokio::time::sleep(POLL).await;
    }
    panic!("{what}: not within {limit:?}\n{}", why())
}

/// The value of the one sample of an instant query's result, as an integer.
fn value(result: &[Value]) -> Option<u64> {
    let [sample] = result else { return None };
    sample["value"][1]
        .as_str()?
        .parse::<f64>()
        .ok()
        .map(|v| v as u64)
}

fn label(alert: &Value, name: &str) -> String {
    alert["labels"][name]
        .as_str()
        .unwrap_or_default()
        .to_owned()
}

/// How many of the agent's `MeshKitProbeFailing` alerts Alertmanager holds, when there is one
/// at least for each of `targets`, all against them, and every one suppressed by an inhibition
/// (None otherwise); Alertmanager's answer is kept in `last` for the failure message.
async fn agent_alerts_inhibited(
    alertmanager: &Alertmanager,
    targets: &BTreeSet<String>,
    last: &Mutex<String>,
) -> Option<usize> {
    let alerts = alertmanager.am.alerts().await?;
    *last.lock().unwrap() = format!("{alerts:#?}");
    let agent: Vec<&Value> = alerts
        .iter()
        .filter(|a| label(a, "alertname") == "MeshKitProbeFailing")
        .collect();
    let all_inhibited = agent.iter().all(|a| {
        targets.contains(&label(a, "target"))
            && a["status"]["state"] == "suppressed"
            && a["status"]["inhibitedBy"]
                .as_array()
                .is_some_and(|by| !by.is_empty())
    });
    (all_inhibited && agent.len() >= targets.len()).then_some(agent.len())
}

/// Runs `dashboards/tools/dashboards.py` with `args` against `prometheus`: whether it passed,
/// and what it printed.
fn dashboards_tool(args: &[String]) -> (bool, String) {
    let mut command = Command::new("python3");
    command
        .arg(pack().join("tools/dashboards.py"))
        .args(args)
        .stdin(Stdio::null());
    common::run_bounded(command, Duration::from_secs(120))
}

/// Each target's job, instance, health and last scrape error, one a line.
async fn target_health(prometheus: &Prometheus) -> String {
    let body = http_get(prometheus.web, "/api/v1/targets")
        .await
        .unwrap_or_default();
    let value: Value = serde_json::from_str(&body).unwrap_or_default();
    value["data"]["activeTargets"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|t| {
            format!(
                "{} {} {} {} last scrape {} ({} s)",
                label(t, "job"),
                t["labels"]["instance"],
                t["health"],
                t["lastError"],
                t["lastScrape"],
                t["lastScrapeDuration"]
            )
        })
        .collect::<Vec<_>>()
        .join("\n")
}

fn unix(t: SystemTime) -> f64 {
    t.duration_since(SystemTime::UNIX_EPOCH)
        .expect("after 1970")
        .as_secs_f64()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs Debian's prometheus, prometheus-alertmanager and python3; scripts/test.sh runs it"]
async fn alerts_reach_alertmanager_and_every_panel_has_data() {
    common::tool("python3", "python3");
    let node_down_for = alert_for("MeshKitNodeDown");
    let no_leader_for = alert_for("MeshKitNoRaftLeader");
    let tmp = TempDir::new("observability-e2e");
    let dir = tmp.path();
    let began = SystemTime::now();

    let server = Server::default();
    let hooks = server.start().await;
    let mut mesh = Mesh::start(dir);
    let alertmanager = Alertmanager::start(dir, hooks);
    let agent_listen = SocketAddr::from(([127, 0, 0, 1], free_port()));
    let prometheus = Prometheus::start(
        dir,
        &mesh.prometheus_config(alertmanager.am.web, hooks, agent_listen),
    );
    let _client_stats = ClientStats::start(dir, &mesh.daemons[&4], &server);
    let agent = ProbeAgent::start(dir, &mesh, agent_listen, alertmanager.am.web);
    let prometheus_log = || std::fs::read_to_string(dir.join("prometheus.log")).unwrap_or_default();

    // 1. Prometheus scrapes all five (the client families, the probe agent with every probe
    // passing), and sees one Raft leader.
    let targets = Mutex::new(String::new());
    let leader: u64 = wait_for(
        SETTLE_LIMIT,
        "five nodes up with one Raft leader, and the meshctl families, in Prometheus",
        || async {
            let started = Instant::now();
            let up = prometheus.query(r#"sum(up{job="meshkit"}) == 5"#).await;
            let agent_up = prometheus
                .query(r#"min(probe_success{job="meshkit-probe"}) == 1 and count(probe_success{job="meshkit-probe"}) == 15"#)
                .await;
            let client = prometheus
                .query("count(mesh_transport_client_requests_total)")
                .await;
            let leaders = prometheus
                .query("mesh_leadership_raft_leader == 1")
                .await
                .unwrap_or_default();
            let answered = started.elapsed();
            if up.as_ref().is_none_or(Vec::is_empty)
                || agent_up.as_ref().is_none_or(Vec::is_empty)
                || client.as_ref().is_none_or(Vec::is_empty)
                || leaders.len() != 1
            {
                *targets.lock().unwrap() = format!(
                    "{}\ntextfile: {:?}\nup: {up:?}\nagent: {agent_up:?}\nleaders: {leaders:?}\n\
                     queries took {answered:?}\nagent's /metrics:\n{}",
                    target_health(&prometheus).await,
                    http_get(hooks, "/textfile").await.map(|t| t.len()),
                    http_get(agent.listen, "/metrics").await.unwrap_or_default()
                );
                return None;
            }
            mesh.id_of(leaders[0]["metric"]["instance"].as_str()?)
        },
        || {
            format!(
                "{}\n{}\nagent's log:\n{}",
                targets.lock().unwrap(),
                prometheus_log(),
                agent.log()
            )
        },
    )
    .await;
    let am_log = || alertmanager.am.log();
    wait_for(
        SETTLE_LIMIT,
        "Alertmanager answers",
        || alertmanager.am.alerts(),
        am_log,
    )
    .await;

    // A graceful handover first, so that the vacancy panels have one to show: the holder of
    // global-control is drained (`meshctl drain`), and another node takes the lease.
    let holder_query = r#"max(mesh_leadership_holder{scope="global-control"})"#;
    let holder = wait_for(
        SETTLE_LIMIT,
        "a holder of global-control in Prometheus",
        || async { value(&prometheus.query(holder_query).await?) },
        prometheus_log,
    )
    .await;
    let operator = dir.join("operator.token");
    let token = common::token(
        dir,
        "e2e-operator",
        meshkit_node::permission::Permission::Operate,
    );
    std::fs::write(&operator, &token).expect("write the operator token");
    let drained = mesh.daemons[&holder].control.clone();
    let drain = common::meshctl(dir, &drained, MeshctlAs::TokenFile(&operator), ["drain"]);
    let (ok, printed) = common::run_bounded(drain, Duration::from_secs(30));
    assert!(ok, "meshctl drain node-{holder}: {printed}");
    wait_for(
        SETTLE_LIMIT,
        "another holder of global-control after the drain",
        || async {
            let now = value(&prometheus.query(holder_query).await?)?;
            (now != holder).then_some(())
        },
        prometheus_log,
    )
    .await;

    // Work for the queues dashboard: the replication lag is observed per enqueue.
    let producer = ClientConfig::new(&dir.join("ca.pem"))
        .and_then(|c| c.with_token(&token))
        .expect("the producer's client")
        .with_protocols(Protocols::TcpOnly)
        .with_request_timeout(Duration::from_secs(5));
    let producer = Client::new(&producer).expect("build the producer's client");
    for i in 0..ENQUEUED {
        enqueue(&producer, &mesh, &format!("e2e-{i}")).await;
    }

    // Work for the chaos dashboard: a short latency experiment on every link of one node,
    // started through `meshctl chaos start --yes` and reverted by the nodes at its deadline
    // (the recovery after it is observed then).
    let admin = dir.join("admin.token");
    let admin_token = common::token(
        dir,
        "e2e-admin",
        meshkit_node::permission::Permission::Admin,
    );
    std::fs::write(&admin, &admin_token).expect("write the admin token");
    let plan = dir.join("latency.json");
    std::fs::write(
        &plan,
        r#"{"duration": "3s", "selector": {"count": 1}, "fault": {"kind": "latency", "delay": "20ms"}}"#,
    )
    .expect("write the plan");
    let start = common::meshctl(
        dir,
        &drained,
        MeshctlAs::TokenFile(&admin),
        ["chaos", "start"],
    );
    let mut start = start;
    start.arg(&plan).arg("--yes");
    let (ok, printed) = common::run_bounded(start, Duration::from_secs(30));
    assert!(ok, "meshctl chaos start: {printed}");
    wait_for(
        SETTLE_LIMIT,
        "the latency experiment reverted at its deadline",
        || async {
            let reverts = value(
                &prometheus
                    .query(r#"sum(mesh_chaos_reverts_total{reason="deadline"})"#)
                    .await?,
            )?;
            (reverts >= 1).then_some(())
        },
        prometheus_log,
    )
    .await;

    // 2. A silence on the no-leader alert of this cluster, before any fault.
    let silence = alertmanager.amtool(&[
        "silence",
        "add",
        "alertname=MeshKitNoRaftLeader",
        &format!("cluster={CLUSTER}"),
        "--comment=observability e2e",
        "--duration=30m",
    ]);
    let silence = silence.trim().to_owned();
    assert_eq!(silence.len(), 36, "amtool silence add printed {silence:?}");

    // 3. kill -9 of the Raft leader and of a second voter: no quorum is left.
    let second = (1..=3).find(|v| *v != leader).expect("three voters");
    let survivor = (1..=3)
        .find(|v| *v != leader && *v != second)
        .expect("three voters");
    // The killed nodes by `instance` (their names, on the node alerts) and by `target` (the
    // control addresses the agent probes, on its alerts and, from the scrape configuration, on
    // MeshKitNodeDown: what the inhibition compares).
    let down: BTreeSet<String> = [leader, second].map(|id| mesh.instance(id)).into();
    let down_targets: BTreeSet<String> = [leader, second]
        .map(|id| mesh.daemons[&id].control.clone())
        .into();
    let alone = mesh.instance(survivor);
    let killed_at = Instant::now();
    mesh.daemons.remove(&leader).expect("running").kill();
    mesh.daemons.remove(&second).expect("running").kill();

    // 4. Each alert reaches Alertmanager within its `for`, a scrape and two evaluations.
    let mut expected: Vec<(String, String, Duration)> = down
        .iter()
        .map(|i| ("MeshKitNodeDown".to_owned(), i.clone(), node_down_for))
        .collect();
    expected.push((
        "MeshKitNoRaftLeader".to_owned(),
        alone.clone(),
        no_leader_for,
    ));
    // The agent's alerts name the node by `target` (no `instance`): the first of the node's
    // probes to turn Failing counts.
    let agent_bound =
        Duration::from_secs(AGENT_INTERVAL_S * AGENT_FAILURES + AGENT_TIMEOUT_S) + AGENT_SLACK;
    let longest = node_down_for.max(no_leader_for);
    let mut arrived: BTreeMap<(String, String), Duration> = BTreeMap::new();
    let deadline = killed_at + longest + SETTLE_LIMIT;
    let held = loop {
        let alerts = alertmanager.am.alerts().await.unwrap_or_default();
        for a in &alerts {
            let node = match label(a, "instance") {
                i if i.is_empty() => label(a, "target"),
                i => i,
            };
            arrived
                .entry((label(a, "alertname"), node))
                .or_insert_with(|| killed_at.elapsed());
        }
        if expected
            .iter()
            .all(|(n, i, _)| arrived.contains_key(&(n.clone(), i.clone())))
            && down_targets
                .iter()
                .all(|t| arrived.contains_key(&("MeshKitProbeFailing".to_owned(), t.clone())))
        {
            break alerts;
        }
        assert!(
            Instant::now() < deadline,
            "the node-down and no-leader alerts did not all reach Alertmanager: {arrived:?}\n{}\n{}",
            prometheus_log(),
            am_log()
        );
        tokio::time::sleep(POLL).await;
    };
    let mut report = vec![format!(
        "alert latency, kill -9 to Alertmanager (scrape {SCRAPE:?}, evaluation {EVALUATION:?}):"
    )];
    for (name, instance, for_) in &expected {
        let latency = arrived[&(name.clone(), instance.clone())];
        let bound = *for_ + SCRAPE + 2 * EVALUATION;
        report.push(format!(
            "  {name}{{instance={instance}}}: {latency:.1?} (for {for_:?} + scrape + 2 evaluations = {bound:?})"
        ));
        assert!(
            latency <= bound + SLACK,
            "{name} of {instance} reached Alertmanager {latency:?} after the kill, past \
             {bound:?} + {SLACK:?}"
        );
        assert!(
            latency + SCRAPE >= *for_,
            "{name} of {instance} fired {latency:?} after the kill, before its `for` ({for_:?})"
        );
    }
    for target in &down_targets {
        let latency = arrived[&("MeshKitProbeFailing".to_owned(), target.clone())];
        report.push(format!(
            "  MeshKitProbeFailing{{target={target}}} (pushed by the agent): {latency:.1?} \
             (interval x failure_threshold + timeout = {:?})",
            agent_bound - AGENT_SLACK
        ));
        assert!(
            latency <= agent_bound,
            "the agent's MeshKitProbeFailing for {target} reached Alertmanager {latency:?} after \
             the kill, past {agent_bound:?}\nagent's log:\n{}",
            agent.log()
        );
    }
    // Nothing else fired: the other alerts' `for` is longer than this run, or they stay quiet;
    // the agent's alerts are for the killed nodes only.
    let names: BTreeSet<String> = held.iter().map(|a| label(a, "alertname")).collect();
    assert_eq!(
        names,
        [
            "MeshKitNoRaftLeader",
            "MeshKitNodeDown",
            "MeshKitProbeFailing"
        ]
        .map(str::to_owned)
        .into(),
        "{held:#?}"
    );
    for a in held
        .iter()
        .filter(|a| label(a, "alertname") == "MeshKitProbeFailing")
    {
        assert!(down_targets.contains(&label(a, "target")), "{a:#}");
        assert_eq!(label(a, "cluster"), CLUSTER, "{a:#}");
        assert_eq!(label(a, "namespace"), NAMESPACE, "{a:#}");
    }
    // MeshKitNodeDown names the node as the agent does: `target` from the scrape
    // configuration, not a copy of `instance` (which differs here).
    for a in held
        .iter()
        .filter(|a| label(a, "alertname") == "MeshKitNodeDown")
    {
        assert!(down.contains(&label(a, "instance")), "{a:#}");
        assert!(down_targets.contains(&label(a, "target")), "{a:#}");
        assert_eq!(label(a, "namespace"), NAMESPACE, "{a:#}");
    }
    // Each node down inhibits the agent's alerts against it (Alertmanager's inhibitor learns
    // the source alerts on its own, a moment after they arrive: a bounded poll).
    let last_answer = Mutex::new(String::new());
    let inhibited = wait_for(
        SETTLE_LIMIT,
        "the agent's alerts for the killed nodes inhibited by MeshKitNodeDown",
        || agent_alerts_inhibited(&alertmanager, &down_targets, &last_answer),
        || format!("{}\n{}", last_answer.lock().unwrap(), am_log()),
    )
    .await;
    report.push(format!(
        "  {inhibited} MeshKitProbeFailing alerts of the agent inhibited by MeshKitNodeDown"
    ));
    for a in &held {
        let silenced = a["status"]["silencedBy"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        if label(a, "alertname") == "MeshKitNoRaftLeader" {
            assert_eq!(silenced, vec![Value::from(silence.clone())], "{a:#}");
            assert_eq!(a["status"]["state"], "suppressed", "{a:#}");
        } else {
            assert!(silenced.is_empty(), "{a:#}");
        }
    }

    // 5. The maintenance window holds the node-down notification back: Alertmanager flushed
    // its group and logged that the route is muted, and no receiver got it.
    wait_for(
        SETTLE_LIMIT,
        "Alertmanager muting the node-down notification",
        || async {
            let log = alertmanager.am.log();
            let lines = log_after(&log, "MeshKitNodeDown");
            let flushed = lines
                .iter()
                .position(|l| l.contains("msg=flushing") && l.contains("MeshKitNodeDown"))?;
            lines[flushed..]
                .iter()
                .any(|l| l.contains("route is within mute time"))
                .then_some(())
        },
        am_log,
    )
    .await;
    assert!(
        server.notifications().is_empty(),
        "notifications sent during the maintenance window: {:#?}",
        server.notifications()
    );

    // 6. The window moves to another day: the node-down notification goes to the pager and
    // the team chat, with both nodes; the no-leader one stays silenced.
    let reloaded = Instant::now();
    alertmanager.reload(&Alertmanager::another_day()).await;
    let node_down_seen = |receiver: &str| {
        let mut seen = BTreeSet::new();
        for n in server.notifications() {
            for (name, instance, status) in n.alerts() {
                if n.receiver == receiver && name == "MeshKitNodeDown" && status == "firing" {
                    seen.insert(instance);
                }
            }
        }
        seen
    };
    wait_for(
        SETTLE_LIMIT,
        "the node-down notification at the pager and the team chat",
        || async {
            (node_down_seen("pager") == down && node_down_seen("team-chat") == down).then_some(())
        },
        || format!("{:#?}\n{}", server.notifications(), am_log()),
    )
    .await;
    let notified = server.notifications();
    let first_page = notified
        .iter()
        .find(|n| n.receiver == "pager")
        .expect("a page");
    assert!(
        first_page.at >= reloaded,
        "paged before the reload: {notified:#?}"
    );
    report.push(format!(
        "  MeshKitNodeDown paged {:.1?} after the kill ({:.1?} after the window moved away)",
        first_page.at - killed_at,
        first_page.at - reloaded,
    ));

    // 7. Two flushes of the no-leader group after the reload went by without a notification
    // (the silence); expired, the silence lets it through.
    wait_for(
        SETTLE_LIMIT,
        "two flushes of the no-leader group after the reload",
        || async {
            let log = alertmanager.am.log();
            let lines = log_after(&log, "Completed loading of configuration file");
            (flushes(&lines, "MeshKitNoRaftLeader") >= 2).then_some(())
        },
        am_log,
    )
    .await;
    let no_leader_sent = |n: &Notification| {
        n.alerts()
            .iter()
            .any(|(name, _, status)| name == "MeshKitNoRaftLeader" && status == "firing")
    };
    assert!(
        !server.notifications().iter().any(no_leader_sent),
        "the silenced alert was sent: {:#?}",
        server.notifications()
    );
    let expired = Instant::now();
    alertmanager.amtool(&["silence", "expire", &silence]);
    let page = wait_for(
        SETTLE_LIMIT,
        "the no-leader notification after the silence expired",
        || async {
            server
                .notifications()
                .into_iter()
                .find(|n| n.receiver == "pager" && no_leader_sent(n))
        },
        || format!("{:#?}\n{}", server.notifications(), am_log()),
    )
    .await;
    assert!(page.at >= expired);
    report.push(format!(
        "  MeshKitNoRaftLeader paged {:.1?} after the silence expired",
        page.at - expired
    ));

    // The agent's alerts are still inhibited by the node-down alerts, the reload settled. (Not
    // "never notified": a configuration reload restarts Alertmanager's inhibitor, which learns
    // the firing source alerts again on its own goroutine, and a group flushed in between goes
    // out uninhibited; one of our runs paged the agent's alerts with the node-down page at the
    // window's reload.)
    wait_for(
        SETTLE_LIMIT,
        "the agent's alerts inhibited by MeshKitNodeDown after the reloads",
        || agent_alerts_inhibited(&alertmanager, &down_targets, &last_answer),
        || format!("{}\n{}", last_answer.lock().unwrap(), am_log()),
    )
    .await;

    // 8. The two nodes come back: both alerts resolve.
    let restarted = Instant::now();
    mesh.restart(leader);
    mesh.restart(second);
    let resolved = |name: &str, instance: &str| {
        server.notifications().into_iter().find(|n| {
            n.receiver == "pager"
                && n.at >= restarted
                && n.alerts()
                    .iter()
                    .any(|(a, i, s)| a == name && i == instance && s == "resolved")
        })
    };
    let mut resolved_after = Vec::new();
    for (name, instance, _) in &expected {
        let n = wait_for(
            SETTLE_LIMIT,
            &format!("{name} of {instance} resolved"),
            || async { resolved(name, instance) },
            || format!("{:#?}\n{}", server.notifications(), am_log()),
        )
        .await;
        resolved_after.push(format!(
            "{name}{{instance={instance}}} {:.1?}",
            n.at - restarted
        ));
    }
    report.push(format!(
        "  resolved after the restart: {}",
        resolved_after.join(", ")
    ));

    // 9. Every panel and rule of the pack returns data over the run (the synthetic check).
    let mut args: Vec<String> = [
        "check",
        "--prometheus",
        &prometheus.url(),
        "--start",
        &format!("{:.0}", unix(began)),
        "--step",
        "1s",
        "--scrape-interval",
        "1s",
        "--strict",
    ]
    .map(str::to_owned)
    .into();
    for (pattern, _) in ALLOWED_EMPTY {
        args.push(format!("--allow-empty={pattern}"));
    }
    // The leaderless and vacancy histograms observe the end of the failover a scrape or two
    // after the alerts resolved: a bounded retry.
    let deadline = Instant::now() + SETTLE_LIMIT;
    let printed = loop {
        let (passed, printed) = dashboards_tool(&args);
        if passed {
            break printed;
        }
        assert!(
            Instant::now() < deadline,
            "dashboards.py {}:\n{printed}",
            args.join(" ")
        );
        tokio::time::sleep(Duration::from_secs(2)).await;
    };
    report.push(printed.lines().last().unwrap_or_default().to_owned());

    // 10. The pictures, when asked for (scripts/render-dashboards.sh).
    if let Some(out) = std::env::var_os("MESHKIT_DASHBOARD_PICTURES") {
        let mut args = args[..9].to_vec();
        args[0] = "render".to_owned();
        args.extend(["--out".to_owned(), PathBuf::from(out).display().to_string()]);
        let (passed, printed) = dashboards_tool(&args);
        assert!(passed, "dashboards.py {}:\n{printed}", args.join(" "));
        report.push(printed);
    }
    println!("{}", report.join("\n"));
}
