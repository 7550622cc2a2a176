//! [`LeaseClient`]: how any node, voter or not, acquires, renews, releases and transfers leases
//! through the voter group.

use alloc::collections::{BTreeMap, BTreeSet, VecDeque};

use super::Transmit;
use super::config::LeaseConfig;
use super::error::{LeaseError, MessageError};
use super::event::{EventLog, LeadershipEvent, ResumeError, Sequenced};
use super::ids::{EventSeq, FencingToken, RequestId, Term};
use super::rtt::RttEstimator;
use super::scope::Scope;
use super::table::{Op, Outcome, Refusal};
use super::wire::{self, LeaseMessage, Reply};
use crate::id::{Incarnation, NodeId};
use crate::rng::NodeRng;
use crate::time::{Duration, Instant};

/// Requests waiting in a client's outbox; past this the newest are dropped (and retried at
/// their deadline).
pub const MAX_CLIENT_OUTBOX_DATAGRAMS: usize = 4096;
/// Redirects ("not the leader, ask X") one request may follow per attempt that may time out
/// ([`LeaseConfig::request_attempts`]): a follower that has not yet noticed its leader died
/// names it until its election timeout, so each attempt at the dead leader comes with one.
const REDIRECTS_PER_TIMEOUT: u32 = 3;

/// A lease this node holds, by its own clock.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HeldLease {
    /// The grant's fencing token.
    pub token: FencingToken,
    /// The term of the grant.
    pub term: Term,
    /// The TTL renewals ask for.
    pub ttl: Duration,
    /// Held until this local instant, unless renewed.
    pub expires: Instant,
    /// A transfer is in flight: the lease must not be used meanwhile.
    pub transferring: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Purpose {
    /// A command of the host.
    Host,
    /// A transfer made this node the holder: the renewal that gives it a safe expiry.
    TakeOver,
}

#[derive(Clone, Debug)]
struct Pending {
    op: Op,
    purpose: Purpose,
    /// When the first attempt left: the start of any lease the request grants, because the
    /// leader stamped the grant after receiving some attempt.
    first_sent: Instant,
    /// When the current attempt left: its answer, if no attempt timed out, is a round trip.
    sent: Instant,
    attempts: u32,
    /// Attempts that timed out: each doubles the wait for the next.
    timeouts: u32,
    target: NodeId,
    deadline: Instant,
}

/// Counters for metrics; they only grow.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct ClientStats {
    /// Request attempts sent.
    pub attempts: u64,
    /// Requests that failed with `NoQuorum`.
    pub no_quorum: u64,
    /// Datagrams refused (undecodable, sender mismatch, misrouted).
    pub messages_refused: u64,
    /// Datagrams dropped because the outbox was full.
    pub outbox_dropped: u64,
}

