//! The node's seeded random number generator.
//!
//! Every node owns one ChaCha8 stream seeded by its driver; there is no OS-entropy fallback, so a
//! seed replays the same run.

use rand::{RngExt, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// A node's seeded RNG.
#[derive(Clone, Debug)]
pub(crate) struct NodeRng(ChaCha8Rng);

impl NodeRng {
    pub(crate) fn from_seed(seed: u64) -> Self {
        Self(ChaCha8Rng::seed_from_u64(seed))
    }

    /// A uniform index in `0..len`; `len` must be non-zero.
    pub(crate) fn index(&mut self, len: usize) -> usize {
        debug_assert!(len > 0, "index() needs a non-empty range");
        self.0.random_range(0..len)
    }

    pub(crate) fn next_u32(&mut self) -> u32 {
        self.0.random()
    }

    /// A uniform value in `0..=max`; draws nothing when `max` is zero, so a feature set to zero
    /// (no jitter) leaves the stream as it was.
    pub(crate) fn up_to(&mut self, max: u64) -> u64 {
        if max == 0 {
            return 0;
        }
        self.0.random_range(0..=max)
    }

    /// Shuffles `items` in place (Fisher-Yates), the same way for the same seed.
    pub(crate) fn shuffle<T>(&mut self, items: &mut [T]) {
        for k in (1..items.len()).rev() {
            let j = self.0.random_range(0..=k);
            items.swap(k, j);
        }
    }
}
