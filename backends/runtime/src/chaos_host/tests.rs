//! The host's checks, effects and reverts, driven by hand on a membership-only node.

use meshkit::config::{Config, Profile};
use meshkit::diag::fault::{
    FaultKind, FaultPlan, LinkDirection, PartitionDirection, PartitionShape, Selector, resolve,
};
use meshkit::{Incarnation, NodeId};

use super::*;

fn node(id: u64) -> Node {
    Node::new(
        Config::from_profile(Profile::Lan),
        NodeId::new(id),
        Incarnation::new(1),
        id,
        Instant::ZERO,
    )
}

fn enabled(kinds: &[&str]) -> ChaosConfig {
    ChaosConfig {
        enabled: true,
        allowed_kinds: kinds.iter().map(|k| (*k).to_owned()).collect(),
        max_duration: Duration::from_secs(60),
        stand_in_not_after: None,
        ..ChaosConfig::default()
    }
}

fn host(config: ChaosConfig) -> (ChaosHost, ChaosEffects) {
    let effects = ChaosEffects::default();
    (
        ChaosHost::new(NodeId::new(1), config, effects.clone()),
        effects,
    )
}

/// Node 1 cut off from nodes 2 and 3, both ways, for `secs`.
fn partition(secs: u64) -> (FaultPlan, BlastRadius) {
    let plan = FaultPlan::new(
        FaultKind::Partition {
            shape: PartitionShape::One,
            direction: PartitionDirection::TwoWay,
        },
        Selector::Indices(vec![0]),
        Duration::from_secs(secs),
    )
    .unwrap();
    let radius = resolve(&plan, &ClusterView::numbered(3, 1)).unwrap();
    (plan, radius)
}

fn experiment(serial: u64) -> ExperimentRef {
    ExperimentRef {
        origin: NodeId::new(9),
        serial,
    }
}

#[test]
fn kind_names_are_the_cores() {
    let kinds = [
        FaultKind::Kill {},
        FaultKind::Pause {},
        FaultKind::Partition {
            shape: PartitionShape::One,
            direction: PartitionDirection::TwoWay,
        },
        FaultKind::Latency {
            delay: Duration::ZERO,
            jitter: Duration::ZERO,
        },
        FaultKind::Loss { rate: 0.0 },
        FaultKind::BurstyLoss {
            enter: 0.0,
            leave: 0.0,
            loss: 0.0,
        },
        FaultKind::Duplicate { rate: 0.0 },
        FaultKind::Reorder {
            rate: 0.0,
            max_delay: Duration::ZERO,
        },
        FaultKind::TransportDowngrade {},
        FaultKind::CertificateExpiry { expires_in: None },
        FaultKind::ClockSkew { rate: 1.0 },
        FaultKind::CertificateRotation {},
        FaultKind::MembershipSurge { joins: 1 },
    ];
    assert_eq!(kinds.map(|k| k.name()), KIND_NAMES);
}

/// A service's own fault types are counted under `kind="custom"` (a label per name would grow
/// with what services register), beside every built-in kind at 0.
#[test]
fn custom_fault_experiments_are_exported_as_one_kind() {
    let custom = FaultKind::Custom {
        name: "slow-disk".to_owned(),
        params: Default::default(),
    };
    assert_eq!(custom.name(), CUSTOM_KIND);
    let mut stats = ChaosStats::default();
    stats.active.insert(CUSTOM_KIND, 2);
    stats.activations.insert(CUSTOM_KIND, 3);
    stats.reverts.insert((CUSTOM_KIND, "deadline"), 1);
    let text = meshkit_api::metrics::encode(stats).unwrap();
    for line in [
        "mesh_chaos_experiments_active{kind=\"custom\"} 2",
        "mesh_chaos_activations_total{kind=\"custom\"} 3",
        "mesh_chaos_reverts_total{kind=\"custom\",reason=\"deadline\"} 1",
        "mesh_chaos_experiments_active{kind=\"kill\"} 0",
    ] {
        assert!(text.lines().any(|l| l == line), "{line} missing:\n{text}");
    }
}

