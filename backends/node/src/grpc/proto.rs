//! The messages of `meshkit.control.v1`, written by hand to match `proto/control.proto` field
//! for field and tag for tag (no protoc on the build machines). The test at the bottom checks
//! every message's tags against the `.proto` file.

use std::collections::BTreeMap;

/// `ListPeersRequest`: filter and page, as the query of `GET /meshkit/peers`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct ListPeersRequest {
    /// Only members in this state, a [`PeerState`] (`Unspecified`: any).
    #[prost(enumeration = "PeerState", tag = "1")]
    pub state: i32,
    /// Only members that declare this cluster.
    #[prost(string, optional, tag = "2")]
    pub cluster: Option<String>,
    /// Only members that declare this region.
    #[prost(string, optional, tag = "3")]
    pub region: Option<String>,
    /// Only members with a larger id (the previous page's `next_after`).
    #[prost(uint64, optional, tag = "4")]
    pub after: Option<u64>,
    /// Page size: 0 for the default, at most [`MAX_PAGE`](crate::control::views::MAX_PAGE).
    #[prost(uint32, tag = "5")]
    pub limit: u32,
}

/// `ListPeersResponse`: this node's membership view.
#[derive(Clone, PartialEq, prost::Message)]
pub struct ListPeersResponse {
    /// The answering node's id.
    #[prost(uint64, tag = "1")]
    pub local: u64,
    /// Every member it knows, itself included, in id order.
    #[prost(message, repeated, tag = "2")]
    pub peers: Vec<Peer>,
    /// Members matching the filter, over all pages.
    #[prost(uint64, tag = "3")]
    pub total: u64,
    /// The `after` of the next page, if there is one.
    #[prost(uint64, optional, tag = "4")]
    pub next_after: Option<u64>,
}

/// `PeerState`: a member's SWIM state.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, prost::Enumeration)]
#[repr(i32)]
pub enum PeerState {
    /// Not set (a newer state this client does not know).
    Unspecified = 0,
    /// Answers probes.
    Alive = 1,
    /// Missed a probe; dead unless it refutes in time.
    Suspect = 2,
    /// Declared dead.
    Dead = 3,
    /// Left gracefully.
    Left = 4,
}

/// `Peer`: one member.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Peer {
    /// Its node id.
    #[prost(uint64, tag = "1")]
    pub id: u64,
    /// Its state, a [`PeerState`].
    #[prost(enumeration = "PeerState", tag = "2")]
    pub state: i32,
    /// Its incarnation number.
    #[prost(uint32, tag = "3")]
    pub incarnation: u32,
    /// Smoothed round-trip time of direct probes, once measured.
    #[prost(double, optional, tag = "4")]
    pub rtt_ms: Option<f64>,
    /// Its metadata (values as lossy UTF-8).
    #[prost(btree_map = "string, string", tag = "5")]
    pub metadata: BTreeMap<String, String>,
    /// The address its transport is dialled at, when known.
    #[prost(string, optional, tag = "6")]
    pub addr: Option<String>,
    /// Seconds since the answering node saw it change state.
    #[prost(double, tag = "7")]
    pub last_change_s_ago: f64,
}

/// `GetLeadersRequest`: no fields.
#[derive(Clone, PartialEq, prost::Message)]
pub struct GetLeadersRequest {}

/// `GetLeadersResponse`: one node's leadership state.
#[derive(Clone, PartialEq, prost::Message)]
pub struct GetLeadersResponse {
    /// The answering node.
    #[prost(uint64, tag = "1")]
    pub node: u64,
    /// The voters it talks to.
    #[prost(uint64, repeated, tag = "2")]
    pub voters: Vec<u64>,
    /// Its Raft state, if it is a voter.
    #[prost(message, optional, tag = "3")]
    pub raft: Option<RaftState>,
    /// A voter's applied lease table (empty on non-voters).
    #[prost(message, repeated, tag = "4")]
    pub table: Vec<TableLease>,
    /// Leases this node holds.
    #[prost(message, repeated, tag = "5")]
    pub held: Vec<HeldLease>,
    /// Scopes it contends for.
    #[prost(string, repeated, tag = "6")]
    pub campaign: Vec<String>,
    /// Sequence number of its last leadership feed entry (0: none yet).
    #[prost(uint64, tag = "7")]
    pub last_seq: u64,
}

