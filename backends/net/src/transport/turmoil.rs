//! The driver on turmoil's simulated network and virtual time (feature `turmoil`; simulation
//! only, `meshkitd` never uses it).
//!
//! turmoil runs every simulated host on its own paused tokio runtime and advances time itself,
//! so the real `Driver` (`meshkit_runtime::driver::Driver`) runs unchanged over:
//!
//! * [`TurmoilTransport`]: datagrams over [`turmoil::net::UdpSocket`], which partitions, holds,
//!   latency and loss of the simulated network act on;
//! * [`TurmoilClock`]: the simulation's elapsed virtual time, one timeline for every host and for
//!   the test that steps the simulation.
//!
//! # Sender identity
//!
//! There is no TLS here. A [`Directory`], filled by the test before the simulation runs, binds
//! each [`NodeId`] to one socket address, as the development CA binds a node id to a key. A
//! transport binds its socket at its node's port; a datagram leaves with its host's true IP
//! (turmoil stamps it: no host can send from another's address); a received datagram's sender is
//! whoever the directory says owns the source address, never what the datagram says. Sending
//! follows the QUIC transport's shape: a peer heard from (or dialled) has a "connection" (its
//! directory address); otherwise the datagram goes to the address the driver passes, only if the
//! directory says it belongs to that peer (a dial whose handshake would name the wrong node fails
//! and is counted).
//!
//! This is honest **only inside the simulation**: turmoil stamps every datagram with the true
//! source host, whatever the socket is bound to, so a source address cannot be forged there.
//! On a real network UDP source addresses are trivially spoofed and an address proves nothing;
//! real nodes authenticate with certificates ([`super::quic`]). The core still refuses a datagram
//! whose claimed sender differs from the transport's, so a misattribution fails loudly either way.

use std::collections::BTreeMap;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, PoisonError, RwLock};
use std::task::{Context, Poll};

use bytes::Bytes;
use meshkit::{Instant, NodeId};
use thiserror::Error;
use turmoil::net::UdpSocket;

use super::{Received, Transport, TransportStats};
use crate::clock::Clock;

/// Receive buffer: the largest UDP payload, so no datagram is ever cut short.
pub const RECV_BUFFER_BYTES: usize = 65_536;
/// Datagrams from unknown sources skipped within one `poll_recv` before it yields.
pub const MAX_REFUSED_PER_POLL: usize = 64;

const _: () = assert!(RECV_BUFFER_BYTES > meshkit::wire::MAX_DATAGRAM_BYTES + 1);

/// Why a [`Directory`] entry or a [`TurmoilTransport`] was refused. Nothing changed.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum TurmoilError {
    /// The node has no address in the directory (caller misuse).
    #[error("node {id} has no address in the directory")]
    NotRegistered {
        /// The node.
        id: NodeId,
    },
    /// The address is already registered to another node (caller misuse).
    #[error("address {addr} is registered to node {owner}, not {id}")]
    AddressTaken {
        /// The address.
        addr: SocketAddr,
        /// Its registered owner.
        owner: NodeId,
        /// The node that asked for it.
        id: NodeId,
    },
    /// The node is already registered at another address (caller misuse).
    #[error("node {id} is registered at {registered}, not {addr}")]
    NodeTaken {
        /// The node.
        id: NodeId,
        /// Its registered address.
        registered: SocketAddr,
        /// The address asked for.
        addr: SocketAddr,
    },
    /// The socket could not be bound: the address is not this host's, or the port is taken.
    #[error("cannot bind {addr}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// Why.
        source: std::io::Error,
    },
}

#[derive(Debug, Default)]
struct Entries {
    by_id: BTreeMap<NodeId, SocketAddr>,
    by_addr: BTreeMap<SocketAddr, NodeId>,
}

/// Which node owns which socket address in the simulated network: the identity authority of
/// the turmoil tier (see the [module docs](self)). Clone it to share it.
#[derive(Clone, Debug, Default)]
pub struct Directory {
    entries: Arc<RwLock<Entries>>,
}

impl Directory {
    /// An empty directory.
    pub fn new() -> Self {
        Self::default()
    }

    /// Binds `id` to `addr`. Registering the same pair again is a no-op; an address or a node
    /// already bound to something else is refused.
    pub fn register(&self, id: NodeId, addr: SocketAddr) -> Result<(), TurmoilError> {
        let mut entries = self.entries.write().unwrap_or_else(PoisonError::into_inner);
        if let Some(&owner) = entries.by_addr.get(&addr)
            && owner != id
        {
            return Err(TurmoilError::AddressTaken { addr, owner, id });
        }
        if let Some(&registered) = entries.by_id.get(&id)
            && registered != addr
        {
            return Err(TurmoilError::NodeTaken {
                id,
                registered,
                addr,
            });
        }
        entries.by_id.insert(id, addr);
        entries.by_addr.insert(addr, id);
        Ok(())
    }

