//! The TLS-over-TCP side of the client: HTTP/2 when the server's ALPN picks `h2` (connections
//! kept per server and reused), HTTP/1.1 otherwise (one connection per request).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use http::header::HOST;
use http::{HeaderValue, Uri};
use http_body_util::{BodyExt as _, Full, Limited};
use hyper::body::Incoming;
use hyper::client::conn::{http1, http2};
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpStream;

use super::{Client, ClientError, MAX_RESPONSE_BYTES, MAX_SERVERS, Outgoing, Response, lock};
use meshkit_api::alpn::{ALPN_H2, HttpProtocol};

type H2Sender = http2::SendRequest<Full<Bytes>>;

/// The client's HTTP/2 connections, by server.
#[derive(Debug, Default)]
pub(super) struct Connections {
    h2: Mutex<HashMap<SocketAddr, H2Sender>>,
}

impl Connections {
    /// Drops every connection (each closes once its last sender is gone).
    pub(super) fn close(&self) {
        lock(&self.h2).clear();
    }

    fn cached(&self, server: SocketAddr) -> Option<H2Sender> {
        lock(&self.h2).get(&server).cloned()
    }

    fn forget(&self, server: SocketAddr) {
        lock(&self.h2).remove(&server);
    }

    fn keep(&self, server: SocketAddr, sender: H2Sender) {
        let mut h2 = lock(&self.h2);
        if h2.len() >= MAX_SERVERS && !h2.contains_key(&server) {
            h2.clear();
        }
        h2.insert(server, sender);
    }
}

impl Client {
    /// One request over TLS on TCP: on a cached HTTP/2 connection if there is one (replaced
    /// once if it fails and the request may be repeated), else on a new connection.
    pub(super) async fn tcp_request(
        &self,
        server: SocketAddr,
        outgoing: &Outgoing,
    ) -> Result<Response, ClientError> {
        if let Some(mut sender) = self.tcp.cached(server) {
            if sender.ready().await.is_ok() {
                match HttpSender::H2(sender).exchange(outgoing).await {
                    Ok(response) => return Ok(response),
                    Err(error @ ClientError::TooLarge { .. }) => return Err(error),
                    Err(error) if !super::is_idempotent(&outgoing.method) => {
                        self.tcp.forget(server);
                        return Err(error);
                    }
                    Err(error) => {
                        tracing::debug!(%server, %error, "cached HTTP/2 connection failed");
                    }
                }
            }
            self.tcp.forget(server);
        }
        let turn = self.tcp_dials.enter(server).await;
        if matches!(turn, super::dial::Turn::Waited)
            && let Some(mut h2) = self.tcp.cached(server)
            && h2.ready().await.is_ok()
        {
            // Another request dialled meanwhile: its HTTP/2 connection carries this one too.
            let result = HttpSender::H2(h2).exchange(outgoing).await;
            if result.is_err() {
                self.tcp.forget(server);
            }
            return result;
        }
        let mut sender = self.tcp_handshake(server, outgoing).await?;
        if let HttpSender::H2(h2) = &sender {
            self.tcp.keep(server, h2.clone());
        }
        drop(turn);
        let result = sender.exchange(outgoing).await;
        if result.is_err() && matches!(sender, HttpSender::H2(_)) {
            self.tcp.forget(server);
        }
        result
    }

    /// A new TLS connection to `server`, its HTTP/2 or HTTP/1.1 handshake done (as the
    /// server's ALPN picked) and its connection task spawned.
    async fn tcp_handshake(
        &self,
        server: SocketAddr,
        outgoing: &Outgoing,
    ) -> Result<HttpSender, ClientError> {
        let tls = self
            .tcp_connect(&self.tls, server, &outgoing.authority)
            .await?;
        let http_error = |source| ClientError::Http {
            server: outgoing.authority.clone(),
            source,
        };
        if tls.get_ref().1.alpn_protocol() == Some(ALPN_H2) {
            let (sender, connection) = http2::handshake(TokioExecutor::new(), TokioIo::new(tls))
                .await
                .map_err(http_error)?;
            tokio::spawn(async move {
                // Ends when the server closes or every sender is dropped.
                let _ = connection.await;
            });
            Ok(HttpSender::H2(sender))
        } else {
            let (sender, connection) = http1::handshake(TokioIo::new(tls))
                .await
                .map_err(http_error)?;
            tokio::spawn(async move {
                let _ = connection.await;
            });
            Ok(HttpSender::Http11(sender))
        }
    }

