//! The API probe: one endpoint of the read API (`GET /meshkit/peers`, `/shards`, `/clusters`,
//! `/versions`, `/leaders`) with the agent's observer identity.
//!
//! A run passes when the answer is 200, its body parses as the documented shape (the
//! [`meshkit_api::json`] type the server builds it from) and the answer holds its invariants:
//!
//! * `peers`: the answering node lists itself, ids are unique and in order, and at least
//!   `min_alive` members are alive;
//! * `shards`: no shard scope has two owners, every scope names a shard;
//! * `clusters`: cluster names are unique and every cluster counts at least one member;
//! * `versions`: one software version and one wire version among members that publish one,
//!   unless `rollout = true`; `mixed` agrees with the lists;
//! * `leaders`: no scope has two holders in the voters' applied table, and a voter knows a
//!   Raft leader.
//!
//! Latency is the scheduler's: a pass slower than the group's `latency_threshold` counts toward
//! Degraded. The judgement is a pure function of the body ([`judge`]), so the unit tests feed it
//! answers.

use std::collections::BTreeSet;
use std::sync::Arc;

use meshkit_api::json::{
    ClustersResponse, LeadershipView, PeersResponse, ShardsResponse, VersionsResponse,
    is_shard_scope,
};
use meshkit_runtime::probe_host::{AsyncProbe, CheckFuture, ProbeFailure};
use serde::de::DeserializeOwned;

use super::{Clients, RunNote, fail, quote};
use crate::config::{ApiEndpoint, ApiOptions};

/// `GET <endpoint>` against one node.
#[derive(Debug)]
pub struct ApiProbe {
    clients: Arc<Clients>,
    target: Arc<str>,
    endpoint: ApiEndpoint,
    options: Arc<ApiOptions>,
    note: Arc<RunNote>,
}

impl ApiProbe {
    /// The probe of `endpoint` on `target`.
    pub fn new(
        clients: Arc<Clients>,
        target: &str,
        endpoint: ApiEndpoint,
        options: ApiOptions,
        note: Arc<RunNote>,
    ) -> Self {
        Self {
            clients,
            target: target.into(),
            endpoint,
            options: Arc::new(options),
            note,
        }
    }
}

impl AsyncProbe for ApiProbe {
    fn kind(&self) -> &str {
        "api"
    }

    fn check(&self) -> CheckFuture {
        let clients = self.clients.clone();
        let target = self.target.clone();
        let endpoint = self.endpoint;
        let options = self.options.clone();
        let note = self.note.clone();
        Box::pin(async move {
            note.clear();
            let path = endpoint.path();
            let response = clients
                .observer
                .get(&target, path)
                .await
                .map_err(|e| fail(format!("GET {path}: {e}")))?;
            note.set_protocol(response.protocol);
            if response.status != 200 {
                return Err(fail(format!(
                    "GET {path} answered {} over {}: {}",
                    response.status,
                    response.protocol,
                    quote(&response.body)
                )));
            }
            judge(endpoint, &response.body, &options)
        })
    }
}

fn parse<T: DeserializeOwned>(endpoint: ApiEndpoint, body: &str) -> Result<T, ProbeFailure> {
    serde_json::from_str(body).map_err(|e| {
        fail(format!(
            "GET {}: the body is not the documented shape: {e}",
            endpoint.path()
        ))
    })
}

