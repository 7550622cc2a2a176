//! The one output type of every `poll_transmit` in the core.

use crate::id::NodeId;

/// A datagram written to the caller's buffer by a `poll_transmit`: the bytes are
/// `buf[..len]`, for `to`.
///
/// [`Node::poll_transmit`](crate::node::Node::poll_transmit) writes whole datagrams (channel
/// byte and payload); a component's own `poll_transmit` (membership, lease group, lease client)
/// writes its payload only, for a host that composes the components itself.
#[must_use = "a transmit not sent is a probe, an update or a lease message lost"]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Transmit {
    /// The recipient.
    pub to: NodeId,
    /// Bytes written to the buffer.
    pub len: usize,
}
