//! What the real-node benchmark programs (`benches/examples`) share: a cluster of `meshkitd` processes on loopback
//! (certificates, configs, spawning, killing), reads of their control API, of `/proc` and of
//! the machine's load, and order statistics for the tables.

pub use crate::{daemon, raw_client};

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use meshkit_node::client::{Client, ClientConfig, Protocols};

use crate::fixtures::TempDir;
use meshkit_node::api::json::{Change, FeedEntry, LeadershipView};

use crate::daemon::Daemon;

/// Errors of the benchmark programs: each says what was being done.
pub type BenchError = Box<dyn std::error::Error + Send + Sync>;

/// Where `meshkitd` is: `explicit`, or where [`crate::find_bin`] finds it (next to the
/// directory of this program: `target/<profile>/examples/..` -> `target/<profile>/meshkitd`).
pub fn meshkitd_path(explicit: Option<PathBuf>) -> Result<PathBuf, BenchError> {
    match explicit {
        Some(path) if path.is_file() => Ok(path),
        Some(path) => Err(format!("no meshkitd at {} (--meshkitd PATH)", path.display()).into()),
        None => Ok(crate::find_bin("meshkitd")?),
    }
}

/// How every node of a [`Cluster`] is configured, apart from its id and seeds.
#[derive(Clone, Debug)]
pub struct Layout {
    /// Nodes `1..=nodes`.
    pub nodes: u64,
    /// Voters `1..=voters`.
    pub voters: u64,
    /// The scopes contended for ...
    pub scopes: Vec<String>,
    /// ... by nodes `campaigners` (the others run leadership without a campaign).
    pub campaigners: std::ops::RangeInclusive<u64>,
    /// The lease TTL, in seconds.
    pub ttl_s: u64,
    /// `[membership]` overrides, TOML lines (empty: the `lan` profile as it ships).
    pub membership: String,
    /// Voters keep their Raft log in `raft-{id}` (`[leadership] data_dir`), so that a killed
    /// voter may be started again; without it a voter must never come back.
    pub durable_voters: bool,
}

/// `meshkitd` processes on 127.0.0.1, all killed (SIGKILL) when this is dropped, and a control
/// API client presenting node-1's certificate (a node certificate may observe).
#[derive(Debug)]
pub struct Cluster {
    bin: PathBuf,
    layout: Layout,
    daemons: BTreeMap<u64, Daemon>,
    client: Client,
    // Dropped last: the daemons are killed before their files go.
    dir: TempDir,
}

impl Cluster {
    /// Certificates for `layout.nodes` nodes in a new temporary directory; nothing started.
    pub fn new(bin: PathBuf, layout: Layout, name: &str) -> Result<Self, BenchError> {
        let dir = TempDir::try_new(name)?;
        let (ca, _) = meshkit_node::certs::write_dev_certs(dir.path(), layout.nodes)?;
        let config = ClientConfig::new(&ca)?
            .with_identity(
                &dir.path().join("node-1.pem"),
                &dir.path().join("node-1.key"),
            )?
            .with_protocols(Protocols::TcpOnly)
            .with_request_timeout(Duration::from_secs(5));
        Ok(Self {
            bin,
            layout,
            daemons: BTreeMap::new(),
            client: Client::new(&config)?,
            dir,
        })
    }

    /// Starts every node in id order, each seeded with node 1 (node 1 with nobody).
    pub fn start_all(&mut self) -> Result<(), BenchError> {
        for id in 1..=self.layout.nodes {
            self.start(id)?;
        }
        Ok(())
    }

    /// Starts node `id` (again: a fresh process, a new port), seeded with every running node.
    pub fn start(&mut self, id: u64) -> Result<(), BenchError> {
        let seeds: Vec<String> = self
            .daemons
            .iter()
            .filter(|(other, _)| **other != id)
            .map(|(other, d)| format!("\"{other}@{}\"", d.gossip))
            .collect();
        let path = self.write_config(id, &seeds)?;
        let daemon = daemon::spawn(&self.bin, &path)?;
        self.daemons.insert(id, daemon);
        Ok(())
    }

