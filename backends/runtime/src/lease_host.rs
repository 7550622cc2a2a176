//! Leadership in a real node: the host side of the core's lease state machines (the voter, the
//! lease client and its standing [`Campaign`], all inside the [`Node`] the
//! [`Driver`](crate::driver::Driver) runs): the voter's Raft file, the host's waiting lease
//! requests, the counters, and the node's leadership feed.
//!
//! The feed is what `GET /control/events/leadership` streams: every lease event of this node's
//! client (acquired, renewed, lost, transferred, expired, released) and, on a voter, every change
//! of the replicated lease table it applies (grants, releases, expiries, Raft leader changes),
//! numbered per node without gaps so that a subscriber resumes with `Last-Event-ID`. A voter's
//! feed therefore shows the whole mesh's leadership; a non-voter's shows its own leases.
//!
//! A voter with `[leadership] data_dir` keeps its Raft log, hard state and snapshots in
//! [`RaftStore`] and restarts from them as the same voter; before it hands the transport any
//! datagram it writes and syncs what the core recorded (Raft's persistence rule). Without
//! `data_dir` a voter keeps its Raft state in memory only, and a restarted one must be replaced
//! rather than restarted (it could vote twice in a term).

use std::collections::{BTreeMap, VecDeque};
use std::path::PathBuf;
use std::time::{SystemTime, UNIX_EPOCH};

use meshkit::lease::{
    Campaign, ClientStats, FencingToken, GroupEvent, GroupStats, LeadershipEvent, LeaseClient,
    LeaseConfig, LeaseError, LeaseGroup, MessageError, RequestId, Scope,
};
use meshkit::node::{CommandError, DatagramError, Node};
use meshkit::shard::ShardRole;
use meshkit::{Duration, Instant, NodeId};
use thiserror::Error;
use tokio::sync::{broadcast, oneshot};

use crate::raft_store::{RaftStore, RaftStoreError};
// The JSON shapes of the leadership view and feed live in `meshkit-api` (what client and server
// share); the lease host builds them.
use crate::vacancy::{Vacancies, VacancyStats};
pub use meshkit_api::json::{
    Change, CoordinatorCounters, CoordinatorStatus, FeedEntry, HeldLease, LeadershipView,
    MoveInFlight, RaftView, ShardMemberStatus, ShardStatus, TableLease, VoterProgress,
    is_shard_scope,
};
use meshkit_net::log_limit::LogLimit;

/// Feed entries kept for subscribers that resume; an older resume point gets a `reset`.
pub const FEED_HISTORY: usize = 4096;

/// Warnings about refused Raft messages: at most 10 a minute per process (every refusal is
/// counted in `mesh_leadership_raft_refused_total`).
static RAFT_REFUSED_LOG: LogLimit = LogLimit::new(10, Duration::from_secs(60));

/// The `[leadership]` settings of a node, validated (see `meshkit_node::config`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LeadershipConfig {
    /// The Raft voters (3 or 5 is usual). A node in this list runs a voter.
    pub voters: Vec<NodeId>,
    /// Scopes this node contends for from the start.
    pub campaign: Vec<Scope>,
    /// TTL of the leases it asks for.
    pub ttl: Duration,
    /// How soon a failed ask (no quorum, overload) is tried again.
    pub retry: Duration,
    /// Raft and lease-client tuning.
    pub lease: LeaseConfig,
    /// Where a voter keeps its Raft state (`raft.log`); `None`: in memory only.
    pub data_dir: Option<PathBuf>,
    /// A node not in `voters` starts as a voter-to-be of that group (`join_as_voter`): an empty
    /// Raft log, no campaign of its own, until the leader adds it (`meshctl voters add`).
    pub join_as_voter: bool,
    /// `[shards]`: the shards the mesh owns through leases. A voter keeps a coordinator (acting
    /// while it leads the Raft group), every node a member that takes shards from the start.
    pub shards: Option<meshkit::shard::ShardConfig>,
}

