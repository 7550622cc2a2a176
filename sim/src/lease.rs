//! Leases in the simulator: the per-node lease state the engine drives, and the ledger that
//! checks the lease invariants and keeps the lease figures.
//!
//! With a `[leases]` section, node indices `0..voters` run a `LeaseGroup` and every contender
//! runs a `LeaseClient` and, for the `[leases]` scopes, the node's own `Campaign`, all inside
//! the node's `meshkit::node::Node`, as in `meshkitd`: the campaign asks,
//! renews a third of the way through the TTL, asks again when a refusal says the holder's lease
//! can have run out or when its membership sees the holder leave or die
//! (`Campaign::holder_gone`), and defers its acquisitions while its own voter leads; a
//! contender on a voter's node talks to that voter in-process. Every [`WRITE_INTERVAL`] of
//! virtual time each running contender writes to the fenced resource of each scope it holds by
//! its own clock (`Node::holds`). A new
//! holder writes at once when it learns of its grant. Shards are not campaigned for: the
//! coordinator (`crate::shard`) names each shard's owner, which asks on every write tick until
//! it holds the shard and renews it a third of the way through the shard TTL.
//!
//! A pause (gray failure) catches a contender between its check and its write: a node paused
//! while it holds a scope sends one write with that token when it resumes, without checking
//! again. That is the write fencing exists for.
//!
//! # What the ledger checks
//!
//! * **One holder per scope.** A contender believes it holds a scope from its `Acquired` or
//!   `Renewed` event until its own local expiry (or `Lost`, `Expired`, `Released`,
//!   `Transferred`, its transfer request, its crash). When a contender starts or extends a
//!   belief, every other believer's belief must end (in real time, through that node's clock)
//!   within the skew allowance: `ttl * 2r / (1 - r^2)` for `[leases] max_clock_skew = r` (a
//!   holder whose clock runs at `1 - r` against voters whose clocks run at `1 + r`), zero by
//!   default.
//! * **Tokens increase.** Each `Acquired` token is at least the scope's previous one, and equal
//!   only for the same holder (asking again for a held scope renews it under its token).
//! * **The fence holds.** The resource accepts a write whose token is at least the highest it
//!   has seen and refuses the rest (`stale_writes_refused`). An accepted write with a token below
//!   the highest the voters have granted (`GroupEvent::Granted`) is a stale write accepted: a
//!   violation, counted in `stale_writes_accepted`. One exception, and only under declared
//!   skew: the overlap the one-holder check tolerates lets the old holder write after the new
//!   grant and before the new holder's first write (it writes as soon as it learns of the
//!   grant, a round trip later). The resource, which has not seen the new token, accepts that
//!   write, and fencing orders it before every write of the new holder. Such a write within the
//!   skew allowance of the grant is counted apart (`takeover_writes_accepted`), not as a
//!   violation; without declared skew there is no such window, and any is a violation.
//!
//! # Figures
//!
//! * `failover_pXX_s`: from the crash of a node that believed it held a scope to the next
//!   `Acquired` of that scope (by another node, or by the crashed one after its restart;
//!   unfinished ones are counted apart).
//! * `failover_pause_pXX_s`, `failover_partition_pXX_s`: the same from a pause of a node that
//!   believed it held a scope, or from the start of a partition while a node believed it held
//!   one, to the next `Acquired` of that scope by any node (the holder itself too, when its lease
//!   ran out in between: a new token). A renewal by the holder (a `Renewed`, or an `Acquired`
//!   under the token it held) cancels it: the lease never lapsed (a short pause, or a holder on
//!   the voters' side of the cut). A crash of the holder turns it into a crash failover.
//! * `handoff_pXX_ms`: from a `transfer` fault to the target's `Acquired`.
//! * `lease_grant_pXX_ms`: from an acquire request to its `Acquired`.
//! * `raft_failover_pXX_s`: from the crash of the voter that was Raft leader to the first
//!   instant another voter leads (it won an election, so a quorum voted for it) at a higher
//!   term; the crashed voter itself, restarted, counts too (it is a new process). Crashes while
//!   a failover is already under way do not start another.

