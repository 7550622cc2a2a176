//! [`Rebalancer`]: the fewest moves that give every shard a live, non-draining owner within the
//! load bound. The algorithm and its minimality proof are in the [module docs](super).

use alloc::collections::{BTreeMap, BTreeSet};
use core::cmp::Reverse;
use core::fmt;

use thiserror::Error;

use super::id::ShardId;
use super::map::ShardMap;
use crate::id::NodeId;

/// The tolerance [`Rebalancer::default`] uses: a member may be `max(1, ceil(10% of the mean))`
/// shards away from the mean.
pub const DEFAULT_TOLERANCE_PERCENT: u32 = 10;
/// Largest tolerance [`Rebalancer::new`] accepts, in percent of the mean.
pub const MAX_TOLERANCE_PERCENT: u32 = 100;

/// Plans shard moves. Stateless apart from its tolerance, deterministic (no randomness, no
/// hashing): the same map, members and drains always give the same [`Plan`].
///
/// ```
/// use std::collections::BTreeSet;
/// use meshkit::NodeId;
/// use meshkit::shard::{Rebalancer, ShardId, ShardMap};
///
/// let mut map = ShardMap::new();
/// for id in 0..4 {
///     map.add_shard(ShardId::new("orders", id)?)?;
/// }
/// let live: BTreeSet<NodeId> = [NodeId::new(1), NodeId::new(2)].into();
/// let plan = Rebalancer::default().plan(&map, &live, &BTreeSet::new())?;
/// assert_eq!(plan.len(), 4); // every unowned shard gets an owner, two each
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Rebalancer {
    tolerance_percent: u32,
}

impl Default for Rebalancer {
    /// A rebalancer with [`DEFAULT_TOLERANCE_PERCENT`].
    fn default() -> Self {
        Self {
            tolerance_percent: DEFAULT_TOLERANCE_PERCENT,
        }
    }
}

impl Rebalancer {
    /// A rebalancer that keeps every member within `max(1, ceil(tolerance_percent% of the
    /// mean))` shards of the mean. Lower tolerances balance tighter and move more shards when
    /// members come and go; the tolerance never drops below one shard, since an uneven division
    /// needs it.
    ///
    /// # Errors
    ///
    /// [`RebalanceError::ToleranceOutOfRange`] above [`MAX_TOLERANCE_PERCENT`]; caller misuse.
    pub fn new(tolerance_percent: u32) -> Result<Self, RebalanceError> {
        if tolerance_percent > MAX_TOLERANCE_PERCENT {
            return Err(RebalanceError::ToleranceOutOfRange {
                value: tolerance_percent,
                max: MAX_TOLERANCE_PERCENT,
            });
        }
        Ok(Self { tolerance_percent })
    }

    /// The tolerance, in percent of the mean (default [`DEFAULT_TOLERANCE_PERCENT`]).
    pub fn tolerance_percent(&self) -> u32 {
        self.tolerance_percent
    }

    /// The load bound for `shards` shards over `members` eligible members, or `None` when there
    /// is no member.
    pub fn bounds(&self, shards: usize, members: usize) -> Option<LoadBounds> {
        if members == 0 {
            return None;
        }
        // u128: shards * 100 cannot overflow, whatever usize is.
        let (s, e) = (shards as u128, members as u128);
        let tolerance = (s * u128::from(self.tolerance_percent))
            .div_ceil(100 * e)
            .max(1);
        // |count - s/e| <= tolerance, with tolerance an integer:
        // count <= floor(s/e) + tolerance and count >= ceil(s/e) - tolerance.
        let upper = s / e + tolerance;
        let lower = s.div_ceil(e).saturating_sub(tolerance);
        let narrow = |v: u128| usize::try_from(v).unwrap_or(usize::MAX);
        Some(LoadBounds {
            lower: narrow(lower),
            upper: narrow(upper),
            tolerance: narrow(tolerance),
        })
    }

