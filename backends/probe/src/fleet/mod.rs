//! Fleets: agents probing the same clusters form their own small MeshKit mesh and own probe
//! groups through shard leases, so each group runs on one agent and moves when that agent dies.
//!
//! Each agent with `[fleet]` ([`FleetConfig`]) runs a real `meshkit_node` node from its own
//! `node.toml`. That node is a member of the *agents'* mesh, a mesh of its own, separate from
//! the one the agents watch: a fault in the watched mesh must not move the probes that are
//! there to see it. The node's `[shards]` names a namespace (`probe-groups` by default) of `N`
//! shards; the coordinator on the agents' Raft leader places every shard on one live agent
//! through a lease, as it does for any MeshKit shard (`meshkit::shard`).
//!
//! # Rules
//!
//! * **Group to shard.** Group `g` lives on shard [`shard_of`]`(g, N)`: FNV-1a (64 bit) over
//!   the UTF-8 bytes of the group's name, modulo `N`. The hash is fixed (no per-process seed,
//!   no dependence on the Rust release), so every agent, of any version, maps a group to the
//!   same shard; it is the function the control API uses to pick a queue's shard for a payload.
//!   Several groups may share a shard, and a shard may hold none: with `N` at least a few times
//!   the number of agents, the groups spread about evenly.
//! * **Owned groups.** An agent runs the configured groups whose shard its node holds a lease
//!   on (and is not handing away): [`Fleet::owned`]. A node that has not joined yet, or that
//!   lost its quorum, holds nothing and runs nothing: each group runs on at most one agent
//!   whose lease is valid, which is what keeps the fleet from repeating work.
//! * **Following changes.** The fleet subscribes to its node's leadership feed (what
//!   `GET /control/events/leadership` streams) from the sequence number of the view it read
//!   first, so no change is missed between the two. Every entry about a shard lease of the
//!   namespace that changes what the node holds (acquired, transferred, lost, expired,
//!   released; not renewals) makes it read the node's view again and publish the new set; a
//!   lagged subscription does the same. There is no polling: a quiet fleet costs nothing.
//!   When the node stops, the feed closes and the fleet publishes the empty set.
//! * **Handoffs.** A planned stop ([`Fleet::stop`]) drains the node: the coordinator hands its
//!   shards to the other agents (a lease transfer, no TTL wait), the fleet waits until it holds
//!   none (at most [`STOP_HANDOFF_WAIT`] plus two TTLs), then leaves the mesh. A transfer
//!   commits at the voters before the new holder hears of it and after the old one started it,
//!   so the old owner stops listing the group when it hears `transferred`: for that moment
//!   both agents may run it. Alerts carry no agent identity, so Alertmanager deduplicates what
//!   both send.
//! * **Failover.** An agent that dies (no leave) keeps its leases until their TTL runs out at
//!   the voters; the coordinator gives its shards to the others once the mesh holds it dead
//!   (a suspect may come back: [`detection_time`]), and their grants wait for that expiry.
//!   [`failover_target`] is the bound this module promises from the TTL and the detection
//!   time. Measured (`backends/probe/tests/fleet_process.rs`, five agent processes, one
//!   killed with SIGKILL per run, 2 s TTL, fast membership timers): 4.6 to 5.4 s against a
//!   target of 8.6 s (`docs/probes-fleet.section.md`). Shorter TTLs alone do not shorten it:
//!   the detection, 4 s of suspicion at least with the LAN profile, dominates.
//!
//! The agents' node needs a quorum of its `[leadership] voters` running (3 voters: 2); with
//! fewer, no shard can be granted and no agent probes. Run at least three agents, and make
//! three of them the voters.

mod config;

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use meshkit::shard::ShardId;
use meshkit_node::api::json::{Change, LeadershipView};
use meshkit_node::driver::NodeHandle;
use meshkit_node::node::{DriverExit, RunningNode, StartError};
use thiserror::Error;
use tokio::sync::broadcast::error::RecvError;
use tokio::sync::watch;
use tokio::task::JoinHandle;

pub use self::config::{DEFAULT_NAMESPACE, FleetConfig, RawFleetConfig};
use crate::config::ConfigError;

