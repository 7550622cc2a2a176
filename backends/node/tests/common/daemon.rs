//! `meshkitd` as a child process of a test.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

/// How long a daemon gets to print its addresses.
pub const START_LIMIT: Duration = Duration::from_secs(10);

/// A running `meshkitd`, killed when dropped (so a failing test leaves no process behind).
pub struct Daemon {
    pub child: Child,
    pub gossip: SocketAddr,
    pub control: String,
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts `meshkitd --config path` and reads the addresses it prints on its first line.
pub fn start(path: &Path) -> Daemon {
    let mut child = Command::new(env!("CARGO_BIN_EXE_meshkitd"))
        .arg("--config")
        .arg(path)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("meshkitd starts");
    let stdout = child.stdout.take().expect("piped stdout");
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let mut line = String::new();
        let _ = BufReader::new(stdout).read_line(&mut line);
        let _ = tx.send(line);
    });
    let line = rx
        .recv_timeout(START_LIMIT)
        .expect("meshkitd prints its addresses");
    // "node-<id> gossip <addr> control https://<addr>"
    let words: Vec<&str> = line.split_whitespace().collect();
    assert_eq!(words.len(), 5, "unexpected first line: {line:?}");
    Daemon {
        child,
        gossip: words[2].parse().expect("a gossip address"),
        control: words[4].trim_start_matches("https://").to_owned(),
    }
}
