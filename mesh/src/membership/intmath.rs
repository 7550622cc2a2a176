//! Integer math for the membership timeouts and budgets, so that a replay does not depend on the
//! platform's floating-point library.
//!
//! SWIM and Lifeguard state their figures with logarithms: the retransmit budget
//! `mult * ceil(log10(N + 1))`, the minimum suspicion timeout `mult * max(1, log10 N) * interval`
//! and the shrinking timeout `max - (max - min) * ln(c + 1) / ln(K + 1)`. Computed with
//! `f64::ln`/`log10` they call the platform's libm, whose last bit is not specified: glibc, musl,
//! macOS and Windows may round `ln` differently, a deadline one nanosecond apart can reorder two
//! events, and a seed recorded on one host would then replay differently on another. Everything
//! here is integer arithmetic with a fixed rounding, so a deadline is a pure function of its
//! inputs everywhere.
//!
//! Why by hand: the integer parts come from `core` (`u64::ilog2`, `u64::ilog10`, which count bits
//! and digits exactly). For the fractional logarithm no well-kept crate fits: `fixed` (the
//! mainstream fixed-point crate) offers only the integer parts (`int_log2`, `int_log10`) and
//! would add its own number types to the core for a few lines of use; the small crates with a
//! fractional fixed-point log (`log2fix`: 32-bit Q31 inputs, one unmaintained release) are too
//! narrow. [`log2_fx`] is the textbook bit-by-bit algorithm (square the normalized mantissa;
//! each time it reaches 2 the next bit is 1; C. S. Turner, "A Fast Binary Logarithm Algorithm",
//! IEEE Signal Processing Magazine, 2010), about fifteen lines, and the tests sweep it against
//! `f64` as the oracle.

use crate::time::Duration;

/// Fractional bits of the Q16.48 fixed-point logarithms below: the integer part of a `u64`'s
/// logarithm is at most 63, and 48 bits of fraction (3.6e-15) are as fine as `f64` is there.
const FRAC_BITS: u32 = 48;

/// 1.0 in Q16.48.
pub(crate) const ONE: u64 = 1 << FRAC_BITS;

/// Fractional bits of the mantissa while [`log2_fx`] squares it: the mantissa stays below 4, so
/// it fits 64 bits and its square fits a `u128`, and a truncation costs 2^-62 per step, so the
/// 48 steps stay below the 2^-48 the result keeps.
const MANTISSA_BITS: u32 = 62;

/// log10(2) in Q0.64, rounded to nearest (0.30102999566398119521... * 2^64).
const LOG10_2_Q64: u128 = 0x4D10_4D42_7DE7_FBCC;

const NANOS_PER_SEC: u128 = 1_000_000_000;

/// `ceil(log10(x))` exactly, by counting digits: 0 for `x <= 1`.
pub(crate) fn ceil_log10(x: u64) -> u32 {
    if x <= 1 { 0 } else { (x - 1).ilog10() + 1 }
}

/// `log2(x)` in Q16.48 fixed point, rounded down (within 2^-47 of the true value); 0 for `x = 0`,
/// which no caller passes (`log2(0)` is minus infinity).
pub(crate) fn log2_fx(x: u64) -> u64 {
    if x == 0 {
        return 0;
    }
    let int = x.ilog2();
    // x / 2^int, in [1, 2), with MANTISSA_BITS fractional bits.
    let mut m = (u128::from(x) << MANTISSA_BITS) >> int;
    let two = 2u128 << MANTISSA_BITS;
    let mut frac = 0u64;
    for bit in (0..FRAC_BITS).rev() {
        // log2(m^2) = 2 log2(m): squaring shifts the next fractional bit into the integer part.
        m = (m * m) >> MANTISSA_BITS;
        if m >= two {
            m >>= 1;
            frac |= 1 << bit;
        }
    }
    (u64::from(int) << FRAC_BITS) | frac
}

/// `log10(x)` in Q16.48 fixed point; 0 for `x = 0`.
///
/// The integer part is the exact digit count; the fraction is `log2(x / 10^d) * log10(2)` with
/// `log2(x / 10^d) = log2(x) - log2(10^d)`, so a power of ten comes out exact (both terms are the
/// same number) and `log10(1000)` is 3, not 2.9999999998.
pub(crate) fn log10_fx(x: u64) -> u64 {
    if x == 0 {
        return 0;
    }
    let digits = x.ilog10();
    let rest = log2_fx(x).saturating_sub(log2_fx(10u64.pow(digits)));
    // rest < log2(10) < 4 in Q16.48 (< 2^50); the product is below 2^112 and, shifted, below 2^48.
    let frac = (u128::from(rest) * LOG10_2_Q64) >> 64;
    (u64::from(digits) << FRAC_BITS) + u64::try_from(frac).unwrap_or(ONE - 1)
}

