//! [`ShardMap`]: who owns each shard, and the fence of the lease that made it the owner.

use alloc::collections::{BTreeMap, BTreeSet};

use thiserror::Error;

use super::id::ShardId;
use super::rebalance::Move;
use crate::id::NodeId;

/// Most shards one [`ShardMap`] holds (2^20). A plan over a full map costs
/// `O(shards * log(members))` and allocates a few vectors of that length.
pub const MAX_SHARDS: usize = 1 << 20;

/// One shard's entry in a [`ShardMap`].
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct Assignment {
    /// The member holding the shard's lease, if any.
    pub owner: Option<NodeId>,
    /// The fencing token of the last lease grant the map applied for this shard (0 before the
    /// first grant). Every later grant must carry a strictly higher one; it stays when the lease
    /// is released, so a stale grant cannot come back after the shard fell unowned.
    pub fence: u64,
}

/// Shard ownership: shard -> ([`Assignment::owner`], [`Assignment::fence`]).
///
/// The map is a *view* of the lease table (docs/design.md §2: the owner of `shard/{ns}/{id}` is the
/// holder of that lease scope, and its fencing token is the Raft log index of the grant). The
/// driver feeds it every grant with [`assign`](Self::assign) (or [`apply`](Self::apply) for a
/// planned move) and every release or expiry with [`release`](Self::release). Fences only go
/// up: a grant whose fence is not strictly higher than the shard's current fence is a stale or
/// replayed event and is refused with [`ShardMapError::StaleFence`], leaving the map unchanged.
///
/// All shards of one map form one balance domain for the
/// [`Rebalancer`](super::Rebalancer): keep one map per namespace to balance namespaces apart.
///
/// ```
/// use meshkit::NodeId;
/// use meshkit::shard::{ShardId, ShardMap, ShardMapError};
///
/// let mut map = ShardMap::new();
/// let shard = ShardId::new("orders", 0)?;
/// map.add_shard(shard.clone())?;
/// map.assign(&shard, NodeId::new(1), 10)?;
/// assert_eq!(map.owner(&shard), Some(NodeId::new(1)));
/// // A grant replayed from before fence 10 is refused.
/// assert!(matches!(map.assign(&shard, NodeId::new(2), 9), Err(ShardMapError::StaleFence { .. })));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ShardMap {
    shards: BTreeMap<ShardId, Assignment>,
    /// Index of `shards` by owner; never holds an empty set.
    by_owner: BTreeMap<NodeId, BTreeSet<ShardId>>,
}

impl ShardMap {
    /// An empty map.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds an unowned shard with fence 0.
    ///
    /// # Errors
    ///
    /// [`ShardMapError::DuplicateShard`] or [`ShardMapError::Full`], each giving the shard back;
    /// the map is unchanged; caller misuse.
    pub fn add_shard(&mut self, shard: ShardId) -> Result<(), ShardMapError> {
        if self.shards.contains_key(&shard) {
            return Err(ShardMapError::DuplicateShard { shard });
        }
        if self.shards.len() >= MAX_SHARDS {
            return Err(ShardMapError::Full {
                shard,
                max_shards: MAX_SHARDS,
            });
        }
        self.shards.insert(
            shard,
            Assignment {
                owner: None,
                fence: 0,
            },
        );
        Ok(())
    }

    /// Removes a shard (its namespace shrank) and returns its last assignment.
    ///
    /// # Errors
    ///
    /// [`ShardMapError::UnknownShard`]; the map is unchanged; caller misuse.
    pub fn remove_shard(&mut self, shard: &ShardId) -> Result<Assignment, ShardMapError> {
        let assignment = self.shards.remove(shard).ok_or_else(|| unknown(shard))?;
        if let Some(owner) = assignment.owner {
            self.unindex(owner, shard);
        }
        Ok(assignment)
    }

