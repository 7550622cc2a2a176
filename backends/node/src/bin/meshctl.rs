//! `meshctl`: operator commands for MeshKit.
//!
//! ```text
//! meshctl certs init --out DIR --nodes N        a development CA, N node certificates, client
//!                                               certificates (meshctl-admin, -operator,
//!                                               -observer) and a token signing key
//! meshctl tokens keygen --out DIR               a token signing key pair
//! meshctl tokens issue --key FILE --subject S --scope mesh.operate --ttl 1h
//!                                               a signed bearer token, on stdout
//! meshctl peers list --addr HOST:PORT [--json] [--token-file FILE]
//!                                               one node's view of the mesh
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
    /// Signed bearer tokens for the control API.
    Tokens {
        #[command(subcommand)]
        command: TokensCommand,
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
enum TokensCommand {
    /// Writes token-signing.key (private, mode 0600) and token-signing.pub (for every node's
    /// `[access] token_key`).
    Keygen {
        /// The directory to write into (created if missing).
        #[arg(long)]
        out: PathBuf,
    },
    /// Prints a token signed with KEY for SUBJECT holding the given scopes.
    Issue {
        /// The private signing key (token-signing.key).
        #[arg(long)]
        key: PathBuf,
        /// Who the token speaks for (A-Z a-z 0-9 . _ @ : -).
        #[arg(long)]
        subject: String,
        /// A scope: mesh.observe, mesh.operate or mesh.admin (repeat for several).
        #[arg(long = "scope", required = true)]
        scopes: Vec<String>,
        /// How long it is valid, such as 30m, 1h or 720h (at most 90 days).
        #[arg(long, default_value = "1h")]
        ttl: String,
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
        /// A file holding a bearer token (from `meshctl tokens issue`) to authenticate with.
        #[arg(long)]
        token_file: Option<PathBuf>,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Certs {
            command: CertsCommand::Init { out, nodes },
        } => certs_init(&out, nodes),
        Command::Tokens {
            command: TokensCommand::Keygen { out },
        } => tokens_keygen(&out),
        Command::Tokens {
            command:
                TokensCommand::Issue {
                    key,
                    subject,
                    scopes,
                    ttl,
                },
        } => tokens_issue(&key, &subject, &scopes, &ttl),
        Command::Peers {
            command:
                PeersCommand::List {
                    addr,
                    json,
                    token_file,
                },
        } => peers_list(&addr, json, token_file.as_deref()),
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
    let bundle = meshkit_node::certs::write_dev_bundle(out, nodes).map_err(|e| e.to_string())?;
    println!("{}", bundle.ca.display());
    for f in &bundle.nodes {
        println!("{} {}", f.cert.display(), f.key.display());
    }
    for f in &bundle.clients {
        println!("{} {}", f.cert.display(), f.key.display());
    }
    let keys = meshkit_node::tokens::write_signing_key(out).map_err(|e| e.to_string())?;
    println!("{} {}", keys.private.display(), keys.public.display());
    // What a node.toml needs to give these identities their scopes (docs/hosting.md, Scopes).
    eprintln!(
        "\nfor each node.toml:\n\n[access]\ntoken_key = {:?}",
        keys.public.display().to_string()
    );
    eprintln!("\n[access.identities]");
    for (name, scope) in meshkit_node::certs::CLIENT_IDENTITIES {
        eprintln!("{name} = [\"{scope}\"]");
    }
    Ok(())
}

fn tokens_keygen(out: &std::path::Path) -> Result<(), String> {
    std::fs::create_dir_all(out).map_err(|e| format!("{}: {e}", out.display()))?;
    let keys = meshkit_node::tokens::write_signing_key(out).map_err(|e| e.to_string())?;
    println!("{} {}", keys.private.display(), keys.public.display());
    Ok(())
}

fn tokens_issue(
    key: &std::path::Path,
    subject: &str,
    scopes: &[String],
    ttl: &str,
) -> Result<(), String> {
    let key =
        meshkit_node::tokens::TokenSigningKey::from_pem_file(key).map_err(|e| e.to_string())?;
    let scopes = scopes
        .iter()
        .map(|s| s.parse())
        .collect::<Result<meshkit_node::scope::Scopes, _>>()
        .map_err(|e| format!("--scope: {e}"))?;
    let ttl = meshkit::config::parse_duration(ttl).map_err(|e| format!("--ttl: {e}"))?;
    let token = key
        .issue(subject, &scopes, std::time::SystemTime::now(), ttl)
        .map_err(|e| e.to_string())?;
    println!("{token}");
    Ok(())
}

/// Reads a token file: one token, surrounding whitespace ignored.
fn read_token(path: &std::path::Path) -> Result<String, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let token = text.trim();
    let valid = |c: char| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.');
    if token.is_empty() || !token.chars().all(valid) {
        return Err(format!(
            "{}: not a token (base64url parts joined by dots)",
            path.display()
        ));
    }
    Ok(token.to_owned())
}

fn peers_list(addr: &str, json: bool, token_file: Option<&std::path::Path>) -> Result<(), String> {
    let token = token_file.map(read_token).transpose()?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    let response = runtime
        .block_on(meshkit_node::http::get_with_bearer(
            addr,
            "/meshkit/peers",
            token.as_deref(),
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
