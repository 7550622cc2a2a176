//! Lifeguard suspicion: a timeout that starts long and shrinks with independent confirmations.
//!
//! A suspicion raised by one node starts at `max`; each distinct member that independently
//! suspects the same incarnation shrinks it logarithmically until `K` confirmations bring it down
//! to `min` (Lifeguard §IV-B, "Local Health Aware Suspicion"; memberlist `suspicion.go`).

use alloc::collections::BTreeSet;

use super::intmath;
use crate::id::{Incarnation, NodeId};
use crate::time::{self, Duration, Instant};

/// Bound on distinct confirmers remembered per suspicion; more cannot shrink the timeout further.
const MAX_CONFIRMERS: usize = 17;

/// Suspicions a node may hold at once before a verdict waits longer than the minimum: past
/// this, the minimum is stretched in proportion (`held / SUSPICIONS_AT_MIN` times), up to the
/// unconfirmed timeout. Every suspect refutes with one fresh update, and a node's datagrams carry
/// about a hundred updates a gossip round, so with hundreds of suspicions at once (half the mesh,
/// under a one-way cut at N = 1,000) a refutation takes several times the minimum to spread.
/// 64 leaves a crash of up to 64 members (10% of 640) detected as before (docs/benchmarks.md,
/// "Class 1").
pub(crate) const SUSPICIONS_AT_MIN: usize = 64;

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
    /// When another member was first heard holding this claim (it raised the suspicion, it
    /// confirmed it, or it relayed this node's own claim back); `None` while nobody was.
    heard_at: Option<Instant>,
    /// Times this claim was announced again because nobody was heard holding it (see
    /// [`Suspicion::announce_again`]); counted apart from the direct checks, so that contact
    /// coming back after a heal still gets its own checks (`MAX_DIRECT_CHECKS`).
    announcements: u32,
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
            heard_at: None,
            announcements: 0,
        }
    }

    /// Another member was heard holding this claim at `now`. The first time only: if that is
    /// more than `stuck_after` after the suspicion began here, the claim was stuck (every copy
    /// this node sent was lost, as in a burst of loss on its own links), so the suspect may not
    /// have heard of it either; a late confirmation would otherwise declare it at once, before
    /// its refutation can come back. The verdict then waits the minimum timeout from `now`.
    /// Returns whether the deadline may have moved.
    pub(crate) fn heard(&mut self, now: Instant, stuck_after: Duration) -> bool {
        if self.heard_at.is_some() {
            return false;
        }
        self.heard_at = Some(now);
        if now.saturating_duration_since(self.started) <= stuck_after {
            return false;
        }
        self.not_before = self.not_before.max(now + self.min);
        true
    }

    /// The verdict is due and nobody was heard holding the claim, though enough members exist
    /// to confirm it: every copy may have been lost on this node's own links. Holds the verdict
    /// until `now + hold` (the caller announces the claim again, with a fresh retransmit budget,
    /// and checks the suspect directly), at most `max` times; returns whether it did. A node cut
    /// off alone hears nobody, and declares after those `max` holds.
    pub(crate) fn announce_again(&mut self, now: Instant, hold: Duration, max: u32) -> bool {
        if self.heard_at.is_some() || self.expected == 0 || self.announcements >= max {
            return false;
        }
        self.announcements += 1;
        self.not_before = self.not_before.max(now + hold);
        self.told_at = Some(now);
        true
    }

    /// Records an independent confirmation; returns whether it was new (and so worth passing on).
    pub(crate) fn confirm(&mut self, from: NodeId) -> bool {
        if self.confirmers.len() >= MAX_CONFIRMERS {
            return false;
        }
        self.confirmers.insert(from)
    }

    /// The verdict is due while this node holds `held` suspicions at once: holds it until the
    /// minimum stretched for them ([`crowded_min`]) has run from the start, if that is later;
    /// returns whether it did. Counted at the verdict, not when the suspicion began: under a
    /// one-way cut the crowd builds up in the second after the first suspicions.
    pub(crate) fn hold_for_crowd(&mut self, held: usize) -> bool {
        let due = self.started + crowded_min(self.min, self.max, held);
        if due <= self.deadline() {
            return false;
        }
        self.not_before = due;
        true
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

    /// Grants one last direct check (`grace` long) to a suspicion no other member confirmed,
    /// or to any with `even_if_confirmed` (in a shared mass failure, see
    /// `Membership::suspicion_expired`); returns false if it was confirmed (and that counts)
    /// or already had its check.
    pub(crate) fn grant_last_check(&mut self, grace: Duration, even_if_confirmed: bool) -> bool {
        let confirmed = self.expected > 0 && self.confirmers.len() as u32 > self.expected;
        if (confirmed && !even_if_confirmed) || self.grace > Duration::ZERO {
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

/// The minimum of a suspicion whose verdict falls while this node holds `held` suspicions:
/// `min` up to [`SUSPICIONS_AT_MIN`], then `min * held / SUSPICIONS_AT_MIN`, never above `max`.
pub(crate) fn crowded_min(min: Duration, max: Duration, held: usize) -> Duration {
    if held <= SUSPICIONS_AT_MIN {
        return min;
    }
    let held = u128::try_from(held).unwrap_or(u128::MAX);
    let nanos = min.as_nanos().saturating_mul(held) / SUSPICIONS_AT_MIN as u128;
    let stretched = u64::try_from(nanos).map_or(Duration::MAX, Duration::from_nanos);
    stretched.min(max).max(min)
}

/// Lifeguard's timeout: `max - (max - min) * ln(c + 1) / ln(k + 1)`, never below `min`.
///
/// `ln(a) / ln(b) = log2(a) / log2(b)`, so the ratio is taken of the fixed-point base-2
/// logarithms and applied to the span in integer nanoseconds, rounded to the nearest one (see
/// [`intmath`] for why no `f64`): within a few nanoseconds of the real-valued formula, and exact
/// where the ratio is (one of three confirmations is exactly half the way).
pub(crate) fn timeout(min: Duration, max: Duration, expected: u32, confirmations: u32) -> Duration {
    if expected == 0 || confirmations >= expected {
        return min;
    }
    let num = u128::from(intmath::log2_fx(u64::from(confirmations) + 1));
    let den = u128::from(intmath::log2_fx(u64::from(expected) + 1));
    let span = max.saturating_sub(min).as_nanos();
    // num < 2^54 (a u32's log2 is below 33), so the product overflows only for spans past a
    // million years; then divide first, which only drops nanoseconds. den >= 1.0 as expected >= 1.
    let cut = span
        .checked_mul(num)
        .and_then(|p| p.checked_add(den / 2))
        .map_or_else(|| span / den * num, |p| p / den);
    intmath::duration_from_nanos(max.as_nanos().saturating_sub(cut)).max(min)
}

/// memberlist's minimum, `mult * max(1, log10(n)) * interval`, never below `floor`.
///
/// `log10(n)` in Q16.48 fixed point (exact at powers of ten), the product rounded to the nearest
/// nanosecond; see [`intmath`] for why no `f64`.
pub(crate) fn min_timeout(
    mult: u32,
    members: usize,
    interval: Duration,
    floor: Duration,
) -> Duration {
    let n = u64::try_from(members.max(1)).unwrap_or(u64::MAX);
    let scale = intmath::log10_fx(n).max(intmath::ONE);
    intmath::mul_fx(time::scale(interval, mult), scale).max(floor)
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
        assert!(s.grant_last_check(grace, false));
        assert_eq!(s.deadline(), t0 + max + grace);
        assert!(!s.grant_last_check(grace, false), "only one last check");
        assert_eq!(s.deadline(), t0 + max + grace);

        // K - 1 confirmations: not yet confirmed.
        let mut s = new(3);
        assert!(s.confirm(NodeId::new(2)) && s.confirm(NodeId::new(3)));
        assert!(s.grant_last_check(grace, false));

        // K confirmations: confirmed, no last check.
        let mut s = new(3);
        for n in 2..=4 {
            assert!(s.confirm(NodeId::new(n)));
        }
        assert!(!s.grant_last_check(grace, false));
        assert_eq!(s.deadline(), t0 + min);

        // With K = 0 nothing confirms, so the check is always granted once.
        let mut s = new(0);
        assert!(s.confirm(NodeId::new(2)));
        assert!(s.grant_last_check(grace, false));
    }

    /// The cut is rounded to the nearest nanosecond, not truncated; and a span so long that the
    /// exact product overflows (past a million years) still gives the formula's value, divided
    /// first. One of three confirmations is exactly half the way (log2(2) / log2(4)).
    #[test]
    fn timeout_rounds_to_the_nearest_nanosecond_and_survives_huge_spans() {
        let (min, max) = (Duration::from_nanos(10), Duration::from_nanos(13));
        // Half of the 3 ns span is 1.5 ns, rounded to 2: 13 - 2.
        assert_eq!(timeout(min, max, 3, 1), Duration::from_nanos(11));
        let (min, max) = (Duration::from_nanos(10), Duration::from_nanos(14));
        assert_eq!(timeout(min, max, 3, 1), Duration::from_nanos(12));

        let half = timeout(Duration::ZERO, Duration::MAX, 3, 1);
        let ratio = half.as_secs_f64() / Duration::MAX.as_secs_f64();
        assert!((ratio - 0.5).abs() < 1e-9, "{half:?}: {ratio}");
        let two = timeout(Duration::ZERO, Duration::MAX, 3, 2);
        let expected = 1.0 - 3f64.ln() / 4f64.ln();
        let ratio = two.as_secs_f64() / Duration::MAX.as_secs_f64();
        assert!((ratio - expected).abs() < 1e-9, "{two:?}: {ratio}");
    }

    /// A direct check holds the verdict until it had time to be answered, at most `max_checks`
    /// times per suspicion (a member that keeps reconnecting cannot keep its verdict off for
    /// ever); a refused hold changes nothing.
    #[test]
    fn checks_hold_the_verdict_a_bounded_number_of_times() {
        let t0 = Instant::ZERO;
        let second = Duration::from_secs(1);
        let check = Duration::from_millis(500);
        let mut s = Suspicion::new(t0, Incarnation::new(1), NodeId::new(1), second, second, 3);
        assert_eq!(s.deadline(), t0 + second);

        assert!(s.hold_for_check(t0 + second * 5, check, 2));
        assert_eq!(s.deadline(), t0 + second * 5 + check);
        assert_eq!(s.told_at, Some(t0 + second * 5));
        assert!(s.hold_for_check(t0 + second * 6, check, 2));
        assert_eq!(s.deadline(), t0 + second * 6 + check);

        assert!(!s.hold_for_check(t0 + second * 7, check, 2), "two at most");
        assert_eq!(s.deadline(), t0 + second * 6 + check);
        assert_eq!(s.told_at, Some(t0 + second * 6));
    }

    /// #19 class 3: a claim this node raised that nobody was heard holding is announced again
    /// (each time holding the verdict), at most `max` times, counted apart from the direct
    /// checks; a claim someone else holds, or one that nobody could confirm, is not.
    #[test]
    fn only_an_unheard_claim_is_announced_again_a_bounded_number_of_times() {
        let t0 = Instant::ZERO;
        let (min, max) = (Duration::from_secs(4), Duration::from_secs(12));
        let hold = Duration::from_millis(500);
        let stuck_after = Duration::from_secs(2);
        let new =
            |expected| Suspicion::new(t0, Incarnation::new(1), NodeId::new(1), min, max, expected);

        let mut s = new(3);
        let due = s.deadline();
        for i in 0..3u32 {
            let at = due + hold * i;
            assert!(s.announce_again(at, hold, 3), "announcement {i}");
            assert_eq!(s.deadline(), at + hold);
            assert_eq!(s.told_at, Some(at));
        }
        assert!(!s.announce_again(due + hold * 3, hold, 3), "three at most");
        assert!(
            s.hold_for_check(due + hold * 3, hold, 1),
            "the announcements leave the direct checks (contact coming back) alone"
        );

        let mut s = new(3);
        assert!(
            !s.heard(t0 + Duration::from_secs(1), stuck_after),
            "heard on time"
        );
        assert!(s.heard_at.is_some());
        assert_eq!(s.deadline(), t0 + max, "on time: the deadline stays");
        assert!(!s.announce_again(t0 + max, hold, 3), "someone holds it");

        let mut s = new(0);
        assert!(!s.announce_again(t0 + min, hold, 3), "nobody could confirm");
    }

    /// #19 class 3: a claim first heard late was stuck here, so the suspect gets the minimum
    /// timeout from the moment it was heard: late confirmations do not declare it at once.
    #[test]
    fn a_claim_heard_late_waits_the_minimum_from_then() {
        let t0 = Instant::ZERO;
        let (min, max) = (Duration::from_secs(4), Duration::from_secs(12));
        let stuck_after = Duration::from_secs(2);
        let mut s = Suspicion::new(t0, Incarnation::new(1), NodeId::new(1), min, max, 3);
        let late = t0 + Duration::from_secs(9);
        assert!(s.heard(late, stuck_after));
        for n in 2..=4 {
            assert!(s.confirm(NodeId::new(n)));
        }
        assert_eq!(s.deadline(), late + min, "not t0 + min, long past");
        assert!(!s.heard(late + min, stuck_after), "the first time only");
        assert_eq!(s.deadline(), late + min);
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

    /// The integer formulas against the `f64` ones they replace, as the oracle: every cluster
    /// size up to 100,000 for the minimum (LAN, WAN and memberlist multipliers and intervals),
    /// every `K` up to 32 and every confirmation count for the shrinking timeout.
    #[test]
    fn integer_timeouts_stay_within_a_microsecond_of_the_f64_formulas() {
        let us = 1e-6;
        for (mult, interval) in [(1, 1_000), (2, 5_000), (4, 1_000), (4, 200)] {
            let interval = Duration::from_millis(interval);
            for n in 1..=100_000usize {
                let got = min_timeout(mult, n, interval, Duration::ZERO).as_secs_f64();
                let oracle = interval.as_secs_f64() * f64::from(mult) * (n as f64).log10().max(1.0);
                assert!(
                    (got - oracle).abs() < us,
                    "min_timeout({mult}, {n}, {interval:?}): {got} s, f64 {oracle} s"
                );
            }
        }
        for (min, max) in [(3_000, 18_000), (4_000, 24_000), (1, 3_600_000)] {
            let (min, max) = (Duration::from_millis(min), Duration::from_millis(max));
            for k in 1..=32u32 {
                for c in 0..=k {
                    let got = timeout(min, max, k, c).as_secs_f64();
                    let frac = f64::from(c + 1).ln() / f64::from(k + 1).ln();
                    let oracle = (max.as_secs_f64()
                        - frac * (max.as_secs_f64() - min.as_secs_f64()))
                    .max(min.as_secs_f64());
                    assert!(
                        (got - oracle).abs() < us,
                        "timeout(K {k}, c {c}, {min:?}..{max:?}): {got} s, f64 {oracle} s"
                    );
                }
            }
        }
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
