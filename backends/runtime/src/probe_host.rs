//! Health probes on a real node: the core's [`ProbeScheduler`] driven on the node's clock, its
//! asynchronous runs as tokio tasks, their results fed back, and what `GET /control/probes` and
//! the `mesh_probe_*` metrics show.
//!
//! The scheduler decides everything a probe's state means (see [`meshkit::diag::probe`]); the
//! host only does its I/O. It is one task, shaped like the driver: inputs in (commands from
//! [`ProbeHandle`]s, finished runs, the timer), the scheduler's actions out (the runs that came
//! due together spawned as one task, each run bounded by its spec's timeout), its events
//! logged, one `tokio::time::Sleep` re-armed to [`ProbeScheduler::poll_timeout`]. Time comes
//! from a [`Clock`], so a test on tokio's paused time runs the real host on virtual time.
//!
//! # Wakeups
//!
//! The host's timer wakes it at most once per *slack* (1% of the shortest interval among its
//! probes, at most [`MAX_WAKE_SLACK`]): what falls due within the slack after a wakeup waits
//! for the next one and is started there with the others. So a run starts at most 1% of its
//! interval late (the scheduler counts the next interval from the late start, as for any late
//! host), and 1,000 probes at 1 s cost about 100 wakeups and 100 task spawns a second instead of
//! 1,000 of each: the wakeups (a thread parked and woken, the timer re-armed) and the spawns
//! (a task scheduled on another worker, its result sent back across threads) were what the
//! host cost (docs/benchmarks.md, "Probe scheduler overhead").
//!
//! # Registering a probe
//!
//! Registration is open: a service implements [`AsyncProbe`] for a check of its own (an async
//! function that passes or fails with a message) and calls [`ProbeHandle::register_async`];
//! a check of state it already holds can implement the core's synchronous
//! [`Probe`] and use [`ProbeHandle::register`]. Nothing in MeshKit
//! lists the types. The node's own probes (`meshkit_node::probes`) are registered the same way.
//!
//! # Bounds
//!
//! At most [`MAX_PROBES`] probes per host (the scheduler's own bound), at most one run per
//! probe in flight (a spec's timeout never exceeds its interval), so at most `MAX_PROBES`
//! tasks and `MAX_PROBES` queued results. A failure message is cut to [`MAX_ERROR_BYTES`]. The
//! metric label `probe` takes at most `MAX_PROBES` values per node; `result` and `state` four
//! each.
//!
//! # Cost
//!
//! Per wakeup the host does one scheduler step, one task spawn for the runs due and, per group
//! of results ready together, one channel send; the benchmark `probe_host_overhead`
//! (docs/benchmarks.md) measures 1,000 probes at 1 s.

use std::any::Any;
use std::collections::BTreeMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use futures_util::StreamExt as _;
use futures_util::stream::FuturesUnordered;
use meshkit::diag::probe::{
    MAX_PROBES, Probe, ProbeAction, ProbeEvent, ProbeId, ProbeOutcome, ProbeRecord, ProbeResult,
    ProbeScheduler, ProbeSpec, ProbeState, ProbeStatus, ProbeTags, RegisterError, RunId, Start,
};
use meshkit::{Duration, Instant, NodeId};
use meshkit_api::probes::{
    MAX_RESULTS_SHOWN, ProbeCounts, ProbeJson, ProbeResultJson, ProbesResponse, TagFilter,
};
use meshkit_net::clock::Clock;
use thiserror::Error;
use tokio::sync::{mpsc, oneshot};

use crate::histogram::DurationHistogram;

/// Commands queued for the host before [`ProbeHandle`] calls wait.
pub const COMMAND_QUEUE_LEN: usize = 64;
/// The longest failure message kept per probe, in bytes.
pub const MAX_ERROR_BYTES: usize = 256;
/// Upper bounds of the `mesh_probe_duration_seconds` buckets: a loopback check takes well under
/// a millisecond, a remote one tens of milliseconds, a timeout up to the interval.
pub const DURATION_BOUNDS: [Duration; 12] = [
    Duration::from_micros(100),
    Duration::from_micros(500),
    Duration::from_millis(1),
    Duration::from_millis(5),
    Duration::from_millis(10),
    Duration::from_millis(25),
    Duration::from_millis(50),
    Duration::from_millis(100),
    Duration::from_millis(250),
    Duration::from_millis(500),
    Duration::from_secs(1),
    Duration::from_secs(5),
];
/// How long the host's timer waits with no probe registered.
const IDLE_WAKE: Duration = Duration::from_secs(3600);
/// The longest the host lets a due run wait for the next wakeup (see "Wakeups" above): the
/// slack is 1% of the shortest interval, at most this.
pub const MAX_WAKE_SLACK: Duration = Duration::from_millis(10);
/// The slack's share of the shortest interval, in percent.
const WAKE_SLACK_PERCENT: u32 = 1;
/// The duration histogram of one probe.
pub type ProbeDurations = DurationHistogram<13>;

/// Why a check failed, in the probe's words (shown as `last_error`).
#[derive(Clone, Debug, Error, PartialEq, Eq)]
#[error("{0}")]
pub struct ProbeFailure(String);

impl ProbeFailure {
    /// A failure saying `why` (cut to [`MAX_ERROR_BYTES`]).
    pub fn new(why: impl std::fmt::Display) -> Self {
        let mut text = why.to_string();
        if text.len() > MAX_ERROR_BYTES {
            let mut cut = MAX_ERROR_BYTES;
            while !text.is_char_boundary(cut) {
                cut -= 1;
            }
            text.truncate(cut);
        }
        Self(text)
    }

    /// The message.
    pub fn message(&self) -> &str {
        &self.0
    }
}

/// What one asynchronous check returns.
pub type CheckFuture = Pin<Box<dyn Future<Output = Result<(), ProbeFailure>> + Send + 'static>>;

