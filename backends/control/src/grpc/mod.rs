//! The control surface over gRPC: the `meshkit.control.v1.Control` service.
//!
//! The wire contract is `backends/api/proto/control.proto`. Its messages ([`proto`], from
//! `meshkit-api`), the server trait and dispatch ([`server`]) and the clients (in
//! `meshkit-client`) are generated from it once, when `meshkit-api` builds (its `build.rs`:
//! protox and tonic-prost-build, no protoc). This module implements the trait over a node
//! ([`ControlService`]).
//!
//! The service rides on the control port: [`routes`] is merged into
//! [`control::router`](crate::router), inside its authorization layer, so every method
//! is a row of [`control::meshkit_api::routes::ROUTE_PERMISSIONS`](meshkit_api::routes::ROUTE_PERMISSIONS) (reads need
//! `mesh.observe`; `TransferLease`, `Drain`, `Resume`, `Rebalance`, the lock-session methods
//! and the queue calls of producers, workers and operators need `mesh.operate`; `Join`, `Leave`, `ForceLeave`, `AddVoter` and `RemoveVoter` need
//! `mesh.admin`, as their HTTP twins do). The
//! layer answers a refused gRPC call in HTTP (401, 403); [`http_errors_as_status`] turns such
//! answers into gRPC statuses (`UNAUTHENTICATED`, `PERMISSION_DENIED`) that clients can read.
//! gRPC needs HTTP/2; tonic has no HTTP/3, so the h3 listener does not carry it.
//!
//! | method | answers | errors |
//! | --- | --- | --- |
//! | `ListPeers` | the membership view, as `GET /meshkit/peers` | `UNAVAILABLE` (driver stopped) |
//! | `GetLeaders` | the leadership view, as `GET /meshkit/leaders` | `NOT_FOUND` (no `[leadership]`) |
//! | `TransferLease` | the new holder's token | see [`CallError`] |
//! | `Drain`, `Resume` | what was released; whether it was drained | see [`CallError`] |
//! | `Rebalance` | the shard plan, as `POST /control/rebalance` | `FAILED_PRECONDITION` (not the coordinator, or no eligible member) |
//! | `WatchLeadership` | feed entries after `after_seq`, then live ones, and a `Heartbeat` (seq 0, not an entry) after every [`SSE_HEARTBEAT`](crate::leadership::SSE_HEARTBEAT) without one | `OUT_OF_RANGE` (gone) |
//! | `ListShards` | the shard owners, as `GET /meshkit/shards` | `NOT_FOUND` (no `[leadership]`) |
//! | `WatchShards` | `WatchLeadership` narrowed to `shard/...` scopes | as `WatchLeadership` |
//! | `ListClusters` | the declared clusters, as `GET /meshkit/clusters` | `UNAVAILABLE` |
//! | `ListVersions` | the versions present, as `GET /meshkit/versions` | `UNAVAILABLE` |
//! | `AcquireLease`, `RenewLease`, `ReleaseLease` | a lock session's lease, as `POST /control/leases/{acquire,renew,release}` | see [`CallError`] (`ABORTED`: held by another) |
//! | `Join`, `Leave`, `ForceLeave` | as `POST /control/{join,leave,force-leave}` | see [`CallError::Membership`] |
//! | `PlanChaos`, `StartChaos`, `ListChaos`, `AbortChaos`, `EngageChaosKillSwitch`, `RearmChaosKillSwitch` | the JSON body of the HTTP twin (`/control/chaos/*`, [`crate::chaos`]) in `ChaosJson.json` | the twin's refusal: `INVALID_ARGUMENT` (400), `PERMISSION_DENIED` (403), `NOT_FOUND`, `FAILED_PRECONDITION` (409), `UNAVAILABLE`; the message starts with the reason (`token-replayed: ...`) |
//! | `AddVoter`, `RemoveVoter` | the proposed voter change, as `POST /control/voters/{add,remove}` | `FAILED_PRECONDITION` (refused, or not the leader: the message names it) |
//! | `QueueEnqueue`, `QueueLease`, `QueueHeartbeat`, `QueueComplete`, `QueueFail`, `QueueDrain`, `QueueRestore` | as `POST /control/queue/*` (payloads as bytes; a lease with nothing pending has no `item`; a lease with `max` answers in `items`) | see [`CallError::Queue`] |
//! | `ListQueues` | as `GET /control/queues` | `NOT_FOUND` (no `[queues]`) |
//! | `GetBackpressure`, `WatchBackpressure` | as `GET /control/backpressure` (no `signal` for 204) and its SSE stream | `NOT_FOUND` (no `[queues]`) |
//! | `ListProbes` | the JSON body of `GET /control/probes` in `ProbesJson.json`, filtered by `tags` (`key=value`) | `INVALID_ARGUMENT` (a filter without `=`), `UNAVAILABLE` (no probe host) |
//!
//! Readiness (`GET /readyz`) is the standard `grpc.health.v1.Health` service ([`health`]),
//! open like `/readyz`, so Kubernetes gRPC probes and `grpc_health_probe` work unchanged.

pub mod health;
pub mod server;
mod status;

pub use meshkit_api::grpc::{SERVICE, path, proto};

use std::convert::Infallible;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use axum::Router;
use axum::body::Body;
use futures_util::stream::{self, Stream, StreamExt};
use meshkit::NodeId;
use meshkit::lease::{FencingToken, Scope};
use meshkit::node::VoterChange;
use tokio::sync::broadcast;
use tonic::server::NamedService;
use tonic::{Request, Response, Status};

