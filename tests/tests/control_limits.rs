//! The control API against anonymous clients at the connection level (docs/security.md), on
//! real loopback sockets: idle anonymous connections from one address cannot lock
//! others out, connections that send nothing are closed, and an anonymous HTTP/3 request with a
//! body is refused before the body is read.
//!
//! Anonymous clients here are raw rustls + hyper / h3 clients trusting the test CA and presenting
//! no certificate. Every wait is bounded; counts of connections are small and configured.

mod common;

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use common::raw_client::{STEP, h2_get, idle_h2, tls_config, tls_connect};
use common::{TempDir, start_cluster, start_cluster_with, token};
use http_body_util::Empty;
use hyper_util::rt::{TokioExecutor, TokioIo};
use meshkit_node::api::alpn::{ALPN_H2, ALPN_H3, HttpProtocol};
use meshkit_node::config::NodeConfig;
use meshkit_node::control::admission::{Closed, ConnectionLimits, Refusal, Transport};
use meshkit_node::control::auth::AccessControl;
use meshkit_node::control::serve::{ControlServer, ServerStats};
use meshkit_node::node::RunningNode;
use meshkit_node::permission::Permission;
use meshkit_node::tls::TlsIdentity;
use tokio::io::AsyncReadExt as _;

/// The attacker's address and another client's (both on loopback).
const ATTACKER: IpAddr = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 1));
const OTHER: IpAddr = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2));

/// A one-node cluster in `dir` and a control server for it with `limits`.
struct Server {
    nodes: Vec<RunningNode>,
    addr: SocketAddr,
    stats: Arc<ServerStats>,
    task: tokio::task::JoinHandle<()>,
}

impl Server {
    async fn start(dir: &Path, limits: ConnectionLimits) -> Self {
        Self::start_with_switch(dir, limits, tokio::sync::watch::channel(false).1).await
    }

    /// [`Server::start`] with `refuse_h3` as the HTTP/3 downgrade switch.
    async fn start_with_switch(
        dir: &Path,
        limits: ConnectionLimits,
        refuse_h3: tokio::sync::watch::Receiver<bool>,
    ) -> Self {
        let nodes = start_cluster(dir, 1).await;
        let identity = TlsIdentity::load(
            &dir.join("node-1.pem"),
            &dir.join("node-1.key"),
            &dir.join("ca.pem"),
        )
        .unwrap();
        let server = ControlServer::bind("127.0.0.1:0".parse().unwrap(), &identity)
            .await
            .unwrap()
            .with_limits(limits)
            .with_h3_switch(refuse_h3);
        let (addr, stats) = (server.local_addr(), server.stats());
        let config = NodeConfig::load(&dir.join("node-1.toml")).unwrap();
        let access = AccessControl::from_config(config.access()).unwrap();
        let task = tokio::spawn(meshkit_node::control::serve(
            server,
            nodes[0].handle().clone(),
            access,
        ));
        Self {
            nodes,
            addr,
            stats,
            task,
        }
    }

    async fn stop(self) {
        self.task.abort();
        for n in self.nodes {
            n.stop().await;
        }
    }
}

