//! The leadership part of the control API.
//!
//! * `GET /meshkit/leaders`: the node's [`LeadershipView`] (voter state, applied lease table,
//!   leases held, scopes contended for).
//! * `GET /control/events/leadership`: the leadership feed as server-sent events. Each event's
//!   `id` is `<node>:<seq>`; a client that reconnects sends it back as `Last-Event-ID` (or
//!   `?after=<seq>`) and gets every entry after it; without one it gets the last
//!   [`SSE_FRESH_BACKLOG_EVENTS`] entries. A resume point the node no longer holds (or never
//!   held), or one from another node's feed, gets a `reset` event first. Comment lines keep idle
//!   connections alive every [`SSE_HEARTBEAT`]. A subscriber too slow for the feed is sent a
//!   `reset` and disconnected: it resumes from its last id.
//!   With `?follow=false` the stream ends after the entries the node holds (a poll).
//! * `GET /meshkit/shards` and `GET /control/events/shards`: the same for shard scopes
//!   (`shard/{namespace}/{id}`) only: who owns which shard, and ownership changes.
//! * `POST /control/leases/transfer` (`{"scope": "...", "to": 3}`): hands a lease this node
//!   holds to another node and answers with the new holder's token.
//! * `POST /control/leases/acquire` (`{"scope": "...", "ttl_ms": 10000}`),
//!   `POST /control/leases/renew` and `POST /control/leases/release`
//!   (`{"scope": "...", "token": 7}`): an operator's lock session (`meshctl lock`/`elect`). The
//!   node acquires the scope in its own name only if it neither holds it nor contends for it,
//!   and is not drained; the lease is renewed only when the session asks, with the token it
//!   got, so a session that stops asking loses the lease after its TTL.
//! * `POST /control/drain` and `POST /control/resume`: stop contending and release every lease
//!   held (publishing `draining` in the node's metadata), and undo it.
//! * `POST /control/rebalance` (`{"dry_run": true}`): the shard coordinator's plan (moves with
//!   their reasons, the load bound); without a dry run the coordinator also carries it out.
//!   Only the Raft leader's coordinator acts: another node answers `421 Misdirected Request`
//!   with the leader's id and control address ([`MisdirectedBody`]), and the client asks again
//!   there. The node does not forward the call itself: a forwarded call would reach the leader
//!   under the node's identity, not the operator's, and the leader's audit log would name the
//!   wrong caller.

use std::convert::Infallible;
use std::time::Duration;

use axum::Json;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, Uri};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use futures_util::stream::{self, Stream, StreamExt};
use meshkit::NodeId;
use meshkit::lease::{LeaseError, Scope};
use meshkit::node::CommandError;
use meshkit::shard::{MoveReason, Plan};
use tokio::sync::broadcast;

pub use meshkit_api::json::{
    AcquireRequest, DrainResponse, ErrorBody, HeldBody, MisdirectedBody, PlannedMove,
    RebalanceRequest, RebalanceResponse, ResumeResponse, SessionRequest, SessionResponse,
    ShardOwner, ShardsResponse, TransferRequest, TransferResponse,
};
use meshkit_api::metrics::Families;
use meshkit_runtime::driver::{LeadershipError, NodeHandle};
use meshkit_runtime::lease_host::{
    FeedEntry, LeadershipStats, LeadershipView, ShardStatus, TableLease, is_shard_scope,
};

/// How often an idle event stream carries a keep-alive comment.
pub const SSE_HEARTBEAT: Duration = Duration::from_secs(5);
/// Most backlog entries a subscriber without a resume point is sent before the live ones: enough
/// context for a dashboard (a few elections and grants), and a bounded first answer however long
/// the feed's history ([`meshkit_runtime::lease_host::FEED_HISTORY`] entries) has grown.
pub const SSE_FRESH_BACKLOG_EVENTS: usize = 64;

fn error(status: StatusCode, message: &impl ToString) -> Response {
    (
        status,
        Json(ErrorBody {
            error: message.to_string(),
        }),
    )
        .into_response()
}