use self::proto::{
    AbortChaosRequest, AcquireLeaseRequest, ChaosJson, ChaosKillSwitchRequest, DrainRequest,
    DrainResponse, ForceLeaveRequest, ForceLeaveResponse, GetLeadersRequest, GetLeadersResponse,
    JoinRequest, JoinResponse, LeadershipChange, LeadershipEvent, LeaseSession,
    LeaseSessionRequest, LeaveRequest, LeaveResponse, ListChaosRequest, ListClustersRequest,
    ListClustersResponse, ListPeersRequest, ListPeersResponse, ListShardsRequest,
    ListShardsResponse, ListVersionsRequest, ListVersionsResponse, Peer, PeerState, PlannedMove,
    RebalanceRequest, RebalanceResponse, ResumeRequest, ResumeResponse, TransferLeaseRequest,
    TransferLeaseResponse, VoterChangeRequest, VoterChangeResponse, WatchLeadershipRequest,
};
use self::server::control_server::{Control, ControlServer};
use self::server::health_server::HealthServer;
pub use self::status::{CallError, MAX_ERROR_BODY_BYTES, http_errors_as_status};
use crate::leadership::{rebalance_answer, shards_of};
use crate::membership;
use crate::queues::{self, BackpressureJson, BackpressureQuery, QueuesResponse, TokenCall};
use crate::views::{MAX_PAGE, PeersQuery, VersionCount, clusters_of, peers_page, versions_of};
use meshkit::queue::{ItemId, LeaseId, Origin, OwnershipToken};
use meshkit_runtime::driver::{LeadershipError, NodeHandle, Snapshot};
use meshkit_runtime::lease_host::{Change, FeedEntry, LeadershipView};
use meshkit_runtime::queue_host::LeasedItem;

/// The largest request message accepted, in bytes (every request of this service is a few
/// dozen bytes; a scope name is at most 255).
pub const MAX_REQUEST_BYTES: usize = 64 * 1024;

/// The service's routes, to merge into the control router (inside its authorization layer).
pub fn routes(node: NodeHandle) -> Router {
    let watchers = health::Watchers::new(node.clone());
    routes_with(node, watchers)
}

/// [`routes`] with `watchers` as the health watchers (shared with what renders their metrics).
pub fn routes_with(node: NodeHandle, watchers: Arc<health::Watchers>) -> Router {
    let service = ControlService::with_watchers(node, watchers);
    Router::new()
        .route_service("/meshkit.control.v1.Control/{*method}", service.clone())
        .route_service("/grpc.health.v1.Health/{*method}", service)
}

/// The `meshkit.control.v1.Control` service over a node, and beside it the node's
/// `grpc.health.v1.Health`: a tower service from HTTP/2 requests to gRPC responses, which hands
/// each request to the generated dispatch of its service.
#[derive(Clone, Debug)]
pub struct ControlService {
    control: ControlServer<Methods>,
    health: HealthServer<health::Methods>,
}

impl ControlService {
    /// The service over `node`.
    pub fn new(node: NodeHandle) -> Self {
        let watchers = health::Watchers::new(node.clone());
        Self::with_watchers(node, watchers)
    }

    /// The service over `node`, its `Health/Watch` streams served by `watchers`.
    pub fn with_watchers(node: NodeHandle, watchers: Arc<health::Watchers>) -> Self {
        Self {
            control: ControlServer::new(Methods { node: node.clone() })
                .max_decoding_message_size(MAX_REQUEST_BYTES),
            health: HealthServer::new(health::Methods::new(node, watchers))
                .max_decoding_message_size(MAX_REQUEST_BYTES),
        }
    }
}

impl NamedService for ControlService {
    const NAME: &'static str = SERVICE;
}

type EventStream = Pin<Box<dyn Stream<Item = Result<LeadershipEvent, Status>> + Send>>;
type SignalStream = Pin<Box<dyn Stream<Item = Result<proto::BackpressureSignal, Status>> + Send>>;

impl tower::Service<http::Request<Body>> for ControlService {
    type Response = http::Response<tonic::body::Body>;
    type Error = Infallible;
    type Future = tonic::codegen::BoxFuture<Self::Response, Infallible>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: http::Request<Body>) -> Self::Future {
        // Each generated dispatch answers `UNIMPLEMENTED` for a method its service lacks.
        let health = request
            .uri()
            .path()
            .strip_prefix('/')
            .and_then(|p| p.strip_prefix(health::HEALTH_SERVICE))
            .is_some_and(|p| p.starts_with('/'));
        if health {
            self.health.call(request)
        } else {
            self.control.call(request)
        }
    }
}

/// The methods of `meshkit.control.v1.Control` over a node.
#[derive(Clone, Debug)]
struct Methods {
    node: NodeHandle,
}

/// The chaos context of a call (from the router's extensions, which reach tonic's request)
/// and its verified caller; `INTERNAL` when served outside [`crate::router`].
fn chaos_call<T>(
    node: &NodeHandle,
    request: &Request<T>,
) -> Result<(crate::chaos::Ctx, crate::auth::Principal), Status> {
    let ext = request.extensions();
    let chaos = ext.get::<Arc<crate::chaos::ChaosControl>>().cloned();
    let access = ext.get::<crate::auth::AccessControl>();
    let who = ext.get::<crate::auth::Principal>().cloned();
    match (chaos, access, who) {
        (Some(chaos), Some(access), Some(who)) => Ok((
            crate::chaos::Ctx {
                node: node.clone(),
                chaos,
                audit: access.audit().clone(),
            },
            who,
        )),
        _ => Err(Status::internal(
            "the chaos methods are served only inside the control router (no chaos state or caller)",
        )),
    }
}

/// A chaos answer as its HTTP twin's JSON, or its refusal as the status of the twin's code,
/// the message starting with the stable reason.
fn chaos_reply<T: serde::Serialize>(
    answer: Result<T, crate::chaos::ChaosCallError>,
) -> Result<Response<ChaosJson>, Status> {
    match answer {
        Ok(body) => Ok(Response::new(ChaosJson {
            json: serde_json::to_string(&body).unwrap_or_default(),
        })),
        Err(e) => {
            let code = match e.http_status().as_u16() {
                400 => tonic::Code::InvalidArgument,
                403 => tonic::Code::PermissionDenied,
                404 => tonic::Code::NotFound,
                409 => tonic::Code::FailedPrecondition,
                503 => tonic::Code::Unavailable,
                _ => tonic::Code::Internal,
            };
            Err(Status::new(code, format!("{}: {e}", e.reason())))
        }
    }
}

/// A handler's answer as a gRPC response, or its error's status.
fn reply<T>(method: &str, answer: Result<T, CallError>) -> Result<Response<T>, Status> {
    answer.map(Response::new).map_err(|e| e.into_status(method))
}

#[tonic::async_trait]
impl Control for Methods {
    async fn list_peers(
        &self,
        request: Request<ListPeersRequest>,
    ) -> Result<Response<ListPeersResponse>, Status> {
        let answer = list_peers(self.node.clone(), request.into_inner()).await;
        reply(path::LIST_PEERS, answer)
    }

