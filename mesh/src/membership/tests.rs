//! Protocol tests on an in-process N-node network, on virtual time (like quinn's `Pair` and
//! raft-rs's `Network`): the harness jumps to the next wakeup and stops after bounded steps.

use alloc::collections::{BTreeMap, BTreeSet};

use super::*;
use crate::config::Profile;
use crate::wire::MemberRecord;

/// One-way latency of the test network.
const LATENCY: Duration = Duration::from_millis(1);
/// Upper bound on harness steps per `run_for`, so a livelock fails instead of hanging.
const MAX_STEPS: usize = 2_000_000;

struct Net {
    nodes: BTreeMap<NodeId, Membership>,
    in_flight: BTreeMap<(Instant, u64), (NodeId, NodeId, Vec<u8>)>,
    seq: u64,
    now: Instant,
    /// Directed links that drop everything.
    cut: BTreeSet<(NodeId, NodeId)>,
    /// Nodes that are down (crashed: they neither receive nor act).
    down: BTreeSet<NodeId>,
    events: Vec<(Instant, NodeId, Event)>,
    buf: Vec<u8>,
    /// Datagrams sent from one node to another (cut links included).
    sent: BTreeMap<(NodeId, NodeId), u64>,
    /// `handle_timeout` calls per node: its wakeups.
    wakeups: BTreeMap<NodeId, u64>,
}

/// An idle node does not wake every gossip interval: with nothing to gossip its gossip timer is
/// parked and an answered probe's timeout stopped, so a converged, quiet mesh wakes for its
/// probe periods and its slower housekeeping only (at `lan`: once a second, not 5 more for
/// gossip ticks and one for the timeout); an update made
/// later still goes out on the gossip tick's grid, to every member.
#[test]
fn an_idle_node_does_not_wake_every_gossip_interval() {
    let mut net = Net::converged(4, Profile::Lan);
    // Long enough for the join's updates to be spent.
    net.run_for(Duration::from_secs(30));
    let before = net.wakeups.get(&id(1)).copied().unwrap_or(0);
    net.run_for(Duration::from_secs(60));
    let woke = net.wakeups.get(&id(1)).copied().unwrap_or(0) - before;
    // A probe period a second (60), a dead-member probe and maintenance every 5 s (24), an
    // anti-entropy round (2); the probe timeout is stopped once the probe is answered.
    assert!(
        woke <= 100,
        "{woke} wakeups in 60 s of idling (gossip ticks: 300, probe timeouts: 60)"
    );
    let now = net.now;
    net.nodes
        .get_mut(&id(1))
        .expect("node 1")
        .set_metadata(now, "zone", b"b")
        .expect("a small key");
    net.run_for(Duration::from_millis(300));
    for observer in 2..=4 {
        let seen = net.nodes[&id(observer)]
            .metadata(id(1))
            .and_then(|m| m.get("zone"))
            .map(<[u8]>::to_vec);
        assert_eq!(seen, Some(b"b".to_vec()), "node {observer} within 300 ms");
    }
}

fn id(i: u64) -> NodeId {
    NodeId::new(i)
}

/// The bytes of a datagram from `from` carrying `message` and `updates`, as a node would send it.
fn encode_datagram(from: NodeId, message: &Message, updates: &[Update]) -> Vec<u8> {
    let mut buf = Vec::new();
    let at = wire::encode_message(from, message, &mut buf);
    for u in updates {
        let mut encoded = Vec::new();
        wire::encode_update(u, &mut encoded);
        assert!(
            wire::append_update(&mut buf, at, &encoded),
            "forged update fits"
        );
    }
    buf
}

impl Net {
    /// `n` nodes (ids 1..=n) that all know each other.
    fn converged(n: u64, profile: Profile) -> Self {
        Self::converged_seeded(n, profile, 1000)
    }

    /// As [`converged`](Self::converged), node `i` seeded with `seed + i`.
    fn converged_seeded(n: u64, profile: Profile, seed: u64) -> Self {
        let mut net = Self::empty();
        for i in 1..=n {
            let mut m = Membership::new(
                Config::from_profile(profile),
                id(i),
                Incarnation::new(1),
                seed + i,
                net.now,
            );
            for j in 1..=n {
                m.add_known_member(net.now, id(j), Incarnation::new(1));
            }
            net.nodes.insert(id(i), m);
        }
        net
    }

    fn empty() -> Self {
        Self {
            nodes: BTreeMap::new(),
            in_flight: BTreeMap::new(),
            seq: 0,
            now: Instant::ZERO,
            cut: BTreeSet::new(),
            down: BTreeSet::new(),
            events: Vec::new(),
            buf: Vec::new(),
            sent: BTreeMap::new(),
            wakeups: BTreeMap::new(),
        }
    }

    fn partition(&mut self, a: &[u64], b: &[u64]) {
        for &x in a {
            for &y in b {
                self.cut.insert((id(x), id(y)));
                self.cut.insert((id(y), id(x)));
            }
        }
    }

    fn drain(&mut self, node: NodeId) {
        if self.down.contains(&node) {
            return;
        }
        let now = self.now;
        let Some(m) = self.nodes.get_mut(&node) else {
            return;
        };
        while let Some(t) = m.poll_transmit(now, &mut self.buf) {
            self.seq += 1;
            *self.sent.entry((node, t.to)).or_insert(0) += 1;
            if !self.cut.contains(&(node, t.to)) {
                self.in_flight.insert(
                    (now + LATENCY, self.seq),
                    (node, t.to, self.buf[..t.len].to_vec()),
                );
            }
        }
        while let Some(ev) = m.poll_event() {
            self.events.push((now, node, ev));
        }
    }

    fn run_for(&mut self, d: Duration) {
        let end = self.now + d;
        let ids: Vec<NodeId> = self.nodes.keys().copied().collect();
        for &n in &ids {
            self.drain(n);
        }
        for _ in 0..MAX_STEPS {
            let next_msg = self.in_flight.keys().next().map(|k| k.0);
            let next_timer = self
                .nodes
                .iter()
                .filter(|(n, _)| !self.down.contains(n))
                .filter_map(|(n, m)| m.poll_timeout().map(|t| (t, *n)))
                .min();
            let next = [next_msg, next_timer.map(|t| t.0)]
                .into_iter()
                .flatten()
                .min();
            let Some(at) = next.filter(|t| *t <= end) else {
                self.now = end;
                return;
            };
            self.now = self.now.max(at);
            if next_msg == Some(at) {
                let (_, (from, to, bytes)) = self.in_flight.pop_first().expect("peeked above");
                if self.down.contains(&to) {
                    continue;
                }
                if let Some(m) = self.nodes.get_mut(&to) {
                    m.handle_datagram(self.now, from, &bytes)
                        .expect("nodes only send valid datagrams");
                }
                self.drain(to);
            } else if let Some((_, n)) = next_timer {
                *self.wakeups.entry(n).or_insert(0) += 1;
                self.nodes
                    .get_mut(&n)
                    .expect("timer of a known node")
                    .handle_timeout(self.now);
                self.drain(n);
            }
        }
        panic!("harness did not reach {end:?} within {MAX_STEPS} steps");
    }

    /// Delivers, now, a datagram that `from` (authenticated by the transport, member or not)
    /// sends to `to`, carrying `message` and `updates`; then lets `to` act on it.
    fn forge(&mut self, from: u64, to: u64, message: &Message, updates: &[Update]) {
        let buf = encode_datagram(id(from), message, updates);
        let now = self.now;
        self.nodes
            .get_mut(&id(to))
            .expect("target of a forged datagram")
            .handle_datagram(now, id(from), &buf)
            .expect("forged datagrams are well-formed");
        self.drain(id(to));
    }

    fn sent(&self, from: u64, to: u64) -> u64 {
        self.sent.get(&(id(from), id(to))).copied().unwrap_or(0)
    }

    fn state(&self, observer: u64, of: u64) -> Option<MemberState> {
        self.nodes[&id(observer)].member(id(of)).map(|m| m.state)
    }

    /// When `observer` declared `of` dead, at `since` or later.
    fn dead_verdicts(&self, observer: u64, of: u64, since: Instant) -> Vec<Instant> {
        self.events
            .iter()
            .filter(|(t, n, e)| {
                *t >= since
                    && *n == id(observer)
                    && matches!(e, Event::MemberStateChanged { node, to: MemberState::Dead, .. } if *node == id(of))
            })
            .map(|(t, _, _)| *t)
            .collect()
    }

    fn dead_declarations(&self, of: u64) -> usize {
        self.events
            .iter()
            .filter(|(_, _, e)| matches!(e, Event::MemberStateChanged { node, to: MemberState::Dead, .. } if *node == id(of)))
            .count()
    }
}

/// SWIM §4.1/§4.2: a crashed member is suspected, then declared dead by everyone.
#[test]
fn crashed_member_is_detected_by_all() {
    let mut net = Net::converged(8, Profile::Lan);
    net.run_for(Duration::from_secs(5));
    net.down.insert(id(3));
    let crash_at = net.now;
    net.run_for(Duration::from_secs(40));
    for i in (1..=8).filter(|i| *i != 3) {
        assert_eq!(
            net.state(i, 3),
            Some(MemberState::Dead),
            "node {i} sees node 3"
        );
        for j in (1..=8).filter(|j| *j != 3) {
            assert_eq!(
                net.state(i, j),
                Some(MemberState::Alive),
                "node {i} sees healthy node {j}"
            );
        }
    }
    let suspected_first = net
        .events
        .iter()
        .find(|(t, _, e)| {
            *t >= crash_at
                && matches!(
                    e,
                    Event::MemberStateChanged {
                        to: MemberState::Suspect,
                        ..
                    }
                )
        })
        .expect("a suspicion precedes the death");
    let dead_first = net
        .events
        .iter()
        .find(|(_, _, e)| {
            matches!(
                e,
                Event::MemberStateChanged {
                    to: MemberState::Dead,
                    ..
                }
            )
        })
        .expect("declared dead");
    assert!(suspected_first.0 < dead_first.0);
}

/// SWIM §4.2: a member that is suspected while healthy refutes with a higher incarnation, and
/// nobody declares it dead.
#[test]
fn suspected_member_refutes() {
    let mut net = Net::converged(6, Profile::Lan);
    net.run_for(Duration::from_secs(3));
    // Node 1 alone cannot reach node 2 for a while: it suspects it (indirect probes also go through
    // node 1's cut links only to node 2, so cut both directions between 1 and 2 and all helpers).
    net.nodes.get_mut(&id(1)).unwrap().apply_suspect(
        net.now,
        id(2),
        Incarnation::new(1),
        id(1),
        id(1),
    );
    net.drain(id(1));
    net.run_for(Duration::from_secs(30));
    assert!(
        net.nodes[&id(2)]
            .incarnation()
            .is_newer_than(Incarnation::new(1)),
        "node 2 refuted"
    );
    assert!(
        net.events
            .iter()
            .any(|(_, n, e)| *n == id(2) && matches!(e, Event::Refuted { .. }))
    );
    for i in 1..=6 {
        assert_eq!(net.state(i, 2), Some(MemberState::Alive), "node {i}");
        assert_eq!(
            net.nodes[&id(i)].stats().suspicions_confirmed,
            0,
            "node {i}: a refuted suspicion is not a confirmation"
        );
    }
    assert_eq!(net.dead_declarations(2), 0);
}

/// SWIM §4.1: indirect probes let a member whose direct link is broken stay alive.
#[test]
fn indirect_probe_bridges_a_broken_link() {
    let mut net = Net::converged(6, Profile::Lan);
    net.partition(&[1], &[2]);
    net.run_for(Duration::from_secs(60));
    assert_eq!(net.state(1, 2), Some(MemberState::Alive));
    assert_eq!(net.state(2, 1), Some(MemberState::Alive));
    assert_eq!(net.dead_declarations(1) + net.dead_declarations(2), 0);
    let n1 = net.nodes[&id(1)].stats();
    assert!(
        n1.indirect_probes > 0,
        "node 1 had to probe node 2 indirectly"
    );
}

