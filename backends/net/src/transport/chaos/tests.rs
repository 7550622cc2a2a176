//! Each rule of the wrapper, over the in-memory network: node 1 is wrapped, node 2 is not.
//! Time is tokio's paused clock, so delays are exact and the tests take no real time.

use std::collections::BTreeSet;
use std::future::poll_fn;

use super::*;
use crate::transport::memory::{MemoryNetwork, MemoryTransport};

const A: NodeId = NodeId::new(1);
const B: NodeId = NodeId::new(2);

fn pair() -> (ChaosTransport<MemoryTransport>, MemoryTransport, ChaosLinks) {
    let network = MemoryNetwork::new();
    let links = ChaosLinks::new();
    let a = ChaosTransport::new(network.attach(A), A, links.clone());
    let b = network.attach(B);
    (a, b, links)
}

fn rule(side: LinkSide, effect: LinkEffect) -> ChaosRules {
    ChaosRules::new(
        7,
        [LinkRule {
            side,
            peer: B,
            effect,
        }],
    )
}

fn msg(i: u32) -> Bytes {
    Bytes::copy_from_slice(&i.to_be_bytes())
}

fn number(b: &Bytes) -> u32 {
    u32::from_be_bytes(b[..4].try_into().unwrap())
}

/// What is waiting for `t` now, without waiting.
fn drain<T: Transport>(t: &mut T) -> Vec<u32> {
    let waker = std::task::Waker::noop();
    let mut cx = Context::from_waker(waker);
    let mut out = Vec::new();
    for _ in 0..100_000 {
        match t.poll_recv(&mut cx) {
            Poll::Ready(Some(r)) => out.push(number(&r.datagram)),
            _ => break,
        }
    }
    out
}

/// Sends `n` numbered messages from A to B and returns what B got.
fn send_out(a: &mut ChaosTransport<MemoryTransport>, b: &mut MemoryTransport, n: u32) -> Vec<u32> {
    let mut got = Vec::new();
    for i in 0..n {
        a.send(B, None, msg(i));
        // Drained as it goes: the memory network's queue holds 1024.
        got.extend(drain(b));
    }
    got
}

/// Sends `n` numbered messages from B to A and returns what A's wrapper delivered.
fn send_in(a: &mut ChaosTransport<MemoryTransport>, b: &mut MemoryTransport, n: u32) -> Vec<u32> {
    let mut got = Vec::new();
    for i in 0..n {
        b.send(A, None, msg(i));
        got.extend(drain(a));
    }
    got
}

#[tokio::test(start_paused = true)]
async fn no_rules_pass_everything_in_order() {
    // Unconstrained: the memory network's channel would otherwise run out of tokio's
    // cooperative budget in these loops and report nothing to receive.
    tokio::task::unconstrained(async {
        let (mut a, mut b, links) = pair();
        assert_eq!(send_out(&mut a, &mut b, 100), (0..100).collect::<Vec<_>>());
        assert_eq!(send_in(&mut a, &mut b, 100), (0..100).collect::<Vec<_>>());
        assert_eq!(links.counts(), LinkCounts::default());
    })
    .await;
}

/// Independent loss at 30%: within 27..33% of 10,000 messages, both directions; the same seed
/// drops the same messages.
#[tokio::test(start_paused = true)]
async fn loss_rate_is_within_bounds_and_reproducible() {
    // Unconstrained: the memory network's channel would otherwise run out of tokio's
    // cooperative budget in these loops and report nothing to receive.
    tokio::task::unconstrained(async {
        for side in [LinkSide::Outbound, LinkSide::Inbound] {
            let mut runs = Vec::new();
            for _ in 0..2 {
                let (mut a, mut b, links) = pair();
                links.set(rule(side, LinkEffect::Loss { rate: 0.3 }));
                let got = match side {
                    LinkSide::Outbound => send_out(&mut a, &mut b, 10_000),
                    LinkSide::Inbound => send_in(&mut a, &mut b, 10_000),
                };
                let lost = 10_000 - got.len() as u64;
                assert!(
                    (2_700..=3_300).contains(&lost),
                    "{side:?}: {lost} of 10000 lost"
                );
                assert_eq!(links.counts().dropped, lost);
                runs.push(got);
            }
            assert_eq!(runs[0], runs[1], "{side:?}: the same seed, the same drops");
        }
    })
    .await;
}

