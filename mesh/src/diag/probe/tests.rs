//! The probe scheduler's rules, on virtual time.

use alloc::boxed::Box;
use alloc::collections::VecDeque;
use alloc::string::String;
use alloc::vec::Vec;
use core::any::Any;

use super::*;

const MS: Duration = Duration::from_millis(1);

/// A synchronous probe that answers from a script (then passes), with a latency per answer.
#[derive(Debug, Default)]
struct Scripted {
    script: VecDeque<(ProbeOutcome, Duration)>,
    cancelled: u32,
}

impl Probe for Scripted {
    fn kind(&self) -> &str {
        "scripted"
    }
    fn start(&mut self, _now: Instant, _deadline: Instant) -> Start {
        let (outcome, latency) = self.script.pop_front().unwrap_or((Pass, Duration::ZERO));
        Start::Done { outcome, latency }
    }
    fn cancel(&mut self) {
        self.cancelled += 1;
    }
}

/// A probe whose runs the host carries out (it always answers Pending).
#[derive(Debug, Default)]
struct Remote {
    cancelled: u32,
}

impl Probe for Remote {
    fn kind(&self) -> &str {
        "remote"
    }
    fn start(&mut self, _now: Instant, _deadline: Instant) -> Start {
        Start::Pending
    }
    fn cancel(&mut self) {
        self.cancelled += 1;
    }
}

fn spec(name: &str) -> ProbeSpec {
    ProbeSpec::new(name)
        .unwrap()
        .with_timing(Duration::from_secs(1), 100 * MS)
        .unwrap()
}

fn scripted(results: &[(ProbeOutcome, u64)]) -> Box<Scripted> {
    Box::new(Scripted {
        script: results
            .iter()
            .map(|&(o, ms)| (o, Duration::from_millis(ms)))
            .collect(),
        cancelled: 0,
    })
}

/// Steps to the next deadline `runs` times; returns the state after each step and every event.
fn step_runs(s: &mut ProbeScheduler, runs: usize) -> (Vec<ProbeState>, Vec<ProbeEvent>) {
    let mut states = Vec::new();
    let mut events = Vec::new();
    for _ in 0..runs {
        let now = s.poll_timeout().expect("a probe is registered");
        s.handle_timeout(now);
        events.extend(core::iter::from_fn(|| s.poll_event()));
        states.push(s.statuses().next().unwrap().state());
    }
    (states, events)
}

use ProbeOutcome::{Fail, Pass};
use ProbeState::{Degraded, Failing, Healthy, Unknown};

#[test]
fn run_events_report_every_result_before_the_state_change_it_caused() {
    let mut s = ProbeScheduler::new(1);
    let script = [(Pass, 0), (Pass, 0), (Fail, 0), (Fail, 0), (Fail, 0)];
    let id = s
        .register(Instant::ZERO, spec("a"), scripted(&script))
        .unwrap();
    // Off by default: only the state changes.
    let (_, quiet) = step_runs(&mut s, 1);
    assert!(quiet.is_empty(), "{quiet:?}");
    s.set_run_events(true);
    let (_, events) = step_runs(&mut s, script.len() - 1);
    let seen: Vec<String> = events
        .iter()
        .map(|event| match *event {
            ProbeEvent::Finished { probe, record } => {
                assert_eq!(probe, id);
                record.result.as_str().to_owned()
            }
            ProbeEvent::StateChanged { to, .. } => format!("-> {to}"),
        })
        .collect();
    assert_eq!(
        seen,
        ["pass", "-> healthy", "fail", "fail", "fail", "-> failing"]
    );
}

