//! Lease acquire and renew latency through real nodes on loopback: three voters and one
//! non-voter, QUIC with mutual TLS, the default Raft timing. Each client node acquires
//! `--requests` distinct scopes one after another (each waits for its commit), then renews each
//! of them; the table gives the latency percentiles per client and operation.
//!
//! ```text
//! cargo run --release -p meshkit-benches --example lease_latency -- --requests 1000
//! ```

use std::net::SocketAddr;
use std::path::Path;
use std::time::{Duration, Instant};

use meshkit::lease::Scope;
use meshkit_node::config::NodeConfig;
use meshkit_node::node::{self, RunningNode};

const NODES: u64 = 4;

fn config(dir: &Path, id: u64, seed: Option<SocketAddr>) -> NodeConfig {
    let seeds = seed
        .map(|s| format!("seeds = [\"1@{s}\"]\n"))
        .unwrap_or_default();
    let text = format!(
        "id = {id}\nlisten = \"127.0.0.1:0\"\n{seeds}\n[tls]\ncert = \"node-{id}.pem\"\n\
         key = \"node-{id}.key\"\nca = \"ca.pem\"\n\n[membership]\nprobe_interval = \"400ms\"\n\
         probe_timeout = \"200ms\"\ngossip_interval = \"50ms\"\n\n[leadership]\nvoters = [1, 2, 3]\n"
    );
    let path = dir.join(format!("node-{id}.toml"));
    std::fs::write(&path, text).expect("write a config");
    NodeConfig::load(&path).expect("a valid config")
}

fn percentile(sorted: &[Duration], p: f64) -> f64 {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i].as_secs_f64() * 1e3
}

fn row(client: &str, op: &str, mut samples: Vec<Duration>) {
    samples.sort();
    println!(
        "| {client:<22} | {op:<7} | {:>5} | {:>7.3} | {:>7.3} | {:>7.3} | {:>7.3} |",
        samples.len(),
        percentile(&samples, 0.5),
        percentile(&samples, 0.9),
        percentile(&samples, 0.99),
        percentile(&samples, 1.0),
    );
}

/// Lease acquire and renew latency through real nodes on loopback.
#[derive(Debug, clap::Parser)]
struct Args {
    /// Scopes each client node acquires (then renews), one after another.
    #[arg(long, default_value_t = 1000, value_parser = clap::value_parser!(u64).range(1..=1_000_000))]
    requests: u64,
    /// Check the arguments, print them and run nothing (`scripts/check-docs.sh` checks the
    /// documented commands this way).
    #[arg(long)]
    dry_run: bool,
}

#[tokio::main(flavor = "multi_thread")]
async fn main() {
    let args = <Args as clap::Parser>::parse();
    if args.dry_run {
        println!("would run lease_latency with {args:?}; nothing ran (--dry-run)");
        return;
    }
    let requests = usize::try_from(args.requests).expect("at most 1,000,000 requests");
    let dir = std::env::temp_dir().join(format!("meshkit-lease-latency-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("a temporary directory");
    meshkit_node::certs::write_dev_certs(&dir, NODES).expect("certificates");
    let mut nodes: Vec<RunningNode> = Vec::new();
    for id in 1..=NODES {
        let seed = nodes.first().map(RunningNode::gossip_addr);
        nodes.push(
            node::start(&config(&dir, id, seed))
                .await
                .expect("a node starts"),
        );
    }
    // Wait for a Raft leader that every voter knows.
    let deadline = Instant::now() + Duration::from_secs(30);
    let leader = loop {
        let mut leaders = Vec::new();
        for n in &nodes[..3] {
            let view = n.handle().leadership().await.ok().flatten();
            leaders.push(view.and_then(|v| v.raft).and_then(|r| r.leader));
        }
        if let Some(Some(l)) = leaders.first().copied()
            && leaders.iter().all(|x| *x == Some(l))
        {
            break l;
        }
        assert!(Instant::now() < deadline, "no Raft leader within 30 s");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let follower = (1..=3).find(|id| *id != leader).expect("three voters");
    let clients = [
        (format!("node-{leader} (Raft leader)"), leader),
        (format!("node-{follower} (follower)"), follower),
        ("node-4 (not a voter)".to_owned(), 4),
    ];
    println!("{requests} acquires then {requests} renewals per client, one at a time, TTL 30 s\n");
    println!(
        "| client                 | op      |     n | p50 ms  | p90 ms  | p99 ms  | max ms  |"
    );
    println!("|---|---|---:|---:|---:|---:|---:|");
    let ttl = Duration::from_secs(30);
    for (name, id) in clients {
        let handle = nodes[id as usize - 1].handle();
        let scopes: Vec<Scope> = (0..requests)
            .map(|i| format!("bench/{id}/{i}").parse().expect("a scope"))
            .collect();
        let mut acquire = Vec::with_capacity(requests);
        for scope in &scopes {
            let t = Instant::now();
            handle.acquire(scope.clone(), ttl).await.expect("acquire");
            acquire.push(t.elapsed());
        }
        let mut renew = Vec::with_capacity(requests);
        for scope in &scopes {
            let t = Instant::now();
            handle.renew(scope.clone()).await.expect("renew");
            renew.push(t.elapsed());
        }
        for scope in &scopes {
            handle.release(scope.clone()).await.expect("release");
        }
        row(&name, "acquire", acquire);
        row(&name, "renew", renew);
    }
    for n in nodes {
        n.stop().await;
    }
    let _ = std::fs::remove_dir_all(&dir);
}
