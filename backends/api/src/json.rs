//! The JSON bodies of the control API's HTTP routes: what `meshkit-control` answers and
//! `meshkit-client`, `meshctl` and the tests parse. Plain serde structs, built by the server
//! from a node's state (the builders live beside the handlers); changing a field here changes
//! the wire format, which the process tests pin.
//!
//! * Membership views: [`PeersResponse`] (`GET /meshkit/peers`, filtered by [`PeersQuery`]),
//!   [`ClustersResponse`], [`VersionsResponse`], [`Readiness`] (`GET /readyz`).
//! * Leadership: [`LeadershipView`] (`GET /meshkit/leaders`), the feed's [`FeedEntry`]
//!   (`GET /control/events/leadership`), [`ShardsResponse`] (`GET /meshkit/shards`), lease
//!   sessions ([`AcquireRequest`], [`SessionRequest`], [`SessionResponse`], [`HeldBody`]),
//!   transfers, drain and resume, [`RebalanceRequest`] / [`RebalanceResponse`] and the
//!   [`MisdirectedBody`] of a node whose coordinator does not act.
//! * Membership operations: join, leave, force-leave, voter changes ([`VoterRedirect`]).
//! * Task queues (`[queues]`): enqueue, lease, heartbeat, complete, fail, drain and restore
//!   ([`EnqueueRequest`], [`LeaseRequest`], [`TokenRequest`], [`FailRequest`],
//!   [`QueueDrainRequest`], [`QueueRestoreRequest`] and their answers), [`QueuesResponse`]
//!   (`GET /control/queues`), and the original system's views: [`BackpressureJson`], [`LeaseHealthResponse`],
//!   [`CheckpointsResponse`].
//! * Errors: [`ErrorBody`] (`{"error": "..."}`) and [`DeniedBody`] (401 and 403).

use std::collections::BTreeMap;

use meshkit::lease::FencingToken;
use meshkit::lease::Scope;
use meshkit::membership::MemberState;
use meshkit::queue::{ItemId, LeaseId, OwnershipToken};
use meshkit::shard::ShardId;
use serde::{Deserialize, Serialize};

// ---- Membership views ----

/// The body of `GET /meshkit/peers`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PeersResponse {
    /// The answering node's id.
    pub local: u64,
    /// The members it knows that match the filter, itself included, in id order; one page.
    pub peers: Vec<PeerJson>,
    /// Members matching the filter, over all pages.
    #[serde(default)]
    pub total: usize,
    /// The `after` of the next page, if there is one.
    #[serde(default)]
    pub next_after: Option<u64>,
}

/// One member in [`PeersResponse`].
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PeerJson {
    /// Its node id.
    pub id: u64,
    /// `alive`, `suspect`, `dead` or `left`.
    pub state: String,
    /// Its incarnation number.
    pub incarnation: u32,
    /// Smoothed round-trip time of direct probes, once measured.
    pub rtt_ms: Option<f64>,
    /// Its metadata (values as lossy UTF-8).
    pub metadata: BTreeMap<String, String>,
    /// The address its transport is dialled at, when known.
    pub addr: Option<String>,
    /// Seconds since the answering node saw it change state.
    #[serde(default)]
    pub last_change_s_ago: f64,
}

/// Page size when the query names none.
pub const DEFAULT_PAGE: usize = 500;

/// Largest page a query may ask for.
pub const MAX_PAGE: usize = 10_000;

/// Filter and page of `GET /meshkit/peers`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PeersQuery {
    /// Only members in this state (`alive`, `suspect`, `dead`, `left`).
    pub state: Option<String>,
    /// Only members that declare this cluster.
    pub cluster: Option<String>,
    /// Only members that declare this region.
    pub region: Option<String>,
    /// Only members with a larger id (the previous page's `next_after`).
    pub after: Option<u64>,
    /// Page size (default [`DEFAULT_PAGE`], at most [`MAX_PAGE`]).
    pub limit: Option<usize>,
}

impl PeersQuery {
    /// The page size asked for, within bounds.
    pub fn limit(&self) -> usize {
        self.limit.unwrap_or(DEFAULT_PAGE).clamp(1, MAX_PAGE)
    }