    /// Records a lease grant: `owner` holds `shard` under fencing token `fence`. Returns the
    /// previous owner. Re-granting to the same owner with a higher fence only raises the fence.
    ///
    /// # Errors
    ///
    /// [`ShardMapError::UnknownShard`], or [`ShardMapError::StaleFence`] when `fence` is not
    /// strictly higher than the shard's fence (a replayed or reordered grant). The map is
    /// unchanged; the fault lies with whoever produced the grant.
    pub fn assign(
        &mut self,
        shard: &ShardId,
        owner: NodeId,
        fence: u64,
    ) -> Result<Option<NodeId>, ShardMapError> {
        let entry = self.shards.get_mut(shard).ok_or_else(|| unknown(shard))?;
        if fence <= entry.fence {
            return Err(ShardMapError::StaleFence {
                shard: shard.clone(),
                current: entry.fence,
                offered: fence,
            });
        }
        let previous = entry.owner.replace(owner);
        entry.fence = fence;
        if previous != Some(owner) {
            if let Some(previous) = previous {
                self.unindex(previous, shard);
            }
            self.by_owner
                .entry(owner)
                .or_default()
                .insert(shard.clone());
        }
        Ok(previous)
    }

    /// Applies one planned [`Move`] once its lease transfer produced `fence`: checks that the
    /// shard still belongs to `mv.from` (the plan is not stale), then assigns it to `mv.to`.
    ///
    /// # Errors
    ///
    /// [`ShardMapError::UnknownShard`], [`ShardMapError::OwnerChanged`] (the map moved on since
    /// the plan: re-plan) or [`ShardMapError::StaleFence`]. The map is unchanged.
    pub fn apply(&mut self, mv: &Move, fence: u64) -> Result<(), ShardMapError> {
        let current = self.owner_checked(&mv.shard)?;
        if current != mv.from {
            return Err(ShardMapError::OwnerChanged {
                shard: mv.shard.clone(),
                planned: mv.from,
                current,
            });
        }
        self.assign(&mv.shard, mv.to, fence).map(|_| ())
    }

    /// Records that the lease of fence `fence` on `shard` ended (released or expired) with no
    /// successor: the shard becomes unowned and keeps its fence. Returns the former owner.
    ///
    /// # Errors
    ///
    /// [`ShardMapError::UnknownShard`], or [`ShardMapError::FenceMismatch`] when `fence` is not
    /// the shard's current fence (the end of an older lease, already superseded). The map is
    /// unchanged.
    pub fn release(
        &mut self,
        shard: &ShardId,
        fence: u64,
    ) -> Result<Option<NodeId>, ShardMapError> {
        let entry = self.shards.get_mut(shard).ok_or_else(|| unknown(shard))?;
        if fence != entry.fence {
            return Err(ShardMapError::FenceMismatch {
                shard: shard.clone(),
                current: entry.fence,
                offered: fence,
            });
        }
        let previous = entry.owner.take();
        if let Some(previous) = previous {
            self.unindex(previous, shard);
        }
        Ok(previous)
    }

    /// The shard's owner and fence, or `None` for a shard not in the map.
    pub fn assignment(&self, shard: &ShardId) -> Option<Assignment> {
        self.shards.get(shard).copied()
    }

    /// The shard's owner (`None` if unowned or not in the map).
    pub fn owner(&self, shard: &ShardId) -> Option<NodeId> {
        self.shards.get(shard).and_then(|a| a.owner)
    }

    /// The shard's fence, or `None` for a shard not in the map.
    pub fn fence(&self, shard: &ShardId) -> Option<u64> {
        self.shards.get(shard).map(|a| a.fence)
    }

    /// Whether the map holds `shard`.
    pub fn contains(&self, shard: &ShardId) -> bool {
        self.shards.contains_key(shard)
    }

    /// Number of shards.
    pub fn len(&self) -> usize {
        self.shards.len()
    }

    /// Whether the map holds no shard.
    pub fn is_empty(&self) -> bool {
        self.shards.is_empty()
    }

