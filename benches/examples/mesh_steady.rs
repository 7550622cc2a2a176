//! Steady-state cost of a mesh of real `meshkitd` processes on one machine: CPU,
//! memory, bytes and datagrams per node per second, and gossip + Raft messages per CPU-second
//! through the QUIC transport.
//!
//! ```text
//! cargo build --release -p meshkit-cli -p meshkit-benches --bins --examples
//! target/release/examples/mesh_steady [--nodes 20] [--seconds 60] [--scopes 2] [--json]
//! ```
//!
//! It starts `--nodes` daemons on 127.0.0.1 (QUIC with mutual TLS; nodes 1-3 are the Raft
//! voters; every node contends for `--scopes` lease scopes with a 3 s TTL, `global-control`
//! first), waits until every node counts all of them alive and voter 1's lease table has a
//! holder for every scope, lets the mesh settle, then measures a window of `--seconds`:
//!
//! * CPU: user + system time of each process (`/proc/<pid>/stat`) over the window. This is
//!   work done, so it stays meaningful on a loaded machine, where latency would not.
//! * RSS at the end of the window (`/proc/<pid>/status`).
//! * Datagrams and bytes each node's driver handed to its QUIC transport and took from it
//!   (`mesh_transport_channel_*_total` of `/metrics`, read just before and just after the window), both
//!   channels (gossip and lease/Raft). Bytes are datagram payloads: QUIC, UDP and IP headers,
//!   acknowledgements and keep-alives are not in them. The loopback interface's counters give
//!   the wire total when the program runs in a network namespace of its own, e.g.
//!   `unshare -n sh -c 'ip link set lo up && exec target/release/examples/mesh_steady'`.
//!
//! Messages per CPU-second = datagrams received by all nodes per second (each message counted
//! once, where it is handled) / CPU-seconds all nodes used per second: how many gossip and
//! Raft messages one fully busy core would carry end to end (encode, QUIC encryption, UDP,
//! decryption, decode, the state machines), with the mesh's own timers included in the cost.
//! `--gossip-interval-ms` / `--probe-interval-ms` and more `--scopes` make a heavier mesh.
//!
//! Nothing is polled during the window. Every wait is bounded; every process is killed when
//! the program ends, on an error, or on Ctrl-C / SIGTERM.

use meshkit_testkit::cluster as support;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use clap::Parser;
use support::{BenchError, Cluster, Layout, Metrics};

/// How long the mesh gets to converge after the last daemon started.
const CONVERGE_LIMIT: Duration = Duration::from_secs(120);
const POLL: Duration = Duration::from_millis(500);
const VOTERS: u64 = 3;
const TTL_S: u64 = 3;

/// Steady-state cost of N real meshkitd processes on loopback.
#[derive(Debug, Parser)]
#[command(name = "mesh_steady")]
struct Args {
    /// Daemons to run (nodes 1-3 are the voters).
    #[arg(long, default_value_t = 20, value_parser = clap::value_parser!(u64).range(3..=200))]
    nodes: u64,
    /// Length of the measured window, in seconds.
    #[arg(long, default_value_t = 60, value_parser = clap::value_parser!(u64).range(1..=3600))]
    seconds: u64,
    /// Lease scopes every node contends for (`global-control`, then `bench/scope-2`, ...).
    #[arg(long, default_value_t = 2, value_parser = clap::value_parser!(u64).range(0..=256))]
    scopes: u64,
    /// Seconds between convergence and the window.
    #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u64).range(0..=600))]
    settle: u64,
    /// `[membership] gossip_interval` override, in ms (default: the `lan` profile's 200 ms).
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..=60_000))]
    gossip_interval_ms: Option<u64>,
    /// `[membership] probe_interval` override, in ms (default: the `lan` profile's 1 s); the
    /// probe timeout becomes half of it.
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..=60_000))]
    probe_interval_ms: Option<u64>,
    /// The meshkitd binary (default: the one beside this example's directory).
    #[arg(long)]
    meshkitd: Option<PathBuf>,
    /// Print one JSON document instead of the tables.
    #[arg(long)]
    json: bool,
    /// Check the arguments, print them and run nothing (`scripts/check-docs.sh` checks the
    /// documented commands this way).
    #[arg(long)]
    dry_run: bool,
}

