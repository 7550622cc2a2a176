//! Latency of `GET /meshkit/peers` over HTTP/3 and over HTTP/2 (TLS on TCP) on loopback, side
//! by side.
//!
//! ```text
//! cargo run --release -p meshkit-benches --example control_latency [-- REQUESTS]
//! ```
//!
//! One node runs in this process (its control API on 127.0.0.1, one port number for both), and
//! one client per protocol keeps its connection open, so the figures are request latencies on a
//! warm connection, not handshakes. Requests alternate between the two protocols so both see
//! the same machine load. The node's certificate is the client's (a node certificate may
//! observe). REQUESTS (default 2,000, at most 1,000,000) is per protocol, after 200 warm-up
//! requests each.

use std::process::ExitCode;
use std::time::{Duration, Instant};

use meshkit_node::client::{Client, ClientConfig, Protocols};
use meshkit_node::config::NodeConfig;

const DEFAULT_REQUESTS: u64 = 2_000;
const MAX_REQUESTS: u64 = 1_000_000;
const WARMUP_REQUESTS: usize = 200;

/// Control API request latency through a real node.
#[derive(Debug, clap::Parser)]
struct Args {
    /// Requests to time (after a warm-up).
    #[arg(default_value_t = DEFAULT_REQUESTS, value_parser = clap::value_parser!(u64).range(1..=MAX_REQUESTS))]
    requests: u64,
    /// Check the arguments, print them and run nothing (`scripts/check-docs.sh` checks the
    /// documented commands this way).
    #[arg(long)]
    dry_run: bool,
}

fn main() -> ExitCode {
    let args = <Args as clap::Parser>::parse();
    if args.dry_run {
        println!("would run control_latency with {args:?}; nothing ran (--dry-run)");
        return ExitCode::SUCCESS;
    }
    let requests = usize::try_from(args.requests).expect("at most MAX_REQUESTS");
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("control_latency: {error}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(requests)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("control_latency: {error}");
            ExitCode::FAILURE
        }
    }
}

async fn run(requests: usize) -> Result<(), Box<dyn std::error::Error>> {
    let dir = std::env::temp_dir().join(format!("meshkit-control-latency-{}", std::process::id()));
    let result = measure(&dir, requests).await;
    let _ = std::fs::remove_dir_all(&dir);
    result
}

async fn measure(dir: &std::path::Path, requests: usize) -> Result<(), Box<dyn std::error::Error>> {
    let (ca, files) = meshkit_node::certs::write_dev_certs(dir, 1)?;
    let node_files = &files[0];
    let config_path = dir.join("node-1.toml");
    std::fs::write(
        &config_path,
        format!(
            "id = 1\nlisten = \"127.0.0.1:0\"\ncontrol = \"127.0.0.1:0\"\n\n[tls]\n\
             cert = {:?}\nkey = {:?}\nca = {:?}\n",
            node_files.cert.display().to_string(),
            node_files.key.display().to_string(),
            ca.display().to_string(),
        ),
    )?;
    let node = meshkit_node::node::start(&NodeConfig::load(&config_path)?).await?;
    let server = node
        .control_addr()
        .ok_or("the node has no control endpoint")?
        .to_string();
    let client = |protocols| -> Result<Client, Box<dyn std::error::Error>> {
        let config = ClientConfig::new(&ca)?
            .with_identity(&node_files.cert, &node_files.key)?
            .with_protocols(protocols);
        Ok(Client::new(&config)?)
    };
    let clients = [
        ("h3", client(Protocols::H3Only)?),
        ("h2", client(Protocols::TcpOnly)?),
    ];
    let mut samples: [Vec<Duration>; 2] =
        [Vec::with_capacity(requests), Vec::with_capacity(requests)];
    for round in 0..WARMUP_REQUESTS + requests {
        for (i, (name, client)) in clients.iter().enumerate() {
            let started = Instant::now();
            let response = client.get(&server, "/meshkit/peers").await?;
            let elapsed = started.elapsed();
            if response.status != 200 {
                return Err(format!("{name}: HTTP {}: {}", response.status, response.body).into());
            }
            if round >= WARMUP_REQUESTS {
                samples[i].push(elapsed);
            }
        }
    }
    node.stop().await;
    println!("GET /meshkit/peers on loopback, warm connection, {requests} requests per protocol\n");
    println!(
        "{:<9} {:>10} {:>10} {:>10} {:>10}",
        "PROTOCOL", "P50_US", "P99_US", "MEAN_US", "MAX_US"
    );
    for ((name, _), mut times) in clients.iter().zip(samples) {
        times.sort_unstable();
        let quantile = |q: f64| {
            // Nearest rank: the smallest sample with at least q of the samples at or below it.
            let rank = ((q * times.len() as f64).ceil() as usize).clamp(1, times.len());
            times[rank - 1].as_secs_f64() * 1e6
        };
        let mean = times.iter().map(Duration::as_secs_f64).sum::<f64>() / times.len() as f64;
        println!(
            "{:<9} {:>10.0} {:>10.0} {:>10.0} {:>10.0}",
            name,
            quantile(0.50),
            quantile(0.99),
            mean * 1e6,
            quantile(1.0)
        );
    }
    Ok(())
}
