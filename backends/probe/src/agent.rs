//! The agent process: its own client and endpoint, the probe host, and the fan-out of every
//! result to the metrics, the history and the alert engine.
//!
//! # Start
//!
//! [`start`] reads the configuration, builds the agent's own [`Clients`] (its own QUIC
//! endpoints and TCP connections, from `agent.bind` if set), resolves each group's targets
//! (listed, or discovered from one node's `GET /meshkit/peers`), and checks least privilege:
//! on every target the agent's identity must be refused (403) on an operate endpoint
//! ([`authz::operate_check`], a deliberately invalid body, so even a wrongly privileged
//! identity changes nothing). Any other answer refuses the start unless
//! `allow_excess_privilege = true`. Then it registers every probe on a runtime
//! [`ProbeHost`] with an observer, and serves `/metrics`, `GET /-/healthy` and
//! `POST /-/reload` on `agent.listen`.
//!
//! # Fan-out
//!
//! The host tells the observer of every finished run and every state change, in the
//! scheduler's order. One task turns each into a [`RunRecord`] or a [`StateChange`] and hands
//! it to the [`Metrics`], the history and the alert engine (`outputs`). The agent counts no
//! streaks itself: a state is the core scheduler's decision.
//!
//! # Reload
//!
//! A change of the config file (notify), `SIGHUP` (in [`serve`]) and `POST /-/reload` all
//! ask the agent's task to reload: the file is read and validated again, and only a valid one
//! is applied. Probes are diffed by name and settings: removed ones stop (their series
//! leave `/metrics`), changed and new ones start; clients are rebuilt only when the
//! credentials or the bind address changed (and least privilege is checked again). A refused
//! file changes nothing and sets `meshkit_probe_config_last_reload_successful` to 0.
//! `agent.listen`, `history.path` and `[fleet]` changes need a restart.
//!
//! # Fleet
//!
//! With `[fleet]`, the agent starts its node of the agents' own mesh ([`Fleet`]) and runs only
//! the groups whose shard that node holds ([`Fleet::owned`]), following every change: a group
//! it gains starts, a group it loses stops (its series leave `/metrics`, its alert resolves
//! here; the agent that gained it fires it again if it still fails, and Alertmanager, seeing
//! the same labels, keeps one alert).

mod outputs;

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use meshkit::NodeId;
use meshkit::diag::probe::{ProbeSpec, ProbeSpecError, ProbeTags};
use meshkit_api::json::PeersResponse;
use meshkit_net::clock::TokioClock;
use meshkit_runtime::probe_host::{ProbeHandle, ProbeHost, ProbeNotice, ProbeRegisterError};
use thiserror::Error;
use tokio::sync::{mpsc, oneshot};

use self::outputs::Outputs;
use crate::config::{Config, ConfigError, GroupConfig, Targets};
use crate::fleet::{Fleet, FleetError};
use crate::history::HistoryError;
use crate::metrics::Metrics;
use crate::probes::authz::{self, OperateAnswer};
use crate::probes::{self, Clients, RunNote};
use crate::record::{ProbeKey, RunRecord, StateChange, now_unix_ms};
use crate::report::{ReportScheduler, spawn_scheduler};

/// Notices queued for the fan-out: a few seconds of runs at 1,000 probes a second.
pub const NOTICE_QUEUE_LEN: usize = 8192;
/// Commands queued for the agent's task.
pub const COMMAND_QUEUE_LEN: usize = 16;
/// How long a burst of file events is let settle before one reload.
pub const FILE_SETTLE: Duration = Duration::from_millis(200);
/// How often the alert engine's windows are checked and the sinks' counts published.
pub const TICK_EVERY: Duration = Duration::from_secs(1);
/// How long a stop waits for the last results to reach the history and the notifier.
pub const STOP_DRAIN_WAIT: Duration = Duration::from_secs(5);
/// How often discovered targets are read again.
pub const REDISCOVER_EVERY: Duration = Duration::from_secs(60);
/// The most privilege checks in flight at once.
pub const PRIVILEGE_CHECKS_IN_FLIGHT: usize = 16;

