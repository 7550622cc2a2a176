//! From a plan and the host's view of the mesh to the exact nodes and directed links it touches.

use alloc::collections::{BTreeMap, BTreeSet};
use alloc::string::String;
use alloc::vec::Vec;
use core::fmt;

use thiserror::Error;

use super::plan::{
    FaultKind, FaultPlan, LinkDirection, PartitionDirection, PartitionShape, Selector,
};
use crate::id::NodeId;
use crate::lease::Scope;
use crate::rng::NodeRng;
use crate::shard::ShardId;
use crate::time::Duration;

/// One member as the host sees it when a plan starts.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MemberView {
    /// The member.
    pub id: NodeId,
    /// Its region label (empty when the mesh has one region).
    pub region: String,
}

/// What the host knows when a plan starts: the members and who holds which role. Selectors
/// resolve against it; member indices count in node-id order from 0.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ClusterView {
    members: Vec<MemberView>,
    raft_leader: Option<NodeId>,
    lease_holders: BTreeMap<Scope, NodeId>,
    shard_owners: BTreeMap<ShardId, NodeId>,
}

impl ClusterView {
    /// A view of these members (sorted by id; a repeated id is kept once).
    pub fn new(members: impl IntoIterator<Item = MemberView>) -> Self {
        let mut members: Vec<MemberView> = members.into_iter().collect();
        members.sort_by_key(|m| m.id);
        members.dedup_by_key(|m| m.id);
        Self {
            members,
            ..Self::default()
        }
    }

    /// `n` members with ids `1..=n` (index `i` is `NodeId(i + 1)`, as in the simulator), in
    /// `regions` regions round-robin (`"r0"`, `"r1"`, ...; unlabelled when `regions <= 1`).
    pub fn numbered(n: u32, regions: u32) -> Self {
        Self::new((0..n).map(|i| MemberView {
            id: NodeId::new(u64::from(i) + 1),
            region: if regions <= 1 {
                String::new()
            } else {
                alloc::format!("r{}", i % regions)
            },
        }))
    }

    /// The same, with the Raft leader of the lease group (if one is known).
    #[must_use]
    pub fn with_raft_leader(mut self, leader: Option<NodeId>) -> Self {
        self.raft_leader = leader;
        self
    }

    /// The same, with `holder` holding `scope`.
    #[must_use]
    pub fn with_lease_holder(mut self, scope: Scope, holder: NodeId) -> Self {
        self.lease_holders.insert(scope, holder);
        self
    }

    /// The same, with `owner` owning `shard`.
    #[must_use]
    pub fn with_shard_owner(mut self, shard: ShardId, owner: NodeId) -> Self {
        self.shard_owners.insert(shard, owner);
        self
    }

    /// The members, in id order.
    pub fn members(&self) -> &[MemberView] {
        &self.members
    }
}

/// One direction of a link: datagrams from `from` to `to`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Link {
    /// The sender.
    pub from: NodeId,
    /// The receiver.
    pub to: NodeId,
}

impl fmt::Display for Link {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} -> {}", self.from, self.to)
    }
}

/// What a plan touches, for how long: shown before it is confirmed, applied when it starts.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BlastRadius {
    /// The kind's name ([`FaultKind::name`]).
    pub kind: &'static str,
    /// Every node the fault acts on: the selected nodes of a node fault, every endpoint of an
    /// affected link.
    pub nodes: BTreeSet<NodeId>,
    /// The directed links affected (link faults and partitions; empty for node faults).
    pub links: BTreeSet<Link>,
    /// A partition's groups, first group first (empty for other kinds and for the
    /// majorities-ring shape, which has no groups; a bridge's two sides, without the bridge).
    pub groups: Vec<Vec<NodeId>>,
    /// How long after scheduling it starts.
    pub start: Duration,
    /// How long it lasts.
    pub duration: Duration,
}

/// Why a plan could not be resolved against a view. Nothing started. The plan is valid; the
/// mesh does not have what it names (or no longer has: roles move).
#[derive(Debug, Error, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum ResolveError {
    /// An index at or past the member count.
    #[error("{field}: index {index} is out of range, the view has {members} members")]
    IndexOutOfRange {
        /// `selector`, `peers` or `fault.shape.groups`.
        field: &'static str,
        /// The index.
        index: u32,
        /// Members in the view.
        members: usize,
    },
    /// A role nobody holds in the view (no Raft leader known, a scope or shard unheld), or
    /// held by a node that is not a member.
    #[error("{field}: nobody in the view is the {role}")]
    RoleVacant {
        /// `selector` or `peers`.
        field: &'static str,
        /// The selector.
        role: Selector,
    },
    /// The plan touches no node and no link (an empty region, a share of zero, a partition of
    /// a mesh too small for its shape).
    #[error("the plan touches nothing in this view ({members} members)")]
    NoTarget {
        /// Members in the view.
        members: usize,
    },
}