    /// Checks values serde cannot: the state's name and the page size.
    pub fn check(&self) -> Result<(), String> {
        if let Some(state) = &self.state
            && !["alive", "suspect", "dead", "left"].contains(&state.as_str())
        {
            return Err(format!(
                "query `state` = {state:?}: expected alive, suspect, dead or left"
            ));
        }
        if self.limit.is_some_and(|l| l == 0 || l > MAX_PAGE) {
            return Err(format!("query `limit`: expected 1..={MAX_PAGE}"));
        }
        Ok(())
    }
}

/// Member counts by state.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct StateCounts {
    /// Alive members.
    pub alive: usize,
    /// Suspected members.
    pub suspect: usize,
    /// Members declared dead.
    pub dead: usize,
    /// Members that left.
    pub left: usize,
}

impl StateCounts {
    /// Counts one member in `state`.
    pub fn count(&mut self, state: MemberState) {
        match state {
            MemberState::Alive => self.alive += 1,
            MemberState::Suspect => self.suspect += 1,
            MemberState::Dead => self.dead += 1,
            MemberState::Left => self.left += 1,
        }
    }
}

/// One cluster in [`ClustersResponse`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClusterJson {
    /// Its name (`""` for members that declare none).
    pub name: String,
    /// Members by state.
    pub states: StateCounts,
    /// Members by declared region (`""`: none declared).
    pub regions: BTreeMap<String, usize>,
    /// The holder of `global-control` if it is a member of this cluster, as this node knows it.
    pub leader: Option<u64>,
}

/// The body of `GET /meshkit/clusters`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClustersResponse {
    /// The answering node.
    pub local: u64,
    /// Clusters by name.
    pub clusters: Vec<ClusterJson>,
}

/// One version in [`VersionsResponse`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct VersionCount {
    /// The version (`""`: not published, e.g. a member whose metadata has not arrived yet).
    pub version: String,
    /// Members (alive or suspect) that publish it.
    pub members: usize,
}

/// The body of `GET /meshkit/versions`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct VersionsResponse {
    /// The answering node.
    pub local: u64,
    /// Software versions (`meshkitd` releases) in the mesh.
    pub software: Vec<VersionCount>,
    /// Wire protocol versions (`membership/lease`).
    pub wire: Vec<VersionCount>,
    /// Whether more than one software or wire version is present.
    pub mixed: bool,
}

/// The body of `GET /readyz`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Readiness {
    /// Whether the node is ready for traffic.
    pub ready: bool,
    /// Why not, if not.
    pub reasons: Vec<String>,
}

// ---- Leadership ----

/// One node's leadership state (the body of `GET /meshkit/leaders`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LeadershipView {
    /// The node.
    pub node: u64,
    /// The voters it talks to.
    pub voters: Vec<u64>,
    /// Its Raft state, if it is a voter.
    pub raft: Option<RaftView>,
    /// A voter's applied lease table (committed state, possibly an entry behind the leader's):
    /// empty on non-voters.
    pub table: Vec<TableLease>,
    /// Leases this node holds.
    pub held: Vec<HeldLease>,
    /// Scopes it contends for.
    pub campaign: Vec<String>,
    /// Sequence number of its last feed entry (0: none yet).
    pub last_seq: u64,
    /// Its shards (`[shards]`): absent without the section.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shards: Option<ShardStatus>,
}

/// A voter's view of the Raft group.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RaftView {
    /// The leader it knows of.
    pub leader: Option<u64>,
    /// Its term.
    pub term: u64,
    /// The voters.
    pub voters: Vec<u64>,
    /// Index of the last applied entry.
    pub applied_index: u64,
    /// Index of the newest snapshot of the lease table (0: none yet).
    #[serde(default)]
    pub snapshot_index: u64,
    /// Raft log entries held (the log is compacted after `compact_after_entries`).
    #[serde(default)]
    pub log_entries: u64,
    /// The highest log index it knows committed.
    #[serde(default)]
    pub commit_index: u64,
    /// A voter change this leader proposed is not applied yet (one at a time).
    #[serde(default)]
    pub change_pending: bool,
    /// On the leader: how far each voter's log is known to reach (Raft's `matched`), so that
    /// an operator sees a voter just added catch up.
    #[serde(default)]
    pub progress: Vec<VoterProgress>,
}

