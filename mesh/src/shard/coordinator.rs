//! The shard coordinator: plans moves with the [`Rebalancer`] over a [`ShardMap`] that mirrors
//! the lease table, and hands them out as [`Instruction`]s. Sans-IO, no clock.
//!
//! # Where it runs, and why there
//!
//! Every voter keeps a coordinator (a [`Node`](crate::node::Node) with a voter and a
//! [`ShardConfig`]), fed with the grants, releases and expiries its voter applies. Only the one
//! on the **Raft leader** acts. The shard map *is* a view of the lease table, and the leader
//! holds the most advanced copy of it without asking anyone: a coordinator elsewhere (the
//! holder of `global-control`, say) would first have to learn every shard's owner from the
//! voters (a query per shard, or a second copy of the table kept in step) and would act on an
//! older view. The Raft term is the coordinator's fence: instructions carry it, members follow
//! the highest term they have seen, and a deposed leader stops acting at its next step (its
//! voter no longer leads), so two coordinators never both steer a member. A follower's map is
//! current when it is elected: it applied the same entries.
//!
//! # One step
//!
//! Members announce their role to every voter ([`super::Announce`], see [`super::ShardMember`]);
//! [`handle_announce`](Coordinator::handle_announce) records it. The host calls
//! [`step`](Coordinator::step) when [`poll_timeout`](Coordinator::poll_timeout) comes due
//! (every [`STEP_INTERVAL`]), with the term if its voter leads and which members are alive by
//! its membership. The **pool** is the alive members that announced they take shards or drain.
//! A suspect is out of it: no shard is placed on a member that may be dead (a move to it would
//! wait for the verdict, seconds during which the shard has no owner), and its own shards are
//! planned onto others as acquires, which the voters grant only once its lease expired, so a
//! suspect that is alive and renewing keeps them. A step:
//!
//! 1. drops moves whose target left the pool, acquires of a shard whose owner is back in the
//!    pool (a suspect that refuted), and moves that took longer than [`move_deadline`]
//!    (`2 * ttl + 5 s`: an acquire waits for the old lease to expire, and a request retries
//!    through several voters' timeouts);
//! 2. when the pool or the draining set changed, or the map changed in a way no move explains
//!    (a lease expired, say), plans again, once the moves under way are done;
//! 3. starts moves from the plan, at most `max_moves_in_flight` at once. A move whose source
//!    is in the pool is a **graceful handoff**: the source is told to transfer its lease to the
//!    target, which then holds the shard under a new, higher fencing token. A move from nobody,
//!    or from a member gone from the pool, is an **acquire** by the target, which the voters
//!    grant once the old lease expired. A transfer whose lease ends first (released or
//!    expired) becomes an acquire;
//! 4. sends each move's instruction again every [`RESEND_INTERVAL`] until the table shows the
//!    move done (instructions are idempotent; datagrams may be lost).
//!
//! A move is done when a grant of its shard to its target is applied; the map then holds the
//! grant's fencing token, so a replayed or reordered grant is refused ([`ShardMap::assign`]).

use alloc::collections::{BTreeMap, BTreeSet, VecDeque};
use alloc::vec::Vec;

use super::wire::Instruction;
use super::{Move, Plan, RebalanceError, Rebalancer, ShardConfig, ShardId, ShardMap, ShardRole};
use crate::id::NodeId;
use crate::lease::{GroupEvent, LeaseTable, Scope, Term};
use crate::time::{Duration, Instant};

/// How often the coordinator steps.
pub const STEP_INTERVAL: Duration = Duration::from_millis(100);
/// How often an instruction of a move under way is sent again.
pub const RESEND_INTERVAL: Duration = Duration::from_millis(500);
/// Extra time a move may take beyond two TTLs.
pub const MOVE_SLACK: Duration = Duration::from_secs(5);
/// Events waiting for the host; past this the oldest are dropped.
const MAX_EVENTS: usize = 65_536;

/// How long a move may take with shard leases of `ttl`.
pub fn move_deadline(ttl: Duration) -> Duration {
    ttl * 2 + MOVE_SLACK
}

/// A move under way.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct InFlight {
    /// The holder asked to transfer; `None` once the move is an acquire by `to`.
    pub from: Option<NodeId>,
    /// The new owner.
    pub to: NodeId,
    /// When it started.
    pub started: Instant,
    /// When it is dropped if not done.
    pub deadline: Instant,
    next_send: Instant,
}

