//! Property tests of the leadership wire format (STYLE rule 11: peer input never panics;
//! rule 18: proptest for codecs).

use proptest::collection::vec;
use proptest::prelude::*;

use super::*;

fn node_id() -> impl Strategy<Value = NodeId> {
    any::<u64>().prop_map(NodeId::new)
}

fn scope() -> impl Strategy<Value = Scope> {
    prop_oneof![
        Just(Scope::global_control()),
        ("[a-z0-9][a-z0-9._-]{0,20}", "[a-z0-9][a-z0-9._-]{0,20}")
            .prop_map(|(ns, id)| Scope::shard(&ns, &id).expect("generated from the grammar")),
        vec("[a-z0-9][a-z0-9._-]{0,30}", 1..4).prop_filter_map("reserved first segment", |s| {
            Scope::new(&s.join("/")).ok()
        }),
    ]
}

fn duration() -> impl Strategy<Value = Duration> {
    any::<u64>().prop_map(Duration::from_nanos)
}

fn op() -> impl Strategy<Value = Op> {
    let token = any::<u64>().prop_map(FencingToken::new);
    prop_oneof![
        (scope(), duration()).prop_map(|(scope, ttl)| Op::Acquire { scope, ttl }),
        (scope(), token.clone(), duration()).prop_map(|(scope, token, ttl)| Op::Renew {
            scope,
            token,
            ttl
        }),
        (scope(), token.clone()).prop_map(|(scope, token)| Op::Release { scope, token }),
        (scope(), token, node_id(), duration()).prop_map(|(scope, token, to, ttl)| {
            Op::Transfer {
                scope,
                token,
                to,
                ttl,
            }
        }),
        scope().prop_map(|scope| Op::Query { scope }),
    ]
}

fn refusal() -> impl Strategy<Value = Refusal> {
    prop_oneof![
        (node_id(), any::<u64>(), duration()).prop_map(|(holder, t, expires_in)| {
            Refusal::Held {
                holder,
                token: FencingToken::new(t),
                expires_in,
            }
        }),
        node_id().prop_map(|holder| Refusal::NotHolder { holder }),
        Just(Refusal::UnknownScope),
        any::<u64>().prop_map(|c| Refusal::StaleToken {
            current: FencingToken::new(c)
        }),
        Just(Refusal::InvalidTtl),
        Just(Refusal::TableFull),
        Just(Refusal::InvalidTarget),
        Just(Refusal::Overloaded),
    ]
}

fn reply() -> impl Strategy<Value = Reply> {
    prop_oneof![
        (any::<u64>(), any::<u64>(), duration()).prop_map(|(t, term, ttl)| Reply::Outcome(
            Outcome::Granted {
                token: FencingToken::new(t),
                term: Term::new(term),
                ttl
            }
        )),
        Just(Reply::Outcome(Outcome::Released)),
        (node_id(), any::<u64>()).prop_map(|(to, t)| Reply::Outcome(Outcome::Transferred {
            to,
            token: FencingToken::new(t)
        })),
        refusal().prop_map(|r| Reply::Outcome(Outcome::Refused(r))),
        (1..u64::MAX).prop_map(|l| Reply::NotLeader {
            leader: Some(NodeId::new(l))
        }),
        Just(Reply::NotLeader { leader: None }),
        Just(Reply::Lease(None)),
        (node_id(), any::<u64>(), any::<u64>(), duration()).prop_map(|(holder, term, t, e)| {
            Reply::Lease(Some(LeaseInfo {
                holder,
                term: Term::new(term),
                token: FencingToken::new(t),
                expires_in: e,
            }))
        }),
    ]
}

const NETWORK_TYPES: [MessageType; 13] = [
    MessageType::MsgAppend,
    MessageType::MsgAppendResponse,
    MessageType::MsgRequestVote,
    MessageType::MsgRequestVoteResponse,
    MessageType::MsgSnapshot,
    MessageType::MsgHeartbeat,
    MessageType::MsgHeartbeatResponse,
    MessageType::MsgTransferLeader,
    MessageType::MsgTimeoutNow,
    MessageType::MsgReadIndex,
    MessageType::MsgReadIndexResp,
    MessageType::MsgRequestPreVote,
    MessageType::MsgRequestPreVoteResponse,
];

