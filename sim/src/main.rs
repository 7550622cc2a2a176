//! The `meshkit-sim` command: runs scenario files through the simulator.
//!
//! ```text
//! meshkit-sim run SCENARIO [--nodes N] [--seed S | --seeds A..B] [--duration D] [--profile P] [--json]
//! meshkit-sim sweep SCENARIO... --seeds A..B [--jobs J] [--jsonl FILE] [--nodes N] [--duration D] [--profile P]
//! ```
//!
//! `run` exit codes: 0 when every seed met every expectation without an invariant violation, 1
//! when some seed failed (its replay command is printed), 2 for invalid arguments or scenarios.
//! `sweep` runs the seeds on `J` threads (default: every core), tallies them as they finish
//! ([`meshkit_sim::sweep`]) and prints one table; it exits 1 only when the safety claim broke
//! (an invariant violation or an accepted stale write in some seed): seeds that miss a latency
//! expectation are counted and listed with their replay commands, since a sweep measures those
//! distributions rather than bounding each seed.

#![deny(missing_docs)]

use std::io::{IsTerminal as _, Write as _};
use std::ops::Range;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc;
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use meshkit::config::Profile;
use meshkit_sim::sweep::SweepTally;
use meshkit_sim::{RunOptions, RunReport, Scenario, report};

/// Deterministic simulator of MeshKit meshes.
#[derive(Debug, Parser)]
#[command(name = "meshkit-sim", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run a scenario file for one or more seeds and report.
    Run(RunArgs),
    /// Run scenario files over a range of seeds on every core and print one table.
    Sweep(SweepArgs),
}

#[derive(Debug, Args)]
struct SweepArgs {
    /// The scenario files (TOML).
    #[arg(required = true)]
    scenarios: Vec<PathBuf>,
    /// The seeds, end excluded: `1..10001` runs seeds 1 to 10,000.
    #[arg(long, value_parser = parse_seeds)]
    seeds: Range<u64>,
    /// Worker threads (default: the machine's available parallelism).
    #[arg(long, value_parser = clap::value_parser!(u16).range(1..))]
    jobs: Option<u16>,
    /// Also write every seed's report, one JSON object a line, to this file (in the order the
    /// runs finish).
    #[arg(long)]
    jsonl: Option<PathBuf>,
    /// Override the scenarios' node count.
    #[arg(long)]
    nodes: Option<u32>,
    /// Override the virtual run length, e.g. `600s` or `10m`.
    #[arg(long, value_parser = parse_duration)]
    duration: Option<Duration>,
    /// Override the protocol profile.
    #[arg(long, value_enum)]
    profile: Option<ProfileArg>,
    /// Turn the opt-in mass probes on in every node (`Config::with_mass_probes`; the
    /// memberlist profile ignores it).
    #[arg(long)]
    mass_probes: bool,
    /// Turn the opt-in minority rules on in every node (`Config::with_minority_rules`; the
    /// memberlist profile ignores them).
    #[arg(long)]
    minority_rules: bool,
    /// Check the scenario files and the arguments, print what would run (one line per
    /// scenario) and run nothing (`scripts/check-docs.sh` checks long commands this way).
    #[arg(long)]
    dry_run: bool,
}

