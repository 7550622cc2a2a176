//! Chaos on real links: a [`ChaosTransport`] wraps any [`Transport`] and applies per-link rules
//! (cut, loss, bursty loss, latency with jitter, duplication, reordering) to what passes
//! through it, one direction at a time.
//!
//! The rules come from the runtime's chaos host (`meshkit_runtime::chaos_host`), which turns
//! the active fault experiments into a [`ChaosRules`] table and swaps it in through the shared
//! [`ChaosLinks`] handle. Every rule names this node's peer and a [`LinkSide`]: outbound rules
//! act in [`Transport::send`] (keyed by the destination), inbound rules in
//! [`Transport::poll_recv`] (keyed by the sender the inner transport authenticated, never by
//! anything in the datagram).
//!
//! # Cost with no rules
//!
//! With no rules (chaos off, or nothing active) a message costs one atomic load of the table's
//! generation and a branch: the table is only read again when its generation changes
//! (docs/benchmarks.md, "Chaos transport").
//!
//! # Randomness
//!
//! Draws come from a small seeded generator (SplitMix64), reseeded from the table's seed (the
//! experiments' plan seeds, mixed with this node's id by the host) each time a table is
//! swapped in: the same messages through the same table are dropped, delayed and duplicated the
//! same way. Nothing reads the OS's randomness.
//!
//! # Limits
//!
//! Delayed and reordered messages wait in one queue of at most [`MAX_HELD_MESSAGES`]; a
//! message that would make it longer is dropped and counted
//! ([`LinkCounts::overflow_dropped`], and as `dropped`). Held messages are delivered at their
//! time even after the rule that delayed them is reverted: they were already in flight.

use std::collections::{BTreeMap, BinaryHeap, VecDeque};
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use meshkit::NodeId;
use tokio::time::{Instant, Sleep};

use super::{Received, Transport, TransportStats};

/// The most messages held back (delayed or reordered) at once, both directions together.
pub const MAX_HELD_MESSAGES: usize = 4096;
/// Inner messages taken per [`Transport::poll_recv`] call while rules drop or hold them, before
/// the wrapper yields (and re-wakes itself) so that the driver's round stays bounded.
pub const MAX_RECV_STEPS: usize = 64;

/// Which direction of a link a rule acts on, seen from this node.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum LinkSide {
    /// Messages this node sends to the peer.
    Outbound,
    /// Messages this node receives from the peer.
    Inbound,
}

/// What a rule does to each message on its link.
#[derive(Clone, Copy, Debug, PartialEq)]
#[non_exhaustive]
pub enum LinkEffect {
    /// Every message is dropped (a partition).
    Cut,
    /// Each message is dropped with probability `rate`.
    Loss {
        /// 0.0..=1.0.
        rate: f64,
    },
    /// A Gilbert-Elliott chain per link, stepped once per message: from good to bad with
    /// probability `enter`, back with `leave`; in the bad state a message is lost with
    /// probability `loss`.
    BurstyLoss {
        /// 0.0..=1.0.
        enter: f64,
        /// 0.0..=1.0.
        leave: f64,
        /// 0.0..=1.0.
        loss: f64,
    },
    /// Each message waits `delay` plus an exponential extra of mean `jitter`.
    Latency {
        /// The fixed part.
        delay: Duration,
        /// The mean of the extra (zero: none).
        jitter: Duration,
    },
    /// Each message is delivered twice with probability `rate`.
    Duplicate {
        /// 0.0..=1.0.
        rate: f64,
    },
    /// Each message is held back a uniform `0..=max_delay` with probability `rate`, so that
    /// later ones overtake it.
    Reorder {
        /// 0.0..=1.0.
        rate: f64,
        /// The longest hold.
        max_delay: Duration,
    },
}

/// One rule: `effect` on the `side` direction of the link between this node and `peer`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct LinkRule {
    /// Which direction.
    pub side: LinkSide,
    /// The other end.
    pub peer: NodeId,
    /// What it does.
    pub effect: LinkEffect,
}

/// A table of rules, swapped in whole by [`ChaosLinks::set`]. Several rules on one link all
/// apply, in the order given: drops first decide, then the delays add up, then duplication.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ChaosRules {
    seed: u64,
    by_link: BTreeMap<(LinkSide, NodeId), Vec<LinkEffect>>,
}

impl ChaosRules {
    /// A table of `rules`, whose draws start from `seed`.
    pub fn new(seed: u64, rules: impl IntoIterator<Item = LinkRule>) -> Self {
        let mut by_link: BTreeMap<(LinkSide, NodeId), Vec<LinkEffect>> = BTreeMap::new();
        for rule in rules {
            by_link
                .entry((rule.side, rule.peer))
                .or_default()
                .push(rule.effect);
        }
        Self { seed, by_link }
    }

