//! The control router of a running node against its route table and its error form (docs/security.md,
//! finding 10): every row of `ROUTE_PERMISSIONS` is routed and every route has a row; every error,
//! axum's extractor rejections and the router's own 404/405 included, is `{"error": ..}`; a
//! lease transfer with an unknown field is refused.

mod common;

use std::collections::BTreeSet;

use axum::body::Body;
use axum::http::{Request, StatusCode, header};
use common::TempDir;
use meshkit_node::api::routes::ROUTE_PERMISSIONS;
use meshkit_node::config::NodeConfig;
use meshkit_node::control::auth::AccessControl;
use meshkit_node::node::RunningNode;
use meshkit_node::tls::ClientCertificate;
use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;
use tower::ServiceExt as _;

/// Whether a table path is a gRPC method (`/package.Service/Method`).
fn is_grpc(path: &str) -> bool {
    path.starts_with("/meshkit.") || path.starts_with("/grpc.")
}

/// A one-voter node with leases, and its router with an admin certificate on every request.
async fn admin_router(dir: &TempDir) -> (RunningNode, axum::Router) {
    let certs = dir.path().join("certs");
    let bundle = meshkit_node::certs::write_dev_bundle(&certs, 1).unwrap();
    let config = format!(
        "id = 1\nlisten = \"127.0.0.1:0\"\n\n[tls]\ncert = \"certs/node-1.pem\"\n\
         key = \"certs/node-1.key\"\nca = \"certs/ca.pem\"\n\n{}\n\
         [leadership]\nvoters = [1]\n\n\
         [access.identities]\nmeshctl-admin = [\"mesh.admin\"]\n",
        common::FAST_MEMBERSHIP
    );
    let path = dir.path().join("node-1.toml");
    std::fs::write(&path, config).unwrap();
    let config = NodeConfig::load(&path).unwrap();
    let node = meshkit_node::node::start(&config).await.unwrap();
    let access = AccessControl::from_config(config.access()).unwrap();
    let admin = bundle
        .clients
        .iter()
        .find(|c| c.name == "meshctl-admin")
        .unwrap();
    let admin = ClientCertificate(Some(CertificateDer::from_pem_file(&admin.cert).unwrap()));
    let router = meshkit_node::control::router(node.handle().clone(), access).layer(
        axum::middleware::map_request(move |mut request: Request<Body>| {
            let admin = admin.clone();
            async move {
                request.extensions_mut().insert(admin);
                request
            }
        }),
    );
    (node, router)
}

async fn json_body(response: axum::response::Response) -> serde_json::Value {
    assert_eq!(
        response.headers()[header::CONTENT_TYPE],
        "application/json",
        "{}",
        response.status()
    );
    let bytes = axum::body::to_bytes(response.into_body(), 1 << 20)
        .await
        .unwrap();
    serde_json::from_slice(&bytes)
        .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(&bytes)))
}

/// `GET /control/backpressure` and `POST /control/rebalance` were in the table with no route.
/// The table and the router now list the same routes, and each row answers through its
/// handler, not through the router's "no route" fallback.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn route_table_and_router_list_the_same_routes() {
    let table_http: BTreeSet<(&str, &str)> = ROUTE_PERMISSIONS
        .iter()
        .filter(|r| !is_grpc(r.path))
        .map(|r| (r.method, r.path))
        .collect();
    let routed_http: BTreeSet<(&str, &str)> = meshkit_node::control::http_route_list()
        .into_iter()
        .collect();
    assert_eq!(
        table_http, routed_http,
        "HTTP rows without routes or routes without rows"
    );
    let table_grpc: BTreeSet<&str> = ROUTE_PERMISSIONS
        .iter()
        .filter(|r| is_grpc(r.path))
        .inspect(|r| assert_eq!(r.method, "POST", "{}", r.path))
        .map(|r| r.path)
        .collect();
    let served_grpc: BTreeSet<&str> = meshkit_node::grpc::path::ALL.into_iter().collect();
    assert_eq!(
        table_grpc, served_grpc,
        "gRPC rows without methods or methods without rows"
    );

    let dir = TempDir::new("route-walk");
    let (node, router) = admin_router(&dir).await;
    for row in ROUTE_PERMISSIONS {
        let mut request = Request::builder().method(row.method).uri(row.path);
        if is_grpc(row.path) {
            request = request.header(header::CONTENT_TYPE, "application/grpc");
        }
        let response = router
            .clone()
            .oneshot(request.body(Body::empty()).unwrap())
            .await
            .unwrap();
        let what = format!("{} {}", row.method, row.path);
        if is_grpc(row.path) {
            let status = response.headers().get("grpc-status");
            // 12 is UNIMPLEMENTED: the service does not know the method.
            assert_ne!(status.map(|s| s.as_bytes()), Some(&b"12"[..]), "{what}");
            continue;
        }
        let status = response.status();
        assert_ne!(status, StatusCode::METHOD_NOT_ALLOWED, "{what}");
        if status == StatusCode::NOT_FOUND {
            let body = json_body(response).await;
            let error = body["error"].as_str().unwrap_or_default();
            assert!(!error.starts_with("no route"), "{what}: {body}");
        }
    }
    node.stop().await;
}

/// axum's rejections were plain text and the router's 404/405 empty; `POST
/// /control/leases/transfer` took unknown fields. Each is now refused in the JSON form.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_error_of_the_router_is_json() {
    let dir = TempDir::new("json-errors");
    let (node, router) = admin_router(&dir).await;
    let transfer = |content_type: Option<&str>, body: Vec<u8>| {
        let mut request = Request::post("/control/leases/transfer");
        if let Some(content_type) = content_type {
            request = request.header(header::CONTENT_TYPE, content_type);
        }
        request.body(Body::from(body)).unwrap()
    };
    let json = Some("application/json");
    let cases = [
        (
            transfer(
                json,
                br#"{"scope": "global-control", "to": 2, "force": true}"#.to_vec(),
            ),
            StatusCode::UNPROCESSABLE_ENTITY,
            "unknown field `force`",
        ),
        (
            transfer(json, br#"{"scope": "global-control"}"#.to_vec()),
            StatusCode::UNPROCESSABLE_ENTITY,
            "missing field `to`",
        ),
        (transfer(json, b"{".to_vec()), StatusCode::BAD_REQUEST, ""),
        (
            transfer(None, br#"{"scope": "global-control", "to": 2}"#.to_vec()),
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "Content-Type",
        ),
        (
            transfer(json, vec![b' '; 3 << 20]),
            StatusCode::PAYLOAD_TOO_LARGE,
            "",
        ),
        (
            Request::get("/control/leases/transfer")
                .body(Body::empty())
                .unwrap(),
            StatusCode::METHOD_NOT_ALLOWED,
            "not allowed",
        ),
        (
            Request::get("/no/such/route").body(Body::empty()).unwrap(),
            StatusCode::NOT_FOUND,
            "no route for GET /no/such/route",
        ),
    ];
    for (request, expected, says) in cases {
        let what = format!("{} {}", request.method(), request.uri());
        let response = router.clone().oneshot(request).await.unwrap();
        assert_eq!(response.status(), expected, "{what}");
        let body = json_body(response).await;
        let error = body["error"].as_str().unwrap_or_default();
        assert!(!error.is_empty() && error.contains(says), "{what}: {body}");
    }
    node.stop().await;
}
