//! Forged Raft messages (docs/security.md): a sender that is not a voter, or a voter
//! whose message breaks an invariant raft-rs relies on, is refused before raft-rs sees it, with
//! a typed error, and the voter's state (leader, term, lease table) is unchanged.

use raft::eraftpb::{Entry, EntryType, Message, MessageType, Snapshot, SnapshotMetadata};

use super::*;
use crate::lease::wire::{self, LeaseMessage};

/// A node id that holds a certificate but is no voter (`node-4` of the issue).
const STRANGER: u64 = 4;

/// What a forged message must not change on the voter that receives it.
#[derive(Debug, PartialEq)]
struct Seen {
    leader: Option<NodeId>,
    term: Term,
    applied: u64,
    table: Vec<(Scope, NodeId, FencingToken)>,
}

fn seen(g: &LeaseGroup) -> Seen {
    Seen {
        leader: g.leader(),
        term: g.term(),
        applied: g.applied_index(),
        table: g
            .table()
            .iter()
            .map(|(s, l)| (s.clone(), l.holder, l.token))
            .collect(),
    }
}

/// Three voters with a leader and a granted lease; returns `(net, leader, a follower)`.
fn settled(seed: u64) -> (Net, u64, u64) {
    let mut net = Net::new(3, &[10], seed);
    let leader = net.wait_for_leader(Duration::from_secs(5)).get();
    client!(net, 10).acquire(net.now, gc(), TTL).unwrap();
    net.run_for(ms(300));
    assert_eq!(net.acquired(10, &gc()).len(), 1, "the lease was granted");
    let follower = (1..=3).find(|v| *v != leader).expect("a follower");
    (net, leader, follower)
}

/// A Raft message of `kind` to `to`, at `to`'s current term, as `from` would send it.
fn message(net: &Net, kind: MessageType, from: u64, to: u64) -> Message {
    let mut m = Message::default();
    m.set_msg_type(kind);
    m.from = from;
    m.to = to;
    m.term = net.group(to).term().get();
    m
}

/// Hands `m` to voter `to` as a datagram that the transport authenticated as `from`.
fn forge(net: &mut Net, from: u64, m: Message) -> Result<(), MessageError> {
    let to = m.to;
    let mut bytes = Vec::new();
    wire::encode(id(from), &LeaseMessage::Raft(m), &mut bytes);
    let now = net.now;
    net.group_mut(to).handle_message(now, id(from), &bytes)
}

fn refused(result: Result<(), MessageError>, from: u64) -> RaftRefusal {
    match result {
        Err(MessageError::RaftRefused { from: f, reason }) if f == id(from) => reason,
        other => panic!("expected a refusal of a message from {from}, got {other:?}"),
    }
}

/// Finding 1: `MsgHeartbeat` with the current term and `commit = 0x7fffffffffffffff` panicked
/// raft-rs (`to_commit ... is out of range`) and with it the node's driver. From a voter it is
/// refused by the commit rule, from a non-voter by the voter rule.
#[test]
fn a_heartbeat_with_a_commit_beyond_the_log_is_refused() {
    let (mut net, leader, follower) = settled(31);
    // The commit (above the index ceiling), then one just past the receiver's log.
    let cases = |last: u64| [0x7fff_ffff_ffff_ffff, last + 1];
    for (from, to) in [(leader, follower), (follower, leader), (STRANGER, follower)] {
        for commit in cases(net.group(to).last_log_index()) {
            let before = seen(net.group(to));
            let mut m = message(&net, MessageType::MsgHeartbeat, from, to);
            m.commit = commit;
            let result = forge(&mut net, from, m);
            assert_eq!(seen(net.group(to)), before, "state unchanged on {to}");
            let reason = refused(result, from);
            match (from == STRANGER, commit > MAX_RAFT_INDEX) {
                (true, _) => assert_eq!(reason, RaftRefusal::NotVoter),
                (false, true) => assert!(matches!(reason, RaftRefusal::Index { .. })),
                (false, false) => assert!(matches!(reason, RaftRefusal::Commit { .. })),
            }
        }
    }
    let refused = net.group(follower).stats().raft_refused;
    assert_eq!(
        refused.iter().collect::<Vec<_>>()[..5],
        [
            ("not_voter", 2),
            ("message_type", 0),
            ("term", 0),
            ("commit", 1),
            ("index", 1)
        ]
    );
    // The group goes on: the same leader, the lease still renewable.
    net.run_for(ms(500));
    assert_eq!(net.agreed_leader(), Some(id(leader)));
    net.check_tables_agree();
}

