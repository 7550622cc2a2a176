//! The membership state machine's singleton timers.
//!
//! Per-member deadlines (suspicions, indirect-probe relays) live in ordered sets beside their
//! state; this table holds the timers of which there is exactly one each.

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

impl crate::timer::TimerSlot for Timer {
    fn slot(self) -> usize {
        self as usize
    }
}

/// Deadlines of the singleton timers.
pub(crate) type TimerTable = crate::timer::TimerTable<Timer, { Timer::VALUES.len() }>;
