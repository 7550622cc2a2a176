//! The gRPC contract of the control API, the part client and server share: the prost messages
//! of `meshkit.control.v1` ([`proto`]) and of `grpc.health.v1` ([`health`]), the path of every
//! method ([`path`]) and how to tell a gRPC exchange from plain HTTP ([`is_grpc`]).
//!
//! `build.rs` generates them from `proto/` (protox and tonic-prost-build, no protoc). It also
//! writes the tonic client and server halves over these messages, which this crate does not
//! include (they need tonic's client or server): `meshkit-client` and `meshkit-control` include
//! them from the directory this crate's build script announces (`links = "meshkit-api"`,
//! `DEP_MESHKIT_API_GENERATED`).

use http::{HeaderMap, header};

pub mod proto;

/// The service's full name.
pub const SERVICE: &str = "meshkit.control.v1.Control";

/// The messages of `grpc.health.v1`, generated from `proto/grpc/health/v1/health.proto` (the
/// upstream contract's `Check` and `Watch`) when the crate builds (see `build.rs`).
pub mod health {
    #![allow(
        // Generated code: its paths and derives are prost's.
        unused_qualifications,
        clippy::use_self,
        clippy::derive_partial_eq_without_eq,
        clippy::doc_markdown
    )]

    include!(concat!(env!("OUT_DIR"), "/messages/grpc.health.v1.rs"));
}

/// The HTTP paths of the service's methods (`/{SERVICE}/{method}`), as [`ROUTE_PERMISSIONS`] lists
/// them.
///
/// [`ROUTE_PERMISSIONS`]: crate::routes::ROUTE_PERMISSIONS
pub mod path {
    /// `ListPeers`.
    pub const LIST_PEERS: &str = "/meshkit.control.v1.Control/ListPeers";
    /// `GetLeaders`.
    pub const GET_LEADERS: &str = "/meshkit.control.v1.Control/GetLeaders";
    /// `TransferLease`.
    pub const TRANSFER_LEASE: &str = "/meshkit.control.v1.Control/TransferLease";
    /// `Drain`.
    pub const DRAIN: &str = "/meshkit.control.v1.Control/Drain";
    /// `Resume`.
    pub const RESUME: &str = "/meshkit.control.v1.Control/Resume";
    /// `Rebalance`.
    pub const REBALANCE: &str = "/meshkit.control.v1.Control/Rebalance";
    /// `WatchLeadership`.
    pub const WATCH_LEADERSHIP: &str = "/meshkit.control.v1.Control/WatchLeadership";
    /// `ListShards`.
    pub const LIST_SHARDS: &str = "/meshkit.control.v1.Control/ListShards";
    /// `WatchShards`.
    pub const WATCH_SHARDS: &str = "/meshkit.control.v1.Control/WatchShards";
    /// `ListClusters`.
    pub const LIST_CLUSTERS: &str = "/meshkit.control.v1.Control/ListClusters";
    /// `ListVersions`.
    pub const LIST_VERSIONS: &str = "/meshkit.control.v1.Control/ListVersions";
    /// `AcquireLease`.
    pub const ACQUIRE_LEASE: &str = "/meshkit.control.v1.Control/AcquireLease";
    /// `RenewLease`.
    pub const RENEW_LEASE: &str = "/meshkit.control.v1.Control/RenewLease";
    /// `ReleaseLease`.
    pub const RELEASE_LEASE: &str = "/meshkit.control.v1.Control/ReleaseLease";
    /// `Join`.
    pub const JOIN: &str = "/meshkit.control.v1.Control/Join";
    /// `Leave`.
    pub const LEAVE: &str = "/meshkit.control.v1.Control/Leave";
    /// `ForceLeave`.
    pub const FORCE_LEAVE: &str = "/meshkit.control.v1.Control/ForceLeave";
    /// `AddVoter`.
    pub const ADD_VOTER: &str = "/meshkit.control.v1.Control/AddVoter";
    /// `RemoveVoter`.
    pub const REMOVE_VOTER: &str = "/meshkit.control.v1.Control/RemoveVoter";
    /// `QueueEnqueue`.
    pub const QUEUE_ENQUEUE: &str = "/meshkit.control.v1.Control/QueueEnqueue";
    /// `QueueLease`.
    pub const QUEUE_LEASE: &str = "/meshkit.control.v1.Control/QueueLease";
    /// `QueueHeartbeat`.
    pub const QUEUE_HEARTBEAT: &str = "/meshkit.control.v1.Control/QueueHeartbeat";
    /// `QueueComplete`.
    pub const QUEUE_COMPLETE: &str = "/meshkit.control.v1.Control/QueueComplete";
    /// `QueueFail`.
    pub const QUEUE_FAIL: &str = "/meshkit.control.v1.Control/QueueFail";
    /// `QueueDrain`.
    pub const QUEUE_DRAIN: &str = "/meshkit.control.v1.Control/QueueDrain";
    /// `QueueRestore`.
    pub const QUEUE_RESTORE: &str = "/meshkit.control.v1.Control/QueueRestore";
    /// `ListQueues`.
    pub const LIST_QUEUES: &str = "/meshkit.control.v1.Control/ListQueues";
    /// `GetBackpressure`.
    pub const GET_BACKPRESSURE: &str = "/meshkit.control.v1.Control/GetBackpressure";
    /// `WatchBackpressure`.
    pub const WATCH_BACKPRESSURE: &str = "/meshkit.control.v1.Control/WatchBackpressure";
    /// `PlanChaos`.
    pub const PLAN_CHAOS: &str = "/meshkit.control.v1.Control/PlanChaos";
    /// `StartChaos`.
    pub const START_CHAOS: &str = "/meshkit.control.v1.Control/StartChaos";
    /// `ListChaos`.
    pub const LIST_CHAOS: &str = "/meshkit.control.v1.Control/ListChaos";
    /// `AbortChaos`.
    pub const ABORT_CHAOS: &str = "/meshkit.control.v1.Control/AbortChaos";
    /// `EngageChaosKillSwitch`.
    pub const ENGAGE_CHAOS_KILL_SWITCH: &str = "/meshkit.control.v1.Control/EngageChaosKillSwitch";
    /// `RearmChaosKillSwitch`.
    pub const REARM_CHAOS_KILL_SWITCH: &str = "/meshkit.control.v1.Control/RearmChaosKillSwitch";
    /// `ListProbes`.
    pub const LIST_PROBES: &str = "/meshkit.control.v1.Control/ListProbes";
    /// `grpc.health.v1.Health/Check`.
    pub const HEALTH_CHECK: &str = "/grpc.health.v1.Health/Check";
    /// `grpc.health.v1.Health/Watch`.
    pub const HEALTH_WATCH: &str = "/grpc.health.v1.Health/Watch";

