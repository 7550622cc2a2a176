//! The certificate rotation drill on a compose stack: a node's new certificate, issued from the
//! run's CA (`certs/ca.key`, which `compose/up` keeps: `meshctl certs init --keep-ca-key`) and
//! written over the node's `[tls]` files in the run directory, which every container mounts; the
//! node's certificate reload (every 2 s, acting on a change once it has stayed the same for one
//! more poll) judges the files and hands them to its listeners for new handshakes. And what a
//! node serves, read from a TLS handshake with its control listener, to check that the new
//! certificate is the one in use.
//!
//! The CA stays the same, so nothing a node, the probe agent, Prometheus or the runner trusts
//! changes: a handshake refused during the drill is a defect of the rotation, not of trust.

use std::io::Write as _;
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use meshkit::NodeId;
use meshkit_net::certs::{DEV_CA_NAME, DevCa};
use meshkit_net::tls::{cert_serial, crypto_provider, node_dns_name, unix_seconds};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use serde::Serialize;

/// How long a rotated certificate is valid: not the rcgen default (4096) that `meshctl certs
/// init` gives, so the expiry metric and the probe agent's `probe_ssl_earliest_cert_expiry`
/// show the new certificate too.
const VALIDITY: Duration = Duration::from_secs(90 * 86_400);
/// The new certificate starts an hour back: clocks of the containers and the host agree, but a
/// certificate valid from "now" is refused by a verifier a second behind.
const BACKDATE: Duration = Duration::from_secs(3_600);
/// A bound on each step of the handshake that reads what a node serves.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(3);

/// One node's rotation.
#[derive(Clone, Debug, Serialize)]
pub struct Rotated {
    /// The node.
    pub node: u64,
    /// The new certificate's serial number, hex.
    pub serial: String,
    /// Its expiry, Unix seconds.
    pub not_after: i64,
}

/// Issues node `node` a new certificate from the run's CA and writes it and its key over the
/// node's files (`certs/node-N.pem` and `.key`), each written aside and renamed so the node
/// never reads half a file.
///
/// # Errors
///
/// A message naming the file or the step that failed.
pub fn rotate(run_dir: &Path, node: u64) -> Result<Rotated, String> {
    let certs = run_dir.join("certs");
    let key_path = certs.join("ca.key");
    let ca_key = std::fs::read_to_string(&key_path).map_err(|e| {
        format!(
            "{}: {e} (a stack from before the rotation drill: `compose/down`, then \
             `compose/up` keeps the CA key)",
            key_path.display()
        )
    })?;
    let ca = DevCa::from_key_pem(DEV_CA_NAME, &ca_key).map_err(|e| e.to_string())?;
    let now = SystemTime::now();
    let not_after = now + VALIDITY;
    let issued = ca
        .issue_node_valid(NodeId::new(node), now - BACKDATE, not_after)
        .map_err(|e| e.to_string())?;
    let serial = CertificateDer::from_pem_slice(issued.cert_pem.as_bytes())
        .ok()
        .and_then(|der| cert_serial(&der))
        .map(|s| hex(&s))
        .ok_or("the issued certificate does not parse")?;
    // Two renames a moment apart: the reloader acts on a change only once the files stayed the
    // same for one more poll (2 s), so the new key beside the old certificate is never judged.
    write_replacing(
        &certs.join(format!("node-{node}.key")),
        &issued.key_pem,
        true,
    )?;
    write_replacing(
        &certs.join(format!("node-{node}.pem")),
        &issued.cert_pem,
        false,
    )?;
    Ok(Rotated {
        node,
        serial,
        not_after: unix_seconds(not_after),
    })
}

fn write_replacing(path: &Path, contents: &str, secret: bool) -> Result<(), String> {
    let tmp = PathBuf::from(format!("{}.rotating", path.display()));
    let _ = std::fs::remove_file(&tmp);
    meshkit_net::certs::write_file(&tmp, contents, secret).map_err(|e| e.to_string())?;
    std::fs::rename(&tmp, path).map_err(|e| format!("{}: {e}", path.display()))
}

/// The serial number (hex) of the certificate node `node` serves on its control listener at
/// `addr` (TLS over TCP, as `h2`), verified against `ca` (the run's `certs/ca.pem`) for the name
/// `node-N`. Blocking, each step bounded by 3 s (`HANDSHAKE_TIMEOUT`).
///
/// # Errors
///
/// Why the handshake failed (a refused certificate among them).
pub fn served_serial(addr: &str, node: u64, ca: &Path) -> Result<String, String> {
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(ca).map_err(|e| format!("{}: {e}", ca.display()))? {
        roots
            .add(cert.map_err(|e| format!("{}: {e}", ca.display()))?)
            .map_err(|e| e.to_string())?;
    }
    let mut config = rustls::ClientConfig::builder_with_provider(crypto_provider())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(|e| e.to_string())?
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![b"h2".to_vec()];
    let name = ServerName::try_from(node_dns_name(NodeId::new(node))).map_err(|e| e.to_string())?;
    let mut conn =
        rustls::ClientConnection::new(Arc::new(config), name).map_err(|e| e.to_string())?;
    let addr: SocketAddr = addr.parse().map_err(|e| format!("{addr}: {e}"))?;
    let mut tcp =
        TcpStream::connect_timeout(&addr, HANDSHAKE_TIMEOUT).map_err(|e| format!("{addr}: {e}"))?;
    tcp.set_read_timeout(Some(HANDSHAKE_TIMEOUT))
        .and_then(|()| tcp.set_write_timeout(Some(HANDSHAKE_TIMEOUT)))
        .map_err(|e| e.to_string())?;
    while conn.is_handshaking() {
        conn.complete_io(&mut tcp)
            .map_err(|e| format!("{addr}: handshake: {e}"))?;
    }
    let serial = conn
        .peer_certificates()
        .and_then(|chain| chain.first())
        .and_then(|leaf| cert_serial(leaf))
        .map(|s| hex(&s))
        .ok_or_else(|| format!("{addr}: no certificate served"))?;
    conn.send_close_notify();
    let _ = conn.complete_io(&mut tcp);
    let _ = tcp.flush();
    Ok(serial)
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
