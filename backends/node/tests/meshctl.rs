//! `meshctl` as an operator runs it: the real binary against three in-process nodes with
//! leases, through their real control ports (HTTP/3, falling back to HTTP/2), with the address
//! and credentials taken from the environment (`MESHCTL_ADDR`, `MESHCTL_CA`, `MESHCTL_TOKEN`).
//! Transfer, drain and resume print one readable line (the node's JSON with `--json`), the
//! transfer carries its JSON content type (it was refused with 415 without it), `peers list`
//! filters by state and metadata, and an empty shard list says so. Every wait is bounded.

mod common;

use std::process::{Command, Output};
use std::time::Duration;

use common::{
    TempDir, eventually, global_control_holders, single_global_control_holder, start_cluster_with,
};
use meshkit_node::node::RunningNode;
use meshkit_node::scope::Scope;

/// Voters 1-3, all contending for `global-control`; 50 ms Raft ticks.
const LEADERSHIP: &str = "[leadership]\nvoters = [1, 2, 3]\ncampaign = [\"global-control\"]\n\
    ttl = \"3s\"\n\n[leadership.raft]\ntick_interval = \"50ms\"\n";
const LIMIT: Duration = Duration::from_secs(20);

/// Runs `meshctl args` against `node` with an operator token, everything from the environment.
async fn meshctl(dir: &TempDir, node: &RunningNode, args: &[&str]) -> Output {
    let token = common::token(dir.path(), "meshctl-test", Scope::Operate);
    let mut command = Command::new(env!("CARGO_BIN_EXE_meshctl"));
    command
        .args(args)
        .env("MESHCTL_ADDR", node.control_addr().unwrap().to_string())
        .env("MESHCTL_CA", dir.path().join("ca.pem"))
        .env("MESHCTL_TOKEN", token)
        .env("MESHCTL_STATE", dir.path().join("meshctl-state.json"));
    tokio::task::spawn_blocking(move || command.output().expect("meshctl runs"))
        .await
        .unwrap()
}

