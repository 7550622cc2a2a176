//! Health probes on real `meshkitd` processes: three voters list their built-in probes healthy
//! in `GET /control/probes` (read across the mesh by `meshctl probes list --json`, which learns
//! the members from one node and asks each); a killed peer makes the survivors' `peers` probe
//! fail, naming it, while `quorum` stays healthy; a second killed peer makes node 1's `quorum`
//! fail. Every wait is bounded.

mod common;

use std::net::SocketAddr;
use std::path::Path;
use std::time::{Duration, Instant};

use common::daemon::{Daemon, start};
use common::{MeshctlAs, TempDir};
use serde_json::Value;

/// Fast probes: 200 ms interval (300 ms for the control listener's two), 150 ms timeout,
/// Failing after 3 failures.
const EXTRA: &str = "[leadership]\nvoters = [1, 2, 3]\n\n[leadership.raft]\ntick_interval = \"50ms\"\n\n\
    [probes]\ninterval = \"200ms\"\ncontrol_interval = \"300ms\"\ntimeout = \"150ms\"\n";
const BUILTINS: [&str; 6] = [
    "quorum",
    "raft-leader",
    "peers",
    "cert-expiry",
    "control-h3",
    "control-h2",
];
const LIMIT: Duration = Duration::from_secs(20);
const POLL: Duration = Duration::from_millis(200);

/// `meshctl probes list --json <more>` against `addr`, as an observer; the report if it ran.
fn probes_list(dir: &Path, addr: &str, token: &Path, more: &[&str]) -> Option<Value> {
    let mut args = vec!["probes", "list", "--json"];
    args.extend_from_slice(more);
    let out = common::meshctl(dir, addr, MeshctlAs::TokenFile(token), args)
        .output()
        .ok()?;
    if !out.status.success() {
        return None;
    }
    serde_json::from_slice(&out.stdout).ok()
}

/// The state of probe `name` on node `node` in a report.
fn state(report: &Value, node: u64, name: &str) -> Option<String> {
    report["hosts"]
        .as_array()?
        .iter()
        .find(|h| h["node"] == node && h["error"].is_null())?["probes"]
        .as_array()?
        .iter()
        .find(|p| p["name"] == name)
        .and_then(|p| p["state"].as_str().map(str::to_owned))
}

/// Polls `check` every 200 ms until it gives a value or `limit` passes.
fn eventually<T>(limit: Duration, mut check: impl FnMut() -> Option<T>) -> Option<T> {
    let deadline = Instant::now() + limit;
    for _ in 0..=(limit.as_millis() / POLL.as_millis()) {
        if let Some(value) = check() {
            return Some(value);
        }
        if Instant::now() >= deadline {
            break;
        }
        std::thread::sleep(POLL);
    }
    None
}

#[test]
fn builtins_are_healthy_and_a_killed_peer_fails_peers_then_quorum() {
    let dir = TempDir::new("probes");
    let (ca, files) = meshkit_node::certs::write_dev_certs(dir.path(), 3).unwrap();
    let token = common::observer_token_file(dir.path());
    let mut daemons: Vec<Daemon> = Vec::new();
    for f in &files {
        let seeds: Vec<(u64, SocketAddr)> = daemons
            .first()
            .map(|d| vec![(1, d.gossip)])
            .unwrap_or_default();
        let path =
            common::write_config_with(dir.path(), f.id.get(), &seeds, &f.cert, &f.key, &ca, EXTRA);
        daemons.push(start(&path));
    }
    let first = daemons[0].control.clone();

    // Every member lists the six built-ins, all healthy, learned from node 1 and asked each.
    let mut last = None;
    let healthy = eventually(LIMIT, || {
        let report = probes_list(dir.path(), &first, &token, &[])?;
        let all = (1..=3).all(|node| {
            BUILTINS
                .iter()
                .all(|name| state(&report, node, name).as_deref() == Some("healthy"))
        });
        last = Some(report.clone());
        all.then_some(report)
    });
    let report = healthy.unwrap_or_else(|| panic!("never all healthy: {last:#?}"));
    assert_eq!(report["listed_by"], 1, "{report:#}");
    let probe = &report["hosts"][0]["probes"][0];
    for key in [
        "kind",
        "tags",
        "latency_p50_ms",
        "latency_p99_ms",
        "consecutive_failures",
        "next_due_ms",
        "results",
    ] {
        assert!(!probe[key].is_null(), "{key} missing: {probe:#}");
    }
    // The control listener's two run at `control_interval`, the others at `interval`.
    for p in report["hosts"][0]["probes"].as_array().unwrap() {
        let expected = if p["name"].as_str().unwrap().starts_with("control-") {
            300
        } else {
            200
        };
        assert_eq!(p["interval_ms"], expected, "{p:#}");
    }
    // The tag filter goes to every node: the built-ins carry source=node, nothing cluster=x.
    let tagged = probes_list(dir.path(), &first, &token, &["--tag", "source=node"]).unwrap();
    assert_eq!(tagged["hosts"][2]["probes"].as_array().unwrap().len(), 6);
    let none = probes_list(dir.path(), &first, &token, &["--tag", "cluster=x"]).unwrap();
    assert!(
        none["hosts"]
            .as_array()
            .unwrap()
            .iter()
            .all(|h| h["probes"].as_array().unwrap().is_empty()),
        "{none:#}"
    );

    // Node 3 killed: the survivors' peers probe fails naming it; two voters of three keep the
    // quorum. Two --addr: exactly those asked.
    daemons[2].kill();
    let second = daemons[1].control.clone();
    let both = ["--addr", first.as_str(), "--addr", second.as_str()];
    let mut last = None;
    let failing = eventually(LIMIT, || {
        let report = probes_list(dir.path(), &first, &token, &both)?;
        let ok = (1..=2).all(|n| state(&report, n, "peers").as_deref() == Some("failing"));
        last = Some(report.clone());
        ok.then_some(report)
    });
    let report = failing.unwrap_or_else(|| panic!("peers never failing: {last:#?}"));
    assert_eq!(report["hosts"].as_array().unwrap().len(), 2, "{report:#}");
    assert!(report["listed_by"].is_null(), "{report:#}");
    let peers = report["hosts"][0]["probes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == "peers")
        .unwrap();
    let error = peers["last_error"].as_str().unwrap_or_default();
    assert!(error.contains("node-3"), "{peers:#}");
    assert_eq!(state(&report, 1, "quorum").as_deref(), Some("healthy"));

    // Node 2 killed too: one voter of three, no quorum in node 1's view.
    daemons[1].kill();
    let quorum_lost = eventually(LIMIT, || {
        let report = probes_list(dir.path(), &first, &token, &["--addr", first.as_str()])?;
        (state(&report, 1, "quorum").as_deref() == Some("failing")).then_some(())
    });
    assert!(quorum_lost.is_some(), "quorum never failing on node 1");
}
