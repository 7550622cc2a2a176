//! The run report: its JSON form (one object per seed), its human form (a small aligned table per
//! seed and a summary over seeds), and the check of a scenario's `[expect]` bounds.

use core::fmt::Write as _;

use serde::Serialize;

use crate::metrics::percentile;
use crate::scenario::Expectations;

/// Everything measured in one run. Serialized with these field names; see [`crate::metrics`]
/// for the definitions.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
#[non_exhaustive]
pub struct RunReport {
    /// Scenario name.
    pub scenario: String,
    /// Protocol profile.
    pub profile: String,
    /// The run's seed.
    pub seed: u64,
    /// Node count.
    pub nodes: u32,
    /// Virtual seconds simulated (less than asked if the run stopped early).
    pub virtual_s: f64,
    /// Wall-clock seconds (filled in by the command-line tool; 0 from the library).
    pub wall_s: f64,
    /// Trace hash, 16 hex digits.
    pub trace_hash: String,
    /// Median crash detection time.
    pub detection_p50_s: Option<f64>,
    /// 99th percentile crash detection time.
    pub detection_p99_s: Option<f64>,
    /// Slowest crash detection.
    pub detection_max_s: Option<f64>,
    /// Every detected crash's detection time, in crash order (to pool percentiles over seeds).
    pub detections_s: Vec<f64>,
    /// Crashes.
    pub crashes: u64,
    /// Crashes not detected by the end.
    pub undetected: u64,
    /// Crashed nodes that restarted before they were detected (left out of the percentiles).
    pub restarted_before_detection: u64,
    /// Crashes with nothing to measure (left out of the percentiles): the mesh already held the
    /// node down (a paused node declared dead), or no live node was left to detect it.
    pub crashes_not_measurable: u64,
    /// Fault occurrences scheduled after the end of the run (a `--duration` shorter than the
    /// scenario's), which did not fire.
    pub faults_after_end: u64,
    /// Distinct nodes declared Dead while they ran (not crashed, not left, not paused) and
    /// no partition in force separated them from the observer; a paused node counts once it
    /// resumed. Nothing is excused for having been paused, restarted or partitioned before.
    pub false_positives: u64,
    /// The (observer, node) Dead verdicts behind `false_positives`.
    pub false_positive_verdicts: u64,
    /// The first false positive, described.
    pub first_false_positive: Option<String>,
    /// With [`crate::RunOptions::explain_false_positives`]: every false-positive Dead verdict
    /// (the first [`MAX_EXPLAINED_VERDICTS`]), explained; left out of the JSON when empty.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub false_positive_log: Vec<FalsePositiveVerdict>,
    /// Every core fault plan given to [`crate::run_with_plans`] that activated: what it
    /// touched, when, and how it ended.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub experiments: Vec<ExperimentRecord>,
    /// Sections of the scenario the simulator reads but does not run (`[autoscale]`: it has
    /// no containers), each with why; the compose environment runs them.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub not_modelled: Vec<String>,
    /// Every state change of the probes given to [`crate::run_with_probes`], in order.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub probe_transitions: Vec<ProbeTransition>,
    /// Pauses (gray failures) in the run.
    pub pauses: u64,
    /// Pauses during which some node declared the paused node Dead ("paused-dead").
    pub paused_dead: u64,
    /// Dead verdicts about a node while it was paused.
    pub paused_dead_verdicts: u64,
    /// Dead verdicts across a partition in force (expected: the node is out of reach).
    pub cut_off_verdicts: u64,
    /// The slowest, over the partitions, of the time from a partition until every live node
    /// of its smallest side held every live node of the other sides Dead (null if none did).
    pub minority_view_s: Option<f64>,
    /// The same for the largest side.
    pub majority_view_s: Option<f64>,
    /// Per partition, its smallest side's view time, null when unfinished (to pool over seeds).
    pub minority_views_s: Vec<Option<f64>>,
    /// Sides (smallest or largest) whose view was not complete when their partition healed
    /// or the run ended.
    pub cutoff_views_unfinished: u64,
    /// Own-probe suspicions of healthy nodes per live node-hour.
    pub suspicions_per_node_hour: f64,
    /// Own-probe suspicions of healthy nodes.
    pub suspicions: u64,
    /// Median dissemination of workload writes, in gossip rounds.
    pub dissemination_p50_rounds: Option<f64>,
    /// 99th percentile dissemination, in gossip rounds.
    pub dissemination_p99_rounds: Option<f64>,
    /// Workload writes measured.
    pub metadata_updates: u64,
    /// Workload writes not everywhere by the end.
    pub dissemination_incomplete: u64,
    /// Time from the last partition heal to one view.
    pub heal_s: Option<f64>,
    /// Partitions started.
    pub partitions: u64,
    /// Bytes sent per live node-second.
    pub bytes_per_node_s: f64,
    /// Datagrams sent per live node-second.
    pub messages_per_node_s: f64,
    /// Whether the run ended in one view with equal metadata versions (asked of the tables).
    pub converged: bool,
    /// Why not, if not.
    pub convergence_note: Option<String>,
    /// Datagrams sent.
    pub datagrams_sent: u64,
    /// Datagrams handed to a node.
    pub datagrams_delivered: u64,
    /// Dropped by partitions.
    pub dropped_partition: u64,
    /// Dropped by independent or bursty loss.
    pub dropped_loss: u64,
    /// Addressed to a crashed or gone node.
    pub dropped_dead: u64,
    /// Dropped by a paused node's full queue.
    pub dropped_inbox_full: u64,
    /// Duplicated by the network.
    pub duplicated: u64,
    /// Datagram copies delayed by a latency fault plan.
    pub delayed: u64,
    /// Datagram copies held back by a reorder fault plan.
    pub held_back: u64,
    /// Core events.
    pub events: u64,
    /// Engine steps (heap entries).
    pub steps: u64,
    /// Metadata writes the core refused.
    pub metadata_rejected: u64,
    /// The first refusal.
    pub first_metadata_error: Option<String>,
    /// With a `byzantine` fault: its occurrences fired.
    pub byzantine_attacks: Option<u64>,
    /// With a `byzantine` fault: forged datagrams sent by the non-member.
    pub byzantine_datagrams: Option<u64>,
    /// With a `byzantine` fault: forged datagrams delivered and refused by the core.
    pub byzantine_refused: Option<u64>,
    /// With a membership surge: the spares it booted (`[topology] spares`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub joins: Option<u64>,
    /// With a membership surge: the booted spares that 99% of the other live nodes held Alive
    /// when the surge ended (or the run did).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub joins_seen: Option<u64>,
    /// With graceful leaves (`leave`, a drained member, a surge's end): how many.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub leaves: Option<u64>,
    /// With graceful leaves: those that 99% of the live nodes hold `left` (or no longer list)
    /// at the end; a leaver held `dead` by more is no leave seen.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub leaves_seen: Option<u64>,
    /// With `[leases]`: median time from a holder's crash to the next holder's `Acquired`.
    pub failover_p50_s: Option<f64>,
    /// With `[leases]`: the same, 99th percentile.
    pub failover_p99_s: Option<f64>,
    /// With `[leases]`: holder crashes not followed by another node's `Acquired` by the end.
    pub failovers_unfinished: Option<u64>,
    /// With `[leases]`: median time from a pause of a holder to the scope's next `Acquired`
    /// (pauses the holder survived, renewing, are not counted; see `crate::lease`).
    pub failover_pause_p50_s: Option<f64>,
    /// With `[leases]`: the same, 99th percentile.
    pub failover_pause_p99_s: Option<f64>,
    /// With `[leases]`: median time from a partition that began while a node held a scope to
    /// the scope's next `Acquired` (holders that kept renewing are not counted).
    pub failover_partition_p50_s: Option<f64>,
    /// With `[leases]`: the same, 99th percentile.
    pub failover_partition_p99_s: Option<f64>,
    /// With `[leases]`: pause or partition failovers not finished by the end.
    pub gray_failovers_unfinished: Option<u64>,
    /// With `[leases]`: 99th percentile from a `transfer` fault to the target's `Acquired`.
    pub handoff_p99_ms: Option<f64>,
    /// With `[leases]`: median from an acquire request to its `Acquired`.
    pub lease_grant_p50_ms: Option<f64>,
    /// With `[leases]`: median time from the crash of the voter that was Raft leader to the
    /// first instant another voter (or the restarted one) leads at a higher term.
    pub raft_failover_p50_s: Option<f64>,
    /// With `[leases]`: the same, 99th percentile.
    pub raft_failover_p99_s: Option<f64>,
    /// With `[leases]`: every Raft failover, in crash order (to pool percentiles over seeds).
    pub raft_failovers_s: Vec<f64>,
    /// With `[leases]`: Raft leader crashes not followed by a new leader by the end.
    pub raft_failovers_unfinished: Option<u64>,
    /// With `[leases]`: voters restarted after a crash, each checked to resume the Raft term and
    /// log it crashed with (an invariant).
    pub voter_restarts: Option<u64>,
    /// With `[leases]`: `Acquired` events.
    pub lease_acquisitions: Option<u64>,
    /// With `[leases]`: writes the fenced resources accepted.
    pub fenced_writes_accepted: Option<u64>,
    /// With `[leases]`: writes accepted with a token older than the latest grant (violations).
    pub stale_writes_accepted: Option<u64>,
    /// With `[leases]`: writes the fenced resources refused (token older than one they saw).
    pub stale_writes_refused: Option<u64>,
    /// With `[leases]` and declared clock skew: writes of an old holder the resources accepted
    /// after a newer grant but before its holder's first write, within the skew allowance
    /// (fencing orders them first; see `crate::lease`).
    pub takeover_writes_accepted: Option<u64>,
    /// With `[leases]`: lease datagrams sent (not in `datagrams_sent`).
    pub lease_datagrams_sent: Option<u64>,
    /// With `[shards]`: changes of a shard's owner after the initial placement (see
    /// `crate::shard`).
    pub shard_moves: Option<u64>,
    /// With `[shards]`: the fewest moves the pool changes needed (the first plan after each).
    pub shard_moves_min: Option<u64>,
    /// With `[shards]`: `shard_moves / shard_moves_min` (null when the minimum is 0).
    pub shard_moves_ratio: Option<f64>,
    /// With `[shards]`: the largest `|owned - mean| / mean` of an eligible member, over the
    /// instants the map settled (null if it never did).
    pub shard_imbalance_max: Option<f64>,
    /// With `[shards]`: whether every shard was once owned within the load bound.
    pub shards_placed: Option<bool>,
    /// With `[shards]`: plans the coordinator made.
    pub shard_plans: Option<u64>,
    /// With `[shards]`: drains that finished (the node owned nothing, then left).
    pub shard_drains: Option<u64>,
    /// With `[shards]`: the slowest finished drain, from the `drain` fault.
    pub shard_drain_max_s: Option<f64>,
    /// With `[shards]`: drains whose node left the pool or whose run ended first.
    pub shard_drains_unfinished: Option<u64>,
    /// With `[queue]`: the queue figures (absent from the JSON of runs without a queue).
    #[serde(flatten, skip_serializing_if = "Option::is_none")]
    pub queue: Option<QueueReport>,
    /// Whether an invariant violation stopped the run.
    pub stopped_early: bool,
    /// Invariant violations (the run stops at the first).
    pub invariant_violations: Vec<String>,
    /// Failed expectations: key, bound and measured value.
    pub expectations_failed: Vec<String>,
    /// The shortest command that replays this run.
    pub replay: String,
    /// With [`crate::RunOptions::trace_node`]: every event seen by or about that node, one line
    /// each (not serialized).
    #[serde(skip)]
    pub trace: Vec<String>,
}

