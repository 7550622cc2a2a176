//! The probe scheduler: when each probe runs, its deadlines, its history and its state.

use alloc::boxed::Box;
use alloc::collections::{BTreeMap, BTreeSet, VecDeque};
use alloc::string::String;
use alloc::vec::Vec;
use core::fmt;

use thiserror::Error;

use super::{Probe, ProbeId, ProbeOutcome, ProbeSpec, Start};
use crate::rng::NodeRng;
use crate::time::{Duration, Instant};

/// The most probes one scheduler holds (the probe-overhead target is 1,000 on one node).
pub const MAX_PROBES: usize = 4096;
/// Events kept for the host; beyond this the oldest is dropped and counted
/// ([`ProbeScheduler::events_dropped`]).
pub const MAX_PENDING_EVENTS: usize = 4096;

/// A probe's health, decided by the rules of the [module documentation](super).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum ProbeState {
    /// Registered; not yet enough results to say.
    Unknown,
    /// Passing within its latency threshold.
    Healthy,
    /// Passing, but slowly (or mixing slow answers and failures).
    Degraded,
    /// Failed `failure_threshold` times in a row.
    Failing,
}

impl ProbeState {
    /// Its name in payloads and metric labels.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Unknown => "unknown",
            Self::Healthy => "healthy",
            Self::Degraded => "degraded",
            Self::Failing => "failing",
        }
    }
}

impl fmt::Display for ProbeState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// How one run ended (see the [module documentation](super)).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum ProbeResult {
    /// Passed within the latency threshold.
    Pass,
    /// Passed, slower than the latency threshold.
    Slow,
    /// Failed.
    Fail,
    /// No outcome before the deadline.
    Timeout,
}

impl ProbeResult {
    /// Whether the result counts as a failure (Fail or Timeout).
    pub fn is_failure(self) -> bool {
        matches!(self, Self::Fail | Self::Timeout)
    }

    /// Its name in payloads and metric labels.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pass => "pass",
            Self::Slow => "slow",
            Self::Fail => "fail",
            Self::Timeout => "timeout",
        }
    }
}

/// One kept result.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ProbeRecord {
    /// When the run started.
    pub started: Instant,
    /// How it ended.
    pub result: ProbeResult,
    /// How long it took (the timeout for a timeout).
    pub latency: Duration,
}

/// An asynchronous run's id, for [`ProbeScheduler::report`]; never reused.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct RunId(u64);

impl RunId {
    /// The raw number.
    pub const fn get(self) -> u64 {
        self.0
    }
}

impl fmt::Display for RunId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "run-{}", self.0)
    }
}

/// Work the host must do.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum ProbeAction {
    /// Run `probe` now; report with [`ProbeScheduler::report`]`(run, ..)` before `deadline`, or
    /// the run counts as a timeout.
    Run {
        /// The run's id.
        run: RunId,
        /// The probe.
        probe: ProbeId,
        /// When the scheduler gives up on it.
        deadline: Instant,
    },
}

/// What the host learns.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum ProbeEvent {
    /// A probe's state changed.
    StateChanged {
        /// The probe.
        probe: ProbeId,
        /// The state before.
        from: ProbeState,
        /// The state now.
        to: ProbeState,
        /// When the result that changed it was recorded.
        at: Instant,
    },
    /// A run ended (only with [`ProbeScheduler::set_run_events`]): a host that keeps every
    /// result (a history, a per-run metric) reads them here rather than scanning the probes.
    /// Queued before the [`StateChanged`](Self::StateChanged) the run caused, if any.
    Finished {
        /// The probe.
        probe: ProbeId,
        /// The run's result as recorded.
        record: ProbeRecord,
    },
}

/// Why [`ProbeScheduler::register`] refused a probe. Nothing was registered; the probe is given
/// back. Always the caller's fault.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum RegisterError {
    /// Another probe on this scheduler has the name.
    #[error("a probe named {name:?} is already registered")]
    DuplicateName {
        /// The name.
        name: String,
        /// The probe given back.
        probe: Box<dyn Probe>,
    },
    /// The scheduler holds [`MAX_PROBES`] probes.
    #[error("the scheduler holds its maximum of {max} probes")]
    Full {
        /// [`MAX_PROBES`].
        max: usize,
        /// The probe given back.
        probe: Box<dyn Probe>,
    },
}