/// Finding 4: one anonymous address opening as many idle HTTP/2 connections as it can (as many
/// as the listener holds in all) cannot take the control API from others: `/healthz` from
/// another address and an authenticated request from the same address still answer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_anonymous_connections_from_one_address_lock_nobody_out() {
    const MAX: usize = 48;
    let dir = TempDir::new("limits-lockout");
    // Deadlines long enough that nothing is closed for quietness during the test: this is
    // about the counts.
    let limits = ConnectionLimits::default()
        .with_counts(MAX, 8, 8, 8)
        .unwrap()
        .with_timeouts(STEP, Duration::from_secs(60), Duration::from_secs(60));
    let server = Server::start(dir.path(), limits).await;
    let anonymous = tls_config(dir.path(), false, ALPN_H2).unwrap();

    let mut held = Vec::new();
    for _ in 0..MAX {
        if let Some(connection) = idle_h2(server.addr, ATTACKER, &anonymous).await {
            held.push(connection);
        }
    }
    // Another anonymous client (a load balancer's probe) still gets /healthz over TCP.
    assert_eq!(
        h2_get(server.addr, OTHER, &anonymous, "/healthz").await,
        Ok(200)
    );
    // An operator with a certificate, from the attacker's own address, still gets in.
    let operator = tls_config(dir.path(), true, ALPN_H2).unwrap();
    assert_eq!(
        h2_get(server.addr, ATTACKER, &operator, "/meshkit/peers").await,
        Ok(200)
    );
    assert!(
        held.len() <= limits.max_per_address(),
        "one address holds {} idle anonymous connections",
        held.len()
    );
    assert!(
        server
            .stats
            .admission()
            .refused(Transport::Tcp, Refusal::Address)
            > 0
    );

    drop(held);
    server.stop().await;
}

/// Finding 4: a connection that sends no request after its handshake is closed at the
/// first-request deadline, and one that made a request and went quiet at the idle deadline.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quiet_connections_are_closed_at_their_deadlines() {
    let dir = TempDir::new("limits-deadlines");
    let limits = ConnectionLimits::default().with_timeouts(
        STEP,
        Duration::from_millis(300),
        Duration::from_millis(500),
    );
    let server = Server::start(dir.path(), limits).await;
    let anonymous = tls_config(dir.path(), false, ALPN_H2).unwrap();

    // The preface and nothing more: read until the server ends the connection.
    let mut idle = idle_h2(server.addr, ATTACKER, &anonymous)
        .await
        .expect("an idle connection is accepted");
    let closed = closed_within(&mut idle, STEP).await;
    assert!(closed, "an idle connection was still open after {STEP:?}");
    let admission = server.stats.admission();
    assert_eq!(
        admission.closed(Transport::Tcp, Closed::FirstRequestTimeout),
        1
    );

    // One request, then quiet: the client sees the connection end.
    let tls = tls_connect(server.addr, ATTACKER, &anonymous)
        .await
        .unwrap();
    let (mut sender, connection) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tls))
            .await
            .unwrap();
    let connection = tokio::spawn(connection);
    let request = http::Request::get(format!("https://{}/healthz", server.addr))
        .body(Empty::<Bytes>::new())
        .unwrap();
    let response = sender.send_request(request).await.unwrap();
    assert_eq!(response.status(), 200);
    drop(response);
    assert!(
        tokio::time::timeout(STEP, connection).await.is_ok(),
        "a quiet connection was still open after {STEP:?}"
    );
    assert_eq!(admission.closed(Transport::Tcp, Closed::IdleTimeout), 1);

    // A long-lived answer (a gRPC Health/Watch stream) is in flight: its connection outlives
    // the idle deadline and takes more requests.
    let tls = tls_connect(server.addr, ATTACKER, &anonymous)
        .await
        .unwrap();
    let (mut sender, connection) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tls))
            .await
            .unwrap();
    let connection = tokio::spawn(connection);
    // One gRPC message: uncompressed, empty (`HealthCheckRequest { service: "" }`).
    let watch = http::Request::post(format!(
        "https://{}/grpc.health.v1.Health/Watch",
        server.addr
    ))
    .header("content-type", "application/grpc")
    .header("te", "trailers")
    .body(http_body_util::Full::new(Bytes::from_static(&[
        0, 0, 0, 0, 0,
    ])))
    .unwrap();
    let watching = sender.send_request(watch).await.unwrap();
    assert_eq!(watching.status(), 200);
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert!(!connection.is_finished(), "a watched connection was closed");
    let request = http::Request::get(format!("https://{}/healthz", server.addr))
        .body(http_body_util::Full::new(Bytes::new()))
        .unwrap();
    assert_eq!(sender.send_request(request).await.unwrap().status(), 200);
    assert_eq!(admission.closed(Transport::Tcp, Closed::IdleTimeout), 1);
    drop(watching);
    server.stop().await;
}

