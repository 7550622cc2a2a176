//! Certificates on a real node (QUIC and TLS on loopback): rotation without a restart, refusal of
//! a bad rotation, refusal of expired and untrusted peer certificates on both listeners with the
//! metrics that count them, and refusal to start with an expired certificate.

mod common;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use common::{TempDir, eventually};
use meshkit::NodeId;
use meshkit_node::certs::{DevCa, IssuedCert};
use meshkit_node::client::{Client, ClientConfig, Protocols};
use meshkit_node::config::NodeConfig;
use meshkit_node::node::{self, RunningNode};
use meshkit_node::tls::{TlsIdentity, cert_serial};
use quinn::crypto::rustls::QuicClientConfig;
use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, ServerName};

/// How long a reload may take to show (the node polls every 100 ms here and waits one poll for
/// the files to settle), and how long a counter may take to rise, on a loaded machine.
const SHOW_LIMIT: Duration = Duration::from_secs(10);
/// One handshake on loopback.
const HANDSHAKE_LIMIT: Duration = Duration::from_secs(5);
const DAY: Duration = Duration::from_secs(86_400);

fn write(dir: &Path, name: &str, issued: &IssuedCert) -> (PathBuf, PathBuf) {
    let (cert, key) = (
        dir.join(format!("{name}.pem")),
        dir.join(format!("{name}.key")),
    );
    std::fs::write(&key, &issued.key_pem).unwrap();
    std::fs::write(&cert, &issued.cert_pem).unwrap();
    (cert, key)
}

/// A CA, node-1's files and node-2's (the tests' client identity) in `dir`.
fn setup(dir: &Path) -> DevCa {
    let ca = DevCa::generate("reload test CA").unwrap();
    std::fs::write(dir.join("ca.pem"), ca.cert_pem()).unwrap();
    write(dir, "node-1", &ca.issue_node(NodeId::new(1)).unwrap());
    write(dir, "node-2", &ca.issue_node(NodeId::new(2)).unwrap());
    ca
}

/// node-1's configuration: loopback, control endpoint, TLS files polled every 100 ms.
fn config(dir: &Path) -> PathBuf {
    let path = dir.join("node-1.toml");
    std::fs::write(
        &path,
        "id = 1\nlisten = \"127.0.0.1:0\"\ncontrol = \"127.0.0.1:0\"\n\n[tls]\n\
         cert = \"node-1.pem\"\nkey = \"node-1.key\"\nca = \"ca.pem\"\nreload_interval = \"100ms\"\n",
    )
    .unwrap();
    path
}

async fn start(dir: &Path) -> RunningNode {
    node::start(&NodeConfig::load(&config(dir)).unwrap())
        .await
        .expect("node-1 starts")
}

/// A rustls client configuration presenting `name`'s files and trusting `dir`'s CA, offering
/// `alpn`.
fn client_tls(dir: &Path, name: &str, alpn: &[u8]) -> rustls::ClientConfig {
    let identity = TlsIdentity::load(
        &dir.join(format!("{name}.pem")),
        &dir.join(format!("{name}.key")),
        &dir.join("ca.pem"),
    )
    .unwrap();
    let mut config = identity.client_config().unwrap();
    config.alpn_protocols = vec![alpn.to_vec()];
    config
}

/// One TLS-over-TCP handshake with the control endpoint: the serial of the certificate the
/// server presented, or the error.
async fn tcp_handshake(addr: SocketAddr, tls: rustls::ClientConfig) -> Result<Vec<u8>, String> {
    let attempt = async {
        let tcp = tokio::net::TcpStream::connect(addr).await?;
        let connector = tokio_rustls::TlsConnector::from(Arc::new(tls));
        let mut stream = connector
            .connect(ServerName::try_from("node-1").unwrap(), tcp)
            .await?;
        let serial = stream
            .get_ref()
            .1
            .peer_certificates()
            .and_then(|chain| chain.first())
            .and_then(|leaf| cert_serial(leaf))
            .unwrap_or_default();
        // TLS 1.3: the server judges the client's certificate after the client is done; a read
        // brings its refusal, if any.
        use tokio::io::AsyncReadExt as _;
        let mut byte = [0u8; 1];
        let _ = tokio::time::timeout(Duration::from_millis(200), stream.read(&mut byte)).await;
        Ok::<_, std::io::Error>(serial)
    };
    match tokio::time::timeout(HANDSHAKE_LIMIT, attempt).await {
        Ok(result) => result.map_err(|e| e.to_string()),
        Err(_) => Err("handshake timed out".to_owned()),
    }
}

