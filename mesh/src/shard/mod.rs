//! Shard ownership and the rebalancer (docs/design.md §2 "Shards"), as pure, deterministic values.
//!
//! * [`ShardId`]: a validated `{namespace, id}` whose [`Display`](core::fmt::Display) form is the
//!   lease scope that owns it, `shard/{namespace}/{id}`; [`FromStr`](core::str::FromStr) parses
//!   it back.
//! * [`ShardMap`]: shard -> owner, with a per-shard fence (the fencing token of the lease grant
//!   that made the owner); a change of owner must carry a strictly higher fence.
//! * [`Rebalancer`]: from the map, the live members and the draining ones, the [`Plan`] with
//!   the fewest [`Move`]s that leaves every shard on a live, non-draining member and every such
//!   member within the load bound. [`ShardMap::is_drained`] says when a draining member is done.
//!
//! Nothing here reads a clock, does I/O or draws randomness, and every collection is a
//! `BTreeMap`/`BTreeSet`: the same inputs give the same plan on every node and every replay.
//!
//! # The load bound
//!
//! With `S` shards and `E` eligible members (live and not draining), the mean is `S / E` and the
//! tolerance `t = max(1, ceil(10% of the mean))` ([`Rebalancer::new`] changes the 10%). Every
//! eligible member must own a count `c` with `|c - S/E| <= t`, that is
//! `lower = ceil(S/E) - t <= c <= floor(S/E) + t = upper` ([`LoadBounds`]). Since `t >= 1`,
//! `E * lower <= S <= E * upper`: a placement within the bound always exists.
//!
//! # The algorithm
//!
//! 1. **Orphans** `O`: every shard that is unowned or whose owner is departed (not live) or
//!    draining.
//! 2. **Excess**: every eligible member above `upper` gives its `count - upper` highest shards.
//!    `X` is the sum of those counts.
//! 3. **Deficit**: `D` is the sum of `lower - count` over eligible members below `lower`. If
//!    `D > |O| + X` (members joined, and the newcomers must reach `lower`), take exactly
//!    `D - |O| - X` more shards, one at a time from the most loaded member above `lower`.
//! 4. **Placement**: the collected shards, in shard order, each go to the least loaded eligible
//!    member that is below `upper` and gave nothing.
//!
//! Ties break by [`NodeId`](crate::NodeId), then by [`ShardId`] (members give their highest
//! shards and keep their lowest); there is no randomness to seed. The cost is
//! `O((S + E) log(S + E))`.
//!
//! # Why the plan is minimal
//!
//! **Claim**: the fewest moves that satisfy the bound are `max(|O| + X, D)`, and the plan has
//! exactly that many.
//!
//! *Lower bound.* A move changes the owner of one shard. Every orphan must move. An eligible
//! member with `c > upper` ends with at most `upper` shards, so at least `c - upper` of its
//! shards move; these are distinct shards, distinct from the orphans: at least `|O| + X` moves.
//! Separately, a member with `c < lower` ends with at least `lower`, so at least `lower - c`
//! moves land on it, and a move lands on one member only: at least `D` moves.
//!
//! *Attainment.* Each shard is collected at most once and placed once, so the plan has as many
//! moves as shards collected: `|O| + X`, plus `D - |O| - X` when that is positive, that is
//! `max(|O| + X, D)`. The extra shards of step 3 exist: after step 2 the members hold
//! `S - |O| - X` shards, so the shards above `lower` number
//! `D + (S - E * lower) - |O| - X >= D - |O| - X`. The result is within the bound: placement
//! never fills anyone past `upper`, and there is room (`E * upper >= S`); least loaded first
//! serves every member below `lower` before anyone else, and at least `D` shards are placed;
//! step 3 never takes a member below `lower`; and every orphan lands on an eligible member.
//!
//! The tests check the claim against a brute-force optimum over every assignment on small
//! cases, and against the formula on random maps of up to a few hundred shards.
//!
//! Note that `|O| + X` alone, "orphans plus what sits above the bound", is only a lower bound.
//! When members join, `D` dominates: 1,000 members owning 10 shards each, joined by 200 more,
//! give a mean of 8.33 and bounds `8..=9`; the old members shed 1,000 shards (`X`) but the 200
//! newcomers need at least 8 each, 1,600 shards (`D`), so 1,600 moves is the minimum.
//!
//! # Applying a plan
//!
//! A [`Plan`] is only the output; each [`Move`] is a graceful handoff of the lease on scope
//! `shard/{ns}/{id}` (`move.shard.to_string()`), which the lease table (`lease/`, through Raft)
//! carries out. For each move, in any order and as many at a time as the driver allows (each
//! shard appears once, so moves are independent):
//!
//! 1. **Transfer the lease** from `move.from` to `move.to`: the current holder stops taking
//!    work for the shard, flushes, and releases, and the voters grant the scope to `move.to`.
//!    When `move.from` is `None` or departed, the grant waits for the old lease to expire, as
//!    for any scope.
//! 2. **New fence**: the grant's fencing token is the Raft log index of the committed grant,
//!    strictly higher than every earlier token of the scope. `move.to` fences every write it
//!    makes for the shard with it.
//! 3. **Update the map**: [`ShardMap::apply`]`(&move, fence)`. It refuses a plan made stale by
//!    another owner change ([`ShardMapError::OwnerChanged`]) and a replayed grant
//!    ([`ShardMapError::StaleFence`]), leaving the map unchanged.
//!
//! If `apply` refuses a move, or the members or drains change while a plan runs, drop the rest
//! of the plan and plan again from the map. A plan applied in full leaves nothing to do (the
//! next plan is empty); with the same members, re-planning after part of a plan never needs more
//! moves than the part left, since that part is itself a valid completion and plans are minimal.
//!
//! To drain a member, add it to the draining set, plan, apply; it may stop once
//! [`ShardMap::is_drained`] holds.
//!
//! ```
//! use std::collections::BTreeSet;
//! use meshkit::NodeId;
//! use meshkit::shard::{Rebalancer, ShardId, ShardMap};
//!
//! let (a, b) = (NodeId::new(1), NodeId::new(2));
//! let mut map = ShardMap::new();
//! for id in 0..6 {
//!     let shard = ShardId::new("orders", id)?;
//!     map.add_shard(shard.clone())?;
//!     map.assign(&shard, a, 1)?;
//! }
//! // Drain `a`: everything moves to `b`.
//! let live = BTreeSet::from([a, b]);
//! let draining = BTreeSet::from([a]);
//! let plan = Rebalancer::default().plan(&map, &live, &draining)?;
//! let mut next_fence = 100; // stands in for the lease table's grants
//! for mv in plan.moves() {
//!     next_fence += 1;
//!     map.apply(mv, next_fence)?;
//! }
//! assert!(map.is_drained(a));
//! assert_eq!(map.owned_count(b), 6);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