    /// A TLS connection to `server` (named `authority` in errors) over TCP with `tls`, within
    /// the connect timeout.
    pub(super) async fn tcp_connect(
        &self,
        tls: &Arc<rustls::ClientConfig>,
        server: SocketAddr,
        authority: &str,
    ) -> Result<tokio_rustls::client::TlsStream<TcpStream>, ClientError> {
        let connect_error = |source| ClientError::Connect {
            server: authority.to_owned(),
            source,
        };
        let timed_out = || ClientError::Timeout {
            server: authority.to_owned(),
            timeout: self.connect_timeout,
        };
        let dial = async {
            match self.bind {
                Some(ip) if ip.is_ipv4() == server.is_ipv4() => {
                    let socket = if server.is_ipv4() {
                        tokio::net::TcpSocket::new_v4()?
                    } else {
                        tokio::net::TcpSocket::new_v6()?
                    };
                    socket.bind(SocketAddr::new(ip, 0))?;
                    socket.connect(server).await
                }
                _ => TcpStream::connect(server).await,
            }
        };
        let stream = tokio::time::timeout(self.connect_timeout, dial)
            .await
            .map_err(|_| timed_out())?
            .map_err(connect_error)?;
        // Requests are small and answers prompt: no need to wait for more to send.
        stream.set_nodelay(true).map_err(connect_error)?;
        let tls = tokio::time::timeout(
            self.connect_timeout,
            tokio_rustls::TlsConnector::from(tls.clone()).connect(self.server_name.clone(), stream),
        )
        .await
        .map_err(|_| timed_out())?
        .map_err(|source| ClientError::TlsHandshake {
            server: authority.to_owned(),
            source,
        })?;
        Ok(tls)
    }

    /// One request over TLS on TCP on a connection of its own (never cached), answered with
    /// the response head and its body unread: for event streams, which hold their connection
    /// open.
    pub(super) async fn tcp_stream(
        &self,
        server: SocketAddr,
        outgoing: &Outgoing,
    ) -> Result<(http::Response<Incoming>, HttpProtocol), ClientError> {
        self.tcp_handshake(server, outgoing)
            .await?
            .send(outgoing)
            .await
    }
}

/// A connection's request sender, by the protocol the server picked.
enum HttpSender {
    H2(H2Sender),
    Http11(http1::SendRequest<Full<Bytes>>),
}

impl HttpSender {
    /// Sends `outgoing` and answers with the response head, its body unread.
    async fn send(
        &mut self,
        outgoing: &Outgoing,
    ) -> Result<(http::Response<Incoming>, HttpProtocol), ClientError> {
        let http_error = |source| ClientError::Http {
            server: outgoing.authority.clone(),
            source,
        };
        match self {
            Self::H2(sender) => {
                let request = outgoing.head(Full::new(outgoing.body.clone()));
                let response = sender.send_request(request).await.map_err(http_error)?;
                Ok((response, HttpProtocol::H2))
            }
            Self::Http11(sender) => {
                let response = sender
                    .send_request(http1_request(outgoing))
                    .await
                    .map_err(http_error)?;
                Ok((response, HttpProtocol::Http11))
            }
        }
    }

    /// Sends `outgoing` and reads the whole response.
    async fn exchange(&mut self, outgoing: &Outgoing) -> Result<Response, ClientError> {
        let (response, protocol) = self.send(outgoing).await?;
        read_response(response, protocol, outgoing).await
    }
}

/// `outgoing` as an HTTP/1.1 request: the origin form of its URI and a Host header, which
/// HTTP/1.1 takes where HTTP/2 has the `:authority` pseudo-header.
fn http1_request(outgoing: &Outgoing) -> http::Request<Full<Bytes>> {
    let mut request = outgoing.head(Full::new(outgoing.body.clone()));
    let path = outgoing
        .uri
        .path_and_query()
        .map_or("/", |p| p.as_str())
        .to_owned();
    *request.uri_mut() = Uri::try_from(path).unwrap_or_else(|_| Uri::from_static("/"));
    if let Ok(host) = HeaderValue::try_from(outgoing.authority.as_str()) {
        request.headers_mut().insert(HOST, host);
    }
    request
}

pub(super) async fn read_response(
    response: http::Response<Incoming>,
    protocol: HttpProtocol,
    outgoing: &Outgoing,
) -> Result<Response, ClientError> {
    let (parts, body) = response.into_parts();
    let body = Limited::new(body, MAX_RESPONSE_BYTES)
        .collect()
        .await
        .map_err(|error| match error.downcast::<hyper::Error>() {
            Ok(source) => ClientError::Http {
                server: outgoing.authority.clone(),
                source: *source,
            },
            // The only other error `Limited` yields is its length limit.
            Err(_) => ClientError::TooLarge {
                server: outgoing.authority.clone(),
                limit: MAX_RESPONSE_BYTES,
            },
        })?
        .to_bytes();
    Ok(Response {
        status: parts.status.as_u16(),
        protocol,
        headers: parts.headers,
        body: String::from_utf8_lossy(&body).into_owned(),
    })
}
