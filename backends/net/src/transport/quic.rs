//! QUIC between nodes over quinn, with mutual TLS: datagrams for ordinary messages, a
//! unidirectional stream for each message too large for one.
//!
//! Each node owns one [`quinn::Endpoint`] (one UDP socket) that both accepts and dials. It dials
//! a peer lazily, on the first datagram for it, at the address the driver passes (a seed's, or the
//! one the peer publishes in its metadata), and keeps one connection per peer. Both sides present
//! certificates signed by the development CA; the peer's [`NodeId`] is read from its verified
//! certificate, never from a datagram, so the core can refuse a datagram claiming another sender.
//!
//! ## Connections cost nothing while idle
//!
//! Failure detection is SWIM's job, not the connection layer's, so a connection sends nothing of
//! its own: no keep-alive, and an idle timeout ([`IDLE_TIMEOUT`], 10 minutes) long enough that a
//! pair of members that probe each other round-robin keeps its connection between probes. What a
//! node sends is then what the core sends (plus QUIC's acknowledgements), whatever the size of
//! the mesh; with a keep-alive every open connection cost about a packet a second each way, so a
//! node's traffic grew with N. Open connections are bounded
//! ([`QuicOptions::max_connections`], default [`DEFAULT_MAX_CONNECTIONS`]): past the bound the
//! least recently used one is closed, and reopened on demand with a resumed TLS session (no
//! certificate exchange). The core needs no connection to be open: a datagram for a peer without
//! one waits (at most [`MAX_QUEUED_PER_DIAL`]) while a dial runs in a task of its own, bounded by
//! [`QuicOptions::dial_timeout`], so a dial to a dead peer never holds up datagrams to others.
//!
//! An idle connection may be dead without this node knowing: the peer crashed, restarted, moved,
//! or dropped it. None of these may hide a probe for long:
//!
//! * a peer restarted on the same address answers with a QUIC stateless reset, because every
//!   process of a node derives its reset key and connection-id key from the node's private key
//!   (a key rotated between the two processes loses this, and the last rule applies); the
//!   connection closes within one round trip;
//! * whenever a connection ends without this node closing it (that reset, the peer's own
//!   close when its process stops, the idle timeout), the membership datagrams sent on it in
//!   the last [`REPLAY_WINDOW`] (at most [`MAX_REPLAY_DATAGRAMS`]) go again on a new
//!   connection (membership messages are idempotent: a ping answered twice, a record merged
//!   twice). `send_datagram` succeeding only means quinn queued the datagram: one queued on a
//!   connection whose peer's close has arrived but is not yet processed is never sent;
//! * a peer whose published address changed is redialled at the new one;
//! * a connection that received nothing, not even an acknowledgement, for [`STALE_AFTER`] after
//!   a send is presumed dead: the next send also starts a dial (while still using the old one),
//!   and the new connection replaces it when it comes up. No reset reaches this node when the
//!   restarted peer had dialled the connection: a client's first connection id carries no
//!   reset token (RFC 9000 §10.3) and quinn keeps using it, so only this rule (or the
//!   restarted peer dialling again) replaces such a connection.
//!
//! 0-RTT is not used: a reopen costs one round trip (about 0.1 ms on a LAN), a replayed 0-RTT
//! packet could carry a Raft or lease message, and the datagram that triggered the dial waits
//! for the handshake instead (not for a probe timeout).
//!
//! ## Large messages
//!
//! The core keeps its messages within `meshkit::wire::MAX_DATAGRAM_BYTES`, but some are larger
//! (a Raft snapshot). A message longer than the connection's
//! [`Connection::max_datagram_size`] goes on a unidirectional stream of its own, read to its end
//! by the receiver and handed to the driver as one [`Received`], with the sender from the
//! certificate like a datagram. Limits: a stream message is at most
//! [`QuicOptions::max_stream_message_bytes`] (default [`DEFAULT_MAX_STREAM_MESSAGE_BYTES`]; a
//! longer one is refused with a `STOP_SENDING`, counted and logged, and the connection goes
//! on), a peer may open [`MAX_INCOMING_STREAMS_PER_CONNECTION`] at once, the transport reads at
//! most [`MAX_STREAM_READS`] and sends at most [`MAX_STREAM_SENDS`] at a time (more are refused
//! or dropped, and counted), and each must finish within [`STREAM_TIMEOUT`]. Worst-case memory
//! for incoming stream messages is thus `MAX_STREAM_READS * max_stream_message_bytes`.
//!
//! ## Certificates
//!
//! The transport takes its TLS identity from a [`TlsSource`]: when the reloader
//! ([`crate::reload`]) publishes a new one, the endpoint's server configuration is replaced (for
//! handshakes accepted from then on) and later dials use a client configuration built from it;
//! open connections keep going. A peer certificate this node refuses, on accept or on dial, is
//! counted and logged by [`TlsStats`] under the listener `mesh`.

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use meshkit::NodeId;
use quinn::crypto::rustls::{QuicClientConfig, QuicServerConfig};
use quinn::{Connection, Endpoint, RecvStream, VarInt};
use rustls::pki_types::CertificateDer;
use thiserror::Error;
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc};
use tokio::task::JoinHandle;

use super::{Received, Transport, TransportStats};
use crate::log_limit::LogLimit;
use crate::reload::TlsSource;
use crate::tls::{IdentityError, TlsError, TlsIdentity, node_dns_name, node_id_from_cert};
use crate::tls_stats::{Classified, Listener, LogLimiter, TlsStats, peer_refused_our_certificate};

/// Datagrams received and not yet taken by the driver; past this new ones are dropped.
pub const INBOX_DATAGRAMS: usize = 4096;
/// Datagrams held for a peer while its connection is being dialled; past this they are dropped.
pub const MAX_QUEUED_PER_DIAL: usize = 32;
/// A connection with no traffic this long is closed by both sides, silently. There is no
/// keep-alive: a pair that exchanges a probe every N probe intervals (round-robin probing) keeps
/// its connection while N x interval stays under this (N <= 600 at the `lan` profile's 1 s);
/// in larger meshes a pair reopens its connection (a resumed handshake) about once per probe,
/// which costs per probe sent, not per member.
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(600);
/// Default bound on open connections. Why 1,024: an idle connection costs memory only (about
/// 40 KiB of quinn and TLS state, measured as RSS per peer; see docs/architecture.md), so 1,024
/// of them cost about 40 MiB, and up to that size every member keeps one connection to every
/// other without any churn; beyond it the least recently used ones are closed and reopened on
/// demand (a resumed handshake each).
pub const DEFAULT_MAX_CONNECTIONS: usize = 1024;
/// Default time a dial has to complete its handshake before it is abandoned (its queued
/// datagrams dropped); the next datagram for that peer dials again.
pub const DEFAULT_DIAL_TIMEOUT: Duration = Duration::from_secs(3);
/// A connection that received nothing (not even an acknowledgement, which a live peer sends
/// within its 25 ms ack delay) this long after a send is presumed dead: the next send redials.
pub const STALE_AFTER: Duration = Duration::from_secs(1);
/// Membership datagrams kept per connection to be sent again when it ends by the peer's doing
/// (a reset, the peer's close, the idle timeout).
pub const MAX_REPLAY_DATAGRAMS: usize = 4;
/// How recent a kept membership datagram must be to be sent again when its connection ends (a
/// probe older than this has timed out in the core already).
pub const REPLAY_WINDOW: Duration = Duration::from_secs(1);
/// Peers whose TLS session each side's cache keeps, per connection of the bound.
pub const SESSIONS_PER_CONNECTION: usize = 2;
/// The first byte of a membership datagram (the driver's channel byte; see `meshkit::node`).
const MEMBERSHIP_CHANNEL: u8 = 0;
/// Default largest message a peer may send on a stream, in bytes: the largest lease message
/// (a Raft `MsgSnapshot` with the largest lease table, about 32 MiB) plus the driver's channel
/// byte, so that any message the core makes can travel.
pub const DEFAULT_MAX_STREAM_MESSAGE_BYTES: usize = meshkit::lease::wire::MAX_MESSAGE_BYTES + 1;
/// Streams a peer may have open towards this node at once, per connection (QUIC flow control).
pub const MAX_INCOMING_STREAMS_PER_CONNECTION: u32 = 4;
/// Incoming stream messages read at once over the whole transport; more are refused.
pub const MAX_STREAM_READS: usize = 4;
/// Outgoing stream messages in flight over the whole transport; more are dropped.
pub const MAX_STREAM_SENDS: usize = 8;
/// Time a stream message has to arrive whole (receiver) or be acknowledged (sender).
pub const STREAM_TIMEOUT: Duration = Duration::from_secs(30);

