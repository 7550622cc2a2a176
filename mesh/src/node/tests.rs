use core::time::Duration;

use proptest::prelude::*;

use super::*;
use crate::config::Profile;
use crate::lease::{LeadershipEvent, Scope};

const TTL: Duration = Duration::from_secs(3);
const RETRY: Duration = Duration::from_millis(100);

fn id(n: u64) -> NodeId {
    NodeId::new(n)
}

fn node(n: u64) -> Node {
    Node::new(
        Config::from_profile(Profile::Lan),
        id(n),
        Incarnation::new(1),
        n,
        Instant::ZERO,
    )
}

fn campaign_for(scope: Scope) -> Campaign {
    let mut campaign = Campaign::new(TTL, RETRY);
    campaign.enter(Instant::ZERO, scope);
    campaign
}

/// Node 1: the only voter, and a client contending for `global-control`.
fn lone_voter() -> Node {
    let now = Instant::ZERO;
    node(1)
        .with_voter(now, LeaseConfig::default(), &[id(1)])
        .unwrap()
        .with_lease_client(
            now,
            LeaseConfig::default(),
            &[id(1)],
            campaign_for(Scope::global_control()),
        )
}

/// Runs `nodes` (ids 1..=n, in order) with instant delivery until `done` or `steps` inputs.
fn run_until(
    nodes: &mut [Node],
    now: &mut Instant,
    steps: usize,
    mut done: impl FnMut(&Event) -> bool,
) -> bool {
    let mut buf = Vec::new();
    for _ in 0..steps {
        let mut wire = Vec::new();
        for node in nodes.iter_mut() {
            while let Some(t) = node.poll_transmit(*now, &mut buf) {
                assert_ne!(
                    t.to,
                    node.local_id(),
                    "self-addressed transmit reached the host"
                );
                wire.push((node.local_id(), t.to, buf[..t.len].to_vec()));
            }
            while let Some(event) = node.poll_event() {
                if done(&event) {
                    return true;
                }
            }
        }
        if wire.is_empty() {
            let Some(next) = nodes.iter().filter_map(Node::poll_timeout).min() else {
                return false;
            };
            *now = next;
            for node in nodes.iter_mut() {
                node.handle_timeout(*now);
            }
        }
        for (from, to, bytes) in wire {
            let index = (to.get() - 1) as usize;
            nodes[index].handle_datagram(*now, from, &bytes).unwrap();
        }
    }
    false
}

fn acquired(event: &Event) -> bool {
    matches!(
        event,
        Event::Leadership(Sequenced {
            event: LeadershipEvent::Acquired { .. },
            ..
        })
    )
}

#[test]
fn a_datagram_without_a_known_channel_is_refused_and_counted() {
    let mut n = lone_voter();
    let now = Instant::ZERO;
    assert_eq!(
        n.handle_datagram(now, id(2), &[]),
        Err(DatagramError::Channel(ChannelError::Empty))
    );
    assert_eq!(
        n.handle_datagram(now, id(2), &[7, 1, 2, 3]),
        Err(DatagramError::Channel(ChannelError::Unknown { byte: 7 }))
    );
    assert_eq!(n.stats().channel_refused, 2);
    // Nothing reached a component.
    assert_eq!(n.membership().stats().datagrams_refused, 0);
    assert_eq!(n.stats().lease_refused, 0);
}

#[test]
fn every_transmit_carries_its_channel_byte() {
    let now = Instant::ZERO;
    let mut a = node(1);
    a.join(now, &[id(2)]);
    let mut buf = Vec::new();
    let t = a
        .poll_transmit(now, &mut buf)
        .expect("a join asks its seed");
    assert_eq!(t.to, id(2));
    let (channel, payload) = Channel::split(&buf[..t.len]).unwrap();
    assert_eq!(channel, Channel::Membership);
    // The payload is membership's own datagram: another node's membership takes it.
    let mut b = node(2);
    b.handle_datagram(now, id(1), &buf[..t.len]).unwrap();
    assert_eq!(b.membership().stats().datagrams_received, 1);
    assert!(!payload.is_empty());
}

