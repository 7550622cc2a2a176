//! How the driver reaches other nodes: the [`Transport`] trait and its implementations.
//!
//! * [`quic`]: QUIC datagrams over quinn with mutual TLS; the sender's [`NodeId`] comes from its
//!   verified certificate. What `meshkitd` uses.
//! * [`memory`]: an in-process network of channels, for tests of the driver.
//! * `turmoil` (feature `turmoil`): turmoil's simulated network, sender identity from a
//!   directory of addresses, and a virtual-time clock, for simulation tests of the driver.

pub mod memory;
pub mod quic;
#[cfg(feature = "turmoil")]
pub mod turmoil;

use std::net::SocketAddr;
use std::task::{Context, Poll};

use bytes::Bytes;
use meshkit::NodeId;

/// A datagram handed to the driver by a transport.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Received {
    /// The sender, as the transport authenticated it (never read from the datagram itself).
    pub from: NodeId,
    /// The datagram.
    pub datagram: Bytes,
}

/// Counters a transport keeps for metrics; they only grow.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct TransportStats {
    /// Connections established (dialled or accepted).
    pub connections_opened: u64,
    /// Dials that failed (no route, handshake refused, timeout).
    pub dials_failed: u64,
    /// Incoming handshakes refused (e.g. a certificate not signed by the CA).
    pub handshakes_refused: u64,
    /// Datagrams dropped on the way out (no address, no connection yet, too large, queue full).
    pub datagrams_dropped: u64,
}

/// An unreliable datagram service between authenticated nodes, driven by the driver's task.
///
/// `send` never blocks and may drop (membership tolerates loss); `poll_recv` yields datagrams
/// with the sender the transport authenticated.
pub trait Transport: Send + Unpin + 'static {
    /// Sends one datagram to `to`, at `addr` if the transport must dial it. Drops it (and counts
    /// the drop) when `to` cannot be reached now.
    fn send(&mut self, to: NodeId, addr: Option<SocketAddr>, datagram: Bytes);

    /// The next datagram received; `Ready(None)` when the transport has shut down.
    fn poll_recv(&mut self, cx: &mut Context<'_>) -> Poll<Option<Received>>;

    /// Counters for metrics.
    fn stats(&self) -> TransportStats {
        TransportStats::default()
    }
}
