//! [`LeaseGroup`]: one voter of the Raft group that replicates the lease table.

use alloc::collections::{BTreeMap, BTreeSet, VecDeque};
use core::fmt;

use raft::eraftpb::{ConfChange, ConfState, Entry, EntryType, HardState, Message, MessageType};
use raft::{ProgressState, RawNode, ReadOnlyOption, Ready, SnapshotStatus, StateRole};

use super::config::LeaseConfig;
use super::error::{DurableError, GroupError, MessageError, RaftRefusal, RaftRefusals};
use super::event::{EventLog, GroupEvent, LeaseInfo, ResumeError, Sequenced};
use super::ids::{EventSeq, RequestId, Term};
use super::scope::Scope;
use super::storage::{DurableWrite, LogStore};
use super::table::{Body, Change, Command, LeaseTable, Op, Outcome, Refusal};
use super::timer::{Timer, TimerTable};
use super::wire::{self, LeaseMessage, Reply, VoterChange};
use super::{MAX_VOTERS, Transmit, slog_bridge};
use crate::id::NodeId;
use crate::rng::NodeRng;
use crate::time::{Duration, Instant, scale};
use crate::wire::DecodeError;

/// Datagrams waiting in a voter's outbox; past this the newest are dropped and counted.
pub const MAX_GROUP_OUTBOX_DATAGRAMS: usize = 16_384;
/// Raft's budget of entry bytes per append (protobuf sizes); appends are also cut to fit a
/// datagram when encoded.
const RAFT_MAX_SIZE_PER_MSG_BYTES: u64 = 512;
/// Appends in flight per follower.
const RAFT_MAX_INFLIGHT_MSGS: usize = 64;
/// Bytes of proposed but uncommitted entries the leader accepts before refusing proposals.
const RAFT_MAX_UNCOMMITTED_BYTES: u64 = 1 << 20;
/// Ready rounds per input; one normally suffices (persistence here is synchronous).
const MAX_READY_ROUNDS: usize = 16;
/// The highest Raft term a message may carry. raft-rs adds 1 to its term when it campaigns
/// (`u64` arithmetic that overflows at the top); a group that elected a leader every
/// millisecond would need 8,900 years to get here, so a larger term is a forgery.
pub const MAX_RAFT_TERM: u64 = 1 << 48;
/// The highest Raft log index a message may carry (as an index, a commit or a hint, or in a
/// snapshot). raft-rs adds to indices freely (`index + 1` when it installs a snapshot, appends
/// past the last entry); a group committing a million entries a second would need 2,000 years
/// to get here.
pub const MAX_RAFT_INDEX: u64 = 1 << 56;

/// What survives a voter's crash: its Raft log (from the last compaction on), hard state,
/// configuration and newest snapshot (the lease table at the snapshot's index), which this
/// module treats as the disk. A restarted voter rebuilds its table from the snapshot and applies
/// the committed entries after it again.
#[derive(Clone)]
pub struct DurableState {
    store: LogStore,
}

impl DurableState {
    /// Rebuilds what a voter made durable from the records its host wrote (every
    /// [`DurableWrite`] polled from [`LeaseGroup::poll_durable`], in order, a `Replace`
    /// standing for the records it lists). Checks every record and the whole; never panics.
    pub fn from_records<'a>(
        records: impl IntoIterator<Item = &'a [u8]>,
    ) -> Result<Self, DurableError> {
        Ok(Self {
            store: LogStore::from_records(records)?,
        })
    }

    /// The persisted hard state.
    pub fn hard_state(&self) -> DurableHardState {
        let hs = self.store.hard_state();
        DurableHardState {
            term: Term::new(hs.term),
            vote: (hs.vote != 0).then(|| NodeId::new(hs.vote)),
            commit: hs.commit,
        }
    }

    /// Where the persisted log starts and ends.
    pub fn log_bounds(&self) -> LogBounds {
        LogBounds::of(&self.store)
    }

    /// The index the table is rebuilt from at a restart: the snapshot's, or the founders'
    /// membership entries (applied as the initial configuration) before any snapshot.
    fn restart_index(&self) -> u64 {
        self.store
            .snapshot_ref()
            .get_metadata()
            .index
            .max(self.store.bootstrap_index())
    }
}

/// A voter's persisted Raft hard state.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DurableHardState {
    /// The term it last saw.
    pub term: Term,
    /// Whom it voted for in that term, if anyone.
    pub vote: Option<NodeId>,
    /// The highest log index it knows committed.
    pub commit: u64,
}

/// Where a voter's log starts and ends.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LogBounds {
    /// Index of the newest snapshot (0 before the first one): entries up to it are compacted.
    pub snapshot_index: u64,
    /// First log index held.
    pub first_index: u64,
    /// Last log index held.
    pub last_index: u64,
}

impl LogBounds {
    fn of(store: &LogStore) -> Self {
        Self {
            snapshot_index: store.snapshot_ref().get_metadata().index,
            first_index: store.first(),
            last_index: store.last(),
        }
    }
}

/// raft-rs's flags that keep a partitioned or restarted voter from disrupting the group.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RaftSafetyFlags {
    /// A candidate first asks whether it could win (no term bump from a lone voter).
    pub pre_vote: bool,
    /// A leader that loses contact with a quorum steps down.
    pub check_quorum: bool,
}

impl fmt::Debug for DurableState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DurableState")
            .field("hard_state", self.store.hard_state())
            .field(
                "snapshot_index",
                &self.store.snapshot_ref().get_metadata().index,
            )
            .field("first_index", &self.store.first())
            .field("last_index", &self.store.last())
            .field("bootstrap_index", &self.store.bootstrap_index())
            .finish()
    }
}

/// Counters for metrics; they only grow.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct GroupStats {
    /// Raft leadership handed to a caught-up voter that holds no lease, because this leader's
    /// own node held one: a crash of a node that is both costs an election plus a full TTL.
    pub leadership_transfers: u64,
    /// Datagrams taken.
    pub messages_received: u64,
    /// Datagrams refused (undecodable, sender mismatch, misrouted, unsupported).
    pub messages_refused: u64,
    /// Raft messages raft-rs refused to step (unknown peer, stale).
    pub raft_step_errors: u64,
    /// Raft messages refused before raft-rs saw them (a sender that is not a voter, a field
    /// that breaks one of raft-rs's invariants), per rule; also counted in `messages_refused`.
    pub raft_refused: RaftRefusals,
    /// Commands proposed by this voter while leader.
    pub proposals: u64,
    /// Committed entries applied.
    pub entries_applied: u64,
    /// Committed entries whose data this build cannot read (skipped on every voter alike).
    pub entries_skipped: u64,
    /// Entries cut from appends to fit a datagram (Raft resends them).
    pub entries_cut: u64,
    /// Datagrams sent.
    pub datagrams_sent: u64,
    /// Datagrams dropped because the outbox was full.
    pub outbox_dropped: u64,
    /// Snapshots of the lease table taken (each compaction takes one, so does a membership
    /// change once the log has been compacted).
    pub snapshots_taken: u64,
    /// Log compactions.
    pub compactions: u64,
    /// Snapshots sent to followers behind the compacted log.
    pub snapshots_sent: u64,
    /// Snapshots sent that no follower acknowledged in time (reported failed to raft-rs, which
    /// sends another).
    pub snapshots_failed: u64,
    /// Snapshots received and installed (the table replaced by the leader's).
    pub snapshots_installed: u64,
}

/// A Ready whose entries and hard state are on "disk". It still owes its persisted messages,
/// its committed entries and the `advance` call, in that order (raft-rs's Ready contract).
#[must_use = "a persisted Ready still owes its persisted messages, committed entries and advance"]
struct Persisted(Ready);