/// Whether the server ends `connection` within `limit`: it is read, and what it sends dropped,
/// until end of stream or an error.
async fn closed_within(
    connection: &mut (impl tokio::io::AsyncRead + Unpin),
    limit: Duration,
) -> bool {
    tokio::time::timeout(limit, async {
        let mut buf = [0u8; 1024];
        while let Ok(n) = connection.read(&mut buf).await
            && n > 0
        {}
    })
    .await
    .is_ok()
}

/// A QUIC client endpoint on `local` presenting no certificate (ALPN `h3`).
fn quic_endpoint(dir: &Path, local: IpAddr) -> quinn::Endpoint {
    let tls = tls_config(dir, false, ALPN_H3).unwrap();
    let mut endpoint = quinn::Endpoint::client(SocketAddr::new(local, 0)).unwrap();
    let quic = quinn::crypto::rustls::QuicClientConfig::try_from(tls).unwrap();
    endpoint.set_default_client_config(quinn::ClientConfig::new(Arc::new(quic)));
    endpoint
}

/// An anonymous HTTP/3 client on a new QUIC connection to `server`: the request sender.
async fn h3_client(
    dir: &Path,
    server: SocketAddr,
) -> (
    quinn::Endpoint,
    h3::client::SendRequest<h3_quinn::OpenStreams, Bytes>,
) {
    let endpoint = quic_endpoint(dir, ATTACKER);
    let connection = tokio::time::timeout(STEP, endpoint.connect(server, "node-1").unwrap())
        .await
        .expect("a QUIC handshake in time")
        .unwrap();
    let (mut driver, sender) = h3::client::new(h3_quinn::Connection::new(connection))
        .await
        .unwrap();
    tokio::spawn(async move {
        let _ = std::future::poll_fn(|cx| driver.poll_close(cx)).await;
    });
    (endpoint, sender)
}

/// Streaming the HTTP/3 body keeps its bound: an operator's body over 1 MiB is answered 413 in
/// the JSON error form, having read no more than the limit.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_h3_body_over_the_limit_is_a_json_413() {
    let dir = TempDir::new("limits-h3-413");
    let server = Server::start(dir.path(), ConnectionLimits::default()).await;
    let (endpoint, mut sender) = h3_client(dir.path(), server.addr).await;
    let bearer = format!(
        "Bearer {}",
        token(dir.path(), "operator", Permission::Operate)
    );
    let request = http::Request::post(format!("https://{}/control/leases/transfer", server.addr))
        .header("content-type", "application/json")
        .header("authorization", bearer)
        .body(())
        .unwrap();
    let stream = sender.send_request(request).await.unwrap();
    let (mut send, mut recv) = stream.split();
    let sending = tokio::spawn(async move {
        let chunk = Bytes::from(vec![b' '; 64 * 1024]);
        for _ in 0..24 {
            if send.send_data(chunk.clone()).await.is_err() {
                return;
            }
        }
        let _ = send.finish().await;
    });
    let response = tokio::time::timeout(STEP, recv.recv_response())
        .await
        .expect("an answer in time")
        .unwrap();
    assert_eq!(response.status(), 413);
    assert_eq!(response.headers()["content-type"], "application/json");
    let mut body = Vec::new();
    while let Some(mut chunk) = tokio::time::timeout(STEP, recv.recv_data())
        .await
        .unwrap()
        .unwrap()
    {
        use bytes::Buf as _;
        body.extend_from_slice(&chunk.copy_to_bytes(chunk.remaining()));
    }
    let body: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert!(body["error"].is_string(), "{body}");
    let read = server.stats.request_body_bytes(HttpProtocol::H3);
    assert!(
        read <= 1024 * 1024 + 64 * 1024,
        "{read} body bytes read for a 1 MiB limit"
    );
    sending.abort();
    endpoint.close(quinn::VarInt::from_u32(0), b"done");
    server.stop().await;
}

