//! `meshctl shards list | watch | rebalance` and `meshctl drain [NODE] --wait`.
//!
//! The coordinator acts on the Raft leader only, so `list` and `rebalance` go on to it when the
//! node asked is another: `list` through the `control` address the leader publishes (it alone
//! knows the moves in flight), `rebalance` when the node answers `421 Misdirected Request`
//! with the leader's address. Both ask with the operator's own credentials, so the leader's
//! audit log names the operator.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use meshkit::shard::ShardId;
use meshkit_node::api::json::PeersResponse;
use meshkit_node::api::json::{
    DrainResponse, MisdirectedBody, RebalanceRequest, RebalanceResponse, ShardsResponse,
};
use meshkit_node::api::json::{LeadershipView, ShardStatus};
use meshkit_node::client::Client;
use serde::Serialize;

use super::{NodeArgs, ok_body, with_client};

/// How often `drain --wait` asks the node.
const DRAIN_POLL: Duration = Duration::from_millis(500);

/// GETs `path` from `addr` and reads the JSON answer; also the body as it came.
async fn get_json<T: serde::de::DeserializeOwned>(
    client: &Client,
    addr: &str,
    path: &str,
) -> Result<(T, String), String> {
    let response = client.get(addr, path).await.map_err(|e| e.to_string())?;
    let body = ok_body(addr, response)?;
    let value =
        serde_json::from_str(&body).map_err(|e| format!("{addr}: unexpected answer: {e}"))?;
    Ok((value, body))
}

/// Where node `id`'s control API answers, as the node at `addr` knows it (the `control` key
/// every node publishes).
async fn control_of(client: &Client, addr: &str, id: u64) -> Result<String, String> {
    let (peers, _): (PeersResponse, _) = get_json(client, addr, "/meshkit/peers").await?;
    let peer = peers
        .peers
        .iter()
        .find(|p| p.id == id)
        .ok_or_else(|| format!("{addr}: node {} knows no member {id}", peers.local))?;
    peer.metadata
        .get("control")
        .cloned()
        .ok_or_else(|| format!("node {id} publishes no control address"))
}

/// `shards list`: the owners, the moves in flight and a line per node, from the coordinator
/// when the node asked is not it.
pub(crate) fn list(node: &NodeArgs, json: bool) -> Result<(), String> {
    let addr = node.addr();
    let ((answer, body), _) = with_client(&node.connect, false, async |client| {
        let (first, body): (ShardsResponse, String) =
            get_json(client, addr, "/meshkit/shards").await?;
        let elsewhere = first
            .status
            .as_ref()
            .filter(|s| s.coordinator.is_none())
            .and_then(|s| s.coordinator_node)
            .filter(|&c| c != first.local);
        let Some(coordinator) = elsewhere else {
            return Ok((first, body));
        };
        // The coordinator alone knows the moves in flight; without it, show what there is.
        let there = match control_of(client, addr, coordinator).await {
            Ok(control) => get_json(client, &control, "/meshkit/shards").await,
            Err(e) => Err(e),
        };
        match there {
            Ok(answer) => {
                eprintln!(
                    "meshctl: node {} does not coordinate shards: showing the coordinator's \
                     view (node {coordinator})",
                    first.local
                );
                Ok(answer)
            }
            Err(e) => {
                eprintln!(
                    "meshctl: the coordinator (node {coordinator}) did not answer ({e}): \
                     showing node {}'s view, without moves in flight",
                    first.local
                );
                Ok((first, body))
            }
        }
    })?;
    if json {
        println!("{}", body.trim_end());
        return Ok(());
    }
    print!("{}", render_list(&answer));
    Ok(())
}

