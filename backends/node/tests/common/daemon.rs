//! `meshkitd` as a child process of a test: the benchmark examples' spawner
//! (`examples/support/daemon.rs`), pointed at the binary cargo built for the tests.

use std::path::Path;

#[path = "../../examples/support/daemon.rs"]
mod spawner;

pub use spawner::Daemon;

use meshkit_node::client::Client;
use meshkit_node::lease_host::LeadershipView;

/// Starts `meshkitd --config path` and reads the addresses it prints on its first line; panics
/// (killing it) if it does not start.
pub fn start(path: &Path) -> Daemon {
    spawner::spawn(Path::new(env!("CARGO_BIN_EXE_meshkitd")), path)
        .unwrap_or_else(|error| panic!("meshkitd starts: {error}"))
}

/// The daemon's `GET /meshkit/leaders`, if it answers 200 with a view.
pub async fn leaders(client: &Client, d: &Daemon) -> Option<LeadershipView> {
    let r = client.get(&d.control, "/meshkit/leaders").await.ok()?;
    (r.status == 200)
        .then(|| serde_json::from_str(&r.body).ok())
        .flatten()
}