fn entry() -> impl Strategy<Value = Entry> {
    (
        0u8..3,
        any::<u64>(),
        any::<u64>(),
        vec(any::<u8>(), 0..=MAX_ENTRY_DATA_BYTES),
        vec(any::<u8>(), 0..=MAX_ENTRY_CONTEXT_BYTES),
    )
        .prop_map(|(t, term, index, data, context)| {
            let mut e = Entry::default();
            e.set_entry_type(entry_type_from_code(t).expect("0..3 are entry types"));
            e.term = term;
            e.index = index;
            e.data = data.into();
            e.context = context.into();
            e
        })
}

fn conf_list() -> impl Strategy<Value = Vec<u64>> {
    vec(any::<u64>(), 0..=MAX_CONF_IDS)
}

fn snapshot() -> impl Strategy<Value = Snapshot> {
    (
        any::<u64>(),
        any::<u64>(),
        (conf_list(), conf_list(), conf_list(), conf_list()),
        any::<bool>(),
        // Some over a datagram: a snapshot message is the one kind allowed to be.
        vec(any::<u8>(), 0..=3000),
    )
        .prop_map(|(index, term, (v, l, vo, ln), auto_leave, data)| {
            let cs = ConfState {
                voters: v,
                learners: l,
                voters_outgoing: vo,
                learners_next: ln,
                auto_leave,
                ..ConfState::default()
            };
            let mut meta = SnapshotMetadata {
                index,
                term,
                ..SnapshotMetadata::default()
            };
            meta.set_conf_state(cs);
            let mut s = Snapshot::default();
            s.set_metadata(meta);
            s.data = data.into();
            s
        })
}

/// A Raft message within our bounds, `from` filled in by the caller.
fn raft_message() -> impl Strategy<Value = Message> {
    (
        proptest::sample::select(NETWORK_TYPES.to_vec()),
        any::<u64>(),
        proptest::array::uniform7(any::<u64>()),
        any::<bool>(),
        any::<i64>(),
        vec(any::<u8>(), 0..=MAX_MESSAGE_CONTEXT_BYTES),
        proptest::option::of(snapshot()),
        vec(entry(), 0..4),
    )
        .prop_map(|(t, to, f, reject, priority, context, snapshot, entries)| {
            let mut m = Message::default();
            m.set_msg_type(t);
            m.to = to;
            [
                m.term,
                m.log_term,
                m.index,
                m.commit,
                m.commit_term,
                m.reject_hint,
                m.request_snapshot,
            ] = f;
            m.reject = reject;
            m.priority = priority;
            m.context = context.into();
            if let Some(s) = snapshot {
                m.set_snapshot(s);
            } else {
                m.set_entries(entries.into());
            }
            m
        })
}

fn message() -> impl Strategy<Value = LeaseMessage> {
    prop_oneof![
        raft_message().prop_map(LeaseMessage::Raft),
        (any::<u64>(), op()).prop_map(|(r, op)| LeaseMessage::Request {
            request: RequestId::new(r),
            op
        }),
        (any::<u64>(), reply()).prop_map(|(r, reply)| LeaseMessage::Response {
            request: RequestId::new(r),
            reply
        }),
        (scope(), any::<u64>(), any::<u64>(), duration()).prop_map(|(scope, t, term, ttl)| {
            LeaseMessage::Notice {
                scope,
                token: FencingToken::new(t),
                term: Term::new(term),
                ttl,
            }
        }),
    ]
}

fn command() -> impl Strategy<Value = Command> {
    (
        any::<u64>(),
        node_id(),
        proptest::option::of((node_id(), any::<u64>(), op())),
    )
        .prop_map(|(at, proposer, client)| Command {
            at: Instant::from_nanos(at),
            proposer,
            body: match client {
                None => Body::Clock,
                Some((client, request, op)) => Body::Client {
                    client,
                    request: RequestId::new(request),
                    op,
                },
            },
        })
}

