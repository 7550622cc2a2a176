//! What the nodes say while a run goes, folded into the simulator's figures.
//!
//! Every poll asks each node that should answer (its container running, not frozen) for its
//! member list and its leadership view. A member's `last_change_s_ago` dates each verdict to
//! better than the poll period. The figures follow the simulator's definitions
//! (`meshkit_sim::metrics`) on what a real stack can see:
//!
//! * detection: per killed node, from the kill to the moment at least 99% of the other running
//!   nodes hold it `dead` or `left` (or no longer list it); killed again before that, or started
//!   again before that, and it is left out (`restarted_before_detection`);
//! * false positives: distinct nodes held `dead` by some node while they ran, unfrozen, with no
//!   kill, start, pause or partition touching them in the last 60 s;
//! * paused_dead: pauses during which the paused node was held dead;
//! * heal_s: from the last partition's end (deadline or heal) to one view (every running node
//!   holds exactly the running nodes up), dated by the newest verdict the nodes report at the
//!   first poll that sees one view (the verdict that completed it, or a later suspect/alive
//!   flip: never earlier than the truth, at most one poll late);
//! * failover: a kill of the `global-control` holder to a voter's table naming another holder;
//!   raft failover: a kill of the Raft leader to a voter naming another leader. The poll sees
//!   them up to one poll period late, so each is then dated by the new holder's (leader's) own
//!   leadership feed, as the simulator dates a failover by the contender's `Acquired`:
//!   [`Observer::undated`] names the feed entries to look for, [`Observer::date`] takes the
//!   time found;
//! * converged: at the end, every running node holds exactly the running nodes up;
//! * joins (compose only, `join_s`): a node started by a membership surge, from its start to
//!   the moment 99% of the other running nodes hold it alive (dated by their verdicts);
//! * leaves (compose only, `leave_s`): a node stopped gracefully, from the stop to 99% of the
//!   others holding it `left` (or no longer listing it); held `dead` instead is no leave.

use std::collections::{BTreeMap, BTreeSet};

use meshkit_api::json::{LeadershipView, PeersResponse};
use meshkit_sim::RunReport;
use meshkit_sim::metrics::percentile;
use serde::Serialize;

/// The scope every compose node campaigns for (compose/env.py's `[leadership] campaign`).
pub const HOLDER_SCOPE: &str = "global-control";
/// A fault touching a node this recently makes a dead verdict about it no false positive.
const HEALTHY_AFTER_S: f64 = 60.0;
/// Share of the other running nodes that must hold a killed node down.
const DETECTION_SHARE: f64 = 0.99;

/// One node's answers at one poll.
#[derive(Clone, Debug)]
pub struct NodeAnswer {
    /// The answering node.
    pub node: u64,
    /// Its member list, if it answered.
    pub peers: Option<PeersResponse>,
    /// Its leadership view, if it answered.
    pub leaders: Option<LeadershipView>,
}

/// A point of the members-alive plot.
#[derive(Clone, Debug, Serialize)]
pub struct AlivePoint {
    /// Seconds since the start.
    pub t: f64,
    /// Fewest members a running node held alive.
    pub min: usize,
    /// Most members a running node held alive.
    pub max: usize,
    /// Nodes whose containers ran unfrozen.
    pub running: usize,
}

#[derive(Clone, Debug)]
struct Kill {
    node: u64,
    at: f64,
    was_holder: bool,
    was_raft_leader: bool,
    detected: Option<f64>,
    excluded: bool,
    failover: Option<f64>,
    raft_failover: Option<f64>,
    /// Every node's feed sequence number at the poll before the kill: the new holder's
    /// `Acquired` (new leader's `RaftLeader`) is after it.
    seq_at_kill: BTreeMap<u64, u64>,
    /// Who took over, as the poll that saw the failover named it, until dated by its feed.
    failover_by: Option<u64>,
    raft_failover_by: Option<u64>,
}

/// Which takeover of a kill [`Observer::date`] dates.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Takeover {
    /// A new holder of [`HOLDER_SCOPE`]: its feed's `Acquired` of that scope.
    Holder,
    /// A new Raft leader: its own feed's `RaftLeader` naming itself.
    RaftLeader,
}

