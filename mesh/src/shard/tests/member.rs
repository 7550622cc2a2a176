//! Tests of a member's side alone: a one-voter lease group and the members' lease clients on an
//! in-process network on virtual time (2 ms one way), with instructions handed to the members
//! by hand in place of a coordinator. What is checked is what the member does with its lease
//! client: which requests it makes, when, and what it reports.

use alloc::collections::BTreeMap;
use alloc::vec::Vec;

use crate::id::{Incarnation, NodeId};
use crate::lease::{
    LeadershipEvent, LeaseClient, LeaseConfig, LeaseGroup, Recipient, Scope, Term, recipient,
};
use crate::shard::{
    ANNOUNCE_INTERVAL, Announce, Instruction, RETRY_INTERVAL, ShardConfig, ShardEvent, ShardId,
    ShardMember, ShardMessage, ShardRole, move_deadline,
};
use crate::time::{Duration, Instant};

const LATENCY: Duration = Duration::from_millis(2);
const TTL: Duration = Duration::from_secs(3);
const MAX_STEPS: usize = 200_000;
const VOTER: u64 = 1;

fn node(i: u64) -> NodeId {
    NodeId::new(i)
}

fn shard(id: u32) -> ShardId {
    ShardId::new("orders", id).expect("a valid namespace")
}

fn scope(id: u32) -> Scope {
    shard(id).scope()
}

fn config() -> ShardConfig {
    ShardConfig::new("orders", 4).expect("a valid config")
}

struct Peer {
    client: LeaseClient,
    member: ShardMember,
    /// Every lease event the client reported, with when.
    lease_events: Vec<(Instant, LeadershipEvent)>,
    /// Every shard event the member reported.
    shard_events: Vec<ShardEvent>,
    /// What the member sent, to whom, when.
    sent: Vec<(Instant, NodeId, ShardMessage)>,
}

/// One voter (node 1, which is not a member) and members 2, 3.
struct Net {
    now: Instant,
    group: LeaseGroup,
    peers: BTreeMap<NodeId, Peer>,
    in_flight: BTreeMap<(Instant, u64), (NodeId, NodeId, Vec<u8>)>,
    seq: u64,
    buf: Vec<u8>,
}

impl Net {
    /// The network once the voter leads.
    fn new() -> Self {
        let voters = [node(VOTER)];
        let lease = LeaseConfig::default();
        let group = LeaseGroup::bootstrap(lease.clone(), node(VOTER), &voters, 7, Instant::ZERO)
            .expect("one voter");
        let peers = [2, 3]
            .into_iter()
            .map(|i| {
                let client =
                    LeaseClient::new(lease.clone(), node(i), Incarnation::new(1), &voters, i);
                let peer = Peer {
                    client,
                    member: ShardMember::new(node(i), config()),
                    lease_events: Vec::new(),
                    shard_events: Vec::new(),
                    sent: Vec::new(),
                };
                (node(i), peer)
            })
            .collect();
        let mut net = Self {
            now: Instant::ZERO,
            group,
            peers,
            in_flight: BTreeMap::new(),
            seq: 0,
            buf: Vec::new(),
        };
        for _ in 0..100 {
            if net.group.is_leader() {
                return net;
            }
            net.run_for(Duration::from_millis(100));
        }
        panic!("a single voter elects itself");
    }

    fn peer(&mut self, i: u64) -> &mut Peer {
        self.peers.get_mut(&node(i)).expect("a member")
    }

    /// Runs `f` on member `i` with its client, then drains both.
    fn with(&mut self, i: u64, f: impl FnOnce(Instant, &mut ShardMember, &mut LeaseClient)) {
        let now = self.now;
        let peer = self.peer(i);
        f(now, &mut peer.member, &mut peer.client);
        self.drain(node(i));
    }

    fn instruct(&mut self, i: u64, sender: u64, instruction: &Instruction) {
        self.with(i, |now, m, c| {
            m.handle_instruction(now, node(sender), instruction, c);
        });
    }

