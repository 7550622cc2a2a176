//! A scenario's fault timeline as actions on a compose stack: which tool applies each fault
//! (the Docker API for processes, the nodes' chaos endpoints for links and transports) and
//! which faults cannot be applied there, refused before anything starts.
//!
//! Pure: no Docker, no network. [`timeline`] expands every `[[fault]]` entry (its `count`,
//! `every` and `jitter`, drawn from the run's seed) into [`Step`]s in time order; random node
//! selectors stay selectors and are drawn when the step fires, among the nodes that are then
//! candidates, as the simulator draws them.

use core::time::Duration;

use meshkit::diag::fault::{
    FaultKind, FaultPlan, FaultPlanError, PartitionDirection, PartitionShape as CoreShape, Selector,
};
use meshkit_sim::Scenario;
use meshkit_sim::scenario::{Expectations, FaultAction, NodeSelector, PartitionShape};
use rand::{RngExt, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::Serialize;
use thiserror::Error;

/// The longest chaos experiment a compose node accepts: `[chaos] max_duration` in the
/// configurations `compose/env.py` writes.
pub const COMPOSE_MAX_FAULT: Duration = Duration::from_secs(600);

/// Which nodes a process action acts on, drawn when it fires.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Pick {
    /// That many distinct random candidates (all if fewer).
    Count(u32),
    /// That share (percent) of the candidates, rounded, at least one.
    Percent(f64),
    /// These node indices (index `i` is node id `i + 1`, container `meshkit-{i+1}`).
    Indices(Vec<u32>),
    /// The holder of `global-control` (the scope every compose node campaigns for).
    Holder,
    /// The Raft leader of the voters.
    RaftLeader,
}

impl Pick {
    /// `None` for a selector the simulator grew after this runner: refused, not guessed.
    fn from_sim(sel: &NodeSelector) -> Option<Self> {
        Some(match *sel {
            NodeSelector::Count(n) => Self::Count(n),
            NodeSelector::Percent(p) => Self::Percent(p),
            NodeSelector::Range { start, end } => Self::Indices((start..end).collect()),
            NodeSelector::Index(i) => Self::Indices(vec![i]),
            NodeSelector::Holder => Self::Holder,
            NodeSelector::RaftLeader => Self::RaftLeader,
            _ => return None,
        })
    }

    fn from_core(sel: &Selector, fault: usize) -> Result<Self, Refusal> {
        Ok(match sel {
            Selector::All => Self::Percent(100.0),
            Selector::Indices(i) => Self::Indices(i.clone()),
            Selector::Count(n) => Self::Count(*n),
            Selector::Share(p) => Self::Percent(f64::from(*p)),
            Selector::LeaseHolder(scope) if scope.as_str() == "global-control" => Self::Holder,
            Selector::RaftLeader => Self::RaftLeader,
            other => {
                return Err(Refusal::Unsupported {
                    fault,
                    what: format!("selector {other}"),
                    why: "compose nodes contend only for global-control, in one region, without \
                          shards; use an index, a count, a share, \"holder\" or \"raft-leader\""
                        .to_owned(),
                });
            }
        })
    }

    /// The same choice as a fault plan's selector, for faults the nodes apply themselves (the
    /// node that takes the start call draws a count or share with the plan's seed).
    fn to_core(&self) -> Selector {
        match self {
            Self::Count(n) => Selector::Count(*n),
            Self::Percent(p) => Selector::Share(p.round().clamp(0.0, 100.0) as u32),
            Self::Indices(i) => Selector::Indices(i.clone()),
            Self::Holder => Selector::LeaseHolder(meshkit::lease::Scope::global_control()),
            Self::RaftLeader => Selector::RaftLeader,
        }
    }

    /// The largest index named, for the check against the stack's size.
    fn max_index(&self) -> Option<u32> {
        match self {
            Self::Indices(i) => i.iter().copied().max(),
            _ => None,
        }
    }
}

