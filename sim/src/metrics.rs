//! The report's figures: engine counters, nearest-rank percentiles, and the arithmetic that
//! turns the observer's records into per-node rates.
//!
//! Definitions (also in the report's JSON keys):
//! * `detection_pXX_s`: per crashed node, the time from its crash until at least 99% of the
//!   then-live other nodes hold it Dead or Left (or no longer know it); a crash never detected
//!   counts as the run's remaining time and is also counted in `undetected`. A node restarted
//!   before it was detected is left out and counted in `restarted_before_detection`; so is a
//!   crash of a node the mesh already held down, or one no live node was left to detect
//!   (`crashes_not_measurable`): neither is a 0 s detection.
//! * `false_positives`: distinct healthy nodes ever held Dead by some node. Healthy = live, not
//!   paused, and neither crashed, restarted, paused nor partitioned from the declaring node in
//!   the last 60 s, and the declaration is about its current life (incarnation).
//! * `suspicions_per_node_hour`: Suspect transitions raised by the observer's own probe against
//!   healthy nodes, per live node-hour.
//! * `dissemination_pXX_rounds`: per workload metadata write, the time until every live node
//!   reported a version at least as new, in gossip intervals of the profile.
//! * `heal_s`: from the last partition heal until one view (every live node holds exactly the
//!   live nodes up).
//! * `bytes_per_node_s`, `messages_per_node_s`: sent by the core, per live node-second.
//! * With `[leases]` (null without): `failover_pXX_s`, `handoff_p99_ms`, `lease_grant_p50_ms`,
//!   `stale_writes_accepted`, `stale_writes_refused`, defined in `crate::lease`; lease
//!   datagrams are counted apart (`lease_datagrams_sent`). `shard_moves` and
//!   `shard_imbalance_max` stay null: shards are not simulated yet.
//! * With a `byzantine` fault (null without): `byzantine_attacks` (occurrences fired),
//!   `byzantine_datagrams` (forged datagrams sent) and `byzantine_refused` (those delivered and
//!   refused by the core; the others were accepted and changed nothing, or the run reports a
//!   violation).

use core::time::Duration;

use crate::engine::Outcome;
use crate::report::{QueueReport, RunReport};

/// What the engine counts as it runs.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct Counters {
    /// Heap entries processed.
    pub(crate) steps: u64,
    /// Datagrams the nodes sent.
    pub(crate) datagrams_sent: u64,
    /// Their bytes.
    pub(crate) bytes_sent: u64,
    /// Datagrams handed to a node.
    pub(crate) delivered: u64,
    /// Datagrams addressed to a crashed or gone node.
    pub(crate) dropped_dead: u64,
    /// Datagrams dropped because a paused node's queue was full.
    pub(crate) dropped_inbox_full: u64,
    /// Dropped by partitions.
    pub(crate) dropped_partition: u64,
    /// Dropped by independent loss.
    pub(crate) dropped_loss: u64,
    /// Dropped by bursty loss.
    pub(crate) dropped_burst: u64,
    /// Extra copies.
    pub(crate) duplicated: u64,
    /// Copies delayed by a latency plan.
    pub(crate) delayed: u64,
    /// Copies held back by a reorder plan.
    pub(crate) held_back: u64,
    /// Datagrams addressed to an id that is not a simulated node.
    pub(crate) misaddressed: u64,
    /// Core events.
    pub(crate) events: u64,
    /// Metadata writes the core refused.
    pub(crate) metadata_rejected: u64,
    /// The first refusal, described.
    pub(crate) first_metadata_error: Option<String>,
    /// `byzantine` occurrences fired.
    pub(crate) byzantine_attacks: u64,
    /// Forged datagrams the attacker sent (before the network model).
    pub(crate) byzantine_datagrams: u64,
    /// Forged datagrams delivered and refused by the core.
    pub(crate) byzantine_refused: u64,
    /// Spares membership surges booted.
    pub(crate) joins: u64,
    /// Of those, the ones held Alive by 99% of the other live nodes when their surge ended
    /// (or the run did).
    pub(crate) joins_seen: u64,
    /// Graceful leaves (the `leave` action, a drained member, a surge's revert).
    pub(crate) leaves: u64,
    /// Of those, the ones 99% of the live nodes hold Left, or no longer list, at the end.
    pub(crate) leaves_seen: u64,
}

/// The nearest-rank percentile `p` (0 < p <= 100) of `values`, or `None` if empty.
pub fn percentile(values: &[f64], p: f64) -> Option<f64> {
    if values.is_empty() {
        return None;
    }
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    Some(sorted[rank.clamp(1, sorted.len()) - 1])
}