    /// The fewest moves after which every shard of `map` is owned by a member of `live` that is
    /// not in `draining`, and every such member owns a count within [`Plan::bounds`].
    ///
    /// Members in `draining` but not in `live` count as departed. Each shard appears in at
    /// most one move; moves are in shard order.
    ///
    /// # Errors
    ///
    /// [`RebalanceError::NoEligibleMember`] when the map has shards but every live member is
    /// draining (or none is live): nothing can be placed. Nothing is planned.
    pub fn plan(
        &self,
        map: &ShardMap,
        live: &BTreeSet<NodeId>,
        draining: &BTreeSet<NodeId>,
    ) -> Result<Plan, RebalanceError> {
        let eligible: Vec<NodeId> = live.difference(draining).copied().collect();
        let Some(bounds) = self.bounds(map.len(), eligible.len()) else {
            if map.is_empty() {
                return Ok(Plan {
                    moves: Vec::new(),
                    bounds: LoadBounds {
                        lower: 0,
                        upper: 0,
                        tolerance: 0,
                    },
                });
            }
            return Err(RebalanceError::NoEligibleMember { shards: map.len() });
        };

        // 1. Orphans: shards with no owner, or owned by a departed or draining member. Each
        // must move, whatever the plan.
        let mut pool: Vec<(ShardId, Option<NodeId>, MoveReason)> = Vec::new();
        for (shard, assignment) in map.iter() {
            let reason = match assignment.owner {
                None => MoveReason::Unowned,
                Some(owner) if !live.contains(&owner) => MoveReason::OwnerDeparted,
                Some(owner) if draining.contains(&owner) => MoveReason::OwnerDraining,
                Some(_) => continue,
            };
            pool.push((shard.clone(), assignment.owner, reason));
        }

        // 2. Excess: each eligible member above `upper` gives exactly `count - upper` shards.
        let mut load: BTreeMap<NodeId, usize> = eligible
            .iter()
            .map(|&member| (member, map.owned_count(member)))
            .collect();
        let mut given: BTreeMap<NodeId, (usize, usize)> = BTreeMap::new(); // (excess, fill)
        for (&member, count) in &mut load {
            if *count > bounds.upper {
                given.insert(member, (*count - bounds.upper, 0));
                *count = bounds.upper;
            }
        }

        // 3. Deficit: members below `lower` must receive `lower - count`. If the orphans and the
        // excess do not cover it, take exactly the difference from members above `lower`, one
        // shard at a time from the most loaded (ties: lowest NodeId).
        let deficit: usize = load.values().map(|&c| bounds.lower.saturating_sub(c)).sum();
        let available = pool.len() + given.values().map(|&(excess, _)| excess).sum::<usize>();
        if deficit > available {
            let mut donors: BTreeSet<(Reverse<usize>, NodeId)> = load
                .iter()
                .filter(|&(_, &c)| c > bounds.lower)
                .map(|(&member, &c)| (Reverse(c), member))
                .collect();
            for _ in 0..deficit - available {
                // `E * lower <= S`: while some member is below `lower`, some other member is
                // above it, so a donor exists.
                let (Reverse(count), member) =
                    donors.pop_first().expect("a member above the lower bound");
                given.entry(member).or_default().1 += 1;
                load.insert(member, count - 1);
                if count - 1 > bounds.lower {
                    donors.insert((Reverse(count - 1), member));
                }
            }
        }
        for (&member, &(excess, fill)) in &given {
            // A member keeps its lowest shards and gives its highest.
            let highest = map.owned_by(member).rev();
            for (i, shard) in highest.take(excess + fill).enumerate() {
                let reason = if i < excess {
                    MoveReason::OwnerOverloaded
                } else {
                    MoveReason::FillUnderloaded
                };
                pool.push((shard.clone(), Some(member), reason));
            }
        }
        pool.sort_unstable_by(|a, b| a.0.cmp(&b.0));

        // 4. Placement, in shard order: each shard goes to the least loaded eligible member
        // that is below `upper` and gave nothing (ties: lowest NodeId). Least loaded first fills
        // every deficit before anything else, and nobody both gives and receives.
        let mut receivers: BTreeSet<(usize, NodeId)> = load
            .iter()
            .filter(|&(member, &c)| c < bounds.upper && !given.contains_key(member))
            .map(|(&member, &c)| (c, member))
            .collect();
        let mut moves = Vec::with_capacity(pool.len());
        for (shard, from, reason) in pool {
            // Capacity: `E * upper >= S`, and givers sit at `upper` unless the pool is exactly
            // the deficit, which lies with non-givers.
            let (count, to) = receivers.pop_first().expect("room below the upper bound");
            debug_assert_ne!(from, Some(to), "a shard never moves back to its owner");
            if count + 1 < bounds.upper {
                receivers.insert((count + 1, to));
            }
            moves.push(Move {
                shard,
                from,
                to,
                reason,
            });
        }
        Ok(Plan { moves, bounds })
    }
}

