//! `meshkit-sim`: the deterministic simulator that drives MeshKit's sans-IO membership core for
//! thousands of nodes on one thread, from one seed, in virtual time.
//!
//! # Start here
//!
//! * [`scenario`]: the TOML scenario format (topology, network, faults, expectations); its module
//!   doc is the format's reference.
//! * [`run`]: runs one scenario with one seed and returns a [`RunReport`]; the `meshkit-sim`
//!   command is a thin wrapper around it.
//!
//! # Map
//!
//! | module | concept |
//! |---|---|
//! | `engine` | the discrete-event loop: a heap of (time, seq) entries; drives every node's `meshkit::node::Node` (membership and, with `[leases]`, its voter, lease client and campaign), as the tokio driver does |
//! | `network` | per-datagram fate: latency and jitter, regions, loss (independent, bursty), duplication, reordering, and the link rules of active fault plans (cuts, latency, loss, bursty loss, duplication, reordering per directed link) |
//! | `clock` | per-node clocks with rate skew (local/global conversion) |
//! | `fault` | the fault timeline and node selection; `engine/plans.rs` applies every fault as a core `FaultPlan`, `engine/probes.rs` runs core health probes |
//! | `byzantine` | the `byzantine` fault: forged datagrams of a non-member with a valid certificate |
//! | [`scenario`] | the scenario file format and its errors |
//! | `observer` | who believes what: views folded from core events against the engine's truth |
//! | [`metrics`] | the report's figures and their definitions |
//! | `invariants` | checks made as the run goes; a violation stops the run |
//! | `lease` | with `[leases]`: the lease roles and bookkeeping per node, the holder ledger, the fenced resources, the lease figures |
//! | `shard` | with `[shards]`: the shard map fed by the voters' grants, the coordinator that plans moves with the core's `Rebalancer`, the shard figures |
//! | `queue` | with `[queue]`: the producers and workers driving the core's task queues, the replicas' checkpoint disks, the queue invariants (no acknowledged item lost, none completed twice, no stale completion accepted, backpressure cooldown, the end state) and figures |
//! | [`report`] | JSON and human reports, expectations |
//! | `trace` | the trace hash that proves determinism |
//! | [`sweep`] | seed sweeps: one scenario over many seeds, tallied as the runs finish (safety over every seed, figures per seed) |
//!
//! # Running a scenario from code
//!
//! ```
//! use meshkit_sim::{RunOptions, Scenario};
//!
//! let text = r#"
//!     name = "doc"
//!     [topology]
//!     nodes = 8
//!     [run]
//!     duration = "5s"
//!     [[fault]]
//!     at = "1s"
//!     action = "crash"
//!     nodes = "1"
//! "#;
//! let scenario = Scenario::parse(text, "doc.toml").unwrap();
//! let report = meshkit_sim::run(&scenario, RunOptions::seed(7)).unwrap();
//! assert_eq!(report.crashes, 1);
//! assert!(report.invariant_violations.is_empty());
//! ```

#![deny(missing_docs)]

mod byzantine;
mod engine;
mod fault;
mod invariants;
mod lease;
pub mod metrics;
mod network;
mod observer;
mod queue;
pub mod report;
pub mod scenario;
mod shard;
pub mod sweep;
mod trace;

use core::time::Duration;

use meshkit::Instant;
use meshkit::config::{Config, Profile};
use thiserror::Error;

pub use crate::report::{ExperimentRecord, ProbeTransition, RunReport};
pub use crate::scenario::{Scenario, ScenarioError};

/// The crate's README, whose example runs as a doc test.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;

/// How to run a scenario: the seed and the overrides of the command line.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct RunOptions {
    /// The run's seed; every random choice derives from it.
    pub seed: u64,
    /// Override of `[topology] nodes`.
    pub nodes: Option<u32>,
    /// Override of `[run] duration`.
    pub duration: Option<Duration>,
    /// Override of `[topology] profile`.
    pub profile: Option<Profile>,
    /// Turn the opt-in mass probes on in every node's configuration
    /// ([`Config::with_mass_probes`]); the memberlist profile ignores it.
    pub mass_probes: bool,
    /// Turn the opt-in minority rules on in every node's configuration
    /// ([`Config::with_minority_rules`]); the memberlist profile ignores them.
    pub minority_rules: bool,
    /// Log every event seen by or about this node index (see [`RunReport::trace`]).
    pub trace_node: Option<u32>,
    /// Explain every false-positive Dead verdict in [`RunReport::false_positive_log`]: costs
    /// one map entry per (observer, member) pair held Suspect, so it is off by default.
    pub explain_false_positives: bool,
}

impl RunOptions {
    /// Options with this seed and no override.
    pub fn seed(seed: u64) -> Self {
        Self {
            seed,
            ..Self::default()
        }
    }
}

