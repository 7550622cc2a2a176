//! A standing candidacy: keep asking for some scopes, and keep renewing those held.
//!
//! A host that wants to lead (a scheduler, a shard owner) does not want to write the loop every
//! lease user writes: ask; if another node holds the scope, ask again when its lease can have run
//! out; once held, renew a third of the way through the TTL so that two renewals can be lost
//! before the lease ends. [`Campaign`] is that loop, sans-IO like the rest of the core: it
//! reads the [`LeaseClient`]'s events and, on its own timer, calls the client's `acquire` and
//! `renew`. The real node (`backends/node`, also under turmoil) and the simulator's contenders
//! (`sim/src/engine.rs`) drive the same campaign, so the failovers the simulator measures are
//! the node's.

use std::collections::BTreeMap;

use super::client::LeaseClient;
use super::error::LeaseError;
use super::event::LeadershipEvent;
use super::ids::RequestId;
use super::scope::Scope;
use crate::id::NodeId;
use crate::time::{Duration, Instant};

/// Where a campaign stands on one scope.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Stance {
    /// Not held, nothing in flight: ask at this instant (or when `held_by`, the holder the
    /// voters last named, is gone).
    Waiting {
        ask_at: Instant,
        held_by: Option<NodeId>,
    },
    /// An acquire or a renewal is in flight.
    Asking(RequestId),
    /// Held: renew at this instant.
    Holding { renew_at: Instant },
    /// Withdrawn by the host (a drain): never asked for again until [`Campaign::enter`].
    Withdrawn,
}

/// Keeps contending for a set of scopes through one [`LeaseClient`].
///
/// # Driving
///
/// * After every client input, hand each [`LeadershipEvent`] the client emits to
///   [`handle_event`](Self::handle_event) (the campaign only reads them; the host still owns
///   them).
/// * Call [`handle_timeout`](Self::handle_timeout) when [`poll_timeout`](Self::poll_timeout)
///   comes due; it calls the client, so drain the client's transmits afterwards.
#[derive(Debug)]
pub struct Campaign {
    ttl: Duration,
    retry: Duration,
    /// Acquisitions wait one `retry` longer (see [`Campaign::defer_acquisitions`]).
    deferring: bool,
    scopes: BTreeMap<Scope, Stance>,
}

impl Campaign {
    /// A campaign for leases of `ttl`, asking again `retry` after a failure that names no
    /// better time (no quorum, overload). It contends for nothing until [`enter`](Self::enter).
    pub fn new(ttl: Duration, retry: Duration) -> Self {
        Self {
            ttl,
            retry,
            deferring: false,
            scopes: BTreeMap::new(),
        }
    }

    /// Makes acquisitions (never renewals) wait one `retry` longer than they would, or stops
    /// that. A host whose own voter leads the Raft group defers, so that when several nodes
    /// ask for a free scope at once another contender's request, which crosses the network,
    /// still wins over its own, which does not. That keeps leases off the Raft leader's node
    /// where it can: a crash of a node that is both holder and Raft leader costs an election
    /// before a new leader, which then keeps every lease live for a full TTL from its first
    /// stamp, so its failover is the election plus the TTL rather than the TTL alone. A
    /// deferring node that is the only contender still gets the lease, one `retry` later.
    pub fn defer_acquisitions(&mut self, defer: bool) {
        self.deferring = defer;
    }

    /// The instant a waiting scope is asked for.
    fn due(&self, ask_at: Instant) -> Instant {
        if self.deferring {
            ask_at + self.retry
        } else {
            ask_at
        }
    }

    /// The TTL asked for.
    pub fn ttl(&self) -> Duration {
        self.ttl
    }

    /// Contends for `scope` from `now` on (again, after a [`withdraw`](Self::withdraw)).
    pub fn enter(&mut self, now: Instant, scope: Scope) {
        let stance = self.scopes.entry(scope).or_insert(Stance::Withdrawn);
        if *stance == Stance::Withdrawn {
            *stance = Stance::Waiting {
                ask_at: now,
                held_by: None,
            };
        }
    }

