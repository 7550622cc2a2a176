//! Criterion benchmarks of the wire codec: encoding and decoding the largest datagrams MeshKit
//! sends in steady state.
//!
//! * `ping_full`: a Ping carrying as many piggybacked membership updates (Alive, Suspect, Dead
//!   in turn, 21 bytes each) as fit; encoding appends them pre-encoded, as the dissemination
//!   queue does.
//! * `sync_digest`: the 128 bucket digests of one anti-entropy round.
//! * `sync_entries`: `MAX_RECORDS_PER_DATAGRAM` member records.
//! * `meta_push`: one chunk of about 1 KB of metadata (8 keys of 16 bytes, values of 100 bytes).
//!
//! Run: `cargo bench -p meshkit-benches --bench codec`.

use std::hint::black_box;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use meshkit::membership::MemberState;
use meshkit::wire::{
    self, DIGEST_BUCKETS, MAX_DATAGRAM_BYTES, MAX_RECORDS_PER_DATAGRAM, MemberRecord, Message,
    MetaEntry, SyncReply, Update,
};
use meshkit::{Incarnation, MetaVersion, NodeId};

const SENDER: NodeId = NodeId::new(1);

/// One datagram to benchmark: its message and its pre-encoded piggybacked updates.
struct Case {
    name: &'static str,
    message: Message,
    updates: Vec<Vec<u8>>,
}

impl Case {
    fn encode(&self, buf: &mut Vec<u8>) {
        let count_at = wire::encode_message(SENDER, &self.message, buf);
        for u in &self.updates {
            let appended = wire::append_update(buf, count_at, u);
            debug_assert!(appended, "the benchmark's updates were chosen to fit");
        }
    }
}

fn ping_full() -> Case {
    let mut updates = Vec::new();
    let mut len = {
        let mut buf = Vec::new();
        let _ = wire::encode_message(
            SENDER,
            &Message::Ping {
                seq: 1,
                target: NodeId::new(2),
            },
            &mut buf,
        );
        buf.len()
    };
    for i in 0u64.. {
        let node = NodeId::new(1_000 + i);
        let incarnation = Incarnation::new(3);
        let update = match i % 3 {
            0 => Update::Alive {
                node,
                incarnation,
                meta: MetaVersion::new(3, 7),
            },
            1 => Update::Suspect {
                node,
                incarnation,
                from: NodeId::new(9),
            },
            _ => Update::Dead {
                node,
                incarnation,
                from: NodeId::new(9),
            },
        };
        let mut encoded = Vec::new();
        wire::encode_update(&update, &mut encoded);
        if len + encoded.len() > MAX_DATAGRAM_BYTES {
            break;
        }
        len += encoded.len();
        updates.push(encoded);
    }
    Case {
        name: "ping_full",
        message: Message::Ping {
            seq: 1,
            target: NodeId::new(2),
        },
        updates,
    }
}

fn cases() -> Vec<Case> {
    let records = (0..MAX_RECORDS_PER_DATAGRAM as u64)
        .map(|i| MemberRecord {
            node: NodeId::new(1_000 + i),
            incarnation: Incarnation::new(3),
            state: MemberState::Alive,
            meta: MetaVersion::new(3, 7),
        })
        .collect();
    let entries = (0..8)
        .map(|i| MetaEntry {
            key: format!("service/key-{i:04}"),
            seq: i + 1,
            value: Some(vec![0x5A; 100]),
        })
        .collect();
    vec![
        ping_full(),
        Case {
            name: "sync_digest",
            message: Message::SyncDigest {
                all: false,
                digests: (0..DIGEST_BUCKETS as u64)
                    .map(|i| i.wrapping_mul(0x9E37_79B9_7F4A_7C15))
                    .collect(),
            },
            updates: Vec::new(),
        },
        Case {
            name: "sync_entries",
            message: Message::SyncEntries {
                reply: SyncReply::Buckets(0b1011),
                records,
            },
            updates: Vec::new(),
        },
        Case {
            name: "meta_push",
            message: Message::MetaPush {
                node: NodeId::new(42),
                base: Some(MetaVersion::new(3, 0)),
                version: MetaVersion::new(3, 8),
                chunk: 0,
                chunks: 1,
                entries,
            },
            updates: Vec::new(),
        },
    ]
}

fn codec(c: &mut Criterion) {
    let mut group = c.benchmark_group("codec");
    for case in cases() {
        let mut bytes = Vec::new();
        case.encode(&mut bytes);
        assert!(bytes.len() <= MAX_DATAGRAM_BYTES);
        let decoded = wire::decode(&bytes).expect("the benchmark's datagrams decode");
        assert_eq!(decoded.updates.len(), case.updates.len());
        println!(
            "codec/{}: {} bytes, {} updates",
            case.name,
            bytes.len(),
            case.updates.len()
        );
        group.throughput(Throughput::Bytes(bytes.len() as u64));
        let mut buf = Vec::with_capacity(MAX_DATAGRAM_BYTES);
        group.bench_function(format!("encode/{}", case.name), |b| {
            b.iter(|| {
                black_box(&case).encode(&mut buf);
                black_box(buf.len())
            });
        });
        group.bench_function(format!("decode/{}", case.name), |b| {
            b.iter(|| wire::decode(black_box(&bytes)));
        });
    }
    group.finish();
}

criterion_group!(benches, codec);
criterion_main!(benches);
