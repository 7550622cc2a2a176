//! The HTTP/3 side of the client: one quinn endpoint per address family, one h3 connection per
//! server, reused across requests.

use std::collections::HashMap;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Mutex;
use std::time::Duration;

use bytes::{Buf, Bytes, BytesMut};
use http::Request;
use thiserror::Error;

use super::stats::FallbackReason;
use super::{Client, MAX_RESPONSE_BYTES, MAX_SERVERS, Outgoing, Response, lock};
use meshkit_api::alpn::HttpProtocol;

/// Why an HTTP/3 attempt failed.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum H3Error {
    /// The QUIC handshake did not complete within the HTTP/3 timeout.
    #[error("no QUIC handshake within {0:?}")]
    Timeout(Duration),
    /// The local UDP socket could not be bound.
    #[error("QUIC endpoint: {0}")]
    Endpoint(std::io::Error),
    /// quinn refused to start the connection (e.g. an unusable server name).
    #[error(transparent)]
    Connect(#[from] quinn::ConnectError),
    /// The QUIC connection failed (refused, reset, handshake error, timed out).
    #[error(transparent)]
    Connection(#[from] quinn::ConnectionError),
    /// The HTTP/3 connection failed.
    #[error("connection: {0}")]
    H3Connection(#[from] ::h3::error::ConnectionError),
    /// The request's stream failed.
    #[error("stream: {0}")]
    Stream(#[from] ::h3::error::StreamError),
    /// The response body is larger than the limit.
    #[error("response body larger than {0} bytes")]
    TooLarge(usize),
}

impl H3Error {
    /// The fallback reason this failure is counted under.
    pub fn reason(&self) -> FallbackReason {
        match self {
            Self::Timeout(_) => FallbackReason::Timeout,
            Self::Endpoint(_) => FallbackReason::Refused,
            Self::Connect(_) => FallbackReason::Handshake,
            Self::Connection(error) => connection_reason(error),
            Self::H3Connection(_) | Self::Stream(_) | Self::TooLarge(_) => FallbackReason::H3Error,
        }
    }
}

fn connection_reason(error: &quinn::ConnectionError) -> FallbackReason {
    use quinn::ConnectionError as E;
    // QUIC carries TLS alerts as transport error codes 0x100..=0x1ff (RFC 9001 §4.8).
    let is_crypto = |code: quinn::TransportErrorCode| (0x100..=0x1ff).contains(&u64::from(code));
    match error {
        E::TimedOut => FallbackReason::Timeout,
        E::VersionMismatch => FallbackReason::Handshake,
        E::TransportError(e) if is_crypto(e.code) => FallbackReason::Handshake,
        E::ConnectionClosed(close) if is_crypto(close.error_code) => FallbackReason::Handshake,
        E::Reset | E::ConnectionClosed(_) | E::TransportError(_) => FallbackReason::Refused,
        _ => FallbackReason::H3Error,
    }
}

/// A failed attempt, and whether the request had left before it failed.
#[derive(Debug)]
pub(super) struct H3Failure {
    pub(super) error: H3Error,
    pub(super) request_sent: bool,
}

impl H3Failure {
    fn before_send(error: impl Into<H3Error>) -> Self {
        Self {
            error: error.into(),
            request_sent: false,
        }
    }

    fn after_send(error: impl Into<H3Error>) -> Self {
        Self {
            error: error.into(),
            request_sent: true,
        }
    }
}

type Sender = ::h3::client::SendRequest<h3_quinn::OpenStreams, Bytes>;

/// The client's QUIC endpoints and HTTP/3 connections.
pub(super) struct Connections {
    /// The source address of the endpoints, if one is set.
    bind: Option<std::net::IpAddr>,
    endpoint_v4: Mutex<Option<quinn::Endpoint>>,
    endpoint_v6: Mutex<Option<quinn::Endpoint>>,
    senders: Mutex<HashMap<SocketAddr, Sender>>,
}

impl std::fmt::Debug for Connections {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // h3's `SendRequest` has no `Debug`: show the servers connected to.
        f.debug_struct("Connections")
            .field("servers", &lock(&self.senders).keys().collect::<Vec<_>>())
            .finish_non_exhaustive()
    }
}

impl Connections {
    /// No endpoint yet; they bind to `bind` (or the unspecified address) on first use.
    pub(super) fn new(bind: Option<std::net::IpAddr>) -> Self {
        Self {
            bind,
            endpoint_v4: Mutex::default(),
            endpoint_v6: Mutex::default(),
            senders: Mutex::default(),
        }
    }

    fn endpoint(&self, server: SocketAddr) -> Result<quinn::Endpoint, H3Error> {
        let (slot, local) = if server.is_ipv4() {
            (
                &self.endpoint_v4,
                SocketAddr::from((Ipv4Addr::UNSPECIFIED, 0)),
            )
        } else {
            (
                &self.endpoint_v6,
                SocketAddr::from((Ipv6Addr::UNSPECIFIED, 0)),
            )
        };
        let local = match self.bind {
            Some(ip) if ip.is_ipv4() == server.is_ipv4() => SocketAddr::new(ip, 0),
            _ => local,
        };
        let mut slot = lock(slot);
        if let Some(endpoint) = &*slot {
            return Ok(endpoint.clone());
        }
        let endpoint = quinn::Endpoint::client(local).map_err(H3Error::Endpoint)?;
        *slot = Some(endpoint.clone());
        Ok(endpoint)
    }

    /// Drops every connection and closes the endpoints, waiting at most `wait` for the close
    /// frames to leave.
    pub(super) async fn close(&self, wait: Duration) {
        lock(&self.senders).clear();
        let endpoints: Vec<quinn::Endpoint> = [&self.endpoint_v4, &self.endpoint_v6]
            .into_iter()
            .filter_map(|slot| lock(slot).take())
            .collect();
        for endpoint in &endpoints {
            endpoint.close(quinn::VarInt::from_u32(0), b"client closed");
        }
        for endpoint in endpoints {
            let _ = tokio::time::timeout(wait, endpoint.wait_idle()).await;
        }
    }

    fn cached(&self, server: SocketAddr) -> Option<Sender> {
        lock(&self.senders).get(&server).cloned()
    }

    fn forget(&self, server: SocketAddr) {
        lock(&self.senders).remove(&server);
    }

    fn keep(&self, server: SocketAddr, sender: Sender) {
        let mut senders = lock(&self.senders);
        if senders.len() >= MAX_SERVERS && !senders.contains_key(&server) {
            senders.clear();
        }
        senders.insert(server, sender);
    }
}

impl Client {
    /// One request over HTTP/3: on a cached connection if there is one (replaced once if it
    /// fails), else on a new one.
    pub(super) async fn h3_request(
        &self,
        server: SocketAddr,
        outgoing: &Outgoing,
    ) -> Result<Response, H3Failure> {
        if let Some(sender) = self.h3.cached(server) {
            match exchange_on(&self.h3, server, sender, outgoing).await {
                Ok(response) => return Ok(response),
                Err(failure) => {
                    if failure.request_sent && !super::is_idempotent(&outgoing.method) {
                        return Err(failure);
                    }
                    tracing::debug!(%server, error = %failure.error, "cached HTTP/3 connection failed");
                }
            }
        }
        let turn = self.h3_dials.enter(server).await;
        if matches!(turn, super::dial::Turn::Waited)
            && let Some(sender) = self.h3.cached(server)
        {
            // Another request dialled meanwhile: its connection carries this one too.
            return exchange_on(&self.h3, server, sender, outgoing).await;
        }
        let sender = self.h3_connect(server).await?;
        self.h3.keep(server, sender.clone());
        drop(turn);
        exchange_on(&self.h3, server, sender, outgoing).await
    }

    async fn h3_connect(&self, server: SocketAddr) -> Result<Sender, H3Failure> {
        let endpoint = self.h3.endpoint(server).map_err(H3Failure::before_send)?;
        let server_name = self.server_name.to_str().into_owned();
        let connect = async {
            let connection = endpoint
                .connect_with(self.quic.clone(), server, &server_name)?
                .await?;
            let (mut driver, sender) =
                ::h3::client::new(h3_quinn::Connection::new(connection)).await?;
            tokio::spawn(async move {
                // Runs the connection's control stream until it closes; the close reason is
                // seen by the requests in flight.
                let _ = std::future::poll_fn(|cx| driver.poll_close(cx)).await;
            });
            Ok::<_, H3Error>(sender)
        };
        tokio::time::timeout(self.h3_timeout, connect)
            .await
            .map_err(|_| H3Failure::before_send(H3Error::Timeout(self.h3_timeout)))?
            .map_err(H3Failure::before_send)
    }
}

/// One exchange on `server`'s connection: the connection is forgotten when the exchange fails,
/// and when it is cut before it ends (this future dropped at the caller's request timeout). A
/// server that died or restarted without telling this client leaves its connection silent until
/// QUIC's idle timeout; without forgetting it, every request until then would wait on it and time
/// out too, where a new connection would have been answered at once.
async fn exchange_on(
    pool: &Connections,
    server: SocketAddr,
    sender: Sender,
    outgoing: &Outgoing,
) -> Result<Response, H3Failure> {
    let suspect = ForgetOnDrop {
        pool,
        server,
        armed: true,
    };
    let result = exchange(sender, outgoing).await;
    suspect.disarm();
    if result.is_err() {
        pool.forget(server);
    }
    result
}

/// Forgets `server`'s cached connection when dropped armed (see [`exchange_on`]).
struct ForgetOnDrop<'a> {
    pool: &'a Connections,
    server: SocketAddr,
    armed: bool,
}

impl ForgetOnDrop<'_> {
    fn disarm(mut self) {
        self.armed = false;
    }
}

