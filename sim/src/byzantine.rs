//! The `byzantine` fault: forged datagrams from a non-member that holds a valid certificate.
//!
//! A security review found that any CA-signed node certificate, even for an id that belongs to no
//! member, could panic a voter, drive Raft, and do lasting damage with forged gossip. This
//! module builds those attacks, with their parameters drawn from the fault stream, as the exact
//! bytes the core's own encoders write (`meshkit::wire`, `meshkit::lease::wire`); the engine
//! injects them as sent by the attacker's id (one above the mesh's, so the network
//! authenticates it like a node) and checks that what the core accepts changes nothing (see
//! the engine's `byzantine_*` methods and `docs/scenarios.md`).
//!
//! This module only decides *what* is sent and *to whom*; it reads a [`MeshView`] the engine
//! takes when the fault fires.

use meshkit::lease::wire::{ForgedRaft, encode_forged_raft};
use meshkit::wire::{self, Update};
use meshkit::{Incarnation, MetaVersion, NodeId};
use rand::RngExt;
use rand_chacha::ChaCha8Rng;

use crate::scenario::Attack;

/// raft-rs's wire codes of the message types the attacks send.
const MSG_APPEND: u8 = 3;
const MSG_HEARTBEAT: u8 = 8;
const MSG_TIMEOUT_NOW: u8 = 14;
/// The most nodes one membership attack sends to.
const MAX_TARGETS: usize = 8;
/// The largest step above the truth a forged incarnation or epoch takes when it is not the
/// ceiling itself.
const MAX_FORGED_STEP: u32 = 1_000;
/// Phantom members announced by one `phantoms` attack: at least, at most.
const PHANTOMS_MIN: u64 = 100;
const PHANTOMS_MAX: u64 = 2_000;
/// Damaged or random messages one `garbage` attack sends, at most.
const MAX_GARBAGE: u32 = 20;

/// One forged message: to a node index, on the lease channel or the membership one.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Forged {
    /// Node index of the recipient.
    pub(crate) to: usize,
    /// Whether it is a lease datagram (else a membership one).
    pub(crate) lease: bool,
    /// The bytes.
    pub(crate) data: Vec<u8>,
}

/// What the attacker knows of the mesh when it strikes (as a real one would learn it from the
/// control API or from gossip): who runs, and each running voter's term and applied index.
#[derive(Clone, Debug, Default)]
pub(crate) struct MeshView {
    /// Running member indices, sorted.
    pub(crate) running: Vec<usize>,
    /// Each running member's own incarnation and metadata version, by index (running only).
    pub(crate) own: Vec<(usize, Incarnation, MetaVersion)>,
    /// Running voters: index, term, applied index.
    pub(crate) voters: Vec<(usize, u64, u64)>,
}

