//! `meshkitd` processes on loopback: three daemons form a mesh (seen through `meshctl peers
//! list --json`), and one stopped by SIGTERM exits cleanly and is declared dead by the others.

mod common;

use std::net::SocketAddr;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use common::daemon::{Daemon, start};
use common::{MeshctlAs, TempDir, write_config};
use meshkit_node::api::json::PeersResponse;

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

/// One `meshkitd` per certificate, each after the first seeded with node 1; `extra(id)` is
/// appended to node `id`'s config (its `[access]` table).
fn start_daemons(
    dir: &Path,
    ca: &Path,
    files: &[meshkit_node::certs::NodeFiles],
    extra: impl Fn(u64) -> String,
) -> Vec<Daemon> {
    let mut daemons: Vec<Daemon> = Vec::new();
    for f in files {
        let seeds: Vec<(u64, SocketAddr)> = daemons
            .first()
            .map(|d| vec![(1, d.gossip)])
            .unwrap_or_default();
        let id = f.id.get();
        let path = common::write_config_with(dir, id, &seeds, &f.cert, &f.key, ca, &extra(id));
        daemons.push(start(&path));
    }
    daemons
}

#[test]
fn three_daemons_form_a_mesh_and_see_a_terminated_one_leave() {
    let dir = TempDir::new("daemon");
    let (ca, files) = meshkit_node::certs::write_dev_certs(dir.path(), 3).unwrap();
    // The nodes accept tokens signed by the test key; meshctl reads with an observe token.
    let token_file = common::observer_token_file(dir.path());
    let mut daemons = start_daemons(dir.path(), &ca, &files, |_| String::new());
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
        Command::new(meshkit_testkit::bin("meshkitd"))
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

/// The token subject of a test operator holding `scope`, as the audit log names it.
fn subject(scope: meshkit_node::permission::Permission) -> &'static str {
    match scope {
        meshkit_node::permission::Permission::Admin => "admin",
        _ => "operator",
    }
}

/// Runs `meshctl args` against `control` with a token for `scope`; its exit status, stdout and
/// stderr.
fn meshctl_as(
    dir: &Path,
    scope: meshkit_node::permission::Permission,
    control: &str,
    args: &[&str],
) -> (bool, String, String) {
    let out = Command::new(meshkit_testkit::bin("meshctl"))
        .args(args)
        .args(["--addr", control])
        .env("MESHCTL_TOKEN", common::token(dir, subject(scope), scope))
        .env("MESHCTL_CA", dir.join("ca.pem"))
        .env("MESHCTL_STATE", dir.join("meshctl-state.json"))
        .env("MESHCTL_CONFIG", dir.join("no-meshctl.toml"))
        .output()
        .expect("meshctl runs");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// The audit records of `path` for `POST /control/force-leave`: (identity, outcome, status).
fn force_leave_audit(path: &Path) -> Vec<(String, String, u64)> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).expect("a JSON audit line"))
        .filter(|r| r["path"] == "/control/force-leave")
        .map(|r| {
            (
                r["identity"].as_str().unwrap_or("-").to_owned(),
                r["outcome"].as_str().unwrap_or_default().to_owned(),
                r["status"].as_u64().unwrap_or_default(),
            )
        })
        .collect()
}

