//! Operator changes of the Raft voter set, through the node that leads the group.
//!
//! The lease group changes its voters one at a time (Raft's single-server changes,
//! dissertation §4.1): [`LeaseGroup::add_voter`] and [`LeaseGroup::remove_voter`] propose one
//! change on the leader, and raft-rs refuses a second until the first is applied. What the
//! group cannot know is which voters are up: the node can, from its membership. So
//! [`Node::change_voters`] refuses a change that would leave the group without a quorum of
//! live voters, counting as live the voters membership holds [`MemberState::Alive`] (the
//! local node included):
//!
//! * adding `n` to `V` voters needs `majority(V + 1)` live voters among the current ones: the
//!   new voter counts toward the quorum from the moment the change applies, but it cannot vote
//!   usefully before it has caught up from the log;
//! * removing `n` needs `majority(V - 1)` live voters among those that stay.
//!
//! A node added must be an alive member running a joining voter
//! ([`Node::with_joining_voter`]); the node cannot see that from here (a host publishes it in
//! the member's metadata and checks it before calling, as meshkitd does).

use thiserror::Error;

use super::Node;
use crate::id::NodeId;
use crate::lease::{GroupError, MAX_VOTERS};
use crate::membership::MemberState;
use crate::time::Instant;

/// One change of the Raft voter set.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum VoterChange {
    /// Make `node` (an alive member running a joining voter) a voter.
    Add(NodeId),
    /// Make the voter `node` leave the group.
    Remove(NodeId),
}

impl core::fmt::Display for VoterChange {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            Self::Add(node) => write!(f, "adding {node}"),
            Self::Remove(node) => write!(f, "removing {node}"),
        }
    }
}

impl VoterChange {
    /// The node the change names.
    pub fn node(self) -> NodeId {
        match self {
            Self::Add(node) | Self::Remove(node) => node,
        }
    }
}

/// Why [`Node::change_voters`] refused a change. Nothing was proposed and nothing changed,
/// except for [`LeaderMoving`](Self::LeaderMoving), which started a leadership transfer.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum VoterChangeError {
    /// This node runs no voter (caller misuse: ask a voter, ideally the leader).
    #[error("this node runs no Raft voter: ask the Raft leader")]
    NoVoter,
    /// Voter changes are proposed by the Raft leader only (caller misuse: ask `leader`).
    #[error("this node does not lead the Raft group: ask {}", leader.map_or("the leader (none known now)".to_owned(), |l| format!("{l}, the leader")))]
    NotLeader {
        /// The leader this node knows of.
        leader: Option<NodeId>,
    },
    /// A change is still being committed: changes go one at a time (ask again once it is
    /// applied).
    #[error("a voter change is still being committed: changes go one at a time")]
    InProgress,
    /// The node to add is not an alive member of the mesh (caller misuse, or it is down).
    #[error("{node} is not an alive member (membership says {}): only a running, joining voter can be added", state.map_or("unknown".to_owned(), |s| s.to_string()))]
    NotAlive {
        /// The node named.
        node: NodeId,
        /// Its member state here, if known.
        state: Option<MemberState>,
    },
    /// The node to add is a voter already, or the node to remove is not one (caller misuse).
    #[error("{node} is {}", if *.is_voter { "already a voter" } else { "not a voter" })]
    Membership {
        /// The node named.
        node: NodeId,
        /// Whether it is a voter now.
        is_voter: bool,
    },
    /// The group would have more than [`MAX_VOTERS`] voters, or none.
    #[error("the group would have {voters} voters: it keeps 1..={max}")]
    VoterCount {
        /// Voters after the change.
        voters: usize,
        /// [`MAX_VOTERS`].
        max: usize,
    },
    /// The change would leave fewer live voters than a quorum of the new voter set.
    #[error(
        "refused: {change} would leave {live} live voter(s) of {voters}, and a quorum of {voters} is {quorum} (live voters now: {live_now:?})"
    )]
    WouldLoseQuorum {
        /// The change refused.
        change: VoterChange,
        /// Live voters that would count toward the new set's quorum.
        live: usize,
        /// Voters after the change.
        voters: usize,
        /// The new set's quorum.
        quorum: usize,
        /// The voters membership holds alive now.
        live_now: Vec<u64>,
    },
    /// The leader itself is to be removed: it hands Raft leadership to `to` first (a transfer
    /// started); ask `to` once it leads. `None`: no other voter holds the whole log yet, nothing
    /// started (ask again shortly).
    #[error("{leader} leads the Raft group and is the one to remove: {}", to.map_or("no other voter is caught up yet; ask again shortly".to_owned(), |t| format!("leadership is being handed to {t}; ask it")))]
    LeaderMoving {
        /// The leader, this node.
        leader: NodeId,
        /// The voter leadership is handed to.
        to: Option<NodeId>,
    },
}