    /// Stops contending for `scope`: no more acquires or renewals. A lease held stays held until
    /// the host releases or transfers it, or it expires.
    pub fn withdraw(&mut self, scope: &Scope) {
        if let Some(stance) = self.scopes.get_mut(scope) {
            *stance = Stance::Withdrawn;
        }
    }

    /// The scopes contended for (not withdrawn).
    pub fn scopes(&self) -> impl Iterator<Item = &Scope> + '_ {
        self.scopes
            .iter()
            .filter(|(_, s)| **s != Stance::Withdrawn)
            .map(|(scope, _)| scope)
    }

    /// The requests the campaign has in flight, by scope (for a host that times them).
    pub fn asking(&self) -> impl Iterator<Item = (&Scope, RequestId)> + '_ {
        self.scopes.iter().filter_map(|(scope, s)| match *s {
            Stance::Asking(request) => Some((scope, request)),
            _ => None,
        })
    }

    /// When [`handle_timeout`](Self::handle_timeout) should next be called.
    #[must_use]
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.scopes
            .values()
            .filter_map(|s| match *s {
                Stance::Waiting { ask_at, .. } => Some(self.due(ask_at)),
                Stance::Holding { renew_at } => Some(renew_at),
                Stance::Asking(_) | Stance::Withdrawn => None,
            })
            .min()
    }

    /// Asks for every scope whose time has come: an acquire when not held, a renewal when held.
    pub fn handle_timeout(&mut self, now: Instant, client: &mut LeaseClient) {
        let retry = self.retry;
        let defer = if self.deferring {
            retry
        } else {
            Duration::ZERO
        };
        for (scope, stance) in &mut self.scopes {
            let asked = match *stance {
                Stance::Waiting { ask_at, .. } if ask_at + defer <= now => {
                    client.acquire(now, scope.clone(), self.ttl)
                }
                // A lease the host released or handed over meanwhile is acquired anew.
                Stance::Holding { renew_at } if renew_at <= now => {
                    if client.holds(now, scope).is_some() {
                        client.renew(now, scope.clone())
                    } else {
                        client.acquire(now, scope.clone(), self.ttl)
                    }
                }
                _ => continue,
            };
            *stance = match asked {
                Ok(request) => Stance::Asking(request),
                // The host has its own request on the scope in flight: its outcome will come
                // as an event; look again later.
                Err(LeaseError::InFlight { .. } | LeaseError::Overloaded { .. }) => {
                    Stance::Waiting {
                        ask_at: now + retry,
                        held_by: None,
                    }
                }
                // A TTL out of range: nothing will ever succeed. Stop rather than spin.
                Err(error) => {
                    tracing::warn!(%scope, %error, "campaign withdrawn");
                    Stance::Withdrawn
                }
            };
        }
    }

    /// Learns from one of the client's events.
    pub fn handle_event(&mut self, now: Instant, event: &LeadershipEvent) {
        let retry = self.retry;
        let (scope, next) = match event {
            // Renew a third of the way through the lease's own life, so that two renewals may
            // be lost before it runs out. That life began before the request left, not when
            // the answer came: an answer delayed by an election, or a clock that runs slow
            // against the voters', leaves less of the TTL than `now + ttl` suggests.
            LeadershipEvent::Acquired { scope, expires, .. }
            | LeadershipEvent::Renewed { scope, expires, .. } => {
                let renew_at = expires.saturating_sub(self.ttl - self.ttl / 3).max(now);
                (scope, Stance::Holding { renew_at })
            }
            LeadershipEvent::Lost { scope, .. } | LeadershipEvent::Expired { scope, .. } => (
                scope,
                Stance::Waiting {
                    ask_at: now,
                    held_by: None,
                },
            ),
            // Handed over or released by the host: ask again only once the new holder's lease
            // could have lapsed, so a transfer is not undone at once.
            LeadershipEvent::Transferred { scope, .. }
            | LeadershipEvent::Released { scope, .. } => (
                scope,
                Stance::Waiting {
                    ask_at: now + self.ttl,
                    held_by: None,
                },
            ),
            LeadershipEvent::Failed { request, error } => {
                let Some((scope, _)) = self
                    .scopes
                    .iter()
                    .find(|(_, s)| **s == Stance::Asking(*request))
                else {
                    return;
                };
                let (ask_at, held_by) = match error {
                    // Ask once the holder's lease can have run out, not before (or as soon as
                    // the holder is gone: `holder_gone`).
                    LeaseError::Held {
                        holder, expires_in, ..
                    } => (now + *expires_in, Some(*holder)),
                    _ => (now + retry, None),
                };
                let scope = scope.clone();
                self.set(&scope, Stance::Waiting { ask_at, held_by });
                return;
            }
            LeadershipEvent::Queried { .. } => return,
        };
        self.set(scope, next);
    }

    /// Learns that `node` left the mesh or was declared dead: the scopes the voters last named
    /// it the holder of are asked for now, not when its lease would have run out. Asking early
    /// is safe (the voters decide, and refuse while the lease lasts); it is what makes a graceful
    /// shutdown, which releases the leases and then leaves, hand over at once instead of after
    /// the TTL.
    pub fn holder_gone(&mut self, now: Instant, node: NodeId) {
        for stance in self.scopes.values_mut() {
            if let Stance::Waiting { ask_at, held_by } = stance
                && *held_by == Some(node)
                && *ask_at > now
            {
                *ask_at = now;
            }
        }
    }

    fn set(&mut self, scope: &Scope, next: Stance) {
        if let Some(stance) = self.scopes.get_mut(scope)
            && *stance != Stance::Withdrawn
        {
            *stance = next;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Incarnation;
    use crate::NodeId;
    use crate::lease::{LeaseConfig, LeaseGroup, Recipient};

    /// One voter and `clients` on one node each (ids 1, 2, ...), all messages delivered at once.
    struct Bench {
        now: Instant,
        group: LeaseGroup,
        clients: Vec<(LeaseClient, Campaign)>,
        buf: Vec<u8>,
    }

    impl Bench {
        fn new(clients: u64) -> Self {
            let voter = NodeId::new(1);
            let cfg = LeaseConfig::default();
            let mut group = LeaseGroup::bootstrap(cfg.clone(), voter, &[voter], 1, Instant::ZERO)
                .expect("one voter");
            let mut now = Instant::ZERO;
            while !group.is_leader() {
                now = group.poll_timeout().expect("a voter always has a timer");
                group.handle_timeout(now);
            }
            let clients = (1..=clients)
                .map(|i| {
                    let client = LeaseClient::new(
                        cfg.clone(),
                        NodeId::new(i),
                        Incarnation::new(1),
                        &[voter],
                        i,
                    );
                    let campaign =
                        Campaign::new(Duration::from_secs(3), Duration::from_millis(100));
                    (client, campaign)
                })
                .collect();
            Self {
                now,
                group,
                clients,
                buf: Vec::new(),
            }
        }

        /// Delivers every datagram and event, then advances to the next deadline before `until`.
        fn step(&mut self, until: Instant) {
            for _ in 0..8 {
                for (i, (client, campaign)) in self.clients.iter_mut().enumerate() {
                    campaign.handle_timeout(self.now, client);
                    let from = NodeId::new(i as u64 + 1);
                    while let Some(t) = client.poll_transmit(self.now, &mut self.buf) {
                        let _ = self
                            .group
                            .handle_message(self.now, from, &self.buf[..t.len]);
                    }
                }
                while let Some(t) = self.group.poll_transmit(self.now, &mut self.buf) {
                    let bytes = &self.buf[..t.len];
                    if crate::lease::recipient(bytes) == Ok(Recipient::Client) {
                        let (client, _) = &mut self.clients[t.to.get() as usize - 1];
                        let _ = client.handle_message(self.now, NodeId::new(1), bytes);
                    }
                }
                for (client, campaign) in &mut self.clients {
                    while let Some(e) = client.poll_event() {
                        campaign.handle_event(self.now, &e.event);
                    }
                }
            }
            let next = self
                .clients
                .iter()
                .flat_map(|(c, k)| [c.poll_timeout(), k.poll_timeout()])
                .chain([self.group.poll_timeout()])
                .flatten()
                .min()
                .unwrap_or(until);
            self.now = next.min(until).max(self.now);
            self.group.handle_timeout(self.now);
            for (client, _) in &mut self.clients {
                client.handle_timeout(self.now);
            }
        }

        fn run_for(&mut self, d: Duration) {
            let until = self.now + d;
            for _ in 0..100_000 {
                if self.now >= until {
                    return;
                }
                self.step(until);
            }
            panic!("the bench did not reach its end time");
        }

        fn holders(&self, scope: &Scope) -> Vec<usize> {
            self.clients
                .iter()
                .enumerate()
                .filter(|(_, (c, _))| c.holds(self.now, scope).is_some())
                .map(|(i, _)| i)
                .collect()
        }
    }

    #[test]
    fn renewals_are_due_a_third_into_the_leases_own_life_not_the_answers() {
        let scope = Scope::global_control();
        let ttl = Duration::from_secs(3);
        let mut campaign = Campaign::new(ttl, Duration::from_millis(100));
        let now = Instant::ZERO + Duration::from_secs(10);
        campaign.enter(now, scope.clone());
        let acquired = |expires: Instant| LeadershipEvent::Acquired {
            scope: scope.clone(),
            token: crate::lease::FencingToken::new(7),
            term: crate::lease::Term::new(2),
            expires,
        };
        // Asked 5 ms before the answer: due one third of the TTL after the asking.
        campaign.handle_event(now, &acquired(now + (ttl - Duration::from_millis(5))));
        assert_eq!(
            campaign.poll_timeout(),
            Some(now + Duration::from_millis(995))
        );
        // An answer that took most of the TTL (an election in between): due at once.
        campaign.handle_event(now, &acquired(now + Duration::from_millis(500)));
        assert_eq!(campaign.poll_timeout(), Some(now));
    }

    #[test]
    fn a_holder_renews_at_its_instant_and_not_before() {
        let scope = Scope::global_control();
        let mut bench = Bench::new(1);
        let campaign = &mut bench.clients[0].1;
        campaign.enter(bench.now, scope.clone());
        assert_eq!(campaign.ttl(), Duration::from_secs(3));
        assert_eq!(campaign.scopes().collect::<Vec<_>>(), vec![&scope]);
        bench.run_for(Duration::from_millis(10));
        assert_eq!(bench.holders(&scope), vec![0]);
        let (client, campaign) = &mut bench.clients[0];
        assert_eq!(campaign.asking().count(), 0, "held: nothing in flight");
        let renew_at = campaign.poll_timeout().expect("held: a renewal is due");
        // A timer that fires early (another scope's, the host's) asks nothing yet...
        campaign.handle_timeout(renew_at.saturating_sub(Duration::from_millis(1)), client);
        assert_eq!(campaign.asking().count(), 0, "renewed before its instant");
        // ...and at the instant the renewal is in flight, under the scope it renews.
        campaign.handle_timeout(renew_at, client);
        let asking: Vec<_> = campaign.asking().collect();
        assert_eq!(asking.len(), 1, "no renewal at its instant");
        assert_eq!(asking[0].0, &scope);
        // A withdrawn scope is no longer listed as contended.
        campaign.withdraw(&scope);
        assert_eq!(campaign.scopes().count(), 0);
    }

    #[test]
    fn one_contender_wins_and_keeps_the_lease_by_renewing() {
        let scope = Scope::global_control();
        let mut bench = Bench::new(3);
        for (_, campaign) in &mut bench.clients {
            campaign.enter(bench.now, scope.clone());
        }
        bench.run_for(Duration::from_secs(1));
        let holders = bench.holders(&scope);
        assert_eq!(holders.len(), 1, "exactly one holder: {holders:?}");
        // Ten TTLs later the same node holds it: renewals kept it alive.
        bench.run_for(Duration::from_secs(30));
        assert_eq!(bench.holders(&scope), holders);
    }

    #[test]
    fn a_withdrawn_holder_loses_the_lease_to_another_contender_after_its_ttl() {
        let scope = Scope::global_control();
        let mut bench = Bench::new(2);
        for (_, campaign) in &mut bench.clients {
            campaign.enter(bench.now, scope.clone());
        }
        bench.run_for(Duration::from_secs(1));
        let first = bench.holders(&scope)[0];
        bench.clients[first].1.withdraw(&scope);
        // Without renewals the lease runs out (3 s) and the other contender, told by `Held`
        // when that can be, takes it within a retry.
        bench.run_for(Duration::from_secs(4));
        assert_eq!(bench.holders(&scope), vec![1 - first]);
        assert_eq!(bench.clients[first].1.scopes().count(), 0);
    }

    #[test]
    fn a_deferring_contender_beside_the_voter_lets_a_remote_one_win() {
        let scope = Scope::global_control();
        // Client 1 shares the voter's node: undeferred, its request is handled first.
        for (defer, winner) in [(false, 0), (true, 1)] {
            let mut bench = Bench::new(2);
            bench.clients[0].1.defer_acquisitions(defer);
            for (_, campaign) in &mut bench.clients {
                campaign.enter(bench.now, scope.clone());
            }
            bench.run_for(Duration::from_secs(1));
            assert_eq!(bench.holders(&scope), vec![winner], "deferring: {defer}");
        }
        // Alone, a deferring contender still gets the lease, one retry later.
        let mut bench = Bench::new(1);
        bench.clients[0].1.defer_acquisitions(true);
        bench.clients[0].1.enter(bench.now, scope.clone());
        assert_eq!(
            bench.clients[0].1.poll_timeout(),
            Some(bench.now + Duration::from_millis(100))
        );
        bench.run_for(Duration::from_secs(1));
        assert_eq!(bench.holders(&scope), vec![0]);
    }

    #[test]
    fn a_holder_that_releases_and_is_gone_hands_over_at_once_not_after_its_ttl() {
        let scope = Scope::global_control();
        let mut bench = Bench::new(2);
        for (_, campaign) in &mut bench.clients {
            campaign.enter(bench.now, scope.clone());
        }
        bench.run_for(Duration::from_secs(1));
        let first = bench.holders(&scope)[0];
        let other = 1 - first;
        // The holder shuts down gracefully: withdraws, releases.
        let (client, campaign) = &mut bench.clients[first];
        campaign.withdraw(&scope);
        client.release(bench.now, &scope).expect("held");
        bench.run_for(Duration::from_millis(10));
        assert!(bench.holders(&scope).is_empty());
        // The other contender was told `Held` and waits out the TTL...
        let waiting_until = bench.clients[other].1.poll_timeout().expect("waiting");
        assert!(
            waiting_until > bench.now + Duration::from_secs(1),
            "{waiting_until:?}"
        );
        // ...unless it learns that the holder is gone: then it asks now and gets the lease.
        let gone = NodeId::new(first as u64 + 1);
        bench.clients[other].1.holder_gone(bench.now, gone);
        assert_eq!(bench.clients[other].1.poll_timeout(), Some(bench.now));
        bench.run_for(Duration::from_millis(10));
        assert_eq!(bench.holders(&scope), vec![other]);
        // Another node's departure moves nothing.
        let mut idle = Campaign::new(Duration::from_secs(3), Duration::from_millis(100));
        idle.holder_gone(bench.now, gone);
        assert_eq!(idle.poll_timeout(), None);
    }
}
