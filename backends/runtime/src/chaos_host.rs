//! Chaos faults on a real node: the host of one node's [`FaultSchedule`], which turns its
//! [`FaultEvent`]s into effects on this node (docs/diagnostics.md, "Faults in a real node").
//!
//! The driver owns one [`ChaosHost`]; [`NodeHandle`](crate::driver::NodeHandle)'s `chaos_*`
//! methods reach it. An experiment is checked against `[chaos]` ([`ChaosConfig`]), scheduled
//! on this node's own clock, and applied where this node is in its blast radius:
//!
//! | kind | effect on this node |
//! |---|---|
//! | `partition` | its links to the other side are cut in the [`ChaosTransport`](meshkit_net::transport::chaos::ChaosTransport) (only the directions the radius cuts) |
//! | `latency`, `loss`, `bursty-loss`, `duplicate`, `reorder` | the same, on each link of the radius with this node at one end |
//! | `pause` | the driver holds: no datagram, no timer of the core runs until the revert (chaos commands are still answered, so an abort reaches it) |
//! | `kill` | the driver stops and [`ChaosEffects::killed`] is set: `meshkitd` exits with status 75; restarting it is the supervisor's job |
//! | `transport-downgrade` | [`ChaosEffects::refuse_h3`] is set: the control listener refuses HTTP/3 and closes its open HTTP/3 connections, clients fall back to HTTP/2 |
//! | `clock-skew` | the time the driver gives the core runs at the plan's rate ([`clock_rate_ppm`](ChaosHost::clock_rate_ppm)): membership, lease and queue timers run fast or slow; the chaos schedule itself stays on real time, so the experiment still ends at its real deadline |
//! | `certificate-expiry` | [`ChaosEffects::serve_stand_in`] is set: new handshakes get the certificate `[chaos] stand_in_cert` names (expired, or expiring within the plan's `expires_in`: checked when the plan is applied); connections already open keep theirs |
//! | `membership-surge` | refused with [`ChaosError::NotApplicableHere`] |
//! | `custom` | the [`FaultType`] of that name registered in [`ChaosEffects::fault_types`] is called: its [`activate`](FaultType::activate) at the start, its [`revert`](FaultType::revert) at the end; no type of that name: refused |
//!
//! # The dead-man switch
//!
//! The schedule's timers are the driver's: each node reverts at its own deadline whether the
//! caller, the network or the node that fanned the experiment out is still there. Revert
//! restores what was there before (the rule table is rebuilt from the experiments still
//! active; flags are cleared when no active experiment sets them). The kill switch reverts
//! everything and refuses new experiments until [`rearm`](ChaosHost::rearm).
//!
//! # Recovery
//!
//! On each revert the host remembers the members this node saw alive when the experiment
//! started and measures the time until every one of them is alive again in its view
//! (`mesh_chaos_recovery_seconds`), for at most [`MAX_RECOVERY_WAIT`].

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::fmt;
use std::str::FromStr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};

use meshkit::diag::fault::{
    BlastRadius, ClusterView, EndReason, ExperimentId, FaultEvent, FaultKind, FaultPlan,
    FaultSchedule, MAX_FAULT_DURATION, MemberView, ScheduleError,
};
use meshkit::membership::MemberState;
use meshkit::node::Node;
use meshkit::{Duration, Instant, NodeId, RATE_ONE_PPM, SkewedClock};
use meshkit_net::transport::chaos::{
    ChaosLinks, ChaosRules, LinkCounts, LinkEffect, LinkRule, LinkSide,
};
use serde::ser::SerializeStruct;
use thiserror::Error;
use tokio::sync::oneshot;

use crate::driver::REGION_KEY;
use crate::error::DriverStopped;
use crate::histogram::DurationHistogram;

/// `[chaos] max_duration` when not set.
pub const DEFAULT_MAX_DURATION: Duration = Duration::from_secs(600);
/// `[chaos] token_ttl` when not set: how long a confirmation token is accepted.
pub const DEFAULT_TOKEN_TTL: Duration = Duration::from_secs(60);
/// The shortest `[chaos] token_ttl`: below a second an operator cannot read the radius before
/// the token is gone.
pub const MIN_TOKEN_TTL: Duration = Duration::from_secs(1);
/// The longest `[chaos] token_ttl`: a confirmation is a decision about the mesh as it is now,
/// and each used token is remembered until it expires (a longer life means fewer starts before
/// the replay memory is full).
pub const MAX_TOKEN_TTL: Duration = Duration::from_secs(600);
/// Ended experiments kept for [`ChaosHost::experiments`], newest first.
pub const MAX_RECENT_EXPERIMENTS: usize = 64;
/// Reverts whose recovery is still being measured; past this the oldest is given up.
pub const MAX_PENDING_RECOVERIES: usize = 64;
/// How long after a revert the host waits for the view to converge before it stops measuring.
pub const MAX_RECOVERY_WAIT: Duration = Duration::from_secs(600);
/// The exit status of `meshkitd` when a `kill` experiment ends the process (sysexits'
/// `EX_TEMPFAIL`: restart me).
pub const KILL_EXIT_STATUS: u8 = 75;
/// Every kind name [`FaultKind::name`] gives: what `[chaos] allowed_kinds` may list.
pub const KIND_NAMES: [&str; 13] = [
    "kill",
    "pause",
    "partition",
    "latency",
    "loss",
    "bursty-loss",
    "duplicate",
    "reorder",
    "transport-downgrade",
    "certificate-expiry",
    "clock-skew",
    "certificate-rotation",
    "membership-surge",
];
/// The `kind` label of every experiment of a service's own fault types in the `mesh_chaos_*`
/// metrics ([`FaultKind::name`] of a custom plan).
pub const CUSTOM_KIND: &str = "custom";
/// The most fault types one node registers ([`FaultTypes::register`]).
pub const MAX_FAULT_TYPES: usize = 64;