/// The votes a voter set of `voters` needs.
pub fn quorum(voters: usize) -> usize {
    voters / 2 + 1
}

impl Node {
    /// Proposes one change of the Raft voter set on this node's voter, which must lead the
    /// group, unless it would lose quorum (a remove needs a majority of the smaller set among
    /// the voters that stay and membership holds alive; an add, a majority of the larger set
    /// among the current live voters, the new one not yet caught up). The change is
    /// committed and applied later: [`GroupEvent::VotersChanged`](crate::lease::GroupEvent)
    /// says when, and [`LeaseGroup::has_pending_change`](crate::lease::LeaseGroup) until then.
    pub fn change_voters(
        &mut self,
        now: Instant,
        change: VoterChange,
    ) -> Result<(), VoterChangeError> {
        let group = self.group.as_ref().ok_or(VoterChangeError::NoVoter)?;
        if !group.is_leader() {
            return Err(VoterChangeError::NotLeader {
                leader: group.leader(),
            });
        }
        if group.has_pending_change() {
            return Err(VoterChangeError::InProgress);
        }
        let node = change.node();
        let voters: Vec<NodeId> = group.voters().collect();
        let is_voter = voters.contains(&node);
        let alive = |n: NodeId| {
            self.membership
                .member(n)
                .is_some_and(|m| m.state == MemberState::Alive)
        };
        let live_now: Vec<NodeId> = voters.iter().copied().filter(|v| alive(*v)).collect();
        let (after, live) = match change {
            VoterChange::Add(_) => {
                if is_voter {
                    return Err(VoterChangeError::Membership { node, is_voter });
                }
                if node.get() == 0 || !alive(node) {
                    return Err(VoterChangeError::NotAlive {
                        node,
                        state: self.membership.member(node).map(|m| m.state),
                    });
                }
                // The new voter is not counted: it has an empty log until it catches up.
                (voters.len() + 1, live_now.len())
            }
            VoterChange::Remove(_) => {
                if !is_voter {
                    return Err(VoterChangeError::Membership { node, is_voter });
                }
                let staying = live_now.iter().filter(|v| **v != node).count();
                (voters.len() - 1, staying)
            }
        };
        if after == 0 || after > MAX_VOTERS {
            return Err(VoterChangeError::VoterCount {
                voters: after,
                max: MAX_VOTERS,
            });
        }
        if live < quorum(after) {
            return Err(VoterChangeError::WouldLoseQuorum {
                change,
                live,
                voters: after,
                quorum: quorum(after),
                live_now: live_now.iter().map(|v| v.get()).collect(),
            });
        }
        let group = self.group.as_mut().ok_or(VoterChangeError::NoVoter)?;
        if change == VoterChange::Remove(self.id) {
            // raft-rs keeps a leader that removed itself leading a group it is not in: hand the
            // group to a caught-up voter, which then removes this node when asked.
            let to = group.hand_over_leadership(now);
            self.settle(now);
            return Err(VoterChangeError::LeaderMoving {
                leader: self.id,
                to,
            });
        }
        let proposed = match change {
            VoterChange::Add(n) => group.add_voter(now, n),
            VoterChange::Remove(n) => group.remove_voter(now, n),
        };
        self.settle(now);
        proposed.map_err(|e| match e {
            GroupError::NotLeader { leader } => VoterChangeError::NotLeader { leader },
            GroupError::Membership { id, is_voter } => {
                VoterChangeError::Membership { node: id, is_voter }
            }
            GroupError::VoterSet { len, max } => VoterChangeError::VoterCount { voters: len, max },
            // The remaining case: raft-rs refused the proposal (a change pending, or a
            // leadership transfer running).
            _ => VoterChangeError::InProgress,
        })
    }
}
