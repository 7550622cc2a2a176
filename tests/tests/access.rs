//! Authorization end to end from a `node.toml`: the `[access]` table parsed by `NodeConfig`,
//! the real control router over a running node, requests carrying a client certificate (as the
//! TLS server inserts it) or a bearer token, and the audit file read back.

mod common;

use std::time::{Duration, SystemTime};

use axum::body::Body;
use axum::http::{Request, StatusCode, header};
use common::TempDir;
use meshkit_node::config::NodeConfig;
use meshkit_node::control::auth::AccessControl;
use meshkit_node::permission::Permission;
use meshkit_node::tls::ClientCertificate;
use meshkit_node::tokens::TokenSigningKey;
use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;
use tower::ServiceExt as _;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn access_table_of_a_node_config_is_enforced_and_audited() {
    let dir = TempDir::new("access");
    let certs = dir.path().join("certs");
    let bundle = meshkit_node::certs::write_dev_bundle(&certs, 1).unwrap();
    let keys = meshkit_node::tokens::write_signing_key(&certs).unwrap();
    // No `control` address: the test drives the router itself, so one audit writer owns the file.
    let config = format!(
        "id = 1\nlisten = \"127.0.0.1:0\"\n\n[tls]\ncert = \"certs/node-1.pem\"\n\
         key = \"certs/node-1.key\"\nca = \"certs/ca.pem\"\n\n{}\n\
         [access]\ntoken_key = \"certs/token-signing.pub\"\naudit_log = \"audit.jsonl\"\n\
         audit_log_max_bytes = 65536\n\n[access.identities]\nmeshctl-operator = [\"mesh.operate\"]\n",
        common::FAST_MEMBERSHIP
    );
    let path = dir.path().join("node-1.toml");
    std::fs::write(&path, config).unwrap();
    let config = NodeConfig::load(&path).unwrap();
    let node = meshkit_node::node::start(&config).await.unwrap();
    let access = AccessControl::from_config(config.access()).unwrap();
    let app = meshkit_node::control::router(node.handle().clone(), access.clone());

    let operator = {
        let client = bundle
            .clients
            .iter()
            .find(|c| c.name == "meshctl-operator")
            .unwrap();
        ClientCertificate(Some(CertificateDer::from_pem_file(&client.cert).unwrap()))
    };
    let observer_token = TokenSigningKey::from_pem_file(&keys.private)
        .unwrap()
        .issue(
            "grafana",
            &[Permission::Observe].into_iter().collect(),
            SystemTime::now(),
            Duration::from_secs(60),
        )
        .unwrap();
    let call = |request: Request<Body>| {
        let app = app.clone();
        async move { app.oneshot(request).await.unwrap() }
    };

    // The operator reads (operate implies observe), and may not reach an admin-only path.
    let response = call(
        Request::get("/meshkit/peers")
            .extension(operator.clone())
            .body(Body::empty())
            .unwrap(),
    )
    .await;
    assert_eq!(response.status(), StatusCode::OK);
    let response = call(
        Request::post("/control/chaos")
            .extension(operator)
            .body(Body::empty())
            .unwrap(),
    )
    .await;
    assert_eq!(response.status(), StatusCode::FORBIDDEN);

    // The observe token reads metrics; without it, metrics are closed.
    let response = call(
        Request::get("/metrics")
            .header(header::AUTHORIZATION, format!("Bearer {observer_token}"))
            .body(Body::empty())
            .unwrap(),
    )
    .await;
    assert_eq!(response.status(), StatusCode::OK);
    let text = axum::body::to_bytes(response.into_body(), 1 << 20)
        .await
        .unwrap();
    let text = String::from_utf8_lossy(&text);
    assert!(text.contains("mesh_control_audit_dropped_total{reason=\"queue_full\"} 0\n"));
    let response = call(Request::get("/metrics").body(Body::empty()).unwrap()).await;
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);

    // Only the admin-route call was audited, relative to the config file's directory.
    access.audit().flush().await;
    let audit = std::fs::read_to_string(dir.path().join("audit.jsonl")).unwrap();
    let lines: Vec<serde_json::Value> = audit
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 1, "{audit}");
    assert_eq!(lines[0]["identity"], "meshctl-operator");
    assert_eq!(lines[0]["required_scope"], "mesh.admin");
    assert_eq!(lines[0]["outcome"], "forbidden");
    assert_eq!(lines[0]["status"], 403);
    node.stop().await;
}