/// A fault type of a service's own: what a [`FaultKind::Custom`] plan of its
/// [`name`](Self::name) does on a node that registered it (docs/diagnostics.md, "A fault type of
/// your own"). MeshKit checks the plan (the allow-list entry `custom:<name>`, the maximum
/// duration, the two-step token), schedules it on the node's own clock and audits it; the type
/// only says what to break and how to put it back.
///
/// The hooks run on the node's driver, between two steps of the protocol: they must return at
/// once (flip a flag, swap a setting), never block or wait. The revert is called exactly once
/// for each activation, at the deadline, on abort or on the kill switch, even when the type was
/// replaced in the registry meanwhile (the host keeps the instance it activated).
pub trait FaultType: Send + Sync + 'static {
    /// The name plans use (`{ kind = "custom", name = "..." }`): 1..=64 bytes of
    /// `a-z 0-9 . _ -`.
    fn name(&self) -> &str;

    /// Whether `params` make sense for this type, checked on every target before anything is
    /// scheduled; the error tells the caller what is wrong (`400 fault-params-refused`). The
    /// default takes any.
    ///
    /// # Errors
    ///
    /// The reason, for the caller.
    fn check(&self, params: &BTreeMap<String, String>) -> Result<(), String> {
        let _ = params;
        Ok(())
    }

    /// The experiment `experiment` starts on this node with `params` (already checked).
    fn activate(&self, experiment: ExperimentRef, params: &BTreeMap<String, String>);

    /// The experiment ends on this node: undo what [`activate`](Self::activate) did.
    fn revert(&self, experiment: ExperimentRef);
}

/// Why [`FaultTypes::register`] refused a type. Nothing changed.
#[derive(Debug, Error, Clone, PartialEq)]
#[non_exhaustive]
pub enum FaultTypeError {
    /// The name breaks the rules of a custom type's name.
    #[error(transparent)]
    Name(#[from] meshkit::diag::fault::FaultPlanError),
    /// A type of that name is registered already.
    #[error("a fault type named {0} is registered already")]
    Duplicate(String),
    /// [`MAX_FAULT_TYPES`] are registered.
    #[error("at most {MAX_FAULT_TYPES} fault types per node")]
    Full,
}

/// The fault types registered on one node, by name: the open half of [`FaultKind`]. Shared
/// (clones share the table) between the service that registers and the driver that applies.
#[derive(Clone, Default)]
pub struct FaultTypes(Arc<RwLock<BTreeMap<String, Arc<dyn FaultType>>>>);

impl fmt::Debug for FaultTypes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_set().entries(self.names()).finish()
    }
}

impl FaultTypes {
    /// Registers `fault`: plans of `{ kind = "custom", name = fault.name() }` now act on this
    /// node (when `[chaos] allowed_kinds` lists `custom:<name>`).
    ///
    /// # Errors
    ///
    /// [`FaultTypeError`]: a bad or taken name, or a full table.
    pub fn register(&self, fault: Arc<dyn FaultType>) -> Result<(), FaultTypeError> {
        let name = fault.name().to_owned();
        meshkit::diag::fault::check_custom_name("fault type name", &name)?;
        let mut table = self
            .0
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if table.contains_key(&name) {
            return Err(FaultTypeError::Duplicate(name));
        }
        if table.len() >= MAX_FAULT_TYPES {
            return Err(FaultTypeError::Full);
        }
        table.insert(name, fault);
        Ok(())
    }

    /// The names registered, in order.
    pub fn names(&self) -> Vec<String> {
        let table = self
            .0
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        table.keys().cloned().collect()
    }

    fn get(&self, name: &str) -> Option<Arc<dyn FaultType>> {
        let table = self
            .0
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        table.get(name).cloned()
    }
}

/// A custom fault type's instance that activated an experiment: the one that reverts it.
struct Activated(Arc<dyn FaultType>);

impl fmt::Debug for Activated {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.0.name())
    }
}

/// The upper bounds of `mesh_chaos_recovery_seconds`.
pub const RECOVERY_BOUNDS: [Duration; 10] = [
    Duration::from_millis(100),
    Duration::from_millis(250),
    Duration::from_millis(500),
    Duration::from_secs(1),
    Duration::from_secs(2),
    Duration::from_secs(5),
    Duration::from_secs(10),
    Duration::from_secs(30),
    Duration::from_secs(60),
    Duration::from_secs(300),
];
/// Why an experiment ended, as statuses and metrics name it; a `missed` one (its whole window
/// passed before the driver saw its start) never activated, so it is never reverted.
const END_REASONS: [&str; 4] = ["deadline", "aborted", "kill-switch", "missed"];
/// The `reason` values of `mesh_chaos_reverts_total`.
const REVERT_REASONS: [&str; 3] = ["deadline", "aborted", "kill-switch"];

/// `[chaos]`: off unless enabled; the kinds allowed, by [`FaultKind::name`]; the longest
/// duration accepted. Built by the node's configuration, which refuses unknown kind names and a
/// `max_duration` above [`MAX_FAULT_DURATION`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ChaosConfig {
    /// Whether this node takes experiments at all (default `false`).
    pub enabled: bool,
    /// The kinds it takes (default none: an enabled node must still list what it allows).
    pub allowed_kinds: BTreeSet<String>,
    /// The longest duration it takes (default [`DEFAULT_MAX_DURATION`]).
    pub max_duration: Duration,
    /// How long a confirmation token the control API issues is accepted (default
    /// [`DEFAULT_TOKEN_TTL`], within [`MIN_TOKEN_TTL`]..=[`MAX_TOKEN_TTL`]). The driver does not
    /// read it: it is here because it is a `[chaos]` key, and the control API gets `[chaos]`.
    pub token_ttl: Duration,
    /// When the certificate `[chaos] stand_in_cert` names expires (Unix seconds): the one a
    /// `certificate-expiry` experiment serves in place of the node's own. `None`: there is
    /// none, and the kind is refused on this node.
    pub stand_in_not_after: Option<i64>,
}

impl Default for ChaosConfig {
    fn default() -> Self {
        Self {
            enabled: false,
            allowed_kinds: BTreeSet::new(),
            max_duration: DEFAULT_MAX_DURATION,
            token_ttl: DEFAULT_TOKEN_TTL,
            stand_in_not_after: None,
        }
    }
}