/// One node's lease client: it sends lease operations to the voters, follows leader hints,
/// retries with a bounded number of attempts, and keeps the leases this node holds by its own
/// clock.
///
/// An attempt waits for its answer as long as the measured round trips say (see
/// [`request_timeout`](Self::request_timeout)): a datagram lost on a fast link is sent again
/// within a few round trips, not after a fixed half second. A first timeout sends the attempt
/// to the same voter again (a lost datagram is likelier than a dead leader); a second one tries
/// another voter.
///
/// A lease is held from **before** the request that granted or renewed it was first sent, for
/// its TTL: the leader stamped the grant after it received the request, so the voters' view of
/// the lease always outlasts the holder's (Gray and Cheriton's lease argument, assuming bounded
/// clock-rate drift).
///
/// # Driving
///
/// * **Inputs**: [`handle_message`](Self::handle_message) for every datagram for which
///   [`recipient`](super::recipient) says [`Recipient::Client`](super::Recipient::Client),
///   [`handle_timeout`](Self::handle_timeout) when [`poll_timeout`](Self::poll_timeout) comes
///   due (spurious calls are no-ops), and the commands [`acquire`](Self::acquire),
///   [`renew`](Self::renew), [`release`](Self::release), [`transfer`](Self::transfer),
///   [`query`](Self::query).
/// * **Outputs**, drained after every input in this order:
///   [`poll_transmit`](Self::poll_transmit) until `None`, [`poll_event`](Self::poll_event)
///   until `None` (each [`LeadershipEvent`] numbered; [`events_since`](Self::events_since)
///   replays them for a subscriber that resumes), then [`poll_timeout`](Self::poll_timeout).
#[derive(Debug)]
pub struct LeaseClient {
    config: LeaseConfig,
    id: NodeId,
    boot: Incarnation,
    rng: NodeRng,
    voters: Vec<NodeId>,
    leader_hint: Option<NodeId>,
    rtt: RttEstimator,
    next_request: u32,
    requests: BTreeMap<RequestId, Pending>,
    in_flight: BTreeMap<Scope, RequestId>,
    /// Transfer notices that arrived while a request on their scope was in flight: taken over
    /// once it ends, so a handed-over lease is never left to lapse.
    deferred_notices: BTreeMap<Scope, (FencingToken, Duration)>,
    request_deadlines: BTreeSet<(Instant, RequestId)>,
    held: BTreeMap<Scope, HeldLease>,
    lease_deadlines: BTreeSet<(Instant, Scope)>,
    outbox: VecDeque<(NodeId, LeaseMessage)>,
    events: EventLog<LeadershipEvent>,
    stats: ClientStats,
}

impl LeaseClient {
    /// A client on node `id` that talks to `voters`. `boot` is the node's boot incarnation (a
    /// restarted node must use a higher one, as for membership), so request ids never repeat.
    pub fn new(
        config: LeaseConfig,
        id: NodeId,
        boot: Incarnation,
        voters: &[NodeId],
        seed: u64,
    ) -> Self {
        let mut client = Self {
            config,
            id,
            boot,
            rng: NodeRng::from_seed(seed),
            voters: Vec::new(),
            leader_hint: None,
            rtt: RttEstimator::default(),
            next_request: 0,
            requests: BTreeMap::new(),
            in_flight: BTreeMap::new(),
            deferred_notices: BTreeMap::new(),
            request_deadlines: BTreeSet::new(),
            held: BTreeMap::new(),
            lease_deadlines: BTreeSet::new(),
            outbox: VecDeque::new(),
            events: EventLog::new(),
            stats: ClientStats::default(),
        };
        client.set_voters(voters);
        client
    }

    /// Replaces the voters this client talks to (e.g. after a membership change).
    pub fn set_voters(&mut self, voters: &[NodeId]) {
        let set: BTreeSet<NodeId> = voters.iter().copied().filter(|v| v.get() != 0).collect();
        self.voters = set.into_iter().collect();
        if self.leader_hint.is_some_and(|l| !self.voters.contains(&l)) {
            self.leader_hint = None;
        }
    }

    /// The voters this client talks to, in id order.
    pub fn voters(&self) -> &[NodeId] {
        &self.voters
    }

    /// Asks for `scope` for `ttl`. Asking again for a scope this node holds renews it under the
    /// same token. The answer comes as [`LeadershipEvent::Acquired`] or
    /// [`LeadershipEvent::Failed`] (e.g. [`LeaseError::Held`]).
    pub fn acquire(
        &mut self,
        now: Instant,
        scope: Scope,
        ttl: Duration,
    ) -> Result<RequestId, LeaseError> {
        self.check_ttl(ttl)?;
        self.start(now, Op::Acquire { scope, ttl }, Purpose::Host)
    }

    /// Renews a held lease for its TTL.
    pub fn renew(&mut self, now: Instant, scope: Scope) -> Result<RequestId, LeaseError> {
        let held = self.usable(&scope)?;
        self.start(
            now,
            Op::Renew {
                scope,
                token: held.token,
                ttl: held.ttl,
            },
            Purpose::Host,
        )
    }

