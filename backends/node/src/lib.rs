//! # A real MeshKit node
//!
//! What a service embeds to become a mesh peer: a [`config::NodeConfig`] (from `node.toml`, or
//! built in code), and [`node::start`], which assembles transport, driver and control endpoint
//! into a [`node::RunningNode`]. `meshkitd` is this crate's daemon.
//!
//! The node is made of layered crates, each usable on its own; this crate re-exports them so
//! that an embedding service needs one dependency:
//!
//! | crate | re-exported as | what |
//! | --- | --- | --- |
//! | `meshkit-api` | [`api`] ([`metrics`], [`permission`]) | route + permission table, gRPC messages, ALPN names, metric catalogue |
//! | `meshkit-net` | [`net`] ([`transport`], [`clock`], [`tls`], [`certs`], [`reload`], [`tls_stats`], [`log_limit`]) | transports, clocks, TLS identity and certificates |
//! | `meshkit-runtime` | [`runtime`] ([`driver`], [`lease_host`], [`queue_host`], [`queue_store`], [`raft_store`], [`record_file`], [`vacancy`]) | the tokio driver of the core, the lease host, the task queues, the Raft store and queue checkpoints |
//! | `meshkit-control` | [`control`] ([`grpc`], [`tokens`]) | the control API server, authorization, audit |
//! | `meshkit-client` | [`client`] | the control API client (HTTP/3, then HTTP/2; gRPC) |
//!
//! ## Start here
//!
//! * [`config`]: `node.toml`, parsed into a validated [`config::NodeConfig`], which combines the
//!   configuration of each part (membership, leadership, access, control limits, TLS).
//! * [`node`]: [`node::start`] and the [`node::RunningNode`] it returns.
//! * [`probes`]: the node's built-in health probes and `[probes]`; register a probe of your own
//!   through [`node::RunningNode::probes`] ([`probe_host`] says how).
//! * Task queues (`[queues]`): enqueue, lease, heartbeat, complete, fail, drain and restore
//!   through the node's [`driver::NodeHandle`] (`queue_*`), and
//!   [`driver::NodeHandle::subscribe_backpressure`] for the owners' backpressure signals
//!   ([`queue_host`] says what each call guarantees).
//!
//! The crypto provider is ring, and only ring: configurations are built with
//! [`tls::crypto_provider`] explicitly.

pub mod config;
pub mod node;
pub mod probes;

pub use meshkit_api as api;
pub use meshkit_api::{metrics, permission};
pub use meshkit_client as client;
pub use meshkit_control as control;
pub use meshkit_control::{grpc, tokens};
pub use meshkit_net as net;
pub use meshkit_net::{certs, clock, log_limit, reload, tls, tls_stats, transport};
pub use meshkit_runtime as runtime;
pub use meshkit_runtime::{
    chaos_host, driver, lease_host, probe_host, queue_host, queue_store, raft_store, record_file,
    vacancy,
};