/// `RaftState`: a voter's view of the Raft group.
#[derive(Clone, PartialEq, prost::Message)]
pub struct RaftState {
    /// The leader it knows of.
    #[prost(uint64, optional, tag = "1")]
    pub leader: Option<u64>,
    /// Its term.
    #[prost(uint64, tag = "2")]
    pub term: u64,
    /// The voters.
    #[prost(uint64, repeated, tag = "3")]
    pub voters: Vec<u64>,
    /// Index of the last applied entry.
    #[prost(uint64, tag = "4")]
    pub applied_index: u64,
}

/// `TableLease`: a lease in a voter's applied table.
#[derive(Clone, PartialEq, prost::Message)]
pub struct TableLease {
    /// The scope.
    #[prost(string, tag = "1")]
    pub scope: String,
    /// Its holder.
    #[prost(uint64, tag = "2")]
    pub holder: u64,
    /// The grant's fencing token.
    #[prost(uint64, tag = "3")]
    pub token: u64,
    /// The grant's term.
    #[prost(uint64, tag = "4")]
    pub term: u64,
    /// Time left as of the last applied entry's leader stamp.
    #[prost(uint64, tag = "5")]
    pub expires_in_ms: u64,
}

/// `HeldLease`: a lease this node holds.
#[derive(Clone, PartialEq, prost::Message)]
pub struct HeldLease {
    /// The scope.
    #[prost(string, tag = "1")]
    pub scope: String,
    /// Its fencing token.
    #[prost(uint64, tag = "2")]
    pub token: u64,
    /// The grant's term.
    #[prost(uint64, tag = "3")]
    pub term: u64,
    /// Time left by this node's clock.
    #[prost(uint64, tag = "4")]
    pub expires_in_ms: u64,
    /// A transfer of it is in flight.
    #[prost(bool, tag = "5")]
    pub transferring: bool,
}

/// `ListClustersRequest`: no fields.
#[derive(Clone, PartialEq, prost::Message)]
pub struct ListClustersRequest {}

/// `ListClustersResponse`: the clusters the members declare.
#[derive(Clone, PartialEq, prost::Message)]
pub struct ListClustersResponse {
    /// The answering node.
    #[prost(uint64, tag = "1")]
    pub local: u64,
    /// Clusters by name.
    #[prost(message, repeated, tag = "2")]
    pub clusters: Vec<Cluster>,
}

/// `Cluster`: one declared cluster.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Cluster {
    /// Its name (`""`: members that declare none).
    #[prost(string, tag = "1")]
    pub name: String,
    /// Members by state.
    #[prost(message, optional, tag = "2")]
    pub states: Option<StateCounts>,
    /// Members by declared region (`""`: none declared).
    #[prost(btree_map = "string, uint64", tag = "3")]
    pub regions: BTreeMap<String, u64>,
    /// The holder of `global-control`, if it is a member of this cluster.
    #[prost(uint64, optional, tag = "4")]
    pub leader: Option<u64>,
}

/// `StateCounts`: members by state.
#[derive(Clone, PartialEq, prost::Message)]
pub struct StateCounts {
    /// Alive members.
    #[prost(uint64, tag = "1")]
    pub alive: u64,
    /// Suspected members.
    #[prost(uint64, tag = "2")]
    pub suspect: u64,
    /// Members declared dead.
    #[prost(uint64, tag = "3")]
    pub dead: u64,
    /// Members that left.
    #[prost(uint64, tag = "4")]
    pub left: u64,
}

/// `ListVersionsRequest`: no fields.
#[derive(Clone, PartialEq, prost::Message)]
pub struct ListVersionsRequest {}

/// `ListVersionsResponse`: the versions present in the mesh.
#[derive(Clone, PartialEq, prost::Message)]
pub struct ListVersionsResponse {
    /// The answering node.
    #[prost(uint64, tag = "1")]
    pub local: u64,
    /// Software versions of the live members.
    #[prost(message, repeated, tag = "2")]
    pub software: Vec<VersionCount>,
    /// Wire protocol versions.
    #[prost(message, repeated, tag = "3")]
    pub wire: Vec<VersionCount>,
    /// Whether more than one software or wire version is present.
    #[prost(bool, tag = "4")]
    pub mixed: bool,
}