/// Finding 6: an anonymous HTTP/3 POST to an operate route is answered 401 before its body is
/// read: the client gets the answer while it is still sending, and handlers read no body byte.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn anonymous_h3_bodies_are_refused_before_they_are_read() {
    let dir = TempDir::new("limits-h3-body");
    let server = Server::start(dir.path(), ConnectionLimits::default()).await;
    let (endpoint, mut sender) = h3_client(dir.path(), server.addr).await;

    let request = http::Request::post(format!("https://{}/control/drain", server.addr))
        .header("content-type", "application/json")
        .body(())
        .unwrap();
    let stream = sender.send_request(request).await.unwrap();
    let (mut send, mut recv) = stream.split();
    // 512 KiB, under the body limit, and never finished: a server that reads the body first
    // waits for the rest and answers nothing.
    let sending = tokio::spawn(async move {
        let chunk = Bytes::from(vec![b'x'; 16 * 1024]);
        for _ in 0..32 {
            if send.send_data(chunk.clone()).await.is_err() {
                return;
            }
        }
        std::future::pending::<()>().await;
    });
    let response = tokio::time::timeout(STEP, recv.recv_response())
        .await
        .expect("an answer while the body is still being sent")
        .unwrap();
    assert_eq!(response.status(), 401);
    assert_eq!(server.stats.request_body_bytes(HttpProtocol::H3), 0);

    // The connection still carries bodies: what the refused stream took of the connection's
    // flow-control window came back (three 200 KiB bodies through a 256 KiB window).
    let bearer = format!(
        "Bearer {}",
        token(dir.path(), "operator", Permission::Operate)
    );
    for _ in 0..3 {
        let request =
            http::Request::post(format!("https://{}/control/leases/transfer", server.addr))
                .header("content-type", "application/json")
                .header("authorization", bearer.clone())
                .body(())
                .unwrap();
        let mut stream = sender.send_request(request).await.unwrap();
        let body = format!(r#"{{"scope": "x", "to": 2{}}}"#, " ".repeat(200 * 1024));
        tokio::time::timeout(STEP, stream.send_data(Bytes::from(body)))
            .await
            .expect("a body sent in time")
            .unwrap();
        stream.finish().await.unwrap();
        let response = tokio::time::timeout(STEP, stream.recv_response())
            .await
            .expect("an answer in time")
            .unwrap();
        // Authorized and read: this node runs no leadership, so the transfer is a 404.
        assert_eq!(response.status(), 404);
    }
    assert!(server.stats.request_body_bytes(HttpProtocol::H3) > 3 * 200 * 1024);
    sending.abort();
    endpoint.close(quinn::VarInt::from_u32(0), b"done");
    server.stop().await;
}

/// A chaos `transport-downgrade` closes the HTTP/3 connections already open as soon as the
/// switch turns on (the watcher waits on the switch, not on a timer: an open connection costs
/// no wakeup while it stays off), and refuses new ones.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_open_h3_connection_closes_when_the_downgrade_switch_turns_on() {
    let dir = TempDir::new("limits-h3-downgrade");
    let (switch, refuse_h3) = tokio::sync::watch::channel(false);
    let server =
        Server::start_with_switch(dir.path(), ConnectionLimits::default(), refuse_h3).await;
    let endpoint = quic_endpoint(dir.path(), ATTACKER);
    let connection = tokio::time::timeout(STEP, endpoint.connect(server.addr, "node-1").unwrap())
        .await
        .expect("a QUIC handshake in time")
        .unwrap();
    // Open while the switch is off (the watcher is running by then: one stream round trip).
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        connection.close_reason().is_none(),
        "closed with the switch off"
    );
    let flipped = tokio::time::Instant::now();
    switch.send_replace(true);
    tokio::time::timeout(STEP, connection.closed())
        .await
        .expect("the connection closed once the switch turned on");
    let took = flipped.elapsed();
    assert!(
        took < Duration::from_millis(200),
        "closed {took:?} after the switch"
    );
    // New connections are refused while it is on.
    let refused = tokio::time::timeout(STEP, endpoint.connect(server.addr, "node-1").unwrap())
        .await
        .expect("an answer in time");
    assert!(
        refused.is_err(),
        "a new HTTP/3 connection was accepted during the downgrade"
    );
    endpoint.close(quinn::VarInt::from_u32(0), b"done");
    server.stop().await;
}

