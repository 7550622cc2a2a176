//! The network model: what happens to one datagram between two nodes.
//!
//! The model holds the scenario's `[network]` (base latency per region pair, jitter, loss,
//! bursty loss per sender, duplication, reordering) and the **link rules** of the active fault
//! plans: one rule per activated plan that acts on links (a partition, latency, loss, bursty loss,
//! duplication, reordering), each on its own set of directed links ([`LinkSet`]), removed by the
//! plan's revert. For every datagram the model decides, in this order and from its own random
//! stream:
//! 1. cuts (no randomness): a datagram on a link an active partition cuts is dropped;
//! 2. the base bursty loss: the sender's Gilbert-Elliott chain steps once, then drops with the
//!    bad state's loss probability while bad;
//! 3. each bursty-loss rule on the link: the link's own chain steps once, then drops likewise;
//! 4. independent loss, with the probability of the latest loss rule on the link, or the base;
//! 5. delay: the link's base latency (intra- or inter-region) plus an exponential jitter, plus,
//!    with the base reorder probability, a uniform extra delay of up to 10x the mean jitter; then
//!    each latency rule's delay plus its exponential jitter, and each reorder rule's uniform hold
//!    with its probability;
//! 6. duplication: with the base duplicate probability, or else a duplicate rule's, a second copy
//!    with its own delay.
//!
//! A rule draws nothing from the stream for a datagram it does not cover, so a run without link
//! rules draws exactly what it drew before rules existed. The model never allocates per datagram
//! and does O(active rules) work per datagram; membership in a rule's links is O(1) for groups
//! and sets of ends, O(log links) for an explicit link set (the bridge and ring shapes).
//!
//! A message larger than a datagram (a Raft snapshot: the real transport sends any payload over
//! [`MAX_DATAGRAM_BYTES`](meshkit::wire::MAX_DATAGRAM_BYTES) on a QUIC stream) is one message
//! here too: one verdict, under the same partition and loss rules, delivered whole after one
//! delay or lost whole. The model never looks at sizes; a stream's retransmissions and its
//! transfer time are not modelled (snapshots are rare and, at the table sizes the scenarios
//! reach, a few hundred kilobytes at most).

use core::time::Duration;
use std::collections::BTreeSet;

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
    /// The sender's or the link's burst chain was in its bad state.
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

/// One active partition by groups: a group number per node. The observer measures its sides.
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

/// The directed links one rule covers.
#[derive(Clone, Debug)]
pub(crate) enum LinkSet {
    /// A partition by groups: see [`Partition::blocks`].
    Groups(Partition),
    /// `from -> to` for `from` in `from` and `to` in `to` (and the reverse when `both`), never
    /// a node to itself: a link fault's ends (`meshkit::diag::fault::LinkEnds`).
    Ends {
        /// Senders, by node index.
        from: Vec<bool>,
        /// Receivers, by node index.
        to: Vec<bool>,
        /// Also `to -> from`.
        both: bool,
    },
    /// Exactly these `(from, to)` node-index pairs (the bridge and majorities-ring shapes).
    Links(BTreeSet<(u32, u32)>),
}

impl LinkSet {
    /// Whether the set holds the link `from -> to`.
    pub(crate) fn contains(&self, from: usize, to: usize) -> bool {
        match self {
            Self::Groups(p) => p.blocks(from, to),
            Self::Ends {
                from: a,
                to: b,
                both,
            } => from != to && ((a[from] && b[to]) || (*both && b[from] && a[to])),
            Self::Links(links) => {
                let (Ok(f), Ok(t)) = (u32::try_from(from), u32::try_from(to)) else {
                    return false;
                };
                links.contains(&(f, t))
            }
        }
    }
}