    async fn get_leaders(
        &self,
        _: Request<GetLeadersRequest>,
    ) -> Result<Response<GetLeadersResponse>, Status> {
        reply(path::GET_LEADERS, get_leaders(self.node.clone()).await)
    }

    async fn transfer_lease(
        &self,
        request: Request<TransferLeaseRequest>,
    ) -> Result<Response<TransferLeaseResponse>, Status> {
        let answer = transfer_lease(self.node.clone(), request.into_inner()).await;
        reply(path::TRANSFER_LEASE, answer)
    }

    async fn drain(&self, _: Request<DrainRequest>) -> Result<Response<DrainResponse>, Status> {
        reply(path::DRAIN, drain(self.node.clone()).await)
    }

    async fn resume(&self, _: Request<ResumeRequest>) -> Result<Response<ResumeResponse>, Status> {
        reply(path::RESUME, resume(self.node.clone()).await)
    }

    async fn rebalance(
        &self,
        request: Request<RebalanceRequest>,
    ) -> Result<Response<RebalanceResponse>, Status> {
        let answer = rebalance(self.node.clone(), request.into_inner().dry_run).await;
        reply(path::REBALANCE, answer)
    }

    type WatchLeadershipStream = EventStream;

    async fn watch_leadership(
        &self,
        request: Request<WatchLeadershipRequest>,
    ) -> Result<Response<EventStream>, Status> {
        let method = path::WATCH_LEADERSHIP;
        let answer = watch_feed(self.node.clone(), request.into_inner(), all_entries, method).await;
        reply(method, answer)
    }

    async fn list_shards(
        &self,
        _: Request<ListShardsRequest>,
    ) -> Result<Response<ListShardsResponse>, Status> {
        reply(path::LIST_SHARDS, list_shards(self.node.clone()).await)
    }

    type WatchShardsStream = EventStream;

    async fn watch_shards(
        &self,
        request: Request<WatchLeadershipRequest>,
    ) -> Result<Response<EventStream>, Status> {
        let method = path::WATCH_SHARDS;
        let answer = watch_feed(
            self.node.clone(),
            request.into_inner(),
            shard_entries,
            method,
        )
        .await;
        reply(method, answer)
    }

    async fn list_clusters(
        &self,
        _: Request<ListClustersRequest>,
    ) -> Result<Response<ListClustersResponse>, Status> {
        reply(path::LIST_CLUSTERS, list_clusters(self.node.clone()).await)
    }

    async fn list_versions(
        &self,
        _: Request<ListVersionsRequest>,
    ) -> Result<Response<ListVersionsResponse>, Status> {
        reply(path::LIST_VERSIONS, list_versions(self.node.clone()).await)
    }

    async fn acquire_lease(
        &self,
        request: Request<AcquireLeaseRequest>,
    ) -> Result<Response<LeaseSession>, Status> {
        let request = request.into_inner();
        let answer = async {
            let scope = parse_scope(&request.scope)?;
            let ttl = std::time::Duration::from_millis(request.ttl_ms);
            let token = self.node.acquire_new(scope, ttl).await?;
            Ok(self.session(request.scope, token))
        };
        reply(path::ACQUIRE_LEASE, answer.await)
    }

    async fn renew_lease(
        &self,
        request: Request<LeaseSessionRequest>,
    ) -> Result<Response<LeaseSession>, Status> {
        let request = request.into_inner();
        let answer = async {
            let scope = parse_scope(&request.scope)?;
            let token = FencingToken::new(request.token);
            let token = self.node.renew_held(scope, token).await?;
            Ok(self.session(request.scope, token))
        };
        reply(path::RENEW_LEASE, answer.await)
    }

    async fn release_lease(
        &self,
        request: Request<LeaseSessionRequest>,
    ) -> Result<Response<LeaseSession>, Status> {
        let request = request.into_inner();
        let answer = async {
            let scope = parse_scope(&request.scope)?;
            let token = FencingToken::new(request.token);
            let token = self.node.release_held(scope, token).await?;
            Ok(self.session(request.scope, token))
        };
        reply(path::RELEASE_LEASE, answer.await)
    }

    async fn plan_chaos(&self, request: Request<ChaosJson>) -> Result<Response<ChaosJson>, Status> {
        let (ctx, who) = chaos_call(&self.node, &request)?;
        let answer = ctx.plan(&who, request.get_ref().json.as_bytes()).await;
        chaos_reply(answer)
    }

    async fn start_chaos(
        &self,
        request: Request<ChaosJson>,
    ) -> Result<Response<ChaosJson>, Status> {
        let (ctx, who) = chaos_call(&self.node, &request)?;
        let answer = ctx.start(&who, request.get_ref().json.as_bytes()).await;
        // Some targets unreachable (HTTP 207) is an answer too: its `targets` say which.
        chaos_reply(answer.map(|(started, _)| started))
    }

    async fn list_chaos(
        &self,
        request: Request<ListChaosRequest>,
    ) -> Result<Response<ChaosJson>, Status> {
        let (ctx, _) = chaos_call(&self.node, &request)?;
        chaos_reply(ctx.list().await)
    }

    async fn abort_chaos(
        &self,
        request: Request<AbortChaosRequest>,
    ) -> Result<Response<ChaosJson>, Status> {
        let (ctx, who) = chaos_call(&self.node, &request)?;
        chaos_reply(ctx.abort(&who, &request.get_ref().id).await)
    }

    async fn engage_chaos_kill_switch(
        &self,
        request: Request<ChaosKillSwitchRequest>,
    ) -> Result<Response<ChaosJson>, Status> {
        let (ctx, who) = chaos_call(&self.node, &request)?;
        chaos_reply(ctx.kill_switch(&who, true).await)
    }

    async fn rearm_chaos_kill_switch(
        &self,
        request: Request<ChaosKillSwitchRequest>,
    ) -> Result<Response<ChaosJson>, Status> {
        let (ctx, who) = chaos_call(&self.node, &request)?;
        chaos_reply(ctx.kill_switch(&who, false).await)
    }

