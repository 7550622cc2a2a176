//! Mutual TLS for the QUIC transport: loading the node's certificate, key and development CA,
//! building rustls configurations with the ring provider only (DESIGN.md §6), and reading a
//! peer's [`NodeId`] from its verified certificate.
//!
//! A node's certificate carries the DNS subject alternative name `node-<id>` (see [`crate::certs`]);
//! that name, checked against the CA by rustls on both sides, is the node's identity.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use meshkit::NodeId;
use rustls::RootCertStore;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use thiserror::Error;

/// The ALPN protocol name of MeshKit's gossip over QUIC.
pub const ALPN_GOSSIP: &[u8] = b"meshkit-gossip/1";

/// The one crypto provider of the runtime. Configurations are always built with it explicitly:
/// two providers in one graph make rustls's default builders panic.
pub fn crypto_provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// The DNS name a node's certificate carries, and the TLS server name it is dialled by.
pub fn node_dns_name(id: NodeId) -> String {
    format!("node-{}", id.get())
}

/// The certificate a control-API client presented, as the TLS layer verified it against the CA.
///
/// The control server (HTTP/2 over TLS, HTTP/3) inserts one into the extensions of every request
/// it serves; authorization reads identities from it and from nothing the client can set itself
/// (DESIGN.md §4). `None` when the client presented no certificate.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ClientCertificate(pub Option<CertificateDer<'static>>);

/// Why a certificate names no node.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum IdentityError {
    /// The bytes are not an X.509 certificate.
    #[error("not an X.509 certificate")]
    NotX509,
    /// No DNS subject alternative name of the form `node-<id>`.
    #[error("no DNS name of the form node-<id> in the certificate")]
    NoNodeName,
    /// Several `node-<id>` names: the identity is ambiguous.
    #[error("more than one node-<id> DNS name in the certificate")]
    AmbiguousNodeName,
}

/// The node a certificate names (its single `node-<id>` DNS subject alternative name).
///
/// This only reads the name: call it on certificates rustls has already verified.
pub fn node_id_from_cert(der: &[u8]) -> Result<NodeId, IdentityError> {
    use x509_parser::extensions::GeneralName;
    let (_, cert) = x509_parser::parse_x509_certificate(der).map_err(|_| IdentityError::NotX509)?;
    let san = cert
        .subject_alternative_name()
        .map_err(|_| IdentityError::NotX509)?
        .ok_or(IdentityError::NoNodeName)?;
    let mut ids = san
        .value
        .general_names
        .iter()
        .filter_map(|name| match name {
            GeneralName::DNSName(dns) => dns
                .strip_prefix("node-")
                .and_then(|n| n.parse::<u64>().ok())
                .map(NodeId::new),
            _ => None,
        });
    let id = ids.next().ok_or(IdentityError::NoNodeName)?;
    if ids.next().is_some() {
        return Err(IdentityError::AmbiguousNodeName);
    }
    Ok(id)
}