/// What the host changes outside the driver, shared with the parts of the node that apply it:
/// the transport wrapper's rule table, the control listener's HTTP/3 switch, and the kill flag
/// the node's supervisor reads when the driver ends. Clone it: clones share everything.
#[derive(Clone, Debug, Default)]
pub struct ChaosEffects {
    /// The rule table of the node's [`ChaosTransport`](meshkit_net::transport::chaos::ChaosTransport).
    pub links: ChaosLinks,
    /// `true` while a `transport-downgrade` is active here: the control listener refuses HTTP/3
    /// and closes its open HTTP/3 connections (it subscribes: no polling).
    pub refuse_h3: tokio::sync::watch::Sender<bool>,
    /// Set when a `kill` experiment stopped the driver: the process should exit with
    /// [`KILL_EXIT_STATUS`].
    pub killed: Arc<AtomicBool>,
    /// `true` while a `certificate-expiry` is active here: the node's listeners serve the
    /// stand-in certificate for new handshakes (the certificate reloader subscribes).
    pub serve_stand_in: tokio::sync::watch::Sender<bool>,
    /// The service's own fault types, which [`FaultKind::Custom`] plans call.
    pub fault_types: FaultTypes,
}

/// A cluster-wide experiment id chosen by the node that received the start call: `node-3/17`.
/// Serialized as that string.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ExperimentRef {
    /// The node that received the start call.
    pub origin: NodeId,
    /// Its serial number there.
    pub serial: u64,
}

impl fmt::Display for ExperimentRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.origin, self.serial)
    }
}

/// Why a text is not an [`ExperimentRef`] (the caller's fault).
#[derive(Clone, Debug, Error, PartialEq, Eq)]
#[error("{text:?} is not an experiment id: expected node-<id>/<serial>, such as node-3/17")]
pub struct ExperimentRefError {
    /// The text given (at most 64 bytes of it).
    pub text: String,
}

impl FromStr for ExperimentRef {
    type Err = ExperimentRefError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let error = || ExperimentRefError {
            text: s.chars().take(64).collect(),
        };
        let (origin, serial) = s.split_once('/').ok_or_else(error)?;
        let origin = origin.strip_prefix("node-").unwrap_or(origin);
        Ok(Self {
            origin: NodeId::new(origin.parse().map_err(|_| error())?),
            serial: serial.parse().map_err(|_| error())?,
        })
    }
}

impl serde::Serialize for ExperimentRef {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> serde::Deserialize<'de> for ExperimentRef {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

/// One experiment as this node sees it, for the HTTP and gRPC views.
#[derive(Clone, Debug, PartialEq)]
pub struct ExperimentStatus {
    /// Its id.
    pub id: ExperimentRef,
    /// [`FaultKind::allow_name`]: the kind's name, `custom:<name>` for a service's own type.
    pub kind: String,
    /// Its plan.
    pub plan: FaultPlan,
    /// What it touches (in the whole mesh, as resolved by the node that started it).
    pub radius: BlastRadius,
    /// `scheduled`, `active` or `reverted`.
    pub phase: String,
    /// Why it ended: `deadline`, `aborted`, `kill-switch` or `missed`; `None` while it runs.
    pub end_reason: Option<String>,
    /// When it became active here, in Unix milliseconds.
    pub activated_at_unix_ms: Option<u64>,
    /// When it reverts (or reverted at the latest), in Unix milliseconds.
    pub deadline_unix_ms: u64,
    /// Milliseconds until its deadline (0 once ended).
    pub remaining_ms: u64,
    /// Whether this node's own links or process are in the radius.
    pub applied_here: bool,
    /// When it was reverted here, in Unix milliseconds (`None` while it runs, and for a
    /// `missed` one, which never activated). What the origin reports as this node's revert.
    pub reverted_at_unix_ms: Option<u64>,
}

impl serde::Serialize for ExperimentStatus {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut st = s.serialize_struct("ExperimentStatus", 11)?;
        st.serialize_field("id", &self.id)?;
        st.serialize_field("kind", &self.kind)?;
        st.serialize_field("plan", &self.plan)?;
        st.serialize_field("radius", &RadiusJson(&self.radius))?;
        st.serialize_field("phase", &self.phase)?;
        st.serialize_field("end_reason", &self.end_reason)?;
        st.serialize_field("activated_at_unix_ms", &self.activated_at_unix_ms)?;
        st.serialize_field("deadline_unix_ms", &self.deadline_unix_ms)?;
        st.serialize_field("remaining_ms", &self.remaining_ms)?;
        st.serialize_field("applied_here", &self.applied_here)?;
        st.serialize_field("reverted_at_unix_ms", &self.reverted_at_unix_ms)?;
        st.end()
    }
}

/// A blast radius as JSON: node ids as numbers, links as `[from, to]`, durations in ms.
struct RadiusJson<'a>(&'a BlastRadius);

impl serde::Serialize for RadiusJson<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let r = self.0;
        let ms = |d: Duration| u64::try_from(d.as_millis()).unwrap_or(u64::MAX);
        let mut st = s.serialize_struct("BlastRadius", 6)?;
        st.serialize_field("kind", r.kind)?;
        st.serialize_field(
            "nodes",
            &r.nodes.iter().map(|n| n.get()).collect::<Vec<_>>(),
        )?;
        st.serialize_field(
            "links",
            &r.links
                .iter()
                .map(|l| [l.from.get(), l.to.get()])
                .collect::<Vec<_>>(),
        )?;
        st.serialize_field(
            "groups",
            &r.groups
                .iter()
                .map(|g| g.iter().map(|n| n.get()).collect::<Vec<_>>())
                .collect::<Vec<_>>(),
        )?;
        st.serialize_field("start_ms", &ms(r.start))?;
        st.serialize_field("duration_ms", &ms(r.duration))?;
        st.end()
    }
}