/// Lifeguard §IV-C: a relay that cannot reach the target answers with a nack, so the requester
/// does not blame its own health for the target's failure.
#[test]
fn relays_send_nacks_for_unreachable_targets() {
    let mut net = Net::converged(5, Profile::Lan);
    net.run_for(Duration::from_secs(2));
    net.down.insert(id(5));
    let failed_before: u64 = (1..=4)
        .map(|i| net.nodes[&id(i)].stats().probes_failed)
        .sum();
    // Watch the score at every step of 50 ms while node 5 is probed and found dead: each failed
    // probe concludes with `expected_nacks - nacks` added to the prober's score, so a missing
    // nack shows at once (and a later success would lower it again, hiding it from a check at
    // the end).
    let mut worst = [0u32; 4];
    for _ in 0..600 {
        net.run_for(Duration::from_millis(50));
        for (i, w) in worst.iter_mut().enumerate() {
            *w = (*w).max(net.nodes[&id(i as u64 + 1)].health_score());
        }
    }
    let failed: u64 = (1..=4)
        .map(|i| net.nodes[&id(i)].stats().probes_failed)
        .sum::<u64>()
        - failed_before;
    assert!(
        failed >= 1,
        "nobody's probe of node 5 failed: the test proves nothing"
    );
    assert_eq!(
        worst, [0; 4],
        "nacks from the relays kept every prober's local health at 0 ({failed} failed probes)"
    );
}

/// Lifeguard §IV-A: a node that misses acks and nacks raises its local health score and so
/// stretches its own timeouts.
#[test]
fn isolated_node_lowers_its_own_health() {
    let mut net = Net::converged(5, Profile::Lan);
    net.partition(&[1], &[2, 3, 4, 5]);
    net.run_for(Duration::from_secs(8));
    assert!(
        net.nodes[&id(1)].health_score() >= 2,
        "score {}",
        net.nodes[&id(1)].health_score()
    );
}

/// A node cut off with a minority is not slow: a nack from a helper on its own side, a helper
/// or target its own side already suspects, explain the silence of the other side, which then
/// does not count against its local health (Lifeguard's multiplier would otherwise stretch its
/// probe period towards `awareness_max + 1` and leave the minority's view stale for minutes).
/// The memberlist profile keeps Lifeguard's ceiling of 8, so the difference shows.
#[test]
fn a_minority_is_not_charged_for_the_silence_of_the_cut_off_side() {
    let mut net = Net::converged(8, Profile::Memberlist);
    net.run_for(Duration::from_secs(2));
    net.partition(&[1, 2, 3], &[4, 5, 6, 7, 8]);
    let mut worst = [0u32; 3];
    for _ in 0..200 {
        net.run_for(Duration::from_millis(100));
        for (i, w) in worst.iter_mut().enumerate() {
            *w = (*w).max(net.nodes[&id(i as u64 + 1)].health_score());
        }
    }
    let failed: u64 = (1..=3)
        .map(|i| net.nodes[&id(i)].stats().probes_failed)
        .sum();
    assert!(
        failed >= 6,
        "only {failed} failed probes: the test proves nothing"
    );
    assert!(
        worst.iter().all(|&w| w <= 3),
        "minority health scores reached {worst:?} after {failed} failed probes"
    );
}

/// Partitions heal by themselves: both sides declare the other dead, then after the heal the dead
/// members are re-probed, anti-entropy runs, and everyone refutes back to one view.
#[test]
fn partition_heals_without_an_operator() {
    let mut net = Net::converged(8, Profile::Lan);
    net.run_for(Duration::from_secs(2));
    net.partition(&[1, 2, 3, 4], &[5, 6, 7, 8]);
    net.run_for(Duration::from_secs(60));
    assert_eq!(net.state(1, 8), Some(MemberState::Dead));
    assert_eq!(net.state(8, 1), Some(MemberState::Dead));
    net.cut.clear();
    net.run_for(Duration::from_secs(60));
    for i in 1..=8 {
        for j in 1..=8 {
            assert_eq!(
                net.state(i, j),
                Some(MemberState::Alive),
                "node {i} sees node {j} after the heal"
            );
        }
    }
}

/// A node restarted with state loss and a higher incarnation rejoins through a seed.
#[test]
fn restarted_node_rejoins_with_new_incarnation() {
    let mut net = Net::converged(6, Profile::Lan);
    net.run_for(Duration::from_secs(2));
    net.down.insert(id(4));
    net.run_for(Duration::from_secs(40));
    assert_eq!(net.state(1, 4), Some(MemberState::Dead));
    let fresh = Membership::new(Config::default(), id(4), Incarnation::new(2), 77, net.now);
    net.nodes.insert(id(4), fresh);
    net.down.remove(&id(4));
    net.nodes
        .get_mut(&id(4))
        .unwrap()
        .handle_join(net.now, &[id(1)]);
    net.run_for(Duration::from_secs(20));
    for i in 1..=6 {
        assert_eq!(net.state(i, 4), Some(MemberState::Alive), "node {i}");
        assert_eq!(
            net.nodes[&id(4)].member(id(i)).map(|m| m.state),
            Some(MemberState::Alive)
        );
    }
    assert_eq!(
        net.nodes[&id(1)].member(id(4)).unwrap().incarnation,
        Incarnation::new(2)
    );
}

/// A graceful leave is seen as Left, not Dead.
#[test]
fn leave_is_seen_as_left() {
    let mut net = Net::converged(5, Profile::Lan);
    net.run_for(Duration::from_secs(2));
    net.nodes.get_mut(&id(2)).unwrap().leave(net.now);
    net.drain(id(2));
    net.run_for(Duration::from_secs(3));
    net.down.insert(id(2));
    net.run_for(Duration::from_secs(30));
    for i in [1, 3, 4, 5] {
        assert_eq!(net.state(i, 2), Some(MemberState::Left), "node {i}");
    }
    assert_eq!(net.dead_declarations(2), 0);
}

/// A member that left and comes back (a restart: same id, a boot incarnation far above the one
/// held, as meshkitd's wall-clock boot incarnation is) is taken back alive by every member, not
/// only by those that hear its own announcement. The others' relayed `Alive` is more than
/// `MAX_INCARNATION_STEP` above the `Left` held, so it is refused; before the fix the member's own
/// word reached a node only through its few retransmissions or an anti-entropy exchange it
/// started (every 30 s with a random peer), and a compose run saw one node hold a restarted
/// node `left` for over 3 minutes. A member held `Left` that speaks is now told the claim, and
/// answers with its own record at once.
#[test]
fn a_member_that_left_and_restarts_is_taken_back_alive_by_everyone() {
    let n = 12;
    let mut net = Net::converged(n, Profile::Lan);
    net.run_for(Duration::from_secs(2));
    net.nodes.get_mut(&id(5)).unwrap().leave(net.now);
    net.drain(id(5));
    net.run_for(Duration::from_secs(3));
    net.down.insert(id(5));
    net.run_for(Duration::from_secs(30));
    for i in (1..=n).filter(|i| *i != 5) {
        assert_eq!(net.state(i, 5), Some(MemberState::Left), "node {i}");
    }
    let held = net.nodes[&id(1)].member(id(5)).unwrap().incarnation;
    let boot = Incarnation::new(held.get() + 10 * MAX_INCARNATION_STEP);
    let fresh = Membership::new(Config::from_profile(Profile::Lan), id(5), boot, 77, net.now);
    net.nodes.insert(id(5), fresh);
    net.down.remove(&id(5));
    net.nodes
        .get_mut(&id(5))
        .unwrap()
        .handle_join(net.now, &[id(1)]);
    // One probe round of the restarted node (it pings every member it holds, one a second),
    // with room to spare; well short of an anti-entropy period.
    net.run_for(Duration::from_secs(20));
    for i in (1..=n).filter(|i| *i != 5) {
        assert_eq!(net.state(i, 5), Some(MemberState::Alive), "node {i}");
        assert_eq!(
            net.nodes[&id(i)].member(id(5)).unwrap().incarnation,
            boot,
            "node {i}"
        );
    }
}

/// Metadata writes spread to everyone, deletes too, and the event names the version.
#[test]
fn metadata_spreads_and_deletes() {
    let mut net = Net::converged(6, Profile::Lan);
    let now = net.now;
    let n1 = net.nodes.get_mut(&id(1)).unwrap();
    n1.set_metadata(now, "zone", b"eu-1").unwrap();
    n1.set_metadata(now, "blob", &[7; 1000]).unwrap();
    n1.set_metadata(now, "role", b"db").unwrap();
    let v = n1.delete_metadata(now, "role").unwrap();
    net.drain(id(1));
    net.run_for(Duration::from_secs(5));
    for i in 2..=6 {
        let m = net.nodes[&id(i)].metadata(id(1)).expect("copy");
        assert_eq!(m.version(), v, "node {i}");
        assert_eq!(m.get("zone"), Some(&b"eu-1"[..]));
        assert_eq!(m.get("blob").map(<[u8]>::len), Some(1000));
        assert_eq!(m.get("role"), None);
    }
}

/// Own metadata is bounded: 4 KiB by default, with keys and values of bounded size.
#[test]
fn metadata_bounds_are_enforced() {
    let mut m = Membership::new(
        Config::default(),
        id(1),
        Incarnation::new(1),
        1,
        Instant::ZERO,
    );
    for i in 0..4 {
        m.set_metadata(Instant::ZERO, &format!("k{i}"), &[0; 1000])
            .unwrap();
    }
    assert_eq!(m.metadata(id(1)).unwrap().size_bytes(), 4 * (2 + 1000 + 8));
    let err = m.set_metadata(Instant::ZERO, "k4", &[0; 1000]).unwrap_err();
    assert!(
        matches!(err, MetadataError::OverBudget { limit: 4096, .. }),
        "{err}"
    );
    assert!(m.set_metadata(Instant::ZERO, "", b"x").is_err());
    assert_eq!(
        m.metadata(id(1)).unwrap().version(),
        MetaVersion::new(1, 4),
        "refused writes change nothing"
    );
}

/// No resurrection: a node isolated for longer than the tombstone TTL while a key is deleted
/// does not bring the key back after the heal (its copy is replaced by a snapshot).
#[test]
fn deleted_keys_do_not_come_back_after_a_long_partition() {
    let mut net = Net::converged(6, Profile::Lan);
    let now = net.now;
    net.nodes
        .get_mut(&id(1))
        .unwrap()
        .set_metadata(now, "feature", b"on")
        .unwrap();
    net.drain(id(1));
    net.run_for(Duration::from_secs(5));
    assert_eq!(
        net.nodes[&id(6)].metadata(id(1)).unwrap().get("feature"),
        Some(&b"on"[..])
    );
    net.partition(&[6], &[1, 2, 3, 4, 5]);
    net.run_for(Duration::from_secs(5));
    let now = net.now;
    net.nodes
        .get_mut(&id(1))
        .unwrap()
        .delete_metadata(now, "feature")
        .unwrap();
    net.drain(id(1));
    // Outlive the 10-minute tombstone TTL, then heal.
    net.run_for(Duration::from_secs(700));
    assert!(
        net.nodes[&id(2)]
            .metadata(id(1))
            .unwrap()
            .iter()
            .all(|(k, _, _)| k != "feature"),
        "tombstone collected"
    );
    assert_eq!(
        net.nodes[&id(6)].metadata(id(1)).unwrap().get("feature"),
        Some(&b"on"[..]),
        "isolated copy is stale"
    );
    net.cut.clear();
    net.run_for(Duration::from_secs(120));
    for i in 2..=6 {
        let m = net.nodes[&id(i)].metadata(id(1)).unwrap();
        assert_eq!(m.get("feature"), None, "node {i} resurrected a deleted key");
        assert_eq!(
            m.version(),
            net.nodes[&id(1)].metadata(id(1)).unwrap().version(),
            "node {i}"
        );
    }
}

/// A datagram that does not decode, or that lies about its sender, is refused and changes
/// nothing.
#[test]
fn bad_datagrams_are_refused_without_effect() {
    let mut a = Membership::new(
        Config::default(),
        id(1),
        Incarnation::new(1),
        1,
        Instant::ZERO,
    );
    a.add_known_member(Instant::ZERO, id(2), Incarnation::new(1));
    let before = a.members().collect::<Vec<_>>();
    assert!(matches!(
        a.handle_datagram(Instant::ZERO, id(2), &[1, 99]),
        Err(DatagramError::Decode(_))
    ));
    let mut buf = Vec::new();
    let at = wire::encode_message(id(3), &Message::Gossip, &mut buf);
    let mut dead = Vec::new();
    wire::encode_update(
        &Update::Dead {
            node: id(2),
            incarnation: Incarnation::new(5),
            from: id(3),
        },
        &mut dead,
    );
    assert!(wire::append_update(&mut buf, at, &dead));
    assert!(matches!(
        a.handle_datagram(Instant::ZERO, id(2), &buf),
        Err(DatagramError::SenderMismatch { .. })
    ));
    assert_eq!(a.members().collect::<Vec<_>>(), before);
    assert_eq!(a.stats().datagrams_refused, 2);
}