/// What one step does.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(tag = "action", rename_all = "kebab-case")]
pub enum Action {
    /// `docker kill` (SIGKILL) the picked running nodes; `docker start` them again after
    /// `restart_after` when given (the node rejoins with its data directory, as the simulator's
    /// voters keep their Raft log).
    Kill {
        /// Which nodes, among running or paused ones.
        nodes: Pick,
        /// Start them again this much later.
        restart_after: Option<Duration>,
    },
    /// `docker start` the picked killed nodes.
    Start {
        /// Which nodes, among killed ones.
        nodes: Pick,
    },
    /// `docker pause` (the cgroup freezer) the picked running nodes, `docker unpause` after
    /// `duration`.
    Pause {
        /// Which nodes, among running ones.
        nodes: Pick,
        /// How long.
        duration: Duration,
    },
    /// A fault plan through the chaos endpoints of a running node (plan, then start with the
    /// confirmation token, as `mesh.admin`); every target reverts it at its deadline.
    Chaos {
        /// The plan (its duration is the fault's).
        plan: FaultPlan,
    },
    /// Abort every partition experiment this run started that is still active.
    Heal,
    /// A membership surge: new `meshkitd` containers from the stack's spares (`compose/up
    /// --spares`), created and started through the Docker API with certificates from the run's
    /// CA; removed when the run ends. A scenario's `join` names them by index (indices of
    /// running nodes are already members: nothing to do), a `membership-surge` plan by count
    /// (the lowest spares), and the plan's joiners leave gracefully (`docker stop`) at its
    /// deadline, as in the simulator.
    Join {
        /// Which nodes: [`Pick::Indices`] or [`Pick::Count`].
        nodes: Pick,
        /// A plan's duration: the joined nodes leave this long after they started.
        #[serde(skip_serializing_if = "Option::is_none", serialize_with = "opt_secs")]
        leave_after: Option<Duration>,
    },
    /// The certificate rotation drill: a new certificate from the run's CA written into each
    /// picked running node's `[tls]` files in turn, the first at once and the others spread
    /// evenly over `over` ([`crate::rotation`]); each node's certificate reload picks its
    /// files up while the probe agent and the runner keep calling every node. Checked at the
    /// end: every node serves its new certificate, and no handshake was refused.
    Rotate {
        /// Which nodes, among running ones.
        nodes: Pick,
        /// How long the roll-over is spread over (the plan's duration).
        over: Duration,
    },
    /// A graceful leave: `docker stop` (SIGTERM) of the picked running nodes, on which
    /// meshkitd announces its departure and exits, as the simulator's `leave`.
    Leave {
        /// Which nodes, among running ones.
        nodes: Pick,
    },
}

impl Action {
    /// A short name for logs, file names and the report.
    pub fn name(&self) -> String {
        match self {
            Self::Kill { .. } => "kill".to_owned(),
            Self::Start { .. } => "start".to_owned(),
            Self::Pause { .. } => "pause".to_owned(),
            Self::Chaos { plan } => plan.kind().name().to_owned(),
            Self::Heal => "heal".to_owned(),
            Self::Join { .. } => "membership-surge".to_owned(),
            Self::Leave { .. } => "leave".to_owned(),
            Self::Rotate { .. } => "certificate-rotation".to_owned(),
        }
    }
}

/// One action at one time of the run.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Step {
    /// Since the start of the run.
    #[serde(serialize_with = "secs")]
    pub at: Duration,
    /// The `[[fault]]` entry (from 0, in file order); `None` for the `[network]` section's
    /// background loss.
    pub fault: Option<usize>,
    /// Which of its occurrences (from 0).
    pub occurrence: u32,
    /// What it does.
    #[serde(flatten)]
    pub action: Action,
}

fn secs<S: serde::Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_f64(d.as_secs_f64())
}

fn opt_secs<S: serde::Serializer>(d: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
    match d {
        Some(d) => s.serialize_f64(d.as_secs_f64()),
        None => s.serialize_none(),
    }
}

