//! Byte-level reader and writer. The reader never panics: every read checks the remaining length.

use core::time::Duration;

use super::DecodeError;
use crate::id::NodeId;

/// Longest varint ([`Writer::varint`]) of a `u64`: 64 bits, 7 a byte.
pub(crate) const MAX_VARINT_BYTES: usize = 10;

/// Appends big-endian fields (and varints) to a caller-owned buffer.
pub(crate) struct Writer<'a> {
    /// The buffer written to; encoders that patch a count or trim to a bound reach into it.
    pub(crate) buf: &'a mut Vec<u8>,
}

impl<'a> Writer<'a> {
    pub(crate) fn new(buf: &'a mut Vec<u8>) -> Self {
        Self { buf }
    }
    pub(crate) fn u8(&mut self, v: u8) {
        self.buf.push(v);
    }
    pub(crate) fn u16(&mut self, v: u16) {
        self.buf.extend_from_slice(&v.to_be_bytes());
    }
    pub(crate) fn u32(&mut self, v: u32) {
        self.buf.extend_from_slice(&v.to_be_bytes());
    }
    pub(crate) fn u64(&mut self, v: u64) {
        self.buf.extend_from_slice(&v.to_be_bytes());
    }
    pub(crate) fn u128(&mut self, v: u128) {
        self.buf.extend_from_slice(&v.to_be_bytes());
    }
    pub(crate) fn bool(&mut self, v: bool) {
        self.u8(u8::from(v));
    }
    /// An unsigned LEB128 varint: 7 bits a byte, low bits first, the high bit set on every byte
    /// but the last; 1 byte below 128, at most [`MAX_VARINT_BYTES`].
    pub(crate) fn varint(&mut self, mut v: u64) {
        while v >= 0x80 {
            self.buf.push((v as u8) | 0x80);
            v >>= 7;
        }
        self.buf.push(v as u8);
    }
    /// Nanoseconds, saturating at `u64::MAX` (584 years).
    pub(crate) fn duration(&mut self, d: Duration) {
        self.u64(u64::try_from(d.as_nanos()).unwrap_or(u64::MAX));
    }
    /// A length-prefixed (u16) byte string. Callers bound `bytes` far below `u16::MAX`.
    pub(crate) fn bytes16(&mut self, bytes: &[u8]) {
        debug_assert!(
            bytes.len() <= usize::from(u16::MAX),
            "field longer than its u16 length prefix"
        );
        self.u16(bytes.len() as u16);
        self.buf.extend_from_slice(bytes);
    }
    /// A length-prefixed (u32) byte string. Callers bound `bytes` far below `u32::MAX`.
    pub(crate) fn bytes32(&mut self, bytes: &[u8]) {
        debug_assert!(
            u32::try_from(bytes.len()).is_ok(),
            "field longer than its u32 length prefix"
        );
        self.u32(bytes.len() as u32);
        self.buf.extend_from_slice(bytes);
    }
}

/// Reads big-endian fields from a received datagram.
pub(crate) struct Reader<'a> {
    bytes: &'a [u8],
}

