//! QUIC between nodes over quinn, with mutual TLS: datagrams for ordinary messages, a
//! unidirectional stream for each message too large for one.
//!
//! Each node owns one [`quinn::Endpoint`] (one UDP socket) that both accepts and dials. It dials
//! a peer lazily, on the first datagram for it, at the address the driver passes (a seed's, or the
//! one the peer publishes in its metadata), and keeps one connection per peer. Both sides present
//! certificates signed by the development CA; the peer's [`NodeId`] is read from its verified
//! certificate, never from a datagram, so the core can refuse a datagram claiming another sender.
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

use std::collections::HashMap;
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
/// A connection (or a handshake) silent this long is closed.
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(5);
/// Keep-alives on quiet connections, well inside [`IDLE_TIMEOUT`].
pub const KEEP_ALIVE_INTERVAL: Duration = Duration::from_secs(1);
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

/// Settings of a [`QuicTransport`] beyond its address and certificates.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct QuicOptions {
    /// Largest message accepted on a stream, and sent on one, in bytes (default
    /// [`DEFAULT_MAX_STREAM_MESSAGE_BYTES`]). Nodes of one mesh should agree: a longer message
    /// is dropped by its sender and refused by its receiver.
    pub max_stream_message_bytes: usize,
}

impl Default for QuicOptions {
    fn default() -> Self {
        Self {
            max_stream_message_bytes: DEFAULT_MAX_STREAM_MESSAGE_BYTES,
        }
    }
}

impl QuicOptions {
    /// These options with another stream message limit.
    pub fn with_max_stream_message_bytes(mut self, bytes: usize) -> Self {
        self.max_stream_message_bytes = bytes;
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
    Connected(Connection),
    Dialing(Vec<Bytes>),
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

    /// Makes `conn` the connection to `id`, flushes what waited for it and starts its readers.
    fn register(self: &Arc<Self>, id: NodeId, conn: Connection) {
        let queued = match self.peers().insert(id, Slot::Connected(conn.clone())) {
            Some(Slot::Dialing(queued)) => queued,
            _ => Vec::new(),
        };
        Counters::bump(&self.counters.connections_opened);
        tracing::debug!(peer = %id, remote = %conn.remote_address(), "connection up");
        for message in queued {
            self.send_on(id, &conn, message);
        }
        tokio::spawn(read_datagrams(self.clone(), id, conn.clone()));
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

async fn read_datagrams(shared: Arc<Shared>, id: NodeId, conn: Connection) {
    loop {
        match conn.read_datagram().await {
            Ok(datagram) => match shared.inbox.try_send(Received { from: id, datagram }) {
                Ok(()) => {}
                Err(mpsc::error::TrySendError::Full(_)) => {
                    Counters::bump(&shared.counters.datagrams_dropped);
                }
                Err(mpsc::error::TrySendError::Closed(_)) => break,
            },
            Err(error) => {
                tracing::debug!(peer = %id, %error, "connection closed");
                break;
            }
        }
    }
    let mut peers = shared.peers();
    if let Some(Slot::Connected(current)) = peers.get(&id)
        && current.stable_id() == conn.stable_id()
    {
        peers.remove(&id);
    }
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
}

async fn dial(shared: Arc<Shared>, to: NodeId, addr: SocketAddr) {
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
    match attempt.await {
        Ok(conn) => shared.register(to, conn),
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
            if let Some(Slot::Dialing(queued)) = peers.get(&to) {
                let lost = queued.len() as u64;
                peers.remove(&to);
                shared
                    .counters
                    .datagrams_dropped
                    .fetch_add(lost, Ordering::Relaxed);
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
                Ok(id) if id != shared.local_id => shared.register(id, conn),
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

/// The quinn configurations of both sides for `identity`.
fn quinn_configs(
    identity: &TlsIdentity,
    transport: &Arc<quinn::TransportConfig>,
) -> Result<(quinn::ServerConfig, quinn::ClientConfig), TlsError> {
    let server_crypto = QuicServerConfig::try_from(identity.server_config()?)?;
    let mut server = quinn::ServerConfig::with_crypto(Arc::new(server_crypto));
    server.transport_config(transport.clone());
    let client_crypto = QuicClientConfig::try_from(identity.client_config()?)?;
    let mut client = quinn::ClientConfig::new(Arc::new(client_crypto));
    client.transport_config(transport.clone());
    Ok((server, client))
}

/// Applies each identity `source` publishes to the endpoint (new handshakes) and to later dials.
async fn follow_tls(shared: Arc<Shared>, mut source: TlsSource) {
    while let Some(identity) = source.changed().await {
        match quinn_configs(&identity, &shared.transport_config) {
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
                quinn::IdleTimeout::try_from(IDLE_TIMEOUT)
                    .expect("IDLE_TIMEOUT is far below QUIC's varint bound"),
            ))
            .keep_alive_interval(Some(KEEP_ALIVE_INTERVAL))
            // Datagrams, and one unidirectional stream per message too large for one.
            .max_concurrent_bidi_streams(0u32.into())
            .max_concurrent_uni_streams(MAX_INCOMING_STREAMS_PER_CONNECTION.into());
        let transport = Arc::new(transport);
        let identity = tls.current();
        let (server, client) = quinn_configs(&identity, &transport)?;
        let endpoint = Endpoint::server(server, listen).map_err(|source| QuicError::Bind {
            addr: listen,
            source,
        })?;
        let (inbox_tx, inbox) = mpsc::channel(INBOX_DATAGRAMS);
        let shared = Arc::new(Shared {
            local_id: identity.id(),
            endpoint,
            peers: Mutex::new(HashMap::new()),
            inbox: inbox_tx,
            counters: Counters::default(),
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
        let mut peers = self.shared.peers();
        match peers.get_mut(&to) {
            Some(Slot::Connected(conn)) if conn.close_reason().is_none() => {
                let conn = conn.clone();
                drop(peers);
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
        tokio::spawn(dial(self.shared.clone(), to, addr));
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

    /// A peer that fails its handshake in a loop (finding 8 of issue #10: one `info` line per
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
