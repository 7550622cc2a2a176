//! The observer: what every node believes, folded from the core's events, against the truth the
//! engine knows (who crashed, paused, left or was partitioned).
//!
//! It keeps one bit per (observer, member) pair: "the observer holds the member as up" (Alive or
//! Suspect). With the set of live nodes this gives, incrementally and in O(1) per event:
//! * the number of *view mismatches* (a live observer holding a live member down, or a gone
//!   member up); zero means one view, which dates the end of a partition's aftermath (`heal_s`);
//! * per crashed node, how many live nodes hold it down (crash detection time);
//! * per workload metadata write, how many live nodes report that version (dissemination time);
//! * Dead verdicts about running nodes: false positives (the node was running and reachable
//!   from the observer), "paused-dead" (the node was paused at that instant) and verdicts across
//!   a partition still in force (expected: the observer cannot reach the node);
//! * per partition and per side, when every live node of the side first held every live node of
//!   the other sides down (how long a cut-off side takes to complete its own view);
//! * own-probe suspicions against healthy nodes.
//!
//! Nothing is excused by time: a node that resumed from a pause, restarted, or whose partition
//! healed a moment ago is healthy again, and a Dead verdict about it is a false positive.
//!
//! Memory is N^2 bits (12.5 MB at 10,000 nodes) plus N bits per pending crash or write.
//! Lifecycle changes (crash, restart, leave) cost O(N) each.

use std::collections::{BTreeMap, BTreeSet};

use meshkit::membership::MemberState;
use meshkit::{Instant, MetaVersion};

use self::bits::BitRows;
use crate::network::Partition;
use crate::report::{FalsePositiveVerdict, MAX_EXPLAINED_VERDICTS};

/// Share of the live nodes that must hold a crashed node down for it to count as detected.
pub(crate) const DETECTION_QUORUM: f64 = 0.99;

/// Small bit-matrix helpers (no allocation per call).
mod bits {
    /// `rows` rows of `bits` bits each, row-major in 64-bit words.
    #[derive(Clone, Debug)]
    pub(crate) struct BitRows {
        words: usize,
        data: Vec<u64>,
    }

    impl BitRows {
        /// All bits of every row set (within `bits`), or all clear.
        pub(crate) fn new(rows: usize, bits: usize, set: bool) -> Self {
            let words = bits.div_ceil(64);
            let mut data = vec![0u64; rows * words];
            if set {
                for r in 0..rows {
                    fill_row(&mut data[r * words..(r + 1) * words], bits);
                }
            }
            Self { words, data }
        }

        pub(crate) fn get(&self, row: usize, bit: usize) -> bool {
            self.data[row * self.words + bit / 64] >> (bit % 64) & 1 == 1
        }

        pub(crate) fn set(&mut self, row: usize, bit: usize, value: bool) {
            let w = &mut self.data[row * self.words + bit / 64];
            if value {
                *w |= 1 << (bit % 64);
            } else {
                *w &= !(1 << (bit % 64));
            }
        }

        pub(crate) fn row(&self, row: usize) -> &[u64] {
            &self.data[row * self.words..(row + 1) * self.words]
        }

        pub(crate) fn clear_row(&mut self, row: usize) {
            self.data[row * self.words..(row + 1) * self.words].fill(0);
        }
    }

    fn fill_row(row: &mut [u64], bits: usize) {
        row.fill(u64::MAX);
        if !bits.is_multiple_of(64)
            && let Some(last) = row.last_mut()
        {
            *last = (1u64 << (bits % 64)) - 1;
        }
    }
}