/// Why [`ProbeScheduler::report`] ignored an outcome. Nothing changed.
#[derive(Debug, Error, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum ReportError {
    /// The run is not in flight: it timed out already (a race the host cannot avoid: its
    /// answer came too late and counted as a timeout), its probe was removed, it was reported
    /// before, or it was never issued (caller misuse).
    #[error("{run} is not in flight (timed out, reported, removed or never issued)")]
    UnknownRun {
        /// The run named.
        run: RunId,
    },
}

/// One probe and everything the scheduler keeps about it.
#[derive(Debug)]
struct Slot {
    spec: ProbeSpec,
    probe: Box<dyn Probe>,
    state: ProbeState,
    history: VecDeque<ProbeRecord>,
    next_due: Instant,
    running: Option<Running>,
    streaks: Streaks,
    counts: [u64; 4],
}

#[derive(Clone, Copy, Debug)]
struct Running {
    run: RunId,
    started: Instant,
    deadline: Instant,
}

/// Lengths of the current runs of each kind of result, saturating: the rules only compare them
/// with thresholds of at most [`MAX_THRESHOLD`](super::MAX_THRESHOLD).
#[derive(Clone, Copy, Debug, Default)]
struct Streaks {
    /// Fail or Timeout.
    failed: u32,
    /// Pass or Slow.
    passed: u32,
    /// Pass.
    fast: u32,
    /// Slow, Fail or Timeout.
    not_fast: u32,
}

impl Streaks {
    fn push(&mut self, result: ProbeResult) {
        let bump = |n: &mut u32| *n = n.saturating_add(1);
        if result.is_failure() {
            bump(&mut self.failed);
            self.passed = 0;
        } else {
            bump(&mut self.passed);
            self.failed = 0;
        }
        if result == ProbeResult::Pass {
            bump(&mut self.fast);
            self.not_fast = 0;
        } else {
            bump(&mut self.not_fast);
            self.fast = 0;
        }
    }
}

/// The rules of the module documentation, in their order.
fn next_state(state: ProbeState, streaks: Streaks, failure: u32, success: u32) -> ProbeState {
    use ProbeState::{Degraded, Failing, Healthy, Unknown};
    if streaks.failed >= failure {
        return Failing;
    }
    match state {
        Unknown | Failing if streaks.passed >= success => {
            if streaks.fast >= success {
                Healthy
            } else {
                Degraded
            }
        }
        Healthy if streaks.not_fast >= failure => Degraded,
        Degraded if streaks.fast >= success => Healthy,
        other => other,
    }
}

/// A read-only view of one probe: its spec, state, counters and history.
#[derive(Clone, Copy, Debug)]
pub struct ProbeStatus<'a> {
    id: ProbeId,
    slot: &'a Slot,
}

impl<'a> ProbeStatus<'a> {
    /// The probe's id.
    pub fn id(&self) -> ProbeId {
        self.id
    }

    /// Its spec (name, tags, timing, thresholds).
    pub fn spec(&self) -> &'a ProbeSpec {
        &self.slot.spec
    }

    /// Its type's name ([`Probe::kind`]).
    pub fn kind(&self) -> &'a str {
        self.slot.probe.kind()
    }

    /// Its state.
    pub fn state(&self) -> ProbeState {
        self.slot.state
    }

    /// Failures (Fail or Timeout) in a row, up to the latest result.
    pub fn consecutive_failures(&self) -> u32 {
        self.slot.streaks.failed
    }

    /// Passes (Pass or Slow) in a row, up to the latest result.
    pub fn consecutive_successes(&self) -> u32 {
        self.slot.streaks.passed
    }

    /// When the next run is due.
    pub fn next_due(&self) -> Instant {
        self.slot.next_due
    }

    /// Whether a run is in flight (waiting for the host's report).
    pub fn is_running(&self) -> bool {
        self.slot.running.is_some()
    }

    /// The kept results, oldest first (at most [`ProbeSpec::history`]).
    pub fn history(&self) -> impl ExactSizeIterator<Item = &'a ProbeRecord> + 'a {
        self.slot.history.iter()
    }

    /// Results of each kind since registration (not bounded by the history).
    pub fn count(&self, result: ProbeResult) -> u64 {
        self.slot.counts[result as usize]
    }

    /// The nearest-rank `percentile` (0..=100; larger is taken as 100) of the kept results'
    /// latencies, timeouts at their timeout; `None` before the first result.
    pub fn latency_percentile(&self, percentile: u32) -> Option<Duration> {
        let mut latencies: Vec<Duration> = self.slot.history.iter().map(|r| r.latency).collect();
        if latencies.is_empty() {
            return None;
        }
        latencies.sort_unstable();
        let n = latencies.len();
        // Nearest rank: the smallest value with at least `percentile`% of the values at or
        // below it; rank 1 for percentile 0.
        let rank = (percentile.min(100) as usize * n).div_ceil(100).max(1);
        Some(latencies[rank - 1])
    }
}

