//! The figures from made-up polls: detection dated by `last_change_s_ago`, false positives,
//! heal and one view.

use meshkit_api::json::{PeerJson, PeersResponse};
use meshkit_sim::RunReport;

use meshkit_api::json::{LeadershipView, RaftView, TableLease};

use super::{HOLDER_SCOPE, NodeAnswer, Observer, Takeover, Undated};

fn answer(node: u64, states: &[(u64, &str, f64)]) -> NodeAnswer {
    NodeAnswer {
        node,
        peers: Some(PeersResponse {
            local: node,
            peers: states
                .iter()
                .map(|&(id, state, ago)| PeerJson {
                    id,
                    state: state.to_owned(),
                    incarnation: 1,
                    rtt_ms: None,
                    metadata: Default::default(),
                    addr: None,
                    last_change_s_ago: ago,
                })
                .collect(),
            total: states.len(),
            next_after: None,
        }),
        leaders: None,
    }
}

fn all_alive(node: u64, ids: &[u64]) -> NodeAnswer {
    answer(
        node,
        &ids.iter().map(|&i| (i, "alive", 100.0)).collect::<Vec<_>>(),
    )
}

#[test]
fn detection_is_dated_by_the_verdicts_not_by_the_poll() {
    let mut o = Observer::new(1..=3);
    o.record(
        0.0,
        &[
            all_alive(1, &[1, 2, 3]),
            all_alive(2, &[1, 2, 3]),
            all_alive(3, &[1, 2, 3]),
        ],
    );
    o.killed_at(3, 10.0);
    // At 16 s node 1 says node 3 is dead since 1.5 s ago, node 2 not yet.
    o.record(
        16.0,
        &[
            answer(
                1,
                &[(1, "alive", 100.0), (2, "alive", 100.0), (3, "dead", 1.5)],
            ),
            answer(
                2,
                &[
                    (1, "alive", 100.0),
                    (2, "alive", 100.0),
                    (3, "suspect", 2.0),
                ],
            ),
        ],
    );
    assert!(
        o.detections.is_empty(),
        "one of two observers is not detection"
    );
    // At 17 s node 2 too, since 0.2 s: the last verdict at 16.8 s, 6.8 s after the kill.
    o.record(
        17.0,
        &[
            answer(
                1,
                &[(1, "alive", 100.0), (2, "alive", 100.0), (3, "dead", 2.5)],
            ),
            answer(
                2,
                &[(1, "alive", 100.0), (2, "alive", 100.0), (3, "dead", 0.2)],
            ),
        ],
    );
    let r = o.figures(RunReport::default(), 60.0);
    assert_eq!(r.detection_p50_s, Some(6.8));
    assert_eq!(r.crashes, 1);
    assert_eq!(r.undetected, 0);
    assert_eq!(r.false_positives, 0);
    assert!(r.converged, "{:?}", r.convergence_note);
}

#[test]
fn a_kill_never_detected_counts_the_rest_of_the_run() {
    let mut o = Observer::new(1..=2);
    o.killed_at(2, 10.0);
    o.record(20.0, &[all_alive(1, &[1, 2])]);
    let r = o.figures(RunReport::default(), 60.0);
    assert_eq!(r.undetected, 1);
    assert_eq!(r.detection_p99_s, Some(50.0));
    assert!(!r.converged, "node 1 still holds node 2 up");
}

#[test]
fn a_running_untouched_node_held_dead_is_a_false_positive_and_a_killed_one_is_not() {
    let mut o = Observer::new(1..=3);
    o.killed_at(3, 100.0);
    o.record(
        101.0,
        &[
            answer(1, &[(1, "alive", 1.0), (2, "dead", 0.5), (3, "dead", 0.5)]),
            answer(2, &[(1, "alive", 1.0), (2, "alive", 1.0), (3, "dead", 0.5)]),
        ],
    );
    let r = o.figures(RunReport::default(), 120.0);
    assert_eq!(r.false_positives, 1, "node 2, by node 1");
    assert!(
        r.first_false_positive
            .unwrap_or_default()
            .contains("held node 2 dead")
    );
}

