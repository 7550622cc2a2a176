//! What the two listeners of the control API share: the counters they update
//! ([`ServerStats`]), the per-connection stream and flow-control bounds they both apply, and the
//! hand-over of one request to the router. [`crate::serve`] (TCP, and the server of both
//! transports) and [`crate::h3`] (QUIC) both depend on this module, and on nothing of each other
//! but `serve`'s use of `h3`.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use http::{Request, Response};
use http_body_util::BodyExt as _;
use tower_service::Service as _;

use crate::admission::{AdmissionStats, InFlight};
use meshkit_api::alpn::HttpProtocol;
use meshkit_net::tls::ClientCertificate;
use meshkit_net::tls_stats::TlsStats;

/// Time an HTTP/1.1 client has to send a request head.
pub const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);
/// Most concurrent requests (HTTP/2 or HTTP/3 streams) on one connection.
pub const MAX_STREAMS_PER_CONNECTION: u32 = 100;
/// Bytes of request bodies one stream may have in flight before a handler reads them (HTTP/2
/// and HTTP/3 flow control). Control API bodies are a few hundred bytes; what a client pushes
/// before the server reads (or refuses) a request is bounded by this, per stream.
pub const STREAM_RECEIVE_WINDOW_BYTES: u32 = 64 * 1024;
/// Bytes of request bodies one connection may have in flight before handlers read them, over
/// all its streams: what one connection can make the server buffer.
pub const RECEIVE_WINDOW_BYTES: u32 = 256 * 1024;
/// Server-side counters of the control API's transports, rendered under `mesh_transport_control_*`.
/// Failed handshakes are also counted, by reason, in the node's [`TlsStats`] (listener
/// `control`), which the transport's counters render.
#[derive(Debug, Default)]
pub struct ServerStats {
    requests_h3: AtomicU64,
    requests_h2: AtomicU64,
    requests_http11: AtomicU64,
    handshakes_failed_tcp: AtomicU64,
    handshakes_failed_quic: AtomicU64,
    body_bytes_h3: AtomicU64,
    body_bytes_h2: AtomicU64,
    body_bytes_http11: AtomicU64,
    admission: Arc<AdmissionStats>,
    tls: Arc<TlsStats>,
}

impl ServerStats {
    /// Counters that also count TLS events into `tls` (shared with the node's other listeners).
    pub fn with_tls(tls: Arc<TlsStats>) -> Self {
        Self {
            tls,
            ..Self::default()
        }
    }

    /// The TLS counters failed handshakes are counted in.
    pub fn tls(&self) -> &TlsStats {
        &self.tls
    }

    /// Requests served over `protocol`.
    pub fn requests(&self, protocol: HttpProtocol) -> u64 {
        self.requests_counter(protocol).load(Ordering::Relaxed)
    }

    /// TLS handshakes that failed or timed out on TCP.
    pub fn tcp_handshakes_failed(&self) -> u64 {
        self.handshakes_failed_tcp.load(Ordering::Relaxed)
    }

    /// QUIC (TLS 1.3) handshakes that failed or timed out.
    pub fn quic_handshakes_failed(&self) -> u64 {
        self.handshakes_failed_quic.load(Ordering::Relaxed)
    }

    /// Request body bytes handlers have read over `protocol`.
    pub fn request_body_bytes(&self, protocol: HttpProtocol) -> u64 {
        self.body_bytes_counter(protocol).load(Ordering::Relaxed)
    }

    /// Connections refused and closed by the listeners' limits.
    pub fn admission(&self) -> &Arc<AdmissionStats> {
        &self.admission
    }

    fn body_bytes_counter(&self, protocol: HttpProtocol) -> &AtomicU64 {
        match protocol {
            HttpProtocol::H3 => &self.body_bytes_h3,
            HttpProtocol::H2 => &self.body_bytes_h2,
            HttpProtocol::Http11 => &self.body_bytes_http11,
        }
    }

    pub(crate) fn count_request_body_bytes(&self, protocol: HttpProtocol, bytes: usize) {
        self.body_bytes_counter(protocol)
            .fetch_add(bytes as u64, Ordering::Relaxed);
    }

    fn requests_counter(&self, protocol: HttpProtocol) -> &AtomicU64 {
        match protocol {
            HttpProtocol::H3 => &self.requests_h3,
            HttpProtocol::H2 => &self.requests_h2,
            HttpProtocol::Http11 => &self.requests_http11,
        }
    }

