//! `meshctl health`: the whole mesh checked from one member, as `etcdctl endpoint health
//! --cluster` checks etcd.
//!
//! The member at `--addr` lists the mesh; every live member is then asked directly, at the
//! `control` address it publishes in its metadata, for `/readyz`, `/meshkit/leaders` and the
//! certificate expiry in `/metrics`. Asking each member itself, not trusting one node's view of
//! the others, is the point: a member can be `alive` in gossip while its control API is down or
//! it is not ready.

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime};

use meshkit_node::api::json::LeadershipView;
use meshkit_node::api::json::PeerJson;
use meshkit_node::api::json::Readiness;
use meshkit_node::client::{Client, Response};
use meshkit_node::metrics::catalogue::TRANSPORT_CERT_EXPIRY;
use serde::Serialize;

use super::{NodeArgs, PeerFilter, fetch_peers, ok_body, with_client};

/// A certificate closer than this to its end makes the mesh unhealthy: renew it now.
const CERT_WARNING: Duration = Duration::from_secs(24 * 3600);
/// Members asked at once.
const CONCURRENT_MEMBERS: usize = 32;
/// The metric a node exports its certificate's end under (Unix seconds).
const CERT_EXPIRY_METRIC: &str = TRANSPORT_CERT_EXPIRY.name;

/// What `meshctl health` found, member by member, and what is wrong.
#[derive(Debug, Serialize)]
pub(crate) struct Report {
    /// The member the mesh was listed from.
    pub(crate) asked: u64,
    /// Every member in the list but those that left.
    pub(crate) members: Vec<MemberHealth>,
    /// The Raft voter group, if the mesh has one.
    pub(crate) raft: Option<RaftHealth>,
    /// Lease holders, from a voter's applied table.
    pub(crate) leases: Vec<LeaseHolder>,
    /// Everything that makes the mesh unhealthy; empty when healthy.
    pub(crate) problems: Vec<String>,
}

/// One member, as it answered for itself.
#[derive(Debug, Default, Serialize)]
pub(crate) struct MemberHealth {
    /// Its node id.
    pub(crate) id: u64,
    /// Its state in the listing member's view.
    pub(crate) state: String,
    /// The control address it publishes.
    pub(crate) control: Option<String>,
    /// Whether its control API answered.
    pub(crate) reachable: bool,
    /// Its `/readyz` verdict, and why not.
    pub(crate) ready: Option<bool>,
    /// Why it is not ready.
    pub(crate) reasons: Vec<String>,
    /// Whether it is a Raft voter.
    pub(crate) voter: bool,
    /// The Raft leader it knows (voters).
    pub(crate) raft_leader: Option<u64>,
    /// Its Raft term (voters).
    pub(crate) raft_term: Option<u64>,
    /// Leases it holds.
    pub(crate) held: Vec<String>,
    /// Seconds until its certificate ends (negative: ended).
    pub(crate) cert_expires_in_s: Option<i64>,
}

/// The voter group.
#[derive(Debug, Serialize)]
pub(crate) struct RaftHealth {
    /// The voters.
    pub(crate) voters: Vec<u64>,
    /// The leader most reachable voters agree on, and its term.
    pub(crate) leader: Option<u64>,
    /// Its term.
    pub(crate) term: Option<u64>,
    /// Reachable voters that name that leader at that term.
    pub(crate) agreeing: usize,
    /// Voters needed for a quorum.
    pub(crate) quorum: usize,
}

/// One lease.
#[derive(Debug, Serialize)]
pub(crate) struct LeaseHolder {
    /// The scope.
    pub(crate) scope: String,
    /// Its holder.
    pub(crate) holder: u64,
    /// Its fencing token.
    pub(crate) token: u64,
}

/// Runs the check; prints the table (or JSON) and fails when the mesh is unhealthy.
pub(crate) fn run(node: &NodeArgs, json: bool) -> Result<(), String> {
    let addr = node.addr();
    let (report, _) = with_client(&node.connect, false, async |client| {
        let peers = fetch_peers(client, addr, &PeerFilter::default()).await?;
        let listed: Vec<&PeerJson> = peers.peers.iter().filter(|p| p.state != "left").collect();
        let mut members = Vec::new();
        let mut views = BTreeMap::new();
        for chunk in listed.chunks(CONCURRENT_MEMBERS) {
            let asked = futures_util::future::join_all(chunk.iter().map(|p| ask(client, p))).await;
            for (member, view) in asked {
                if let Some(view) = view {
                    views.insert(member.id, view);
                }
                members.push(member);
            }
        }
        Ok(assess(peers.local, members, &views, SystemTime::now()))
    })?;
    crate::print_report(&report, json, render)?;
    if report.problems.is_empty() {
        Ok(())
    } else {
        Err(format!(
            "the mesh is unhealthy: {} problem(s)",
            report.problems.len()
        ))
    }
}

