//! Fault plans ([`FaultPlan`], docs/diagnostics.md) run through the simulator: the one path by
//! which anything faulty happens to the simulated mesh.
//!
//! Every fault reaches the engine as a plan: the scenario's `[[fault]]` occurrences (lowered by
//! [`Engine::start_lowered`] from the victims or groups the fault stream drew, or given as a
//! plan with `action = "plan"`) and the plans given to [`crate::run_with_plans`]. A plan starts
//! at its start time: it is resolved then, against the mesh as it is at that moment
//! ([`Engine::cluster_view`]: the role selectors name the current Raft leader, lease holder or
//! shard owner), and scheduled on the core's own [`FaultSchedule`], which activates it at once
//! and reverts it at its deadline by itself (the dead-man revert), exactly as its schedule
//! would on a real node. Each activation is applied to the network model (as a link rule: a
//! partition's cut, latency, loss, bursty loss, duplication, reordering, on the directed links
//! of its radius) or to the processes (kill, pause, clock skew), and its revert undoes exactly
//! that.
//!
//! A membership surge boots `[topology]` spares (slots after the members, down and unknown to
//! everyone until then) at its activation, each through the restart path with a fresh
//! incarnation and the plan's selected nodes as its join seeds, and has each leave gracefully
//! at its revert (the `leave` path); its record lists the joins, the leaves and the live
//! member count at both edges. A surge larger than the spares left is refused
//! ([`PlanError::NotEnoughSpares`]).
//!
//! Refused, never ignored: as given plans, the real-node kinds, transport downgrade and
//! certificate expiry (the simulated network has no HTTP/3 listener and no certificates;
//! [`PlanError::RealNodeOnly`]). A scenario file may hold those two, because the same file
//! drives real nodes (`meshkit-chaos --env compose`): the run lists them in its report's
//! experiments as `not modelled`, and they touch nothing here.

use std::collections::{BTreeMap, BTreeSet};

use meshkit::diag::fault::{
    BlastRadius, ClusterView, EndReason, ExperimentId, FaultEvent as PlanEvent, FaultKind,
    FaultPlan, FaultSchedule, LinkDirection, LinkEnds, MAX_EXPERIMENTS, PartitionDirection,
    PartitionShape, Phase, ScheduleError, Selector, link_ends, resolve,
};
use meshkit::lease::LeaseGroup;
use meshkit::membership::MemberState;
use meshkit::{Duration, Instant, RATE_ONE_PPM, SkewedClock};
use rand::RngExt;

use super::{Engine, NodeState, What, id};
use crate::PlanError;
use crate::fault::{RESTART_JOIN_SEEDS, check_plan_kind};
use crate::network::{LinkEffect, LinkSet};
use crate::observer::DETECTION_QUORUM;
use crate::report::ExperimentRecord;
use crate::scenario::{BurstSpec, NodeSelector};

/// The engine's fault plans: the schedule and what each active experiment changed.
#[derive(Debug, Default)]
pub(super) struct Plans {
    schedule: FaultSchedule,
    /// Plans given to the run, waiting for their start (index = `What::PlanStart`).
    waiting: Vec<FaultPlan>,
    /// A link fault's ends between its scheduling and its activation (the same instant).
    ends: BTreeMap<ExperimentId, LinkEnds>,
    /// What each active experiment changed.
    applied: BTreeMap<ExperimentId, Applied>,
    /// The experiments the report lists (given plans and `action = "plan"` occurrences; the
    /// lowered scenario actions are counted by their own figures).
    recorded: BTreeSet<ExperimentId>,
    /// Every recorded experiment, as the report shows it.
    pub(super) records: Vec<ExperimentRecord>,
    /// Spares the given membership-surge plans will boot, in all.
    spares_promised: u32,
}

