//! Lifeguard's local health multiplier (LHM, "awareness").
//!
//! A node that misses acks and nacks is more likely slow itself than surrounded by failures; it
//! then stretches its own probe timeouts and period so that it does not accuse healthy peers
//! (Lifeguard §IV-A, "Local Health Aware Probe").

use crate::time::{Duration, scale};

/// The local health score: 0 is healthy, `max` is the most degraded.
#[derive(Clone, Debug)]
pub(crate) struct LocalHealth {
    score: u32,
    max: u32,
}

impl LocalHealth {
    pub(crate) fn new(max: u32) -> Self {
        Self { score: 0, max }
    }

    pub(crate) fn score(&self) -> u32 {
        self.score
    }

    /// Applies a delta, clamped to `0..=max`.
    pub(crate) fn apply(&mut self, delta: i64) {
        self.score = (i64::from(self.score) + delta).clamp(0, i64::from(self.max)) as u32;
    }

    /// `d * (score + 1)`: timeouts and the probe period stretch as health drops.
    pub(crate) fn scale(&self, d: Duration) -> Duration {
        scale(d, self.score + 1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clamps_and_scales() {
        let mut h = LocalHealth::new(8);
        h.apply(-3);
        assert_eq!(h.score(), 0);
        h.apply(20);
        assert_eq!(h.score(), 8);
        assert_eq!(
            h.scale(Duration::from_millis(500)),
            Duration::from_millis(4_500)
        );
    }
}
