//! The lease table: the voter group's replicated state machine.
//!
//! Every voter applies the same committed entries in the same order to its own [`LeaseTable`],
//! so every voter holds the same table at the same applied index. Nothing in here reads local
//! state: no clock (time comes from the entry), no configuration (bounds are constants), no
//! randomness.
//!
//! See [`LeaseTable`] for the rules of time, fencing and sessions.

use alloc::collections::{BTreeMap, BTreeSet};

use super::config::{MAX_TTL, MIN_TTL};
use super::ids::{FencingToken, RequestId, Term};
use super::scope::Scope;
use crate::id::NodeId;
use crate::time::{Duration, Instant};

/// Leases the table holds at most; acquires beyond it are refused with `TableFull`.
pub const MAX_LEASES: u32 = 65_536;
/// Leases one holder may hold at once, an eighth of the table: one certificate (a member's, or
/// any id the CA signed) cannot take the whole table and leave every other node `TableFull`.
/// Acquires, and transfers to a holder, beyond it are refused with `TableFull`.
pub const MAX_LEASES_PER_HOLDER: u32 = MAX_LEASES / 8;
/// Client sessions (client, scope) remembered for de-duplication; the least recently used is forgotten first.
pub const MAX_SESSIONS: usize = 65_536;

/// One lease as the table holds it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Lease {
    /// The holder.
    pub holder: NodeId,
    /// The Raft term of the grant.
    pub term: Term,
    /// The grant's fencing token (its log index).
    pub token: FencingToken,
    /// The TTL of the last grant or renewal.
    pub ttl: Duration,
    /// Expiry, in the clock of the table's [`clock_term`](LeaseTable::clock_term).
    pub expires_at: Instant,
}

/// A client operation, as requested and as replicated.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Op {
    Acquire {
        scope: Scope,
        ttl: Duration,
    },
    Renew {
        scope: Scope,
        token: FencingToken,
        ttl: Duration,
    },
    Release {
        scope: Scope,
        token: FencingToken,
    },
    Transfer {
        scope: Scope,
        token: FencingToken,
        to: NodeId,
        ttl: Duration,
    },
    /// A read; never replicated (answered through ReadIndex).
    Query {
        scope: Scope,
    },
}

impl Op {
    pub(crate) fn scope(&self) -> &Scope {
        match self {
            Self::Acquire { scope, .. }
            | Self::Renew { scope, .. }
            | Self::Release { scope, .. }
            | Self::Transfer { scope, .. }
            | Self::Query { scope } => scope,
        }
    }

    pub(crate) fn ttl(&self) -> Option<Duration> {
        match self {
            Self::Acquire { ttl, .. } | Self::Renew { ttl, .. } | Self::Transfer { ttl, .. } => {
                Some(*ttl)
            }
            Self::Release { .. } | Self::Query { .. } => None,
        }
    }
}

/// The replicated form of a command: an entry's data.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Command {
    /// The proposer's `now` (always the leader of the entry's term).
    pub(crate) at: Instant,
    /// The voter that proposed it, which answers the client once it applies.
    pub(crate) proposer: NodeId,
    pub(crate) body: Body,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Body {
    /// Only advances the table's time: a new leader's first stamp, or an expiry sweep.
    Clock,
    Client {
        client: NodeId,
        request: RequestId,
        op: Op,
    },
}

/// What applying a client command decided.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Outcome {
    /// Acquire, renew or re-acquire: the requester holds the scope.
    Granted {
        token: FencingToken,
        term: Term,
        ttl: Duration,
    },
    Released,
    Transferred {
        to: NodeId,
        token: FencingToken,
    },
    Refused(Refusal),
}

/// A refusal as it travels; the client turns it into a [`LeaseError`](super::LeaseError).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Refusal {
    Held {
        holder: NodeId,
        token: FencingToken,
        expires_in: Duration,
    },
    NotHolder {
        holder: NodeId,
    },
    UnknownScope,
    StaleToken {
        current: FencingToken,
    },
    InvalidTtl,
    TableFull,
    InvalidTarget,
    /// Never replicated: the leader's proposal queue is full.
    Overloaded,
}

