//! A rate limit for log lines that a peer or an anonymous client can cause (refused handshakes,
//! forged or invalid protocol messages): without one, every such input writes a line, and a
//! flood of them fills disks and buries the lines an operator needs.
//!
//! A [`LogLimit`] lets through at most `burst` lines per `window` and counts the rest; the first
//! line let through after some were held back says how many (`suppressed`). Counting what is
//! refused is the metrics' job; the log shows a sample and the size of what it left out.
//!
//! ```
//! use std::time::Duration;
//! use meshkit_net::log_limit::LogLimit;
//!
//! static REFUSED: LogLimit = LogLimit::new(5, Duration::from_secs(60));
//! if let Some(suppressed) = REFUSED.allow() {
//!     tracing::warn!(suppressed, "handshake refused");
//! }
//! ```

use std::sync::Mutex;
use std::time::{Duration, Instant};

/// At most `burst` lines per `window`; see the [module](self) doc. Cheap enough for every refused
/// input (one uncontended lock, no allocation); usable in a `static`.
#[derive(Debug)]
pub struct LogLimit {
    burst: u32,
    window: Duration,
    state: Mutex<State>,
}

#[derive(Debug)]
struct State {
    /// When the current window began; `None` before the first line.
    since: Option<Instant>,
    /// Lines let through in the current window.
    emitted: u32,
    /// Lines held back since the last one let through.
    suppressed: u64,
}

impl LogLimit {
    /// A limit of `burst` lines per `window` (a `burst` of 0 lets nothing through).
    pub const fn new(burst: u32, window: Duration) -> Self {
        Self {
            burst,
            window,
            state: Mutex::new(State {
                since: None,
                emitted: 0,
                suppressed: 0,
            }),
        }
    }

    /// Whether a line may be written now: `Some(n)` with the number of lines held back since
    /// the last one let through, or `None` (the line is counted as suppressed).
    #[must_use = "the answer says whether to write the line"]
    pub fn allow(&self) -> Option<u64> {
        self.allow_at(Instant::now())
    }

    /// [`allow`](Self::allow) at a given time (for tests and hosts with their own clock).
    #[must_use = "the answer says whether to write the line"]
    pub fn allow_at(&self, now: Instant) -> Option<u64> {
        // A poisoned lock only means another thread panicked while counting: the counts are
        // still plain integers, so go on with them.
        let mut state = self
            .state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let fresh = state
            .since
            .is_none_or(|since| now.saturating_duration_since(since) >= self.window);
        if fresh {
            state.since = Some(now);
            state.emitted = 0;
        }
        if state.emitted >= self.burst {
            state.suppressed = state.suppressed.saturating_add(1);
            return None;
        }
        state.emitted += 1;
        Some(std::mem::take(&mut state.suppressed))
    }

    /// Lines held back since the last one let through.
    pub fn suppressed(&self) -> u64 {
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .suppressed
    }
}

/// How many `tracing` events `f` emits on this thread (any level, any target): the tests of
/// rate-limited logs count lines with it, here and in `meshkit-control` (feature `test-util`,
/// which only tests enable).
#[cfg(any(test, feature = "test-util"))]
pub fn count_events(f: impl FnOnce()) -> usize {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};

    use tracing_subscriber::layer::SubscriberExt as _;

    struct Count(Arc<AtomicUsize>);
    impl<S: tracing::Subscriber> tracing_subscriber::Layer<S> for Count {
        fn on_event(
            &self,
            _event: &tracing::Event<'_>,
            _ctx: tracing_subscriber::layer::Context<'_, S>,
        ) {
            self.0.fetch_add(1, Ordering::Relaxed);
        }
    }
    let count = Arc::new(AtomicUsize::new(0));
    let subscriber = tracing_subscriber::registry().with(Count(count.clone()));
    tracing::subscriber::with_default(subscriber, f);
    count.load(Ordering::Relaxed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lets_a_burst_through_per_window_and_reports_what_it_held_back() {
        let limit = LogLimit::new(2, Duration::from_secs(10));
        let t0 = Instant::now();
        assert_eq!(limit.allow_at(t0), Some(0));
        assert_eq!(limit.allow_at(t0), Some(0));
        for _ in 0..1_000 {
            assert_eq!(limit.allow_at(t0 + Duration::from_secs(9)), None);
        }
        assert_eq!(limit.suppressed(), 1_000);
        // A new window: the first line carries the count of the ones held back.
        assert_eq!(limit.allow_at(t0 + Duration::from_secs(10)), Some(1_000));
        assert_eq!(limit.allow_at(t0 + Duration::from_secs(10)), Some(0));
        assert_eq!(limit.allow_at(t0 + Duration::from_secs(11)), None);
        assert_eq!(limit.suppressed(), 1);
    }

    #[test]
    fn a_zero_burst_lets_nothing_through() {
        let limit = LogLimit::new(0, Duration::from_secs(1));
        let t0 = Instant::now();
        assert_eq!(limit.allow_at(t0), None);
        assert_eq!(limit.allow_at(t0 + Duration::from_secs(5)), None);
        assert_eq!(limit.suppressed(), 2);
    }
}
