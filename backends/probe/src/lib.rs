//! `meshkit-probe`: a synthetic probe agent for MeshKit meshes.
//!
//! It exercises a mesh's control API, watch streams and transports with least-privilege
//! credentials, the way an operator's first request would, and tells Prometheus, Alertmanager
//! and a person reading a report what it saw (`docs/probes.md`).
//!
//! The parts, one direction of data:
//!
//! - [`config`]: the declarative `probes.toml`, validated with errors that name the key;
//! - [`probes`]: the probe types (API, authorization, watch streams, transport), each an
//!   [`AsyncProbe`](meshkit_runtime::probe_host::AsyncProbe) run by the runtime's
//!   [`ProbeHost`](meshkit_runtime::probe_host::ProbeHost) on the core's scheduler: the same
//!   state model (thresholds, Healthy/Degraded/Failing) as a node's own probes;
//! - [`agent`]: the process: targets, its own client, the host, fan-out of every result;
//! - [`metrics`]: `/metrics`, blackbox-compatible names beside `mesh_probe_*`;
//! - [`history`]: results and incidents in SQLite, with retention;
//! - [`alert`]: state changes to alerts, maintenance windows, Alertmanager API v2 and webhooks;
//! - [`report`]: daily and weekly reports, HTML with SVG plots and Markdown;
//! - [`fleet`]: several agents share probe groups through shard leases of their own mesh.
//!
//! [`record`] holds the types these parts hand each other.

pub mod agent;
pub mod alert;
pub mod config;
pub mod fleet;
pub mod history;
pub mod metrics;
pub mod probes;
pub mod record;
pub mod report;