/// The queue figures of a run with `[queue]` (see `crate::queue`), flattened into the
/// report's JSON as `queue_*` keys.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
#[non_exhaustive]
pub struct QueueReport {
    /// Enqueues acknowledged by an owner (held by the configured replicas).
    pub queue_acknowledged: u64,
    /// Completions owners accepted.
    pub queue_completed: u64,
    /// Acknowledged items missing from an owner that served the shard later, or at the end
    /// (an invariant: must be 0).
    pub queue_lost: u64,
    /// Items whose completion was accepted twice (an invariant: must be 0).
    pub queue_duplicate_completions: u64,
    /// Acknowledgements of an item id already acknowledged for another enqueue (an invariant:
    /// must be 0).
    pub queue_reused_ids: u64,
    /// Completions accepted by an owner that the worker then heard refused as `StaleLease` by
    /// that owner's fence (an invariant: must be 0).
    pub queue_accepted_completions_refused: u64,
    /// Completions and heartbeats owners refused for a stale token.
    pub queue_stale_completions_refused: u64,
    /// Completions accepted with a stale token (an invariant: must be 0).
    pub queue_stale_completions_accepted: u64,
    /// Enqueue arrival to acknowledgement at the owner, 99th percentile (replication lag).
    pub queue_replication_lag_p99_ms: Option<f64>,
    /// A serving owner's crash or lease loss to the next owner serving the shard, 99th
    /// percentile.
    pub queue_failover_p99_s: Option<f64>,
    /// Every such failover, in order.
    pub queue_failovers_s: Vec<f64>,
    /// Backpressure transitions of all owners.
    pub queue_backpressure_transitions: u64,
    /// Enqueues producers sent (the burst included).
    pub queue_enqueues_sent: u64,
    /// Enqueues producers held back because the owner's signal was active.
    pub queue_producer_waits: u64,
    /// Leases that ended without completion (expired, or the worker's node gone).
    pub queue_leases_released: u64,
}

