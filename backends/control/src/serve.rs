//! Serving the control API on one port number: HTTP/2 and HTTP/1.1 over TLS on TCP, HTTP/3 over
//! QUIC on UDP (docs/design.md §4).
//!
//! Both paths serve the same axum [`Router`] as a tower service. Before the router sees a
//! request, the server inserts two extensions: the client's verified leaf certificate as
//! [`ClientCertificate`] (what authorization reads) and the [`ServerStats`] that `/metrics`
//! renders. Responses over TCP carry `Alt-Svc: h3=":<port>"; ma=86400`, so a client that came
//! over TCP learns that HTTP/3 is on the same port number.
//!
//! ## Limits
//!
//! Which connections each listener keeps, and for how long, is [`super::admission`]'s: a total,
//! permits reserved for clients with a certificate, a cap per source address on anonymous
//! connections, deadlines for the handshake, the first request and idleness
//! ([`ConnectionLimits`], set with [`ControlServer::with_limits`]). A connection carries at most
//! [`MAX_STREAMS_PER_CONNECTION`] concurrent requests, HTTP/1.1 request heads must arrive within
//! [`HEADER_READ_TIMEOUT`], and request bodies are read only once authorization has passed, up to
//! [`super::h3::MAX_REQUEST_BODY_BYTES`] over HTTP/3 (the control API takes small bodies); flow
//! control windows ([`RECEIVE_WINDOW_BYTES`]) bound what a client can push before a handler
//! reads it.
//!
//! ## Certificates
//!
//! The server takes its TLS identity from a [`TlsSource`]: when the reloader
//! ([`meshkit_net::reload`]) publishes a new one, TLS over TCP uses it for every connection accepted
//! from then on and the QUIC endpoint's server configuration is replaced; open connections keep
//! going. A client certificate the server refuses (expired, unknown CA, ...) is counted and
//! logged by [`TlsStats`] under the listener `control`.
//!
//! ## Shutdown
//!
//! [`ControlServer::serve`] owns every connection task in a [`JoinSet`]: dropping or aborting
//! the future closes the listeners and every open connection with it.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use http::header::ALT_SVC;
use http::{HeaderValue, Request, Version};
use http_body_util::BodyExt as _;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use thiserror::Error;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinSet;
use tokio_rustls::TlsAcceptor;

use super::admission::{Activity, Admission, Handshaking, Transport};
use crate::grpc::health::ConnectionWatchers;
use meshkit_net::reload::TlsSource;
use meshkit_net::tls::{ClientCertificate, TlsError, TlsIdentity};
use meshkit_net::tls_stats::{Listener, TlsStats};

pub use super::admission::{ConnectionLimits, HANDSHAKE_TIMEOUT, MAX_CONNECTIONS};
pub use crate::listener::{
    HEADER_READ_TIMEOUT, MAX_STREAMS_PER_CONNECTION, RECEIVE_WINDOW_BYTES,
    STREAM_RECEIVE_WINDOW_BYTES, ServerStats,
};
use crate::listener::{handle, until_answered};
use meshkit_api::alpn::{ALPN_H2, ALPN_H3, ALPN_HTTP11, HttpProtocol};

/// How long a client may remember the `Alt-Svc` advertisement of HTTP/3, in seconds.
pub const ALT_SVC_MAX_AGE_SECS: u32 = 86_400;
/// How many times [`ControlServer::bind`] with port 0 tries a fresh TCP port whose UDP twin is
/// taken before it gives up.
const BIND_ATTEMPTS: usize = 16;

/// Why the control server could not start. Nothing is left bound when this is returned.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum ControlError {
    /// The node's TLS material could not make a server configuration.
    #[error("control TLS: {0}")]
    Tls(#[from] TlsError),
    /// The TCP port could not be bound.
    #[error("control endpoint {addr} (TCP): {source}")]
    BindTcp {
        /// The address.
        addr: SocketAddr,
        /// Why.
        source: std::io::Error,
    },
    /// The UDP port (the same number as the TCP one) could not be bound.
    #[error("control endpoint {addr} (UDP, HTTP/3): {source}")]
    BindUdp {
        /// The address.
        addr: SocketAddr,
        /// Why.
        source: std::io::Error,
    },
}

