//! Issue 14's fleet target with real processes: 5 agents, one killed with SIGKILL; its probe
//! groups run again on the others within the failover target.
//!
//! Each agent is a child process: this test binary run again on its ignored
//! `fleet_agent_child` test, which starts a [`Fleet`] from the node file the environment names
//! and prints every change of its owned groups as a line (`fleet-agent owned <id> <groups>`).
//! The parent reads those lines, so what it checks is what each agent process says it runs.
//! A child ends when its stdin closes (the parent gone) or after [`CHILD_LIFETIME`]; the parent
//! kills every child it started when the test ends, passed or not.

use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead, BufReader, Write};
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use meshkit_probe::fleet::{Fleet, RawFleetConfig};
use meshkit_testkit::fixtures::{TempDir, write_config_with};

/// The agents' node.toml beyond the fixtures' (the same as `fleet_mesh.rs`): voters 1-3,
/// 16 shards of `probe-groups` with 2 s leases.
const AGENT_NODE: &str = "[leadership]\nvoters = [1, 2, 3]\nttl = \"2s\"\n\n\
    [leadership.raft]\ntick_interval = \"50ms\"\n\n\
    [shards]\nnamespaces = { probe-groups = 16 }\nttl = \"2s\"\n";
const AGENTS: u64 = 5;
const GROUPS: usize = 8;
/// The environment that makes `fleet_agent_child` an agent: its node file, and its groups.
const NODE_ENV: &str = "MESHKIT_PROBE_FLEET_CHILD_NODE";
const GROUPS_ENV: &str = "MESHKIT_PROBE_FLEET_CHILD_GROUPS";
/// The longest a child runs, whatever happens to its parent.
const CHILD_LIFETIME: Duration = Duration::from_secs(180);
/// Until the first child prints its address, and until the fleet places every group.
const START_LIMIT: Duration = Duration::from_secs(30);
const PLACE_LIMIT: Duration = Duration::from_secs(40);
const LINE_PREFIX: &str = "fleet-agent ";

/// The agent process (run by the parent test only; without the environment it does nothing).
#[tokio::test(flavor = "multi_thread", worker_threads = 1)]
#[ignore = "a child process of fleet_five_agents_one_killed"]
async fn fleet_agent_child() {
    let Ok(node) = std::env::var(NODE_ENV) else {
        return;
    };
    let node = Path::new(&node);
    let groups: Vec<String> = std::env::var(GROUPS_ENV)
        .unwrap_or_default()
        .split(',')
        .filter(|g| !g.is_empty())
        .map(str::to_owned)
        .collect();
    let dir = node.parent().expect("a directory");
    let raw = RawFleetConfig {
        node: Some(
            node.file_name()
                .expect("a file")
                .to_string_lossy()
                .into_owned(),
        ),
        namespace: None,
    };
    let config = raw.validate(dir).expect("a valid [fleet]");
    let fleet = Fleet::start(&config, groups)
        .await
        .expect("the fleet starts");
    let id = fleet.node_id();
    say(&format!("ready {id} {}", fleet.gossip_addr()));
    // Ends when the parent closes stdin (or is gone).
    let stdin_closed = tokio::task::spawn_blocking(|| {
        let mut sink = String::new();
        while std::io::stdin().read_line(&mut sink).is_ok_and(|n| n > 0) {
            sink.clear();
        }
    });
    let mut owned = fleet.owned();
    let report = async {
        loop {
            let now: Vec<String> = owned.borrow_and_update().iter().cloned().collect();
            say(&format!("owned {id} {}", now.join(",")));
            if owned.changed().await.is_err() {
                break;
            }
        }
    };
    tokio::select! {
        () = report => {}
        _ = stdin_closed => {}
        () = tokio::time::sleep(CHILD_LIFETIME) => {}
    }
    fleet.kill().await;
}

fn say(line: &str) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{LINE_PREFIX}{line}");
    let _ = out.flush();
}

/// The children, killed when dropped.
struct Agents {
    children: BTreeMap<u64, Child>,
    lines: mpsc::Receiver<(u64, String, Instant)>,
    sender: mpsc::Sender<(u64, String, Instant)>,
    owned: BTreeMap<u64, BTreeSet<String>>,
}