/// False-positive verdicts kept by [`crate::RunOptions::explain_false_positives`], at most.
pub const MAX_EXPLAINED_VERDICTS: usize = 10_000;

/// One false-positive Dead verdict, explained: who declared whom, when, and what the observer
/// and the node had seen of the partitions and of each other before it. Nodes are numbered as
/// in the rest of the report (`node-1` is 1).
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
#[non_exhaustive]
pub struct FalsePositiveVerdict {
    /// Virtual seconds of the verdict.
    pub at_s: f64,
    /// The node that emitted the Dead verdict.
    pub observer: u32,
    /// The running node it declared Dead.
    pub node: u32,
    /// Who the observer's event names as the declarer (the observer itself: its suspicion ran
    /// out).
    pub declared_by: Option<u32>,
    /// The incarnation the verdict is about.
    pub incarnation: u32,
    /// The node's own incarnation at that instant: above `incarnation` when the node had
    /// already refuted and the refutation had not reached the observer.
    pub node_incarnation: u32,
    /// When the node last refuted a claim about itself before the verdict.
    pub node_refuted_at_s: Option<f64>,
    /// When the observer began to hold the node Suspect (the suspicion that ran out), and who
    /// raised it (the observer's own probe, or the member whose claim it took).
    pub suspected_at_s: Option<f64>,
    /// See `suspected_at_s`.
    pub suspected_by: Option<u32>,
    /// The last partition that healed before the verdict: seconds since its heal.
    pub since_heal_s: Option<f64>,
    /// Whether that partition had the observer and the node on different sides.
    pub across_healed_cut: bool,
    /// Nodes on the observer's side of that partition.
    pub observer_side_nodes: Option<u32>,
    /// Nodes on the declared node's side of that partition.
    pub node_side_nodes: Option<u32>,
    /// Nodes on the raiser's (`suspected_by`) side of that partition.
    pub raiser_side_nodes: Option<u32>,
}

/// One explained false positive as a line of text, for the command line.
pub fn explain_line(v: &FalsePositiveVerdict) -> String {
    let opt = |t: Option<f64>| t.map_or("-".to_owned(), |t| format!("{t:.3}"));
    let who = |n: Option<u32>| n.map_or("-".to_owned(), |n| format!("node-{n}"));
    let side = |n: Option<u32>| n.map_or("-".to_owned(), |n| n.to_string());
    format!(
        "false positive at {:.3} s: node-{} held node-{} dead at incarnation {} (node at {}, \
         refuted at {}); declared by {}; suspected since {} by {}; {} s after the last heal, \
         {} (sides: observer {}, node {}, raiser {})",
        v.at_s,
        v.observer,
        v.node,
        v.incarnation,
        v.node_incarnation,
        opt(v.node_refuted_at_s),
        who(v.declared_by),
        opt(v.suspected_at_s),
        who(v.suspected_by),
        opt(v.since_heal_s),
        if v.across_healed_cut {
            "across the healed cut"
        } else {
            "same side"
        },
        side(v.observer_side_nodes),
        side(v.node_side_nodes),
        side(v.raiser_side_nodes),
    )
}

impl RunReport {
    /// Whether every expectation held and no invariant broke.
    pub fn passed(&self) -> bool {
        self.invariant_violations.is_empty() && self.expectations_failed.is_empty()
    }

