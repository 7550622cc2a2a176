//! Per-node clocks: a node's local time as a linear function of the simulator's global time.
//!
//! The core only ever sees local time. A clock is a line through `(base_global, base_local)` with
//! slope `rate_ppm / 1e6`; changing the rate re-anchors the line at the current instant, so local
//! time stays continuous and monotonic. All arithmetic is in `u128` and saturates.

use meshkit::Instant;

/// A rate of one local second per global second, in parts per million.
pub(crate) const RATE_ONE_PPM: u64 = 1_000_000;

/// One node's clock.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Clock {
    base_global: u64,
    base_local: u64,
    rate_ppm: u64,
}

impl Clock {
    /// A clock that reads `local` at global time `global` and runs at real speed.
    pub(crate) fn new(global: Instant, local: Instant) -> Self {
        Self {
            base_global: global.as_nanos(),
            base_local: local.as_nanos(),
            rate_ppm: RATE_ONE_PPM,
        }
    }

    /// Local time at global time `global` (which must not precede the last re-anchoring; earlier
    /// values read as the anchor).
    pub(crate) fn local(&self, global: Instant) -> Instant {
        let elapsed = global.as_nanos().saturating_sub(self.base_global);
        if self.rate_ppm == RATE_ONE_PPM {
            return Instant::from_nanos(self.base_local.saturating_add(elapsed));
        }
        let scaled = u128::from(elapsed) * u128::from(self.rate_ppm) / u128::from(RATE_ONE_PPM);
        let local = u128::from(self.base_local) + scaled;
        Instant::from_nanos(u64::try_from(local).unwrap_or(u64::MAX))
    }

    /// The earliest global time at which local time reaches `local`; never before the anchor.
    ///
    /// Rounds up, so `self.local(self.to_global(l)) >= l`.
    pub(crate) fn to_global(self, local: Instant) -> Instant {
        let ahead = local.as_nanos().saturating_sub(self.base_local);
        if self.rate_ppm == RATE_ONE_PPM {
            return Instant::from_nanos(self.base_global.saturating_add(ahead));
        }
        let rate = u128::from(self.rate_ppm);
        let elapsed = (u128::from(ahead) * u128::from(RATE_ONE_PPM)).div_ceil(rate);
        let global = u128::from(self.base_global) + elapsed;
        Instant::from_nanos(u64::try_from(global).unwrap_or(u64::MAX))
    }

    /// Changes the rate from global time `now` on, keeping local time continuous.
    pub(crate) fn set_rate(&mut self, now: Instant, rate_ppm: u64) {
        let local = self.local(now);
        self.base_global = now.as_nanos();
        self.base_local = local.as_nanos();
        self.rate_ppm = rate_ppm.max(1);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identity_clock_reads_global_time() {
        let c = Clock::new(Instant::ZERO, Instant::ZERO);
        let t = Instant::from_nanos(123_456_789);
        assert_eq!(c.local(t), t);
        assert_eq!(c.to_global(t), t);
    }

    #[test]
    fn skewed_clock_round_trips_rounding_up() {
        let mut c = Clock::new(Instant::ZERO, Instant::from_nanos(5_000));
        c.set_rate(Instant::from_nanos(1_000_000), 1_500_000);
        for rate in [1_500_000, 333_333, 2_000_000, 999_999, 1_000_001] {
            c.set_rate(Instant::from_nanos(2_000_000), rate);
            let anchor_local = c.local(Instant::from_nanos(2_000_000));
            for step in [0u64, 1, 2, 3, 7, 1_000, 999_999_937, 3_600_000_000_000] {
                let l = Instant::from_nanos(anchor_local.as_nanos() + step);
                let g = c.to_global(l);
                assert!(c.local(g) >= l, "rate {rate} step {step}");
                if g.as_nanos() > 2_000_000 {
                    let before = Instant::from_nanos(g.as_nanos() - 1);
                    assert!(
                        c.local(before) < l,
                        "to_global is not the earliest: rate {rate}"
                    );
                }
            }
        }
    }

    #[test]
    fn rate_change_keeps_local_time_continuous() {
        let mut c = Clock::new(Instant::ZERO, Instant::ZERO);
        let now = Instant::from_nanos(10_000_000_000);
        c.set_rate(now, 2_000_000);
        assert_eq!(c.local(now), now);
        assert_eq!(
            c.local(Instant::from_nanos(11_000_000_000)).as_nanos(),
            12_000_000_000
        );
        assert_eq!(
            c.to_global(Instant::from_nanos(12_000_000_000)).as_nanos(),
            11_000_000_000
        );
        // A deadline already passed maps to the anchor, never earlier.
        assert_eq!(c.to_global(Instant::from_nanos(1)), now);
    }
}
