//! Seed sweeps: one scenario over many seeds, tallied as the runs finish, so that a sweep of a
//! million seeds keeps a few numbers per seed rather than a million reports.
//!
//! What a sweep proves is the safety claim: no invariant violation and no stale write
//! accepted by a fenced resource, over every seed. Latency expectations (a seed's failover p99
//! against its bound) are tails of a distribution; the tally counts the seeds that miss them and
//! pools the underlying samples, so the distribution itself is reported.

use core::fmt::Write as _;

use crate::metrics::percentile;
use crate::report::RunReport;

/// How many failing seeds the tally keeps (with their replay commands) per kind of failure.
pub const KEPT_FAILURES: usize = 10;

/// The running totals of one scenario's sweep.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct SweepTally {
    /// Scenario name.
    pub scenario: String,
    /// Seeds run.
    pub seeds: u64,
    /// Seeds with an invariant violation.
    pub seeds_violating: u64,
    /// Seeds that missed a latency or count expectation (and broke no invariant).
    pub seeds_missing_expectations: u64,
    /// Stale-token writes the fenced resources accepted, summed (must stay 0).
    pub stale_writes_accepted: u64,
    /// Stale-token writes they refused, summed.
    pub stale_writes_refused: u64,
    /// Old holders' writes accepted in a skewed takeover, summed (see `crate::lease`).
    pub takeover_writes_accepted: u64,
    /// Every lease holder failover's seed-level p99 (one value per seed that had failovers).
    pub failover_p99s_s: Vec<f64>,
    /// Every Raft leader failover of every seed, pooled.
    pub raft_failovers_s: Vec<f64>,
    /// Every seed's median grant latency.
    pub grant_p50s_ms: Vec<f64>,
    /// Every seed's handoff p99.
    pub handoff_p99s_ms: Vec<f64>,
    /// The violations of the lowest [`KEPT_FAILURES`] seeds: seed, what broke, replay command.
    pub violations: Vec<(u64, String, String)>,
    /// The missed expectations of the lowest [`KEPT_FAILURES`] seeds: seed, which, replay.
    pub missed: Vec<(u64, String, String)>,
    /// Wall seconds the runs took, summed over the workers (CPU-ish time).
    pub run_wall_s: f64,
    /// With `[queue]`: the queue totals (`None` for scenarios without a queue).
    pub queue: Option<QueueTally>,
}

/// The queue totals of a sweep of a `[queue]` scenario (see `crate::queue`).
#[derive(Clone, Debug, Default, PartialEq)]
#[non_exhaustive]
pub struct QueueTally {
    /// Items acknowledged, summed.
    pub acknowledged: u64,
    /// Completions accepted, summed.
    pub completed: u64,
    /// Acknowledged items lost, summed (must stay 0).
    pub lost: u64,
    /// Items completed twice, summed (must stay 0).
    pub duplicate_completions: u64,
    /// Item ids acknowledged for a second enqueue, summed (must stay 0).
    pub reused_ids: u64,
    /// Completions accepted with a stale token, summed (must stay 0).
    pub stale_completions_accepted: u64,
    /// Stale completions and heartbeats refused, summed.
    pub stale_completions_refused: u64,
    /// Every seed's replication lag p99.
    pub lag_p99s_ms: Vec<f64>,
    /// Every queue failover of every seed, pooled.
    pub failovers_s: Vec<f64>,
}

impl SweepTally {
    /// An empty tally for `scenario`.
    pub fn new(scenario: &str) -> Self {
        Self {
            scenario: scenario.to_owned(),
            ..Self::default()
        }
    }