    pub(crate) fn count_request(&self, protocol: HttpProtocol) {
        self.requests_counter(protocol)
            .fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn count_tcp_handshake_failed(&self) {
        self.handshakes_failed_tcp.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn count_quic_handshake_failed(&self) {
        self.handshakes_failed_quic.fetch_add(1, Ordering::Relaxed);
    }
}

impl meshkit_api::metrics::Source for ServerStats {
    /// Requests, handshakes and body bytes of the control server, then its listeners'
    /// connection counters ([`AdmissionStats`]).
    fn write(&self, families: &mut meshkit_api::metrics::Families<'_, '_>) -> std::fmt::Result {
        use meshkit_api::metrics::catalogue::{
            CONTROL_HANDSHAKES_FAILED, CONTROL_REQUEST_BODY_BYTES, CONTROL_REQUESTS,
        };
        families.counters(
            &CONTROL_REQUESTS,
            HttpProtocol::ALL.map(|p| ([p.as_str()], self.requests(p))),
        )?;
        families.counters(
            &CONTROL_HANDSHAKES_FAILED,
            [
                (["tcp"], self.tcp_handshakes_failed()),
                (["quic"], self.quic_handshakes_failed()),
            ],
        )?;
        families.counters(
            &CONTROL_REQUEST_BODY_BYTES,
            HttpProtocol::ALL.map(|p| ([p.as_str()], self.request_body_bytes(p))),
        )?;
        meshkit_api::metrics::Source::write(&self.admission, families)
    }
}

/// `response`, keeping `in_flight` until its body is done (or dropped): a long-lived answer keeps
/// its connection from the idle deadline.
pub(crate) fn until_answered(response: Response<Body>, in_flight: InFlight) -> Response<Body> {
    response.map(|body| {
        Body::new(body.map_frame(move |frame| {
            // Moved into the closure: dropped with the body.
            let _in_flight = &in_flight;
            frame
        }))
    })
}

/// One request through the router, with the extensions every handler may read.
pub(crate) async fn handle(
    mut router: Router,
    mut request: Request<Body>,
    protocol: HttpProtocol,
    certificate: ClientCertificate,
    stats: Arc<ServerStats>,
) -> Response<Body> {
    stats.count_request(protocol);
    request.extensions_mut().insert(certificate);
    request.extensions_mut().insert(stats);
    match router.call(request).await {
        Ok(response) => response,
        Err(never) => match never {},
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// HELP then TYPE then samples, one sample per label value, counters end in `_total`.
    #[test]
    fn server_stats_render_as_text_exposition() {
        let stats = ServerStats::default();
        stats.count_request(HttpProtocol::H3);
        stats.count_request(HttpProtocol::H3);
        stats.count_request(HttpProtocol::Http11);
        stats.count_quic_handshake_failed();
        let text = meshkit_api::metrics::encode(stats).expect("the exposition");
        for sample in [
            "mesh_transport_control_requests_total{protocol=\"h3\"} 2\n",
            "mesh_transport_control_requests_total{protocol=\"h2\"} 0\n",
            "mesh_transport_control_requests_total{protocol=\"http1.1\"} 1\n",
            "mesh_transport_control_handshakes_failed_total{transport=\"tcp\"} 0\n",
            "mesh_transport_control_handshakes_failed_total{transport=\"quic\"} 1\n",
            "mesh_transport_control_connections_refused_total{transport=\"tcp\",reason=\"address\"} 0\n",
            "mesh_transport_control_connections{transport=\"quic\",client=\"anonymous\"} 0\n",
        ] {
            assert!(text.contains(sample), "{sample} missing from:\n{text}");
        }
        let mut announced = None;
        for line in text.lines() {
            if let Some(rest) = line.strip_prefix("# TYPE ") {
                let (name, kind) = rest.split_once(' ').expect("a TYPE line names its kind");
                assert!(kind == "counter" || kind == "gauge", "{line}");
                assert_eq!(kind == "counter", name.ends_with("_total"), "{line}");
                announced = Some(name.to_owned());
            } else if !line.starts_with("# HELP ") {
                let name = line.split(['{', ' ']).next().unwrap_or_default();
                assert_eq!(Some(name), announced.as_deref(), "{line}");
            }
        }
    }
}