/// Finding 4 over QUIC: one address holds at most its share of anonymous HTTP/3 connections
/// (the others are closed after their handshake), another address still gets `/healthz` over
/// HTTP/3, and a connection that sends no request is closed at the first-request deadline.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quic_connections_are_bounded_per_address_and_closed_when_quiet() {
    const TRIES: usize = 16;
    // Long enough that the per-address check below happens before any connection is closed
    // for quietness.
    const FIRST_REQUEST: Duration = Duration::from_secs(2);
    let dir = TempDir::new("limits-quic");
    let limits = ConnectionLimits::default()
        .with_counts(64, 8, 8, 4)
        .unwrap()
        .with_timeouts(STEP, FIRST_REQUEST, Duration::from_secs(60));
    let server = Server::start(dir.path(), limits).await;
    let attacker = quic_endpoint(dir.path(), ATTACKER);
    let mut connections = Vec::new();
    for _ in 0..TRIES {
        if let Ok(Ok(connection)) =
            tokio::time::timeout(STEP, attacker.connect(server.addr, "node-1").unwrap()).await
        {
            connections.push(connection);
        }
    }
    // The server closes the connections over the address's share right after their handshake.
    let open = |connections: &[quinn::Connection]| {
        connections
            .iter()
            .filter(|c| c.close_reason().is_none())
            .count()
    };
    let settled = common::eventually(FIRST_REQUEST / 2, || {
        let n = open(&connections);
        async move { n <= 4 }
    })
    .await;
    assert!(
        settled,
        "{} anonymous QUIC connections from one address",
        open(&connections)
    );
    assert!(
        server
            .stats
            .admission()
            .refused(Transport::Quic, Refusal::Address)
            > 0
    );

    // Another address is served over HTTP/3 meanwhile.
    let other = quic_endpoint(dir.path(), OTHER);
    let connection = tokio::time::timeout(STEP, other.connect(server.addr, "node-1").unwrap())
        .await
        .expect("a QUIC handshake in time")
        .unwrap();
    let (mut driver, mut sender) = h3::client::new(h3_quinn::Connection::new(connection))
        .await
        .unwrap();
    tokio::spawn(async move {
        let _ = std::future::poll_fn(|cx| driver.poll_close(cx)).await;
    });
    let request = http::Request::get(format!("https://{}/healthz", server.addr))
        .body(())
        .unwrap();
    let mut stream = sender.send_request(request).await.unwrap();
    stream.finish().await.unwrap();
    let response = tokio::time::timeout(STEP, stream.recv_response())
        .await
        .expect("an answer in time")
        .unwrap();
    assert_eq!(response.status(), 200);

    // The attacker's connections sent no request: closed at the first-request deadline.
    let closed = common::eventually(STEP, || {
        let n = open(&connections);
        async move { n == 0 }
    })
    .await;
    assert!(
        closed,
        "{} quiet QUIC connections still open",
        open(&connections)
    );
    assert!(
        server
            .stats
            .admission()
            .closed(Transport::Quic, Closed::FirstRequestTimeout)
            >= 1
    );
    attacker.close(quinn::VarInt::from_u32(0), b"done");
    other.close(quinn::VarInt::from_u32(0), b"done");
    server.stop().await;
}

