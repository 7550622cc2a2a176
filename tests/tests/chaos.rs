//! Chaos through the control API on five `meshkitd` processes with `[chaos] enabled`
//! (docs/diagnostics.md, "Chaos safety model"). One mesh serves every check, in an order where
//! each leaves the mesh as it found it (healed, re-armed) and the check that kills a node
//! comes last:
//!
//! 1. refusals, each answered 403/400 with a reason and written to the audit log: an observe
//!    and an operate caller (on every chaos call that changes anything), a kind outside the
//!    allow-list, a duration over the maximum, a replayed token, another caller's token, a
//!    changed plan, a plan while the kill switch is engaged; then an abort by an admin. All of
//!    it twice, through the HTTP routes and through their gRPC twins (the same permission
//!    table; a refusal is the gRPC code of the twin's status, its message starting with the
//!    same reason): one table of checks, [`refusals`], over [`Via`]. Then the relay abused with
//!    a member certificate (a kind outside the target's allow-list, a duration over its
//!    maximum) or with an admin token instead of a node certificate;
//! 2. a minority partition started through the endpoint: the majority sees the minority
//!    suspect or dead, and the mesh heals by itself at the deadline;
//! 3. the kill switch during three active experiments: all reverted on every node, new plans
//!    refused until re-armed;
//! 4. the caller (a `meshctl` process) gone and the origin node killed mid-experiment: the
//!    targets still revert at the deadline on their own clocks;
//! 5. a blast radius that changed between plan and start (a member planned on died): refused,
//!    409 `radius-changed` over HTTP and `FAILED_PRECONDITION` over gRPC, and audited.
//!
//! Every wait is bounded; every process is killed when the test ends.

mod common;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::Path;
use std::time::{Duration, Instant};

use common::daemon::{Daemon, start};
use common::{TempDir, eventually, token, write_config_with};
use meshkit_node::api::grpc::path as grpc_path;
use meshkit_node::client::grpc::{ControlClient, GrpcChannel};
use meshkit_node::client::{Client, ClientConfig, Protocols};
use meshkit_node::control::chaos::{CONFIRM_POLL_INTERVAL, RELAY_TIMEOUT, origin};
use meshkit_node::grpc::proto::{
    AbortChaosRequest, ChaosJson, ChaosKillSwitchRequest, ListChaosRequest,
};
use meshkit_node::permission::Permission;
use serde_json::{Value, json};
use tonic::Code;

const FORM_LIMIT: Duration = Duration::from_secs(20);
/// Longest from a deadline to a target listing the experiment reverted (the issue's target is
/// 1 s; the poll adds up to one round of reads).
const REVERT_SLACK: Duration = Duration::from_millis(1500);
const ALLOWED: &str = r#"["partition", "latency", "loss"]"#;
const MAX_DURATION_S: u64 = 20;

struct Mesh {
    dir: TempDir,
    daemons: BTreeMap<u64, Daemon>,
    admin: Client,
}

fn client_with(dir: &Path, auth: Auth<'_>) -> Client {
    let mut config = ClientConfig::new(&dir.join("ca.pem"))
        .expect("the CA loads")
        .with_protocols(Protocols::TcpOnly)
        .with_request_timeout(Duration::from_secs(10));
    config = match auth {
        Auth::Token(t) => config.with_token(t).expect("a header-safe token"),
        Auth::Node(name) => config
            .with_identity(
                &dir.join(format!("{name}.pem")),
                &dir.join(format!("{name}.key")),
            )
            .expect("the node's files load"),
    };
    Client::new(&config).expect("a client")
}

