//! Drives one lease voter (`LeaseGroup`) with arbitrary inputs: raw datagrams, well-formed Raft
//! messages with arbitrary fields (terms and indices mostly near the voter's own, so that they
//! reach raft-rs's deeper paths: votes that elect it, appends, heartbeats, snapshots, reads),
//! lease requests, time passing, and membership changes. Senders come from a pool of voters and
//! of non-voters that hold a certificate. After each input every output is drained.
//!
//! Properties: nothing panics (raft-rs included: every invariant it relies on is checked before
//! it steps a message); a Raft message from a node that is not a voter (or from the voter
//! itself) is refused and leaves the term, the leader and the applied index as they were; every
//! datagram the voter sends decodes.
//!
//! Snapshots mostly carry a valid (empty) lease table, so that the voter installs some.
//!
//! Half the inputs run a three-voter group (the fuzzer must win votes to lead), a quarter a
//! one-voter group (it leads at its first election, so requests and reads are served) and a
//! quarter a joining node (no configuration yet; it listens to the voters it joins).

#![no_main]

use libfuzzer_sys::arbitrary::{self, Arbitrary, Unstructured};
use libfuzzer_sys::fuzz_target;
use meshkit::lease::{
    LeaseConfig, LeaseGroup, MAX_RAFT_TERM, MessageError, RaftRefusal, Recipient, recipient,
};
use meshkit::{Duration, Instant, NodeId};

const LOCAL: NodeId = NodeId::new(1);
/// Ids 1..=6: 1 is the local voter, 2 and 3 the other voters, 4..=6 members without a vote.
const POOL: u64 = 6;
/// Operations per input; each drains the voter, so this bounds the work of one run.
const MAX_OPS: usize = 48;
/// Timer rounds run after one step of time, at most.
const MAX_TIMER_ROUNDS: usize = 64;

fuzz_target!(|data: &[u8]| {
    let mut u = Unstructured::new(data);
    let Ok(seed) = u.arbitrary::<u64>() else {
        return;
    };
    let Ok(mode) = u.int_in_range(0..=3u8) else {
        return;
    };
    let mut now = Instant::ZERO;
    let all = [LOCAL, NodeId::new(2), NodeId::new(3)];
    let mut group = match mode {
        0 | 1 => LeaseGroup::bootstrap(LeaseConfig::default(), LOCAL, &all, seed, now),
        2 => LeaseGroup::bootstrap(LeaseConfig::default(), LOCAL, &[LOCAL], seed, now),
        _ => Ok(LeaseGroup::join(
            LeaseConfig::default(),
            LOCAL,
            &all[1..],
            seed,
            now,
        )),
    }
    .expect("a valid voter set");
    let recording = u.arbitrary::<bool>().unwrap_or(false);
    if recording {
        group.record_durable_writes();
    }
    let mut buf = Vec::new();
    drain(&mut group, now, &mut buf);
    for _ in 0..MAX_OPS {
        let Ok(op) = u.arbitrary::<Op>() else {
            break;
        };
        match op {
            Op::Raw { from, bytes } => {
                let _ = group.handle_message(now, from, &bytes);
            }
            Op::Raft { from, fields } => {
                let bytes = fields.encode(from, &group);
                let is_voter = if group.voters().next().is_some() {
                    group.voters().any(|v| v == from)
                } else {
                    all[1..].contains(&from)
                };
                let before = (group.term(), group.leader(), group.applied_index());
                let result = group.handle_message(now, from, &bytes);
                if !is_voter || from == LOCAL {
                    assert!(
                        matches!(
                            result,
                            Err(MessageError::RaftRefused {
                                reason: RaftRefusal::NotVoter,
                                ..
                            }) | Err(MessageError::Decode(_))
                                | Err(MessageError::Misrouted { .. })
                        ),
                        "a Raft message from {from} (no voter) was taken: {result:?}"
                    );
                    let after = (group.term(), group.leader(), group.applied_index());
                    assert_eq!(
                        before, after,
                        "a message from {from} (no voter) changed the voter"
                    );
                }
            }
            Op::Request { from, body } => {
                let mut bytes = vec![1, 2];
                bytes.extend_from_slice(&from.get().to_be_bytes());
                bytes.extend_from_slice(&body);
                let _ = group.handle_message(now, from, &bytes);
            }
            Op::Advance { millis } => {
                now += Duration::from_millis(u64::from(millis));
                // A spurious call must be a no-op.
                group.handle_timeout(now);
                for _ in 0..MAX_TIMER_ROUNDS {
                    drain(&mut group, now, &mut buf);
                    match group.poll_timeout() {
                        Some(at) if at <= now => group.handle_timeout(now),
                        _ => break,
                    }
                }
            }
            Op::AddVoter { node } => {
                let _ = group.add_voter(now, node);
            }
            Op::RemoveVoter { node } => {
                let _ = group.remove_voter(now, node);
            }
        }
        drain(&mut group, now, &mut buf);
    }
});

