//! The autoscaler on a compose stack: it follows the backpressure stream of a task queue
//! (`GET /control/backpressure/stream?queue=Q` of one node, which carries every shard's signal
//! as its owner publishes it; on an error or the end of the stream it reconnects to the next
//! node), decides with [`crate::autoscale::Policy`], and adds or removes worker containers
//! through the Docker API: `meshctl queue work Q` in the stack's `meshkitd` image, on the
//! project's network, with the stack's operator certificate, labelled as the project's so
//! `compose/down` removes any left. A scale-in stops the newest worker with SIGTERM: it
//! completes the item in hand and exits, so no lease is left to time out.
//!
//! Every decision and every change of the signal is a JSON line in `autoscale.jsonl` of the
//! run's artifacts, and the summary `autoscale-summary.json` when it stops; each worker's log is
//! kept in `logs/`. [`metrics`] are its Prometheus families. In a scenario it runs as the
//! stack's `autoscaler` compose service ([`service`]), this same code in the
//! `meshkit/meshkit-chaos:dev` image.

use std::collections::HashMap;
use std::io::Write as _;
use std::path::PathBuf;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bollard::Docker;
use bollard::models::{ContainerCreateBody, EndpointSettings, HostConfig, NetworkingConfig};
use bollard::query_parameters::{
    CreateContainerOptionsBuilder, RemoveContainerOptionsBuilder, StopContainerOptionsBuilder,
};
use meshkit_api::json::BackpressureJson;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use thiserror::Error;
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;

use crate::autoscale::{Direction, Policy, PolicyConfig, Signals};
use crate::nodes::{NodeError, Nodes};
use crate::stack::{Stack, StackError};

pub mod metrics;
pub mod service;

pub use metrics::Metrics;

/// How often the policy is asked when no signal arrives (the dwell and cooldown run on time).
const TICK: Duration = Duration::from_millis(250);
/// The wait before reconnecting to the next node after a stream failed.
const RECONNECT_WAIT: Duration = Duration::from_millis(500);
/// A worker's grace after SIGTERM: one item's work and its completion.
const WORKER_STOP_GRACE_S: i32 = 10;
/// The control port inside the containers.
const CONTROL_PORT: u16 = 8101;
/// Most signals buffered between the stream reader and the policy.
const SIGNAL_BUFFER: usize = 256;
/// The longest one stream is read before it is reopened, so no connection is trusted forever.
const STREAM_MAX: Duration = Duration::from_secs(600);
/// The autoscaler's summary in the artifacts folder, written when it stops.
pub const SUMMARY_FILE: &str = "autoscale-summary.json";
/// Most bytes of an unfinished event kept while reading a stream.
const MAX_EVENT_BYTES: usize = 64 * 1024;