    /// Every shard with its assignment, in shard order.
    pub fn iter(&self) -> impl Iterator<Item = (&ShardId, Assignment)> + '_ {
        self.shards.iter().map(|(s, a)| (s, *a))
    }

    /// The shards `member` owns, in shard order.
    pub fn owned_by(&self, member: NodeId) -> impl DoubleEndedIterator<Item = &ShardId> + '_ {
        self.by_owner.get(&member).into_iter().flatten()
    }

    /// How many shards `member` owns.
    pub fn owned_count(&self, member: NodeId) -> usize {
        self.by_owner.get(&member).map_or(0, BTreeSet::len)
    }

    /// Every member that owns at least one shard, with its count, in `NodeId` order.
    pub fn owners(&self) -> impl Iterator<Item = (NodeId, usize)> + '_ {
        self.by_owner.iter().map(|(n, s)| (*n, s.len()))
    }

    /// Whether `member` owns no shard: a draining member is drained, and may stop, once this
    /// holds (its last lease was handed off and the handoff applied here).
    pub fn is_drained(&self, member: NodeId) -> bool {
        !self.by_owner.contains_key(&member)
    }

    fn owner_checked(&self, shard: &ShardId) -> Result<Option<NodeId>, ShardMapError> {
        self.shards
            .get(shard)
            .map(|a| a.owner)
            .ok_or_else(|| unknown(shard))
    }

    fn unindex(&mut self, owner: NodeId, shard: &ShardId) {
        if let Some(owned) = self.by_owner.get_mut(&owner) {
            owned.remove(shard);
            if owned.is_empty() {
                self.by_owner.remove(&owner);
            }
        }
    }
}

fn unknown(shard: &ShardId) -> ShardMapError {
    ShardMapError::UnknownShard {
        shard: shard.clone(),
    }
}

/// Why a [`ShardMap`] refused a change. The map is never changed when this is returned.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum ShardMapError {
    /// The shard is not in the map. Caller misuse.
    #[error("{shard} is not in the shard map")]
    UnknownShard {
        /// The shard named.
        shard: ShardId,
    },
    /// [`ShardMap::add_shard`] of a shard already in the map. Caller misuse.
    #[error("{shard} is already in the shard map")]
    DuplicateShard {
        /// The shard given, handed back.
        shard: ShardId,
    },
    /// [`ShardMap::add_shard`] past [`MAX_SHARDS`]. Caller misuse.
    #[error("the shard map is full ({max_shards} shards): cannot add {shard}")]
    Full {
        /// The shard given, handed back.
        shard: ShardId,
        /// [`MAX_SHARDS`].
        max_shards: usize,
    },
    /// A grant whose fence is not strictly higher than the shard's: replayed, reordered or from
    /// a deposed lease holder. The grant's source is at fault, never the map.
    #[error("stale fence for {shard}: offered {offered}, must exceed {current}")]
    StaleFence {
        /// The shard.
        shard: ShardId,
        /// The shard's fence, unchanged.
        current: u64,
        /// The fence refused.
        offered: u64,
    },
    /// A release for a lease other than the current one (already superseded by a later grant).
    #[error("fence mismatch for {shard}: release of {offered}, but the current lease is {current}")]
    FenceMismatch {
        /// The shard.
        shard: ShardId,
        /// The shard's fence, unchanged.
        current: u64,
        /// The fence given.
        offered: u64,
    },
    /// [`ShardMap::apply`] of a move planned when the shard had another owner: the plan is
    /// stale, re-plan from the current map.
    #[error("{shard} changed owner since the plan: planned from {planned:?}, now {current:?}")]
    OwnerChanged {
        /// The shard.
        shard: ShardId,
        /// The owner the plan saw.
        planned: Option<NodeId>,
        /// The owner now.
        current: Option<NodeId>,
    },
}

#[cfg(test)]
mod tests {
    use super::super::MoveReason;
    use super::*;

    fn shard(id: u32) -> ShardId {
        ShardId::new("t", id).unwrap()
    }

    fn node(i: u64) -> NodeId {
        NodeId::new(i)
    }

