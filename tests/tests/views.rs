//! The read-only views of the control API (peers with filters and pages, clusters, versions,
//! readiness) on three real nodes in one process.

mod common;

use std::time::Duration;

use axum::body::Body;
use axum::http::Request;
use common::{TempDir, control, eventually, start_cluster_with};
use futures_util::StreamExt;
use meshkit::membership::MemberState;
use serde_json::{Value, json};
use tower::ServiceExt;

const METADATA: &str = "[metadata]\ncluster = \"eu-1\"\nregion = \"west\"\n";

async fn get(router: &axum::Router, path: &str) -> (u16, Value) {
    let response = router
        .clone()
        .oneshot(Request::get(path).body(Body::empty()).unwrap())
        .await
        .unwrap();
    let status = response.status().as_u16();
    let mut body = Vec::new();
    let mut stream = response.into_body().into_data_stream();
    while let Some(chunk) = stream.next().await {
        body.extend_from_slice(&chunk.unwrap());
    }
    let value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    (status, value)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn peers_clusters_versions_and_readiness() {
    let dir = TempDir::new("views");
    let nodes = start_cluster_with(dir.path(), 3, METADATA).await;
    let router = control(dir.path(), &nodes[0]);
    // Formed, and every member's metadata (cluster, region, versions) has arrived.
    let formed = eventually(Duration::from_secs(15), || async {
        let (_, v) = get(&router, "/meshkit/clusters").await;
        v["clusters"] == json!([{"name": "eu-1", "states": {"alive": 3, "suspect": 0, "dead": 0, "left": 0}, "regions": {"west": 3}, "leader": null}])
    })
    .await;
    assert!(formed, "{:?}", get(&router, "/meshkit/clusters").await);

    let (status, v) = get(&router, "/meshkit/versions").await;
    assert_eq!(status, 200);
    assert_eq!(
        v["software"],
        json!([{"version": env!("CARGO_PKG_VERSION"), "members": 3}])
    );
    let wire = format!(
        "{}/{}",
        meshkit::wire::PROTOCOL_VERSION,
        meshkit::lease::wire::LEASE_PROTOCOL_VERSION
    );
    assert_eq!(v["wire"], json!([{"version": wire, "members": 3}]));
    assert_eq!(v["mixed"], json!(false));

    // Pages of two, by id.
    let (_, first) = get(&router, "/meshkit/peers?limit=2").await;
    assert_eq!(first["total"], json!(3));
    assert_eq!(first["peers"].as_array().unwrap().len(), 2);
    let next = first["next_after"].as_u64().expect("a second page");
    let (_, second) = get(&router, &format!("/meshkit/peers?limit=2&after={next}")).await;
    assert_eq!(second["peers"].as_array().unwrap().len(), 1);
    assert_eq!(second["next_after"], Value::Null);
    assert_eq!(second["peers"][0]["metadata"]["region"], json!("west"));
    let (_, dead) = get(&router, "/meshkit/peers?state=dead").await;
    assert_eq!(dead["total"], json!(0));
    let (_, west) = get(&router, "/meshkit/peers?region=west&cluster=eu-1").await;
    assert_eq!(west["total"], json!(3));
    // Bad queries are refused with a reason.
    let (status, v) = get(&router, "/meshkit/peers?state=sleepy").await;
    assert_eq!(status, 400, "{v}");
    assert!(v["error"].as_str().unwrap().contains("state"));
    let (status, v) = get(&router, "/meshkit/peers?colour=red").await;
    assert_eq!(status, 400, "{v}");

    // The node's certificate expiry is a metric (dev certificates last a year or more).
    let metrics = router
        .clone()
        .oneshot(Request::get("/metrics").body(Body::empty()).unwrap())
        .await
        .unwrap();
    let mut text = Vec::new();
    let mut stream = metrics.into_body().into_data_stream();
    while let Some(chunk) = stream.next().await {
        text.extend_from_slice(&chunk.unwrap());
    }
    let text = String::from_utf8(text).unwrap();
    let not_after: u64 = text
        .lines()
        .find_map(|l| l.strip_prefix("mesh_transport_cert_expiry_timestamp_seconds "))
        .expect("the cert expiry metric")
        .parse()
        .unwrap();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    assert!(
        not_after > now + 86_400,
        "expires at {not_after}, now {now}"
    );

    // Ready once joined; not ready while drained.
    let (status, v) = get(&router, "/readyz").await;
    assert_eq!((status, v["ready"].clone()), (200, json!(true)), "{v}");
    let drained = router
        .clone()
        .oneshot(Request::post("/control/drain").body(Body::empty()).unwrap())
        .await
        .unwrap();
    assert_eq!(drained.status(), 200);
    let (status, v) = get(&router, "/readyz").await;
    assert_eq!(status, 503, "{v}");
    assert!(v["reasons"][0].as_str().unwrap().contains("drained"));
    let s = nodes[0].handle().snapshot().await.unwrap();
    assert_eq!(s.count(MemberState::Alive), 3);
    for n in nodes {
        n.stop().await;
    }
}
