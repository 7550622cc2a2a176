//! `meshctl chaos plan|start|list|abort|kill-switch` (docs/diagnostics.md, "Operator usage").
//!
//! * `plan FILE`: the node at `--addr` resolves the plan (JSON, or TOML for a `.toml` file) and
//!   answers its blast radius and a confirmation token; nothing starts.
//! * `start FILE --confirm TOKEN`: starts the planned experiment with that token (on the node that
//!   planned it, before the token expires: `[chaos] token_ttl`, a minute by default); `start FILE --yes` plans, prints the radius and starts at
//!   once. Exits 1 unless every target confirmed.
//! * `list`: the experiments of every member the node at `--addr` lists (alive or suspect,
//!   at the control address each publishes) and of each `--at HOST:PORT`; `--only` asks the
//!   node at `--addr` alone. Under an experiment its origin lists, one line per target: its
//!   revert `confirmed` (with the end reason and when) or `unconfirmed` (with why).
//! * `abort ID`, `kill-switch [--rearm]`: the node at `--addr` does it and relays it to every
//!   member; the table shows each member's answer. Exit 1 unless all did.

use std::path::{Path, PathBuf};

use futures_util::future::join_all;
use meshkit::diag::fault::FaultPlan;
use meshkit_node::api::chaos::{
    ChaosErrorBody, ExperimentView, ExperimentsResponse, FanOutResponse, PlanResponse,
    StartRequest, StartResponse, TargetResult, id_path_segment,
};
use meshkit_node::api::json::ErrorBody;
use meshkit_node::client::Client;
use serde::Serialize;

use super::{NodeArgs, PeerFilter, fetch_peers, with_client};

/// Largest plan file read, in bytes.
const MAX_PLAN_FILE: u64 = 64 * 1024;

/// Reads a plan file: TOML when it ends in `.toml`, JSON otherwise.
fn read_plan(file: &Path) -> Result<FaultPlan, String> {
    let meta = std::fs::metadata(file).map_err(|e| format!("{}: {e}", file.display()))?;
    if meta.len() > MAX_PLAN_FILE {
        return Err(format!(
            "{}: over {MAX_PLAN_FILE} bytes; a plan is a few lines",
            file.display()
        ));
    }
    let text = std::fs::read_to_string(file).map_err(|e| format!("{}: {e}", file.display()))?;
    let parsed = if file.extension().is_some_and(|e| e == "toml") {
        toml::from_str::<FaultPlan>(&text).map_err(|e| e.to_string())
    } else {
        serde_json::from_str::<FaultPlan>(&text).map_err(|e| e.to_string())
    };
    parsed.map_err(|e| format!("{}: not a fault plan: {e}", file.display()))
}

/// A refusal in words: the reason and message of a chaos error body, else the plain error.
fn refusal(status: u16, body: &str) -> String {
    if let Ok(b) = serde_json::from_str::<ChaosErrorBody>(body) {
        return format!("HTTP {status} ({}): {}", b.reason, b.error);
    }
    let text = serde_json::from_str::<ErrorBody>(body)
        .map_or_else(|_| body.trim().to_owned(), |b| b.error);
    format!("HTTP {status}: {text}")
}

async fn plan_call(client: &Client, addr: &str, plan: &FaultPlan) -> Result<PlanResponse, String> {
    let response = client
        .post_json(addr, "/control/chaos/plans", plan)
        .await
        .map_err(|e| format!("{addr}: {e}"))?;
    if response.status != 200 {
        return Err(format!(
            "{addr}: plan refused: {}",
            refusal(response.status, &response.body)
        ));
    }
    serde_json::from_str(&response.body).map_err(|e| format!("{addr}: unexpected answer: {e}"))
}

fn ids(nodes: &[u64]) -> String {
    if nodes.is_empty() {
        return "-".to_owned();
    }
    nodes
        .iter()
        .map(u64::to_string)
        .collect::<Vec<_>>()
        .join(", ")
}