/// Why a scenario cannot run on a compose stack. Nothing ran.
#[derive(Clone, Debug, Error, PartialEq)]
#[non_exhaustive]
pub enum Refusal {
    /// A fault with no real counterpart here.
    #[error("{n} ({what}) cannot be applied in compose: {why}", n = entry(*fault))]
    Unsupported {
        /// The entry, from 0.
        fault: usize,
        /// The fault, as the file names it.
        what: String,
        /// Why, and what to do instead.
        why: String,
    },
    /// A node index beyond the stack.
    #[error(
        "{n} names node index {index}, but the stack has {nodes} nodes (indices \
         0..{nodes}): bring up more with `compose/up --nodes {want}` or change the selector",
        n = entry(*fault), want = index + 1
    )]
    IndexBeyondStack {
        /// The entry, from 0.
        fault: usize,
        /// The index.
        index: u32,
        /// Nodes in the stack.
        nodes: u32,
    },
    /// A fault that would outlast what the nodes accept.
    #[error(
        "{n} lasts {s:.0} s, over the {max} s the compose nodes accept (`[chaos] \
         max_duration`); shorten it or give the run a shorter --duration", n = entry(*fault),
         s = duration.as_secs_f64(), max = COMPOSE_MAX_FAULT.as_secs()
    )]
    TooLong {
        /// The entry, from 0.
        fault: usize,
        /// Its length.
        duration: Duration,
    },
    /// A membership surge larger than the spares the stack was brought up with.
    #[error(
        "the scenario's membership surges start {joins} nodes (by id: {named:?}), but the stack \
         has {spares} spares: bring it up with `compose/up --spares K` so that the ids fit \
         (spares are ids N+1..N+K; --nodes + --spares at most 29)"
    )]
    NotEnoughSpares {
        /// Nodes the surges start.
        joins: u32,
        /// Spares prepared.
        spares: u32,
        /// The ids the surges name.
        named: Vec<u64>,
    },
    /// The core refused the plan built for a fault.
    #[error("{n}: {source}", n = entry(*fault))]
    Plan {
        /// The entry, from 0.
        fault: usize,
        /// Why.
        #[source]
        source: FaultPlanError,
    },
}

/// How a refusal names the entry: `[[fault]] #N` (from 1), or `[network]` for the background.
fn entry(fault: usize) -> String {
    if fault == usize::MAX {
        "[network]".to_owned()
    } else {
        format!("[[fault]] #{}", fault + 1)
    }
}

/// The scenario's faults as steps on a stack of `nodes` nodes for a run of `duration`, in time
/// order; a fault that cannot be applied refuses the whole scenario.
///
/// # Errors
///
/// The first [`Refusal`], in file order.
pub fn timeline(
    scenario: &Scenario,
    nodes: u32,
    duration: Duration,
    seed: u64,
) -> Result<Vec<Step>, Refusal> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut steps = Vec::new();
    // `[network]` loss runs the whole run, as the simulator's network model drops it: a loss
    // plan on every node's outbound links from the start.
    let net = scenario.network();
    let background = if let Some(b) = net.burst {
        Some(FaultKind::BurstyLoss {
            enter: b.enter,
            leave: b.leave,
            loss: b.loss,
        })
    } else if net.loss > 0.0 {
        Some(FaultKind::Loss { rate: net.loss })
    } else {
        None
    };
    if let Some(kind) = background {
        let plan = chaos_plan(usize::MAX, kind, Selector::All, duration)?
            .with_links(Selector::All, meshkit::diag::fault::LinkDirection::Outbound)
            .map_err(|source| Refusal::Plan {
                fault: usize::MAX,
                source,
            })?;
        steps.push(Step {
            at: Duration::ZERO,
            fault: None,
            occurrence: 0,
            action: Action::Chaos { plan },
        });
    }
    for (fault, spec) in scenario.faults().iter().enumerate() {
        for occurrence in 0..spec.count {
            let mut at = spec.at + spec.every * occurrence;
            if !spec.jitter.is_zero() {
                let nanos = u64::try_from(spec.jitter.as_nanos()).unwrap_or(u64::MAX);
                at += Duration::from_nanos(rng.random_range(0..=nanos));
            }
            if at >= duration {
                // After the end of the run: the simulator counts these in
                // `faults_after_end`, and so does the report here.
                continue;
            }
            let left = duration - at;
            let action = action(fault, &spec.action, nodes, left, &mut rng)?;
            steps.push(Step {
                at,
                fault: Some(fault),
                occurrence,
                action,
            });
        }
    }
    steps.sort_by_key(|s| s.at);
    Ok(steps)
}