    /// The address `id` is registered at.
    pub fn addr(&self, id: NodeId) -> Option<SocketAddr> {
        self.read().by_id.get(&id).copied()
    }

    /// The node registered at `addr`.
    pub fn owner(&self, addr: SocketAddr) -> Option<NodeId> {
        self.read().by_addr.get(&addr).copied()
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, Entries> {
        // Every write is one insertion pair under the lock, so a poisoned lock is still usable.
        self.entries.read().unwrap_or_else(PoisonError::into_inner)
    }
}

type RecvResult = (Vec<u8>, std::io::Result<(usize, SocketAddr)>);
type RecvFuture = Pin<Box<dyn Future<Output = RecvResult> + Send>>;

/// One receive on `socket` into `buf`, as an owned future the transport can keep between polls.
fn recv_into(socket: Arc<UdpSocket>, mut buf: Vec<u8>) -> RecvFuture {
    Box::pin(async move {
        let result = socket.recv_from(&mut buf).await;
        (buf, result)
    })
}

fn unspecified(addr: SocketAddr) -> std::net::IpAddr {
    match addr {
        SocketAddr::V4(_) => std::net::Ipv4Addr::UNSPECIFIED.into(),
        SocketAddr::V6(_) => std::net::Ipv6Addr::UNSPECIFIED.into(),
    }
}

/// A node's [`Transport`] on turmoil's simulated network. Must be created and polled on a
/// turmoil host (inside `Sim::host` software).
pub struct TurmoilTransport {
    id: NodeId,
    addr: SocketAddr,
    socket: Arc<UdpSocket>,
    directory: Directory,
    /// Peers heard from or dialled, at their directory address: the transport's "connections".
    peers: BTreeMap<NodeId, SocketAddr>,
    recv: RecvFuture,
    stats: TransportStats,
}

impl TurmoilTransport {
    /// Binds node `id`'s socket at the port of its directory address, on this host (turmoil
    /// sockets bind the unspecified address; peers see the host's IP as the source). Fails if
    /// `id` is not registered or the port is taken (a crashed host's socket is released when
    /// turmoil drops its runtime, so a bounced host binds again). A directory entry that names
    /// another host's IP cannot be caught here: peers then refuse this node's datagrams (the
    /// source address is not the entry's), which fails as loudly as a wrong certificate.
    pub async fn bind(id: NodeId, directory: Directory) -> Result<Self, TurmoilError> {
        let addr = directory
            .addr(id)
            .ok_or(TurmoilError::NotRegistered { id })?;
        // turmoil binds only unspecified (or loopback) addresses; what peers see as the source
        // is this host's IP, the one the directory must give for `id`.
        let bind_addr = SocketAddr::new(unspecified(addr), addr.port());
        let socket = UdpSocket::bind(bind_addr)
            .await
            .map(Arc::new)
            .map_err(|source| TurmoilError::Bind { addr, source })?;
        let recv = recv_into(socket.clone(), vec![0; RECV_BUFFER_BYTES]);
        Ok(Self {
            id,
            addr,
            socket,
            directory,
            peers: BTreeMap::new(),
            recv,
            stats: TransportStats::default(),
        })
    }

    /// The address the socket is bound to (the node's directory address).
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// Where to send to `to`: its connection, or a "dial" of `addr` checked against the
    /// directory. `None` (counted) when neither works.
    fn destination(&mut self, to: NodeId, addr: Option<SocketAddr>) -> Option<SocketAddr> {
        if let Some(&known) = self.peers.get(&to) {
            return Some(known);
        }
        let addr = addr?;
        if self.directory.owner(addr) == Some(to) {
            self.peers.insert(to, addr);
            self.stats.connections_opened += 1;
            Some(addr)
        } else {
            // The handshake would name another node (or none): the QUIC transport's WrongPeer.
            tracing::debug!(peer = %to, %addr, "address not registered to the peer; dial refused");
            self.stats.dials_failed += 1;
            None
        }
    }
}

impl Transport for TurmoilTransport {
    fn send(&mut self, to: NodeId, addr: Option<SocketAddr>, datagram: Bytes) {
        let Some(dest) = self.destination(to, addr) else {
            self.stats.datagrams_dropped += 1;
            return;
        };
        if let Err(error) = self.socket.try_send_to(&datagram, dest) {
            tracing::debug!(peer = %to, %dest, %error, "send failed");
            self.stats.datagrams_dropped += 1;
        }
    }