impl Persisted {
    /// Persistence: install the Ready's snapshot, append its entries, store its hard state (in
    /// raft-rs's order).
    fn write(store: &mut LogStore, rd: Ready) -> Self {
        if !rd.snapshot().is_empty() {
            store.install_snapshot(rd.snapshot().clone());
        }
        if !rd.entries().is_empty() {
            store.append(rd.entries());
        }
        if let Some(hs) = rd.hs() {
            store.set_hard_state(hs.clone());
        }
        Self(rd)
    }

    /// The messages that were waiting for persistence, and the rest of the Ready.
    fn into_parts(mut self) -> (Vec<Message>, Ready) {
        let messages = self.0.take_persisted_messages();
        (messages, self.0)
    }
}

#[derive(Debug)]
struct PendingRead {
    client: NodeId,
    request: RequestId,
    scope: Scope,
    since: Instant,
    /// The commit index ReadIndex confirmed; the answer waits until it is applied.
    index: Option<u64>,
}

/// One voter of the lease group: a raft-rs `RawNode` over in-memory storage, the lease table
/// it applies, and the request handling for clients.
///
/// # Compaction and snapshots
///
/// Once [`LeaseConfig::compact_after_entries`] entries were applied since the last snapshot,
/// the voter encodes its table as a snapshot at its applied index and drops the log up to a
/// quarter of that threshold behind it (a follower a little behind still catches up by
/// appends). The log therefore holds at most about 1.25 times the threshold plus what is not
/// yet applied. A follower that needs an entry older than the leader's first is sent the
/// snapshot (`MsgSnapshot`, one message possibly larger than a datagram); it checks the table
/// and the configuration before raft-rs sees them, installs it, and replaces its table. The
/// leader reports a snapshot that no acknowledgement followed within two request timeouts as
/// failed, so raft-rs sends another. Tokens keep increasing across an install or a restart:
/// they are log indices, and every later grant has a larger one; the snapshot keeps the
/// table's clock term, so a new leader still rebases every lease to a full TTL.
///
/// # Driving
///
/// * **Construction**: [`bootstrap`](Self::bootstrap) on each founding voter (all with the same
///   voter set), [`join`](Self::join) on a node that the group will add with
///   [`add_voter`](Self::add_voter), [`restart`](Self::restart) from a [`DurableState`].
/// * **Inputs**: [`handle_message`](Self::handle_message) for every datagram for which
///   [`recipient`](super::recipient) says [`Recipient::Group`](super::Recipient::Group),
///   [`handle_timeout`](Self::handle_timeout) when [`poll_timeout`](Self::poll_timeout) comes
///   due (spurious calls are no-ops), and the commands [`add_voter`](Self::add_voter) and
///   [`remove_voter`](Self::remove_voter).
/// * **Outputs**, drained after every input in this order:
///   [`poll_transmit`](Self::poll_transmit) until `None`, [`poll_event`](Self::poll_event)
///   until `None`, then [`poll_timeout`](Self::poll_timeout). A host with a disk that turned
///   on [`record_durable_writes`](Self::record_durable_writes) first drains
///   [`poll_durable`](Self::poll_durable) until `None` and syncs what it wrote, then transmits.
///
/// A Raft message is stepped only if its sender is a voter of the current configuration and
/// it meets every invariant raft-rs relies on; otherwise it is refused with
/// [`MessageError::RaftRefused`] and counted in [`GroupStats::raft_refused`].
///
/// Inside, every input ends with raft-rs's Ready loop: send the Ready's ordinary messages,
/// persist its entries and hard state, then queue the messages that had to wait for persistence
/// (votes, append acknowledgements), apply the committed entries to the lease table, advance.
/// After every call into raft-rs that can reset its election timer, the randomized election
/// timeout is drawn again from the voter's seeded RNG (raft-rs draws it from the OS otherwise).
pub struct LeaseGroup {
    config: LeaseConfig,
    id: NodeId,
    rng: NodeRng,
    raft: RawNode<LogStore>,
    voters: BTreeSet<NodeId>,
    /// The voters a joining node accepts Raft messages from until its own configuration
    /// (from the log or a snapshot) arrives; empty on founders and restarted voters.
    joining_via: BTreeSet<NodeId>,
    /// What the joining voters among the live members take Raft messages from (their own word,
    /// which the node reads from membership: [`set_joiner_accepts`](Self::set_joiner_accepts)).
    /// A leader one of them refuses while it has not caught up hands leadership on.
    joiner_accepts: BTreeMap<NodeId, BTreeSet<NodeId>>,
    /// `(term, ticks)`: how many ticks this voter has led in `term`.
    leading: Option<(u64, u32)>,
    table: LeaseTable,
    applied: u64,
    timers: TimerTable,
    next_tick: Instant,
    /// `(term, role)` when the election timeout was last drawn.
    drawn_for: Option<(u64, StateRole)>,
    /// `(leader, term)` last reported.
    seen_leader: Option<(Option<NodeId>, Term)>,
    /// A new leader owes a clock entry (its first stamp rebases the table).
    clock_due: bool,
    last_clock_proposal: Instant,
    pending: BTreeMap<(NodeId, RequestId), Instant>,
    /// Requests that arrived while this voter could not propose (a leadership transfer of its
    /// own was running) and knew no other leader to name: they wait here until it can propose
    /// again or learns who leads, rather than be answered "no leader known" and wait out the
    /// client's timeout. At most `max_pending_requests`; dropped after one request timeout.
    parked: BTreeMap<(NodeId, RequestId), (Instant, Op)>,
    reads: BTreeMap<u64, PendingRead>,
    next_read: u64,
    outbox: VecDeque<(NodeId, LeaseMessage)>,
    events: EventLog<GroupEvent>,
    stats: GroupStats,
    /// A membership change was applied after the newest snapshot: the next Ready takes a new
    /// one (once the log has been compacted), so a joining voter finds itself in it.
    conf_changed: bool,
    /// Snapshots sent and not yet acknowledged: follower -> when.
    snapshots_out: BTreeMap<NodeId, Instant>,
    /// A received snapshot's table, decoded (and checked) before raft-rs took the message:
    /// `(index, table)`.
    incoming_table: Option<(u64, LeaseTable)>,
    /// Test hook: stop dead right after the next persistence, before anything is sent.
    #[cfg(test)]
    crash_after_persist: bool,
    halted: bool,
}

impl LeaseGroup {
    /// A founding voter. Every founder must be given the same `voters`; the group's first log
    /// entries (one membership entry per founder) are written here, as already committed, so
    /// that a voter added later learns the whole membership history from the log.
    pub fn bootstrap(
        config: LeaseConfig,
        id: NodeId,
        voters: &[NodeId],
        seed: u64,
        now: Instant,
    ) -> Result<Self, GroupError> {
        let set: BTreeSet<NodeId> = voters.iter().copied().collect();
        if set.is_empty()
            || set.len() > MAX_VOTERS
            || set.len() != voters.len()
            || set.contains(&NodeId::new(0))
        {
            return Err(GroupError::VoterSet {
                len: voters.len(),
                max: MAX_VOTERS,
            });
        }
        if !set.contains(&id) {
            return Err(GroupError::NotAVoter { id });
        }
        let mut store = LogStore::default();
        let entries: Vec<Entry> = set
            .iter()
            .zip(1u64..)
            .map(|(voter, index)| Entry {
                entry_type: EntryType::EntryConfChange,
                term: 1,
                index,
                context: wire::encode_voter_change(VoterChange {
                    add: true,
                    node: *voter,
                })
                .into(),
                ..Entry::default()
            })
            .collect();
        let bootstrap_index = entries.len() as u64;
        store.append(&entries);
        store.set_hard_state(HardState {
            term: 1,
            commit: bootstrap_index,
            ..HardState::default()
        });
        store.set_conf_state(ConfState {
            voters: set.iter().map(|v| v.get()).collect(),
            ..ConfState::default()
        });
        store.set_bootstrap_index(bootstrap_index);
        Ok(Self::start(config, id, DurableState { store }, seed, now))
    }