    /// Releases a held lease. The lease stops being held at once (whatever the answer).
    pub fn release(&mut self, now: Instant, scope: &Scope) -> Result<RequestId, LeaseError> {
        let held = self.usable(scope)?;
        let id = self.start(
            now,
            Op::Release {
                scope: scope.clone(),
                token: held.token,
            },
            Purpose::Host,
        )?;
        self.drop_held(scope);
        Ok(id)
    }

    /// Hands a held lease to `to`. The lease must not be used from now on; `to` becomes the
    /// holder once the transfer commits (it receives [`LeadershipEvent::Acquired`] after a
    /// renewal of its own), and this node gets [`LeadershipEvent::Transferred`].
    pub fn transfer(
        &mut self,
        now: Instant,
        scope: Scope,
        to: NodeId,
    ) -> Result<RequestId, LeaseError> {
        let held = self.usable(&scope)?;
        if to == self.id || to.get() == 0 {
            return Err(LeaseError::InvalidTarget { scope, to });
        }
        let id = self.start(
            now,
            Op::Transfer {
                scope: scope.clone(),
                token: held.token,
                to,
                ttl: held.ttl,
            },
            Purpose::Host,
        )?;
        if let Some(h) = self.held.get_mut(&scope) {
            h.transferring = true;
        }
        Ok(id)
    }

    /// Reads the lease on `scope` through the leader (Raft ReadIndex: the leader confirms with
    /// a quorum that it still leads before it answers). The answer comes as
    /// [`LeadershipEvent::Queried`].
    pub fn query(&mut self, now: Instant, scope: Scope) -> Result<RequestId, LeaseError> {
        self.start(now, Op::Query { scope }, Purpose::Host)
    }

    /// Takes one datagram from `from` (as authenticated by the transport).
    pub fn handle_message(
        &mut self,
        now: Instant,
        from: NodeId,
        bytes: &[u8],
    ) -> Result<(), MessageError> {
        let result = self.take_message(now, from, bytes);
        if result.is_err() {
            self.stats.messages_refused += 1;
        }
        self.take_over_notices(now);
        result
    }

    fn take_message(
        &mut self,
        now: Instant,
        from: NodeId,
        bytes: &[u8],
    ) -> Result<(), MessageError> {
        let message = wire::decode_from(from, bytes)?;
        match message {
            LeaseMessage::Response { request, reply } => {
                // Only a voter answers a lease request. A grant from anyone else (any
                // certificate, a non-member's too) would make this node a holder the table
                // never chose, and point its next requests at the sender.
                if !self.voters.contains(&from) {
                    return Err(MessageError::NotVoter { from });
                }
                self.handle_reply(now, from, request, reply);
            }
            LeaseMessage::Notice {
                scope,
                token,
                term: _,
                ttl,
            } => {
                // Only a voter's word makes this node a holder, and only through a renewal. A
                // request of ours on the scope (say, an acquire refused because the old holder
                // still held it) may be in flight: take over once it has ended.
                if self.voters.contains(&from) {
                    self.deferred_notices.insert(scope, (token, ttl));
                }
            }
            LeaseMessage::Raft(m) => {
                return Err(MessageError::Misrouted {
                    to: Some(NodeId::new(m.to)),
                });
            }
            LeaseMessage::Request { .. } => return Err(MessageError::Misrouted { to: None }),
        }
        Ok(())
    }