#[test]
fn heal_is_timed_from_the_partitions_end_to_one_view() {
    let mut o = Observer::new(1..=2);
    o.partitioned_at(&[1, 2], 5.0);
    o.record(
        10.0,
        &[
            answer(1, &[(1, "alive", 1.0), (2, "dead", 1.0)]),
            answer(2, &[(1, "dead", 1.0), (2, "alive", 1.0)]),
        ],
    );
    o.healed_at(&[1, 2], 20.0);
    o.record(
        21.0,
        &[
            answer(1, &[(1, "alive", 1.0), (2, "dead", 1.0)]),
            answer(2, &[(1, "alive", 0.5), (2, "alive", 1.0)]),
        ],
    );
    // At 23.5 s one view; the last verdict that made it (node 1 on node 2) is 1.3 s old: the
    // view was one at 22.2 s, 2.2 s after the heal, not at the poll.
    o.record(
        23.5,
        &[
            answer(1, &[(1, "alive", 100.0), (2, "alive", 1.3)]),
            answer(2, &[(1, "alive", 2.5), (2, "alive", 100.0)]),
        ],
    );
    let r = o.figures(RunReport::default(), 30.0);
    assert_eq!(r.partitions, 1);
    assert_eq!(r.heal_s, Some(2.2));
    assert_eq!(
        r.false_positives, 0,
        "partitioned nodes held dead are not false positives"
    );
}

/// Node `node`'s answer with a voter's leadership view: Raft leader `leader`, `holder` holding
/// global-control, its feed at `seq`.
fn voter(node: u64, ids: &[u64], leader: u64, holder: u64, seq: u64) -> NodeAnswer {
    let mut a = all_alive(node, ids);
    a.leaders = Some(LeadershipView {
        node,
        voters: vec![1, 2, 3],
        raft: Some(RaftView {
            leader: Some(leader),
            term: 1,
            voters: vec![1, 2, 3],
            applied_index: seq,
            snapshot_index: 0,
            log_entries: seq,
            commit_index: seq,
            change_pending: false,
            progress: Vec::new(),
        }),
        table: vec![TableLease {
            scope: HOLDER_SCOPE.to_owned(),
            holder,
            token: 1,
            term: 1,
            expires_in_ms: 3000,
        }],
        held: Vec::new(),
        campaign: vec![HOLDER_SCOPE.to_owned()],
        last_seq: seq,
        shards: None,
    });
    a
}

#[test]
fn a_failover_seen_at_a_poll_is_dated_by_the_new_holders_feed() {
    let mut o = Observer::new(1..=3);
    // Node 1 leads Raft and holds global-control; node 2's feed is at entry 40.
    o.record(
        0.0,
        &[
            voter(1, &[1, 2, 3], 1, 1, 17),
            voter(2, &[1, 2, 3], 1, 1, 40),
        ],
    );
    o.killed_at(1, 10.0);
    // The poll at 13.9 s sees node 2 as holder and leader.
    o.record(13.9, &[voter(2, &[1, 2, 3], 2, 2, 46)]);
    let undated = o.undated();
    assert_eq!(
        undated,
        vec![
            Undated {
                kill: 0,
                what: Takeover::Holder,
                node: 2,
                after_seq: 40,
                killed_s: 10.0
            },
            Undated {
                kill: 0,
                what: Takeover::RaftLeader,
                node: 2,
                after_seq: 40,
                killed_s: 10.0
            },
        ],
        "the new holder's feed, after its entry at the kill"
    );
    // Its feed: Acquired at 13.2 s; no RaftLeader entry found.
    o.date(0, Takeover::Holder, Some(13.2));
    o.date(0, Takeover::RaftLeader, None);
    assert!(o.undated().is_empty(), "each takeover is asked once");
    let r = o.figures(RunReport::default(), 30.0);
    assert_eq!(
        r.failover_p50_s,
        Some(3.2),
        "the feed's time, not the poll's 3.9 s"
    );
    assert_eq!(
        r.raft_failover_p50_s,
        Some(3.9),
        "no entry: the poll's time stays"
    );
    assert_eq!(o.takeovers_dated, 1);
}

#[test]
fn a_feed_time_outside_the_kill_and_the_poll_is_not_the_takeover() {
    let mut o = Observer::new(1..=3);
    o.record(0.0, &[voter(1, &[1, 2, 3], 1, 1, 5)]);
    o.killed_at(1, 10.0);
    o.record(14.0, &[voter(2, &[1, 2, 3], 2, 2, 9)]);
    // An Acquired before the kill (an older grant) and one after the poll: neither is it.
    o.date(0, Takeover::Holder, Some(9.0));
    o.date(0, Takeover::RaftLeader, Some(14.5));
    let r = o.figures(RunReport::default(), 30.0);
    assert_eq!(r.failover_p50_s, Some(4.0));
    assert_eq!(r.raft_failover_p50_s, Some(4.0));
    assert_eq!(o.takeovers_dated, 0);
}
