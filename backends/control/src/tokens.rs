//! Signed bearer tokens for the control API: compact JWS (RFC 7515) with Ed25519 (`EdDSA`, RFC
//! 8037) signatures made and checked with ring, the one crypto provider of the runtime.
//!
//! A token is `base64url(header) "." base64url(claims) "." base64url(signature)`, with
//!
//! ```json
//! {"alg":"EdDSA","typ":"JWT"}
//! {"sub":"alice","scope":"mesh.operate","iat":1795348118,"exp":1795351718}
//! ```
//!
//! `scope` is space separated (RFC 8693 §4.2) and may only name known scopes; `exp` (seconds
//! since the Unix epoch) is required, and may lie at most the node's maximum lifetime ahead
//! ([`DEFAULT_MAX_LIFETIME`], `[access] token_max_lifetime`), as may `exp - iat`; `nbf` is
//! honoured when present. The header must say
//! `EdDSA` and nothing else: no `none`, no HMAC, no `crit` extensions, so a token can never pick
//! its own verification. Signing needs the private key (`meshctl tokens issue --key`); a node
//! holds only the public key (`[access] token_key`) and so can verify tokens but never mint them.
//!
//! Key files are PEM: the private key PKCS#8 (`PRIVATE KEY`), the public key SubjectPublicKeyInfo
//! (`PUBLIC KEY`), the formats `openssl genpkey -algorithm ed25519` and `openssl pkey -pubout`
//! read and write.

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use ring::signature::{ED25519, Ed25519KeyPair, KeyPair as _, UnparsedPublicKey};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{PrivatePkcs8KeyDer, SubjectPublicKeyInfoDer};
use serde::{Deserialize, Serialize};
use thiserror::Error;

use meshkit_api::permission::{Permissions, UnknownPermission};

/// Longest token accepted, in bytes. Real tokens are about 250 bytes; the bound keeps a client
/// from making the node decode and hash megabytes per request.
pub const MAX_TOKEN_BYTES: usize = 4096;
/// Longest subject, in bytes.
pub const MAX_SUBJECT_BYTES: usize = 128;
/// Longest lifetime `meshctl tokens issue` gives a token: 90 days.
pub const MAX_TTL: Duration = Duration::from_secs(90 * 24 * 3600);
/// Longest lifetime a node accepts unless configured otherwise (`[access]
/// token_max_lifetime`): the same 90 days, so a key holder who signs by other means than
/// `meshctl` cannot mint a token that outlives it (docs/security.md).
pub const DEFAULT_MAX_LIFETIME: Duration = MAX_TTL;
/// Bounds of `[access] token_max_lifetime`: one minute to 366 days.
pub const MAX_LIFETIME_RANGE: std::ops::RangeInclusive<Duration> =
    Duration::from_secs(60)..=Duration::from_secs(366 * 24 * 3600);
/// How far in the future a `nbf` claim may lie and still be accepted, for clocks that disagree
/// a little between the issuing host and the node. Expiry gets no such slack.
pub const NOT_BEFORE_LEEWAY: Duration = Duration::from_secs(60);

/// The algorithm named in every token header.
const ALG: &str = "EdDSA";
/// The DER prefix of an Ed25519 SubjectPublicKeyInfo (RFC 8410 §4), before the 32 key bytes.
const ED25519_SPKI_PREFIX: [u8; 12] = [
    0x30, 0x2a, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x03, 0x21, 0x00,
];
/// Length of an Ed25519 public key, in bytes.
const ED25519_PUBLIC_KEY_BYTES: usize = 32;

