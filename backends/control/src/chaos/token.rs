//! Confirmation tokens: the second step of starting a chaos experiment.
//!
//! `POST /control/chaos/plans` resolves a plan and answers its blast radius with a token; only
//! that token starts the experiment (`POST /control/chaos/experiments`). A token is
//!
//! ```text
//! mkc1.<base64url(claims JSON)>.<base64url(HMAC-SHA256(secret, "mkc1." claims))>
//! ```
//!
//! with claims `{"p": plan hash, "r": radius hash, "c": caller, "x": expiry (Unix ms),
//! "n": nonce}`. The secret is 32 bytes from the operating system's generator
//! ([`ring::rand::SystemRandom`]), drawn when the node starts and never written anywhere: a
//! token is good on the node that issued it, until it expires (`[chaos] token_ttl`, default
//! [`TOKEN_LIFETIME`]) or the node restarts, and once ([`Confirmations::redeem`] remembers used nonces until their expiry).
//!
//! What each binding stops:
//!
//! * **plan hash** (SHA-256 of the plan's canonical JSON): a plan changed after its radius
//!   was shown (a longer duration, another kind) does not start;
//! * **radius hash**: checked by the caller against the radius resolved again at start, so the
//!   nodes that are hit are the nodes that were shown (roles move; members come and go);
//! * **caller** (`<auth>:<name>`, so a token subject cannot pose as a certificate name): a
//!   token seen in a log or a shell history is useless to anyone else;
//! * **expiry and nonce**: a confirmation is a decision about the mesh as it was moments ago
//!   (a minute by default), made once.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::Mutex;
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use ring::hmac;
use ring::rand::{SecureRandom, SystemRandom};
use serde::{Deserialize, Serialize};
use thiserror::Error;

/// How long a confirmation token is accepted after it was issued, unless `[chaos] token_ttl`
/// says otherwise.
pub const TOKEN_LIFETIME: Duration = meshkit_runtime::chaos_host::DEFAULT_TOKEN_TTL;
/// Most used tokens remembered at once (each until it expires). Past it, redemptions are
/// refused until some expire: at [`TOKEN_LIFETIME`] that is 68 starts per second.
pub const MAX_REMEMBERED_TOKENS: usize = 4096;
/// Longest token text read, in bytes (a real one is about 400).
pub const MAX_TOKEN_TEXT: usize = 2048;

const PREFIX: &str = "mkc1.";

/// SHA-256 of `bytes`, lower-case hex.
pub fn sha256_hex(bytes: &[u8]) -> String {
    let digest = ring::digest::digest(&ring::digest::SHA256, bytes);
    hex(digest.as_ref())
}

fn hex(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        // Writing to a String cannot fail.
        let _ = write!(out, "{b:02x}");
    }
    out
}

/// What a token binds.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claims {
    /// The plan's hash ([`sha256_hex`] of its canonical JSON).
    #[serde(rename = "p")]
    pub plan_hash: String,
    /// The radius's hash, as shown.
    #[serde(rename = "r")]
    pub radius_hash: String,
    /// `<auth>:<name>` of the caller it was issued to.
    #[serde(rename = "c")]
    pub caller: String,
    /// Expiry, Unix milliseconds.
    #[serde(rename = "x")]
    pub expires_unix_ms: u64,
    /// A random nonce, hex: what makes the token single use.
    #[serde(rename = "n")]
    pub nonce: String,
}

/// Why a token was refused. Always the caller's fault; nothing started, and a refused token
/// is not used up (except by [`TokenRefusal::Replayed`], which it already was).
#[derive(Clone, Debug, Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum TokenRefusal {
    /// Not the shape of a token (400).
    #[error(
        "the confirmation token is malformed ({0}): pass the `token` that POST /control/chaos/plans returned"
    )]
    Malformed(&'static str),
    /// A token this node did not issue, or one altered after it was (403).
    #[error(
        "the confirmation token was not issued by this node (its signature does not verify): \
         start the plan on the node that planned it, before that node restarts"
    )]
    BadSignature,
    /// Issued to someone else (403).
    #[error("the confirmation token was issued to {issued_to}, not to {caller}")]
    OtherCaller {
        /// Whom it names.
        issued_to: String,
        /// Who presented it.
        caller: String,
    },
    /// The plan sent is not the plan planned (400).
    #[error(
        "the plan differs from the plan the confirmation token was issued for (hash {presented} \
         vs {planned}): plan it again to see its radius"
    )]
    AlteredPlan {
        /// The hash of the plan sent.
        presented: String,
        /// The hash in the token.
        planned: String,
    },
    /// Too late (403).
    #[error("the confirmation token expired {ago_ms} ms ago: plan again")]
    Expired {
        /// How long ago.
        ago_ms: u64,
    },
    /// Already used once (403).
    #[error(
        "the confirmation token was already used: each token starts one experiment; plan again"
    )]
    Replayed,
    /// Too many tokens redeemed within one token lifetime (503; nothing wrong with this one,
    /// try again shortly).
    #[error(
        "more than {MAX_REMEMBERED_TOKENS} experiments started within one token lifetime ([chaos] token_ttl): try again when some tokens expire"
    )]
    Busy,
}