    /// Whether the table has no rule.
    pub fn is_empty(&self) -> bool {
        self.by_link.is_empty()
    }

    /// How many directed links have at least one rule.
    pub fn links(&self) -> usize {
        self.by_link.len()
    }

    /// The effects on one direction of the link to `peer`.
    pub fn effects(&self, side: LinkSide, peer: NodeId) -> &[LinkEffect] {
        self.by_link.get(&(side, peer)).map_or(&[], Vec::as_slice)
    }
}

/// What the wrappers sharing one [`ChaosLinks`] did to messages; the counters only grow.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct LinkCounts {
    /// Messages dropped (cut, lost, or over [`MAX_HELD_MESSAGES`]).
    pub dropped: u64,
    /// Messages held back by a latency rule.
    pub delayed: u64,
    /// Extra copies delivered.
    pub duplicated: u64,
    /// Messages held back by a reorder rule.
    pub reordered: u64,
    /// Of `dropped`, those dropped because the held queue was full.
    pub overflow_dropped: u64,
}

#[derive(Debug, Default)]
struct Shared {
    /// Bumped on every swap; 0 is the empty table the handle starts with.
    generation: AtomicU64,
    rules: Mutex<Arc<ChaosRules>>,
    dropped: AtomicU64,
    delayed: AtomicU64,
    duplicated: AtomicU64,
    reordered: AtomicU64,
    overflow_dropped: AtomicU64,
}

/// The shared handle through which the chaos host swaps a [`ChaosTransport`]'s rules and reads
/// its counters. Clone it: every clone names the same table.
#[derive(Clone, Debug, Default)]
pub struct ChaosLinks {
    shared: Arc<Shared>,
}

impl ChaosLinks {
    /// A handle with no rules.
    pub fn new() -> Self {
        Self::default()
    }

    /// Replaces the whole table at once: the wrapper applies it from its next message.
    pub fn set(&self, rules: ChaosRules) {
        let mut slot = self.lock();
        *slot = Arc::new(rules);
        // Published under the lock, after the table: a wrapper that sees the new generation
        // takes the lock and reads this table or a newer one.
        self.shared.generation.fetch_add(1, Ordering::Release);
    }

    /// Removes every rule.
    pub fn clear(&self) {
        self.set(ChaosRules::default());
    }

    /// The table in force.
    pub fn rules(&self) -> Arc<ChaosRules> {
        self.lock().clone()
    }

    /// What the wrappers did so far.
    pub fn counts(&self) -> LinkCounts {
        let s = &self.shared;
        LinkCounts {
            dropped: s.dropped.load(Ordering::Relaxed),
            delayed: s.delayed.load(Ordering::Relaxed),
            duplicated: s.duplicated.load(Ordering::Relaxed),
            reordered: s.reordered.load(Ordering::Relaxed),
            overflow_dropped: s.overflow_dropped.load(Ordering::Relaxed),
        }
    }

