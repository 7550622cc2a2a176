//! Core fault plans ([`FaultPlan`], docs/diagnostics.md) run through the simulator: the engine
//! drives the core's own [`FaultSchedule`], so a plan activates and reverts here exactly as its
//! schedule says it would on a real node (the dead-man revert at its deadline included), and
//! applies each activation's blast radius to the simulated network and processes.
//!
//! The kinds applied here are those the simulator models for scenario faults: kill (a crash,
//! restarted at the end), pause, partition (by groups: every shape but bridge and
//! majorities-ring, which cut single links) and clock skew. Other kinds are refused when the
//! plan is scheduled ([`PlanError::Unsupported`]), never ignored.

use std::collections::BTreeMap;

use meshkit::Instant;
use meshkit::diag::fault::{
    BlastRadius, ClusterView, EndReason, ExperimentId, FaultEvent as PlanEvent, FaultKind,
    FaultPlan, MAX_EXPERIMENTS, PartitionDirection, PartitionShape, ScheduleError, resolve,
};

use super::{Engine, FaultEvent, NodeState, What};
use crate::PlanError;
use crate::clock::RATE_ONE_PPM;
use crate::report::ExperimentRecord;

/// What an active experiment changed, so that its revert undoes exactly that.
#[derive(Debug)]
pub(super) enum Applied {
    /// The network partition it added.
    Partition(u64),
    /// The nodes it crashed, each with the life its restart must match.
    Killed(Vec<(usize, u32)>),
    /// The nodes it paused, each with the life its resume must match.
    Paused(Vec<(usize, u32)>),
    /// The nodes whose clock rate it set, each with the skew token its reset must match.
    Skewed(Vec<(usize, u64)>),
}

/// Node index `i` is member index `i` of the plan's view, `NodeId(i + 1)`.
fn index(id: meshkit::NodeId) -> usize {
    (id.get() - 1) as usize
}

/// Whether the simulator applies `kind`, and if not, why.
fn check_kind(kind: &FaultKind) -> Result<(), PlanError> {
    match kind {
        FaultKind::Kill {} | FaultKind::Pause {} | FaultKind::ClockSkew { .. } => Ok(()),
        FaultKind::Partition { shape, .. } => match shape {
            PartitionShape::Bridge | PartitionShape::MajoritiesRing => Err(PlanError::NoGroups {
                shape: shape.name(),
            }),
            _ => Ok(()),
        },
        other => Err(PlanError::Unsupported { kind: other.name() }),
    }
}

