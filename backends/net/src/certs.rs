//! A development CA, node and client certificates, made with rcgen (`meshctl certs init`).
//!
//! Each node certificate carries the DNS name `node-<id>` (its identity, see [`crate::tls`]) and
//! both server and client authentication usages, because every node is both. Client
//! certificates for the control API ([`CLIENT_IDENTITIES`]) carry their identity as their one DNS
//! name and common name, and the client authentication usage only; the node's `[access]` table
//! gives them their scopes (see `meshkit_control::auth`).

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use meshkit::NodeId;
use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair, KeyUsagePurpose,
};
use thiserror::Error;

use crate::tls::node_dns_name;

/// Why certificates could not be made or written.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum CertsError {
    /// rcgen failed to build or sign a certificate.
    #[error(transparent)]
    Rcgen(#[from] rcgen::Error),
    /// A file could not be written.
    #[error("{path}: {source}")]
    Write {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
}

/// A PEM certificate and its PEM private key.
#[derive(Clone, Debug)]
pub struct IssuedCert {
    /// The certificate, PEM.
    pub cert_pem: String,
    /// Its private key (PKCS#8), PEM.
    pub key_pem: String,
}

/// The common name of the CA [`write_dev_bundle`] makes.
pub const DEV_CA_NAME: &str = "MeshKit development CA";

/// A development certificate authority that signs node certificates.
pub struct DevCa {
    issuer: CertifiedIssuer<'static, KeyPair>,
    /// The CA's private key, PEM (kept for [`DevCa::key_pem`]).
    key_pem: String,
}

impl std::fmt::Debug for DevCa {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The key stays out of logs.
        f.debug_struct("DevCa").finish_non_exhaustive()
    }
}

impl DevCa {
    /// A new CA with a fresh P-256 key, named `common_name`.
    pub fn generate(common_name: &str) -> Result<Self, CertsError> {
        Self::with_key(common_name, KeyPair::generate()?)
    }

    /// The CA named `common_name` whose private key is `key_pem` (what [`DevCa::key_pem`]
    /// gave), to issue more certificates later: a rotation. What it signs chains to that CA's
    /// certificate (the same name and key), which stays the one every node trusts; its own
    /// certificate here is signed anew and not needed.
    pub fn from_key_pem(common_name: &str, key_pem: &str) -> Result<Self, CertsError> {
        Self::with_key(common_name, KeyPair::from_pem(key_pem)?)
    }

    fn with_key(common_name: &str, key: KeyPair) -> Result<Self, CertsError> {
        let mut params = CertificateParams::new(Vec::<String>::new())?;
        params
            .distinguished_name
            .push(DnType::CommonName, common_name);
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let key_pem = key.serialize_pem();
        let issuer = CertifiedIssuer::self_signed(params, key)?;
        Ok(Self { issuer, key_pem })
    }

    /// The CA's private key, PEM: whoever holds it can issue certificates every node trusts.
    pub fn key_pem(&self) -> &str {
        &self.key_pem
    }

    /// The CA certificate, PEM: what every node trusts.
    pub fn cert_pem(&self) -> String {
        self.issuer.pem()
    }

    /// A certificate for node `id`, signed by this CA, with a fresh key (rcgen's default
    /// validity: 1975 to 4096).
    pub fn issue_node(&self, id: NodeId) -> Result<IssuedCert, CertsError> {
        self.sign(&Self::node_params(id)?)
    }

    /// As [`DevCa::issue_node`], valid from `not_before` to `not_after` only: for rotations,
    /// and for tests of expired and not-yet-valid certificates.
    pub fn issue_node_valid(
        &self,
        id: NodeId,
        not_before: SystemTime,
        not_after: SystemTime,
    ) -> Result<IssuedCert, CertsError> {
        let mut params = Self::node_params(id)?;
        params.not_before = not_before.into();
        params.not_after = not_after.into();
        self.sign(&params)
    }

    /// A control-API client certificate for `name` (its one DNS name and its common name),
    /// client authentication only, signed by this CA, with a fresh key.
    pub fn issue_client(&self, name: &str) -> Result<IssuedCert, CertsError> {
        self.sign(&Self::client_params(name)?)
    }

    /// As [`DevCa::issue_client`], valid from `not_before` to `not_after` only.
    pub fn issue_client_valid(
        &self,
        name: &str,
        not_before: SystemTime,
        not_after: SystemTime,
    ) -> Result<IssuedCert, CertsError> {
        let mut params = Self::client_params(name)?;
        params.not_before = not_before.into();
        params.not_after = not_after.into();
        self.sign(&params)
    }