#[test]
fn experiment_ref_round_trips_as_text() {
    let id = ExperimentRef {
        origin: NodeId::new(3),
        serial: 17,
    };
    assert_eq!(id.to_string(), "node-3/17");
    assert_eq!("node-3/17".parse::<ExperimentRef>(), Ok(id));
    assert_eq!("3/17".parse::<ExperimentRef>(), Ok(id));
    assert!("node-3".parse::<ExperimentRef>().is_err());
    assert!("node-x/1".parse::<ExperimentRef>().is_err());
    assert_eq!(serde_json::to_string(&id).unwrap(), "\"node-3/17\"");
}

/// Refusals change nothing: no record, no rule, no counter.
#[test]
fn refusals_leave_the_state_unchanged() {
    let n = node(1);
    let (plan, radius) = partition(30);
    let (mut off, effects) = host(ChaosConfig::default());
    assert_eq!(
        off.apply(
            Instant::ZERO,
            &n,
            experiment(1),
            plan.clone(),
            radius.clone()
        ),
        Err(ChaosError::Disabled)
    );
    assert!(off.experiments(Instant::ZERO).is_empty());
    assert!(effects.links.rules().is_empty());

    let (mut h, effects) = host(enabled(&["pause"]));
    let before = h.stats();
    assert_eq!(
        h.apply(Instant::ZERO, &n, experiment(1), plan, radius),
        Err(ChaosError::KindNotAllowed {
            kind: "partition".to_owned()
        })
    );
    let (mut h2, effects2) = host(enabled(&["partition"]));
    let (long, long_radius) = partition(61);
    assert_eq!(
        h2.apply(Instant::ZERO, &n, experiment(1), long, long_radius),
        Err(ChaosError::DurationOverMax {
            duration: Duration::from_secs(61),
            max: Duration::from_secs(60)
        })
    );
    for (h, effects) in [(&h, &effects), (&h2, &effects2)] {
        assert!(h.experiments(Instant::ZERO).is_empty());
        assert!(h.poll_timeout().is_none());
        assert!(effects.links.rules().is_empty());
        assert_eq!(h.stats(), before);
    }
}

/// The partition cuts this node's four directed links and reverts by itself at the deadline,
/// with nobody calling abort (the dead-man switch).
#[test]
fn a_partition_applies_and_reverts_at_its_deadline() {
    let n = node(1);
    let (plan, radius) = partition(30);
    let (mut h, effects) = host(enabled(&["partition"]));
    let status = h
        .apply(
            Instant::ZERO,
            &n,
            experiment(1),
            plan.clone(),
            radius.clone(),
        )
        .unwrap();
    assert_eq!(status.phase, "active");
    assert!(status.applied_here);
    assert_eq!(status.remaining_ms, 30_000);
    assert_eq!(
        status.reverted_at_unix_ms, None,
        "not reverted while it runs"
    );
    let rules = effects.links.rules();
    for peer in [2, 3] {
        for side in [LinkSide::Outbound, LinkSide::Inbound] {
            assert_eq!(rules.effects(side, NodeId::new(peer)), [LinkEffect::Cut]);
        }
    }
    assert_eq!(rules.links(), 4);
    assert_eq!(h.stats().active.get("partition"), Some(&1));
    // Idempotent per id: the same call returns the status, nothing is scheduled twice.
    let again = h
        .apply(Instant::ZERO, &n, experiment(1), plan, radius)
        .unwrap();
    assert_eq!(again.id, status.id);
    assert_eq!(h.stats().activations.get("partition"), Some(&1));

    let deadline = h.poll_timeout().unwrap();
    assert_eq!(deadline, Instant::ZERO + Duration::from_secs(30));
    h.handle_timeout(Instant::ZERO + Duration::from_millis(29_999), &n);
    assert_eq!(effects.links.rules().links(), 4, "not before the deadline");
    h.handle_timeout(deadline, &n);
    assert!(effects.links.rules().is_empty());
    let listed = h.experiments(deadline);
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].phase, "reverted");
    assert_eq!(listed[0].end_reason.as_deref(), Some("deadline"));
    assert_eq!(listed[0].remaining_ms, 0);
    // Reverted now (the wall clock's now, as the list is read at the revert's instant).
    let reverted = listed[0].reverted_at_unix_ms.expect("when it reverted");
    assert!(
        reverted.abs_diff(listed[0].deadline_unix_ms) <= 1,
        "reverted at its deadline: {:?}",
        listed[0]
    );
    assert_eq!(h.stats().reverts.get(&("partition", "deadline")), Some(&1));
    assert!(h.stats().active.is_empty());
}

