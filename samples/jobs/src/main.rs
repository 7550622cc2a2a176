//! # mesh-jobs: a job-processing service that embeds MeshKit
//!
//! The "adopt MeshKit in your own service" example (samples/jobs/README.md has the
//! three-terminal walkthrough). Each `mesh-jobs run` is one node of the service: a MeshKit node
//! started through the library (`NodeConfig::builder`, no `meshkitd`), worker tasks that lease
//! jobs from the mesh's task queues and complete them, and the service's own axum server with
//! `POST /jobs`, `GET /jobs/stats` and MeshKit's control router mounted under `/mesh`. When a
//! node dies, the mesh moves its shards and their queues to the others, and its leased jobs run
//! again elsewhere.
//!
//! * `mesh-jobs init DIR`: development certificates (as `meshctl certs init` makes them), a
//!   token-signing key, an observer token, and `DIR/jobs.toml` for three nodes on loopback.
//! * `mesh-jobs run --config DIR/jobs.toml --id N`: node N.
//! * `mesh-jobs push`, `stats`, `verify`, `url`: the producer and the checks of the walkthrough.

mod client;
mod cluster;
mod job;
mod service;

use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead as _, Write as _};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use clap::{Parser, Subcommand};
use meshkit::config::HumanDuration;
use thiserror::Error;

use crate::cluster::{Cluster, ClusterError};
use crate::job::{Accepted, Job, Record};
use crate::service::{RunError, Stats};

#[derive(Debug, Parser)]
#[command(
    name = "mesh-jobs",
    version,
    about = "A job-processing service that embeds MeshKit"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Writes DIR/certs (a development CA, node and operator certificates, a token-signing key
    /// and an observer token) and DIR/jobs.toml for NODES nodes on loopback.
    Init {
        /// The directory (created if missing; refused if it already holds a jobs.toml).
        dir: PathBuf,
        /// How many nodes.
        #[arg(long, default_value_t = 3)]
        nodes: u64,
        /// Node i gossips on port PORT_BASE+i and serves HTTP on PORT_BASE+100+i.
        #[arg(long, env = "MESH_JOBS_PORT_BASE", default_value_t = 7100)]
        port_base: u16,
    },
    /// Runs one node of the service until Ctrl-C or SIGTERM.
    Run {
        /// The cluster file.
        #[arg(long)]
        config: PathBuf,
        /// Which of its `[[nodes]]`.
        #[arg(long)]
        id: u64,
    },
    /// Posts COUNT jobs to the nodes (in turn, each retried on another node until one
    /// acknowledges) and records every acknowledged one in DATA/acked.jsonl.
    Push {
        /// The cluster file.
        #[arg(long)]
        config: PathBuf,
        /// How many jobs.
        #[arg(long, default_value_t = 100)]
        count: u64,
        /// SHA-256 rounds per job (the work).
        #[arg(long, default_value_t = 20_000)]
        rounds: u32,
        /// Job ids are PREFIX-0, PREFIX-1, ...
        #[arg(long, default_value = "job")]
        prefix: String,
        /// Requests in flight at once.
        #[arg(long, default_value_t = 16)]
        concurrency: u64,
    },
    /// Prints every node's GET /jobs/stats (a node down says so).
    Stats {
        /// The cluster file.
        #[arg(long)]
        config: PathBuf,
        /// One JSON array instead of the table.
        #[arg(long)]
        json: bool,
    },
    /// Checks that every acknowledged job was processed and none completed twice, and that
    /// the queues are empty; with --wait, keeps checking until then (or the time is up).
    Verify {
        /// The cluster file.
        #[arg(long)]
        config: PathBuf,
        /// How long to wait for the work to finish (e.g. 60s); without it, check once.
        #[arg(long)]
        wait: Option<HumanDuration>,
    },
    /// Prints node ID's HTTP base URL.
    Url {
        /// The cluster file.
        #[arg(long)]
        config: PathBuf,
        /// Which node.
        #[arg(long)]
        id: u64,
    },
}

