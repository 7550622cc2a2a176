//! # The control API client of a MeshKit node
//!
//! The client of `meshctl` and the tests: HTTP/3 first, HTTP/2 (or HTTP/1.1) over
//! TLS when HTTP/3 fails, with the failure remembered per server for a while.
//!
//! * The server is verified against the mesh's CA. Node certificates name `node-<id>` rather
//!   than an address, so by default any node certificate the CA signed is accepted (the CA is
//!   the mesh's own); [`ClientConfig::with_server_name`] pins one name instead.
//! * The client presents a certificate when given one ([`ClientConfig::with_identity`]) and
//!   sends `Authorization: Bearer <token>` when given a token; it makes no decision with them.
//! * HTTP/3 gets [`ClientConfig::with_h3_timeout`] to complete its QUIC handshake. When it
//!   times out, is refused, fails its handshake, or fails before a response arrives, the request
//!   goes over TCP and the fallback is counted ([`stats::ClientStats`]) with the protocol TCP
//!   negotiated and a [`FallbackReason`]; for [`ClientConfig::with_fallback_memory`] the server
//!   then goes straight to TCP (counted as [`FallbackReason::Remembered`]). A request whose
//!   HTTP/3 attempt failed after it was sent is retried over TCP only if its method is
//!   idempotent.
//! * Connections are kept per server and reused; a cached connection that fails is replaced
//!   once before the attempt counts as failed.
//! * Every request is bounded by [`ClientConfig::with_request_timeout`] overall and its body
//!   by [`MAX_RESPONSE_BYTES`].
//!
//! [`grpc`] holds the gRPC clients of the same surface (tonic's client half, any transport)
//! and [`grpc::GrpcChannel`], their transport over this client's TLS (HTTP/2 over TCP, its
//! certificate, token, CA check and source address): [`Client::grpc_channel`].

mod channel;
mod dial;
pub mod grpc;
mod h3;
pub mod stats;
mod tcp;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Method};
use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, RootCertStore, SignatureScheme};
use thiserror::Error;

pub use self::h3::H3Error;
pub use self::stats::{ClientStats, FallbackReason, StatsSnapshot};
use meshkit_api::alpn::{ALPN_H2, ALPN_H3, ALPN_HTTP11, HttpProtocol};
use meshkit_net::tls::{crypto_provider, node_dns_name, node_id_from_cert};

/// Largest response body read, in bytes.
pub const MAX_RESPONSE_BYTES: usize = 16 * 1024 * 1024;
/// Default time HTTP/3 gets to complete its QUIC handshake before the client falls back.
pub const DEFAULT_H3_TIMEOUT: Duration = Duration::from_secs(1);
/// Default time a TCP connection and its TLS handshake get.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(3);
/// Default bound on a whole request, fallback included.
pub const DEFAULT_REQUEST_TIMEOUT: Duration = Duration::from_secs(5);
/// Default time a server whose HTTP/3 failed goes straight to TCP.
pub const DEFAULT_FALLBACK_MEMORY: Duration = Duration::from_secs(300);
/// Most servers one client keeps connections or fallback memories for; past it the oldest
/// entries are forgotten.
pub const MAX_SERVERS: usize = 256;
/// Longest [`Client::close`] waits for QUIC close frames to leave.
pub const CLOSE_WAIT: Duration = Duration::from_millis(200);
/// The TLS server name sent (SNI) when no name is pinned; node certificates are checked
/// against the name they carry instead (see the module docs).
const DEFAULT_SNI: &str = "meshkit-control";