/// How long a planned stop waits for its shards to be handed to the other agents, beyond two
/// shard TTLs (a coordinator step, a transfer per shard through Raft, on a loaded machine).
/// Past it the agent leaves anyway, and what it still holds moves when the leases expire.
pub const STOP_HANDOFF_WAIT: Duration = Duration::from_secs(5);

/// How long a leaving agent's node keeps gossiping after its leave (as `meshkitd` does, a few
/// gossip rounds), so that the others see it `left` rather than dead.
pub const LEAVE_LINGER: Duration = Duration::from_millis(500);

/// What [`failover_target`] allows beyond the lease TTLs and the detection: the coordinator's
/// next step (every 100 ms), the new holders' grants through Raft, and the scheduling delays
/// of a loaded machine.
pub const FAILOVER_SLACK: Duration = Duration::from_secs(2);

/// The longest the agents' mesh takes to hold a silent agent dead, from its membership
/// settings: one probe period and its timeout to suspect it, then the suspicion timeout, whose
/// minimum is `max(suspicion_min, suspicion_mult x probe_interval)` for a mesh of up to ten
/// members (the `log10(n)` factor of the Lifeguard minimum is 1 there). The coordinator moves
/// a member's shards only once it is dead (a suspect one may come back), so this, and not the
/// TTL, is what a failover mostly waits for with the LAN profile's 4 s suspicion floor.
pub fn detection_time(membership: &meshkit::config::Config) -> Duration {
    let suspicion = membership
        .suspicion_min()
        .max(membership.probe_interval() * membership.suspicion_mult());
    membership.probe_interval() + membership.probe_timeout() + suspicion
}

/// The failover bound this module promises: the groups of an agent that died run again on
/// the others within `max(ttl, detection) + ttl + FAILOVER_SLACK` of its death, `ttl` being
/// the shard leases' (`[shards] ttl`) and `detection` [`detection_time`]. The dead agent's
/// leases run out at most a TTL after its last renewal, and the coordinator gives its shards
/// away once the mesh holds it dead, whichever comes last; one more TTL covers a Raft leader
/// change when the dead agent led the voters (the new leader's coordinator rebuilds its map and
/// grants wait for the leases its predecessor granted); the slack covers the rest.
///
/// With the test fleets' settings (2 s TTL, 400 ms probes, 200 ms probe timeout, the 4 s
/// floor): 4.6 + 2 + 2 = 8.6 s; the measured failovers are in `tests/fleet_mesh.rs`.
pub fn failover_target(ttl: Duration, detection: Duration) -> Duration {
    ttl.max(detection) + ttl + FAILOVER_SLACK
}

/// FNV-1a, 64 bit: stable across processes, platforms and releases (see the module docs).
pub fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

/// The shard (`0..shards`) that holds `group`: [`fnv1a`] of its name modulo `shards` (a count
/// of 0 is taken as 1).
pub fn shard_of(group: &str, shards: u32) -> u32 {
    // The remainder is below `shards`, a u32: the conversion cannot fail.
    u32::try_from(fnv1a(group.as_bytes()) % u64::from(shards.max(1))).unwrap_or(0)
}