    /// Runs every deadline due at `now`: local lease expiries, then request retries.
    pub fn handle_timeout(&mut self, now: Instant) {
        while let Some((at, scope)) = self.lease_deadlines.first().cloned() {
            if at > now {
                break;
            }
            self.lease_deadlines.pop_first();
            if let Some(held) = self.held.remove(&scope) {
                self.events.push(
                    now,
                    LeadershipEvent::Expired {
                        scope,
                        token: held.token,
                    },
                );
            }
        }
        while let Some(&(at, id)) = self.request_deadlines.first() {
            if at > now {
                break;
            }
            self.request_deadlines.pop_first();
            let Some(p) = self.requests.get_mut(&id) else {
                continue;
            };
            p.timeouts += 1;
            let (last, attempts, timeouts, scope) =
                (p.target, p.attempts, p.timeouts, p.op.scope().clone());
            if timeouts >= self.config.request_attempts() || attempts >= self.max_attempts() {
                self.stats.no_quorum += 1;
                self.fail(now, id, LeaseError::NoQuorum { scope, attempts });
                continue;
            }
            // The leader did not answer once: a datagram was most likely lost; ask it again.
            if timeouts == 1 && self.leader_hint == Some(last) {
                self.send_attempt(now, id, last);
                continue;
            }
            // It did not answer again: it may be down or partitioned; try another voter.
            if self.leader_hint == Some(last) {
                self.leader_hint = None;
            }
            match self.pick_target(Some(last)) {
                Some(target) => self.send_attempt(now, id, target),
                None => self.fail(now, id, LeaseError::NoQuorum { scope, attempts }),
            }
        }
        self.take_over_notices(now);
    }

    /// Renews, to learn a safe expiry, every scope a voter said was handed to this node, once no
    /// other request on it is in flight.
    fn take_over_notices(&mut self, now: Instant) {
        let ready: Vec<Scope> = self
            .deferred_notices
            .keys()
            .filter(|scope| !self.in_flight.contains_key(*scope))
            .cloned()
            .collect();
        for scope in ready {
            let Some((token, ttl)) = self.deferred_notices.remove(&scope) else {
                continue;
            };
            // Already held under this grant (our own acquire was answered with it): done.
            if self.held.get(&scope).is_some_and(|h| h.token >= token) {
                continue;
            }
            let op = Op::Renew { scope, token, ttl };
            let _ = self.start(now, op, Purpose::TakeOver);
        }
    }

    /// Writes the next datagram into `buf` (cleared first) and says where it goes.
    #[must_use = "a transmit not sent is a lease request lost"]
    pub fn poll_transmit(&mut self, _now: Instant, buf: &mut Vec<u8>) -> Option<Transmit> {
        let (to, message) = self.outbox.pop_front()?;
        let _ = wire::encode(self.id, &message, buf);
        Some(Transmit { to, len: buf.len() })
    }

    /// When [`handle_timeout`](Self::handle_timeout) should next be called.
    #[must_use]
    pub fn poll_timeout(&self) -> Option<Instant> {
        [
            self.lease_deadlines.first().map(|d| d.0),
            self.request_deadlines.first().map(|d| d.0),
        ]
        .into_iter()
        .flatten()
        .min()
    }

    /// The next event for the host.
    #[must_use]
    pub fn poll_event(&mut self) -> Option<Sequenced<LeadershipEvent>> {
        self.events.poll()
    }

    /// The events after `after` that are still kept, for a subscriber that resumes.
    pub fn events_since(
        &self,
        after: EventSeq,
    ) -> Result<impl Iterator<Item = &Sequenced<LeadershipEvent>>, ResumeError> {
        self.events.since(after)
    }

    /// The token under which this node holds `scope` at `now`, if it does (not expired, no
    /// transfer in flight). Present it to every resource the lease guards.
    pub fn holds(&self, now: Instant, scope: &Scope) -> Option<FencingToken> {
        self.held
            .get(scope)
            .filter(|h| !h.transferring && now < h.expires)
            .map(|h| h.token)
    }

    /// Every lease this node holds (including expired ones not yet reaped by
    /// [`handle_timeout`](Self::handle_timeout)).
    pub fn held(&self) -> impl Iterator<Item = (&Scope, &HeldLease)> {
        self.held.iter()
    }

    /// How long the next request's first attempt waits for its answer: the smoothed round trip
    /// of answered requests plus four times its variation (RFC 6298), within
    /// [`LeaseConfig::min_request_timeout`] and [`LeaseConfig::request_timeout`] (the latter
    /// until a round trip has been measured). Each attempt of one request that times out
    /// doubles it, up to the ceiling.
    pub fn request_timeout(&self) -> Duration {
        self.rtt.timeout(
            0,
            self.config.min_request_timeout(),
            self.config.request_timeout(),
        )
    }