    fn send(&mut self, from: NodeId, to: NodeId, len: usize) {
        self.seq += 1;
        self.in_flight.insert(
            (self.now + LATENCY, self.seq),
            (from, to, self.buf[..len].to_vec()),
        );
    }

    fn drain(&mut self, n: NodeId) {
        let now = self.now;
        if n == node(VOTER) {
            while let Some(t) = self.group.poll_transmit(now, &mut self.buf) {
                self.send(n, t.to, t.len);
            }
            while self.group.poll_event().is_some() {}
            return;
        }
        let mut out = Vec::new();
        let peer = self.peers.get_mut(&n).expect("a member");
        while let Some(t) = peer.client.poll_transmit(now, &mut self.buf) {
            out.push((t.to, self.buf[..t.len].to_vec()));
        }
        while let Some(e) = peer.client.poll_event() {
            peer.member.handle_event(now, &e.event, &peer.client);
            peer.lease_events.push((now, e.event));
        }
        while let Some(e) = peer.member.poll_event() {
            peer.shard_events.push(e);
        }
        while let Some((to, m)) = peer.member.poll_message() {
            peer.sent.push((now, to, m));
        }
        for (to, bytes) in out {
            self.seq += 1;
            self.in_flight
                .insert((now + LATENCY, self.seq), (n, to, bytes));
        }
    }

    fn run_for(&mut self, d: Duration) {
        let end = self.now + d;
        for _ in 0..MAX_STEPS {
            let next_msg = self.in_flight.keys().next().map(|k| k.0);
            let mut timers: Vec<(Instant, NodeId)> = self
                .group
                .poll_timeout()
                .map(|t| (t, node(VOTER)))
                .into_iter()
                .collect();
            for (n, p) in &self.peers {
                for t in [p.client.poll_timeout(), p.member.poll_timeout()]
                    .into_iter()
                    .flatten()
                {
                    timers.push((t, *n));
                }
            }
            let next_timer = timers.into_iter().min();
            let next = [next_msg, next_timer.map(|t| t.0)]
                .into_iter()
                .flatten()
                .min();
            let Some(at) = next.filter(|t| *t <= end) else {
                self.now = end;
                return;
            };
            self.now = self.now.max(at);
            let now = self.now;
            if next_msg == Some(at) {
                let (_, (from, to, bytes)) = self.in_flight.pop_first().expect("peeked");
                if to == node(VOTER) {
                    let _ = self.group.handle_message(now, from, &bytes);
                } else if let Some(p) = self.peers.get_mut(&to) {
                    assert_eq!(recipient(&bytes), Ok(Recipient::Client));
                    p.client
                        .handle_message(now, from, &bytes)
                        .expect("clients accept the voter's datagrams");
                }
                self.drain(to);
            } else if let Some((_, n)) = next_timer {
                if n == node(VOTER) {
                    self.group.handle_timeout(now);
                } else {
                    let p = self.peers.get_mut(&n).expect("a member");
                    p.client.handle_timeout(now);
                    p.member.handle_timeout(now, &mut p.client);
                }
                self.drain(n);
            }
        }
        panic!("harness did not reach {end} within {MAX_STEPS} steps");
    }

    fn holds(&self, i: u64, id: u32) -> bool {
        self.peers[&node(i)]
            .client
            .holds(self.now, &scope(id))
            .is_some()
    }

    fn owner(&self, id: u32) -> Option<NodeId> {
        self.group.table().get(&scope(id)).map(|l| l.holder)
    }
}

fn take(term: u64, id: u32, to: u64) -> Instruction {
    Instruction {
        term: Term::new(term),
        shard: shard(id),
        from: None,
        to: node(to),
    }
}

fn hand_off(term: u64, id: u32, from: u64, to: u64) -> Instruction {
    Instruction {
        term: Term::new(term),
        shard: shard(id),
        from: Some(node(from)),
        to: node(to),
    }
}