    /// One line of JSON.
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).unwrap_or_else(|e| format!("{{\"error\":\"{e}\"}}"))
    }

    /// The human form: a header line and an aligned table.
    pub fn render(&self, expect: &Expectations) -> String {
        let mut out = String::new();
        let speed = if self.wall_s > 0.0 {
            format!(
                " in {:.2} wall s ({:.0}x)",
                self.wall_s,
                self.virtual_s / self.wall_s
            )
        } else {
            String::new()
        };
        let _ = writeln!(
            out,
            "{}  seed {}  {} nodes  profile {}  {:.1} virtual s{speed}",
            self.scenario, self.seed, self.nodes, self.profile, self.virtual_s
        );
        for what in &self.not_modelled {
            let _ = writeln!(out, "not modelled: {what}");
        }
        let opt =
            |v: Option<f64>, unit: &str| v.map_or("-".to_owned(), |v| format!("{v:.3}{unit}"));
        let le = |b: Option<f64>| b.map_or(String::new(), |b| format!("<= {b}"));
        let mut rows: Vec<(String, String, String)> = vec![
            ("trace hash".into(), self.trace_hash.clone(), String::new()),
            (
                "detection p50".into(),
                opt(self.detection_p50_s, " s"),
                le(expect.detection_p50_s_max),
            ),
            (
                "detection p99".into(),
                opt(self.detection_p99_s, " s"),
                le(expect.detection_p99_s_max),
            ),
            (
                "crashes".into(),
                format!(
                    "{} ({} undetected, {} restarted first, {} not measurable)",
                    self.crashes,
                    self.undetected,
                    self.restarted_before_detection,
                    self.crashes_not_measurable
                ),
                String::new(),
            ),
            (
                "false positives".into(),
                self.false_positives.to_string(),
                expect
                    .false_positives_max
                    .map_or(String::new(), |b| format!("<= {b}")),
            ),
            (
                "paused-dead".into(),
                format!(
                    "{} of {} pauses ({} verdicts)",
                    self.paused_dead, self.pauses, self.paused_dead_verdicts
                ),
                expect
                    .paused_dead_max
                    .map_or(String::new(), |b| format!("<= {b}")),
            ),
            (
                "suspicions/node-hour".into(),
                format!("{:.3}", self.suspicions_per_node_hour),
                le(expect.suspicions_per_node_hour_max),
            ),
            (
                "dissemination p99".into(),
                opt(self.dissemination_p99_rounds, " rounds"),
                le(expect.dissemination_p99_rounds_max),
            ),
            (
                "cut-off side's view".into(),
                if self.partitions == 0 {
                    "-".to_owned()
                } else {
                    format!(
                        "smallest side {}, largest {} ({} unfinished)",
                        opt(self.minority_view_s, " s"),
                        opt(self.majority_view_s, " s"),
                        self.cutoff_views_unfinished
                    )
                },
                le(expect.minority_view_s_max),
            ),
            ("heal".into(), opt(self.heal_s, " s"), le(expect.heal_s_max)),
            (
                "bytes/node/s".into(),
                format!("{:.1}", self.bytes_per_node_s),
                le(expect.bytes_per_node_s_max),
            ),
            (
                "messages/node/s".into(),
                format!("{:.2}", self.messages_per_node_s),
                String::new(),
            ),
            (
                "converged".into(),
                if self.converged {
                    "yes".into()
                } else {
                    "no".into()
                },
                expect
                    .converged
                    .map_or(String::new(), |c| format!("== {c}")),
            ),
        ];
        if self.lease_acquisitions.is_some() {
            rows.push((
                "failover p50/p99".into(),
                format!(
                    "{} / {} ({} unfinished)",
                    opt(self.failover_p50_s, " s"),
                    opt(self.failover_p99_s, " s"),
                    self.failovers_unfinished.unwrap_or(0)
                ),
                le(expect.failover_p99_s_max),
            ));
            rows.push((
                "failover after pause/partition".into(),
                format!(
                    "p50 {} / {}, p99 {} / {} ({} unfinished)",
                    opt(self.failover_pause_p50_s, " s"),
                    opt(self.failover_partition_p50_s, " s"),
                    opt(self.failover_pause_p99_s, " s"),
                    opt(self.failover_partition_p99_s, " s"),
                    self.gray_failovers_unfinished.unwrap_or(0)
                ),
                String::new(),
            ));
            rows.push((
                "raft failover p50/p99".into(),
                format!(
                    "{} / {} ({} unfinished)",
                    opt(self.raft_failover_p50_s, " s"),
                    opt(self.raft_failover_p99_s, " s"),
                    self.raft_failovers_unfinished.unwrap_or(0)
                ),
                le(expect.raft_failover_p99_s_max),
            ));
            rows.push((
                "handoff p99".into(),
                opt(self.handoff_p99_ms, " ms"),
                le(expect.handoff_p99_ms_max),
            ));
            rows.push((
                "lease grant p50".into(),
                opt(self.lease_grant_p50_ms, " ms"),
                le(expect.lease_grant_p50_ms_max),
            ));
            rows.push((
                "fenced writes".into(),
                format!(
                    "{} accepted, {} stale refused, {} stale accepted, {} in a skewed takeover",
                    self.fenced_writes_accepted.unwrap_or(0),
                    self.stale_writes_refused.unwrap_or(0),
                    self.stale_writes_accepted.unwrap_or(0),
                    self.takeover_writes_accepted.unwrap_or(0)
                ),
                String::new(),
            ));
        }
        if let Some(moves) = self.shard_moves {
            rows.push((
                "shard moves".into(),
                format!(
                    "{moves} (minimum {}, ratio {})",
                    self.shard_moves_min.unwrap_or(0),
                    opt(self.shard_moves_ratio, "")
                ),
                le(expect.shard_moves_ratio_max),
            ));
            rows.push((
                "shard imbalance max".into(),
                opt(self.shard_imbalance_max, ""),
                le(expect.shard_imbalance_max_max),
            ));
            rows.push((
                "shard drains".into(),
                format!(
                    "{} (slowest {}, {} unfinished)",
                    self.shard_drains.unwrap_or(0),
                    opt(self.shard_drain_max_s, " s"),
                    self.shard_drains_unfinished.unwrap_or(0)
                ),
                expect
                    .shard_drains_min
                    .map_or(String::new(), |b| format!(">= {b}")),
            ));
        }
        if let Some(q) = &self.queue {
            rows.push((
                "queue items".into(),
                format!(
                    "{} acknowledged, {} completed, {} lost, {} completed twice",
                    q.queue_acknowledged,
                    q.queue_completed,
                    q.queue_lost,
                    q.queue_duplicate_completions
                ),
                String::new(),
            ));
            rows.push((
                "queue stale completions".into(),
                format!(
                    "{} refused, {} accepted",
                    q.queue_stale_completions_refused, q.queue_stale_completions_accepted
                ),
                String::new(),
            ));
            rows.push((
                "queue replication lag p99".into(),
                opt(q.queue_replication_lag_p99_ms, " ms"),
                String::new(),
            ));
            rows.push((
                "queue failover p99".into(),
                format!(
                    "{} ({} failovers)",
                    opt(q.queue_failover_p99_s, " s"),
                    q.queue_failovers_s.len()
                ),
                String::new(),
            ));
            rows.push((
                "queue backpressure".into(),
                format!(
                    "{} transitions, {} enqueues held back",
                    q.queue_backpressure_transitions, q.queue_producer_waits
                ),
                String::new(),
            ));
        }
        if let Some(fp) = &self.first_false_positive {
            rows.push(("first false positive".into(), fp.clone(), String::new()));
        }
        if let Some(note) = &self.convergence_note {
            rows.push(("not converged".into(), note.clone(), String::new()));
        }
        if let Some(sent) = self.byzantine_datagrams {
            rows.push((
                "forged datagrams".into(),
                format!(
                    "{sent} in {} attacks, {} refused",
                    self.byzantine_attacks.unwrap_or(0),
                    self.byzantine_refused.unwrap_or(0)
                ),
                expect
                    .byzantine_datagrams_min
                    .map_or(String::new(), |b| format!(">= {b}")),
            ));
        }
        if let Some(joins) = self.joins {
            rows.push((
                "surge joins seen".into(),
                format!("{} of {joins}", self.joins_seen.unwrap_or(0)),
                expect
                    .joins_seen_min
                    .map_or(String::new(), |b| format!(">= {b}")),
            ));
        }
        if let Some(leaves) = self.leaves {
            rows.push((
                "leaves held left".into(),
                format!("{} of {leaves}", self.leaves_seen.unwrap_or(0)),
                expect
                    .leaves_seen_min
                    .map_or(String::new(), |b| format!(">= {b}")),
            ));
        }
        if self.metadata_rejected > 0 {
            let first = self.first_metadata_error.clone().unwrap_or_default();
            rows.push((
                "metadata refused".into(),
                format!("{} (first: {first})", self.metadata_rejected),
                String::new(),
            ));
        }
        rows.insert(
            0,
            (
                "FIGURE".into(),
                "MEASURED".into(),
                "EXPECTED ([expect])".into(),
            ),
        );
        let w0 = rows.iter().map(|r| r.0.len()).max().unwrap_or(0);
        let w1 = rows.iter().map(|r| r.1.len()).max().unwrap_or(0).min(40);
        for (k, v, b) in &rows {
            let line = format!("  {k:<w0$}  {v:<w1$}  {b}");
            let _ = writeln!(out, "{}", line.trim_end());
        }
        let _ = writeln!(
            out,
            "  (\"-\": nothing of that kind happened in this run; docs/scenarios.md defines each figure)"
        );
        if self.faults_after_end > 0 {
            let _ = writeln!(
                out,
                "  NOTE: {} fault occurrence(s) scheduled after the end of the run did not fire",
                self.faults_after_end
            );
        }
        for v in &self.invariant_violations {
            let _ = writeln!(out, "  INVARIANT VIOLATED: {v}");
        }
        for e in &self.expectations_failed {
            let _ = writeln!(out, "  EXPECTATION FAILED: {e}");
        }
        let _ = writeln!(out, "  {}", if self.passed() { "PASS" } else { "FAIL" });
        out
    }
}