    async fn list_probes(
        &self,
        request: Request<proto::ListProbesRequest>,
    ) -> Result<Response<proto::ProbesJson>, Status> {
        // The probe host reaches the service as the HTTP twin's does: a request extension the
        // node adds around the control router.
        let Some(probes) = request
            .extensions()
            .get::<meshkit_runtime::probe_host::ProbeHandle>()
            .cloned()
        else {
            return Err(Status::unavailable(
                "this node runs no probe host (the router was built without one)",
            ));
        };
        let filters = request
            .get_ref()
            .tags
            .iter()
            .map(|tag| meshkit_api::probes::TagFilter::parse(tag))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| Status::invalid_argument(format!("field `tags`: {e}")))?;
        let body = probes
            .list(filters)
            .await
            .map_err(|e| Status::unavailable(e.to_string()))?;
        Ok(Response::new(proto::ProbesJson {
            json: serde_json::to_string(&body).unwrap_or_default(),
        }))
    }

    async fn join(&self, request: Request<JoinRequest>) -> Result<Response<JoinResponse>, Status> {
        let answer = membership::join_through(&self.node, request.into_inner().seeds)
            .await
            .map(|j| JoinResponse {
                node: j.node,
                seeds: j.seeds,
            });
        reply(path::JOIN, answer.map_err(CallError::from))
    }

    async fn leave(&self, _: Request<LeaveRequest>) -> Result<Response<LeaveResponse>, Status> {
        let answer = membership::leave_mesh(&self.node)
            .await
            .map(|l| LeaveResponse {
                node: l.node,
                released: l.released,
            });
        reply(path::LEAVE, answer.map_err(CallError::from))
    }

    async fn force_leave(
        &self,
        request: Request<ForceLeaveRequest>,
    ) -> Result<Response<ForceLeaveResponse>, Status> {
        let answer = membership::force_leave_member(&self.node, request.into_inner().node)
            .await
            .map(|f| ForceLeaveResponse {
                node: f.node,
                member: f.member,
                changed: f.changed,
            });
        reply(path::FORCE_LEAVE, answer.map_err(CallError::from))
    }

    async fn add_voter(
        &self,
        request: Request<VoterChangeRequest>,
    ) -> Result<Response<VoterChangeResponse>, Status> {
        let answer = change_voters(&self.node, request.into_inner(), VoterChange::Add).await;
        reply(path::ADD_VOTER, answer)
    }

    async fn remove_voter(
        &self,
        request: Request<VoterChangeRequest>,
    ) -> Result<Response<VoterChangeResponse>, Status> {
        let answer = change_voters(&self.node, request.into_inner(), VoterChange::Remove).await;
        reply(path::REMOVE_VOTER, answer)
    }

    async fn queue_enqueue(
        &self,
        request: Request<proto::QueueEnqueueRequest>,
    ) -> Result<Response<proto::QueueEnqueueResponse>, Status> {
        let r = request.into_inner();
        let answer = queues::enqueue_on(&self.node, &r.queue, r.shard, r.payload)
            .await
            .map(|done| proto::QueueEnqueueResponse {
                shard: done.shard.to_string(),
                item: done.item.get(),
                fence: done.fence.get(),
            });
        reply(path::QUEUE_ENQUEUE, answer.map_err(CallError::from))
    }

    async fn queue_lease(
        &self,
        request: Request<proto::QueueLeaseRequest>,
    ) -> Result<Response<proto::QueueLeaseResponse>, Status> {
        let r = request.into_inner();
        let leased = |item: LeasedItem| proto::LeasedItem {
            shard: item.shard.to_string(),
            token: Some(token_proto(item.token)),
            lease_for_ms: u64::try_from(item.lease_for.as_millis()).unwrap_or(u64::MAX),
            payload: item.payload,
        };
        let answer = match r.max {
            Some(max) => queues::lease_up_to_from(&self.node, &r.queue, r.shard, max)
                .await
                .map(|items| proto::QueueLeaseResponse {
                    item: None,
                    items: items.into_iter().map(leased).collect(),
                }),
            None => queues::lease_from(&self.node, &r.queue, r.shard)
                .await
                .map(|item| proto::QueueLeaseResponse {
                    item: item.map(leased),
                    items: Vec::new(),
                }),
        };
        reply(path::QUEUE_LEASE, answer.map_err(CallError::from))
    }

    async fn queue_heartbeat(
        &self,
        request: Request<proto::QueueTokenRequest>,
    ) -> Result<Response<proto::QueueTokenResponse>, Status> {
        let r = request.into_inner();
        let answer = self
            .token_call(&r.shard, r.token, TokenCall::Heartbeat)
            .await;
        reply(path::QUEUE_HEARTBEAT, answer)
    }

    async fn queue_complete(
        &self,
        request: Request<proto::QueueTokenRequest>,
    ) -> Result<Response<proto::QueueTokenResponse>, Status> {
        let r = request.into_inner();
        let answer = self
            .token_call(&r.shard, r.token, TokenCall::Complete)
            .await;
        reply(path::QUEUE_COMPLETE, answer)
    }

    async fn queue_fail(
        &self,
        request: Request<proto::QueueFailRequest>,
    ) -> Result<Response<proto::QueueTokenResponse>, Status> {
        let r = request.into_inner();
        let call = TokenCall::Fail { requeue: r.requeue };
        let answer = self.token_call(&r.shard, r.token, call).await;
        reply(path::QUEUE_FAIL, answer)
    }

    async fn queue_drain(
        &self,
        request: Request<proto::QueueDrainRequest>,
    ) -> Result<Response<proto::QueueDrainResponse>, Status> {
        let r = request.into_inner();
        let answer = queues::drain_shard(&self.node, &r.shard)
            .await
            .map(|(shard, items)| proto::QueueDrainResponse {
                shard: shard.to_string(),
                items: items
                    .into_iter()
                    .map(|(origin, payload)| proto::DrainedItem {
                        producer: origin.node.get(),
                        request: origin.request,
                        payload,
                    })
                    .collect(),
            });
        reply(path::QUEUE_DRAIN, answer.map_err(CallError::from))
    }

    async fn queue_restore(
        &self,
        request: Request<proto::QueueRestoreRequest>,
    ) -> Result<Response<proto::QueueRestoreResponse>, Status> {
        let r = request.into_inner();
        let items = r
            .items
            .into_iter()
            .map(|i| {
                let origin = Origin {
                    node: NodeId::new(i.producer),
                    request: i.request,
                };
                (origin, i.payload)
            })
            .collect();
        let answer = queues::restore_shard(&self.node, &r.shard, items)
            .await
            .map(|(shard, restored)| proto::QueueRestoreResponse {
                shard: shard.to_string(),
                restored: u64::try_from(restored).unwrap_or(u64::MAX),
            });
        reply(path::QUEUE_RESTORE, answer.map_err(CallError::from))
    }

    async fn list_queues(
        &self,
        _: Request<proto::ListQueuesRequest>,
    ) -> Result<Response<proto::ListQueuesResponse>, Status> {
        let answer = queues::queues_stats(&self.node).await.map(list_queues_of);
        reply(path::LIST_QUEUES, answer.map_err(CallError::from))
    }

    async fn get_backpressure(
        &self,
        request: Request<proto::BackpressureRequest>,
    ) -> Result<Response<proto::GetBackpressureResponse>, Status> {
        let query = backpressure_query(request.into_inner());
        let answer = queues::latest_backpressure(&self.node, &query)
            .await
            .map(|signal| proto::GetBackpressureResponse {
                signal: signal.map(signal_proto),
            });
        reply(path::GET_BACKPRESSURE, answer.map_err(CallError::from))
    }

    type WatchBackpressureStream = SignalStream;

    async fn watch_backpressure(
        &self,
        request: Request<proto::BackpressureRequest>,
    ) -> Result<Response<SignalStream>, Status> {
        let query = backpressure_query(request.into_inner());
        let answer = queues::backpressure_changes(&self.node, query)
            .await
            .map(|changes| -> SignalStream { Box::pin(changes.map(|s| Ok(signal_proto(s)))) });
        reply(path::WATCH_BACKPRESSURE, answer.map_err(CallError::from))
    }
}

