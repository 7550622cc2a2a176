//! Health probes ([`meshkit::diag::probe`]) run inside the simulator, on virtual time: the core's
//! own [`ProbeScheduler`] decides when each probe runs and what its results mean; the engine
//! runs each run through the simulated network.
//!
//! The one probe type here is a reachability check from node index `from` to node index `to`:
//! a request that goes through the network model (so every fault plan on that link applies),
//! an answer from `to` only while it is running (a crashed, paused or gone node does not
//! answer), and the answer back through the network model; the run passes when the answer
//! arrives, and times out otherwise. The scheduler runs on global virtual time (the prober's
//! own clock skew is not applied to it). The probes' network draws come from the network's
//! stream, so a run with probes has its own trace; a run without probes draws nothing here.

use std::collections::BTreeMap;

use meshkit::Instant;
use meshkit::diag::probe::{
    Probe, ProbeAction, ProbeEvent, ProbeId, ProbeOutcome, ProbeScheduler, RunId, Start,
};

use super::{Engine, NodeState, What};
use crate::network::Verdict;
use crate::report::ProbeTransition;
use crate::{ProbeError, SimProbe};

/// A reachability check; the engine runs it (see the module documentation).
#[derive(Debug)]
struct Reach;

impl Probe for Reach {
    fn kind(&self) -> &str {
        "reach"
    }

    fn start(&mut self, _now: Instant, _deadline: Instant) -> Start {
        Start::Pending
    }
}

/// The run's probes.
#[derive(Debug)]
pub(super) struct Probes {
    scheduler: ProbeScheduler,
    /// Each probe's name and link (`from`, `to` node indices).
    probes: BTreeMap<ProbeId, (String, usize, usize)>,
    /// The wakeup in the queue, if one is.
    armed: Option<Instant>,
    /// Every state change, as the report shows it.
    pub(super) transitions: Vec<ProbeTransition>,
}

impl Engine<'_> {
    /// Registers `probes` at the start of the run, on a scheduler seeded with `seed`.
    ///
    /// # Errors
    ///
    /// [`ProbeError`]: a node index beyond the mesh, or the core's refusal (a name taken twice,
    /// too many probes).
    pub(crate) fn register_probes(
        &mut self,
        seed: u64,
        probes: &[SimProbe],
    ) -> Result<(), ProbeError> {
        let mut host = Probes {
            scheduler: ProbeScheduler::new(seed),
            probes: BTreeMap::new(),
            armed: None,
            transitions: Vec::new(),
        };
        for (k, p) in probes.iter().enumerate() {
            let (from, to) = (p.from as usize, p.to as usize);
            if from >= self.nodes || to >= self.nodes {
                return Err(ProbeError::NodeOutOfRange {
                    probe: k,
                    index: p.from.max(p.to),
                    nodes: self.nodes,
                });
            }
            let name = p.spec.name().to_owned();
            let id = host
                .scheduler
                .register(self.now, p.spec.clone(), Box::new(Reach))
                .map_err(|_| ProbeError::Refused { probe: k })?;
            host.probes.insert(id, (name, from, to));
        }
        self.probes = Some(host);
        self.probes_step();
        Ok(())
    }

    /// The probes' wakeup, or any input to the scheduler: starts due runs, settles
    /// deadlines, records state changes, re-arms.
    pub(super) fn probes_step(&mut self) {
        let now = self.now;
        let Some(host) = self.probes.as_mut() else {
            return;
        };
        if host.armed.is_some_and(|at| at <= now) {
            host.armed = None;
        }
        host.scheduler.handle_timeout(now);
        let mut runs = Vec::new();
        while let Some(action) = host.scheduler.poll_action() {
            if let ProbeAction::Run { run, probe, .. } = action
                && let Some(&(_, from, to)) = host.probes.get(&probe)
            {
                runs.push((run, from, to));
            }
        }
        for (run, from, to) in runs {
            self.probe_send(run, from, to);
        }
        self.probes_drain();
    }

    /// Sends a run's request `from -> to` through the network (nothing leaves a node that is
    /// not running).
    fn probe_send(&mut self, run: RunId, from: usize, to: usize) {
        if self.slots[from].state != NodeState::Running {
            return;
        }
        if let Verdict::Deliver { delay_ns, .. } = self.net.send(from, to) {
            let at = Instant::from_nanos(self.now.as_nanos().saturating_add(delay_ns));
            self.queue.push(
                at,
                What::ProbeArrive {
                    run,
                    from: from as u32,
                    to: to as u32,
                },
            );
        }
    }

    /// A request reached `to`: a running node answers through the network.
    pub(super) fn probe_arrive(&mut self, run: RunId, from: usize, to: usize) {
        if self.slots[to].state != NodeState::Running {
            return;
        }
        if let Verdict::Deliver { delay_ns, .. } = self.net.send(to, from) {
            let at = Instant::from_nanos(self.now.as_nanos().saturating_add(delay_ns));
            self.queue.push(at, What::ProbeReply { run });
        }
    }

    /// An answer came back: the run passed (or, after its deadline, timed out).
    pub(super) fn probe_reply(&mut self, run: RunId) {
        let now = self.now;
        if let Some(host) = self.probes.as_mut() {
            // A run the scheduler already settled as a timeout is unknown to it now: nothing
            // to record.
            let _ = host.scheduler.report(run, ProbeOutcome::Pass, now);
        }
        self.probes_drain();
    }

    fn probes_drain(&mut self) {
        let now = self.now;
        let Some(host) = self.probes.as_mut() else {
            return;
        };
        while let Some(event) = host.scheduler.poll_event() {
            if let ProbeEvent::StateChanged {
                probe,
                from,
                to,
                at,
                ..
            } = event
                && let Some((name, a, b)) = host.probes.get(&probe)
            {
                host.transitions.push(ProbeTransition {
                    probe: name.clone(),
                    from_node: *a as u32,
                    to_node: *b as u32,
                    at_s: at.as_nanos() as f64 / 1e9,
                    state_from: from.as_str().to_owned(),
                    state_to: to.as_str().to_owned(),
                });
            }
        }
        if let Some(next) = host.scheduler.poll_timeout()
            && host.armed.is_none_or(|at| next < at)
        {
            let next = next.max(now);
            host.armed = Some(next);
            self.queue.push(next, What::Probes);
        }
    }
}
