//! Authorization by scope for the control API (docs/design.md §4; the table is in docs/hosting.md,
//! "Scopes").
//!
//! Every request passes [`enforce`], a middleware layer that [`AccessControl::protect`] puts
//! around the whole router:
//!
//! 1. The route's requirement comes from [`ROUTE_PERMISSIONS`](meshkit_api::routes::ROUTE_PERMISSIONS), the one table of which route needs
//!    which scope. **A route missing from the table needs `mesh.admin`**: a new route fails
//!    closed until someone decides its scope. So does an unknown path (an anonymous caller gets
//!    401, never a 404 that would map the API).
//! 2. The caller's identity comes from a verified credential only:
//!    * an `Authorization: Bearer` token (see [`crate::tokens`]) signed by the key the node is
//!      configured with; its scopes are the token's own;
//!    * otherwise the client certificate the TLS layer verified against the CA
//!      ([`ClientCertificate`]); its name (see [`certificate_identity`]) is looked up in the
//!      node's `[access.identities]`. A `node-<id>` certificate not listed there gets
//!      `[access] nodes` (default `mesh.observe`). Any other name not listed gets no scope.
//!
//!    Nothing else a client sends (other headers, the path, the query) can name an identity.
//!    When a token is presented it alone counts, valid or not, so a bad token is never papered
//!    over by a certificate.
//! 3. No credential, or a bad one: 401, `WWW-Authenticate: Bearer`, and a JSON body
//!    `{"error": .., "required_scope": ..}`. An identity without the scope: 403 with
//!    `{"error": .., "required_scope": .., "identity": .., "granted_scopes": [..]}`.
//! 4. Calls that need `mesh.operate` or `mesh.admin` are written to the audit log
//!    ([`super::audit`]) when allowed, and when refused to a verified identity (403, within a
//!    budget). Authorized requests carry their [`Principal`] as a request extension for
//!    handlers.
//! 5. Every refusal is counted by reason (`mesh_control_refusals_total{reason}`, see
//!    [`RefusalReason`]). A refusal without a verified identity (401) never reaches the audit
//!    file, so anonymous traffic cannot rotate operator records out of it; it is logged at
//!    `warn` at most [`REFUSAL_LOG_BURST`] times per [`REFUSAL_LOG_WINDOW`], each line saying how
//!    many were left out before it.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use axum::Router;
use axum::extract::{Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use thiserror::Error;

use super::audit::{AuditLog, AuditRecord, AuthMethod, DEFAULT_AUDIT_MAX_BYTES, Outcome};
use crate::tokens::{
    DEFAULT_MAX_LIFETIME, KeyError, MAX_LIFETIME_RANGE, TokenError, TokenVerifier,
};
pub use meshkit_api::json::DeniedBody;
use meshkit_api::permission::{EXPECTED_SCOPES, Permission, Permissions};
use meshkit_api::routes::{Requirement, requirement};
use meshkit_net::clock::{SystemWallClock, WallClock};
use meshkit_net::log_limit::LogLimit;
use meshkit_net::tls::ClientCertificate;

/// Refusals without a verified identity logged per [`REFUSAL_LOG_WINDOW`]; the rest are only
/// counted.
pub const REFUSAL_LOG_BURST: u32 = 10;
/// The window of [`REFUSAL_LOG_BURST`].
pub const REFUSAL_LOG_WINDOW: std::time::Duration = std::time::Duration::from_secs(60);

/// Why a request was refused: the bounded `reason` label of `mesh_control_refusals_total`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[non_exhaustive]
pub enum RefusalReason {
    /// 401: neither a token nor a client certificate.
    NoCredentials,
    /// 401: a token or certificate that does not verify or names nobody, or an unsupported
    /// `Authorization` header.
    InvalidCredentials,
    /// 403: a verified identity without the scope.
    Forbidden,
}

impl RefusalReason {
    /// Every reason, in label order.
    pub const ALL: [Self; 3] = [
        Self::NoCredentials,
        Self::InvalidCredentials,
        Self::Forbidden,
    ];

    /// The metric label: `no_credentials`, `invalid_credentials` or `forbidden`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::NoCredentials => "no_credentials",
            Self::InvalidCredentials => "invalid_credentials",
            Self::Forbidden => "forbidden",
        }
    }

    fn index(self) -> usize {
        match self {
            Self::NoCredentials => 0,
            Self::InvalidCredentials => 1,
            Self::Forbidden => 2,
        }
    }
}

impl std::fmt::Display for RefusalReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.pad(self.as_str())
    }
}

/// Who made a request, as [`enforce`] established it; a request extension for handlers.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Principal {
    /// The certificate's name or the token's subject.
    pub name: String,
    /// How it was authenticated.
    pub auth: AuthMethod,
    /// What it may do.
    pub scopes: Permissions,
}

/// Why a request carries no usable identity (a 401). Always the client's fault; nothing changed.
#[derive(Clone, Debug, Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum AuthError {
    /// Neither a token nor a client certificate.
    #[error("no credentials: present a client certificate or an Authorization: Bearer token")]
    NoCredentials,
    /// An `Authorization` header of another scheme, or several of them.
    #[error("unsupported Authorization header: send exactly one, of the form `Bearer <token>`")]
    UnsupportedAuthorization,
    /// A token, but the node has no `[access] token_key` to verify it with.
    #[error("this node accepts no tokens (no [access] token_key configured)")]
    TokensNotAccepted,
    /// The token was refused.
    #[error(transparent)]
    Token(#[from] TokenError),
    /// The client certificate names no identity, or several.
    #[error(
        "the client certificate names no identity: it needs exactly one DNS subject alternative \
         name, or none and a common name"
    )]
    CertificateIdentity,
}

