//! The rate limit of the debug lines about member state changes (suspect, dead, left, alive
//! again) and this node's refutations.
//!
//! Each line names the member and its incarnation, which is what tells a flap from a crash when
//! an operator reads them after the fact (#12: a slow detection could not be traced without
//! them). But one event can change many members at once: a partition makes every member on the
//! far side suspect, then dead, on every node of this side, and its heal brings them all back;
//! at 1,000 members that is thousands of lines per node within seconds. So each node writes at
//! most [`STATE_LOG_BURST`] such lines per [`STATE_LOG_WINDOW`] of virtual time, counts the rest,
//! and the first line after some were held back says how many (`suppressed`); the events
//! themselves ([`super::Event::MemberStateChanged`], [`super::Event::Refuted`]) and the counters
//! are never limited.

use crate::time::{Duration, Instant};

/// State-change lines a node writes per [`STATE_LOG_WINDOW`] at most. Why 64: a crash seen by
/// one node is two lines (suspect, dead), a flap is two more; 64 covers a burst of a few dozen
/// members changing at once in full, and a larger burst is a partition, whose size the
/// `suppressed` count tells.
pub const STATE_LOG_BURST: u32 = 64;
/// The window of [`STATE_LOG_BURST`].
pub const STATE_LOG_WINDOW: Duration = Duration::from_secs(10);

/// Counts the lines of the current window; see the [module](self) doc.
#[derive(Debug, Default)]
pub(super) struct StateLog {
    /// When the current window began; `None` before the first line.
    since: Option<Instant>,
    /// Lines let through in the current window.
    emitted: u32,
    /// Lines held back since the last one let through.
    suppressed: u64,
}

impl StateLog {
    /// Whether a line may be written at `now`: `Some(n)` with the number of lines held back
    /// since the last one let through, or `None` (the line is counted as held back).
    pub(super) fn allow(&mut self, now: Instant) -> Option<u64> {
        if self
            .since
            .is_none_or(|since| now.saturating_duration_since(since) >= STATE_LOG_WINDOW)
        {
            self.since = Some(now);
            self.emitted = 0;
        }
        if self.emitted >= STATE_LOG_BURST {
            self.suppressed = self.suppressed.saturating_add(1);
            return None;
        }
        self.emitted += 1;
        Some(core::mem::take(&mut self.suppressed))
    }
}
