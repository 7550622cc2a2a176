//! The task queues over the control API (`docs/task-queues.md`): producers and workers
//! (`POST /control/queue/{enqueue,lease,heartbeat,complete,fail}`, `mesh.operate`), operators
//! (`POST /control/queue/{drain,restore}`, `mesh.operate`; `GET /control/queues`), and the
//! diagnostics of the original system under their paths and with their payloads, each also
//! under `/omnirelay/control/...` for tools written against it (`mesh.observe`):
//! `GET /control/backpressure` (the latest signal, or 204), `GET /control/backpressure/stream`
//! (server-sent events), `GET /control/lease-health`, `GET /control/replication/checkpoints`.
//! And the `mesh_queue_*` families.
//!
//! Payloads travel as JSON strings (UTF-8); a payload the library enqueued as other bytes is
//! shown lossily here.

use std::convert::Infallible;
use std::time::SystemTime;

use axum::Json;
use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use futures_util::stream::{self, Stream, StreamExt};
use meshkit::NodeId;
use meshkit::queue::{Origin, OwnershipToken, QueueError};
use meshkit::shard::{ShardId, ShardIdError};
use thiserror::Error;

use crate::errors::json_error;
use crate::leadership::SSE_HEARTBEAT;
pub use meshkit_api::json::{
    BackpressureJson, BackpressureQuery, CheckpointJson, CheckpointsResponse, CountersJson,
    DrainedItem, EnqueueRequest, EnqueueResponse, FailRequest, LeaseHealthResponse,
    LeaseManyResponse, LeaseRequest, LeaseResponse, PeerHealthJson, QueueDrainRequest,
    QueueDrainResponse, QueueRestoreRequest, QueueRestoreResponse, QueuesResponse, ReplicaAckJson,
    ServedJson, SourceJson, TokenJson, TokenRequest, TokenResponse,
};
use meshkit_api::metrics::Families;
use meshkit_runtime::driver::{DriverStopped, NodeHandle};
use meshkit_runtime::queue_host::{
    Enqueued, LAG_BOUNDS, LeasedItem, NamespaceCounters, QueueCallError, QueueStatus, ServedQueue,
    ShardBackpressure,
};

/// Why a queue call over the control API (HTTP or gRPC) was refused: the request named
/// something the node does not have, or the node's queue refused it.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum QueueRefusal {
    /// `queue` is not a shard namespace of the node's `[shards]` (caller misuse; nothing
    /// changed).
    #[error("field `queue` = {queue:?}: no such queue (the queues: {known:?})")]
    UnknownQueue {
        /// The name sent.
        queue: String,
        /// The queues the node has.
        known: Vec<String>,
    },
    /// `shard` is past the queue's shards (caller misuse; nothing changed).
    #[error("field `shard` = {id}: the queue {queue:?} has shards 0..{count}")]
    ShardOutOfRange {
        /// The queue.
        queue: String,
        /// The shard number sent.
        id: u32,
        /// How many shards it has.
        count: u32,
    },
    /// `shard` is not a shard's scope name (caller misuse; nothing changed).
    #[error("field `shard` = {text:?}: {source} (a shard's scope, such as shard/jobs/3)")]
    BadShard {
        /// The text sent.
        text: String,
        /// Why it does not parse.
        source: ShardIdError,
    },
    /// The node's answer (see [`QueueCallError`]: whether the item was touched, what to do).
    #[error(transparent)]
    Call(#[from] QueueCallError),
}

impl QueueRefusal {
    /// The HTTP status of the refusal (the body says why, and what to do).
    pub fn http_status(&self) -> StatusCode {
        match self {
            Self::UnknownQueue { .. } => StatusCode::NOT_FOUND,
            Self::ShardOutOfRange { .. } | Self::BadShard { .. } => StatusCode::BAD_REQUEST,
            Self::Call(e) => call_status(e),
        }
    }
}

