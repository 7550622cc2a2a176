//! Task queues over the control API of three `meshkitd` processes: producers enqueue over HTTP
//! (`POST /control/queue/enqueue`), workers on every node lease and complete over HTTP, the
//! process that owns the most queues is killed with SIGKILL in the middle, and every
//! acknowledged item is still completed exactly once (each completion accepted at most once,
//! none missing). Items are counted by their identity (shard and item id), not by payload: an
//! enqueue whose answer was lost (a timeout, a 503 or 504 during the failover) is sent again and
//! may have been applied too, so a payload can stand in the queue twice, as with any
//! at-least-once producer. An observer's token is refused on enqueue (403) but reads the original
//! system's diagnostics under `/omnirelay/control/...`; `meshctl queue stats --json` reads a
//! node's queues. Every wait is bounded; every process is killed when the test ends.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::time::{Duration, Instant};

use common::daemon::{Daemon, start};
use common::{MeshctlAs, TempDir, client, run_bounded, token, write_config_with};
use meshkit_node::client::{Client, ClientConfig, Protocols};
use meshkit_node::control::queues::{
    CheckpointsResponse, EnqueueRequest, EnqueueResponse, LeaseHealthResponse, LeaseRequest,
    LeaseResponse, QueueDrainResponse, QueueRestoreResponse, QueuesResponse, TokenRequest,
};
use meshkit_node::permission::Permission;

const SHARDS: u32 = 4;
const ITEMS: usize = 60;
const LIMIT: Duration = Duration::from_secs(60);

/// Voters 1-3, four shards of `jobs`, one replica before each acknowledgement, checkpoints in
/// each node's own directory; the test's client (node-1's certificate) may operate.
fn config(id: u64) -> String {
    format!(
        "[leadership]\nvoters = [1, 2, 3]\nttl = \"2s\"\n\n[leadership.raft]\n\
         tick_interval = \"50ms\"\n\n[shards]\nnamespaces = {{ jobs = {SHARDS} }}\nttl = \"2s\"\n\n\
         [queues]\ndata_dir = \"queues-{id}\"\nreplicas = 1\nlease_timeout = \"3s\"\n\n\
         [access.identities]\nnode-1 = [\"mesh.operate\"]\n"
    )
}

fn start_daemons(dir: &Path) -> BTreeMap<u64, Daemon> {
    start_daemons_with(dir, config)
}

/// [`config`] with each voter's Raft log in its own directory too: a restarted node comes back
/// with its log as well as its checkpoints.
fn durable_config(id: u64) -> String {
    config(id).replacen(
        "[leadership]\n",
        &format!("[leadership]\ndata_dir = \"raft-{id}\"\n"),
        1,
    )
}

fn start_daemons_with(dir: &Path, config: fn(u64) -> String) -> BTreeMap<u64, Daemon> {
    let (ca, files) = meshkit_node::certs::write_dev_certs(dir, 3).expect("certificates");
    let mut daemons: BTreeMap<u64, Daemon> = BTreeMap::new();
    for f in &files {
        let id = f.id.get();
        let seeds: Vec<_> = daemons
            .get(&1)
            .map(|d| vec![(1, d.gossip)])
            .unwrap_or_default();
        let path = write_config_with(dir, id, &seeds, &f.cert, &f.key, &ca, &config(id));
        daemons.insert(id, start(&path));
    }
    daemons
}

/// The queues each running daemon serves (not recovering), once all are served.
async fn served(client: &Client, daemons: &BTreeMap<u64, Daemon>) -> Option<BTreeMap<u64, usize>> {
    let mut per_node = BTreeMap::new();
    let mut total = 0;
    for (id, d) in daemons {
        let r = client.get(&d.control, "/control/queues").await.ok()?;
        let q: QueuesResponse = serde_json::from_str(&r.body).ok()?;
        let n = q.served.iter().filter(|s| !s.recovering).count();
        per_node.insert(*id, n);
        total += n;
    }
    (total == SHARDS as usize).then_some(per_node)
}

