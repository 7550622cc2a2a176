//! Raft voter changes with real `meshkitd` processes and the real `meshctl`: three founding
//! voters and three nodes started as joining voters (`[leadership] join_as_voter = true`), each
//! with its Raft state on disk. `meshctl voters add 4` makes node 4 a voter; after `kill -9` of
//! the Raft leader, the three voters left (node 4 among them) elect a new leader and leases are
//! granted again. With one of three voters dead, removing a live voter and adding one are
//! refused (409, with the numbers); `replace` of the dead voter removes it first, then adds the
//! new one; `replace` of a live voter adds first, then removes. An operate or observe token is
//! refused (403) and audited. Every wait is bounded; every process is killed when the test
//! ends.

mod common;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Command, Output};
use std::time::Duration;

use common::daemon::{Daemon, leaders, start};
use common::{TempDir, client, eventually, write_config_with};
use meshkit_node::client::{Client, Protocols};
use meshkit_node::permission::Permission;

const LIMIT: Duration = Duration::from_secs(30);

/// `[access]` keys (the audit file) and `[leadership]` for node `id`: voters 1-3, every node
/// contending for `global-control`, the Raft state in `raft-<id>`; nodes past 3 join as voters,
/// each listing every node started before it (the voters and voters-to-be of that moment, any
/// of which may lead when it is added: a joining voter takes Raft messages only from those).
fn extra(id: u64) -> String {
    let join = if id > 3 { "join_as_voter = true\n" } else { "" };
    let voters: Vec<String> = (1..id.max(4)).map(|v| v.to_string()).collect();
    let voters = voters.join(", ");
    format!(
        "audit_log = \"audit-{id}.jsonl\"\n\n[leadership]\nvoters = [{voters}]\n\
         campaign = [\"global-control\"]\nttl = \"3s\"\ndata_dir = \"raft-{id}\"\n{join}\n\
         [leadership.raft]\ntick_interval = \"50ms\"\n"
    )
}

fn start_six(dir: &Path) -> BTreeMap<u64, Daemon> {
    let (ca, files) = meshkit_node::certs::write_dev_certs(dir, 6).unwrap();
    let mut daemons: BTreeMap<u64, Daemon> = BTreeMap::new();
    for f in &files {
        let id = f.id.get();
        let seeds: Vec<(u64, SocketAddr)> = daemons
            .get(&1)
            .map(|d| vec![(1, d.gossip)])
            .unwrap_or_default();
        let path = write_config_with(dir, id, &seeds, &f.cert, &f.key, &ca, &extra(id));
        daemons.insert(id, start(&path));
    }
    daemons
}

/// `meshctl args` against `addr` with a token for `scope`, bounded by `--wait` and the
/// request timeouts of meshctl itself.
async fn meshctl(dir: &Path, addr: &str, scope: Permission, args: &[&str]) -> Output {
    let token = common::token(dir, "meshctl-voters", scope);
    let mut command = Command::new(meshkit_testkit::bin("meshctl"));
    command
        .args(args)
        .env("MESHCTL_ADDR", addr)
        .env("MESHCTL_CA", dir.join("ca.pem"))
        .env("MESHCTL_TOKEN", token)
        .env("MESHCTL_STATE", dir.join("meshctl-state.json"))
        .env("MESHCTL_CONFIG", dir.join("no-meshctl.toml"));
    tokio::task::spawn_blocking(move || command.output().expect("meshctl runs"))
        .await
        .expect("meshctl's thread")
}

