//! The membership state machine's singleton timers.
//!
//! Per-member deadlines (suspicions, indirect-probe relays) live in ordered sets beside their
//! state; this table holds the timers of which there is exactly one each.

use crate::time::Instant;

/// What happens when a timer expires.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(crate) enum Timer {
    /// End of the protocol period: conclude the running probe (suspect an unanswered target) and
    /// start the next one.
    ProbePeriod,
    /// The direct probe got no ack in time: ask k members to probe indirectly.
    ProbeTimeout,
    /// Send pending updates to `gossip_fanout` random members.
    Gossip,
    /// Exchange digests with one random member.
    AntiEntropy,
    /// Probe one Dead member again, so a healed partition is noticed.
    DeadProbe,
    /// Garbage-collect tombstones, forget long-dead members, expire metadata transfers.
    Maintenance,
}

impl Timer {
    /// Every timer, in table order.
    pub(crate) const VALUES: [Self; 6] = [
        Self::ProbePeriod,
        Self::ProbeTimeout,
        Self::Gossip,
        Self::AntiEntropy,
        Self::DeadProbe,
        Self::Maintenance,
    ];
}

const _: () = assert!(
    Timer::VALUES.len() == Timer::Maintenance as usize + 1,
    "VALUES lists every Timer"
);

/// Deadlines of the singleton timers.
#[derive(Clone, Debug, Default)]
pub(crate) struct TimerTable {
    deadlines: [Option<Instant>; Timer::VALUES.len()],
}

impl TimerTable {
    pub(crate) fn set(&mut self, timer: Timer, at: Instant) {
        self.deadlines[timer as usize] = Some(at);
    }

    pub(crate) fn stop(&mut self, timer: Timer) {
        self.deadlines[timer as usize] = None;
    }

    /// Clears and returns whether `timer` has expired at `now`.
    pub(crate) fn take_expired(&mut self, timer: Timer, now: Instant) -> bool {
        match self.deadlines[timer as usize] {
            Some(at) if at <= now => {
                self.deadlines[timer as usize] = None;
                true
            }
            _ => false,
        }
    }

    pub(crate) fn next(&self) -> Option<Instant> {
        self.deadlines.iter().flatten().min().copied()
    }
}
