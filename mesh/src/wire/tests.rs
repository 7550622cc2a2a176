//! Property tests of the wire format (STYLE rule 11: peer input never panics; rule 18: proptest
//! for codecs), plus unit tests of the specific errors [`decode`] reports.
//!
//! The strategies generate every [`Message`] and [`Update`] variant within the documented bounds;
//! the properties check that encoding round-trips, that a message within bounds plus whatever
//! updates [`append_update`] accepts stays within [`MAX_DATAGRAM_BYTES`], and that arbitrary and
//! mutated bytes give an error or a datagram that re-encodes to exactly those bytes.

use proptest::collection::vec;
use proptest::option;
use proptest::prelude::*;
use proptest::sample::Index;

use super::*;

// ---------------------------------------------------------------------------------------------
// Strategies
// ---------------------------------------------------------------------------------------------

fn node_id() -> impl Strategy<Value = NodeId> {
    any::<u64>().prop_map(NodeId::new)
}

fn incarnation() -> impl Strategy<Value = Incarnation> {
    any::<u32>().prop_map(Incarnation::new)
}

fn meta_version() -> impl Strategy<Value = MetaVersion> {
    (any::<u32>(), any::<u32>()).prop_map(|(epoch, seq)| MetaVersion::new(epoch, seq))
}

fn member_state() -> impl Strategy<Value = MemberState> {
    prop_oneof![
        Just(MemberState::Alive),
        Just(MemberState::Suspect),
        Just(MemberState::Dead),
        Just(MemberState::Left),
    ]
}

/// Keeps the longest prefix of `chars` that fits [`MAX_KEY_BYTES`]; at least one char, since no
/// char takes more than 4 bytes.
fn fit_key(chars: Vec<char>) -> String {
    let mut key = String::new();
    for c in chars {
        if key.len() + c.len_utf8() > MAX_KEY_BYTES {
            break;
        }
        key.push(c);
    }
    key
}

/// Keys of 1..=[`MAX_KEY_BYTES`] bytes of UTF-8: ASCII (which reaches the exact bound) and
/// arbitrary chars (multi-byte sequences up to the bound).
fn key() -> impl Strategy<Value = String> {
    prop_oneof![
        "[a-z0-9._/-]{1,64}",
        vec(any::<char>(), 1..=MAX_KEY_BYTES).prop_map(fit_key),
    ]
}

/// Values of 0..=[`MAX_VALUE_BYTES`] bytes, or a tombstone; small ones are common, the bound is
/// hit on purpose.
fn value() -> impl Strategy<Value = Option<Vec<u8>>> {
    option::of(prop_oneof![
        4 => vec(any::<u8>(), 0..=32),
        2 => vec(any::<u8>(), 0..=MAX_VALUE_BYTES),
        1 => vec(any::<u8>(), MAX_VALUE_BYTES),
    ])
}

fn member_record() -> impl Strategy<Value = MemberRecord> {
    (node_id(), incarnation(), member_state(), meta_version()).prop_map(
        |(node, incarnation, state, meta)| MemberRecord {
            node,
            incarnation,
            state,
            meta,
        },
    )
}

fn sync_reply() -> impl Strategy<Value = SyncReply> {
    prop_oneof![
        Just(SyncReply::Nothing),
        any::<u128>().prop_map(SyncReply::Buckets),
        Just(SyncReply::All),
    ]
}

fn meta_entry() -> impl Strategy<Value = MetaEntry> {
    (key(), any::<u32>(), value()).prop_map(|(key, seq, value)| MetaEntry { key, seq, value })
}

/// What `chunk_entries` (membership/metadata.rs) counts for one entry against
/// [`MAX_META_CHUNK_BYTES`].
fn chunk_cost(e: &MetaEntry) -> usize {
    2 + e.key.len() + 4 + 1 + 2 + e.value.as_ref().map_or(0, Vec::len)
}

