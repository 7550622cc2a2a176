//! Real nodes in one process: QUIC with mutual TLS on 127.0.0.1, certificates from rcgen,
//! ports chosen by the OS. Every wait is a bounded poll.

mod common;

use std::time::Duration;

use common::{MeshctlAs, TempDir, client, eventually, start_cluster, write_config};
use meshkit::NodeId;
use meshkit::membership::MemberState;
use meshkit_node::api::json::PeersResponse;
use meshkit_node::certs::DevCa;
use meshkit_node::client::{Client, ClientConfig, Protocols};
use meshkit_node::config::NodeConfig;
use meshkit_node::node::{self, RunningNode};
use meshkit_node::permission::Permission;

const FORM_LIMIT: Duration = Duration::from_secs(10);
const DETECT_LIMIT: Duration = Duration::from_secs(15);

async fn alive_counts(nodes: &[RunningNode]) -> Vec<usize> {
    let mut counts = Vec::new();
    for n in nodes {
        let snapshot = n.handle().snapshot().await.expect("driver running");
        counts.push(snapshot.count(MemberState::Alive));
    }
    counts
}

/// For each (node, other) pair: whether the node knows the other's published address.
async fn addresses(nodes: &[RunningNode]) -> Vec<bool> {
    let mut known = Vec::new();
    for n in nodes {
        let s = n.handle().snapshot().await.unwrap();
        for other in nodes {
            known.push(s.peer(other.id()).and_then(|p| p.addr) == Some(other.gossip_addr()));
        }
    }
    known
}