mod config;
mod coordinator;
mod id;
mod map;
mod member;
mod rebalance;
mod wire;

pub use self::config::{
    DEFAULT_MAX_MOVES_IN_FLIGHT, DEFAULT_SHARD_TTL, RawShardConfig, ShardConfig, ShardConfigError,
};
pub use self::coordinator::{
    Coordinator, CoordinatorStats, InFlight, MOVE_SLACK, RESEND_INTERVAL, STEP_INTERVAL,
    ShardEvent, move_deadline,
};
pub use self::member::{ANNOUNCE_INTERVAL, MemberStats, RETRY_INTERVAL, ShardMember, ShardRole};
pub use self::wire::{
    ANNOUNCE_KIND, Announce, INSTRUCTION_VERSION, Instruction, InstructionError,
    MAX_INSTRUCTION_BYTES, ShardMessage,
};

pub use self::id::{MAX_NAMESPACE_CHARS, ShardId, ShardIdError};
pub use self::map::{Assignment, MAX_SHARDS, ShardMap, ShardMapError};
pub use self::rebalance::{
    DEFAULT_TOLERANCE_PERCENT, LoadBounds, MAX_TOLERANCE_PERCENT, Move, MoveReason, Plan,
    RebalanceError, Rebalancer,
};

#[cfg(test)]
mod tests;