use core::time::Duration;
use std::collections::{BTreeMap, BTreeSet};

use meshkit::Instant;
use meshkit::lease::{DurableState, FencingToken, RequestId, Scope, Term};
use meshkit::node::Node;

use meshkit::SkewedClock;

/// How often contenders write to the fenced resources (and check their renewals).
pub(crate) const WRITE_INTERVAL: Duration = Duration::from_millis(100);

/// How long a campaign waits to ask again after a failure that names no better time: the
/// node's default (`[leadership] retry`).
pub(crate) const CAMPAIGN_RETRY: Duration = Duration::from_millis(100);

/// What a contender asked of the voters.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Ask {
    Acquire,
    Renew,
}

/// One request of a contender, by the engine's bookkeeping.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Request {
    pub(crate) scope: usize,
    pub(crate) ask: Ask,
    /// Global time it was asked.
    pub(crate) sent: Instant,
}

/// One node's lease roles, what a crashed voter kept, and the contender's bookkeeping (the
/// state machines themselves are in the node).
#[derive(Debug, Default)]
pub(crate) struct LeaseNode {
    /// What a crashed voter kept (its Raft log and hard state), for its restart.
    pub(crate) durable: Option<DurableState>,
    /// A crashed voter's Raft term and log length at its crash, to check that its restart
    /// resumes them from `durable`.
    pub(crate) crashed_raft: Option<(Term, usize)>,
    pub(crate) voter: bool,
    pub(crate) contender: bool,
    pub(crate) requests: BTreeMap<RequestId, Request>,
    /// Scope indices with an acquire or a renewal in flight.
    pub(crate) asking: BTreeSet<usize>,
    /// Writes checked before a pause, sent at the resume.
    pub(crate) paused_writes: Vec<(usize, FencingToken)>,
}

impl LeaseNode {
    /// Books the requests the node's campaign has in flight and this bookkeeping does not know
    /// yet (`sent` in global time), for the grant-latency figure; `scope_index` maps a scope to
    /// the ledger's index.
    pub(crate) fn book_campaign(
        &mut self,
        node: &Node,
        local: Instant,
        sent: Instant,
        scope_index: impl Fn(&Scope) -> Option<usize>,
    ) {
        let Some(campaign) = node.campaign() else {
            return;
        };
        for (scope, id) in campaign.asking() {
            let Some(s) = scope_index(scope) else {
                continue;
            };
            if self.requests.contains_key(&id) {
                continue;
            }
            let ask = if node.holds(local, scope).is_some() {
                Ask::Renew
            } else {
                Ask::Acquire
            };
            self.requests.insert(
                id,
                Request {
                    scope: s,
                    ask,
                    sent,
                },
            );
            self.asking.insert(s);
        }
    }

    /// Forgets the contender's bookkeeping (a crash, a restart).
    pub(crate) fn reset_asks(&mut self) {
        self.requests.clear();
        self.asking.clear();
        self.paused_writes.clear();
    }

    /// Whether a request about scope index `s` is still in flight.
    pub(crate) fn refresh_asking(&mut self, s: usize) {
        if self.requests.values().any(|r| r.scope == s) {
            self.asking.insert(s);
        } else {
            self.asking.remove(&s);
        }
    }
}

/// One contender's belief that it holds a scope.
#[derive(Clone, Copy, Debug)]
struct Belief {
    /// Local expiry, by the believer's clock.
    expires: Instant,
}

#[derive(Debug, Default)]
struct ScopeLedger {
    beliefs: BTreeMap<usize, Belief>,
    /// The last `Acquired`: holder and token.
    last_acquired: Option<(usize, u64)>,
    highest_granted: u64,
    /// When `highest_granted` was granted (global time).
    granted_at: Instant,
    resource_highest: u64,
    /// A believer crashed: who, when.
    failover_from: Option<(usize, Instant)>,
    /// A transfer is under way: to whom, since when.
    handoff: Option<(usize, Instant)>,
    /// A believer paused, or a partition began while it believed: who, when, which.
    gray_failover_from: Option<(usize, Instant, GrayCause)>,
}

