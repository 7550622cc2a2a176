//! The chaos targets of issue 13 on five real `meshkitd` processes (docs/benchmarks.md,
//! "Chaos control").
//!
//! ```text
//! cargo build --release -p meshkit-cli --bins
//! cargo run --release -p meshkit-benches --example chaos_targets -- [--experiments 100] [--concurrent 100]
//! ```
//!
//! Five nodes on 127.0.0.1 with `[chaos] enabled` (latency allowed, 60 s at most) and an audit
//! log each. An admin (bearer token) then:
//!
//! 1. **activation and revert**: plans and starts `--experiments` experiments one after
//!    another through node 1, each a 1 ms latency on every link of the mesh for 2 s (so all
//!    five nodes are targets). Activation is the start call's time at the client, from sending
//!    it to the answer that lists every target's confirmation. Meanwhile every node's list is
//!    read every 20 ms; a revert's lateness is when a node first lists the experiment reverted
//!    minus the deadline that node holds (so it is an upper bound: up to one read round late).
//! 2. **scale**: `--concurrent` experiments planned and started at once, spread over the five
//!    nodes as entry points, each 3 s on every link, while another client times
//!    `GET /meshkit/peers` calls round the nodes; then every node's list must show each one
//!    reverted, and each entry node's audit log one `activate` record per experiment.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use meshkit_node::client::{Client, ClientConfig, Protocols};
use meshkit_node::permission::Permission;
use meshkit_testkit::cluster::{BenchError, meshkitd_path, quantile, sorted};
use meshkit_testkit::daemon::{self, Daemon};
use meshkit_testkit::fixtures::{TempDir, token, write_config_with};
use serde_json::{Value, json};

/// Chaos activation, revert and scale targets on five real nodes.
#[derive(Debug, clap::Parser)]
struct Args {
    /// Experiments started one after another (activation and revert figures).
    #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u64).range(1..=1000))]
    experiments: u64,
    /// Experiments started at once (scale figure).
    #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u64).range(1..=1000))]
    concurrent: u64,
    /// The meshkitd binary (default: next to this program's directory).
    #[arg(long)]
    meshkitd: Option<PathBuf>,
    /// Check the arguments, print them and run nothing.
    #[arg(long)]
    dry_run: bool,
}

fn main() -> ExitCode {
    let args = <Args as clap::Parser>::parse();
    if args.dry_run {
        println!("would run chaos_targets with {args:?}; nothing ran (--dry-run)");
        return ExitCode::SUCCESS;
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("chaos_targets: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(&args)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("chaos_targets: {e}");
            ExitCode::FAILURE
        }
    }
}

struct Mesh {
    daemons: BTreeMap<u64, Daemon>,
    admin: Arc<Client>,
    dir: TempDir,
}

impl Mesh {
    fn addr(&self, id: u64) -> String {
        self.daemons[&id].control.clone()
    }
}

fn start_mesh(bin: &Path) -> Result<Mesh, BenchError> {
    let dir = TempDir::try_new("chaos-targets")?;
    let (ca, files) = meshkit_node::certs::write_dev_certs(dir.path(), 5)?;
    let mut daemons: BTreeMap<u64, Daemon> = BTreeMap::new();
    for f in &files {
        let id = f.id.get();
        let seeds: Vec<(u64, SocketAddr)> = daemons
            .get(&1)
            .map(|d| vec![(1, d.gossip)])
            .unwrap_or_default();
        let extra = format!(
            "audit_log = {:?}\n\n[chaos]\nenabled = true\nallowed_kinds = [\"latency\"]\nmax_duration = \"60s\"\n",
            dir.path()
                .join(format!("audit-{id}.jsonl"))
                .display()
                .to_string()
        );
        let path = write_config_with(dir.path(), id, &seeds, &f.cert, &f.key, &ca, &extra);
        daemons.insert(id, daemon::spawn(bin, &path)?);
    }
    let config = ClientConfig::new(&ca)?
        .with_token(&token(dir.path(), "bench-admin", Permission::Admin))?
        .with_protocols(Protocols::TcpOnly)
        .with_request_timeout(Duration::from_secs(10));
    Ok(Mesh {
        daemons,
        admin: Arc::new(Client::new(&config)?),
        dir,
    })
}