/// A takeover seen at a poll and not dated by the node's feed yet.
#[derive(Clone, Debug, PartialEq)]
pub struct Undated {
    /// The kill (index into the run's kills).
    pub kill: usize,
    /// Which takeover.
    pub what: Takeover,
    /// The node whose feed has the entry.
    pub node: u64,
    /// Its feed's sequence number before the kill (ask for entries after it).
    pub after_seq: u64,
    /// The kill, seconds since the start.
    pub killed_s: f64,
}

/// A membership change the others must learn: a join (to be held alive) or a leave (to be
/// held left).
#[derive(Clone, Debug)]
struct Change {
    node: u64,
    at: f64,
    seen: Option<f64>,
}

#[derive(Clone, Debug)]
struct Pause {
    node: u64,
    from: f64,
    until: Option<f64>,
    held_dead: bool,
}

/// The running record of a run.
#[derive(Debug, Default)]
pub struct Observer {
    nodes: BTreeSet<u64>,
    killed: BTreeSet<u64>,
    paused: BTreeSet<u64>,
    /// Nodes stopped gracefully (they left): not running, not to be started by a restart.
    left: BTreeSet<u64>,
    joins: Vec<Change>,
    leaves: Vec<Change>,
    touched: BTreeMap<u64, f64>,
    kills: Vec<Kill>,
    pauses: Vec<Pause>,
    false_positive_nodes: BTreeSet<u64>,
    false_positive_verdicts: u64,
    first_false_positive: Option<String>,
    seen_dead: BTreeSet<(u64, u64)>,
    partitions: u64,
    last_heal: Option<f64>,
    heal_s: Option<f64>,
    one_view_last: bool,
    convergence_note: Option<String>,
    /// The members-alive series.
    pub alive: Vec<AlivePoint>,
    /// Detection times as they were measured (seconds since the start, node, detection s).
    pub detections: Vec<(f64, u64, f64)>,
    holder: Option<u64>,
    raft_leader: Option<u64>,
    /// Each node's feed sequence number at its last answer.
    last_seq: BTreeMap<u64, u64>,
    /// Takeovers dated by a node's feed (the others keep the poll's time).
    pub takeovers_dated: u64,
}

impl Observer {
    /// An observer of nodes `nodes`, all running.
    pub fn new(nodes: impl IntoIterator<Item = u64>) -> Self {
        Self {
            nodes: nodes.into_iter().collect(),
            ..Self::default()
        }
    }

    /// Nodes whose containers run unfrozen: the ones to ask.
    pub fn running(&self) -> Vec<u64> {
        self.nodes
            .iter()
            .copied()
            .filter(|n| {
                !self.killed.contains(n) && !self.paused.contains(n) && !self.left.contains(n)
            })
            .collect()
    }

    /// Nodes that left gracefully and were not started again.
    pub fn left(&self) -> Vec<u64> {
        self.left.iter().copied().collect()
    }

    /// Node `node` (a spare) was started at `t` by a membership surge.
    pub fn joined_at(&mut self, node: u64, t: f64) {
        self.nodes.insert(node);
        self.left.remove(&node);
        self.touched.insert(node, t);
        self.joins.push(Change {
            node,
            at: t,
            seen: None,
        });
    }

    /// Node `node` was stopped gracefully at `t`.
    pub fn left_at(&mut self, node: u64, t: f64) {
        self.left.insert(node);
        self.touched.insert(node, t);
        self.leaves.push(Change {
            node,
            at: t,
            seen: None,
        });
    }

    /// Node `node` (a joined spare) is gone from the stack: not asked, not expected.
    pub fn removed(&mut self, node: u64) {
        self.nodes.remove(&node);
        self.left.remove(&node);
    }

    /// Seconds from each join to the others holding the node alive (unseen: `None`).
    pub fn join_s(&self) -> Vec<Option<f64>> {
        self.joins.iter().map(|c| c.seen.map(round3)).collect()
    }

    /// Each kill of the `global-control` holder: seconds to the takeover (`None`: none seen).
    pub fn failovers_s(&self) -> Vec<Option<f64>> {
        let holder_kills = self.kills.iter().filter(|k| k.was_holder);
        holder_kills.map(|k| k.failover.map(round3)).collect()
    }

    /// Seconds from each graceful stop to the others holding the node left.
    pub fn leave_s(&self) -> Vec<Option<f64>> {
        self.leaves.iter().map(|c| c.seen.map(round3)).collect()
    }

    /// Killed nodes.
    pub fn killed(&self) -> Vec<u64> {
        self.killed.iter().copied().collect()
    }

