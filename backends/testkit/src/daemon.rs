//! `meshkitd` as a child process: started with a config file, its addresses read from the first
//! line it prints, killed (SIGKILL) and reaped when dropped, so a failing caller leaves no
//! process behind. Shared by the benchmark programs (`benches/examples`) and the process-level
//! tests (`tests/tests`): [`spawn`] takes the binary, [`start`] finds it with [`crate::bin`].

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

/// How long a daemon gets to print its addresses.
pub const START_LIMIT: Duration = Duration::from_secs(10);

/// Why a daemon did not start; none is left running.
#[derive(Debug, thiserror::Error)]
pub enum SpawnError {
    /// The binary could not be run.
    #[error("cannot run {bin}: {source}")]
    Run {
        /// The binary.
        bin: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// It printed no first line in time.
    #[error("meshkitd --config {config} printed no address line within {START_LIMIT:?}")]
    Silent {
        /// The config it was given.
        config: PathBuf,
    },
    /// It exited without printing its addresses (its error went to stderr, which is not kept).
    #[error(
        "meshkitd --config {config} exited ({status}) before printing its addresses; \
         `meshkitd check-config {config}` says why"
    )]
    Exited {
        /// The config it was given.
        config: PathBuf,
        /// How it exited.
        status: std::process::ExitStatus,
    },
    /// Its first line is not `node-<id> gossip <addr> control https://<addr>`.
    #[error("unexpected first line from meshkitd: {0:?}")]
    BadLine(String),
}

/// A running `meshkitd`, killed when dropped.
#[derive(Debug)]
pub struct Daemon {
    /// The process.
    pub child: Child,
    /// Where its QUIC transport listens.
    pub gossip: SocketAddr,
    /// Its control API, `host:port`.
    pub control: String,
}

impl Daemon {
    /// Sends SIGKILL and reaps the process.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Writes the ports this daemon bound into its `config` (written with `127.0.0.1:0`, as
    /// [`write_config_with`](crate::fixtures::write_config_with) does), so a restart from it
    /// comes back on them: the same address for its peers, the same `instance` for Prometheus.
    pub fn pin_ports(&self, config: &Path) {
        let text = std::fs::read_to_string(config).expect("read the config");
        let text = text
            .replacen(
                "listen = \"127.0.0.1:0\"",
                &format!("listen = \"{}\"", self.gossip),
                1,
            )
            .replacen(
                "control = \"127.0.0.1:0\"",
                &format!("control = \"{}\"", self.control),
                1,
            );
        std::fs::write(config, text).expect("pin the ports");
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Starts `bin --config config` (logs at `warn`, to nowhere) and reads the addresses it prints
/// on its first line, within [`START_LIMIT`].
pub fn spawn(bin: &Path, config: &Path) -> Result<Daemon, SpawnError> {
    let mut child = Command::new(bin)
        .arg("--config")
        .arg(config)
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|source| SpawnError::Run {
            bin: bin.to_owned(),
            source,
        })?;
    let line = child.stdout.take().and_then(|stdout| {
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let mut line = String::new();
            let _ = BufReader::new(stdout).read_line(&mut line);
            let _ = tx.send(line);
        });
        rx.recv_timeout(START_LIMIT).ok()
    });
    let fail = |mut child: Child, error| {
        let _ = child.kill();
        let _ = child.wait();
        Err(error)
    };
    let Some(line) = line.filter(|l| !l.is_empty()) else {
        // End of output: it is exiting (give it a moment to be reaped), or it is stuck.
        for _ in 0..20 {
            if let Ok(Some(status)) = child.try_wait() {
                return Err(SpawnError::Exited {
                    config: config.to_owned(),
                    status,
                });
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        return fail(
            child,
            SpawnError::Silent {
                config: config.to_owned(),
            },
        );
    };
    // "node-<id> gossip <addr> control https://<addr>"
    let words: Vec<&str> = line.split_whitespace().collect();
    let gossip = words.get(2).and_then(|w| w.parse().ok());
    let control = words.get(4).map(|w| w.trim_start_matches("https://"));
    match (words.len(), gossip, control) {
        (5, Some(gossip), Some(control)) => Ok(Daemon {
            child,
            gossip,
            control: control.to_owned(),
        }),
        _ => fail(child, SpawnError::BadLine(line)),
    }
}

/// Starts `meshkitd --config path` ([`crate::bin`]) and reads the addresses it prints on its
/// first line; panics (killing it) if it does not start. For tests.
pub fn start(path: &Path) -> Daemon {
    spawn(&crate::bin("meshkitd"), path).unwrap_or_else(|error| panic!("meshkitd starts: {error}"))
}

/// The daemon's `GET /meshkit/leaders`, if it answers 200 with a view.
pub async fn leaders(
    client: &meshkit_node::client::Client,
    d: &Daemon,
) -> Option<meshkit_node::api::json::LeadershipView> {
    let r = client.get(&d.control, "/meshkit/leaders").await.ok()?;
    (r.status == 200)
        .then(|| serde_json::from_str(&r.body).ok())
        .flatten()
}

/// Any child process, killed (SIGKILL) and reaped when dropped: Alertmanager, Prometheus, a
/// probe agent started by a test or a benchmark program.
#[derive(Debug)]
pub struct Killed(pub Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}