/// A probe type whose check needs I/O. Implement it for a check of your own and register it
/// with [`ProbeHandle::register_async`]: the host calls [`check`](Self::check) when a run is
/// due, runs the future in a task (shared with the other runs due at the same wakeup, so a
/// check must not block its thread), and drops it at the spec's timeout (a timeout result).
pub trait AsyncProbe: Send + Sync + 'static {
    /// The type's name, such as `"http"` or `"orders-db"`; shown beside each probe's name.
    fn kind(&self) -> &str;

    /// One run: `Ok` passes, `Err` fails with its message. The future owns what it needs
    /// (clone an `Arc` in); it is dropped unfinished at the timeout.
    fn check(&self) -> CheckFuture;
}

/// What the host keeps beside the scheduler for one probe: the duration histogram and the last
/// failure's message. Shared between the host and its [`Hosted`] wrapper (one task uses both:
/// the lock is never contended).
#[derive(Debug, Default)]
struct Extra {
    last_error: Option<String>,
    durations: ProbeDurations,
}

type Shared = Arc<Mutex<Extra>>;

fn lock(shared: &Shared) -> MutexGuard<'_, Extra> {
    // Nothing panics while holding it; a poisoned lock still holds whole counts.
    shared.lock().unwrap_or_else(PoisonError::into_inner)
}

/// The check of a registered probe.
enum Check {
    /// The core's synchronous probe: it answers in `start`.
    Sync(Box<dyn Probe>),
    /// An [`AsyncProbe`]: every run is pending, and the host runs the check.
    Async(Arc<dyn AsyncProbe>),
}

/// Every probe the host registers, as the core sees it: it sees each synchronous answer and
/// each timeout as the scheduler records them, so the host's histograms cost nothing per step
/// beyond the runs themselves (no scan of every probe).
struct Hosted {
    kind: String,
    check: Check,
    timeout: Duration,
    shared: Shared,
}

impl std::fmt::Debug for Hosted {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Hosted")
            .field("kind", &self.kind)
            .finish_non_exhaustive()
    }
}

impl Probe for Hosted {
    fn kind(&self) -> &str {
        &self.kind
    }

    fn start(&mut self, now: Instant, deadline: Instant) -> Start {
        match &mut self.check {
            Check::Sync(probe) => {
                let start = probe.start(now, deadline);
                if let Start::Done { outcome, latency } = start {
                    let mut extra = lock(&self.shared);
                    // The scheduler records the latency capped at the timeout.
                    extra
                        .durations
                        .record(&DURATION_BOUNDS, latency.min(self.timeout));
                    extra.last_error = match outcome {
                        ProbeOutcome::Pass => None,
                        ProbeOutcome::Fail => Some("the check failed".to_owned()),
                    };
                }
                start
            }
            Check::Async(_) => Start::Pending,
        }
    }

    fn cancel(&mut self) {
        // The scheduler cancels a run at its deadline (a timeout) or when the probe is
        // removed (then nobody reads this any more).
        if let Check::Sync(probe) = &mut self.check {
            probe.cancel();
        }
        let mut extra = lock(&self.shared);
        extra.durations.record(&DURATION_BOUNDS, self.timeout);
        extra.last_error = Some(format!("no answer within the timeout ({:?})", self.timeout));
    }
}

/// Why a probe was not registered. Nothing was registered; always the caller's fault, except
/// [`ProbeRegisterError::Stopped`].
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum ProbeRegisterError {
    /// Another probe on this node has the name.
    #[error("a probe named {0:?} is already registered on this node: choose another name")]
    DuplicateName(String),
    /// The node holds its maximum of probes.
    #[error("this node holds its maximum of {0} probes: remove one first")]
    Full(usize),
    /// The host has stopped (the node is shutting down).
    #[error(transparent)]
    Stopped(#[from] ProbeHostStopped),
}

/// The probe host has stopped: the node is shutting down, or its host was never started.
#[derive(Clone, Copy, Debug, Error, PartialEq, Eq)]
#[error("the node's probe host has stopped")]
pub struct ProbeHostStopped;

/// What the host tells its observer ([`ProbeHost::with_observer`]): every finished run and
/// every state change, in the order the scheduler recorded them.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum ProbeNotice {
    /// A run ended.
    Finished {
        /// Which probe, and what it is.
        probe: NoticeProbe,
        /// The result as the scheduler recorded it (pass, slow, fail, timeout; its latency).
        record: ProbeRecord,
        /// Why it failed, in the probe's words.
        error: Option<String>,
    },
    /// A probe's state changed.
    StateChanged {
        /// Which probe, and what it is.
        probe: NoticeProbe,
        /// The state before.
        from: ProbeState,
        /// The state now.
        to: ProbeState,
        /// The last failure's message, if a failure changed it.
        error: Option<String>,
    },
}

/// The probe a [`ProbeNotice`] is about.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NoticeProbe {
    /// Its name.
    pub name: String,
    /// Its type.
    pub kind: String,
    /// Its tags.
    pub tags: ProbeTags,
}

/// One probe's figures for the `mesh_probe_*` metrics.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProbeMetrics {
    /// Its name (the `probe` label).
    pub name: String,
    /// Its state now.
    pub state: ProbeState,
    /// Results of each kind since registration: pass, slow, fail, timeout.
    pub counts: [u64; 4],
    /// Every result's duration.
    pub durations: ProbeDurations,
}

/// What the host knows of every probe, for the metrics; `dropped_events` counts state changes
/// the host did not drain in time (always 0 unless the host stalls).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ProbesMetrics {
    /// One entry per probe, in registration order.
    pub probes: Vec<ProbeMetrics>,
    /// Notices the observer's full queue refused (0 without an observer).
    pub notices_dropped: u64,
}

