//! `meshkit-probe`: the synthetic probe agent (`docs/probes.md`).
//!
//! * `meshkit-probe --config probes.toml`: run until SIGINT or SIGTERM; SIGHUP, a change of
//!   the file and `POST /-/reload` reload it.
//! * `meshkit-probe check-config FILE [--json]`: validate a file; exit 0 if valid, 1 with the
//!   key and the problem if not.
//! * `meshkit-probe report --daily|--weekly --config FILE [--out DIR] [--end RFC3339]
//!   [--json]`: write a report from the history.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};
use meshkit_probe::config::Config;

/// The synthetic probe agent of MeshKit.
#[derive(Debug, Parser)]
#[command(name = "meshkit-probe", version, about)]
struct Cli {
    /// The configuration to run (`probes.toml`).
    #[arg(long, global = false)]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Validate a configuration file; every error names the key.
    CheckConfig {
        /// The file.
        file: PathBuf,
        /// Print the outcome as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Write a daily or weekly report from the history.
    Report(ReportArgs),
}

#[derive(Debug, Args)]
struct ReportArgs {
    /// The last full UTC day.
    #[arg(long, conflicts_with = "weekly", required_unless_present = "weekly")]
    daily: bool,
    /// The last full week (Monday to Monday, UTC).
    #[arg(long)]
    weekly: bool,
    /// The configuration whose history is read.
    #[arg(long)]
    config: PathBuf,
    /// Where the report is written (default: `[reports] dir`, else the current directory).
    #[arg(long)]
    out: Option<PathBuf>,
    /// The period's end, RFC 3339 (default: the last UTC midnight, or Monday for weekly).
    #[arg(long)]
    end: Option<String>,
    /// Print the written files as JSON.
    #[arg(long)]
    json: bool,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Some(Command::CheckConfig { file, json }) => check_config(&file, json),
        Some(Command::Report(args)) => report(&args),
        None => {
            let Some(path) = cli.config else {
                eprintln!("meshkit-probe: give --config probes.toml (or a subcommand; see --help)");
                return ExitCode::from(2);
            };
            run(&path)
        }
    }
}

fn init_logs() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .try_init();
}

fn run(path: &std::path::Path) -> ExitCode {
    init_logs();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("meshkit-probe: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(meshkit_probe::agent::serve(path)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("meshkit-probe: {e}");
            ExitCode::FAILURE
        }
    }
}

fn check_config(file: &std::path::Path, json: bool) -> ExitCode {
    match Config::load(file) {
        Ok(config) => {
            if json {
                let groups: Vec<serde_json::Value> = config
                    .groups
                    .iter()
                    .map(|g| {
                        serde_json::json!({
                            "name": g.name,
                            "cluster": g.cluster,
                            "namespace": g.namespace,
                            "probes": g.probe_count(),
                        })
                    })
                    .collect();
                println!(
                    "{}",
                    serde_json::json!({
                        "ok": true,
                        "file": file.display().to_string(),
                        "agent": config.agent.name,
                        "probes": config.probe_count(),
                        "groups": groups,
                    })
                );
            } else {
                println!(
                    "{}: valid: {} groups, {} probes",
                    file.display(),
                    config.groups.len(),
                    config.probe_count()
                );
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            if json {
                println!(
                    "{}",
                    serde_json::json!({
                        "ok": false,
                        "file": file.display().to_string(),
                        "key": e.key,
                        "problem": e.problem,
                    })
                );
            } else if e.key == file.display().to_string() {
                eprintln!("{e}");
            } else {
                eprintln!("{}: {e}", file.display());
            }
            ExitCode::FAILURE
        }
    }
}

fn report(args: &ReportArgs) -> ExitCode {
    use meshkit_probe::report::{Period, generate, last_period_end};
    let config = match Config::load(&args.config) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("{}: {e}", args.config.display());
            return ExitCode::FAILURE;
        }
    };
    let period = if args.weekly {
        Period::Weekly
    } else {
        Period::Daily
    };
    let end_unix_ms = match &args.end {
        Some(text) => {
            match time::OffsetDateTime::parse(text, &time::format_description::well_known::Rfc3339)
            {
                Ok(t) => i64::try_from(t.unix_timestamp_nanos() / 1_000_000).unwrap_or(i64::MAX),
                Err(e) => {
                    eprintln!(
                        "meshkit-probe report: --end {text:?}: expected an RFC 3339 time such \
                         as 2026-12-07T00:00:00Z: {e}"
                    );
                    return ExitCode::from(2);
                }
            }
        }
        None => last_period_end(period, meshkit_probe::record::now_unix_ms()),
    };
    let out = args
        .out
        .clone()
        .or_else(|| config.reports.dir.clone())
        .unwrap_or_else(|| PathBuf::from("."));
    match generate(&config.history.path, period, end_unix_ms, &out) {
        Ok(files) => {
            if args.json {
                match std::fs::read_to_string(&files.json) {
                    Ok(text) => println!("{text}"),
                    Err(e) => {
                        eprintln!("meshkit-probe report: {}: {e}", files.json.display());
                        return ExitCode::FAILURE;
                    }
                }
            } else {
                println!("{}", files.html.display());
                println!("{}", files.markdown.display());
                println!("{}", files.json.display());
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("meshkit-probe report: {e}");
            ExitCode::FAILURE
        }
    }
}