impl Drop for Agents {
    fn drop(&mut self) {
        for child in self.children.values_mut() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Agents {
    fn new() -> Self {
        let (sender, lines) = mpsc::channel();
        Self {
            children: BTreeMap::new(),
            lines,
            sender,
            owned: BTreeMap::new(),
        }
    }

    /// Starts the agent of `node` and returns its gossip address.
    fn spawn(&mut self, id: u64, node: &Path, groups: &[String]) -> SocketAddr {
        let mut child = Command::new(std::env::current_exe().expect("the test binary"))
            .args([
                "--exact",
                "fleet_agent_child",
                "--ignored",
                "--nocapture",
                "--test-threads=1",
            ])
            .env(NODE_ENV, node)
            .env(GROUPS_ENV, groups.join(","))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(node.with_extension("stderr")).expect("a stderr file"))
            .spawn()
            .expect("spawn an agent");
        let stdout = child.stdout.take().expect("piped");
        let sender = self.sender.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                // Anywhere in the line: libtest prints `test fleet_agent_child ... ` without a
                // line break before the child's first line.
                if let Some((_, rest)) = line.split_once(LINE_PREFIX)
                    && sender.send((id, rest.to_owned(), Instant::now())).is_err()
                {
                    break;
                }
            }
        });
        self.children.insert(id, child);
        let deadline = Instant::now() + START_LIMIT;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let (from, line, _) = self.lines.recv_timeout(left).unwrap_or_else(|_| {
                let stderr = std::fs::read_to_string(node.with_extension("stderr"));
                panic!("agent {id} did not start: {}", stderr.unwrap_or_default())
            });
            self.take(from, &line);
            if from == id
                && let Some(addr) = line.strip_prefix(&format!("ready {id} "))
            {
                return addr.parse().expect("an address");
            }
        }
    }

    /// Records an `owned` line.
    fn take(&mut self, id: u64, line: &str) {
        if let Some(rest) = line.strip_prefix(&format!("owned {id} ")) {
            let groups = rest
                .split(',')
                .filter(|g| !g.is_empty())
                .map(str::to_owned)
                .collect();
            self.owned.insert(id, groups);
        }
    }

    /// SIGKILL.
    fn kill(&mut self, id: u64) {
        let mut child = self.children.remove(&id).expect("a running agent");
        child.kill().expect("SIGKILL");
        let _ = child.wait();
        self.owned.remove(&id);
        // Lines it printed before it died are dropped.
    }

    fn each_owned_once(&self, groups: &[String]) -> bool {
        let mut count: BTreeMap<&str, usize> = BTreeMap::new();
        for (id, owned) in &self.owned {
            if self.children.contains_key(id) {
                for g in owned {
                    *count.entry(g).or_default() += 1;
                }
            }
        }
        count.len() == groups.len() && groups.iter().all(|g| count.get(g.as_str()) == Some(&1))
    }

    /// Waits (bounded) until every running agent owns a group and nothing changed for
    /// `quiet`: the coordinator's first placement puts every shard on the agents up at that
    /// moment and spreads them as the others join; a measurement kills a member of the final
    /// placement, not one of a rebalance under way.
    fn settle_spread(&mut self, groups: &[String], limit: Duration, quiet: Duration) -> bool {
        let deadline = Instant::now() + limit;
        loop {
            let spread = self.each_owned_once(groups)
                && self
                    .children
                    .keys()
                    .all(|id| self.owned.get(id).is_some_and(|g| !g.is_empty()));
            let Some(left) = deadline.checked_duration_since(Instant::now()) else {
                return false;
            };
            match self
                .lines
                .recv_timeout(if spread { quiet.min(left) } else { left })
            {
                Ok((id, line, _)) => {
                    if self.children.contains_key(&id) {
                        self.take(id, &line);
                    }
                }
                Err(_) => return spread,
            }
        }
    }

    /// Waits (bounded) until every group is owned by exactly one running agent, as they print
    /// it; the time of the line that made it so, or `None`.
    fn settle(&mut self, groups: &[String], limit: Duration) -> Option<Instant> {
        let deadline = Instant::now() + limit;
        if self.each_owned_once(groups) {
            return Some(Instant::now());
        }
        loop {
            let left = deadline.checked_duration_since(Instant::now())?;
            let (id, line, at) = self.lines.recv_timeout(left).ok()?;
            if !self.children.contains_key(&id) {
                continue;
            }
            self.take(id, &line);
            if self.each_owned_once(groups) {
                return Some(at);
            }
        }
    }
}

/// Which agent a run kills.
#[derive(Clone, Copy, Debug)]
enum Victim {
    /// The one owning the most groups.
    Busiest,
    /// This one.
    Agent(u64),
}

/// What one run saw.
struct Run {
    victim: u64,
    lost: usize,
    failover: Option<Duration>,
    target: Duration,
}

