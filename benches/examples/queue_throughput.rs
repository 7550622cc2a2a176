//! Task-queue throughput and acknowledgement latency through real nodes on loopback: three
//! voters, QUIC with mutual TLS, `--shards` shards of one queue, each item replicated to one
//! replica before its enqueue is acknowledged (`[queues] replicas = 1`, checkpoints synced to
//! disk). Producers on every node keep `--in-flight` enqueues outstanding each, spread over the
//! shards; workers on every node lease and complete. The table gives the items per second
//! completed (in total and per shard), the enqueue acknowledgement latency and the
//! enqueue-to-completion latency, against the targets of issue 16.
//!
//! ```text
//! cargo run --release -p meshkit-benches --example queue_throughput -- --items 20000
//! cargo run --release -p meshkit-benches --example queue_throughput -- --items 2000 --shards 1 --lease-max 16
//! ```
//!
//! Producers and workers use the library API of the node they run on (`NodeHandle`), so the
//! figures are the queue protocol's and the nodes', without an HTTP hop.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use meshkit::queue::QueueError;
use meshkit::shard::ShardId;
use meshkit_node::config::NodeConfig;
use meshkit_node::node::{self, RunningNode};
use meshkit_node::queue_host::{LAG_BOUNDS, QueueCallError};
use tokio::sync::Mutex;

const NODES: u64 = 3;
/// Bound on the whole measurement.
const LIMIT: Duration = Duration::from_secs(300);

/// Task-queue throughput and latency through real nodes on loopback.
#[derive(Debug, clap::Parser)]
struct Args {
    /// Items enqueued in total (spread over the nodes' producers).
    #[arg(long, default_value_t = 20_000, value_parser = clap::value_parser!(u64).range(1..=10_000_000))]
    items: u64,
    /// Shards of the queue.
    #[arg(long, default_value_t = 16, value_parser = clap::value_parser!(u32).range(1..=256))]
    shards: u32,
    /// Enqueues each node keeps outstanding (its producers).
    #[arg(long, default_value_t = 32, value_parser = clap::value_parser!(u64).range(1..=1024))]
    in_flight: u64,
    /// Workers per node, each leasing and completing one item at a time (or up to
    /// `--lease-max` at a time).
    #[arg(long, default_value_t = 32, value_parser = clap::value_parser!(u64).range(1..=1024))]
    workers: u64,
    /// Items a worker leases per request (`queue_lease_up_to`); it completes them together.
    /// 1: one lease request per item (`queue_lease`).
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u16).range(1..=256))]
    lease_max: u16,
    /// When a replica acknowledges what it applied (`[queues] ack_after`): `sync` (its
    /// checkpoint synced, the default) or `write` (written, the sync following).
    #[arg(long, default_value = "sync", value_parser = ["sync", "write"])]
    ack_after: String,
    /// Check the arguments, print them and run nothing (`scripts/check-docs.sh` checks the
    /// documented commands this way).
    #[arg(long)]
    dry_run: bool,
}

fn config(
    dir: &Path,
    id: u64,
    seed: Option<std::net::SocketAddr>,
    shards: u32,
    ack_after: &str,
) -> NodeConfig {
    let seeds = seed
        .map(|s| format!("seeds = [\"1@{s}\"]\n"))
        .unwrap_or_default();
    let text = format!(
        "id = {id}\nlisten = \"127.0.0.1:0\"\n{seeds}\n[tls]\ncert = \"node-{id}.pem\"\n\
         key = \"node-{id}.key\"\nca = \"ca.pem\"\n\n[membership]\nprobe_interval = \"400ms\"\n\
         probe_timeout = \"200ms\"\ngossip_interval = \"50ms\"\n\n[leadership]\nvoters = [1, 2, 3]\n\
         ttl = \"3s\"\n\n[shards]\nnamespaces = {{ jobs = {shards} }}\nttl = \"3s\"\n\n\
         [queues]\ndata_dir = \"queues-{id}\"\nreplicas = 1\nlease_timeout = \"30s\"\n\
         max_items = 1000000\nack_after = \"{ack_after}\"\n"
    );
    let path = dir.join(format!("node-{id}.toml"));
    std::fs::write(&path, text).expect("write a config");
    NodeConfig::load(&path).expect("a valid config")
}

fn percentile(sorted: &[Duration], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i].as_secs_f64() * 1e3
}

/// A routing race (no owner known yet, the owner rebuilding, the old owner): retry.
fn retryable(e: &QueueCallError) -> bool {
    matches!(
        e,
        QueueCallError::Queue(
            QueueError::NoOwner | QueueError::NotOwner { .. } | QueueError::Recovering
        )
    )
}

