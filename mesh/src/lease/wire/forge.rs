//! Raft messages as any authenticated peer can put them on the wire, for adversarial tests.
//!
//! The node's forged-peer harness (`tests/tests/adversarial.rs`) and the simulator's
//! `byzantine` fault build the Raft datagrams a non-voter (or a compromised voter) could send:
//! a `MsgHeartbeat` whose `commit` runs past the log, a `MsgTimeoutNow`, a higher-term
//! `MsgAppend`. The real encoder ([`super::encode`]) takes raft-rs's own `Message`, which the
//! crate does not expose (so that its users need no raft dependency); this is the smallest public
//! door to it: plain fields in, the exact bytes a voter would have written out. Hidden from the
//! docs: it is test support, not part of the API.

use raft::eraftpb::{Entry, Message};

use super::{DecodeError, LeaseMessage, encode, message_type_from_code};
use crate::id::NodeId;

/// The fields of one Raft message as they travel (see the module documentation).
#[doc(hidden)]
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ForgedRaft {
    /// The message type's wire code: 3 `MsgAppend`, 4 `MsgAppendResponse`, 5
    /// `MsgRequestVote`, 6 its response, 7 `MsgSnapshot` (refused here: it needs a table), 8
    /// `MsgHeartbeat`, 9 its response, 13 `MsgTransferLeader`, 14 `MsgTimeoutNow`, 15
    /// `MsgReadIndex`, 16 its response, 17 `MsgRequestPreVote`, 18 its response.
    pub msg_type: u8,
    /// The recipient's node id.
    pub to: u64,
    /// The sender's term.
    pub term: u64,
    /// The term of the entry before `entries` (appends), or of the last entry (votes).
    pub log_term: u64,
    /// The index of the entry before `entries` (appends), or of the last entry (votes).
    pub index: u64,
    /// The sender's commit index.
    pub commit: u64,
    /// The term of the commit index.
    pub commit_term: u64,
    /// Where a rejecting follower's log ends.
    pub reject_hint: u64,
    /// A follower's snapshot request index.
    pub request_snapshot: u64,
    /// Whether a response rejects.
    pub reject: bool,
    /// Entries, as `(term, index)`, each a normal entry with no data (an empty entry is what a
    /// new leader appends first).
    pub entries: Vec<(u64, u64)>,
}

/// Encodes `message` as a lease datagram from `sender`, exactly as a voter's encoder writes a
/// Raft message. Fails only for a type code that is not a network message or is `MsgSnapshot`.
#[doc(hidden)]
pub fn encode_forged_raft(sender: NodeId, message: &ForgedRaft) -> Result<Vec<u8>, DecodeError> {
    let msg_type = message_type_from_code(message.msg_type)?;
    if msg_type == raft::eraftpb::MessageType::MsgSnapshot {
        return Err(DecodeError::UnknownKind {
            what: "forged raft message",
            kind: message.msg_type,
        });
    }
    let mut m = Message::default();
    m.set_msg_type(msg_type);
    m.from = sender.get();
    m.to = message.to;
    m.term = message.term;
    m.log_term = message.log_term;
    m.index = message.index;
    m.commit = message.commit;
    m.commit_term = message.commit_term;
    m.reject_hint = message.reject_hint;
    m.request_snapshot = message.request_snapshot;
    m.reject = message.reject;
    m.entries = message
        .entries
        .iter()
        .map(|&(term, index)| Entry {
            term,
            index,
            ..Entry::default()
        })
        .collect();
    let mut buf = Vec::new();
    encode(sender, &LeaseMessage::Raft(m), &mut buf);
    Ok(buf)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_forged_message_decodes_to_the_fields_it_was_given() {
        let forged = ForgedRaft {
            msg_type: 8,
            to: 2,
            term: 3,
            commit: 0x7fff_ffff_ffff_ffff,
            entries: vec![(3, 7)],
            ..ForgedRaft::default()
        };
        let bytes = encode_forged_raft(NodeId::new(4), &forged).expect("a heartbeat encodes");
        let (sender, message) = super::super::decode(&bytes).expect("it decodes");
        assert_eq!(sender, NodeId::new(4));
        let LeaseMessage::Raft(m) = message else {
            panic!("not a raft message: {message:?}");
        };
        assert_eq!(m.get_msg_type(), raft::eraftpb::MessageType::MsgHeartbeat);
        assert_eq!((m.from, m.to, m.term, m.commit), (4, 2, 3, forged.commit));
        assert_eq!(m.entries.len(), 1);
        assert!(encode_forged_raft(NodeId::new(4), &ForgedRaft::default()).is_err());
        let snapshot = ForgedRaft {
            msg_type: 7,
            ..ForgedRaft::default()
        };
        assert!(encode_forged_raft(NodeId::new(4), &snapshot).is_err());
    }
}