async fn all_alive(mesh: &Mesh) -> bool {
    for id in 1..=5 {
        let Ok(r) = mesh.admin.get(&mesh.addr(id), "/meshkit/peers").await else {
            return false;
        };
        let v: Value = serde_json::from_str(&r.body).unwrap_or(Value::Null);
        let alive = v["peers"]
            .as_array()
            .map_or(0, |p| p.iter().filter(|p| p["state"] == "alive").count());
        if alive != 5 {
            return false;
        }
    }
    true
}

fn everywhere(seconds: u64) -> Value {
    json!({"duration": format!("{seconds}s"), "fault": {"kind": "latency", "delay": "1ms"}})
}

/// Plans and starts `plan` at `addr`: the start's answer and the start call's time.
async fn plan_and_start(
    client: &Client,
    addr: &str,
    plan: &Value,
) -> Result<(Value, Duration), BenchError> {
    let r = client.post_json(addr, "/control/chaos/plans", plan).await?;
    if r.status != 200 {
        return Err(format!("plan at {addr}: {} {}", r.status, r.body).into());
    }
    let planned: Value = serde_json::from_str(&r.body)?;
    let body = json!({"plan": planned["plan"], "token": planned["token"]});
    let t = Instant::now();
    let r = client
        .post_json(addr, "/control/chaos/experiments", &body)
        .await?;
    let took = t.elapsed();
    if r.status != 201 {
        return Err(format!("start at {addr}: {} {}", r.status, r.body).into());
    }
    Ok((serde_json::from_str(&r.body)?, took))
}

