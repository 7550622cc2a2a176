//! Lifeguard suspicion: a timeout that starts long and shrinks with independent confirmations.
//!
//! A suspicion raised by one node starts at `max`; each distinct member that independently
//! suspects the same incarnation shrinks it logarithmically until `K` confirmations bring it down
//! to `min` (Lifeguard §IV-B, "Local Health Aware Suspicion"; memberlist `suspicion.go`).

use alloc::collections::BTreeSet;

use crate::id::{Incarnation, NodeId};
use crate::time::{Duration, Instant};

/// Bound on distinct confirmers remembered per suspicion; more cannot shrink the timeout further.
const MAX_CONFIRMERS: usize = 17;

/// One running suspicion.
#[derive(Clone, Debug)]
pub(crate) struct Suspicion {
    pub(crate) incarnation: Incarnation,
    started: Instant,
    min: Duration,
    max: Duration,
    expected: u32,
    confirmers: BTreeSet<NodeId>,
    /// Extra time granted for one last direct check of an unconfirmed suspicion.
    grace: Duration,
    /// No verdict before this: a direct check of the suspect is under way.
    not_before: Instant,
    /// When this node last sent the suspect the claim directly (a check, or an answer to its
    /// datagram), if it did.
    pub(crate) told_at: Option<Instant>,
    /// Direct checks that held the verdict so far.
    checks: u32,
}

impl Suspicion {
    /// `first` raised the suspicion; it does not count as a confirmation.
    pub(crate) fn new(
        now: Instant,
        incarnation: Incarnation,
        first: NodeId,
        min: Duration,
        max: Duration,
        expected: u32,
    ) -> Self {
        let mut confirmers = BTreeSet::new();
        confirmers.insert(first);
        Self {
            incarnation,
            started: now,
            min,
            max,
            expected,
            confirmers,
            grace: Duration::ZERO,
            not_before: now,
            told_at: None,
            checks: 0,
        }
    }

    /// Records an independent confirmation; returns whether it was new (and so worth passing on).
    pub(crate) fn confirm(&mut self, from: NodeId) -> bool {
        if self.confirmers.len() >= MAX_CONFIRMERS {
            return false;
        }
        self.confirmers.insert(from)
    }

    /// When the suspected member is declared dead, given the confirmations so far.
    pub(crate) fn deadline(&self) -> Instant {
        let due = self.started
            + timeout(
                self.min,
                self.max,
                self.expected,
                self.confirmers.len() as u32 - 1,
            )
            + self.grace;
        due.max(self.not_before)
    }

    /// Whether a member other than `me` raised or confirmed this suspicion.
    pub(crate) fn suspected_by_another(&self, me: NodeId) -> bool {
        self.confirmers.iter().any(|&c| c != me)
    }

    /// Grants one last direct check (`grace` long) to a suspicion no other member confirmed;
    /// returns false if it was confirmed or already had its check.
    pub(crate) fn grant_last_check(&mut self, grace: Duration) -> bool {
        let confirmed = self.expected > 0 && self.confirmers.len() as u32 > self.expected;
        if confirmed || self.grace > Duration::ZERO {
            return false;
        }
        self.grace = grace;
        true
    }

    /// When the suspicion began here.
    pub(crate) fn started(&self) -> Instant {
        self.started
    }

    /// Holds the verdict until `now + check` for a direct check of the suspect (the caller sends
    /// it the claim), if fewer than `max_checks` checks held it before; returns whether it did.
    pub(crate) fn hold_for_check(
        &mut self,
        now: Instant,
        check: Duration,
        max_checks: u32,
    ) -> bool {
        if self.checks >= max_checks {
            return false;
        }
        self.checks += 1;
        self.not_before = self.not_before.max(now + check);
        self.told_at = Some(now);
        true
    }

    /// A confirmation at `now` brought the deadline to `now` or before (a late one): the suspect
    /// has had no chance to answer this node directly.
    pub(crate) fn is_due(&self, now: Instant) -> bool {
        self.deadline() <= now
    }
}

/// Lifeguard's timeout: `max - (max - min) * ln(c + 1) / ln(k + 1)`, never below `min`.
pub(crate) fn timeout(min: Duration, max: Duration, expected: u32, confirmations: u32) -> Duration {
    if expected == 0 || confirmations >= expected {
        return min;
    }
    let frac = f64::from(confirmations + 1).ln() / f64::from(expected + 1).ln();
    let raw = max.as_secs_f64() - frac * (max.as_secs_f64() - min.as_secs_f64());
    Duration::from_secs_f64(raw.max(min.as_secs_f64()))
}

