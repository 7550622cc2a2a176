//! A gRPC channel over the client's own TLS: one HTTP/2 connection to one node, made the way
//! the client makes its TLS-over-TCP connections (its CA check, certificate, source address
//! and connect timeout), sending its bearer token with every call.
//!
//! tonic's generated clients take any tower service from HTTP requests to HTTP responses;
//! this is one over hyper's HTTP/2 client, so the crate needs neither tonic's transport
//! feature (and the second TLS stack and connection pool it brings) nor a connector of its
//! own: the tests, `meshctl` and the probe agent share this one.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use http::uri::{Authority, PathAndQuery, Scheme};
use http::{HeaderValue, Uri};
use hyper::body::Incoming;
use hyper::client::conn::http2;
use hyper_util::rt::{TokioExecutor, TokioIo};

use super::{Client, ClientError, resolve};
use meshkit_api::alpn::ALPN_H2;

/// One HTTP/2 connection to a node, for tonic's clients:
/// `ControlClient::new(client.grpc_channel("10.0.0.1:7443").await?)`.
///
/// Cheap to clone (clones share the connection, each call is a stream on it). The connection
/// is not replaced when it fails: calls then fail with the connection's error
/// (`UNAVAILABLE` at the caller), and a new channel dials again. Calls have no time bound of
/// their own: a stream lasts as long as the caller reads it, so bound calls with a timeout (or
/// tonic's `Request::set_timeout`) where an answer is awaited.
#[derive(Clone, Debug)]
pub struct GrpcChannel {
    sender: http2::SendRequest<tonic::body::Body>,
    authority: Authority,
    token: Option<HeaderValue>,
}

impl Client {
    /// A gRPC channel to `server` (`host:port`): a new TLS connection agreeing to HTTP/2
    /// (the node's control port serves gRPC there), within the connect timeout. Not pooled
    /// with the client's other connections: a long-lived stream holds it.
    ///
    /// # Errors
    ///
    /// [`ClientError::Resolve`], [`ClientError::Connect`], [`ClientError::Timeout`],
    /// [`ClientError::TlsHandshake`], [`ClientError::NoHttp2`] when the server does not agree
    /// to HTTP/2, [`ClientError::Http`] when the HTTP/2 handshake fails.
    pub async fn grpc_channel(&self, server: &str) -> Result<GrpcChannel, ClientError> {
        let authority =
            Authority::try_from(server).map_err(|e| ClientError::Request(http::Error::from(e)))?;
        let addr = resolve(server).await?;
        let tls = self.tcp_connect(&self.tls_h2, addr, server).await?;
        if tls.get_ref().1.alpn_protocol() != Some(ALPN_H2) {
            return Err(ClientError::NoHttp2 {
                server: server.to_owned(),
            });
        }
        let handshake = http2::handshake(TokioExecutor::new(), TokioIo::new(tls));
        let (sender, connection) = tokio::time::timeout(self.connect_timeout, handshake)
            .await
            .map_err(|_| ClientError::Timeout {
                server: server.to_owned(),
                timeout: self.connect_timeout,
            })?
            .map_err(|source| ClientError::Http {
                server: server.to_owned(),
                source,
            })?;
        let named = server.to_owned();
        tokio::spawn(async move {
            // Ends when the server closes or every clone of the channel is dropped.
            if let Err(error) = connection.await {
                tracing::debug!(server = %named, %error, "gRPC connection ended");
            }
        });
        Ok(GrpcChannel {
            sender,
            authority,
            token: self.token.clone(),
        })
    }
}

impl GrpcChannel {
    /// `request` as sent to this channel's node: tonic's clients write the path only
    /// (`/meshkit.control.v1.Control/ListPeers`), HTTP/2 needs the scheme and authority too;
    /// the client's token unless the call carries its own.
    fn prepare(&self, request: &mut http::Request<tonic::body::Body>) {
        let path = request
            .uri()
            .path_and_query()
            .cloned()
            .unwrap_or_else(|| PathAndQuery::from_static("/"));
        let mut parts = http::uri::Parts::default();
        parts.scheme = Some(Scheme::HTTPS);
        parts.authority = Some(self.authority.clone());
        parts.path_and_query = Some(path);
        if let Ok(uri) = Uri::from_parts(parts) {
            *request.uri_mut() = uri;
        }
        if let Some(token) = &self.token {
            request
                .headers_mut()
                .entry(http::header::AUTHORIZATION)
                .or_insert_with(|| token.clone());
        }
    }
}

impl tonic::codegen::Service<http::Request<tonic::body::Body>> for GrpcChannel {
    type Response = http::Response<Incoming>;
    type Error = hyper::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Self::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.sender.poll_ready(cx)
    }

    fn call(&mut self, mut request: http::Request<tonic::body::Body>) -> Self::Future {
        self.prepare(&mut request);
        Box::pin(self.sender.send_request(request))
    }
}
