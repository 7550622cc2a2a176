//! Criterion benchmarks of one `Membership` step, for a node that knows 1,000 and 10,000 members
//! (added with `add_known_member`, all Alive), in steady state.
//!
//! * `ping`: `handle_datagram` of a bare Ping from a member, then draining `poll_transmit` (one
//!   Ack).
//! * `ping_loaded`: the same Ping carrying a full load (56) of piggybacked Alive updates that
//!   repeat what the node already holds, so every iteration does the same work.
//! * `probe_period`: one probe interval (1 s of virtual time) of timers: every `handle_timeout`
//!   that comes due within it, each followed by draining `poll_transmit`. That is one probe, five
//!   gossip ticks, and every 5 s / 30 s the dead-probe, maintenance and anti-entropy timers, so
//!   the figure is the per-period average. Only `handle_timeout` and the drain are timed; the
//!   probed member's Ack is fed back outside the timing, so no member is ever suspected.
//! * `digest_exchange`: one anti-entropy round between two converged nodes: the initiator's
//!   digest datagram (the bytes its own anti-entropy timer produced) is encoded, the responder
//!   runs `handle_datagram` on it and drains `poll_transmit` (nothing: no bucket differs).
//!
//! Run: `cargo bench -p meshkit-benches --bench node_step`.

use std::hint::black_box;
use std::time::{Duration as StdDuration, Instant as StdInstant};

use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};
use meshkit::config::{Config, Profile};
use meshkit::membership::Membership;
use meshkit::wire::{self, MAX_DATAGRAM_BYTES, Message, Update};
use meshkit::{Duration, Incarnation, Instant, MetaVersion, NodeId};

const SIZES: [u64; 2] = [1_000, 10_000];

/// A node `id` that knows members `0..=n` (itself excluded), all Alive at incarnation 1.
fn converged_node(id: u64, n: u64, seed: u64) -> Membership {
    let now = Instant::ZERO;
    let mut node = Membership::new(
        Config::from_profile(Profile::Lan),
        NodeId::new(id),
        Incarnation::new(1),
        seed,
        now,
    );
    for member in 0..=n {
        node.add_known_member(now, NodeId::new(member), Incarnation::new(1));
    }
    node
}

/// Drains every transmit, returning how many there were.
fn drain(node: &mut Membership, now: Instant, buf: &mut Vec<u8>) -> usize {
    let mut sent = 0;
    while let Some(t) = node.poll_transmit(now, buf) {
        black_box(&buf[..t.len]);
        sent += 1;
    }
    sent
}

fn encode(sender: NodeId, message: &Message, updates: &[Update]) -> Vec<u8> {
    let mut buf = Vec::new();
    let count_at = wire::encode_message(sender, message, &mut buf);
    let mut encoded = Vec::new();
    for u in updates {
        encoded.clear();
        wire::encode_update(u, &mut encoded);
        if !wire::append_update(&mut buf, count_at, &encoded) {
            break;
        }
    }
    buf
}

fn ping(c: &mut Criterion) {
    let mut group = c.benchmark_group("node_step");
    for n in SIZES {
        let mut node = converged_node(0, n, 1);
        let from = NodeId::new(7);
        let ping = Message::Ping {
            seq: 1,
            target: NodeId::new(0),
        };
        let bare = encode(from, &ping, &[]);
        // Alive claims equal to what the node holds: applied, found not newer, dropped.
        let claims: Vec<Update> = (1..=n)
            .map(|m| Update::Alive {
                node: NodeId::new(m),
                incarnation: Incarnation::new(1),
                meta: MetaVersion::new(1, 0),
            })
            .collect();
        let loaded = encode(from, &ping, &claims);
        let loaded_updates = wire::decode(&loaded).expect("decodes").updates.len();
        println!(
            "node_step/ping_loaded: {} bytes, {loaded_updates} updates",
            loaded.len()
        );
        let now = Instant::ZERO;
        let mut buf = Vec::with_capacity(MAX_DATAGRAM_BYTES);
        for (name, bytes) in [("ping", &bare), ("ping_loaded", &loaded)] {
            node.handle_datagram(now, from, bytes).expect("valid ping");
            assert_eq!(drain(&mut node, now, &mut buf), 1, "one Ack");
            assert_eq!(node.poll_event(), None, "steady state: nothing changes");
            group.bench_with_input(BenchmarkId::new(name, n), bytes, |b, bytes| {
                b.iter(|| {
                    node.handle_datagram(now, from, black_box(bytes))
                        .expect("valid ping");
                    drain(&mut node, now, &mut buf)
                });
            });
        }
    }
    group.finish();
}

