//! # Test support for MeshKit's real nodes (not published)
//!
//! Shared by the process-level tests (`tests/tests`), the CLI's tests and the benchmark
//! programs (`benches/examples`), so that each starts, polls and tears down nodes one way.
//!
//! * [`alertmanager`]: Debian's Alertmanager as a child process on loopback.
//! * [`daemon`]: `meshkitd` as a child process (the spawner), killed and reaped when dropped.
//! * [`cluster`]: a cluster of `meshkitd` processes on loopback with development certificates,
//!   reads of their control API and of `/proc`, order statistics (the benchmark programs).
//! * [`fixtures`]: temporary directories, node configs, tokens, in-process clusters, `meshctl`
//!   runs, bounded polling ([`fixtures::eventually`]).
//! * [`raw_client`]: a bare HTTP/2 client over TLS, for requests the real client never sends.
//!
//! [`bin`] finds the binaries (`meshkitd`, `meshctl`) the workspace build made.

pub mod alertmanager;
pub mod cluster;
pub mod daemon;
pub mod fixtures;
pub mod raw_client;

use std::path::{Path, PathBuf};

/// Why [`find_bin`] found no binary.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum FindBinError {
    /// The running program's own path is unknown.
    #[error("cannot locate the running program: {0}")]
    CurrentExe(#[from] std::io::Error),
    /// No such file where it should be.
    #[error(
        "no {name} at {path} (build it: cargo build -p meshkit-cli --bins, with --release for \
         the benchmark programs; `cargo nextest run --workspace` builds it for the tests)"
    )]
    Missing {
        /// The binary.
        name: String,
        /// Where it was looked for.
        path: PathBuf,
    },
}

/// Where the binary `name` of the workspace build is: `$MESHKIT_BIN_DIR/name` when that is
/// set, otherwise `target/<profile>/name`, found from the running program (a test at
/// `target/<profile>/deps/..`, an example at `target/<profile>/examples/..`).
///
/// The binaries live in `meshkit-cli`, another package, so cargo builds them for these tests
/// only in a build that includes that package (`--workspace`, or `-p meshkit-cli`).
pub fn find_bin(name: &str) -> Result<PathBuf, FindBinError> {
    let dir = match std::env::var_os("MESHKIT_BIN_DIR") {
        Some(dir) => PathBuf::from(dir),
        None => {
            let exe = std::env::current_exe()?;
            exe.parent()
                .and_then(Path::parent)
                .map(Path::to_path_buf)
                .ok_or_else(|| std::io::Error::other("the program has no grandparent directory"))?
        }
    };
    let path = dir.join(name);
    if path.is_file() {
        Ok(path)
    } else {
        Err(FindBinError::Missing {
            name: name.to_owned(),
            path,
        })
    }
}

/// [`find_bin`] for tests: panics with the reason when the binary is missing.
pub fn bin(name: &str) -> PathBuf {
    find_bin(name).unwrap_or_else(|error| panic!("{error}"))
}