    #[test]
    fn fences_only_go_up() {
        let mut map = ShardMap::new();
        map.add_shard(shard(0)).unwrap();
        assert_eq!(
            map.assign(&shard(0), node(1), 0),
            Err(ShardMapError::StaleFence {
                shard: shard(0),
                current: 0,
                offered: 0
            })
        );
        assert_eq!(map.assign(&shard(0), node(1), 5), Ok(None));
        assert_eq!(
            map.assign(&shard(0), node(2), 5).unwrap_err().to_string(),
            "stale fence for shard/t/0: offered 5, must exceed 5"
        );
        assert_eq!(map.assign(&shard(0), node(2), 6), Ok(Some(node(1))));
        assert_eq!(
            map.assignment(&shard(0)),
            Some(Assignment {
                owner: Some(node(2)),
                fence: 6
            })
        );
        // Same owner, new lease: only the fence moves.
        assert_eq!(map.assign(&shard(0), node(2), 9), Ok(Some(node(2))));
        assert_eq!(map.owned_count(node(2)), 1);
        assert!(map.is_drained(node(1)));
    }

    #[test]
    fn release_needs_the_current_fence_and_keeps_it() {
        let mut map = ShardMap::new();
        map.add_shard(shard(0)).unwrap();
        map.assign(&shard(0), node(1), 3).unwrap();
        map.assign(&shard(0), node(2), 4).unwrap();
        // The end of node 1's lease (fence 3) arrives late: refused, node 2 keeps the shard.
        assert!(matches!(
            map.release(&shard(0), 3),
            Err(ShardMapError::FenceMismatch {
                current: 4,
                offered: 3,
                ..
            })
        ));
        assert_eq!(map.release(&shard(0), 4), Ok(Some(node(2))));
        assert_eq!(map.owner(&shard(0)), None);
        assert_eq!(map.fence(&shard(0)), Some(4));
        assert!(map.is_drained(node(2)));
        // The replayed grant of fence 4 cannot resurrect the old owner.
        assert!(map.assign(&shard(0), node(2), 4).is_err());
    }

    #[test]
    fn apply_refuses_stale_plans() {
        let mut map = ShardMap::new();
        map.add_shard(shard(0)).unwrap();
        map.assign(&shard(0), node(1), 1).unwrap();
        let mv = Move {
            shard: shard(0),
            from: Some(node(1)),
            to: node(2),
            reason: MoveReason::OwnerDraining,
        };
        map.assign(&shard(0), node(3), 2).unwrap();
        assert_eq!(
            map.apply(&mv, 3),
            Err(ShardMapError::OwnerChanged {
                shard: shard(0),
                planned: Some(node(1)),
                current: Some(node(3))
            })
        );
        map.assign(&shard(0), node(1), 3).unwrap();
        assert!(matches!(
            map.apply(&mv, 3),
            Err(ShardMapError::StaleFence { .. })
        ));
        map.apply(&mv, 4).unwrap();
        assert_eq!(map.owner(&shard(0)), Some(node(2)));
        assert_eq!(map.owned_by(node(2)).collect::<Vec<_>>(), [&shard(0)]);
    }

    #[test]
    fn add_and_remove() {
        let mut map = ShardMap::new();
        assert!(!map.contains(&shard(1)));
        map.add_shard(shard(1)).unwrap();
        assert!(map.contains(&shard(1)) && !map.contains(&shard(2)));
        assert_eq!(
            map.add_shard(shard(1)),
            Err(ShardMapError::DuplicateShard { shard: shard(1) })
        );
        map.assign(&shard(1), node(7), 1).unwrap();
        assert_eq!(map.owners().collect::<Vec<_>>(), [(node(7), 1)]);
        assert_eq!(
            map.remove_shard(&shard(1)),
            Ok(Assignment {
                owner: Some(node(7)),
                fence: 1
            })
        );
        assert!(map.is_empty() && map.is_drained(node(7)));
        assert!(!map.contains(&shard(1)), "a removed shard is gone");
        assert_eq!(
            map.remove_shard(&shard(1)),
            Err(ShardMapError::UnknownShard { shard: shard(1) })
        );
        assert!(map.assign(&shard(1), node(7), 2).is_err());
        assert!(map.release(&shard(1), 1).is_err());
    }
}
