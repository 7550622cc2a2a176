//! The shard channel's messages ([`Channel::Shard`](crate::node::Channel::Shard)): the
//! coordinator's [`Instruction`] to the members a move concerns, and a member's [`Announce`]
//! of its role to the voters (whose coordinators build their pool from it).
//!
//! An announce is two bytes: the kind (`2`), then the role (`0` out, `1` member, `2`
//! draining). An instruction:
//!
//! ```text
//! kind    u8 (= 1)
//! term    u64 big-endian   the coordinator's Raft term (its fence)
//! flags   u8               bit 0: `from` present; other bits must be 0
//! from    u64 big-endian   present or not, always written (0 when absent)
//! to      u64 big-endian
//! id      u32 big-endian   the shard's number
//! ns_len  u8, then ns_len bytes of namespace (a valid `ShardId` namespace)
//! ```
//!
//! At most [`MAX_INSTRUCTION_BYTES`] (95) bytes: well within one datagram. Nothing else may
//! follow; every decoding failure is a [`InstructionError`], never a panic.

use alloc::vec::Vec;

use thiserror::Error;

use super::{MAX_NAMESPACE_CHARS, ShardId, ShardIdError};
use crate::id::NodeId;
use crate::lease::Term;

/// The first byte of an instruction.
pub const INSTRUCTION_VERSION: u8 = 1;
/// The first byte of an announce.
pub const ANNOUNCE_KIND: u8 = 2;
/// The largest encoded instruction.
pub const MAX_INSTRUCTION_BYTES: usize = 1 + 8 + 1 + 8 + 8 + 4 + 1 + MAX_NAMESPACE_CHARS;

/// What the coordinator asks of the members a move concerns: `from` hands `shard` to `to` by a
/// lease transfer if it holds it; with no `from`, `to` acquires it. Idempotent: the coordinator
/// sends it again until the lease table shows the move done.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Instruction {
    /// The Raft term in which the sending coordinator leads: members follow the highest.
    pub term: Term,
    /// The shard.
    pub shard: ShardId,
    /// Its holder, asked to transfer; `None`: `to` acquires it.
    pub from: Option<NodeId>,
    /// The new owner.
    pub to: NodeId,
}

/// A member's role, as it announces it to the voters.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Announce {
    /// The role.
    pub role: super::ShardRole,
}

/// One message of the shard channel.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ShardMessage {
    /// Coordinator to member.
    Instruction(Instruction),
    /// Member to voters.
    Announce(Announce),
}

impl ShardMessage {
    /// Appends the encoding to `buf`.
    pub fn encode(&self, buf: &mut Vec<u8>) {
        match self {
            Self::Instruction(i) => i.encode(buf),
            Self::Announce(a) => {
                buf.push(ANNOUNCE_KIND);
                buf.push(match a.role {
                    super::ShardRole::Out => 0,
                    super::ShardRole::Member => 1,
                    super::ShardRole::Draining => 2,
                });
            }
        }
    }

    /// Decodes one message, the whole of `bytes`.
    ///
    /// # Errors
    ///
    /// Any [`InstructionError`]; nothing is built.
    pub fn decode(bytes: &[u8]) -> Result<Self, InstructionError> {
        match bytes.first() {
            Some(&ANNOUNCE_KIND) => {
                let role = match bytes.get(1) {
                    Some(0) => super::ShardRole::Out,
                    Some(1) => super::ShardRole::Member,
                    Some(2) => super::ShardRole::Draining,
                    Some(&other) => return Err(InstructionError::Role(other)),
                    None => return Err(InstructionError::Truncated),
                };
                if bytes.len() > 2 {
                    return Err(InstructionError::Trailing(bytes.len() - 2));
                }
                Ok(Self::Announce(Announce { role }))
            }
            _ => Instruction::decode(bytes).map(Self::Instruction),
        }
    }
}

/// Why bytes on the shard channel are not a [`ShardMessage`]. A peer or network fault.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum InstructionError {
    /// Fewer bytes than the fields need.
    #[error("shard instruction truncated")]
    Truncated,
    /// A kind this build does not read.
    #[error("shard message kind {0}: this build reads {INSTRUCTION_VERSION} and {ANNOUNCE_KIND}")]
    Version(u8),
    /// An announce with an unknown role.
    #[error("shard announce role {0}: expected 0, 1 or 2")]
    Role(u8),
    /// Unknown flag bits.
    #[error("shard instruction flags {0:#04x}: only bit 0 is defined")]
    Flags(u8),
    /// The namespace is not a shard namespace.
    #[error("shard instruction namespace: {0}")]
    Namespace(#[from] ShardIdError),
    /// Bytes after the instruction.
    #[error("{0} bytes after the shard instruction")]
    Trailing(usize),
}

impl Instruction {
    /// Appends the encoding to `buf`.
    pub fn encode(&self, buf: &mut Vec<u8>) {
        buf.push(INSTRUCTION_VERSION);
        buf.extend_from_slice(&self.term.get().to_be_bytes());
        buf.push(u8::from(self.from.is_some()));
        buf.extend_from_slice(&self.from.map_or(0, NodeId::get).to_be_bytes());
        buf.extend_from_slice(&self.to.get().to_be_bytes());
        buf.extend_from_slice(&self.shard.id().to_be_bytes());
        let ns = self.shard.namespace().as_bytes();
        // A valid namespace is at most MAX_NAMESPACE_CHARS (64) ASCII bytes.
        buf.push(ns.len() as u8);
        buf.extend_from_slice(ns);
    }

