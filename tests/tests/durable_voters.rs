//! Durable Raft voters between real `meshkitd` processes on loopback: three voters with a
//! `[leadership] data_dir` each and a non-voter holder of `global-control`. Voters are killed
//! with SIGKILL (no chance to flush anything) and started again on the same data_dir: a
//! follower, then the Raft leader, then all three at once. The group keeps committing, a
//! restarted voter comes back with its log (its applied index and term from before the kill,
//! read right after it starts), the fencing tokens the holder sees never go back, and with the
//! smallest compaction threshold every voter ends with a snapshot and a short log. Every wait
//! is a bounded poll. A second test brings a voter back after the leader compacted past it, so it
//! catches up by a snapshot larger than a QUIC datagram (sent on a stream).

mod common;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::daemon::{Daemon, start};
use common::{MeshctlAs, TempDir, write_config_with};
use meshkit_node::api::json::LeadershipView;
use meshkit_node::client::Protocols;

const LIMIT: Duration = Duration::from_secs(20);
const POLL: Duration = Duration::from_millis(100);
/// The smallest compaction threshold, so that the files hold snapshots, restarts replay them,
/// and a voter that was down for a few seconds catches up by the leader's snapshot.
const RAFT: &str = "[leadership.raft]\ntick_interval = \"50ms\"\ncompact_after_entries = 16\n";

/// What node 4 (the only contender) campaigns for, and the TTL it asks.
struct Workload {
    scopes: Vec<String>,
    ttl: &'static str,
}

impl Workload {
    fn one_lease() -> Self {
        Self {
            scopes: vec!["global-control".to_owned()],
            ttl: "1s",
        }
    }
}

fn leadership(dir: &Path, id: u64, workload: &Workload) -> String {
    let campaign: &[String] = if id == 4 { &workload.scopes } else { &[] };
    format!(
        "[leadership]\nvoters = [1, 2, 3]\ncampaign = {campaign:?}\nttl = \"{}\"\n\
         data_dir = {:?}\n\n{RAFT}",
        workload.ttl,
        dir.join(format!("raft-{id}")).display().to_string()
    )
}

struct Cluster {
    dir: TempDir,
    token_file: PathBuf,
    configs: Vec<PathBuf>,
    daemons: Vec<Option<Daemon>>,
}

impl Cluster {
    fn start(workload: &Workload) -> Self {
        let dir = TempDir::new("durable-voters");
        let (ca, files) = meshkit_node::certs::write_dev_certs(dir.path(), 4).unwrap();
        let token_file = common::observer_token_file(dir.path());
        let mut configs = Vec::new();
        let mut daemons: Vec<Option<Daemon>> = Vec::new();
        for f in &files {
            let seeds: Vec<(u64, SocketAddr)> = daemons
                .first()
                .and_then(Option::as_ref)
                .map(|d| vec![(1, d.gossip)])
                .unwrap_or_default();
            let extra = leadership(dir.path(), f.id.get(), workload);
            let path =
                write_config_with(dir.path(), f.id.get(), &seeds, &f.cert, &f.key, &ca, &extra);
            daemons.push(Some(start(&path)));
            configs.push(path);
        }
        Self {
            dir,
            token_file,
            configs,
            daemons,
        }
    }

    /// The view of node `id` (1-based), if it answers.
    fn view(&self, id: u64) -> Option<LeadershipView> {
        let d = self.daemons[id as usize - 1].as_ref()?;
        let out = common::meshctl(
            self.dir.path(),
            &d.control,
            MeshctlAs::TokenFile(&self.token_file),
            ["leaders", "status", "--json"],
        )
        .output()
        .ok()?;
        if !out.status.success() {
            return None;
        }
        serde_json::from_slice(&out.stdout).ok()
    }

    /// SIGKILL, then a start with the same configuration (and data_dir). Restarting nodes
    /// join through a running voter: the first of the others still up.
    fn kill(&mut self, id: u64) {
        let d = self.daemons[id as usize - 1]
            .take()
            .expect("a running node");
        drop(d); // Drop sends SIGKILL and reaps the process.
    }

    fn restart(&mut self, id: u64) {
        // The node's config names node 1 as its seed (or none for node 1): rewrite its seeds
        // to any running node, since the gossip ports changed.
        let seed = (1..=4u64).filter(|other| *other != id).find_map(|other| {
            self.daemons[other as usize - 1]
                .as_ref()
                .map(|d| (other, d.gossip))
        });
        let path = &self.configs[id as usize - 1];
        let text = std::fs::read_to_string(path).unwrap();
        let seeds = seed.map_or_else(String::new, |(o, a)| format!("\"{o}@{a}\""));
        let text: String = text
            .lines()
            .map(|l| {
                if l.starts_with("seeds = ") {
                    format!("seeds = [{seeds}]\n")
                } else {
                    format!("{l}\n")
                }
            })
            .collect();
        std::fs::write(path, text).unwrap();
        self.daemons[id as usize - 1] = Some(start(path));
    }

