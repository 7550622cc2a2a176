//! The route + permission table of the control API: which HTTP route and which gRPC method needs
//! which [`Permission`], shared by the server (which enforces it, `meshkit_control::auth`) and
//! anyone who needs to know what a call will require (clients, docs tests).
//!
//! **A route missing from the table needs [`UNLISTED_PERMISSION`]** (`mesh.admin`): a new route
//! fails closed until someone decides its permission.

use http::Method;

use crate::grpc::path as grpc;
use crate::permission::Permission;

/// What a route needs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Requirement {
    /// Nothing: load balancers and orchestrators probe it without credentials.
    Open,
    /// `mesh.observe`, unless the node is configured with `[access] metrics_open = true`.
    ///
    /// Metrics stay closed by default because they describe the mesh (member counts by state,
    /// traffic, refused handshakes), which helps an attacker pick a moment or a target. Opening
    /// them is for scrapers that can present neither a client certificate nor a token, on a
    /// network that is already trusted.
    Metrics,
    /// The scope, or one that implies it.
    Permission(Permission),
    /// A CA-signed `node-<id>` client certificate, whatever scopes `[access]` gives it: one
    /// node relaying to another (the chaos fan-out, `POST /control/chaos/relay`). Bearer tokens
    /// and other certificates are refused with 403. What the node may ask is bounded by the
    /// receiving node's own configuration (docs/security.md, "Chaos relay").
    NodeCertificate,
}

/// One row of [`ROUTE_PERMISSIONS`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RoutePermission {
    /// The HTTP method (`HEAD` is looked up as `GET`, as axum routes it).
    pub method: &'static str,
    /// The path, as written in the router; a `{name}` segment matches any one segment.
    pub path: &'static str,
    /// What it needs.
    pub requires: Requirement,
}

const fn row(method: &'static str, path: &'static str, requires: Requirement) -> RoutePermission {
    RoutePermission {
        method,
        path,
        requires,
    }
}

const OBSERVE: Requirement = Requirement::Permission(Permission::Observe);
const OPERATE: Requirement = Requirement::Permission(Permission::Operate);
const ADMIN: Requirement = Requirement::Permission(Permission::Admin);