/// `STOP_SENDING` codes this node gives a stream it refuses.
const STREAM_TOO_LARGE: u32 = 1;
const STREAM_BUSY: u32 = 2;
const STREAM_TOO_SLOW: u32 = 3;

/// Application close codes this node gives a connection it closes on purpose.
const CLOSE_EVICTED: u32 = 16;
const CLOSE_REPLACED: u32 = 17;

/// Settings of a [`QuicTransport`] beyond its address and certificates.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct QuicOptions {
    /// Largest message accepted on a stream, and sent on one, in bytes (default
    /// [`DEFAULT_MAX_STREAM_MESSAGE_BYTES`]). Nodes of one mesh should agree: a longer message
    /// is dropped by its sender and refused by its receiver.
    pub max_stream_message_bytes: usize,
    /// Open connections at most (default [`DEFAULT_MAX_CONNECTIONS`], at least 1); past it the
    /// least recently used connection is closed.
    pub max_connections: usize,
    /// Time without traffic after which a connection closes (default [`IDLE_TIMEOUT`]).
    pub idle_timeout: Duration,
    /// Time a handshake has before the dial is abandoned (default [`DEFAULT_DIAL_TIMEOUT`]).
    pub dial_timeout: Duration,
}

impl Default for QuicOptions {
    fn default() -> Self {
        Self {
            max_stream_message_bytes: DEFAULT_MAX_STREAM_MESSAGE_BYTES,
            max_connections: DEFAULT_MAX_CONNECTIONS,
            idle_timeout: IDLE_TIMEOUT,
            dial_timeout: DEFAULT_DIAL_TIMEOUT,
        }
    }
}

impl QuicOptions {
    /// These options with another stream message limit.
    pub fn with_max_stream_message_bytes(mut self, bytes: usize) -> Self {
        self.max_stream_message_bytes = bytes;
        self
    }

    /// These options with another bound on open connections (0 is taken as 1).
    pub fn with_max_connections(mut self, connections: usize) -> Self {
        self.max_connections = connections.max(1);
        self
    }

    /// These options with another idle timeout (clamped to 1 ms - 1 day).
    pub fn with_idle_timeout(mut self, timeout: Duration) -> Self {
        self.idle_timeout = timeout.clamp(Duration::from_millis(1), Duration::from_secs(86_400));
        self
    }

    /// These options with another dial timeout.
    pub fn with_dial_timeout(mut self, timeout: Duration) -> Self {
        self.dial_timeout = timeout;
        self
    }
}

/// Why the QUIC transport could not start.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum QuicError {
    /// The TLS material is unusable.
    #[error(transparent)]
    Tls(#[from] TlsError),
    /// The UDP socket could not be bound.
    #[error("cannot bind {addr}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// Why.
        source: std::io::Error,
    },
}

#[derive(Debug)]
enum Slot {
    Connected(Box<Link>),
    Dialing(Vec<Bytes>),
}

/// The connection to one peer and what the transport tracks about it.
#[derive(Debug)]
struct Link {
    conn: Connection,
    /// The address dialled, or `None` when the peer dialled.
    dialled: Option<SocketAddr>,
    /// The transport's use counter when this peer was last sent to or heard from (LRU order;
    /// shared with the readers of every connection to the peer).
    last_used: Arc<AtomicU64>,
    /// `udp_rx.datagrams` of `conn` at the last send.
    rx_at_last_send: u64,
    /// The first send after which nothing has been received on `conn`.
    unanswered_since: Option<tokio::time::Instant>,
    /// A dial to replace `conn` is under way.
    redialing: bool,
    /// The last membership datagrams sent, to send again if `conn` ends by the peer's doing.
    recent: VecDeque<(tokio::time::Instant, Bytes)>,
    /// The connection `conn` replaced, left open because the peer may still send on it (both
    /// sides dialled at once, each uses the connection it saw last); closed with the link.
    previous: Option<Connection>,
}

impl Link {
    fn new(conn: Connection, dialled: Option<SocketAddr>, last_used: Arc<AtomicU64>) -> Self {
        Self {
            rx_at_last_send: conn.stats().udp_rx.datagrams,
            conn,
            dialled,
            last_used,
            unanswered_since: None,
            redialing: false,
            recent: VecDeque::with_capacity(MAX_REPLAY_DATAGRAMS),
            previous: None,
        }
    }

    /// Records a send of `datagram` at `now` (for `addr` if the driver knows one) and says where
    /// to dial a replacement when this connection looks dead or the peer moved.
    fn note_send(
        &mut self,
        now: tokio::time::Instant,
        datagram: &Bytes,
        addr: Option<SocketAddr>,
    ) -> Option<SocketAddr> {
        if datagram.first() == Some(&MEMBERSHIP_CHANNEL) {
            if self.recent.len() == MAX_REPLAY_DATAGRAMS {
                self.recent.pop_front();
            }
            self.recent.push_back((now, datagram.clone()));
        }
        let rx = self.conn.stats().udp_rx.datagrams;
        let stale = if rx == self.rx_at_last_send {
            let since = *self.unanswered_since.get_or_insert(now);
            now.saturating_duration_since(since) >= STALE_AFTER
        } else {
            self.rx_at_last_send = rx;
            self.unanswered_since = Some(now);
            false
        };
        let moved = matches!((self.dialled, addr), (Some(d), Some(a)) if d != a);
        if self.redialing || !(stale || moved) {
            return None;
        }
        self.redialing = true;
        Some(
            addr.or(self.dialled)
                .unwrap_or_else(|| self.conn.remote_address()),
        )
    }

    /// The membership datagrams sent in the last [`REPLAY_WINDOW`], oldest first, taken out:
    /// the new connection sends them without recording them again (only
    /// [`Transport::send`] records), so a datagram goes again at most once however many
    /// connections end in a row, and duplicates stay bounded by [`MAX_REPLAY_DATAGRAMS`].
    fn replay(&mut self, now: tokio::time::Instant) -> Vec<Bytes> {
        self.recent
            .drain(..)
            .filter(|(at, _)| now.saturating_duration_since(*at) < REPLAY_WINDOW)
            .map(|(_, d)| d)
            .collect()
    }

    /// Connections this link holds.
    fn connections(&self) -> usize {
        1 + usize::from(self.previous.is_some())
    }

    fn close(&self, code: u32, reason: &[u8]) {
        self.conn.close(code.into(), reason);
        if let Some(previous) = &self.previous {
            previous.close(code.into(), reason);
        }
    }
}