fn main() -> ExitCode {
    let args = Args::parse();
    if args.dry_run {
        println!("would run mesh_steady with {args:?}; nothing ran (--dry-run)");
        return ExitCode::SUCCESS;
    }
    support::run_main("mesh_steady", run(args))
}

/// One node's figures over the window.
#[derive(Clone, Debug, serde::Serialize)]
struct NodeFigures {
    id: u64,
    voter: bool,
    cpu_ms_per_s: f64,
    rss_mib: f64,
    bytes_out_per_s: f64,
    bytes_in_per_s: f64,
    datagrams_out_per_s: f64,
    datagrams_in_per_s: f64,
    gossip_in_per_s: f64,
    lease_in_per_s: f64,
    alive_at_end: f64,
}

/// A row of the table: its name, how to read it from a node's figures, decimals shown.
type Figure = (&'static str, fn(&NodeFigures) -> f64, usize);

fn traffic(m: &Metrics, family: &str, channel: &str, direction: &str) -> f64 {
    m.value(&format!(
        "mesh_transport_channel_{family}_total{{channel=\"{channel}\",direction=\"{direction}\"}}"
    ))
}

/// Counter deltas per second between two scrapes of one node.
fn rates(a: &(Instant, Metrics), b: &(Instant, Metrics)) -> [f64; 6] {
    let secs = b.0.duration_since(a.0).as_secs_f64();
    let delta = |family: &str, channels: &[&str], direction: &str| -> f64 {
        channels
            .iter()
            .map(|c| traffic(&b.1, family, c, direction) - traffic(&a.1, family, c, direction))
            .sum::<f64>()
            / secs
    };
    let both = ["membership", "lease"];
    [
        delta("bytes", &both, "sent"),
        delta("bytes", &both, "received"),
        delta("datagrams", &both, "sent"),
        delta("datagrams", &both, "received"),
        delta("datagrams", &["membership"], "received"),
        delta("datagrams", &["lease"], "received"),
    ]
}

async fn scrape_all(cluster: &Cluster) -> Result<BTreeMap<u64, (Instant, Metrics)>, BenchError> {
    let mut out = BTreeMap::new();
    for id in cluster.running() {
        let m = cluster.metrics(id).await?;
        out.insert(id, (Instant::now(), m));
    }
    Ok(out)
}

async fn run(args: Args) -> Result<(), BenchError> {
    let bin = support::meshkitd_path(args.meshkitd.clone())?;
    let mut membership = String::new();
    if let Some(ms) = args.gossip_interval_ms {
        membership.push_str(&format!("gossip_interval = \"{ms}ms\"\n"));
    }
    if let Some(ms) = args.probe_interval_ms {
        // The probe timeout must stay below the interval: half of it, the lan profile's ratio.
        membership.push_str(&format!(
            "probe_interval = \"{ms}ms\"\nprobe_timeout = \"{}ms\"\n",
            (ms / 2).max(1)
        ));
    }
    let scopes: Vec<String> = (1..=args.scopes)
        .map(|i| {
            if i == 1 {
                "global-control".to_owned()
            } else {
                format!("bench/scope-{i}")
            }
        })
        .collect();
    let layout = Layout {
        nodes: args.nodes,
        voters: VOTERS,
        scopes: scopes.clone(),
        campaigners: 1..=args.nodes,
        ttl_s: TTL_S,
        membership,
        durable_voters: false,
    };
    let mut cluster = Cluster::new(bin, layout, "mesh-steady")?;
    let started = Instant::now();
    cluster.start_all()?;
    let all_started = started.elapsed();
    let converged = support::poll_until(CONVERGE_LIMIT, POLL, || async {
        if !cluster.all_see_alive(args.nodes).await {
            return None;
        }
        let table = cluster.leaders(1).await.ok()?.table;
        scopes
            .iter()
            .all(|s| table.iter().any(|l| &l.scope == s))
            .then_some(())
    })
    .await;
    if converged.is_none() {
        return Err(format!(
            "the mesh did not converge within {CONVERGE_LIMIT:?} (every node sees {} alive, \
             every scope held)",
            args.nodes
        )
        .into());
    }
    let convergence = started.elapsed();
    tokio::time::sleep(Duration::from_secs(args.settle)).await;

    let ticks = support::clock_ticks_per_s();
    let pids: BTreeMap<u64, u32> = cluster
        .running()
        .into_iter()
        .filter_map(|id| Some((id, cluster.pid(id)?)))
        .collect();
    let before = scrape_all(&cluster).await?;
    let load_before = support::load_average();
    let lo_before = support::loopback_counters();
    let t0 = Instant::now();
    let cpu_before: BTreeMap<u64, Duration> = pids
        .iter()
        .map(|(id, pid)| Ok((*id, support::cpu_time(*pid, ticks)?)))
        .collect::<Result<_, BenchError>>()?;
    tokio::time::sleep(Duration::from_secs(args.seconds)).await;
    let cpu_after: BTreeMap<u64, Duration> = pids
        .iter()
        .map(|(id, pid)| Ok((*id, support::cpu_time(*pid, ticks)?)))
        .collect::<Result<_, BenchError>>()?;
    let window = t0.elapsed().as_secs_f64();
    let lo_after = support::loopback_counters();
    let load_after = support::load_average();
    let after = scrape_all(&cluster).await?;

    let mut nodes = Vec::new();
    for (id, pid) in &pids {
        let cpu = cpu_after[id].saturating_sub(cpu_before[id]).as_secs_f64() / window;
        let [bytes_out, bytes_in, dg_out, dg_in, gossip_in, lease_in] =
            rates(&before[id], &after[id]);
        nodes.push(NodeFigures {
            id: *id,
            voter: *id <= VOTERS,
            cpu_ms_per_s: cpu * 1e3,
            rss_mib: support::rss_bytes(*pid)? as f64 / (1024.0 * 1024.0),
            bytes_out_per_s: bytes_out,
            bytes_in_per_s: bytes_in,
            datagrams_out_per_s: dg_out,
            datagrams_in_per_s: dg_in,
            gossip_in_per_s: gossip_in,
            lease_in_per_s: lease_in,
            alive_at_end: after[id].1.value("mesh_gossip_members{state=\"alive\"}"),
        });
    }
    drop(cluster);

    let total = |f: fn(&NodeFigures) -> f64| nodes.iter().map(f).sum::<f64>();
    let cpu_s_per_s = total(|n| n.cpu_ms_per_s) / 1e3;
    let received_per_s = total(|n| n.datagrams_in_per_s);
    let sent_per_s = total(|n| n.datagrams_out_per_s);
    let messages_per_cpu_s = received_per_s / cpu_s_per_s;
    let lo = lo_before.zip(lo_after).map(|((p0, b0), (p1, b1))| {
        (
            (p1.saturating_sub(p0)) as f64 / window,
            (b1.saturating_sub(b0)) as f64 / window,
        )
    });
    let min_alive = nodes
        .iter()
        .map(|n| n.alive_at_end)
        .fold(f64::INFINITY, f64::min);
    let membership = match (args.gossip_interval_ms, args.probe_interval_ms) {
        (None, None) => "lan profile (probe 1 s, gossip 200 ms)".to_owned(),
        (g, p) => format!(
            "lan profile with probe {} and gossip {}",
            p.map_or("1000 ms".to_owned(), |ms| format!(
                "{ms} ms (timeout {} ms)",
                ms / 2
            )),
            g.map_or("200 ms".to_owned(), |ms| format!("{ms} ms")),
        ),
    };

    if args.json {
        let doc = serde_json::json!({
            "nodes": args.nodes,
            "voters": VOTERS,
            "scopes": scopes,
            "ttl_s": TTL_S,
            "membership": membership,
            "window_s": window,
            "started_s": all_started.as_secs_f64(),
            "converged_s": convergence.as_secs_f64(),
            "load_before": load_before,
            "load_after": load_after,
            "min_alive_at_end": min_alive,
            "cpu_s_per_s": cpu_s_per_s,
            "datagrams_received_per_s": received_per_s,
            "datagrams_sent_per_s": sent_per_s,
            "messages_per_cpu_s": messages_per_cpu_s,
            "loopback_packets_per_s": lo.map(|l| l.0),
            "loopback_bytes_per_s": lo.map(|l| l.1),
            "per_node": nodes,
        });
        println!("{}", serde_json::to_string_pretty(&doc)?);
        return Ok(());
    }

    println!(
        "{} meshkitd on 127.0.0.1 (QUIC, mutual TLS), voters 1-{VOTERS}, every node contending \
         for {} scope(s) with a {TTL_S} s TTL, {membership}",
        args.nodes, args.scopes
    );
    println!(
        "started in {:.1} s, converged {:.1} s after the first start, settled {} s, window \
         {window:.1} s; members alive at the end: min {min_alive} of {}",
        all_started.as_secs_f64(),
        convergence.as_secs_f64(),
        args.settle,
        args.nodes
    );
    println!("load average before: {load_before}; after: {load_after}\n");
    println!(
        "{}",
        support::row(&[
            "nodes".into(),
            "per node".into(),
            "min".into(),
            "median".into(),
            "max".into(),
            "sum".into()
        ])
    );
    println!("|---|---|---:|---:|---:|---:|");
    let figures: [Figure; 9] = [
        ("CPU, ms per s", |n| n.cpu_ms_per_s, 2),
        ("RSS, MiB", |n| n.rss_mib, 1),
        ("bytes out per s", |n| n.bytes_out_per_s, 0),
        ("bytes in per s", |n| n.bytes_in_per_s, 0),
        ("datagrams out per s", |n| n.datagrams_out_per_s, 1),
        ("datagrams in per s", |n| n.datagrams_in_per_s, 1),
        ("  of which gossip", |n| n.gossip_in_per_s, 1),
        ("  of which lease/Raft", |n| n.lease_in_per_s, 1),
        (
            "bytes per datagram out",
            |n| n.bytes_out_per_s / n.datagrams_out_per_s,
            0,
        ),
    ];
    let voters: Vec<&NodeFigures> = nodes.iter().filter(|n| n.voter).collect();
    let others: Vec<&NodeFigures> = nodes.iter().filter(|n| !n.voter).collect();
    let everyone: Vec<&NodeFigures> = nodes.iter().collect();
    for (group, members) in [
        (format!("voters ({})", voters.len()), &voters),
        (format!("non-voters ({})", others.len()), &others),
        (format!("all ({})", everyone.len()), &everyone),
    ] {
        if members.is_empty() {
            continue;
        }
        for (name, f, digits) in &figures {
            let xs = support::sorted(members.iter().map(|n| f(n)));
            let sum: f64 = xs.iter().sum();
            let cell = |x: f64| format!("{x:.digits$}");
            println!(
                "{}",
                support::row(&[
                    group.clone(),
                    (*name).to_owned(),
                    cell(xs[0]),
                    cell(support::quantile(&xs, 0.5)),
                    cell(xs[xs.len() - 1]),
                    if name.starts_with("bytes per") {
                        "".to_owned()
                    } else {
                        cell(sum)
                    },
                ])
            );
        }
    }
    println!();
    println!(
        "all nodes: {cpu_s_per_s:.3} CPU-s per s; {received_per_s:.0} datagrams received per s \
         ({sent_per_s:.0} sent)"
    );
    println!(
        "messages per CPU-second: {messages_per_cpu_s:.0} (gossip + lease/Raft datagrams \
         received by all nodes per s / CPU-s all nodes used per s)"
    );
    if let Some((packets, bytes)) = lo {
        println!(
            "loopback interface: {packets:.0} packets/s, {bytes:.0} bytes/s (all of the \
             machine's loopback traffic unless run in a network namespace of its own)"
        );
    }
    Ok(())
}
