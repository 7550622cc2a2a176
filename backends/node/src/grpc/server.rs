//! The server halves of `meshkit.control.v1.Control` and `grpc.health.v1.Health`: one trait
//! per service, which [`ControlService`](super::ControlService) implements over a node, and the
//! generated dispatch from an HTTP/2 request to its method (`control_server::ControlServer`,
//! `health_server::HealthServer`). Generated from `proto/` when the crate builds (see
//! `build.rs`).

#![allow(
    // Generated code: its paths, docs and lints are tonic's.
    unused_qualifications,
    clippy::use_self,
    clippy::doc_markdown,
    clippy::needless_pass_by_value
)]

include!(concat!(env!("OUT_DIR"), "/server/meshkit.control.v1.rs"));
include!(concat!(env!("OUT_DIR"), "/server/grpc.health.v1.rs"));