/// Why a node's leadership could not start. Nothing was sent.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum LeadershipStartError {
    /// The voter set is invalid.
    #[error(transparent)]
    Group(#[from] meshkit::lease::GroupError),
    /// The voter's Raft file (in `leadership.data_dir`) is unusable.
    #[error("leadership.data_dir: {0}")]
    Store(#[from] RaftStoreError),
}

pub use crate::error::FeedGap;

/// Feed entries kept for slow subscribers of the live feed; past this a subscriber sees
/// `Lagged` (as many as the driver keeps of its events).
pub const FEED_CHANNEL_LEN: usize = 1024;

/// The node's feed: a ring of the last [`FEED_HISTORY`] entries and a broadcast of new ones.
#[derive(Debug)]
struct Feed {
    node: u64,
    next: u64,
    history: VecDeque<FeedEntry>,
    live: broadcast::Sender<FeedEntry>,
}

impl Feed {
    fn push(&mut self, change: Change) {
        let entry = FeedEntry {
            seq: self.next,
            node: self.node,
            unix_ms: unix_ms(),
            change,
        };
        self.next += 1;
        if self.history.len() == FEED_HISTORY {
            self.history.pop_front();
        }
        self.history.push_back(entry.clone());
        // No subscriber is fine.
        let _ = self.live.send(entry);
    }

    fn since(&self, after: u64) -> Result<Vec<FeedEntry>, FeedGap> {
        let oldest = self.history.front().map(|e| e.seq);
        // Entries after `after` must all still be held: `after + 1` is the oldest needed.
        if after + 1 < oldest.unwrap_or(self.next) || after >= self.next {
            if after + 1 == self.next {
                return Ok(Vec::new());
            }
            return Err(FeedGap { oldest });
        }
        Ok(self
            .history
            .iter()
            .filter(|e| e.seq > after)
            .cloned()
            .collect())
    }
}

/// The feed's record of a lease client event, if it is one the feed shows.
fn change_from_client(event: &LeadershipEvent) -> Option<Change> {
    Some(match event {
        LeadershipEvent::Acquired {
            scope, token, term, ..
        } => Change::Acquired {
            scope: scope.to_string(),
            token: token.get(),
            term: term.get(),
        },
        LeadershipEvent::Renewed { scope, token, .. } => Change::Renewed {
            scope: scope.to_string(),
            token: token.get(),
        },
        LeadershipEvent::Lost {
            scope,
            token,
            reason,
        } => Change::Lost {
            scope: scope.to_string(),
            token: token.get(),
            reason: reason.to_string(),
        },
        LeadershipEvent::Transferred {
            scope,
            token,
            to,
            new_token,
        } => Change::Transferred {
            scope: scope.to_string(),
            token: token.get(),
            to: to.get(),
            new_token: new_token.get(),
        },
        LeadershipEvent::Expired { scope, token } => Change::Expired {
            scope: scope.to_string(),
            token: token.get(),
        },
        LeadershipEvent::Released { scope, token } => Change::Released {
            scope: scope.to_string(),
            token: token.get(),
        },
        // Answers to requests go to whoever asked, not to the feed.
        _ => return None,
    })
}

/// The feed's record of a voter event, if it is one the feed shows.
fn change_from_group(event: &GroupEvent) -> Option<Change> {
    Some(match event {
        GroupEvent::LeaderChanged { leader, term } => Change::RaftLeader {
            leader: leader.map(NodeId::get),
            term: term.get(),
        },
        GroupEvent::Granted {
            scope,
            holder,
            token,
            term,
        } => Change::Granted {
            scope: scope.to_string(),
            holder: holder.get(),
            token: token.get(),
            term: term.get(),
        },
        GroupEvent::Released {
            scope,
            holder,
            token,
        } => Change::LeaseReleased {
            scope: scope.to_string(),
            holder: holder.get(),
            token: token.get(),
        },
        GroupEvent::Expired {
            scope,
            holder,
            token,
        } => Change::LeaseExpired {
            scope: scope.to_string(),
            holder: holder.get(),
            token: token.get(),
        },
        GroupEvent::VotersChanged { voters } => Change::Voters {
            voters: voters.iter().map(|v| v.get()).collect(),
        },
        _ => return None,
    })
}

/// The shard status of `node` at `now`, if it has shards.
pub(crate) fn shard_status(now: Instant, node: &Node) -> Option<ShardStatus> {
    let ms = |d: Duration| u64::try_from(d.as_millis()).unwrap_or(u64::MAX);
    let member = node.shard_member();
    let coordinator = node.shard_coordinator();
    let configured = match (member, coordinator) {
        (Some(m), _) => m.config().shard_count(),
        (None, Some(c)) => c.config().shard_count(),
        (None, None) => return None,
    };
    let coordinator_node = match node.lease_group() {
        Some(group) => group.leader(),
        None => member.and_then(|m| m.coordinator()).map(|(_, from)| from),
    };
    let member = member.map(|m| ShardMemberStatus {
        role: match m.role() {
            ShardRole::Member => "member",
            ShardRole::Draining => "draining",
            _ => "out",
        }
        .to_owned(),
        held: node.shards_held(now),
        wanted: m.wants().count(),
        drained: node.shards_drained(now),
    });
    let coordinator = coordinator.and_then(|c| {
        let term = c.term()?;
        let (live, draining) = c.pool();
        let map = c.map();
        let mut owned: BTreeMap<u64, usize> =
            live.difference(draining).map(|m| (m.get(), 0)).collect();
        for (owner, count) in map.owners() {
            owned.insert(owner.get(), count);
        }
        let eligible = live
            .difference(draining)
            .map(|m| map.owned_count(*m))
            .collect::<Vec<_>>();
        let imbalance = match (eligible.iter().max(), eligible.iter().min()) {
            (Some(max), Some(min)) => max - min,
            _ => 0,
        };
        Some(CoordinatorStatus {
            term: term.get(),
            members: live.iter().map(|m| m.get()).collect(),
            draining: draining.iter().map(|m| m.get()).collect(),
            owned,
            unowned: map.iter().filter(|(_, a)| a.owner.is_none()).count(),
            bounds: c.bounds().map(|b| (b.lower(), b.upper())),
            imbalance,
            in_flight: c
                .in_flight()
                .map(|(shard, f)| MoveInFlight {
                    shard: shard.to_string(),
                    from: f.from.map(NodeId::get),
                    to: f.to.get(),
                    age_ms: ms(now.saturating_duration_since(f.started)),
                })
                .collect(),
            idle: c.is_idle(),
        })
    });
    let counters = node.shard_coordinator().map(|c| {
        let stats = c.stats();
        CoordinatorCounters {
            plans: stats.plans,
            moves_started: stats.moves_started,
            moves_completed: stats.moves_done,
            moves_failed: stats.moves_abandoned,
        }
    });
    Some(ShardStatus {
        configured,
        coordinator_node: coordinator_node.map(NodeId::get),
        member,
        coordinator,
        counters,
    })
}

fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// Counters for metrics.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LeadershipStats {
    /// The voter's counters, on voters.
    pub group: Option<GroupStats>,
    /// The client's counters.
    pub client: ClientStats,
    /// Raft leader changes seen (on voters).
    pub leader_changes: u64,
    /// Leases acquired by this node.
    pub acquired: u64,
    /// Leases this node stopped holding (lost, expired, released, transferred).
    pub relinquished: u64,
    /// How long scopes and the Raft group went without a leader (on voters).
    pub vacancy: VacancyStats,
    /// Durable writes made to the voter's Raft file (appends and replacements).
    pub durable_writes: u64,
    /// Syncs of the voter's Raft file.
    pub durable_syncs: u64,
}