/// Why a token was refused. Always the presenter's fault (or a stale token); nothing changed.
#[derive(Clone, Debug, Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum TokenError {
    /// Longer than [`MAX_TOKEN_BYTES`].
    #[error("token longer than {MAX_TOKEN_BYTES} bytes")]
    TooLong,
    /// Not three base64url parts, or a part that is not the JSON it should be.
    #[error("malformed token: {part} is not valid")]
    Malformed {
        /// `header`, `claims`, `signature` or `structure`.
        part: &'static str,
    },
    /// The header names another algorithm than `EdDSA`, or critical extensions.
    #[error("unsupported token header: only alg EdDSA without crit is accepted")]
    UnsupportedHeader,
    /// The signature does not verify with the node's key (forged, or signed by another key).
    #[error("token signature does not verify with this node's key")]
    BadSignature,
    /// The token expired.
    #[error("token expired at {exp} (Unix seconds)")]
    Expired {
        /// Its `exp` claim.
        exp: u64,
    },
    /// The token's `nbf` lies in the future.
    #[error("token not valid before {nbf} (Unix seconds)")]
    NotYetValid {
        /// Its `nbf` claim.
        nbf: u64,
    },
    /// The subject is empty, too long, or has characters outside `A-Z a-z 0-9 . _ @ : -`.
    #[error("token subject must be 1 to {MAX_SUBJECT_BYTES} characters of A-Z a-z 0-9 . _ @ : -")]
    BadSubject,
    /// The `scope` claim names an unknown scope.
    #[error("token {0}")]
    UnknownPermission(UnknownPermission),
    /// The token lives longer than this node accepts: its `exp` lies more than the node's
    /// maximum lifetime (plus [`NOT_BEFORE_LEEWAY`] for clock skew) after now, or `exp - iat`
    /// exceeds it.
    #[error(
        "token lifetime too long: exp {exp} (Unix seconds) is beyond this node's maximum \
         lifetime of {max_lifetime_secs} s"
    )]
    LifetimeTooLong {
        /// Its `exp` claim.
        exp: u64,
        /// The node's maximum lifetime, in seconds.
        max_lifetime_secs: u64,
    },
    /// Issuing only: the lifetime is zero or above [`MAX_TTL`].
    #[error("token lifetime {ttl:?} outside 1s..={MAX_TTL:?}")]
    BadTtl {
        /// The lifetime asked for.
        ttl: Duration,
    },
}

/// Why a key file could not be used. An operator fault; nothing was started.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum KeyError {
    /// The file could not be read or holds no PEM item of the expected kind.
    #[error("{path}: {source} (expected a PEM {expected})")]
    Pem {
        /// The file.
        path: PathBuf,
        /// `PUBLIC KEY` or `PRIVATE KEY`.
        expected: &'static str,
        /// Why.
        source: rustls::pki_types::pem::Error,
    },
    /// The key is not an Ed25519 key ring accepts.
    #[error("{path}: not an Ed25519 key")]
    NotEd25519 {
        /// The file.
        path: PathBuf,
    },
    /// A key could not be generated.
    #[error("key generation failed: {0}")]
    Generate(#[from] rcgen::Error),
    /// A key file could not be written.
    #[error(transparent)]
    Write(#[from] meshkit_net::certs::CertsError),
}

/// The claims of a token.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claims {
    /// Who the token speaks for.
    pub sub: String,
    /// Space-separated scopes.
    #[serde(default)]
    pub scope: String,
    /// Issued at, Unix seconds (informational).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub iat: Option<u64>,
    /// Not before, Unix seconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nbf: Option<u64>,
    /// Expiry, Unix seconds.
    pub exp: u64,
}

#[derive(Serialize, Deserialize)]
struct Header {
    alg: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    typ: Option<String>,
    #[serde(default, skip_serializing)]
    crit: Option<serde_json::Value>,
}

/// What a verified token establishes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VerifiedToken {
    /// Its subject.
    pub subject: String,
    /// Its scopes.
    pub scopes: Permissions,
    /// Its expiry.
    pub expires: SystemTime,
}

fn unix_secs(t: SystemTime) -> u64 {
    // Times before 1970 count as 0: nothing MeshKit dates lies there.
    t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

fn check_subject(subject: &str) -> Result<(), TokenError> {
    let allowed = |c: char| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '@' | ':' | '-');
    if subject.is_empty() || subject.len() > MAX_SUBJECT_BYTES || !subject.chars().all(allowed) {
        return Err(TokenError::BadSubject);
    }
    Ok(())
}