impl Engine<'_> {
    /// Schedules `plan` at the start of the run (it waits its own `start`), resolved against
    /// the mesh as numbered at the start: node index `i` is member index `i`, the scenario's
    /// regions assigned round-robin.
    pub(crate) fn schedule_plan(&mut self, plan: FaultPlan) -> Result<(), PlanError> {
        check_kind(plan.kind())?;
        let members = u32::try_from(self.nodes).unwrap_or(u32::MAX);
        let view = ClusterView::numbered(members, self.scenario.regions().max(1));
        let radius = resolve(&plan, &view)?;
        if let FaultKind::Partition { .. } = plan.kind() {
            let listed: usize = radius.groups.iter().map(Vec::len).sum();
            if listed != self.nodes || radius.groups.len() > usize::from(u8::MAX) {
                return Err(PlanError::NoGroups {
                    shape: "this partition",
                });
            }
        }
        let now = self.now;
        self.plans
            .schedule(now, plan, radius)
            .map_err(|e| match e {
                ScheduleError::Full { max } => PlanError::TooMany { max },
                _ => PlanError::TooMany {
                    max: MAX_EXPERIMENTS,
                },
            })?;
        // Activations due now are applied by the event loop, like every other fault.
        self.queue.push(now, What::Plans);
        Ok(())
    }

    /// The plans' wakeup: runs the schedule, applies what it says, and re-arms.
    pub(super) fn run_plans(&mut self) {
        let now = self.now;
        if self.plans_armed.is_some_and(|at| at <= now) {
            self.plans_armed = None;
        }
        self.plans.handle_timeout(now);
        while let Some(event) = self.plans.poll_event() {
            match event {
                PlanEvent::Activate {
                    id,
                    plan,
                    radius,
                    until,
                } => self.activate(id, &plan, &radius, until),
                PlanEvent::Revert { id, reason, .. } => self.revert(id, reason),
                PlanEvent::Cancelled { id, reason } => {
                    if let Some(r) = self.experiment_record(id) {
                        r.end = Some(end_name(reason).to_owned());
                    }
                }
                _ => {}
            }
        }
        // One wakeup in the queue for the schedule's next timer (an earlier one is added when
        // a new plan brings its timer forward; a later stale one finds nothing due).
        if let Some(next) = self.plans.poll_timeout()
            && self.plans_armed.is_none_or(|at| next < at)
        {
            self.plans_armed = Some(next.max(now));
            self.queue.push(next.max(now), What::Plans);
        }
    }

    fn experiment_record(&mut self, id: ExperimentId) -> Option<&mut ExperimentRecord> {
        self.experiments.iter_mut().find(|r| r.id == id.get())
    }

    fn activate(
        &mut self,
        id: ExperimentId,
        plan: &FaultPlan,
        radius: &BlastRadius,
        until: Instant,
    ) {
        let now = self.now;
        let nodes: Vec<usize> = radius.nodes.iter().map(|&n| index(n)).collect();
        let applied = match plan.kind() {
            FaultKind::Partition { direction, .. } => {
                let mut group = vec![0u8; self.nodes];
                for (k, members) in radius.groups.iter().enumerate() {
                    for &m in members {
                        // At most u8::MAX groups (checked when scheduled).
                        group[index(m)] = k as u8;
                    }
                }
                let one_way = *direction == PartitionDirection::OneWay;
                Applied::Partition(self.start_partition(group, one_way))
            }
            FaultKind::Kill {} => {
                let mut killed = Vec::new();
                for i in nodes.iter().copied() {
                    if matches!(self.slots[i].state, NodeState::Running | NodeState::Paused) {
                        self.crash(i);
                        killed.push((i, self.slots[i].life));
                    }
                }
                Applied::Killed(killed)
            }
            FaultKind::Pause {} => {
                let mut paused = Vec::new();
                for i in nodes.iter().copied() {
                    if self.slots[i].state == NodeState::Running {
                        let life = self.pause_node(i);
                        self.pause_lease(i);
                        paused.push((i, life));
                    }
                }
                Applied::Paused(paused)
            }
            FaultKind::ClockSkew { rate } => {
                let ppm = (rate * RATE_ONE_PPM as f64).round() as u64;
                let mut skewed = Vec::new();
                for i in nodes.iter().copied() {
                    if matches!(self.slots[i].state, NodeState::Running | NodeState::Paused) {
                        self.set_clock_rate(i, ppm);
                        skewed.push((i, self.slots[i].skew_token));
                    }
                }
                Applied::Skewed(skewed)
            }
            // Refused when scheduled.
            _ => return,
        };
        self.applied.insert(id, applied);
        self.experiments.push(ExperimentRecord {
            id: id.get(),
            kind: plan.kind().name().to_owned(),
            nodes: nodes.iter().map(|&i| i as u32).collect(),
            links: radius.links.len(),
            groups: radius.groups.iter().map(Vec::len).collect(),
            activated_s: secs(now),
            until_s: secs(until),
            reverted_s: None,
            end: None,
        });
    }

    fn revert(&mut self, id: ExperimentId, reason: EndReason) {
        let now = self.now;
        match self.applied.remove(&id) {
            Some(Applied::Partition(p)) => {
                self.apply(FaultEvent::HealPartition { id: p });
            }
            Some(Applied::Killed(nodes)) => {
                for (i, life) in nodes {
                    self.apply(FaultEvent::Restart {
                        node: i as u32,
                        life,
                    });
                }
            }
            Some(Applied::Paused(nodes)) => {
                for (i, life) in nodes {
                    self.resume(i, life);
                }
            }
            Some(Applied::Skewed(nodes)) => {
                for (i, token) in nodes {
                    self.apply(FaultEvent::ResetSkew {
                        node: i as u32,
                        token,
                    });
                }
            }
            None => {}
        }
        if let Some(r) = self.experiment_record(id) {
            r.reverted_s = Some(secs(now));
            r.end = Some(end_name(reason).to_owned());
        }
    }
}

/// Seconds of virtual time since the start.
fn secs(t: Instant) -> f64 {
    t.as_nanos() as f64 / 1e9
}

fn end_name(reason: EndReason) -> &'static str {
    match reason {
        EndReason::Deadline => "deadline",
        EndReason::Aborted => "aborted",
        EndReason::KillSwitch => "kill-switch",
        EndReason::Missed => "missed",
        _ => "other",
    }
}

/// Keeps the map type named where the engine declares its field.
pub(super) type AppliedMap = BTreeMap<ExperimentId, Applied>;