/// Which route needs which scope: the one place this is decided. Anything not listed needs
/// [`UNLISTED_PERMISSION`] (chaos and configuration routes included).
///
/// Every row is a route the router serves and every route has its row (a test walks one against
/// the other, `tests/control_errors.rs`): a feature gets its row in the change that routes it.
pub const ROUTE_PERMISSIONS: &[RoutePermission] = &[
    row("GET", "/healthz", Requirement::Open),
    row("GET", "/readyz", Requirement::Open),
    row("GET", "/metrics", Requirement::Metrics),
    row("GET", "/meshkit/peers", OBSERVE),
    row("GET", "/meshkit/shards", OBSERVE),
    row("GET", "/meshkit/clusters", OBSERVE),
    row("GET", "/meshkit/versions", OBSERVE),
    row("GET", "/meshkit/leaders", OBSERVE),
    row("GET", "/control/events/leadership", OBSERVE),
    row("GET", "/control/events/shards", OBSERVE),
    row("POST", "/control/drain", OPERATE),
    row("POST", "/control/resume", OPERATE),
    row("POST", "/control/rebalance", OPERATE),
    row("POST", "/control/leases/transfer", OPERATE),
    row("POST", "/control/leases/acquire", OPERATE),
    row("POST", "/control/leases/renew", OPERATE),
    row("POST", "/control/leases/release", OPERATE),
    row("POST", "/control/join", ADMIN),
    row("POST", "/control/leave", ADMIN),
    row("POST", "/control/force-leave", ADMIN),
    row("POST", "/control/voters/add", ADMIN),
    row("POST", "/control/voters/remove", ADMIN),
    // Chaos (docs/diagnostics.md, "Chaos safety model"): plans, starts, aborts and the kill
    // switch need admin; the list is observable, as a fault nobody can see is the worst kind;
    // the relay between nodes takes node certificates only.
    row("POST", "/control/chaos/plans", ADMIN),
    row("POST", "/control/chaos/experiments", ADMIN),
    row("GET", "/control/chaos/experiments", OBSERVE),
    row("DELETE", "/control/chaos/experiments/{id}", ADMIN),
    row("POST", "/control/chaos/kill-switch", ADMIN),
    row("DELETE", "/control/chaos/kill-switch", ADMIN),
    row("POST", "/control/chaos/relay", Requirement::NodeCertificate),
    // Task queues: producers and workers operate, views observe (docs/task-queues.md).
    row("GET", "/control/queues", OBSERVE),
    row("POST", "/control/queue/enqueue", OPERATE),
    row("POST", "/control/queue/lease", OPERATE),
    row("POST", "/control/queue/heartbeat", OPERATE),
    row("POST", "/control/queue/complete", OPERATE),
    row("POST", "/control/queue/fail", OPERATE),
    row("POST", "/control/queue/drain", OPERATE),
    row("POST", "/control/queue/restore", OPERATE),
    row("GET", "/control/backpressure", OBSERVE),
    row("GET", "/control/backpressure/stream", OBSERVE),
    row("GET", "/control/lease-health", OBSERVE),
    row("GET", "/control/replication/checkpoints", OBSERVE),
    // Health probes: a read of the node's own checks (docs/diagnostics.md).
    row("GET", "/control/probes", OBSERVE),
    row("GET", "/omnirelay/control/backpressure", OBSERVE),
    row("GET", "/omnirelay/control/backpressure/stream", OBSERVE),
    row("GET", "/omnirelay/control/lease-health", OBSERVE),
    row("GET", "/omnirelay/control/replication/checkpoints", OBSERVE),
    row("POST", grpc::LIST_PEERS, OBSERVE),
    row("POST", grpc::GET_LEADERS, OBSERVE),
    row("POST", grpc::WATCH_LEADERSHIP, OBSERVE),
    row("POST", grpc::LIST_SHARDS, OBSERVE),
    row("POST", grpc::WATCH_SHARDS, OBSERVE),
    row("POST", grpc::LIST_CLUSTERS, OBSERVE),
    row("POST", grpc::LIST_VERSIONS, OBSERVE),
    row("POST", grpc::HEALTH_CHECK, Requirement::Open),
    row("POST", grpc::HEALTH_WATCH, Requirement::Open),
    row("POST", grpc::TRANSFER_LEASE, OPERATE),
    row("POST", grpc::DRAIN, OPERATE),
    row("POST", grpc::RESUME, OPERATE),
    row("POST", grpc::REBALANCE, OPERATE),
    // The gRPC twins of the HTTP routes above need what their twin needs.
    row("POST", grpc::ACQUIRE_LEASE, OPERATE),
    row("POST", grpc::RENEW_LEASE, OPERATE),
    row("POST", grpc::RELEASE_LEASE, OPERATE),
    row("POST", grpc::JOIN, ADMIN),
    row("POST", grpc::LEAVE, ADMIN),
    row("POST", grpc::FORCE_LEAVE, ADMIN),
    row("POST", grpc::ADD_VOTER, ADMIN),
    row("POST", grpc::REMOVE_VOTER, ADMIN),
    row("POST", grpc::QUEUE_ENQUEUE, OPERATE),
    row("POST", grpc::QUEUE_LEASE, OPERATE),
    row("POST", grpc::QUEUE_HEARTBEAT, OPERATE),
    row("POST", grpc::QUEUE_COMPLETE, OPERATE),
    row("POST", grpc::QUEUE_FAIL, OPERATE),
    row("POST", grpc::QUEUE_DRAIN, OPERATE),
    row("POST", grpc::QUEUE_RESTORE, OPERATE),
    row("POST", grpc::LIST_QUEUES, OBSERVE),
    row("POST", grpc::GET_BACKPRESSURE, OBSERVE),
    row("POST", grpc::WATCH_BACKPRESSURE, OBSERVE),
    row("POST", grpc::PLAN_CHAOS, ADMIN),
    row("POST", grpc::START_CHAOS, ADMIN),
    row("POST", grpc::LIST_CHAOS, OBSERVE),
    row("POST", grpc::ABORT_CHAOS, ADMIN),
    row("POST", grpc::ENGAGE_CHAOS_KILL_SWITCH, ADMIN),
    row("POST", grpc::REARM_CHAOS_KILL_SWITCH, ADMIN),
    row("POST", grpc::LIST_PROBES, OBSERVE),
];

