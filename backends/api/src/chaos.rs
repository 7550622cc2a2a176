//! The JSON bodies of the chaos routes (`/control/chaos/*`, docs/api.md "Chaos"), built by the
//! server (`meshkit_control::chaos`) and parsed by clients (`meshctl chaos`).
//!
//! The plan itself travels as [`meshkit::diag::fault::FaultPlan`]'s JSON form (the
//! [`RawFaultPlan`](meshkit::diag::fault::RawFaultPlan) fields); a blast radius as
//! [`RadiusView`], which turns back into the core's
//! [`BlastRadius`] for the relay to target nodes.

use std::collections::BTreeSet;
use std::time::Duration;

use meshkit::NodeId;
use meshkit::diag::fault::{BlastRadius, FaultPlan, Link};
use serde::{Deserialize, Serialize};

/// A blast radius on the wire: node ids, directed links as `[from, to]`, partition groups,
/// and the window in milliseconds.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RadiusView {
    /// The fault kind's name.
    pub kind: String,
    /// Every node the fault acts on.
    pub nodes: Vec<u64>,
    /// The directed links cut or degraded, `[from, to]`.
    pub links: Vec<[u64; 2]>,
    /// A partition's groups, first group first.
    pub groups: Vec<Vec<u64>>,
    /// Delay from activation to start, in milliseconds.
    pub start_ms: u64,
    /// How long it lasts once started, in milliseconds.
    pub duration_ms: u64,
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

impl From<&BlastRadius> for RadiusView {
    fn from(r: &BlastRadius) -> Self {
        Self {
            kind: r.kind.to_owned(),
            nodes: r.nodes.iter().map(|n| n.get()).collect(),
            links: r.links.iter().map(|l| [l.from.get(), l.to.get()]).collect(),
            groups: r
                .groups
                .iter()
                .map(|g| g.iter().map(|n| n.get()).collect())
                .collect(),
            start_ms: millis(r.start),
            duration_ms: millis(r.duration),
        }
    }
}

/// Why a [`RadiusView`] does not fit the plan it came with. The sender's fault; nothing applied.
#[derive(Clone, Debug, thiserror::Error, PartialEq, Eq)]
#[error("radius.{field}: {problem}")]
pub struct RadiusMismatch {
    /// The field that does not fit.
    pub field: &'static str,
    /// How.
    pub problem: String,
}

impl RadiusView {
    /// The core's radius for `plan`: the kind name is the plan's (the core keeps it as a
    /// `&'static str`), and it must match the view's; so must the window.
    pub fn to_radius(&self, plan: &FaultPlan) -> Result<BlastRadius, RadiusMismatch> {
        let kind = plan.kind().name();
        if kind != self.kind {
            return Err(RadiusMismatch {
                field: "kind",
                problem: format!("{:?} but the plan's kind is {kind:?}", self.kind),
            });
        }
        if self.duration_ms != millis(plan.duration()) || self.start_ms != millis(plan.start()) {
            return Err(RadiusMismatch {
                field: "duration_ms",
                problem: "the window differs from the plan's start and duration".to_owned(),
            });
        }
        if self.nodes.contains(&0) {
            return Err(RadiusMismatch {
                field: "nodes",
                problem: "node id 0 names no node".to_owned(),
            });
        }
        Ok(BlastRadius {
            kind,
            nodes: self.nodes.iter().map(|n| NodeId::new(*n)).collect(),
            links: self
                .links
                .iter()
                .map(|[from, to]| Link {
                    from: NodeId::new(*from),
                    to: NodeId::new(*to),
                })
                .collect::<BTreeSet<_>>(),
            groups: self
                .groups
                .iter()
                .map(|g| g.iter().map(|n| NodeId::new(*n)).collect())
                .collect(),
            start: plan.start(),
            duration: plan.duration(),
        })
    }
}

/// `POST /control/chaos/plans` answers this: what the plan would touch and the token that
/// starts it (on this node, for this caller, before `expires_unix_ms`, once).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct PlanResponse {
    /// The node that resolved the plan and issued the token: start it there.
    pub node: u64,
    /// The plan as the node read it (defaults filled in).
    pub plan: FaultPlan,
    /// What it touches, resolved against the node's view now.
    pub radius: RadiusView,
    /// SHA-256 of the plan's canonical JSON, hex: what the token is bound to.
    pub plan_hash: String,
    /// The confirmation token.
    pub token: String,
    /// Who the token was issued to.
    pub caller: String,
    /// When the token stops being accepted, Unix milliseconds.
    pub expires_unix_ms: u64,
}