/// A change to the table, for [`GroupEvent`](super::GroupEvent)s.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Change {
    Granted {
        scope: Scope,
        holder: NodeId,
        token: FencingToken,
        term: Term,
    },
    Released {
        scope: Scope,
        holder: NodeId,
        token: FencingToken,
    },
    Expired {
        scope: Scope,
        holder: NodeId,
        token: FencingToken,
    },
}

#[derive(Clone, Debug, PartialEq, Eq)]
struct Session {
    request: RequestId,
    outcome: Outcome,
    index: u64,
}

/// The replicated lease table: scope -> holder, term, fencing token, expiry.
///
/// **Time.** Each command carries `at`, its proposer's `now`. Only the leader proposes, and Raft
/// elects at most one leader per term (Raft §5.2), so the stamps of one term come from one clock
/// and never go backwards. Expiries are kept in the clock of the term that last stamped an entry
/// (`clock_term`). When an entry of a later term arrives, the table cannot translate the old
/// clock into the new one, so it **rebases**: every lease is treated as live for a full TTL from
/// the new leader's first stamp, which is after its election. That can only lengthen a lease in
/// real time, never shorten it, so a holder that measures its lease from before its request was
/// sent never outlives the table's view.
///
/// **Fencing.** A grant's token is the log index of the entry that made it; renewals keep the
/// token, a transfer makes a new grant. Indices grow along the log, so tokens of successive
/// grants strictly increase per scope.
///
/// **Sessions.** Clients retry requests (to another voter, after a leader change); the table
/// remembers each client's last request and its outcome, and answers a duplicate with the
/// remembered outcome instead of applying it twice (Raft §8).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LeaseTable {
    leases: BTreeMap<Scope, Lease>,
    /// `(expires_at, scope)` of every lease: the next expiry is the first.
    expiries: BTreeSet<(Instant, Scope)>,
    clock_term: Term,
    clock: Instant,
    /// The last request of each client on each scope (a client has one request in flight per
    /// scope).
    sessions: BTreeMap<(NodeId, Scope), Session>,
    /// `(index, client, scope)` of every session: the least recently used is the first.
    session_order: BTreeSet<(u64, NodeId, Scope)>,
    /// Leases held per holder (only holders with at least one), for [`MAX_LEASES_PER_HOLDER`].
    held: BTreeMap<NodeId, u32>,
}

impl LeaseTable {
    /// The lease on `scope`, if any (expired leases stay until an entry's time passes them).
    pub fn get(&self, scope: &Scope) -> Option<&Lease> {
        self.leases.get(scope)
    }

    /// Every lease, in scope order.
    pub fn iter(&self) -> impl Iterator<Item = (&Scope, &Lease)> {
        self.leases.iter()
    }

    /// Leases held.
    pub fn len(&self) -> usize {
        self.leases.len()
    }

    /// Whether no lease is held.
    pub fn is_empty(&self) -> bool {
        self.leases.is_empty()
    }

    /// The term whose leader's clock the expiries are in.
    pub fn clock_term(&self) -> Term {
        self.clock_term
    }

    /// The latest time stamp applied, in the clock of [`clock_term`](Self::clock_term).
    pub fn clock(&self) -> Instant {
        self.clock
    }

    /// The earliest expiry, in the clock of [`clock_term`](Self::clock_term).
    pub fn next_expiry(&self) -> Option<Instant> {
        self.expiries.first().map(|e| e.0)
    }

