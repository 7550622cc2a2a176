//! The standard gRPC health service, `grpc.health.v1.Health`, answering from the node's
//! readiness (the rule of `GET /readyz`, [`readiness_of`]).
//!
//! Kubernetes gRPC probes and `grpc_health_probe` speak this protocol, so the node is probed the
//! same way over gRPC as over HTTP. `tonic-health` implements the service too, but it serves
//! statuses that something pushes into it; readiness here is computed from a fresh snapshot on
//! every call, so the handful of lines below replace a reporter task that would have to poll.
//!
//! Services: `""` (the whole node) and `meshkit.control.v1.Control` both answer the node's
//! readiness; any other name is `NOT_FOUND` for `Check` and `SERVICE_UNKNOWN` for `Watch`, as
//! the protocol says. Like `/readyz`, the service needs no credentials.
//!
//! Because anyone may call it, `Watch` is bounded (docs/security.md): the node's readiness
//! is read by one task every [`WATCH_INTERVAL`] while anyone watches and fanned out to every
//! watcher ([`Watchers`]), so a thousand watchers cost what one does; and at most
//! [`MAX_WATCHERS`] streams are open at once (more get `RESOURCE_EXHAUSTED`), at most
//! [`MAX_WATCHERS_PER_CONNECTION`] of them on one connection, so one address's anonymous
//! connections cannot hold every slot.

use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Weak};
use std::time::Duration;

use futures_util::stream::{self, Stream, StreamExt};
use tokio::sync::{Mutex, OwnedSemaphorePermit, Semaphore, watch};
use tonic::{Request, Response, Status};

pub use self::proto::health_check_response::ServingStatus;
pub use self::proto::{HealthCheckRequest, HealthCheckResponse};
use super::server::health_server::Health;
use super::{CallError, SERVICE, path};
use crate::views::readiness_of;
use meshkit_runtime::driver::NodeHandle;

pub use meshkit_api::grpc::health as proto;

/// The service's full name.
pub const HEALTH_SERVICE: &str = "grpc.health.v1.Health";

/// How often the node's readiness is re-read while anyone watches; watchers are sent only
/// changes.
pub const WATCH_INTERVAL: Duration = Duration::from_secs(1);
/// Most `Watch` streams open at once on one node. A watcher costs a task-free stream and a
/// slot in the connection's stream limit; Kubernetes and `grpc_health_probe` hold one per
/// probe, so 1,024 is far beyond honest use while it bounds what anonymous callers hold
/// (without it: 1,024 connections x 100 streams).
pub const MAX_WATCHERS: usize = 1024;

/// Most `Watch` streams one connection holds at once (more get `RESOURCE_EXHAUSTED`). A probe
/// holds one; with 16 anonymous connections per address (`control::admission`), one address
/// holds at most 128 of the [`MAX_WATCHERS`] slots (without it: 16 x 100 streams, all of them).
pub const MAX_WATCHERS_PER_CONNECTION: usize = 8;

/// One connection's share of the `Watch` slots: the control server puts one in the extensions
/// of every request of a connection. A request without one (a router served some other way)
/// is bounded by [`MAX_WATCHERS`] only.
#[derive(Clone, Debug)]
pub struct ConnectionWatchers(Arc<Semaphore>);

impl Default for ConnectionWatchers {
    fn default() -> Self {
        Self(Arc::new(Semaphore::new(MAX_WATCHERS_PER_CONNECTION)))
    }
}

/// The `Watch` streams of one node: the shared reader of its readiness and the slots.
#[derive(Debug)]
pub struct Watchers {
    node: NodeHandle,
    slots: Arc<Semaphore>,
    max: usize,
    /// The sender the reader task owns, while it runs (it stops when the last watcher goes).
    /// Subscribing and the reader's decision to stop both happen under this lock.
    current: Mutex<Weak<watch::Sender<ServingStatus>>>,
    refused: AtomicU64,
    reads: AtomicU64,
}

impl Watchers {
    /// The watchers of `node`, at most [`MAX_WATCHERS`] at once.
    pub fn new(node: NodeHandle) -> Arc<Self> {
        Self::with_capacity(node, MAX_WATCHERS)
    }

    /// The watchers of `node`, at most `max` at once.
    pub fn with_capacity(node: NodeHandle, max: usize) -> Arc<Self> {
        Arc::new(Self {
            node,
            slots: Arc::new(Semaphore::new(max)),
            max,
            current: Mutex::new(Weak::new()),
            refused: AtomicU64::new(0),
            reads: AtomicU64::new(0),
        })
    }

    /// Streams refused because [`MAX_WATCHERS`] were open.
    pub fn refused(&self) -> u64 {
        self.refused.load(Ordering::Relaxed)
    }

    /// Times the shared reader has read the node's readiness.
    pub fn reads(&self) -> u64 {
        self.reads.load(Ordering::Relaxed)
    }

    async fn read(&self) -> ServingStatus {
        self.reads.fetch_add(1, Ordering::Relaxed);
        status(&self.node).await
    }

    /// A slot and the shared readiness, or `None` when every slot is taken (counted).
    async fn subscribe(
        self: &Arc<Self>,
    ) -> Option<(OwnedSemaphorePermit, watch::Receiver<ServingStatus>)> {
        let Ok(slot) = self.slots.clone().try_acquire_owned() else {
            self.refused.fetch_add(1, Ordering::Relaxed);
            return None;
        };
        let mut current = self.current.lock().await;
        if let Some(sender) = current.upgrade() {
            return Some((slot, sender.subscribe()));
        }
        let (sender, receiver) = watch::channel(self.read().await);
        let sender = Arc::new(sender);
        *current = Arc::downgrade(&sender);
        tokio::spawn(self.clone().reader(sender));
        Some((slot, receiver))
    }

