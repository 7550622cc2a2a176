//! Durations counted in fixed buckets: the Prometheus histograms the runtime keeps (the
//! vacancy and leaderless times of [`crate::vacancy`], the queues' replication lag of
//! [`crate::queue_host`]). The core keeps its own for probe round trips
//! (`meshkit::membership::RttHistogram`): it cannot depend on the runtime.

use meshkit::Duration;
use meshkit_api::metrics::Histogram;

/// Durations counted in `N` buckets of a fixed list of `N - 1` ascending upper bounds, the
/// last bucket for those above every bound; the counts are per bucket (not cumulative), with
/// their sum and count. They only grow. The bounds live beside each alias of this type
/// ([`crate::vacancy::BOUNDS`], [`crate::queue_host::LAG_BOUNDS`]) and are passed to
/// `record` and to the exposition ([`DurationHistogram::with_bounds`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DurationHistogram<const N: usize> {
    /// `buckets[i]` counts durations `<= bounds[i]` and above the bound before; the last
    /// counts those above every bound.
    pub buckets: [u64; N],
    /// Sum of the durations.
    pub sum: Duration,
    /// Number of durations.
    pub count: u64,
}

impl<const N: usize> Default for DurationHistogram<N> {
    fn default() -> Self {
        Self {
            buckets: [0; N],
            sum: Duration::ZERO,
            count: 0,
        }
    }
}

impl<const N: usize> DurationHistogram<N> {
    /// Counts `d` in its bucket of `bounds` (`N - 1` ascending upper bounds).
    pub(crate) fn record(&mut self, bounds: &[Duration], d: Duration) {
        debug_assert_eq!(bounds.len() + 1, N, "N - 1 bounds");
        // Past the last bound (or with too few bounds): the last bucket.
        let bucket = bounds.partition_point(|b| *b < d).min(N - 1);
        self.buckets[bucket] += 1;
        self.sum = self.sum.saturating_add(d);
        self.count += 1;
    }

    /// The histogram as the metrics exposition writes it, with the `bounds` it was counted by.
    pub fn with_bounds<'a>(&'a self, bounds: &'a [Duration]) -> Histogram<'a> {
        Histogram {
            bounds,
            buckets: &self.buckets,
            sum: self.sum,
            count: self.count,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_duration_lands_in_one_bucket_and_bounds_are_inclusive() {
        let bounds = [Duration::from_millis(1), Duration::from_millis(10)];
        let mut h = DurationHistogram::<3>::default();
        for ms in [0, 1, 2, 10, 11, 500] {
            h.record(&bounds, Duration::from_millis(ms));
        }
        assert_eq!(h.buckets, [2, 2, 2]);
        assert_eq!(h.count, 6);
        assert_eq!(h.sum, Duration::from_millis(524));
    }
}