/// Two nodes joining through each other learn the whole mesh by anti-entropy.
#[test]
fn join_through_a_seed_learns_everyone() {
    let mut net = Net::converged(5, Profile::Lan);
    let newcomer = Membership::new(Config::default(), id(9), Incarnation::new(1), 9, net.now);
    net.nodes.insert(id(9), newcomer);
    net.nodes
        .get_mut(&id(9))
        .unwrap()
        .handle_join(net.now, &[id(3)]);
    net.run_for(Duration::from_secs(5));
    assert_eq!(net.nodes[&id(9)].alive_count(), 6);
    for i in 1..=5 {
        assert_eq!(net.state(i, 9), Some(MemberState::Alive), "node {i}");
    }
}

/// A joining node runs anti-entropy every second for its first 10 s (what the join's answer
/// and the first gossip missed when many start at once), then at the profile's interval; a
/// node started without a seed other than itself does not.
#[test]
fn a_joining_node_exchanges_every_second_at_first() {
    let mut net = Net::converged(8, Profile::Lan);
    let newcomer = Membership::new(Config::default(), id(9), Incarnation::new(1), 9, net.now);
    net.nodes.insert(id(9), newcomer);
    let lone = Membership::new(Config::default(), id(10), Incarnation::new(1), 10, net.now);
    net.nodes.insert(id(10), lone);
    let now = net.now;
    net.nodes
        .get_mut(&id(9))
        .unwrap()
        .handle_join(now, &[id(3)]);
    net.nodes
        .get_mut(&id(10))
        .unwrap()
        .handle_join(now, &[id(10)]);
    let syncs = |net: &Net, n: u64| net.nodes[&id(n)].stats().syncs;
    net.run_for(Duration::from_millis(10_500));
    assert_eq!(syncs(&net, 9), 10, "one exchange a second for 10 s");
    assert_eq!(syncs(&net, 10), 0, "no seed, no early exchanges");
    // Then the profile's 30 s: one more in the next 30 s.
    net.run_for(Duration::from_secs(30));
    assert_eq!(syncs(&net, 9), 11);
}

/// A join is one push-pull with the seed: the newcomer knows every member once the
/// seed's answer arrives, one round trip after the join, before any timer fires; the seed knows
/// the newcomer from the same exchange.
#[test]
fn a_join_learns_the_whole_mesh_in_one_exchange() {
    let n = 40;
    let mut net = Net::converged(n, Profile::Lan);
    let newcomer = Membership::new(Config::default(), id(99), Incarnation::new(1), 99, net.now);
    net.nodes.insert(id(99), newcomer);
    net.nodes
        .get_mut(&id(99))
        .unwrap()
        .handle_join(net.now, &[id(7)]);
    // Every node's first timer is spread over its first period: stop before the earliest, so
    // only the join's datagrams move (request, answer in chunks, the newcomer's records back).
    let first_timer = net
        .nodes
        .values()
        .filter_map(Membership::poll_timeout)
        .min()
        .unwrap();
    let exchange = LATENCY * 3;
    assert!(
        first_timer > net.now + exchange,
        "seeded so that no timer fires during the exchange"
    );
    net.run_for(exchange);
    assert_eq!(
        net.nodes[&id(99)].alive_count(),
        n as usize + 1,
        "the newcomer learnt every member from the seed's one answer"
    );
    assert_eq!(
        net.state(7, 99),
        Some(MemberState::Alive),
        "the seed learnt the newcomer"
    );
}

/// N nodes started together (20 ms apart, as a script starts daemons), each joining through
/// node 1, all count N alive within a few gossip rounds of the last start, on virtual time.
/// Measured here at N = 64: 0.6 s after the last start (lan profile: gossip every 200 ms to 3).
#[test]
fn a_mass_start_through_one_seed_converges_within_seconds() {
    let n: u64 = 64;
    let mut net = Net::empty();
    let stagger = Duration::from_millis(20);
    for i in 1..=n {
        let m = Membership::new(
            Config::from_profile(Profile::Lan),
            id(i),
            Incarnation::new(1),
            5000 + i,
            net.now,
        );
        net.nodes.insert(id(i), m);
        if i > 1 {
            let now = net.now;
            net.nodes
                .get_mut(&id(i))
                .unwrap()
                .handle_join(now, &[id(1)]);
        }
        net.run_for(stagger);
    }
    let limit = Duration::from_secs(5);
    let step = Duration::from_millis(100);
    let mut converged_after = None;
    for k in 1..=(limit.as_millis() / step.as_millis()) {
        net.run_for(step);
        if net.nodes.values().all(|m| m.alive_count() == n as usize) {
            converged_after = Some(step * k as u32);
            break;
        }
    }
    let after = converged_after.unwrap_or_else(|| {
        let worst = net.nodes.values().map(Membership::alive_count).min();
        panic!("not converged {limit:?} after the last start (fewest alive seen: {worst:?})")
    });
    assert!(
        after <= Duration::from_millis(2_000),
        "converged {after:?} after the last start"
    );
}

/// The same seeds give the same run, event for event; other seeds give another run (so the
/// comparison would catch a seed that is ignored).
#[test]
fn same_seed_same_events() {
    let run = |seed: u64| {
        let mut net = Net::converged_seeded(6, Profile::Lan, seed);
        net.run_for(Duration::from_secs(3));
        net.down.insert(id(2));
        net.run_for(Duration::from_secs(30));
        format!("{:?}", net.events)
    };
    assert_eq!(run(1000), run(1000));
    assert_ne!(run(1000), run(5000), "the seed drives the run");
}

/// Anti-entropy costs one digest datagram per period in a converged mesh, whatever its size.
#[test]
fn converged_anti_entropy_sends_only_digests() {
    let mut net = Net::converged(12, Profile::Lan);
    net.run_for(Duration::from_secs(65));
    let syncs: u64 = net.nodes.values().map(|m| m.stats().syncs).sum();
    assert!(syncs >= 12, "every node synced at least once ({syncs})");
    // Every node probes (ping + ack) once a second; a digest exchange would add records.
    let sent: u64 = net.nodes.values().map(|m| m.stats().datagrams_sent).sum();
    let per_node_s = sent as f64 / 12.0 / 65.0;
    assert!(per_node_s < 2.2, "{per_node_s} datagrams per node-second");
}

/// A node that missed a refutation and still suspects a member at its old incarnation is
/// corrected by the member itself, not left to declare it dead.
#[test]
fn stale_suspicion_is_corrected_by_its_subject() {
    let mut net = Net::converged(6, Profile::Lan);
    net.run_for(Duration::from_secs(2));
    // Node 2 refutes a suspicion everyone but node 1 hears about.
    net.nodes.get_mut(&id(2)).unwrap().apply_suspect(
        net.now,
        id(2),
        Incarnation::new(1),
        id(3),
        id(3),
    );
    net.drain(id(2));
    net.run_for(Duration::from_secs(5));
    assert_eq!(net.nodes[&id(2)].incarnation(), Incarnation::new(2));
    // Node 1 now suspects node 2 at the stale incarnation 1, as if the refutation missed it.
    let now = net.now;
    net.nodes
        .get_mut(&id(1))
        .unwrap()
        .members
        .modify(id(2), |m| m.incarnation = Incarnation::new(1));
    net.nodes
        .get_mut(&id(1))
        .unwrap()
        .apply_suspect(now, id(2), Incarnation::new(1), id(1), id(1));
    net.drain(id(1));
    net.run_for(Duration::from_secs(30));
    assert_eq!(net.state(1, 2), Some(MemberState::Alive));
    assert_eq!(net.dead_declarations(2), 0);
}

/// One node isolated for longer than the tombstone TTL, then healed: nobody healthy dies.
#[test]
fn long_isolation_of_one_node_heals_cleanly() {
    let mut net = Net::converged(32, Profile::Lan);
    net.run_for(Duration::from_secs(5));
    let others: Vec<u64> = (1..=32).filter(|i| *i != 6).collect();
    net.partition(&[6], &others);
    net.run_for(Duration::from_secs(700));
    let healed_at = net.now;
    net.cut.clear();
    net.run_for(Duration::from_secs(60));
    let wrong: Vec<_> = net
        .events
        .iter()
        .filter(|(t, _, e)| {
            *t >= healed_at
                && matches!(
                    e,
                    Event::MemberStateChanged {
                        to: MemberState::Dead,
                        ..
                    }
                )
        })
        .collect();
    if !wrong.is_empty() {
        for (t, obs, e) in net
            .events
            .iter()
            .filter(|(t, _, _)| *t >= healed_at)
            .take(400)
        {
            eprintln!("{t:?} {obs} {e:?}");
        }
    }
    assert!(
        wrong.is_empty(),
        "{} healthy members declared dead after the heal: {wrong:?}",
        wrong.len()
    );
    for i in 1..=32 {
        for j in 1..=32 {
            assert_eq!(
                net.state(i, j),
                Some(MemberState::Alive),
                "node {i} sees node {j}"
            );
        }
    }
}

#[test]
fn acknowledged_probes_land_in_the_rtt_histogram() {
    let mut net = Net::converged(4, Profile::Lan);
    net.run_for(Duration::from_secs(30));
    let stats = net.nodes[&id(1)].stats();
    let rtt = stats.probe_rtt;
    // No loss: every direct probe was acknowledged by its target, one link delay each way.
    assert!(
        rtt.count > 0 && rtt.count == stats.probes,
        "{rtt:?} of {}",
        stats.probes
    );
    assert_eq!(rtt.buckets.iter().sum::<u64>(), rtt.count);
    let bucket = RttHistogram::BOUNDS.partition_point(|b| *b < LATENCY * 2);
    assert_eq!(
        rtt.buckets[bucket], rtt.count,
        "all in the 2 ms bucket: {rtt:?}"
    );
    assert_eq!(rtt.sum, LATENCY * 2 * u32::try_from(rtt.count).unwrap());
}

#[test]
fn rtt_buckets_include_their_upper_bound() {
    let mut h = RttHistogram::default();
    h.record(Duration::ZERO);
    h.record(Duration::from_micros(100));
    h.record(Duration::from_micros(101));
    h.record(Duration::from_secs(1));
    h.record(Duration::from_secs(5));
    assert_eq!(h.buckets[0], 2);
    assert_eq!(h.buckets[1], 1);
    assert_eq!(h.buckets[RttHistogram::BOUNDS.len() - 1], 1);
    assert_eq!(h.buckets[RttHistogram::BOUNDS.len()], 1);
    assert_eq!(h.count, 5);
}

// ---- Claims are bounded by their author (docs/security.md, "Membership claims") ----------------
// Node 99 below holds a valid certificate (the transport authenticates it) but is no member.

/// Security review: `Left{node 2, u32::MAX}` from a non-member kept a live node 2 `left`
/// for good. Only node 2 may say it left. A non-member's `Left` (or any claim that a member
/// failed) changes nothing at all; a member's relayed `Left` is a death claim, which is only a
/// suspicion that node 2 refutes; and the refutation wins even against `u32::MAX`
/// (incarnations compare in serial arithmetic).
#[test]
fn forged_left_does_not_remove_a_live_member() {
    let mut net = Net::converged(5, Profile::Lan);
    net.run_for(Duration::from_secs(2));
    // u32::MAX is just below 1 in serial arithmetic (a stale claim); 2^30 above is far ahead.
    let left = |inc: u32| Update::Left {
        node: id(2),
        incarnation: Incarnation::new(inc),
    };
    for to in [1, 3] {
        net.forge(4, to, &Message::Gossip, &[left(u32::MAX), left(1 << 30)]);
    }
    // The same claim at node 2's own incarnation, which the step bound lets through: from a
    // non-member it is refused; from member 4 it is a suspicion, never `Dead` or `Left`.
    net.forge(99, 5, &Message::Gossip, &[left(1)]);
    assert_eq!(net.state(5, 2), Some(MemberState::Alive));
    assert_eq!(net.nodes[&id(5)].stats().claims_refused, 1);
    net.forge(4, 5, &Message::Gossip, &[left(1)]);
    assert_eq!(
        net.state(5, 2),
        Some(MemberState::Suspect),
        "a relayed Left is only a death claim, which node 2 can refute"
    );
    net.run_for(Duration::from_secs(40));
    for i in [1, 3, 4, 5] {
        assert_eq!(
            net.state(i, 2),
            Some(MemberState::Alive),
            "node {i} sees node 2"
        );
    }
    assert_eq!(net.dead_declarations(2), 0);
    let inc = net.nodes[&id(2)].incarnation().get();
    assert!(
        inc <= 1 + 2 * MAX_INCARNATION_STEP,
        "incarnation {inc} was not dragged up"
    );
    let refused: u64 = net.nodes.values().map(|m| m.stats().claims_refused).sum();
    assert!(
        refused >= 3,
        "the 2^30 claims and the non-member's were refused ({refused})"
    );
}

