//! `meshkit-benches`: the benchmark program whose tables `docs/benchmarks.md` quotes.
//!
//! It runs fixed scenarios on the simulator (`meshkit_sim::run`) for MeshKit's default (`lan`)
//! profile and for the memberlist-equivalent profile on the same seeds, and prints markdown
//! tables: failure detection and dissemination per mesh size, behaviour under loss, partition
//! healing, and simulator speed. Every figure is measured in virtual time, so it does not depend
//! on the machine; only the wall-clock columns do.
//!
//! ```text
//! cargo run --release -p meshkit-benches -- [--nodes 1000,10000] [--seeds 3] [--loss-hours 24] [--quick] [--dry-run]
//! ```

use std::time::Instant as WallClock;

use clap::Parser;
use meshkit_sim::metrics::percentile;
use meshkit_sim::{RunOptions, RunReport, Scenario};

#[derive(Parser, Debug)]
#[command(about = "Print MeshKit's benchmark tables (simulated; virtual-time figures)")]
struct Args {
    /// Mesh sizes of the detection/dissemination table.
    #[arg(long, value_delimiter = ',', default_value = "1000,10000")]
    nodes: Vec<u32>,
    /// Seeds per configuration (the same seeds for every profile).
    #[arg(long, default_value_t = 2)]
    seeds: u64,
    /// Virtual hours of the 5% loss run (the target is stated for 24).
    #[arg(long, default_value_t = 24.0)]
    loss_hours: f64,
    /// Small sizes and short runs: a smoke test of the program itself.
    #[arg(long)]
    quick: bool,
    /// Which tables to print.
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "detection,loss,heal,quiet"
    )]
    sections: Vec<Section>,
    /// Check the arguments, print what would run and run nothing (`scripts/check-docs.sh`
    /// checks the documented commands this way).
    #[arg(long)]
    dry_run: bool,
}

/// The tables the program can print.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
enum Section {
    Detection,
    Loss,
    Heal,
    Quiet,
}

const PROFILES: [&str; 2] = ["lan", "memberlist"];

fn main() {
    let mut args = Args::parse();
    if args.quick {
        args.nodes = vec![200];
        args.seeds = 1;
        args.loss_hours = 0.05;
    }
    if args.dry_run {
        println!(
            "would print the tables {:?} for {:?} nodes, {} seeds per configuration, {} virtual \
             hours of loss; nothing ran (--dry-run)",
            args.sections, args.nodes, args.seeds, args.loss_hours
        );
        return;
    }
    println!("# MeshKit benchmark tables\n");
    println!(
        "Command: `cargo run --release -p meshkit-benches -- {}`\n",
        std::env::args().skip(1).collect::<Vec<_>>().join(" ")
    );
    type Table = fn(&Args);
    let tables: [(Section, Table); 4] = [
        (Section::Detection, detection_table),
        (Section::Loss, loss_table),
        (Section::Heal, heal_table),
        (Section::Quiet, speed_table),
    ];
    for (section, table) in tables {
        if args.sections.contains(&section) {
            table(&args);
        }
    }
}

/// Runs `text` for `seeds` seeds, returning the reports.
fn run(text: &str, name: &str, seeds: u64) -> Vec<RunReport> {
    let scenario = match Scenario::parse(text, name) {
        Ok(s) => s,
        Err(e) => panic!("built-in scenario {name} does not parse: {e}"),
    };
    (1..=seeds)
        .map(
            |seed| match meshkit_sim::run(&scenario, RunOptions::seed(seed)) {
                Ok(r) => {
                    if !r.invariant_violations.is_empty() {
                        eprintln!(
                            "invariant violated in {name} seed {seed}: {:?}",
                            r.invariant_violations
                        );
                    }
                    r
                }
                Err(e) => panic!("{name} seed {seed}: {e}"),
            },
        )
        .collect()
}

fn fmt(v: Option<f64>, digits: usize) -> String {
    v.map_or_else(|| "-".to_owned(), |x| format!("{x:.digits$}"))
}

fn max_of(reports: &[RunReport], f: impl Fn(&RunReport) -> Option<f64>) -> Option<f64> {
    reports.iter().filter_map(f).reduce(f64::max)
}

fn mean_of(reports: &[RunReport], f: impl Fn(&RunReport) -> f64) -> f64 {
    reports.iter().map(f).sum::<f64>() / reports.len().max(1) as f64
}

