//! Membership operations of the control API, as `serf join` and `consul leave` are.
//!
//! * `POST /control/join` (`{"seeds": ["1@10.0.0.1:7001"]}`): the node asks each seed (by node
//!   id and gossip address, as `seeds` in `node.toml`) for the member list and joins through
//!   them. The answer comes at once; the members arrive by gossip (`GET /meshkit/peers`).
//! * `POST /control/leave`: the node releases its leases (as a drain), announces `left` to the
//!   mesh and stops probing. Its process keeps running and answering the control API until it
//!   is stopped; it does not rejoin without a restart.
//!
//! * `POST /control/force-leave` (`{"node": 3}`): the node moves member 3, which it holds
//!   dead, to `left` in its own view (`serf force-leave`); 409 if it holds the member alive or
//!   suspect (it may still answer), 404 if it does not know it, 400 for the node itself. Only
//!   this node's view changes: a `left` relayed about another member is a death claim to every
//!   receiver (docs/security.md), so `meshctl force-leave` asks every member.
//!
//! * `POST /control/voters/add` and `POST /control/voters/remove` (`{"node": 4}`): one change
//!   of the Raft voter set, as `etcdctl member add/remove`, proposed by the Raft leader and
//!   refused (409, with the numbers) when it would lose quorum, while another is pending, or
//!   when the node to add is not an alive member running a joining voter (or the node to
//!   remove not a voter). Answered 202 once proposed; the change is applied when
//!   `GET /meshkit/leaders` shows it. A node that does not lead answers 421 naming the leader
//!   and its control address (or, not knowing it, the voters' control addresses): the client
//!   asks there. The leader asked to remove itself hands leadership to a caught-up voter first
//!   and answers 421 naming it.
//!
//! All need `mesh.admin`: they change which mesh a node is in, or who decides leases.

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};

use meshkit::NodeId;
use meshkit::node::{VoterChange, VoterChangeError};

use super::leadership::ErrorBody;
use meshkit::membership::{ForceLeave, ForceLeaveError, MemberState};

use meshkit_runtime::driver::{
    CONTROL_KEY, ForceLeaveFailed, LeadershipError, NodeHandle, VotersError,
};

/// Most seeds one join names.
pub const MAX_JOIN_SEEDS: usize = 16;

/// The body of `POST /control/join`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JoinRequest {
    /// `id@ip:port` of members to join through (their gossip address).
    pub seeds: Vec<String>,
}

/// The answer to a join.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct JoinResponse {
    /// The node asked.
    pub node: u64,
    /// The seeds it asked, as given.
    pub seeds: Vec<String>,
}

/// The answer to a leave.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LeaveResponse {
    /// The node that left.
    pub node: u64,
    /// Leases it released first.
    pub released: Vec<String>,
}

/// The body of `POST /control/force-leave`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ForceLeaveRequest {
    /// The member to move from dead to left.
    pub node: u64,
}

/// The answer to a force-leave.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ForceLeaveResponse {
    /// The node asked.
    pub node: u64,
    /// The member named.
    pub member: u64,
    /// `true` if it was dead here and is now left; `false` if it had left already.
    pub changed: bool,
    /// Its state at the node asked now: `left`.
    pub state: String,
}

fn bad_request(message: String) -> Response {
    (StatusCode::BAD_REQUEST, Json(ErrorBody { error: message })).into_response()
}

fn stopped() -> Response {
    (
        StatusCode::SERVICE_UNAVAILABLE,
        Json(ErrorBody {
            error: "driver stopped".to_owned(),
        }),
    )
        .into_response()
}

pub(super) async fn join(
    State(node): State<NodeHandle>,
    Json(request): Json<JoinRequest>,
) -> Response {
    if request.seeds.is_empty() || request.seeds.len() > MAX_JOIN_SEEDS {
        return bad_request(format!(
            "field `seeds`: give 1 to {MAX_JOIN_SEEDS} seeds, such as \"1@10.0.0.1:7001\""
        ));
    }
    let mut seeds = Vec::with_capacity(request.seeds.len());
    for (i, text) in request.seeds.iter().enumerate() {
        match meshkit_runtime::driver::SeedPeer::parse(text) {
            Some(seed) if seed.id.get() != 0 => seeds.push(seed),
            _ => {
                return bad_request(format!(
                    "field `seeds[{i}]` = {text:?}: expected id@ip:port (the member's gossip \
                     address), such as 1@10.0.0.1:7001"
                ));
            }
        }
    }
    match node.join(seeds).await {
        Ok(()) => Json(JoinResponse {
            node: node.id().get(),
            seeds: request.seeds,
        })
        .into_response(),
        Err(_) => stopped(),
    }
}

pub(super) async fn leave(State(node): State<NodeHandle>) -> Response {
    let released = match node.drain().await {
        Ok(released) => released.iter().map(ToString::to_string).collect(),
        Err(LeadershipError::Disabled) => Vec::new(),
        Err(LeadershipError::Stopped(_)) => return stopped(),
        Err(error) => {
            tracing::warn!(%error, "leases not released before the leave");
            Vec::new()
        }
    };
    match node.leave().await {
        Ok(()) => {
            tracing::info!(
                ?released,
                "leaving the mesh (asked through the control API)"
            );
            Json(LeaveResponse {
                node: node.id().get(),
                released,
            })
            .into_response()
        }
        Err(_) => stopped(),
    }
}