/// One QUIC handshake with `addr`: the serial of the certificate the server presented, or the
/// error.
async fn quic_handshake(addr: SocketAddr, tls: rustls::ClientConfig) -> Result<Vec<u8>, String> {
    let mut endpoint = quinn::Endpoint::client(SocketAddr::from(([127, 0, 0, 1], 0)))
        .map_err(|e| e.to_string())?;
    endpoint.set_default_client_config(quinn::ClientConfig::new(Arc::new(
        QuicClientConfig::try_from(tls).unwrap(),
    )));
    let attempt = async {
        let conn = endpoint
            .connect(addr, "node-1")
            .map_err(|e| e.to_string())?
            .await
            .map_err(|e| e.to_string())?;
        let serial = conn
            .peer_identity()
            .and_then(|any| any.downcast::<Vec<CertificateDer<'static>>>().ok())
            .and_then(|chain| chain.first().and_then(|leaf| cert_serial(leaf)))
            .unwrap_or_default();
        // The server may still refuse the client's certificate after the client is done.
        if let Ok(reason) = tokio::time::timeout(Duration::from_millis(200), conn.closed()).await {
            return Err(reason.to_string());
        }
        conn.close(0u32.into(), b"done");
        Ok(serial)
    };
    let result = tokio::time::timeout(HANDSHAKE_LIMIT, attempt)
        .await
        .unwrap_or_else(|_| Err("handshake timed out".to_owned()));
    endpoint.close(0u32.into(), b"done");
    result
}

fn metrics_client(dir: &Path) -> Client {
    let config = ClientConfig::new(&dir.join("ca.pem"))
        .and_then(|c| c.with_identity(&dir.join("node-2.pem"), &dir.join("node-2.key")))
        .unwrap()
        .with_protocols(Protocols::TcpOnly)
        .with_request_timeout(Duration::from_secs(5));
    Client::new(&config).unwrap()
}

/// The value of the sample `name` (with its labels) in `node`'s `/metrics`.
async fn sample(client: &Client, node: &RunningNode, name: &str) -> Option<f64> {
    let addr = node.control_addr().unwrap().to_string();
    let response = client.get(&addr, "/metrics").await.ok()?;
    assert_eq!(response.status, 200, "{}", response.body);
    response
        .body
        .lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
}

fn unix(time: SystemTime) -> f64 {
    time.duration_since(SystemTime::UNIX_EPOCH)
        .unwrap()
        .as_secs() as f64
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn certificates_reload_without_restart_and_bad_ones_are_refused() {
    let dir = TempDir::new("cert-reload");
    let ca = setup(dir.path());
    let node = start(dir.path()).await;
    let (gossip, control) = (node.gossip_addr(), node.control_addr().unwrap());
    let mesh_tls = || client_tls(dir.path(), "node-2", meshkit_node::tls::ALPN_GOSSIP);
    let control_tls = || client_tls(dir.path(), "node-2", b"h2");
    let metrics = metrics_client(dir.path());
    let first = tcp_handshake(control, control_tls()).await.unwrap();
    assert_eq!(quic_handshake(gossip, mesh_tls()).await.unwrap(), first);
    let reloads = "mesh_transport_cert_reloads_total{result=\"ok\"}";
    let refused = "mesh_transport_cert_reloads_total{result=\"error\"}";
    let expiry = "mesh_transport_cert_expiry_timestamp_seconds";
    assert_eq!(sample(&metrics, &node, reloads).await, Some(0.0));

    // A new certificate from the same CA, valid for 30 days: new handshakes on both listeners
    // present it, without a restart.
    let now = SystemTime::now();
    let until = now + 30 * DAY;
    let renewed = ca
        .issue_node_valid(NodeId::new(1), now - Duration::from_secs(60), until)
        .unwrap();
    write(dir.path(), "node-1", &renewed);
    let der = CertificateDer::from_pem_slice(renewed.cert_pem.as_bytes()).unwrap();
    let second = cert_serial(&der).unwrap();
    assert_ne!(first, second);
    let shown = eventually(SHOW_LIMIT, || async {
        tcp_handshake(control, control_tls()).await.as_ref() == Ok(&second)
            && quic_handshake(gossip, mesh_tls()).await.as_ref() == Ok(&second)
    })
    .await;
    assert!(
        shown,
        "the renewed certificate was not presented within {SHOW_LIMIT:?}"
    );
    assert_eq!(sample(&metrics, &node, reloads).await, Some(1.0));
    assert_eq!(sample(&metrics, &node, refused).await, Some(0.0));
    assert_eq!(sample(&metrics, &node, expiry).await, Some(unix(until)));

    // Garbage in the certificate file: refused, counted, and the renewed certificate stays.
    std::fs::write(dir.path().join("node-1.pem"), "garbage\n").unwrap();
    let counted = eventually(SHOW_LIMIT, || async {
        sample(&metrics, &node, refused).await == Some(1.0)
    })
    .await;
    assert!(counted, "the garbage certificate file was not refused");
    // An expired certificate (a valid pair from the right CA): refused as well.
    let past = now - 10 * DAY;
    write(
        dir.path(),
        "node-1",
        &ca.issue_node_valid(NodeId::new(1), past, past + DAY)
            .unwrap(),
    );
    let counted = eventually(SHOW_LIMIT, || async {
        sample(&metrics, &node, refused).await == Some(2.0)
    })
    .await;
    assert!(counted, "the expired certificate was not refused");
    assert_eq!(
        tcp_handshake(control, control_tls()).await,
        Ok(second.clone())
    );
    assert_eq!(quic_handshake(gossip, mesh_tls()).await, Ok(second.clone()));
    assert_eq!(sample(&metrics, &node, reloads).await, Some(1.0));
    assert_eq!(sample(&metrics, &node, expiry).await, Some(unix(until)));
    metrics.close().await;
    node.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expired_and_untrusted_peer_certificates_are_refused_and_counted() {
    let dir = TempDir::new("cert-refusal");
    let ca = setup(dir.path());
    let past = SystemTime::now() - 10 * DAY;
    write(
        dir.path(),
        "expired",
        &ca.issue_node_valid(NodeId::new(3), past, past + DAY)
            .unwrap(),
    );
    let rogue = DevCa::generate("rogue CA").unwrap();
    write(
        dir.path(),
        "rogue",
        &rogue.issue_node(NodeId::new(4)).unwrap(),
    );
    let node = start(dir.path()).await;
    let (gossip, control) = (node.gossip_addr(), node.control_addr().unwrap());
    let metrics = metrics_client(dir.path());
    let failures = |listener: &str, reason: &str| {
        format!(
            "mesh_transport_handshake_failures_total{{listener=\"{listener}\",reason=\"{reason}\"}}"
        )
    };

    for (name, reason) in [("expired", "expired"), ("rogue", "untrusted")] {
        let gossip_alpn = meshkit_node::tls::ALPN_GOSSIP;
        let refused = quic_handshake(gossip, client_tls(dir.path(), name, gossip_alpn)).await;
        assert!(
            refused.is_err(),
            "the mesh listener accepted the {name} certificate"
        );
        let tcp = tcp_handshake(control, client_tls(dir.path(), name, b"h2")).await;
        let h3 = quic_handshake(control, client_tls(dir.path(), name, b"h3")).await;
        assert!(
            h3.is_err(),
            "the control listener accepted the {name} certificate over HTTP/3"
        );
        let counted = eventually(SHOW_LIMIT, || async {
            sample(&metrics, &node, &failures("mesh", reason)).await == Some(1.0)
                && sample(&metrics, &node, &failures("control", reason)).await == Some(2.0)
        })
        .await;
        assert!(
            counted,
            "{name}: refusals not counted as {reason} (TLS over TCP ended with {tcp:?})"
        );
    }
    // A valid certificate is still welcome on both listeners, and nothing else was counted.
    let valid = quic_handshake(
        gossip,
        client_tls(dir.path(), "node-2", meshkit_node::tls::ALPN_GOSSIP),
    );
    assert!(valid.await.is_ok());
    assert!(
        tcp_handshake(control, client_tls(dir.path(), "node-2", b"h2"))
            .await
            .is_ok()
    );
    for listener in ["mesh", "control"] {
        assert_eq!(
            sample(&metrics, &node, &failures(listener, "other")).await,
            Some(0.0)
        );
    }
    metrics.close().await;
    node.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_does_not_start_with_an_expired_certificate() {
    let dir = TempDir::new("cert-expired-start");
    let ca = setup(dir.path());
    let past = SystemTime::now() - 10 * DAY;
    write(
        dir.path(),
        "node-1",
        &ca.issue_node_valid(NodeId::new(1), past, past + DAY)
            .unwrap(),
    );
    let path = config(dir.path());
    let error = node::start(&NodeConfig::load(&path).unwrap())
        .await
        .expect_err("a node with an expired certificate must not start");
    let text = error.to_string();
    assert!(
        text.contains("node-1.pem") && text.contains("expired at"),
        "unclear refusal: {text}"
    );
    let check = std::process::Command::new(meshkit_testkit::bin("meshkitd"))
        .arg("check-config")
        .arg(&path)
        .output()
        .expect("meshkitd runs");
    let stderr = String::from_utf8_lossy(&check.stderr);
    assert!(!check.status.success(), "check-config passed: {stderr}");
    assert!(stderr.contains("expired at"), "unclear refusal: {stderr}");

    // Not yet valid is refused too.
    let future = SystemTime::now() + DAY;
    write(
        dir.path(),
        "node-1",
        &ca.issue_node_valid(NodeId::new(1), future, future + DAY)
            .unwrap(),
    );
    let error = node::start(&NodeConfig::load(&path).unwrap())
        .await
        .expect_err("a node with a not-yet-valid certificate must not start");
    assert!(error.to_string().contains("not valid before"), "{error}");
}

/// A `certificate-expiry` experiment: while it runs, new handshakes on both listeners get the
/// operator's expired stand-in (a verifying client refuses it) and the expiry metric shows it;
/// at the deadline the node's own certificate is back, with TLS reloading off (the switch does
/// not depend on it). A plan the stand-in does not fit is refused, and a stand-in for another
/// node stops the configuration from loading.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_certificate_expiry_experiment_serves_the_stand_in_until_its_deadline() {
    use meshkit::diag::fault::{FaultKind, FaultPlan, Selector, resolve};
    use meshkit_node::runtime::chaos_host::{ChaosError, ExperimentRef};

    let dir = TempDir::new("cert-expiry-fault");
    let ca = setup(dir.path());
    let past = SystemTime::now() - 10 * DAY;
    let stand_in = ca
        .issue_node_valid(NodeId::new(1), past, past + DAY)
        .unwrap();
    write(dir.path(), "node-1-expired", &stand_in);
    let toml = |stand_in: &str| {
        format!(
            "id = 1\nlisten = \"127.0.0.1:0\"\ncontrol = \"127.0.0.1:0\"\n\n[tls]\n\
             cert = \"node-1.pem\"\nkey = \"node-1.key\"\nca = \"ca.pem\"\nreload_interval = \"0s\"\n\n\
             [chaos]\nenabled = true\nallowed_kinds = [\"certificate-expiry\"]\n\
             stand_in_cert = \"{stand_in}.pem\"\nstand_in_key = \"{stand_in}.key\"\n"
        )
    };
    // node-2's certificate cannot stand in for node 1.
    let wrong = dir.path().join("wrong.toml");
    std::fs::write(&wrong, toml("node-2")).unwrap();
    let error = NodeConfig::load(&wrong)
        .unwrap()
        .load_stand_in()
        .unwrap_err()
        .to_string();
    assert!(error.starts_with("key `chaos.stand_in_cert`"), "{error}");

    let path = dir.path().join("node-1.toml");
    std::fs::write(&path, toml("node-1-expired")).unwrap();
    let node = node::start(&NodeConfig::load(&path).unwrap())
        .await
        .unwrap();
    let (gossip, control) = (node.gossip_addr(), node.control_addr().unwrap());
    let mesh_tls = || client_tls(dir.path(), "node-2", meshkit_node::tls::ALPN_GOSSIP);
    let control_tls = || client_tls(dir.path(), "node-2", b"h2");
    let metrics = metrics_client(dir.path());
    let expiry = "mesh_transport_cert_expiry_timestamp_seconds";
    let own = tcp_handshake(control, control_tls()).await.unwrap();
    let own_expiry = sample(&metrics, &node, expiry).await;

    let handle = node.handle();
    let plan = |expires_in| {
        FaultPlan::new(
            FaultKind::CertificateExpiry { expires_in },
            Selector::Indices(vec![0]),
            Duration::from_secs(3),
        )
        .unwrap()
    };
    let id = |serial| ExperimentRef {
        origin: NodeId::new(1),
        serial,
    };
    let view = handle.chaos_view().await.unwrap();
    let soon = plan(Some(Duration::from_secs(3600)));
    let radius = resolve(&soon, &view).unwrap();
    assert!(matches!(
        handle.chaos_apply(id(1), soon, radius).await,
        Err(ChaosError::NotApplicableHere { reason, .. }) if reason.contains("has expired")
    ));
    let expired = plan(None);
    let radius = resolve(&expired, &view).unwrap();
    let status = handle.chaos_apply(id(2), expired, radius).await.unwrap();
    assert_eq!(
        (status.phase.as_str(), status.applied_here),
        ("active", true)
    );

    // A verifying client refuses what both listeners now present, and the expiry metric (which
    // the built-in cert-expiry probe and the alert read) is the stand-in's, as soon as the
    // experiment is active: the listeners and the metric read the experiment's switch at each
    // handshake and scrape. (They used to take the stand-in when the certificate reloader's
    // task saw the switch and republished, a moment after "active": a CI run at load 30 saw the
    // node's own certificate right after, so the active report ran ahead of the fault.)
    let expired = |r: Result<Vec<u8>, String>| r.is_err_and(|e| e.contains("xpired"));
    assert!(
        expired(tcp_handshake(control, control_tls()).await),
        "the control listener presents the node's own certificate once the experiment is active"
    );
    assert!(
        expired(quic_handshake(gossip, mesh_tls()).await),
        "the mesh listener presents the node's own certificate once the experiment is active"
    );
    assert_eq!(
        sample(&metrics, &node, expiry).await,
        Some(unix(past + DAY))
    );

    // The dead-man switch: at the 3 s deadline the node's own certificate is back.
    let back = eventually(SHOW_LIMIT, || async {
        tcp_handshake(control, control_tls()).await.as_ref() == Ok(&own)
            && quic_handshake(gossip, mesh_tls()).await.as_ref() == Ok(&own)
    })
    .await;
    assert!(
        back,
        "the node's own certificate was not served again after the deadline"
    );
    assert_eq!(sample(&metrics, &node, expiry).await, own_expiry);
    metrics.close().await;
    node.stop().await;
}