/// Why a fleet did not start. Nothing keeps running when this is returned.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum FleetError {
    /// The node's file changed since the config was validated and is no longer usable.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The node did not start (its TLS files, its ports, its Raft directory).
    #[error("fleet.node: the agent's node did not start: {0}")]
    Start(#[from] StartError),
    /// The node runs no leadership or stopped at once (not expected after validation).
    #[error("fleet.node: the agent's node {0}")]
    Node(&'static str),
}

/// One agent's membership of a fleet: its node of the agents' mesh and the groups it owns.
///
/// Start with [`Fleet::start`]; read [`Fleet::owned`] (a watch: the agent runs exactly those
/// groups and follows its changes); on a reload give the new group list to
/// [`Fleet::set_groups`]; end with [`Fleet::stop`] (hands the groups over) or
/// [`Fleet::kill`] (as a crash would). Dropping a `Fleet` leaves its node running, as dropping
/// a [`RunningNode`] does.
#[derive(Debug)]
pub struct Fleet {
    node: RunningNode,
    namespace: String,
    shards: u32,
    ttl: Duration,
    detection: Duration,
    shared: Arc<Shared>,
    owned: watch::Receiver<BTreeSet<String>>,
    held: watch::Receiver<BTreeSet<u32>>,
    follower: JoinHandle<()>,
}

impl Fleet {
    /// Starts the agent's node from `config.node` (read again: it may have changed since the
    /// config was validated) and follows which of `groups` it owns. Must be called inside a
    /// tokio runtime. The owned set starts empty and fills as the coordinator places shards
    /// (a few seconds after the agents' mesh forms).
    ///
    /// # Errors
    ///
    /// [`FleetError::Config`] when the node's file is no longer a fleet's; [`FleetError::Start`] when the node does not start.
    pub async fn start(config: &FleetConfig, groups: Vec<String>) -> Result<Self, FleetError> {
        let path = config.node();
        let node_config = config::load_node(path)?;
        let (shards, ttl) = config::fleet_shards(&node_config, path, config.namespace())?;
        let node = meshkit_node::node::start(&node_config).await?;
        let handle = node.handle().clone();
        let first = match handle.leadership().await {
            Ok(Some(view)) => view,
            Ok(None) => {
                node.stop().await;
                return Err(FleetError::Node("runs no leadership"));
            }
            Err(_) => {
                node.stop().await;
                return Err(FleetError::Node("stopped as it started"));
            }
        };
        let (owned_tx, owned_rx) = watch::channel(BTreeSet::new());
        let (held_tx, held_rx) = watch::channel(BTreeSet::new());
        let shared = Arc::new(Shared {
            state: Mutex::new(State {
                groups: groups.into_iter().collect(),
                held: BTreeSet::new(),
            }),
            shards,
            owned: owned_tx,
            held: held_tx,
        });
        let follower = Follower {
            handle,
            prefix: format!("shard/{}/", config.namespace()),
            namespace: config.namespace().to_owned(),
            shards,
            shared: shared.clone(),
        };
        let follower = tokio::spawn(follower.run(first));
        tracing::info!(
            node = %node.id(),
            namespace = config.namespace(),
            shards,
            "fleet: the agent's node started; probe groups follow its shard leases"
        );
        Ok(Self {
            node,
            namespace: config.namespace().to_owned(),
            shards,
            ttl,
            detection: config.detection(),
            shared,
            owned: owned_rx,
            held: held_rx,
            follower,
        })
    }

    /// The groups this agent owns now and from now on: those of [`set_groups`](Self::set_groups)
    /// whose shard its node holds. Changes only when the set does.
    pub fn owned(&self) -> watch::Receiver<BTreeSet<String>> {
        self.owned.clone()
    }

    /// Replaces the configured groups (a reload); [`owned`](Self::owned) has followed when
    /// this returns.
    pub fn set_groups(&self, groups: Vec<String>) {
        self.shared
            .update(|state| state.groups = groups.into_iter().collect());
    }

    /// The configured groups.
    pub fn groups(&self) -> BTreeSet<String> {
        self.shared.lock().groups.clone()
    }

    /// The shards (`0..shard_count`) of the namespace this node holds now.
    pub fn held_shards(&self) -> BTreeSet<u32> {
        self.held.borrow().clone()
    }

    /// The shard that holds `group` in this fleet ([`shard_of`] with the namespace's count).
    pub fn shard_of(&self, group: &str) -> u32 {
        shard_of(group, self.shards)
    }

    /// The namespace's shard count.
    pub fn shard_count(&self) -> u32 {
        self.shards
    }

    /// The namespace.
    pub fn namespace(&self) -> &str {
        &self.namespace
    }

    /// The bound on a dead agent's groups running again elsewhere ([`failover_target`] of
    /// the shard TTL and the mesh's detection time).
    pub fn failover_target(&self) -> Duration {
        failover_target(self.ttl, self.detection)
    }

    /// The node's id in the agents' mesh.
    pub fn node_id(&self) -> u64 {
        self.node.id().get()
    }

    /// The UDP address of the node's QUIC transport (what other agents' `seeds` name).
    pub fn gossip_addr(&self) -> SocketAddr {
        self.node.gossip_addr()
    }

    /// The node's control endpoint, if its file sets `control`.
    pub fn control_addr(&self) -> Option<SocketAddr> {
        self.node.control_addr()
    }

    /// The node, for what the fleet does not wrap (its handle, its probes).
    pub fn node(&self) -> &RunningNode {
        &self.node
    }

    /// Resolves when the node's driver ends, saying how (see [`RunningNode::exited`]); the
    /// owned set is then empty. An agent should select on it: a node that panicked owns
    /// nothing and the agent probes nothing until it is restarted.
    pub async fn exited(&self) -> DriverExit {
        self.node.exited().await
    }

    /// Stops the way an operator means SIGTERM: the node drains (the coordinator hands its
    /// shards to the other agents), the fleet waits until it holds none or
    /// `2 x ttl + STOP_HANDOFF_WAIT` passed, then the node leaves the mesh and stops. The owned
    /// set shrinks as shards go and ends empty.
    pub async fn stop(self) {
        let handle = self.node.handle().clone();
        let mut held = self.held.clone();
        match handle.drain().await {
            Ok(_) => {
                let wait = self.ttl * 2 + STOP_HANDOFF_WAIT;
                let handed = tokio::time::timeout(wait, held.wait_for(BTreeSet::is_empty))
                    .await
                    .is_ok_and(|r| r.is_ok());
                if !handed {
                    let left: Vec<u32> = held.borrow().iter().copied().collect();
                    tracing::warn!(
                        ?wait,
                        shards = ?left,
                        "fleet: shards not handed over before the stop; they move when their leases expire"
                    );
                }
            }
            Err(error) => tracing::warn!(%error, "fleet: the node did not drain"),
        }
        self.node.shutdown_gracefully(LEAVE_LINGER).await;
        // The feed closed with the driver; the follower publishes the empty set and ends.
        let _ = self.follower.await;
        self.shared.update(|state| state.held.clear());
    }

    /// Stops at once, as a crash would look to the other agents: no drain, no leave. Its
    /// groups move once its leases expire ([`failover_target`]). For tests, and for an agent
    /// that must stop now.
    pub async fn kill(self) {
        self.node.stop().await;
        let _ = self.follower.await;
        self.shared.update(|state| state.held.clear());
    }
}

/// The task that follows the node's shard leases and publishes the owned groups.
struct Follower {
    handle: NodeHandle,
    /// `shard/{namespace}/`: the scopes of the namespace's shards.
    prefix: String,
    namespace: String,
    shards: u32,
    shared: Arc<Shared>,
}

/// What the owned set is computed from, under one lock so that a reload and a lease change
/// never publish a set made of the other's stale half.
#[derive(Debug)]
struct State {
    groups: BTreeSet<String>,
    held: BTreeSet<u32>,
}

/// The state and the watches it is published on, shared by the [`Fleet`] and its follower.
#[derive(Debug)]
struct Shared {
    state: Mutex<State>,
    shards: u32,
    owned: watch::Sender<BTreeSet<String>>,
    held: watch::Sender<BTreeSet<u32>>,
}

impl Shared {
    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        // A panic while holding it cannot leave `State` half-written (two plain assignments):
        // take it over.
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Changes the state and publishes the owned groups and held shards if they changed.
    fn update(&self, change: impl FnOnce(&mut State)) {
        let mut state = self.lock();
        change(&mut state);
        let owned: BTreeSet<String> = state
            .groups
            .iter()
            .filter(|g| state.held.contains(&shard_of(g, self.shards)))
            .cloned()
            .collect();
        let held = state.held.clone();
        self.held.send_if_modified(|current| {
            let changed = *current != held;
            *current = held;
            changed
        });
        self.owned.send_if_modified(|current| {
            if *current == owned {
                return false;
            }
            tracing::info!(owned = ?owned, "fleet: owned probe groups changed");
            *current = owned;
            true
        });
    }
}

impl Follower {
    /// Follows the feed from `first` until the node stops (or the [`Fleet`] is gone), then
    /// publishes the empty set.
    async fn run(self, first: LeadershipView) {
        self.publish_view(&first);
        let mut feed = match self.handle.leadership_feed(first.last_seq).await {
            Ok(feed) => feed,
            Err(error) => {
                tracing::warn!(%error, "fleet: no leadership feed; the agent owns nothing");
                self.publish_held(BTreeSet::new());
                return;
            }
        };
        // Entries between the view and the subscription (or a gap: read again either way).
        let reread = match &feed.backlog {
            Ok(entries) => entries.iter().any(|e| self.relevant(&e.change)),
            Err(_) => true,
        };
        if reread && !self.reread().await {
            return self.publish_held(BTreeSet::new());
        }
        loop {
            let again = match feed.live.recv().await {
                Ok(entry) => self.relevant(&entry.change),
                // Entries missed: what they said is unknown, the view is not.
                Err(RecvError::Lagged(missed)) => {
                    tracing::debug!(missed, "fleet: the leadership feed lagged");
                    true
                }
                Err(RecvError::Closed) => break,
            };
            if again && !self.reread().await {
                break;
            }
        }
        tracing::info!("fleet: the agent's node stopped; it owns no group");
        self.publish_held(BTreeSet::new());
    }

    /// Whether `change` may change which of the namespace's shards the node holds.
    fn relevant(&self, change: &Change) -> bool {
        let own = matches!(
            change,
            Change::Acquired { .. }
                | Change::Lost { .. }
                | Change::Transferred { .. }
                | Change::Expired { .. }
                | Change::Released { .. }
        );
        own && change.scope().is_some_and(|s| s.starts_with(&self.prefix))
    }

    /// Reads the node's view and publishes it; `false` when the node has stopped.
    async fn reread(&self) -> bool {
        match self.handle.leadership().await {
            Ok(Some(view)) => {
                self.publish_view(&view);
                true
            }
            Ok(None) | Err(_) => false,
        }
    }

    fn publish_view(&self, view: &LeadershipView) {
        let held: BTreeSet<u32> = view
            .held
            .iter()
            .filter(|lease| !lease.transferring)
            .filter_map(|lease| lease.scope.parse::<ShardId>().ok())
            .filter(|shard| shard.namespace() == self.namespace && shard.id() < self.shards)
            .map(|shard| shard.id())
            .collect();
        self.publish_held(held);
    }

    fn publish_held(&self, held: BTreeSet<u32>) {
        self.shared.update(|state| state.held = held);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// FNV-1a's published test vectors: the mapping must never change, or agents of two
    /// releases would run different groups (or none) during an upgrade.
    #[test]
    fn the_group_hash_is_fnv1a() {
        assert_eq!(fnv1a(b""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(fnv1a(b"a"), 0xaf63_dc4c_8601_ec8c);
        assert_eq!(fnv1a(b"foobar"), 0x8594_4171_f739_67e8);
    }

    #[test]
    fn groups_map_to_a_shard_in_range_and_spread() {
        let shards = 16;
        let mut used = BTreeSet::new();
        for i in 0..200 {
            let s = shard_of(&format!("group-{i}"), shards);
            assert!(s < shards);
            used.insert(s);
        }
        assert_eq!(used.len(), 16, "200 groups leave no shard of 16 empty");
        assert_eq!(shard_of("core", 0), 0, "a count of 0 is taken as 1");
        assert_eq!(shard_of("core", 16), shard_of("core", 16));
    }

    #[test]
    fn the_failover_target_waits_for_the_later_of_ttl_and_detection() {
        let s = Duration::from_secs;
        assert_eq!(failover_target(s(2), s(5)), s(5 + 2) + FAILOVER_SLACK);
        assert_eq!(failover_target(s(10), s(5)), s(10 + 10) + FAILOVER_SLACK);
        // The LAN profile: 1 s probes, 500 ms timeout, the 4 s suspicion floor.
        let lan = meshkit::config::Config::from_profile(meshkit::config::Profile::Lan);
        assert_eq!(detection_time(&lan), Duration::from_millis(5_500));
    }
}
