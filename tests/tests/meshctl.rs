//! `meshctl` as an operator runs it: the real binary against three in-process nodes with
//! leases, through their real control ports (HTTP/3, falling back to HTTP/2), with the address
//! and credentials taken from the environment (`MESHCTL_ADDR`, `MESHCTL_CA`, `MESHCTL_TOKEN`).
//! Transfer, drain and resume print one readable line (the node's JSON with `--json`), the
//! transfer carries its JSON content type (it was refused with 415 without it), `peers list`
//! filters by state and metadata, and an empty shard list says so. Every wait is bounded.

mod common;

use std::process::{Child, Command, Output};
use std::time::Duration;

use common::{
    TempDir, eventually, global_control_holders, single_global_control_holder, start_cluster,
    start_cluster_with,
};
use meshkit_node::node::RunningNode;
use meshkit_node::permission::Permission;

/// Voters 1-3, all contending for `global-control`; 50 ms Raft ticks.
const LEADERSHIP: &str = "[leadership]\nvoters = [1, 2, 3]\ncampaign = [\"global-control\"]\n\
    ttl = \"3s\"\n\n[leadership.raft]\ntick_interval = \"50ms\"\n";
const LIMIT: Duration = Duration::from_secs(20);

/// Runs `meshctl args` against `node` with an operator token, everything from the environment.
async fn meshctl(dir: &TempDir, node: &RunningNode, args: &[&str]) -> Output {
    meshctl_as(dir, node, Permission::Operate, args).await
}

/// [`meshctl`] with a token for `scope`.
async fn meshctl_as(dir: &TempDir, node: &RunningNode, scope: Permission, args: &[&str]) -> Output {
    let token = common::token(dir.path(), "meshctl-test", scope);
    let mut command = Command::new(meshkit_testkit::bin("meshctl"));
    command
        .args(args)
        .env("MESHCTL_ADDR", node.control_addr().unwrap().to_string())
        .env("MESHCTL_CA", dir.path().join("ca.pem"))
        .env("MESHCTL_TOKEN", token)
        .env("MESHCTL_STATE", dir.path().join("meshctl-state.json"))
        .env("MESHCTL_CONFIG", dir.path().join("no-meshctl.toml"));
    tokio::task::spawn_blocking(move || command.output().expect("meshctl runs"))
        .await
        .unwrap()
}