/// memberlist's minimum, `mult * max(1, log10(n)) * interval`, never below `floor`.
pub(crate) fn min_timeout(
    mult: u32,
    members: usize,
    interval: Duration,
    floor: Duration,
) -> Duration {
    let scale = (members.max(1) as f64).log10().max(1.0);
    interval.mul_f64(f64::from(mult) * scale).max(floor)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shrinks_with_confirmations() {
        let (min, max) = (Duration::from_secs(3), Duration::from_secs(18));
        assert_eq!(timeout(min, max, 3, 0), max);
        assert!(timeout(min, max, 3, 1) < max);
        assert!(timeout(min, max, 3, 2) < timeout(min, max, 3, 1));
        assert_eq!(timeout(min, max, 3, 3), min);
        assert_eq!(timeout(min, max, 0, 0), min);
    }

    #[test]
    fn confirmations_count_distinct_members() {
        let t0 = Instant::ZERO;
        let mut s = Suspicion::new(
            t0,
            Incarnation::new(1),
            NodeId::new(1),
            Duration::from_secs(3),
            Duration::from_secs(18),
            3,
        );
        assert!(
            !s.confirm(NodeId::new(1)),
            "the raiser is not a confirmation"
        );
        assert!(s.confirm(NodeId::new(2)));
        assert!(!s.confirm(NodeId::new(2)));
        assert!(s.confirm(NodeId::new(3)));
        assert!(s.confirm(NodeId::new(4)));
        assert_eq!(s.deadline(), t0 + Duration::from_secs(3));
    }

    /// The deadline counts the confirmations so far, not the raiser: the full timeout until a
    /// second member confirms, then shorter with each one.
    #[test]
    fn deadline_follows_the_confirmations_so_far() {
        let t0 = Instant::ZERO + Duration::from_secs(100);
        let (min, max) = (Duration::from_secs(3), Duration::from_secs(18));
        let mut s = Suspicion::new(t0, Incarnation::new(1), NodeId::new(1), min, max, 3);
        assert_eq!(s.deadline(), t0 + max, "the raiser alone");
        assert!(s.confirm(NodeId::new(2)));
        assert_eq!(s.deadline(), t0 + timeout(min, max, 3, 1));
        assert!(s.confirm(NodeId::new(3)));
        assert_eq!(s.deadline(), t0 + timeout(min, max, 3, 2));
        assert!(timeout(min, max, 3, 2) > min, "not yet the minimum");
    }

    /// The values of Lifeguard's formula, not only its order: with K = 3, one confirmation
    /// takes `ln 2 / ln 4` = half the way from `max` to `min`, two take `ln 3 / ln 4` of it.
    #[test]
    fn timeout_follows_the_formula() {
        let (min, max) = (Duration::from_secs(3), Duration::from_secs(18));
        assert_eq!(timeout(min, max, 3, 1), Duration::from_millis(10_500));
        let two = timeout(min, max, 3, 2).as_secs_f64();
        let expected = 18.0 - 15.0 * 3f64.ln() / 4f64.ln();
        assert!(
            (two - expected).abs() < 1e-6,
            "{two} s, expected {expected} s"
        );
        assert_eq!(
            timeout(min, max, 3, 4),
            min,
            "more than K: still the minimum"
        );
    }

    /// An unconfirmed suspicion gets one last direct check (its deadline moves by the grace),
    /// once; a suspicion confirmed by K other members gets none.
    #[test]
    fn only_an_unconfirmed_suspicion_gets_one_last_check() {
        let t0 = Instant::ZERO;
        let (min, max) = (Duration::from_secs(3), Duration::from_secs(18));
        let grace = Duration::from_secs(1);
        let new =
            |expected| Suspicion::new(t0, Incarnation::new(1), NodeId::new(1), min, max, expected);

        let mut s = new(3);
        assert!(s.grant_last_check(grace));
        assert_eq!(s.deadline(), t0 + max + grace);
        assert!(!s.grant_last_check(grace), "only one last check");
        assert_eq!(s.deadline(), t0 + max + grace);

        // K - 1 confirmations: not yet confirmed.
        let mut s = new(3);
        assert!(s.confirm(NodeId::new(2)) && s.confirm(NodeId::new(3)));
        assert!(s.grant_last_check(grace));

        // K confirmations: confirmed, no last check.
        let mut s = new(3);
        for n in 2..=4 {
            assert!(s.confirm(NodeId::new(n)));
        }
        assert!(!s.grant_last_check(grace));
        assert_eq!(s.deadline(), t0 + min);

        // With K = 0 nothing confirms, so the check is always granted once.
        let mut s = new(0);
        assert!(s.confirm(NodeId::new(2)));
        assert!(s.grant_last_check(grace));
    }

    /// Whether someone else suspects the member too: the raiser counts when it is not the
    /// asker, and so does any confirmer (a prober uses it to tell a target that failed for
    /// others from its own bad links).
    #[test]
    fn suspected_by_another_counts_everyone_but_the_asker() {
        let (me, other) = (NodeId::new(1), NodeId::new(2));
        let mut s = Suspicion::new(
            Instant::ZERO,
            Incarnation::new(1),
            me,
            Duration::from_secs(3),
            Duration::from_secs(18),
            3,
        );
        assert!(!s.suspected_by_another(me), "only my own suspicion");
        assert!(s.suspected_by_another(other), "raised by someone else");
        assert!(s.confirm(NodeId::new(3)));
        assert!(s.suspected_by_another(me), "confirmed by another");
    }

    #[test]
    fn min_timeout_scales_with_log_n() {
        let i = Duration::from_secs(1);
        assert_eq!(min_timeout(4, 5, i, Duration::ZERO), Duration::from_secs(4));
        assert_eq!(
            min_timeout(1, 1000, i, Duration::ZERO),
            Duration::from_secs(3)
        );
        // The floor holds at every size, and gives way to the formula above it.
        let floor = Duration::from_secs(4);
        assert_eq!(min_timeout(1, 16, i, floor), floor);
        assert_eq!(min_timeout(1, 1000, i, floor), floor);
        assert_eq!(min_timeout(2, 1000, i, floor), Duration::from_secs(6));
    }
}