impl Drop for ForgetOnDrop<'_> {
    fn drop(&mut self) {
        if self.armed {
            self.pool.forget(self.server);
        }
    }
}

async fn exchange(mut sender: Sender, outgoing: &Outgoing) -> Result<Response, H3Failure> {
    let request: Request<()> = outgoing.head(());
    let mut stream = sender
        .send_request(request)
        .await
        .map_err(H3Failure::before_send)?;
    if !outgoing.body.is_empty() {
        stream
            .send_data(outgoing.body.clone())
            .await
            .map_err(H3Failure::after_send)?;
    }
    stream.finish().await.map_err(H3Failure::after_send)?;
    let response = stream
        .recv_response()
        .await
        .map_err(H3Failure::after_send)?;
    let mut body = BytesMut::new();
    while let Some(mut chunk) = stream.recv_data().await.map_err(H3Failure::after_send)? {
        if body.len() + chunk.remaining() > MAX_RESPONSE_BYTES {
            return Err(H3Failure::after_send(H3Error::TooLarge(MAX_RESPONSE_BYTES)));
        }
        while chunk.has_remaining() {
            let part = chunk.chunk();
            let n = part.len();
            body.extend_from_slice(part);
            chunk.advance(n);
        }
    }
    let (parts, ()) = response.into_parts();
    Ok(Response {
        status: parts.status.as_u16(),
        protocol: HttpProtocol::H3,
        headers: parts.headers,
        body: String::from_utf8_lossy(&body).into_owned(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// TLS alerts (QUIC crypto errors) are handshake failures; silence is a timeout; a peer that
    /// closes or resets the connection refused it.
    #[test]
    fn connection_errors_map_to_bounded_reasons() {
        use quinn::ConnectionError as E;
        // `crypto(alert)` is 0x100 + the TLS alert: a handshake failure whatever the alert.
        let crypto = E::ConnectionClosed(quinn::ConnectionClose {
            error_code: quinn::TransportErrorCode::crypto(42),
            frame_type: None,
            reason: Bytes::new(),
        });
        assert_eq!(connection_reason(&crypto), FallbackReason::Handshake);
        assert_eq!(connection_reason(&E::TimedOut), FallbackReason::Timeout);
        assert_eq!(connection_reason(&E::Reset), FallbackReason::Refused);
        assert_eq!(
            connection_reason(&E::VersionMismatch),
            FallbackReason::Handshake
        );
        assert_eq!(
            connection_reason(&E::LocallyClosed),
            FallbackReason::H3Error
        );
        assert_eq!(
            H3Error::Timeout(Duration::from_secs(1)).reason(),
            FallbackReason::Timeout
        );
    }
}