    /// A node that is not (yet) a voter: it has an empty log and no configuration, never
    /// campaigns, and becomes a voter once the leader's [`add_voter`](Self::add_voter) commits
    /// and the log (with every earlier membership change) reaches it. Until its own
    /// configuration arrives it takes Raft messages only from `group`, the voters it joins
    /// (only voters speak Raft; see `docs/security.md`).
    pub fn join(
        config: LeaseConfig,
        id: NodeId,
        group: &[NodeId],
        seed: u64,
        now: Instant,
    ) -> Self {
        let mut joiner = Self::start(
            config,
            id,
            DurableState {
                store: LogStore::default(),
            },
            seed,
            now,
        );
        joiner.joining_via = group.iter().copied().filter(|v| *v != id).collect();
        joiner
    }

    /// A voter restarted from what it had persisted. The lease table is rebuilt from the
    /// snapshot and the committed log after it; requests in flight and pending reads are
    /// forgotten (clients retry).
    pub fn restart(
        config: LeaseConfig,
        id: NodeId,
        durable: DurableState,
        seed: u64,
        now: Instant,
    ) -> Self {
        Self::start(config, id, durable, seed, now)
    }

    /// A node that had started as a joining voter ([`join`](Self::join)) and persisted its
    /// Raft state, restarted from it. If that state holds a configuration (the group's log or a
    /// snapshot reached it before the crash), this is [`restart`](Self::restart); if not, it
    /// is still a voter-to-be, and again takes Raft messages only from `group` until its
    /// configuration arrives. Its hard state is kept in both cases: a term or vote it promised
    /// is never forgotten.
    pub fn rejoin(
        config: LeaseConfig,
        id: NodeId,
        durable: DurableState,
        group: &[NodeId],
        seed: u64,
        now: Instant,
    ) -> Self {
        let mut joiner = Self::start(config, id, durable, seed, now);
        if joiner.voters.is_empty() {
            joiner.joining_via = group.iter().copied().filter(|v| *v != id).collect();
        }
        joiner
    }

    fn start(
        config: LeaseConfig,
        id: NodeId,
        durable: DurableState,
        seed: u64,
        now: Instant,
    ) -> Self {
        assert!(id.get() != 0, "node id 0 is Raft's invalid id");
        let applied = durable.restart_index();
        let table = match durable.store.snapshot_ref().get_metadata().index {
            0 => LeaseTable::default(),
            _ => {
                wire::decode_table(&durable.store.snapshot_ref().data)
                    .expect("a stored snapshot was encoded or checked by this build")
                    .1
            }
        };
        let raft_config = raft::Config {
            id: id.get(),
            election_tick: config.election_ticks() as usize,
            heartbeat_tick: config.heartbeat_ticks() as usize,
            applied,
            max_size_per_msg: RAFT_MAX_SIZE_PER_MSG_BYTES,
            max_inflight_msgs: RAFT_MAX_INFLIGHT_MSGS,
            check_quorum: true,
            pre_vote: true,
            read_only_option: ReadOnlyOption::Safe,
            max_uncommitted_size: RAFT_MAX_UNCOMMITTED_BYTES,
            ..raft::Config::default()
        };
        let voters = durable
            .store
            .conf_state()
            .voters
            .iter()
            .map(|v| NodeId::new(*v))
            .collect();
        // LeaseConfig guarantees what raft::Config::validate checks (heartbeat < election,
        // non-zero ticks), and LogStore's initial_state cannot fail.
        let raft = RawNode::new(&raft_config, durable.store, &slog_bridge::logger())
            .expect("a validated LeaseConfig makes a valid raft::Config");
        let mut rng = NodeRng::from_seed(seed);
        // The first tick comes at a random point of the first interval: voters started (or
        // restarted) at the same instant would otherwise tick in lockstep forever, and two
        // followers whose election timeouts draw the same tick count would always campaign at
        // the same instant and split the vote.
        let tick_ns = config.tick_interval().as_nanos();
        let phase_ns = (tick_ns * u128::from(rng.next_u32())) >> 32;
        let first_tick_ns = u64::try_from(tick_ns - phase_ns).unwrap_or(u64::MAX);
        let mut timers = TimerTable::default();
        let next_tick = now + Duration::from_nanos(first_tick_ns);
        timers.set(Timer::RaftTick, next_tick);
        timers.set(Timer::Maintenance, now + config.request_timeout());
        let mut group = Self {
            rng,
            id,
            raft,
            voters,
            joining_via: BTreeSet::new(),
            joiner_accepts: BTreeMap::new(),
            leading: None,
            table,
            applied,
            timers,
            next_tick,
            drawn_for: None,
            seen_leader: None,
            clock_due: false,
            last_clock_proposal: Instant::ZERO,
            pending: BTreeMap::new(),
            parked: BTreeMap::new(),
            reads: BTreeMap::new(),
            next_read: 1,
            outbox: VecDeque::new(),
            events: EventLog::new(),
            stats: GroupStats::default(),
            conf_changed: false,
            snapshots_out: BTreeMap::new(),
            incoming_table: None,
            config,
            #[cfg(test)]
            crash_after_persist: false,
            halted: false,
        };
        group.after_input(now);
        group
    }

    /// What a crash leaves behind. Consumes the voter: a real crash loses everything else.
    pub fn into_durable(mut self) -> DurableState {
        let mut store = core::mem::take(self.raft.mut_store());
        store.stop_journal();
        DurableState { store }
    }

    /// Starts recording [`DurableWrite`]s for a host with a disk (meshkitd); the first one
    /// polled is the whole state. Call it right after construction, before the first
    /// `poll_transmit`. From then on the host must drain [`poll_durable`](Self::poll_durable)
    /// and make every write durable (written and synced) before it sends any datagram it
    /// polls after them: that is Raft's persistence rule (a vote or an acknowledgement goes out
    /// only after what it promises is on disk). The simulator does not record: it keeps the
    /// store itself as the crashed voter's disk.
    pub fn record_durable_writes(&mut self) {
        self.raft.mut_store().start_journal();
    }

    /// The next write to make durable (see
    /// [`record_durable_writes`](Self::record_durable_writes)).
    #[must_use = "a durable write not written breaks Raft's persistence rule"]
    pub fn poll_durable(&mut self) -> Option<DurableWrite> {
        self.raft.mut_store().next_write()
    }

    /// Takes one datagram from `from` (as authenticated by the transport).
    pub fn handle_message(
        &mut self,
        now: Instant,
        from: NodeId,
        bytes: &[u8],
    ) -> Result<(), MessageError> {
        if self.halted {
            return Ok(());
        }
        let result = self.take_message(now, from, bytes);
        if let Err(error) = &result {
            self.stats.messages_refused += 1;
            if let MessageError::RaftRefused { reason, .. } = error {
                self.stats.raft_refused.count(*reason);
            }
        } else {
            self.stats.messages_received += 1;
        }
        result
    }