/// Every gRPC method with an HTTP twin, and that twin (`method`, `path`): the two need the same
/// scope, which a test holds [`ROUTE_PERMISSIONS`] to, so a credential cannot do over one
/// protocol what the other refuses it.
pub const GRPC_TWINS: &[(&str, &str, &str)] = &[
    (grpc::LIST_PEERS, "GET", "/meshkit/peers"),
    (grpc::GET_LEADERS, "GET", "/meshkit/leaders"),
    (grpc::WATCH_LEADERSHIP, "GET", "/control/events/leadership"),
    (grpc::LIST_SHARDS, "GET", "/meshkit/shards"),
    (grpc::WATCH_SHARDS, "GET", "/control/events/shards"),
    (grpc::LIST_CLUSTERS, "GET", "/meshkit/clusters"),
    (grpc::LIST_VERSIONS, "GET", "/meshkit/versions"),
    (grpc::HEALTH_CHECK, "GET", "/readyz"),
    (grpc::HEALTH_WATCH, "GET", "/readyz"),
    (grpc::TRANSFER_LEASE, "POST", "/control/leases/transfer"),
    (grpc::DRAIN, "POST", "/control/drain"),
    (grpc::RESUME, "POST", "/control/resume"),
    (grpc::REBALANCE, "POST", "/control/rebalance"),
    (grpc::ACQUIRE_LEASE, "POST", "/control/leases/acquire"),
    (grpc::RENEW_LEASE, "POST", "/control/leases/renew"),
    (grpc::RELEASE_LEASE, "POST", "/control/leases/release"),
    (grpc::JOIN, "POST", "/control/join"),
    (grpc::LEAVE, "POST", "/control/leave"),
    (grpc::FORCE_LEAVE, "POST", "/control/force-leave"),
    (grpc::ADD_VOTER, "POST", "/control/voters/add"),
    (grpc::REMOVE_VOTER, "POST", "/control/voters/remove"),
    (grpc::QUEUE_ENQUEUE, "POST", "/control/queue/enqueue"),
    (grpc::QUEUE_LEASE, "POST", "/control/queue/lease"),
    (grpc::QUEUE_HEARTBEAT, "POST", "/control/queue/heartbeat"),
    (grpc::QUEUE_COMPLETE, "POST", "/control/queue/complete"),
    (grpc::QUEUE_FAIL, "POST", "/control/queue/fail"),
    (grpc::QUEUE_DRAIN, "POST", "/control/queue/drain"),
    (grpc::QUEUE_RESTORE, "POST", "/control/queue/restore"),
    (grpc::LIST_QUEUES, "GET", "/control/queues"),
    (grpc::GET_BACKPRESSURE, "GET", "/control/backpressure"),
    (
        grpc::WATCH_BACKPRESSURE,
        "GET",
        "/control/backpressure/stream",
    ),
    (grpc::PLAN_CHAOS, "POST", "/control/chaos/plans"),
    (grpc::START_CHAOS, "POST", "/control/chaos/experiments"),
    (grpc::LIST_CHAOS, "GET", "/control/chaos/experiments"),
    (grpc::LIST_PROBES, "GET", "/control/probes"),
    (
        grpc::ABORT_CHAOS,
        "DELETE",
        "/control/chaos/experiments/{id}",
    ),
    (
        grpc::ENGAGE_CHAOS_KILL_SWITCH,
        "POST",
        "/control/chaos/kill-switch",
    ),
    (
        grpc::REARM_CHAOS_KILL_SWITCH,
        "DELETE",
        "/control/chaos/kill-switch",
    ),
];

/// The scope of every route [`ROUTE_PERMISSIONS`] does not list.
pub const UNLISTED_PERMISSION: Permission = Permission::Admin;

fn path_matches(pattern: &str, path: &str) -> bool {
    let mut pattern = pattern.split('/');
    let mut path = path.split('/');
    loop {
        match (pattern.next(), path.next()) {
            (None, None) => return true,
            (Some(p), Some(s)) if p.starts_with('{') && p.ends_with('}') => {
                if s.is_empty() {
                    return false;
                }
            }
            (Some(p), Some(s)) if p == s => {}
            _ => return false,
        }
    }
}