#[test]
fn states_change_exactly_at_the_thresholds() {
    let mut s = ProbeScheduler::new(1);
    // Defaults: F = 3, S = 2.
    let script = [
        (Pass, 0), // Unknown (1 pass)
        (Pass, 0), // Healthy (S = 2)
        (Fail, 0),
        (Fail, 0), // still Healthy (2 < F)
        (Fail, 0), // Failing (F = 3)
        (Pass, 0), // still Failing (1 < S)
        (Fail, 0), // streak broken
        (Pass, 0),
        (Pass, 0), // Healthy again
    ];
    let id = s
        .register(Instant::ZERO, spec("a"), scripted(&script))
        .unwrap();
    let (states, events) = step_runs(&mut s, script.len());
    assert_eq!(
        states,
        [
            Unknown, Healthy, Healthy, Healthy, Failing, Failing, Failing, Failing, Healthy
        ]
    );
    let changes: Vec<(ProbeState, ProbeState)> = events
        .iter()
        .filter_map(|event| match *event {
            ProbeEvent::StateChanged {
                from, to, probe, ..
            } => {
                assert_eq!(probe, id);
                Some((from, to))
            }
            _ => None,
        })
        .collect();
    assert_eq!(
        changes,
        [(Unknown, Healthy), (Healthy, Failing), (Failing, Healthy)]
    );
    let status = s.status(id).unwrap();
    assert_eq!(status.count(ProbeResult::Fail), 4);
    assert_eq!(status.count(ProbeResult::Pass), 5);
    assert_eq!(status.consecutive_successes(), 2);
}

#[test]
fn other_thresholds_are_honoured() {
    let mut s = ProbeScheduler::new(1);
    let spec = spec("a").with_thresholds(1, 4).unwrap();
    let script = [(Pass, 0), (Pass, 0), (Pass, 0), (Pass, 0), (Fail, 0)];
    s.register(Instant::ZERO, spec, scripted(&script)).unwrap();
    let (states, _) = step_runs(&mut s, script.len());
    assert_eq!(states, [Unknown, Unknown, Unknown, Healthy, Failing]);
}

#[test]
fn slow_answers_degrade_and_fast_ones_restore() {
    let mut s = ProbeScheduler::new(1);
    let spec = spec("a").with_degraded_latency(20 * MS).unwrap();
    let script = [
        (Pass, 1),
        (Pass, 1),  // Healthy
        (Pass, 30), // slow
        (Fail, 0),  // failed: not fast either
        (Pass, 21), // Degraded: 3 (F) results in a row without a fast pass
        (Pass, 20), // at the threshold: fast
        (Pass, 5),  // Healthy: 2 (S) fast passes
        (Fail, 0),
        (Fail, 0),
        (Fail, 0), // Failing
        (Pass, 50),
        (Pass, 2), // back, but one of the S passes was slow: Degraded
    ];
    s.register(Instant::ZERO, spec, scripted(&script)).unwrap();
    let (states, _) = step_runs(&mut s, script.len());
    assert_eq!(
        states,
        [
            Unknown, Healthy, Healthy, Healthy, Degraded, Degraded, Healthy, Healthy, Healthy,
            Failing, Failing, Degraded
        ]
    );
    let status = s.statuses().next().unwrap();
    assert_eq!(status.count(ProbeResult::Slow), 3);
}

#[test]
fn an_unreported_run_times_out_and_counts_as_a_failure() {
    let mut s = ProbeScheduler::new(3);
    let id = s
        .register(Instant::ZERO, spec("remote"), Box::new(Remote::default()))
        .unwrap();
    // Two runs pass through the host; then the host goes quiet.
    for _ in 0..2 {
        let now = s.poll_timeout().unwrap();
        s.handle_timeout(now);
        let Some(ProbeAction::Run {
            run,
            probe,
            deadline,
        }) = s.poll_action()
        else {
            panic!("a pending probe asks the host to run it");
        };
        assert_eq!(probe, id);
        assert_eq!(deadline, now + 100 * MS);
        assert_eq!(s.report(run, Pass, now + 7 * MS), Ok(ProbeResult::Pass));
    }
    assert_eq!(s.status(id).unwrap().state(), Healthy);
    assert_eq!(s.status(id).unwrap().latency_percentile(50), Some(7 * MS));
    let mut stale = None;
    for k in 0..3 {
        let start = s.poll_timeout().unwrap();
        s.handle_timeout(start);
        let Some(ProbeAction::Run { run, deadline, .. }) = s.poll_action() else {
            panic!("run {k}");
        };
        assert_eq!(
            s.poll_timeout(),
            Some(deadline),
            "the deadline is the next wakeup"
        );
        s.handle_timeout(deadline);
        assert_eq!(
            s.status(id).unwrap().consecutive_failures(),
            k + 1,
            "the deadline recorded a failure"
        );
        stale = Some(run);
    }
    assert_eq!(s.status(id).unwrap().state(), Failing);
    assert_eq!(s.status(id).unwrap().count(ProbeResult::Timeout), 3);
    assert_eq!(
        s.status(id).unwrap().latency_percentile(100),
        Some(100 * MS)
    );
    let downcast = (s.probe_mut(id).unwrap() as &mut dyn Any).downcast_mut::<Remote>();
    assert_eq!(downcast.unwrap().cancelled, 3);
    // A late answer changes nothing.
    let run = stale.unwrap();
    assert_eq!(
        s.report(run, Pass, Instant::MAX),
        Err(ReportError::UnknownRun { run })
    );
}