/// The identity a CA-verified client certificate names: its one DNS subject alternative name,
/// or, when it has none, its subject common name. A certificate with several DNS names (or none
/// and no common name) names no identity: picking one of them would be a guess.
pub fn certificate_identity(der: &[u8]) -> Option<String> {
    use x509_parser::extensions::GeneralName;
    let (_, cert) = x509_parser::parse_x509_certificate(der).ok()?;
    let san = cert.subject_alternative_name().ok()?;
    let mut dns = san.iter().flat_map(|san| {
        san.value
            .general_names
            .iter()
            .filter_map(|name| match name {
                GeneralName::DNSName(dns) => Some(*dns),
                _ => None,
            })
    });
    match (dns.next(), dns.next()) {
        (Some(name), None) => Some(name.to_owned()),
        (Some(_), Some(_)) => None,
        (None, _) => {
            let mut cns = cert.subject().iter_common_name();
            let cn = cns.next()?.as_str().ok()?.to_owned();
            cns.next().is_none().then_some(cn)
        }
    }
}

pub(crate) fn is_node_name(name: &str) -> bool {
    name.strip_prefix("node-")
        .is_some_and(|id| !id.is_empty() && id.bytes().all(|b| b.is_ascii_digit()))
}

/// The serde form of the `[access]` table of `node.toml` (see `meshkit_node::config`).
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
#[expect(
    missing_docs,
    reason = "meshkit_node::config's module docs describe each key"
)]
pub struct RawAccessConfig {
    pub token_key: Option<PathBuf>,
    pub token_max_lifetime: Option<meshkit::config::HumanDuration>,
    #[serde(default)]
    pub metrics_open: bool,
    pub nodes: Option<Vec<String>>,
    pub audit_log: Option<PathBuf>,
    pub audit_log_max_bytes: Option<u64>,
    #[serde(default)]
    pub identities: BTreeMap<String, Vec<String>>,
}

/// Who may do what: identities to scopes, and what is open. Built from `[access]`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AccessPolicy {
    identities: BTreeMap<String, Permissions>,
    nodes: Permissions,
    metrics_open: bool,
}

impl Default for AccessPolicy {
    /// Node certificates observe; nobody else may do anything; metrics need observe.
    fn default() -> Self {
        Self {
            identities: BTreeMap::new(),
            nodes: [Permission::Observe].into_iter().collect(),
            metrics_open: false,
        }
    }
}

impl AccessPolicy {
    /// Gives `name` (a certificate identity) exactly `scopes`, replacing any default.
    pub fn with_identity(mut self, name: &str, scopes: Permissions) -> Self {
        self.identities.insert(name.to_owned(), scopes);
        self
    }

    /// What `node-<id>` certificates not listed by name get.
    pub fn with_node_scopes(mut self, scopes: Permissions) -> Self {
        self.nodes = scopes;
        self
    }

    /// Whether `/metrics` is open.
    pub fn with_metrics_open(mut self, open: bool) -> Self {
        self.metrics_open = open;
        self
    }

    /// The scopes of a certificate identity: its entry, else the node default for `node-<id>`,
    /// else none.
    pub fn certificate_scopes(&self, name: &str) -> Permissions {
        match self.identities.get(name) {
            Some(scopes) => scopes.clone(),
            None if is_node_name(name) => self.nodes.clone(),
            None => Permissions::none(),
        }
    }
}

/// The validated `[access]` table: the policy, and the files it names.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AccessConfig {
    policy: AccessPolicy,
    token_key: Option<PathBuf>,
    token_max_lifetime: std::time::Duration,
    audit_log: Option<PathBuf>,
    audit_log_max_bytes: u64,
}

/// Largest allowed `audit_log_max_bytes` (1 TiB).
pub const MAX_AUDIT_MAX_BYTES: u64 = 1 << 40;
/// Longest identity name in `[access.identities]`, in bytes (a DNS name's limit).
pub const MAX_IDENTITY_BYTES: usize = 253;

/// Why an `[access]` table was refused: an operator fault; nothing was started. The node's
/// configuration (`meshkit_node::config`) reports it as its own `Invalid` key, word for word.
#[derive(Debug, Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum AccessConfigError {
    /// A value of the right type that is not allowed.
    #[error("key `{key}` = {value:?}: expected {expected}")]
    Invalid {
        /// The key, as written in the file (`access.nodes[1]` for the second entry).
        key: String,
        /// The value given.
        value: String,
        /// What is allowed.
        expected: &'static str,
    },
}

fn scope_list(key: &str, names: &[String]) -> Result<Permissions, AccessConfigError> {
    names
        .iter()
        .enumerate()
        .map(|(i, name)| {
            name.parse().map_err(|_| AccessConfigError::Invalid {
                key: format!("{key}[{i}]"),
                value: name.clone(),
                expected: EXPECTED_SCOPES,
            })
        })
        .collect()
}

impl TryFrom<RawAccessConfig> for AccessConfig {
    type Error = AccessConfigError;

    fn try_from(raw: RawAccessConfig) -> Result<Self, AccessConfigError> {
        let mut policy = AccessPolicy::default().with_metrics_open(raw.metrics_open);
        if let Some(nodes) = &raw.nodes {
            policy = policy.with_node_scopes(scope_list("access.nodes", nodes)?);
        }
        for (name, scopes) in &raw.identities {
            let valid = |c: char| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_');
            if name.is_empty() || name.len() > MAX_IDENTITY_BYTES || !name.chars().all(valid) {
                return Err(AccessConfigError::Invalid {
                    key: format!("access.identities.{name:?}"),
                    value: name.clone(),
                    expected: "a certificate name: 1 to 253 characters of A-Z a-z 0-9 . - _",
                });
            }
            let scopes = scope_list(&format!("access.identities.{name:?}"), scopes)?;
            policy = policy.with_identity(name, scopes);
        }
        let audit_log_max_bytes = match raw.audit_log_max_bytes {
            None => DEFAULT_AUDIT_MAX_BYTES,
            Some(_) if raw.audit_log.is_none() => {
                return Err(AccessConfigError::Invalid {
                    key: "access.audit_log_max_bytes".to_owned(),
                    value: String::new(),
                    expected: "to be set only together with `access.audit_log`",
                });
            }
            Some(n) if (super::audit::MIN_AUDIT_MAX_BYTES..=MAX_AUDIT_MAX_BYTES).contains(&n) => n,
            Some(n) => {
                return Err(AccessConfigError::Invalid {
                    key: "access.audit_log_max_bytes".to_owned(),
                    value: n.to_string(),
                    expected: "a size in bytes from 16384 (16 KiB) to 1099511627776 (1 TiB)",
                });
            }
        };
        let token_max_lifetime = match raw.token_max_lifetime.map(|d| d.0) {
            None => DEFAULT_MAX_LIFETIME,
            Some(d) if MAX_LIFETIME_RANGE.contains(&d) => d,
            Some(d) => {
                return Err(AccessConfigError::Invalid {
                    key: "access.token_max_lifetime".to_owned(),
                    value: format!("{d:?}"),
                    expected: "a duration from 1m to 8784h (366 days); the default is 2160h (90 days)",
                });
            }
        };
        Ok(Self {
            policy,
            token_key: raw.token_key,
            token_max_lifetime,
            audit_log: raw.audit_log,
            audit_log_max_bytes,
        })
    }
}