/// Rounds to 3 decimals for the report.
fn r3(v: f64) -> f64 {
    (v * 1000.0).round() / 1000.0
}

/// The report's figures for one run (wall time, expectations and the replay command are
/// filled in by the caller).
pub(crate) fn figures(outcome: Outcome, header: RunReport) -> RunReport {
    let obs = &outcome.observations;
    let c = &outcome.counters;
    let virtual_s = outcome.end.as_nanos() as f64 / 1e9;
    let node_s = obs.live_node_s.max(f64::MIN_POSITIVE);
    let rounds = |secs: f64| {
        secs / outcome
            .gossip_interval
            .max(Duration::from_nanos(1))
            .as_secs_f64()
    };
    let dissemination_rounds: Vec<f64> = obs.dissemination_s.iter().map(|&s| rounds(s)).collect();
    let leases = outcome.leases.as_ref();
    let shards = outcome.shards.as_ref();
    let pct = |values: Option<&Vec<f64>>, p: f64| values.and_then(|v| percentile(v, p)).map(r3);
    RunReport {
        virtual_s: r3(virtual_s),
        trace_hash: format!("{:016x}", outcome.trace_hash),
        detection_p50_s: percentile(&obs.detection_s, 50.0).map(r3),
        detection_p99_s: percentile(&obs.detection_s, 99.0).map(r3),
        detection_max_s: percentile(&obs.detection_s, 100.0).map(r3),
        detections_s: obs.detection_s.iter().copied().map(r3).collect(),
        crashes: obs.crashes,
        undetected: obs.undetected,
        restarted_before_detection: obs.restarted_before_detection,
        crashes_not_measurable: obs.not_measurable,
        false_positives: obs.false_positives,
        false_positive_verdicts: obs.false_positive_verdicts,
        first_false_positive: obs.first_false_positive.clone(),
        false_positive_log: obs.false_positive_log.clone(),
        pauses: obs.pauses,
        paused_dead: obs.paused_dead,
        paused_dead_verdicts: obs.paused_dead_verdicts,
        cut_off_verdicts: obs.cut_off_verdicts,
        minority_view_s: slowest(&obs.minority_view_s),
        majority_view_s: slowest(&obs.majority_view_s),
        minority_views_s: obs.minority_view_s.iter().map(|v| v.map(r3)).collect(),
        cutoff_views_unfinished: obs
            .minority_view_s
            .iter()
            .chain(&obs.majority_view_s)
            .filter(|v| v.is_none())
            .count() as u64,
        suspicions_per_node_hour: r3(obs.suspicions as f64 / (node_s / 3600.0)),
        suspicions: obs.suspicions,
        dissemination_p50_rounds: percentile(&dissemination_rounds, 50.0).map(r3),
        dissemination_p99_rounds: percentile(&dissemination_rounds, 99.0).map(r3),
        metadata_updates: obs.updates,
        dissemination_incomplete: obs.dissemination_incomplete,
        heal_s: obs.heal_s.map(r3),
        partitions: obs.partitions,
        bytes_per_node_s: r3(c.bytes_sent as f64 / node_s),
        messages_per_node_s: r3(c.datagrams_sent as f64 / node_s),
        converged: outcome.converged,
        convergence_note: outcome.convergence_note,
        datagrams_sent: c.datagrams_sent,
        datagrams_delivered: c.delivered,
        dropped_partition: c.dropped_partition,
        dropped_loss: c.dropped_loss + c.dropped_burst,
        dropped_dead: c.dropped_dead,
        dropped_inbox_full: c.dropped_inbox_full,
        duplicated: c.duplicated,
        delayed: c.delayed,
        held_back: c.held_back,
        events: c.events,
        steps: c.steps,
        metadata_rejected: c.metadata_rejected,
        byzantine_attacks: outcome.byzantine.then_some(c.byzantine_attacks),
        byzantine_datagrams: outcome.byzantine.then_some(c.byzantine_datagrams),
        byzantine_refused: outcome.byzantine.then_some(c.byzantine_refused),
        joins: (c.joins > 0).then_some(c.joins),
        joins_seen: (c.joins > 0).then_some(c.joins_seen),
        leaves: (c.leaves > 0).then_some(c.leaves),
        leaves_seen: (c.leaves > 0).then_some(c.leaves_seen),
        first_metadata_error: c.first_metadata_error.clone(),
        failover_p50_s: pct(leases.map(|l| &l.failover_s), 50.0),
        failover_p99_s: pct(leases.map(|l| &l.failover_s), 99.0),
        failovers_unfinished: leases.map(|l| l.failovers_unfinished),
        failover_pause_p50_s: pct(leases.map(|l| &l.pause_failover_s), 50.0),
        failover_pause_p99_s: pct(leases.map(|l| &l.pause_failover_s), 99.0),
        failover_partition_p50_s: pct(leases.map(|l| &l.partition_failover_s), 50.0),
        failover_partition_p99_s: pct(leases.map(|l| &l.partition_failover_s), 99.0),
        gray_failovers_unfinished: leases.map(|l| l.gray_failovers_unfinished),
        handoff_p99_ms: pct(leases.map(|l| &l.handoff_ms), 99.0),
        lease_grant_p50_ms: pct(leases.map(|l| &l.grant_ms), 50.0),
        raft_failover_p50_s: pct(leases.map(|l| &l.raft_failover_s), 50.0),
        raft_failover_p99_s: pct(leases.map(|l| &l.raft_failover_s), 99.0),
        raft_failovers_s: leases.map_or_else(Vec::new, |l| {
            l.raft_failover_s.iter().copied().map(r3).collect()
        }),
        raft_failovers_unfinished: leases.map(|l| l.raft_failovers_unfinished),
        voter_restarts: leases.map(|l| l.voter_restarts),
        lease_acquisitions: leases.map(|l| l.acquisitions),
        fenced_writes_accepted: leases.map(|l| l.writes_accepted),
        stale_writes_accepted: leases.map(|l| l.stale_writes_accepted),
        stale_writes_refused: leases.map(|l| l.stale_writes_refused),
        takeover_writes_accepted: leases.map(|l| l.takeover_writes_accepted),
        lease_datagrams_sent: leases.map(|l| l.datagrams_sent),
        shard_moves: shards.map(|s| s.moves),
        shard_moves_min: shards.map(|s| s.moves_min),
        shard_moves_ratio: shards
            .filter(|s| s.moves_min > 0)
            .map(|s| r3(s.moves as f64 / s.moves_min as f64)),
        shard_imbalance_max: shards.and_then(|s| s.imbalance_max).map(r3),
        shards_placed: shards.map(|s| s.placed),
        shard_plans: shards.map(|s| s.plans),
        shard_drains: shards.map(|s| s.drains_s.len() as u64),
        shard_drain_max_s: shards.and_then(|s| percentile(&s.drains_s, 100.0)).map(r3),
        shard_drains_unfinished: shards.map(|s| s.drains_unfinished),
        queue: outcome.queue.as_ref().map(|q| QueueReport {
            queue_acknowledged: q.acknowledged,
            queue_completed: q.completed,
            queue_lost: q.lost,
            queue_duplicate_completions: q.duplicate_completions,
            queue_reused_ids: q.reused_ids,
            queue_accepted_completions_refused: q.accepted_refused,
            queue_stale_completions_refused: q.stale_refused,
            queue_stale_completions_accepted: q.stale_accepted,
            queue_replication_lag_p99_ms: percentile(&q.lag_ms, 99.0).map(r3),
            queue_failover_p99_s: percentile(&q.failover_s, 99.0).map(r3),
            queue_failovers_s: q.failover_s.iter().copied().map(r3).collect(),
            queue_backpressure_transitions: q.backpressure_transitions,
            queue_enqueues_sent: q.enqueues_sent,
            queue_producer_waits: q.producer_waits,
            queue_leases_released: q.released,
        }),
        stopped_early: outcome.stopped_early,
        invariant_violations: outcome.violations,
        trace: outcome.trace,
        ..header
    }
}

/// The largest of the finished values, rounded (`None` if none finished).
fn slowest(values: &[Option<f64>]) -> Option<f64> {
    values.iter().flatten().copied().reduce(f64::max).map(r3)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_rank_percentiles() {
        assert_eq!(percentile(&[], 50.0), None);
        assert_eq!(percentile(&[3.0], 99.0), Some(3.0));
        let v: Vec<f64> = (1..=100).map(f64::from).rev().collect();
        assert_eq!(percentile(&v, 50.0), Some(50.0));
        assert_eq!(percentile(&v, 99.0), Some(99.0));
        assert_eq!(percentile(&v, 100.0), Some(100.0));
        assert_eq!(percentile(&[1.0, 2.0, 3.0, 4.0, 5.0], 99.0), Some(5.0));
        assert_eq!(percentile(&[1.0, 2.0, 3.0, 4.0], 50.0), Some(2.0));
    }
}
