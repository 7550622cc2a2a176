//! Failure detection by probing (SWIM §4.1-4.3, Lifeguard §IV-A and the nack of §IV-C).
//!
//! Each protocol period probes one member (several in a shared mass failure with
//! `Config::mass_probes`) in randomized round-robin order: a direct ping, then,
//! if no ack came within the (health-scaled) probe timeout, ping requests to k other members who
//! answer with the target's ack or with a nack. A probe without an ack by the end of the period
//! makes the target suspect. Missing nacks count against this node's own health, not the target,
//! unless something shows the silence is not this node's: a helper that did nack (its links and
//! scheduling worked), a helper the mesh suspects by now, or a target another member suspects
//! too. Without those exceptions a node cut off with a minority counts every unreachable member
//! against itself, stretches its probe period towards `awareness_max + 1` times, and takes
//! minutes to hold the rest of the mesh dead (docs/benchmarks.md, "cut-off minorities").

use super::{Event, MemberState, Membership, Timer};
use crate::id::{Incarnation, NodeId};
use crate::time::{Duration, Instant};
use crate::wire::{Message, Update};

/// Indirect probes relayed for others at once; more requests are ignored (the requester then
/// counts a missing nack against its own health, as it should when it asks an overloaded node).
pub(crate) const MAX_RELAYS: usize = 256;
/// Dead members probed again and awaiting an ack at once.
const MAX_DEAD_PROBES: usize = 16;
/// Direct checks that may hold one suspicion's verdict (a late confirmation, contact coming
/// back); past this the verdict stands. Each costs one datagram and delays a real crash's
/// verdict by a probe timeout.
pub(crate) const MAX_DIRECT_CHECKS: u32 = 2;
/// Times a suspicion nobody else was heard holding is announced again before its verdict (see
/// `Suspicion::announce_again`); each holds the verdict one health-scaled probe timeout. Bursts
/// of loss last a few seconds; a node cut off alone pays this much longer to hold the rest dead.
pub(crate) const MAX_UNHEARD_ANNOUNCEMENTS: u32 = 3;

/// A node holding one member in this many (of those it knows Alive or Suspect) Suspect is in
/// a mass failure: cut off with a minority, or a partition took a share of the mesh away.
/// Then, and only then, it probes members nobody suspects yet first, counts a helper's nack
/// as a confirmation of its probe's suspicion, raises its own suspicion when a ping it
/// relayed fails, and does not charge failed probes to its local health (a nack earns a point
/// back). Each of these speeds up a cut-off side's view of the rest (#19 class 4); applied in
/// a quiet mesh they cost: slower crash detection (fewer probes of a suspect, so fewer
/// confirmations) and false positives under bursty loss. 4 was chosen over 3, 6 and 10 from
/// `minority-cut` and `burst-loss-5pct` at 16 nodes: 6 and 10 are faster for the minority
/// but add false positives under bursty loss (docs/benchmarks.md, "Class 4"). Only with
/// [`Config::minority_rules`](crate::config::Config::minority_rules) on (off by default: more
/// false positives after a partition heals).
pub(crate) const MASS_SUSPICION_DIVISOR: usize = 4;
/// A node holding one member in this many (of those it knows Alive or Suspect) Suspect on
/// another member's word too is in a mass failure it shares with others, for the rules of
/// [`Config::mass_probes`](crate::config::Config::mass_probes): more probes a period, and a
/// last direct check before each verdict (see `Membership::shared_mass_failure`). 8 (2 of 16)
/// over 4: at 16 nodes 4 leaves the minority probing one member a period until a quarter of
/// the majority is suspect, and (with a cap of 4 probes a probe interval) misses the bound in
/// 12 of 20 seeds (docs/benchmarks.md, "Class 4").
pub(crate) const MASS_PROBE_DIVISOR: usize = 8;
/// Members held Suspect on another member's word too that make a shared mass failure at
/// least, whatever the share (see `Membership::shared_mass_failure`): with 8 members up or
/// fewer one shared suspicion is an eighth, and one crash that two nodes noticed is no mass
/// failure.
pub(crate) const MIN_SHARED_SUSPICIONS: usize = 2;
/// Probes per probe interval at most, in a shared mass failure (see
/// `Membership::probes_this_period`): 8 lets 3 nodes cut off from 13 suspect them all within
/// a few periods. 4 (with [`MASS_PROBE_DIVISOR`] 8) missed the bound in 5 of 20 seeds at 16
/// nodes (docs/benchmarks.md, "Class 4").
pub(crate) const MAX_PROBES_PER_INTERVAL: usize = 8;
/// Probes one period starts at most, whatever the local health: bounds the probes in flight
/// (each with its k helpers) of a node whose period stretched.
pub(crate) const MAX_PROBES_PER_PERIOD: usize = 32;
const _: () = assert!(MAX_PROBES_PER_INTERVAL <= MAX_PROBES_PER_PERIOD);

/// One probe of the current protocol period.
#[derive(Debug)]
pub(crate) struct Probe {
    target: NodeId,
    seq: u32,
    sent_at: Instant,
    acked: bool,
    expected_nacks: u32,
    nacks: u32,
    /// The members asked to probe the target indirectly, and whether each nacked.
    helpers: Vec<(NodeId, bool)>,
    /// The target was unverified (known only from a relay) when the probe started.
    unverified: bool,
}

/// A ping sent on another member's behalf.
#[derive(Debug)]
pub(crate) struct Relay {
    target: NodeId,
    origin: NodeId,
    origin_seq: u32,
    deadline: Instant,
}

