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
