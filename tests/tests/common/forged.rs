//! The forged-peer harness of the adversarial tests (docs/security.md): a peer that holds a
//! CA-signed certificate for an id that is *not* a member (`meshctl certs init --nodes 5` makes
//! `node-4` and `node-5` for a three-node cluster), speaking to real `meshkitd` processes through
//! the real QUIC transport ([`QuicTransport`]: the ALPN, mutual TLS, datagrams, and a
//! unidirectional stream for a message too large for one), and the cluster it attacks, with the
//! state it must keep.
//!
//! Every forged datagram is built with the core's own encoders (`meshkit::wire` for membership,
//! `meshkit::lease::wire::encode_forged_raft` for Raft) and framed with the driver's channel
//! byte ([`Channel`]), so the bytes are exactly what a real node with that certificate could
//! send. Every wait is bounded.

use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use meshkit::NodeId;
use meshkit::lease::wire::{ForgedRaft, encode_forged_raft};
use meshkit::wire::{self, Update};
use meshkit_node::api::json::LeadershipView;
use meshkit_node::api::json::PeersResponse;
use meshkit_node::client::{Client, Protocols};
use meshkit_node::driver::Channel;
use meshkit_node::tls::TlsIdentity;
use meshkit_node::transport::Transport;
use meshkit_node::transport::quic::QuicTransport;

use super::daemon::{Daemon, start};
use super::{TempDir, client, eventually, write_config_with};

/// Raft ticks of 100 ms (elections in 1-2 s): slow enough that a loaded 2-core machine does not
/// elect a new leader on its own while an attack is being checked.
pub const LEADERSHIP: &str =
    "[leadership]\nvoters = [1, 2, 3]\n\n[leadership.raft]\ntick_interval = \"100ms\"\n";
/// The cluster's size; the attacker's id is above it.
pub const MEMBERS: u64 = 3;
/// Certificates made: `node-4` and `node-5` belong to nobody.
pub const CERTIFIED: u64 = 5;
/// The attacker.
pub const ATTACKER: NodeId = NodeId::new(4);
/// How long the cluster has to form and elect a Raft leader.
pub const FORM_LIMIT: Duration = Duration::from_secs(30);
/// How long the cluster's state is watched after an attack: every sample must equal the
/// state before it. Many gossip rounds (50 ms) and probe periods (400 ms), and several Raft
/// election timeouts.
pub const WATCH_AFTER: Duration = Duration::from_secs(4);

/// A peer with a CA-signed certificate for a non-member id, on its own QUIC endpoint.
pub struct ForgedPeer {
    id: NodeId,
    transport: QuicTransport,
}

impl ForgedPeer {
    /// Binds 127.0.0.1:0 with `node-<id>.pem`/`.key` and `ca.pem` from `dir`.
    pub fn bind(dir: &Path, id: NodeId) -> Self {
        let identity = TlsIdentity::load(
            &dir.join(format!("node-{id}.pem", id = id.get())),
            &dir.join(format!("node-{id}.key", id = id.get())),
            &dir.join("ca.pem"),
        )
        .expect("load the forged peer's certificate");
        assert_eq!(identity.id(), id);
        let transport = QuicTransport::bind(&identity, "127.0.0.1:0".parse().expect("an address"))
            .expect("bind the forged peer's endpoint");
        Self { id, transport }
    }

    /// The id its certificate names.
    pub fn id(&self) -> NodeId {
        self.id
    }

    /// Opens a connection to `to` at `addr` (with one datagram of an unknown channel, which a
    /// node drops before any state machine sees it) and waits until it is up.
    pub async fn connect(&mut self, to: NodeId, addr: SocketAddr) {
        for _ in 0..3 {
            self.transport
                .send(to, Some(addr), bytes::Bytes::from_static(&[0xff]));
            let transport = &self.transport;
            if eventually(Duration::from_secs(5), || async {
                transport.connected_peers().contains(&to)
            })
            .await
            {
                return;
            }
        }
        panic!("the forged peer could not connect to node-{to} at {addr}");
    }

    /// Sends one raw message (already framed) to `to`: a datagram, or a stream when it is too
    /// large for one.
    pub fn send_raw(&mut self, to: NodeId, addr: SocketAddr, message: Vec<u8>) {
        self.transport
            .send(to, Some(addr), bytes::Bytes::from(message));
    }

    /// Sends `payload` on `channel`.
    pub fn send(&mut self, to: NodeId, addr: SocketAddr, channel: Channel, payload: &[u8]) {
        self.send_raw(to, addr, frame(channel, payload));
    }

    /// Sends a forged Raft message (lease channel) from this peer.
    pub fn send_raft(&mut self, to: NodeId, addr: SocketAddr, message: &ForgedRaft) {
        let payload = encode_forged_raft(self.id, message).expect("a network raft message type");
        self.send(to, addr, Channel::Lease, &payload);
    }

