//! The control API over HTTP/3: quinn accepts QUIC connections, h3 turns their streams into
//! requests, and each request goes through the same axum router as over TCP.
//!
//! Request bodies are read whole (up to [`MAX_REQUEST_BODY_BYTES`]) before the router sees the
//! request; response bodies are streamed frame by frame, so long-lived answers (server-sent
//! events) work as they do over HTTP/2.

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use bytes::{Buf, Bytes, BytesMut};
use http::{Request, Response, StatusCode};
use http_body_util::BodyExt as _;
use rustls::pki_types::CertificateDer;
use thiserror::Error;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::task::JoinSet;

use super::serve::{
    HANDSHAKE_TIMEOUT, HttpProtocol, MAX_CONNECTIONS, MAX_STREAMS_PER_CONNECTION, ServerStats,
    handle, plain,
};
use crate::tls::{ClientCertificate, TlsError};
use crate::tls_stats::Listener;

/// Largest request body the HTTP/3 path reads, in bytes; a larger one is answered with 413.
pub const MAX_REQUEST_BODY_BYTES: usize = 1024 * 1024;
/// Time a client has to send a whole request body over HTTP/3.
pub const REQUEST_BODY_TIMEOUT: Duration = Duration::from_secs(10);
/// A QUIC connection with no traffic for this long is closed.
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(30);

/// Why one HTTP/3 request could not be served (logged at debug level; the connection goes on).
#[derive(Debug, Error)]
enum RequestError {
    /// The stream failed: the peer reset it, or the connection went away.
    #[error(transparent)]
    Stream(#[from] h3::error::StreamError),
    /// The router's response body failed while streaming.
    #[error("response body: {0}")]
    Body(axum::Error),
    /// The request body did not arrive within [`REQUEST_BODY_TIMEOUT`].
    #[error("request body not received within {0:?}")]
    BodyTimeout(Duration),
}

/// The quinn server configuration of the control API: `tls` (ALPN `h3`) and stream limits.
pub(super) fn server_config(tls: rustls::ServerConfig) -> Result<quinn::ServerConfig, TlsError> {
    let crypto = quinn::crypto::rustls::QuicServerConfig::try_from(tls)?;
    let mut config = quinn::ServerConfig::with_crypto(Arc::new(crypto));
    let mut transport = quinn::TransportConfig::default();
    transport
        .max_concurrent_bidi_streams(MAX_STREAMS_PER_CONNECTION.into())
        .max_idle_timeout(Some(
            quinn::IdleTimeout::try_from(IDLE_TIMEOUT)
                .expect("30 s is far below QUIC's idle timeout limit"),
        ));
    config.transport_config(Arc::new(transport));
    Ok(config)
}

/// Serves `router` over HTTP/3 on `endpoint` until the future is dropped.
pub(super) async fn serve_h3(endpoint: quinn::Endpoint, router: Router, stats: Arc<ServerStats>) {
    let limit = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    let mut connections = JoinSet::new();
    while let Some(incoming) = endpoint.accept().await {
        while connections.try_join_next().is_some() {}
        let Ok(permit) = limit.clone().try_acquire_owned() else {
            stats.count_refused();
            incoming.refuse();
            continue;
        };
        connections.spawn(serve_connection(
            incoming,
            router.clone(),
            stats.clone(),
            permit,
        ));
    }
}

async fn serve_connection(
    incoming: quinn::Incoming,
    router: Router,
    stats: Arc<ServerStats>,
    _permit: OwnedSemaphorePermit,
) {
    let peer = incoming.remote_address();
    let connection = match tokio::time::timeout(HANDSHAKE_TIMEOUT, incoming).await {
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
    loop {
        match h3.accept().await {
            Ok(Some(resolver)) => {
                while requests.try_join_next().is_some() {}
                let router = router.clone();
                let certificate = certificate.clone();
                let stats = stats.clone();
                requests.spawn(async move {
                    let result = async {
                        let (request, stream) = resolver.resolve_request().await?;
                        serve_request(request, stream, router, certificate, stats).await
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
}

async fn serve_request(
    request: Request<()>,
    stream: h3::server::RequestStream<h3_quinn::BidiStream<Bytes>, Bytes>,
    router: Router,
    certificate: ClientCertificate,
    stats: Arc<ServerStats>,
) -> Result<(), RequestError> {
    let (mut send, mut recv) = stream.split();
    let body = tokio::time::timeout(REQUEST_BODY_TIMEOUT, async {
        let mut body = BytesMut::new();
        while let Some(mut chunk) = recv.recv_data().await? {
            if body.len() + chunk.remaining() > MAX_REQUEST_BODY_BYTES {
                return Ok(None);
            }
            while chunk.has_remaining() {
                let part = chunk.chunk();
                body.extend_from_slice(part);
                let n = part.len();
                chunk.advance(n);
            }
        }
        Ok::<_, RequestError>(Some(body.freeze()))
    })
    .await
    .map_err(|_| RequestError::BodyTimeout(REQUEST_BODY_TIMEOUT))??;
    let response = match body {
        Some(body) => {
            handle(
                router,
                request.map(|()| Body::from(body)),
                HttpProtocol::H3,
                certificate,
                stats,
            )
            .await
        }
        None => plain(StatusCode::PAYLOAD_TOO_LARGE, "request body too large\n"),
    };
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
