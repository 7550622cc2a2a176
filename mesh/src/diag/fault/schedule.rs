//! The fault schedule: activates each experiment at its start and reverts it at its deadline, on
//! the clock of the node that runs it.

use alloc::collections::{BTreeMap, BTreeSet, VecDeque};
use alloc::vec::Vec;
use core::fmt;

use thiserror::Error;

use super::plan::FaultPlan;
use super::resolve::BlastRadius;
use crate::time::Instant;

/// The most experiments one schedule holds, scheduled or active.
pub const MAX_EXPERIMENTS: usize = 1024;

/// An experiment's id on its schedule; never reused.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ExperimentId(u64);

impl ExperimentId {
    /// The raw number.
    pub const fn get(self) -> u64 {
        self.0
    }
}

impl fmt::Display for ExperimentId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "experiment-{}", self.0)
    }
}

/// Why an experiment ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum EndReason {
    /// Its deadline passed (the dead-man revert).
    Deadline,
    /// [`FaultSchedule::abort`].
    Aborted,
    /// [`FaultSchedule::engage_kill_switch`].
    KillSwitch,
    /// Its whole window passed before the schedule saw its start (the host did not call in
    /// time, e.g. the process was paused): it never became active.
    Missed,
}

/// What the host must apply, or learn.
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub enum FaultEvent {
    /// Apply the fault now; it is reverted by `until` at the latest.
    Activate {
        /// The experiment.
        id: ExperimentId,
        /// Its plan.
        plan: FaultPlan,
        /// What it touches.
        radius: BlastRadius,
        /// Its deadline: `start + duration` from when it was scheduled.
        until: Instant,
    },
    /// Undo the fault now.
    Revert {
        /// The experiment.
        id: ExperimentId,
        /// Its plan.
        plan: FaultPlan,
        /// What it touched.
        radius: BlastRadius,
        /// Why it ended.
        reason: EndReason,
    },
    /// An experiment that never became active ended; there is nothing to undo.
    Cancelled {
        /// The experiment.
        id: ExperimentId,
        /// Why it ended.
        reason: EndReason,
    },
}

/// Why [`FaultSchedule::schedule`] refused an experiment. Nothing was scheduled.
#[derive(Debug, Error, Clone, PartialEq)]
#[non_exhaustive]
pub enum ScheduleError {
    /// The kill switch is engaged: no experiment starts until [`FaultSchedule::rearm`].
    #[error("the chaos kill switch is engaged: re-arm it before starting experiments")]
    KillSwitchEngaged,
    /// [`MAX_EXPERIMENTS`] are scheduled or active.
    #[error("{max} experiments are scheduled or active: at most that many")]
    Full {
        /// [`MAX_EXPERIMENTS`].
        max: usize,
    },
    /// The radius was not resolved from this plan (its kind or timing differ): the confirmation
    /// would not be of what starts. Caller misuse.
    #[error("the blast radius was not resolved from this plan")]
    RadiusMismatch,
}

/// Why [`FaultSchedule::abort`] did nothing.
#[derive(Debug, Error, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum AbortError {
    /// No such experiment is scheduled or active (it ended already, or never existed).
    #[error("{id} is neither scheduled nor active")]
    Unknown {
        /// The id given.
        id: ExperimentId,
    },
}

/// One experiment's phase.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Phase {
    /// Waiting for its start.
    Scheduled,
    /// Applied; reverts at its deadline.
    Active,
}

/// A scheduled or active experiment.
#[derive(Clone, Debug, PartialEq)]
pub struct Experiment {
    /// Its plan.
    pub plan: FaultPlan,
    /// What it touches.
    pub radius: BlastRadius,
    /// Its phase.
    pub phase: Phase,
    /// When it starts (or started).
    pub starts_at: Instant,
    /// When it reverts: `starts_at + duration`, fixed when it was scheduled.
    pub ends_at: Instant,
}

/// The sans-IO fault schedule of one node (or of the simulator's whole mesh).
///
/// Each experiment is a [`FaultPlan`] with the [`BlastRadius`] resolved for it. Its window is
/// fixed when it is scheduled at `now`: it starts at `now + plan.start()` and ends at that plus
/// `plan.duration()`. The schedule activates and reverts by itself, on the `now` its own node's
/// driver passes in: nothing from outside (the caller that started it, the network, the node
/// that fanned it out) is needed to end it. This is the dead-man switch.
///
/// # Rules
///
/// 1. An experiment is active only inside its window: a start the schedule sees late activates
///    it for the rest of the window, and one it sees after the window ended never activates
///    ([`EndReason::Missed`]).
/// 2. Every [`FaultEvent::Activate`] is followed by exactly one [`FaultEvent::Revert`] of the
///    same id: at the deadline, on [`abort`](Self::abort), or on the kill switch. An
///    experiment that never activated ends with [`FaultEvent::Cancelled`] instead.
/// 3. At one instant, reverts come before activations: an experiment ending at `t` is undone
///    before one starting at `t` is applied.
/// 4. While the kill switch is engaged, [`schedule`](Self::schedule) refuses; engaging it ends
///    every experiment at once.
///
/// # Driving
///
/// * **Inputs**: [`schedule`](Self::schedule), [`abort`](Self::abort),
///   [`engage_kill_switch`](Self::engage_kill_switch), [`rearm`](Self::rearm) (commands), and
///   [`handle_timeout`](Self::handle_timeout) when [`poll_timeout`](Self::poll_timeout) comes
///   due (a spurious call is a no-op).
/// * **Outputs**, drained after every input: [`poll_event`](Self::poll_event) until `None`
///   (apply each in order), then [`poll_timeout`](Self::poll_timeout).
#[derive(Debug, Default)]
pub struct FaultSchedule {
    experiments: BTreeMap<ExperimentId, Experiment>,
    timers: BTreeSet<(Instant, ExperimentId)>,
    events: VecDeque<FaultEvent>,
    next_id: u64,
    kill_switch: bool,
}