/// Which stand-in certificate fits which `certificate-expiry` plan: each refusal names the
/// mismatch; a fitting one passes at the bounds.
#[test]
fn stand_in_must_match_the_plan() {
    let start = 1_000_000;
    let hour = Some(Duration::from_secs(3600));
    assert!(
        stand_in_fits(None, None, start)
            .unwrap_err()
            .contains("no [chaos] stand_in_cert")
    );
    assert!(
        stand_in_fits(None, Some(start), start)
            .unwrap_err()
            .contains("still valid")
    );
    assert_eq!(stand_in_fits(None, Some(start - 1), start), Ok(()));
    assert!(
        stand_in_fits(hour, Some(start - 1), start)
            .unwrap_err()
            .contains("has expired")
    );
    assert_eq!(stand_in_fits(hour, Some(start), start), Ok(()));
    assert_eq!(stand_in_fits(hour, Some(start + 3600), start), Ok(()));
    assert!(
        stand_in_fits(hour, Some(start + 3601), start)
            .unwrap_err()
            .contains("expires later")
    );
}

/// A `certificate-expiry` on this node raises `serve_stand_in` until its deadline; a plan the
/// stand-in does not fit is refused with nothing scheduled, and a node outside the radius
/// needs no stand-in.
#[test]
fn certificate_expiry_serves_the_stand_in_until_the_deadline() {
    let n = node(1);
    let plan = |expires_in, index| {
        let plan = FaultPlan::new(
            FaultKind::CertificateExpiry { expires_in },
            Selector::Indices(vec![index]),
            Duration::from_secs(30),
        )
        .unwrap();
        let radius = resolve(&plan, &ClusterView::numbered(3, 1)).unwrap();
        (plan, radius)
    };
    let mut config = enabled(&["certificate-expiry"]);
    // Expired in 2001.
    config.stand_in_not_after = Some(1_000_000_000);
    let (mut h, effects) = host(config);
    let (fresh, fresh_radius) = plan(Some(Duration::from_secs(3600)), 0);
    assert!(matches!(
        h.apply(Instant::ZERO, &n, experiment(1), fresh, fresh_radius),
        Err(ChaosError::NotApplicableHere { reason, .. }) if reason.contains("has expired")
    ));
    assert!(h.experiments(Instant::ZERO).is_empty());
    assert!(!*effects.serve_stand_in.borrow());

    let (expired, radius) = plan(None, 0);
    let status = h
        .apply(Instant::ZERO, &n, experiment(2), expired, radius)
        .unwrap();
    assert!(status.applied_here);
    assert!(*effects.serve_stand_in.borrow());
    h.handle_timeout(Instant::ZERO + Duration::from_secs(30), &n);
    assert!(!*effects.serve_stand_in.borrow());
    assert_eq!(
        h.stats().reverts.get(&("certificate-expiry", "deadline")),
        Some(&1)
    );

    // Node 2's certificate: node 1 has no stand-in and needs none.
    let (mut other, other_effects) = host(enabled(&["certificate-expiry"]));
    let (elsewhere, radius) = plan(None, 1);
    let status = other
        .apply(Instant::ZERO, &n, experiment(3), elsewhere, radius)
        .unwrap();
    assert!(!status.applied_here);
    assert!(!*other_effects.serve_stand_in.borrow());
}