#[derive(Debug, Default)]
struct Counters {
    connections_opened: AtomicU64,
    dials_failed: AtomicU64,
    handshakes_refused: AtomicU64,
    datagrams_dropped: AtomicU64,
    stream_messages_sent: AtomicU64,
    stream_bytes_sent: AtomicU64,
    stream_messages_received: AtomicU64,
    stream_bytes_received: AtomicU64,
    stream_messages_dropped: AtomicU64,
    streams_refused: AtomicU64,
    connections_evicted: AtomicU64,
    redials: AtomicU64,
    handshakes_resumed: Arc<AtomicU64>,
}

impl Counters {
    fn bump(counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }

    fn add(counter: &AtomicU64, n: usize) {
        counter.fetch_add(n as u64, Ordering::Relaxed);
    }
}

#[derive(Debug)]
struct Shared {
    local_id: NodeId,
    endpoint: Endpoint,
    peers: Mutex<HashMap<NodeId, Slot>>,
    /// The use counter behind the LRU order of connections.
    uses: AtomicU64,
    inbox: mpsc::Sender<Received>,
    counters: Counters,
    options: QuicOptions,
    transport_config: Arc<quinn::TransportConfig>,
    /// What dials use; replaced when the TLS identity is reloaded.
    client_config: Mutex<quinn::ClientConfig>,
    tls_stats: Arc<TlsStats>,
    stream_reads: Arc<Semaphore>,
    stream_sends: Arc<Semaphore>,
    /// Rate limit of the warnings a peer can trigger at will (refused streams, refused dials).
    peer_warnings: LogLimiter,
    /// Rate limit of the lines about refused incoming handshakes (anyone who can reach the
    /// port can cause one per packet).
    refused_handshakes: LogLimit,
}