/// Why a run could not start. Nothing ran.
#[derive(Clone, Debug, Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum SimError {
    /// The scenario does not fit the options (e.g. an index selector beyond `--nodes`).
    #[error(transparent)]
    Scenario(#[from] ScenarioError),
    /// A fault plan given to [`run_with_plans`] cannot run in the simulator.
    #[error(transparent)]
    Plan(#[from] PlanError),
    /// A probe given to [`run_with_probes`] cannot run.
    #[error(transparent)]
    Probe(#[from] ProbeError),
}

/// Why [`run_with_probes`] refused a probe. Nothing ran. Always the caller's fault.
#[derive(Clone, Debug, Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum ProbeError {
    /// A probe names a node index the run does not have.
    #[error("probe {probe}: node index {index} is beyond the {nodes} nodes of this run")]
    NodeOutOfRange {
        /// The probe's position in the slice.
        probe: usize,
        /// The index.
        index: u32,
        /// Nodes in the run.
        nodes: usize,
    },
    /// The core's scheduler refused it: its name is taken by an earlier probe, or there are
    /// more than [`meshkit::diag::probe::MAX_PROBES`].
    #[error("probe {probe}: its name is taken, or there are too many probes")]
    Refused {
        /// The probe's position in the slice.
        probe: usize,
    },
}

/// A health probe run in the simulator: a reachability check from node index `from` to node
/// index `to` on the schedule, timeout and thresholds of `spec`. Each run sends a request
/// through the network model, the target answers while it is running, and the answer comes
/// back through the network model; no answer by the timeout is a failure.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct SimProbe {
    /// Name, timing, thresholds (the core's validated spec).
    pub spec: meshkit::diag::probe::ProbeSpec,
    /// The prober's node index.
    pub from: u32,
    /// The probed node index.
    pub to: u32,
}

impl SimProbe {
    /// A probe of `to` from `from` with `spec`.
    pub fn new(spec: meshkit::diag::probe::ProbeSpec, from: u32, to: u32) -> Self {
        Self { spec, from, to }
    }
}

/// Why [`run_with_plans`] refused a fault plan. Nothing ran.
#[derive(Clone, Debug, Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum PlanError {
    /// Membership surges that start more nodes than the scenario has spares: a surge boots
    /// `[topology] spares`, slots that are down until then (the simulated mesh has a fixed
    /// set of slots).
    #[error(
        "membership surges start {joins} nodes in all, but the scenario has {spares} spares \
         left: raise [topology] spares"
    )]
    NotEnoughSpares {
        /// The nodes the surges start, this one included.
        joins: u32,
        /// The spares the run has.
        spares: u32,
    },
    /// A real-node fault: transport downgrade (the control listener refuses HTTP/3) and
    /// certificate expiry (the node serves an expired certificate) act on a real node's control
    /// listener and TLS identity, which the simulated network does not have.
    #[error(
        "{kind} is a real-node fault: the simulated network has no HTTP/3 listener and no \
         certificates, so apply it to a real node"
    )]
    RealNodeOnly {
        /// The kind's name.
        kind: &'static str,
    },
    /// A service's own fault type (`FaultKind::Custom`): its effect is the service's code,
    /// run by the type's hooks on a real node, which the simulator does not have. Like a
    /// real-node fault, a scenario file may hold it and the report lists it as not modelled.
    #[error(
        "custom fault type {name} is a service's own: its effect is the service's code on a \
         real node, which the simulator does not run"
    )]
    NotModelled {
        /// The type's name.
        name: String,
    },
    /// The plan names what the mesh does not have (an index beyond the node count, a role).
    #[error(transparent)]
    Resolve(#[from] meshkit::diag::fault::ResolveError),
    /// More plans than one schedule holds.
    #[error("at most {max} fault plans per run")]
    TooMany {
        /// [`meshkit::diag::fault::MAX_EXPERIMENTS`].
        max: usize,
    },
}

/// Mixed into the run's seed for the probes' scheduler.
const PROBE_SEED_SALT: u64 = 0x5052_4f42_4553_0001;

/// Runs `scenario` once. Invariant violations and failed expectations are in the report, not
/// errors: check [`RunReport::passed`].
pub fn run(scenario: &Scenario, options: RunOptions) -> Result<RunReport, SimError> {
    run_with_progress(scenario, options, &mut |_, _| {})
}

/// [`run`], calling `progress(virtual_now, virtual_end)` now and then.
pub fn run_with_progress(
    scenario: &Scenario,
    options: RunOptions,
    progress: &mut dyn FnMut(Instant, Instant),
) -> Result<RunReport, SimError> {
    run_inner(scenario, options, &[], &[], progress)
}