/// The kill switch reverts everything, refuses new experiments until re-armed, and the
/// rules of the experiments are gone.
#[test]
fn kill_switch_reverts_all_and_refuses_until_rearmed() {
    let n = node(1);
    let (mut h, effects) = host(enabled(&["partition", "pause", "transport-downgrade"]));
    let (plan, radius) = partition(30);
    h.apply(
        Instant::ZERO,
        &n,
        experiment(1),
        plan.clone(),
        radius.clone(),
    )
    .unwrap();
    let pause = FaultPlan::new(
        FaultKind::Pause {},
        Selector::Indices(vec![0]),
        Duration::from_secs(30),
    )
    .unwrap();
    let pause_radius = resolve(&pause, &ClusterView::numbered(3, 1)).unwrap();
    h.apply(Instant::ZERO, &n, experiment(2), pause, pause_radius)
        .unwrap();
    let downgrade = FaultPlan::new(
        FaultKind::TransportDowngrade {},
        Selector::Indices(vec![0]),
        Duration::from_secs(30),
    )
    .unwrap();
    let downgrade_radius = resolve(&downgrade, &ClusterView::numbered(3, 1)).unwrap();
    h.apply(
        Instant::ZERO,
        &n,
        experiment(3),
        downgrade,
        downgrade_radius,
    )
    .unwrap();
    assert!(h.is_paused());
    assert!(*effects.refuse_h3.borrow());
    assert!(!effects.links.rules().is_empty());

    let t = Instant::ZERO + Duration::from_secs(1);
    assert_eq!(h.kill_switch(t, &n), 3);
    assert!(!h.is_paused());
    assert!(!*effects.refuse_h3.borrow());
    assert!(effects.links.rules().is_empty());
    assert!(h.stats().kill_switch_engaged);
    assert_eq!(h.stats().reverts.get(&("pause", "kill-switch")), Some(&1));
    assert_eq!(
        h.apply(t, &n, experiment(4), plan.clone(), radius.clone()),
        Err(ChaosError::KillSwitchEngaged)
    );
    assert!(effects.links.rules().is_empty());
    h.rearm();
    assert!(!h.stats().kill_switch_engaged);
    h.apply(t, &n, experiment(4), plan, radius).unwrap();
    assert!(!effects.links.rules().is_empty());
}

/// Abort reverts one experiment and leaves the other's rules in place.
#[test]
fn abort_reverts_only_its_experiment() {
    let n = node(1);
    let (mut h, effects) = host(enabled(&["partition", "loss"]));
    let (plan, radius) = partition(30);
    h.apply(Instant::ZERO, &n, experiment(1), plan, radius)
        .unwrap();
    let loss = FaultPlan::new(
        FaultKind::Loss { rate: 0.5 },
        Selector::Indices(vec![0]),
        Duration::from_secs(30),
    )
    .unwrap();
    let loss_radius = resolve(&loss, &ClusterView::numbered(3, 1)).unwrap();
    h.apply(Instant::ZERO, &n, experiment(2), loss, loss_radius)
        .unwrap();
    assert_eq!(
        effects
            .links
            .rules()
            .effects(LinkSide::Outbound, NodeId::new(2)),
        [LinkEffect::Cut, LinkEffect::Loss { rate: 0.5 }]
    );
    let status = h.abort(Instant::ZERO, &n, experiment(1)).unwrap();
    assert_eq!(status.end_reason.as_deref(), Some("aborted"));
    assert_eq!(
        effects
            .links
            .rules()
            .effects(LinkSide::Outbound, NodeId::new(2)),
        [LinkEffect::Loss { rate: 0.5 }]
    );
    assert_eq!(h.stats().aborts, 1);
    assert_eq!(
        h.abort(Instant::ZERO, &n, experiment(1)),
        Err(ChaosError::UnknownExperiment(experiment(1)))
    );
    assert_eq!(h.stats().aborts, 1);
}

