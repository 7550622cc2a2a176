//! The member table: each member's state, the randomized round-robin probe order (SWIM §4.3),
//! and the anti-entropy bucket digests, kept up to date on every change.

use alloc::collections::{BTreeMap, BTreeSet};
use alloc::vec::Vec;

use super::MemberState;
use super::metadata::Metadata;
use crate::id::{Incarnation, MetaVersion, NodeId};
use crate::rng::NodeRng;
use crate::time::{Duration, Instant};
use crate::wire::{DIGEST_BUCKETS, MemberRecord};

/// Random picks tried before a sample falls back to scanning the table.
const SAMPLE_TRIES: usize = 8;
/// Slots of the probe order searched for a member nobody suspects before a Suspect one is
/// probed (see [`MemberTable::next_probe_target`]); bounds the work of one probe at any size.
const PROBE_LOOKAHEAD: usize = 64;

/// One member as this node knows it.
#[derive(Debug)]
pub(crate) struct Member {
    pub(crate) incarnation: Incarnation,
    pub(crate) state: MemberState,
    pub(crate) last_change: Instant,
    /// Smoothed round-trip time in microseconds; 0 while unmeasured.
    pub(crate) srtt_us: u32,
    /// The member's metadata; `None` while it is empty at `meta_version`.
    pub(crate) meta: Option<Box<Metadata>>,
    meta_version: MetaVersion,
    /// The relay that introduced this member, until the member is heard from directly.
    pub(crate) introduced_by: Option<NodeId>,
    /// When this node last told the member, held `Left`, that it holds it so (see
    /// `Membership::tell_speaking_leaver`): at most once per probe timeout.
    pub(crate) told_left_at: Option<Instant>,
    /// Whether the driver can address it (see [`MemberTable::require_routes`]): only such
    /// members are chosen as probe, gossip, helper or anti-entropy targets.
    pub(crate) routable: bool,
}

impl Member {
    pub(crate) fn new(now: Instant, incarnation: Incarnation, state: MemberState) -> Self {
        Self {
            incarnation,
            state,
            last_change: now,
            srtt_us: 0,
            meta: None,
            meta_version: MetaVersion::default(),
            introduced_by: None,
            told_left_at: None,
            routable: true,
        }
    }

    pub(crate) fn meta_version(&self) -> MetaVersion {
        self.meta
            .as_ref()
            .map_or(self.meta_version, |m| m.version())
    }

    /// The metadata copy, created empty at the held version on first use.
    pub(crate) fn meta_mut(&mut self) -> &mut Metadata {
        let v = self.meta_version;
        self.meta
            .get_or_insert_with(|| Box::new(Metadata::empty(v)))
    }

    /// Marks the (empty) metadata of a member that announced a fresh epoch with no writes.
    pub(crate) fn reset_empty_meta(&mut self, version: MetaVersion) {
        self.meta = None;
        self.meta_version = version;
    }

    /// Whether this node may choose it as its next probe target: up, and addressable by the
    /// driver. A member known only from a relay's word and still unaddressable after `grace`
    /// is probed all the same: a phantom never gets an address, and its failed probe is what
    /// forgets it and frees its relay's slot (the driver drops the ping).
    pub(crate) fn probe_eligible(&self, now: Instant, grace: Duration) -> bool {
        self.is_up()
            && (self.routable
                || (self.introduced_by.is_some()
                    && now.saturating_duration_since(self.last_change) >= grace))
    }

    pub(crate) fn is_up(&self) -> bool {
        matches!(self.state, MemberState::Alive | MemberState::Suspect)
    }
}

