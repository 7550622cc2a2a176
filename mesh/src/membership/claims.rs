//! SWIM's rules for claims about members (§4.2): which claim overrides which, refutation, and
//! which claims a sender may make at all.
//!
//! A claim carries the member's incarnation. `Alive(i)` overrides anything older than `i`;
//! `Suspect(i)` overrides `Alive(j)` for `i >= j`; `Dead(i)` overrides `Alive`/`Suspect` for
//! `i >= j` (SWIM's rule; here another node's `Dead` only starts a suspicion, see below); only
//! the member itself raises its incarnation, which is how it refutes. Incarnations
//! compare in serial arithmetic ([`Incarnation`]), so a refutation always has a newer number.
//!
//! # Claims are bounded by their author (docs/security.md, "Membership claims")
//!
//! The transport authenticates the sender of a datagram; nothing authenticates what it says
//! about *other* members. So:
//! * A member's own word (`sender == node`) about itself is taken at any newer incarnation:
//!   that is how a restarted node, whose boot incarnation jumped, is learnt.
//! * `Left` is taken only on the member's own word. A `Left` relayed by anyone else is a death
//!   claim at the same incarnation. The one other way to `Left` is this node's own operator:
//!   [`Membership::force_leave`] of a member this node holds dead, which sends nothing.
//! * Only this node's own suspicion timer declares a member dead. Another node's death claim
//!   (a `Dead`, a relayed `Left`, a `Dead` record) starts or confirms a local suspicion, as a
//!   `Suspect` does, so a live member refutes before this node emits a `Dead` event; a real
//!   crash, suspected and confirmed by many, ends the local timer close to the claimer's.
//! * Claims that a member failed (`Suspect`, `Dead`, relayed `Left`) are taken only from a
//!   member this node knows or a join seed: an id no one introduced cannot make anyone refute.
//! * A claim relayed about another member (or about this node) more than
//!   [`MAX_INCARNATION_STEP`] above the incarnation this node holds (its own) is refused and
//!   counted in `Stats::claims_refused`.
//! * A member learnt from a relay (not from its own datagram) is admitted unverified, charged
//!   to the relay that introduced it; see [`MAX_UNVERIFIED_PER_INTRODUCER`].

use super::member::Member;
use super::suspicion::{self, Suspicion};
use super::{
    Event, ForceLeave, ForceLeaveError, MAX_CORRECTIONS_PER_DATAGRAM, MemberState, Membership,
};
use crate::id::{Incarnation, MetaVersion, NodeId};
use crate::time::{Duration, Instant, scale};
use crate::wire::Message;
use crate::wire::Update;

/// How far above the incarnation this node holds for a member a claim relayed by another member
/// may be. A relay is ahead of us only by the refutations we missed, one step each; 64 missed
/// refutations in a row means we were cut off, and anti-entropy or the member itself (whose own
/// word is not bounded) catches us up. Without a bound, one datagram claiming `u32::MAX - 1`
/// would drag a member's incarnation wherever the sender likes.
pub const MAX_INCARNATION_STEP: u32 = 64;

/// Members learnt from one relay and not yet heard from directly, at most. A valid certificate
/// lets its holder introduce this many members it made up, not thousands: a phantom never
/// answers, so it stays unverified until its probe fails and it is forgotten, freeing the slot.
pub const MAX_UNVERIFIED_PER_INTRODUCER: u32 = 64;

/// Unverified members from all relays together, at most.
pub const MAX_UNVERIFIED_MEMBERS: usize = 1024;

/// A suspicion this node raised whose claim no other member was heard holding for this many
/// probe intervals was stuck here: on a healthy link the claim comes back (relayed, or as a
/// confirmation) within a few gossip rounds. Two periods leave room for one lost round.
pub(crate) const CLAIM_STUCK_PROBE_INTERVALS: u32 = 2;