/// `VersionCount`: one version and how many live members publish it.
#[derive(Clone, PartialEq, prost::Message)]
pub struct VersionCount {
    /// The version (`""`: not published yet).
    #[prost(string, tag = "1")]
    pub version: String,
    /// Live members that publish it.
    #[prost(uint64, tag = "2")]
    pub members: u64,
}

/// `ListShardsRequest`: no fields.
#[derive(Clone, PartialEq, prost::Message)]
pub struct ListShardsRequest {}

/// `ListShardsResponse`: the shard owners a node knows.
#[derive(Clone, PartialEq, prost::Message)]
pub struct ListShardsResponse {
    /// The answering node.
    #[prost(uint64, tag = "1")]
    pub local: u64,
    /// Whether the list is the voters' applied table (complete) or only what this node owns.
    #[prost(bool, tag = "2")]
    pub complete: bool,
    /// Shards with an owner, in scope order.
    #[prost(message, repeated, tag = "3")]
    pub shards: Vec<ShardOwner>,
}

/// `ShardOwner`: one shard and its owner.
#[derive(Clone, PartialEq, prost::Message)]
pub struct ShardOwner {
    /// The shard's scope, `shard/{namespace}/{id}`.
    #[prost(string, tag = "1")]
    pub scope: String,
    /// Its owner (the lease holder).
    #[prost(uint64, tag = "2")]
    pub owner: u64,
    /// The fencing token of the owner's grant.
    #[prost(uint64, tag = "3")]
    pub token: u64,
    /// Time left on the lease.
    #[prost(uint64, tag = "4")]
    pub expires_in_ms: u64,
}

/// `TransferLeaseRequest`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct TransferLeaseRequest {
    /// The scope to hand over (this node must hold it).
    #[prost(string, tag = "1")]
    pub scope: String,
    /// The node to hand it to (> 0).
    #[prost(uint64, tag = "2")]
    pub to: u64,
}

/// `TransferLeaseResponse`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct TransferLeaseResponse {
    /// The scope.
    #[prost(string, tag = "1")]
    pub scope: String,
    /// Its new holder.
    #[prost(uint64, tag = "2")]
    pub to: u64,
    /// The new holder's fencing token.
    #[prost(uint64, tag = "3")]
    pub token: u64,
}

/// `DrainRequest`: no fields.
#[derive(Clone, PartialEq, prost::Message)]
pub struct DrainRequest {}

/// `DrainResponse`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct DrainResponse {
    /// The node.
    #[prost(uint64, tag = "1")]
    pub node: u64,
    /// Scopes whose leases it released.
    #[prost(string, repeated, tag = "2")]
    pub released: Vec<String>,
}

/// `ResumeRequest`: no fields.
#[derive(Clone, PartialEq, prost::Message)]
pub struct ResumeRequest {}

/// `ResumeResponse`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct ResumeResponse {
    /// The node.
    #[prost(uint64, tag = "1")]
    pub node: u64,
    /// Whether it was drained.
    #[prost(bool, tag = "2")]
    pub was_draining: bool,
}

/// `WatchLeadershipRequest`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct WatchLeadershipRequest {
    /// Resume after this entry of the node's feed; 0: from the oldest entry still held.
    #[prost(uint64, tag = "1")]
    pub after_seq: u64,
    /// The node whose feed `after_seq` counts in (0: whichever node answers).
    #[prost(uint64, tag = "2")]
    pub node: u64,
}

/// `LeadershipEvent`: one numbered entry of the leadership feed.
#[derive(Clone, PartialEq, prost::Message)]
pub struct LeadershipEvent {
    /// Per node, strictly increasing without gaps, from 1.
    #[prost(uint64, tag = "1")]
    pub seq: u64,
    /// The node whose feed this is.
    #[prost(uint64, tag = "2")]
    pub node: u64,
    /// Wall-clock time it was recorded, in Unix milliseconds.
    #[prost(uint64, tag = "3")]
    pub unix_ms: u64,
    /// What happened (`oneof change`).
    #[prost(
        oneof = "LeadershipChange",
        tags = "4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14"
    )]
    pub change: Option<LeadershipChange>,
}

