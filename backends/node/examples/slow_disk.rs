//! A service registers a chaos fault type of its own, `slow-disk`, on the node it embeds,
//! without editing MeshKit, and an operator starts it through the node's chaos endpoints like
//! any built-in kind: plan, confirm with the token, watch it act, see it revert by itself at its
//! deadline (docs/diagnostics.md, "A fault type of your own").
//!
//! ```sh
//! cargo run -p meshkit-node --example slow_disk
//! ```
//!
//! It writes development certificates into a temporary directory, starts node 1 with a control
//! endpoint, `[chaos]` allowing `custom:slow-disk` only, and an audit log; registers
//! `SlowDisk`, which makes the service's own `Disk::write` sleep; then, as `meshctl-admin`:
//! a plan whose params the type refuses (`400 fault-params-refused`), a plan of a type the node
//! does not allow (`403 kind-not-allowed`), and the real one, 300 ms per write for 1 s. It times
//! a write before, during and after, and prints the audit records of the experiment. Every wait
//! is bounded (10 s). `cargo test -p meshkit-node --example slow_disk` (and the suite's nextest
//! run: `test = true` in Cargo.toml) runs the same and checks each step.

use std::collections::BTreeMap;
use std::error::Error;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use meshkit::config::parse_duration;
use meshkit_node::api::chaos::{ChaosErrorBody, ExperimentsResponse, PlanResponse, StartResponse};
use meshkit_node::chaos_host::{ExperimentRef, FaultType};
use meshkit_node::client::{Client, ClientConfig};
use meshkit_node::config::{NodeConfig, RawChaosConfig};
use meshkit_node::control::auth::RawAccessConfig;
use serde_json::{Value, json};

/// The service's storage layer: each write waits the delay of the `slow-disk` experiments
/// active on this node (the longest, when several overlap).
#[derive(Default)]
struct Disk {
    slow: Mutex<BTreeMap<ExperimentRef, Duration>>,
}

impl Disk {
    async fn write(&self, _bytes: &[u8]) {
        let delay = self
            .slow
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .values()
            .max()
            .copied();
        if let Some(delay) = delay {
            tokio::time::sleep(delay).await;
        }
        // ... the real write ...
    }
}

/// The fault type: `{ kind = "custom", name = "slow-disk", params = { delay = "300ms" } }`.
/// Its hooks run on the node's driver, so they only flip the disk's state and return.
struct SlowDisk {
    disk: Arc<Disk>,
}

/// The longest delay the type takes: a fault that stalls writes for minutes is an outage, not
/// an experiment.
const MAX_DELAY: Duration = Duration::from_secs(10);

fn delay_of(params: &BTreeMap<String, String>) -> Result<Duration, String> {
    let text = params.get("delay").ok_or("params.delay is required")?;
    let delay = parse_duration(text).map_err(|e| format!("params.delay: {e}"))?;
    if delay.is_zero() || delay > MAX_DELAY {
        return Err(format!("params.delay = {text}: allowed 1ns..=10s"));
    }
    Ok(delay)
}

impl FaultType for SlowDisk {
    fn name(&self) -> &str {
        "slow-disk"
    }

    fn check(&self, params: &BTreeMap<String, String>) -> Result<(), String> {
        delay_of(params).map(drop)
    }

    fn activate(&self, experiment: ExperimentRef, params: &BTreeMap<String, String>) {
        // `check` passed on this node before anything was scheduled.
        let delay = delay_of(params).unwrap_or(MAX_DELAY);
        let mut slow = self
            .disk
            .slow
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        slow.insert(experiment, delay);
    }

    fn revert(&self, experiment: ExperimentRef) {
        let mut slow = self
            .disk
            .slow
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        slow.remove(&experiment);
    }
}

