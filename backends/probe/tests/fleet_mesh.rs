//! Fleets of real agents' nodes on loopback (in-process `meshkit_node` nodes with QUIC and TLS,
//! one Raft group of three voters, 16 shards of `probe-groups` with 2 s leases): every group is
//! owned by exactly one agent, and the owners agree with the voters' lease table; a killed
//! agent's groups run again on the others within the failover target; a new agent takes a
//! share; a stopped agent hands its groups over; an agent without a quorum stops running its
//! groups within a TTL. `fleet_failover_figures` (ignored) measures
//! the failover of 5 agents over several runs:
//!
//! ```text
//! cargo test -p meshkit-probe --test fleet_mesh -- --ignored --nocapture fleet_failover_figures
//! ```
//!
//! Every wait is bounded; the nodes are stopped when each test ends.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use meshkit_probe::fleet::{Fleet, RawFleetConfig, shard_of};
use meshkit_testkit::fixtures::{TempDir, write_config_with};

/// The agents' node.toml beyond what the test fixtures write (ids, loopback addresses, TLS,
/// fast membership timers): voters 1-3, 16 shards of `probe-groups` with 2 s leases.
const AGENT_NODE: &str = "[leadership]\nvoters = [1, 2, 3]\nttl = \"2s\"\n\n\
    [leadership.raft]\ntick_interval = \"50ms\"\n\n\
    [shards]\nnamespaces = { probe-groups = 16 }\nttl = \"2s\"\n";
const SHARDS: u32 = 16;
/// The shard lease TTL of [`AGENT_NODE`].
const SHARD_TTL: Duration = Duration::from_secs(2);
/// From the first start to every group placed: the mesh forms, the voters elect, the
/// coordinator places 16 shards. Generous for a loaded 2-core machine.
const PLACE_LIMIT: Duration = Duration::from_secs(30);
/// The regular tests allow this many times the failover target: they run beside the rest of
/// the workspace's tests on a loaded 2-core machine, where a run beside another fleet test
/// once went over the 8.6 s target (at load 7; 4.9 s in the runs before and after). The
/// ignored measurement, run alone, holds the target itself.
const LOAD_ALLOWANCE: u32 = 2;
/// How often the test reads the agents' owned sets (a watch's current value: no I/O).
const STEP: Duration = Duration::from_millis(20);

fn groups(n: usize) -> Vec<String> {
    (0..n).map(|i| format!("group-{i}")).collect()
}

/// Writes `probes.toml`'s `[fleet]` for the agent whose node file is `node` and validates it
/// as the agent does.
fn fleet_config(dir: &Path, node: &Path) -> meshkit_probe::fleet::FleetConfig {
    let name = node.file_name().expect("a file name").to_string_lossy();
    let text = format!("node = {name:?}\n");
    let raw: RawFleetConfig = toml::from_str(&text).expect("a [fleet] table");
    raw.validate(dir).expect("a valid [fleet]")
}

struct Mesh {
    dir: TempDir,
    ca: PathBuf,
    files: Vec<meshkit_node::certs::NodeFiles>,
    fleets: BTreeMap<u64, Fleet>,
}

impl Mesh {
    /// Certificates for `certs` agents; agents `1..=start` started, each joining through the
    /// first one running.
    async fn start(name: &str, certs: u64, start: u64, groups: &[String]) -> Self {
        let dir = TempDir::new(name);
        let (ca, files) =
            meshkit_node::certs::write_dev_certs(dir.path(), certs).expect("make certificates");
        let mut mesh = Self {
            dir,
            ca,
            files,
            fleets: BTreeMap::new(),
        };
        for id in 1..=start {
            mesh.add(id, groups).await;
        }
        mesh
    }

    async fn add(&mut self, id: u64, groups: &[String]) {
        let seeds: Vec<(u64, SocketAddr)> = self
            .fleets
            .iter()
            .next()
            .map(|(&id, f)| vec![(id, f.gossip_addr())])
            .unwrap_or_default();
        let f = &self.files[usize::try_from(id).expect("a small id") - 1];
        let path = write_config_with(
            self.dir.path(),
            id,
            &seeds,
            &f.cert,
            &f.key,
            &self.ca,
            AGENT_NODE,
        );
        let config = fleet_config(self.dir.path(), &path);
        assert_eq!(config.shard_count(), SHARDS);
        assert_eq!(config.shard_ttl(), SHARD_TTL);
        // The fixtures' membership: 400 ms probes, 200 ms timeout, the 4 s suspicion floor.
        assert_eq!(config.detection(), Duration::from_millis(4_600));
        let fleet = Fleet::start(&config, groups.to_vec())
            .await
            .expect("the agent's fleet starts");
        assert_eq!(fleet.node_id(), id);
        self.fleets.insert(id, fleet);
    }