/// The private key that signs tokens (held by whoever issues them, never by a node).
#[derive(Debug)]
pub struct TokenSigningKey {
    key: Ed25519KeyPair,
}

impl TokenSigningKey {
    /// A fresh key (for tests and tools; files come from [`write_signing_key`]).
    pub fn generate() -> Result<Self, KeyError> {
        let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ED25519)?;
        // rcgen's ring backend writes PKCS#8 that ring reads back.
        Ok(Self::from_pkcs8(&key.serialize_der()).expect("ring reads its own Ed25519 PKCS#8"))
    }

    /// Reads a PKCS#8 PEM Ed25519 private key.
    pub fn from_pem_file(path: &Path) -> Result<Self, KeyError> {
        let der = PrivatePkcs8KeyDer::from_pem_file(path).map_err(|source| KeyError::Pem {
            path: path.to_owned(),
            expected: "PRIVATE KEY",
            source,
        })?;
        Self::from_pkcs8(der.secret_pkcs8_der()).ok_or_else(|| KeyError::NotEd25519 {
            path: path.to_owned(),
        })
    }

    fn from_pkcs8(der: &[u8]) -> Option<Self> {
        // `maybe_unchecked` also takes the v1 PKCS#8 files openssl writes (no public key inside).
        Ed25519KeyPair::from_pkcs8_maybe_unchecked(der)
            .ok()
            .map(|key| Self { key })
    }

    /// The verifier for tokens this key signs.
    pub fn verifier(&self) -> TokenVerifier {
        let mut public = [0; ED25519_PUBLIC_KEY_BYTES];
        public.copy_from_slice(self.key.public_key().as_ref());
        TokenVerifier {
            public,
            max_lifetime: DEFAULT_MAX_LIFETIME,
        }
    }

    /// Signs a token for `subject` holding `scopes`, valid from `now` for `ttl`.
    pub fn issue(
        &self,
        subject: &str,
        scopes: &Permissions,
        now: SystemTime,
        ttl: Duration,
    ) -> Result<String, TokenError> {
        check_subject(subject)?;
        if ttl.is_zero() || ttl > MAX_TTL {
            return Err(TokenError::BadTtl { ttl });
        }
        let iat = unix_secs(now);
        let claims = Claims {
            sub: subject.to_owned(),
            scope: scopes.to_claim(),
            iat: Some(iat),
            nbf: None,
            exp: iat.saturating_add(ttl.as_secs().max(1)),
        };
        Ok(self.sign_claims(&claims))
    }

    /// Signs arbitrary claims, unchecked (tests make expired and odd tokens with it).
    pub(crate) fn sign_claims(&self, claims: &Claims) -> String {
        let header = Header {
            alg: ALG.to_owned(),
            typ: Some("JWT".to_owned()),
            crit: None,
        };
        // Serializing these plain structs to JSON cannot fail.
        let header = serde_json::to_vec(&header).expect("a header serializes");
        let claims = serde_json::to_vec(claims).expect("claims serialize");
        let signing_input = format!(
            "{}.{}",
            URL_SAFE_NO_PAD.encode(header),
            URL_SAFE_NO_PAD.encode(claims)
        );
        let signature = self.key.sign(signing_input.as_bytes());
        format!(
            "{signing_input}.{}",
            URL_SAFE_NO_PAD.encode(signature.as_ref())
        )
    }
}

/// The public key a node verifies tokens with (`[access] token_key`), and the longest token
/// lifetime it accepts.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TokenVerifier {
    public: [u8; ED25519_PUBLIC_KEY_BYTES],
    max_lifetime: Duration,
}