/// The control API's listeners, bound on one port number: TCP (TLS, `h2` and `http/1.1`) and
/// UDP (QUIC, `h3`). Start it with [`ControlServer::serve`].
#[derive(Debug)]
pub struct ControlServer {
    tcp: TcpListener,
    quic: quinn::Endpoint,
    tls: Arc<rustls::ServerConfig>,
    source: TlsSource,
    addr: SocketAddr,
    stats: Arc<ServerStats>,
    limits: ConnectionLimits,
    /// Set by a chaos `transport-downgrade`: HTTP/3 connections are refused while it is.
    refuse_h3: watch::Receiver<bool>,
}

/// The server configurations of both transports for `identity`: TLS over TCP, and QUIC.
fn server_configs(
    identity: &TlsIdentity,
) -> Result<(rustls::ServerConfig, quinn::ServerConfig), TlsError> {
    let tcp = identity.control_server_config(&[ALPN_H2, ALPN_HTTP11])?;
    let quic = super::h3::server_config(identity.control_server_config(&[ALPN_H3])?)?;
    Ok((tcp, quic))
}

/// Applies each identity `source` publishes: to TLS over TCP through `tcp`, to QUIC on `quic`.
async fn follow_tls(
    mut source: TlsSource,
    tcp: watch::Sender<Arc<rustls::ServerConfig>>,
    quic: quinn::Endpoint,
) {
    while let Some(identity) = source.changed().await {
        match server_configs(&identity) {
            Ok((tcp_config, quic_config)) => {
                tcp.send_replace(Arc::new(tcp_config));
                quic.set_server_config(Some(quic_config));
                tracing::debug!("control endpoint: new handshakes use the reloaded certificate");
            }
            // The reloader built these configurations already; this cannot happen in practice.
            Err(error) => tracing::warn!(
                %error,
                "control endpoint: reloaded TLS material unusable; keeping the previous"
            ),
        }
    }
}

impl ControlServer {
    /// Binds TCP and UDP on `addr`. With port 0 the OS picks a TCP port and the UDP socket takes
    /// the same number (a few fresh ports are tried if that number is taken on UDP).
    pub async fn bind(addr: SocketAddr, identity: &TlsIdentity) -> Result<Self, ControlError> {
        Self::bind_with(addr, TlsSource::fixed(identity.clone()), Arc::default()).await
    }

    /// [`ControlServer::bind`] with the identity `tls` gives now, following its later changes,
    /// and counting TLS events into `tls_stats` (shared with the node's other listeners).
    pub async fn bind_with(
        addr: SocketAddr,
        tls: TlsSource,
        tls_stats: Arc<TlsStats>,
    ) -> Result<Self, ControlError> {
        let (tcp_config, quic_config) = server_configs(&tls.current())?;
        let (source, tls) = (tls, Arc::new(tcp_config));
        let mut last_error = None;
        for _ in 0..BIND_ATTEMPTS {
            let tcp = TcpListener::bind(addr)
                .await
                .map_err(|source| ControlError::BindTcp { addr, source })?;
            let bound = tcp
                .local_addr()
                .map_err(|source| ControlError::BindTcp { addr, source })?;
            match quinn::Endpoint::server(quic_config.clone(), bound) {
                Ok(quic) => {
                    return Ok(Self {
                        tcp,
                        quic,
                        tls,
                        source,
                        addr: bound,
                        stats: Arc::new(ServerStats::with_tls(tls_stats)),
                        limits: ConnectionLimits::default(),
                        // No switch: one that never changes (its sender is gone).
                        refuse_h3: watch::channel(false).1,
                    });
                }
                Err(source) if addr.port() == 0 => {
                    tracing::debug!(%bound, %source, "UDP twin of a fresh TCP port taken; retrying");
                    last_error = Some(ControlError::BindUdp {
                        addr: bound,
                        source,
                    });
                }
                Err(source) => return Err(ControlError::BindUdp { addr, source }),
            }
        }
        Err(last_error.unwrap_or(ControlError::BindUdp {
            addr,
            source: std::io::ErrorKind::AddrInUse.into(),
        }))
    }

