//! A service registers a health probe of its own type on the node it embeds, without editing
//! MeshKit, and reads it back from `GET /control/probes` beside the node's built-in probes.
//!
//! ```sh
//! cargo run -p meshkit-node --example probes
//! ```
//!
//! It writes development certificates into a temporary directory, starts node 1 with a control
//! endpoint, registers `orders-db` (an [`AsyncProbe`] that connects to the service's
//! "database", a TCP listener it opens), waits until the probe is healthy, closes the listener,
//! waits until the probe is failing, printing `GET /control/probes?tag=namespace=orders` each
//! time, and stops. Every wait is bounded (10 s).

use std::error::Error;
use std::net::SocketAddr;
use std::time::Duration;

use meshkit::diag::probe::{ProbeSpec, ProbeTags};
use meshkit_node::api::probes::ProbesResponse;
use meshkit_node::client::{Client, ClientConfig};
use meshkit_node::config::NodeConfig;
use meshkit_node::probe_host::{AsyncProbe, CheckFuture, ProbeFailure};

/// The service's own probe type: can it open a TCP connection to its database?
struct TcpConnect {
    addr: SocketAddr,
}

impl AsyncProbe for TcpConnect {
    fn kind(&self) -> &str {
        "tcp-connect"
    }

    fn check(&self) -> CheckFuture {
        let addr = self.addr;
        // The host drops the future at the spec's timeout: no timeout of its own needed.
        Box::pin(async move {
            tokio::net::TcpStream::connect(addr)
                .await
                .map(drop)
                .map_err(|e| ProbeFailure::new(format!("connect {addr}: {e}")))
        })
    }
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn Error>> {
    let dir = std::env::temp_dir().join(format!("meshkit-probes-{}", std::process::id()));
    let (ca, nodes) = meshkit_node::certs::write_dev_certs(&dir, 1)?;
    let config = NodeConfig::builder(1)
        .identity(&nodes[0].cert, &nodes[0].key, &ca)
        .listen("127.0.0.1:0".parse()?)
        .control("127.0.0.1:0".parse()?)
        .build()?;
    let node = meshkit_node::node::start(&config).await?;
    let control = node
        .control_addr()
        .ok_or("no control endpoint")?
        .to_string();

    // The "database".
    let database = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let db_addr = database.local_addr()?;
    let accept = tokio::spawn(async move {
        while let Ok((stream, _)) = database.accept().await {
            drop(stream);
        }
    });

    let spec = ProbeSpec::new("orders-db")?
        .with_timing(Duration::from_millis(200), Duration::from_millis(100))?
        .with_tags(ProbeTags {
            namespace: Some("orders".to_owned()),
            ..ProbeTags::default()
        })?;
    node.probes()
        .register_async(spec, TcpConnect { addr: db_addr })
        .await?;

    // Node certificates hold mesh.observe by default: enough to read the probes.
    let client =
        Client::new(&ClientConfig::new(&ca)?.with_identity(&nodes[0].cert, &nodes[0].key)?)?;
    wait_for(&client, &control, "healthy").await?;
    accept.abort();
    // The aborted task drops the listener: connections are refused from now on.
    wait_for(&client, &control, "failing").await?;

    let all: ProbesResponse =
        serde_json::from_str(&client.get(&control, "/control/probes").await?.body)?;
    let names: Vec<&str> = all.probes.iter().map(|p| p.name.as_str()).collect();
    println!("every probe of node {}: {names:?}", all.node);
    client.close().await;
    node.stop().await;
    std::fs::remove_dir_all(&dir)?;
    Ok(())
}

/// Reads `orders-db` until its state is `want` (at most 10 s), printing what it read.
async fn wait_for(client: &Client, control: &str, want: &str) -> Result<(), Box<dyn Error>> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let response = client
            .get(control, "/control/probes?tag=namespace=orders")
            .await?;
        let body: ProbesResponse = serde_json::from_str(&response.body)?;
        let probe = body.probes.first().ok_or("orders-db is not listed")?;
        if probe.state == want {
            println!(
                "orders-db is {} after {} results (p50 {:?} ms, last error {:?})",
                probe.state,
                probe.counts.pass + probe.counts.fail + probe.counts.timeout,
                probe.latency_p50_ms,
                probe.last_error
            );
            return Ok(());
        }
        if tokio::time::Instant::now() >= deadline {
            return Err(format!("orders-db still {} after 10 s", probe.state).into());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
