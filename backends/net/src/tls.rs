//! Mutual TLS for the QUIC transport: loading the node's certificate, key and development CA,
//! building rustls configurations with the ring provider only (docs/design.md §6), and reading a
//! peer's [`NodeId`] from its verified certificate.
//!
//! A node's certificate carries the DNS subject alternative name `node-<id>` (see [`crate::certs`]);
//! that name, checked against the CA by rustls on both sides, is the node's identity.
//!
//! [`TlsIdentity::load`] reads what a node starts with; [`crate::reload`] reads the same files
//! again when they change and hands the listeners a new [`TlsIdentity`] through a
//! [`crate::reload::TlsSource`].

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use meshkit::NodeId;
use rustls::RootCertStore;
use rustls::client::danger::ServerCertVerifier as _;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::sign::CertifiedKey;
use thiserror::Error;
use tokio::sync::watch;

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
/// (docs/design.md §4). `None` when the client presented no certificate.
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

/// Why the node's TLS material could not be loaded or used. Always an operator fault (a file
/// to fix); when a reload meets one, the node keeps the material it had.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum TlsError {
    /// A file could not be read.
    #[error("{path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
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
    /// The certificate names another node than the one running.
    #[error("{path}: the certificate is for {actual}, this node is {expected}")]
    WrongNode {
        /// The file.
        path: PathBuf,
        /// The node running.
        expected: NodeId,
        /// The node the certificate names.
        actual: NodeId,
    },
    /// The certificate's validity ended before now.
    #[error(
        "{path}: the certificate expired at {} (now {})",
        rfc3339(*.not_after),
        rfc3339(*.now)
    )]
    Expired {
        /// The file.
        path: PathBuf,
        /// Its `notAfter`, Unix seconds.
        not_after: i64,
        /// The time of the check, Unix seconds.
        now: i64,
    },
    /// The certificate's validity starts after now.
    #[error(
        "{path}: the certificate is not valid before {} (now {})",
        rfc3339(*.not_before),
        rfc3339(*.now)
    )]
    NotYetValid {
        /// The file.
        path: PathBuf,
        /// Its `notBefore`, Unix seconds.
        not_before: i64,
        /// The time of the check, Unix seconds.
        now: i64,
    },
    /// The certificate does not verify against the CA file (another CA signed it, or it lacks
    /// the usages a node needs): peers trusting that CA would refuse it.
    #[error("{path}: not trusted by the CA in {ca}: {source}")]
    Untrusted {
        /// The certificate file.
        path: PathBuf,
        /// The CA file.
        ca: PathBuf,
        /// What rustls found.
        source: rustls::Error,
    },
    /// The private key is not the key of the certificate (each is usable alone: one of the two
    /// files belongs to another pair).
    #[error(
        "the private key in {key} does not match the certificate in {cert}: one of the two \
         files belongs to another certificate/key pair"
    )]
    KeyMismatch {
        /// The certificate file.
        cert: PathBuf,
        /// The key file.
        key: PathBuf,
    },
    /// The key file holds a certificate and no private key (the `cert` and `key` paths are
    /// likely swapped, or both name the certificate).
    #[error("{path}: holds a certificate, not a private key (are `cert` and `key` swapped?)")]
    CertificateInKeyFile {
        /// The key file.
        path: PathBuf,
    },
    /// rustls refused the material.
    #[error(transparent)]
    Rustls(#[from] rustls::Error),
    /// The client-certificate verifier could not be built (e.g. an empty CA file).
    #[error(transparent)]
    Verifier(#[from] rustls::server::VerifierBuilderError),
    /// The provider offers no cipher suite QUIC can start with.
    #[error(transparent)]
    Quic(#[from] quinn::crypto::rustls::NoInitialCipherSuite),
}

/// Where a node's TLS material lives: its certificate (chain), its private key and the CA
/// certificates it trusts, all PEM.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TlsFiles {
    /// The node's certificate, then any intermediates.
    pub cert: PathBuf,
    /// Its private key.
    pub key: PathBuf,
    /// The CA certificates peers' certificates must chain to.
    pub ca: PathBuf,
}

impl TlsFiles {
    /// The three paths in the order [`TlsIdentity::from_pem`] takes their contents.
    pub fn paths(&self) -> [&Path; 3] {
        [&self.cert, &self.key, &self.ca]
    }
}

/// A node's identity for mutual TLS: its certificate chain and key, and the CA it trusts.
#[derive(Debug)]
pub struct TlsIdentity {
    id: NodeId,
    chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
    roots: Arc<RootCertStore>,
    files: TlsFiles,
    not_before: i64,
    not_after: i64,
    /// A certificate served in place of this one while its switch is on (a
    /// `certificate-expiry` chaos experiment): see [`TlsIdentity::with_stand_in`].
    stand_in: Option<Arc<StandIn>>,
}

/// A stand-in certificate and the switch that says, at each handshake, whether it is served.
#[derive(Debug)]
struct StandIn {
    identity: TlsIdentity,
    serve: watch::Receiver<bool>,
}

impl Clone for TlsIdentity {
    fn clone(&self) -> Self {
        Self {
            id: self.id,
            chain: self.chain.clone(),
            key: self.key.clone_key(),
            roots: self.roots.clone(),
            files: self.files.clone(),
            not_before: self.not_before,
            not_after: self.not_after,
            stand_in: self.stand_in.clone(),
        }
    }
}

impl TlsIdentity {
    /// Loads PEM files: the node's certificate (chain), its private key and the CA certificate.
    /// Only parses them: [`TlsIdentity::check`] says whether a node may use them now.
    pub fn load(cert: &Path, key: &Path, ca: &Path) -> Result<Self, TlsError> {
        let files = TlsFiles {
            cert: cert.to_owned(),
            key: key.to_owned(),
            ca: ca.to_owned(),
        };
        let read = |path: &Path| {
            std::fs::read(path).map_err(|source| TlsError::Read {
                path: path.to_owned(),
                source,
            })
        };
        let (cert_pem, key_pem, ca_pem) = (read(cert)?, read(key)?, read(ca)?);
        Self::from_pem(&files, &cert_pem, &key_pem, &ca_pem)
    }

    /// Parses the contents of `files` (certificate, key, CA, PEM); the paths name the files in
    /// errors.
    pub fn from_pem(
        files: &TlsFiles,
        cert: &[u8],
        key: &[u8],
        ca: &[u8],
    ) -> Result<Self, TlsError> {
        let chain = read_certs(&files.cert, cert)?;
        let identity_error = |source| TlsError::Identity {
            path: files.cert.clone(),
            source,
        };
        let id = node_id_from_cert(&chain[0]).map_err(identity_error)?;
        let (_, parsed) = x509_parser::parse_x509_certificate(&chain[0])
            .map_err(|_| identity_error(IdentityError::NotX509))?;
        let validity = parsed.validity();
        let (not_before, not_after) = (
            validity.not_before.timestamp(),
            validity.not_after.timestamp(),
        );
        let key = PrivateKeyDer::from_pem_slice(key).map_err(|source| {
            let holds_certificate = CertificateDer::pem_slice_iter(key).any(|c| c.is_ok());
            if holds_certificate {
                TlsError::CertificateInKeyFile {
                    path: files.key.clone(),
                }
            } else {
                TlsError::Pem {
                    path: files.key.clone(),
                    source,
                }
            }
        })?;
        let mut roots = RootCertStore::empty();
        for ca_cert in read_certs(&files.ca, ca)? {
            roots.add(ca_cert)?;
        }
        Ok(Self {
            id,
            chain,
            key,
            roots: Arc::new(roots),
            files: files.clone(),
            not_before,
            not_after,
            stand_in: None,
        })
    }

    /// This identity, with `stand_in` served in its place to every handshake (as server and as
    /// client) that starts while `serve` holds `true`: a `certificate-expiry` chaos experiment.
    ///
    /// Why the switch is read per handshake by the configurations' certificate resolvers: a
    /// chaos experiment reports itself active once it has raised the switch, so the next
    /// handshake must already get the stand-in. Publishing a new configuration to every
    /// listener instead let the report run ahead of the listeners by the tasks in between.
    /// The stand-in must be checked by the caller ([`TlsIdentity::check_stand_in`]: same node,
    /// same CA); peers stay verified against this identity's CA. A stand-in of the stand-in
    /// is dropped.
    #[must_use]
    pub fn with_stand_in(mut self, mut stand_in: Self, serve: watch::Receiver<bool>) -> Self {
        stand_in.stand_in = None;
        self.stand_in = Some(Arc::new(StandIn {
            identity: stand_in,
            serve,
        }));
        self
    }

    /// Whether new handshakes get the stand-in now ([`TlsIdentity::with_stand_in`]).
    pub fn serves_stand_in(&self) -> bool {
        self.stand_in.as_ref().is_some_and(|s| switch_on(&s.serve))
    }

    /// The stand-in certificate's expiry, in Unix seconds, when there is one.
    pub fn stand_in_not_after_unix(&self) -> Option<i64> {
        self.stand_in.as_ref().map(|s| s.identity.not_after)
    }

    /// The certificate and signing key of this identity alone.
    fn certified_key(&self, provider: &CryptoProvider) -> Result<Arc<CertifiedKey>, TlsError> {
        CertifiedKey::from_der(self.chain.clone(), self.key.clone_key(), provider)
            .map(Arc::new)
            .map_err(|e| self.key_error(e))
    }

    /// What the configurations present: the own certificate, or the stand-in while its switch
    /// is on (read at each handshake).
    fn resolver(&self, provider: &CryptoProvider) -> Result<Arc<ServedCert>, TlsError> {
        let stand_in = match &self.stand_in {
            Some(s) => Some((s.identity.certified_key(provider)?, s.serve.clone())),
            None => None,
        };
        Ok(Arc::new(ServedCert {
            own: self.certified_key(provider)?,
            stand_in,
        }))
    }

    /// Whether a node may use this material at `now`: the certificate names `node` (when
    /// given), the key matches it (every configuration builds) and `now` is inside its
    /// validity. A node refuses to start, and a reload is refused, on any of these.
    pub fn check(&self, node: Option<NodeId>, now: SystemTime) -> Result<(), TlsError> {
        if let Some(expected) = node
            && expected != self.id
        {
            return Err(TlsError::WrongNode {
                path: self.files.cert.clone(),
                expected,
                actual: self.id,
            });
        }
        self.server_config()?;
        self.client_config()?;
        let now = unix_seconds(now);
        if now > self.not_after {
            return Err(TlsError::Expired {
                path: self.files.cert.clone(),
                not_after: self.not_after,
                now,
            });
        }
        if now < self.not_before {
            return Err(TlsError::NotYetValid {
                path: self.files.cert.clone(),
                not_before: self.not_before,
                now,
            });
        }
        Ok(())
    }

    /// Whether the node's own certificate chains to the CA it trusts, as a peer would check it
    /// (name `node-<id>`, server usage, signature, validity at `now`).
    pub fn check_chain(&self, now: SystemTime) -> Result<(), TlsError> {
        let untrusted = |source| TlsError::Untrusted {
            path: self.files.cert.clone(),
            ca: self.files.ca.clone(),
            source,
        };
        let verifier = rustls::client::WebPkiServerVerifier::builder_with_provider(
            self.roots.clone(),
            crypto_provider(),
        )
        .build()
        .map_err(|e| untrusted(rustls::Error::General(e.to_string())))?;
        let name = ServerName::try_from(node_dns_name(self.id))
            .map_err(|_| untrusted(rustls::Error::General("not a DNS name".to_owned())))?;
        let now =
            UnixTime::since_unix_epoch(now.duration_since(UNIX_EPOCH).unwrap_or(Duration::ZERO));
        verifier
            .verify_server_cert(&self.chain[0], &self.chain[1..], &name, &[], now)
            .map(|_| ())
            .map_err(untrusted)
    }

    /// Whether this material may stand in for the node's own certificate in a
    /// `certificate-expiry` chaos experiment: it names `node`, the key matches, and it chains to
    /// the CA as a peer would check it at a moment inside its validity. Whether it has expired
    /// is not judged here: an expired certificate is the point (the experiment checks that the
    /// expiry is the one its plan asks for).
    pub fn check_stand_in(&self, node: NodeId) -> Result<(), TlsError> {
        // `check` with a time inside the validity judges everything but expiry.
        let inside = UNIX_EPOCH + Duration::from_secs(u64::try_from(self.not_before).unwrap_or(0));
        self.check(Some(node), inside)?;
        self.check_chain(inside)
    }

    /// The files this identity was read from.
    pub fn files(&self) -> &TlsFiles {
        &self.files
    }

    /// The node the certificate names.
    pub fn id(&self) -> NodeId {
        self.id
    }

    /// The private key's DER bytes, for deriving per-node secrets (the QUIC stateless reset
    /// key); never sent anywhere.
    pub(crate) fn private_key_der(&self) -> &[u8] {
        self.key.secret_der()
    }

    /// When the node's own certificate stops being valid, in Unix seconds. Exported as a
    /// metric so that an expiring certificate is an alert, not an outage. (Always `Some`: kept
    /// an `Option` for callers written when parsing could fail here.)
    pub fn not_after_unix(&self) -> Option<i64> {
        Some(self.not_after)
    }

    /// The serial number of the node's own certificate, as big-endian bytes.
    pub fn serial(&self) -> Vec<u8> {
        cert_serial(&self.chain[0]).unwrap_or_default()
    }

    /// `error` from installing the certificate and key, naming both files when the key is not
    /// the certificate's.
    fn key_error(&self, error: rustls::Error) -> TlsError {
        match error {
            rustls::Error::InconsistentKeys(_) => TlsError::KeyMismatch {
                cert: self.files.cert.clone(),
                key: self.files.key.clone(),
            },
            other => TlsError::Rustls(other),
        }
    }

    /// The server side: requires a client certificate signed by the CA.
    pub fn server_config(&self) -> Result<rustls::ServerConfig, TlsError> {
        let provider = crypto_provider();
        let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
            self.roots.clone(),
            provider.clone(),
        )
        .build()?;
        let resolver = self.resolver(&provider)?;
        let mut config = rustls::ServerConfig::builder_with_provider(provider)
            .with_protocol_versions(&[&rustls::version::TLS13])?
            .with_client_cert_verifier(verifier)
            .with_cert_resolver(resolver);
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
        let resolver = self.resolver(&provider)?;
        let mut config = rustls::ServerConfig::builder_with_provider(provider)
            .with_protocol_versions(&[&rustls::version::TLS13])?
            .with_client_cert_verifier(verifier)
            .with_cert_resolver(resolver);
        config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
        Ok(config)
    }

    /// The client side: verifies the server against the CA and presents this node's certificate.
    pub fn client_config(&self) -> Result<rustls::ClientConfig, TlsError> {
        let provider = crypto_provider();
        let resolver = self.resolver(&provider)?;
        let mut config = rustls::ClientConfig::builder_with_provider(provider)
            .with_protocol_versions(&[&rustls::version::TLS13])?
            .with_root_certificates(self.roots.clone())
            .with_client_cert_resolver(resolver);
        config.alpn_protocols = vec![ALPN_GOSSIP.to_vec()];
        Ok(config)
    }
}