impl Membership {
    /// Whether this node holds at least one in [`MASS_SUSPICION_DIVISOR`] of the members it
    /// knows up (Alive or Suspect) Suspect: a mass failure, as when it is cut off with a
    /// minority, or a partition took a share of the mesh away. See the constant for what
    /// changes then.
    pub(super) fn many_suspected(&self) -> bool {
        self.config.minority_rules()
            && self.suspicions.len() * MASS_SUSPICION_DIVISOR >= self.members.up_count().max(1)
    }

    /// The members this node holds Suspect on the word of another member too (raised or
    /// confirmed by one), and the members it knows up (Alive or Suspect), when the first are at
    /// least one in [`MASS_PROBE_DIVISOR`] of the second and at least
    /// [`MIN_SHARED_SUSPICIONS`]: a mass failure this node shares with
    /// others, as when it is cut off with a minority. Suspicions only this node holds do not
    /// count: a node whose own links fail suspects everyone alone, and probing faster would
    /// spread its mistakes faster (Lifeguard's local health slows it instead). `None` unless
    /// [`Config::mass_probes`](crate::config::Config::mass_probes) is on (never in the
    /// memberlist profile, which has no mass-failure rules).
    pub(super) fn shared_mass_failure(&self) -> Option<(usize, usize)> {
        if !self.config.mass_probes() {
            return None;
        }
        let up = self.members.up_count();
        if up == 0 || self.suspicions.len() * MASS_PROBE_DIVISOR < up {
            return None;
        }
        let corroborated = self
            .suspicions
            .values()
            .filter(|s| s.suspected_by_another(self.id))
            .count();
        (corroborated >= MIN_SHARED_SUSPICIONS && corroborated * MASS_PROBE_DIVISOR >= up)
            .then_some((corroborated, up))
    }

    /// Probes a protocol period starts: one, as SWIM, unless this node is in a mass failure it
    /// shares with others ([`Self::shared_mass_failure`]). Then `1 + 8 * corroborated / up`
    /// a probe interval, at most [`MAX_PROBES_PER_INTERVAL`], times the stretch of its local
    /// health (the period is that much longer, so the rate a second is kept), at most
    /// [`MAX_PROBES_PER_PERIOD`]. Each extra probe is a whole probe: the same direct ping, the
    /// same indirect probe through k helpers, the same suspicion and local-health accounting
    /// (local health is not spared, so a cut-off node still checks late confirmations after a
    /// heal); only the rate changes, so no suspicion rests on less evidence than before. Why: a
    /// few nodes cut off from a large majority cannot suspect it fast enough at one probe a
    /// period, the less so as their health stretches the period (6 nodes and 122 members: 20 s
    /// at best; docs/benchmarks.md "Class 4").
    pub(super) fn probes_this_period(&self) -> usize {
        let Some((corroborated, up)) = self.shared_mass_failure() else {
            return 1;
        };
        let per_interval =
            (1 + corroborated * MAX_PROBES_PER_INTERVAL / up).min(MAX_PROBES_PER_INTERVAL);
        let stretch = usize::try_from(self.health.score()).map_or(usize::MAX, |s| s + 1);
        per_interval
            .saturating_mul(stretch)
            .min(MAX_PROBES_PER_PERIOD)
    }

    /// Starts the probes of a new protocol period (see [`Self::probes_this_period`]) and
    /// schedules its end.
    pub(super) fn start_probe(&mut self, now: Instant) {
        if self.left {
            return;
        }
        self.timers.set(
            Timer::ProbePeriod,
            now + self.health.scale(self.config.probe_interval()),
        );
        // An unverified member normally gets its address within a gossip round or two (its
        // metadata travels with the relays' gossip); an anti-entropy period is ample.
        let grace = self.config.anti_entropy_interval();
        // In a mass failure, members nobody suspects yet first: they need a suspicion, the
        // suspects have theirs.
        let prefer_unsuspected = self.many_suspected();
        let count = self.probes_this_period();
        for _ in 0..count {
            let Some(target) = self.members.next_probe_target(
                &mut self.rng,
                |m| m.probe_eligible(now, grace),
                prefer_unsuspected,
            ) else {
                break;
            };
            if self.probes.iter().any(|p| p.target == target) {
                // The round wrapped: fewer eligible members than probes. The new round's
                // first member is probed first next period, not skipped.
                self.members.give_back_probe_target();
                break;
            }
            let seq = self.next_seq();
            let unverified = self
                .members
                .get(target)
                .is_some_and(|m| m.introduced_by.is_some());
            self.probes.push(Probe {
                target,
                seq,
                sent_at: now,
                acked: false,
                expected_nacks: 0,
                nacks: 0,
                helpers: Vec::new(),
                unverified,
            });
            self.stats.probes += 1;
            let first = self.buddy_update(target);
            self.send_with(
                target,
                Message::Ping { seq, target },
                first.into_iter().collect(),
            );
        }
        if !self.probes.is_empty() {
            self.timers.set(
                Timer::ProbeTimeout,
                now + self.health.scale(self.config.probe_timeout()),
            );
        }
    }

    /// Lifeguard's buddy system: a ping to a member we suspect carries the suspicion, so the
    /// member learns of it at once and can refute.
    fn buddy_update(&self, target: NodeId) -> Option<Update> {
        let m = self.members.get(target)?;
        match m.state {
            MemberState::Suspect => Some(Update::Suspect {
                node: target,
                incarnation: m.incarnation,
                from: self.id,
            }),
            MemberState::Dead => Some(Update::Dead {
                node: target,
                incarnation: m.incarnation,
                from: self.id,
            }),
            _ => None,
        }
    }