    fn take_message(
        &mut self,
        now: Instant,
        from: NodeId,
        bytes: &[u8],
    ) -> Result<(), MessageError> {
        let message = wire::decode_from(from, bytes)?;
        if from.get() == 0 {
            return Err(DecodeError::InvalidValue {
                field: "sender",
                value: 0,
            }
            .into());
        }
        match message {
            LeaseMessage::Raft(m) => {
                if m.to != self.id.get() {
                    return Err(MessageError::Misrouted {
                        to: Some(NodeId::new(m.to)),
                    });
                }
                self.check_raft(from, &m)
                    .map_err(|reason| MessageError::RaftRefused { from, reason })?;
                // A snapshot's table and configuration are checked before raft-rs sees them:
                // raft-rs installs what it is given (and aborts on a configuration it cannot
                // restore), so nothing unreadable may reach it.
                if m.get_msg_type() == MessageType::MsgSnapshot {
                    let snapshot = m.get_snapshot();
                    let meta = snapshot.get_metadata();
                    wire::check_conf_state(meta.get_conf_state())?;
                    let (index, table) = wire::decode_table(&snapshot.data)?;
                    if index != meta.index || index == 0 {
                        return Err(DecodeError::InvalidValue {
                            field: "snapshot index",
                            value: index,
                        }
                        .into());
                    }
                    self.incoming_table = Some((index, table));
                }
                if self.raft.step(m).is_err() {
                    self.stats.raft_step_errors += 1;
                }
            }
            LeaseMessage::Request { request, op } => self.handle_request(now, from, request, op),
            LeaseMessage::Response { .. } | LeaseMessage::Notice { .. } => {
                return Err(MessageError::Misrouted { to: None });
            }
        }
        self.after_input(now);
        Ok(())
    }

    /// The rules a Raft message must meet before raft-rs steps it (raft-rs trusts its peers:
    /// it panics on some impossible values and follows any sender with a higher term). Each
    /// holds for every message an honest voter of this build sends; `docs/security.md` lists
    /// them with their tests.
    fn check_raft(&self, from: NodeId, m: &Message) -> Result<(), RaftRefusal> {
        use MessageType as T;
        // 1. Only voters of the current configuration speak Raft; a joining node also takes
        //    them from the voters it joins (`joining_via`) until a configuration that names it
        //    applies. It catches up from the start of the log, whose first configurations (the
        //    founders') may not name the leader that added it (a voter added later): taking only
        //    those, it would refuse the rest of the log from that leader and never catch up.
        //    The wire decoder wrote the transport-authenticated sender into `m.from`; they agree
        //    by construction.
        debug_assert_eq!(
            m.from,
            from.get(),
            "decode_from sets the authenticated sender"
        );
        let joining = !self.voters.contains(&self.id) && self.joining_via.contains(&from);
        if from == self.id || m.from != from.get() || !(self.voters.contains(&from) || joining) {
            return Err(RaftRefusal::NotVoter);
        }
        let kind = m.get_msg_type();
        let raft = &self.raft.raft;
        // 2. Terms: raft-rs reads term 0 as a local message (skipping every term check), and
        //    only a forwarded MsgReadIndex is sent without one.
        let term_ok = match kind {
            T::MsgReadIndex => m.term == 0,
            _ => m.term != 0 && m.term <= MAX_RAFT_TERM,
        };
        if !term_ok {
            return Err(RaftRefusal::Term { term: m.term });
        }
        if m.log_term > m.term && kind != T::MsgReadIndex {
            return Err(RaftRefusal::Term { term: m.log_term });
        }
        let snapshot_index = m.get_snapshot().get_metadata().index;
        if let Some(index) = [m.index, m.commit, m.reject_hint, snapshot_index]
            .into_iter()
            .find(|i| *i > MAX_RAFT_INDEX)
        {
            return Err(RaftRefusal::Index {
                index,
                last_index: raft.raft_log.last_index(),
            });
        }
        if m.priority != 0 {
            return Err(RaftRefusal::Priority {
                priority: m.priority,
            });
        }
        // 3. Types this group's voters never send to a peer: leadership moves only by the
        //    leader's own transfer (`transfer_leader` on the leader, then MsgTimeoutNow from it).
        match kind {
            T::MsgTransferLeader => {
                return Err(RaftRefusal::MessageType {
                    what: "MsgTransferLeader",
                });
            }
            T::MsgTimeoutNow if m.term != raft.term || raft.leader_id != from.get() => {
                return Err(RaftRefusal::MessageType {
                    what: "MsgTimeoutNow",
                });
            }
            _ => {}
        }
        // 4. What a message may carry: entries on appends (and the one entry of a ReadIndex
        //    and its answer), a snapshot on MsgSnapshot, no snapshot request (this group never
        //    sends one).
        let entries = m.get_entries();
        let carries = match kind {
            T::MsgAppend => true,
            T::MsgReadIndex | T::MsgReadIndexResp => {
                if entries.len() != 1 {
                    // raft-rs indexes `entries[0]` of a MsgReadIndex.
                    return Err(RaftRefusal::Entries {
                        position: entries.len(),
                    });
                }
                true
            }
            _ => false,
        };
        if !carries && !entries.is_empty() {
            return Err(RaftRefusal::Entries { position: 0 });
        }
        if m.has_snapshot() && kind != T::MsgSnapshot {
            return Err(RaftRefusal::Snapshot {
                term: m.get_snapshot().get_metadata().term,
            });
        }
        let last_index = raft.raft_log.last_index();
        if m.request_snapshot != 0 {
            return Err(RaftRefusal::Index {
                index: m.request_snapshot,
                last_index,
            });
        }
        // 5. Fields raft-rs uses as indices into its log. A message of a lower term is only
        //    answered (or ignored) by raft-rs, never read further.
        if m.term < raft.term && kind != T::MsgReadIndex {
            return Ok(());
        }
        match kind {
            // raft-rs commits to a heartbeat's `commit` as is (`to_commit ... is out of range`
            // panic): a leader sends at most what the follower acknowledged.
            T::MsgHeartbeat if m.commit > last_index => Err(RaftRefusal::Commit {
                commit: m.commit,
                last_index,
            }),
            // An append's `commit` is capped by raft-rs at the last new entry; its entries must
            // continue the log at `index + 1`, one index each, with terms (never 0) from
            // `log_term` up to the message's (raft-rs slices the entries by the conflicting
            // index).
            T::MsgAppend => {
                // Only index 0 has term 0: raft-rs reads the term of an index beyond its log as
                // 0 too, so a log term of 0 elsewhere (or an entry of term 0) would "match" and
                // commit past the log.
                if (m.index == 0) != (m.log_term == 0) {
                    return Err(RaftRefusal::Term { term: m.log_term });
                }
                let mut previous = (m.index, m.log_term);
                for (position, e) in entries.iter().enumerate() {
                    let follows = previous.0.checked_add(1) == Some(e.index)
                        && e.term != 0
                        && e.term >= previous.1
                        && e.term <= m.term
                        && e.get_entry_type() != EntryType::EntryConfChangeV2;
                    if !follows {
                        return Err(RaftRefusal::Entries { position });
                    }
                    previous = (e.index, e.term);
                }
                Ok(())
            }
            // A follower acknowledges at most what the leader sent (raft-rs moves its progress
            // to `index + 1`), and hints at most as far.
            T::MsgAppendResponse if raft.state == StateRole::Leader => {
                match [m.index, m.reject_hint]
                    .into_iter()
                    .find(|i| *i > last_index)
                {
                    Some(index) => Err(RaftRefusal::Index { index, last_index }),
                    None => Ok(()),
                }
            }
            T::MsgSnapshot => {
                let meta = m.get_snapshot().get_metadata();
                if meta.term == 0 || meta.term > m.term {
                    Err(RaftRefusal::Snapshot { term: meta.term })
                } else {
                    Ok(())
                }
            }
            _ => Ok(()),
        }
    }

