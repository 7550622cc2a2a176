//! The probe agent's cost targets of issue 14 (docs/benchmarks.md, "Probe agent"): probe
//! executions per second per core of the agent's CPU, and its memory with 1,000 probes.
//!
//! ```text
//! cargo build --release -p meshkit-cli -p meshkit-probe --bins
//! cargo run --release -p meshkit-benches --example probe_agent -- [--probes 1000] [--interval 1s] [--seconds 30]
//! ```
//!
//! One `meshkitd` on 127.0.0.1 (a voter of its own, so every read endpoint answers) and one
//! `meshkit-probe` with `--probes` API probes against it: groups of five (`peers`, `shards`,
//! `clusters`, `versions`, `leaders`), each run parsing and judging the answer as in
//! production. After a warm-up of two intervals, the agent's executions (the sum of its
//! `mesh_probe_results_total`), its CPU time (utime + stime from /proc) and the node's are
//! read over `--seconds`; then its resident memory. The figure is executions per CPU-second of
//! the agent: what one core of it sustains, whatever the node costs (the node runs on the same
//! two cores; its CPU is printed beside).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode, Stdio};
use std::time::{Duration, Instant};

use meshkit_testkit::cluster::{
    BenchError, clock_ticks_per_s, cpu_time, load_average, meshkitd_path, rss_bytes, run_main,
};
use meshkit_testkit::daemon::{self, Killed};
use meshkit_testkit::fixtures::{TempDir, write_config_with};

/// The API endpoints a group probes: five probes per group.
const ENDPOINTS: [&str; 5] = ["peers", "shards", "clusters", "versions", "leaders"];

/// Probe execution rate and memory of one agent.
#[derive(Debug, clap::Parser)]
struct Args {
    /// API probes configured (a multiple of 5, at most 1,280).
    #[arg(long, default_value_t = 1000, value_parser = clap::value_parser!(u64).range(5..=1280))]
    probes: u64,
    /// Every probe's interval (and timeout).
    #[arg(long, default_value = "1s")]
    interval: String,
    /// The measured window, in seconds.
    #[arg(long, default_value_t = 30, value_parser = clap::value_parser!(u64).range(5..=600))]
    seconds: u64,
    /// The meshkitd binary (default: next to this program's directory).
    #[arg(long)]
    meshkitd: Option<PathBuf>,
    /// The meshkit-probe binary (default: next to meshkitd).
    #[arg(long)]
    agent: Option<PathBuf>,
    /// Check the arguments, print them and run nothing.
    #[arg(long)]
    dry_run: bool,
}

fn main() -> ExitCode {
    let args = <Args as clap::Parser>::parse();
    if args.dry_run {
        println!("would run probe_agent with {args:?}; nothing ran (--dry-run)");
        return ExitCode::SUCCESS;
    }
    run_main("probe_agent", run(&args))
}

fn agent_config(dir: &Path, node: &str, probes: u64, interval: &str, listen: SocketAddr) -> String {
    let mut text = format!(
        "[agent]\nname = \"bench\"\nlisten = \"{listen}\"\n\n\
         [credentials]\nca = \"ca.pem\"\ncert = \"meshctl-observer.pem\"\nkey = \"meshctl-observer.key\"\n\n\
         [defaults]\ninterval = \"{interval}\"\ntimeout = \"{interval}\"\n\n\
         [history]\npath = {:?}\n\n",
        dir.join("history.sqlite").display().to_string()
    );
    let endpoints = ENDPOINTS.map(|e| format!("\"{e}\"")).join(", ");
    for g in 0..probes / 5 {
        text.push_str(&format!(
            "[[group]]\nname = \"g{g}\"\ncluster = \"bench\"\ntargets = [\"{node}\"]\n\
             probes = [\"api\"]\n[group.api]\nendpoints = [{endpoints}]\n\n"
        ));
    }
    text
}

/// The sum of the agent's `mesh_probe_results_total`.
async fn executions(listen: SocketAddr) -> Result<f64, BenchError> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(listen).await?;
    stream
        .write_all(format!("GET /metrics HTTP/1.0\r\nHost: {listen}\r\n\r\n").as_bytes())
        .await?;
    let mut body = String::new();
    stream.read_to_string(&mut body).await?;
    Ok(body
        .lines()
        .filter(|l| l.starts_with("mesh_probe_results_total{"))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum())
}