/// The messages of one occurrence of `attack` by `attacker` (node id), in sending order. An
/// attack with nobody to aim at (no running voter, say) sends nothing.
pub(crate) fn forge(
    attack: Attack,
    attacker: NodeId,
    view: &MeshView,
    nodes: usize,
    rng: &mut ChaCha8Rng,
) -> Vec<Forged> {
    let mut out = Vec::new();
    match attack {
        Attack::RaftCommit => {
            // Every running voter: one is enough to panic today, all of them take the group.
            for &(to, term, applied) in &view.voters {
                let commit = applied
                    .saturating_add(1_000_000)
                    .saturating_add(rng.random_range(0..=1u64 << 62));
                out.push(raft(attacker, to, MSG_HEARTBEAT, term, commit));
            }
        }
        Attack::TimeoutNow => {
            if let Some(&(to, term, _)) = pick(&view.voters, rng) {
                for _ in 0..rng.random_range(1..=5u32) {
                    out.push(raft(attacker, to, MSG_TIMEOUT_NOW, term, 0));
                }
            }
        }
        Attack::HigherTerm => {
            for &(to, term, _) in &subset(&view.voters, view.voters.len(), rng) {
                let kind = if rng.random() {
                    MSG_HEARTBEAT
                } else {
                    MSG_APPEND
                };
                let higher = term.saturating_add(rng.random_range(1..=u64::from(MAX_FORGED_STEP)));
                out.push(raft(attacker, to, kind, higher, 0));
            }
        }
        Attack::Left => {
            if let Some(&(victim, inc, _)) = pick(&view.own, rng) {
                let incarnation = if rng.random() {
                    u32::MAX
                } else {
                    inc.get()
                        .saturating_add(rng.random_range(1..=MAX_FORGED_STEP))
                };
                let update = Update::Left {
                    node: id(victim),
                    incarnation: Incarnation::new(incarnation),
                };
                out.extend(gossip_to(attacker, view, &[update], rng));
            }
        }
        Attack::Meta => {
            if let Some(&(victim, _, own)) = pick(&view.own, rng) {
                let epoch = if rng.random() {
                    u32::MAX
                } else {
                    own.epoch
                        .saturating_add(rng.random_range(1..=MAX_FORGED_STEP))
                };
                let key = ["addr", "w0", "byzantine"][rng.random_range(0..3usize)];
                let value = if rng.random_range(0..4u32) == 0 {
                    None
                } else {
                    let len = rng.random_range(1..=64usize);
                    Some(random_bytes(rng, len))
                };
                let update = Update::Meta {
                    node: id(victim),
                    version: MetaVersion::new(epoch, rng.random_range(1..=MAX_FORGED_STEP)),
                    key: key.to_owned(),
                    value,
                };
                out.extend(gossip_to(attacker, view, &[update], rng));
            }
        }
        Attack::Phantoms => {
            let count = rng.random_range(PHANTOMS_MIN..=PHANTOMS_MAX);
            // Ids above the attacker's, so that none is a member or the attacker itself.
            let first = nodes as u64 + 2 + rng.random_range(0..1_000_000u64);
            let updates: Vec<Update> = (first..first + count)
                .map(|n| Update::Alive {
                    node: NodeId::new(n),
                    incarnation: Incarnation::new(rng.random_range(1..=10)),
                    meta: MetaVersion::default(),
                })
                .collect();
            out.extend(gossip_to(attacker, view, &updates, rng));
        }
        Attack::Garbage => {
            if view.running.is_empty() {
                return out;
            }
            let lease_too = !view.voters.is_empty();
            for _ in 0..rng.random_range(1..=MAX_GARBAGE) {
                let to = view.running[rng.random_range(0..view.running.len())];
                let lease = lease_too && rng.random();
                let mut data = match rng.random_range(0..3u32) {
                    // Random bytes, possibly with a valid version byte in front.
                    0 => {
                        let len = rng.random_range(0..=wire::MAX_DATAGRAM_BYTES);
                        let mut d = random_bytes(rng, len);
                        if let Some(first) = d.first_mut()
                            && rng.random()
                        {
                            *first = 1;
                        }
                        d
                    }
                    // A valid message of the other kind's shape: cut short, or one byte flipped.
                    _ => {
                        let valid = if lease {
                            let m = ForgedRaft {
                                msg_type: MSG_HEARTBEAT,
                                to: id(to).get(),
                                entries: vec![(1, 1)],
                                ..ForgedRaft::default()
                            };
                            encode_forged_raft(attacker, &m).unwrap_or_default()
                        } else {
                            wire::pack_gossip(
                                attacker,
                                &[Update::Left {
                                    node: attacker,
                                    incarnation: Incarnation::new(1),
                                }],
                            )
                            .pop()
                            .unwrap_or_default()
                        };
                        damage(valid, rng)
                    }
                };
                data.truncate(wire::MAX_DATAGRAM_BYTES);
                out.push(Forged { to, lease, data });
            }
        }
    }
    out
}

/// Cuts `valid` short, or flips one of its bytes (header and body alike).
fn damage(mut valid: Vec<u8>, rng: &mut ChaCha8Rng) -> Vec<u8> {
    if valid.is_empty() {
        return valid;
    }
    if rng.random() {
        let cut = rng.random_range(0..valid.len());
        valid.truncate(cut);
    } else {
        let at = rng.random_range(0..valid.len());
        valid[at] ^= rng.random_range(1..=255u8);
    }
    valid
}

/// A Raft message to node index `to`.
fn raft(attacker: NodeId, to: usize, msg_type: u8, term: u64, commit: u64) -> Forged {
    let m = ForgedRaft {
        msg_type,
        to: id(to).get(),
        term,
        commit,
        ..ForgedRaft::default()
    };
    Forged {
        to,
        lease: true,
        // The three types the attacks use are network message types: this cannot fail.
        data: encode_forged_raft(attacker, &m).unwrap_or_default(),
    }
}