pub(super) async fn force_leave(
    State(node): State<NodeHandle>,
    Json(request): Json<ForceLeaveRequest>,
) -> Response {
    if request.node == 0 {
        return bad_request("field `node`: node ids start at 1".to_owned());
    }
    let refused = match node.force_leave(NodeId::new(request.node)).await {
        Ok(outcome) => {
            return Json(ForceLeaveResponse {
                node: node.id().get(),
                member: request.node,
                changed: matches!(outcome, ForceLeave::Left { .. }),
                state: MemberState::Left.to_string(),
            })
            .into_response();
        }
        Err(ForceLeaveFailed::Stopped(_)) => return stopped(),
        Err(ForceLeaveFailed::Refused(e)) => e,
        // A failure added to the runtime after this handler: nothing more specific to say.
        Err(e) => {
            return (
                StatusCode::INTERNAL_SERVER_ERROR,
                Json(ErrorBody {
                    error: e.to_string(),
                }),
            )
                .into_response();
        }
    };
    let status = match refused {
        ForceLeaveError::OwnNode { .. } => StatusCode::BAD_REQUEST,
        ForceLeaveError::UnknownMember { .. } => StatusCode::NOT_FOUND,
        // `NotDead`, and any later refusal: the request conflicts with this node's view.
        _ => StatusCode::CONFLICT,
    };
    (
        status,
        Json(ErrorBody {
            error: refused.to_string(),
        }),
    )
        .into_response()
}

/// The body of `POST /control/voters/add` and `POST /control/voters/remove`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VoterRequest {
    /// The node to add or remove.
    pub node: u64,
}

/// The answer to a voter change the leader proposed (202): it is applied once
/// `GET /meshkit/leaders` lists `proposed` as the voters.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct VoterChangeResponse {
    /// `add` or `remove`.
    pub change: String,
    /// The node added or removed.
    pub node: u64,
    /// The Raft leader that proposed it (the node asked).
    pub leader: u64,
    /// The voters before the change.
    pub voters: Vec<u64>,
    /// The voters once it is applied.
    pub proposed: Vec<u64>,
}

/// The answer of a node that cannot propose a voter change (421): ask `leader` at
/// `leader_control`, or, with no leader known, one of `voters_control`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct VoterRedirect {
    /// Why this node did not propose it.
    pub error: String,
    /// The node to ask, if known.
    pub leader: Option<u64>,
    /// Its control address, if it publishes one.
    pub leader_control: Option<String>,
    /// The control addresses of the voters this node knows, when it knows no leader.
    #[serde(default)]
    pub voters_control: Vec<String>,
}

pub(super) async fn voters_add(
    State(node): State<NodeHandle>,
    Json(request): Json<VoterRequest>,
) -> Response {
    change_voters(&node, request, VoterChange::Add).await
}

pub(super) async fn voters_remove(
    State(node): State<NodeHandle>,
    Json(request): Json<VoterRequest>,
) -> Response {
    change_voters(&node, request, VoterChange::Remove).await
}

async fn change_voters(
    node: &NodeHandle,
    request: VoterRequest,
    make: fn(NodeId) -> VoterChange,
) -> Response {
    if request.node == 0 {
        return bad_request("field `node`: a node id (1 or more)".to_owned());
    }
    let change = make(NodeId::new(request.node));
    let refused = match node.change_voters(change).await {
        Ok(p) => {
            let ids = |v: &[NodeId]| v.iter().map(|n| n.get()).collect();
            return (
                StatusCode::ACCEPTED,
                Json(VoterChangeResponse {
                    change: match change {
                        VoterChange::Add(_) => "add",
                        VoterChange::Remove(_) => "remove",
                    }
                    .to_owned(),
                    node: request.node,
                    leader: p.leader.get(),
                    voters: ids(&p.voters),
                    proposed: ids(&p.proposed),
                }),
            )
                .into_response();
        }
        Err(error) => error,
    };
    let message = refused.to_string();
    let status = match &refused {
        VotersError::Disabled => StatusCode::NOT_FOUND,
        VotersError::Stopped(_) => return stopped(),
        VotersError::Change(
            VoterChangeError::NotLeader { leader }
            | VoterChangeError::LeaderMoving { to: leader, .. },
        ) => return redirect(node, message, *leader).await,
        VotersError::Change(VoterChangeError::NoVoter) => {
            return redirect(node, message, None).await;
        }
        _ => StatusCode::CONFLICT,
    };
    tracing::info!(%change, reason = %message, "voter change refused");
    (status, Json(ErrorBody { error: message })).into_response()
}

/// 421: where to ask instead. The leader's control address comes from its metadata; with no
/// leader known, the control addresses of the voters this node knows of.
async fn redirect(node: &NodeHandle, error: String, leader: Option<NodeId>) -> Response {
    let Ok(snapshot) = node.snapshot().await else {
        return stopped();
    };
    let control = |id: NodeId| {
        snapshot
            .peer(id)
            .and_then(|p| p.metadata.get(CONTROL_KEY).cloned())
    };
    let voters_control = match (leader, &snapshot.leadership) {
        (None, Some((view, _))) => {
            let voters = view.raft.as_ref().map_or(&view.voters, |r| &r.voters);
            voters
                .iter()
                .filter(|v| **v != node.id().get())
                .filter_map(|v| control(NodeId::new(*v)))
                .collect()
        }
        _ => Vec::new(),
    };
    (
        StatusCode::MISDIRECTED_REQUEST,
        Json(VoterRedirect {
            error,
            leader: leader.map(NodeId::get),
            leader_control: leader.and_then(control),
            voters_control,
        }),
    )
        .into_response()
}
