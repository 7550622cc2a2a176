//! `meshkitd`: runs one MeshKit node from a `node.toml`.
//!
//! ```text
//! meshkitd --config node.toml          run the node until Ctrl-C / SIGTERM
//! meshkitd check-config node.toml      validate the file, its TLS files and the paths it writes
//! meshkitd --config node.toml --id-from-hostname[=OFFSET]
//!                                      one file for every pod of a StatefulSet: `{id}` is the
//!                                      pod's ordinal + OFFSET (default 1), `{hostname}` its name
//! ```
//!
//! Exit status: 0 after a signal-driven shutdown, 1 when the node cannot start (or its driver
//! stopped on its own), 2 on bad arguments, 70 when the node's driver panicked (a bug; logged
//! as one error line): a supervisor (systemd `Restart=on-failure`, Kubernetes) restarts it.

use std::path::PathBuf;
use std::process::ExitCode;

use std::io::IsTerminal as _;

use clap::{Parser, Subcommand, ValueEnum};
use meshkit_node::config::{NodeConfig, NodeConfigError, Placeholders};
use meshkit_node::node::DriverExit;

/// Runs one MeshKit node.
#[derive(Debug, Parser)]
#[command(name = "meshkitd", version, about)]
struct Cli {
    /// The node's configuration file.
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// How log lines are written to stderr: readable text (coloured only on a terminal), or one
    /// JSON object per line for a log collector. `RUST_LOG` sets the levels (default info).
    #[arg(long, value_enum, default_value_t = LogFormat::Text, global = true)]
    log_format: LogFormat,
    /// Fill the file's `{id}` and `{hostname}` placeholders from this host's name (a
    /// StatefulSet pod's, such as `meshkit-2`): `{id}` is its ordinal plus OFFSET (default 1,
    /// so pod 0 is node 1). The name comes from `$HOSTNAME`, else the kernel's.
    #[arg(
        long,
        value_name = "OFFSET",
        num_args = 0..=1,
        default_missing_value = "1",
        global = true
    )]
    id_from_hostname: Option<u64>,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Validates a configuration file, its TLS files and token key, and whether the data
    /// directory and audit log can be written; exits non-zero naming the bad key.
    CheckConfig {
        /// The file to check.
        file: PathBuf,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let logs = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr);
    match cli.log_format {
        // Escape codes only where a terminal renders them, not in a file or a collector.
        LogFormat::Text => logs.with_ansi(std::io::stderr().is_terminal()).init(),
        LogFormat::Json => logs.json().init(),
    }
    let placeholders = match cli.id_from_hostname.map(placeholders).transpose() {
        Ok(p) => p.unwrap_or_default(),
        Err(error) => {
            eprintln!("meshkitd: {error}");
            return ExitCode::from(2);
        }
    };
    match (cli.command, cli.config) {
        (Some(Command::CheckConfig { file }), _) => check(&file, &placeholders),
        (None, Some(file)) => run(&file, &placeholders),
        (None, None) => {
            eprintln!("meshkitd: give --config FILE to run a node, or check-config FILE");
            ExitCode::from(2)
        }
    }
}

/// The placeholders of this host (`--id-from-hostname OFFSET`).
fn placeholders(offset: u64) -> Result<Placeholders, NodeConfigError> {
    // Kubernetes sets HOSTNAME to the pod's name; elsewhere the kernel's is the same thing.
    let hostname = std::env::var("HOSTNAME")
        .ok()
        .filter(|h| !h.is_empty())
        .or_else(|| std::fs::read_to_string("/proc/sys/kernel/hostname").ok())
        .unwrap_or_default();
    Placeholders::from_hostname(hostname.trim(), offset)
}