#[derive(Debug, Args)]
struct RunArgs {
    /// The scenario file (TOML), e.g. scenarios/crash-one.toml. Without one, the embedded tour
    /// (a copy of scenarios/tour.toml) runs, compared with the memberlist profile.
    scenario: Option<PathBuf>,
    /// Also run each seed with this profile and print the two runs side by side (the
    /// scenario's own profile decides the exit code).
    #[arg(long, value_enum)]
    compare: Option<ProfileArg>,
    /// Override the scenario's node count.
    #[arg(long)]
    nodes: Option<u32>,
    /// The seed (default 1).
    #[arg(long, conflicts_with = "seeds")]
    seed: Option<u64>,
    /// A range of seeds, end excluded: `1..11` runs seeds 1 to 10 (`1..=10` also works).
    #[arg(long, value_parser = parse_seeds)]
    seeds: Option<Range<u64>>,
    /// Override the virtual run length, e.g. `600s` or `10m`.
    #[arg(long, value_parser = parse_duration)]
    duration: Option<Duration>,
    /// Override the protocol profile.
    #[arg(long, value_enum)]
    profile: Option<ProfileArg>,
    /// Turn the opt-in mass probes on in every node (`Config::with_mass_probes`; the
    /// memberlist profile ignores it).
    #[arg(long)]
    mass_probes: bool,
    /// Turn the opt-in minority rules on in every node (`Config::with_minority_rules`; the
    /// memberlist profile ignores them).
    #[arg(long)]
    minority_rules: bool,
    /// Print one JSON object per seed (one per line) instead of tables.
    #[arg(long)]
    json: bool,
    /// Debugging: print to stderr every event seen by or about this node index.
    #[arg(long)]
    trace_node: Option<u32>,
    /// Explain every false-positive Dead verdict: one line each on stderr, and in the JSON
    /// report as `false_positive_log` (who declared whom, when, since which heal, on whose
    /// suspicion, whether the node had refuted already).
    #[arg(long)]
    explain_false_positives: bool,
    /// Check the scenario file and the arguments, print what would run and run nothing
    /// (`scripts/check-docs.sh` checks long commands this way).
    #[arg(long)]
    dry_run: bool,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
enum ProfileArg {
    Lan,
    Wan,
    Memberlist,
}

impl From<ProfileArg> for Profile {
    fn from(p: ProfileArg) -> Self {
        match p {
            ProfileArg::Lan => Self::Lan,
            ProfileArg::Wan => Self::Wan,
            ProfileArg::Memberlist => Self::Memberlist,
        }
    }
}

fn parse_seeds(s: &str) -> Result<Range<u64>, String> {
    let (a, b, inclusive) = if let Some((a, b)) = s.split_once("..=") {
        (a, b, true)
    } else if let Some((a, b)) = s.split_once("..") {
        (a, b, false)
    } else {
        return Err(format!(
            "`{s}` is not a seed range; write A..B (end excluded) or A..=B"
        ));
    };
    let num = |t: &str| {
        t.trim()
            .parse::<u64>()
            .map_err(|_| format!("`{t}` is not a seed"))
    };
    let (a, b) = (num(a)?, num(b)?);
    let end = if inclusive {
        b.checked_add(1).ok_or("seed range too large")?
    } else {
        b
    };
    if a >= end {
        return Err(format!("seed range `{s}` is empty"));
    }
    Ok(a..end)
}

fn parse_duration(s: &str) -> Result<Duration, String> {
    let d = meshkit_sim::scenario::parse_duration(s)?;
    if d.is_zero() {
        return Err("the duration must be positive".to_owned());
    }
    Ok(d)
}

/// Wall-clock seconds since `start`, for the report only; the engine never reads a clock.
#[expect(
    clippy::disallowed_methods,
    reason = "the CLI measures wall time for the report"
)]
fn wall_now() -> std::time::Instant {
    std::time::Instant::now()
}

/// The scenario `meshkit-sim run` runs when given none: a 1,000-node mesh with leases, crashes,
/// a lease-holder kill and a partition that heals, compared with the memberlist profile.
/// `sim/default-scenario.toml` is a link to `scenarios/tour.toml` inside this crate's directory,
/// so that the published crate carries the file (as a copy).
const DEFAULT_SCENARIO: &str = include_str!("../default-scenario.toml");

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Run(args) => run(&args),
        Command::Sweep(args) => sweep(&args),
    }
}

/// How often a sweep reports its progress on stderr.
const SWEEP_PROGRESS_EVERY: Duration = Duration::from_secs(10);

fn sweep(args: &SweepArgs) -> ExitCode {
    let mut scenarios = Vec::new();
    for path in &args.scenarios {
        match Scenario::from_file(path) {
            Ok(s) => scenarios.push(s),
            Err(e) => {
                eprintln!("error: {e}");
                return ExitCode::from(2);
            }
        }
    }
    let mut jsonl = match &args.jsonl {
        // A dry run writes nothing.
        Some(_) if args.dry_run => None,
        Some(path) => match std::fs::File::create(path) {
            Ok(f) => Some(std::io::BufWriter::new(f)),
            Err(e) => {
                eprintln!("error: {}: {e}", path.display());
                return ExitCode::from(2);
            }
        },
        None => None,
    };
    let jobs = args.jobs.map_or_else(
        || std::thread::available_parallelism().map_or(1, std::num::NonZero::get),
        usize::from,
    );
    if args.dry_run {
        return dry_run(
            &scenarios,
            &Overrides {
                nodes: args.nodes,
                duration: args.duration,
                profile: args.profile,
                mass_probes: args.mass_probes,
                minority_rules: args.minority_rules,
                compare: None,
            },
            &args.seeds,
            &format!(
                ", {jobs} jobs{}",
                args.jsonl
                    .as_ref()
                    .map(|p| format!(", JSON lines to {}", p.display()))
                    .unwrap_or_default()
            ),
        );
    }
    let mut tallies = Vec::new();
    for scenario in &scenarios {
        let started = wall_now();
        let outcome = sweep_one(scenario, args, jobs, &mut jsonl);
        let wall_s = started.elapsed().as_secs_f64();
        match outcome {
            Ok(tally) => {
                eprintln!("{}: {} seeds in {wall_s:.1} s", tally.scenario, tally.seeds);
                tallies.push((tally, wall_s));
            }
            Err(e) => {
                eprintln!("error: {e}");
                return ExitCode::from(2);
            }
        }
    }
    if let Some(w) = &mut jsonl
        && let Err(e) = w.flush()
    {
        eprintln!("error: writing the JSON lines: {e}");
        return ExitCode::from(2);
    }
    print!("{}", meshkit_sim::sweep::render(&tallies));
    let _ = std::io::stdout().flush();
    if tallies.iter().all(|(t, _)| t.safe()) {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    }
}