    /// The direct probes timed out: for each one unanswered, ask k members to probe its
    /// target for us. No helper is the target of another unanswered probe of the period: it
    /// may be down, and its missing nack would count against this node's own health.
    pub(super) fn probe_indirectly(&mut self) {
        let k = self.config.indirect_probes() as usize;
        let mut probes = core::mem::take(&mut self.probes);
        let unanswered: Vec<NodeId> = probes
            .iter()
            .filter(|p| !p.acked)
            .map(|p| p.target)
            .collect();
        for p in probes.iter_mut().filter(|p| !p.acked) {
            // Only verified members help: one known from a relay's word alone may not exist,
            // and its missing nack would count against this node's own health.
            let helpers = self.members.sample(&mut self.rng, k, &unanswered, |m| {
                m.state == MemberState::Alive && m.introduced_by.is_none() && m.routable
            });
            for &helper in &helpers {
                self.send(
                    helper,
                    Message::PingReq {
                        seq: p.seq,
                        target: p.target,
                    },
                );
            }
            self.stats.indirect_probes += helpers.len() as u64;
            p.expected_nacks = helpers.len() as u32;
            p.helpers = helpers.iter().map(|&h| (h, false)).collect();
        }
        self.probes = probes;
    }

    /// End of the protocol period: each unanswered probe makes its target suspect.
    pub(super) fn conclude_probe(&mut self, now: Instant) {
        self.timers.stop(Timer::ProbeTimeout);
        // The Vec's buffer is kept for the next period; concluding a probe starts none.
        let mut probes = core::mem::take(&mut self.probes);
        for probe in probes.drain(..) {
            self.conclude_one_probe(now, probe);
        }
        self.probes = probes;
    }

    /// One probe of the period that ends: unanswered, its target becomes suspect.
    fn conclude_one_probe(&mut self, now: Instant, probe: Probe) {
        if probe.acked {
            return;
        }
        self.stats.probes_failed += 1;
        // Lifeguard: missing nacks mean our own links or scheduling are degraded. Unless the
        // silence is explained otherwise: a nack that came back shows our links and scheduling
        // worked this period (the silent helpers are cut off, not us); a helper the mesh
        // suspects by now is not expected to answer; and a target another member suspects
        // independently failed for them too. Counted, a node cut off with a minority charges
        // every unreachable member to itself and probes ever more slowly.
        let explained = self
            .suspicions
            .get(&probe.target)
            .is_some_and(|s| s.suspected_by_another(self.id));
        //
        // In a mass failure (`many_suspected`) a failed probe says more about the mesh than
        // about this node, and a nack shows this node's links and scheduling work as an ack
        // does: the first counts nothing, the second earns a point back. Without this a node
        // cut off with a few others stretches its period to the ceiling on its first failed
        // probe (three majority helpers silent), before its peers' suspicions could explain
        // anything, and holds it there (#19 class 4: 3 s periods all through the cut).
        let mass = self.many_suspected();
        let delta: i64 = if mass && probe.nacks > 0 {
            -1
        } else if mass || explained || probe.nacks > 0 {
            0
        } else if probe.expected_nacks > 0 {
            let silent_and_trusted = probe
                .helpers
                .iter()
                .filter(|(h, nacked)| {
                    !nacked
                        && self
                            .members
                            .get(*h)
                            .is_some_and(|m| m.state == MemberState::Alive)
                })
                .count() as u32;
            i64::from(silent_and_trusted.max(1))
        } else {
            1
        };
        // An unverified member's silence says nothing about our own links: it is one relay's
        // word, and relays that never heard of it do not nack. Counted, a node full of an
        // attacker's phantoms would stretch its own probe period until the phantoms outlive
        // the probe round that forgets them (docs/security.md, admission). Whether it was
        // unverified is decided at the start of the probe: a phantom is often forgotten while
        // it is being probed (the suspicion another node raised ran out here first), and its
        // silence then counted as a real member's, 3 points a time, which only acks of real
        // members (a few in a table full of phantoms) earned back.
        if !probe.unverified {
            self.health.apply(delta);
        }
        let Some(incarnation) = self.suspect_after_failed_ping(now, probe.target) else {
            return;
        };
        // In a mass failure, so does each helper that nacked: it pinged the target from where
        // it stands and got no ack either, the evidence a failed probe of its own would give.
        // Not counted, a node cut off with a few others waits out the unconfirmed timeout for
        // most of the majority (its peers, probing members nobody suspects first, rarely probe
        // the same member). Not in a quiet mesh: under bursty loss a helper in the same burst
        // nacks a member that is only mute for a moment, and its confirmation would bring the
        // verdict down to the minimum (measured: false positives in `burst-loss-5pct`; #19
        // class 4, docs/benchmarks.md). They count here only: the piggyback queue holds one
        // update a member, so what goes out stays this node's own claim.
        let mut confirmed = false;
        if self.many_suspected() {
            for (helper, nacked) in probe.helpers {
                if nacked {
                    self.apply_suspect(now, probe.target, incarnation, helper, self.id);
                    confirmed = true;
                }
            }
        }
        if confirmed
            && self
                .members
                .get(probe.target)
                .is_some_and(|m| m.state == MemberState::Suspect && m.incarnation == incarnation)
        {
            self.broadcasts.push(&Update::Suspect {
                node: probe.target,
                incarnation,
                from: self.id,
            });
        }
    }

    pub(super) fn handle_ping(&mut self, from: NodeId, seq: u32, target: NodeId) {
        if target != self.id {
            // Meant for a member that used to be at this address; let the prober time out.
            return;
        }
        self.send(from, Message::Ack { seq });
    }

