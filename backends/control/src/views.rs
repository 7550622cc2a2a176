//! Read-only views of the mesh, computed from one node's snapshot.
//!
//! * `GET /meshkit/peers?state=alive&cluster=eu&region=eu-west&after=12&limit=100`: members
//!   filtered by state and by declared cluster or region, in id order, paged by id
//!   (`next_after` names the next page's `after`).
//! * `GET /meshkit/clusters`: the clusters members declare in their metadata (`cluster` key),
//!   each with member counts by state and by region, and the leader (the holder of
//!   `global-control` as this node knows it).
//! * `GET /meshkit/versions`: the software and wire-protocol versions members publish, with
//!   counts, so a mixed-version rollout is visible.
//! * `GET /readyz`: 200 once the node has joined a mesh (and, with leadership, knows a Raft
//!   leader or holds a lease) and is not drained; 503 with the reasons otherwise.

use std::collections::BTreeMap;

use axum::Json;
use axum::extract::State;
use axum::extract::rejection::QueryRejection;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use meshkit::membership::MemberState;
use serde::{Deserialize, Serialize};

use super::leadership::ErrorBody;
use meshkit_runtime::driver::{
    CLUSTER_KEY, NodeHandle, PeerInfo, REGION_KEY, Snapshot, VERSION_KEY, WIRE_KEY,
};

/// Page size when the query names none.
pub const DEFAULT_PAGE: usize = 500;
/// Largest page a query may ask for.
pub const MAX_PAGE: usize = 10_000;

/// Filter and page of `GET /meshkit/peers`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PeersQuery {
    /// Only members in this state (`alive`, `suspect`, `dead`, `left`).
    pub state: Option<String>,
    /// Only members that declare this cluster.
    pub cluster: Option<String>,
    /// Only members that declare this region.
    pub region: Option<String>,
    /// Only members with a larger id (the previous page's `next_after`).
    pub after: Option<u64>,
    /// Page size (default [`DEFAULT_PAGE`], at most [`MAX_PAGE`]).
    pub limit: Option<usize>,
}

impl PeersQuery {
    /// Whether `peer` passes the filter (paging aside).
    pub fn matches(&self, peer: &PeerInfo) -> bool {
        let meta = |key: &str, want: &Option<String>| {
            want.as_ref()
                .is_none_or(|w| peer.metadata.get(key) == Some(w))
        };
        self.state
            .as_ref()
            .is_none_or(|s| peer.state.to_string() == *s)
            && meta(CLUSTER_KEY, &self.cluster)
            && meta(REGION_KEY, &self.region)
    }

    /// The page size asked for, within bounds.
    pub fn limit(&self) -> usize {
        self.limit.unwrap_or(DEFAULT_PAGE).clamp(1, MAX_PAGE)
    }

    /// Checks values serde cannot: the state's name and the page size.
    pub fn check(&self) -> Result<(), String> {
        if let Some(state) = &self.state
            && !["alive", "suspect", "dead", "left"].contains(&state.as_str())
        {
            return Err(format!(
                "query `state` = {state:?}: expected alive, suspect, dead or left"
            ));
        }
        if self.limit.is_some_and(|l| l == 0 || l > MAX_PAGE) {
            return Err(format!("query `limit`: expected 1..={MAX_PAGE}"));
        }
        Ok(())
    }
}

/// A 400 with a JSON body.
pub(super) fn bad_request(error: String) -> Response {
    (StatusCode::BAD_REQUEST, Json(ErrorBody { error })).into_response()
}

/// A 400 for a query string that does not parse.
pub(super) fn bad_query(rejection: &QueryRejection) -> Response {
    bad_request(format!(
        "{}; allowed: state, cluster, region, after, limit",
        rejection.body_text()
    ))
}

fn stopped() -> Response {
    (
        StatusCode::SERVICE_UNAVAILABLE,
        Json(ErrorBody {
            error: "the node's driver has stopped".to_owned(),
        }),
    )
        .into_response()
}

/// Member counts by state.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct StateCounts {
    /// Alive members.
    pub alive: usize,
    /// Suspected members.
    pub suspect: usize,
    /// Members declared dead.
    pub dead: usize,
    /// Members that left.
    pub left: usize,
}

impl StateCounts {
    fn add(&mut self, state: MemberState) {
        match state {
            MemberState::Alive => self.alive += 1,
            MemberState::Suspect => self.suspect += 1,
            MemberState::Dead => self.dead += 1,
            MemberState::Left => self.left += 1,
        }
    }
}

/// One cluster in [`ClustersResponse`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClusterJson {
    /// Its name (`""` for members that declare none).
    pub name: String,
    /// Members by state.
    pub states: StateCounts,
    /// Members by declared region (`""`: none declared).
    pub regions: BTreeMap<String, usize>,
    /// The holder of `global-control` if it is a member of this cluster, as this node knows it.
    pub leader: Option<u64>,
}

/// The body of `GET /meshkit/clusters`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClustersResponse {
    /// The answering node.
    pub local: u64,
    /// Clusters by name.
    pub clusters: Vec<ClusterJson>,
}