/// A member announces its role to every voter at once and every `ANNOUNCE_INTERVAL` after; a
/// member that is `Out` does not repeat it.
#[test]
fn a_member_announces_its_role_and_repeats_it() {
    let mut net = Net::new();
    let t0 = net.now;
    net.with(2, |now, m, c| m.set_role(now, ShardRole::Member, c));
    assert_eq!(net.peer(2).member.role(), ShardRole::Member);
    net.run_for(ANNOUNCE_INTERVAL * 2 + Duration::from_millis(1));
    let announce = ShardMessage::Announce(Announce {
        role: ShardRole::Member,
    });
    let sent: Vec<(Instant, NodeId, ShardMessage)> = net.peer(2).sent.clone();
    assert_eq!(
        sent,
        [
            (t0, node(VOTER), announce.clone()),
            (t0 + ANNOUNCE_INTERVAL, node(VOTER), announce.clone()),
            (t0 + ANNOUNCE_INTERVAL * 2, node(VOTER), announce),
        ]
    );
    net.with(2, |now, m, c| m.set_role(now, ShardRole::Out, c));
    assert_eq!(
        net.peer(2).member.poll_timeout(),
        None,
        "nothing left to do"
    );
    net.peer(2).sent.clear();
    net.run_for(ANNOUNCE_INTERVAL * 2);
    assert!(net.peer(2).sent.is_empty());
}

/// Instructions count only from a voter, at the highest term seen, for a configured shard.
#[test]
fn instructions_from_non_voters_older_terms_or_other_shards_are_ignored() {
    let mut net = Net::new();
    net.with(2, |now, m, c| m.set_role(now, ShardRole::Member, c));
    net.instruct(2, 3, &take(5, 0, 2));
    assert_eq!(net.peer(2).member.stats().instructions_ignored, 1);
    assert_eq!(net.peer(2).member.coordinator(), None);
    let other = Instruction {
        shard: ShardId::new("orders", 4).unwrap(),
        ..take(5, 0, 2)
    };
    net.instruct(2, VOTER, &other);
    assert_eq!(net.peer(2).member.stats().instructions_ignored, 2);

    net.instruct(2, VOTER, &take(5, 0, 2));
    assert_eq!(
        net.peer(2).member.coordinator(),
        Some((Term::new(5), node(VOTER)))
    );
    net.instruct(2, VOTER, &take(4, 1, 2));
    let stats = net.peer(2).member.stats();
    assert_eq!((stats.instructions, stats.instructions_ignored), (1, 3));
    assert_eq!(
        net.peer(2).member.wants().cloned().collect::<Vec<_>>(),
        [shard(0)],
        "the older term's shard 1 is not asked for"
    );
    // The same term again counts (a resend).
    net.instruct(2, VOTER, &take(5, 1, 2));
    assert_eq!(net.peer(2).member.stats().instructions, 2);
}

