//! Failover of a lease among real `meshkitd` processes: `kill -9` of the holder of
//! `global-control`, repeated, and the time until another node holds it with a higher fencing
//! token, as percentiles.
//!
//! ```text
//! cargo build --release -p meshkit-cli -p meshkit-benches --bins --examples
//! target/release/examples/failover_runs [--runs 20] [--holders all|non-voters] [--json]
//! ```
//!
//! Five daemons on 127.0.0.1 (QUIC with mutual TLS, the `lan` membership profile, Raft ticks of
//! 50 ms), nodes 1-3 the Raft voters, `global-control` with a 3 s TTL contended for by every
//! node (`--holders all`) or by nodes 4 and 5 only (`--holders non-voters`). Each run:
//!
//! 1. waits until every node counts five alive, the running voters agree on the holder, and
//!    the holder itself reports holding the lease (its token T);
//! 2. waits a random 0 to 1 s more (a renewal period: renewals go out a third of the way
//!    through the TTL), so the kill lands anywhere in the holder's renewal cycle;
//! 3. sends SIGKILL to the holder and notes the wall-clock time;
//! 4. polls the other nodes' `GET /meshkit/leaders` every 20 ms until one of them reports
//!    holding `global-control` with a token above T (the **observed** time), then reads that
//!    node's leadership feed for its `acquired` entry (the **acquired** time: the new holder's
//!    own record, in Unix milliseconds on the same clock, so polling and loopback HTTP latency
//!    are not in it);
//! 5. restarts the killed node as a fresh process (a new port, a new incarnation); a voter
//!    comes back with its Raft log from its `[leadership] data_dir`, so one cluster serves
//!    every run (a new one only after a run failed) and the kills land on a cluster that has
//!    been running, as in production, not on one a few seconds old.
//!
//! The table gives both times per kind of holder killed (the Raft leader, a follower voter, a
//! non-voter), p50/p90/p99/max by nearest rank: with 20 runs p99 is the maximum. Every wait is
//! bounded; a run that does not fail over within 15 s is reported and ends the cluster. Every
//! process is killed when the program ends, on an error, or on Ctrl-C / SIGTERM.

use meshkit_testkit::cluster as support;

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use clap::{Parser, ValueEnum};
use support::{BenchError, Cluster, Layout};

const NODES: u64 = 5;
const VOTERS: u64 = 3;
const TTL_S: u64 = 3;
const SCOPE: &str = "global-control";
/// How long a (re)started cluster gets to be ready for a kill.
const READY_LIMIT: Duration = Duration::from_secs(60);
/// How long a failover may take before the run counts as failed.
const FAILOVER_LIMIT: Duration = Duration::from_secs(15);
const READY_POLL: Duration = Duration::from_millis(200);
const DETECT_POLL: Duration = Duration::from_millis(20);
/// A renewal period: the campaign renews a third of the way through the TTL.
const RENEW_PERIOD_MS: u64 = TTL_S * 1000 / 3;

/// Which nodes contend for `global-control`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
enum Holders {
    /// All five: the holder may be the Raft leader, a follower voter or a non-voter.
    All,
    /// Nodes 4 and 5 only: every kill is of a non-voter, and the cluster is never restarted.
    NonVoters,
}

/// Repeated kill -9 of the lease holder among five real meshkitd processes.
#[derive(Debug, Parser)]
#[command(name = "failover_runs")]
struct Args {
    /// Kills to measure.
    #[arg(long, default_value_t = 20, value_parser = clap::value_parser!(u64).range(1..=1000))]
    runs: u64,
    /// Which nodes contend for the lease.
    #[arg(long, value_enum, default_value_t = Holders::All)]
    holders: Holders,
    /// Seed of the random wait before each kill.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// The meshkitd binary (default: the one beside this example's directory).
    #[arg(long)]
    meshkitd: Option<PathBuf>,
    /// Print one JSON document instead of the tables.
    #[arg(long)]
    json: bool,
    /// Check the arguments, print them and run nothing (`scripts/check-docs.sh` checks the
    /// documented commands this way).
    #[arg(long)]
    dry_run: bool,
}

fn main() -> ExitCode {
    let args = Args::parse();
    if args.dry_run {
        println!("would run failover_runs with {args:?}; nothing ran (--dry-run)");
        return ExitCode::SUCCESS;
    }
    support::run_main("failover_runs", run(args))
}

/// The kind of node killed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
enum Killed {
    RaftLeader,
    Follower,
    NonVoter,
}