/// `POST /control/chaos/experiments`: the plan again, and the token its plan call returned.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StartRequest {
    /// The plan, as planned (any change refuses the token).
    pub plan: FaultPlan,
    /// The token of `POST /control/chaos/plans`.
    pub token: String,
}

/// One target's answer to an activation, abort, kill switch or re-arm.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct TargetResult {
    /// The target node.
    pub node: u64,
    /// Whether it did what was asked.
    pub ok: bool,
    /// Its state of the experiment afterwards, when it has one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub experiment: Option<ExperimentView>,
    /// For a kill switch: how many experiments it reverted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reverted: Option<usize>,
    /// Why not, in words (it names the node's refusal: `[chaos]` disabled, kind not allowed,
    /// unreachable, ...).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// The stable reason of the refusal (`kind-not-allowed`, `unreachable`, ...).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// The HTTP status of the node's refusal, when it answered one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<u16>,
}

/// `POST /control/chaos/experiments` answers this (201 when every target confirmed, 207 when
/// some did not: the others still revert at the deadline, or on abort).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct StartResponse {
    /// The experiment's id, `node-<origin>/<serial>`.
    pub id: String,
    /// When the receiving node accepted it, Unix milliseconds.
    pub activated_unix_ms: u64,
    /// When every target had answered, Unix milliseconds.
    pub confirmed_unix_ms: u64,
    /// The deadline, Unix milliseconds (every target reverts by itself then).
    pub deadline_unix_ms: u64,
    /// What it touches.
    pub radius: RadiusView,
    /// Each target's confirmation or error, by node id.
    pub targets: Vec<TargetResult>,
}

/// One experiment as one node holds it (`GET /control/chaos/experiments`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ExperimentView {
    /// `node-<origin>/<serial>`.
    pub id: String,
    /// The answering node.
    pub node: u64,
    /// The fault kind's allow-list name (`custom:<name>` for a service's own type).
    pub kind: String,
    /// The plan.
    pub plan: FaultPlan,
    /// What it touches.
    pub radius: RadiusView,
    /// `scheduled`, `active` or `reverted`.
    pub phase: String,
    /// Why it ended: `deadline`, `aborted` or `kill-switch`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub end_reason: Option<String>,
    /// When it became active here, Unix milliseconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub activated_at_unix_ms: Option<u64>,
    /// Its deadline, Unix milliseconds.
    pub deadline_unix_ms: u64,
    /// Time left until the deadline, milliseconds (0 once reverted).
    pub remaining_ms: u64,
    /// Whether this node's own links or process are in the radius.
    pub applied_here: bool,
    /// When it was reverted on this node, Unix milliseconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reverted_at_unix_ms: Option<u64>,
    /// On the node that started it (its origin) only: each target's state as the origin last
    /// learned it (the start's confirmations, then the revert each target confirmed when the
    /// origin asked it after the deadline). Empty elsewhere.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub targets: Vec<TargetRevert>,
}

/// One target of an experiment, as its origin knows it (`targets` of an [`ExperimentView`]).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TargetRevert {
    /// The target node.
    pub node: u64,
    /// `confirmed`: the target answered that it reverted the experiment; `unconfirmed`: not
    /// (yet): the deadline has not passed, the target has not answered, or it answered that
    /// it still runs it or does not know it (`error` says which).
    pub state: String,
    /// When it became active on the target, Unix milliseconds (as the target said).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub activated_unix_ms: Option<u64>,
    /// When the target reverted it, Unix milliseconds (as the target said).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reverted_unix_ms: Option<u64>,
    /// Why it ended there: `deadline`, `aborted`, `kill-switch` or `missed`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub end_reason: Option<String>,
    /// Why the origin has no confirmation, in words (the last attempt's failure).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// [`TargetRevert::state`] of a target that confirmed its revert.