#[test]
fn an_answer_at_the_deadline_is_a_timeout() {
    let mut s = ProbeScheduler::new(3);
    s.register(Instant::ZERO, spec("remote"), Box::new(Remote::default()))
        .unwrap();
    let now = s.poll_timeout().unwrap();
    s.handle_timeout(now);
    let Some(ProbeAction::Run { run, deadline, .. }) = s.poll_action() else {
        panic!("pending");
    };
    // The host's answer arrives at the deadline, before the host calls handle_timeout.
    assert_eq!(s.report(run, Pass, deadline), Ok(ProbeResult::Timeout));
    assert_eq!(
        s.report(run, Pass, deadline),
        Err(ReportError::UnknownRun { run }),
        "reported once only"
    );
    // Its deadline is gone: the next wakeup is the next run.
    assert!(s.poll_timeout().unwrap() >= now + Duration::from_secs(1));
    // A synchronous probe that measured the timeout or more also timed out.
    let mut s = ProbeScheduler::new(3);
    s.register(Instant::ZERO, spec("a"), scripted(&[(Pass, 100)]))
        .unwrap();
    step_runs(&mut s, 1);
    let status = s.statuses().next().unwrap();
    assert_eq!(status.count(ProbeResult::Timeout), 1);
}

/// The instants each probe starts at over `runs` runs of `probes` probes.
fn schedule(seed: u64, probes: usize, runs: usize, jitter_percent: u32) -> Vec<(ProbeId, Instant)> {
    let mut s = ProbeScheduler::new(seed);
    for k in 0..probes {
        let spec = spec(&alloc::format!("p{k}"))
            .with_history(8, jitter_percent)
            .unwrap();
        s.register(Instant::ZERO, spec, Box::new(Remote::default()))
            .unwrap();
    }
    let mut starts = Vec::new();
    while starts.len() < probes * runs {
        let now = s.poll_timeout().unwrap();
        s.handle_timeout(now);
        while let Some(ProbeAction::Run { run, probe, .. }) = s.poll_action() {
            starts.push((probe, now));
            s.report(run, Pass, now + MS).unwrap();
        }
    }
    starts
}

#[test]
fn jitter_stays_within_its_bound_and_follows_the_seed() {
    let interval = Duration::from_secs(1);
    let max_jitter = interval * 10 / 100;
    let starts = schedule(5, 20, 30, 10);
    let mut per_probe: alloc::collections::BTreeMap<ProbeId, Vec<Instant>> = Default::default();
    for &(probe, at) in &starts {
        per_probe.entry(probe).or_default().push(at);
    }
    let mut gaps = Vec::new();
    for times in per_probe.values() {
        assert!(
            times[0] < Instant::ZERO + interval,
            "first run within one interval"
        );
        for w in times.windows(2) {
            let gap = w[1] - w[0];
            assert!(
                gap >= interval && gap <= interval + max_jitter,
                "gap {gap:?} outside interval..=interval+10%"
            );
            gaps.push(gap);
        }
    }
    // The jitter is used, not stuck at one end.
    assert!(gaps.iter().any(|&g| g < interval + max_jitter / 4));
    assert!(gaps.iter().any(|&g| g > interval + max_jitter * 3 / 4));
    // The first runs spread over the interval.
    let firsts: Vec<Instant> = per_probe.values().map(|t| t[0]).collect();
    assert!(
        firsts.iter().max().unwrap().as_nanos() - firsts.iter().min().unwrap().as_nanos()
            > 500_000_000
    );

    assert_eq!(schedule(5, 20, 30, 10), starts, "same seed, same schedule");
    assert_ne!(
        schedule(6, 20, 30, 10),
        starts,
        "another seed, another schedule"
    );
    // No jitter: every gap is exactly the interval.
    let plain = schedule(5, 3, 10, 0);
    for probe in 0..3 {
        let times: Vec<Instant> = plain
            .iter()
            .filter(|(p, _)| p.get() == probe)
            .map(|&(_, t)| t)
            .collect();
        assert!(times.windows(2).all(|w| w[1] - w[0] == interval));
    }
}