/// How far one voter's log is known to reach, as the leader sees it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct VoterProgress {
    /// The voter.
    pub id: u64,
    /// The highest log index it is known to hold.
    pub matched: u64,
}

/// A lease in a voter's applied table, as [`LeadershipView`] shows it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TableLease {
    /// The scope.
    pub scope: String,
    /// Its holder.
    pub holder: u64,
    /// The grant's fencing token.
    pub token: u64,
    /// The grant's term.
    pub term: u64,
    /// Time left as of the last applied entry's leader stamp, in milliseconds.
    pub expires_in_ms: u64,
}

/// A lease this node holds.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct HeldLease {
    /// The scope.
    pub scope: String,
    /// Its fencing token.
    pub token: u64,
    /// The grant's term.
    pub term: u64,
    /// Time left by this node's clock, in milliseconds.
    pub expires_in_ms: u64,
    /// A transfer of it is in flight.
    pub transferring: bool,
}

/// One numbered entry of the leadership feed.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FeedEntry {
    /// Per node, strictly increasing without gaps, from 1.
    pub seq: u64,
    /// The node whose feed this is.
    pub node: u64,
    /// Wall-clock time it was recorded, in Unix milliseconds.
    pub unix_ms: u64,
    /// What happened.
    #[serde(flatten)]
    pub change: Change,
}

/// What a [`FeedEntry`] records.
///
/// Exhaustive on purpose: the control API (`meshkit-control`) gives every change its gRPC
/// form, and the compiler holds it to every variant only if the enum is exhaustive.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Change {
    /// This node acquired `scope` (by its own ask, or handed over).
    Acquired {
        /// The scope.
        scope: String,
        /// The fencing token of the grant.
        token: u64,
        /// The Raft term of the grant.
        term: u64,
    },
    /// This node renewed `scope`.
    Renewed {
        /// The scope.
        scope: String,
        /// Its (unchanged) token.
        token: u64,
    },
    /// This node lost `scope` (a refused renewal, an unknown transfer outcome).
    Lost {
        /// The scope.
        scope: String,
        /// The token no longer valid.
        token: u64,
        /// Why.
        reason: String,
    },
    /// This node handed `scope` to `to`.
    Transferred {
        /// The scope.
        scope: String,
        /// The token given up.
        token: u64,
        /// The new holder.
        to: u64,
        /// The new holder's token.
        new_token: u64,
    },
    /// This node's lease on `scope` ran out.
    Expired {
        /// The scope.
        scope: String,
        /// The token that expired.
        token: u64,
    },
    /// This node released `scope`.
    Released {
        /// The scope.
        scope: String,
        /// The token given up.
        token: u64,
    },
    /// (voter) The Raft leader changed or became unknown.
    RaftLeader {
        /// The leader, if known.
        leader: Option<u64>,
        /// The term.
        term: u64,
    },
    /// (voter) A committed entry granted `scope` to `holder`.
    Granted {
        /// The scope.
        scope: String,
        /// The new holder.
        holder: u64,
        /// The grant's token.
        token: u64,
        /// The grant's term.
        term: u64,
    },
    /// (voter) A committed entry released `scope`.
    LeaseReleased {
        /// The scope.
        scope: String,
        /// The former holder.
        holder: u64,
        /// The token released.
        token: u64,
    },
    /// (voter) `holder`'s lease on `scope` expired.
    LeaseExpired {
        /// The scope.
        scope: String,
        /// The former holder.
        holder: u64,
        /// The token that expired.
        token: u64,
    },
    /// (voter) The voter set changed.
    Voters {
        /// The voters now.
        voters: Vec<u64>,
    },
}

impl Change {
    /// Whether the change is about a shard's lease (`shard/{namespace}/{id}`, see
    /// [`Scope::as_shard`]).
    pub fn is_shard(&self) -> bool {
        self.scope().is_some_and(is_shard_scope)
    }

    /// The scope the change is about, if any.
    pub fn scope(&self) -> Option<&str> {
        match self {
            Self::Acquired { scope, .. }
            | Self::Renewed { scope, .. }
            | Self::Lost { scope, .. }
            | Self::Transferred { scope, .. }
            | Self::Expired { scope, .. }
            | Self::Released { scope, .. }
            | Self::Granted { scope, .. }
            | Self::LeaseReleased { scope, .. }
            | Self::LeaseExpired { scope, .. } => Some(scope),
            Self::RaftLeader { .. } | Self::Voters { .. } => None,
        }
    }

