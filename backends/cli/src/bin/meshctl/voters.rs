//! `meshctl voters add | remove | replace`: changes of the Raft voter set, one at a time, as
//! `etcdctl member add/remove` are.
//!
//! Each change is a `POST /control/voters/add` or `/remove` to the Raft leader: the node at
//! `--addr` answers 421 naming the leader (and its control address) if it does not lead, and
//! meshctl asks there, at most [`MAX_HOPS`] times. Once the leader proposed the change, meshctl
//! polls its `GET /meshkit/leaders` until the voter set it reports is the proposed one, no
//! change is pending, and (for an add) the new voter's log reaches the commit index the leader
//! had when the change applied: the new voter has caught up and votes. A progress line goes to
//! stderr every second; the wait is bounded by `--wait`.
//!
//! `replace OLD NEW` is two such changes: when OLD is alive, add NEW first, then remove OLD
//! (the group never has fewer live voters than before); when OLD is not alive, remove it
//! first (adding NEW to a group with a dead voter would need a larger quorum of live voters
//! while NEW catches up). The leader checks each step against the quorum of live voters.

use std::time::{Duration, Instant};

use meshkit_node::api::json::LeadershipView;
use meshkit_node::api::json::{VoterChangeResponse, VoterRedirect, VoterRequest};
use meshkit_node::client::Client;
use serde::Serialize;

use super::{NodeArgs, PeerFilter, fetch_peers, ok_body, with_client};

/// Redirects followed (a non-leader names the leader; a leader asked to remove itself names the
/// voter it hands leadership to, which may need a moment to take it).
pub(crate) const MAX_HOPS: usize = 20;
/// Pause between two asks after a redirect to a node that does not lead yet, and between two
/// polls of the leader while a change commits.
const POLL_INTERVAL: Duration = Duration::from_millis(250);

/// Which change.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum Kind {
    /// `POST /control/voters/add`.
    Add,
    /// `POST /control/voters/remove`.
    Remove,
}

impl Kind {
    fn path(self) -> &'static str {
        match self {
            Self::Add => "/control/voters/add",
            Self::Remove => "/control/voters/remove",
        }
    }

    fn verb(self) -> &'static str {
        match self {
            Self::Add => "adding",
            Self::Remove => "removing",
        }
    }
}

/// One committed change, as `--json` prints it.
#[derive(Debug, Serialize)]
pub(crate) struct Step {
    /// `add` or `remove`.
    pub change: Kind,
    /// The node added or removed.
    pub node: u64,
    /// The leader that proposed it.
    pub leader: u64,
    /// The voters before.
    pub before: Vec<u64>,
    /// The voters after, as the leader applied them.
    pub voters: Vec<u64>,
    /// Milliseconds from the ask to the change applied (and, for an add, caught up).
    pub elapsed_ms: u64,
}

/// What `voters add|remove|replace --json` prints.
#[derive(Debug, Serialize)]
pub(crate) struct Answer {
    /// Each change, in order.
    pub steps: Vec<Step>,
    /// The voter set at the end.
    pub voters: Vec<u64>,
    /// Its quorum.
    pub quorum: usize,
}

/// Runs `changes` (a replace is ordered once the member states are read) and prints what
/// happened.
pub(crate) fn run(
    node: &NodeArgs,
    changes: Changes,
    wait: Duration,
    json: bool,
) -> Result<(), String> {
    let start_addr = node.addr().to_owned();
    let (answer, _) = with_client(&node.connect, false, async |client| {
        let plan = match changes {
            Changes::One(kind, id) => vec![(kind, id)],
            Changes::Replace { old, new } => {
                let peers = fetch_peers(client, &start_addr, &PeerFilter::default()).await?;
                let old_alive = peers
                    .peers
                    .iter()
                    .any(|p| p.id == old && p.state == "alive");
                if old_alive {
                    vec![(Kind::Add, new), (Kind::Remove, old)]
                } else {
                    if !json {
                        eprintln!(
                            "node {old} is not alive: removing it first, then adding node {new}"
                        );
                    }
                    vec![(Kind::Remove, old), (Kind::Add, new)]
                }
            }
        };
        let total = plan.len();
        let mut steps = Vec::new();
        let mut addr = start_addr.clone();
        for (i, (kind, id)) in plan.into_iter().enumerate() {
            if total > 1 && !json {
                eprintln!("step {}/{total}: {} node {id}", i + 1, kind.verb());
            }
            let (step, leader_addr) =
                change(client, &addr, kind, id, wait, json)
                    .await
                    .map_err(|e| match (i, &steps[..]) {
                        (0, _) => e,
                        (_, done) => format!(
                            "{e}\n(step {} of {total} failed; done before it: {})",
                            i + 1,
                            describe(done)
                        ),
                    })?;
            if total > 1 && !json {
                eprintln!("step {}/{total} done: voters {}", i + 1, list(&step.voters));
            }
            addr = leader_addr;
            steps.push(step);
        }
        let voters = steps.last().map(|s| s.voters.clone()).unwrap_or_default();
        Ok(Answer {
            quorum: voters.len() / 2 + 1,
            voters,
            steps,
        })
    })?;
    if json {
        println!(
            "{}",
            serde_json::to_string(&answer).map_err(|e| e.to_string())?
        );
        return Ok(());
    }
    for step in &answer.steps {
        let done = match step.change {
            Kind::Add => "added (caught up, votes)",
            Kind::Remove => "removed",
        };
        println!(
            "node {} {done} in {:.1} s, proposed by leader {}: voters {} -> {}",
            step.node,
            step.elapsed_ms as f64 / 1000.0,
            step.leader,
            list(&step.before),
            list(&step.voters)
        );
    }
    println!(
        "voters now {} (quorum {} of {})",
        list(&answer.voters),
        answer.quorum,
        answer.voters.len()
    );
    Ok(())
}