    /// Every remembered client session: `(client, scope)`, its last request, the outcome and
    /// the log index that decided it, in key order (for snapshots).
    pub(crate) fn sessions(
        &self,
    ) -> impl Iterator<Item = (NodeId, &Scope, RequestId, &Outcome, u64)> + '_ {
        self.sessions
            .iter()
            .map(|((client, scope), s)| (*client, scope, s.request, &s.outcome, s.index))
    }

    /// A table from its parts (a decoded snapshot); the expiry and session orders are rebuilt.
    /// The caller checks the bounds ([`MAX_LEASES`], [`MAX_SESSIONS`]).
    pub(crate) fn from_parts(
        clock_term: Term,
        clock: Instant,
        leases: BTreeMap<Scope, Lease>,
        sessions: Vec<(NodeId, Scope, RequestId, Outcome, u64)>,
    ) -> Self {
        let expiries = leases
            .iter()
            .map(|(scope, l)| (l.expires_at, scope.clone()))
            .collect();
        let mut held = BTreeMap::new();
        for lease in leases.values() {
            *held.entry(lease.holder).or_insert(0) += 1;
        }
        let mut table = Self {
            leases,
            expiries,
            clock_term,
            clock,
            sessions: BTreeMap::new(),
            session_order: BTreeSet::new(),
            held,
        };
        for (client, scope, request, outcome, index) in sessions {
            table.session_order.insert((index, client, scope.clone()));
            table.sessions.insert(
                (client, scope),
                Session {
                    request,
                    outcome,
                    index,
                },
            );
        }
        table
    }

    /// Applies one committed command at log position `index` of term `term`. Returns the
    /// outcome for the client (`None` for a clock step) and pushes table changes to `changes`.
    pub(crate) fn apply(
        &mut self,
        index: u64,
        term: Term,
        command: &Command,
        changes: &mut Vec<Change>,
    ) -> Option<Outcome> {
        self.advance_clock(term, command.at, changes);
        let Body::Client {
            client,
            request,
            op,
        } = &command.body
        else {
            return None;
        };
        if let Some(s) = self.sessions.get(&(*client, op.scope().clone()))
            && s.request == *request
        {
            return Some(s.outcome.clone());
        }
        let outcome = self.apply_op(index, term, command.at, *client, op, changes);
        self.remember(index, *client, op.scope(), *request, outcome.clone());
        Some(outcome)
    }

    /// Moves the table's time to `at` of `term`: rebases on a new term, then expires every
    /// lease whose expiry has passed.
    fn advance_clock(&mut self, term: Term, at: Instant, changes: &mut Vec<Change>) {
        if term > self.clock_term {
            self.clock_term = term;
            self.clock = at;
            // A new leader's clock: a full TTL from its first stamp for everyone.
            self.expiries.clear();
            for (scope, lease) in &mut self.leases {
                lease.expires_at = at + lease.ttl;
                self.expiries.insert((lease.expires_at, scope.clone()));
            }
        }
        self.clock = self.clock.max(at);
        while let Some((expiry, _)) = self.expiries.first() {
            if *expiry > self.clock {
                break;
            }
            let Some((_, scope)) = self.expiries.pop_first() else {
                break;
            };
            if let Some(lease) = self.leases.remove(&scope) {
                self.release_share(lease.holder);
                changes.push(Change::Expired {
                    scope,
                    holder: lease.holder,
                    token: lease.token,
                });
            }
        }
    }

    fn apply_op(
        &mut self,
        index: u64,
        term: Term,
        at: Instant,
        client: NodeId,
        op: &Op,
        changes: &mut Vec<Change>,
    ) -> Outcome {
        if let Some(ttl) = op.ttl()
            && !(MIN_TTL..=MAX_TTL).contains(&ttl)
        {
            return Outcome::Refused(Refusal::InvalidTtl);
        }
        let scope = op.scope();
        let current = self.leases.get(scope).copied();
        match op {
            Op::Acquire { ttl, .. } => match current {
                Some(lease) if lease.holder == client => {
                    // A retried or repeated acquire by the holder: the same grant, extended.
                    self.extend(scope, lease, *ttl, at)
                }
                Some(lease) => Outcome::Refused(Refusal::Held {
                    holder: lease.holder,
                    token: lease.token,
                    expires_in: lease.expires_at - at,
                }),
                None if self.leases.len() >= MAX_LEASES as usize || self.share_full(client) => {
                    Outcome::Refused(Refusal::TableFull)
                }
                None => {
                    let token = FencingToken::new(index);
                    self.grant(scope, client, term, token, *ttl, at, changes);
                    Outcome::Granted {
                        token,
                        term,
                        ttl: *ttl,
                    }
                }
            },
            Op::Renew { token, ttl, .. } => match check_holder(current, client, *token) {
                Err(refusal) => Outcome::Refused(refusal),
                Ok(lease) => self.extend(scope, lease, *ttl, at),
            },
            Op::Release { token, .. } => match check_holder(current, client, *token) {
                Err(refusal) => Outcome::Refused(refusal),
                Ok(lease) => {
                    self.remove(scope);
                    changes.push(Change::Released {
                        scope: scope.clone(),
                        holder: client,
                        token: lease.token,
                    });
                    Outcome::Released
                }
            },
            Op::Transfer { token, to, ttl, .. } => match check_holder(current, client, *token) {
                Err(refusal) => Outcome::Refused(refusal),
                Ok(_) if *to == client || to.get() == 0 => Outcome::Refused(Refusal::InvalidTarget),
                Ok(_) if self.share_full(*to) => Outcome::Refused(Refusal::TableFull),
                Ok(_) => {
                    let new_token = FencingToken::new(index);
                    self.remove(scope);
                    self.grant(scope, *to, term, new_token, *ttl, at, changes);
                    Outcome::Transferred {
                        to: *to,
                        token: new_token,
                    }
                }
            },
            // Reads are answered through ReadIndex and never proposed; a peer that put one in
            // an entry gets it refused the same way on every voter.
            Op::Query { .. } => Outcome::Refused(Refusal::UnknownScope),
        }
    }

    #[expect(
        clippy::too_many_arguments,
        reason = "a grant is exactly these fields plus the change list"
    )]
    fn grant(
        &mut self,
        scope: &Scope,
        holder: NodeId,
        term: Term,
        token: FencingToken,
        ttl: Duration,
        at: Instant,
        changes: &mut Vec<Change>,
    ) {
        self.set(
            scope,
            Lease {
                holder,
                term,
                token,
                ttl,
                expires_at: at + ttl,
            },
        );
        changes.push(Change::Granted {
            scope: scope.clone(),
            holder,
            token,
            term,
        });
    }

    /// The holder keeps its grant (same token and term) for `ttl` more from `at`.
    fn extend(&mut self, scope: &Scope, lease: Lease, ttl: Duration, at: Instant) -> Outcome {
        self.set(
            scope,
            Lease {
                ttl,
                expires_at: at + ttl,
                ..lease
            },
        );
        Outcome::Granted {
            token: lease.token,
            term: lease.term,
            ttl,
        }
    }

    fn set(&mut self, scope: &Scope, lease: Lease) {
        self.remove(scope);
        self.expiries.insert((lease.expires_at, scope.clone()));
        *self.held.entry(lease.holder).or_insert(0) += 1;
        self.leases.insert(scope.clone(), lease);
    }

    fn remove(&mut self, scope: &Scope) {
        if let Some(old) = self.leases.remove(scope) {
            self.expiries.remove(&(old.expires_at, scope.clone()));
            self.release_share(old.holder);
        }
    }

    /// Whether `holder` holds its whole share ([`MAX_LEASES_PER_HOLDER`]).
    fn share_full(&self, holder: NodeId) -> bool {
        self.held.get(&holder).copied().unwrap_or(0) >= MAX_LEASES_PER_HOLDER
    }

    /// One lease of `holder` is gone.
    fn release_share(&mut self, holder: NodeId) {
        if let Some(n) = self.held.get_mut(&holder) {
            *n -= 1;
            if *n == 0 {
                self.held.remove(&holder);
            }
        }
    }

    fn remember(
        &mut self,
        index: u64,
        client: NodeId,
        scope: &Scope,
        request: RequestId,
        outcome: Outcome,
    ) {
        let session = Session {
            request,
            outcome,
            index,
        };
        if let Some(old) = self.sessions.insert((client, scope.clone()), session) {
            self.session_order
                .remove(&(old.index, client, scope.clone()));
        }
        self.session_order.insert((index, client, scope.clone()));
        while self.sessions.len() > MAX_SESSIONS {
            let Some((_, c, s)) = self.session_order.pop_first() else {
                break;
            };
            self.sessions.remove(&(c, s));
        }
    }
}

