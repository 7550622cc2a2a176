//! The label cardinality of a node's `/metrics`: how many series one node exports as the mesh
//! grows in members, non-shard scopes and shards, and a bound on it (issue: under 5,000 series
//! per node with 100 members and 1,000 shards).
//!
//! Each label of each catalogue family a node exports is given a growth: `Fixed` (an enum of
//! the code: states, reasons, protocols...), or the dimension of the mesh it follows. The
//! model is checked against a real voter's `/metrics` (three nodes in process, three named
//! scopes and eight shards granted): every family's series are exactly the product of its
//! labels' domains (times the samples of a histogram series), the `Fixed` domains as observed
//! there. Then the model is evaluated at the stated size. A new label fails here until it is
//! classified, and a label that grows with members or shards makes the bound fail: the test
//! breaks, not the operator's Prometheus.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use common::{TempDir, client, start_cluster_each};
use meshkit_node::client::Protocols;
use meshkit_node::metrics::catalogue::{self, Kind};

/// How a label's number of values grows.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Growth {
    /// A fixed set of values, written whatever the size of the mesh.
    Fixed,
    /// One value per non-shard scope in the lease table.
    Scopes,
    /// One value per member.
    Members,
    /// One value per shard.
    Shards,
}

/// The growth of every label a node's families carry.
const GROWTH: &[(&str, Growth)] = &[
    ("state", Growth::Fixed),
    ("channel", Growth::Fixed),
    ("direction", Growth::Fixed),
    ("scope", Growth::Scopes),
    ("scope_kind", Growth::Fixed),
    ("reason", Growth::Fixed),
    ("result", Growth::Fixed),
    ("listener", Growth::Fixed),
    ("protocol", Growth::Fixed),
    ("transport", Growth::Fixed),
    ("client", Growth::Fixed),
    ("role", Growth::Fixed),
    ("bound", Growth::Fixed),
    // The node's own versions: one label set per node, whatever the mesh.
    ("version", Growth::Fixed),
    ("wire", Growth::Fixed),
    // One value per configured shard namespace (`[shards] namespaces`): set by the operator,
    // not grown by members or shards (the queue families never name a shard).
    ("queue", Growth::Fixed),
    // Chaos: the fault kinds of the core and the transport wrapper's actions.
    ("kind", Growth::Fixed),
    ("action", Growth::Fixed),
    // One value per registered probe: the node's built-ins and the service's own, set by
    // configuration and code, not grown by members or shards (at most MAX_PROBES).
    ("probe", Growth::Fixed),
];

/// The size the bound is stated for: members, non-shard scopes, shards.
const MEMBERS: u64 = 100;
const SCOPES: u64 = 100;
const SHARDS: u64 = 1_000;
/// The bound (the issue's target).
const BOUND: u64 = 5_000;

/// The reference of the metrics, which states the formula this test computes.
const DOC: &str = include_str!("../../docs/metrics.md");

/// What the real node runs: three named scopes, contended by every node, and eight shards
/// (`[shards]`), placed by the coordinator, each with a task queue (`[queues]`).
const NAMED: [&str; 3] = ["global-control", "billing-leader", "scheduler"];
const SHARD_SCOPES: u64 = 8;

fn leadership(id: u64) -> String {
    let scopes: Vec<String> = NAMED.iter().map(|s| format!("\"{s}\"")).collect();
    format!(
        "[leadership]\nvoters = [1, 2, 3]\ncampaign = [{}]\nttl = \"2s\"\n\n\
         [leadership.raft]\ntick_interval = \"50ms\"\n\n\
         [shards]\nnamespaces = {{ orders = {SHARD_SCOPES} }}\nttl = \"2s\"\n\n\
         [queues]\ndata_dir = \"queues-{id}\"\n",
        scopes.join(", ")
    )
}

/// One sample line of the exposition: its series name and labels.
fn parse_sample(line: &str) -> (String, BTreeMap<String, String>) {
    let (name, rest) = match line.find('{') {
        Some(i) => (&line[..i], &line[i + 1..]),
        None => (line.split_whitespace().next().unwrap_or_default(), ""),
    };
    let mut labels = BTreeMap::new();
    let mut chars = rest.chars().peekable();
    loop {
        let key: String = chars.by_ref().take_while(|c| *c != '=').collect();
        let key = key.trim_start_matches(',').trim().to_owned();
        if key.is_empty() || key.starts_with('}') {
            break;
        }
        assert_eq!(chars.next(), Some('"'), "{line}");
        let mut value = String::new();
        while let Some(c) = chars.next() {
            match c {
                '\\' => value.extend(chars.next()),
                '"' => break,
                c => value.push(c),
            }
        }
        labels.insert(key, value);
        if chars.peek() == Some(&'}') {
            break;
        }
    }
    (name.to_owned(), labels)
}