    /// The server with `limits` on each listener instead of the defaults.
    #[must_use]
    pub fn with_limits(mut self, limits: ConnectionLimits) -> Self {
        self.limits = limits;
        self
    }

    /// The server refusing every HTTP/3 connection while `refuse_h3` holds `true` (the node's
    /// chaos `transport-downgrade`), and closing those already open when it turns `true`:
    /// clients fall back to HTTP/2 over TCP, which is not affected.
    #[must_use]
    pub fn with_h3_switch(mut self, refuse_h3: watch::Receiver<bool>) -> Self {
        self.refuse_h3 = refuse_h3;
        self
    }

    /// The address bound, the same port number on TCP and UDP.
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// The counters this server updates (also rendered by `/metrics`).
    pub fn stats(&self) -> Arc<ServerStats> {
        self.stats.clone()
    }

    /// Serves `router` over both transports until the future is dropped, which closes the
    /// listeners and every connection.
    pub async fn serve(self, router: Router) {
        let (tcp_tls, tcp_tls_now) = watch::channel(self.tls);
        let tcp = serve_tls_from(
            self.tcp,
            tcp_tls_now,
            router.clone(),
            self.stats.clone(),
            self.limits,
        );
        let follow = follow_tls(self.source, tcp_tls, self.quic.clone());
        let quic = super::h3::serve_h3(self.quic, router, self.stats, self.limits, self.refuse_h3);
        tokio::join!(tcp, quic, follow);
    }
}

/// Serves `router` over TLS on `listener` (HTTP/2 and HTTP/1.1, by ALPN) until the future is
/// dropped, with the default [`ConnectionLimits`]. [`ControlServer::serve`] runs this beside
/// HTTP/3; alone, it is a server whose UDP side is unreachable (what the fallback tests need).
pub async fn serve_tls(
    listener: TcpListener,
    tls: Arc<rustls::ServerConfig>,
    router: Router,
    stats: Arc<ServerStats>,
) {
    serve_tls_with(listener, tls, router, stats, ConnectionLimits::default()).await;
}

/// [`serve_tls`] with `limits`.
pub async fn serve_tls_with(
    listener: TcpListener,
    tls: Arc<rustls::ServerConfig>,
    router: Router,
    stats: Arc<ServerStats>,
    limits: ConnectionLimits,
) {
    // The sender is dropped: the configuration never changes.
    serve_tls_from(listener, watch::channel(tls).1, router, stats, limits).await;
}