/// Why the agent did not start, or a reload was refused. On a refused reload nothing changed.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum AgentError {
    /// The configuration was refused (the operator's to fix).
    #[error("configuration: {0}")]
    Config(#[from] ConfigError),
    /// The clients could not be built from the credentials.
    #[error("credentials: {0}")]
    Client(#[from] meshkit_client::ClientError),
    /// The credentials can do more than observe on `target`, and `allow_excess_privilege` is
    /// not set.
    #[error(
        "least privilege: {target} answered {status} (not 403) to the agent's identity on \
         POST {path}: the credentials can do more than mesh.observe; give the agent an observer \
         token, or set agent.allow_excess_privilege = true to run anyway ({body})",
        path = authz::OPERATE_PATH
    )]
    ExcessPrivilege {
        /// The node that answered.
        target: String,
        /// Its status.
        status: u16,
        /// The start of its body.
        body: String,
    },
    /// A probe's spec was refused by the core (a bug: the configuration checks the same).
    #[error("probe {name}: {source}")]
    Spec {
        /// The probe.
        name: String,
        /// Why.
        source: ProbeSpecError,
    },
    /// The probe host refused a probe.
    #[error("probe {name}: {source}")]
    Register {
        /// The probe.
        name: String,
        /// Why.
        source: ProbeRegisterError,
    },
    /// The history could not be opened.
    #[error(transparent)]
    History(#[from] HistoryError),
    /// The fleet's node did not start.
    #[error(transparent)]
    Fleet(#[from] FleetError),
    /// `agent.listen` could not be bound.
    #[error("agent.listen {addr}: {source}")]
    Listen {
        /// The address.
        addr: SocketAddr,
        /// Why.
        source: std::io::Error,
    },
    /// The agent has stopped.
    #[error("the agent has stopped")]
    Stopped,
}

/// What the agent knows of one registered probe, shared with the fan-out.
#[derive(Debug)]
struct ProbeInfo {
    key: ProbeKey,
    kind: &'static str,
    target: String,
    alert_on_latency: bool,
    note: Arc<RunNote>,
}

/// Host name -> probe, read by the fan-out for every notice.
type Infos = Arc<RwLock<BTreeMap<String, Arc<ProbeInfo>>>>;

/// A probe as registered.
#[derive(Debug)]
struct Registered {
    /// The name the host knows it by.
    host_name: String,
    /// Its settings, to tell a changed probe on reload.
    fingerprint: String,
    info: Arc<ProbeInfo>,
}

/// What `POST /-/reload` and [`AgentHandle::reload`] answer when a file was applied.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Reloaded {
    /// Probes running now.
    pub probes: usize,
    /// Probes started (new or changed).
    pub added: usize,
    /// Probes stopped (removed or changed).
    pub removed: usize,
}

enum Command {
    Reload(oneshot::Sender<Result<Reloaded, String>>),
    Rediscover,
    Owned(BTreeSet<String>),
    Probes(oneshot::Sender<Vec<String>>),
    Stop(oneshot::Sender<()>),
}

/// A running agent.
#[derive(Debug)]
pub struct AgentHandle {
    listen: SocketAddr,
    commands: mpsc::Sender<Command>,
    metrics: Arc<Metrics>,
    tasks: Vec<tokio::task::AbortHandle>,
}

impl AgentHandle {
    /// The address `/metrics` is served on.
    pub fn listen_addr(&self) -> SocketAddr {
        self.listen
    }

    /// The agent's metrics.
    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.metrics
    }

    /// Reads the config file again and applies it if valid.
    ///
    /// # Errors
    ///
    /// Why the file was refused (the running configuration stays), or [`AgentError::Stopped`].
    pub async fn reload(&self) -> Result<Reloaded, String> {
        reload_via(&self.commands).await
    }

    /// The names of the probes running, in order.
    ///
    /// # Errors
    ///
    /// [`AgentError::Stopped`].
    pub async fn probes(&self) -> Result<Vec<String>, AgentError> {
        let (reply, rx) = oneshot::channel();
        self.commands
            .send(Command::Probes(reply))
            .await
            .map_err(|_| AgentError::Stopped)?;
        rx.await.map_err(|_| AgentError::Stopped)
    }

    /// Stops every probe, closes the connections and the listener, delivers what the history
    /// and the notifier hold, and hands the fleet's groups to the other agents.
    pub async fn stop(self) {
        // The helper tasks first: the tick task holds a handle of the probe host, which ends
        // only when every handle is gone.
        for task in &self.tasks {
            task.abort();
        }
        let (reply, rx) = oneshot::channel();
        if self.commands.send(Command::Stop(reply)).await.is_ok() {
            let _ = rx.await;
        }
    }
}

async fn reload_via(commands: &mpsc::Sender<Command>) -> Result<Reloaded, String> {
    let (reply, rx) = oneshot::channel();
    commands
        .send(Command::Reload(reply))
        .await
        .map_err(|_| AgentError::Stopped.to_string())?;
    rx.await.map_err(|_| AgentError::Stopped.to_string())?
}