/// An HTTP/3 stream is a request once its head has arrived. Before, a stream counted as a
/// request in flight from the moment it was opened: an anonymous client that opened one and
/// sent only the first byte of a HEADERS frame kept its connection (and its anonymous permit)
/// past the first-request and idle deadlines for as long as it kept QUIC alive.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_h3_stream_without_a_request_head_keeps_no_connection_open() {
    let dir = TempDir::new("limits-h3-head");
    let limits = ConnectionLimits::default().with_timeouts(
        STEP,
        Duration::from_millis(300),
        Duration::from_millis(500),
    );
    let server = Server::start(dir.path(), limits).await;
    let endpoint = quic_endpoint(dir.path(), ATTACKER);
    let connection = tokio::time::timeout(STEP, endpoint.connect(server.addr, "node-1").unwrap())
        .await
        .expect("a QUIC handshake in time")
        .unwrap();
    // A well-behaved HTTP/3 session (control stream, settings) beside the silent stream.
    let (mut driver, _sender) = h3::client::new(h3_quinn::Connection::new(connection.clone()))
        .await
        .unwrap();
    tokio::spawn(async move {
        let _ = std::future::poll_fn(|cx| driver.poll_close(cx)).await;
    });
    let (mut send, _recv) = connection.open_bi().await.unwrap();
    // The type of a HEADERS frame (0x01), and never its length.
    send.write_all(&[0x01]).await.unwrap();
    let closed = tokio::time::timeout(STEP, connection.closed()).await;
    assert!(
        closed.is_ok(),
        "a connection whose only stream sent no request head was open after {STEP:?}"
    );
    assert_eq!(
        server
            .stats
            .admission()
            .closed(Transport::Quic, Closed::FirstRequestTimeout),
        1
    );
    endpoint.close(quinn::VarInt::from_u32(0), b"done");
    server.stop().await;
}

/// One connection holds at most `MAX_WATCHERS_PER_CONNECTION` gRPC `Health/Watch` streams.
/// Before, one address's 16 anonymous connections could carry 100 watches each, more than all
/// 1,024 slots, and every later `Watch` was refused `RESOURCE_EXHAUSTED`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_connection_holds_a_bounded_share_of_health_watches() {
    use meshkit_node::grpc::health::MAX_WATCHERS_PER_CONNECTION;
    let dir = TempDir::new("limits-watch-share");
    let server = Server::start(dir.path(), ConnectionLimits::default()).await;
    let anonymous = tls_config(dir.path(), false, ALPN_H2).unwrap();
    let watch = |sender: &mut hyper::client::conn::http2::SendRequest<_>| {
        // One gRPC message: uncompressed, empty (`HealthCheckRequest { service: "" }`).
        let request = http::Request::post(format!(
            "https://{}/grpc.health.v1.Health/Watch",
            server.addr
        ))
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .body(http_body_util::Full::new(Bytes::from_static(&[
            0, 0, 0, 0, 0,
        ])))
        .unwrap();
        sender.send_request(request)
    };
    let connect = async || {
        let tls = tls_connect(server.addr, ATTACKER, &anonymous)
            .await
            .unwrap();
        let (sender, connection) =
            hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tls))
                .await
                .unwrap();
        tokio::spawn(connection);
        sender
    };
    let mut sender = connect().await;
    let mut open = Vec::new();
    for _ in 0..MAX_WATCHERS_PER_CONNECTION {
        let response = tokio::time::timeout(STEP, watch(&mut sender))
            .await
            .expect("an answer in time")
            .unwrap();
        assert_eq!(response.status(), 200);
        assert!(
            response.headers().get("grpc-status").is_none(),
            "{response:?}"
        );
        open.push(response);
    }
    let over = tokio::time::timeout(STEP, watch(&mut sender))
        .await
        .expect("an answer in time")
        .unwrap();
    assert_eq!(
        over.headers().get("grpc-status").map(|v| v.as_bytes()),
        Some(&b"8"[..]),
        "watch {} on one connection: {over:?}",
        MAX_WATCHERS_PER_CONNECTION + 1
    );
    // Another connection has its own share.
    let mut other = connect().await;
    let response = tokio::time::timeout(STEP, watch(&mut other))
        .await
        .expect("an answer in time")
        .unwrap();
    assert!(
        response.headers().get("grpc-status").is_none(),
        "{response:?}"
    );
    drop(open);
    server.stop().await;
}