fn check_indices(fault: usize, pick: &Pick, nodes: u32) -> Result<(), Refusal> {
    match pick.max_index() {
        Some(index) if index >= nodes => Err(Refusal::IndexBeyondStack {
            fault,
            index,
            nodes,
        }),
        _ => Ok(()),
    }
}

fn chaos_plan(
    fault: usize,
    kind: FaultKind,
    selector: Selector,
    duration: Duration,
) -> Result<FaultPlan, Refusal> {
    if duration > COMPOSE_MAX_FAULT {
        return Err(Refusal::TooLong { fault, duration });
    }
    FaultPlan::new(kind, selector, duration).map_err(|source| Refusal::Plan { fault, source })
}

fn unsupported(fault: usize, what: &str, why: &str) -> Refusal {
    Refusal::Unsupported {
        fault,
        what: what.to_owned(),
        why: why.to_owned(),
    }
}

fn action(
    fault: usize,
    spec: &FaultAction,
    nodes: u32,
    left: Duration,
    rng: &mut ChaCha8Rng,
) -> Result<Action, Refusal> {
    let pick = |sel: &NodeSelector| -> Result<Pick, Refusal> {
        let p = Pick::from_sim(sel).ok_or_else(|| {
            unsupported(
                fault,
                &format!("selector {sel}"),
                "this selector is new to the runner",
            )
        })?;
        check_indices(fault, &p, nodes)?;
        Ok(p)
    };
    Ok(match spec {
        FaultAction::Crash {
            nodes: sel,
            restart_after,
        } => Action::Kill {
            nodes: pick(sel)?,
            restart_after: *restart_after,
        },
        FaultAction::Restart { nodes: sel } => Action::Start { nodes: pick(sel)? },
        FaultAction::Pause {
            nodes: sel,
            duration,
        } => Action::Pause {
            nodes: pick(sel)?,
            duration: *duration,
        },
        FaultAction::Partition {
            shape,
            one_way,
            heal_after,
        } => {
            let groups = match shape {
                PartitionShape::Split(share) => {
                    // As the simulator: a random share of all nodes forms the first group.
                    let mut all: Vec<u32> = (0..nodes).collect();
                    let first = ((f64::from(nodes) * share).round() as u32).clamp(1, nodes - 1);
                    for i in 0..first as usize {
                        let j = rng.random_range(i..all.len());
                        all.swap(i, j);
                    }
                    let (a, b) = all.split_at(first as usize);
                    let (mut a, mut b) = (a.to_vec(), b.to_vec());
                    a.sort_unstable();
                    b.sort_unstable();
                    vec![a, b]
                }
                PartitionShape::Groups(sels) => {
                    let mut groups = Vec::new();
                    let mut listed = vec![false; nodes as usize];
                    for sel in sels {
                        let p = pick(sel)?;
                        let Pick::Indices(ix) = p else {
                            return Err(unsupported(
                                fault,
                                &format!("partition group {sel}"),
                                "compose partitions take index groups",
                            ));
                        };
                        for &i in &ix {
                            listed[i as usize] = true;
                        }
                        groups.push(ix);
                    }
                    let rest: Vec<u32> = (0..nodes).filter(|&i| !listed[i as usize]).collect();
                    if !rest.is_empty() {
                        groups.push(rest);
                    }
                    groups
                }
                _ => {
                    return Err(unsupported(
                        fault,
                        "partition",
                        "a partition shape new to the runner",
                    ));
                }
            };
            let direction = if *one_way {
                PartitionDirection::OneWay
            } else {
                PartitionDirection::TwoWay
            };
            let plan = chaos_plan(
                fault,
                FaultKind::Partition {
                    shape: CoreShape::Groups(groups),
                    direction,
                },
                Selector::All,
                heal_after.unwrap_or(left).min(left),
            )?;
            Action::Chaos { plan }
        }
        FaultAction::Heal => Action::Heal,
        FaultAction::Loss { rate, duration } => {
            // Every node's outbound links: one loss draw per datagram, as the simulator's
            // network makes one.
            let plan = chaos_plan(
                fault,
                FaultKind::Loss { rate: *rate },
                Selector::All,
                duration.unwrap_or(left).min(left),
            )?
            .with_links(Selector::All, meshkit::diag::fault::LinkDirection::Outbound)
            .map_err(|source| Refusal::Plan { fault, source })?;
            Action::Chaos { plan }
        }
        FaultAction::Plan(plan) => match plan.kind() {
            FaultKind::Kill {} => Action::Kill {
                nodes: {
                    let p = Pick::from_core(plan.selector(), fault)?;
                    check_indices(fault, &p, nodes)?;
                    p
                },
                restart_after: Some(plan.duration()),
            },
            FaultKind::Pause {} => Action::Pause {
                nodes: {
                    let p = Pick::from_core(plan.selector(), fault)?;
                    check_indices(fault, &p, nodes)?;
                    p
                },
                duration: plan.duration(),
            },
            FaultKind::Partition { .. }
            | FaultKind::Latency { .. }
            | FaultKind::Loss { .. }
            | FaultKind::BurstyLoss { .. }
            | FaultKind::Duplicate { .. }
            | FaultKind::Reorder { .. }
            | FaultKind::TransportDowngrade {}
            | FaultKind::ClockSkew { .. }
            | FaultKind::CertificateExpiry { .. } => {
                if plan.duration() > COMPOSE_MAX_FAULT {
                    return Err(Refusal::TooLong {
                        fault,
                        duration: plan.duration(),
                    });
                }
                Action::Chaos { plan: plan.clone() }
            }
            FaultKind::MembershipSurge { joins } => Action::Join {
                nodes: Pick::Count(*joins),
                leave_after: Some(plan.duration()),
            },
            FaultKind::CertificateRotation {} => Action::Rotate {
                nodes: {
                    let p = Pick::from_core(plan.selector(), fault)?;
                    check_indices(fault, &p, nodes)?;
                    p
                },
                over: plan.duration(),
            },
            other => {
                return Err(unsupported(
                    fault,
                    &format!("plan {}", other.name()),
                    "a real node refuses it as not applicable (docs/diagnostics.md, \"What each \
                     kind does on a real node\"); run it with --env sim",
                ));
            }
        },
        FaultAction::Skew {
            nodes: sel,
            rate,
            duration,
        } => {
            // The nodes run their own clocks at the rate (docs/diagnostics.md, `clock-skew`).
            let plan = chaos_plan(
                fault,
                FaultKind::ClockSkew { rate: *rate },
                pick(sel)?.to_core(),
                duration.unwrap_or(left).min(left),
            )?;
            Action::Chaos { plan }
        }
        FaultAction::Leave { nodes: sel } => Action::Leave { nodes: pick(sel)? },
        FaultAction::Transfer { .. } => {
            return Err(unsupported(
                fault,
                "transfer",
                "lease transfers are not driven by the runner yet; run it with --env sim",
            ));
        }
        FaultAction::Join { nodes: sel } => {
            // Indices past the running stack name its spares: checked against them when the
            // run starts ([`spares_needed`]), not against the stack's size.
            let Some(p @ Pick::Indices(_)) = Pick::from_sim(sel) else {
                return Err(unsupported(
                    fault,
                    &format!("join {sel}"),
                    "a join names nodes by index",
                ));
            };
            Action::Join {
                nodes: p,
                leave_after: None,
            }
        }
        FaultAction::Drain { .. } => {
            return Err(unsupported(
                fault,
                "drain",
                "shard drains are not driven by the runner yet; run it with --env sim",
            ));
        }
        FaultAction::Byzantine { .. } => {
            return Err(unsupported(
                fault,
                "byzantine",
                "forged datagrams need the simulator's injection point; run it with --env sim",
            ));
        }
        FaultAction::Metadata { .. } => {
            return Err(unsupported(
                fault,
                "metadata",
                "metadata writes are not driven by the runner yet; run it with --env sim",
            ));
        }
        _ => {
            return Err(unsupported(
                fault,
                "this action",
                "an action new to the simulator that the runner does not know",
            ));
        }
    })
}