async fn wait_served(client: &Client, daemons: &BTreeMap<u64, Daemon>) -> BTreeMap<u64, usize> {
    let started = Instant::now();
    while started.elapsed() < LIMIT {
        if let Some(s) = served(client, daemons).await {
            println!("every queue served after {:?}: {s:?}", started.elapsed());
            return s;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    panic!("not every queue served within {LIMIT:?}");
}

/// An item's identity: its shard and its id there.
type ItemKey = (String, u64);

/// Enqueues `payload` through the daemons in turn until one acknowledges (a 503 is a routing
/// race or a failover: retry). Counts in `unanswered` the attempts without a clear answer, each
/// of which may have enqueued the payload once more.
async fn enqueue(
    client: &Client,
    daemons: &BTreeMap<u64, Daemon>,
    payload: &str,
    unanswered: &mut usize,
) -> ItemKey {
    let request = EnqueueRequest {
        queue: "jobs".to_owned(),
        shard: None,
        payload: payload.to_owned(),
    };
    let started = Instant::now();
    loop {
        for d in daemons.values() {
            match client
                .post_json(&d.control, "/control/queue/enqueue", &request)
                .await
            {
                Ok(r) if r.status == 200 => {
                    let ack: EnqueueResponse =
                        serde_json::from_str(&r.body).expect("an enqueue answer");
                    return (ack.shard, ack.item);
                }
                Ok(r) => {
                    assert!(
                        r.status == 503 || r.status == 504,
                        "enqueue refused: {} {}",
                        r.status,
                        r.body
                    );
                    *unanswered += 1;
                }
                Err(_) => *unanswered += 1,
            }
        }
        assert!(started.elapsed() < LIMIT, "{payload} never acknowledged");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Workers on every running daemon lease and complete (completions counted in `done` per
/// item) until `finished` holds or the limit passes.
async fn work(
    client: &Client,
    daemons: &BTreeMap<u64, Daemon>,
    done: &mut BTreeMap<ItemKey, u32>,
    finished: impl Fn(&BTreeMap<ItemKey, u32>) -> bool,
) {
    let lease = LeaseRequest {
        queue: "jobs".to_owned(),
        shard: None,
        max: None,
    };
    let started = Instant::now();
    while !finished(done) && started.elapsed() < LIMIT {
        let mut idle = true;
        for d in daemons.values() {
            let Ok(r) = client
                .post_json(&d.control, "/control/queue/lease", &lease)
                .await
            else {
                continue;
            };
            if r.status != 200 {
                continue;
            }
            idle = false;
            let item: LeaseResponse = serde_json::from_str(&r.body).expect("a lease answer");
            let complete = TokenRequest {
                shard: item.shard.clone(),
                token: item.token,
            };
            match client
                .post_json(&d.control, "/control/queue/complete", &complete)
                .await
            {
                Ok(r) if r.status == 200 => {
                    *done
                        .entry((item.shard.clone(), item.token.item))
                        .or_default() += 1
                }
                // Refused or unanswered: the item runs again (at least once).
                Ok(r) => println!(
                    "completion of {} refused: {} {}",
                    item.payload, r.status, r.body
                ),
                Err(e) => println!("completion of {}: {e}", item.payload),
            }
            if finished(done) {
                break;
            }
        }
        if idle {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

fn observer(dir: &Path) -> Client {
    let config = ClientConfig::new(&dir.join("ca.pem"))
        .and_then(|c| c.with_token(&token(dir, "test-observer", Permission::Observe)))
        .expect("an observer's client")
        .with_protocols(Protocols::TcpOnly)
        .with_request_timeout(Duration::from_secs(5));
    Client::new(&config).expect("build a client")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_items_are_completed_once_across_a_kill_of_their_owner() {
    let dir = TempDir::new("queue-failover");
    let mut daemons = start_daemons(dir.path());
    let client = client(dir.path(), Protocols::TcpOnly);
    wait_served(&client, &daemons).await;

    // An observer may read, not produce.
    let observer = observer(dir.path());
    let any = daemons[&1].control.clone();
    let refused = observer
        .post_json(
            &any,
            "/control/queue/enqueue",
            &EnqueueRequest {
                queue: "jobs".to_owned(),
                shard: None,
                payload: "not allowed".to_owned(),
            },
        )
        .await
        .expect("an answer");
    assert_eq!(refused.status, 403, "{}", refused.body);
    let health = observer
        .get(&any, "/omnirelay/control/lease-health")
        .await
        .expect("an answer");
    assert_eq!(health.status, 200, "{}", health.body);
    let _: LeaseHealthResponse = serde_json::from_str(&health.body).expect("a health answer");
    let bp = observer
        .get(&any, "/omnirelay/control/backpressure")
        .await
        .expect("an answer");
    assert!(
        bp.status == 200 || bp.status == 204,
        "{} {}",
        bp.status,
        bp.body
    );

    // Producers: every item acknowledged. Workers complete a third of them.
    let mut acknowledged = BTreeSet::new();
    let mut unanswered = 0;
    for k in 0..ITEMS {
        let payload = format!("job-{k}");
        acknowledged.insert(enqueue(&client, &daemons, &payload, &mut unanswered).await);
    }
    let mut done = BTreeMap::new();
    work(&client, &daemons, &mut done, |done| done.len() >= ITEMS / 3).await;

    // meshctl reads a node's queues.
    let (ok, printed) = run_bounded(
        common::meshctl(
            dir.path(),
            &any,
            MeshctlAs::Node("node-1"),
            ["queue", "stats", "--json"],
        ),
        Duration::from_secs(20),
    );
    assert!(ok, "meshctl queue stats: {printed}");
    let stats: QueuesResponse = serde_json::from_str(printed.trim()).expect("its JSON");
    assert_eq!(stats.node, 1);

    // kill -9 of the process serving the most queues, with items still pending in them.
    let owners = wait_served(&client, &daemons).await;
    let (&victim, _) = owners
        .iter()
        .max_by_key(|(_, n)| **n)
        .expect("three daemons");
    let killed = Instant::now();
    daemons.remove(&victim).expect("running").kill();
    wait_served(&client, &daemons).await;
    println!(
        "every queue served again {:?} after kill -9 of node {victim}",
        killed.elapsed()
    );

    // More work after the failover, then everything completed.
    for k in 0..10 {
        let payload = format!("after-{k}");
        acknowledged.insert(enqueue(&client, &daemons, &payload, &mut unanswered).await);
    }
    work(&client, &daemons, &mut done, |done| {
        acknowledged.iter().all(|k| done.contains_key(k))
    })
    .await;
    let twice: Vec<_> = done.iter().filter(|(_, n)| **n > 1).collect();
    assert!(twice.is_empty(), "completions accepted twice: {twice:?}");
    // Completed but never acknowledged: an attempt whose answer was lost, applied all the same.
    let extra = done.keys().filter(|k| !acknowledged.contains(*k)).count();
    assert!(
        extra <= unanswered,
        "{extra} items completed that no enqueue put there ({unanswered} attempts unanswered)"
    );
    let lost: Vec<_> = acknowledged
        .iter()
        .filter(|k| !done.contains_key(*k))
        .collect();
    assert!(
        lost.is_empty(),
        "acknowledged and never completed: {lost:?}"
    );
}

/// Enqueues `payload` on shard `shard` through `daemon` until it acknowledges (503: routing).
async fn enqueue_on(client: &Client, daemon: &Daemon, shard: u32, payload: &str) -> ItemKey {
    let request = EnqueueRequest {
        queue: "jobs".to_owned(),
        shard: Some(shard),
        payload: payload.to_owned(),
    };
    let started = Instant::now();
    loop {
        if let Ok(r) = client
            .post_json(&daemon.control, "/control/queue/enqueue", &request)
            .await
        {
            if r.status == 200 {
                let ack: EnqueueResponse = serde_json::from_str(&r.body).expect("an answer");
                return (ack.shard, ack.item);
            }
            assert_eq!(r.status, 503, "enqueue refused: {}", r.body);
        }
        assert!(started.elapsed() < LIMIT, "{payload} never acknowledged");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Where `shard` lives: its owner and its one replica, once the owner names a replica.
async fn owner_and_replica(
    client: &Client,
    daemons: &BTreeMap<u64, Daemon>,
    shard: &str,
) -> (u64, u64) {
    let started = Instant::now();
    while started.elapsed() < LIMIT {
        for (id, d) in daemons {
            let Ok(r) = client
                .get(&d.control, "/control/replication/checkpoints")
                .await
            else {
                continue;
            };
            let Ok(c) = serde_json::from_str::<CheckpointsResponse>(&r.body) else {
                continue;
            };
            if let Some(source) = c.sources.iter().find(|s| s.shard == shard)
                && let [replica] = source.replicas.as_slice()
            {
                return (*id, replica.node);
            }
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    panic!("no owner of {shard} named its replica within {LIMIT:?}");
}

/// The copy of `shard` a node holds as a replica (its checkpoint): the sequence number it
/// holds, and how many items.
async fn copies(client: &Client, daemon: &Daemon, shard: &str) -> Option<(u64, usize)> {
    let r = client
        .get(&daemon.control, "/control/replication/checkpoints")
        .await
        .ok()?;
    let c: CheckpointsResponse = serde_json::from_str(&r.body).ok()?;
    c.checkpoints
        .iter()
        .find(|c| c.shard == shard)
        .map(|c| (c.sequence_number, c.items))
}

/// Restarts node `id` on its configuration, its seeds rewritten to a running node (the gossip
/// ports changed with the kills).
fn restart(dir: &Path, daemons: &mut BTreeMap<u64, Daemon>, id: u64) {
    let (other, seed) = daemons
        .iter()
        .next()
        .map(|(o, d)| (*o, d.gossip))
        .expect("a running node");
    let path = dir.join(format!("node-{id}.toml"));
    let text = std::fs::read_to_string(&path).expect("its configuration");
    let text: String = text
        .lines()
        .map(|l| {
            if l.starts_with("seeds = ") {
                format!("seeds = [\"{other}@{seed}\"]\n")
            } else {
                format!("{l}\n")
            }
        })
        .collect();
    std::fs::write(&path, text).expect("rewrite its seeds");
    daemons.insert(id, start(&path));
}

/// The replica of a shard is killed (SIGKILL), then at once its owner: the only copy of the
/// shard's acknowledged items left is the replica's checkpoint file (the third node never held
/// the shard). The replica restarts from its files, and the shard's next owner rebuilds the
/// queue from that copy: every acknowledged item is completed exactly once, and none of those
/// completed before the kills runs again. Then `meshctl queue drain` and `restore` on the new
/// owner take pending items out and put the same items back, and they complete too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_restarted_from_its_checkpoint_file_brings_back_what_only_it_held() {
    let dir = TempDir::new("queue-replica-restart");
    let mut daemons = start_daemons_with(dir.path(), durable_config);
    let client = client(dir.path(), Protocols::TcpOnly);
    wait_served(&client, &daemons).await;
    let shard = "shard/jobs/0";
    let (owner, replica) = owner_and_replica(&client, &daemons, shard).await;
    let third = *daemons
        .keys()
        .find(|id| **id != owner && **id != replica)
        .expect("three daemons");
    println!("{shard}: owner {owner}, replica {replica}, third {third}");

    let mut acknowledged = BTreeSet::new();
    for k in 0..20 {
        let item = enqueue_on(&client, &daemons[&owner], 0, &format!("job-{k}")).await;
        acknowledged.insert(item);
    }
    // Five completed before the kills: the checkpoint holds them as finished.
    let mut done = BTreeMap::new();
    work(&client, &daemons, &mut done, |done| done.len() >= 5).await;
    let before: BTreeSet<ItemKey> = done.keys().cloned().collect();
    // The third node may hold an empty copy (a promise to a new owner's fence) but no item.
    let other = copies(&client, &daemons[&third], shard).await;
    assert!(
        other.is_none_or(|(_, items)| items == 0),
        "node {third} holds {other:?} of {shard}: the test would not show the restarted one's"
    );
    let (held, items) = copies(&client, &daemons[&replica], shard)
        .await
        .expect("the replica's checkpoint");
    assert_eq!(items, 20, "the replica holds every item");

    daemons.remove(&replica).expect("running").kill();
    daemons.remove(&owner).expect("running").kill();
    let killed = Instant::now();
    restart(dir.path(), &mut daemons, replica);
    // It answers with its copy, read back from the file, at or past what it held.
    let started = Instant::now();
    let mut restored = None;
    while started.elapsed() < LIMIT && restored.is_none() {
        restored = copies(&client, &daemons[&replica], shard).await;
        if restored.is_none() {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    let (restored, items) = restored.expect("the restarted replica holds its copy");
    assert!(
        restored >= held && items == 20,
        "read back at {restored} with {items} items, held {held}"
    );
    wait_served(&client, &daemons).await;
    println!(
        "every queue served {:?} after the kills (replica read back at {restored}, held {held})",
        killed.elapsed()
    );

    let acked = acknowledged.clone();
    work(&client, &daemons, &mut done, |done| {
        acked.iter().all(|k| done.contains_key(k))
    })
    .await;
    let twice: Vec<_> = done.iter().filter(|(_, n)| **n > 1).collect();
    assert!(twice.is_empty(), "completions accepted twice: {twice:?}");
    let lost: Vec<_> = acknowledged
        .iter()
        .filter(|k| !done.contains_key(*k))
        .collect();
    assert!(
        lost.is_empty(),
        "acknowledged and never completed: {lost:?}"
    );
    assert!(before.iter().all(|k| done[k] == 1));

    // Drain and restore on the shard's owner now, with meshctl.
    let owners = wait_served(&client, &daemons).await;
    let new_owner = {
        let mut found = None;
        for (id, d) in &daemons {
            let r = client
                .get(&d.control, "/control/queues")
                .await
                .expect("an answer");
            let q: QueuesResponse = serde_json::from_str(&r.body).expect("its JSON");
            if q.served.iter().any(|s| s.shard == shard) {
                found = Some(*id);
            }
        }
        found.unwrap_or_else(|| panic!("nobody serves {shard}: {owners:?}"))
    };
    let addr = daemons[&new_owner].control.clone();
    let mut waiting = BTreeSet::new();
    for k in 0..4 {
        let item = enqueue_on(&client, &daemons[&new_owner], 0, &format!("later-{k}")).await;
        waiting.insert(item);
    }
    let as_operator = MeshctlAs::Node("node-1");
    let (ok, printed) = run_bounded(
        common::meshctl(
            dir.path(),
            &addr,
            as_operator,
            ["queue", "drain", shard, "--json"],
        ),
        Duration::from_secs(20),
    );
    assert!(ok, "meshctl queue drain: {printed}");
    let drained: QueueDrainResponse = serde_json::from_str(printed.trim()).expect("its JSON");
    assert_eq!(drained.items.len(), waiting.len(), "{printed}");
    let file = dir.path().join("drained.json");
    std::fs::write(&file, printed.trim()).expect("keep the drain");
    let empty = client
        .post_json(
            &addr,
            "/control/queue/lease",
            &LeaseRequest {
                queue: "jobs".to_owned(),
                shard: Some(0),
                max: None,
            },
        )
        .await
        .expect("an answer");
    assert_eq!(
        empty.status, 204,
        "a drained queue leases nothing: {}",
        empty.body
    );
    let from = file.display().to_string();
    let (ok, printed) = run_bounded(
        common::meshctl(
            dir.path(),
            &addr,
            as_operator,
            ["queue", "restore", shard, "--from", from.as_str(), "--json"],
        ),
        Duration::from_secs(20),
    );
    assert!(ok, "meshctl queue restore: {printed}");
    let restored: QueueRestoreResponse = serde_json::from_str(printed.trim()).expect("its JSON");
    assert_eq!(restored.restored, waiting.len(), "{printed}");
    work(&client, &daemons, &mut done, |done| {
        waiting.iter().all(|k| done.contains_key(k))
    })
    .await;
    let missing: Vec<_> = waiting.iter().filter(|k| !done.contains_key(*k)).collect();
    assert!(
        missing.is_empty(),
        "restored and never completed: {missing:?}"
    );
    assert!(waiting.iter().all(|k| done[k] == 1));
}