/// What may have cost a holder its lease without a crash.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum GrayCause {
    Pause,
    Partition,
}

/// The lease figures of a run.
#[derive(Clone, Debug, Default, PartialEq)]
pub(crate) struct LeaseRecords {
    pub(crate) failover_s: Vec<f64>,
    pub(crate) failovers_unfinished: u64,
    pub(crate) pause_failover_s: Vec<f64>,
    pub(crate) partition_failover_s: Vec<f64>,
    /// Pause or partition failovers not finished by the end.
    pub(crate) gray_failovers_unfinished: u64,
    pub(crate) handoff_ms: Vec<f64>,
    pub(crate) grant_ms: Vec<f64>,
    pub(crate) raft_failover_s: Vec<f64>,
    pub(crate) raft_failovers_unfinished: u64,
    pub(crate) voter_restarts: u64,
    pub(crate) acquisitions: u64,
    pub(crate) writes_accepted: u64,
    pub(crate) stale_writes_accepted: u64,
    pub(crate) stale_writes_refused: u64,
    pub(crate) takeover_writes_accepted: u64,
    pub(crate) datagrams_sent: u64,
    pub(crate) bytes_sent: u64,
    pub(crate) messages_refused: u64,
}

/// The holders' views, the fenced resources and the lease figures. See the module doc.
#[derive(Debug)]
pub(crate) struct Ledger {
    allowance: Duration,
    names: Vec<Scope>,
    index: BTreeMap<Scope, usize>,
    scopes: Vec<ScopeLedger>,
    pub(crate) records: LeaseRecords,
}

impl Ledger {
    pub(crate) fn new(scopes: &[Scope], ttl: Duration, max_clock_skew: f64) -> Self {
        let r = max_clock_skew;
        let allowance = ttl.mul_f64(2.0 * r / (1.0 - r * r));
        Self {
            allowance,
            names: scopes.to_vec(),
            index: scopes.iter().cloned().zip(0..).collect(),
            scopes: scopes.iter().map(|_| ScopeLedger::default()).collect(),
            records: LeaseRecords::default(),
        }
    }

    /// The scope of index `s`.
    pub(crate) fn scope(&self, s: usize) -> &Scope {
        &self.names[s]
    }

    pub(crate) fn scope_index(&self, scope: &Scope) -> Option<usize> {
        self.index.get(scope).copied()
    }

    /// A contender's `Acquired`. Returns the violations found.
    pub(crate) fn on_acquired(
        &mut self,
        now: Instant,
        node: usize,
        scope: usize,
        token: FencingToken,
        expires: Instant,
        clock_of: &dyn Fn(usize) -> Option<SkewedClock>,
    ) -> Vec<String> {
        let mut out = Vec::new();
        let name = &self.names[scope];
        let s = &mut self.scopes[scope];
        self.records.acquisitions += 1;
        if let Some((holder, last)) = s.last_acquired
            && (token.get() < last || (token.get() == last && holder != node))
        {
            out.push(format!(
                "fencing token went back on {name}: node-{} acquired token {} after node-{} \
                 acquired token {last}",
                node + 1,
                token.get(),
                holder + 1
            ));
        }
        let renewal = s.last_acquired == Some((node, token.get()));
        s.last_acquired = Some((node, token.get()));
        if let Some((holder, at, cause)) = s.gray_failover_from {
            // The holder asking again under its own token is a renewal: its lease never lapsed.
            if !(renewal && holder == node) {
                let took = now.saturating_duration_since(at).as_secs_f64();
                match cause {
                    GrayCause::Pause => self.records.pause_failover_s.push(took),
                    GrayCause::Partition => self.records.partition_failover_s.push(took),
                }
            }
            s.gray_failover_from = None;
        }
        // Any node's grant ends the failover: the crashed node itself only acquires again as a
        // new process, after its restart.
        if let Some((_, at)) = s.failover_from {
            self.records
                .failover_s
                .push(now.saturating_duration_since(at).as_secs_f64());
            s.failover_from = None;
        }
        if let Some((to, at)) = s.handoff
            && to == node
        {
            self.records
                .handoff_ms
                .push(now.saturating_duration_since(at).as_secs_f64() * 1e3);
            s.handoff = None;
        }
        self.believe(now, node, scope, expires, clock_of, &mut out);
        out
    }