impl From<DriverStopped> for QueueRefusal {
    fn from(stopped: DriverStopped) -> Self {
        Self::Call(stopped.into())
    }
}

fn call_status(e: &QueueCallError) -> StatusCode {
    match e {
        QueueCallError::Disabled => StatusCode::NOT_FOUND,
        QueueCallError::Stopped(_) => StatusCode::SERVICE_UNAVAILABLE,
        QueueCallError::Queue(q) => match q {
            QueueError::StaleFence { .. } | QueueError::StaleLease { .. } => StatusCode::CONFLICT,
            QueueError::UnknownItem { .. } | QueueError::UnknownShard => StatusCode::NOT_FOUND,
            QueueError::PayloadTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            QueueError::OutOfRange { .. } => StatusCode::BAD_REQUEST,
            QueueError::Full { .. } | QueueError::Overloaded { .. } => {
                StatusCode::TOO_MANY_REQUESTS
            }
            // Routing races: retry shortly (the owner is being chosen or rebuilding).
            QueueError::NotOwner { .. } | QueueError::NoOwner | QueueError::Recovering => {
                StatusCode::SERVICE_UNAVAILABLE
            }
            QueueError::TimedOut => StatusCode::GATEWAY_TIMEOUT,
            _ => StatusCode::INTERNAL_SERVER_ERROR,
        },
        _ => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

/// A refusal as an HTTP answer.
fn refused(e: impl Into<QueueRefusal>) -> Response {
    let e = e.into();
    json_error(e.http_status(), e.to_string())
}

/// `shard/{namespace}/{id}` from a request's `shard` field.
pub fn parse_shard(text: &str) -> Result<ShardId, QueueRefusal> {
    text.parse::<ShardId>()
        .map_err(|source| QueueRefusal::BadShard {
            text: text.to_owned(),
            source,
        })
}

/// FNV-1a: a stable hash for choosing a shard (the same payload, the same shard, on every node
/// and every release).
fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

/// The shards of `queue` a request names, checked against the node's `[shards]`.
async fn shards_of(
    node: &NodeHandle,
    queue: &str,
    shard: Option<u32>,
) -> Result<Vec<ShardId>, QueueRefusal> {
    let config = node.queue_shards().await?;
    let Some((_, count)) = config.namespaces().find(|(ns, _)| *ns == queue) else {
        return Err(QueueRefusal::UnknownQueue {
            queue: queue.to_owned(),
            known: config.namespaces().map(|(ns, _)| ns.to_owned()).collect(),
        });
    };
    let shard_of = |id| {
        ShardId::new(queue, id).map_err(|source| QueueRefusal::BadShard {
            text: format!("shard/{queue}/{id}"),
            source,
        })
    };
    match shard {
        Some(id) if id < count => Ok(vec![shard_of(id)?]),
        Some(id) => Err(QueueRefusal::ShardOutOfRange {
            queue: queue.to_owned(),
            id,
            count,
        }),
        None => (0..count).map(shard_of).collect(),
    }
}

/// Enqueues `payload` on `queue` (on `shard`, or the one its hash picks): what
/// `POST /control/queue/enqueue` and gRPC `QueueEnqueue` do.
pub async fn enqueue_on(
    node: &NodeHandle,
    queue: &str,
    shard: Option<u32>,
    payload: Vec<u8>,
) -> Result<Enqueued, QueueRefusal> {
    let shards = shards_of(node, queue, shard).await?;
    let pick = if shard.is_some() {
        0
    } else {
        (fnv1a(&payload) % shards.len() as u64) as usize
    };
    let shard = shards[pick].clone();
    Ok(node.queue_enqueue(shard, payload).await?)
}

/// Leases an item of `queue` (of `shard`, or of the first of its shards with one pending):
/// what `POST /control/queue/lease` and gRPC `QueueLease` do. `None`: nothing pending.
pub async fn lease_from(
    node: &NodeHandle,
    queue: &str,
    shard: Option<u32>,
) -> Result<Option<LeasedItem>, QueueRefusal> {
    first_with_work(node, queue, shard, |shard| node.queue_lease(shard)).await
}

/// Leases up to `max` items of `queue` in one request to a shard's owner (of `shard`, or of the
/// first of its shards with any pending): what `POST /control/queue/lease` with `max` and gRPC
/// `QueueLease` with `max` do. Empty: nothing pending.
///
/// # Errors
///
/// As [`lease_from`], and [`QueueError::OutOfRange`] naming `max` outside
/// 1..=[`MAX_LEASE_ITEMS`](meshkit::queue::MAX_LEASE_ITEMS), before anything is sent.
pub async fn lease_up_to_from(
    node: &NodeHandle,
    queue: &str,
    shard: Option<u32>,
    max: u32,
) -> Result<Vec<LeasedItem>, QueueRefusal> {
    let out_of_range = || {
        QueueRefusal::Call(QueueCallError::Queue(QueueError::OutOfRange {
            field: "max",
            value: u64::from(max),
            min: 1,
            max: u64::from(meshkit::queue::MAX_LEASE_ITEMS),
        }))
    };
    let max = u16::try_from(max)
        .ok()
        .filter(|m| (1..=meshkit::queue::MAX_LEASE_ITEMS).contains(m))
        .ok_or_else(out_of_range)?;
    let leased = first_with_work(node, queue, shard, |shard| async move {
        let items = node.queue_lease_up_to(shard, max).await?;
        Ok((!items.is_empty()).then_some(items))
    })
    .await?;
    Ok(leased.unwrap_or_default())
}

/// Asks the shards of `queue` (only `shard`, if given) in turn with `lease` until one has work.
/// It starts at a different shard each call, so one busy shard does not starve the others; a
/// shard without a known owner does not make the others empty, so its refusal is returned only
/// when it is the only shard asked.
async fn first_with_work<T, F, Fut>(
    node: &NodeHandle,
    queue: &str,
    shard: Option<u32>,
    mut lease: F,
) -> Result<Option<T>, QueueRefusal>
where
    F: FnMut(ShardId) -> Fut,
    Fut: Future<Output = Result<Option<T>, QueueCallError>>,
{
    let shards = shards_of(node, queue, shard).await?;
    let start = (fnv1a(
        &SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap_or_default()
            .as_nanos()
            .to_be_bytes(),
    ) % shards.len() as u64) as usize;
    let mut last_error = None;
    for k in 0..shards.len() {
        match lease(shards[(start + k) % shards.len()].clone()).await {
            Ok(Some(work)) => return Ok(Some(work)),
            Ok(None) => {}
            Err(e) => last_error = Some(e),
        }
    }
    match last_error {
        Some(e) if shards.len() == 1 => Err(e.into()),
        _ => Ok(None),
    }
}

/// One leased item as JSON.
fn leased_json(item: &LeasedItem) -> LeaseResponse {
    LeaseResponse {
        shard: item.shard.to_string(),
        token: item.token.into(),
        lease_for_ms: u64::try_from(item.lease_for.as_millis()).unwrap_or(u64::MAX),
        payload: String::from_utf8_lossy(&item.payload).into_owned(),
    }
}

pub(super) async fn enqueue(
    State(node): State<NodeHandle>,
    Json(request): Json<EnqueueRequest>,
) -> Response {
    let payload = request.payload.into_bytes();
    match enqueue_on(&node, &request.queue, request.shard, payload).await {
        Ok(done) => Json(EnqueueResponse {
            shard: done.shard.to_string(),
            item: done.item.get(),
            fence: done.fence.get(),
        })
        .into_response(),
        Err(e) => refused(e),
    }
}

pub(super) async fn lease(
    State(node): State<NodeHandle>,
    Json(request): Json<LeaseRequest>,
) -> Response {
    if let Some(max) = request.max {
        // With `max`: `{"items": [...]}` (204 when nothing is pending), whatever `max` is, so a
        // client reads one shape.
        return match lease_up_to_from(&node, &request.queue, request.shard, max).await {
            Ok(items) if items.is_empty() => StatusCode::NO_CONTENT.into_response(),
            Ok(items) => Json(LeaseManyResponse {
                items: items.iter().map(leased_json).collect(),
            })
            .into_response(),
            Err(e) => refused(e),
        };
    }
    match lease_from(&node, &request.queue, request.shard).await {
        Ok(Some(item)) => Json(leased_json(&item)).into_response(),
        Ok(None) => StatusCode::NO_CONTENT.into_response(),
        Err(e) => refused(e),
    }
}

/// What a worker may do with a token it holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TokenCall {
    /// Extend the lease.
    Heartbeat,
    /// Complete the item.
    Complete,
    /// Fail the item: requeue it (if attempts remain) or dead-letter it.
    Fail {
        /// Requeue it.
        requeue: bool,
    },
}

/// Heartbeats, completes or fails the item of `token` on `shard` (a scope name): what
/// `POST /control/queue/{heartbeat,complete,fail}` and their gRPC twins do.
pub async fn token_call(
    node: &NodeHandle,
    shard: &str,
    token: OwnershipToken,
    call: TokenCall,
) -> Result<(ShardId, OwnershipToken), QueueRefusal> {
    let shard = parse_shard(shard)?;
    let token = match call {
        TokenCall::Heartbeat => node.queue_heartbeat(shard.clone(), token).await,
        TokenCall::Complete => node.queue_complete(shard.clone(), token).await,
        TokenCall::Fail { requeue } => node.queue_fail(shard.clone(), token, requeue).await,
    }?;
    Ok((shard, token))
}

async fn finish(node: &NodeHandle, shard: &str, token: TokenJson, call: TokenCall) -> Response {
    match token_call(node, shard, token.into(), call).await {
        Ok((shard, token)) => Json(TokenResponse {
            shard: shard.to_string(),
            token: token.into(),
        })
        .into_response(),
        Err(e) => refused(e),
    }
}

pub(super) async fn heartbeat(
    State(node): State<NodeHandle>,
    Json(r): Json<TokenRequest>,
) -> Response {
    finish(&node, &r.shard, r.token, TokenCall::Heartbeat).await
}

pub(super) async fn complete(
    State(node): State<NodeHandle>,
    Json(r): Json<TokenRequest>,
) -> Response {
    finish(&node, &r.shard, r.token, TokenCall::Complete).await
}

pub(super) async fn fail(State(node): State<NodeHandle>, Json(r): Json<FailRequest>) -> Response {
    let call = TokenCall::Fail { requeue: r.requeue };
    finish(&node, &r.shard, r.token, call).await
}

/// Drains `shard` (a scope name): what `POST /control/queue/drain` and gRPC `QueueDrain` do.
pub async fn drain_shard(
    node: &NodeHandle,
    shard: &str,
) -> Result<(ShardId, Vec<(Origin, Vec<u8>)>), QueueRefusal> {
    let shard = parse_shard(shard)?;
    let items = node.queue_drain(shard.clone()).await?;
    Ok((shard, items))
}

/// Restores `items` to `shard` (a scope name): what `POST /control/queue/restore` and gRPC
/// `QueueRestore` do.
pub async fn restore_shard(
    node: &NodeHandle,
    shard: &str,
    items: Vec<(Origin, Vec<u8>)>,
) -> Result<(ShardId, usize), QueueRefusal> {
    let shard = parse_shard(shard)?;
    let restored = node.queue_restore(shard.clone(), items).await?;
    Ok((shard, restored))
}

pub(super) async fn drain(
    State(node): State<NodeHandle>,
    Json(request): Json<QueueDrainRequest>,
) -> Response {
    match drain_shard(&node, &request.shard).await {
        Ok((shard, items)) => Json(QueueDrainResponse {
            shard: shard.to_string(),
            items: items
                .into_iter()
                .map(|(origin, payload)| DrainedItem {
                    producer: origin.node.get(),
                    request: origin.request,
                    payload: String::from_utf8_lossy(&payload).into_owned(),
                })
                .collect(),
        })
        .into_response(),
        Err(e) => refused(e),
    }
}

pub(super) async fn restore(
    State(node): State<NodeHandle>,
    Json(request): Json<QueueRestoreRequest>,
) -> Response {
    let items = request
        .items
        .into_iter()
        .map(|i| {
            let origin = Origin {
                node: NodeId::new(i.producer),
                request: i.request,
            };
            (origin, i.payload.into_bytes())
        })
        .collect();
    match restore_shard(&node, &request.shard, items).await {
        Ok((shard, restored)) => Json(QueueRestoreResponse {
            shard: shard.to_string(),
            restored,
        })
        .into_response(),
        Err(e) => refused(e),
    }
}

/// The JSON of one shard's signal, as this node sees it.
fn backpressure_json(shard: &ShardId, b: &ShardBackpressure) -> BackpressureJson {
    BackpressureJson {
        is_active: b.signal.is_active,
        pending_count: b.signal.pending_count,
        observed_at: crate::audit::rfc3339(b.seen_at),
        high_watermark: b.signal.high_watermark,
        low_watermark: b.signal.low_watermark,
        shard: shard.to_string(),
        owner: b.owner.get(),
        fence: b.fence.get(),
    }
}

/// The most recently seen signal of the shards `query` matches (`None`: no owner of one
/// publishes any): what `GET /control/backpressure` and gRPC `GetBackpressure` answer.
pub async fn latest_backpressure(
    node: &NodeHandle,
    query: &BackpressureQuery,
) -> Result<Option<BackpressureJson>, QueueRefusal> {
    let view = node.subscribe_backpressure().await?;
    let latest = view
        .borrow()
        .iter()
        .filter(|(shard, _)| query.matches(shard))
        .max_by_key(|(shard, b)| (b.seen_at, (*shard).clone()))
        .map(|(shard, b)| backpressure_json(shard, b));
    Ok(latest)
}

/// `GET /control/backpressure`: the most recently seen signal of the matching shards, or 204
/// when no owner of one publishes any.
pub(super) async fn backpressure(
    State(node): State<NodeHandle>,
    Query(query): Query<BackpressureQuery>,
) -> Response {
    match latest_backpressure(&node, &query).await {
        Ok(Some(signal)) => Json(signal).into_response(),
        Ok(None) => StatusCode::NO_CONTENT.into_response(),
        Err(e) => refused(e),
    }
}

/// The signals of the shards `query` matches: one per shard now, then one per change (a
/// transition, a new owner); it ends when the node stops. What
/// `GET /control/backpressure/stream` and gRPC `WatchBackpressure` send.
pub async fn backpressure_changes(
    node: &NodeHandle,
    query: BackpressureQuery,
) -> Result<impl Stream<Item = BackpressureJson> + Send + 'static, QueueRefusal> {
    let view = node.subscribe_backpressure().await?;
    let mut seen = std::collections::BTreeMap::new();
    Ok(stream::unfold(
        (view, true, query),
        move |(mut view, first, query)| async move {
            if !first && view.changed().await.is_err() {
                return None;
            }
            let current = view.borrow_and_update().clone();
            Some(((current, query.clone()), (view, false, query)))
        },
    )
    .flat_map(move |(current, query)| {
        let mut out = Vec::new();
        for (shard, b) in current.iter().filter(|(s, _)| query.matches(s)) {
            if seen.get(shard) != Some(b) {
                seen.insert(shard.clone(), *b);
                out.push(backpressure_json(shard, b));
            }
        }
        stream::iter(out)
    }))
}

