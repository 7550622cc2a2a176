//! Where the driver reads the time: a [`Clock`] trait (like quinn's `Runtime::now`), so a
//! simulated tier can substitute virtual time for the real one.

use std::sync::OnceLock;

use meshkit::Instant;

/// A source of [`meshkit::Instant`]s for the driver. Must never go backwards.
pub trait Clock: Send + Sync + Unpin + 'static {
    /// The current time, in nanoseconds since the clock's epoch.
    fn now(&self) -> Instant;
}

/// Real time: a monotonic clock (`std::time::Instant`) whose epoch is the first time any
/// `SystemClock` in this process was read, so every node of one process shares an epoch.
#[derive(Clone, Copy, Debug, Default)]
pub struct SystemClock;

fn process_epoch() -> std::time::Instant {
    static EPOCH: OnceLock<std::time::Instant> = OnceLock::new();
    *EPOCH.get_or_init(std::time::Instant::now)
}

impl Clock for SystemClock {
    fn now(&self) -> Instant {
        let elapsed = process_epoch().elapsed();
        // u64 nanoseconds last 584 years past the process start.
        Instant::from_nanos(u64::try_from(elapsed.as_nanos()).unwrap_or(u64::MAX))
    }
}

/// Tokio's clock, counted from when the value was made: real time normally, virtual time on a
/// paused runtime (`#[tokio::test(start_paused = true)]`), where sleeps advance it as soon as
/// every task waits. The probe agent runs on it so its tests can; the runtime's tests drive
/// drivers and probe hosts on it.
#[derive(Clone, Copy, Debug)]
pub struct TokioClock(tokio::time::Instant);

impl TokioClock {
    /// A clock reading zero now.
    pub fn starting_now() -> Self {
        Self(tokio::time::Instant::now())
    }
}

impl Clock for TokioClock {
    fn now(&self) -> Instant {
        // u64 nanoseconds last 584 years past the start.
        Instant::from_nanos(u64::try_from(self.0.elapsed().as_nanos()).unwrap_or(u64::MAX))
    }
}

/// A source of wall-clock time, for what is dated in calendar time rather than measured: token
/// expiry and audit timestamps. The membership core never sees it (docs/style.md rule 2).
pub trait WallClock: Send + Sync + std::fmt::Debug + 'static {
    /// The current time.
    fn now(&self) -> std::time::SystemTime;
}

/// The system's real-time clock.
#[derive(Clone, Copy, Debug, Default)]
pub struct SystemWallClock;

impl WallClock for SystemWallClock {
    fn now(&self) -> std::time::SystemTime {
        std::time::SystemTime::now()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Reads never go back, within a thread and across threads: every `SystemClock` of the
    /// process counts from one epoch, so a read on another thread after ours is not earlier.
    #[test]
    fn system_clock_never_goes_back_across_threads() {
        let first = SystemClock.now();
        let later = std::thread::spawn(|| {
            let mut last = SystemClock.now();
            for _ in 0..10_000 {
                let now = SystemClock.now();
                assert!(now >= last, "{now:?} after {last:?}");
                last = now;
            }
            last
        })
        .join()
        .unwrap();
        assert!(
            later >= first,
            "{later:?} read after {first:?} on another thread"
        );
    }

    /// The clock counts real time from a fixed epoch: a 30 ms sleep shows as at least 30 ms
    /// (a clock that restarted its epoch at each read would show about 0).
    #[test]
    fn system_clock_counts_elapsed_time() {
        let sleep = std::time::Duration::from_millis(30);
        let a = SystemClock.now();
        std::thread::sleep(sleep);
        let b = SystemClock.now();
        let elapsed = b.saturating_duration_since(a);
        assert!(
            elapsed >= sleep,
            "{elapsed:?} measured over a {sleep:?} sleep"
        );
    }
}