/// The readable form of a shards answer: owners, moves in flight, a line per node, a summary.
/// A node without `[shards]` may still see shard leases (scopes a `campaign` names): they are
/// listed, without the coordinator's part.
fn render_list(answer: &ShardsResponse) -> String {
    let mut out = String::new();
    let local = answer.local;
    if answer.shards.is_empty() {
        let coordinator = answer.status.as_ref().map(|s| {
            let c = s
                .coordinator_node
                .map_or_else(|| "unknown".to_owned(), |c| format!("node {c}"));
            (s.configured, c)
        });
        out.push_str(&match (coordinator, answer.complete) {
            (None, true) => format!(
                "node {local}: the lease table holds no shard lease (it has no [shards] \
                 section)\n"
            ),
            (None, false) => format!(
                "node {local}: it holds no shard lease (it has no [shards] section and is not a \
                 voter: ask a voter for every owner)\n"
            ),
            (Some((configured, coordinator)), true) => format!(
                "node {local}: none of the {configured} configured shards is owned yet \
                 (coordinator: {coordinator})\n"
            ),
            (Some((configured, _)), false) => format!(
                "node {local}: it owns none of the {configured} configured shards (it is not a \
                 voter: ask a voter for every owner)\n"
            ),
        });
    } else {
        out.push_str(&format!(
            "{:<32} {:>8} {:>10} {:>12}\n",
            "SHARD", "OWNER", "TOKEN", "EXPIRES_MS"
        ));
        for s in &answer.shards {
            out.push_str(&format!(
                "{:<32} {:>8} {:>10} {:>12}\n",
                s.scope, s.owner, s.token, s.expires_in_ms
            ));
        }
    }
    let Some(status) = &answer.status else {
        if !answer.shards.is_empty() {
            out.push_str(&format!(
                "\nnode {local} has no [shards] section: these shard leases are campaigned for, \
                 not placed by a coordinator\n"
            ));
        }
        return out;
    };
    match &status.coordinator {
        Some(c) => {
            out.push_str(&format!(
                "\nmoves in flight (coordinator node {}, term {}): {}\n",
                answer.local,
                c.term,
                c.in_flight.len()
            ));
            for m in &c.in_flight {
                let from = m
                    .from
                    .map_or_else(|| "(acquire)".to_owned(), |f| format!("node {f}"));
                out.push_str(&format!(
                    "  {:<30} {from} -> node {}  ({:.1} s)\n",
                    m.shard,
                    m.to,
                    m.age_ms as f64 / 1e3
                ));
            }
        }
        None => out.push_str(&format!(
            "\nmoves in flight: unknown here (the coordinator is {})\n",
            status
                .coordinator_node
                .map_or_else(|| "unknown".to_owned(), |c| format!("node {c}"))
        )),
    }
    out.push_str(&render_nodes(answer, status));
    out
}

/// A line per node (shards owned, its role in the pool) and the summary line.
fn render_nodes(answer: &ShardsResponse, status: &ShardStatus) -> String {
    let mut owned: BTreeMap<u64, usize> = BTreeMap::new();
    for s in &answer.shards {
        *owned.entry(s.owner).or_default() += 1;
    }
    let coordinator = status.coordinator.as_ref();
    if let Some(c) = coordinator {
        for m in &c.members {
            owned.entry(*m).or_default();
        }
    }
    if owned.is_empty() {
        return String::new();
    }
    let mut out = format!("\n{:<8} {:>7}  {}\n", "NODE", "SHARDS", "STATE");
    for (node, count) in &owned {
        let state = match coordinator {
            Some(c) if c.draining.contains(node) => "draining",
            Some(c) if c.members.contains(node) => "member",
            Some(_) => "not in the pool (down or gone)",
            None => "-",
        };
        out.push_str(&format!("{node:<8} {count:>7}  {state}\n"));
    }
    let total: usize = owned.values().sum();
    let mut summary = format!("{total} of {} shards owned", status.configured);
    if let Some(c) = coordinator {
        if let Some((lower, upper)) = c.bounds {
            summary.push_str(&format!("; bound {lower}..={upper} per member"));
        }
        summary.push_str(&format!(
            "; imbalance {}; {}",
            c.imbalance,
            if c.idle {
                "balanced, nothing under way"
            } else {
                "moving"
            }
        ));
    }
    if !answer.complete {
        summary.push_str(&format!(
            " (node {} is not a voter: only the shards it owns)",
            answer.local
        ));
    }
    out.push_str(&summary);
    out.push('\n');
    out
}

/// `shards rebalance [--dry-run]`: the plan, from the coordinator.
pub(crate) fn rebalance(node: &NodeArgs, dry_run: bool, json: bool) -> Result<(), String> {
    let addr = node.addr();
    let request = RebalanceRequest { dry_run };
    let (body, _) = with_client(&node.connect, false, async |client| {
        let response = client
            .post_json(addr, "/control/rebalance", &request)
            .await
            .map_err(|e| e.to_string())?;
        if response.status != 421 {
            return ok_body(addr, response);
        }
        let misdirected: MisdirectedBody = serde_json::from_str(&response.body)
            .map_err(|e| format!("{addr}: unexpected answer: {e}"))?;
        let Some(leader) = misdirected.leader_control else {
            return Err(format!(
                "{addr}: {} (its control address is unknown here: ask it with --addr)",
                misdirected.error
            ));
        };
        eprintln!("meshctl: {addr} does not coordinate shards: asking the Raft leader at {leader}");
        let response = client
            .post_json(&leader, "/control/rebalance", &request)
            .await
            .map_err(|e| e.to_string())?;
        ok_body(&leader, response)
    })?;
    if json {
        println!("{}", body.trim_end());
        return Ok(());
    }
    let plan: RebalanceResponse =
        serde_json::from_str(&body).map_err(|e| format!("unexpected answer: {e}"))?;
    print!("{}", render_plan(&plan));
    Ok(())
}