/// The agent's task state.
struct Agent {
    config: Config,
    clients: Arc<Clients>,
    /// Bumped when the clients are rebuilt: every probe holds the old ones.
    generation: u64,
    host: ProbeHandle,
    infos: Infos,
    registered: BTreeMap<String, Registered>,
    /// Discovered targets per group, as last read.
    discovered: BTreeMap<String, Vec<String>>,
    metrics: Arc<Metrics>,
    outputs: Arc<Outputs>,
    fan_out: tokio::task::JoinHandle<()>,
    /// With `[fleet]`: the fleet and the groups it owns now.
    fleet: Option<(Fleet, BTreeSet<String>)>,
    /// The scheduled reports of `[reports]`.
    reports: ReportScheduler,
    next_host_name: u64,
}

/// Starts the agent of the config file `path`.
///
/// # Errors
///
/// [`AgentError`]: nothing is left running.
pub async fn start(path: &Path) -> Result<AgentHandle, AgentError> {
    let config = Config::load(path)?;
    let clients = Arc::new(build_clients(&config)?);
    let metrics = Arc::new(Metrics::new(&config.agent.name));
    let mut discovered = BTreeMap::new();
    for group in &config.groups {
        if let Targets::Discover(seed) = &group.targets {
            discovered.insert(group.name.clone(), discover(&clients, seed).await);
        }
    }
    let targets = all_targets(&config, &discovered);
    check_privilege(&clients, &targets, config.agent.allow_excess_privilege).await?;

    let listener = tokio::net::TcpListener::bind(config.agent.listen)
        .await
        .map_err(|source| AgentError::Listen {
            addr: config.agent.listen,
            source,
        })?;
    let listen = listener.local_addr().map_err(|source| AgentError::Listen {
        addr: config.agent.listen,
        source,
    })?;

    let outputs = Arc::new(Outputs::start(
        &config,
        &format!("http://{listen}/metrics"),
    )?);
    let fleet = match &config.fleet {
        Some(fleet_config) => {
            let names = config.groups.iter().map(|g| g.name.clone()).collect();
            let fleet = Fleet::start(fleet_config, names).await?;
            let owned = fleet.owned().borrow().clone();
            Some((fleet, owned))
        }
        None => None,
    };

    let (notices_tx, notices) = mpsc::channel(NOTICE_QUEUE_LEN);
    let seed = name_seed(&config.agent.name);
    let (host, handle) = ProbeHost::new(NodeId::new(1), seed, TokioClock::starting_now());
    tokio::spawn(host.with_observer(notices_tx).run());

    let infos: Infos = Arc::default();
    let fan_out = tokio::spawn(fan_out(
        notices,
        infos.clone(),
        metrics.clone(),
        outputs.clone(),
    ));
    let mut tasks = Vec::new();
    let (commands, commands_rx) = mpsc::channel(COMMAND_QUEUE_LEN);
    if let Some((fleet, _)) = &fleet {
        let mut owned = fleet.owned();
        let commands = commands.clone();
        tasks.push(
            tokio::spawn(async move {
                while owned.changed().await.is_ok() {
                    let now = owned.borrow_and_update().clone();
                    if commands.send(Command::Owned(now)).await.is_err() {
                        break;
                    }
                }
            })
            .abort_handle(),
        );
    }
    {
        let outputs = outputs.clone();
        let metrics = metrics.clone();
        let host = handle.clone();
        tasks.push(
            tokio::spawn(async move {
                let mut tick = tokio::time::interval(TICK_EVERY);
                loop {
                    tick.tick().await;
                    outputs.tick(now_unix_ms());
                    outputs.report(&metrics);
                    if let Ok(m) = host.metrics().await {
                        metrics.set_notices_dropped(m.notices_dropped);
                    }
                }
            })
            .abort_handle(),
        );
    }
    let reports = spawn_scheduler(
        &config.reports,
        config.history.path.clone(),
        config.agent.name.clone(),
    );
    let mut agent = Agent {
        config,
        clients,
        generation: 0,
        host: handle,
        infos,
        registered: BTreeMap::new(),
        discovered,
        metrics: metrics.clone(),
        outputs,
        fan_out,
        reports,
        fleet,
        next_host_name: 0,
    };
    agent.apply_probes().await?;
    metrics.reload(true, now_unix_s());

    let http = Router::new()
        .route("/metrics", get(metrics_route))
        .route("/-/healthy", get(|| async { "ok\n" }))
        .route("/-/reload", post(reload_route))
        .with_state(HttpState {
            metrics: metrics.clone(),
            commands: commands.clone(),
        });
    tasks.push(
        tokio::spawn(async move {
            if let Err(e) = axum::serve(listener, http).await {
                tracing::error!(error = %e, "the agent's HTTP listener failed");
            }
        })
        .abort_handle(),
    );
    if agent.config.agent.reload_on_change
        && let Some(task) = watch_file(&agent.config.path, commands.clone())
    {
        tasks.push(task);
    }
    {
        let commands = commands.clone();
        tasks.push(
            tokio::spawn(async move {
                let mut tick = tokio::time::interval(REDISCOVER_EVERY);
                tick.tick().await;
                loop {
                    tick.tick().await;
                    if commands.send(Command::Rediscover).await.is_err() {
                        break;
                    }
                }
            })
            .abort_handle(),
        );
    }
    tokio::spawn(agent.run(commands_rx));
    tracing::info!(%listen, "probe agent started");
    Ok(AgentHandle {
        listen,
        commands,
        metrics,
        tasks,
    })
}

