//! # The control API server of a MeshKit node
//!
//! The HTTP control endpoint: axum routes, served by [`serve()`] over HTTP/3 (QUIC) and HTTP/2
//! or HTTP/1.1 over TLS (TCP) on one port number, and the same surface over gRPC ([`grpc`]).
//!
//! * `GET /healthz`: `ok` while the driver runs, 503 once it has stopped.
//! * `GET /meshkit/peers`: this node's view as JSON ([`PeersResponse`]).
//! * `GET /metrics`: Prometheus text format (0.0.4): `mesh_gossip_*` from the core's counters and
//!   member counts by state, `mesh_transport_*` from the transport's and from the control
//!   server's ([`serve::ServerStats`]), `mesh_control_audit_*`.
//!
//! Who may call which route is decided by [`auth`] (the route + permission table is
//! [`meshkit_api::routes::ROUTE_PERMISSIONS`], credentials are certificates or [`tokens`]);
//! operate and admin calls are logged by [`audit`]; [`admission`] bounds connections.
//!
//! ## Modules
//!
//! * [`serve`](mod@serve) and [`h3`]: the listeners (TCP for HTTP/2 and HTTP/1.1, QUIC for HTTP/3).
//! * [`views`], [`membership`], [`leadership`], [`queues`], [`probes`]: the handlers of the
//!   `/meshkit/*` and `/control/*` routes; [`errors`]: their error bodies.
//! * [`grpc`]: `meshkit.control.v1.Control` and `grpc.health.v1.Health` over a node.
//! * [`chaos`]: the chaos routes (plans, confirmation tokens, experiments, kill switch) and
//!   the relay that fans an experiment out to its target nodes.

pub mod admission;
pub mod audit;
pub mod auth;
pub mod chaos;
pub mod errors;
pub mod grpc;
pub mod h3;
mod listener;
pub mod serve;
pub mod tokens;

use std::sync::Arc;

use axum::extract::State;
use axum::handler::Handler;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post};
use axum::{Extension, Router};
use meshkit::membership::{MemberState, RttHistogram};
use prometheus_client::collector::Collector;

use self::auth::AccessControl;
use meshkit_api::metrics::{self, Families, Histogram, Scrape, Source};
use meshkit_runtime::driver::{NodeHandle, Snapshot, VERSION_KEY, WIRE_KEY};
use meshkit_runtime::vacancy;

pub mod leadership;
pub mod membership;
pub mod probes;
pub mod queues;
pub mod views;

pub use views::{PeerJson, PeersResponse};

/// The HTTP routes (not gRPC) of the control API, as registered: [`Routes`] keeps the list, so
/// a test can walk it against [`meshkit_api::routes::ROUTE_PERMISSIONS`] (no route without a row, no row without a
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
        .post("/control/leases/acquire", leadership::acquire)
        .post("/control/leases/renew", leadership::renew)
        .post("/control/leases/release", leadership::release)
        .post("/control/drain", leadership::drain)
        .post("/control/resume", leadership::resume)
        .post("/control/rebalance", leadership::rebalance)
        .post("/control/join", membership::join)
        .post("/control/leave", membership::leave)
        .post("/control/force-leave", membership::force_leave)
        .post("/control/voters/add", membership::voters_add)
        .post("/control/voters/remove", membership::voters_remove)
        .post("/control/chaos/plans", chaos::plan_route)
        .post("/control/chaos/experiments", chaos::start_route)
        .get("/control/chaos/experiments", chaos::list_route)
        .delete("/control/chaos/experiments/{id}", chaos::abort_route)
        .post("/control/chaos/kill-switch", chaos::kill_switch_route)
        .delete("/control/chaos/kill-switch", chaos::rearm_route)
        .post("/control/chaos/relay", chaos::relay_route)
        .get("/control/queues", queues::stats)
        .post("/control/queue/enqueue", queues::enqueue)
        .post("/control/queue/lease", queues::lease)
        .post("/control/queue/heartbeat", queues::heartbeat)
        .post("/control/queue/complete", queues::complete)
        .post("/control/queue/fail", queues::fail)
        .post("/control/queue/drain", queues::drain)
        .post("/control/queue/restore", queues::restore)
        .get("/control/backpressure", queues::backpressure)
        .get("/control/backpressure/stream", queues::backpressure_stream)
        .get("/control/lease-health", queues::lease_health)
        .get("/control/replication/checkpoints", queues::checkpoints)
        .get("/control/probes", probes::list)
        // The original system's paths, for tools written against them: the same answers.
        .get("/omnirelay/control/backpressure", queues::backpressure)
        .get(
            "/omnirelay/control/backpressure/stream",
            queues::backpressure_stream,
        )
        .get("/omnirelay/control/lease-health", queues::lease_health)
        .get(
            "/omnirelay/control/replication/checkpoints",
            queues::checkpoints,
        )
}

/// Every HTTP route of the control API as `(method, path)`, paths as in [`meshkit_api::routes::ROUTE_PERMISSIONS`].
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

    fn delete<H: Handler<T, S>, T: 'static>(mut self, path: &'static str, handler: H) -> Self {
        self.listed.push(("DELETE", path));
        self.router = self.router.route(path, delete(handler));
        self
    }
}