/// One crashed node's detection.
#[derive(Clone, Debug)]
struct CrashRecord {
    node: usize,
    at: Instant,
    /// Live nodes (other than `node`) that hold it down.
    down: usize,
    outcome: CrashOutcome,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum CrashOutcome {
    Pending,
    Detected(Instant),
    /// The node came back before the mesh had declared it.
    RestartedFirst,
    /// The mesh already held the node down when it crashed (a paused node declared dead, say):
    /// there was nothing left to detect, and a 0 s detection would flatter the figures.
    AlreadyDown,
    /// No live node was left to detect it (every node crashed).
    NoObserver,
}

/// One workload metadata write's spread.
#[derive(Clone, Debug)]
struct UpdateRecord {
    owner: usize,
    version: MetaVersion,
    at: Instant,
    /// Which nodes reported a version at least `version` (freed when no longer pending).
    reached: BitRows,
    /// Live nodes among `reached`.
    count: usize,
    outcome: UpdateOutcome,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum UpdateOutcome {
    Pending,
    Done(Instant),
    /// The owner crashed or left first.
    Abandoned,
}

/// A partition.
#[derive(Clone, Debug)]
struct PartitionRecord {
    id: u64,
    group: Vec<u8>,
    start: Instant,
    end: Option<Instant>,
    /// Per group (by group number): its view of the other groups.
    sides: Vec<SideView>,
}

/// One side of a partition: how many (observer in the side, member outside it) pairs of live
/// nodes still have the observer holding the member up, and when that first reached zero.
#[derive(Clone, Debug)]
struct SideView {
    /// The side's members (bit per node).
    mask: BitRows,
    /// Nodes in the side when the partition began.
    size: usize,
    /// Live pairs still held up across the cut; meaningless once `done`.
    pending: u64,
    done: Option<Instant>,
}

/// One pause (gray failure) of a node.
#[derive(Clone, Copy, Debug)]
struct PauseRecord {
    /// Some node declared the paused node Dead during the pause.
    declared_dead: bool,
}

/// Why a node stopped being live.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Down {
    /// Crashed: its detection is measured.
    Crash,
    /// Left gracefully.
    Leave,
}

/// Figures the observer hands to the report.
#[derive(Clone, Debug, Default, PartialEq)]
pub(crate) struct Observations {
    /// Detection time of every crash that was detected or is still pending at the end (the
    /// latter counted up to the end).
    pub(crate) detection_s: Vec<f64>,
    /// Crashes never detected.
    pub(crate) undetected: u64,
    /// Crashes whose node restarted before the mesh declared it.
    pub(crate) restarted_before_detection: u64,
    /// Crashes of a node the mesh already held down, or with no live node left to detect them.
    pub(crate) not_measurable: u64,
    /// Crashes in all.
    pub(crate) crashes: u64,
    /// Distinct nodes some node declared dead while they ran and could reach it (paused
    /// nodes count once they resumed).
    pub(crate) false_positives: u64,
    /// Dead verdicts (observer, node) behind `false_positives`.
    pub(crate) false_positive_verdicts: u64,
    /// The first false positive, described.
    pub(crate) first_false_positive: Option<String>,
    /// With `explain`: every false-positive verdict (the first `MAX_EXPLAINED_VERDICTS`).
    pub(crate) false_positive_log: Vec<FalsePositiveVerdict>,
    /// Pauses in all.
    pub(crate) pauses: u64,
    /// Pauses during which some node declared the paused node Dead.
    pub(crate) paused_dead: u64,
    /// Dead verdicts about a node while it was paused.
    pub(crate) paused_dead_verdicts: u64,
    /// Dead verdicts across a partition in force (observer and node on different sides).
    pub(crate) cut_off_verdicts: u64,
    /// Per partition, its smallest side (the first such): time from the partition until every
    /// live node of the side held every live node of the other sides down; `None` if the
    /// partition healed, or the run ended, first.
    pub(crate) minority_view_s: Vec<Option<f64>>,
    /// The same for the largest side (the first such).
    pub(crate) majority_view_s: Vec<Option<f64>>,
    /// Own-probe suspicions of healthy nodes.
    pub(crate) suspicions: u64,
    /// Live node-seconds.
    pub(crate) live_node_s: f64,
    /// Dissemination time of every workload write done or pending at the end.
    pub(crate) dissemination_s: Vec<f64>,
    /// Workload writes still incomplete at the end.
    pub(crate) dissemination_incomplete: u64,
    /// Workload writes measured.
    pub(crate) updates: u64,
    /// Partitions started.
    pub(crate) partitions: u64,
    /// Time from the last heal to one view, if reached.
    pub(crate) heal_s: Option<f64>,
    /// Whether the view was single when observed last (event-derived).
    pub(crate) one_view: bool,
}

/// What explaining false positives needs besides the verdicts: when each (observer, member) pair
/// held Suspect began, and on whose word; each node's own incarnation and last refutation.
#[derive(Debug, Default)]
struct Explain {
    /// (observer, member) -> (held Suspect since, raised by).
    suspect_since: BTreeMap<(u32, u32), (Instant, Option<u32>)>,
    /// Per node: its own incarnation as it last announced it (boot or refutation).
    incarnation: Vec<u32>,
    /// Per node: its last refutation.
    refuted_at: Vec<Option<Instant>>,
    log: Vec<FalsePositiveVerdict>,
}

/// See the module documentation.
#[derive(Debug)]
pub(crate) struct Observer {
    nodes: usize,
    up: BitRows,
    live: BitRows,
    live_count: usize,
    mismatches: u64,
    paused: Vec<bool>,
    /// Index into `pauses` of each paused node's pause.
    pause_of: Vec<Option<u32>>,
    pauses: Vec<PauseRecord>,
    boot_incarnation: Vec<u32>,
    partitions: Vec<PartitionRecord>,
    /// Index into `crashes` of each node's pending crash record.
    crash_of: Vec<Option<u32>>,
    crashes: Vec<CrashRecord>,
    pending_crashes: Vec<u32>,
    updates: Vec<UpdateRecord>,
    pending_updates: Vec<u32>,
    false_positives: BTreeSet<u32>,
    false_positive_verdicts: u64,
    first_false_positive: Option<String>,
    /// Whether false positives are explained (see [`Self::explain`]).
    explain: Option<Explain>,
    paused_dead_verdicts: u64,
    cut_off_verdicts: u64,
    suspicions: u64,
    live_ns: u128,
    live_since: Instant,
    last_heal: Option<Instant>,
    healed_at: Option<Instant>,
    partitions_started: u64,
}

impl Observer {
    /// A converged mesh of `nodes` live nodes, each holding every other as up.
    #[cfg(test)]
    pub(crate) fn new(nodes: usize) -> Self {
        Self::with_spares(nodes, 0)
    }

