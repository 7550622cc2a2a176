//! # A real MeshKit node
//!
//! The tokio runtime around MeshKit's sans-IO core.
//!
//! ## Start here
//!
//! * [`driver`]: the [`driver::Driver`] future that runs one [`meshkit::membership::Membership`]
//!   (inputs in, transmits and events out, one timer), and the [`driver::NodeHandle`] to command
//!   it. Time comes from a [`clock::Clock`].
//! * [`transport`]: the [`transport::Transport`] seam; [`transport::quic`] (quinn, mutual TLS,
//!   identity from the certificate) and [`transport::memory`] (in-process, for tests).
//! * [`tls`] and [`certs`]: loading and making the development CA and node certificates;
//!   [`reload`]: reading them again when their files change, without a restart;
//!   [`tls_stats`]: reloads and refused handshakes, counted and logged.
//! * [`config`]: `node.toml`, parsed into a validated [`config::NodeConfig`].
//! * [`node`]: assembles transport, driver and control endpoint into a running node
//!   (what `meshkitd` runs).
//! * [`leadership`]: leases on a real node: the voter, the lease client and its campaign, the
//!   leadership feed.
//! * [`control`]: the control API (`/healthz`, `/meshkit/peers`, `/metrics`), served by
//!   [`control::serve()`] over HTTP/3 and HTTP/2 on one port number;
//!   [`control::auth`] decides who may call what ([`scope`], [`tokens`]) and
//!   [`control::audit`] logs operate and admin calls.
//! * [`log_limit`]: a rate limit for log lines that peers or anonymous clients can cause.
//! * [`metrics`]: the Prometheus exposition of `/metrics`, written by prometheus-client from
//!   the [`metrics::catalogue`] of every family (name, type, help, labels, unit).
//! * [`client`]: the control API client `meshctl` uses: HTTP/3 first, HTTP/2 over TLS as the
//!   fallback, counted in [`client::stats`].
//! * [`grpc`]: the same control surface over gRPC (`meshkit.control.v1.Control`), served on
//!   the control port behind the same authorization.
//!
//! The crypto provider is ring, and only ring: configurations are built with
//! [`tls::crypto_provider`] explicitly.

pub mod certs;
pub mod client;
pub mod clock;
pub mod config;
pub mod control;
pub mod driver;
pub mod grpc;
pub mod leadership;
pub mod log_limit;
pub mod metrics;
pub mod node;
pub mod raft_store;
pub mod reload;
pub mod scope;
mod state_log;
pub mod tls;
pub mod tls_stats;
pub mod tokens;
pub mod transport;
pub mod vacancy;
