//! The control API over HTTP/3: quinn accepts QUIC connections, h3 turns their streams into
//! requests, and each request goes through the same axum router as over TCP.
//!
//! Request bodies are streamed to the router as its handlers read them (up to
//! [`MAX_REQUEST_BODY_BYTES`]), so authorization answers before any body byte is read, as over
//! HTTP/2; response bodies are streamed frame by frame, so long-lived answers (server-sent
//! events) work as they do over HTTP/2.

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use bytes::{Buf, Bytes};
use futures_util::StreamExt as _;
use http::{Request, Response};
use http_body::Frame;
use http_body_util::BodyExt as _;
use rustls::pki_types::CertificateDer;
use thiserror::Error;
use tokio::sync::watch;
use tokio::task::JoinSet;

use super::admission::{Activity, Admission, ConnectionLimits, Handshaking, Transport};
use crate::grpc::health::ConnectionWatchers;
use crate::listener::{
    HEADER_READ_TIMEOUT, MAX_STREAMS_PER_CONNECTION, RECEIVE_WINDOW_BYTES,
    STREAM_RECEIVE_WINDOW_BYTES, ServerStats, handle, until_answered,
};
use meshkit_api::alpn::HttpProtocol;
use meshkit_net::tls::{ClientCertificate, TlsError};
use meshkit_net::tls_stats::Listener;

/// Largest request body the HTTP/3 path reads, in bytes; a larger one is answered with 413.
pub const MAX_REQUEST_BODY_BYTES: usize = 1024 * 1024;
/// Time a client has to send a whole request body over HTTP/3.
pub const REQUEST_BODY_TIMEOUT: Duration = Duration::from_secs(10);
/// A QUIC connection with no packets for this long is closed (a peer that went away). One that
/// keeps sending packets but no request is closed by the idle deadline of
/// [`super::admission`].
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(30);
/// `H3_NO_ERROR` (RFC 9114 §8.1): the code a connection closed for quietness carries.
const H3_NO_ERROR: u32 = 0x100;