    /// The Raft leader every answering voter names, if they agree.
    fn raft_leader(&self) -> Option<u64> {
        let leaders: Vec<Option<u64>> = (1..=3)
            .filter_map(|v| self.view(v))
            .filter_map(|v| v.raft.map(|r| r.leader))
            .collect();
        let first = (*leaders.first()?)?;
        (leaders.len() >= 2 && leaders.iter().all(|l| *l == Some(first))).then_some(first)
    }

    /// The holder's token on `global-control`, if node 4 holds it.
    fn held_token(&self) -> Option<u64> {
        self.view(4)?
            .held
            .into_iter()
            .find(|h| h.scope == "global-control" && h.expires_in_ms > 0)
            .map(|h| h.token)
    }

    /// `(term, applied index)` of voter `id`.
    fn raft_state(&self, id: u64) -> Option<(u64, u64)> {
        self.view(id)?.raft.map(|r| (r.term, r.applied_index))
    }
}

fn eventually<T>(limit: Duration, mut check: impl FnMut() -> Option<T>) -> Option<T> {
    let deadline = Instant::now() + limit;
    for _ in 0..=(limit.as_millis() / POLL.as_millis()) {
        if let Some(v) = check() {
            return Some(v);
        }
        if Instant::now() >= deadline {
            break;
        }
        std::thread::sleep(POLL);
    }
    None
}

/// Waits until the holder holds `global-control` with a token at least `min` (tokens never go
/// back), and returns it.
fn holder_token_at_least(c: &Cluster, min: u64) -> u64 {
    let token = eventually(LIMIT, || c.held_token()).expect("node 4 holds global-control");
    assert!(
        token >= min,
        "the holder's token went back: {token} after {min}"
    );
    token
}

/// The restarted voter `id` shows, as soon as it answers, a term and an applied index at least
/// those it had before the kill: they come from its data_dir (a fresh voter starts at term 1
/// with the founders' three entries).
fn check_restored(c: &Cluster, id: u64, before: (u64, u64)) {
    let after = eventually(LIMIT, || c.raft_state(id)).expect("the restarted voter answers");
    assert!(
        after.0 >= before.0 && after.1 >= before.1,
        "voter {id} restarted at (term, applied) {after:?}, had {before:?}"
    );
    assert!(
        after.1 > 3,
        "voter {id} restarted without its log: {after:?}"
    );
}

/// Waits until the group commits past `index` (the leader's applied index moves on).
fn keeps_committing(c: &Cluster, index: u64) {
    let moved = eventually(LIMIT, || {
        let leader = c.raft_leader()?;
        let (_, applied) = c.raft_state(leader)?;
        (applied > index).then_some(applied)
    });
    assert!(moved.is_some(), "the group stopped committing at {index}");
}

#[test]
fn voters_restarted_on_their_data_dir_rejoin_with_their_log_and_tokens_keep_increasing() {
    let mut c = Cluster::start(&Workload::one_lease());
    let leader = eventually(LIMIT, || c.raft_leader()).expect("a Raft leader");
    let mut token = holder_token_at_least(&c, 0);

    // A follower, killed and started on its data_dir.
    let follower = (1..=3).find(|v| *v != leader).unwrap();
    let before = c.raft_state(follower).unwrap();
    c.kill(follower);
    keeps_committing(&c, before.1);
    c.restart(follower);
    check_restored(&c, follower, before);
    token = holder_token_at_least(&c, token);

    // The Raft leader, killed and started on its data_dir.
    let leader = eventually(LIMIT, || c.raft_leader()).expect("a Raft leader");
    let before = c.raft_state(leader).unwrap();
    c.kill(leader);
    let next = eventually(LIMIT, || c.raft_leader().filter(|l| *l != leader))
        .expect("another voter leads");
    assert_ne!(next, leader);
    c.restart(leader);
    check_restored(&c, leader, before);
    keeps_committing(&c, before.1);
    token = holder_token_at_least(&c, token);

    // Every voter at once: nothing but the data_dirs holds the log and the lease table.
    let before: Vec<(u64, u64)> = (1..=3).map(|v| c.raft_state(v).unwrap()).collect();
    for v in 1..=3 {
        c.kill(v);
    }
    for v in 1..=3 {
        c.restart(v);
    }
    for v in 1..=3 {
        check_restored(&c, v, before[v as usize - 1]);
    }
    let leader = eventually(LIMIT, || c.raft_leader()).expect("a Raft leader after the restart");
    keeps_committing(&c, before[leader as usize - 1].1);
    let last = holder_token_at_least(&c, token);
    // The voters' tables agree with the holder.
    let table_token = eventually(LIMIT, || {
        c.view(leader)?
            .table
            .into_iter()
            .find(|l| l.scope == "global-control")
            .map(|l| l.token)
    })
    .expect("the leader's table holds global-control");
    assert!(table_token >= token, "{table_token} < {token}");
    assert!(last >= token);
    for v in 1..=3 {
        assert!(
            c.dir
                .path()
                .join(format!("raft-{v}"))
                .join("raft.log")
                .exists(),
            "voter {v} has a Raft file"
        );
        let raft = c
            .view(v)
            .and_then(|view| view.raft)
            .expect("a voter's view");
        assert!(
            raft.snapshot_index > 0 && raft.log_entries <= 16 + 4 + 16,
            "voter {v} compacted its log: {raft:?}"
        );
    }
}