impl Membership {
    /// Applies one piggybacked update received from `sender`.
    pub(super) fn apply_update(&mut self, now: Instant, sender: NodeId, update: Update) {
        let failure = match &update {
            Update::Suspect { .. } | Update::Dead { .. } => true,
            Update::Left { node, .. } => *node != sender,
            Update::Alive { .. } | Update::Meta { .. } => false,
        };
        if failure && !self.may_claim_failures(sender, update.node()) {
            return;
        }
        if !self.claim_in_bounds(sender, update.node(), update_incarnation(&update)) {
            return;
        }
        if let Update::Suspect {
            node, incarnation, ..
        }
        | Update::Dead {
            node, incarnation, ..
        }
        | Update::Left { node, incarnation } = update
        {
            self.correct_stale_claim(node, incarnation);
        }
        match update {
            Update::Alive {
                node,
                incarnation,
                meta,
            } => self.apply_alive(now, sender, node, incarnation, meta),
            Update::Suspect {
                node,
                incarnation,
                from,
            } => self.apply_suspect(now, node, incarnation, from, sender),
            // Another node's death claim is its opinion, not a fact this node can check: it
            // starts (or confirms) this node's own suspicion, which the member refutes if it is
            // alive. Only this node's own suspicion timer declares a member dead.
            Update::Dead {
                node,
                incarnation,
                from,
            } => self.apply_suspect(now, node, incarnation, from, sender),
            // Only the member itself may say it left; anyone else's word is a death claim.
            Update::Left { node, incarnation } if sender == node => {
                self.apply_left(now, node, incarnation);
            }
            Update::Left { node, incarnation } => {
                self.apply_suspect(now, node, incarnation, sender, sender);
            }
            Update::Meta {
                node,
                version,
                key,
                value,
            } => self.apply_meta_write(now, sender, node, version, &key, value.as_deref()),
        }
    }

    /// Whether `sender` may claim that `node` failed (a `Suspect`, a `Dead`, a relayed `Left`,
    /// or such an anti-entropy record): only a member this node knows (in any state: after a
    /// partition heals, members held dead are how each side learns it must refute), or a seed
    /// it asked to join through. An id nobody introduced is no member; its word about who
    /// failed is not taken, not even about this node (nobody else takes it either, so there is
    /// nothing to refute). Refusals are counted with the other refused claims.
    pub(super) fn may_claim_failures(&mut self, sender: NodeId, node: NodeId) -> bool {
        if self.members.get(sender).is_some() || self.join_seeds.contains_key(&sender) {
            return true;
        }
        self.stats.claims_refused += 1;
        tracing::debug!(node = %self.id, %sender, member = %node,
            "refused a failure claim from a sender that is no member");
        false
    }

    /// Whether a claim by `sender` about `node` at `incarnation` is within what `sender` may
    /// say: anything about itself, about a member this node does not know (admission decides),
    /// and otherwise no more than [`MAX_INCARNATION_STEP`] above the incarnation held. Claims
    /// about this node are bounded by its own incarnation: a refutation of a claim `2^31 - 1`
    /// ahead would land exactly half the number space from what every peer holds, which serial
    /// arithmetic cannot order, and peers would take it for stale while this node took their
    /// claims for stale. Refusals are counted.
    pub(super) fn claim_in_bounds(
        &mut self,
        sender: NodeId,
        node: NodeId,
        incarnation: Option<Incarnation>,
    ) -> bool {
        let held = if node == self.id {
            Some(self.incarnation)
        } else {
            self.members.get(node).map(|m| m.incarnation)
        };
        let (Some(incarnation), Some(held)) = (incarnation, held) else {
            return true;
        };
        if sender == node {
            return true;
        }
        let within = incarnation
            .steps_after(held)
            .is_none_or(|steps| steps <= MAX_INCARNATION_STEP);
        if !within {
            self.stats.claims_refused += 1;
            tracing::debug!(node = %self.id, %sender, member = %node, %incarnation,
                %held, "refused a claim too far above the incarnation held");
        }
        within
    }

    pub(super) fn apply_alive(
        &mut self,
        now: Instant,
        sender: NodeId,
        node: NodeId,
        incarnation: Incarnation,
        meta: MetaVersion,
    ) {
        if node == self.id {
            // Someone holds a newer record of us: a previous life of this node wrote it, or a
            // peer made it up; either way this life must announce a newer one. The metadata
            // version others hold is not ours to adopt: copies follow the owner's word.
            if incarnation.is_newer_than(self.incarnation) && !self.left {
                self.refute(now, incarnation);
            }
            return;
        }
        match self.members.get(node) {
            None => {
                let Some(verified) = self.admit(now, sender, node, incarnation) else {
                    return;
                };
                self.emit(Event::MemberStateChanged {
                    node,
                    incarnation,
                    from: None,
                    to: MemberState::Alive,
                    by: None,
                });
                // A member known only from a relay is not passed on until it is heard from
                // (see `verify`): a phantom does not spread by gossip.
                if verified {
                    self.broadcasts.push(&Update::Alive {
                        node,
                        incarnation,
                        meta,
                    });
                }
            }
            Some(m) if incarnation.is_newer_than(m.incarnation) => {
                // Not passed on while unverified, as at admission: a forger that sends its
                // phantoms again at a newer incarnation would otherwise have every honest node
                // introduce them to the others, each under its own per-relay bound.
                let verified = m.introduced_by.is_none();
                self.transition(now, node, incarnation, MemberState::Alive, None);
                if verified {
                    self.broadcasts.push(&Update::Alive {
                        node,
                        incarnation,
                        meta,
                    });
                }
            }
            Some(m) if incarnation.is_older_than(m.incarnation) => return,
            Some(_) => {}
        }
        self.observe_meta(now, sender, node, meta);
    }

