//! What anonymous gRPC `Health/Watch` streams cost a real `meshkitd` in CPU, measured on
//! loopback.
//!
//! ```text
//! cargo build --release -p meshkit-cli -p meshkit-benches --bins --examples
//! target/release/examples/health_watch_cpu [--watchers 1024] [--seconds 30] [--json]
//! ```
//!
//! One `meshkitd` (a one-voter cluster, certificates from `write_dev_certs`) on 127.0.0.1, then
//! two windows of `--seconds` each, nothing polled during either:
//!
//! 1. **Quiet**: the node alone. Its CPU time (user + system, `/proc/<pid>/stat`) over the
//!    window.
//! 2. **Watched**: `--watchers` `grpc.health.v1.Health/Watch` streams held open by anonymous
//!    clients (TLS without a certificate, HTTP/2), 8 per connection (the server's share per
//!    connection) and 16 connections per source address (its anonymous share per address:
//!    127.0.0.10, 127.0.0.11, ...), each stream's messages read as they come. Streams beyond
//!    the server's cap (1,024) are refused `RESOURCE_EXHAUSTED` and counted. The node's CPU
//!    time over the window, and its readiness reads (`mesh_control_health_watch_reads_total`).
//!
//! The figure is the difference: what the watchers cost, in percent of one core. This is work
//! done, so it stays meaningful on a loaded machine. Every wait is bounded; the daemon is killed
//! when the program ends, on an error, or on Ctrl-C / SIGTERM.

use meshkit_testkit::cluster as support;

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use bytes::Bytes;
use clap::Parser;
use http_body_util::BodyExt as _;
use hyper_util::rt::{TokioExecutor, TokioIo};
use support::raw_client::{STEP, tls_config, tls_connect};
use support::{BenchError, Cluster, Layout};

/// Streams per connection: the server's `MAX_WATCHERS_PER_CONNECTION`.
const PER_CONNECTION: u64 = 8;
/// Connections per source address: the server's anonymous share per address.
const PER_ADDRESS: u64 = 16;
/// First source address of the watchers (127.0.0.10, then .11, ...).
const FIRST_ADDRESS: u8 = 10;
/// Time the node gets after start, and after the watchers are open, before a window.
const SETTLE: Duration = Duration::from_secs(2);

/// CPU cost of gRPC Health/Watch streams on one meshkitd.
#[derive(Debug, Parser)]
#[command(name = "health_watch_cpu")]
struct Args {
    /// Watch streams to open (the server holds at most 1,024).
    #[arg(long, default_value_t = 1024, value_parser = clap::value_parser!(u64).range(1..=4096))]
    watchers: u64,
    /// Length of each measured window, in seconds.
    #[arg(long, default_value_t = 30, value_parser = clap::value_parser!(u64).range(1..=600))]
    seconds: u64,
    /// The meshkitd binary (default: the one beside this example's directory).
    #[arg(long)]
    meshkitd: Option<std::path::PathBuf>,
    /// Print one JSON document instead of the table.
    #[arg(long)]
    json: bool,
    /// Check the arguments, print them and run nothing (`scripts/check-docs.sh` checks the
    /// documented commands this way).
    #[arg(long)]
    dry_run: bool,
}

/// What was measured.
#[derive(Debug, serde::Serialize)]
struct Report {
    seconds: u64,
    watchers_asked: u64,
    watchers_open: u64,
    watchers_refused: u64,
    messages_received: u64,
    quiet_cpu_percent: f64,
    watched_cpu_percent: f64,
    watchers_cpu_percent: f64,
    readiness_reads_in_window: f64,
    load_average: String,
}

fn main() -> ExitCode {
    let args = Args::parse();
    if args.dry_run {
        println!("would run health_watch_cpu with {args:?}; nothing ran (--dry-run)");
        return ExitCode::SUCCESS;
    }
    support::run_main("health_watch_cpu", run(args))
}

/// The node's CPU use over `seconds`, in percent of one core.
async fn cpu_percent(pid: u32, seconds: u64, ticks: f64) -> Result<f64, BenchError> {
    let before = support::cpu_time(pid, ticks)?;
    let started = std::time::Instant::now();
    tokio::time::sleep(Duration::from_secs(seconds)).await;
    let used = support::cpu_time(pid, ticks)? - before;
    Ok(100.0 * used.as_secs_f64() / started.elapsed().as_secs_f64())
}

