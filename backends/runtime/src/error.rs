//! The errors the driver and the lease host share, below both, so that the lease host never
//! reaches up into the driver (the driver hosts the leases, not the other way round).
//! `crate::driver` and `crate::lease_host` re-export them where callers look.

use thiserror::Error;

/// A resume point the feed no longer holds (or from another node's feed).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FeedGap {
    /// The oldest entry still held, if any.
    pub oldest: Option<u64>,
}

/// The driver has stopped (shut down, or its transport closed); nothing was done.
#[derive(Debug, Error, Clone, Copy, PartialEq, Eq)]
#[error("the node's driver has stopped")]
pub struct DriverStopped;

/// Why a leadership call on a [`NodeHandle`](crate::driver::NodeHandle) failed.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum LeadershipError {
    /// The node runs no leadership (no `[leadership]` section).
    #[error("this node runs no leadership")]
    Disabled,
    /// The feed no longer holds the resume point.
    #[error("the leadership feed no longer holds events after the resume point (oldest held: {:?})", .0.oldest)]
    Gap(FeedGap),
    /// The lease operation was refused or failed.
    #[error(transparent)]
    Lease(#[from] meshkit::lease::LeaseError),
    /// An operator's lock was refused: the node is drained (it takes no lease until resumed).
    #[error(
        "this node is drained: it takes no lease until `meshctl resume` (or lock through another node)"
    )]
    Draining,
    /// An operator's lock was refused: the node contends for the scope from its configuration
    /// (`[leadership] campaign`), so the lease is the node's own, not a session's.
    #[error(
        "this node contends for {scope} from its configuration ([leadership] campaign): lock a scope no node campaigns for"
    )]
    Campaigned {
        /// The scope.
        scope: String,
    },
    /// The driver has stopped.
    #[error(transparent)]
    Stopped(#[from] DriverStopped),
    /// A shard command was refused: the node is no shard member or coordinator, its
    /// coordinator does not act now (ask the Raft leader the error names), or the pool has no
    /// eligible member. Nothing changed.
    #[error(transparent)]
    Shards(meshkit::node::CommandError),
}