/// Why a chaos call was refused. None of them changed anything.
#[derive(Debug, Error, Clone, PartialEq)]
#[non_exhaustive]
pub enum ChaosError {
    /// `[chaos] enabled` is false on this node (the operator's configuration).
    #[error("chaos is disabled on this node: set [chaos] enabled = true to allow experiments")]
    Disabled,
    /// The kind is not in `[chaos] allowed_kinds` (the caller asked for what the operator did
    /// not allow).
    #[error("fault kind {kind} is not in [chaos] allowed_kinds on this node")]
    KindNotAllowed {
        /// The kind asked for.
        kind: String,
    },
    /// The plan lasts longer than `[chaos] max_duration` (caller).
    #[error("duration {duration:?} is over this node's [chaos] max_duration {max:?}")]
    DurationOverMax {
        /// The plan's.
        duration: Duration,
        /// The node's.
        max: Duration,
    },
    /// The kill switch is engaged: re-arm it first.
    #[error("the chaos kill switch is engaged on this node: re-arm it before starting experiments")]
    KillSwitchEngaged,
    /// No such experiment on this node (caller).
    #[error("no experiment {0} on this node")]
    UnknownExperiment(ExperimentRef),
    /// A custom fault type's [`FaultType::check`] refused the plan's parameters (caller).
    #[error("fault type {kind} refused its params: {reason}")]
    ParamsRefused {
        /// The type's allow-list name, `custom:<name>`.
        kind: String,
        /// The type's reason.
        reason: String,
    },
    /// The kind cannot act on a real node as this node is built.
    #[error("fault kind {kind} is not applicable on a real node: {reason}")]
    NotApplicableHere {
        /// The kind.
        kind: String,
        /// Why, and where it can be run instead.
        reason: &'static str,
    },
    /// The schedule refused it (full, or a radius not resolved from this plan).
    #[error(transparent)]
    Schedule(ScheduleError),
    /// The driver has stopped.
    #[error(transparent)]
    DriverStopped(#[from] DriverStopped),
}

/// The `mesh_chaos_*` counters and gauges of one node; the counters only grow.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct ChaosStats {
    /// Active experiments applied or scheduled here, by kind.
    pub active: BTreeMap<&'static str, u64>,
    /// Activations, by kind.
    pub activations: BTreeMap<&'static str, u64>,
    /// Reverts of active experiments, by kind and reason.
    pub reverts: BTreeMap<(&'static str, &'static str), u64>,
    /// Experiments ended by an abort call.
    pub aborts: u64,
    /// Whether the kill switch is engaged.
    pub kill_switch_engaged: bool,
    /// What the transport wrapper did to messages.
    pub links: LinkCounts,
    /// From each revert to this node's view converged again.
    pub recovery: DurationHistogram<{ RECOVERY_BOUNDS.len() + 1 }>,
}

impl meshkit_api::metrics::Source for ChaosStats {
    fn write(&self, families: &mut meshkit_api::metrics::Families<'_, '_>) -> fmt::Result {
        use meshkit_api::metrics::catalogue::{
            CHAOS_ABORTS, CHAOS_ACTIVATIONS, CHAOS_EXPERIMENTS_ACTIVE, CHAOS_KILL_SWITCH_ENGAGED,
            CHAOS_LINK_MESSAGES, CHAOS_RECOVERY, CHAOS_REVERTS,
        };
        // Every kind is written, 0 included, so that a dashboard's series exist before the
        // first experiment; a service's own fault types together as `custom` (their names are
        // the service's to choose: a label per name would be unbounded).
        let kinds = || KIND_NAMES.into_iter().chain([CUSTOM_KIND]);
        families.gauges(
            &CHAOS_EXPERIMENTS_ACTIVE,
            kinds().map(|k| ([k], self.active.get(k).copied().unwrap_or(0))),
        )?;
        families.counters(
            &CHAOS_ACTIVATIONS,
            kinds().map(|k| ([k], self.activations.get(k).copied().unwrap_or(0))),
        )?;
        families.counters(
            &CHAOS_REVERTS,
            kinds().flat_map(|k| {
                REVERT_REASONS.map(|r| ([k, r], self.reverts.get(&(k, r)).copied().unwrap_or(0)))
            }),
        )?;
        families.counter(&CHAOS_ABORTS, self.aborts)?;
        families.gauge(
            &CHAOS_KILL_SWITCH_ENGAGED,
            u64::from(self.kill_switch_engaged),
        )?;
        let l = &self.links;
        families.counters(
            &CHAOS_LINK_MESSAGES,
            [
                (["dropped"], l.dropped),
                (["delayed"], l.delayed),
                (["duplicated"], l.duplicated),
                (["reordered"], l.reordered),
            ],
        )?;
        families.histograms(
            &CHAOS_RECOVERY,
            [([], self.recovery.with_bounds(&RECOVERY_BOUNDS))],
        )
    }
}

/// A chaos call from a [`NodeHandle`](crate::driver::NodeHandle), answered by the driver.
#[derive(Debug)]
pub(crate) enum ChaosCommand {
    View(oneshot::Sender<ClusterView>),
    Apply {
        id: ExperimentRef,
        /// Boxed: a plan and its radius are far larger than the other commands.
        experiment: Box<(FaultPlan, BlastRadius)>,
        reply: oneshot::Sender<Result<ExperimentStatus, ChaosError>>,
    },
    Abort {
        id: ExperimentRef,
        reply: oneshot::Sender<Result<ExperimentStatus, ChaosError>>,
    },
    KillSwitch(oneshot::Sender<usize>),
    Rearm(oneshot::Sender<()>),
    List(oneshot::Sender<Vec<ExperimentStatus>>),
}

/// One experiment's record on this node.
#[derive(Clone, Debug)]
struct Record {
    schedule_id: ExperimentId,
    plan: FaultPlan,
    radius: BlastRadius,
    phase: &'static str,
    end_reason: Option<&'static str>,
    activated_at: Option<Instant>,
    ends_at: Instant,
    /// When it was reverted (`None` while it runs, or when it never activated).
    reverted_at: Option<Instant>,
    applied_here: bool,
    /// Members alive in this node's view when it activated (for the recovery time).
    alive_before: BTreeSet<NodeId>,
}