    /// A contender's `Renewed`.
    pub(crate) fn on_renewed(
        &mut self,
        now: Instant,
        node: usize,
        scope: usize,
        expires: Instant,
        clock_of: &dyn Fn(usize) -> Option<SkewedClock>,
    ) -> Vec<String> {
        let mut out = Vec::new();
        let s = &mut self.scopes[scope];
        if s.gray_failover_from
            .is_some_and(|(holder, _, _)| holder == node)
        {
            s.gray_failover_from = None;
        }
        self.believe(now, node, scope, expires, clock_of, &mut out);
        out
    }

    fn believe(
        &mut self,
        now: Instant,
        node: usize,
        scope: usize,
        expires: Instant,
        clock_of: &dyn Fn(usize) -> Option<SkewedClock>,
        out: &mut Vec<String>,
    ) {
        let s = &mut self.scopes[scope];
        for (&other, belief) in &s.beliefs {
            if other == node {
                continue;
            }
            let Some(clock) = clock_of(other) else {
                continue;
            };
            let end = clock.to_global(belief.expires);
            if end > now && end.saturating_duration_since(now) > self.allowance {
                out.push(format!(
                    "two holders of {}: node-{} holds it while node-{} still does for {:?} \
                     (skew allowance {:?})",
                    self.names[scope],
                    node + 1,
                    other + 1,
                    end.saturating_duration_since(now),
                    self.allowance
                ));
            }
        }
        s.beliefs.insert(node, Belief { expires });
    }

    /// Ends node `node`'s belief in every scope for which `holds` says it no longer holds it.
    pub(crate) fn keep_beliefs(&mut self, node: usize, holds: impl Fn(&Scope) -> bool) {
        for (s, names) in self.scopes.iter_mut().zip(&self.names) {
            if s.beliefs.contains_key(&node) && !holds(names) {
                s.beliefs.remove(&node);
            }
        }
    }

    /// A contender stopped believing it holds `scope` (lost, expired, released, transferred,
    /// or a transfer asked).
    pub(crate) fn on_belief_end(&mut self, node: usize, scope: usize) {
        self.scopes[scope].beliefs.remove(&node);
    }

    /// A node paused: a failover starts on each scope it believed it held (cancelled if it
    /// renews after it resumes).
    pub(crate) fn on_pause(&mut self, now: Instant, node: usize, clock: SkewedClock) {
        for s in &mut self.scopes {
            if s.failover_from.is_none()
                && s.gray_failover_from.is_none()
                && s.beliefs
                    .get(&node)
                    .is_some_and(|b| clock.to_global(b.expires) > now)
            {
                s.gray_failover_from = Some((node, now, GrayCause::Pause));
            }
        }
    }

    /// A partition began: a failover starts on each scope a node believed it held (cancelled
    /// if the holder renews, as one on the voters' side does).
    pub(crate) fn on_partition(
        &mut self,
        now: Instant,
        clock_of: &dyn Fn(usize) -> Option<SkewedClock>,
    ) {
        for s in &mut self.scopes {
            if s.failover_from.is_some() || s.gray_failover_from.is_some() {
                continue;
            }
            let holder = s.beliefs.iter().find_map(|(&node, b)| {
                clock_of(node)
                    .is_some_and(|c| c.to_global(b.expires) > now)
                    .then_some(node)
            });
            if let Some(node) = holder {
                s.gray_failover_from = Some((node, now, GrayCause::Partition));
            }
        }
    }