/// The first chunk `chunk_entries` would cut from `entries`: greedy, and never empty unless
/// `entries` is.
fn first_chunk(entries: Vec<MetaEntry>) -> Vec<MetaEntry> {
    let mut used = 0;
    let mut chunk = Vec::new();
    for e in entries {
        let cost = chunk_cost(&e);
        if used + cost > MAX_META_CHUNK_BYTES && used > 0 {
            break;
        }
        used += cost;
        chunk.push(e);
    }
    chunk
}

/// `(chunk, chunks)` with `chunk < chunks <= MAX_META_CHUNKS`.
fn chunk_index() -> impl Strategy<Value = (u8, u8)> {
    (1..=MAX_META_CHUNKS as u8).prop_flat_map(|chunks| (0..chunks, Just(chunks)))
}

/// Every [`Message`] variant, within the documented bounds.
fn message() -> impl Strategy<Value = Message> {
    prop_oneof![
        (any::<u32>(), node_id()).prop_map(|(seq, target)| Message::Ping { seq, target }),
        any::<u32>().prop_map(|seq| Message::Ack { seq }),
        (any::<u32>(), node_id()).prop_map(|(seq, target)| Message::PingReq { seq, target }),
        any::<u32>().prop_map(|seq| Message::Nack { seq }),
        Just(Message::Gossip),
        Just(Message::SyncDigest {
            all: true,
            digests: Vec::new(),
        }),
        vec(any::<u64>(), DIGEST_BUCKETS).prop_map(|digests| Message::SyncDigest {
            all: false,
            digests,
        }),
        (
            sync_reply(),
            prop_oneof![
                vec(member_record(), 0..=MAX_RECORDS_PER_DATAGRAM),
                vec(member_record(), MAX_RECORDS_PER_DATAGRAM),
            ]
        )
            .prop_map(|(reply, records)| Message::SyncEntries { reply, records }),
        (node_id(), meta_version()).prop_map(|(node, have)| Message::MetaPull { node, have }),
        (
            node_id(),
            option::of(meta_version()),
            meta_version(),
            chunk_index(),
            vec(meta_entry(), 0..24),
        )
            .prop_map(|(node, base, version, (chunk, chunks), entries)| {
                Message::MetaPush {
                    node,
                    base,
                    version,
                    chunk,
                    chunks,
                    entries: first_chunk(entries),
                }
            }),
    ]
}

/// Every [`Update`] variant; metadata writes (the large ones) are the rarer.
fn update() -> impl Strategy<Value = Update> {
    prop_oneof![
        3 => (node_id(), incarnation(), meta_version()).prop_map(|(node, incarnation, meta)| {
            Update::Alive { node, incarnation, meta }
        }),
        3 => (node_id(), incarnation(), node_id()).prop_map(|(node, incarnation, from)| {
            Update::Suspect { node, incarnation, from }
        }),
        3 => (node_id(), incarnation(), node_id()).prop_map(|(node, incarnation, from)| {
            Update::Dead { node, incarnation, from }
        }),
        3 => (node_id(), incarnation()).prop_map(|(node, incarnation)| Update::Left {
            node,
            incarnation
        }),
        1 => (node_id(), meta_version(), key(), value()).prop_map(|(node, version, key, value)| {
            Update::Meta { node, version, key, value }
        }),
    ]
}

/// A sender, a message, and the updates offered for piggybacking (more than ever fit, at times).
fn datagram_parts() -> impl Strategy<Value = (NodeId, Message, Vec<Update>)> {
    (node_id(), message(), vec(update(), 0..100))
}

/// One edit of an encoded datagram.
#[derive(Clone, Debug)]
enum Mutation {
    Flip(Index, u8),
    Overwrite(Index, u8),
    Insert(Index, u8),
    Delete(Index),
    Truncate(Index),
}

