//! Debian's Alertmanager (`prometheus-alertmanager`) as a child process of a test, on
//! loopback with clustering off: the one way the process-level tests (`tests/tests`) and the
//! probe agent's tests (`backends/probe/tests`) start it. Each keeps its own configuration
//! and its own reads of the API.

use std::ffi::OsString;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use crate::daemon::Killed;

/// The Debian package that provides the binary.
pub const PACKAGE: &str = "prometheus-alertmanager";

/// A free TCP port on loopback (bound, then released for a child to take).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port()
}

/// An Alertmanager on loopback, killed and reaped when dropped.
#[derive(Debug)]
pub struct Alertmanager {
    _process: Killed,
    /// Its web address (the API, `/-/ready`, `/-/reload`).
    pub web: SocketAddr,
    /// Its configuration file (rewrite it, then POST `/-/reload`).
    pub config: PathBuf,
    log: PathBuf,
}

impl Alertmanager {
    /// Writes `config` to `dir/alertmanager.yml` and starts Alertmanager on a free port of
    /// 127.0.0.1 with `args` added (a `--web.config.file`, say), its data in `dir/am-data`,
    /// its log (debug level: it says what it sends and what it holds back) in
    /// `dir/alertmanager.log`. Does not wait for it to be ready. Panics, naming the Debian
    /// package, when the binary does not run: the tests that use it are ignored by default
    /// (reported skipped, never passed) and must fail when asked for without the tool.
    pub fn start(dir: &Path, config: &str, args: &[OsString]) -> Self {
        let config_path = dir.join("alertmanager.yml");
        std::fs::write(&config_path, config).expect("write alertmanager.yml");
        let web = SocketAddr::from(([127, 0, 0, 1], free_port()));
        let log = dir.join("alertmanager.log");
        let file = std::fs::File::create(&log).expect("create the log");
        let child = Command::new(PACKAGE)
            .arg(format!("--config.file={}", config_path.display()))
            .arg(format!("--storage.path={}", dir.join("am-data").display()))
            .arg(format!("--web.listen-address={web}"))
            .arg("--cluster.listen-address=")
            .arg("--log.level=debug")
            .args(args)
            .stdin(Stdio::null())
            .stdout(file.try_clone().expect("clone a file handle"))
            .stderr(file)
            .spawn()
            .unwrap_or_else(|e| panic!("start {PACKAGE} (apt-get install {PACKAGE}): {e}"));
        Self {
            _process: Killed(child),
            web,
            config: config_path,
            log,
        }
    }

    /// Its base URL over plain HTTP.
    pub fn url(&self) -> String {
        format!("http://{}", self.web)
    }

    /// What it logged so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}
