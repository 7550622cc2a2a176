//! The `meshkit-probe` binary: `check-config` (exit codes, the key in text and JSON), a run
//! that reloads on SIGHUP (and not on a file change with `reload_on_change = false`) and stops
//! on SIGTERM, and `report` writing its three files from the history the run left.

mod agent_support;

use std::process::{Command, Stdio};
use std::time::Duration;

use agent_support::{http, metrics_until, series};
use meshkit_testkit::fixtures::{TempDir, observer_token_file, start_cluster};

const BIN: &str = env!("CARGO_BIN_EXE_meshkit-probe");
const LIMIT: Duration = Duration::from_secs(20);

fn config(listen: &str, token: &std::path::Path, target: &str, groups: usize) -> String {
    let mut text = format!(
        "[agent]\nname = \"bin\"\nlisten = \"{listen}\"\nreload_on_change = false\n\n\
         [credentials]\nca = \"ca.pem\"\ntoken_file = {:?}\n\n\
         [defaults]\ninterval = \"300ms\"\ntimeout = \"300ms\"\n",
        token.display().to_string()
    );
    for i in 0..groups {
        text.push_str(&format!(
            "\n[[group]]\nname = \"g{i}\"\ncluster = \"test\"\ntargets = [\"{target}\"]\n\
             probes = [\"api\"]\n[group.api]\nendpoints = [\"peers\"]\n"
        ));
    }
    text
}

/// A free loopback port (bound and released).
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_config_run_sighup_sigterm_and_report() {
    let dir = TempDir::new("probe-agent-binary");
    let nodes = start_cluster(dir.path(), 1).await;
    let target = nodes[0]
        .control_addr()
        .expect("a control listener")
        .to_string();
    let token = observer_token_file(dir.path());
    let listen = format!("127.0.0.1:{}", free_port());
    let path = dir.path().join("probes.toml");
    std::fs::write(&path, config(&listen, &token, &target, 1)).unwrap();

    // check-config: valid, then a bad key in text and in JSON.
    let out = Command::new(BIN)
        .arg("check-config")
        .arg(&path)
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("valid: 1 groups, 1 probes"),
        "{out:?}"
    );
    let bad = dir.path().join("bad.toml");
    std::fs::write(
        &bad,
        config(&listen, &token, &target, 1).replacen(
            "300ms\"\n",
            "300ms\"\nfailure_threshold = 0\n",
            1,
        ),
    )
    .unwrap();
    let out = Command::new(BIN)
        .arg("check-config")
        .arg(&bad)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("defaults.failure_threshold"),
        "{out:?}"
    );
    let out = Command::new(BIN)
        .args(["check-config", "--json"])
        .arg(&bad)
        .output()
        .unwrap();
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON on stdout");
    assert_eq!(json["ok"], false);
    assert_eq!(json["key"], "defaults.failure_threshold");

    // Run it.
    let mut child = Command::new(BIN)
        .arg("--config")
        .arg(&path)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let addr: std::net::SocketAddr = listen.parse().unwrap();
    let probes = |t: &str| series(t, "meshkit_probe_probes", &["agent=\"bin\""]);
    let (ok, text) = metrics_until_up(addr, |t| probes(t) == Some(1.0)).await;
    assert!(ok, "the agent did not come up with 1 probe:\n{text}");

    // A changed file alone does nothing (reload_on_change = false); SIGHUP applies it.
    std::fs::write(&path, config(&listen, &token, &target, 2)).unwrap();
    tokio::time::sleep(Duration::from_secs(1)).await;
    let (_, text) = http(addr, "GET", "/metrics").await;
    assert_eq!(
        probes(&text),
        Some(1.0),
        "reloaded without being asked:\n{text}"
    );
    signal(child.id(), "HUP");
    let (ok, text) = metrics_until(addr, LIMIT, |t| probes(t) == Some(2.0)).await;
    assert!(ok, "SIGHUP did not reload:\n{text}");

    // SIGTERM: a clean exit.
    signal(child.id(), "TERM");
    let deadline = std::time::Instant::now() + LIMIT;
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no exit within {LIMIT:?} of SIGTERM"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(status.success(), "{status:?}");

    // A report from the history the run left.
    let reports = dir.path().join("reports");
    let out = Command::new(BIN)
        .args(["report", "--daily", "--config"])
        .arg(&path)
        .arg("--out")
        .arg(&reports)
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let written = String::from_utf8_lossy(&out.stdout).into_owned();
    for ext in ["html", "md", "json"] {
        let file = written
            .lines()
            .find(|l| l.ends_with(ext))
            .unwrap_or_else(|| panic!("no .{ext}: {written}"));
        assert!(std::path::Path::new(file).exists(), "{file}");
    }
    for node in nodes {
        node.stop().await;
    }
}

/// Like [`metrics_until`], waiting for the listener to come up first.
async fn metrics_until_up(
    addr: std::net::SocketAddr,
    check: impl Fn(&str) -> bool,
) -> (bool, String) {
    let deadline = tokio::time::Instant::now() + LIMIT;
    while tokio::net::TcpStream::connect(addr).await.is_err() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the agent never listened on {addr}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    metrics_until(addr, LIMIT, check).await
}

fn signal(pid: u32, name: &str) {
    let status = Command::new("kill")
        .arg(format!("-{name}"))
        .arg(pid.to_string())
        .status()
        .unwrap();
    assert!(status.success(), "kill -{name} {pid}");
}