/// Why a command failed.
#[derive(Debug, Error)]
enum CliError {
    #[error(transparent)]
    Cluster(#[from] ClusterError),
    #[error(transparent)]
    Run(#[from] RunError),
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{0}")]
    Usage(String),
    #[error("certificates: {0}")]
    Certs(String),
    #[error("job {id} refused: {status} {body}")]
    Refused {
        id: String,
        status: u16,
        body: String,
    },
    #[error("job {id} not acknowledged by any node within {limit:?} (last: {last})")]
    NotAcknowledged {
        id: String,
        limit: Duration,
        last: String,
    },
    #[error("{path}:{line}: {reason}")]
    BadLine {
        path: PathBuf,
        line: usize,
        reason: String,
    },
    #[error("verification failed")]
    Verify,
}

fn io_error(path: &Path) -> impl FnOnce(std::io::Error) -> CliError + '_ {
    move |source| CliError::Io {
        path: path.to_owned(),
        source,
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let default_filter = match cli.command {
        Command::Run { .. } => "info",
        _ => "warn",
    };
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default_filter)),
        )
        .with_writer(std::io::stderr)
        // Colours only on a terminal: a log redirected to a file stays plain text.
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("mesh-jobs: cannot start the runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(dispatch(cli.command)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(CliError::Verify) => ExitCode::FAILURE,
        Err(error) => {
            eprintln!("mesh-jobs: {error}");
            ExitCode::FAILURE
        }
    }
}

async fn dispatch(command: Command) -> Result<(), CliError> {
    match command {
        Command::Init {
            dir,
            nodes,
            port_base,
        } => init(&dir, nodes, port_base),
        Command::Run { config, id } => Ok(service::run(&config, id).await?),
        Command::Push {
            config,
            count,
            rounds,
            prefix,
            concurrency,
        } => push(&config, count, rounds, &prefix, concurrency).await,
        Command::Stats { config, json } => stats(&config, json).await,
        Command::Verify { config, wait } => verify(&config, wait.map(|w| w.0)).await,
        Command::Url { config, id } => {
            let cluster = Cluster::load(&config)?;
            println!("http://{}", cluster.member(id, &config)?.http);
            Ok(())
        }
    }
}

/// `init`: what `meshctl certs init` writes (the same library calls), an observer token for the
/// control API mounted under /mesh, and the cluster file.
fn init(dir: &Path, nodes: u64, port_base: u16) -> Result<(), CliError> {
    if !(1..=16).contains(&nodes) {
        return Err(CliError::Usage(format!(
            "--nodes {nodes}: from 1 to 16 (the first three are the Raft voters)"
        )));
    }
    if port_base.checked_add(200).is_none() {
        return Err(CliError::Usage(format!(
            "--port-base {port_base}: at most {}",
            u16::MAX - 200
        )));
    }
    let config = dir.join("jobs.toml");
    if config.exists() {
        return Err(CliError::Usage(format!(
            "{} exists: remove the directory, or init another",
            config.display()
        )));
    }
    let certs = dir.join("certs");
    let bundle = meshkit_node::certs::write_dev_bundle(&certs, nodes)
        .map_err(|e| CliError::Certs(e.to_string()))?;
    let keys = meshkit_node::tokens::write_signing_key(&certs)
        .map_err(|e| CliError::Certs(e.to_string()))?;
    let signing = meshkit_node::tokens::TokenSigningKey::from_pem_file(&keys.private)
        .map_err(|e| CliError::Certs(e.to_string()))?;
    let observe: meshkit_node::permission::Permissions =
        [meshkit_node::permission::Permission::Observe]
            .into_iter()
            .collect();
    let token = signing
        .issue(
            "jobs-observer",
            &observe,
            SystemTime::now(),
            Duration::from_secs(7 * 24 * 3600),
        )
        .map_err(|e| CliError::Certs(e.to_string()))?;
    let token_path = certs.join("observer.token");
    meshkit_node::certs::write_file(&token_path, &format!("{token}\n"), true)
        .map_err(|e| CliError::Certs(e.to_string()))?;
    std::fs::write(&config, Cluster::template(nodes, port_base)).map_err(io_error(&config))?;
    println!("{}", config.display());
    println!("{} ({} nodes)", bundle.ca.display(), bundle.nodes.len());
    println!("{} (mesh.observe, 7 days)", token_path.display());
    Ok(())
}

