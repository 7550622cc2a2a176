//! A minimal HTTP/1.1 client for `meshctl` and the tests: one `GET`, `Connection: close`.
//!
//! The control endpoint answers with a `Content-Length`; chunked bodies are refused.

use std::time::Duration;

use thiserror::Error;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Largest response body read, in bytes.
pub const MAX_RESPONSE_BYTES: usize = 16 * 1024 * 1024;

/// Why a request failed.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum HttpError {
    /// Connecting, writing or reading failed.
    #[error("{addr}: {source}")]
    Io {
        /// The server.
        addr: String,
        /// Why.
        source: std::io::Error,
    },
    /// No answer within the timeout.
    #[error("{addr}: no answer within {timeout:?}")]
    Timeout {
        /// The server.
        addr: String,
        /// The limit.
        timeout: Duration,
    },
    /// The answer is not an HTTP/1.1 response this client reads.
    #[error("{addr}: malformed or unsupported response")]
    Malformed {
        /// The server.
        addr: String,
    },
}

/// A response: status code and body.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Response {
    /// The status code.
    pub status: u16,
    /// The body, as text (lossy UTF-8).
    pub body: String,
}

/// `GET path` from `addr` (`host:port`), within `timeout` overall.
pub async fn get(addr: &str, path: &str, timeout: Duration) -> Result<Response, HttpError> {
    get_with_bearer(addr, path, None, timeout).await
}

/// As [`get`], with `Authorization: Bearer <token>` when a token is given.
pub async fn get_with_bearer(
    addr: &str,
    path: &str,
    token: Option<&str>,
    timeout: Duration,
) -> Result<Response, HttpError> {
    tokio::time::timeout(timeout, get_inner(addr, path, token))
        .await
        .map_err(|_| HttpError::Timeout {
            addr: addr.to_owned(),
            timeout,
        })?
}

async fn get_inner(addr: &str, path: &str, token: Option<&str>) -> Result<Response, HttpError> {
    let io = |source| HttpError::Io {
        addr: addr.to_owned(),
        source,
    };
    let malformed = || HttpError::Malformed {
        addr: addr.to_owned(),
    };
    let mut stream = TcpStream::connect(addr).await.map_err(io)?;
    let authorization =
        token.map_or_else(String::new, |t| format!("Authorization: Bearer {t}\r\n"));
    let request = format!(
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nAccept: */*\r\n\
         {authorization}\r\n"
    );
    stream.write_all(request.as_bytes()).await.map_err(io)?;
    let mut raw = Vec::new();
    (&mut stream)
        .take(MAX_RESPONSE_BYTES as u64)
        .read_to_end(&mut raw)
        .await
        .map_err(io)?;
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or_else(malformed)?;
    let head = std::str::from_utf8(&raw[..split]).map_err(|_| malformed())?;
    let mut lines = head.split("\r\n");
    let status = lines
        .next()
        .and_then(|l| l.strip_prefix("HTTP/1.1 "))
        .and_then(|l| l.get(..3))
        .and_then(|c| c.parse::<u16>().ok())
        .ok_or_else(malformed)?;
    let mut length = None;
    for line in lines {
        let (name, value) = line.split_once(':').ok_or_else(malformed)?;
        if name.eq_ignore_ascii_case("transfer-encoding") {
            return Err(malformed());
        }
        if name.eq_ignore_ascii_case("content-length") {
            length = Some(value.trim().parse::<usize>().map_err(|_| malformed())?);
        }
    }
    let body = &raw[split + 4..];
    let body = match length {
        Some(n) => body.get(..n).ok_or_else(malformed)?,
        None => body,
    };
    Ok(Response {
        status,
        body: String::from_utf8_lossy(body).into_owned(),
    })
}
