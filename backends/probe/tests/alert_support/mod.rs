//! What the alert tests share: a real Alertmanager as a child process, an HTTP receiver the
//! tests own (Alertmanager's webhook receiver and the notifier's plain webhook), and state
//! changes as the core's scheduler would report them.

#![allow(
    dead_code,
    reason = "each test binary uses a part of this module; the rest is dead there"
)]

use std::net::SocketAddr;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::{Path as UrlPath, State};
use axum::http::StatusCode;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use meshkit::diag::probe::ProbeState;
use meshkit_probe::record::{ProbeKey, StateChange};
use serde_json::Value;

/// Where Debian installs Alertmanager.
pub(crate) const ALERTMANAGER: &str = "/usr/bin/prometheus-alertmanager";

/// A probe of group `group` (cluster `prod-a`, namespace `default`).
pub(crate) fn key(group: &str, probe: &str) -> ProbeKey {
    ProbeKey {
        cluster: "prod-a".to_owned(),
        namespace: "default".to_owned(),
        group: group.to_owned(),
        probe: probe.to_owned(),
    }
}

/// `key` changed from `from` to `to` at `at_unix_ms`, as the core's scheduler reports it.
pub(crate) fn change(
    key: &ProbeKey,
    from: ProbeState,
    to: ProbeState,
    at_unix_ms: i64,
) -> StateChange {
    StateChange {
        key: key.clone(),
        kind: "api".to_owned(),
        target: "127.0.0.1:8001".to_owned(),
        from,
        to,
        at_unix_ms,
        last_error: (to == ProbeState::Failing).then(|| "connection refused".to_owned()),
        alert_on_latency: false,
    }
}

/// Feeds `engine` the change of `key` from `from` to `to` at `at_unix_ms` and hands every
/// transition it makes to `notifier`, as the agent's fan-out does.
pub(crate) fn feed(
    engine: &mut meshkit_probe::alert::AlertEngine,
    notifier: &meshkit_probe::alert::Notifier,
    key: &ProbeKey,
    from: ProbeState,
    to: ProbeState,
    at_unix_ms: i64,
) {
    for t in engine.on_state(&change(key, from, to, at_unix_ms)) {
        notifier.send(t);
    }
}