    /// Counts one finished run.
    pub fn add(&mut self, r: &RunReport) {
        self.seeds += 1;
        self.run_wall_s += r.wall_s;
        self.stale_writes_accepted += r.stale_writes_accepted.unwrap_or(0);
        self.stale_writes_refused += r.stale_writes_refused.unwrap_or(0);
        self.takeover_writes_accepted += r.takeover_writes_accepted.unwrap_or(0);
        self.failover_p99s_s.extend(r.failover_p99_s);
        self.raft_failovers_s.extend(&r.raft_failovers_s);
        self.grant_p50s_ms.extend(r.lease_grant_p50_ms);
        self.handoff_p99s_ms.extend(r.handoff_p99_ms);
        if let Some(q) = &r.queue {
            let t = self.queue.get_or_insert_with(QueueTally::default);
            t.acknowledged += q.queue_acknowledged;
            t.completed += q.queue_completed;
            t.lost += q.queue_lost;
            t.duplicate_completions += q.queue_duplicate_completions;
            t.reused_ids += q.queue_reused_ids;
            t.stale_completions_accepted += q.queue_stale_completions_accepted;
            t.stale_completions_refused += q.queue_stale_completions_refused;
            t.lag_p99s_ms.extend(q.queue_replication_lag_p99_ms);
            t.failovers_s.extend(&q.queue_failovers_s);
        }
        if !r.invariant_violations.is_empty() {
            self.seeds_violating += 1;
            keep(&mut self.violations, r, &r.invariant_violations);
        } else if !r.expectations_failed.is_empty() {
            self.seeds_missing_expectations += 1;
            keep(&mut self.missed, r, &r.expectations_failed);
        }
    }

    /// Whether the safety claim held: no violation, no stale write accepted, and for a queue
    /// no acknowledged item lost, none completed twice, no item id acknowledged for two
    /// enqueues, no stale completion accepted.
    pub fn safe(&self) -> bool {
        self.seeds_violating == 0
            && self.stale_writes_accepted == 0
            && self.queue.as_ref().is_none_or(|q| {
                q.lost == 0
                    && q.duplicate_completions == 0
                    && q.reused_ids == 0
                    && q.stale_completions_accepted == 0
            })
    }
}

/// Keeps the failures of the lowest seeds, so that what a sweep prints does not depend on the
/// order its workers finished in.
fn keep(kept: &mut Vec<(u64, String, String)>, r: &RunReport, what: &[String]) {
    kept.push((r.seed, what.join("; "), r.replay.clone()));
    kept.sort_by_key(|(seed, _, _)| *seed);
    kept.truncate(KEPT_FAILURES);
}

fn quantiles(values: &[f64], scale: f64) -> String {
    match (
        percentile(values, 50.0),
        percentile(values, 99.0),
        percentile(values, 100.0),
    ) {
        (Some(p50), Some(p99), Some(max)) => format!(
            "{:.3} / {:.3} / {:.3}",
            p50 * scale,
            p99 * scale,
            max * scale
        ),
        _ => "-".to_owned(),
    }
}