/// What the coordinator (and a member, see [`super::ShardMember`]) reports.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum ShardEvent {
    /// The coordinator started (`Some(term)`) or stopped (`None`) acting.
    Coordinating {
        /// The term it leads in.
        term: Option<Term>,
    },
    /// A plan was made.
    Planned {
        /// Its number of moves.
        moves: usize,
        /// Whether the pool or the draining set changed since the previous plan.
        pool_changed: bool,
    },
    /// A move started.
    MoveStarted {
        /// The shard.
        shard: ShardId,
        /// Its holder, asked to transfer (`None`: the target acquires).
        from: Option<NodeId>,
        /// The new owner.
        to: NodeId,
    },
    /// The map saw a shard change owner: a grant (`to` is `Some`) or the end of a lease with
    /// no successor (`to` is `None`).
    OwnerChanged {
        /// The shard.
        shard: ShardId,
        /// The former owner.
        from: Option<NodeId>,
        /// The new owner.
        to: Option<NodeId>,
        /// The fencing token of the grant (or of the lease that ended).
        fence: u64,
        /// Whether it completed a move of the coordinator's.
        planned: bool,
    },
    /// A move was dropped (too slow, its target left the pool, or the owner it was to replace
    /// came back).
    MoveAbandoned {
        /// The shard.
        shard: ShardId,
        /// The target it had.
        to: NodeId,
    },
    /// This node (a member) was draining and now holds no shard.
    Drained,
}

/// The coordinator's counters; they only grow.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct CoordinatorStats {
    /// Plans made.
    pub plans: u64,
    /// Moves started.
    pub moves_started: u64,
    /// Moves done (the grant to the target applied).
    pub moves_done: u64,
    /// Moves dropped.
    pub moves_abandoned: u64,
    /// Instructions sent (resends included).
    pub instructions_sent: u64,
    /// Grants the map refused as stale (another voter's replay, a reordered grant).
    pub stale_grants: u64,
}

/// The shard coordinator. See the [shard module](crate::shard).
#[derive(Debug)]
pub struct Coordinator {
    config: ShardConfig,
    rebalancer: Rebalancer,
    map: ShardMap,
    term: Option<Term>,
    in_flight: BTreeMap<ShardId, InFlight>,
    pending: VecDeque<Move>,
    dirty: bool,
    pool_changed: bool,
    live: BTreeSet<NodeId>,
    draining: BTreeSet<NodeId>,
    /// Roles members announced (those that announced `Out` are removed).
    roles: BTreeMap<NodeId, ShardRole>,
    next_step: Instant,
    outbox: VecDeque<(NodeId, Instruction)>,
    events: VecDeque<ShardEvent>,
    stats: CoordinatorStats,
}

impl Coordinator {
    /// A coordinator of the shards `config` names, all unowned, stepping from `now`.
    pub fn new(now: Instant, config: ShardConfig) -> Self {
        let mut map = ShardMap::new();
        for shard in config.shards() {
            // Distinct shards, at most MAX_SHARDS: the config checked both.
            let _ = map.add_shard(shard);
        }
        let rebalancer = Rebalancer::new(config.tolerance_percent()).unwrap_or_default();
        Self {
            config,
            rebalancer,
            map,
            term: None,
            in_flight: BTreeMap::new(),
            pending: VecDeque::new(),
            dirty: true,
            pool_changed: false,
            live: BTreeSet::new(),
            draining: BTreeSet::new(),
            roles: BTreeMap::new(),
            next_step: now,
            outbox: VecDeque::new(),
            events: VecDeque::new(),
            stats: CoordinatorStats::default(),
        }
    }

    /// Rebuilds the map from a lease table (a voter restarted from its log, or installed a
    /// snapshot: the grants in between were never reported one by one).
    pub fn resync(&mut self, table: &LeaseTable) {
        let shards: Vec<ShardId> = self.map.iter().map(|(s, _)| s.clone()).collect();
        for shard in shards {
            match table.get(&shard.scope()) {
                Some(lease) => {
                    let _ = self.map.assign(&shard, lease.holder, lease.token.get());
                }
                None => {
                    if let Some(fence) = self.map.fence(&shard) {
                        let _ = self.map.release(&shard, fence);
                    }
                }
            }
        }
        self.dirty = true;
    }