    /// Runs every timer that is due at `now`.
    pub fn handle_timeout(&mut self, now: Instant) {
        if self.halted {
            return;
        }
        if self.timers.take_expired(Timer::RaftTick, now) {
            let interval = self.config.tick_interval();
            // A driver that was late gets the ticks it missed, up to one election timeout: a
            // voter paused for longer notices it lost touch without replaying the whole pause.
            let mut ticks = 0;
            while self.next_tick <= now && ticks < self.config.election_ticks() {
                self.raft.tick();
                self.redraw_election_timeout();
                self.next_tick += interval;
                ticks += 1;
            }
            self.count_ticks_leading(ticks);
            if self.next_tick <= now {
                self.next_tick = now + interval;
            }
            self.timers.set(Timer::RaftTick, self.next_tick);
            self.keep_leadership_apart_from_leases();
            self.leave_leadership_a_lagging_joiner_refuses();
        }
        if self.timers.take_expired(Timer::ExpirySweep, now) && self.is_leader() {
            self.propose_clock(now);
        }
        if self.timers.take_expired(Timer::Maintenance, now) {
            let horizon = scale(self.config.request_timeout(), 4);
            self.pending
                .retain(|_, since| now.saturating_duration_since(*since) < horizon);
            self.reads
                .retain(|_, r| now.saturating_duration_since(r.since) < horizon);
            // The client has tried elsewhere by now.
            let timeout = self.config.request_timeout();
            self.parked
                .retain(|_, (since, _)| now.saturating_duration_since(*since) < timeout);
            self.expire_snapshots(now);
            self.timers
                .set(Timer::Maintenance, now + self.config.request_timeout());
        }
        self.after_input(now);
    }

    /// A leader whose own node holds a lease hands Raft leadership to a caught-up voter that
    /// holds none. A crash of a node that is both Raft leader and holder costs an election and
    /// then a full TTL (a new leader keeps every lease live that long from its first stamp); a
    /// crash of either alone costs one or the other. Voters that all hold leases keep things
    /// as they are, so leadership never moves back and forth.
    fn keep_leadership_apart_from_leases(&mut self) {
        // Runs on every tick: scans, no allocation (a table may hold thousands of shards).
        let holds = |node: NodeId| self.table.iter().any(|(_, l)| l.holder == node);
        let own = self.local_id();
        if !self.is_leader() || self.is_transferring() || !holds(own) {
            return;
        }
        let last = self.raft.raft.raft_log.last_index();
        let prs = self.raft.raft.prs();
        let target = self.voters().find(|&v| {
            v != own
                && prs.get(v.get()).is_some_and(|pr| pr.matched == last)
                && !holds(v)
                && !self.refused_by_lagging_joiner(v)
        });
        if let Some(to) = target {
            self.stats.leadership_transfers += 1;
            self.raft.transfer_leader(to.get());
        }
    }

    fn count_ticks_leading(&mut self, ticks: u32) {
        let term = self.raft.raft.term;
        self.leading = match self.leading {
            _ if !self.is_leader() => None,
            Some((t, led)) if t == term => Some((t, led.saturating_add(ticks))),
            _ => Some((term, ticks)),
        };
    }

    /// Whether a voter of the configuration that has not acknowledged anything from this
    /// leader yet (its log may be empty) is a joining voter that does not take Raft messages
    /// from `node`: with `node` leading it would never catch up.
    fn refused_by_lagging_joiner(&self, node: NodeId) -> bool {
        let prs = self.raft.raft.prs();
        self.joiner_accepts.iter().any(|(joiner, accepts)| {
            *joiner != node
                && self.voters.contains(joiner)
                && !accepts.contains(&node)
                && prs.get(joiner.get()).is_some_and(|pr| pr.matched == 0)
        })
    }

    /// A joining voter takes Raft messages only from the voters it was given and those its log
    /// names (`check_raft`), so one added before its log reached it refuses a leader elected
    /// or handed leadership since (a voter added after it was configured): that leader's log
    /// never reaches it, and it counts toward the quorum without voting. Such a leader, once it
    /// has led for an election timeout (the joiner's chance to answer), hands leadership to a
    /// caught-up voter the joiner takes messages from; the joiner catches up from there and,
    /// its configuration applied, takes messages from every voter. (The joiner itself cannot
    /// take the unknown leader's word: only voters it knows may feed it a log.)
    fn leave_leadership_a_lagging_joiner_refuses(&mut self) {
        let own = self.id;
        let led_long_enough = self
            .leading
            .is_some_and(|(_, ticks)| ticks >= self.config.election_ticks());
        if !led_long_enough || self.is_transferring() || !self.refused_by_lagging_joiner(own) {
            return;
        }
        let holds = |node: NodeId| self.table.iter().any(|(_, l)| l.holder == node);
        let last = self.raft.raft.raft_log.last_index();
        let prs = self.raft.raft.prs();
        let acceptable: Vec<NodeId> = self
            .voters()
            .filter(|&v| {
                v != own
                    && prs.get(v.get()).is_some_and(|pr| pr.matched == last)
                    && !self.refused_by_lagging_joiner(v)
            })
            .collect();
        let to = acceptable
            .iter()
            .copied()
            .find(|v| !holds(*v))
            .or_else(|| acceptable.first().copied());
        if let Some(to) = to {
            self.stats.leadership_transfers += 1;
            self.raft.transfer_leader(to.get());
        }
    }

    /// Records what member `node`, a joining voter, takes Raft messages from (`None`: nothing
    /// known, or it is no longer a live member). The node keeps this current from membership
    /// (the joiner publishes it in its metadata).
    pub fn set_joiner_accepts(&mut self, node: NodeId, accepts: Option<BTreeSet<NodeId>>) {
        match accepts {
            Some(accepts) if node != self.id => {
                self.joiner_accepts.insert(node, accepts);
            }
            _ => {
                self.joiner_accepts.remove(&node);
            }
        }
    }

    /// Proposes adding `node` as a voter (one change at a time; leader only). The node should
    /// run [`join`](Self::join) before the change commits.
    pub fn add_voter(&mut self, now: Instant, node: NodeId) -> Result<(), GroupError> {
        self.change_voters(now, VoterChange { add: true, node })
    }

    /// Proposes removing the voter `node` (one change at a time; leader only).
    pub fn remove_voter(&mut self, now: Instant, node: NodeId) -> Result<(), GroupError> {
        self.change_voters(now, VoterChange { add: false, node })
    }

    fn change_voters(&mut self, now: Instant, change: VoterChange) -> Result<(), GroupError> {
        if !self.is_leader() {
            return Err(GroupError::NotLeader {
                leader: self.leader(),
            });
        }
        let is_voter = self.voters.contains(&change.node);
        if change.node.get() == 0 || is_voter == change.add {
            return Err(GroupError::Membership {
                id: change.node,
                is_voter,
            });
        }
        let len = self.voters.len();
        if (change.add && len >= MAX_VOTERS) || (!change.add && len <= 1) {
            return Err(GroupError::VoterSet {
                len: if change.add { len + 1 } else { len - 1 },
                max: MAX_VOTERS,
            });
        }
        if self.raft.raft.has_pending_conf() {
            return Err(GroupError::ChangeInProgress);
        }
        let mut cc = ConfChange::default();
        cc.set_change_type(change.change_type());
        cc.node_id = change.node.get();
        self.raft
            .propose_conf_change(wire::encode_voter_change(change), cc)
            .map_err(|_| GroupError::ChangeInProgress)?;
        self.after_input(now);
        Ok(())
    }

    /// Whether a membership change proposed by this leader is not applied yet (raft-rs takes
    /// one at a time). Always `false` on a follower, which never proposes one.
    pub fn has_pending_change(&self) -> bool {
        self.raft.raft.has_pending_conf()
    }