    /// Each running agent's owned groups now.
    fn owned(&self) -> BTreeMap<u64, BTreeSet<String>> {
        self.fleets
            .iter()
            .map(|(&id, f)| (id, f.owned().borrow().clone()))
            .collect()
    }

    /// Group -> the agents that own it.
    fn owners(&self) -> BTreeMap<String, Vec<u64>> {
        let mut owners: BTreeMap<String, Vec<u64>> = BTreeMap::new();
        for (id, groups) in self.owned() {
            for g in groups {
                owners.entry(g).or_default().push(id);
            }
        }
        owners
    }

    /// Whether each of `groups` is owned by exactly one running agent.
    fn each_owned_once(&self, groups: &[String]) -> bool {
        let owners = self.owners();
        groups
            .iter()
            .all(|g| owners.get(g).is_some_and(|o| o.len() == 1))
            && owners.len() == groups.len()
    }

    /// Waits until every group is owned by exactly one running agent, or `limit` passes; how
    /// long it took, or `None`.
    async fn settle(&self, groups: &[String], limit: Duration) -> Option<Duration> {
        let started = Instant::now();
        while started.elapsed() < limit {
            if self.each_owned_once(groups) {
                return Some(started.elapsed());
            }
            tokio::time::sleep(STEP).await;
        }
        None
    }

    /// The voters' lease table as the Raft leader applied it: shard id -> holder.
    async fn table(&self) -> BTreeMap<u32, u64> {
        for (&id, fleet) in self.fleets.range(1..=3) {
            let view = fleet.node().handle().leadership().await;
            let Ok(Some(view)) = view else { continue };
            if view.raft.as_ref().and_then(|r| r.leader) != Some(id) {
                continue;
            }
            return view
                .table
                .iter()
                .filter_map(|l| {
                    let id = l.scope.strip_prefix("shard/probe-groups/")?.parse().ok()?;
                    Some((id, l.holder))
                })
                .collect();
        }
        BTreeMap::new()
    }

    /// The Raft leader among the running voters, as they see it.
    async fn leader(&self) -> Option<u64> {
        for fleet in self.fleets.range(1..=3).map(|(_, f)| f) {
            if let Ok(Some(view)) = fleet.node().handle().leadership().await
                && let Some(leader) = view.raft.and_then(|r| r.leader)
            {
                return Some(leader);
            }
        }
        None
    }

    /// Waits until what each agent says it owns is what the voters' table says (the table may
    /// lag an applied entry behind a grant the agent heard of, so this is waited for, bounded).
    async fn agrees_with_the_voters(&self, groups: &[String]) -> Result<(), String> {
        let mut last = String::new();
        for _ in 0..100 {
            let table = self.table().await;
            let owned = self.owners();
            let mismatch: Vec<String> = groups
                .iter()
                .filter_map(|g| {
                    let holder = table.get(&shard_of(g, SHARDS)).copied();
                    let claims = owned.get(g).cloned().unwrap_or_default();
                    (claims != holder.into_iter().collect::<Vec<_>>())
                        .then(|| format!("{g}: table {holder:?}, agents {claims:?}"))
                })
                .collect();
            if mismatch.is_empty() {
                return Ok(());
            }
            last = mismatch.join("; ");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Err(last)
    }

    /// The running agent that owns the most groups (the lowest id on a tie).
    fn busiest(&self, among: impl Fn(u64) -> bool) -> (u64, BTreeSet<String>) {
        self.owned()
            .into_iter()
            .filter(|(id, _)| among(*id))
            .max_by_key(|(id, g)| (g.len(), std::cmp::Reverse(*id)))
            .expect("a running agent")
    }

    async fn kill(&mut self, id: u64) {
        let fleet = self.fleets.remove(&id).expect("a running agent");
        fleet.kill().await;
    }

    async fn stop_all(mut self) {
        while let Some((_, fleet)) = self.fleets.pop_first() {
            fleet.kill().await;
        }
    }
}

/// Three agents, 8 groups: each owned by exactly one agent, as the voters' table says. The
/// busiest agent is killed (its node stops without a leave, as a crash): its groups are owned
/// by the two others within the failover target, and only by them. A fourth agent joins and
/// takes a share; stopped, it hands its groups back without waiting for a lease to expire.
/// A reload (`set_groups`) adds and removes groups at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_group_runs_on_one_agent_and_moves_when_its_agent_dies() {
    let groups = groups(8);
    let mut mesh = Mesh::start("fleet", 4, 3, &groups).await;