    /// A converged mesh of `nodes - spares` live nodes, each holding every other as up, and
    /// after them `spares` slots that are not members yet: not live, held down by everyone
    /// (nobody knows them), so they count in no figure until one boots
    /// ([`Self::on_restart`]).
    pub(crate) fn with_spares(nodes: usize, spares: usize) -> Self {
        let members = nodes - spares;
        let mut up = BitRows::new(nodes, nodes, true);
        let mut live = BitRows::new(1, nodes, true);
        for i in 0..nodes {
            up.set(i, i, false);
        }
        for s in members..nodes {
            up.clear_row(s);
            live.set(0, s, false);
            for o in 0..members {
                up.set(o, s, false);
            }
        }
        Self {
            nodes,
            up,
            live,
            live_count: members,
            mismatches: 0,
            paused: vec![false; nodes],
            pause_of: vec![None; nodes],
            pauses: Vec::new(),
            boot_incarnation: vec![1; nodes],
            partitions: Vec::new(),
            crash_of: vec![None; nodes],
            crashes: Vec::new(),
            pending_crashes: Vec::new(),
            updates: Vec::new(),
            pending_updates: Vec::new(),
            false_positives: BTreeSet::new(),
            false_positive_verdicts: 0,
            first_false_positive: None,
            explain: None,
            paused_dead_verdicts: 0,
            cut_off_verdicts: 0,
            suspicions: 0,
            live_ns: 0,
            live_since: Instant::ZERO,
            last_heal: None,
            healed_at: None,
            partitions_started: 0,
        }
    }

    /// Explains every false positive from now on (see `Observations::false_positive_log`).
    pub(crate) fn explain(&mut self) {
        self.explain = Some(Explain {
            incarnation: self.boot_incarnation.clone(),
            refuted_at: vec![None; self.nodes],
            ..Explain::default()
        });
    }

    /// `node` refuted a claim about itself and now announces `incarnation`.
    pub(crate) fn on_refuted(&mut self, now: Instant, node: usize, incarnation: u32) {
        if let Some(e) = self.explain.as_mut()
            && node < self.nodes
        {
            e.incarnation[node] = incarnation;
            e.refuted_at[node] = Some(now);
        }
    }

    /// Whether `node` is live (not crashed, not left).
    pub(crate) fn is_live(&self, node: usize) -> bool {
        self.live.get(0, node)
    }

    /// How many nodes are live now (members running or paused; not crashed, not left).
    pub(crate) fn live_count(&self) -> usize {
        self.live_count
    }

    /// Whether every live node holds exactly the live nodes up (from events).
    pub(crate) fn one_view(&self) -> bool {
        self.mismatches == 0
    }

    // ---- events ------------------------------------------------------------------------------

    /// `observer` reported that `node` is now `to` at `incarnation`, raised by `by`.
    pub(crate) fn on_member_state(
        &mut self,
        now: Instant,
        observer: usize,
        node: usize,
        incarnation: u32,
        to: MemberState,
        by: Option<usize>,
    ) {
        if node == observer || node >= self.nodes || !self.is_live(observer) {
            return;
        }
        let new_up = matches!(to, MemberState::Alive | MemberState::Suspect);
        let old_up = self.up.get(observer, node);
        if new_up != old_up {
            self.up.set(observer, node, new_up);
            let member_live = self.is_live(node);
            // A mismatch is "up but gone" or "down but live".
            if new_up != member_live {
                self.mismatches += 1;
            } else {
                self.mismatches -= 1;
            }
            if member_live {
                self.on_cut_view_change(now, observer, node, new_up);
            }
            if let Some(k) = self.crash_of[node] {
                let rec = &mut self.crashes[k as usize];
                if new_up {
                    rec.down -= 1;
                } else {
                    rec.down += 1;
                }
                self.check_detections(now);
            }
            self.check_heal(now);
        }
        let suspected = self.explain.as_mut().and_then(|e| {
            let key = (observer as u32, node as u32);
            if to == MemberState::Suspect {
                e.suspect_since
                    .entry(key)
                    .or_insert((now, by.map(|b| b as u32)));
                None
            } else {
                e.suspect_since.remove(&key)
            }
        });
        let current_life = incarnation >= self.boot_incarnation[node];
        if !current_life || !self.is_live(node) {
            // About a previous life, or a node that crashed or left: nothing wrong.
            return;
        }
        match to {
            MemberState::Dead => {
                if let Some(k) = self.pause_of[node] {
                    self.pauses[k as usize].declared_dead = true;
                    self.paused_dead_verdicts += 1;
                } else if self.cut_off(node, observer) {
                    self.cut_off_verdicts += 1;
                } else {
                    if self.first_false_positive.is_none() {
                        let declarer = by.filter(|&b| b < self.nodes).unwrap_or(observer);
                        self.first_false_positive = Some(format!(
                            "at {now} node-{} held running node-{} dead (declared by node-{})",
                            observer + 1,
                            node + 1,
                            declarer + 1
                        ));
                    }
                    self.false_positives.insert(node as u32);
                    self.false_positive_verdicts += 1;
                    self.explain_verdict(now, observer, node, incarnation, by, suspected);
                }
            }
            MemberState::Suspect
                if by == Some(observer) && !self.paused[node] && !self.cut_off(node, observer) =>
            {
                self.suspicions += 1;
            }
            _ => {}
        }
    }