/// The blast radius of `plan` against `view`: a pure function of both (draws come from the
/// plan's seed), so resolving again gives the same radius.
///
/// Node kinds touch the selected nodes. Link kinds touch, for every selected `s` and every peer
/// `p != s`, `s -> p` ([`LinkDirection::Outbound`]), `p -> s` (`Inbound`) or both. Partitions
/// form groups by their [`PartitionShape`] and cut every link between two groups (two-way) or
/// from the first group to every other (one-way); the bridge cuts its two sides from each other
/// and the majorities ring cuts every pair further apart on the ring than `k`.
///
/// # Errors
///
/// [`ResolveError`]; nothing changed.
pub fn resolve(plan: &FaultPlan, view: &ClusterView) -> Result<BlastRadius, ResolveError> {
    let mut rng = NodeRng::from_seed(plan.seed());
    let mut radius = BlastRadius {
        kind: plan.kind().name(),
        nodes: BTreeSet::new(),
        links: BTreeSet::new(),
        groups: Vec::new(),
        start: plan.start(),
        duration: plan.duration(),
    };
    match plan.kind() {
        FaultKind::Partition { shape, direction } => {
            partition(&mut radius, plan, shape, *direction, view, &mut rng)?;
        }
        kind if kind.is_link_fault() => {
            let selected = select("selector", plan.selector(), view, &mut rng)?;
            let peers = select("peers", plan.peers(), view, &mut rng)?;
            for &s in &selected {
                for &p in peers.iter().filter(|&&p| p != s) {
                    if plan.direction() != LinkDirection::Inbound {
                        radius.links.insert(Link { from: s, to: p });
                    }
                    if plan.direction() != LinkDirection::Outbound {
                        radius.links.insert(Link { from: p, to: s });
                    }
                }
            }
            radius.nodes = endpoints(&radius.links);
        }
        _ => {
            radius.nodes = select("selector", plan.selector(), view, &mut rng)?
                .into_iter()
                .collect();
        }
    }
    if radius.nodes.is_empty() {
        return Err(ResolveError::NoTarget {
            members: view.members.len(),
        });
    }
    Ok(radius)
}

/// The two ends of a link fault's links as [`resolve`] draws them: every link of its radius is
/// `s -> p` ([`LinkDirection::Outbound`]), `p -> s` (`Inbound`) or either (`Both`) for `s` in
/// `selected` and `p` in `peers`, `s != p`.
///
/// A host that applies a link fault to every datagram tests membership in these two sets
/// (`O(1)` per datagram with a bitmap) rather than in the radius's link set, whose size is
/// `|selected| x |peers|`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LinkEnds {
    /// The selected nodes, in id order.
    pub selected: Vec<NodeId>,
    /// The peers, in id order.
    pub peers: Vec<NodeId>,
    /// Which directions.
    pub direction: LinkDirection,
}

/// The [`LinkEnds`] of a link fault: the same draws, from the same seed, as [`resolve`] makes
/// for it, so they name exactly the links of its radius. `None` for a kind that is not a link
/// fault ([`FaultKind::is_link_fault`]).
///
/// # Errors
///
/// As [`resolve`]; nothing changed.
pub fn link_ends(plan: &FaultPlan, view: &ClusterView) -> Result<Option<LinkEnds>, ResolveError> {
    if !plan.kind().is_link_fault() {
        return Ok(None);
    }
    let mut rng = NodeRng::from_seed(plan.seed());
    let selected = select("selector", plan.selector(), view, &mut rng)?;
    let peers = select("peers", plan.peers(), view, &mut rng)?;
    Ok(Some(LinkEnds {
        selected,
        peers,
        direction: plan.direction(),
    }))
}

fn endpoints(links: &BTreeSet<Link>) -> BTreeSet<NodeId> {
    links.iter().flat_map(|l| [l.from, l.to]).collect()
}

/// The nodes a selector names, in id order.
fn select(
    field: &'static str,
    selector: &Selector,
    view: &ClusterView,
    rng: &mut NodeRng,
) -> Result<Vec<NodeId>, ResolveError> {
    let all: Vec<NodeId> = view.members.iter().map(|m| m.id).collect();
    let role = |holder: Option<NodeId>| {
        holder
            .filter(|h| all.binary_search(h).is_ok())
            .map(|h| alloc::vec![h])
            .ok_or_else(|| ResolveError::RoleVacant {
                field,
                role: selector.clone(),
            })
    };
    let mut chosen = match selector {
        Selector::All => all.clone(),
        Selector::Indices(indices) => {
            let mut out = Vec::with_capacity(indices.len());
            for &index in indices {
                let id = all
                    .get(index as usize)
                    .ok_or(ResolveError::IndexOutOfRange {
                        field,
                        index,
                        members: all.len(),
                    })?;
                out.push(*id);
            }
            out
        }
        Selector::Count(n) => draw(&all, *n as usize, rng),
        Selector::Share(percent) => draw(&all, share(all.len(), *percent), rng),
        Selector::Region(region) => view
            .members
            .iter()
            .filter(|m| &m.region == region)
            .map(|m| m.id)
            .collect(),
        Selector::LeaseHolder(scope) => role(view.lease_holders.get(scope).copied())?,
        Selector::RaftLeader => role(view.raft_leader)?,
        Selector::ShardOwner(shard) => role(view.shard_owners.get(shard).copied())?,
    };
    chosen.sort_unstable();
    chosen.dedup();
    Ok(chosen)
}

