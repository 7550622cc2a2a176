//! What the agent's tests share: a probes.toml against in-process nodes, plain HTTP/1.1 to the
//! agent's own listener, and reading its metrics.

#![allow(dead_code, unreachable_pub, reason = "each test file uses a part")]

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

/// Writes `probes.toml` into `dir` (which holds the testkit's `ca.pem`), agent `name` listening
/// on an ephemeral port, credentials from `token_file`, then `rest` (groups and options).
pub fn write_probes_toml(dir: &Path, token_file: &Path, extra_agent: &str, rest: &str) -> PathBuf {
    let text = format!(
        "[agent]\nname = \"probe-test\"\nlisten = \"127.0.0.1:0\"\n{extra_agent}\n\n\
         [credentials]\nca = \"ca.pem\"\ntoken_file = {:?}\n\n{rest}",
        token_file.display().to_string()
    );
    let path = dir.join("probes.toml");
    std::fs::write(&path, text).expect("write probes.toml");
    path
}

/// `method path` to `addr` over plain HTTP/1.1: status and body. Bounded by 5 s.
pub async fn http(addr: SocketAddr, method: &str, path: &str) -> (u16, String) {
    let exchange = async {
        let mut stream = tokio::net::TcpStream::connect(addr)
            .await
            .expect("connect to the agent");
        let request = format!(
            "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
        );
        stream.write_all(request.as_bytes()).await.expect("send");
        let mut answer = Vec::new();
        stream.read_to_end(&mut answer).await.expect("read");
        let text = String::from_utf8_lossy(&answer).into_owned();
        let status: u16 = text
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .expect("a status line");
        let body = text
            .split_once("\r\n\r\n")
            .map(|(_, b)| b.to_owned())
            .unwrap_or_default();
        (status, dechunk(&body))
    };
    tokio::time::timeout(Duration::from_secs(5), exchange)
        .await
        .expect("the agent answers within 5 s")
}

/// The body of a chunked answer, or `body` as it is.
fn dechunk(body: &str) -> String {
    let mut out = String::new();
    let mut rest = body;
    loop {
        let Some((size, after)) = rest.split_once("\r\n") else {
            return body.to_owned();
        };
        let Ok(size) = usize::from_str_radix(size.trim(), 16) else {
            return body.to_owned();
        };
        if size == 0 {
            return out;
        }
        if after.len() < size {
            return body.to_owned();
        }
        out.push_str(&after[..size]);
        rest = after[size..].trim_start_matches("\r\n");
    }
}

/// The value of the series of `family` whose labels include every one of `labels`
/// (`probe="..."`), from the exposition `text`.
pub fn series(text: &str, family: &str, labels: &[&str]) -> Option<f64> {
    text.lines().find_map(|line| {
        let rest = line.strip_prefix(family)?.strip_prefix('{')?;
        let (set, value) = rest.split_once("} ")?;
        let all = labels.iter().all(|l| set.split(',').any(|s| s == *l));
        all.then(|| value.trim().parse().ok()).flatten()
    })
}

/// Polls the agent's `/metrics` every 100 ms until `check` holds of it, at most `limit`;
/// the last text either way.
pub async fn metrics_until(
    addr: SocketAddr,
    limit: Duration,
    check: impl Fn(&str) -> bool,
) -> (bool, String) {
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        let (status, text) = http(addr, "GET", "/metrics").await;
        assert_eq!(status, 200, "{text}");
        if check(&text) {
            return (true, text);
        }
        if tokio::time::Instant::now() >= deadline {
            return (false, text);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// `probe="<name>"`.
pub fn probe(name: &str) -> String {
    format!("probe=\"{name}\"")
}

/// A TCP relay in front of a node's control port (TLS passes through untouched; no UDP, so
/// HTTP/3 to the relay's address fails), whose node-to-client direction can be paused: a
/// stalled stream whose connection stays open.
pub struct Relay {
    /// The relay's address.
    pub addr: SocketAddr,
    paused: std::sync::Arc<std::sync::atomic::AtomicBool>,
    task: tokio::task::JoinHandle<()>,
}

impl Relay {
    /// A relay to `upstream`.
    pub async fn start(upstream: SocketAddr) -> Self {
        use std::sync::atomic::{AtomicBool, Ordering};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind the relay");
        let addr = listener.local_addr().expect("the relay's address");
        let paused = std::sync::Arc::new(AtomicBool::new(false));
        let flag = paused.clone();
        let task = tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let flag = flag.clone();
                tokio::spawn(async move {
                    let Ok(server) = tokio::net::TcpStream::connect(upstream).await else {
                        return;
                    };
                    let (mut cr, mut cw) = client.into_split();
                    let (mut sr, mut sw) = server.into_split();
                    let up = tokio::spawn(async move {
                        let _ = tokio::io::copy(&mut cr, &mut sw).await;
                    });
                    let mut buf = vec![0_u8; 16 * 1024];
                    loop {
                        while flag.load(Ordering::SeqCst) {
                            tokio::time::sleep(Duration::from_millis(20)).await;
                        }
                        match sr.read(&mut buf).await {
                            Ok(0) | Err(_) => break,
                            Ok(n) => {
                                while flag.load(Ordering::SeqCst) {
                                    tokio::time::sleep(Duration::from_millis(20)).await;
                                }
                                if cw.write_all(&buf[..n]).await.is_err() {
                                    break;
                                }
                            }
                        }
                    }
                    up.abort();
                });
            }
        });
        Self { addr, paused, task }
    }

    /// Holds (true) or lets through (false) what the node sends.
    pub fn pause(&self, on: bool) {
        self.paused.store(on, std::sync::atomic::Ordering::SeqCst);
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        self.task.abort();
    }
}