impl Methods {
    /// A heartbeat, completion or failure: the answer or the refusal of its HTTP twin.
    async fn token_call(
        &self,
        shard: &str,
        token: Option<proto::OwnershipToken>,
        call: TokenCall,
    ) -> Result<proto::QueueTokenResponse, CallError> {
        let token = token.ok_or(CallError::MissingField("token"))?;
        let token = OwnershipToken {
            item: ItemId::new(token.item),
            attempt: token.attempt,
            lease: LeaseId::new(token.lease),
            fence: FencingToken::new(token.fence),
        };
        let (shard, token) = queues::token_call(&self.node, shard, token, call).await?;
        Ok(proto::QueueTokenResponse {
            shard: shard.to_string(),
            token: Some(token_proto(token)),
        })
    }
}

impl Methods {
    /// A lock session's lease as this node holds (or held) it.
    fn session(&self, scope: String, token: FencingToken) -> LeaseSession {
        LeaseSession {
            scope,
            holder: self.node.id().get(),
            token: token.get(),
        }
    }
}

/// An ownership token in its gRPC form.
fn token_proto(t: OwnershipToken) -> proto::OwnershipToken {
    proto::OwnershipToken {
        item: t.item.get(),
        attempt: t.attempt,
        lease: t.lease.get(),
        fence: t.fence.get(),
    }
}

/// A backpressure signal in its gRPC form (the fields of its JSON twin).
fn signal_proto(s: BackpressureJson) -> proto::BackpressureSignal {
    proto::BackpressureSignal {
        is_active: s.is_active,
        pending_count: s.pending_count,
        observed_at: s.observed_at,
        high_watermark: s.high_watermark,
        low_watermark: s.low_watermark,
        shard: s.shard,
        owner: s.owner,
        fence: s.fence,
    }
}

fn backpressure_query(r: proto::BackpressureRequest) -> BackpressureQuery {
    BackpressureQuery {
        queue: r.queue,
        shard: r.shard,
    }
}

/// `ListQueues` from what `GET /control/queues` answers.
fn list_queues_of(q: QueuesResponse) -> proto::ListQueuesResponse {
    let count = |n: usize| u64::try_from(n).unwrap_or(u64::MAX);
    proto::ListQueuesResponse {
        node: q.node,
        served: q
            .served
            .into_iter()
            .map(|s| proto::ServedQueue {
                shard: s.shard,
                fence: s.fence,
                recovering: s.recovering,
                pending: count(s.pending),
                active: count(s.active),
                backpressure_active: s.backpressure_active,
            })
            .collect(),
        counters: q
            .counters
            .into_iter()
            .map(|(ns, c)| {
                let counters = proto::QueueCounters {
                    enqueued: c.enqueued,
                    completed: c.completed,
                    failed: c.failed,
                    requeued: c.requeued,
                    dead_lettered: c.dead_lettered,
                    stale_refused: c.stale_refused,
                };
                (ns, counters)
            })
            .collect(),
        replicas: count(q.replicas),
        requests_in_flight: count(q.requests_in_flight),
    }
}

/// The request's `scope` field as a scope, or `INVALID_ARGUMENT` naming the field.
fn parse_scope(text: &str) -> Result<Scope, CallError> {
    Scope::new(text).map_err(|source| CallError::InvalidScope {
        value: text.to_owned(),
        source,
    })
}

async fn change_voters(
    node: &NodeHandle,
    request: VoterChangeRequest,
    make: fn(NodeId) -> VoterChange,
) -> Result<VoterChangeResponse, CallError> {
    let proposed = membership::change_voters(node, request.node, make)
        .await
        .map_err(CallError::Membership)?;
    Ok(VoterChangeResponse {
        node: proposed.node,
        leader: proposed.leader,
        voters: proposed.voters,
        proposed: proposed.proposed,
    })
}

fn all_entries(_: &FeedEntry) -> bool {
    true
}

fn shard_entries(entry: &FeedEntry) -> bool {
    entry.change.is_shard()
}

async fn list_shards(node: NodeHandle) -> Result<ListShardsResponse, CallError> {
    let view = node
        .leadership()
        .await?
        .ok_or(CallError::Leadership(LeadershipError::Disabled))?;
    Ok(list_shards_of(&view))
}