    /// A group event the node's voter applied: grants and ends of shard leases update the map.
    pub fn handle_group_event(&mut self, now: Instant, event: &GroupEvent) {
        match event {
            GroupEvent::Granted {
                scope,
                holder,
                token,
                ..
            } => {
                let Some(shard) = self.shard_of(scope) else {
                    return;
                };
                let Ok(previous) = self.map.assign(&shard, *holder, token.get()) else {
                    self.stats.stale_grants += 1;
                    return;
                };
                let planned = self.in_flight.get(&shard).is_some_and(|f| f.to == *holder);
                if planned {
                    self.in_flight.remove(&shard);
                    self.stats.moves_done += 1;
                } else if previous != Some(*holder) {
                    self.dirty = true;
                }
                if previous != Some(*holder) {
                    self.push_event(ShardEvent::OwnerChanged {
                        shard,
                        from: previous,
                        to: Some(*holder),
                        fence: token.get(),
                        planned,
                    });
                }
            }
            GroupEvent::Released { scope, token, .. }
            | GroupEvent::Expired { scope, token, .. } => {
                let Some(shard) = self.shard_of(scope) else {
                    return;
                };
                let Ok(Some(previous)) = self.map.release(&shard, token.get()) else {
                    return;
                };
                self.dirty = true;
                self.push_event(ShardEvent::OwnerChanged {
                    shard: shard.clone(),
                    from: Some(previous),
                    to: None,
                    fence: token.get(),
                    planned: false,
                });
                // A transfer whose lease ended first: the target acquires it instead.
                if let Some(f) = self.in_flight.get_mut(&shard)
                    && f.from == Some(previous)
                {
                    f.from = None;
                    f.next_send = now;
                    if let Some(term) = self.term {
                        let i = Instruction {
                            term,
                            shard,
                            from: None,
                            to: f.to,
                        };
                        f.next_send = now + RESEND_INTERVAL;
                        self.stats.instructions_sent += 1;
                        self.outbox.push_back((i.to, i));
                    }
                }
            }
            _ => {}
        }
    }

    /// Member `from` announced `role`. Bounded by the members: one entry per member that
    /// announced it takes shards.
    pub fn handle_announce(&mut self, from: NodeId, role: ShardRole) {
        if role == ShardRole::Out {
            self.roles.remove(&from);
        } else {
            self.roles.insert(from, role);
        }
    }

    /// One step (see the module docs). `term` is `Some` while the node's voter leads;
    /// `is_alive` says whether the node's membership holds a member alive (not suspect).
    pub fn step(&mut self, now: Instant, term: Option<Term>, is_alive: impl Fn(NodeId) -> bool) {
        self.next_step = now + STEP_INTERVAL;
        let mut live = BTreeSet::new();
        let mut draining = BTreeSet::new();
        for (&member, &role) in &self.roles {
            if is_alive(member) {
                live.insert(member);
                if role == ShardRole::Draining {
                    draining.insert(member);
                }
            }
        }
        let (live, draining) = (&live, &draining);
        match term {
            None => {
                if self.term.take().is_some() {
                    self.in_flight.clear();
                    self.pending.clear();
                    self.push_event(ShardEvent::Coordinating { term: None });
                }
                return;
            }
            Some(t) if self.term != Some(t) => {
                self.term = Some(t);
                self.in_flight.clear();
                self.pending.clear();
                self.dirty = true;
                self.push_event(ShardEvent::Coordinating { term: Some(t) });
            }
            Some(_) => {}
        }
        let eligible = |n: &NodeId| live.contains(n) && !draining.contains(n);
        // Moves whose target left the pool, acquires from an owner back in it (a suspect that
        // refuted: it keeps renewing, so the acquire would wait out its deadline and hold up
        // every other plan), and moves that took too long are dropped.
        let owner_back = |shard: &ShardId, f: &InFlight| {
            f.from.is_none() && self.map.owner(shard).is_some_and(|o| live.contains(&o))
        };
        let dropped: Vec<ShardId> = self
            .in_flight
            .iter()
            .filter(|(shard, f)| now >= f.deadline || !eligible(&f.to) || owner_back(shard, f))
            .map(|(s, _)| s.clone())
            .collect();
        for shard in dropped {
            if let Some(f) = self.in_flight.remove(&shard) {
                self.stats.moves_abandoned += 1;
                self.dirty = true;
                self.push_event(ShardEvent::MoveAbandoned { shard, to: f.to });
            }
        }
        if (live, draining) != (&self.live, &self.draining) {
            self.live = live.clone();
            self.draining = draining.clone();
            self.dirty = true;
            self.pool_changed = true;
        }
        if self.dirty && self.in_flight.is_empty() {
            self.dirty = false;
            self.pending.clear();
            // No eligible member (every one draining or gone): nothing moves until one joins.
            if let Ok(plan) = self.rebalancer.plan(&self.map, &self.live, &self.draining) {
                self.stats.plans += 1;
                let pool_changed = core::mem::take(&mut self.pool_changed);
                self.push_event(ShardEvent::Planned {
                    moves: plan.len(),
                    pool_changed,
                });
                self.pending = plan.into_moves().into();
            }
        }
        let deadline = now + move_deadline(self.config.ttl());
        while !self.dirty && self.in_flight.len() < self.config.max_moves_in_flight() as usize {
            let Some(mv) = self.pending.pop_front() else {
                break;
            };
            // A plan made stale by an unplanned change is redone at the next step.
            if self.map.owner(&mv.shard) != mv.from {
                self.dirty = true;
                break;
            }
            let from = mv.from.filter(|f| self.live.contains(f));
            self.stats.moves_started += 1;
            self.push_event(ShardEvent::MoveStarted {
                shard: mv.shard.clone(),
                from,
                to: mv.to,
            });
            self.in_flight.insert(
                mv.shard,
                InFlight {
                    from,
                    to: mv.to,
                    started: now,
                    deadline,
                    next_send: now,
                },
            );
        }
        if let Some(term) = self.term {
            for (shard, f) in &mut self.in_flight {
                if f.next_send > now {
                    continue;
                }
                f.next_send = now + RESEND_INTERVAL;
                let i = Instruction {
                    term,
                    shard: shard.clone(),
                    from: f.from,
                    to: f.to,
                };
                self.stats.instructions_sent += 1;
                self.outbox.push_back((f.from.unwrap_or(f.to), i));
            }
        }
    }