/// A one-voter group on the node that asks: the request to its own voter, the grant and every
/// answer go round in-process; the host sees no datagram at all.
#[test]
fn a_node_talks_to_its_own_voter_in_process() {
    let mut nodes = [lone_voter()];
    let mut now = Instant::ZERO;
    assert!(run_until(&mut nodes, &mut now, 2_000, acquired));
    let n = &nodes[0];
    assert!(n.holds(now, &Scope::global_control()).is_some());
    assert!(n.stats().self_delivered >= 2, "{:?}", n.stats());
    assert_eq!(n.stats().lease_refused, 0);
    // Within the settle of the input that made it: nothing left for the next input.
    assert_eq!(n.stats().self_delivery_rounds_exhausted, 0);
}

/// The campaign is wired to the node's own voter: while it leads, acquisitions wait one retry
/// longer, so another node's request (which crosses the network) wins even when both ask at
/// the same instant.
#[test]
fn the_voters_node_lets_another_contender_win() {
    let now0 = Instant::ZERO;
    let client = |n: Node| {
        n.with_lease_client(
            now0,
            LeaseConfig::default(),
            &[id(1)],
            Campaign::new(TTL, RETRY),
        )
    };
    let a = client(
        node(1)
            .with_voter(now0, LeaseConfig::default(), &[id(1)])
            .unwrap(),
    );
    let mut nodes = [a, client(node(2))];
    let mut now = now0;
    assert!(run_until(&mut nodes, &mut now, 5_000, leader_known));
    // Elected: both contend from the same instant.
    assert!(nodes[0].lease_group().unwrap().is_leader());
    for n in &mut nodes {
        n.enter_campaign(now, Scope::global_control());
    }
    let mut holder = None;
    assert!(run_until(&mut nodes, &mut now, 5_000, |e| {
        if let Event::Group(Sequenced {
            event: GroupEvent::Granted { holder: h, .. },
            ..
        }) = e
        {
            holder = Some(*h);
            true
        } else {
            false
        }
    }));
    assert_eq!(holder, Some(id(2)));
}

/// Whether an event says the group has a leader.
fn leader_known(event: &Event) -> bool {
    matches!(
        event,
        Event::Group(Sequenced {
            event: GroupEvent::LeaderChanged {
                leader: Some(_),
                ..
            },
            ..
        })
    )
}

/// Membership is wired to the campaign: a holder that releases and leaves is seen `Left`, and
/// a contender refused while it held the scope asks again at once, not when the holder's lease
/// would have run out.
#[test]
fn a_holder_that_leaves_is_asked_after_at_once() {
    const LONG_TTL: Duration = Duration::from_secs(30);
    let now0 = Instant::ZERO;
    let scope = Scope::global_control();
    let client = |n: Node| {
        n.with_lease_client(
            now0,
            LeaseConfig::default(),
            &[id(1)],
            Campaign::new(LONG_TTL, RETRY),
        )
    };
    let voter = node(1)
        .with_voter(now0, LeaseConfig::default(), &[id(1)])
        .unwrap();
    let mut nodes = [voter, client(node(2)), client(node(3))];
    for n in &mut nodes[1..] {
        n.join(now0, &[id(1)]);
    }
    let mut now = now0;
    nodes[1].enter_campaign(now, scope.clone());
    assert!(run_until(&mut nodes, &mut now, 20_000, acquired));
    assert!(nodes[1].holds(now, &scope).is_some());
    // Node 3 asks and is refused: node 2 holds it for another 30 s.
    nodes[2].enter_campaign(now, scope.clone());
    let refused = |e: &Event| {
        matches!(
            e,
            Event::Leadership(Sequenced {
                event: LeadershipEvent::Failed {
                    error: LeaseError::Held { .. },
                    ..
                },
                ..
            })
        )
    };
    assert!(run_until(&mut nodes, &mut now, 20_000, refused));
    // Node 2 shuts down gracefully: releases, then leaves.
    nodes[1].withdraw_campaign(&scope);
    nodes[1].release(now, &scope).unwrap();
    nodes[1].leave(now);
    let left_at = now;
    assert!(run_until(&mut nodes, &mut now, 50_000, acquired));
    assert!(nodes[2].holds(now, &scope).is_some());
    let waited = now.saturating_duration_since(left_at);
    assert!(
        waited < LONG_TTL / 4,
        "node 3 waited {waited:?} for a lease released at the leave"
    );
}