fn render_plan(p: &PlanResponse) -> String {
    let r = &p.radius;
    let mut out = format!(
        "plan on node {}: {} for {} ms{}\n",
        p.node,
        r.kind,
        r.duration_ms,
        if r.start_ms > 0 {
            format!(", starting {} ms after start", r.start_ms)
        } else {
            String::new()
        }
    );
    out.push_str(&format!("nodes:  {}\n", ids(&r.nodes)));
    let links: Vec<String> = r.links.iter().map(|[a, b]| format!("{a}->{b}")).collect();
    out.push_str(&format!(
        "links:  {} {}\n",
        links.len(),
        if links.is_empty() {
            String::new()
        } else {
            format!("({})", links.join(" "))
        }
    ));
    if !r.groups.is_empty() {
        let groups: Vec<String> = r.groups.iter().map(|g| format!("[{}]", ids(g))).collect();
        out.push_str(&format!("groups: {}\n", groups.join(" ")));
    }
    let left_s = p.expires_unix_ms.saturating_sub(now_ms()).div_ceil(1000);
    out.push_str(&format!(
        "token (for {}, on {}, expires in {left_s} s, once):\n{}\n",
        p.caller, p.node, p.token
    ));
    out
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// `meshctl chaos plan FILE`.
pub(crate) fn plan(node: &NodeArgs, file: &Path, json: bool) -> Result<(), String> {
    let plan = read_plan(file)?;
    let addr = node.addr();
    let (answer, _) = with_client(&node.connect, false, async |client| {
        plan_call(client, addr, &plan).await
    })?;
    crate::print_report(&answer, json, |p| {
        format!(
            "{}start it: meshctl chaos start {} --confirm <token above>\n",
            render_plan(p),
            file.display()
        )
    })
}

/// What `start` prints with `--json`: the plan's answer when `--yes` made one, and the start.
#[derive(Debug, Serialize)]
struct StartReport {
    #[serde(skip_serializing_if = "Option::is_none")]
    planned: Option<PlanResponse>,
    started: StartResponse,
}

/// `meshctl chaos start FILE (--confirm TOKEN | --yes)`.
pub(crate) fn start(
    node: &NodeArgs,
    file: &Path,
    token: Option<String>,
    yes: bool,
    json: bool,
) -> Result<(), String> {
    let plan = read_plan(file)?;
    let addr = node.addr();
    if token.is_none() && !yes {
        return Err(
            "give the confirmation token `meshctl chaos plan` printed (--confirm TOKEN), or --yes to plan and start \
             at once after printing the radius"
                .to_owned(),
        );
    }
    let (report, _) = with_client(&node.connect, false, async |client| {
        let (planned, token) = match token {
            Some(token) => (None, token),
            None => {
                let p = plan_call(client, addr, &plan).await?;
                if !json {
                    // The radius goes out before the start: --yes confirms what was shown.
                    eprint!("{}", render_plan(&p));
                }
                let token = p.token.clone();
                (Some(p), token)
            }
        };
        let request = StartRequest { plan, token };
        let response = client
            .post_json(addr, "/control/chaos/experiments", &request)
            .await
            .map_err(|e| format!("{addr}: {e}"))?;
        if response.status != 201 && response.status != 207 {
            return Err(format!(
                "{addr}: start refused: {}",
                refusal(response.status, &response.body)
            ));
        }
        let started: StartResponse = serde_json::from_str(&response.body)
            .map_err(|e| format!("{addr}: unexpected answer: {e}"))?;
        Ok(StartReport { planned, started })
    })?;
    crate::print_report(&report, json, |r| {
        let s = &r.started;
        format!(
            "started {} ({} ms from start call to every target's answer); reverts by itself at \
             the deadline, in {} ms\n{}",
            s.id,
            s.confirmed_unix_ms.saturating_sub(s.activated_unix_ms),
            s.deadline_unix_ms.saturating_sub(now_ms()),
            render_targets(&s.targets)
        )
    })?;
    all_ok(&report.started.targets, "confirmed the experiment")
}

fn all_ok(targets: &[TargetResult], what: &str) -> Result<(), String> {
    let failed = targets.iter().filter(|t| !t.ok).count();
    if failed == 0 {
        Ok(())
    } else {
        Err(format!(
            "{} of {} nodes {what}; the others: see ERROR above (an unreachable node never got \
             the fault, or reverts it by itself at its deadline)",
            targets.len() - failed,
            targets.len()
        ))
    }
}

fn render_targets(targets: &[TargetResult]) -> String {
    let mut out = format!("{:<6} {:<4} {:<10} {}\n", "NODE", "OK", "PHASE", "ERROR");
    for t in targets {
        let phase = t
            .experiment
            .as_ref()
            .map(|e| e.phase.clone())
            .or_else(|| t.reverted.map(|n| format!("{n} reverted")))
            .unwrap_or_else(|| "-".to_owned());
        out.push_str(&format!(
            "{:<6} {:<4} {:<10} {}\n",
            t.node,
            if t.ok { "yes" } else { "no" },
            phase,
            t.error.as_deref().unwrap_or("")
        ));
    }
    out
}

/// What `list` prints with `--json`.
#[derive(Debug, Serialize)]
struct ListReport {
    /// Each node asked, with its answer or why it could not be asked.
    nodes: Vec<NodeList>,
}

#[derive(Debug, Serialize)]
struct NodeList {
    addr: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    answer: Option<ExperimentsResponse>,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<String>,
}

async fn list_one(client: &Client, addr: String) -> NodeList {
    let answer = match client.get(&addr, "/control/chaos/experiments").await {
        Ok(r) if r.status == 200 => serde_json::from_str::<ExperimentsResponse>(&r.body)
            .map_err(|e| format!("unexpected answer: {e}")),
        Ok(r) => Err(refusal(r.status, &r.body)),
        Err(e) => Err(e.to_string()),
    };
    match answer {
        Ok(a) => NodeList {
            addr,
            answer: Some(a),
            error: None,
        },
        Err(e) => NodeList {
            addr,
            answer: None,
            error: Some(e),
        },
    }
}

/// `meshctl chaos list [--only] [--at HOST:PORT]...`.
pub(crate) fn list(node: &NodeArgs, only: bool, at: &[String], json: bool) -> Result<(), String> {
    let addr = node.addr().to_owned();
    let (report, _) = with_client(&node.connect, false, async |client| {
        let mut addrs = vec![addr.clone()];
        if !only {
            let peers = fetch_peers(client, &addr, &PeerFilter::default()).await?;
            addrs.extend(
                peers
                    .peers
                    .iter()
                    .filter(|p| p.id != peers.local)
                    .filter(|p| p.state == "alive" || p.state == "suspect")
                    .filter_map(|p| p.metadata.get("control").cloned()),
            );
        }
        for a in at {
            if !addrs.contains(a) {
                addrs.push(a.clone());
            }
        }
        let nodes = join_all(addrs.into_iter().map(|a| list_one(client, a))).await;
        Ok(ListReport { nodes })
    })?;
    crate::print_report(&report, json, render_list)?;
    let failed: Vec<&str> = report
        .nodes
        .iter()
        .filter(|n| n.error.is_some())
        .map(|n| n.addr.as_str())
        .collect();
    if failed.is_empty() {
        Ok(())
    } else {
        Err(format!("could not list {}", failed.join(", ")))
    }
}

fn render_list(r: &ListReport) -> String {
    let mut out = format!(
        "{:<26} {:<6} {:<18} {:<10} {:>10}  {:<12} {}\n",
        "ID", "NODE", "KIND", "PHASE", "REMAINING", "END", "NODES"
    );
    let mut rows: Vec<&ExperimentView> = r
        .nodes
        .iter()
        .filter_map(|n| n.answer.as_ref())
        .flat_map(|a| &a.experiments)
        .collect();
    rows.sort_by(|a, b| a.id.cmp(&b.id).then(a.node.cmp(&b.node)));
    for e in rows {
        out.push_str(&format!(
            "{:<26} {:<6} {:<18} {:<10} {:>8}ms  {:<12} {}\n",
            e.id,
            e.node,
            e.kind,
            e.phase,
            e.remaining_ms,
            e.end_reason.as_deref().unwrap_or("-"),
            ids(&e.radius.nodes)
        ));
        // On its origin: each target's revert as the origin confirmed it (or could not).
        for t in &e.targets {
            let mut line = format!("    target {:<4} {:<12}", t.node, t.state);
            if let Some(reason) = &t.end_reason {
                line.push_str(&format!(" {reason}"));
            }
            if let Some(reverted) = t.reverted_unix_ms {
                let late = i128::from(reverted) - i128::from(e.deadline_unix_ms);
                line.push_str(&format!(" (reverted {late:+} ms from the deadline)"));
            }
            if let Some(error) = &t.error {
                line.push_str(&format!(" {error}"));
            }
            out.push_str(line.trim_end());
            out.push('\n');
        }
    }
    for n in &r.nodes {
        if let Some(a) = &n.answer
            && a.kill_switch_engaged
        {
            out.push_str(&format!(
                "node {} ({}): kill switch engaged, new experiments refused until `meshctl chaos kill-switch --rearm`\n",
                a.node, n.addr
            ));
        }
        if let Some(e) = &n.error {
            out.push_str(&format!("{}: {e}\n", n.addr));
        }
    }
    out
}

/// `meshctl chaos abort ID`.
pub(crate) fn abort(node: &NodeArgs, id: &str, json: bool) -> Result<(), String> {
    let addr = node.addr();
    let path = format!("/control/chaos/experiments/{}", id_path_segment(id));
    fan_out_call(node, addr, http::Method::DELETE, &path, json)
}

/// `meshctl chaos kill-switch [--rearm]`.
pub(crate) fn kill_switch(node: &NodeArgs, rearm: bool, json: bool) -> Result<(), String> {
    let method = if rearm {
        http::Method::DELETE
    } else {
        http::Method::POST
    };
    fan_out_call(
        node,
        node.addr(),
        method,
        "/control/chaos/kill-switch",
        json,
    )
}

fn fan_out_call(
    node: &NodeArgs,
    addr: &str,
    method: http::Method,
    path: &str,
    json: bool,
) -> Result<(), String> {
    let (answer, _) = with_client(&node.connect, false, async |client| {
        let response = client
            .request(method, addr, path, bytes::Bytes::new())
            .await
            .map_err(|e| format!("{addr}: {e}"))?;
        if response.status != 200 {
            return Err(format!(
                "{addr}: refused: {}",
                refusal(response.status, &response.body)
            ));
        }
        serde_json::from_str::<FanOutResponse>(&response.body)
            .map_err(|e| format!("{addr}: unexpected answer: {e}"))
    })?;
    crate::print_report(&answer, json, |a| {
        format!(
            "{}{}\n{}",
            a.action,
            a.id.as_deref().map(|i| format!(" {i}")).unwrap_or_default(),
            render_targets(&a.targets)
        )
    })?;
    // An abort is answered "unknown experiment" by members it never reached: not a failure.
    let failed: Vec<TargetResult> = answer
        .targets
        .iter()
        .filter(|t| !t.ok && t.reason.as_deref() != Some("unknown-experiment"))
        .cloned()
        .collect();
    all_ok(&failed, "did it").map_err(|_| {
        format!(
            "{} of {} members did not: see ERROR above",
            failed.len(),
            answer.targets.len()
        )
    })
}

/// The `chaos` subcommands.
#[derive(Debug, clap::Subcommand)]
pub(crate) enum ChaosCommand {
    /// Resolves a fault plan (JSON, or TOML for a .toml file) on the node at --addr and prints
    /// its blast radius and a confirmation token (needs mesh.admin); nothing starts.
    Plan {
        /// The plan file.
        file: PathBuf,
        /// Print the node's JSON answer.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        node: NodeArgs,
    },
    /// Starts a planned experiment with its token (needs mesh.admin), or plans and starts it
    /// with --yes after printing the radius. Exits 1 unless every target confirmed.
    Start {
        /// The plan file, as planned.
        file: PathBuf,
        /// The confirmation token `meshctl chaos plan` printed (`--token` is the bearer token
        /// of every command).
        #[arg(long = "confirm", value_name = "TOKEN", conflicts_with = "yes")]
        confirm: Option<String>,
        /// Plan and start in one go (the radius is printed first).
        #[arg(long)]
        yes: bool,
        /// Print JSON.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        node: NodeArgs,
    },
    /// Active and recent experiments with their remaining time, on every member (needs
    /// mesh.observe).
    List {
        /// Ask only the node at --addr.
        #[arg(long)]
        only: bool,
        /// Also ask the node at HOST:PORT (repeatable), e.g. when members cannot be learned.
        #[arg(long, value_name = "HOST:PORT")]
        at: Vec<String>,
        /// Print JSON.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        node: NodeArgs,
    },
    /// Aborts experiment ID (node-ORIGIN/SERIAL, as `chaos list` shows it) everywhere (needs mesh.admin).
    Abort {
        /// The experiment id.
        id: String,
        /// Print JSON.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        node: NodeArgs,
    },
    /// Engages the kill switch on every member: every experiment reverts now and new ones are
    /// refused until --rearm (needs mesh.admin).
    KillSwitch {
        /// Re-arm instead: experiments may start again.
        #[arg(long)]
        rearm: bool,
        /// Print JSON.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        node: NodeArgs,
    },
}

impl ChaosCommand {
    /// The node arguments, for contexts.
    pub(crate) fn node_mut(&mut self) -> &mut NodeArgs {
        match self {
            Self::Plan { node, .. }
            | Self::Start { node, .. }
            | Self::List { node, .. }
            | Self::Abort { node, .. }
            | Self::KillSwitch { node, .. } => node,
        }
    }

    /// Runs it.
    pub(crate) fn run(self) -> Result<(), String> {
        match self {
            Self::Plan { file, json, node } => plan(&node, &file, json),
            Self::Start {
                file,
                confirm,
                yes,
                json,
                node,
            } => start(&node, &file, confirm, yes, json),
            Self::List {
                only,
                at,
                json,
                node,
            } => list(&node, only, &at, json),
            Self::Abort { id, json, node } => abort(&node, &id, json),
            Self::KillSwitch { rearm, json, node } => kill_switch(&node, rearm, json),
        }
    }
}