/// Why the node's TLS material could not be loaded or used.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum TlsError {
    /// A PEM file could not be read or holds no usable item.
    #[error("{path}: {source}")]
    Pem {
        /// The file.
        path: PathBuf,
        /// What went wrong.
        source: rustls::pki_types::pem::Error,
    },
    /// A certificate file holds no certificate.
    #[error("{path}: no certificate in the file")]
    NoCertificate {
        /// The file.
        path: PathBuf,
    },
    /// The node's certificate names no node.
    #[error("{path}: {source}")]
    Identity {
        /// The file.
        path: PathBuf,
        /// Why.
        source: IdentityError,
    },
    /// rustls refused the material (e.g. a key that does not match the certificate).
    #[error(transparent)]
    Rustls(#[from] rustls::Error),
    /// The client-certificate verifier could not be built (e.g. an empty CA file).
    #[error(transparent)]
    Verifier(#[from] rustls::server::VerifierBuilderError),
    /// The provider offers no cipher suite QUIC can start with.
    #[error(transparent)]
    Quic(#[from] quinn::crypto::rustls::NoInitialCipherSuite),
}

/// A node's identity for mutual TLS: its certificate chain and key, and the CA it trusts.
#[derive(Debug)]
pub struct TlsIdentity {
    id: NodeId,
    chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
    roots: Arc<RootCertStore>,
}

impl TlsIdentity {
    /// Loads PEM files: the node's certificate (chain), its private key and the CA certificate.
    pub fn load(cert: &Path, key: &Path, ca: &Path) -> Result<Self, TlsError> {
        let chain = read_certs(cert)?;
        let id = node_id_from_cert(&chain[0]).map_err(|source| TlsError::Identity {
            path: cert.to_owned(),
            source,
        })?;
        let key = PrivateKeyDer::from_pem_file(key).map_err(|source| TlsError::Pem {
            path: key.to_owned(),
            source,
        })?;
        let mut roots = RootCertStore::empty();
        for ca_cert in read_certs(ca)? {
            roots.add(ca_cert)?;
        }
        Ok(Self {
            id,
            chain,
            key,
            roots: Arc::new(roots),
        })
    }

    /// The node the certificate names.
    pub fn id(&self) -> NodeId {
        self.id
    }

    /// When the node's own certificate stops being valid, in Unix seconds (`None` if it does
    /// not parse, which `load` has already ruled out). Exported as a metric so that an
    /// expiring certificate is an alert, not an outage.
    pub fn not_after_unix(&self) -> Option<i64> {
        let (_, cert) = x509_parser::parse_x509_certificate(&self.chain[0]).ok()?;
        Some(cert.validity().not_after.timestamp())
    }

    /// The server side: requires a client certificate signed by the CA.
    pub fn server_config(&self) -> Result<rustls::ServerConfig, TlsError> {
        let provider = crypto_provider();
        let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
            self.roots.clone(),
            provider.clone(),
        )
        .build()?;
        let mut config = rustls::ServerConfig::builder_with_provider(provider)
            .with_protocol_versions(&[&rustls::version::TLS13])?
            .with_client_cert_verifier(verifier)
            .with_single_cert(self.chain.clone(), self.key.clone_key())?;
        config.alpn_protocols = vec![ALPN_GOSSIP.to_vec()];
        Ok(config)
    }

    /// The control API's server side (HTTP/2 over TLS, HTTP/3): a client certificate signed by
    /// the CA is requested but optional, because a bearer token is another way in; `alpn` lists
    /// the protocols offered (`h2` and `http/1.1` on TCP, `h3` on QUIC).
    pub fn control_server_config(&self, alpn: &[&[u8]]) -> Result<rustls::ServerConfig, TlsError> {
        let provider = crypto_provider();
        let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
            self.roots.clone(),
            provider.clone(),
        )
        .allow_unauthenticated()
        .build()?;
        let mut config = rustls::ServerConfig::builder_with_provider(provider)
            .with_protocol_versions(&[&rustls::version::TLS13])?
            .with_client_cert_verifier(verifier)
            .with_single_cert(self.chain.clone(), self.key.clone_key())?;
        config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
        Ok(config)
    }

    /// The client side: verifies the server against the CA and presents this node's certificate.
    pub fn client_config(&self) -> Result<rustls::ClientConfig, TlsError> {
        let mut config = rustls::ClientConfig::builder_with_provider(crypto_provider())
            .with_protocol_versions(&[&rustls::version::TLS13])?
            .with_root_certificates(self.roots.clone())
            .with_client_auth_cert(self.chain.clone(), self.key.clone_key())?;
        config.alpn_protocols = vec![ALPN_GOSSIP.to_vec()];
        Ok(config)
    }
}

fn read_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    read_cert_file(
        path,
        |path, source| TlsError::Pem { path, source },
        |path| TlsError::NoCertificate { path },
    )
}

/// Every certificate in a PEM file; a file without one is an error too. The two constructors
/// make the caller's error type for an unreadable file and for an empty one.
pub(crate) fn read_cert_file<E>(
    path: &Path,
    unreadable: impl Fn(PathBuf, rustls::pki_types::pem::Error) -> E,
    empty: impl FnOnce(PathBuf) -> E,
) -> Result<Vec<CertificateDer<'static>>, E> {
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(|source| unreadable(path.to_owned(), source))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|source| unreadable(path.to_owned(), source))?;
    if certs.is_empty() {
        return Err(empty(path.to_owned()));
    }
    Ok(certs)
}