/// Only a node's own suspicion timer declares a member dead: a `Dead` claim about a live member
/// at its current incarnation, from a member that made it up, is a suspicion at every node that
/// hears it; node 2 refutes before anyone emits a `Dead` event (before, every node that heard it
/// held node 2 dead until the refutation came, and the application saw Dead, then Alive).
#[test]
fn a_forged_death_claim_at_the_current_incarnation_is_refuted_before_anyone_declares_it() {
    let mut net = Net::converged(8, Profile::Lan);
    net.run_for(Duration::from_secs(2));
    let held = net.nodes[&id(1)].member(id(2)).unwrap().incarnation;
    let dead = Update::Dead {
        node: id(2),
        incarnation: held,
        from: id(3),
    };
    for to in [1, 4, 5, 6, 7, 8] {
        net.forge(3, to, &Message::Gossip, core::slice::from_ref(&dead));
        assert_ne!(net.state(to, 2), Some(MemberState::Dead), "node {to}");
    }
    net.run_for(Duration::from_secs(40));
    assert_eq!(net.dead_declarations(2), 0, "nobody declared node 2 dead");
    let now = net.nodes[&id(2)].incarnation();
    assert!(now.is_newer_than(held), "node 2 refuted");
    for i in (1..=8).filter(|i| *i != 2) {
        assert_eq!(net.state(i, 2), Some(MemberState::Alive), "node {i}");
        assert_eq!(net.nodes[&id(i)].member(id(2)).unwrap().incarnation, now);
    }
}

/// A real crash is still detected by every node, each by its own suspicion (confirmed by the
/// others' failed probes and death claims), and not much later than the first declaration.
#[test]
fn a_crash_is_declared_by_every_node_on_its_own_suspicion() {
    let n = 32;
    let mut net = Net::converged(n, Profile::Lan);
    net.run_for(Duration::from_secs(5));
    net.down.insert(id(7));
    let crashed_at = net.now;
    net.run_for(Duration::from_secs(60));
    let mut declared = Vec::new();
    for (t, observer, e) in &net.events {
        if let Event::MemberStateChanged {
            node,
            to: MemberState::Dead,
            by,
            ..
        } = e
            && *node == id(7)
        {
            assert_eq!(
                *by,
                Some(*observer),
                "{observer} took another's word at {t:?}"
            );
            declared.push(t.saturating_duration_since(crashed_at));
        }
    }
    assert_eq!(
        declared.len(),
        n as usize - 1,
        "every live node declared it once"
    );
    for i in (1..=n).filter(|i| *i != 7) {
        assert_eq!(net.state(i, 7), Some(MemberState::Dead), "node {i}");
    }
    let first = declared.iter().min().copied().unwrap();
    let last = declared.iter().max().copied().unwrap();
    assert!(
        last <= Duration::from_secs(20),
        "the last node declared it {last:?} after the crash"
    );
    assert!(
        last.saturating_sub(first) <= Duration::from_secs(6),
        "first declaration {first:?}, last {last:?}"
    );
    assert_eq!(net.dead_declarations(7), n as usize - 1);
    for i in (1..=n).filter(|i| *i != 7) {
        assert_eq!(
            net.nodes[&id(i)].stats().suspicions_confirmed,
            1,
            "node {i} counts its own verdict"
        );
    }
}

/// A claim relayed about the receiver itself is step-bounded too. Before, node 2 took
/// `Alive{2, 1 + (2^31 - 1)}` from a relay and refuted at `1 + 2^31`: exactly half the number
/// space from the `1` every peer held, which serial arithmetic cannot order, so peers took the
/// refutation for an older claim, and a `Suspect{2, 1}` then held node 2 dead for
/// `dead_retention` (24 h) while node 2 took every later claim for stale.
#[test]
fn a_forged_claim_about_the_receiver_cannot_push_it_half_the_number_space() {
    let mut net = Net::converged(5, Profile::Lan);
    net.run_for(Duration::from_secs(2));
    let held = net.nodes[&id(1)].member(id(2)).unwrap().incarnation;
    assert_eq!(net.nodes[&id(2)].incarnation(), held);
    let far = Update::Alive {
        node: id(2),
        incarnation: Incarnation::new(held.get().wrapping_add((1 << 31) - 1)),
        meta: MetaVersion::default(),
    };
    net.forge(99, 2, &Message::Gossip, &[far]);
    net.run_for(Duration::from_secs(2));
    let suspect = Update::Suspect {
        node: id(2),
        incarnation: held,
        from: id(3),
    };
    net.forge(3, 1, &Message::Gossip, &[suspect]);
    net.run_for(Duration::from_secs(40));
    let now = net.nodes[&id(2)].incarnation();
    assert!(
        now.steps_after(held)
            .is_some_and(|n| n <= 2 * MAX_INCARNATION_STEP),
        "node 2 was pushed from {held} to {now}"
    );
    for i in [1, 3, 4, 5] {
        assert_eq!(
            net.state(i, 2),
            Some(MemberState::Alive),
            "node {i} sees node 2"
        );
        assert_eq!(net.nodes[&id(i)].member(id(2)).unwrap().incarnation, now);
    }
    assert!(net.nodes[&id(2)].stats().claims_refused >= 1);
}

/// A graceful leave still reaches everyone as `Left`: the leaving node tells each member.
#[test]
fn graceful_leave_reaches_every_member_as_left() {
    let mut net = Net::converged(12, Profile::Lan);
    net.run_for(Duration::from_secs(2));
    net.nodes.get_mut(&id(7)).unwrap().leave(net.now);
    net.drain(id(7));
    net.run_for(Duration::from_secs(1));
    net.down.insert(id(7));
    net.run_for(Duration::from_secs(30));
    for i in (1..=12).filter(|i| *i != 7) {
        assert_eq!(net.state(i, 7), Some(MemberState::Left), "node {i}");
    }
}

/// A relayed claim more than `MAX_INCARNATION_STEP` above what is held is refused; a member's
/// own word is not bounded (a restarted node's boot incarnation may jump).
#[test]
fn relayed_incarnation_jumps_are_bounded() {
    let mut net = Net::converged(4, Profile::Lan);
    net.run_for(Duration::from_secs(1));
    let alive = |inc: u32| Update::Alive {
        node: id(2),
        incarnation: Incarnation::new(inc),
        meta: MetaVersion::new(1, 0),
    };
    net.forge(
        99,
        1,
        &Message::Gossip,
        &[alive(1 + MAX_INCARNATION_STEP + 1)],
    );
    assert_eq!(
        net.nodes[&id(1)].member(id(2)).unwrap().incarnation,
        Incarnation::new(1)
    );
    assert_eq!(net.nodes[&id(1)].stats().claims_refused, 1);
    let dead = Update::Dead {
        node: id(3),
        incarnation: Incarnation::new(u32::MAX - 1),
        from: id(4),
    };
    net.forge(4, 1, &Message::Gossip, &[dead]);
    assert_eq!(net.state(1, 3), Some(MemberState::Alive));
    // Node 2 itself may jump (it restarted with a wall-clock boot incarnation, say).
    net.forge(2, 1, &Message::Gossip, &[alive(1_000_000)]);
    assert_eq!(
        net.nodes[&id(1)].member(id(2)).unwrap().incarnation,
        Incarnation::new(1_000_000)
    );
}

/// No counter saturates into a state that cannot be refuted: a member already at the top of the
/// number space, claimed dead there, refutes across the wrap and stays alive everywhere.
#[test]
fn refutation_wins_at_the_incarnation_ceiling() {
    let top = Incarnation::new(u32::MAX - 1);
    let mut net = Net::empty();
    for i in 1..=5u64 {
        let inc = if i == 2 { top } else { Incarnation::new(1) };
        let mut m = Membership::new(
            Config::from_profile(Profile::Lan),
            id(i),
            inc,
            1000 + i,
            net.now,
        );
        for j in 1..=5u64 {
            let inc = if j == 2 { top } else { Incarnation::new(1) };
            m.add_known_member(net.now, id(j), inc);
        }
        net.nodes.insert(id(i), m);
    }
    net.run_for(Duration::from_secs(2));
    for round in 0..4u32 {
        let inc = net.nodes[&id(1)].member(id(2)).unwrap().incarnation;
        let dead = Update::Dead {
            node: id(2),
            incarnation: inc,
            from: id(5),
        };
        net.forge(5, 1 + u64::from(round % 4), &Message::Gossip, &[dead]);
        net.run_for(Duration::from_secs(20));
    }
    let now = net.nodes[&id(2)].incarnation();
    assert!(now.get() < 16, "node 2 wrapped past u32::MAX: {now}");
    for i in [1, 3, 4, 5] {
        assert_eq!(
            net.state(i, 2),
            Some(MemberState::Alive),
            "node {i} sees node 2"
        );
        assert_eq!(net.nodes[&id(i)].member(id(2)).unwrap().incarnation, now);
    }
}

/// Security review: `Meta{node 3, version (u32::MAX, 1)}` rewrote node 3's metadata on its
/// peers and the copies never converged back. Only the owner moves a copy to another epoch;
/// after node 3 restarts, every copy follows the new life.
#[test]
fn forged_metadata_epoch_does_not_rewrite_a_members_metadata() {
    let mut net = Net::converged(5, Profile::Lan);
    let now = net.now;
    net.nodes
        .get_mut(&id(3))
        .unwrap()
        .set_metadata(now, "addr", b"10.0.0.3:7946")
        .unwrap();
    net.drain(id(3));
    net.run_for(Duration::from_secs(5));
    let forged = Update::Meta {
        node: id(3),
        version: MetaVersion::new(u32::MAX, 1),
        key: "addr".into(),
        value: Some(b"6.6.6.6:1".to_vec()),
    };
    for to in [1, 2, 3, 4] {
        net.forge(99, to, &Message::Gossip, core::slice::from_ref(&forged));
    }
    // An unsolicited push of the same, chunked like a real transfer.
    let push = Message::MetaPush {
        node: id(3),
        base: None,
        version: MetaVersion::new(u32::MAX, 1),
        chunk: 0,
        chunks: 1,
        entries: vec![wire::MetaEntry {
            key: "addr".into(),
            seq: 1,
            value: Some(b"6.6.6.6:1".to_vec()),
        }],
    };
    net.forge(99, 5, &push, &[]);
    net.run_for(Duration::from_secs(10));
    assert_eq!(
        net.nodes[&id(3)].metadata(id(3)).unwrap().version(),
        MetaVersion::new(1, 1),
        "the owner's epoch is its own"
    );
    for i in [1, 2, 4, 5] {
        assert_same_metadata(&net, i, 3);
    }
    // Node 3 restarts (a new life, a new epoch) and publishes again: the copies follow.
    net.down.insert(id(3));
    net.run_for(Duration::from_secs(2));
    let fresh = Membership::new(
        Config::from_profile(Profile::Lan),
        id(3),
        Incarnation::new(2),
        33,
        net.now,
    );
    net.nodes.insert(id(3), fresh);
    net.down.remove(&id(3));
    let now = net.now;
    let n3 = net.nodes.get_mut(&id(3)).unwrap();
    n3.handle_join(now, &[id(1)]);
    n3.set_metadata(now, "addr", b"10.0.0.33:7946").unwrap();
    net.drain(id(3));
    net.run_for(Duration::from_secs(40));
    assert_eq!(
        net.nodes[&id(3)].metadata(id(3)).unwrap().version(),
        MetaVersion::new(2, 1)
    );
    for i in [1, 2, 4, 5] {
        assert_same_metadata(&net, i, 3);
    }
}

/// `observer`'s copy of `owner`'s metadata has the owner's version and live keys.
fn assert_same_metadata(net: &Net, observer: u64, owner: u64) {
    let own = net.nodes[&id(owner)].metadata(id(owner)).unwrap();
    let copy = net.nodes[&id(observer)].metadata(id(owner));
    let copy = copy.unwrap_or_else(|| panic!("node {observer} holds no copy of node {owner}"));
    assert_eq!(copy.version(), own.version(), "node {observer}");
    assert_eq!(
        copy.live().collect::<Vec<_>>(),
        own.live().collect::<Vec<_>>(),
        "node {observer}"
    );
}