impl Killed {
    fn label(self) -> &'static str {
        match self {
            Self::RaftLeader => "the Raft leader (a voter)",
            Self::Follower => "a follower voter",
            Self::NonVoter => "a non-voter",
        }
    }
}

/// One measured kill.
#[derive(Clone, Debug, serde::Serialize)]
struct Run {
    run: u64,
    killed_node: u64,
    killed: Killed,
    old_token: u64,
    new_holder: u64,
    new_token: u64,
    /// From the kill to the new holder's `acquired` feed entry.
    acquired_s: Option<f64>,
    /// From the kill to the first poll answer showing the new holder.
    observed_s: f64,
}

/// SplitMix64: a tiny seeded generator for the waits (no OS entropy: a seed replays the waits).
struct SplitMix(u64);

impl SplitMix {
    fn below(&mut self, n: u64) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        (z ^ (z >> 31)) % n
    }
}

fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// The holder of [`SCOPE`] and its token when the cluster is ready for a kill: every node sees
/// all five alive, the running voters agree on the holder, and the holder reports holding it.
async fn ready(cluster: &Cluster) -> Option<(u64, u64)> {
    if cluster.running().len() as u64 != NODES || !cluster.all_see_alive(NODES).await {
        return None;
    }
    let mut holders = Vec::new();
    for voter in 1..=VOTERS {
        let view = cluster.leaders(voter).await.ok()?;
        holders.push(view.table.iter().find(|l| l.scope == SCOPE)?.holder);
    }
    holders.dedup();
    let [holder] = holders[..] else {
        return None;
    };
    held_token(cluster, holder)
        .await
        .map(|token| (holder, token))
}

/// The token of [`SCOPE`] as node `id` reports holding it.
async fn held_token(cluster: &Cluster, id: u64) -> Option<u64> {
    let view = cluster.leaders(id).await.ok()?;
    view.held.iter().find(|h| h.scope == SCOPE).map(|h| h.token)
}

/// The Raft leader as the first voter that answers knows it.
async fn raft_leader(cluster: &Cluster) -> Option<u64> {
    for voter in 1..=VOTERS {
        if let Some(leader) = cluster
            .leaders(voter)
            .await
            .ok()
            .and_then(|v| v.raft)
            .and_then(|r| r.leader)
        {
            return Some(leader);
        }
    }
    None
}