fn leadership_error(e: &LeadershipError) -> Response {
    let status = match e {
        LeadershipError::Disabled => StatusCode::NOT_FOUND,
        LeadershipError::Gap(_) => StatusCode::GONE,
        LeadershipError::Stopped(_) | LeadershipError::Draining => StatusCode::SERVICE_UNAVAILABLE,
        LeadershipError::Campaigned { .. } => StatusCode::BAD_REQUEST,
        LeadershipError::Lease(lease) => match lease {
            LeaseError::NoQuorum { .. } | LeaseError::Overloaded { .. } => {
                StatusCode::SERVICE_UNAVAILABLE
            }
            LeaseError::NotHeld { .. }
            | LeaseError::NotHolder { .. }
            | LeaseError::Held { .. }
            | LeaseError::StaleToken { .. }
            | LeaseError::InFlight { .. } => StatusCode::CONFLICT,
            _ => StatusCode::BAD_REQUEST,
        },
        LeadershipError::Shards(shards) => match shards {
            // Answered by `rebalance` itself, with the coordinator's address.
            CommandError::NotCoordinator { .. } => StatusCode::MISDIRECTED_REQUEST,
            CommandError::Rebalance(_) => StatusCode::CONFLICT,
            _ => StatusCode::NOT_FOUND,
        },
        // A refusal added to the runtime after this mapping: nothing more specific to say.
        _ => StatusCode::INTERNAL_SERVER_ERROR,
    };
    error(status, &e)
}

pub(super) async fn leaders(State(node): State<NodeHandle>) -> Response {
    match node.leadership().await {
        Ok(Some(view)) => Json(view).into_response(),
        Ok(None) => leadership_error(&LeadershipError::Disabled),
        Err(e) => leadership_error(&e.into()),
    }
}

/// Where a subscriber resumes: the entry it saw last, in this node's feed.
fn resume_point(node: NodeId, headers: &HeaderMap, uri: &Uri) -> Result<u64, Option<String>> {
    if let Some(value) = headers.get("last-event-id") {
        let text = value.to_str().map_err(|_| Some("unreadable".to_owned()))?;
        let (from, seq) = text.split_once(':').ok_or_else(|| Some(text.to_owned()))?;
        let seq: u64 = seq.parse().map_err(|_| Some(text.to_owned()))?;
        return if from.parse::<u64>().ok() == Some(node.get()) {
            Ok(seq)
        } else {
            // Another node's feed: its numbers mean nothing here.
            Err(Some(text.to_owned()))
        };
    }
    let after = uri
        .query()
        .into_iter()
        .flat_map(|q| q.split('&'))
        .find_map(|pair| pair.strip_prefix("after="));
    match after {
        Some(seq) => seq.parse().map_err(|_| Some(seq.to_owned())),
        None => Err(None),
    }
}

fn sse_event(entry: &FeedEntry) -> Event {
    Event::default()
        .id(format!("{}:{}", entry.node, entry.seq))
        .event(entry.change.kind())
        .json_data(entry)
        // A FeedEntry always serializes; keep the stream going with a bare event otherwise.
        .unwrap_or_else(|_| Event::default().event("error"))
}

fn reset_event(reason: &str) -> Event {
    Event::default().event("reset").data(reason)
}

pub(super) async fn leadership_events(
    State(node): State<NodeHandle>,
    headers: HeaderMap,
    uri: Uri,
) -> Response {
    events(&node, &headers, &uri, |_| true).await
}

pub(super) async fn shard_events(
    State(node): State<NodeHandle>,
    headers: HeaderMap,
    uri: Uri,
) -> Response {
    events(&node, &headers, &uri, |entry| entry.change.is_shard()).await
}

/// Whether the query says `follow=false`: send what is held, then end.
fn follows(uri: &Uri) -> bool {
    !uri.query()
        .into_iter()
        .flat_map(|q| q.split('&'))
        .any(|pair| pair == "follow=false")
}

