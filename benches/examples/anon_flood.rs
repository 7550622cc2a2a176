//! What one anonymous client (no certificate, no token) can do to a `meshkitd`'s control API
//! (docs/security.md), measured against a real process on loopback.
//!
//! ```text
//! cargo build --release -p meshkit-cli -p meshkit-benches --bins --examples
//! target/release/examples/anon_flood [--connections 1100] [--seconds 8] [--json]
//! ```
//!
//! One `meshkitd` (a one-voter cluster, certificates from `write_dev_certs`) on 127.0.0.1, then
//! two phases:
//!
//! 1. **Idle HTTP/2 connections.** From 127.0.0.1, up to `--connections` connections, one after
//!    the other: TLS without a client certificate, the HTTP/2 preface, then nothing; a
//!    connection counts as held when the server answered the preface (its SETTINGS). With all
//!    of them held, `GET /healthz` over HTTP/2 from 127.0.0.2 (another anonymous client, a load
//!    balancer's probe) and `GET /meshkit/peers` with node-1's certificate from 127.0.0.1 (an
//!    operator). Then the connections are closed.
//! 2. **HTTP/3 bodies.** One QUIC connection from an anonymous client, 100 concurrent streams
//!    (the server's per-connection limit) each sending `POST /control/drain` with a body of
//!    1,000 KiB (under the 1 MiB limit) as fast as flow control lets it, then reading the
//!    answer, again and again for `--seconds`. The server's RSS (`VmRSS` of
//!    `/proc/<pid>/status`) is sampled every 100 ms; the figure is the largest sample minus the
//!    one taken just before the flood.
//!
//! Bounded: at most 10,000 connections and 60 s of flood; every wait has a timeout; the daemon
//! is killed when the program ends, on an error, or on Ctrl-C / SIGTERM.

use meshkit_testkit::cluster as support;

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use clap::Parser;
use support::raw_client::{STEP, h2_get, idle_h2, tls_config};
use support::{BenchError, Cluster, Layout};

const ATTACKER: IpAddr = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 1));
const OTHER: IpAddr = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2));
/// Concurrent HTTP/3 requests: the server's limit per connection.
const STREAMS: usize = 100;
/// Each request body: under the server's 1 MiB limit.
const BODY_BYTES: usize = 1000 * 1024;
const CHUNK_BYTES: usize = 16 * 1024;
const RSS_SAMPLE: Duration = Duration::from_millis(100);

/// One anonymous client against one meshkitd: idle HTTP/2 connections, then HTTP/3 bodies.
#[derive(Debug, Parser)]
#[command(name = "anon_flood")]
struct Args {
    /// Idle HTTP/2 connections to try to hold.
    #[arg(long, default_value_t = 1100, value_parser = clap::value_parser!(u64).range(1..=10_000))]
    connections: u64,
    /// Seconds of HTTP/3 flood.
    #[arg(long, default_value_t = 8, value_parser = clap::value_parser!(u64).range(1..=60))]
    seconds: u64,
    /// The meshkitd binary (default: the one beside this example's directory).
    #[arg(long)]
    meshkitd: Option<PathBuf>,
    /// Print one JSON document instead of the table.
    #[arg(long)]
    json: bool,
}

/// What was measured.
#[derive(Debug, serde::Serialize)]
struct Report {
    connections_tried: u64,
    idle_h2_held: u64,
    healthz_other_address: String,
    operator_same_address: String,
    flood_seconds: f64,
    h3_requests_answered: u64,
    h3_answers_401: u64,
    h3_body_bytes_sent: u64,
    rss_before_bytes: u64,
    rss_max_bytes: u64,
    rss_added_bytes: u64,
}

fn main() -> ExitCode {
    let args = Args::parse();
    support::run_main("anon_flood", run(args))
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
    let mut cluster = Cluster::new(bin, layout, "anon-flood")?;
    cluster.start_all()?;
    let pid = cluster.pid(1).ok_or("node-1 did not start")?;
    let server: SocketAddr = cluster
        .control(1)
        .ok_or("node-1 has no control address")?
        .parse()?;
    let dir = cluster.dir().to_owned();
    let anonymous_h2 = tls_config(&dir, false, b"h2")?;
    let operator_h2 = tls_config(&dir, true, b"h2")?;

    // Phase 1: idle HTTP/2 connections from one address.
    let mut held = Vec::new();
    for _ in 0..args.connections {
        if let Some(connection) = idle_h2(server, ATTACKER, &anonymous_h2).await {
            held.push(connection);
        }
    }
    let idle_h2_held = held.len() as u64;
    let healthz = h2_get(server, OTHER, &anonymous_h2, "/healthz").await;
    let operator = h2_get(server, ATTACKER, &operator_h2, "/meshkit/peers").await;
    drop(held);
    tokio::time::sleep(Duration::from_secs(1)).await;

    // Phase 2: HTTP/3 bodies from one anonymous connection.
    let rss_before = support::rss_bytes(pid)?;
    let flood = Flood::default();
    let deadline = Instant::now() + Duration::from_secs(args.seconds);
    let started = Instant::now();
    let sampler = async {
        let mut max = rss_before;
        while Instant::now() < deadline + Duration::from_millis(500) {
            if let Ok(rss) = support::rss_bytes(pid) {
                max = max.max(rss);
            }
            tokio::time::sleep(RSS_SAMPLE).await;
        }
        max
    };
    let (rss_max, flooded) = tokio::join!(sampler, flood.run(server, &dir, deadline));
    flooded?;
    let report = Report {
        connections_tried: args.connections,
        idle_h2_held,
        healthz_other_address: answer(&healthz),
        operator_same_address: answer(&operator),
        flood_seconds: started.elapsed().as_secs_f64(),
        h3_requests_answered: flood.answered.load(Ordering::Relaxed),
        h3_answers_401: flood.unauthorized.load(Ordering::Relaxed),
        h3_body_bytes_sent: flood.sent.load(Ordering::Relaxed),
        rss_before_bytes: rss_before,
        rss_max_bytes: rss_max,
        rss_added_bytes: rss_max.saturating_sub(rss_before),
    };
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print_table(&report);
    }
    Ok(())
}