/// `LeadershipEvent.change`: what a feed entry records.
#[derive(Clone, PartialEq, prost::Oneof)]
pub enum LeadershipChange {
    /// This node acquired a scope.
    #[prost(message, tag = "4")]
    Acquired(Acquired),
    /// This node renewed a scope.
    #[prost(message, tag = "5")]
    Renewed(Renewed),
    /// This node lost a scope.
    #[prost(message, tag = "6")]
    Lost(Lost),
    /// This node handed a scope over.
    #[prost(message, tag = "7")]
    Transferred(Transferred),
    /// This node's lease ran out.
    #[prost(message, tag = "8")]
    Expired(Expired),
    /// This node released a scope.
    #[prost(message, tag = "9")]
    Released(Released),
    /// (voter) The Raft leader changed.
    #[prost(message, tag = "10")]
    RaftLeader(RaftLeader),
    /// (voter) A committed grant.
    #[prost(message, tag = "11")]
    Granted(Granted),
    /// (voter) A committed release.
    #[prost(message, tag = "12")]
    LeaseReleased(LeaseReleased),
    /// (voter) An expiry in the table.
    #[prost(message, tag = "13")]
    LeaseExpired(LeaseExpired),
    /// (voter) The voter set changed.
    #[prost(message, tag = "14")]
    Voters(Voters),
}

/// `Acquired`: this node acquired `scope`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Acquired {
    /// The scope.
    #[prost(string, tag = "1")]
    pub scope: String,
    /// The grant's fencing token.
    #[prost(uint64, tag = "2")]
    pub token: u64,
    /// The grant's Raft term.
    #[prost(uint64, tag = "3")]
    pub term: u64,
}

/// `Renewed`: this node renewed `scope`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Renewed {
    /// The scope.
    #[prost(string, tag = "1")]
    pub scope: String,
    /// Its (unchanged) token.
    #[prost(uint64, tag = "2")]
    pub token: u64,
}

/// `Lost`: this node lost `scope`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Lost {
    /// The scope.
    #[prost(string, tag = "1")]
    pub scope: String,
    /// The token no longer valid.
    #[prost(uint64, tag = "2")]
    pub token: u64,
    /// Why.
    #[prost(string, tag = "3")]
    pub reason: String,
}

/// `Transferred`: this node handed `scope` to `to`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Transferred {
    /// The scope.
    #[prost(string, tag = "1")]
    pub scope: String,
    /// The token given up.
    #[prost(uint64, tag = "2")]
    pub token: u64,
    /// The new holder.
    #[prost(uint64, tag = "3")]
    pub to: u64,
    /// The new holder's token.
    #[prost(uint64, tag = "4")]
    pub new_token: u64,
}

/// `Expired`: this node's lease on `scope` ran out.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Expired {
    /// The scope.
    #[prost(string, tag = "1")]
    pub scope: String,
    /// The token that expired.
    #[prost(uint64, tag = "2")]
    pub token: u64,
}

/// `Released`: this node released `scope`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Released {
    /// The scope.
    #[prost(string, tag = "1")]
    pub scope: String,
    /// The token given up.
    #[prost(uint64, tag = "2")]
    pub token: u64,
}

/// `RaftLeader`: (voter) the Raft leader changed or became unknown.
#[derive(Clone, PartialEq, prost::Message)]
pub struct RaftLeader {
    /// The leader, if known.
    #[prost(uint64, optional, tag = "1")]
    pub leader: Option<u64>,
    /// The term.
    #[prost(uint64, tag = "2")]
    pub term: u64,
}

/// `Granted`: (voter) a committed entry granted `scope` to `holder`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Granted {
    /// The scope.
    #[prost(string, tag = "1")]
    pub scope: String,
    /// The new holder.
    #[prost(uint64, tag = "2")]
    pub holder: u64,
    /// The grant's token.
    #[prost(uint64, tag = "3")]
    pub token: u64,
    /// The grant's term.
    #[prost(uint64, tag = "4")]
    pub term: u64,
}

/// `LeaseReleased`: (voter) a committed entry released `scope`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct LeaseReleased {
    /// The scope.
    #[prost(string, tag = "1")]
    pub scope: String,
    /// The former holder.
    #[prost(uint64, tag = "2")]
    pub holder: u64,
    /// The token released.
    #[prost(uint64, tag = "3")]
    pub token: u64,
}