    fn write_config(&self, id: u64, seeds: &[String]) -> Result<PathBuf, BenchError> {
        let l = &self.layout;
        let campaign: Vec<String> = if l.campaigners.contains(&id) {
            l.scopes.iter().map(|s| format!("\"{s}\"")).collect()
        } else {
            Vec::new()
        };
        let voters: Vec<String> = (1..=l.voters).map(|v| v.to_string()).collect();
        let data_dir = if l.durable_voters && id <= l.voters {
            format!("data_dir = \"raft-{id}\"\n")
        } else {
            String::new()
        };
        let text = format!(
            "id = {id}\nlisten = \"127.0.0.1:0\"\ncontrol = \"127.0.0.1:0\"\nseeds = [{seeds}]\n\
             profile = \"lan\"\n\n[tls]\ncert = \"node-{id}.pem\"\nkey = \"node-{id}.key\"\n\
             ca = \"ca.pem\"\n\n[membership]\n{membership}\n[leadership]\nvoters = [{voters}]\n\
             campaign = [{campaign}]\nttl = \"{ttl}s\"\n{data_dir}",
            seeds = seeds.join(", "),
            membership = l.membership,
            voters = voters.join(", "),
            campaign = campaign.join(", "),
            ttl = l.ttl_s,
        );
        let path = self.dir.path().join(format!("node-{id}.toml"));
        std::fs::write(&path, text)?;
        Ok(path)
    }

    /// Kills node `id` with SIGKILL and reaps it; `None` if it was not running.
    pub fn kill(&mut self, id: u64) -> Option<()> {
        let mut daemon = self.daemons.remove(&id)?;
        daemon.kill();
        Some(())
    }

    /// The running nodes' ids.
    pub fn running(&self) -> Vec<u64> {
        self.daemons.keys().copied().collect()
    }

    /// The process id of node `id`.
    pub fn pid(&self, id: u64) -> Option<u32> {
        self.daemons.get(&id).map(|d| d.child.id())
    }

    /// Node `id`'s control API address, `host:port`.
    pub fn control(&self, id: u64) -> Option<&str> {
        self.daemons.get(&id).map(|d| d.control.as_str())
    }

    /// The directory of the certificates (`ca.pem`, `node-<id>.pem`, `node-<id>.key`).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The layout.
    pub fn layout(&self) -> &Layout {
        &self.layout
    }

    /// `GET path` from node `id`'s control API: the body of a 200.
    pub async fn get(&self, id: u64, path: &str) -> Result<String, BenchError> {
        let d = self
            .daemons
            .get(&id)
            .ok_or_else(|| format!("node-{id} is not running"))?;
        let response = self.client.get(&d.control, path).await?;
        if response.status != 200 {
            return Err(format!("node-{id} {path}: HTTP {}", response.status).into());
        }
        Ok(response.body)
    }

    /// Node `id`'s `/metrics`, parsed.
    pub async fn metrics(&self, id: u64) -> Result<Metrics, BenchError> {
        Ok(Metrics::parse(&self.get(id, "/metrics").await?))
    }

    /// Node `id`'s `/meshkit/leaders`.
    pub async fn leaders(&self, id: u64) -> Result<LeadershipView, BenchError> {
        Ok(serde_json::from_str(
            &self.get(id, "/meshkit/leaders").await?,
        )?)
    }

    /// The entries node `id`'s leadership feed still holds (`follow=false`, `after=0`: all of
    /// them, not only the recent ones a subscriber without a resume point gets).
    pub async fn feed(&self, id: u64) -> Result<Vec<FeedEntry>, BenchError> {
        let body = self
            .get(id, "/control/events/leadership?follow=false&after=0")
            .await?;
        Ok(body
            .lines()
            .filter_map(|l| l.strip_prefix("data:"))
            .filter_map(|data| serde_json::from_str(data.trim()).ok())
            .collect())
    }

    /// Whether every running node counts `alive` members alive.
    pub async fn all_see_alive(&self, alive: u64) -> bool {
        for id in self.running() {
            match self.metrics(id).await {
                Ok(m) if m.value("mesh_gossip_members{state=\"alive\"}") == alive as f64 => {}
                _ => return false,
            }
        }
        true
    }
}

/// The acquisition of `scope` with a token above `above` in `entries`: its Unix milliseconds.
pub fn acquired_at(entries: &[FeedEntry], scope: &str, above: u64) -> Option<(u64, u64)> {
    entries.iter().find_map(|e| match &e.change {
        Change::Acquired {
            scope: s, token, ..
        } if s == scope && *token > above => Some((e.unix_ms, *token)),
        _ => None,
    })
}

/// Samples of one Prometheus text exposition, by `name{labels}`.
#[derive(Clone, Debug, Default)]
pub struct Metrics(BTreeMap<String, f64>);