    /// A node crashed: its beliefs end, and a failover starts on each scope it held.
    pub(crate) fn on_crash(&mut self, now: Instant, node: usize, clock: SkewedClock) {
        for s in &mut self.scopes {
            if s.gray_failover_from
                .is_some_and(|(holder, _, _)| holder == node)
            {
                // Now a crash failover, measured from the crash.
                s.gray_failover_from = None;
            }
            if let Some(b) = s.beliefs.remove(&node)
                && clock.to_global(b.expires) > now
                && s.failover_from.is_none()
            {
                s.failover_from = Some((node, now));
            }
        }
    }

    /// A transfer of `scope` to `to` was asked at `now`.
    pub(crate) fn on_transfer(&mut self, now: Instant, from: usize, to: usize, scope: usize) {
        let s = &mut self.scopes[scope];
        s.beliefs.remove(&from);
        s.handoff = Some((to, now));
    }

    /// A voter applied a grant.
    pub(crate) fn on_granted(&mut self, now: Instant, scope: usize, token: FencingToken) {
        let s = &mut self.scopes[scope];
        if token.get() > s.highest_granted {
            s.highest_granted = token.get();
            s.granted_at = now;
        }
    }

    /// A contender's write reaches the scope's fenced resource. Returns a violation if the
    /// resource accepted a stale token.
    pub(crate) fn write(
        &mut self,
        now: Instant,
        node: usize,
        scope: usize,
        token: FencingToken,
    ) -> Option<String> {
        let s = &mut self.scopes[scope];
        let t = token.get();
        if t < s.resource_highest {
            self.records.stale_writes_refused += 1;
            return None;
        }
        s.resource_highest = t;
        self.records.writes_accepted += 1;
        if t < s.highest_granted
            && !self.allowance.is_zero()
            && now.saturating_duration_since(s.granted_at) <= self.allowance
        {
            self.records.takeover_writes_accepted += 1;
        } else if t < s.highest_granted {
            self.records.stale_writes_accepted += 1;
            return Some(format!(
                "the fenced resource of {} accepted node-{}'s write with token {t} after the \
                 voters granted token {}",
                self.names[scope],
                node + 1,
                s.highest_granted
            ));
        }
        None
    }