fn answer(result: &Result<u16, String>) -> String {
    match result {
        Ok(status) => format!("HTTP {status}"),
        Err(error) => format!("refused ({error})"),
    }
}

fn print_table(r: &Report) {
    let mib = |b: u64| b as f64 / (1024.0 * 1024.0);
    println!("one anonymous client against one meshkitd (127.0.0.1)");
    println!();
    println!("| measure | value |");
    println!("|---|---|");
    println!(
        "| idle anonymous HTTP/2 connections held from 127.0.0.1 | {} of {} tried |",
        r.idle_h2_held, r.connections_tried
    );
    println!(
        "| `GET /healthz` (HTTP/2, anonymous, from 127.0.0.2) while held | {} |",
        r.healthz_other_address
    );
    println!(
        "| `GET /meshkit/peers` (HTTP/2, node-1 certificate, from 127.0.0.1) while held | {} |",
        r.operator_same_address
    );
    println!(
        "| HTTP/3 flood: requests answered (401) in {:.1} s | {} ({}) |",
        r.flood_seconds, r.h3_requests_answered, r.h3_answers_401
    );
    println!(
        "| HTTP/3 flood: body bytes sent | {:.1} MiB |",
        mib(r.h3_body_bytes_sent)
    );
    println!(
        "| server RSS before / max during flood | {:.1} / {:.1} MiB |",
        mib(r.rss_before_bytes),
        mib(r.rss_max_bytes)
    );
    println!(
        "| **RSS added by the flood** | **{:.2} MiB** |",
        mib(r.rss_added_bytes)
    );
}

/// The HTTP/3 flood's counters.
#[derive(Debug, Default)]
struct Flood {
    answered: AtomicU64,
    unauthorized: AtomicU64,
    sent: AtomicU64,
}

type H3Sender = h3::client::SendRequest<h3_quinn::OpenStreams, Bytes>;

impl Flood {
    async fn run(
        &self,
        server: SocketAddr,
        dir: &Path,
        deadline: Instant,
    ) -> Result<(), BenchError> {
        let tls = tls_config(dir, false, b"h3")?;
        let mut endpoint = quinn::Endpoint::client("127.0.0.1:0".parse()?)?;
        let quic = quinn::crypto::rustls::QuicClientConfig::try_from(tls)?;
        endpoint.set_default_client_config(quinn::ClientConfig::new(Arc::new(quic)));
        let connection = tokio::time::timeout(STEP, endpoint.connect(server, "node-1")?).await??;
        let (mut driver, sender) = h3::client::new(h3_quinn::Connection::new(connection)).await?;
        let driver = tokio::spawn(async move {
            let _ = std::future::poll_fn(|cx| driver.poll_close(cx)).await;
        });
        let workers = (0..STREAMS).map(|_| self.worker(server, sender.clone(), deadline));
        futures_util::future::join_all(workers).await;
        driver.abort();
        endpoint.close(quinn::VarInt::from_u32(0), b"done");
        Ok(())
    }

    /// Requests one after the other until `deadline`, each bounded in time.
    async fn worker(&self, server: SocketAddr, mut sender: H3Sender, deadline: Instant) {
        let chunk = Bytes::from(vec![b'x'; CHUNK_BYTES]);
        while Instant::now() < deadline {
            let left = deadline.saturating_duration_since(Instant::now());
            let request = self.request(server, &mut sender, &chunk);
            if tokio::time::timeout(left.min(Duration::from_secs(15)), request)
                .await
                .is_err()
            {
                break;
            }
        }
    }

    async fn request(&self, server: SocketAddr, sender: &mut H3Sender, chunk: &Bytes) {
        let Ok(request) = http::Request::post(format!("https://{server}/control/drain"))
            .header("content-type", "application/json")
            .body(())
        else {
            return;
        };
        let Ok(stream) = sender.send_request(request).await else {
            // The connection is gone: nothing more to do on it.
            tokio::time::sleep(Duration::from_millis(100)).await;
            return;
        };
        let (mut send, mut recv) = stream.split();
        let sending = async {
            for _ in 0..BODY_BYTES / CHUNK_BYTES {
                if send.send_data(chunk.clone()).await.is_err() {
                    return;
                }
                self.sent.fetch_add(CHUNK_BYTES as u64, Ordering::Relaxed);
            }
            let _ = send.finish().await;
        };
        let receiving = async {
            if let Ok(response) = recv.recv_response().await {
                self.answered.fetch_add(1, Ordering::Relaxed);
                if response.status() == 401 {
                    self.unauthorized.fetch_add(1, Ordering::Relaxed);
                }
            }
        };
        tokio::join!(sending, receiving);
    }
}
