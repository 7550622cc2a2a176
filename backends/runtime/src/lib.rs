//! # The tokio runtime of a MeshKit node
//!
//! Drives the sans-IO core ([`meshkit::node::Node`]) over a [`meshkit_net::transport`] with
//! a [`meshkit_net::clock`].
//!
//! ## Start here
//!
//! * [`driver`]: the [`driver::Driver`] future that runs one node (inputs in, transmits and
//!   events out, one timer), and the [`driver::NodeHandle`] to command it.
//! * [`chaos_host`]: chaos faults on a real node: `[chaos]`, the node's fault schedule (each
//!   node reverts at its own deadline) and the effects of each kind.
//! * [`lease_host`]: leases on a real node: the voter, the lease client and its campaign, the
//!   leadership feed and the shard coordinator's status.
//! * [`raft_store`]: the voter's Raft file (hard state, log, snapshot), written before the
//!   messages that depend on it are sent.
//! * [`queue_host`]: task queues on a real node: producers' and workers' calls, the replicas'
//!   checkpoints, the backpressure watch, the `mesh_queue_*` counters.
//! * [`queue_store`]: the queue replicas' checkpoint files, written before the acknowledgements
//!   that depend on them are sent.
//! * [`record_file`]: the checksummed record file both stores are written as.
//! * [`histogram`]: durations in fixed buckets (vacancy, leaderless time, replication lag).
//! * [`vacancy`]: how long a lease scope has been without a holder.
//! * [`probe_host`]: health probes on a real node: the core's probe scheduler on the node's
//!   clock, asynchronous checks as tasks, the open registration of a service's own probes.

pub mod chaos_host;
pub mod driver;
mod error;
pub mod histogram;
pub mod lease_host;
pub mod probe_host;
pub mod queue_host;
pub mod queue_store;
pub mod raft_store;
pub mod record_file;
mod state_log;
pub mod vacancy;