    /// Sends `updates` piggybacked on gossip datagrams from this peer (as many datagrams as they
    /// need); returns how many were sent.
    pub fn send_updates(&mut self, to: NodeId, addr: SocketAddr, updates: &[Update]) -> usize {
        let datagrams = wire::pack_gossip(self.id, updates);
        let n = datagrams.len();
        for d in datagrams {
            self.send(to, addr, Channel::Membership, &d);
        }
        n
    }
}

/// `payload` behind the driver's channel byte.
pub fn frame(channel: Channel, payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(payload.len() + 1);
    out.push(channel as u8);
    out.extend_from_slice(payload);
    out
}

/// What the adversarial tests compare before and after an attack, as one node shows it through
/// its control API.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NodeState {
    /// `/healthz` answered 200.
    pub healthy: bool,
    /// Every member it holds: state, incarnation, metadata.
    pub members: BTreeMap<u64, (String, u32, BTreeMap<String, String>)>,
    /// Members it knows in all (`total` of `/meshkit/peers`, itself included).
    pub total: usize,
    /// Its Raft leader and term (`/meshkit/leaders`).
    pub raft: Option<(Option<u64>, u64)>,
    /// `mesh_gossip_members` by state, from `/metrics`.
    pub member_gauges: BTreeMap<String, String>,
}

impl fmt::Display for NodeState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "healthy {} total {} raft {:?} gauges {:?} members",
            self.healthy, self.total, self.raft, self.member_gauges
        )?;
        for (id, (state, inc, meta)) in &self.members {
            write!(f, " [{id} {state} inc {inc} {meta:?}]")?;
        }
        Ok(())
    }
}

/// Three `meshkitd` voters on loopback, certificates for five, and a control client.
pub struct Cluster {
    /// By id.
    pub daemons: BTreeMap<u64, Daemon>,
    client: Client,
    // Dropped last: the daemons are killed before their files go.
    dir: TempDir,
}

impl Cluster {
    /// Starts nodes 1..=[`MEMBERS`] (all Raft voters) and waits until each sees the others
    /// alive and the voters agree on a Raft leader.
    pub async fn start(name: &str) -> Self {
        let dir = TempDir::new(name);
        let (ca, files) =
            meshkit_node::certs::write_dev_certs(dir.path(), CERTIFIED).expect("certificates");
        let mut daemons = BTreeMap::new();
        for f in files.iter().take(MEMBERS as usize) {
            let seeds: Vec<(u64, SocketAddr)> = daemons
                .get(&1)
                .map(|d: &Daemon| vec![(1, d.gossip)])
                .unwrap_or_default();
            let path = write_config_with(
                dir.path(),
                f.id.get(),
                &seeds,
                &f.cert,
                &f.key,
                &ca,
                LEADERSHIP,
            );
            daemons.insert(f.id.get(), start(&path));
        }
        let client = client(dir.path(), Protocols::TcpOnly);
        let cluster = Self {
            daemons,
            client,
            dir,
        };
        let formed = eventually(FORM_LIMIT, || cluster.settled()).await;
        assert!(
            formed,
            "the cluster did not form: {}",
            cluster.describe().await
        );
        cluster
    }

    /// The certificates' directory.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// Node `id`'s gossip (QUIC) address.
    pub fn gossip(&self, id: u64) -> SocketAddr {
        self.daemons[&id].gossip
    }

    /// A forged peer with `node-4`'s certificate, connected to every member.
    pub async fn attacker(&self) -> ForgedPeer {
        let mut peer = ForgedPeer::bind(self.dir(), ATTACKER);
        for (&id, d) in &self.daemons {
            peer.connect(NodeId::new(id), d.gossip).await;
        }
        peer
    }

    async fn get(&self, id: u64, path: &str) -> Option<(u16, String)> {
        let d = self.daemons.get(&id)?;
        let r = self.client.get(&d.control, path).await.ok()?;
        Some((r.status, r.body))
    }

    /// Node `id`'s state as its control API shows it (`None` parts when it does not answer).
    pub async fn state(&self, id: u64) -> NodeState {
        let healthy = matches!(self.get(id, "/healthz").await, Some((200, _)));
        let peers: Option<PeersResponse> = match self.get(id, "/meshkit/peers").await {
            Some((200, body)) => serde_json::from_str(&body).ok(),
            _ => None,
        };
        let raft = match self.get(id, "/meshkit/leaders").await {
            Some((200, body)) => serde_json::from_str::<LeadershipView>(&body)
                .ok()
                .and_then(|v| v.raft)
                .map(|r| (r.leader, r.term)),
            _ => None,
        };
        let member_gauges = match self.get(id, "/metrics").await {
            Some((200, body)) => body
                .lines()
                .filter(|l| l.starts_with("mesh_gossip_members{"))
                .filter_map(|l| l.rsplit_once(' '))
                .map(|(k, v)| (k.to_owned(), v.to_owned()))
                .collect(),
            _ => BTreeMap::new(),
        };
        let (members, total) = peers.map_or((BTreeMap::new(), 0), |p| {
            let members = p
                .peers
                .into_iter()
                .map(|m| (m.id, (m.state, m.incarnation, m.metadata)))
                .collect();
            (members, p.total)
        });
        NodeState {
            healthy,
            members,
            total,
            raft,
            member_gauges,
        }
    }