    pub(super) fn handle_ack(&mut self, now: Instant, from: NodeId, seq: u32) {
        if let Some(probe) = self.probes.iter_mut().find(|p| p.seq == seq && !p.acked) {
            probe.acked = true;
            let (target, sent_at) = (probe.target, probe.sent_at);
            if self.probes.iter().all(|p| p.acked) {
                // Every probe of the period is answered: the timeout would find nothing to
                // relay (`probe_indirectly` skips acked probes), so an idle node need not wake
                // for it.
                self.timers.stop(Timer::ProbeTimeout);
            }
            if from == target {
                self.health.apply(-1);
                let sample = now.saturating_duration_since(sent_at);
                self.stats.probe_rtt.record(sample);
                self.members
                    .modify(target, |m| m.srtt_us = smooth_rtt(m.srtt_us, sample));
            }
            return;
        }
        if let Some(relay) = self.relays.remove(&seq) {
            self.relay_deadlines.remove(&(relay.deadline, seq));
            self.send(
                relay.origin,
                Message::Ack {
                    seq: relay.origin_seq,
                },
            );
            return;
        }
        if let Some((node, _)) = self.dead_probes.remove(&seq)
            && node == from
        {
            // A member we hold dead answers: the partition healed. Exchange state with it.
            self.send(
                node,
                Message::SyncDigest {
                    all: false,
                    digests: self.members.digests().to_vec(),
                },
            );
            self.stats.syncs += 1;
        }
    }

    pub(super) fn handle_ping_req(
        &mut self,
        now: Instant,
        from: NodeId,
        origin_seq: u32,
        target: NodeId,
    ) {
        if self.relays.len() >= MAX_RELAYS || target == self.id {
            return;
        }
        let seq = self.next_seq();
        // The origin concludes its probe `probe_interval - probe_timeout` after it sent this
        // request (more if its health is degraded). A nack counts only if it arrives before
        // then, so the relay gives up at 4/5 of that window, leaving the rest for the two
        // one-way trips. (Waiting a whole `probe_timeout` made every nack arrive after the
        // origin's period with the default 2:1 ratio: missing nacks were counted against every
        // healthy prober of a dead member.)
        let window = self
            .config
            .probe_interval()
            .saturating_sub(self.config.probe_timeout());
        let deadline = now + window * 4 / 5;
        self.relays.insert(
            seq,
            Relay {
                target,
                origin: from,
                origin_seq,
                deadline,
            },
        );
        self.relay_deadlines.insert((deadline, seq));
        self.send(target, Message::Ping { seq, target });
    }

    pub(super) fn handle_nack(&mut self, from: NodeId, seq: u32) {
        if let Some(p) = self.probes.iter_mut().find(|p| p.seq == seq)
            && let Some(helper) = p
                .helpers
                .iter_mut()
                .find(|(h, nacked)| *h == from && !nacked)
        {
            // Only a helper we asked, once: a nack is evidence of our own health.
            helper.1 = true;
            p.nacks += 1;
        }
    }

    /// Relays whose target did not answer in time get a nack to their origin.
    pub(super) fn expire_relays(&mut self, now: Instant) {
        while let Some(&(at, seq)) = self.relay_deadlines.first() {
            if at > now {
                break;
            }
            self.relay_deadlines.pop_first();
            if let Some(relay) = self.relays.remove(&seq) {
                self.send(
                    relay.origin,
                    Message::Nack {
                        seq: relay.origin_seq,
                    },
                );
                // In a mass failure the relay's own failed ping raises (or confirms) its own
                // suspicion of the target, as a failed probe of its own would: then the
                // prober's peers hear independent claims, not only the prober's, and their
                // timeouts shrink too (#19 class 4). Not in a quiet mesh, for the reason the
                // prober counts nacks only then (`conclude_probe`).
                if self.many_suspected() {
                    self.suspect_after_failed_ping(now, relay.target);
                }
            }
        }
    }

    /// Pings one Dead member; an ack starts an anti-entropy exchange that heals the views.
    pub(super) fn probe_dead_member(&mut self, now: Instant) {
        if self.left || self.dead_probes.len() >= MAX_DEAD_PROBES {
            return;
        }
        let Some(target) = self.members.random_dead(&mut self.rng) else {
            return;
        };
        let seq = self.next_seq();
        self.dead_probes.insert(seq, (target, now));
        let first = self.buddy_update(target);
        self.send_with(
            target,
            Message::Ping { seq, target },
            first.into_iter().collect(),
        );
    }

    /// A ping of `target` this node sent went unanswered: an independent failed probe raises
    /// the suspicion of an Alive member or confirms one held Suspect (Lifeguard §IV-B). The
    /// incarnation suspected; `None` for a member neither Alive nor Suspect (nothing done).
    fn suspect_after_failed_ping(&mut self, now: Instant, target: NodeId) -> Option<Incarnation> {
        let m = self.members.get(target)?;
        if !matches!(m.state, MemberState::Alive | MemberState::Suspect) {
            return None;
        }
        if m.state == MemberState::Alive {
            self.stats.suspicions_raised += 1;
        }
        let incarnation = m.incarnation;
        self.apply_suspect(now, target, incarnation, self.id, self.id);
        Some(incarnation)
    }