#[test]
fn a_lease_datagram_for_a_state_machine_the_node_lacks_is_refused() {
    // Node 2 asks voter 1, which runs no client: its answer is fine, but a request sent to a
    // node without a voter is refused as `NotRunning`.
    let now = Instant::ZERO;
    let mut asker = node(2).with_lease_client(
        now,
        LeaseConfig::default(),
        &[id(3)],
        Campaign::new(TTL, RETRY),
    );
    asker
        .acquire(now, Scope::global_control(), TTL)
        .expect("a valid request");
    let mut buf = Vec::new();
    let t = asker.poll_transmit(now, &mut buf).expect("a request");
    assert_eq!(t.to, id(3));
    let mut plain = node(3);
    assert_eq!(
        plain.handle_datagram(now, id(2), &buf[..t.len]),
        Err(DatagramError::NotRunning {
            recipient: Recipient::Group
        })
    );
    assert_eq!(plain.stats().lease_refused, 1);
    // Commands need a client.
    assert_eq!(
        plain.acquire(now, Scope::global_control(), TTL),
        Err(CommandError::NoLeaseClient)
    );
}

#[test]
fn child_seeds_do_not_depend_on_construction_order() {
    let now = Instant::ZERO;
    let voters = [id(1)];
    let build = |voter_first: bool| {
        let n = node(1);
        let with_client = |n: Node| {
            n.with_lease_client(
                now,
                LeaseConfig::default(),
                &voters,
                Campaign::new(TTL, RETRY),
            )
        };
        if voter_first {
            with_client(n.with_voter(now, LeaseConfig::default(), &voters).unwrap())
        } else {
            with_client(n)
                .with_voter(now, LeaseConfig::default(), &voters)
                .unwrap()
        }
    };
    let (a, b) = (build(true), build(false));
    let ticks = |n: &Node| n.lease_group().unwrap().randomized_election_ticks();
    assert_eq!(ticks(&a), ticks(&b));
    assert_eq!(a.poll_timeout(), b.poll_timeout());
    assert_ne!(
        child_seed(5, VOTER_SEED_STREAM),
        child_seed(5, CLIENT_SEED_STREAM)
    );
    assert_ne!(
        child_seed(5, VOTER_SEED_STREAM),
        child_seed(6, VOTER_SEED_STREAM)
    );
    assert_ne!(child_seed(5, VOTER_SEED_STREAM), 5);
}

proptest! {
    /// Any bytes on any channel: refused or taken, never a panic.
    #[test]
    fn arbitrary_datagrams_never_panic(
        datagrams in proptest::collection::vec(
            (0u8..3, proptest::collection::vec(any::<u8>(), 0..200)),
            1..20,
        )
    ) {
        let mut n = lone_voter();
        let mut buf = Vec::new();
        for (channel, mut bytes) in datagrams {
            bytes.insert(0, channel);
            let _ = n.handle_datagram(Instant::ZERO, id(2), &bytes);
            while n.poll_transmit(Instant::ZERO, &mut buf).is_some() {}
            while n.poll_event().is_some() {}
        }
    }
}

// ---- shards ------------------------------------------------------------------------------------

mod shards {
    use super::*;
    use crate::lease::Term;
    use crate::shard::{Instruction, ShardConfig, ShardEvent, ShardId};

    const SHARDS: u32 = 40;

    fn config() -> ShardConfig {
        ShardConfig::new("orders", SHARDS).unwrap()
    }

    /// Node 1: the only voter (and the coordinator); nodes 2..=n: members, joined and announced.
    fn mesh(n: u64) -> Vec<Node> {
        let now = Instant::ZERO;
        let mut nodes = vec![
            node(1)
                .with_voter(now, LeaseConfig::default(), &[id(1)])
                .unwrap()
                .with_shards(now, config()),
        ];
        for k in 2..=n {
            nodes.push(member(k));
        }
        nodes
    }

    fn member(k: u64) -> Node {
        let now = Instant::ZERO;
        let mut m = node(k)
            .with_lease_client(
                now,
                LeaseConfig::default(),
                &[id(1)],
                Campaign::new(TTL, RETRY),
            )
            .with_shards(now, config());
        m.join(now, &[id(1)]);
        m
    }