/// The failed expectations of a report, each naming the key, the bound and the measured value.
pub fn check_expectations(expect: &Expectations, r: &RunReport) -> Vec<String> {
    let mut failed = Vec::new();
    let mut max = |key: &str, bound: Option<f64>, measured: Option<f64>, why_none: &str| {
        let Some(bound) = bound else { return };
        match measured {
            Some(m) if m <= bound => {}
            Some(m) => failed.push(format!("{key}: measured {m} > bound {bound}")),
            None => failed.push(format!(
                "{key}: nothing measured ({why_none}); bound {bound}"
            )),
        }
    };
    let detection_why = if r.crashes == 0 {
        "no crash".to_owned()
    } else {
        format!(
            "{} crash(es): {} restarted before detection, {} not measurable",
            r.crashes, r.restarted_before_detection, r.crashes_not_measurable
        )
    };
    max(
        "detection_p50_s",
        expect.detection_p50_s_max,
        r.detection_p50_s,
        &detection_why,
    );
    max(
        "detection_p99_s",
        expect.detection_p99_s_max,
        r.detection_p99_s,
        &detection_why,
    );
    max(
        "false_positives",
        expect.false_positives_max.map(|b| b as f64),
        Some(r.false_positives as f64),
        "",
    );
    max(
        "paused_dead",
        expect.paused_dead_max.map(|b| b as f64),
        Some(r.paused_dead as f64),
        "",
    );
    let view_why = if r.partitions == 0 {
        "no partition"
    } else {
        "no side completed its view"
    };
    max(
        "minority_view_s",
        expect.minority_view_s_max,
        r.minority_view_s,
        view_why,
    );
    max(
        "suspicions_per_node_hour",
        expect.suspicions_per_node_hour_max,
        Some(r.suspicions_per_node_hour),
        "",
    );
    max(
        "dissemination_p99_rounds",
        expect.dissemination_p99_rounds_max,
        r.dissemination_p99_rounds,
        "no workload write",
    );
    let heal_why = if r.partitions == 0 {
        "no partition"
    } else {
        "no single view after the last heal"
    };
    max("heal_s", expect.heal_s_max, r.heal_s, heal_why);
    max(
        "bytes_per_node_s",
        expect.bytes_per_node_s_max,
        Some(r.bytes_per_node_s),
        "",
    );
    let no_leases = "no [leases] section";
    let failover_why = if r.lease_acquisitions.is_none() {
        no_leases
    } else {
        "no lease holder crashed"
    };
    max(
        "failover_p50_s",
        expect.failover_p50_s_max,
        r.failover_p50_s,
        failover_why,
    );
    max(
        "failover_p99_s",
        expect.failover_p99_s_max,
        r.failover_p99_s,
        failover_why,
    );
    let raft_why = if r.lease_acquisitions.is_none() {
        no_leases
    } else {
        "no Raft leader crashed"
    };
    max(
        "raft_failover_p50_s",
        expect.raft_failover_p50_s_max,
        r.raft_failover_p50_s,
        raft_why,
    );
    max(
        "raft_failover_p99_s",
        expect.raft_failover_p99_s_max,
        r.raft_failover_p99_s,
        raft_why,
    );
    max(
        "handoff_p99_ms",
        expect.handoff_p99_ms_max,
        r.handoff_p99_ms,
        "no transfer completed",
    );
    max(
        "lease_grant_p50_ms",
        expect.lease_grant_p50_ms_max,
        r.lease_grant_p50_ms,
        "no acquire granted",
    );
    max(
        "stale_writes_accepted",
        expect.stale_writes_accepted_max.map(|b| b as f64),
        r.stale_writes_accepted.map(|v| v as f64),
        no_leases,
    );
    let no_shards = "no [shards] section";
    max(
        "shard_moves_ratio",
        expect.shard_moves_ratio_max,
        r.shard_moves_ratio,
        if r.shard_moves.is_none() {
            no_shards
        } else {
            "no change of the shard pool after the initial placement"
        },
    );
    max(
        "shard_imbalance_max",
        expect.shard_imbalance_max_max,
        r.shard_imbalance_max,
        if r.shard_moves.is_none() {
            no_shards
        } else {
            "the shard map never settled"
        },
    );
    if let Some(min) = expect.shard_drains_min {
        let got = r.shard_drains.unwrap_or(0);
        if got < min {
            failed.push(format!("shard_drains: measured {got} < bound {min}"));
        }
    }
    if let Some(min) = expect.byzantine_datagrams_min {
        let got = r.byzantine_datagrams.unwrap_or(0);
        if got < min {
            failed.push(format!("byzantine_datagrams: measured {got} < bound {min}"));
        }
    }
    if let Some(min) = expect.joins_seen_min {
        let got = r.joins_seen.unwrap_or(0);
        if got < min {
            failed.push(format!("joins_seen: measured {got} < bound {min}"));
        }
    }
    if let Some(min) = expect.leaves_seen_min {
        let got = r.leaves_seen.unwrap_or(0);
        if got < min {
            failed.push(format!("leaves_seen: measured {got} < bound {min}"));
        }
    }
    if let Some(min) = expect.stale_writes_refused_min {
        let got = r.stale_writes_refused.unwrap_or(0);
        if got < min {
            failed.push(format!(
                "stale_writes_refused: measured {got} < bound {min}"
            ));
        }
    }
    if let Some(n) = r.failovers_unfinished.filter(|&n| n > 0)
        && (expect.failover_p99_s_max.is_some() || expect.failover_p50_s_max.is_some())
    {
        failed.push(format!(
            "failovers_unfinished: {n} holder crash(es) never followed by a new holder; bound 0"
        ));
    }
    if let Some(n) = r.raft_failovers_unfinished.filter(|&n| n > 0)
        && (expect.raft_failover_p99_s_max.is_some() || expect.raft_failover_p50_s_max.is_some())
    {
        failed.push(format!(
            "raft_failovers_unfinished: {n} Raft leader crash(es) never followed by a new \
             leader; bound 0"
        ));
    }
    if let Some(want) = expect.converged
        && want != r.converged
    {
        failed.push(format!(
            "converged: expected {want}, measured {}{}",
            r.converged,
            r.convergence_note
                .as_ref()
                .map_or(String::new(), |n| format!(" ({n})"))
        ));
    }
    if r.cutoff_views_unfinished > 0 && expect.minority_view_s_max.is_some() {
        failed.push(format!(
            "cutoff_views_unfinished: {} side(s) never held the other side(s) Dead; bound 0",
            r.cutoff_views_unfinished
        ));
    }
    if r.undetected > 0
        && (expect.detection_p99_s_max.is_some() || expect.detection_p50_s_max.is_some())
    {
        failed.push(format!(
            "undetected: {} crash(es) never detected; bound 0",
            r.undetected
        ));
    }
    failed
}