/// The control API's routes over a node, every one behind `access` ([`auth::enforce`]), every
/// HTTP error in the JSON form ([`errors::json_errors`]). Its chaos routes reach no other node
/// (no relay client): [`router_with_chaos`] gives them one.
pub fn router(node: NodeHandle, access: AccessControl) -> Router {
    router_with_chaos(node, access, Arc::new(chaos::ChaosControl::new(None, None)))
}

/// [`router`] with `chaos` as the chaos routes' state (its relay client reaches the other
/// targets of an experiment).
pub fn router_with_chaos(
    node: NodeHandle,
    access: AccessControl,
    chaos: Arc<chaos::ChaosControl>,
) -> Router {
    let watchers = grpc::health::Watchers::new(node.clone());
    let routes = http_routes()
        .router
        .fallback(errors::no_route)
        .method_not_allowed_fallback(errors::method_not_allowed)
        .with_state(node.clone())
        .merge(grpc::routes_with(node, watchers.clone()))
        .layer(Extension(access.clone()))
        .layer(Extension(watchers))
        .layer(Extension(chaos));
    // The gRPC service shares the authorization layer; its refusals become gRPC statuses.
    access
        .protect(routes)
        .layer(axum::middleware::from_fn(errors::json_errors))
        .layer(axum::middleware::from_fn(grpc::http_errors_as_status))
}

/// Serves the control API on `server`'s listeners until the task is dropped or aborted.
pub async fn serve(server: serve::ControlServer, node: NodeHandle, access: AccessControl) {
    server.serve(router(node, access)).await;
}

/// [`fn@serve`] with `chaos` as the chaos routes' state ([`router_with_chaos`]).
pub async fn serve_with_chaos(
    server: serve::ControlServer,
    node: NodeHandle,
    access: AccessControl,
    chaos: Arc<chaos::ChaosControl>,
) {
    server.serve(router_with_chaos(node, access, chaos)).await;
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
        Ok(s) => axum::Json(views::peers_page(&s, &query)).into_response(),
        Err(_) => stopped(),
    }
}

async fn metrics(
    State(node): State<NodeHandle>,
    Extension(access): Extension<AccessControl>,
    Extension(watchers): Extension<Arc<grpc::health::Watchers>>,
    server: Option<Extension<Arc<serve::ServerStats>>>,
    probes: Option<Extension<meshkit_runtime::probe_host::ProbeHandle>>,
    chaos: Option<Extension<Arc<chaos::ChaosControl>>>,
) -> Response {
    // A stopped probe host leaves its families out; the rest still answers.
    let probe_metrics = match probes {
        Some(Extension(probes)) => probes.metrics().await.ok(),
        None => None,
    };
    match node.snapshot().await {
        Ok(s) => {
            let mut sources: Vec<Box<dyn Collector>> = vec![
                Box::new(Scrape(SnapshotMetrics(s))),
                Box::new(Scrape(access)),
                Box::new(Scrape(watchers)),
            ];
            if let Some(Extension(server)) = server {
                sources.push(Box::new(Scrape(server)));
            }
            if let Some(m) = probe_metrics {
                sources.push(Box::new(Scrape(probes::ProbeMetricsSource(m))));
            }
            if let Some(Extension(chaos)) = chaos {
                sources.push(Box::new(Scrape(chaos)));
            }
            match metrics::exposition(sources) {
                Ok(text) => ([(header::CONTENT_TYPE, metrics::CONTENT_TYPE)], text).into_response(),
                // Logged where a family was written against the catalogue.
                Err(_) => StatusCode::INTERNAL_SERVER_ERROR.into_response(),
            }
        }
        Err(_) => stopped(),
    }
}

/// The Prometheus text exposition of a snapshot ([`SnapshotMetrics`]).
pub fn render_metrics(s: &Snapshot) -> String {
    // The families are the catalogue's: they cannot be written against it.
    metrics::encode(SnapshotMetrics(s.clone())).unwrap_or_default()
}

/// The families of a driver snapshot, as a metrics source: membership, transport, leadership,
/// certificate expiry, drain, and the probe and failover histograms.
#[derive(Debug)]
pub struct SnapshotMetrics(pub Snapshot);