enum Command {
    Register {
        spec: ProbeSpec,
        kind: String,
        check: Check,
        reply: oneshot::Sender<Result<ProbeId, ProbeRegisterError>>,
    },
    Remove {
        name: String,
        reply: oneshot::Sender<bool>,
    },
    List {
        filters: Vec<TagFilter>,
        reply: oneshot::Sender<ProbesResponse>,
    },
    Metrics(oneshot::Sender<ProbesMetrics>),
}

/// A cheap, cloneable way to register probes on a running [`ProbeHost`] and read them.
#[derive(Clone, Debug)]
pub struct ProbeHandle {
    node: NodeId,
    commands: mpsc::Sender<Command>,
}

impl ProbeHandle {
    /// The node the host runs on.
    pub fn node(&self) -> NodeId {
        self.node
    }

    /// Registers an asynchronous probe under `spec`: its first run is due within one interval.
    ///
    /// # Errors
    ///
    /// [`ProbeRegisterError`]; nothing was registered.
    pub async fn register_async(
        &self,
        spec: ProbeSpec,
        probe: impl AsyncProbe,
    ) -> Result<ProbeId, ProbeRegisterError> {
        let kind = probe.kind().to_owned();
        self.register_inner(spec, kind, Check::Async(Arc::new(probe)))
            .await
    }

    /// Registers a synchronous probe (the core's [`Probe`], answering [`Start::Done`]) under
    /// `spec`. A run it leaves pending has no check for the host to run: it fails, saying so.
    ///
    /// # Errors
    ///
    /// [`ProbeRegisterError`]; nothing was registered.
    pub async fn register(
        &self,
        spec: ProbeSpec,
        probe: Box<dyn Probe>,
    ) -> Result<ProbeId, ProbeRegisterError> {
        let kind = probe.kind().to_owned();
        self.register_inner(spec, kind, Check::Sync(probe)).await
    }

    async fn register_inner(
        &self,
        spec: ProbeSpec,
        kind: String,
        check: Check,
    ) -> Result<ProbeId, ProbeRegisterError> {
        let (reply, rx) = oneshot::channel();
        self.send(Command::Register {
            spec,
            kind,
            check,
            reply,
        })
        .await?;
        rx.await.map_err(|_| ProbeHostStopped)?
    }

    /// Removes the probe named `name` (its run in flight is dropped); `false` if none is.
    ///
    /// # Errors
    ///
    /// [`ProbeHostStopped`].
    pub async fn remove(&self, name: &str) -> Result<bool, ProbeHostStopped> {
        let (reply, rx) = oneshot::channel();
        self.send(Command::Remove {
            name: name.to_owned(),
            reply,
        })
        .await?;
        rx.await.map_err(|_| ProbeHostStopped)
    }

    /// Every probe whose tags match all of `filters`, as `GET /control/probes` shows them.
    ///
    /// # Errors
    ///
    /// [`ProbeHostStopped`].
    pub async fn list(&self, filters: Vec<TagFilter>) -> Result<ProbesResponse, ProbeHostStopped> {
        let (reply, rx) = oneshot::channel();
        self.send(Command::List { filters, reply }).await?;
        rx.await.map_err(|_| ProbeHostStopped)
    }

    /// The figures of the `mesh_probe_*` metrics.
    ///
    /// # Errors
    ///
    /// [`ProbeHostStopped`].
    pub async fn metrics(&self) -> Result<ProbesMetrics, ProbeHostStopped> {
        let (reply, rx) = oneshot::channel();
        self.send(Command::Metrics(reply)).await?;
        rx.await.map_err(|_| ProbeHostStopped)
    }

    async fn send(&self, command: Command) -> Result<(), ProbeHostStopped> {
        self.commands
            .send(command)
            .await
            .map_err(|_| ProbeHostStopped)
    }
}

/// A finished run, as its task reports it.
struct Finished {
    run: RunId,
    probe: ProbeId,
    outcome: Result<(), ProbeFailure>,
}

/// The probe host of one node: spawn [`ProbeHost::run`] on a tokio runtime. It ends when every
/// [`ProbeHandle`] is dropped.
pub struct ProbeHost<C> {
    node: NodeId,
    scheduler: ProbeScheduler,
    clock: C,
    extras: BTreeMap<ProbeId, Shared>,
    commands: mpsc::Receiver<Command>,
    finished_tx: mpsc::UnboundedSender<Vec<Finished>>,
    finished: mpsc::UnboundedReceiver<Vec<Finished>>,
    observer: Option<mpsc::Sender<ProbeNotice>>,
    notices_dropped: u64,
    /// The runs the current step starts, spawned together at its end.
    batch: Vec<Job>,
    /// The wake slack (see "Wakeups"): 1% of the shortest interval, at most
    /// [`MAX_WAKE_SLACK`]; recomputed when a probe comes or goes.
    slack: Duration,
    /// When the scheduler last settled what was due.
    settled: Option<Instant>,
}

/// One asynchronous run to start.
struct Job {
    run: RunId,
    probe: ProbeId,
    timeout: Duration,
    body: Arc<dyn AsyncProbe>,
}

impl<C> std::fmt::Debug for ProbeHost<C> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ProbeHost")
            .field("node", &self.node)
            .field("probes", &self.scheduler.len())
            .finish_non_exhaustive()
    }
}

impl<C: Clock> ProbeHost<C> {
    /// A host for node `node` with no probes, its jitter from `seed` (derive it from the
    /// node's seed, so a fixed seed replays the schedule), and the first handle to it.
    pub fn new(node: NodeId, seed: u64, clock: C) -> (Self, ProbeHandle) {
        let (commands_tx, commands) = mpsc::channel(COMMAND_QUEUE_LEN);
        // At most one run per probe is in flight, so at most MAX_PROBES results wait here.
        let (finished_tx, finished) = mpsc::unbounded_channel();
        let slack = MAX_WAKE_SLACK;
        let host = Self {
            node,
            scheduler: ProbeScheduler::new(seed),
            clock,
            extras: BTreeMap::new(),
            commands,
            finished_tx,
            finished,
            observer: None,
            notices_dropped: 0,
            batch: Vec::new(),
            slack,
            settled: None,
        };
        (
            host,
            ProbeHandle {
                node,
                commands: commands_tx,
            },
        )
    }