/// The spare nodes the timeline's membership surges start on a stack whose nodes are
/// `running` (ids) and whose spares are `spares`: `Ok(count)`, or the refusal when they do not
/// fit (an index that is neither a node nor a spare, more joins than spares).
///
/// # Errors
///
/// [`Refusal::NotEnoughSpares`].
pub fn spares_needed(steps: &[Step], running: &[u64], spares: &[u64]) -> Result<u32, Refusal> {
    let mut named = std::collections::BTreeSet::new();
    let mut counted = 0u32;
    for s in steps {
        match &s.action {
            Action::Join {
                nodes: Pick::Indices(ix),
                ..
            } => named.extend(
                ix.iter()
                    .map(|&i| u64::from(i) + 1)
                    .filter(|id| !running.contains(id)),
            ),
            Action::Join {
                nodes: Pick::Count(n),
                ..
            } => counted += n,
            _ => {}
        }
    }
    let fits = named.iter().all(|id| spares.contains(id))
        && named.len() + counted as usize <= spares.len();
    let joins = u32::try_from(named.len()).unwrap_or(u32::MAX) + counted;
    if fits {
        Ok(joins)
    } else {
        Err(Refusal::NotEnoughSpares {
            joins,
            spares: u32::try_from(spares.len()).unwrap_or(u32::MAX),
            named: named.into_iter().collect(),
        })
    }
}

