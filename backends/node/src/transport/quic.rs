//! QUIC datagrams over quinn, with mutual TLS.
//!
//! Each node owns one [`quinn::Endpoint`] (one UDP socket) that both accepts and dials. It dials
//! a peer lazily, on the first datagram for it, at the address the driver passes (a seed's, or the
//! one the peer publishes in its metadata), and keeps one connection per peer. Both sides present
//! certificates signed by the development CA; the peer's [`NodeId`] is read from its verified
//! certificate, never from a datagram, so the core can refuse a datagram claiming another sender.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use meshkit::NodeId;
use quinn::crypto::rustls::{QuicClientConfig, QuicServerConfig};
use quinn::{Connection, Endpoint};
use rustls::pki_types::CertificateDer;
use thiserror::Error;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use super::{Received, Transport, TransportStats};
use crate::tls::{IdentityError, TlsError, TlsIdentity, node_dns_name, node_id_from_cert};

/// Datagrams received and not yet taken by the driver; past this new ones are dropped.
pub const INBOX_DATAGRAMS: usize = 4096;
/// Datagrams held for a peer while its connection is being dialled; past this they are dropped.
pub const MAX_QUEUED_PER_DIAL: usize = 32;
/// A connection (or a handshake) silent this long is closed.
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(5);
/// Keep-alives on quiet connections, well inside [`IDLE_TIMEOUT`].
pub const KEEP_ALIVE_INTERVAL: Duration = Duration::from_secs(1);
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
}

impl Counters {
    fn bump(counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }
}

#[derive(Debug)]
struct Shared {
    local_id: NodeId,
    endpoint: Endpoint,
    peers: Mutex<HashMap<NodeId, Slot>>,
    inbox: mpsc::Sender<Received>,
    counters: Counters,
}

impl Shared {
    fn peers(&self) -> MutexGuard<'_, HashMap<NodeId, Slot>> {
        // Every critical section leaves the map consistent, so a poisoned lock is still usable.
        self.peers.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Makes `conn` the connection to `id`, flushes what waited for it and starts its reader.
    fn register(self: &Arc<Self>, id: NodeId, conn: Connection) {
        let queued = match self.peers().insert(id, Slot::Connected(conn.clone())) {
            Some(Slot::Dialing(queued)) => queued,
            _ => Vec::new(),
        };
        Counters::bump(&self.counters.connections_opened);
        tracing::debug!(peer = %id, remote = %conn.remote_address(), "connection up");
        for datagram in queued {
            if conn.send_datagram(datagram).is_err() {
                Counters::bump(&self.counters.datagrams_dropped);
            }
        }
        tokio::spawn(read_datagrams(self.clone(), id, conn));
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
        let conn = shared.endpoint.connect(addr, &node_dns_name(to))?.await?;
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
                    tracing::info!(%remote, %error, "incoming handshake refused");
                    Counters::bump(&shared.counters.handshakes_refused);
                    return;
                }
            };
            match peer_id(&conn) {
                Ok(id) if id != shared.local_id => shared.register(id, conn),
                Ok(_) | Err(_) => {
                    tracing::info!(%remote, "incoming connection without a usable node identity");
                    Counters::bump(&shared.counters.handshakes_refused);
                    conn.close(1u32.into(), b"bad identity");
                }
            }
        });
    }
}

/// A node's QUIC transport. Dropping it closes the endpoint and every connection.
#[derive(Debug)]
pub struct QuicTransport {
    shared: Arc<Shared>,
    inbox: mpsc::Receiver<Received>,
    accept_task: JoinHandle<()>,
}

impl QuicTransport {
    /// Binds `listen` (UDP) and starts accepting peers authenticated by `identity`'s CA.
    /// Must be called inside a tokio runtime.
    pub fn bind(identity: &TlsIdentity, listen: SocketAddr) -> Result<Self, QuicError> {
        let mut transport = quinn::TransportConfig::default();
        transport
            .max_idle_timeout(Some(
                quinn::IdleTimeout::try_from(IDLE_TIMEOUT)
                    .expect("IDLE_TIMEOUT is far below QUIC's varint bound"),
            ))
            .keep_alive_interval(Some(KEEP_ALIVE_INTERVAL))
            // Only datagrams travel on these connections.
            .max_concurrent_bidi_streams(0u32.into())
            .max_concurrent_uni_streams(0u32.into());
        let transport = Arc::new(transport);
        let server_crypto =
            QuicServerConfig::try_from(identity.server_config()?).map_err(TlsError::from)?;
        let mut server = quinn::ServerConfig::with_crypto(Arc::new(server_crypto));
        server.transport_config(transport.clone());
        let client_crypto =
            QuicClientConfig::try_from(identity.client_config()?).map_err(TlsError::from)?;
        let mut client = quinn::ClientConfig::new(Arc::new(client_crypto));
        client.transport_config(transport);
        let mut endpoint = Endpoint::server(server, listen).map_err(|source| QuicError::Bind {
            addr: listen,
            source,
        })?;
        endpoint.set_default_client_config(client);
        let (inbox_tx, inbox) = mpsc::channel(INBOX_DATAGRAMS);
        let shared = Arc::new(Shared {
            local_id: identity.id(),
            endpoint,
            peers: Mutex::new(HashMap::new()),
            inbox: inbox_tx,
            counters: Counters::default(),
        });
        let accept_task = tokio::spawn(accept(shared.clone()));
        Ok(Self {
            shared,
            inbox,
            accept_task,
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
                if let Err(error) = conn.send_datagram(datagram) {
                    tracing::debug!(peer = %to, %error, "datagram not sent");
                    Counters::bump(&counters.datagrams_dropped);
                }
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
        }
    }
}

impl Drop for QuicTransport {
    fn drop(&mut self) {
        self.shared.endpoint.close(0u32.into(), b"shutdown");
        self.accept_task.abort();
    }
}