/// One scenario's seeds on `jobs` threads; the calling thread tallies the reports.
fn sweep_one(
    scenario: &Scenario,
    args: &SweepArgs,
    jobs: usize,
    jsonl: &mut Option<std::io::BufWriter<std::fs::File>>,
) -> Result<SweepTally, meshkit_sim::SimError> {
    let next = AtomicU64::new(args.seeds.start);
    let end = args.seeds.end;
    let (tx, rx) = mpsc::channel();
    std::thread::scope(|s| {
        for _ in 0..jobs {
            let tx = tx.clone();
            let next = &next;
            s.spawn(move || {
                loop {
                    let seed = next.fetch_add(1, Ordering::Relaxed);
                    if seed >= end {
                        return;
                    }
                    let mut options = RunOptions::seed(seed);
                    options.nodes = args.nodes;
                    options.duration = args.duration;
                    options.profile = args.profile.map(Profile::from);
                    options.mass_probes = args.mass_probes;
                    options.minority_rules = args.minority_rules;
                    let started = wall_now();
                    let report = meshkit_sim::run(scenario, options).map(|mut r| {
                        r.wall_s = started.elapsed().as_secs_f64();
                        r
                    });
                    // The tallying thread stopped (an error): stop too.
                    if tx.send(report).is_err() {
                        return;
                    }
                }
            });
        }
        drop(tx);
        let mut tally = SweepTally::new(scenario.name());
        let total = end - args.seeds.start;
        let mut reported = wall_now();
        for report in rx {
            let report = report?;
            if let Some(w) = jsonl {
                let _ = writeln!(w, "{}", report.to_json());
            }
            tally.add(&report);
            if reported.elapsed() >= SWEEP_PROGRESS_EVERY {
                reported = wall_now();
                eprintln!(
                    "{}: {}/{total} seeds, {} violating, {} missing an expectation",
                    tally.scenario,
                    tally.seeds,
                    tally.seeds_violating,
                    tally.seeds_missing_expectations
                );
            }
        }
        Ok(tally)
    })
}

fn run(args: &RunArgs) -> ExitCode {
    let loaded = match &args.scenario {
        Some(path) => Scenario::from_file(path),
        None => Scenario::parse(DEFAULT_SCENARIO, "scenarios/tour.toml"),
    };
    let compare = args
        .compare
        .map(Profile::from)
        .or_else(|| args.scenario.is_none().then_some(Profile::Memberlist));
    let scenario = match loaded {
        Ok(s) => s,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(2);
        }
    };
    let seeds = args.seeds.clone().unwrap_or_else(|| {
        let s = args.seed.unwrap_or(1);
        s..s.saturating_add(1)
    });
    if args.dry_run {
        return dry_run(
            std::slice::from_ref(&scenario),
            &Overrides {
                nodes: args.nodes,
                duration: args.duration,
                profile: args.profile,
                mass_probes: args.mass_probes,
                minority_rules: args.minority_rules,
                compare,
            },
            &seeds,
            "",
        );
    }
    let show_progress = !args.json && std::io::stderr().is_terminal();
    let mut reports: Vec<RunReport> = Vec::new();
    let stdout = std::io::stdout();
    if compare.is_some() && !args.json {
        println!("{}\n", scenario.description());
    }
    for seed in seeds {
        let mut options = RunOptions::seed(seed);
        options.nodes = args.nodes;
        options.duration = args.duration;
        options.profile = args.profile.map(Profile::from);
        options.mass_probes = args.mass_probes;
        options.minority_rules = args.minority_rules;
        options.trace_node = args.trace_node;
        options.explain_false_positives = args.explain_false_positives;
        let report = match run_seed(&scenario, options, show_progress) {
            Ok(r) => r,
            Err(e) => {
                eprintln!("error: {e}");
                return ExitCode::from(2);
            }
        };
        let other = match compare {
            Some(profile) => {
                options.profile = Some(profile);
                match run_seed(&scenario, options, show_progress) {
                    Ok(r) => Some(r),
                    Err(e) => {
                        eprintln!("error: {e}");
                        return ExitCode::from(2);
                    }
                }
            }
            None => None,
        };
        let mut out = stdout.lock();
        let _ = match (&other, args.json) {
            (_, true) => {
                let mut both = std::iter::once(&report).chain(other.as_ref());
                both.try_for_each(|r| writeln!(out, "{}", r.to_json()))
            }
            (Some(other), false) => writeln!(
                out,
                "{}",
                report::render_comparison(&report, other, scenario.expect())
            ),
            (None, false) => writeln!(out, "{}", report.render(scenario.expect())),
        };
        let _ = out.flush();
        reports.push(report);
    }
    let failed: Vec<&RunReport> = reports.iter().filter(|r| !r.passed()).collect();
    if !args.json && reports.len() > 1 {
        print!("{}", report::render_summary(&reports));
    }
    let _ = std::io::stdout().flush();
    if failed.is_empty() {
        return ExitCode::SUCCESS;
    }
    for r in failed {
        eprintln!("seed {} failed; replay: {}", r.seed, r.replay);
    }
    ExitCode::from(1)
}