    /// The highest log index the leader knows `node` holds (its Raft progress), on the leader
    /// only: `None` on a follower or for a node that is not a voter.
    pub fn matched_index(&self, node: NodeId) -> Option<u64> {
        if !self.is_leader() {
            return None;
        }
        if node == self.id {
            return Some(self.raft.raft.raft_log.last_index());
        }
        self.raft.raft.prs().get(node.get()).map(|pr| pr.matched)
    }

    /// The highest log index this voter knows committed.
    pub fn commit_index(&self) -> u64 {
        self.raft.raft.raft_log.committed
    }

    /// Hands Raft leadership to another voter that holds the whole log (leader only), as a
    /// leader does before its own node is removed from the group: raft-rs keeps a leader that
    /// removed itself leading a group it is no longer in. Prefers a voter whose node holds no
    /// lease (a leader whose node holds one would hand leadership on, possibly back here).
    /// Returns the voter it hands to (the one already chosen, if a transfer runs), or `None` if
    /// this voter does not lead, or no other voter is caught up (ask again shortly).
    pub fn hand_over_leadership(&mut self, now: Instant) -> Option<NodeId> {
        if !self.is_leader() {
            return None;
        }
        if let Some(to) = self.raft.raft.lead_transferee {
            return Some(NodeId::new(to));
        }
        let own = self.id;
        let last = self.raft.raft.raft_log.last_index();
        let prs = self.raft.raft.prs();
        let holds = |node: NodeId| self.table.iter().any(|(_, l)| l.holder == node);
        let caught_up: Vec<NodeId> = self
            .voters()
            .filter(|&v| v != own && prs.get(v.get()).is_some_and(|pr| pr.matched == last))
            .collect();
        // A voter whose node holds no lease first: a new leader whose node holds one hands
        // leadership on to a voter that holds none (`keep_leadership_apart_from_leases`), which
        // could be this one again.
        let to = caught_up
            .iter()
            .copied()
            .find(|v| !holds(*v))
            .or_else(|| caught_up.first().copied())?;
        self.stats.leadership_transfers += 1;
        self.raft.transfer_leader(to.get());
        self.after_input(now);
        Some(to)
    }

    /// Writes the next datagram into `buf` (cleared first) and says where it goes.
    #[must_use = "a transmit not sent is a Raft message or a client reply lost"]
    pub fn poll_transmit(&mut self, _now: Instant, buf: &mut Vec<u8>) -> Option<Transmit> {
        let (to, message) = self.outbox.pop_front()?;
        self.stats.entries_cut += wire::encode(self.id, &message, buf) as u64;
        self.stats.datagrams_sent += 1;
        Some(Transmit { to, len: buf.len() })
    }

    /// When [`handle_timeout`](Self::handle_timeout) should next be called.
    #[must_use]
    pub fn poll_timeout(&self) -> Option<Instant> {
        if self.halted {
            return None;
        }
        self.timers.next()
    }

    /// The next group event for the host.
    #[must_use]
    pub fn poll_event(&mut self) -> Option<Sequenced<GroupEvent>> {
        self.events.poll()
    }

    /// The events after `after` that are still kept, for a subscriber that resumes.
    pub fn events_since(
        &self,
        after: EventSeq,
    ) -> Result<impl Iterator<Item = &Sequenced<GroupEvent>>, ResumeError> {
        self.events.since(after)
    }

    /// This voter's id.
    pub fn local_id(&self) -> NodeId {
        self.id
    }

    /// The Raft leader this voter knows of.
    pub fn leader(&self) -> Option<NodeId> {
        match self.raft.raft.leader_id {
            0 => None,
            id => Some(NodeId::new(id)),
        }
    }

    /// Whether raft-rs holds this voter as leader. This is a belief, not a lease: an isolated
    /// leader believes it until check_quorum steps it down. The lease table is never read on
    /// the strength of it (decisions come from committed entries, reads from ReadIndex).
    pub fn is_leader(&self) -> bool {
        self.raft.raft.state == StateRole::Leader
    }

    /// The current Raft term.
    pub fn term(&self) -> Term {
        Term::new(self.raft.raft.term)
    }