/// What an active experiment changed, so that its revert undoes exactly that.
#[derive(Debug)]
enum Applied {
    /// A network rule (a partition's cut or a link fault), by id; partitions by groups are
    /// also measured by the observer under the same id.
    Rule(u64),
    /// The nodes it crashed, each with the life its restart must match.
    Killed(Vec<(usize, u32)>),
    /// The nodes it paused, each with the life its resume must match.
    Paused(Vec<(usize, u32)>),
    /// The nodes whose clock rate it set, each with the skew token its reset must match.
    Skewed(Vec<(usize, u64)>),
    /// The spares a membership surge booted; each still running leaves gracefully at the
    /// revert.
    Joined(Vec<usize>),
}

/// Node index `i` is member index `i` of the plan's view, `NodeId(i + 1)`.
fn index(id: meshkit::NodeId) -> usize {
    (id.get() - 1) as usize
}

/// Whether a selector is read from the mesh's roles when the plan starts.
fn is_role(selector: &Selector) -> bool {
    matches!(
        selector,
        Selector::RaftLeader | Selector::LeaseHolder(_) | Selector::ShardOwner(_)
    )
}

impl Engine<'_> {
    /// Takes `plan` for this run, given before it starts: it waits its own `start`, then is
    /// resolved against the mesh as it is then. Refuses now what can never run: a kind the
    /// simulator does not apply, or a selector naming what the numbered mesh does not have
    /// (an index beyond the node count); a role nobody holds at the start is recorded as
    /// `unresolved` then.
    pub(crate) fn schedule_plan(&mut self, plan: FaultPlan) -> Result<(), PlanError> {
        check_plan_kind(plan.kind())?;
        if let FaultKind::MembershipSurge { joins } = *plan.kind() {
            // Given plans take their spares in the order given; a scenario's surges were
            // counted against `[topology] spares` when it was parsed.
            let spares = u32::try_from(self.nodes - self.next_spare).unwrap_or(u32::MAX);
            let taken = self.plans.spares_promised.saturating_add(joins);
            if taken > spares {
                return Err(PlanError::NotEnoughSpares {
                    joins: taken,
                    spares,
                });
            }
            self.plans.spares_promised = taken;
        }
        if !is_role(plan.selector()) && !is_role(plan.peers()) {
            let members = u32::try_from(self.nodes).unwrap_or(u32::MAX);
            resolve(&plan, &ClusterView::numbered(members, self.regions()))?;
        }
        if self.plans.waiting.len() >= MAX_EXPERIMENTS {
            return Err(PlanError::TooMany {
                max: MAX_EXPERIMENTS,
            });
        }
        let at = self.now + plan.start();
        self.plans.waiting.push(plan);
        let k = u32::try_from(self.plans.waiting.len() - 1).unwrap_or(u32::MAX);
        self.queue.push(at, What::PlanStart(k));
        Ok(())
    }

    /// A given plan's start came.
    pub(super) fn plan_start(&mut self, k: u32) {
        let Some(plan) = self.plans.waiting.get(k as usize).cloned() else {
            return;
        };
        self.start_or_record(plan);
    }

    /// Starts `plan` now; a plan that does not resolve against the mesh of this moment (no
    /// lease holder to name, say) is kept in the report as an experiment that never ran,
    /// with the reason, instead of stopping the run.
    ///
    /// A real-node fault from a scenario file (transport downgrade, certificate expiry: the
    /// simulated network has neither an HTTP/3 listener nor certificates) is recorded as not
    /// modelled, over the window it would have lasted, and touches nothing.
    pub(super) fn start_or_record(&mut self, plan: FaultPlan) {
        let now = self.now;
        let kind = plan.kind().name().to_owned();
        let lasts = plan.duration();
        if let Err(e) = self.start_plan(plan, true) {
            let (until, end) = match e {
                PlanError::RealNodeOnly { .. } | PlanError::NotModelled { .. } => {
                    (now + lasts, format!("not modelled: {e}"))
                }
                e => (now, format!("unresolved: {e}")),
            };
            self.plans.records.push(ExperimentRecord {
                id: u64::MAX,
                kind,
                nodes: Vec::new(),
                links: 0,
                groups: Vec::new(),
                activated_s: secs(now),
                until_s: secs(until),
                reverted_s: None,
                end: Some(end),
                joined: Vec::new(),
                left: Vec::new(),
                members_at_activation: None,
                members_at_revert: None,
            });
        }
    }

    /// A scenario fault occurrence of `kind` on what the fault stream drew (`selector` names
    /// indices or explicit groups), lasting `lasts`: started as a plan now. `None` for
    /// `lasts` means the rest of the run: its deadline falls after the run's end, so it never
    /// reverts within it (as a fault without an end never did).
    pub(super) fn start_lowered(
        &mut self,
        kind: FaultKind,
        selector: Selector,
        lasts: Option<Duration>,
    ) {
        let lasts = lasts.unwrap_or_else(|| self.rest_of_run());
        let lasts = lasts.clamp(
            Duration::from_millis(1),
            meshkit::diag::fault::MAX_FAULT_DURATION,
        );
        // Scenario values were checked when parsed, and the drawn indices are node indices:
        // neither can make a plan that fails here; if one did, the fault would do nothing,
        // which the report's figures would show.
        if let Ok(plan) = FaultPlan::new(kind, selector, lasts) {
            let _ = self.start_plan(plan, false);
        }
    }

    /// The rest of the run, plus one nanosecond: a deadline past the last instant the run
    /// processes.
    pub(super) fn rest_of_run(&self) -> Duration {
        (self.end - self.now) + Duration::from_nanos(1)
    }

    /// Resolves `plan` against the mesh now and activates it (its `start` has come).
    pub(super) fn start_plan(&mut self, plan: FaultPlan, record: bool) -> Result<(), PlanError> {
        check_plan_kind(plan.kind())?;
        let view = self.cluster_view(&plan);
        let radius = resolve(&plan, &view)?;
        let ends = link_ends(&plan, &view)?;
        let plan = if plan.start().is_zero() {
            plan
        } else {
            plan.with_start(Duration::ZERO)
                .expect("a zero start is always in range")
        };
        let mut radius = radius;
        radius.start = Duration::ZERO;
        let now = self.now;
        let id = self
            .plans
            .schedule
            .schedule(now, plan, radius)
            .map_err(|e| match e {
                ScheduleError::Full { max } => PlanError::TooMany { max },
                _ => PlanError::TooMany {
                    max: MAX_EXPERIMENTS,
                },
            })?;
        if let Some(ends) = ends {
            self.plans.ends.insert(id, ends);
        }
        if record {
            self.plans.recorded.insert(id);
        }
        self.run_plans();
        Ok(())
    }

    /// Ends every active partition now (the scenario's `heal`).
    pub(super) fn heal_partitions(&mut self) {
        let now = self.now;
        let active: Vec<ExperimentId> = self
            .plans
            .schedule
            .experiments()
            .filter(|(_, e)| {
                e.phase == Phase::Active && matches!(e.plan.kind(), FaultKind::Partition { .. })
            })
            .map(|(id, _)| id)
            .collect();
        for id in active {
            // Listed just now as scheduled or active: abort cannot fail.
            let _ = self.plans.schedule.abort(now, id);
        }
        self.run_plans();
    }

    /// The plans' wakeup: runs the schedule and applies what it says. Every activation queues
    /// its own deadline's wakeup; a wakeup with nothing due is a no-op.
    pub(super) fn run_plans(&mut self) {
        let now = self.now;
        self.plans.schedule.handle_timeout(now);
        while let Some(event) = self.plans.schedule.poll_event() {
            match event {
                PlanEvent::Activate {
                    id,
                    plan,
                    radius,
                    until,
                } => {
                    self.activate(id, &plan, &radius, until);
                    self.queue.push(until, What::Plans);
                }
                PlanEvent::Revert { id, reason, .. } => self.revert(id, reason),
                PlanEvent::Cancelled { id, reason } => {
                    if let Some(r) = self.experiment_record(id) {
                        r.end = Some(end_name(reason).to_owned());
                    }
                }
                _ => {}
            }
        }
    }

    /// The mesh as a plan starting now sees it: every node slot that has been a member (node
    /// index `i` is member index `i`; `[topology]` spares no surge has booted yet are not in
    /// it), regions round-robin as the network assigns them, and the roles the plan's
    /// selectors name, as they are now.
    fn cluster_view(&self, plan: &FaultPlan) -> ClusterView {
        let members = u32::try_from(self.next_spare).unwrap_or(u32::MAX);
        let mut view = ClusterView::numbered(members, self.regions());
        let Some(run) = self.leases.as_ref() else {
            return view;
        };
        let alive = |i: usize| {
            matches!(
                self.slots[i].state,
                NodeState::Running | NodeState::Paused | NodeState::Leaving
            )
        };
        for selector in [plan.selector(), plan.peers()] {
            match selector {
                Selector::RaftLeader => {
                    let leader = (0..self.nodes).find(|&i| {
                        alive(i)
                            && self.slots[i]
                                .node
                                .as_ref()
                                .and_then(|n| n.lease_group())
                                .is_some_and(LeaseGroup::is_leader)
                    });
                    view = view.with_raft_leader(leader.map(id));
                }
                Selector::LeaseHolder(scope) => {
                    let holder = (0..self.nodes).find(|&i| {
                        let slot = &self.slots[i];
                        alive(i)
                            && slot.node.as_ref().is_some_and(|n| {
                                n.holds(slot.clock.local(self.now), scope).is_some()
                            })
                    });
                    if let Some(h) = holder {
                        view = view.with_lease_holder(scope.clone(), id(h));
                    }
                }
                Selector::ShardOwner(shard) => {
                    let owner = run.shards.as_ref().and_then(|sh| {
                        (shard.namespace() == run_namespace(self))
                            .then(|| sh.owner(shard.id() as usize))
                            .flatten()
                    });
                    if let Some(o) = owner {
                        view = view.with_shard_owner(shard.clone(), o);
                    }
                }
                _ => {}
            }
        }
        view
    }

    fn regions(&self) -> u32 {
        self.scenario.regions().max(1)
    }

    fn experiment_record(&mut self, id: ExperimentId) -> Option<&mut ExperimentRecord> {
        self.plans.records.iter_mut().find(|r| r.id == id.get())
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
        let ends = self.plans.ends.remove(&id);
        let applied = match plan.kind() {
            FaultKind::Partition { shape, direction } => {
                let covers = radius.groups.iter().map(Vec::len).sum::<usize>() == self.next_spare
                    && radius.groups.len() <= usize::from(u8::MAX)
                    && !matches!(
                        shape,
                        PartitionShape::Bridge | PartitionShape::MajoritiesRing
                    );
                if covers {
                    let mut group = vec![0u8; self.nodes];
                    for (k, members) in radius.groups.iter().enumerate() {
                        for &m in members {
                            // At most u8::MAX groups (checked just above).
                            group[index(m)] = k as u8;
                        }
                    }
                    let one_way = *direction == PartitionDirection::OneWay;
                    Applied::Rule(self.start_partition(group, one_way))
                } else {
                    // The bridge and the ring cut single links, not groups: the network cuts
                    // exactly the radius's links (the observer's side figures need groups).
                    let links = radius
                        .links
                        .iter()
                        .map(|l| (index(l.from) as u32, index(l.to) as u32))
                        .collect();
                    Applied::Rule(self.start_link_rule(LinkSet::Links(links), LinkEffect::Cut))
                }
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
            FaultKind::MembershipSurge { joins } => {
                Applied::Joined(self.surge(&nodes, *joins as usize))
            }
            FaultKind::ClockSkew { rate } => {
                let ppm = SkewedClock::ppm(*rate);
                let mut skewed = Vec::new();
                for i in nodes.iter().copied() {
                    if matches!(self.slots[i].state, NodeState::Running | NodeState::Paused) {
                        self.set_clock_rate(i, ppm);
                        skewed.push((i, self.slots[i].skew_token));
                    }
                }
                Applied::Skewed(skewed)
            }
            kind => {
                let (Some(ends), Some(effect)) = (ends, link_effect(kind)) else {
                    // Refused before scheduling (check_kind); a link fault always has ends.
                    return;
                };
                let mask = |set: &[meshkit::NodeId]| {
                    let mut m = vec![false; self.nodes];
                    for &n in set {
                        m[index(n)] = true;
                    }
                    m
                };
                let (s, p) = (mask(&ends.selected), mask(&ends.peers));
                let links = match ends.direction {
                    LinkDirection::Outbound => LinkSet::Ends {
                        from: s,
                        to: p,
                        both: false,
                    },
                    LinkDirection::Inbound => LinkSet::Ends {
                        from: p,
                        to: s,
                        both: false,
                    },
                    _ => LinkSet::Ends {
                        from: s,
                        to: p,
                        both: true,
                    },
                };
                Applied::Rule(self.start_link_rule(links, effect))
            }
        };
        let (joined, members) = match &applied {
            Applied::Joined(spares) => (
                spares.iter().map(|&i| i as u32).collect(),
                Some(self.observer.live_count() as u32),
            ),
            _ => (Vec::new(), None),
        };
        self.plans.applied.insert(id, applied);
        if self.plans.recorded.contains(&id) {
            self.plans.records.push(ExperimentRecord {
                id: id.get(),
                kind: plan.kind().name().to_owned(),
                nodes: nodes.iter().map(|&i| i as u32).collect(),
                links: radius.links.len(),
                groups: radius.groups.iter().map(Vec::len).collect(),
                activated_s: secs(now),
                until_s: secs(until),
                reverted_s: None,
                end: None,
                joined,
                left: Vec::new(),
                members_at_activation: members,
                members_at_revert: None,
            });
        }
    }

    /// A membership surge: boots the next `joins` spares (fewer if fewer are left) through the
    /// restart path (a fresh process at a new boot incarnation, `Engine::boot_node`), each
    /// joining through `selected`, the plan's nodes that run now (through random running
    /// members, as a restart does, when none of them does). Returns the spares booted.
    fn surge(&mut self, selected: &[usize], joins: usize) -> Vec<usize> {
        let running = |s: NodeState| s == NodeState::Running;
        let mut seeds: Vec<usize> = selected
            .iter()
            .copied()
            .filter(|&i| running(self.slots[i].state))
            .collect();
        if seeds.is_empty() {
            seeds = self.pick(&NodeSelector::Count(RESTART_JOIN_SEEDS as u32), running);
        }
        let seeds: Vec<meshkit::NodeId> = seeds.into_iter().map(id).collect();
        let spares: Vec<usize> = (self.next_spare..self.nodes).take(joins).collect();
        self.next_spare += spares.len();
        for &i in &spares {
            self.log(i, "joining (membership surge)");
            let seed: u64 = self.fault_rng.random();
            self.boot_node(i, seed, &seeds);
        }
        spares
    }

    /// Counts a surge's booted spares, and those 99% of the other live nodes hold Alive now
    /// (the surge's end, or the run's).
    fn count_joins(&mut self, spares: &[usize]) {
        for &i in spares {
            self.counters.joins += 1;
            if self.held_by_quorum(i, |m| m == Some(MemberState::Alive)) {
                self.counters.joins_seen += 1;
            }
        }
    }

    /// Surges still active at the end of the run: their joins are counted now.
    pub(super) fn count_active_joins(&mut self) {
        let active: Vec<Vec<usize>> = self
            .plans
            .applied
            .values()
            .filter_map(|a| match a {
                Applied::Joined(spares) => Some(spares.clone()),
                _ => None,
            })
            .collect();
        for spares in active {
            self.count_joins(&spares);
        }
    }

    /// Whether 99% of the live nodes other than `i` (rounded up; [`DETECTION_QUORUM`], the
    /// compose runner's share too) pass `holds` with their table's state of `i` (`None`: not
    /// listed). No live other node: false.
    pub(super) fn held_by_quorum(
        &self,
        i: usize,
        holds: impl Fn(Option<MemberState>) -> bool,
    ) -> bool {
        let member = id(i);
        let mut others = 0usize;
        let mut holding = 0usize;
        for (o, slot) in self.slots.iter().enumerate() {
            if o == i || !matches!(slot.state, NodeState::Running | NodeState::Paused) {
                continue;
            }
            let Some(node) = slot.node.as_ref() else {
                continue;
            };
            others += 1;
            if holds(node.membership().member(member).map(|m| m.state)) {
                holding += 1;
            }
        }
        others > 0 && holding >= (others as f64 * DETECTION_QUORUM).ceil() as usize
    }

    /// Starts a network rule that is not a partition by groups; returns its id.
    fn start_link_rule(&mut self, links: LinkSet, effect: LinkEffect) -> u64 {
        self.next_partition += 1;
        let id = self.next_partition;
        let cut = effect == LinkEffect::Cut;
        self.net.add_rule(id, links, effect);
        if cut {
            self.partition_started();
        }
        id
    }

    fn revert(&mut self, id: ExperimentId, reason: EndReason) {
        let now = self.now;
        match self.plans.applied.remove(&id) {
            Some(Applied::Rule(rule)) => {
                let was_active = self.net.remove_rule(rule);
                // The observer knows only partitions by groups; another id is a no-op there.
                if was_active {
                    self.observer.on_heal(now, Some(rule));
                }
            }
            Some(Applied::Killed(nodes)) => {
                for (i, life) in nodes {
                    let slot = &self.slots[i];
                    if slot.life == life && slot.state == NodeState::Crashed {
                        self.restart(i);
                    }
                }
            }
            Some(Applied::Paused(nodes)) => {
                for (i, life) in nodes {
                    self.resume(i, life);
                }
            }
            Some(Applied::Skewed(nodes)) => {
                for (i, token) in nodes {
                    if self.slots[i].skew_token == token {
                        self.set_clock_rate(i, RATE_ONE_PPM);
                    }
                }
            }
            Some(Applied::Joined(spares)) => {
                // A graceful leave, as the scenario's `leave`: only a running process can
                // announce it (a crashed one is gone already; a paused one stays a member
                // until it resumes, and the record does not list it as left).
                self.count_joins(&spares);
                let mut left = Vec::new();
                for i in spares {
                    if self.slots[i].state == NodeState::Running {
                        self.leave_node(i);
                        left.push(i as u32);
                    }
                }
                let members = self.observer.live_count() as u32;
                if let Some(r) = self.experiment_record(id) {
                    r.left = left;
                    r.members_at_revert = Some(members);
                }
            }
            None => {}
        }
        self.plans.recorded.remove(&id);
        if let Some(r) = self.experiment_record(id) {
            r.reverted_s = Some(secs(now));
            r.end = Some(end_name(reason).to_owned());
        }
    }
}

/// The `[shards]` namespace of the run (empty without one).
fn run_namespace<'a>(engine: &'a Engine<'_>) -> &'a str {
    engine
        .scenario
        .shards()
        .map_or("", |s| s.namespace.as_str())
}

/// The network effect of a link fault kind.
fn link_effect(kind: &FaultKind) -> Option<LinkEffect> {
    let ns = |d: Duration| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX);
    Some(match *kind {
        FaultKind::Latency { delay, jitter } => LinkEffect::Latency {
            delay_ns: ns(delay),
            jitter_ns: ns(jitter),
        },
        FaultKind::Loss { rate } => LinkEffect::Loss(rate),
        FaultKind::BurstyLoss { enter, leave, loss } => {
            LinkEffect::Burst(BurstSpec { enter, leave, loss })
        }
        FaultKind::Duplicate { rate } => LinkEffect::Duplicate(rate),
        FaultKind::Reorder { rate, max_delay } => LinkEffect::Reorder {
            rate,
            max_ns: ns(max_delay),
        },
        _ => return None,
    })
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