/// Why one HTTP/3 request could not be served (logged at debug level; the connection goes on).
#[derive(Debug, Error)]
enum RequestError {
    /// The stream failed: the peer reset it, or the connection went away.
    #[error(transparent)]
    Stream(#[from] h3::error::StreamError),
    /// The router's response body failed while streaming.
    #[error("response body: {0}")]
    Body(axum::Error),
}

/// Why a request body stopped before its end (the handler reading it sees this error). Always
/// the client's doing; nothing changed on the node.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum RequestBodyError {
    /// The stream failed: the peer reset it, or the connection went away.
    #[error(transparent)]
    Stream(#[from] h3::error::StreamError),
    /// The body did not arrive within [`REQUEST_BODY_TIMEOUT`] of the request head.
    #[error("request body not received within {0:?}")]
    Timeout(Duration),
}

/// The request body of `recv` as the router's [`Body`]: read only when a handler asks, bounded
/// by [`MAX_REQUEST_BODY_BYTES`] (a longer one fails with a length-limit error, which axum's
/// extractors answer with 413) and by [`REQUEST_BODY_TIMEOUT`] from now.
fn request_body(
    recv: h3::server::RequestStream<h3_quinn::RecvStream, Bytes>,
    stats: Arc<ServerStats>,
) -> Body {
    let deadline = tokio::time::Instant::now() + REQUEST_BODY_TIMEOUT;
    let chunks = futures_util::stream::unfold(Some(recv), move |recv| {
        let stats = stats.clone();
        async move {
            let mut recv = recv?;
            match tokio::time::timeout_at(deadline, recv.recv_data()).await {
                Ok(Ok(Some(mut chunk))) => {
                    let bytes = chunk.copy_to_bytes(chunk.remaining());
                    stats.count_request_body_bytes(HttpProtocol::H3, bytes.len());
                    Some((Ok(bytes), Some(recv)))
                }
                Ok(Ok(None)) => None,
                Ok(Err(error)) => Some((Err(RequestBodyError::Stream(error)), None)),
                Err(_) => Some((Err(RequestBodyError::Timeout(REQUEST_BODY_TIMEOUT)), None)),
            }
        }
    });
    let body = http_body_util::StreamBody::new(chunks.map(|chunk| chunk.map(Frame::data)));
    Body::new(http_body_util::Limited::new(body, MAX_REQUEST_BODY_BYTES))
}

/// The quinn server configuration of the control API: `tls` (ALPN `h3`) and stream limits.
pub(super) fn server_config(tls: rustls::ServerConfig) -> Result<quinn::ServerConfig, TlsError> {
    let crypto = quinn::crypto::rustls::QuicServerConfig::try_from(tls)?;
    let mut config = quinn::ServerConfig::with_crypto(Arc::new(crypto));
    let mut transport = quinn::TransportConfig::default();
    transport
        .max_concurrent_bidi_streams(MAX_STREAMS_PER_CONNECTION.into())
        // What a client can push before a handler reads (or a refusal drops) a request body:
        // quinn's defaults (1.25 MB per stream, unbounded per connection) would let one
        // anonymous connection park 100 x 1.25 MB in the server (docs/security.md).
        .stream_receive_window(STREAM_RECEIVE_WINDOW_BYTES.into())
        .receive_window(RECEIVE_WINDOW_BYTES.into())
        .max_idle_timeout(Some(
            quinn::IdleTimeout::try_from(IDLE_TIMEOUT)
                .expect("30 s is far below QUIC's idle timeout limit"),
        ));
    config.transport_config(Arc::new(transport));
    Ok(config)
}

/// Serves `router` over HTTP/3 on `endpoint` until the future is dropped.
pub(super) async fn serve_h3(
    endpoint: quinn::Endpoint,
    router: Router,
    stats: Arc<ServerStats>,
    limits: ConnectionLimits,
    refuse_h3: watch::Receiver<bool>,
) {
    let admission = Admission::new(limits, Transport::Quic, stats.admission().clone());
    let mut connections = JoinSet::new();
    while let Some(incoming) = endpoint.accept().await {
        while connections.try_join_next().is_some() {}
        // A chaos transport downgrade: refused at once, so clients fall back to HTTP/2.
        if *refuse_h3.borrow() {
            tracing::debug!(peer = %incoming.remote_address(), "control endpoint: HTTP/3 refused (chaos transport-downgrade)");
            incoming.refuse();
            continue;
        }
        // Limits per source address mean something only for addresses that answer: when
        // handshakes pile up, an unvalidated address must first echo a retry token (one round
        // trip), so spoofed sources cannot take another address's permits or fill the pool.
        if admission.handshakes_busy()
            && !incoming.remote_address_validated()
            && incoming.may_retry()
        {
            match incoming.retry() {
                Ok(()) => stats.admission().count_quic_retry(),
                Err(error) => tracing::debug!(%error, "control endpoint: QUIC retry failed"),
            }
            continue;
        }
        let permit = match admission.admit(incoming.remote_address()) {
            Ok(permit) => permit,
            Err(reason) => {
                tracing::debug!(peer = %incoming.remote_address(), ?reason, "control endpoint: QUIC connection refused");
                incoming.refuse();
                continue;
            }
        };
        connections.spawn(serve_connection(
            incoming,
            router.clone(),
            stats.clone(),
            permit,
            refuse_h3.clone(),
        ));
    }
}

/// Closes `quic` once the downgrade switch is set, woken by the switch itself (no timer: a
/// control connection held open, as the node's own `control-h3` probe holds one, costs no
/// wakeup while nothing changes); ends with the connection. A switch whose sender is gone
/// never changes again, so the connection then just runs its course.
async fn close_on_downgrade(
    quic: quinn::Connection,
    mut refuse_h3: watch::Receiver<bool>,
    peer: std::net::SocketAddr,
) {
    tokio::select! {
        _ = quic.closed() => {}
        // The borrowed value is dropped at once: it may not be held across an await.
        set = async { refuse_h3.wait_for(|refuse| *refuse).await.is_ok() } => {
            if set {
                tracing::debug!(%peer, "control endpoint: HTTP/3 connection closed (chaos transport-downgrade)");
                quic.close(quinn::VarInt::from_u32(H3_NO_ERROR), b"transport downgrade");
            } else {
                quic.closed().await;
            }
        }
    }
}

async fn serve_connection(
    incoming: quinn::Incoming,
    router: Router,
    stats: Arc<ServerStats>,
    permit: Handshaking,
    refuse_h3: watch::Receiver<bool>,
) {
    let peer = incoming.remote_address();
    let limits = *permit.limits();
    let connection = match tokio::time::timeout(limits.handshake_timeout(), incoming).await {
        Ok(Ok(connection)) => connection,
        Ok(Err(error)) => {
            stats.count_quic_handshake_failed();
            if !stats
                .tls()
                .record_quic(Listener::Control, peer, &error)
                .certificate_refused
            {
                tracing::debug!(%peer, %error, "control endpoint: QUIC handshake failed");
            }
            return;
        }
        Err(_) => {
            stats.count_quic_handshake_failed();
            stats.tls().record_other(Listener::Control);
            tracing::debug!(%peer, "control endpoint: QUIC handshake timed out");
            return;
        }
    };
    let certificate = ClientCertificate(
        connection
            .peer_identity()
            .and_then(|any| any.downcast::<Vec<CertificateDer<'static>>>().ok())
            .and_then(|chain| chain.into_iter().next()),
    );
    let Some(_admitted) = permit.finish(certificate.0.is_some(), peer) else {
        connection.close(quinn::VarInt::from_u32(H3_NO_ERROR), b"busy");
        return;
    };
    let quic = connection.clone();
    let activity = Activity::new();
    let watches = ConnectionWatchers::default();
    let mut h3 = match h3::server::builder()
        .build::<_, Bytes>(h3_quinn::Connection::new(connection))
        .await
    {
        Ok(h3) => h3,
        Err(error) => {
            tracing::debug!(%peer, %error, "control endpoint: HTTP/3 setup failed");
            return;
        }
    };
    let mut requests = JoinSet::new();
    // A downgrade closes this connection too. The watcher runs beside the request loop, not
    // as a branch of it: every pass of the loop starts the idle deadline again.
    let downgrade = tokio::spawn(close_on_downgrade(quic.clone(), refuse_h3, peer));
    loop {
        let accepted = tokio::select! {
            accepted = h3.accept() => accepted,
            reason = activity.deadline(&limits) => {
                stats.admission().count_closed(Transport::Quic, reason);
                tracing::debug!(%peer, ?reason, "control endpoint: closing a quiet connection");
                quic.close(quinn::VarInt::from_u32(H3_NO_ERROR), b"idle");
                break;
            }
        };
        match accepted {
            Ok(Some(resolver)) => {
                while requests.try_join_next().is_some() {}
                let router = router.clone();
                let certificate = certificate.clone();
                let stats = stats.clone();
                let activity = activity.clone();
                let watches = watches.clone();
                requests.spawn(async move {
                    let result = async {
                        // An opened stream is a request once its head has arrived, within
                        // HTTP/1.1's head deadline. Counting it in flight from the open let a
                        // stream that never sent a head keep its connection past every deadline.
                        let Ok(resolved) =
                            tokio::time::timeout(HEADER_READ_TIMEOUT, resolver.resolve_request())
                                .await
                        else {
                            tracing::debug!(%peer, "control endpoint: no HTTP/3 request head in time");
                            return Ok(());
                        };
                        let (mut request, stream) = resolved?;
                        request.extensions_mut().insert(watches);
                        let in_flight = activity.start();
                        serve_request(request, stream, router, certificate, stats, in_flight).await
                    };
                    if let Err(error) = result.await {
                        tracing::debug!(%peer, %error, "control endpoint: HTTP/3 request failed");
                    }
                });
            }
            Ok(None) => break,
            Err(error) => {
                if !error.is_h3_no_error() {
                    tracing::debug!(%peer, %error, "control endpoint: HTTP/3 connection ended");
                }
                break;
            }
        }
    }
    // Requests still streaming (server-sent events) end with the connection.
    requests.shutdown().await;
    downgrade.abort();
}

async fn serve_request(
    request: Request<()>,
    stream: h3::server::RequestStream<h3_quinn::BidiStream<Bytes>, Bytes>,
    router: Router,
    certificate: ClientCertificate,
    stats: Arc<ServerStats>,
    in_flight: super::admission::InFlight,
) -> Result<(), RequestError> {
    let (mut send, recv) = stream.split();
    // The body is read as the handler asks for it, after authorization ([`super::auth`]): a
    // refused request is answered without reading it (docs/security.md), and its unread
    // bytes are discarded when the stream is dropped (quinn sends STOP_SENDING).
    let body = request_body(recv, stats.clone());
    let response = handle(
        router,
        request.map(|()| body),
        HttpProtocol::H3,
        certificate,
        stats,
    )
    .await;
    // In flight until the whole answer is sent (server-sent events included).
    let response = until_answered(response, in_flight);
    let (parts, mut body) = response.into_parts();
    send.send_response(Response::from_parts(parts, ())).await?;
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(RequestError::Body)?;
        match frame.into_data() {
            Ok(data) => {
                if !data.is_empty() {
                    send.send_data(data).await?;
                }
            }
            Err(frame) => {
                if let Ok(trailers) = frame.into_trailers() {
                    send.send_trailers(trailers).await?;
                    return Ok(());
                }
            }
        }
    }
    send.finish().await?;
    Ok(())
}