    /// The SSE event name.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Acquired { .. } => "acquired",
            Self::Renewed { .. } => "renewed",
            Self::Lost { .. } => "lost",
            Self::Transferred { .. } => "transferred",
            Self::Expired { .. } => "expired",
            Self::Released { .. } => "released",
            Self::RaftLeader { .. } => "raft_leader",
            Self::Granted { .. } => "granted",
            Self::LeaseReleased { .. } => "lease_released",
            Self::LeaseExpired { .. } => "lease_expired",
            Self::Voters { .. } => "voters",
        }
    }
}

/// Whether `scope` (as the views and the feed write it) names a shard's lease: a valid scope
/// whose [`Scope::as_shard`] is a shard.
pub fn is_shard_scope(scope: &str) -> bool {
    Scope::new(scope).is_ok_and(|s| s.as_shard().is_some())
}

// ---- Shards ----

/// The body of `GET /meshkit/shards`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShardsResponse {
    /// The answering node.
    pub local: u64,
    /// Whether the list is the voters' applied table (complete) or only what this node owns
    /// (it is not a voter).
    pub complete: bool,
    /// Shards with an owner, in scope order.
    pub shards: Vec<ShardOwner>,
    /// The node's shard state (`[shards]`): the configured count, the coordinator it knows,
    /// its member side and, on the Raft leader, the coordinator's moves under way and load.
    /// Absent without `[shards]`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<ShardStatus>,
}

/// One shard's owner in [`ShardsResponse`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShardOwner {
    /// The shard's scope, `shard/{namespace}/{id}`.
    pub scope: String,
    /// Its owner (the lease holder).
    pub owner: u64,
    /// The fencing token of the owner's grant: present it with every write to the shard.
    pub token: u64,
    /// Time left on the lease, in milliseconds (see [`LeadershipView`] for the clock).
    pub expires_in_ms: u64,
}

/// The shards as one node sees them (`[shards]`): its side as a member and, on the Raft
/// leader, the coordinator's plan and moves under way.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShardStatus {
    /// Shards the configuration names.
    pub configured: usize,
    /// The node whose coordinator acts, as this node knows it: the Raft leader on a voter,
    /// the sender of the last instruction followed elsewhere.
    pub coordinator_node: Option<u64>,
    /// This node as a member (every node with `[shards]` and leadership is one).
    pub member: Option<ShardMemberStatus>,
    /// The coordinator, while this node's acts (it is the Raft leader).
    pub coordinator: Option<CoordinatorStatus>,
    /// The counters of this node's coordinator (voters only), acting or not: they only grow,
    /// and count what it did while it acted.
    pub counters: Option<CoordinatorCounters>,
}

/// A voter's coordinator counters in [`ShardStatus`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CoordinatorCounters {
    /// Plans made.
    pub plans: u64,
    /// Moves started.
    pub moves_started: u64,
    /// Moves done (the grant to the target applied).
    pub moves_completed: u64,
    /// Moves dropped: too slow, or their target left the pool.
    pub moves_failed: u64,
}

/// A member's side of [`ShardStatus`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShardMemberStatus {
    /// `member` (takes shards), `draining` (hands them away) or `out` (not announced).
    pub role: String,
    /// Shards it holds now.
    pub held: usize,
    /// Shards it was told to take and does not hold yet.
    pub wanted: usize,
    /// Whether it is draining and holds no shard with nothing asked for.
    pub drained: bool,
}

/// The acting coordinator's side of [`ShardStatus`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CoordinatorStatus {
    /// The Raft term it acts in.
    pub term: u64,
    /// Members up that take shards, draining ones included, in id order.
    pub members: Vec<u64>,
    /// Those of them draining.
    pub draining: Vec<u64>,
    /// Shards each eligible member (up, not draining) owns in its map, and each owner outside
    /// the pool (departed, draining) still holding some.
    pub owned: BTreeMap<u64, usize>,
    /// Shards without an owner in its map.
    pub unowned: usize,
    /// The load bound of the current pool (`lower..=upper` shards per eligible member), when
    /// it has an eligible member.
    pub bounds: Option<(usize, usize)>,
    /// Most owned minus fewest owned over the eligible members (0 without one).
    pub imbalance: usize,
    /// Moves under way, in shard order.
    pub in_flight: Vec<MoveInFlight>,
    /// Whether nothing is under way or planned: the map is where the coordinator wants it.
    pub idle: bool,
}