/// `ListShards` from a leadership view: the owners of `GET /meshkit/shards`, and the acting
/// coordinator's moves under way (its `status.coordinator.in_flight`).
fn list_shards_of(view: &LeadershipView) -> ListShardsResponse {
    let shards = shards_of(view);
    let coordinator = shards.status.and_then(|s| s.coordinator);
    ListShardsResponse {
        local: shards.local,
        complete: shards.complete,
        shards: shards
            .shards
            .into_iter()
            .map(|s| proto::ShardOwner {
                scope: s.scope,
                owner: s.owner,
                token: s.token,
                expires_in_ms: s.expires_in_ms,
            })
            .collect(),
        coordinating: coordinator.is_some(),
        in_flight: coordinator
            .map(|c| c.in_flight)
            .unwrap_or_default()
            .into_iter()
            .map(|m| proto::ShardMove {
                shard: m.shard,
                from: m.from,
                to: m.to,
                age_ms: m.age_ms,
            })
            .collect(),
    }
}

async fn list_clusters(node: NodeHandle) -> Result<ListClustersResponse, CallError> {
    let clusters = clusters_of(&node.snapshot().await?);
    let count = |n: usize| u64::try_from(n).unwrap_or(u64::MAX);
    Ok(ListClustersResponse {
        local: clusters.local,
        clusters: clusters
            .clusters
            .into_iter()
            .map(|c| proto::Cluster {
                name: c.name,
                states: Some(proto::StateCounts {
                    alive: count(c.states.alive),
                    suspect: count(c.states.suspect),
                    dead: count(c.states.dead),
                    left: count(c.states.left),
                }),
                regions: c.regions.into_iter().map(|(r, n)| (r, count(n))).collect(),
                leader: c.leader,
            })
            .collect(),
    })
}

async fn list_versions(node: NodeHandle) -> Result<ListVersionsResponse, CallError> {
    let versions = versions_of(&node.snapshot().await?);
    let counts = |v: Vec<VersionCount>| {
        v.into_iter()
            .map(|v| proto::VersionCount {
                version: v.version,
                members: u64::try_from(v.members).unwrap_or(u64::MAX),
            })
            .collect()
    };
    Ok(ListVersionsResponse {
        local: versions.local,
        software: counts(versions.software),
        wire: counts(versions.wire),
        mixed: versions.mixed,
    })
}

async fn list_peers(
    node: NodeHandle,
    request: ListPeersRequest,
) -> Result<ListPeersResponse, CallError> {
    let query = peers_query(request)?;
    Ok(peers_response(&node.snapshot().await?, &query))
}

async fn get_leaders(node: NodeHandle) -> Result<GetLeadersResponse, CallError> {
    match node.leadership().await? {
        Some(view) => Ok(leaders_response(view)),
        None => Err(LeadershipError::Disabled.into()),
    }
}

async fn transfer_lease(
    node: NodeHandle,
    request: TransferLeaseRequest,
) -> Result<TransferLeaseResponse, CallError> {
    let scope = parse_scope(&request.scope)?;
    if request.to == 0 {
        return Err(CallError::ZeroTarget);
    }
    let token = node.transfer(scope, NodeId::new(request.to)).await?;
    tracing::info!(scope = %request.scope, to = request.to, %token, "lease transferred over gRPC");
    Ok(TransferLeaseResponse {
        scope: request.scope,
        to: request.to,
        token: token.get(),
    })
}

async fn drain(node: NodeHandle) -> Result<DrainResponse, CallError> {
    let released = node.drain().await?;
    Ok(DrainResponse {
        node: node.id().get(),
        released: released.iter().map(ToString::to_string).collect(),
    })
}

async fn resume(node: NodeHandle) -> Result<ResumeResponse, CallError> {
    let was_draining = node.resume().await?;
    Ok(ResumeResponse {
        node: node.id().get(),
        was_draining,
    })
}

async fn rebalance(node: NodeHandle, dry_run: bool) -> Result<RebalanceResponse, CallError> {
    let (plan, term) = node.rebalance(dry_run).await?;
    let json = rebalance_answer(node.id(), term.get(), dry_run, &plan);
    Ok(RebalanceResponse {
        node: json.node,
        term: json.term,
        dry_run,
        lower: json.lower as u64,
        upper: json.upper as u64,
        moves: json
            .moves
            .into_iter()
            .map(|m| PlannedMove {
                shard: m.shard,
                from: m.from,
                to: m.to,
                reason: m.reason,
            })
            .collect(),
    })
}

/// The feed after `request.after_seq`, the entries `keep` passes: the backlog, then live
/// entries. A subscriber that falls [`EVENT_CHANNEL_LEN`](meshkit_runtime::driver::EVENT_CHANNEL_LEN)
/// entries behind gets `RESOURCE_EXHAUSTED` and resumes from the last entry it was sent.
async fn watch_feed(
    node: NodeHandle,
    request: WatchLeadershipRequest,
    keep: fn(&FeedEntry) -> bool,
    method: &'static str,
) -> Result<EventStream, CallError> {
    let local = node.id().get();
    if request.node != 0 && request.node != local {
        return Err(CallError::ForeignFeed {
            feed: request.node,
            node: local,
        });
    }
    // `Feed::since` counts `after + 1`: keep that in range.
    let after = request.after_seq.min(u64::MAX - 1);
    let mut subscription = node.leadership_feed(after).await?;
    if after == 0
        && let Err(gap) = &subscription.backlog
        && let Some(oldest) = gap.oldest
    {
        // "From the oldest held": the history has rotated since entry 1.
        subscription = node.leadership_feed(oldest.saturating_sub(1)).await?;
    }
    let backlog = subscription
        .backlog
        .map_err(|gap| CallError::from(LeadershipError::Gap(gap)))?;
    // Entries skipped by `keep` count as seen: resuming after them loses nothing kept.
    let last = backlog.last().map_or(after, |e| e.seq);
    let head = stream::iter(
        backlog
            .into_iter()
            .filter(keep)
            .map(|e| Ok(leadership_event(e))),
    );
    let live = live_events(
        subscription.live,
        Live {
            node: local,
            last,
            keep,
            heartbeat: crate::leadership::SSE_HEARTBEAT,
            method,
        },
    );
    Ok(Box::pin(head.chain(live)))
}