    /// Tells `observer` of every finished run and every state change (a probe agent's history,
    /// alerts and per-run metrics). The host never waits for it: a notice its full queue
    /// refuses is dropped and counted ([`ProbesMetrics::notices_dropped`]); size the queue for
    /// the probes' run rate.
    #[must_use]
    pub fn with_observer(mut self, observer: mpsc::Sender<ProbeNotice>) -> Self {
        self.scheduler.set_run_events(true);
        self.observer = Some(observer);
        self
    }

    /// Runs the host until every handle is dropped.
    pub async fn run(mut self) {
        // One timer, reset only when the scheduler's next deadline moves (as the driver does):
        // a new timer per wakeup costs a timer-wheel registration each time.
        let mut timer = Box::pin(tokio::time::sleep(IDLE_WAKE));
        let mut armed: Option<Instant> = None;
        loop {
            self.step();
            // Nothing earlier than one slack after the last settling (see "Wakeups").
            let next = self.scheduler.poll_timeout().map(|at| match self.settled {
                Some(settled) => at.max(settled + self.slack),
                None => at,
            });
            if next != armed {
                armed = next;
                let now = self.clock.now();
                let wait = next.map_or(IDLE_WAKE, |at| at.saturating_duration_since(now));
                timer.as_mut().reset(tokio::time::Instant::now() + wait);
            }
            tokio::select! {
                command = self.commands.recv() => match command {
                    Some(command) => self.command(command),
                    None => break,
                },
                Some(done) = self.finished.recv() => {
                    done.into_iter().for_each(|d| self.report(d));
                    // Every result already waiting, in the same step.
                    while let Ok(done) = self.finished.try_recv() {
                        done.into_iter().for_each(|d| self.report(d));
                    }
                }
                () = &mut timer => {
                    // Fired: the next round re-arms it even at the same deadline.
                    armed = None;
                }
            }
        }
    }

    /// Settles what is due and starts the runs the scheduler asks for.
    fn step(&mut self) {
        let now = self.clock.now();
        let due = self.scheduler.poll_timeout().is_some_and(|at| at <= now);
        // Also when a command or a result woke the host: what is due waits for the slack, so
        // it starts with the rest of its batch instead of as a batch of one.
        let rested = self.settled.is_none_or(|at| now >= at + self.slack);
        if due && rested {
            self.scheduler.handle_timeout(now);
            self.settled = Some(now);
        }
        while let Some(action) = self.scheduler.poll_action() {
            if let ProbeAction::Run {
                run,
                probe,
                deadline,
            } = action
            {
                self.start(run, probe, deadline, now);
            }
        }
        self.spawn_batch();
        while let Some(event) = self.scheduler.poll_event() {
            match event {
                ProbeEvent::StateChanged {
                    probe, from, to, ..
                } => {
                    let name = self
                        .scheduler
                        .status(probe)
                        .map(|s| s.spec().name().to_owned())
                        .unwrap_or_default();
                    if to == ProbeState::Failing {
                        tracing::warn!(probe = %name, %from, %to, "probe state changed");
                    } else {
                        tracing::info!(probe = %name, %from, %to, "probe state changed");
                    }
                    self.notify(probe, |probe, error| ProbeNotice::StateChanged {
                        probe,
                        from,
                        to,
                        error,
                    });
                }
                ProbeEvent::Finished { probe, record } => {
                    self.notify(probe, |probe, error| ProbeNotice::Finished {
                        probe,
                        record,
                        error,
                    });
                }
                _ => {}
            }
        }
    }

    /// Sends the observer (if any) the notice `make` builds for `probe`, with its last error.
    fn notify(
        &mut self,
        probe: ProbeId,
        make: impl FnOnce(NoticeProbe, Option<String>) -> ProbeNotice,
    ) {
        let Some(observer) = &self.observer else {
            return;
        };
        let Some(status) = self.scheduler.status(probe) else {
            return;
        };
        let about = NoticeProbe {
            name: status.spec().name().to_owned(),
            kind: status.kind().to_owned(),
            tags: status.spec().tags().clone(),
        };
        let error = self
            .extras
            .get(&probe)
            .and_then(|e| lock(e).last_error.clone());
        if observer.try_send(make(about, error)).is_err() {
            self.notices_dropped += 1;
        }
    }

    fn start(&mut self, run: RunId, probe: ProbeId, deadline: Instant, now: Instant) {
        let check = self
            .scheduler
            .probe_mut(probe)
            .and_then(|p| (p as &mut dyn Any).downcast_mut::<Hosted>())
            .and_then(|h| match &h.check {
                Check::Async(body) => Some(body.clone()),
                Check::Sync(_) => None,
            });
        let Some(body) = check else {
            // A synchronous probe that left its run pending: there is nothing to run.
            if self.scheduler.report(run, ProbeOutcome::Fail, now).is_ok() {
                self.record(
                    probe,
                    Some("the probe left its run pending and has no asynchronous check".to_owned()),
                );
            }
            return;
        };
        self.batch.push(Job {
            run,
            probe,
            timeout: deadline.saturating_duration_since(now),
            body,
        });
    }