/// One seed of one scenario run twice, side by side: `primary` with the scenario's own profile
/// (its expectations are checked and decide the exit code) and `other` with another profile on
/// the same seed, for comparison. A row is shown when either run measured it.
pub fn render_comparison(primary: &RunReport, other: &RunReport, expect: &Expectations) -> String {
    type Figure = fn(&RunReport) -> Option<f64>;
    let as_f64 = |v: Option<u64>| v.map(|v| v as f64);
    let rows: [(&str, &str, Figure, Option<f64>, &str); 12] = [
        (
            "crash detection p50",
            " s",
            |r| r.detection_p50_s,
            expect.detection_p50_s_max,
            "crash until 99% of the live nodes hold it dead",
        ),
        (
            "crash detection p99",
            " s",
            |r| r.detection_p99_s,
            expect.detection_p99_s_max,
            "",
        ),
        (
            "false positives",
            "",
            |r| Some(r.false_positives as f64),
            as_f64(expect.false_positives_max),
            "running, reachable nodes some node declared dead",
        ),
        (
            "paused-dead pauses",
            "",
            |r| (r.pauses > 0).then_some(r.paused_dead as f64),
            as_f64(expect.paused_dead_max),
            "pauses during which the paused node was declared dead",
        ),
        (
            "cut-off minority's view",
            " s",
            |r| r.minority_view_s,
            expect.minority_view_s_max,
            "partition until the smallest side holds the rest dead",
        ),
        (
            "suspicions per node-hour",
            "",
            |r| Some(r.suspicions_per_node_hour),
            expect.suspicions_per_node_hour_max,
            "own-probe suspicions of healthy nodes",
        ),
        (
            "heal to one view",
            " s",
            |r| r.heal_s,
            expect.heal_s_max,
            "partition healed until every node sees the same members",
        ),
        (
            "lease failover p50",
            " s",
            |r| r.failover_p50_s,
            expect.failover_p50_s_max,
            "holder killed until another holds the lease",
        ),
        (
            "lease failover p99",
            " s",
            |r| r.failover_p99_s,
            expect.failover_p99_s_max,
            "",
        ),
        (
            "lease grant p50",
            " ms",
            |r| r.lease_grant_p50_ms,
            expect.lease_grant_p50_ms_max,
            "acquire request until granted",
        ),
        (
            "stale writes accepted",
            "",
            |r| r.stale_writes_accepted.map(|v| v as f64),
            as_f64(expect.stale_writes_accepted_max),
            "writes with an old fencing token that got through",
        ),
        (
            "bytes per node per s",
            "",
            |r| Some(r.bytes_per_node_s),
            expect.bytes_per_node_s_max,
            "everything sent, gossip and Raft",
        ),
    ];
    let cell = |v: Option<f64>, unit: &str| {
        v.map_or("-".to_owned(), |v| {
            if v.fract() == 0.0 && unit.is_empty() {
                format!("{v:.0}")
            } else {
                format!("{v:.3}{unit}")
            }
        })
    };
    let head_a = format!("{} PROFILE", primary.profile.to_uppercase());
    let head_b = format!("{} PROFILE", other.profile.to_uppercase());
    let mut table = vec![[
        "FIGURE".to_owned(),
        head_a,
        head_b,
        "EXPECTED".to_owned(),
        "WHAT IT MEASURES".to_owned(),
    ]];
    for (name, unit, figure, bound, meaning) in rows {
        let (a, b) = (figure(primary), figure(other));
        if a.is_none() && b.is_none() {
            continue;
        }
        table.push([
            name.to_owned(),
            cell(a, unit),
            cell(b, unit),
            bound.map_or(String::new(), |b| format!("<= {b}{unit}")),
            meaning.to_owned(),
        ]);
    }
    let widths: Vec<usize> = (0..4)
        .map(|c| table.iter().map(|r| r[c].len()).max().unwrap_or(0))
        .collect();
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{}  seed {}  {} nodes  {:.0} virtual s; {} profile {:.2} wall s, {} profile {:.2} wall s",
        primary.scenario,
        primary.seed,
        primary.nodes,
        primary.virtual_s,
        primary.profile,
        primary.wall_s,
        other.profile,
        other.wall_s
    );
    for row in &table {
        let line = format!(
            "  {:<w0$}  {:>w1$}  {:>w2$}  {:<w3$}  {}",
            row[0],
            row[1],
            row[2],
            row[3],
            row[4],
            w0 = widths[0],
            w1 = widths[1],
            w2 = widths[2],
            w3 = widths[3]
        );
        let _ = writeln!(out, "{}", line.trim_end());
    }
    let _ = writeln!(
        out,
        "  (\"-\": nothing of that kind happened; EXPECTED applies to the {} run; same seed, same faults)",
        primary.profile
    );
    for v in primary
        .invariant_violations
        .iter()
        .chain(&other.invariant_violations)
    {
        let _ = writeln!(out, "  INVARIANT VIOLATED: {v}");
    }
    for e in &primary.expectations_failed {
        let _ = writeln!(out, "  EXPECTATION FAILED: {e}");
    }
    let _ = writeln!(out, "  {}", if primary.passed() { "PASS" } else { "FAIL" });
    out
}