    /// The voters, as of the last applied membership change.
    pub fn voters(&self) -> impl Iterator<Item = NodeId> + '_ {
        self.voters.iter().copied()
    }

    /// The lease table as of [`applied_index`](Self::applied_index). A follower's copy may lag;
    /// it is never ahead of the committed log.
    pub fn table(&self) -> &LeaseTable {
        &self.table
    }

    /// The last log index applied to the table.
    pub fn applied_index(&self) -> u64 {
        self.applied
    }

    /// Log entries held (from the last compaction on, applied or not).
    pub fn log_len(&self) -> usize {
        self.raft.store().len()
    }

    /// Where the log held starts and ends.
    pub fn log_bounds(&self) -> LogBounds {
        LogBounds::of(self.raft.store())
    }

    /// Counters for metrics.
    pub fn stats(&self) -> GroupStats {
        self.stats
    }

    /// The configuration in force.
    pub fn config(&self) -> &LeaseConfig {
        &self.config
    }

    /// raft-rs's safety flags, as configured.
    pub fn raft_safety_flags(&self) -> RaftSafetyFlags {
        RaftSafetyFlags {
            pre_vote: self.raft.raft.pre_vote,
            check_quorum: self.raft.raft.check_quorum,
        }
    }

    #[cfg(test)]
    pub(crate) fn crash_after_next_persist(&mut self) {
        self.crash_after_persist = true;
    }

    /// Whether the test hook stopped this voter.
    #[cfg(test)]
    pub(crate) fn is_halted(&self) -> bool {
        self.halted
    }

    #[cfg(test)]
    pub(crate) fn last_log_index(&self) -> u64 {
        self.raft.raft.raft_log.last_index()
    }

    #[cfg(test)]
    pub(crate) fn randomized_election_ticks(&self) -> usize {
        self.raft.raft.randomized_election_timeout()
    }

    // -----------------------------------------------------------------------------------------
    // Requests
    // -----------------------------------------------------------------------------------------

    fn handle_request(&mut self, now: Instant, client: NodeId, request: RequestId, op: Op) {
        if !self.is_leader() || self.is_transferring() {
            match self.leader().filter(|l| *l != self.id) {
                Some(leader) => self.send(
                    client,
                    LeaseMessage::Response {
                        request,
                        reply: Reply::NotLeader {
                            leader: Some(leader),
                        },
                    },
                ),
                None => self.park(now, client, request, op),
            }
            return;
        }
        if let Op::Query { scope } = op {
            self.start_read(now, client, request, scope);
            return;
        }
        let refuse = |refusal| LeaseMessage::Response {
            request,
            reply: Reply::Outcome(Outcome::Refused(refusal)),
        };
        if let Some(ttl) = op.ttl()
            && !(self.config.min_ttl()..=self.config.max_ttl()).contains(&ttl)
        {
            self.send(client, refuse(Refusal::InvalidTtl));
            return;
        }
        if self.pending.contains_key(&(client, request)) {
            return; // A retry of a proposal still in flight: its commit answers both.
        }
        if self.pending.len() >= self.config.max_pending_requests() as usize {
            self.send(client, refuse(Refusal::Overloaded));
            return;
        }
        let command = Command {
            at: now,
            proposer: self.id,
            body: Body::Client {
                client,
                request,
                op,
            },
        };
        if self
            .raft
            .propose(Vec::new(), wire::encode_command(&command))
            .is_ok()
        {
            self.stats.proposals += 1;
            self.pending.insert((client, request), now);
        } else {
            // Leadership transfer in progress, or the uncommitted budget is spent.
            self.send(
                client,
                LeaseMessage::Response {
                    request,
                    reply: Reply::NotLeader { leader: None },
                },
            );
        }
    }

    /// Keeps a request this voter can neither serve nor redirect (no leader known, or its own
    /// leadership transfer running) until [`release_parked`](Self::release_parked) can.
    fn park(&mut self, now: Instant, client: NodeId, request: RequestId, op: Op) {
        let full = self.parked.len() >= self.config.max_pending_requests() as usize;
        if full && !self.parked.contains_key(&(client, request)) {
            // The old answer: the client's deadline retries elsewhere.
            self.send(
                client,
                LeaseMessage::Response {
                    request,
                    reply: Reply::NotLeader { leader: None },
                },
            );
            return;
        }
        self.parked.insert((client, request), (now, op));
    }

    /// Serves the parked requests once this voter leads with no transfer running, or names the
    /// leader to their clients once one is known, so that they ask it at once.
    fn release_parked(&mut self, now: Instant) {
        if self.parked.is_empty() || self.halted {
            return;
        }
        let serve = self.is_leader() && !self.is_transferring();
        let leader = self.leader().filter(|l| *l != self.id);
        if !serve && leader.is_none() {
            return;
        }
        for ((client, request), (_, op)) in core::mem::take(&mut self.parked) {
            match leader {
                Some(leader) if !serve => self.send(
                    client,
                    LeaseMessage::Response {
                        request,
                        reply: Reply::NotLeader {
                            leader: Some(leader),
                        },
                    },
                ),
                _ => self.handle_request(now, client, request, op),
            }
        }
        if serve {
            self.process_ready(now);
        }
    }

    /// Whether this leader is handing leadership to another voter (raft-rs drops proposals
    /// meanwhile).
    fn is_transferring(&self) -> bool {
        self.raft.raft.lead_transferee.is_some()
    }

    fn start_read(&mut self, now: Instant, client: NodeId, request: RequestId, scope: Scope) {
        if self.reads.len() >= self.config.max_pending_requests() as usize {
            self.send(
                client,
                LeaseMessage::Response {
                    request,
                    reply: Reply::Outcome(Outcome::Refused(Refusal::Overloaded)),
                },
            );
            return;
        }
        let id = self.next_read;
        self.next_read += 1;
        self.reads.insert(
            id,
            PendingRead {
                client,
                request,
                scope,
                since: now,
                index: None,
            },
        );
        self.raft.read_index(id.to_be_bytes().to_vec());
    }

    fn propose_clock(&mut self, now: Instant) {
        let command = Command {
            at: now,
            proposer: self.id,
            body: Body::Clock,
        };
        if self
            .raft
            .propose(Vec::new(), wire::encode_command(&command))
            .is_ok()
        {
            self.stats.proposals += 1;
            self.clock_due = false;
            self.last_clock_proposal = now;
        }
    }

    // -----------------------------------------------------------------------------------------
    // The Ready loop
    // -----------------------------------------------------------------------------------------

    fn after_input(&mut self, now: Instant) {
        self.redraw_election_timeout();
        self.process_ready(now);
        self.observe_leadership(now);
        self.release_parked(now);
        if self.is_leader() && self.clock_due {
            self.propose_clock(now);
            self.process_ready(now);
        }
        // A snapshot raft-rs did not install in this input (stale, or already covered by the
        // log) never will be: its decoded table is not kept.
        self.incoming_table = None;
        self.arm_expiry_sweep();
    }

    /// raft-rs resets its randomized election timeout (from the OS RNG) whenever it changes
    /// term or role (`Raft::reset`, called by every `become_*` except `become_pre_candidate`).
    /// Every such reset changes `(term, role)`, so drawing again from our RNG whenever that
    /// pair changed since the last draw overrides every OS draw before the next tick reads it.
    fn redraw_election_timeout(&mut self) {
        let key = (self.raft.raft.term, self.raft.raft.state);
        if self.drawn_for == Some(key) {
            return;
        }
        self.drawn_for = Some(key);
        let min = self.config.election_ticks() as usize;
        let ticks = min + self.rng.index(min);
        self.raft.raft.set_randomized_election_timeout(ticks);
    }

    fn process_ready(&mut self, now: Instant) {
        for _ in 0..MAX_READY_ROUNDS {
            if self.halted || !self.raft.has_ready() {
                return;
            }
            let mut rd = self.raft.ready();
            // 1. Messages that need no persistence (a leader's appends and heartbeats).
            self.queue_raft(now, rd.take_messages());
            let snapshot_index = rd.snapshot().get_metadata().index;
            // 2. Persist the snapshot, entries and hard state.
            let persisted = Persisted::write(self.raft.mut_store(), rd);
            #[cfg(test)]
            if self.crash_after_persist {
                self.halted = true;
                self.outbox.clear();
                drop(persisted);
                return;
            }
            // 3. Send what waited for persistence.
            let (messages, mut rd) = persisted.into_parts();
            self.queue_raft(now, messages);
            // 4. Install a received snapshot's table, apply committed entries, then note
            //    confirmed reads.
            if snapshot_index != 0 {
                self.install_table(now, snapshot_index);
            }
            let read_states = rd.take_read_states();
            self.apply(now, rd.take_committed_entries());
            for rs in read_states {
                let Ok(ctx) = <[u8; 8]>::try_from(rs.request_ctx.as_slice()) else {
                    continue;
                };
                if let Some(read) = self.reads.get_mut(&u64::from_be_bytes(ctx)) {
                    read.index = Some(rs.index);
                }
            }
            // 5. Advance; a leader may get more messages and entries committed meanwhile.
            let mut light = self.raft.advance(rd);
            if let Some(commit) = light.commit_index() {
                self.raft.mut_store().set_commit(commit);
            }
            self.queue_raft(now, light.take_messages());
            self.apply(now, light.take_committed_entries());
            self.raft.advance_apply();
            self.maybe_compact();
            self.answer_reads(now);
            self.redraw_election_timeout();
        }
    }

    fn queue_raft(&mut self, now: Instant, messages: Vec<Message>) {
        for m in messages {
            let to = NodeId::new(m.to);
            let snapshot = m.get_msg_type() == MessageType::MsgSnapshot;
            if !wire::is_sendable(&m) {
                debug_assert!(false, "raft-rs produced an unsendable message: {m:?}");
                if snapshot {
                    self.raft.report_snapshot(to.get(), SnapshotStatus::Failure);
                }
                continue;
            }
            if snapshot {
                self.stats.snapshots_sent += 1;
                self.snapshots_out.insert(to, now);
            }
            self.send(to, LeaseMessage::Raft(m));
        }
    }

    /// Reports to raft-rs the snapshots that no acknowledgement followed within two request
    /// timeouts (lost on the way, or refused): it probes the follower again and sends another.
    /// The transport cannot say whether one arrived, so silence is the failure signal.
    fn expire_snapshots(&mut self, now: Instant) {
        if !self.is_leader() {
            self.snapshots_out.clear();
            return;
        }
        let timeout = scale(self.config.request_timeout(), 2);
        let due: Vec<NodeId> = self
            .snapshots_out
            .iter()
            .filter(|(_, since)| now.saturating_duration_since(**since) >= timeout)
            .map(|(to, _)| *to)
            .collect();
        for to in due {
            self.snapshots_out.remove(&to);
            let waiting = self
                .raft
                .raft
                .prs()
                .get(to.get())
                .is_some_and(|pr| pr.state == ProgressState::Snapshot);
            if waiting {
                self.stats.snapshots_failed += 1;
                self.raft.report_snapshot(to.get(), SnapshotStatus::Failure);
            }
        }
    }

    /// Replaces the table with the snapshot raft-rs just installed at `index`.
    fn install_table(&mut self, now: Instant, index: u64) {
        let table = match self.incoming_table.take() {
            Some((i, table)) if i == index => table,
            _ => {
                wire::decode_table(&self.raft.store().snapshot_ref().data)
                    .expect("every snapshot stepped into raft-rs was decoded first")
                    .1
            }
        };
        self.table = table;
        self.applied = index;
        self.conf_changed = false;
        self.stats.snapshots_installed += 1;
        let voters: BTreeSet<NodeId> = self
            .raft
            .store()
            .conf_state()
            .voters
            .iter()
            .map(|v| NodeId::new(*v))
            .collect();
        if voters != self.voters {
            self.voters = voters;
            self.events.push(
                now,
                GroupEvent::VotersChanged {
                    voters: self.voters.iter().copied().collect(),
                },
            );
        }
        self.events.push(
            now,
            GroupEvent::SnapshotInstalled {
                index,
                leases: self.table.len(),
            },
        );
    }

    /// Takes a snapshot and compacts the log once `compact_after_entries` entries were applied
    /// since the last snapshot; takes a fresh snapshot (without compacting) after a membership
    /// change once the log has been compacted, so that a joining voter is in the snapshot it is
    /// sent.
    fn maybe_compact(&mut self) {
        let threshold = u64::from(self.config.compact_after_entries());
        let snapshot_index = self.raft.store().snapshot_ref().get_metadata().index;
        let due = self.applied >= snapshot_index + threshold;
        let refresh = self.conf_changed && snapshot_index > 0 && self.applied > snapshot_index;
        if !due && !refresh {
            return;
        }
        let data = wire::encode_table(&self.table, self.applied);
        let applied = self.applied;
        let store = self.raft.mut_store();
        store.set_snapshot(applied, data);
        self.stats.snapshots_taken += 1;
        self.conf_changed = false;
        if due {
            store.compact(applied.saturating_sub(threshold / 4));
            self.stats.compactions += 1;
        }
    }

    fn send(&mut self, to: NodeId, message: LeaseMessage) {
        if self.outbox.len() >= MAX_GROUP_OUTBOX_DATAGRAMS {
            self.stats.outbox_dropped += 1;
            return;
        }
        self.outbox.push_back((to, message));
    }

    fn apply(&mut self, now: Instant, entries: Vec<Entry>) {
        for e in entries {
            self.applied = e.index;
            self.stats.entries_applied += 1;
            match e.get_entry_type() {
                EntryType::EntryNormal if e.data.is_empty() => {} // a new leader's empty entry
                EntryType::EntryNormal => match wire::decode_command(&e.data) {
                    Ok(command) => self.apply_command(now, e.index, Term::new(e.term), command),
                    Err(_) => self.stats.entries_skipped += 1,
                },
                EntryType::EntryConfChange => match wire::decode_voter_change(&e.context) {
                    Ok(change) => self.apply_voter_change(now, change),
                    Err(_) => self.stats.entries_skipped += 1,
                },
                EntryType::EntryConfChangeV2 => self.stats.entries_skipped += 1,
            }
        }
    }

    fn apply_voter_change(&mut self, now: Instant, change: VoterChange) {
        let mut cc = ConfChange::default();
        cc.set_change_type(change.change_type());
        cc.node_id = change.node.get();
        match self.raft.apply_conf_change(&cc) {
            Ok(cs) => {
                self.voters = cs.voters.iter().map(|v| NodeId::new(*v)).collect();
                self.raft.mut_store().set_conf_state(cs);
                self.conf_changed = true;
                self.events.push(
                    now,
                    GroupEvent::VotersChanged {
                        voters: self.voters.iter().copied().collect(),
                    },
                );
            }
            Err(_) => self.stats.entries_skipped += 1,
        }
    }

    fn apply_command(&mut self, now: Instant, index: u64, term: Term, command: Command) {
        let mut changes = Vec::new();
        let outcome = self.table.apply(index, term, &command, &mut changes);
        for change in changes {
            let event = match change {
                Change::Granted {
                    scope,
                    holder,
                    token,
                    term,
                } => GroupEvent::Granted {
                    scope,
                    holder,
                    token,
                    term,
                },
                Change::Released {
                    scope,
                    holder,
                    token,
                } => GroupEvent::Released {
                    scope,
                    holder,
                    token,
                },
                Change::Expired {
                    scope,
                    holder,
                    token,
                } => GroupEvent::Expired {
                    scope,
                    holder,
                    token,
                },
            };
            self.events.push(now, event);
        }
        let (
            Some(outcome),
            Body::Client {
                client,
                request,
                op,
            },
        ) = (outcome, command.body)
        else {
            return;
        };
        // Only the proposer answers, and only while it remembers the request (not after a
        // restart, when the client has long retried elsewhere).
        if command.proposer != self.id || self.pending.remove(&(client, request)).is_none() {
            return;
        }
        if let (Outcome::Transferred { to, token }, Op::Transfer { scope, ttl, .. }) =
            (&outcome, &op)
        {
            self.send(
                *to,
                LeaseMessage::Notice {
                    scope: scope.clone(),
                    token: *token,
                    term,
                    ttl: *ttl,
                },
            );
        }
        self.send(
            client,
            LeaseMessage::Response {
                request,
                reply: Reply::Outcome(outcome),
            },
        );
    }

    /// Answers the reads whose ReadIndex is applied, from the table at that point.
    fn answer_reads(&mut self, now: Instant) {
        let ready: Vec<u64> = self
            .reads
            .iter()
            .filter(|(_, r)| r.index.is_some_and(|i| i <= self.applied))
            .map(|(id, _)| *id)
            .collect();
        for id in ready {
            let Some(read) = self.reads.remove(&id) else {
                continue;
            };
            let in_my_clock = self.table.clock_term() == self.term();
            let lease = self.table.get(&read.scope).map(|l| LeaseInfo {
                holder: l.holder,
                term: l.term,
                token: l.token,
                expires_in: if in_my_clock {
                    l.expires_at.saturating_duration_since(now)
                } else {
                    l.ttl
                },
            });
            self.send(
                read.client,
                LeaseMessage::Response {
                    request: read.request,
                    reply: Reply::Lease(lease),
                },
            );
        }
    }

    fn observe_leadership(&mut self, now: Instant) {
        let current = (self.leader(), self.term());
        if self.seen_leader == Some(current) {
            return;
        }
        self.seen_leader = Some(current);
        self.events.push(
            now,
            GroupEvent::LeaderChanged {
                leader: current.0,
                term: current.1,
            },
        );
        self.clock_due = current.0 == Some(self.id);
        if !self.is_leader() {
            // Proposals of a lost term may still commit; their answers come from the table's
            // sessions when clients retry. Reads must be confirmed again elsewhere.
            self.reads.clear();
        }
    }

    /// The leader proposes a clock entry when the earliest lease expiry (in its own clock, once
    /// its first stamp is applied) passes, so the table expires it without waiting for traffic.
    fn arm_expiry_sweep(&mut self) {
        let due = if self.is_leader() && self.table.clock_term() == self.term() {
            self.table
                .next_expiry()
                .map(|expiry| expiry.max(self.last_clock_proposal + self.config.tick_interval()))
        } else {
            None
        };
        match due {
            Some(at) => self.timers.set(Timer::ExpirySweep, at),
            None => self.timers.stop(Timer::ExpirySweep),
        }
    }
}

impl fmt::Debug for LeaseGroup {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LeaseGroup")
            .field("id", &self.id)
            .field("term", &self.term())
            .field("leader", &self.leader())
            .field("voters", &self.voters)
            .field("applied", &self.applied)
            .field("leases", &self.table.len())
            .finish_non_exhaustive()
    }
}
