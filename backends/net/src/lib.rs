//! # Transports and identities of a MeshKit node
//!
//! Everything a node needs to talk to its peers, and nothing about what it says.
//!
//! ## Start here
//!
//! * [`transport`]: the [`transport::Transport`] seam; [`transport::quic`] (quinn, mutual TLS,
//!   identity from the certificate), [`transport::memory`] (in-process, for tests) and, with
//!   the `turmoil` feature, `transport::turmoil` (turmoil's simulated network).
//! * [`clock`]: where the runtime reads time ([`clock::Clock`]) and wall time
//!   ([`clock::WallClock`]).
//! * [`tls`] and [`certs`]: loading and making the development CA and node certificates;
//!   [`reload`]: reading them again when their files change, without a restart;
//!   [`tls_stats`]: reloads and refused handshakes, counted and logged.
//! * [`log_limit`]: a rate limit for log lines that peers or anonymous clients can cause.
//! * [`peer_addr`]: a peer's address as written in a configuration, an IP or a host name
//!   resolved when needed (compose and Kubernetes name their nodes, not their IPs).
//!
//! The crypto provider is ring, and only ring: configurations are built with
//! [`tls::crypto_provider`] explicitly.

pub mod certs;
pub mod clock;
pub mod log_limit;
pub mod peer_addr;
pub mod reload;
pub mod tls;
pub mod tls_stats;
pub mod transport;