/// `updates` in gossip datagrams to a random subset of the running nodes.
fn gossip_to(
    attacker: NodeId,
    view: &MeshView,
    updates: &[Update],
    rng: &mut ChaCha8Rng,
) -> Vec<Forged> {
    let targets = subset(&view.running, MAX_TARGETS, rng);
    let datagrams = wire::pack_gossip(attacker, updates);
    let mut out = Vec::with_capacity(targets.len() * datagrams.len());
    for &to in &targets {
        for d in &datagrams {
            out.push(Forged {
                to,
                lease: false,
                data: d.clone(),
            });
        }
    }
    out
}

/// One random element.
fn pick<'a, T>(items: &'a [T], rng: &mut ChaCha8Rng) -> Option<&'a T> {
    (!items.is_empty()).then(|| &items[rng.random_range(0..items.len())])
}

/// 1 to `max` distinct random elements (all when fewer), in their original order.
fn subset<T: Clone>(items: &[T], max: usize, rng: &mut ChaCha8Rng) -> Vec<T> {
    if items.is_empty() {
        return Vec::new();
    }
    let want = rng.random_range(1..=max.clamp(1, items.len()));
    let mut index: Vec<usize> = (0..items.len()).collect();
    for k in 0..want {
        let j = rng.random_range(k..index.len());
        index.swap(k, j);
    }
    index.truncate(want);
    index.sort_unstable();
    index.into_iter().map(|i| items[i].clone()).collect()
}

fn random_bytes(rng: &mut ChaCha8Rng, len: usize) -> Vec<u8> {
    (0..len).map(|_| rng.random()).collect()
}

fn id(index: usize) -> NodeId {
    NodeId::new(index as u64 + 1)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    fn view() -> MeshView {
        MeshView {
            running: vec![0, 1, 2, 3, 4],
            own: (0..5)
                .map(|i| (i, Incarnation::new(1), MetaVersion::new(1, 3)))
                .collect(),
            voters: vec![(0, 2, 10), (1, 2, 10), (2, 2, 9)],
        }
    }

    #[test]
    fn every_attack_decodes_as_the_attacker_sent_it_except_garbage() {
        let attacker = NodeId::new(6);
        let mut rng = ChaCha8Rng::seed_from_u64(3);
        for attack in Attack::ALL {
            for _ in 0..20 {
                let forged = forge(attack, attacker, &view(), 5, &mut rng);
                assert!(!forged.is_empty(), "{attack:?} sent nothing");
                for f in &forged {
                    assert!(f.to < 5);
                    assert!(f.data.len() <= wire::MAX_DATAGRAM_BYTES);
                    assert_eq!(
                        f.lease,
                        attack.is_raft() || (f.lease && attack == Attack::Garbage)
                    );
                    if attack == Attack::Garbage {
                        continue;
                    }
                    if f.lease {
                        assert_eq!(
                            meshkit::lease::recipient(&f.data),
                            Ok(meshkit::lease::Recipient::Group)
                        );
                    } else {
                        let d = wire::decode(&f.data).expect("a forged datagram decodes");
                        assert_eq!(d.sender, attacker);
                    }
                }
            }
        }
    }

    #[test]
    fn phantoms_fill_a_few_dozen_datagrams_per_target() {
        let mut rng = ChaCha8Rng::seed_from_u64(9);
        let updates: Vec<Update> = (100..2_100)
            .map(|n| Update::Alive {
                node: NodeId::new(n),
                incarnation: Incarnation::new(1),
                meta: MetaVersion::default(),
            })
            .collect();
        let datagrams = wire::pack_gossip(NodeId::new(6), &updates);
        let carried: usize = datagrams
            .iter()
            .map(|d| wire::decode(d).unwrap().updates.len())
            .sum();
        assert_eq!(carried, 2_000);
        assert!((10..=60).contains(&datagrams.len()), "{}", datagrams.len());
        let _ = forge(Attack::Phantoms, NodeId::new(6), &view(), 5, &mut rng);
    }

    #[test]
    fn raft_attacks_need_voters() {
        let mut rng = ChaCha8Rng::seed_from_u64(1);
        let view = MeshView {
            voters: Vec::new(),
            ..view()
        };
        for attack in [Attack::RaftCommit, Attack::TimeoutNow, Attack::HigherTerm] {
            assert!(forge(attack, NodeId::new(6), &view, 5, &mut rng).is_empty());
        }
    }
}