/// One move under way in [`CoordinatorStatus`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct MoveInFlight {
    /// The shard's scope, `shard/{namespace}/{id}`.
    pub shard: String,
    /// Its holder, asked to hand it over (`None`: the target acquires it).
    pub from: Option<u64>,
    /// The new owner.
    pub to: u64,
    /// Time since the move started, in milliseconds.
    pub age_ms: u64,
}

/// The body of `POST /control/rebalance`. Unknown fields are refused (422), as for a transfer:
/// a misspelt `dry_run` must not turn a preview into moves.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RebalanceRequest {
    /// Show the plan without carrying it out.
    #[serde(default)]
    pub dry_run: bool,
}

/// The answer to a rebalance: the plan.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RebalanceResponse {
    /// The node whose coordinator answered (the Raft leader).
    pub node: u64,
    /// The Raft term it coordinates in.
    pub term: u64,
    /// Whether this was only a preview (nothing moves because of it).
    pub dry_run: bool,
    /// Fewest shards an eligible member may own once the plan is carried out.
    pub lower: usize,
    /// Most shards an eligible member may own.
    pub upper: usize,
    /// The moves, in shard order.
    pub moves: Vec<PlannedMove>,
}

/// One move of a [`RebalanceResponse`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PlannedMove {
    /// The shard's scope, `shard/{namespace}/{id}`.
    pub shard: String,
    /// Its owner now (`None`: unowned).
    pub from: Option<u64>,
    /// The new owner.
    pub to: u64,
    /// `unowned`, `owner_departed`, `owner_draining`, `owner_overloaded` or
    /// `fill_underloaded`.
    pub reason: String,
}

/// The body of a `421 Misdirected Request`: this node's coordinator does not act; ask the one
/// that does.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct MisdirectedBody {
    /// What went wrong, in words.
    pub error: String,
    /// The Raft leader, whose coordinator acts, if this node knows it.
    pub leader: Option<u64>,
    /// Where the leader's control API answers (its `control` metadata), if known.
    pub leader_control: Option<String>,
}

// ---- Lease sessions, transfers, drain ----

/// The body of `POST /control/leases/transfer`. Unknown fields are refused (422): a field the
/// server does not know (a misspelt one, or one of a later version) must not be dropped
/// silently from an operation that moves leases.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TransferRequest {
    /// The scope to hand over (this node must hold it).
    pub scope: String,
    /// The node to hand it to.
    pub to: u64,
}

/// The answer to a transfer.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TransferResponse {
    /// The scope.
    pub scope: String,
    /// Its new holder.
    pub to: u64,
    /// The new holder's fencing token.
    pub token: u64,
}

/// The body of `POST /control/leases/acquire`. Unknown fields are refused (422), as for a
/// transfer.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AcquireRequest {
    /// The scope to lock, such as `lock/backup`.
    pub scope: String,
    /// How long the lease lasts unless renewed, in milliseconds (within the node's
    /// `[leadership.lease]` TTL bounds).
    pub ttl_ms: u64,
}

/// The body of `POST /control/leases/renew` and `POST /control/leases/release`: the session's
/// scope and the token it was granted.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SessionRequest {
    /// The scope.
    pub scope: String,
    /// The fencing token the acquisition answered with.
    pub token: u64,
}

/// The answer to an acquisition, a renewal or a release.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SessionResponse {
    /// The scope.
    pub scope: String,
    /// The node that holds (or held) it: the one asked.
    pub holder: u64,
    /// The fencing token of the grant (unchanged by renewals).
    pub token: u64,
}

/// The body of a refused acquisition when the scope is held (409): who holds it, so that a
/// waiting session can say so (and notice when the holder changes).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct HeldBody {
    /// What went wrong, in words.
    pub error: String,
    /// The holder.
    pub holder: u64,
    /// The holder's fencing token.
    pub token: u64,
    /// Time left on the holder's lease when the voters refused, in milliseconds.
    pub expires_in_ms: u64,
}