async fn every_shard_served(nodes: &[RunningNode], shards: u32) -> bool {
    let mut served = 0;
    for n in nodes {
        if let Ok(s) = n.handle().snapshot().await
            && let Some(q) = s.queues
        {
            served += q.served.iter().filter(|q| !q.recovering).count();
        }
    }
    served == shards as usize
}

#[tokio::main(flavor = "multi_thread")]
async fn main() {
    let args = <Args as clap::Parser>::parse();
    if args.dry_run {
        println!("would run queue_throughput with {args:?}; nothing ran (--dry-run)");
        return;
    }
    let dir = std::env::temp_dir().join(format!("meshkit-queue-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("a temporary directory");
    meshkit_node::certs::write_dev_certs(&dir, NODES).expect("certificates");
    let mut nodes: Vec<RunningNode> = Vec::new();
    for id in 1..=NODES {
        let seed = nodes.first().map(RunningNode::gossip_addr);
        let config = config(&dir, id, seed, args.shards, &args.ack_after);
        nodes.push(node::start(&config).await.expect("a node starts"));
    }
    let deadline = Instant::now() + Duration::from_secs(60);
    while !every_shard_served(&nodes, args.shards).await {
        assert!(Instant::now() < deadline, "not every shard served in 60 s");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let shards: Vec<ShardId> = (0..args.shards)
        .map(|i| ShardId::new("jobs", i).expect("a shard"))
        .collect();

    let start = Instant::now();
    let next = Arc::new(AtomicU64::new(0));
    let completed = Arc::new(AtomicU64::new(0));
    let acks = Arc::new(Mutex::new(Vec::new()));
    let ends = Arc::new(Mutex::new(Vec::new()));
    let per_shard = Arc::new(Mutex::new(BTreeMap::<u32, u64>::new()));
    let mut tasks = Vec::new();
    for n in &nodes {
        for _ in 0..args.in_flight {
            let (handle, shards, next, acks) = (
                n.handle().clone(),
                shards.clone(),
                next.clone(),
                acks.clone(),
            );
            let items = args.items;
            tasks.push(tokio::spawn(async move {
                let mut mine = Vec::new();
                loop {
                    let k = next.fetch_add(1, Ordering::Relaxed);
                    if k >= items {
                        break;
                    }
                    let shard = shards[(k % shards.len() as u64) as usize].clone();
                    let sent = Instant::now();
                    let payload = start_offset(start, sent).to_be_bytes().to_vec();
                    loop {
                        match handle.queue_enqueue(shard.clone(), payload.clone()).await {
                            Ok(_) => break,
                            Err(e) if retryable(&e) && start.elapsed() < LIMIT => {
                                tokio::time::sleep(Duration::from_millis(5)).await;
                            }
                            Err(e) => panic!("enqueue refused: {e}"),
                        }
                    }
                    mine.push(sent.elapsed());
                }
                acks.lock().await.extend(mine);
            }));
        }
        for w in 0..args.workers {
            let (handle, shards, completed, ends, per_shard) = (
                n.handle().clone(),
                shards.clone(),
                completed.clone(),
                ends.clone(),
                per_shard.clone(),
            );
            let (items, lease_max) = (args.items, args.lease_max);
            tasks.push(tokio::spawn(async move {
                let mut mine = Vec::new();
                let mut counts = BTreeMap::<u32, u64>::new();
                let mut i = w as usize;
                let mut idle = 0;
                while completed.load(Ordering::Relaxed) < items && start.elapsed() < LIMIT {
                    i += 1;
                    let shard = shards[i % shards.len()].clone();
                    let leased = if lease_max == 1 {
                        handle.queue_lease(shard.clone()).await.map(Vec::from_iter)
                    } else {
                        handle.queue_lease_up_to(shard.clone(), lease_max).await
                    };
                    let items = match leased {
                        Ok(items) if !items.is_empty() => items,
                        Ok(_) => {
                            idle += 1;
                            if idle >= shards.len() {
                                idle = 0;
                                tokio::time::sleep(Duration::from_millis(1)).await;
                            }
                            continue;
                        }
                        Err(e) if retryable(&e) => continue,
                        Err(e) => panic!("lease refused: {e}"),
                    };
                    idle = 0;
                    // The items of one lease are completed together: each completion waits
                    // for its replica, and they share the owner's batches.
                    let answers = futures_util::future::join_all(
                        items
                            .iter()
                            .map(|item| handle.queue_complete(shard.clone(), item.token)),
                    )
                    .await;
                    for (item, answer) in items.iter().zip(answers) {
                        match answer {
                            Ok(_) => {
                                completed.fetch_add(1, Ordering::Relaxed);
                                let sent = <[u8; 8]>::try_from(item.payload.as_slice())
                                    .map(u64::from_be_bytes)
                                    .unwrap_or(0);
                                let now = start_offset(start, Instant::now());
                                mine.push(Duration::from_nanos(now.saturating_sub(sent)));
                                *counts.entry(shard.id()).or_default() += 1;
                            }
                            Err(e) => eprintln!("completion refused (the item runs again): {e}"),
                        }
                    }
                }
                ends.lock().await.extend(mine);
                let mut all = per_shard.lock().await;
                for (s, c) in counts {
                    *all.entry(s).or_default() += c;
                }
            }));
        }
    }
    for t in tasks {
        t.await.expect("a producer or worker");
    }
    let wall = start.elapsed();
    let done = completed.load(Ordering::Relaxed);
    let mut acks = std::mem::take(&mut *acks.lock().await);
    let mut ends = std::mem::take(&mut *ends.lock().await);
    acks.sort();
    ends.sort();
    let per_shard = per_shard.lock().await.clone();
    let secs = wall.as_secs_f64();
    let total_rate = done as f64 / secs;
    let shard_rates: Vec<f64> = per_shard.values().map(|c| *c as f64 / secs).collect();
    let min_shard = shard_rates.iter().copied().fold(f64::INFINITY, f64::min);
    let max_shard = shard_rates.iter().copied().fold(0.0, f64::max);
    println!(
        "{} items over {} shards, 3 voters, 1 replica before each ack (ack_after = {}), {} \
         enqueues in flight and {} workers per node leasing up to {} at a time; {done} \
         completed in {secs:.2} s\n",
        args.items, args.shards, args.ack_after, args.in_flight, args.workers, args.lease_max
    );
    println!("| figure | value | target |");
    println!("|---|---:|---|");
    println!("| items/s completed, total | {total_rate:.0} | - |");
    println!(
        "| items/s completed per shard: mean / min / max | {:.0} / {min_shard:.0} / {max_shard:.0} | >= 5,000 |",
        total_rate / f64::from(args.shards)
    );
    println!(
        "| enqueue ack ms: p50 / p99 / max | {:.3} / {:.3} / {:.3} | p99 <= 5 |",
        percentile(&acks, 0.5),
        percentile(&acks, 0.99),
        percentile(&acks, 1.0)
    );
    println!(
        "| enqueue -> complete ms: p50 / p99 / max | {:.3} / {:.3} / {:.3} | - |",
        percentile(&ends, 0.5),
        percentile(&ends, 0.99),
        percentile(&ends, 1.0)
    );
    // The owners' replication lag (enqueue arrival to acknowledgement) over every node, from
    // the buckets of `mesh_queue_replication_lag_seconds`: the p99 is a bucket's upper bound.
    let mut lag = [0u64; LAG_BOUNDS.len() + 1];
    let mut syncs = 0;
    let (mut dropped, mut queue_sent) = (0, 0);
    for n in &nodes {
        if let Ok(s) = n.handle().snapshot().await
            && let Some(q) = s.queues
        {
            dropped += s.transport.datagrams_dropped;
            queue_sent += s.traffic.queue.datagrams_sent;
            syncs += q.checkpoint_syncs;
            for c in q.counters.values() {
                for (total, b) in lag.iter_mut().zip(c.replication_lag.buckets) {
                    *total += b;
                }
            }
        }
    }
    let lag_count: u64 = lag.iter().sum();
    let lag_bound = |p: f64| {
        let rank = (lag_count as f64 * p).ceil() as u64;
        let mut seen = 0;
        for (i, b) in lag.iter().enumerate() {
            seen += b;
            if seen >= rank.max(1) {
                return LAG_BOUNDS.get(i).map_or_else(
                    || "> 5000".to_owned(),
                    |d| format!("<= {}", d.as_secs_f64() * 1e3),
                );
            }
        }
        "-".to_owned()
    };
    println!(
        "| replication lag ms (owner: enqueue to ack), p50 / p99 bucket | {} / {} | p99 <= 50 |",
        lag_bound(0.5),
        lag_bound(0.99)
    );
    println!("| checkpoint syncs, all nodes | {syncs} | - |");
    println!("| queue datagrams sent, all nodes | {queue_sent} | - |");
    println!("| datagrams dropped by the transports, all nodes | {dropped} | - |");
    for n in nodes {
        n.stop().await;
    }
    let _ = std::fs::remove_dir_all(&dir);
    if done < args.items {
        eprintln!(
            "queue_throughput: only {done} of {} items completed within {LIMIT:?}",
            args.items
        );
        std::process::exit(1);
    }
}

/// Nanoseconds from `start` to `at` (the payload carries it, so a worker on any node of this
/// process can tell an item's age).
fn start_offset(start: Instant, at: Instant) -> u64 {
    u64::try_from(at.duration_since(start).as_nanos()).unwrap_or(u64::MAX)
}