/// What a rule does to the datagrams on its links.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) enum LinkEffect {
    /// Dropped (a partition).
    Cut,
    /// Lost with this probability (replacing the base loss on these links; the latest wins).
    Loss(f64),
    /// A Gilbert-Elliott chain per link, stepped once per datagram.
    Burst(BurstSpec),
    /// Delayed by `delay_ns` plus an exponential extra of mean `jitter_ns`.
    Latency {
        /// Added delay.
        delay_ns: u64,
        /// Mean of the exponential extra.
        jitter_ns: u64,
    },
    /// Delivered twice with this probability.
    Duplicate(f64),
    /// Held back by up to `max_ns` (uniform) with probability `rate`.
    Reorder {
        /// Probability of a hold.
        rate: f64,
        /// Longest hold.
        max_ns: u64,
    },
}

/// One active fault plan's effect on the network.
#[derive(Clone, Debug)]
struct LinkRule {
    id: u64,
    links: LinkSet,
    effect: LinkEffect,
    /// Bursty loss: the links whose chain is in its bad state (the others are good).
    bad: BTreeSet<(u32, u32)>,
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
    /// Copies delayed by a latency rule.
    pub(crate) delayed: u64,
    /// Copies held back by a reorder rule.
    pub(crate) held_back: u64,
}