/// `percent` of `n`, rounded to nearest, at least one when `percent > 0`.
fn share(n: usize, percent: u32) -> usize {
    if percent == 0 {
        return 0;
    }
    ((n * percent as usize + 50) / 100).max(1)
}

/// `want` of `from` (all if fewer), drawn; sorted.
fn draw(from: &[NodeId], want: usize, rng: &mut NodeRng) -> Vec<NodeId> {
    let mut pool = from.to_vec();
    rng.shuffle(&mut pool);
    pool.truncate(want);
    pool.sort_unstable();
    pool
}

fn partition(
    radius: &mut BlastRadius,
    plan: &FaultPlan,
    shape: &PartitionShape,
    direction: PartitionDirection,
    view: &ClusterView,
    rng: &mut NodeRng,
) -> Result<(), ResolveError> {
    let all: Vec<NodeId> = view.members.iter().map(|m| m.id).collect();
    let n = all.len();
    // The first group, drawn from the selected nodes, against everyone else.
    let mut first_group = |size: usize| -> Result<Vec<Vec<NodeId>>, ResolveError> {
        let candidates = select("selector", plan.selector(), view, rng)?;
        let first = draw(&candidates, size, rng);
        let rest = all
            .iter()
            .copied()
            .filter(|id| !first.contains(id))
            .collect();
        Ok(alloc::vec![first, rest])
    };
    let groups = match shape {
        PartitionShape::Halves => first_group(n / 2)?,
        PartitionShape::One => first_group(1)?,
        PartitionShape::Minority => first_group((n.saturating_sub(1) / 2).max(1))?,
        PartitionShape::Majority => first_group((n / 2 + 1).min(n.saturating_sub(1)))?,
        PartitionShape::Bridge => {
            if n < 3 {
                return Err(ResolveError::NoTarget { members: n });
            }
            let candidates = select("selector", plan.selector(), view, rng)?;
            let Some(&bridge) = draw(&candidates, 1, rng).first() else {
                return Err(ResolveError::NoTarget { members: n });
            };
            let mut others: Vec<NodeId> = all.iter().copied().filter(|&id| id != bridge).collect();
            rng.shuffle(&mut others);
            let mut side_b = others.split_off((n - 1) / 2);
            let mut side_a = others;
            side_a.sort_unstable();
            side_b.sort_unstable();
            alloc::vec![side_a, side_b]
        }
        PartitionShape::MajoritiesRing => {
            let mut ring = all.clone();
            rng.shuffle(&mut ring);
            let k = (n / 2).div_ceil(2);
            for (i, &a) in ring.iter().enumerate() {
                for (j, &b) in ring.iter().enumerate() {
                    let d = i.abs_diff(j);
                    if d.min(n - d) > k {
                        radius.links.insert(Link { from: a, to: b });
                    }
                }
            }
            radius.nodes = endpoints(&radius.links);
            return Ok(());
        }
        PartitionShape::Regions => {
            let mut by_region: BTreeMap<&str, Vec<NodeId>> = BTreeMap::new();
            for m in &view.members {
                by_region.entry(m.region.as_str()).or_default().push(m.id);
            }
            by_region.into_values().collect()
        }
        PartitionShape::Groups(explicit) => {
            let mut listed = BTreeSet::new();
            let mut groups = Vec::with_capacity(explicit.len() + 1);
            for group in explicit {
                let mut ids = Vec::with_capacity(group.len());
                for &index in group {
                    let id = *all
                        .get(index as usize)
                        .ok_or(ResolveError::IndexOutOfRange {
                            field: "fault.shape.groups",
                            index,
                            members: n,
                        })?;
                    listed.insert(id);
                    ids.push(id);
                }
                ids.sort_unstable();
                groups.push(ids);
            }
            let rest: Vec<NodeId> = all
                .iter()
                .copied()
                .filter(|id| !listed.contains(id))
                .collect();
            groups.push(rest);
            groups
        }
    };
    // The first group stays first even when another is empty: a one-way cut starts from it.
    if groups.first().is_none_or(Vec::is_empty) {
        return Err(ResolveError::NoTarget { members: n });
    }
    let groups: Vec<Vec<NodeId>> = groups.into_iter().filter(|g| !g.is_empty()).collect();
    if groups.len() < 2 {
        return Err(ResolveError::NoTarget { members: n });
    }
    for (gi, a) in groups.iter().enumerate() {
        for (gj, b) in groups.iter().enumerate() {
            let cut = match direction {
                PartitionDirection::TwoWay => gi != gj,
                PartitionDirection::OneWay => gi == 0 && gj != 0,
            };
            if cut {
                for &from in a {
                    for &to in b {
                        radius.links.insert(Link { from, to });
                    }
                }
            }
        }
    }
    radius.nodes = endpoints(&radius.links);
    radius.groups = groups;
    Ok(())
}
