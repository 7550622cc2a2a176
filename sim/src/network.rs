//! The network model: what happens to one datagram between two nodes.
//!
//! For every datagram the model decides, in this order and from its own random stream:
//! 1. partitions (no randomness): a datagram crossing an active partition is dropped;
//! 2. bursty loss: the sender's Gilbert-Elliott chain steps once, then drops with the bad state's
//!    loss probability while bad;
//! 3. independent loss;
//! 4. delay: the link's base latency (intra- or inter-region) plus an exponential jitter, plus,
//!    with the reorder probability, a uniform extra delay of up to 10x the mean jitter;
//! 5. duplication: with the duplicate probability, a second copy with its own delay.
//!
//! The model never allocates per datagram and does O(active partitions) work per datagram.
//!
//! A message larger than a datagram (a Raft snapshot: the real transport sends any payload over
//! [`MAX_DATAGRAM_BYTES`](meshkit::wire::MAX_DATAGRAM_BYTES) on a QUIC stream) is one message
//! here too: one verdict, under the same partition and loss rules, delivered whole after one
//! delay or lost whole. The model never looks at sizes; a stream's retransmissions and its
//! transfer time are not modelled (snapshots are rare and, at the table sizes the scenarios
//! reach, a few hundred kilobytes at most).

use core::time::Duration;

use rand::{RngExt, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::scenario::{BurstSpec, NetworkSpec};

/// Why a datagram was not delivered.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum DropReason {
    /// It crossed an active partition.
    Partition,
    /// Independent loss.
    Loss,
    /// The sender's burst chain was in its bad state.
    Burst,
}

/// The model's decision for one datagram.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Verdict {
    /// Lost.
    Drop(DropReason),
    /// Delivered after `delay_ns`, and a second copy after `copy_ns` if duplicated.
    Deliver {
        /// Delay of the first copy.
        delay_ns: u64,
        /// Delay of the duplicate, if any.
        copy_ns: Option<u64>,
    },
}

/// One active partition: a group number per node.
#[derive(Clone, Debug)]
pub(crate) struct Partition {
    /// Identifies the partition for a later heal.
    pub(crate) id: u64,
    /// Group of every node index.
    pub(crate) group: Vec<u8>,
    /// Drop only datagrams from group 0 to the other groups.
    pub(crate) one_way: bool,
}

impl Partition {
    /// Whether this partition drops a datagram from `from` to `to`.
    pub(crate) fn blocks(&self, from: usize, to: usize) -> bool {
        let (a, b) = (self.group[from], self.group[to]);
        if self.one_way {
            a == 0 && b != 0
        } else {
            a != b
        }
    }
}

/// Counters of what the model did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct NetworkStats {
    /// Datagrams handed to the model.
    pub(crate) sent: u64,
    /// Dropped by a partition.
    pub(crate) dropped_partition: u64,
    /// Dropped by independent loss.
    pub(crate) dropped_loss: u64,
    /// Dropped by bursty loss.
    pub(crate) dropped_burst: u64,
    /// Extra copies made.
    pub(crate) duplicated: u64,
}

/// The network model. See the module documentation.
#[derive(Debug)]
pub(crate) struct Network {
    latency_ns: u64,
    inter_region_latency_ns: u64,
    jitter_mean_ns: f64,
    regions: u32,
    base_loss: f64,
    loss: f64,
    duplicate: f64,
    reorder: f64,
    burst: Option<BurstSpec>,
    /// Gilbert-Elliott state per sender: `true` = bad.
    burst_bad: Vec<bool>,
    partitions: Vec<Partition>,
    rng: ChaCha8Rng,
    stats: NetworkStats,
}

impl Network {
    /// A model for `nodes` nodes in `regions` regions (round-robin), seeded from `seed`.
    pub(crate) fn new(spec: &NetworkSpec, nodes: usize, regions: u32, seed: u64) -> Self {
        Self {
            latency_ns: nanos(spec.latency),
            inter_region_latency_ns: nanos(spec.inter_region_latency),
            jitter_mean_ns: nanos(spec.jitter) as f64,
            regions: regions.max(1),
            base_loss: spec.loss,
            loss: spec.loss,
            duplicate: spec.duplicate,
            reorder: spec.reorder,
            burst: spec.burst,
            burst_bad: if spec.burst.is_some() {
                vec![false; nodes]
            } else {
                Vec::new()
            },
            partitions: Vec::new(),
            rng: ChaCha8Rng::seed_from_u64(seed),
            stats: NetworkStats::default(),
        }
    }