/// [`run`] with core fault plans besides the scenario's faults: each is scheduled at the start
/// of the run on the core's own [`FaultSchedule`](meshkit::diag::fault::FaultSchedule) (it
/// waits its own `start`), resolved against the mesh as numbered at the start (node index `i`
/// is member index `i`), applied at its activation and reverted at its deadline. What each
/// touched and when is in [`RunReport::experiments`].
///
/// # Errors
///
/// [`SimError::Plan`] for a plan the simulator cannot apply (nothing ran), and as [`run`].
pub fn run_with_plans(
    scenario: &Scenario,
    options: RunOptions,
    plans: &[meshkit::diag::fault::FaultPlan],
) -> Result<RunReport, SimError> {
    run_inner(scenario, options, plans, &[], &mut |_, _| {})
}

/// [`run_with_plans`] with health probes: each [`SimProbe`] runs on the core's own
/// [`ProbeScheduler`](meshkit::diag::probe::ProbeScheduler) from the start of the run, and its
/// state changes are in [`RunReport::probe_transitions`]. The probes send through the network
/// model, so the run's trace differs from one without them.
///
/// # Errors
///
/// [`SimError::Probe`] for a probe that cannot run, and as [`run_with_plans`].
pub fn run_with_probes(
    scenario: &Scenario,
    options: RunOptions,
    plans: &[meshkit::diag::fault::FaultPlan],
    probes: &[SimProbe],
) -> Result<RunReport, SimError> {
    run_inner(scenario, options, plans, probes, &mut |_, _| {})
}

fn run_inner(
    scenario: &Scenario,
    options: RunOptions,
    plans: &[meshkit::diag::fault::FaultPlan],
    probes: &[SimProbe],
    progress: &mut dyn FnMut(Instant, Instant),
) -> Result<RunReport, SimError> {
    let nodes = options.nodes.unwrap_or(scenario.nodes());
    scenario.check_node_count(nodes)?;
    let profile = options.profile.unwrap_or(scenario.profile());
    let duration = options.duration.unwrap_or(scenario.duration());
    let config = Config::from_profile(profile)
        .with_mass_probes(options.mass_probes)
        .with_minority_rules(options.minority_rules);
    let mut engine = engine::Engine::new(scenario, config, nodes as usize, duration, options.seed);
    if let Some(w) = options
        .trace_node
        .filter(|&w| w < nodes.saturating_add(scenario.spares()))
    {
        engine.watch(w as usize);
    }
    if options.explain_false_positives {
        engine.explain_false_positives();
    }
    for plan in plans {
        engine.schedule_plan(plan.clone())?;
    }
    if !probes.is_empty() {
        // The probes' own seed, derived from the run's without drawing from its streams, so
        // that the rest of the run draws what it would draw without probes.
        engine.register_probes(options.seed ^ PROBE_SEED_SALT, probes)?;
    }
    let mut outcome = engine.run(progress);
    let experiments = std::mem::take(&mut outcome.experiments);
    let probe_transitions = std::mem::take(&mut outcome.probe_transitions);
    let header = RunReport {
        scenario: scenario.name().to_owned(),
        profile: profile.to_string(),
        seed: options.seed,
        nodes,
        replay: replay_command(scenario, &options),
        ..RunReport::default()
    };
    let mut report = metrics::figures(outcome, header);
    report.experiments = experiments;
    report.probe_transitions = probe_transitions;
    if let Some(a) = scenario.autoscale() {
        report.not_modelled.push(format!(
            "[autoscale] (queue {}, {}..={} workers): worker containers scaled on the \
             backpressure stream need the compose environment (meshkit-chaos run --env \
             compose); the simulator has no containers",
            a.queue, a.min_workers, a.max_workers
        ));
    }
    report.faults_after_end = fault::occurrences_after(scenario.faults(), duration);
    report.expectations_failed = report::check_expectations(scenario.expect(), &report);
    Ok(report)
}

/// The shortest command line that replays a run: the scenario, the seed and the overrides given.
pub fn replay_command(scenario: &Scenario, options: &RunOptions) -> String {
    let mut cmd = format!(
        "meshkit-sim run {} --seed {}",
        scenario.file(),
        options.seed
    );
    if let Some(n) = options.nodes {
        cmd.push_str(&format!(" --nodes {n}"));
    }
    if let Some(d) = options.duration {
        if d.subsec_nanos() == 0 {
            cmd.push_str(&format!(" --duration {}s", d.as_secs()));
        } else {
            cmd.push_str(&format!(" --duration {}ns", d.as_nanos()));
        }
    }
    if let Some(p) = options.profile {
        cmd.push_str(&format!(" --profile {p}"));
    }
    if options.mass_probes {
        cmd.push_str(" --mass-probes");
    }
    if options.minority_rules {
        cmd.push_str(" --minority-rules");
    }
    cmd
}
