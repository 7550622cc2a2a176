//! A member's side of shard ownership: it follows the coordinator's [`Instruction`]s through
//! its lease client, renews the shards it holds, and drains. Sans-IO, no clock.
//!
//! * **Announcing.** A member takes shards once it announced it: it sends its role
//!   ([`Announce`]) to every voter when it changes and every [`ANNOUNCE_INTERVAL`] after (a
//!   lost datagram, a voter restarted without its memory). Every voter's coordinator keeps the
//!   roles; its pool is the members up (by its node's membership) that announced. Straight to
//!   the few voters rather than through membership metadata: gossiping every member's role to
//!   every member costs each node bytes in proportion to the mesh (1,000 members announcing
//!   cost 14 KB/s per node in `scenarios/membership-surge.toml`), and the coordinator learns
//!   the whole pool within a round trip, not a dissemination.
//! * **Following.** Instructions are accepted only from a voter (the coordinator runs on the
//!   Raft leader), and only at the highest term seen: a deposed coordinator's late instructions
//!   are ignored. `from == self`: hand the shard to `to` by a lease transfer, if held. `to ==
//!   self` with no `from`: ask for the shard until held (or until [`move_deadline`]), retrying
//!   every [`RETRY_INTERVAL`]; a draining member asks for nothing.
//! * **Renewing.** Every shard lease held is renewed once a third of its life has passed (the
//!   lease counts from before its request left).
//! * **Draining.** Once draining and holding no shard with nothing asked for, the member reports
//!   [`ShardEvent::Drained`] (once).

use alloc::collections::{BTreeMap, VecDeque};

use super::coordinator::{ShardEvent, move_deadline};
use super::wire::{Announce, Instruction, ShardMessage};
use super::{ShardConfig, ShardId};
use crate::id::NodeId;
use crate::lease::{LeadershipEvent, LeaseClient, RequestId, Scope, Term};
use crate::time::{Duration, Instant};

/// How often a member announces its role again.
pub const ANNOUNCE_INTERVAL: Duration = Duration::from_secs(5);
/// How often a member asks again for a shard it was told to take.
pub const RETRY_INTERVAL: Duration = Duration::from_millis(100);

/// A member's role.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
#[non_exhaustive]
pub enum ShardRole {
    /// Not (yet) announced: takes no shard.
    Out,
    /// Takes shards.
    Member,
    /// Hands its shards away and takes none.
    Draining,
}

/// The member's counters; they only grow.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct MemberStats {
    /// Instructions followed.
    pub instructions: u64,
    /// Instructions ignored: from a non-voter or an older term.
    pub instructions_ignored: u64,
    /// Transfers started on instruction.
    pub transfers: u64,
    /// Acquisitions sent (retries included).
    pub acquires: u64,
    /// Renewals sent.
    pub renewals: u64,
}

/// One member's shard state. See the [shard module](crate::shard).
#[derive(Debug)]
pub struct ShardMember {
    id: NodeId,
    config: ShardConfig,
    role: ShardRole,
    coordinator: Option<(Term, NodeId)>,
    /// Shards told to take, until when.
    wants: BTreeMap<ShardId, Instant>,
    /// Requests under way, by shard.
    asking: BTreeMap<ShardId, RequestId>,
    /// Shards held, and when to renew each.
    renew_at: BTreeMap<ShardId, Instant>,
    next_retry: Option<Instant>,
    next_announce: Option<Instant>,
    outbox: VecDeque<(NodeId, ShardMessage)>,
    drained_reported: bool,
    events: VecDeque<ShardEvent>,
    stats: MemberStats,
}

impl ShardMember {
    /// A member `id` of the shards `config` names, not yet announced.
    pub fn new(id: NodeId, config: ShardConfig) -> Self {
        Self {
            id,
            config,
            role: ShardRole::Out,
            coordinator: None,
            wants: BTreeMap::new(),
            asking: BTreeMap::new(),
            renew_at: BTreeMap::new(),
            next_retry: None,
            next_announce: None,
            outbox: VecDeque::new(),
            drained_reported: false,
            events: VecDeque::new(),
            stats: MemberStats::default(),
        }
    }

