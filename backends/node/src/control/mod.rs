//! The HTTP control endpoint: axum routes, served by [`serve()`] over HTTP/3 (QUIC) and HTTP/2
//! or HTTP/1.1 over TLS (TCP) on one port number.
//!
//! * `GET /healthz`: `ok` while the driver runs, 503 once it has stopped.
//! * `GET /meshkit/peers`: this node's view as JSON ([`PeersResponse`]).
//! * `GET /metrics`: Prometheus text format (0.0.4): `mesh_gossip_*` from the core's counters and
//!   member counts by state, `mesh_transport_*` from the transport's and from the control
//!   server's ([`serve::ServerStats`]), `mesh_control_audit_*`.
//!
//! Who may call which route is decided by [`auth`] (the route-to-scope table is
//! [`auth::ROUTE_SCOPES`]); operate and admin calls are logged by [`audit`].

pub mod admission;
pub mod audit;
pub mod auth;
pub mod errors;
pub mod h3;
pub mod serve;

use std::fmt::Write as _;
use std::sync::Arc;

use axum::extract::State;
use axum::handler::Handler;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Extension, Router};
use meshkit::Duration;
use meshkit::membership::{MemberState, RttHistogram};
use serde::{Deserialize, Serialize};

use self::auth::AccessControl;
use crate::driver::{NodeHandle, Snapshot};
use crate::vacancy;

pub mod leadership;
pub mod views;

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
    pub metadata: std::collections::BTreeMap<String, String>,
    /// The address its transport is dialled at, when known.
    pub addr: Option<String>,
    /// Seconds since the answering node saw it change state.
    #[serde(default)]
    pub last_change_s_ago: f64,
}

impl PeersResponse {
    /// The JSON form of a snapshot: every member, one page.
    pub fn from_snapshot(snapshot: &Snapshot) -> Self {
        Self::page(snapshot, &views::PeersQuery::default())
    }

    /// The members of `snapshot` that match `query`, one page of them.
    pub fn page(snapshot: &Snapshot, query: &views::PeersQuery) -> Self {
        let matching: Vec<&crate::driver::PeerInfo> =
            snapshot.peers.iter().filter(|p| query.matches(p)).collect();
        let limit = query.limit();
        let page: Vec<PeerJson> = matching
            .iter()
            .filter(|p| query.after.is_none_or(|after| p.id.get() > after))
            .take(limit + 1)
            .map(|p| PeerJson {
                id: p.id.get(),
                state: p.state.to_string(),
                incarnation: p.incarnation.get(),
                rtt_ms: p.rtt.map(|d| d.as_secs_f64() * 1e3),
                metadata: p.metadata.clone(),
                addr: p.addr.map(|a| a.to_string()),
                last_change_s_ago: p.last_change_ago.as_secs_f64(),
            })
            .collect();
        let (peers, next_after) = if page.len() > limit {
            let peers = page[..limit].to_vec();
            let next = peers.last().map(|p| p.id);
            (peers, next)
        } else {
            (page, None)
        };
        Self {
            local: snapshot.local_id.get(),
            peers,
            total: matching.len(),
            next_after,
        }
    }
}

/// The HTTP routes (not gRPC) of the control API, as registered: [`Routes`] keeps the list, so
/// a test can walk it against [`auth::ROUTE_SCOPES`] (no route without a row, no row without a
/// route).
fn http_routes() -> Routes<NodeHandle> {
    Routes::default()
        .get("/healthz", healthz)
        .get("/meshkit/peers", peers)
        .get("/metrics", metrics)
        .get("/readyz", views::readyz)
        .get("/meshkit/clusters", views::clusters)
        .get("/meshkit/versions", views::versions)
        .get("/meshkit/leaders", leadership::leaders)
        .get("/meshkit/shards", leadership::shards)
        .get("/control/events/shards", leadership::shard_events)
        .get("/control/events/leadership", leadership::leadership_events)
        .post("/control/leases/transfer", leadership::transfer)
        .post("/control/drain", leadership::drain)
        .post("/control/resume", leadership::resume)
}