/// The catalogue family a series name belongs to (histograms: `_bucket`, `_sum`, `_count`).
fn family_of(series: &str) -> Option<&'static catalogue::Family> {
    catalogue::ALL.iter().find(|f| {
        f.name == series
            || (f.kind == Kind::Histogram
                && ["_bucket", "_sum", "_count"]
                    .iter()
                    .any(|s| series.strip_suffix(s) == Some(f.name)))
    })
}

/// Series per family of `text`, and the values seen of each label (`le` left out).
type Observed = (
    BTreeMap<&'static str, u64>,
    BTreeMap<&'static str, BTreeMap<String, BTreeSet<String>>>,
);

fn observe(text: &str) -> Observed {
    let mut series = BTreeMap::new();
    let mut values: BTreeMap<&'static str, BTreeMap<String, BTreeSet<String>>> = BTreeMap::new();
    for line in text
        .lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
    {
        let (name, labels) = parse_sample(line);
        let family = family_of(&name).unwrap_or_else(|| panic!("{name} is not in the catalogue"));
        *series.entry(family.name).or_insert(0) += 1;
        for (k, v) in labels {
            if k != "le" {
                values
                    .entry(family.name)
                    .or_default()
                    .entry(k)
                    .or_default()
                    .insert(v);
            }
        }
    }
    (series, values)
}

fn growth(label: &str) -> Growth {
    GROWTH
        .iter()
        .find(|(l, _)| *l == label)
        .map(|(_, g)| *g)
        .unwrap_or_else(|| {
            panic!(
                "label `{label}` has no growth in GROWTH: does its number of values grow with \
                 members, scopes or shards, or is it a fixed set?"
            )
        })
}

/// The series of every family at `(members, scopes, shards)`: per family, the series of one
/// label set (a histogram's buckets, sum and count) times each label's domain, the `Fixed`
/// ones as observed.
fn model(
    observed: &Observed,
    growth: fn(&str) -> Growth,
    members: u64,
    scopes: u64,
    shards: u64,
) -> BTreeMap<&'static str, u64> {
    let (series, values) = observed;
    let mut out = BTreeMap::new();
    for (&name, &count) in series {
        let family = family_of(name).expect("a catalogue family");
        let labels = values.get(name).cloned().unwrap_or_default();
        let seen: u64 = family
            .labels
            .iter()
            .map(|l| labels.get(*l).map_or(0, |v| v.len() as u64))
            .product();
        let per_label_set = count / seen.max(1);
        let domain: u64 = family
            .labels
            .iter()
            .map(|l| match growth(l) {
                Growth::Fixed => labels.get(*l).map_or(0, |v| v.len() as u64),
                Growth::Scopes => scopes,
                Growth::Members => members,
                Growth::Shards => shards,
            })
            .product();
        out.insert(name, per_label_set * domain);
    }
    out
}

