//! Invariants checked while the run goes; the first violation stops the run.
//!
//! 1. **Incarnations never go back.** While a member stays in an observer's table, the
//!    observer's view of its incarnation never decreases (SWIM §4.2: only the member raises it,
//!    and a lower incarnation never overrides a higher one). Checked on every state-change event
//!    of a *watched* observer and by a periodic sweep over the watched observers' tables (a few
//!    observers per tick, round-robin, so that the sweep's cost does not grow with N). Every
//!    observer is watched up to [`WATCH_ALL_MAX_NODES`] nodes; beyond that a fixed spread of
//!    [`WATCHED_OBSERVERS`] observers, to keep memory at O(N).
//! 2. **A live node never holds itself Suspect or Dead.** Checked on every event (a state change
//!    about the observer itself) and by the sweep (`member(local_id)`).
//! 3. **Metadata copies are exact, and deleted keys never come back.** The simulator records
//!    every write of every owner, so when observer O reports `MetadataChanged { node: X, version:
//!    V }`, O's copy of X's metadata is compared with X's state rebuilt at the copy's version
//!    (which is V, or later when several events were queued): the same live keys with the same
//!    bytes, no key the owner had deleted by then, and never a version the owner did not write.
//! 4. **Determinism** (the same seed gives the same trace hash) is a unit test, not a run check.
//!
//! Datagrams the core refuses (it must decode everything its peers encode) are violations too.

use core::fmt;
use core::time::Duration;
use std::collections::BTreeMap;

use meshkit::membership::{MemberState, Membership, Metadata};
use meshkit::{Instant, MetaVersion, NodeId};

/// Up to this many nodes, every observer's incarnation views are tracked.
pub(crate) const WATCH_ALL_MAX_NODES: usize = 1_024;
/// Beyond [`WATCH_ALL_MAX_NODES`], this many observers (evenly spread) are tracked.
pub(crate) const WATCHED_OBSERVERS: usize = 64;
/// Period of the sweep over watched observers' tables.
pub(crate) const SWEEP_INTERVAL: Duration = Duration::from_secs(5);
/// Member views one sweep reads at most: it walks as many watched observers as fit (at least
/// one), round-robin, so the sweep costs O(1) per virtual second whatever the mesh size.
const SWEEP_VIEWS_PER_TICK: usize = 65_536;
/// Violations kept for the report; the run stops at the first anyway.
const MAX_VIOLATIONS_KEPT: usize = 16;

/// One broken invariant.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Violation {
    /// When.
    pub(crate) at: Instant,
    /// What, in a sentence.
    pub(crate) what: String,
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "at {}: {}", self.at, self.what)
    }
}

/// One metadata write by an owner.
#[derive(Clone, Debug)]
struct Write {
    version: MetaVersion,
    key: String,
    value: Option<Vec<u8>>,
}

/// Every write of one owner, across its lives, and the last rebuilt state.
#[derive(Clone, Debug, Default)]
struct OwnerLog {
    writes: Vec<Write>,
    cached: Option<(MetaVersion, BTreeMap<String, Vec<u8>>)>,
}

impl OwnerLog {
    /// The owner's live keys right after write `version`, or `None` if it never wrote it.
    fn state_at(&mut self, version: MetaVersion) -> Option<&BTreeMap<String, Vec<u8>>> {
        if self.cached.as_ref().is_none_or(|(v, _)| *v != version) {
            let in_epoch = self
                .writes
                .iter()
                .filter(|w| w.version.epoch == version.epoch);
            let mut state = BTreeMap::new();
            let mut reached = version.seq == 0;
            for w in in_epoch.filter(|w| w.version.seq <= version.seq) {
                reached |= w.version == version;
                match &w.value {
                    Some(v) => state.insert(w.key.clone(), v.clone()),
                    None => state.remove(&w.key),
                };
            }
            if !reached {
                return None;
            }
            self.cached = Some((version, state));
        }
        self.cached.as_ref().map(|(_, s)| s)
    }
}

