//! [`RttEstimator`]: how long a lease client waits for one attempt of a request, from the round
//! trips it has measured (RFC 6298, TCP's retransmission timeout).
//!
//! A fixed timeout is wrong on every network but one: 500 ms is about 250 round trips on 1 ms
//! links, so one lost datagram held a lease request (and a holder failover) up for half a
//! second, while on a slow WAN link a short fixed timeout retries requests that were only slow.
//! The client therefore measures the time from an attempt to its answer (a commit or a read,
//! never a redirect) and waits `smoothed + 4 * variation` for the next one, within
//! `[min_request_timeout, request_timeout]`, doubling the wait for each attempt of one request
//! that timed out (Karn's rule: such a request's answer is not measured, since it cannot be told
//! which attempt it answers).

use crate::time::{Duration, scale};

/// Weight of a new sample in the smoothed round trip: 1/8 (RFC 6298 alpha).
const SRTT_SHIFT: u32 = 3;
/// Weight of a new deviation in the round-trip variation: 1/4 (RFC 6298 beta).
const RTTVAR_SHIFT: u32 = 2;
/// The variation counts this many times in the timeout (RFC 6298 K).
const RTTVAR_FACTOR: u32 = 4;
/// Doublings of the timeout for one request, at most (the ceiling stops it long before).
const MAX_BACKOFF_DOUBLINGS: u32 = 16;

/// Smoothed round trip and its variation, in nanoseconds of virtual time.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct RttEstimator {
    /// `(smoothed, variation)`; `None` before the first sample.
    state: Option<(u64, u64)>,
}

impl RttEstimator {
    /// Takes one measured round trip (RFC 6298 §2.2 and §2.3).
    pub(crate) fn sample(&mut self, rtt: Duration) {
        let r = u64::try_from(rtt.as_nanos()).unwrap_or(u64::MAX);
        self.state = Some(match self.state {
            None => (r, r / 2),
            Some((srtt, rttvar)) => {
                let deviation = srtt.abs_diff(r);
                let rttvar = rttvar - (rttvar >> RTTVAR_SHIFT) + (deviation >> RTTVAR_SHIFT);
                let srtt = srtt - (srtt >> SRTT_SHIFT) + (r >> SRTT_SHIFT);
                (srtt, rttvar)
            }
        });
    }

    /// The smoothed round trip, once one was measured.
    pub(crate) fn smoothed(&self) -> Option<Duration> {
        self.state.map(|(srtt, _)| Duration::from_nanos(srtt))
    }

    /// How long to wait for an attempt of a request whose earlier attempts timed out `timeouts`
    /// times: `smoothed + 4 * variation` doubled per timeout, within `[min, max]`; `max` before
    /// any sample (RFC 6298 §2.1 starts high too).
    pub(crate) fn timeout(&self, timeouts: u32, min: Duration, max: Duration) -> Duration {
        let Some((srtt, rttvar)) = self.state else {
            return max;
        };
        let base = Duration::from_nanos(
            srtt.saturating_add(rttvar.saturating_mul(u64::from(RTTVAR_FACTOR))),
        );
        let backoff = 1u32 << timeouts.min(MAX_BACKOFF_DOUBLINGS);
        scale(base.max(min), backoff).clamp(min, max)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    const MIN: Duration = Duration::from_millis(10);
    const MAX: Duration = Duration::from_millis(500);

    #[test]
    fn the_ceiling_until_a_round_trip_is_measured() {
        let rtt = RttEstimator::default();
        assert_eq!(rtt.smoothed(), None);
        assert_eq!(rtt.timeout(0, MIN, MAX), MAX);
    }

    #[test]
    fn the_first_sample_sets_srtt_and_half_of_it_as_variation() {
        let mut rtt = RttEstimator::default();
        rtt.sample(ms(40));
        assert_eq!(rtt.smoothed(), Some(ms(40)));
        // 40 + 4 * 20.
        assert_eq!(rtt.timeout(0, MIN, MAX), ms(120));
    }

    #[test]
    fn steady_round_trips_converge_to_the_floor_and_the_timeout_follows_a_slower_network() {
        let mut rtt = RttEstimator::default();
        for _ in 0..100 {
            rtt.sample(ms(4));
        }
        assert_eq!(
            rtt.timeout(0, MIN, MAX),
            MIN,
            "4 ms + 4 * ~0 is under the floor"
        );
        for _ in 0..100 {
            rtt.sample(ms(80));
        }
        let t = rtt.timeout(0, MIN, MAX);
        assert!((ms(80)..ms(90)).contains(&t), "{t:?}");
    }

    #[test]
    fn jitter_widens_the_timeout() {
        let mut steady = RttEstimator::default();
        let mut jittery = RttEstimator::default();
        for i in 0..100 {
            steady.sample(ms(30));
            jittery.sample(if i % 2 == 0 { ms(10) } else { ms(50) });
        }
        assert!(jittery.timeout(0, MIN, MAX) > steady.timeout(0, MIN, MAX) + ms(40));
    }

    #[test]
    fn each_timeout_doubles_the_wait_up_to_the_ceiling() {
        let mut rtt = RttEstimator::default();
        for _ in 0..100 {
            rtt.sample(ms(4));
        }
        let waits: Vec<Duration> = (0..8).map(|k| rtt.timeout(k, MIN, MAX)).collect();
        assert_eq!(waits, [10, 20, 40, 80, 160, 320, 500, 500].map(ms).to_vec());
        assert_eq!(rtt.timeout(u32::MAX, MIN, MAX), MAX);
    }

    #[test]
    fn absurd_samples_saturate() {
        let mut rtt = RttEstimator::default();
        rtt.sample(Duration::MAX);
        rtt.sample(Duration::ZERO);
        rtt.sample(Duration::MAX);
        assert_eq!(rtt.timeout(3, MIN, MAX), MAX);
    }
}