    /// `observer` reported holding `owner`'s metadata at `version`.
    pub(crate) fn on_metadata(
        &mut self,
        now: Instant,
        observer: usize,
        owner: usize,
        version: MetaVersion,
    ) {
        if observer == owner || self.pending_updates.is_empty() {
            return;
        }
        let live = self.is_live(observer);
        let mut changed = false;
        for &k in &self.pending_updates {
            let rec = &mut self.updates[k as usize];
            if rec.owner == owner && rec.version <= version && !rec.reached.get(0, observer) {
                rec.reached.set(0, observer, true);
                if live {
                    rec.count += 1;
                    changed = true;
                }
            }
        }
        if changed {
            self.check_updates(now);
        }
    }

    /// A workload write by `owner` at `version` starts being measured.
    pub(crate) fn track_update(&mut self, now: Instant, owner: usize, version: MetaVersion) {
        let index = self.updates.len() as u32;
        self.updates.push(UpdateRecord {
            owner,
            version,
            at: now,
            reached: BitRows::new(1, self.nodes, false),
            count: 0,
            outcome: UpdateOutcome::Pending,
        });
        self.pending_updates.push(index);
        self.check_updates(now);
    }

    // ---- lifecycle ---------------------------------------------------------------------------

    /// `node` crashed or left.
    pub(crate) fn on_down(&mut self, now: Instant, node: usize, why: Down) {
        if !self.is_live(node) {
            return;
        }
        self.account_live(now);
        // Its own row stops counting.
        self.mismatches -= self.row_mismatches(node);
        self.live.set(0, node, false);
        self.live_count -= 1;
        // Every live observer's bit about it flips meaning: up was right, now it is wrong.
        let mut held_up = 0u64;
        for o in 0..self.nodes {
            if o != node && self.is_live(o) && self.up.get(o, node) {
                held_up += 1;
            }
        }
        let held_down = self.live_count as u64 - held_up;
        self.mismatches = self.mismatches + held_up - held_down;
        self.paused[node] = false;
        self.pause_of[node] = None;

        // Its opinions stop counting for other crashes and writes.
        for &k in &self.pending_crashes {
            let rec = &mut self.crashes[k as usize];
            if !self.up.get(node, rec.node) {
                rec.down -= 1;
            }
        }
        for &k in &self.pending_updates {
            let rec = &mut self.updates[k as usize];
            if rec.owner == node {
                rec.outcome = UpdateOutcome::Abandoned;
            } else if rec.reached.get(0, node) {
                rec.count -= 1;
            }
        }
        if why == Down::Crash {
            let index = self.crashes.len() as u32;
            let outcome = if self.live_count == 0 {
                CrashOutcome::NoObserver
            } else if held_down as usize >= self.detection_quorum() {
                CrashOutcome::AlreadyDown
            } else {
                CrashOutcome::Pending
            };
            self.crashes.push(CrashRecord {
                node,
                at: now,
                down: held_down as usize,
                outcome,
            });
            if outcome == CrashOutcome::Pending {
                self.crash_of[node] = Some(index);
                self.pending_crashes.push(index);
            }
        }
        self.recount_cut_views(now);
        self.check_detections(now);
        self.check_updates(now);
        self.check_heal(now);
    }

    /// `node` restarted with state loss at boot incarnation `boot`: it holds nobody up yet.
    pub(crate) fn on_restart(&mut self, now: Instant, node: usize, boot: u32) {
        if self.is_live(node) {
            return;
        }
        self.account_live(now);
        if let Some(k) = self.crash_of[node].take() {
            let rec = &mut self.crashes[k as usize];
            if rec.outcome == CrashOutcome::Pending {
                rec.outcome = CrashOutcome::RestartedFirst;
            }
            self.pending_crashes.retain(|&p| p != k);
        }
        self.up.clear_row(node);
        self.live.set(0, node, true);
        self.live_count += 1;
        let mut held_up = 0u64;
        for o in 0..self.nodes {
            if o != node && self.is_live(o) && self.up.get(o, node) {
                held_up += 1;
            }
        }
        let others = self.live_count as u64 - 1;
        // Column: live observers holding it down are now wrong, those holding it up now right.
        self.mismatches = self.mismatches + (others - held_up) - held_up;
        // Row: it holds every live node down.
        self.mismatches += others;
        self.boot_incarnation[node] = boot;
        if let Some(e) = self.explain.as_mut() {
            e.incarnation[node] = boot;
            e.refuted_at[node] = None;
        }
        self.recount_cut_views(now);
        for &k in &self.pending_crashes {
            self.crashes[k as usize].down += 1;
        }
        for &k in &self.pending_updates {
            self.updates[k as usize].reached.set(0, node, false);
        }
        self.check_detections(now);
        self.check_updates(now);
        self.check_heal(now);
    }