#[derive(Clone, Copy)]
enum Auth<'a> {
    Token(&'a str),
    Node(&'a str),
}

/// Node `id`'s extra configuration: its audit log and `[chaos]`, with `chaos_more` (more
/// `[chaos]` keys) at the end.
fn extra(dir: &Path, id: u64, chaos_more: &str) -> String {
    format!(
        "audit_log = {:?}\n\n[chaos]\nenabled = true\nallowed_kinds = {ALLOWED}\n\
         max_duration = \"{MAX_DURATION_S}s\"\n{chaos_more}",
        dir.join(format!("audit-{id}.jsonl")).display().to_string()
    )
}

async fn start_mesh(name: &str) -> Mesh {
    start_mesh_with(name, "").await
}

/// Five daemons, each with `chaos_more` added to its `[chaos]`.
async fn start_mesh_with(name: &str, chaos_more: &str) -> Mesh {
    let dir = TempDir::new(name);
    let (ca, files) = meshkit_node::certs::write_dev_certs(dir.path(), 5).expect("certificates");
    let mut daemons: BTreeMap<u64, Daemon> = BTreeMap::new();
    for f in &files {
        let seeds: Vec<(u64, SocketAddr)> = daemons
            .get(&1)
            .map(|d| vec![(1, d.gossip)])
            .unwrap_or_default();
        let id = f.id.get();
        let path = write_config_with(
            dir.path(),
            id,
            &seeds,
            &f.cert,
            &f.key,
            &ca,
            &extra(dir.path(), id, chaos_more),
        );
        daemons.insert(id, start(&path));
    }
    let admin = client_with(
        dir.path(),
        Auth::Token(&token(dir.path(), "chaos-admin", Permission::Admin)),
    );
    let mesh = Mesh {
        dir,
        daemons,
        admin,
    };
    assert!(
        eventually(FORM_LIMIT, || async { mesh.all_alive(5).await }).await,
        "five daemons form a mesh within {FORM_LIMIT:?}"
    );
    mesh
}

impl Mesh {
    fn addr(&self, id: u64) -> &str {
        &self.daemons[&id].control
    }

    /// Whether every running node sees `n` members alive.
    async fn all_alive(&self, n: usize) -> bool {
        for id in self.daemons.keys() {
            match self.states(*id).await {
                Some(states) if states.values().filter(|s| *s == "alive").count() == n => {}
                _ => return false,
            }
        }
        true
    }

    /// Node `id`'s view: member -> state.
    async fn states(&self, id: u64) -> Option<BTreeMap<u64, String>> {
        let r = self.admin.get(self.addr(id), "/meshkit/peers").await.ok()?;
        let v: Value = serde_json::from_str(&r.body).ok()?;
        Some(
            v["peers"]
                .as_array()?
                .iter()
                .filter_map(|p| Some((p["id"].as_u64()?, p["state"].as_str()?.to_owned())))
                .collect(),
        )
    }

    /// Node `id`'s experiments: id -> (phase, end reason).
    async fn experiments(&self, id: u64) -> Option<Value> {
        let r = self
            .admin
            .get(self.addr(id), "/control/chaos/experiments")
            .await
            .ok()?;
        (r.status == 200).then(|| serde_json::from_str(&r.body).ok())?
    }

    async fn phase_of(&self, node: u64, experiment: &str) -> Option<(String, Option<String>)> {
        let v = self.experiments(node).await?;
        let e = v["experiments"]
            .as_array()?
            .iter()
            .find(|e| e["id"] == experiment)?;
        Some((
            e["phase"].as_str()?.to_owned(),
            e["end_reason"].as_str().map(str::to_owned),
        ))
    }

    /// Node `id`'s audit records, parsed.
    fn audit(&self, id: u64) -> Vec<Value> {
        std::fs::read_to_string(self.dir.path().join(format!("audit-{id}.jsonl")))
            .unwrap_or_default()
            .lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect()
    }

    /// Waits until node `id`'s audit log has a record matching `want`.
    async fn audited(&self, id: u64, want: impl Fn(&Value) -> bool) -> bool {
        eventually(Duration::from_secs(5), || async {
            self.audit(id).iter().any(&want)
        })
        .await
    }
}

async fn call(client: &Client, addr: &str, path: &str, body: &Value) -> (u16, Value) {
    let r = client
        .post_json(addr, path, body)
        .await
        .expect("the node answers");
    (
        r.status,
        serde_json::from_str(&r.body).unwrap_or(Value::Null),
    )
}

/// Plans `plan` at `addr`: (status, answer).
async fn plan(client: &Client, addr: &str, plan: &Value) -> (u16, Value) {
    call(client, addr, "/control/chaos/plans", plan).await
}

/// Plans and starts `plan`: the start's (status, answer).
async fn plan_and_start(client: &Client, addr: &str, p: &Value) -> (u16, Value) {
    let (status, planned) = plan(client, addr, p).await;
    assert_eq!(status, 200, "plan {p}: {planned}");
    let body = json!({"plan": planned["plan"], "token": planned["token"]});
    call(client, addr, "/control/chaos/experiments", &body).await
}

fn latency_on(index: u32, seconds: u64) -> Value {
    json!({
        "duration": format!("{seconds}s"),
        "selector": {"indices": [index]},
        "peers": {"indices": [(index + 1) % 5]},
        "fault": {"kind": "latency", "delay": "5ms"}
    })
}

fn is_chaos(r: &Value, action: &str, reason: &str) -> bool {
    r["chaos"]["action"] == action && r["chaos"]["reason"] == reason
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chaos_endpoints_on_five_daemons() {
    let mut mesh = start_mesh("chaos-endpoints").await;
    let dir = mesh.dir.path().to_owned();
    let a1 = mesh.addr(1).to_owned();

    // 1. Refusals, each with its reason, each audited: through HTTP at node 1, then through
    // gRPC at node 2. Two nodes because a node writes at most AUDIT_REFUSALS_BURST (20)
    // refusal records a minute, whoever the callers, and each protocol's table makes 16.
    for (proto, node) in [(Proto::Http, 1), (Proto::Grpc, 2)] {
        refusals(&mesh, proto, node).await;
    }
    let small = latency_on(3, 2);

    // The relay, abused: a member certificate asks node 3 for what node 3's [chaos] refuses,
    // and an admin token (not a node) asks at all.
    let member = client_with(&dir, Auth::Node("node-5"));
    let a3 = mesh.addr(3).to_owned();
    let relay = |plan: Value, radius: Value| json!({"op": "apply", "id": "node-5/1", "plan": plan, "radius": radius, "caller": "token:nobody"});
    let radius = |kind: &str, secs: u64| json!({"kind": kind, "nodes": [3], "links": [], "groups": [], "start_ms": 0, "duration_ms": secs * 1000});
    let pause3 =
        json!({"duration": "2s", "selector": {"indices": [2]}, "fault": {"kind": "pause"}});
    let (status, body) = call(
        &member,
        &a3,
        "/control/chaos/relay",
        &relay(pause3, radius("pause", 2)),
    )
    .await;
    assert_eq!(
        (status, body["reason"].as_str()),
        (403, Some("kind-not-allowed")),
        "{body}"
    );
    let long3 = latency_on(2, MAX_DURATION_S + 10);
    let (status, body) = call(
        &member,
        &a3,
        "/control/chaos/relay",
        &relay(long3, json!({"kind": "latency", "nodes": [3, 4], "links": [[3, 4]], "groups": [], "start_ms": 0, "duration_ms": (MAX_DURATION_S + 10) * 1000})),
    )
    .await;
    assert_eq!(
        (status, body["reason"].as_str()),
        (400, Some("duration-over-max")),
        "{body}"
    );
    assert!(
        mesh.audited(3, |r| r["chaos"]["action"] == "relay-apply"
            && r["chaos"]["reason"] == "kind-not-allowed"
            && r["chaos"]["relayed_by"] == "node-5"
            && r["chaos"]["caller"] == "token:nobody")
            .await,
        "the refused relay is audited with the relaying node and the caller it named"
    );
    assert!(
        mesh.audited(3, |r| is_chaos(r, "relay-apply", "duration-over-max"))
            .await
    );
    let (status, body) = call(
        &mesh.admin,
        &a3,
        "/control/chaos/relay",
        &json!({"op": "kill-switch", "caller": "x"}),
    )
    .await;
    assert_eq!(status, 403, "an admin token is not a node: {body}");
    assert!(
        mesh.audited(3, |r| is_chaos(r, "relay", "not-a-node-certificate"))
            .await
    );

    // 2. A minority partition: the majority sees it suspect or dead, then it heals by itself.
    let partition = json!({"duration": "5s", "selector": {"indices": [3, 4]}, "fault": {"kind": "partition", "shape": "minority"}});
    let (status, started) = plan_and_start(&mesh.admin, &a1, &partition).await;
    assert_eq!(status, 201, "{started}");
    assert_eq!(started["radius"]["groups"][0], json!([4, 5]), "{started}");
    let id = started["id"].as_str().unwrap().to_owned();
    let deadline_ms = started["deadline_unix_ms"].as_u64().unwrap();
    assert!(
        eventually(Duration::from_secs(5), || async {
            mesh.states(1).await.is_some_and(|s| {
                [4, 5]
                    .iter()
                    .all(|m| s.get(m).is_some_and(|st| st == "suspect" || st == "dead"))
            })
        })
        .await,
        "node 1 sees the minority suspect or dead while the partition holds"
    );
    for target in [4, 5] {
        let seen = wait_reverted(&mesh, target, &id, deadline_ms).await;
        assert_eq!(
            seen.as_deref(),
            Some("deadline"),
            "node {target} reverts at the deadline"
        );
    }
    assert!(
        eventually(FORM_LIMIT, || async { mesh.all_alive(5).await }).await,
        "the mesh heals after the partition's deadline"
    );
    assert!(
        mesh.audited(4, |r| r["chaos"]["action"] == "revert"
            && r["chaos"]["experiment"] == id.as_str()
            && r["identity"] == "node-4")
            .await,
        "the revert at the deadline is audited as the node"
    );
    let activations = mesh
        .audit(1)
        .iter()
        .filter(|r| r["chaos"]["action"] == "activate" && r["chaos"]["experiment"] == id.as_str())
        .count();
    assert_eq!(activations, 1, "one activation record per experiment");

    // 2b. `meshctl chaos plan`, `start --confirm` and `abort`, each with `--json`, against the
    // real nodes: the plan's radius and token, a start with that token, an abort that every
    // target confirms and applies.
    let token_file = dir.join("admin.token");
    std::fs::write(&token_file, token(&dir, "chaos-admin", Permission::Admin)).unwrap();
    let plan_file = dir.join("latency-abort.json");
    std::fs::write(&plan_file, latency_on(1, MAX_DURATION_S).to_string()).unwrap();
    let plan_arg = plan_file.to_str().expect("a UTF-8 temporary path");
    let (ok, out) = meshctl_chaos(&dir, &a1, &token_file, &["plan", plan_arg, "--json"]);
    assert!(ok, "meshctl chaos plan --json: {out}");
    let planned = printed_json(&out);
    assert_eq!(planned["radius"]["nodes"], json!([2, 3]), "{planned}");
    let confirm = planned["token"].as_str().expect("a token").to_owned();
    let (ok, out) = meshctl_chaos(
        &dir,
        &a1,
        &token_file,
        &["start", plan_arg, "--confirm", &confirm, "--json"],
    );
    assert!(ok, "meshctl chaos start --confirm --json: {out}");
    let started = printed_json(&out);
    let id = started["started"]["id"].as_str().unwrap().to_owned();
    let (ok, out) = meshctl_chaos(&dir, &a1, &token_file, &["abort", &id, "--json"]);
    assert!(ok, "meshctl chaos abort --json: {out}");
    let aborted = printed_json(&out);
    assert_eq!(aborted["action"], "abort", "{aborted}");
    let confirmed = confirmed_targets(&aborted);
    assert!(
        confirmed.contains(&2) && confirmed.contains(&3),
        "both targets confirm the abort: {aborted}"
    );
    for node in [2, 3] {
        assert_eq!(
            mesh.phase_of(node, &id).await,
            Some(("reverted".to_owned(), Some("aborted".to_owned()))),
            "node {node} reverted {id} on the abort"
        );
    }

    // 3. The kill switch with three experiments active.
    let mut ids = Vec::new();
    for index in [1, 2, 3] {
        let (status, started) =
            plan_and_start(&mesh.admin, &a1, &latency_on(index, MAX_DURATION_S)).await;
        assert_eq!(status, 201, "{started}");
        ids.push(started["id"].as_str().unwrap().to_owned());
    }
    // `meshctl chaos list` asks every member: the union of their answers names all three,
    // active, in JSON and in the table.
    let (ok, out) = meshctl_chaos(&dir, &a1, &token_file, &["list", "--json"]);
    assert!(ok, "meshctl chaos list --json: {out}");
    let listed = printed_json(&out);
    let nodes = listed["nodes"]
        .as_array()
        .expect("one entry per node asked");
    assert_eq!(nodes.len(), 5, "every member is asked: {listed}");
    for id in &ids {
        let holders = nodes
            .iter()
            .filter(|n| {
                n["answer"]["experiments"].as_array().is_some_and(|es| {
                    // The origin lists what it fanned out too (`applied_here: false`, with
                    // its targets' states): only the targets apply it.
                    es.iter().any(|e| {
                        e["id"] == id.as_str()
                            && e["phase"] == "active"
                            && e["applied_here"] == true
                    })
                })
            })
            .count();
        assert_eq!(
            holders, 2,
            "{id} is active on both of its targets: {listed}"
        );
    }
    let (ok, table) = meshctl_chaos(&dir, &a1, &token_file, &["list"]);
    assert!(ok, "meshctl chaos list: {table}");
    for id in &ids {
        assert!(table.contains(id.as_str()), "the table lists {id}: {table}");
    }
    let a2 = mesh.addr(2).to_owned();
    // Through `meshctl chaos kill-switch --json` (the routes' own refusals and an admin's
    // engage and re-arm over HTTP and gRPC are in `refusals`).
    let (ok, out) = meshctl_chaos(&dir, &a2, &token_file, &["kill-switch", "--json"]);
    assert!(ok, "meshctl chaos kill-switch --json: {out}");
    let engaged = printed_json(&out);
    assert_eq!(engaged["action"], "kill-switch", "{engaged}");
    assert_eq!(
        engaged["targets"].as_array().map(Vec::len),
        Some(5),
        "every member answers the kill switch: {engaged}"
    );
    for (i, id) in ids.iter().enumerate() {
        for node in [i as u64 + 2, (i as u64 + 2) % 5 + 1] {
            assert!(
                eventually(Duration::from_secs(3), || async {
                    mesh.phase_of(node, id).await
                        == Some(("reverted".to_owned(), Some("kill-switch".to_owned())))
                })
                .await,
                "node {node} reverted {id} by the kill switch"
            );
        }
    }
    for node in 1..=5 {
        let (status, body) = plan(&mesh.admin, mesh.addr(node), &small).await;
        assert_eq!(
            (status, body["reason"].as_str()),
            (409, Some("kill-switch-engaged")),
            "node {node}: {body}"
        );
    }
    assert!(
        mesh.audited(2, |r| r["chaos"]["action"] == "kill-switch"
            && r["identity"] == "chaos-admin")
            .await
    );
    let (ok, out) = meshctl_chaos(
        &dir,
        &a2,
        &token_file,
        &["kill-switch", "--rearm", "--json"],
    );
    assert!(ok, "meshctl chaos kill-switch --rearm --json: {out}");
    assert_eq!(printed_json(&out)["action"], "rearm", "{out}");

    // 4. The caller gone (meshctl exits after the start) and then the origin killed: the
    // targets revert on their own clocks.
    let plan_file = dir.join("latency.json");
    std::fs::write(&plan_file, latency_on(3, 3).to_string()).unwrap();
    let plan_arg = plan_file.to_str().expect("a UTF-8 temporary path");
    let (ok, out) = meshctl_chaos(
        &dir,
        &a1,
        &token_file,
        &["start", plan_arg, "--yes", "--json"],
    );
    assert!(ok, "meshctl chaos start --yes: {out}");
    let started = printed_json(&out);
    let id = started["started"]["id"].as_str().unwrap().to_owned();
    let deadline_ms = started["started"]["deadline_unix_ms"].as_u64().unwrap();
    // For 5.: plans confirmed at node 2 while node 1 is still a member. Index 0 is node 1 and
    // index 1 node 2 now; once node 1 is dead they are nodes 2 and 3.
    let first_two = json!({"duration": "2s", "selector": {"indices": [0]}, "peers": {"indices": [1]}, "fault": {"kind": "latency", "delay": "5ms"}});
    let mut confirmed = Vec::new();
    for proto in [Proto::Http, Proto::Grpc] {
        let admin = Via::new(&dir, proto, &proto.admin(), Permission::Admin, &a2).await;
        let planned = admin.plan(&first_two).await.expect("planned at node 2");
        assert_eq!(planned["radius"]["nodes"], json!([1, 2]), "{planned}");
        let body = json!({"plan": planned["plan"], "token": planned["token"]});
        confirmed.push((proto, admin, body));
    }
    mesh.daemons.get_mut(&1).unwrap().kill();
    mesh.daemons.remove(&1);
    for target in [4, 5] {
        let seen = wait_reverted(&mesh, target, &id, deadline_ms).await;
        assert_eq!(
            seen.as_deref(),
            Some("deadline"),
            "node {target} reverts without its caller or origin"
        );
    }

    // 5. The radius changed between plan and start: node 1 is dead to node 2, so the plans
    // confirmed above now resolve to other nodes. Refused with the twin's status, audited.
    assert!(
        eventually(FORM_LIMIT, || async {
            mesh.states(2)
                .await
                .is_some_and(|s| s.get(&1).is_none_or(|st| st == "dead" || st == "left"))
        })
        .await,
        "node 2 sees the killed node 1 dead within {FORM_LIMIT:?}"
    );
    for (proto, admin, body) in confirmed {
        let refused = admin
            .start(&body)
            .await
            .expect_err("a start whose radius moved");
        assert_eq!(
            (refused.status, refused.reason.as_deref()),
            (409, Some("radius-changed")),
            "{proto:?}: {refused:?}"
        );
        assert!(
            mesh.audited(2, |r| r["identity"] == proto.admin().as_str()
                && is_chaos(r, "activate", "radius-changed"))
                .await,
            "{proto:?}: the radius-changed refusal is audited"
        );
    }
}

/// `[chaos] token_ttl` of [`tokens_expire_and_the_origin_confirms_reverts`]'s mesh, seconds.
const TOKEN_TTL_S: u64 = 2;

/// A second mesh, its tokens living [`TOKEN_TTL_S`]:
///
/// 1. a plan's token used after it expired is refused by the real node, 403 `token-expired`
///    over HTTP and `PERMISSION_DENIED` over gRPC with the message the token's own refusal
///    gives, and the refusal is audited with the caller's identity;
/// 2. an experiment over all five nodes: its origin lists every target `unconfirmed` while it
///    runs, and each `confirmed`, reverted at the deadline, once the origin has asked them after
///    it (the same over gRPC and in `meshctl chaos list`), and the origin's revert record names
///    all five;
/// 3. the same with one target stopped mid-experiment: the origin lists the four others
///    confirmed and the stopped one `unconfirmed` with why, and once its bounded asks are over
///    its revert record names the four and, apart, the one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_expire_and_the_origin_confirms_reverts() {
    let mut mesh =
        start_mesh_with("chaos-origin", &format!("token_ttl = \"{TOKEN_TTL_S}s\"\n")).await;
    let dir = mesh.dir.path().to_owned();
    let a1 = mesh.addr(1).to_owned();

    // 1. Expired tokens, through both protocols.
    for proto in [Proto::Http, Proto::Grpc] {
        let subject = format!("late-admin-{proto:?}");
        let admin = Via::new(&dir, proto, &subject, Permission::Admin, &a1).await;
        let planned = admin.plan(&latency_on(3, 2)).await.expect("an admin plans");
        let answered = unix_ms();
        let expires = planned["expires_unix_ms"].as_u64().expect("an expiry");
        assert!(
            expires <= answered + TOKEN_TTL_S * 1000,
            "{proto:?}: the token lives [chaos] token_ttl, not the default minute: {planned}"
        );
        // Past the expiry the token itself names, on the same (host) clock.
        tokio::time::sleep(Duration::from_millis(
            expires.saturating_sub(unix_ms()) + 200,
        ))
        .await;
        let body = json!({"plan": planned["plan"], "token": planned["token"]});
        let refused = admin.start(&body).await.expect_err("an expired token");
        assert_eq!(
            (refused.status, refused.reason.as_deref()),
            (403, Some("token-expired")),
            "{proto:?}: {refused:?}"
        );
        assert!(
            refused.text.contains("the confirmation token expired")
                && refused.text.contains("plan again"),
            "{proto:?}: the refusal says why and what to do: {refused:?}"
        );
        assert!(
            mesh.audited(1, |r| r["identity"] == subject.as_str()
                && is_chaos(r, "activate", "token-expired")
                && r["status"] == 403)
                .await,
            "{proto:?}: the expired token's refusal is audited with the caller"
        );
    }

    // 2. Every node a target; every target confirms to the origin after the deadline.
    let everyone = json!({"duration": "3s", "fault": {"kind": "latency", "delay": "2ms"}});
    let (status, started) = plan_and_start(&mesh.admin, &a1, &everyone).await;
    assert_eq!(status, 201, "{started}");
    assert_eq!(
        started["radius"]["nodes"],
        json!([1, 2, 3, 4, 5]),
        "{started}"
    );
    let id = started["id"].as_str().unwrap().to_owned();
    let deadline_ms = started["deadline_unix_ms"].as_u64().unwrap();
    let running = origin_targets(&mesh, 1, &id)
        .await
        .expect("the origin lists it");
    assert_eq!(running.len(), 5, "{running:?}");
    for t in &running {
        assert_eq!(
            t["state"], "unconfirmed",
            "nothing is confirmed before the deadline: {t}"
        );
        assert!(
            t["activated_unix_ms"].is_u64(),
            "the start's activation is kept: {t}"
        );
    }
    let Some(confirmed) = wait_targets(&mesh, &id, deadline_ms, |ts| {
        ts.len() == 5 && ts.iter().all(|t| t["state"] == "confirmed")
    })
    .await
    else {
        panic!(
            "the origin lists all five reverts confirmed: {:?}",
            origin_targets(&mesh, 1, &id).await
        );
    };
    for t in &confirmed {
        assert_eq!(t["end_reason"], "deadline", "{t}");
        let reverted = t["reverted_unix_ms"].as_u64().expect("when it reverted");
        assert!(
            reverted + 1000 >= deadline_ms
                && reverted <= deadline_ms + REVERT_SLACK.as_millis() as u64,
            "target reverted at {reverted}, deadline {deadline_ms}: {t}"
        );
    }
    // The gRPC twin lists the same targets, and so does `meshctl chaos list`.
    let grpc = Via::new(&dir, Proto::Grpc, "lister", Permission::Observe, &a1).await;
    let listed = grpc.list().await.expect("ListChaos");
    let twin = listed["experiments"]
        .as_array()
        .and_then(|es| es.iter().find(|e| e["id"] == id.as_str()))
        .expect("the twin lists it");
    assert_eq!(twin["targets"], json!(confirmed), "{twin}");
    let token_file = dir.join("admin.token");
    std::fs::write(&token_file, token(&dir, "chaos-admin", Permission::Admin)).unwrap();
    let (ok, out) = meshctl_chaos(&dir, &a1, &token_file, &["list", "--only", "--json"]);
    assert!(ok, "meshctl chaos list --only --json: {out}");
    let printed = printed_json(&out);
    let e = printed["nodes"][0]["answer"]["experiments"]
        .as_array()
        .and_then(|es| es.iter().find(|e| e["id"] == id.as_str()))
        .cloned()
        .unwrap_or(Value::Null);
    assert_eq!(e["targets"], json!(confirmed), "{printed}");
    let (ok, table) = meshctl_chaos(&dir, &a1, &token_file, &["list", "--only"]);
    assert!(ok, "meshctl chaos list --only: {table}");
    assert_eq!(
        table
            .lines()
            .filter(|l| l.trim_start().starts_with("target") && l.contains("confirmed"))
            .count(),
        5,
        "one line per target: {table}"
    );
    assert!(
        mesh.audited(1, |r| r["chaos"]["action"] == "revert"
            && r["chaos"]["experiment"] == id.as_str()
            && r["identity"] == "node-1"
            && r["chaos"]["nodes"] == json!([1, 2, 3, 4, 5])
            && r["chaos"]["unconfirmed"].is_null())
            .await,
        "the origin's revert record names the five that confirmed: {:?}",
        mesh.audit(1)
            .iter()
            .filter(|r| r["chaos"]["action"] == "revert")
            .collect::<Vec<_>>()
    );

    // 3. A target stopped mid-experiment never confirms.
    let (status, started) = plan_and_start(&mesh.admin, &a1, &everyone).await;
    assert_eq!(status, 201, "{started}");
    let id = started["id"].as_str().unwrap().to_owned();
    let deadline_ms = started["deadline_unix_ms"].as_u64().unwrap();
    mesh.daemons.get_mut(&5).unwrap().kill();
    mesh.daemons.remove(&5);
    let Some(seen) = wait_targets(&mesh, &id, deadline_ms, |ts| {
        ts.iter().filter(|t| t["state"] == "confirmed").count() == 4
    })
    .await
    else {
        panic!(
            "the four running targets confirm: {:?}",
            origin_targets(&mesh, 1, &id).await
        );
    };
    let stopped: Vec<&Value> = seen.iter().filter(|t| t["state"] != "confirmed").collect();
    assert_eq!(stopped.len(), 1, "{seen:?}");
    assert_eq!(stopped[0]["node"], 5, "{seen:?}");
    assert_eq!(stopped[0]["state"], "unconfirmed", "{seen:?}");
    assert!(
        stopped[0]["error"]
            .as_str()
            .is_some_and(|e| e.contains("node-5")),
        "it says why: {seen:?}"
    );
    // The origin asks the stopped one a bounded number of times, then writes the revert.
    let asks_over = Duration::from_millis(deadline_ms.saturating_sub(unix_ms()))
        + ASKS_OVER
        + Duration::from_secs(5);
    assert!(
        eventually(asks_over, || async {
            mesh.audit(1).iter().any(|r| {
                r["chaos"]["action"] == "revert"
                    && r["chaos"]["experiment"] == id.as_str()
                    && r["chaos"]["nodes"] == json!([1, 2, 3, 4])
                    && r["chaos"]["unconfirmed"] == json!([5])
            })
        })
        .await,
        "the origin's revert record names the four and the one within {asks_over:?}: {:?}",
        mesh.audit(1)
            .iter()
            .filter(|r| r["chaos"]["action"] == "revert")
            .collect::<Vec<_>>()
    );
    let after = origin_targets(&mesh, 1, &id).await.expect("still listed");
    assert_eq!(
        after
            .iter()
            .find(|t| t["node"] == 5)
            .map(|t| t["state"].clone()),
        Some(json!("unconfirmed")),
        "a target that never answers stays unconfirmed: {after:?}"
    );
}

/// How long after the deadline the origin asks a silent target: [`origin::REVERT_SLACK`],
/// then the waits between its rounds ([`origin::FIRST_RETRY`] doubling up to
/// [`origin::MAX_RETRY`], [`origin::MAX_ASKS`] rounds), each round taking up to the relay's
/// timeout and the confirmer's poll.
const ASKS_OVER: Duration = {
    let round_ms = (RELAY_TIMEOUT.as_millis() + CONFIRM_POLL_INTERVAL.as_millis()) as u64;
    let mut total = origin::REVERT_SLACK.as_millis() as u64 + round_ms;
    let mut wait = origin::FIRST_RETRY.as_millis() as u64;
    let mut round = 1;
    while round < origin::MAX_ASKS {
        total += wait + round_ms;
        wait = if wait * 2 > origin::MAX_RETRY.as_millis() as u64 {
            origin::MAX_RETRY.as_millis() as u64
        } else {
            wait * 2
        };
        round += 1;
    }
    Duration::from_millis(total)
};

/// The targets node `origin` lists for experiment `id` (its `targets`).
async fn origin_targets(mesh: &Mesh, origin: u64, id: &str) -> Option<Vec<Value>> {
    let v = mesh.experiments(origin).await?;
    let e = v["experiments"]
        .as_array()?
        .iter()
        .find(|e| e["id"] == id)?;
    e["targets"].as_array().cloned()
}

/// Polls node 1 (the origin) until its targets of `id` satisfy `done`, for at most the
/// deadline plus the origin's [`origin::REVERT_SLACK`], two of its rounds and a margin.
async fn wait_targets(
    mesh: &Mesh,
    id: &str,
    deadline_ms: u64,
    done: impl Fn(&[Value]) -> bool,
) -> Option<Vec<Value>> {
    let limit = Instant::now()
        + Duration::from_millis(deadline_ms.saturating_sub(unix_ms()))
        + origin::REVERT_SLACK
        + origin::FIRST_RETRY * 2
        + Duration::from_secs(4);
    while Instant::now() < limit {
        if let Some(targets) = origin_targets(mesh, 1, id).await
            && done(&targets)
        {
            return Some(targets);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    None
}

/// Runs `meshctl chaos <args>` against `addr` with the admin token in `token_file`, for 20 s
/// at most: whether it succeeded, and what it printed.
fn meshctl_chaos(dir: &Path, addr: &str, token_file: &Path, args: &[&str]) -> (bool, String) {
    let (subcommand, rest) = args.split_first().expect("a chaos subcommand");
    let mut command = common::meshctl(
        dir,
        addr,
        common::MeshctlAs::TokenFile(token_file),
        ["chaos", subcommand],
    );
    command.args(rest);
    common::run_bounded(command, Duration::from_secs(20))
}

/// The targets an experiment's answer lists as confirmed (`ok`), by node id.
fn confirmed_targets(answer: &Value) -> Vec<u64> {
    answer["targets"]
        .as_array()
        .expect("targets")
        .iter()
        .filter(|t| t["ok"] == true)
        .filter_map(|t| t["node"].as_u64())
        .collect()
}

/// The JSON document `meshctl --json` printed (from its first line that opens an object; log
/// lines may come before it).
fn printed_json(out: &str) -> Value {
    let json = out
        .lines()
        .skip_while(|l| !l.starts_with('{'))
        .collect::<Vec<_>>()
        .join("\n");
    serde_json::from_str(&json)
        .unwrap_or_else(|e| panic!("meshctl --json prints JSON ({e}): {out}"))
}

/// The two protocols of the chaos calls.
#[derive(Clone, Copy, Debug)]
enum Proto {
    Http,
    Grpc,
}

impl Proto {
    /// The path a refused plan is audited under (the route, or the gRPC method).
    fn plan_path(self) -> &'static str {
        match self {
            Self::Http => "/control/chaos/plans",
            Self::Grpc => grpc_path::PLAN_CHAOS,
        }
    }

    /// The admin's token subject for calls over this protocol, so each protocol's audit
    /// records are told apart.
    fn admin(self) -> String {
        format!("chaos-admin-{self:?}")
    }
}

/// A refused chaos call, whatever the protocol: the HTTP status (a gRPC code read back as the
/// status of its HTTP twin, by the table of docs/api.md), the stable reason (`None` for the
/// permission check's refusal, which names the scope instead) and the answer's whole text.
#[derive(Debug)]
struct Refused {
    status: u16,
    reason: Option<String>,
    text: String,
}

/// A chaos call's JSON answer, or its refusal.
type Answer = Result<Value, Refused>;

/// The chaos calls to one node over one protocol: the HTTP routes or their gRPC twins, both
/// answering an [`Answer`], so [`refusals`] is one table of checks for both.
enum Via {
    // Boxed: a client is several times the size of a gRPC one.
    Http { client: Box<Client>, addr: String },
    Grpc(ControlClient<GrpcChannel>),
}

impl Via {
    /// Calls to node `addr` over `proto` with a token of `scope` for `subject`.
    async fn new(dir: &Path, proto: Proto, subject: &str, scope: Permission, addr: &str) -> Self {
        let client = client_with(dir, Auth::Token(&token(dir, subject, scope)));
        match proto {
            Proto::Http => Self::Http {
                client: Box::new(client),
                addr: addr.to_owned(),
            },
            Proto::Grpc => Self::Grpc(ControlClient::new(
                client
                    .grpc_channel(addr)
                    .await
                    .expect("a gRPC channel over the control port's TLS"),
            )),
        }
    }

    async fn plan(&self, plan: &Value) -> Answer {
        match self {
            Self::Http { client, addr } => {
                http_answer(client.post_json(addr, "/control/chaos/plans", plan).await)
            }
            Self::Grpc(c) => grpc_answer(c.clone().plan_chaos(chaos_json(plan)).await),
        }
    }

    async fn start(&self, body: &Value) -> Answer {
        match self {
            Self::Http { client, addr } => http_answer(
                client
                    .post_json(addr, "/control/chaos/experiments", body)
                    .await,
            ),
            Self::Grpc(c) => grpc_answer(c.clone().start_chaos(chaos_json(body)).await),
        }
    }

    async fn list(&self) -> Answer {
        match self {
            Self::Http { client, addr } => {
                http_answer(client.get(addr, "/control/chaos/experiments").await)
            }
            Self::Grpc(c) => grpc_answer(c.clone().list_chaos(ListChaosRequest {}).await),
        }
    }

    async fn abort(&self, id: &str) -> Answer {
        match self {
            Self::Http { client, addr } => {
                let path = format!("/control/chaos/experiments/{}", id.replace('/', "%2F"));
                http_answer(
                    client
                        .request(http::Method::DELETE, addr, &path, bytes::Bytes::new())
                        .await,
                )
            }
            Self::Grpc(c) => grpc_answer(
                c.clone()
                    .abort_chaos(AbortChaosRequest { id: id.to_owned() })
                    .await,
            ),
        }
    }

    /// Engages (`engage`) or re-arms the kill switch.
    async fn kill_switch(&self, engage: bool) -> Answer {
        match self {
            Self::Http { client, addr } => http_answer(if engage {
                client
                    .post_json(addr, "/control/chaos/kill-switch", &json!({}))
                    .await
            } else {
                client
                    .request(
                        http::Method::DELETE,
                        addr,
                        "/control/chaos/kill-switch",
                        bytes::Bytes::new(),
                    )
                    .await
            }),
            Self::Grpc(c) => {
                let mut c = c.clone();
                grpc_answer(if engage {
                    c.engage_chaos_kill_switch(ChaosKillSwitchRequest {}).await
                } else {
                    c.rearm_chaos_kill_switch(ChaosKillSwitchRequest {}).await
                })
            }
        }
    }
}

fn chaos_json(body: &Value) -> ChaosJson {
    ChaosJson {
        json: body.to_string(),
    }
}

fn http_answer(
    response: Result<meshkit_node::client::Response, meshkit_node::client::ClientError>,
) -> Answer {
    let r = response.expect("the node answers");
    let body: Value = serde_json::from_str(&r.body).unwrap_or(Value::Null);
    if (200..300).contains(&r.status) {
        return Ok(body);
    }
    Err(Refused {
        status: r.status,
        reason: body["reason"].as_str().map(str::to_owned),
        text: r.body,
    })
}

fn grpc_answer(answer: Result<tonic::Response<ChaosJson>, tonic::Status>) -> Answer {
    match answer {
        Ok(r) => Ok(serde_json::from_str(&r.into_inner().json).expect("the twin's JSON body")),
        Err(status) => {
            let http = match status.code() {
                Code::InvalidArgument => 400,
                Code::Unauthenticated => 401,
                Code::PermissionDenied => 403,
                Code::NotFound => 404,
                Code::FailedPrecondition => 409,
                Code::Unavailable => 503,
                other => panic!("a chaos call answered {other:?}: {status:?}"),
            };
            // A chaos refusal's message starts with its reason: `token-replayed: ...`.
            let reason = status
                .message()
                .split_once(": ")
                .map(|(head, _)| head)
                .filter(|head| head.chars().all(|c| c.is_ascii_lowercase() || c == '-'))
                .map(str::to_owned);
            Err(Refused {
                status: http,
                reason,
                text: status.message().to_owned(),
            })
        }
    }
}

/// Asserts `answer` is refused with `status` and `reason`.
fn assert_refused(proto: Proto, what: &str, answer: Answer, status: u16, reason: &str) {
    let refused = answer.expect_err(what);
    assert_eq!(
        (refused.status, refused.reason.as_deref()),
        (status, Some(reason)),
        "{proto:?}, {what}: {refused:?}"
    );
}

/// Section 1 through `proto`, at node `node`: the permission table (observe and operate callers
/// refused every call that changes anything, and allowed to list), the admin's refusals (a
/// kind outside the allow-list, a duration over the maximum, another caller's token, an
/// altered plan, a replayed token, a plan under the kill switch), an admin's start, abort,
/// kill switch and re-arm; each refusal and each action audited with the caller.
async fn refusals(mesh: &Mesh, proto: Proto, node: u64) {
    let dir = mesh.dir.path();
    let a1 = mesh.addr(node);
    let small = latency_on(3, 2);
    for scope in [Permission::Observe, Permission::Operate] {
        let subject = format!("chaos-{scope}-{proto:?}");
        let caller = Via::new(dir, proto, &subject, scope, a1).await;
        let calls = [
            ("plan", caller.plan(&small).await),
            (
                "start",
                caller.start(&json!({"plan": small, "token": "t"})).await,
            ),
            ("abort", caller.abort("node-1/0").await),
            ("kill switch", caller.kill_switch(true).await),
            ("re-arm", caller.kill_switch(false).await),
        ];
        let refused_calls = calls.len();
        for (what, answer) in calls {
            let refused = answer.expect_err(what);
            assert_eq!(
                refused.status, 403,
                "{proto:?}, {scope}, {what}: {refused:?}"
            );
            assert!(
                refused.text.contains("mesh.admin"),
                "{proto:?}, {scope}, {what}: the refusal names the scope: {refused:?}"
            );
        }
        assert!(
            caller.list().await.is_ok(),
            "{proto:?}: {scope} lists the experiments"
        );
        let forbidden =
            |r: &Value| r["identity"] == subject.as_str() && r["outcome"] == "forbidden";
        assert!(
            eventually(Duration::from_secs(5), || async {
                mesh.audit(node).iter().filter(|r| forbidden(r)).count() == refused_calls
            })
            .await,
            "{proto:?}: each of the {scope} caller's {refused_calls} refusals is audited once: {:?}",
            mesh.audit(node)
                .iter()
                .filter(|r| forbidden(r))
                .collect::<Vec<_>>()
        );
        assert!(
            mesh.audit(node)
                .iter()
                .any(|r| forbidden(r) && r["path"] == proto.plan_path()),
            "{proto:?}: the refused plan is audited under its path"
        );
    }

    let admin = Via::new(dir, proto, &proto.admin(), Permission::Admin, a1).await;
    let by_admin = |action: &'static str, reason: &'static str| {
        move |r: &Value| r["identity"] == proto.admin().as_str() && is_chaos(r, action, reason)
    };
    let pause = json!({"duration": "2s", "selector": {"indices": [4]}, "fault": {"kind": "pause"}});
    assert_refused(
        proto,
        "pause",
        admin.plan(&pause).await,
        403,
        "kind-not-allowed",
    );
    assert!(
        mesh.audited(node, by_admin("plan", "kind-not-allowed"))
            .await
    );
    let long = latency_on(3, MAX_DURATION_S + 10);
    assert_refused(
        proto,
        "too long",
        admin.plan(&long).await,
        400,
        "duration-over-max",
    );
    assert!(
        mesh.audited(node, by_admin("plan", "duration-over-max"))
            .await
    );

    let planned = admin.plan(&small).await.expect("an admin plans");
    assert_eq!(planned["radius"]["nodes"], json!([4, 5]), "{planned}");
    let start_body = json!({"plan": planned["plan"], "token": planned["token"]});
    // Another admin holding the token cannot use it.
    let other_subject = format!("other-admin-{proto:?}");
    let other = Via::new(dir, proto, &other_subject, Permission::Admin, a1).await;
    let answer = other.start(&start_body).await;
    assert_refused(proto, "other caller", answer, 403, "token-other-caller");
    assert!(
        mesh.audited(node, |r| r["identity"] == other_subject.as_str()
            && is_chaos(r, "activate", "token-other-caller"))
            .await
    );
    // The plan changed after it was confirmed.
    let mut altered = start_body.clone();
    altered["plan"]["duration"] = json!("3s");
    let answer = admin.start(&altered).await;
    assert_refused(proto, "altered", answer, 400, "token-altered-plan");
    // The real start (those refusals did not use the token up), then its replay.
    let started = admin.start(&start_body).await.expect("an admin starts");
    let confirmed = confirmed_targets(&started);
    assert_eq!(
        confirmed,
        [4, 5],
        "{proto:?}: every target confirms: {started}"
    );
    let answer = admin.start(&start_body).await;
    assert_refused(proto, "replayed", answer, 403, "token-replayed");
    assert!(
        mesh.audited(node, by_admin("activate", "token-replayed"))
            .await
    );

    // The admin aborts it: reverted on both targets, audited.
    let id = started["id"].as_str().expect("an experiment id").to_owned();
    admin.abort(&id).await.expect("an admin aborts");
    for node in [4, 5] {
        assert!(
            eventually(Duration::from_secs(3), || async {
                mesh.phase_of(node, &id).await
                    == Some(("reverted".to_owned(), Some("aborted".to_owned())))
            })
            .await,
            "{proto:?}: node {node} reverted {id} by the abort"
        );
    }
    assert!(
        mesh.audited(node, |r| r["identity"] == proto.admin().as_str()
            && r["chaos"]["action"] == "abort"
            && r["chaos"]["experiment"] == id.as_str())
            .await
    );

    // The kill switch: engaged, a plan is refused; re-armed, plans pass again.
    admin.kill_switch(true).await.expect("an admin engages");
    assert_refused(
        proto,
        "under the kill switch",
        admin.plan(&small).await,
        409,
        "kill-switch-engaged",
    );
    admin.kill_switch(false).await.expect("an admin re-arms");
    admin.plan(&small).await.expect("re-armed: plans pass");
    assert!(
        mesh.audited(node, |r| r["identity"] == proto.admin().as_str()
            && r["chaos"]["action"] == "rearm")
            .await
    );
}

/// Polls node `target` until it lists `id` reverted: its end reason, asserting the revert was
/// seen within [`REVERT_SLACK`] of `deadline_ms`.
async fn wait_reverted(mesh: &Mesh, target: u64, id: &str, deadline_ms: u64) -> Option<String> {
    let limit = Instant::now()
        + Duration::from_millis(deadline_ms.saturating_sub(unix_ms()))
        + REVERT_SLACK;
    while Instant::now() < limit {
        if let Some((phase, reason)) = mesh.phase_of(target, id).await
            && phase == "reverted"
        {
            let late = unix_ms().saturating_sub(deadline_ms);
            assert!(
                late <= REVERT_SLACK.as_millis() as u64,
                "node {target} reverted {id} {late} ms after its deadline"
            );
            return reason;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    None
}

fn unix_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}