    /// Admits `node`, unknown so far, at `incarnation` on `sender`'s word. On its own word (or a
    /// join seed's) it is admitted outright; on a relay's word it is admitted unverified, charged
    /// to the relay, and pinged at once: its first datagram verifies it (see `verify`). Refused
    /// (and counted) past the table bound or the unverified bounds. Returns whether the member
    /// was admitted verified, `None` if it was not admitted.
    fn admit(
        &mut self,
        now: Instant,
        sender: NodeId,
        node: NodeId,
        incarnation: Incarnation,
    ) -> Option<bool> {
        if self.members.len() >= self.config.max_members() as usize {
            return None;
        }
        let trusted = sender == node || self.join_seeds.contains_key(&sender);
        let mut member = Member::new(now, incarnation, MemberState::Alive);
        if !trusted {
            let charged = self.unverified.get(&sender).copied().unwrap_or(0);
            if charged >= MAX_UNVERIFIED_PER_INTRODUCER
                || self.unverified_total >= MAX_UNVERIFIED_MEMBERS
            {
                self.stats.introductions_refused += 1;
                tracing::debug!(node = %self.id, %sender, member = %node,
                    "refused an introduction: the relay's unverified members are at their bound");
                return None;
            }
            *self.unverified.entry(sender).or_insert(0) += 1;
            self.unverified_total += 1;
            member.introduced_by = Some(sender);
        }
        self.members.insert(&mut self.rng, node, member);
        if !trusted && self.members.get(node).is_some_and(|m| m.routable) {
            // Its answer (any datagram from it) verifies it now rather than at its turn in the
            // probe round. One the driver cannot address yet is pinged at its turn once it can,
            // or verified by its own first datagram.
            let seq = self.next_seq();
            self.send(node, Message::Ping { seq, target: node });
        }
        Some(trusted)
    }

    /// `from` was heard from directly (its own authenticated datagram): it is verified.
    pub(super) fn verify(&mut self, from: NodeId) {
        let introducer = self.members.get(from).and_then(|m| m.introduced_by);
        if let Some(introducer) = introducer {
            self.members.modify(from, |m| m.introduced_by = None);
            self.release_introduction(introducer);
            if let Some(m) = self.members.get(from) {
                let update = Update::Alive {
                    node: from,
                    incarnation: m.incarnation,
                    meta: m.meta_version(),
                };
                self.broadcasts.push(&update);
            }
        }
    }

    /// Frees one unverified slot charged to `introducer`.
    pub(super) fn release_introduction(&mut self, introducer: NodeId) {
        if let Some(n) = self.unverified.get_mut(&introducer) {
            *n -= 1;
            if *n == 0 {
                self.unverified.remove(&introducer);
            }
        }
        self.unverified_total = self.unverified_total.saturating_sub(1);
    }

    /// The member a Suspect or Dead claim at `incarnation` may change, with its state and
    /// incarnation; `None` if the claim is about this node (refuted here when current), about an
    /// unknown member, older than what we hold, or about a member already Dead or Left.
    fn claim_target(
        &mut self,
        now: Instant,
        node: NodeId,
        incarnation: Incarnation,
    ) -> Option<(MemberState, Incarnation)> {
        if node == self.id {
            if !incarnation.is_older_than(self.incarnation) && !self.left {
                self.refute(now, incarnation);
            }
            return None;
        }
        let m = self.members.get(node)?;
        let settled = matches!(m.state, MemberState::Dead | MemberState::Left);
        (!incarnation.is_older_than(m.incarnation) && !settled).then_some((m.state, m.incarnation))
    }