/// Where a subscriber's stream starts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Start {
    /// No resume point: the last [`SSE_FRESH_BACKLOG_EVENTS`] entries the node holds.
    Recent,
    /// After this sequence number of this node's feed (every value a client can send, `u64::MAX`
    /// included, is a resume point: none is reserved as a marker).
    After(u64),
    /// A resume point that names no entry of this node's feed: a `reset` event, then live ones.
    Unusable,
}

async fn events(
    node: &NodeHandle,
    headers: &HeaderMap,
    uri: &Uri,
    keep: fn(&FeedEntry) -> bool,
) -> Response {
    let (start, mut first) = match resume_point(node.id(), headers, uri) {
        Ok(seq) => (Start::After(seq), None),
        Err(None) => (Start::Recent, None),
        Err(Some(bad)) => (
            Start::Unusable,
            Some(reset_event(&format!(
                "resume point {bad:?} is not one of this node's event ids; streaming from now"
            ))),
        ),
    };
    // The feed's own sequence numbers never reach u64::MAX, and `feed_since` needs `after + 1`:
    // a resume point there is past every entry, which the feed answers with a gap (a reset).
    let after = match start {
        Start::After(seq) => seq.min(u64::MAX - 1),
        Start::Recent | Start::Unusable => 0,
    };
    let mut subscription = match node.leadership_feed(after).await {
        Ok(s) => s,
        Err(e) => return leadership_error(&e),
    };
    if start == Start::Recent
        && let Err(gap) = &subscription.backlog
        && let Some(oldest) = gap.oldest
    {
        // The history has rotated since entry 1: start from the oldest entry held.
        subscription = match node.leadership_feed(oldest.saturating_sub(1)).await {
            Ok(s) => s,
            Err(e) => return leadership_error(&e),
        };
    }
    let backlog = match (start, subscription.backlog) {
        (Start::Unusable, _) => Vec::new(),
        (Start::Recent, Ok(mut entries)) => {
            // A subscriber without a resume point gets recent context, not the whole history:
            // a bounded first answer per subscriber.
            let skip = entries.len().saturating_sub(SSE_FRESH_BACKLOG_EVENTS);
            entries.drain(..skip);
            entries
        }
        (Start::Recent, Err(_)) => Vec::new(),
        (Start::After(_), Ok(entries)) => entries,
        (Start::After(seq), Err(gap)) => {
            first = Some(reset_event(&format!(
                "events after {seq} are no longer held (oldest held: {:?}); streaming from now",
                gap.oldest
            )));
            Vec::new()
        }
    };
    let head = stream::iter(
        first
            .into_iter()
            .chain(backlog.into_iter().filter(keep).map(|e| sse_event(&e))),
    );
    let live = follows(uri).then_some(subscription.live);
    let live = stream::unfold(live, move |rx| async move {
        let mut rx = rx?;
        loop {
            match rx.recv().await {
                Ok(entry) if !keep(&entry) => {}
                Ok(entry) => return Some((sse_event(&entry), Some(rx))),
                Err(broadcast::error::RecvError::Lagged(n)) => {
                    return Some((
                        reset_event(&format!(
                            "{n} events were missed; reconnect with Last-Event-ID"
                        )),
                        None,
                    ));
                }
                Err(broadcast::error::RecvError::Closed) => return None,
            }
        }
    });
    let events: std::pin::Pin<Box<dyn Stream<Item = Result<Event, Infallible>> + Send>> =
        Box::pin(head.chain(live).map(Ok));
    Sse::new(events)
        .keep_alive(KeepAlive::new().interval(SSE_HEARTBEAT))
        .into_response()
}