/// `[control_limits]` in `node.toml` reaches the listeners of a node started from it: with
/// `max_per_address = 2` one address holds 2 idle anonymous HTTP/2 connections of 6 tried (16 by
/// default), and with `first_request_timeout = "1s"` they are closed within the test's 5 s step
/// (10 s by default).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn configured_limits_take_effect_in_the_nodes_listeners() {
    const TRIES: usize = 6;
    let dir = TempDir::new("limits-config");
    let nodes = start_cluster_with(
        dir.path(),
        1,
        "[control_limits]\nmax_per_address = 2\nfirst_request_timeout = \"1s\"\n",
    )
    .await;
    let addr = nodes[0].control_addr().expect("a control endpoint");
    let anonymous = tls_config(dir.path(), false, ALPN_H2).unwrap();
    let mut held = Vec::new();
    for _ in 0..TRIES {
        if let Some(connection) = idle_h2(addr, ATTACKER, &anonymous).await {
            held.push(connection);
        }
    }
    assert_eq!(
        held.len(),
        2,
        "idle anonymous connections one address holds with max_per_address = 2"
    );
    // Every connection sent nothing after its preface: closed at the configured deadline.
    for connection in &mut held {
        let closed = closed_within(connection, STEP).await;
        assert!(
            closed,
            "a quiet connection was open {STEP:?} after a first_request_timeout of 1s"
        );
    }
    drop(held);
    for node in nodes {
        node.stop().await;
    }
}

/// A UDP relay between QUIC clients and a server, which sees every client as the relay's
/// address on `from`. It counts the QUIC Retry packets the server sends back; with `answers`
/// false it drops everything the server sends, so each handshake through it stalls at the
/// server (the server sent its flight and never hears the end) and holds a handshake permit.
struct Relay {
    addr: SocketAddr,
    retries: Arc<std::sync::atomic::AtomicU64>,
    task: tokio::task::JoinHandle<()>,
}

/// Most datagrams a relay passes in either direction before it stops.
const MAX_RELAYED_DATAGRAMS: usize = 100_000;

impl Relay {
    async fn start(server: SocketAddr, from: IpAddr, answers: bool) -> Self {
        use std::sync::atomic::{AtomicU64, Ordering};
        let front = tokio::net::UdpSocket::bind((ATTACKER, 0)).await.unwrap();
        let back = tokio::net::UdpSocket::bind((from, 0)).await.unwrap();
        let addr = front.local_addr().unwrap();
        let retries = Arc::new(AtomicU64::new(0));
        let seen = retries.clone();
        let task = tokio::spawn(async move {
            let (mut up, mut down) = ([0u8; 2048], [0u8; 2048]);
            let mut client = None;
            for _ in 0..MAX_RELAYED_DATAGRAMS {
                tokio::select! {
                    Ok((n, peer)) = front.recv_from(&mut up) => {
                        client = Some(peer);
                        let _ = back.send_to(&up[..n], server).await;
                    }
                    Ok(n) = back.recv(&mut down) => {
                        if is_quic_retry(&down[..n]) {
                            seen.fetch_add(1, Ordering::Relaxed);
                        }
                        if let (true, Some(client)) = (answers, client) {
                            let _ = front.send_to(&down[..n], client).await;
                        }
                    }
                    else => break,
                }
            }
        });
        Self {
            addr,
            retries,
            task,
        }
    }