/// A node outside the radius schedules the experiment (it lists and reverts it) but applies
/// nothing; a surge is refused as not applicable on a real node.
#[test]
fn outside_the_radius_nothing_is_applied_and_surges_are_refused() {
    let n = node(1);
    let plan = FaultPlan::new(
        FaultKind::Partition {
            shape: PartitionShape::One,
            direction: PartitionDirection::OneWay,
        },
        Selector::Indices(vec![1]),
        Duration::from_secs(30),
    )
    .unwrap();
    // A one-way cut from node 2 outward: node 1 receives nothing from node 2, sends freely.
    let radius = resolve(&plan, &ClusterView::numbered(3, 1)).unwrap();
    let (mut h, effects) = host(enabled(&["partition", "membership-surge"]));
    let status = h
        .apply(Instant::ZERO, &n, experiment(1), plan, radius)
        .unwrap();
    assert!(status.applied_here);
    let rules = effects.links.rules();
    assert_eq!(
        rules.effects(LinkSide::Inbound, NodeId::new(2)),
        [LinkEffect::Cut]
    );
    assert!(rules.effects(LinkSide::Outbound, NodeId::new(2)).is_empty());
    assert_eq!(rules.links(), 1);

    // Latency between nodes 2 and 3 only: node 1 lists it, applies nothing.
    let latency = FaultPlan::new(
        FaultKind::Latency {
            delay: Duration::from_millis(50),
            jitter: Duration::ZERO,
        },
        Selector::Indices(vec![1]),
        Duration::from_secs(30),
    )
    .unwrap()
    .with_links(Selector::Indices(vec![2]), LinkDirection::Both)
    .unwrap();
    let latency_radius = resolve(&latency, &ClusterView::numbered(3, 1)).unwrap();
    let (mut h2, effects2) = host(enabled(&["latency"]));
    let status = h2
        .apply(Instant::ZERO, &n, experiment(5), latency, latency_radius)
        .unwrap();
    assert!(!status.applied_here);
    assert_eq!(status.phase, "active");
    assert!(effects2.links.rules().is_empty());

    let surge = FaultPlan::new(
        FaultKind::MembershipSurge { joins: 10 },
        Selector::Indices(vec![0]),
        Duration::from_secs(30),
    )
    .unwrap();
    let surge_radius = resolve(&surge, &ClusterView::numbered(3, 1)).unwrap();
    assert!(matches!(
        h.apply(Instant::ZERO, &n, experiment(2), surge, surge_radius),
        Err(ChaosError::NotApplicableHere { kind, .. }) if kind == "membership-surge"
    ));
    assert_eq!(h.experiments(Instant::ZERO).len(), 1);
}

/// Three drivers over the in-memory network, each behind a chaos wrapper with `[chaos]` on:
/// what a real node's transport and driver do with an experiment.
mod mesh {
    use std::future::Future;
    use std::net::SocketAddr;
    use std::time::Duration as StdDuration;

    use meshkit::config::RawConfig;
    use meshkit_net::clock::{Clock, SystemClock};
    use meshkit_net::transport::chaos::ChaosTransport;
    use meshkit_net::transport::memory::MemoryNetwork;

    use super::*;
    use crate::driver::{Driver, NodeHandle, SeedPeer};

    fn fast_config() -> Config {
        let raw: RawConfig = toml::from_str(
            "probe_interval = \"200ms\"\nprobe_timeout = \"100ms\"\ngossip_interval = \"50ms\"\n",
        )
        .expect("valid overrides");
        Config::try_from(raw).expect("valid overrides")
    }

    fn spawn(
        network: &MemoryNetwork,
        raw_id: u64,
        config: ChaosConfig,
    ) -> (NodeHandle, ChaosEffects) {
        let id = NodeId::new(raw_id);
        let node = Node::new(
            fast_config(),
            id,
            Incarnation::new(1),
            raw_id,
            SystemClock.now(),
        );
        let effects = ChaosEffects::default();
        let transport = ChaosTransport::new(network.attach(id), id, effects.links.clone());
        let (driver, handle) = Driver::new(node, transport, SystemClock);
        tokio::spawn(driver.with_chaos(config, effects.clone()));
        (handle, effects)
    }