/// See the module documentation.
#[derive(Debug)]
pub(crate) struct Invariants {
    nodes: usize,
    violations: Vec<Violation>,
    /// Row index into `incarnations` of each watched observer.
    watch_row: Vec<Option<u32>>,
    /// The watched observers, and the next one the sweep visits.
    watched: Vec<usize>,
    sweep_cursor: usize,
    /// Last incarnation each watched observer held for each member (0 = not in its table).
    incarnations: Vec<u32>,
    owners: BTreeMap<u32, OwnerLog>,
}

impl Invariants {
    /// Checks for a mesh of `nodes` nodes.
    pub(crate) fn new(nodes: usize) -> Self {
        let watched: Vec<usize> = if nodes <= WATCH_ALL_MAX_NODES {
            (0..nodes).collect()
        } else {
            (0..WATCHED_OBSERVERS)
                .map(|k| k * nodes / WATCHED_OBSERVERS)
                .collect()
        };
        let mut watch_row = vec![None; nodes];
        for (row, &o) in watched.iter().enumerate() {
            watch_row[o] = Some(row as u32);
        }
        // Bootstrapped tables hold every other member at incarnation 1.
        let mut incarnations = vec![1u32; watched.len() * nodes];
        for (row, &o) in watched.iter().enumerate() {
            incarnations[row * nodes + o] = 0;
        }
        Self {
            nodes,
            violations: Vec::new(),
            watch_row,
            watched,
            sweep_cursor: 0,
            incarnations,
            owners: BTreeMap::new(),
        }
    }

    /// Whether any invariant broke.
    pub(crate) fn violated(&self) -> bool {
        !self.violations.is_empty()
    }

    /// The violations so far.
    pub(crate) fn violations(&self) -> &[Violation] {
        &self.violations
    }

    /// Records a violation found elsewhere (the engine's own checks).
    pub(crate) fn violation(&mut self, at: Instant, what: String) {
        if self.violations.len() < MAX_VIOLATIONS_KEPT {
            self.violations.push(Violation { at, what });
        }
    }

    /// The owner wrote `key` (`None`: deleted it) at `version`.
    pub(crate) fn record_write(
        &mut self,
        owner: usize,
        version: MetaVersion,
        key: &str,
        value: Option<&[u8]>,
    ) {
        let log = self.owners.entry(owner as u32).or_default();
        log.writes.push(Write {
            version,
            key: key.to_owned(),
            value: value.map(<[u8]>::to_vec),
        });
    }

    /// `observer` restarted with an empty table.
    pub(crate) fn on_restart(&mut self, observer: usize) {
        if let Some(row) = self.watch_row[observer] {
            let start = row as usize * self.nodes;
            self.incarnations[start..start + self.nodes].fill(0);
        }
    }