impl TokenRefusal {
    /// The short reason, for the audit log and error bodies.
    pub fn reason(&self) -> &'static str {
        match self {
            Self::Malformed(_) => "token-malformed",
            Self::BadSignature => "token-bad-signature",
            Self::OtherCaller { .. } => "token-other-caller",
            Self::AlteredPlan { .. } => "token-altered-plan",
            Self::Expired { .. } => "token-expired",
            Self::Replayed => "token-replayed",
            Self::Busy => "token-busy",
        }
    }
}

/// The issuer and redeemer of one node's confirmation tokens.
pub struct Confirmations {
    key: hmac::Key,
    rng: SystemRandom,
    lifetime: Duration,
    /// Used nonces and their expiry: redeemed once, forgotten when they could no longer be.
    used: Mutex<BTreeMap<String, u64>>,
}

impl std::fmt::Debug for Confirmations {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Confirmations")
            .field("lifetime", &self.lifetime)
            .finish_non_exhaustive()
    }
}

/// The operating system's generator failed: nothing can be issued safely. A host fault.
#[derive(Clone, Copy, Debug, Error, PartialEq, Eq)]
#[error("the system random generator failed: no confirmation token can be issued")]
pub struct RandomFailed;

impl Confirmations {
    /// A fresh secret from the system generator, tokens living [`TOKEN_LIFETIME`].
    pub fn new() -> Result<Self, RandomFailed> {
        Self::with_lifetime(TOKEN_LIFETIME)
    }

    /// The same with another lifetime (`[chaos] token_ttl`).
    pub fn with_lifetime(lifetime: Duration) -> Result<Self, RandomFailed> {
        let rng = SystemRandom::new();
        let key = hmac::Key::generate(hmac::HMAC_SHA256, &rng).map_err(|_| RandomFailed)?;
        Ok(Self {
            key,
            rng,
            lifetime,
            used: Mutex::default(),
        })
    }

    /// A token binding `plan_hash`, `radius_hash` and `caller`, good until `now_ms` plus the
    /// lifetime; returns it with its expiry.
    pub fn issue(
        &self,
        plan_hash: &str,
        radius_hash: &str,
        caller: &str,
        now_ms: u64,
    ) -> Result<(String, u64), RandomFailed> {
        let mut nonce = [0u8; 16];
        self.rng.fill(&mut nonce).map_err(|_| RandomFailed)?;
        let expires =
            now_ms.saturating_add(u64::try_from(self.lifetime.as_millis()).unwrap_or(u64::MAX));
        let claims = Claims {
            plan_hash: plan_hash.to_owned(),
            radius_hash: radius_hash.to_owned(),
            caller: caller.to_owned(),
            expires_unix_ms: expires,
            nonce: hex(&nonce),
        };
        // A struct of strings and a number: serializing cannot fail.
        let json = serde_json::to_vec(&claims).unwrap_or_default();
        let signed = format!("{PREFIX}{}", URL_SAFE_NO_PAD.encode(json));
        let tag = hmac::sign(&self.key, signed.as_bytes());
        Ok((
            format!("{signed}.{}", URL_SAFE_NO_PAD.encode(tag.as_ref())),
            expires,
        ))
    }