    fn generation(&self) -> u64 {
        self.shared.generation.load(Ordering::Acquire)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Arc<ChaosRules>> {
        // One assignment or clone under the lock: the slot is consistent even after a panic.
        self.shared
            .rules
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    fn count(&self, counter: fn(&Shared) -> &AtomicU64) {
        counter(&self.shared).fetch_add(1, Ordering::Relaxed);
    }
}

/// SplitMix64: a tiny seeded generator, enough for drop and delay draws (not cryptographic).
#[derive(Clone, Debug)]
struct SplitMix64(u64);

impl SplitMix64 {
    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `[0, 1)`.
    fn unit(&mut self) -> f64 {
        // 53 random bits: every value is exact in an f64.
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    /// `true` with probability `p` (never for 0, always for 1).
    fn chance(&mut self, p: f64) -> bool {
        self.unit() < p
    }
}

/// A message held back, in either direction.
#[derive(Debug)]
enum Held {
    Out {
        to: NodeId,
        addr: Option<SocketAddr>,
        datagram: Bytes,
    },
    In(Received),
}

/// Ordered by due time, then by arrival (a min-heap through `Reverse`).
#[derive(Debug)]
struct Waiting {
    due: Instant,
    seq: u64,
    message: Held,
}

impl PartialEq for Waiting {
    fn eq(&self, other: &Self) -> bool {
        (self.due, self.seq) == (other.due, other.seq)
    }
}
impl Eq for Waiting {}
impl PartialOrd for Waiting {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Waiting {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        // Reversed: BinaryHeap is a max-heap, the earliest must come out first.
        (other.due, other.seq).cmp(&(self.due, self.seq))
    }
}

/// What the rules decided for one message.
enum Fate {
    Drop,
    /// Deliver `copies` (1 or 2) after `hold` (zero: now).
    Deliver {
        copies: u8,
        hold: Duration,
    },
}

/// A [`Transport`] that applies the [`ChaosRules`] of a [`ChaosLinks`] handle to the messages of
/// the transport it wraps. See the [module docs](self).
///
/// Held messages are released from [`Transport::poll_recv`] (and from [`Transport::send`]),
/// which the driver calls on every wake-up; the wrapper registers a timer for the next one.
#[derive(Debug)]
pub struct ChaosTransport<T> {
    inner: T,
    links: ChaosLinks,
    local: NodeId,
    generation: u64,
    rules: Arc<ChaosRules>,
    rng: SplitMix64,
    /// Gilbert-Elliott state per link and rule index: `true` in the bad state.
    bad: BTreeMap<(LinkSide, NodeId, usize), bool>,
    held: BinaryHeap<Waiting>,
    /// Inbound messages ready now (duplicates, released holds), delivered first.
    ready: VecDeque<Received>,
    seq: u64,
    /// Made on first use, so that a wrapper can be built outside a tokio runtime.
    timer: Option<Pin<Box<Sleep>>>,
    timer_at: Option<Instant>,
}

impl<T: Transport> ChaosTransport<T> {
    /// Wraps `inner`, the transport of node `local`, under the rules of `links`.
    pub fn new(inner: T, local: NodeId, links: ChaosLinks) -> Self {
        Self {
            inner,
            links,
            local,
            generation: 0,
            rules: Arc::default(),
            rng: SplitMix64(local.get()),
            bad: BTreeMap::new(),
            held: BinaryHeap::new(),
            ready: VecDeque::new(),
            seq: 0,
            timer: None,
            timer_at: None,
        }
    }

    /// The wrapped transport.
    pub fn inner(&self) -> &T {
        &self.inner
    }

    /// Messages held back now.
    pub fn held(&self) -> usize {
        self.held.len()
    }

    /// Takes a newer table if one was swapped in; `true` if any rule is in force.
    fn refresh(&mut self) -> bool {
        let generation = self.links.generation();
        if generation != self.generation {
            self.generation = generation;
            self.rules = self.links.rules();
            // The node id mixed in: two nodes under one plan draw differently, each
            // reproducibly.
            self.rng =
                SplitMix64(self.rules.seed ^ self.local.get().wrapping_mul(0xA076_1D64_78BD_642F));
            self.bad.clear();
        }
        !self.rules.is_empty()
    }

    fn decide(&mut self, side: LinkSide, peer: NodeId) -> Fate {
        let rules = Arc::clone(&self.rules);
        let effects = rules.effects(side, peer);
        let mut hold = Duration::ZERO;
        let mut copies = 1;
        let mut delayed = false;
        let mut reordered = false;
        for (i, effect) in effects.iter().enumerate() {
            match *effect {
                LinkEffect::Cut => return Fate::Drop,
                LinkEffect::Loss { rate } => {
                    if self.rng.chance(rate) {
                        return Fate::Drop;
                    }
                }
                LinkEffect::BurstyLoss { enter, leave, loss } => {
                    let bad = self.bad.entry((side, peer, i)).or_insert(false);
                    *bad = if *bad {
                        !self.rng.chance(leave)
                    } else {
                        self.rng.chance(enter)
                    };
                    if *bad && self.rng.chance(loss) {
                        return Fate::Drop;
                    }
                }
                LinkEffect::Latency { delay, jitter } => {
                    let extra = if jitter.is_zero() {
                        Duration::ZERO
                    } else {
                        // Exponential of mean `jitter`: -mean * ln(u), u in (0, 1].
                        let u = 1.0 - self.rng.unit();
                        jitter.mul_f64(-u.ln()).min(MAX_JITTER)
                    };
                    hold = hold.saturating_add(delay).saturating_add(extra);
                    delayed |= !hold.is_zero();
                }
                LinkEffect::Duplicate { rate } => {
                    if self.rng.chance(rate) {
                        copies = 2;
                    }
                }
                LinkEffect::Reorder { rate, max_delay } => {
                    if self.rng.chance(rate) {
                        hold = hold.saturating_add(max_delay.mul_f64(self.rng.unit()));
                        reordered = true;
                    }
                }
            }
        }
        if delayed {
            self.links.count(|s| &s.delayed);
        }
        if reordered {
            self.links.count(|s| &s.reordered);
        }
        if copies > 1 {
            self.links.count(|s| &s.duplicated);
        }
        Fate::Deliver { copies, hold }
    }

    /// Holds `message` until `hold` from now; `false` (and counted) when the queue is full.
    fn hold(&mut self, hold: Duration, message: Held) -> bool {
        if self.held.len() >= MAX_HELD_MESSAGES {
            self.links.count(|s| &s.dropped);
            self.links.count(|s| &s.overflow_dropped);
            return false;
        }
        self.seq += 1;
        self.held.push(Waiting {
            due: Instant::now() + hold,
            seq: self.seq,
            message,
        });
        true
    }

    /// Delivers every held message that is due: outbound ones to the inner transport, inbound
    /// ones to `ready`.
    fn release_due(&mut self) {
        let now = Instant::now();
        while self.held.peek().is_some_and(|w| w.due <= now) {
            let Some(waiting) = self.held.pop() else {
                break;
            };
            match waiting.message {
                Held::Out { to, addr, datagram } => self.inner.send(to, addr, datagram),
                Held::In(received) => self.ready.push_back(received),
            }
        }
    }

    /// Points the timer at the next held message, and registers it with `cx`.
    fn arm(&mut self, cx: &mut Context<'_>) {
        let Some(next) = self.held.peek().map(|w| w.due) else {
            self.timer_at = None;
            return;
        };
        let timer = self
            .timer
            .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(next)));
        if self.timer_at != Some(next) {
            self.timer_at = Some(next);
            timer.as_mut().reset(next);
        }
        if timer.as_mut().poll(cx).is_ready() {
            // Due already: the caller goes round again.
            self.timer_at = None;
            cx.waker().wake_by_ref();
        }
    }
}

/// The longest exponential extra a latency rule draws: the tail of the distribution is cut so
/// that one unlucky draw cannot hold a message for hours.
const MAX_JITTER: Duration = Duration::from_secs(60);

impl<T: Transport> Transport for ChaosTransport<T> {
    fn send(&mut self, to: NodeId, addr: Option<SocketAddr>, datagram: Bytes) {
        if !self.refresh() {
            if !self.held.is_empty() {
                self.release_due();
            }
            self.inner.send(to, addr, datagram);
            return;
        }
        self.release_due();
        match self.decide(LinkSide::Outbound, to) {
            Fate::Drop => self.links.count(|s| &s.dropped),
            Fate::Deliver { copies, hold } => {
                if hold.is_zero() {
                    if copies > 1 {
                        self.inner.send(to, addr, datagram.clone());
                    }
                    self.inner.send(to, addr, datagram);
                } else {
                    for _ in 1..copies {
                        let copy = datagram.clone();
                        self.hold(
                            hold,
                            Held::Out {
                                to,
                                addr,
                                datagram: copy,
                            },
                        );
                    }
                    self.hold(hold, Held::Out { to, addr, datagram });
                }
            }
        }
    }