/// Runs the timers due up to `until`; returns the time spent in `handle_timeout` and draining,
/// after feeding each Ping's Ack back untimed.
fn run_period(
    node: &mut Membership,
    now: &mut Instant,
    until: Instant,
    buf: &mut Vec<u8>,
    sent: &mut Vec<Vec<u8>>,
) -> StdDuration {
    let mut spent = StdDuration::ZERO;
    while let Some(at) = node.poll_timeout().filter(|at| *at <= until) {
        *now = at;
        let start = StdInstant::now();
        node.handle_timeout(*now);
        while let Some(t) = node.poll_transmit(*now, buf) {
            sent.push(buf[..t.len].to_vec());
        }
        spent += start.elapsed();
        for bytes in sent.drain(..) {
            if let Ok(wire::Datagram {
                message: Message::Ping { seq, target },
                ..
            }) = wire::decode(&bytes)
            {
                let ack = encode(target, &Message::Ack { seq }, &[]);
                node.handle_datagram(*now, target, &ack).expect("valid ack");
                while let Some(t) = node.poll_transmit(*now, buf) {
                    black_box(&buf[..t.len]);
                }
            }
        }
        while node.poll_event().is_some() {}
    }
    *now = until;
    spent
}

fn probe_period(c: &mut Criterion) {
    let mut group = c.benchmark_group("node_step");
    for n in SIZES {
        let mut node = converged_node(0, n, 2);
        let interval = node.config().probe_interval();
        let mut now = Instant::ZERO;
        let mut buf = Vec::with_capacity(MAX_DATAGRAM_BYTES);
        let mut sent = Vec::new();
        // A minute of warm-up: every timer has fired; nobody may be suspected.
        run_period(
            &mut node,
            &mut now,
            Instant::ZERO + Duration::from_secs(60),
            &mut buf,
            &mut sent,
        );
        assert_eq!(node.alive_count() as u64, n + 1, "acks keep everyone alive");
        group.bench_function(BenchmarkId::new("probe_period", n), |b| {
            b.iter_custom(|iters| {
                let mut spent = StdDuration::ZERO;
                for _ in 0..iters {
                    let until = now + interval;
                    spent += run_period(&mut node, &mut now, until, &mut buf, &mut sent);
                }
                spent
            });
        });
        assert_eq!(node.alive_count() as u64, n + 1, "acks keep everyone alive");
    }
    group.finish();
}

fn digest_exchange(c: &mut Criterion) {
    let mut group = c.benchmark_group("node_step");
    for n in SIZES {
        let mut initiator = converged_node(0, n, 3);
        let mut responder = converged_node(1, n, 4);
        // Run the initiator's timers until its anti-entropy timer sends a digest.
        let mut now = Instant::ZERO;
        let mut buf = Vec::with_capacity(MAX_DATAGRAM_BYTES);
        let mut digests = None;
        while digests.is_none() {
            let at = initiator.poll_timeout().expect("a timer is armed");
            now = at;
            initiator.handle_timeout(now);
            let mut out = Vec::new();
            while let Some(t) = initiator.poll_transmit(now, &mut buf) {
                out.push(buf[..t.len].to_vec());
            }
            for bytes in out {
                match wire::decode(&bytes).expect("decodes").message {
                    Message::SyncDigest {
                        all: false,
                        digests: d,
                    } => digests = Some(d),
                    Message::Ping { seq, target } => {
                        let ack = encode(target, &Message::Ack { seq }, &[]);
                        initiator.handle_datagram(now, target, &ack).expect("ack");
                        while let Some(t) = initiator.poll_transmit(now, &mut buf) {
                            black_box(&buf[..t.len]);
                        }
                    }
                    _ => {}
                }
            }
        }
        let message = Message::SyncDigest {
            all: false,
            digests: digests.expect("loop ends with a digest"),
        };
        let from = initiator.local_id();
        let bytes = encode(from, &message, &[]);
        responder
            .handle_datagram(now, from, &bytes)
            .expect("valid digest");
        assert_eq!(
            drain(&mut responder, now, &mut buf),
            0,
            "converged: no bucket differs, nothing to send"
        );
        let mut out = Vec::with_capacity(MAX_DATAGRAM_BYTES);
        group.bench_function(BenchmarkId::new("digest_exchange", n), |b| {
            b.iter(|| {
                let _ = wire::encode_message(from, black_box(&message), &mut out);
                responder
                    .handle_datagram(now, from, &out)
                    .expect("valid digest");
                drain(&mut responder, now, &mut buf)
            });
        });
    }
    group.finish();
}

criterion_group!(benches, ping, probe_period, digest_exchange);
criterion_main!(benches);