    /// The smoothed time from a request to its answer (commit included), once one was measured.
    pub fn smoothed_rtt(&self) -> Option<Duration> {
        self.rtt.smoothed()
    }

    /// This node's id.
    pub fn local_id(&self) -> NodeId {
        self.id
    }

    /// Counters for metrics.
    pub fn stats(&self) -> ClientStats {
        self.stats
    }

    fn check_ttl(&self, ttl: Duration) -> Result<(), LeaseError> {
        let (min, max) = (self.config.min_ttl(), self.config.max_ttl());
        if (min..=max).contains(&ttl) {
            Ok(())
        } else {
            Err(LeaseError::InvalidTtl { ttl, min, max })
        }
    }

    fn usable(&self, scope: &Scope) -> Result<HeldLease, LeaseError> {
        self.held
            .get(scope)
            .filter(|h| !h.transferring)
            .copied()
            .ok_or_else(|| LeaseError::NotHeld {
                scope: scope.clone(),
            })
    }

    fn start(&mut self, now: Instant, op: Op, purpose: Purpose) -> Result<RequestId, LeaseError> {
        if let Some(request) = self.in_flight.get(op.scope()) {
            return Err(LeaseError::InFlight {
                scope: op.scope().clone(),
                request: *request,
            });
        }
        if self.requests.len() >= self.config.max_pending_requests() as usize {
            return Err(LeaseError::Overloaded {
                max: self.config.max_pending_requests(),
            });
        }
        if self.voters.is_empty() {
            return Err(LeaseError::NoQuorum {
                scope: op.scope().clone(),
                attempts: 0,
            });
        }
        self.next_request = self.next_request.wrapping_add(1);
        let id = RequestId::new((u64::from(self.boot.get()) << 32) | u64::from(self.next_request));
        self.in_flight.insert(op.scope().clone(), id);
        self.requests.insert(
            id,
            Pending {
                op,
                purpose,
                first_sent: now,
                sent: now,
                attempts: 0,
                timeouts: 0,
                target: NodeId::new(0),
                deadline: now,
            },
        );
        if let Some(target) = self.pick_target(None) {
            self.send_attempt(now, id, target);
        }
        Ok(id)
    }

    /// Attempts of one request in all, redirects included: a bound on redirect loops between
    /// voters that name each other (they answer at once, so they time nothing out).
    fn max_attempts(&self) -> u32 {
        self.config
            .request_attempts()
            .saturating_mul(REDIRECTS_PER_TIMEOUT + 1)
    }

    /// The hinted leader, or a random voter other than `avoid` (unless it is the only one);
    /// `None` when no voter is known.
    fn pick_target(&mut self, avoid: Option<NodeId>) -> Option<NodeId> {
        if let Some(leader) = self.leader_hint {
            return Some(leader);
        }
        let candidates: Vec<NodeId> = self
            .voters
            .iter()
            .copied()
            .filter(|v| Some(*v) != avoid || self.voters.len() == 1)
            .collect();
        if candidates.is_empty() {
            return None;
        }
        Some(candidates[self.rng.index(candidates.len())])
    }

    fn send_attempt(&mut self, now: Instant, id: RequestId, target: NodeId) {
        let Some(p) = self.requests.get_mut(&id) else {
            return;
        };
        self.request_deadlines.remove(&(p.deadline, id));
        p.attempts += 1;
        p.target = target;
        p.sent = now;
        p.deadline = now
            + self.rtt.timeout(
                p.timeouts,
                self.config.min_request_timeout(),
                self.config.request_timeout(),
            );
        self.request_deadlines.insert((p.deadline, id));
        let message = LeaseMessage::Request {
            request: id,
            op: p.op.clone(),
        };
        self.stats.attempts += 1;
        if self.outbox.len() >= MAX_CLIENT_OUTBOX_DATAGRAMS {
            self.stats.outbox_dropped += 1;
            return;
        }
        self.outbox.push_back((target, message));
    }