impl Source for SnapshotMetrics {
    fn write(&self, families: &mut Families<'_, '_>) -> std::fmt::Result {
        use meshkit_api::metrics::catalogue::*;
        let s = &self.0;
        // The node's own published versions (empty before its metadata is set at start).
        let own = |key| {
            s.peer(s.local_id)
                .and_then(|p| p.metadata.get(key))
                .map_or("", String::as_str)
        };
        families.gauges(&BUILD_INFO, [([own(VERSION_KEY), own(WIRE_KEY)], 1u64)])?;
        let states = [
            MemberState::Alive,
            MemberState::Suspect,
            MemberState::Dead,
            MemberState::Left,
        ];
        let names = states.map(|state| state.to_string());
        families.gauges(
            &GOSSIP_MEMBERS,
            states
                .iter()
                .zip(&names)
                .map(|(state, name)| ([name.as_str()], s.count(*state))),
        )?;
        families.gauge(&GOSSIP_HEALTH_SCORE, u64::from(s.health_score))?;
        let st = &s.stats;
        for (family, value) in [
            (&GOSSIP_PROBES, st.probes),
            (&GOSSIP_PROBES_FAILED, st.probes_failed),
            (&GOSSIP_INDIRECT_PROBES, st.indirect_probes),
            (&GOSSIP_SUSPICIONS_RAISED, st.suspicions_raised),
            (&GOSSIP_SUSPICIONS_CONFIRMED, st.suspicions_confirmed),
            (&GOSSIP_REFUTATIONS, st.refutations),
            (&GOSSIP_SYNCS, st.syncs),
            (&GOSSIP_DATAGRAMS_SENT, st.datagrams_sent),
            (&GOSSIP_SENT_BYTES, st.bytes_sent),
            (&GOSSIP_DATAGRAMS_RECEIVED, st.datagrams_received),
            (&GOSSIP_DATAGRAMS_REFUSED, st.datagrams_refused),
            (&GOSSIP_OUTBOX_DROPPED, st.outbox_dropped),
            (&GOSSIP_CLAIMS_REFUSED, st.claims_refused),
            (&GOSSIP_INTRODUCTIONS_REFUSED, st.introductions_refused),
        ] {
            families.counter(family, value)?;
        }
        let t = &s.transport;
        for (family, value) in [
            (&TRANSPORT_CONNECTIONS_OPENED, t.connections_opened),
            (&TRANSPORT_DIALS_FAILED, t.dials_failed),
            (&TRANSPORT_CONNECTIONS_EVICTED, t.connections_evicted),
            (&TRANSPORT_REDIALS, t.redials),
            (&TRANSPORT_HANDSHAKES_RESUMED, t.handshakes_resumed),
            (&TRANSPORT_HANDSHAKES_REFUSED, t.handshakes_refused),
            (&TRANSPORT_DATAGRAMS_DROPPED, t.datagrams_dropped),
        ] {
            families.counter(family, value)?;
        }
        // One sample per channel and direction, the same labels in both families.
        let channels = [
            ("membership", &s.traffic.membership),
            ("lease", &s.traffic.lease),
            ("shard", &s.traffic.shard),
            ("queue", &s.traffic.queue),
        ];
        let traffic = channels.iter().flat_map(|(channel, c)| {
            [
                ([*channel, "sent"], c.datagrams_sent, c.bytes_sent),
                (
                    [*channel, "received"],
                    c.datagrams_received,
                    c.bytes_received,
                ),
            ]
        });
        families.counters(
            &TRANSPORT_CHANNEL_DATAGRAMS,
            traffic.clone().map(|(labels, count, _)| (labels, count)),
        )?;
        families.counters(
            &TRANSPORT_CHANNEL_BYTES,
            traffic.map(|(labels, _, size)| (labels, size)),
        )?;
        if let Some((view, stats)) = &s.leadership {
            leadership::write_metrics(families, view, stats)?;
        }
        // The transport's value follows certificate reloads; the driver's is what it was told at
        // start (for transports that hold no certificate).
        if let Some(not_after) = s.transport.tls.cert_not_after.or(s.cert_not_after) {
            families.gauge(
                &TRANSPORT_CERT_EXPIRY,
                u64::try_from(not_after).unwrap_or(0),
            )?;
        }
        families.gauge(&SHARD_DRAINING, u64::from(s.draining))?;
        let rtt = &s.stats.probe_rtt;
        families.histograms(
            &GOSSIP_PROBE_RTT,
            [(
                [],
                Histogram {
                    bounds: &RttHistogram::BOUNDS,
                    buckets: &rtt.buckets,
                    sum: rtt.sum,
                    count: rtt.count,
                },
            )],
        )?;
        if let Some((view, stats)) = &s.leadership
            && view.raft.is_some()
        {
            let v = &stats.vacancy;
            families.histograms(
                &LEADERSHIP_VACANCY,
                [
                    (["shard"], v.shard.with_bounds(&vacancy::BOUNDS)),
                    (["other"], v.other.with_bounds(&vacancy::BOUNDS)),
                ],
            )?;
            families.histograms(
                &LEADERSHIP_RAFT_LEADERLESS,
                [([], v.raft.with_bounds(&vacancy::BOUNDS))],
            )?;
        }
        if let Some(q) = &s.queues {
            queues::write_metrics(families, q)?;
        }
        s.chaos.write(families)?;
        s.transport.write(families)
    }
}

#[cfg(test)]
mod tests {
    use meshkit::membership::Stats;
    use meshkit::{Duration, Incarnation, NodeId};

    use super::*;
    use meshkit_net::transport::TransportStats;
    use meshkit_runtime::driver::PeerInfo;

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
            traffic: meshkit_runtime::driver::Traffic::default(),
            health_score: 0,
            leadership: None,
            draining: false,
            joined: false,
            cert_not_after: Some(1_900_000_000),
            queues: None,
            chaos: meshkit_runtime::chaos_host::ChaosStats::default(),
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