    /// Decides the fate of one datagram from node index `from` to node index `to`.
    pub(crate) fn send(&mut self, from: usize, to: usize) -> Verdict {
        self.stats.sent += 1;
        if self.partitions.iter().any(|p| p.blocks(from, to)) {
            self.stats.dropped_partition += 1;
            return Verdict::Drop(DropReason::Partition);
        }
        if let Some(burst) = self.burst {
            let bad = &mut self.burst_bad[from];
            let flip = if *bad { burst.leave } else { burst.enter };
            if chance(&mut self.rng, flip) {
                *bad = !*bad;
            }
            if *bad && chance(&mut self.rng, burst.loss) {
                self.stats.dropped_burst += 1;
                return Verdict::Drop(DropReason::Burst);
            }
        }
        if chance(&mut self.rng, self.loss) {
            self.stats.dropped_loss += 1;
            return Verdict::Drop(DropReason::Loss);
        }
        let base = if self.region(from) == self.region(to) {
            self.latency_ns
        } else {
            self.inter_region_latency_ns
        };
        let delay_ns = self.delay(base);
        let copy_ns = if chance(&mut self.rng, self.duplicate) {
            self.stats.duplicated += 1;
            Some(self.delay(base))
        } else {
            None
        };
        Verdict::Deliver { delay_ns, copy_ns }
    }

    /// Decides the fate of one datagram to node index `to` from a sender outside the mesh (the
    /// `byzantine` fault's attacker): no partition holds it back and it has no burst chain;
    /// independent loss, the intra-region latency, jitter, reordering and duplication apply.
    pub(crate) fn send_from_outside(&mut self, _to: usize) -> Verdict {
        self.stats.sent += 1;
        if chance(&mut self.rng, self.loss) {
            self.stats.dropped_loss += 1;
            return Verdict::Drop(DropReason::Loss);
        }
        let delay_ns = self.delay(self.latency_ns);
        let copy_ns = if chance(&mut self.rng, self.duplicate) {
            self.stats.duplicated += 1;
            Some(self.delay(self.latency_ns))
        } else {
            None
        };
        Verdict::Deliver { delay_ns, copy_ns }
    }

    fn delay(&mut self, base_ns: u64) -> u64 {
        let mut delay = base_ns;
        if self.jitter_mean_ns > 0.0 {
            let u: f64 = self.rng.random();
            // Inverse CDF of the exponential distribution; 1 - u is in (0, 1].
            let extra = -self.jitter_mean_ns * (1.0 - u).ln();
            delay = delay.saturating_add(extra as u64);
        }
        if chance(&mut self.rng, self.reorder) {
            let max = (self.jitter_mean_ns * 10.0) as u64;
            if max > 0 {
                delay = delay.saturating_add(self.rng.random_range(0..=max));
            }
        }
        delay
    }

    fn region(&self, node: usize) -> u32 {
        (node as u64 % u64::from(self.regions)) as u32
    }

    /// Sets the independent loss probability.
    pub(crate) fn set_loss(&mut self, loss: f64) {
        self.loss = loss.clamp(0.0, 1.0);
    }

    /// Restores the scenario's base loss probability.
    pub(crate) fn reset_loss(&mut self) {
        self.loss = self.base_loss;
    }

    /// Starts a partition.
    pub(crate) fn add_partition(&mut self, partition: Partition) {
        self.partitions.push(partition);
    }

    /// Ends one partition; returns whether it was active.
    pub(crate) fn remove_partition(&mut self, id: u64) -> bool {
        let before = self.partitions.len();
        self.partitions.retain(|p| p.id != id);
        self.partitions.len() != before
    }

    /// Ends every partition; returns how many were active.
    pub(crate) fn clear_partitions(&mut self) -> usize {
        let n = self.partitions.len();
        self.partitions.clear();
        n
    }

    /// What the model has done so far.
    pub(crate) fn stats(&self) -> NetworkStats {
        self.stats
    }
}

/// A Bernoulli draw that consumes no randomness when `p` is zero.
fn chance(rng: &mut ChaCha8Rng, p: f64) -> bool {
    p > 0.0 && (p >= 1.0 || rng.random::<f64>() < p)
}