/// The node's leadership as the driver hosts it: the voter's Raft file, the feed, the host's
/// waiting lease requests and the counters. The state machines themselves (voter, client,
/// campaign) are in the core's [`Node`], which the driver owns.
#[derive(Debug)]
pub(crate) struct Leadership {
    /// The voter's Raft file, with `data_dir`.
    store: Option<RaftStore>,
    feed: Feed,
    stats: LeadershipStats,
    vacancies: Vacancies,
    voters: Vec<NodeId>,
    /// Host requests in flight (one per scope, as the client allows), answered when their
    /// outcome is known.
    waiters: BTreeMap<Scope, Waiter>,
}

/// How a host's lease request ended: the token (the new holder's, for a transfer), or why not.
pub type LeaseOutcome = Result<FencingToken, crate::error::LeadershipError>;

/// A lease request of the host application or an operator.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LeaseRequest {
    /// Acquire `scope` for `ttl` (renews it if already held).
    Acquire {
        /// The scope.
        scope: Scope,
        /// The TTL.
        ttl: Duration,
    },
    /// Renew a held lease for its TTL.
    Renew {
        /// The scope.
        scope: Scope,
    },
    /// Hand a held lease to `to`; this node stops contending for it.
    Transfer {
        /// The scope.
        scope: Scope,
        /// The new holder.
        to: NodeId,
    },
    /// Release a held lease (it stops being held at once) and stop contending for it;
    /// answered once the release is committed.
    Release {
        /// The scope.
        scope: Scope,
    },
    /// An operator's lock (`POST /control/leases/acquire`, `meshctl lock`): acquire `scope`
    /// for `ttl` only if this node neither holds it already nor contends for it from its
    /// configuration, so that two sessions through one node never share one grant. Refused
    /// with [`LeaseError::Held`] (naming this node) or
    /// [`LeadershipError::Campaigned`](crate::error::LeadershipError::Campaigned).
    AcquireNew {
        /// The scope.
        scope: Scope,
        /// The TTL.
        ttl: Duration,
    },
    /// Renew `scope` only if it is held under `token` (the session that acquired it); refused
    /// with [`LeaseError::NotHeld`] or [`LeaseError::StaleToken`] otherwise.
    RenewHeld {
        /// The scope.
        scope: Scope,
        /// The token the session holds.
        token: FencingToken,
    },
    /// Release `scope` only if it is held under `token`; refused as [`Self::RenewHeld`] is.
    ReleaseHeld {
        /// The scope.
        scope: Scope,
        /// The token the session holds.
        token: FencingToken,
    },
}

