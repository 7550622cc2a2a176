//! What the process-level tests share: temporary directories, node configs on loopback with
//! fast membership timers, development certificates and tokens, in-process clusters, `meshctl`
//! runs and bounded polling.

use std::future::Future;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use meshkit_node::client::{Client, ClientConfig, Protocols};
use meshkit_node::config::NodeConfig;
use meshkit_node::node::{self, RunningNode};

/// A directory removed when dropped.
#[derive(Debug)]
pub struct TempDir(PathBuf);

impl TempDir {
    /// `$TMPDIR/meshkit-node-<name>-<pid>-<n>`, empty; panics if it cannot be made (tests).
    pub fn new(name: &str) -> Self {
        Self::try_new(name).expect("create a temporary directory")
    }

    /// [`Self::new`], with the error returned (the benchmark programs).
    pub fn try_new(name: &str) -> std::io::Result<Self> {
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let path = std::env::temp_dir().join(format!(
            "meshkit-node-{name}-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&path);
        std::fs::create_dir_all(&path)?;
        Ok(Self(path))
    }

    /// The directory.
    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Membership timers faster than the LAN profile, so detection takes a second or two on
/// loopback; the probe timeout stays long enough for a loaded 2-core CI machine.
pub const FAST_MEMBERSHIP: &str = "[membership]\nprobe_interval = \"400ms\"\n\
    probe_timeout = \"200ms\"\ngossip_interval = \"50ms\"\n";

/// The token signing key pair in `dir`, made on first use: nodes verify with the public half
/// (`[access] token_key`), tests sign with the private half ([`token`]).
pub fn signing_key(dir: &Path) -> meshkit_node::tokens::SigningKeyFiles {
    let files = meshkit_node::tokens::SigningKeyFiles {
        private: dir.join("token-signing.key"),
        public: dir.join("token-signing.pub"),
    };
    if !files.public.exists() {
        return meshkit_node::tokens::write_signing_key(dir).expect("write a signing key");
    }
    files
}

/// A bearer token for `subject` with `scope`, valid for ten minutes, signed with the key of
/// [`signing_key`].
pub fn token(dir: &Path, subject: &str, scope: meshkit_node::permission::Permission) -> String {
    let key = meshkit_node::tokens::TokenSigningKey::from_pem_file(&signing_key(dir).private)
        .expect("read the signing key");
    key.issue(
        subject,
        &[scope].into_iter().collect(),
        std::time::SystemTime::now(),
        Duration::from_secs(600),
    )
    .expect("issue a token")
}

/// Writes an observer's bearer token ([`token`], subject `test-observer`) to
/// `dir/observer.token`, the file `meshctl --token-file` reads, and returns its path.
pub fn observer_token_file(dir: &Path) -> PathBuf {
    let path = dir.join("observer.token");
    let token = token(
        dir,
        "test-observer",
        meshkit_node::permission::Permission::Observe,
    );
    std::fs::write(&path, token).expect("write the observer token");
    path
}

/// Writes `node-<id>.toml` into `dir`: QUIC and control on 127.0.0.1 port 0, fast timers, and
/// tokens signed with [`signing_key`] accepted by the control API.
pub fn write_config(
    dir: &Path,
    id: u64,
    seeds: &[(u64, SocketAddr)],
    cert: &Path,
    key: &Path,
    ca: &Path,
) -> PathBuf {
    write_config_with(dir, id, seeds, cert, key, ca, "")
}

/// [`write_config`] with `extra` TOML tables appended (e.g. `[leadership]`).
pub fn write_config_with(
    dir: &Path,
    id: u64,
    seeds: &[(u64, SocketAddr)],
    cert: &Path,
    key: &Path,
    ca: &Path,
    extra: &str,
) -> PathBuf {
    let seeds: Vec<String> = seeds
        .iter()
        .map(|(id, addr)| format!("\"{id}@{addr}\""))
        .collect();
    let token_key = signing_key(dir).public;
    let text = format!(
        "id = {id}\nlisten = \"127.0.0.1:0\"\ncontrol = \"127.0.0.1:0\"\nseeds = [{}]\n\
         profile = \"lan\"\n\n[tls]\ncert = {:?}\nkey = {:?}\nca = {:?}\n\n{FAST_MEMBERSHIP}\n\
         [access]\ntoken_key = {:?}\n\n{extra}",
        seeds.join(", "),
        cert.display().to_string(),
        key.display().to_string(),
        ca.display().to_string(),
        token_key.display().to_string(),
    );
    let path = dir.join(format!("node-{id}.toml"));
    std::fs::write(&path, text).expect("write a node config");
    path
}

/// Makes certificates for `n` nodes in `dir` and starts them; nodes 2..=n join through node 1.
pub async fn start_cluster(dir: &Path, n: u64) -> Vec<RunningNode> {
    start_cluster_with(dir, n, "").await
}

/// [`start_cluster`] with `extra` TOML appended to every node's configuration.
pub async fn start_cluster_with(dir: &Path, n: u64, extra: &str) -> Vec<RunningNode> {
    start_cluster_each(dir, n, |_| extra.to_owned()).await
}

/// [`start_cluster`] with `extra(id)` appended to node `id`'s configuration (what differs per
/// node: a data directory).
pub async fn start_cluster_each(
    dir: &Path,
    n: u64,
    extra: impl Fn(u64) -> String,
) -> Vec<RunningNode> {
    let (ca, files) = meshkit_node::certs::write_dev_certs(dir, n).expect("make certificates");
    let mut nodes: Vec<RunningNode> = Vec::new();
    for f in &files {
        let seeds: Vec<(u64, SocketAddr)> = nodes
            .first()
            .map(|first| vec![(1, first.gossip_addr())])
            .unwrap_or_default();
        let extra = extra(f.id.get());
        let path = write_config_with(dir, f.id.get(), &seeds, &f.cert, &f.key, &ca, &extra);
        let config = NodeConfig::load(&path).expect("a valid config");
        nodes.push(node::start(&config).await.expect("the node starts"));
    }
    nodes
}

/// Polls `check` every 50 ms until it holds or `limit` passes; bounded in time and in count.
pub async fn eventually<F, Fut>(limit: Duration, mut check: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let step = Duration::from_millis(50);
    let deadline = tokio::time::Instant::now() + limit;
    let max_polls = limit.as_millis() / step.as_millis() + 1;
    for _ in 0..max_polls {
        if check().await {
            return true;
        }
        if tokio::time::Instant::now() >= deadline {
            break;
        }
        tokio::time::sleep(step).await;
    }
    false
}

/// Whom `meshctl` speaks as in a test.
#[derive(Clone, Copy, Debug)]
pub enum MeshctlAs<'a> {
    /// A node's certificate in the test directory (`node-1` for `node-1.pem`, `node-1.key`).
    Node(&'a str),
    /// A bearer token read from this file.
    TokenFile(&'a Path),
}

/// `meshctl <args>` against `addr`, trusting the test directory's CA, keeping its client
/// state in the test directory and reading no user config file. The connection settings go
/// through meshctl's environment variables, as an operator's shell would, except the token
/// file, which has no variable: its `--token-file` follows `args` (the subcommand's flag, so
/// `args` starts with the subcommand). More of the subcommand's flags may be added after.
pub fn meshctl<I, S>(dir: &Path, addr: &str, who: MeshctlAs<'_>, args: I) -> std::process::Command
where
    I: IntoIterator<Item = S>,
    S: AsRef<std::ffi::OsStr>,
{
    let mut command = std::process::Command::new(crate::bin("meshctl"));
    command
        .args(args)
        .env("MESHCTL_ADDR", addr)
        .env("MESHCTL_CA", dir.join("ca.pem"))
        .env("MESHCTL_STATE", dir.join("meshctl-state.json"))
        .env("MESHCTL_CONFIG", dir.join("no-meshctl.toml"))
        .env_remove("MESHCTL_CONTEXT")
        .env_remove("MESHCTL_TOKEN");
    match who {
        MeshctlAs::Node(name) => command
            .env("MESHCTL_CERT", dir.join(format!("{name}.pem")))
            .env("MESHCTL_KEY", dir.join(format!("{name}.key"))),
        MeshctlAs::TokenFile(file) => command.arg("--token-file").arg(file),
    };
    command
}

/// Runs `command` with its stdout and stderr to one file, killing it past `limit`: whether it
/// exited successfully and what it printed.
pub fn run_bounded(mut command: std::process::Command, limit: Duration) -> (bool, String) {
    let scratch = TempDir::new("tool-out");
    let output = scratch.path().join("out");
    let out = std::fs::File::create(&output).expect("create the output file");
    let spawned = command
        .stdout(out.try_clone().expect("clone a file handle"))
        .stderr(out)
        .spawn();
    let mut child = spawned.unwrap_or_else(|e| panic!("start {command:?}: {e}"));
    let deadline = std::time::Instant::now() + limit;
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait for the child") {
            break status;
        }
        if std::time::Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("{command:?} ran longer than {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let printed = std::fs::read_to_string(&output).unwrap_or_default();
    (status.success(), printed)
}

/// The ids of the nodes that hold `global-control` and are not handing it over.
pub async fn global_control_holders(nodes: &[RunningNode]) -> Vec<u64> {
    let mut out = Vec::new();
    for n in nodes {
        if let Ok(Some(view)) = n.handle().leadership().await
            && view
                .held
                .iter()
                .any(|h| h.scope == "global-control" && !h.transferring && h.expires_in_ms > 0)
        {
            out.push(n.id().get());
        }
    }
    out
}

/// The one holder of `global-control` once there is exactly one, within `limit`.
pub async fn single_global_control_holder(nodes: &[RunningNode], limit: Duration) -> u64 {
    let ok = eventually(limit, || async {
        global_control_holders(nodes).await.len() == 1
    })
    .await;
    let h = global_control_holders(nodes).await;
    assert!(
        ok && h.len() == 1,
        "no single holder within {limit:?}: {h:?}"
    );
    h[0]
}

/// A control API client trusting the CA [`start_cluster`] wrote into `dir`, presenting node-1's
/// certificate, with `protocols` and short timeouts for loopback.
pub fn client(dir: &Path, protocols: Protocols) -> Client {
    let config = ClientConfig::new(&dir.join("ca.pem"))
        .and_then(|c| c.with_identity(&dir.join("node-1.pem"), &dir.join("node-1.key")))
        .expect("load the client's TLS files")
        .with_protocols(protocols)
        .with_request_timeout(Duration::from_secs(5));
    Client::new(&config).expect("build a client")
}

/// The control API of `node` (started by [`start_cluster_with`] in `dir`) with its configured
/// access control, every request carrying an operator's bearer token.
pub fn control(dir: &Path, node: &RunningNode) -> axum::Router {
    use axum::body::Body;
    use axum::http::Request;
    let path = dir.join(format!("node-{}.toml", node.id().get()));
    let config = NodeConfig::load(&path).expect("the node's config");
    let access = meshkit_node::control::auth::AccessControl::from_config(config.access())
        .expect("access control");
    let bearer = format!(
        "Bearer {}",
        token(
            dir,
            "test-operator",
            meshkit_node::permission::Permission::Operate
        )
    );
    meshkit_node::control::router(node.handle().clone(), access).layer(
        axum::middleware::map_request(move |mut request: Request<Body>| {
            let bearer = bearer.clone();
            async move {
                request
                    .headers_mut()
                    .insert("authorization", bearer.parse().expect("a header value"));
                request
            }
        }),
    )
}

/// `tool` if it runs (`--version`); a test that needs it fails otherwise, naming the Debian
/// `package` that provides it (the tool tests are ignored by default, so they run only when asked).
pub fn tool(tool: &'static str, package: &str) -> &'static str {
    let outcome = std::process::Command::new(tool)
        .arg("--version")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status();
    assert!(
        outcome.as_ref().is_ok_and(|s| s.success()),
        "{tool} does not run ({outcome:?}): `apt-get install {package}` provides it"
    );
    tool
}