#[derive(Debug)]
struct PendingRecovery {
    reverted_at: Instant,
    expect: BTreeSet<NodeId>,
}

/// The chaos side of one node's driver. See the [module docs](self).
#[derive(Debug)]
pub struct ChaosHost {
    config: ChaosConfig,
    effects: ChaosEffects,
    local: NodeId,
    schedule: FaultSchedule,
    by_schedule: BTreeMap<ExperimentId, ExperimentRef>,
    records: BTreeMap<ExperimentRef, Record>,
    /// Ended experiments, newest first (at most [`MAX_RECENT_EXPERIMENTS`]).
    recent: VecDeque<ExperimentRef>,
    /// The link rules of each active experiment applied here, with its plan's seed.
    link_rules: BTreeMap<ExperimentId, (u64, Vec<LinkRule>)>,
    paused: BTreeSet<ExperimentId>,
    downgraded: BTreeSet<ExperimentId>,
    /// Active `certificate-expiry` experiments applied here.
    stand_in: BTreeSet<ExperimentId>,
    /// The rate of each active `clock-skew` applied here, in parts per million.
    skewed: BTreeMap<ExperimentId, u64>,
    /// Each active custom fault applied here, with the type instance to revert it.
    custom: BTreeMap<ExperimentId, Activated>,
    kill: bool,
    stats: ChaosStats,
    recoveries: VecDeque<PendingRecovery>,
}

impl ChaosHost {
    /// A host for node `local` under `config`, applying through `effects`.
    pub fn new(local: NodeId, config: ChaosConfig, effects: ChaosEffects) -> Self {
        // Chaos off: the wrapper holds no rules, whatever a previous owner of `effects` set.
        effects.links.clear();
        effects.refuse_h3.send_replace(false);
        effects.serve_stand_in.send_replace(false);
        Self {
            config,
            effects,
            local,
            schedule: FaultSchedule::new(),
            by_schedule: BTreeMap::new(),
            records: BTreeMap::new(),
            recent: VecDeque::new(),
            link_rules: BTreeMap::new(),
            paused: BTreeSet::new(),
            downgraded: BTreeSet::new(),
            stand_in: BTreeSet::new(),
            skewed: BTreeMap::new(),
            custom: BTreeMap::new(),
            kill: false,
            stats: ChaosStats::default(),
            recoveries: VecDeque::new(),
        }
    }

    /// The configuration in force.
    pub fn config(&self) -> &ChaosConfig {
        &self.config
    }

    /// Whether a `pause` is active here: the driver holds its datagrams and timers.
    pub fn is_paused(&self) -> bool {
        !self.paused.is_empty()
    }

    /// The rate the core's clock runs at here, in parts per million of real time:
    /// [`RATE_ONE_PPM`] unless a `clock-skew` is active, else the newest active one's rate (two
    /// overlapping skews do not compound: the node has one clock).
    pub fn clock_rate_ppm(&self) -> u64 {
        self.skewed
            .values()
            .next_back()
            .copied()
            .unwrap_or(RATE_ONE_PPM)
    }

    /// Whether a `kill` activated here: the driver must stop (once).
    pub(crate) fn take_kill(&mut self) -> bool {
        std::mem::take(&mut self.kill)
    }

    /// Checks `plan` against `[chaos]` and schedules it on this node's clock; applies it at
    /// once when it has no start delay. Idempotent per `id`: a second call returns the status.
    ///
    /// # Errors
    ///
    /// [`ChaosError`]; nothing changed.
    pub fn apply(
        &mut self,
        now: Instant,
        node: &Node,
        id: ExperimentRef,
        plan: FaultPlan,
        radius: BlastRadius,
    ) -> Result<ExperimentStatus, ChaosError> {
        if !self.config.enabled {
            return Err(ChaosError::Disabled);
        }
        if self.records.contains_key(&id) {
            return self
                .status(now, id)
                .ok_or(ChaosError::UnknownExperiment(id));
        }
        let kind = plan.kind().name();
        let allow_name = plan.kind().allow_name();
        if !self.config.allowed_kinds.contains(allow_name.as_ref()) {
            return Err(ChaosError::KindNotAllowed {
                kind: allow_name.into_owned(),
            });
        }
        if plan.duration() > self.config.max_duration.min(MAX_FAULT_DURATION) {
            return Err(ChaosError::DurationOverMax {
                duration: plan.duration(),
                max: self.config.max_duration,
            });
        }
        if self.schedule.is_kill_switch_engaged() {
            return Err(ChaosError::KillSwitchEngaged);
        }
        let applied_here = self.concerns_me(&plan, &radius);
        if let Some(reason) = not_applicable(plan.kind()) {
            // A node outside the radius has nothing to apply, but a kind no real node applies
            // is refused everywhere: the caller learns it from every target alike.
            return Err(ChaosError::NotApplicableHere {
                kind: kind.to_owned(),
                reason,
            });
        }
        if let FaultKind::Custom { name, params } = plan.kind()
            && applied_here
        {
            // Checked here, before anything is scheduled: a target without the type (or one
            // that refuses the params) refuses its part, and the whole start is rolled back.
            let Some(fault) = self.effects.fault_types.get(name) else {
                return Err(ChaosError::NotApplicableHere {
                    kind: allow_name.into_owned(),
                    reason: "no fault type of that name is registered on this node \
                             (FaultTypes::register)",
                });
            };
            fault
                .check(params)
                .map_err(|reason| ChaosError::ParamsRefused {
                    kind: allow_name.clone().into_owned(),
                    reason,
                })?;
        }
        if let FaultKind::CertificateExpiry { expires_in } = plan.kind()
            && applied_here
        {
            let start = meshkit_net::tls::unix_seconds(std::time::SystemTime::now())
                + plan.start().as_secs() as i64;
            stand_in_fits(*expires_in, self.config.stand_in_not_after, start).map_err(
                |reason| ChaosError::NotApplicableHere {
                    kind: kind.to_owned(),
                    reason,
                },
            )?;
        }
        let schedule_id = self
            .schedule
            .schedule(now, plan.clone(), radius.clone())
            .map_err(ChaosError::Schedule)?;
        let ends_at = self
            .schedule
            .experiment(schedule_id)
            .map_or(now + plan.start() + plan.duration(), |e| e.ends_at);
        self.by_schedule.insert(schedule_id, id);
        self.records.insert(
            id,
            Record {
                schedule_id,
                plan,
                radius,
                phase: "scheduled",
                end_reason: None,
                activated_at: None,
                ends_at,
                reverted_at: None,
                applied_here,
                alive_before: BTreeSet::new(),
            },
        );
        tracing::warn!(experiment = %id, kind, applied_here, "chaos experiment scheduled");
        self.drain(now, node);
        self.status(now, id)
            .ok_or(ChaosError::UnknownExperiment(id))
    }

