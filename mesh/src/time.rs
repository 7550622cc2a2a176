//! Virtual time owned by MeshKit.
//!
//! The core never reads a clock: every time-dependent input takes `now: Instant` from its driver.
//! An [`Instant`] is a count of nanoseconds since an epoch the driver chooses (the simulator's start,
//! or the process start in the tokio driver), so a discrete-event simulator needs no real epoch.

use core::fmt;
use core::ops::{Add, AddAssign, Sub};
pub use core::time::Duration;

/// A point in virtual time: nanoseconds since the driver's epoch.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Instant(u64);

impl Instant {
    /// The driver's epoch.
    pub const ZERO: Self = Self(0);
    /// The latest representable instant; used as "never".
    pub const MAX: Self = Self(u64::MAX);

    /// An instant `nanos` nanoseconds after the epoch.
    pub const fn from_nanos(nanos: u64) -> Self {
        Self(nanos)
    }

    /// Nanoseconds since the epoch.
    pub const fn as_nanos(self) -> u64 {
        self.0
    }

    /// Time elapsed from `earlier` to `self`, or zero if `earlier` is later.
    pub fn saturating_duration_since(self, earlier: Self) -> Duration {
        Duration::from_nanos(self.0.saturating_sub(earlier.0))
    }

    /// `self - d`, or [`Instant::ZERO`] if `d` reaches back past the epoch.
    pub fn saturating_sub(self, d: Duration) -> Self {
        Self(
            self.0
                .saturating_sub(u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)),
        )
    }

    /// `self + d`, or `None` on overflow.
    pub fn checked_add(self, d: Duration) -> Option<Self> {
        u64::try_from(d.as_nanos())
            .ok()
            .and_then(|n| self.0.checked_add(n))
            .map(Self)
    }
}

impl Add<Duration> for Instant {
    type Output = Self;
    /// Saturates at [`Instant::MAX`]: a deadline that far away means "never".
    fn add(self, d: Duration) -> Self {
        self.checked_add(d).unwrap_or(Self::MAX)
    }
}

impl AddAssign<Duration> for Instant {
    fn add_assign(&mut self, d: Duration) {
        *self = *self + d;
    }
}

impl Sub for Instant {
    type Output = Duration;
    /// Saturates at zero, like [`Instant::saturating_duration_since`].
    fn sub(self, earlier: Self) -> Duration {
        self.saturating_duration_since(earlier)
    }
}

impl fmt::Debug for Instant {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{self}")
    }
}

impl fmt::Display for Instant {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}.{:09}s",
            self.0 / 1_000_000_000,
            self.0 % 1_000_000_000
        )
    }
}

/// Multiplies a duration by a (small) integer factor, saturating instead of panicking.
pub(crate) fn scale(d: Duration, factor: u32) -> Duration {
    d.checked_mul(factor).unwrap_or(Duration::MAX)
}

/// A rate of one local second per reference second, in parts per million.
pub const RATE_ONE_PPM: u64 = 1_000_000;

/// A node's local time as a line through `(base_global, base_local)` with slope
/// `rate_ppm / 1e6` of a reference time (the simulator's global time, or a real node's monotonic
/// clock): how `clock-skew` faults run a node's clock fast or slow. Changing the rate re-anchors
/// the line at the current instant, so local time stays continuous and monotonic. All arithmetic
/// is in `u128` and saturates.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SkewedClock {
    base_global: u64,
    base_local: u64,
    rate_ppm: u64,
}

impl SkewedClock {
    /// A clock that reads `local` at global time `global` and runs at real speed.
    pub fn new(global: Instant, local: Instant) -> Self {
        Self {
            base_global: global.as_nanos(),
            base_local: local.as_nanos(),
            rate_ppm: RATE_ONE_PPM,
        }
    }

    /// Local time at global time `global` (which must not precede the last re-anchoring; earlier
    /// values read as the anchor).
    pub fn local(&self, global: Instant) -> Instant {
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
    pub fn to_global(self, local: Instant) -> Instant {
        let ahead = local.as_nanos().saturating_sub(self.base_local);
        if self.rate_ppm == RATE_ONE_PPM {
            return Instant::from_nanos(self.base_global.saturating_add(ahead));
        }
        let rate = u128::from(self.rate_ppm);
        let elapsed = (u128::from(ahead) * u128::from(RATE_ONE_PPM)).div_ceil(rate);
        let global = u128::from(self.base_global) + elapsed;
        Instant::from_nanos(u64::try_from(global).unwrap_or(u64::MAX))
    }

    /// `rate` local seconds per reference second in parts per million, at least 1 (the fault
    /// plan's `clock-skew` rate is checked to 0.01..=100 before it gets here).
    pub fn ppm(rate: f64) -> u64 {
        // A saturating float-to-int cast; NaN reads as 0 and is lifted to 1.
        ((rate * RATE_ONE_PPM as f64).round() as u64).max(1)
    }

    /// The rate in force, in parts per million.
    pub fn rate_ppm(&self) -> u64 {
        self.rate_ppm
    }

    /// Changes the rate from global time `now` on, keeping local time continuous.
    pub fn set_rate(&mut self, now: Instant, rate_ppm: u64) {
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
    fn arithmetic_saturates() {
        let t = Instant::from_nanos(5);
        assert_eq!(t + Duration::from_nanos(3), Instant::from_nanos(8));
        assert_eq!(Instant::MAX + Duration::from_secs(1), Instant::MAX);
        assert_eq!(t - Instant::from_nanos(9), Duration::ZERO);
        assert_eq!(
            Instant::from_nanos(1_500_000_000).to_string(),
            "1.500000000s"
        );
    }

    #[test]
    fn identity_clock_reads_global_time() {
        let c = SkewedClock::new(Instant::ZERO, Instant::ZERO);
        let t = Instant::from_nanos(123_456_789);
        assert_eq!(c.local(t), t);
        assert_eq!(c.to_global(t), t);
    }

    #[test]
    fn skewed_clock_round_trips_rounding_up() {
        let mut c = SkewedClock::new(Instant::ZERO, Instant::from_nanos(5_000));
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
        let mut c = SkewedClock::new(Instant::ZERO, Instant::ZERO);
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