fn stdout(out: &Output) -> String {
    assert!(
        out.status.success(),
        "meshctl failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn operators_transfer_drain_resume_and_filter_from_the_environment() {
    let dir = TempDir::new("meshctl");
    let nodes = start_cluster_with(dir.path(), 3, LEADERSHIP).await;
    let first = single_global_control_holder(&nodes, LIMIT).await;
    let holder = nodes.iter().find(|n| n.id().get() == first).unwrap();
    let target = nodes.iter().find(|n| n.id().get() != first).unwrap();

    // peers list: the state filter goes to the node, --meta filters here.
    let all_alive = eventually(LIMIT, || async {
        let out = meshctl(&dir, holder, &["peers", "list", "--state", "alive"]).await;
        out.status.success() && String::from_utf8_lossy(&out.stdout).lines().count() == 4
    })
    .await;
    if !all_alive {
        let out = meshctl(&dir, holder, &["peers", "list", "--state", "alive"]).await;
        panic!(
            "three alive members listed (and a header): {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    // health asks every member at the control address it publishes.
    // The report checked is the healthy one: asking again could catch a renewal or a probe in
    // flight on a loaded machine.
    let last = std::sync::Mutex::new(None);
    let healthy = eventually(LIMIT, || async {
        let out = meshctl(&dir, holder, &["health"]).await;
        let ok = out.status.success();
        *last.lock().unwrap() = Some(out);
        ok
    })
    .await;
    let report = last
        .into_inner()
        .unwrap()
        .expect("health ran at least once");
    let text = String::from_utf8_lossy(&report.stdout);
    assert!(
        healthy,
        "never healthy: {text}{}",
        String::from_utf8_lossy(&report.stderr)
    );
    assert!(
        text.contains("healthy: 3 members listed, 3 ready"),
        "{text}"
    );
    assert!(text.contains("3 of 3 voters agree (quorum 2)"), "{text}");
    assert!(
        text.contains(&format!("lease: global-control held by node {first}")),
        "{text}"
    );
    let versions = stdout(&meshctl(&dir, holder, &["versions"]).await);
    assert!(
        versions.contains(&format!(
            "software   {:<16} {:>8}",
            env!("CARGO_PKG_VERSION"),
            3
        )),
        "{versions}"
    );
    let clusters = stdout(&meshctl(&dir, holder, &["clusters", "--json"]).await);
    let clusters: serde_json::Value = serde_json::from_str(&clusters).expect("JSON");
    assert_eq!(clusters["clusters"][0]["states"]["alive"], 3, "{clusters}");

    let none = stdout(&meshctl(&dir, holder, &["peers", "list", "--state", "dead"]).await);
    assert!(none.contains("knows no member that matches"), "{none}");
    let json = stdout(&meshctl(&dir, holder, &["peers", "list", "--json"]).await);
    let peers: serde_json::Value = serde_json::from_str(&json).expect("JSON with --json");
    assert_eq!(peers["total"], 3, "{peers}");
    let addr = peers["peers"][0]["metadata"]["addr"]
        .as_str()
        .expect("members publish their addr")
        .to_owned();
    let table = stdout(
        &meshctl(
            &dir,
            holder,
            &["peers", "list", "--meta", &format!("addr={addr}")],
        )
        .await,
    );
    assert_eq!(
        table.lines().count(),
        2,
        "one member has that addr: {table}"
    );
    assert!(
        table.contains(&format!("addr={addr}")),
        "values shown: {table}"
    );
    let bad = meshctl(&dir, holder, &["peers", "list", "--meta", "novalue"]).await;
    assert!(!bad.status.success());
    assert!(
        String::from_utf8_lossy(&bad.stderr).contains("is not KEY=VALUE"),
        "{}",
        String::from_utf8_lossy(&bad.stderr)
    );

    // transfer: a JSON body with its content type; one readable line.
    let to = target.id().get().to_string();
    let moved = stdout(
        &meshctl(
            &dir,
            holder,
            &[
                "leaders",
                "transfer",
                "--scope",
                "global-control",
                "--to",
                &to,
            ],
        )
        .await,
    );
    assert!(
        moved.starts_with(&format!(
            "global-control moved to node {to} with fencing token "
        )),
        "{moved}"
    );
    let moved_ok = eventually(LIMIT, || async {
        global_control_holders(&nodes).await == [target.id().get()]
    })
    .await;
    assert!(
        moved_ok,
        "holders after the transfer: {:?}",
        global_control_holders(&nodes).await
    );
    // The old holder no longer holds it: the error names the node's answer.
    let again = meshctl(
        &dir,
        holder,
        &[
            "leaders",
            "transfer",
            "--scope",
            "global-control",
            "--to",
            &to,
        ],
    )
    .await;
    assert!(!again.status.success());
    assert!(
        String::from_utf8_lossy(&again.stderr).contains("HTTP 4"),
        "{}",
        String::from_utf8_lossy(&again.stderr)
    );

    // drain --json is the node's answer; resume is one line.
    let drained = stdout(&meshctl(&dir, target, &["drain", "--json"]).await);
    let drained: serde_json::Value = serde_json::from_str(&drained).expect("JSON with --json");
    assert_eq!(drained["released"], serde_json::json!(["global-control"]));
    // A drained member is not ready: health says which and exits 1.
    let unhealthy = meshctl(&dir, holder, &["health"]).await;
    assert!(!unhealthy.status.success());
    let text = String::from_utf8_lossy(&unhealthy.stdout);
    assert!(
        text.contains(&format!("member {to} is not ready")),
        "{text}"
    );
    let resumed = stdout(&meshctl(&dir, target, &["resume"]).await);
    assert_eq!(
        resumed.trim(),
        format!("node {to} resumed: it contends again for its configured scopes")
    );
    let again = stdout(&meshctl(&dir, target, &["resume"]).await);
    assert!(
        again.contains("was not drained: nothing changed"),
        "{again}"
    );

    // No shard leases: said in words, not an empty table.
    let shards = stdout(&meshctl(&dir, &nodes[0], &["shards", "list"]).await);
    assert!(shards.contains("holds no shard lease"), "{shards}");

    for n in nodes {
        n.stop().await;
    }
}