    fn needs_addresses(&self) -> bool {
        self.inner.needs_addresses()
    }

    fn poll_recv(&mut self, cx: &mut Context<'_>) -> Poll<Option<Received>> {
        let active = self.refresh();
        if !active && self.held.is_empty() && self.ready.is_empty() {
            return self.inner.poll_recv(cx);
        }
        self.release_due();
        let result = 'recv: {
            for _ in 0..MAX_RECV_STEPS {
                if let Some(received) = self.ready.pop_front() {
                    break 'recv Poll::Ready(Some(received));
                }
                let received = match self.inner.poll_recv(cx) {
                    Poll::Ready(Some(received)) => received,
                    other => break 'recv other,
                };
                if !active {
                    break 'recv Poll::Ready(Some(received));
                }
                match self.decide(LinkSide::Inbound, received.from) {
                    Fate::Drop => self.links.count(|s| &s.dropped),
                    Fate::Deliver { copies, hold } if hold.is_zero() => {
                        if copies > 1 {
                            self.ready.push_back(received.clone());
                        }
                        break 'recv Poll::Ready(Some(received));
                    }
                    Fate::Deliver { copies, hold } => {
                        for _ in 1..copies {
                            self.hold(hold, Held::In(received.clone()));
                        }
                        self.hold(hold, Held::In(received));
                    }
                }
            }
            // Budget spent on dropped or held messages: come back after other tasks ran.
            cx.waker().wake_by_ref();
            Poll::Pending
        };
        self.arm(cx);
        result
    }

    fn stats(&self) -> TransportStats {
        self.inner.stats()
    }
}

#[cfg(test)]
mod tests;