impl Metrics {
    /// Parses the text format's sample lines (comments skipped).
    pub fn parse(text: &str) -> Self {
        Self(
            text.lines()
                .filter(|l| !l.starts_with('#'))
                .filter_map(|l| l.rsplit_once(' '))
                .filter_map(|(name, value)| Some((name.to_owned(), value.parse().ok()?)))
                .collect(),
        )
    }

    /// The sample `key` (`name` or `name{labels}`), 0 when absent.
    pub fn value(&self, key: &str) -> f64 {
        self.0.get(key).copied().unwrap_or(0.0)
    }
}

/// CPU time (user + system) of process `pid` so far, from `/proc/<pid>/stat`.
pub fn cpu_time(pid: u32, ticks_per_s: f64) -> Result<Duration, BenchError> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    // Fields after the command name (which may hold spaces) start at field 3 (state); utime
    // and stime are fields 14 and 15 (proc(5)).
    let rest = stat
        .rsplit_once(')')
        .map(|(_, r)| r)
        .ok_or("malformed /proc/<pid>/stat")?;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| -> Result<f64, BenchError> {
        Ok(fields
            .get(i)
            .ok_or("short /proc/<pid>/stat")?
            .parse::<u64>()? as f64)
    };
    Ok(Duration::from_secs_f64(
        (ticks(11)? + ticks(12)?) / ticks_per_s,
    ))
}

/// Resident set size of process `pid` in bytes (`VmRSS` of `/proc/<pid>/status`).
pub fn rss_bytes(pid: u32) -> Result<u64, BenchError> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let kb = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .ok_or("no VmRSS in /proc/<pid>/status")?;
    Ok(kb * 1024)
}

/// Clock ticks per second of `/proc` CPU times (`getconf CLK_TCK`; 100 on Linux if unknown).
pub fn clock_ticks_per_s() -> f64 {
    std::process::Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(100.0)
}

/// The machine's load averages over 1, 5 and 15 minutes (`/proc/loadavg`).
pub fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "unknown".to_owned())
}

/// Packets and bytes received on the loopback interface so far (`/proc/net/dev`): in a network
/// namespace of its own, exactly this cluster's UDP and TCP traffic with all headers.
pub fn loopback_counters() -> Option<(u64, u64)> {
    let dev = std::fs::read_to_string("/proc/net/dev").ok()?;
    let line = dev.lines().find(|l| l.trim_start().starts_with("lo:"))?;
    let fields: Vec<u64> = line
        .split_once(':')?
        .1
        .split_whitespace()
        .filter_map(|f| f.parse().ok())
        .collect();
    Some((*fields.get(1)?, *fields.first()?))
}

/// The `q` quantile of sorted `xs` by nearest rank: the smallest sample with at least a
/// fraction `q` of the samples at or below it.
pub fn quantile(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = ((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    sorted[rank - 1]
}

/// Sorted copy of `xs` (NaNs last).
pub fn sorted(xs: impl IntoIterator<Item = f64>) -> Vec<f64> {
    let mut v: Vec<f64> = xs.into_iter().collect();
    v.sort_by(f64::total_cmp);
    v
}

/// Polls `check` every `step` until it yields a value or `limit` passes; bounded in time and
/// in count.
pub async fn poll_until<T, F, Fut>(limit: Duration, step: Duration, mut check: F) -> Option<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = Instant::now() + limit;
    let max_polls = limit.as_millis() / step.as_millis().max(1) + 1;
    for _ in 0..max_polls {
        if let Some(value) = check().await {
            return Some(value);
        }
        if Instant::now() >= deadline {
            break;
        }
        tokio::time::sleep(step).await;
    }
    None
}

/// Runs `work` on a two-worker runtime until it ends or Ctrl-C / SIGTERM arrives; either way
/// the work's future is dropped before this returns, so its cluster's processes are killed.
pub fn run_main<F>(name: &str, work: F) -> std::process::ExitCode
where
    F: Future<Output = Result<(), BenchError>>,
{
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("{name}: {error}");
            return std::process::ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async {
        tokio::select! {
            result = work => result,
            () = meshkit_node::node::shutdown_signal() => Err("interrupted".into()),
        }
    });
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("{name}: {error}");
            std::process::ExitCode::FAILURE
        }
    }
}

/// A Markdown table row of `cells`.
pub fn row(cells: &[String]) -> String {
    let mut line = String::from("|");
    for cell in cells {
        let _ = write!(line, " {cell} |");
    }
    line
}