/// A duration from a count of nanoseconds, saturating at [`Duration::MAX`].
pub(crate) fn duration_from_nanos(nanos: u128) -> Duration {
    let secs = nanos / NANOS_PER_SEC;
    let sub = u32::try_from(nanos % NANOS_PER_SEC).unwrap_or(0);
    u64::try_from(secs).map_or(Duration::MAX, |s| Duration::new(s, sub))
}

/// `d * factor`, with `factor` in Q16.48 fixed point, rounded to the nearest nanosecond;
/// saturates at [`Duration::MAX`] (for a factor up to 20, the largest `log10` of a `u64`, only past
/// a million years).
pub(crate) fn mul_fx(d: Duration, factor: u64) -> Duration {
    d.as_nanos()
        .checked_mul(u128::from(factor))
        .and_then(|p| p.checked_add(1 << (FRAC_BITS - 1)))
        .map_or(Duration::MAX, |p| duration_from_nanos(p >> FRAC_BITS))
}

/// `d * r / 2^32` (a uniformly drawn fraction of `d` in `[0, d)`), rounded down to the nanosecond.
pub(crate) fn fraction_of(d: Duration, r: u32) -> Duration {
    // d.as_nanos() < 2^94, so the product stays below 2^126.
    duration_from_nanos((d.as_nanos() * u128::from(r)) >> 32)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fx_to_f64(q: u64) -> f64 {
        q as f64 / ONE as f64
    }

    #[test]
    fn ceil_log10_counts_digits_exactly() {
        let cases = [
            (0, 0),
            (1, 0),
            (2, 1),
            (9, 1),
            (10, 1),
            (11, 2),
            (100, 2),
            (101, 3),
            (1_000_000, 6),
            (1_000_001, 7),
            (u64::MAX, 20),
        ];
        for (x, want) in cases {
            assert_eq!(ceil_log10(x), want, "ceil(log10({x}))");
        }
        for x in 1..=100_001u64 {
            let oracle = (x as f64).log10().ceil() as u32;
            assert_eq!(ceil_log10(x), oracle, "ceil(log10({x}))");
        }
    }

    #[test]
    fn log2_is_exact_on_powers_of_two_and_close_elsewhere() {
        for k in 0..64u32 {
            assert_eq!(log2_fx(1 << k), u64::from(k) << FRAC_BITS, "log2(2^{k})");
        }
        let mut worst = 0f64;
        let samples = (1..=100_000u64).chain([u64::MAX, u64::MAX / 3, (1 << 40) + 12_345]);
        for x in samples {
            let got = fx_to_f64(log2_fx(x));
            let err = got - (x as f64).log2();
            worst = worst.max(err.abs());
        }
        // Rounded down to 2^-48 (3.6e-15); the f64 oracle itself is within about 4e-15 here.
        assert!(worst < 1e-13, "worst |error| {worst:e}");
    }

    #[test]
    fn log10_is_exact_on_powers_of_ten_and_close_elsewhere() {
        for d in 0..20u32 {
            assert_eq!(log10_fx(10u64.pow(d)), u64::from(d) << FRAC_BITS, "10^{d}");
        }
        for x in 1..=100_000u64 {
            let err = fx_to_f64(log10_fx(x)) - (x as f64).log10();
            assert!(err.abs() < 1e-13, "log10({x}) off by {err:e}");
        }
    }

    #[test]
    fn fraction_of_is_d_times_r_over_2_pow_32() {
        let d = Duration::from_secs(1);
        assert_eq!(fraction_of(d, 0), Duration::ZERO);
        assert_eq!(fraction_of(d, 1 << 31), Duration::from_millis(500));
        assert_eq!(fraction_of(d, 1 << 30), Duration::from_millis(250));
        // (2^32 - 1) / 2^32 s, rounded down: just under the whole period.
        assert_eq!(fraction_of(d, u32::MAX), Duration::from_nanos(999_999_999));
        // The largest inputs do not overflow.
        assert!(fraction_of(Duration::MAX, u32::MAX) < Duration::MAX);
    }

    #[test]
    fn mul_fx_rounds_to_nearest_and_saturates() {
        let ns = Duration::from_nanos;
        assert_eq!(mul_fx(ns(3), ONE), ns(3));
        assert_eq!(mul_fx(ns(3), ONE / 2), ns(2), "1.5 rounds up");
        assert_eq!(mul_fx(ns(3), ONE / 3), ns(1));
        assert_eq!(mul_fx(ns(10), ONE + ONE / 4), ns(13), "12.5 rounds up");
        assert_eq!(mul_fx(Duration::MAX, 2 * ONE), Duration::MAX);
        assert_eq!(duration_from_nanos(u128::MAX), Duration::MAX);
    }
}