    fn retries(&self) -> u64 {
        self.retries.load(std::sync::atomic::Ordering::Relaxed)
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// A QUIC version 1 Retry packet (RFC 9000 §17.2.5): long header, fixed bit, type 3.
fn is_quic_retry(datagram: &[u8]) -> bool {
    datagram.len() > 5 && datagram[0] & 0xf0 == 0xf0 && datagram[1..5] == [0, 0, 0, 1]
}

/// `GET /healthz` over HTTP/3 on a new anonymous connection to `via` (a fresh client
/// configuration: no address-validation token from an earlier connection): the status.
async fn h3_healthz(dir: &Path, via: SocketAddr, server: SocketAddr) -> u16 {
    let endpoint = quic_endpoint(dir, ATTACKER);
    let connection = tokio::time::timeout(STEP, endpoint.connect(via, "node-1").unwrap())
        .await
        .expect("a QUIC handshake in time")
        .unwrap();
    let (mut driver, mut sender) = h3::client::new(h3_quinn::Connection::new(connection))
        .await
        .unwrap();
    tokio::spawn(async move {
        let _ = std::future::poll_fn(|cx| driver.poll_close(cx)).await;
    });
    let request = http::Request::get(format!("https://{server}/healthz"))
        .body(())
        .unwrap();
    let mut stream = sender.send_request(request).await.unwrap();
    stream.finish().await.unwrap();
    let response = tokio::time::timeout(STEP, stream.recv_response())
        .await
        .expect("an answer in time")
        .unwrap();
    endpoint.close(quinn::VarInt::from_u32(0), b"done");
    response.status().as_u16()
}

/// Once more than half the QUIC handshake permits are taken, a new connection from an address
/// that has not proven it receives packets is asked for a Retry (it must echo a token, one
/// round trip, so spoofed sources cannot take handshake permits), and then completes. With the
/// permits free, the same client connects without one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quic_asks_for_a_retry_once_half_the_handshake_permits_are_taken() {
    const HANDSHAKES: usize = 4;
    // Three of four handshakes in progress: fewer than half the permits left.
    const STALLED: usize = 3;
    let dir = TempDir::new("limits-quic-retry");
    // Deadlines long enough that the stalled handshakes hold their permits through the test.
    let limits = ConnectionLimits::default()
        .with_counts(64, 8, HANDSHAKES, 8)
        .unwrap()
        .with_timeouts(
            Duration::from_secs(30),
            Duration::from_secs(30),
            Duration::from_secs(60),
        );
    let server = Server::start(dir.path(), limits).await;
    let admission = server.stats.admission().clone();
    // The honest client, from another address, through a relay that shows its packets.
    let probe = Relay::start(server.addr, OTHER, true).await;
    assert_eq!(h3_healthz(dir.path(), probe.addr, server.addr).await, 200);
    assert_eq!(
        (probe.retries(), admission.quic_retries()),
        (0, 0),
        "a Retry with the handshake permits free"
    );

    // Handshakes that never finish, from the attacker's address.
    let stall = Relay::start(server.addr, ATTACKER, false).await;
    let attacker = quic_endpoint(dir.path(), ATTACKER);
    let stalled: Vec<quinn::Connecting> = (0..STALLED)
        .map(|_| attacker.connect(stall.addr, "node-1").unwrap())
        .collect();
    let handshaking = format!(
        "mesh_transport_control_connections{{transport=\"quic\",client=\"handshake\"}} {STALLED}\n"
    );
    let held = common::eventually(STEP, || {
        let text = meshkit_node::metrics::encode(admission.clone()).expect("the exposition");
        let held = text.contains(&handshaking);
        async move { held }
    })
    .await;
    assert!(
        held,
        "{STALLED} QUIC handshakes not in progress at the server"
    );

    // The honest client again: asked for a Retry, then served.
    assert_eq!(h3_healthz(dir.path(), probe.addr, server.addr).await, 200);
    // One Retry per Initial without a token: on a loaded machine the client may resend its
    // first Initial before the Retry arrives and get a second one (which it ignores).
    let retries = probe.retries();
    assert!(
        (1..=2).contains(&retries),
        "Retry packets seen by the new client: {retries}"
    );
    assert_eq!(admission.quic_retries(), retries);
    let text = meshkit_node::metrics::encode(admission.clone()).expect("the exposition");
    assert!(
        text.contains(&format!(
            "mesh_transport_control_quic_retries_total {retries}\n"
        )),
        "{text}"
    );
    drop(stalled);
    attacker.close(quinn::VarInt::from_u32(0), b"done");
    server.stop().await;
}