fn render_plan(plan: &RebalanceResponse) -> String {
    let mut out = format!(
        "plan of the coordinator on node {} (term {}): {} move{}, bound {}..={} shards per \
         member\n",
        plan.node,
        plan.term,
        plan.moves.len(),
        if plan.moves.len() == 1 { "" } else { "s" },
        plan.lower,
        plan.upper
    );
    if plan.moves.is_empty() {
        out.push_str("nothing to move: every shard is owned, every member within the bound\n");
        return out;
    }
    out.push_str(&format!(
        "\n{:<32} {:>6} {:>6}  {}\n",
        "SHARD", "FROM", "TO", "REASON"
    ));
    for m in &plan.moves {
        let from = m.from.map_or_else(|| "-".to_owned(), |f| f.to_string());
        out.push_str(&format!(
            "{:<32} {from:>6} {:>6}  {}\n",
            m.shard, m.to, m.reason
        ));
    }
    out.push_str(if plan.dry_run {
        "\ndry run: nothing was moved\n"
    } else {
        "\nthe coordinator carries it out: follow it with `meshctl shards watch`\n"
    });
    out
}

/// What `shards watch` keeps: entries about shards of these namespaces (all when empty).
pub(crate) fn namespace_keeps(namespaces: &[String], scope: Option<&str>) -> bool {
    if namespaces.is_empty() {
        return true;
    }
    scope
        .and_then(|s| s.parse::<ShardId>().ok())
        .is_some_and(|shard| namespaces.iter().any(|n| n == shard.namespace()))
}

/// What `drain --wait --json` prints once the node is drained.
#[derive(Debug, Serialize)]
struct DrainedJson {
    node: u64,
    released: Vec<String>,
    drained: bool,
    waited_ms: u64,
}

/// What a drained node still holds: leases, and shards among them (or still asked for).
struct Holding {
    leases: usize,
    shards: usize,
    drained: bool,
}

impl Holding {
    fn of(view: &LeadershipView) -> Self {
        let member = view.shards.as_ref().and_then(|s| s.member.as_ref());
        Self {
            leases: view.held.len(),
            shards: member.map_or(0, |m| m.held + m.wanted),
            // A node without [shards] is drained once it holds no lease.
            drained: view.held.is_empty() && member.is_none_or(|m| m.drained),
        }
    }
}

