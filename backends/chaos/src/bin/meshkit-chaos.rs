//! `meshkit-chaos`: runs a scenario file in the simulator or against the compose chaos
//! environment.
//!
//! ```text
//! meshkit-chaos run SCENARIO --env sim [--seed N] [--duration D] [--out DIR] [--json]
//! meshkit-chaos run SCENARIO --env compose [--project P] [--up [--nodes N] [--voters V] [--spares K] [--port-base B]] [--down]
//!                   [--seed N] [--duration D] [--out DIR] [--abort-if PROMQL] [--poll-ms MS] [--json]
//! meshkit-chaos plan SCENARIO --nodes N [--seed N] [--duration D] [--json]
//! ```
//!
//! Exit status: 0 every expectation held, 1 one failed (or a fault could not be applied),
//! 2 the run could not be made (bad arguments, a fault the environment cannot take, no
//! Docker, no stack: the message says what to do), 3 the steady-state check aborted the run.

use std::io::IsTerminal as _;
use std::path::{Path, PathBuf};
use std::process::{Command as Process, ExitCode};
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use meshkit_chaos::compose::{self, ComposeOptions};
use meshkit_chaos::stack::Stack;
use meshkit_chaos::{artifacts, plan};
use meshkit_sim::{RunOptions, Scenario};
use serde_json::json;

/// `println!` that ignores a closed stdout (`| head`): the exit status still tells the result.
macro_rules! out {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stdout(), $($arg)*);
    }};
}

/// Runs MeshKit scenario files in the simulator or against real containers.
#[derive(Debug, Parser)]
#[command(name = "meshkit-chaos", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run a scenario file in an environment and check its expectations.
    Run(RunArgs),
    /// Print the actions a scenario maps to on a compose stack of N nodes, or why it is
    /// refused; runs nothing.
    Plan(PlanArgs),
    /// Run the autoscaler on a compose stack by itself: follow a queue's backpressure stream
    /// and add or remove `meshctl queue work` containers, for --for or until Ctrl-C; the
    /// decisions go to OUT/autoscale.jsonl. (A scenario with `[autoscale]` runs it for you.)
    Autoscale(AutoscaleArgs),
}