async fn run(args: Args) -> Result<(), BenchError> {
    let bin = support::meshkitd_path(args.meshkitd.clone())?;
    let layout = Layout {
        nodes: NODES,
        voters: VOTERS,
        scopes: vec![SCOPE.to_owned()],
        campaigners: match args.holders {
            Holders::All => 1..=NODES,
            Holders::NonVoters => VOTERS + 1..=NODES,
        },
        ttl_s: TTL_S,
        membership: String::new(),
        durable_voters: true,
    };
    let mut rng = SplitMix(args.seed);
    let load_before = support::load_average();
    let started = Instant::now();
    let mut cluster: Option<Cluster> = None;
    let mut clusters_started = 0;
    let mut runs: Vec<Run> = Vec::new();
    let mut failures: Vec<String> = Vec::new();
    for run in 1..=args.runs {
        let c = match cluster.take() {
            Some(c) => c,
            None => {
                let mut c = Cluster::new(bin.clone(), layout.clone(), "failover-runs")?;
                c.start_all()?;
                clusters_started += 1;
                c
            }
        };
        let c = cluster.insert(c);
        let shared: &Cluster = c;
        let Some((holder, _)) =
            support::poll_until(READY_LIMIT, READY_POLL, || ready(shared)).await
        else {
            failures.push(format!("run {run}: not ready within {READY_LIMIT:?}"));
            cluster = None;
            continue;
        };
        tokio::time::sleep(Duration::from_millis(rng.below(RENEW_PERIOD_MS))).await;
        let leader = raft_leader(c).await;
        let Some(old_token) = held_token(c, holder).await else {
            failures.push(format!(
                "run {run}: node-{holder} stopped holding before the kill"
            ));
            continue;
        };
        let killed = if holder > VOTERS {
            Killed::NonVoter
        } else if leader == Some(holder) {
            Killed::RaftLeader
        } else {
            Killed::Follower
        };
        let killed_unix_ms = unix_ms();
        let killed_at = Instant::now();
        c.kill(holder);
        let survivors = c.running();
        let c = &*c;
        let found = support::poll_until(FAILOVER_LIMIT, DETECT_POLL, || {
            let survivors = &survivors;
            async move {
                for id in survivors {
                    if let Some(token) = held_token(c, *id).await
                        && token > old_token
                    {
                        return Some((*id, token, killed_at.elapsed()));
                    }
                }
                None
            }
        })
        .await;
        let Some((new_holder, new_token, observed)) = found else {
            failures.push(format!(
                "run {run}: no new holder within {FAILOVER_LIMIT:?} after killing node-{holder}"
            ));
            cluster = None;
            continue;
        };
        let acquired_s = c.feed(new_holder).await.ok().and_then(|entries| {
            support::acquired_at(&entries, SCOPE, old_token)
                .map(|(ms, _)| ms.saturating_sub(killed_unix_ms) as f64 / 1e3)
        });
        runs.push(Run {
            run,
            killed_node: holder,
            killed,
            old_token,
            new_holder,
            new_token,
            acquired_s,
            observed_s: observed.as_secs_f64(),
        });
        if !args.json {
            eprintln!(
                "run {run}: killed node-{holder} ({}), node-{new_holder} holds with token \
                 {new_token} > {old_token}: acquired {}, observed {:.3} s",
                killed.label(),
                acquired_s.map_or("?".to_owned(), |s| format!("{s:.3} s")),
                observed.as_secs_f64()
            );
        }
        // A killed node comes back as a fresh process (a new port, a new incarnation); a
        // voter with its Raft log, from its data_dir.
        if let Some(c) = &mut cluster {
            c.start(holder)?;
        }
    }
    drop(cluster);
    let load_after = support::load_average();
    let elapsed = started.elapsed();

    let mut groups: Vec<(String, Vec<&Run>)> = Vec::new();
    for kind in [Killed::RaftLeader, Killed::Follower, Killed::NonVoter] {
        let rs: Vec<&Run> = runs.iter().filter(|r| r.killed == kind).collect();
        if !rs.is_empty() {
            groups.push((kind.label().to_owned(), rs));
        }
    }
    groups.push(("all".to_owned(), runs.iter().collect()));
    let summary = |rs: &[&Run], observed: bool| -> [f64; 4] {
        let xs = support::sorted(rs.iter().filter_map(|r| {
            if observed {
                Some(r.observed_s)
            } else {
                r.acquired_s
            }
        }));
        [0.5, 0.9, 0.99, 1.0].map(|q| support::quantile(&xs, q))
    };

    if args.json {
        let stats: Vec<serde_json::Value> = groups
            .iter()
            .map(|(name, rs)| {
                let [p50, p90, p99, max] = summary(rs, false);
                let [o50, o90, o99, omax] = summary(rs, true);
                serde_json::json!({
                    "killed": name, "runs": rs.len(),
                    "acquired_s": {"p50": p50, "p90": p90, "p99": p99, "max": max},
                    "observed_s": {"p50": o50, "p90": o90, "p99": o99, "max": omax},
                })
            })
            .collect();
        let doc = serde_json::json!({
            "nodes": NODES, "voters": VOTERS, "ttl_s": TTL_S, "scope": SCOPE,
            "holders": args.holders, "seed": args.seed,
            "load_before": load_before, "load_after": load_after,
            "elapsed_s": elapsed.as_secs_f64(), "clusters_started": clusters_started,
            "failures": failures, "summary": stats, "runs": runs,
        });
        println!("{}", serde_json::to_string_pretty(&doc)?);
        return Ok(());
    }

    println!(
        "{NODES} meshkitd on 127.0.0.1, voters 1-{VOTERS}, {SCOPE} with a {TTL_S} s TTL contended \
         for by {}; kill -9 of the holder at a random point of its renewal period",
        match args.holders {
            Holders::All => "every node",
            Holders::NonVoters => "nodes 4 and 5 only",
        }
    );
    println!(
        "{} runs measured, {} failed; {clusters_started} cluster(s) started; {:.0} s in all",
        runs.len(),
        failures.len(),
        elapsed.as_secs_f64()
    );
    println!("load average before: {load_before}; after: {load_after}\n");
    println!("| holder killed | runs | time to | p50 s | p90 s | p99 s | max s |");
    println!("|---|---:|---|---:|---:|---:|---:|");
    for (name, rs) in &groups {
        for (what, observed) in [("acquired", false), ("observed", true)] {
            let [p50, p90, p99, max] = summary(rs, observed);
            println!(
                "| {name} | {} | {what} | {p50:.3} | {p90:.3} | {p99:.3} | {max:.3} |",
                rs.len()
            );
        }
    }
    for failure in &failures {
        println!("FAILED {failure}");
    }
    Ok(())
}
