use std::time::Duration;

use meshkit_api::json::BackpressureJson;

use super::{Direction, Policy, PolicyConfig, Signals};

fn s(secs: f64) -> Duration {
    Duration::from_secs_f64(secs)
}

/// min 1, max 3; out after 2 s active, in after 8 s inactive, 5 s between decisions.
fn policy() -> Policy {
    Policy::new(PolicyConfig {
        min_workers: 1,
        max_workers: 3,
        scale_out_after: s(2.0),
        scale_in_after: s(8.0),
        cooldown: s(5.0),
    })
}

/// Feeds `active` every 100 ms over [from, to) and returns each decision's time and direction.
fn feed(p: &mut Policy, from: f64, to: f64, active: bool) -> Vec<(f64, Direction)> {
    // Whole milliseconds, so that 20 steps of 100 ms are exactly 2 s.
    let (from, to) = ((from * 1000.0).round() as u64, (to * 1000.0).round() as u64);
    (from..to)
        .step_by(100)
        .filter_map(|ms| {
            p.observe(Duration::from_millis(ms), active)
                .map(|d| (ms as f64 / 1000.0, d.direction))
        })
        .collect()
}

#[test]
fn a_scale_out_waits_for_the_dwell_of_active_backpressure() {
    let mut p = policy();
    assert_eq!(feed(&mut p, 0.0, 10.0, false), vec![], "inactive: nothing");
    // Active from 10 s: nothing before 12 s, one worker more at 12 s.
    assert_eq!(feed(&mut p, 10.0, 11.95, true), vec![]);
    let d = p.observe(s(12.0), true).expect("the dwell is met at 12 s");
    assert_eq!((d.direction, d.from, d.to), (Direction::ScaleOut, 1, 2));
    assert!(d.reason.contains("active for 2.0 s"), "{}", d.reason);
}

#[test]
fn a_break_in_the_signal_restarts_the_dwell() {
    let mut p = policy();
    // Active 1.5 s, inactive 0.1 s, active 1.5 s: never 2 s without a break.
    assert_eq!(feed(&mut p, 0.0, 1.5, true), vec![]);
    assert_eq!(feed(&mut p, 1.5, 1.6, false), vec![]);
    assert_eq!(feed(&mut p, 1.6, 3.1, true), vec![]);
    assert_eq!(p.workers(), 1);
}

#[test]
fn a_scale_in_waits_for_the_longer_inactive_time_hysteresis() {
    let mut p = policy();
    assert_eq!(
        feed(&mut p, 0.0, 2.05, true),
        vec![(2.0, Direction::ScaleOut)]
    );
    // Inactive from 2.1 s: the cooldown is over at 7 s, but a scale-in needs 8 s inactive
    // (10.1 s), not the 2 s a scale-out needs.
    assert_eq!(feed(&mut p, 2.1, 10.05, false), vec![]);
    assert_eq!(
        feed(&mut p, 10.1, 10.15, false),
        vec![(10.1, Direction::ScaleIn)]
    );
    assert_eq!(p.workers(), 1);
}

#[test]
fn two_decisions_are_at_least_a_cooldown_apart_in_either_direction() {
    let mut p = policy();
    // Active throughout: out at 2 s, again only at 7 s (the cooldown), then at max.
    let outs = feed(&mut p, 0.0, 20.0, true);
    assert_eq!(
        outs,
        vec![(2.0, Direction::ScaleOut), (7.0, Direction::ScaleOut)]
    );
    // Inactive from 20 s: in at 28 s, the next in only at 33 s.
    let ins = feed(&mut p, 20.0, 40.0, false);
    assert_eq!(
        ins,
        vec![(28.0, Direction::ScaleIn), (33.0, Direction::ScaleIn)]
    );
    // A scale-in right after a scale-out waits for the cooldown too.
    let mut p = Policy::new(PolicyConfig {
        scale_in_after: s(2.0),
        ..policy().config
    });
    assert_eq!(
        feed(&mut p, 0.0, 2.05, true),
        vec![(2.0, Direction::ScaleOut)]
    );
    assert_eq!(
        feed(&mut p, 2.1, 10.0, false),
        vec![(7.0, Direction::ScaleIn)],
        "inactive for 2 s at 4.1 s, but the cooldown holds it to 7 s"
    );
}

#[test]
fn the_worker_count_stays_within_min_and_max() {
    let mut p = policy();
    let outs = feed(&mut p, 0.0, 100.0, true);
    assert_eq!(outs.len(), 2, "1 to 3, then nothing: {outs:?}");
    assert_eq!(p.workers(), 3);
    let ins = feed(&mut p, 100.0, 200.0, false);
    assert_eq!(ins.len(), 2, "3 to 1, then nothing: {ins:?}");
    assert_eq!(p.workers(), 1);
    // min == max: never a decision.
    let mut fixed = Policy::new(PolicyConfig {
        min_workers: 2,
        max_workers: 2,
        ..policy().config
    });
    assert_eq!(fixed.workers(), 2);
    assert!(feed(&mut fixed, 0.0, 50.0, true).is_empty());
    assert!(feed(&mut fixed, 50.0, 100.0, false).is_empty());
}

fn signal(shard: &str, active: bool, pending: u32, owner: u64, fence: u64) -> BackpressureJson {
    BackpressureJson {
        is_active: active,
        pending_count: pending,
        observed_at: "2026-12-07T02:00:00Z".to_owned(),
        high_watermark: Some(60),
        low_watermark: 15,
        shard: shard.to_owned(),
        owner,
        fence,
    }
}

#[test]
fn signals_follow_the_newest_owner_of_each_shard_and_any_active_shard_counts() {
    let mut sig = Signals::default();
    assert!(!sig.active(), "nothing seen: inactive");
    assert!(sig.update(&signal("shard/jobs/0", false, 3, 1, 10)));
    assert!(sig.update(&signal("shard/jobs/1", true, 80, 2, 11)));
    assert!(sig.active(), "one hot shard is enough");
    assert_eq!(sig.pending(), 83);
    // Shard 1 moves to node 3 (fence 12), which has drained it; then a late signal of the old
    // owner (fence 11, still active) arrives from a lagging node's stream: ignored.
    assert!(sig.update(&signal("shard/jobs/1", false, 10, 3, 12)));
    assert!(!sig.active());
    assert!(!sig.update(&signal("shard/jobs/1", true, 80, 2, 11)));
    assert!(!sig.active(), "the deposed owner's signal is stale");
    assert_eq!(sig.shards()["shard/jobs/1"].owner, 3);
}