impl TokenVerifier {
    /// Reads a SubjectPublicKeyInfo PEM (`PUBLIC KEY`) holding an Ed25519 key.
    pub fn from_pem_file(path: &Path) -> Result<Self, KeyError> {
        let der = SubjectPublicKeyInfoDer::from_pem_file(path).map_err(|source| KeyError::Pem {
            path: path.to_owned(),
            expected: "PUBLIC KEY",
            source,
        })?;
        Self::from_spki_der(der.as_ref()).ok_or_else(|| KeyError::NotEd25519 {
            path: path.to_owned(),
        })
    }

    fn from_spki_der(der: &[u8]) -> Option<Self> {
        let key = der.strip_prefix(&ED25519_SPKI_PREFIX)?;
        Some(Self {
            public: key.try_into().ok()?,
            max_lifetime: DEFAULT_MAX_LIFETIME,
        })
    }

    /// The same key, accepting tokens that live at most `max_lifetime` (default
    /// [`DEFAULT_MAX_LIFETIME`]; the configuration keeps it within [`MAX_LIFETIME_RANGE`]).
    pub fn with_max_lifetime(mut self, max_lifetime: Duration) -> Self {
        self.max_lifetime = max_lifetime;
        self
    }

    /// The longest lifetime accepted.
    pub fn max_lifetime(&self) -> Duration {
        self.max_lifetime
    }

    /// Verifies `token` at time `now`: structure, header, signature (before any claim is
    /// read), then expiry, subject and scopes.
    pub fn verify(&self, token: &str, now: SystemTime) -> Result<VerifiedToken, TokenError> {
        if token.len() > MAX_TOKEN_BYTES {
            return Err(TokenError::TooLong);
        }
        let mut parts = token.split('.');
        let (Some(header_b64), Some(claims_b64), Some(signature_b64), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(TokenError::Malformed { part: "structure" });
        };
        let decode = |part: &'static str, text: &str| {
            URL_SAFE_NO_PAD
                .decode(text)
                .map_err(|_| TokenError::Malformed { part })
        };
        let header: Header = serde_json::from_slice(&decode("header", header_b64)?)
            .map_err(|_| TokenError::Malformed { part: "header" })?;
        if header.alg != ALG || header.crit.is_some() {
            return Err(TokenError::UnsupportedHeader);
        }
        let signature = decode("signature", signature_b64)?;
        let signing_input_len = header_b64.len() + 1 + claims_b64.len();
        // The signed bytes are the token's own text up to the second dot.
        let signing_input = token
            .get(..signing_input_len)
            .ok_or(TokenError::Malformed { part: "structure" })?;
        UnparsedPublicKey::new(&ED25519, &self.public)
            .verify(signing_input.as_bytes(), &signature)
            .map_err(|_| TokenError::BadSignature)?;
        let claims: Claims = serde_json::from_slice(&decode("claims", claims_b64)?)
            .map_err(|_| TokenError::Malformed { part: "claims" })?;
        let now_secs = unix_secs(now);
        if now_secs >= claims.exp {
            return Err(TokenError::Expired { exp: claims.exp });
        }
        // The server's own bound on lifetime: `exp` no further ahead than the cap (with the
        // clock-skew slack `nbf` gets, for a token issued on a host whose clock runs ahead),
        // and no more than the cap after the token's own `iat`.
        let max_lifetime_secs = self.max_lifetime.as_secs();
        let latest_exp = now_secs
            .saturating_add(max_lifetime_secs)
            .saturating_add(NOT_BEFORE_LEEWAY.as_secs());
        let too_long = claims.exp > latest_exp
            || claims
                .iat
                .is_some_and(|iat| claims.exp.saturating_sub(iat) > max_lifetime_secs);
        if too_long {
            return Err(TokenError::LifetimeTooLong {
                exp: claims.exp,
                max_lifetime_secs,
            });
        }
        if let Some(nbf) = claims.nbf
            && nbf > now_secs.saturating_add(NOT_BEFORE_LEEWAY.as_secs())
        {
            return Err(TokenError::NotYetValid { nbf });
        }
        check_subject(&claims.sub)?;
        let scopes =
            Permissions::from_claim(&claims.scope).map_err(TokenError::UnknownPermission)?;
        Ok(VerifiedToken {
            subject: claims.sub,
            scopes,
            expires: UNIX_EPOCH + Duration::from_secs(claims.exp),
        })
    }
}