    /// Frozen nodes.
    pub fn paused(&self) -> Vec<u64> {
        self.paused.iter().copied().collect()
    }

    /// The `global-control` holder and the Raft leader, as last seen.
    pub fn roles(&self) -> (Option<u64>, Option<u64>) {
        (self.holder, self.raft_leader)
    }

    /// Node `node` was killed at `t`.
    pub fn killed_at(&mut self, node: u64, t: f64) {
        // A kill of a node whose previous kill was never detected: that one is left out.
        for k in self.kills.iter_mut().filter(|k| k.node == node) {
            if k.detected.is_none() {
                k.excluded = true;
            }
        }
        self.killed.insert(node);
        self.touched.insert(node, t);
        self.kills.push(Kill {
            node,
            at: t,
            was_holder: self.holder == Some(node),
            was_raft_leader: self.raft_leader == Some(node),
            detected: None,
            excluded: false,
            failover: None,
            raft_failover: None,
            seq_at_kill: self.last_seq.clone(),
            failover_by: None,
            raft_failover_by: None,
        });
    }

    /// Takeovers seen at a poll that the nodes' feeds may date more closely.
    pub fn undated(&self) -> Vec<Undated> {
        let mut out = Vec::new();
        for (i, k) in self.kills.iter().enumerate() {
            let ask = |what, by: Option<u64>| {
                by.map(|node| Undated {
                    kill: i,
                    what,
                    node,
                    after_seq: k.seq_at_kill.get(&node).copied().unwrap_or(0),
                    killed_s: k.at,
                })
            };
            out.extend(ask(Takeover::Holder, k.failover_by));
            out.extend(ask(Takeover::RaftLeader, k.raft_failover_by));
        }
        out
    }

    /// The takeover `what` of kill `kill` happened at `at` (seconds since the start, from the
    /// node's feed), or `None`: the feed had no such entry, the poll's time stays. Either way it
    /// is not asked again. A time before the kill or after the poll that saw it is not the
    /// takeover (an older grant, another clock): the poll's time stays.
    pub fn date(&mut self, kill: usize, what: Takeover, at: Option<f64>) {
        let Some(k) = self.kills.get_mut(kill) else {
            return;
        };
        let (by, took) = match what {
            Takeover::Holder => (&mut k.failover_by, &mut k.failover),
            Takeover::RaftLeader => (&mut k.raft_failover_by, &mut k.raft_failover),
        };
        *by = None;
        if let (Some(at), Some(polled)) = (at, took.as_mut())
            && at >= k.at
            && at - k.at <= *polled
        {
            *polled = at - k.at;
            self.takeovers_dated += 1;
        }
    }

    /// Node `node` was started again at `t`.
    pub fn started_at(&mut self, node: u64, t: f64) {
        self.killed.remove(&node);
        self.touched.insert(node, t);
        for k in self.kills.iter_mut().filter(|k| k.node == node) {
            if k.detected.is_none() {
                k.excluded = true;
            }
        }
        self.seen_dead.retain(|&(_, n)| n != node);
    }

    /// Node `node` was frozen at `t`.
    pub fn paused_at(&mut self, node: u64, t: f64) {
        self.paused.insert(node);
        self.touched.insert(node, t);
        self.pauses.push(Pause {
            node,
            from: t,
            until: None,
            held_dead: false,
        });
    }

    /// Node `node` was thawed at `t`.
    pub fn unpaused_at(&mut self, node: u64, t: f64) {
        self.paused.remove(&node);
        self.touched.insert(node, t);
        for p in self.pauses.iter_mut().filter(|p| p.node == node) {
            p.until.get_or_insert(t);
        }
    }

    /// A partition over `nodes` began at `t`.
    pub fn partitioned_at(&mut self, nodes: &[u64], t: f64) {
        self.partitions += 1;
        for &n in nodes {
            self.touched.insert(n, t);
        }
    }

    /// A partition over `nodes` ended at `t` (its deadline or a heal).
    pub fn healed_at(&mut self, nodes: &[u64], t: f64) {
        for &n in nodes {
            self.touched.insert(n, t);
        }
        self.last_heal = Some(self.last_heal.map_or(t, |h| h.max(t)));
        self.heal_s = None;
    }