fn text(output: &Output) -> String {
    format!(
        "exit {:?}\nstdout:\n{}\nstderr:\n{}",
        output.status.code(),
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

/// `(leader, voters)` as daemon `d`'s voter reports them.
async fn raft(client: &Client, d: &Daemon) -> Option<(Option<u64>, Vec<u64>)> {
    let view = leaders(client, d).await?;
    let raft = view.raft?;
    Some((raft.leader, raft.voters))
}

/// Whether every daemon in `ids` reports `voters` and one agreed leader among them.
async fn agreed(
    client: &Client,
    daemons: &BTreeMap<u64, Daemon>,
    ids: &[u64],
    voters: &[u64],
) -> Option<u64> {
    let mut leader = None;
    for id in ids {
        let (l, v) = raft(client, &daemons[id]).await?;
        if v != voters || l.is_none() || (leader.is_some() && leader != l) {
            return None;
        }
        leader = l;
    }
    leader.filter(|l| voters.contains(l))
}

/// The leader every daemon in `ids` agrees on with `voters`, polled until [`LIMIT`]: right
/// after a change, or with leadership moving between voters (a leader whose node holds a lease
/// hands leadership on), one read can catch the daemons between two states.
async fn agreed_within(
    client: &Client,
    daemons: &BTreeMap<u64, Daemon>,
    ids: &[u64],
    voters: &[u64],
) -> Option<u64> {
    let deadline = std::time::Instant::now() + LIMIT;
    loop {
        if let Some(leader) = agreed(client, daemons, ids, voters).await {
            return Some(leader);
        }
        if std::time::Instant::now() >= deadline {
            return None;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Whether every daemon in `ids` lists `node` as `dead` (the leader's quorum check counts
/// only the voters its own membership holds alive, so every node that may lead must see it).
async fn all_see_dead(dir: &Path, daemons: &BTreeMap<u64, Daemon>, ids: &[u64], node: u64) -> bool {
    for id in ids {
        let peers = meshctl(
            dir,
            &daemons[id].control,
            Permission::Observe,
            &["peers", "list", "--json"],
        )
        .await;
        if member_state(&peers, node).is_none_or(|s| s != "dead") {
            return false;
        }
    }
    true
}

/// The holder of `global-control` in daemon `d`'s applied table.
async fn holder(client: &Client, d: &Daemon) -> Option<(u64, u64)> {
    let view = leaders(client, d).await?;
    let lease = view.table.iter().find(|l| l.scope == "global-control")?;
    Some((lease.holder, lease.token))
}

fn member_state(output: &Output, id: u64) -> Option<String> {
    let peers: serde_json::Value = serde_json::from_slice(&output.stdout).ok()?;
    peers["peers"]
        .as_array()?
        .iter()
        .find(|p| p["id"] == id)
        .and_then(|p| p["state"].as_str().map(str::to_owned))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn voters_are_added_removed_and_replaced_through_meshctl() {
    let dir = TempDir::new("voter-changes");
    let mut daemons = start_six(dir.path());
    let client = client(dir.path(), Protocols::H3ThenTcp);
    let c = &client;
    let all: Vec<u64> = (1..=6).collect();
    assert!(
        eventually(LIMIT, || {
            let daemons = &daemons;
            async move { agreed(c, daemons, &[1, 2, 3], &[1, 2, 3]).await.is_some() }
        })
        .await,
        "the founders elect a leader"
    );
    let first = &daemons[&1];
    assert!(
        eventually(LIMIT, || async move { holder(c, first).await.is_some() }).await,
        "global-control is granted"
    );
    // The joining voters have no voter set of their own and never lead.
    for id in 4..=6 {
        let (leader, voters) = raft(c, &daemons[&id])
            .await
            .expect("a joining voter's view");
        assert!(voters.is_empty(), "node {id}: {voters:?}");
        assert_ne!(leader, Some(id));
    }
    let addr1 = daemons[&1].control.clone();
    let listed = meshctl(
        dir.path(),
        &daemons[&4].control,
        Permission::Observe,
        &["voters", "list"],
    )
    .await;
    assert!(
        String::from_utf8_lossy(&listed.stdout).contains("joining voter not added yet"),
        "{}",
        text(&listed)
    );

    // An operate or observe token is refused (403) and the refusal audited.
    for scope in [Permission::Operate, Permission::Observe] {
        let refused = meshctl(dir.path(), &addr1, scope, &["voters", "add", "4"]).await;
        assert!(!refused.status.success(), "{}", text(&refused));
        assert!(
            String::from_utf8_lossy(&refused.stderr).contains("HTTP 403"),
            "{}",
            text(&refused)
        );
    }
    // A node that runs no voter of its own could not be added: none here, so a node that is no
    // member at all is refused instead.
    let unknown = meshctl(
        dir.path(),
        &addr1,
        Permission::Admin,
        &["voters", "add", "9"],
    )
    .await;
    assert!(
        String::from_utf8_lossy(&unknown.stderr).contains("node-9 is not an alive member"),
        "{}",
        text(&unknown)
    );

    // Add node 4 (asked of node 1, whichever node leads): applied, caught up, voting.
    let added = meshctl(
        dir.path(),
        &addr1,
        Permission::Admin,
        &["voters", "add", "4", "--json"],
    )
    .await;
    assert!(added.status.success(), "{}", text(&added));
    let answer: serde_json::Value = serde_json::from_slice(&added.stdout).expect("JSON");
    assert_eq!(
        answer["voters"],
        serde_json::json!([1, 2, 3, 4]),
        "{answer}"
    );
    assert_eq!(answer["quorum"], 3, "{answer}");
    assert_eq!(answer["steps"][0]["change"], "add", "{answer}");
    let leader = eventually(LIMIT, || {
        let daemons = &daemons;
        async move {
            agreed(c, daemons, &[1, 2, 3, 4], &[1, 2, 3, 4])
                .await
                .is_some()
        }
    })
    .await;
    assert!(leader, "every voter, node 4 included, applied the new set");
    // The refusal and the change are in the audit files (the refusal at node 1, the change at
    // whichever node led).
    let audits: String = all
        .iter()
        .filter_map(|id| std::fs::read_to_string(dir.path().join(format!("audit-{id}.jsonl"))).ok())
        .collect();
    let records: Vec<serde_json::Value> = audits
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .filter(|r: &serde_json::Value| r["path"] == "/control/voters/add")
        .collect();
    assert!(
        records
            .iter()
            .filter(|r| r["status"] == 403 && r["required_scope"] == "mesh.admin")
            .count()
            >= 2,
        "{audits}"
    );
    assert!(records.iter().any(|r| r["status"] == 202), "{audits}");

    // kill -9 of the Raft leader: three of four voters are left, and a quorum of four is
    // three, so the group goes on only with node 4's vote.
    let old = agreed_within(c, &daemons, &[1, 2, 3, 4], &[1, 2, 3, 4])
        .await
        .expect("a leader");
    let token_before = {
        let deadline = std::time::Instant::now() + LIMIT;
        loop {
            if let Some((_, token)) = holder(c, &daemons[&4]).await {
                break token;
            }
            assert!(std::time::Instant::now() < deadline, "node 4 has the table");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    };
    daemons.get_mut(&old).expect("the leader").kill();
    let survivors: Vec<u64> = (1..=4).filter(|v| *v != old).collect();
    let new_leader = {
        let mut found = None;
        let deadline = std::time::Instant::now() + LIMIT;
        while std::time::Instant::now() < deadline {
            if let Some(l) = agreed(c, &daemons, &survivors, &[1, 2, 3, 4]).await
                && l != old
            {
                found = Some(l);
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        found.expect("the survivors elect a new leader with node 4's vote")
    };
    // Leases go on: a grant newer than any before the kill (a renewal keeps its token, so
    // acquire a new scope through a survivor's operator lock instead of waiting for a lapse).
    let survivor = &daemons[&survivors[0]].control;
    let locked = meshctl(
        dir.path(),
        survivor,
        Permission::Operate,
        &[
            "lock",
            "lock/voters-test",
            "--ttl",
            "5s",
            "--timeout",
            "20s",
            "--",
            "true",
        ],
    )
    .await;
    assert!(locked.status.success(), "{}", text(&locked));
    let stderr = String::from_utf8_lossy(&locked.stderr);
    let token: u64 = stderr
        .split("fencing token ")
        .nth(1)
        .and_then(|t| t.split(|ch: char| !ch.is_ascii_digit()).next())
        .and_then(|t| t.parse().ok())
        .unwrap_or_else(|| panic!("a fencing token in {stderr}"));
    assert!(token > token_before, "{token} > {token_before}: {stderr}");
    let _ = new_leader;

    // Wait until the others see the killed voter dead.
    let dp = dir.path();
    let dead = eventually(LIMIT, || {
        let (daemons, survivors) = (&daemons, &survivors);
        async move { all_see_dead(dp, daemons, survivors, old).await }
    })
    .await;
    assert!(dead, "node {old} is seen dead");

    // Remove the dead voter: three of three live voters left.
    let removed = meshctl(
        dir.path(),
        survivor,
        Permission::Admin,
        &["voters", "remove", &old.to_string()],
    )
    .await;
    assert!(removed.status.success(), "{}", text(&removed));
    let three: Vec<u64> = survivors.clone();
    assert!(
        String::from_utf8_lossy(&removed.stdout).contains(&format!(
            "voters now {} (quorum 2 of 3)",
            three
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join(", ")
        )),
        "{}",
        text(&removed)
    );

    // Kill a founder that does not lead: one of three voters dead. Removing a live voter now
    // would leave one live voter of two; adding one would leave two of four: both refused.
    let leader_now = agreed_within(c, &daemons, &survivors, &three)
        .await
        .expect("a leader of the three");
    let victim = *three
        .iter()
        .find(|v| **v != leader_now && **v != 4)
        .expect("a founder that does not lead");
    daemons.get_mut(&victim).expect("the victim").kill();
    let live: Vec<u64> = three.iter().copied().filter(|v| *v != victim).collect();
    let seen_dead = eventually(LIMIT, || {
        let (daemons, live) = (&daemons, &live);
        async move { all_see_dead(dp, daemons, live, victim).await }
    })
    .await;
    assert!(seen_dead, "node {victim} is seen dead by every live voter");
    // Either live voter will do: the quorum check comes before anything else, the leader's
    // own removal included.
    let other_live = *live.iter().find(|v| **v != leader_now).unwrap();
    let refused = meshctl(
        dir.path(),
        &daemons[&live[0]].control,
        Permission::Admin,
        &["voters", "remove", &other_live.to_string()],
    )
    .await;
    assert!(!refused.status.success(), "{}", text(&refused));
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(stderr.contains("HTTP 409"), "{}", text(&refused));
    assert!(
        stderr.contains("would leave 1 live voter(s) of 2, and a quorum of 2 is 2"),
        "{}",
        text(&refused)
    );
    let refused = meshctl(
        dir.path(),
        &daemons[&live[0]].control,
        Permission::Admin,
        &["voters", "add", "5"],
    )
    .await;
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(
        stderr.contains("HTTP 409")
            && stderr.contains("2 live voter(s) of 4, and a quorum of 4 is 3"),
        "{}",
        text(&refused)
    );
    // Nothing changed: the live voters still agree on the three (on whichever leader).
    assert!(
        agreed_within(c, &daemons, &live, &three).await.is_some(),
        "nothing changed"
    );

    // replace of the dead voter: removed first, then node 5 added.
    let replaced = meshctl(
        dir.path(),
        &daemons[&live[0]].control,
        Permission::Admin,
        &["voters", "replace", &victim.to_string(), "5", "--json"],
    )
    .await;
    assert!(replaced.status.success(), "{}", text(&replaced));
    let answer: serde_json::Value = serde_json::from_slice(&replaced.stdout).expect("JSON");
    assert_eq!(answer["steps"][0]["change"], "remove", "{answer}");
    assert_eq!(answer["steps"][0]["node"], victim, "{answer}");
    assert_eq!(answer["steps"][1]["change"], "add", "{answer}");
    assert_eq!(answer["steps"][1]["node"], 5, "{answer}");
    let mut voters: Vec<u64> = live.iter().copied().chain([5]).collect();
    voters.sort_unstable();
    assert_eq!(answer["voters"], serde_json::json!(voters), "{answer}");

    // replace of a live voter (node 4) by node 6: added first, then node 4 removed.
    let replaced = meshctl(
        dir.path(),
        &daemons[&live[0]].control,
        Permission::Admin,
        &["voters", "replace", "4", "6"],
    )
    .await;
    assert!(replaced.status.success(), "{}", text(&replaced));
    let out = String::from_utf8_lossy(&replaced.stdout);
    let add_at = out.find("node 6 added").unwrap_or_else(|| panic!("{out}"));
    let remove_at = out
        .find("node 4 removed")
        .unwrap_or_else(|| panic!("{out}"));
    assert!(add_at < remove_at, "{out}");
    let mut final_voters: Vec<u64> = voters.iter().copied().filter(|v| *v != 4).collect();
    final_voters.push(6);
    final_voters.sort_unstable();
    let members: Vec<u64> = final_voters.clone();
    assert!(
        eventually(LIMIT, || {
            let daemons = &daemons;
            let (m, f) = (&members, &final_voters);
            async move { agreed(c, daemons, m, f).await.is_some() }
        })
        .await,
        "every voter applied {final_voters:?}"
    );

    // The joining voter made a voter restarts from its Raft file as that voter: kill -9 node 5,
    // start it again on its data_dir (it joins through a live voter: node 1 may be gone), and
    // with node 6 then down too, the two voters left of three elect a leader with its vote.
    daemons.get_mut(&5).expect("node 5").kill();
    let restarted = start(&dir.path().join("node-5.toml"));
    let through = members
        .iter()
        .copied()
        .find(|v| *v != 5 && *v != 6)
        .unwrap();
    let seed = format!("{through}@{}", daemons[&through].gossip);
    let joined = meshctl(
        dir.path(),
        &restarted.control,
        Permission::Admin,
        &["join", &seed],
    )
    .await;
    assert!(joined.status.success(), "{}", text(&joined));
    daemons.insert(5, restarted);
    let restarted_view = &daemons[&5];
    assert!(
        eventually(LIMIT, || async move {
            raft(c, restarted_view)
                .await
                .is_some_and(|(_, v)| v == [through, 5, 6])
        })
        .await,
        "node 5 restarts as a voter of {members:?}"
    );
    daemons.get_mut(&6).expect("node 6").kill();
    let two = [through, 5];
    assert!(
        eventually(LIMIT, || {
            let daemons = &daemons;
            let (m, f) = (&two, &members);
            async move { agreed(c, daemons, m, f).await.is_some() }
        })
        .await,
        "voters {two:?} of {members:?} elect a leader with the restarted node 5's vote"
    );
}