/// The shard leases of a leadership view.
pub fn shards_of(view: &LeadershipView) -> ShardsResponse {
    let complete = view.raft.is_some();
    // A voter knows every owner from its table; another node knows only its own shards.
    let owners: Vec<(&str, u64, u64, u64)> = if complete {
        let t = view.table.iter();
        t.map(|l| (l.scope.as_str(), l.holder, l.token, l.expires_in_ms))
            .collect()
    } else {
        let h = view.held.iter();
        h.map(|h| (h.scope.as_str(), view.node, h.token, h.expires_in_ms))
            .collect()
    };
    let shards = owners
        .into_iter()
        .filter(|(scope, ..)| is_shard_scope(scope))
        .map(|(scope, owner, token, expires_in_ms)| ShardOwner {
            scope: scope.to_owned(),
            owner,
            token,
            expires_in_ms,
        })
        .collect();
    ShardsResponse {
        local: view.node,
        complete,
        shards,
        status: view.shards.clone(),
    }
}

pub(super) async fn shards(State(node): State<NodeHandle>) -> Response {
    match node.leadership().await {
        Ok(Some(view)) => Json(shards_of(&view)).into_response(),
        Ok(None) => leadership_error(&LeadershipError::Disabled),
        Err(e) => leadership_error(&e.into()),
    }
}

pub(super) async fn transfer(
    State(node): State<NodeHandle>,
    Json(request): Json<TransferRequest>,
) -> Response {
    let scope = match parse_scope(&request.scope) {
        Ok(scope) => scope,
        Err(refusal) => return *refusal,
    };
    if request.to == 0 {
        return error(
            StatusCode::BAD_REQUEST,
            &"field `to`: expected a node id > 0",
        );
    }
    match node.transfer(scope, NodeId::new(request.to)).await {
        Ok(token) => Json(TransferResponse {
            scope: request.scope,
            to: request.to,
            token: token.get(),
        })
        .into_response(),
        Err(e) => leadership_error(&e),
    }
}

/// The request's `scope` field as a scope, or the 400 answer that names the field (boxed: a
/// response is large, and the refusal is the rare path).
fn parse_scope(text: &str) -> Result<Scope, Box<Response>> {
    text.parse().map_err(|e| {
        Box::new(error(
            StatusCode::BAD_REQUEST,
            &format!("field `scope`: {e}"),
        ))
    })
}

fn session_answer(
    node: &NodeHandle,
    scope: String,
    outcome: Result<meshkit::lease::FencingToken, LeadershipError>,
) -> Response {
    match outcome {
        Ok(token) => Json(SessionResponse {
            scope,
            holder: node.id().get(),
            token: token.get(),
        })
        .into_response(),
        Err(LeadershipError::Lease(LeaseError::Held {
            scope,
            holder,
            token,
            expires_in,
        })) => {
            let expires_in_ms = u64::try_from(expires_in.as_millis()).unwrap_or(u64::MAX);
            let body = HeldBody {
                error: format!(
                    "{scope} is held by node {} with token {} for another {:.1} s at least",
                    holder.get(),
                    token.get(),
                    expires_in.as_secs_f64()
                ),
                holder: holder.get(),
                token: token.get(),
                expires_in_ms,
            };
            (StatusCode::CONFLICT, Json(body)).into_response()
        }
        Err(e) => leadership_error(&e),
    }
}

pub(super) async fn acquire(
    State(node): State<NodeHandle>,
    Json(request): Json<AcquireRequest>,
) -> Response {
    let scope = match parse_scope(&request.scope) {
        Ok(scope) => scope,
        Err(refusal) => return *refusal,
    };
    let ttl = Duration::from_millis(request.ttl_ms);
    let outcome = node.acquire_new(scope, ttl).await;
    session_answer(&node, request.scope, outcome)
}

pub(super) async fn renew(
    State(node): State<NodeHandle>,
    Json(request): Json<SessionRequest>,
) -> Response {
    let scope = match parse_scope(&request.scope) {
        Ok(scope) => scope,
        Err(refusal) => return *refusal,
    };
    let token = meshkit::lease::FencingToken::new(request.token);
    let outcome = node.renew_held(scope, token).await;
    session_answer(&node, request.scope, outcome)
}

