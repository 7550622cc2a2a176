//! The compose chaos environment with real containers (`compose/up`, `compose/down`): three
//! `meshkitd` containers that find each other by name, the probe agent, Prometheus and
//! Alertmanager; one fault (a node's container killed through Docker) seen by the others as a
//! dead member, by Prometheus as a target down, and by the probe agent, whose alert for that node
//! reaches the stack's Alertmanager; `down` leaves no container, network, volume or key behind.
//!
//! Ignored by default: it needs Docker, docker-compose, the `meshkit/meshkitd:dev` image
//! (`scripts/static-image.sh`) and Debian's prometheus and prometheus-alertmanager; scripts/test.sh
//! runs it right after building the image.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use meshkit_testkit::fixtures::{MeshctlAs, meshctl, run_bounded, tool};

/// `up` builds the Prometheus and Alertmanager images on first use and waits at most 120 s for
/// a healthy mesh; a loaded 2-core machine gets the rest.
const UP_LIMIT: Duration = Duration::from_secs(600);
const DOWN_LIMIT: Duration = Duration::from_secs(120);
/// A killed member is declared dead within a few probe periods plus the suspicion timeout
/// (about 5 s with the `lan` profile at three nodes); Prometheus scrapes every 5 s.
const FAULT_LIMIT: Duration = Duration::from_secs(60);

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the workspace")
        .to_owned()
}

/// Removes the project whatever the test's outcome, so a failed run leaves nothing either.
struct Down<'a>(&'a str);

impl Drop for Down<'_> {
    fn drop(&mut self) {
        let mut down = Command::new(repo().join("compose/down"));
        down.args(["--project", self.0]);
        let _ = run_bounded(down, DOWN_LIMIT);
    }
}

/// What node 1 says of the members, as `(id, state)`.
fn peers(certs: &Path, addr: &str) -> Vec<(u64, String)> {
    let mut list = meshctl(
        certs,
        addr,
        MeshctlAs::Node("meshctl-observer"),
        ["peers", "list"],
    );
    list.arg("--json");
    let (ok, out) = run_bounded(list, Duration::from_secs(30));
    if !ok {
        return Vec::new();
    }
    let value: serde_json::Value = serde_json::from_str(&out).unwrap_or_default();
    value["peers"]
        .as_array()
        .map(|peers| {
            peers
                .iter()
                .filter_map(|p| Some((p["id"].as_u64()?, p["state"].as_str()?.to_owned())))
                .collect()
        })
        .unwrap_or_default()
}