/// The answer to a drain.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DrainResponse {
    /// The node.
    pub node: u64,
    /// Leases it released.
    pub released: Vec<String>,
    /// Always true: the node is drained until resumed.
    pub draining: bool,
}

/// The answer to a resume.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ResumeResponse {
    /// The node.
    pub node: u64,
    /// Whether it was drained.
    pub was_draining: bool,
}

// ---- Membership operations ----

/// The body of `POST /control/join`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JoinRequest {
    /// `id@ip:port` of members to join through (their gossip address).
    pub seeds: Vec<String>,
}

/// The answer to a join.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct JoinResponse {
    /// The node asked.
    pub node: u64,
    /// The seeds it asked, as given.
    pub seeds: Vec<String>,
}

/// The answer to a leave.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LeaveResponse {
    /// The node that left.
    pub node: u64,
    /// Leases it released first.
    pub released: Vec<String>,
}

/// The body of `POST /control/force-leave`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ForceLeaveRequest {
    /// The member to move from dead to left.
    pub node: u64,
}

/// The answer to a force-leave.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ForceLeaveResponse {
    /// The node asked.
    pub node: u64,
    /// The member named.
    pub member: u64,
    /// `true` if it was dead here and is now left; `false` if it had left already.
    pub changed: bool,
    /// Its state at the node asked now: `left`.
    pub state: String,
}

/// The body of `POST /control/voters/add` and `POST /control/voters/remove`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VoterRequest {
    /// The node to add or remove.
    pub node: u64,
}

/// The answer to a voter change the leader proposed (202): it is applied once
/// `GET /meshkit/leaders` lists `proposed` as the voters.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct VoterChangeResponse {
    /// `add` or `remove`.
    pub change: String,
    /// The node added or removed.
    pub node: u64,
    /// The Raft leader that proposed it (the node asked).
    pub leader: u64,
    /// The voters before the change.
    pub voters: Vec<u64>,
    /// The voters once it is applied.
    pub proposed: Vec<u64>,
}

/// The answer of a node that cannot propose a voter change (421): ask `leader` at
/// `leader_control`, or, with no leader known, one of `voters_control`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct VoterRedirect {
    /// Why this node did not propose it.
    pub error: String,
    /// The node to ask, if known.
    pub leader: Option<u64>,
    /// Its control address, if it publishes one.
    pub leader_control: Option<String>,
    /// The control addresses of the voters this node knows, when it knows no leader.
    #[serde(default)]
    pub voters_control: Vec<String>,
}

// ---- Errors ----

/// A JSON error body: `{"error": "..."}`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorBody {
    /// What went wrong.
    pub error: String,
}

/// The JSON body of a 401 or 403.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeniedBody {
    /// What is wrong, in words.
    pub error: String,
    /// The scope the route needs.
    pub required_scope: String,
    /// 403 only: who asked.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub identity: Option<String>,
    /// 403 only: what that identity holds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub granted_scopes: Option<Vec<String>>,
}

// ---- Task queues ----

/// An ownership token as JSON.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TokenJson {
    /// The item's id in its shard's queue.
    pub item: u64,
    /// Which lease of the item this is (1 for the first).
    pub attempt: u32,
    /// The grant.
    pub lease: u64,
    /// The fencing token of the owner that granted it.
    pub fence: u64,
}

impl From<OwnershipToken> for TokenJson {
    fn from(t: OwnershipToken) -> Self {
        Self {
            item: t.item.get(),
            attempt: t.attempt,
            lease: t.lease.get(),
            fence: t.fence.get(),
        }
    }
}

impl From<TokenJson> for OwnershipToken {
    fn from(t: TokenJson) -> Self {
        Self {
            item: ItemId::new(t.item),
            attempt: t.attempt,
            lease: LeaseId::new(t.lease),
            fence: FencingToken::new(t.fence),
        }
    }
}

/// The body of `POST /control/queue/enqueue`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EnqueueRequest {
    /// The queue: a shard namespace of `[shards]`.
    pub queue: String,
    /// The shard within it; absent: chosen from the payload's hash (a retried enqueue goes to
    /// the same shard).
    #[serde(default)]
    pub shard: Option<u32>,
    /// The work item (at most 400 bytes).
    pub payload: String,
}

