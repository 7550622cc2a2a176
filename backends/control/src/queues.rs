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
use meshkit::shard::ShardId;

use crate::errors::json_error;
use crate::leadership::SSE_HEARTBEAT;
pub use meshkit_api::json::{
    BackpressureJson, BackpressureQuery, CheckpointJson, CheckpointsResponse, CountersJson,
    DrainedItem, EnqueueRequest, EnqueueResponse, FailRequest, LeaseHealthResponse, LeaseRequest,
    LeaseResponse, PeerHealthJson, QueueDrainRequest, QueueDrainResponse, QueueRestoreRequest,
    QueueRestoreResponse, QueuesResponse, ReplicaAckJson, ServedJson, SourceJson, TokenJson,
    TokenRequest, TokenResponse,
};
use meshkit_api::metrics::Families;
use meshkit_runtime::driver::NodeHandle;
use meshkit_runtime::queue_host::{
    LAG_BOUNDS, NamespaceCounters, QueueCallError, QueueStatus, ServedQueue, ShardBackpressure,
};

/// The HTTP status of a refused queue call (the body says why, and what to do).
fn queue_error(e: &QueueCallError) -> Response {
    let status = match e {
        QueueCallError::Disabled => StatusCode::NOT_FOUND,
        QueueCallError::Stopped(_) => StatusCode::SERVICE_UNAVAILABLE,
        QueueCallError::Queue(q) => match q {
            QueueError::StaleFence { .. } | QueueError::StaleLease { .. } => StatusCode::CONFLICT,
            QueueError::UnknownItem { .. } | QueueError::UnknownShard => StatusCode::NOT_FOUND,
            QueueError::PayloadTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
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
    };
    json_error(status, e.to_string())
}

fn bad_request(message: String) -> Response {
    json_error(StatusCode::BAD_REQUEST, message)
}

/// `shard/{namespace}/{id}` from a request's `shard` field.
fn parse_shard(text: &str) -> Result<ShardId, Box<Response>> {
    text.parse::<ShardId>().map_err(|e| {
        Box::new(bad_request(format!(
            "field `shard` = {text:?}: {e} (a shard's scope, such as shard/jobs/3)"
        )))
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
) -> Result<Vec<ShardId>, Box<Response>> {
    let config = node
        .queue_shards()
        .await
        .map_err(|e| Box::new(queue_error(&e)))?;
    let Some((_, count)) = config.namespaces().find(|(ns, _)| *ns == queue) else {
        let known: Vec<&str> = config.namespaces().map(|(ns, _)| ns).collect();
        return Err(Box::new(json_error(
            StatusCode::NOT_FOUND,
            format!("field `queue` = {queue:?}: no such queue (the queues: {known:?})"),
        )));
    };
    match shard {
        Some(id) if id < count => {
            Ok(vec![ShardId::new(queue, id).map_err(|e| {
                Box::new(bad_request(format!("field `queue`: {e}")))
            })?])
        }
        Some(id) => Err(Box::new(bad_request(format!(
            "field `shard` = {id}: the queue {queue:?} has shards 0..{count}"
        )))),
        None => Ok((0..count)
            .filter_map(|i| ShardId::new(queue, i).ok())
            .collect()),
    }
}

pub(super) async fn enqueue(
    State(node): State<NodeHandle>,
    Json(request): Json<EnqueueRequest>,
) -> Response {
    let shards = match shards_of(&node, &request.queue, request.shard).await {
        Ok(s) => s,
        Err(refusal) => return *refusal,
    };
    let payload = request.payload.into_bytes();
    let pick = (fnv1a(&payload) % shards.len() as u64) as usize;
    let shard = shards[if request.shard.is_some() { 0 } else { pick }].clone();
    match node.queue_enqueue(shard, payload).await {
        Ok(done) => Json(EnqueueResponse {
            shard: done.shard.to_string(),
            item: done.item.get(),
            fence: done.fence.get(),
        })
        .into_response(),
        Err(e) => queue_error(&e),
    }
}

pub(super) async fn lease(
    State(node): State<NodeHandle>,
    Json(request): Json<LeaseRequest>,
) -> Response {
    let shards = match shards_of(&node, &request.queue, request.shard).await {
        Ok(s) => s,
        Err(refusal) => return *refusal,
    };
    // Start at a different shard each time, so one busy shard does not starve the others.
    let start = (fnv1a(
        &SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap_or_default()
            .as_nanos()
            .to_be_bytes(),
    ) % shards.len() as u64) as usize;
    let mut last_error = None;
    for k in 0..shards.len() {
        let shard = shards[(start + k) % shards.len()].clone();
        match node.queue_lease(shard).await {
            Ok(Some(item)) => {
                return Json(LeaseResponse {
                    shard: item.shard.to_string(),
                    token: item.token.into(),
                    lease_for_ms: u64::try_from(item.lease_for.as_millis()).unwrap_or(u64::MAX),
                    payload: String::from_utf8_lossy(&item.payload).into_owned(),
                })
                .into_response();
            }
            Ok(None) => {}
            // One shard without a known owner does not make the others empty.
            Err(e) => last_error = Some(e),
        }
    }
    match last_error {
        // Every shard refused: say why (with one shard named, its refusal).
        Some(e) if shards.len() == 1 => queue_error(&e),
        _ => StatusCode::NO_CONTENT.into_response(),
    }
}

async fn finish(
    shard: &str,
    token: TokenJson,
    call: impl AsyncFnOnce(ShardId, OwnershipToken) -> Result<OwnershipToken, QueueCallError>,
) -> Response {
    let shard = match parse_shard(shard) {
        Ok(s) => s,
        Err(refusal) => return *refusal,
    };
    match call(shard.clone(), token.into()).await {
        Ok(token) => Json(TokenResponse {
            shard: shard.to_string(),
            token: token.into(),
        })
        .into_response(),
        Err(e) => queue_error(&e),
    }
}

pub(super) async fn heartbeat(
    State(node): State<NodeHandle>,
    Json(r): Json<TokenRequest>,
) -> Response {
    finish(&r.shard, r.token, async |s, t| {
        node.queue_heartbeat(s, t).await
    })
    .await
}

pub(super) async fn complete(
    State(node): State<NodeHandle>,
    Json(r): Json<TokenRequest>,
) -> Response {
    finish(&r.shard, r.token, async |s, t| {
        node.queue_complete(s, t).await
    })
    .await
}

pub(super) async fn fail(State(node): State<NodeHandle>, Json(r): Json<FailRequest>) -> Response {
    let requeue = r.requeue;
    finish(&r.shard, r.token, async |s, t| {
        node.queue_fail(s, t, requeue).await
    })
    .await
}

pub(super) async fn drain(
    State(node): State<NodeHandle>,
    Json(request): Json<QueueDrainRequest>,
) -> Response {
    let shard = match parse_shard(&request.shard) {
        Ok(s) => s,
        Err(refusal) => return *refusal,
    };
    match node.queue_drain(shard.clone()).await {
        Ok(items) => Json(QueueDrainResponse {
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
        Err(e) => queue_error(&e),
    }
}

pub(super) async fn restore(
    State(node): State<NodeHandle>,
    Json(request): Json<QueueRestoreRequest>,
) -> Response {
    let shard = match parse_shard(&request.shard) {
        Ok(s) => s,
        Err(refusal) => return *refusal,
    };
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
    match node.queue_restore(shard.clone(), items).await {
        Ok(restored) => Json(QueueRestoreResponse {
            shard: shard.to_string(),
            restored,
        })
        .into_response(),
        Err(e) => queue_error(&e),
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

/// `GET /control/backpressure`: the most recently seen signal of the matching shards, or 204
/// when no owner of one publishes any.
pub(super) async fn backpressure(
    State(node): State<NodeHandle>,
    Query(query): Query<BackpressureQuery>,
) -> Response {
    let view = match node.subscribe_backpressure().await {
        Ok(view) => view,
        Err(e) => return queue_error(&e),
    };
    let latest = view
        .borrow()
        .iter()
        .filter(|(shard, _)| query.matches(shard))
        .max_by_key(|(shard, b)| (b.seen_at, (*shard).clone()))
        .map(|(shard, b)| backpressure_json(shard, b));
    match latest {
        Some(signal) => Json(signal).into_response(),
        None => StatusCode::NO_CONTENT.into_response(),
    }
}

/// `GET /control/backpressure/stream`: server-sent events, one `backpressure` event per
/// matching shard now, then one per change (a transition, a new owner), with keep-alives.
pub(super) async fn backpressure_stream(
    State(node): State<NodeHandle>,
    Query(query): Query<BackpressureQuery>,
) -> Response {
    let view = match node.subscribe_backpressure().await {
        Ok(view) => view,
        Err(e) => return queue_error(&e),
    };
    let mut seen = std::collections::BTreeMap::new();
    let events = stream::unfold(
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
                let json = serde_json::to_string(&backpressure_json(shard, b)).unwrap_or_default();
                out.push(Ok::<_, Infallible>(
                    Event::default().event("backpressure").data(json),
                ));
            }
        }
        stream::iter(out)
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
        Err(e) => return queue_error(&e.into()),
    };
    let Some(q) = snapshot.queues else {
        return queue_error(&QueueCallError::Disabled);
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
        Err(e) => return queue_error(&e.into()),
    };
    let Some(q) = snapshot.queues else {
        return queue_error(&QueueCallError::Disabled);
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

pub(super) async fn stats(State(node): State<NodeHandle>) -> Response {
    let snapshot = match node.snapshot().await {
        Ok(s) => s,
        Err(e) => return queue_error(&e.into()),
    };
    let Some(q) = snapshot.queues else {
        return queue_error(&QueueCallError::Disabled);
    };
    Json(QueuesResponse {
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
    .into_response()
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