/// Why a request, or building a client, failed.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum ClientError {
    /// A PEM file could not be read or holds no usable item (caller misuse).
    #[error("{path}: {source}")]
    Pem {
        /// The file.
        path: PathBuf,
        /// Why.
        source: rustls::pki_types::pem::Error,
    },
    /// A certificate file holds no certificate (caller misuse).
    #[error("{path}: no certificate in the file")]
    NoCertificate {
        /// The file.
        path: PathBuf,
    },
    /// rustls refused the material (e.g. a key that does not match its certificate).
    #[error("TLS configuration: {0}")]
    Rustls(#[from] rustls::Error),
    /// The CA file makes no usable verifier.
    #[error("TLS configuration: {0}")]
    Verifier(#[from] rustls::client::VerifierBuilderError),
    /// The provider offers no cipher suite QUIC can start with.
    #[error(transparent)]
    Quic(#[from] quinn::crypto::rustls::NoInitialCipherSuite),
    /// The pinned server name is not a DNS name (caller misuse).
    #[error("invalid server name {0:?}")]
    ServerName(String),
    /// The bearer token cannot be sent in a header (caller misuse).
    #[error("the bearer token holds characters a header cannot carry")]
    Token,
    /// The path or method make no valid request (caller misuse).
    #[error("invalid request: {0}")]
    Request(#[from] http::Error),
    /// The body given to [`Client::post_json`] does not serialize (caller misuse; nothing sent).
    #[error("the request body cannot be encoded as JSON: {0}")]
    Json(#[from] serde_json::Error),
    /// The server address did not resolve.
    #[error("{server}: cannot resolve: {source}")]
    Resolve {
        /// The server as given.
        server: String,
        /// Why.
        source: std::io::Error,
    },
    /// No answer within the request timeout; nothing more is read.
    #[error("{server}: no answer within {timeout:?}")]
    Timeout {
        /// The server.
        server: String,
        /// The limit.
        timeout: Duration,
    },
    /// The TCP connection failed.
    #[error("{server}: TCP connect: {source}")]
    Connect {
        /// The server.
        server: String,
        /// Why.
        source: std::io::Error,
    },
    /// The TLS handshake over TCP failed (e.g. a certificate the other side refused).
    #[error("{server}: TLS handshake: {source}")]
    TlsHandshake {
        /// The server.
        server: String,
        /// Why.
        source: std::io::Error,
    },
    /// HTTP/2 or HTTP/1.1 failed on an established connection.
    #[error("{server}: HTTP: {source}")]
    Http {
        /// The server.
        server: String,
        /// Why.
        source: hyper::Error,
    },
    /// HTTP/3 failed and no fallback was allowed (HTTP/3 only, or a non-idempotent request
    /// already sent).
    #[error("{server}: HTTP/3: {source}")]
    H3 {
        /// The server.
        server: String,
        /// Why.
        source: H3Error,
    },
    /// The server did not agree to HTTP/2 (ALPN), which gRPC needs.
    #[error("{server}: the server did not agree to HTTP/2, which gRPC needs")]
    NoHttp2 {
        /// The server.
        server: String,
    },
    /// The response body is larger than [`MAX_RESPONSE_BYTES`]; it was not read further.
    #[error("{server}: response body larger than {limit} bytes")]
    TooLarge {
        /// The server.
        server: String,
        /// The limit.
        limit: usize,
    },
}

/// Which protocols a client uses.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum Protocols {
    /// HTTP/3, falling back to TLS over TCP (the default).
    #[default]
    H3ThenTcp,
    /// HTTP/3 only: failures are errors.
    H3Only,
    /// TLS over TCP only (HTTP/2, or HTTP/1.1 if the server offers nothing else).
    TcpOnly,
}

/// A response: status, protocol it came over, headers and body.
#[derive(Clone, Debug)]
pub struct Response {
    /// The status code.
    pub status: u16,
    /// The protocol that carried it.
    pub protocol: HttpProtocol,
    /// The response headers.
    pub headers: HeaderMap,
    /// The body, as text (lossy UTF-8).
    pub body: String,
}

/// What a [`Client`] is built from. Start with [`ClientConfig::new`].
#[derive(Debug)]
pub struct ClientConfig {
    roots: Arc<RootCertStore>,
    identity: Option<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>)>,
    server_name: Option<ServerName<'static>>,
    token: Option<HeaderValue>,
    protocols: Protocols,
    h3_timeout: Duration,
    connect_timeout: Duration,
    request_timeout: Duration,
    fallback_memory: Duration,
    bind: Option<std::net::IpAddr>,
}

impl ClientConfig {
    /// Trusts the CA certificates in `ca` (PEM); no client certificate, no token, defaults.
    pub fn new(ca: &Path) -> Result<Self, ClientError> {
        let mut roots = RootCertStore::empty();
        for cert in read_certs(ca)? {
            roots.add(cert)?;
        }
        Ok(Self {
            roots: Arc::new(roots),
            identity: None,
            server_name: None,
            token: None,
            protocols: Protocols::default(),
            h3_timeout: DEFAULT_H3_TIMEOUT,
            connect_timeout: DEFAULT_CONNECT_TIMEOUT,
            request_timeout: DEFAULT_REQUEST_TIMEOUT,
            fallback_memory: DEFAULT_FALLBACK_MEMORY,
            bind: None,
        })
    }

    /// Presents the certificate (chain) in `cert` with the key in `key` (PEM).
    pub fn with_identity(mut self, cert: &Path, key: &Path) -> Result<Self, ClientError> {
        let chain = read_certs(cert)?;
        let key = PrivateKeyDer::from_pem_file(key).map_err(|source| ClientError::Pem {
            path: key.to_owned(),
            source,
        })?;
        self.identity = Some((chain, key));
        Ok(self)
    }

    /// Accepts only a server certificate valid for `name` (e.g. `node-2`).
    pub fn with_server_name(mut self, name: &str) -> Result<Self, ClientError> {
        let name = ServerName::try_from(name.to_owned())
            .map_err(|_| ClientError::ServerName(name.to_owned()))?;
        self.server_name = Some(name);
        Ok(self)
    }

    /// Sends `Authorization: Bearer <token>` with every request.
    pub fn with_token(mut self, token: &str) -> Result<Self, ClientError> {
        let mut value =
            HeaderValue::try_from(format!("Bearer {token}")).map_err(|_| ClientError::Token)?;
        value.set_sensitive(true);
        self.token = Some(value);
        Ok(self)
    }

    /// Which protocols to use (default: HTTP/3, then TCP).
    pub fn with_protocols(mut self, protocols: Protocols) -> Self {
        self.protocols = protocols;
        self
    }

    /// Time HTTP/3 gets to complete its handshake (default [`DEFAULT_H3_TIMEOUT`]).
    pub fn with_h3_timeout(mut self, timeout: Duration) -> Self {
        self.h3_timeout = timeout;
        self
    }

    /// Time a TCP connection and TLS handshake get (default [`DEFAULT_CONNECT_TIMEOUT`]).
    pub fn with_connect_timeout(mut self, timeout: Duration) -> Self {
        self.connect_timeout = timeout;
        self
    }

    /// Bound on a whole request (default [`DEFAULT_REQUEST_TIMEOUT`]).
    pub fn with_request_timeout(mut self, timeout: Duration) -> Self {
        self.request_timeout = timeout;
        self
    }

    /// How long a server whose HTTP/3 failed goes straight to TCP (default
    /// [`DEFAULT_FALLBACK_MEMORY`]; zero: always try HTTP/3).
    pub fn with_fallback_memory(mut self, memory: Duration) -> Self {
        self.fallback_memory = memory;
        self
    }

    /// Makes every connection (QUIC and TCP) from `ip`, on a port the system picks: a probe
    /// agent's own source address, told apart from production traffic by firewalls and logs.
    /// Servers of the other address family are dialled from the unspecified address.
    pub fn with_bind_address(mut self, ip: std::net::IpAddr) -> Self {
        self.bind = Some(ip);
        self
    }

    fn rustls(&self, alpn: &[&[u8]]) -> Result<rustls::ClientConfig, ClientError> {
        let provider = crypto_provider();
        let inner =
            WebPkiServerVerifier::builder_with_provider(self.roots.clone(), provider.clone())
                .build()?;
        let verifier = Arc::new(CaServerVerifier {
            inner,
            pinned: self.server_name.clone(),
        });
        let builder = rustls::ClientConfig::builder_with_provider(provider)
            .with_protocol_versions(&[&rustls::version::TLS13])?
            .dangerous()
            .with_custom_certificate_verifier(verifier);
        let mut config = match &self.identity {
            Some((chain, key)) => builder.with_client_auth_cert(chain.clone(), key.clone_key())?,
            None => builder.with_no_client_auth(),
        };
        config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
        Ok(config)
    }
}

/// A server remembered as having no working HTTP/3.
#[derive(Clone, Copy, Debug)]
struct Remembered {
    until: SystemTime,
}

/// A control API client. Cheap to share behind an `Arc`; keeps connections per server.
#[derive(Debug)]
pub struct Client {
    protocols: Protocols,
    h3_timeout: Duration,
    connect_timeout: Duration,
    request_timeout: Duration,
    fallback_memory: Duration,
    /// The source address of every connection, if one is set.
    bind: Option<std::net::IpAddr>,
    token: Option<HeaderValue>,
    server_name: ServerName<'static>,
    quic: quinn::ClientConfig,
    tls: Arc<rustls::ClientConfig>,
    /// TLS offering HTTP/2 only: gRPC channels ([`grpc::GrpcChannel`]), which cannot fall back
    /// to HTTP/1.1.
    tls_h2: Arc<rustls::ClientConfig>,
    h3: h3::Connections,
    tcp: tcp::Connections,
    /// One HTTP/3 dial at a time per server, and one TLS-over-TCP dial ([`dial`]).
    h3_dials: dial::DialGates,
    tcp_dials: dial::DialGates,
    remembered: Mutex<HashMap<SocketAddr, Remembered>>,
    stats: ClientStats,
}

/// An answer whose body is read as it arrives ([`Client::get_stream`]).
#[derive(Debug)]
pub struct StreamingResponse {
    response: http::Response<hyper::body::Incoming>,
    protocol: HttpProtocol,
    outgoing: Outgoing,
}

impl StreamingResponse {
    /// The status code.
    pub fn status(&self) -> u16 {
        self.response.status().as_u16()
    }

    /// The protocol that carries it.
    pub fn protocol(&self) -> HttpProtocol {
        self.protocol
    }

    /// The next piece of the body as it arrived; `None` once the server ended it.
    pub async fn chunk(&mut self) -> Result<Option<Bytes>, ClientError> {
        use http_body_util::BodyExt as _;
        loop {
            match self.response.body_mut().frame().await {
                None => return Ok(None),
                Some(Err(source)) => {
                    return Err(ClientError::Http {
                        server: self.outgoing.authority.clone(),
                        source,
                    });
                }
                Some(Ok(frame)) => {
                    if let Ok(data) = frame.into_data() {
                        return Ok(Some(data));
                    }
                    // Trailers: nothing to hand over.
                }
            }
        }
    }

    /// The whole body (at most [`MAX_RESPONSE_BYTES`]), as [`Client::get`] answers it: for
    /// an error answer, which ends.
    pub async fn into_response(self) -> Result<Response, ClientError> {
        tcp::read_response(self.response, self.protocol, &self.outgoing).await
    }
}

/// One request, before it is shaped for a protocol.
#[derive(Debug)]
struct Outgoing {
    method: Method,
    /// The server as the caller named it (`host:port`).
    authority: String,
    /// `https://host:port/path`.
    uri: http::Uri,
    token: Option<HeaderValue>,
    /// `Content-Type` of the body: the control API refuses a JSON body without it (415).
    content_type: Option<HeaderValue>,
    body: Bytes,
}

impl Outgoing {
    /// The request head, with `body`.
    fn head<B>(&self, body: B) -> http::Request<B> {
        let mut request = http::Request::new(body);
        *request.method_mut() = self.method.clone();
        *request.uri_mut() = self.uri.clone();
        if let Some(token) = &self.token {
            request
                .headers_mut()
                .insert(http::header::AUTHORIZATION, token.clone());
        }
        if let Some(content_type) = &self.content_type {
            request
                .headers_mut()
                .insert(http::header::CONTENT_TYPE, content_type.clone());
        }
        request
    }
}

impl Client {
    /// A client from `config`. Must be called inside a tokio runtime (the QUIC endpoint is
    /// bound on first use).
    pub fn new(config: &ClientConfig) -> Result<Self, ClientError> {
        let quic_tls = config.rustls(&[ALPN_H3])?;
        let quic_crypto = quinn::crypto::rustls::QuicClientConfig::try_from(quic_tls)?;
        let quic = quinn::ClientConfig::new(Arc::new(quic_crypto));
        let tls = Arc::new(config.rustls(&[ALPN_H2, ALPN_HTTP11])?);
        let tls_h2 = Arc::new(config.rustls(&[ALPN_H2])?);
        let server_name = config.server_name.clone().unwrap_or_else(|| {
            ServerName::try_from(DEFAULT_SNI).expect("a constant valid DNS name")
        });
        Ok(Self {
            protocols: config.protocols,
            h3_timeout: config.h3_timeout,
            connect_timeout: config.connect_timeout,
            request_timeout: config.request_timeout,
            fallback_memory: config.fallback_memory,
            bind: config.bind,
            token: config.token.clone(),
            server_name,
            quic,
            tls,
            tls_h2,
            h3: h3::Connections::new(config.bind),
            tcp: tcp::Connections::default(),
            h3_dials: dial::DialGates::default(),
            tcp_dials: dial::DialGates::default(),
            remembered: Mutex::default(),
            stats: ClientStats::default(),
        })
    }

    /// `GET path` from `server` (`host:port`).
    pub async fn get(&self, server: &str, path: &str) -> Result<Response, ClientError> {
        self.request(Method::GET, server, path, Bytes::new()).await
    }

    /// `POST path` with `body` serialized as JSON (`Content-Type: application/json`, which the
    /// control API requires of a JSON body).
    pub async fn post_json(
        &self,
        server: &str,
        path: &str,
        body: &impl serde::Serialize,
    ) -> Result<Response, ClientError> {
        let body = serde_json::to_vec(body)?;
        let json = HeaderValue::from_static("application/json");
        self.send_within_timeout(Method::POST, server, path, Some(json), Bytes::from(body))
            .await
    }

    /// `method path` with `body` to `server` (`host:port`), within the request timeout. The
    /// body goes without a `Content-Type`; for JSON use [`Client::post_json`].
    pub async fn request(
        &self,
        method: Method,
        server: &str,
        path: &str,
        body: Bytes,
    ) -> Result<Response, ClientError> {
        self.send_within_timeout(method, server, path, None, body)
            .await
    }

    async fn send_within_timeout(
        &self,
        method: Method,
        server: &str,
        path: &str,
        content_type: Option<HeaderValue>,
        body: Bytes,
    ) -> Result<Response, ClientError> {
        let outgoing = self.outgoing(method, server, path, content_type, body)?;
        self.within_timeout(server, self.send(outgoing), |response| response.protocol)
            .await
    }

    /// `GET path` from `server` as a stream (server-sent events): the answer once its head has
    /// arrived (within the request timeout), its body read as it comes with
    /// [`StreamingResponse::chunk`], without a time bound. A stream holds a TLS-over-TCP
    /// connection of its own (HTTP/2, or HTTP/1.1), whatever the client's protocols: it is
    /// one long exchange, not many short ones.
    pub async fn get_stream(
        &self,
        server: &str,
        path: &str,
    ) -> Result<StreamingResponse, ClientError> {
        let outgoing = self.outgoing(Method::GET, server, path, None, Bytes::new())?;
        let opened = async {
            let addr = resolve(server).await?;
            self.tcp_stream(addr, &outgoing).await
        };
        let (response, protocol) = self
            .within_timeout(server, opened, |(_, protocol)| *protocol)
            .await?;
        Ok(StreamingResponse {
            response,
            protocol,
            outgoing,
        })
    }

    /// The request `method https://server/path`, with the client's token.
    fn outgoing(
        &self,
        method: Method,
        server: &str,
        path: &str,
        content_type: Option<HeaderValue>,
        body: Bytes,
    ) -> Result<Outgoing, ClientError> {
        let uri = http::Uri::builder()
            .scheme("https")
            .authority(server)
            .path_and_query(path)
            .build()?;
        Ok(Outgoing {
            method,
            authority: server.to_owned(),
            uri,
            token: self.token.clone(),
            content_type,
            body,
        })
    }

    /// Runs `exchange` within the request timeout and counts its outcome: a success under the
    /// protocol it used, a failure (a timeout included) once.
    async fn within_timeout<T>(
        &self,
        server: &str,
        exchange: impl Future<Output = Result<T, ClientError>>,
        protocol: impl FnOnce(&T) -> HttpProtocol,
    ) -> Result<T, ClientError> {
        let result = tokio::time::timeout(self.request_timeout, exchange)
            .await
            .unwrap_or_else(|_| {
                Err(ClientError::Timeout {
                    server: server.to_owned(),
                    timeout: self.request_timeout,
                })
            });
        match &result {
            Ok(answer) => self.stats.count_request(protocol(answer)),
            Err(_) => self.stats.count_failure(),
        }
        result
    }

    /// Closes every connection and the QUIC endpoints, waiting at most [`CLOSE_WAIT`] for the
    /// servers to be told (so they free the connection now rather than at their idle timeout).
    /// Requests made afterwards open new connections.
    pub async fn close(&self) {
        self.tcp.close();
        self.h3.close(CLOSE_WAIT).await;
    }

    /// The counters of this client.
    pub fn stats(&self) -> StatsSnapshot {
        self.stats.snapshot()
    }

    /// Whether HTTP/3 to `server` is remembered as failing (requests go straight to TCP).
    pub fn is_remembered(&self, server: SocketAddr) -> bool {
        self.remembered_until(server).is_some()
    }

    async fn send(&self, outgoing: Outgoing) -> Result<Response, ClientError> {
        let server = resolve(&outgoing.authority).await?;
        match self.protocols {
            Protocols::TcpOnly => self.tcp_request(server, &outgoing).await,
            Protocols::H3Only => {
                self.h3_request(server, &outgoing)
                    .await
                    .map_err(|failure| ClientError::H3 {
                        server: outgoing.authority.clone(),
                        source: failure.error,
                    })
            }
            Protocols::H3ThenTcp => {
                let reason = if self.remembered_until(server).is_some() {
                    FallbackReason::Remembered
                } else {
                    match self.h3_request(server, &outgoing).await {
                        Ok(response) => return Ok(response),
                        Err(failure) => {
                            let retry_allowed =
                                !failure.request_sent || is_idempotent(&outgoing.method);
                            if let H3Error::TooLarge(limit) = failure.error {
                                return Err(ClientError::TooLarge {
                                    server: outgoing.authority.clone(),
                                    limit,
                                });
                            }
                            if !retry_allowed {
                                return Err(ClientError::H3 {
                                    server: outgoing.authority.clone(),
                                    source: failure.error,
                                });
                            }
                            let reason = failure.error.reason();
                            tracing::debug!(
                                %server, %reason, error = %failure.error,
                                "HTTP/3 failed; falling back to TLS over TCP"
                            );
                            self.remember(server);
                            reason
                        }
                    }
                };
                let response = self.tcp_request(server, &outgoing).await?;
                self.stats.count_fallback(response.protocol, reason);
                Ok(response)
            }
        }
    }

    /// Servers whose HTTP/3 is remembered as failing, with the time the memory ends (what
    /// `meshctl` keeps between runs).
    pub fn remembered(&self) -> Vec<(SocketAddr, SystemTime)> {
        let now = SystemTime::now();
        lock(&self.remembered)
            .iter()
            .filter(|(_, r)| r.until > now)
            .map(|(addr, r)| (*addr, r.until))
            .collect()
    }

    /// Remembers HTTP/3 to `server` as failing until `until` (at most the configured memory
    /// from now), as [`Client::remembered`] gave it.
    pub fn remember_until(&self, server: SocketAddr, until: SystemTime) {
        let latest = SystemTime::now() + self.fallback_memory;
        if self.fallback_memory.is_zero() || until <= SystemTime::now() {
            return;
        }
        let mut remembered = lock(&self.remembered);
        if remembered.len() < MAX_SERVERS || remembered.contains_key(&server) {
            remembered.insert(
                server,
                Remembered {
                    until: until.min(latest),
                },
            );
        }
    }

    fn remembered_until(&self, server: SocketAddr) -> Option<SystemTime> {
        let mut remembered = lock(&self.remembered);
        let entry = *remembered.get(&server)?;
        if SystemTime::now() < entry.until {
            Some(entry.until)
        } else {
            remembered.remove(&server);
            None
        }
    }

    fn remember(&self, server: SocketAddr) {
        if self.fallback_memory.is_zero() {
            return;
        }
        let mut remembered = lock(&self.remembered);
        if remembered.len() >= MAX_SERVERS && !remembered.contains_key(&server) {
            // Forget the entry that expires first.
            if let Some(oldest) = remembered
                .iter()
                .min_by_key(|(_, r)| r.until)
                .map(|(addr, _)| *addr)
            {
                remembered.remove(&oldest);
            }
        }
        remembered.insert(
            server,
            Remembered {
                until: SystemTime::now() + self.fallback_memory,
            },
        );
    }
}

fn is_idempotent(method: &Method) -> bool {
    matches!(
        *method,
        Method::GET | Method::HEAD | Method::PUT | Method::DELETE | Method::OPTIONS
    )
}

/// Locks `mutex`, ignoring poisoning: every critical section here leaves the maps consistent.
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

async fn resolve(server: &str) -> Result<SocketAddr, ClientError> {
    let resolve_error = |source| ClientError::Resolve {
        server: server.to_owned(),
        source,
    };
    tokio::net::lookup_host(server)
        .await
        .map_err(resolve_error)?
        .next()
        .ok_or_else(|| resolve_error(std::io::ErrorKind::NotFound.into()))
}

fn read_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, ClientError> {
    meshkit_net::tls::read_cert_file(
        path,
        |path, source| ClientError::Pem { path, source },
        |path| ClientError::NoCertificate { path },
    )
}

/// Verifies a server certificate against the CA, for the pinned name or else for the
/// `node-<id>` name the certificate itself carries.
#[derive(Debug)]
struct CaServerVerifier {
    inner: Arc<WebPkiServerVerifier>,
    pinned: Option<ServerName<'static>>,
}

impl ServerCertVerifier for CaServerVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let name = match &self.pinned {
            Some(name) => name.clone(),
            None => {
                let not_a_node =
                    || rustls::Error::InvalidCertificate(rustls::CertificateError::NotValidForName);
                let id = node_id_from_cert(end_entity).map_err(|_| not_a_node())?;
                ServerName::try_from(node_dns_name(id)).map_err(|_| not_a_node())?
            }
        };
        self.inner
            .verify_server_cert(end_entity, intermediates, &name, ocsp_response, now)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}