    /// Decodes one instruction, the whole of `bytes`.
    ///
    /// # Errors
    ///
    /// Any [`InstructionError`]; nothing is built.
    pub fn decode(bytes: &[u8]) -> Result<Self, InstructionError> {
        let mut r = Reader(bytes);
        let version = r.u8()?;
        if version != INSTRUCTION_VERSION {
            return Err(InstructionError::Version(version));
        }
        let term = Term::new(r.u64()?);
        let flags = r.u8()?;
        if flags & !1 != 0 {
            return Err(InstructionError::Flags(flags));
        }
        let from = r.u64()?;
        let to = NodeId::new(r.u64()?);
        let id = r.u32()?;
        let len = usize::from(r.u8()?);
        let ns = r.take(len)?;
        if !r.0.is_empty() {
            return Err(InstructionError::Trailing(r.0.len()));
        }
        // Namespaces are ASCII; anything else fails the namespace check below.
        let ns = core::str::from_utf8(ns).map_err(|_| {
            InstructionError::Namespace(ShardIdError::InvalidNamespaceChar {
                found: char::REPLACEMENT_CHARACTER,
                position: 0,
            })
        })?;
        Ok(Self {
            term,
            shard: ShardId::new(ns, id)?,
            from: (flags & 1 == 1).then_some(NodeId::new(from)),
            to,
        })
    }
}

struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], InstructionError> {
        if self.0.len() < n {
            return Err(InstructionError::Truncated);
        }
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        Ok(head)
    }
    fn u8(&mut self) -> Result<u8, InstructionError> {
        Ok(self.take(1)?[0])
    }
    fn u32(&mut self) -> Result<u32, InstructionError> {
        let b = self.take(4)?;
        Ok(u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    }
    fn u64(&mut self) -> Result<u64, InstructionError> {
        let mut a = [0; 8];
        a.copy_from_slice(self.take(8)?);
        Ok(u64::from_be_bytes(a))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(from: Option<u64>) -> Instruction {
        Instruction {
            term: Term::new(7),
            shard: ShardId::new("orders", 42).unwrap(),
            from: from.map(NodeId::new),
            to: NodeId::new(3),
        }
    }

    #[test]
    fn round_trips_and_bounds() {
        for i in [sample(None), sample(Some(0)), sample(Some(u64::MAX))] {
            let mut buf = Vec::new();
            i.encode(&mut buf);
            assert!(buf.len() <= MAX_INSTRUCTION_BYTES);
            assert_eq!(Instruction::decode(&buf).unwrap(), i);
        }
        let long = Instruction {
            shard: ShardId::new(&"a".repeat(MAX_NAMESPACE_CHARS), u32::MAX).unwrap(),
            ..sample(Some(1))
        };
        let mut buf = Vec::new();
        long.encode(&mut buf);
        assert_eq!(buf.len(), MAX_INSTRUCTION_BYTES);
    }

    #[test]
    fn announces_round_trip_and_refuse_garbage() {
        use super::super::ShardRole;
        for role in [ShardRole::Out, ShardRole::Member, ShardRole::Draining] {
            let m = ShardMessage::Announce(Announce { role });
            let mut buf = Vec::new();
            m.encode(&mut buf);
            assert_eq!(ShardMessage::decode(&buf).unwrap(), m);
        }
        assert_eq!(ShardMessage::decode(&[2]), Err(InstructionError::Truncated));
        assert_eq!(
            ShardMessage::decode(&[2, 3]),
            Err(InstructionError::Role(3))
        );
        assert_eq!(
            ShardMessage::decode(&[2, 1, 0]),
            Err(InstructionError::Trailing(1))
        );
        assert_eq!(
            ShardMessage::decode(&[9]),
            Err(InstructionError::Version(9))
        );
        let mut buf = Vec::new();
        ShardMessage::Instruction(sample(None)).encode(&mut buf);
        assert_eq!(
            ShardMessage::decode(&buf).unwrap(),
            ShardMessage::Instruction(sample(None))
        );
    }

    #[test]
    fn every_prefix_and_corruption_is_an_error_not_a_panic() {
        let mut buf = Vec::new();
        sample(Some(2)).encode(&mut buf);
        for n in 0..buf.len() {
            assert!(Instruction::decode(&buf[..n]).is_err(), "prefix {n}");
        }
        let mut longer = buf.clone();
        longer.push(0);
        assert_eq!(
            Instruction::decode(&longer),
            Err(InstructionError::Trailing(1))
        );
        let mut bad = buf.clone();
        bad[0] = 3;
        assert_eq!(Instruction::decode(&bad), Err(InstructionError::Version(3)));
        let mut bad = buf.clone();
        bad[9] = 0x80;
        assert_eq!(
            Instruction::decode(&bad),
            Err(InstructionError::Flags(0x80))
        );
        let mut bad = buf.clone();
        let last = bad.len() - 1;
        bad[last] = b'/';
        assert!(matches!(
            Instruction::decode(&bad),
            Err(InstructionError::Namespace(_))
        ));
        // Every single-byte change decodes or fails cleanly.
        for i in 0..buf.len() {
            for b in [0u8, 0xff, 0x7f] {
                let mut c = buf.clone();
                c[i] = b;
                let _ = Instruction::decode(&c);
            }
        }
    }
}