/// Finding 2: five `MsgTimeoutNow` from a non-voter moved the term and leadership.
#[test]
fn timeout_now_from_a_non_voter_moves_nothing() {
    let (mut net, leader, _) = settled(32);
    for to in 1..=3 {
        let before = seen(net.group(to));
        let results: Vec<_> = (0..5)
            .map(|_| {
                let m = message(&net, MessageType::MsgTimeoutNow, STRANGER, to);
                forge(&mut net, STRANGER, m)
            })
            .collect();
        assert_eq!(seen(net.group(to)), before, "state unchanged on {to}");
        for result in results {
            assert_eq!(refused(result, STRANGER), RaftRefusal::NotVoter);
        }
    }
    net.run_for(ms(500));
    assert_eq!(net.agreed_leader(), Some(id(leader)));
}

/// Finding 2: a higher-term heartbeat or append from a non-voter made voters follow it.
#[test]
fn higher_term_heartbeat_and_append_from_a_non_voter_are_refused() {
    let (mut net, leader, follower) = settled(33);
    for kind in [MessageType::MsgHeartbeat, MessageType::MsgAppend] {
        for to in [leader, follower] {
            let before = seen(net.group(to));
            let mut m = message(&net, kind, STRANGER, to);
            m.term += 5;
            if kind == MessageType::MsgAppend {
                m.index = net.group(to).applied_index();
                m.log_term = m.term;
            }
            let result = forge(&mut net, STRANGER, m);
            assert_eq!(seen(net.group(to)), before, "{kind:?} changed {to}");
            assert_eq!(refused(result, STRANGER), RaftRefusal::NotVoter);
        }
    }
    net.run_for(ms(500));
    assert_eq!(net.agreed_leader(), Some(id(leader)));
}