impl<'a> Reader<'a> {
    pub(crate) fn new(bytes: &'a [u8]) -> Self {
        Self { bytes }
    }
    pub(crate) fn remaining(&self) -> usize {
        self.bytes.len()
    }
    fn take(&mut self, n: usize) -> Result<&'a [u8], DecodeError> {
        if self.bytes.len() < n {
            return Err(DecodeError::Truncated {
                needed: n,
                remaining: self.bytes.len(),
            });
        }
        let (head, tail) = self.bytes.split_at(n);
        self.bytes = tail;
        Ok(head)
    }
    fn array<const N: usize>(&mut self) -> Result<[u8; N], DecodeError> {
        let mut out = [0; N];
        out.copy_from_slice(self.take(N)?);
        Ok(out)
    }
    pub(crate) fn u8(&mut self) -> Result<u8, DecodeError> {
        Ok(self.array::<1>()?[0])
    }
    pub(crate) fn u16(&mut self) -> Result<u16, DecodeError> {
        Ok(u16::from_be_bytes(self.array()?))
    }
    pub(crate) fn u32(&mut self) -> Result<u32, DecodeError> {
        Ok(u32::from_be_bytes(self.array()?))
    }
    pub(crate) fn u64(&mut self) -> Result<u64, DecodeError> {
        Ok(u64::from_be_bytes(self.array()?))
    }
    pub(crate) fn u128(&mut self) -> Result<u128, DecodeError> {
        Ok(u128::from_be_bytes(self.array()?))
    }
    /// A byte that must be 0 or 1.
    pub(crate) fn bool(&mut self, field: &'static str) -> Result<bool, DecodeError> {
        match self.u8()? {
            0 => Ok(false),
            1 => Ok(true),
            v => Err(DecodeError::InvalidValue {
                field,
                value: v.into(),
            }),
        }
    }
    /// A varint written by [`Writer::varint`]; only its shortest form is accepted (so a
    /// decoded value re-encodes to the same bytes), and at most `max`.
    pub(crate) fn varint(&mut self, field: &'static str, max: u64) -> Result<u64, DecodeError> {
        let mut value: u64 = 0;
        for i in 0..MAX_VARINT_BYTES {
            let byte = self.u8()?;
            let bits = u64::from(byte & 0x7f);
            let shift = 7 * i as u32;
            // The tenth byte holds the 64th bit only.
            if i == MAX_VARINT_BYTES - 1 && bits > 1 {
                return Err(DecodeError::InvalidValue { field, value: bits });
            }
            value |= bits << shift;
            if byte & 0x80 == 0 {
                // A last byte of zero after others is a longer form of a shorter varint.
                if i > 0 && byte == 0 {
                    return Err(DecodeError::InvalidValue { field, value: 0 });
                }
                return if value <= max {
                    Ok(value)
                } else {
                    Err(DecodeError::InvalidValue { field, value })
                };
            }
        }
        Err(DecodeError::InvalidValue { field, value })
    }
    /// A node id written as a varint.
    pub(crate) fn varint_node(&mut self, field: &'static str) -> Result<NodeId, DecodeError> {
        Ok(NodeId::new(self.varint(field, u64::MAX)?))
    }
    /// A `u32` written as a varint.
    pub(crate) fn varint_u32(&mut self, field: &'static str) -> Result<u32, DecodeError> {
        // Bounded by `max`: the conversion cannot fail.
        Ok(u32::try_from(self.varint(field, u64::from(u32::MAX))?).unwrap_or(u32::MAX))
    }
    pub(crate) fn node(&mut self) -> Result<NodeId, DecodeError> {
        Ok(NodeId::new(self.u64()?))
    }
    pub(crate) fn duration(&mut self) -> Result<Duration, DecodeError> {
        Ok(Duration::from_nanos(self.u64()?))
    }
    /// Exactly `n` raw bytes (the caller bounds `n`).
    pub(crate) fn bytes_exact(&mut self, n: usize) -> Result<&'a [u8], DecodeError> {
        self.take(n)
    }
    /// Checks that every byte was read.
    pub(crate) fn finish(&self) -> Result<(), DecodeError> {
        if self.bytes.is_empty() {
            Ok(())
        } else {
            Err(DecodeError::TrailingBytes(self.bytes.len()))
        }
    }
    /// A u16-length-prefixed byte string of at most `max` bytes.
    pub(crate) fn bytes16(
        &mut self,
        field: &'static str,
        max: usize,
    ) -> Result<&'a [u8], DecodeError> {
        let len = usize::from(self.u16()?);
        if len > max {
            return Err(DecodeError::TooLong { field, len, max });
        }
        self.take(len)
    }
    /// A u32-length-prefixed byte string of at most `max` bytes.
    pub(crate) fn bytes32(
        &mut self,
        field: &'static str,
        max: usize,
    ) -> Result<&'a [u8], DecodeError> {
        let len = usize::try_from(self.u32()?).unwrap_or(usize::MAX);
        if len > max {
            return Err(DecodeError::TooLong { field, len, max });
        }
        self.take(len)
    }
}