/// Starts 5 agent processes with `groups` groups, waits until each group is owned by exactly
/// one (and, with `spread`, until every agent owns some and 2 s passed without a change), kills `victim` with SIGKILL and waits (at most twice the target) until the others own
/// all.
fn run(victim: Victim, groups: usize, spread: bool) -> Run {
    let groups: Vec<String> = (0..groups).map(|i| format!("group-{i}")).collect();
    let dir = TempDir::new("fleet-process");
    let (ca, files) =
        meshkit_node::certs::write_dev_certs(dir.path(), AGENTS).expect("make certificates");
    let mut agents = Agents::new();
    let mut first: Option<SocketAddr> = None;
    let mut target = None;
    for f in &files {
        let id = f.id.get();
        let seeds: Vec<(u64, SocketAddr)> = first.map(|a| vec![(1, a)]).unwrap_or_default();
        let path = write_config_with(dir.path(), id, &seeds, &f.cert, &f.key, &ca, AGENT_NODE);
        let raw = RawFleetConfig {
            node: Some(format!("node-{id}.toml")),
            namespace: None,
        };
        target = Some(raw.validate(dir.path()).expect("valid").failover_target());
        let addr = agents.spawn(id, &path, &groups);
        first.get_or_insert(addr);
    }
    let target = target.expect("agents");
    let started = Instant::now();
    assert!(
        agents.settle(&groups, PLACE_LIMIT).is_some(),
        "not settled: {:?}",
        agents.owned
    );
    if spread {
        assert!(
            agents.settle_spread(&groups, PLACE_LIMIT, Duration::from_secs(2)),
            "not spread: {:?}",
            agents.owned
        );
    }
    println!(
        "{AGENTS} agent processes: settled {:?} after the last start: {:?}",
        started.elapsed(),
        agents.owned
    );
    let victim = match victim {
        Victim::Agent(id) => id,
        Victim::Busiest => agents
            .owned
            .iter()
            .max_by_key(|(id, g)| (g.len(), std::cmp::Reverse(**id)))
            .expect("agents")
            .0
            .to_owned(),
    };
    let lost = agents.owned.get(&victim).cloned().unwrap_or_default();
    let killed_at = Instant::now();
    agents.kill(victim);
    let settled = agents.settle(&groups, target * LOAD_ALLOWANCE);
    let failover = settled.map(|at| at.duration_since(killed_at));
    println!(
        "agent {victim} killed with SIGKILL ({} groups: {lost:?}): owned again after \
         {failover:?} (target {target:?}): {:?}",
        lost.len(),
        agents.owned
    );
    Run {
        victim,
        lost: lost.len(),
        failover,
        target,
    }
}

/// The regular test allows this many times the failover target: it runs beside the rest of
/// the workspace's tests on a loaded 2-core machine. The ignored measurement, run alone, holds
/// the target itself.
const LOAD_ALLOWANCE: u32 = 2;

/// Five agent processes, 8 groups: each owned by exactly one; the busiest agent killed with
/// SIGKILL: its groups owned by the four others within the failover target (8.6 s for a 2 s
/// lease TTL and the fixtures' membership timers; twice that allowed for the load of a full
/// test run), as the surviving processes print it.
#[test]
fn fleet_five_agents_one_killed() {
    let run = run(Victim::Busiest, GROUPS, false);
    assert!(run.lost > 0, "the busiest agent owned a group");
    let failover = run
        .failover
        .expect("the killed agent's groups are owned again");
    assert!(
        failover <= run.target * LOAD_ALLOWANCE,
        "failover {failover:?} over {LOAD_ALLOWANCE} x the target {:?}",
        run.target
    );
}

/// Issue 14's fleet figure: five runs, each killing another agent (voters 1-3, one of them
/// the Raft leader, and the non-voters 4-5) with SIGKILL; prints a table and the spread.
/// 32 groups over the 16 shards, so that every agent owns some (a victim owning none would
/// "fail over" in no time).
///
/// ```text
/// cargo test -p meshkit-probe --test fleet_process -- --ignored --nocapture fleet_process_failover_figures
/// ```
#[test]
#[ignore = "a measurement (about 90 s): run it with --ignored --nocapture"]
fn fleet_process_failover_figures() {
    let mut rows = Vec::new();
    for victim in 1..=AGENTS {
        rows.push(run(Victim::Agent(victim), 32, true));
    }
    println!("| run | killed (SIGKILL) | groups it owned | failover ms | target ms |");
    println!("| --- | --- | --- | --- | --- |");
    let mut times = Vec::new();
    for (i, r) in rows.iter().enumerate() {
        let ms = r.failover.map(|f| f.as_millis());
        println!(
            "| {} | agent {} | {} | {} | {} |",
            i + 1,
            r.victim,
            r.lost,
            ms.map_or("not owned again".to_owned(), |m| m.to_string()),
            r.target.as_millis()
        );
        if r.lost > 0 {
            times.extend(ms);
        }
    }
    times.sort_unstable();
    assert!(
        rows.iter()
            .all(|r| r.failover.is_some_and(|f| f <= r.target)),
        "every run failed over within the target"
    );
    assert!(!times.is_empty(), "a victim owned a group");
    println!(
        "failover: min {} ms, median {} ms, max {} ms over {} runs",
        times[0],
        times[times.len() / 2],
        times[times.len() - 1],
        times.len()
    );
}