    /// Every method the service answers (the others get `UNIMPLEMENTED`); each has its row in
    /// [`crate::routes::ROUTE_PERMISSIONS`].
    pub const ALL: [&str; 38] = [
        LIST_PEERS,
        GET_LEADERS,
        TRANSFER_LEASE,
        DRAIN,
        RESUME,
        REBALANCE,
        WATCH_LEADERSHIP,
        LIST_SHARDS,
        WATCH_SHARDS,
        LIST_CLUSTERS,
        LIST_VERSIONS,
        ACQUIRE_LEASE,
        RENEW_LEASE,
        RELEASE_LEASE,
        JOIN,
        LEAVE,
        FORCE_LEAVE,
        ADD_VOTER,
        REMOVE_VOTER,
        QUEUE_ENQUEUE,
        QUEUE_LEASE,
        QUEUE_HEARTBEAT,
        QUEUE_COMPLETE,
        QUEUE_FAIL,
        QUEUE_DRAIN,
        QUEUE_RESTORE,
        LIST_QUEUES,
        GET_BACKPRESSURE,
        WATCH_BACKPRESSURE,
        PLAN_CHAOS,
        START_CHAOS,
        LIST_CHAOS,
        ABORT_CHAOS,
        ENGAGE_CHAOS_KILL_SWITCH,
        REARM_CHAOS_KILL_SWITCH,
        LIST_PROBES,
        HEALTH_CHECK,
        HEALTH_WATCH,
    ];

    include!(concat!(env!("OUT_DIR"), "/methods.rs"));

    #[cfg(test)]
    mod tests {
        use std::collections::BTreeSet;

        /// Every method of the `.proto` files has its constant here (and so its row in the
        /// authorization table, which a test of `tests/control_errors.rs` holds to [`ALL`]),
        /// and every constant names a declared method.
        #[test]
        fn every_declared_method_is_listed() {
            let declared: BTreeSet<&str> = super::METHODS.into_iter().collect();
            let listed: BTreeSet<&str> = super::ALL.into_iter().collect();
            assert_eq!(declared, listed);
        }
    }
}

/// Whether a request or response with these headers is gRPC.
pub fn is_grpc(headers: &HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/grpc"))
}