    /// Re-reads the readiness every [`WATCH_INTERVAL`] for every watcher, until none is left.
    async fn reader(self: Arc<Self>, sender: Arc<watch::Sender<ServingStatus>>) {
        loop {
            tokio::select! {
                () = sender.closed() => {
                    let mut current = self.current.lock().await;
                    // Someone may have subscribed between `closed` and the lock.
                    if sender.receiver_count() == 0 {
                        *current = Weak::new();
                        return;
                    }
                }
                () = tokio::time::sleep(WATCH_INTERVAL) => {
                    let now = self.read().await;
                    sender.send_if_modified(|last| std::mem::replace(last, now) != now);
                }
            }
        }
    }
}

impl meshkit_api::metrics::Source for Watchers {
    /// The watchers' gauge and counters.
    fn write(&self, families: &mut meshkit_api::metrics::Families<'_, '_>) -> std::fmt::Result {
        use meshkit_api::metrics::catalogue::{
            CONTROL_HEALTH_WATCH_READS, CONTROL_HEALTH_WATCH_REFUSED, CONTROL_HEALTH_WATCHERS,
        };
        let open = self.max.saturating_sub(self.slots.available_permits());
        families.gauge(&CONTROL_HEALTH_WATCHERS, open)?;
        families.counter(&CONTROL_HEALTH_WATCH_REFUSED, self.refused())?;
        families.counter(&CONTROL_HEALTH_WATCH_READS, self.reads())
    }
}

fn known(service: &str) -> bool {
    service.is_empty() || service == SERVICE
}

/// The node's readiness as a serving status; a stopped driver is not serving.
async fn status(node: &NodeHandle) -> ServingStatus {
    match node.snapshot().await {
        Ok(s) if readiness_of(&s).ready => ServingStatus::Serving,
        _ => ServingStatus::NotServing,
    }
}

type StatusStream = Pin<Box<dyn Stream<Item = Result<HealthCheckResponse, Status>> + Send>>;

/// The methods of `grpc.health.v1.Health` over a node.
#[derive(Debug)]
pub(super) struct Methods {
    node: NodeHandle,
    watchers: Arc<Watchers>,
}

impl Methods {
    /// `node`'s health, its `Watch` streams served by `watchers`.
    pub(super) fn new(node: NodeHandle, watchers: Arc<Watchers>) -> Self {
        Self { node, watchers }
    }
}

#[tonic::async_trait]
impl Health for Methods {
    /// `Check`: the node's readiness now.
    async fn check(
        &self,
        request: Request<HealthCheckRequest>,
    ) -> Result<Response<HealthCheckResponse>, Status> {
        let service = request.into_inner().service;
        if !known(&service) {
            return Err(CallError::UnknownService(service).into_status(path::HEALTH_CHECK));
        }
        Ok(Response::new(HealthCheckResponse {
            status: status(&self.node).await as i32,
        }))
    }

    type WatchStream = StatusStream;

    /// `Watch`: the current status at once, then each change (read every [`WATCH_INTERVAL`] by
    /// the shared reader of the watchers) until the client goes away; `RESOURCE_EXHAUSTED` when
    /// [`MAX_WATCHERS`] streams are open, or [`MAX_WATCHERS_PER_CONNECTION`] on the request's
    /// connection.
    async fn watch(
        &self,
        request: Request<HealthCheckRequest>,
    ) -> Result<Response<StatusStream>, Status> {
        let watchers = &self.watchers;
        let share = request.extensions().get::<ConnectionWatchers>().cloned();
        let service = request.into_inner().service;
        let share = match share.map(|s| s.0.try_acquire_owned()) {
            None => None,
            Some(Ok(permit)) => Some(permit),
            Some(Err(_)) => {
                watchers.refused.fetch_add(1, Ordering::Relaxed);
                return Err(Status::resource_exhausted(format!(
                    "at most {MAX_WATCHERS_PER_CONNECTION} health watchers on one \
                     connection; retry later or use Check"
                )));
            }
        };
        let Some((slot, receiver)) = watchers.subscribe().await else {
            return Err(Status::resource_exhausted(format!(
                "at most {} health watchers at once; retry later or use Check",
                watchers.max
            )));
        };
        // Both slots are held as long as the stream stays open.
        let slot = (slot, share);
        let updates: StatusStream = if known(&service) {
            Box::pin(stream::unfold(
                (slot, receiver, true),
                |(slot, mut receiver, first)| async move {
                    // The sender outlives every receiver (the reader stops only when none is
                    // left): an error here means the node is shutting down.
                    if !first {
                        receiver.changed().await.ok()?;
                    }
                    let now = *receiver.borrow_and_update();
                    let answer = HealthCheckResponse { status: now as i32 };
                    Some((Ok(answer), (slot, receiver, false)))
                },
            ))
        } else {
            let unknown = HealthCheckResponse {
                status: ServingStatus::ServiceUnknown as i32,
            };
            // The slot is held as long as the stream stays open.
            let hold = stream::pending().map(move |x| {
                let _slot = &slot;
                x
            });
            Box::pin(stream::iter([Ok(unknown)]).chain(hold))
        };
        Ok(Response::new(updates))
    }
}