async fn run(args: Args) -> Result<(), BenchError> {
    let bin = support::meshkitd_path(args.meshkitd.clone())?;
    let layout = Layout {
        nodes: 1,
        voters: 1,
        scopes: Vec::new(),
        campaigners: 1..=1,
        ttl_s: 3,
        membership: String::new(),
        durable_voters: false,
    };
    let mut cluster = Cluster::new(bin, layout, "health-watch-cpu")?;
    cluster.start_all()?;
    let pid = cluster.pid(1).ok_or("node-1 did not start")?;
    let server: SocketAddr = cluster
        .control(1)
        .ok_or("node-1 has no control address")?
        .parse()?;
    let anonymous = tls_config(cluster.dir(), false, b"h2")?;
    let ticks = support::clock_ticks_per_s();
    tokio::time::sleep(SETTLE).await;

    let quiet = cpu_percent(pid, args.seconds, ticks).await?;

    let messages = Arc::new(AtomicU64::new(0));
    let (mut open, mut refused) = (0u64, 0u64);
    let mut held = Vec::new();
    let connections = args.watchers.div_ceil(PER_CONNECTION);
    for c in 0..connections {
        let address = u8::try_from(u64::from(FIRST_ADDRESS) + c / PER_ADDRESS)
            .map_err(|_| "too many source addresses")?;
        let local = IpAddr::V4(Ipv4Addr::new(127, 0, 0, address));
        let tls = tls_connect(server, local, &anonymous).await?;
        let (mut sender, connection) =
            hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tls)).await?;
        held.push(tokio::spawn(connection).abort_handle());
        let streams = PER_CONNECTION.min(args.watchers - c * PER_CONNECTION);
        for _ in 0..streams {
            // One gRPC message: uncompressed, empty (`HealthCheckRequest { service: "" }`).
            let request =
                http::Request::post(format!("https://{server}/grpc.health.v1.Health/Watch"))
                    .header("content-type", "application/grpc")
                    .header("te", "trailers")
                    .body(http_body_util::Full::new(Bytes::from_static(&[
                        0, 0, 0, 0, 0,
                    ])))?;
            let response = tokio::time::timeout(STEP, sender.send_request(request)).await??;
            if response.headers().contains_key("grpc-status") {
                // A trailers-only answer: refused (RESOURCE_EXHAUSTED past the cap).
                refused += 1;
                continue;
            }
            open += 1;
            let messages = messages.clone();
            let mut body = response.into_body();
            held.push(
                tokio::spawn(async move {
                    while let Some(Ok(frame)) = body.frame().await {
                        if frame.is_data() {
                            messages.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                })
                .abort_handle(),
            );
        }
    }
    tokio::time::sleep(SETTLE).await;
    let before = cluster.metrics(1).await?;
    let watched = cpu_percent(pid, args.seconds, ticks).await?;
    let after = cluster.metrics(1).await?;
    let reads = "mesh_control_health_watch_reads_total";
    let report = Report {
        seconds: args.seconds,
        watchers_asked: args.watchers,
        watchers_open: open,
        watchers_refused: refused,
        messages_received: messages.load(Ordering::Relaxed),
        quiet_cpu_percent: quiet,
        watched_cpu_percent: watched,
        watchers_cpu_percent: watched - quiet,
        readiness_reads_in_window: after.value(reads) - before.value(reads),
        load_average: support::load_average(),
    };
    for task in held {
        task.abort();
    }
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print_table(&report);
    }
    Ok(())
}

fn print_table(r: &Report) {
    println!(
        "gRPC Health/Watch streams against one meshkitd (127.0.0.1), {} s windows",
        r.seconds
    );
    println!();
    println!("| measure | value |");
    println!("|---|---|");
    println!(
        "| watch streams open (refused) of {} asked | {} ({}) |",
        r.watchers_asked, r.watchers_open, r.watchers_refused
    );
    println!(
        "| node CPU, quiet | {:.2} % of a core |",
        r.quiet_cpu_percent
    );
    println!(
        "| node CPU, watched | {:.2} % of a core |",
        r.watched_cpu_percent
    );
    println!(
        "| the watchers' cost | {:.2} % of a core |",
        r.watchers_cpu_percent
    );
    println!(
        "| readiness reads in the watched window | {} |",
        r.readiness_reads_in_window
    );
    println!(
        "| messages the watchers received | {} |",
        r.messages_received
    );
    println!("| load average at the end | {} |", r.load_average);
}