#[test]
fn history_is_bounded_and_percentiles_read_it() {
    let mut s = ProbeScheduler::new(1);
    let spec = spec("a").with_history(10, 0).unwrap();
    // Latencies 1..=25 ms; only the last 10 (16..=25) are kept.
    let script: Vec<(ProbeOutcome, u64)> = (1..=25).map(|ms| (Pass, ms)).collect();
    let id = s.register(Instant::ZERO, spec, scripted(&script)).unwrap();
    step_runs(&mut s, 25);
    let status = s.status(id).unwrap();
    assert_eq!(status.history().len(), 10);
    let kept: Vec<Duration> = status.history().map(|r| r.latency).collect();
    assert_eq!(kept, (16..=25).map(|ms| ms * MS).collect::<Vec<_>>());
    assert_eq!(
        status.count(ProbeResult::Pass),
        25,
        "counters are not bounded"
    );
    assert_eq!(status.latency_percentile(0), Some(16 * MS));
    assert_eq!(status.latency_percentile(50), Some(20 * MS));
    assert_eq!(status.latency_percentile(90), Some(24 * MS));
    assert_eq!(status.latency_percentile(99), Some(25 * MS));
    assert_eq!(status.latency_percentile(1000), Some(25 * MS));
}

#[test]
fn registration_is_checked_and_removal_cancels() {
    let mut s = ProbeScheduler::new(1);
    let id = s
        .register(Instant::ZERO, spec("a"), Box::new(Remote::default()))
        .unwrap();
    let Err(RegisterError::DuplicateName { name, probe }) =
        s.register(Instant::ZERO, spec("a"), scripted(&[]))
    else {
        panic!("a second probe named a");
    };
    assert_eq!((name.as_str(), probe.kind()), ("a", "scripted"));
    assert_eq!(s.find("a"), Some(id));
    let now = s.poll_timeout().unwrap();
    s.handle_timeout(now);
    let Some(ProbeAction::Run { run, .. }) = s.poll_action() else {
        panic!("pending");
    };
    let probe = s.remove(id).unwrap();
    let probe: Box<dyn Any> = probe;
    assert_eq!(probe.downcast::<Remote>().unwrap().cancelled, 1);
    assert_eq!(s.poll_timeout(), None, "nothing due, no deadline left");
    assert_eq!(
        s.report(run, Pass, now),
        Err(ReportError::UnknownRun { run })
    );
    assert!(s.is_empty() && s.find("a").is_none());
    // The name is free again; ids are not reused.
    let again = s.register(now, spec("a"), scripted(&[])).unwrap();
    assert_ne!(again, id);
    // A spurious timeout does nothing.
    s.handle_timeout(now);
    assert_eq!(s.status(again).unwrap().history().len(), 0);
}