/// `GET /control/backpressure/stream`: server-sent events, one `backpressure` event per
/// matching shard now, then one per change (a transition, a new owner), with keep-alives.
pub(super) async fn backpressure_stream(
    State(node): State<NodeHandle>,
    Query(query): Query<BackpressureQuery>,
) -> Response {
    let changes = match backpressure_changes(&node, query).await {
        Ok(changes) => changes,
        Err(e) => return refused(e),
    };
    let events = changes.map(|signal| {
        let json = serde_json::to_string(&signal).unwrap_or_default();
        Ok::<_, Infallible>(Event::default().event("backpressure").data(json))
    });
    let events: std::pin::Pin<Box<dyn Stream<Item = Result<Event, Infallible>> + Send>> =
        Box::pin(events);
    Sse::new(events)
        .keep_alive(KeepAlive::new().interval(SSE_HEARTBEAT))
        .into_response()
}

pub(super) async fn lease_health(State(node): State<NodeHandle>) -> Response {
    let snapshot = match node.snapshot().await {
        Ok(s) => s,
        Err(e) => return refused(e),
    };
    let Some(q) = snapshot.queues else {
        return refused(QueueCallError::Disabled);
    };
    Json(LeaseHealthResponse {
        node: snapshot.local_id.get(),
        peers: q
            .health
            .iter()
            .map(|(p, ago)| PeerHealthJson {
                peer_id: p.node.get(),
                is_healthy: p.healthy,
                is_disconnected: p.disconnected_since.is_some(),
                last_heartbeat_s_ago: ago.map(|d| d.as_secs_f64()),
            })
            .collect(),
        eligible_peers: q.health_summary.eligible,
        unhealthy_peers: q.health_summary.unhealthy,
        pending_reassignments: q.health_summary.pending_reassignments,
    })
    .into_response()
}

