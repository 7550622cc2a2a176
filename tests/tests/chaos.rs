//! Chaos through the control API on five `meshkitd` processes with `[chaos] enabled`
//! (docs/diagnostics.md, "Chaos safety model"). One mesh serves every check, in an order where
//! each leaves the mesh as it found it (healed, re-armed) and the check that kills a node
//! comes last:
//!
//! 1. refusals, each answered 403/400 with a reason and written to the audit log: an observe
//!    and an operate caller, a kind outside the allow-list, a duration over the maximum, a
//!    replayed token, another caller's token, a changed plan, and the relay abused with a
//!    member certificate (a kind outside the target's allow-list, a duration over its maximum)
//!    or with an admin token instead of a node certificate;
//! 2. a minority partition started through the endpoint: the majority sees the minority
//!    suspect or dead, and the mesh heals by itself at the deadline;
//! 3. the kill switch during three active experiments: all reverted on every node, new plans
//!    refused until re-armed;
//! 4. the caller (a `meshctl` process) gone and the origin node killed mid-experiment: the
//!    targets still revert at the deadline on their own clocks.
//!
//! Every wait is bounded; every process is killed when the test ends.

mod common;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::Path;
use std::time::{Duration, Instant};

use common::daemon::{Daemon, start};
use common::{TempDir, eventually, token, write_config_with};
use meshkit_node::client::{Client, ClientConfig, Protocols};
use meshkit_node::permission::Permission;
use serde_json::{Value, json};

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

fn extra(dir: &Path, id: u64) -> String {
    format!(
        "audit_log = {:?}\n\n[chaos]\nenabled = true\nallowed_kinds = {ALLOWED}\n\
         max_duration = \"{MAX_DURATION_S}s\"\n",
        dir.join(format!("audit-{id}.jsonl")).display().to_string()
    )
}

async fn start_mesh(name: &str) -> Mesh {
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
            &extra(dir.path(), id),
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

    // 1. Refusals, each with its reason, each audited.
    let small = latency_on(3, 2);
    for scope in [Permission::Observe, Permission::Operate] {
        let subject = format!("chaos-{scope}");
        let c = client_with(&dir, Auth::Token(&token(&dir, &subject, scope)));
        let (status, body) = plan(&c, &a1, &small).await;
        assert_eq!(status, 403, "{scope}: {body}");
        assert_eq!(body["required_scope"], "mesh.admin", "{body}");
        assert!(
            mesh.audited(1, |r| r["identity"] == subject.as_str()
                && r["outcome"] == "forbidden"
                && r["path"] == "/control/chaos/plans")
                .await,
            "the {scope} refusal is audited"
        );
    }
    let pause = json!({"duration": "2s", "selector": {"indices": [4]}, "fault": {"kind": "pause"}});
    let (status, body) = plan(&mesh.admin, &a1, &pause).await;
    assert_eq!(
        (status, body["reason"].as_str()),
        (403, Some("kind-not-allowed")),
        "{body}"
    );
    assert!(
        mesh.audited(1, |r| is_chaos(r, "plan", "kind-not-allowed"))
            .await
    );
    let long = latency_on(3, MAX_DURATION_S + 10);
    let (status, body) = plan(&mesh.admin, &a1, &long).await;
    assert_eq!(
        (status, body["reason"].as_str()),
        (400, Some("duration-over-max")),
        "{body}"
    );
    assert!(
        mesh.audited(1, |r| is_chaos(r, "plan", "duration-over-max"))
            .await
    );

    let (status, planned) = plan(&mesh.admin, &a1, &small).await;
    assert_eq!(status, 200, "{planned}");
    assert_eq!(planned["radius"]["nodes"], json!([4, 5]), "{planned}");
    let start_body = json!({"plan": planned["plan"], "token": planned["token"]});
    // Another admin holding the token cannot use it.
    let other = client_with(
        &dir,
        Auth::Token(&token(&dir, "other-admin", Permission::Admin)),
    );
    let (status, body) = call(&other, &a1, "/control/chaos/experiments", &start_body).await;
    assert_eq!(
        (status, body["reason"].as_str()),
        (403, Some("token-other-caller")),
        "{body}"
    );
    // The plan changed after it was confirmed.
    let mut altered = start_body.clone();
    altered["plan"]["duration"] = json!("3s");
    let (status, body) = call(&mesh.admin, &a1, "/control/chaos/experiments", &altered).await;
    assert_eq!(
        (status, body["reason"].as_str()),
        (400, Some("token-altered-plan")),
        "{body}"
    );
    // The real start (those refusals did not use the token up), then its replay.
    let (status, started) = call(&mesh.admin, &a1, "/control/chaos/experiments", &start_body).await;
    assert_eq!(status, 201, "{started}");
    let (status, body) = call(&mesh.admin, &a1, "/control/chaos/experiments", &start_body).await;
    assert_eq!(
        (status, body["reason"].as_str()),
        (403, Some("token-replayed")),
        "{body}"
    );
    assert!(
        mesh.audited(1, |r| is_chaos(r, "activate", "token-replayed"))
            .await
    );
    assert!(
        mesh.audited(1, |r| is_chaos(r, "activate", "token-other-caller"))
            .await
    );

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
    let id = started["id"].as_str().unwrap().to_owned();
    assert!(
        eventually(Duration::from_secs(5), || async {
            mesh.phase_of(4, &id)
                .await
                .is_some_and(|(p, _)| p == "reverted")
        })
        .await,
        "the 2 s latency experiment reverts"
    );
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

    // 3. The kill switch with three experiments active.
    let mut ids = Vec::new();
    for index in [1, 2, 3] {
        let (status, started) =
            plan_and_start(&mesh.admin, &a1, &latency_on(index, MAX_DURATION_S)).await;
        assert_eq!(status, 201, "{started}");
        ids.push(started["id"].as_str().unwrap().to_owned());
    }
    let a2 = mesh.addr(2).to_owned();
    let (status, body) = call(&mesh.admin, &a2, "/control/chaos/kill-switch", &json!({})).await;
    assert_eq!(status, 200, "{body}");
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
    let r = mesh
        .admin
        .request(
            http::Method::DELETE,
            &a2,
            "/control/chaos/kill-switch",
            bytes::Bytes::new(),
        )
        .await
        .unwrap();
    assert_eq!(r.status, 200, "{}", r.body);

    // 4. The caller gone (meshctl exits after the start) and then the origin killed: the
    // targets revert on their own clocks.
    let plan_file = dir.join("latency.json");
    std::fs::write(&plan_file, latency_on(3, 3).to_string()).unwrap();
    let token_file = dir.join("admin.token");
    std::fs::write(&token_file, token(&dir, "chaos-admin", Permission::Admin)).unwrap();
    let mut command = common::meshctl(
        &dir,
        &a1,
        common::MeshctlAs::TokenFile(&token_file),
        ["chaos", "start"],
    );
    command.arg(&plan_file).args(["--yes", "--json"]);
    let (ok, out) = common::run_bounded(command, Duration::from_secs(20));
    assert!(ok, "meshctl chaos start --yes: {out}");
    let started: Value = serde_json::from_str(
        out.lines()
            .skip_while(|l| !l.starts_with('{'))
            .collect::<Vec<_>>()
            .join("\n")
            .as_str(),
    )
    .expect("meshctl --json prints JSON");
    let id = started["started"]["id"].as_str().unwrap().to_owned();
    let deadline_ms = started["started"]["deadline_unix_ms"].as_u64().unwrap();
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