    /// The suspicion of `node` ran out: declare it dead.
    pub(super) fn suspicion_expired(&mut self, now: Instant, node: NodeId) {
        // Hundreds of suspicions at once (half the mesh under a one-way cut) crowd the piggyback
        // budget: the suspects' refutations need longer than the minimum to arrive.
        let held = self.suspicions.len();
        if self.config.mass_failure_rules()
            && let Some(s) = self.suspicions.get_mut(&node)
            && s.deadline() <= now
            && s.hold_for_crowd(held)
        {
            self.suspicion_deadlines.insert((s.deadline(), node));
            return;
        }
        let Some(s) = self.suspicions.get(&node) else {
            return;
        };
        if s.deadline() > now {
            // Confirmations moved the deadline; it was re-armed.
            return;
        }
        let incarnation = s.incarnation;
        // Contact came back after the claim last went to the member (or after the suspicion
        // began, if it never went): a partition may have healed since. The member could not
        // refute across the cut, nor hear a check sent into it; tell it again, now that it
        // can answer, before declaring it dead. In a quiet mesh no contact comes back, and a
        // crash is declared on time.
        let reconnected = self
            .reconnected_at
            .is_some_and(|at| at > s.told_at.unwrap_or(s.started()) && at >= s.started());
        let grace = self.health.scale(self.config.probe_timeout());
        let check = self.config.probe_timeout();
        // In a mass failure shared with others (with `Config::mass_probes`), every verdict,
        // confirmed or not, waits for one last direct check: the side this node is on is
        // probing at several times the usual rate, so it has several times as many verdicts
        // falling at any instant, and one falling just after a heal, before any contact, is a
        // live member declared dead. The check reaches a member a heal brought back, which
        // refutes. Costs each verdict a (health-scaled) probe timeout, in a mass failure only.
        let mass_check = self.shared_mass_failure().is_some();
        if let Some(s) = self.suspicions.get_mut(&node)
            && ((reconnected && s.hold_for_check(now, check, MAX_DIRECT_CHECKS))
                || s.grant_last_check(grace, mass_check))
        {
            // Nobody else confirmed this suspicion, or contact came back: before declaring the
            // member dead, tell it directly. If it is alive its refutation comes straight back
            // (a refutation answers the claim's sender first); a lost refutation should not
            // kill a healthy member.
            s.told_at = Some(now);
            let deadline = s.deadline();
            self.suspicion_deadlines.insert((deadline, node));
            self.send_check(node, incarnation);
            return;
        }
        if let Some(s) = self.suspicions.get_mut(&node)
            && s.announce_again(now, grace, MAX_UNHEARD_ANNOUNCEMENTS)
        {
            // Nobody was heard holding the claim: every copy may have gone into a burst of loss
            // on this node's own links, and the suspect never heard it to refute. Announce it
            // again with a fresh budget and tell the suspect directly.
            let deadline = s.deadline();
            self.suspicion_deadlines.insert((deadline, node));
            self.broadcasts.push(&Update::Suspect {
                node,
                incarnation,
                from: self.id,
            });
            self.send_check(node, incarnation);
            return;
        }
        self.suspicions.remove(&node);
        let still_suspect = self
            .members
            .get(node)
            .is_some_and(|m| m.state == MemberState::Suspect && m.incarnation == incarnation);
        if still_suspect {
            self.stats.suspicions_confirmed += 1;
            self.transition(now, node, incarnation, MemberState::Dead, Some(self.id));
            self.broadcasts.push(&Update::Dead {
                node,
                incarnation,
                from: self.id,
            });
        }
    }

    /// Sends `node` the suspicion about it directly, in a ping: alive, it refutes to this node
    /// first (see `correct_stale_claim`).
    pub(super) fn send_check(&mut self, node: NodeId, incarnation: Incarnation) {
        let seq = self.next_seq();
        let claim = Update::Suspect {
            node,
            incarnation,
            from: self.id,
        };
        self.send_with(node, Message::Ping { seq, target: node }, vec![claim]);
    }

    /// A datagram came from `from`, before its updates apply: a member held Dead, or Suspect
    /// for longer than a confirmed suspicion lasts, was out of reach, and contact with it came
    /// back (a partition healed, a pause ended). Noted before the updates apply, because the
    /// first datagram across a healed cut may carry the late confirmations it is meant to hold.
    pub(super) fn note_reconnect(&mut self, now: Instant, from: NodeId) {
        let min = self.config.suspicion_min();
        let lost = match self.members.get(from).map(|m| m.state) {
            Some(MemberState::Dead) => true,
            Some(MemberState::Suspect) => self
                .suspicions
                .get(&from)
                .is_some_and(|s| now.saturating_duration_since(s.started()) >= min),
            _ => false,
        };
        if lost {
            self.reconnected_at = Some(now);
        }
    }

    /// A datagram came from `from`, after its updates applied: a member still held Suspect is
    /// told the claim at once (Lifeguard's buddy system, on its contact rather than our probe),
    /// at most once per probe timeout.
    pub(super) fn tell_speaking_suspect(&mut self, now: Instant, from: NodeId) {
        let Some(m) = self.members.get(from) else {
            return;
        };
        if m.state != MemberState::Suspect {
            return;
        }
        let incarnation = m.incarnation;
        let quiet = self.config.probe_timeout();
        let Some(s) = self.suspicions.get_mut(&from) else {
            return;
        };
        if s.told_at
            .is_some_and(|t| now.saturating_duration_since(t) < quiet)
        {
            return;
        }
        s.told_at = Some(now);
        self.send_with(
            from,
            Message::Gossip,
            vec![Update::Suspect {
                node: from,
                incarnation,
                from: self.id,
            }],
        );
    }

    /// A datagram came from `from`, after its updates applied, and `from` is still held `Left`:
    /// it is told so (a relayed `Left`, a death claim to it), at most once per probe timeout.
    /// A member that left and came back (a restart: same id, a boot incarnation that jumped)
    /// takes the claim for stale and answers with its own record (`correct_stale_claim`), the
    /// one word about it this node takes at any incarnation; a member still in its leave
    /// window ignores it. Without this, a node that missed the restarted member's few
    /// announcements held it `left` until the member happened to start an anti-entropy
    /// exchange with it: the others' relayed `Alive` is refused, being more than
    /// [`MAX_INCARNATION_STEP`](super::claims::MAX_INCARNATION_STEP) above the `Left` held, and
    /// nobody probes a member that left.
    pub(super) fn tell_speaking_leaver(&mut self, now: Instant, from: NodeId) {
        let quiet = self.config.probe_timeout();
        let Some(incarnation) = self
            .members
            .get(from)
            .filter(|m| m.state == MemberState::Left)
            .filter(|m| {
                m.told_left_at
                    .is_none_or(|t| now.saturating_duration_since(t) >= quiet)
            })
            .map(|m| m.incarnation)
        else {
            return;
        };
        self.members.modify(from, |m| m.told_left_at = Some(now));
        self.send_with(
            from,
            Message::Gossip,
            vec![Update::Left {
                node: from,
                incarnation,
            }],
        );
    }

