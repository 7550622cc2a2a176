//! Drives one `Membership` with arbitrary operations: raw datagrams, datagrams whose header names
//! the right sender, well-formed datagrams built from the fuzzer's bytes, time passing, and the
//! local commands. Peer input must never panic the node (STYLE rule 11), and every datagram the
//! node sends must decode and fit `MAX_DATAGRAM_BYTES`.
//!
//! Node ids come mostly from a small pool (the local node, four known members, three strangers)
//! so that claims, probes and metadata transfers meet the members the node knows.

#![no_main]

use libfuzzer_sys::arbitrary::{self, Arbitrary, Unstructured};
use libfuzzer_sys::fuzz_target;
use meshkit::config::{Config, Profile};
use meshkit::membership::{MemberState, Membership};
use meshkit::wire::{
    self, DIGEST_BUCKETS, MAX_DATAGRAM_BYTES, MAX_KEY_BYTES, MAX_META_CHUNK_BYTES, MAX_META_CHUNKS,
    MAX_RECORDS_PER_DATAGRAM, MAX_VALUE_BYTES, MemberRecord, Message, MetaEntry, SyncReply, Update,
};
use meshkit::{Duration, Incarnation, Instant, MetaVersion, NodeId};

/// Ids 1..=8: 1 is the local node, 2..=5 are known members, 6..=8 strangers.
const POOL: u64 = 8;
const LOCAL: NodeId = NodeId::new(1);
const KNOWN: [u64; 4] = [2, 3, 4, 5];
/// Operations per input; each drains the node, so this bounds the work of one run.
const MAX_OPS: usize = 64;
/// Timer rounds run after one step of time, at most.
const MAX_TIMER_ROUNDS: usize = 32;

fuzz_target!(|data: &[u8]| {
    let mut u = Unstructured::new(data);
    let Ok(seed) = u.arbitrary::<u64>() else {
        return;
    };
    let mut now = Instant::ZERO;
    let mut node = Membership::new(
        Config::from_profile(Profile::Lan),
        LOCAL,
        Incarnation::new(1),
        seed,
        now,
    );
    for id in KNOWN {
        node.add_known_member(now, NodeId::new(id), Incarnation::new(1));
    }
    let mut buf = Vec::new();
    drain(&mut node, now, &mut buf);
    for _ in 0..MAX_OPS {
        let Ok(op) = u.arbitrary::<Op>() else {
            break;
        };
        match op {
            Op::Raw { from, bytes } => {
                let _ = node.handle_datagram(now, from, &bytes);
            }
            Op::Body { from, kind, body } => {
                let mut bytes = vec![wire::PROTOCOL_VERSION, kind];
                // The sender as a LEB128 varint, as the header writes it.
                let mut sender = from.get();
                while sender >= 0x80 {
                    bytes.push((sender as u8) | 0x80);
                    sender >>= 7;
                }
                bytes.push(sender as u8);
                bytes.extend_from_slice(&body);
                let _ = node.handle_datagram(now, from, &bytes);
            }
            Op::Datagram {
                from,
                message,
                updates,
            } => {
                let bytes = encode(from, &message, &updates);
                let _ = node.handle_datagram(now, from, &bytes);
            }
            Op::Advance { millis } => {
                now += Duration::from_millis(u64::from(millis));
                // A spurious call must be a no-op.
                node.handle_timeout(now);
                for _ in 0..MAX_TIMER_ROUNDS {
                    drain(&mut node, now, &mut buf);
                    match node.poll_timeout() {
                        Some(at) if at <= now => node.handle_timeout(now),
                        _ => break,
                    }
                }
            }
            Op::SetMetadata { key, value } => {
                let _ = node.set_metadata(now, &key, &value);
            }
            Op::DeleteMetadata { key } => {
                let _ = node.delete_metadata(now, &key);
            }
            Op::Join { seed } => node.handle_join(now, &[seed]),
            Op::Leave => node.leave(now),
        }
        drain(&mut node, now, &mut buf);
    }
});