/// Security review: 2,000 phantom members from 38 datagrams, and a crashed node still
/// listed alive minutes later. A relay may have at most `MAX_UNVERIFIED_PER_INTRODUCER` members
/// it introduced waiting to be heard from; phantoms never answer and are forgotten when their
/// probe fails, so detection of a real crash is unaffected.
#[test]
fn phantom_members_are_bounded_per_introducer() {
    let mut net = Net::converged(6, Profile::Lan);
    net.run_for(Duration::from_secs(2));
    let mut phantom = 10_000u64;
    for _ in 0..38 {
        let records: Vec<MemberRecord> = (0..wire::MAX_RECORDS_PER_DATAGRAM)
            .map(|_| {
                phantom += 1;
                MemberRecord {
                    node: id(phantom),
                    incarnation: Incarnation::new(1),
                    state: MemberState::Alive,
                    meta: MetaVersion::new(1, 0),
                }
            })
            .collect();
        let message = Message::SyncEntries {
            reply: wire::SyncReply::Nothing,
            records,
        };
        net.forge(99, 1, &message, &[]);
    }
    let known = net.nodes[&id(1)].member_count();
    assert!(
        known <= 6 + MAX_UNVERIFIED_PER_INTRODUCER as usize,
        "node 1 knows {known} members"
    );
    assert_eq!(
        net.nodes[&id(1)].stats().introductions_refused,
        38 * wire::MAX_RECORDS_PER_DATAGRAM as u64 - u64::from(MAX_UNVERIFIED_PER_INTRODUCER)
    );
    net.down.insert(id(4));
    let crashed_at = net.now;
    net.run_for(Duration::from_secs(30));
    let dead_at = net
        .dead_verdicts(1, 4, crashed_at)
        .first()
        .map(|t| t.saturating_duration_since(crashed_at));
    assert!(
        dead_at.is_some(),
        "node 1 declared the crashed node dead within 30 s"
    );
    for i in [2, 3, 5, 6] {
        assert!(
            net.nodes[&id(i)].member_count() <= 6 + MAX_UNVERIFIED_PER_INTRODUCER as usize,
            "phantoms did not spread to node {i}"
        );
    }
    // Phantoms never answer: their probes fail and they are forgotten.
    net.run_for(Duration::from_secs(300));
    assert!(
        net.nodes[&id(1)].member_count() <= 6,
        "{}",
        net.nodes[&id(1)].member_count()
    );
    // Forgetting them freed the relay's slots: it may introduce as many again.
    let refused = net.nodes[&id(1)].stats().introductions_refused;
    forge_phantoms(
        &mut net,
        99,
        &mut phantom,
        MAX_UNVERIFIED_PER_INTRODUCER as usize,
    );
    assert_eq!(net.nodes[&id(1)].stats().introductions_refused, refused);
    assert_eq!(
        net.nodes[&id(1)].member_count(),
        6 + MAX_UNVERIFIED_PER_INTRODUCER as usize
    );
}

/// Sends node 1 `count` phantom members (ids from `next + 1` up) as relay `relay`'s sync entries.
fn forge_phantoms(net: &mut Net, relay: u64, next: &mut u64, count: usize) {
    let mut left = count;
    while left > 0 {
        let n = left.min(wire::MAX_RECORDS_PER_DATAGRAM);
        left -= n;
        let records: Vec<MemberRecord> = (0..n)
            .map(|_| {
                *next += 1;
                MemberRecord {
                    node: id(*next),
                    incarnation: Incarnation::new(1),
                    state: MemberState::Alive,
                    meta: MetaVersion::new(1, 0),
                }
            })
            .collect();
        let message = Message::SyncEntries {
            reply: wire::SyncReply::Nothing,
            records,
        };
        net.forge(relay, 1, &message, &[]);
    }
}

/// A member its relay introduced is verified by its own datagram, which frees exactly one of the
/// relay's slots: the relay at its bound may then introduce one more, not more.
#[test]
fn a_verified_member_frees_one_slot_of_its_relay() {
    let mut net = Net::converged(6, Profile::Lan);
    let mut phantom = 10_000u64;
    let per_relay = MAX_UNVERIFIED_PER_INTRODUCER as usize;
    forge_phantoms(&mut net, 99, &mut phantom, per_relay);
    assert_eq!(net.nodes[&id(1)].stats().introductions_refused, 0);
    // The first one speaks for itself.
    net.forge(10_001, 1, &Message::Gossip, &[]);
    forge_phantoms(&mut net, 99, &mut phantom, 2);
    assert_eq!(net.nodes[&id(1)].stats().introductions_refused, 1);
    assert_eq!(net.nodes[&id(1)].member_count(), 6 + per_relay + 1);
}

/// Many relays together may not hold more than `MAX_UNVERIFIED_MEMBERS` members waiting to be
/// heard from, each within its own bound: the relay past the total is refused outright.
#[test]
fn unverified_members_are_bounded_in_all() {
    let mut net = Net::converged(6, Profile::Lan);
    let per_relay = MAX_UNVERIFIED_PER_INTRODUCER as usize;
    let relays = MAX_UNVERIFIED_MEMBERS / per_relay + 1;
    let mut phantom = 10_000u64;
    for relay in 0..relays as u64 {
        forge_phantoms(&mut net, 100 + relay, &mut phantom, per_relay);
    }
    assert_eq!(net.nodes[&id(1)].member_count(), 6 + MAX_UNVERIFIED_MEMBERS);
    assert_eq!(
        net.nodes[&id(1)].stats().introductions_refused,
        (relays * per_relay - MAX_UNVERIFIED_MEMBERS) as u64
    );
}

/// A relay that sends its phantoms again at a newer incarnation does not get the receiver to
/// pass them on: an unverified member is not gossiped, whatever its incarnation, so no honest
/// node introduces it to the others (each under its own per-relay bound).
#[test]
fn an_unverified_member_at_a_newer_incarnation_is_not_passed_on() {
    let mut net = Net::converged(6, Profile::Lan);
    net.run_for(Duration::from_secs(2));
    let phantom = |inc: u32| Update::Alive {
        node: id(5_000),
        incarnation: Incarnation::new(inc),
        meta: MetaVersion::default(),
    };
    net.forge(99, 1, &Message::Gossip, &[phantom(1)]);
    net.forge(99, 1, &Message::Gossip, &[phantom(5)]);
    assert_eq!(
        net.nodes[&id(1)].member(id(5_000)).map(|m| m.incarnation),
        Some(Incarnation::new(5))
    );
    net.run_for(Duration::from_millis(1_500));
    for i in 2..=6 {
        assert!(
            net.nodes[&id(i)].member(id(5_000)).is_none(),
            "node 1 introduced the phantom to node {i}"
        );
    }
}

/// Lifeguard §IV-B shrinks a suspicion's timeout with each independent confirmation, which
/// assumes the suspect heard of the suspicion all along. A confirmation that arrives after the
/// timeout it brings has run (a late one: here, the other side's verdicts when a partition
/// heals) must not declare the member dead before it was told directly and could answer.
#[test]
fn a_late_confirmation_checks_the_suspect_before_declaring_it_dead() {
    let mut net = Net::converged(8, Profile::Lan);
    net.run_for(Duration::from_secs(2));
    let others: Vec<u64> = (2..=8).collect();
    net.partition(&[1], &others);
    // Node 1, cut off, learns from node 3 that node 2 is suspect, and cannot hear the
    // refutation.
    let held = net.nodes[&id(1)].member(id(2)).unwrap().incarnation;
    net.nodes
        .get_mut(&id(1))
        .unwrap()
        .apply_suspect(net.now, id(2), held, id(3), id(3));
    net.drain(id(1));
    // Past the confirmed (minimum) timeout, before the unconfirmed one.
    let min = net.nodes[&id(1)].config().suspicion_min();
    net.run_for(min + Duration::from_millis(500));
    assert_eq!(net.state(1, 2), Some(MemberState::Suspect));
    net.cut.clear();
    let healed_at = net.now;
    // Three more members' verdicts arrive at once: the suspicion is confirmed and its
    // timeout ran out long ago.
    for from in [4, 5, 6] {
        let dead = Update::Dead {
            node: id(2),
            incarnation: held,
            from: id(from),
        };
        net.forge(from, 1, &Message::Gossip, &[dead]);
    }
    net.run_for(Duration::from_secs(3));
    let dead_after = net.dead_verdicts(1, 2, healed_at);
    assert!(
        dead_after.is_empty(),
        "node 1 declared running node 2 dead: {dead_after:?}"
    );
    assert_eq!(net.state(1, 2), Some(MemberState::Alive));
    assert!(net.nodes[&id(2)].incarnation().is_newer_than(held));
}

/// Eight converged nodes, node 1 cut off from the rest: it suspects node 3 (on node 4's word),
/// then, a second later, node 2 (on node 3's). Returns the net and the incarnation node 1 held
/// for node 3.
fn node_1_cut_off_suspecting_3_then_2() -> (Net, Incarnation) {
    let mut net = Net::converged(8, Profile::Lan);
    net.run_for(Duration::from_secs(2));
    let others: Vec<u64> = (2..=8).collect();
    net.partition(&[1], &others);
    // Node 1, cut off, suspects node 3 (on node 4's word), then node 2 (on node 3's).
    let held = net.nodes[&id(1)].member(id(2)).unwrap().incarnation;
    let held_3 = net.nodes[&id(1)].member(id(3)).unwrap().incarnation;
    net.nodes
        .get_mut(&id(1))
        .unwrap()
        .apply_suspect(net.now, id(3), held_3, id(4), id(4));
    net.run_for(Duration::from_secs(1));
    net.nodes
        .get_mut(&id(1))
        .unwrap()
        .apply_suspect(net.now, id(2), held, id(3), id(3));
    net.drain(id(1));
    (net, held_3)
}

/// A check sent into a partition is lost. When contact comes back (a member held Dead, or
/// suspect for longer than a confirmed suspicion, speaks again) a suspicion whose verdict falls
/// after that contact tells its suspect again before declaring it dead.
#[test]
fn contact_coming_back_renews_the_check_of_a_suspicion() {
    let (mut net, _) = node_1_cut_off_suspecting_3_then_2();
    let started = net.now;
    // Until node 1's last direct check of node 2 went out, into the cut.
    let mut checked = None;
    for _ in 0..200 {
        net.run_for(Duration::from_millis(50));
        let s = &net.nodes[&id(1)].suspicions[&id(2)];
        if s.told_at.is_some() {
            checked = s.told_at;
            break;
        }
    }
    let checked = checked.expect("node 1 checked node 2 directly before its verdict");
    assert!(checked > started);
    // The cut heals just before the verdict: too late for the check, lost in the cut.
    let verdict = net.nodes[&id(1)].suspicions[&id(2)].deadline();
    net.run_for(verdict.saturating_duration_since(net.now) - Duration::from_millis(100));
    assert_eq!(net.state(1, 2), Some(MemberState::Suspect));
    // The cut heals; a member node 1 lost contact with speaks to it.
    net.cut.clear();
    let healed_at = net.now;
    // Node 3 has been suspect for longer than a confirmed suspicion lasts, or is dead.
    let m3 = net.nodes[&id(1)].member(id(3)).unwrap();
    assert!(
        m3.state == MemberState::Dead
            || net.now.saturating_duration_since(m3.last_change)
                >= net.nodes[&id(1)].config().suspicion_min(),
        "node 1 lost contact with node 3: {m3:?}"
    );
    net.forge(3, 1, &Message::Gossip, &[]);
    net.run_for(Duration::from_secs(3));
    let dead_after = net.dead_verdicts(1, 2, healed_at);
    assert!(
        dead_after.is_empty(),
        "node 1 declared running node 2 dead: {dead_after:?}"
    );
    assert_eq!(net.state(1, 2), Some(MemberState::Alive));
}