/// One acknowledged enqueue, as `push` records it.
#[derive(Debug, serde::Serialize, serde::Deserialize)]
struct Acked {
    #[serde(flatten)]
    accepted: Accepted,
    /// Which node answered.
    via: u64,
    /// When the acknowledgement reached `push`, in milliseconds since the UNIX epoch (absent in
    /// files of older versions). `verify` dates each shard's change of owner with it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    at_ms: Option<u64>,
}

/// Milliseconds since the UNIX epoch, now.
fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// How long `push` tries one job before giving up.
const PUSH_LIMIT: Duration = Duration::from_secs(60);

async fn push(
    path: &Path,
    count: u64,
    rounds: u32,
    prefix: &str,
    concurrency: u64,
) -> Result<(), CliError> {
    let cluster = Arc::new(Cluster::load(path)?);
    std::fs::create_dir_all(&cluster.data).map_err(io_error(&cluster.data))?;
    let acked_path = cluster.acked_file();
    let acked = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&acked_path)
        .map_err(io_error(&acked_path))?;
    let acked = Arc::new(Mutex::new(acked));
    let next = Arc::new(AtomicU64::new(0));
    let retries = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let mut tasks: tokio::task::JoinSet<Result<(), CliError>> = tokio::task::JoinSet::new();
    for _ in 0..concurrency.clamp(1, 256) {
        let (cluster, acked, next, retries) = (
            cluster.clone(),
            acked.clone(),
            next.clone(),
            retries.clone(),
        );
        let prefix = prefix.to_owned();
        let acked_path = acked_path.clone();
        tasks.spawn(async move {
            loop {
                let k = next.fetch_add(1, Ordering::Relaxed);
                if k >= count {
                    return Ok(());
                }
                let job = Job {
                    id: format!("{prefix}-{k}"),
                    data: format!("payload {k}"),
                    rounds,
                };
                job.check().map_err(|e| CliError::Usage(e.to_string()))?;
                let (via, accepted) = push_one(&cluster, &job, k, &retries).await?;
                let mut line = serde_json::to_vec(&Acked {
                    accepted,
                    via,
                    at_ms: Some(unix_ms()),
                })
                .unwrap_or_default();
                line.push(b'\n');
                let mut file = acked
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner);
                file.write_all(&line).map_err(io_error(&acked_path))?;
            }
        });
    }
    while let Some(done) = tasks.join_next().await {
        match done {
            Ok(result) => result?,
            Err(error) => return Err(CliError::Usage(format!("a push task failed: {error}"))),
        }
    }
    let elapsed = started.elapsed();
    println!(
        "pushed {count} jobs of {rounds} rounds in {:.2} s ({:.0} jobs/s), all acknowledged; \
         {} retries; recorded in {}",
        elapsed.as_secs_f64(),
        count as f64 / elapsed.as_secs_f64().max(1e-9),
        retries.load(Ordering::Relaxed),
        acked_path.display()
    );
    Ok(())
}