/// The sans-IO probe scheduler. See the [module documentation](super) for the rules.
///
/// # Driving
///
/// * **Inputs**: [`register`](Self::register) and [`remove`](Self::remove) (commands),
///   [`handle_timeout`](Self::handle_timeout) when [`poll_timeout`](Self::poll_timeout) comes
///   due (a spurious call is a no-op), [`report`](Self::report) when a run the host was asked
///   for ends.
/// * **Outputs**, drained after every input in this order: [`poll_action`](Self::poll_action)
///   until `None` (start each run), [`poll_event`](Self::poll_event) until `None`, then
///   [`poll_timeout`](Self::poll_timeout).
#[derive(Debug)]
pub struct ProbeScheduler {
    rng: NodeRng,
    probes: BTreeMap<ProbeId, Slot>,
    names: BTreeMap<String, ProbeId>,
    due: BTreeSet<(Instant, ProbeId)>,
    deadlines: BTreeSet<(Instant, ProbeId)>,
    runs: BTreeMap<RunId, ProbeId>,
    actions: VecDeque<ProbeAction>,
    events: VecDeque<ProbeEvent>,
    next_probe: u32,
    next_run: u64,
    events_dropped: u64,
    run_events: bool,
}

impl ProbeScheduler {
    /// An empty scheduler whose jitter comes from `seed` (a child seed of the node's, so the
    /// same node seed replays the same schedule).
    pub fn new(seed: u64) -> Self {
        Self {
            rng: NodeRng::from_seed(seed),
            probes: BTreeMap::new(),
            names: BTreeMap::new(),
            due: BTreeSet::new(),
            deadlines: BTreeSet::new(),
            runs: BTreeMap::new(),
            actions: VecDeque::new(),
            events: VecDeque::new(),
            next_probe: 0,
            next_run: 0,
            events_dropped: 0,
            run_events: false,
        }
    }

    /// Whether every finished run is also an event ([`ProbeEvent::Finished`]); off by default
    /// (a node's host needs only the state changes). Events beyond [`MAX_PENDING_EVENTS`]
    /// undrained are dropped and counted as any event is.
    pub fn set_run_events(&mut self, on: bool) {
        self.run_events = on;
    }

    /// Registers `probe` under `spec` at `now`; its first run is due within one interval.
    ///
    /// # Errors
    ///
    /// [`RegisterError::DuplicateName`] or [`RegisterError::Full`], with the probe given back;
    /// nothing changed.
    pub fn register(
        &mut self,
        now: Instant,
        spec: ProbeSpec,
        probe: Box<dyn Probe>,
    ) -> Result<ProbeId, RegisterError> {
        if self.names.contains_key(spec.name()) {
            return Err(RegisterError::DuplicateName {
                name: spec.name().into(),
                probe,
            });
        }
        if self.probes.len() >= MAX_PROBES {
            return Err(RegisterError::Full {
                max: MAX_PROBES,
                probe,
            });
        }
        let id = ProbeId(self.next_probe);
        self.next_probe += 1;
        // Spread over one interval so probes registered together do not run in lockstep.
        let interval_ns = u64::try_from(spec.interval().as_nanos()).unwrap_or(u64::MAX);
        let first = now + Duration::from_nanos(self.rng.up_to(interval_ns.saturating_sub(1)));
        self.names.insert(spec.name().into(), id);
        self.due.insert((first, id));
        self.probes.insert(
            id,
            Slot {
                history: VecDeque::with_capacity(spec.history() as usize),
                spec,
                probe,
                state: ProbeState::Unknown,
                next_due: first,
                running: None,
                streaks: Streaks::default(),
                counts: [0; 4],
            },
        );
        Ok(id)
    }