    fn node_params(id: NodeId) -> Result<CertificateParams, CertsError> {
        let name = node_dns_name(id);
        let mut params = CertificateParams::new(vec![name.clone()])?;
        params.distinguished_name.push(DnType::CommonName, name);
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        Ok(params)
    }

    fn client_params(name: &str) -> Result<CertificateParams, CertsError> {
        let mut params = CertificateParams::new(vec![name.to_owned()])?;
        params.distinguished_name.push(DnType::CommonName, name);
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        Ok(params)
    }

    fn sign(&self, params: &CertificateParams) -> Result<IssuedCert, CertsError> {
        let key = KeyPair::generate()?;
        let cert = params.signed_by(&key, &self.issuer)?;
        Ok(IssuedCert {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
        })
    }
}

/// The client identities `meshctl certs init` issues certificates for, and the scope the
/// `[access.identities]` lines it prints give each.
pub const CLIENT_IDENTITIES: [(&str, meshkit_api::permission::Permission); 3] = [
    ("meshctl-admin", meshkit_api::permission::Permission::Admin),
    (
        "meshctl-operator",
        meshkit_api::permission::Permission::Operate,
    ),
    (
        "meshctl-observer",
        meshkit_api::permission::Permission::Observe,
    ),
];

/// Where [`write_dev_certs`] put a node's files.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NodeFiles {
    /// The node.
    pub id: NodeId,
    /// `node-<id>.pem`.
    pub cert: PathBuf,
    /// `node-<id>.key`.
    pub key: PathBuf,
    /// `node-<id>-expired.pem`: the same identity from the same CA, expired a day before it
    /// was made, for `certificate-expiry` chaos drills (`[chaos] stand_in_cert`).
    pub expired_cert: PathBuf,
    /// `node-<id>-expired.key`, its key.
    pub expired_key: PathBuf,
}

/// Where [`write_dev_bundle`] put a client's files.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClientFiles {
    /// The identity the certificate names.
    pub name: &'static str,
    /// `<name>.pem`.
    pub cert: PathBuf,
    /// `<name>.key`.
    pub key: PathBuf,
}

/// Everything [`write_dev_bundle`] wrote.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DevBundle {
    /// `ca.pem`.
    pub ca: PathBuf,
    /// `ca.key`, when kept ([`write_dev_bundle_with`]).
    pub ca_key: Option<PathBuf>,
    /// One per node.
    pub nodes: Vec<NodeFiles>,
    /// One per [`CLIENT_IDENTITIES`] entry.
    pub clients: Vec<ClientFiles>,
}

/// Writes `ca.pem` and, for ids `1..=nodes`, `node-<id>.pem` and `node-<id>.key` into `dir`
/// (created if missing). The CA's key is not kept: issue a new set to add nodes.
pub fn write_dev_certs(dir: &Path, nodes: u64) -> Result<(PathBuf, Vec<NodeFiles>), CertsError> {
    let bundle = write_dev_bundle(dir, nodes)?;
    Ok((bundle.ca, bundle.nodes))
}

/// As [`write_dev_certs`], plus a client certificate and key (`<name>.pem`, `<name>.key`) for
/// each of [`CLIENT_IDENTITIES`]. Each node also gets an expired stand-in
/// ([`NodeFiles::expired_cert`]).
pub fn write_dev_bundle(dir: &Path, nodes: u64) -> Result<DevBundle, CertsError> {
    write_dev_bundle_with(dir, nodes, false)
}