/// Every HTTP route of the control API as `(method, path)`, paths as in [`auth::ROUTE_SCOPES`].
pub fn http_route_list() -> Vec<(&'static str, &'static str)> {
    http_routes().listed
}

/// A router being built, and the `(method, path)` of each route added.
struct Routes<S> {
    router: Router<S>,
    listed: Vec<(&'static str, &'static str)>,
}

impl<S: Clone + Send + Sync + 'static> Default for Routes<S> {
    fn default() -> Self {
        Self {
            router: Router::new(),
            listed: Vec::new(),
        }
    }
}

impl<S: Clone + Send + Sync + 'static> Routes<S> {
    fn get<H: Handler<T, S>, T: 'static>(mut self, path: &'static str, handler: H) -> Self {
        self.listed.push(("GET", path));
        self.router = self.router.route(path, get(handler));
        self
    }

    fn post<H: Handler<T, S>, T: 'static>(mut self, path: &'static str, handler: H) -> Self {
        self.listed.push(("POST", path));
        self.router = self.router.route(path, post(handler));
        self
    }
}

/// The control API's routes over a node, every one behind `access` ([`auth::enforce`]), every
/// HTTP error in the JSON form ([`errors::json_errors`]).
pub fn router(node: NodeHandle, access: AccessControl) -> Router {
    let watchers = crate::grpc::health::Watchers::new(node.clone());
    let routes = http_routes()
        .router
        .fallback(errors::no_route)
        .method_not_allowed_fallback(errors::method_not_allowed)
        .with_state(node.clone())
        .merge(crate::grpc::routes_with(node, watchers.clone()))
        .layer(Extension(access.clone()))
        .layer(Extension(watchers));
    // The gRPC service shares the authorization layer; its refusals become gRPC statuses.
    access
        .protect(routes)
        .layer(axum::middleware::from_fn(errors::json_errors))
        .layer(axum::middleware::from_fn(
            crate::grpc::http_errors_as_status,
        ))
}

/// Serves the control API on `server`'s listeners until the task is dropped or aborted.
pub async fn serve(server: serve::ControlServer, node: NodeHandle, access: AccessControl) {
    server.serve(router(node, access)).await;
}

fn stopped() -> Response {
    (StatusCode::SERVICE_UNAVAILABLE, "driver stopped\n").into_response()
}

async fn healthz(State(node): State<NodeHandle>) -> Response {
    match node.snapshot().await {
        Ok(_) => "ok\n".into_response(),
        Err(_) => stopped(),
    }
}

async fn peers(
    State(node): State<NodeHandle>,
    query: Result<
        axum::extract::Query<views::PeersQuery>,
        axum::extract::rejection::QueryRejection,
    >,
) -> Response {
    let query = match query {
        Ok(q) => q.0,
        Err(e) => return views::bad_query(&e),
    };
    if let Err(error) = query.check() {
        return views::bad_request(error);
    }
    match node.snapshot().await {
        Ok(s) => axum::Json(PeersResponse::page(&s, &query)).into_response(),
        Err(_) => stopped(),
    }
}

async fn metrics(
    State(node): State<NodeHandle>,
    Extension(access): Extension<AccessControl>,
    Extension(watchers): Extension<Arc<crate::grpc::health::Watchers>>,
    server: Option<Extension<Arc<serve::ServerStats>>>,
) -> Response {
    match node.snapshot().await {
        Ok(s) => {
            let mut text = render_metrics(&s) + &access.render_metrics();
            watchers.render(&mut text);
            if let Some(Extension(server)) = server {
                server.render(&mut text);
            }
            (
                [(
                    header::CONTENT_TYPE,
                    "text/plain; version=0.0.4; charset=utf-8",
                )],
                text,
            )
                .into_response()
        }
        Err(_) => stopped(),
    }
}