/// What `method path` needs, from [`ROUTE_PERMISSIONS`].
pub fn requirement(method: &Method, path: &str) -> Requirement {
    let method = if method == Method::HEAD {
        "GET"
    } else {
        method.as_str()
    };
    ROUTE_PERMISSIONS
        .iter()
        .find(|r| r.method == method && path_matches(r.path, path))
        .map_or(Requirement::Permission(UNLISTED_PERMISSION), |r| r.requires)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_lists_the_operate_routes_and_fails_closed() {
        let op = Requirement::Permission(Permission::Operate);
        assert_eq!(requirement(&Method::POST, "/control/drain"), op);
        assert_eq!(requirement(&Method::POST, "/control/resume"), op);
        assert_eq!(requirement(&Method::POST, "/control/leases/transfer"), op);
        assert_eq!(requirement(&Method::GET, "/healthz"), Requirement::Open);
        assert_eq!(requirement(&Method::HEAD, "/readyz"), Requirement::Open);
        assert_eq!(requirement(&Method::GET, "/metrics"), Requirement::Metrics);
        let admin = Requirement::Permission(Permission::Admin);
        for (method, path) in [
            (Method::GET, "/control/drain"),
            (Method::POST, "/healthz"),
            (Method::GET, "/healthz/"),
            (Method::GET, "/meshkit/peers/x"),
            (Method::GET, "/unknown"),
            (Method::GET, ""),
        ] {
            assert_eq!(requirement(&method, path), admin, "{method} {path:?}");
        }
        assert!(path_matches("/meshkit/shards/{id}", "/meshkit/shards/7"));
        assert!(!path_matches("/meshkit/shards/{id}", "/meshkit/shards/"));
        assert!(!path_matches("/meshkit/shards/{id}", "/meshkit/shards/7/x"));
    }

    /// Every gRPC method has its HTTP twin in [`GRPC_TWINS`], and both need the same scope.
    #[test]
    fn grpc_methods_need_what_their_http_twins_need() {
        for method in grpc::ALL {
            let Some((_, http_method, http_path)) =
                GRPC_TWINS.iter().find(|(g, _, _)| *g == method)
            else {
                panic!("{method} has no HTTP twin in GRPC_TWINS");
            };
            let http_method: Method = http_method.parse().unwrap();
            assert_eq!(
                requirement(&Method::POST, method),
                requirement(&http_method, http_path),
                "{method} and {http_method} {http_path}"
            );
            assert!(
                ROUTE_PERMISSIONS
                    .iter()
                    .any(|r| r.method == http_method.as_str() && r.path == *http_path),
                "{http_method} {http_path} is a row of its own, not the unlisted default"
            );
        }
        assert_eq!(
            requirement(&Method::POST, grpc::FORCE_LEAVE),
            Requirement::Permission(Permission::Admin)
        );
        assert_eq!(
            requirement(&Method::POST, grpc::ACQUIRE_LEASE),
            Requirement::Permission(Permission::Operate)
        );
    }

    /// Every chaos route that changes anything needs admin; the relay takes node certificates
    /// only; the list observes; an id in the path matches one segment.
    #[test]
    fn chaos_routes_need_admin_and_the_relay_a_node_certificate() {
        let admin = Requirement::Permission(Permission::Admin);
        for (method, path) in [
            (Method::POST, "/control/chaos/plans"),
            (Method::POST, "/control/chaos/experiments"),
            (Method::DELETE, "/control/chaos/experiments/node-3%2F17"),
            (Method::POST, "/control/chaos/kill-switch"),
            (Method::DELETE, "/control/chaos/kill-switch"),
            (Method::POST, grpc::START_CHAOS),
        ] {
            assert_eq!(requirement(&method, path), admin, "{method} {path}");
        }
        assert_eq!(
            requirement(&Method::GET, "/control/chaos/experiments"),
            Requirement::Permission(Permission::Observe)
        );
        assert_eq!(
            requirement(&Method::POST, "/control/chaos/relay"),
            Requirement::NodeCertificate
        );
        // Another method on the relay path is unlisted: admin, not the node rule.
        assert_eq!(requirement(&Method::GET, "/control/chaos/relay"), admin);
    }
}