    /// Folds one poll made at `t` (seconds since the start).
    pub fn record(&mut self, t: f64, answers: &[NodeAnswer]) {
        let running: BTreeSet<u64> = self.running().into_iter().collect();
        // Roles: the voters' applied tables and Raft views.
        for a in answers {
            let Some(l) = &a.leaders else { continue };
            self.last_seq.insert(a.node, l.last_seq);
            if let Some(raft) = &l.raft
                && let Some(leader) = raft.leader
            {
                self.raft_leader = Some(leader);
            }
            if let Some(entry) = l.table.iter().find(|e| e.scope == HOLDER_SCOPE) {
                self.holder = Some(entry.holder);
            }
        }
        for k in self.kills.iter_mut() {
            if k.was_holder
                && k.failover.is_none()
                && let Some(h) = self.holder
                && h != k.node
            {
                k.failover = Some(t - k.at);
                k.failover_by = Some(h);
            }
            if k.was_raft_leader
                && k.raft_failover.is_none()
                && let Some(l) = self.raft_leader
                && l != k.node
            {
                k.raft_failover = Some(t - k.at);
                k.raft_failover_by = Some(l);
            }
        }
        let views: Vec<(u64, &PeersResponse)> = answers
            .iter()
            .filter(|a| running.contains(&a.node))
            .filter_map(|a| a.peers.as_ref().map(|p| (a.node, p)))
            .collect();
        // False positives and paused-dead.
        for &(observer, view) in &views {
            for p in &view.peers {
                let node = p.id;
                if p.state != "dead" {
                    continue;
                }
                let since = t - p.last_change_s_ago;
                for pause in self.pauses.iter_mut().filter(|x| x.node == node) {
                    if since >= pause.from && pause.until.is_none_or(|u| since <= u) {
                        pause.held_dead = true;
                    }
                }
                let healthy = running.contains(&node)
                    && self
                        .touched
                        .get(&node)
                        .is_none_or(|&at| since - at > HEALTHY_AFTER_S);
                if healthy && self.seen_dead.insert((observer, node)) {
                    self.false_positive_verdicts += 1;
                    self.false_positive_nodes.insert(node);
                    self.first_false_positive.get_or_insert_with(|| {
                        format!("node {observer} held node {node} dead at {since:.1} s")
                    });
                }
            }
        }
        // Detection of each kill not measured yet.
        for k in self
            .kills
            .iter_mut()
            .filter(|k| k.detected.is_none() && !k.excluded)
        {
            let others: Vec<u64> = running.iter().copied().filter(|&n| n != k.node).collect();
            if others.is_empty() {
                k.excluded = true;
                continue;
            }
            let mut down_since = Vec::new();
            for &(observer, view) in &views {
                if observer == k.node {
                    continue;
                }
                match view.peers.iter().find(|p| p.id == k.node) {
                    Some(p) if p.state == "dead" || p.state == "left" => {
                        down_since.push((t - p.last_change_s_ago).max(k.at));
                    }
                    None => down_since.push(t),
                    Some(_) => {}
                }
            }
            let need = (others.len() as f64 * DETECTION_SHARE).ceil() as usize;
            if down_since.len() >= need.max(1) {
                down_since.sort_by(f64::total_cmp);
                let at = down_since[need.max(1) - 1];
                let d = at - k.at;
                k.detected = Some(d);
                self.detections.push((t, k.node, d));
            }
        }
        // Joins and leaves, dated as detections are.
        for (changes, joining) in [(&mut self.joins, true), (&mut self.leaves, false)] {
            for c in changes.iter_mut().filter(|c| c.seen.is_none()) {
                let others: Vec<u64> = running.iter().copied().filter(|&n| n != c.node).collect();
                let mut since = Vec::new();
                for &(observer, view) in &views {
                    if observer == c.node {
                        continue;
                    }
                    match view.peers.iter().find(|p| p.id == c.node) {
                        Some(p) if joining && p.state == "alive" => {
                            since.push((t - p.last_change_s_ago).max(c.at));
                        }
                        Some(p) if !joining && p.state == "left" => {
                            since.push((t - p.last_change_s_ago).max(c.at));
                        }
                        None if !joining => since.push(t),
                        _ => {}
                    }
                }
                let need = ((others.len() as f64 * DETECTION_SHARE).ceil() as usize).max(1);
                if !others.is_empty() && since.len() >= need {
                    since.sort_by(f64::total_cmp);
                    c.seen = Some(since[need - 1] - c.at);
                }
            }
        }
        // One view: every running node answered and holds exactly the running nodes up.
        let up = |v: &PeersResponse| -> BTreeSet<u64> {
            v.peers
                .iter()
                .filter(|p| p.state == "alive" || p.state == "suspect")
                .map(|p| p.id)
                .collect()
        };
        let answered: BTreeSet<u64> = views.iter().map(|(n, _)| *n).collect();
        let mut note = None;
        if answered != running {
            let missing: Vec<u64> = running.difference(&answered).copied().collect();
            note = Some(format!("running nodes {missing:?} did not answer"));
        }
        for &(observer, view) in &views {
            let seen = up(view);
            if seen != running && note.is_none() {
                note = Some(format!(
                    "node {observer} holds {seen:?} up, the running nodes are {running:?}"
                ));
            }
        }
        self.one_view_last = note.is_none();
        self.convergence_note = note;
        if self.one_view_last
            && self.heal_s.is_none()
            && let Some(h) = self.last_heal
            && t >= h
        {
            // The newest verdict any running node reports: the one that made the view one
            // (or a later flip between suspect and alive), never before the heal.
            let newest = views
                .iter()
                .flat_map(|(_, v)| v.peers.iter())
                .filter(|p| running.contains(&p.id))
                .map(|p| t - p.last_change_s_ago)
                .fold(h, f64::max)
                .min(t);
            self.heal_s = Some(newest - h);
        }
        let counts: Vec<usize> = views
            .iter()
            .map(|(_, v)| v.peers.iter().filter(|p| p.state == "alive").count())
            .collect();
        self.alive.push(AlivePoint {
            t,
            min: counts.iter().copied().min().unwrap_or(0),
            max: counts.iter().copied().max().unwrap_or(0),
            running: running.len(),
        });
    }

