//! `meshkitd` processes on loopback: three daemons form a mesh (seen through `meshctl peers
//! list --json`), and one stopped by SIGTERM exits cleanly and is declared dead by the others.

mod common;

use std::net::SocketAddr;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use common::daemon::{Daemon, start};
use common::{TempDir, write_config};
use meshkit_node::control::PeersResponse;

const FORM_LIMIT: Duration = Duration::from_secs(10);
const DETECT_LIMIT: Duration = Duration::from_secs(15);
const EXIT_LIMIT: Duration = Duration::from_secs(5);
const POLL: Duration = Duration::from_millis(100);

fn peers(control: &str, token_file: &Path) -> Option<PeersResponse> {
    let out = Command::new(env!("CARGO_BIN_EXE_meshctl"))
        .args(["peers", "list", "--json", "--addr", control, "--token-file"])
        .arg(token_file)
        .arg("--ca")
        .arg(token_file.with_file_name("ca.pem"))
        .env(
            "MESHCTL_STATE",
            token_file.with_file_name("meshctl-state.json"),
        )
        .output()
        .ok()?;
    if !out.status.success() {
        return None;
    }
    serde_json::from_slice(&out.stdout).ok()
}

/// Polls `check` every 100 ms until it holds or `limit` passes.
fn eventually(limit: Duration, mut check: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + limit;
    for _ in 0..=(limit.as_millis() / POLL.as_millis()) {
        if check() {
            return true;
        }
        if Instant::now() >= deadline {
            break;
        }
        std::thread::sleep(POLL);
    }
    false
}

fn states(control: &str, token_file: &Path) -> Vec<(u64, String)> {
    peers(control, token_file)
        .map(|p| p.peers.into_iter().map(|p| (p.id, p.state)).collect())
        .unwrap_or_default()
}

#[test]
fn three_daemons_form_a_mesh_and_see_a_terminated_one_leave() {
    let dir = TempDir::new("daemon");
    let (ca, files) = meshkit_node::certs::write_dev_certs(dir.path(), 3).unwrap();
    // The nodes accept tokens signed by the test key; meshctl reads with an observe token.
    let token_file = common::observer_token_file(dir.path());
    let mut daemons: Vec<Daemon> = Vec::new();
    for f in &files {
        let seeds: Vec<(u64, SocketAddr)> = daemons
            .first()
            .map(|d| vec![(1, d.gossip)])
            .unwrap_or_default();
        let path = write_config(dir.path(), f.id.get(), &seeds, &f.cert, &f.key, &ca);
        daemons.push(start(&path));
    }
    let alive = |d: &Daemon| {
        states(&d.control, &token_file)
            .iter()
            .filter(|(_, s)| s == "alive")
            .count()
    };
    assert!(
        eventually(FORM_LIMIT, || daemons.iter().all(|d| alive(d) == 3)),
        "no mesh of three: {:?}",
        daemons
            .iter()
            .map(|d| states(&d.control, &token_file))
            .collect::<Vec<_>>()
    );

    let mut third = daemons.pop().unwrap();
    let status = Command::new("kill")
        .args(["-TERM", &third.child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let mut exit = None;
    assert!(
        eventually(EXIT_LIMIT, || {
            exit = third.child.try_wait().unwrap();
            exit.is_some()
        }),
        "meshkitd did not exit within {EXIT_LIMIT:?} of SIGTERM"
    );
    assert!(exit.unwrap().success(), "meshkitd exited with {exit:?}");

    // SIGTERM is a graceful shutdown: node-3 left (a crash, kill -9, would be `dead`: see
    // five_daemons.rs).
    let left = |d: &Daemon| states(&d.control, &token_file).contains(&(3, "left".to_owned()));
    assert!(
        eventually(DETECT_LIMIT, || daemons.iter().all(left)),
        "node-3 not seen to leave: {:?}",
        daemons
            .iter()
            .map(|d| states(&d.control, &token_file))
            .collect::<Vec<_>>()
    );
}