    /// A claim that `node` failed at `incarnation`, raised by `by`, as received from `sender`
    /// (this node itself for its own probes): starts or confirms this node's suspicion.
    pub(super) fn apply_suspect(
        &mut self,
        now: Instant,
        node: NodeId,
        incarnation: Incarnation,
        by: NodeId,
        sender: NodeId,
    ) {
        let Some((state, current)) = self.claim_target(now, node, incarnation) else {
            return;
        };
        let stuck_after = scale(self.config.probe_interval(), CLAIM_STUCK_PROBE_INTERVALS);
        if state == MemberState::Suspect && incarnation == current {
            if let Some(s) = self.suspicions.get_mut(&node) {
                let before = s.deadline();
                // Any other member's word about this claim (a confirmation, or this node's own
                // claim relayed back) shows the claim got out; heard late, it was stuck here.
                let held = sender != self.id && s.heard(now, stuck_after);
                if held {
                    let after = s.deadline();
                    self.suspicion_deadlines.remove(&(before, node));
                    self.suspicion_deadlines.insert((after, node));
                }
                let Some(s) = self.suspicions.get_mut(&node) else {
                    return;
                };
                let before = s.deadline();
                if s.confirm(by) {
                    // A late confirmation (the timeout it brings ran out already) would declare
                    // the member dead at once, though nothing may have reached it yet: after a
                    // partition heals, the cut-off side's verdicts arrive as confirmations of
                    // suspicions its members could not refute across the cut, and one verdict
                    // would set off the next. A node whose own health dropped (it missed acks:
                    // it may be the cut-off one) tells the member first and gives it a round
                    // trip. A healthy node declares on time, as SWIM does: in a quiet mesh a
                    // crash's late confirmations are the common case, and the check would make
                    // detection a probe timeout slower. (Contact coming back is handled where
                    // the verdict falls, in `suspicion_expired`.)
                    let check = self.health.score() > 0
                        && s.is_due(now)
                        && s.hold_for_check(now, self.config.probe_timeout(), 1);
                    let after = s.deadline();
                    self.suspicion_deadlines.remove(&(before, node));
                    self.suspicion_deadlines.insert((after, node));
                    self.broadcasts.push(&Update::Suspect {
                        node,
                        incarnation,
                        from: by,
                    });
                    if check {
                        self.send_check(node, incarnation);
                    }
                }
            }
            return;
        }
        let members = self.alive_count();
        // The floor (`suspicion_min`) lengthens the confirmed timeout only: the unconfirmed one
        // stays Lifeguard's multiple of the formula, so that a side with too few members to
        // confirm (a cut-off minority) does not wait `suspicion_max_mult` floors.
        let formula = suspicion::min_timeout(
            self.config.suspicion_mult(),
            members,
            self.config.probe_interval(),
            Duration::ZERO,
        );
        let min = formula.max(self.config.suspicion_min());
        let max = scale(formula, self.config.suspicion_max_mult()).max(min);
        // As memberlist: with too few members to confirm, do not wait for confirmations.
        let mut expected = self.config.suspicion_confirmations();
        if members.saturating_sub(2) < expected as usize {
            expected = 0;
        }
        self.transition(now, node, incarnation, MemberState::Suspect, Some(by));
        // Nor wait for more confirmations than members exist who could still give one: those
        // this node holds Alive, not counting itself, the suspect (Suspect by now) and the
        // member that raised the claim. Waiting for confirmers that cannot exist is waiting
        // for the unconfirmed timeout; a node cut off with a few others holds most of the
        // mesh Suspect, and its last suspicions could otherwise never be confirmed
        // (#19 class 4). Members this node already suspects are left out: the mesh holds
        // them failed, so they are not expected to probe anyone.
        if self.config.mass_failure_rules() {
            expected = expected.min(could_confirm(
                self.members.up_count(),
                self.suspicions.len() + usize::from(!self.suspicions.contains_key(&node)),
                by != self.id
                    && self
                        .members
                        .get(by)
                        .is_some_and(|m| m.state == MemberState::Alive),
            ));
        }
        let mut s = Suspicion::new(now, incarnation, by, min, max, expected);
        if sender != self.id {
            // Another member's claim: held by someone else from the start.
            s.heard(now, stuck_after);
        }
        if let Some(old) = self.suspicions.insert(node, s) {
            self.suspicion_deadlines.remove(&(old.deadline(), node));
        }
        let deadline = self.suspicions[&node].deadline();
        self.suspicion_deadlines.insert((deadline, node));
        self.broadcasts.push(&Update::Suspect {
            node,
            incarnation,
            from: by,
        });
    }

    /// A member's own `Left` (the caller checked that the member itself sent it).
    pub(super) fn apply_left(&mut self, now: Instant, node: NodeId, incarnation: Incarnation) {
        if node == self.id {
            return;
        }
        let Some(m) = self.members.get(node) else {
            return;
        };
        if incarnation.is_older_than(m.incarnation) || m.state == MemberState::Left {
            return;
        }
        self.transition(now, node, incarnation, MemberState::Left, Some(node));
        self.broadcasts.push(&Update::Left { node, incarnation });
    }