    /// Records a state change of another member and tells the application.
    pub(super) fn transition(
        &mut self,
        now: Instant,
        node: NodeId,
        incarnation: Incarnation,
        to: MemberState,
        by: Option<NodeId>,
    ) {
        let Some(from) = self.members.modify(node, |m| {
            let from = m.state;
            m.state = to;
            m.incarnation = incarnation;
            if from != to {
                m.last_change = now;
            }
            from
        }) else {
            return;
        };
        if to != MemberState::Suspect
            && let Some(s) = self.suspicions.remove(&node)
        {
            self.suspicion_deadlines.remove(&(s.deadline(), node));
        }
        let unverified = self
            .members
            .get(node)
            .is_some_and(|m| m.introduced_by.is_some());
        if matches!(to, MemberState::Dead | MemberState::Left) && from != to && !unverified {
            self.departed.push_back((now, node));
        }
        if from != to {
            // The incarnation and the accuser are what tell a flap from a crash when an operator
            // reads these lines after the fact (#12: a slow detection could not be traced).
            if let Some(suppressed) = self.state_log.allow(now) {
                tracing::debug!(node = %self.id, member = %node, %incarnation, %from, %to,
                    by = ?by.map(|n| n.get()), suppressed, "member state changed");
            }
            self.emit(Event::MemberStateChanged {
                node,
                incarnation,
                from: Some(from),
                to,
                by,
            });
        }
        if unverified && matches!(to, MemberState::Dead | MemberState::Left) {
            // Never heard from directly: a relay's word is all there was. Forget it rather
            // than keep it for `dead_retention`, so its slot is free again.
            self.forget(node);
        }
    }
}