/// As [`write_dev_bundle`]; with `keep_ca_key`, also the CA's private key as `ca.key` (mode
/// 0600), so that new certificates can be issued from the same CA later
/// ([`DevCa::from_key_pem`] with [`DEV_CA_NAME`]): what a rotation drill needs. Keep that file
/// away from the nodes in anything but a test environment.
pub fn write_dev_bundle_with(
    dir: &Path,
    nodes: u64,
    keep_ca_key: bool,
) -> Result<DevBundle, CertsError> {
    fs::create_dir_all(dir).map_err(|source| CertsError::Write {
        path: dir.to_owned(),
        source,
    })?;
    let ca = DevCa::generate(DEV_CA_NAME)?;
    let ca_path = dir.join("ca.pem");
    write_file(&ca_path, &ca.cert_pem(), false)?;
    let ca_key = if keep_ca_key {
        let path = dir.join("ca.key");
        write_file(&path, ca.key_pem(), true)?;
        Some(path)
    } else {
        None
    };
    let mut files = Vec::new();
    for raw in 1..=nodes {
        let id = NodeId::new(raw);
        let issued = ca.issue_node(id)?;
        let cert = dir.join(format!("node-{raw}.pem"));
        let key = dir.join(format!("node-{raw}.key"));
        write_file(&cert, &issued.cert_pem, false)?;
        write_file(&key, &issued.key_pem, true)?;
        let day = std::time::Duration::from_secs(86_400);
        let expired_at = SystemTime::now() - day;
        let expired = ca.issue_node_valid(id, expired_at - 30 * day, expired_at)?;
        let expired_cert = dir.join(format!("node-{raw}-expired.pem"));
        let expired_key = dir.join(format!("node-{raw}-expired.key"));
        write_file(&expired_cert, &expired.cert_pem, false)?;
        write_file(&expired_key, &expired.key_pem, true)?;
        files.push(NodeFiles {
            id,
            cert,
            key,
            expired_cert,
            expired_key,
        });
    }
    let mut clients = Vec::new();
    for (name, _) in CLIENT_IDENTITIES {
        let issued = ca.issue_client(name)?;
        let cert = dir.join(format!("{name}.pem"));
        let key = dir.join(format!("{name}.key"));
        write_file(&cert, &issued.cert_pem, false)?;
        write_file(&key, &issued.key_pem, true)?;
        clients.push(ClientFiles { name, cert, key });
    }
    Ok(DevBundle {
        ca: ca_path,
        ca_key,
        nodes: files,
        clients,
    })
}

/// Writes `contents` to `path`, mode 0600 when `secret` (0644 otherwise) on Unix (also how
/// `meshkit_control::tokens` writes its signing keys).
pub fn write_file(path: &Path, contents: &str, secret: bool) -> Result<(), CertsError> {
    let err = |source| CertsError::Write {
        path: path.to_owned(),
        source,
    };
    let mut options = fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(if secret { 0o600 } else { 0o644 });
    }
    #[cfg(not(unix))]
    let _ = secret;
    let mut file = options.open(path).map_err(err)?;
    file.write_all(contents.as_bytes()).map_err(err)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rustls::pki_types::CertificateDer;
    use rustls::pki_types::pem::PemObject;

    #[test]
    fn node_certificate_names_its_node() {
        let ca = DevCa::generate("test CA").unwrap();
        let issued = ca.issue_node(NodeId::new(42)).unwrap();
        let der = CertificateDer::from_pem_slice(issued.cert_pem.as_bytes()).unwrap();
        assert_eq!(
            crate::tls::node_id_from_cert(&der).unwrap(),
            NodeId::new(42)
        );
        let ca_der = CertificateDer::from_pem_slice(ca.cert_pem().as_bytes()).unwrap();
        assert_eq!(
            crate::tls::node_id_from_cert(&ca_der),
            Err(crate::tls::IdentityError::NoNodeName)
        );
    }

    /// A CA rebuilt from its kept key issues what the original CA's certificate verifies (the
    /// rotation drill relies on it); one rebuilt under another name does not.
    #[test]
    fn a_ca_rebuilt_from_its_key_issues_certificates_that_chain_to_the_original() {
        let dir =
            std::env::temp_dir().join(format!("meshkit-certs-rebuilt-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        let bundle = write_dev_bundle_with(&dir, 1, true).unwrap();
        let ca_pem = fs::read_to_string(&bundle.ca).unwrap();
        let key_pem = fs::read_to_string(bundle.ca_key.as_ref().unwrap()).unwrap();
        let files = crate::tls::TlsFiles {
            cert: dir.join("node-1.pem"),
            key: dir.join("node-1.key"),
            ca: bundle.ca,
        };
        let chains = |ca: &DevCa| {
            let issued = ca.issue_node(NodeId::new(1)).unwrap();
            crate::tls::TlsIdentity::from_pem(
                &files,
                issued.cert_pem.as_bytes(),
                issued.key_pem.as_bytes(),
                ca_pem.as_bytes(),
            )
            .unwrap()
            .check_chain(SystemTime::now())
        };
        let rebuilt = DevCa::from_key_pem(DEV_CA_NAME, &key_pem).unwrap();
        chains(&rebuilt).expect("a certificate of the rebuilt CA chains to the original");
        let renamed = DevCa::from_key_pem("another CA", &key_pem).unwrap();
        assert!(chains(&renamed).is_err());
        assert!(!format!("{rebuilt:?}").contains("PRIVATE KEY"));
        let _ = fs::remove_dir_all(&dir);
    }
}