/// Whether a stand-in switch is on: it holds `true` and its sender (the chaos layer) still
/// exists; a switch whose sender is gone serves nothing, whatever it last held.
pub(crate) fn switch_on(serve: &watch::Receiver<bool>) -> bool {
    serve.has_changed().is_ok() && *serve.borrow()
}

/// The certificate a handshake presents: the node's own, or its stand-in while the switch is on.
#[derive(Debug)]
struct ServedCert {
    own: Arc<CertifiedKey>,
    stand_in: Option<(Arc<CertifiedKey>, watch::Receiver<bool>)>,
}

impl ServedCert {
    fn now(&self) -> Arc<CertifiedKey> {
        match &self.stand_in {
            Some((stand_in, serve)) if switch_on(serve) => stand_in.clone(),
            _ => self.own.clone(),
        }
    }
}

impl rustls::server::ResolvesServerCert for ServedCert {
    fn resolve(&self, _: rustls::server::ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.now())
    }
}

impl rustls::client::ResolvesClientCert for ServedCert {
    fn resolve(&self, _: &[&[u8]], _: &[rustls::SignatureScheme]) -> Option<Arc<CertifiedKey>> {
        Some(self.now())
    }

    fn has_certs(&self) -> bool {
        true
    }
}

fn read_certs(path: &Path, pem: &[u8]) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let certs = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|source| TlsError::Pem {
            path: path.to_owned(),
            source,
        })?;
    if certs.is_empty() {
        return Err(TlsError::NoCertificate {
            path: path.to_owned(),
        });
    }
    Ok(certs)
}

/// The serial number of a DER certificate, big-endian; `None` if it does not parse.
pub fn cert_serial(der: &[u8]) -> Option<Vec<u8>> {
    let (_, cert) = x509_parser::parse_x509_certificate(der).ok()?;
    Some(cert.raw_serial().to_vec())
}

/// Seconds since the Unix epoch (negative before it), as certificates and tokens date things.
pub fn unix_seconds(time: SystemTime) -> i64 {
    match time.duration_since(UNIX_EPOCH) {
        Ok(after) => i64::try_from(after.as_secs()).unwrap_or(i64::MAX),
        Err(before) => i64::try_from(before.duration().as_secs()).map_or(i64::MIN, |s| -s),
    }
}

/// `2026-11-22T16:40:00Z`, or the raw number when it is outside what RFC 3339 can write.
pub(crate) fn rfc3339(unix: i64) -> String {
    time::OffsetDateTime::from_unix_timestamp(unix)
        .ok()
        .and_then(|t| {
            t.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
        .unwrap_or_else(|| format!("{unix} (Unix seconds)"))
}

/// Every certificate in a PEM file; a file without one is an error too. The two constructors
/// make the caller's error type for an unreadable file and for an empty one.
pub fn read_cert_file<E>(
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