/// Every other rule, each with a message that raft-rs would have panicked on or followed:
/// `(what, sender is the leader?, receiver is the leader?, change, expected label)`.
#[test]
fn each_invariant_is_checked_before_raft_steps() {
    type Forge = fn(&mut Message, u64);
    let cases: [(&str, bool, bool, Forge, &str); 19] = [
        (
            "transfer leader",
            false,
            true,
            |m, _| m.set_msg_type(MessageType::MsgTransferLeader),
            "message_type",
        ),
        (
            "timeout now from a follower",
            false,
            false,
            |m, _| m.set_msg_type(MessageType::MsgTimeoutNow),
            "message_type",
        ),
        (
            "timeout now of another term",
            true,
            false,
            |m, _| {
                m.set_msg_type(MessageType::MsgTimeoutNow);
                m.term += 1
            },
            "message_type",
        ),
        (
            "term 0 (a local message to raft-rs)",
            true,
            false,
            |m, _| m.term = 0,
            "term",
        ),
        (
            "term above the ceiling",
            true,
            false,
            |m, _| m.term = MAX_RAFT_TERM + 1,
            "term",
        ),
        (
            "log term above the term",
            true,
            false,
            |m, _| {
                m.set_msg_type(MessageType::MsgRequestVote);
                m.log_term = m.term + 1
            },
            "term",
        ),
        // raft-rs indexes entries[0] of a ReadIndex (panic on none).
        (
            "read index without its entry",
            false,
            true,
            |m, _| {
                m.set_msg_type(MessageType::MsgReadIndex);
                m.term = 0
            },
            "entries",
        ),
        // raft-rs commits to a ReadIndexResp's index when its term is 0 (panic beyond the log).
        (
            "read index response of term 0",
            true,
            false,
            |m, _| {
                m.set_msg_type(MessageType::MsgReadIndexResp);
                m.term = 0;
                m.index = u64::MAX;
                m.set_entries(vec![Entry::default()].into())
            },
            "term",
        ),
        (
            "append with a gap",
            true,
            false,
            |m, last| {
                m.set_msg_type(MessageType::MsgAppend);
                m.index = last;
                m.log_term = m.term;
                m.set_entries(vec![entry(last + 2, m.term)].into())
            },
            "entries",
        ),
        (
            "append overflowing the index",
            true,
            false,
            |m, _| {
                m.set_msg_type(MessageType::MsgAppend);
                m.index = u64::MAX;
                m.log_term = 1;
                m.set_entries(vec![entry(0, m.term)].into())
            },
            "index",
        ),
        (
            "append with a future entry term",
            true,
            false,
            |m, last| {
                m.set_msg_type(MessageType::MsgAppend);
                m.index = last;
                m.log_term = 1;
                m.set_entries(vec![entry(last + 1, m.term + 1)].into())
            },
            "entries",
        ),
        // Found by fuzz target lease_group: raft-rs reads the term beyond its log as 0, so term-0
        // entries past the log "match" and it commits past the log (panic).
        (
            "append beyond the log with log term 0",
            true,
            false,
            |m, last| {
                m.set_msg_type(MessageType::MsgAppend);
                m.index = last + 1;
                m.set_entries(vec![entry(last + 2, 0)].into());
                m.commit = last + 2
            },
            "term",
        ),
        (
            "append of a term-0 entry",
            true,
            false,
            |m, last| {
                m.set_msg_type(MessageType::MsgAppend);
                m.index = last;
                m.log_term = 1;
                m.set_entries(vec![entry(last + 1, 0)].into());
                m.commit = last + 1
            },
            "entries",
        ),
        // Found by fuzz target lease_group: a negative priority makes raft-rs refuse a vote,
        // and a voter that never heard of a leader (term 0) panics sending the refusal.
        (
            "negative priority",
            true,
            false,
            |m, _| {
                m.set_msg_type(MessageType::MsgRequestPreVote);
                m.term += 1;
                m.priority = -1
            },
            "priority",
        ),
        // Found by fuzz target lease_group: raft-rs sets its log's offset to a snapshot's
        // index + 1 (overflow at u64::MAX).
        (
            "snapshot at the last index",
            true,
            false,
            |m, _| {
                m.set_msg_type(MessageType::MsgSnapshot);
                let mut s = snapshot();
                s.mut_metadata().index = u64::MAX;
                m.set_snapshot(s)
            },
            "index",
        ),
        (
            "commit above the index ceiling",
            true,
            false,
            |m, last| {
                m.set_msg_type(MessageType::MsgAppend);
                m.index = last;
                m.log_term = 1;
                m.commit = MAX_RAFT_INDEX + 1
            },
            "index",
        ),
        // raft-rs moves the follower's progress to index + 1 (overflow at u64::MAX).
        (
            "append response beyond the log",
            false,
            true,
            |m, _| {
                m.set_msg_type(MessageType::MsgAppendResponse);
                m.index = u64::MAX
            },
            "index",
        ),
        (
            "snapshot request",
            false,
            true,
            |m, _| {
                m.set_msg_type(MessageType::MsgAppendResponse);
                m.request_snapshot = 1
            },
            "index",
        ),
        (
            "snapshot on a heartbeat",
            true,
            false,
            |m, _| m.set_snapshot(snapshot()),
            "snapshot",
        ),
    ];
    let (mut net, leader, follower) = settled(34);
    for (what, from_leader, to_leader, change, label) in cases {
        let (from, to) = match (from_leader, to_leader) {
            (true, false) => (leader, follower),
            (false, true) => (follower, leader),
            (false, false) => (
                (1..=3).find(|v| *v != leader && *v != follower).unwrap(),
                follower,
            ),
            (true, true) => unreachable!("a voter never messages itself"),
        };
        let before = seen(net.group(to));
        let mut m = message(&net, MessageType::MsgHeartbeat, from, to);
        let last = net.group(to).last_log_index();
        change(&mut m, last);
        let result = forge(&mut net, from, m);
        assert_eq!(seen(net.group(to)), before, "{what}: state unchanged");
        let reason = refused(result, from);
        assert_eq!(reason.label(), label, "{what}: {reason:?}");
    }
    net.run_for(ms(500));
    assert_eq!(net.agreed_leader(), Some(id(leader)));
    net.check_tables_agree();
}

/// A voter's own id on a datagram (a stolen certificate, or a loop) is no voter to talk to.
#[test]
fn raft_messages_from_the_voter_itself_are_refused() {
    let (mut net, leader, _) = settled(35);
    let before = seen(net.group(leader));
    let mut m = message(&net, MessageType::MsgHeartbeat, leader, leader);
    m.term += 1;
    let result = forge(&mut net, leader, m);
    assert_eq!(seen(net.group(leader)), before);
    assert_eq!(refused(result, leader), RaftRefusal::NotVoter);
}

/// Lease requests from members that are not voters remain allowed: they acquire through the
/// voters (the voter rule is for Raft only).
#[test]
fn lease_requests_from_non_voters_still_work() {
    let (net, _, _) = settled(36);
    assert!(net.acquired(10, &gc())[0].get() > 0);
}

fn entry(index: u64, term: u64) -> Entry {
    let mut e = Entry::default();
    e.set_entry_type(EntryType::EntryNormal);
    e.index = index;
    e.term = term;
    e
}

fn snapshot() -> Snapshot {
    let mut s = Snapshot::default();
    s.set_metadata(SnapshotMetadata {
        index: 1,
        term: 1,
        ..SnapshotMetadata::default()
    });
    s
}