    /// The records at the end of the run.
    pub(crate) fn finish(mut self) -> LeaseRecords {
        self.records.failovers_unfinished = self
            .scopes
            .iter()
            .filter(|s| s.failover_from.is_some())
            .count() as u64;
        self.records.gray_failovers_unfinished = self
            .scopes
            .iter()
            .filter(|s| s.gray_failover_from.is_some())
            .count() as u64;
        self.records
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn clock() -> SkewedClock {
        SkewedClock::new(Instant::ZERO, Instant::ZERO)
    }

    fn at(ms: u64) -> Instant {
        Instant::ZERO + Duration::from_millis(ms)
    }

    #[test]
    fn the_fence_refuses_old_tokens_and_flags_accepted_stale_ones() {
        let mut l = Ledger::new(&[Scope::global_control()], Duration::from_secs(3), 0.0);
        assert!(l.write(at(0), 0, 0, FencingToken::new(5)).is_none());
        assert!(l.write(at(1), 1, 0, FencingToken::new(4)).is_none());
        assert_eq!(l.records.stale_writes_refused, 1);
        l.on_granted(at(2), 0, FencingToken::new(9));
        assert!(l.write(at(3), 0, 0, FencingToken::new(5)).is_some());
        assert_eq!(l.records.stale_writes_accepted, 1);
    }

    #[test]
    fn under_declared_skew_a_write_before_the_new_holders_first_is_counted_apart() {
        // r = 0.5: the allowance is ttl * 2r / (1 - r^2) = 4 s for a 3 s lease.
        let mut l = Ledger::new(&[Scope::global_control()], Duration::from_secs(3), 0.5);
        assert!(l.write(at(0), 0, 0, FencingToken::new(5)).is_none());
        l.on_granted(at(1_000), 0, FencingToken::new(9));
        // The old holder writes 2 ms after the grant, before the new holder's first write.
        assert!(l.write(at(1_002), 0, 0, FencingToken::new(5)).is_none());
        assert_eq!(l.records.takeover_writes_accepted, 1);
        assert_eq!(l.records.stale_writes_accepted, 0);
        // The new holder's first write closes the window: the old token is refused.
        assert!(l.write(at(1_004), 1, 0, FencingToken::new(9)).is_none());
        assert!(l.write(at(1_005), 0, 0, FencingToken::new(5)).is_none());
        assert_eq!(l.records.stale_writes_refused, 1);
        // Past the allowance, an accepted old token is a violation even under skew.
        l.on_granted(at(2_000), 0, FencingToken::new(12));
        assert!(l.write(at(6_001), 1, 0, FencingToken::new(9)).is_some());
        assert_eq!(l.records.stale_writes_accepted, 1);
    }

    #[test]
    fn overlapping_beliefs_and_tokens_going_back_are_violations() {
        let mut l = Ledger::new(&[Scope::global_control()], Duration::from_secs(3), 0.0);
        let clocks = |_: usize| Some(clock());
        let at = |s: u64| Instant::ZERO + Duration::from_secs(s);
        assert!(
            l.on_acquired(at(1), 0, 0, FencingToken::new(5), at(4), &clocks)
                .is_empty()
        );
        let v = l.on_acquired(at(2), 1, 0, FencingToken::new(7), at(5), &clocks);
        assert_eq!(v.len(), 1, "{v:?}");
        l.on_belief_end(0, 0);
        let v = l.on_acquired(at(6), 0, 0, FencingToken::new(6), at(9), &clocks);
        assert!(v.iter().any(|m| m.contains("went back")), "{v:?}");
    }

    #[test]
    fn a_crashed_holder_starts_a_failover_that_another_node_ends() {
        let mut l = Ledger::new(&[Scope::global_control()], Duration::from_secs(3), 0.0);
        let clocks = |_: usize| Some(clock());
        let _ = l.on_acquired(at(0), 0, 0, FencingToken::new(5), at(3000), &clocks);
        l.on_crash(at(1000), 0, clock());
        let v = l.on_acquired(at(3500), 1, 0, FencingToken::new(8), at(6500), &clocks);
        assert!(v.is_empty(), "{v:?}");
        assert_eq!(l.records.failover_s, vec![2.5]);
        assert_eq!(l.finish().failovers_unfinished, 0);
    }

    /// A paused holder whose lease lapses fails over to whoever acquires next; one that renews
    /// after its pause never lost the lease, and nothing is measured.
    #[test]
    fn a_pause_or_partition_of_the_holder_is_a_failover_unless_it_renews() {
        let clocks = |_: usize| Some(clock());
        let mut l = Ledger::new(&[Scope::global_control()], Duration::from_secs(3), 0.0);
        let _ = l.on_acquired(at(0), 0, 0, FencingToken::new(5), at(3000), &clocks);
        l.on_pause(at(1000), 0, clock());
        let _ = l.on_acquired(at(4200), 1, 0, FencingToken::new(8), at(7200), &clocks);
        assert_eq!(l.records.pause_failover_s, vec![3.2]);

        // Node 1 holds it; a pause it survives (it renews) measures nothing.
        l.on_pause(at(5000), 1, clock());
        let _ = l.on_renewed(at(5500), 1, 0, at(8500), &clocks);
        let _ = l.on_acquired(at(9000), 2, 0, FencingToken::new(9), at(12_000), &clocks);
        assert_eq!(l.records.pause_failover_s, vec![3.2]);

        // A partition while node 2 holds it: its re-acquire under a new token ends it.
        l.on_partition(at(10_000), &clocks);
        let _ = l.on_acquired(at(10_500), 2, 0, FencingToken::new(9), at(13_000), &clocks);
        assert!(
            l.records.partition_failover_s.is_empty(),
            "same token: a renewal"
        );
        l.on_partition(at(11_000), &clocks);
        let _ = l.on_acquired(at(14_000), 2, 0, FencingToken::new(12), at(17_000), &clocks);
        assert_eq!(l.records.partition_failover_s, vec![3.0]);

        // One still pending at the end is unfinished.
        l.on_pause(at(15_000), 2, clock());
        assert_eq!(l.finish().gray_failovers_unfinished, 1);
    }
}