/// The report keys the compose runner measures (the simulator's names).
pub const MEASURED_KEYS: &[&str] = &[
    "detection_p50_s",
    "detection_p99_s",
    "false_positives",
    "paused_dead",
    "heal_s",
    "converged",
    "failover_p50_s",
    "failover_p99_s",
    "raft_failover_p50_s",
    "raft_failover_p99_s",
    "joins_seen",
    "leaves_seen",
];

/// Splits `[expect]` into the bounds the compose runner evaluates and the names of those it
/// cannot measure (listed in the report as not evaluated, never silently dropped).
pub fn split_expectations(e: &Expectations) -> (Expectations, Vec<&'static str>) {
    let mut kept = *e;
    let mut skipped = Vec::new();
    macro_rules! drop_key {
        ($($field:ident => $name:literal),* $(,)?) => {$(
            if kept.$field.is_some() {
                kept.$field = None;
                skipped.push($name);
            }
        )*};
    }
    drop_key!(
        minority_view_s_max => "minority_view_s",
        suspicions_per_node_hour_max => "suspicions_per_node_hour",
        dissemination_p99_rounds_max => "dissemination_p99_rounds",
        bytes_per_node_s_max => "bytes_per_node_s",
        handoff_p99_ms_max => "handoff_p99_ms",
        lease_grant_p50_ms_max => "lease_grant_p50_ms",
        stale_writes_accepted_max => "stale_writes_accepted",
        stale_writes_refused_min => "stale_writes_refused",
        shard_moves_ratio_max => "shard_moves_ratio",
        shard_imbalance_max_max => "shard_imbalance_max",
        shard_drains_min => "shard_drains",
        byzantine_datagrams_min => "byzantine_datagrams",
    );
    (kept, skipped)
}

#[cfg(test)]
mod tests;

/// The nodes `pick` names among `candidates` (node ids, ascending), drawing random picks from
/// `rng`; `roles` is the `global-control` holder and the Raft leader as last seen. Index `i`
/// is node id `i + 1`. Names only candidates: killing a killed node does nothing, as in the
/// simulator.
pub fn resolve(
    pick: &Pick,
    candidates: &[u64],
    roles: (Option<u64>, Option<u64>),
    rng: &mut ChaCha8Rng,
) -> Vec<u64> {
    let draw = |n: usize, rng: &mut ChaCha8Rng| {
        let mut all = candidates.to_vec();
        let n = n.min(all.len());
        for i in 0..n {
            let j = rng.random_range(i..all.len());
            all.swap(i, j);
        }
        all.truncate(n);
        all.sort_unstable();
        all
    };
    let role = |r: Option<u64>| r.filter(|id| candidates.contains(id)).into_iter().collect();
    match pick {
        Pick::Count(n) => draw(*n as usize, rng),
        Pick::Percent(p) => {
            let n = ((candidates.len() as f64 * p / 100.0).round() as usize).max(1);
            draw(n, rng)
        }
        Pick::Indices(ix) => ix
            .iter()
            .map(|&i| u64::from(i) + 1)
            .filter(|id| candidates.contains(id))
            .collect(),
        Pick::Holder => role(roles.0),
        Pick::RaftLeader => role(roles.1),
    }
}