/// Found by fuzz target lease_group: a node that joins (term 0, no configuration) refused a
/// pre-vote of negative priority and raft-rs panicked sending the refusal with term 0
/// (`term should be set when sending MsgRequestPreVoteResponse`). It also listens only to the
/// voters it joins.
#[test]
fn a_joining_node_refuses_forged_votes_and_strangers() {
    let voters = [id(1), id(2), id(3)];
    let mut joiner = LeaseGroup::join(LeaseConfig::default(), id(5), &voters, 5, Instant::ZERO);
    let mut send = |from: u64, m: Message| {
        let mut bytes = Vec::new();
        wire::encode(id(from), &LeaseMessage::Raft(m), &mut bytes);
        joiner.handle_message(Instant::ZERO, id(from), &bytes)
    };
    let mut vote = Message::default();
    vote.set_msg_type(MessageType::MsgRequestPreVote);
    vote.from = 1;
    vote.to = 5;
    vote.term = 1;
    vote.priority = -1;
    assert!(matches!(
        refused(send(1, vote.clone()), 1),
        RaftRefusal::Priority { priority: -1 }
    ));
    let mut heartbeat = Message::default();
    heartbeat.set_msg_type(MessageType::MsgHeartbeat);
    heartbeat.from = STRANGER;
    heartbeat.to = 5;
    heartbeat.term = 9;
    assert_eq!(
        refused(send(STRANGER, heartbeat), STRANGER),
        RaftRefusal::NotVoter
    );
    vote.priority = 0;
    assert_eq!(
        send(1, vote),
        Ok(()),
        "a voter it joins may ask for its vote"
    );
    assert_eq!(joiner.term(), Term::new(0));
    assert_eq!(joiner.leader(), None);
}

/// Only a voter answers a lease request. Before, a `Granted` answer from any certificate (here
/// the non-member `node-4`) for a request the client had in flight made the client a holder of
/// a scope the table had given to another node, with the forger's token, and pointed the
/// client's next requests at the forger.
#[test]
fn a_forged_grant_from_a_non_voter_makes_no_holder() {
    use crate::lease::table::Outcome;
    use crate::lease::wire::Reply;
    let (mut net, _, follower) = settled(38);
    let now = net.now;
    let request = client!(net, follower).acquire(now, gc(), TTL).unwrap();
    let granted = LeaseMessage::Response {
        request,
        reply: Reply::Outcome(Outcome::Granted {
            token: FencingToken::new(1 << 40),
            term: net.group(1).term(),
            ttl: TTL,
        }),
    };
    let mut bytes = Vec::new();
    wire::encode(id(STRANGER), &granted, &mut bytes);
    let result = client!(net, follower).handle_message(now, id(STRANGER), &bytes);
    assert!(
        matches!(result, Err(MessageError::NotVoter { from }) if from == id(STRANGER)),
        "{result:?}"
    );
    net.run_for(ms(500));
    assert!(
        net.acquired(follower, &gc()).is_empty(),
        "node {follower} took a forged grant of a scope node 10 holds"
    );
    assert_eq!(net.acquired(10, &gc()).len(), 1);
}

/// A member that is not a voter cannot change the voter set by datagram: an append that carries
/// a membership entry adding it is refused on the leader and on a follower (only voters speak
/// Raft), and the voter set stays. A proposal is no message of the wire at all (the wire module
/// refuses `MsgPropose`): voter changes start only from the leader's own node
/// (`Node::change_voters`, behind `mesh.admin` in meshkitd).
#[test]
fn a_non_voter_cannot_add_itself_by_datagram() {
    let (mut net, leader, follower) = settled(37);
    for to in [leader, follower] {
        let before = seen(net.group(to));
        let last = net.group(to).last_log_index();
        let mut m = message(&net, MessageType::MsgAppend, STRANGER, to);
        m.index = last;
        m.log_term = m.term;
        m.commit = last + 1;
        m.set_entries(
            vec![Entry {
                entry_type: EntryType::EntryConfChange,
                term: m.term,
                index: last + 1,
                context: wire::encode_voter_change(wire::VoterChange {
                    add: true,
                    node: id(STRANGER),
                })
                .into(),
                ..Entry::default()
            }]
            .into(),
        );
        assert_eq!(
            refused(forge(&mut net, STRANGER, m), STRANGER),
            RaftRefusal::NotVoter
        );
        net.run_for(ms(300));
        assert_eq!(seen(net.group(to)).term, before.term);
        assert_eq!(
            net.group(to).voters().collect::<Vec<_>>(),
            [id(1), id(2), id(3)],
            "voter {to}"
        );
    }
}
