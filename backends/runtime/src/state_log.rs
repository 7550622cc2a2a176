//! One readable log line for each state change an operator acts on: a member suspected,
//! declared dead, leaving or back; a lease acquired, lost, handed over, expired or released by
//! this node; a new Raft leader or voter set seen by a voter; a shard that changed owner, as
//! the shard coordinator (on the Raft leader) saw it, and a move it gave up.
//!
//! Why here and not in the core: the core reports changes as events (it reads no clock and
//! writes no log); the host decides what an operator reads. Why rate-limited: a partition of a
//! large mesh changes hundreds of members within a second, and a few lines with the count of
//! the rest say as much as all of them while leaving the log readable. What only a debugging
//! session needs (members learned, renewals, grants to other nodes) goes at debug.

use std::time::Duration;

use meshkit::lease::{GroupEvent, LeadershipEvent};
use meshkit::membership::{Event, MemberState};
use meshkit::shard::ShardEvent;

use meshkit_net::log_limit::LogLimit;

/// The process's limits (tests make their own).
static LIMITS: Limits = Limits::new();

/// Logs a membership event.
pub(crate) fn membership(event: &Event) {
    LIMITS.membership(event);
}

/// Logs an event of this node's lease client.
pub(crate) fn leadership(event: &LeadershipEvent) {
    LIMITS.leadership(event);
}

/// Logs an event of this voter's lease group.
pub(crate) fn group(event: &GroupEvent) {
    LIMITS.group(event);
}

/// Logs an event of this node's shard coordinator or shard member.
pub(crate) fn shard(event: &ShardEvent) {
    LIMITS.shard(event);
}

/// One rate limit per kind of line.
struct Limits {
    /// Member state changes at info: 20 lines per 10 s, then a count.
    members: LogLimit,
    /// Lease and Raft changes at info: rare unless something is wrong.
    leases: LogLimit,
    /// Shard owner changes at info: a rebalance moves many at once.
    shards: LogLimit,
    /// The debug lines (members learned, renewals, others' grants).
    detail: LogLimit,
}

impl Limits {
    const fn new() -> Self {
        Self {
            members: LogLimit::new(20, Duration::from_secs(10)),
            leases: LogLimit::new(20, Duration::from_secs(10)),
            shards: LogLimit::new(20, Duration::from_secs(10)),
            detail: LogLimit::new(100, Duration::from_secs(10)),
        }
    }

    fn membership(&self, event: &Event) {
        match event {
            Event::MemberStateChanged {
                node,
                incarnation,
                from,
                to,
                by,
            } => {
                let by = by.map(|b| b.to_string()).unwrap_or_default();
                match (from, to) {
                    (None, _) => {
                        if let Some(suppressed) = self.detail.allow() {
                            tracing::debug!(
                                member = %node, %incarnation, state = %to, from = ?from, suppressed,
                                "member state"
                            );
                        }
                    }
                    _ => {
                        if let Some(suppressed) = self.members.allow() {
                            let what = match to {
                                MemberState::Suspect => "member suspected",
                                MemberState::Dead => "member declared dead",
                                MemberState::Left => "member left",
                                MemberState::Alive if *from == Some(MemberState::Suspect) => {
                                    "member no longer suspected"
                                }
                                MemberState::Alive => "member back",
                            };
                            tracing::info!(
                                member = %node, %incarnation, by = %by, from = %from.map_or("new".to_owned(), |f| f.to_string()),
                                suppressed, "{what}"
                            );
                        }
                    }
                }
            }
            Event::Refuted { incarnation } => {
                if let Some(suppressed) = self.members.allow() {
                    tracing::info!(
                        %incarnation,
                        suppressed,
                        "refuted a suspicion of this node"
                    );
                }
            }
            _ => {}
        }
    }

    fn leadership(&self, event: &LeadershipEvent) {
        let allow = || self.leases.allow();
        match event {
            LeadershipEvent::Acquired {
                scope, token, term, ..
            } => {
                if let Some(suppressed) = allow() {
                    tracing::info!(%scope, %token, %term, suppressed, "lease acquired");
                }
            }
            LeadershipEvent::Lost {
                scope,
                token,
                reason,
            } => {
                if let Some(suppressed) = allow() {
                    tracing::warn!(%scope, %token, %reason, suppressed, "lease lost: stop using its token");
                }
            }
            LeadershipEvent::Transferred {
                scope,
                token,
                to,
                new_token,
            } => {
                if let Some(suppressed) = allow() {
                    tracing::info!(%scope, %token, %to, %new_token, suppressed, "lease handed over");
                }
            }
            LeadershipEvent::Expired { scope, token } => {
                if let Some(suppressed) = allow() {
                    tracing::warn!(%scope, %token, suppressed, "lease expired without a renewal: stop using its token");
                }
            }
            LeadershipEvent::Released { scope, token } => {
                if let Some(suppressed) = allow() {
                    tracing::info!(%scope, %token, suppressed, "lease released");
                }
            }
            LeadershipEvent::Renewed { scope, token, .. } => {
                if let Some(suppressed) = self.detail.allow() {
                    tracing::debug!(%scope, %token, suppressed, "lease renewed");
                }
            }
            _ => {}
        }
    }