    async fn eventually<F, Fut>(limit: StdDuration, mut check: F) -> bool
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = bool>,
    {
        let step = StdDuration::from_millis(20);
        let deadline = tokio::time::Instant::now() + limit;
        for _ in 0..(limit.as_millis() / step.as_millis()) + 1 {
            if check().await {
                return true;
            }
            if tokio::time::Instant::now() >= deadline {
                break;
            }
            tokio::time::sleep(step).await;
        }
        false
    }

    async fn all_alive(nodes: &[NodeHandle]) -> bool {
        for node in nodes {
            if node.snapshot().await.unwrap().count(MemberState::Alive) != nodes.len() {
                return false;
            }
        }
        true
    }

    async fn mesh(config: &ChaosConfig) -> (Vec<NodeHandle>, Vec<ChaosEffects>) {
        let network = MemoryNetwork::new();
        let (nodes, effects): (Vec<_>, Vec<_>) =
            (1..=3).map(|i| spawn(&network, i, config.clone())).unzip();
        let seed = SeedPeer {
            id: NodeId::new(1),
            addr: SocketAddr::from(([127, 0, 0, 1], 1)),
        };
        for node in &nodes[1..] {
            node.join(vec![seed]).await.unwrap();
        }
        assert!(
            eventually(StdDuration::from_secs(5), || all_alive(&nodes)).await,
            "the drivers did not converge within 5 s"
        );
        (nodes, effects)
    }

    /// A two-way partition of node 3 from the others, applied on every node with one id: each
    /// side stops seeing the other alive; nobody calls abort, yet every node reverts at its
    /// deadline (its own timer) and the view converges again, which each node measures.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_partition_isolates_and_heals_by_itself_at_the_deadline() {
        let config = enabled(&["partition"]);
        let (nodes, effects) = mesh(&config).await;
        let plan = FaultPlan::new(
            FaultKind::Partition {
                shape: PartitionShape::One,
                direction: PartitionDirection::TwoWay,
            },
            Selector::Indices(vec![2]),
            Duration::from_secs(3),
        )
        .unwrap();
        let view = nodes[0].chaos_view().await.unwrap();
        assert_eq!(view.members().len(), 3);
        let radius = resolve(&plan, &view).unwrap();
        assert_eq!(radius.groups[0], [NodeId::new(3)]);
        for node in &nodes {
            let status = node
                .chaos_apply(experiment(1), plan.clone(), radius.clone())
                .await
                .unwrap();
            assert_eq!(status.phase, "active");
            assert!(status.applied_here);
        }
        let not_alive = |node: &NodeHandle, peer: u64| {
            let node = node.clone();
            async move {
                node.snapshot()
                    .await
                    .unwrap()
                    .peer(NodeId::new(peer))
                    .is_some_and(|p| p.state != MemberState::Alive)
            }
        };
        let split = eventually(StdDuration::from_secs(3), || async {
            not_alive(&nodes[0], 3).await
                && not_alive(&nodes[1], 3).await
                && not_alive(&nodes[2], 1).await
                && not_alive(&nodes[2], 2).await
        })
        .await;
        assert!(
            split,
            "the two sides did not suspect each other within the 3 s partition"
        );
        assert!(effects.iter().all(|e| e.links.counts().dropped > 0));