    /// Sets the role and announces it to the voters at once. Draining drops what was asked.
    pub fn set_role(&mut self, now: Instant, role: ShardRole, client: &LeaseClient) {
        self.role = role;
        self.announce(now, client);
        if role != ShardRole::Member {
            self.wants.clear();
        }
        if role != ShardRole::Draining {
            self.drained_reported = false;
        }
        self.check_drained(now, client);
    }

    /// The node leaves the mesh: it stops taking shards and releases those it holds (the
    /// coordinator then places them at once, without waiting for the leases to expire).
    pub fn leave(&mut self, now: Instant, client: &mut LeaseClient) {
        self.role = ShardRole::Out;
        self.announce(now, client);
        self.next_announce = None;
        self.wants.clear();
        self.next_retry = None;
        self.renew_at.clear();
        let held: Vec<Scope> = client
            .held()
            .filter(|(scope, _)| self.shard_of(scope).is_some())
            .map(|(scope, _)| scope.clone())
            .collect();
        for scope in held {
            let _ = client.release(now, &scope);
        }
    }

    /// An instruction from `sender`.
    pub fn handle_instruction(
        &mut self,
        now: Instant,
        sender: NodeId,
        instruction: &Instruction,
        client: &mut LeaseClient,
    ) {
        let newer = self
            .coordinator
            .is_none_or(|(term, _)| instruction.term >= term);
        if !client.voters().contains(&sender) || !newer || !self.config.contains(&instruction.shard)
        {
            self.stats.instructions_ignored += 1;
            return;
        }
        self.coordinator = Some((instruction.term, sender));
        self.stats.instructions += 1;
        let scope = instruction.shard.scope();
        if instruction.from == Some(self.id) {
            if client.holds(now, &scope).is_some()
                && instruction.to != self.id
                && client.transfer(now, scope, instruction.to).is_ok()
            {
                self.stats.transfers += 1;
            }
        } else if instruction.to == self.id
            && instruction.from.is_none()
            && self.role == ShardRole::Member
            && client.holds(now, &scope).is_none()
        {
            self.wants
                .entry(instruction.shard.clone())
                .or_insert(now + move_deadline(self.config.ttl()));
            self.ask(now, client);
        }
    }

    /// An event of the node's lease client.
    pub fn handle_event(&mut self, now: Instant, event: &LeadershipEvent, client: &LeaseClient) {
        match event {
            LeadershipEvent::Acquired { scope, expires, .. }
            | LeadershipEvent::Renewed { scope, expires, .. } => {
                let Some(shard) = self.shard_of(scope) else {
                    return;
                };
                self.wants.remove(&shard);
                self.asking.remove(&shard);
                let ttl = self.config.ttl();
                self.renew_at
                    .insert(shard, expires.saturating_sub(ttl - ttl / 3));
            }
            LeadershipEvent::Lost { scope, .. }
            | LeadershipEvent::Expired { scope, .. }
            | LeadershipEvent::Released { scope, .. }
            | LeadershipEvent::Transferred { scope, .. } => {
                if let Some(shard) = self.shard_of(scope) {
                    self.renew_at.remove(&shard);
                    self.asking.remove(&shard);
                }
            }
            LeadershipEvent::Failed { request, .. } => {
                self.asking.retain(|_, r| r != request);
            }
            _ => {}
        }
        self.check_drained(now, client);
    }

    /// Renews what is due and asks again for what it was told to take.
    pub fn handle_timeout(&mut self, now: Instant, client: &mut LeaseClient) {
        let due: Vec<ShardId> = self
            .renew_at
            .iter()
            .filter(|&(s, &at)| at <= now && !self.asking.contains_key(s))
            .map(|(s, _)| s.clone())
            .collect();
        for shard in due {
            let scope = shard.scope();
            if client.holds(now, &scope).is_none() {
                self.renew_at.remove(&shard);
                continue;
            }
            match client.renew(now, scope) {
                Ok(request) => {
                    self.stats.renewals += 1;
                    self.asking.insert(shard, request);
                }
                // Refused locally (too many requests pending): try again at the next retry.
                Err(_) => {
                    self.renew_at.insert(shard, now + RETRY_INTERVAL);
                }
            }
        }
        if self.next_retry.is_some_and(|at| at <= now) {
            self.ask(now, client);
        }
        if self.next_announce.is_some_and(|at| at <= now) {
            self.announce(now, client);
        }
        self.check_drained(now, client);
    }