/// One input to the voter.
#[derive(Debug)]
#[allow(
    clippy::large_enum_variant,
    reason = "one op is built and consumed at a time; boxing would only add an allocation"
)]
enum Op {
    /// Bytes as received from `from`.
    Raw { from: NodeId, bytes: Vec<u8> },
    /// A well-formed Raft message from `from`.
    Raft { from: NodeId, fields: Fields },
    /// A lease request header from `from`, then arbitrary bytes.
    Request { from: NodeId, body: Vec<u8> },
    /// Time passes; the timers that come due run.
    Advance { millis: u16 },
    /// The host asks to add a voter.
    AddVoter { node: NodeId },
    /// The host asks to remove a voter.
    RemoveVoter { node: NodeId },
}

impl<'a> Arbitrary<'a> for Op {
    fn arbitrary(u: &mut Unstructured<'a>) -> arbitrary::Result<Self> {
        Ok(match u.int_in_range(0..=15u8)? {
            0 => Self::Raw {
                from: node_id(u)?,
                bytes: u.arbitrary()?,
            },
            1..=8 => Self::Raft {
                from: node_id(u)?,
                fields: u.arbitrary()?,
            },
            9 | 10 => Self::Request {
                from: node_id(u)?,
                body: u.arbitrary()?,
            },
            11..=13 => Self::Advance {
                millis: u.arbitrary()?,
            },
            14 => Self::AddVoter { node: node_id(u)? },
            _ => Self::RemoveVoter { node: node_id(u)? },
        })
    }
}

/// A Raft message's fields; numbers are offsets from the voter's own term and applied index
/// most of the time, anything now and then.
#[derive(Debug)]
struct Fields {
    kind: u8,
    to_local: bool,
    term: Near,
    log_term: Near,
    index: Near,
    commit: Near,
    commit_term: Near,
    reject_hint: Near,
    request_snapshot: u64,
    reject: bool,
    priority: u64,
    context: Vec<u8>,
    snapshot: Option<SnapshotFields>,
    entries: Vec<EntryFields>,
}

#[derive(Debug)]
struct SnapshotFields {
    index: Near,
    term: Near,
    voters: Vec<u64>,
    learners: Vec<u64>,
    /// `None`: an empty lease table at the snapshot's index (a snapshot the voter installs).
    data: Option<Vec<u8>>,
}

#[derive(Debug)]
struct EntryFields {
    kind: u8,
    term: Near,
    /// `None`: the next index after the previous entry (or the message's index).
    index: Option<Near>,
    data: Vec<u8>,
    context: Vec<u8>,
}

/// A number near a reference value (the term or the applied index), or any number.
#[derive(Clone, Copy, Debug)]
enum Near {
    Offset(i8),
    Exactly(u64),
}

impl Near {
    fn resolve(self, base: u64) -> u64 {
        match self {
            Self::Offset(d) => base.saturating_add_signed(i64::from(d)),
            Self::Exactly(v) => v,
        }
    }
}

impl<'a> Arbitrary<'a> for Near {
    fn arbitrary(u: &mut Unstructured<'a>) -> arbitrary::Result<Self> {
        Ok(match u.int_in_range(0..=15u8)? {
            0 => Self::Exactly(*u.choose(&[0, 1, MAX_RAFT_TERM, MAX_RAFT_TERM + 1, u64::MAX])?),
            1 => Self::Exactly(u.arbitrary()?),
            _ => Self::Offset(u.int_in_range(-2..=3)?),
        })
    }
}

impl<'a> Arbitrary<'a> for Fields {
    fn arbitrary(u: &mut Unstructured<'a>) -> arbitrary::Result<Self> {
        // The network message types (3..=9, 13..=18), now and then any code.
        const KINDS: [u8; 13] = [3, 4, 5, 6, 7, 8, 9, 13, 14, 15, 16, 17, 18];
        let kind = if u.ratio(15, 16)? {
            *u.choose(&KINDS)?
        } else {
            u.arbitrary()?
        };
        let snapshot = if kind == 7 || u.ratio(1, 32)? {
            Some(SnapshotFields {
                index: u.arbitrary()?,
                term: u.arbitrary()?,
                voters: small_ids(u)?,
                learners: if u.ratio(1, 8)? {
                    small_ids(u)?
                } else {
                    Vec::new()
                },
                data: if u.ratio(3, 4)? {
                    None
                } else {
                    Some(bytes(u, 256)?)
                },
            })
        } else {
            None
        };
        let n = if kind == 3 || kind == 15 || kind == 16 {
            u.int_in_range(0..=4)?
        } else if u.ratio(1, 16)? {
            u.int_in_range(0..=2)?
        } else {
            0
        };
        let entries = (0..n)
            .map(|_| {
                Ok(EntryFields {
                    kind: if u.ratio(7, 8)? {
                        0
                    } else {
                        u.int_in_range(0..=3)?
                    },
                    term: u.arbitrary()?,
                    index: if u.ratio(7, 8)? {
                        None
                    } else {
                        Some(u.arbitrary()?)
                    },
                    data: bytes(u, 64)?,
                    context: bytes(u, 16)?,
                })
            })
            .collect::<arbitrary::Result<_>>()?;
        Ok(Self {
            kind,
            to_local: u.ratio(31, 32)?,
            term: u.arbitrary()?,
            log_term: u.arbitrary()?,
            index: u.arbitrary()?,
            commit: u.arbitrary()?,
            commit_term: u.arbitrary()?,
            reject_hint: u.arbitrary()?,
            request_snapshot: if u.ratio(15, 16)? { 0 } else { u.arbitrary()? },
            reject: u.arbitrary()?,
            priority: if u.ratio(15, 16)? { 0 } else { u.arbitrary()? },
            context: bytes(u, 16)?,
            snapshot,
            entries,
        })
    }
}