/// The holder of `global-control` as the node knows it: from a voter's applied table, or
/// because the node holds it itself.
fn global_leader(s: &Snapshot) -> Option<u64> {
    let (view, _) = s.leadership.as_ref()?;
    view.table
        .iter()
        .find(|l| l.scope == "global-control")
        .map(|l| l.holder)
        .or_else(|| {
            view.held
                .iter()
                .any(|h| h.scope == "global-control")
                .then_some(view.node)
        })
}

impl ClustersResponse {
    /// The clusters of a snapshot.
    pub fn from_snapshot(s: &Snapshot) -> Self {
        let leader = global_leader(s);
        let mut clusters: BTreeMap<String, ClusterJson> = BTreeMap::new();
        for p in &s.peers {
            let name = p.metadata.get(CLUSTER_KEY).cloned().unwrap_or_default();
            let c = clusters.entry(name.clone()).or_insert_with(|| ClusterJson {
                name,
                states: StateCounts::default(),
                regions: BTreeMap::new(),
                leader: None,
            });
            c.states.add(p.state);
            let region = p.metadata.get(REGION_KEY).cloned().unwrap_or_default();
            *c.regions.entry(region).or_default() += 1;
            if leader == Some(p.id.get()) {
                c.leader = leader;
            }
        }
        Self {
            local: s.local_id.get(),
            clusters: clusters.into_values().collect(),
        }
    }
}

/// One version in [`VersionsResponse`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct VersionCount {
    /// The version (`""`: not published, e.g. a member whose metadata has not arrived yet).
    pub version: String,
    /// Members (alive or suspect) that publish it.
    pub members: usize,
}

/// The body of `GET /meshkit/versions`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct VersionsResponse {
    /// The answering node.
    pub local: u64,
    /// Software versions (`meshkitd` releases) in the mesh.
    pub software: Vec<VersionCount>,
    /// Wire protocol versions (`membership/lease`).
    pub wire: Vec<VersionCount>,
    /// Whether more than one software or wire version is present.
    pub mixed: bool,
}

impl VersionsResponse {
    /// The versions of the live members (alive or suspect) of a snapshot.
    pub fn from_snapshot(s: &Snapshot) -> Self {
        let count = |key: &str| {
            let mut by: BTreeMap<String, usize> = BTreeMap::new();
            for p in s
                .peers
                .iter()
                .filter(|p| matches!(p.state, MemberState::Alive | MemberState::Suspect))
            {
                *by.entry(p.metadata.get(key).cloned().unwrap_or_default())
                    .or_default() += 1;
            }
            by.into_iter()
                .map(|(version, members)| VersionCount { version, members })
                .collect::<Vec<_>>()
        };
        let (software, wire) = (count(VERSION_KEY), count(WIRE_KEY));
        Self {
            local: s.local_id.get(),
            mixed: software.len() > 1 || wire.len() > 1,
            software,
            wire,
        }
    }
}

pub(super) async fn clusters(State(node): State<NodeHandle>) -> Response {
    match node.snapshot().await {
        Ok(s) => Json(ClustersResponse::from_snapshot(&s)).into_response(),
        Err(_) => stopped(),
    }
}

pub(super) async fn versions(State(node): State<NodeHandle>) -> Response {
    match node.snapshot().await {
        Ok(s) => Json(VersionsResponse::from_snapshot(&s)).into_response(),
        Err(_) => stopped(),
    }
}

/// The body of `GET /readyz`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Readiness {
    /// Whether the node is ready for traffic.
    pub ready: bool,
    /// Why not, if not.
    pub reasons: Vec<String>,
}

impl Readiness {
    /// Readiness from a snapshot: joined (another member alive, unless it is alone by design),
    /// not drained, and with leadership, a Raft leader known (voters) or a lease held.
    pub fn from_snapshot(s: &Snapshot, expects_peers: bool) -> Self {
        let mut reasons = Vec::new();
        if expects_peers && s.count(MemberState::Alive) < 2 {
            reasons.push("no other member is alive yet: not joined".to_owned());
        }
        if s.draining {
            reasons.push("drained (POST /control/resume to undo)".to_owned());
        }
        if let Some((view, _)) = &s.leadership
            && let Some(raft) = &view.raft
            && raft.leader.is_none()
        {
            reasons.push("this voter knows no Raft leader".to_owned());
        }
        Self {
            ready: reasons.is_empty(),
            reasons,
        }
    }
}

impl Readiness {
    /// The node's readiness, as `GET /readyz` and gRPC health checks answer it: a node given
    /// seeds, or that has learned of other members, expects some to be alive.
    pub fn of(s: &Snapshot) -> Self {
        Self::from_snapshot(s, s.joined || s.peers.len() > 1)
    }
}

pub(super) async fn readyz(State(node): State<NodeHandle>) -> Response {
    let Ok(s) = node.snapshot().await else {
        return stopped();
    };
    let readiness = Readiness::of(&s);
    let status = if readiness.ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, Json(readiness)).into_response()
}