/// A Markdown table of finished tallies (with each one's wall time), then the kept failures
/// with their replay commands.
pub fn render(tallies: &[(SweepTally, f64)]) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "| scenario | seeds | seeds violating an invariant | stale writes accepted | stale writes \
         refused | writes in a skewed takeover | seeds missing an expectation | Raft failover \
         p50 / p99 / max s (pooled) | holder failover p99 s, over seeds: median / p99 / max | \
         wall s | seeds/s |\n\
         |---|---:|---:|---:|---:|---:|---:|---|---|---:|---:|"
    );
    for (t, wall_s) in tallies {
        let rate = if *wall_s > 0.0 {
            t.seeds as f64 / wall_s
        } else {
            0.0
        };
        let _ = writeln!(
            out,
            "| {} | {} | {} | {} | {} | {} | {} | {} | {} | {:.1} | {:.1} |",
            t.scenario,
            t.seeds,
            t.seeds_violating,
            t.stale_writes_accepted,
            t.stale_writes_refused,
            t.takeover_writes_accepted,
            t.seeds_missing_expectations,
            quantiles(&t.raft_failovers_s, 1.0),
            quantiles(&t.failover_p99s_s, 1.0),
            wall_s,
            rate
        );
    }
    let queues: Vec<&(SweepTally, f64)> =
        tallies.iter().filter(|(t, _)| t.queue.is_some()).collect();
    if !queues.is_empty() {
        let _ = writeln!(
            out,
            "\n| queue scenario | seeds | acknowledged | completed | acknowledged lost | completed \
             twice | stale completions accepted | stale completions refused | replication lag \
             p99 ms, over seeds: median / p99 / max | queue failover s (pooled): p50 / p99 / max \
             |\n|---|---:|---:|---:|---:|---:|---:|---:|---|---|"
        );
        for (t, _) in queues {
            let Some(q) = &t.queue else { continue };
            let _ = writeln!(
                out,
                "| {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |",
                t.scenario,
                t.seeds,
                q.acknowledged,
                q.completed,
                q.lost,
                q.duplicate_completions,
                q.stale_completions_accepted,
                q.stale_completions_refused,
                quantiles(&q.lag_p99s_ms, 1.0),
                quantiles(&q.failovers_s, 1.0),
            );
        }
    }
    for (t, _) in tallies {
        for (seed, what, replay) in &t.violations {
            let _ = writeln!(
                out,
                "\n{} seed {seed} VIOLATION: {what}\n  replay: {replay}",
                t.scenario
            );
        }
        for (seed, what, replay) in &t.missed {
            let _ = writeln!(
                out,
                "\n{} seed {seed} missed: {what}\n  replay: {replay}",
                t.scenario
            );
        }
        let more = t
            .seeds_missing_expectations
            .saturating_sub(t.missed.len() as u64);
        if more > 0 {
            let _ = writeln!(
                out,
                "\n{}: {more} more seeds missed an expectation",
                t.scenario
            );
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A lost item, a second completion or a stale completion accepted breaks the claim; the
    /// queue table shows the totals.
    #[test]
    fn a_queue_tally_is_unsafe_on_loss_duplicates_or_stale_acceptance() {
        let mut t = SweepTally::new("q");
        let mut r = report(1);
        r.queue = Some(crate::report::QueueReport {
            queue_acknowledged: 10,
            queue_completed: 10,
            queue_stale_completions_refused: 2,
            queue_replication_lag_p99_ms: Some(3.0),
            ..Default::default()
        });
        t.add(&r);
        assert!(t.safe());
        let table = render(&[(t.clone(), 1.0)]);
        assert!(
            table.contains("| q | 1 | 10 | 10 | 0 | 0 | 0 | 2 | 3.000 / 3.000 / 3.000 | - |"),
            "{table}"
        );
        for broken in [
            |q: &mut crate::report::QueueReport| q.queue_lost = 1,
            |q: &mut crate::report::QueueReport| q.queue_duplicate_completions = 1,
            |q: &mut crate::report::QueueReport| q.queue_reused_ids = 1,
            |q: &mut crate::report::QueueReport| q.queue_stale_completions_accepted = 1,
        ] {
            let mut t = t.clone();
            let mut r = report(2);
            let mut q = crate::report::QueueReport::default();
            broken(&mut q);
            r.queue = Some(q);
            t.add(&r);
            assert!(!t.safe());
        }
    }

    fn report(seed: u64) -> RunReport {
        RunReport {
            scenario: "s".to_owned(),
            seed,
            replay: format!("meshkit-sim run s.toml --seed {seed}"),
            wall_s: 0.5,
            stale_writes_refused: Some(2),
            stale_writes_accepted: Some(0),
            raft_failovers_s: vec![0.5, 0.7],
            ..RunReport::default()
        }
    }

    #[test]
    fn a_tally_counts_failures_by_kind_and_pools_samples() {
        let mut t = SweepTally::new("s");
        t.add(&report(1));
        let mut missed = report(2);
        missed.expectations_failed = vec!["raft_failover_p99_s: measured 2.2 > bound 2.1".into()];
        t.add(&missed);
        assert!(t.safe());
        let mut broken = report(3);
        broken.invariant_violations = vec!["two holders of global-control".into()];
        broken.stale_writes_accepted = Some(1);
        t.add(&broken);
        assert!(!t.safe());
        assert_eq!(
            (t.seeds, t.seeds_violating, t.seeds_missing_expectations),
            (3, 1, 1)
        );
        assert_eq!((t.stale_writes_accepted, t.stale_writes_refused), (1, 6));
        assert_eq!(t.raft_failovers_s.len(), 6);
        let table = render(&[(t, 2.0)]);
        assert!(
            table.contains("| s | 3 | 1 | 1 | 6 | 0 | 1 | 0.500 / 0.700 / 0.700 | - | 2.0 | 1.5 |"),
            "{table}"
        );
        assert!(table.contains("seed 3 VIOLATION: two holders"), "{table}");
        assert!(
            !table.contains("queue scenario"),
            "no queue table without queues"
        );
        assert!(
            table.contains("replay: meshkit-sim run s.toml --seed 2"),
            "{table}"
        );
    }
}
