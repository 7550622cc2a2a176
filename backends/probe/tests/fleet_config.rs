//! `[fleet]` of probes.toml: the node's file is read at validation, and a file that could not
//! carry a fleet is refused with the key and what to add; a valid one gives the namespace's
//! shard count and lease TTL. No node is started here (see `fleet_mesh.rs`).

use std::path::Path;
use std::time::Duration;

use meshkit_probe::config::ConfigError;
use meshkit_probe::fleet::{DEFAULT_NAMESPACE, FleetConfig, RawFleetConfig};
use meshkit_testkit::fixtures::TempDir;

/// The start of every agent's node.toml here (the TLS files are not read at validation).
const BASE: &str = "id = 1\nlisten = \"127.0.0.1:0\"\n\n\
    [tls]\ncert = \"node-1.pem\"\nkey = \"node-1.key\"\nca = \"ca.pem\"\n\n";
const LEADERSHIP: &str = "[leadership]\nvoters = [1, 2, 3]\n\n";

/// Validates `[fleet]` (as TOML) with `node_toml` written as `agent-node.toml` beside it.
fn validate(dir: &Path, fleet: &str, node_toml: &str) -> Result<FleetConfig, ConfigError> {
    std::fs::write(dir.join("agent-node.toml"), node_toml).expect("write the node file");
    let raw: RawFleetConfig = toml::from_str(fleet).expect("a [fleet] table");
    raw.validate(dir)
}

fn refused(dir: &Path, fleet: &str, node_toml: &str) -> ConfigError {
    match validate(dir, fleet, node_toml) {
        Ok(config) => panic!("accepted: {config:?}"),
        Err(error) => error,
    }
}

#[test]
fn a_valid_fleet_gives_the_namespace_count_and_ttl() {
    let dir = TempDir::new("fleet-config");
    let config = validate(
        dir.path(),
        "node = \"agent-node.toml\"\n",
        &format!(
            "{BASE}{LEADERSHIP}[shards]\nnamespaces = {{ probe-groups = 16 }}\nttl = \"2s\"\n"
        ),
    )
    .expect("valid");
    assert_eq!(config.node(), dir.path().join("agent-node.toml"));
    assert_eq!(config.namespace(), DEFAULT_NAMESPACE);
    assert_eq!(config.shard_count(), 16);
    assert_eq!(config.shard_ttl(), Duration::from_secs(2));
    // The LAN profile's detection (1 s probe, 500 ms timeout, 4 s suspicion floor), one TTL
    // for a leader change, the slack.
    assert_eq!(config.detection(), Duration::from_millis(5_500));
    assert_eq!(
        config.failover_target(),
        Duration::from_millis(5_500 + 2_000) + meshkit_probe::fleet::FAILOVER_SLACK
    );

    // Another namespace, named in [fleet], among others of the node.
    let config = validate(
        dir.path(),
        "node = \"agent-node.toml\"\nnamespace = \"probes-eu\"\n",
        &format!("{BASE}{LEADERSHIP}[shards]\nnamespaces = {{ probes-eu = 8, jobs = 4 }}\n"),
    )
    .expect("valid");
    assert_eq!((config.namespace(), config.shard_count()), ("probes-eu", 8));
}

/// A `[fleet]` section present but empty: the agent would not know its node.
#[test]
fn an_empty_fleet_section_is_refused() {
    let dir = TempDir::new("fleet-config");
    let e = RawFleetConfig::default()
        .validate(dir.path())
        .expect_err("no node");
    assert_eq!(e.key, "fleet.node");
    assert!(e.problem.starts_with("missing"), "{e}");
}

#[test]
fn a_node_without_shards_or_leadership_is_refused_with_what_to_add() {
    let dir = TempDir::new("fleet-config");
    let fleet = "node = \"agent-node.toml\"\n";

    let e = refused(dir.path(), fleet, &format!("{BASE}{LEADERSHIP}"));
    assert_eq!(e.key, "fleet.node");
    assert!(e.problem.contains("has no [shards] section"), "{e}");
    assert!(
        e.problem.contains("namespaces = { probe-groups = 16 }"),
        "{e}"
    );

    let e = refused(dir.path(), fleet, BASE);
    assert_eq!(e.key, "fleet.node");
    assert!(e.problem.contains("has no [leadership] section"), "{e}");
    assert!(e.problem.contains("[shards]"), "{e}");
}

#[test]
fn a_namespace_the_node_does_not_have_is_refused() {
    let dir = TempDir::new("fleet-config");
    let node = format!("{BASE}{LEADERSHIP}[shards]\nnamespaces = {{ jobs = 4 }}\n");
    let e = refused(dir.path(), "node = \"agent-node.toml\"\n", &node);
    assert_eq!(e.key, "fleet.namespace");
    assert!(
        e.problem.contains("\"probe-groups\" is not a namespace")
            && e.problem.contains("(it has jobs)")
            && e.problem.contains("add probe-groups = 16"),
        "{e}"
    );
    let e = refused(
        dir.path(),
        "node = \"agent-node.toml\"\nnamespace = \"Probe_Groups\"\n",
        &node,
    );
    assert_eq!(e.key, "fleet.namespace");
    assert!(
        e.problem.contains("Probe_Groups") && e.problem.contains("allowed characters are a-z"),
        "{e}"
    );
}

#[test]
fn a_missing_unreadable_or_invalid_node_file_is_refused() {
    let dir = TempDir::new("fleet-config");
    // A namespace without a node.
    let e = refused(dir.path(), "namespace = \"probes-eu\"\n", BASE);
    assert_eq!(e.key, "fleet.node");
    assert!(e.problem.starts_with("missing"), "{e}");
    // A file that is not there.
    let raw: RawFleetConfig = toml::from_str("node = \"nowhere.toml\"\n").expect("a table");
    let e = raw.validate(dir.path()).expect_err("no such file");
    assert_eq!(e.key, "fleet.node");
    assert!(e.problem.contains("nowhere.toml"), "{e}");
    // A node.toml with a bad key of its own: the node's key is named after fleet.node.
    let e = refused(
        dir.path(),
        "node = \"agent-node.toml\"\n",
        &format!("{BASE}{LEADERSHIP}[shards]\nnamespaces = {{ probe-groups = 0 }}\n"),
    );
    assert_eq!(e.key, "fleet.node");
    assert!(e.problem.contains("shards.namespaces.probe-groups"), "{e}");
    // An unknown key of [fleet] itself.
    let unknown = toml::from_str::<RawFleetConfig>("node = \"a.toml\"\nnodes = 3\n");
    assert!(
        unknown
            .unwrap_err()
            .to_string()
            .contains("unknown field `nodes`")
    );
}