#[derive(Debug)]
struct Waiter {
    request: RequestId,
    ends: Ends,
    reply: oneshot::Sender<LeaseOutcome>,
}

/// The client event that answers a request (besides `Failed` and `Lost`, which answer any).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Ends {
    /// `Acquired` or `Renewed`.
    Grant,
    /// `Transferred`.
    Transfer,
    /// `Released`.
    Release,
}

impl Leadership {
    /// Gives `node` its lease state machines as `config` says (a voter if `config.voters` names
    /// it, restarted from `data_dir` if that holds a Raft file; a lease client and its campaign
    /// in any case), and the host side of them.
    pub(crate) fn start(
        config: &LeadershipConfig,
        node: Node,
        now: Instant,
    ) -> Result<(Self, Node), LeadershipStartError> {
        let id = node.local_id();
        let mut store = None;
        let mut node = node;
        let founder = config.voters.contains(&id);
        if founder || config.join_as_voter {
            let restored = match &config.data_dir {
                Some(dir) => {
                    let (opened, durable) = RaftStore::open(dir)?;
                    store = Some(opened);
                    durable
                }
                None => None,
            };
            node = match restored {
                // A joining voter restarts from its file as what it became: still a voter-to-be
                // (no configuration yet), or the voter it was made.
                _ if !founder => {
                    tracing::info!(
                        group = ?config.voters.iter().map(|v| v.get()).collect::<Vec<_>>(),
                        restarted = restored.is_some(),
                        "starting as a joining Raft voter: it votes once the leader adds it \
                         (`meshctl voters add`)"
                    );
                    node.with_joining_voter(now, config.lease.clone(), &config.voters, restored)
                }
                Some(durable) => {
                    let saved = durable.hard_state();
                    let log = durable.log_bounds();
                    tracing::info!(
                        term = %saved.term,
                        vote = ?saved.vote.map(NodeId::get),
                        commit = saved.commit,
                        snapshot = log.snapshot_index,
                        first = log.first_index,
                        last = log.last_index,
                        "restarting the Raft voter from its data_dir"
                    );
                    node.with_restarted_voter(now, config.lease.clone(), durable)
                }
                None => node.with_voter(now, config.lease.clone(), &config.voters)?,
            };
            if store.is_some() {
                node.record_durable_writes();
            }
        }
        let mut campaign = Campaign::new(config.ttl, config.retry);
        for scope in &config.campaign {
            campaign.enter(now, scope.clone());
        }
        let mut node = node.with_lease_client(now, config.lease.clone(), &config.voters, campaign);
        if let Some(shards) = &config.shards {
            node = node.with_shards(now, shards.clone());
            // The node has a lease client: it is a shard member.
            let _ = node.join_shards(now);
        }
        let (live, _) = broadcast::channel(FEED_CHANNEL_LEN);
        let leadership = Self {
            store,
            feed: Feed {
                node: id.get(),
                next: 1,
                history: VecDeque::new(),
                live,
            },
            stats: LeadershipStats::default(),
            vacancies: Vacancies::new(now),
            voters: config.voters.clone(),
            waiters: BTreeMap::new(),
        };
        Ok((leadership, node))
    }