/// The range of shard counts every eligible member must end within: `lower..=upper`, the mean
/// plus or minus the tolerance, rounded inwards.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LoadBounds {
    lower: usize,
    upper: usize,
    tolerance: usize,
}

impl LoadBounds {
    /// Fewest shards an eligible member may own: `ceil(mean) - tolerance`, at least 0.
    pub fn lower(&self) -> usize {
        self.lower
    }

    /// Most shards an eligible member may own: `floor(mean) + tolerance`.
    pub fn upper(&self) -> usize {
        self.upper
    }

    /// `max(1, ceil(tolerance_percent% of the mean))`, in shards (0 for a plan with no member).
    pub fn tolerance(&self) -> usize {
        self.tolerance
    }

    /// Whether `count` is within the bounds.
    pub fn contains(&self, count: usize) -> bool {
        (self.lower..=self.upper).contains(&count)
    }
}

impl fmt::Display for LoadBounds {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}..={}", self.lower, self.upper)
    }
}

/// The rebalancer's output: moves, each to be carried out as a lease transfer (see "Applying a
/// plan" in the [module docs](super)).
#[must_use = "a plan does nothing until the driver transfers each lease and applies each move"]
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Plan {
    moves: Vec<Move>,
    bounds: LoadBounds,
}

impl Plan {
    /// The moves, in shard order; each shard at most once.
    pub fn moves(&self) -> &[Move] {
        &self.moves
    }

    /// The moves, by value.
    pub fn into_moves(self) -> Vec<Move> {
        self.moves
    }

    /// Number of moves.
    pub fn len(&self) -> usize {
        self.moves.len()
    }

    /// Whether the map is already balanced and fully owned.
    pub fn is_empty(&self) -> bool {
        self.moves.is_empty()
    }

    /// The bound every eligible member is within once the plan is applied.
    pub fn bounds(&self) -> LoadBounds {
        self.bounds
    }
}

/// One shard's handoff from `from` to `to`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Move {
    /// The shard; its lease scope is `shard.to_string()`.
    pub shard: ShardId,
    /// The owner when planned (`None`: unowned). [`ShardMap::apply`] checks it still is.
    pub from: Option<NodeId>,
    /// The new owner: a live, non-draining member.
    pub to: NodeId,
    /// Why the shard moves.
    pub reason: MoveReason,
}

impl fmt::Display for Move {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.from {
            Some(from) => write!(f, "{} {from} -> {}", self.shard, self.to)?,
            None => write!(f, "{} - -> {}", self.shard, self.to)?,
        }
        write!(f, " ({})", self.reason)
    }
}

/// Why a [`Move`] is in the plan.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Debug)]
#[non_exhaustive]
pub enum MoveReason {
    /// The shard had no owner.
    Unowned,
    /// The owner is not a live member.
    OwnerDeparted,
    /// The owner is draining.
    OwnerDraining,
    /// The owner held more than the upper bound.
    OwnerOverloaded,
    /// The owner was within bounds, but orphans and excess could not lift every member to the
    /// lower bound (typically: members joined), so it gives one shard to a member below it.
    FillUnderloaded,
}

impl fmt::Display for MoveReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Unowned => "unowned",
            Self::OwnerDeparted => "owner departed",
            Self::OwnerDraining => "owner draining",
            Self::OwnerOverloaded => "owner above upper bound",
            Self::FillUnderloaded => "fill member below lower bound",
        })
    }
}

/// Why no [`Plan`] or [`Rebalancer`] was built. Nothing changed.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum RebalanceError {
    /// [`Rebalancer::new`] with a tolerance above [`MAX_TOLERANCE_PERCENT`]. Caller misuse.
    #[error("tolerance_percent = {value} is out of range: allowed 0..={max}")]
    ToleranceOutOfRange {
        /// The value given.
        value: u32,
        /// [`MAX_TOLERANCE_PERCENT`].
        max: u32,
    },
    /// The map has shards but no live member is outside the draining set. An operator fault
    /// (draining the last members) or a lost quorum of members; retry once members join.
    #[error("no live, non-draining member to place {shards} shards on")]
    NoEligibleMember {
        /// Shards in the map.
        shards: usize,
    },
}
