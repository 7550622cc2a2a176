//! Five `meshkitd` processes own 64 shards through leases (`[shards]` in node.toml): the
//! coordinator on the Raft leader places every shard within the load bound, and after `kill -9`
//! of an owner its shards are owned again once their leases expire. Every wait is bounded;
//! every process is killed when the test ends.

mod common;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use common::daemon::{Daemon, leaders, start};
use common::{TempDir, client, write_config_with};
use meshkit_node::client::{Client, Protocols};

/// Voters 1-3; 64 shards with a 3 s lease; 50 ms Raft ticks; the test's client (node-1's
/// certificate) may drain.
const CONFIG: &str = "[leadership]\nvoters = [1, 2, 3]\nttl = \"3s\"\n\n\
    [leadership.raft]\ntick_interval = \"50ms\"\n\n\
    [shards]\nnamespaces = { orders = 64 }\nttl = \"3s\"\nmax_moves_in_flight = 16\n\n\
    [access.identities]\nnode-1 = [\"mesh.operate\"]\n";
const SHARDS: usize = 64;
/// 64 shards over 5 members: mean 12.8, tolerance 2 (10% rounded up, at least 1): 11..=14.
const BOUNDS: std::ops::RangeInclusive<usize> = 11..=14;
/// Generous for a loaded 2-core machine; the measured figures are printed.
const PLACE_LIMIT: Duration = Duration::from_secs(30);
const FAILOVER_LIMIT: Duration = Duration::from_secs(20);
const POLL: Duration = Duration::from_millis(100);

/// Shard owners in the applied table of the first running voter that answers.
async fn owners(client: &Client, daemons: &BTreeMap<u64, Daemon>) -> Option<BTreeMap<String, u64>> {
    for (_, d) in daemons.range(1..=3) {
        if let Some(view) = leaders(client, d).await {
            return Some(
                view.table
                    .into_iter()
                    .filter(|l| l.scope.starts_with("shard/orders/"))
                    .map(|l| (l.scope, l.holder))
                    .collect(),
            );
        }
    }
    None
}

fn counts(owners: &BTreeMap<String, u64>) -> BTreeMap<u64, usize> {
    let mut c = BTreeMap::new();
    for &h in owners.values() {
        *c.entry(h).or_default() += 1;
    }
    c
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn five_daemons_own_64_shards_within_the_bound_and_fail_over_after_kill_9() {
    let dir = TempDir::new("shards");
    let (ca, files) = meshkit_node::certs::write_dev_certs(dir.path(), 5).unwrap();
    let mut daemons: BTreeMap<u64, Daemon> = BTreeMap::new();
    for f in &files {
        let seeds: Vec<(u64, SocketAddr)> = daemons
            .get(&1)
            .map(|d| vec![(1, d.gossip)])
            .unwrap_or_default();
        let path = write_config_with(dir.path(), f.id.get(), &seeds, &f.cert, &f.key, &ca, CONFIG);
        daemons.insert(f.id.get(), start(&path));
    }
    let client = client(dir.path(), Protocols::H3ThenTcp);

    // 1. Every shard owned, every member within the bound.
    let started = Instant::now();
    let mut placed = None;
    while started.elapsed() < PLACE_LIMIT {
        if let Some(o) = owners(&client, &daemons).await {
            let c = counts(&o);
            if o.len() == SHARDS && c.len() == 5 && c.values().all(|n| BOUNDS.contains(n)) {
                placed = Some(o);
                break;
            }
        }
        tokio::time::sleep(POLL).await;
    }
    let placed = placed.unwrap_or_else(|| {
        panic!("64 shards not placed within {BOUNDS:?} each in {PLACE_LIMIT:?}")
    });
    println!(
        "64 shards placed over 5 daemons in {:?}: {:?}",
        started.elapsed(),
        counts(&placed)
    );

    // 2. kill -9 of a member that is not a voter: its shards are owned by the others again.
    let victim = 5;
    let lost: Vec<String> = placed
        .iter()
        .filter(|&(_, &h)| h == victim)
        .map(|(s, _)| s.clone())
        .collect();
    assert!(!lost.is_empty());
    let crashed = daemons.remove(&victim).unwrap();
    let killed_at = Instant::now();
    drop(crashed); // SIGKILL, then reaped
    let mut recovered = None;
    while killed_at.elapsed() < FAILOVER_LIMIT {
        if let Some(o) = owners(&client, &daemons).await {
            let c = counts(&o);
            if o.len() == SHARDS && !c.contains_key(&victim) {
                recovered = Some(o);
                break;
            }
        }
        tokio::time::sleep(POLL).await;
    }
    let failover = killed_at.elapsed();
    let recovered = recovered.unwrap_or_else(|| {
        panic!("node-{victim}'s shards not owned again within {FAILOVER_LIMIT:?}")
    });
    println!(
        "kill -9 of node-{victim} ({} shards): owned again after {failover:?} (lease TTL 3 s): {:?}",
        lost.len(),
        counts(&recovered)
    );
    // 64 over 4 members: mean 16, tolerance 2: 14..=18.
    assert!(counts(&recovered).values().all(|n| (14..=18).contains(n)));

    // 3. A drain of node 4 (`POST /control/drain`): its shards are handed to the others.
    let r = client
        .request(
            http::Method::POST,
            &daemons[&4].control,
            "/control/drain",
            bytes::Bytes::new(),
        )
        .await
        .expect("the drain is answered");
    assert_eq!(r.status, 200, "{}", r.body);
    let drained_at = Instant::now();
    let mut drained = None;
    while drained_at.elapsed() < FAILOVER_LIMIT {
        if let Some(o) = owners(&client, &daemons).await {
            let c = counts(&o);
            if o.len() == SHARDS && !c.contains_key(&4) {
                drained = Some(c);
                break;
            }
        }
        tokio::time::sleep(POLL).await;
    }
    let drained = drained.unwrap_or_else(|| panic!("node-4 not drained within {FAILOVER_LIMIT:?}"));
    println!(
        "drain of node-4: it owns nothing after {:?}: {drained:?}",
        drained_at.elapsed()
    );
    // 64 over 3 members: mean 21.3, tolerance 3: 19..=24.
    assert!(drained.values().all(|n| (19..=24).contains(n)));
}