/// The answer to an enqueue: the owner and the configured replicas hold the item.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct EnqueueResponse {
    /// The shard, `shard/{namespace}/{id}`.
    pub shard: String,
    /// The item's id in the shard's queue.
    pub item: u64,
    /// The owner's fence.
    pub fence: u64,
}

/// The body of `POST /control/queue/lease`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LeaseRequest {
    /// The queue (a shard namespace).
    pub queue: String,
    /// One shard; absent: every shard of the queue is tried in turn until one has an item.
    #[serde(default)]
    pub shard: Option<u32>,
    /// Lease up to this many items in one request to the shard's owner (1..=256; out of range
    /// is refused with 400 naming `max`): the answer is then [`LeaseManyResponse`], with as
    /// many as are pending and fit the owner's answer datagram (about 30 items of 8 bytes).
    /// Absent: one item, answered [`LeaseResponse`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max: Option<u32>,
}

/// The items a lease with `max` got (`POST /control/queue/lease`; 204 when nothing is pending).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LeaseManyResponse {
    /// Each item, all of one shard, in the order the owner leased them.
    pub items: Vec<LeaseResponse>,
}

/// An item leased (`POST /control/queue/lease`; 204 when nothing is pending).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LeaseResponse {
    /// The shard, `shard/{namespace}/{id}`: name it when heartbeating, completing or failing.
    pub shard: String,
    /// The token to present.
    pub token: TokenJson,
    /// How long the lease lasts without a heartbeat, in milliseconds.
    pub lease_for_ms: u64,
    /// The work item.
    pub payload: String,
}

/// The body of `POST /control/queue/{heartbeat,complete}`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TokenRequest {
    /// The shard, `shard/{namespace}/{id}`.
    pub shard: String,
    /// The token the lease gave.
    pub token: TokenJson,
}

/// The body of `POST /control/queue/fail`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FailRequest {
    /// The shard, `shard/{namespace}/{id}`.
    pub shard: String,
    /// The token the lease gave.
    pub token: TokenJson,
    /// Requeue it (if attempts remain); `false`: dead-letter it.
    pub requeue: bool,
}

/// The answer to a heartbeat, completion or failure: accepted (completions and failures are
/// held by the replicas).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TokenResponse {
    /// The shard.
    pub shard: String,
    /// The token accepted.
    pub token: TokenJson,
}

/// The body of `POST /control/queue/drain`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct QueueDrainRequest {
    /// The shard, `shard/{namespace}/{id}` (ask its owner).
    pub shard: String,
}

/// One drained item: who enqueued it, and its payload.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DrainedItem {
    /// The producer's node.
    pub producer: u64,
    /// The producer's request number.
    pub request: u64,
    /// The work item.
    pub payload: String,
}

/// The answer to a drain: every item that was pending, now out of the queue.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct QueueDrainResponse {
    /// The shard.
    pub shard: String,
    /// The items, to keep for a restore.
    pub items: Vec<DrainedItem>,
}

/// The body of `POST /control/queue/restore`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct QueueRestoreRequest {
    /// The shard, `shard/{namespace}/{id}` (ask its owner).
    pub shard: String,
    /// Items a drain returned.
    pub items: Vec<DrainedItem>,
}

/// The answer to a restore.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct QueueRestoreResponse {
    /// The shard.
    pub shard: String,
    /// Items put back as pending.
    pub restored: usize,
}

/// A backpressure signal in the original payload shape (`is_active`, `pending_count`,
/// `observed_at`, `high_watermark`, `low_watermark`), with the shard, its owner and the owner's
/// fence added.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BackpressureJson {
    /// Producers should wait.
    pub is_active: bool,
    /// Items pending when the owner took the signal.
    pub pending_count: u32,
    /// When this node first saw the signal (RFC 3339; owners' clocks are process-relative).
    pub observed_at: String,
    /// The high watermark (`null`: backpressure is off).
    pub high_watermark: Option<u32>,
    /// The low watermark.
    pub low_watermark: u32,
    /// The shard, `shard/{namespace}/{id}`.
    pub shard: String,
    /// The owner publishing it.
    pub owner: u64,
    /// The owner's fence.
    pub fence: u64,
}

