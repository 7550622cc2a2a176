//! The peer lease health tracker: which workers an owner may count on, fed by membership (a
//! worker's node Dead or Left) and by the workers' heartbeats.

use alloc::collections::BTreeMap;
use alloc::vec::Vec;

use crate::id::NodeId;
use crate::time::{Duration, Instant};

/// One worker as the tracker sees it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PeerHealth {
    /// The worker's node.
    pub node: NodeId,
    /// Its last heartbeat (or lease request), by the owner's clock.
    pub last_heartbeat: Option<Instant>,
    /// Since when membership holds it Dead or Left (`None`: up).
    pub disconnected_since: Option<Instant>,
    /// Healthy: not disconnected, and heard from within the grace.
    pub healthy: bool,
}

/// Counts over the tracked workers.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct HealthSummary {
    /// Healthy workers (eligible for leases).
    pub eligible: usize,
    /// Unhealthy ones.
    pub unhealthy: usize,
    /// Disconnected workers whose items wait for the grace to end before they are requeued.
    pub pending_reassignments: usize,
}

#[derive(Clone, Copy, Debug, Default)]
struct Peer {
    last_heartbeat: Option<Instant>,
    disconnected_since: Option<Instant>,
    reassigned: bool,
}

/// Tracks the workers of this node's queues. Healthy = not disconnected and the last heartbeat
/// within the grace; a worker disconnected for the grace has its items requeued (once per
/// disconnection). Bounded by the members of the mesh: only nodes that leased an item or that
/// membership reported are tracked, and a worker up again and idle is forgotten.
#[derive(Clone, Debug)]
pub struct LeaseHealth {
    grace: Duration,
    peers: BTreeMap<NodeId, Peer>,
}

impl LeaseHealth {
    /// A tracker with this grace.
    pub fn new(grace: Duration) -> Self {
        Self {
            grace,
            peers: BTreeMap::new(),
        }
    }

    /// A heartbeat (or any request) from `node`.
    pub fn on_heartbeat(&mut self, now: Instant, node: NodeId) {
        let peer = self.peers.entry(node).or_default();
        peer.last_heartbeat = Some(now);
    }

    /// Membership says `node` is down (Dead or Left, `true`) or up again (`false`). Returns
    /// whether this is a new disconnection (an alert).
    pub fn on_member(&mut self, now: Instant, node: NodeId, down: bool) -> bool {
        if down {
            let peer = self.peers.entry(node).or_default();
            if peer.disconnected_since.is_none() {
                peer.disconnected_since = Some(now);
                peer.reassigned = false;
                return true;
            }
        } else if let Some(peer) = self.peers.get_mut(&node) {
            peer.disconnected_since = None;
            peer.reassigned = false;
        }
        false
    }

    /// The disconnected workers whose grace ended at `now` and whose items are not requeued
    /// yet; each is returned once per disconnection.
    pub fn due(&mut self, now: Instant) -> Vec<NodeId> {
        let grace = self.grace;
        self.peers
            .iter_mut()
            .filter(|(_, p)| {
                !p.reassigned && p.disconnected_since.is_some_and(|d| d + grace <= now)
            })
            .map(|(&id, p)| {
                p.reassigned = true;
                id
            })
            .collect()
    }

    /// When the next disconnected worker's grace ends.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.peers
            .values()
            .filter(|p| !p.reassigned)
            .filter_map(|p| p.disconnected_since)
            .min()
            .map(|d| d + self.grace)
    }

    /// Every tracked worker's health at `now`.
    pub fn snapshot(&self, now: Instant) -> Vec<PeerHealth> {
        self.peers
            .iter()
            .map(|(&node, p)| PeerHealth {
                node,
                last_heartbeat: p.last_heartbeat,
                disconnected_since: p.disconnected_since,
                healthy: p.disconnected_since.is_none()
                    && p.last_heartbeat.is_some_and(|h| now < h + self.grace),
            })
            .collect()
    }

    /// Counts at `now`.
    pub fn summary(&self, now: Instant) -> HealthSummary {
        let mut s = HealthSummary::default();
        for p in self.snapshot(now) {
            if p.healthy {
                s.eligible += 1;
            } else {
                s.unhealthy += 1;
            }
        }
        s.pending_reassignments = self
            .peers
            .values()
            .filter(|p| p.disconnected_since.is_some() && !p.reassigned)
            .count();
        s
    }

    /// Forgets workers that are up and have not been heard from within the grace: from the
    /// instant [`snapshot`](Self::snapshot) calls them unhealthy.
    pub fn forget_idle(&mut self, now: Instant) {
        let grace = self.grace;
        self.peers.retain(|_, p| {
            p.disconnected_since.is_some() || p.last_heartbeat.is_some_and(|h| now < h + grace)
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_disconnected_worker_is_due_once_after_the_grace() {
        let grace = Duration::from_secs(30);
        let mut h = LeaseHealth::new(grace);
        let (a, b) = (NodeId::new(1), NodeId::new(2));
        let t0 = Instant::ZERO;
        h.on_heartbeat(t0, a);
        h.on_heartbeat(t0, b);
        assert_eq!(h.summary(t0).eligible, 2);
        assert!(h.on_member(t0, a, true), "a new disconnection alerts");
        assert!(!h.on_member(t0, a, true), "the same one does not");
        assert_eq!(h.summary(t0).pending_reassignments, 1);
        assert_eq!(h.poll_timeout(), Some(t0 + grace));
        assert!(
            h.due((t0 + grace).saturating_sub(Duration::from_nanos(1)))
                .is_empty()
        );
        assert_eq!(h.due(t0 + grace), vec![a]);
        assert!(h.due(t0 + grace * 2).is_empty(), "once per disconnection");
        let s = h.summary(t0 + Duration::from_secs(1));
        assert_eq!((s.eligible, s.unhealthy), (1, 1));
        // Silent past the grace: unhealthy, then forgotten once up and idle.
        assert!(!h.snapshot(t0 + grace)[1].healthy);
        h.on_member(t0 + grace, a, false);
        h.forget_idle(t0 + grace * 3);
        assert!(h.snapshot(t0 + grace * 3).is_empty());
    }

    #[test]
    fn an_idle_worker_is_forgotten_once_silent_for_the_grace_and_not_before() {
        let grace = Duration::from_secs(30);
        let mut h = LeaseHealth::new(grace);
        let a = NodeId::new(1);
        let t0 = Instant::ZERO + Duration::from_secs(5);
        h.on_heartbeat(t0, a);
        let last_healthy = (t0 + grace).saturating_sub(Duration::from_nanos(1));
        for now in [t0, t0 + grace / 2, last_healthy] {
            h.forget_idle(now);
            let peers = h.snapshot(now);
            assert!(peers.len() == 1 && peers[0].healthy, "forgotten at {now:?}");
        }
        h.forget_idle(t0 + grace);
        assert!(h.snapshot(t0 + grace).is_empty(), "kept past the grace");
    }
}