/// Runs the agent of `path` until SIGINT or SIGTERM; SIGHUP reloads. What
/// `meshkit-probe --config` does.
///
/// # Errors
///
/// [`AgentError`] when it does not start.
pub async fn serve(path: &Path) -> Result<(), AgentError> {
    let agent = start(path).await?;
    let mut hup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()).map_err(
        |source| AgentError::Listen {
            addr: agent.listen,
            source,
        },
    )?;
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .map_err(|source| AgentError::Listen {
            addr: agent.listen,
            source,
        })?;
    loop {
        tokio::select! {
            _ = hup.recv() => {
                match agent.reload().await {
                    Ok(r) => tracing::info!(probes = r.probes, added = r.added, removed = r.removed, "SIGHUP: configuration reloaded"),
                    Err(e) => tracing::error!(error = %e, "SIGHUP: configuration refused; the running one stays"),
                }
            }
            _ = term.recv() => break,
            _ = tokio::signal::ctrl_c() => break,
        }
    }
    tracing::info!("probe agent stopping");
    agent.stop().await;
    Ok(())
}

fn now_unix_s() -> f64 {
    now_unix_ms() as f64 / 1000.0
}

/// A seed for the host's jitter from the agent's name (FNV-1a): a fixed name replays the
/// same schedule, two agents of a fleet do not run in lockstep.
fn name_seed(name: &str) -> u64 {
    name.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}

fn build_clients(config: &Config) -> Result<Clients, AgentError> {
    let timeout = config
        .groups
        .iter()
        .map(|g| g.timing.timeout)
        .max()
        .unwrap_or(Duration::from_secs(2));
    Ok(Clients::new(
        &config.credentials,
        config.agent.bind,
        timeout,
    )?)
}

/// Every member's control address (the `control` metadata each node publishes) from `seed`'s
/// `GET /meshkit/peers`; the seed alone if it cannot be read (a warning: the probes of the
/// seed show why).
async fn discover(clients: &Clients, seed: &str) -> Vec<String> {
    let fallback = || vec![seed.to_owned()];
    let response = match clients.observer.get(seed, "/meshkit/peers").await {
        Ok(r) if r.status == 200 => r,
        Ok(r) => {
            tracing::warn!(%seed, status = r.status, "discovery: the seed refused /meshkit/peers; probing the seed only");
            return fallback();
        }
        Err(e) => {
            tracing::warn!(%seed, error = %e, "discovery: the seed did not answer; probing the seed only");
            return fallback();
        }
    };
    let Ok(peers) = serde_json::from_str::<PeersResponse>(&response.body) else {
        tracing::warn!(%seed, "discovery: the seed's peers are not the documented shape; probing the seed only");
        return fallback();
    };
    let seed_host = seed.rsplit_once(':').map_or(seed, |(h, _)| h);
    let mut out: Vec<String> = Vec::new();
    for peer in peers.peers.iter().filter(|p| p.state != "left") {
        let Some(control) = peer.metadata.get("control") else {
            continue;
        };
        let Ok(mut addr) = control.parse::<SocketAddr>() else {
            continue;
        };
        if addr.ip().is_unspecified() {
            // A wildcard listener: reachable where the member's transport is, or the seed.
            let ip = peer
                .addr
                .as_deref()
                .and_then(|a| a.parse::<SocketAddr>().ok())
                .map(|a| a.ip())
                .or_else(|| seed_host.parse().ok());
            match ip {
                Some(ip) => addr.set_ip(ip),
                None => continue,
            }
        }
        let addr = addr.to_string();
        if !out.contains(&addr) && out.len() < crate::config::MAX_TARGETS_PER_GROUP {
            out.push(addr);
        }
    }
    if out.is_empty() { fallback() } else { out }
}