impl FaultSchedule {
    /// An empty schedule, kill switch released.
    pub fn new() -> Self {
        Self::default()
    }

    /// Schedules `plan` at `now`, with the `radius` [`resolve`](super::resolve) gave for it.
    /// A plan with no start delay is activated at once (its event is queued).
    ///
    /// # Errors
    ///
    /// [`ScheduleError`]; nothing was scheduled.
    pub fn schedule(
        &mut self,
        now: Instant,
        plan: FaultPlan,
        radius: BlastRadius,
    ) -> Result<ExperimentId, ScheduleError> {
        if self.kill_switch {
            return Err(ScheduleError::KillSwitchEngaged);
        }
        if self.experiments.len() >= MAX_EXPERIMENTS {
            return Err(ScheduleError::Full {
                max: MAX_EXPERIMENTS,
            });
        }
        if radius.kind != plan.kind().name()
            || radius.duration != plan.duration()
            || radius.start != plan.start()
        {
            return Err(ScheduleError::RadiusMismatch);
        }
        let id = ExperimentId(self.next_id);
        self.next_id += 1;
        let starts_at = now + plan.start();
        let ends_at = starts_at + plan.duration();
        self.experiments.insert(
            id,
            Experiment {
                plan,
                radius,
                phase: Phase::Scheduled,
                starts_at,
                ends_at,
            },
        );
        self.timers.insert((starts_at, id));
        self.handle_timeout(now);
        Ok(id)
    }

    /// Ends an experiment now: reverts it if active, cancels it if not yet started.
    ///
    /// # Errors
    ///
    /// [`AbortError::Unknown`]; nothing changed.
    pub fn abort(&mut self, now: Instant, id: ExperimentId) -> Result<(), AbortError> {
        if !self.experiments.contains_key(&id) {
            return Err(AbortError::Unknown { id });
        }
        self.end(id, EndReason::Aborted, now);
        Ok(())
    }

    /// Ends every experiment now and refuses new ones until [`rearm`](Self::rearm). Returns
    /// how many it ended.
    pub fn engage_kill_switch(&mut self, now: Instant) -> usize {
        self.kill_switch = true;
        let ids: Vec<ExperimentId> = self.experiments.keys().copied().collect();
        for &id in &ids {
            self.end(id, EndReason::KillSwitch, now);
        }
        ids.len()
    }

    /// Releases the kill switch: experiments may be scheduled again.
    pub fn rearm(&mut self) {
        self.kill_switch = false;
    }

    /// Whether the kill switch is engaged.
    pub fn is_kill_switch_engaged(&self) -> bool {
        self.kill_switch
    }

    /// The scheduled and active experiments, in id order.
    pub fn experiments(&self) -> impl Iterator<Item = (ExperimentId, &Experiment)> + '_ {
        self.experiments.iter().map(|(&id, e)| (id, e))
    }

    /// One experiment, if scheduled or active.
    pub fn experiment(&self, id: ExperimentId) -> Option<&Experiment> {
        self.experiments.get(&id)
    }

    /// When to call [`handle_timeout`](Self::handle_timeout) next: the next start or deadline.
    #[must_use]
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.timers.first().map(|&(t, _)| t)
    }

    /// Time has passed: ends every experiment whose deadline came, then activates every one
    /// whose start came.
    pub fn handle_timeout(&mut self, now: Instant) {
        // Reverts first (rule 3): collect what is due, deadlines before starts at each instant.
        let due: Vec<(Instant, ExperimentId)> = self
            .timers
            .range(..=(now, ExperimentId(u64::MAX)))
            .copied()
            .collect();
        let (ending, starting): (Vec<_>, Vec<_>) = due.into_iter().partition(|(_, id)| {
            self.experiments
                .get(id)
                .is_some_and(|e| e.phase == Phase::Active)
        });
        for (_, id) in ending {
            self.end(id, EndReason::Deadline, now);
        }
        for (at, id) in starting {
            self.timers.remove(&(at, id));
            let Some(experiment) = self.experiments.get_mut(&id) else {
                continue;
            };
            if now >= experiment.ends_at {
                self.end(id, EndReason::Missed, now);
                continue;
            }
            experiment.phase = Phase::Active;
            self.timers.insert((experiment.ends_at, id));
            tracing::info!(%id, kind = experiment.plan.kind().name(), until = %experiment.ends_at, "fault activated");
            self.events.push_back(FaultEvent::Activate {
                id,
                plan: experiment.plan.clone(),
                radius: experiment.radius.clone(),
                until: experiment.ends_at,
            });
        }
    }

    /// The next thing to apply.
    #[must_use]
    pub fn poll_event(&mut self) -> Option<FaultEvent> {
        self.events.pop_front()
    }

    fn end(&mut self, id: ExperimentId, reason: EndReason, now: Instant) {
        let Some(experiment) = self.experiments.remove(&id) else {
            return;
        };
        let timer = match experiment.phase {
            Phase::Scheduled => experiment.starts_at,
            Phase::Active => experiment.ends_at,
        };
        self.timers.remove(&(timer, id));
        match experiment.phase {
            Phase::Active => {
                tracing::info!(%id, kind = experiment.plan.kind().name(), ?reason, %now, "fault reverted");
                self.events.push_back(FaultEvent::Revert {
                    id,
                    plan: experiment.plan,
                    radius: experiment.radius,
                    reason,
                });
            }
            Phase::Scheduled => self.events.push_back(FaultEvent::Cancelled { id, reason }),
        }
    }
}