    fn group(&self, event: &GroupEvent) {
        match event {
            GroupEvent::LeaderChanged { leader, term } => {
                if let Some(suppressed) = self.leases.allow() {
                    match leader {
                        Some(leader) => {
                            tracing::info!(%leader, %term, suppressed, "raft leader");
                        }
                        None => tracing::warn!(%term, suppressed, "no raft leader known"),
                    }
                }
            }
            GroupEvent::VotersChanged { voters } => {
                if let Some(suppressed) = self.leases.allow() {
                    let voters: Vec<String> = voters.iter().map(ToString::to_string).collect();
                    tracing::info!(voters = %voters.join(","), suppressed, "raft voters changed");
                }
            }
            other => {
                if let Some(suppressed) = self.detail.allow() {
                    tracing::debug!(event = ?other, suppressed, "lease table");
                }
            }
        }
    }

    fn shard(&self, event: &ShardEvent) {
        let node =
            |n: Option<meshkit::NodeId>| n.map_or_else(|| "none".to_owned(), |n| n.to_string());
        match event {
            ShardEvent::OwnerChanged {
                shard,
                from,
                to,
                fence,
                planned,
            } => {
                if let Some(suppressed) = self.shards.allow() {
                    let (from, to) = (node(*from), node(*to));
                    tracing::info!(%shard, %from, %to, token = fence, planned, suppressed, "shard moved");
                }
            }
            ShardEvent::MoveAbandoned { shard, to } => {
                if let Some(suppressed) = self.shards.allow() {
                    tracing::info!(%shard, %to, suppressed, "shard move abandoned: replanned later");
                }
            }
            ShardEvent::Drained => {
                if let Some(suppressed) = self.shards.allow() {
                    tracing::info!(suppressed, "drained: this node holds no shard");
                }
            }
            other => {
                if let Some(suppressed) = self.detail.allow() {
                    tracing::debug!(event = ?other, suppressed, "shard coordinator");
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::io::Write;
    use std::sync::{Arc, Mutex};

    use meshkit::membership::Event;
    use meshkit::{Incarnation, NodeId};

    use super::*;

    /// A log sink the test reads back.
    #[derive(Clone, Default)]
    struct Sink(Arc<Mutex<Vec<u8>>>);

    impl Write for Sink {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    fn captured(level: tracing::Level, f: impl FnOnce()) -> String {
        let sink = Sink::default();
        let writer = sink.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_max_level(level)
            .with_ansi(false)
            .with_writer(move || writer.clone())
            .finish();
        tracing::subscriber::with_default(subscriber, f);
        let bytes = sink.0.lock().unwrap().clone();
        String::from_utf8(bytes).unwrap()
    }

    fn changed(from: Option<MemberState>, to: MemberState) -> Event {
        Event::MemberStateChanged {
            node: NodeId::new(3),
            incarnation: Incarnation::new(7),
            from,
            to,
            by: Some(NodeId::new(2)),
        }
    }

    #[test]
    fn a_death_is_one_info_line_naming_the_member_and_incarnation() {
        let text = captured(tracing::Level::INFO, || {
            Limits::new().membership(&changed(Some(MemberState::Suspect), MemberState::Dead));
        });
        assert_eq!(text.lines().count(), 1, "{text}");
        assert!(text.contains("INFO"), "{text}");
        assert!(text.contains("member declared dead"), "{text}");
        assert!(
            text.contains("member=node-3") && text.contains("incarnation=inc7"),
            "{text}"
        );
        assert!(text.contains("by=node-2"), "{text}");
    }

    #[test]
    fn a_shard_owner_change_is_one_info_line_and_a_plan_is_debug() {
        let shard: meshkit::shard::ShardId = "shard/orders/3".parse().unwrap();
        let limits = Limits::new();
        let text = captured(tracing::Level::INFO, || {
            limits.shard(&ShardEvent::OwnerChanged {
                shard: shard.clone(),
                from: Some(NodeId::new(2)),
                to: Some(NodeId::new(4)),
                fence: 17,
                planned: true,
            });
            limits.shard(&ShardEvent::Planned {
                moves: 1,
                pool_changed: true,
            });
        });
        assert_eq!(text.lines().count(), 1, "{text}");
        assert!(
            text.contains("INFO") && text.contains("shard moved"),
            "{text}"
        );
        assert!(
            text.contains("shard=shard/orders/3")
                && text.contains("from=node-2")
                && text.contains("to=node-4"),
            "{text}"
        );
        assert!(text.contains("token=17"), "{text}");
    }

    #[test]
    fn members_learned_are_debug_only() {
        let text = captured(tracing::Level::INFO, || {
            Limits::new().membership(&changed(None, MemberState::Alive));
        });
        assert_eq!(text, "", "nothing at info");
        let text = captured(tracing::Level::DEBUG, || {
            Limits::new().membership(&changed(None, MemberState::Alive));
        });
        assert!(text.contains("member state"), "{text}");
    }

    #[test]
    fn a_storm_is_cut_to_the_burst_and_the_next_line_says_how_many_were_left_out() {
        let limits = Limits::new();
        let text = captured(tracing::Level::INFO, || {
            for _ in 0..50 {
                limits.membership(&changed(Some(MemberState::Alive), MemberState::Suspect));
            }
        });
        assert_eq!(text.lines().count(), 20, "the burst: {text}");
        assert!(text.lines().all(|l| l.contains("suppressed=0")), "{text}");
        // The first line of the next window carries the count of the 30 held back.
        let next = std::time::Instant::now() + Duration::from_secs(10);
        assert_eq!(limits.members.allow_at(next), Some(30));
    }
}