impl Default for AccessConfig {
    /// What a `node.toml` without `[access]` gets: [`AccessPolicy::default`], no token key, no
    /// audit file.
    fn default() -> Self {
        Self {
            policy: AccessPolicy::default(),
            token_key: None,
            token_max_lifetime: DEFAULT_MAX_LIFETIME,
            audit_log: None,
            audit_log_max_bytes: DEFAULT_AUDIT_MAX_BYTES,
        }
    }
}

impl AccessConfig {
    /// Makes relative file paths relative to `base` (the config file's directory).
    pub fn resolve_paths(raw: &mut RawAccessConfig, base: &Path) {
        for file in [&mut raw.token_key, &mut raw.audit_log]
            .into_iter()
            .flatten()
        {
            if file.is_relative() {
                *file = base.join(&*file);
            }
        }
    }

    /// The policy.
    pub fn policy(&self) -> &AccessPolicy {
        &self.policy
    }

    /// The token verification key file, if tokens are accepted.
    pub fn token_key(&self) -> Option<&Path> {
        self.token_key.as_deref()
    }

    /// Loads the token verification key, if one is configured, with the configured maximum
    /// token lifetime.
    pub fn token_verifier(&self) -> Result<Option<TokenVerifier>, KeyError> {
        self.token_key
            .as_deref()
            .map(|path| {
                TokenVerifier::from_pem_file(path)
                    .map(|v| v.with_max_lifetime(self.token_max_lifetime))
            })
            .transpose()
    }

    /// The longest token lifetime accepted (`token_max_lifetime`).
    pub fn token_max_lifetime(&self) -> std::time::Duration {
        self.token_max_lifetime
    }

    /// The audit log file and its rotation size, if one is configured.
    pub fn audit_log(&self) -> Option<(&Path, u64)> {
        self.audit_log
            .as_deref()
            .map(|path| (path, self.audit_log_max_bytes))
    }
}

struct Inner {
    policy: AccessPolicy,
    tokens: Option<TokenVerifier>,
    audit: AuditLog,
    clock: Arc<dyn WallClock>,
    /// Refusals by [`RefusalReason`].
    refusals: [AtomicU64; 3],
    /// The sample of refusals without a verified identity that is logged.
    refusal_log: LogLimit,
}

/// The access-control state the middleware runs with; cheap to clone.
#[derive(Clone)]
pub struct AccessControl(Arc<Inner>);

impl std::fmt::Debug for AccessControl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AccessControl")
            .field("policy", &self.0.policy)
            .field("tokens", &self.0.tokens.is_some())
            .finish_non_exhaustive()
    }
}

impl AccessControl {
    /// Access control with `policy`, tokens verified by `tokens` (none: tokens refused), calls
    /// audited to `audit`, and the system clock for token expiry and audit times.
    pub fn new(policy: AccessPolicy, tokens: Option<TokenVerifier>, audit: AuditLog) -> Self {
        Self::with_clock(policy, tokens, audit, Arc::new(SystemWallClock))
    }

    /// As [`AccessControl::new`], reading the time from `clock`.
    pub fn with_clock(
        policy: AccessPolicy,
        tokens: Option<TokenVerifier>,
        audit: AuditLog,
        clock: Arc<dyn WallClock>,
    ) -> Self {
        Self(Arc::new(Inner {
            policy,
            tokens,
            audit,
            clock,
            refusals: Default::default(),
            refusal_log: LogLimit::new(REFUSAL_LOG_BURST, REFUSAL_LOG_WINDOW),
        }))
    }

    /// Loads the key and starts the audit writer that `config` names.
    pub fn from_config(config: &AccessConfig) -> Result<Self, AccessStartError> {
        let tokens = config.token_verifier()?;
        let audit = match config.audit_log() {
            Some((path, max_bytes)) => AuditLog::start(path, max_bytes)?,
            None => AuditLog::tracing_only(),
        };
        Ok(Self::new(config.policy.clone(), tokens, audit))
    }

