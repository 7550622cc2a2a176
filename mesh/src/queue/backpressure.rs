//! The backpressure monitor: watermarks with hysteresis and a cooldown, and the signal an owner
//! publishes in its gossip metadata so producers anywhere in the mesh see it.

use alloc::collections::VecDeque;
use alloc::vec::Vec;

use crate::lease::FencingToken;
use crate::time::{Duration, Instant};
use crate::wire::DecodeError;

/// Signals a monitor keeps in its history; older ones are dropped.
pub const MAX_SIGNAL_HISTORY: usize = 16;
/// The encoded size of a [`BackpressureSignal`] with its fence, as published in metadata.
pub const SIGNAL_BYTES: usize = 8 + 1 + 4 + 8 + 4 + 4;

/// What a producer needs to know: whether to hold back, and the numbers behind it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BackpressureSignal {
    /// Producers should wait.
    pub is_active: bool,
    /// Items waiting when the signal was taken.
    pub pending_count: u32,
    /// When, by the owner's clock.
    pub observed_at: Instant,
    /// The high watermark (`None`: backpressure is off).
    pub high_watermark: Option<u32>,
    /// The low watermark.
    pub low_watermark: u32,
}

impl BackpressureSignal {
    /// The metadata value: the owner's fence, then the signal.
    pub fn encode(&self, fence: FencingToken) -> Vec<u8> {
        let mut v = Vec::with_capacity(SIGNAL_BYTES);
        v.extend_from_slice(&fence.get().to_be_bytes());
        v.push(u8::from(self.is_active));
        v.extend_from_slice(&self.pending_count.to_be_bytes());
        v.extend_from_slice(&self.observed_at.as_nanos().to_be_bytes());
        v.extend_from_slice(&self.high_watermark.unwrap_or(0).to_be_bytes());
        v.extend_from_slice(&self.low_watermark.to_be_bytes());
        v
    }

    /// Reads a metadata value back: the owner's fence and its signal.
    ///
    /// # Errors
    ///
    /// [`DecodeError`] for a value of the wrong length or with a bad flag (another member's
    /// fault; nothing is built).
    pub fn decode(bytes: &[u8]) -> Result<(FencingToken, Self), DecodeError> {
        let mut r = crate::wire::codec::Reader::new(bytes);
        let fence = FencingToken::new(r.u64()?);
        let is_active = r.bool("is_active")?;
        let pending_count = r.u32()?;
        let observed_at = Instant::from_nanos(r.u64()?);
        let high = r.u32()?;
        let low_watermark = r.u32()?;
        r.finish()?;
        Ok((
            fence,
            Self {
                is_active,
                pending_count,
                observed_at,
                high_watermark: (high > 0).then_some(high),
                low_watermark,
            },
        ))
    }
}

/// Watches one queue's pending count. Inactive unless a high watermark is set; active at
/// `pending >= high`, inactive again at `pending <= low`; two transitions are never closer than
/// the cooldown (a transition due sooner waits for it, and happens then only if the count still
/// calls for it).
#[derive(Clone, Debug)]
pub struct BackpressureMonitor {
    high: Option<u32>,
    low: u32,
    cooldown: Duration,
    active: bool,
    last_transition: Option<Instant>,
    latest: Option<BackpressureSignal>,
    history: VecDeque<BackpressureSignal>,
}

impl BackpressureMonitor {
    /// A monitor with these watermarks (`high: None` never activates) and cooldown.
    pub fn new(high: Option<u32>, low: u32, cooldown: Duration) -> Self {
        Self {
            high,
            low,
            cooldown,
            active: false,
            last_transition: None,
            latest: None,
            history: VecDeque::new(),
        }
    }

    /// Looks at `pending` at `now`; returns the new signal if the state changed.
    pub fn observe(&mut self, now: Instant, pending: usize) -> Option<BackpressureSignal> {
        let high = self.high?;
        let pending = u32::try_from(pending).unwrap_or(u32::MAX);
        let wants = if self.active {
            pending > self.low
        } else {
            pending >= high
        };
        if wants == self.active {
            return None;
        }
        if self
            .last_transition
            .is_some_and(|t| now < t + self.cooldown)
        {
            return None;
        }
        self.active = wants;
        self.last_transition = Some(now);
        let signal = self.signal(now, pending);
        self.latest = Some(signal);
        if self.history.len() >= MAX_SIGNAL_HISTORY {
            self.history.pop_front();
        }
        self.history.push_back(signal);
        Some(signal)
    }