fn nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec() -> NetworkSpec {
        NetworkSpec {
            jitter: Duration::ZERO,
            ..NetworkSpec::default()
        }
    }

    #[test]
    fn two_way_partition_blocks_both_directions() {
        let mut net = Network::new(&spec(), 4, 1, 1);
        net.add_partition(Partition {
            id: 1,
            group: vec![0, 0, 1, 1],
            one_way: false,
        });
        assert_eq!(net.send(0, 2), Verdict::Drop(DropReason::Partition));
        assert_eq!(net.send(3, 1), Verdict::Drop(DropReason::Partition));
        assert!(matches!(net.send(0, 1), Verdict::Deliver { .. }));
        assert!(matches!(net.send(2, 3), Verdict::Deliver { .. }));
        assert!(net.remove_partition(1));
        assert!(matches!(net.send(0, 2), Verdict::Deliver { .. }));
    }

    #[test]
    fn one_way_partition_blocks_one_direction_only() {
        let mut net = Network::new(&spec(), 4, 1, 1);
        net.add_partition(Partition {
            id: 1,
            group: vec![0, 0, 1, 1],
            one_way: true,
        });
        assert_eq!(net.send(0, 2), Verdict::Drop(DropReason::Partition));
        assert_eq!(net.send(1, 3), Verdict::Drop(DropReason::Partition));
        assert!(matches!(net.send(2, 0), Verdict::Deliver { .. }));
        assert!(matches!(net.send(3, 1), Verdict::Deliver { .. }));
    }

    #[test]
    fn independent_loss_rate_is_roughly_right() {
        let mut net = Network::new(
            &NetworkSpec {
                loss: 0.2,
                ..spec()
            },
            2,
            1,
            7,
        );
        let n = 100_000;
        let lost = (0..n)
            .filter(|_| matches!(net.send(0, 1), Verdict::Drop(_)))
            .count();
        let rate = lost as f64 / f64::from(n);
        assert!((0.19..0.21).contains(&rate), "measured loss {rate}");
    }

    #[test]
    fn burst_loss_matches_the_chain_stationary_rate() {
        let burst = BurstSpec {
            enter: 0.01,
            leave: 0.1,
            loss: 0.5,
        };
        let mut net = Network::new(
            &NetworkSpec {
                burst: Some(burst),
                ..spec()
            },
            2,
            1,
            9,
        );
        let n = 400_000;
        let lost = (0..n)
            .filter(|_| matches!(net.send(0, 1), Verdict::Drop(_)))
            .count();
        // Stationary P(bad) = enter / (enter + leave) = 1/11; loss = 0.5 of that.
        let rate = lost as f64 / f64::from(n);
        assert!((0.035..0.056).contains(&rate), "measured burst loss {rate}");
    }

    #[test]
    fn latency_is_base_plus_mean_jitter_and_regions_apply() {
        let spec = NetworkSpec {
            latency: Duration::from_millis(1),
            jitter: Duration::from_micros(200),
            inter_region_latency: Duration::from_millis(40),
            ..NetworkSpec::default()
        };
        let mut net = Network::new(&spec, 4, 2, 3);
        let n = 50_000u64;
        let mut sum = 0u64;
        for _ in 0..n {
            match net.send(0, 2) {
                Verdict::Deliver { delay_ns, .. } => {
                    assert!(delay_ns >= 1_000_000);
                    sum += delay_ns;
                }
                Verdict::Drop(r) => panic!("dropped: {r:?}"),
            }
        }
        let mean = sum / n;
        assert!(
            (1_190_000..1_210_000).contains(&mean),
            "mean delay {mean} ns"
        );
        match net.send(0, 1) {
            Verdict::Deliver { delay_ns, .. } => assert!(delay_ns >= 40_000_000),
            Verdict::Drop(r) => panic!("dropped: {r:?}"),
        }
    }

    /// Whatever its size, a message gets one verdict: the model draws the same randomness for a
    /// snapshot-sized message as for a datagram, and a partition drops it whole.
    #[test]
    fn a_large_message_is_one_message_under_the_same_rules() {
        let spec = NetworkSpec {
            loss: 0.3,
            duplicate: 0.1,
            ..NetworkSpec::default()
        };
        let mut a = Network::new(&spec, 2, 1, 5);
        let mut b = Network::new(&spec, 2, 1, 5);
        // The engine hands the model no size: a 100 kB snapshot and a 60-byte heartbeat from
        // the same sender draw the same verdicts in the same order.
        for _ in 0..1_000 {
            assert_eq!(a.send(0, 1), b.send(0, 1));
        }
        a.add_partition(Partition {
            id: 1,
            group: vec![0, 1],
            one_way: false,
        });
        assert_eq!(a.send(0, 1), Verdict::Drop(DropReason::Partition));
        assert_eq!(a.stats().sent, 1_001);
    }

    #[test]
    fn same_seed_same_decisions() {
        let spec = NetworkSpec {
            loss: 0.3,
            duplicate: 0.1,
            reorder: 0.2,
            ..NetworkSpec::default()
        };
        let mut a = Network::new(&spec, 3, 1, 11);
        let mut b = Network::new(&spec, 3, 1, 11);
        for i in 0..1_000 {
            assert_eq!(a.send(i % 3, (i + 1) % 3), b.send(i % 3, (i + 1) % 3));
        }
    }
}