pub(super) async fn checkpoints(State(node): State<NodeHandle>) -> Response {
    let snapshot = match node.snapshot().await {
        Ok(s) => s,
        Err(e) => return refused(e),
    };
    let Some(q) = snapshot.queues else {
        return refused(QueueCallError::Disabled);
    };
    Json(CheckpointsResponse {
        node: snapshot.local_id.get(),
        checkpoints: q
            .replicas
            .iter()
            .map(|r| CheckpointJson {
                shard: r.shard.to_string(),
                sequence_number: r.applied,
                source_fence: r.source.get(),
                promised_fence: r.promised.get(),
                items: r.items,
                lag: r.lag_versions,
            })
            .collect(),
        sources: q
            .served
            .iter()
            .map(|s| SourceJson {
                shard: s.shard.to_string(),
                sequence_number: s.version,
                replicas: s
                    .replicas
                    .iter()
                    .map(|(n, acked)| ReplicaAckJson {
                        node: n.get(),
                        acknowledged: *acked,
                    })
                    .collect(),
            })
            .collect(),
    })
    .into_response()
}

/// What this node's queues hold and did: what `GET /control/queues` and gRPC `ListQueues`
/// answer.
pub async fn queues_stats(node: &NodeHandle) -> Result<QueuesResponse, QueueRefusal> {
    let snapshot = node.snapshot().await?;
    let Some(q) = snapshot.queues else {
        return Err(QueueCallError::Disabled.into());
    };
    Ok(QueuesResponse {
        node: snapshot.local_id.get(),
        served: q
            .served
            .iter()
            .map(|s| ServedJson {
                shard: s.shard.to_string(),
                fence: s.fence.get(),
                recovering: s.recovering,
                pending: s.pending,
                active: s.active,
                backpressure_active: s.backpressure_active,
            })
            .collect(),
        counters: q
            .counters
            .iter()
            .map(|(ns, c)| {
                let json = CountersJson {
                    enqueued: c.enqueued,
                    completed: c.completed,
                    failed: c.failed,
                    requeued: c.requeued,
                    dead_lettered: c.dead_lettered,
                    stale_refused: c.stale_refused,
                };
                (ns.clone(), json)
            })
            .collect(),
        replicas: q.replicas.len(),
        requests_in_flight: q.requests_in_flight,
    })
}

