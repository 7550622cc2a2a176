//! # What a MeshKit control client and server share
//!
//! The bottom of the backends: plain data and tables, no runtime, no server, no client. Both
//! `meshkit-control` (which serves the API) and `meshkit-client` (which calls it) build on
//! this crate, so neither has to link the other.
//!
//! ## Start here
//!
//! * [`routes`]: the route + permission table, [`routes::ROUTE_PERMISSIONS`]: which HTTP route
//!   and which gRPC method needs which [`permission::Permission`]. A route it does not list
//!   needs `mesh.admin`.
//! * [`permission`]: the three permissions of the control API (`mesh.observe`,
//!   `mesh.operate`, `mesh.admin`), each implying the ones below it. Not to be confused with a
//!   lease scope ([`meshkit::lease::Scope`]), which names what a lease is for.
//! * [`grpc`]: the gRPC contract (`proto/`): prost messages, method paths, [`grpc::is_grpc`].
//! * [`json`]: the JSON bodies of the HTTP routes (peers, views, leaders, shards, lease
//!   sessions, membership operations, errors), built by the server and parsed by clients.
//! * [`probes`]: the body of `GET /control/probes` and its tag filter.
//! * [`chaos`]: the JSON bodies of the chaos routes (plans, tokens, experiments, the relay).
//! * [`alpn`]: the ALPN names of the control API's transports and their metric label.
//! * [`metrics`]: the metric catalogue (name, type, help, labels, unit of every family) and the
//!   Prometheus exposition built from it.

pub mod alpn;
pub mod chaos;
pub mod grpc;
pub mod json;
pub mod metrics;
pub mod permission;
pub mod probes;
pub mod routes;