    /// Invariants 1 and 2 on a state-change event.
    #[expect(
        clippy::too_many_arguments,
        reason = "the event's fields, unpacked once by the engine"
    )]
    pub(crate) fn on_member_state(
        &mut self,
        now: Instant,
        observer: usize,
        node: usize,
        incarnation: u32,
        from: Option<MemberState>,
        to: MemberState,
        observer_live: bool,
    ) {
        if node == observer {
            if observer_live && matches!(to, MemberState::Suspect | MemberState::Dead) {
                self.violation(now, format!("node-{} holds itself {to:?}", observer + 1));
            }
            return;
        }
        let Some(row) = self.watch_row[observer] else {
            return;
        };
        if node >= self.nodes {
            return;
        }
        let at = row as usize * self.nodes + node;
        let before = self.incarnations[at];
        self.incarnations[at] = incarnation;
        if from.is_some() && before != 0 && incarnation < before {
            self.violation(
                now,
                format!(
                    "node-{} lowered its view of node-{}'s incarnation from {before} to \
                     {incarnation} ({from:?} -> {to:?})",
                    observer + 1,
                    node + 1
                ),
            );
        }
    }

    /// Invariant 3 when `observer` reports `owner`'s metadata at `version`.
    pub(crate) fn on_metadata(
        &mut self,
        now: Instant,
        observer: &Membership,
        owner: usize,
        version: MetaVersion,
    ) {
        let o = observer.local_id();
        let owner_id = NodeId::new(owner as u64 + 1);
        // The core keeps an empty copy as just a version (`metadata()` is then `None`).
        let (held, copy) = match observer.metadata(owner_id) {
            Some(copy) => (copy.version(), Some(copy)),
            None => match observer.member(owner_id) {
                Some(m) => (m.meta_version, None),
                None => {
                    self.violation(
                        now,
                        format!(
                            "{o} reported metadata {version} of node-{} but does not know it",
                            owner + 1
                        ),
                    );
                    return;
                }
            },
        };
        if held < version {
            self.violation(
                now,
                format!(
                    "{o} reported metadata {version} of node-{} but holds {held}",
                    owner + 1
                ),
            );
            return;
        }
        let mut log = self.owners.remove(&(owner as u32)).unwrap_or_default();
        let problem = match log.state_at(held) {
            None => Some(format!("version {held} was never written by its owner")),
            Some(state) => compare(copy, state),
        };
        self.owners.insert(owner as u32, log);
        if let Some(problem) = problem {
            self.violation(
                now,
                format!(
                    "{o}'s copy of node-{}'s metadata at {held}: {problem}",
                    owner + 1
                ),
            );
        }
    }

    /// One tick of the periodic sweep of invariants 1 and 2: the next few watched observers
    /// (see [`SWEEP_VIEWS_PER_TICK`]), each looked up with `running` (`None`: not running).
    pub(crate) fn sweep<'a>(
        &mut self,
        now: Instant,
        running: impl Fn(usize) -> Option<&'a Membership>,
    ) {
        if self.watched.is_empty() {
            return;
        }
        let per_tick = (SWEEP_VIEWS_PER_TICK / self.nodes.max(1)).clamp(1, self.watched.len());
        for k in 0..per_tick {
            let index = self.watched[(self.sweep_cursor + k) % self.watched.len()];
            let Some(node) = running(index) else { continue };
            if let Some(me) = node.member(node.local_id())
                && matches!(me.state, MemberState::Suspect | MemberState::Dead)
            {
                self.violation(
                    now,
                    format!("{} holds itself {:?}", node.local_id(), me.state),
                );
            }
            let Some(row) = self.watch_row[index] else {
                continue;
            };
            let start = row as usize * self.nodes;
            let mut next = 0usize;
            let mut found = Vec::new();
            for m in node.members() {
                let Some(k) = (m.id.get() as usize)
                    .checked_sub(1)
                    .filter(|&k| k < self.nodes)
                else {
                    continue;
                };
                if k == index {
                    continue;
                }
                // Members missing between the previous id and this one left the table.
                self.incarnations[start + next..start + k].fill(0);
                next = k + 1;
                let slot = self.incarnations[start + k];
                if slot != 0 && m.incarnation.get() < slot {
                    found.push(format!(
                        "{} holds node-{} at incarnation {} after {slot}",
                        node.local_id(),
                        k + 1,
                        m.incarnation.get()
                    ));
                }
                self.incarnations[start + k] = m.incarnation.get();
            }
            if next < self.nodes {
                self.incarnations[start + next..start + self.nodes].fill(0);
            }
            self.incarnations[start + index] = 0;
            for what in found {
                self.violation(now, what);
            }
        }
        self.sweep_cursor = (self.sweep_cursor + per_tick) % self.watched.len();
    }
}