        // Nobody calls abort: each node's own deadline reverts it.
        let reverted = eventually(StdDuration::from_secs(5), || async {
            for node in &nodes {
                let list = node.chaos_experiments().await.unwrap();
                if list[0].end_reason.as_deref() != Some("deadline") {
                    return false;
                }
            }
            true
        })
        .await;
        assert!(reverted, "not every node reverted at its deadline");
        assert!(effects.iter().all(|e| e.links.rules().is_empty()));
        assert!(
            eventually(StdDuration::from_secs(20), || all_alive(&nodes)).await,
            "the mesh did not heal within 20 s of the revert"
        );
        // The recovery is measured once the view has converged.
        let measured = eventually(StdDuration::from_secs(2), || async {
            let mut all = true;
            for node in &nodes {
                all &= node.snapshot().await.unwrap().chaos.recovery.count == 1;
            }
            all
        })
        .await;
        assert!(measured, "every node measures its recovery once");
        let s = nodes[0].snapshot().await.unwrap();
        assert_eq!(s.chaos.reverts.get(&("partition", "deadline")), Some(&1));
        assert_eq!(s.chaos.activations.get("partition"), Some(&1));
    }

    /// A pause holds the driver: its peers stop hearing from it, it answers chaos calls, and
    /// it runs again at the deadline. The kill switch through the handle reverts the pause and
    /// refuses new experiments until re-armed.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn pause_holds_the_node_and_the_kill_switch_releases_it() {
        let config = enabled(&["pause", "partition"]);
        let (nodes, _effects) = mesh(&config).await;
        let plan = FaultPlan::new(
            FaultKind::Pause {},
            Selector::Indices(vec![2]),
            Duration::from_secs(60),
        )
        .unwrap();
        let radius = resolve(&plan, &nodes[0].chaos_view().await.unwrap()).unwrap();
        nodes[2]
            .chaos_apply(experiment(1), plan, radius)
            .await
            .unwrap();
        let suspected = eventually(StdDuration::from_secs(5), || async {
            nodes[0]
                .snapshot()
                .await
                .unwrap()
                .peer(NodeId::new(3))
                .is_some_and(|p| p.state != MemberState::Alive)
        })
        .await;
        assert!(suspected, "the paused node was not suspected within 5 s");
        // Paused, it still answers the chaos calls: the kill switch reaches it.
        assert_eq!(nodes[2].chaos_kill_switch().await.unwrap(), 1);
        let (partition, partition_radius) = {
            let plan = FaultPlan::new(
                FaultKind::Partition {
                    shape: PartitionShape::One,
                    direction: PartitionDirection::TwoWay,
                },
                Selector::Indices(vec![2]),
                Duration::from_secs(3),
            )
            .unwrap();
            let radius = resolve(&plan, &nodes[0].chaos_view().await.unwrap()).unwrap();
            (plan, radius)
        };
        assert_eq!(
            nodes[2]
                .chaos_apply(experiment(2), partition.clone(), partition_radius.clone())
                .await,
            Err(ChaosError::KillSwitchEngaged)
        );
        assert!(nodes[2].snapshot().await.unwrap().chaos.kill_switch_engaged);
        assert!(
            eventually(StdDuration::from_secs(20), || all_alive(&nodes)).await,
            "the mesh did not heal within 20 s of the kill switch"
        );
        nodes[2].chaos_rearm().await.unwrap();
        assert!(
            nodes[2]
                .chaos_apply(experiment(2), partition, partition_radius)
                .await
                .is_ok()
        );
    }

    /// Chaos off: a node refuses every experiment and its wrapper holds no rule.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn chaos_off_refuses_through_the_handle() {
        let network = MemoryNetwork::new();
        let (node, effects) = spawn(&network, 1, ChaosConfig::default());
        let (plan, radius) = partition(30);
        assert_eq!(
            node.chaos_apply(experiment(1), plan, radius).await,
            Err(ChaosError::Disabled)
        );
        assert!(node.chaos_experiments().await.unwrap().is_empty());
        assert!(effects.links.rules().is_empty());
    }
}

/// `clock-skew` on a driver whose clock is tokio's (virtual under `start_paused`, so the rates
/// are exact and the test takes no wall-clock time).
mod skew {
    use std::net::SocketAddr;
    use std::time::Duration as StdDuration;

    use meshkit::config::RawConfig;
    use meshkit_net::clock::{Clock, TokioClock};
    use meshkit_net::transport::memory::MemoryNetwork;

    use super::*;
    use crate::driver::{Driver, NodeHandle, SeedPeer};