    /// `node` is paused (gray failure) until [`Self::on_resume`].
    pub(crate) fn on_pause(&mut self, node: usize) {
        if self.paused[node] {
            return;
        }
        self.paused[node] = true;
        self.pause_of[node] = Some(self.pauses.len() as u32);
        self.pauses.push(PauseRecord {
            declared_dead: false,
        });
    }

    /// `node` resumed: from now on a Dead verdict about it is a false positive.
    pub(crate) fn on_resume(&mut self, node: usize) {
        self.paused[node] = false;
        self.pause_of[node] = None;
    }

    /// A partition began.
    pub(crate) fn on_partition(&mut self, now: Instant, partition: &Partition) {
        let groups = partition
            .group
            .iter()
            .copied()
            .max()
            .map_or(0, |g| g as usize + 1);
        let sides = (0..groups)
            .map(|g| {
                let mut mask = BitRows::new(1, self.nodes, false);
                let mut size = 0;
                for (i, &gi) in partition.group.iter().enumerate() {
                    if gi as usize == g {
                        mask.set(0, i, true);
                        size += 1;
                    }
                }
                SideView {
                    mask,
                    size,
                    pending: 0,
                    done: None,
                }
            })
            .collect();
        self.partitions.push(PartitionRecord {
            id: partition.id,
            group: partition.group.clone(),
            start: now,
            end: None,
            sides,
        });
        self.partitions_started += 1;
        self.last_heal = None;
        self.healed_at = None;
        self.recount_cut_views(now);
    }

    /// Partition `id` (or every partition, for `None`) healed.
    pub(crate) fn on_heal(&mut self, now: Instant, id: Option<u64>) {
        let mut any = false;
        for p in &mut self.partitions {
            if p.end.is_none() && id.is_none_or(|id| id == p.id) {
                p.end = Some(now);
                any = true;
            }
        }
        if any {
            self.last_heal = Some(now);
            self.healed_at = None;
            self.check_heal(now);
        }
    }

    /// Records one false-positive verdict with what led to it, when explaining.
    fn explain_verdict(
        &mut self,
        now: Instant,
        observer: usize,
        node: usize,
        incarnation: u32,
        by: Option<usize>,
        suspected: Option<(Instant, Option<u32>)>,
    ) {
        let Some(e) = self.explain.as_ref() else {
            return;
        };
        if e.log.len() >= MAX_EXPLAINED_VERDICTS {
            return;
        }
        let secs = |t: Instant| t.as_nanos() as f64 / 1e9;
        let healed = self
            .partitions
            .iter()
            .filter_map(|p| p.end.map(|end| (end, p)))
            .max_by_key(|(end, _)| *end);
        let side =
            |p: &PartitionRecord, n: usize| p.sides.get(p.group[n] as usize).map(|s| s.size as u32);
        let raiser = suspected.and_then(|(_, r)| r).map(|r| r as usize);
        let verdict = FalsePositiveVerdict {
            at_s: secs(now),
            observer: observer as u32 + 1,
            node: node as u32 + 1,
            declared_by: by.map(|b| b as u32 + 1),
            incarnation,
            node_incarnation: e.incarnation[node],
            node_refuted_at_s: e.refuted_at[node].map(secs),
            suspected_at_s: suspected.map(|(t, _)| secs(t)),
            suspected_by: raiser.map(|r| r as u32 + 1),
            since_heal_s: healed.map(|(end, _)| now.saturating_duration_since(end).as_secs_f64()),
            across_healed_cut: healed.is_some_and(|(_, p)| p.group[observer] != p.group[node]),
            observer_side_nodes: healed.and_then(|(_, p)| side(p, observer)),
            node_side_nodes: healed.and_then(|(_, p)| side(p, node)),
            raiser_side_nodes: healed
                .zip(raiser.filter(|&r| r < self.nodes))
                .and_then(|((_, p), r)| side(p, r)),
        };
        if let Some(e) = self.explain.as_mut() {
            e.log.push(verdict);
        }
    }

    // ---- checks ------------------------------------------------------------------------------

    /// Whether a partition in force separates `node` from `observer` (in either direction).
    fn cut_off(&self, node: usize, observer: usize) -> bool {
        self.partitions
            .iter()
            .any(|p| p.end.is_none() && p.group[node] != p.group[observer])
    }

    /// `observer` now holds live `node` up (or down): the cut-off views it belongs to change.
    fn on_cut_view_change(&mut self, now: Instant, observer: usize, node: usize, up: bool) {
        for p in &mut self.partitions {
            if p.end.is_some() {
                continue;
            }
            let g = p.group[observer] as usize;
            if g == p.group[node] as usize {
                continue;
            }
            let side = &mut p.sides[g];
            if side.done.is_some() {
                continue;
            }
            if up {
                side.pending += 1;
            } else {
                side.pending -= 1;
                if side.pending == 0 {
                    side.done = Some(now);
                }
            }
        }
    }