    /// When a transition held back by the cooldown may happen (`None`: none can be pending).
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.high?;
        self.last_transition.map(|t| t + self.cooldown)
    }

    /// The signal for `pending` now, without a transition.
    pub fn signal(&self, now: Instant, pending: u32) -> BackpressureSignal {
        BackpressureSignal {
            is_active: self.active,
            pending_count: pending,
            observed_at: now,
            high_watermark: self.high,
            low_watermark: self.low,
        }
    }

    /// Whether producers should wait now.
    pub fn is_active(&self) -> bool {
        self.active
    }

    /// The latest transition's signal.
    pub fn latest(&self) -> Option<BackpressureSignal> {
        self.latest
    }

    /// The last [`MAX_SIGNAL_HISTORY`] transitions, oldest first.
    pub fn history(&self) -> impl Iterator<Item = &BackpressureSignal> + '_ {
        self.history.iter()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(ms: u64) -> Instant {
        Instant::from_nanos(ms * 1_000_000)
    }

    #[test]
    fn inactive_without_a_high_watermark() {
        let mut m = BackpressureMonitor::new(None, 0, Duration::ZERO);
        assert_eq!(m.observe(at(0), 1_000_000), None);
        assert!(!m.is_active());
        assert_eq!(m.poll_timeout(), None);
    }

    #[test]
    fn hysteresis_cooldown_and_bounded_history() {
        let mut m = BackpressureMonitor::new(Some(10), 5, Duration::from_millis(100));
        assert_eq!(m.observe(at(0), 9), None);
        let s = m.observe(at(1), 10).unwrap();
        assert!(s.is_active && s.pending_count == 10 && s.high_watermark == Some(10));
        // Between the watermarks nothing changes; at low it would, but the cooldown holds it.
        assert_eq!(m.observe(at(2), 7), None);
        assert_eq!(m.observe(at(50), 5), None, "within the cooldown");
        assert_eq!(m.poll_timeout(), Some(at(101)));
        let s = m.observe(at(101), 5).unwrap();
        assert!(!s.is_active);
        for k in 0..40u64 {
            let t = at(200 + k * 100);
            m.observe(t, if k % 2 == 0 { 10 } else { 0 });
        }
        assert_eq!(m.history().count(), MAX_SIGNAL_HISTORY);
        let times: Vec<Instant> = m.history().map(|s| s.observed_at).collect();
        assert!(
            times
                .windows(2)
                .all(|w| w[1] >= w[0] + Duration::from_millis(100))
        );
    }

    #[test]
    fn the_metadata_value_round_trips_and_refuses_garbage() {
        let s = BackpressureSignal {
            is_active: true,
            pending_count: 7,
            observed_at: at(3),
            high_watermark: Some(9),
            low_watermark: 4,
        };
        let bytes = s.encode(FencingToken::new(42));
        assert_eq!(bytes.len(), SIGNAL_BYTES);
        assert_eq!(
            BackpressureSignal::decode(&bytes).unwrap(),
            (FencingToken::new(42), s)
        );
        for n in 0..bytes.len() {
            assert!(BackpressureSignal::decode(&bytes[..n]).is_err());
        }
        let mut bad = bytes;
        bad[8] = 2;
        assert!(BackpressureSignal::decode(&bad).is_err());
        // Backpressure off (no high watermark) reads back as off, not as a watermark of 0.
        let off = BackpressureSignal {
            high_watermark: None,
            is_active: false,
            ..s
        };
        let (_, read) = BackpressureSignal::decode(&off.encode(FencingToken::new(42))).unwrap();
        assert_eq!(read.high_watermark, None);
    }

    #[test]
    fn between_the_watermarks_the_state_holds_past_the_cooldown() {
        let mut m = BackpressureMonitor::new(Some(10), 5, Duration::from_millis(100));
        let on = m.observe(at(0), 10).unwrap();
        assert!(on.is_active);
        assert_eq!(m.latest(), Some(on));
        // Past the cooldown, a count above low keeps it active...
        assert_eq!(m.observe(at(200), 7), None);
        assert_eq!(m.observe(at(300), 12), None);
        assert!(m.is_active());
        // ...one at low ends it...
        let off = m.observe(at(400), 5).unwrap();
        assert!(!off.is_active);
        assert_eq!(m.latest(), Some(off));
        // ...and below high it stays inactive.
        assert_eq!(m.observe(at(600), 7), None);
        assert!(!m.is_active());
    }
}
