//! The `/metrics` answer of real nodes running leadership, fetched over their control endpoints
//! and checked by Prometheus's own parser and naming lints: `promtool check metrics` (Debian's
//! `prometheus` package, which `scripts/test.sh` installs when it runs as root).
//!
//! Both tests need promtool, so they are ignored by default (the runner reports them skipped,
//! not passed); `scripts/test.sh` installs promtool and runs them with `--run-ignored only`
//! (see its "tests that need an outside tool" step), where a missing promtool fails them.

mod common;

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use common::{TempDir, client, eventually, start_cluster_with};
use meshkit_node::client::{Client, Protocols};
use meshkit_node::node::RunningNode;

/// Three voters contending for `global-control`, with fast Raft ticks so that a holder exists
/// within a second or two, and taking 8 shards (so that the `mesh_shard_*` families are there).
const LEADERSHIP: &str = "[leadership]\nvoters = [1, 2, 3]\ncampaign = [\"global-control\"]\n\
    ttl = \"1s\"\n\n[leadership.raft]\ntick_interval = \"50ms\"\n\n\
    [shards]\nnamespaces = { orders = 8 }\nttl = \"1s\"\n";

/// How long the cluster may take to elect a holder and see all three members alive.
const SETTLE_LIMIT: Duration = Duration::from_secs(20);
/// How long one `promtool check metrics` may take.
const PROMTOOL_LIMIT: Duration = Duration::from_secs(30);

/// The promtool to run; a test that needs it fails when it does not run.
fn promtool() -> &'static str {
    common::tool("promtool", "prometheus")
}

/// Runs `promtool check metrics` on `text`; its exit status and what it printed. Bounded by
/// [`PROMTOOL_LIMIT`] (the process is killed past it).
fn check_metrics(promtool: &str, dir: &Path, text: &str) -> (bool, String) {
    let input = dir.join("metrics.txt");
    std::fs::write(&input, text).expect("write the metrics");
    let mut command = Command::new(promtool);
    command
        .args(["check", "metrics"])
        .stdin(std::fs::File::open(&input).expect("open the metrics"));
    common::run_bounded(command, PROMTOOL_LIMIT)
}

/// `GET /metrics` from `node`'s control endpoint over the network (HTTP/3, falling back to
/// HTTP/2 over TLS), as node-1's certificate: a node identity may observe.
async fn metrics(client: &Client, node: &RunningNode) -> String {
    let addr = node.control_addr().expect("a control endpoint").to_string();
    let response = client
        .get(&addr, "/metrics")
        .await
        .unwrap_or_else(|e| panic!("GET /metrics from node-{}: {e}", node.id()));
    assert_eq!(response.status, 200, "GET /metrics: {}", response.body);
    response.body
}

/// Whether some node holds `global-control`, a shard coordinator acts with every node in its
/// pool, and every node sees three members alive.
async fn settled(nodes: &[RunningNode]) -> bool {
    let mut holders = 0;
    let mut coordinators = 0;
    for n in nodes {
        let Ok(snapshot) = n.handle().snapshot().await else {
            return false;
        };
        if snapshot.count(meshkit::membership::MemberState::Alive) != nodes.len() {
            return false;
        }
        if let Ok(Some(view)) = n.handle().leadership().await {
            coordinators += usize::from(
                view.shards
                    .as_ref()
                    .and_then(|s| s.coordinator.as_ref())
                    .is_some_and(|c| c.members.len() == nodes.len() && c.bounds.is_some()),
            );
            holders += view
                .held
                .iter()
                .filter(|h| h.scope == "global-control" && !h.transferring && h.expires_in_ms > 0)
                .count();
        }
    }
    holders == 1 && coordinators == 1
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs promtool (Debian's prometheus package); scripts/test.sh runs it"]
async fn metrics_of_nodes_with_leadership_pass_promtool_check_metrics() {
    let promtool = promtool();
    let dir = TempDir::new("promtool");
    let nodes = start_cluster_with(dir.path(), 3, LEADERSHIP).await;
    let ok = eventually(SETTLE_LIMIT, || settled(&nodes)).await;
    assert!(
        ok,
        "no single holder of global-control with three alive members within {SETTLE_LIMIT:?}"
    );

    // The families of every part of the node are there, so promtool sees them all: membership,
    // transport, the Raft voter and the lease table (every node is a voter), the audit log, the
    // control server, the shards (the coordinator's families on the Raft leader only).
    let client = client(dir.path(), Protocols::H3ThenTcp);
    let mut holder_seen = false;
    let mut coordinator_seen = false;
    for node in &nodes {
        let text = metrics(&client, node).await;
        for family in [
            "mesh_gossip_members{state=\"alive\"} 3",
            "mesh_transport_connections_opened_total ",
            "mesh_leadership_raft_term ",
            "mesh_leadership_holder{scope=\"global-control\"} ",
            "mesh_leadership_leases_held ",
            "mesh_control_audit_records_total ",
            "mesh_transport_control_requests_total{protocol=",
            "mesh_shard_configured 8\n",
            "mesh_shard_owned ",
            "mesh_shard_moves_started_total ",
        ] {
            assert!(
                text.contains(family),
                "node-{}: no `{family}` in\n{text}",
                node.id()
            );
        }
        // The holder of global-control counts it among its leases (with its shards).
        let holds_control =
            node.handle().leadership().await.is_ok_and(|v| {
                v.is_some_and(|v| v.held.iter().any(|h| h.scope == "global-control"))
            });
        let leases_held = text
            .lines()
            .find_map(|l| l.strip_prefix("mesh_leadership_leases_held "))
            .and_then(|n| n.trim().parse::<u64>().ok());
        holder_seen |= holds_control && leases_held.is_some_and(|n| n >= 1);
        coordinator_seen |= text.contains("mesh_shard_coordinating 1\n")
            && text.contains("mesh_shard_load_bound{bound=\"upper\"} ")
            && text.contains("mesh_shard_pool_members{role=\"eligible\"} 3\n");

        let (passed, printed) = check_metrics(promtool, dir.path(), &text);
        assert!(
            passed && printed.trim().is_empty(),
            "promtool check metrics on node-{}'s /metrics (passed: {passed}):\n{printed}\n\
             --- the text checked:\n{text}",
            node.id()
        );
    }
    assert!(holder_seen, "no node reported the lease it holds");
    assert!(
        coordinator_seen,
        "no node reported the shard coordinator's families"
    );
    for n in nodes {
        n.stop().await;
    }
}

/// The check above can fail: promtool refuses a counter without `_total` and a sample outside
/// its family. (Guards against a promtool that accepts anything, such as a stub.)
#[test]
#[ignore = "needs promtool (Debian's prometheus package); scripts/test.sh runs it"]
fn promtool_refuses_bad_metrics() {
    let promtool = promtool();
    let dir = TempDir::new("promtool-bad");
    let (passed, printed) = check_metrics(
        promtool,
        dir.path(),
        "# HELP mesh_gossip_probes Direct probes started.\n\
         # TYPE mesh_gossip_probes counter\nmesh_gossip_probes 3\n",
    );
    assert!(!passed, "promtool accepted a counter without _total");
    assert!(printed.contains("_total"), "{printed}");
}