fn check_holder(
    current: Option<Lease>,
    client: NodeId,
    token: FencingToken,
) -> Result<Lease, Refusal> {
    match current {
        None => Err(Refusal::UnknownScope),
        Some(lease) if lease.holder != client => Err(Refusal::NotHolder {
            holder: lease.holder,
        }),
        Some(lease) if lease.token != token => Err(Refusal::StaleToken {
            current: lease.token,
        }),
        Some(lease) => Ok(lease),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scope() -> Scope {
        Scope::new("shard/orders/1").unwrap()
    }

    fn at(ms: u64) -> Instant {
        Instant::from_nanos(ms * 1_000_000)
    }

    fn client_cmd(ms: u64, client: u64, request: u64, op: Op) -> Command {
        Command {
            at: at(ms),
            proposer: NodeId::new(1),
            body: Body::Client {
                client: NodeId::new(client),
                request: RequestId::new(request),
                op,
            },
        }
    }

    fn acquire(ttl_ms: u64) -> Op {
        Op::Acquire {
            scope: scope(),
            ttl: Duration::from_millis(ttl_ms),
        }
    }

    /// Raft §5.3 (the state machine applies committed entries in log order) and the lease rules:
    /// a second acquirer is refused while the lease lives, gets it once an entry's time passes
    /// the expiry, and its token (the log index) is larger.
    #[test]
    fn grant_hold_expire_regrant() {
        let mut t = LeaseTable::default();
        let mut ch = Vec::new();
        let term = Term::new(2);
        let a = t.apply(10, term, &client_cmd(0, 7, 1, acquire(1000)), &mut ch);
        assert_eq!(
            a,
            Some(Outcome::Granted {
                token: FencingToken::new(10),
                term,
                ttl: Duration::from_millis(1000)
            })
        );
        let b = t.apply(11, term, &client_cmd(400, 8, 1, acquire(1000)), &mut ch);
        assert_eq!(
            b,
            Some(Outcome::Refused(Refusal::Held {
                holder: NodeId::new(7),
                token: FencingToken::new(10),
                expires_in: Duration::from_millis(600)
            }))
        );
        let c = t.apply(12, term, &client_cmd(1000, 8, 2, acquire(1000)), &mut ch);
        assert!(
            matches!(c, Some(Outcome::Granted { token, .. }) if token == FencingToken::new(12))
        );
        assert!(
            ch.iter()
                .any(|c| matches!(c, Change::Expired { holder, .. } if *holder == NodeId::new(7)))
        );
    }

    /// The holder's repeated acquire extends its own grant (same token, the new TTL from the
    /// entry's time); a TTL outside the bounds is refused; the table reports its earliest
    /// expiry and whether it is empty.
    #[test]
    fn the_holder_extends_its_grant_and_ttls_are_bounded() {
        let mut t = LeaseTable::default();
        let mut ch = Vec::new();
        let term = Term::new(2);
        assert!(t.is_empty() && t.next_expiry().is_none());
        let tiny = t.apply(9, term, &client_cmd(0, 7, 1, acquire(1)), &mut ch);
        assert_eq!(tiny, Some(Outcome::Refused(Refusal::InvalidTtl)));
        assert!(t.is_empty());
        t.apply(10, term, &client_cmd(0, 7, 2, acquire(1000)), &mut ch);
        assert!(!t.is_empty());
        assert_eq!(t.next_expiry(), Some(at(1000)));
        let again = t.apply(11, term, &client_cmd(500, 7, 3, acquire(2000)), &mut ch);
        assert_eq!(
            again,
            Some(Outcome::Granted {
                token: FencingToken::new(10),
                term,
                ttl: Duration::from_millis(2000)
            })
        );
        let lease = t.get(&scope()).copied().unwrap();
        assert_eq!(
            (lease.ttl, lease.expires_at),
            (Duration::from_millis(2000), at(2500))
        );
        assert_eq!(t.next_expiry(), Some(at(2500)));
    }

    /// A transfer names another node: to itself or to node 0 it is refused, and the lease stays.
    #[test]
    fn a_transfer_needs_another_target() {
        let mut t = LeaseTable::default();
        let mut ch = Vec::new();
        let term = Term::new(2);
        t.apply(10, term, &client_cmd(0, 7, 1, acquire(1000)), &mut ch);
        let token = FencingToken::new(10);
        for (request, to) in [(2, 7), (3, 0)] {
            let transfer = Op::Transfer {
                scope: scope(),
                token,
                to: NodeId::new(to),
                ttl: Duration::from_millis(1000),
            };
            let refused = t.apply(
                10 + request,
                term,
                &client_cmd(100, 7, request, transfer),
                &mut ch,
            );
            assert_eq!(
                refused,
                Some(Outcome::Refused(Refusal::InvalidTarget)),
                "to {to}"
            );
            assert_eq!(
                t.get(&scope()).map(|l| (l.holder, l.token)),
                Some((NodeId::new(7), token))
            );
        }
    }

    /// The table remembers the last request of up to `MAX_SESSIONS` (client, scope) pairs, and
    /// forgets the oldest first.
    #[test]
    fn sessions_are_bounded_and_the_oldest_goes_first() {
        let mut t = LeaseTable::default();
        let mut ch = Vec::new();
        let term = Term::new(2);
        let max = MAX_SESSIONS as u64;
        for i in 0..=max {
            let query = Op::Query { scope: scope() };
            t.apply(10 + i, term, &client_cmd(0, 100 + i, 1, query), &mut ch);
            if i + 1 == max {
                assert_eq!(
                    t.sessions().count(),
                    MAX_SESSIONS,
                    "all kept up to the bound"
                );
            }
        }
        assert_eq!(t.sessions().count(), MAX_SESSIONS);
        assert!(
            t.sessions().all(|(client, ..)| client != NodeId::new(100)),
            "the oldest session was forgotten"
        );
    }

    /// One holder takes at most its share of the table. Before, one client (any certificate
    /// the CA signed) could acquire all `MAX_LEASES` scopes and every other node's acquire of a
    /// new scope was refused `TableFull`.
    #[test]
    fn one_holder_cannot_fill_the_table() {
        let mut t = LeaseTable::default();
        let mut ch = Vec::new();
        let term = Term::new(2);
        let op = |i: u32| Op::Acquire {
            scope: Scope::new(&format!("s/{i}")).unwrap(),
            ttl: Duration::from_secs(10),
        };
        let mut index = 10;
        let mut apply = |t: &mut LeaseTable, client: u64, op: Op, ch: &mut Vec<Change>| {
            index += 1;
            t.apply(index, term, &client_cmd(0, client, index, op), ch)
        };
        for i in 0..MAX_LEASES_PER_HOLDER {
            let granted = apply(&mut t, 4, op(i), &mut ch);
            assert!(matches!(granted, Some(Outcome::Granted { .. })), "{i}");
        }
        let over = apply(&mut t, 4, op(MAX_LEASES_PER_HOLDER), &mut ch);
        assert_eq!(over, Some(Outcome::Refused(Refusal::TableFull)));
        // Another node still acquires; it cannot hand a lease to the full holder either.
        let other = apply(&mut t, 7, op(u32::MAX), &mut ch);
        let Some(Outcome::Granted { token, .. }) = other else {
            panic!("{other:?}");
        };
        let transfer = Op::Transfer {
            scope: Scope::new(&format!("s/{}", u32::MAX)).unwrap(),
            token,
            to: NodeId::new(4),
            ttl: Duration::from_secs(10),
        };
        assert_eq!(
            apply(&mut t, 7, transfer, &mut ch),
            Some(Outcome::Refused(Refusal::TableFull))
        );
        // A table rebuilt from its parts (a snapshot) keeps the shares.
        let leases = t.iter().map(|(s, l)| (s.clone(), *l)).collect();
        let mut rebuilt = LeaseTable::from_parts(t.clock_term(), t.clock(), leases, Vec::new());
        assert_eq!(
            apply(&mut rebuilt, 4, op(MAX_LEASES_PER_HOLDER), &mut ch),
            Some(Outcome::Refused(Refusal::TableFull))
        );
        // A lease that ends frees a place in the share.
        let first = rebuilt.get(&Scope::new("s/0").unwrap()).unwrap().token;
        let release = Op::Release {
            scope: Scope::new("s/0").unwrap(),
            token: first,
        };
        assert_eq!(
            apply(&mut rebuilt, 4, release, &mut ch),
            Some(Outcome::Released)
        );
        let again = apply(&mut rebuilt, 4, op(MAX_LEASES_PER_HOLDER), &mut ch);
        assert!(matches!(again, Some(Outcome::Granted { .. })), "{again:?}");
    }

    /// A new term's first stamp rebases every lease to a full TTL from that stamp: an expiry
    /// written in the old leader's clock is never compared with the new leader's clock.
    #[test]
    fn a_new_term_rebases_to_a_full_ttl() {
        let mut t = LeaseTable::default();
        let mut ch = Vec::new();
        t.apply(
            5,
            Term::new(2),
            &client_cmd(100_000, 7, 1, acquire(1000)),
            &mut ch,
        );
        // The new leader's clock is far behind (another epoch): without a rebase the lease would
        // look live for 100 s, or, with a clock ahead, already expired.
        let clock = Command {
            at: at(50),
            proposer: NodeId::new(2),
            body: Body::Clock,
        };
        assert_eq!(t.apply(6, Term::new(3), &clock, &mut ch), None);
        assert_eq!(t.get(&scope()).unwrap().expires_at, at(1050));
        assert_eq!(t.clock_term(), Term::new(3));
        let late = Command {
            at: at(1050),
            ..clock
        };
        t.apply(7, Term::new(3), &late, &mut ch);
        assert!(t.get(&scope()).is_none());
    }

    #[test]
    fn renew_release_transfer_check_holder_and_token() {
        let mut t = LeaseTable::default();
        let mut ch = Vec::new();
        let term = Term::new(1);
        t.apply(3, term, &client_cmd(0, 7, 1, acquire(1000)), &mut ch);
        let renew = |token| Op::Renew {
            scope: scope(),
            token: FencingToken::new(token),
            ttl: Duration::from_millis(1000),
        };
        assert_eq!(
            t.apply(4, term, &client_cmd(10, 8, 1, renew(3)), &mut ch),
            Some(Outcome::Refused(Refusal::NotHolder {
                holder: NodeId::new(7)
            }))
        );
        assert_eq!(
            t.apply(5, term, &client_cmd(10, 7, 2, renew(2)), &mut ch),
            Some(Outcome::Refused(Refusal::StaleToken {
                current: FencingToken::new(3)
            }))
        );
        t.apply(6, term, &client_cmd(900, 7, 3, renew(3)), &mut ch);
        assert_eq!(t.get(&scope()).unwrap().expires_at, at(1900));
        let transfer = Op::Transfer {
            scope: scope(),
            token: FencingToken::new(3),
            to: NodeId::new(9),
            ttl: Duration::from_millis(1000),
        };
        assert_eq!(
            t.apply(7, term, &client_cmd(1000, 7, 4, transfer), &mut ch),
            Some(Outcome::Transferred {
                to: NodeId::new(9),
                token: FencingToken::new(7)
            })
        );
        let release = Op::Release {
            scope: scope(),
            token: FencingToken::new(7),
        };
        assert_eq!(
            t.apply(8, term, &client_cmd(1100, 9, 1, release.clone()), &mut ch),
            Some(Outcome::Released)
        );
        // The retry of the same request is answered from the session, not applied again.
        assert_eq!(
            t.apply(9, term, &client_cmd(1200, 9, 1, release), &mut ch),
            Some(Outcome::Released)
        );
        assert!(t.is_empty());
    }
}
