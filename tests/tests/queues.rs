//! Task queues on real nodes (`[queues]`, three nodes in one process over QUIC on loopback,
//! through the library API of `NodeHandle`): producers on every node enqueue, workers on every
//! node lease and complete, and every acknowledged item is completed exactly once; a forged
//! token is refused; the owner of a queue holding acknowledged items is stopped (a crash to its
//! peers) and the shard's next owner serves every one of them, rebuilt from the replica's
//! checkpoint; the `mesh_queue_*` families count what happened. Every wait is bounded.

mod common;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use common::{TempDir, start_cluster_each};
use meshkit::lease::FencingToken;
use meshkit::queue::{ItemId, LeaseId, OwnershipToken, QueueError};
use meshkit::shard::ShardId;
use meshkit_node::driver::NodeHandle;
use meshkit_node::node::RunningNode;
use meshkit_node::queue_host::QueueCallError;
use meshkit_testkit::cluster::poll_until;

const SHARDS: u32 = 4;
const PER_NODE: usize = 40;
const LIMIT: Duration = Duration::from_secs(40);

/// Voters 1-3, four shards of `jobs` on 2 s leases, one replica before each acknowledgement,
/// and each node's checkpoints in its own directory.
fn config(id: u64) -> String {
    format!(
        "[leadership]\nvoters = [1, 2, 3]\nttl = \"2s\"\n\n[leadership.raft]\n\
         tick_interval = \"50ms\"\n\n[shards]\nnamespaces = {{ jobs = {SHARDS} }}\nttl = \"2s\"\n\n\
         [queues]\ndata_dir = \"queues-{id}\"\nreplicas = 1\nlease_timeout = \"5s\"\n\
         recovery_wait = \"1s\"\n"
    )
}

fn shard(id: u32) -> ShardId {
    ShardId::new("jobs", id).expect("a valid namespace")
}

/// Which running node serves each shard (not recovering), once every shard is served.
async fn served(nodes: &[&RunningNode]) -> Option<BTreeMap<u32, usize>> {
    let mut owners = BTreeMap::new();
    for (i, node) in nodes.iter().enumerate() {
        let snapshot = node.handle().snapshot().await.ok()?;
        for q in snapshot.queues?.served {
            if !q.recovering {
                owners.insert(q.shard.id(), i);
            }
        }
    }
    (owners.len() == SHARDS as usize).then_some(owners)
}