    /// Ends `id` now: reverts it if active, cancels it if scheduled.
    ///
    /// # Errors
    ///
    /// [`ChaosError::UnknownExperiment`] if it is neither (it ended already: its status is in
    /// [`experiments`](Self::experiments)); nothing changed.
    pub fn abort(
        &mut self,
        now: Instant,
        node: &Node,
        id: ExperimentRef,
    ) -> Result<ExperimentStatus, ChaosError> {
        let schedule_id = self
            .records
            .get(&id)
            .filter(|r| r.end_reason.is_none())
            .map(|r| r.schedule_id)
            .ok_or(ChaosError::UnknownExperiment(id))?;
        self.schedule
            .abort(now, schedule_id)
            .map_err(|_| ChaosError::UnknownExperiment(id))?;
        self.stats.aborts += 1;
        self.drain(now, node);
        self.status(now, id)
            .ok_or(ChaosError::UnknownExperiment(id))
    }

    /// Reverts every experiment now and refuses new ones until [`rearm`](Self::rearm).
    /// Returns how many it ended.
    pub fn kill_switch(&mut self, now: Instant, node: &Node) -> usize {
        let ended = self.schedule.engage_kill_switch(now);
        self.drain(now, node);
        tracing::warn!(
            ended,
            "chaos kill switch engaged: every experiment reverted"
        );
        ended
    }

    /// Releases the kill switch.
    pub fn rearm(&mut self) {
        if self.schedule.is_kill_switch_engaged() {
            tracing::warn!("chaos kill switch re-armed: experiments may start again");
        }
        self.schedule.rearm();
    }

    /// Active, scheduled and recent experiments, newest first.
    pub fn experiments(&self, now: Instant) -> Vec<ExperimentStatus> {
        let running = self
            .records
            .iter()
            .filter(|(_, r)| r.end_reason.is_none())
            .map(|(id, _)| *id)
            .rev();
        running
            .chain(self.recent.iter().copied())
            .filter_map(|id| self.status(now, id))
            .collect()
    }