    /// Removes a probe, cancelling its run in flight; gives it back, or `None` if unknown.
    pub fn remove(&mut self, id: ProbeId) -> Option<Box<dyn Probe>> {
        let mut slot = self.probes.remove(&id)?;
        self.names.remove(slot.spec.name());
        self.due.remove(&(slot.next_due, id));
        if let Some(running) = slot.running.take() {
            self.end_run(id, running);
            slot.probe.cancel();
        }
        Some(slot.probe)
    }

    /// The registered probe, to feed it state or find the I/O of a pending run (downcast it
    /// with `as &mut dyn Any`).
    pub fn probe_mut(&mut self, id: ProbeId) -> Option<&mut dyn Probe> {
        self.probes.get_mut(&id).map(|slot| &mut *slot.probe)
    }

    /// One probe's status.
    pub fn status(&self, id: ProbeId) -> Option<ProbeStatus<'_>> {
        self.probes.get(&id).map(|slot| ProbeStatus { id, slot })
    }

    /// The probe registered under `name`.
    pub fn find(&self, name: &str) -> Option<ProbeId> {
        self.names.get(name).copied()
    }

    /// Every probe's status, in id (registration) order.
    pub fn statuses(&self) -> impl Iterator<Item = ProbeStatus<'_>> + '_ {
        self.probes
            .iter()
            .map(|(&id, slot)| ProbeStatus { id, slot })
    }

    /// How many probes are registered.
    pub fn len(&self) -> usize {
        self.probes.len()
    }

    /// Whether none is.
    pub fn is_empty(&self) -> bool {
        self.probes.is_empty()
    }

    /// Events dropped because the host did not drain [`poll_event`](Self::poll_event).
    pub fn events_dropped(&self) -> u64 {
        self.events_dropped
    }

    /// When to call [`handle_timeout`](Self::handle_timeout) next: the earliest run due or
    /// run deadline.
    #[must_use]
    pub fn poll_timeout(&self) -> Option<Instant> {
        let due = self.due.first().map(|&(t, _)| t);
        let deadline = self.deadlines.first().map(|&(t, _)| t);
        match (due, deadline) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// Time has passed: runs past their deadline count as timeouts, then runs due start.
    pub fn handle_timeout(&mut self, now: Instant) {
        while let Some(&(deadline, id)) = self.deadlines.first() {
            if deadline > now {
                break;
            }
            self.deadlines.pop_first();
            let Some(slot) = self.probes.get_mut(&id) else {
                continue;
            };
            let Some(running) = slot.running.take() else {
                continue;
            };
            self.runs.remove(&running.run);
            self.actions
                .retain(|&ProbeAction::Run { run, .. }| run != running.run);
            slot.probe.cancel();
            let latency = slot.spec.timeout();
            self.record(id, running.started, ProbeResult::Timeout, latency, now);
        }
        while let Some(&(due, id)) = self.due.first() {
            if due > now {
                break;
            }
            self.due.pop_first();
            self.start_run(id, now);
        }
    }

    /// The host's outcome of run `run`, which ended at `now`. An outcome at or after the run's
    /// deadline counts as a timeout. Returns how the run was recorded.
    ///
    /// # Errors
    ///
    /// [`ReportError::UnknownRun`]; nothing changed.
    pub fn report(
        &mut self,
        run: RunId,
        outcome: ProbeOutcome,
        now: Instant,
    ) -> Result<ProbeResult, ReportError> {
        let id = *self.runs.get(&run).ok_or(ReportError::UnknownRun { run })?;
        let slot = self
            .probes
            .get_mut(&id)
            .ok_or(ReportError::UnknownRun { run })?;
        let running = slot
            .running
            .filter(|r| r.run == run)
            .ok_or(ReportError::UnknownRun { run })?;
        slot.running = None;
        let latency = now - running.started;
        let result = classify(&slot.spec, outcome, latency);
        self.end_run(id, running);
        self.record(id, running.started, result, latency, now);
        Ok(result)
    }

    /// The next run the host must start.
    #[must_use]
    pub fn poll_action(&mut self) -> Option<ProbeAction> {
        self.actions.pop_front()
    }

    /// The next state change.
    #[must_use]
    pub fn poll_event(&mut self) -> Option<ProbeEvent> {
        self.events.pop_front()
    }

    fn start_run(&mut self, id: ProbeId, now: Instant) {
        let Some(slot) = self.probes.get_mut(&id) else {
            return;
        };
        // The timeout never exceeds the interval and deadlines are settled first, so no run is
        // in flight when the next is due.
        debug_assert!(
            slot.running.is_none(),
            "{id}: a run is due while one is in flight"
        );
        let jitter_ns = u64::try_from(slot.spec.max_jitter().as_nanos()).unwrap_or(u64::MAX);
        let next = now + slot.spec.interval() + Duration::from_nanos(self.rng.up_to(jitter_ns));
        slot.next_due = next;
        self.due.insert((next, id));
        let deadline = now + slot.spec.timeout();
        match slot.probe.start(now, deadline) {
            Start::Done { outcome, latency } => {
                let result = classify(&slot.spec, outcome, latency);
                let latency = latency.min(slot.spec.timeout());
                self.record(id, now, result, latency, now);
            }
            Start::Pending => {
                let run = RunId(self.next_run);
                self.next_run += 1;
                slot.running = Some(Running {
                    run,
                    started: now,
                    deadline,
                });
                self.runs.insert(run, id);
                self.deadlines.insert((deadline, id));
                self.actions.push_back(ProbeAction::Run {
                    run,
                    probe: id,
                    deadline,
                });
            }
        }
    }

    /// Forgets a run's bookkeeping (its id, deadline and unpolled action).
    fn end_run(&mut self, id: ProbeId, running: Running) {
        self.runs.remove(&running.run);
        self.deadlines.remove(&(running.deadline, id));
        self.actions
            .retain(|&ProbeAction::Run { run, .. }| run != running.run);
    }

    fn record(
        &mut self,
        id: ProbeId,
        started: Instant,
        result: ProbeResult,
        latency: Duration,
        now: Instant,
    ) {
        let Some(slot) = self.probes.get_mut(&id) else {
            return;
        };
        if slot.history.len() >= slot.spec.history() as usize {
            slot.history.pop_front();
        }
        slot.history.push_back(ProbeRecord {
            started,
            result,
            latency,
        });
        slot.counts[result as usize] += 1;
        slot.streaks.push(result);
        let from = slot.state;
        let to = next_state(
            from,
            slot.streaks,
            slot.spec.failure_threshold(),
            slot.spec.success_threshold(),
        );
        let changed = to != from;
        if changed {
            slot.state = to;
            tracing::debug!(probe = %slot.spec.name(), %from, %to, "probe state changed");
        }
        if self.run_events {
            let record = ProbeRecord {
                started,
                result,
                latency,
            };
            self.push_event(ProbeEvent::Finished { probe: id, record });
        }
        if changed {
            self.push_event(ProbeEvent::StateChanged {
                probe: id,
                from,
                to,
                at: now,
            });
        }
    }

    fn push_event(&mut self, event: ProbeEvent) {
        if self.events.len() >= MAX_PENDING_EVENTS {
            self.events.pop_front();
            self.events_dropped += 1;
        }
        self.events.push_back(event);
    }
}

/// A run's result from its outcome and latency (see the module documentation).
fn classify(spec: &ProbeSpec, outcome: ProbeOutcome, latency: Duration) -> ProbeResult {
    if latency >= spec.timeout() {
        return ProbeResult::Timeout;
    }
    match outcome {
        ProbeOutcome::Fail => ProbeResult::Fail,
        ProbeOutcome::Pass if spec.degraded_latency().is_some_and(|d| latency > d) => {
            ProbeResult::Slow
        }
        ProbeOutcome::Pass => ProbeResult::Pass,
    }
}