/// Whether `body`, the 200 answer of `endpoint`, is the documented shape and holds the
/// endpoint's invariants.
///
/// # Errors
///
/// A [`ProbeFailure`] naming the first thing wrong.
pub fn judge(endpoint: ApiEndpoint, body: &str, options: &ApiOptions) -> Result<(), ProbeFailure> {
    match endpoint {
        ApiEndpoint::Peers => {
            let peers: PeersResponse = parse(endpoint, body)?;
            if !peers.peers.iter().any(|p| p.id == peers.local) {
                return Err(fail(format!(
                    "peers: the answering node {} does not list itself",
                    peers.local
                )));
            }
            if peers.peers.windows(2).any(|w| w[0].id >= w[1].id) {
                return Err(fail("peers: member ids are not unique and in order"));
            }
            let alive = peers.peers.iter().filter(|p| p.state == "alive").count();
            if alive < options.min_alive {
                let down: Vec<String> = peers
                    .peers
                    .iter()
                    .filter(|p| p.state != "alive")
                    .take(8)
                    .map(|p| format!("{}={}", p.id, p.state))
                    .collect();
                return Err(fail(format!(
                    "peers: {alive} members alive, fewer than min_alive = {}: {}",
                    options.min_alive,
                    down.join(", ")
                )));
            }
            Ok(())
        }
        ApiEndpoint::Shards => {
            let shards: ShardsResponse = parse(endpoint, body)?;
            let mut seen = BTreeSet::new();
            for shard in &shards.shards {
                if !is_shard_scope(&shard.scope) {
                    return Err(fail(format!(
                        "shards: {:?} is not a shard scope",
                        shard.scope
                    )));
                }
                if !seen.insert(shard.scope.as_str()) {
                    return Err(fail(format!(
                        "shards: {} has more than one owner",
                        shard.scope
                    )));
                }
            }
            Ok(())
        }
        ApiEndpoint::Clusters => {
            let clusters: ClustersResponse = parse(endpoint, body)?;
            let mut seen = BTreeSet::new();
            for c in &clusters.clusters {
                if !seen.insert(c.name.as_str()) {
                    return Err(fail(format!("clusters: {:?} is listed twice", c.name)));
                }
                let s = &c.states;
                if s.alive + s.suspect + s.dead + s.left == 0 {
                    return Err(fail(format!("clusters: {:?} counts no member", c.name)));
                }
            }
            if clusters.clusters.is_empty() {
                return Err(fail("clusters: none listed, not even the answering node's"));
            }
            Ok(())
        }
        ApiEndpoint::Versions => {
            let versions: VersionsResponse = parse(endpoint, body)?;
            let published = |list: &[meshkit_api::json::VersionCount]| {
                list.iter()
                    .filter(|v| !v.version.is_empty() && v.members > 0)
                    .map(|v| format!("{} ({} members)", v.version, v.members))
                    .collect::<Vec<_>>()
            };
            let software = published(&versions.software);
            let wire = published(&versions.wire);
            if software.len() > 1 && !options.rollout {
                return Err(fail(format!(
                    "versions: {} software versions and no rollout declared: {}",
                    software.len(),
                    software.join(", ")
                )));
            }
            if wire.len() > 1 && !options.rollout {
                return Err(fail(format!(
                    "versions: {} wire versions and no rollout declared: {}",
                    wire.len(),
                    wire.join(", ")
                )));
            }
            let mixed = versions.software.iter().filter(|v| v.members > 0).count() > 1
                || versions.wire.iter().filter(|v| v.members > 0).count() > 1;
            if versions.mixed != mixed {
                return Err(fail(format!(
                    "versions: mixed = {} disagrees with the lists it answers",
                    versions.mixed
                )));
            }
            Ok(())
        }
        ApiEndpoint::Leaders => {
            let view: LeadershipView = parse(endpoint, body)?;
            let mut seen = BTreeSet::new();
            for lease in &view.table {
                if !seen.insert(lease.scope.as_str()) {
                    return Err(fail(format!(
                        "leaders: {} has more than one holder in the applied table",
                        lease.scope
                    )));
                }
            }
            if let Some(raft) = &view.raft
                && raft.leader.is_none()
            {
                return Err(fail(format!(
                    "leaders: voter {} knows no Raft leader in term {}",
                    view.node, raft.term
                )));
            }
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn options() -> ApiOptions {
        ApiOptions {
            endpoints: ApiEndpoint::ALL.to_vec(),
            min_alive: 2,
            rollout: false,
        }
    }

    fn peer(id: u64, state: &str) -> String {
        format!(
            r#"{{"id":{id},"state":"{state}","incarnation":1,"rtt_ms":null,"metadata":{{}},"addr":null}}"#
        )
    }

    #[test]
    fn peers_counts_members_alive_and_checks_the_shape() {
        let body = |peers: &[String]| format!(r#"{{"local":1,"peers":[{}]}}"#, peers.join(","));
        let o = options();
        judge(
            ApiEndpoint::Peers,
            &body(&[peer(1, "alive"), peer(2, "alive")]),
            &o,
        )
        .unwrap();
        let err = judge(
            ApiEndpoint::Peers,
            &body(&[peer(1, "alive"), peer(2, "dead")]),
            &o,
        )
        .unwrap_err();
        assert!(
            err.message().contains("1 members alive") && err.message().contains("2=dead"),
            "{err}"
        );
        let err = judge(
            ApiEndpoint::Peers,
            &body(&[peer(2, "alive"), peer(3, "alive")]),
            &o,
        )
        .unwrap_err();
        assert!(err.message().contains("does not list itself"), "{err}");
        let err = judge(ApiEndpoint::Peers, r#"{"local":1}"#, &o).unwrap_err();
        assert!(err.message().contains("documented shape"), "{err}");
    }

    #[test]
    fn versions_refuse_two_unless_a_rollout_is_declared() {
        let body = r#"{"local":1,"software":[{"version":"1.0","members":2},{"version":"1.1","members":1}],"wire":[{"version":"1/1","members":3}],"mixed":true}"#;
        let err = judge(ApiEndpoint::Versions, body, &options()).unwrap_err();
        assert!(err.message().contains("2 software versions"), "{err}");
        let rollout = ApiOptions {
            rollout: true,
            ..options()
        };
        judge(ApiEndpoint::Versions, body, &rollout).unwrap();
        let lying = body.replace("\"mixed\":true", "\"mixed\":false");
        assert!(judge(ApiEndpoint::Versions, &lying, &rollout).is_err());
    }

    #[test]
    fn leaders_and_shards_refuse_two_holders() {
        let lease = |scope: &str, holder: u64| {
            format!(
                r#"{{"scope":"{scope}","holder":{holder},"token":1,"term":1,"expires_in_ms":10}}"#
            )
        };
        let view = |table: &[String], leader: &str| {
            format!(
                r#"{{"node":1,"voters":[1],"raft":{{"leader":{leader},"term":2,"voters":[1],"applied_index":3}},"table":[{}],"held":[],"campaign":[],"last_seq":0}}"#,
                table.join(",")
            )
        };
        judge(
            ApiEndpoint::Leaders,
            &view(&[lease("a", 1), lease("b", 2)], "1"),
            &options(),
        )
        .unwrap();
        let err = judge(
            ApiEndpoint::Leaders,
            &view(&[lease("a", 1), lease("a", 2)], "1"),
            &options(),
        )
        .unwrap_err();
        assert!(err.message().contains("more than one holder"), "{err}");
        let err = judge(ApiEndpoint::Leaders, &view(&[], "null"), &options()).unwrap_err();
        assert!(err.message().contains("no Raft leader"), "{err}");
        let owner = |scope: &str| {
            format!(r#"{{"scope":"{scope}","owner":1,"token":1,"expires_in_ms":10}}"#)
        };
        let shards = |list: &[String]| {
            format!(
                r#"{{"local":1,"complete":true,"shards":[{}]}}"#,
                list.join(",")
            )
        };
        judge(
            ApiEndpoint::Shards,
            &shards(&[owner("shard/default/0"), owner("shard/default/1")]),
            &options(),
        )
        .unwrap();
        let err = judge(
            ApiEndpoint::Shards,
            &shards(&[owner("shard/default/0"), owner("shard/default/0")]),
            &options(),
        )
        .unwrap_err();
        assert!(err.message().contains("more than one owner"), "{err}");
    }
}