    /// Counts again, for every side of every partition in force whose view is not complete,
    /// the live pairs held up across the cut (after a crash, restart or leave, or at the start).
    fn recount_cut_views(&mut self, now: Instant) {
        let live = self.live.row(0);
        for p in &mut self.partitions {
            if p.end.is_some() {
                continue;
            }
            for (g, side) in p.sides.iter_mut().enumerate() {
                if side.done.is_some() {
                    continue;
                }
                let outside = side.mask.row(0);
                let mut pending = 0u64;
                for (o, &go) in p.group.iter().enumerate() {
                    if go as usize != g || !self.live.get(0, o) {
                        continue;
                    }
                    pending += self
                        .up
                        .row(o)
                        .iter()
                        .zip(live)
                        .zip(outside)
                        .map(|((u, l), m)| u64::from((u & l & !m).count_ones()))
                        .sum::<u64>();
                }
                side.pending = pending;
                if pending == 0 {
                    side.done = Some(now);
                }
            }
        }
    }

    fn row_mismatches(&self, node: usize) -> u64 {
        let row = self.up.row(node);
        let live = self.live.row(0);
        let all: u32 = row
            .iter()
            .zip(live)
            .map(|(a, b)| (a ^ b).count_ones())
            .sum();
        // The diagonal bit is never set in `up`, so a live node counts itself once: remove it.
        u64::from(all) - u64::from(self.is_live(node))
    }

    /// How many live nodes must hold a crashed node down for it to count as detected.
    fn detection_quorum(&self) -> usize {
        (self.live_count as f64 * DETECTION_QUORUM).ceil() as usize
    }

    fn check_detections(&mut self, now: Instant) {
        if self.live_count == 0 {
            // Nobody is left to detect the pending crashes: they stay pending (undetected),
            // never "detected by nobody" in 0 s.
            return;
        }
        let need = self.detection_quorum();
        let crashes = &mut self.crashes;
        let crash_of = &mut self.crash_of;
        self.pending_crashes.retain(|&k| {
            let rec = &mut crashes[k as usize];
            if rec.down >= need {
                rec.outcome = CrashOutcome::Detected(now);
                crash_of[rec.node] = None;
                false
            } else {
                true
            }
        });
    }

    fn check_updates(&mut self, now: Instant) {
        let need = self.live_count.saturating_sub(1);
        let updates = &mut self.updates;
        self.pending_updates.retain(|&k| {
            let rec = &mut updates[k as usize];
            if rec.outcome == UpdateOutcome::Pending && rec.count >= need {
                rec.outcome = UpdateOutcome::Done(now);
            }
            let pending = rec.outcome == UpdateOutcome::Pending;
            if !pending {
                rec.reached = BitRows::new(0, 0, false);
            }
            pending
        });
    }

    fn check_heal(&mut self, now: Instant) {
        if self.mismatches == 0 && self.last_heal.is_some() && self.healed_at.is_none() {
            self.healed_at = Some(now);
        }
    }

    fn account_live(&mut self, now: Instant) {
        let span = u128::from(now.saturating_duration_since(self.live_since).as_nanos() as u64);
        self.live_ns += span * self.live_count as u128;
        self.live_since = now;
    }

