//! The table of a component's singleton timers, shared by every state machine of the core.
//!
//! Each component names its timers in an enum of its own (its `timer.rs`, with a `VALUES` const
//! and an assertion tying the table size to the variant count); this table only stores one
//! deadline per variant.

use core::marker::PhantomData;

use crate::time::Instant;

/// A timer enum whose variants index a [`TimerTable`].
pub(crate) trait TimerSlot: Copy {
    /// The variant's index in `0..N`.
    fn slot(self) -> usize;
}

/// One optional deadline per variant of `T`.
#[derive(Clone, Debug)]
pub(crate) struct TimerTable<T, const N: usize> {
    deadlines: [Option<Instant>; N],
    kind: PhantomData<T>,
}

impl<T: TimerSlot, const N: usize> TimerTable<T, N> {
    pub(crate) fn set(&mut self, timer: T, at: Instant) {
        self.deadlines[timer.slot()] = Some(at);
    }

    pub(crate) fn stop(&mut self, timer: T) {
        self.deadlines[timer.slot()] = None;
    }

    /// Clears and returns whether `timer` has expired at `now`.
    pub(crate) fn take_expired(&mut self, timer: T, now: Instant) -> bool {
        match self.deadlines[timer.slot()] {
            Some(at) if at <= now => {
                self.deadlines[timer.slot()] = None;
                true
            }
            _ => false,
        }
    }

    /// The earliest deadline set.
    pub(crate) fn next(&self) -> Option<Instant> {
        self.deadlines.iter().flatten().min().copied()
    }
}

impl<T, const N: usize> Default for TimerTable<T, N> {
    fn default() -> Self {
        Self {
            deadlines: [None; N],
            kind: PhantomData,
        }
    }
}
