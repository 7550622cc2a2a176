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
use serde::Serialize;
use thiserror::Error;

use meshkit::NodeId;
use meshkit::node::{VoterChange, VoterChangeError};

use super::leadership::ErrorBody;
use meshkit::membership::{ForceLeave, ForceLeaveError, MemberState};
pub use meshkit_api::json::{
    ForceLeaveRequest, ForceLeaveResponse, JoinRequest, JoinResponse, LeaveResponse,
    VoterChangeResponse, VoterRedirect, VoterRequest,
};

use meshkit_runtime::driver::{
    CONTROL_KEY, ForceLeaveFailed, LeadershipError, NodeHandle, VotersError,
};

/// Most seeds one join names.
pub const MAX_JOIN_SEEDS: usize = 16;

/// Why a membership call (join, leave, force-leave, a voter change) was refused. The HTTP
/// routes answer it with [`MembershipError::into_response`]; the gRPC methods with the status
/// `grpc::CallError` gives it, so both protocols refuse the same requests for the same reasons.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum MembershipError {
    /// 400, `INVALID_ARGUMENT`: a field the node cannot take; the message names it.
    #[error("{0}")]
    BadField(String),
    /// 503, `UNAVAILABLE`: the node's driver has stopped.
    #[error("driver stopped")]
    Stopped,
    /// 400, 404 or 409 (`INVALID_ARGUMENT`, `NOT_FOUND`, `FAILED_PRECONDITION`): the node
    /// refused to force the member out (itself, unknown, not dead).
    #[error(transparent)]
    ForceLeave(ForceLeaveError),
    /// 404, `NOT_FOUND`: the node runs no Raft voters (no `[leadership]`).
    #[error("{0}")]
    NoLeadership(String),
    /// 409, `FAILED_PRECONDITION`: the leader refused the voter change (quorum, one already
    /// pending, not a joining voter, not a voter); the message has the numbers.
    #[error("{0}")]
    VoterRefused(String),
    /// 421, `FAILED_PRECONDITION`: this node does not lead; ask the node named.
    #[error("{}", redirect_message(.0))]
    NotLeader(VoterRedirect),
    /// 500, `INTERNAL`: a failure the runtime gained after this code was written.
    #[error("{0}")]
    Other(String),
}

/// A redirect in words, for a protocol without a body to carry it (gRPC).
fn redirect_message(r: &VoterRedirect) -> String {
    match (r.leader, &r.leader_control) {
        (Some(leader), Some(control)) => {
            format!("{}; ask node {leader} at {control}", r.error)
        }
        (Some(leader), None) => format!("{}; ask node {leader}", r.error),
        (None, _) if !r.voters_control.is_empty() => format!(
            "{}; ask one of the voters at {}",
            r.error,
            r.voters_control.join(", ")
        ),
        (None, _) => r.error.clone(),
    }
}