/// `LeaseExpired`: (voter) `holder`'s lease on `scope` expired.
#[derive(Clone, PartialEq, prost::Message)]
pub struct LeaseExpired {
    /// The scope.
    #[prost(string, tag = "1")]
    pub scope: String,
    /// The former holder.
    #[prost(uint64, tag = "2")]
    pub holder: u64,
    /// The token that expired.
    #[prost(uint64, tag = "3")]
    pub token: u64,
}

/// `Voters`: (voter) the voter set changed.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Voters {
    /// The voters now.
    #[prost(uint64, repeated, tag = "1")]
    pub voters: Vec<u64>,
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use prost::Message as _;

    use super::*;
    use crate::grpc::{SERVICE, path};

    const PROTO: &str = include_str!("../../proto/control.proto");

    /// The `.proto` file, read line by line: each message's field tags, each enum's values,
    /// and the rpc names.
    #[derive(Default)]
    struct Contract {
        messages: BTreeMap<String, BTreeSet<u32>>,
        enums: BTreeMap<String, BTreeMap<String, i32>>,
        rpcs: BTreeSet<String>,
    }

    fn contract() -> Contract {
        let mut c = Contract::default();
        // Open blocks: ("message" | "enum" | "oneof" | "service", name).
        let mut blocks: Vec<(String, String)> = Vec::new();
        for line in PROTO.lines() {
            let line = line.split("//").next().unwrap().trim();
            if line.is_empty() {
                continue;
            }
            let words: Vec<&str> = line.split_whitespace().collect();
            match words[0] {
                "message" | "enum" | "oneof" | "service" if line.ends_with('{') => {
                    let name = words[1].trim_end_matches('{').to_owned();
                    if words[0] == "message" {
                        c.messages.entry(name.clone()).or_default();
                    } else if words[0] == "enum" {
                        c.enums.entry(name.clone()).or_default();
                    }
                    blocks.push((words[0].to_owned(), name));
                }
                "message" if line.ends_with("{}") => {
                    c.messages.entry(words[1].to_owned()).or_default();
                }
                "syntax" | "package" => {}
                "}" => {
                    blocks.pop().expect("balanced braces");
                }
                "rpc" => {
                    let name = words[1].split('(').next().unwrap();
                    c.rpcs.insert(name.to_owned());
                }
                _ if line.ends_with(';') && line.contains('=') => {
                    let (left, right) = line.trim_end_matches(';').split_once('=').unwrap();
                    let number: i32 = right.trim().parse().expect("a field number");
                    let field = left.split_whitespace().last().unwrap().to_owned();
                    let owner = blocks
                        .iter()
                        .rev()
                        .find(|(kind, _)| kind == "message" || kind == "enum")
                        .expect("a field inside a message or enum");
                    if owner.0 == "enum" {
                        c.enums.get_mut(&owner.1).unwrap().insert(field, number);
                    } else {
                        let tag = u32::try_from(number).unwrap();
                        c.messages.get_mut(&owner.1).unwrap().insert(tag);
                    }
                }
                _ => {}
            }
        }
        assert!(blocks.is_empty(), "unclosed blocks: {blocks:?}");
        c
    }

    /// The field tags present in an encoded message (top level only).
    fn tags(mut bytes: &[u8]) -> BTreeSet<u32> {
        fn varint(bytes: &mut &[u8]) -> u64 {
            prost::encoding::decode_varint(bytes).expect("a varint")
        }
        let mut out = BTreeSet::new();
        while !bytes.is_empty() {
            let key = varint(&mut bytes);
            out.insert(u32::try_from(key >> 3).unwrap());
            let skip = match key & 7 {
                0 => {
                    varint(&mut bytes);
                    0
                }
                1 => 8,
                2 => usize::try_from(varint(&mut bytes)).unwrap(),
                5 => 4,
                other => panic!("wire type {other}"),
            };
            bytes = &bytes[skip..];
        }
        out
    }

    fn s() -> String {
        "x".to_owned()
    }

    /// Every message with every field set (one `LeadershipEvent` per `change` variant).
    fn populated() -> Vec<(&'static str, Vec<u8>)> {
        let peer = Peer {
            id: 1,
            state: PeerState::Alive as i32,
            incarnation: 1,
            rtt_ms: Some(1.5),
            metadata: [(s(), s())].into_iter().collect(),
            addr: Some(s()),
            last_change_s_ago: 1.5,
        };
        let raft = RaftState {
            leader: Some(1),
            term: 1,
            voters: vec![1],
            applied_index: 1,
        };
        let table = TableLease {
            scope: s(),
            holder: 1,
            token: 1,
            term: 1,
            expires_in_ms: 1,
        };
        let held = HeldLease {
            scope: s(),
            token: 1,
            term: 1,
            expires_in_ms: 1,
            transferring: true,
        };
        let shard = ShardOwner {
            scope: s(),
            owner: 1,
            token: 1,
            expires_in_ms: 1,
        };
        let states = StateCounts {
            alive: 1,
            suspect: 1,
            dead: 1,
            left: 1,
        };
        let cluster = Cluster {
            name: s(),
            states: Some(states.clone()),
            regions: [(s(), 1)].into_iter().collect(),
            leader: Some(1),
        };
        let version = VersionCount {
            version: s(),
            members: 1,
        };
        let changes = vec![
            LeadershipChange::Acquired(Acquired {
                scope: s(),
                token: 1,
                term: 1,
            }),
            LeadershipChange::Renewed(Renewed {
                scope: s(),
                token: 1,
            }),
            LeadershipChange::Lost(Lost {
                scope: s(),
                token: 1,
                reason: s(),
            }),
            LeadershipChange::Transferred(Transferred {
                scope: s(),
                token: 1,
                to: 1,
                new_token: 1,
            }),
            LeadershipChange::Expired(Expired {
                scope: s(),
                token: 1,
            }),
            LeadershipChange::Released(Released {
                scope: s(),
                token: 1,
            }),
            LeadershipChange::RaftLeader(RaftLeader {
                leader: Some(1),
                term: 1,
            }),
            LeadershipChange::Granted(Granted {
                scope: s(),
                holder: 1,
                token: 1,
                term: 1,
            }),
            LeadershipChange::LeaseReleased(LeaseReleased {
                scope: s(),
                holder: 1,
                token: 1,
            }),
            LeadershipChange::LeaseExpired(LeaseExpired {
                scope: s(),
                holder: 1,
                token: 1,
            }),
            LeadershipChange::Voters(Voters { voters: vec![1] }),
        ];
        let mut out = vec![
            (
                "ListPeersRequest",
                ListPeersRequest {
                    state: PeerState::Alive as i32,
                    cluster: Some(s()),
                    region: Some(s()),
                    after: Some(1),
                    limit: 1,
                }
                .encode_to_vec(),
            ),
            (
                "ListPeersResponse",
                ListPeersResponse {
                    local: 1,
                    peers: vec![peer.clone()],
                    total: 1,
                    next_after: Some(1),
                }
                .encode_to_vec(),
            ),
            ("Peer", peer.encode_to_vec()),
            ("GetLeadersRequest", GetLeadersRequest {}.encode_to_vec()),
            (
                "GetLeadersResponse",
                GetLeadersResponse {
                    node: 1,
                    voters: vec![1],
                    raft: Some(raft.clone()),
                    table: vec![table.clone()],
                    held: vec![held.clone()],
                    campaign: vec![s()],
                    last_seq: 1,
                }
                .encode_to_vec(),
            ),
            ("RaftState", raft.encode_to_vec()),
            ("TableLease", table.encode_to_vec()),
            ("HeldLease", held.encode_to_vec()),
            ("ListShardsRequest", ListShardsRequest {}.encode_to_vec()),
            (
                "ListClustersRequest",
                ListClustersRequest {}.encode_to_vec(),
            ),
            (
                "ListClustersResponse",
                ListClustersResponse {
                    local: 1,
                    clusters: vec![cluster.clone()],
                }
                .encode_to_vec(),
            ),
            ("Cluster", cluster.encode_to_vec()),
            ("StateCounts", states.encode_to_vec()),
            (
                "ListVersionsRequest",
                ListVersionsRequest {}.encode_to_vec(),
            ),
            (
                "ListVersionsResponse",
                ListVersionsResponse {
                    local: 1,
                    software: vec![version.clone()],
                    wire: vec![version.clone()],
                    mixed: true,
                }
                .encode_to_vec(),
            ),
            ("VersionCount", version.encode_to_vec()),
            (
                "ListShardsResponse",
                ListShardsResponse {
                    local: 1,
                    complete: true,
                    shards: vec![shard.clone()],
                }
                .encode_to_vec(),
            ),
            ("ShardOwner", shard.encode_to_vec()),
            (
                "TransferLeaseRequest",
                TransferLeaseRequest { scope: s(), to: 1 }.encode_to_vec(),
            ),
            (
                "TransferLeaseResponse",
                TransferLeaseResponse {
                    scope: s(),
                    to: 1,
                    token: 1,
                }
                .encode_to_vec(),
            ),
            ("DrainRequest", DrainRequest {}.encode_to_vec()),
            (
                "DrainResponse",
                DrainResponse {
                    node: 1,
                    released: vec![s()],
                }
                .encode_to_vec(),
            ),
            ("ResumeRequest", ResumeRequest {}.encode_to_vec()),
            (
                "ResumeResponse",
                ResumeResponse {
                    node: 1,
                    was_draining: true,
                }
                .encode_to_vec(),
            ),
            (
                "WatchLeadershipRequest",
                WatchLeadershipRequest {
                    after_seq: 1,
                    node: 1,
                }
                .encode_to_vec(),
            ),
        ];
        for change in changes {
            let name = match &change {
                LeadershipChange::Acquired(m) => ("Acquired", m.encode_to_vec()),
                LeadershipChange::Renewed(m) => ("Renewed", m.encode_to_vec()),
                LeadershipChange::Lost(m) => ("Lost", m.encode_to_vec()),
                LeadershipChange::Transferred(m) => ("Transferred", m.encode_to_vec()),
                LeadershipChange::Expired(m) => ("Expired", m.encode_to_vec()),
                LeadershipChange::Released(m) => ("Released", m.encode_to_vec()),
                LeadershipChange::RaftLeader(m) => ("RaftLeader", m.encode_to_vec()),
                LeadershipChange::Granted(m) => ("Granted", m.encode_to_vec()),
                LeadershipChange::LeaseReleased(m) => ("LeaseReleased", m.encode_to_vec()),
                LeadershipChange::LeaseExpired(m) => ("LeaseExpired", m.encode_to_vec()),
                LeadershipChange::Voters(m) => ("Voters", m.encode_to_vec()),
            };
            out.push(name);
            let event = LeadershipEvent {
                seq: 1,
                node: 1,
                unix_ms: 1,
                change: Some(change),
            };
            out.push(("LeadershipEvent", event.encode_to_vec()));
        }
        out
    }

    /// The hand-written messages carry exactly the `.proto` file's messages and field tags.
    #[test]
    fn messages_match_the_proto_file() {
        let contract = contract();
        let mut rust: BTreeMap<String, BTreeSet<u32>> = BTreeMap::new();
        for (name, bytes) in populated() {
            rust.entry(name.to_owned())
                .or_default()
                .extend(tags(&bytes));
        }
        assert_eq!(rust, contract.messages);
    }

    #[test]
    fn peer_states_and_methods_match_the_proto_file() {
        let contract = contract();
        let states: BTreeMap<String, i32> = [
            ("PEER_STATE_UNSPECIFIED", PeerState::Unspecified),
            ("PEER_STATE_ALIVE", PeerState::Alive),
            ("PEER_STATE_SUSPECT", PeerState::Suspect),
            ("PEER_STATE_DEAD", PeerState::Dead),
            ("PEER_STATE_LEFT", PeerState::Left),
        ]
        .into_iter()
        .map(|(name, state)| (name.to_owned(), state as i32))
        .collect();
        assert_eq!(contract.enums["PeerState"], states);
        assert!(PROTO.contains(&format!("package {};", SERVICE.rsplit_once('.').unwrap().0)));
        let paths: BTreeSet<String> = [
            path::LIST_PEERS,
            path::GET_LEADERS,
            path::TRANSFER_LEASE,
            path::DRAIN,
            path::RESUME,
            path::WATCH_LEADERSHIP,
            path::LIST_SHARDS,
            path::WATCH_SHARDS,
            path::LIST_CLUSTERS,
            path::LIST_VERSIONS,
        ]
        .into_iter()
        .map(ToOwned::to_owned)
        .collect();
        let rpcs: BTreeSet<String> = contract
            .rpcs
            .iter()
            .map(|rpc| format!("/{SERVICE}/{rpc}"))
            .collect();
        assert_eq!(paths, rpcs);
    }
}