fn stdout(out: &Output) -> String {
    assert!(
        out.status.success(),
        "meshctl failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn operators_transfer_drain_resume_and_filter_from_the_environment() {
    let dir = TempDir::new("meshctl");
    let nodes = start_cluster_with(dir.path(), 3, LEADERSHIP).await;
    let first = single_global_control_holder(&nodes, LIMIT).await;
    let holder = nodes.iter().find(|n| n.id().get() == first).unwrap();
    let target = nodes.iter().find(|n| n.id().get() != first).unwrap();

    // peers list: the state filter goes to the node, --meta filters here.
    let all_alive = eventually(LIMIT, || async {
        let out = meshctl(&dir, holder, &["peers", "list", "--state", "alive"]).await;
        out.status.success() && String::from_utf8_lossy(&out.stdout).lines().count() == 4
    })
    .await;
    if !all_alive {
        let out = meshctl(&dir, holder, &["peers", "list", "--state", "alive"]).await;
        panic!(
            "three alive members listed (and a header): {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    // health asks every member at the control address it publishes.
    // The report checked is the healthy one: asking again could catch a renewal or a probe in
    // flight on a loaded machine.
    let last = std::sync::Mutex::new(None);
    let healthy = eventually(LIMIT, || async {
        let out = meshctl(&dir, holder, &["health"]).await;
        let ok = out.status.success();
        *last.lock().unwrap() = Some(out);
        ok
    })
    .await;
    let report = last
        .into_inner()
        .unwrap()
        .expect("health ran at least once");
    let text = String::from_utf8_lossy(&report.stdout);
    assert!(
        healthy,
        "never healthy: {text}{}",
        String::from_utf8_lossy(&report.stderr)
    );
    assert!(
        text.contains("healthy: 3 members listed, 3 ready"),
        "{text}"
    );
    assert!(text.contains("3 of 3 voters agree (quorum 2)"), "{text}");
    assert!(
        text.contains(&format!("lease: global-control held by node {first}")),
        "{text}"
    );
    let versions = stdout(&meshctl(&dir, holder, &["versions"]).await);
    assert!(
        versions.contains(&format!(
            "software   {:<16} {:>8}",
            env!("CARGO_PKG_VERSION"),
            3
        )),
        "{versions}"
    );
    let clusters = stdout(&meshctl(&dir, holder, &["clusters", "--json"]).await);
    let clusters: serde_json::Value = serde_json::from_str(&clusters).expect("JSON");
    assert_eq!(clusters["clusters"][0]["states"]["alive"], 3, "{clusters}");

    let none = stdout(&meshctl(&dir, holder, &["peers", "list", "--state", "dead"]).await);
    assert!(none.contains("knows no member that matches"), "{none}");
    let json = stdout(&meshctl(&dir, holder, &["peers", "list", "--json"]).await);
    let peers: serde_json::Value = serde_json::from_str(&json).expect("JSON with --json");
    assert_eq!(peers["total"], 3, "{peers}");
    let addr = peers["peers"][0]["metadata"]["addr"]
        .as_str()
        .expect("members publish their addr")
        .to_owned();
    let table = stdout(
        &meshctl(
            &dir,
            holder,
            &["peers", "list", "--meta", &format!("addr={addr}")],
        )
        .await,
    );
    assert_eq!(
        table.lines().count(),
        2,
        "one member has that addr: {table}"
    );
    assert!(
        table.contains(&format!("addr={addr}")),
        "values shown: {table}"
    );
    let bad = meshctl(&dir, holder, &["peers", "list", "--meta", "novalue"]).await;
    assert!(!bad.status.success());
    assert!(
        String::from_utf8_lossy(&bad.stderr).contains("is not KEY=VALUE"),
        "{}",
        String::from_utf8_lossy(&bad.stderr)
    );

    // leaders watch follows one live stream: the holder's grant comes from the backlog (the
    // stream is open), its transfer arrives on the same stream, one request in all.
    let feed = holder.handle().leadership_feed(0).await.unwrap();
    let acquired = feed
        .backlog
        .unwrap()
        .iter()
        .rev()
        .find(|e| e.change.kind() == "acquired" && e.change.scope() == Some("global-control"))
        .map(|e| e.seq)
        .expect("the holder's feed has its grant");
    let after = (acquired - 1).to_string();
    let mut watch = spawn_meshctl(
        &dir,
        holder,
        "watch",
        &[
            "leaders",
            "watch",
            "--after",
            &after,
            "--scope",
            "global-control",
            "--kind",
            "acquired",
            "--kind",
            "transferred",
            "--count",
            "2",
        ],
    );
    assert!(
        eventually(LIMIT, || std::future::ready(
            read(&dir, "watch.out").contains(" acquired ")
        ))
        .await,
        "the watch prints the grant: {}{}",
        read(&dir, "watch.out"),
        read(&dir, "watch.err")
    );

    // transfer: a JSON body with its content type; one readable line.
    let to = target.id().get().to_string();
    let moved = stdout(
        &meshctl(
            &dir,
            holder,
            &[
                "leaders",
                "transfer",
                "--scope",
                "global-control",
                "--to",
                &to,
            ],
        )
        .await,
    );
    assert!(
        moved.starts_with(&format!(
            "global-control moved to node {to} with fencing token "
        )),
        "{moved}"
    );
    let moved_ok = eventually(LIMIT, || async {
        global_control_holders(&nodes).await == [target.id().get()]
    })
    .await;
    assert!(
        moved_ok,
        "holders after the transfer: {:?}",
        global_control_holders(&nodes).await
    );
    assert!(
        exit_of(&mut watch).await.success(),
        "{}",
        read(&dir, "watch.err")
    );
    let lines = read(&dir, "watch.out");
    let lines: Vec<&str> = lines.lines().collect();
    assert_eq!(lines.len(), 2, "{lines:?}");
    assert!(
        lines[1].contains(" transferred ") && lines[1].contains(&format!("to={to}")),
        "{lines:?}"
    );
    let state: serde_json::Value =
        serde_json::from_str(&read(&dir, "watch-state.json")).expect("the state file");
    let requests: u64 = state["stats"]["requests"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["requests"].as_u64().unwrap())
        .sum();
    assert_eq!(requests, 1, "one stream, not polls: {state}");

    // The old holder no longer holds it: the error names the node's answer.
    let again = meshctl(
        &dir,
        holder,
        &[
            "leaders",
            "transfer",
            "--scope",
            "global-control",
            "--to",
            &to,
        ],
    )
    .await;
    assert!(!again.status.success());
    assert!(
        String::from_utf8_lossy(&again.stderr).contains("HTTP 4"),
        "{}",
        String::from_utf8_lossy(&again.stderr)
    );

    // drain --json is the node's answer; resume is one line.
    let drained = stdout(&meshctl(&dir, target, &["drain", "--json"]).await);
    let drained: serde_json::Value = serde_json::from_str(&drained).expect("JSON with --json");
    assert_eq!(drained["released"], serde_json::json!(["global-control"]));
    // A drained member is not ready: health says which and exits 1.
    let unhealthy = meshctl(&dir, holder, &["health"]).await;
    assert!(!unhealthy.status.success());
    let text = String::from_utf8_lossy(&unhealthy.stdout);
    assert!(
        text.contains(&format!("member {to} is not ready")),
        "{text}"
    );
    let resumed = stdout(&meshctl(&dir, target, &["resume"]).await);
    assert_eq!(
        resumed.trim(),
        format!("node {to} resumed: it contends again for its configured scopes")
    );
    let again = stdout(&meshctl(&dir, target, &["resume"]).await);
    assert!(
        again.contains("was not drained: nothing changed"),
        "{again}"
    );

    // No shard leases: said in words, not an empty table.
    let shards = stdout(&meshctl(&dir, &nodes[0], &["shards", "list"]).await);
    assert!(shards.contains("holds no shard lease"), "{shards}");

    for n in nodes {
        n.stop().await;
    }
}

/// `meshctl args` against `node` as a child process (stdout and stderr to `name.out` and
/// `name.err` in `dir`), for the commands that run while the test acts.
fn spawn_meshctl(dir: &TempDir, node: &RunningNode, name: &str, args: &[&str]) -> Child {
    let token = common::token(dir.path(), "meshctl-test", Permission::Operate);
    let out = std::fs::File::create(dir.path().join(format!("{name}.out"))).unwrap();
    let err = std::fs::File::create(dir.path().join(format!("{name}.err"))).unwrap();
    Command::new(meshkit_testkit::bin("meshctl"))
        .args(args)
        .env("MESHCTL_ADDR", node.control_addr().unwrap().to_string())
        .env("MESHCTL_CA", dir.path().join("ca.pem"))
        .env("MESHCTL_TOKEN", token)
        .env(
            "MESHCTL_STATE",
            dir.path().join(format!("{name}-state.json")),
        )
        .env("MESHCTL_CONFIG", dir.path().join("no-meshctl.toml"))
        .env("DIR", dir.path())
        .stdout(out)
        .stderr(err)
        .spawn()
        .expect("meshctl starts")
}

fn read(dir: &TempDir, file: &str) -> String {
    std::fs::read_to_string(dir.path().join(file)).unwrap_or_default()
}

/// Waits (bounded) for `child` to exit: its status.
async fn exit_of(child: &mut Child) -> std::process::ExitStatus {
    let mut status = None;
    let exited = eventually(LIMIT, || {
        status = status.or_else(|| child.try_wait().unwrap());
        std::future::ready(status.is_some())
    })
    .await;
    if !exited {
        let _ = child.kill();
        let _ = child.wait();
    }
    status.expect("meshctl exits in time")
}

/// Whether `node` holds `scope`.
async fn holds(node: &RunningNode, scope: &str) -> bool {
    let view = node.handle().leadership().await.unwrap().unwrap();
    view.held.iter().any(|h| h.scope == scope)
}

/// `lock` and `elect` against real nodes: the grant reaches the command's environment, the
/// command's status is meshctl's, a second session through the same node waits for the first
/// and gets a higher token, a drained node's loss stops the command (SIGTERM, then SIGKILL past
/// the grace when the command ignores it), `elect` campaigns again after a loss, SIGTERM to
/// meshctl reaches the command, and every lease is released at the end.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lock_and_elect_run_commands_under_a_lease() {
    let dir = TempDir::new("meshctl-lock");
    let nodes = start_cluster_with(dir.path(), 3, LEADERSHIP).await;
    single_global_control_holder(&nodes, LIMIT).await;
    let (first, second, third) = (&nodes[0], &nodes[1], &nodes[2]);

    // The grant in the environment, CMD's status passed on, the lease released after.
    let mut once = spawn_meshctl(
        &dir,
        first,
        "once",
        &[
            "lock",
            "lock/job",
            "--json",
            "--",
            "sh",
            "-c",
            "echo \"$MESHKIT_SCOPE $MESHKIT_FENCING_TOKEN $MESHKIT_HOLDER\"; exit 7",
        ],
    );
    let status = exit_of(&mut once).await;
    let (out, err) = (read(&dir, "once.out"), read(&dir, "once.err"));
    assert_eq!(status.code(), Some(7), "CMD's status: {out}{err}");
    let fields: Vec<&str> = out.split_whitespace().collect();
    assert_eq!(fields.len(), 3, "{out}");
    assert_eq!((fields[0], fields[2]), ("lock/job", "1"), "{out}");
    let events: Vec<serde_json::Value> = err
        .lines()
        .map(|l| serde_json::from_str(l).expect("one JSON object a line with --json"))
        .collect();
    let kinds: Vec<&str> = events.iter().filter_map(|e| e["event"].as_str()).collect();
    assert_eq!(kinds, ["acquired", "exited", "released"], "{err}");
    assert_eq!(events[0]["token"].to_string(), fields[1], "{err}");
    assert!(!holds(first, "lock/job").await, "released when CMD exits");
    let first_token: u64 = fields[1].parse().unwrap();

    // Two sessions through one node: the second waits until the first's command exits.
    let mut a = spawn_meshctl(
        &dir,
        first,
        "a",
        &[
            "lock",
            "lock/job",
            "--",
            "sh",
            "-c",
            "echo $MESHKIT_FENCING_TOKEN > \"$DIR/a-token\"; \
             while [ ! -e \"$DIR/a-go\" ]; do sleep 0.05; done",
        ],
    );
    assert!(
        eventually(LIMIT, || std::future::ready(
            !read(&dir, "a-token").is_empty()
        ))
        .await,
        "a runs: {}",
        read(&dir, "a.err")
    );
    let mut b = spawn_meshctl(
        &dir,
        first,
        "b",
        &[
            "lock",
            "lock/job",
            "--retry",
            "100ms",
            "--",
            "sh",
            "-c",
            "echo $MESHKIT_FENCING_TOKEN > \"$DIR/b-token\"",
        ],
    );
    assert!(
        eventually(LIMIT, || std::future::ready(
            read(&dir, "b.err").contains("waiting for lock/job: held by node 1 (token ")
        ))
        .await,
        "b waits: {}",
        read(&dir, "b.err")
    );
    assert!(
        read(&dir, "b-token").is_empty(),
        "b ran while a held the lock"
    );
    std::fs::write(dir.path().join("a-go"), "").unwrap();
    assert!(exit_of(&mut a).await.success(), "{}", read(&dir, "a.err"));
    assert!(exit_of(&mut b).await.success(), "{}", read(&dir, "b.err"));
    let token = |file| read(&dir, file).trim().parse::<u64>().unwrap();
    assert!(first_token < token("a-token") && token("a-token") < token("b-token"));

    // A lock lost (its node drained): SIGTERM to the command, meshctl exits 1 though the
    // command exits 0 on it.
    let mut lost = spawn_meshctl(
        &dir,
        second,
        "lost",
        &[
            "lock",
            "lock/lost",
            "--ttl",
            "3s",
            "--",
            "sh",
            "-c",
            "trap 'echo stopped > \"$DIR/lost-term\"; exit 0' TERM; \
             echo $MESHKIT_FENCING_TOKEN > \"$DIR/lost-token\"; \
             while :; do sleep 0.05; done",
        ],
    );
    assert!(
        eventually(LIMIT, || std::future::ready(
            !read(&dir, "lost-token").is_empty()
        ))
        .await,
        "{}",
        read(&dir, "lost.err")
    );
    second.handle().drain().await.unwrap();
    let status = exit_of(&mut lost).await;
    let err = read(&dir, "lost.err");
    assert_eq!(status.code(), Some(1), "{err}");
    assert!(err.contains("meshctl: lost lock/lost"), "{err}");
    assert_eq!(read(&dir, "lost-term").trim(), "stopped", "{err}");
    // A drained node takes no session: a lock waits, saying why.
    let mut drained = spawn_meshctl(
        &dir,
        second,
        "drained",
        &["lock", "lock/lost", "--timeout", "1s", "--", "true"],
    );
    assert_eq!(exit_of(&mut drained).await.code(), Some(1));
    let err = read(&dir, "drained.err");
    assert!(err.contains("this node is drained"), "{err}");
    second.handle().resume().await.unwrap();

    // elect: a command that ignores SIGTERM is killed after the grace, the session campaigns
    // again and wins once its node resumes; SIGTERM to meshctl stops the command, releases.
    let mut elect = spawn_meshctl(
        &dir,
        third,
        "elect",
        &[
            "elect",
            "election/e",
            "--ttl",
            "3s",
            "--grace",
            "500ms",
            "--retry",
            "100ms",
            "--",
            "sh",
            "-c",
            "trap '' TERM; echo $MESHKIT_FENCING_TOKEN >> \"$DIR/e-tokens\"; \
             while :; do sleep 0.05; done",
        ],
    );
    let terms = || read(&dir, "e-tokens").lines().count();
    assert!(
        eventually(LIMIT, || std::future::ready(terms() == 1)).await,
        "{}",
        read(&dir, "elect.err")
    );
    third.handle().drain().await.unwrap();
    assert!(
        eventually(LIMIT, || std::future::ready(
            read(&dir, "elect.err").contains("waiting for election/e: this node is drained")
        ))
        .await,
        "{}",
        read(&dir, "elect.err")
    );
    third.handle().resume().await.unwrap();
    assert!(
        eventually(LIMIT, || std::future::ready(terms() == 2)).await,
        "{}",
        read(&dir, "elect.err")
    );
    let tokens: Vec<u64> = read(&dir, "e-tokens")
        .lines()
        .map(|l| l.trim().parse().unwrap())
        .collect();
    assert!(tokens[0] < tokens[1], "{tokens:?}");
    assert!(holds(third, "election/e").await);
    let pid = rustix::process::Pid::from_raw(elect.id() as i32).unwrap();
    rustix::process::kill_process(pid, rustix::process::Signal::TERM).unwrap();
    let status = exit_of(&mut elect).await;
    let err = read(&dir, "elect.err");
    assert_eq!(status.code(), Some(137), "killed after the grace: {err}");
    assert!(err.contains("released election/e"), "{err}");
    assert!(!holds(third, "election/e").await);

    for n in nodes {
        n.stop().await;
    }
}

/// `meshctl args` run in `cwd` with only the config file and the state file from the
/// environment, plus `env`: every other setting comes from flags or a context.
async fn meshctl_in(
    dir: &TempDir,
    cwd: &std::path::Path,
    env: &[(&str, &str)],
    args: &[&str],
) -> Output {
    let mut command = Command::new(meshkit_testkit::bin("meshctl"));
    for var in [
        "MESHCTL_ADDR",
        "MESHCTL_CA",
        "MESHCTL_CERT",
        "MESHCTL_KEY",
        "MESHCTL_TOKEN",
        "MESHCTL_CONTEXT",
    ] {
        command.env_remove(var);
    }
    command
        .args(args)
        .current_dir(cwd)
        .env("MESHCTL_CONFIG", dir.path().join("meshctl.toml"))
        .env("MESHCTL_STATE", dir.path().join("contexts-state.json"))
        .envs(env.iter().copied());
    tokio::task::spawn_blocking(move || command.output().expect("meshctl runs"))
        .await
        .unwrap()
}

/// The id of the node that answered `peers list --json`.
fn answered(out: &Output) -> u64 {
    let json: serde_json::Value = serde_json::from_str(&stdout(out)).expect("JSON");
    json["local"].as_u64().expect("local")
}

fn stderr(out: &Output) -> String {
    assert!(!out.status.success(), "meshctl should have failed");
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// Contexts: `config set-context|use-context|get-contexts|current-context`, and each setting
/// taken from its flag, else its environment variable, else the context (`--context`,
/// `MESHCTL_CONTEXT` or the current one), else the default.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn contexts_fill_what_flags_and_the_environment_leave_unset() {
    let dir = TempDir::new("meshctl-contexts");
    let nodes = start_cluster(dir.path(), 3).await;
    let addr = |i: usize| nodes[i].control_addr().unwrap().to_string();
    let elsewhere = dir.path().join("elsewhere");
    std::fs::create_dir_all(&elsewhere).unwrap();
    let token_file = common::observer_token_file(dir.path());
    let ca = dir.path().join("ca.pem");
    let (ca, token_file) = (ca.to_str().unwrap(), token_file.to_str().unwrap());
    let cwd = elsewhere.as_path();

    // No config file yet: the defaults (certs/ca.pem, relative to where meshctl runs).
    let none = meshctl_in(&dir, cwd, &[], &["config", "current-context"]).await;
    assert!(
        stderr(&none).contains("no current context"),
        "{}",
        stderr(&none)
    );
    let default_ca = meshctl_in(&dir, cwd, &[], &["peers", "list"]).await;
    assert!(
        stderr(&default_ca).contains("certs/ca.pem"),
        "{}",
        stderr(&default_ca)
    );

    for (name, at) in [("good", addr(0)), ("bad", "127.0.0.1:1".to_owned())] {
        let set = &[
            "config",
            "set-context",
            name,
            "--addr",
            &at,
            "--ca",
            ca,
            "--token-file",
            token_file,
        ];
        let saved = stdout(&meshctl_in(&dir, cwd, &[], set).await);
        assert!(
            saved.contains(&format!("context {name:?} saved")),
            "{saved}"
        );
    }
    let set = &[
        "config",
        "set-context",
        "noaddr",
        "--ca",
        ca,
        "--token-file",
        token_file,
    ];
    stdout(&meshctl_in(&dir, cwd, &[], set).await);
    // The first context made is the current one.
    let current = stdout(&meshctl_in(&dir, cwd, &[], &["config", "current-context"]).await);
    assert_eq!(current.trim(), "good");
    let table = stdout(&meshctl_in(&dir, cwd, &[], &["config", "get-contexts"]).await);
    let star = table
        .lines()
        .find(|l| l.starts_with('*'))
        .unwrap_or_default();
    assert!(star.contains("good") && star.contains(&addr(0)), "{table}");
    assert_eq!(
        table.lines().count(),
        4,
        "a header and three contexts: {table}"
    );
    let json = stdout(&meshctl_in(&dir, cwd, &[], &["config", "get-contexts", "--json"]).await);
    let json: serde_json::Value = serde_json::from_str(&json).expect("JSON");
    assert_eq!(json["contexts"]["bad"]["addr"], "127.0.0.1:1", "{json}");

    // The context fills the address, the CA and the token.
    let list = ["peers", "list", "--json"];
    assert_eq!(answered(&meshctl_in(&dir, cwd, &[], &list).await), 1);
    // --context and MESHCTL_CONTEXT choose another.
    let bad = meshctl_in(&dir, cwd, &[], &["--context", "bad", "peers", "list"]).await;
    assert!(stderr(&bad).contains("127.0.0.1:1"), "{}", stderr(&bad));
    let bad = meshctl_in(&dir, cwd, &[("MESHCTL_CONTEXT", "bad")], &list).await;
    assert!(stderr(&bad).contains("127.0.0.1:1"), "{}", stderr(&bad));
    // The environment beats the context, a flag beats the environment.
    let second = addr(1);
    let env = [("MESHCTL_ADDR", second.as_str())];
    assert_eq!(answered(&meshctl_in(&dir, cwd, &env, &list).await), 2);
    let third = addr(2);
    let flagged = ["peers", "list", "--json", "--addr", third.as_str()];
    assert_eq!(answered(&meshctl_in(&dir, cwd, &env, &flagged).await), 3);
    // use-context switches; a context without an address leaves the default.
    let used = stdout(&meshctl_in(&dir, cwd, &[], &["config", "use-context", "bad"]).await);
    assert!(used.contains("switched to context \"bad\""), "{used}");
    assert!(!meshctl_in(&dir, cwd, &[], &list).await.status.success());
    let good = ["--context", "good", "peers", "list", "--json"];
    assert_eq!(answered(&meshctl_in(&dir, cwd, &[], &good).await), 1);
    let noaddr = [
        "--context",
        "noaddr",
        "peers",
        "list",
        "--timeout-ms",
        "3000",
    ];
    let out = meshctl_in(&dir, cwd, &[], &noaddr).await;
    assert!(stderr(&out).contains("127.0.0.1:8101"), "{}", stderr(&out));
    // A context that is not there is named, with those that are.
    let missing = meshctl_in(&dir, cwd, &[], &["--context", "prod", "peers", "list"]).await;
    assert!(
        stderr(&missing).contains("has no such context (it has: bad, good, noaddr)"),
        "{}",
        stderr(&missing)
    );
    let missing = meshctl_in(&dir, cwd, &[], &["config", "use-context", "prod"]).await;
    assert!(
        stderr(&missing).contains("no context \"prod\""),
        "{}",
        stderr(&missing)
    );

    for n in nodes {
        n.stop().await;
    }
}

/// `join`, `leave` (mesh.admin) and `voters list` against real nodes: a fourth node started
/// without seeds joins through node 1, lists the voters (as a non-voter: ids only), leaves, and
/// the others see it `left`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn join_leave_and_voters_list() {
    let dir = TempDir::new("meshctl-join");
    let (ca, files) = meshkit_node::certs::write_dev_certs(dir.path(), 4).unwrap();
    let mut nodes: Vec<RunningNode> = Vec::new();
    for f in &files {
        // Nodes 2 and 3 join through node 1; node 4 starts alone.
        let seeds: Vec<(u64, std::net::SocketAddr)> = match (f.id.get(), nodes.first()) {
            (2 | 3, Some(first)) => vec![(1, first.gossip_addr())],
            _ => Vec::new(),
        };
        let path = common::write_config_with(
            dir.path(),
            f.id.get(),
            &seeds,
            &f.cert,
            &f.key,
            &ca,
            LEADERSHIP,
        );
        let config = meshkit_node::config::NodeConfig::load(&path).unwrap();
        nodes.push(meshkit_node::node::start(&config).await.unwrap());
    }
    let voters = &nodes[..3];
    single_global_control_holder(voters, LIMIT).await;
    let (first, fourth) = (&nodes[0], &nodes[3]);
    let seed = format!("1@{}", first.gossip_addr());

    // join needs mesh.admin.
    let refused = meshctl(&dir, fourth, &["join", &seed]).await;
    assert!(!refused.status.success());
    assert!(
        String::from_utf8_lossy(&refused.stderr).contains("HTTP 403"),
        "{}",
        String::from_utf8_lossy(&refused.stderr)
    );
    let bad = meshctl_as(&dir, fourth, Permission::Admin, &["join", "127.0.0.1:7001"]).await;
    assert!(
        String::from_utf8_lossy(&bad.stderr).contains("expected id@ip:port"),
        "{}",
        String::from_utf8_lossy(&bad.stderr)
    );
    let joined = stdout(&meshctl_as(&dir, fourth, Permission::Admin, &["join", &seed]).await);
    assert!(
        joined.starts_with(&format!("node 4 is joining through {seed}")),
        "{joined}"
    );
    let sees = |n: &RunningNode, id: u64, state: &'static str| {
        let handle = n.handle().clone();
        async move {
            handle.snapshot().await.is_ok_and(|s| {
                s.peers
                    .iter()
                    .any(|p| p.id.get() == id && p.state.to_string() == state)
            })
        }
    };
    assert!(eventually(LIMIT, || sees(first, 4, "alive")).await);
    assert!(eventually(LIMIT, || sees(fourth, 3, "alive")).await);

    // voters list: a voter names the roles, a non-voter the configured ids.
    let listed = stdout(&meshctl(&dir, first, &["voters", "list"]).await);
    assert_eq!(
        listed
            .lines()
            .filter(|l| l.split_whitespace().nth(1) == Some("leader"))
            .count(),
        1,
        "{listed}"
    );
    assert!(listed.contains("quorum 2 of 3"), "{listed}");
    let listed = stdout(&meshctl(&dir, fourth, &["voters", "list", "--json"]).await);
    let listed: serde_json::Value = serde_json::from_str(&listed).expect("JSON");
    let ids: Vec<u64> = listed["voters"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v["id"].as_u64().unwrap())
        .collect();
    assert_eq!(ids, [1, 2, 3], "{listed}");
    assert_eq!(listed["voters"][0]["role"], "unknown", "{listed}");
    assert_eq!(listed["voters"][0]["state"], "alive", "{listed}");

    // leave: the others see it left.
    let left = stdout(&meshctl_as(&dir, fourth, Permission::Admin, &["leave", "--json"]).await);
    let left: serde_json::Value = serde_json::from_str(&left).expect("JSON");
    assert_eq!(left["node"], 4, "{left}");
    assert!(eventually(LIMIT, || sees(first, 4, "left")).await);

    for n in nodes {
        n.stop().await;
    }
}