    /// Runs with instant delivery until `until` (virtual), recording every shard event.
    fn run_for(
        nodes: &mut [Node],
        now: &mut Instant,
        until: Instant,
        events: &mut Vec<(NodeId, ShardEvent)>,
    ) {
        let mut buf = Vec::new();
        for _ in 0..2_000_000 {
            let mut wire = Vec::new();
            for node in nodes.iter_mut() {
                while let Some(t) = node.poll_transmit(*now, &mut buf) {
                    wire.push((node.local_id(), t.to, buf[..t.len].to_vec()));
                }
                while let Some(event) = node.poll_event() {
                    if let Event::Shard(e) = event {
                        events.push((node.local_id(), e));
                    }
                }
            }
            if wire.is_empty() {
                let next = nodes.iter().filter_map(Node::poll_timeout).min().unwrap();
                if next > until {
                    *now = until;
                    return;
                }
                *now = next;
                for node in nodes.iter_mut() {
                    node.handle_timeout(*now);
                }
            }
            for (from, to, bytes) in wire {
                if let Some(n) = nodes.get_mut((to.get() - 1) as usize) {
                    n.handle_datagram(*now, from, &bytes).unwrap();
                }
            }
        }
        panic!("no progress in 2,000,000 steps");
    }

    fn secs(s: u64) -> Duration {
        Duration::from_secs(s)
    }

    fn counts(nodes: &[Node], now: Instant) -> Vec<usize> {
        nodes.iter().map(|n| n.shards_held(now)).collect()
    }

    fn placed(nodes: &mut [Node], now: &mut Instant, events: &mut Vec<(NodeId, ShardEvent)>) {
        for n in nodes.iter_mut().skip(1) {
            n.join_shards(*now).unwrap();
        }
        let until = *now + secs(20);
        run_for(nodes, now, until, events);
        let c = nodes[0].shard_coordinator().unwrap();
        assert!(c.term().is_some(), "the voter leads and coordinates");
        assert!(c.is_idle());
        let bounds = c.bounds().unwrap();
        let held = counts(nodes, *now);
        assert_eq!(held.iter().sum::<usize>(), SHARDS as usize, "{held:?}");
        for (n, &h) in held.iter().enumerate().skip(1) {
            assert!(bounds.contains(h), "node {} holds {h}: {bounds:?}", n + 1);
            assert_eq!(c.map().owned_count(id(n as u64 + 1)), h);
        }
    }

    #[test]
    fn shards_are_placed_within_the_bound_then_a_drain_hands_them_over() {
        let mut nodes = mesh(5);
        let mut now = Instant::ZERO;
        let mut events = Vec::new();
        placed(&mut nodes, &mut now, &mut events);
        let before = counts(&nodes, now);
        events.clear();
        nodes[1].drain_shards(now).unwrap();
        let until = now + secs(20);
        run_for(&mut nodes, &mut now, until, &mut events);
        assert!(events.contains(&(id(2), ShardEvent::Drained)), "{events:?}");
        assert!(nodes[1].shards_drained(now));
        let after = counts(&nodes, now);
        assert_eq!(after[1], 0);
        assert_eq!(after.iter().sum::<usize>(), SHARDS as usize);
        // Exactly node 2's shards moved, each by a graceful transfer (a new owner at once,
        // never an unowned shard).
        let moved: Vec<&ShardEvent> = events
            .iter()
            .filter_map(|(_, e)| matches!(e, ShardEvent::OwnerChanged { .. }).then_some(e))
            .collect();
        assert_eq!(moved.len(), before[1], "{moved:?}");
        for e in moved {
            let ShardEvent::OwnerChanged {
                from, to, planned, ..
            } = e
            else {
                unreachable!()
            };
            assert_eq!((*from, *planned), (Some(id(2)), true));
            assert!(to.is_some());
        }
        assert!(nodes[0].shard_coordinator().unwrap().is_drained(id(2)));
    }