pub(super) async fn stats(State(node): State<NodeHandle>) -> Response {
    match queues_stats(&node).await {
        Ok(stats) => Json(stats).into_response(),
        Err(e) => refused(e),
    }
}

/// The `mesh_queue_*` families of a node with `[queues]`: one series per configured namespace
/// (the `queue` label) and never per shard, written for every namespace even while this node
/// serves none of its shards, so a node's series do not come and go with shard moves.
pub(crate) fn write_metrics(families: &mut Families<'_, '_>, s: &QueueStatus) -> std::fmt::Result {
    use meshkit_api::metrics::catalogue::{
        QUEUE_ACTIVE, QUEUE_BACKPRESSURE_ACTIVE, QUEUE_BACKPRESSURE_TRANSITIONS,
        QUEUE_CHECKPOINT_WRITES, QUEUE_COMPLETED, QUEUE_DEAD_LETTERED, QUEUE_ENQUEUED,
        QUEUE_FAILED, QUEUE_PENDING, QUEUE_PENDING_REASSIGNMENTS, QUEUE_RECOVERIES,
        QUEUE_REPLICATION_LAG, QUEUE_REQUEUED, QUEUE_SERVED, QUEUE_STALE_REFUSED,
        QUEUE_UNHEALTHY_PEERS,
    };
    let none = NamespaceCounters::default();
    let namespaces: Vec<(&str, &NamespaceCounters)> = s
        .namespaces
        .iter()
        .map(|ns| (ns.as_str(), s.counters.get(ns).unwrap_or(&none)))
        .collect();
    let gauge = |f: fn(&ServedQueue) -> usize| {
        namespaces.iter().map(move |(ns, _)| {
            let sum: usize = s
                .served
                .iter()
                .filter(|q| q.shard.namespace() == *ns)
                .map(f)
                .sum();
            ([*ns], sum)
        })
    };
    families.gauges(&QUEUE_SERVED, gauge(|_| 1))?;
    families.gauges(&QUEUE_PENDING, gauge(|q| q.pending))?;
    families.gauges(&QUEUE_ACTIVE, gauge(|q| q.active))?;
    families.gauges(
        &QUEUE_BACKPRESSURE_ACTIVE,
        gauge(|q| usize::from(q.backpressure_active)),
    )?;
    let counter =
        |f: fn(&NamespaceCounters) -> u64| namespaces.iter().map(move |(ns, c)| ([*ns], f(c)));
    families.counters(&QUEUE_ENQUEUED, counter(|c| c.enqueued))?;
    families.counters(&QUEUE_COMPLETED, counter(|c| c.completed))?;
    families.counters(&QUEUE_FAILED, counter(|c| c.failed))?;
    families.counters(&QUEUE_REQUEUED, counter(|c| c.requeued))?;
    families.counters(&QUEUE_DEAD_LETTERED, counter(|c| c.dead_lettered))?;
    families.counters(&QUEUE_STALE_REFUSED, counter(|c| c.stale_refused))?;
    families.counters(
        &QUEUE_BACKPRESSURE_TRANSITIONS,
        namespaces.iter().flat_map(|(ns, c)| {
            [
                ([*ns, "active"], c.backpressure_activated),
                ([*ns, "inactive"], c.backpressure_deactivated),
            ]
        }),
    )?;
    families.gauge(&QUEUE_UNHEALTHY_PEERS, s.health_summary.unhealthy)?;
    families.gauge(
        &QUEUE_PENDING_REASSIGNMENTS,
        s.health_summary.pending_reassignments,
    )?;
    families.counter(&QUEUE_RECOVERIES, s.stats.recoveries)?;
    families.counter(&QUEUE_CHECKPOINT_WRITES, s.checkpoint_writes)?;
    families.histograms(
        &QUEUE_REPLICATION_LAG,
        namespaces
            .iter()
            .map(|(ns, c)| ([*ns], c.replication_lag.with_bounds(&LAG_BOUNDS))),
    )
}
