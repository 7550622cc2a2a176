//! The probe agent's detection target of issue 14 (docs/benchmarks.md, "Probe agent"): an alert
//! at Alertmanager within `interval x failure_threshold + timeout + 1 s` of the fault, p99 over
//! `--faults` injected faults.
//!
//! ```text
//! cargo build --release -p meshkit-cli -p meshkit-probe --bins
//! cargo run --release -p meshkit-benches --example probe_detection -- [--faults 50]
//! ```
//!
//! One `meshkitd` on 127.0.0.1, one `meshkit-probe` probing its read API every `--interval`
//! (timeout the same, 3 failures to fail, 2 passes to resolve), and Debian's Alertmanager
//! (`prometheus-alertmanager`) receiving the agent's alerts. Each fault kills the node
//! (SIGKILL) and polls Alertmanager's `GET /api/v2/alerts` every 50 ms until the agent's
//! `MeshKitProbeFailing` is there: the detection delay. Then the node is started again on its
//! ports and the alert must go before the next fault.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode, Stdio};
use std::time::{Duration, Instant};

use meshkit_testkit::cluster::{
    BenchError, load_average, meshkitd_path, quantile, run_main, sorted,
};
use meshkit_testkit::daemon::{self, Daemon, Killed};
use meshkit_testkit::fixtures::{TempDir, write_config_with};

/// Probe detection delay over repeated faults.
#[derive(Debug, clap::Parser)]
struct Args {
    /// Faults injected, one after another.
    #[arg(long, default_value_t = 50, value_parser = clap::value_parser!(u64).range(1..=1000))]
    faults: u64,
    /// The probe's interval and timeout, in milliseconds.
    #[arg(long, default_value_t = 1000, value_parser = clap::value_parser!(u64).range(100..=10_000))]
    interval_ms: u64,
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

const FAILURES: u64 = 3;

fn main() -> ExitCode {
    let args = <Args as clap::Parser>::parse();
    if args.dry_run {
        println!("would run probe_detection with {args:?}; nothing ran (--dry-run)");
        return ExitCode::SUCCESS;
    }
    run_main("probe_detection", run(&args))
}

/// A free loopback TCP port.
fn free_addr() -> Result<SocketAddr, BenchError> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?)
}

/// `GET path` over HTTP/1.0 on loopback: the body.
async fn get(addr: SocketAddr, path: &str) -> Result<String, BenchError> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let exchange = async {
        let mut stream = tokio::net::TcpStream::connect(addr).await?;
        stream
            .write_all(format!("GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n").as_bytes())
            .await?;
        let mut text = String::new();
        stream.read_to_string(&mut text).await?;
        Ok::<_, std::io::Error>(text.split_once("\r\n\r\n").map(|(_, b)| b.to_owned()))
    };
    tokio::time::timeout(Duration::from_secs(5), exchange)
        .await
        .map_err(|_| BenchError::from(format!("GET {path} on {addr}: no answer in 5 s")))??
        .ok_or_else(|| BenchError::from(format!("GET {path} on {addr}: no body")))
}

/// Whether Alertmanager holds the agent's firing alert.
async fn firing(alertmanager: SocketAddr) -> bool {
    get(alertmanager, "/api/v2/alerts").await.is_ok_and(|body| {
        body.contains("\"alertname\":\"MeshKitProbeFailing\"")
            && body.contains("\"state\":\"active\"")
    })
}