/// Posts one job, starting at node `k mod n` and moving on to the next node on a connection
/// error, a 503 (no owner yet, a failover under way) or a 504 (no answer in time: the job may
/// stand twice in the queue after the retry; producers are at least once).
async fn push_one(
    cluster: &Cluster,
    job: &Job,
    k: u64,
    retries: &AtomicU64,
) -> Result<(u64, Accepted), CliError> {
    let body = serde_json::to_vec(job).unwrap_or_default();
    let n = cluster.members.len();
    let started = Instant::now();
    let mut attempt = usize::try_from(k).unwrap_or(0);
    loop {
        let member = cluster.members[attempt % n];
        attempt += 1;
        let last = match client::request(member.http, "/jobs", Some(body.clone())).await {
            Ok(answer) if answer.status == 200 => {
                let accepted: Accepted = serde_json::from_str(&answer.body).map_err(|e| {
                    CliError::Usage(format!("node {}: not an answer: {e}", member.id))
                })?;
                return Ok((member.id, accepted));
            }
            Ok(answer) if matches!(answer.status, 429 | 503 | 504) => {
                format!("node {}: {} {}", member.id, answer.status, answer.body)
            }
            Ok(answer) => {
                return Err(CliError::Refused {
                    id: job.id.clone(),
                    status: answer.status,
                    body: answer.body,
                });
            }
            Err(error) => error.to_string(),
        };
        retries.fetch_add(1, Ordering::Relaxed);
        if started.elapsed() > PUSH_LIMIT {
            return Err(CliError::NotAcknowledged {
                id: job.id.clone(),
                limit: PUSH_LIMIT,
                last,
            });
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Every node's stats, or why it did not answer.
async fn fetch_stats(cluster: &Cluster) -> Vec<(u64, Result<Stats, String>)> {
    let mut all = Vec::new();
    for member in &cluster.members {
        let stats = match client::request(member.http, "/jobs/stats", None).await {
            Ok(answer) if answer.status == 200 => {
                serde_json::from_str::<Stats>(&answer.body).map_err(|e| e.to_string())
            }
            Ok(answer) => Err(format!("{} {}", answer.status, answer.body.trim())),
            Err(error) => Err(error.to_string()),
        };
        all.push((member.id, stats));
    }
    all
}

async fn stats(path: &Path, json: bool) -> Result<(), CliError> {
    let cluster = Cluster::load(path)?;
    let all = fetch_stats(&cluster).await;
    if json {
        let values: Vec<serde_json::Value> = all
            .iter()
            .map(|(id, s)| match s {
                Ok(stats) => serde_json::to_value(stats).unwrap_or_default(),
                Err(e) => serde_json::json!({ "node": id, "down": e }),
            })
            .collect();
        println!("{}", serde_json::Value::Array(values));
        return Ok(());
    }
    println!(
        "{:<5} {:>7} {:>9} {:>9} {:>7}  QUEUES SERVED (pending/leased)",
        "NODE", "LEASED", "PROCESSED", "COMPLETED", "REFUSED"
    );
    for (id, stats) in &all {
        match stats {
            Ok(s) => {
                let queues: Vec<String> = s
                    .served
                    .iter()
                    .map(|q| {
                        let rebuilding = if q.recovering { " rebuilding" } else { "" };
                        format!("{} {}/{}{rebuilding}", q.shard, q.pending, q.active)
                    })
                    .collect();
                println!(
                    "{:<5} {:>7} {:>9} {:>9} {:>7}  {}",
                    id,
                    s.leased,
                    s.processed,
                    s.completed,
                    s.refused,
                    if queues.is_empty() {
                        "-".to_owned()
                    } else {
                        queues.join(", ")
                    }
                );
            }
            Err(e) => println!("{id:<5} down ({e})"),
        }
    }
    Ok(())
}

/// An item's identity: its shard's queue and its id there.
type ItemKey = (String, u64);

/// What the files say.
#[derive(Debug, Default)]
struct Ledger {
    /// Every acknowledged item, with its job id.
    acked: BTreeMap<ItemKey, String>,
    /// Every run of an item: (node, digest).
    runs: BTreeMap<ItemKey, Vec<(u64, String)>>,
    /// Completions accepted, per item.
    completions: BTreeMap<ItemKey, u32>,
    /// Completions refused as stale.
    refused: usize,
    /// Every dated acknowledgement per shard: (the owner's fence, when `push` got it).
    acked_at: BTreeMap<String, Vec<(u64, u64)>>,
}

/// A shard's change of owner as the producer saw it: the last acknowledgement under the old
/// fence and the first under the next one.
#[derive(Debug, PartialEq, Eq)]
struct OwnerChange {
    shard: String,
    from_fence: u64,
    to_fence: u64,
    /// Milliseconds between the two acknowledgements: how long the shard acknowledged nothing
    /// (its failover as a producer pays it, the 100 ms between retries included).
    silent_ms: u64,
}

impl Ledger {
    /// The changes of owner among the dated acknowledgements, per shard in fence order.
    fn owner_changes(&self) -> Vec<OwnerChange> {
        let mut changes = Vec::new();
        for (shard, acks) in &self.acked_at {
            // fence -> (first, last) acknowledgement under it.
            let mut spans: BTreeMap<u64, (u64, u64)> = BTreeMap::new();
            for &(fence, at) in acks {
                let span = spans.entry(fence).or_insert((at, at));
                *span = (span.0.min(at), span.1.max(at));
            }
            let spans: Vec<_> = spans.into_iter().collect();
            for pair in spans.windows(2) {
                let ((from_fence, (_, last)), (to_fence, (first, _))) = (pair[0], pair[1]);
                changes.push(OwnerChange {
                    shard: shard.clone(),
                    from_fence,
                    to_fence,
                    silent_ms: first.saturating_sub(last),
                });
            }
        }
        changes
    }
}

fn read_lines(
    path: &Path,
    mut each: impl FnMut(usize, &str) -> Result<(), String>,
) -> Result<(), CliError> {
    let file = match std::fs::File::open(path) {
        Ok(file) => file,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(source) => {
            return Err(CliError::Io {
                path: path.to_owned(),
                source,
            });
        }
    };
    for (i, line) in std::io::BufReader::new(file).lines().enumerate() {
        let line = line.map_err(io_error(path))?;
        if line.trim().is_empty() {
            continue;
        }
        each(i + 1, &line).map_err(|reason| CliError::BadLine {
            path: path.to_owned(),
            line: i + 1,
            reason,
        })?;
    }
    Ok(())
}

fn read_ledger(cluster: &Cluster) -> Result<Ledger, CliError> {
    let mut ledger = Ledger::default();
    read_lines(&cluster.acked_file(), |_, line| {
        let a: Acked = serde_json::from_str(line).map_err(|e| e.to_string())?;
        if let Some(at) = a.at_ms {
            ledger
                .acked_at
                .entry(a.accepted.shard.clone())
                .or_default()
                .push((a.accepted.fence, at));
        }
        ledger
            .acked
            .insert((a.accepted.shard, a.accepted.item), a.accepted.id);
        Ok(())
    })?;
    for member in &cluster.members {
        read_lines(&cluster.results_file(member.id), |_, line| {
            match serde_json::from_str(line).map_err(|e| e.to_string())? {
                Record::Processed {
                    node,
                    shard,
                    item,
                    digest,
                    ..
                } => ledger
                    .runs
                    .entry((shard, item))
                    .or_default()
                    .push((node, digest)),
                Record::Completed { shard, item, .. } => {
                    *ledger.completions.entry((shard, item)).or_default() += 1;
                }
                Record::Refused { .. } => ledger.refused += 1,
            }
            Ok(())
        })?;
    }
    Ok(ledger)
}

/// The queues as the live nodes serve them: (every shard served and rebuilt, pending, leased,
/// which nodes answered).
async fn queue_state(cluster: &Cluster) -> (bool, usize, usize, Vec<u64>) {
    let mut shards = BTreeSet::new();
    let (mut pending, mut active, mut rebuilt) = (0, 0, true);
    let mut up = Vec::new();
    for (id, stats) in fetch_stats(cluster).await {
        let Ok(stats) = stats else { continue };
        up.push(id);
        for q in stats.served {
            rebuilt &= !q.recovering;
            pending += q.pending;
            active += q.active;
            shards.insert(q.shard);
        }
    }
    let all_served = rebuilt && shards.len() == cluster.shards as usize;
    (all_served, pending, active, up)
}

async fn verify(path: &Path, wait: Option<Duration>) -> Result<(), CliError> {
    let cluster = Cluster::load(path)?;
    let started = Instant::now();
    let limit = wait.unwrap_or_default();
    let (ledger, served, pending, active, up) = loop {
        let ledger = read_ledger(&cluster)?;
        let (served, pending, active, up) = queue_state(&cluster).await;
        let lost = ledger
            .acked
            .keys()
            .filter(|k| !ledger.runs.contains_key(*k))
            .count();
        let done = lost == 0 && served && pending == 0 && active == 0;
        if done || started.elapsed() >= limit {
            break (ledger, served, pending, active, up);
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    };
    let lost: Vec<String> = ledger
        .acked
        .iter()
        .filter(|(k, _)| !ledger.runs.contains_key(*k))
        .map(|((shard, item), id)| format!("{id} ({shard} item {item})"))
        .collect();
    let twice: Vec<String> = ledger
        .completions
        .iter()
        .filter(|(_, n)| **n > 1)
        .map(|((shard, item), n)| format!("{shard} item {item} ({n} times)"))
        .collect();
    let inconsistent: Vec<String> = ledger
        .runs
        .iter()
        .filter(|(_, runs)| runs.iter().any(|(_, d)| *d != runs[0].1))
        .map(|((shard, item), _)| format!("{shard} item {item}"))
        .collect();
    let processed = ledger
        .acked
        .keys()
        .filter(|k| ledger.runs.contains_key(*k))
        .count();
    let drained = served && pending == 0 && active == 0;
    // Runs of acknowledged items, and items never acknowledged (a post whose answer was lost,
    // sent again: the first copy stands in the queue too and is worked like any other).
    let runs: usize = ledger
        .acked
        .keys()
        .filter_map(|k| ledger.runs.get(k))
        .map(Vec::len)
        .sum();
    let rerun = ledger
        .acked
        .keys()
        .filter_map(|k| ledger.runs.get(k))
        .filter(|r| r.len() > 1)
        .count();
    let unacked = ledger
        .runs
        .keys()
        .filter(|k| !ledger.acked.contains_key(*k))
        .count();
    let completions: u32 = ledger.completions.values().sum();
    println!(
        "acknowledged {} jobs; processed {processed} of them ({runs} runs: {rerun} ran more than \
         once); {} {}",
        ledger.acked.len(),
        if drained { "lost" } else { "not processed yet" },
        lost.len()
    );
    println!(
        "items enqueued without an acknowledgement (posts sent again) and processed too: {unacked}"
    );
    println!(
        "completions accepted {completions} (as recorded), refused as stale {}, accepted twice {}",
        ledger.refused,
        twice.len()
    );
    for change in ledger.owner_changes() {
        println!(
            "{}: new owner (fence {} -> {}): nothing acknowledged for {:.2} s (from the last \
             acknowledgement under the old fence to the first under the new)",
            change.shard,
            change.from_fence,
            change.to_fence,
            change.silent_ms as f64 / 1000.0
        );
    }
    println!(
        "queues: {} on nodes {up:?}: {pending} pending, {active} leased (after {:.1} s)",
        if served {
            "every shard served"
        } else {
            "NOT every shard served"
        },
        started.elapsed().as_secs_f64()
    );
    // An unprocessed job is lost only once the queues hold nothing more: before that it may be
    // one of the jobs still waiting (the wait ran out first).
    let unprocessed = if drained {
        "lost (acknowledged, never processed, and the queues are empty)"
    } else {
        "not processed yet (the queues still hold work: lost, or only slow?)"
    };
    let mut ok = true;
    for (what, list) in [
        (unprocessed, &lost),
        ("completed twice", &twice),
        ("results that differ between runs", &inconsistent),
    ] {
        if !list.is_empty() {
            ok = false;
            let shown: Vec<&str> = list.iter().take(10).map(String::as_str).collect();
            println!("FAIL {what}: {} ({}...)", list.len(), shown.join(", "));
        }
    }
    if !drained {
        ok = false;
        println!("FAIL the queues still hold work");
    }
    if ok {
        println!("ok: nothing lost");
        Ok(())
    } else {
        Err(CliError::Verify)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_owner_change_spans_the_last_old_and_the_first_new_acknowledgement() {
        let mut ledger = Ledger::default();
        ledger.acked_at.insert(
            "jobs/0".into(),
            vec![
                (3, 1_000),
                (3, 1_400),
                (7, 5_600),
                (3, 1_200),
                (7, 5_500),
                (9, 9_000),
            ],
        );
        ledger
            .acked_at
            .insert("jobs/1".into(), vec![(2, 1_000), (2, 8_000)]);
        let change = |from_fence, to_fence, silent_ms| OwnerChange {
            shard: "jobs/0".into(),
            from_fence,
            to_fence,
            silent_ms,
        };
        assert_eq!(
            ledger.owner_changes(),
            vec![change(3, 7, 4_100), change(7, 9, 3_400)]
        );
    }
}