/// TCP-style smoothed RTT (RFC 6298, alpha = 1/8), in microseconds.
fn smooth_rtt(srtt_us: u32, sample: Duration) -> u32 {
    let sample_us = u32::try_from(sample.as_micros()).unwrap_or(u32::MAX).max(1);
    if srtt_us == 0 {
        sample_us
    } else {
        ((u64::from(srtt_us) * 7 + u64::from(sample_us)) / 8) as u32
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;

    /// Node 1 knowing nodes 2..=12 Alive, then holding `suspects` of them (2, 3, ...) Suspect.
    fn node_with_suspects(suspects: u64) -> Membership {
        let now = Instant::ZERO;
        let mut m = Membership::new(
            Config::default().with_minority_rules(true),
            NodeId::new(1),
            Incarnation::new(1),
            5,
            now,
        );
        for n in 2..=12 {
            m.add_known_member(now, NodeId::new(n), Incarnation::new(1));
        }
        for n in 2..2 + suspects {
            m.apply_suspect(now, NodeId::new(n), Incarnation::new(1), m.id, m.id);
        }
        m
    }

    /// A probe of node 12 that got no ack, with helpers 9 and 10 nacking and 11 silent.
    fn failed_probe() -> Probe {
        Probe {
            target: NodeId::new(12),
            seq: 1,
            sent_at: Instant::ZERO,
            acked: false,
            expected_nacks: 3,
            nacks: 2,
            helpers: vec![
                (NodeId::new(9), true),
                (NodeId::new(10), true),
                (NodeId::new(11), false),
            ],
            unverified: false,
        }
    }

    /// #19 class 4: in a mass failure (here 3 of 11 members Suspect, one in four or more)
    /// each helper's nack confirms the suspicion the probe raises (2 of K = 3 confirmations,
    /// so below the unconfirmed timeout), and the failed probe earns local health a point
    /// back for its nacks instead of holding it; in a quiet mesh (1 of 11) neither happens,
    /// as before.
    #[test]
    fn in_a_mass_failure_nacks_confirm_the_suspicion_and_spare_local_health() {
        let now = Instant::ZERO + Duration::from_secs(10);
        let mut quiet = node_with_suspects(1);
        let mut mass = node_with_suspects(3);
        assert!(!quiet.many_suspected() && mass.many_suspected());
        for m in [&mut quiet, &mut mass] {
            m.health.apply(2);
            m.probes = vec![failed_probe()];
            m.conclude_probe(now);
        }
        let target = NodeId::new(12);
        let unconfirmed = quiet.suspicions[&target].deadline();
        let confirmed = mass.suspicions[&target].deadline();
        assert!(
            confirmed < unconfirmed,
            "two nacks confirmed the mass-failure suspicion: {confirmed:?} vs {unconfirmed:?}"
        );
        assert_eq!(
            quiet.health_score(),
            2,
            "a nack explains the silence, as before"
        );
        assert_eq!(
            mass.health_score(),
            1,
            "a nack in a mass failure earns a point back"
        );

        // Nobody nacked: the quiet node counts the silent helpers, the other does not.
        let mut quiet = node_with_suspects(1);
        let mut mass = node_with_suspects(3);
        for m in [&mut quiet, &mut mass] {
            let mut p = failed_probe();
            p.nacks = 0;
            p.helpers.iter_mut().for_each(|h| h.1 = false);
            m.probes = vec![p];
            m.conclude_probe(now);
        }
        assert!(quiet.health_score() > 0);
        assert_eq!(mass.health_score(), 0);
    }

    /// #19 class 4: in a mass failure a ping relayed for another member that goes unanswered
    /// raises this node's own suspicion of the target (besides the nack); in a quiet mesh only
    /// the nack goes out.
    #[test]
    fn in_a_mass_failure_a_failed_relay_raises_the_relays_own_suspicion() {
        let target = NodeId::new(12);
        for (suspects, raised) in [(1, false), (3, true)] {
            let mut m = node_with_suspects(suspects);
            let now = Instant::ZERO + Duration::from_secs(10);
            m.handle_ping_req(now, NodeId::new(9), 7, target);
            m.expire_relays(now + Duration::from_secs(1));
            let state = m.member(target).map(|v| v.state);
            let expected = if raised {
                MemberState::Suspect
            } else {
                MemberState::Alive
            };
            assert_eq!(state, Some(expected), "{suspects} suspects held");
        }
    }

    /// Node 1 with `config` knowing nodes 2..=12 Alive and
    /// routable, then holding nodes 2.. Suspect: `by_others` of them on node 12's word (raised
    /// by another member), then `own` more raised by itself alone.
    fn node_in_mass_failure(config: Config, by_others: u64, own: u64) -> Membership {
        let now = Instant::ZERO;
        let mut m = Membership::new(config, NodeId::new(1), Incarnation::new(1), 5, now);
        for n in 2..=12 {
            m.add_known_member(now, NodeId::new(n), Incarnation::new(1));
            m.set_routable(NodeId::new(n));
        }
        let raiser = NodeId::new(12);
        for n in 2..2 + by_others {
            m.apply_suspect(now, NodeId::new(n), Incarnation::new(1), raiser, raiser);
        }
        for n in 2 + by_others..2 + by_others + own {
            m.apply_suspect(now, NodeId::new(n), Incarnation::new(1), m.id, m.id);
        }
        m
    }

    /// The pings a node queued, by target.
    fn pings(m: &mut Membership) -> Vec<NodeId> {
        core::mem::take(&mut m.outbox)
            .into_iter()
            .filter_map(|o| match o.message {
                Message::Ping { target, .. } => Some(target),
                _ => None,
            })
            .collect()
    }

    /// #19 class 4: a period starts one probe, as SWIM, until an eighth of the members a node
    /// knows up are Suspect on another member's word too; then `1 + 8 * share` a probe
    /// interval, at most [`MAX_PROBES_PER_INTERVAL`], times the stretch of local health, each
    /// to a different member. Suspicions the node alone holds (its own links may be what
    /// fails) do not count; off by default, and the memberlist profile never probes more than
    /// one member a period.
    #[test]
    fn a_shared_mass_failure_probes_several_members_a_period() {
        let on = || Config::default().with_mass_probes(true);
        let memberlist = Config::from_profile(crate::config::Profile::Memberlist);
        // (config, suspects on another's word, own suspicions, health score, probes a
        // period), of 11 members up.
        let cases = [
            (on(), 0, 0, 0, 1),
            (on(), 1, 0, 0, 1),
            (on(), 2, 0, 0, 2),
            (on(), 0, 8, 0, 1),
            (on(), 1, 6, 0, 1),
            (on(), 6, 0, 0, 5),
            (on(), 10, 0, 0, 8),
            (on(), 2, 0, 1, 4),
            (on(), 2, 0, 2, 6),
            (on(), 1, 0, 2, 1),
            (Config::default(), 6, 0, 0, 1),
            (memberlist.with_mass_probes(true), 6, 0, 0, 1),
        ];
        for (config, by_others, own, health, expected) in cases {
            let mut m = node_in_mass_failure(config, by_others, own);
            m.health.apply(health);
            let case =
                format!("{by_others} suspects on another's word, {own} alone, health {health}");
            assert_eq!(m.probes_this_period(), expected, "{case}");
            let _ = pings(&mut m);
            m.start_probe(Instant::ZERO + Duration::from_secs(1));
            let targets = pings(&mut m);
            assert_eq!(targets.len(), expected, "{case}: {targets:?}");
            let mut distinct = targets.clone();
            distinct.sort();
            distinct.dedup();
            assert_eq!(
                distinct.len(),
                targets.len(),
                "one probe a member: {targets:?}"
            );
            assert_eq!(m.probes.len(), expected);
        }
    }

    /// A node whose health stretched its period far starts [`MAX_PROBES_PER_PERIOD`] probes
    /// a period at most, however many members it holds Suspect on others' word.
    #[test]
    fn a_shared_mass_failure_probes_at_most_the_cap_a_period() {
        let config = Config::try_from(crate::config::RawConfig {
            awareness_max: Some(8),
            ..crate::config::RawConfig::default()
        })
        .unwrap()
        .with_mass_probes(true);
        // 10 of 11 on another's word: 8 a probe interval.
        for (health, expected) in [(0, 8), (2, 24), (3, 32), (8, MAX_PROBES_PER_PERIOD)] {
            let mut m = node_in_mass_failure(config.clone(), 10, 0);
            m.health.apply(health);
            assert_eq!(m.probes_this_period(), expected, "health {health}");
        }
    }

    /// #19 class 4: in a shared mass failure a confirmed suspicion's verdict waits for one
    /// direct check of the suspect (a ping carrying the claim), so a member a heal brought
    /// back can refute; without `mass_probes` the verdict falls on time, as before.
    #[test]
    fn in_a_shared_mass_failure_every_verdict_waits_for_a_direct_check() {
        let suspect = NodeId::new(2);
        for on in [false, true] {
            let mut m = node_in_mass_failure(Config::default().with_mass_probes(on), 6, 0);
            for by in 9..=11 {
                let by = NodeId::new(by);
                m.apply_suspect(Instant::ZERO, suspect, Incarnation::new(1), by, by);
            }
            let _ = core::mem::take(&mut m.outbox);
            let due = m.suspicions[&suspect].deadline();
            m.suspicion_expired(due, suspect);
            let checked = core::mem::take(&mut m.outbox).into_iter().any(|o| {
                o.to == suspect
                    && matches!(o.message, Message::Ping { .. })
                    && o.leading
                        .iter()
                        .any(|u| matches!(u, Update::Suspect { node, .. } if *node == suspect))
            });
            let state = m.member(suspect).map(|v| v.state);
            if on {
                assert!(checked, "a check went to the suspect");
                assert_eq!(state, Some(MemberState::Suspect));
                let later = m.suspicions[&suspect].deadline();
                assert!(later > due);
                m.suspicion_expired(later, suspect);
                assert_eq!(m.member(suspect).map(|v| v.state), Some(MemberState::Dead));
            } else {
                assert!(!checked, "no check without mass probes");
                assert_eq!(state, Some(MemberState::Dead));
            }
        }
    }

    /// In a small mesh one shared suspicion is no mass failure, though it is an eighth of the
    /// members up: a crash two nodes noticed. Two are ([`MIN_SHARED_SUSPICIONS`]).
    #[test]
    fn a_single_shared_suspicion_in_a_small_mesh_is_no_mass_failure() {
        let now = Instant::ZERO;
        for (shared, expected) in [(1, 1), (2, 3)] {
            let mut m = Membership::new(
                Config::default().with_mass_probes(true),
                NodeId::new(1),
                Incarnation::new(1),
                5,
                now,
            );
            for n in 2..=7 {
                m.add_known_member(now, NodeId::new(n), Incarnation::new(1));
                m.set_routable(NodeId::new(n));
            }
            let raiser = NodeId::new(7);
            for n in 2..2 + shared {
                m.apply_suspect(now, NodeId::new(n), Incarnation::new(1), raiser, raiser);
            }
            assert_eq!(
                m.probes_this_period(),
                expected,
                "{shared} shared suspicions of 6 members up"
            );
        }
    }

    /// A helper of an indirect probe is never the target of another unanswered probe of
    /// the same period (it may be down too); a member that answered may help.
    #[test]
    fn no_helper_is_another_unanswered_probes_target() {
        let mut m = node_in_mass_failure(Config::default().with_mass_probes(true), 6, 0);
        let _ = pings(&mut m);
        for period in 1..=6 {
            m.start_probe(Instant::ZERO + Duration::from_secs(period));
            m.probe_indirectly();
            let targets: Vec<NodeId> = m.probes.iter().map(|p| p.target).collect();
            for p in &m.probes {
                for (h, _) in &p.helpers {
                    assert!(
                        !targets.contains(h),
                        "period {period}: {h:?} helps probe {:?} and is probed too ({targets:?})",
                        p.target
                    );
                }
            }
            m.probes.clear();
        }
    }

    /// Fewer members than probes: each member is probed once a period, not twice, and not
    /// less (a period whose probes wrapped the round gives the new round's first slot back).
    #[test]
    fn a_period_never_probes_a_member_twice() {
        let now = Instant::ZERO;
        let mut m = Membership::new(
            Config::default().with_mass_probes(true),
            NodeId::new(1),
            Incarnation::new(1),
            5,
            now,
        );
        for n in 2..=4 {
            m.add_known_member(now, NodeId::new(n), Incarnation::new(1));
            m.set_routable(NodeId::new(n));
        }
        for n in 2..=3 {
            m.apply_suspect(
                now,
                NodeId::new(n),
                Incarnation::new(1),
                NodeId::new(4),
                NodeId::new(4),
            );
        }
        assert_eq!(m.probes_this_period(), 6);
        let _ = pings(&mut m);
        for period in 1..=5 {
            m.start_probe(now + Duration::from_secs(period));
            let mut targets = pings(&mut m);
            targets.sort();
            let before = targets.len();
            targets.dedup();
            assert_eq!(
                targets.len(),
                before,
                "period {period}: a member probed twice"
            );
            assert_eq!(before, 3, "period {period}: every member once");
            m.probes.clear();
        }
    }

    /// Every probe of a period is concluded on its own: an ack answers only its own probe,
    /// each unanswered one raises the suspicion of its target, and a nack counts for the
    /// probe whose helper sent it.
    #[test]
    fn each_probe_of_a_period_is_concluded_on_its_own() {
        let mut m = node_in_mass_failure(Config::default().with_mass_probes(true), 9, 0);
        let _ = pings(&mut m);
        let start = Instant::ZERO + Duration::from_secs(1);
        m.start_probe(start);
        assert_eq!(m.probes.len(), 7);
        let probes: Vec<(NodeId, u32)> = m.probes.iter().map(|p| (p.target, p.seq)).collect();
        // The second probe's target answers; the others stay silent.
        let (answered, seq) = probes[1];
        m.handle_ack(start + Duration::from_millis(10), answered, seq);
        assert!(m.probes[1].acked && !m.probes[0].acked && !m.probes[2].acked);
        m.probe_indirectly();
        for (i, p) in m.probes.iter().enumerate() {
            assert_eq!(
                p.helpers.is_empty(),
                i == 1,
                "probe {i}: helpers {:?}",
                p.helpers
            );
        }
        let (helper, _) = m.probes[3].helpers[0];
        let (_, seq3) = probes[3];
        m.handle_nack(helper, seq3);
        assert_eq!(m.probes[3].nacks, 1);
        assert!(
            m.probes
                .iter()
                .enumerate()
                .all(|(i, p)| i == 3 || p.nacks == 0)
        );
        m.conclude_probe(start + Duration::from_secs(1));
        assert!(m.probes.is_empty());
        for (i, &(target, _)) in probes.iter().enumerate() {
            let state = m.member(target).map(|v| v.state);
            // The first 9 members (2..=10) were Suspect already; 11 and 12 were Alive.
            let expected = if i == 1 && target.get() > 10 {
                MemberState::Alive
            } else {
                MemberState::Suspect
            };
            assert_eq!(state, Some(expected), "probe {i} of {target:?}");
        }
        assert_eq!(m.stats().probes_failed, 6);
    }
}