/// Gilbert-Elliott: the loss rate is the chain's (enter / (enter + leave) x loss = 25%), and
/// losses come in bursts (mean run of losses near 1 / leave = 5, far above independent loss's
/// 1.33 at that rate).
#[tokio::test(start_paused = true)]
async fn bursty_loss_comes_in_runs() {
    // Unconstrained: the memory network's channel would otherwise run out of tokio's
    // cooperative budget in these loops and report nothing to receive.
    tokio::task::unconstrained(async {
        let (mut a, mut b, links) = pair();
        links.set(rule(
            LinkSide::Outbound,
            LinkEffect::BurstyLoss {
                enter: 0.0667,
                leave: 0.2,
                loss: 1.0,
            },
        ));
        let got: BTreeSet<u32> = send_out(&mut a, &mut b, 20_000).into_iter().collect();
        let lost = 20_000 - got.len();
        assert!((4_000..=6_000).contains(&lost), "{lost} of 20000 lost");
        let mut runs = 0;
        let mut in_run = false;
        for i in 0..20_000 {
            let missing = !got.contains(&i);
            if missing && !in_run {
                runs += 1;
            }
            in_run = missing;
        }
        let mean_run = lost as f64 / f64::from(runs);
        assert!(mean_run > 3.5, "mean run of losses {mean_run:.2}");
    })
    .await;
}

/// Latency holds every message exactly `delay` (no jitter) and keeps their order.
#[tokio::test(start_paused = true)]
async fn latency_delays_in_order() {
    // Unconstrained: the memory network's channel would otherwise run out of tokio's
    // cooperative budget in these loops and report nothing to receive.
    tokio::task::unconstrained(async {
        let (mut a, mut b, links) = pair();
        links.set(rule(
            LinkSide::Outbound,
            LinkEffect::Latency {
                delay: Duration::from_millis(50),
                jitter: Duration::ZERO,
            },
        ));
        for i in 0..10 {
            a.send(B, None, msg(i));
        }
        assert!(drain(&mut b).is_empty(), "nothing before the delay");
        assert_eq!(a.held(), 10);
        tokio::time::advance(Duration::from_millis(49)).await;
        drain(&mut a);
        assert!(drain(&mut b).is_empty(), "nothing at 49 ms");
        tokio::time::advance(Duration::from_millis(1)).await;
        drain(&mut a); // the driver's poll releases what is due
        assert_eq!(drain(&mut b), (0..10).collect::<Vec<_>>());
        assert_eq!(links.counts().delayed, 10);

        // Inbound, with jitter: everything arrives, none before the fixed part.
        links.set(rule(
            LinkSide::Inbound,
            LinkEffect::Latency {
                delay: Duration::from_millis(20),
                jitter: Duration::from_millis(10),
            },
        ));
        for i in 0..50 {
            b.send(A, None, msg(i));
        }
        assert!(drain(&mut a).is_empty());
        tokio::time::advance(Duration::from_millis(19)).await;
        assert!(drain(&mut a).is_empty(), "nothing before 20 ms");
        let mut got = Vec::new();
        for _ in 0..1_000 {
            tokio::time::advance(Duration::from_millis(10)).await;
            got.extend(drain(&mut a));
            if got.len() == 50 {
                break;
            }
        }
        got.sort_unstable();
        assert_eq!(got, (0..50).collect::<Vec<_>>());
    })
    .await;
}

/// The driver's task is woken when a held message comes due: a real poll on the wrapper
/// resolves without anyone sending.
#[tokio::test(start_paused = true)]
async fn a_held_inbound_message_wakes_the_receiver() {
    // Unconstrained: the memory network's channel would otherwise run out of tokio's
    // cooperative budget in these loops and report nothing to receive.
    tokio::task::unconstrained(async {
        let (mut a, b, links) = pair();
        links.set(rule(
            LinkSide::Inbound,
            LinkEffect::Latency {
                delay: Duration::from_millis(30),
                jitter: Duration::ZERO,
            },
        ));
        let mut b = b;
        b.send(A, None, msg(5));
        let start = Instant::now();
        let got = poll_fn(|cx| a.poll_recv(cx)).await.unwrap();
        assert_eq!(number(&got.datagram), 5);
        assert_eq!(start.elapsed(), Duration::from_millis(30));
    })
    .await;
}