/// One input to the node.
#[derive(Debug)]
enum Op {
    /// Bytes as received from `from`.
    Raw { from: NodeId, bytes: Vec<u8> },
    /// A header naming `from` as the sender, then arbitrary bytes.
    Body {
        from: NodeId,
        kind: u8,
        body: Vec<u8>,
    },
    /// A well-formed datagram from `from`.
    Datagram {
        from: NodeId,
        message: Message,
        updates: Vec<Update>,
    },
    /// Time passes; the timers that come due run.
    Advance { millis: u16 },
    /// The application sets one of its keys.
    SetMetadata { key: String, value: Vec<u8> },
    /// The application deletes one of its keys.
    DeleteMetadata { key: String },
    /// The application joins through `seed`.
    Join { seed: NodeId },
    /// The application leaves.
    Leave,
}

impl<'a> Arbitrary<'a> for Op {
    fn arbitrary(u: &mut Unstructured<'a>) -> arbitrary::Result<Self> {
        Ok(match u.int_in_range(0..=9u8)? {
            0 => Self::Raw {
                from: node_id(u)?,
                bytes: u.arbitrary()?,
            },
            1 => Self::Body {
                from: node_id(u)?,
                kind: u.arbitrary()?,
                body: u.arbitrary()?,
            },
            2..=4 => Self::Datagram {
                from: node_id(u)?,
                message: message(u)?,
                updates: {
                    let n = u.int_in_range(0..=8)?;
                    (0..n)
                        .map(|_| update(u))
                        .collect::<arbitrary::Result<_>>()?
                },
            },
            5 | 6 => Self::Advance {
                millis: u.arbitrary()?,
            },
            7 => Self::SetMetadata {
                key: key(u)?,
                value: bytes(u, 64)?,
            },
            8 => Self::DeleteMetadata { key: key(u)? },
            _ => {
                if u.ratio(1, 4)? {
                    Self::Leave
                } else {
                    Self::Join { seed: node_id(u)? }
                }
            }
        })
    }
}

/// Mostly an id of the pool; now and then any id.
fn node_id(u: &mut Unstructured<'_>) -> arbitrary::Result<NodeId> {
    Ok(NodeId::new(if u.ratio(15, 16)? {
        u.int_in_range(1..=POOL)?
    } else {
        u.arbitrary()?
    }))
}

/// Small numbers, so that claims and versions meet what the node holds.
fn small(u: &mut Unstructured<'_>) -> arbitrary::Result<u32> {
    if u.ratio(15, 16)? {
        u.int_in_range(0..=4)
    } else {
        u.arbitrary()
    }
}

fn incarnation(u: &mut Unstructured<'_>) -> arbitrary::Result<Incarnation> {
    Ok(Incarnation::new(small(u)?))
}

fn version(u: &mut Unstructured<'_>) -> arbitrary::Result<MetaVersion> {
    Ok(MetaVersion::new(small(u)?, small(u)?))
}

/// Mostly one of four keys; now and then any key within the bounds.
fn key(u: &mut Unstructured<'_>) -> arbitrary::Result<String> {
    if u.ratio(7, 8)? {
        return Ok(["a", "b", "c", "d"][u.choose_index(4)?].to_owned());
    }
    let mut key = String::new();
    for c in u.arbitrary_iter::<char>()? {
        let c = c?;
        if key.len() + c.len_utf8() > MAX_KEY_BYTES {
            break;
        }
        key.push(c);
    }
    if key.is_empty() {
        key.push('k');
    }
    Ok(key)
}

fn bytes(u: &mut Unstructured<'_>, max: usize) -> arbitrary::Result<Vec<u8>> {
    let len = u.int_in_range(0..=max)?;
    Ok(u.bytes(len)?.to_vec())
}

fn value(u: &mut Unstructured<'_>) -> arbitrary::Result<Option<Vec<u8>>> {
    if u.ratio(1, 4)? {
        return Ok(None);
    }
    let max = if u.ratio(1, 16)? { MAX_VALUE_BYTES } else { 16 };
    bytes(u, max).map(Some)
}