/// [`serve_tls`] with the configuration `tls` holds when each connection is accepted.
async fn serve_tls_from(
    listener: TcpListener,
    tls: watch::Receiver<Arc<rustls::ServerConfig>>,
    router: Router,
    stats: Arc<ServerStats>,
    limits: ConnectionLimits,
) {
    let port = listener.local_addr().map_or(0, |a| a.port());
    let alt_svc = HeaderValue::try_from(format!("h3=\":{port}\"; ma={ALT_SVC_MAX_AGE_SECS}"))
        .expect("digits and ASCII punctuation make a valid header value");
    let admission = Admission::new(limits, Transport::Tcp, stats.admission().clone());
    let mut connections = JoinSet::new();
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(error) => {
                // Accept errors are per connection (e.g. out of file descriptors): pause briefly
                // rather than spin, and go on.
                tracing::warn!(%error, "control endpoint: accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        while connections.try_join_next().is_some() {}
        // A refused connection is closed at once (dropped): no TLS, no answer.
        let permit = match admission.admit(peer) {
            Ok(permit) => permit,
            Err(reason) => {
                tracing::debug!(%peer, ?reason, "control endpoint: connection refused");
                continue;
            }
        };
        let acceptor = TlsAcceptor::from(tls.borrow().clone());
        connections.spawn(serve_tls_connection(
            stream,
            peer,
            acceptor,
            router.clone(),
            stats.clone(),
            alt_svc.clone(),
            permit,
        ));
    }
}

async fn serve_tls_connection(
    stream: TcpStream,
    peer: SocketAddr,
    acceptor: TlsAcceptor,
    router: Router,
    stats: Arc<ServerStats>,
    alt_svc: HeaderValue,
    permit: Handshaking,
) {
    // Answers are small and written in a few pieces (HTTP/2 frames): without this, Nagle's
    // algorithm and delayed acknowledgements add about 40 ms to some of them.
    if let Err(error) = stream.set_nodelay(true) {
        tracing::debug!(%peer, %error, "control endpoint: cannot set TCP_NODELAY");
    }
    let limits = *permit.limits();
    let handshake = tokio::time::timeout(limits.handshake_timeout(), acceptor.accept(stream));
    let tls = match handshake.await {
        Ok(Ok(tls)) => tls,
        Ok(Err(error)) => {
            stats.count_tcp_handshake_failed();
            if !stats
                .tls()
                .record_io(Listener::Control, peer, &error)
                .certificate_refused
            {
                tracing::debug!(%peer, %error, "control endpoint: TLS handshake failed");
            }
            return;
        }
        Err(_) => {
            stats.count_tcp_handshake_failed();
            stats.tls().record_other(Listener::Control);
            tracing::debug!(%peer, "control endpoint: TLS handshake timed out");
            return;
        }
    };
    let certificate = ClientCertificate(
        tls.get_ref()
            .1
            .peer_certificates()
            .and_then(|chain| chain.first())
            .map(|leaf| leaf.clone().into_owned()),
    );
    let Some(_admitted) = permit.finish(certificate.0.is_some(), peer) else {
        return;
    };
    let activity = Activity::new();
    let watches = ConnectionWatchers::default();
    let service = {
        let activity = activity.clone();
        let stats = stats.clone();
        hyper::service::service_fn(move |request: Request<Incoming>| {
            let in_flight = activity.start();
            let protocol = if request.version() == Version::HTTP_2 {
                HttpProtocol::H2
            } else {
                HttpProtocol::Http11
            };
            let (mut parts, body) = request.into_parts();
            parts.extensions.insert(watches.clone());
            let body = counted_body(Body::new(body), protocol, stats.clone());
            let response = handle(
                router.clone(),
                Request::from_parts(parts, body),
                protocol,
                certificate.clone(),
                stats.clone(),
            );
            let alt_svc = alt_svc.clone();
            async move {
                let mut response = response.await;
                response.headers_mut().insert(ALT_SVC, alt_svc);
                Ok::<_, Infallible>(until_answered(response, in_flight))
            }
        })
    };
    let mut builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_READ_TIMEOUT);
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_concurrent_streams(MAX_STREAMS_PER_CONNECTION)
        .initial_stream_window_size(STREAM_RECEIVE_WINDOW_BYTES)
        .initial_connection_window_size(RECEIVE_WINDOW_BYTES)
        .keep_alive_interval(Some(super::admission::H2_KEEP_ALIVE_INTERVAL))
        .keep_alive_timeout(super::admission::H2_KEEP_ALIVE_INTERVAL);
    let connection = builder.serve_connection(TokioIo::new(tls), service);
    tokio::pin!(connection);
    let result = tokio::select! {
        result = connection.as_mut() => result,
        reason = activity.deadline(&limits) => {
            stats.admission().count_closed(Transport::Tcp, reason);
            tracing::debug!(%peer, ?reason, "control endpoint: closing a quiet connection");
            // GOAWAY (HTTP/2) or close (HTTP/1.1): nothing is in flight, so this is quick; a
            // peer that does not let it finish is dropped.
            connection.as_mut().graceful_shutdown();
            tokio::time::timeout(super::admission::CLOSE_GRACE, connection.as_mut())
                .await
                .unwrap_or(Ok(()))
        }
    };
    if let Err(error) = result {
        tracing::debug!(%peer, %error, "control endpoint: connection ended with an error");
    }
}

/// `body`, counting the bytes handlers read from it.
fn counted_body(body: Body, protocol: HttpProtocol, stats: Arc<ServerStats>) -> Body {
    Body::new(body.map_frame(move |frame| {
        if let Some(data) = frame.data_ref() {
            stats.count_request_body_bytes(protocol, data.len());
        }
        frame
    }))
}