fn unix_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// Reads every node's list until every id in `ids` is reverted on all five or `limit` passes:
/// (experiment, node) -> lateness in ms (first seen reverted minus that node's deadline).
async fn watch_reverts(
    mesh: &Mesh,
    ids: &BTreeSet<String>,
    limit: Duration,
) -> BTreeMap<(String, u64), i64> {
    let mut late = BTreeMap::new();
    let end = Instant::now() + limit;
    while Instant::now() < end && late.len() < ids.len() * 5 {
        for node in 1..=5 {
            let Ok(r) = mesh
                .admin
                .get(&mesh.addr(node), "/control/chaos/experiments")
                .await
            else {
                continue;
            };
            let now = i64::try_from(unix_ms()).unwrap_or(i64::MAX);
            let v: Value = serde_json::from_str(&r.body).unwrap_or(Value::Null);
            for e in v["experiments"].as_array().into_iter().flatten() {
                let Some(id) = e["id"].as_str() else { continue };
                if !ids.contains(id) || e["phase"] != "reverted" {
                    continue;
                }
                let deadline = e["deadline_unix_ms"].as_i64().unwrap_or(now);
                late.entry((id.to_owned(), node)).or_insert(now - deadline);
            }
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    late
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

async fn run(args: &Args) -> Result<(), BenchError> {
    let bin = meshkitd_path(args.meshkitd.clone())?;
    let mesh = start_mesh(&bin)?;
    let formed = Instant::now() + Duration::from_secs(30);
    while !all_alive(&mesh).await {
        if Instant::now() > formed {
            return Err("five nodes did not form a mesh within 30 s".into());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    println!("load average: {}", meshkit_testkit::cluster::load_average());

    // 1. Activation and revert, one experiment after another.
    let a1 = mesh.addr(1);
    let mut starts = Vec::new();
    let mut ids = BTreeSet::new();
    let sequence = async {
        for _ in 0..args.experiments {
            let (answer, took) = plan_and_start(&mesh.admin, &a1, &everywhere(2)).await?;
            let targets = answer["targets"].as_array().map_or(0, Vec::len);
            if targets != 5 {
                return Err::<(), BenchError>(
                    format!("{targets} targets, expected 5: {answer}").into(),
                );
            }
            starts.push(ms(took));
            ids.insert(answer["id"].as_str().unwrap_or_default().to_owned());
        }
        Ok(())
    };
    sequence.await?;
    let late = watch_reverts(&mesh, &ids, Duration::from_secs(30)).await;
    let starts = sorted(starts);
    let lateness = sorted(late.values().map(|l| *l as f64));
    let within = late.values().filter(|l| **l <= 1000).count();
    println!("\n| figure | n | p50 | p99 | max | target |\n|---|---|---|---|---|---|");
    println!(
        "| activation across 5 nodes (start call to every confirmation) | {} | {:.1} ms | {:.1} ms | {:.1} ms | p99 <= 100 ms |",
        starts.len(),
        quantile(&starts, 0.5),
        quantile(&starts, 0.99),
        starts.last().copied().unwrap_or(0.0)
    );
    println!(
        "| revert after the deadline, per target (first read seen reverted) | {} of {} | {:.0} ms | {:.0} ms | {:.0} ms | every one <= 1000 ms: {} within |",
        late.len(),
        ids.len() * 5,
        quantile(&lateness, 0.5),
        quantile(&lateness, 0.99),
        lateness.last().copied().unwrap_or(0.0),
        within
    );

    // 2. Scale: many at once, while control calls are timed.
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let prober = {
        let client = mesh.admin.clone();
        let addrs: Vec<String> = (1..=5).map(|i| mesh.addr(i)).collect();
        let stop = stop.clone();
        tokio::spawn(async move {
            let mut lat = Vec::new();
            let mut i = 0usize;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) && lat.len() < 100_000 {
                let t = Instant::now();
                if client.get(&addrs[i % 5], "/meshkit/peers").await.is_ok() {
                    lat.push(ms(t.elapsed()));
                }
                i += 1;
            }
            lat
        })
    };
    let t0 = Instant::now();
    let calls = (0..args.concurrent).map(|i| {
        let client = mesh.admin.clone();
        let addr = mesh.addr(i % 5 + 1);
        async move { plan_and_start(&client, &addr, &everywhere(3)).await }
    });
    let results = futures_util::future::join_all(calls).await;
    let all_started = t0.elapsed();
    let mut scale_ids = BTreeSet::new();
    let mut failed = 0;
    let mut scale_starts = Vec::new();
    for r in results {
        match r {
            Ok((a, took)) => {
                scale_ids.insert(a["id"].as_str().unwrap_or_default().to_owned());
                scale_starts.push(ms(took));
            }
            Err(e) => {
                failed += 1;
                eprintln!(
                    "a concurrent start failed: {}",
                    e.to_string().chars().take(160).collect::<String>()
                );
            }
        }
    }
    let late = watch_reverts(&mesh, &scale_ids, Duration::from_secs(30)).await;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let control = sorted(prober.await.unwrap_or_default());
    // None left active: every node lists none of them scheduled or active.
    let mut active = 0;
    for node in 1..=5 {
        let r = mesh
            .admin
            .get(&mesh.addr(node), "/control/chaos/experiments")
            .await?;
        let v: Value = serde_json::from_str(&r.body)?;
        active += v["experiments"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|e| e["phase"] != "reverted")
            .count();
    }
    // Every activation audited once, at its entry node.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let mut audited: BTreeMap<String, usize> = BTreeMap::new();
    for node in 1..=5 {
        let text = std::fs::read_to_string(mesh.dir.path().join(format!("audit-{node}.jsonl")))
            .unwrap_or_default();
        for line in text.lines() {
            let Ok(r) = serde_json::from_str::<Value>(line) else {
                continue;
            };
            if r["chaos"]["action"] == "activate"
                && r["chaos"]["refused"] != true
                && let Some(id) = r["chaos"]["experiment"].as_str()
                && scale_ids.contains(id)
            {
                *audited.entry(id.to_owned()).or_default() += 1;
            }
        }
    }
    let once = audited.values().filter(|n| **n == 1).count();
    let scale_starts = sorted(scale_starts);
    println!(
        "| {} concurrent: started | {} of {} in {:.0} ms (start call p50 {:.0} ms, p99 {:.0} ms) | | | | |",
        args.concurrent,
        scale_ids.len(),
        args.concurrent,
        ms(all_started),
        quantile(&scale_starts, 0.5),
        quantile(&scale_starts, 0.99)
    );
    println!(
        "| {} concurrent: reverted on every target | {} of {} | | | | none left active: {} active |",
        args.concurrent,
        late.len(),
        scale_ids.len() * 5,
        active
    );
    println!(
        "| {} concurrent: activations audited exactly once | {} of {} | | | | |",
        args.concurrent,
        once,
        scale_ids.len()
    );
    println!(
        "| GET /meshkit/peers while they run | {} | {:.1} ms | {:.1} ms | {:.1} ms | |",
        control.len(),
        quantile(&control, 0.5),
        quantile(&control, 0.99),
        control.last().copied().unwrap_or(0.0)
    );
    if failed > 0 || active > 0 || once != scale_ids.len() {
        return Err(format!(
            "{failed} starts failed, {active} left active, {once} of {} audited once",
            scale_ids.len()
        )
        .into());
    }
    Ok(())
}