/// Why the autoscaler could not run.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum AutoscaleError {
    /// No Docker daemon answers, or a Docker call failed: the stack's own error.
    #[error(transparent)]
    Stack(#[from] StackError),
    /// docker-compose could not start or stop the `autoscaler` service.
    #[error("the autoscaler service: `{command}`: {why}")]
    Service {
        /// The docker-compose command line.
        command: String,
        /// Its exit and output, or why it did not run.
        why: String,
    },
    /// The stack's certificates.
    #[error(transparent)]
    Node(#[from] NodeError),
    /// The decisions file.
    #[error("{path}: {source}")]
    Io {
        /// The path.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
}

/// What the autoscaler works on.
#[derive(Clone, Debug)]
pub struct AutoscaleOptions {
    /// The queue (shard namespace) followed and worked.
    pub queue: String,
    /// The hysteresis policy.
    pub policy: PolicyConfig,
    /// A worker's time per item.
    pub work: Duration,
    /// The artifacts folder: `autoscale.jsonl` and `logs/`.
    pub out: PathBuf,
}

/// Where the workers run: taken from the stack as found.
#[derive(Clone, Debug)]
pub struct Target {
    project: String,
    run_dir: PathBuf,
    image: String,
    network: String,
    user: String,
    /// `(node id, 127.0.0.1:PORT)` of the stack's nodes, the streams' endpoints in turn.
    nodes: Vec<(u64, String)>,
}

impl Target {
    /// The same stack reached from inside its network (the `autoscaler` service): nodes by
    /// their names and the control port inside the containers, not the ports published on
    /// the host's 127.0.0.1.
    #[must_use]
    pub fn on_network(mut self) -> Self {
        for (id, addr) in &mut self.nodes {
            *addr = format!("meshkit-{id}:{CONTROL_PORT}");
        }
        self
    }

    /// The stack's image, network, user and nodes (as `compose/up` wrote them in
    /// `spares.json`; the defaults of `compose/env.py` otherwise).
    pub fn of(stack: &Stack) -> Self {
        let sp = &stack.spares;
        let or = |v: &str, d: String| if v.is_empty() { d } else { v.to_owned() };
        Self {
            project: stack.project.clone(),
            run_dir: stack.run_dir.clone(),
            image: or(&sp.image, "meshkit/meshkitd:dev".to_owned()),
            network: or(&sp.network, format!("{}_mesh", stack.project)),
            user: sp.user.clone(),
            nodes: stack
                .nodes
                .values()
                .map(|n| (n.id, n.control.clone()))
                .collect(),
        }
    }
}

/// One line of `autoscale.jsonl`.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Record {
    /// Seconds since the autoscaler started (the run's start in a scenario).
    pub t: f64,
    /// Unix milliseconds.
    pub unix_ms: u64,
    /// `start`, `signal`, `scale-out`, `scale-in`, `stream`, `stop`, `error`.
    pub event: String,
    /// Backpressure active on any shard, as last seen.
    pub active: bool,
    /// Items pending over the shards, as last signalled.
    pub pending: u64,
    /// Workers running after this record.
    pub workers: u32,
    /// Why (a decision's dwell and cooldown, a stream's error, ...).
    pub reason: String,
    /// The worker container started or stopped, or the node whose stream it was.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subject: Option<String>,
    /// Every shard's latest signal (on `signal` records).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shards: Option<Value>,
}

/// What a finished autoscaler saw and did (`autoscale-summary.json`).
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct Summary {
    /// Every record, as written.
    pub records: Vec<Record>,
    /// The most workers at once.
    pub workers_max: u32,
    /// Scale-outs and scale-ins made.
    pub scale_outs: u32,
    /// Scale-ins made.
    pub scale_ins: u32,
    /// Stream (re)connections.
    pub stream_connects: u32,
    /// Items each worker completed, by container (from its log).
    pub completed_by_worker: std::collections::BTreeMap<String, u64>,
    /// Docker calls that failed (the run fails with them).
    pub errors: Vec<String>,
}

enum StreamEvent {
    Connected(u64),
    Signal(Box<BackpressureJson>),
    Lost(u64, String),
}

/// Reads node `addr`'s stream until it fails or ends (it never ends well: the answer is why it
/// stopped), passing each signal on.
async fn read_stream(
    nodes: &Nodes,
    id: u64,
    addr: &str,
    queue: &str,
    tx: &mpsc::Sender<StreamEvent>,
) -> NodeError {
    let lost = |why: String| NodeError::Call {
        addr: addr.to_owned(),
        path: "/control/backpressure/stream".to_owned(),
        why,
    };
    let mut stream = match nodes.backpressure_stream(addr, queue).await {
        Ok(s) => s,
        Err(e) => return e,
    };
    let _ = tx.send(StreamEvent::Connected(id)).await;
    let mut text = String::new();
    loop {
        let bytes = match stream.chunk().await {
            Ok(Some(bytes)) => bytes,
            Ok(None) => return lost("the node ended the stream".to_owned()),
            Err(e) => return lost(e.to_string()),
        };
        text.push_str(&String::from_utf8_lossy(&bytes));
        // Whole events end with a blank line; the rest waits for more.
        if let Some(end) = text.rfind("\n\n") {
            let complete: String = text.drain(..end + 2).collect();
            for data in complete.lines().filter_map(|l| l.strip_prefix("data:")) {
                match serde_json::from_str::<BackpressureJson>(data.trim()) {
                    Ok(b) => {
                        let _ = tx.send(StreamEvent::Signal(Box::new(b))).await;
                    }
                    Err(e) => tracing::warn!("{addr}: unexpected event {data:?}: {e}"),
                }
            }
        }
        if text.len() > MAX_EVENT_BYTES {
            return lost(format!("an event longer than {MAX_EVENT_BYTES} bytes"));
        }
    }
}

/// The stream reader: one node's stream at a time, the next node's after an error, until
/// `stop`.
async fn follow(
    nodes: Nodes,
    endpoints: Vec<(u64, String)>,
    queue: String,
    tx: mpsc::Sender<StreamEvent>,
    mut stop: watch::Receiver<bool>,
) {
    let mut turn = 0usize;
    while !*stop.borrow() && !endpoints.is_empty() {
        let (id, addr) = &endpoints[turn % endpoints.len()];
        turn += 1;
        let outcome = tokio::select! {
            r = tokio::time::timeout(STREAM_MAX, read_stream(&nodes, *id, addr, &queue, &tx)) => {
                r.map_or_else(|_| "reopened after its longest read".to_owned(), |e| e.to_string())
            }
            _ = stop.changed() => return,
        };
        let _ = tx.send(StreamEvent::Lost(*id, outcome)).await;
        tokio::select! {
            () = tokio::time::sleep(RECONNECT_WAIT) => {}
            _ = stop.changed() => return,
        }
    }
}

fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

struct Scaler {
    docker: Docker,
    metrics: std::sync::Arc<Metrics>,
    target: Target,
    options: AutoscaleOptions,
    policy: Policy,
    signals: Signals,
    /// Running workers' container names, oldest first.
    workers: Vec<String>,
    started: u32,
    t0: Instant,
    file: std::fs::File,
    path: PathBuf,
    summary: Summary,
}

impl Scaler {
    fn record(&mut self, event: &str, reason: String, subject: Option<String>, shards: bool) {
        self.metrics.set_workers(self.workers.len());
        let r = Record {
            t: (self.t0.elapsed().as_secs_f64() * 1000.0).round() / 1000.0,
            unix_ms: unix_ms(),
            event: event.to_owned(),
            active: self.signals.active(),
            pending: self.signals.pending(),
            workers: u32::try_from(self.workers.len()).unwrap_or(u32::MAX),
            reason,
            subject,
            shards: shards.then(|| json!(self.signals.shards())),
        };
        let line = serde_json::to_string(&r).unwrap_or_default();
        if let Err(e) = writeln!(self.file, "{line}") {
            tracing::warn!("{}: {e}", self.path.display());
        }
        self.summary.records.push(r);
    }

    fn error(&mut self, what: String) {
        self.metrics.error();
        self.record("error", what.clone(), None, false);
        self.summary.errors.push(what);
    }

    /// Creates and starts worker number `started + 1`, talking to the stack's nodes in turn.
    async fn add(&mut self, reason: String) {
        if self.target.nodes.is_empty() {
            self.error("the stack has no node for a worker to talk to".to_owned());
            return;
        }
        self.started += 1;
        let n = self.started;
        let service = format!("worker-{n}");
        let name = format!("{}_{service}", self.target.project);
        let node = self.target.nodes[(n as usize - 1) % self.target.nodes.len()].0;
        let labels = HashMap::from([
            (
                "com.docker.compose.project".to_owned(),
                self.target.project.clone(),
            ),
            ("com.docker.compose.service".to_owned(), service.clone()),
            // docker-compose v1 lists a project's containers with oneoff=False: without it
            // `down --remove-orphans` would not see this one.
            ("com.docker.compose.oneoff".to_owned(), "False".to_owned()),
            ("io.meshkit.role".to_owned(), "worker".to_owned()),
        ]);
        let certs = "/etc/meshkit/certs";
        let work_ms = u64::try_from(self.options.work.as_millis()).unwrap_or(u64::MAX);
        let cmd: Vec<String> = vec![
            "queue".to_owned(),
            "work".to_owned(),
            self.options.queue.clone(),
            "--work".to_owned(),
            format!("{work_ms}ms"),
            "--for".to_owned(),
            "1h".to_owned(),
            "--addr".to_owned(),
            format!("meshkit-{node}:{CONTROL_PORT}"),
            "--ca".to_owned(),
            format!("{certs}/ca.pem"),
            "--cert".to_owned(),
            format!("{certs}/meshctl-operator.pem"),
            "--key".to_owned(),
            format!("{certs}/meshctl-operator.key"),
        ];
        let body = ContainerCreateBody {
            hostname: Some(service),
            user: (!self.target.user.is_empty()).then(|| self.target.user.clone()),
            image: Some(self.target.image.clone()),
            entrypoint: Some(vec!["/usr/local/bin/meshctl".to_owned()]),
            cmd: Some(cmd),
            labels: Some(labels),
            host_config: Some(HostConfig {
                binds: Some(vec![format!(
                    "{}:/etc/meshkit:ro",
                    self.target.run_dir.display()
                )]),
                ..HostConfig::default()
            }),
            networking_config: Some(NetworkingConfig {
                endpoints_config: Some(HashMap::from([(
                    self.target.network.clone(),
                    EndpointSettings::default(),
                )])),
            }),
            ..ContainerCreateBody::default()
        };
        let created = self
            .docker
            .create_container(
                Some(CreateContainerOptionsBuilder::new().name(&name).build()),
                body,
            )
            .await;
        if let Err(e) = created {
            self.error(Stack::wrap("create", &name)(e).to_string());
            return;
        }
        // Known before it starts: a failed start leaves a container the end removes.
        self.workers.push(name.clone());
        match self.docker.start_container(&name, None).await {
            Ok(()) => {
                let count = u32::try_from(self.workers.len()).unwrap_or(u32::MAX);
                self.summary.workers_max = self.summary.workers_max.max(count);
                self.record("worker-started", reason, Some(name), false);
            }
            Err(e) => self.error(Stack::wrap("start", &name)(e).to_string()),
        }
    }

    /// Stops the newest worker (SIGTERM: it completes the item in hand), keeps its log,
    /// removes it.
    async fn remove_newest(&mut self, reason: String) {
        let Some(name) = self.workers.pop() else {
            return;
        };
        if let Err(e) = self
            .docker
            .stop_container(
                &name,
                Some(
                    StopContainerOptionsBuilder::new()
                        .t(WORKER_STOP_GRACE_S)
                        .build(),
                ),
            )
            .await
        {
            self.error(Stack::wrap("stop", &name)(e).to_string());
        }
        self.keep_log(&name).await;
        if let Err(e) = self
            .docker
            .remove_container(
                &name,
                Some(RemoveContainerOptionsBuilder::new().force(true).build()),
            )
            .await
        {
            self.error(Stack::wrap("rm", &name)(e).to_string());
        }
        self.record("worker-stopped", reason, Some(name), false);
    }

    async fn keep_log(&mut self, name: &str) {
        let bytes = crate::stack::container_log(&self.docker, name)
            .await
            .unwrap_or_else(|e| {
                tracing::warn!("logs of {name}: {e}");
                Vec::new()
            });
        let completed = String::from_utf8_lossy(&bytes)
            .lines()
            .filter(|l| l.contains(" completed shard/"))
            .count();
        self.summary
            .completed_by_worker
            .insert(name.to_owned(), completed as u64);
        let path = self.options.out.join("logs").join(format!("{name}.log"));
        if let Err(e) = crate::artifacts::write_bytes(&path, &bytes) {
            tracing::warn!("{}: {e}", path.display());
        }
    }

    async fn apply(&mut self, now: Duration) {
        let Some(d) = self.policy.observe(now, self.signals.active()) else {
            return;
        };
        let event = match d.direction {
            Direction::ScaleOut => "scale-out",
            Direction::ScaleIn => "scale-in",
        };
        self.metrics.decided(d.direction);
        let reason = format!("{} -> {} workers: {}", d.from, d.to, d.reason);
        self.record(event, reason.clone(), None, true);
        match d.direction {
            Direction::ScaleOut => {
                self.summary.scale_outs += 1;
                self.add(reason).await;
            }
            Direction::ScaleIn => {
                self.summary.scale_ins += 1;
                self.remove_newest(reason).await;
            }
        }
    }
}

/// A running autoscaler: stop it with [`Running::stop`].
#[derive(Debug)]
pub struct Running {
    stop: watch::Sender<bool>,
    task: tokio::task::JoinHandle<Summary>,
    metrics: std::sync::Arc<Metrics>,
}

impl Running {
    /// Its Prometheus families, to serve (`meshkit-chaos autoscale --metrics`).
    pub fn metrics(&self) -> std::sync::Arc<Metrics> {
        self.metrics.clone()
    }

    /// Stops the autoscaler: every worker is stopped (its item completed) and removed, its log
    /// kept; the summary of the run.
    pub async fn stop(self) -> Summary {
        let _ = self.stop.send(true);
        self.task.await.unwrap_or_else(|e| Summary {
            errors: vec![format!("the autoscaler's task ended abnormally: {e}")],
            ..Summary::default()
        })
    }
}

/// Starts the autoscaler on the stack: `min_workers` workers at once, then the policy on the
/// stream's signals until [`Running::stop`].
///
/// # Errors
///
/// [`AutoscaleError`]: no Docker, the stack's certificates, the decisions file.
pub async fn start(target: Target, options: AutoscaleOptions) -> Result<Running, AutoscaleError> {
    let docker = Docker::connect_with_local_defaults().map_err(StackError::NoDocker)?;
    docker.ping().await.map_err(StackError::NoDocker)?;
    let nodes = Nodes::new(&target.run_dir)?;
    let path = options.out.join("autoscale.jsonl");
    let io = |source| AutoscaleError::Io {
        path: path.clone(),
        source,
    };
    std::fs::create_dir_all(&options.out).map_err(io)?;
    let file = std::fs::File::create(&path).map_err(io)?;
    let (stop_tx, mut stop_rx) = watch::channel(false);
    let (tx, mut rx) = mpsc::channel(SIGNAL_BUFFER);
    tokio::spawn(follow(
        nodes,
        target.nodes.clone(),
        options.queue.clone(),
        tx,
        stop_rx.clone(),
    ));
    let metrics = std::sync::Arc::new(Metrics::new(
        &options.queue,
        options.policy.min_workers,
        options.policy.max_workers,
    ));
    let mut scaler = Scaler {
        docker,
        metrics: metrics.clone(),
        policy: Policy::new(options.policy.clone()),
        target,
        options,
        signals: Signals::default(),
        workers: Vec::new(),
        started: 0,
        t0: Instant::now(),
        file,
        path,
        summary: Summary::default(),
    };
    let task = tokio::spawn(async move {
        let min = scaler.options.policy.min_workers;
        scaler.record(
            "start",
            format!(
                "queue {}, {}..={} workers, out after {:?} active, in after {:?} inactive, \
                 {:?} between decisions",
                scaler.options.queue,
                min,
                scaler.options.policy.max_workers,
                scaler.options.policy.scale_out_after,
                scaler.options.policy.scale_in_after,
                scaler.options.policy.cooldown
            ),
            None,
            false,
        );
        for _ in 0..min {
            scaler.add("min_workers".to_owned()).await;
        }
        let mut tick = tokio::time::interval(TICK);
        loop {
            tokio::select! {
                _ = stop_rx.changed() => break,
                event = rx.recv() => match event {
                    Some(StreamEvent::Signal(b)) => {
                        let was = scaler.signals.active();
                        if scaler.signals.update(&b) {
                            scaler.metrics.signal(scaler.signals.active(), scaler.signals.pending());
                            let reason = format!(
                                "{} {} pending {} (high {:?}, low {}), owner {} fence {}",
                                b.shard,
                                if b.is_active { "active" } else { "inactive" },
                                b.pending_count,
                                b.high_watermark,
                                b.low_watermark,
                                b.owner,
                                b.fence
                            );
                            let event = if was == scaler.signals.active() { "signal" } else { "signal-change" };
                            scaler.record(event, reason, Some(format!("node {}", b.owner)), true);
                        }
                    }
                    Some(StreamEvent::Connected(id)) => {
                        scaler.summary.stream_connects += 1;
                        scaler.metrics.connected();
                        scaler.record("stream", "connected".to_owned(), Some(format!("node {id}")), false);
                    }
                    Some(StreamEvent::Lost(id, why)) => {
                        scaler.record("stream", format!("lost: {why}; next node"), Some(format!("node {id}")), false);
                    }
                    None => break,
                },
                _ = tick.tick() => {}
            }
            let now = scaler.t0.elapsed();
            scaler.apply(now).await;
        }
        while !scaler.workers.is_empty() {
            scaler
                .remove_newest("the autoscaler stops".to_owned())
                .await;
        }
        scaler.record("stop", "stopped".to_owned(), None, true);
        // The summary beside the decisions: what the runner reads back when the autoscaler
        // ran as the stack's service, in another process.
        let path = scaler.options.out.join(SUMMARY_FILE);
        if let Err(e) = crate::artifacts::write_json(&path, &json!(scaler.summary)) {
            tracing::warn!("{}: {e}", path.display());
        }
        scaler.summary
    });
    Ok(Running {
        stop: stop_tx,
        task,
        metrics,
    })
}