impl MembershipError {
    /// The HTTP status it is answered with.
    pub fn http_status(&self) -> StatusCode {
        match self {
            Self::BadField(_) => StatusCode::BAD_REQUEST,
            Self::Stopped => StatusCode::SERVICE_UNAVAILABLE,
            Self::ForceLeave(ForceLeaveError::OwnNode { .. }) => StatusCode::BAD_REQUEST,
            Self::ForceLeave(ForceLeaveError::UnknownMember { .. }) | Self::NoLeadership(_) => {
                StatusCode::NOT_FOUND
            }
            // `NotDead`, and any later refusal: the request conflicts with this node's view.
            Self::ForceLeave(_) | Self::VoterRefused(_) => StatusCode::CONFLICT,
            Self::NotLeader(_) => StatusCode::MISDIRECTED_REQUEST,
            Self::Other(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }
}

impl IntoResponse for MembershipError {
    fn into_response(self) -> Response {
        let status = self.http_status();
        match self {
            Self::NotLeader(redirect) => (status, Json(redirect)).into_response(),
            other => (
                status,
                Json(ErrorBody {
                    error: other.to_string(),
                }),
            )
                .into_response(),
        }
    }
}

/// A membership call's answer as JSON, or its refusal.
fn answer<T: Serialize>(outcome: Result<T, MembershipError>) -> Response {
    match outcome {
        Ok(body) => Json(body).into_response(),
        Err(refused) => refused.into_response(),
    }
}

/// Has `node` join the mesh through `seeds` (`id@ip:port` each, 1 to [`MAX_JOIN_SEEDS`]).
pub async fn join_through(
    node: &NodeHandle,
    seeds: Vec<String>,
) -> Result<JoinResponse, MembershipError> {
    if seeds.is_empty() || seeds.len() > MAX_JOIN_SEEDS {
        return Err(MembershipError::BadField(format!(
            "field `seeds`: give 1 to {MAX_JOIN_SEEDS} seeds, such as \"1@10.0.0.1:7001\""
        )));
    }
    let mut parsed = Vec::with_capacity(seeds.len());
    for (i, text) in seeds.iter().enumerate() {
        match meshkit_runtime::driver::SeedPeer::parse(text) {
            Some(seed) if seed.id.get() != 0 => parsed.push(seed),
            _ => {
                return Err(MembershipError::BadField(format!(
                    "field `seeds[{i}]` = {text:?}: expected id@ip:port (the member's gossip \
                     address), such as 1@10.0.0.1:7001"
                )));
            }
        }
    }
    node.join(parsed)
        .await
        .map_err(|_| MembershipError::Stopped)?;
    Ok(JoinResponse {
        node: node.id().get(),
        seeds,
    })
}

/// Has `node` release its leases and leave the mesh.
pub async fn leave_mesh(node: &NodeHandle) -> Result<LeaveResponse, MembershipError> {
    let released = match node.drain().await {
        Ok(released) => released.iter().map(ToString::to_string).collect(),
        Err(LeadershipError::Disabled) => Vec::new(),
        Err(LeadershipError::Stopped(_)) => return Err(MembershipError::Stopped),
        Err(error) => {
            tracing::warn!(%error, "leases not released before the leave");
            Vec::new()
        }
    };
    node.leave().await.map_err(|_| MembershipError::Stopped)?;
    tracing::info!(
        ?released,
        "leaving the mesh (asked through the control API)"
    );
    Ok(LeaveResponse {
        node: node.id().get(),
        released,
    })
}

/// Has `node` move `member`, which it holds dead, to `left` in its own view.
pub async fn force_leave_member(
    node: &NodeHandle,
    member: u64,
) -> Result<ForceLeaveResponse, MembershipError> {
    if member == 0 {
        return Err(MembershipError::BadField(
            "field `node`: node ids start at 1".to_owned(),
        ));
    }
    match node.force_leave(NodeId::new(member)).await {
        Ok(outcome) => Ok(ForceLeaveResponse {
            node: node.id().get(),
            member,
            changed: matches!(outcome, ForceLeave::Left { .. }),
            state: MemberState::Left.to_string(),
        }),
        Err(ForceLeaveFailed::Stopped(_)) => Err(MembershipError::Stopped),
        Err(ForceLeaveFailed::Refused(e)) => Err(MembershipError::ForceLeave(e)),
        // A failure added to the runtime after this code: nothing more specific to say.
        Err(e) => Err(MembershipError::Other(e.to_string())),
    }
}

pub(super) async fn join(
    State(node): State<NodeHandle>,
    Json(request): Json<JoinRequest>,
) -> Response {
    answer(join_through(&node, request.seeds).await)
}

pub(super) async fn leave(State(node): State<NodeHandle>) -> Response {
    answer(leave_mesh(&node).await)
}

pub(super) async fn force_leave(
    State(node): State<NodeHandle>,
    Json(request): Json<ForceLeaveRequest>,
) -> Response {
    answer(force_leave_member(&node, request.node).await)
}

pub(super) async fn voters_add(
    State(node): State<NodeHandle>,
    Json(request): Json<VoterRequest>,
) -> Response {
    voter_answer(change_voters(&node, request.node, VoterChange::Add).await)
}

pub(super) async fn voters_remove(
    State(node): State<NodeHandle>,
    Json(request): Json<VoterRequest>,
) -> Response {
    voter_answer(change_voters(&node, request.node, VoterChange::Remove).await)
}

/// 202 once proposed (applied later), or the refusal.
fn voter_answer(outcome: Result<VoterChangeResponse, MembershipError>) -> Response {
    match outcome {
        Ok(proposed) => (StatusCode::ACCEPTED, Json(proposed)).into_response(),
        Err(refused) => refused.into_response(),
    }
}

/// Has `node`, if it is the Raft leader, propose the change `make(member)`.
pub async fn change_voters(
    node: &NodeHandle,
    member: u64,
    make: fn(NodeId) -> VoterChange,
) -> Result<VoterChangeResponse, MembershipError> {
    if member == 0 {
        return Err(MembershipError::BadField(
            "field `node`: a node id (1 or more)".to_owned(),
        ));
    }
    let change = make(NodeId::new(member));
    let refused = match node.change_voters(change).await {
        Ok(p) => {
            let ids = |v: &[NodeId]| v.iter().map(|n| n.get()).collect();
            return Ok(VoterChangeResponse {
                change: match change {
                    VoterChange::Add(_) => "add",
                    VoterChange::Remove(_) => "remove",
                }
                .to_owned(),
                node: member,
                leader: p.leader.get(),
                voters: ids(&p.voters),
                proposed: ids(&p.proposed),
            });
        }
        Err(error) => error,
    };
    let message = refused.to_string();
    let error = match &refused {
        VotersError::Disabled => MembershipError::NoLeadership(message),
        VotersError::Stopped(_) => return Err(MembershipError::Stopped),
        VotersError::Change(
            VoterChangeError::NotLeader { leader }
            | VoterChangeError::LeaderMoving { to: leader, .. },
        ) => return Err(redirect(node, message, *leader).await),
        VotersError::Change(VoterChangeError::NoVoter) => {
            return Err(redirect(node, message, None).await);
        }
        _ => MembershipError::VoterRefused(message),
    };
    tracing::info!(%change, reason = %error, "voter change refused");
    Err(error)
}

/// Where to ask instead. The leader's control address comes from its metadata; with no leader
/// known, the control addresses of the voters this node knows of.
async fn redirect(node: &NodeHandle, error: String, leader: Option<NodeId>) -> MembershipError {
    let Ok(snapshot) = node.snapshot().await else {
        return MembershipError::Stopped;
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
    MembershipError::NotLeader(VoterRedirect {
        error,
        leader: leader.map(NodeId::get),
        leader_control: leader.and_then(control),
        voters_control,
    })
}