#[test]
#[ignore = "needs Docker, docker-compose, the meshkit/meshkitd:dev and meshkit/meshkit-probe:dev images and Debian's prometheus packages; scripts/test.sh runs it after scripts/static-image.sh"]
fn the_environment_comes_up_takes_a_fault_and_goes_down_leaving_nothing() {
    tool("docker-compose", "docker-compose");
    let project = format!("meshkit-test-{}", std::process::id());
    // Ports apart from a developer's own environment (18100..), from the chaos runner's
    // compose tests (22000..31999) and below the kernel's ephemeral range (32768..): a client's
    // port there once took a port a container was to publish.
    let port_base = 10_000 + (std::process::id() % 80) * 100;
    let _down = Down(&project);

    let mut up = Command::new(repo().join("compose/up"));
    up.args([
        "--nodes",
        "3",
        "--voters",
        "3",
        "--project",
        &project,
        "--json",
    ])
    .args(["--port-base", &port_base.to_string()]);
    let (ok, out) = run_bounded(up, UP_LIMIT);
    assert!(ok, "compose/up failed:\n{out}");
    let summary: serde_json::Value = serde_json::from_str(&out[out.find('{').unwrap_or(0)..])
        .unwrap_or_else(|e| panic!("compose/up --json printed no JSON ({e}):\n{out}"));
    assert_eq!(summary["nodes"], 3, "{summary}");
    let run_dir = PathBuf::from(summary["run_dir"].as_str().expect("run_dir"));
    let certs = run_dir.join("certs");
    let node1 = format!("127.0.0.1:{}", port_base + 1);
    let alive = peers(&certs, &node1);
    assert_eq!(
        alive.iter().filter(|(_, s)| s == "alive").count(),
        3,
        "node 1 from the host, through its published port: {alive:?}"
    );

    // The fault: node 3's container killed, as `meshkit-chaos` will do for `kill`.
    let container = format!("{project}_meshkit-3_1");
    let kill = Command::new("docker")
        .args(["kill", &container])
        .output()
        .expect("docker kill");
    assert!(kill.status.success(), "docker kill {container}: {kill:?}");
    let killed_at = Instant::now();
    let mut seen = Vec::new();
    while killed_at.elapsed() < FAULT_LIMIT {
        seen = peers(&certs, &node1);
        if seen.contains(&(3, "dead".to_owned())) {
            break;
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    assert!(
        seen.contains(&(3, "dead".to_owned())),
        "node 1 never held node 3 dead within {FAULT_LIMIT:?}: {seen:?}"
    );
    let detected = killed_at.elapsed();

    // Prometheus scrapes the nodes over TLS and sees node 3 down.
    let prometheus = summary["prometheus"]
        .as_str()
        .expect("prometheus")
        .to_owned();
    let query = format!("{prometheus}/api/v1/query?query=up%7Bjob%3D%22meshkit%22%7D");
    let mut ups = String::new();
    while killed_at.elapsed() < FAULT_LIMIT {
        let (ok, out) = run_bounded(
            {
                let mut c = Command::new(tool("curl", "curl"));
                c.args(["-sf", &query]);
                c
            },
            Duration::from_secs(10),
        );
        if ok && out.contains(r#""instance":"node-3""#) && out.contains(r#""0"]"#) {
            ups = out;
            break;
        }
        ups = out;
        std::thread::sleep(Duration::from_secs(1));
    }
    assert!(
        ups.contains(r#""instance":"node-3""#) && ups.contains(r#""0"]"#),
        "Prometheus never saw node-3 down: {ups}"
    );
    // The probe agent's alert for node 3 at the stack's Alertmanager.
    let alertmanager = summary["alertmanager"]
        .as_str()
        .expect("alertmanager")
        .to_owned();
    let mut alerts = String::new();
    let mut alerted = None;
    while killed_at.elapsed() < FAULT_LIMIT {
        let (ok, out) = run_bounded(
            {
                let mut c = Command::new(tool("curl", "curl"));
                c.args(["-sf", &format!("{alertmanager}/api/v2/alerts")]);
                c
            },
            Duration::from_secs(10),
        );
        if ok
            && out.contains(r#""alertname":"MeshKitProbeFailing""#)
            && out.contains(r#""target":"meshkit-3:8101""#)
        {
            alerted = Some(killed_at.elapsed());
            break;
        }
        alerts = out;
        std::thread::sleep(Duration::from_millis(500));
    }
    let alerted = alerted.unwrap_or_else(|| {
        panic!("the probe agent's alert for meshkit-3 never reached Alertmanager: {alerts}")
    });
    println!(
        "compose: healthy after {} s; node 3 held dead {detected:?} after its kill; the probe \
         agent's alert at Alertmanager after {alerted:?}",
        summary["healthy_after_s"]
    );

    let mut down = Command::new(repo().join("compose/down"));
    down.args(["--project", &project, "--json"]);
    let (ok, out) = run_bounded(down, DOWN_LIMIT);
    assert!(ok, "compose/down failed or left something:\n{out}");
    assert!(!run_dir.exists(), "the run directory (keys) is still there");
    for (kind, list) in [
        ("container", vec!["ps", "-a", "--format", "{{.Names}}"]),
        ("network", vec!["network", "ls", "--format", "{{.Name}}"]),
        ("volume", vec!["volume", "ls", "--format", "{{.Name}}"]),
    ] {
        let out = Command::new("docker")
            .args(&list)
            .output()
            .expect("docker ls");
        let names = String::from_utf8_lossy(&out.stdout);
        assert!(
            !names.lines().any(|n| n.starts_with(&project)),
            "a {kind} of {project} is left: {names}"
        );
    }
}

/// A stack larger than the host's neighbour (ARP) table can hold is refused before anything
/// starts, with the sysctl to raise: past it, connections between containers stall silently (a
/// 35-node stack did, with the kernel's default of 1,024). Needs no Docker: the check comes first.
#[test]
fn a_stack_the_neighbour_table_cannot_hold_is_refused_with_the_sysctl_to_raise() {
    let limit = std::env::temp_dir().join(format!("meshkit-gc-thresh3-{}", std::process::id()));
    std::fs::write(&limit, "1024\n").expect("write the limit");
    let up = |nodes: &str| {
        let out = Command::new(repo().join("compose/up"))
            .args([
                "--nodes",
                nodes,
                "--spares",
                "0",
                "--project",
                "meshkit-neigh-test",
            ])
            .env("MESHKIT_NEIGH_GC_THRESH3", &limit)
            // No Docker reachable: a stack the check lets through fails at the next step.
            .env("DOCKER_HOST", "unix:///nonexistent/docker.sock")
            .output()
            .expect("run compose/up");
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let (code, err) = up("35");
    assert_eq!(code, Some(2), "{err}");
    assert!(
        err.contains("35 nodes need about 1521 entries")
            && err.contains("net.ipv4.neigh.default.gc_thresh3 is 1024")
            && err.contains("sysctl -w net.ipv4.neigh.default.gc_thresh1=1521"),
        "{err}"
    );
    // 28 nodes (32 containers, 1,024 entries) fit: refused for the missing daemon instead.
    let (code, err) = up("28");
    assert_eq!(code, Some(2), "{err}");
    assert!(!err.contains("neighbour"), "{err}");
    assert!(err.contains("no Docker daemon answers"), "{err}");
    let _ = std::fs::remove_file(&limit);
}