    /// The next start or deadline.
    #[must_use]
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.schedule.poll_timeout()
    }

    /// Time passed: activates and reverts what is due (the dead-man switch).
    pub fn handle_timeout(&mut self, now: Instant, node: &Node) {
        if self.schedule.poll_timeout().is_some_and(|t| t <= now) {
            self.schedule.handle_timeout(now);
            self.drain(now, node);
        }
    }

    /// Measures the recoveries under way: a revert's is done when every member this node saw
    /// alive at the start is alive again.
    pub fn check_recovery(&mut self, now: Instant, node: &Node) {
        if self.recoveries.is_empty() {
            return;
        }
        let membership = node.membership();
        let alive = |id: &NodeId| {
            *id == node.local_id()
                || membership
                    .member(*id)
                    .is_some_and(|m| m.state == MemberState::Alive)
        };
        let mut i = 0;
        while i < self.recoveries.len() {
            let r = &self.recoveries[i];
            let waited = now.saturating_duration_since(r.reverted_at);
            if r.expect.iter().all(alive) {
                self.stats.recovery.record(&RECOVERY_BOUNDS, waited);
                self.recoveries.remove(i);
            } else if waited > MAX_RECOVERY_WAIT {
                tracing::warn!(
                    ?waited,
                    "the view did not converge after a chaos revert; no longer measured"
                );
                self.recoveries.remove(i);
            } else {
                i += 1;
            }
        }
    }

    /// The counters, with the active experiments and the wrapper's counts read now.
    pub fn stats(&self) -> ChaosStats {
        let mut stats = self.stats.clone();
        stats.active.clear();
        for r in self.records.values().filter(|r| r.phase == "active") {
            *stats.active.entry(r.radius.kind).or_default() += 1;
        }
        stats.kill_switch_engaged = self.schedule.is_kill_switch_engaged();
        stats.links = self.effects.links.counts();
        stats
    }

    pub(crate) fn command(&mut self, now: Instant, node: &Node, command: ChaosCommand) {
        match command {
            // Built by the driver, which knows the leadership state.
            ChaosCommand::View(_) => {}
            ChaosCommand::Apply {
                id,
                experiment,
                reply,
            } => {
                let (plan, radius) = *experiment;
                let _ = reply.send(self.apply(now, node, id, plan, radius));
            }
            ChaosCommand::Abort { id, reply } => {
                let _ = reply.send(self.abort(now, node, id));
            }
            ChaosCommand::KillSwitch(reply) => {
                let _ = reply.send(self.kill_switch(now, node));
            }
            ChaosCommand::Rearm(reply) => {
                self.rearm();
                let _ = reply.send(());
            }
            ChaosCommand::List(reply) => {
                let _ = reply.send(self.experiments(now));
            }
        }
    }

    fn status(&self, now: Instant, id: ExperimentRef) -> Option<ExperimentStatus> {
        let r = self.records.get(&id)?;
        // Wall-clock times from the monotonic ones: now on the wall clock, minus how long ago.
        let wall_now_ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
        let ms = |d: Duration| u64::try_from(d.as_millis()).unwrap_or(u64::MAX);
        let at = |t: Instant| {
            if t >= now {
                wall_now_ms.saturating_add(ms(t.saturating_duration_since(now)))
            } else {
                wall_now_ms.saturating_sub(ms(now.saturating_duration_since(t)))
            }
        };
        Some(ExperimentStatus {
            id,
            kind: r.plan.kind().allow_name().into_owned(),
            plan: r.plan.clone(),
            radius: r.radius.clone(),
            phase: r.phase.to_owned(),
            end_reason: r.end_reason.map(str::to_owned),
            activated_at_unix_ms: r.activated_at.map(at),
            deadline_unix_ms: at(r.ends_at),
            remaining_ms: if r.end_reason.is_some() {
                0
            } else {
                ms(r.ends_at.saturating_duration_since(now))
            },
            applied_here: r.applied_here,
            reverted_at_unix_ms: r.reverted_at.map(at),
        })
    }

    /// Whether this node's links or process are in the radius.
    fn concerns_me(&self, plan: &FaultPlan, radius: &BlastRadius) -> bool {
        let me = self.local;
        if plan.kind().is_link_fault() || matches!(plan.kind(), FaultKind::Partition { .. }) {
            radius.links.iter().any(|l| l.from == me || l.to == me)
        } else {
            radius.nodes.contains(&me)
        }
    }

    /// Applies every event the schedule has for us, in order.
    fn drain(&mut self, now: Instant, node: &Node) {
        let mut links_changed = false;
        while let Some(event) = self.schedule.poll_event() {
            match event {
                FaultEvent::Activate {
                    id, plan, radius, ..
                } => {
                    links_changed |= self.activate(now, node, id, &plan, &radius);
                }
                FaultEvent::Revert {
                    id, radius, reason, ..
                } => {
                    links_changed |= self.revert(now, id, radius.kind, reason);
                }
                FaultEvent::Cancelled { id, reason } => {
                    self.end(id, reason, None);
                }
                _ => {}
            }
        }
        if links_changed {
            self.publish_links();
        }
    }

    fn activate(
        &mut self,
        now: Instant,
        node: &Node,
        id: ExperimentId,
        plan: &FaultPlan,
        radius: &BlastRadius,
    ) -> bool {
        let kind = radius.kind;
        *self.stats.activations.entry(kind).or_default() += 1;
        let alive_before: BTreeSet<NodeId> = node
            .membership()
            .members()
            .filter(|m| m.state == MemberState::Alive)
            .map(|m| m.id)
            .collect();
        let Some(record) = self
            .by_schedule
            .get(&id)
            .and_then(|r| self.records.get_mut(r))
        else {
            return false;
        };
        record.phase = "active";
        record.activated_at = Some(now);
        record.alive_before = alive_before;
        let experiment = self.by_schedule[&id];
        if !record.applied_here {
            tracing::info!(%experiment, kind, "chaos experiment active elsewhere (nothing to apply here)");
            return false;
        }
        tracing::warn!(%experiment, kind, "chaos experiment active on this node");
        match plan.kind() {
            FaultKind::Pause {} => {
                self.paused.insert(id);
            }
            FaultKind::Kill {} => {
                tracing::error!(
                    %experiment,
                    status = KILL_EXIT_STATUS,
                    "chaos kill: the node stops now; its supervisor restarts it"
                );
                self.effects.killed.store(true, Ordering::Release);
                self.kill = true;
            }
            FaultKind::TransportDowngrade {} => {
                self.downgraded.insert(id);
                self.effects.refuse_h3.send_replace(true);
            }
            FaultKind::CertificateExpiry { .. } => {
                self.stand_in.insert(id);
                self.effects.serve_stand_in.send_replace(true);
            }
            FaultKind::ClockSkew { rate } => {
                self.skewed.insert(id, SkewedClock::ppm(*rate));
            }
            FaultKind::Custom { name, params } => {
                // Checked at apply; a type unregistered since (the table only grows today) is
                // logged and skipped rather than failing the driver.
                if let Some(fault) = self.effects.fault_types.get(name) {
                    fault.activate(experiment, params);
                    self.custom.insert(id, Activated(fault));
                } else {
                    tracing::error!(%experiment, name, "custom fault type gone before its start: nothing applied");
                }
            }
            kind if kind.is_link_fault() || matches!(kind, FaultKind::Partition { .. }) => {
                let rules = self.rules_for(plan.kind(), radius);
                self.link_rules.insert(id, (plan.seed(), rules));
                return true;
            }
            _ => {}
        }
        false
    }

    fn revert(
        &mut self,
        now: Instant,
        id: ExperimentId,
        kind: &'static str,
        reason: EndReason,
    ) -> bool {
        let reason_name = end_reason(reason);
        *self.stats.reverts.entry((kind, reason_name)).or_default() += 1;
        self.paused.remove(&id);
        self.skewed.remove(&id);
        if let Some(fault) = self.custom.remove(&id)
            && let Some(experiment) = self.by_schedule.get(&id)
        {
            fault.0.revert(*experiment);
        }
        if self.stand_in.remove(&id) && self.stand_in.is_empty() {
            self.effects.serve_stand_in.send_replace(false);
        }
        if self.downgraded.remove(&id) && self.downgraded.is_empty() {
            self.effects.refuse_h3.send_replace(false);
        }
        let links_changed = self.link_rules.remove(&id).is_some();
        if let Some(record) = self.by_schedule.get(&id).and_then(|r| self.records.get(r)) {
            if self.recoveries.len() >= MAX_PENDING_RECOVERIES {
                self.recoveries.pop_front();
            }
            self.recoveries.push_back(PendingRecovery {
                reverted_at: now,
                expect: record.alive_before.clone(),
            });
        }
        tracing::warn!(experiment = ?self.by_schedule.get(&id).map(ToString::to_string), kind, reason = reason_name, "chaos experiment reverted");
        self.end(id, reason, Some(now));
        links_changed
    }

    /// Moves an ended experiment to the recent list; `reverted_at` is when its revert ran
    /// (`None`: it never activated).
    fn end(&mut self, id: ExperimentId, reason: EndReason, reverted_at: Option<Instant>) {
        let Some(experiment) = self.by_schedule.remove(&id) else {
            return;
        };
        if let Some(record) = self.records.get_mut(&experiment) {
            record.phase = "reverted";
            record.end_reason = Some(end_reason(reason));
            record.reverted_at = reverted_at;
            record.alive_before.clear();
        }
        self.recent.push_front(experiment);
        while self.recent.len() > MAX_RECENT_EXPERIMENTS {
            if let Some(old) = self.recent.pop_back() {
                self.records.remove(&old);
            }
        }
    }

    /// This node's rules for a link fault or partition: the radius's links with this node at
    /// one end, outbound where it sends, inbound where it receives.
    fn rules_for(&self, kind: &FaultKind, radius: &BlastRadius) -> Vec<LinkRule> {
        let effect = match *kind {
            FaultKind::Partition { .. } => LinkEffect::Cut,
            FaultKind::Latency { delay, jitter } => LinkEffect::Latency { delay, jitter },
            FaultKind::Loss { rate } => LinkEffect::Loss { rate },
            FaultKind::BurstyLoss { enter, leave, loss } => {
                LinkEffect::BurstyLoss { enter, leave, loss }
            }
            FaultKind::Duplicate { rate } => LinkEffect::Duplicate { rate },
            FaultKind::Reorder { rate, max_delay } => LinkEffect::Reorder { rate, max_delay },
            _ => return Vec::new(),
        };
        let me = self.local;
        radius
            .links
            .iter()
            .filter_map(|l| {
                if l.from == me {
                    Some(LinkRule {
                        side: LinkSide::Outbound,
                        peer: l.to,
                        effect,
                    })
                } else if l.to == me {
                    Some(LinkRule {
                        side: LinkSide::Inbound,
                        peer: l.from,
                        effect,
                    })
                } else {
                    None
                }
            })
            .collect()
    }

    /// Swaps the rule table for the union of the active experiments' rules.
    fn publish_links(&self) {
        if self.link_rules.is_empty() {
            self.effects.links.clear();
            return;
        }
        let seed = self
            .link_rules
            .values()
            .fold(0u64, |acc, (seed, _)| acc.rotate_left(5) ^ seed);
        let rules = self
            .link_rules
            .values()
            .flat_map(|(_, rules)| rules.iter().copied());
        self.effects.links.set(ChaosRules::new(seed, rules));
    }
}

