//! Prometheus and Alertmanager (Debian's packages) as child processes of a test, and the plain
//! HTTP/1.0 their APIs are read with: shared by `five_daemons.rs` (a Prometheus scraping five
//! daemons) and `observability_e2e.rs` (the whole pack against a live mesh).

use std::net::SocketAddr;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

pub use meshkit_testkit::daemon::Killed;

pub use meshkit_testkit::alertmanager::free_port;

/// `text` percent-encoded for a URL's query string.
pub fn url_encode(text: &str) -> String {
    let mut out = String::with_capacity(text.len() * 3);
    for b in text.bytes() {
        if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// One HTTP/1.0 request on loopback: the status and the body, or `None` when the server does
/// not answer within ten seconds (generous: a loaded machine slows Prometheus's queries).
pub async fn http(addr: SocketAddr, method: &str, path: &str, body: &str) -> Option<(u16, String)> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let exchange = async {
        let mut s = tokio::net::TcpStream::connect(addr).await.ok()?;
        let request = format!(
            "{method} {path} HTTP/1.0\r\nHost: {addr}\r\nContent-Type: application/json\r\n\
             Content-Length: {}\r\n\r\n{body}",
            body.len()
        );
        s.write_all(request.as_bytes()).await.ok()?;
        let mut raw = Vec::new();
        s.take(8 << 20).read_to_end(&mut raw).await.ok()?;
        let text = String::from_utf8_lossy(&raw).into_owned();
        let (head, body) = text.split_once("\r\n\r\n")?;
        let status = head.split_whitespace().nth(1)?.parse().ok()?;
        Some((status, body.to_owned()))
    };
    tokio::time::timeout(Duration::from_secs(10), exchange)
        .await
        .ok()
        .flatten()
}

/// A plain HTTP/1.0 GET on loopback (Prometheus's API), bounded in time: the body.
pub async fn http_get(addr: SocketAddr, path: &str) -> Option<String> {
    http(addr, "GET", path, "").await.map(|(_, body)| body)
}

/// A Prometheus server on loopback, killed when dropped.
pub struct Prometheus {
    _process: Killed,
    /// Its web address (the HTTP API).
    pub web: SocketAddr,
}

impl Prometheus {
    /// Writes `config` to `dir/prometheus.yml` and starts Prometheus on a free port, its TSDB in
    /// `dir/tsdb`, its log in `dir/prometheus.log`. Panics, naming the package, when the binary
    /// does not run.
    pub fn start(dir: &Path, config: &str) -> Self {
        super::tool("prometheus", "prometheus");
        let config_path = dir.join("prometheus.yml");
        std::fs::write(&config_path, config).expect("write prometheus.yml");
        let web: SocketAddr = format!("127.0.0.1:{}", free_port())
            .parse()
            .expect("an address");
        let log = std::fs::File::create(dir.join("prometheus.log")).expect("create the log");
        let child = Command::new("prometheus")
            .arg(format!("--config.file={}", config_path.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.join("tsdb").display()
            ))
            .arg(format!("--web.listen-address={web}"))
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("clone a file handle"))
            .stderr(log)
            .spawn()
            .expect("prometheus starts");
        Self {
            _process: Killed(child),
            web,
        }
    }

    /// The instant query `expr`'s result vector, or `None` if Prometheus did not answer it.
    pub async fn query(&self, expr: &str) -> Option<Vec<serde_json::Value>> {
        let body = http_get(
            self.web,
            &format!("/api/v1/query?query={}", url_encode(expr)),
        )
        .await?;
        let value: serde_json::Value = serde_json::from_str(&body).ok()?;
        value["data"]["result"].as_array().cloned()
    }

    /// Its base URL.
    pub fn url(&self) -> String {
        format!("http://{}", self.web)
    }
}

/// An Alertmanager on loopback (the test kit's: clustering off, debug log in
/// `dir/alertmanager.log`), killed when dropped; its fields and `url`/`log` through `Deref`.
pub struct Alertmanager(meshkit_testkit::alertmanager::Alertmanager);

impl std::ops::Deref for Alertmanager {
    type Target = meshkit_testkit::alertmanager::Alertmanager;

    fn deref(&self) -> &Self::Target {
        &self.0
    }
}

impl Alertmanager {
    /// Writes `config` to `dir/alertmanager.yml` and starts Alertmanager on a free port.
    /// Panics, naming the package, when the binary does not run.
    pub fn start(dir: &Path, config: &str) -> Self {
        super::tool("amtool", meshkit_testkit::alertmanager::PACKAGE);
        Self(meshkit_testkit::alertmanager::Alertmanager::start(
            dir,
            config,
            &[],
        ))
    }

    /// The alerts it holds (`GET /api/v2/alerts`), or `None` if it did not answer.
    pub async fn alerts(&self) -> Option<Vec<serde_json::Value>> {
        let body = http_get(self.web, "/api/v2/alerts").await?;
        serde_json::from_str::<serde_json::Value>(&body)
            .ok()?
            .as_array()
            .cloned()
    }
}

/// `meshkit-probe --config CONFIG` with `RUST_LOG=info`, its output to `log`; killed when the
/// guard is dropped.
pub fn spawn_probe_agent(config: &Path, log: &Path) -> Killed {
    let file = std::fs::File::create(log).expect("create the agent's log");
    let child = Command::new(meshkit_testkit::bin("meshkit-probe"))
        .arg("--config")
        .arg(config)
        .env("RUST_LOG", "info")
        .stdin(Stdio::null())
        .stdout(file.try_clone().expect("clone a file handle"))
        .stderr(file)
        .spawn()
        .expect("start meshkit-probe");
    Killed(child)
}
