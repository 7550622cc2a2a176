//! Diagnostics: health probes and chaos faults, as sans-IO models every host applies the same
//! way (docs/design.md §2 "Probes and chaos model"; the operator's guide is
//! `docs/diagnostics.md`).
//!
//! * [`probe`]: the open [`Probe`](probe::Probe) trait, the validated
//!   [`ProbeSpec`](probe::ProbeSpec) and the [`ProbeScheduler`](probe::ProbeScheduler) state
//!   machine: when each probe runs, its deadlines, its bounded history and its
//!   Healthy/Degraded/Failing state.
//! * [`fault`]: the [`FaultPlan`](fault::FaultPlan) (kind, selector, mandatory duration,
//!   start), the pure [`resolve`](fault::resolve) to a [`BlastRadius`](fault::BlastRadius) of
//!   nodes and directed links, and the [`FaultSchedule`](fault::FaultSchedule) that activates
//!   and reverts by itself on the node's own clock.
//!
//! Neither reads a clock or the OS's randomness: time comes in as `now`, draws come from
//! seeds, and every collection is ordered, so the simulator replays what a real node does.

pub mod fault;
pub mod probe;

/// docs/diagnostics.md, whose examples run as doc tests.
#[cfg(doctest)]
#[doc = include_str!("../../../docs/diagnostics.md")]
struct DiagnosticsDoctests;
