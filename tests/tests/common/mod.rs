//! What the process-level tests share: the test kit (`meshkit-testkit`), and three harnesses
//! only a few tests use: forged peers (`forged`), Prometheus and Alertmanager as child processes
//! (`prometheus`), and a relay that slows a node's answers (`relay`).

#![allow(
    dead_code,
    unused_imports,
    unreachable_pub,
    reason = "each test binary uses a different subset"
)]

pub use meshkit_testkit::fixtures::*;
pub use meshkit_testkit::{daemon, raw_client};

pub mod forged;
pub mod prometheus;
pub mod relay;