fn group_targets<'a>(
    group: &'a GroupConfig,
    discovered: &'a BTreeMap<String, Vec<String>>,
) -> &'a [String] {
    match &group.targets {
        Targets::Static(list) => list,
        Targets::Discover(_) => discovered.get(&group.name).map_or(&[], Vec::as_slice),
    }
}

fn all_targets(config: &Config, discovered: &BTreeMap<String, Vec<String>>) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for g in &config.groups {
        for t in group_targets(g, discovered) {
            if !out.contains(t) {
                out.push(t.clone());
            }
        }
    }
    out
}

/// Asks every target whether the agent's identity can operate; refuses unless `allow`.
async fn check_privilege(
    clients: &Arc<Clients>,
    targets: &[String],
    allow: bool,
) -> Result<(), AgentError> {
    let mut answered = 0_usize;
    for chunk in targets.chunks(PRIVILEGE_CHECKS_IN_FLIGHT) {
        let mut set = tokio::task::JoinSet::new();
        for target in chunk {
            let clients = clients.clone();
            let target = target.clone();
            set.spawn(async move {
                let answer = authz::operate_check(&clients.observer, &target).await;
                (target, answer)
            });
        }
        while let Some(joined) = set.join_next().await {
            let Ok((target, answer)) = joined else {
                continue;
            };
            match answer {
                Ok(OperateAnswer::Refused) => answered += 1,
                Ok(OperateAnswer::Answered { status, body }) => {
                    answered += 1;
                    if allow {
                        tracing::warn!(%target, status, "least privilege: the credentials can do more than mesh.observe; running anyway (agent.allow_excess_privilege = true)");
                    } else {
                        return Err(AgentError::ExcessPrivilege {
                            target,
                            status,
                            body,
                        });
                    }
                }
                Err(e) => {
                    tracing::warn!(%target, error = %e, "least privilege: the target did not answer; its authz probe checks again on every run");
                }
            }
        }
    }
    if answered == 0 && !targets.is_empty() {
        tracing::warn!("least privilege: no target answered; the authz probes check on every run");
    }
    Ok(())
}

/// A name the probe host accepts (`a-z 0-9 . _ -`, at most 64 bytes) for `display`.
fn host_name_of(display: &str) -> String {
    display
        .bytes()
        .map(|b| match b {
            b'a'..=b'z' | b'0'..=b'9' | b'.' | b'_' | b'-' => b as char,
            b'A'..=b'Z' => b.to_ascii_lowercase() as char,
            b'/' | b'@' => '.',
            _ => '_',
        })
        .collect()
}

impl Agent {
    async fn run(mut self, mut commands: mpsc::Receiver<Command>) {
        let mut stopped = None;
        while let Some(command) = commands.recv().await {
            match command {
                Command::Reload(reply) => {
                    let outcome = self.reload().await;
                    match &outcome {
                        Ok(r) => tracing::info!(
                            probes = r.probes,
                            added = r.added,
                            removed = r.removed,
                            "configuration applied"
                        ),
                        Err(e) => {
                            tracing::error!(error = %e, "configuration refused; the running one stays")
                        }
                    }
                    let _ = reply.send(outcome);
                }
                Command::Rediscover => {
                    if self.rediscover().await
                        && let Err(e) = self.apply_probes().await
                    {
                        tracing::error!(error = %e, "rediscovered targets not applied");
                    }
                }
                Command::Owned(now) => {
                    if let Some((_, owned)) = &mut self.fleet {
                        tracing::info!(groups = ?now, "fleet: the groups this agent owns changed");
                        *owned = now;
                        if let Err(e) = self.apply_probes().await {
                            tracing::error!(error = %e, "fleet: owned groups not applied");
                        }
                    }
                }
                Command::Probes(reply) => {
                    let _ = reply.send(self.registered.keys().cloned().collect());
                }
                Command::Stop(reply) => {
                    stopped = Some(reply);
                    break;
                }
            }
        }
        self.shutdown().await;
        if let Some(reply) = stopped {
            let _ = reply.send(());
        }
    }