/// Why a kind cannot be applied by a real node; `None` when it can.
fn not_applicable(kind: &FaultKind) -> Option<&'static str> {
    match kind {
        FaultKind::MembershipSurge { .. } => Some(
            "a surge of new members is made by the simulator or the compose environment, \
             which start the members; a node cannot create peers",
        ),
        FaultKind::CertificateRotation {} => Some(
            "a rotation is made by the environment, which issues new certificates from the \
             mesh's CA and writes them into the nodes' [tls] files (each node reloads its \
             own); a node holds no CA key",
        ),
        _ => None,
    }
}

/// Whether the stand-in certificate (expiring at `not_after`, Unix seconds) is what a
/// `certificate-expiry` plan starting at `start` (Unix seconds) asks for: already expired when
/// the plan has no `expires_in`, else still valid and expiring within `expires_in` of the start.
/// A node cannot mint a certificate (it holds no CA key), so the operator provides the one it
/// serves, and a plan that does not match it is refused rather than run as something else.
fn stand_in_fits(
    expires_in: Option<Duration>,
    not_after: Option<i64>,
    start: i64,
) -> Result<(), &'static str> {
    let Some(not_after) = not_after else {
        return Err(
            "this node has no [chaos] stand_in_cert: give it a certificate for its own \
                    identity, signed by the mesh's CA, that is expired (or expires within the \
                    plan's expires_in); see docs/diagnostics.md, \"certificate-expiry\"",
        );
    };
    match expires_in {
        None if not_after >= start => Err(
            "[chaos] stand_in_cert is still valid, and a plan without expires_in serves an \
             expired certificate: give expires_in, or an expired stand-in",
        ),
        Some(_) if not_after < start => Err(
            "[chaos] stand_in_cert has expired, and a plan with expires_in serves one still \
             valid: leave expires_in out, or renew the stand-in",
        ),
        Some(d) if not_after > start.saturating_add(d.as_secs() as i64) => Err(
            "[chaos] stand_in_cert expires later than expires_in after the start: give a longer \
             expires_in, or a stand-in that expires sooner",
        ),
        _ => Ok(()),
    }
}

fn end_reason(reason: EndReason) -> &'static str {
    match reason {
        EndReason::Deadline => END_REASONS[0],
        EndReason::Aborted => END_REASONS[1],
        EndReason::KillSwitch => END_REASONS[2],
        _ => END_REASONS[3],
    }
}

/// The view `resolve` needs from this node: its members (not dead or left) with their region,
/// and the roles it knows (the Raft leader, lease holders and shard owners, known on voters).
pub(crate) fn cluster_view(node: &Node) -> ClusterView {
    let membership = node.membership();
    let members = membership
        .members()
        .filter(|m| matches!(m.state, MemberState::Alive | MemberState::Suspect))
        .map(|m| MemberView {
            id: m.id,
            region: membership
                .metadata(m.id)
                .and_then(|meta| meta.get(REGION_KEY))
                .map(|v| String::from_utf8_lossy(v).into_owned())
                .unwrap_or_default(),
        });
    let mut view = ClusterView::new(members);
    if let Some(group) = node.lease_group() {
        view = view.with_raft_leader(group.leader());
        for (scope, lease) in group.table().iter() {
            // A shard is owned through its lease (`shard/{namespace}/{id}`), so a voter's table
            // names the owner a `shard-owner` selector asks for.
            if let Some(shard) = scope.as_shard() {
                view = view.with_shard_owner(shard, lease.holder);
            }
            view = view.with_lease_holder(scope.clone(), lease.holder);
        }
    }
    view
}

#[cfg(test)]
mod tests;
