//! Criterion benchmarks of the chaos transport wrapper (`meshkit_net::transport::chaos`): what
//! one message costs to pass through it, over a transport that does nothing.
//!
//! * `bare`: the inner transport alone.
//! * `no_rules`: wrapped, with no rule (every node's case while `[chaos]` is off or nothing is
//!   active).
//! * `rule_on_other_link`: wrapped, with a cut on another peer's link (the table is read, this
//!   link has no rule).
//! * `loss_0`: wrapped, with a loss rule of rate 0 on this link (a draw per message).
//!
//! Run: `cargo bench -p meshkit-benches --bench chaos_transport`.

use std::hint::black_box;
use std::net::SocketAddr;
use std::task::{Context, Poll};

use bytes::Bytes;
use criterion::{Criterion, criterion_group, criterion_main};
use meshkit::NodeId;
use meshkit_net::transport::chaos::{
    ChaosLinks, ChaosRules, ChaosTransport, LinkEffect, LinkRule, LinkSide,
};
use meshkit_net::transport::{Received, Transport};

const PEER: NodeId = NodeId::new(2);

/// Sends nowhere, receives nothing.
struct Null;

impl Transport for Null {
    fn send(&mut self, to: NodeId, addr: Option<SocketAddr>, datagram: Bytes) {
        black_box((to, addr, datagram));
    }

    fn poll_recv(&mut self, _cx: &mut Context<'_>) -> Poll<Option<Received>> {
        Poll::Pending
    }
}

fn send<T: Transport>(t: &mut T, datagram: &Bytes) {
    t.send(black_box(PEER), None, datagram.clone());
}

fn bench(c: &mut Criterion) {
    let datagram = Bytes::from(vec![0u8; 1_100]);
    let mut group = c.benchmark_group("chaos_transport_send");
    let mut bare = Null;
    group.bench_function("bare", |b| b.iter(|| send(&mut bare, &datagram)));
    let wrapped = |rules: Option<ChaosRules>| {
        let links = ChaosLinks::new();
        if let Some(rules) = rules {
            links.set(rules);
        }
        ChaosTransport::new(Null, NodeId::new(1), links)
    };
    let mut none = wrapped(None);
    group.bench_function("no_rules", |b| b.iter(|| send(&mut none, &datagram)));
    let rule = |peer, effect| {
        ChaosRules::new(
            1,
            [LinkRule {
                side: LinkSide::Outbound,
                peer,
                effect,
            }],
        )
    };
    let mut other = wrapped(Some(rule(NodeId::new(3), LinkEffect::Cut)));
    group.bench_function("rule_on_other_link", |b| {
        b.iter(|| send(&mut other, &datagram));
    });
    let mut loss = wrapped(Some(rule(PEER, LinkEffect::Loss { rate: 0.0 })));
    group.bench_function("loss_0", |b| b.iter(|| send(&mut loss, &datagram)));
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