/// Asks one member for itself. Members not live (dead, suspect) are asked too: a suspect one
/// may answer, and a dead voter must show as unreachable.
async fn ask(client: &Client, peer: &PeerJson) -> (MemberHealth, Option<LeadershipView>) {
    let mut member = MemberHealth {
        id: peer.id,
        state: peer.state.clone(),
        control: peer.metadata.get("control").cloned(),
        ..MemberHealth::default()
    };
    let Some(control) = member.control.clone() else {
        return (member, None);
    };
    let get = async |path: &str| -> Option<Response> { client.get(&control, path).await.ok() };
    // A member that does not answer /readyz is reported as such; asking it twice more would
    // only add two request timeouts per dead member to the whole check.
    let Some(readyz) = get("/readyz").await else {
        return (member, None);
    };
    member.reachable = true;
    match serde_json::from_str::<Readiness>(&readyz.body) {
        Ok(r) => {
            member.ready = Some(r.ready && readyz.status == 200);
            member.reasons = r.reasons;
        }
        Err(_) => {
            member.ready = Some(false);
            member.reasons = vec![format!("/readyz answered HTTP {}", readyz.status)];
        }
    }
    let view = match get("/meshkit/leaders").await {
        Some(r) => ok_body(&control, r)
            .ok()
            .and_then(|body| serde_json::from_str::<LeadershipView>(&body).ok()),
        None => None,
    };
    if let Some(view) = &view {
        member.voter = view.raft.is_some();
        member.raft_leader = view.raft.as_ref().and_then(|r| r.leader);
        member.raft_term = view.raft.as_ref().map(|r| r.term);
        member.held = view.held.iter().map(|h| h.scope.clone()).collect();
    }
    if let Some(metrics) = get("/metrics").await {
        member.cert_expires_in_s = metrics
            .body
            .lines()
            .find_map(|l| {
                // The exact sample name (no labels), not a prefix of another family's.
                let (name, value) = l.split_once(' ')?;
                (name == CERT_EXPIRY_METRIC)
                    .then(|| value.trim().parse::<f64>().ok())
                    .flatten()
            })
            .map(|end| end as i64);
    }
    (member, view)
}

/// The verdict: what is wrong with the members, the voters and the certificates. Pure, so the
/// rules are tested without a mesh.
fn assess(
    asked: u64,
    mut members: Vec<MemberHealth>,
    views: &BTreeMap<u64, LeadershipView>,
    now: SystemTime,
) -> Report {
    let now_s = now
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64);
    let mut problems = Vec::new();
    // The voter set of the most advanced Raft state a voter reported (during a voter change the
    // members' sets differ, and their union would overstate the quorum); without a voter's
    // answer, the union of the sets the members talk to.
    let newest = views
        .values()
        .filter_map(|v| v.raft.as_ref())
        .max_by_key(|r| (r.term, r.applied_index));
    let voters: Vec<u64> = match newest {
        Some(raft) => {
            let mut voters = raft.voters.clone();
            voters.sort_unstable();
            voters
        }
        None => {
            let mut all: Vec<u64> = views.values().flat_map(|v| v.voters.clone()).collect();
            all.sort_unstable();
            all.dedup();
            all
        }
    };
    for m in &mut members {
        if let Some(end) = m.cert_expires_in_s {
            // A member's /metrics may say anything: no overflow on an absurd expiry.
            m.cert_expires_in_s = Some(end.saturating_sub(now_s));
        }
        let voter = voters.contains(&m.id);
        m.voter |= voter;
        let live = m.state == "alive" || m.state == "suspect";
        if !live {
            if voter {
                problems.push(format!("voter {} is {}", m.id, m.state));
            }
            continue;
        }
        if m.state == "suspect" {
            problems.push(format!("member {} is suspect", m.id));
        }
        if m.control.is_none() {
            problems.push(format!(
                "member {} publishes no control address: it cannot be checked",
                m.id
            ));
        } else if !m.reachable {
            problems.push(format!("member {}'s control API does not answer", m.id));
        } else if m.ready == Some(false) {
            problems.push(format!(
                "member {} is not ready: {}",
                m.id,
                m.reasons.join("; ")
            ));
        }
        if let Some(left) = m.cert_expires_in_s
            && left < CERT_WARNING.as_secs() as i64
        {
            problems.push(if left <= 0 {
                format!("member {}'s certificate has expired", m.id)
            } else {
                format!(
                    "member {}'s certificate expires in {} h: renew it",
                    m.id,
                    left / 3600
                )
            });
        }
    }
    let raft = (!voters.is_empty()).then(|| {
        let mut votes: BTreeMap<(u64, u64), usize> = BTreeMap::new();
        for m in members.iter().filter(|m| voters.contains(&m.id)) {
            if let (Some(leader), Some(term)) = (m.raft_leader, m.raft_term) {
                *votes.entry((leader, term)).or_default() += 1;
            }
        }
        let best = votes.iter().max_by_key(|(_, n)| **n);
        let raft = RaftHealth {
            voters: voters.clone(),
            leader: best.map(|((l, _), _)| *l),
            term: best.map(|((_, t), _)| *t),
            agreeing: best.map_or(0, |(_, n)| *n),
            quorum: voters.len() / 2 + 1,
        };
        if raft.leader.is_none() {
            problems.push("no voter knows a Raft leader".to_owned());
        } else if raft.agreeing < raft.quorum {
            problems.push(format!(
                "only {} of {} voters agree on the Raft leader (quorum {})",
                raft.agreeing,
                voters.len(),
                raft.quorum
            ));
        }
        raft
    });
    // The applied table of the leader if it answered, else of any voter.
    let table = raft
        .as_ref()
        .and_then(|r| r.leader)
        .and_then(|l| views.get(&l))
        .filter(|v| v.raft.is_some())
        .or_else(|| views.values().find(|v| v.raft.is_some()));
    let leases = table.map_or_else(Vec::new, |v| {
        v.table
            .iter()
            .map(|l| LeaseHolder {
                scope: l.scope.clone(),
                holder: l.holder,
                token: l.token,
            })
            .collect()
    });
    Report {
        asked,
        members,
        raft,
        leases,
        problems,
    }
}