/// Node `id`'s `/metrics` text, if it answers (read with node-1's certificate, which may
/// observe).
fn metrics(c: &Cluster, id: u64) -> Option<String> {
    let d = c.daemons[id as usize - 1].as_ref()?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .ok()?;
    runtime.block_on(async {
        let client = common::client(c.dir.path(), Protocols::TcpOnly);
        let response = client.get(&d.control, "/metrics").await.ok()?;
        client.close().await;
        (response.status == 200).then_some(response.body)
    })
}

/// The value of `series` (name and labels, exactly as exposed) in a `/metrics` text.
fn sample(metrics: &str, series: &str) -> Option<f64> {
    metrics
        .lines()
        .find_map(|l| l.strip_prefix(series)?.trim().parse().ok())
}

/// A voter that was down while the leader compacted its log past the voter's last entry gets
/// the lease table as a Raft snapshot. With 60 leases that snapshot is larger than a QUIC
/// datagram, so it crosses on its own stream: the whole path of a large message (the core's
/// `MsgSnapshot`, the driver, the QUIC stream, the restarted voter's install), which the unit
/// tests only cover piecewise.
#[test]
fn a_voter_behind_the_compacted_log_catches_up_by_a_snapshot_larger_than_a_datagram() {
    let scopes: Vec<String> = (1..=60).map(|i| format!("shard/big/{i}")).collect();
    let mut c = Cluster::start(&Workload {
        scopes: scopes.clone(),
        ttl: "3s",
    });
    let leader = eventually(LIMIT, || c.raft_leader()).expect("a Raft leader");
    let all_held = |c: &Cluster| {
        let held = c.view(4)?.held;
        (held.iter().filter(|h| h.expires_in_ms > 0).count() == scopes.len()).then_some(())
    };
    eventually(LIMIT, || all_held(&c)).expect("node 4 holds all 60 scopes");

    let follower = (1..=3).find(|v| *v != leader).unwrap();
    let (_, behind) = c.raft_state(follower).unwrap();
    c.kill(follower);
    // Renewals (60 every second) go on; the leader compacts every 16 entries. `behind` is the
    // follower's applied index some time before the kill, and its log may end further on (on a
    // loaded machine, by dozens of entries): compacting 180 entries (3 s of renewals) past it
    // leaves no entry the follower could catch up from but the snapshot.
    eventually(LIMIT, || {
        let raft = c.view(leader)?.raft?;
        (raft.snapshot_index > behind + 180).then_some(())
    })
    .expect("the leader compacts past the killed follower's last entry");
    let compacted = c.view(leader).and_then(|v| v.raft).unwrap().snapshot_index;
    c.restart(follower);

    // Only a snapshot can bring it past the compacted part of the leader's log.
    eventually(LIMIT, || {
        let view = c.view(follower)?;
        let raft = view.raft?;
        let leases = view
            .table
            .iter()
            .filter(|l| l.scope.starts_with("shard/big/"))
            .count();
        (raft.applied_index >= compacted && leases == scopes.len()).then_some(())
    })
    .expect("the restarted follower catches up with every lease");
    let text = metrics(&c, follower).expect("the restarted follower's /metrics");
    let streamed = sample(
        &text,
        "mesh_transport_stream_messages_total{direction=\"received\"}",
    )
    .unwrap_or(0.0);
    let bytes = sample(
        &text,
        "mesh_transport_stream_bytes_total{direction=\"received\"}",
    )
    .unwrap_or(0.0);
    assert!(
        streamed >= 1.0 && bytes > 1_200.0,
        "the snapshot came on a stream: {streamed} messages, {bytes} bytes"
    );
    assert_eq!(
        sample(&text, "mesh_transport_streams_refused_total"),
        Some(0.0),
        "no stream refused"
    );
}
