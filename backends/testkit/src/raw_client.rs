//! Raw TLS and HTTP/2 clients from a chosen source address, anonymous or with node-1's
//! certificate: what `anon_flood` measures with and `tests/control_limits.rs` tests with. Raw,
//! not `meshkit_node::client`, because they must hold a connection idle, choose the source
//! address, and see a refusal at the TLS layer rather than a retried request.

use std::error::Error;
use std::net::{IpAddr, SocketAddr};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Empty;
use hyper_util::rt::{TokioExecutor, TokioIo};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::{TcpSocket, TcpStream};
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;

/// Bound on one connect, handshake or request.
pub const STEP: Duration = Duration::from_secs(5);
/// The HTTP/2 connection preface and an empty SETTINGS frame.
pub const H2_PREFACE: &[u8] =
    b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00\x00\x04\x00\x00\x00\x00\x00";

/// What these clients fail with: each error says what was being done.
pub type ClientError = Box<dyn Error + Send + Sync>;

/// A TLS 1.3 client configuration trusting the CA in `dir`, presenting node-1's certificate
/// when `authenticated` (else none), offering `alpn`.
pub fn tls_config(
    dir: &Path,
    authenticated: bool,
    alpn: &[u8],
) -> Result<rustls::ClientConfig, ClientError> {
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(dir.join("ca.pem"))? {
        roots.add(cert?)?;
    }
    let builder = rustls::ClientConfig::builder_with_provider(meshkit_node::tls::crypto_provider())
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .with_root_certificates(roots);
    let mut config = if authenticated {
        let chain = CertificateDer::pem_file_iter(dir.join("node-1.pem"))?
            .collect::<Result<Vec<_>, _>>()?;
        let key = PrivateKeyDer::from_pem_file(dir.join("node-1.key"))?;
        builder.with_client_auth_cert(chain, key)?
    } else {
        builder.with_no_client_auth()
    };
    config.alpn_protocols = vec![alpn.to_vec()];
    Ok(config)
}

/// TCP from `local` to `server`, then TLS with `config`.
pub async fn tls_connect(
    server: SocketAddr,
    local: IpAddr,
    config: &rustls::ClientConfig,
) -> Result<TlsStream<TcpStream>, ClientError> {
    let socket = TcpSocket::new_v4()?;
    socket.bind(SocketAddr::new(local, 0))?;
    let tcp = tokio::time::timeout(STEP, socket.connect(server)).await??;
    let connector = TlsConnector::from(Arc::new(config.clone()));
    let name = ServerName::try_from("node-1")?;
    let mut tls = tokio::time::timeout(STEP, connector.connect(name, tcp)).await??;
    // TLS 1.3: the server's verdict on the client comes after the client's last flight; a
    // write-and-flush makes a refused connection show up here rather than later.
    tls.flush().await?;
    Ok(tls)
}

/// An idle anonymous HTTP/2 connection: TLS (without a certificate, if `config` has none) and
/// the preface, then nothing. `None` when the server refused or closed it.
pub async fn idle_h2(
    server: SocketAddr,
    local: IpAddr,
    config: &rustls::ClientConfig,
) -> Option<TlsStream<TcpStream>> {
    let mut tls = tls_connect(server, local, config).await.ok()?;
    tls.write_all(H2_PREFACE).await.ok()?;
    tls.flush().await.ok()?;
    // The server answers the preface with its SETTINGS; a refused connection ends instead.
    let mut buf = [0u8; 9];
    match tokio::time::timeout(STEP, tls.read(&mut buf)).await {
        Ok(Ok(n)) if n > 0 => Some(tls),
        _ => None,
    }
}

/// `GET path` over HTTP/2 on a new connection from `local`: the status.
pub async fn h2_get(
    server: SocketAddr,
    local: IpAddr,
    config: &rustls::ClientConfig,
    path: &str,
) -> Result<u16, String> {
    let tls = tls_connect(server, local, config)
        .await
        .map_err(|e| format!("connect: {e}"))?;
    let (mut sender, connection) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tls))
            .await
            .map_err(|e| format!("h2 handshake: {e}"))?;
    tokio::spawn(connection);
    let request = http::Request::get(format!("https://{server}{path}"))
        .body(Empty::<Bytes>::new())
        .map_err(|e| e.to_string())?;
    let response = tokio::time::timeout(STEP, sender.send_request(request))
        .await
        .map_err(|_| "no answer in time".to_owned())?
        .map_err(|e| format!("request: {e}"))?;
    Ok(response.status().as_u16())
}
