//! How the service's failures, and HTTP answers to gRPC requests, become gRPC statuses.

use axum::body::Body;
use axum::extract::Request;
use axum::http::{StatusCode, header};
use axum::middleware::Next;
use axum::response::Response;
use meshkit::lease::{LeaseError, ScopeError};
use meshkit::membership::ForceLeaveError;
use meshkit::node::CommandError;
use meshkit_api::grpc::is_grpc;
use thiserror::Error;
use tonic::{Code, Status};

use crate::membership::MembershipError;
use crate::queues::QueueRefusal;
use meshkit::queue::QueueError;
use meshkit_runtime::driver::{DriverStopped, LeadershipError};
use meshkit_runtime::queue_host::QueueCallError;

/// The most of an HTTP error body read to build a gRPC message from it, in bytes.
pub const MAX_ERROR_BODY_BYTES: usize = 4096;

/// Why a call of the service failed; each variant's doc names its gRPC status code.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum CallError {
    /// `INVALID_ARGUMENT`: a scope name that does not parse (caller misuse; nothing was done).
    #[error("field `scope` ({value:?}): {source}")]
    InvalidScope {
        /// The name sent.
        value: String,
        /// Why it was refused.
        source: ScopeError,
    },
    /// `INVALID_ARGUMENT`: a `PeerState` number this node does not know (caller misuse).
    #[error("field `state`: {0} is not a PeerState")]
    UnknownState(i32),
    /// `INVALID_ARGUMENT`: a page size over the bound (caller misuse).
    #[error("field `limit`: {limit} is over the maximum page size {max}")]
    PageSize {
        /// The size asked for.
        limit: u32,
        /// [`MAX_PAGE`](crate::views::MAX_PAGE).
        max: usize,
    },
    /// `INVALID_ARGUMENT`: a message field the call needs is absent (caller misuse; nothing
    /// was done).
    #[error("field `{0}` is required")]
    MissingField(&'static str),
    /// `INVALID_ARGUMENT`: a transfer to node 0 (caller misuse; nothing was done).
    #[error("field `to`: expected a node id > 0")]
    ZeroTarget,
    /// `NOT_FOUND`: a health check of a service this server does not offer.
    #[error(
        "field `service`: no service named {0:?} here (ask about \"\" or meshkit.control.v1.Control)"
    )]
    UnknownService(String),
    /// `OUT_OF_RANGE`: a resume point in another node's feed (its numbers mean nothing here).
    #[error("field `node`: the resume point is in node {feed}'s feed, and this is node {node}")]
    ForeignFeed {
        /// The node named in the request.
        feed: u64,
        /// The answering node.
        node: u64,
    },
    /// `RESOURCE_EXHAUSTED`: a watcher fell too far behind the feed; it resumes after `last`.
    #[error("{missed} leadership events were missed; resume with after_seq = {last}")]
    Lagged {
        /// Entries it missed.
        missed: u64,
        /// The last entry it was sent (or its resume point).
        last: u64,
    },
    /// The node's answer; the code depends on the variant:
    ///
    /// * `NOT_FOUND`: the node runs no leadership;
    /// * `OUT_OF_RANGE`: the feed no longer holds the resume point (or never did);
    /// * `UNAVAILABLE`: the driver has stopped, no voter quorum answered, or too many requests
    ///   are in flight (retry later);
    /// * `FAILED_PRECONDITION`: this node does not hold the lease, someone else does, or no
    ///   lease exists on the scope (retry only once that changed);
    /// * `ABORTED`: a conflicting request raced this one (a request in flight on the scope, a
    ///   newer grant, the scope taken): retry from a fresh read;
    /// * `INVALID_ARGUMENT`: a transfer to the holder itself, a TTL out of range;
    /// * `RESOURCE_EXHAUSTED`: the lease table is full.
    #[error(transparent)]
    Leadership(#[from] LeadershipError),
    /// A membership call refused, as its HTTP twin refuses it; the code depends on the variant:
    ///
    /// * `INVALID_ARGUMENT`: a field the node cannot take, or a force-leave of the node itself;
    /// * `NOT_FOUND`: a force-leave of a member the node does not know; a voter change on a node
    ///   without `[leadership]`;
    /// * `FAILED_PRECONDITION`: a force-leave of a member not held dead (it may still answer);
    ///   a voter change the leader refused (quorum, one pending, not a joining voter), or asked
    ///   of a node that does not lead (the message names the leader and its control address);
    /// * `UNAVAILABLE`: the driver has stopped.
    #[error(transparent)]
    Membership(#[from] MembershipError),
    /// A task-queue call refused, as its HTTP twin refuses it; the code depends on the variant:
    ///
    /// * `INVALID_ARGUMENT`: a shard number or name the queue does not have, a payload over the
    ///   bound, a lease's `max` out of 1..=256 (nothing changed);
    /// * `NOT_FOUND`: no such queue, item or shard queue, or no `[queues]` on the node;
    /// * `ABORTED`: a stale ownership token (the item is another's now: stop working on it);
    /// * `UNAVAILABLE`: no owner known, the owner rebuilding, a request that found the old
    ///   owner, the driver stopped (retry shortly);
    /// * `RESOURCE_EXHAUSTED`: the queue is full, or too many requests are in flight;
    /// * `DEADLINE_EXCEEDED`: no answer in time (the call may have been applied).
    #[error(transparent)]
    Queue(#[from] QueueRefusal),
}

impl From<DriverStopped> for CallError {
    fn from(stopped: DriverStopped) -> Self {
        Self::Leadership(stopped.into())
    }
}

impl CallError {
    /// The gRPC status code.
    pub fn code(&self) -> Code {
        match self {
            Self::InvalidScope { .. }
            | Self::MissingField(_)
            | Self::ZeroTarget
            | Self::UnknownState(_)
            | Self::PageSize { .. } => Code::InvalidArgument,
            Self::UnknownService(_) => Code::NotFound,
            Self::ForeignFeed { .. } => Code::OutOfRange,
            Self::Lagged { .. } => Code::ResourceExhausted,
            Self::Queue(e) => queue_code(e),
            Self::Membership(e) => match e {
                MembershipError::BadField(_)
                | MembershipError::ForceLeave(ForceLeaveError::OwnNode { .. }) => {
                    Code::InvalidArgument
                }
                MembershipError::ForceLeave(ForceLeaveError::UnknownMember { .. })
                | MembershipError::NoLeadership(_) => Code::NotFound,
                MembershipError::Stopped => Code::Unavailable,
                MembershipError::ForceLeave(_)
                | MembershipError::VoterRefused(_)
                | MembershipError::NotLeader(_) => Code::FailedPrecondition,
                // A refusal added after this mapping: the call failed, nothing more to say.
                _ => Code::Internal,
            },
            Self::Leadership(e) => match e {
                LeadershipError::Disabled => Code::NotFound,
                LeadershipError::Gap(_) => Code::OutOfRange,
                LeadershipError::Stopped(_) => Code::Unavailable,
                LeadershipError::Lease(lease) => lease_code(lease),
                LeadershipError::Draining => Code::Unavailable,
                LeadershipError::Campaigned { .. } => Code::FailedPrecondition,
                LeadershipError::Shards(shards) => match shards {
                    CommandError::NotCoordinator { .. } | CommandError::Rebalance(_) => {
                        Code::FailedPrecondition
                    }
                    _ => Code::NotFound,
                },
                // A refusal added to the runtime after this mapping: the server cannot say
                // more than that the call failed.
                _ => Code::Internal,
            },
        }
    }

    /// The status a client gets for a call of `method`; logged at debug level.
    pub fn into_status(self, method: &str) -> Status {
        let code = self.code();
        tracing::debug!(method, ?code, error = %self, "gRPC call failed");
        Status::new(code, self.to_string())
    }
}

fn queue_code(error: &QueueRefusal) -> Code {
    match error {
        QueueRefusal::ShardOutOfRange { .. } | QueueRefusal::BadShard { .. } => {
            Code::InvalidArgument
        }
        QueueRefusal::UnknownQueue { .. } => Code::NotFound,
        QueueRefusal::Call(QueueCallError::Disabled) => Code::NotFound,
        QueueRefusal::Call(QueueCallError::Stopped(_)) => Code::Unavailable,
        QueueRefusal::Call(QueueCallError::Queue(q)) => match q {
            QueueError::StaleFence { .. } | QueueError::StaleLease { .. } => Code::Aborted,
            QueueError::UnknownItem { .. } | QueueError::UnknownShard | QueueError::NoQueues => {
                Code::NotFound
            }
            QueueError::PayloadTooLarge { .. } | QueueError::OutOfRange { .. } => {
                Code::InvalidArgument
            }
            QueueError::Full { .. } | QueueError::Overloaded { .. } => Code::ResourceExhausted,
            QueueError::NotOwner { .. } | QueueError::NoOwner | QueueError::Recovering => {
                Code::Unavailable
            }
            QueueError::TimedOut => Code::DeadlineExceeded,
            _ => Code::Internal,
        },
        _ => Code::Internal,
    }
}

fn lease_code(error: &LeaseError) -> Code {
    match error {
        LeaseError::NoQuorum { .. } | LeaseError::Overloaded { .. } => Code::Unavailable,
        LeaseError::NotHeld { .. }
        | LeaseError::NotHolder { .. }
        | LeaseError::UnknownScope { .. } => Code::FailedPrecondition,
        LeaseError::Held { .. } | LeaseError::StaleToken { .. } | LeaseError::InFlight { .. } => {
            Code::Aborted
        }
        LeaseError::InvalidTarget { .. } | LeaseError::InvalidTtl { .. } => Code::InvalidArgument,
        LeaseError::TableFull { .. } => Code::ResourceExhausted,
        _ => Code::Unknown,
    }
}

/// The gRPC code for an HTTP status, as gRPC's own HTTP-to-gRPC mapping has it (gRPC's
/// doc/http-grpc-status-mapping.md), plus 405 (a method the router does not take).
fn code_for_http(status: StatusCode) -> Code {
    match status {
        StatusCode::BAD_REQUEST => Code::Internal,
        StatusCode::UNAUTHORIZED => Code::Unauthenticated,
        StatusCode::FORBIDDEN => Code::PermissionDenied,
        StatusCode::NOT_FOUND | StatusCode::METHOD_NOT_ALLOWED => Code::Unimplemented,
        StatusCode::TOO_MANY_REQUESTS
        | StatusCode::BAD_GATEWAY
        | StatusCode::SERVICE_UNAVAILABLE
        | StatusCode::GATEWAY_TIMEOUT => Code::Unavailable,
        _ => Code::Unknown,
    }
}

/// Middleware around the control router: a gRPC request (`content-type: application/grpc*`)
/// answered in plain HTTP by a layer before the service (the authorization layer's 401 and
/// 403, a 404 for an unknown service) gets a trailers-only gRPC answer instead: HTTP 200 with
/// `grpc-status` (401 -> `UNAUTHENTICATED` 16, 403 -> `PERMISSION_DENIED` 7, 404 ->
/// `UNIMPLEMENTED` 12) and `grpc-message` from the JSON body's `error` (plus its
/// `required_scope`). The `WWW-Authenticate` challenge is kept. Other requests pass untouched.
///
/// Without it a tonic client reads the JSON body as a gRPC frame and reports `INTERNAL`.
pub async fn http_errors_as_status(request: Request, next: Next) -> Response {
    let grpc = is_grpc(request.headers());
    let response = next.run(request).await;
    if !grpc || is_grpc(response.headers()) {
        return response;
    }
    let http_status = response.status();
    let code = code_for_http(http_status);
    let challenge = response.headers().get(header::WWW_AUTHENTICATE).cloned();
    let body = axum::body::to_bytes(response.into_body(), MAX_ERROR_BODY_BYTES)
        .await
        .unwrap_or_default();
    let message = match serde_json::from_slice::<serde_json::Value>(&body) {
        Ok(json) => match (json["error"].as_str(), json["required_scope"].as_str()) {
            (Some(error), Some(scope)) => format!("{error} (requires {scope})"),
            (Some(error), None) => error.to_owned(),
            _ => format!("HTTP {http_status}"),
        },
        Err(_) => format!("HTTP {http_status}"),
    };
    tracing::debug!(%http_status, ?code, %message, "HTTP answer to a gRPC request");
    let mut answer = Status::new(code, message).into_http::<Body>();
    if let Some(challenge) = challenge {
        answer
            .headers_mut()
            .insert(header::WWW_AUTHENTICATE, challenge);
    }
    answer
}

#[cfg(test)]
mod tests {
    use meshkit::lease::Scope;
    use meshkit::{NodeId, lease::FencingToken};

    use super::*;

    #[test]
    fn lease_conflicts_quorum_and_bad_input_get_their_codes() {
        let scope = Scope::global_control();
        let cases = [
            (CallError::from(LeadershipError::Disabled), Code::NotFound),
            (
                CallError::from(LeadershipError::Lease(LeaseError::NoQuorum {
                    scope: scope.clone(),
                    attempts: 3,
                })),
                Code::Unavailable,
            ),
            (
                CallError::from(LeadershipError::Lease(LeaseError::NotHeld {
                    scope: scope.clone(),
                })),
                Code::FailedPrecondition,
            ),
            (
                CallError::from(LeadershipError::Lease(LeaseError::StaleToken {
                    scope: scope.clone(),
                    presented: FencingToken::new(1),
                    current: FencingToken::new(2),
                })),
                Code::Aborted,
            ),
            (
                CallError::from(LeadershipError::Lease(LeaseError::InvalidTarget {
                    scope,
                    to: NodeId::new(0),
                })),
                Code::InvalidArgument,
            ),
            (
                CallError::InvalidScope {
                    value: "Not A Scope".to_owned(),
                    source: Scope::new("Not A Scope").unwrap_err(),
                },
                Code::InvalidArgument,
            ),
            (CallError::from(DriverStopped), Code::Unavailable),
            (
                CallError::from(LeadershipError::Gap(meshkit_runtime::lease_host::FeedGap {
                    oldest: Some(5),
                })),
                Code::OutOfRange,
            ),
        ];
        for (error, code) in cases {
            let status = error.into_status("/test");
            assert_eq!(status.code(), code, "{status:?}");
        }
    }

    /// A gRPC request refused in HTTP gets a trailers-only gRPC answer with the JSON error as
    /// its message; a plain HTTP request keeps its HTTP answer.
    #[tokio::test]
    async fn http_refusals_of_grpc_calls_become_trailers_only_statuses() {
        use axum::response::IntoResponse as _;
        use tower::ServiceExt as _;

        let router = axum::Router::new()
            .route(
                "/refused",
                axum::routing::post(|| async {
                    (
                        StatusCode::UNAUTHORIZED,
                        [(header::WWW_AUTHENTICATE, "Bearer realm=\"meshkit\"")],
                        axum::Json(serde_json::json!({
                            "error": "no credentials",
                            "required_scope": "mesh.observe",
                        })),
                    )
                        .into_response()
                }),
            )
            .layer(axum::middleware::from_fn(http_errors_as_status));
        let call = |content_type: &'static str, path: &'static str| {
            let router = router.clone();
            async move {
                router
                    .oneshot(
                        http::Request::post(path)
                            .header(header::CONTENT_TYPE, content_type)
                            .body(Body::empty())
                            .unwrap(),
                    )
                    .await
                    .unwrap()
            }
        };
        let grpc = call("application/grpc", "/refused").await;
        assert_eq!(grpc.status(), StatusCode::OK);
        let status = Status::from_header_map(grpc.headers()).expect("a grpc-status header");
        assert_eq!(status.code(), Code::Unauthenticated);
        assert_eq!(status.message(), "no credentials (requires mesh.observe)");
        assert!(grpc.headers().contains_key(header::WWW_AUTHENTICATE));

        let unknown = call("application/grpc+proto", "/no.such.Service/Method").await;
        let status = Status::from_header_map(unknown.headers()).expect("a grpc-status header");
        assert_eq!(status.code(), Code::Unimplemented);

        let plain = call("application/json", "/refused").await;
        assert_eq!(plain.status(), StatusCode::UNAUTHORIZED);
        assert!(Status::from_header_map(plain.headers()).is_none());
    }

    #[test]
    fn http_statuses_map_as_grpc_prescribes() {
        assert_eq!(
            code_for_http(StatusCode::UNAUTHORIZED),
            Code::Unauthenticated
        );
        assert_eq!(code_for_http(StatusCode::FORBIDDEN), Code::PermissionDenied);
        assert_eq!(code_for_http(StatusCode::NOT_FOUND), Code::Unimplemented);
    }
}
