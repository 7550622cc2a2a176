//! Chaos faults as values: the [`FaultPlan`] (what, on which nodes and links, when, for how
//! long), the pure [`resolve`] from a plan and the host's [`ClusterView`] to its
//! [`BlastRadius`], and the sans-IO [`FaultSchedule`] that activates and reverts experiments
//! by itself.
//!
//! The same plan is meant for the simulator and for a real node: each host applies the
//! [`FaultEvent`]s of its schedule to what it owns (the simulator's network model and nodes; a
//! real node's transport wrapper, control listener, driver and process).
//!
//! # A plan's life
//!
//! 1. **Parse**: a [`RawFaultPlan`] (TOML or JSON) becomes a [`FaultPlan`] or a
//!    [`FaultPlanError`] naming the field: the duration is mandatory, above zero and at most
//!    [`MAX_FAULT_DURATION`]; rates are probabilities; shares are percentages in `0..=100`;
//!    shapes that partition every member take no selector; one-way needs a first group.
//! 2. **Resolve**: [`resolve`]`(&plan, &view)` names the exact nodes and directed links, drawing
//!    shares, counts and shapes from the plan's seed. It is pure: the radius an operator
//!    confirms is the radius that starts, as long as the view has not changed; a role selector
//!    (Raft leader, lease holder, shard owner) is read from the view at that moment.
//! 3. **Schedule**: [`FaultSchedule::schedule`] fixes the window, `[now + start, now + start +
//!    duration)` on the node's own clock; the schedule emits [`FaultEvent::Activate`] at its
//!    start and [`FaultEvent::Revert`] at its end, or earlier on abort or the kill switch.
//!
//! # Partition shapes and their link sets
//!
//! With `G0, G1, ...` the groups of a shape, a two-way partition cuts `a -> b` for every `a`
//! and `b` in different groups; a one-way partition cuts only `a -> b` with `a` in `G0` and `b`
//! outside it. The shapes, for `n` members:
//!
//! | shape | `G0` | other groups |
//! |---|---|---|
//! | `halves` | `floor(n/2)` drawn from the selector | the rest |
//! | `one` | 1 drawn from the selector | the rest |
//! | `minority` | `max(1, floor((n-1)/2))` drawn from the selector | the rest |
//! | `majority` | `min(floor(n/2)+1, n-1)` drawn from the selector | the rest |
//! | `bridge` | side A: `floor((n-1)/2)` of the others | side B: the rest; the bridge (1 drawn from the selector) is in no group and keeps every link |
//! | `majorities-ring` | (no groups) | members shuffled on a ring; `a -> b` is cut when their ring distance exceeds `ceil(floor(n/2)/2)`, both ways |
//! | `regions` | the first region by name | one group per other region |
//! | `groups` | the first explicit group | each other explicit group, then the unlisted members |
//!
//! The draws take `min(size, selected)` nodes: a `minority` drawn from a region of two takes
//! both. A plan that cuts nothing in the view (a mesh of one, a ring of three) fails to resolve
//! with [`ResolveError::NoTarget`].
//!
//! # Link faults
//!
//! Latency, loss, bursty loss, duplication and reordering act per directed link: the links
//! between the selected nodes `S` and the plan's peers `P` (every member by default),
//! `s -> p` (outbound), `p -> s` (inbound) or both, never a node to itself. A fault on the one
//! link `a -> b` selects `a`, peers `b`, outbound.
//!
//! # Example
//!
//! ```
//! use meshkit::{Duration, Instant, NodeId};
//! use meshkit::diag::fault::{ClusterView, FaultEvent, FaultPlan, FaultSchedule, resolve};
//!
//! let plan: FaultPlan = serde_json::from_str(r#"{
//!     "duration": "30s",
//!     "selector": "raft-leader",
//!     "fault": { "kind": "partition", "shape": "one" }
//! }"#)?;
//! let view = ClusterView::numbered(5, 1).with_raft_leader(Some(NodeId::new(3)));
//! let radius = resolve(&plan, &view)?;
//! assert_eq!(radius.groups[0], [NodeId::new(3)]);
//! assert_eq!(radius.links.len(), 8); // node-3 to and from each of the other four
//!
//! let mut schedule = FaultSchedule::new();
//! let id = schedule.schedule(Instant::ZERO, plan, radius)?;
//! assert!(matches!(schedule.poll_event(), Some(FaultEvent::Activate { .. })));
//! // Nobody calls abort: the schedule reverts by itself at the deadline.
//! let deadline = schedule.poll_timeout().unwrap();
//! assert_eq!(deadline, Instant::ZERO + Duration::from_secs(30));
//! schedule.handle_timeout(deadline);
//! assert!(matches!(schedule.poll_event(), Some(FaultEvent::Revert { id: r, .. }) if r == id));
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

mod plan;
mod resolve;
mod schedule;

pub use self::plan::{
    CLOCK_RATE_RANGE, CUSTOM_KIND_PREFIX, FaultKind, FaultPlan, FaultPlanError, LinkDirection,
    MAX_CERTIFICATE_EXPIRY, MAX_CUSTOM_NAME_BYTES, MAX_CUSTOM_PARAM_BYTES, MAX_CUSTOM_PARAMS,
    MAX_FAULT_DURATION, MAX_LINK_DELAY, MAX_PARTITION_GROUPS, MAX_SELECTOR_INDICES,
    MAX_START_DELAY, MAX_SURGE_JOINS, PartitionDirection, PartitionShape, RawFaultPlan,
    RawSelector, Selector, check_custom_name,
};
pub use self::resolve::{
    BlastRadius, ClusterView, Link, LinkEnds, MemberView, ResolveError, link_ends, resolve,
};
pub use self::schedule::{
    AbortError, EndReason, Experiment, ExperimentId, FaultEvent, FaultSchedule, MAX_EXPERIMENTS,
    Phase, ScheduleError,
};

#[cfg(test)]
mod tests;
