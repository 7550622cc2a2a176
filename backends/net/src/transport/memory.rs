//! An in-process network of bounded channels: each node's [`MemoryTransport`] delivers to the
//! others by [`NodeId`], with the true sender attached, as an authenticating transport would.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};

use bytes::Bytes;
use meshkit::NodeId;
use tokio::sync::mpsc;

use super::{Received, Transport, TransportStats};

/// Datagrams queued for one node before newer ones are dropped.
pub const MEMORY_QUEUE_DATAGRAMS: usize = 1024;

type Inboxes = HashMap<NodeId, mpsc::Sender<Received>>;

/// The shared network; clone it to hand it around.
#[derive(Clone, Debug, Default)]
pub struct MemoryNetwork {
    inboxes: Arc<Mutex<Inboxes>>,
}

impl MemoryNetwork {
    /// An empty network.
    pub fn new() -> Self {
        Self::default()
    }

    /// Attaches node `id` (replacing an earlier attachment) and returns its transport.
    pub fn attach(&self, id: NodeId) -> MemoryTransport {
        let (tx, rx) = mpsc::channel(MEMORY_QUEUE_DATAGRAMS);
        self.lock().insert(id, tx);
        MemoryTransport {
            id,
            network: self.clone(),
            inbox: rx,
            stats: TransportStats::default(),
        }
    }

    /// Detaches node `id`: datagrams to it are dropped from now on (a crash, seen from outside),
    /// and its transport reports closed once its queue is drained, which stops its driver.
    pub fn detach(&self, id: NodeId) {
        self.lock().remove(&id);
    }

    /// Delivers `datagram` to `to` as if `from` had sent it; `false` if `to` is not attached or
    /// its queue is full. Tests use it to forge traffic.
    pub fn deliver(&self, from: NodeId, to: NodeId, datagram: Bytes) -> bool {
        let Some(tx) = self.lock().get(&to).cloned() else {
            return false;
        };
        tx.try_send(Received { from, datagram }).is_ok()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inboxes> {
        // The map stays consistent even if a holder panicked: every operation is one call.
        self.inboxes.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// One node's attachment to a [`MemoryNetwork`].
#[derive(Debug)]
pub struct MemoryTransport {
    id: NodeId,
    network: MemoryNetwork,
    inbox: mpsc::Receiver<Received>,
    stats: TransportStats,
}

impl Transport for MemoryTransport {
    fn send(&mut self, to: NodeId, _addr: Option<SocketAddr>, datagram: Bytes) {
        if !self.network.deliver(self.id, to, datagram) {
            self.stats.datagrams_dropped += 1;
        }
    }

    fn poll_recv(&mut self, cx: &mut Context<'_>) -> Poll<Option<Received>> {
        self.inbox.poll_recv(cx)
    }

    fn stats(&self) -> TransportStats {
        self.stats
    }
}
