//! A service that embeds a MeshKit node without a `node.toml`: the node is configured with
//! [`NodeConfig::builder`], and the control API is mounted into the service's own axum server
//! beside its own routes ([`RunningNode::control_router`]).
//!
//! ```sh
//! cargo run -p meshkit-node --example embed
//! ```
//!
//! It writes development certificates into a temporary directory, starts node 1, serves
//! `GET /hello` and the control API on one plain-HTTP listener, asks itself `GET /hello` and
//! `GET /healthz` (open to anyone) and `GET /meshkit/peers` (needs a credential: 401 here),
//! prints the answers and stops.

use std::error::Error;
use std::net::SocketAddr;

use axum::Router;
use axum::routing::get;
use meshkit_node::config::NodeConfig;
use meshkit_node::control::auth::AccessControl;
use meshkit_node::node::RunningNode;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

#[tokio::main]
async fn main() -> Result<(), Box<dyn Error>> {
    let dir = std::env::temp_dir().join(format!("meshkit-embed-{}", std::process::id()));
    let (ca, nodes) = meshkit_node::certs::write_dev_certs(&dir, 1)?;
    let config = NodeConfig::builder(1)
        .identity(&nodes[0].cert, &nodes[0].key, &ca)
        .listen("127.0.0.1:0".parse()?)
        .metadata("service", "embed-example")
        .build()?;
    let node = meshkit_node::node::start(&config).await?;
    let access = AccessControl::from_config(config.access())?;
    let app = Router::new()
        .route("/hello", get(|| async { "hello from the service\n" }))
        .merge(node.control_router(access));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let server = tokio::spawn(async move { axum::serve(listener, app).await });
    for path in ["/hello", "/healthz", "/meshkit/peers"] {
        println!("GET {path} -> {}", get_status_line(addr, path).await?);
    }
    server.abort();
    stop(node).await;
    std::fs::remove_dir_all(&dir)?;
    Ok(())
}

/// The status line of `GET path` over HTTP/1.1 (no client library needed for one request).
async fn get_status_line(addr: SocketAddr, path: &str) -> std::io::Result<String> {
    let mut stream = tokio::net::TcpStream::connect(addr).await?;
    let request = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await?;
    let mut answer = String::new();
    stream.read_to_string(&mut answer).await?;
    Ok(answer.lines().next().unwrap_or_default().to_owned())
}

async fn stop(node: RunningNode) {
    node.shutdown_gracefully(std::time::Duration::from_millis(200))
        .await;
}