fn start_node(meshkitd: &Path, config: &Path) -> Result<Daemon, BenchError> {
    // The port may take a moment to be free again after a kill.
    let mut last = None;
    for _ in 0..40 {
        match daemon::spawn(meshkitd, config) {
            Ok(d) => return Ok(d),
            Err(e) => last = Some(e),
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    Err(format!("meshkitd did not start again: {last:?}").into())
}

async fn run(args: &Args) -> Result<(), BenchError> {
    let meshkitd = meshkitd_path(args.meshkitd.clone())?;
    let agent_bin = args
        .agent
        .clone()
        .unwrap_or_else(|| meshkitd.with_file_name("meshkit-probe"));
    let dir = TempDir::try_new("probe-detection-bench")?;
    let bundle = meshkit_node::certs::write_dev_bundle(dir.path(), 1)
        .map_err(|e| BenchError::from(e.to_string()))?;
    let files = &bundle.nodes[0];
    let config = write_config_with(
        dir.path(),
        1,
        &[],
        &files.cert,
        &files.key,
        &bundle.ca,
        "[access.identities]\nmeshctl-observer = [\"mesh.observe\"]\n",
    );
    let mut node = start_node(&meshkitd, &config)?;
    // Pin the node's ports, so a restart comes back where the agent probes.
    let text = std::fs::read_to_string(&config)?
        .replacen(
            "listen = \"127.0.0.1:0\"",
            &format!("listen = \"{}\"", node.gossip),
            1,
        )
        .replacen(
            "control = \"127.0.0.1:0\"",
            &format!("control = \"{}\"", node.control),
            1,
        );
    std::fs::write(&config, text)?;

    let am_addr = free_addr()?;
    std::fs::write(
        dir.path().join("alertmanager.yml"),
        "route:\n  receiver: sink\n  group_wait: 1s\nreceivers:\n  - name: sink\n",
    )?;
    let am_log = std::fs::File::create(dir.path().join("alertmanager.log"))?;
    let _alertmanager = Killed(
        Command::new("prometheus-alertmanager")
            .arg(format!(
                "--config.file={}",
                dir.path().join("alertmanager.yml").display()
            ))
            .arg(format!(
                "--storage.path={}",
                dir.path().join("am").display()
            ))
            .arg(format!("--web.listen-address={am_addr}"))
            .arg("--cluster.listen-address=")
            .stdin(Stdio::null())
            .stdout(am_log.try_clone()?)
            .stderr(am_log)
            .spawn()
            .map_err(|e| {
                BenchError::from(format!(
                    "prometheus-alertmanager: {e} (apt-get install prometheus-alertmanager)"
                ))
            })?,
    );

    let listen = free_addr()?;
    let interval = Duration::from_millis(args.interval_ms);
    std::fs::write(
        dir.path().join("probes.toml"),
        format!(
            "[agent]\nname = \"bench\"\nlisten = \"{listen}\"\n\n\
             [credentials]\nca = \"ca.pem\"\ncert = \"meshctl-observer.pem\"\nkey = \"meshctl-observer.key\"\n\n\
             [defaults]\ninterval = \"{ms}ms\"\ntimeout = \"{ms}ms\"\nfailure_threshold = {FAILURES}\n\
             success_threshold = 2\n\n\
             [[group]]\nname = \"core\"\ncluster = \"bench\"\ntargets = [\"{}\"]\nprobes = [\"api\"]\n\
             [group.api]\nendpoints = [\"peers\"]\n\n\
             [history]\npath = \"history.sqlite\"\n\n\
             [alerting]\nalertmanager = [\"http://{am_addr}\"]\nresend = \"1s\"\n",
            node.control,
            ms = args.interval_ms
        ),
    )?;
    let agent_log = std::fs::File::create(dir.path().join("agent.log"))?;
    let _agent = Killed(
        Command::new(&agent_bin)
            .arg("--config")
            .arg(dir.path().join("probes.toml"))
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(agent_log.try_clone()?)
            .stderr(agent_log)
            .spawn()
            .map_err(|e| BenchError::from(format!("{}: {e}", agent_bin.display())))?,
    );
    // Settled: Alertmanager answers, the agent's probe passes, no alert.
    let settle = Instant::now();
    loop {
        let metrics = get(listen, "/metrics").await.unwrap_or_default();
        let passing = metrics
            .lines()
            .any(|l| l.starts_with("probe_success{") && l.ends_with(" 1"));
        if passing && get(am_addr, "/api/v2/alerts").await.is_ok() && !firing(am_addr).await {
            break;
        }
        if settle.elapsed() > Duration::from_secs(60) {
            return Err("the agent and Alertmanager did not settle within 60 s".into());
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    let window = interval * u32::try_from(FAILURES)? + interval + Duration::from_secs(1);
    let limit = window * 4;
    let mut delays = Vec::new();
    let mut resolves = Vec::new();
    for fault in 1..=args.faults {
        node.kill();
        let injected = Instant::now();
        while !firing(am_addr).await {
            if injected.elapsed() > limit {
                return Err(format!("fault {fault}: no alert within {limit:?}").into());
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        delays.push(injected.elapsed().as_secs_f64());
        node = start_node(&meshkitd, &config)?;
        let restarted = Instant::now();
        while firing(am_addr).await {
            if restarted.elapsed() > limit * 2 {
                return Err(format!("fault {fault}: the alert did not resolve").into());
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        resolves.push(restarted.elapsed().as_secs_f64());
        eprint!("\rfault {fault}/{}", args.faults);
    }
    eprintln!();
    let delays = sorted(delays);
    let resolves = sorted(resolves);
    let within = delays
        .iter()
        .filter(|d| **d <= window.as_secs_f64())
        .count();
    println!(
        "{} faults (node killed), interval {} ms, window {:.1} s, load {}",
        args.faults,
        args.interval_ms,
        window.as_secs_f64(),
        load_average()
    );
    println!("| figure | p50 | p99 | max | within the window |");
    println!("|---|---:|---:|---:|---:|");
    println!(
        "| fault -> alert at Alertmanager | {:.2} s | {:.2} s | {:.2} s | {within}/{} |",
        quantile(&delays, 0.5),
        quantile(&delays, 0.99),
        delays.last().copied().unwrap_or(f64::NAN),
        delays.len()
    );
    println!(
        "| restart -> alert gone | {:.2} s | {:.2} s | {:.2} s | |",
        quantile(&resolves, 0.5),
        quantile(&resolves, 0.99),
        resolves.last().copied().unwrap_or(f64::NAN)
    );
    Ok(())
}
