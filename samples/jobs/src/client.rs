//! The sample's client side: one HTTP/1.1 request per connection over plain TCP (hyper's
//! connection API), bounded in time. Enough for `push`, `stats` and `verify`.

use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt as _, Full};
use hyper::Request;
use hyper_util::rt::TokioIo;
use thiserror::Error;

/// How long one request may take, connection included.
pub(crate) const REQUEST_TIMEOUT: Duration = Duration::from_secs(15);

/// Why a request got no answer.
#[derive(Debug, Error)]
pub(crate) enum ClientError {
    /// Connecting failed (the node is down, or not listening yet).
    #[error("{addr}: {source}")]
    Connect {
        /// Where.
        addr: SocketAddr,
        /// Why.
        source: std::io::Error,
    },
    /// HTTP failed mid-way.
    #[error("{addr}: {source}")]
    Http {
        /// Where.
        addr: SocketAddr,
        /// Why.
        source: hyper::Error,
    },
    /// The request could not be built (a bad path).
    #[error("{addr}: {source}")]
    Request {
        /// Where.
        addr: SocketAddr,
        /// Why.
        source: hyper::http::Error,
    },
    /// No answer within [`REQUEST_TIMEOUT`].
    #[error("{addr}: no answer within {REQUEST_TIMEOUT:?}")]
    TimedOut {
        /// Where.
        addr: SocketAddr,
    },
}

/// An answer: status and body.
#[derive(Debug)]
pub(crate) struct Answer {
    /// The status code.
    pub(crate) status: u16,
    /// The body as text (lossy).
    pub(crate) body: String,
}

/// `GET path` (no body) or `POST path` with a JSON body.
pub(crate) async fn request(
    addr: SocketAddr,
    path: &str,
    json: Option<Vec<u8>>,
) -> Result<Answer, ClientError> {
    tokio::time::timeout(REQUEST_TIMEOUT, send(addr, path, json))
        .await
        .map_err(|_| ClientError::TimedOut { addr })?
}

async fn send(addr: SocketAddr, path: &str, json: Option<Vec<u8>>) -> Result<Answer, ClientError> {
    let stream = tokio::net::TcpStream::connect(addr)
        .await
        .map_err(|source| ClientError::Connect { addr, source })?;
    let http = |source| ClientError::Http { addr, source };
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(http)?;
    // The connection's task ends when the request is done (it is not kept alive).
    tokio::spawn(connection);
    let builder = Request::builder()
        .uri(path)
        .header("host", addr.to_string());
    let request = match json {
        Some(body) => builder
            .method("POST")
            .header("content-type", "application/json")
            .body(Full::new(Bytes::from(body))),
        None => builder.method("GET").body(Full::new(Bytes::new())),
    }
    .map_err(|source| ClientError::Request { addr, source })?;
    let response = sender.send_request(request).await.map_err(http)?;
    let status = response.status().as_u16();
    let body = response
        .into_body()
        .collect()
        .await
        .map_err(http)?
        .to_bytes();
    Ok(Answer {
        status,
        body: String::from_utf8_lossy(&body).into_owned(),
    })
}