/// Polls `check` every 10 ms until it holds or `limit` passes: whether it held.
pub(crate) async fn eventually<F, Fut>(limit: Duration, mut check: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = Instant::now() + limit;
    loop {
        if check().await {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// A free loopback port (the test kit's).
pub(crate) fn free_port() -> u16 {
    meshkit_testkit::alertmanager::free_port()
}

/// `GET url`: status and body, `None` when nothing answered within 2 s.
pub(crate) async fn get(url: &str) -> Option<(u16, String)> {
    let client: Client<HttpConnector, Full<Bytes>> =
        Client::builder(TokioExecutor::new()).build(HttpConnector::new());
    let request = http::Request::get(url)
        .body(Full::new(Bytes::new()))
        .expect("a request");
    let exchange = async {
        let response = client.request(request).await.ok()?;
        let status = response.status().as_u16();
        let body = response.into_body().collect().await.ok()?.to_bytes();
        Some((status, String::from_utf8_lossy(&body).into_owned()))
    };
    tokio::time::timeout(Duration::from_secs(2), exchange)
        .await
        .ok()
        .flatten()
}

/// One request the receiver took.
#[derive(Clone, Debug)]
pub(crate) struct Received {
    /// When it arrived.
    pub(crate) at: Instant,
    /// The path without its leading `/`.
    pub(crate) path: String,
    /// The JSON body.
    pub(crate) body: Value,
}

/// The tests' HTTP receiver: records every `POST /<path>` with a JSON body; the first
/// `fail_first` requests are answered 503 (and recorded as failures, not as received).
#[derive(Clone, Default)]
pub(crate) struct Receiver {
    received: Arc<Mutex<Vec<Received>>>,
    refused: Arc<Mutex<u32>>,
    fail_first: Arc<Mutex<u32>>,
}

impl Receiver {
    /// Starts it on a free loopback port: its address.
    pub(crate) async fn start(&self) -> SocketAddr {
        let app = axum::Router::new()
            .route("/{path}", axum::routing::post(Self::take))
            .with_state(self.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind the receiver");
        let addr = listener.local_addr().expect("its address");
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        addr
    }

    /// Answers the next `n` requests with 503.
    pub(crate) fn fail_next(&self, n: u32) {
        *self.fail_first.lock().expect("not poisoned") = n;
    }

    async fn take(
        State(receiver): State<Self>,
        UrlPath(path): UrlPath<String>,
        body: Bytes,
    ) -> StatusCode {
        {
            let mut fail = receiver.fail_first.lock().expect("not poisoned");
            if *fail > 0 {
                *fail -= 1;
                *receiver.refused.lock().expect("not poisoned") += 1;
                return StatusCode::SERVICE_UNAVAILABLE;
            }
        }
        let Ok(body) = serde_json::from_slice::<Value>(&body) else {
            return StatusCode::BAD_REQUEST;
        };
        receiver
            .received
            .lock()
            .expect("not poisoned")
            .push(Received {
                at: Instant::now(),
                path,
                body,
            });
        StatusCode::OK
    }

    /// What `POST /<path>` received so far.
    pub(crate) fn received(&self, path: &str) -> Vec<Received> {
        self.received
            .lock()
            .expect("not poisoned")
            .iter()
            .filter(|r| r.path == path)
            .cloned()
            .collect()
    }

    /// How many requests were answered 503.
    pub(crate) fn refused(&self) -> u32 {
        *self.refused.lock().expect("not poisoned")
    }
}

/// Alertmanager's webhook notifications at `receiver`'s `path` with `status` (`firing`,
/// `resolved`) that carry an alert of probe `probe`.
pub(crate) fn notifications(
    receiver: &Receiver,
    path: &str,
    probe: &str,
    status: &str,
) -> Vec<Received> {
    receiver
        .received(path)
        .into_iter()
        .filter(|r| {
            r.body["alerts"].as_array().is_some_and(|alerts| {
                alerts
                    .iter()
                    .any(|a| a["labels"]["probe"] == probe && a["status"] == status)
            })
        })
        .collect()
}

/// A real Alertmanager on loopback: clustering off, its data and log in a directory of the
/// test, its one receiver a webhook at `hooks/am` that gets resolved notifications too, every
/// alert in a group of its own (`group_by: ['...']`), group wait and interval 1 s.
pub(crate) struct Alertmanager {
    process: meshkit_testkit::alertmanager::Alertmanager,
    /// Its base URL.
    pub(crate) url: String,
}

impl Alertmanager {
    /// Starts it in `dir`, its webhook receiver `hooks`, and waits (at most 20 s) until it is
    /// ready. Panics, naming the Debian package, when the binary is missing: these tests are
    /// ignored by default (the runner reports them skipped, never passed) and fail when asked
    /// for without the tool.
    pub(crate) async fn start(dir: &Path, hooks: SocketAddr) -> Self {
        Self::start_with(dir, hooks, None).await
    }

    /// [`Self::start`], serving its API over TLS with `cert_pem`/`key_pem` when given (its
    /// `--web.config.file`); `url` is then `https://localhost:<port>`.
    pub(crate) async fn start_with(
        dir: &Path,
        hooks: SocketAddr,
        tls: Option<(&str, &str)>,
    ) -> Self {
        assert!(
            Path::new(ALERTMANAGER).is_file(),
            "{ALERTMANAGER} is missing: `apt-get install prometheus-alertmanager` provides it"
        );
        let config = format!(
            "route:\n  receiver: hooks\n  group_by: ['...']\n  group_wait: 1s\n  \
             group_interval: 1s\n  repeat_interval: 1h\nreceivers:\n  - name: hooks\n    \
             webhook_configs:\n      - url: http://{hooks}/am\n        send_resolved: true\n"
        );
        let mut args: Vec<std::ffi::OsString> = Vec::new();
        if let Some((cert, key)) = tls {
            std::fs::write(dir.join("am.pem"), cert).expect("write the certificate");
            std::fs::write(dir.join("am.key"), key).expect("write the key");
            let web_config = dir.join("web.yml");
            std::fs::write(
                &web_config,
                "tls_server_config:\n  cert_file: am.pem\n  key_file: am.key\n",
            )
            .expect("write web.yml");
            args.push(format!("--web.config.file={}", web_config.display()).into());
        }
        let process = meshkit_testkit::alertmanager::Alertmanager::start(dir, &config, &args);
        let (web, port) = (process.web, process.web.port());
        let am = Self {
            url: match tls {
                None => process.url(),
                Some(_) => format!("https://localhost:{port}"),
            },
            process,
        };
        // Over TLS, a plain request is answered 400 ("an HTTP request to an HTTPS server"):
        // it listens.
        let ready = eventually(Duration::from_secs(20), || async {
            match get(&format!("http://{web}/-/ready")).await {
                Some((200, _)) => true,
                Some(_) => tls.is_some(),
                None => false,
            }
        })
        .await;
        assert!(ready, "Alertmanager not ready within 20 s:\n{}", am.log());
        am
    }

    /// What it logged so far.
    pub(crate) fn log(&self) -> String {
        self.process.log()
    }

    /// The alerts it holds (`GET /api/v2/alerts`: active ones, resolved ones are left out).
    pub(crate) async fn alerts(&self) -> Vec<Value> {
        let Some((200, body)) = get(&format!("{}/api/v2/alerts", self.url)).await else {
            return Vec::new();
        };
        serde_json::from_str::<Value>(&body)
            .ok()
            .and_then(|v| v.as_array().cloned())
            .unwrap_or_default()
    }

    /// The alerts it holds of probe `probe`.
    pub(crate) async fn alerts_of(&self, probe: &str) -> Vec<Value> {
        self.alerts()
            .await
            .into_iter()
            .filter(|a| a["labels"]["probe"] == probe)
            .collect()
    }
}