/// Voters 1-3, two shards of `jobs` whose queues hold one replica before an acknowledgement,
/// backpressure active at 3 pending, and each node's checkpoints in its own directory.
fn queue_config(id: u64) -> String {
    format!(
        "[leadership]\nvoters = [1, 2, 3]\nttl = \"2s\"\n\n[leadership.raft]\n\
         tick_interval = \"50ms\"\n\n[shards]\nnamespaces = {{ jobs = 2 }}\nttl = \"2s\"\n\n\
         [queues]\ndata_dir = \"queues-{id}\"\nreplicas = 1\nlease_timeout = \"30s\"\n\
         recovery_wait = \"1s\"\nhigh_watermark = 3\nlow_watermark = 1\ncooldown = \"100ms\"\n"
    )
}

fn json(out: &Output) -> serde_json::Value {
    serde_json::from_str(&stdout(out)).expect("meshctl printed JSON")
}

/// `queue stats --json` of `node`: its served queue of `shard` (`shard/jobs/N`), if it serves it.
async fn served(dir: &TempDir, node: &RunningNode, shard: &str) -> Option<serde_json::Value> {
    let stats = json(&meshctl(dir, node, &["queue", "stats", "--json"]).await);
    stats["served"]
        .as_array()?
        .iter()
        .find(|s| s["shard"] == shard && s["recovering"] == false)
        .cloned()
}