    pub(crate) fn subscribe(&self) -> broadcast::Receiver<FeedEntry> {
        self.feed.live.subscribe()
    }

    pub(crate) fn feed_since(&self, after: u64) -> Result<Vec<FeedEntry>, FeedGap> {
        self.feed.since(after)
    }

    /// Writes and syncs what the node's voter recorded; call it before the node's transmits
    /// are polled, so everything sent was polled after these writes. If the file cannot be
    /// written, the voter stops (the group carries on without it; restart the node once the
    /// disk is fixed, and it rejoins from what its file holds).
    pub(crate) fn persist(&mut self, node: &mut Node) {
        if let Err(error) = self.write_durable(node) {
            // Nothing recorded may be sent before it is on disk, and it cannot get there.
            tracing::error!(%error, "the Raft file cannot be written: this voter stops");
            node.stop_voter();
            self.store = None;
        }
    }

    fn write_durable(&mut self, node: &mut Node) -> Result<(), RaftStoreError> {
        let Some(store) = self.store.as_mut() else {
            return Ok(());
        };
        let mut wrote = false;
        while let Some(write) = node.poll_durable() {
            store.write(write)?;
            self.stats.durable_writes += 1;
            wrote = true;
        }
        if wrote {
            store.sync()?;
            self.stats.durable_syncs += 1;
        }
        Ok(())
    }

    /// One event of the node's voter: counters, vacancies, the feed.
    pub(crate) fn on_group_event(&mut self, now: Instant, event: &GroupEvent) {
        if matches!(event, GroupEvent::LeaderChanged { .. }) {
            self.stats.leader_changes += 1;
        }
        self.vacancies.observe(now, event, &mut self.stats.vacancy);
        if let Some(change) = change_from_group(event) {
            self.feed.push(change);
        }
    }

    /// One event of the node's lease client: counters, the waiting request it answers, the
    /// feed.
    pub(crate) fn on_client_event(&mut self, event: &LeadershipEvent) {
        match event {
            LeadershipEvent::Acquired { scope, token, .. } => {
                self.stats.acquired += 1;
                self.answer(scope, Ends::Grant, Ok(*token));
            }
            LeadershipEvent::Renewed { scope, token, .. } => {
                self.answer(scope, Ends::Grant, Ok(*token));
            }
            LeadershipEvent::Transferred {
                scope, new_token, ..
            } => {
                self.stats.relinquished += 1;
                self.answer(scope, Ends::Transfer, Ok(*new_token));
            }
            LeadershipEvent::Lost { scope, reason, .. } => {
                self.stats.relinquished += 1;
                self.answer_any(scope, Err(reason.clone().into()));
            }
            LeadershipEvent::Released { scope, token } => {
                self.stats.relinquished += 1;
                self.answer(scope, Ends::Release, Ok(*token));
            }
            LeadershipEvent::Expired { .. } => self.stats.relinquished += 1,
            LeadershipEvent::Failed { request, error } => {
                let scope = self
                    .waiters
                    .iter()
                    .find(|(_, w)| w.request == *request)
                    .map(|(s, _)| s.clone());
                if let Some(scope) = scope {
                    self.answer_any(&scope, Err(error.clone().into()));
                }
            }
            _ => {}
        }
        if let Some(change) = change_from_client(event) {
            self.feed.push(change);
        }
    }