pub const TARGET_CONFIRMED: &str = "confirmed";
/// [`TargetRevert::state`] of a target that did not (yet).
pub const TARGET_UNCONFIRMED: &str = "unconfirmed";

/// `GET /control/chaos/experiments`.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ExperimentsResponse {
    /// The answering node.
    pub node: u64,
    /// Whether its kill switch is engaged (new experiments refused until re-armed).
    pub kill_switch_engaged: bool,
    /// Active and recent experiments, newest first.
    pub experiments: Vec<ExperimentView>,
}

/// `DELETE /control/chaos/experiments/{id}`, `POST` and `DELETE /control/chaos/kill-switch`:
/// what each member did.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct FanOutResponse {
    /// What was asked: `abort`, `kill-switch` or `rearm`.
    pub action: String,
    /// The experiment, for an abort.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    /// Each member's answer.
    pub targets: Vec<TargetResult>,
}

/// The body of a refused chaos call: the error in words and a stable `reason`
/// (`token-replayed`, `kind-not-allowed`, `duration-over-max`, ...); a start refused by a
/// target also lists every target's answer.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ChaosErrorBody {
    /// What is wrong, in words.
    pub error: String,
    /// Why, as a stable name.
    pub reason: String,
    /// A start refused by a target: every target's answer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub targets: Option<Vec<TargetResult>>,
}

/// What one node asks another (`POST /control/chaos/relay`, node certificates only).
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "kebab-case", deny_unknown_fields)]
pub enum RelayRequest {
    /// Apply this node's part of an experiment.
    Apply {
        /// The experiment id.
        id: String,
        /// The plan (boxed: the other ops carry only names).
        plan: Box<FaultPlan>,
        /// The radius the origin resolved.
        radius: RadiusView,
        /// Who started it at the origin (for the audit log).
        caller: String,
    },
    /// Abort an experiment here.
    Abort {
        /// The experiment id.
        id: String,
        /// Who asked at the origin.
        caller: String,
    },
    /// Engage the kill switch here.
    KillSwitch {
        /// Who asked at the origin.
        caller: String,
    },
    /// Re-arm here.
    Rearm {
        /// Who asked at the origin.
        caller: String,
    },
    /// How does this experiment stand here (the origin confirming each target's revert)?
    /// Changes nothing.
    Status {
        /// The experiment id.
        id: String,
        /// Who asks: the origin itself (`client-certificate:node-<id>`).
        caller: String,
    },
}

impl RelayRequest {
    /// The op's name, as on the wire.
    pub fn op(&self) -> &'static str {
        match self {
            Self::Apply { .. } => "apply",
            Self::Abort { .. } => "abort",
            Self::KillSwitch { .. } => "kill-switch",
            Self::Rearm { .. } => "rearm",
            Self::Status { .. } => "status",
        }
    }

    /// The original caller it names.
    pub fn caller(&self) -> &str {
        match self {
            Self::Apply { caller, .. }
            | Self::Abort { caller, .. }
            | Self::KillSwitch { caller }
            | Self::Rearm { caller }
            | Self::Status { caller, .. } => caller,
        }
    }
}

/// The percent-encoded form of an experiment id for a URL path segment (`node-3/17` ->
/// `node-3%2F17`).
pub fn id_path_segment(id: &str) -> String {
    id.replace('%', "%25").replace('/', "%2F")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn radius_round_trips_through_its_view_and_checks_the_plan() {
        use meshkit::diag::fault::{ClusterView, resolve};
        let plan: FaultPlan = serde_json::from_str(
            r#"{"duration":"2s","fault":{"kind":"partition","shape":"minority"}}"#,
        )
        .unwrap();
        let radius = resolve(&plan, &ClusterView::numbered(5, 1)).unwrap();
        let view = RadiusView::from(&radius);
        assert_eq!(view.to_radius(&plan).unwrap(), radius);
        let mut longer = view.clone();
        longer.duration_ms += 1;
        assert_eq!(longer.to_radius(&plan).unwrap_err().field, "duration_ms");
        let mut other = view;
        other.kind = "pause".to_owned();
        assert_eq!(other.to_radius(&plan).unwrap_err().field, "kind");
    }

    #[test]
    fn ids_are_escaped_for_one_path_segment() {
        assert_eq!(id_path_segment("node-3/17"), "node-3%2F17");
    }
}
