//! The voter's singleton timers.
//!
//! A client's per-request and per-lease deadlines live in ordered sets beside their state
//! (like membership's suspicions); this table holds the voter's timers, of which there is exactly
//! one each.

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

impl crate::timer::TimerSlot for Timer {
    fn slot(self) -> usize {
        self as usize
    }
}

/// Deadlines of the singleton timers.
pub(crate) type TimerTable = crate::timer::TimerTable<Timer, { Timer::VALUES.len() }>;