    /// The figures, in the simulator's report (`virtual_s` holds the run's wall length).
    pub fn figures(&self, mut report: RunReport, length_s: f64) -> RunReport {
        let measured: Vec<&Kill> = self.kills.iter().filter(|k| !k.excluded).collect();
        let mut detections: Vec<f64> = measured
            .iter()
            .map(|k| k.detected.unwrap_or(length_s - k.at))
            .collect();
        detections.sort_by(f64::total_cmp);
        report.virtual_s = round3(length_s);
        report.crashes = self.kills.len() as u64;
        report.undetected = measured.iter().filter(|k| k.detected.is_none()).count() as u64;
        report.restarted_before_detection = self
            .kills
            .iter()
            .filter(|k| k.excluded && k.detected.is_none())
            .count() as u64;
        report.detection_p50_s = percentile(&detections, 50.0).map(round3);
        report.detection_p99_s = percentile(&detections, 99.0).map(round3);
        report.detection_max_s = detections.last().copied().map(round3);
        report.detections_s = detections.iter().copied().map(round3).collect();
        report.false_positives = self.false_positive_nodes.len() as u64;
        report.false_positive_verdicts = self.false_positive_verdicts;
        report
            .first_false_positive
            .clone_from(&self.first_false_positive);
        report.pauses = self.pauses.len() as u64;
        report.paused_dead = self.pauses.iter().filter(|p| p.held_dead).count() as u64;
        report.partitions = self.partitions;
        report.heal_s = self.heal_s.map(round3);
        report.converged = self.one_view_last;
        report.convergence_note.clone_from(&self.convergence_note);
        let mut failovers: Vec<f64> = self.kills.iter().filter_map(|k| k.failover).collect();
        failovers.sort_by(f64::total_cmp);
        let holder_kills = self.kills.iter().filter(|k| k.was_holder).count();
        report.failover_p50_s = percentile(&failovers, 50.0).map(round3);
        report.failover_p99_s = percentile(&failovers, 99.0).map(round3);
        report.failovers_unfinished = Some((holder_kills - failovers.len()) as u64);
        let mut raft: Vec<f64> = self.kills.iter().filter_map(|k| k.raft_failover).collect();
        raft.sort_by(f64::total_cmp);
        let leader_kills = self.kills.iter().filter(|k| k.was_raft_leader).count();
        report.raft_failover_p50_s = percentile(&raft, 50.0).map(round3);
        report.raft_failover_p99_s = percentile(&raft, 99.0).map(round3);
        report.raft_failovers_s = raft.iter().copied().map(round3).collect();
        report.raft_failovers_unfinished = Some((leader_kills - raft.len()) as u64);
        report
    }
}

fn round3(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}

#[cfg(test)]
mod tests;