/// Where [`write_signing_key`] put the key pair.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SigningKeyFiles {
    /// The private key (mode 0600): give it only to whoever issues tokens.
    pub private: PathBuf,
    /// The public key: every node's `[access] token_key`.
    pub public: PathBuf,
}

/// Generates an Ed25519 key pair and writes `token-signing.key` and `token-signing.pub` into
/// `dir` (which must exist).
pub fn write_signing_key(dir: &Path) -> Result<SigningKeyFiles, KeyError> {
    let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ED25519)?;
    let files = SigningKeyFiles {
        private: dir.join("token-signing.key"),
        public: dir.join("token-signing.pub"),
    };
    meshkit_net::certs::write_file(&files.private, &key.serialize_pem(), true)?;
    meshkit_net::certs::write_file(&files.public, &key.public_key_pem(), false)?;
    Ok(files)
}

#[cfg(test)]
mod tests {
    use super::*;
    use meshkit_api::permission::Permission;

    fn test_key() -> TokenSigningKey {
        TokenSigningKey::generate().unwrap()
    }

    fn t(secs: u64) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(secs)
    }

    const NOW: u64 = 1_800_000_000;

    fn operate() -> Permissions {
        [Permission::Operate].into_iter().collect()
    }

    #[test]
    fn issued_token_verifies_until_it_expires() {
        let key = test_key();
        let token = key
            .issue("alice", &operate(), t(NOW), Duration::from_secs(3600))
            .unwrap();
        let verified = key.verifier().verify(&token, t(NOW + 10)).unwrap();
        assert_eq!(verified.subject, "alice");
        assert_eq!(verified.scopes, operate());
        assert_eq!(verified.expires, t(NOW + 3600));
        assert_eq!(
            key.verifier().verify(&token, t(NOW + 3600)),
            Err(TokenError::Expired { exp: NOW + 3600 })
        );
    }

    #[test]
    fn another_key_or_a_changed_claim_does_not_verify() {
        let key = test_key();
        let token = key
            .issue("alice", &operate(), t(NOW), Duration::from_secs(60))
            .unwrap();
        assert_eq!(
            test_key().verifier().verify(&token, t(NOW)),
            Err(TokenError::BadSignature)
        );
        // Swap the claims for admin ones, keeping the signature.
        let parts: Vec<&str> = token.split('.').collect();
        let forged_claims = Claims {
            sub: "alice".to_owned(),
            scope: "mesh.admin".to_owned(),
            iat: None,
            nbf: None,
            exp: NOW + 60,
        };
        let forged = format!(
            "{}.{}.{}",
            parts[0],
            URL_SAFE_NO_PAD.encode(serde_json::to_vec(&forged_claims).unwrap()),
            parts[2]
        );
        assert_eq!(
            key.verifier().verify(&forged, t(NOW)),
            Err(TokenError::BadSignature)
        );
    }

    #[test]
    fn alg_none_and_hmac_headers_are_refused() {
        let key = test_key();
        let claims =
            URL_SAFE_NO_PAD.encode(br#"{"sub":"eve","scope":"mesh.admin","exp":9999999999}"#);
        for header in [
            r#"{"alg":"none"}"#,
            r#"{"alg":"HS256"}"#,
            r#"{"alg":"EdDSA","crit":["x"]}"#,
        ] {
            let token = format!("{}.{claims}.", URL_SAFE_NO_PAD.encode(header));
            assert_eq!(
                key.verifier().verify(&token, t(NOW)),
                Err(TokenError::UnsupportedHeader),
                "{header}"
            );
        }
    }

    #[test]
    fn garbage_never_panics() {
        let verifier = test_key().verifier();
        let long = "a".repeat(MAX_TOKEN_BYTES + 1);
        for token in [
            "",
            ".",
            "..",
            "...",
            "a.b.c",
            "é.é.é",
            "e30.e30.",
            long.as_str(),
        ] {
            assert!(verifier.verify(token, t(NOW)).is_err(), "{token:?}");
        }
    }

    #[test]
    fn unknown_scopes_bad_subjects_and_future_tokens_are_refused() {
        let key = test_key();
        let claims = |sub: &str, scope: &str, nbf| Claims {
            sub: sub.to_owned(),
            scope: scope.to_owned(),
            iat: None,
            nbf,
            exp: NOW + 60,
        };
        let verify = |c: &Claims| key.verifier().verify(&key.sign_claims(c), t(NOW));
        assert!(matches!(
            verify(&claims("a", "mesh.root", None)),
            Err(TokenError::UnknownPermission(_))
        ));
        assert_eq!(
            verify(&claims("a b", "mesh.observe", None)),
            Err(TokenError::BadSubject)
        );
        assert_eq!(
            verify(&claims("a", "", Some(NOW + 3600))),
            Err(TokenError::NotYetValid { nbf: NOW + 3600 })
        );
        assert!(verify(&claims("a", "", Some(NOW + 30))).is_ok());
    }

    /// Security review: a token with `exp` 10^12 s ahead used to be accepted by any node
    /// (the 90-day cap was only in `meshctl`).
    #[test]
    fn tokens_beyond_the_lifetime_cap_are_refused() {
        let key = test_key();
        let cap = DEFAULT_MAX_LIFETIME.as_secs();
        let claims = |iat, exp| Claims {
            sub: "mallory".to_owned(),
            scope: "mesh.admin".to_owned(),
            iat,
            nbf: None,
            exp,
        };
        let verify = |c: &Claims| key.verifier().verify(&key.sign_claims(c), t(NOW));
        let refused = |exp| {
            Err(TokenError::LifetimeTooLong {
                exp,
                max_lifetime_secs: cap,
            })
        };
        let far = NOW + 1_000_000_000_000;
        assert_eq!(verify(&claims(None, far)), refused(far));
        assert_eq!(verify(&claims(Some(NOW), far)), refused(far));
        assert_eq!(verify(&claims(None, u64::MAX)), refused(u64::MAX));
        // `exp - iat` over the cap, even when `exp` itself is near (a backdated `iat`).
        assert_eq!(
            verify(&claims(Some(NOW - cap), NOW + 60)),
            refused(NOW + 60)
        );
        // At the cap, and a little past it for an issuer whose clock runs ahead: accepted.
        assert!(verify(&claims(Some(NOW), NOW + cap)).is_ok());
        assert!(verify(&claims(None, NOW + cap + 30)).is_ok());
        assert!(verify(&claims(Some(NOW + 30), NOW + 30 + cap)).is_ok());
        // A smaller configured cap refuses what the default takes; `issue` stays within both.
        let hour = key.verifier().with_max_lifetime(Duration::from_secs(3600));
        let day = key
            .issue("alice", &operate(), t(NOW), Duration::from_secs(86_400))
            .unwrap();
        assert!(matches!(
            hour.verify(&day, t(NOW)),
            Err(TokenError::LifetimeTooLong { .. })
        ));
        let ninety_days = key.issue("alice", &operate(), t(NOW), MAX_TTL).unwrap();
        assert!(key.verifier().verify(&ninety_days, t(NOW)).is_ok());
    }

    #[test]
    fn key_files_round_trip() {
        let dir = std::env::temp_dir().join(format!("meshkit-tokens-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let files = write_signing_key(&dir).unwrap();
        let key = TokenSigningKey::from_pem_file(&files.private).unwrap();
        let verifier = TokenVerifier::from_pem_file(&files.public).unwrap();
        assert_eq!(key.verifier(), verifier);
        // The node refuses a private key where it wants the public one, naming what it wants.
        let err = TokenVerifier::from_pem_file(&files.private).unwrap_err();
        assert!(err.to_string().contains("PUBLIC KEY"), "{err}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