/// The Prometheus text exposition of a snapshot.
pub fn render_metrics(s: &Snapshot) -> String {
    let mut out = String::new();
    let mut family = |name: &str, kind: &str, help: &str, samples: &[(&str, u64)]| {
        // Writing to a String cannot fail.
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
        for (labels, value) in samples {
            let _ = writeln!(out, "{name}{labels} {value}");
        }
    };
    let states = [
        MemberState::Alive,
        MemberState::Suspect,
        MemberState::Dead,
        MemberState::Left,
    ];
    let labels: Vec<String> = states
        .iter()
        .map(|state| format!("{{state=\"{state}\"}}"))
        .collect();
    let by_state: Vec<(&str, u64)> = states
        .iter()
        .zip(&labels)
        .map(|(state, label)| (label.as_str(), s.count(*state) as u64))
        .collect();
    family(
        "mesh_gossip_members",
        "gauge",
        "Members this node knows, by state, itself included.",
        &by_state,
    );
    family(
        "mesh_gossip_health_score",
        "gauge",
        "Lifeguard local health score (0 is healthy).",
        &[("", u64::from(s.health_score))],
    );
    let st = &s.stats;
    let counters: [(&str, &str, u64); 13] = [
        (
            "mesh_gossip_probes_total",
            "Direct probes started.",
            st.probes,
        ),
        (
            "mesh_gossip_probes_failed_total",
            "Probes that got no ack, direct or indirect.",
            st.probes_failed,
        ),
        (
            "mesh_gossip_indirect_probes_total",
            "Indirect probe requests sent.",
            st.indirect_probes,
        ),
        (
            "mesh_gossip_suspicions_raised_total",
            "Suspicions raised from this node's own failed probes.",
            st.suspicions_raised,
        ),
        (
            "mesh_gossip_refutations_total",
            "Refutations of claims about this node.",
            st.refutations,
        ),
        (
            "mesh_gossip_syncs_total",
            "Anti-entropy exchanges started.",
            st.syncs,
        ),
        (
            "mesh_gossip_datagrams_sent_total",
            "Datagrams sent.",
            st.datagrams_sent,
        ),
        ("mesh_gossip_sent_bytes_total", "Bytes sent.", st.bytes_sent),
        (
            "mesh_gossip_datagrams_received_total",
            "Datagrams received and decoded.",
            st.datagrams_received,
        ),
        (
            "mesh_gossip_datagrams_refused_total",
            "Datagrams refused (undecodable, or a sender mismatch).",
            st.datagrams_refused,
        ),
        (
            "mesh_gossip_outbox_dropped_total",
            "Datagrams dropped because the outbox was full.",
            st.outbox_dropped,
        ),
        (
            "mesh_gossip_claims_refused_total",
            "Claims about other members refused: an incarnation too far above the one held.",
            st.claims_refused,
        ),
        (
            "mesh_gossip_introductions_refused_total",
            "Members a relay tried to introduce past its bound of unverified members.",
            st.introductions_refused,
        ),
    ];
    for (name, help, value) in counters {
        family(name, "counter", help, &[("", value)]);
    }
    let t = &s.transport;
    let transport: [(&str, &str, u64); 4] = [
        (
            "mesh_transport_connections_opened_total",
            "QUIC connections established, dialled or accepted.",
            t.connections_opened,
        ),
        (
            "mesh_transport_dials_failed_total",
            "Dials that failed.",
            t.dials_failed,
        ),
        (
            "mesh_transport_handshakes_refused_total",
            "Incoming handshakes refused (e.g. a certificate not signed by the CA).",
            t.handshakes_refused,
        ),
        (
            "mesh_transport_datagrams_dropped_total",
            "Datagrams dropped on the way out.",
            t.datagrams_dropped,
        ),
    ];
    for (name, help, value) in transport {
        family(name, "counter", help, &[("", value)]);
    }
    // One sample per channel and direction, the same labels in both families.
    let mut labels = Vec::new();
    let mut datagrams = Vec::new();
    let mut bytes = Vec::new();
    for (channel, c) in [
        ("membership", &s.traffic.membership),
        ("lease", &s.traffic.lease),
    ] {
        for (direction, count, size) in [
            ("sent", c.datagrams_sent, c.bytes_sent),
            ("received", c.datagrams_received, c.bytes_received),
        ] {
            labels.push(format!(
                "{{channel=\"{channel}\",direction=\"{direction}\"}}"
            ));
            datagrams.push(count);
            bytes.push(size);
        }
    }
    let samples = |values: Vec<u64>| -> Vec<(&str, u64)> {
        labels.iter().map(String::as_str).zip(values).collect()
    };
    family(
        "mesh_transport_channel_datagrams_total",
        "counter",
        "Datagrams the driver handed to the transport (sent) or took from it (received), by \
         channel: membership (gossip) or lease (Raft and lease requests).",
        &samples(datagrams),
    );
    family(
        "mesh_transport_channel_bytes_total",
        "counter",
        "Bytes of those datagrams (each with its channel byte; QUIC and UDP headers not \
         included).",
        &samples(bytes),
    );
    if let Some((view, stats)) = &s.leadership {
        leadership::render_metrics(&mut family, view, stats);
    }
    // The transport's value follows certificate reloads; the driver's is what it was told at
    // start (for transports that hold no certificate).
    if let Some(not_after) = s.transport.tls.cert_not_after.or(s.cert_not_after) {
        family(
            "mesh_transport_cert_expiry_timestamp_seconds",
            "gauge",
            "When this node's certificate expires (Unix seconds): alert well before time() reaches it.",
            &[("", u64::try_from(not_after).unwrap_or(0))],
        );
    }
    family(
        "mesh_shard_draining",
        "gauge",
        "1 while this node is drained (POST /control/drain), 0 otherwise.",
        &[("", u64::from(s.draining))],
    );
    let rtt = &s.stats.probe_rtt;
    write_histogram(
        &mut out,
        "mesh_gossip_probe_rtt_seconds",
        "Round-trip times of direct probes acknowledged by their target.",
        &RttHistogram::BOUNDS,
        &[("", &rtt.buckets, rtt.sum, rtt.count)],
    );
    if let Some((view, stats)) = &s.leadership
        && view.raft.is_some()
    {
        let v = &stats.vacancy;
        write_histogram(
            &mut out,
            "mesh_leadership_vacancy_seconds",
            "Time scopes went without a holder, as this voter applied it: from a lease's expiry \
             or release to the next grant (after a crash, the part of the failover after the \
             TTL; after a graceful release, the whole handover).",
            &vacancy::BOUNDS,
            &[
                (
                    "scope_kind=\"shard\"",
                    &v.shard.buckets,
                    v.shard.sum,
                    v.shard.count,
                ),
                (
                    "scope_kind=\"other\"",
                    &v.other.buckets,
                    v.other.sum,
                    v.other.count,
                ),
            ],
        );
        write_histogram(
            &mut out,
            "mesh_leadership_raft_leaderless_seconds",
            "Time this voter knew no Raft leader: from when it stopped following one (it \
             campaigned, or a newer term reached it) to when it knew the next.",
            &vacancy::BOUNDS,
            &[("", &v.raft.buckets, v.raft.sum, v.raft.count)],
        );
    }
    s.transport.render_streams_and_tls(&mut out);
    out
}