    /// Runs the step's batch in one task: its checks side by side, each dropped at its timeout,
    /// the results ready together sent back in one message.
    fn spawn_batch(&mut self) {
        if self.batch.is_empty() {
            return;
        }
        let jobs = std::mem::take(&mut self.batch);
        let size = jobs.len();
        let tx = self.finished_tx.clone();
        tokio::spawn(async move {
            let runs: FuturesUnordered<_> = jobs
                .into_iter()
                .map(|job| async move {
                    // Past its timeout the scheduler counts it a timeout: drop the check then.
                    let outcome = tokio::time::timeout(job.timeout, job.body.check()).await;
                    (job.run, job.probe, outcome.ok())
                })
                .collect();
            let mut ready = runs.ready_chunks(size);
            while let Some(chunk) = ready.next().await {
                let done: Vec<Finished> = chunk
                    .into_iter()
                    .filter_map(|(run, probe, outcome)| {
                        Some(Finished {
                            run,
                            probe,
                            outcome: outcome?,
                        })
                    })
                    .collect();
                // The host gone: nobody to tell.
                if !done.is_empty() && tx.send(done).is_err() {
                    return;
                }
            }
        });
    }

    /// Recomputes the wake slack from the shortest interval of the probes registered now.
    fn update_slack(&mut self) {
        let shortest = self.scheduler.statuses().map(|s| s.spec().interval()).min();
        self.slack = shortest.map_or(MAX_WAKE_SLACK, |i| {
            (i * WAKE_SLACK_PERCENT / 100).min(MAX_WAKE_SLACK)
        });
    }

    fn report(&mut self, done: Finished) {
        let now = self.clock.now();
        let outcome = match &done.outcome {
            Ok(()) => ProbeOutcome::Pass,
            Err(_) => ProbeOutcome::Fail,
        };
        // UnknownRun: it came at or after its deadline and was counted a timeout already, or
        // the probe was removed. Nothing to record either way.
        if self.scheduler.report(done.run, outcome, now).is_ok() {
            self.record(done.probe, done.outcome.err().map(|e| e.0));
        }
    }

    /// Records the latest result of `probe` (just reported) in its histogram, and its message.
    fn record(&mut self, probe: ProbeId, error: Option<String>) {
        let latency = self.scheduler.status(probe).and_then(|s| {
            let mut history = s.history();
            let last = history.len().checked_sub(1)?;
            history.nth(last).map(|r| r.latency)
        });
        if let (Some(latency), Some(shared)) = (latency, self.extras.get(&probe)) {
            let mut extra = lock(shared);
            extra.durations.record(&DURATION_BOUNDS, latency);
            extra.last_error = error;
        }
    }

    fn command(&mut self, command: Command) {
        let now = self.clock.now();
        match command {
            Command::Register {
                spec,
                kind,
                check,
                reply,
            } => {
                let shared = Shared::default();
                let hosted = Hosted {
                    kind,
                    check,
                    timeout: spec.timeout(),
                    shared: shared.clone(),
                };
                let outcome = match self.scheduler.register(now, spec, Box::new(hosted)) {
                    Ok(id) => {
                        self.extras.insert(id, shared);
                        self.update_slack();
                        Ok(id)
                    }
                    Err(RegisterError::DuplicateName { name, .. }) => {
                        Err(ProbeRegisterError::DuplicateName(name))
                    }
                    Err(_) => Err(ProbeRegisterError::Full(MAX_PROBES)),
                };
                let _ = reply.send(outcome);
            }
            Command::Remove { name, reply } => {
                let removed = match self.scheduler.find(&name) {
                    Some(id) => {
                        self.extras.remove(&id);
                        let removed = self.scheduler.remove(id).is_some();
                        self.update_slack();
                        removed
                    }
                    None => false,
                };
                let _ = reply.send(removed);
            }
            Command::List { filters, reply } => {
                let probes = self
                    .scheduler
                    .statuses()
                    .filter(|s| filters.iter().all(|f| f.matches(s.spec().tags())))
                    .map(|s| {
                        let error = self
                            .extras
                            .get(&s.id())
                            .and_then(|e| lock(e).last_error.clone());
                        probe_json(&s, error, now)
                    })
                    .collect();
                let _ = reply.send(ProbesResponse {
                    node: self.node.get(),
                    probes,
                });
            }
            Command::Metrics(reply) => {
                let probes = self
                    .scheduler
                    .statuses()
                    .map(|s| ProbeMetrics {
                        name: s.spec().name().to_owned(),
                        state: s.state(),
                        counts: RESULTS.map(|r| s.count(r)),
                        durations: self
                            .extras
                            .get(&s.id())
                            .map(|e| lock(e).durations)
                            .unwrap_or_default(),
                    })
                    .collect();
                let _ = reply.send(ProbesMetrics {
                    probes,
                    notices_dropped: self.notices_dropped,
                });
            }
        }
    }
}

/// The results, in the order of [`ProbeMetrics::counts`].
pub const RESULTS: [ProbeResult; 4] = [
    ProbeResult::Pass,
    ProbeResult::Slow,
    ProbeResult::Fail,
    ProbeResult::Timeout,
];

fn ms(d: Duration) -> f64 {
    d.as_nanos() as f64 / 1e6
}