    fn needs_addresses(&self) -> bool {
        true
    }

    fn poll_recv(&mut self, cx: &mut Context<'_>) -> Poll<Option<Received>> {
        for _ in 0..MAX_REFUSED_PER_POLL {
            let (buf, result) = match self.recv.as_mut().poll(cx) {
                Poll::Ready(done) => done,
                Poll::Pending => return Poll::Pending,
            };
            let (len, source) = match result {
                Ok(received) => received,
                Err(error) => {
                    // turmoil's socket has no receive error but a closed one: stop the driver.
                    tracing::debug!(%error, "turmoil socket closed");
                    self.recv = recv_into(self.socket.clone(), buf);
                    return Poll::Ready(None);
                }
            };
            let datagram = Bytes::copy_from_slice(&buf[..len]);
            self.recv = recv_into(self.socket.clone(), buf);
            match self.directory.owner(source) {
                Some(from) if from != self.id => {
                    if self.peers.insert(from, source).is_none() {
                        self.stats.connections_opened += 1;
                    }
                    return Poll::Ready(Some(Received { from, datagram }));
                }
                _ => {
                    // No identity for this source: the QUIC transport's refused handshake.
                    tracing::debug!(%source, "datagram from an unregistered address refused");
                    self.stats.handshakes_refused += 1;
                }
            }
        }
        // A flood from unknown sources: let other tasks run, then come back.
        cx.waker().wake_by_ref();
        Poll::Pending
    }

    fn stats(&self) -> TransportStats {
        self.stats
    }
}

impl std::fmt::Debug for TurmoilTransport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TurmoilTransport")
            .field("id", &self.id)
            .field("addr", &self.addr)
            .field("peers", &self.peers)
            .field("stats", &self.stats)
            .finish_non_exhaustive()
    }
}

/// The simulation's virtual time ([`turmoil::sim_elapsed`]): the same timeline on every host and
/// in the test stepping the simulation (`Sim::elapsed`), so a node's [`Instant`]s read as
/// simulation times. Read on a turmoil host; elsewhere (no host is running) it returns the last
/// time it read, so it never goes backwards.
#[derive(Debug, Default)]
pub struct TurmoilClock {
    last_nanos: AtomicU64,
}

impl TurmoilClock {
    /// A clock for one node.
    pub fn new() -> Self {
        Self::default()
    }
}

impl Clock for TurmoilClock {
    fn now(&self) -> Instant {
        let read = turmoil::sim_elapsed()
            // u64 nanoseconds last 584 years of simulated time.
            .map(|elapsed| u64::try_from(elapsed.as_nanos()).unwrap_or(u64::MAX));
        let nanos = match read {
            Some(nanos) => self
                .last_nanos
                .fetch_max(nanos, Ordering::Relaxed)
                .max(nanos),
            None => self.last_nanos.load(Ordering::Relaxed),
        };
        Instant::from_nanos(nanos)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(last: u8, port: u16) -> SocketAddr {
        SocketAddr::from(([192, 168, 0, last], port))
    }

    #[test]
    fn directory_binds_one_address_to_one_node() {
        let dir = Directory::new();
        let (a, b) = (NodeId::new(1), NodeId::new(2));
        dir.register(a, addr(1, 7000)).unwrap();
        dir.register(a, addr(1, 7000))
            .expect("the same pair again is a no-op");
        assert!(matches!(
            dir.register(b, addr(1, 7000)),
            Err(TurmoilError::AddressTaken { owner, .. }) if owner == a
        ));
        assert!(matches!(
            dir.register(a, addr(3, 7000)),
            Err(TurmoilError::NodeTaken { registered, .. }) if registered == addr(1, 7000)
        ));
        assert_eq!(dir.owner(addr(1, 7000)), Some(a));
        assert_eq!(dir.addr(a), Some(addr(1, 7000)));
        assert_eq!(dir.owner(addr(3, 7000)), None);
        assert_eq!(dir.addr(b), None);
    }

    #[test]
    fn clock_outside_a_simulation_stays_put() {
        let clock = TurmoilClock::new();
        assert_eq!(clock.now(), Instant::ZERO);
        assert_eq!(clock.now(), Instant::ZERO);
    }
}