#[derive(Debug, Args)]
struct AutoscaleArgs {
    /// The compose project.
    #[arg(long, default_value = "meshkit-chaos")]
    project: String,
    /// The queue (shard namespace).
    #[arg(long, default_value = "jobs")]
    queue: String,
    /// Fewest workers.
    #[arg(long, default_value_t = 1)]
    min_workers: u32,
    /// Most workers (at most 16).
    #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u32).range(1..=16))]
    max_workers: u32,
    /// Backpressure active this long before a scale-out.
    #[arg(long, default_value = "3s", value_parser = parse_duration)]
    scale_out_after: Duration,
    /// Backpressure inactive this long before a scale-in (at least --scale-out-after).
    #[arg(long, default_value = "15s", value_parser = parse_duration)]
    scale_in_after: Duration,
    /// Shortest time between two decisions.
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    cooldown: Duration,
    /// A worker's time per item.
    #[arg(long, default_value = "200ms", value_parser = parse_duration)]
    work: Duration,
    /// Stop after this long (the workers are removed).
    #[arg(long = "for", default_value = "10m", value_parser = parse_duration)]
    duration: Duration,
    /// Where autoscale.jsonl and the workers' logs go (default artifacts/autoscale-<time>).
    #[arg(long)]
    out: Option<PathBuf>,
    /// Reach the nodes by name on the project's network (`meshkit-I:8101`) rather than at
    /// their ports published on 127.0.0.1: for the stack's `autoscaler` service, which runs
    /// on that network.
    #[arg(long)]
    in_network: bool,
    /// Serve the autoscaler's Prometheus metrics at http://ADDR/metrics (e.g. 0.0.0.0:9466,
    /// the service's).
    #[arg(long, value_name = "ADDR")]
    metrics: Option<std::net::SocketAddr>,
    /// Print the summary as JSON.
    #[arg(long)]
    json: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum Env {
    /// The deterministic simulator (the `meshkit-sim` library), virtual time.
    Sim,
    /// A compose stack of real `meshkitd` containers (compose/up), wall-clock time.
    Compose,
}

#[derive(Debug, Args)]
struct RunArgs {
    /// The scenario file (TOML), e.g. scenarios/crash-one.toml.
    scenario: PathBuf,
    /// Where to run it.
    #[arg(long, value_enum)]
    env: Env,
    /// The seed of the random draws (default 1).
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Override of the scenario's `[run] duration` (`90s`, `2m`).
    #[arg(long, value_parser = parse_duration)]
    duration: Option<Duration>,
    /// The artifacts folder (default artifacts/<scenario>-<timestamp>; with --env sim only
    /// when given).
    #[arg(long)]
    out: Option<PathBuf>,
    /// Print the report as JSON on stdout.
    #[arg(long)]
    json: bool,
    /// compose: the compose project.
    #[arg(long, default_value = "meshkit-chaos")]
    project: String,
    /// compose: bring the stack up first with compose/up (a stack already up is replaced).
    #[arg(long)]
    up: bool,
    /// compose with --up: meshkitd containers.
    #[arg(long, default_value_t = 5)]
    nodes: u32,
    /// compose with --up: of them, Raft voters.
    #[arg(long, default_value_t = 3)]
    voters: u32,
    /// compose with --up: nodes prepared but not started, for membership surges (`join`, a
    /// `membership-surge` plan).
    #[arg(long, default_value_t = 3)]
    spares: u32,
    /// compose with --up: node I's control port is PORT_BASE+I on 127.0.0.1.
    #[arg(long)]
    port_base: Option<u16>,
    /// compose: tear the stack down (compose/down) after the run.
    #[arg(long)]
    down: bool,
    /// compose: a PromQL query checked every 5 s; any series in its answer aborts the run
    /// (exit 3), e.g. `sum(up{job="meshkit"}) < 3`.
    #[arg(long, value_name = "PROMQL")]
    abort_if: Option<String>,
    /// compose: milliseconds between two polls of the nodes.
    #[arg(long, default_value_t = 500, value_parser = clap::value_parser!(u64).range(100..=10_000))]
    poll_ms: u64,
    /// compose: the folder holding compose/up and compose/down (default: found upward from
    /// the current directory).
    #[arg(long)]
    compose_dir: Option<PathBuf>,
}

#[derive(Debug, Args)]
struct PlanArgs {
    /// The scenario file (TOML).
    scenario: PathBuf,
    /// The stack's node count.
    #[arg(long, default_value_t = 5)]
    nodes: u32,
    /// The seed of the draws (jitter, partition sides).
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Override of `[run] duration`.
    #[arg(long, value_parser = parse_duration)]
    duration: Option<Duration>,
    /// Print JSON.
    #[arg(long)]
    json: bool,
}

fn parse_duration(s: &str) -> Result<Duration, String> {
    let d = meshkit_sim::scenario::parse_duration(s)?;
    if d.is_zero() {
        return Err("the duration must be positive".to_owned());
    }
    Ok(d)
}

/// A failure that stops the command: the message and the exit status.
struct Fail(u8, String);

impl<E: std::fmt::Display> From<E> for Fail {
    fn from(e: E) -> Self {
        Self(2, e.to_string())
    }
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("MESHKIT_CHAOS_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    let json = match &cli.command {
        Command::Run(a) => a.json,
        Command::Plan(a) => a.json,
        Command::Autoscale(a) => a.json,
    };
    let result = match cli.command {
        Command::Run(args) => match args.env {
            Env::Sim => run_sim(&args),
            Env::Compose => run_compose(&args),
        },
        Command::Plan(args) => plan_cmd(&args),
        Command::Autoscale(args) => autoscale_cmd(&args),
    };
    match result {
        Ok(code) => ExitCode::from(code),
        Err(Fail(code, message)) => {
            if json {
                out!("{}", json!({"error": message, "exit": code}));
            }
            eprintln!("meshkit-chaos: {message}");
            ExitCode::from(code)
        }
    }
}

fn load(path: &Path) -> Result<Scenario, Fail> {
    Scenario::from_file(path).map_err(|e| Fail(2, e.to_string()))
}

fn plan_cmd(args: &PlanArgs) -> Result<u8, Fail> {
    let scenario = load(&args.scenario)?;
    let duration = args.duration.unwrap_or(scenario.duration());
    let steps = plan::timeline(&scenario, args.nodes, duration, args.seed)?;
    let notes = compose::scenario_notes(&scenario, args.nodes);
    let (_, not_evaluated) = plan::split_expectations(scenario.expect());
    if args.json {
        out!(
            "{}",
            json!({"scenario": scenario.name(), "nodes": args.nodes, "duration_s": duration.as_secs_f64(),
                   "steps": steps, "expectations_not_evaluated": not_evaluated, "notes": notes})
        );
        return Ok(0);
    }
    out!(
        "{} on {} compose nodes, {} s:",
        scenario.name(),
        args.nodes,
        duration.as_secs_f64()
    );
    for s in &steps {
        let what = match &s.action {
            plan::Action::Kill {
                nodes,
                restart_after,
            } => format!(
                "docker kill {nodes:?}{}",
                restart_after.map_or(String::new(), |d| format!(
                    ", docker start {:.1} s later",
                    d.as_secs_f64()
                ))
            ),
            plan::Action::Start { nodes } => format!("docker start {nodes:?}"),
            plan::Action::Pause { nodes, duration } => format!(
                "docker pause {nodes:?}, unpause {:.1} s later",
                duration.as_secs_f64()
            ),
            plan::Action::Chaos { plan } => format!(
                "chaos endpoint: {} for {:.1} s ({})",
                plan.kind().name(),
                plan.duration().as_secs_f64(),
                serde_json::to_string(plan).unwrap_or_default()
            ),
            plan::Action::Heal => "abort the run's partition experiments".to_owned(),
            plan::Action::Join {
                nodes,
                leave_after: None,
            } => format!(
                "create and start spare containers {nodes:?} (compose/up --spares; removed at \
                 the end)"
            ),
            plan::Action::Join {
                nodes,
                leave_after: Some(after),
            } => format!(
                "create and start spare containers {nodes:?} (compose/up --spares), docker stop \
                 them {:.1} s later (a graceful leave; removed at the end)",
                after.as_secs_f64()
            ),
            plan::Action::Leave { nodes } => {
                format!("docker stop {nodes:?} (SIGTERM: a graceful leave)")
            }
            plan::Action::Rotate { nodes, over } => format!(
                "new certificates from the run's CA into the [tls] files of {nodes:?}, one \
                 after another over {:.1} s (each node reloads its own)",
                over.as_secs_f64()
            ),
        };
        let entry = s.fault.map_or_else(
            || "[network]".to_owned(),
            |f| format!("fault #{} ({})", f + 1, s.occurrence + 1),
        );
        out!("  {:>7.1} s  {entry}  {what}", s.at.as_secs_f64());
    }
    for k in not_evaluated {
        out!("  not evaluated in compose: {k}");
    }
    for n in notes {
        out!("  note: {n}");
    }
    Ok(0)
}

fn run_sim(args: &RunArgs) -> Result<u8, Fail> {
    let scenario = load(&args.scenario)?;
    let mut options = RunOptions::seed(args.seed);
    options.duration = args.duration;
    let show = !args.json && std::io::stderr().is_terminal();
    let bar = show.then(|| {
        let bar = ProgressBar::with_draw_target(None, ProgressDrawTarget::stderr());
        bar.set_style(
            ProgressStyle::with_template("seed {msg} [{bar:40}] {pos}/{len} virtual ms ({eta})")
                .unwrap_or_else(|_| ProgressStyle::default_bar()),
        );
        bar.set_message(args.seed.to_string());
        bar
    });
    let started = std::time::Instant::now();
    let result = meshkit_sim::run_with_progress(&scenario, options, &mut |now, end| {
        if let Some(bar) = &bar {
            bar.set_length(end.as_nanos() / 1_000_000);
            bar.set_position(now.as_nanos() / 1_000_000);
        }
    });
    if let Some(bar) = bar {
        bar.finish_and_clear();
    }
    let mut report = result?;
    report.wall_s = (started.elapsed().as_secs_f64() * 1000.0).round() / 1000.0;
    if args.json {
        out!("{}", report.to_json());
    } else {
        out!("{}", report.render(scenario.expect()));
    }
    if let Some(out) = &args.out {
        let mut value = serde_json::to_value(&report)?;
        if let serde_json::Value::Object(map) = &mut value {
            map.insert("env".into(), json!("sim"));
            map.insert("passed".into(), json!(report.passed()));
        }
        artifacts::write_json(&out.join("report.json"), &value)?;
        artifacts::write_html(&out.join("report.html"), &value)?;
        if !args.json {
            eprintln!("report written to {}", out.display());
        }
    }
    Ok(if report.passed() { 0 } else { 1 })
}

fn compose_dir(args: &RunArgs) -> Result<PathBuf, Fail> {
    if let Some(dir) = &args.compose_dir {
        return Ok(dir.clone());
    }
    let cwd = std::env::current_dir()?;
    cwd.ancestors()
        .map(|d| d.join("compose"))
        .find(|d| d.join("up").is_file())
        .ok_or_else(|| {
            Fail(
                2,
                "compose/up not found above the current directory: run from the repository or \
                 give --compose-dir"
                    .to_owned(),
            )
        })
}

fn compose_tool(args: &RunArgs, tool: &str, extra: &[String]) -> Result<String, Fail> {
    let dir = compose_dir(args)?;
    let mut cmd = Process::new(dir.join(tool));
    cmd.args(["--project", &args.project, "--json"]).args(extra);
    let out = cmd
        .output()
        .map_err(|e| Fail(2, format!("{}: {e}", dir.join(tool).display())))?;
    if !out.status.success() {
        return Err(Fail(
            2,
            format!(
                "compose/{tool} failed ({}): {}",
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            ),
        ));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

fn run_compose(args: &RunArgs) -> Result<u8, Fail> {
    let scenario = load(&args.scenario)?;
    let duration = args.duration.unwrap_or(scenario.duration());
    if args.up {
        // Refusals before the stack is built: a scenario it cannot take costs nothing.
        plan::timeline(&scenario, args.nodes, duration, args.seed)?;
        if !args.json {
            eprintln!(
                "bringing up {} nodes as project {} (compose/up)",
                args.nodes, args.project
            );
        }
        let mut extra = vec![
            "--nodes".to_owned(),
            args.nodes.to_string(),
            "--voters".to_owned(),
            args.voters.to_string(),
            "--spares".to_owned(),
            args.spares.to_string(),
        ];
        if let Some(b) = args.port_base {
            extra.extend(["--port-base".to_owned(), b.to_string()]);
        }
        compose_tool(args, "up", &extra)?;
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let out = args
        .out
        .clone()
        .unwrap_or_else(|| compose::default_out(&scenario));
    let mut replay = format!(
        "meshkit-chaos run {} --env compose --project {} --seed {}",
        args.scenario.display(),
        args.project,
        args.seed
    );
    if let Some(d) = args.duration {
        replay.push_str(&format!(" --duration {}s", d.as_secs_f64()));
    }
    let options = ComposeOptions {
        seed: args.seed,
        duration: args.duration,
        out,
        abort_if: args.abort_if.clone(),
        poll: Duration::from_millis(args.poll_ms),
        progress: !args.json && std::io::stderr().is_terminal(),
        replay,
    };
    let result = runtime.block_on(async {
        let mut stack = Stack::find(&args.project).await?;
        if !args.json {
            eprintln!(
                "project {}: {} nodes, run directory {}; running {} for {:.0} s",
                stack.project,
                stack.nodes.len(),
                stack.run_dir.display(),
                scenario.name(),
                duration.as_secs_f64()
            );
        }
        Ok::<_, Fail>(compose::run(&scenario, &mut stack, &options).await?)
    });
    let down = if args.down {
        compose_tool(args, "down", &[]).map(|_| ())
    } else {
        Ok(())
    };
    let outcome = result?;
    down?;
    if args.json {
        out!("{}", outcome.json);
    } else {
        let mut text = outcome.report.render(scenario.expect());
        let not = outcome.json["expectations_not_evaluated"]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|v| v.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            })
            .unwrap_or_default();
        if !not.is_empty() {
            text.push_str(&format!("not evaluated in compose: {not}\n"));
        }
        if let Some(a) = outcome.json.get("autoscale") {
            text.push_str(&format!(
                "autoscale: {} scale-outs, {} scale-ins, at most {} workers; figures {} \
                 (decisions in autoscale.jsonl)\n",
                a["scale_outs"], a["scale_ins"], a["workers_max"], a["figures"]
            ));
        }
        out!("{text}");
        eprintln!("artifacts: {} (report.html)", outcome.out.display());
    }
    Ok(match (&outcome.aborted, outcome.passed()) {
        (Some(why), _) => {
            eprintln!("meshkit-chaos: {why}");
            3
        }
        (None, true) => 0,
        (None, false) => 1,
    })
}

fn autoscale_cmd(args: &AutoscaleArgs) -> Result<u8, Fail> {
    use meshkit_chaos::autoscale::PolicyConfig;
    use meshkit_chaos::workers::{self, AutoscaleOptions, Target};
    if args.min_workers > args.max_workers || args.scale_in_after < args.scale_out_after {
        return Err(Fail(
            2,
            "need --min-workers <= --max-workers and --scale-in-after >= --scale-out-after \
             (the hysteresis)"
                .to_owned(),
        ));
    }
    let out = args.out.clone().unwrap_or_else(|| {
        let t = time::OffsetDateTime::now_utc();
        PathBuf::from(format!(
            "artifacts/autoscale-{:04}{:02}{:02}T{:02}{:02}{:02}Z",
            t.year(),
            u8::from(t.month()),
            t.day(),
            t.hour(),
            t.minute(),
            t.second()
        ))
    });
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let summary = runtime.block_on(async {
        let stack = Stack::find(&args.project).await?;
        let options = AutoscaleOptions {
            queue: args.queue.clone(),
            policy: PolicyConfig {
                min_workers: args.min_workers,
                max_workers: args.max_workers,
                scale_out_after: args.scale_out_after,
                scale_in_after: args.scale_in_after,
                cooldown: args.cooldown,
            },
            work: args.work,
            out: out.clone(),
        };
        let target = if args.in_network {
            Target::of(&stack).on_network()
        } else {
            Target::of(&stack)
        };
        let running = workers::start(target, options).await?;
        if let Some(addr) = args.metrics {
            let listener = tokio::net::TcpListener::bind(addr)
                .await
                .map_err(|e| Fail(2, format!("--metrics {addr}: {e}")))?;
            let metrics = running.metrics();
            let app = axum::Router::new()
                .route(
                    "/metrics",
                    axum::routing::get(move || {
                        let metrics = metrics.clone();
                        async move {
                            (
                                [(http::header::CONTENT_TYPE, workers::metrics::CONTENT_TYPE)],
                                metrics.render(),
                            )
                        }
                    }),
                )
                .route("/-/healthy", axum::routing::get(|| async { "ok\n" }));
            tokio::spawn(async move {
                if let Err(e) = axum::serve(listener, app).await {
                    tracing::error!(error = %e, "the autoscaler's metrics listener failed");
                }
            });
        }
        if !args.json {
            eprintln!(
                "autoscaling {} workers of project {} for {:.0} s (Ctrl-C stops); decisions in {}",
                args.queue,
                args.project,
                args.duration.as_secs_f64(),
                out.join("autoscale.jsonl").display()
            );
        }
        // SIGTERM is how `docker stop` (the `autoscaler` service) asks it to end.
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
        tokio::select! {
            () = tokio::time::sleep(args.duration) => {}
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
        }
        Ok::<_, Fail>(running.stop().await)
    })?;
    if args.json {
        out!(
            "{}",
            json!({"out": out, "workers_max": summary.workers_max, "scale_outs": summary.scale_outs,
                   "scale_ins": summary.scale_ins, "stream_connects": summary.stream_connects,
                   "completed_by_worker": summary.completed_by_worker, "errors": summary.errors})
        );
    } else {
        out!(
            "{} scale-outs, {} scale-ins, at most {} workers; completed by worker: {:?}",
            summary.scale_outs,
            summary.scale_ins,
            summary.workers_max,
            summary.completed_by_worker
        );
        for e in &summary.errors {
            out!("error: {e}");
        }
    }
    Ok(if summary.errors.is_empty() { 0 } else { 1 })
}
