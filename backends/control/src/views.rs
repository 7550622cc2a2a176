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

pub use meshkit_api::json::{
    ClusterJson, ClustersResponse, DEFAULT_PAGE, ErrorBody, MAX_PAGE, PeerJson, PeersQuery,
    PeersResponse, Readiness, StateCounts, VersionCount, VersionsResponse,
};
use meshkit_runtime::driver::{
    CLUSTER_KEY, NodeHandle, PeerInfo, REGION_KEY, Snapshot, VERSION_KEY, WIRE_KEY,
};

/// Whether `peer` passes the filter of `query` (paging aside).
pub fn matches(query: &PeersQuery, peer: &PeerInfo) -> bool {
    let meta = |key: &str, want: &Option<String>| {
        want.as_ref()
            .is_none_or(|w| peer.metadata.get(key) == Some(w))
    };
    query
        .state
        .as_ref()
        .is_none_or(|s| peer.state.to_string() == *s)
        && meta(CLUSTER_KEY, &query.cluster)
        && meta(REGION_KEY, &query.region)
}

/// The JSON form of a snapshot: every member, one page.
pub fn peers_of(snapshot: &Snapshot) -> PeersResponse {
    peers_page(snapshot, &PeersQuery::default())
}

/// The members of `snapshot` that match `query`, one page of them.
pub fn peers_page(snapshot: &Snapshot, query: &PeersQuery) -> PeersResponse {
    let matching: Vec<&PeerInfo> = snapshot
        .peers
        .iter()
        .filter(|p| matches(query, p))
        .collect();
    let limit = query.limit();
    let page: Vec<PeerJson> = matching
        .iter()
        .filter(|p| query.after.is_none_or(|after| p.id.get() > after))
        .take(limit + 1)
        .map(|p| PeerJson {
            id: p.id.get(),
            state: p.state.to_string(),
            incarnation: p.incarnation.get(),
            rtt_ms: p.rtt.map(|d| d.as_secs_f64() * 1e3),
            metadata: p.metadata.clone(),
            addr: p.addr.map(|a| a.to_string()),
            last_change_s_ago: p.last_change_ago.as_secs_f64(),
        })
        .collect();
    let (peers, next_after) = if page.len() > limit {
        let peers = page[..limit].to_vec();
        let next = peers.last().map(|p| p.id);
        (peers, next)
    } else {
        (page, None)
    };
    PeersResponse {
        local: snapshot.local_id.get(),
        peers,
        total: matching.len(),
        next_after,
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

/// The clusters of a snapshot.
pub fn clusters_of(s: &Snapshot) -> ClustersResponse {
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
        c.states.count(p.state);
        let region = p.metadata.get(REGION_KEY).cloned().unwrap_or_default();
        *c.regions.entry(region).or_default() += 1;
        if leader == Some(p.id.get()) {
            c.leader = leader;
        }
    }
    ClustersResponse {
        local: s.local_id.get(),
        clusters: clusters.into_values().collect(),
    }
}

/// The versions of the live members (alive or suspect) of a snapshot.
pub fn versions_of(s: &Snapshot) -> VersionsResponse {
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
    VersionsResponse {
        local: s.local_id.get(),
        mixed: software.len() > 1 || wire.len() > 1,
        software,
        wire,
    }
}

pub(super) async fn clusters(State(node): State<NodeHandle>) -> Response {
    match node.snapshot().await {
        Ok(s) => Json(clusters_of(&s)).into_response(),
        Err(_) => stopped(),
    }
}

pub(super) async fn versions(State(node): State<NodeHandle>) -> Response {
    match node.snapshot().await {
        Ok(s) => Json(versions_of(&s)).into_response(),
        Err(_) => stopped(),
    }
}

/// Readiness from a snapshot: joined (another member alive, unless it is alone by design),
/// not drained, and with leadership, a Raft leader known (voters) or a lease held.
pub fn readiness_expecting(s: &Snapshot, expects_peers: bool) -> Readiness {
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
    Readiness {
        ready: reasons.is_empty(),
        reasons,
    }
}

/// The node's readiness, as `GET /readyz` and gRPC health checks answer it: a node given
/// seeds, or that has learned of other members, expects some to be alive.
pub fn readiness_of(s: &Snapshot) -> Readiness {
    readiness_expecting(s, s.joined || s.peers.len() > 1)
}

pub(super) async fn readyz(State(node): State<NodeHandle>) -> Response {
    let Ok(s) = node.snapshot().await else {
        return stopped();
    };
    let readiness = readiness_of(&s);
    let status = if readiness.ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, Json(readiness)).into_response()
}