/// The command line's overrides of a scenario, for a dry run's plan.
struct Overrides {
    nodes: Option<u32>,
    duration: Option<Duration>,
    profile: Option<ProfileArg>,
    mass_probes: bool,
    minority_rules: bool,
    compare: Option<Profile>,
}

/// `--dry-run`: checks what a run would check before it starts (the scenarios parsed, the node
/// count fits each scenario's selectors) and prints one line per scenario: nodes, virtual
/// length, profile and seeds. Exits 2 as a run would on a scenario the options do not fit.
fn dry_run(scenarios: &[Scenario], o: &Overrides, seeds: &Range<u64>, extra: &str) -> ExitCode {
    for scenario in scenarios {
        let nodes = o.nodes.unwrap_or(scenario.nodes());
        if let Err(e) = scenario.check_node_count(nodes) {
            eprintln!("error: {e}");
            return ExitCode::from(2);
        }
        let profile = o.profile.map_or(scenario.profile(), Profile::from);
        let duration = o.duration.unwrap_or(scenario.duration());
        let runs = (seeds.end - seeds.start) * if o.compare.is_some() { 2 } else { 1 };
        let compared = o
            .compare
            .map(|p| format!(" compared with {p}"))
            .unwrap_or_default();
        let opt_in = match (o.mass_probes, o.minority_rules) {
            (true, true) => " with mass probes and the minority rules",
            (true, false) => " with mass probes",
            (false, true) => " with the minority rules",
            (false, false) => "",
        };
        println!(
            "would run {} ({}): {nodes} nodes, {} virtual s, profile {profile}{opt_in}{compared}, \
             seeds {}..{} ({runs} runs{extra}); nothing ran (--dry-run)",
            scenario.file(),
            scenario.name(),
            duration.as_secs_f64(),
            seeds.start,
            seeds.end,
        );
    }
    ExitCode::SUCCESS
}

/// One seed, with a progress bar on a terminal; the report carries its wall time.
fn run_seed(
    scenario: &Scenario,
    options: RunOptions,
    show_progress: bool,
) -> Result<RunReport, meshkit_sim::SimError> {
    let virtual_ms = options.duration.unwrap_or(scenario.duration()).as_millis();
    let profile = options.profile.unwrap_or(scenario.profile());
    let bar = progress_bar(
        show_progress,
        &format!("{} profile {profile}", options.seed),
        u64::try_from(virtual_ms).unwrap_or(u64::MAX),
    );
    let started = wall_now();
    let result = meshkit_sim::run_with_progress(scenario, options, &mut |now, end| {
        if let Some(bar) = &bar {
            bar.set_length(end.as_nanos() / 1_000_000);
            bar.set_position(now.as_nanos() / 1_000_000);
        }
    });
    let wall_s = started.elapsed().as_secs_f64();
    if let Some(bar) = bar {
        bar.finish_and_clear();
    }
    let mut report = result?;
    report.wall_s = (wall_s * 1000.0).round() / 1000.0;
    for line in &report.trace {
        eprintln!("{line}");
    }
    for v in &report.false_positive_log {
        eprintln!("{}", report::explain_line(v));
    }
    Ok(report)
}

fn progress_bar(show: bool, seed: &str, virtual_ms: u64) -> Option<ProgressBar> {
    if !show {
        return None;
    }
    let bar = ProgressBar::with_draw_target(Some(virtual_ms), ProgressDrawTarget::stderr());
    let style =
        ProgressStyle::with_template("seed {msg} [{bar:40}] {pos}/{len} virtual ms ({eta})")
            .unwrap_or_else(|_| ProgressStyle::default_bar());
    bar.set_style(style);
    bar.set_message(seed.to_owned());
    Some(bar)
}
