//! Health probes: an open [`Probe`] trait, the validated [`ProbeSpec`], and the sans-IO
//! [`ProbeScheduler`] that decides when each probe runs and what its results mean.
//!
//! A service registers a probe of its own type by implementing [`Probe`]; nothing in MeshKit
//! lists the types. The scheduler never runs I/O: for a probe that can answer at once (it reads
//! state the node already has) it calls [`Probe::start`] and records the answer in the same
//! step; for one that needs I/O, `start` says [`Start::Pending`], the scheduler hands the host a
//! [`ProbeAction::Run`] with the run's deadline, and the host reports the outcome with
//! [`ProbeScheduler::report`]. Time comes in as `now`, jitter from a seed: the simulator and a
//! real node run the same schedule from the same seed.
//!
//! # Results
//!
//! Each run ends in one [`ProbeResult`]:
//!
//! * **Pass**: the probe reported [`ProbeOutcome::Pass`] before its deadline, no slower than the
//!   spec's [`degraded_latency`](ProbeSpec::degraded_latency) (if any);
//! * **Slow**: it passed, slower than `degraded_latency`;
//! * **Fail**: it reported [`ProbeOutcome::Fail`] before its deadline;
//! * **Timeout**: no outcome by `start + timeout`, or one reported at or after that deadline.
//!   A timeout is a failure for every rule below.
//!
//! A run's latency is the probe's own figure for a synchronous probe, and `report`'s `now`
//! minus the run's start for an asynchronous one; a timeout's latency is the timeout.
//!
//! # States and their rules
//!
//! A probe is in one [`ProbeState`]: `Unknown` (registered, not yet enough results to say),
//! `Healthy`, `Degraded` (answering, but slowly) or `Failing`. With `F` the spec's
//! [`failure_threshold`](ProbeSpec::failure_threshold) and `S` its
//! [`success_threshold`](ProbeSpec::success_threshold), after each result, the first rule
//! that applies decides:
//!
//! 1. The last `F` results all failed (Fail or Timeout): **Failing**, from any state.
//! 2. In `Unknown` or `Failing`, the last `S` results all passed (Pass or Slow): **Healthy** if
//!    all `S` were Pass, otherwise **Degraded**.
//! 3. In `Healthy`, none of the last `F` results was a Pass (each Slow or failed): **Degraded**.
//! 4. In `Degraded`, the last `S` results were all Pass: **Healthy**.
//! 5. Otherwise the state stays.
//!
//! So a probe needs `F` failures in a row to fail and `S` successes in a row to recover: with
//! the defaults 3 and 2, two transient failures change nothing and a recovery is confirmed by a
//! second success before anyone acts on it (the hysteresis of Kubernetes' probe thresholds). An
//! isolated failure or slow answer changes nothing. Every change is a
//! [`ProbeEvent::StateChanged`], in the order the results that caused them were recorded.
//!
//! # Timing
//!
//! A probe registered at `t` first runs at `t + u`, `u` uniform in `0..interval` (probes
//! registered together spread over one interval); each later run is due
//! `interval + j` after the previous one started, `j` uniform in
//! `0..=interval x jitter_percent / 100`. Both come from the scheduler's seeded RNG. The
//! timeout never exceeds the interval, so at most one run per probe is in flight, and a run's
//! deadline comes no later than the next run's due time. Within one
//! [`handle_timeout`](ProbeScheduler::handle_timeout), deadlines are settled before due runs
//! start. A host that calls late (a paused process) gets one run per probe, not a burst to catch
//! up: the next run is counted from the late start.
//!
//! # History and percentiles
//!
//! Each probe keeps its last [`history`](ProbeSpec::history) results; older ones are dropped.
//! [`ProbeStatus::latency_percentile`] is the nearest-rank percentile of the kept results'
//! latencies, timeouts included at their timeout (a lower bound of what they would have taken).
//!
//! # Example
//!
//! A service's own probe type, registered without touching MeshKit, driven on virtual time:
//!
//! ```
//! use core::time::Duration;
//! use meshkit::Instant;
//! use meshkit::diag::probe::{
//!     Probe, ProbeEvent, ProbeOutcome, ProbeScheduler, ProbeSpec, ProbeState, Start,
//! };
//!
//! /// Passes while the queue is shorter than its limit: a synchronous check of local state.
//! #[derive(Debug)]
//! struct QueueDepth { depth: u32, limit: u32 }
//!
//! impl Probe for QueueDepth {
//!     fn kind(&self) -> &str { "queue-depth" }
//!     fn start(&mut self, _now: Instant, _deadline: Instant) -> Start {
//!         let outcome = if self.depth < self.limit { ProbeOutcome::Pass } else { ProbeOutcome::Fail };
//!         Start::Done { outcome, latency: Duration::ZERO }
//!     }
//! }
//!
//! let mut probes = ProbeScheduler::new(7);
//! let spec = ProbeSpec::new("orders-queue")?.with_timing(Duration::from_secs(1), Duration::from_millis(100))?;
//! let id = probes.register(Instant::ZERO, spec, Box::new(QueueDepth { depth: 0, limit: 10 }))?;
//!
//! // The host's loop: sleep until poll_timeout, call handle_timeout, drain the outputs.
//! let mut now = Instant::ZERO;
//! let mut states = Vec::new();
//! for step in 0..8 {
//!     if step == 4 {
//!         // The queue backs up: downcast to the registered type to change it.
//!         let probe = probes.probe_mut(id).unwrap();
//!         (probe as &mut dyn core::any::Any).downcast_mut::<QueueDepth>().unwrap().depth = 50;
//!     }
//!     now = probes.poll_timeout().unwrap();
//!     probes.handle_timeout(now);
//!     assert!(probes.poll_action().is_none(), "a synchronous probe needs no host I/O");
//!     while let Some(ProbeEvent::StateChanged { to, .. }) = probes.poll_event() {
//!         states.push(to);
//!     }
//! }
//! // Two passes made it Healthy; three failures in a row made it Failing.
//! assert_eq!(states, [ProbeState::Healthy, ProbeState::Failing]);
//! assert_eq!(probes.status(id).unwrap().consecutive_failures(), 4);
//! # let _ = now;
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! An asynchronous probe returns [`Start::Pending`]; [`ProbeScheduler::poll_action`] then yields
//! [`ProbeAction::Run`] and the host reports with [`ProbeScheduler::report`] (see
//! `docs/diagnostics.md`).