/// What the live part of a feed stream needs besides its receiver.
#[derive(Clone, Copy, Debug)]
struct Live {
    /// The answering node (the heartbeats' `node`).
    node: u64,
    /// The last entry covered before the live part starts (the backlog's last, or the resume
    /// point).
    last: u64,
    /// Which entries are sent.
    keep: fn(&FeedEntry) -> bool,
    /// The silence after which a heartbeat is sent.
    heartbeat: std::time::Duration,
    /// The method, for the status a lagging subscriber ends with.
    method: &'static str,
}

/// The live entries of `rx` that `live.keep` passes, and a [`proto::Heartbeat`] after each
/// `live.heartbeat` without anything sent (skipped entries are not sent: they do not count),
/// as the SSE streams' keep-alive comments do: without it a quiet stream cannot be told from a
/// dead one. A subscriber that lags ends with `RESOURCE_EXHAUSTED`, a stopped driver with
/// `UNAVAILABLE`.
fn live_events(
    rx: broadcast::Receiver<FeedEntry>,
    live: Live,
) -> impl Stream<Item = Result<LeadershipEvent, Status>> + Send {
    stream::unfold(Some((rx, live.last)), move |state| async move {
        let (mut rx, mut last) = state?;
        // One deadline per item sent: entries passed over do not restart the silence.
        let beat = tokio::time::Instant::now() + live.heartbeat;
        let error = loop {
            let received = tokio::select! {
                received = rx.recv() => received,
                () = tokio::time::sleep_until(beat) => {
                    return Some((Ok(heartbeat_event(live.node, last)), Some((rx, last))));
                }
            };
            match received {
                Ok(entry) if (live.keep)(&entry) => {
                    let seq = entry.seq;
                    return Some((Ok(leadership_event(entry)), Some((rx, seq))));
                }
                Ok(entry) => last = entry.seq,
                Err(broadcast::error::RecvError::Lagged(missed)) => {
                    break CallError::Lagged { missed, last };
                }
                Err(broadcast::error::RecvError::Closed) => {
                    break CallError::from(meshkit_runtime::driver::DriverStopped);
                }
            }
        };
        // The stream ends with the error's status.
        Some((Err(error.into_status(live.method)), None))
    })
}

/// A feed stream's keep-alive from `node`, having covered the feed up to `last_seq`: seq 0,
/// which no entry has, so that it is never taken for one.
fn heartbeat_event(node: u64, last_seq: u64) -> LeadershipEvent {
    let unix_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
    LeadershipEvent {
        seq: 0,
        node,
        unix_ms,
        change: Some(LeadershipChange::Heartbeat(proto::Heartbeat { last_seq })),
    }
}

/// The gRPC form of a page of a snapshot's membership view: what `GET /meshkit/peers` with the
/// same query answers.
pub fn peers_response(snapshot: &Snapshot, query: &PeersQuery) -> ListPeersResponse {
    let page = peers_page(snapshot, query);
    ListPeersResponse {
        local: page.local,
        peers: page
            .peers
            .into_iter()
            .map(|p| Peer {
                id: p.id,
                state: PeerState::from_json_name(&p.state) as i32,
                incarnation: p.incarnation,
                rtt_ms: p.rtt_ms,
                metadata: p.metadata,
                addr: p.addr,
                last_change_s_ago: p.last_change_s_ago,
            })
            .collect(),
        total: u64::try_from(page.total).unwrap_or(u64::MAX),
        next_after: page.next_after,
    }
}

/// The filter and page a `ListPeers` request asks for.
fn peers_query(request: ListPeersRequest) -> Result<PeersQuery, CallError> {
    let state = match PeerState::try_from(request.state) {
        Ok(PeerState::Unspecified) => None,
        Ok(state) => Some(state.as_json_name().to_owned()),
        Err(_) => return Err(CallError::UnknownState(request.state)),
    };
    let limit = match usize::try_from(request.limit) {
        Ok(0) => None,
        Ok(limit) if limit <= MAX_PAGE => Some(limit),
        _ => {
            return Err(CallError::PageSize {
                limit: request.limit,
                max: MAX_PAGE,
            });
        }
    };
    Ok(PeersQuery {
        state,
        cluster: request.cluster,
        region: request.region,
        after: request.after,
        limit,
    })
}

/// The gRPC form of a leadership view (the content of `GET /meshkit/leaders`).
pub fn leaders_response(view: LeadershipView) -> GetLeadersResponse {
    GetLeadersResponse {
        node: view.node,
        voters: view.voters,
        raft: view.raft.map(|r| proto::RaftState {
            leader: r.leader,
            term: r.term,
            voters: r.voters,
            applied_index: r.applied_index,
        }),
        table: view
            .table
            .into_iter()
            .map(|l| proto::TableLease {
                scope: l.scope,
                holder: l.holder,
                token: l.token,
                term: l.term,
                expires_in_ms: l.expires_in_ms,
            })
            .collect(),
        held: view
            .held
            .into_iter()
            .map(|l| proto::HeldLease {
                scope: l.scope,
                token: l.token,
                term: l.term,
                expires_in_ms: l.expires_in_ms,
                transferring: l.transferring,
            })
            .collect(),
        campaign: view.campaign,
        last_seq: view.last_seq,
    }
}