/// The index of the Raft leader once its table holds `all` scopes and its coordinator acts.
async fn settled_leader(nodes: &[meshkit_node::node::RunningNode], all: usize) -> Option<usize> {
    for (i, node) in nodes.iter().enumerate() {
        if let Ok(Some(v)) = node.handle().leadership().await
            && v.raft.as_ref().is_some_and(|r| r.leader == Some(v.node))
            && v.table.len() == all
            && v.shards.as_ref().is_some_and(|s| s.coordinator.is_some())
        {
            return Some(i);
        }
    }
    None
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn series_per_node_stay_under_the_bound_as_the_mesh_grows() {
    let dir = TempDir::new("series-bound");
    let nodes = start_cluster_each(dir.path(), 3, leadership).await;
    let all = NAMED.len() + SHARD_SCOPES as usize;
    // Every scope granted in the Raft leader's table, so that its per-scope series are all
    // there; the leader's, because the coordinator's families come from the acting one only.
    let mut leader = None;
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while leader.is_none() && std::time::Instant::now() < deadline {
        leader = settled_leader(&nodes, all).await;
        if leader.is_none() {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    let leader = leader.unwrap_or_else(|| panic!("not all {all} scopes granted within 30 s"));
    let client = client(dir.path(), Protocols::H3ThenTcp);
    let addr = nodes[leader]
        .control_addr()
        .expect("a control endpoint")
        .to_string();
    let response = client.get(&addr, "/metrics").await.expect("GET /metrics");
    assert_eq!(response.status, 200, "{}", response.body);
    let observed = observe(&response.body);

    // Every family of the catalogue a node writes is there (the client's come from meshctl).
    let node_families: BTreeSet<&str> = catalogue::ALL
        .iter()
        .map(|f| f.name)
        .filter(|n| !n.starts_with("mesh_transport_client_"))
        .collect();
    let exported: BTreeSet<&str> = observed.0.keys().copied().collect();
    assert_eq!(exported, node_families, "the Raft leader's families");

    // The model reproduces the real node exactly: every family is the full product of its
    // labels' domains, the scopes counted without the shards.
    let here = model(
        &observed,
        growth,
        nodes.len() as u64,
        NAMED.len() as u64,
        SHARD_SCOPES,
    );
    assert_eq!(here, observed.0, "the model against the leader's /metrics");
    let scoped: Vec<&str> = observed
        .1
        .iter()
        .filter(|(_, labels)| labels.contains_key("scope"))
        .map(|(name, _)| *name)
        .collect();
    assert_eq!(scoped.len(), 2, "{scoped:?}");
    for name in &scoped {
        assert_eq!(
            observed.0[name],
            NAMED.len() as u64,
            "{name}: shards are not scopes"
        );
    }

    // At the stated size.
    let at = |m, s, h| model(&observed, growth, m, s, h).values().sum::<u64>();
    let fixed = at(0, 0, 0);
    let per_scope = at(0, 1, 0) - fixed;
    let total = at(MEMBERS, SCOPES, SHARDS);
    assert_eq!(
        at(MEMBERS * 10, 0, SHARDS * 10),
        fixed,
        "members or shards add series"
    );
    println!(
        "series per node: {fixed} + {per_scope} x non-shard scopes; {total} with {MEMBERS} \
         members, {SCOPES} scopes and {SHARDS} shards (bound {BOUND}; {} scopes reach it)",
        (BOUND - fixed).div_ceil(per_scope)
    );
    assert!(
        total < BOUND,
        "{total} series per node with {MEMBERS} members, {SCOPES} scopes, {SHARDS} shards"
    );
    // docs/metrics.md states the same formula.
    let formula = format!("**{fixed} + {per_scope} × non-shard scopes**");
    assert!(
        DOC.contains(&formula),
        "docs/metrics.md should state the series per node as `{formula}`"
    );
    for n in nodes {
        n.stop().await;
    }
}

/// The parser reads what prometheus-client writes, escapes included.
#[test]
fn samples_are_parsed_with_their_labels() {
    let (name, labels) = parse_sample(r#"mesh_x_total{a="1",b="q\"/x"} 3"#);
    assert_eq!(name, "mesh_x_total");
    assert_eq!(labels["a"], "1");
    assert_eq!(labels["b"], "q\"/x");
    assert_eq!(parse_sample("mesh_y 4").1.len(), 0);
}

/// The model counts a label that grows with the mesh: were `state` one value per member (or per
/// shard), 100 members (1,000 shards) would make 100 (1,000) series of `mesh_gossip_members`.
#[test]
fn a_label_that_grows_with_members_multiplies_its_family() {
    let series = BTreeMap::from([("mesh_gossip_members", 4)]);
    let states = ["alive", "suspect", "dead", "left"]
        .map(str::to_owned)
        .into();
    let values = BTreeMap::from([(
        "mesh_gossip_members",
        BTreeMap::from([("state".to_owned(), states)]),
    )]);
    let observed = (series, values);
    assert_eq!(
        model(&observed, growth, 100, 0, 0)["mesh_gossip_members"],
        4
    );
    let per_member = |_: &str| Growth::Members;
    assert_eq!(
        model(&observed, per_member, 100, 0, 0)["mesh_gossip_members"],
        100
    );
    let per_shard = |_: &str| Growth::Shards;
    assert_eq!(
        model(&observed, per_shard, 100, 0, 1_000)["mesh_gossip_members"],
        1_000
    );
}
