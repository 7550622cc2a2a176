//! Chaos on a real node started in process (`[chaos]` in its configuration, experiments through
//! its `NodeHandle`, as the control endpoints call it): a transport downgrade makes the control
//! listener refuse HTTP/3 (new connections refused, established ones closed), so the client
//! falls back to HTTP/2 and counts it; its revert brings HTTP/3 back.

mod common;

use common::{TempDir, client, start_cluster_with};
use meshkit::diag::fault::{FaultKind, FaultPlan, Selector, resolve};
use meshkit::shard::ShardId;
use meshkit::{Duration, NodeId};
use meshkit_node::api::alpn::HttpProtocol;
use meshkit_node::client::Protocols;
use meshkit_node::runtime::chaos_host::ExperimentRef;

const CHAOS: &str =
    "[chaos]\nenabled = true\nallowed_kinds = [\"transport-downgrade\"]\nmax_duration = \"1m\"\n";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_transport_downgrade_makes_clients_fall_back_to_h2_until_it_is_reverted() {
    let dir = TempDir::new("chaos-downgrade");
    let nodes = start_cluster_with(dir.path(), 1, CHAOS).await;
    let server = nodes[0].control_addr().unwrap().to_string();
    let handle = nodes[0].handle();
    let before = client(dir.path(), Protocols::H3ThenTcp);
    assert_eq!(
        before.get(&server, "/healthz").await.unwrap().protocol,
        HttpProtocol::H3
    );
    // A connection established before the downgrade: it is closed by it, not kept.
    let established = client(dir.path(), Protocols::H3Only);
    assert_eq!(
        established.get(&server, "/healthz").await.unwrap().protocol,
        HttpProtocol::H3
    );

    let plan = FaultPlan::new(
        FaultKind::TransportDowngrade {},
        Selector::Indices(vec![0]),
        Duration::from_secs(60),
    )
    .unwrap();
    let radius = resolve(&plan, &handle.chaos_view().await.unwrap()).unwrap();
    let id = ExperimentRef {
        origin: NodeId::new(1),
        serial: 1,
    };
    let status = handle.chaos_apply(id, plan, radius).await.unwrap();
    assert_eq!(
        (status.phase.as_str(), status.applied_here),
        ("active", true)
    );

    // A fresh client (nothing remembered) is refused over HTTP/3 and falls back.
    let during = client(dir.path(), Protocols::H3ThenTcp);
    let answer = during.get(&server, "/healthz").await.unwrap();
    assert_eq!((answer.status, answer.protocol), (200, HttpProtocol::H2));
    let stats = during.stats();
    assert_eq!(
        stats.fallbacks.iter().map(|f| f.fallbacks).sum::<u64>(),
        1,
        "{stats:?}"
    );
    // The connection open before it is closed within the server's check period (250 ms), and
    // a new one refused: HTTP/3 only fails.
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert!(
        established.get(&server, "/healthz").await.is_err(),
        "an HTTP/3 connection established before the downgrade still answers"
    );
    // HTTP/3 only: refused outright.
    assert!(
        client(dir.path(), Protocols::H3Only)
            .get(&server, "/healthz")
            .await
            .is_err()
    );
    let metrics = client(dir.path(), Protocols::TcpOnly)
        .get(&server, "/metrics")
        .await
        .unwrap()
        .body;
    assert!(
        metrics.contains("mesh_chaos_experiments_active{kind=\"transport-downgrade\"} 1\n"),
        "{metrics}"
    );

    // Abort: HTTP/3 is served again.
    let ended = handle.chaos_abort(id).await.unwrap();
    assert_eq!(ended.end_reason.as_deref(), Some("aborted"));
    let after = client(dir.path(), Protocols::H3Only);
    assert_eq!(
        after.get(&server, "/healthz").await.unwrap().protocol,
        HttpProtocol::H3
    );
    for n in nodes {
        n.stop().await;
    }
}

/// A `shard-owner` selector resolves on a voter to the node holding the shard's lease
/// (`shard/orders/0`), read from the same lease table the voter serves.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_shard_owner_selector_resolves_to_the_shards_lease_holder() {
    let dir = TempDir::new("chaos-shard-owner");
    let extra = "[leadership]\nvoters = [1, 2, 3]\nttl = \"3s\"\n\n\
        [leadership.raft]\ntick_interval = \"50ms\"\n\n\
        [shards]\nnamespaces = { orders = 4 }\nttl = \"3s\"\n\n\
        [chaos]\nenabled = true\nallowed_kinds = [\"pause\"]\n";
    let nodes = start_cluster_with(dir.path(), 3, extra).await;
    let shard: ShardId = "shard/orders/0".parse().unwrap();
    let plan = FaultPlan::new(
        FaultKind::Pause {},
        Selector::ShardOwner(shard.clone()),
        Duration::from_secs(5),
    )
    .unwrap();
    let handle = nodes[0].handle();
    let mut found = None;
    // Bounded: 30 s for the voters to elect a leader and the coordinator to place the shards.
    for _ in 0..300 {
        let view = handle.chaos_view().await.unwrap();
        if let Ok(radius) = resolve(&plan, &view) {
            found = Some(radius);
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let radius = found.expect("shard/orders/0 had no owner in node 1's chaos view within 30 s");
    let leadership = handle.snapshot().await.unwrap().leadership.unwrap().0;
    let holder = leadership
        .table
        .iter()
        .find(|l| l.scope == shard.to_string())
        .map(|l| l.holder)
        .expect("the shard's lease in node 1's table");
    assert_eq!(
        radius.nodes.iter().map(|n| n.get()).collect::<Vec<_>>(),
        [holder]
    );
    for n in nodes {
        n.stop().await;
    }
}