fn probe_json(s: &ProbeStatus<'_>, last_error: Option<String>, now: Instant) -> ProbeJson {
    let spec = s.spec();
    let whole_ms = |d: Duration| u64::try_from(d.as_millis()).unwrap_or(u64::MAX);
    ProbeJson {
        name: spec.name().to_owned(),
        kind: s.kind().to_owned(),
        tags: spec.tags().clone(),
        state: s.state().as_str().to_owned(),
        consecutive_failures: s.consecutive_failures(),
        consecutive_successes: s.consecutive_successes(),
        next_due_ms: whole_ms(s.next_due().saturating_duration_since(now)),
        running: s.is_running(),
        interval_ms: whole_ms(spec.interval()),
        timeout_ms: whole_ms(spec.timeout()),
        failure_threshold: spec.failure_threshold(),
        success_threshold: spec.success_threshold(),
        latency_p50_ms: s.latency_percentile(50).map(ms),
        latency_p99_ms: s.latency_percentile(99).map(ms),
        counts: ProbeCounts {
            pass: s.count(ProbeResult::Pass),
            slow: s.count(ProbeResult::Slow),
            fail: s.count(ProbeResult::Fail),
            timeout: s.count(ProbeResult::Timeout),
        },
        last_error,
        results: {
            let history = s.history();
            let skip = history.len().saturating_sub(MAX_RESULTS_SHOWN);
            let mut newest: Vec<_> = history.skip(skip).collect();
            newest.reverse();
            newest
        }
        .into_iter()
        .map(|r| ProbeResultJson {
            result: r.result.as_str().to_owned(),
            started_ms_ago: whole_ms(now.saturating_duration_since(r.started)),
            latency_ms: ms(r.latency),
        })
        .collect(),
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicU8, Ordering};

    use meshkit::diag::probe::ProbeTags;
    use meshkit_net::clock::TokioClock;

    use super::*;

    const PASS: u8 = 0;
    const FAIL: u8 = 1;
    const HANG: u8 = 2;

    /// A probe whose next runs pass, fail or never answer, as the test sets `mode`.
    struct Switch {
        mode: Arc<AtomicU8>,
    }

    impl AsyncProbe for Switch {
        fn kind(&self) -> &str {
            "switch"
        }

        fn check(&self) -> CheckFuture {
            let mode = self.mode.load(Ordering::SeqCst);
            Box::pin(async move {
                // A little real work on virtual time, so latencies are not all zero.
                tokio::time::sleep(Duration::from_millis(5)).await;
                match mode {
                    PASS => Ok(()),
                    FAIL => Err(ProbeFailure::new("the switch says fail")),
                    _ => std::future::pending().await,
                }
            })
        }
    }

    fn start_host() -> ProbeHandle {
        let (host, handle) = ProbeHost::new(NodeId::new(7), 42, TokioClock::starting_now());
        tokio::spawn(host.run());
        handle
    }

    const INTERVAL: Duration = Duration::from_secs(1);
    const TIMEOUT: Duration = Duration::from_millis(200);

    fn spec(name: &str) -> ProbeSpec {
        ProbeSpec::new(name)
            .and_then(|s| s.with_timing(INTERVAL, TIMEOUT))
            // No jitter: the bound below is exact.
            .and_then(|s| s.with_history(32, 0))
            .unwrap()
    }

    /// Polls the probe's state every 10 ms of virtual time until it is `want` or `limit`
    /// passes; the virtual time it took.
    async fn time_to(handle: &ProbeHandle, want: &str, limit: Duration) -> Option<Duration> {
        let start = tokio::time::Instant::now();
        while start.elapsed() <= limit {
            let list = handle.list(Vec::new()).await.unwrap();
            if list.probes[0].state == want {
                return Some(start.elapsed());
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        None
    }

    /// An observer hears every run (with its failure message) and every state change, in
    /// order: pass, pass, the change to healthy, then the failures and the change to failing.
    #[tokio::test(start_paused = true)]
    async fn the_observer_hears_every_run_and_state_change_in_order() {
        let (notices_tx, mut notices) = mpsc::channel(64);
        let (host, handle) = ProbeHost::new(NodeId::new(7), 42, TokioClock::starting_now());
        tokio::spawn(host.with_observer(notices_tx).run());
        let mode = Arc::new(AtomicU8::new(PASS));
        handle
            .register_async(spec("switch"), Switch { mode: mode.clone() })
            .await
            .unwrap();
        let mut seen = Vec::new();
        while seen.len() < 7 {
            let notice = notices.recv().await.unwrap();
            seen.push(match notice {
                ProbeNotice::Finished {
                    probe,
                    record,
                    error,
                } => {
                    assert_eq!(
                        (probe.name.as_str(), probe.kind.as_str()),
                        ("switch", "switch")
                    );
                    format!("{} {error:?}", record.result.as_str())
                }
                ProbeNotice::StateChanged { to, .. } => format!("-> {to}"),
            });
            if seen.len() == 3 {
                mode.store(FAIL, Ordering::SeqCst);
            }
        }
        assert_eq!(
            seen,
            [
                "pass None",
                "pass None",
                "-> healthy",
                "fail Some(\"the switch says fail\")",
                "fail Some(\"the switch says fail\")",
                "fail Some(\"the switch says fail\")",
                "-> failing",
            ]
        );
        assert_eq!(handle.metrics().await.unwrap().notices_dropped, 0);
    }

    /// A probe that starts failing turns Failing within `interval x failure_threshold +
    /// timeout` of virtual time, by failures and by timeouts alike, and is Healthy again after
    /// `success_threshold` passes (within `interval x success_threshold + timeout`).
    #[tokio::test(start_paused = true)]
    async fn failing_within_the_bound_and_back_after_the_successes() {
        let handle = start_host();
        let mode = Arc::new(AtomicU8::new(PASS));
        handle
            .register_async(spec("switch"), Switch { mode: mode.clone() })
            .await
            .unwrap();
        let detect = INTERVAL * 3 + TIMEOUT;
        let recover = INTERVAL * 2 + TIMEOUT;
        // The first run is within one interval, then two passes make it healthy.
        let took = time_to(&handle, "healthy", INTERVAL * 3).await;
        assert!(took.is_some(), "never healthy");

        for (failing, why) in [(FAIL, "the switch says fail"), (HANG, "no answer within")] {
            mode.store(failing, Ordering::SeqCst);
            let took = time_to(&handle, "failing", detect * 2)
                .await
                .unwrap_or_else(|| panic!("mode {failing}: never failing"));
            assert!(
                took <= detect,
                "mode {failing}: failing after {took:?}, bound {detect:?}"
            );
            let probe = &handle.list(Vec::new()).await.unwrap().probes[0];
            assert!(probe.consecutive_failures >= 3, "{probe:?}");
            assert!(
                probe.last_error.as_deref().is_some_and(|e| e.contains(why)),
                "{probe:?}"
            );

            mode.store(PASS, Ordering::SeqCst);
            let took = time_to(&handle, "healthy", recover * 2)
                .await
                .unwrap_or_else(|| panic!("mode {failing}: never healthy again"));
            assert!(
                took <= recover,
                "mode {failing}: healthy after {took:?}, bound {recover:?}"
            );
            let probe = &handle.list(Vec::new()).await.unwrap().probes[0];
            assert_eq!(probe.consecutive_successes, 2, "{probe:?}");
            assert_eq!(probe.last_error, None, "a pass clears the message");
        }
        let probe = &handle.list(Vec::new()).await.unwrap().probes[0];
        assert!(
            probe.counts.fail >= 3 && probe.counts.timeout >= 3,
            "{probe:?}"
        );
        assert!(probe.results.len() <= MAX_RESULTS_SHOWN);
        assert_eq!(probe.results[0].result, "pass", "newest first");
        // Passes take 5 ms of virtual time; timeouts count at 200 ms.
        assert!(probe.latency_p50_ms.is_some_and(|p| p >= 5.0), "{probe:?}");
        assert_eq!(probe.latency_p99_ms, Some(200.0), "{probe:?}");
    }

    /// Every result is in the duration histogram once, and the metrics carry the state.
    #[tokio::test(start_paused = true)]
    async fn metrics_count_every_result_once() {
        let handle = start_host();
        let mode = Arc::new(AtomicU8::new(PASS));
        handle
            .register_async(spec("a"), Switch { mode: mode.clone() })
            .await
            .unwrap();
        tokio::time::sleep(Duration::from_secs(5)).await;
        mode.store(HANG, Ordering::SeqCst);
        tokio::time::sleep(Duration::from_secs(5)).await;
        let m = handle.metrics().await.unwrap();
        let a = &m.probes[0];
        let total: u64 = a.counts.iter().sum();
        assert!(total >= 8, "{a:?}");
        assert_eq!(a.durations.count, total, "{a:?}");
        assert!(a.counts[3] >= 3, "timeouts counted: {a:?}");
        assert_eq!(a.state, ProbeState::Failing);
    }

    /// A synchronous probe (the core's trait) answers in the scheduler's step; the host needs no
    /// task for it. One that leaves its run pending fails, saying why.
    #[tokio::test(start_paused = true)]
    async fn synchronous_probes_run_through_the_same_host() {
        #[derive(Debug)]
        struct Fixed(Start);
        impl Probe for Fixed {
            fn kind(&self) -> &str {
                "fixed"
            }
            fn start(&mut self, _: Instant, _: Instant) -> Start {
                self.0
            }
        }
        let handle = start_host();
        let pass = Start::Done {
            outcome: ProbeOutcome::Pass,
            latency: Duration::from_millis(1),
        };
        handle
            .register(spec("sync"), Box::new(Fixed(pass)))
            .await
            .unwrap();
        handle
            .register(spec("pending"), Box::new(Fixed(Start::Pending)))
            .await
            .unwrap();
        tokio::time::sleep(Duration::from_secs(5)).await;
        let list = handle.list(Vec::new()).await.unwrap();
        assert_eq!(list.node, 7);
        assert_eq!(list.probes[0].state, "healthy", "{:?}", list.probes[0]);
        assert_eq!(list.probes[0].kind, "fixed");
        assert_eq!(list.probes[1].state, "failing", "{:?}", list.probes[1]);
        assert!(
            list.probes[1]
                .last_error
                .as_deref()
                .is_some_and(|e| e.contains("no asynchronous check")),
            "{:?}",
            list.probes[1]
        );
        let m = handle.metrics().await.unwrap();
        assert_eq!(m.probes[0].durations.count, m.probes[0].counts[0]);
    }

    /// Runs that come due within the wake slack of each other start at one wakeup (their
    /// start instants are at least the slack apart), and none starts more than the slack
    /// late: with no jitter, each probe's runs are one interval apart, plus at most the slack.
    #[tokio::test(start_paused = true)]
    async fn runs_due_within_the_slack_start_together_and_at_most_the_slack_late() {
        let (notices_tx, mut notices) = mpsc::channel(4096);
        let (host, handle) = ProbeHost::new(NodeId::new(7), 42, TokioClock::starting_now());
        tokio::spawn(host.with_observer(notices_tx).run());
        let mode = Arc::new(AtomicU8::new(PASS));
        // 200 first runs spread over one interval: 5 ms apart on average, closer than the
        // slack of 1 s (10 ms).
        for i in 0..200 {
            handle
                .register_async(spec(&format!("p{i}")), Switch { mode: mode.clone() })
                .await
                .unwrap();
        }
        let slack = MAX_WAKE_SLACK;
        let mut starts: BTreeMap<String, Vec<Instant>> = BTreeMap::new();
        while starts.values().map(Vec::len).sum::<usize>() < 200 * 4 {
            if let Some(ProbeNotice::Finished { probe, record, .. }) = notices.recv().await {
                starts.entry(probe.name).or_default().push(record.started);
            }
        }
        let mut every: Vec<Instant> = starts.values().flatten().copied().collect();
        every.sort_unstable();
        every.dedup();
        for pair in every.windows(2) {
            assert!(
                pair[1] - pair[0] >= slack,
                "two wakeups {:?} apart, closer than the slack {slack:?}",
                pair[1] - pair[0]
            );
        }
        for (name, runs) in &starts {
            for pair in runs.windows(2) {
                let gap = pair[1] - pair[0];
                assert!(
                    gap >= INTERVAL && gap <= INTERVAL + slack,
                    "{name}: runs {gap:?} apart, interval {INTERVAL:?}, slack {slack:?}"
                );
            }
        }
        assert_eq!(handle.metrics().await.unwrap().notices_dropped, 0);
    }

    /// Tags filter the listing; a name taken twice is refused; a removed probe is gone.
    #[tokio::test(start_paused = true)]
    async fn tags_filter_and_names_are_unique() {
        let handle = start_host();
        let mode = Arc::new(AtomicU8::new(PASS));
        let tagged = |name: &str, cluster: &str| {
            spec(name)
                .with_tags(ProbeTags {
                    cluster: Some(cluster.to_owned()),
                    ..ProbeTags::default()
                })
                .unwrap()
        };
        for (name, cluster) in [("a", "eu"), ("b", "us"), ("c", "eu")] {
            handle
                .register_async(tagged(name, cluster), Switch { mode: mode.clone() })
                .await
                .unwrap();
        }
        let err = handle
            .register_async(tagged("a", "eu"), Switch { mode: mode.clone() })
            .await
            .unwrap_err();
        assert!(
            matches!(err, ProbeRegisterError::DuplicateName(ref n) if n == "a"),
            "{err}"
        );
        let eu = handle
            .list(TagFilter::from_query("tag=cluster=eu").unwrap())
            .await
            .unwrap();
        let names: Vec<&str> = eu.probes.iter().map(|p| p.name.as_str()).collect();
        assert_eq!(names, ["a", "c"]);
        assert!(handle.remove("a").await.unwrap());
        assert!(!handle.remove("a").await.unwrap());
        assert_eq!(handle.list(Vec::new()).await.unwrap().probes.len(), 2);
    }
}

/// The probe scheduler's overhead (docs/benchmarks.md): 1,000 probes at 1 s on one host, each
/// check doing nothing, so what the process spends is the host's own work (scheduler steps,
/// task spawns, result channel, histograms). Ignored: it takes 35 s of real time; run it in
/// release.
#[cfg(test)]
mod overhead {
    use super::*;

    /// CPU time (user + system) of this process, from `/proc/self/stat`.
    fn cpu_time() -> Duration {
        let stat = std::fs::read_to_string("/proc/self/stat").expect("/proc/self/stat");
        // Fields after the command name (which may hold spaces) start at its closing ')'.
        let rest = &stat[stat.rfind(')').expect("a stat line") + 2..];
        let fields: Vec<u64> = rest
            .split_whitespace()
            .map(|f| f.parse().unwrap_or(0))
            .collect();
        // utime and stime are fields 14 and 15 of the line, 11 and 12 after the name.
        let ticks = fields[11] + fields[12];
        let per_s: u64 = std::process::Command::new("getconf")
            .arg("CLK_TCK")
            .output()
            .ok()
            .and_then(|o| String::from_utf8_lossy(&o.stdout).trim().parse().ok())
            .unwrap_or(100);
        Duration::from_millis(ticks * 1000 / per_s)
    }

    struct Nothing;

    impl AsyncProbe for Nothing {
        fn kind(&self) -> &str {
            "nothing"
        }
        fn check(&self) -> CheckFuture {
            Box::pin(async { Ok(()) })
        }
    }

    #[derive(Clone, Copy, Debug)]
    struct Real;

    impl Clock for Real {
        fn now(&self) -> Instant {
            meshkit_net::clock::SystemClock.now()
        }
    }

    const PROBES: usize = 1_000;
    const RUN: Duration = Duration::from_secs(30);

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    #[ignore = "a 35 s measurement; run in release (docs/benchmarks.md)"]
    async fn probe_host_overhead() {
        let (host, handle) = ProbeHost::new(NodeId::new(1), 1, Real);
        tokio::spawn(host.run());
        // The idle baseline: the runtime with the host and no probe.
        let (cpu0, wall0) = (cpu_time(), std::time::Instant::now());
        tokio::time::sleep(Duration::from_secs(5)).await;
        let idle = (cpu_time() - cpu0).as_secs_f64() / wall0.elapsed().as_secs_f64();
        for i in 0..PROBES {
            let spec = ProbeSpec::new(&format!("p{i}"))
                .and_then(|s| s.with_timing(Duration::from_secs(1), Duration::from_millis(500)))
                .expect("a valid spec");
            handle
                .register_async(spec, Nothing)
                .await
                .expect("registered");
        }
        // One interval for every probe's first run to come due, then measure.
        tokio::time::sleep(Duration::from_secs(2)).await;
        let before = handle.metrics().await.expect("host runs");
        let (cpu1, wall1) = (cpu_time(), std::time::Instant::now());
        tokio::time::sleep(RUN).await;
        let (cpu, wall) = (cpu_time() - cpu1, wall1.elapsed());
        let after = handle.metrics().await.expect("host runs");
        let runs: u64 = after.probes.iter().map(|p| p.counts[0]).sum::<u64>()
            - before.probes.iter().map(|p| p.counts[0]).sum::<u64>();
        let share = cpu.as_secs_f64() / wall.as_secs_f64();
        println!(
            "probe host: {PROBES} probes at 1 s (10% jitter), {runs} passes in {:.1} s; \
             CPU {:.2}% of a core, idle baseline {:.2}%, overhead {:.2}% of a core \
             ({:.1} us per run)",
            wall.as_secs_f64(),
            share * 100.0,
            idle * 100.0,
            (share - idle) * 100.0,
            (cpu.as_secs_f64() - idle * wall.as_secs_f64()) / runs as f64 * 1e6,
        );
        // Every probe ran about once a second (10% jitter: at least 0.85 a second).
        assert!(
            runs as f64 >= PROBES as f64 * wall.as_secs_f64() * 0.85,
            "{runs} runs in {wall:?}"
        );
        assert!(
            share - idle <= 0.02,
            "overhead {:.2}% of a core",
            (share - idle) * 100.0
        );
    }
}