pub(super) async fn release(
    State(node): State<NodeHandle>,
    Json(request): Json<SessionRequest>,
) -> Response {
    let scope = match parse_scope(&request.scope) {
        Ok(scope) => scope,
        Err(refusal) => return *refusal,
    };
    let token = meshkit::lease::FencingToken::new(request.token);
    let outcome = node.release_held(scope, token).await;
    session_answer(&node, request.scope, outcome)
}

pub(super) async fn drain(State(node): State<NodeHandle>) -> Response {
    match node.drain().await {
        Ok(released) => Json(DrainResponse {
            node: node.id().get(),
            released: released.iter().map(ToString::to_string).collect(),
            draining: true,
        })
        .into_response(),
        Err(e) => leadership_error(&e),
    }
}

/// The JSON form of `plan`, made by `node`'s coordinator in `term`.
pub fn rebalance_answer(node: NodeId, term: u64, dry_run: bool, plan: &Plan) -> RebalanceResponse {
    RebalanceResponse {
        node: node.get(),
        term,
        dry_run,
        lower: plan.bounds().lower(),
        upper: plan.bounds().upper(),
        moves: plan
            .moves()
            .iter()
            .map(|m| PlannedMove {
                shard: m.shard.to_string(),
                from: m.from.map(NodeId::get),
                to: m.to.get(),
                reason: reason_name(m.reason).to_owned(),
            })
            .collect(),
    }
}

/// The wire name of a move's reason.
fn reason_name(reason: MoveReason) -> &'static str {
    match reason {
        MoveReason::Unowned => "unowned",
        MoveReason::OwnerDeparted => "owner_departed",
        MoveReason::OwnerDraining => "owner_draining",
        MoveReason::OwnerOverloaded => "owner_overloaded",
        MoveReason::FillUnderloaded => "fill_underloaded",
        _ => "other",
    }
}

pub(super) async fn rebalance(
    State(node): State<NodeHandle>,
    Json(request): Json<RebalanceRequest>,
) -> Response {
    match node.rebalance(request.dry_run).await {
        Ok((plan, term)) => Json(rebalance_answer(
            node.id(),
            term.get(),
            request.dry_run,
            &plan,
        ))
        .into_response(),
        Err(e @ LeadershipError::Shards(CommandError::NotCoordinator { leader })) => {
            let leader_control = match (leader, node.snapshot().await) {
                (Some(leader), Ok(snapshot)) => snapshot.peer(leader).and_then(|p| {
                    p.metadata
                        .get(meshkit_runtime::driver::CONTROL_KEY)
                        .cloned()
                }),
                _ => None,
            };
            let body = MisdirectedBody {
                error: e.to_string(),
                leader: leader.map(NodeId::get),
                leader_control,
            };
            (StatusCode::MISDIRECTED_REQUEST, Json(body)).into_response()
        }
        Err(e) => leadership_error(&e),
    }
}

pub(super) async fn resume(State(node): State<NodeHandle>) -> Response {
    match node.resume().await {
        Ok(was) => Json(ResumeResponse {
            node: node.id().get(),
            was_draining: was,
        })
        .into_response(),
        Err(e) => leadership_error(&e.into()),
    }
}