/// What to change.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Changes {
    /// One add or remove.
    One(Kind, u64),
    /// Add `new` and remove `old`, in the order that keeps the quorum.
    Replace {
        /// The voter to replace.
        old: u64,
        /// The joining voter that takes its place.
        new: u64,
    },
}

fn list(ids: &[u64]) -> String {
    ids.iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(", ")
}

fn describe(steps: &[Step]) -> String {
    steps
        .iter()
        .map(|s| {
            format!(
                "{} {} (voters {})",
                s.change.verb(),
                s.node,
                list(&s.voters)
            )
        })
        .collect::<Vec<_>>()
        .join("; ")
}

/// One change: asks the leader (following redirects), then waits for it to apply. Returns the
/// step and the leader's control address.
async fn change(
    client: &Client,
    addr: &str,
    kind: Kind,
    id: u64,
    wait: Duration,
    json: bool,
) -> Result<(Step, String), String> {
    let started = Instant::now();
    let deadline = started + wait;
    let mut addr = addr.to_owned();
    let mut proposed = None;
    for _ in 0..MAX_HOPS {
        let response = client
            .post_json(&addr, kind.path(), &VoterRequest { node: id })
            .await
            .map_err(|e| format!("{addr}: {e}"))?;
        if response.status != 421 {
            let body = ok_body(&addr, response)?;
            let answer: VoterChangeResponse = serde_json::from_str(&body)
                .map_err(|e| format!("{addr}: unexpected answer: {e}"))?;
            proposed = Some(answer);
            break;
        }
        let redirect: VoterRedirect = serde_json::from_str(&response.body)
            .map_err(|e| format!("{addr}: HTTP 421: {}: {e}", response.body.trim()))?;
        let next = redirect
            .leader_control
            .clone()
            .or_else(|| redirect.voters_control.first().cloned())
            .ok_or_else(|| format!("{addr}: {} (and no control address to ask)", redirect.error))?;
        if !json {
            eprintln!("{addr}: {}; asking {next}", redirect.error);
        }
        if Instant::now() >= deadline {
            return Err(format!(
                "{addr}: {} (gave up after {wait:?})",
                redirect.error
            ));
        }
        addr = next;
        // The node named may need a moment to take leadership (a hand-over).
        tokio::time::sleep(POLL_INTERVAL).await;
    }
    let proposed = proposed.ok_or_else(|| format!("no leader found in {MAX_HOPS} redirects"))?;
    // Wait for the leader to apply it (and an added voter to catch up).
    let mut last_line = Instant::now();
    let mut catch_up_to = None;
    loop {
        let view = leaders(client, &addr).await?;
        let raft = view
            .raft
            .as_ref()
            .ok_or_else(|| format!("{addr}: the leader stopped being a voter"))?;
        let applied = raft.voters == proposed.proposed && !raft.change_pending;
        let mut caught_up = true;
        if applied && kind == Kind::Add {
            let target = *catch_up_to.get_or_insert(raft.commit_index);
            // On the leader, progress names every voter; a node that no longer leads reports
            // none, and its own applied voter set is the best it can say.
            caught_up = raft.progress.is_empty()
                || raft
                    .progress
                    .iter()
                    .any(|p| p.id == id && p.matched >= target);
        }
        if applied && caught_up {
            let step = Step {
                change: kind,
                node: id,
                leader: proposed.leader,
                before: proposed.voters,
                voters: raft.voters.clone(),
                elapsed_ms: u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX),
            };
            return Ok((step, addr));
        }
        if Instant::now() >= deadline {
            return Err(format!(
                "{} node {id} was proposed by leader {} but not {} within {wait:?}: voters {} \
                 (proposed {}), change pending: {}",
                kind.verb(),
                proposed.leader,
                if applied { "caught up" } else { "applied" },
                list(&raft.voters),
                list(&proposed.proposed),
                raft.change_pending
            ));
        }
        if !json && last_line.elapsed() >= Duration::from_secs(1) {
            last_line = Instant::now();
            let what = if applied {
                let matched = raft.progress.iter().find(|p| p.id == id).map(|p| p.matched);
                format!(
                    "applied; node {id} catching up (log at {} of {})",
                    matched.map_or("?".to_owned(), |m| m.to_string()),
                    catch_up_to.unwrap_or(raft.commit_index)
                )
            } else {
                format!(
                    "waiting for the change to commit (voters {})",
                    list(&raft.voters)
                )
            };
            eprintln!(
                "{} node {id}: {what}, {:.1} s",
                kind.verb(),
                started.elapsed().as_secs_f64()
            );
        }
        tokio::time::sleep(POLL_INTERVAL).await;
    }
}

async fn leaders(client: &Client, addr: &str) -> Result<LeadershipView, String> {
    let response = client
        .get(addr, "/meshkit/leaders")
        .await
        .map_err(|e| format!("{addr}: {e}"))?;
    let body = ok_body(addr, response)?;
    serde_json::from_str(&body).map_err(|e| format!("{addr}: unexpected answer: {e}"))
}