/// `drain [NODE] [--wait]`: drains the node at --addr, or member NODE (found through it), and
/// with --wait reports when it holds nothing, or fails after `timeout`.
pub(crate) fn drain(
    node: &NodeArgs,
    target: Option<u64>,
    wait: Option<Duration>,
    json: bool,
) -> Result<(), String> {
    let addr = node.addr();
    let (outcome, _) = with_client(&node.connect, false, async |client| {
        let target_addr = match target {
            Some(id) => control_of(client, addr, id).await?,
            None => addr.to_owned(),
        };
        let response = client
            .request(
                http::Method::POST,
                &target_addr,
                "/control/drain",
                bytes::Bytes::new(),
            )
            .await
            .map_err(|e| e.to_string())?;
        let body = ok_body(&target_addr, response)?;
        let Some(limit) = wait else {
            return Ok((body, None));
        };
        let answer: DrainResponse = serde_json::from_str(&body)
            .map_err(|e| format!("{target_addr}: unexpected answer: {e}"))?;
        let started = Instant::now();
        let mut last_line = String::new();
        loop {
            let (view, _): (LeadershipView, _) =
                get_json(client, &target_addr, "/meshkit/leaders").await?;
            let holding = Holding::of(&view);
            if holding.drained {
                return Ok((body, Some((answer, started.elapsed()))));
            }
            let line = format!(
                "node {}: draining: {} lease{} held ({} shard{} left)",
                answer.node,
                holding.leases,
                if holding.leases == 1 { "" } else { "s" },
                holding.shards,
                if holding.shards == 1 { "" } else { "s" }
            );
            if line != last_line {
                eprintln!("meshctl: {line}");
                last_line = line;
            }
            if started.elapsed() >= limit {
                return Err(format!(
                    "node {} is not drained after {:.0?}: it still holds {} lease(s), {} of \
                     them shards (is the coordinator placing them? `meshctl shards list`)",
                    answer.node, limit, holding.leases, holding.shards
                ));
            }
            tokio::time::sleep(DRAIN_POLL).await;
        }
    })?;
    match outcome {
        (body, None) => super::print_answer(addr, &body, json, |d: DrainResponse| {
            let released = if d.released.is_empty() {
                "it held no lease".to_owned()
            } else {
                format!("released {}", d.released.join(", "))
            };
            format!(
                "node {} is drained: {released}; it contends for none until `meshctl resume`",
                d.node
            )
        }),
        (_, Some((answer, waited))) => {
            if json {
                let line = DrainedJson {
                    node: answer.node,
                    released: answer.released,
                    drained: true,
                    waited_ms: u64::try_from(waited.as_millis()).unwrap_or(u64::MAX),
                };
                println!(
                    "{}",
                    serde_json::to_string(&line).map_err(|e| e.to_string())?
                );
            } else {
                println!(
                    "node {} is drained: it holds no lease and no shard (after {:.1} s); it \
                     takes none until `meshctl resume`",
                    answer.node,
                    waited.as_secs_f64()
                );
            }
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use meshkit_node::api::json::ShardOwner;
    use meshkit_node::api::json::{CoordinatorStatus, ShardMemberStatus};

    use super::*;

    fn owner(id: u32, owner: u64) -> ShardOwner {
        ShardOwner {
            scope: format!("shard/orders/{id}"),
            owner,
            token: 10 + u64::from(id),
            expires_in_ms: 2_000,
        }
    }

    #[test]
    fn a_node_without_shards_says_so() {
        let answer = ShardsResponse {
            local: 3,
            complete: true,
            shards: Vec::new(),
            status: None,
        };
        assert_eq!(
            render_list(&answer),
            "node 3: the lease table holds no shard lease (it has no [shards] section)\n"
        );
        // Shard leases a campaign names are still listed.
        let answer = ShardsResponse {
            shards: vec![owner(0, 2)],
            ..answer
        };
        let text = render_list(&answer);
        assert!(text.starts_with("SHARD "), "{text}");
        assert!(text.contains("shard/orders/0"), "{text}");
        assert!(
            text.ends_with(
                "node 3 has no [shards] section: these shard leases are campaigned \
                 for, not placed by a coordinator\n"
            ),
            "{text}"
        );
    }

    #[test]
    fn the_coordinators_view_lists_moves_and_a_line_per_node() {
        let answer = ShardsResponse {
            local: 1,
            complete: true,
            shards: vec![owner(0, 1), owner(1, 1), owner(2, 2)],
            status: Some(ShardStatus {
                configured: 4,
                coordinator_node: Some(1),
                member: Some(ShardMemberStatus {
                    role: "member".to_owned(),
                    held: 2,
                    wanted: 0,
                    drained: false,
                }),
                coordinator: Some(CoordinatorStatus {
                    term: 7,
                    members: vec![1, 2, 3],
                    draining: vec![2],
                    owned: BTreeMap::new(),
                    unowned: 1,
                    bounds: Some((1, 2)),
                    imbalance: 2,
                    in_flight: vec![meshkit_node::api::json::MoveInFlight {
                        shard: "shard/orders/3".to_owned(),
                        from: None,
                        to: 3,
                        age_ms: 1_500,
                    }],
                    idle: false,
                }),
                counters: None,
            }),
        };
        let text = render_list(&answer);
        assert!(
            text.contains("moves in flight (coordinator node 1, term 7): 1\n"),
            "{text}"
        );
        assert!(text.contains("shard/orders/3"), "{text}");
        assert!(text.contains("(acquire) -> node 3  (1.5 s)"), "{text}");
        assert!(text.contains("\n2              1  draining\n"), "{text}");
        assert!(text.contains("\n3              0  member\n"), "{text}");
        assert!(
            text.ends_with("3 of 4 shards owned; bound 1..=2 per member; imbalance 2; moving\n"),
            "{text}"
        );
    }

    #[test]
    fn watch_filters_by_namespace() {
        let ns = vec!["orders".to_owned()];
        assert!(namespace_keeps(&ns, Some("shard/orders/1")));
        assert!(!namespace_keeps(&ns, Some("shard/users/1")));
        assert!(!namespace_keeps(&ns, None));
        assert!(namespace_keeps(&[], Some("shard/users/1")));
    }
}
