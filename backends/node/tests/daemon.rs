//! `meshkitd` processes on loopback: three daemons form a mesh (seen through `meshctl peers
//! list --json`), and one stopped by SIGTERM exits cleanly and is declared dead by the others.

mod common;

use std::net::SocketAddr;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use common::daemon::{Daemon, start};
use common::{MeshctlAs, TempDir, write_config};
use meshkit_node::control::PeersResponse;

const FORM_LIMIT: Duration = Duration::from_secs(10);
const DETECT_LIMIT: Duration = Duration::from_secs(15);
const EXIT_LIMIT: Duration = Duration::from_secs(5);
const POLL: Duration = Duration::from_millis(100);

fn peers(control: &str, token_file: &Path) -> Option<PeersResponse> {
    let dir = token_file
        .parent()
        .expect("the token file is in the test directory");
    let out = common::meshctl(
        dir,
        control,
        MeshctlAs::TokenFile(token_file),
        ["peers", "list", "--json"],
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

/// Kills and reaps a child process when dropped, so a failing test leaves nothing running.
struct Reaped(std::process::Child);

impl Drop for Reaped {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A panic in the node's driver (a bug) ends `meshkitd` with status 70, so that its supervisor
/// restarts it, and its log says so and what to do. The panic comes from the test-only
/// `fault-injection` hook (the crate's tests build `meshkitd` with it; a build without the
/// feature has no such hook): the driver of a started node panics one second after start, as a
/// bug would. Before the supervision, the process ran on without its driver.
#[test]
fn a_driver_panic_ends_meshkitd_with_status_70() {
    const PANIC_AFTER: Duration = Duration::from_secs(1);
    let dir = TempDir::new("daemon-panic");
    let (ca, files) = meshkit_node::certs::write_dev_certs(dir.path(), 1).unwrap();
    let path = write_config(dir.path(), 1, &[], &files[0].cert, &files[0].key, &ca);
    let (stdout, stderr) = (dir.path().join("stdout"), dir.path().join("stderr"));
    let mut child = Reaped(
        Command::new(env!("CARGO_BIN_EXE_meshkitd"))
            .arg("--config")
            .arg(&path)
            .env("RUST_LOG", "info")
            .env(
                "MESHKITD_FAULT_PANIC_DRIVER_AFTER_MS",
                PANIC_AFTER.as_millis().to_string(),
            )
            .stdin(std::process::Stdio::null())
            .stdout(std::fs::File::create(&stdout).unwrap())
            .stderr(std::fs::File::create(&stderr).unwrap())
            .spawn()
            .unwrap(),
    );
    let mut exit = None;
    let exited = eventually(PANIC_AFTER + EXIT_LIMIT, || {
        exit = child.0.try_wait().unwrap();
        exit.is_some()
    });
    let log = std::fs::read_to_string(&stderr).unwrap();
    assert!(
        exited,
        "meshkitd still running {:?} after its driver panicked; log:\n{log}",
        PANIC_AFTER + EXIT_LIMIT
    );
    // It had started: its address line is out before the panic.
    let started = std::fs::read_to_string(&stdout).unwrap();
    assert!(started.starts_with("node-1 gossip "), "{started:?}");
    assert_eq!(exit.unwrap().code(), Some(70), "log:\n{log}");
    for says in [
        "the node's driver panicked",
        "test-only: the driver panics on command",
        "exiting with status 70",
        "supervisor that restarts it",
    ] {
        assert!(log.contains(says), "the log does not say {says:?}:\n{log}");
    }
}