fn check(file: &std::path::Path, placeholders: &Placeholders) -> ExitCode {
    let checked = NodeConfig::load_with(file, placeholders)
        .and_then(|c| c.load_tls().map(|_| c))
        .and_then(|c| c.load_stand_in().map(|_| c))
        .and_then(|c| Ok(c.access().token_verifier().map(|_| c)?))
        .and_then(|c| c.check_paths().map(|()| c));
    match checked {
        Ok(config) => {
            println!(
                "{}: ok (node-{}, listen {}, {} seeds)",
                file.display(),
                config.id().get(),
                config.listen(),
                config.seeds().len()
            );
            ExitCode::SUCCESS
        }
        Err(error) => {
            eprintln!("meshkitd: {}: {error}", file.display());
            ExitCode::FAILURE
        }
    }
}

fn run(file: &std::path::Path, placeholders: &Placeholders) -> ExitCode {
    let config = match NodeConfig::load_with(file, placeholders) {
        Ok(config) => config,
        Err(error) => {
            eprintln!("meshkitd: {}: {error}", file.display());
            return ExitCode::FAILURE;
        }
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("meshkitd: cannot start the runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    runtime.block_on(async {
        let node = match meshkit_node::node::start(&config).await {
            Ok(node) => node,
            Err(error) => {
                eprintln!("meshkitd: {error}");
                return ExitCode::FAILURE;
            }
        };
        // One line on stdout with the bound addresses (ports may have been chosen by the OS).
        let control = node
            .control_addr()
            .map_or_else(|| "-".to_owned(), |a| format!("https://{a}"));
        println!(
            "node-{} gossip {} control {control}",
            node.id().get(),
            node.gossip_addr()
        );
        // A no-op unless the tests built meshkit-node with its `fault-injection` feature.
        meshkit_node::node::arm_test_faults(node.handle());
        tokio::select! {
            () = meshkit_node::node::shutdown_signal() => {}
            exit = node.exited() => {
                // The driver logged the panic; a node without its driver only pretends to be
                // one, so the process ends and its supervisor restarts it.
                if exit == DriverExit::ChaosKilled {
                    tracing::error!(
                        status = KILL_EXIT_STATUS,
                        "exiting with status 75 because a chaos kill experiment ended this node; \
                         its supervisor restarts it (systemd Restart=on-failure, Kubernetes)"
                    );
                    return ExitCode::from(KILL_EXIT_STATUS);
                }
                if let DriverExit::Panicked { .. } = exit {
                    tracing::error!(
                        status = EXIT_DRIVER_PANICKED,
                        "exiting with status 70 because the node's driver panicked (a bug: \
                         please report the panic message above); run meshkitd under a \
                         supervisor that restarts it (systemd Restart=on-failure, Kubernetes): \
                         a restarted node rejoins the mesh and a voter recovers from its Raft file"
                    );
                    return ExitCode::from(EXIT_DRIVER_PANICKED);
                }
                tracing::error!("the node's driver stopped on its own: exiting");
                return ExitCode::FAILURE;
            }
        }
        // Long enough for a departure to reach every member by gossip (a few rounds), short
        // enough for an orchestrator's grace period; a second signal stops at once.
        let linger = (config.membership().gossip_interval() * LINGER_GOSSIP_ROUNDS)
            .clamp(MIN_LINGER, MAX_LINGER);
        tracing::info!(?linger, "leaving the mesh (a second signal stops at once)");
        tokio::select! {
            () = node.shutdown_gracefully(linger) => tracing::info!("stopped"),
            () = meshkit_node::node::shutdown_signal() => tracing::warn!("stopped without finishing the leave"),
        }
        ExitCode::SUCCESS
    })
}

/// Exit status when a chaos `kill` experiment ended the node (sysexits' `EX_TEMPFAIL`).
const KILL_EXIT_STATUS: u8 = meshkit_node::runtime::chaos_host::KILL_EXIT_STATUS;
/// Exit status when the node's driver panicked (sysexits' `EX_SOFTWARE`: an internal error).
const EXIT_DRIVER_PANICKED: u8 = 70;
/// Gossip rounds a leaving node keeps running for after its leave.
const LINGER_GOSSIP_ROUNDS: u32 = 10;
/// Bounds of that linger.
const MIN_LINGER: std::time::Duration = std::time::Duration::from_millis(200);
const MAX_LINGER: std::time::Duration = std::time::Duration::from_secs(5);
