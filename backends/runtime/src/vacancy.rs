//! How long leases and the Raft group go without a leader, as a voter sees it: the failover
//! times of the metrics (`mesh_leadership_vacancy_seconds`,
//! `mesh_leadership_raft_leaderless_seconds`).
//!
//! A voter cannot see a holder crash, only its lease lapse, so a scope's vacancy runs from the
//! moment the voter applies the lease's expiry or release to the next grant on the scope: after
//! a crash that is the part of the failover that comes after the TTL (the contenders' asking
//! and the commit), and after a graceful release it is the whole handover. Likewise the Raft
//! group is leaderless on a voter from when it stops following a leader (it campaigns, or a
//! vote for a newer term reaches it) to when it knows the next one; the time it took to notice
//! a dead leader (an election timeout) comes before that.

use std::collections::BTreeMap;

use meshkit::lease::{GroupEvent, Scope};
use meshkit::{Duration, Instant};

use crate::histogram::DurationHistogram;

/// Upper bounds of the buckets, from a loopback handover to a lease that took minutes.
pub const BOUNDS: [Duration; 12] = [
    Duration::from_millis(50),
    Duration::from_millis(100),
    Duration::from_millis(250),
    Duration::from_millis(500),
    Duration::from_secs(1),
    Duration::from_secs(2),
    Duration::from_secs(3),
    Duration::from_secs(5),
    Duration::from_secs(10),
    Duration::from_secs(30),
    Duration::from_secs(60),
    Duration::from_secs(120),
];

/// Scopes whose vacancy is followed at once, at most: a bound on memory if scopes lapse and
/// are never asked for again (their entries stay until granted).
pub const MAX_VACANT_SCOPES: usize = 65_536;

/// Durations in the buckets of [`BOUNDS`].
pub type FailoverHistogram = DurationHistogram<{ BOUNDS.len() + 1 }>;

/// The histograms a voter keeps.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct VacancyStats {
    /// Vacancies of `shard/...` scopes.
    pub shard: FailoverHistogram,
    /// Vacancies of every other scope (`global-control`, custom names).
    pub other: FailoverHistogram,
    /// Times without a known Raft leader.
    pub raft: FailoverHistogram,
}

/// Follows one voter's group events and times the vacancies.
#[derive(Debug)]
pub(crate) struct Vacancies {
    since: BTreeMap<Scope, Instant>,
    raft_since: Option<Instant>,
}

impl Vacancies {
    /// A voter that starts at `now`, leaderless until its first election ends.
    pub(crate) fn new(now: Instant) -> Self {
        Self {
            since: BTreeMap::new(),
            raft_since: Some(now),
        }
    }

    pub(crate) fn observe(&mut self, now: Instant, event: &GroupEvent, stats: &mut VacancyStats) {
        match event {
            GroupEvent::LeaderChanged { leader: None, .. } => {
                self.raft_since.get_or_insert(now);
            }
            GroupEvent::LeaderChanged {
                leader: Some(_), ..
            } => {
                if let Some(since) = self.raft_since.take() {
                    stats
                        .raft
                        .record(&BOUNDS, now.saturating_duration_since(since));
                }
            }
            GroupEvent::Released { scope, .. } | GroupEvent::Expired { scope, .. }
                if self.since.len() < MAX_VACANT_SCOPES =>
            {
                self.since.entry(scope.clone()).or_insert(now);
            }
            GroupEvent::Granted { scope, .. } => {
                if let Some(since) = self.since.remove(scope) {
                    let histogram = if scope.as_shard().is_some() {
                        &mut stats.shard
                    } else {
                        &mut stats.other
                    };
                    histogram.record(&BOUNDS, now.saturating_duration_since(since));
                }
            }
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use meshkit::NodeId;
    use meshkit::lease::{FencingToken, Term};

    use super::*;

    fn at(ms: u64) -> Instant {
        Instant::ZERO + Duration::from_millis(ms)
    }

    #[test]
    fn a_vacancy_runs_from_the_lapse_to_the_next_grant_and_a_transfer_is_none() {
        let scope = Scope::global_control();
        let shard = Scope::new("shard/orders/7").unwrap();
        let holder = NodeId::new(2);
        let token = FencingToken::new(5);
        let mut v = Vacancies::new(at(0));
        let mut stats = VacancyStats::default();
        let leader = |leader| GroupEvent::LeaderChanged {
            leader,
            term: Term::new(1),
        };
        let granted = |scope: &Scope| GroupEvent::Granted {
            scope: scope.clone(),
            holder,
            token,
            term: Term::new(1),
        };
        v.observe(at(700), &leader(Some(NodeId::new(1))), &mut stats);
        // A grant with no vacancy before it (the first one, or a transfer) records nothing.
        v.observe(at(800), &granted(&scope), &mut stats);
        assert_eq!(stats.other.count, 0);
        v.observe(
            at(1_000),
            &GroupEvent::Expired {
                scope: scope.clone(),
                holder,
                token,
            },
            &mut stats,
        );
        v.observe(
            at(1_100),
            &GroupEvent::Released {
                scope: shard.clone(),
                holder,
                token,
            },
            &mut stats,
        );
        v.observe(at(1_140), &granted(&shard), &mut stats);
        v.observe(at(1_400), &granted(&scope), &mut stats);
        assert_eq!(stats.other.count, 1);
        assert_eq!(stats.other.sum, Duration::from_millis(400));
        assert_eq!(stats.other.buckets[3], 1, "400 ms is in the 500 ms bucket");
        assert_eq!(stats.shard.sum, Duration::from_millis(40));
        assert_eq!(stats.shard.buckets[0], 1);
        // The first election, then a later one.
        assert_eq!(stats.raft.sum, Duration::from_millis(700));
        v.observe(at(5_000), &leader(None), &mut stats);
        v.observe(at(5_200), &leader(None), &mut stats);
        v.observe(at(5_600), &leader(Some(NodeId::new(3))), &mut stats);
        assert_eq!(stats.raft.count, 2);
        assert_eq!(stats.raft.sum, Duration::from_millis(1_300));
    }
}