/// Writes one Prometheus histogram family: per label set, cumulative buckets at `bounds` and
/// `+Inf`, the sum and the count. `buckets` are per bucket (not cumulative), one more than
/// `bounds`.
fn write_histogram(
    out: &mut String,
    name: &str,
    help: &str,
    bounds: &[Duration],
    series: &[(&str, &[u64], Duration, u64)],
) {
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} histogram");
    for (labels, buckets, sum, count) in series {
        let sep = if labels.is_empty() { "" } else { "," };
        let mut cumulative = 0;
        for (i, n) in buckets.iter().enumerate() {
            cumulative += n;
            let le = bounds
                .get(i)
                .map_or_else(|| "+Inf".to_owned(), |b| b.as_secs_f64().to_string());
            let _ = writeln!(
                out,
                "{name}_bucket{{{labels}{sep}le=\"{le}\"}} {cumulative}"
            );
        }
        let braces = if labels.is_empty() {
            String::new()
        } else {
            format!("{{{labels}}}")
        };
        let _ = writeln!(out, "{name}_sum{braces} {}", sum.as_secs_f64());
        let _ = writeln!(out, "{name}_count{braces} {count}");
    }
}

#[cfg(test)]
mod tests {
    use meshkit::membership::Stats;
    use meshkit::{Incarnation, NodeId};