impl Shared {
    fn peers(&self) -> MutexGuard<'_, HashMap<NodeId, Slot>> {
        // Every critical section leaves the map consistent, so a poisoned lock is still usable.
        self.peers.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn client_config(&self) -> quinn::ClientConfig {
        // Replaced whole under the lock: a poisoned lock still holds a usable configuration.
        self.client_config
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// The next value of the use counter.
    fn tick(&self) -> u64 {
        self.uses.fetch_add(1, Ordering::Relaxed) + 1
    }

    /// Makes `conn` (dialled at `dialled`, or accepted) the connection to `id`, sends `first`
    /// and what waited for the dial on it, closes the least recently used connections past the
    /// bound, and starts its readers.
    fn register(
        self: &Arc<Self>,
        id: NodeId,
        conn: Connection,
        dialled: Option<SocketAddr>,
        first: Vec<Bytes>,
    ) {
        let mut queued = first;
        let mut peers = self.peers();
        let (last_used, previous, retired) = match peers.remove(&id) {
            Some(Slot::Dialing(waiting)) => {
                queued.extend(waiting);
                (Arc::new(AtomicU64::new(0)), None, None)
            }
            Some(Slot::Connected(old)) => {
                let Link {
                    conn: old_conn,
                    last_used,
                    previous,
                    ..
                } = *old;
                let kept = old_conn.close_reason().is_none().then_some(old_conn);
                (last_used, kept, previous)
            }
            None => (Arc::new(AtomicU64::new(0)), None, None),
        };
        last_used.store(self.tick(), Ordering::Relaxed);
        let mut link = Link::new(conn.clone(), dialled, last_used.clone());
        link.previous = previous;
        peers.insert(id, Slot::Connected(Box::new(link)));
        let evicted = evict_past(&mut peers, self.options.max_connections, id);
        drop(peers);
        if let Some(retired) = retired {
            retired.close(CLOSE_REPLACED.into(), b"replaced");
        }
        for (peer, link) in evicted {
            tracing::debug!(%peer, "connection closed: least recently used past the bound");
            Counters::bump(&self.counters.connections_evicted);
            link.close(CLOSE_EVICTED, b"evicted");
        }
        Counters::bump(&self.counters.connections_opened);
        tracing::debug!(peer = %id, remote = %conn.remote_address(), "connection up");
        for message in queued {
            self.send_on(id, &conn, message);
        }
        tokio::spawn(read_datagrams(self.clone(), id, conn.clone(), last_used));
        tokio::spawn(accept_streams(self.clone(), id, conn));
    }

    /// Sends `message` to `to` on `conn`: as a datagram when it fits one, else on a stream.
    fn send_on(self: &Arc<Self>, to: NodeId, conn: &Connection, message: Bytes) {
        if conn
            .max_datagram_size()
            .is_some_and(|max| message.len() <= max)
        {
            match conn.send_datagram(message.clone()) {
                Ok(()) => return,
                // The path's MTU shrank since the check: the stream takes it.
                Err(quinn::SendDatagramError::TooLarge) => {}
                Err(error) => {
                    tracing::debug!(peer = %to, %error, "datagram not sent");
                    Counters::bump(&self.counters.datagrams_dropped);
                    return;
                }
            }
        }
        self.send_stream(to, conn.clone(), message);
    }

    /// Sends `message` on a stream of its own, in a task of its own (one of
    /// [`MAX_STREAM_SENDS`]), and counts it once the peer has acknowledged all of it.
    fn send_stream(self: &Arc<Self>, to: NodeId, conn: Connection, message: Bytes) {
        let limit = self.options.max_stream_message_bytes;
        if message.len() > limit {
            tracing::warn!(peer = %to, bytes = message.len(), limit, "message over the stream size limit not sent");
            Counters::bump(&self.counters.stream_messages_dropped);
            return;
        }
        let Ok(permit) = self.stream_sends.clone().try_acquire_owned() else {
            tracing::debug!(peer = %to, bytes = message.len(), "too many stream messages in flight; dropped");
            Counters::bump(&self.counters.stream_messages_dropped);
            return;
        };
        let shared = self.clone();
        tokio::spawn(async move {
            let _permit = permit;
            let sent = tokio::time::timeout(STREAM_TIMEOUT, async {
                let mut stream = conn.open_uni().await?;
                stream.write_all(&message).await?;
                stream.finish()?;
                Ok::<_, StreamSendError>(stream.stopped().await?)
            })
            .await;
            let counters = &shared.counters;
            let refused = match sent {
                Ok(Ok(None)) => {
                    Counters::bump(&counters.stream_messages_sent);
                    Counters::add(&counters.stream_bytes_sent, message.len());
                    return;
                }
                Ok(
                    Ok(Some(code)) | Err(StreamSendError::Write(quinn::WriteError::Stopped(code))),
                ) => Some(code),
                Ok(Err(error)) => {
                    tracing::debug!(peer = %to, %error, "stream message not sent");
                    None
                }
                Err(_) => {
                    tracing::debug!(peer = %to, "stream message not acknowledged within {STREAM_TIMEOUT:?}");
                    None
                }
            };
            Counters::bump(&counters.stream_messages_dropped);
            if let Some(code) = refused
                && let Some(suppressed) = shared.peer_warnings.admit()
            {
                tracing::warn!(peer = %to, bytes = message.len(), %code, suppressed, "the peer refused a stream message (code 1: over its size limit, 2: busy, 3: too slow)");
            }
        });
    }
}

#[derive(Debug, Error)]
enum StreamSendError {
    #[error(transparent)]
    Open(#[from] quinn::ConnectionError),
    #[error(transparent)]
    Write(#[from] quinn::WriteError),
    #[error(transparent)]
    Finish(#[from] quinn::ClosedStream),
    #[error(transparent)]
    Stopped(#[from] quinn::StoppedError),
}

/// Accepts the peer's streams, one message each, while the connection lasts.
async fn accept_streams(shared: Arc<Shared>, id: NodeId, conn: Connection) {
    while let Ok(mut recv) = conn.accept_uni().await {
        let Ok(permit) = shared.stream_reads.clone().try_acquire_owned() else {
            // Refusing only stops this stream; the stream limit per connection and this one
            // bound what a peer can make the node buffer.
            let _ = recv.stop(VarInt::from_u32(STREAM_BUSY));
            Counters::bump(&shared.counters.streams_refused);
            tracing::debug!(peer = %id, "too many stream messages being read; one refused");
            continue;
        };
        tokio::spawn(read_stream(shared.clone(), id, recv, permit));
    }
}

/// Reads one stream message whole (within the size limit and [`STREAM_TIMEOUT`]) and hands it
/// to the driver.
async fn read_stream(
    shared: Arc<Shared>,
    id: NodeId,
    mut recv: RecvStream,
    _permit: OwnedSemaphorePermit,
) {
    let limit = shared.options.max_stream_message_bytes;
    let read = tokio::time::timeout(STREAM_TIMEOUT, recv.read_to_end(limit)).await;
    let refusal = match read {
        Ok(Ok(message)) => {
            let counters = &shared.counters;
            Counters::bump(&counters.stream_messages_received);
            Counters::add(&counters.stream_bytes_received, message.len());
            let received = Received {
                from: id,
                datagram: Bytes::from(message),
            };
            // Waits for room: a stream message is not dropped for a busy driver, and the read
            // permit held meanwhile bounds how many wait.
            let _ = shared.inbox.send(received).await;
            return;
        }
        Ok(Err(quinn::ReadToEndError::TooLong)) => {
            let _ = recv.stop(VarInt::from_u32(STREAM_TOO_LARGE));
            format!("over the limit of {limit} bytes")
        }
        Ok(Err(quinn::ReadToEndError::Read(error))) => {
            // A reset by the sender or a closed connection: nothing to tell the peer.
            Counters::bump(&shared.counters.streams_refused);
            tracing::debug!(peer = %id, %error, "stream message not received");
            return;
        }
        Err(_) => {
            let _ = recv.stop(VarInt::from_u32(STREAM_TOO_SLOW));
            format!("not received whole within {STREAM_TIMEOUT:?}")
        }
    };
    Counters::bump(&shared.counters.streams_refused);
    if let Some(suppressed) = shared.peer_warnings.admit() {
        tracing::warn!(peer = %id, suppressed, "stream message refused: {refusal}");
    }
}

/// The peer's node id, from the certificate rustls verified during the handshake.
fn peer_id(conn: &Connection) -> Result<NodeId, IdentityError> {
    let certs = conn
        .peer_identity()
        .and_then(|any| any.downcast::<Vec<CertificateDer<'static>>>().ok())
        .ok_or(IdentityError::NoNodeName)?;
    let leaf = certs.first().ok_or(IdentityError::NoNodeName)?;
    node_id_from_cert(leaf)
}

/// Closes the least recently used connections (never `keep`'s) until at most `max` are open.
fn evict_past(
    peers: &mut HashMap<NodeId, Slot>,
    max: usize,
    keep: NodeId,
) -> Vec<(NodeId, Box<Link>)> {
    let mut open: usize = peers
        .values()
        .map(|slot| match slot {
            Slot::Connected(link) => link.connections(),
            Slot::Dialing(_) => 0,
        })
        .sum();
    let mut evicted = Vec::new();
    while open > max {
        let oldest = peers
            .iter()
            .filter_map(|(id, slot)| match slot {
                Slot::Connected(link) if *id != keep => {
                    Some((link.last_used.load(Ordering::Relaxed), *id))
                }
                _ => None,
            })
            .min();
        let Some((_, id)) = oldest else { break };
        if let Some(Slot::Connected(link)) = peers.remove(&id) {
            open -= link.connections();
            evicted.push((id, link));
        }
    }
    evicted
}

async fn read_datagrams(
    shared: Arc<Shared>,
    id: NodeId,
    conn: Connection,
    last_used: Arc<AtomicU64>,
) {
    let error = loop {
        match conn.read_datagram().await {
            Ok(datagram) => {
                last_used.store(shared.tick(), Ordering::Relaxed);
                match shared.inbox.try_send(Received { from: id, datagram }) {
                    Ok(()) => {}
                    Err(mpsc::error::TrySendError::Full(_)) => {
                        Counters::bump(&shared.counters.datagrams_dropped);
                    }
                    Err(mpsc::error::TrySendError::Closed(_)) => return,
                }
            }
            Err(error) => {
                tracing::debug!(peer = %id, %error, "connection closed");
                break error;
            }
        }
    };
    let mut peers = shared.peers();
    let Some(Slot::Connected(link)) = peers.get_mut(&id) else {
        return;
    };
    if link
        .previous
        .as_ref()
        .is_some_and(|p| p.stable_id() == conn.stable_id())
    {
        link.previous = None;
        return;
    }
    if link.conn.stable_id() != conn.stable_id() {
        return;
    }
    // The connection ended without this node closing it: a stateless reset (the peer
    // restarted and has no state for it), the peer's own close (a stopping process closes its
    // endpoint), or the idle timeout. Whatever was sent on it lately may be lost, and not only
    // after a reset: `send_datagram` returns `Ok` once quinn has queued a datagram, and a
    // datagram queued on a connection whose peer's CONNECTION_CLOSE had arrived but was not yet
    // processed (a busy host) is never sent (quinn's driver handles incoming packets before it
    // transmits), and one that went out before the close was read reached a restarted process
    // that cannot decrypt it. Before, only a reset replayed, so a datagram sent
    // in that window to a peer that stopped and came back was lost without a trace, and no
    // redial followed until the next send. Dial again at once with those membership
    // datagrams, so a probe of a restarted peer is answered rather than timed out. A
    // connection this node closed itself (evicted, replaced, shut down) is not redialled.
    let replay = match error {
        quinn::ConnectionError::LocallyClosed => Vec::new(),
        _ => link.replay(tokio::time::Instant::now()),
    };
    let addr = link.dialled.unwrap_or_else(|| link.conn.remote_address());
    if replay.is_empty() {
        peers.remove(&id);
        return;
    }
    peers.insert(id, Slot::Dialing(Vec::new()));
    drop(peers);
    Counters::bump(&shared.counters.redials);
    tracing::debug!(peer = %id, %addr, datagrams = replay.len(), %error, "connection ended with datagrams possibly unsent; dialling again");
    tokio::spawn(dial(shared, id, addr, replay));
}

#[derive(Debug, Error)]
enum DialError {
    #[error(transparent)]
    Connect(#[from] quinn::ConnectError),
    #[error(transparent)]
    Connection(#[from] quinn::ConnectionError),
    #[error(transparent)]
    Identity(#[from] IdentityError),
    #[error("certificate names {actual}, dialled {expected}")]
    WrongPeer { expected: NodeId, actual: NodeId },
    #[error("no handshake within {0:?}")]
    TimedOut(Duration),
}

/// Dials `to` at `addr` and sends `first` then whatever waits in its slot once connected; runs in
/// a task of its own so that no send waits for a handshake.
async fn dial(shared: Arc<Shared>, to: NodeId, addr: SocketAddr, first: Vec<Bytes>) {
    let dial_timeout = shared.options.dial_timeout;
    let attempt = async {
        let conn = shared
            .endpoint
            .connect_with(shared.client_config(), addr, &node_dns_name(to))?
            .await?;
        // rustls already checked the server name; this guards the parse, not the policy.
        let actual = peer_id(&conn)?;
        if actual != to {
            conn.close(1u32.into(), b"wrong peer");
            return Err(DialError::WrongPeer {
                expected: to,
                actual,
            });
        }
        Ok(conn)
    };
    let attempt = async {
        tokio::time::timeout(dial_timeout, attempt)
            .await
            .unwrap_or(Err(DialError::TimedOut(dial_timeout)))
    };
    match attempt.await {
        Ok(conn) => shared.register(to, conn, Some(addr), first),
        Err(error) => {
            if let DialError::Connection(e) = &error {
                let classified = Classified::of_quic(e);
                if classified.certificate_refused {
                    // The peer presented a certificate this node refuses.
                    shared.tls_stats.record(Listener::Mesh, addr, classified, e);
                } else if let Some(reason) = peer_refused_our_certificate(e)
                    && let Some(suppressed) = shared.peer_warnings.admit()
                {
                    tracing::warn!(peer = %to, %addr, suppressed, "the peer refused this node's TLS certificate: {reason}");
                }
            }
            tracing::debug!(peer = %to, %addr, %error, "dial failed");
            Counters::bump(&shared.counters.dials_failed);
            let mut peers = shared.peers();
            match peers.get_mut(&to) {
                Some(Slot::Dialing(queued)) => {
                    let lost = (queued.len() + first.len()) as u64;
                    peers.remove(&to);
                    shared
                        .counters
                        .datagrams_dropped
                        .fetch_add(lost, Ordering::Relaxed);
                }
                // A replacement dial failed: the connection it was to replace stays, and the
                // next send that finds it still silent dials again.
                Some(Slot::Connected(link)) => link.redialing = false,
                None => {}
            }
        }
    }
}

async fn accept(shared: Arc<Shared>) {
    while let Some(incoming) = shared.endpoint.accept().await {
        let shared = shared.clone();
        tokio::spawn(async move {
            let remote = incoming.remote_address();
            let conn = match incoming.await {
                Ok(conn) => conn,
                Err(error) => {
                    let classified = shared.tls_stats.record_quic(Listener::Mesh, remote, &error);
                    // Certificate refusals are logged (within their own limit) by `TlsStats`.
                    if !classified.certificate_refused {
                        log_refused_handshake(&shared.refused_handshakes, remote, &error);
                    }
                    Counters::bump(&shared.counters.handshakes_refused);
                    return;
                }
            };
            match peer_id(&conn) {
                Ok(id) if id != shared.local_id => shared.register(id, conn, None, Vec::new()),
                Ok(_) | Err(_) => {
                    log_refused_handshake(
                        &shared.refused_handshakes,
                        remote,
                        &"no usable node identity in the certificate",
                    );
                    shared.tls_stats.record_other(Listener::Mesh);
                    Counters::bump(&shared.counters.handshakes_refused);
                    conn.close(1u32.into(), b"bad identity");
                }
            }
        });
    }
}

/// Lines about refused incoming handshakes (other than certificate refusals, which
/// [`TlsStats`] limits) logged per [`REFUSED_HANDSHAKE_LOG_WINDOW`]; the rest are only counted.
pub const REFUSED_HANDSHAKE_LOG_BURST: u32 = 10;
/// The window of [`REFUSED_HANDSHAKE_LOG_BURST`].
pub const REFUSED_HANDSHAKE_LOG_WINDOW: Duration = Duration::from_secs(60);

/// Logs an incoming handshake refused for another reason than the peer's certificate, at
/// `info`, at most [`REFUSED_HANDSHAKE_LOG_BURST`] per window: anyone who reaches the port can
/// cause one per packet, and each is counted anyway
/// (`mesh_transport_handshake_failures_total{listener="mesh"}`).
fn log_refused_handshake(limit: &LogLimit, remote: SocketAddr, why: &dyn std::fmt::Display) {
    if let Some(suppressed) = limit.allow() {
        tracing::info!(%remote, suppressed, "incoming handshake refused: {why}");
    }
}

/// The quinn configurations of both sides for `identity`, with TLS session caches sized for
/// `max_connections`; resumptions this node accepts are counted into `resumed`. A reopened
/// connection can resume only if its session outlived the connection, so the caches hold
/// [`SESSIONS_PER_CONNECTION`] times more peers than the connection bound: a node cycling
/// through that many peers (a mesh larger than the bound) still resumes. Each entry holds a
/// ticket and the peer's certificate chain, about 1-2 KiB: at most a few MiB at the default.
fn quinn_configs(
    identity: &TlsIdentity,
    transport: &Arc<quinn::TransportConfig>,
    max_connections: usize,
    resumed: &Arc<AtomicU64>,
) -> Result<(quinn::ServerConfig, quinn::ClientConfig), TlsError> {
    let sessions = max_connections.saturating_mul(SESSIONS_PER_CONNECTION);
    let mut server_tls = identity.server_config()?;
    // One ticket per handshake, not rustls's two: a reopen takes one, and its own handshake
    // hands out the next; a second would only cost bytes on every handshake and a cache entry.
    server_tls.send_tls13_tickets = 1;
    // One ticket per handshake, an entry until it is used.
    server_tls.session_storage = Arc::new(CountingSessions {
        inner: rustls::server::ServerSessionMemoryCache::new(sessions),
        resumed: resumed.clone(),
    });
    let server_crypto = QuicServerConfig::try_from(server_tls)?;
    let mut server = quinn::ServerConfig::with_crypto(Arc::new(server_crypto));
    server.transport_config(transport.clone());
    let mut client_tls = identity.client_config()?;
    // rustls's client cache counts tickets, up to 8 per server: `8 * sessions` remembers
    // `sessions` peers (its default, 256, only 32).
    client_tls.resumption =
        rustls::client::Resumption::in_memory_sessions(sessions.saturating_mul(8));
    let client_crypto = QuicClientConfig::try_from(client_tls)?;
    let mut client = quinn::ClientConfig::new(Arc::new(client_crypto));
    client.transport_config(transport.clone());
    Ok((server, client))
}

/// rustls's server session cache, counting the sessions it hands back for resumption (TLS 1.3
/// stateful tickets are taken once, by a resumed handshake).
#[derive(Debug)]
struct CountingSessions {
    inner: Arc<rustls::server::ServerSessionMemoryCache>,
    resumed: Arc<AtomicU64>,
}

impl rustls::server::StoresServerSessions for CountingSessions {
    fn put(&self, key: Vec<u8>, value: Vec<u8>) -> bool {
        self.inner.put(key, value)
    }

    fn get(&self, key: &[u8]) -> Option<Vec<u8>> {
        self.inner.get(key)
    }

    fn take(&self, key: &[u8]) -> Option<Vec<u8>> {
        let value = self.inner.take(key);
        if value.is_some() {
            Counters::bump(&self.resumed);
        }
        value
    }

    fn can_cache(&self) -> bool {
        self.inner.can_cache()
    }
}

/// The endpoint configuration of `identity`'s node: its stateless reset key and the key its
/// connection ids are checked with are derived from its private key, so every process of the
/// node (a restart included) accepts the connection ids of the previous one as its own and
/// answers them with the reset token the peer holds; a peer still holding a connection to the
/// previous process learns at its next packet that it is gone. Both keys stay secret: each is an
/// HMAC of a fixed label under the private key, which they do not reveal.
fn endpoint_config(identity: &TlsIdentity) -> quinn::EndpointConfig {
    let derive = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, identity.private_key_der());
    let reset = ring::hmac::sign(&derive, b"meshkit quic stateless reset key v1");
    let cid = ring::hmac::sign(&derive, b"meshkit quic connection id key v1");
    let cid_key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, cid.as_ref());
    let mut config = quinn::EndpointConfig::new(Arc::new(ring::hmac::Key::new(
        ring::hmac::HMAC_SHA256,
        reset.as_ref(),
    )));
    config.cid_generator(move || {
        Box::new(ShortConnectionIds::new(cid_key.clone())) as Box<dyn quinn::ConnectionIdGenerator>
    });
    config
}

/// Bytes of a connection id this node issues: [`CID_NONCE_BYTES`] random, then
/// [`CID_TAG_BYTES`] of an HMAC of them under the node's connection-id key. Every 1-RTT packet
/// carries the receiver's connection id, so each byte here is a byte on every packet either
/// way; quinn's own keyed generator takes 8. Why 4 is enough (docs/architecture.md, "Bytes per
/// packet"): a connection id only routes packets to a connection (the AEAD authenticates them,
/// not the id); 65,536 nonces leave room for the at most 8 ids quinn issues per connection
/// times [`DEFAULT_MAX_CONNECTIONS`] (quinn draws again on a collision); the tag still lets a
/// restarted process tell its previous process's ids (answered with a stateless reset) from
/// stray packets (dropped) but for 1 in 65,536, and resets are rate-limited by quinn anyway.
/// Not zero: with zero-length ids quinn routes by address, sends no stateless reset, loses a
/// connection whose peer's address changes (NAT rebinding), and cannot tell apart two
/// connections dialled to the same peer address (the replacement dial below keeps the old one
/// open).
pub const CID_BYTES: usize = CID_NONCE_BYTES + CID_TAG_BYTES;
/// The random part of a connection id.
pub const CID_NONCE_BYTES: usize = 2;
/// The keyed part of a connection id.
pub const CID_TAG_BYTES: usize = 2;

// Connection ids this node issues, at most: quinn issues up to 8 per connection.
const _: () = assert!(
    DEFAULT_MAX_CONNECTIONS * 8 * 4 <= 1 << (8 * CID_NONCE_BYTES),
    "the nonce space is at least 4 times the ids issued at the connection bound"
);

/// The node's connection-id generator: [`CID_BYTES`]-byte ids, a random nonce and a keyed tag.
struct ShortConnectionIds {
    key: ring::hmac::Key,
    random: ring::rand::SystemRandom,
}

impl ShortConnectionIds {
    fn new(key: ring::hmac::Key) -> Self {
        Self {
            key,
            random: ring::rand::SystemRandom::new(),
        }
    }

    fn tag(&self, nonce: &[u8]) -> [u8; CID_TAG_BYTES] {
        let mut tag = [0; CID_TAG_BYTES];
        tag.copy_from_slice(&ring::hmac::sign(&self.key, nonce).as_ref()[..CID_TAG_BYTES]);
        tag
    }
}

impl quinn::ConnectionIdGenerator for ShortConnectionIds {
    fn generate_cid(&mut self) -> quinn::ConnectionId {
        let mut id = [0; CID_BYTES];
        // The system's generator does not fail on Linux once it has started; a zero nonce if it
        // ever did is still a valid id (quinn draws again on a collision).
        let _ = ring::rand::SecureRandom::fill(&self.random, &mut id[..CID_NONCE_BYTES]);
        let tag = self.tag(&id[..CID_NONCE_BYTES]);
        id[CID_NONCE_BYTES..].copy_from_slice(&tag);
        quinn::ConnectionId::new(&id)
    }

    fn validate(&self, cid: &quinn::ConnectionId) -> Result<(), quinn_proto::InvalidCid> {
        if cid.len() != CID_BYTES {
            return Err(quinn_proto::InvalidCid);
        }
        let (nonce, tag) = cid.split_at(CID_NONCE_BYTES);
        // A plain comparison: what a timing leak could reveal is a tag that makes a stray
        // packet draw a (rate-limited) stateless reset, which anyone can already get 1 time in
        // 65,536 by chance.
        if self.tag(nonce)[..] == tag[..] {
            Ok(())
        } else {
            Err(quinn_proto::InvalidCid)
        }
    }

    fn cid_len(&self) -> usize {
        CID_BYTES
    }

    fn cid_lifetime(&self) -> Option<Duration> {
        None
    }
}

/// Applies each identity `source` publishes to the endpoint (new handshakes) and to later dials.
async fn follow_tls(shared: Arc<Shared>, mut source: TlsSource) {
    while let Some(identity) = source.changed().await {
        match quinn_configs(
            &identity,
            &shared.transport_config,
            shared.options.max_connections,
            &shared.counters.handshakes_resumed,
        ) {
            Ok((server, client)) => {
                shared.endpoint.set_server_config(Some(server));
                *shared
                    .client_config
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner) = client;
                tracing::debug!("mesh transport: new handshakes use the reloaded certificate");
            }
            // The reloader built these configurations already; this cannot happen in practice.
            Err(error) => tracing::warn!(
                %error,
                "mesh transport: reloaded TLS material unusable; keeping the previous"
            ),
        }
    }
}

/// A node's QUIC transport. Dropping it closes the endpoint and every connection.
#[derive(Debug)]
pub struct QuicTransport {
    shared: Arc<Shared>,
    inbox: mpsc::Receiver<Received>,
    accept_task: JoinHandle<()>,
    tls_task: JoinHandle<()>,
}

impl QuicTransport {
    /// Binds `listen` (UDP) and starts accepting peers authenticated by `identity`'s CA, with
    /// default options and certificates that never change. Must be called inside a tokio
    /// runtime.
    pub fn bind(identity: &TlsIdentity, listen: SocketAddr) -> Result<Self, QuicError> {
        Self::bind_with(
            TlsSource::fixed(identity.clone()),
            listen,
            QuicOptions::default(),
            Arc::default(),
        )
    }

    /// Binds `listen` (UDP) with the identity `tls` gives now, follows its later changes, and
    /// counts TLS events into `tls_stats` (shared with the node's other listeners). Must be
    /// called inside a tokio runtime.
    pub fn bind_with(
        tls: TlsSource,
        listen: SocketAddr,
        options: QuicOptions,
        tls_stats: Arc<TlsStats>,
    ) -> Result<Self, QuicError> {
        let mut transport = quinn::TransportConfig::default();
        transport
            .max_idle_timeout(Some(
                quinn::IdleTimeout::try_from(options.idle_timeout)
                    .expect("the idle timeout is clamped far below QUIC's varint bound"),
            ))
            // No keep-alive: see the module doc.
            .keep_alive_interval(None)
            // No path-MTU discovery: every datagram the core sends fits QUIC's minimum
            // 1,200-byte MTU (`meshkit::wire::MAX_DATAGRAM_BYTES`), and probing costs several
            // padded packets of up to 1,452 bytes per new connection, both ways, and again every
            // 10 minutes on each open one: per peer, not per message (see the module doc). Only
            // stream messages (a Raft snapshot) would have used a larger MTU.
            .mtu_discovery_config(None)
            // Datagrams, and one unidirectional stream per message too large for one.
            .max_concurrent_bidi_streams(0u32.into())
            .max_concurrent_uni_streams(MAX_INCOMING_STREAMS_PER_CONNECTION.into());
        let transport = Arc::new(transport);
        let identity = tls.current();
        let counters = Counters::default();
        let (server, client) = quinn_configs(
            &identity,
            &transport,
            options.max_connections,
            &counters.handshakes_resumed,
        )?;
        let bind_error = |source| QuicError::Bind {
            addr: listen,
            source,
        };
        let socket = std::net::UdpSocket::bind(listen).map_err(bind_error)?;
        let runtime = quinn::default_runtime()
            .ok_or_else(|| std::io::Error::other("no async runtime found"))
            .map_err(bind_error)?;
        let endpoint = Endpoint::new(endpoint_config(&identity), Some(server), socket, runtime)
            .map_err(bind_error)?;
        let (inbox_tx, inbox) = mpsc::channel(INBOX_DATAGRAMS);
        let shared = Arc::new(Shared {
            local_id: identity.id(),
            endpoint,
            peers: Mutex::new(HashMap::new()),
            uses: AtomicU64::new(0),
            inbox: inbox_tx,
            counters,
            options,
            transport_config: transport,
            client_config: Mutex::new(client),
            tls_stats,
            stream_reads: Arc::new(Semaphore::new(MAX_STREAM_READS)),
            stream_sends: Arc::new(Semaphore::new(MAX_STREAM_SENDS)),
            peer_warnings: LogLimiter::default(),
            refused_handshakes: LogLimit::new(
                REFUSED_HANDSHAKE_LOG_BURST,
                REFUSED_HANDSHAKE_LOG_WINDOW,
            ),
        });
        let accept_task = tokio::spawn(accept(shared.clone()));
        let tls_task = tokio::spawn(follow_tls(shared.clone(), tls));
        Ok(Self {
            shared,
            inbox,
            accept_task,
            tls_task,
        })
    }

    /// The UDP address actually bound (the port is chosen by the OS when `listen` had port 0).
    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.shared.endpoint.local_addr()
    }

    /// Peers being dialled now (no connection yet).
    pub fn dialing_peers(&self) -> Vec<NodeId> {
        let mut ids: Vec<NodeId> = self
            .shared
            .peers()
            .iter()
            .filter(|(_, slot)| matches!(slot, Slot::Dialing(_)))
            .map(|(id, _)| *id)
            .collect();
        ids.sort();
        ids
    }

    /// Open connections now (to every peer; a peer that dialled while this node dialled it may
    /// hold two for a while).
    pub fn open_connections(&self) -> usize {
        self.shared
            .peers()
            .values()
            .map(|slot| match slot {
                Slot::Connected(link) => link.connections(),
                Slot::Dialing(_) => 0,
            })
            .sum()
    }

    /// Peers with an open connection now.
    pub fn connected_peers(&self) -> Vec<NodeId> {
        let mut ids: Vec<NodeId> = self
            .shared
            .peers()
            .iter()
            .filter(|(_, slot)| matches!(slot, Slot::Connected(_)))
            .map(|(id, _)| *id)
            .collect();
        ids.sort();
        ids
    }
}

impl Transport for QuicTransport {
    fn send(&mut self, to: NodeId, addr: Option<SocketAddr>, datagram: Bytes) {
        let counters = &self.shared.counters;
        if to == self.shared.local_id {
            Counters::bump(&counters.datagrams_dropped);
            return;
        }
        let now = tokio::time::Instant::now();
        let mut peers = self.shared.peers();
        match peers.get_mut(&to) {
            Some(Slot::Connected(link)) if link.conn.close_reason().is_none() => {
                link.last_used.store(self.shared.tick(), Ordering::Relaxed);
                let redial = link.note_send(now, &datagram, addr);
                let conn = link.conn.clone();
                drop(peers);
                if let Some(addr) = redial {
                    // Sent on the old connection too: it may only be slow.
                    Counters::bump(&counters.redials);
                    tracing::debug!(peer = %to, %addr, "connection silent or peer moved; dialling a replacement");
                    tokio::spawn(dial(self.shared.clone(), to, addr, vec![datagram.clone()]));
                }
                self.shared.send_on(to, &conn, datagram);
                return;
            }
            Some(Slot::Dialing(queued)) => {
                if queued.len() < MAX_QUEUED_PER_DIAL {
                    queued.push(datagram);
                } else {
                    Counters::bump(&counters.datagrams_dropped);
                }
                return;
            }
            Some(Slot::Connected(_)) | None => {}
        }
        let Some(addr) = addr else {
            peers.remove(&to);
            Counters::bump(&counters.datagrams_dropped);
            return;
        };
        peers.insert(to, Slot::Dialing(vec![datagram]));
        drop(peers);
        tokio::spawn(dial(self.shared.clone(), to, addr, Vec::new()));
    }

    fn needs_addresses(&self) -> bool {
        true
    }

    fn poll_recv(&mut self, cx: &mut Context<'_>) -> Poll<Option<Received>> {
        self.inbox.poll_recv(cx)
    }

    fn stats(&self) -> TransportStats {
        let c = &self.shared.counters;
        TransportStats {
            connections_opened: c.connections_opened.load(Ordering::Relaxed),
            dials_failed: c.dials_failed.load(Ordering::Relaxed),
            handshakes_refused: c.handshakes_refused.load(Ordering::Relaxed),
            datagrams_dropped: c.datagrams_dropped.load(Ordering::Relaxed),
            stream_messages_sent: c.stream_messages_sent.load(Ordering::Relaxed),
            stream_bytes_sent: c.stream_bytes_sent.load(Ordering::Relaxed),
            stream_messages_received: c.stream_messages_received.load(Ordering::Relaxed),
            stream_bytes_received: c.stream_bytes_received.load(Ordering::Relaxed),
            stream_messages_dropped: c.stream_messages_dropped.load(Ordering::Relaxed),
            streams_refused: c.streams_refused.load(Ordering::Relaxed),
            connections_evicted: c.connections_evicted.load(Ordering::Relaxed),
            redials: c.redials.load(Ordering::Relaxed),
            handshakes_resumed: c.handshakes_resumed.load(Ordering::Relaxed),
            tls: self.shared.tls_stats.counters(),
        }
    }
}

impl Drop for QuicTransport {
    fn drop(&mut self) {
        self.shared.endpoint.close(0u32.into(), b"shutdown");
        self.accept_task.abort();
        self.tls_task.abort();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::log_limit::count_events;

    /// A temporary directory with development certificates for nodes 1..=`nodes`, removed on
    /// drop.
    struct CertDir(std::path::PathBuf);

    impl CertDir {
        fn new(name: &str, nodes: u64) -> Self {
            let dir =
                std::env::temp_dir().join(format!("meshkit-quic-{name}-{}", std::process::id()));
            let _ = std::fs::remove_dir_all(&dir);
            std::fs::create_dir_all(&dir).expect("make a temporary directory");
            crate::certs::write_dev_certs(&dir, nodes).expect("make certificates");
            Self(dir)
        }

        fn transport(&self, id: u64, options: QuicOptions) -> QuicTransport {
            let identity = TlsIdentity::load(
                &self.0.join(format!("node-{id}.pem")),
                &self.0.join(format!("node-{id}.key")),
                &self.0.join("ca.pem"),
            )
            .expect("load the node's TLS files");
            QuicTransport::bind_with(
                TlsSource::fixed(identity),
                SocketAddr::from(([127, 0, 0, 1], 0)),
                options,
                Arc::default(),
            )
            .expect("bind on loopback")
        }
    }

    impl Drop for CertDir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    /// What one side of a connection has sent so far.
    #[derive(Clone, Copy, Debug, PartialEq, Eq)]
    struct Sent {
        datagrams: u64,
        bytes: u64,
        mtu_probes: u64,
    }

    /// What `t`'s connection to `peer` has sent (`None` while there is none).
    fn sent(t: &QuicTransport, peer: u64) -> Option<Sent> {
        let peers = t.shared.peers();
        let Some(Slot::Connected(link)) = peers.get(&NodeId::new(peer)) else {
            return None;
        };
        let stats = link.conn.stats();
        Some(Sent {
            datagrams: stats.udp_tx.datagrams,
            bytes: stats.udp_tx.bytes,
            mtu_probes: stats.path.sent_plpmtud_probes,
        })
    }

    /// The next message `t` receives, within 10 s.
    async fn next(t: &mut QuicTransport) -> Received {
        tokio::time::timeout(
            Duration::from_secs(10),
            std::future::poll_fn(|cx| t.poll_recv(cx)),
        )
        .await
        .expect("a message within 10 s")
        .expect("the transport is open")
    }

    /// The next message `t` receives from `from`; others are skipped (at most 8): a peer whose
    /// connection `t` evicted sends its last datagrams again on a new one.
    async fn next_from(t: &mut QuicTransport, from: u64) {
        for _ in 0..8 {
            if next(t).await.from == NodeId::new(from) {
                return;
            }
        }
        panic!("nothing from node {from}");
    }

    /// `a` pings `b` (a first meeting: `a` dials) and `b` answers, like one SWIM probe; then
    /// waits until neither side sends more (their acknowledgements included), at most 5 s.
    /// Returns what each side sent.
    async fn probe_and_settle(
        a: (&mut QuicTransport, u64),
        b: (&mut QuicTransport, u64),
    ) -> (Sent, Sent) {
        let ((a, a_id), (b, b_id)) = (a, b);
        let ping = Bytes::from(vec![MEMBERSHIP_CHANNEL; 60]);
        a.send(NodeId::new(b_id), Some(b.local_addr().unwrap()), ping);
        next_from(b, a_id).await;
        b.send(
            NodeId::new(a_id),
            Some(a.local_addr().unwrap()),
            Bytes::from(vec![MEMBERSHIP_CHANNEL; 40]),
        );
        next_from(a, b_id).await;
        let mut last = None;
        for _ in 0..50 {
            tokio::time::sleep(Duration::from_millis(100)).await;
            let now = Some((sent(a, b_id), sent(b, a_id)));
            if now == last {
                break;
            }
            last = now;
        }
        let (Some(x), Some(y)) = last.expect("sampled") else {
            panic!("a connection closed during the probe");
        };
        (x, y)
    }

    /// #12: a first meeting of two nodes costs the handshake and the messages, nothing else: no
    /// path-MTU probes (several padded packets per connection, both ways, then again every 10
    /// minutes on every open connection), one session ticket; and a reopen resumes the TLS
    /// session (no certificates). The byte counts (UDP payloads, both sides) are the figures
    /// docs/architecture.md quotes; run with `--nocapture` to see them.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_meeting_costs_the_handshake_and_the_messages_only() {
        let dir = CertDir::new("meeting", 3);
        let mut a = dir.transport(1, QuicOptions::default().with_max_connections(1));
        let mut b = dir.transport(2, QuicOptions::default());
        let mut c = dir.transport(3, QuicOptions::default());
        let (dialer, listener) = probe_and_settle((&mut a, 1), (&mut b, 2)).await;
        eprintln!("first meeting: dialler sent {dialer:?}, listener sent {listener:?}");
        assert_eq!(
            (dialer.mtu_probes, listener.mtu_probes),
            (0, 0),
            "no path-MTU probes"
        );
        // The RFCs' floor: the client's two flights that carry Initial packets and the
        // server's first flight are padded to 1,200 bytes each (RFC 9000 §14.1); certificates,
        // tickets and connection ids fit in about 1.6 KB more for the pair.
        let total = dialer.bytes + listener.bytes;
        assert!(total <= 5_200, "a first meeting cost {total} bytes");
        // A probe on the open connection: the ping, the answer (carrying the ping's ack) and
        // the ack of the answer, unless an ack-only packet went out before the answer.
        let (d2, l2) = probe_and_settle((&mut a, 1), (&mut b, 2)).await;
        eprintln!(
            "probe on an open connection: dialler sent {} datagrams / {} bytes, listener {} / {}",
            d2.datagrams - dialer.datagrams,
            d2.bytes - dialer.bytes,
            l2.datagrams - listener.datagrams,
            l2.bytes - listener.bytes
        );
        // Node 3 takes node 1's only connection; the next probe of node 2 reopens it, resumed.
        probe_and_settle((&mut a, 1), (&mut c, 3)).await;
        let (dialer, listener) = probe_and_settle((&mut a, 1), (&mut b, 2)).await;
        eprintln!("reopen: dialler sent {dialer:?}, listener sent {listener:?}");
        assert_eq!(b.stats().handshakes_resumed, 1, "the reopen resumed");
        assert_eq!((dialer.mtu_probes, listener.mtu_probes), (0, 0));
    }

    /// The node's connection ids are [`CID_BYTES`] long and carry a tag only its key makes: its
    /// own (and a restarted process's, same key) validate, a changed byte or another node's
    /// key does not (but for the 1 in 65,536 chance a 2-byte tag allows).
    #[test]
    fn connection_ids_are_short_and_keyed() {
        use quinn::ConnectionIdGenerator as _;
        let key = |label: &[u8]| ring::hmac::Key::new(ring::hmac::HMAC_SHA256, label);
        let mut ours = ShortConnectionIds::new(key(b"node 1"));
        let restarted = ShortConnectionIds::new(key(b"node 1"));
        let other = ShortConnectionIds::new(key(b"node 2"));
        assert_eq!(ours.cid_len(), 4);
        let (mut foreign, mut changed) = (0, 0);
        for _ in 0..1_000 {
            let cid = ours.generate_cid();
            assert_eq!(cid.len(), CID_BYTES);
            assert!(ours.validate(&cid).is_ok());
            assert!(restarted.validate(&cid).is_ok(), "a restart keeps the key");
            foreign += usize::from(other.validate(&cid).is_ok());
            let mut bytes = cid.to_vec();
            bytes[CID_BYTES - 1] ^= 1;
            changed += usize::from(ours.validate(&quinn::ConnectionId::new(&bytes)).is_ok());
            assert!(
                ours.validate(&quinn::ConnectionId::new(&bytes[..3]))
                    .is_err()
            );
        }
        assert!(
            foreign <= 2,
            "{foreign} of 1,000 ids validate under another key"
        );
        assert_eq!(changed, 0, "an id with a changed tag validated");
    }

    /// A peer that fails its handshake in a loop (docs/security.md: one `info` line per
    /// refused handshake) gets a bounded number of lines per window.
    #[test]
    fn refused_handshake_lines_are_rate_limited() {
        let limit = LogLimit::new(REFUSED_HANDSHAKE_LOG_BURST, REFUSED_HANDSHAKE_LOG_WINDOW);
        let remote = SocketAddr::from(([127, 0, 0, 1], 9));
        let lines = count_events(|| {
            for _ in 0..1_000 {
                log_refused_handshake(&limit, remote, &"a test refusal");
            }
        });
        assert_eq!(lines, REFUSED_HANDSHAKE_LOG_BURST as usize);
        assert_eq!(
            limit.suppressed(),
            1_000 - u64::from(REFUSED_HANDSHAKE_LOG_BURST)
        );
    }
}