    /// Every member's state.
    pub async fn states(&self) -> BTreeMap<u64, NodeState> {
        let mut out = BTreeMap::new();
        for &id in self.daemons.keys() {
            out.insert(id, self.state(id).await);
        }
        out
    }

    /// Whether the cluster is as an undisturbed one is: every node healthy, holding exactly
    /// the members alive, and the voters agreeing on a Raft leader and term.
    async fn settled(&self) -> bool {
        let states = self.states().await;
        let raft: Vec<_> = states.values().map(|s| s.raft).collect();
        states.values().all(|s| {
            s.healthy
                && s.total == MEMBERS as usize
                && s.members.values().all(|(state, _, _)| state == "alive")
        }) && raft.iter().all(|r| r.is_some_and(|(l, _)| l.is_some()))
            && raft.windows(2).all(|w| w[0] == w[1])
    }

    /// Waits until the cluster has settled and two samples a second apart agree, and returns
    /// that state: the baseline an attack must not change.
    pub async fn baseline(&self) -> BTreeMap<u64, NodeState> {
        let mut previous = None;
        for _ in 0..20 {
            let settled = eventually(FORM_LIMIT, || self.settled()).await;
            assert!(
                settled,
                "the cluster is not settled: {}",
                self.describe().await
            );
            let now = self.states().await;
            if previous.as_ref() == Some(&now) {
                return now;
            }
            previous = Some(now);
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
        panic!(
            "the cluster's state keeps changing: {}",
            self.describe().await
        );
    }

    /// Samples the cluster every 200 ms for [`WATCH_AFTER`] and fails at the first sample
    /// that differs from `baseline` (health, members with their states, incarnations and
    /// metadata, member count, Raft leader and term), naming `attack` and the difference.
    pub async fn assert_unchanged(&self, attack: &str, baseline: &BTreeMap<u64, NodeState>) {
        let deadline = tokio::time::Instant::now() + WATCH_AFTER;
        let max_samples = WATCH_AFTER.as_millis() / 200 + 1;
        for _ in 0..max_samples {
            let now = self.states().await;
            for (id, before) in baseline {
                let after = &now[id];
                assert!(
                    after == before,
                    "after {attack}: node-{id} changed\n  before: {before}\n  after:  {after}"
                );
            }
            if tokio::time::Instant::now() >= deadline {
                break;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// After a phantom attack: for [`WATCH_AFTER`], every node stays healthy with the same Raft
    /// leader and term and the same members `1..=`[`MEMBERS`] (states, incarnations, metadata),
    /// and holds at most `admitted` members besides them (what one sender may introduce); then,
    /// within `forget_limit`, every node holds exactly the members again.
    pub async fn assert_phantoms_bounded(
        &self,
        baseline: &BTreeMap<u64, NodeState>,
        admitted: usize,
        forget_limit: Duration,
    ) {
        let real = |s: &NodeState| -> Vec<_> {
            s.members
                .iter()
                .filter(|(id, _)| **id <= MEMBERS)
                .map(|(id, m)| (*id, m.clone()))
                .collect()
        };
        let deadline = tokio::time::Instant::now() + WATCH_AFTER;
        for _ in 0..WATCH_AFTER.as_millis() / 200 + 1 {
            let now = self.states().await;
            for (id, before) in baseline {
                let after = &now[id];
                assert!(
                    after.healthy
                        && after.raft == before.raft
                        && real(after) == real(before)
                        && after.total <= MEMBERS as usize + admitted,
                    "after phantoms: node-{id} changed beyond the admission bound of {admitted}\n  \
                     before: {before}\n  after:  {after}"
                );
            }
            if tokio::time::Instant::now() >= deadline {
                break;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        let forgotten = eventually(forget_limit, || async {
            self.states()
                .await
                .values()
                .all(|s| s.total == MEMBERS as usize)
        })
        .await;
        assert!(
            forgotten,
            "phantoms still held {forget_limit:?} after the attack: {}",
            self.describe().await
        );
        self.assert_unchanged("phantoms, once forgotten", baseline)
            .await;
    }

    /// Every node's state, one line each, for failure messages.
    pub async fn describe(&self) -> String {
        let mut out = String::new();
        for (id, s) in self.states().await {
            out.push_str(&format!("\n  node-{id}: {s}"));
        }
        out
    }
}