    /// When [`handle_timeout`](Self::handle_timeout) is next due.
    pub fn poll_timeout(&self) -> Option<Instant> {
        let renew = self
            .renew_at
            .iter()
            .filter(|(s, _)| !self.asking.contains_key(*s))
            .map(|(_, &at)| at)
            .min();
        [renew, self.next_retry, self.next_announce]
            .into_iter()
            .flatten()
            .min()
    }

    /// The next message to send (an announce to a voter), and to whom.
    pub fn poll_message(&mut self) -> Option<(NodeId, ShardMessage)> {
        self.outbox.pop_front()
    }

    /// The next event.
    pub fn poll_event(&mut self) -> Option<ShardEvent> {
        self.events.pop_front()
    }

    // ---- views ---------------------------------------------------------------------------------

    /// The role announced.
    pub fn role(&self) -> ShardRole {
        self.role
    }

    /// The coordinator followed: its term and node.
    pub fn coordinator(&self) -> Option<(Term, NodeId)> {
        self.coordinator
    }

    /// Shards this member was told to take and does not hold yet.
    pub fn wants(&self) -> impl Iterator<Item = &ShardId> + '_ {
        self.wants.keys()
    }

    /// Whether this member is draining and holds no shard, with nothing asked for.
    pub fn is_drained(&self, now: Instant, client: &LeaseClient) -> bool {
        self.role == ShardRole::Draining && self.wants.is_empty() && self.held(now, client) == 0
    }

    /// How many configured shards `client` holds at `now`.
    pub fn held(&self, now: Instant, client: &LeaseClient) -> usize {
        client
            .held()
            .filter(|(scope, _)| {
                self.shard_of(scope).is_some() && client.holds(now, scope).is_some()
            })
            .count()
    }

    /// The configuration.
    pub fn config(&self) -> &ShardConfig {
        &self.config
    }

    /// The counters.
    pub fn stats(&self) -> MemberStats {
        self.stats
    }

    // ---- internals -----------------------------------------------------------------------------

    fn ask(&mut self, now: Instant, client: &mut LeaseClient) {
        self.wants.retain(|_, until| *until > now);
        self.next_retry = None;
        let wanted: Vec<ShardId> = self.wants.keys().cloned().collect();
        for shard in wanted {
            if self.asking.contains_key(&shard) {
                continue;
            }
            let scope = shard.scope();
            if client.holds(now, &scope).is_some() {
                self.wants.remove(&shard);
                continue;
            }
            if let Ok(request) = client.acquire(now, scope, self.config.ttl()) {
                self.stats.acquires += 1;
                self.asking.insert(shard, request);
            }
        }
        if !self.wants.is_empty() {
            self.next_retry = Some(now + RETRY_INTERVAL);
        }
    }

    fn announce(&mut self, now: Instant, client: &LeaseClient) {
        let message = ShardMessage::Announce(Announce { role: self.role });
        for &voter in client.voters() {
            self.outbox.push_back((voter, message.clone()));
        }
        self.next_announce = (self.role != ShardRole::Out).then_some(now + ANNOUNCE_INTERVAL);
    }

    fn check_drained(&mut self, now: Instant, client: &LeaseClient) {
        if !self.drained_reported && self.is_drained(now, client) {
            self.drained_reported = true;
            self.events.push_back(ShardEvent::Drained);
        }
    }

    fn shard_of(&self, scope: &Scope) -> Option<ShardId> {
        let shard = scope.as_shard()?;
        self.config.contains(&shard).then_some(shard)
    }
}