/// A suspect that speaks to this node is told the claim at once, in reply (Lifeguard's buddy
/// system on its contact): after a cut heals, its refutation need not wait for this node's
/// probe to pick it or for the claim's gossip to find it.
#[test]
fn a_suspect_that_speaks_is_told_the_claim_in_reply() {
    let mut net = Net::converged(8, Profile::Lan);
    net.run_for(Duration::from_secs(2));
    let others: Vec<u64> = (2..=8).collect();
    net.partition(&[1], &others);
    let held = net.nodes[&id(1)].member(id(2)).unwrap().incarnation;
    net.nodes
        .get_mut(&id(1))
        .unwrap()
        .apply_suspect(net.now, id(2), held, id(3), id(3));
    net.drain(id(1));
    net.run_for(Duration::from_millis(500));
    assert_eq!(net.state(1, 2), Some(MemberState::Suspect));
    assert_eq!(
        net.nodes[&id(2)].incarnation(),
        held,
        "node 2 heard nothing"
    );
    net.cut.clear();
    net.forge(2, 1, &Message::Gossip, &[]);
    // One round trip (1 ms each way), well short of a probe period.
    net.run_for(3 * LATENCY);
    assert!(
        net.nodes[&id(2)].incarnation().is_newer_than(held),
        "node 2 was not told it is suspected in reply to its datagram"
    );
}

/// An alive claim at the incarnation held still brings news of the member's metadata: a newer
/// version is pulled from it; one at an older incarnation is stale and changes nothing, its
/// metadata version included (SWIM: a claim about an older incarnation is superseded).
#[test]
fn alive_claims_at_an_older_incarnation_are_ignored_at_the_same_one_observed() {
    let now = Instant::ZERO;
    let mut m = Membership::new(Config::default(), id(1), Incarnation::new(1), 5, now);
    m.add_known_member(now, id(2), Incarnation::new(5));
    let mut buf = Vec::new();
    let mut sent = |m: &mut Membership| {
        core::iter::from_fn(|| m.poll_transmit(now, &mut buf).map(|t| t.to)).collect::<Vec<_>>()
    };
    assert!(sent(&mut m).is_empty());

    m.apply_alive(
        now,
        id(2),
        id(2),
        Incarnation::new(4),
        MetaVersion::new(5, 1),
    );
    assert!(
        sent(&mut m).is_empty(),
        "an older incarnation's claim is stale"
    );
    assert_eq!(m.member(id(2)).unwrap().incarnation, Incarnation::new(5));

    m.apply_alive(
        now,
        id(2),
        id(2),
        Incarnation::new(5),
        MetaVersion::new(5, 1),
    );
    assert_eq!(
        sent(&mut m),
        [id(2)],
        "the newer metadata is pulled from its owner"
    );
}

/// As memberlist: a suspicion waits for K confirmations only when at least K members besides
/// the suspect and this node could send them; with fewer, it expects none and runs out at the
/// minimum (Lifeguard section 4.2: with nobody to confirm, the timeout would be the maximum).
#[test]
fn a_suspicion_expects_confirmations_only_when_enough_members_can_send_them() {
    let now = Instant::ZERO;
    let config = Config::default();
    let k = config.suspicion_confirmations() as u64;
    // `members` alive in all, this node included.
    let deadline_after = |members: u64| {
        let mut m = Membership::new(config.clone(), id(1), Incarnation::new(1), 5, now);
        for n in 2..=members {
            m.add_known_member(now, id(n), Incarnation::new(1));
        }
        assert_eq!(m.alive_count() as u64, members);
        m.apply_suspect(now, id(2), Incarnation::new(1), id(3), id(3));
        m.suspicions[&id(2)]
            .deadline()
            .saturating_duration_since(now)
    };
    // K others besides the suspect and this node: K confirmations expected, none came yet, so
    // the longest timeout. One fewer: none expected, the shortest (the same minimum: both
    // meshes are under ten members).
    let waited = deadline_after(k + 2);
    let short = deadline_after(k + 1);
    assert_eq!(short, config.suspicion_min());
    assert!(waited > short, "{waited:?} vs {short:?}");
}

/// A node holding many suspicions at once (half the mesh under a one-way cut) holds a confirmed
/// verdict past the minimum, in proportion to the suspicions it holds, up to the unconfirmed
/// timeout: the suspects' refutations compete for the same piggyback budget and need longer to
/// arrive. Up to `SUSPICIONS_AT_MIN` held, a verdict falls at the minimum as before
/// (docs/benchmarks.md, "Class 1").
#[test]
fn a_crowd_of_suspicions_holds_a_confirmed_verdict_past_the_minimum() {
    let now = Instant::ZERO;
    let config = Config::default();
    let k = u64::from(config.suspicion_confirmations());
    let at_min = suspicion::SUSPICIONS_AT_MIN as u64;
    let base = config.suspicion_min();
    let first = 10;
    // `held` suspicions confirmed by K members each, all begun at `now`.
    let crowd = |held: u64| {
        let mut m = Membership::new(config.clone(), id(1), Incarnation::new(1), 5, now);
        for n in 2..=first + 4 * at_min {
            m.add_known_member(now, id(n), Incarnation::new(1));
        }
        for node in first..first + held {
            for by in 2..3 + k {
                m.apply_suspect(now, id(node), Incarnation::new(1), id(by), id(by));
            }
        }
        assert_eq!(m.suspicions[&id(first)].deadline(), now + base);
        m
    };
    let state = |m: &Membership| m.member(id(first)).unwrap().state;
    // SUSPICIONS_AT_MIN held: declared at the minimum.
    let mut m = crowd(at_min);
    m.suspicion_expired(now + base, id(first));
    assert_eq!(state(&m), MemberState::Dead);
    // Twice as many: held until twice the minimum, then declared.
    let mut m = crowd(2 * at_min);
    m.suspicion_expired(now + base, id(first));
    assert_eq!(state(&m), MemberState::Suspect);
    assert_eq!(m.suspicions[&id(first)].deadline(), now + base * 2);
    m.suspicion_expired(now + base * 2, id(first));
    assert_eq!(state(&m), MemberState::Dead);
    // Far more: never past the unconfirmed timeout (the maximum).
    let mut m = crowd(4 * at_min);
    m.suspicion_expired(now + base, id(first));
    let held_until = m.suspicions[&id(first)].deadline();
    m.apply_suspect(now, id(2), Incarnation::new(1), id(3), id(3));
    let unconfirmed = m.suspicions[&id(2)].deadline();
    assert_eq!(held_until, unconfirmed);
    assert!(held_until > now + base * 2, "{held_until:?}");
}

/// The memberlist profile reproduces memberlist, the baseline of every detector figure, so the
/// rules for many suspicions at once are off there: a crowd of confirmed suspicions is
/// declared at the minimum, and a node holding most of the mesh Suspect is not a mass failure.
#[test]
fn the_memberlist_profile_keeps_memberlists_verdicts_in_a_crowd() {
    let now = Instant::ZERO;
    let config = Config::from_profile(Profile::Memberlist);
    assert!(!config.mass_failure_rules());
    assert!(Config::default().mass_failure_rules());
    let k = u64::from(config.suspicion_confirmations());
    let at_min = suspicion::SUSPICIONS_AT_MIN as u64;
    let first = 10;
    let mut m = Membership::new(config, id(1), Incarnation::new(1), 5, now);
    for n in 2..=first + 4 * at_min {
        m.add_known_member(now, id(n), Incarnation::new(1));
    }
    for node in first..first + 4 * at_min {
        for by in 2..3 + k {
            m.apply_suspect(now, id(node), Incarnation::new(1), id(by), id(by));
        }
    }
    assert!(
        !m.many_suspected(),
        "most of the mesh Suspect is no mass failure here"
    );
    let due = m.suspicions[&id(first)].deadline();
    m.suspicion_expired(due, id(first));
    assert_eq!(m.member(id(first)).unwrap().state, MemberState::Dead);
}

/// #19 class 4: a suspicion waits for no more confirmations than members exist who could
/// still send one: those held Alive, besides this node, the suspect and the raiser. A node cut
/// off with a few others holds most of the mesh Suspect; its last suspicions run out at the
/// minimum (when nobody is left to confirm) or at the minimum once its few peers confirm,
/// not at the unconfirmed maximum.
#[test]
fn a_suspicion_expects_no_more_confirmations_than_members_left_to_send_them() {
    let now = Instant::ZERO;
    let config = Config::default();
    let k = config.suspicion_confirmations();
    assert_eq!(k, 3, "the test counts members for K = 3");
    // Node 1 and 9 others; it suspects `held` of them (3 + 1, 3 + 2, ...) first, then hears
    // node 3 suspect node 2.
    let deadline_after = |held: u64, confirmers: &[u64]| {
        let mut m = Membership::new(config.clone(), id(1), Incarnation::new(1), 5, now);
        for n in 2..=10 {
            m.add_known_member(now, id(n), Incarnation::new(1));
        }
        for n in 4..4 + held {
            m.apply_suspect(now, id(n), Incarnation::new(1), id(1), id(1));
        }
        m.apply_suspect(now, id(2), Incarnation::new(1), id(3), id(3));
        for &c in confirmers {
            m.apply_suspect(now, id(2), Incarnation::new(1), id(c), id(c));
        }
        m.suspicions[&id(2)]
            .deadline()
            .saturating_duration_since(now)
    };
    let min = deadline_after(0, &[4, 5, 6]);
    assert_eq!(min, config.suspicion_min());
    // 7 Alive others could confirm (4..=10): K = 3 are expected, so with none the maximum.
    let max = deadline_after(0, &[]);
    assert!(max > min, "{max:?} vs {min:?}");
    // Nodes 4..=8 suspected: 9 and 10 are left to confirm, so both bring it to the minimum,
    // and one goes further than one of three would.
    assert_eq!(deadline_after(5, &[9, 10]), min);
    assert!(deadline_after(5, &[9]) < deadline_after(0, &[9]));
    // Nodes 4..=10 suspected: nobody is left to confirm, so no confirmation is waited for.
    assert_eq!(deadline_after(7, &[]), min);
}

/// A member's own `Left` at an older incarnation than the one held is stale (the member came back
/// since, at a newer one): it stays alive.
#[test]
fn a_stale_left_does_not_remove_a_member() {
    let now = Instant::ZERO;
    let mut m = Membership::new(Config::default(), id(1), Incarnation::new(1), 5, now);
    m.add_known_member(now, id(2), Incarnation::new(5));
    m.apply_left(now, id(2), Incarnation::new(4));
    assert_eq!(m.member(id(2)).unwrap().state, MemberState::Alive);
    m.apply_left(now, id(2), Incarnation::new(5));
    assert_eq!(m.member(id(2)).unwrap().state, MemberState::Left);
}

/// A node that left does not refute a newer record of itself: it is gone, and announcing a new
/// incarnation would bring it back to life in the others' tables (SWIM's refutation is for a
/// member that is still running).
#[test]
fn a_node_that_left_does_not_refute() {
    let now = Instant::ZERO;
    let mut m = Membership::new(Config::default(), id(1), Incarnation::new(3), 5, now);
    m.add_known_member(now, id(2), Incarnation::new(1));
    m.apply_alive(
        now,
        id(2),
        id(1),
        Incarnation::new(4),
        MetaVersion::default(),
    );
    assert_eq!(
        m.incarnation(),
        Incarnation::new(5),
        "refuted while a member"
    );
    assert_eq!(m.stats().refutations, 1);

    m.leave(now);
    let left_at = m.incarnation();
    m.apply_alive(now, id(2), id(1), left_at.next(), MetaVersion::default());
    assert_eq!(m.incarnation(), left_at, "no refutation once left");
}

/// The incarnations of the alive records about `about` that `m` sends back to `claimant` in reply
/// to a datagram carrying `claim`: the corrections of a stale claim (or a refutation). What `m`
/// had queued before is sent and left out first.
fn alive_records_sent_back(
    m: &mut Membership,
    claimant: NodeId,
    claim: Update,
    about: NodeId,
) -> Vec<Incarnation> {
    let now = Instant::ZERO;
    let mut buf = Vec::new();
    while m.poll_transmit(now, &mut buf).is_some() {}
    m.handle_datagram(
        now,
        claimant,
        &encode_datagram(claimant, &Message::Gossip, &[claim]),
    )
    .expect("a well-formed datagram from a member");
    let mut records = Vec::new();
    while let Some(t) = m.poll_transmit(now, &mut buf) {
        if t.to != claimant {
            continue;
        }
        let datagram = wire::decode(&buf[..t.len]).expect("nodes send valid datagrams");
        records.extend(datagram.updates.into_iter().filter_map(|u| match u {
            Update::Alive {
                node, incarnation, ..
            } if node == about => Some(incarnation),
            _ => None,
        }));
    }
    records
}

/// A suspicion claim about `node` at `incarnation`, raised by `from`.
fn suspect_claim(node: u64, incarnation: u32, from: u64) -> Update {
    Update::Suspect {
        node: id(node),
        incarnation: Incarnation::new(incarnation),
        from: id(from),
    }
}