    #[test]
    fn a_member_that_joins_takes_the_fewest_moves() {
        let mut nodes = mesh(5);
        let mut now = Instant::ZERO;
        let mut events = Vec::new();
        placed(&mut nodes, &mut now, &mut events);
        // A fifth member: 40 shards over 5, bounds 7..=9 (mean 8, tolerance 1): it needs 7.
        let mut m = member(6);
        m.join(now, &[id(1)]);
        nodes.push(m);
        let until = now + secs(10);
        run_for(&mut nodes, &mut now, until, &mut events);
        events.clear();
        nodes[5].join_shards(now).unwrap();
        let until = now + secs(20);
        run_for(&mut nodes, &mut now, until, &mut events);
        let moves = events
            .iter()
            .filter(|(_, e)| matches!(e, ShardEvent::OwnerChanged { to: Some(_), .. }))
            .count();
        let planned: usize = events
            .iter()
            .filter_map(|(_, e)| match e {
                ShardEvent::Planned { moves, .. } => Some(*moves),
                _ => None,
            })
            .sum();
        assert_eq!(counts(&nodes, now)[5], 7);
        assert_eq!(moves, 7, "{events:?}");
        assert_eq!(planned, 7);
    }

    #[test]
    fn a_member_follows_only_a_voter_at_the_highest_term() {
        let mut nodes = mesh(3);
        let mut now = Instant::ZERO;
        let mut events = Vec::new();
        placed(&mut nodes, &mut now, &mut events);
        let shard = ShardId::new("orders", 0).unwrap();
        let owner = nodes[0]
            .shard_coordinator()
            .unwrap()
            .map()
            .owner(&shard)
            .unwrap();
        let other = if owner == id(2) { id(3) } else { id(2) };
        let term = nodes[0].lease_group().unwrap().term();
        let mut buf = vec![Channel::Shard.byte()];
        Instruction {
            term: Term::new(term.get() + 100),
            shard: shard.clone(),
            from: Some(owner),
            to: other,
        }
        .encode(&mut buf);
        let o = (owner.get() - 1) as usize;
        // From a non-voter: ignored, even at a higher term.
        nodes[o].handle_datagram(now, other, &buf).unwrap();
        let ignored = nodes[o]
            .shard_member()
            .unwrap()
            .stats()
            .instructions_ignored;
        assert_eq!(ignored, 1);
        assert!(
            nodes[o]
                .holds(now, &Scope::new(&shard.to_string()).unwrap())
                .is_some()
        );
        // Garbage on the shard channel is refused and counted.
        assert!(matches!(
            nodes[o].handle_datagram(now, id(1), &[Channel::Shard.byte(), 9]),
            Err(DatagramError::Shard(_))
        ));
        assert_eq!(nodes[o].stats().shard_refused, 1);
        // A voter's node has no member: refused.
        assert_eq!(
            nodes[0].handle_datagram(now, id(1), &buf),
            Err(DatagramError::NoShardMember)
        );
        // From the voter at a higher term: followed, the shard is handed over.
        nodes[o].handle_datagram(now, id(1), &buf).unwrap();
        let until = now + secs(2);
        run_for(&mut nodes, &mut now, until, &mut events);
        let c = nodes[0].shard_coordinator().unwrap();
        assert_eq!(c.map().owner(&shard), Some(other));
        // An older term is ignored from then on, even from the voter.
        let mut old = vec![Channel::Shard.byte()];
        Instruction {
            term,
            shard: ShardId::new("orders", 1).unwrap(),
            from: None,
            to: owner,
        }
        .encode(&mut old);
        let ignored = nodes[o]
            .shard_member()
            .unwrap()
            .stats()
            .instructions_ignored;
        nodes[o].handle_datagram(now, id(1), &old).unwrap();
        let member = nodes[o].shard_member().unwrap();
        assert_eq!(member.stats().instructions_ignored, ignored + 1);
        assert_eq!(member.wants().count(), 0);
    }

    #[test]
    fn rebalance_needs_the_acting_coordinator_and_a_dry_run_moves_nothing() {
        let mut nodes = mesh(3);
        let mut now = Instant::ZERO;
        let mut events = Vec::new();
        placed(&mut nodes, &mut now, &mut events);
        assert!(matches!(
            nodes[1].rebalance_shards(true),
            Err(CommandError::NotCoordinator { .. })
        ));
        let plan = nodes[0].rebalance_shards(true).unwrap();
        assert!(plan.is_empty(), "balanced already: {plan:?}");
        // A drain announced but not yet gossiped: the dry run still plans from the pool the
        // coordinator last saw, and nothing moves.
        assert!(nodes[0].shard_coordinator().unwrap().is_idle());
    }
}