mod scheduler;
mod spec;

use core::any::Any;
use core::fmt;

use crate::time::{Duration, Instant};

pub use self::scheduler::{
    MAX_PENDING_EVENTS, MAX_PROBES, ProbeAction, ProbeEvent, ProbeRecord, ProbeResult,
    ProbeScheduler, ProbeState, ProbeStatus, RegisterError, ReportError, RunId,
};
pub use self::spec::{
    DEFAULT_FAILURE_THRESHOLD, DEFAULT_HISTORY, DEFAULT_INTERVAL, DEFAULT_JITTER_PERCENT,
    DEFAULT_SUCCESS_THRESHOLD, DEFAULT_TIMEOUT, MAX_HISTORY, MAX_INTERVAL, MAX_JITTER_PERCENT,
    MAX_LABELS, MAX_TAG_BYTES, MAX_THRESHOLD, MIN_INTERVAL, MIN_TIMEOUT, ProbeSpec, ProbeSpecError,
    ProbeTags, RawProbeSpec, TagError,
};

/// A probe type. Implement it for a check of your own and hand a boxed value to
/// [`ProbeScheduler::register`]; the scheduler decides when it runs.
///
/// `Any` is a supertrait so that a host can reach its own type again through
/// [`ProbeScheduler::probe_mut`] (to feed it state, or to find what I/O to run for a pending
/// run) with a downcast.
pub trait Probe: Any + fmt::Debug + Send {
    /// The type's name, such as `"quorum"` or `"http"`; shown beside each probe's name.
    fn kind(&self) -> &str;

    /// Begins one run at `now`, which must end by `deadline`. A check of state the node already
    /// has answers [`Start::Done`] at once; a check that needs I/O answers [`Start::Pending`],
    /// and the host runs it and calls [`ProbeScheduler::report`].
    fn start(&mut self, now: Instant, deadline: Instant) -> Start;

    /// The run in flight ended without a report: it timed out, or the probe was removed. A
    /// probe holding resources for the run releases them here; the default does nothing.
    fn cancel(&mut self) {}
}

/// What [`Probe::start`] answers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Start {
    /// The run finished at once.
    Done {
        /// How it went.
        outcome: ProbeOutcome,
        /// What the probe measured (a round trip it already knows, or zero).
        latency: Duration,
    },
    /// The host runs it and reports the outcome.
    Pending,
}

/// How a run went, as a probe or the host reports it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ProbeOutcome {
    /// The check passed.
    Pass,
    /// The check failed.
    Fail,
}

/// A registered probe's id on its scheduler; never reused.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ProbeId(u32);

impl ProbeId {
    /// The raw number.
    pub const fn get(self) -> u32 {
        self.0
    }
}

impl fmt::Display for ProbeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "probe-{}", self.0)
    }
}

#[cfg(test)]
mod tests;