fn mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        3 => (any::<Index>(), 0..8u8).prop_map(|(at, bit)| Mutation::Flip(at, bit)),
        2 => (any::<Index>(), any::<u8>()).prop_map(|(at, b)| Mutation::Overwrite(at, b)),
        2 => (any::<Index>(), any::<u8>()).prop_map(|(at, b)| Mutation::Insert(at, b)),
        2 => any::<Index>().prop_map(Mutation::Delete),
        1 => any::<Index>().prop_map(Mutation::Truncate),
    ]
}

fn mutate(bytes: &mut Vec<u8>, m: &Mutation) {
    let len = bytes.len();
    match m {
        Mutation::Flip(at, bit) if len > 0 => bytes[at.index(len)] ^= 1 << bit,
        Mutation::Overwrite(at, b) if len > 0 => bytes[at.index(len)] = *b,
        Mutation::Insert(at, b) => bytes.insert(at.index(len + 1), *b),
        Mutation::Delete(at) if len > 0 => {
            bytes.remove(at.index(len));
        }
        Mutation::Truncate(at) => bytes.truncate(at.index(len + 1)),
        Mutation::Flip(..) | Mutation::Overwrite(..) | Mutation::Delete(_) => {}
    }
}

// ---------------------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------------------

/// Encodes `message`, then appends each of `updates` that still fits, as the dissemination queue
/// does. Returns the bytes and the updates appended, in order.
fn encode_fitting(sender: NodeId, message: &Message, updates: &[Update]) -> (Vec<u8>, Vec<Update>) {
    let mut buf = Vec::new();
    let count_at = encode_message(sender, message, &mut buf);
    let mut appended = Vec::new();
    let mut encoded = Vec::new();
    for u in updates {
        encoded.clear();
        encode_update(u, &mut encoded);
        let before = buf.len();
        if append_update(&mut buf, count_at, &encoded) {
            assert_eq!(buf.len(), before + encoded.len(), "append adds the update");
            appended.push(u.clone());
        } else {
            assert_eq!(
                buf.len(),
                before,
                "a refused update leaves the datagram as it was"
            );
            assert!(
                before + encoded.len() > MAX_DATAGRAM_BYTES
                    || appended.len() == usize::from(u8::MAX),
                "append_update refused an update that fits"
            );
        }
    }
    (buf, appended)
}

/// Encodes a whole datagram; every update must fit.
fn encode_datagram(d: &Datagram) -> Vec<u8> {
    let (buf, appended) = encode_fitting(d.sender, &d.message, &d.updates);
    assert_eq!(
        appended.len(),
        d.updates.len(),
        "a decoded datagram re-encodes within MAX_DATAGRAM_BYTES"
    );
    buf
}

/// Version, kind and sender 7 (a one-byte varint).
fn header(kind: u8) -> Vec<u8> {
    vec![PROTOCOL_VERSION, kind, 7]
}

// ---------------------------------------------------------------------------------------------
// Properties
// ---------------------------------------------------------------------------------------------

