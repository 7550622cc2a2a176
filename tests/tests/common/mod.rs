//! What the process-level tests share: the test kit (`meshkit-testkit`), and two harnesses only
//! a few tests use: forged peers (`forged`) and Prometheus as a child process (`prometheus`).

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