/// The network model. See the module documentation.
#[derive(Debug)]
pub(crate) struct Network {
    latency_ns: u64,
    inter_region_latency_ns: u64,
    jitter_mean_ns: f64,
    regions: u32,
    loss: f64,
    duplicate: f64,
    reorder: f64,
    burst: Option<BurstSpec>,
    /// Gilbert-Elliott state per sender: `true` = bad.
    burst_bad: Vec<bool>,
    /// Active rules, in activation order.
    rules: Vec<LinkRule>,
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
            loss: spec.loss,
            duplicate: spec.duplicate,
            reorder: spec.reorder,
            burst: spec.burst,
            burst_bad: if spec.burst.is_some() {
                vec![false; nodes]
            } else {
                Vec::new()
            },
            rules: Vec::new(),
            rng: ChaCha8Rng::seed_from_u64(seed),
            stats: NetworkStats::default(),
        }
    }

    /// Decides the fate of one datagram from node index `from` to node index `to`.
    pub(crate) fn send(&mut self, from: usize, to: usize) -> Verdict {
        self.stats.sent += 1;
        let covers = |r: &LinkRule| r.links.contains(from, to);
        if self
            .rules
            .iter()
            .any(|r| r.effect == LinkEffect::Cut && covers(r))
        {
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
        let link = (from as u32, to as u32);
        let mut loss = self.loss;
        for rule in &mut self.rules {
            if !rule.links.contains(from, to) {
                continue;
            }
            match rule.effect {
                LinkEffect::Burst(burst) => {
                    let bad = rule.bad.contains(&link);
                    let flip = if bad { burst.leave } else { burst.enter };
                    let bad = if chance(&mut self.rng, flip) {
                        !bad
                    } else {
                        bad
                    };
                    if bad {
                        rule.bad.insert(link);
                    } else {
                        rule.bad.remove(&link);
                    }
                    if bad && chance(&mut self.rng, burst.loss) {
                        self.stats.dropped_burst += 1;
                        return Verdict::Drop(DropReason::Burst);
                    }
                }
                LinkEffect::Loss(p) => loss = p,
                _ => {}
            }
        }
        if chance(&mut self.rng, loss) {
            self.stats.dropped_loss += 1;
            return Verdict::Drop(DropReason::Loss);
        }
        let base = if self.region(from) == self.region(to) {
            self.latency_ns
        } else {
            self.inter_region_latency_ns
        };
        let delay_ns = self.delay(base, from, to);
        let mut duplicate = self.duplicate;
        if duplicate == 0.0 {
            for rule in &self.rules {
                if let LinkEffect::Duplicate(p) = rule.effect
                    && rule.links.contains(from, to)
                {
                    duplicate = p;
                }
            }
        }
        let copy_ns = if chance(&mut self.rng, duplicate) {
            self.stats.duplicated += 1;
            Some(self.delay(base, from, to))
        } else {
            None
        };
        Verdict::Deliver { delay_ns, copy_ns }
    }

    /// Decides the fate of one datagram to node index `to` from a sender outside the mesh (the
    /// `byzantine` fault's attacker): no rule applies (the attacker is outside every partition
    /// and every plan's links) and it has no burst chain; the base independent loss, the
    /// intra-region latency, jitter, reordering and duplication apply.
    pub(crate) fn send_from_outside(&mut self, _to: usize) -> Verdict {
        self.stats.sent += 1;
        if chance(&mut self.rng, self.loss) {
            self.stats.dropped_loss += 1;
            return Verdict::Drop(DropReason::Loss);
        }
        let delay_ns = self.base_delay(self.latency_ns);
        let copy_ns = if chance(&mut self.rng, self.duplicate) {
            self.stats.duplicated += 1;
            Some(self.base_delay(self.latency_ns))
        } else {
            None
        };
        Verdict::Deliver { delay_ns, copy_ns }
    }

    /// One copy's delay on `from -> to`: the base, then each latency and reorder rule on it.
    fn delay(&mut self, base_ns: u64, from: usize, to: usize) -> u64 {
        let mut delay = self.base_delay(base_ns);
        for rule in &self.rules {
            match rule.effect {
                LinkEffect::Latency {
                    delay_ns,
                    jitter_ns,
                } if rule.links.contains(from, to) => {
                    delay = delay.saturating_add(delay_ns);
                    if jitter_ns > 0 {
                        delay = delay.saturating_add(exponential(&mut self.rng, jitter_ns as f64));
                    }
                    self.stats.delayed += 1;
                }
                LinkEffect::Reorder { rate, max_ns } if rule.links.contains(from, to) => {
                    let hold = chance(&mut self.rng, rate);
                    if hold {
                        delay = delay.saturating_add(self.rng.random_range(0..=max_ns));
                        self.stats.held_back += 1;
                    }
                }
                _ => {}
            }
        }
        delay
    }

    fn base_delay(&mut self, base_ns: u64) -> u64 {
        let mut delay = base_ns;
        if self.jitter_mean_ns > 0.0 {
            delay = delay.saturating_add(exponential(&mut self.rng, self.jitter_mean_ns));
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

    /// Starts rule `id`: `effect` on `links`, until [`remove_rule`](Self::remove_rule).
    pub(crate) fn add_rule(&mut self, id: u64, links: LinkSet, effect: LinkEffect) {
        self.rules.push(LinkRule {
            id,
            links,
            effect,
            bad: BTreeSet::new(),
        });
    }

    /// Ends rule `id`; returns whether it was active.
    pub(crate) fn remove_rule(&mut self, id: u64) -> bool {
        let before = self.rules.len();
        self.rules.retain(|r| r.id != id);
        self.rules.len() != before
    }

    /// What the model has done so far.
    pub(crate) fn stats(&self) -> NetworkStats {
        self.stats
    }
}

/// An exponential draw of mean `mean` (inverse CDF; `1 - u` is in `(0, 1]`).
fn exponential(rng: &mut ChaCha8Rng, mean: f64) -> u64 {
    let u: f64 = rng.random();
    (-mean * (1.0 - u).ln()) as u64
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
        net.add_rule(
            1,
            LinkSet::Groups(Partition {
                id: 1,
                group: vec![0, 0, 1, 1],
                one_way: false,
            }),
            LinkEffect::Cut,
        );
        assert_eq!(net.send(0, 2), Verdict::Drop(DropReason::Partition));
        assert_eq!(net.send(3, 1), Verdict::Drop(DropReason::Partition));
        assert!(matches!(net.send(0, 1), Verdict::Deliver { .. }));
        assert!(matches!(net.send(2, 3), Verdict::Deliver { .. }));
        assert!(net.remove_rule(1));
        assert!(matches!(net.send(0, 2), Verdict::Deliver { .. }));
    }

    #[test]
    fn one_way_partition_blocks_one_direction_only() {
        let mut net = Network::new(&spec(), 4, 1, 1);
        net.add_rule(
            1,
            LinkSet::Groups(Partition {
                id: 1,
                group: vec![0, 0, 1, 1],
                one_way: true,
            }),
            LinkEffect::Cut,
        );
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
        a.add_rule(
            1,
            LinkSet::Groups(Partition {
                id: 1,
                group: vec![0, 1],
                one_way: false,
            }),
            LinkEffect::Cut,
        );
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

    fn ends(n: usize, from: &[usize], to: &[usize], both: bool) -> LinkSet {
        let mask = |set: &[usize]| (0..n).map(|i| set.contains(&i)).collect();
        LinkSet::Ends {
            from: mask(from),
            to: mask(to),
            both,
        }
    }

    /// A rule acts on its directed links only: node 0's outbound links, not its inbound ones
    /// and not the links between others; removing it restores them.
    #[test]
    fn link_rules_apply_per_directed_link_and_end_with_their_removal() {
        let mut net = Network::new(&spec(), 4, 1, 1);
        net.add_rule(7, ends(4, &[0], &[1, 2, 3], false), LinkEffect::Loss(1.0));
        assert_eq!(net.send(0, 1), Verdict::Drop(DropReason::Loss));
        assert_eq!(net.send(0, 3), Verdict::Drop(DropReason::Loss));
        assert!(matches!(net.send(1, 0), Verdict::Deliver { .. }));
        assert!(matches!(net.send(2, 3), Verdict::Deliver { .. }));
        // Both ways: the reverse links too, never a self-link.
        net.add_rule(8, ends(4, &[2], &[2, 3], true), LinkEffect::Cut);
        assert_eq!(net.send(3, 2), Verdict::Drop(DropReason::Partition));
        assert_eq!(net.send(2, 3), Verdict::Drop(DropReason::Partition));
        assert!(!ends(4, &[2], &[2], true).contains(2, 2));
        assert!(net.remove_rule(7) && net.remove_rule(8));
        assert!(!net.remove_rule(7));
        assert!(matches!(net.send(0, 1), Verdict::Deliver { .. }));
        assert!(matches!(net.send(3, 2), Verdict::Deliver { .. }));
        // One link, one direction: 1 -> 2 only, not 1's other links nor 2 -> 1.
        net.add_rule(9, ends(4, &[1], &[2], false), LinkEffect::Cut);
        assert_eq!(net.send(1, 2), Verdict::Drop(DropReason::Partition));
        assert!(matches!(net.send(1, 3), Verdict::Deliver { .. }));
        assert!(matches!(net.send(2, 1), Verdict::Deliver { .. }));
        assert!(net.remove_rule(9));
        // An explicit link set holds exactly its pairs.
        let links = LinkSet::Links(BTreeSet::from([(1, 2)]));
        assert!(links.contains(1, 2) && !links.contains(2, 1));
    }

    /// The latest loss rule on a link replaces the base loss there, and only there.
    #[test]
    fn a_loss_rule_replaces_the_base_loss_on_its_links() {
        let mut net = Network::new(
            &NetworkSpec {
                loss: 1.0,
                ..spec()
            },
            3,
            1,
            1,
        );
        net.add_rule(1, ends(3, &[0], &[1], false), LinkEffect::Loss(0.0));
        assert!(matches!(net.send(0, 1), Verdict::Deliver { .. }));
        assert_eq!(net.send(1, 0), Verdict::Drop(DropReason::Loss));
        net.add_rule(2, ends(3, &[0], &[1], false), LinkEffect::Loss(1.0));
        assert_eq!(net.send(0, 1), Verdict::Drop(DropReason::Loss));
        net.remove_rule(2);
        assert!(matches!(net.send(0, 1), Verdict::Deliver { .. }));
    }

    /// Latency adds its delay plus a jitter of the given mean; reorder holds some copies back;
    /// duplicate sends second copies; each on its links only.
    #[test]
    fn latency_reorder_and_duplicate_rules_shape_their_links() {
        let mut net = Network::new(&spec(), 2, 1, 4);
        let base = match net.send(0, 1) {
            Verdict::Deliver { delay_ns, .. } => delay_ns,
            Verdict::Drop(r) => panic!("dropped: {r:?}"),
        };
        net.add_rule(
            1,
            ends(2, &[0], &[1], false),
            LinkEffect::Latency {
                delay_ns: 50_000_000,
                jitter_ns: 5_000_000,
            },
        );
        let n = 20_000u64;
        let mut sum = 0;
        for _ in 0..n {
            let Verdict::Deliver { delay_ns, .. } = net.send(0, 1) else {
                panic!("dropped")
            };
            assert!(delay_ns >= base + 50_000_000);
            sum += delay_ns - base - 50_000_000;
        }
        let mean = sum / n;
        assert!(
            (4_800_000..5_200_000).contains(&mean),
            "mean jitter {mean} ns"
        );
        assert!(matches!(net.send(1, 0), Verdict::Deliver { delay_ns, .. } if delay_ns == base));
        net.remove_rule(1);
        net.add_rule(
            2,
            ends(2, &[0], &[1], false),
            LinkEffect::Reorder {
                rate: 0.5,
                max_ns: 10_000_000,
            },
        );
        net.add_rule(3, ends(2, &[0], &[1], false), LinkEffect::Duplicate(0.25));
        let mut copies = 0;
        for _ in 0..n {
            if let Verdict::Deliver {
                copy_ns: Some(_), ..
            } = net.send(0, 1)
            {
                copies += 1;
            }
        }
        let held = net.stats().held_back;
        assert!(
            (0.23..0.27).contains(&(copies as f64 / n as f64)),
            "{copies} copies"
        );
        // Each copy is a candidate for a hold: about half of n + copies.
        let expected = (n + copies) as f64 / 2.0;
        assert!(
            (held as f64 - expected).abs() < expected * 0.05,
            "{held} held back"
        );
    }

    /// Bursty loss per link: each link has its own chain, so a bad link does not make the
    /// sender's other links bad; the rate matches the chain's stationary loss.
    #[test]
    fn a_bursty_loss_rule_keeps_one_chain_per_link() {
        let burst = BurstSpec {
            enter: 0.01,
            leave: 0.1,
            loss: 1.0,
        };
        let mut net = Network::new(&spec(), 3, 1, 9);
        net.add_rule(1, ends(3, &[0], &[1], false), LinkEffect::Burst(burst));
        let n = 200_000;
        let lost = (0..n)
            .filter(|_| matches!(net.send(0, 1), Verdict::Drop(DropReason::Burst)))
            .count();
        let rate = lost as f64 / f64::from(n);
        assert!((0.08..0.1).contains(&rate), "measured burst loss {rate}");
        assert!((0..1_000).all(|_| matches!(net.send(0, 2), Verdict::Deliver { .. })));
        // A chain that flips at every datagram, on two links of one sender: each link starts
        // good, so the first datagram on each is lost, whatever the other link did.
        let flip = BurstSpec {
            enter: 1.0,
            leave: 1.0,
            loss: 1.0,
        };
        let mut net = Network::new(&spec(), 3, 1, 9);
        net.add_rule(1, ends(3, &[0], &[1, 2], false), LinkEffect::Burst(flip));
        assert_eq!(net.send(0, 1), Verdict::Drop(DropReason::Burst));
        assert_eq!(net.send(0, 2), Verdict::Drop(DropReason::Burst));
        assert!(matches!(net.send(0, 1), Verdict::Deliver { .. }));
        assert!(matches!(net.send(0, 2), Verdict::Deliver { .. }));
    }
}