/// A one-way cut drops only its direction: A's messages to B are gone, B's reach A.
#[tokio::test(start_paused = true)]
async fn a_one_way_cut_cuts_only_its_direction() {
    // Unconstrained: the memory network's channel would otherwise run out of tokio's
    // cooperative budget in these loops and report nothing to receive.
    tokio::task::unconstrained(async {
        let (mut a, mut b, links) = pair();
        links.set(rule(LinkSide::Outbound, LinkEffect::Cut));
        assert!(send_out(&mut a, &mut b, 100).is_empty());
        assert_eq!(send_in(&mut a, &mut b, 100).len(), 100);
        assert_eq!(links.counts().dropped, 100);
        // And the other way round.
        links.set(rule(LinkSide::Inbound, LinkEffect::Cut));
        assert_eq!(send_out(&mut a, &mut b, 100).len(), 100);
        assert!(send_in(&mut a, &mut b, 100).is_empty());
        // A rule on another peer's link leaves B's alone.
        links.set(ChaosRules::new(
            0,
            [LinkRule {
                side: LinkSide::Outbound,
                peer: NodeId::new(3),
                effect: LinkEffect::Cut,
            }],
        ));
        assert_eq!(send_out(&mut a, &mut b, 10).len(), 10);
    })
    .await;
}

/// Duplication at rate 1 delivers every message twice, in both directions.
#[tokio::test(start_paused = true)]
async fn duplicate_delivers_twice() {
    // Unconstrained: the memory network's channel would otherwise run out of tokio's
    // cooperative budget in these loops and report nothing to receive.
    tokio::task::unconstrained(async {
        let (mut a, mut b, links) = pair();
        links.set(rule(
            LinkSide::Outbound,
            LinkEffect::Duplicate { rate: 1.0 },
        ));
        assert_eq!(send_out(&mut a, &mut b, 3), [0, 0, 1, 1, 2, 2]);
        links.set(rule(LinkSide::Inbound, LinkEffect::Duplicate { rate: 1.0 }));
        assert_eq!(send_in(&mut a, &mut b, 3), [0, 0, 1, 1, 2, 2]);
        assert_eq!(links.counts().duplicated, 6);
    })
    .await;
}

/// Reordering holds messages a random part of `max_delay`: all arrive, not in send order.
#[tokio::test(start_paused = true)]
async fn reorder_delivers_all_out_of_order() {
    // Unconstrained: the memory network's channel would otherwise run out of tokio's
    // cooperative budget in these loops and report nothing to receive.
    tokio::task::unconstrained(async {
        let (mut a, mut b, links) = pair();
        links.set(rule(
            LinkSide::Outbound,
            LinkEffect::Reorder {
                rate: 1.0,
                max_delay: Duration::from_millis(100),
            },
        ));
        for i in 0..20 {
            a.send(B, None, msg(i));
        }
        tokio::time::advance(Duration::from_millis(101)).await;
        drain(&mut a);
        let got = drain(&mut b);
        let mut sorted = got.clone();
        sorted.sort_unstable();
        assert_eq!(sorted, (0..20).collect::<Vec<_>>());
        assert_ne!(got, sorted, "some overtook others");
        assert_eq!(links.counts().reordered, 20);
    })
    .await;
}

/// Clearing the table (a revert) removes the rule from the next message on.
#[tokio::test(start_paused = true)]
async fn revert_removes_the_rule() {
    // Unconstrained: the memory network's channel would otherwise run out of tokio's
    // cooperative budget in these loops and report nothing to receive.
    tokio::task::unconstrained(async {
        let (mut a, mut b, links) = pair();
        links.set(rule(LinkSide::Outbound, LinkEffect::Cut));
        assert!(send_out(&mut a, &mut b, 10).is_empty());
        links.clear();
        assert_eq!(send_out(&mut a, &mut b, 10), (0..10).collect::<Vec<_>>());
        assert_eq!(links.counts().dropped, 10);
    })
    .await;
}

/// The held queue is bounded: past MAX_HELD_MESSAGES a delayed message is dropped and counted.
#[tokio::test(start_paused = true)]
async fn a_full_hold_queue_drops_and_counts() {
    // Unconstrained: the memory network's channel would otherwise run out of tokio's
    // cooperative budget in these loops and report nothing to receive.
    tokio::task::unconstrained(async {
        let (mut a, _b, links) = pair();
        links.set(rule(
            LinkSide::Outbound,
            LinkEffect::Latency {
                delay: Duration::from_secs(1),
                jitter: Duration::ZERO,
            },
        ));
        for i in 0..(MAX_HELD_MESSAGES as u32 + 10) {
            a.send(B, None, msg(i));
        }
        assert_eq!(a.held(), MAX_HELD_MESSAGES);
        let counts = links.counts();
        assert_eq!(counts.overflow_dropped, 10);
        assert_eq!(counts.dropped, 10);
    })
    .await;
}