/// `meshctl force-leave` against real processes: a member killed with SIGKILL is refused while
/// the node asked does not hold it dead yet (409), and so is a live member; once every member
/// holds it dead, one command makes every member hold it `left` (each asked at its own control
/// address), and a second finds it left already. It needs mesh.admin: an operator's token and a
/// peer's own certificate (a member of the mesh, which may only observe) are refused with 403,
/// and every call, allowed or refused, is in the node's audit log.
#[test]
fn force_leave_moves_a_killed_member_to_left_at_every_member() {
    use meshkit_node::permission::Permission;
    let dir = TempDir::new("force-leave");
    let (ca, files) = meshkit_node::certs::write_dev_certs(dir.path(), 4).unwrap();
    let token_file = common::observer_token_file(dir.path());
    // Appended to `[access]`: one audit log per node, beside its config.
    let mut daemons = start_daemons(dir.path(), &ca, &files, |id| {
        format!("audit_log = \"audit-{id}.jsonl\"\n")
    });
    let all_hold = |daemons: &[Daemon], id: u64, state: &str| {
        daemons
            .iter()
            .all(|d| states(&d.control, &token_file).contains(&(id, state.to_owned())))
    };
    assert!(
        eventually(FORM_LIMIT, || all_hold(&daemons, 4, "alive")),
        "no mesh of four"
    );
    let first = daemons[0].control.clone();

    // A live member is refused by the node asked, and nothing changes.
    let (ok, _, err) = meshctl_as(dir.path(), Permission::Admin, &first, &["force-leave", "2"]);
    assert!(
        !ok && err.contains("HTTP 409") && err.contains("not dead"),
        "{err}"
    );
    // mesh.operate is not enough.
    let (ok, _, err) = meshctl_as(
        dir.path(),
        Permission::Operate,
        &first,
        &["force-leave", "4"],
    );
    assert!(!ok && err.contains("HTTP 403"), "{err}");
    // Nor is a peer's certificate: node 2, a member of this mesh, may observe, not force a
    // member out (the adversary here is a member's identity used against another member).
    let out = Command::new(meshkit_testkit::bin("meshctl"))
        .args(["force-leave", "4", "--addr", &first])
        .env("MESHCTL_CA", dir.path().join("ca.pem"))
        .env("MESHCTL_CERT", &files[1].cert)
        .env("MESHCTL_KEY", &files[1].key)
        .env("MESHCTL_STATE", dir.path().join("meshctl-state.json"))
        .env("MESHCTL_CONFIG", dir.path().join("no-meshctl.toml"))
        .output()
        .expect("meshctl runs");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains("HTTP 403"), "{err}");

    let mut fourth = daemons.pop().unwrap();
    fourth.kill();
    // Just killed: alive or suspect at node 1 still, so refused.
    let (ok, _, err) = meshctl_as(dir.path(), Permission::Admin, &first, &["force-leave", "4"]);
    assert!(!ok && err.contains("HTTP 409"), "{err}");
    assert!(
        eventually(DETECT_LIMIT, || all_hold(&daemons, 4, "dead")),
        "node-4 not declared dead by all"
    );

    let (ok, out, err) = meshctl_as(
        dir.path(),
        Permission::Admin,
        &first,
        &["force-leave", "4", "--json"],
    );
    assert!(ok, "{err}");
    let report: serde_json::Value = serde_json::from_str(&out).expect("JSON");
    let asked: Vec<(u64, &str)> = report["asked"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| (a["node"].as_u64().unwrap(), a["outcome"].as_str().unwrap()))
        .collect();
    assert_eq!(asked.len(), 3, "{out}");
    assert_eq!(asked[0], (1, "left"), "{out}");
    assert!(asked.iter().all(|(_, o)| *o == "left"), "{out}");
    assert!(
        all_hold(&daemons, 4, "left"),
        "every member holds node-4 left"
    );

    // Again: the table says it is left already everywhere, and it still is (the gossip of
    // the others meanwhile did not turn it back to dead; the core's tests show it on virtual
    // time).
    let (ok, out, err) = meshctl_as(dir.path(), Permission::Admin, &first, &["force-leave", "4"]);
    assert!(ok, "{err}");
    assert_eq!(out.matches("already left").count(), 3, "{out}");
    assert!(
        out.contains("node 4 is left at 3 of 3 members asked"),
        "{out}"
    );
    assert!(all_hold(&daemons, 4, "left"), "node-4 stays left");

    // Node 1's audit log: the two refusals (403, with who asked) and every admin's call, in
    // order (the writer is asynchronous: poll until the last one is out).
    let audit = dir.path().join("audit-1.jsonl");
    assert!(
        eventually(EXIT_LIMIT, || force_leave_audit(&audit).len() == 6),
        "{:?}",
        force_leave_audit(&audit)
    );
    let record =
        |who: &str, outcome: &str, status: u64| (who.to_owned(), outcome.to_owned(), status);
    assert_eq!(
        force_leave_audit(&audit),
        vec![
            record("admin", "allowed", 409),
            record("operator", "forbidden", 403),
            record("node-2", "forbidden", 403),
            record("admin", "allowed", 409),
            record("admin", "allowed", 200),
            record("admin", "allowed", 200),
        ]
    );
}