    fn spawn(network: &MemoryNetwork, clock: TokioClock, raw_id: u64) -> NodeHandle {
        let raw: RawConfig =
            toml::from_str("probe_interval = \"200ms\"\nprobe_timeout = \"100ms\"\n").unwrap();
        let id = NodeId::new(raw_id);
        let node = Node::new(
            Config::try_from(raw).unwrap(),
            id,
            Incarnation::new(1),
            raw_id,
            clock.now(),
        );
        let (driver, handle) = Driver::new(node, network.attach(id), clock);
        tokio::spawn(driver.with_chaos(enabled(&["clock-skew"]), ChaosEffects::default()));
        handle
    }

    /// Membership datagrams `node` sends in `window` of (virtual) real time.
    async fn sent_in(node: &NodeHandle, window: StdDuration) -> u64 {
        let before = node
            .snapshot()
            .await
            .unwrap()
            .traffic
            .membership
            .datagrams_sent;
        tokio::time::sleep(window).await;
        node.snapshot()
            .await
            .unwrap()
            .traffic
            .membership
            .datagrams_sent
            - before
    }

    /// A node whose clock runs four times fast probes and gossips about four times as often,
    /// while its peer, on real time, does not; the experiment still ends at its real deadline
    /// (30 s, not 30 s of the skewed clock), and the node's pace returns to normal.
    #[tokio::test(start_paused = true)]
    async fn a_skewed_node_runs_its_timers_at_the_rate_and_reverts_on_real_time() {
        let network = MemoryNetwork::new();
        let clock = TokioClock::starting_now();
        let nodes = [spawn(&network, clock, 1), spawn(&network, clock, 2)];
        let seed = SeedPeer {
            id: NodeId::new(1),
            addr: SocketAddr::from(([127, 0, 0, 1], 1)),
        };
        nodes[1].join(vec![seed]).await.unwrap();
        tokio::time::sleep(StdDuration::from_secs(5)).await;
        let window = StdDuration::from_secs(10);
        let normal = [
            sent_in(&nodes[0], window).await,
            sent_in(&nodes[1], window).await,
        ];

        let plan = FaultPlan::new(
            FaultKind::ClockSkew { rate: 4.0 },
            Selector::Indices(vec![0]),
            Duration::from_secs(30),
        )
        .unwrap();
        let radius = resolve(&plan, &nodes[0].chaos_view().await.unwrap()).unwrap();
        nodes[0]
            .chaos_apply(experiment(1), plan, radius)
            .await
            .unwrap();
        let skewed = sent_in(&nodes[0], window).await;
        let peer = sent_in(&nodes[1], window).await;
        let ratio = skewed as f64 / normal[0] as f64;
        assert!(
            (3.0..=5.0).contains(&ratio),
            "rate 4: node 1 sent {skewed} datagrams in 10 s against {} before ({ratio:.2}x)",
            normal[0]
        );
        // The peer answers more probes but sends no probes of its own faster.
        assert!(
            (peer as f64) < normal[1] as f64 * 2.5,
            "the peer's pace changed: {peer} against {}",
            normal[1]
        );
        // 20 s of real time in: on the skewed clock 80 s have passed, yet the 30 s experiment
        // is still active, because the chaos schedule runs on real time.
        let active = nodes[0].chaos_experiments().await.unwrap();
        assert_eq!(active[0].phase, "active", "{active:?}");

        tokio::time::sleep(StdDuration::from_secs(15)).await;
        let ended = nodes[0].chaos_experiments().await.unwrap();
        assert_eq!(ended[0].phase, "reverted", "{ended:?}");
        let after = sent_in(&nodes[0], window).await;
        let ratio = after as f64 / normal[0] as f64;
        assert!(
            (0.7..=1.4).contains(&ratio),
            "after the revert node 1 sent {after} datagrams in 10 s against {} ({ratio:.2}x)",
            normal[0]
        );
        let stats = nodes[0].snapshot().await.unwrap().chaos;
        assert_eq!(stats.reverts.get(&("clock-skew", "deadline")), Some(&1));
    }
}