    /// `router` with [`enforce`] around every route (and every unmatched path).
    pub fn protect<S: Clone + Send + Sync + 'static>(self, router: Router<S>) -> Router<S> {
        router.layer(axum::middleware::from_fn_with_state(self, enforce))
    }

    /// The audit log.
    pub fn audit(&self) -> &AuditLog {
        &self.0.audit
    }

    /// Who presents the credentials of `request`: `Ok(None)` when there are none.
    pub fn authenticate(
        &self,
        request: &Request,
    ) -> Result<Option<Principal>, (AuthMethod, AuthError)> {
        let mut authorization = request.headers().get_all(header::AUTHORIZATION).iter();
        if let Some(value) = authorization.next() {
            let fail = |e| (AuthMethod::Token, e);
            if authorization.next().is_some() {
                return Err(fail(AuthError::UnsupportedAuthorization));
            }
            let token = value
                .to_str()
                .ok()
                .and_then(|v| v.split_once(' '))
                .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
                .map(|(_, token)| token.trim())
                .ok_or(fail(AuthError::UnsupportedAuthorization))?;
            let verifier = self
                .0
                .tokens
                .as_ref()
                .ok_or(fail(AuthError::TokensNotAccepted))?;
            let verified = verifier
                .verify(token, self.0.clock.now())
                .map_err(|e| fail(AuthError::Token(e)))?;
            return Ok(Some(Principal {
                name: verified.subject,
                auth: AuthMethod::Token,
                scopes: verified.scopes,
            }));
        }
        let Some(ClientCertificate(Some(der))) = request.extensions().get::<ClientCertificate>()
        else {
            return Ok(None);
        };
        let name = certificate_identity(der).ok_or((
            AuthMethod::ClientCertificate,
            AuthError::CertificateIdentity,
        ))?;
        Ok(Some(Principal {
            scopes: self.0.policy.certificate_scopes(&name),
            name,
            auth: AuthMethod::ClientCertificate,
        }))
    }

    /// Requests refused for `reason` since start.
    pub fn refusals(&self, reason: RefusalReason) -> u64 {
        self.0.refusals[reason.index()].load(Ordering::Relaxed)
    }

    fn count_refusal(&self, reason: RefusalReason) {
        self.0.refusals[reason.index()].fetch_add(1, Ordering::Relaxed);
    }
}

impl meshkit_api::metrics::Source for AccessControl {
    /// The access-control families: refusals by reason, audit records written and dropped.
    fn write(&self, families: &mut meshkit_api::metrics::Families<'_, '_>) -> std::fmt::Result {
        use meshkit_api::metrics::catalogue::{
            CONTROL_AUDIT_DROPPED, CONTROL_AUDIT_RECORDS, CONTROL_REFUSALS,
        };
        let audit = &self.0.audit;
        families.counters(
            &CONTROL_REFUSALS,
            RefusalReason::ALL.map(|reason| ([reason.as_str()], self.refusals(reason))),
        )?;
        families.counter(&CONTROL_AUDIT_RECORDS, audit.written())?;
        families.counters(
            &CONTROL_AUDIT_DROPPED,
            [
                (["queue_full"], audit.dropped_queue_full()),
                (["write_failed"], audit.dropped_write_failed()),
                (["refusal_rate"], audit.dropped_refusal_rate()),
            ],
        )
    }
}