/// The sender of a claim older than the member's incarnation missed the refutation: whoever
/// holds the member alive and verified at the newer incarnation sends it that record, so it
/// stops spreading the stale claim. A claim at the incarnation held is no news to correct.
#[test]
fn a_stale_claim_about_a_live_member_is_answered_with_the_newer_record() {
    let now = Instant::ZERO;
    let mut m = Membership::new(Config::default(), id(1), Incarnation::new(1), 5, now);
    m.add_known_member(now, id(2), Incarnation::new(5));
    m.add_known_member(now, id(3), Incarnation::new(1));
    assert_eq!(
        alive_records_sent_back(&mut m, id(3), suspect_claim(2, 4, 3), id(2)),
        [Incarnation::new(5)],
        "the claimant is sent the newer record"
    );
    assert_eq!(m.member(id(2)).unwrap().state, MemberState::Alive);
    assert!(
        alive_records_sent_back(&mut m, id(3), suspect_claim(2, 5, 3), id(2)).is_empty(),
        "a claim at the incarnation held is not stale"
    );
    assert_eq!(m.member(id(2)).unwrap().state, MemberState::Suspect);
}

/// Only a member held alive is vouched for: one this node suspects itself, or one a relay
/// introduced and that has not spoken for itself yet (its record is the relay's word, which this
/// node does not pass on), gets no correction, even against a claim older than what is held.
#[test]
fn a_stale_claim_is_corrected_only_from_a_live_verified_record() {
    let now = Instant::ZERO;
    let mut m = Membership::new(Config::default(), id(1), Incarnation::new(1), 5, now);
    for n in [2, 3, 4] {
        m.add_known_member(now, id(n), Incarnation::new(5));
    }
    m.apply_suspect(now, id(2), Incarnation::new(5), id(4), id(4));
    assert_eq!(m.member(id(2)).unwrap().state, MemberState::Suspect);
    assert!(
        alive_records_sent_back(&mut m, id(3), suspect_claim(2, 4, 3), id(2)).is_empty(),
        "a suspected member is not vouched for"
    );

    // Node 7, introduced by node 4 and not yet heard from.
    m.apply_alive(
        now,
        id(4),
        id(7),
        Incarnation::new(5),
        MetaVersion::new(5, 0),
    );
    let seven = m.members.get(id(7)).expect("admitted on its relay's word");
    assert_eq!(
        (seven.state, seven.introduced_by),
        (MemberState::Alive, Some(id(4)))
    );
    assert!(
        alive_records_sent_back(&mut m, id(3), suspect_claim(7, 4, 3), id(7)).is_empty(),
        "an unverified member is not vouched for"
    );
}

/// A stale claim about this node is answered by the node itself with its current record (no
/// refutation: the claim is already superseded); once the node has left it answers nothing, or
/// its record would bring it back to life in the claimant's table.
#[test]
fn a_stale_claim_about_this_node_is_corrected_until_it_leaves() {
    let now = Instant::ZERO;
    let mut m = Membership::new(Config::default(), id(1), Incarnation::new(5), 5, now);
    m.add_known_member(now, id(3), Incarnation::new(1));
    assert_eq!(
        alive_records_sent_back(&mut m, id(3), suspect_claim(1, 4, 3), id(1)),
        [Incarnation::new(5)],
        "the claimant is sent this node's record"
    );
    assert_eq!(
        m.incarnation(),
        Incarnation::new(5),
        "a stale claim is not refuted"
    );
    assert_eq!(m.stats().refutations, 0);

    m.leave(now);
    let left_at = m.incarnation();
    assert!(
        alive_records_sent_back(&mut m, id(3), suspect_claim(1, left_at.get() - 1, 3), id(1))
            .is_empty(),
        "a node that left vouches for itself no more"
    );
}

/// Contact counts as coming back only from a member this node had lost: one held Suspect for at
/// least the shortest suspicion (`suspicion_min`), counted from when this node's suspicion of it
/// began, not one suspected a moment ago (its datagram is no news of a healed cut).
#[test]
fn contact_comes_back_only_from_a_member_suspected_long_enough() {
    let mut net = Net::converged(8, Profile::Lan);
    let min = net.nodes[&id(1)].config().suspicion_min();
    // Late enough that the time since the start of the run is more than `min`.
    net.run_for(min * 2);
    let others: Vec<u64> = (2..=8).collect();
    net.partition(&[1], &others);
    let held = net.nodes[&id(1)].member(id(2)).unwrap().incarnation;
    let started = net.now;
    let m = net.nodes.get_mut(&id(1)).unwrap();
    m.apply_suspect(started, id(2), held, id(3), id(3));
    m.reconnected_at = None;

    m.note_reconnect(started + min / 2, id(2));
    assert_eq!(
        m.reconnected_at, None,
        "suspected for half the minimum only"
    );
    m.note_reconnect(started + min, id(2));
    assert_eq!(m.reconnected_at, Some(started + min));
}

/// The direct check a late confirmation gets is for a node that lost contact (its health
/// dropped, or a member it had lost speaks again): a healthy node in a quiet mesh takes a
/// crash's late confirmations as SWIM does and declares the member at once, so that detection
/// is not one probe timeout slower for everyone who heard of the crash late.
#[test]
fn a_healthy_node_declares_a_crash_on_a_late_confirmation_at_once() {
    let mut net = Net::converged(8, Profile::Lan);
    net.run_for(Duration::from_secs(2));
    // Node 2 crashes; node 1 hears of it from node 3 only, then nothing (a cut keeps the
    // other confirmations from arriving on time).
    net.down.insert(id(2));
    let others: Vec<u64> = (2..=8).collect();
    net.partition(&[1], &others);
    let held = net.nodes[&id(1)].member(id(2)).unwrap().incarnation;
    net.nodes
        .get_mut(&id(1))
        .unwrap()
        .apply_suspect(net.now, id(2), held, id(3), id(3));
    net.drain(id(1));
    let min = net.nodes[&id(1)].config().suspicion_min();
    net.run_for(min + Duration::from_millis(500));
    assert_eq!(net.state(1, 2), Some(MemberState::Suspect));
    // Node 1 is healthy again and lost no contact: the late confirmations are taken as they
    // come (applied as claims, so no datagram from a lost member brings them).
    let m = net.nodes.get_mut(&id(1)).unwrap();
    m.health.apply(-i64::from(m.health.score()));
    m.reconnected_at = None;
    let at = net.now;
    for from in [4, 5, 6] {
        m.apply_suspect(at, id(2), held, id(from), id(from));
    }
    // The suspicion timer fires on the next step.
    net.run_for(Duration::from_millis(1));
    let declared = net.dead_verdicts(1, 2, Instant::ZERO);
    assert_eq!(
        declared,
        vec![at],
        "node 1 declared crashed node 2 dead at once on the late confirmations"
    );
}

/// #19 class 3: node 1's own links lose everything it sends for a while (a burst), so its claim
/// that node 2 failed reaches nobody; then late confirmations arrive. Before, they made the
/// suspicion due at once and node 1 (healthy again, no contact lost) declared node 2 dead
/// before node 2 could hear the claim and refute. The claim was heard late, so node 2 gets the
/// minimum timeout from then, and refutes in time.
#[test]
fn a_claim_stuck_in_a_burst_is_not_declared_on_late_confirmations() {
    let mut net = Net::converged(8, Profile::Lan);
    net.run_for(Duration::from_secs(2));
    for j in 2..=8 {
        net.cut.insert((id(1), id(j)));
    }
    let held = net.nodes[&id(1)].member(id(2)).unwrap().incarnation;
    let started = net.now;
    net.nodes
        .get_mut(&id(1))
        .unwrap()
        .apply_suspect(started, id(2), held, id(1), id(1));
    net.drain(id(1));
    let min = net.nodes[&id(1)].config().suspicion_min();
    net.run_for(min + Duration::from_secs(1));
    assert_eq!(net.state(1, 2), Some(MemberState::Suspect));
    assert_eq!(net.state(2, 2), Some(MemberState::Alive));
    // The burst ends; node 1 is healthy again and lost no contact (so no direct check holds
    // the verdict), and three other members' claims arrive, past the confirmed timeout.
    net.cut.clear();
    let m = net.nodes.get_mut(&id(1)).unwrap();
    m.health.apply(-i64::from(m.health.score()));
    m.reconnected_at = None;
    let at = net.now;
    for from in [3, 4, 5] {
        m.apply_suspect(at, id(2), held, id(from), id(from));
    }
    net.run_for(min + Duration::from_secs(1));
    assert_eq!(
        net.dead_verdicts(1, 2, started),
        Vec::<Instant>::new(),
        "node 1 declared node 2 dead on confirmations of a claim node 2 never heard"
    );
    assert_eq!(net.state(1, 2), Some(MemberState::Alive), "node 2 refuted");
}

/// The first datagram a lost member sends across a healed cut usually carries its own
/// refutation (it learnt it was suspected): contact is noted before the datagram's updates
/// apply, while the member is still held Suspect, or the refutation would hide that contact
/// came back and a suspicion whose check went into the cut would be declared unchecked.
#[test]
fn a_refutation_in_the_first_datagram_after_a_cut_still_counts_as_contact() {
    let (mut net, held_3) = node_1_cut_off_suspecting_3_then_2();
    // Until node 1's last direct check of node 2 went out, into the cut, and to just before
    // the verdict.
    for _ in 0..200 {
        net.run_for(Duration::from_millis(50));
        if net.nodes[&id(1)].suspicions[&id(2)].told_at.is_some() {
            break;
        }
    }
    assert!(net.nodes[&id(1)].suspicions[&id(2)].told_at.is_some());
    let verdict = net.nodes[&id(1)].suspicions[&id(2)].deadline();
    net.run_for(verdict.saturating_duration_since(net.now) - Duration::from_millis(100));
    assert_eq!(net.state(1, 2), Some(MemberState::Suspect));
    assert_ne!(net.state(1, 3), Some(MemberState::Alive));
    net.cut.clear();
    let healed_at = net.now;
    // Node 3 speaks first, with its refutation.
    let meta = net.nodes[&id(1)].member(id(3)).unwrap().meta_version;
    let refutation = Update::Alive {
        node: id(3),
        incarnation: held_3.next(),
        meta,
    };
    net.forge(3, 1, &Message::Gossip, &[refutation]);
    assert_eq!(net.state(1, 3), Some(MemberState::Alive));
    net.run_for(Duration::from_secs(3));
    let dead_after = net.dead_verdicts(1, 2, healed_at);
    assert!(
        dead_after.is_empty(),
        "node 1 declared running node 2 dead: {dead_after:?}"
    );
    assert_eq!(net.state(1, 2), Some(MemberState::Alive));
}

// ---- Force-leave: the operator's word, at each node, about a member it holds dead ----------

/// `force_leave` moves a member this node holds dead to `Left`, in this node's view only, and
/// refuses an alive or suspect member, an unknown one and the node itself. The change is not
/// gossiped: the other nodes still hold the member dead until their own operator says so.
#[test]
fn force_leave_moves_only_a_dead_member_to_left() {
    let mut net = Net::converged(5, Profile::Lan);
    net.run_for(Duration::from_secs(2));
    net.down.insert(id(2));
    let now = net.now;
    let one = net.nodes.get_mut(&id(1)).unwrap();
    assert_eq!(
        one.force_leave(now, id(2)),
        Err(ForceLeaveError::NotDead {
            node: id(2),
            state: MemberState::Alive
        }),
        "just crashed: still alive here, so refused"
    );
    assert_eq!(
        one.force_leave(now, id(1)),
        Err(ForceLeaveError::OwnNode { node: id(1) })
    );
    assert_eq!(
        one.force_leave(now, id(99)),
        Err(ForceLeaveError::UnknownMember { node: id(99) })
    );
    net.run_for(Duration::from_secs(30));
    assert_eq!(net.state(1, 2), Some(MemberState::Dead));
    let now = net.now;
    let one = net.nodes.get_mut(&id(1)).unwrap();
    let incarnation = one.member(id(2)).unwrap().incarnation;
    assert_eq!(
        one.force_leave(now, id(2)),
        Ok(ForceLeave::Left { incarnation })
    );
    assert_eq!(one.force_leave(now, id(2)), Ok(ForceLeave::AlreadyLeft));
    net.drain(id(1));
    assert!(net.events.iter().any(|(_, at, e)| *at == id(1)
        && *e
            == Event::MemberStateChanged {
                node: id(2),
                incarnation,
                from: Some(MemberState::Dead),
                to: MemberState::Left,
                by: Some(id(1)),
            }));
    // Gossip and anti-entropy with the others (who hold node 2 dead) change neither view.
    net.run_for(Duration::from_secs(60));
    assert_eq!(net.state(1, 2), Some(MemberState::Left));
    for i in [3, 4, 5] {
        assert_eq!(net.state(i, 2), Some(MemberState::Dead), "node {i}");
    }
    assert_eq!(net.nodes[&id(1)].alive_count(), 4);
}