fn message(u: &mut Unstructured<'_>) -> arbitrary::Result<Message> {
    Ok(match u.int_in_range(0..=9u8)? {
        0 => Message::Ping {
            seq: small(u)?,
            target: node_id(u)?,
        },
        1 => Message::Ack { seq: small(u)? },
        2 => Message::PingReq {
            seq: small(u)?,
            target: node_id(u)?,
        },
        3 => Message::Nack { seq: small(u)? },
        4 => Message::Gossip,
        5 => {
            let all = u.arbitrary()?;
            let digests = if all {
                Vec::new()
            } else {
                (0..DIGEST_BUCKETS)
                    .map(|_| u.arbitrary())
                    .collect::<arbitrary::Result<_>>()?
            };
            Message::SyncDigest { all, digests }
        }
        6 => Message::SyncEntries {
            reply: match u.int_in_range(0..=2u8)? {
                0 => SyncReply::Nothing,
                1 => SyncReply::Buckets(u.arbitrary()?),
                _ => SyncReply::All,
            },
            records: {
                let n = u.int_in_range(0..=MAX_RECORDS_PER_DATAGRAM)?;
                (0..n)
                    .map(|_| {
                        Ok(MemberRecord {
                            node: node_id(u)?,
                            incarnation: incarnation(u)?,
                            state: *u.choose(&[
                                MemberState::Alive,
                                MemberState::Suspect,
                                MemberState::Dead,
                                MemberState::Left,
                            ])?,
                            meta: version(u)?,
                        })
                    })
                    .collect::<arbitrary::Result<_>>()?
            },
        },
        7 => Message::MetaPull {
            node: node_id(u)?,
            have: version(u)?,
        },
        _ => {
            let chunks = if u.ratio(7, 8)? {
                u.int_in_range(1..=3u8)?
            } else {
                u.int_in_range(1..=MAX_META_CHUNKS as u8)?
            };
            Message::MetaPush {
                node: node_id(u)?,
                base: if u.arbitrary()? {
                    Some(version(u)?)
                } else {
                    None
                },
                version: version(u)?,
                chunk: u.int_in_range(0..=chunks - 1)?,
                chunks,
                entries: {
                    // Fill one chunk as `chunk_entries` would, so the push fits a datagram.
                    let mut entries = Vec::new();
                    let mut used = 0;
                    for _ in 0..u.int_in_range(0..=8)? {
                        let e = MetaEntry {
                            key: key(u)?,
                            seq: small(u)?,
                            value: value(u)?,
                        };
                        let cost =
                            2 + e.key.len() + 4 + 1 + 2 + e.value.as_ref().map_or(0, Vec::len);
                        if used + cost > MAX_META_CHUNK_BYTES {
                            break;
                        }
                        used += cost;
                        entries.push(e);
                    }
                    entries
                },
            }
        }
    })
}

fn update(u: &mut Unstructured<'_>) -> arbitrary::Result<Update> {
    Ok(match u.int_in_range(0..=4u8)? {
        0 => Update::Alive {
            node: node_id(u)?,
            incarnation: incarnation(u)?,
            meta: version(u)?,
        },
        1 => Update::Suspect {
            node: node_id(u)?,
            incarnation: incarnation(u)?,
            from: node_id(u)?,
        },
        2 => Update::Dead {
            node: node_id(u)?,
            incarnation: incarnation(u)?,
            from: node_id(u)?,
        },
        3 => Update::Left {
            node: node_id(u)?,
            incarnation: incarnation(u)?,
        },
        _ => Update::Meta {
            node: node_id(u)?,
            version: version(u)?,
            key: key(u)?,
            value: value(u)?,
        },
    })
}

/// The message, then each update that still fits.
fn encode(sender: NodeId, message: &Message, updates: &[Update]) -> Vec<u8> {
    let mut buf = Vec::new();
    let count_at = wire::encode_message(sender, message, &mut buf);
    let mut encoded = Vec::new();
    for update in updates {
        encoded.clear();
        wire::encode_update(update, &mut encoded);
        let _ = wire::append_update(&mut buf, count_at, &encoded);
    }
    buf
}

/// Drains the node's outputs in the documented order. Its own datagrams must decode.
fn drain(node: &mut Membership, now: Instant, buf: &mut Vec<u8>) {
    while let Some(t) = node.poll_transmit(now, buf) {
        assert!(t.len <= MAX_DATAGRAM_BYTES, "sent {} bytes", t.len);
        let datagram = wire::decode(&buf[..t.len]).expect("the node's own datagram decodes");
        assert_eq!(datagram.sender, node.local_id());
    }
    while node.poll_event().is_some() {}
    let _ = node.poll_timeout();
}