/// The table, the voter group, the leases and the verdict.
fn render(report: &Report) -> String {
    let mut out = format!(
        "{:<6} {:<8} {:<6} {:<16} {:<24} {:>9}  {}\n",
        "NODE", "STATE", "READY", "RAFT", "LEASES", "CERT", "CONTROL"
    );
    for m in &report.members {
        let id = if m.id == report.asked {
            format!("{}*", m.id)
        } else {
            m.id.to_string()
        };
        let ready = match (m.reachable, m.ready) {
            (false, _) if m.control.is_some() && m.state != "dead" => "DOWN",
            (_, Some(true)) => "yes",
            (_, Some(false)) => "NO",
            _ => "-",
        };
        let raft = match (m.voter, m.raft_leader, m.raft_term) {
            (true, Some(l), Some(t)) if l == m.id => format!("leader t{t}"),
            (true, Some(l), Some(t)) => format!("follower t{t} ->{l}"),
            (true, None, Some(t)) => format!("no leader t{t}"),
            (true, _, None) => "voter".to_owned(),
            (false, ..) => "-".to_owned(),
        };
        let held = if m.held.is_empty() {
            "-".to_owned()
        } else {
            m.held.join(",")
        };
        let cert = m.cert_expires_in_s.map_or_else(
            || "-".to_owned(),
            |s| {
                if s <= 0 {
                    "EXPIRED".to_owned()
                } else if s < 2 * 86_400 {
                    format!("{}h", s / 3600)
                } else {
                    format!("{}d", s / 86_400)
                }
            },
        );
        out.push_str(&format!(
            "{id:<6} {:<8} {ready:<6} {raft:<16} {held:<24} {cert:>9}  {}\n",
            m.state,
            m.control.as_deref().unwrap_or("-")
        ));
    }
    if let Some(r) = &report.raft {
        match (r.leader, r.term) {
            (Some(l), Some(t)) => out.push_str(&format!(
                "\nraft: leader node {l} at term {t}; {} of {} voters agree (quorum {})\n",
                r.agreeing,
                r.voters.len(),
                r.quorum
            )),
            _ => out.push_str(&format!(
                "\nraft: no leader known among voters {:?}\n",
                r.voters
            )),
        }
    }
    for l in &report.leases {
        out.push_str(&format!(
            "lease: {} held by node {} (token {})\n",
            l.scope, l.holder, l.token
        ));
    }
    if report.problems.is_empty() {
        let ready = report
            .members
            .iter()
            .filter(|m| m.ready == Some(true))
            .count();
        out.push_str(&format!(
            "\nhealthy: {} members listed, {ready} ready\n",
            report.members.len()
        ));
    } else {
        out.push_str("\nUNHEALTHY:\n");
        for p in &report.problems {
            out.push_str(&format!("  - {p}\n"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use meshkit_node::api::json::RaftView;

    fn member(id: u64, leader: Option<u64>, term: u64) -> MemberHealth {
        MemberHealth {
            id,
            state: "alive".to_owned(),
            control: Some(format!("127.0.0.1:810{id}")),
            reachable: true,
            ready: Some(true),
            voter: true,
            raft_leader: leader,
            raft_term: Some(term),
            cert_expires_in_s: Some(2_000_000_000),
            ..MemberHealth::default()
        }
    }

    fn views(voters: &[u64]) -> BTreeMap<u64, LeadershipView> {
        voters
            .iter()
            .map(|&id| {
                let view = LeadershipView {
                    node: id,
                    voters: voters.to_vec(),
                    raft: Some(RaftView {
                        leader: Some(1),
                        term: 2,
                        voters: voters.to_vec(),
                        applied_index: 10,
                        snapshot_index: 0,
                        log_entries: 10,
                        commit_index: 10,
                        change_pending: false,
                        progress: Vec::new(),
                    }),
                    table: Vec::new(),
                    held: Vec::new(),
                    campaign: Vec::new(),
                    last_seq: 0,
                    shards: None,
                };
                (id, view)
            })
            .collect()
    }

    fn now() -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(1_900_000_000)
    }

    #[test]
    fn three_ready_voters_agreeing_on_a_leader_are_healthy() {
        let members = (1..=3).map(|id| member(id, Some(1), 2)).collect();
        let report = assess(1, members, &views(&[1, 2, 3]), now());
        assert_eq!(report.problems, Vec::<String>::new());
        let raft = report.raft.unwrap();
        assert_eq!((raft.leader, raft.agreeing, raft.quorum), (Some(1), 3, 2));
    }

    #[test]
    fn a_dead_voter_an_unready_member_and_a_split_vote_are_problems() {
        let mut dead = member(3, None, 0);
        dead.state = "dead".to_owned();
        dead.reachable = false;
        let mut unready = member(2, Some(2), 3);
        unready.ready = Some(false);
        unready.reasons = vec!["draining".to_owned()];
        let members = vec![member(1, Some(1), 2), unready, dead];
        let report = assess(1, members, &views(&[1, 2, 3]), now());
        assert!(
            report.problems.contains(&"voter 3 is dead".to_owned()),
            "{report:?}"
        );
        assert!(
            report
                .problems
                .iter()
                .any(|p| p.contains("member 2 is not ready: draining"))
        );
        assert!(
            report
                .problems
                .iter()
                .any(|p| p.contains("only 1 of 3 voters agree")),
            "{report:?}"
        );
    }

    #[test]
    fn the_quorum_follows_the_newest_voter_set_not_the_union() {
        // Voter 4 was replaced by voter 3: a lagging member still reports [1, 2, 4].
        let mut views = views(&[1, 2, 3]);
        let stale = views.get_mut(&2).unwrap();
        stale.voters = vec![1, 2, 4];
        let raft = stale.raft.as_mut().unwrap();
        raft.voters = vec![1, 2, 4];
        raft.applied_index = 5;
        let members = (1..=3).map(|id| member(id, Some(1), 2)).collect();
        let report = assess(1, members, &views, now());
        let raft = report.raft.unwrap();
        assert_eq!(raft.voters, vec![1, 2, 3]);
        assert_eq!((raft.agreeing, raft.quorum), (3, 2));
        assert_eq!(report.problems, Vec::<String>::new());
    }

    #[test]
    fn an_unreachable_member_and_a_certificate_about_to_end_are_problems() {
        let mut down = member(2, Some(1), 2);
        down.reachable = false;
        down.ready = None;
        let mut ending = member(3, Some(1), 2);
        ending.cert_expires_in_s = Some(1_900_000_000 + 3600);
        let members = vec![member(1, Some(1), 2), down, ending];
        let report = assess(1, members, &views(&[1, 2, 3]), now());
        assert!(
            report
                .problems
                .iter()
                .any(|p| p.contains("member 2's control API"))
        );
        assert!(report.problems.iter().any(|p| p.contains("expires in 1 h")));
        let text = render(&report);
        assert!(text.contains("UNHEALTHY"), "{text}");
        assert!(text.contains("DOWN"), "{text}");
    }

    /// A member's /metrics is its own word: an expiry far in the past (the most negative
    /// number the parse gives) is an expired certificate, not an overflow.
    #[test]
    fn an_absurd_certificate_expiry_is_expired_not_an_overflow() {
        let mut odd = member(2, Some(1), 2);
        odd.cert_expires_in_s = Some(i64::MIN);
        let members = vec![member(1, Some(1), 2), odd];
        let report = assess(1, members, &views(&[1, 2]), now());
        assert!(
            report
                .problems
                .iter()
                .any(|p| p.contains("member 2's certificate has expired")),
            "{report:?}"
        );
    }
}