/// splitmix64's finalizer: a fixed, well-mixed hash (no per-process keys: digests must agree).
pub(crate) fn mix(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    x = (x ^ (x >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    x ^ (x >> 31)
}

/// The digest bucket a member belongs to.
pub(crate) fn bucket_of(node: NodeId) -> usize {
    (mix(node.get()) >> 57) as usize % DIGEST_BUCKETS
}

fn record_hash(r: &MemberRecord) -> u64 {
    let state = match r.state {
        MemberState::Alive => 1,
        MemberState::Suspect => 2,
        MemberState::Dead => 3,
        MemberState::Left => 4,
    };
    let mut h = mix(r.node.get());
    h = mix(h ^ (u64::from(r.incarnation.get()) << 8 | state));
    mix(h ^ (u64::from(r.meta.epoch) << 32 | u64::from(r.meta.seq)))
}

/// All members but the local node, plus the digests that include the local node's own record.
#[derive(Debug, Default)]
pub(crate) struct MemberTable {
    members: BTreeMap<NodeId, Member>,
    order: Vec<NodeId>,
    cursor: usize,
    digests: Vec<u64>,
    up: usize,
    /// Members in state Dead, so re-probing one costs nothing when there are none.
    dead: BTreeSet<NodeId>,
    /// The members the driver can address, once it said it needs addresses
    /// ([`Self::require_routes`]); `None`: every member (the simulator's network needs none).
    /// Only the driver adds to it, never a peer; it holds at most the ids the driver learnt an
    /// address for.
    routes: Option<BTreeSet<NodeId>>,
}

impl MemberTable {
    pub(crate) fn new() -> Self {
        Self {
            digests: vec![0; DIGEST_BUCKETS],
            ..Self::default()
        }
    }

    pub(crate) fn len(&self) -> usize {
        self.members.len()
    }

    /// Members Alive or Suspect (not counting the local node).
    pub(crate) fn up_count(&self) -> usize {
        self.up
    }

    pub(crate) fn get(&self, id: NodeId) -> Option<&Member> {
        self.members.get(&id)
    }

    pub(crate) fn iter(&self) -> impl Iterator<Item = (NodeId, &Member)> {
        self.members.iter().map(|(id, m)| (*id, m))
    }

    pub(crate) fn digests(&self) -> &[u64] {
        &self.digests
    }

    pub(crate) fn record(id: NodeId, m: &Member) -> MemberRecord {
        MemberRecord {
            node: id,
            incarnation: m.incarnation,
            state: m.state,
            meta: m.meta_version(),
        }
    }

    /// Folds a record in or out of its bucket's digest (XOR is its own inverse).
    pub(crate) fn toggle_digest(&mut self, r: &MemberRecord) {
        self.digests[bucket_of(r.node)] ^= record_hash(r);
    }

    /// From now on a member is routable only once [`Self::set_routable`] named it.
    pub(crate) fn require_routes(&mut self) {
        let routes = self.routes.get_or_insert_with(BTreeSet::new);
        for (id, m) in &mut self.members {
            m.routable = routes.contains(id);
        }
    }

    /// The driver can address `id` now (it may not be a member yet).
    pub(crate) fn set_routable(&mut self, id: NodeId) {
        if let Some(routes) = &mut self.routes {
            routes.insert(id);
        }
        if let Some(m) = self.members.get_mut(&id) {
            m.routable = true;
        }
    }

    /// Adds a member, placing it at a random point of the remaining probe round.
    pub(crate) fn insert(&mut self, rng: &mut NodeRng, id: NodeId, mut member: Member) {
        member.routable = self.routes.as_ref().is_none_or(|r| r.contains(&id));
        debug_assert!(
            !self.members.contains_key(&id),
            "insert of a known member {id}"
        );
        self.toggle_digest(&Self::record(id, &member));
        self.up += usize::from(member.is_up());
        if member.state == MemberState::Dead {
            self.dead.insert(id);
        }
        self.members.insert(id, member);
        self.order.push(id);
        let last = self.order.len() - 1;
        if last > self.cursor {
            let at = self.cursor + rng.index(last - self.cursor + 1);
            self.order.swap(at, last);
        }
    }

    /// Changes a member through `f`, keeping digests and counts right.
    pub(crate) fn modify<R>(&mut self, id: NodeId, f: impl FnOnce(&mut Member) -> R) -> Option<R> {
        let m = self.members.get_mut(&id)?;
        let before = Self::record(id, m);
        let was_up = m.is_up();
        let out = f(m);
        let after = Self::record(id, m);
        let is_up = m.is_up();
        if before != after {
            self.toggle_digest(&before);
            self.toggle_digest(&after);
        }
        self.up = self.up + usize::from(is_up) - usize::from(was_up);
        if before.state != after.state {
            if after.state == MemberState::Dead {
                self.dead.insert(id);
            } else {
                self.dead.remove(&id);
            }
        }
        Some(out)
    }

    /// Forgets a member (its slot in the probe order is dropped at the next reshuffle).
    pub(crate) fn remove(&mut self, id: NodeId) -> Option<Member> {
        let m = self.members.remove(&id)?;
        self.toggle_digest(&Self::record(id, &m));
        self.up -= usize::from(m.is_up());
        self.dead.remove(&id);
        Some(m)
    }

    /// The next member to probe in randomized round-robin order among those `eligible`,
    /// preferring an `Alive` member (one nobody suspects here) within the next
    /// [`PROBE_LOOKAHEAD`] slots of this round: a Suspect member passed over moves to the
    /// slot the preferred one left, later in the same round, so every member is still probed
    /// once a round (SWIM §4.3's bound on the time to first detection holds). Why: a suspect
    /// needs no new suspicion, while a member nobody suspects yet does; a node cut off with a
    /// minority otherwise spends its probes re-checking members its peers already suspect,
    /// and takes several rounds to suspect every member of the majority once (#19 class 4).
    pub(crate) fn next_probe_target(
        &mut self,
        rng: &mut NodeRng,
        eligible: impl Fn(&Member) -> bool,
        prefer: bool,
    ) -> Option<NodeId> {
        for _ in 0..=self.order.len() {
            if self.cursor >= self.order.len() {
                self.reshuffle(rng);
                if self.order.is_empty() {
                    return None;
                }
            }
            let end = self.order.len().min(self.cursor + PROBE_LOOKAHEAD);
            let preferred = (self.cursor..end).find(|&j| {
                self.members
                    .get(&self.order[j])
                    .is_some_and(|m| m.state == MemberState::Alive && eligible(m))
            });
            if let Some(j) = preferred.filter(|_| prefer) {
                self.order.swap(self.cursor, j);
            }
            let id = self.order[self.cursor];
            self.cursor += 1;
            if self.members.get(&id).is_some_and(&eligible) {
                return Some(id);
            }
        }
        None
    }

    /// Gives back the target [`Self::next_probe_target`] returned last, unprobed: it comes
    /// first next time. For a period whose probes wrapped the round onto a member it probes
    /// already; without it that member would lose its slot in the new round.
    pub(crate) fn give_back_probe_target(&mut self) {
        self.cursor = self.cursor.saturating_sub(1);
    }

    fn reshuffle(&mut self, rng: &mut NodeRng) {
        let members = &self.members;
        self.order.retain(|id| members.contains_key(id));
        for i in (1..self.order.len()).rev() {
            self.order.swap(i, rng.index(i + 1));
        }
        self.cursor = 0;
    }

    /// One uniformly random Dead member the driver can address.
    pub(crate) fn random_dead(&self, rng: &mut NodeRng) -> Option<NodeId> {
        if self.dead.is_empty() {
            return None;
        }
        let start = rng.index(self.dead.len());
        let routable = |id: &&NodeId| self.members.get(id).is_some_and(|m| m.routable);
        self.dead
            .iter()
            .skip(start)
            .chain(self.dead.iter().take(start))
            .find(routable)
            .copied()
    }

    /// One uniformly random member among those `eligible` and not in `exclude`.
    pub(crate) fn random(
        &self,
        rng: &mut NodeRng,
        exclude: &[NodeId],
        eligible: impl Fn(&Member) -> bool,
    ) -> Option<NodeId> {
        if self.order.is_empty() {
            return None;
        }
        let ok = |id: &NodeId| !exclude.contains(id) && self.members.get(id).is_some_and(&eligible);
        for _ in 0..SAMPLE_TRIES {
            let id = self.order[rng.index(self.order.len())];
            if ok(&id) {
                return Some(id);
            }
        }
        // Few eligible members: scan from a random point so the pick stays spread out.
        let start = rng.index(self.order.len());
        (0..self.order.len())
            .map(|i| self.order[(start + i) % self.order.len()])
            .find(ok)
    }

    /// Up to `k` distinct random members among those `eligible` and not in `exclude`.
    pub(crate) fn sample(
        &self,
        rng: &mut NodeRng,
        k: usize,
        exclude: &[NodeId],
        eligible: impl Fn(&Member) -> bool + Copy,
    ) -> Vec<NodeId> {
        let mut picked: Vec<NodeId> = Vec::with_capacity(k);
        let mut skip: Vec<NodeId> = exclude.to_vec();
        while picked.len() < k {
            let Some(id) = self.random(rng, &skip, eligible) else {
                break;
            };
            picked.push(id);
            skip.push(id);
        }
        picked
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn digests_follow_changes() {
        let mut rng = NodeRng::from_seed(1);
        let mut a = MemberTable::new();
        let mut b = MemberTable::new();
        for i in 0..50 {
            a.insert(
                &mut rng,
                NodeId::new(i),
                Member::new(Instant::ZERO, Incarnation::new(1), MemberState::Alive),
            );
        }
        for i in (0..50).rev() {
            b.insert(
                &mut rng,
                NodeId::new(i),
                Member::new(Instant::ZERO, Incarnation::new(1), MemberState::Alive),
            );
        }
        assert_eq!(
            a.digests(),
            b.digests(),
            "digests do not depend on insertion order"
        );
        a.modify(NodeId::new(7), |m| m.state = MemberState::Suspect);
        assert_ne!(a.digests(), b.digests());
        let differing = a
            .digests()
            .iter()
            .zip(b.digests())
            .filter(|(x, y)| x != y)
            .count();
        assert_eq!(differing, 1);
        a.modify(NodeId::new(7), |m| m.state = MemberState::Alive);
        assert_eq!(a.digests(), b.digests());
        assert_eq!(a.up_count(), 50);
    }

    #[test]
    fn probe_order_visits_everyone_once_per_round() {
        let mut rng = NodeRng::from_seed(2);
        let mut t = MemberTable::new();
        for i in 0..20 {
            t.insert(
                &mut rng,
                NodeId::new(i),
                Member::new(Instant::ZERO, Incarnation::new(1), MemberState::Alive),
            );
        }
        let mut seen: Vec<_> = (0..20)
            .map(|_| t.next_probe_target(&mut rng, |_| true, true).unwrap().get())
            .collect();
        seen.sort_unstable();
        assert_eq!(seen, (0..20).collect::<Vec<_>>());
    }

    /// #19 class 4: members nobody suspects are probed before the Suspect ones of the same
    /// round, and the Suspect ones are still probed in that round (not skipped); with more
    /// members than the look-ahead, too.
    #[test]
    fn probe_order_takes_members_nobody_suspects_first_and_still_visits_everyone() {
        for (n, suspects) in [(20u64, 15u64), (200, 150)] {
            let mut rng = NodeRng::from_seed(3);
            let mut t = MemberTable::new();
            for i in 0..n {
                let state = if i < suspects {
                    MemberState::Suspect
                } else {
                    MemberState::Alive
                };
                t.insert(
                    &mut rng,
                    NodeId::new(i),
                    Member::new(Instant::ZERO, Incarnation::new(1), state),
                );
            }
            // Start a fresh round, then take one round's worth.
            let first = t.next_probe_target(&mut rng, |_| true, true).unwrap();
            let mut round = vec![first.get()];
            round.extend(
                (1..n).map(|_| t.next_probe_target(&mut rng, |_| true, true).unwrap().get()),
            );
            // Within the look-ahead every member nobody suspects comes first; past it, the
            // first ones still do while they are dense enough to be in reach.
            let first_alive = if n as usize <= PROBE_LOOKAHEAD {
                n - suspects
            } else {
                20
            };
            assert!(
                round[..first_alive as usize].iter().all(|&i| i >= suspects),
                "n {n}: the first {first_alive} probes go to members nobody suspects: {round:?}"
            );
            round.sort_unstable();
            assert_eq!(round, (0..n).collect::<Vec<_>>(), "n {n}: everyone once");
        }
    }
}
