//! Clients of `meshkit.control.v1.Control` and of the node's `grpc.health.v1.Health`, over any
//! tonic transport: generated from `proto/` when the crate builds (see `build.rs`). They use
//! tonic's client half only.

#![allow(
    // Generated code: its paths, docs and lints are tonic's.
    unused_qualifications,
    clippy::use_self,
    clippy::doc_markdown,
    clippy::needless_pass_by_value
)]

include!(concat!(env!("OUT_DIR"), "/client/meshkit.control.v1.rs"));
include!(concat!(env!("OUT_DIR"), "/client/grpc.health.v1.rs"));
