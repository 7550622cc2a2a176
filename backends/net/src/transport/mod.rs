//! How the driver reaches other nodes: the [`Transport`] trait and its implementations.
//!
//! * [`quic`]: QUIC datagrams over quinn with mutual TLS, and a unidirectional stream per
//!   message too large for a datagram; the sender's [`NodeId`] comes from its verified
//!   certificate. What `meshkitd` uses.
//! * [`chaos`]: a wrapper around any transport that applies chaos link rules (cut, loss,
//!   latency, duplication, reordering) per peer and direction.
//! * [`memory`]: an in-process network of channels, for tests of the driver.
//! * `turmoil` (feature `turmoil`): turmoil's simulated network, sender identity from a
//!   directory of addresses, and a virtual-time clock, for simulation tests of the driver.

pub mod chaos;
pub mod memory;
pub mod quic;
#[cfg(feature = "turmoil")]
pub mod turmoil;

use std::net::SocketAddr;
use std::task::{Context, Poll};

use bytes::Bytes;
use meshkit::NodeId;

/// A message handed to the driver by a transport: a datagram, or a message that came on a
/// stream because it was too large for one (the driver cannot tell them apart).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Received {
    /// The sender, as the transport authenticated it (never read from the datagram itself).
    pub from: NodeId,
    /// The message.
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
    /// Datagrams dropped on the way out (no address, no connection yet, queue full).
    pub datagrams_dropped: u64,
    /// Messages too large for a datagram, sent whole on a stream and acknowledged by the peer's
    /// QUIC stack (which acknowledges bytes before its application may refuse them: the peer
    /// counts those in its `streams_refused`).
    pub stream_messages_sent: u64,
    /// Their bytes.
    pub stream_bytes_sent: u64,
    /// Messages received whole on a stream.
    pub stream_messages_received: u64,
    /// Their bytes.
    pub stream_bytes_received: u64,
    /// Stream messages not sent: over the size limit, too many in flight, stopped by the peer
    /// before it acknowledged them all, or not acknowledged in time.
    pub stream_messages_dropped: u64,
    /// Incoming streams refused: over the size limit, too many at once, too slow, or reset.
    pub streams_refused: u64,
    /// Connections closed because more than the bound were open (least recently used first).
    pub connections_evicted: u64,
    /// Dials to replace a connection that fell silent, whose peer moved, or that ended by the
    /// peer's doing (a reset after a restart, its close, the idle timeout) with membership
    /// datagrams sent on it in the last second.
    pub redials: u64,
    /// Incoming handshakes that resumed an earlier TLS session (no certificate exchange).
    pub handshakes_resumed: u64,
    /// The node's TLS counters (reloads, certificate expiry, refused handshakes on every
    /// listener), when the transport shares them.
    pub tls: crate::tls_stats::TlsCounters,
}

impl TransportStats {}

impl meshkit_api::metrics::Source for TransportStats {
    /// The stream counters (`mesh_transport_stream_*`, `mesh_transport_streams_refused_total`)
    /// and the TLS counters ([`crate::tls_stats::TlsCounters`]).
    fn write(&self, families: &mut meshkit_api::metrics::Families<'_, '_>) -> std::fmt::Result {
        use meshkit_api::metrics::catalogue::{
            TRANSPORT_STREAM_BYTES, TRANSPORT_STREAM_MESSAGES, TRANSPORT_STREAM_MESSAGES_DROPPED,
            TRANSPORT_STREAMS_REFUSED,
        };
        families.counters(
            &TRANSPORT_STREAM_MESSAGES,
            [
                (["sent"], self.stream_messages_sent),
                (["received"], self.stream_messages_received),
            ],
        )?;
        families.counters(
            &TRANSPORT_STREAM_BYTES,
            [
                (["sent"], self.stream_bytes_sent),
                (["received"], self.stream_bytes_received),
            ],
        )?;
        families.counter(
            &TRANSPORT_STREAM_MESSAGES_DROPPED,
            self.stream_messages_dropped,
        )?;
        families.counter(&TRANSPORT_STREAMS_REFUSED, self.streams_refused)?;
        meshkit_api::metrics::Source::write(&self.tls, families)
    }
}

/// An unreliable datagram service between authenticated nodes, driven by the driver's task.
///
/// `send` never blocks and may drop (membership tolerates loss); `poll_recv` yields datagrams
/// with the sender the transport authenticated. A message of any length may be sent: one too
/// large for a datagram goes on a stream (QUIC) and arrives as one [`Received`], whole or not
/// at all.
pub trait Transport: Send + Unpin + 'static {
    /// Sends one message to `to`, at `addr` if the transport must dial it. Drops it (and counts
    /// the drop) when `to` cannot be reached now.
    fn send(&mut self, to: NodeId, addr: Option<SocketAddr>, datagram: Bytes);

    /// Whether [`Self::send`] needs an address to reach a peer it has no connection to (QUIC,
    /// turmoil), so the driver must tell the node which members it can address (see
    /// `meshkit::membership::Membership::require_routes`). `false`: every peer is reachable
    /// by id alone (an in-memory network).
    fn needs_addresses(&self) -> bool {
        false
    }

    /// The next datagram received; `Ready(None)` when the transport has shut down.
    fn poll_recv(&mut self, cx: &mut Context<'_>) -> Poll<Option<Received>>;

    /// Counters for metrics.
    fn stats(&self) -> TransportStats {
        TransportStats::default()
    }
}