    /// The operator's word that a member this node holds dead is gone for good (`serf
    /// force-leave`): it moves to `Left` in this node's view only. Nothing is sent: a `Left`
    /// relayed about another member is a death claim to every receiver, so each node is told
    /// by its own operator (meshctl asks every member). As `Left` it is no longer probed as a
    /// dead member, counted as failed, or waited for; it is forgotten after `dead_retention`
    /// like any departed member, and comes back if it ever speaks again at a newer incarnation
    /// (a restart), as after a graceful leave.
    ///
    /// Refused for a member alive or suspect here (it may still answer and refute), for an
    /// unknown member and for this node; idempotent for a member already left.
    pub fn force_leave(
        &mut self,
        now: Instant,
        node: NodeId,
    ) -> Result<ForceLeave, ForceLeaveError> {
        if node == self.id {
            return Err(ForceLeaveError::OwnNode { node });
        }
        let Some(m) = self.members.get(node) else {
            return Err(ForceLeaveError::UnknownMember { node });
        };
        match m.state {
            MemberState::Left => Ok(ForceLeave::AlreadyLeft),
            MemberState::Dead => {
                let incarnation = m.incarnation;
                self.transition(now, node, incarnation, MemberState::Left, Some(self.id));
                tracing::debug!(node = %self.id, member = %node, "forced a dead member to leave");
                Ok(ForceLeave::Left { incarnation })
            }
            state @ (MemberState::Alive | MemberState::Suspect) => {
                Err(ForceLeaveError::NotDead { node, state })
            }
        }
    }

    /// A claim older than the member's current incarnation is ignored by everyone who heard the
    /// refutation; but its sender may have missed the refutation (gossip is probabilistic, and a
    /// storm of updates after a partition heals crowds it out) and would then declare a healthy
    /// member dead with nobody left to correct it. So whoever knows the member alive at a newer
    /// incarnation (the member itself first of all) sends the claim's sender that record.
    pub(super) fn correct_stale_claim(&mut self, node: NodeId, incarnation: Incarnation) {
        if self.corrections.len() >= MAX_CORRECTIONS_PER_DATAGRAM {
            return;
        }
        let newer = if node == self.id {
            (incarnation.is_older_than(self.incarnation) && !self.left).then(|| self.alive_update())
        } else {
            self.members
                .get(node)
                .filter(|m| {
                    m.state == MemberState::Alive
                        && m.introduced_by.is_none()
                        && incarnation.is_older_than(m.incarnation)
                })
                .map(|m| Update::Alive {
                    node,
                    incarnation: m.incarnation,
                    meta: m.meta_version(),
                })
        };
        self.corrections.extend(newer);
    }

    /// Announces a higher incarnation than the claim about this node (SWIM §4.2). Being
    /// suspected also counts against local health (Lifeguard §IV-A).
    fn refute(&mut self, now: Instant, claimed: Incarnation) {
        // Serial arithmetic: the successor of the newest claim is newer than it, whatever its
        // value, so no claim can put this node beyond refutation.
        self.change_self(|s| s.incarnation = s.incarnation.newest(claimed).next());
        self.health.apply(1);
        self.stats.refutations += 1;
        self.broadcasts.push(&self.alive_update());
        // The sender of the claim hears the refutation first, directly.
        self.corrections.push(self.alive_update());
        if let Some(suppressed) = self.state_log.allow(now) {
            tracing::debug!(node = %self.id, incarnation = %self.incarnation, %claimed,
                suppressed, "refuted a claim about this node");
        }
        self.emit(Event::Refuted {
            incarnation: self.incarnation,
        });
    }
}

/// Members that could still confirm a new suspicion, as a bound on the confirmations it waits
/// for: `up` members Alive or Suspect here (not counting this node), of which `suspects`
/// (including the new suspect) are Suspect, less the claim's raiser if it is one of the Alive
/// others.
fn could_confirm(up: usize, suspects: usize, raiser_alive: bool) -> u32 {
    let alive = up.saturating_sub(suspects) - usize::from(raiser_alive && up > suspects);
    u32::try_from(alive).unwrap_or(u32::MAX)
}

/// The incarnation an update claims, if it claims one.
fn update_incarnation(update: &Update) -> Option<Incarnation> {
    match update {
        Update::Alive { incarnation, .. }
        | Update::Suspect { incarnation, .. }
        | Update::Dead { incarnation, .. }
        | Update::Left { incarnation, .. } => Some(*incarnation),
        Update::Meta { .. } => None,
    }
}