    /// Stops every probe, lets the last results reach the outputs, closes them, hands the
    /// fleet's groups over.
    async fn shutdown(mut self) {
        for r in std::mem::take(&mut self.registered).into_values() {
            let _ = self.host.remove(&r.host_name).await;
        }
        self.clients.close().await;
        let Self {
            host,
            outputs,
            fan_out,
            fleet,
            reports,
            ..
        } = self;
        reports.stop();
        // The host ends with its last handle; then the fan-out drains and ends.
        drop(host);
        if tokio::time::timeout(STOP_DRAIN_WAIT, fan_out)
            .await
            .is_err()
        {
            tracing::warn!("the fan-out did not drain within {STOP_DRAIN_WAIT:?}");
        }
        match Arc::try_unwrap(outputs) {
            Ok(outputs) => outputs.close().await,
            Err(_) => tracing::warn!("the history and notifier were still in use at stop"),
        }
        if let Some((fleet, _)) = fleet {
            fleet.stop().await;
        }
    }

    /// Reads discovered groups again; whether any target list changed.
    async fn rediscover(&mut self) -> bool {
        let mut changed = false;
        for group in &self.config.groups {
            if let Targets::Discover(seed) = &group.targets {
                let now = discover(&self.clients, seed).await;
                if self.discovered.get(&group.name) != Some(&now) {
                    changed = true;
                    self.discovered.insert(group.name.clone(), now);
                }
            }
        }
        changed
    }

    async fn reload(&mut self) -> Result<Reloaded, String> {
        let outcome = self.try_reload().await;
        self.metrics.reload(outcome.is_ok(), now_unix_s());
        outcome.map_err(|e| e.to_string())
    }

    async fn try_reload(&mut self) -> Result<Reloaded, AgentError> {
        let mut config = Config::load(&self.config.path)?;
        if config.fleet != self.config.fleet {
            tracing::warn!("[fleet] changes at the next restart; the running fleet stays");
            config.fleet.clone_from(&self.config.fleet);
        }
        if config.agent.listen != self.config.agent.listen {
            tracing::warn!(old = %self.config.agent.listen, new = %config.agent.listen, "agent.listen changes at the next restart");
        }
        let new_clients = config.credentials != self.config.credentials
            || config.agent.bind != self.config.agent.bind;
        let clients = if new_clients {
            Arc::new(build_clients(&config)?)
        } else {
            self.clients.clone()
        };
        let mut discovered = BTreeMap::new();
        for group in &config.groups {
            if let Targets::Discover(seed) = &group.targets {
                discovered.insert(group.name.clone(), discover(&clients, seed).await);
            }
        }
        // New credentials are checked everywhere, old ones on targets they have not seen.
        let old_targets = all_targets(&self.config, &self.discovered);
        let targets: Vec<String> = all_targets(&config, &discovered)
            .into_iter()
            .filter(|t| new_clients || !old_targets.contains(t))
            .collect();
        check_privilege(&clients, &targets, config.agent.allow_excess_privilege).await?;

        // Valid: apply.
        let kept_listen = self.config.agent.listen;
        let config_reports_changed = config.reports != self.config.reports;
        if config.history.path != self.config.history.path {
            tracing::warn!("history.path changes at the next restart; the running history stays");
            config.history.path.clone_from(&self.config.history.path);
        }
        self.config = config;
        self.config.agent.listen = kept_listen;
        if new_clients {
            let old = std::mem::replace(&mut self.clients, clients);
            self.generation += 1;
            // Probes of the old clients are replaced below (their fingerprints changed).
            tokio::spawn(async move { old.close().await });
        }
        self.discovered = discovered;
        self.outputs.reconfigure(&self.config);
        if config_reports_changed {
            self.reports = spawn_scheduler(
                &self.config.reports,
                self.config.history.path.clone(),
                self.config.agent.name.clone(),
            );
        }
        if let Some((fleet, _)) = &self.fleet {
            fleet.set_groups(self.config.groups.iter().map(|g| g.name.clone()).collect());
        }
        self.apply_probes().await
    }