/// The queue commands an operator runs at a live queue, each through the real binary: `enqueue`
/// (acknowledged once a replica holds the item), `stats`, `watch-backpressure` (the owner's
/// signal, seen on another node through gossip), `lease --max`, `lease-health` (the worker
/// that leased), `drain` into a file and `restore` from it; text and `--json`; and the refusals
/// that must name their cause: a file that is not a drain's JSON, `--max 0`, and a drain with
/// only `mesh.observe`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn operators_enqueue_inspect_lease_drain_and_restore_a_queue() {
    let dir = TempDir::new("meshctl-queue");
    let nodes = common::start_cluster_each(dir.path(), 3, queue_config).await;
    let shard = "shard/jobs/0";

    // Who serves shard 0, once it serves: `queue stats` on each node (bounded: LIMIT).
    let started = std::time::Instant::now();
    let mut owner = None;
    while owner.is_none() && started.elapsed() < LIMIT {
        for (i, node) in nodes.iter().enumerate() {
            if served(&dir, node, shard).await.is_some() {
                owner = Some(i);
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(owner.is_some(), "no node served {shard} within {LIMIT:?}");
    let owner = &nodes[owner.unwrap()];
    let other = nodes
        .iter()
        .find(|n| n.id() != owner.id())
        .expect("three nodes");

    // Four items through another node: each acknowledged with the owner's fence.
    let fence = served(&dir, owner, shard).await.unwrap()["fence"].clone();
    for i in 0..4 {
        let payload = format!("job-{i}");
        let args = [
            "queue", "enqueue", "jobs", &payload, "--shard", "0", "--json",
        ];
        let mut answer = meshctl(&dir, other, &args).await;
        // The other node may not know the owner for a moment: the refusal says so; retry.
        for _ in 0..40 {
            if answer.status.success() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
            answer = meshctl(&dir, other, &args).await;
        }
        let acked = json(&answer);
        assert_eq!(acked["shard"], shard);
        assert_eq!(
            acked["fence"], fence,
            "acknowledged under the owner's fence"
        );
    }
    let text = stdout(
        &meshctl(
            &dir,
            other,
            &["queue", "enqueue", "jobs", "job-4", "--shard", "0"],
        )
        .await,
    );
    assert!(
        text.starts_with(&format!("{shard}: item ")) && text.contains("acknowledged"),
        "{text}"
    );

    // The owner's view: five pending, backpressure active (high watermark 3), five enqueued.
    let queue = served(&dir, owner, shard).await.unwrap();
    assert_eq!(queue["pending"], 5, "{queue}");
    assert_eq!(queue["backpressure_active"], true, "{queue}");
    let stats = json(&meshctl(&dir, owner, &["queue", "stats", "--json"]).await);
    assert!(
        stats["counters"]["jobs"]["enqueued"].as_u64() >= Some(5),
        "{stats}"
    );
    let table = stdout(&meshctl(&dir, owner, &["queue", "stats"]).await);
    assert!(table.contains("SHARD") && table.contains(shard), "{table}");

    // Another node follows the owner's signal (sent at a transition, with the pending count of
    // that moment): active, at least the high watermark pending, the watermarks configured.
    let watched = meshctl(
        &dir,
        other,
        &[
            "queue",
            "watch-backpressure",
            "--queue",
            "jobs",
            "--for",
            "5s",
            "--json",
        ],
    )
    .await;
    let signals: Vec<serde_json::Value> = stdout(&watched)
        .lines()
        .map(|l| serde_json::from_str(l).expect("one JSON object a line"))
        .collect();
    assert!(
        signals.iter().any(|s| s["shard"] == shard
            && s["is_active"] == true
            && s["pending_count"].as_u64() >= Some(3)
            && s["high_watermark"] == 3
            && s["low_watermark"] == 1
            && s["owner"] == owner.id().get()),
        "no active signal of {shard} seen on node {}: {signals:?}",
        other.id()
    );

    // A worker on the other node leases two in one request; the owner tracks it as healthy.
    let leased = json(
        &meshctl(
            &dir,
            other,
            &[
                "queue", "lease", "jobs", "--shard", "0", "--max", "2", "--json",
            ],
        )
        .await,
    );
    let items = leased["items"].as_array().expect("items");
    assert_eq!(items.len(), 2, "{leased}");
    assert!(
        items
            .iter()
            .all(|i| i["shard"] == shard && i["token"]["fence"] == fence)
    );
    let health = json(&meshctl(&dir, owner, &["queue", "lease-health", "--json"]).await);
    let worker = health["peers"]
        .as_array()
        .expect("peers")
        .iter()
        .find(|p| p["peer_id"] == other.id().get())
        .cloned();
    assert!(
        worker.is_some_and(|w| w["is_healthy"] == true),
        "the leasing node is not a healthy worker: {health}"
    );

    // Drain and restore are asked of the owner; another node's refusal names it.
    let refused = stderr(&meshctl(&dir, other, &["queue", "drain", shard]).await);
    let named = format!("does not own the queue (owner: node-{})", owner.id().get());
    assert!(refused.contains(&named), "{refused}");

    // Drain the three still pending into a file, then restore them from it.
    let drained = meshctl(&dir, owner, &["queue", "drain", shard, "--json"]).await;
    let drained_items = json(&drained)["items"].as_array().expect("items").len();
    assert_eq!(drained_items, 3, "the two leased items stay leased");
    assert_eq!(served(&dir, owner, shard).await.unwrap()["pending"], 0);
    let file = dir.path().join("drained.json");
    std::fs::write(&file, &drained.stdout).unwrap();
    let from = file.to_str().unwrap();
    let restored = json(
        &meshctl(
            &dir,
            owner,
            &["queue", "restore", shard, "--from", from, "--json"],
        )
        .await,
    );
    assert_eq!(restored["restored"], 3, "{restored}");
    assert_eq!(served(&dir, owner, shard).await.unwrap()["pending"], 3);

    // Refusals name their cause and change nothing.
    let bad = dir.path().join("not-a-drain.json");
    std::fs::write(&bad, "{\"items\": 3}").unwrap();
    let refused = stderr(
        &meshctl(
            &dir,
            other,
            &["queue", "restore", shard, "--from", bad.to_str().unwrap()],
        )
        .await,
    );
    assert!(
        refused.contains("not the JSON of `meshctl queue drain --json`"),
        "{refused}"
    );
    let refused = stderr(&meshctl(&dir, other, &["queue", "lease", "jobs", "--max", "0"]).await);
    assert!(
        refused.contains("--max") && refused.contains("0"),
        "{refused}"
    );
    let refused =
        stderr(&meshctl_as(&dir, owner, Permission::Observe, &["queue", "drain", shard]).await);
    assert!(
        refused.contains("403") && refused.contains("mesh.operate"),
        "{refused}"
    );
    assert_eq!(served(&dir, owner, shard).await.unwrap()["pending"], 3);
}