    /// Checks `token` for `caller` starting the plan of hash `plan_hash` at `now_ms`, and uses
    /// it up. The claims come back so the caller can hold the radius to `radius_hash`.
    pub fn redeem(
        &self,
        token: &str,
        plan_hash: &str,
        caller: &str,
        now_ms: u64,
    ) -> Result<Claims, TokenRefusal> {
        if token.len() > MAX_TOKEN_TEXT {
            return Err(TokenRefusal::Malformed("too long"));
        }
        let rest = token
            .strip_prefix(PREFIX)
            .ok_or(TokenRefusal::Malformed("no mkc1. prefix"))?;
        let (claims_text, tag_text) = rest
            .split_once('.')
            .ok_or(TokenRefusal::Malformed("no signature part"))?;
        let tag = URL_SAFE_NO_PAD
            .decode(tag_text)
            .map_err(|_| TokenRefusal::Malformed("the signature is not base64url"))?;
        let signed = &token[..PREFIX.len() + claims_text.len()];
        hmac::verify(&self.key, signed.as_bytes(), &tag).map_err(|_| TokenRefusal::BadSignature)?;
        let json = URL_SAFE_NO_PAD
            .decode(claims_text)
            .map_err(|_| TokenRefusal::Malformed("the claims are not base64url"))?;
        // Signed by this node, so well-formed unless the format changed under it.
        let claims: Claims = serde_json::from_slice(&json)
            .map_err(|_| TokenRefusal::Malformed("the claims are not JSON"))?;
        if claims.caller != caller {
            return Err(TokenRefusal::OtherCaller {
                issued_to: claims.caller,
                caller: caller.to_owned(),
            });
        }
        if claims.plan_hash != plan_hash {
            return Err(TokenRefusal::AlteredPlan {
                presented: plan_hash.to_owned(),
                planned: claims.plan_hash,
            });
        }
        if now_ms >= claims.expires_unix_ms {
            return Err(TokenRefusal::Expired {
                ago_ms: now_ms - claims.expires_unix_ms,
            });
        }
        // A poisoned lock only means another redemption panicked mid-insert; the map is whole.
        let mut used = self.used.lock().unwrap_or_else(|e| e.into_inner());
        used.retain(|_, expiry| *expiry > now_ms);
        if used.contains_key(&claims.nonce) {
            return Err(TokenRefusal::Replayed);
        }
        if used.len() >= MAX_REMEMBERED_TOKENS {
            return Err(TokenRefusal::Busy);
        }
        used.insert(claims.nonce.clone(), claims.expires_unix_ms);
        Ok(claims)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: u64 = 1_800_000_000_000;

    #[test]
    fn a_token_starts_once_for_its_caller_and_plan() {
        let c = Confirmations::new().unwrap();
        let (token, expires) = c.issue("plan", "radius", "token:alice", NOW).unwrap();
        assert_eq!(expires, NOW + 60_000);
        assert_eq!(
            c.redeem(&token, "plan", "token:mallory", NOW),
            Err(TokenRefusal::OtherCaller {
                issued_to: "token:alice".into(),
                caller: "token:mallory".into()
            })
        );
        assert!(matches!(
            c.redeem(&token, "other plan", "token:alice", NOW),
            Err(TokenRefusal::AlteredPlan { .. })
        ));
        // The refusals above did not use it up.
        let claims = c.redeem(&token, "plan", "token:alice", NOW + 1).unwrap();
        assert_eq!(claims.radius_hash, "radius");
        assert_eq!(
            c.redeem(&token, "plan", "token:alice", NOW + 2),
            Err(TokenRefusal::Replayed)
        );
    }

    #[test]
    fn expired_forged_and_foreign_tokens_are_refused() {
        let c = Confirmations::new().unwrap();
        let (token, _) = c.issue("plan", "radius", "token:alice", NOW).unwrap();
        assert_eq!(
            c.redeem(&token, "plan", "token:alice", NOW + 60_005),
            Err(TokenRefusal::Expired { ago_ms: 5 })
        );
        // Another node's secret.
        let other = Confirmations::new().unwrap();
        assert_eq!(
            other.redeem(&token, "plan", "token:alice", NOW),
            Err(TokenRefusal::BadSignature)
        );
        // Claims rewritten (a longer expiry, another caller) under the old signature.
        let (_, tag) = token.rsplit_once('.').unwrap();
        let forged_claims = Claims {
            plan_hash: "plan".into(),
            radius_hash: "radius".into(),
            caller: "token:mallory".into(),
            expires_unix_ms: u64::MAX,
            nonce: "00".into(),
        };
        let forged = format!(
            "{PREFIX}{}.{tag}",
            URL_SAFE_NO_PAD.encode(serde_json::to_vec(&forged_claims).unwrap())
        );
        assert_eq!(
            c.redeem(&forged, "plan", "token:mallory", NOW),
            Err(TokenRefusal::BadSignature)
        );
        for bad in ["", "mkc1.", "mkc1.abc", "jwt.abc.def", "mkc1.abc.!!"] {
            assert!(
                matches!(
                    c.redeem(bad, "plan", "token:alice", NOW),
                    Err(TokenRefusal::Malformed(_))
                ),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn used_tokens_are_forgotten_once_expired() {
        let c = Confirmations::with_lifetime(Duration::from_millis(10)).unwrap();
        let (a, _) = c.issue("p", "r", "x", NOW).unwrap();
        c.redeem(&a, "p", "x", NOW).unwrap();
        let (b, _) = c.issue("p", "r", "x", NOW + 20).unwrap();
        c.redeem(&b, "p", "x", NOW + 20).unwrap();
        let used = c.used.lock().unwrap();
        assert_eq!(used.len(), 1, "the first nonce expired and was dropped");
    }
}
