//! The README's walkthrough, run as written: every ```sh block of the walkthrough section of
//! samples/jobs/README.md, from a temporary directory, with real `mesh-jobs` processes on
//! loopback. The blocks tagged `# terminal 1..3` are the nodes (started in the background, each
//! waited for until it prints its address line); every other block runs in bash with
//! `set -eo pipefail`, in order, bounded in time. The README's build lines (`cargo build`,
//! `export PATH`) are what this test already has: the binary cargo built for it, put first on
//! PATH. `MESH_JOBS_PORT_BASE` moves the cluster to ports found free, so the test never
//! collides with a walkthrough run by hand.
//!
//! After the blocks: `verify` (in the README's terminal 4) has passed, so every acknowledged job
//! was processed, no item's completion was accepted twice, the queues are empty, and it dated a
//! shard's change of owner from the producer's acknowledgements; node 2 was
//! really killed by SIGKILL; and the kill landed mid-way: node 2 had processed jobs before it
//! died, and a shard changed owner while the push was acknowledging jobs on it (two fences among
//! its acknowledged items).
//!
//! Needs curl (the README's control-API lines); ignored by default and run by scripts/test.sh
//! with the other tests that need an outside tool (`--run-ignored only`). Takes 20 s on a quiet
//! 2-core machine, minutes on a loaded one.

use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead as _, BufReader};
use std::net::{TcpListener, UdpSocket};
use std::os::unix::process::ExitStatusExt as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// The longest a block may run (the walkthrough's push and `verify --wait 120s` included).
const BLOCK_LIMIT: Duration = Duration::from_secs(300);
/// The longest a node may take to print its address line.
const START_LIMIT: Duration = Duration::from_secs(30);

/// A child process killed (SIGKILL) and reaped when dropped: no node outlives a failing test.
struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The ```sh blocks of the README's walkthrough section (`## Walkthrough...` up to the next
/// `## ` heading), each as its lines. Blocks elsewhere (how to run this test) are not run.
fn sh_blocks(readme: &str) -> Vec<Vec<String>> {
    let mut blocks = Vec::new();
    let mut current: Option<Vec<String>> = None;
    let mut inside = false;
    for line in readme.lines() {
        if current.is_none() && line.starts_with("## ") {
            inside = line.starts_with("## Walkthrough");
        }
        if !inside {
            continue;
        }
        match (&mut current, line.trim_end()) {
            (None, "```sh") => current = Some(Vec::new()),
            (Some(_), "```") => blocks.extend(current.take()),
            (Some(lines), text) => lines.push(text.to_owned()),
            (None, _) => {}
        }
    }
    blocks
}

/// A port base whose gossip (UDP) and HTTP (TCP) ports for three nodes are free now.
fn free_port_base() -> u16 {
    let seed = std::process::id() as u64
        ^ std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos().into());
    for attempt in 0..50u64 {
        let base = 20_000 + ((seed + attempt * 7919) % 30_000) as u16;
        let free = (1..=3).all(|i| {
            UdpSocket::bind(("127.0.0.1", base + i)).is_ok()
                && TcpListener::bind(("127.0.0.1", base + 100 + i)).is_ok()
        });
        if free {
            return base;
        }
    }
    panic!("no free port base found in 50 attempts");
}

/// Runs `script` in bash from `dir` with `path` first on PATH; panics on a failure or when it
/// runs past [`BLOCK_LIMIT`], printing its output either way.
fn run_block(dir: &Path, path: &str, base: u16, script: &str) -> String {
    let mut child = Command::new("bash")
        .arg("-c")
        .arg(format!("set -eo pipefail\n{script}"))
        .current_dir(dir)
        .env("PATH", path)
        .env("MESH_JOBS_PORT_BASE", base.to_string())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("bash runs");
    let stdout = child.stdout.take().expect("piped");
    let stderr = child.stderr.take().expect("piped");
    let out = std::thread::spawn(move || std::io::read_to_string(stdout).unwrap_or_default());
    let err = std::thread::spawn(move || std::io::read_to_string(stderr).unwrap_or_default());
    let started = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().expect("waitable") {
            break Some(status);
        }
        if started.elapsed() > BLOCK_LIMIT {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let (out, err) = (
        out.join().unwrap_or_default(),
        err.join().unwrap_or_default(),
    );
    println!(
        "$ {}\n{out}{err}({:.1} s)",
        script.replace('\n', "\n$ "),
        started.elapsed().as_secs_f64()
    );
    match status {
        Some(s) if s.success() => out,
        Some(s) => panic!("the block failed ({s}):\n{script}\n{out}{err}"),
        None => panic!("the block ran past {BLOCK_LIMIT:?}:\n{script}\n{out}{err}"),
    }
}

/// Starts a node's line in the background and waits for its address line; its log (at info)
/// goes to `node-<n>.log` in `dir`, kept when the test fails.
fn start_node(dir: &Path, path: &str, base: u16, n: u32, line: &str) -> Killed {
    let log_path = dir.join(format!("node-{n}.log"));
    let log = std::fs::File::create(&log_path).expect("a log file");
    let mut child = Command::new("bash")
        .arg("-c")
        .arg(format!("exec {line}"))
        .current_dir(dir)
        .env("PATH", path)
        .env("MESH_JOBS_PORT_BASE", base.to_string())
        .env("RUST_LOG", "info")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(log)
        .spawn()
        .expect("bash runs");
    let stdout = child.stdout.take().expect("piped");
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let mut lines = BufReader::new(stdout).lines();
        let _ = tx.send(lines.next().and_then(Result::ok));
        // Keep reading so the node never blocks on a full pipe.
        for _ in lines {}
    });
    let node = Killed(child);
    match rx.recv_timeout(START_LIMIT) {
        Ok(Some(first)) => {
            println!("{line}\n  {first}");
            assert!(
                first.contains(" http http://"),
                "unexpected first line: {first}"
            );
        }
        other => panic!("`{line}` printed no address line within {START_LIMIT:?}: {other:?}"),
    }
    node
}

