//! `run SCENARIO --env compose`: the scenario's timeline applied to a running compose stack in
//! wall-clock time, the nodes polled as it goes, the expectations checked with the
//! simulator's keys, and the run's artifacts written.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use futures_util::StreamExt as _;
use futures_util::future::join_all;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use meshkit::diag::fault::FaultKind;
use meshkit_api::json::Change;
use meshkit_sim::{RunReport, Scenario, report};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use serde::Serialize;
use serde_json::{Value, json};
use thiserror::Error;
use tokio::time::Instant;

use crate::artifacts;
use crate::http::{Http, query_escape};
use crate::nodes::{NodeError, Nodes};
use crate::observe::{HOLDER_SCOPE, NodeAnswer, Observer, Takeover};
use crate::plan::{self, Action, Refusal, Step};
use crate::rotation;
use crate::stack::{Stack, StackError};
use crate::workers::{self, AutoscaleError, AutoscaleOptions};

/// How long the stack may take to show one view before the run starts.
const HEALTHY_WAIT: Duration = Duration::from_secs(90);
/// The "during" snapshot after a fault, and the "after" one after its revert.
const SNAPSHOT_DELAY: Duration = Duration::from_secs(3);
/// How long a rotated node may take to serve its new certificate at the end of the run.
const ROTATION_SETTLE: Duration = Duration::from_secs(15);
/// How often the steady-state check and Alertmanager are asked.
const SLOW_POLL: Duration = Duration::from_secs(5);
/// The Prometheus series the report's figures come from, written for the run window.
const SERIES: &[(&str, &str)] = &[
    ("up", "up{job=\"meshkit\"}"),
    ("members", "mesh_gossip_members"),
    ("raft_leader", "mesh_leadership_raft_leader"),
    (
        "raft_leader_changes",
        "mesh_leadership_raft_leader_changes_total",
    ),
    ("suspicions_raised", "mesh_gossip_suspicions_raised_total"),
    (
        "suspicions_confirmed",
        "mesh_gossip_suspicions_confirmed_total",
    ),
    ("chaos_active", "mesh_chaos_experiments_active"),
    ("chaos_dropped", "mesh_chaos_link_messages_total"),
    ("probe_success", "probe_success"),
    // The HTTP version each probe's last request went over (3, or 2 after a fallback), and the
    // expiry of the certificate each target served the agent.
    ("probe_http_version", "probe_http_version"),
    ("probe_cert_expiry", "probe_ssl_earliest_cert_expiry"),
    (
        "handshake_failures",
        "mesh_transport_handshake_failures_total",
    ),
    (
        "control_handshakes_failed",
        "mesh_transport_control_handshakes_failed_total",
    ),
    ("control_requests", "mesh_transport_control_requests_total"),
    (
        "cert_expiry",
        "mesh_transport_cert_expiry_timestamp_seconds",
    ),
    ("cert_reloads", "mesh_transport_cert_reloads_total"),
    // The autoscaler service's own families (an `[autoscale]` run; empty otherwise).
    ("autoscaler_workers", "meshkit_autoscaler_workers"),
    ("autoscaler_decisions", "meshkit_autoscaler_decisions_total"),
    (
        "autoscaler_backpressure",
        "meshkit_autoscaler_backpressure_active",
    ),
];
/// How long the autoscaler service may outlive the run's planned end (the bound it is started
/// with): the restore, the artifacts and its own stop fit well within.
const AUTOSCALER_MARGIN: Duration = Duration::from_secs(300);

/// The transport's counters over the run window (`{w}`: its length in seconds), for the
/// report's `transport`: what a downgrade, an expiry or a rotation did to the handshakes and
/// the protocols served, by node.
const TRANSPORT_INCREASES: &[(&str, &str)] = &[
    (
        "handshake_failures",
        "sum by (instance, listener, reason) \
         (increase(mesh_transport_handshake_failures_total[{w}s]))",
    ),
    (
        "control_handshakes_failed",
        "sum by (instance, transport) \
         (increase(mesh_transport_control_handshakes_failed_total[{w}s]))",
    ),
    (
        "control_requests",
        "sum by (instance, protocol) (increase(mesh_transport_control_requests_total[{w}s]))",
    ),
    (
        "cert_reloads",
        "sum by (instance, result) (increase(mesh_transport_cert_reloads_total[{w}s]))",
    ),
    // The probe agent's results at 0 among those Prometheus scraped (every 5 s).
    (
        "probe_samples_failed",
        "count_over_time(probe_success[{w}s]) - sum_over_time(probe_success[{w}s])",
    ),
];

/// How to run.
#[derive(Clone, Debug)]
pub struct ComposeOptions {
    /// Seed of the random draws (jitter, random selectors, partition sides).
    pub seed: u64,
    /// Override of `[run] duration`.
    pub duration: Option<Duration>,
    /// The artifacts folder.
    pub out: PathBuf,
    /// A PromQL query whose non-empty answer aborts the run.
    pub abort_if: Option<String>,
    /// Time between two polls of the nodes.
    pub poll: Duration,
    /// Draw a progress bar on stderr.
    pub progress: bool,
    /// The command line that repeats the run.
    pub replay: String,
}

