//! The standard gRPC health service, `grpc.health.v1.Health`, answering from the node's
//! readiness (the rule of `GET /readyz`, [`Readiness::of`]).
//!
//! Kubernetes gRPC probes and `grpc_health_probe` speak this protocol, so the node is probed the
//! same way over gRPC as over HTTP. `tonic-health` implements the service too, but it serves
//! statuses that something pushes into it; readiness here is computed from a fresh snapshot on
//! every call, so the handful of lines below replace a reporter task that would have to poll.
//!
//! Services: `""` (the whole node) and `meshkit.control.v1.Control` both answer the node's
//! readiness; any other name is `NOT_FOUND` for `Check` and `SERVICE_UNKNOWN` for `Watch`, as
//! the protocol says. Like `/readyz`, the service needs no credentials.

use std::pin::Pin;
use std::time::Duration;

use axum::body::Body;
use futures_util::stream::{self, Stream, StreamExt};
use tonic::Status;
use tonic_prost::ProstCodec;

use super::{MAX_REQUEST_BYTES, SERVICE, unary};
use crate::control::views::Readiness;
use crate::driver::NodeHandle;

/// The service's full name.
pub const HEALTH_SERVICE: &str = "grpc.health.v1.Health";

/// How often a `Watch` re-reads the node's readiness; it sends only changes.
pub const WATCH_INTERVAL: Duration = Duration::from_secs(1);

/// `HealthCheckRequest`, as upstream's `grpc/health/v1/health.proto`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct HealthCheckRequest {
    /// The service asked about (`""`: the whole server).
    #[prost(string, tag = "1")]
    pub service: String,
}

/// `HealthCheckResponse`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct HealthCheckResponse {
    /// A [`ServingStatus`].
    #[prost(enumeration = "ServingStatus", tag = "1")]
    pub status: i32,
}

/// `HealthCheckResponse.ServingStatus`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, prost::Enumeration)]
#[repr(i32)]
pub enum ServingStatus {
    /// Not known.
    Unknown = 0,
    /// Ready for traffic.
    Serving = 1,
    /// Not ready (see `GET /readyz` for the reasons).
    NotServing = 2,
    /// `Watch` only: the service name is not one this server knows.
    ServiceUnknown = 3,
}

fn known(service: &str) -> bool {
    service.is_empty() || service == SERVICE
}

/// The node's readiness as a serving status; a stopped driver is not serving.
async fn status(node: &NodeHandle) -> ServingStatus {
    match node.snapshot().await {
        Ok(s) if Readiness::of(&s).ready => ServingStatus::Serving,
        _ => ServingStatus::NotServing,
    }
}

type StatusStream = Pin<Box<dyn Stream<Item = Result<HealthCheckResponse, Status>> + Send>>;

/// `Check`: the node's readiness now.
pub(super) async fn check(
    request: http::Request<Body>,
    node: NodeHandle,
) -> http::Response<tonic::body::Body> {
    unary(request, |r: HealthCheckRequest| {
        let node = node.clone();
        async move {
            if !known(&r.service) {
                return Err(super::CallError::UnknownService(r.service));
            }
            Ok(HealthCheckResponse {
                status: status(&node).await as i32,
            })
        }
    })
    .await
}

/// The current status at once, then each change, read every [`WATCH_INTERVAL`] until the
/// client goes away.
pub(super) async fn watch(
    request: http::Request<Body>,
    node: NodeHandle,
) -> http::Response<tonic::body::Body> {
    let mut grpc =
        tonic::server::Grpc::new(ProstCodec::<HealthCheckResponse, HealthCheckRequest>::new())
            .max_decoding_message_size(MAX_REQUEST_BYTES);
    let handler = tower::service_fn(|r: tonic::Request<HealthCheckRequest>| {
        let node = node.clone();
        async move {
            let service = r.into_inner().service;
            let updates: StatusStream = if known(&service) {
                Box::pin(stream::unfold(
                    (node, None::<ServingStatus>),
                    |(node, last)| async move {
                        loop {
                            if last.is_some() {
                                tokio::time::sleep(WATCH_INTERVAL).await;
                            }
                            let now = status(&node).await;
                            if Some(now) != last {
                                let answer = HealthCheckResponse { status: now as i32 };
                                return Some((Ok(answer), (node, Some(now))));
                            }
                        }
                    },
                ))
            } else {
                let unknown = HealthCheckResponse {
                    status: ServingStatus::ServiceUnknown as i32,
                };
                Box::pin(stream::iter([Ok(unknown)]).chain(stream::pending()))
            };
            Ok::<_, Status>(tonic::Response::new(updates))
        }
    });
    grpc.server_streaming(handler, request).await
}