    fn handle_reply(&mut self, now: Instant, from: NodeId, id: RequestId, reply: Reply) {
        let Some(p) = self.requests.get_mut(&id) else {
            return; // Answered already, or given up.
        };
        match reply {
            Reply::NotLeader { leader } => {
                if from != p.target {
                    return; // A late answer to an earlier attempt.
                }
                let attempts = p.attempts;
                self.leader_hint = leader.filter(|l| *l != from && self.voters.contains(l));
                if attempts >= self.max_attempts() {
                    return; // The deadline fails it.
                }
                // With no leader known (an election is running) the deadline retries elsewhere.
                if let Some(leader) = self.leader_hint {
                    self.send_attempt(now, id, leader);
                }
            }
            Reply::Lease(lease) => {
                self.leader_hint = Some(from);
                self.measure(now, from, id);
                let Some(p) = self.finish(id) else {
                    return;
                };
                self.events.push(
                    now,
                    LeadershipEvent::Queried {
                        request: id,
                        scope: p.op.scope().clone(),
                        lease,
                    },
                );
            }
            Reply::Outcome(outcome) => {
                self.leader_hint = Some(from);
                self.measure(now, from, id);
                self.conclude(now, id, outcome);
            }
        }
    }

    /// Takes the round trip of request `id`'s current attempt, answered by `from`, unless an
    /// attempt timed out (Karn's rule: the answer may be to an earlier attempt) or another voter
    /// answered (a proposal of a lost term committed by the new leader).
    fn measure(&mut self, now: Instant, from: NodeId, id: RequestId) {
        if let Some(p) = self.requests.get(&id)
            && p.timeouts == 0
            && p.target == from
        {
            self.rtt.sample(now.saturating_duration_since(p.sent));
        }
    }

    fn finish(&mut self, id: RequestId) -> Option<Pending> {
        let p = self.requests.remove(&id)?;
        self.request_deadlines.remove(&(p.deadline, id));
        self.in_flight.remove(p.op.scope());
        Some(p)
    }

    fn conclude(&mut self, now: Instant, id: RequestId, outcome: Outcome) {
        let Some(p) = self.finish(id) else {
            return;
        };
        let scope = p.op.scope().clone();
        match (&p.op, outcome) {
            (Op::Acquire { .. } | Op::Renew { .. }, Outcome::Granted { token, term, ttl }) => {
                let expires = p.first_sent + ttl;
                let before = self.held.get(&scope).copied();
                if expires <= now {
                    // Granted, but the answer took a whole TTL: already over by our clock.
                    self.drop_held(&scope);
                    self.events
                        .push(now, LeadershipEvent::Expired { scope, token });
                    return;
                }
                self.set_held(
                    scope.clone(),
                    HeldLease {
                        token,
                        term,
                        ttl,
                        expires,
                        transferring: false,
                    },
                );
                let event = match before {
                    Some(b) if b.token == token && p.purpose == Purpose::Host => {
                        LeadershipEvent::Renewed {
                            scope,
                            token,
                            expires,
                        }
                    }
                    _ => LeadershipEvent::Acquired {
                        scope,
                        token,
                        term,
                        expires,
                    },
                };
                self.events.push(now, event);
            }
            (Op::Release { token, .. }, Outcome::Released) => {
                self.events.push(
                    now,
                    LeadershipEvent::Released {
                        scope,
                        token: *token,
                    },
                );
            }
            (
                Op::Transfer { token, .. },
                Outcome::Transferred {
                    to,
                    token: new_token,
                },
            ) => {
                self.drop_held(&scope);
                self.events.push(
                    now,
                    LeadershipEvent::Transferred {
                        scope,
                        token: *token,
                        to,
                        new_token,
                    },
                );
            }
            (op, Outcome::Refused(refusal)) => {
                let error = self.lease_error(op, refusal);
                let lost = matches!(
                    refusal,
                    Refusal::NotHolder { .. } | Refusal::StaleToken { .. } | Refusal::UnknownScope
                );
                match op {
                    Op::Renew { token, .. } | Op::Transfer { token, .. }
                        if lost && self.held.get(&scope).is_some_and(|h| h.token == *token) =>
                    {
                        self.drop_held(&scope);
                        self.events.push(
                            now,
                            LeadershipEvent::Lost {
                                scope: scope.clone(),
                                token: *token,
                                reason: error.clone(),
                            },
                        );
                    }
                    Op::Transfer { .. } => {
                        if let Some(h) = self.held.get_mut(&scope) {
                            h.transferring = false;
                        }
                    }
                    _ => {}
                }
                if p.purpose == Purpose::Host {
                    self.events
                        .push(now, LeadershipEvent::Failed { request: id, error });
                }
            }
            // An outcome that does not answer this operation (a confused or old peer): the
            // request fails rather than guess.
            (op, _) => {
                let error = LeaseError::NoQuorum {
                    scope: op.scope().clone(),
                    attempts: p.attempts,
                };
                self.events
                    .push(now, LeadershipEvent::Failed { request: id, error });
            }
        }
    }