/// Why a run could not be made. What had started was reverted.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum RunError {
    /// The scenario has a fault the stack cannot take.
    #[error(transparent)]
    Refused(#[from] Refusal),
    /// Docker or the stack.
    #[error(transparent)]
    Stack(#[from] StackError),
    /// The nodes' API.
    #[error(transparent)]
    Node(#[from] NodeError),
    /// The autoscaler of an `[autoscale]` scenario could not start.
    #[error("the autoscaler: {0}")]
    Autoscale(#[from] AutoscaleError),
    /// The stack is not in one healthy view.
    #[error(
        "the stack is not healthy ({0}); a previous run may have left it damaged: \
         `compose/down --project P` then `compose/up --project P`"
    )]
    Unhealthy(String),
    /// The artifacts folder.
    #[error("{path}: {source}")]
    Io {
        /// The path.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
}

/// One applied fault or revert, as the report lists it.
#[derive(Clone, Debug, Serialize)]
pub struct FaultRecord {
    /// Seconds since the start.
    pub t: f64,
    /// The `[[fault]]` entry (from 0); none for a revert or the `[network]` background.
    pub fault: Option<usize>,
    /// Its occurrence.
    pub occurrence: Option<u32>,
    /// `kill`, `start`, `pause`, `unpause`, a chaos kind, `heal`, `revert`.
    pub action: String,
    /// The nodes it acted on.
    pub nodes: Vec<u64>,
    /// The chaos experiment's id.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub experiment: Option<String>,
    /// When it ends by itself, seconds since the start.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub until: Option<f64>,
    /// Why it could not be applied (the run then fails).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// A finished run.
#[derive(Debug)]
pub struct Outcome {
    /// The figures and the expectations' verdicts, in the simulator's report.
    pub report: RunReport,
    /// `report.json`: the report's keys and the compose run's own.
    pub json: Value,
    /// The artifacts folder.
    pub out: PathBuf,
    /// Why the steady-state check stopped the run, if it did.
    pub aborted: Option<String>,
}

impl Outcome {
    /// Whether every evaluated expectation held, every fault applied and nothing aborted.
    pub fn passed(&self) -> bool {
        self.report.passed() && self.aborted.is_none()
    }
}

enum Event {
    Step(Step),
    Start(Vec<u64>),
    Unpause(Vec<u64>),
    PartitionEnd(String),
    Snapshot(String),
    /// One node's turn in a certificate rotation; `record` is the step's fault record.
    Rotate {
        node: u64,
        record: usize,
    },
    /// `[autoscale]`'s load burst.
    Burst,
    /// A membership surge's deadline: its joined spares leave gracefully.
    Leave(Vec<u64>),
}

/// One node's certificate rotation, as the report lists it.
#[derive(Clone, Debug, Serialize)]
struct RotationRecord {
    /// Seconds since the start.
    t: f64,
    /// The new certificate.
    #[serde(flatten)]
    rotated: rotation::Rotated,
    /// The serial the node served at the end (or why none was read).
    served_at_end: Option<String>,
}

/// What the burst of an `[autoscale]` scenario enqueued.
#[derive(Clone, Debug, Default, Serialize)]
pub struct BurstOutcome {
    /// When it began, seconds since the start.
    pub t: f64,
    /// Items asked for.
    pub items: u32,
    /// Items acknowledged (held by the owner and its replicas).
    pub enqueued: u32,
    /// How long the enqueues took, seconds.
    pub took_s: f64,
    /// The first refusal or error, if any (each item is tried on up to three nodes).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub first_error: Option<String>,
}

/// Enqueues `items` items on `queue`, 16 at a time, each through the nodes in turn (a refusal
/// or no answer moves it to the next node, three tries at most).
async fn burst(
    run_dir: PathBuf,
    addrs: Vec<String>,
    queue: String,
    items: u32,
    t: f64,
) -> BurstOutcome {
    const IN_FLIGHT: usize = 16;
    const TRIES: usize = 3;
    let started = Instant::now();
    let mut out = BurstOutcome {
        t,
        items,
        ..BurstOutcome::default()
    };
    let nodes = match Nodes::new(&run_dir) {
        Ok(n) => n,
        Err(e) => {
            out.first_error = Some(e.to_string());
            return out;
        }
    };
    if addrs.is_empty() {
        out.first_error = Some("no running node".to_owned());
        return out;
    }
    let results: Vec<Result<(), String>> = futures_util::stream::iter(0..items)
        .map(|i| {
            let (nodes, addrs, queue) = (&nodes, &addrs, &queue);
            async move {
                let mut last = String::new();
                for k in 0..TRIES {
                    let addr = &addrs[(i as usize + k) % addrs.len()];
                    match nodes.enqueue(addr, queue, format!("burst item {i}")).await {
                        Ok(()) => return Ok(()),
                        Err(e) => last = e.to_string(),
                    }
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
                Err(last)
            }
        })
        .buffer_unordered(IN_FLIGHT)
        .collect()
        .await;
    nodes.close().await;
    out.enqueued = u32::try_from(results.iter().filter(|r| r.is_ok()).count()).unwrap_or(0);
    out.first_error = results.into_iter().find_map(Result::err);
    out.took_s = secs(started.elapsed());
    out
}

struct Partition {
    id: String,
    nodes: Vec<u64>,
    /// Its deadline, seconds since the start: when every target reverts it by itself.
    ends: f64,
}

struct Run<'a> {
    stack: &'a mut Stack,
    /// Spares this run started (removed at its end).
    joined: Vec<u64>,
    nodes: Nodes,
    http: Http,
    observer: Observer,
    rng: ChaCha8Rng,
    t0: Instant,
    /// `t0` as Unix seconds, to place the nodes' feed timestamps on the run's time.
    t0_unix: f64,
    events: BTreeMap<(Duration, u64), Event>,
    seq: u64,
    partitions: Vec<Partition>,
    faults: Vec<FaultRecord>,
    failures: Vec<String>,
    snapshots: u32,
    out: PathBuf,
    bar: Option<ProgressBar>,
    rotations: Vec<RotationRecord>,
    /// `[autoscale]`: its queue and burst size, the burst's task once started.
    autoscale: Option<(String, u32)>,
    burst: Option<tokio::task::JoinHandle<BurstOutcome>>,
}

fn secs(d: Duration) -> f64 {
    (d.as_secs_f64() * 1000.0).round() / 1000.0
}

fn unix_s(t: SystemTime) -> f64 {
    t.duration_since(UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

impl Run<'_> {
    fn now(&self) -> Duration {
        self.t0.elapsed()
    }

    fn schedule(&mut self, at: Duration, event: Event) {
        self.seq += 1;
        self.events.insert((at, self.seq), event);
    }

    fn say(&self, what: &str) {
        match &self.bar {
            Some(bar) => bar.set_message(what.to_owned()),
            None => tracing::info!("{what}"),
        }
    }

    async fn poll(&mut self) -> Vec<NodeAnswer> {
        let running = self.observer.running();
        let asks = running.iter().map(|&id| {
            let addr = self.stack.nodes[&id].control.clone();
            let nodes = &self.nodes;
            async move {
                let (peers, leaders) = tokio::join!(nodes.peers(&addr), nodes.leaders(&addr));
                NodeAnswer {
                    node: id,
                    peers: peers.ok(),
                    leaders: leaders.ok(),
                }
            }
        });
        join_all(asks).await
    }

    async fn observe(&mut self) {
        let answers = self.poll().await;
        let t = secs(self.now());
        self.observer.record(t, &answers);
        self.date_takeovers().await;
    }

    /// A takeover the poll just saw, dated by the new holder's (leader's) own feed entry: the
    /// containers share the host's clock, so its Unix time maps onto the run's.
    async fn date_takeovers(&mut self) {
        for u in self.observer.undated() {
            let addr = self.stack.nodes[&u.node].control.clone();
            let at = match self.nodes.feed(&addr, u.after_seq).await {
                Ok(entries) => entries.iter().find_map(|e| {
                    let ours = match (&e.change, u.what) {
                        (Change::Acquired { scope, .. }, Takeover::Holder) => scope == HOLDER_SCOPE,
                        (Change::RaftLeader { leader, .. }, Takeover::RaftLeader) => {
                            *leader == Some(u.node)
                        }
                        _ => false,
                    };
                    let at = e.unix_ms as f64 / 1000.0 - self.t0_unix;
                    (ours && at >= u.killed_s).then_some(at)
                }),
                Err(e) => {
                    tracing::warn!("feed of node {}: {e}; the poll's time stays", u.node);
                    None
                }
            };
            self.observer.date(u.kill, u.what, at);
        }
    }

    /// Peers, leaders and shards of every running node and the containers' states, to
    /// `topology/NN-label.json`.
    async fn snapshot(&mut self, label: &str) -> Result<(), RunError> {
        let t = secs(self.now());
        let running = self.observer.running();
        let asks = running.iter().map(|&id| {
            let addr = self.stack.nodes[&id].control.clone();
            let nodes = &self.nodes;
            async move {
                let (p, l, s) = tokio::join!(
                    nodes.peers(&addr),
                    nodes.leaders(&addr),
                    nodes.shards(&addr)
                );
                let v = |r: Result<Value, NodeError>| {
                    r.unwrap_or_else(|e| json!({"error": e.to_string()}))
                };
                (
                    id.to_string(),
                    json!({
                        "peers": v(p.map(|p| serde_json::to_value(p).unwrap_or_default())),
                        "leaders": v(l.map(|l| serde_json::to_value(l).unwrap_or_default())),
                        "shards": v(s),
                    }),
                )
            }
        });
        let views: serde_json::Map<String, Value> = join_all(asks).await.into_iter().collect();
        let containers = self
            .stack
            .states()
            .await
            .map(|s| json!(s))
            .unwrap_or_else(|e| json!({"error": e.to_string()}));
        self.snapshots += 1;
        let name = format!("{:02}-{label}.json", self.snapshots);
        let body = json!({"t": t, "label": label, "containers": containers, "nodes": views});
        artifacts::write_json(&self.out.join("topology").join(name), &body)
    }

    fn record(&mut self, step: Option<&Step>, action: &str, nodes: Vec<u64>) -> usize {
        self.faults.push(FaultRecord {
            t: secs(self.now()),
            fault: step.and_then(|s| s.fault),
            occurrence: step.map(|s| s.occurrence),
            action: action.to_owned(),
            nodes,
            experiment: None,
            until: None,
            error: None,
        });
        self.faults.len() - 1
    }

    fn fail(&mut self, index: usize, error: String) {
        let r = &mut self.faults[index];
        let what = match r.fault {
            Some(f) => format!("[[fault]] #{} ({})", f + 1, r.action),
            None => r.action.clone(),
        };
        self.failures.push(format!(
            "fault not applied: {what} at {:.1} s: {error}",
            r.t
        ));
        r.error = Some(error);
    }

    async fn entry(&self) -> Option<String> {
        self.observer
            .running()
            .first()
            .map(|id| self.stack.nodes[id].control.clone())
    }

    async fn apply(&mut self, step: Step) -> Result<(), RunError> {
        let at = step.at;
        let label = format!("t{:05.1}-{}", at.as_secs_f64(), step.action.name());
        self.snapshot(&format!("{label}-before")).await?;
        self.say(&format!(
            "{:.1} s: {}",
            at.as_secs_f64(),
            step.action.name()
        ));
        let roles = self.observer.roles();
        let t = secs(self.now());
        match &step.action {
            Action::Kill {
                nodes,
                restart_after,
            } => {
                let mut candidates = self.observer.running();
                candidates.extend(self.observer.paused());
                candidates.sort_unstable();
                let ids = plan::resolve(nodes, &candidates, roles, &mut self.rng);
                let i = self.record(Some(&step), "kill", ids.clone());
                for &id in &ids {
                    if self.observer.paused().contains(&id)
                        && let Err(e) = self.stack.unpause(id).await
                    {
                        self.fail(i, e.to_string());
                        continue;
                    }
                    match self.stack.kill(id).await {
                        Ok(()) => self.observer.killed_at(id, t),
                        Err(e) => self.fail(i, e.to_string()),
                    }
                }
                if ids.is_empty() {
                    self.fail(i, format!("no node matched {nodes:?} among {candidates:?}"));
                }
                if let Some(after) = restart_after {
                    self.faults[i].until = Some(secs(Duration::from_secs_f64(t) + *after));
                    self.schedule(self.now() + *after, Event::Start(ids));
                }
            }
            Action::Start { nodes } => {
                let candidates = self.observer.killed();
                let ids = plan::resolve(nodes, &candidates, roles, &mut self.rng);
                self.start(Some(&step), ids, "start").await;
            }
            Action::Pause { nodes, duration } => {
                let candidates = self.observer.running();
                let ids = plan::resolve(nodes, &candidates, roles, &mut self.rng);
                let i = self.record(Some(&step), "pause", ids.clone());
                for &id in &ids {
                    match self.stack.pause(id).await {
                        Ok(()) => self.observer.paused_at(id, t),
                        Err(e) => self.fail(i, e.to_string()),
                    }
                }
                if ids.is_empty() {
                    self.fail(i, format!("no node matched {nodes:?} among {candidates:?}"));
                }
                self.faults[i].until = Some(secs(Duration::from_secs_f64(t) + *duration));
                self.schedule(self.now() + *duration, Event::Unpause(ids));
            }
            Action::Chaos { plan } => {
                let kind = plan.kind().name();
                let i = self.record(Some(&step), kind, Vec::new());
                let Some(addr) = self.entry().await else {
                    self.fail(i, "no running node to start the experiment on".to_owned());
                    return Ok(());
                };
                match self.nodes.start_plan(&addr, plan).await {
                    Ok((_, started)) => {
                        let radius = started.radius.nodes.clone();
                        let not_ok: Vec<String> = started
                            .targets
                            .iter()
                            .filter(|t| !t.ok)
                            .map(|t| {
                                format!("node {}: {}", t.node, t.error.clone().unwrap_or_default())
                            })
                            .collect();
                        let r = &mut self.faults[i];
                        r.nodes.clone_from(&radius);
                        r.experiment = Some(started.id.clone());
                        r.until = Some(secs(Duration::from_secs_f64(t) + plan.duration()));
                        if !not_ok.is_empty() {
                            self.fail(i, format!("targets refused: {}", not_ok.join("; ")));
                        }
                        if matches!(plan.kind(), FaultKind::Partition { .. }) {
                            // The targets revert at the deadline the node answered, on their
                            // own clocks: the heal is timed from it, not from when this loop
                            // gets to it.
                            let now_unix_ms = unix_s(SystemTime::now()) * 1000.0;
                            let left_s =
                                ((started.deadline_unix_ms as f64 - now_unix_ms) / 1000.0).max(0.0);
                            let ends = secs(self.now() + Duration::from_secs_f64(left_s));
                            self.observer.partitioned_at(&radius, t);
                            self.partitions.push(Partition {
                                id: started.id.clone(),
                                nodes: radius,
                                ends,
                            });
                            self.schedule(
                                Duration::from_secs_f64(ends),
                                Event::PartitionEnd(started.id),
                            );
                        }
                    }
                    Err(e) => self.fail(i, e.to_string()),
                }
            }
            Action::Join { nodes, leave_after } => {
                let spares = self.stack.spares.nodes.clone();
                let ids: Vec<u64> = match nodes {
                    // The lowest spares: the same ids for the same scenario.
                    plan::Pick::Count(n) => spares.iter().copied().take(*n as usize).collect(),
                    other => {
                        let named = plan::resolve(other, &spares, roles, &mut self.rng);
                        named.into_iter().filter(|id| spares.contains(id)).collect()
                    }
                };
                let i = self.record(Some(&step), "join", ids.clone());
                for &id in &ids {
                    match self.stack.join(id).await {
                        Ok(()) => {
                            self.joined.push(id);
                            self.observer.joined_at(id, t);
                        }
                        Err(e) => {
                            // Created but not started: still removed at the end.
                            if self.stack.nodes.contains_key(&id) {
                                self.joined.push(id);
                            }
                            self.fail(i, e.to_string());
                        }
                    }
                }
                if ids.is_empty() && !matches!(nodes, plan::Pick::Indices(_)) {
                    self.fail(i, format!("no spare left for {nodes:?}"));
                }
                // A surge plan reverts by itself: its joiners leave gracefully at its deadline
                // (the simulator's revert too).
                if let Some(after) = leave_after {
                    let started: Vec<u64> = ids
                        .iter()
                        .copied()
                        .filter(|id| self.joined.contains(id))
                        .collect();
                    if !started.is_empty() {
                        self.faults[i].until = Some(secs(Duration::from_secs_f64(t) + *after));
                        self.schedule(self.now() + *after, Event::Leave(started));
                    }
                }
            }
            Action::Rotate { nodes, over } => {
                let candidates = self.observer.running();
                let ids = plan::resolve(nodes, &candidates, roles, &mut self.rng);
                let i = self.record(Some(&step), "certificate-rotation", ids.clone());
                if ids.is_empty() {
                    self.fail(i, format!("no node matched {nodes:?} among {candidates:?}"));
                }
                self.faults[i].until = Some(secs(Duration::from_secs_f64(t) + *over));
                // The first at once, the last one spacing before the end of `over`.
                let turns = u32::try_from(ids.len()).unwrap_or(u32::MAX).max(1);
                let spacing = *over / turns;
                let now = self.now();
                for (k, node) in (0u32..).zip(ids) {
                    self.schedule(now + spacing * k, Event::Rotate { node, record: i });
                }
            }
            Action::Leave { nodes } => {
                let candidates = self.observer.running();
                let ids = plan::resolve(nodes, &candidates, roles, &mut self.rng);
                let i = self.record(Some(&step), "leave", ids.clone());
                for &id in &ids {
                    self.observer.left_at(id, t);
                    if let Err(e) = self.stack.stop(id).await {
                        self.fail(i, e.to_string());
                    }
                }
                if ids.is_empty() {
                    self.fail(i, format!("no node matched {nodes:?} among {candidates:?}"));
                }
            }
            Action::Heal => {
                let active = std::mem::take(&mut self.partitions);
                let ids: Vec<u64> = active.iter().flat_map(|p| p.nodes.clone()).collect();
                let i = self.record(Some(&step), "heal", ids);
                let Some(addr) = self.entry().await else {
                    self.fail(i, "no running node to abort the partitions on".to_owned());
                    return Ok(());
                };
                for p in active {
                    if let Err(e) = self.nodes.abort(&addr, &p.id).await {
                        self.fail(i, e.to_string());
                    }
                    self.observer.healed_at(&p.nodes, t);
                }
                self.schedule(
                    self.now() + SNAPSHOT_DELAY,
                    Event::Snapshot(format!("{label}-after")),
                );
                return Ok(());
            }
        }
        self.schedule(
            self.now() + SNAPSHOT_DELAY,
            Event::Snapshot(format!("{label}-during")),
        );
        Ok(())
    }

    async fn start(&mut self, step: Option<&Step>, ids: Vec<u64>, action: &str) {
        let t = secs(self.now());
        let i = self.record(step, action, ids.clone());
        for &id in &ids {
            match self.stack.start(id).await {
                Ok(()) => self.observer.started_at(id, t),
                Err(e) => self.fail(i, e.to_string()),
            }
        }
    }

    async fn unpause(&mut self, ids: Vec<u64>, action: &str) {
        let t = secs(self.now());
        let i = self.record(None, action, ids.clone());
        for &id in &ids {
            match self.stack.unpause(id).await {
                Ok(()) => self.observer.unpaused_at(id, t),
                Err(e) => self.fail(i, e.to_string()),
            }
        }
    }

    async fn handle(&mut self, event: Event) -> Result<(), RunError> {
        let label = format!("t{:05.1}", self.now().as_secs_f64());
        match event {
            Event::Step(step) => return self.apply(step).await,
            Event::Start(ids) => {
                self.say(&format!("{label}: start {ids:?}"));
                self.start(None, ids, "start").await;
            }
            Event::Unpause(ids) => {
                self.say(&format!("{label}: unpause {ids:?}"));
                self.unpause(ids, "unpause").await;
            }
            Event::Leave(ids) => {
                self.say(&format!("{label}: surge deadline, leave {ids:?}"));
                let t = secs(self.now());
                let i = self.record(None, "surge-leave", ids.clone());
                for id in ids {
                    self.observer.left_at(id, t);
                    if let Err(e) = self.stack.stop(id).await {
                        self.fail(i, e.to_string());
                    }
                }
            }
            Event::PartitionEnd(id) => {
                let Some(pos) = self.partitions.iter().position(|p| p.id == id) else {
                    // Healed before its deadline.
                    return Ok(());
                };
                let p = self.partitions.remove(pos);
                let i = self.record(None, "partition-deadline", p.nodes.clone());
                self.faults[i].t = p.ends;
                self.observer.healed_at(&p.nodes, p.ends);
            }
            Event::Snapshot(label) => return self.snapshot(&label).await,
            Event::Rotate { node, record } => {
                self.say(&format!("{label}: certificate-rotation of node {node}"));
                match rotation::rotate(&self.stack.run_dir, node) {
                    Ok(rotated) => self.rotations.push(RotationRecord {
                        t: secs(self.now()),
                        rotated,
                        served_at_end: None,
                    }),
                    Err(e) => self.fail(record, format!("node {node}: {e}")),
                }
                return Ok(());
            }
            Event::Burst => {
                if let Some((queue, items)) = self.autoscale.clone() {
                    self.say(&format!("{label}: burst of {items} items on {queue}"));
                    let addrs: Vec<String> = self
                        .observer
                        .running()
                        .iter()
                        .map(|id| self.stack.nodes[id].control.clone())
                        .collect();
                    let t = secs(self.now());
                    self.record(None, "burst", Vec::new());
                    self.burst = Some(tokio::spawn(burst(
                        self.stack.run_dir.clone(),
                        addrs,
                        queue,
                        items,
                        t,
                    )));
                }
                return Ok(());
            }
        }
        self.schedule(
            self.now() + SNAPSHOT_DELAY,
            Event::Snapshot(format!("{label}-revert-after")),
        );
        Ok(())
    }

    /// Leaves the stack as it was found: experiments aborted, frozen nodes thawed, killed
    /// nodes started.
    async fn restore(&mut self) {
        if let Some(addr) = self.entry().await {
            for p in std::mem::take(&mut self.partitions) {
                let _ = self.nodes.abort(&addr, &p.id).await;
            }
            for f in &self.faults {
                if let (Some(id), Some(until)) = (&f.experiment, f.until)
                    && until > secs(self.now())
                {
                    let _ = self.nodes.abort(&addr, id).await;
                }
            }
        }
        let paused = self.observer.paused();
        if !paused.is_empty() {
            self.unpause(paused, "restore-unpause").await;
        }
        let killed = self.observer.killed();
        if !killed.is_empty() {
            self.start(None, killed, "restore-start").await;
        }
        // The stack's own nodes that left come back (a rejoin); joined spares go away, their
        // logs kept first.
        let left: Vec<u64> = self
            .observer
            .left()
            .into_iter()
            .filter(|id| !self.joined.contains(id))
            .collect();
        if !left.is_empty() {
            self.start(None, left, "restore-start").await;
        }
        for id in std::mem::take(&mut self.joined) {
            let name = self.stack.nodes[&id].name.clone();
            match self.stack.logs(&name).await {
                Ok(bytes) => {
                    let path = self.out.join("logs").join(format!("{name}.log"));
                    if let Err(e) = artifacts::write_bytes(&path, &bytes) {
                        tracing::warn!("logs of {name}: {e}");
                    }
                }
                Err(e) => tracing::warn!("logs of {name}: {e}"),
            }
            let i = self.record(None, "restore-remove", vec![id]);
            match self.stack.remove_joined(id).await {
                Ok(()) => self.observer.removed(id),
                Err(e) => self.fail(i, e.to_string()),
            }
        }
    }

    /// After a rotation: whether every rotated node serves its new certificate, read from a
    /// TLS handshake with its control listener (asked again each second for up to
    /// [`ROTATION_SETTLE`]: the node's reload polls every 2 s and acts on a change that stayed
    /// the same for one more poll). A node that does not is an expectation failed.
    async fn check_rotations(&mut self) {
        let ca = self.stack.run_dir.join("certs").join("ca.pem");
        for k in 0..self.rotations.len() {
            let (node, want) = (
                self.rotations[k].rotated.node,
                self.rotations[k].rotated.serial.clone(),
            );
            let Some(addr) = self.stack.nodes.get(&node).map(|n| n.control.clone()) else {
                continue;
            };
            let deadline = Instant::now() + ROTATION_SETTLE;
            let served = loop {
                let (addr, ca) = (addr.clone(), ca.clone());
                let served =
                    tokio::task::spawn_blocking(move || rotation::served_serial(&addr, node, &ca))
                        .await
                        .unwrap_or_else(|e| Err(e.to_string()));
                if served.as_deref() == Ok(want.as_str()) || Instant::now() >= deadline {
                    break served;
                }
                tokio::time::sleep(Duration::from_secs(1)).await;
            };
            let shown = match &served {
                Ok(serial) => serial.clone(),
                Err(e) => format!("none: {e}"),
            };
            if served.as_deref() != Ok(want.as_str()) {
                self.failures.push(format!(
                    "certificate-rotation: node {node} serves {shown}, not its new \
                     certificate {want}"
                ));
            }
            self.rotations[k].served_at_end = Some(shown);
        }
    }

    async fn steady_state(&self, query: &str, prometheus: &str) -> Option<String> {
        let url = format!("{prometheus}/api/v1/query?query={}", query_escape(query));
        match self.http.get_json(&url).await {
            Ok(v) => {
                let result = &v["data"]["result"];
                let matched = match result {
                    Value::Array(a) => !a.is_empty(),
                    Value::Null => false,
                    _ => true,
                };
                matched.then(|| {
                    format!(
                        "steady-state check `{query}` matched at {:.1} s: {result}",
                        self.now().as_secs_f64()
                    )
                })
            }
            Err(e) => {
                tracing::warn!("steady-state check: {e}");
                None
            }
        }
    }
}

/// Runs `scenario` on `stack` and writes the artifacts.
///
/// # Errors
///
/// [`RunError`]: nothing ran (a refusal, an unhealthy stack) or the artifacts could not be
/// written. A failed expectation is not an error: see [`Outcome::passed`].
pub async fn run(
    scenario: &Scenario,
    stack: &mut Stack,
    options: &ComposeOptions,
) -> Result<Outcome, RunError> {
    let duration = options.duration.unwrap_or(scenario.duration());
    let node_count = u32::try_from(stack.nodes.len()).unwrap_or(u32::MAX);
    // Refusals first: nothing touches the stack for a scenario it cannot take.
    let steps = plan::timeline(scenario, node_count, duration, options.seed)?;
    let ids: Vec<u64> = stack.nodes.keys().copied().collect();
    plan::spares_needed(&steps, &ids, &stack.spares.nodes)?;
    let (kept, not_evaluated) = plan::split_expectations(scenario.expect());
    let nodes = Nodes::new(&stack.run_dir)?;
    if !stack.all_running().await? {
        return Err(RunError::Unhealthy(format!(
            "node containers not all running: {:?}",
            stack.states().await?
        )));
    }
    std::fs::create_dir_all(&options.out).map_err(|source| RunError::Io {
        path: options.out.clone(),
        source,
    })?;
    let observer = Observer::new(stack.nodes.keys().copied());
    let mut run = Run {
        stack,
        joined: Vec::new(),
        nodes,
        http: Http::default(),
        observer,
        rng: ChaCha8Rng::seed_from_u64(options.seed ^ 0x6368_616f_735f_7275),
        t0: Instant::now(),
        t0_unix: unix_s(SystemTime::now()),
        events: BTreeMap::new(),
        seq: 0,
        partitions: Vec::new(),
        faults: Vec::new(),
        failures: Vec::new(),
        snapshots: 0,
        out: options.out.clone(),
        bar: None,
        rotations: Vec::new(),
        autoscale: scenario
            .autoscale()
            .map(|a| (a.queue.clone(), a.burst_items)),
        burst: None,
    };
    // One view before the first fault, or no run.
    let waited = Instant::now();
    loop {
        run.observe().await;
        let json = run.observer.figures(RunReport::default(), 0.0);
        if json.converged {
            break;
        }
        if waited.elapsed() > HEALTHY_WAIT {
            return Err(RunError::Unhealthy(
                json.convergence_note
                    .unwrap_or_else(|| "no one view".to_owned()),
            ));
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    // The warm-up polls are not part of the run.
    run.observer = Observer::new(run.stack.nodes.keys().copied());
    run.snapshot("start").await?;
    let started_wall = SystemTime::now();
    run.t0 = Instant::now();
    run.t0_unix = unix_s(started_wall);
    run.observe().await;
    // `[autoscale]`: the autoscaler runs along the run, the burst is due at its time.
    let mut autoscaler = None;
    if let Some(a) = scenario.autoscale() {
        let scaler = AutoscaleOptions {
            queue: a.queue.clone(),
            policy: a.into(),
            work: a.work,
            out: options.out.clone(),
        };
        // The stack's `autoscaler` service, bounded a while past the run's end in case this
        // process dies before stopping it (`compose/down` removes it too).
        let bound = duration + AUTOSCALER_MARGIN;
        autoscaler = Some(workers::service::start(run.stack, &scaler, bound).await?);
        run.schedule(a.burst_at, Event::Burst);
    }
    for step in steps.clone() {
        run.schedule(step.at, Event::Step(step));
    }
    if options.progress {
        let bar =
            ProgressBar::with_draw_target(Some(duration.as_secs()), ProgressDrawTarget::stderr());
        bar.set_style(
            ProgressStyle::with_template("{elapsed_precise} [{bar:40}] {pos}/{len} s {msg}")
                .unwrap_or_else(|_| ProgressStyle::default_bar()),
        );
        run.bar = Some(bar);
    }
    let mut alerts: BTreeMap<String, Value> = BTreeMap::new();
    let mut next_poll = Duration::ZERO;
    let mut next_slow = Duration::ZERO;
    let mut aborted = None;
    while run.now() < duration {
        let now = run.now();
        if let Some(bar) = &run.bar {
            bar.set_position(now.as_secs());
        }
        loop {
            let now = run.now();
            let Some(entry) = run.events.first_entry() else {
                break;
            };
            if entry.key().0 > now {
                break;
            }
            let event = entry.remove();
            run.handle(event).await?;
        }
        if run.now() >= next_poll {
            run.observe().await;
            next_poll = run.now() + options.poll;
        }
        if run.now() >= next_slow {
            next_slow = run.now() + SLOW_POLL;
            if let Some(am) = &run.stack.alertmanager {
                collect_alerts(&run.http, am, secs(run.now()), &mut alerts).await;
            }
            if let (Some(q), Some(prom)) = (&options.abort_if, &run.stack.prometheus)
                && let Some(why) = run.steady_state(q, prom).await
            {
                aborted = Some(why);
                break;
            }
        }
        let next_event = run.events.first_key_value().map_or(duration, |(k, _)| k.0);
        let wake = next_event.min(next_poll).min(duration);
        let now = run.now();
        if wake > now {
            tokio::time::sleep(wake - now).await;
        }
    }
    if let Some(bar) = run.bar.take() {
        bar.finish_and_clear();
    }
    let length = run.now();
    run.observe().await;
    run.check_rotations().await;
    run.snapshot("end").await?;
    if let Some(am) = &run.stack.alertmanager {
        collect_alerts(&run.http, am, secs(run.now()), &mut alerts).await;
    }
    let autoscaled = match autoscaler {
        Some(a) => {
            let summary = a.stop(run.stack).await;
            let burst = match run.burst.take() {
                Some(task) => task.await.ok(),
                None => None,
            };
            Some((summary, burst))
        }
        None => None,
    };
    run.restore().await;
    let ended_wall = SystemTime::now();

    let mut header = RunReport::default();
    header.scenario = scenario.name().to_owned();
    header.profile = "compose".to_owned();
    header.seed = options.seed;
    header.nodes = node_count;
    header.replay.clone_from(&options.replay);
    let mut report = run.observer.figures(header, length.as_secs_f64());
    report.faults_after_end = u64::try_from(
        scenario
            .faults()
            .iter()
            .map(|f| f.count as usize)
            .sum::<usize>()
            .saturating_sub(steps.iter().filter(|s| s.fault.is_some()).count()),
    )
    .unwrap_or(0);
    // Joins and leaves seen, as the simulator counts them (99% of the others holding the
    // node alive, or left).
    let seen = |v: Vec<Option<f64>>| (v.len() as u64, v.iter().flatten().count() as u64);
    let (joins, joins_seen) = seen(run.observer.join_s());
    if joins > 0 {
        (report.joins, report.joins_seen) = (Some(joins), Some(joins_seen));
    }
    let (leaves, leaves_seen) = seen(run.observer.leave_s());
    if leaves > 0 {
        (report.leaves, report.leaves_seen) = (Some(leaves), Some(leaves_seen));
    }
    report.expectations_failed = report::check_expectations(&kept, &report);
    report.expectations_failed.extend(run.failures.clone());
    if let Some(why) = &aborted {
        report.expectations_failed.push(format!("aborted: {why}"));
    }
    let autoscale_json = match (&autoscaled, scenario.autoscale()) {
        (Some((summary, burst)), Some(spec)) => {
            let figures =
                AutoscaleFigures::of(summary, burst.as_ref(), spec.min_workers, run.t0_unix);
            report
                .expectations_failed
                .extend(figures.check(spec, summary, burst.as_ref()));
            Some(json!({
                "burst": burst,
                "figures": figures,
                "workers_max": summary.workers_max,
                "scale_outs": summary.scale_outs,
                "scale_ins": summary.scale_ins,
                "stream_connects": summary.stream_connects,
                "completed_by_worker": summary.completed_by_worker,
                "errors": summary.errors,
                "decisions": "autoscale.jsonl",
            }))
        }
        _ => None,
    };

    // Artifacts.
    let out = options.out.clone();
    for name in &run.stack.containers {
        match run.stack.logs(name).await {
            Ok(bytes) => {
                artifacts::write_bytes(&out.join("logs").join(format!("{name}.log")), &bytes)?
            }
            Err(e) => tracing::warn!("logs of {name}: {e}"),
        }
    }
    let mut series = BTreeMap::new();
    if let Some(prom) = &run.stack.prometheus {
        let (from, to) = (unix_s(started_wall) - 10.0, unix_s(ended_wall) + 5.0);
        for (name, query) in SERIES {
            let url = format!(
                "{prom}/api/v1/query_range?query={}&start={from:.3}&end={to:.3}&step=5",
                query_escape(query)
            );
            let v = run
                .http
                .get_json(&url)
                .await
                .unwrap_or_else(|e| json!({"error": e.to_string()}));
            artifacts::write_json(&out.join("prometheus").join(format!("{name}.json")), &v)?;
            series.insert((*name).to_owned(), (*query).to_owned());
        }
    }
    let mut transport = serde_json::Map::new();
    transport.insert("runner_client".into(), json!(run.nodes.stats()));
    if let Some(prom) = &run.stack.prometheus {
        // The window ends 5 s after the run so that the last scrape of the run is in it.
        let at = unix_s(ended_wall) + 5.0;
        let window = (at - unix_s(started_wall) + 10.0).ceil();
        for (name, query) in TRANSPORT_INCREASES {
            let query = query.replace("{w}", &format!("{window}"));
            let url = format!(
                "{prom}/api/v1/query?query={}&time={at:.3}",
                query_escape(&query)
            );
            let rows = match run.http.get_json(&url).await {
                Ok(v) => increases(&v),
                Err(e) => json!({"error": e.to_string()}),
            };
            transport.insert((*name).to_owned(), rows);
        }
    }
    // The drill's verdict: nothing that should pass was refused. A refusal is a handshake that
    // failed on a certificate (reason `expired` or `untrusted`, on any node's listeners); the
    // `other` failures (timeouts) and the agent's failed probes are listed in `transport` but
    // decide nothing: on a loaded machine both happen without any fault (a transport-downgrade
    // run at load 26 saw 1-5 `other` handshake failures a node and 1-4 failed samples a probe
    // on the nodes it did not touch).
    if !run.rotations.is_empty() {
        match transport.get("handshake_failures") {
            Some(Value::Array(rows)) => {
                let refused: Vec<&Value> = rows
                    .iter()
                    .filter(|r| r["reason"] == "expired" || r["reason"] == "untrusted")
                    .collect();
                if !refused.is_empty() {
                    report.expectations_failed.push(format!(
                        "certificate-rotation: TLS handshakes refused a certificate during \
                         the run: {}",
                        json!(refused)
                    ));
                }
            }
            other => report.expectations_failed.push(format!(
                "certificate-rotation: the refused handshakes could not be counted: {}",
                other.map_or_else(|| "no Prometheus".to_owned(), Value::to_string)
            )),
        }
    }
    let alerts: Vec<Value> = alerts.into_values().collect();
    artifacts::write_json(&out.join("alerts.json"), &json!(alerts))?;
    let mut notes = scenario_notes(scenario, node_count);
    if run.stack.prometheus.is_none() {
        notes.push("no Prometheus in the project: no series written".to_owned());
    }
    let mut json = serde_json::to_value(&report).unwrap_or_default();
    if let Value::Object(map) = &mut json {
        map.insert("env".into(), json!("compose"));
        map.insert("project".into(), json!(run.stack.project));
        map.insert("wall_s".into(), json!(secs(length)));
        map.insert(
            "takeovers_dated_by_feed".into(),
            json!(run.observer.takeovers_dated),
        );
        map.insert("failovers_s".into(), json!(run.observer.failovers_s()));
        map.insert("join_s".into(), json!(run.observer.join_s()));
        map.insert("leave_s".into(), json!(run.observer.leave_s()));
        map.insert("started_unix_s".into(), json!(unix_s(started_wall)));
        map.insert("expectations_not_evaluated".into(), json!(not_evaluated));
        map.insert("faults".into(), json!(run.faults));
        map.insert("timeline".into(), json!(steps));
        map.insert("aborted".into(), json!(aborted));
        map.insert("notes".into(), json!(notes));
        map.insert("alerts_fired".into(), json!(alert_names(&alerts)));
        map.insert("transport".into(), Value::Object(transport));
        if !run.rotations.is_empty() {
            map.insert("rotations".into(), json!(run.rotations));
        }
        map.insert("prometheus_series".into(), json!(series));
        map.insert("alive".into(), json!(run.observer.alive));
        map.insert("artifacts".into(), json!(out.display().to_string()));
        if let Some(a) = &autoscale_json {
            map.insert("autoscale".into(), a.clone());
        }
        map.insert("passed".into(), json!(report.passed() && aborted.is_none()));
    }
    artifacts::write_json(&out.join("report.json"), &json)?;
    artifacts::write_html(&out.join("report.html"), &json)?;
    run.nodes.close().await;
    Ok(Outcome {
        report,
        json,
        out,
        aborted,
    })
}

/// The autoscaler's figures, seconds on the run's clock.
#[derive(Clone, Debug, Default, Serialize)]
pub struct AutoscaleFigures {
    /// The burst to the first scale-out after it.
    pub scale_out_s: Option<f64>,
    /// The burst to backpressure inactive again on every shard (the queue drained below its
    /// low watermark) after that scale-out.
    pub drained_s: Option<f64>,
    /// The drain to the scale-in that brought the workers back to `min_workers`.
    pub drain_to_scale_in_s: Option<f64>,
    /// The burst to that scale-in.
    pub scale_in_s: Option<f64>,
}

impl AutoscaleFigures {
    /// Read from the decisions; `t0_unix` places their Unix times on the run's clock.
    pub fn of(
        summary: &workers::Summary,
        burst: Option<&BurstOutcome>,
        min_workers: u32,
        t0_unix: f64,
    ) -> Self {
        let Some(burst) = burst else {
            return Self::default();
        };
        let t = |r: &workers::Record| r.unix_ms as f64 / 1000.0 - t0_unix;
        let after: Vec<&workers::Record> =
            summary.records.iter().filter(|r| t(r) >= burst.t).collect();
        let out = after.iter().find(|r| r.event == "scale-out").map(|r| t(r));
        let drained = out.and_then(|o| {
            after
                .iter()
                .find(|r| r.event == "signal-change" && !r.active && t(r) >= o)
                .map(|r| t(r))
        });
        let back = drained.and_then(|d| {
            after
                .iter()
                .find(|r| {
                    r.event == "worker-stopped"
                        && r.workers == min_workers
                        && t(r) >= d
                        && r.reason.contains("backpressure inactive")
                })
                .map(|r| t(r))
        });
        let rel = |v: Option<f64>, from: f64| {
            v.map(|v| secs(Duration::from_secs_f64((v - from).max(0.0))))
        };
        Self {
            scale_out_s: rel(out, burst.t),
            drained_s: rel(drained, burst.t),
            drain_to_scale_in_s: drained.and_then(|d| rel(back, d)),
            scale_in_s: rel(back, burst.t),
        }
    }

    /// The `[autoscale]` expectations that failed: a scale-out and a back-to-min scale-in
    /// within their bounds, the whole burst enqueued, no Docker call failed.
    pub fn check(
        &self,
        spec: &meshkit_sim::scenario::AutoscaleSpec,
        summary: &workers::Summary,
        burst: Option<&BurstOutcome>,
    ) -> Vec<String> {
        let mut failed = Vec::new();
        for (key, got, max) in [
            (
                "autoscale scale_out_s",
                self.scale_out_s,
                spec.scale_out_s_max,
            ),
            ("autoscale scale_in_s", self.scale_in_s, spec.scale_in_s_max),
        ] {
            match (got, max) {
                (None, Some(max)) => {
                    failed.push(format!("{key}: none within the run (expected <= {max} s)"));
                }
                (Some(v), Some(max)) if v > max => failed.push(format!("{key} = {v} > {max}")),
                _ => {}
            }
        }
        match burst {
            None => failed.push("autoscale: the burst never ran".to_owned()),
            Some(b) if b.enqueued < b.items => failed.push(format!(
                "autoscale: the burst enqueued {} of {} items ({})",
                b.enqueued,
                b.items,
                b.first_error.clone().unwrap_or_default()
            )),
            Some(_) => {}
        }
        failed.extend(summary.errors.iter().map(|e| format!("autoscale: {e}")));
        failed
    }
}

async fn collect_alerts(http: &Http, am: &str, t: f64, into: &mut BTreeMap<String, Value>) {
    match http.get_json(&format!("{am}/api/v2/alerts")).await {
        Ok(Value::Array(list)) => {
            for mut a in list {
                let key = a["fingerprint"]
                    .as_str()
                    .map_or_else(|| a["labels"].to_string(), str::to_owned);
                match into.get_mut(&key) {
                    Some(seen) => seen["last_seen_s"] = json!(t),
                    None => {
                        a["first_seen_s"] = json!(t);
                        a["last_seen_s"] = json!(t);
                        into.insert(key, a);
                    }
                }
            }
        }
        Ok(other) => tracing::warn!("Alertmanager answered {other}"),
        Err(e) => tracing::warn!("Alertmanager: {e}"),
    }
}

/// An instant query's answer as rows of its labels and `value` (rounded to 0.1), the rows
/// whose value is 0 left out: what rose during the run.
fn increases(answer: &Value) -> Value {
    let rows = answer["data"]["result"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    let rows: Vec<Value> = rows
        .into_iter()
        .filter_map(|r| {
            let value: f64 = r["value"][1].as_str()?.parse().ok()?;
            if value == 0.0 || !value.is_finite() {
                return None;
            }
            let mut row = r["metric"].as_object().cloned().unwrap_or_default();
            row.insert("value".into(), json!((value * 10.0).round() / 10.0));
            Some(Value::Object(row))
        })
        .collect();
    json!(rows)
}

fn alert_names(alerts: &[Value]) -> Vec<String> {
    let mut names: Vec<String> = alerts
        .iter()
        .filter_map(|a| a["labels"]["alertname"].as_str().map(str::to_owned))
        .collect();
    names.sort();
    names.dedup();
    names
}

/// What of the scenario the stack does not reproduce (not faults: those are refused).
pub fn scenario_notes(scenario: &Scenario, nodes: u32) -> Vec<String> {
    let mut notes = Vec::new();
    if scenario.nodes() != nodes {
        notes.push(format!(
            "[topology] nodes = {} in the file, {nodes} in the stack: the faults ran on the \
             stack's nodes, and detection bounds written for the file's size may differ",
            scenario.nodes()
        ));
    }
    let net = scenario.network();
    notes.push(format!(
        "[network] latency {:?} / jitter {:?} not emulated: the Docker bridge's own latency \
         applies",
        net.latency, net.jitter
    ));
    if net.loss > 0.0 || net.burst.is_some() {
        notes.push(
            "[network] loss runs as a chaos loss plan on every node's outbound links for the \
             whole run"
                .to_owned(),
        );
    }
    if net.duplicate > 0.0 || net.reorder > 0.0 {
        notes.push(
            "[network] duplicate/reorder as a background is not applied (use a `plan` fault)"
                .to_owned(),
        );
    }
    if scenario.workload().metadata_updates_per_s > 0.0 {
        notes.push("[workload] metadata writes are not driven".to_owned());
    }
    if scenario.leases().is_some() {
        notes.push(
            "[leases]: the stack's own leadership applies (voters and contenders as compose/up \
             configured them, every node campaigning for global-control)"
                .to_owned(),
        );
    }
    if scenario.shards().is_some() || scenario.queue().is_some() {
        notes.push("[shards]/[queue] are not modelled by the stack's configuration".to_owned());
    }
    notes
}

/// The default artifacts folder: `artifacts/<scenario>-<UTC timestamp>`.
pub fn default_out(scenario: &Scenario) -> PathBuf {
    let stamp = time::OffsetDateTime::now_utc();
    Path::new("artifacts").join(format!(
        "{}-{:04}{:02}{:02}T{:02}{:02}{:02}Z",
        scenario.name(),
        stamp.year(),
        u8::from(stamp.month()),
        stamp.day(),
        stamp.hour(),
        stamp.minute(),
        stamp.second()
    ))
}
