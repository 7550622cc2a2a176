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

/// Node 1, the one voter, and nodes 2 and 3 with lease clients campaigning with `ttl`, at
/// virtual time zero.
fn voter_and_two_clients(ttl: Duration) -> [Node; 3] {
    let now0 = Instant::ZERO;
    let client = |n: Node| {
        n.with_lease_client(
            now0,
            LeaseConfig::default(),
            &[id(1)],
            Campaign::new(ttl, RETRY),
        )
    };
    let voter = node(1)
        .with_voter(now0, LeaseConfig::default(), &[id(1)])
        .unwrap();
    [voter, client(node(2)), client(node(3))]
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
    let mut nodes = voter_and_two_clients(LONG_TTL);
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
    // A voter answers; the answer given to a node without a client is refused the same way.
    let mut voters = [
        node(1),
        node(2),
        node(3)
            .with_voter(now, LeaseConfig::default(), &[id(3)])
            .unwrap(),
    ];
    let mut at = now;
    assert!(run_until(&mut voters, &mut at, 5_000, leader_known));
    let request = buf[..t.len].to_vec();
    voters[2].handle_datagram(at, id(2), &request).unwrap();
    let mut answer = None;
    for _ in 0..1_000 {
        if let Some(t) = voters[2].poll_transmit(at, &mut buf) {
            answer = Some(t);
            break;
        }
        at = voters[2].poll_timeout().unwrap();
        voters[2].handle_timeout(at);
    }
    let t = answer.expect("an answer");
    assert_eq!(t.to, id(2));
    let mut other = node(4);
    assert_eq!(
        other.handle_datagram(now, id(3), &buf[..t.len]),
        Err(DatagramError::NotRunning {
            recipient: Recipient::Client
        })
    );
    assert_eq!(other.stats().lease_refused, 1);
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
    use crate::shard::{Announce, Instruction, ShardConfig, ShardEvent, ShardId};

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
        run_with_down(nodes, now, until, events, &[]);
    }

    /// [`run_for`] with the nodes in `down` crashed: they neither run nor receive.
    fn run_with_down(
        nodes: &mut [Node],
        now: &mut Instant,
        until: Instant,
        events: &mut Vec<(NodeId, ShardEvent)>,
        down: &[u64],
    ) {
        let up = |n: &Node| !down.contains(&n.local_id().get());
        let mut buf = Vec::new();
        for _ in 0..2_000_000 {
            let mut wire = Vec::new();
            for node in nodes.iter_mut().filter(|n| up(n)) {
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
                let next = nodes
                    .iter()
                    .filter(|n| up(n))
                    .filter_map(Node::poll_timeout)
                    .min()
                    .unwrap();
                if next > until {
                    *now = until;
                    return;
                }
                // A timeout already due (a parked gossip timer with updates waiting asks for an
                // instant of its grid that may have passed) is handled now: time never goes back.
                *now = next.max(*now);
                for node in nodes.iter_mut().filter(|n| up(n)) {
                    node.handle_timeout(*now);
                }
            }
            for (from, to, bytes) in wire {
                if down.contains(&to.get()) {
                    continue;
                }
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

    /// A crashed member's shards move once their leases expire, while the coordinator still
    /// holds it suspect: a suspect is no target, so they are not planned back onto it (it owns
    /// the fewest once its leases expired) to wait for the dead verdict, seconds later. On real
    /// nodes that wait was 4.8 s of a shard with no owner.
    #[test]
    fn a_crashed_members_shards_move_before_it_is_declared_dead() {
        let mut nodes = mesh(4);
        let (mut now, mut events) = (Instant::ZERO, Vec::new());
        placed(&mut nodes, &mut now, &mut events);
        let map = |nodes: &[Node]| nodes[0].shard_coordinator().unwrap().map().clone();
        assert!(map(&nodes).owned_count(id(4)) > 0, "node 4 holds shards");
        let crashed = now;
        while map(&nodes).owned_count(id(4)) > 0
            || map(&nodes).iter().any(|(_, a)| a.owner.is_none())
        {
            let until = now + Duration::from_millis(100);
            run_with_down(&mut nodes, &mut now, until, &mut events, &[4]);
            assert!(now < crashed + secs(30), "node 4's shards never moved");
        }
        let state = nodes[0].membership().member(id(4)).map(|m| m.state);
        assert_eq!(
            state,
            Some(MemberState::Suspect),
            "the shards moved {:?} after the crash",
            now - crashed
        );
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

    /// A member that leaves without draining releases its shards at once; the others take
    /// them up.
    #[test]
    fn a_member_that_leaves_releases_its_shards() {
        let mut nodes = mesh(4);
        let mut now = Instant::ZERO;
        let mut events = Vec::new();
        placed(&mut nodes, &mut now, &mut events);
        assert!(nodes[1].shards_held(now) > 0);
        nodes[1].leave(now);
        assert_eq!(nodes[1].shards_held(now), 0, "released at the leave");
        let until = now + secs(20);
        run_for(&mut nodes, &mut now, until, &mut events);
        let held = counts(&nodes, now);
        assert_eq!(held[1], 0);
        assert_eq!(held.iter().sum::<usize>(), SHARDS as usize, "{held:?}");
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
        assert!(nodes[o].holds(now, &shard.scope()).is_some());
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
        // An announce reaches only a coordinator: a member's node refuses it.
        let mut announce = vec![Channel::Shard.byte()];
        ShardMessage::Announce(Announce {
            role: ShardRole::Member,
        })
        .encode(&mut announce);
        assert_eq!(
            nodes[1].handle_datagram(now, id(3), &announce),
            Err(DatagramError::NoCoordinator)
        );
        assert_eq!(nodes[1].stats().shard_refused, 1);
        // A drain announced but not yet gossiped: the dry run still plans from the pool the
        // coordinator last saw, and nothing moves.
        assert!(nodes[0].shard_coordinator().unwrap().is_idle());
        // Asked for real, the balanced map still gives an empty plan.
        let plan = nodes[0].rebalance_shards(false).unwrap();
        assert!(plan.is_empty(), "nothing to move: {plan:?}");
    }
}

// ---- commands and counters ---------------------------------------------------------------------

/// A node asked for what it does not run refuses with the error that names the missing part,
/// and sends, queues and counts nothing.
#[test]
fn commands_for_parts_a_node_lacks_are_refused_and_change_nothing() {
    let now = Instant::ZERO;
    let mut plain = node(3);
    let scope = Scope::global_control();
    let before = plain.poll_timeout();
    for refused in [
        plain.acquire(now, scope.clone(), TTL),
        plain.renew(now, scope.clone()),
        plain.release(now, &scope),
        plain.transfer(now, scope.clone(), id(1)),
        plain.query(now, scope.clone()),
    ] {
        assert_eq!(refused, Err(CommandError::NoLeaseClient));
    }
    assert_eq!(plain.join_shards(now), Err(CommandError::NoShardMember));
    assert_eq!(plain.drain_shards(now), Err(CommandError::NoShardMember));
    let error = plain.rebalance_shards(false).unwrap_err();
    assert_eq!(error, CommandError::NotCoordinator { leader: None });
    assert_eq!(
        error.to_string(),
        "this node does not coordinate shards now: ask the Raft leader"
    );
    // Without a client there is no campaign: entering one does nothing.
    plain.enter_campaign(now, scope.clone());
    plain.withdraw_campaign(&scope);
    assert!(plain.campaign().is_none());
    assert_eq!(plain.poll_timeout(), before);
    // Nothing to record, nothing held, nothing sent.
    plain.record_durable_writes();
    assert!(plain.poll_durable().is_none());
    assert!(plain.holds(now, &scope).is_none());
    assert_eq!(plain.held().count(), 0);
    assert_eq!(plain.shards_held(now), 0);
    assert!(!plain.shards_drained(now));
    let mut buf = Vec::new();
    assert!(plain.poll_transmit(now, &mut buf).is_none());
    assert!(plain.poll_event().is_none());
    assert_eq!(plain.stats(), NodeStats::default());
    assert!(plain.into_durable().is_none());
}

/// A voter that leads but runs no coordinator names itself as the leader to ask.
#[test]
fn rebalance_on_a_voter_without_shards_names_the_leader() {
    let mut nodes = [node(1)
        .with_voter(Instant::ZERO, LeaseConfig::default(), &[id(1)])
        .unwrap()];
    let mut now = Instant::ZERO;
    assert!(run_until(&mut nodes, &mut now, 5_000, leader_known));
    let error = nodes[0].rebalance_shards(true).unwrap_err();
    assert_eq!(
        error,
        CommandError::NotCoordinator {
            leader: Some(id(1))
        }
    );
    assert!(
        error.to_string().ends_with("ask the Raft leader (node-1)"),
        "{error}"
    );
}

/// The lease commands go through the node to its client and on to the voters: a renewal, a
/// read, a transfer to another node and a release each come back as the client's event. The
/// client's refusals come back as `CommandError::Lease`, with nothing sent.
#[test]
fn lease_commands_reach_the_voters_and_their_refusals_come_back() {
    let now0 = Instant::ZERO;
    let mut nodes = voter_and_two_clients(TTL);
    let mut now = now0;
    assert!(run_until(&mut nodes, &mut now, 5_000, leader_known));
    let scope = Scope::new("jobs/nightly").unwrap();
    let leadership = |e: &Event| match e {
        Event::Leadership(s) => Some(s.event.clone()),
        _ => None,
    };

    // Refused by the client before anything leaves.
    let sent = nodes[1].lease_client().unwrap().stats().attempts;
    assert!(matches!(
        nodes[1].renew(now, scope.clone()),
        Err(CommandError::Lease(LeaseError::NotHeld { .. }))
    ));
    assert!(matches!(
        nodes[1].acquire(now, scope.clone(), Duration::ZERO),
        Err(CommandError::Lease(LeaseError::InvalidTtl { .. }))
    ));
    assert_eq!(nodes[1].lease_client().unwrap().stats().attempts, sent);

    nodes[1].acquire(now, scope.clone(), TTL).unwrap();
    assert!(matches!(
        nodes[1].acquire(now, scope.clone(), TTL),
        Err(CommandError::Lease(LeaseError::InFlight { .. }))
    ));
    assert!(run_until(&mut nodes, &mut now, 5_000, acquired));
    let token = nodes[1].holds(now, &scope).expect("node 2 holds it");
    assert_eq!(nodes[1].held().count(), 1);
    assert!(matches!(
        nodes[1].transfer(now, scope.clone(), id(2)),
        Err(CommandError::Lease(LeaseError::InvalidTarget { .. }))
    ));

    nodes[1].renew(now, scope.clone()).unwrap();
    let mut seen = None;
    assert!(run_until(&mut nodes, &mut now, 5_000, |e| {
        seen = leadership(e);
        matches!(seen, Some(LeadershipEvent::Renewed { .. }))
    }));
    assert!(matches!(seen, Some(LeadershipEvent::Renewed { token: t, .. }) if t == token));

    nodes[2].query(now, scope.clone()).unwrap();
    assert!(run_until(&mut nodes, &mut now, 5_000, |e| {
        seen = leadership(e);
        matches!(seen, Some(LeadershipEvent::Queried { .. }))
    }));
    let Some(LeadershipEvent::Queried {
        lease: Some(lease), ..
    }) = &seen
    else {
        panic!("no lease read: {seen:?}");
    };
    assert_eq!((lease.holder, lease.token), (id(2), token));

    nodes[1].transfer(now, scope.clone(), id(3)).unwrap();
    assert!(
        nodes[1].holds(now, &scope).is_none(),
        "not usable in transfer"
    );
    assert!(run_until(&mut nodes, &mut now, 5_000, acquired));
    let new_token = nodes[2].holds(now, &scope).expect("node 3 took it over");
    assert!(new_token > token);

    nodes[2].release(now, &scope).unwrap();
    assert!(nodes[2].holds(now, &scope).is_none(), "released at once");
    assert!(run_until(&mut nodes, &mut now, 5_000, |e| {
        matches!(leadership(e), Some(LeadershipEvent::Released { token: t, .. }) if t == new_token)
    }));
    assert!(nodes[0].lease_group().unwrap().table().is_empty());
}

/// Metadata writes go through the node to membership and come back as its events.
#[test]
fn metadata_commands_reach_membership() {
    let now = Instant::ZERO;
    let mut n = node(1);
    let v1 = n.set_metadata(now, "addr", b"10.0.0.1:7000").unwrap();
    let v2 = n.delete_metadata(now, "addr").unwrap();
    assert!(v2 > v1);
    let mut versions = Vec::new();
    while let Some(event) = n.poll_event() {
        if let Event::Membership(membership::Event::MetadataChanged { node, version }) = event {
            assert_eq!(node, id(1));
            versions.push(version);
        }
    }
    assert_eq!(versions, [v1, v2]);
    assert!(
        n.membership()
            .metadata(id(1))
            .unwrap()
            .get("addr")
            .is_none()
    );
    assert!(matches!(
        n.set_metadata(now, "", b"x"),
        Err(MetadataError::BadKeyLength { len: 0, .. })
    ));
    assert!(
        n.poll_event().is_none(),
        "a refused write announces nothing"
    );
    // A node that left writes nothing more.
    n.leave(now);
    while n.poll_event().is_some() {}
    assert_eq!(n.set_metadata(now, "addr", b"x"), Err(MetadataError::Left));
    assert_eq!(n.delete_metadata(now, "addr"), Err(MetadataError::Left));
    assert!(n.poll_event().is_none());
}

/// A host that does not drain events loses the oldest, never progress, and the loss is
/// counted.
#[test]
fn undrained_events_drop_the_oldest_and_are_counted() {
    let now = Instant::ZERO;
    let mut n = node(1);
    let writes = MAX_PENDING_EVENTS + 3;
    let mut first = Vec::new();
    for i in 0..writes {
        let v = n.set_metadata(now, "k", &(i as u32).to_be_bytes()).unwrap();
        if i < 4 {
            first.push(v);
        }
    }
    assert_eq!(n.stats().events_dropped, 3);
    let Some(Event::Membership(membership::Event::MetadataChanged { version, .. })) =
        n.poll_event()
    else {
        panic!("a metadata event first");
    };
    assert_eq!(version, first[3], "the three oldest were dropped");
    let mut left = 1;
    while n.poll_event().is_some() {
        left += 1;
    }
    assert_eq!(left, MAX_PENDING_EVENTS);
}

/// A host that does not send the node's lease datagrams keeps at most
/// `MAX_LEASE_OUTBOX_DATAGRAMS` of them; the rest are dropped and counted, and the client's
/// retries stand in for them.
#[test]
fn an_undrained_lease_outbox_is_bounded_and_counted() {
    let mut now = Instant::ZERO;
    // Its only voter never answers: every attempt of every request is a datagram.
    let mut n = node(2).with_lease_client(
        now,
        LeaseConfig::default(),
        &[id(9)],
        Campaign::new(TTL, RETRY),
    );
    let attempts = |n: &Node| n.lease_client().unwrap().stats().attempts;
    let mut next = 0;
    while attempts(&n) < MAX_LEASE_OUTBOX_DATAGRAMS as u64 + 50 {
        match n.acquire(now, Scope::new(&format!("jobs/{next}")).unwrap(), TTL) {
            Ok(_) => next += 1,
            Err(CommandError::Lease(LeaseError::Overloaded { .. })) => {
                now = n.poll_timeout().unwrap();
                n.handle_timeout(now);
            }
            Err(e) => panic!("{e}"),
        }
    }
    let sent = attempts(&n);
    assert_eq!(
        n.stats().outbox_dropped,
        sent - MAX_LEASE_OUTBOX_DATAGRAMS as u64
    );
    let mut buf = Vec::new();
    let mut queued = 0;
    while let Some(t) = n.poll_transmit(now, &mut buf) {
        if Channel::split(&buf[..t.len]).unwrap().0 == Channel::Lease {
            assert_eq!(t.to, id(9));
            queued += 1;
        }
    }
    assert_eq!(queued, MAX_LEASE_OUTBOX_DATAGRAMS);
}

/// A voter's node hands its durable writes to the host, and what a crash leaves restarts the
/// voter where it stopped; a stopped voter sends nothing more and refuses Raft.
#[test]
fn a_voter_node_records_restarts_and_stops() {
    let mut now = Instant::ZERO;
    let mut n = node(1)
        .with_voter(now, LeaseConfig::default(), &[id(1)])
        .unwrap();
    n.record_durable_writes();
    let mut nodes = [n];
    let mut records = Vec::new();
    let mut leader = false;
    for _ in 0..5_000 {
        while let Some(write) = nodes[0].poll_durable() {
            records.push(write);
        }
        if run_until(&mut nodes, &mut now, 1, leader_known) {
            leader = true;
            break;
        }
    }
    assert!(leader);
    assert!(
        !records.is_empty(),
        "an election is written before it counts"
    );
    let [n] = nodes;
    let term = n.lease_group().unwrap().term();
    let durable = n.into_durable().expect("a voter leaves its Raft state");
    let restarted = node(1).with_restarted_voter(now, LeaseConfig::default(), durable);
    assert_eq!(restarted.lease_group().unwrap().term(), term);

    let mut nodes = [restarted];
    assert!(run_until(&mut nodes, &mut now, 5_000, leader_known));
    let [mut n] = nodes;
    assert!(n.lease_group().unwrap().term() > term, "a new election");
    n.stop_voter();
    assert!(n.lease_group().is_none());
    n.handle_timeout(now + Duration::from_secs(10));
    let mut buf = Vec::new();
    while let Some(t) = n.poll_transmit(now, &mut buf) {
        assert_ne!(Channel::split(&buf[..t.len]).unwrap().0, Channel::Lease);
    }
    assert!(n.into_durable().is_none());
}

/// A member added without any exchange is alive at the incarnation given; the node announces
/// its own boot incarnation.
#[test]
fn a_known_member_is_added_alive() {
    let now = Instant::ZERO;
    let mut n = Node::new(
        Config::from_profile(Profile::Lan),
        id(1),
        Incarnation::new(4),
        1,
        now,
    );
    assert_eq!(n.incarnation(), Incarnation::new(4));
    n.add_known_member(now, id(5), Incarnation::new(3));
    let m = n.membership().member(id(5)).expect("known");
    assert_eq!(
        (m.state, m.incarnation),
        (MemberState::Alive, Incarnation::new(3))
    );
}

#[test]
fn channels_have_a_byte_and_a_name() {
    for (i, channel) in Channel::VALUES.into_iter().enumerate() {
        assert_eq!(channel.byte() as usize, i);
        let mut buf = vec![9; 4];
        channel.frame(b"xy", &mut buf);
        assert_eq!(Channel::split(&buf), Ok((channel, &b"xy"[..])));
    }
    let names: Vec<String> = Channel::VALUES.iter().map(ToString::to_string).collect();
    assert_eq!(names, ["membership", "lease", "shard", "queue"]);
    assert_eq!(
        DatagramError::from(ChannelError::Unknown { byte: 7 }).to_string(),
        "unknown channel byte 7"
    );
}

/// Operator changes of the voter set through [`Node::change_voters`] (Raft §4.1 of the
/// dissertation: one server at a time), with a joining voter started by
/// [`Node::with_joining_voter`].
mod voter_changes {
    use super::*;
    use crate::lease::MAX_VOTERS;

    /// Runs `nodes` (ids 1..=n) with instant delivery for `run`; a node in `down` is crashed:
    /// it gets no input and what it would send is lost.
    fn run_to(nodes: &mut [Node], now: &mut Instant, run: Duration, down: &[u64]) {
        let until = *now + run;
        let mut buf = Vec::new();
        let up = |n: &Node| !down.contains(&n.local_id().get());
        for _ in 0..2_000_000 {
            let mut wire = Vec::new();
            for node in nodes.iter_mut().filter(|n| up(n)) {
                while let Some(t) = node.poll_transmit(*now, &mut buf) {
                    wire.push((node.local_id(), t.to, buf[..t.len].to_vec()));
                }
                while node.poll_event().is_some() {}
            }
            if wire.is_empty() {
                let next = nodes
                    .iter()
                    .filter(|n| up(n))
                    .filter_map(Node::poll_timeout)
                    .min();
                match next {
                    Some(next) if next <= until => {
                        *now = next;
                        for node in nodes.iter_mut().filter(|n| up(n)) {
                            node.handle_timeout(*now);
                        }
                    }
                    _ => {
                        *now = until;
                        return;
                    }
                }
            }
            for (from, to, bytes) in wire {
                if down.contains(&to.get()) {
                    continue;
                }
                let index = (to.get() - 1) as usize;
                // Refusals are the point of some tests; counted by the node.
                let _ = nodes[index].handle_datagram(*now, from, &bytes);
            }
        }
        panic!("the run did not reach {until:?}");
    }

    fn lease_config() -> LeaseConfig {
        LeaseConfig::default()
    }

    /// Voters 1..=3 (founders), and node 4 started as a joining voter of them when `joiner`;
    /// every node has a lease client for the founders, node 1 contends for `global-control`,
    /// and all join the mesh through node 1. Runs 5 s: a leader is elected and everyone alive.
    fn group_of_three(joiner: bool) -> (Vec<Node>, Instant) {
        group_of(3, joiner)
    }

    /// As [`group_of_three`], with voters 1..=`founders` and the joiner `founders + 1`.
    fn group_of(founders: u64, joiner: bool) -> (Vec<Node>, Instant) {
        let now = Instant::ZERO;
        let voters: Vec<NodeId> = (1..=founders).map(id).collect();
        let founders = voters.as_slice();
        let mut nodes = Vec::new();
        for n in 1..=voters.len() as u64 {
            let voter = node(n).with_voter(now, lease_config(), founders).unwrap();
            let campaign = if n == 1 {
                campaign_for(Scope::global_control())
            } else {
                Campaign::new(TTL, RETRY)
            };
            nodes.push(voter.with_lease_client(now, lease_config(), founders, campaign));
        }
        if joiner {
            nodes.push(
                node(voters.len() as u64 + 1)
                    .with_joining_voter(now, lease_config(), founders, None)
                    .with_lease_client(now, lease_config(), founders, Campaign::new(TTL, RETRY)),
            );
        }
        for n in &mut nodes[1..] {
            n.join(now, &[id(1)]);
        }
        let mut now = now;
        run_to(&mut nodes, &mut now, Duration::from_secs(5), &[]);
        (nodes, now)
    }

    fn leader_of(nodes: &[Node], down: &[u64]) -> Option<usize> {
        nodes.iter().position(|n| {
            !down.contains(&n.local_id().get())
                && n.lease_group().is_some_and(LeaseGroup::is_leader)
        })
    }

    fn voters_of(n: &Node) -> Vec<u64> {
        n.lease_group()
            .map(|g| g.voters().map(NodeId::get).collect())
            .unwrap_or_default()
    }

    /// A joining voter does not disturb the group while it waits (no election of its own, no
    /// term raised), is added, catches up from the log (the lease table included), and then
    /// votes: with the old leader down, the three voters left elect a new one only with its
    /// vote, and a lease is granted again.
    #[test]
    fn a_joining_voter_is_added_catches_up_and_votes() {
        let (mut nodes, mut now) = group_of_three(true);
        let leader = leader_of(&nodes, &[]).expect("a leader");
        let term = nodes[leader].lease_group().unwrap().term();
        let joiner = nodes[3].lease_group().unwrap();
        assert!(joiner.voters().next().is_none(), "no configuration yet");
        assert!(!joiner.is_leader());
        assert!(nodes[0].holds(now, &Scope::global_control()).is_some());
        // Ten election timeouts more: the joiner waits without a word to the group.
        run_to(&mut nodes, &mut now, Duration::from_secs(10), &[]);
        assert_eq!(leader_of(&nodes, &[]), Some(leader));
        assert_eq!(nodes[leader].lease_group().unwrap().term(), term);
        assert!(nodes[3].lease_group().unwrap().voters().next().is_none());

        nodes[leader]
            .change_voters(now, VoterChange::Add(id(4)))
            .unwrap();
        // One at a time: the second is refused while the first is not applied.
        assert_eq!(
            nodes[leader].change_voters(now, VoterChange::Remove(id(2))),
            Err(VoterChangeError::InProgress)
        );
        run_to(&mut nodes, &mut now, Duration::from_secs(1), &[]);
        for n in &nodes {
            assert_eq!(voters_of(n), [1, 2, 3, 4], "node {}", n.local_id());
        }
        let table = |n: &Node| {
            n.lease_group()
                .unwrap()
                .table()
                .get(&Scope::global_control())
                .map(|l| (l.holder, l.token))
        };
        assert_eq!(table(&nodes[3]), table(&nodes[leader]), "caught up");
        assert!(table(&nodes[3]).is_some());
        assert_eq!(
            nodes[3].lease_client().unwrap().voters(),
            [id(1), id(2), id(3), id(4)],
            "the node's own client asks the new voter set"
        );

        // The old leader goes down: three voters of four are left, a quorum of four is three,
        // so no new leader without node 4's vote.
        let down = vec![nodes[leader].local_id().get()];
        let others: Vec<u64> = (1..=3).filter(|v| !down.contains(v)).collect();
        run_to(&mut nodes, &mut now, Duration::from_secs(5), &down);
        let new = leader_of(&nodes, &down).expect("a new leader with node 4's vote");
        let new_term = nodes[new].lease_group().unwrap().term();
        assert!(new_term > term);
        // Every live voter agrees, node 4 included.
        for v in others.iter().copied().chain([4]) {
            let g = nodes[(v - 1) as usize].lease_group().unwrap();
            assert_eq!(g.leader(), Some(nodes[new].local_id()), "voter {v}");
            assert_eq!(g.term(), new_term, "voter {v}");
        }
    }

    /// A joining voter is added by a leader that was itself a joining voter once (node 4,
    /// added, then left leading a group of two when the other founders were removed): node 5,
    /// which lists node 4 among the voters it takes Raft messages from, catches up from it.
    #[test]
    fn a_voter_added_by_a_former_joiner_catches_up() {
        let (mut nodes, mut now) = group_of_three(true);
        let group = [id(1), id(2), id(3), id(4)];
        nodes.push(
            node(5)
                .with_joining_voter(now, lease_config(), &group, None)
                .with_lease_client(now, lease_config(), &group, Campaign::new(TTL, RETRY)),
        );
        nodes[4].join(now, &[id(1)]);
        run_to(&mut nodes, &mut now, Duration::from_secs(2), &[]);
        let leader = leader_of(&nodes, &[]).unwrap();
        nodes[leader]
            .change_voters(now, VoterChange::Add(id(4)))
            .unwrap();
        run_to(&mut nodes, &mut now, Duration::from_secs(1), &[]);
        // Remove the founders that do not lead, then hand leadership to node 4.
        for _ in 0..4 {
            let leader = leader_of(&nodes, &[]).unwrap();
            let lid = nodes[leader].local_id();
            let Some(other) = voters_of(&nodes[leader])
                .into_iter()
                .find(|v| *v != 4 && *v != lid.get())
            else {
                break;
            };
            nodes[leader]
                .change_voters(now, VoterChange::Remove(id(other)))
                .unwrap();
            run_to(&mut nodes, &mut now, Duration::from_secs(1), &[]);
        }
        let leader = leader_of(&nodes, &[]).unwrap();
        if nodes[leader].local_id() != id(4) {
            let lid = nodes[leader].local_id();
            let answer = nodes[leader].change_voters(now, VoterChange::Remove(lid));
            assert!(
                matches!(answer, Err(VoterChangeError::LeaderMoving { .. })),
                "{answer:?}"
            );
            run_to(&mut nodes, &mut now, Duration::from_secs(1), &[]);
        }
        let four = leader_of(&nodes, &[]).unwrap();
        assert_eq!(nodes[four].local_id(), id(4), "node 4 leads");
        assert_eq!(voters_of(&nodes[four]).len(), 2);
        nodes[four]
            .change_voters(now, VoterChange::Add(id(5)))
            .unwrap();
        run_to(&mut nodes, &mut now, Duration::from_secs(2), &[]);
        let five = nodes[4].lease_group().unwrap();
        assert!(
            voters_of(&nodes[4]).contains(&5),
            "{:?}",
            voters_of(&nodes[4])
        );
        assert_eq!(
            nodes[four].lease_group().unwrap().matched_index(id(5)),
            Some(
                five.commit_index()
                    .max(nodes[four].lease_group().unwrap().commit_index())
            ),
            "node 5 caught up"
        );
    }

    /// Founders 1-3, each node holding a lease (so Raft leadership has no better place to go
    /// among them), and nodes 4 and 5 started as joining voters of the founders. Runs 5 s.
    fn founders_holding_leases_and_two_joiners() -> (Vec<Node>, Instant) {
        let start = Instant::ZERO;
        let founders = [id(1), id(2), id(3)];
        let mut nodes = Vec::new();
        for (n, scope) in [(1, "global-control"), (2, "lock/two"), (3, "lock/three")] {
            let voter = node(n)
                .with_voter(start, lease_config(), &founders)
                .unwrap();
            let campaign = campaign_for(Scope::new(scope).unwrap());
            nodes.push(voter.with_lease_client(start, lease_config(), &founders, campaign));
        }
        for n in 4..=5 {
            nodes.push(
                node(n)
                    .with_joining_voter(start, lease_config(), &founders, None)
                    .with_lease_client(start, lease_config(), &founders, Campaign::new(TTL, RETRY)),
            );
        }
        for n in &mut nodes[1..] {
            n.join(start, &[id(1)]);
        }
        let mut now = start;
        run_to(&mut nodes, &mut now, Duration::from_secs(5), &[]);
        for (n, scope) in nodes[..3]
            .iter()
            .zip(["global-control", "lock/two", "lock/three"])
        {
            let scope = Scope::new(scope).unwrap();
            assert!(n.holds(now, &scope).is_some(), "node {}", n.local_id());
        }
        let published = nodes[0]
            .membership()
            .metadata(id(5))
            .and_then(|m| m.get(RAFT_JOIN_KEY));
        assert_eq!(
            published,
            Some(&b"1,2,3"[..]),
            "node 5's raft_join at node 1"
        );
        (nodes, now)
    }

    /// Node 5 caught up: it applied the five voters and holds the leader's commit index, and
    /// no longer publishes what it took Raft messages from as a joiner.
    fn assert_node_5_caught_up(nodes: &[Node]) {
        assert_eq!(voters_of(&nodes[4]), [1, 2, 3, 4, 5], "node 5 caught up");
        let published = |n: &Node, of: u64| {
            n.membership()
                .metadata(id(of))
                .and_then(|m| m.get(RAFT_JOIN_KEY))
                .map(<[u8]>::to_vec)
        };
        assert_eq!(published(&nodes[4], 5), None, "node 5's own view");
        assert_eq!(published(&nodes[0], 5), None, "node 1's view of node 5");
        let leader = leader_of(nodes, &[]).expect("a leader");
        let group = nodes[leader].lease_group().unwrap();
        assert_eq!(
            group.matched_index(id(5)),
            Some(group.commit_index()),
            "node 5 acknowledges the leader's log"
        );
        assert_eq!(
            nodes[4].lease_group().unwrap().commit_index(),
            group.commit_index()
        );
    }

    /// A joining voter takes Raft messages only from the voters it lists (and those its log
    /// names). Node 5 lists the founders and is added while out of reach, so no log reaches
    /// it; then node 4 is added (after node 5 was configured): caught up, and the only voter
    /// whose node holds no lease, it is where leadership would go. It does not while node 5
    /// has not caught up and would refuse it; node 5 catches up once back.
    #[test]
    fn leadership_does_not_move_to_a_voter_a_lagging_joiner_does_not_list() {
        let (mut nodes, mut now) = founders_holding_leases_and_two_joiners();
        let leader = leader_of(&nodes, &[]).expect("a leader");
        assert!(leader < 3, "a founder leads");
        nodes[leader]
            .change_voters(now, VoterChange::Add(id(5)))
            .unwrap();
        run_to(&mut nodes, &mut now, Duration::from_millis(300), &[5]);
        assert_eq!(voters_of(&nodes[leader]), [1, 2, 3, 5]);
        nodes[leader]
            .change_voters(now, VoterChange::Add(id(4)))
            .unwrap();
        run_to(&mut nodes, &mut now, Duration::from_millis(700), &[5]);
        assert_eq!(voters_of(&nodes[leader]), [1, 2, 3, 4, 5]);
        assert!(voters_of(&nodes[4]).is_empty(), "node 5 has no log yet");
        assert_ne!(
            leader_of(&nodes, &[5]),
            Some(3),
            "leadership stays off node 4, which node 5 would refuse"
        );
        run_to(&mut nodes, &mut now, Duration::from_secs(5), &[]);
        assert_node_5_caught_up(&nodes);
    }

    /// The same stall reached another way: node 4 leads (added first, it took leadership from
    /// the founders' lease holders) and adds node 5, which lists only the founders, while it is
    /// out of reach. Node 5 refuses node 4's log; node 4, having led for an election timeout
    /// without a word from it, hands leadership to a founder, from which node 5 catches up.
    #[test]
    fn a_leader_a_lagging_joiner_refuses_hands_leadership_to_one_it_lists() {
        let (mut nodes, mut now) = founders_holding_leases_and_two_joiners();
        let leader = leader_of(&nodes, &[]).expect("a leader");
        nodes[leader]
            .change_voters(now, VoterChange::Add(id(4)))
            .unwrap();
        run_to(&mut nodes, &mut now, Duration::from_secs(2), &[]);
        assert_eq!(leader_of(&nodes, &[]), Some(3), "node 4 leads");
        let transfers = nodes[3].lease_group().unwrap().stats().leadership_transfers;
        nodes[3]
            .change_voters(now, VoterChange::Add(id(5)))
            .unwrap();
        run_to(&mut nodes, &mut now, Duration::from_millis(1500), &[5]);
        assert_eq!(voters_of(&nodes[3]), [1, 2, 3, 4, 5]);
        assert!(voters_of(&nodes[4]).is_empty(), "node 5 has no log yet");
        assert!(
            nodes[3].lease_group().unwrap().stats().leadership_transfers > transfers,
            "node 4 handed leadership on"
        );
        let founder = leader_of(&nodes, &[5]).expect("a leader");
        assert!(founder < 3, "a founder leads, not node {}", founder + 1);
        run_to(&mut nodes, &mut now, Duration::from_secs(5), &[]);
        assert_node_5_caught_up(&nodes);
    }

    /// Without node 4 the same election cannot happen once it is a voter and down too: three
    /// of four voters are needed, so node 4's vote was counted above.
    #[test]
    fn with_the_new_voter_down_too_there_is_no_quorum() {
        let (mut nodes, mut now) = group_of_three(true);
        let leader = leader_of(&nodes, &[]).unwrap();
        nodes[leader]
            .change_voters(now, VoterChange::Add(id(4)))
            .unwrap();
        run_to(&mut nodes, &mut now, Duration::from_secs(1), &[]);
        assert_eq!(voters_of(&nodes[leader]), [1, 2, 3, 4]);
        let down = [nodes[leader].local_id().get(), 4];
        run_to(&mut nodes, &mut now, Duration::from_secs(5), &down);
        assert_eq!(
            leader_of(&nodes, &down),
            None,
            "2 of 4 voters are no quorum"
        );
    }

    /// Changes that would lose quorum are refused with the numbers; those that keep it pass.
    #[test]
    fn quorum_losing_changes_are_refused() {
        let (mut nodes, mut now) = group_of_three(true);
        let leader = leader_of(&nodes, &[]).unwrap();
        let follower = (0..3).find(|i| *i != leader).unwrap();
        let dead = (0..3).find(|i| *i != leader && *i != follower).unwrap();
        let dead_id = nodes[dead].local_id();
        // Only the leader proposes.
        assert_eq!(
            nodes[follower].change_voters(now, VoterChange::Add(id(4))),
            Err(VoterChangeError::NotLeader {
                leader: Some(nodes[leader].local_id())
            })
        );
        // Targets: an unknown node, a voter to add, a non-voter to remove.
        assert!(matches!(
            nodes[leader].change_voters(now, VoterChange::Add(id(9))),
            Err(VoterChangeError::NotAlive { state: None, .. })
        ));
        assert_eq!(
            nodes[leader].change_voters(now, VoterChange::Add(dead_id)),
            Err(VoterChangeError::Membership {
                node: dead_id,
                is_voter: true
            })
        );
        assert_eq!(
            nodes[leader].change_voters(now, VoterChange::Remove(id(4))),
            Err(VoterChangeError::Membership {
                node: id(4),
                is_voter: false
            })
        );
        // One voter dies; membership sees it dead after its suspicion timeout.
        let down = [dead_id.get()];
        run_to(&mut nodes, &mut now, Duration::from_secs(30), &down);
        let state = nodes[leader].membership().member(dead_id).unwrap().state;
        assert!(
            matches!(state, MemberState::Dead | MemberState::Suspect),
            "{state:?}"
        );
        let leader_now = leader_of(&nodes, &down).expect("2 of 3 keep a leader");
        let follower_id = (1..=3)
            .map(id)
            .find(|v| *v != dead_id && *v != nodes[leader_now].local_id())
            .unwrap();
        // Removing the live follower: 1 live voter of 2, a quorum of 2 is 2.
        let refused = nodes[leader_now].change_voters(now, VoterChange::Remove(follower_id));
        assert_eq!(
            refused,
            Err(VoterChangeError::WouldLoseQuorum {
                change: VoterChange::Remove(follower_id),
                live: 1,
                voters: 2,
                quorum: 2,
                live_now: {
                    let mut live = vec![nodes[leader_now].local_id().get(), follower_id.get()];
                    live.sort_unstable();
                    live
                },
            })
        );
        let message = refused.unwrap_err().to_string();
        assert!(
            message.contains("would leave 1 live voter(s) of 2, and a quorum of 2 is 2"),
            "{message}"
        );
        // Adding node 4 now: 2 live voters of an enlarged 4, a quorum of 4 is 3.
        let refused = nodes[leader_now].change_voters(now, VoterChange::Add(id(4)));
        assert!(
            matches!(
                refused,
                Err(VoterChangeError::WouldLoseQuorum {
                    live: 2,
                    voters: 4,
                    quorum: 3,
                    ..
                })
            ),
            "{refused:?}"
        );
        let message = refused.unwrap_err().to_string();
        assert!(
            message.starts_with("refused: adding node-4 would leave 2 live voter(s) of 4"),
            "{message}"
        );
        assert_eq!(voters_of(&nodes[leader_now]), [1, 2, 3], "nothing proposed");
        // Removing the dead voter keeps the quorum (2 live of 2), then adding node 4 too
        // (2 live of 3).
        nodes[leader_now]
            .change_voters(now, VoterChange::Remove(dead_id))
            .unwrap();
        run_to(&mut nodes, &mut now, Duration::from_secs(1), &down);
        let mut expected: Vec<u64> = (1..=3).filter(|v| *v != dead_id.get()).collect();
        assert_eq!(voters_of(&nodes[leader_now]), expected);
        nodes[leader_now]
            .change_voters(now, VoterChange::Add(id(4)))
            .unwrap();
        run_to(&mut nodes, &mut now, Duration::from_secs(1), &down);
        expected.push(4);
        assert_eq!(voters_of(&nodes[leader_now]), expected);
        assert_eq!(voters_of(&nodes[3]), expected, "node 4 caught up");
    }

    /// Node id 0 is no node (ids start at 1; Raft reserves 0): adding it is refused as not an
    /// alive member, before the group is asked, even when membership holds a member of that id
    /// alive (a peer configured with id 0).
    #[test]
    fn node_zero_is_never_added() {
        let (mut nodes, now) = group_of_three(false);
        let leader = leader_of(&nodes, &[]).unwrap();
        let add_zero = |node: &mut Node| node.change_voters(now, VoterChange::Add(id(0)));
        assert_eq!(
            add_zero(&mut nodes[leader]),
            Err(VoterChangeError::NotAlive {
                node: id(0),
                state: None
            })
        );
        nodes[leader]
            .membership
            .add_known_member(now, id(0), Incarnation::new(1));
        assert_eq!(
            add_zero(&mut nodes[leader]),
            Err(VoterChangeError::NotAlive {
                node: id(0),
                state: Some(MemberState::Alive)
            })
        );
        assert!(!nodes[leader].lease_group().unwrap().has_pending_change());
    }

    /// The voter set keeps 1..=MAX_VOTERS voters: the last voter cannot remove itself (the group
    /// would have nobody to hold the lease table), and a full group takes no eighth voter, even
    /// an alive joining one with every voter up (no quorum is at stake: the bound is the group's).
    #[test]
    fn the_voter_set_keeps_between_one_and_max_voters() {
        let (mut nodes, now) = group_of(1, false);
        assert_eq!(
            leader_of(&nodes, &[]),
            Some(0),
            "a group of one leads itself"
        );
        let refused = nodes[0].change_voters(now, VoterChange::Remove(id(1)));
        assert_eq!(
            refused,
            Err(VoterChangeError::VoterCount {
                voters: 0,
                max: MAX_VOTERS
            })
        );
        assert_eq!(
            refused.unwrap_err().to_string(),
            format!("the group would have 0 voters: it keeps 1..={MAX_VOTERS}")
        );
        assert_eq!(voters_of(&nodes[0]), [1]);

        let full = MAX_VOTERS as u64;
        let (mut nodes, now) = group_of(full, true);
        let leader = leader_of(&nodes, &[]).unwrap();
        let joiner = id(full + 1);
        assert_eq!(
            nodes[leader].membership().member(joiner).map(|m| m.state),
            Some(MemberState::Alive)
        );
        assert_eq!(
            nodes[leader].change_voters(now, VoterChange::Add(joiner)),
            Err(VoterChangeError::VoterCount {
                voters: MAX_VOTERS + 1,
                max: MAX_VOTERS
            })
        );
        assert_eq!(voters_of(&nodes[leader]).len(), MAX_VOTERS);
    }

    /// While the leader hands leadership over (it was asked to remove itself), raft-rs drops
    /// every proposal, voter changes included: the next change is refused as in progress, not
    /// lost, and nothing changes; the new leader takes it.
    #[test]
    fn no_change_is_taken_while_leadership_is_handed_over() {
        let (mut nodes, mut now) = group_of_three(true);
        let leader = leader_of(&nodes, &[]).unwrap();
        let leader_id = nodes[leader].local_id();
        assert!(matches!(
            nodes[leader].change_voters(now, VoterChange::Remove(leader_id)),
            Err(VoterChangeError::LeaderMoving { to: Some(_), .. })
        ));
        assert!(nodes[leader].lease_group().unwrap().is_leader(), "not yet");
        assert_eq!(
            nodes[leader].change_voters(now, VoterChange::Add(id(4))),
            Err(VoterChangeError::InProgress)
        );
        run_to(&mut nodes, &mut now, Duration::from_secs(1), &[]);
        assert_eq!(voters_of(&nodes[leader]), [1, 2, 3], "nothing proposed");
        let new = leader_of(&nodes, &[]).unwrap();
        assert_ne!(new, leader);
        nodes[new]
            .change_voters(now, VoterChange::Add(id(4)))
            .unwrap();
        run_to(&mut nodes, &mut now, Duration::from_secs(1), &[]);
        assert_eq!(voters_of(&nodes[3]), [1, 2, 3, 4]);
    }

    /// The leader asked to remove itself hands leadership to a caught-up voter first (raft-rs
    /// would keep it leading a group it is not in); the new leader then removes it.
    #[test]
    fn a_leader_asked_to_remove_itself_hands_over_first() {
        let (mut nodes, mut now) = group_of_three(false);
        let leader = leader_of(&nodes, &[]).unwrap();
        let leader_id = nodes[leader].local_id();
        let answer = nodes[leader].change_voters(now, VoterChange::Remove(leader_id));
        let Err(VoterChangeError::LeaderMoving {
            leader: l,
            to: Some(to),
        }) = answer
        else {
            panic!("{answer:?}");
        };
        assert_eq!(l, leader_id);
        run_to(&mut nodes, &mut now, Duration::from_secs(1), &[]);
        let new = leader_of(&nodes, &[]).unwrap();
        // `to` took over (it may have handed on since: a voter whose node holds a lease keeps
        // leadership apart from it).
        assert_ne!(to, leader_id);
        assert_ne!(nodes[new].local_id(), leader_id);
        nodes[new]
            .change_voters(now, VoterChange::Remove(leader_id))
            .unwrap();
        run_to(&mut nodes, &mut now, Duration::from_secs(1), &[]);
        let expected: Vec<u64> = (1..=3).filter(|v| *v != leader_id.get()).collect();
        assert_eq!(voters_of(&nodes[new]), expected);
    }

    /// A joining voter that crashed before it was added restarts from what it persisted (no
    /// configuration: a voter-to-be again, its hard state kept) and is then added as usual.
    #[test]
    fn a_joining_voter_restarted_before_its_add_is_still_a_voter_to_be() {
        let (mut nodes, mut now) = group_of_three(true);
        let founders = [id(1), id(2), id(3)];
        let joiner = nodes.pop().unwrap();
        let durable = joiner
            .into_durable()
            .expect("a joining voter has Raft state");
        assert!(durable.hard_state().vote.is_none());
        let restarted = Node::new(
            Config::from_profile(Profile::Lan),
            id(4),
            Incarnation::new(2),
            44,
            now,
        )
        .with_joining_voter(now, lease_config(), &founders, Some(durable))
        .with_lease_client(now, lease_config(), &founders, Campaign::new(TTL, RETRY));
        nodes.push(restarted);
        nodes[3].join(now, &[id(1)]);
        run_to(&mut nodes, &mut now, Duration::from_secs(5), &[]);
        assert!(nodes[3].lease_group().unwrap().voters().next().is_none());
        let leader = leader_of(&nodes, &[]).unwrap();
        nodes[leader]
            .change_voters(now, VoterChange::Add(id(4)))
            .unwrap();
        run_to(&mut nodes, &mut now, Duration::from_secs(1), &[]);
        assert_eq!(voters_of(&nodes[3]), [1, 2, 3, 4]);
    }
}