    // 1. Settled: every group on exactly one agent, the one holding its shard's lease.
    let placed = mesh.settle(&groups, PLACE_LIMIT).await;
    assert!(placed.is_some(), "not settled: {:?}", mesh.owned());
    mesh.agrees_with_the_voters(&groups)
        .await
        .unwrap_or_else(|e| panic!("the agents against the voters' table: {e}"));
    println!("3 agents: settled after {placed:?}: {:?}", mesh.owned());
    for fleet in mesh.fleets.values() {
        for g in fleet.owned().borrow().iter() {
            assert!(fleet.held_shards().contains(&fleet.shard_of(g)));
        }
    }

    // 2. The busiest agent killed: its groups move to the others, within the target.
    let (victim, lost) = mesh.busiest(|_| true);
    assert!(!lost.is_empty(), "the busiest agent owns a group");
    let target = mesh.fleets[&victim].failover_target();
    assert_eq!(target, Duration::from_millis(8_600));
    let killed_at = Instant::now();
    mesh.kill(victim).await;
    let moved = mesh.settle(&groups, target * LOAD_ALLOWANCE).await;
    let elapsed = killed_at.elapsed();
    println!(
        "agent {victim} killed ({} groups): owned again after {elapsed:?} (target {target:?})",
        lost.len()
    );
    assert!(
        moved.is_some(),
        "not owned again within {LOAD_ALLOWANCE} x the target {target:?}: {:?}",
        mesh.owned()
    );
    for g in &lost {
        assert_ne!(mesh.owners()[g], vec![victim]);
    }
    mesh.agrees_with_the_voters(&groups)
        .await
        .unwrap_or_else(|e| panic!("after the kill: {e}"));

    // 3. A reload: one group removed, two added; the owned sets follow at once.
    let mut reloaded: Vec<String> = groups[1..].to_vec();
    reloaded.extend(["new-a".to_owned(), "new-b".to_owned()]);
    for fleet in mesh.fleets.values() {
        fleet.set_groups(reloaded.clone());
    }
    assert!(
        mesh.each_owned_once(&reloaded),
        "right after the reload: {:?}",
        mesh.owned()
    );
    assert!(!mesh.owners().contains_key(&groups[0]));

    // 4. A fourth agent (not a voter) joins and takes a share of the shards; stopped, it hands
    //    them back by transfer (no lease expiry to wait for).
    mesh.add(4, &reloaded).await;
    let joined = tokio::time::timeout(PLACE_LIMIT, async {
        let mut held = mesh.fleets[&4].owned();
        loop {
            if !mesh.fleets[&4].held_shards().is_empty() {
                break;
            }
            let _ = tokio::time::timeout(STEP * 10, held.changed()).await;
        }
    })
    .await;
    assert!(joined.is_ok(), "the new agent holds no shard");
    assert!(mesh.settle(&reloaded, PLACE_LIMIT).await.is_some());
    let newcomer = mesh.fleets.remove(&4).expect("agent 4");
    let shards = newcomer.held_shards();
    let mut newcomer_owned = newcomer.owned();
    let stopping = tokio::spawn(newcomer.stop());
    let handed = mesh.settle(&reloaded, SHARD_TTL * 3).await;
    println!(
        "agent 4 stopped ({} shards): groups owned by the others after {handed:?}",
        shards.len(),
    );
    assert!(handed.is_some(), "not handed over: {:?}", mesh.owned());
    // Handed over by transfer, not by expiry: well within one TTL.
    assert!(handed.is_some_and(|t| t < SHARD_TTL), "{handed:?}");
    stopping.await.expect("the stop ends");
    assert!(
        newcomer_owned.borrow_and_update().is_empty(),
        "a stopped agent owns nothing"
    );
    mesh.agrees_with_the_voters(&reloaded)
        .await
        .unwrap_or_else(|e| panic!("after the stop: {e}"));
    mesh.stop_all().await;
}