async fn wait_served(nodes: &[&RunningNode]) -> BTreeMap<u32, usize> {
    let started = Instant::now();
    while started.elapsed() < LIMIT {
        if let Some(owners) = served(nodes).await {
            println!(
                "every queue served after {:?}: {owners:?}",
                started.elapsed()
            );
            return owners;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("not every queue served within {LIMIT:?}");
}

/// Retries what a routing race refuses (no owner known yet, the owner rebuilding, a request
/// that found the old owner): the caller's part of the contract.
fn retryable(e: &QueueCallError) -> bool {
    matches!(
        e,
        QueueCallError::Queue(
            QueueError::NoOwner | QueueError::NotOwner { .. } | QueueError::Recovering
        )
    )
}

async fn enqueue(node: &NodeHandle, shard: ShardId, payload: Vec<u8>) -> ItemId {
    let started = Instant::now();
    loop {
        match node.queue_enqueue(shard.clone(), payload.clone()).await {
            Ok(done) => return done.item,
            Err(e) if retryable(&e) && started.elapsed() < LIMIT => {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Err(e) => panic!("enqueue on {shard} refused: {e}"),
        }
    }
}

/// Every node's worker leases from every shard and completes, until `want` items are done or
/// the limit passes; the payloads completed, each with how many times.
async fn work(nodes: &[&RunningNode], want: usize) -> BTreeMap<Vec<u8>, u32> {
    let mut done: BTreeMap<Vec<u8>, u32> = BTreeMap::new();
    let started = Instant::now();
    while done.values().sum::<u32>() < want as u32 && started.elapsed() < LIMIT {
        let mut idle = true;
        for node in nodes {
            for s in 0..SHARDS {
                let item = match node.handle().queue_lease(shard(s)).await {
                    Ok(Some(item)) => item,
                    Ok(None) => continue,
                    Err(e) if retryable(&e) => continue,
                    Err(e) => panic!("lease on {} refused: {e}", shard(s)),
                };
                idle = false;
                match node.handle().queue_complete(shard(s), item.token).await {
                    Ok(_) => *done.entry(item.payload).or_default() += 1,
                    // Refused (a failover between lease and completion): it runs again.
                    Err(e) => println!("completion of {} refused: {e}", item.token),
                }
            }
        }
        if idle {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    done
}

async fn metric(nodes: &[&RunningNode], name: &str) -> f64 {
    let mut sum = 0.0;
    for node in nodes {
        let snapshot = node.handle().snapshot().await.expect("the driver runs");
        let text = meshkit_node::control::render_metrics(&snapshot);
        sum += text
            .lines()
            .filter(|l| l.starts_with(name) && !l.starts_with('#'))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum::<f64>();
    }
    sum
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn work_enqueued_anywhere_is_completed_once_and_survives_its_owner() {
    let dir = TempDir::new("queues");
    let mut nodes = start_cluster_each(dir.path(), 3, config).await;
    let all: Vec<&RunningNode> = nodes.iter().collect();
    wait_served(&all).await;

    // Producers on every node, spread over the shards: every enqueue acknowledged.
    let mut expected = Vec::new();
    for (n, node) in nodes.iter().enumerate() {
        for k in 0..PER_NODE {
            let payload = format!("job-{n}-{k}").into_bytes();
            enqueue(
                node.handle(),
                shard((k % SHARDS as usize) as u32),
                payload.clone(),
            )
            .await;
            expected.push(payload);
        }
    }
    let done = work(&all, expected.len()).await;
    let twice: Vec<_> = done
        .iter()
        .filter(|(_, n)| **n > 1)
        .map(|(p, n)| (String::from_utf8_lossy(p), n))
        .collect();
    assert!(twice.is_empty(), "completed more than once: {twice:?}");
    let missing: Vec<_> = expected
        .iter()
        .filter(|p| !done.contains_key(*p))
        .map(|p| String::from_utf8_lossy(p))
        .collect();
    assert!(missing.is_empty(), "never completed: {missing:?}");

    // A forged token (a fence no owner held) is refused, never accepted.
    let forged = OwnershipToken {
        item: ItemId::new(1),
        attempt: 1,
        lease: LeaseId::new(1),
        fence: FencingToken::new(1),
    };
    let refused = nodes[0].handle().queue_complete(shard(0), forged).await;
    assert!(
        matches!(&refused, Err(QueueCallError::Queue(e)) if e.is_stale() || matches!(e, QueueError::UnknownItem { .. })),
        "{refused:?}"
    );

    // The metrics count what the owners did.
    let total = expected.len() as f64;
    // Bounded: read until both counts are there, for at most 5 s. The completed count once read
    // 119 of 120 right after the last answer (a CI run, and 2 of 135 runs here under load; the
    // owners' cores had pushed all 120 events); whether one was late or lost is not known, and
    // a count that never arrives still fails here.
    let counts = || async {
        (
            metric(&all, "mesh_queue_enqueued_total").await,
            metric(&all, "mesh_queue_completed_total").await,
        )
    };
    let counted = poll_until(
        Duration::from_secs(5),
        Duration::from_millis(100),
        || async { Some(counts().await).filter(|&c| c == (total, total)) },
    )
    .await;
    let counted = match counted {
        Some(c) => c,
        None => counts().await,
    };
    assert_eq!(counted, (total, total), "enqueued, completed");
    assert!(metric(&all, "mesh_queue_checkpoint_writes_total").await > 0.0);

    // Acknowledged items wait in shard 0's queue; its owner is stopped (no leave: a crash).
    let owners = wait_served(&all).await;
    let victim = owners[&0];
    let survivors: Vec<usize> = (0..nodes.len()).filter(|i| *i != victim).collect();
    let producer = survivors[0];
    let mut waiting = Vec::new();
    for k in 0..20 {
        let payload = format!("after-{k}").into_bytes();
        enqueue(nodes[producer].handle(), shard(0), payload.clone()).await;
        waiting.push(payload);
    }
    let stopped = Instant::now();
    nodes.remove(victim).stop().await;
    let rest: Vec<&RunningNode> = nodes.iter().collect();
    wait_served(&rest).await;
    println!(
        "shard 0 served again {:?} after its owner stopped",
        stopped.elapsed()
    );
    let done = work(&rest, waiting.len()).await;
    let lost: Vec<_> = waiting
        .iter()
        .filter(|p| !done.contains_key(*p))
        .map(|p| String::from_utf8_lossy(p))
        .collect();
    assert!(lost.is_empty(), "acknowledged and lost: {lost:?}");
    assert!(done.values().all(|n| *n == 1), "{done:?}");
    for node in nodes {
        node.stop().await;
    }
}

/// A worker leases several items in one request through the library (`queue_lease_up_to`, over
/// QUIC to the shard's owner) and through the function behind `POST /control/queue/lease` with
/// `max` and gRPC `QueueLease` with `max`: up to `max` of those pending, each under its own
/// token that completes once; a `max` out of range is refused before anything is sent, naming
/// the field, with 400.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lease_of_several_items_grants_up_to_max_through_the_library_and_the_api() {
    let dir = TempDir::new("queues-lease-many");
    let nodes = start_cluster_each(dir.path(), 3, config).await;
    let all: Vec<&RunningNode> = nodes.iter().collect();
    wait_served(&all).await;
    let producer = nodes[0].handle();
    let worker = nodes[1].handle();
    for k in 0..7 {
        enqueue(producer, shard(0), format!("many-{k}").into_bytes()).await;
    }
    let started = Instant::now();
    let first = loop {
        match worker.queue_lease_up_to(shard(0), 4).await {
            Ok(items) => break items,
            Err(e) if retryable(&e) && started.elapsed() < LIMIT => {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Err(e) => panic!("lease of several refused: {e}"),
        }
    };
    let payloads: Vec<String> = first
        .iter()
        .map(|i| String::from_utf8_lossy(&i.payload).into_owned())
        .collect();
    assert_eq!(payloads, ["many-0", "many-1", "many-2", "many-3"]);
    assert!(first.iter().all(|i| i.shard == shard(0)));

    let rest = meshkit_node::control::queues::lease_up_to_from(worker, "jobs", Some(0), 256)
        .await
        .expect("the rest leased");
    assert_eq!(rest.len(), 3, "up to max: the three left");
    let none = worker
        .queue_lease_up_to(shard(0), 8)
        .await
        .expect("answered");
    assert!(none.is_empty(), "nothing pending: {none:?}");
    for item in first.iter().chain(&rest) {
        worker
            .queue_complete(shard(0), item.token)
            .await
            .expect("each token completes its item");
    }

    for max in [0, 257] {
        let refused = meshkit_node::control::queues::lease_up_to_from(worker, "jobs", None, max)
            .await
            .expect_err("out of range");
        assert_eq!(refused.http_status(), 400, "{refused}");
        assert!(
            refused.to_string().starts_with(&format!("max = {max} ")),
            "{refused}"
        );
    }
    let refused = worker.queue_lease_up_to(shard(0), 0).await;
    assert!(
        matches!(
            refused,
            Err(QueueCallError::Queue(QueueError::OutOfRange {
                field: "max",
                ..
            }))
        ),
        "{refused:?}"
    );
    for node in nodes {
        node.stop().await;
    }
}