proptest! {
    /// (a) Every message within bounds, with whatever updates fit, decodes to exactly what was
    /// encoded, and never exceeds MAX_DATAGRAM_BYTES.
    #[test]
    fn encode_then_decode_round_trips((sender, message, updates) in datagram_parts()) {
        let mut alone = Vec::new();
        let _ = encode_message(sender, &message, &mut alone);
        prop_assert!(
            alone.len() <= MAX_DATAGRAM_BYTES,
            "a message within bounds fits a datagram, got {} bytes",
            alone.len()
        );
        let (bytes, appended) = encode_fitting(sender, &message, &updates);
        prop_assert!(bytes.len() <= MAX_DATAGRAM_BYTES, "{} bytes", bytes.len());
        prop_assert_eq!(
            decode(&bytes),
            Ok(Datagram {
                sender,
                message,
                updates: appended,
            })
        );
    }

    /// Each update alone round-trips behind the smallest message.
    #[test]
    fn every_update_round_trips(sender in node_id(), update in update()) {
        let one = core::slice::from_ref(&update);
        let (bytes, appended) = encode_fitting(sender, &Message::Gossip, one);
        prop_assert_eq!(appended.as_slice(), one, "one update always fits");
        prop_assert_eq!(
            decode(&bytes),
            Ok(Datagram {
                sender,
                message: Message::Gossip,
                updates: vec![update],
            })
        );
    }

    /// (b) Arbitrary bytes never panic the decoder; anything over the limit is refused as such;
    /// anything accepted re-encodes to the same bytes (the encoding is canonical).
    #[test]
    fn arbitrary_bytes_never_panic(bytes in vec(any::<u8>(), 0..2000)) {
        match decode(&bytes) {
            Err(DecodeError::Oversized { len, max }) => {
                prop_assert_eq!((len, max), (bytes.len(), MAX_DATAGRAM_BYTES));
            }
            _ if bytes.len() > MAX_DATAGRAM_BYTES => {
                prop_assert!(false, "{} bytes were not refused as oversized", bytes.len());
            }
            Ok(d) => prop_assert_eq!(encode_datagram(&d), bytes),
            Err(_) => {}
        }
    }

    /// (b) The same, past a valid header, so the bytes reach the message and update decoders.
    #[test]
    fn arbitrary_bodies_never_panic(kind in 0..=10u8, body in vec(any::<u8>(), 0..1300)) {
        let mut bytes = header(kind);
        bytes.extend_from_slice(&body);
        match decode(&bytes) {
            Ok(d) => prop_assert_eq!(encode_datagram(&d), bytes),
            Err(e) => {
                let oversized = matches!(e, DecodeError::Oversized { .. });
                prop_assert!(bytes.len() <= MAX_DATAGRAM_BYTES || oversized, "{:?}", e);
            }
        }
    }

    /// (c) Flipped, overwritten, inserted, deleted or truncated bytes of a valid datagram never
    /// panic the decoder; whatever still decodes re-encodes to the same bytes and decodes again
    /// to the same datagram.
    #[test]
    fn mutated_datagrams_never_panic(
        (sender, message, updates) in datagram_parts(),
        mutations in vec(mutation(), 1..8),
    ) {
        let (mut bytes, _) = encode_fitting(sender, &message, &updates);
        for m in &mutations {
            mutate(&mut bytes, m);
        }
        if let Ok(d) = decode(&bytes) {
            let again = encode_datagram(&d);
            prop_assert_eq!(decode(&again), Ok(d));
            prop_assert_eq!(again, bytes, "the encoding is canonical");
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Specific errors
// ---------------------------------------------------------------------------------------------

#[test]
fn truncated_header_is_truncated() {
    assert_eq!(
        decode(&[]),
        Err(DecodeError::Truncated {
            needed: 1,
            remaining: 0
        })
    );
    // Version and kind, then a sender varint whose last byte is missing.
    assert_eq!(
        decode(&[PROTOCOL_VERSION, kind::PING, 0x80, 0x80]),
        Err(DecodeError::Truncated {
            needed: 1,
            remaining: 0
        })
    );
}

#[test]
fn truncated_message_is_truncated() {
    // A ping's sequence number, then no target.
    let mut bytes = header(kind::PING);
    bytes.push(1);
    assert_eq!(
        decode(&bytes),
        Err(DecodeError::Truncated {
            needed: 1,
            remaining: 0
        })
    );
}

/// Version 2's probe messages: a ping from node 7 of node 9 (sequence number 300) is 8 bytes
/// with its update count, an ack 5 (version 1: 24 and 16 bytes).
#[test]
fn probe_messages_are_varints() {
    let mut buf = Vec::new();
    let _ = encode_message(
        NodeId::new(7),
        &Message::Ping {
            seq: 300,
            target: NodeId::new(9),
        },
        &mut buf,
    );
    assert_eq!(buf, [PROTOCOL_VERSION, kind::PING, 7, 0xac, 0x02, 9, 0]);
    let _ = encode_message(NodeId::new(7), &Message::Ack { seq: 5 }, &mut buf);
    assert_eq!(buf, [PROTOCOL_VERSION, kind::ACK, 7, 5, 0]);
    // The largest values take the longest forms and come back.
    let _ = encode_message(
        NodeId::new(u64::MAX),
        &Message::Ping {
            seq: u32::MAX,
            target: NodeId::new(u64::MAX),
        },
        &mut buf,
    );
    assert_eq!(buf.len(), 2 + 10 + 5 + 10 + 1);
    assert!(buf.len() <= HEADER_BYTES + 5 + 10 + 1);
    assert_eq!(
        decode(&buf).map(|d| d.message),
        Ok(Message::Ping {
            seq: u32::MAX,
            target: NodeId::new(u64::MAX),
        })
    );
}

/// Only the shortest form of a varint decodes (a decoded datagram re-encodes to its bytes),
/// and a value past its field's range is refused.
#[test]
fn long_or_oversized_varints_are_refused() {
    // Sender 7 written in two bytes.
    assert!(matches!(
        decode(&[PROTOCOL_VERSION, kind::GOSSIP, 0x87, 0x00, 0]),
        Err(DecodeError::InvalidValue {
            field: "sender",
            ..
        })
    ));
    // An ack's sequence number of 2^32.
    let mut bytes = header(kind::ACK);
    bytes.extend_from_slice(&[0x80, 0x80, 0x80, 0x80, 0x10, 0]);
    assert_eq!(
        decode(&bytes),
        Err(DecodeError::InvalidValue {
            field: "ack seq",
            value: 1 << 32
        })
    );
    // Eleven bytes of varint, and a tenth byte past the 64th bit.
    let mut bytes = vec![PROTOCOL_VERSION, kind::GOSSIP];
    bytes.extend_from_slice(&[0xff; 10]);
    bytes.push(0);
    assert!(matches!(
        decode(&bytes),
        Err(DecodeError::InvalidValue { .. })
    ));
    let mut bytes = vec![PROTOCOL_VERSION, kind::GOSSIP];
    bytes.extend_from_slice(&[0xff; 9]);
    bytes.extend_from_slice(&[0x02, 0]);
    assert!(matches!(
        decode(&bytes),
        Err(DecodeError::InvalidValue { .. })
    ));
}

#[test]
fn other_versions_are_unsupported() {
    let mut buf = Vec::new();
    let _ = encode_message(NodeId::new(7), &Message::Gossip, &mut buf);
    // Version 1 (fixed-width sender and probe fields) and a future 3.
    for version in [1, 3] {
        buf[0] = version;
        assert_eq!(
            decode(&buf),
            Err(DecodeError::UnsupportedVersion {
                found: version,
                supported: PROTOCOL_VERSION
            })
        );
    }
}

#[test]
fn unknown_kinds_are_refused() {
    let mut bytes = header(0xEE);
    bytes.push(0);
    assert_eq!(
        decode(&bytes),
        Err(DecodeError::UnknownKind {
            what: "message",
            kind: 0xEE
        })
    );

    // A Gossip carrying one update of kind 0.
    let mut bytes = header(kind::GOSSIP);
    bytes.extend_from_slice(&[1, 0]);
    assert_eq!(
        decode(&bytes),
        Err(DecodeError::UnknownKind {
            what: "update",
            kind: 0
        })
    );
}

#[test]
fn key_of_65_bytes_is_too_long() {
    let update = Update::Meta {
        node: NodeId::new(1),
        version: MetaVersion::new(1, 1),
        key: "k".repeat(MAX_KEY_BYTES + 1),
        value: Some(b"v".to_vec()),
    };
    let mut buf = Vec::new();
    let count_at = encode_message(NodeId::new(7), &Message::Gossip, &mut buf);
    let mut encoded = Vec::new();
    encode_update(&update, &mut encoded);
    assert!(append_update(&mut buf, count_at, &encoded));
    assert_eq!(
        decode(&buf),
        Err(DecodeError::TooLong {
            field: "metadata key",
            len: MAX_KEY_BYTES + 1,
            max: MAX_KEY_BYTES
        })
    );

    // The same key in a MetaPush entry.
    let push = Message::MetaPush {
        node: NodeId::new(1),
        base: None,
        version: MetaVersion::new(1, 1),
        chunk: 0,
        chunks: 1,
        entries: vec![MetaEntry {
            key: "k".repeat(MAX_KEY_BYTES + 1),
            seq: 1,
            value: None,
        }],
    };
    let _ = encode_message(NodeId::new(7), &push, &mut buf);
    assert_eq!(
        decode(&buf),
        Err(DecodeError::TooLong {
            field: "metadata key",
            len: MAX_KEY_BYTES + 1,
            max: MAX_KEY_BYTES
        })
    );
}

#[test]
fn key_of_64_bytes_fits() {
    let update = Update::Meta {
        node: NodeId::new(1),
        version: MetaVersion::new(1, 1),
        key: "é".repeat(MAX_KEY_BYTES / 2),
        value: Some(vec![0xAB; MAX_VALUE_BYTES]),
    };
    let (buf, appended) = encode_fitting(
        NodeId::new(7),
        &Message::Gossip,
        core::slice::from_ref(&update),
    );
    assert_eq!(appended, [update]);
    assert_eq!(decode(&buf).map(|d| d.updates), Ok(appended));
}

#[test]
fn trailing_bytes_are_refused() {
    let mut buf = Vec::new();
    let _ = encode_message(NodeId::new(7), &Message::Ack { seq: 3 }, &mut buf);
    buf.extend_from_slice(&[0, 0, 0]);
    assert_eq!(decode(&buf), Err(DecodeError::TrailingBytes(3)));
}

#[test]
fn oversized_is_refused_before_parsing() {
    // A valid Gossip padded past the limit: the length alone decides.
    let mut buf = Vec::new();
    let _ = encode_message(NodeId::new(7), &Message::Gossip, &mut buf);
    buf.resize(MAX_DATAGRAM_BYTES + 1, 0);
    assert_eq!(
        decode(&buf),
        Err(DecodeError::Oversized {
            len: MAX_DATAGRAM_BYTES + 1,
            max: MAX_DATAGRAM_BYTES
        })
    );
}

#[test]
fn largest_messages_fit() {
    let records = vec![
        MemberRecord {
            node: NodeId::new(u64::MAX),
            incarnation: Incarnation::new(u32::MAX),
            state: MemberState::Left,
            meta: MetaVersion::new(u32::MAX, u32::MAX),
        };
        MAX_RECORDS_PER_DATAGRAM
    ];
    let entries = vec![MetaEntry {
        key: "k".repeat(MAX_KEY_BYTES),
        seq: 1,
        value: Some(vec![1; MAX_VALUE_BYTES]),
    }];
    for message in [
        Message::SyncEntries {
            reply: SyncReply::Buckets(u128::MAX),
            records,
        },
        Message::SyncDigest {
            all: false,
            digests: vec![u64::MAX; DIGEST_BUCKETS],
        },
        Message::MetaPush {
            node: NodeId::new(1),
            base: Some(MetaVersion::new(1, 1)),
            version: MetaVersion::new(1, 2),
            chunk: MAX_META_CHUNKS as u8 - 1,
            chunks: MAX_META_CHUNKS as u8,
            entries,
        },
    ] {
        let mut buf = Vec::new();
        let _ = encode_message(NodeId::new(7), &message, &mut buf);
        assert!(buf.len() <= MAX_DATAGRAM_BYTES, "{} bytes", buf.len());
        assert_eq!(decode(&buf).map(|d| d.message), Ok(message));
    }
}

/// Counts beyond what the format or the datagram allows are refused before anything is read,
/// so a peer cannot make the receiver loop over or reserve room for entries it never sent.
#[test]
fn counts_beyond_their_bound_are_refused() {
    let mut bytes = header(kind::SYNC_DIGEST);
    bytes.extend_from_slice(&[0, (DIGEST_BUCKETS + 1) as u8]);
    assert_eq!(
        decode(&bytes),
        Err(DecodeError::TooLong {
            field: "digest",
            len: DIGEST_BUCKETS + 1,
            max: DIGEST_BUCKETS
        })
    );

    let mut bytes = header(kind::SYNC_ENTRIES);
    bytes.push(0);
    bytes.extend_from_slice(&(MAX_RECORDS_PER_DATAGRAM as u16 + 1).to_be_bytes());
    assert_eq!(
        decode(&bytes),
        Err(DecodeError::TooLong {
            field: "records",
            len: MAX_RECORDS_PER_DATAGRAM + 1,
            max: MAX_RECORDS_PER_DATAGRAM
        })
    );

    // A metadata push: node, no delta base, version 1.1, chunk 0 of 1, then the entry count.
    let push = |count: u16, rest: &[u8]| {
        let mut bytes = header(kind::META_PUSH);
        bytes.extend_from_slice(&3u64.to_be_bytes());
        bytes.push(0);
        bytes.extend_from_slice(&1u32.to_be_bytes());
        bytes.extend_from_slice(&1u32.to_be_bytes());
        bytes.extend_from_slice(&[0, 1]);
        bytes.extend_from_slice(&count.to_be_bytes());
        bytes.extend_from_slice(rest);
        bytes
    };
    // Each entry takes at least 7 bytes: 100 entries in 14 bytes cannot be.
    assert_eq!(
        decode(&push(100, &[0; 14])),
        Err(DecodeError::TooLong {
            field: "metadata entries",
            len: 100,
            max: 2
        })
    );
    // One entry with an empty key (length 0, seq, no value).
    assert_eq!(
        decode(&push(1, &[0, 0, 0, 0, 0, 1, 0])),
        Err(DecodeError::InvalidValue {
            field: "metadata key length",
            value: 0
        })
    );
}

/// `pack_gossip` (what a sender or a test uses to put many updates on the wire) fills each
/// datagram up to the bound, keeps the order, and leaves out an update no datagram can hold.
#[test]
fn pack_gossip_fills_datagrams_in_order_and_skips_what_never_fits() {
    let sender = NodeId::new(7);
    let alive = |n: u64| Update::Alive {
        node: NodeId::new(n),
        incarnation: Incarnation::new(1),
        meta: MetaVersion::default(),
    };
    let huge = Update::Meta {
        node: NodeId::new(1),
        version: MetaVersion::new(1, 1),
        key: "k".into(),
        value: Some(vec![0; MAX_DATAGRAM_BYTES]),
    };
    // A huge one first (nothing in the datagram yet) and one after a full datagram.
    let mut updates = vec![huge.clone()];
    updates.extend((1..=150).map(alive));
    updates.push(huge);
    updates.extend((151..=160).map(alive));
    let datagrams = pack_gossip(sender, &updates);
    assert!(
        datagrams.len() > 1,
        "150 updates need more than one datagram"
    );
    let mut seen = Vec::new();
    for bytes in &datagrams {
        assert!(bytes.len() <= MAX_DATAGRAM_BYTES);
        let d = decode(bytes).unwrap();
        assert_eq!((d.sender, d.message), (sender, Message::Gossip));
        assert!(!d.updates.is_empty());
        seen.extend(d.updates);
    }
    let expected: Vec<Update> = (1..=160).map(alive).collect();
    assert_eq!(seen, expected);
    assert!(pack_gossip(sender, &[]).is_empty());
}
