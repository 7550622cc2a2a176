//! The agent against real nodes (in-process, real QUIC/TLS and tokens): API and authorization
//! probes pass against a healthy mesh, a stopped node makes its probes fail and turn Failing,
//! and credentials that can operate keep the agent from starting.

mod agent_support;

use std::time::Duration;

use agent_support::{http, metrics_until, probe, series, write_probes_toml};
use meshkit_probe::agent::{self, AgentError};
use meshkit_testkit::fixtures::{TempDir, observer_token_file, start_cluster, token};

/// The bound on every wait: runs are every 300 ms, Failing takes 2 failures.
const LIMIT: Duration = Duration::from_secs(30);

fn group(targets: &[String]) -> String {
    let list: Vec<String> = targets.iter().map(|t| format!("{t:?}")).collect();
    format!(
        "[defaults]\ninterval = \"300ms\"\ntimeout = \"300ms\"\nfailure_threshold = 2\n\
         success_threshold = 1\n\n[[group]]\nname = \"core\"\ncluster = \"test\"\n\
         targets = [{}]\nprobes = [\"api\", \"authz\"]\n[group.api]\n\
         endpoints = [\"peers\", \"clusters\", \"versions\"]\n",
        list.join(", ")
    )
}

/// Every probe of a 3-node mesh passes (probe_success 1, state healthy, the HTTP version
/// recorded); stopping node 2 makes its probes fail (probe_success 0) and Failing, while the
/// others stay healthy.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn probes_pass_on_a_healthy_mesh_and_fail_when_a_node_stops() {
    let dir = TempDir::new("probe-agent-api");
    let mut nodes = start_cluster(dir.path(), 3).await;
    let targets: Vec<String> = nodes
        .iter()
        .map(|n| n.control_addr().expect("a control listener").to_string())
        .collect();
    let token_file = observer_token_file(dir.path());
    let path = write_probes_toml(dir.path(), &token_file, "", &group(&targets));
    let agent = agent::start(&path).await.expect("the agent starts");
    let addr = agent.listen_addr();
    let names: Vec<String> = ["api-peers", "api-clusters", "api-versions", "authz"]
        .iter()
        .flat_map(|p| targets.iter().map(move |t| format!("core/{p}@{t}")))
        .collect();
    assert_eq!(agent.probes().await.unwrap().len(), names.len());

    let (ok, text) = metrics_until(addr, LIMIT, |text| {
        names.iter().all(|n| {
            series(text, "probe_success", &[&probe(n)]) == Some(1.0)
                && series(text, "mesh_probe_state", &[&probe(n), "state=\"healthy\""]) == Some(1.0)
        })
    })
    .await;
    assert!(ok, "not every probe healthy within {LIMIT:?}:\n{text}");
    let peers1 = probe(&format!("core/api-peers@{}", targets[0]));
    let version = series(&text, "probe_http_version", &[&peers1]);
    assert!(
        matches!(version, Some(v) if v == 3.0 || v == 2.0),
        "{version:?}"
    );
    assert_eq!(
        series(
            &text,
            "meshkit_probe_config_last_reload_successful",
            &["agent=\"probe-test\""]
        ),
        Some(1.0)
    );
    let (status, _) = http(addr, "GET", "/-/healthy").await;
    assert_eq!(status, 200);

    // Node 2 stops: its probes fail, the others go on passing.
    nodes.remove(1).stop().await;
    let down: Vec<String> = names
        .iter()
        .filter(|n| n.ends_with(&targets[1]))
        .cloned()
        .collect();
    let (ok, text) = metrics_until(addr, LIMIT, |text| {
        down.iter().all(|n| {
            series(text, "probe_success", &[&probe(n)]) == Some(0.0)
                && series(text, "mesh_probe_state", &[&probe(n), "state=\"failing\""]) == Some(1.0)
        })
    })
    .await;
    assert!(ok, "node 2's probes not failing within {LIMIT:?}:\n{text}");
    for n in names.iter().filter(|n| n.ends_with(&targets[0])) {
        assert_eq!(
            series(&text, "mesh_probe_state", &[&probe(n), "state=\"healthy\""]),
            Some(1.0),
            "{n} should stay healthy:\n{text}"
        );
    }
    agent.stop().await;
    for node in nodes {
        node.stop().await;
    }
}

/// An operator's token can operate: the agent refuses to start, naming the target and the
/// status; with `allow_excess_privilege = true` it starts, and its authz probe fails.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn credentials_that_can_operate_are_refused_at_start() {
    let dir = TempDir::new("probe-agent-privilege");
    let nodes = start_cluster(dir.path(), 1).await;
    let target = nodes[0]
        .control_addr()
        .expect("a control listener")
        .to_string();
    let operator = dir.path().join("operator.token");
    std::fs::write(
        &operator,
        token(
            dir.path(),
            "test-operator",
            meshkit_node::permission::Permission::Operate,
        ),
    )
    .unwrap();
    let path = write_probes_toml(
        dir.path(),
        &operator,
        "",
        &group(std::slice::from_ref(&target)),
    );
    let err = agent::start(&path)
        .await
        .expect_err("an operator is refused");
    match &err {
        AgentError::ExcessPrivilege {
            target: t, status, ..
        } => {
            assert_eq!(t, &target);
            assert_ne!(*status, 403);
        }
        other => panic!("expected ExcessPrivilege, got {other}"),
    }
    assert!(err.to_string().contains("allow_excess_privilege"), "{err}");

    let path = write_probes_toml(
        dir.path(),
        &operator,
        "allow_excess_privilege = true",
        &group(std::slice::from_ref(&target)),
    );
    let agent = agent::start(&path).await.expect("allowed explicitly");
    let authz = probe(&format!("core/authz@{target}"));
    let peers = probe(&format!("core/api-peers@{target}"));
    let (ok, text) = metrics_until(agent.listen_addr(), LIMIT, |text| {
        series(text, "mesh_probe_state", &[&authz, "state=\"failing\""]) == Some(1.0)
            && series(text, "mesh_probe_state", &[&peers, "state=\"healthy\""]) == Some(1.0)
    })
    .await;
    assert!(
        ok,
        "authz not failing (or peers not healthy) within {LIMIT:?}:\n{text}"
    );
    agent.stop().await;
    for node in nodes {
        node.stop().await;
    }
}