/// Crashes one node at a time (independent events), with a light metadata workload for the
/// dissemination figure; a separate steady run gives the traffic figure.
fn detection_table(args: &Args) {
    println!("## Failure detection, dissemination and traffic\n");
    println!(
        "Crash runs: one node crashes every 20 s (each detection is an independent event); detection = crash until >= 99% of live members hold it Dead. Steady runs: no faults, 0.2 metadata writes/s of 64 B; dissemination = write until every live node has it, in gossip rounds (200 ms). Seeds 1..={}.\n",
        args.seeds
    );
    println!(
        "| N | profile | crashes | detection p50 (s) | detection p99 (s) | false positives | dissemination p99 (rounds) | bytes/node/s with 0.2 writes/s | wall s (crash + workload runs) |"
    );
    println!("|---|---|---|---|---|---|---|---|---|");
    for &n in &args.nodes {
        let crashes = if n >= 5000 { 5 } else { 10 };
        for profile in PROFILES {
            let crash = format!(
                "name = \"bench-detect\"\n[topology]\nnodes = {n}\nprofile = \"{profile}\"\n[run]\nduration = \"{}s\"\n[[fault]]\nat = \"20s\"\naction = \"crash\"\nnodes = \"1\"\ncount = {crashes}\nevery = \"20s\"\n",
                20 * crashes + 30
            );
            let steady = format!(
                "name = \"bench-steady\"\n[topology]\nnodes = {n}\nprofile = \"{profile}\"\n[run]\nduration = \"120s\"\n[workload]\nmetadata_updates_per_s = 0.2\n"
            );
            let started = WallClock::now();
            let crash_runs = run(&crash, "bench-detect.toml", args.seeds);
            let steady_runs = run(&steady, "bench-steady.toml", args.seeds);
            let wall = started.elapsed().as_secs_f64();
            let detections: Vec<f64> = crash_runs
                .iter()
                .flat_map(|r| r.detections_s.iter().copied())
                .collect();
            println!(
                "| {n} | {profile} | {} | {} | {} | {} | {} | {:.0} | {wall:.0} |",
                detections.len(),
                fmt(percentile(&detections, 50.0), 2),
                fmt(percentile(&detections, 99.0), 2),
                crash_runs
                    .iter()
                    .chain(&steady_runs)
                    .map(|r| r.false_positives)
                    .sum::<u64>(),
                fmt(max_of(&steady_runs, |r| r.dissemination_p99_rounds), 1),
                mean_of(&steady_runs, |r| r.bytes_per_node_s),
            );
        }
    }
    println!();
}

fn loss_table(args: &Args) {
    let n = if args.quick { 200 } else { 1000 };
    println!("## Loss (N = {n}, seed 1)\n");
    println!(
        "| loss | virtual hours | profile | false positives | suspicions per node-hour | wall s |"
    );
    println!("|---|---|---|---|---|---|");
    for (loss, hours) in [
        (0.05, args.loss_hours),
        (0.01, (args.loss_hours / 12.0).max(0.05)),
    ] {
        for profile in PROFILES {
            let text = format!(
                "name = \"bench-loss\"\n[topology]\nnodes = {n}\nprofile = \"{profile}\"\n[network]\nloss = {loss}\n[run]\nduration = \"{}s\"\n",
                (hours * 3600.0).round()
            );
            let started = WallClock::now();
            let r = run(&text, "bench-loss.toml", 1);
            let wall = started.elapsed().as_secs_f64();
            println!(
                "| {:.0}% | {hours} | {profile} | {} | {:.3} | {:.0} |",
                loss * 100.0,
                r[0].false_positives,
                r[0].suspicions_per_node_hour,
                wall
            );
        }
    }
    println!();
}

fn heal_table(args: &Args) {
    let n = if args.quick { 200 } else { 1000 };
    println!(
        "## Partition heal (N = {n}: a 50/50 split for 60 s, longer than the suspicion timeout)\n"
    );
    println!(
        "| profile | seeds | heal p50 (s) | heal max (s) | heal max / anti-entropy period | false positives |"
    );
    println!("|---|---|---|---|---|---|");
    for profile in PROFILES {
        let text = format!(
            "name = \"bench-heal\"\n[topology]\nnodes = {n}\nprofile = \"{profile}\"\n[run]\nduration = \"180s\"\n[[fault]]\nat = \"20s\"\naction = \"partition\"\nsplit = 0.5\nheal_after = \"60s\"\n"
        );
        let reports = run(&text, "bench-heal.toml", args.seeds);
        let heals: Vec<f64> = reports.iter().filter_map(|r| r.heal_s).collect();
        let max = heals.iter().copied().reduce(f64::max);
        println!(
            "| {profile} | {} | {} | {} | {} | {} |",
            reports.len(),
            fmt(percentile(&heals, 50.0), 1),
            fmt(max, 1),
            fmt(max.map(|m| m / 30.0), 2),
            reports.iter().map(|r| r.false_positives).sum::<u64>()
        );
    }
    println!();
}

fn speed_table(args: &Args) {
    let minutes = if args.quick { 1 } else { 10 };
    println!("## Quiet mesh: steady-state traffic and simulator speed\n");
    println!(
        "No faults, no workload, {minutes} virtual minutes, seed 1; one core, release build. Wall time includes building the converged mesh (N^2 member records).\n"
    );
    println!(
        "| N | profile | bytes/node/s | datagrams/node/s | virtual s | wall s | virtual/wall |"
    );
    println!("|---|---|---|---|---|---|---|");
    for &n in &args.nodes {
        for profile in PROFILES {
            let text = format!(
                "name = \"bench-quiet\"\n[topology]\nnodes = {n}\nprofile = \"{profile}\"\n[run]\nduration = \"{}s\"\n",
                minutes * 60
            );
            let started = WallClock::now();
            let r = &run(&text, "bench-quiet.toml", 1)[0];
            let wall = started.elapsed().as_secs_f64();
            println!(
                "| {n} | {profile} | {:.0} | {:.2} | {:.0} | {wall:.1} | {:.1}x |",
                r.bytes_per_node_s,
                r.messages_per_node_s,
                r.virtual_s,
                r.virtual_s / wall
            );
        }
    }
    println!();
}