/// What the run saw, for the test.
#[derive(Debug)]
struct Seen {
    before: Duration,
    during: Duration,
    after: Duration,
    params_refused: (u16, String),
    not_allowed: (u16, String),
    listed: Value,
    audit: Vec<Value>,
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn Error>> {
    let seen = run().await?;
    println!(
        "a write took {:?} before, {:?} during and {:?} after the experiment",
        seen.before, seen.during, seen.after
    );
    println!(
        "bad params: {} {}",
        seen.params_refused.0, seen.params_refused.1
    );
    println!("not allowed: {} {}", seen.not_allowed.0, seen.not_allowed.1);
    println!("listed: {}", seen.listed);
    for record in &seen.audit {
        println!("audit: {}", record["chaos"]);
    }
    Ok(())
}

async fn run() -> Result<Seen, Box<dyn Error>> {
    let dir = std::env::temp_dir().join(format!("meshkit-slow-disk-{}", std::process::id()));
    let bundle = meshkit_node::certs::write_dev_bundle(&dir, 1)?;
    let admin = bundle
        .clients
        .iter()
        .find(|c| c.name == "meshctl-admin")
        .ok_or("no admin certificate")?;
    let audit_log = dir.join("audit.jsonl");
    let config = NodeConfig::builder(1)
        .identity(&bundle.nodes[0].cert, &bundle.nodes[0].key, &bundle.ca)
        .listen("127.0.0.1:0".parse()?)
        .control("127.0.0.1:0".parse()?)
        .access(RawAccessConfig {
            identities: [("meshctl-admin".to_owned(), vec!["mesh.admin".to_owned()])].into(),
            audit_log: Some(audit_log.clone()),
            ..RawAccessConfig::default()
        })
        .chaos(RawChaosConfig {
            enabled: true,
            // A custom type is allowed by `custom:<name>`, and only the ones listed.
            allowed_kinds: vec!["custom:slow-disk".to_owned()],
            max_duration: Some(meshkit::config::HumanDuration(Duration::from_secs(30))),
            ..RawChaosConfig::default()
        })
        .build()?;
    let node = meshkit_node::node::start(&config).await?;
    let disk = Arc::new(Disk::default());
    node.fault_types()
        .register(Arc::new(SlowDisk { disk: disk.clone() }))?;

    let control = node
        .control_addr()
        .ok_or("no control endpoint")?
        .to_string();
    let client =
        Client::new(&ClientConfig::new(&bundle.ca)?.with_identity(&admin.cert, &admin.key)?)?;
    let plan = |name: &str, delay: &str| {
        json!({
            "duration": "1s",
            "selector": {"indices": [0]},
            "fault": {"kind": "custom", "name": name, "params": {"delay": delay}}
        })
    };

    let before = timed(&disk).await;
    // The type checks its params on the target before anything is scheduled.
    let refused = plan_and_start(&client, &control, &plan("slow-disk", "1h")).await?;
    let params_refused = (
        refused.0,
        serde_json::from_str::<ChaosErrorBody>(&refused.1)?.reason,
    );
    // A type the node does not allow is refused when planned, like a built-in kind.
    let answer = client
        .post_json(&control, "/control/chaos/plans", &plan("slow-fsync", "1ms"))
        .await?;
    let not_allowed = (
        answer.status,
        serde_json::from_str::<ChaosErrorBody>(&answer.body)?.reason,
    );

    let (status, body) = plan_and_start(&client, &control, &plan("slow-disk", "300ms")).await?;
    if status != 201 {
        return Err(format!("start: {status} {body}").into());
    }
    let started: StartResponse = serde_json::from_str(&body)?;
    let during = timed(&disk).await;
    // Nobody aborts: the node reverts it at its deadline, and the type's revert hook runs.
    let deadline = Instant::now() + Duration::from_secs(10);
    let listed = loop {
        let answer = client.get(&control, "/control/chaos/experiments").await?;
        let list: ExperimentsResponse = serde_json::from_str(&answer.body)?;
        let view = list.experiments.into_iter().find(|e| e.id == started.id);
        if let Some(view) = view.filter(|v| v.phase == "reverted") {
            break serde_json::to_value(view)?;
        }
        if Instant::now() >= deadline {
            return Err(format!("{} not reverted within 10 s", started.id).into());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let after = timed(&disk).await;

    // The node writes the revert's audit record by itself, shortly after the deadline.
    let audit = loop {
        let records: Vec<Value> = std::fs::read_to_string(&audit_log)?
            .lines()
            .filter_map(|line| serde_json::from_str::<Value>(line).ok())
            .filter(|r| r["chaos"]["experiment"] == started.id.as_str())
            .collect();
        if records.iter().any(|r| r["chaos"]["action"] == "revert") {
            break records;
        }
        if Instant::now() >= deadline {
            return Err(format!("no revert of {} in the audit log within 10 s", started.id).into());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    client.close().await;
    node.stop().await;
    std::fs::remove_dir_all(&dir)?;
    Ok(Seen {
        before,
        during,
        after,
        params_refused,
        not_allowed,
        listed,
        audit,
    })
}

/// How long one write takes.
async fn timed(disk: &Disk) -> Duration {
    let start = Instant::now();
    disk.write(b"order 17").await;
    start.elapsed()
}

/// Plans `plan` and starts it with the token: the start's status and body.
async fn plan_and_start(
    client: &Client,
    control: &str,
    plan: &Value,
) -> Result<(u16, String), Box<dyn Error>> {
    let answer = client
        .post_json(control, "/control/chaos/plans", plan)
        .await?;
    if answer.status != 200 {
        return Err(format!("plan: {} {}", answer.status, answer.body).into());
    }
    let planned: PlanResponse = serde_json::from_str(&answer.body)?;
    let start = json!({"plan": planned.plan, "token": planned.token});
    let answer = client
        .post_json(control, "/control/chaos/experiments", &start)
        .await?;
    Ok((answer.status, answer.body))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The registered type acts only while its experiment is active, and is reverted by the
    /// node at the deadline; the node's checks (allow-list, the type's own params check) and
    /// audit apply to it as to a built-in kind.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_service_fault_type_acts_through_the_chaos_endpoints_and_reverts_by_itself() {
        let seen = run().await.unwrap();
        let slow = Duration::from_millis(300);
        assert!(seen.before < slow && seen.after < slow, "{seen:?}");
        assert!(seen.during >= slow, "{seen:?}");
        assert_eq!(
            (seen.params_refused.0, seen.params_refused.1.as_str()),
            (400, "fault-params-refused"),
            "{seen:?}"
        );
        assert_eq!(
            (seen.not_allowed.0, seen.not_allowed.1.as_str()),
            (403, "kind-not-allowed"),
            "{seen:?}"
        );
        assert_eq!(seen.listed["end_reason"], "deadline", "{seen:?}");
        assert_eq!(seen.listed["kind"], "custom:slow-disk", "{seen:?}");
        let actions: Vec<&str> = seen
            .audit
            .iter()
            .filter_map(|r| r["chaos"]["action"].as_str())
            .collect();
        assert!(
            actions.contains(&"activate") && actions.contains(&"revert"),
            "{seen:?}"
        );
        assert!(
            seen.audit
                .iter()
                .all(|r| r["chaos"]["kind"] == "custom:slow-disk"),
            "{seen:?}"
        );
    }
}