/// A summary over several seeds: pass count, the spread of the main figures, and the replay
/// command of every failing seed.
pub fn render_summary(reports: &[RunReport]) -> String {
    let mut out = String::new();
    let passed = reports.iter().filter(|r| r.passed()).count();
    let _ = writeln!(out, "summary: {passed}/{} seeds passed", reports.len());
    let spread = |name: &str, values: Vec<f64>, out: &mut String| {
        if values.is_empty() {
            return;
        }
        let lo = percentile(&values, 0.0).unwrap_or(0.0);
        let mid = percentile(&values, 50.0).unwrap_or(0.0);
        let hi = percentile(&values, 100.0).unwrap_or(0.0);
        let _ = writeln!(
            out,
            "  {name:<26} min {lo:>10.3}  median {mid:>10.3}  max {hi:>10.3}"
        );
    };
    spread(
        "detection_p99_s",
        reports.iter().filter_map(|r| r.detection_p99_s).collect(),
        &mut out,
    );
    spread(
        "false_positives",
        reports.iter().map(|r| r.false_positives as f64).collect(),
        &mut out,
    );
    spread(
        "suspicions_per_node_hour",
        reports.iter().map(|r| r.suspicions_per_node_hour).collect(),
        &mut out,
    );
    spread(
        "dissemination_p99_rounds",
        reports
            .iter()
            .filter_map(|r| r.dissemination_p99_rounds)
            .collect(),
        &mut out,
    );
    spread(
        "heal_s",
        reports.iter().filter_map(|r| r.heal_s).collect(),
        &mut out,
    );
    spread(
        "bytes_per_node_s",
        reports.iter().map(|r| r.bytes_per_node_s).collect(),
        &mut out,
    );
    // The lease figures (empty, so skipped, without [leases]).
    type Figure = fn(&RunReport) -> Option<f64>;
    let lease_figures: [(&str, Figure); 9] = [
        ("shard_moves", |r| r.shard_moves.map(|v| v as f64)),
        ("shard_moves_ratio", |r| r.shard_moves_ratio),
        ("shard_imbalance_max", |r| r.shard_imbalance_max),
        ("failover_p99_s", |r| r.failover_p99_s),
        ("raft_failover_p99_s", |r| r.raft_failover_p99_s),
        ("handoff_p99_ms", |r| r.handoff_p99_ms),
        ("lease_grant_p50_ms", |r| r.lease_grant_p50_ms),
        ("stale_writes_refused", |r| {
            r.stale_writes_refused.map(|v| v as f64)
        }),
        ("stale_writes_accepted", |r| {
            r.stale_writes_accepted.map(|v| v as f64)
        }),
    ];
    for (name, figure) in lease_figures {
        spread(name, reports.iter().filter_map(figure).collect(), &mut out);
    }
    spread(
        "wall_s",
        reports.iter().map(|r| r.wall_s).collect(),
        &mut out,
    );
    for r in reports.iter().filter(|r| !r.passed()) {
        let _ = writeln!(out, "  failed seed {}: replay with `{}`", r.seed, r.replay);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expectations_name_key_bound_and_value() {
        let expect = Expectations {
            detection_p99_s_max: Some(5.0),
            false_positives_max: Some(0),
            heal_s_max: Some(30.0),
            converged: Some(true),
            ..Expectations::default()
        };
        let r = RunReport {
            detection_p99_s: Some(7.5),
            false_positives: 2,
            partitions: 1,
            converged: true,
            ..RunReport::default()
        };
        let failed = check_expectations(&expect, &r);
        assert_eq!(failed.len(), 3, "{failed:?}");
        assert!(
            failed[0].contains("detection_p99_s")
                && failed[0].contains("7.5")
                && failed[0].contains('5')
        );
        assert!(failed[1].starts_with("false_positives: measured 2"));
        assert!(failed[2].contains("no single view"));
        let ok = RunReport {
            detection_p99_s: Some(1.0),
            heal_s: Some(3.0),
            false_positives: 0,
            ..r
        };
        assert!(check_expectations(&expect, &ok).is_empty());
    }

    /// A paused node declared Dead fails `paused_dead_max`; a cut-off side that never held
    /// the rest Dead fails `minority_view_s_max` even when another partition's did.
    #[test]
    fn paused_dead_and_minority_view_bounds() {
        let expect = Expectations {
            paused_dead_max: Some(0),
            minority_view_s_max: Some(12.0),
            ..Expectations::default()
        };
        let r = RunReport {
            pauses: 30,
            paused_dead: 7,
            partitions: 2,
            minority_view_s: Some(66.0),
            cutoff_views_unfinished: 1,
            ..RunReport::default()
        };
        let failed = check_expectations(&expect, &r);
        assert_eq!(failed.len(), 3, "{failed:?}");
        assert!(failed[0].starts_with("paused_dead: measured 7"));
        assert!(failed[1].starts_with("minority_view_s: measured 66"));
        assert!(failed[2].starts_with("cutoff_views_unfinished: 1"));
        let none = RunReport {
            partitions: 1,
            cutoff_views_unfinished: 2,
            ..RunReport::default()
        };
        let failed = check_expectations(&expect, &none);
        assert!(
            failed
                .iter()
                .any(|f| f.contains("no side completed its view")),
            "{failed:?}"
        );
        let ok = RunReport {
            pauses: 30,
            partitions: 1,
            minority_view_s: Some(9.5),
            ..RunReport::default()
        };
        assert!(check_expectations(&expect, &ok).is_empty());
    }

    #[test]
    fn json_has_the_documented_keys() {
        let json = RunReport::default().to_json();
        for key in [
            "seed",
            "nodes",
            "virtual_s",
            "wall_s",
            "trace_hash",
            "detection_p50_s",
            "detection_p99_s",
            "undetected",
            "false_positives",
            "false_positive_verdicts",
            "pauses",
            "paused_dead",
            "paused_dead_verdicts",
            "cut_off_verdicts",
            "minority_view_s",
            "majority_view_s",
            "minority_views_s",
            "cutoff_views_unfinished",
            "failover_pause_p50_s",
            "failover_partition_p99_s",
            "gray_failovers_unfinished",
            "suspicions_per_node_hour",
            "dissemination_p99_rounds",
            "heal_s",
            "bytes_per_node_s",
            "messages_per_node_s",
            "invariant_violations",
            "expectations_failed",
            "failover_p50_s",
            "failover_p99_s",
            "handoff_p99_ms",
            "raft_failover_p50_s",
            "raft_failover_p99_s",
            "lease_grant_p50_ms",
            "stale_writes_accepted",
            "stale_writes_refused",
            "shard_moves",
            "shard_moves_min",
            "shard_moves_ratio",
            "shard_imbalance_max",
            "shard_drains",
        ] {
            assert!(
                json.contains(&format!("\"{key}\":")),
                "missing {key} in {json}"
            );
        }
    }
}

/// One state change of a probe run in the simulator (see [`crate::run_with_probes`]).
#[derive(Clone, Debug, PartialEq, Serialize)]
#[non_exhaustive]
pub struct ProbeTransition {
    /// The probe's name.
    pub probe: String,
    /// The node index it probes from.
    pub from_node: u32,
    /// The node index it probes.
    pub to_node: u32,
    /// When the result that changed the state was recorded, virtual seconds.
    pub at_s: f64,
    /// The state before (`unknown`, `healthy`, `degraded`, `failing`).
    pub state_from: String,
    /// The state after.
    pub state_to: String,
}

/// One core fault plan as the simulator applied it (see [`crate::run_with_plans`]).
#[derive(Clone, Debug, PartialEq, Serialize)]
#[non_exhaustive]
pub struct ExperimentRecord {
    /// The experiment's id on the run's schedule.
    pub id: u64,
    /// The plan's kind ([`meshkit::diag::fault::FaultKind::name`]).
    pub kind: String,
    /// The node indices of its blast radius.
    pub nodes: Vec<u32>,
    /// The directed links it cut (partitions; 0 for node faults).
    pub links: usize,
    /// A partition's group sizes, first group first.
    pub groups: Vec<usize>,
    /// When it was applied, virtual seconds.
    pub activated_s: f64,
    /// Its deadline, virtual seconds.
    pub until_s: f64,
    /// When it was undone, if it was within the run.
    pub reverted_s: Option<f64>,
    /// How it ended (`deadline`, `aborted`, `kill-switch`), if it did within the run; or why it
    /// never ran (`unresolved: ...`, `not modelled: ...` for a real-node fault).
    pub end: Option<String>,
    /// A membership surge: the spare node indices it booted (`[topology] spares`).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub joined: Vec<u32>,
    /// A membership surge: the booted spares that left gracefully at its revert.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub left: Vec<u32>,
    /// A membership surge: the live nodes right after the joins.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub members_at_activation: Option<u32>,
    /// A membership surge: the live nodes right after the leaves began at the revert (a
    /// leaving node no longer counts).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub members_at_revert: Option<u32>,
}