    /// Asks for a new plan at the next step (once the moves under way are done), and returns the
    /// plan the current map and pool give: a dry run when the host does not call this.
    ///
    /// # Errors
    ///
    /// [`RebalanceError`] when the pool has no eligible member.
    pub fn rebalance(&mut self) -> Result<Plan, RebalanceError> {
        let plan = self.preview()?;
        self.dirty = true;
        Ok(plan)
    }

    /// The plan the current map and pool give, without acting on it.
    ///
    /// # Errors
    ///
    /// [`RebalanceError`] when the pool has no eligible member.
    pub fn preview(&self) -> Result<Plan, RebalanceError> {
        self.rebalancer.plan(&self.map, &self.live, &self.draining)
    }

    /// The next instruction to send, and to whom.
    pub fn poll_instruction(&mut self) -> Option<(NodeId, Instruction)> {
        self.outbox.pop_front()
    }

    /// The next event.
    pub fn poll_event(&mut self) -> Option<ShardEvent> {
        self.events.pop_front()
    }

    /// When [`step`](Self::step) is next due.
    pub fn poll_timeout(&self) -> Option<Instant> {
        Some(self.next_step)
    }

    // ---- views ---------------------------------------------------------------------------------

    /// The term this coordinator acts in, if it does (its voter leads).
    pub fn term(&self) -> Option<Term> {
        self.term
    }

    /// The shard map (owners and fences) as the voter's applied grants built it.
    pub fn map(&self) -> &ShardMap {
        &self.map
    }

    /// Moves under way.
    pub fn in_flight(&self) -> impl Iterator<Item = (&ShardId, &InFlight)> + '_ {
        self.in_flight.iter()
    }

    /// The pool at the last step: members taking shards, and those draining.
    pub fn pool(&self) -> (&BTreeSet<NodeId>, &BTreeSet<NodeId>) {
        (&self.live, &self.draining)
    }

    /// Whether nothing is under way, nothing is left of the plan and nothing calls for a new
    /// one: the map is where the coordinator wants it.
    pub fn is_idle(&self) -> bool {
        !self.dirty && self.in_flight.is_empty() && self.pending.is_empty()
    }

    /// Whether `member` owns no shard and no move from it is under way.
    pub fn is_drained(&self, member: NodeId) -> bool {
        self.map.is_drained(member) && !self.in_flight.values().any(|f| f.from == Some(member))
    }

    /// The rebalancer's load bounds for the current pool, if it has an eligible member.
    pub fn bounds(&self) -> Option<super::LoadBounds> {
        let eligible = self.live.difference(&self.draining).count();
        self.rebalancer.bounds(self.map.len(), eligible)
    }

    /// The configuration.
    pub fn config(&self) -> &ShardConfig {
        &self.config
    }

    /// The counters.
    pub fn stats(&self) -> CoordinatorStats {
        self.stats
    }

    fn shard_of(&self, scope: &Scope) -> Option<ShardId> {
        let shard = scope.as_shard()?;
        self.map.contains(&shard).then_some(shard)
    }

    fn push_event(&mut self, event: ShardEvent) {
        if self.events.len() >= MAX_EVENTS {
            self.events.pop_front();
        }
        self.events.push_back(event);
    }
}
