//! # The tokio runtime of a MeshKit node
//!
//! Drives the sans-IO core ([`meshkit::node::Node`]) over a [`meshkit_net::transport`] with
//! a [`meshkit_net::clock`].
//!
//! ## Start here
//!
//! * [`driver`]: the [`driver::Driver`] future that runs one node (inputs in, transmits and
//!   events out, one timer), and the [`driver::NodeHandle`] to command it.
//! * [`lease_host`]: leases on a real node: the voter, the lease client and its campaign, the
//!   leadership feed and the shard coordinator's status.
//! * [`raft_store`]: the voter's Raft file (hard state, log, snapshot), written before the
//!   messages that depend on it are sent.
//! * [`vacancy`]: how long a lease scope has been without a holder.

pub mod driver;
mod error;
pub mod lease_host;
pub mod raft_store;
mod state_log;
pub mod vacancy;