/// The sender of a Raft message is the header's; fill it the way the decoder does.
fn with_from(sender: NodeId, mut message: LeaseMessage) -> LeaseMessage {
    if let LeaseMessage::Raft(m) = &mut message {
        m.from = sender.get();
    }
    message
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// Every message within bounds round-trips and fits a datagram.
    #[test]
    fn messages_round_trip(sender in node_id(), message in message()) {
        let message = with_from(sender, message);
        let mut buf = Vec::new();
        let cut = encode(sender, &message, &mut buf);
        prop_assert!(
            buf.len() <= MAX_DATAGRAM_BYTES
                || (carries_snapshot(&message) && buf.len() <= MAX_MESSAGE_BYTES)
        );
        let (decoded_sender, decoded) = decode(&buf).expect("our own encoding decodes");
        prop_assert_eq!(decoded_sender, sender);
        if cut == 0 {
            prop_assert_eq!(decoded, message);
        } else if let (LeaseMessage::Raft(got), LeaseMessage::Raft(sent)) = (&decoded, &message) {
            // Cut appends keep a prefix of the entries and every other field.
            let n = got.get_entries().len();
            prop_assert!(n >= 1 && n + cut == sent.get_entries().len());
            prop_assert_eq!(got.get_entries(), &sent.get_entries()[..n]);
        }
    }

    /// Commands round-trip and fit an entry.
    #[test]
    fn commands_round_trip(c in command()) {
        let bytes = encode_command(&c);
        prop_assert!(bytes.len() <= MAX_ENTRY_DATA_BYTES);
        prop_assert_eq!(decode_command(&bytes).expect("own encoding"), c);
    }

    /// Arbitrary bytes give an error or a message that re-encodes to exactly those bytes.
    #[test]
    fn arbitrary_bytes_never_panic(bytes in vec(any::<u8>(), 0..1400)) {
        let _ = recipient(&bytes);
        let _ = decode_command(&bytes);
        let _ = decode_voter_change(&bytes);
        if let Ok((applied, table)) = decode_table(&bytes) {
            prop_assert_eq!(encode_table(&table, applied), bytes.clone());
        }
        if let Ok((sender, message)) = decode(&bytes) {
            let mut buf = Vec::new();
            let _ = encode(sender, &message, &mut buf);
            prop_assert_eq!(buf, bytes);
        }
    }

    /// Valid datagrams with a few bytes flipped, truncated or extended never panic the decoder.
    #[test]
    fn mutated_datagrams_never_panic(
        sender in node_id(),
        message in message(),
        flips in vec((any::<proptest::sample::Index>(), any::<u8>()), 0..4),
        cut in any::<proptest::sample::Index>(),
        extra in vec(any::<u8>(), 0..3),
    ) {
        let mut buf = Vec::new();
        let _ = encode(sender, &with_from(sender, message), &mut buf);
        for (i, b) in flips {
            let at = i.index(buf.len());
            buf[at] ^= b;
        }
        let keep = cut.index(buf.len() + 1);
        buf.truncate(keep.max(buf.len().saturating_sub(8)));
        buf.extend(extra);
        let _ = recipient(&buf);
        let _ = decode(&buf);
    }
}