    /// The figures at the end of the run.
    pub(crate) fn finish(&mut self, end: Instant) -> Observations {
        self.account_live(end);
        let secs = |from: Instant, to: Instant| to.saturating_duration_since(from).as_secs_f64();
        let mut out = Observations {
            crashes: self.crashes.len() as u64,
            false_positives: self.false_positives.len() as u64,
            false_positive_verdicts: self.false_positive_verdicts,
            first_false_positive: self.first_false_positive.clone(),
            false_positive_log: self
                .explain
                .as_mut()
                .map(|e| core::mem::take(&mut e.log))
                .unwrap_or_default(),
            pauses: self.pauses.len() as u64,
            paused_dead: self.pauses.iter().filter(|p| p.declared_dead).count() as u64,
            paused_dead_verdicts: self.paused_dead_verdicts,
            cut_off_verdicts: self.cut_off_verdicts,
            suspicions: self.suspicions,
            live_node_s: self.live_ns as f64 / 1e9,
            updates: self.updates.len() as u64,
            partitions: self.partitions_started,
            heal_s: match (self.last_heal, self.healed_at) {
                (Some(h), Some(done)) => Some(secs(h, done)),
                _ => None,
            },
            one_view: self.one_view(),
            ..Observations::default()
        };
        for rec in &self.crashes {
            match rec.outcome {
                CrashOutcome::Detected(t) => out.detection_s.push(secs(rec.at, t)),
                CrashOutcome::Pending => {
                    out.detection_s.push(secs(rec.at, end));
                    out.undetected += 1;
                }
                CrashOutcome::RestartedFirst => out.restarted_before_detection += 1,
                CrashOutcome::AlreadyDown | CrashOutcome::NoObserver => out.not_measurable += 1,
            }
        }
        for p in &self.partitions {
            // Sides that were empty from the start (no node) tell nothing.
            let sides = || p.sides.iter().filter(|s| s.size > 0);
            let view = |s: &SideView| s.done.map(|t| secs(p.start, t));
            if let Some(s) = sides().min_by_key(|s| s.size) {
                out.minority_view_s.push(view(s));
            }
            if let Some(s) = sides().rev().max_by_key(|s| s.size) {
                out.majority_view_s.push(view(s));
            }
        }
        for rec in &self.updates {
            match rec.outcome {
                UpdateOutcome::Done(t) => out.dissemination_s.push(secs(rec.at, t)),
                UpdateOutcome::Pending => {
                    out.dissemination_s.push(secs(rec.at, end));
                    out.dissemination_incomplete += 1;
                }
                UpdateOutcome::Abandoned => {}
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(s: u64) -> Instant {
        Instant::from_nanos(s * 1_000_000_000)
    }

    #[test]
    fn crash_is_detected_when_99_percent_hold_it_down() {
        let mut o = Observer::new(4);
        o.on_down(t(1), 3, Down::Crash);
        assert!(!o.one_view());
        for obs in 0..2 {
            o.on_member_state(t(2), obs, 3, 1, MemberState::Dead, Some(0));
        }
        assert_eq!(o.crashes[0].outcome, CrashOutcome::Pending);
        o.on_member_state(t(4), 2, 3, 1, MemberState::Dead, Some(0));
        assert_eq!(o.crashes[0].outcome, CrashOutcome::Detected(t(4)));
        assert!(o.one_view());
        let obs = o.finish(t(10));
        assert_eq!(obs.detection_s, vec![3.0]);
        assert_eq!(obs.false_positives, 0);
    }

    #[test]
    fn a_crashed_observer_stops_counting() {
        let mut o = Observer::new(4);
        o.on_down(t(1), 3, Down::Crash);
        o.on_member_state(t(2), 0, 3, 1, MemberState::Dead, Some(0));
        o.on_member_state(t(2), 1, 3, 1, MemberState::Dead, Some(0));
        // Node 2 crashes before it sees node 3 dead: the two others suffice.
        o.on_down(t(3), 2, Down::Crash);
        assert_eq!(o.crashes[0].outcome, CrashOutcome::Detected(t(3)));
        o.on_member_state(t(5), 0, 2, 1, MemberState::Dead, Some(0));
        o.on_member_state(t(5), 1, 2, 1, MemberState::Dead, Some(0));
        assert!(o.one_view());
        // A restarted node holds nobody up until it learns them.
        o.on_restart(t(6), 2, 2);
        assert!(!o.one_view());
        o.on_member_state(t(7), 2, 0, 1, MemberState::Alive, None);
        o.on_member_state(t(7), 2, 1, 1, MemberState::Alive, None);
        o.on_member_state(t(7), 0, 2, 2, MemberState::Alive, None);
        assert!(!o.one_view());
        o.on_member_state(t(7), 1, 2, 2, MemberState::Alive, None);
        assert!(o.one_view());
    }

    /// Honest counting: a Dead verdict about a running node is a false positive unless a
    /// partition in force separates it from the observer; nothing is excused for a partition
    /// that healed a moment ago.
    #[test]
    fn dead_verdicts_about_running_nodes_are_false_positives_unless_cut_off_now() {
        let mut o = Observer::new(4);
        o.on_member_state(t(100), 0, 1, 1, MemberState::Dead, Some(0));
        assert_eq!(o.false_positives.len(), 1);
        let p = Partition {
            id: 1,
            group: vec![0, 0, 1, 1],
            one_way: false,
        };
        o.on_partition(t(100), &p);
        o.on_member_state(t(101), 0, 2, 1, MemberState::Suspect, Some(0));
        assert_eq!(o.suspicions, 0, "a suspicion across the cut is expected");
        o.on_member_state(t(102), 1, 2, 1, MemberState::Dead, Some(1));
        assert_eq!(o.false_positives.len(), 1, "across a partition in force");
        assert_eq!(o.cut_off_verdicts, 1);
        o.on_heal(t(110), Some(1));
        // One second after the heal: node 3 runs and is reachable again.
        o.on_member_state(t(111), 0, 3, 1, MemberState::Dead, Some(0));
        assert_eq!(o.false_positives.len(), 2, "no window after a heal");
        assert_eq!(o.false_positive_verdicts, 2);
        o.on_member_state(t(112), 1, 3, 1, MemberState::Suspect, Some(1));
        assert_eq!(o.suspicions, 1);
        // About a previous life of a restarted node: not a false positive.
        o.on_down(t(120), 2, Down::Crash);
        o.on_restart(t(125), 2, 2);
        o.on_member_state(t(126), 0, 2, 1, MemberState::Dead, Some(0));
        assert_eq!(o.false_positives.len(), 2);
        // About its new life, a moment after the restart: a false positive.
        o.on_member_state(t(127), 1, 2, 2, MemberState::Alive, None);
        o.on_member_state(t(128), 1, 2, 2, MemberState::Dead, Some(1));
        assert_eq!(o.false_positives.len(), 3);
    }

    /// A paused node declared Dead during its pause is "paused-dead", counted per pause; once
    /// it resumed, a Dead verdict about it is a false positive, however soon.
    #[test]
    fn paused_dead_during_a_pause_false_positive_after_it() {
        let mut o = Observer::new(4);
        o.on_pause(3);
        o.on_member_state(t(5), 0, 3, 1, MemberState::Dead, Some(0));
        o.on_member_state(t(5), 1, 3, 1, MemberState::Dead, Some(1));
        o.on_member_state(t(5), 2, 3, 1, MemberState::Suspect, Some(2));
        assert_eq!(o.suspicions, 0, "suspecting a paused node is right");
        o.on_resume(3);
        o.on_member_state(t(6), 0, 3, 2, MemberState::Alive, None);
        o.on_pause(3);
        o.on_resume(3);
        o.on_member_state(t(9), 2, 3, 1, MemberState::Dead, Some(2));
        let obs = o.finish(t(10));
        assert_eq!(obs.pauses, 2);
        assert_eq!(obs.paused_dead, 1);
        assert_eq!(obs.paused_dead_verdicts, 2);
        assert_eq!(obs.false_positives, 1, "declared after it resumed");
        assert!(
            obs.first_false_positive
                .is_some_and(|f| f.contains("node-3 held running node-4"))
        );
    }

    /// Each side of a partition completes its view when every live node of the side holds
    /// every live node of the other sides down; a crash on the far side shrinks what is left.
    #[test]
    fn a_cut_off_side_completes_its_view_when_it_holds_the_rest_down() {
        let mut o = Observer::new(5);
        let p = Partition {
            id: 1,
            group: vec![0, 1, 1, 1, 1],
            one_way: false,
        };
        o.on_partition(t(10), &p);
        // The majority holds node 0 down at 13 s.
        for obs in 1..5 {
            o.on_member_state(t(13), obs, 0, 1, MemberState::Dead, Some(obs));
        }
        // The minority (node 0) holds nodes 1 and 2 down; node 4 crashes; then node 3.
        o.on_member_state(t(14), 0, 1, 1, MemberState::Dead, Some(0));
        o.on_member_state(t(15), 0, 2, 1, MemberState::Dead, Some(0));
        o.on_down(t(16), 4, Down::Crash);
        o.on_member_state(t(17), 0, 2, 1, MemberState::Alive, None);
        o.on_member_state(t(18), 0, 2, 1, MemberState::Dead, Some(0));
        assert_eq!(o.partitions[0].sides[0].done, None);
        o.on_member_state(t(40), 0, 3, 1, MemberState::Dead, Some(0));
        // A second partition that heals before its minority completes: unfinished.
        o.on_heal(t(50), Some(1));
        let q = Partition {
            id: 2,
            group: vec![1, 1, 0, 0, 0],
            one_way: false,
        };
        o.on_partition(t(60), &q);
        o.on_heal(t(61), Some(2));
        let obs = o.finish(t(70));
        assert_eq!(obs.minority_view_s, vec![Some(30.0), None]);
        assert_eq!(obs.majority_view_s, vec![Some(3.0), None]);
        assert_eq!(obs.cut_off_verdicts, 8);
        assert_eq!(obs.false_positives, 0);
    }

    #[test]
    fn a_crash_of_a_node_already_held_down_is_not_a_detection() {
        let mut o = Observer::new(4);
        o.on_pause(3);
        for obs in 0..3 {
            o.on_member_state(t(5), obs, 3, 1, MemberState::Dead, Some(0));
        }
        o.on_down(t(8), 3, Down::Crash);
        let obs = o.finish(t(10));
        assert_eq!(obs.crashes, 1);
        assert_eq!(obs.detection_s, Vec::<f64>::new(), "no 0 s detection");
        assert_eq!(obs.not_measurable, 1);
    }

    #[test]
    fn crashes_with_nobody_left_to_detect_them_are_not_detections() {
        let mut o = Observer::new(2);
        o.on_down(t(1), 0, Down::Crash);
        o.on_down(t(2), 1, Down::Crash);
        let obs = o.finish(t(10));
        assert_eq!(obs.crashes, 2);
        // Node 0's crash was pending when the last observer crashed: undetected, counted to
        // the end; node 1's had no observer at all.
        assert_eq!(obs.detection_s, vec![9.0]);
        assert_eq!(obs.undetected, 1);
        assert_eq!(obs.not_measurable, 1);
    }

    #[test]
    fn dissemination_completes_when_every_live_node_reports() {
        let mut o = Observer::new(3);
        let v = MetaVersion::new(1, 1);
        o.track_update(t(1), 0, v);
        o.on_metadata(t(2), 1, 0, v);
        assert_eq!(o.updates[0].outcome, UpdateOutcome::Pending);
        o.on_metadata(t(3), 2, 0, MetaVersion::new(1, 2));
        assert_eq!(o.updates[0].outcome, UpdateOutcome::Done(t(3)));
        let obs = o.finish(t(4));
        assert_eq!(obs.dissemination_s, vec![2.0]);
        assert!((obs.live_node_s - 12.0).abs() < 1e-9);
    }
}