    /// Answers the waiter on `scope` if its request ends with `ends`.
    fn answer(&mut self, scope: &Scope, ends: Ends, outcome: LeaseOutcome) {
        if self.waiters.get(scope).is_some_and(|w| w.ends == ends) {
            self.answer_any(scope, outcome);
        }
    }

    /// Answers the waiter on `scope`, whatever its request.
    fn answer_any(&mut self, scope: &Scope, outcome: LeaseOutcome) {
        if let Some(waiter) = self.waiters.remove(scope) {
            // The caller may have stopped waiting.
            let _ = waiter.reply.send(outcome);
        }
    }

    /// Starts a host's or an operator's lease request on `node`; `reply` learns the outcome.
    /// A transfer or a release also stops this node contending for the scope, so that it does
    /// not take it back.
    pub(crate) fn request(
        &mut self,
        now: Instant,
        node: &mut Node,
        request: LeaseRequest,
        reply: oneshot::Sender<LeaseOutcome>,
    ) {
        let request = match Self::check_session(now, node, request) {
            Ok(request) => request,
            Err(refused) => {
                let _ = reply.send(Err(refused));
                return;
            }
        };
        let (scope, started, ends) = match request {
            LeaseRequest::Acquire { scope, ttl } | LeaseRequest::AcquireNew { scope, ttl } => {
                let r = node.acquire(now, scope.clone(), ttl);
                (scope, r, Ends::Grant)
            }
            LeaseRequest::Renew { scope } | LeaseRequest::RenewHeld { scope, .. } => {
                let r = node.renew(now, scope.clone());
                (scope, r, Ends::Grant)
            }
            LeaseRequest::Transfer { scope, to } => {
                let r = node.transfer(now, scope.clone(), to);
                (scope, r, Ends::Transfer)
            }
            LeaseRequest::Release { scope } | LeaseRequest::ReleaseHeld { scope, .. } => {
                let r = node.release(now, &scope);
                (scope, r, Ends::Release)
            }
        };
        match started {
            Ok(request) => {
                if ends != Ends::Grant {
                    node.withdraw_campaign(&scope);
                }
                let waiter = Waiter {
                    request,
                    ends,
                    reply,
                };
                self.waiters.insert(scope, waiter);
            }
            Err(CommandError::Lease(error)) => {
                let _ = reply.send(Err(error.into()));
            }
            // `start` always gives the node a client; a reply dropped reads as "disabled".
            Err(_) => drop(reply),
        }
    }

    /// The guards of an operator's session requests, checked in the driver's step so that no
    /// other request falls between the check and the request: `request` if it may go ahead.
    fn check_session(
        now: Instant,
        node: &Node,
        request: LeaseRequest,
    ) -> Result<LeaseRequest, crate::error::LeadershipError> {
        let held = |scope: &Scope| node.held().find(|(s, _)| *s == scope).map(|(_, h)| *h);
        match &request {
            LeaseRequest::AcquireNew { scope, .. } => {
                if let Some(h) = held(scope) {
                    return Err(LeaseError::Held {
                        scope: scope.clone(),
                        holder: node.local_id(),
                        token: h.token,
                        expires_in: h.expires.saturating_duration_since(now),
                    }
                    .into());
                }
                if node
                    .campaign()
                    .is_some_and(|c| c.scopes().any(|s| s == scope))
                {
                    return Err(crate::error::LeadershipError::Campaigned {
                        scope: scope.to_string(),
                    });
                }
            }
            LeaseRequest::RenewHeld { scope, token }
            | LeaseRequest::ReleaseHeld { scope, token } => match held(scope) {
                None => {
                    return Err(LeaseError::NotHeld {
                        scope: scope.clone(),
                    }
                    .into());
                }
                Some(h) if h.token != *token => {
                    return Err(LeaseError::StaleToken {
                        scope: scope.clone(),
                        presented: *token,
                        current: h.token,
                    }
                    .into());
                }
                Some(_) => {}
            },
            _ => {}
        }
        Ok(request)
    }