    /// Registers what the configuration asks and is not running, removes what runs and is no
    /// longer asked (or asked with other settings).
    async fn apply_probes(&mut self) -> Result<Reloaded, AgentError> {
        let mut wanted: BTreeMap<String, (usize, String, probes::Built)> = BTreeMap::new();
        for (gi, group) in self.config.groups.iter().enumerate() {
            if let Some((_, owned)) = &self.fleet
                && !owned.contains(&group.name)
            {
                continue;
            }
            let fingerprint = format!(
                "{}|{}|{}|{:?}|{:?}|{:?}|{:?}",
                self.generation,
                group.cluster,
                group.namespace,
                group.timing,
                group.api,
                group.watch,
                group.transport
            );
            for target in group_targets(group, &self.discovered) {
                for built in probes::build(group, target, &self.clients) {
                    wanted.insert(built.name.clone(), (gi, fingerprint.clone(), built));
                }
            }
        }
        let mut removed = 0;
        let stale: Vec<String> = self
            .registered
            .iter()
            .filter(|(name, r)| {
                wanted
                    .get(*name)
                    .is_none_or(|(_, f, _)| *f != r.fingerprint)
            })
            .map(|(name, _)| name.clone())
            .collect();
        for name in stale {
            if let Some(r) = self.registered.remove(&name) {
                let _ = self.host.remove(&r.host_name).await;
                write_infos(&self.infos).remove(&r.host_name);
                self.metrics
                    .remove(&r.info.key, r.info.kind, &r.info.target);
                self.outputs.removed(&r.info.key, now_unix_ms());
                removed += 1;
            }
        }
        let mut added = 0;
        for (name, (gi, fingerprint, built)) in wanted {
            if self.registered.contains_key(&name) {
                continue;
            }
            let host_name = self.host_name(&name);
            let group = &self.config.groups[gi];
            let spec = spec_of(group, &host_name).map_err(|source| AgentError::Spec {
                name: name.clone(),
                source,
            })?;
            let info = Arc::new(ProbeInfo {
                key: ProbeKey {
                    cluster: group.cluster.clone(),
                    namespace: group.namespace.clone(),
                    group: group.name.clone(),
                    probe: name.clone(),
                },
                kind: built.kind.as_str(),
                target: built.target.clone(),
                alert_on_latency: group.timing.alert_on_latency,
                note: built.note.clone(),
            });
            // Known to the fan-out before its first result can arrive.
            write_infos(&self.infos).insert(host_name.clone(), info.clone());
            self.metrics.state(
                &info.key,
                info.kind,
                &info.target,
                meshkit::diag::probe::ProbeState::Unknown,
            );
            self.metrics.alert_latency(
                &info.key,
                info.kind,
                &info.target,
                group
                    .timing
                    .latency_threshold
                    .filter(|_| group.timing.alert_on_latency),
            );
            if let Err(source) = self.host.register_async(spec, built.probe).await {
                write_infos(&self.infos).remove(&host_name);
                self.metrics.remove(&info.key, info.kind, &info.target);
                return Err(AgentError::Register { name, source });
            }
            self.registered.insert(
                name,
                Registered {
                    host_name,
                    fingerprint,
                    info,
                },
            );
            added += 1;
        }
        self.metrics.set_probes(self.registered.len());
        Ok(Reloaded {
            probes: self.registered.len(),
            added,
            removed,
        })
    }

    /// A host name for `display` not taken by another probe.
    fn host_name(&mut self, display: &str) -> String {
        let taken = |n: &str| self.registered.values().any(|r| r.host_name == n);
        let name = host_name_of(display);
        if name.len() <= meshkit::diag::probe::MAX_TAG_BYTES && !taken(&name) {
            return name;
        }
        loop {
            self.next_host_name += 1;
            let name = format!("probe-{}", self.next_host_name);
            if !taken(&name) {
                return name;
            }
        }
    }
}

fn write_infos(infos: &Infos) -> std::sync::RwLockWriteGuard<'_, BTreeMap<String, Arc<ProbeInfo>>> {
    // Nothing panics while holding it.
    infos
        .write()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// The core's spec of a probe of `group` named `host_name`.
fn spec_of(group: &GroupConfig, host_name: &str) -> Result<ProbeSpec, ProbeSpecError> {
    let t = &group.timing;
    let mut spec = ProbeSpec::new(host_name)?
        .with_timing(t.interval, t.timeout)?
        .with_thresholds(t.failure_threshold, t.success_threshold)?;
    if let Some(latency) = t.latency_threshold {
        spec = spec.with_degraded_latency(latency)?;
    }
    let mut tags = ProbeTags {
        cluster: Some(group.cluster.clone()),
        namespace: Some(group.namespace.clone()),
        ..ProbeTags::default()
    };
    tags.labels.insert("group".to_owned(), group.name.clone());
    spec.with_tags(tags)
}