async fn run(args: &Args) -> Result<(), BenchError> {
    if !args.probes.is_multiple_of(5) {
        return Err(BenchError::from(format!(
            "--probes {} is not a multiple of 5 (five endpoints per group)",
            args.probes
        )));
    }
    let interval = meshkit::config::parse_duration(&args.interval)
        .map_err(|e| BenchError::from(format!("--interval {}: {e}", args.interval)))?;
    let meshkitd = meshkitd_path(args.meshkitd.clone())?;
    let agent_bin = args
        .agent
        .clone()
        .unwrap_or_else(|| meshkitd.with_file_name("meshkit-probe"));
    let dir = TempDir::try_new("probe-agent-bench")?;
    let bundle = meshkit_node::certs::write_dev_bundle(dir.path(), 1)
        .map_err(|e| BenchError::from(e.to_string()))?;
    let node_files = &bundle.nodes[0];
    let config = write_config_with(
        dir.path(),
        1,
        &[],
        &node_files.cert,
        &node_files.key,
        &bundle.ca,
        "[access.identities]\nmeshctl-observer = [\"mesh.observe\"]\n\n\
         [leadership]\nvoters = [1]\n\n[shards]\nnamespaces = { bench = 4 }\n",
    );
    let node = daemon::spawn(&meshkitd, &config).map_err(|e| BenchError::from(e.to_string()))?;
    let listen: SocketAddr = {
        let l = std::net::TcpListener::bind("127.0.0.1:0")?;
        l.local_addr()?
    };
    let probes_toml = dir.path().join("probes.toml");
    std::fs::write(
        &probes_toml,
        agent_config(
            dir.path(),
            &node.control,
            args.probes,
            &args.interval,
            listen,
        ),
    )?;
    let log = std::fs::File::create(dir.path().join("agent.log"))?;
    let agent = Killed(
        Command::new(&agent_bin)
            .arg("--config")
            .arg(&probes_toml)
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .map_err(|e| BenchError::from(format!("{}: {e}", agent_bin.display())))?,
    );
    let ticks = clock_ticks_per_s();
    // Warm-up: the agent starts, checks least privilege, and every probe runs twice.
    let warm = Instant::now();
    while executions(listen).await.unwrap_or(0.0) < args.probes as f64 * 2.0 {
        if warm.elapsed() > Duration::from_secs(60) + interval * 4 {
            let log = std::fs::read_to_string(dir.path().join("agent.log")).unwrap_or_default();
            return Err(
                format!("the agent did not run every probe twice within a minute:\n{log}").into(),
            );
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let agent_pid = agent.0.id();
    let node_pid = node.child.id();
    let (runs0, agent_cpu0, node_cpu0) = (
        executions(listen).await?,
        cpu_time(agent_pid, ticks)?,
        cpu_time(node_pid, ticks)?,
    );
    let started = Instant::now();
    tokio::time::sleep(Duration::from_secs(args.seconds)).await;
    let (runs1, agent_cpu1, node_cpu1) = (
        executions(listen).await?,
        cpu_time(agent_pid, ticks)?,
        cpu_time(node_pid, ticks)?,
    );
    let wall = started.elapsed().as_secs_f64();
    let runs = runs1 - runs0;
    let agent_cpu = (agent_cpu1 - agent_cpu0).as_secs_f64();
    let node_cpu = (node_cpu1 - node_cpu0).as_secs_f64();
    let rss = rss_bytes(agent_pid)?;
    let offered = args.probes as f64 / interval.as_secs_f64();
    println!(
        "probes {} every {} ({offered:.0}/s offered), {wall:.1} s measured, load {}",
        args.probes,
        args.interval,
        load_average()
    );
    println!(
        "| executions/s | agent CPU (cores) | executions per agent CPU-second | node CPU (cores) | agent RSS |"
    );
    println!("|---:|---:|---:|---:|---:|");
    println!(
        "| {:.0} | {:.3} | {:.0} | {:.3} | {:.1} MiB |",
        runs / wall,
        agent_cpu / wall,
        if agent_cpu > 0.0 {
            runs / agent_cpu
        } else {
            f64::NAN
        },
        node_cpu / wall,
        rss as f64 / 1_048_576.0
    );
    drop(agent);
    drop(node);
    Ok(())
}
