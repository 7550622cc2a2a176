//! `meshctl`: operator commands for MeshKit.
//!
//! ```text
//! meshctl certs init --out DIR --nodes N        a development CA and N node certificates
//! meshctl peers list --addr HOST:PORT [--json]  one node's view of the mesh
//! ```

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};
use meshkit_node::control::PeersResponse;

/// How long `peers list` waits for the control endpoint.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);
/// Most node certificates one `certs init` makes.
const MAX_NODES: u64 = 1000;

/// Operator commands for MeshKit.
#[derive(Debug, Parser)]
#[command(name = "meshctl", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Development certificates.
    Certs {
        #[command(subcommand)]
        command: CertsCommand,
    },
    /// The mesh as one node sees it.
    Peers {
        #[command(subcommand)]
        command: PeersCommand,
    },
}

#[derive(Debug, Subcommand)]
enum CertsCommand {
    /// Writes ca.pem, and node-I.pem and node-I.key for each node I in 1..=N.
    Init {
        /// The directory to write into (created if missing).
        #[arg(long)]
        out: PathBuf,
        /// How many node certificates.
        #[arg(long, value_parser = clap::value_parser!(u64).range(1..=MAX_NODES))]
        nodes: u64,
    },
}

#[derive(Debug, Subcommand)]
enum PeersCommand {
    /// Lists the members a node knows.
    List {
        /// The node's control endpoint, HOST:PORT.
        #[arg(long)]
        addr: String,
        /// Print the JSON answer instead of a table.
        #[arg(long)]
        json: bool,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Certs {
            command: CertsCommand::Init { out, nodes },
        } => certs_init(&out, nodes),
        Command::Peers {
            command: PeersCommand::List { addr, json },
        } => peers_list(&addr, json),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("meshctl: {message}");
            ExitCode::FAILURE
        }
    }
}

fn certs_init(out: &std::path::Path, nodes: u64) -> Result<(), String> {
    let (ca, files) =
        meshkit_node::certs::write_dev_certs(out, nodes).map_err(|e| e.to_string())?;
    println!("{}", ca.display());
    for f in files {
        println!("{} {}", f.cert.display(), f.key.display());
    }
    Ok(())
}

fn peers_list(addr: &str, json: bool) -> Result<(), String> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    let response = runtime
        .block_on(meshkit_node::http::get(
            addr,
            "/meshkit/peers",
            REQUEST_TIMEOUT,
        ))
        .map_err(|e| e.to_string())?;
    if response.status != 200 {
        return Err(format!(
            "{addr}: HTTP {}: {}",
            response.status,
            response.body.trim()
        ));
    }
    if json {
        println!("{}", response.body);
        return Ok(());
    }
    let peers: PeersResponse = serde_json::from_str(&response.body)
        .map_err(|e| format!("{addr}: unexpected answer: {e}"))?;
    print!("{}", render_table(&peers));
    Ok(())
}

fn render_table(peers: &PeersResponse) -> String {
    let mut out = format!(
        "{:<10} {:<8} {:>12} {:>8}  {:<22} {}\n",
        "ID", "STATE", "INCARNATION", "RTT_MS", "ADDR", "METADATA"
    );
    for p in &peers.peers {
        let id = if p.id == peers.local {
            format!("{}*", p.id)
        } else {
            p.id.to_string()
        };
        let rtt = p
            .rtt_ms
            .map_or_else(|| "-".to_owned(), |r| format!("{r:.2}"));
        out.push_str(&format!(
            "{:<10} {:<8} {:>12} {:>8}  {:<22} {}\n",
            id,
            p.state,
            p.incarnation,
            rtt,
            p.addr.as_deref().unwrap_or("-"),
            p.metadata.join(",")
        ));
    }
    out
}
