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
    EnqueueRequest, EnqueueResponse, LeaseHealthResponse, LeaseRequest, LeaseResponse,
    QueuesResponse, TokenRequest,
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