/// Why a copy differs from the owner's state, if it does.
fn compare(copy: Option<&Metadata>, state: &BTreeMap<String, Vec<u8>>) -> Option<String> {
    let Some(copy) = copy else {
        return state
            .keys()
            .next()
            .map(|k| format!("the copy is empty but key {k:?} is missing"));
    };
    let mut live = 0usize;
    for (key, value) in copy.live() {
        live += 1;
        match state.get(key) {
            None => {
                return Some(format!(
                    "key {key:?} is present but the owner deleted it or never set it"
                ));
            }
            Some(v) if v.as_slice() != value => {
                return Some(format!(
                    "key {key:?} has {} bytes that differ from the owner's",
                    value.len()
                ));
            }
            Some(_) => {}
        }
    }
    if live != state.len() {
        let missing = state.keys().find(|k| copy.get(k).is_none());
        return Some(format!("key {missing:?} is missing"));
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn owner_state_is_rebuilt_per_epoch_and_version() {
        let mut log = OwnerLog::default();
        let w = |epoch, seq, key: &str, value: Option<&[u8]>| Write {
            version: MetaVersion::new(epoch, seq),
            key: key.to_owned(),
            value: value.map(<[u8]>::to_vec),
        };
        log.writes.push(w(1, 1, "a", Some(b"x")));
        log.writes.push(w(1, 2, "b", Some(b"y")));
        log.writes.push(w(1, 3, "a", None));
        log.writes.push(w(2, 1, "c", Some(b"z")));
        assert_eq!(log.state_at(MetaVersion::new(1, 2)).unwrap().len(), 2);
        let s = log.state_at(MetaVersion::new(1, 3)).unwrap();
        assert_eq!(s.keys().collect::<Vec<_>>(), vec!["b"]);
        assert!(log.state_at(MetaVersion::new(1, 0)).unwrap().is_empty());
        assert_eq!(
            log.state_at(MetaVersion::new(2, 1))
                .unwrap()
                .keys()
                .next()
                .unwrap(),
            "c"
        );
        assert!(log.state_at(MetaVersion::new(1, 9)).is_none());
    }

    #[test]
    fn a_resurrected_or_altered_key_is_a_violation() {
        use meshkit::config::{Config, Profile};
        use meshkit::{Incarnation, Instant};
        let t = Instant::ZERO;
        let id = NodeId::new(1);
        let mut owner = Membership::new(
            Config::from_profile(Profile::Lan),
            id,
            Incarnation::new(1),
            1,
            t,
        );
        let mut inv = Invariants::new(2);
        let v1 = owner.set_metadata(t, "a", b"x").unwrap();
        inv.record_write(0, v1, "a", Some(b"x"));
        inv.on_metadata(t, &owner, 0, v1);
        assert!(!inv.violated(), "{:?}", inv.violations());
        // The owner deletes `a`, but the log is told the copy still has it: a resurrection.
        let v2 = owner.set_metadata(t, "b", b"y").unwrap();
        inv.record_write(0, v2, "a", None);
        inv.on_metadata(t, &owner, 0, v2);
        assert!(inv.violated());
        assert!(
            inv.violations()[0].what.contains("deleted"),
            "{}",
            inv.violations()[0]
        );
    }

    #[test]
    fn incarnation_going_back_is_a_violation() {
        let mut inv = Invariants::new(3);
        let t = Instant::from_nanos(1);
        inv.on_member_state(
            t,
            0,
            1,
            3,
            Some(MemberState::Alive),
            MemberState::Suspect,
            true,
        );
        assert!(!inv.violated());
        inv.on_member_state(
            t,
            0,
            1,
            2,
            Some(MemberState::Suspect),
            MemberState::Alive,
            true,
        );
        assert!(inv.violated());
        // Forgotten then relearned: allowed.
        let mut inv = Invariants::new(3);
        inv.on_member_state(
            t,
            0,
            1,
            3,
            Some(MemberState::Alive),
            MemberState::Alive,
            true,
        );
        inv.on_member_state(t, 0, 1, 1, None, MemberState::Alive, true);
        assert!(!inv.violated());
        inv.on_member_state(
            t,
            2,
            2,
            1,
            Some(MemberState::Alive),
            MemberState::Dead,
            true,
        );
        assert!(inv.violated(), "a node holding itself dead");
    }
}