fn json_lines(path: &Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).expect("a JSON line"))
        .collect()
}

#[test]
#[ignore = "needs curl and takes 30-90 s: scripts/test.sh runs it with the tool tests"]
fn the_readme_walkthrough_loses_nothing_when_a_node_is_killed() {
    let readme_path = Path::new(env!("CARGO_MANIFEST_DIR")).join("README.md");
    let readme = std::fs::read_to_string(&readme_path).expect("the README");
    let blocks = sh_blocks(&readme);
    assert!(blocks.len() >= 5, "the walkthrough's blocks: {blocks:?}");

    let dir = std::env::temp_dir().join(format!("mesh-jobs-walkthrough-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("a scratch directory");
    let bin = PathBuf::from(env!("CARGO_BIN_EXE_mesh-jobs"));
    let bin_dir = bin.parent().expect("the binary's directory");
    let path = format!(
        "{}:{}",
        bin_dir.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let base = free_port_base();
    println!(
        "port base {base}, directory {} (kept if the test fails: node-<n>.log, demo/data)",
        dir.display()
    );

    let started = Instant::now();
    let mut nodes: BTreeMap<u32, Killed> = BTreeMap::new();
    let mut terminal4 = false;
    for block in &blocks {
        let first = block.first().map(String::as_str).unwrap_or_default();
        let terminal = first
            .strip_prefix("# terminal ")
            .and_then(|rest| rest.split(|c: char| !c.is_ascii_digit()).next())
            .and_then(|n| n.parse::<u32>().ok());
        match terminal {
            Some(n @ 1..=3) => {
                let line = block
                    .iter()
                    .find(|l| l.starts_with("mesh-jobs run "))
                    .expect("a terminal block runs a node");
                nodes.insert(n, start_node(&dir, &path, base, n, line));
            }
            _ => {
                // The build lines are the test's own: cargo built the binary and PATH has it.
                let script: Vec<&str> = block
                    .iter()
                    .map(String::as_str)
                    .filter(|l| !l.starts_with("cargo build") && !l.starts_with("export PATH="))
                    .collect();
                let out = run_block(&dir, &path, base, &script.join("\n"));
                if terminal == Some(4) {
                    terminal4 = true;
                    assert!(out.contains("ok: nothing lost"), "verify's verdict:\n{out}");
                    // It dates the failover the kill caused, as the producer saw it.
                    assert!(
                        out.contains("new owner (fence")
                            && out.contains("nothing acknowledged for"),
                        "verify names no change of owner:\n{out}"
                    );
                }
            }
        }
    }
    assert!(
        terminal4,
        "the README has a `# terminal 4` block (push, kill, verify)"
    );
    println!(
        "walkthrough done in {:.1} s",
        started.elapsed().as_secs_f64()
    );

    // Node 2 was killed by SIGKILL, as the README says; the others still run.
    let node2 = nodes.get_mut(&2).expect("node 2 was started");
    let status = node2.0.try_wait().expect("waitable");
    assert_eq!(
        status.and_then(|s| s.signal()),
        Some(9),
        "node 2 died of SIGKILL"
    );
    for n in [1, 3] {
        let node = nodes.get_mut(&n).expect("started");
        assert!(
            node.0.try_wait().expect("waitable").is_none(),
            "node {n} still runs"
        );
    }

    // The kill landed mid-way: node 2 had done work, and a shard changed owner while the push
    // was being acknowledged on it.
    let data = dir.join("demo/data");
    let node2_runs = json_lines(&data.join("node-2/results.jsonl"))
        .iter()
        .filter(|r| r["event"] == "processed")
        .count();
    assert!(node2_runs > 0, "node 2 processed nothing before it died");
    let mut fences: BTreeMap<String, BTreeSet<u64>> = BTreeMap::new();
    for acked in json_lines(&data.join("acked.jsonl")) {
        fences
            .entry(acked["shard"].as_str().unwrap_or_default().to_owned())
            .or_default()
            .insert(acked["fence"].as_u64().unwrap_or_default());
    }
    assert!(
        fences.values().any(|f| f.len() > 1),
        "no shard changed owner while jobs were acknowledged on it: the kill did not land \
         mid-way ({fences:?})"
    );
    println!("node 2 ran {node2_runs} jobs before the kill; fences per shard: {fences:?}");
    drop(nodes);
    let _ = std::fs::remove_dir_all(&dir);
}