/// A table built the way voters build theirs: by applying commands.
fn table() -> impl Strategy<Value = (u64, LeaseTable)> {
    let scopes = || {
        proptest::sample::select(vec![
            Scope::global_control(),
            Scope::shard("orders", "1").expect("a valid shard scope"),
            Scope::shard("orders", "2").expect("a valid shard scope"),
            Scope::new("custom/x").expect("a valid scope"),
        ])
    };
    let op = (0u8..4, scopes(), 1u64..6, 1u64..4, 1000u64..5000).prop_map(
        |(kind, scope, token, to, ttl_ms)| {
            let ttl = Duration::from_millis(ttl_ms);
            let token = FencingToken::new(token);
            match kind {
                0 => Op::Acquire { scope, ttl },
                1 => Op::Renew { scope, token, ttl },
                2 => Op::Release { scope, token },
                _ => Op::Transfer {
                    scope,
                    token,
                    to: NodeId::new(to),
                    ttl,
                },
            }
        },
    );
    vec((1u64..4, 1u64..4, 0u64..3000, op), 0..40).prop_map(|steps| {
        let mut t = LeaseTable::default();
        let mut changes = Vec::new();
        let mut index = 10;
        for (client, term, at_ms, op) in steps {
            index += 1;
            let command = Command {
                at: Instant::from_nanos(index * 1_000_000 + at_ms),
                proposer: NodeId::new(1),
                body: Body::Client {
                    client: NodeId::new(client),
                    request: RequestId::new(index),
                    op,
                },
            };
            t.apply(
                index,
                Term::new(term.max(t.clock_term().get())),
                &command,
                &mut changes,
            );
        }
        (index, t)
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// A table round-trips through its snapshot encoding, canonically, and a decoded table
    /// applies the next command exactly like the original.
    #[test]
    fn tables_round_trip((applied, t) in table(), client in 1u64..4) {
        let bytes = encode_table(&t, applied);
        let (got_applied, got) = decode_table(&bytes).expect("own encoding");
        prop_assert_eq!(got_applied, applied);
        prop_assert_eq!(&got, &t);
        prop_assert_eq!(encode_table(&got, applied), bytes);
        let next = Command {
            at: Instant::from_nanos((applied + 1) * 1_000_000),
            proposer: NodeId::new(1),
            body: Body::Client {
                client: NodeId::new(client),
                request: RequestId::new(applied + 1),
                op: Op::Acquire { scope: Scope::global_control(), ttl: Duration::from_secs(2) },
            },
        };
        let (mut a, mut b) = (t.clone(), got);
        let (mut ca, mut cb) = (Vec::new(), Vec::new());
        let term = t.clock_term().max(Term::new(1));
        prop_assert_eq!(
            a.apply(applied + 1, term, &next, &mut ca),
            b.apply(applied + 1, term, &next, &mut cb)
        );
        prop_assert_eq!(a, b);
        prop_assert_eq!(ca, cb);
    }

    /// Table bytes with a few bytes flipped, truncated or extended never panic the decoder,
    /// and what still decodes re-encodes to the same bytes.
    #[test]
    fn mutated_tables_never_panic(
        (applied, t) in table(),
        flips in vec((any::<proptest::sample::Index>(), any::<u8>()), 0..4),
        cut in any::<proptest::sample::Index>(),
        extra in vec(any::<u8>(), 0..3),
    ) {
        let mut buf = encode_table(&t, applied);
        for (i, b) in flips {
            let at = i.index(buf.len());
            buf[at] ^= b;
        }
        let keep = cut.index(buf.len() + 1);
        buf.truncate(keep.max(buf.len().saturating_sub(8)));
        buf.extend(extra);
        if let Ok((applied, table)) = decode_table(&buf) {
            prop_assert_eq!(encode_table(&table, applied), buf);
        }
    }
}

#[test]
fn a_snapshot_may_exceed_a_datagram_but_nothing_else_may() {
    let mut m = Message::default();
    m.set_msg_type(MessageType::MsgSnapshot);
    m.to = 2;
    let mut snap = Snapshot::default();
    snap.mut_metadata().index = 9;
    snap.mut_metadata().mut_conf_state().voters = vec![1, 2, 3];
    snap.data = vec![5; 100_000].into();
    m.set_snapshot(snap);
    let mut buf = Vec::new();
    let _ = encode(NodeId::new(1), &LeaseMessage::Raft(m.clone()), &mut buf);
    assert!(buf.len() > MAX_DATAGRAM_BYTES);
    m.from = 1;
    assert_eq!(
        decode(&buf).expect("own encoding"),
        (NodeId::new(1), LeaseMessage::Raft(m))
    );
    // An append over a datagram (our encoder cuts them; a peer's need not) is refused.
    let mut append = Message::default();
    append.set_msg_type(MessageType::MsgAppend);
    append.set_entries(
        vec![Entry {
            index: 1,
            term: 1,
            data: vec![7; MAX_ENTRY_DATA_BYTES].into(),
            ..Entry::default()
        }]
        .into(),
    );
    let mut big = Vec::new();
    let _ = encode(NodeId::new(1), &LeaseMessage::Raft(append), &mut big);
    let entry_bytes = 1 + 8 + 8 + 2 + MAX_ENTRY_DATA_BYTES + 2;
    let count_at = big.len() - entry_bytes - 2;
    let entry = big[big.len() - entry_bytes..].to_vec();
    for _ in 0..4 {
        big.extend_from_slice(&entry);
    }
    big[count_at..count_at + 2].copy_from_slice(&5u16.to_be_bytes());
    assert!(big.len() > MAX_DATAGRAM_BYTES);
    assert!(matches!(decode(&big), Err(DecodeError::Oversized { .. })));
    // A length prefix past the bound is refused before anything is read.
    let at = buf.len() - 2 - 100_000 - 4;
    buf[at..at + 4].copy_from_slice(&(MAX_SNAPSHOT_DATA_BYTES as u32 + 1).to_be_bytes());
    assert!(matches!(
        decode(&buf),
        Err(DecodeError::TooLong {
            field: "snapshot data",
            ..
        })
    ));
    let too_big = vec![0; MAX_MESSAGE_BYTES + 1];
    assert!(matches!(
        decode(&too_big),
        Err(DecodeError::Oversized { .. })
    ));
}

#[test]
fn snapshot_configurations_other_than_plain_voters_are_refused() {
    let ok = ConfState {
        voters: vec![1, 2, 3],
        ..ConfState::default()
    };
    assert!(check_conf_state(&ok).is_ok());
    for bad in [
        ConfState::default(),
        ConfState {
            voters: vec![1, 1],
            ..ConfState::default()
        },
        ConfState {
            voters: vec![0, 1],
            ..ConfState::default()
        },
        ConfState {
            voters: (1..=8).collect(),
            ..ConfState::default()
        },
        ConfState {
            voters: vec![1],
            learners: vec![2],
            ..ConfState::default()
        },
        ConfState {
            voters: vec![1],
            auto_leave: true,
            ..ConfState::default()
        },
    ] {
        assert!(check_conf_state(&bad).is_err(), "{bad:?}");
    }
}

#[test]
fn local_and_proposal_messages_are_refused() {
    for t in [
        MessageType::MsgHup,
        MessageType::MsgBeat,
        MessageType::MsgPropose,
        MessageType::MsgUnreachable,
        MessageType::MsgSnapStatus,
        MessageType::MsgCheckQuorum,
    ] {
        assert_eq!(message_type_code(t), None);
    }
    // A datagram carrying MsgPropose's code (2) is refused.
    let mut m = Message::default();
    m.set_msg_type(MessageType::MsgHeartbeat);
    let mut buf = Vec::new();
    let _ = encode(NodeId::new(1), &LeaseMessage::Raft(m), &mut buf);
    buf[HEADER_BYTES] = 2;
    assert!(matches!(
        decode(&buf),
        Err(DecodeError::UnknownKind {
            what: "raft message",
            kind: 2
        })
    ));
}

#[test]
fn an_append_too_large_for_a_datagram_is_cut_to_a_prefix() {
    let mut m = Message::default();
    m.set_msg_type(MessageType::MsgAppend);
    let entries: Vec<Entry> = (1..=10)
        .map(|i| Entry {
            index: i,
            term: 1,
            data: vec![7; 200].into(),
            ..Entry::default()
        })
        .collect();
    m.set_entries(entries.into());
    let mut buf = Vec::new();
    let cut = encode(NodeId::new(1), &LeaseMessage::Raft(m), &mut buf);
    assert!(cut > 0 && buf.len() <= MAX_DATAGRAM_BYTES);
    let (_, LeaseMessage::Raft(got)) = decode(&buf).expect("own encoding") else {
        panic!("a raft message");
    };
    assert_eq!(got.get_entries().len(), 10 - cut);
    assert_eq!(got.get_entries()[0].index, 1);
}