/// Why access control could not start. An operator fault; nothing was started.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum AccessStartError {
    /// The token key is unusable.
    #[error("key `access.token_key`: {0}")]
    TokenKey(#[from] KeyError),
    /// The audit log cannot be written.
    #[error("key `access.audit_log`: {0}")]
    Audit(#[from] super::audit::AuditError),
}

fn denied(
    status: StatusCode,
    required: Permission,
    body: DeniedBody,
    bearer_error: Option<&str>,
) -> Response {
    let mut challenge = format!("Bearer realm=\"meshkit\", scope=\"{required}\"");
    if let Some(error) = bearer_error {
        challenge.push_str(&format!(", error=\"{error}\""));
    }
    let mut response = (status, axum::Json(body)).into_response();
    // The challenge is built from fixed ASCII text and a scope name: always a valid value.
    if let Ok(value) = HeaderValue::from_str(&challenge) {
        response
            .headers_mut()
            .insert(header::WWW_AUTHENTICATE, value);
    }
    response
}

/// `path` cut to [`super::audit::MAX_AUDITED_PATH_BYTES`] for logs and error bodies (a client
/// chooses it).
fn cut_path(path: &str) -> &str {
    let mut end = path.len().min(super::audit::MAX_AUDITED_PATH_BYTES);
    while !path.is_char_boundary(end) {
        end -= 1;
    }
    &path[..end]
}

/// The middleware: decides each request by [`ROUTE_PERMISSIONS`](meshkit_api::routes::ROUTE_PERMISSIONS) and the caller's verified identity,
/// audits what needs operate or admin, and passes the rest on with its [`Principal`].
pub async fn enforce(
    State(access): State<AccessControl>,
    mut request: Request,
    next: Next,
) -> Response {
    // The node-to-node relay authenticates like any call and then takes node certificates
    // only; its handler audits what it does (with the relaying node and the original caller).
    let mut node_only = false;
    let required = match requirement(request.method(), request.uri().path()) {
        Requirement::Open => return next.run(request).await,
        Requirement::Metrics if access.0.policy.metrics_open => return next.run(request).await,
        Requirement::Metrics => Permission::Observe,
        Requirement::Permission(scope) => scope,
        Requirement::NodeCertificate => {
            node_only = true;
            Permission::Observe
        }
    };
    let audited = required >= Permission::Operate;
    let method = request.method().clone();
    let path = request.uri().path().to_owned();
    // A refusal without a verified identity: counted, sampled in the log, never audited.
    let unauthenticated = |reason: RefusalReason, auth: AuthMethod, error: &AuthError| {
        access.count_refusal(reason);
        if let Some(suppressed) = access.0.refusal_log.allow() {
            tracing::warn!(
                target: "meshkit_node::audit",
                %reason,
                auth = auth.as_str(),
                %method,
                path = %cut_path(&path),
                scope = %required,
                suppressed,
                "control call refused: {error}"
            );
        }
    };
    let principal = match access.authenticate(&request) {
        Ok(Some(principal)) => principal,
        Ok(None) => {
            let error = AuthError::NoCredentials;
            unauthenticated(RefusalReason::NoCredentials, AuthMethod::None, &error);
            let body = DeniedBody {
                error: error.to_string(),
                required_scope: required.to_string(),
                identity: None,
                granted_scopes: None,
            };
            return denied(StatusCode::UNAUTHORIZED, required, body, None);
        }
        Err((auth, error)) => {
            unauthenticated(RefusalReason::InvalidCredentials, auth, &error);
            let body = DeniedBody {
                error: error.to_string(),
                required_scope: required.to_string(),
                identity: None,
                granted_scopes: None,
            };
            let bearer_error = (auth == AuthMethod::Token).then_some("invalid_token");
            return denied(StatusCode::UNAUTHORIZED, required, body, bearer_error);
        }
    };
    if node_only
        && !(principal.auth == AuthMethod::ClientCertificate && is_node_name(&principal.name))
    {
        access.count_refusal(RefusalReason::Forbidden);
        let mut record = AuditRecord::new(
            access.0.clock.now(),
            Some(&principal.name),
            principal.auth,
            method.as_str(),
            &path,
            Permission::Admin,
            Outcome::Forbidden,
            StatusCode::FORBIDDEN.as_u16(),
        );
        record.chaos = Some(Box::new(super::audit::ChaosAudit {
            action: "relay".to_owned(),
            refused: true,
            reason: Some("not-a-node-certificate".to_owned()),
            ..Default::default()
        }));
        access.0.audit.record_refusal(record);
        let body = DeniedBody {
            error: format!(
                "{} is not a node: {method} {} takes a node-<id> client certificate signed by \
                 the mesh's CA, whatever scopes the caller holds",
                principal.name,
                cut_path(&path)
            ),
            required_scope: "node certificate".to_owned(),
            identity: Some(principal.name.clone()),
            granted_scopes: Some(principal.scopes.iter().map(|s| s.to_string()).collect()),
        };
        return denied(
            StatusCode::FORBIDDEN,
            required,
            body,
            Some("insufficient_scope"),
        );
    }
    if !node_only && !principal.scopes.allows(required) {
        access.count_refusal(RefusalReason::Forbidden);
        if audited {
            access.0.audit.record_refusal(AuditRecord::new(
                access.0.clock.now(),
                Some(&principal.name),
                principal.auth,
                method.as_str(),
                &path,
                required,
                Outcome::Forbidden,
                StatusCode::FORBIDDEN.as_u16(),
            ));
        }
        let body = DeniedBody {
            error: format!(
                "{} holds {}, and {method} {} needs {required}",
                principal.name,
                principal.scopes,
                cut_path(&path)
            ),
            required_scope: required.to_string(),
            identity: Some(principal.name.clone()),
            granted_scopes: Some(principal.scopes.iter().map(|s| s.to_string()).collect()),
        };
        return denied(
            StatusCode::FORBIDDEN,
            required,
            body,
            Some("insufficient_scope"),
        );
    }
    let name = principal.name.clone();
    let auth = principal.auth;
    request.extensions_mut().insert(principal);
    let response = next.run(request).await;
    if !audited {
        return response;
    }
    let record = AuditRecord::new(
        access.0.clock.now(),
        Some(&name),
        auth,
        method.as_str(),
        &path,
        required,
        Outcome::Allowed,
        response.status().as_u16(),
    );
    super::audit::record_response(&access.0.audit, record, response)
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, SystemTime, UNIX_EPOCH};

    use axum::body::Body;
    use axum::routing::{get, post};
    use rustls::pki_types::CertificateDer;
    use rustls::pki_types::pem::PemObject;
    use tower::ServiceExt as _;

    use super::*;
    use crate::tokens::{Claims, TokenSigningKey};
    use meshkit_net::certs::DevCa;

    /// The wall clock of these tests: fixed.
    #[derive(Debug)]
    struct FixedClock(SystemTime);

    impl WallClock for FixedClock {
        fn now(&self) -> SystemTime {
            self.0
        }
    }

    const NOW: u64 = 1_800_000_000;

    fn now() -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(NOW)
    }

    fn scopes(list: &[Permission]) -> Permissions {
        list.iter().copied().collect()
    }

    struct Fixture {
        ca: DevCa,
        key: TokenSigningKey,
        access: AccessControl,
        dir: PathBuf,
    }

    impl Drop for Fixture {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }

    fn fixture(name: &str) -> Fixture {
        fixture_rotating_at(name, DEFAULT_AUDIT_MAX_BYTES)
    }

    fn fixture_rotating_at(name: &str, audit_max_bytes: u64) -> Fixture {
        let dir = std::env::temp_dir().join(format!("meshkit-auth-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let policy = AccessPolicy::default()
            .with_identity("meshctl-admin", scopes(&[Permission::Admin]))
            .with_identity("meshctl-operator", scopes(&[Permission::Operate]))
            .with_identity("meshctl-observer", scopes(&[Permission::Observe]));
        let key = TokenSigningKey::generate().unwrap();
        let audit = AuditLog::start(&dir.join("audit.jsonl"), audit_max_bytes).unwrap();
        let access = AccessControl::with_clock(
            policy,
            Some(key.verifier()),
            audit,
            Arc::new(FixedClock(now())),
        );
        Fixture {
            ca: DevCa::generate("test CA").unwrap(),
            key,
            access,
            dir,
        }
    }

    /// A small router with one route per kind of requirement, behind `access`.
    fn app(access: &AccessControl) -> Router {
        access.clone().protect(
            Router::new()
                .route("/healthz", get(|| async { "ok" }))
                .route("/metrics", get(|| async { "metrics" }))
                .route("/meshkit/peers", get(|| async { "peers" }))
                .route("/control/drain", post(|| async { "drained" }))
                .route("/control/chaos", post(|| async { "chaos" }))
                .route("/control/chaos/relay", post(|| async { "relayed" })),
        )
    }

    /// The chaos relay takes node certificates, whatever their scopes, and nothing else: not an
    /// admin's token, not an admin's certificate. Refusals are audited with their reason.
    #[tokio::test]
    async fn the_chaos_relay_takes_node_certificates_only() {
        let f = fixture("relay");
        let node = Cred::Cert(cert(&f.ca, "node-5"));
        let (status, _) = call(app(&f.access), "POST", "/control/chaos/relay", node).await;
        assert_eq!(
            status,
            StatusCode::OK,
            "a node certificate (observe by default) relays"
        );
        let token = f
            .key
            .issue(
                "alice",
                &scopes(&[Permission::Admin]),
                now(),
                Duration::from_secs(60),
            )
            .unwrap();
        let admin_cert = Cred::Cert(cert(&f.ca, "meshctl-admin"));
        let named_like_a_node = Cred::Cert(cert(&f.ca, "node-x"));
        for cred in [Cred::Bearer(token), admin_cert, named_like_a_node] {
            let (status, response) =
                call(app(&f.access), "POST", "/control/chaos/relay", cred).await;
            assert_eq!(status, StatusCode::FORBIDDEN);
            let body = body(response).await;
            assert_eq!(body.required_scope, "node certificate");
            assert!(body.error.contains("is not a node"), "{}", body.error);
        }
        f.access.audit().flush().await;
        let text = std::fs::read_to_string(f.dir.join("audit.jsonl")).unwrap();
        let refused = text
            .lines()
            .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
            .filter(|l| l["chaos"]["reason"] == "not-a-node-certificate")
            .count();
        assert_eq!(refused, 3, "{text}");
    }

    fn cert(ca: &DevCa, name: &str) -> ClientCertificate {
        let issued = ca.issue_client(name).unwrap();
        let der = CertificateDer::from_pem_slice(issued.cert_pem.as_bytes()).unwrap();
        ClientCertificate(Some(der))
    }

    enum Cred {
        None,
        Cert(ClientCertificate),
        Bearer(String),
    }

    async fn call(app: Router, method: &str, path: &str, cred: Cred) -> (StatusCode, Response) {
        let mut request = Request::builder().method(method).uri(path);
        match cred {
            Cred::None => {}
            Cred::Cert(cert) => request = request.extension(cert),
            Cred::Bearer(token) => {
                request = request.header(header::AUTHORIZATION, format!("Bearer {token}"));
            }
        }
        let response = app
            .oneshot(request.body(Body::empty()).unwrap())
            .await
            .unwrap();
        (response.status(), response)
    }

    async fn body(response: Response) -> DeniedBody {
        let bytes = axum::body::to_bytes(response.into_body(), 64 * 1024)
            .await
            .unwrap();
        serde_json::from_slice(&bytes).unwrap()
    }

    #[tokio::test]
    async fn no_credentials_is_401_with_a_bearer_challenge() {
        let f = fixture("none");
        let (status, response) = call(app(&f.access), "GET", "/meshkit/peers", Cred::None).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED);
        let challenge = response.headers()[header::WWW_AUTHENTICATE]
            .to_str()
            .unwrap();
        assert!(challenge.starts_with("Bearer "), "{challenge}");
        let body = body(response).await;
        assert_eq!(body.required_scope, "mesh.observe");
        assert!(body.error.contains("no credentials"), "{}", body.error);
        // Open routes stay open; metrics are closed unless configured open.
        let (status, _) = call(app(&f.access), "GET", "/healthz", Cred::None).await;
        assert_eq!(status, StatusCode::OK);
        let (status, _) = call(app(&f.access), "GET", "/metrics", Cred::None).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED);
        let open = AccessControl::new(
            AccessPolicy::default().with_metrics_open(true),
            None,
            AuditLog::tracing_only(),
        );
        let (status, _) = call(app(&open), "GET", "/metrics", Cred::None).await;
        assert_eq!(status, StatusCode::OK);
        // An unknown path does not tell an anonymous caller whether it exists.
        let (status, _) = call(app(&f.access), "GET", "/nowhere", Cred::None).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED);
    }

    #[tokio::test]
    async fn forged_expired_and_wrong_key_tokens_are_401() {
        let f = fixture("tokens");
        let admin = scopes(&[Permission::Admin]);
        let good = f
            .key
            .issue("alice", &admin, now(), Duration::from_secs(60))
            .unwrap();
        let expired = f
            .key
            .issue(
                "alice",
                &admin,
                now() - Duration::from_secs(120),
                Duration::from_secs(60),
            )
            .unwrap();
        let other_key = TokenSigningKey::generate()
            .unwrap()
            .issue("alice", &admin, now(), Duration::from_secs(60))
            .unwrap();
        // A token whose claims were edited after signing.
        let parts: Vec<&str> = good.split('.').collect();
        let forged_claims = {
            use base64::Engine as _;
            let claims = Claims {
                sub: "mallory".to_owned(),
                scope: "mesh.admin".to_owned(),
                iat: None,
                nbf: None,
                exp: NOW + 60,
            };
            base64::engine::general_purpose::URL_SAFE_NO_PAD
                .encode(serde_json::to_vec(&claims).unwrap())
        };
        let forged = format!("{}.{forged_claims}.{}", parts[0], parts[2]);
        // Security review: signed by the right key, but living 10^12 s.
        let far = f.key.sign_claims(&Claims {
            sub: "mallory".to_owned(),
            scope: "mesh.admin".to_owned(),
            iat: Some(NOW),
            nbf: None,
            exp: NOW + 1_000_000_000_000,
        });
        for (what, token) in [
            ("expired", expired),
            ("other key", other_key),
            ("forged", forged),
            ("garbage", "not-a-token".to_owned()),
            ("far exp", far),
        ] {
            let (status, response) = call(
                app(&f.access),
                "POST",
                "/control/drain",
                Cred::Bearer(token),
            )
            .await;
            assert_eq!(status, StatusCode::UNAUTHORIZED, "{what}");
            let challenge = response.headers()[header::WWW_AUTHENTICATE]
                .to_str()
                .unwrap();
            assert!(challenge.contains("invalid_token"), "{what}: {challenge}");
            assert_eq!(
                body(response).await.required_scope,
                "mesh.operate",
                "{what}"
            );
        }
        let (status, _) = call(app(&f.access), "POST", "/control/drain", Cred::Bearer(good)).await;
        assert_eq!(status, StatusCode::OK);
        // Another scheme, or a token on a node without a token key, is refused too.
        let request = Request::builder()
            .uri("/meshkit/peers")
            .header(header::AUTHORIZATION, "Basic YWRtaW46YWRtaW4=")
            .extension(cert(&f.ca, "meshctl-admin"))
            .body(Body::empty())
            .unwrap();
        let response = app(&f.access).oneshot(request).await.unwrap();
        assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
        let no_key = AccessControl::new(AccessPolicy::default(), None, AuditLog::tracing_only());
        let token = f
            .key
            .issue("alice", &admin, SystemTime::now(), Duration::from_secs(60))
            .unwrap();
        let (status, _) = call(app(&no_key), "GET", "/meshkit/peers", Cred::Bearer(token)).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED);
    }

    #[tokio::test]
    async fn scopes_decide_between_403_and_200() {
        let f = fixture("scopes");
        let observer = || Cred::Cert(cert(&f.ca, "meshctl-observer"));
        let (status, _) = call(app(&f.access), "GET", "/meshkit/peers", observer()).await;
        assert_eq!(status, StatusCode::OK);
        let (status, response) = call(app(&f.access), "POST", "/control/drain", observer()).await;
        assert_eq!(status, StatusCode::FORBIDDEN);
        let denied = body(response).await;
        assert_eq!(denied.required_scope, "mesh.operate");
        assert_eq!(denied.identity.as_deref(), Some("meshctl-observer"));
        assert_eq!(denied.granted_scopes, Some(vec!["mesh.observe".to_owned()]));

        let operator = || Cred::Cert(cert(&f.ca, "meshctl-operator"));
        let (status, _) = call(app(&f.access), "POST", "/control/drain", operator()).await;
        assert_eq!(status, StatusCode::OK);
        let (status, _) = call(app(&f.access), "POST", "/control/chaos", operator()).await;
        assert_eq!(status, StatusCode::FORBIDDEN);

        let admin = || Cred::Cert(cert(&f.ca, "meshctl-admin"));
        for (method, path) in [
            ("GET", "/meshkit/peers"),
            ("GET", "/metrics"),
            ("POST", "/control/drain"),
            ("POST", "/control/chaos"),
        ] {
            let (status, _) = call(app(&f.access), method, path, admin()).await;
            assert_eq!(status, StatusCode::OK, "{method} {path}");
        }
        // A token's scopes are its own: observe cannot drain.
        let token = f
            .key
            .issue(
                "bob",
                &scopes(&[Permission::Observe]),
                now(),
                Duration::from_secs(60),
            )
            .unwrap();
        let (status, _) = call(
            app(&f.access),
            "POST",
            "/control/drain",
            Cred::Bearer(token),
        )
        .await;
        assert_eq!(status, StatusCode::FORBIDDEN);
    }

    #[tokio::test]
    async fn unknown_identities_get_no_scope_and_nodes_observe() {
        let f = fixture("unknown");
        let stranger = Cred::Cert(cert(&f.ca, "someone-else"));
        let (status, response) = call(app(&f.access), "GET", "/meshkit/peers", stranger).await;
        assert_eq!(status, StatusCode::FORBIDDEN);
        assert_eq!(body(response).await.granted_scopes, Some(vec![]));

        let node = f.ca.issue_node(meshkit::NodeId::new(3)).unwrap();
        let node = ClientCertificate(Some(
            CertificateDer::from_pem_slice(node.cert_pem.as_bytes()).unwrap(),
        ));
        let (status, _) = call(
            app(&f.access),
            "GET",
            "/meshkit/peers",
            Cred::Cert(node.clone()),
        )
        .await;
        assert_eq!(status, StatusCode::OK);
        let (status, _) = call(
            app(&f.access),
            "POST",
            "/control/drain",
            Cred::Cert(node.clone()),
        )
        .await;
        assert_eq!(status, StatusCode::FORBIDDEN);
        // `nodes = []` takes that away.
        let strict = AccessControl::new(
            AccessPolicy::default().with_node_scopes(Permissions::none()),
            None,
            AuditLog::tracing_only(),
        );
        let (status, _) = call(app(&strict), "GET", "/meshkit/peers", Cred::Cert(node)).await;
        assert_eq!(status, StatusCode::FORBIDDEN);
        // Bytes that are no certificate name nobody.
        let junk = Cred::Cert(ClientCertificate(Some(CertificateDer::from(vec![
            0x30, 0x03,
        ]))));
        let (status, _) = call(app(&f.access), "GET", "/meshkit/peers", junk).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED);
    }

    #[tokio::test]
    async fn operate_calls_are_audited_allowed_or_refused() {
        let f = fixture("audit");
        let operator = Cred::Cert(cert(&f.ca, "meshctl-operator"));
        let observer = Cred::Cert(cert(&f.ca, "meshctl-observer"));
        let _ = call(app(&f.access), "POST", "/control/drain", operator).await;
        let _ = call(app(&f.access), "POST", "/control/drain", observer).await;
        let _ = call(app(&f.access), "POST", "/control/drain", Cred::None).await;
        // Reads are not audited.
        let reader = Cred::Cert(cert(&f.ca, "meshctl-observer"));
        let _ = call(app(&f.access), "GET", "/meshkit/peers", reader).await;
        f.access.audit().flush().await;
        let text = std::fs::read_to_string(f.dir.join("audit.jsonl")).unwrap();
        let lines: Vec<serde_json::Value> = text
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        // The anonymous refusal is counted, not written (see `anonymous_refusals_...`).
        assert_eq!(lines.len(), 2, "{text}");
        let expect = [
            ("meshctl-operator", "client-certificate", "allowed", 200),
            ("meshctl-observer", "client-certificate", "forbidden", 403),
        ];
        for (line, (identity, auth, outcome, status)) in lines.iter().zip(expect) {
            assert_eq!(line["identity"].as_str().unwrap_or(""), identity, "{line}");
            assert_eq!(line["auth"], auth, "{line}");
            assert_eq!(line["outcome"], outcome, "{line}");
            assert_eq!(line["status"], status, "{line}");
            assert_eq!(line["method"], "POST");
            assert_eq!(line["path"], "/control/drain");
            assert_eq!(line["required_scope"], "mesh.operate");
            assert_eq!(line["time"], "2027-01-15T08:00:00Z");
        }
        assert_eq!(f.access.audit().written(), 2);
        let metrics = meshkit_api::metrics::encode(f.access.clone()).expect("the exposition");
        for sample in [
            "mesh_control_audit_records_total 2\n",
            "mesh_control_refusals_total{reason=\"no_credentials\"} 1\n",
            "mesh_control_refusals_total{reason=\"invalid_credentials\"} 0\n",
            "mesh_control_refusals_total{reason=\"forbidden\"} 1\n",
            "mesh_control_audit_dropped_total{reason=\"refusal_rate\"} 0\n",
        ] {
            assert!(
                metrics.contains(sample),
                "{sample} missing from:\n{metrics}"
            );
        }
    }

    /// Security review: 200 anonymous POSTs used to push a genuine admin record out of an
    /// audit log rotating at 16 KiB. Now anonymous refusals never reach the file, a flood of
    /// 403s from a credentialed observer is held to the budget, and both are counted; the log
    /// lines they cause are bounded too.
    #[test]
    fn anonymous_refusals_never_rotate_operator_records_out() {
        const FLOOD: u64 = 300;
        let f = fixture_rotating_at("flood", super::super::audit::MIN_AUDIT_MAX_BYTES);
        let runtime = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        let log_lines = meshkit_net::log_limit::count_events(|| {
            runtime.block_on(async {
                let admin = Cred::Cert(cert(&f.ca, "meshctl-admin"));
                let (status, _) = call(app(&f.access), "POST", "/control/chaos", admin).await;
                assert_eq!(status, StatusCode::OK);
                let observer = cert(&f.ca, "meshctl-observer");
                for i in 0..FLOOD {
                    let path = if i % 2 == 0 {
                        "/control/drain"
                    } else {
                        "/no/such/path"
                    };
                    let (status, _) = call(app(&f.access), "POST", path, Cred::None).await;
                    assert_eq!(status, StatusCode::UNAUTHORIZED);
                    let forged = Cred::Bearer(format!("forged.{i}.token"));
                    let (status, _) = call(app(&f.access), "POST", path, forged).await;
                    assert_eq!(status, StatusCode::UNAUTHORIZED);
                    let low = Cred::Cert(observer.clone());
                    let (status, _) = call(app(&f.access), "POST", path, low).await;
                    assert_eq!(status, StatusCode::FORBIDDEN);
                    if i % 50 == 0 {
                        // Keep the queue from filling: this test is about what is written.
                        f.access.audit().flush().await;
                    }
                }
                f.access.audit().flush().await;
            });
        });
        let mut text = std::fs::read_to_string(f.dir.join("audit.jsonl")).unwrap();
        if let Ok(rotated) = std::fs::read_to_string(f.dir.join("audit.jsonl.1")) {
            text = rotated + &text;
        }
        let lines: Vec<serde_json::Value> = text
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert!(
            lines.iter().any(|l| l["identity"] == "meshctl-admin"
                && l["outcome"] == "allowed"
                && l["path"] == "/control/chaos"),
            "the admin record was rotated out: {} lines",
            lines.len()
        );
        assert!(lines.iter().all(|l| l["outcome"] != "unauthenticated"));
        let budget = u64::from(super::super::audit::AUDIT_REFUSALS_BURST);
        let forbidden = lines.iter().filter(|l| l["outcome"] == "forbidden").count() as u64;
        assert_eq!(forbidden, budget);
        assert_eq!(f.access.audit().dropped_refusal_rate(), FLOOD - budget);
        assert_eq!(f.access.refusals(RefusalReason::NoCredentials), FLOOD);
        assert_eq!(f.access.refusals(RefusalReason::InvalidCredentials), FLOOD);
        assert_eq!(f.access.refusals(RefusalReason::Forbidden), FLOOD);
        // One line for the admin call, the budget's refusals, the sample of anonymous ones.
        let most = 1 + budget as usize + REFUSAL_LOG_BURST as usize;
        assert!(
            log_lines <= most,
            "{log_lines} log lines, at most {most} expected"
        );
    }

    #[test]
    fn access_config_errors_name_their_key() {
        let parse = |text: &str| {
            let raw: RawAccessConfig = toml::from_str(text).unwrap();
            AccessConfig::try_from(raw)
        };
        let cases = [
            ("nodes = [\"mesh.root\"]", "access.nodes[0]"),
            (
                "[identities]\nops = [\"mesh.observe\", \"root\"]",
                "access.identities.\"ops\"[1]",
            ),
            ("[identities]\n\"a b\" = []", "access.identities.\"a b\""),
            ("audit_log_max_bytes = 10", "access.audit_log_max_bytes"),
            ("token_max_lifetime = \"10s\"", "access.token_max_lifetime"),
            (
                "token_max_lifetime = \"9000h\"",
                "access.token_max_lifetime",
            ),
            (
                "audit_log = \"a\"\naudit_log_max_bytes = 10",
                "access.audit_log_max_bytes",
            ),
        ];
        for (text, key) in cases {
            let err = parse(text).unwrap_err().to_string();
            assert!(err.contains(key), "{key} not named in: {err}");
        }
        assert!(
            parse("[identities]\nops = [\"mesh.observe\", \"root\"]")
                .unwrap_err()
                .to_string()
                .contains(EXPECTED_SCOPES)
        );
        assert_eq!(parse("").unwrap(), AccessConfig::default());
        assert_eq!(
            parse("token_max_lifetime = \"12h\"")
                .unwrap()
                .token_max_lifetime(),
            Duration::from_secs(12 * 3600)
        );
        let config = parse("nodes = []\n[identities]\nmeshctl-admin = [\"mesh.admin\"]").unwrap();
        assert_eq!(
            config.policy().certificate_scopes("meshctl-admin"),
            scopes(&[Permission::Admin])
        );
        assert_eq!(
            config.policy().certificate_scopes("node-1"),
            Permissions::none()
        );
        assert_eq!(
            AccessConfig::default()
                .policy()
                .certificate_scopes("node-1"),
            scopes(&[Permission::Observe])
        );
        assert_eq!(
            AccessConfig::default()
                .policy()
                .certificate_scopes("node-x"),
            Permissions::none()
        );
    }
}