/// Told to take a shard, a member asks for it and has it; it renews it once a third of its
/// life has passed (measured from before the request left), so it keeps it over many TTLs.
#[test]
fn a_member_takes_its_shard_and_renews_it_a_third_into_its_life() {
    let mut net = Net::new();
    net.with(2, |now, m, c| m.set_role(now, ShardRole::Member, c));
    net.instruct(2, VOTER, &take(1, 0, 2));
    assert_eq!(net.peer(2).member.stats().acquires, 1);
    net.run_for(Duration::from_millis(50));
    assert!(net.holds(2, 0));
    assert_eq!(net.owner(0), Some(node(2)));
    assert_eq!(net.peer(2).member.wants().count(), 0);
    let (now, peer) = (net.now, &net.peers[&node(2)]);
    assert_eq!(peer.member.held(now, &peer.client), 1);

    net.run_for(TTL * 5);
    assert!(net.holds(2, 0), "kept by renewals");
    let renewals: Vec<Instant> = net.peers[&node(2)]
        .lease_events
        .iter()
        .filter(|(_, e)| matches!(e, LeadershipEvent::Renewed { .. }))
        .map(|(at, _)| *at)
        .collect();
    // A renewal every ttl / 3 (1 s) plus a round trip: about 15 in 15 s, not fewer than 13.
    assert!(
        (13..=16).contains(&renewals.len()),
        "{} renewals",
        renewals.len()
    );
    // Every renewal sent was answered, but for one that may be under way.
    let sent = net.peer(2).member.stats().renewals as usize;
    assert!(
        sent == renewals.len() || sent == renewals.len() + 1,
        "{sent} sent"
    );
    for w in renewals.windows(2) {
        let gap = w[1] - w[0];
        assert!(
            gap >= TTL / 3 && gap < TTL / 3 + Duration::from_millis(20),
            "{gap:?}"
        );
    }
}

/// A shard held by another member cannot be had: the member asks again every
/// `RETRY_INTERVAL` until the holder's lease ends, then has it; it gives up at the move's
/// deadline. A draining member asks for nothing.
#[test]
fn a_member_asks_again_until_the_deadline() {
    let mut net = Net::new();
    net.with(3, |now, m, c| m.set_role(now, ShardRole::Member, c));
    net.instruct(3, VOTER, &take(1, 0, 3));
    net.run_for(Duration::from_millis(50));
    assert!(net.holds(3, 0));

    // Node 3 holds shard 0 and renews it: node 2, told to take it, asks and asks again.
    net.with(2, |now, m, c| m.set_role(now, ShardRole::Member, c));
    net.instruct(2, VOTER, &take(1, 0, 2));
    let start = net.now;
    net.run_for(RETRY_INTERVAL * 10);
    let acquires = net.peer(2).member.stats().acquires;
    assert!(
        (5..=11).contains(&acquires),
        "about one per retry interval once the previous failed: {acquires}"
    );
    assert!(!net.holds(2, 0));
    assert_eq!(net.peer(2).member.wants().count(), 1);

    // Past the move's deadline it stops asking.
    net.run_for(move_deadline(TTL));
    assert_eq!(net.peer(2).member.wants().count(), 0);
    let acquires = net.peer(2).member.stats().acquires;
    net.run_for(Duration::from_secs(1));
    assert_eq!(net.peer(2).member.stats().acquires, acquires);
    assert!(net.now > start + move_deadline(TTL));

    // A draining member is not told to take anything it would act on.
    net.with(2, |now, m, c| m.set_role(now, ShardRole::Draining, c));
    net.instruct(2, VOTER, &take(1, 1, 2));
    assert_eq!(net.peer(2).member.wants().count(), 0);
    assert_eq!(net.peer(2).member.stats().acquires, acquires);
}