/// A peer's datagram never makes a node hold a third member `Left` (docs/security.md,
/// "Membership claims"): a member's relayed `Left` about a dead member, as a piggybacked update
/// and as an anti-entropy record, leaves it dead; only the node's own `force_leave` (or the
/// member's own word) does.
#[test]
fn a_relayed_left_about_a_dead_member_is_refused() {
    let mut net = Net::converged(5, Profile::Lan);
    net.run_for(Duration::from_secs(2));
    net.down.insert(id(2));
    net.run_for(Duration::from_secs(30));
    assert_eq!(net.state(1, 2), Some(MemberState::Dead));
    let incarnation = net.nodes[&id(1)].member(id(2)).unwrap().incarnation;
    let left = Update::Left {
        node: id(2),
        incarnation,
    };
    let next = Update::Left {
        node: id(2),
        incarnation: incarnation.next(),
    };
    net.forge(3, 1, &Message::Gossip, &[left, next]);
    assert_eq!(net.state(1, 2), Some(MemberState::Dead), "piggybacked Left");
    let record = |incarnation| MemberRecord {
        node: id(2),
        incarnation,
        state: MemberState::Left,
        meta: MetaVersion::new(1, 0),
    };
    let sync = Message::SyncEntries {
        reply: wire::SyncReply::Nothing,
        records: vec![record(incarnation), record(incarnation.next())],
    };
    net.forge(3, 1, &sync, &[]);
    assert_eq!(net.state(1, 2), Some(MemberState::Dead), "Left record");
    // Node 3 forced it out: its gossip and records reach node 1, which still holds it dead.
    let now = net.now;
    assert!(matches!(
        net.nodes.get_mut(&id(3)).unwrap().force_leave(now, id(2)),
        Ok(ForceLeave::Left { .. })
    ));
    net.run_for(Duration::from_secs(60));
    assert_eq!(net.state(3, 2), Some(MemberState::Left));
    for i in [1, 4, 5] {
        assert_eq!(net.state(i, 2), Some(MemberState::Dead), "node {i}");
    }
}

/// Dead is an opinion: a member cut off (not crashed) and forced out everywhere on the
/// operator's word is alive again in every view once the cut heals: the nodes' anti-entropy
/// records hold it `left`, which it takes as a claim about itself and refutes at a newer
/// incarnation, as a member held dead does.
#[test]
fn a_member_forced_out_while_cut_off_comes_back_when_the_cut_heals() {
    let mut net = Net::converged(5, Profile::Lan);
    net.run_for(Duration::from_secs(2));
    net.partition(&[5], &[1, 2, 3, 4]);
    net.run_for(Duration::from_secs(30));
    for i in 1..=4 {
        assert_eq!(net.state(i, 5), Some(MemberState::Dead), "node {i}");
        let now = net.now;
        assert!(matches!(
            net.nodes.get_mut(&id(i)).unwrap().force_leave(now, id(5)),
            Ok(ForceLeave::Left { .. })
        ));
    }
    net.cut.clear();
    net.run_for(Duration::from_secs(90));
    for i in 1..=4 {
        assert_eq!(net.state(i, 5), Some(MemberState::Alive), "node {i}");
    }
}

/// A member can relay a write for another within the epoch its copy holds (that is how
/// addresses spread), so a forged one applies at first; the owner's own record of itself is
/// the truth, and a copy ahead of it is dropped and pulled again from the owner (see
/// `metadata_sync.rs`, "Whose word moves a copy").
#[test]
fn a_copy_ahead_of_the_owners_record_is_pulled_again_from_the_owner() {
    let mut net = Net::converged(5, Profile::Lan);
    let now = net.now;
    net.nodes
        .get_mut(&id(3))
        .unwrap()
        .set_metadata(now, "addr", b"10.0.0.3:7946")
        .unwrap();
    net.drain(id(3));
    net.run_for(Duration::from_secs(5));
    assert_same_metadata(&net, 1, 3);
    let forged = Update::Meta {
        node: id(3),
        version: MetaVersion::new(1, 2),
        key: "addr".into(),
        value: Some(b"6.6.6.6:1".to_vec()),
    };
    net.forge(2, 1, &Message::Gossip, core::slice::from_ref(&forged));
    let copy = net.nodes[&id(1)].metadata(id(3)).unwrap();
    assert_eq!(copy.version(), MetaVersion::new(1, 2), "taken at first");
    assert_eq!(copy.get("addr"), Some(&b"6.6.6.6:1"[..]));
    // The owner's record reaches each copy by anti-entropy: an exchange with node 3 itself,
    // which picks one random member every 30 s period. Twenty periods.
    net.run_for(Duration::from_secs(600));
    assert_eq!(
        net.nodes[&id(3)].metadata(id(3)).unwrap().version(),
        MetaVersion::new(1, 1)
    );
    for i in [1, 2, 4, 5] {
        assert_same_metadata(&net, i, 3);
    }
}

/// The debug lines of what a test run logs: the `node` field and the message of each event.
fn logged_lines(f: impl FnOnce()) -> Vec<(String, String)> {
    use std::sync::{Arc, Mutex};
    use tracing_subscriber::layer::SubscriberExt as _;

    #[derive(Default)]
    struct Fields {
        node: String,
        message: String,
    }
    impl tracing::field::Visit for Fields {
        fn record_debug(&mut self, field: &tracing::field::Field, value: &dyn fmt::Debug) {
            match field.name() {
                "node" => self.node = format!("{value:?}"),
                "message" => self.message = format!("{value:?}"),
                _ => {}
            }
        }
    }
    struct Record(Arc<Mutex<Vec<(String, String)>>>);
    impl<S: tracing::Subscriber> tracing_subscriber::Layer<S> for Record {
        fn on_event(
            &self,
            event: &tracing::Event<'_>,
            _ctx: tracing_subscriber::layer::Context<'_, S>,
        ) {
            let mut fields = Fields::default();
            event.record(&mut fields);
            self.0.lock().unwrap().push((fields.node, fields.message));
        }
    }
    let lines = Arc::new(Mutex::new(Vec::new()));
    let subscriber = tracing_subscriber::registry().with(Record(lines.clone()));
    // tracing caches a callsite's interest process-wide, computed when the callsite is first
    // hit. With at most one dispatcher registered it asks only the hitting thread's default, so
    // a test thread with no subscriber that first hits a callsite while this capture runs
    // caches it as `never`, and the event is lost here too (seen under `cargo test`, where the
    // tests share a process). A second, always-interested dispatcher held meanwhile makes every
    // registration ask all live dispatchers, this capture's included; the rebuild inside repairs
    // a callsite cached before the capture began.
    let _anchor = tracing::Dispatch::new(tracing_subscriber::registry());
    tracing::subscriber::with_default(subscriber, || {
        tracing::callsite::rebuild_interest_cache();
        f()
    });
    let lines = lines.lock().unwrap();
    lines.clone()
}

/// #12: state changes are logged at debug (the member, its incarnation), but a partition that
/// changes many members at once writes at most `STATE_LOG_BURST` lines per node per window.
/// Here 100 nodes split in halves: node 1 sees 50 members go suspect then dead (about 100
/// changes within about 10 s), and logs a bounded sample of them.
#[test]
fn state_change_lines_are_logged_and_rate_limited() {
    let mut net = Net::converged(100, Profile::Lan);
    net.run_for(Duration::from_secs(2));
    let first: Vec<u64> = (1..=50).collect();
    let second: Vec<u64> = (51..=100).collect();
    net.partition(&first, &second);
    let start = net.now;
    let window = Duration::from_secs(20);
    let lines = logged_lines(|| net.run_for(window));
    let changes = net
        .events
        .iter()
        .filter(|(t, n, e)| {
            *t >= start && *n == id(1) && matches!(e, Event::MemberStateChanged { .. })
        })
        .count();
    let node1 = id(1).to_string();
    let logged = lines
        .iter()
        .filter(|(node, message)| *node == node1 && message == "member state changed")
        .count();
    assert!(logged > 0, "state changes are logged");
    let windows = window.as_secs().div_ceil(STATE_LOG_WINDOW.as_secs()) + 1;
    assert!(
        logged <= STATE_LOG_BURST as usize * windows as usize,
        "{logged} lines for {changes} changes: more than the limit"
    );
    assert!(
        changes > logged,
        "{changes} changes, {logged} lines: the burst did not reach the limit"
    );
}

/// Issue 12, joins at N = 64 on real processes: a node that heard of a member from a relay had
/// no address for it until the member's metadata arrived, and the tokio driver dropped the
/// datagrams this node chose to send it, with the updates piggybacked on them (1,493 at
/// N = 64). With `require_routes`, a member the driver cannot address is chosen as no probe,
/// gossip, helper or anti-entropy target; once the driver can address it, it is probed.
#[test]
fn members_the_driver_cannot_address_are_not_chosen_as_targets() {
    let mut net = Net::converged(8, Profile::Lan);
    let m1 = net.nodes.get_mut(&id(1)).expect("node 1");
    m1.require_routes();
    for i in 2..=7 {
        m1.set_routable(id(i));
    }
    // Node 8's own datagrams to node 1 are cut, so whatever node 1 sends it is node 1's choice,
    // not an answer (answers go out: the transport answers on the connection that member
    // opened).
    net.cut.insert((id(8), id(1)));
    net.run_for(Duration::from_secs(20));
    assert_eq!(
        net.sent(1, 8),
        0,
        "node 1 chose a member it cannot address as a target"
    );
    for i in 2..=7 {
        assert!(net.sent(1, i) > 0, "node 1 sent nothing to node {i}");
    }
    assert_eq!(
        net.state(1, 8),
        Some(MemberState::Alive),
        "the others still vouch for node 8"
    );
    net.cut.remove(&(id(8), id(1)));
    net.nodes
        .get_mut(&id(1))
        .expect("node 1")
        .set_routable(id(8));
    // One probe round of 7 members at 1 s, and a little more.
    net.run_for(Duration::from_secs(9));
    assert!(
        net.sent(1, 8) > 0,
        "node 1 never probed node 8 once it could"
    );
    assert_eq!(net.state(1, 8), Some(MemberState::Alive));
}

/// The adversarial side of `require_routes`: a relay's phantoms (members no driver has an
/// address for) draw no datagram at all while they may still be a real member whose address
/// is on its way (the "ping at once" of an unverified member went to every phantom before),
/// and after an anti-entropy period they are probed all the same, fail and are forgotten, so
/// the relay's slots come back. Only the driver makes a member routable: no peer input does.
#[test]
fn a_relays_phantoms_without_an_address_draw_no_datagram_and_are_forgotten() {
    let mut net = Net::converged(6, Profile::Lan);
    let m1 = net.nodes.get_mut(&id(1)).expect("node 1");
    m1.require_routes();
    for i in 2..=6 {
        m1.set_routable(id(i));
    }
    net.run_for(Duration::from_secs(2));
    let members = net.nodes[&id(1)].member_count();
    let mut phantom = 10_000u64;
    let per_relay = MAX_UNVERIFIED_PER_INTRODUCER as usize;
    forge_phantoms(&mut net, 99, &mut phantom, per_relay);
    assert_eq!(net.nodes[&id(1)].member_count(), members + per_relay);
    // Within the grace (lan: anti-entropy every 30 s) nothing goes to a phantom.
    net.run_for(Duration::from_secs(25));
    let to_phantoms: u64 = (10_001..=phantom).map(|p| net.sent(1, p)).sum();
    assert_eq!(to_phantoms, 0, "node 1 sent datagrams to phantoms");
    // Then each is probed (the driver drops the ping), suspected, declared dead, forgotten.
    net.run_for(Duration::from_secs(300));
    assert_eq!(
        net.nodes[&id(1)].member_count(),
        members,
        "phantoms stayed in node 1's table"
    );
    let refused = net.nodes[&id(1)].stats().introductions_refused;
    forge_phantoms(&mut net, 99, &mut phantom, per_relay);
    assert_eq!(
        net.nodes[&id(1)].stats().introductions_refused,
        refused,
        "the relay's slots were not freed"
    );
}