/// The `mesh_shard_*` families of a node with `[shards]` (`mesh_shard_draining` is written
/// with the driver's drain state). No label names a shard or a member: a node's series stay
/// the same however many there are.
fn write_shard_metrics(families: &mut Families<'_, '_>, s: &ShardStatus) -> std::fmt::Result {
    use meshkit_api::metrics::catalogue::{
        SHARD_CONFIGURED, SHARD_COORDINATING, SHARD_IMBALANCE, SHARD_LOAD_BOUND,
        SHARD_MOVES_COMPLETED, SHARD_MOVES_FAILED, SHARD_MOVES_IN_FLIGHT, SHARD_MOVES_STARTED,
        SHARD_OWNED, SHARD_POOL_MEMBERS, SHARD_REBALANCE_PLANS, SHARD_UNOWNED,
    };
    families.gauge(&SHARD_CONFIGURED, s.configured)?;
    if let Some(member) = &s.member {
        families.gauge(&SHARD_OWNED, member.held)?;
    }
    if let Some(counters) = &s.counters {
        families.gauge(&SHARD_COORDINATING, u64::from(s.coordinator.is_some()))?;
        families.counter(&SHARD_REBALANCE_PLANS, counters.plans)?;
        families.counter(&SHARD_MOVES_STARTED, counters.moves_started)?;
        families.counter(&SHARD_MOVES_COMPLETED, counters.moves_completed)?;
        families.counter(&SHARD_MOVES_FAILED, counters.moves_failed)?;
    }
    // The coordinator's view only where it acts: a follower's would be stale, and summing or
    // taking the max over a cluster's voters would mix it in.
    if let Some(c) = &s.coordinator {
        families.gauge(&SHARD_MOVES_IN_FLIGHT, c.in_flight.len())?;
        families.gauge(&SHARD_UNOWNED, c.unowned)?;
        families.gauge(&SHARD_IMBALANCE, c.imbalance)?;
        if let Some((lower, upper)) = c.bounds {
            families.gauges(&SHARD_LOAD_BOUND, [(["lower"], lower), (["upper"], upper)])?;
        }
        let draining = c.draining.len();
        families.gauges(
            &SHARD_POOL_MEMBERS,
            [
                (["eligible"], c.members.len() - draining),
                (["draining"], draining),
            ],
        )?;
    }
    Ok(())
}

/// The `mesh_leadership_*` families. Per-scope series cover only scopes outside `shard/`, so
/// that the label set stays bounded however many shards there are.
pub(super) fn write_metrics(
    families: &mut Families<'_, '_>,
    view: &LeadershipView,
    stats: &LeadershipStats,
) -> std::fmt::Result {
    use meshkit_api::metrics::catalogue::{
        LEADERSHIP_ACQUIRED, LEADERSHIP_FENCE, LEADERSHIP_HOLDER, LEADERSHIP_LEASES_HELD,
        LEADERSHIP_NO_QUORUM, LEADERSHIP_RAFT_LEADER, LEADERSHIP_RAFT_LEADER_CHANGES,
        LEADERSHIP_RAFT_REFUSED, LEADERSHIP_RAFT_TERM, LEADERSHIP_RELINQUISHED,
        LEADERSHIP_REQUEST_ATTEMPTS, LEADERSHIP_TABLE_LEASES,
    };
    if let Some(raft) = &view.raft {
        families.gauge(&LEADERSHIP_RAFT_TERM, raft.term)?;
        families.gauge(
            &LEADERSHIP_RAFT_LEADER,
            u64::from(raft.leader == Some(view.node)),
        )?;
        families.counter(&LEADERSHIP_RAFT_LEADER_CHANGES, stats.leader_changes)?;
        let global: Vec<&TableLease> = view
            .table
            .iter()
            .filter(|l| !is_shard_scope(&l.scope))
            .collect();
        families.gauges(
            &LEADERSHIP_HOLDER,
            global.iter().map(|l| ([l.scope.as_str()], l.holder)),
        )?;
        families.gauges(
            &LEADERSHIP_FENCE,
            global.iter().map(|l| ([l.scope.as_str()], l.token)),
        )?;
        if let Some(group) = &stats.group {
            families.counters(
                &LEADERSHIP_RAFT_REFUSED,
                group.raft_refused.iter().map(|(reason, n)| ([reason], n)),
            )?;
        }
        families.gauge(&LEADERSHIP_TABLE_LEASES, view.table.len())?;
    }
    if let Some(shards) = &view.shards {
        write_shard_metrics(families, shards)?;
    }
    families.gauge(&LEADERSHIP_LEASES_HELD, view.held.len())?;
    families.counter(&LEADERSHIP_ACQUIRED, stats.acquired)?;
    families.counter(&LEADERSHIP_RELINQUISHED, stats.relinquished)?;
    families.counter(&LEADERSHIP_REQUEST_ATTEMPTS, stats.client.attempts)?;
    families.counter(&LEADERSHIP_NO_QUORUM, stats.client.no_quorum)
}
