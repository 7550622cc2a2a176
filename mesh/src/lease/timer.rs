//! The voter's singleton timers.
//!
//! A client's per-request and per-lease deadlines live in ordered sets beside their state
//! (like membership's suspicions); this table holds the voter's timers, of which there is exactly
//! one each.

use crate::time::Instant;

/// What happens when a timer expires.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(crate) enum Timer {
    /// One Raft tick per `tick_interval` (several if the driver was late, up to a bound).
    RaftTick,
    /// The leader's earliest lease expiry passed: propose a clock entry so the table expires it.
    ExpirySweep,
    /// Forget proposals and reads that never committed (a lost leadership).
    Maintenance,
}

impl Timer {
    /// Every timer, in table order.
    pub(crate) const VALUES: [Self; 3] = [Self::RaftTick, Self::ExpirySweep, Self::Maintenance];
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