/// The query of the backpressure routes: one queue, or one shard of it.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BackpressureQuery {
    /// Only this queue (shard namespace).
    pub queue: Option<String>,
    /// Only this shard of it.
    pub shard: Option<u32>,
}

impl BackpressureQuery {
    /// Whether `shard` is one the query asks for.
    pub fn matches(&self, shard: &ShardId) -> bool {
        self.queue.as_deref().is_none_or(|q| q == shard.namespace())
            && self.shard.is_none_or(|id| id == shard.id())
    }
}

/// One worker in [`LeaseHealthResponse`].
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PeerHealthJson {
    /// The worker's node.
    pub peer_id: u64,
    /// Not disconnected, and heard from within the grace.
    pub is_healthy: bool,
    /// Membership holds its node Dead or Left.
    pub is_disconnected: bool,
    /// Seconds since its last heartbeat (or lease request), if any.
    pub last_heartbeat_s_ago: Option<f64>,
}

/// `GET /control/lease-health`: the workers this node's queues track, and the summary.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct LeaseHealthResponse {
    /// The answering node.
    pub node: u64,
    /// Every tracked worker.
    pub peers: Vec<PeerHealthJson>,
    /// Healthy workers (eligible for leases).
    pub eligible_peers: usize,
    /// Unhealthy ones.
    pub unhealthy_peers: usize,
    /// Disconnected workers whose items are requeued once the grace ends.
    pub pending_reassignments: usize,
}

/// One replica copy in [`CheckpointsResponse`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CheckpointJson {
    /// The shard.
    pub shard: String,
    /// The checkpoint: the replication sequence number this copy holds.
    pub sequence_number: u64,
    /// The fence of the owner whose records it holds.
    pub source_fence: u64,
    /// The highest fence it promised to follow.
    pub promised_fence: u64,
    /// Items it holds, tombstones included.
    pub items: usize,
    /// Versions behind the owner, when this node is the owner too (else unknown here).
    pub lag: Option<u64>,
}

/// `GET /control/replication/checkpoints`: this node's replica checkpoints (durable on disk
/// with `[queues] data_dir`), and each served queue's replicas with what they acknowledged.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CheckpointsResponse {
    /// The answering node.
    pub node: u64,
    /// The copies it holds as a replica.
    pub checkpoints: Vec<CheckpointJson>,
    /// The queues it serves: `(shard, version, [(replica, acknowledged version)])`.
    pub sources: Vec<SourceJson>,
}

/// A queue this node serves, with its replicas' acknowledgements (the replication source).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SourceJson {
    /// The shard.
    pub shard: String,
    /// The sequence number of its last change.
    pub sequence_number: u64,
    /// Each replica and the sequence number it acknowledged.
    pub replicas: Vec<ReplicaAckJson>,
}

/// One replica's acknowledgement in [`SourceJson`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReplicaAckJson {
    /// The replica's node.
    pub node: u64,
    /// What it acknowledged.
    pub acknowledged: u64,
}

/// One queue this node serves, in [`QueuesResponse`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServedJson {
    /// The shard.
    pub shard: String,
    /// This node's fence.
    pub fence: u64,
    /// Still rebuilding from the replicas.
    pub recovering: bool,
    /// Items waiting.
    pub pending: usize,
    /// Items leased.
    pub active: usize,
    /// Backpressure active.
    pub backpressure_active: bool,
}

/// One queue's counters in [`QueuesResponse`] (as this node counted them as owner).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CountersJson {
    /// Enqueues acknowledged.
    pub enqueued: u64,
    /// Completions accepted.
    pub completed: u64,
    /// Failures reported.
    pub failed: u64,
    /// Items requeued.
    pub requeued: u64,
    /// Items dead-lettered.
    pub dead_lettered: u64,
    /// Stale tokens refused.
    pub stale_refused: u64,
}

/// `GET /control/queues`: what this node's queues hold and did.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct QueuesResponse {
    /// The answering node.
    pub node: u64,
    /// The queues it serves.
    pub served: Vec<ServedJson>,
    /// Counters by queue (shard namespace).
    pub counters: BTreeMap<String, CountersJson>,
    /// Replica copies it holds.
    pub replicas: usize,
    /// Requests of its producers and workers in flight.
    pub requests_in_flight: usize,
}