    use super::*;
    use crate::driver::PeerInfo;
    use crate::transport::TransportStats;

    fn snapshot() -> Snapshot {
        let peer = |id, state| PeerInfo {
            id: NodeId::new(id),
            state,
            incarnation: Incarnation::new(1),
            rtt: None,
            metadata: [("addr".to_owned(), "127.0.0.1:1".to_owned())].into(),
            last_change_ago: Duration::ZERO,
            addr: None,
        };
        Snapshot {
            local_id: NodeId::new(1),
            peers: vec![peer(1, MemberState::Alive), peer(2, MemberState::Dead)],
            stats: Stats::default(),
            transport: TransportStats::default(),
            traffic: crate::driver::Traffic::default(),
            health_score: 0,
            leadership: None,
            draining: false,
            joined: false,
            cert_not_after: Some(1_900_000_000),
        }
    }

    /// Every sample belongs to the family announced just before it, with HELP then TYPE, and
    /// counters end in `_total` (Prometheus text format 0.0.4).
    #[test]
    fn metrics_are_well_formed_text_exposition() {
        let text = render_metrics(&snapshot());
        let mut family: Option<(String, String)> = None;
        let mut help: Option<String> = None;
        for line in text.lines() {
            if let Some(rest) = line.strip_prefix("# HELP ") {
                help = Some(rest.split(' ').next().unwrap().to_owned());
            } else if let Some(rest) = line.strip_prefix("# TYPE ") {
                let (name, kind) = rest.split_once(' ').unwrap();
                assert_eq!(help.as_deref(), Some(name), "TYPE without its HELP: {line}");
                assert!(
                    kind == "gauge" || kind == "counter" || kind == "histogram",
                    "{line}"
                );
                assert_eq!(kind == "counter", name.ends_with("_total"), "{line}");
                family = Some((name.to_owned(), kind.to_owned()));
            } else {
                let name = line.split(['{', ' ']).next().unwrap();
                let (current, kind) = family.as_ref().expect("a sample before any TYPE");
                let base = match kind.as_str() {
                    "histogram" => ["_bucket", "_sum", "_count"]
                        .iter()
                        .find_map(|suffix| name.strip_suffix(suffix))
                        .unwrap_or(name),
                    _ => name,
                };
                assert_eq!(base, current, "sample outside its family: {line}");
                let value = line.rsplit(' ').next().unwrap();
                assert!(value.parse::<f64>().is_ok(), "{line}");
            }
        }
        assert!(text.contains("mesh_gossip_members{state=\"alive\"} 1\n"));
        assert!(text.contains("mesh_gossip_members{state=\"dead\"} 1\n"));
        assert!(text.contains("mesh_transport_cert_expiry_timestamp_seconds 1900000000\n"));
        assert!(text.contains("# TYPE mesh_gossip_probe_rtt_seconds histogram\n"));
        assert!(text.contains("mesh_gossip_claims_refused_total 0\n"));
        assert!(text.contains("mesh_gossip_introductions_refused_total 0\n"));
        assert!(text.contains("mesh_gossip_probe_rtt_seconds_bucket{le=\"0.0001\"} 0\n"));
        assert!(text.contains("mesh_gossip_probe_rtt_seconds_bucket{le=\"+Inf\"} 0\n"));
        assert!(text.contains("mesh_gossip_probe_rtt_seconds_count 0\n"));
        assert!(text.contains(
            "mesh_transport_channel_bytes_total{channel=\"lease\",direction=\"received\"} 0\n"
        ));
    }
}