async fn wait_formed(nodes: &[RunningNode]) {
    let want = nodes.len();
    let formed = eventually(FORM_LIMIT, || async {
        alive_counts(nodes).await.iter().all(|&c| c == want)
    })
    .await;
    assert!(
        formed,
        "no single mesh within {FORM_LIMIT:?}: alive counts {:?}",
        alive_counts(nodes).await
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_nodes_form_one_mesh() {
    let dir = TempDir::new("form");
    let nodes = start_cluster(dir.path(), 3).await;
    wait_formed(&nodes).await;
    // Every node learns every other's published address. Metadata travels by gossip after the
    // member itself, so a node can count a member alive a moment before it knows its address.
    let learned = eventually(FORM_LIMIT, || async {
        addresses(&nodes).await.iter().all(|&k| k)
    })
    .await;
    assert!(
        learned,
        "addresses not learned: {:?}",
        addresses(&nodes).await
    );
    for n in nodes {
        n.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stopped_node_is_declared_dead() {
    let dir = TempDir::new("dead");
    let mut nodes = start_cluster(dir.path(), 3).await;
    wait_formed(&nodes).await;
    let stopped = nodes.pop().unwrap();
    let gone = stopped.id();
    stopped.stop().await;
    let detected = eventually(DETECT_LIMIT, || async {
        for n in &nodes {
            let s = n.handle().snapshot().await.unwrap();
            if s.peer(gone).map(|p| p.state) != Some(MemberState::Dead) {
                return false;
            }
        }
        true
    })
    .await;
    assert!(detected, "{gone} not declared dead within {DETECT_LIMIT:?}");
    for n in nodes {
        n.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn node_with_a_foreign_certificate_is_refused() {
    let dir = TempDir::new("rogue");
    let nodes = start_cluster(dir.path(), 3).await;
    wait_formed(&nodes).await;
    // Node 4 trusts the mesh's CA, but its own certificate comes from another CA.
    let rogue_ca = DevCa::generate("rogue CA").unwrap();
    let issued = rogue_ca.issue_node(NodeId::new(4)).unwrap();
    let (cert, key) = (dir.path().join("rogue.pem"), dir.path().join("rogue.key"));
    std::fs::write(&cert, issued.cert_pem).unwrap();
    std::fs::write(&key, issued.key_pem).unwrap();
    let seeds = [(1, nodes[0].gossip_addr())];
    let path = write_config(
        dir.path(),
        4,
        &seeds,
        &cert,
        &key,
        &dir.path().join("ca.pem"),
    );
    let rogue = node::start(&NodeConfig::load(&path).unwrap())
        .await
        .unwrap();

    let refused = eventually(FORM_LIMIT, || async {
        let s = nodes[0].handle().snapshot().await.unwrap();
        s.transport.handshakes_refused >= 1
    })
    .await;
    assert!(refused, "node-1 never refused the foreign certificate");
    // Let gossip spread anything node-1 might have let through: wait until every node has
    // started two more probes (two probe periods, dozens of gossip rounds) since the refusal,
    // a signal each node gives, rather than sleeping for a guessed time.
    let mut probes_then = Vec::new();
    for n in &nodes {
        probes_then.push(n.handle().snapshot().await.unwrap().stats.probes);
    }
    let probed = eventually(FORM_LIMIT, || async {
        for (n, then) in nodes.iter().zip(&probes_then) {
            if n.handle().snapshot().await.unwrap().stats.probes < then + 2 {
                return false;
            }
        }
        true
    })
    .await;
    assert!(probed, "a node stopped probing within {FORM_LIMIT:?}");
    for n in &nodes {
        let s = n.handle().snapshot().await.unwrap();
        assert!(s.peer(NodeId::new(4)).is_none(), "{} lists node-4", n.id());
    }
    let s = rogue.handle().snapshot().await.unwrap();
    assert_eq!(
        s.count(MemberState::Alive),
        1,
        "node-4 joined: {:?}",
        s.peers
    );
    rogue.stop().await;
    for n in nodes {
        n.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn control_endpoint_answers() {
    let dir = TempDir::new("control");
    let nodes = start_cluster(dir.path(), 3).await;
    wait_formed(&nodes).await;
    let addr = nodes[1].control_addr().unwrap().to_string();

    // No client certificate: TLS lets the client in, authorization decides.
    let anonymous = ClientConfig::new(&dir.path().join("ca.pem")).unwrap();
    let health = Client::new(&anonymous)
        .unwrap()
        .get(&addr, "/healthz")
        .await
        .unwrap();
    assert_eq!((health.status, health.body.trim()), (200, "ok"));

    // Reads need mesh.observe: without a credential the node refuses them.
    let refused = Client::new(&anonymous)
        .unwrap()
        .get(&addr, "/meshkit/peers")
        .await
        .unwrap();
    assert_eq!(refused.status, 401, "{}", refused.body);
    let token = common::token(dir.path(), "test-observer", Permission::Observe);
    let with_token = Client::new(&anonymous.with_token(&token).unwrap()).unwrap();
    // A node certificate observes too.
    let node_cert = client(dir.path(), Protocols::H3ThenTcp);
    assert_eq!(
        node_cert.get(&addr, "/meshkit/peers").await.unwrap().status,
        200
    );

    // A loaded machine can make a member briefly suspect: poll until the answers agree.
    let get = |path: &'static str| {
        let (addr, client) = (addr.clone(), &with_token);
        async move { client.get(&addr, path).await.unwrap() }
    };
    let agreed = eventually(FORM_LIMIT, || async {
        let peers = get("/meshkit/peers").await;
        let metrics = get("/metrics").await;
        let Ok(peers) = serde_json::from_str::<PeersResponse>(&peers.body) else {
            return false;
        };
        peers.peers.iter().all(|p| p.state == "alive")
            && metrics
                .body
                .contains("mesh_gossip_members{state=\"alive\"} 3\n")
    })
    .await;
    assert!(agreed, "peers and metrics never showed three alive members");

    let peers = get("/meshkit/peers").await;
    assert_eq!(peers.status, 200);
    let peers: PeersResponse = serde_json::from_str(&peers.body).unwrap();
    assert_eq!(peers.local, 2);
    assert_eq!(
        peers.peers.iter().map(|p| p.id).collect::<Vec<_>>(),
        [1, 2, 3]
    );
    assert!(
        peers
            .peers
            .iter()
            .all(|p| p.metadata.contains_key("addr") && p.addr.is_some())
    );

    let metrics = get("/metrics").await;
    assert_eq!(metrics.status, 200);
    assert!(
        metrics
            .body
            .contains("# TYPE mesh_gossip_probes_total counter\n")
    );
    assert!(
        metrics
            .body
            .contains("mesh_transport_connections_opened_total ")
    );

    // The operator's view through the real CLI.
    let token_file = dir.path().join("observer.token");
    std::fs::write(&token_file, &token).unwrap();
    let mut command = common::meshctl(
        dir.path(),
        &addr,
        MeshctlAs::TokenFile(&token_file),
        ["peers", "list"],
    );
    let out = tokio::task::spawn_blocking(move || command.output().unwrap())
        .await
        .unwrap();
    let table = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(table.starts_with("ID "), "{table}");
    assert_eq!(table.lines().count(), 4, "{table}");
    assert!(table.lines().any(|l| l.starts_with("2* ")), "{table}");
    for n in nodes {
        n.stop().await;
    }
}
