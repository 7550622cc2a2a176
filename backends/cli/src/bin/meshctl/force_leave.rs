//! `meshctl force-leave NODE`, as `serf force-leave`: every member moves a member it holds dead
//! to `left`.
//!
//! A node takes `left` about another member only from its own operator (a `left` relayed by a
//! peer is a death claim, docs/security.md), so the command asks each member itself: first the
//! node at `--addr`, which must hold the member dead (else it refuses with 409 and nothing else
//! is asked), then every other member that node lists alive or suspect, at the control address
//! the member publishes. It exits 1 unless every member asked now holds the member left.

use futures_util::future::join_all;
use meshkit_node::api::json::ErrorBody;
use meshkit_node::api::json::PeerJson;
use meshkit_node::api::json::{ForceLeaveRequest, ForceLeaveResponse};
use meshkit_node::client::Client;
use serde::Serialize;

use super::{NodeArgs, PeerFilter, fetch_peers, with_client};

/// Members asked at once.
const CONCURRENT_MEMBERS: usize = 32;

/// What one member answered.
#[derive(Debug, Serialize)]
struct Asked {
    /// The member asked.
    node: u64,
    /// Its control address.
    control: Option<String>,
    /// `left` (it held the member dead and now holds it left), `already_left`, `refused`
    /// (it answered with an error: `error` says why) or `unreachable`.
    outcome: &'static str,
    /// The member's refusal, or why it could not be asked.
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<String>,
}

/// The whole answer, as `--json` prints it.
#[derive(Debug, Serialize)]
struct Report {
    /// The member forced to leave.
    member: u64,
    /// Every member asked, the node at `--addr` first.
    asked: Vec<Asked>,
}

/// Runs the command; prints a table (or JSON) and fails unless every member asked holds the
/// member left.
pub(crate) fn run(node: &NodeArgs, member: u64, json: bool) -> Result<(), String> {
    let addr = node.addr();
    let request = ForceLeaveRequest { node: member };
    let (report, _) = with_client(&node.connect, false, async |client| {
        // The node at --addr decides first: a member it does not hold dead is refused there,
        // and no one else is asked.
        let first = ask(client, addr, &request).await;
        if first.0 != "left" && first.0 != "already_left" {
            let why = first.1.unwrap_or_default();
            return Err(format!("{addr}: {why}"));
        }
        let peers = fetch_peers(client, addr, &PeerFilter::default()).await?;
        let mut asked = vec![Asked {
            node: peers.local,
            control: Some(addr.to_owned()),
            outcome: first.0,
            error: None,
        }];
        let others: Vec<&PeerJson> = peers
            .peers
            .iter()
            .filter(|p| p.id != peers.local && p.id != member)
            .filter(|p| p.state == "alive" || p.state == "suspect")
            .collect();
        for chunk in others.chunks(CONCURRENT_MEMBERS) {
            let answers = join_all(chunk.iter().map(|p| async {
                let control = p.metadata.get("control").cloned();
                let (outcome, error) = match &control {
                    Some(control) => ask(client, control, &request).await,
                    None => (
                        "unreachable",
                        Some("publishes no control address".to_owned()),
                    ),
                };
                Asked {
                    node: p.id,
                    control,
                    outcome,
                    error,
                }
            }))
            .await;
            asked.extend(answers);
        }
        Ok(Report { member, asked })
    })?;
    crate::print_report(&report, json, render)?;
    let failed = report
        .asked
        .iter()
        .filter(|a| a.outcome != "left" && a.outcome != "already_left")
        .count();
    if failed == 0 {
        Ok(())
    } else {
        Err(format!(
            "node {member} is left at {} of {} members asked; run force-leave again once the \
             others hold it dead",
            report.asked.len() - failed,
            report.asked.len()
        ))
    }
}

/// Asks the member at `control`: its outcome and, if it refused or could not be asked, why.
async fn ask(
    client: &Client,
    control: &str,
    request: &ForceLeaveRequest,
) -> (&'static str, Option<String>) {
    let response = match client
        .post_json(control, "/control/force-leave", request)
        .await
    {
        Ok(response) => response,
        Err(e) => return ("unreachable", Some(e.to_string())),
    };
    if response.status == 200 {
        return match serde_json::from_str::<ForceLeaveResponse>(&response.body) {
            Ok(r) if r.changed => ("left", None),
            Ok(_) => ("already_left", None),
            Err(e) => ("refused", Some(format!("unexpected answer: {e}"))),
        };
    }
    let reason = serde_json::from_str::<ErrorBody>(&response.body)
        .map_or_else(|_| response.body.trim().to_owned(), |b| b.error);
    (
        "refused",
        Some(format!("HTTP {}: {reason}", response.status)),
    )
}

fn render(report: &Report) -> String {
    let mut out = format!(
        "{:<6} {:<14} {:<22} {}\n",
        "NODE", "OUTCOME", "CONTROL", "ERROR"
    );
    for a in &report.asked {
        out.push_str(&format!(
            "{:<6} {:<14} {:<22} {}\n",
            a.node,
            a.outcome.replace('_', " "),
            a.control.as_deref().unwrap_or("-"),
            a.error.as_deref().unwrap_or("-")
        ));
    }
    let left = report
        .asked
        .iter()
        .filter(|a| a.outcome == "left" || a.outcome == "already_left")
        .count();
    out.push_str(&format!(
        "\nnode {} is left at {left} of {} members asked\n",
        report.member,
        report.asked.len()
    ));
    out
}
