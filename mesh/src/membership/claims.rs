//! SWIM's rules for claims about members (§4.2): which claim overrides which, and refutation.
//!
//! A claim carries the member's incarnation. `Alive(i)` overrides anything older than `i`;
//! `Suspect(i)` overrides `Alive(j)` for `i >= j`; `Dead(i)` overrides `Alive`/`Suspect` for
//! `i >= j`; only the member itself raises its incarnation, which is how it refutes.

use super::member::Member;
use super::suspicion::{self, Suspicion};
use super::{Event, MAX_CORRECTIONS_PER_DATAGRAM, MemberState, Membership};
use crate::id::{Incarnation, MetaVersion, NodeId};
use crate::time::{Instant, scale};
use crate::wire::Update;

impl Membership {
    /// Applies one piggybacked update received from `sender`.
    pub(super) fn apply_update(&mut self, now: Instant, sender: NodeId, update: Update) {
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
            } => self.apply_suspect(now, node, incarnation, from),
            Update::Dead {
                node,
                incarnation,
                from,
            } => self.apply_dead(now, node, incarnation, from),
            Update::Left { node, incarnation } => self.apply_left(now, node, incarnation),
            Update::Meta {
                node,
                version,
                key,
                value,
            } => self.apply_meta_write(now, sender, node, version, &key, value.as_deref()),
        }
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
            // Someone holds a newer record of us: a previous life of this node wrote it.
            if incarnation > self.incarnation && !self.left {
                self.refute(incarnation);
            }
            if meta > self.own_meta.version() {
                self.advance_epoch(now, meta.epoch);
            }
            return;
        }
        match self.members.get(node) {
            None => {
                if self.members.len() >= self.config.max_members() as usize {
                    return;
                }
                self.members.insert(
                    &mut self.rng,
                    node,
                    Member::new(now, incarnation, MemberState::Alive),
                );
                self.emit(Event::MemberStateChanged {
                    node,
                    incarnation,
                    from: None,
                    to: MemberState::Alive,
                    by: None,
                });
                self.broadcasts.push(&Update::Alive {
                    node,
                    incarnation,
                    meta,
                });
            }
            Some(m) if incarnation > m.incarnation => {
                self.transition(now, node, incarnation, MemberState::Alive, None);
                self.broadcasts.push(&Update::Alive {
                    node,
                    incarnation,
                    meta,
                });
            }
            Some(m) if incarnation < m.incarnation => return,
            Some(_) => {}
        }
        self.observe_meta(now, sender, node, meta);
    }

    /// The member a Suspect or Dead claim at `incarnation` may change, with its state and
    /// incarnation; `None` if the claim is about this node (refuted here when current), about an
    /// unknown member, older than what we hold, or about a member already Dead or Left.
    fn claim_target(
        &mut self,
        node: NodeId,
        incarnation: Incarnation,
    ) -> Option<(MemberState, Incarnation)> {
        if node == self.id {
            if incarnation >= self.incarnation && !self.left {
                self.refute(incarnation);
            }
            return None;
        }
        let m = self.members.get(node)?;
        let settled = matches!(m.state, MemberState::Dead | MemberState::Left);
        (incarnation >= m.incarnation && !settled).then_some((m.state, m.incarnation))
    }

    pub(super) fn apply_suspect(
        &mut self,
        now: Instant,
        node: NodeId,
        incarnation: Incarnation,
        by: NodeId,
    ) {
        let Some((state, current)) = self.claim_target(node, incarnation) else {
            return;
        };
        if state == MemberState::Suspect && incarnation == current {
            if let Some(s) = self.suspicions.get_mut(&node) {
                let before = s.deadline();
                if s.confirm(by) {
                    let after = s.deadline();
                    self.suspicion_deadlines.remove(&(before, node));
                    self.suspicion_deadlines.insert((after, node));
                    self.broadcasts.push(&Update::Suspect {
                        node,
                        incarnation,
                        from: by,
                    });
                }
            }
            return;
        }
        let members = self.alive_count();
        let min = suspicion::min_timeout(
            self.config.suspicion_mult(),
            members,
            self.config.probe_interval(),
        );
        let max = scale(min, self.config.suspicion_max_mult());
        // As memberlist: with too few members to confirm, do not wait for confirmations.
        let mut expected = self.config.suspicion_confirmations();
        if members.saturating_sub(2) < expected as usize {
            expected = 0;
        }
        self.transition(now, node, incarnation, MemberState::Suspect, Some(by));
        let s = Suspicion::new(now, incarnation, by, min, max, expected);
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

    pub(super) fn apply_dead(
        &mut self,
        now: Instant,
        node: NodeId,
        incarnation: Incarnation,
        by: NodeId,
    ) {
        if self.claim_target(node, incarnation).is_none() {
            return;
        }
        self.transition(now, node, incarnation, MemberState::Dead, Some(by));
        self.broadcasts.push(&Update::Dead {
            node,
            incarnation,
            from: by,
        });
    }

    pub(super) fn apply_left(&mut self, now: Instant, node: NodeId, incarnation: Incarnation) {
        if node == self.id {
            // A leave of an earlier life of this node; this life has not left.
            if incarnation >= self.incarnation && !self.left {
                self.refute(incarnation);
            }
            return;
        }
        let Some(m) = self.members.get(node) else {
            return;
        };
        if incarnation < m.incarnation || m.state == MemberState::Left {
            return;
        }
        self.transition(now, node, incarnation, MemberState::Left, Some(node));
        self.broadcasts.push(&Update::Left { node, incarnation });
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
            (incarnation < self.incarnation && !self.left).then(|| self.alive_update())
        } else {
            self.members
                .get(node)
                .filter(|m| m.state == MemberState::Alive && incarnation < m.incarnation)
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
    fn refute(&mut self, claimed: Incarnation) {
        self.change_self(|s| s.incarnation = s.incarnation.max(claimed).next());
        self.health.apply(1);
        self.stats.refutations += 1;
        self.broadcasts.push(&self.alive_update());
        // The sender of the claim hears the refutation first, directly.
        self.corrections.push(self.alive_update());
        tracing::debug!(node = %self.id, incarnation = %self.incarnation, "refuted a claim about this node");
        self.emit(Event::Refuted {
            incarnation: self.incarnation,
        });
    }
}