#[test]
fn spec_errors_name_the_field() {
    let parse = |text: &str| -> Result<ProbeSpec, ProbeSpecError> {
        ProbeSpec::try_from(toml::from_str::<RawProbeSpec>(text).unwrap())
    };
    let e = |text: &str| parse(text).unwrap_err().to_string();
    let s = parse("name = \"db\"").unwrap();
    assert_eq!(
        (
            s.interval(),
            s.timeout(),
            s.failure_threshold(),
            s.success_threshold()
        ),
        (DEFAULT_INTERVAL, DEFAULT_TIMEOUT, 3, 2)
    );
    assert_eq!(
        e("name = \"db\"\nfailure_threshold = 0"),
        "probe.failure_threshold = 0 is out of range: allowed 1..=100"
    );
    assert_eq!(
        e("name = \"db\"\nsuccess_threshold = 101"),
        "probe.success_threshold = 101 is out of range: allowed 1..=100"
    );
    assert_eq!(
        e("name = \"db\"\ninterval = \"1s\"\ntimeout = \"2s\""),
        "probe.timeout = 2000ms is out of range: allowed 1ms..=1000ms"
    );
    assert_eq!(
        e("name = \"db\"\ninterval = \"5ms\""),
        "probe.interval = 5ms is out of range: allowed 10ms..=3600000ms"
    );
    assert_eq!(
        e("name = \"db\"\ndegraded_latency = \"1s\""),
        "probe.degraded_latency must be less than timeout"
    );
    assert_eq!(
        e("name = \"db\"\nhistory = 0"),
        "probe.history = 0 is out of range: allowed 1..=1024"
    );
    assert_eq!(
        e("name = \"db\"\njitter_percent = 60"),
        "probe.jitter_percent = 60 is out of range: allowed 0..=50"
    );
    assert_eq!(e("name = \"\""), "probe.name \"\": empty");
    assert!(e("name = \"Db\"").starts_with("probe.name \"Db\": only a-z"));
    assert!(
        e("name = \"db\"\n[tags]\ncluster = \"EU\"").starts_with("probe.tags.cluster \"EU\": ")
    );
    assert!(
        e("name = \"db\"\n[tags]\nlabels = { tier = \"a b\" }")
            .starts_with("probe.tags.labels.tier \"a b\": ")
    );
    let many: Vec<String> = (0..9).map(|k| alloc::format!("k{k} = \"v\"")).collect();
    assert_eq!(
        e(&alloc::format!(
            "name = \"db\"\n[tags.labels]\n{}",
            many.join("\n")
        )),
        "probe.tags.labels has 9 labels: at most 8"
    );
    assert!(toml::from_str::<RawProbeSpec>("name = \"db\"\nperiod = \"1s\"").is_err());
    // A spec round-trips through its serde form.
    let tagged = parse(
        "name = \"db\"\ninterval = \"2s\"\ndegraded_latency = \"50ms\"\n[tags]\ncluster = \"eu-1\"\nlabels = { tier = \"db\" }",
    )
    .unwrap();
    let json = serde_json::to_string(&tagged).unwrap();
    assert_eq!(serde_json::from_str::<ProbeSpec>(&json).unwrap(), tagged);
}

/// A probe of the host's that keeps the default `cancel`: its runs never get an answer.
#[derive(Debug)]
struct Silent;

impl Probe for Silent {
    fn kind(&self) -> &str {
        "silent"
    }
    fn start(&mut self, _now: Instant, _deadline: Instant) -> Start {
        Start::Pending
    }
}