/// The gRPC form of a feed entry.
pub fn leadership_event(entry: FeedEntry) -> LeadershipEvent {
    use proto::{
        Acquired, Expired, Granted, LeaseExpired, LeaseReleased, Lost, RaftLeader, Released,
        Renewed, Transferred, Voters,
    };
    let change = match entry.change {
        Change::Acquired { scope, token, term } => {
            LeadershipChange::Acquired(Acquired { scope, token, term })
        }
        Change::Renewed { scope, token } => LeadershipChange::Renewed(Renewed { scope, token }),
        Change::Lost {
            scope,
            token,
            reason,
        } => LeadershipChange::Lost(Lost {
            scope,
            token,
            reason,
        }),
        Change::Transferred {
            scope,
            token,
            to,
            new_token,
        } => LeadershipChange::Transferred(Transferred {
            scope,
            token,
            to,
            new_token,
        }),
        Change::Expired { scope, token } => LeadershipChange::Expired(Expired { scope, token }),
        Change::Released { scope, token } => LeadershipChange::Released(Released { scope, token }),
        Change::RaftLeader { leader, term } => {
            LeadershipChange::RaftLeader(RaftLeader { leader, term })
        }
        Change::Granted {
            scope,
            holder,
            token,
            term,
        } => LeadershipChange::Granted(Granted {
            scope,
            holder,
            token,
            term,
        }),
        Change::LeaseReleased {
            scope,
            holder,
            token,
        } => LeadershipChange::LeaseReleased(LeaseReleased {
            scope,
            holder,
            token,
        }),
        Change::LeaseExpired {
            scope,
            holder,
            token,
        } => LeadershipChange::LeaseExpired(LeaseExpired {
            scope,
            holder,
            token,
        }),
        Change::Voters { voters } => LeadershipChange::Voters(Voters { voters }),
    };
    LeadershipEvent {
        seq: entry.seq,
        node: entry.node,
        unix_ms: entry.unix_ms,
        change: Some(change),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use meshkit_runtime::lease_host::{CoordinatorStatus, HeldLease, MoveInFlight, ShardStatus};

    fn view(coordinator: Option<CoordinatorStatus>) -> LeadershipView {
        LeadershipView {
            node: 1,
            voters: vec![1, 2, 3],
            // Not a voter: the shards listed are the ones it holds.
            raft: None,
            table: Vec::new(),
            held: vec![HeldLease {
                scope: "shard/orders/2".to_owned(),
                token: 7,
                term: 1,
                expires_in_ms: 2_000,
                transferring: false,
            }],
            campaign: Vec::new(),
            last_seq: 0,
            shards: Some(ShardStatus {
                configured: 2,
                coordinator_node: Some(1),
                member: None,
                coordinator,
                counters: None,
            }),
        }
    }

    fn entry(seq: u64, change: Change) -> FeedEntry {
        FeedEntry {
            seq,
            node: 7,
            unix_ms: 1,
            change,
        }
    }

    fn beat_of(event: &LeadershipEvent) -> Option<u64> {
        match &event.change {
            Some(LeadershipChange::Heartbeat(h)) => Some(h.last_seq),
            _ => None,
        }
    }

    /// On virtual time: an idle feed stream sends a heartbeat (seq 0, not an entry) every
    /// `heartbeat` of silence, carrying the last entry covered; an entry passed over (not a
    /// shard's, on the shard stream) moves that point but does not restart the silence; an
    /// entry sent does.
    #[tokio::test(start_paused = true)]
    async fn idle_feed_streams_send_heartbeats_with_the_last_entry_covered() {
        let beat = std::time::Duration::from_secs(5);
        let (tx, rx) = broadcast::channel(16);
        let live = Live {
            node: 7,
            last: 3,
            keep: shard_entries,
            heartbeat: beat,
            method: path::WATCH_SHARDS,
        };
        let mut events = Box::pin(live_events(rx, live));
        let start = tokio::time::Instant::now();
        let first = events.next().await.expect("an item").expect("no error");
        assert_eq!(start.elapsed(), beat);
        assert_eq!((first.seq, first.node, beat_of(&first)), (0, 7, Some(3)));
        assert!(first.unix_ms > 0, "{first:?}");

        let sender = tokio::spawn(async move {
            tokio::time::sleep(std::time::Duration::from_secs(2)).await;
            let raft = Change::RaftLeader {
                leader: Some(1),
                term: 2,
            };
            tx.send(entry(4, raft)).expect("a subscriber");
            tokio::time::sleep(std::time::Duration::from_secs(4)).await;
            let shard = Change::Acquired {
                scope: "shard/orders/1".to_owned(),
                token: 9,
                term: 2,
            };
            tx.send(entry(5, shard)).expect("a subscriber");
            tx
        });
        // Entry 4 is passed over: the next heartbeat comes on time and covers it.
        let second = events.next().await.expect("an item").expect("no error");
        assert_eq!(start.elapsed(), beat * 2);
        assert_eq!(beat_of(&second), Some(4), "{second:?}");
        // Entry 5 (a shard's) is sent, and the silence starts again after it.
        let sent = events.next().await.expect("an item").expect("no error");
        assert_eq!((sent.seq, beat_of(&sent)), (5, None), "{sent:?}");
        assert_eq!(start.elapsed(), std::time::Duration::from_secs(11));
        let third = events.next().await.expect("an item").expect("no error");
        assert_eq!(start.elapsed(), std::time::Duration::from_secs(16));
        assert_eq!(beat_of(&third), Some(5), "{third:?}");
        drop(sender.await.expect("the sender"));
        // The feed is gone (the driver stopped): the stream ends with UNAVAILABLE.
        let end = events.next().await.expect("an item").expect_err("an error");
        assert_eq!(end.code(), tonic::Code::Unavailable, "{end:?}");
        assert!(events.next().await.is_none());
    }

    /// `ListShards` carries the acting coordinator's moves under way, as `GET /meshkit/shards`
    /// does under `status.coordinator.in_flight`, and says when the node's coordinator does not
    /// act (then it knows no moves).
    #[test]
    fn list_shards_carries_the_moves_in_flight_of_the_acting_coordinator() {
        let moves = vec![
            MoveInFlight {
                shard: "shard/orders/0".to_owned(),
                from: Some(2),
                to: 3,
                age_ms: 120,
            },
            MoveInFlight {
                shard: "shard/orders/1".to_owned(),
                from: None,
                to: 1,
                age_ms: 5,
            },
        ];
        let acting = view(Some(CoordinatorStatus {
            term: 4,
            members: vec![1, 2, 3],
            draining: Vec::new(),
            owned: [(1, 0), (2, 1), (3, 0)].into(),
            unowned: 1,
            bounds: Some((0, 1)),
            imbalance: 1,
            in_flight: moves.clone(),
            idle: false,
        }));
        let answer = list_shards_of(&acting);
        assert!(answer.coordinating);
        let got: Vec<(String, Option<u64>, u64, u64)> = answer
            .in_flight
            .iter()
            .map(|m| (m.shard.clone(), m.from, m.to, m.age_ms))
            .collect();
        let want: Vec<(String, Option<u64>, u64, u64)> = moves
            .into_iter()
            .map(|m| (m.shard, m.from, m.to, m.age_ms))
            .collect();
        assert_eq!(got, want);
        assert_eq!(answer.shards.len(), 1, "{answer:?}");

        let elsewhere = list_shards_of(&view(None));
        assert!(
            !elsewhere.coordinating && elsewhere.in_flight.is_empty(),
            "{elsewhere:?}"
        );
    }
}