    /// A request ran out of attempts: its outcome is unknown.
    fn fail(&mut self, now: Instant, id: RequestId, error: LeaseError) {
        let Some(p) = self.finish(id) else {
            return;
        };
        if let Op::Transfer { scope, token, .. } = &p.op {
            // The transfer may have committed: the lease cannot be trusted any more.
            self.drop_held(scope);
            self.events.push(
                now,
                LeadershipEvent::Lost {
                    scope: scope.clone(),
                    token: *token,
                    reason: error.clone(),
                },
            );
        }
        if p.purpose == Purpose::Host {
            self.events
                .push(now, LeadershipEvent::Failed { request: id, error });
        }
    }

    fn set_held(&mut self, scope: Scope, lease: HeldLease) {
        self.drop_held(&scope);
        self.lease_deadlines.insert((lease.expires, scope.clone()));
        self.held.insert(scope, lease);
    }

    fn drop_held(&mut self, scope: &Scope) {
        if let Some(old) = self.held.remove(scope) {
            self.lease_deadlines.remove(&(old.expires, scope.clone()));
        }
    }
}

impl LeaseClient {
    fn lease_error(&self, op: &Op, refusal: Refusal) -> LeaseError {
        let scope = op.scope().clone();
        match refusal {
            Refusal::Held {
                holder,
                token,
                expires_in,
            } => LeaseError::Held {
                scope,
                holder,
                token,
                expires_in,
            },
            Refusal::NotHolder { holder } => LeaseError::NotHolder { scope, holder },
            Refusal::UnknownScope => LeaseError::UnknownScope { scope },
            Refusal::StaleToken { current } => LeaseError::StaleToken {
                scope,
                presented: match op {
                    Op::Renew { token, .. }
                    | Op::Release { token, .. }
                    | Op::Transfer { token, .. } => *token,
                    Op::Acquire { .. } | Op::Query { .. } => FencingToken::default(),
                },
                current,
            },
            Refusal::InvalidTtl => {
                let ttl = op.ttl().unwrap_or_default();
                LeaseError::InvalidTtl {
                    ttl,
                    min: self.config.min_ttl(),
                    max: self.config.max_ttl(),
                }
            }
            Refusal::TableFull => LeaseError::TableFull {
                max: super::table::MAX_LEASES,
            },
            Refusal::InvalidTarget => LeaseError::InvalidTarget {
                scope,
                to: match op {
                    Op::Transfer { to, .. } => *to,
                    _ => NodeId::new(0),
                },
            },
            // The leader's bound; voters of one group share the client's configuration.
            Refusal::Overloaded => LeaseError::Overloaded {
                max: self.config.max_pending_requests(),
            },
        }
    }
}

#[cfg(test)]
mod tests;