impl Fields {
    /// The datagram, in the lease wire format (`meshkit::lease::wire`, Raft kind 1).
    fn encode(&self, from: NodeId, group: &LeaseGroup) -> Vec<u8> {
        let term = group.term().get();
        let applied = group.applied_index();
        let mut b = vec![1, 1];
        b.extend_from_slice(&from.get().to_be_bytes());
        b.push(self.kind);
        let to = if self.to_local {
            LOCAL.get()
        } else {
            from.get()
        };
        b.extend_from_slice(&to.to_be_bytes());
        let index = self.index.resolve(applied);
        for v in [
            self.term.resolve(term),
            self.log_term.resolve(term),
            index,
            self.commit.resolve(applied),
            self.commit_term.resolve(term),
            self.reject_hint.resolve(applied),
            self.request_snapshot,
        ] {
            b.extend_from_slice(&v.to_be_bytes());
        }
        b.push(u8::from(self.reject));
        b.extend_from_slice(&self.priority.to_be_bytes());
        bytes16(&mut b, &self.context);
        match &self.snapshot {
            None => b.push(0),
            Some(s) => {
                b.push(1);
                let snapshot_index = s.index.resolve(applied);
                b.extend_from_slice(&snapshot_index.to_be_bytes());
                b.extend_from_slice(&s.term.resolve(term).to_be_bytes());
                for list in [&s.voters, &s.learners, &Vec::new(), &Vec::new()] {
                    b.push(list.len() as u8);
                    for id in list {
                        b.extend_from_slice(&id.to_be_bytes());
                    }
                }
                b.push(0);
                let data = s
                    .data
                    .clone()
                    .unwrap_or_else(|| empty_table(snapshot_index));
                b.extend_from_slice(&(data.len() as u32).to_be_bytes());
                b.extend_from_slice(&data);
            }
        }
        b.extend_from_slice(&(self.entries.len() as u16).to_be_bytes());
        let mut next = index.wrapping_add(1);
        for e in &self.entries {
            let at = e.index.map_or(next, |i| i.resolve(next));
            next = at.wrapping_add(1);
            b.push(e.kind);
            b.extend_from_slice(&e.term.resolve(term).to_be_bytes());
            b.extend_from_slice(&at.to_be_bytes());
            bytes16(&mut b, &e.data);
            bytes16(&mut b, &e.context);
        }
        b
    }
}

/// An empty lease table applied up to `index`, in the table encoding of version 1 (version,
/// applied index, clock term, clock, no lease, no session).
fn empty_table(index: u64) -> Vec<u8> {
    let mut t = vec![1];
    t.extend_from_slice(&index.to_be_bytes());
    t.extend_from_slice(&[0; 8 + 8 + 4 + 4]);
    t
}

fn bytes16(b: &mut Vec<u8>, field: &[u8]) {
    b.extend_from_slice(&(field.len() as u16).to_be_bytes());
    b.extend_from_slice(field);
}

/// Mostly an id of the pool; now and then any id.
fn node_id(u: &mut Unstructured<'_>) -> arbitrary::Result<NodeId> {
    Ok(NodeId::new(if u.ratio(15, 16)? {
        u.int_in_range(1..=POOL)?
    } else {
        u.arbitrary()?
    }))
}

fn small_ids(u: &mut Unstructured<'_>) -> arbitrary::Result<Vec<u64>> {
    let n = u.int_in_range(0..=4)?;
    (0..n).map(|_| u.int_in_range(0..=POOL)).collect()
}

fn bytes(u: &mut Unstructured<'_>, max: usize) -> arbitrary::Result<Vec<u8>> {
    let len = u.int_in_range(0..=max)?;
    Ok(u.bytes(len)?.to_vec())
}

/// Drains the voter's outputs in the documented order. Its own datagrams must decode.
fn drain(group: &mut LeaseGroup, now: Instant, buf: &mut Vec<u8>) {
    while group.poll_durable().is_some() {}
    while let Some(t) = group.poll_transmit(now, buf) {
        let kind = recipient(&buf[..t.len]).expect("the voter's own datagram has a valid header");
        assert!(matches!(kind, Recipient::Group | Recipient::Client));
    }
    while group.poll_event().is_some() {}
    let _ = group.poll_timeout();
}