/// An agent cut off from a quorum of the voters (here: the two others killed) cannot renew its
/// leases, and stops running its groups once they run out by its own clock, within a TTL of
/// its last renewal: a minority never goes on probing beside the majority that took its
/// groups over.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_without_a_quorum_stops_running_its_groups() {
    let groups = groups(8);
    let mut mesh = Mesh::start("fleet-quorum", 3, 3, &groups).await;
    assert!(
        mesh.settle(&groups, PLACE_LIMIT).await.is_some(),
        "not settled: {:?}",
        mesh.owned()
    );
    let (alone, owned) = mesh.busiest(|_| true);
    assert!(!owned.is_empty());
    let others: Vec<u64> = mesh
        .fleets
        .keys()
        .copied()
        .filter(|&id| id != alone)
        .collect();
    let cut_at = Instant::now();
    for id in others {
        mesh.kill(id).await;
    }
    let mut watch = mesh.fleets[&alone].owned();
    // A TTL from the last renewal (at most a TTL ago), and a second for the timer and load.
    let limit = SHARD_TTL + Duration::from_secs(1);
    let emptied = tokio::time::timeout(limit, watch.wait_for(BTreeSet::is_empty))
        .await
        .is_ok_and(|r| r.is_ok());
    println!(
        "agent {alone} alone ({} groups): owns nothing after {:?}",
        owned.len(),
        cut_at.elapsed()
    );
    assert!(
        emptied,
        "agent {alone} still runs {:?} {limit:?} after losing its quorum",
        watch.borrow()
    );
    assert!(mesh.fleets[&alone].held_shards().is_empty());
    mesh.stop_all().await;
}

/// The failover of 5 agents (voters 1-3), 8 groups, over several runs: each run starts a fresh
/// fleet, kills one agent (each in turn, so a voter, the Raft leader and non-voters all die
/// once) and times until its groups are owned again; then a non-voter is stopped and the
/// handoff timed. Prints a table. Ignored: a minute and a half of a loaded machine.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a measurement: run it with --ignored --nocapture"]
async fn fleet_failover_figures() {
    const RUNS: u64 = 5;
    let groups = groups(8);
    let mut kills = Vec::new();
    let mut stops = Vec::new();
    println!("| run | killed | role | groups | failover ms | stopped | groups | handoff ms |");
    println!("| --- | --- | --- | --- | --- | --- | --- | --- |");
    for run in 1..=RUNS {
        let mut mesh = Mesh::start("fleet-figures", 5, 5, &groups).await;
        assert!(
            mesh.settle(&groups, PLACE_LIMIT).await.is_some(),
            "run {run}: not settled: {:?}",
            mesh.owned()
        );
        let victim = (run - 1) % 5 + 1;
        let leader = mesh.leader().await;
        let role = match victim {
            v if Some(v) == leader => "raft leader",
            1..=3 => "voter",
            _ => "member",
        };
        let lost = mesh.owned()[&victim].len();
        let target = mesh.fleets[&victim].failover_target();
        let killed_at = Instant::now();
        mesh.kill(victim).await;
        let failover = mesh.settle(&groups, target).await;
        let failover_ms = killed_at.elapsed().as_millis();
        assert!(
            failover.is_some(),
            "run {run}: not owned again within {target:?}"
        );
        kills.push(failover_ms);
        // A graceful stop of a non-voter that is still running.
        let (stopped, handed) = mesh.busiest(|id| id > 3);
        let fleet = mesh.fleets.remove(&stopped).expect("running");
        let stopping = tokio::spawn(fleet.stop());
        let handoff = mesh.settle(&groups, SHARD_TTL * 3).await;
        let handoff_ms = handoff.expect("handed over").as_millis();
        stopping.await.expect("the stop ends");
        stops.push(handoff_ms);
        println!(
            "| {run} | agent {victim} | {role} | {lost} | {failover_ms} | agent {stopped} | {} | {handoff_ms} |",
            handed.len()
        );
        mesh.stop_all().await;
    }
    kills.sort_unstable();
    stops.sort_unstable();
    println!(
        "failover (kill): min {} ms, median {} ms, max {} ms; handoff (stop): min {} ms, median {} ms, max {} ms; target {:?}",
        kills[0],
        kills[kills.len() / 2],
        kills[kills.len() - 1],
        stops[0],
        stops[stops.len() / 2],
        stops[stops.len() - 1],
        meshkit_probe::fleet::failover_target(SHARD_TTL, Duration::from_millis(4_600))
    );
}