/// Turns every notice into records for the metrics and the sinks.
async fn fan_out(
    mut notices: mpsc::Receiver<ProbeNotice>,
    infos: Infos,
    metrics: Arc<Metrics>,
    outputs: Arc<Outputs>,
) {
    while let Some(notice) = notices.recv().await {
        let (name, info) = match &notice {
            ProbeNotice::Finished { probe, .. } | ProbeNotice::StateChanged { probe, .. } => {
                let info = infos
                    .read()
                    .unwrap_or_else(std::sync::PoisonError::into_inner)
                    .get(&probe.name)
                    .cloned();
                (probe.name.clone(), info)
            }
            _ => continue,
        };
        // A probe removed by a reload can still report its last run: dropped.
        let Some(info) = info else {
            tracing::debug!(probe = %name, "a notice of a probe no longer registered");
            continue;
        };
        match notice {
            ProbeNotice::Finished { record, error, .. } => {
                let run = RunRecord {
                    key: info.key.clone(),
                    kind: info.kind.to_owned(),
                    target: info.target.clone(),
                    at_unix_ms: now_unix_ms(),
                    result: record.result,
                    latency: record.latency,
                    http_version: info.note.protocol(),
                    error,
                };
                metrics.run(&run, info.note.cert_expiry_unix_s());
                outputs.run(&run);
            }
            ProbeNotice::StateChanged {
                from, to, error, ..
            } => {
                let change = StateChange {
                    key: info.key.clone(),
                    kind: info.kind.to_owned(),
                    target: info.target.clone(),
                    from,
                    to,
                    at_unix_ms: now_unix_ms(),
                    last_error: error,
                    alert_on_latency: info.alert_on_latency,
                };
                metrics.state_change(&info.key, info.kind, &info.target, to);
                outputs.state(&change);
            }
            _ => {}
        }
    }
}

#[derive(Clone)]
struct HttpState {
    metrics: Arc<Metrics>,
    commands: mpsc::Sender<Command>,
}

async fn metrics_route(State(state): State<HttpState>) -> Response {
    (
        [(header::CONTENT_TYPE, crate::metrics::CONTENT_TYPE)],
        state.metrics.render(),
    )
        .into_response()
}

async fn reload_route(State(state): State<HttpState>) -> Response {
    match reload_via(&state.commands).await {
        Ok(r) => (
            StatusCode::OK,
            format!(
                "reloaded: {} probes ({} started, {} stopped)\n",
                r.probes, r.added, r.removed
            ),
        )
            .into_response(),
        Err(e) => (
            StatusCode::BAD_REQUEST,
            format!("refused, the running configuration stays: {e}\n"),
        )
            .into_response(),
    }
}

/// Watches the config file's directory (an editor replaces the file rather than writing it)
/// and asks for a reload once a burst of changes to the file has settled.
fn watch_file(path: &Path, commands: mpsc::Sender<Command>) -> Option<tokio::task::AbortHandle> {
    use notify::Watcher as _;
    let file: PathBuf = path.file_name()?.into();
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_owned(),
        _ => PathBuf::from("."),
    };
    let (tx, mut rx) = mpsc::unbounded_channel::<notify::Result<notify::Event>>();
    let mut watcher = match notify::recommended_watcher(move |event| {
        let _ = tx.send(event);
    }) {
        Ok(w) => w,
        Err(e) => {
            tracing::warn!(error = %e, "no file watch: reload with SIGHUP or POST /-/reload");
            return None;
        }
    };
    if let Err(e) = watcher.watch(&dir, notify::RecursiveMode::NonRecursive) {
        tracing::warn!(dir = %dir.display(), error = %e, "no file watch: reload with SIGHUP or POST /-/reload");
        return None;
    }
    let task = tokio::spawn(async move {
        // The watcher lives as long as the task.
        let _watcher = watcher;
        let touches = |event: &notify::Result<notify::Event>| {
            event.as_ref().is_ok_and(|e| {
                !e.kind.is_access()
                    && e.paths
                        .iter()
                        .any(|p| p.file_name() == Some(file.as_os_str()))
            })
        };
        while let Some(event) = rx.recv().await {
            if !touches(&event) {
                continue;
            }
            // Let the burst settle (write, rename, chmod), then reload once.
            tokio::time::sleep(FILE_SETTLE).await;
            while rx.try_recv().is_ok() {}
            let (reply, answer) = oneshot::channel();
            if commands.send(Command::Reload(reply)).await.is_err() {
                break;
            }
            let _ = answer.await;
        }
    });
    Some(task.abort_handle())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_names_are_what_the_core_accepts() {
        let name = host_name_of("core/api-peers@127.0.0.1:8001");
        assert_eq!(name, "core.api-peers.127.0.0.1_8001");
        ProbeSpec::new(&name).unwrap();
    }
}