/// The names payloads and metric labels use, the ids' display, and what a status shows.
#[test]
fn names_ids_and_status_read_as_documented() {
    let states = [
        (Unknown, "unknown"),
        (Healthy, "healthy"),
        (Degraded, "degraded"),
        (Failing, "failing"),
    ];
    for (state, name) in states {
        assert_eq!(state.as_str(), name);
        assert_eq!(alloc::format!("{state}"), name);
    }
    let results = [
        (ProbeResult::Pass, "pass"),
        (ProbeResult::Slow, "slow"),
        (ProbeResult::Fail, "fail"),
        (ProbeResult::Timeout, "timeout"),
    ];
    for (result, name) in results {
        assert_eq!(result.as_str(), name);
    }

    let mut s = ProbeScheduler::new(5);
    assert!(s.is_empty());
    let id = s
        .register(Instant::ZERO, spec("silent"), Box::new(Silent))
        .unwrap();
    assert_eq!(alloc::format!("{id}"), alloc::format!("probe-{}", id.get()));
    assert_eq!(s.len(), 1);
    let status = s.status(id).unwrap();
    assert_eq!((status.id(), status.kind()), (id, "silent"));
    assert_eq!(status.spec().name(), "silent");
    assert_eq!(status.latency_percentile(50), None, "no result yet");
    assert!(!status.is_running());
    let due = status.next_due();
    assert_eq!(s.poll_timeout(), Some(due));

    // Its first run starts and waits for the host; the action names the run.
    s.handle_timeout(due);
    let Some(ProbeAction::Run {
        run,
        probe,
        deadline,
    }) = s.poll_action()
    else {
        panic!("a run to carry out");
    };
    assert_eq!((probe, deadline), (id, due + 100 * MS));
    assert_eq!(alloc::format!("{run}"), alloc::format!("run-{}", run.get()));
    assert!(s.status(id).unwrap().is_running());
    // A call before the deadline settles nothing; at the deadline the default `cancel` runs
    // and the run is a timeout.
    s.handle_timeout(due + 50 * MS);
    assert!(s.status(id).unwrap().is_running());
    s.handle_timeout(deadline);
    let status = s.status(id).unwrap();
    assert!(!status.is_running());
    assert_eq!(status.count(ProbeResult::Timeout), 1);
    assert_eq!(status.latency_percentile(50), Some(100 * MS));
    assert_eq!(s.report(run, Pass, deadline).map_err(|_| ()), Err(()));
}

/// At most `MAX_PROBES` probes; a host that never drains events loses the oldest ones, and the
/// scheduler counts them.
#[test]
fn probes_and_pending_events_are_bounded() {
    let mut s = ProbeScheduler::new(1);
    for i in 0..MAX_PROBES {
        let script = scripted(&[(Pass, 0), (Pass, 0), (Fail, 0), (Fail, 0), (Fail, 0)]);
        s.register(Instant::ZERO, spec(&alloc::format!("p{i}")), script)
            .unwrap();
    }
    let Err(RegisterError::Full { max, .. }) =
        s.register(Instant::ZERO, spec("one-more"), scripted(&[]))
    else {
        panic!("the 4097th probe is refused");
    };
    assert_eq!(max, MAX_PROBES);
    // Each probe turns Healthy, Failing, then Healthy again (its script ends in passes):
    // three events each, three times what the queue holds.
    let end = Instant::ZERO + Duration::from_secs(8);
    while let Some(now) = s.poll_timeout().filter(|&t| t <= end) {
        s.handle_timeout(now);
        while s.poll_action().is_some() {}
    }
    let kept = core::iter::from_fn(|| s.poll_event()).count();
    assert_eq!(kept, MAX_PENDING_EVENTS);
    assert_eq!(
        s.events_dropped(),
        (3 * MAX_PROBES - MAX_PENDING_EVENTS) as u64
    );
}

/// A run answered before its deadline leaves a stale deadline behind, and a removed probe's
/// deadline too: both are skipped when they come due.
#[test]
fn stale_deadlines_are_skipped() {
    let mut s = ProbeScheduler::new(2);
    let a = s
        .register(Instant::ZERO, spec("a"), Box::new(Remote::default()))
        .unwrap();
    let b = s
        .register(Instant::ZERO, spec("b"), Box::new(Remote::default()))
        .unwrap();
    let (mut answered, mut removed) = (false, false);
    let mut last = Instant::ZERO;
    while let Some(now) = s.poll_timeout() {
        if answered && removed && now > last + Duration::from_secs(1) {
            break;
        }
        s.handle_timeout(now);
        last = now;
        while let Some(ProbeAction::Run { run, probe, .. }) = s.poll_action() {
            if probe == a && !answered {
                // Answered at once: its deadline stays queued and is skipped later.
                assert_eq!(s.report(run, Pass, now).unwrap(), ProbeResult::Pass);
                answered = true;
            } else if probe == b && !removed {
                assert!(s.remove(b).is_some());
                removed = true;
            }
        }
    }
    let status = s.status(a).unwrap();
    assert_eq!(status.count(ProbeResult::Pass), 1);
    assert_eq!(
        status.count(ProbeResult::Timeout),
        0,
        "the stale deadline counted nothing"
    );
    assert!(s.status(b).is_none());
}
