//! A service embedding nodes through the library API, as `docs/hosting.md` ("Embedding a node
//! in a service") shows: configured with `NodeConfig::builder` (no `node.toml`), started with
//! the builder's `start`, and the control API mounted with `RunningNode::control_router` into
//! the service's own axum server beside its own route, served over plain HTTP/1.1 on TCP.

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use axum::Router;
use axum::routing::get;
use common::TempDir;
use meshkit_node::api::json::{LeadershipView, PeersResponse};
use meshkit_node::config::NodeConfig;
use meshkit_node::control::auth::{AccessControl, RawAccessConfig};
use meshkit_node::permission::Permission;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

/// Joining and the first lease grant on loopback take well under a second; a loaded test
/// machine gets twenty.
const LIMIT: Duration = Duration::from_secs(20);

/// The status code and body of `GET path` (with `bearer`, if any) over HTTP/1.1.
async fn fetch(addr: SocketAddr, path: &str, bearer: Option<&str>) -> (u16, String) {
    let mut stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let auth = bearer.map_or(String::new(), |t| format!("Authorization: Bearer {t}\r\n"));
    let request = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\n{auth}Connection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await.expect("send");
    let mut answer = String::new();
    stream.read_to_string(&mut answer).await.expect("read");
    let (head, body) = answer.split_once("\r\n\r\n").expect("a head and a body");
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .expect("a status");
    // axum sets a length on these small answers (text and `Json`): the body is what follows.
    assert!(
        !head.to_ascii_lowercase().contains("transfer-encoding"),
        "GET {path}: unexpected chunked answer:\n{head}"
    );
    let body = body.to_owned();
    (status, body)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nodes_built_in_code_join_lead_and_serve_their_control_api_from_the_service() {
    let dir = TempDir::new("embed");
    let bundle = meshkit_node::certs::write_dev_bundle(dir.path(), 2).expect("certificates");
    let access = RawAccessConfig {
        token_key: Some(common::signing_key(dir.path()).public),
        ..RawAccessConfig::default()
    };
    let builder = |i: usize| {
        let files = &bundle.nodes[i];
        NodeConfig::builder(files.id.get())
            .identity(&files.cert, &files.key, &bundle.ca)
            .access(access.clone())
            .voters([1])
    };
    let first_config = builder(0)
        .campaign("global-control")
        .build()
        .expect("valid");
    let first = meshkit_node::node::start(&first_config)
        .await
        .expect("node 1 starts");
    let second = builder(1)
        .seed(1, first.gossip_addr())
        .start()
        .await
        .expect("node 2 starts through the builder");

    let access = AccessControl::from_config(first_config.access()).expect("access control");
    let app = Router::new()
        .route("/hello", get(|| async { "hello" }))
        .merge(first.control_router(access));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let server = tokio::spawn(async move { axum::serve(listener, app).await });

    assert_eq!(fetch(addr, "/hello", None).await, (200, "hello".to_owned()));
    assert_eq!(
        fetch(addr, "/healthz", None).await,
        (200, "ok\n".to_owned())
    );
    // The mounted routes keep their authorization: no credential, no peers.
    assert_eq!(fetch(addr, "/meshkit/peers", None).await.0, 401);

    let token = common::token(dir.path(), "embedder", Permission::Observe);
    let joined = common::eventually(LIMIT, || async {
        let (status, body) = fetch(addr, "/meshkit/peers", Some(&token)).await;
        status == 200
            && serde_json::from_str::<PeersResponse>(&body)
                .is_ok_and(|p| p.peers.iter().filter(|p| p.state == "alive").count() == 2)
    })
    .await;
    assert!(
        joined,
        "node 2 never joined node 1 through the seed the builder set"
    );
    let leads = common::eventually(LIMIT, || async {
        let (_, body) = fetch(addr, "/meshkit/leaders", Some(&token)).await;
        serde_json::from_str::<LeadershipView>(&body)
            .is_ok_and(|v| v.held.iter().any(|h| h.scope == "global-control"))
    })
    .await;
    assert!(
        leads,
        "node 1 never held the scope its builder campaigns for"
    );

    server.abort();
    second.stop().await;
    first.stop().await;
}

/// Compose and Kubernetes name their nodes, not their IPs: a seed written as a name joins once
/// it resolves, a seed that does not resolve (yet) holds nothing up, and an advertised name is
/// what the other members dial.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn seeds_and_the_advertised_address_may_be_host_names() {
    use meshkit_node::net::peer_addr::PeerAddr;

    let dir = TempDir::new("embed-names");
    let bundle = meshkit_node::certs::write_dev_bundle(dir.path(), 2).expect("certificates");
    let builder = |i: usize| {
        let files = &bundle.nodes[i];
        NodeConfig::builder(files.id.get()).identity(&files.cert, &files.key, &bundle.ca)
    };
    let first = builder(0).start().await.expect("node 1 starts");
    let name = |port: u16| format!("localhost:{port}").parse::<PeerAddr>().unwrap();
    // A port for node 2 that is free now, so that it can advertise it by name.
    let port = std::net::UdpSocket::bind("127.0.0.1:0")
        .and_then(|s| s.local_addr())
        .expect("a free port")
        .port();
    // Bound to every address, so only the advertised name can tell peers where to dial.
    let second = builder(1)
        .listen(SocketAddr::from(([0, 0, 0, 0], port)))
        .advertise(name(port))
        // `.invalid` never resolves (RFC 2606): retried in the background, no error at start.
        .seed(3, "meshkit-3.invalid:7001".parse::<PeerAddr>().unwrap())
        .seed(1, name(first.gossip_addr().port()))
        .start()
        .await
        .expect("node 2 starts with named seeds");

    let want = SocketAddr::from(([127, 0, 0, 1], port));
    let sees_second = common::eventually(LIMIT, || async {
        first.handle().snapshot().await.is_ok_and(|s| {
            s.peer(second.id()).is_some_and(|p| {
                p.state == meshkit::membership::MemberState::Alive && p.addr == Some(want)
            })
        })
    })
    .await;
    assert!(
        sees_second,
        "node 1 never saw node 2 alive at its advertised name's address {want}"
    );
    second.stop().await;
    first.stop().await;
}