    /// Stops contending for every scope and releases what is held (a drain); a shard member
    /// announces it drains instead of releasing its shards, and the coordinator hands them to
    /// the other members. Returns the scopes released.
    pub(crate) fn drain(&mut self, now: Instant, node: &mut Node) -> Vec<Scope> {
        let shards = node.drain_shards(now).is_ok();
        let contended: Vec<Scope> = node
            .campaign()
            .map(|c| c.scopes().cloned().collect())
            .unwrap_or_default();
        for scope in &contended {
            node.withdraw_campaign(scope);
        }
        let held: Vec<Scope> = node
            .held()
            .map(|(s, _)| s.clone())
            .filter(|s| !(shards && s.as_shard().is_some()))
            .collect();
        held.into_iter()
            .filter(|scope| node.release(now, scope).is_ok())
            .collect()
    }

    /// Contends again for `scopes` (a resume).
    pub(crate) fn resume(&mut self, now: Instant, node: &mut Node, scopes: &[Scope]) {
        // A shard member takes shards again (nothing to do without `[shards]`).
        let _ = node.join_shards(now);
        for scope in scopes {
            node.enter_campaign(now, scope.clone());
        }
    }

    pub(crate) fn view(&self, now: Instant, node: &Node) -> LeadershipView {
        let ms = |d: Duration| u64::try_from(d.as_millis()).unwrap_or(u64::MAX);
        let (raft, table) = match node.lease_group() {
            Some(g) => {
                let t = g.table();
                let table = t
                    .iter()
                    .map(|(scope, l)| TableLease {
                        scope: scope.to_string(),
                        holder: l.holder.get(),
                        token: l.token.get(),
                        term: l.term.get(),
                        expires_in_ms: ms(l.expires_at.saturating_duration_since(t.clock())),
                    })
                    .collect();
                let raft = RaftView {
                    leader: g.leader().map(NodeId::get),
                    term: g.term().get(),
                    voters: g.voters().map(NodeId::get).collect(),
                    applied_index: g.applied_index(),
                    snapshot_index: g.log_bounds().snapshot_index,
                    log_entries: g.log_len() as u64,
                    commit_index: g.commit_index(),
                    change_pending: g.has_pending_change(),
                    progress: g
                        .voters()
                        .filter_map(|v| {
                            g.matched_index(v).map(|matched| VoterProgress {
                                id: v.get(),
                                matched,
                            })
                        })
                        .collect(),
                };
                (Some(raft), table)
            }
            None => (None, Vec::new()),
        };
        LeadershipView {
            node: node.local_id().get(),
            voters: self.voters.iter().map(|v| v.get()).collect(),
            raft,
            table,
            held: node
                .held()
                .map(|(scope, h)| HeldLease {
                    scope: scope.to_string(),
                    token: h.token.get(),
                    term: h.term.get(),
                    expires_in_ms: ms(h.expires.saturating_duration_since(now)),
                    transferring: h.transferring,
                })
                .collect(),
            campaign: node
                .campaign()
                .map(|c| c.scopes().map(ToString::to_string).collect())
                .unwrap_or_default(),
            last_seq: self.feed.next - 1,
            shards: shard_status(now, node),
        }
    }

    pub(crate) fn stats(&self, node: &Node) -> LeadershipStats {
        LeadershipStats {
            group: node.lease_group().map(LeaseGroup::stats),
            client: node
                .lease_client()
                .map(LeaseClient::stats)
                .unwrap_or_default(),
            ..self.stats
        }
    }
}

/// Logs a datagram the node refused: a Raft message from a non-voter, or one that breaks
/// raft-rs's invariants, is a forgery or a broken peer, worth a warning, but one a peer can
/// repeat at will. Every refusal is counted (`mesh_leadership_raft_refused_total`); the log
/// shows a sample and how many lines it held back.
pub(crate) fn log_refused(from: NodeId, error: &DatagramError) {
    match error {
        DatagramError::Lease(error @ MessageError::RaftRefused { .. }) => {
            if let Some(suppressed) = RAFT_REFUSED_LOG.allow() {
                tracing::warn!(%from, %error, suppressed, "raft message refused");
            }
        }
        error => tracing::debug!(%from, %error, "datagram refused"),
    }
}