/// Told to hand a shard over, the holder transfers its lease to the target, which then holds
/// it; a draining member that has handed over everything reports `Drained`, once.
#[test]
fn a_draining_member_hands_over_and_reports_drained_once() {
    let mut net = Net::new();
    for i in [2, 3] {
        net.with(i, |now, m, c| m.set_role(now, ShardRole::Member, c));
    }
    net.instruct(2, VOTER, &take(1, 0, 2));
    net.instruct(2, VOTER, &take(1, 1, 2));
    net.run_for(Duration::from_millis(50));
    assert!(net.holds(2, 0) && net.holds(2, 1));

    net.with(2, |now, m, c| m.set_role(now, ShardRole::Draining, c));
    assert!(
        net.peer(2).shard_events.is_empty(),
        "still holds two shards"
    );
    // Instructions to hand over to itself or about a shard not held do nothing.
    net.instruct(2, VOTER, &hand_off(1, 0, 2, 2));
    net.instruct(2, VOTER, &hand_off(1, 2, 2, 3));
    assert_eq!(net.peer(2).member.stats().transfers, 0);
    net.instruct(2, VOTER, &hand_off(1, 0, 2, 3));
    assert_eq!(net.peer(2).member.stats().transfers, 1);
    net.run_for(Duration::from_millis(100));
    assert!(!net.holds(2, 0));
    assert_eq!(net.owner(0), Some(node(3)));
    assert!(net.peer(2).shard_events.is_empty(), "still holds shard 1");
    net.instruct(2, VOTER, &hand_off(1, 1, 2, 3));
    net.run_for(Duration::from_millis(100));
    assert_eq!(net.owner(1), Some(node(3)));
    let now = net.now;
    assert!(
        net.peers[&node(2)]
            .member
            .is_drained(now, &net.peers[&node(2)].client)
    );
    assert_eq!(net.peer(2).shard_events, [ShardEvent::Drained]);
    net.run_for(TTL * 2);
    assert_eq!(net.peer(2).shard_events, [ShardEvent::Drained], "once");
    // Node 3 renews what it was handed.
    assert!(net.holds(3, 0) && net.holds(3, 1));

    // Back to member and draining again with nothing held: drained at once, reported again.
    net.with(2, |now, m, c| m.set_role(now, ShardRole::Member, c));
    net.with(2, |now, m, c| m.set_role(now, ShardRole::Draining, c));
    assert_eq!(
        net.peer(2).shard_events,
        [ShardEvent::Drained, ShardEvent::Drained]
    );
}

/// A member that leaves releases its shards at once (the voters' table has no owner for them
/// right after), stops renewing and announces `Out` once.
#[test]
fn a_member_that_leaves_releases_its_shards() {
    let mut net = Net::new();
    net.with(2, |now, m, c| m.set_role(now, ShardRole::Member, c));
    net.instruct(2, VOTER, &take(1, 0, 2));
    net.instruct(2, VOTER, &take(1, 1, 2));
    net.run_for(Duration::from_millis(50));
    assert_eq!(net.owner(0), Some(node(2)));
    net.peer(2).sent.clear();

    net.with(2, |now, m, c| m.leave(now, c));
    assert_eq!(net.peer(2).member.role(), ShardRole::Out);
    assert!(!net.holds(2, 0) && !net.holds(2, 1));
    net.run_for(Duration::from_millis(50));
    assert_eq!(net.owner(0), None, "released, not left to expire");
    assert_eq!(net.owner(1), None);
    let renewals = net.peer(2).member.stats().renewals;
    net.run_for(TTL * 2);
    assert_eq!(net.peer(2).member.stats().renewals, renewals);
    let sent = &net.peer(2).sent;
    assert_eq!(sent.len(), 1, "{sent:?}");
    assert_eq!(
        sent[0].2,
        ShardMessage::Announce(Announce {
            role: ShardRole::Out
        })
    );
}

/// A lease the member lost (the voters refused a renewal, or it expired) is not renewed; told to
/// take the shard again, it asks anew.
#[test]
fn a_lost_lease_is_not_renewed() {
    let mut net = Net::new();
    net.with(2, |now, m, c| m.set_role(now, ShardRole::Member, c));
    net.instruct(2, VOTER, &take(1, 0, 2));
    net.run_for(Duration::from_millis(50));
    assert!(net.holds(2, 0));
    // The client's lease ends under the member (as if it expired): the member forgets it.
    let now = net.now;
    let token = net.peers[&node(2)].client.holds(now, &scope(0)).unwrap();
    net.with(2, |now, m, c| {
        m.handle_event(
            now,
            &LeadershipEvent::Expired {
                scope: scope(0),
                token,
            },
            c,
        );
    });
    let renewals = net.peer(2).member.stats().renewals;
    net.run_for(TTL);
    assert_eq!(
        net.peer(2).member.stats().renewals,
        renewals,
        "the member no longer renews it"
    );
}
